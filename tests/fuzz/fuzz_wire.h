/*
 * fuzz_wire.h: the layout of fuzz_wire's input, shared with the program
 * that writes its seed corpus (gen_wire_seeds.c).
 *
 * Input: one mode byte, four bytes of chunking seed (little-endian), then
 * the stream the decoders read.
 */
#ifndef FUZZ_WIRE_H
#define FUZZ_WIRE_H

#define FUZZ_WIRE_PREFIX 5u

enum {
	MODE_DIRECT = 1,    /* read payloads through fut__wire_dec_direct */
	MODE_OVERREAD = 2,  /* once: a direct read one byte past the room */
	MODE_ALLOCFAIL = 4, /* fail the n-th allocation, n - 1 in bits 4..7 */
};

#endif /* FUZZ_WIRE_H */
