/*
 * process_pool/frame.h: what both sides of a worker's channels do with
 * frames (frame.c): build one into a growing buffer, and feed what an fd
 * gives into a decoder.  The parent (send.c, recv.c) and the worker
 * (child.c) share it; it sees neither struct ppool nor any process.
 * Private to the library.
 */
#ifndef FUT_PROCESS_POOL_FRAME_H
#define FUT_PROCESS_POOL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "process_pool/wire.h"

/* A side's read buffer. */
#define FUT__PP_STAGE_BYTES (64u * 1024u)
/* Reads go straight into a large payload's buffer from this much room
 * on. */
#define FUT__PP_DIRECT_MIN (16u * 1024u)

/*
 * One frame being built at the start of buf: a header reserved by
 * fut__pp_frame_begin, records added, the header written by
 * fut__pp_frame_end.  A record's payload may be copied into buf, or only
 * declared: its bytes then follow the frame's from elsewhere (extra).
 */
struct fut__pp_frame {
	unsigned char *buf;
	size_t len, cap;
	uint32_t count; /* records added */
	uint64_t extra; /* payload bytes declared, not copied */
};

/* Empties f and reserves its header; false: out of memory (f is empty). */
bool fut__pp_frame_begin(struct fut__pp_frame *f);
/* Adds a record whose payload is len bytes, the first copy of them (data)
 * copied into f; false: out of memory (f is unchanged). */
bool fut__pp_frame_add(struct fut__pp_frame *f, uint64_t id, uint64_t fn,
		       uint32_t kind, int32_t code, const void *data,
		       size_t copy, uint64_t len);
/* Writes the header of a frame of type; returns its record count (0: it
 * is empty, and so is f). */
uint32_t fut__pp_frame_end(struct fut__pp_frame *f, unsigned type);
/* Frees f's buffer. */
void fut__pp_frame_fini(struct fut__pp_frame *f);

/* The header of a frame of one record, written into hdr, whose len
 * payload bytes follow from elsewhere: no buffer needed. */
#define FUT__PP_FRAME_ONE (FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR)
void fut__pp_frame_one(unsigned char hdr[FUT__PP_FRAME_ONE], unsigned type,
		       uint64_t id, uint32_t kind, int32_t code, uint64_t len);

/* Could this process hold a payload of len bytes now?  Tries: allocates
 * and frees them (address space; no page is touched).  A decoder's
 * could_hold (wire.h). */
bool fut__pp_could_hold(size_t len);

/* What fut__pp_feed reads with and hands records to. */
struct fut__pp_feed_ops {
	/* One read(2) of the side's fd into buf (direct: the buffer is a
	 * large payload's own, not the stage).  EINTR is retried. */
	ssize_t (*read)(void *ctx, void *buf, size_t len, bool direct);
	/* A record is complete; false: stop feeding this read's bytes. */
	bool (*record)(void *ctx, struct fut__wire_rec *r);
};

enum {
	FUT__PP_FEED_OK = 0,	/* read and fed */
	FUT__PP_FEED_AGAIN = 1, /* nothing to read now (EAGAIN) */
	FUT__PP_FEED_EOF = 2,	/* EOF or a read error */
	FUT__PP_FEED_BAD = 3,	/* malformed: d->error says how */
	FUT__PP_FEED_NOMEM = 4, /* no memory for a payload */
};

/*
 * One read into d, straight into a large payload's buffer when it has
 * FUT__PP_DIRECT_MIN bytes of room, else into stage (stage_len bytes),
 * whose records go to ops->record one by one.  A FUT__PP_FEED_* code.
 */
int fut__pp_feed(struct fut__wire_dec *d, unsigned char *stage,
		 size_t stage_len, const struct fut__pp_feed_ops *ops,
		 void *ctx);

#endif /* FUT_PROCESS_POOL_FRAME_H */
