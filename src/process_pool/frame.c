/*
 * frame.c: the process pool's frames as both sides of a worker's channels
 * build and read them.
 *
 * Owns: a frame being built in a growing buffer (the parent's task
 * frames, the worker's result frames), the header of a lone record whose
 * payload is written from where it lies, and the loop that feeds what an
 * fd gives into a decoder (a large payload read straight into its own
 * buffer).  The encoding itself is wire.c's; the reads are the caller's
 * (a callback), so this file does no I/O.
 * Threads: whoever owns the frame or the decoder (the manager thread, a
 * worker).
 * Locks: none.
 */
#include <errno.h>
#include <string.h>

#include "core/alloc.h"
#include "process_pool/frame.h"

static bool reserve(struct fut__pp_frame *f, size_t more)
{
	if (f->len + more <= f->cap)
		return true;
	size_t cap = f->cap ? f->cap : 4096;
	while (cap < f->len + more)
		cap *= 2;
	unsigned char *b = fut__realloc(f->buf, cap);
	if (b == NULL)
		return false;
	f->buf = b;
	f->cap = cap;
	return true;
}

bool fut__pp_frame_begin(struct fut__pp_frame *f)
{
	f->len = 0;
	f->count = 0;
	f->extra = 0;
	if (!reserve(f, FUT__WIRE_FRAME_HDR))
		return false;
	f->len = FUT__WIRE_FRAME_HDR;
	return true;
}

bool fut__pp_frame_add(struct fut__pp_frame *f, uint64_t id, uint64_t fn,
		       uint32_t kind, int32_t code, const void *data,
		       size_t copy, uint64_t len)
{
	if (!reserve(f, FUT__WIRE_REC_HDR + copy))
		return false;
	fut__wire_put_record(f->buf + f->len, id, fn, kind, code, len);
	f->len += FUT__WIRE_REC_HDR;
	if (copy != 0)
		memcpy(f->buf + f->len, data, copy);
	f->len += copy;
	f->extra += len - copy;
	f->count++;
	return true;
}

uint32_t fut__pp_frame_end(struct fut__pp_frame *f, unsigned type)
{
	if (f->count == 0) {
		f->len = 0;
		return 0;
	}
	fut__wire_put_frame(f->buf, type, f->count,
			    f->len - FUT__WIRE_FRAME_HDR + f->extra);
	return f->count;
}

void fut__pp_frame_fini(struct fut__pp_frame *f)
{
	fut__free(f->buf);
	f->buf = NULL;
	f->len = f->cap = 0;
	f->count = 0;
	f->extra = 0;
}

void fut__pp_frame_one(unsigned char hdr[FUT__PP_FRAME_ONE], unsigned type,
		       uint64_t id, uint32_t kind, int32_t code, uint64_t len)
{
	fut__wire_put_frame(hdr, type, 1, FUT__WIRE_REC_HDR + len);
	fut__wire_put_record(hdr + FUT__WIRE_FRAME_HDR, id, 0, kind, code, len);
}

bool fut__pp_could_hold(size_t len)
{
	void *probe = fut__malloc(len);
	fut__free(probe);
	return probe != NULL;
}

int fut__pp_feed(struct fut__wire_dec *d, unsigned char *stage,
		 size_t stage_len, const struct fut__pp_feed_ops *ops,
		 void *ctx)
{
	struct fut__wire_rec r;
	size_t room;
	void *dst = fut__wire_dec_direct(d, &room);
	bool direct = dst != NULL && room >= FUT__PP_DIRECT_MIN;
	ssize_t n;
	do
		n = direct ? ops->read(ctx, dst, room, true) :
			     ops->read(ctx, stage, stage_len, false);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return FUT__PP_FEED_AGAIN;
	if (n <= 0)
		return FUT__PP_FEED_EOF;
	if (direct) {
		if (fut__wire_dec_direct_done(d, (size_t)n, &r) ==
		    FUT__WIRE_RECORD) {
			r.more = false;
			(void)ops->record(ctx, &r);
		}
		return FUT__PP_FEED_OK;
	}
	size_t off = 0;
	while (off < (size_t)n) {
		size_t used;
		int st = fut__wire_dec_feed(d, stage + off, (size_t)n - off,
					    &used, &r);
		off += used;
		if (st == FUT__WIRE_ENOMEM)
			return FUT__PP_FEED_NOMEM;
		if (st == FUT__WIRE_EBAD)
			return FUT__PP_FEED_BAD;
		r.more = off < (size_t)n;
		if (st == FUT__WIRE_RECORD && !ops->record(ctx, &r))
			break;
	}
	return FUT__PP_FEED_OK;
}
