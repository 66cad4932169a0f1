/*
 * fuzz_wire.c: libFuzzer target for the frame decoder and the control
 * messages (src/wire.c).
 *
 * Input: one mode byte, four bytes of chunking seed, then the stream.  The
 * stream is decoded four times, once by a decoder for each direction (the
 * process pool's two and libfuture-mpi's two), fed in
 * pieces of random length (each piece its own malloc'd buffer, so that
 * ASan catches a read past the piece), and, where the mode says so, with
 * payloads read straight into fut__wire_dec_direct()'s buffer, one
 * deliberate direct read past the payload, or one allocation failed on
 * purpose (the process pool's parent-side decoder then may_drop, as the
 * pool's does: a payload it cannot hold is a dropped record, skipped).  Every 24-byte window at the start of the stream goes through
 * fut__wire_ctl_get().
 *
 * The oracle: whatever the bytes, nothing crashes or leaks; every record
 * obeys its frame type's rules; and every frame the decoder accepts
 * re-encodes, with fut__wire_put_frame/put_record, to exactly the bytes it
 * was decoded from.  A control message that decodes re-encodes to itself.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/wire.h"

#include "fuzz_wire.h"

#define check(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

struct rng {
	uint32_t s;
};

static uint32_t next(struct rng *r)
{
	r->s ^= r->s << 13;
	r->s ^= r->s >> 17;
	r->s ^= r->s << 5;
	return r->s;
}

/* Piece lengths: mostly short (every state boundary gets crossed), some
 * long (payloads arrive whole, in place). */
static size_t piece_len(struct rng *r, size_t left)
{
	uint32_t x = next(r);
	size_t n = (x & 3) == 0 ? left :
		   (x & 3) == 1 ? (x >> 2) % 64 + 1 :
				  (x >> 2) % 8 + 1;
	return n < left ? n : left;
}

/* The records of the frame being decoded, for the re-encoding oracle. */
struct frame {
	unsigned char *bytes; /* the frame re-encoded so far (after 16) */
	size_t len, cap;
	uint32_t count;
	unsigned type;
	/* A record was dropped: its bytes are skipped after it is handed
	 * over, so the re-encoding oracle stops for this stream. */
	bool lost;
};

static void frame_append(struct frame *fr, const void *p, size_t n)
{
	if (fr->len + n > fr->cap) {
		size_t cap = (fr->len + n) * 2 + 64;
		unsigned char *b = realloc(fr->bytes, cap);
		check(b != NULL);
		fr->bytes = b;
		fr->cap = cap;
	}
	if (n > 0)
		memcpy(fr->bytes + fr->len, p, n);
	fr->len += n;
}

static void check_record(unsigned dir, const struct fut__wire_rec *r)
{
	check(r->len <= FUT_MAX_BYTES);
	check(r->dropped ? r->data == NULL && r->len != 0 && !r->owned :
			   (r->len == 0) == (r->data == NULL));
	check(!r->dropped || dir == FUT__WIRE_TO_PARENT);
	if (dir == FUT__WIRE_TO_RANK) {
		/* libfuture-mpi's stream to a rank. */
		check(r->type == FUT__WIRE_TASKS && r->code == 0);
		check(r->kind < FUT__WIRE_T_NKINDS);
		check(r->kind == FUT__WIRE_T_TASK ? r->id != 0 && r->fn != 0 :
						    r->fn == 0);
		check(r->kind != FUT__WIRE_T_NAME ||
		      (r->id != 0 && r->len >= 1 &&
		       r->len <= FUT__WIRE_MAX_NAME));
		check(r->kind != FUT__WIRE_T_INTERRUPT ||
		      (r->id != 0 && r->len == 0));
		check((r->kind != FUT__WIRE_T_STOP &&
		       r->kind != FUT__WIRE_T_BREAK) ||
		      (r->id == 0 && r->len == 0));
		return;
	}
	if (dir == FUT__WIRE_TO_CLIENT && r->kind == FUT__WIRE_R_ERROR) {
		check(r->type == FUT__WIRE_RESULTS && r->id != 0 && r->fn == 0);
		check(r->code > FUT_OK && r->code <= FUT_END);
		check(r->len <= FUT__WIRE_MAX_MESSAGE);
		return;
	}
	switch (r->type) {
	case FUT__WIRE_TASKS:
		check(dir == FUT__WIRE_TO_WORKER);
		/* The code is the task's claim key (child.h): any value. */
		check(r->id != 0 && r->fn != 0);
		check(r->kind == 0 || (r->kind == FUT__WIRE_T_SHARED &&
				       r->len == FUT__WIRE_SHARED_LEN));
		break;
	case FUT__WIRE_RESULTS:
		check(dir == FUT__WIRE_TO_PARENT || dir == FUT__WIRE_TO_CLIENT);
		check(r->id != 0 && r->fn == 0 && r->kind < FUT__WIRE_R_NKINDS);
		check(r->kind == FUT__WIRE_R_FAIL || r->code == 0);
		check(r->kind == FUT__WIRE_R_BYTES ||
		      r->kind == FUT__WIRE_R_FAIL || r->len == 0 ||
		      (r->kind == FUT__WIRE_R_SHARED &&
		       r->len == FUT__WIRE_SHARED_LEN));
		check(r->kind != FUT__WIRE_R_FAIL ||
		      r->len <= FUT__WIRE_MAX_MESSAGE);
		break;
	case FUT__WIRE_HELLO:
		check(dir == FUT__WIRE_TO_PARENT);
		check(r->id == 0 && r->fn == 0 && r->len == 0 && r->last);
		check(r->kind == FUT__WIRE_HELLO_INIT_FAILED ||
		      (r->kind == FUT__WIRE_HELLO_OK && r->code == 0));
		break;
	default:
		abort();
	}
}

/* Takes one record: checks it, appends it to the frame, and when it is
 * the frame's last compares the re-encoded frame with the stream bytes it
 * came from (stream[*frame_start .. consumed)). */
static void take_record(unsigned dir, struct fut__wire_rec *r, struct frame *fr,
			const unsigned char *stream, size_t consumed,
			size_t *frame_start)
{
	check_record(dir, r);
	if (r->dropped)
		fr->lost = true;
	if (fr->lost) {
		if (r->owned)
			fut__free(r->data);
		return;
	}
	if (fr->count == 0)
		fr->type = r->type;
	check(r->type == fr->type);
	unsigned char hdr[FUT__WIRE_REC_HDR];
	fut__wire_put_record(hdr, r->id, r->fn, r->kind, r->code, r->len);
	frame_append(fr, hdr, sizeof(hdr));
	frame_append(fr, r->data, r->len);
	fr->count++;
	if (r->owned)
		fut__free(r->data);
	if (!r->last)
		return;
	unsigned char fh[FUT__WIRE_FRAME_HDR];
	fut__wire_put_frame(fh, fr->type, fr->count, fr->len);
	size_t start = *frame_start;
	check(consumed - start == sizeof(fh) + fr->len);
	check(memcmp(stream + start, fh, sizeof(fh)) == 0);
	check(memcmp(stream + start + sizeof(fh), fr->bytes, fr->len) == 0);
	*frame_start = consumed;
	fr->len = 0;
	fr->count = 0;
}

/* The pool's asks malloc; here a payload past 4 KiB cannot be held (and
 * libFuzzer's malloc limit is never reached). */
static bool fuzz_could_hold(size_t len)
{
	return len <= 4096;
}

static void decode(unsigned dir, unsigned mode, uint32_t seed,
		   const unsigned char *stream, size_t size)
{
	struct rng rng = { seed | 1 };
	struct fut__wire_dec d;
	struct frame fr = { 0 };
	size_t pos = 0, frame_start = 0;
	bool overread = (mode & MODE_OVERREAD) != 0;
	int rc = FUT__WIRE_MORE;
	fut__wire_dec_init(&d, dir);
	if (mode & MODE_ALLOCFAIL) {
		d.may_drop = dir == FUT__WIRE_TO_PARENT;
		d.could_hold = fuzz_could_hold;
		fut__alloc_fail_nth((long)(mode >> 4) + 1);
	}
	while (pos < size && (rc == FUT__WIRE_MORE || rc == FUT__WIRE_RECORD)) {
		size_t n = piece_len(&rng, size - pos);
		struct fut__wire_rec r;
		size_t room;
		void *dst = fut__wire_dec_direct(&d, &room);
		if (dst != NULL && (mode & MODE_DIRECT)) {
			check(room > 0);
			if (overread) {
				overread = false;
				rc = fut__wire_dec_direct_done(&d, room + 1,
							       &r);
				check(rc == FUT__WIRE_EBAD && d.error != NULL);
				break;
			}
			if (n > room)
				n = room;
			memcpy(dst, stream + pos, n);
			pos += n;
			rc = fut__wire_dec_direct_done(&d, n, &r);
			if (rc == FUT__WIRE_RECORD)
				take_record(dir, &r, &fr, stream, pos,
					    &frame_start);
			continue;
		}
		unsigned char *piece = malloc(n);
		check(piece != NULL);
		memcpy(piece, stream + pos, n);
		size_t off = 0;
		while (off < n) {
			size_t used;
			rc = fut__wire_dec_feed(&d, piece + off, n - off, &used,
						&r);
			check(used <= n - off);
			off += used;
			if (rc == FUT__WIRE_RECORD) {
				if (!r.owned && r.data != NULL)
					check((unsigned char *)r.data >=
						      piece &&
					      (unsigned char *)r.data + r.len <=
						      piece + off);
				take_record(dir, &r, &fr, stream, pos + off,
					    &frame_start);
				continue;
			}
			if (rc == FUT__WIRE_MORE)
				check(off == n);
			else
				check(d.error != NULL);
			break;
		}
		free(piece);
		pos += n;
	}
	fut__alloc_fail_nth(0);
	if ((rc == FUT__WIRE_MORE || rc == FUT__WIRE_RECORD) && !fr.lost)
		check(fut__wire_dec_idle(&d) == (frame_start == size));
	fut__wire_dec_fini(&d);
	free(fr.bytes);
}

static void control(const unsigned char *stream, size_t size)
{
	struct fut__wire_ctl c;
	unsigned char again[FUT__WIRE_CTL_SIZE];
	for (size_t at = 0; at + FUT__WIRE_CTL_SIZE <= size && at < 64; at++) {
		if (fut__wire_ctl_get(stream + at, FUT__WIRE_CTL_SIZE, &c) !=
		    FUT_OK)
			continue;
		check(c.type >= FUT__WIRE_CTL_SPAWN &&
		      c.type <= FUT__WIRE_CTL_KILL);
		fut__wire_ctl_put(again, &c);
		check(memcmp(again, stream + at, sizeof(again)) == 0);
	}
	if (size != FUT__WIRE_CTL_SIZE)
		check(fut__wire_ctl_get(stream, size, &c) == FUT_EINVAL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < FUZZ_WIRE_PREFIX)
		return 0;
	unsigned mode = data[0];
	uint32_t seed = (uint32_t)data[1] | (uint32_t)data[2] << 8 |
			(uint32_t)data[3] << 16 | (uint32_t)data[4] << 24;
	const unsigned char *stream = data + FUZZ_WIRE_PREFIX;
	size -= FUZZ_WIRE_PREFIX;
	decode(FUT__WIRE_TO_WORKER, mode, seed, stream, size);
	decode(FUT__WIRE_TO_PARENT, mode, seed ^ 0x9e3779b9u, stream, size);
	decode(FUT__WIRE_TO_RANK, mode, seed ^ 0x85ebca6bu, stream, size);
	decode(FUT__WIRE_TO_CLIENT, mode, seed ^ 0xc2b2ae35u, stream, size);
	control(stream, size);
	return 0;
}
