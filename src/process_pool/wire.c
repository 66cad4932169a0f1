/*
 * wire.c: the process pool's frame codec and the fork server's control
 * messages (the formats are in wire.h and docs/design-process-pool.md).
 *
 * Owns: nothing but the decoder state a caller passes in.  It is a state
 * machine over caller buffers: the caller reads bytes however it likes and
 * feeds them; the decoder never reads, writes, locks or keeps a global, so
 * it can be fuzzed and unit-tested alone.  Every length and field of a
 * frame is checked before it is used, against the frame type and against
 * what is left of the frame's body.  Payloads that arrive whole inside the
 * fed buffer are returned in place (no copy); others are gathered into one
 * fut__malloc'd buffer the caller may read straight into
 * (fut__wire_dec_direct), which then becomes the caller's.  That buffer
 * starts at GATHER_FIRST bytes and doubles as bytes arrive: the declared
 * length is not trusted with memory, so a garbage header that claims a
 * terabyte costs a megabyte, not a terabyte-sized malloc.  A decoder
 * that may_drop (the process pool's) hands a payload it cannot hold (its
 * caller's could_hold says so from the header, or an allocation fails)
 * over as a dropped record at once, then skips its bytes: the stream goes
 * on.
 * Threads: whoever owns the decoder (the manager thread, a worker).
 * Locks: none.
 */
#include <string.h>

#include "core/alloc.h"
#include "process_pool/wire.h"

enum {
	S_FRAME = 0, /* gathering a frame header */
	S_RECORD,    /* gathering a record header */
	S_PAYLOAD,   /* gathering a payload into rec.data */
	S_SKIP,	     /* skipping a dropped payload's bytes */
	S_DEAD,	     /* an error was reported: nothing more */
};

/* The first buffer of a gathered payload (the fuzz build makes it small,
 * so that short inputs reach the growth). */
#ifdef FUT__WIRE_GATHER_FIRST
#define GATHER_FIRST ((size_t)FUT__WIRE_GATHER_FIRST)
#else
#define GATHER_FIRST ((size_t)1 << 20)
#endif

static const char nomem[] = "out of memory for a payload";

/* The wire is little-endian.  One load or store of the word, swapped on a
 * big-endian host: byte loops, which -O2 leaves as loops, were most of
 * the cost of encoding a record (W-MPI2, docs/perf-log.md). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define WIRE_LE32(v) __builtin_bswap32(v)
#define WIRE_LE64(v) __builtin_bswap64(v)
#else
#define WIRE_LE32(v) (v)
#define WIRE_LE64(v) (v)
#endif

static void put_u32(unsigned char *p, uint32_t v)
{
	v = WIRE_LE32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_u64(unsigned char *p, uint64_t v)
{
	v = WIRE_LE64(v);
	memcpy(p, &v, sizeof(v));
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return WIRE_LE32(v);
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return WIRE_LE64(v);
}

void fut__wire_put_u64(void *buf, uint64_t v)
{
	put_u64(buf, v);
}

uint64_t fut__wire_get_u64(const void *buf)
{
	return get_u64(buf);
}

void fut__wire_put_frame(void *buf, unsigned type, uint32_t count,
			 uint64_t body_len)
{
	unsigned char *p = buf;
	p[0] = FUT__WIRE_MAGIC;
	p[1] = FUT__WIRE_VERSION;
	p[2] = (unsigned char)type;
	p[3] = 0;
	put_u32(p + 4, count);
	put_u64(p + 8, body_len);
}

void fut__wire_put_record(void *buf, uint64_t id, uint64_t fn, uint32_t kind,
			  int32_t code, uint64_t len)
{
	unsigned char *p = buf;
	put_u64(p, id);
	put_u64(p + 8, fn);
	put_u32(p + 16, kind);
	put_u32(p + 20, (uint32_t)code);
	put_u64(p + 24, len);
}

void fut__wire_dec_init(struct fut__wire_dec *d, unsigned dir)
{
	memset(d, 0, sizeof(*d));
	d->dir = dir;
	d->state = S_FRAME;
}

void fut__wire_dec_fini(struct fut__wire_dec *d)
{
	if (d->state == S_PAYLOAD)
		fut__free(d->rec.data);
	d->rec.data = NULL;
	d->state = S_DEAD;
}

bool fut__wire_dec_idle(const struct fut__wire_dec *d)
{
	return d->state == S_FRAME && d->have == 0;
}

static int fail(struct fut__wire_dec *d, const char *why)
{
	if (d->state == S_PAYLOAD)
		fut__free(d->rec.data);
	d->rec.data = NULL;
	d->state = S_DEAD;
	d->error = why;
	return FUT__WIRE_EBAD;
}

static bool type_allowed(unsigned dir, unsigned type)
{
	switch (dir) {
	case FUT__WIRE_TO_WORKER:
	case FUT__WIRE_TO_RANK:
		return type == FUT__WIRE_TASKS;
	case FUT__WIRE_TO_CLIENT:
		return type == FUT__WIRE_RESULTS;
	default:
		return type == FUT__WIRE_RESULTS || type == FUT__WIRE_HELLO;
	}
}

static int parse_frame(struct fut__wire_dec *d)
{
	const unsigned char *p = d->hdr;
	if (p[0] != FUT__WIRE_MAGIC)
		return fail(d, "bad frame magic");
	if (p[1] != FUT__WIRE_VERSION)
		return fail(d, "unknown frame version");
	if (!type_allowed(d->dir, p[2]))
		return fail(d, "unexpected frame type");
	if (p[3] != 0)
		return fail(d, "reserved frame byte set");
	uint32_t count = get_u32(p + 4);
	uint64_t body = get_u64(p + 8);
	if (count == 0 || count > FUT__WIRE_MAX_RECORDS)
		return fail(d, "bad record count");
	if (p[2] == FUT__WIRE_HELLO && count != 1)
		return fail(d, "hello frame with more than one record");
	if (body < (uint64_t)count * FUT__WIRE_REC_HDR)
		return fail(d, "frame body shorter than its record headers");
	if (body - (uint64_t)count * FUT__WIRE_REC_HDR >
	    (uint64_t)count * FUT_MAX_BYTES)
		return fail(d, "frame body too long");
	d->type = p[2];
	d->left_recs = count;
	d->left_body = body;
	return FUT__WIRE_MORE;
}

/* libfuture-mpi's records to a rank (TO_RANK). */
static const char *check_rank_record(const struct fut__wire_rec *r)
{
	if (r->code != 0)
		return "task record with a result field set";
	switch (r->kind) {
	case FUT__WIRE_T_TASK:
		if (r->id == 0 || r->fn == 0)
			return "task record without id or function";
		return NULL;
	case FUT__WIRE_T_NAME:
		if (r->id == 0 || r->fn != 0 || r->len == 0 ||
		    r->len > FUT__WIRE_MAX_NAME)
			return "malformed name record";
		return NULL;
	case FUT__WIRE_T_INTERRUPT:
		if (r->id == 0 || r->fn != 0 || r->len != 0)
			return "malformed interrupt record";
		return NULL;
	case FUT__WIRE_T_STOP:
	case FUT__WIRE_T_BREAK:
		if (r->id != 0 || r->fn != 0 || r->len != 0)
			return "malformed stop record";
		return NULL;
	default:
		return "unknown task record kind";
	}
}

/* The checks of one record header against its frame type and the
 * decoder's direction. */
static const char *check_record(unsigned dir, unsigned type,
				const struct fut__wire_rec *r)
{
	if (dir == FUT__WIRE_TO_RANK)
		return check_rank_record(r);
	if (dir == FUT__WIRE_TO_CLIENT && r->kind == FUT__WIRE_R_ERROR) {
		if (r->id == 0 || r->fn != 0)
			return "result record with a bad id or a function";
		if (r->code <= FUT_OK || r->code > FUT_END)
			return "error record with an unknown code";
		if (r->len > FUT__WIRE_MAX_MESSAGE)
			return "failure message too long";
		return NULL;
	}
	switch (type) {
	case FUT__WIRE_TASKS:
		if (r->id == 0 || r->fn == 0)
			return "task record without id or function";
		/* The code is the task's claim key (child.h). */
		if (r->kind != 0 && r->kind != FUT__WIRE_T_SHARED)
			return "task record of an unknown kind";
		if (r->kind == FUT__WIRE_T_SHARED &&
		    r->len != FUT__WIRE_SHARED_LEN)
			return "shared task record of a bad length";
		return NULL;
	case FUT__WIRE_RESULTS:
		if (r->id == 0 || r->fn != 0)
			return "result record with a bad id or a function";
		if (r->kind >= FUT__WIRE_R_NKINDS ||
		    (r->kind == FUT__WIRE_R_NOFN && dir != FUT__WIRE_TO_PARENT))
			return "unknown result kind";
		if (r->kind != FUT__WIRE_R_FAIL && r->code != 0)
			return "result record with a stray code";
		if ((r->kind == FUT__WIRE_R_NONE ||
		     r->kind == FUT__WIRE_R_VALUE ||
		     r->kind == FUT__WIRE_R_NOFN) &&
		    r->len != 0)
			return "payload on a result that has none";
		if (r->kind == FUT__WIRE_R_FAIL &&
		    r->len > FUT__WIRE_MAX_MESSAGE)
			return "failure message too long";
		if (r->kind == FUT__WIRE_R_SHARED &&
		    r->len != FUT__WIRE_SHARED_LEN)
			return "shared result record of a bad length";
		return NULL;
	default: /* FUT__WIRE_HELLO */
		if (r->id != 0 || r->fn != 0 || r->len != 0)
			return "malformed hello record";
		if (r->kind == FUT__WIRE_HELLO_OK && r->code == 0)
			return NULL;
		if (r->kind == FUT__WIRE_HELLO_INIT_FAILED)
			return NULL;
		return "unknown hello kind";
	}
}

/* p: the record header, in d->hdr or whole in the caller's buffer. */
static int parse_record(struct fut__wire_dec *d, const unsigned char *p)
{
	struct fut__wire_rec *r = &d->rec;
	uint64_t len = get_u64(p + 24);
	r->type = d->type;
	r->id = get_u64(p);
	r->fn = get_u64(p + 8);
	r->kind = get_u32(p + 16);
	r->code = (int32_t)get_u32(p + 20);
	r->data = NULL;
	r->len = 0;
	r->owned = false;
	r->dropped = false;
	/* Invariant: left_body >= left_recs * FUT__WIRE_REC_HDR. */
	d->left_body -= FUT__WIRE_REC_HDR;
	d->left_recs--;
	uint64_t room =
		d->left_body - (uint64_t)d->left_recs * FUT__WIRE_REC_HDR;
	if (len > room)
		return fail(d, "record longer than its frame");
	if (len > FUT_MAX_BYTES)
		return fail(d, "record payload too long");
	r->len = (size_t)len;
	const char *why = check_record(d->dir, d->type, r);
	if (why != NULL)
		return fail(d, why);
	d->left_body -= len;
	r->last = d->left_recs == 0;
	if (r->last && d->left_body != 0)
		return fail(d, "frame body longer than its records");
	return FUT__WIRE_MORE;
}

/* Hands the finished record to the caller and moves on. */
static int emit(struct fut__wire_dec *d, struct fut__wire_rec *rec)
{
	*rec = d->rec;
	d->rec.data = NULL;
	d->have = 0;
	d->got = 0;
	d->state = rec->last ? S_FRAME : S_RECORD;
	return FUT__WIRE_RECORD;
}

/* Hands the record over as dropped (its gathered bytes freed), and skips
 * the rest of its payload. */
static int emit_dropped(struct fut__wire_dec *d, struct fut__wire_rec *rec)
{
	if (d->rec.owned)
		fut__free(d->rec.data);
	d->rec.data = NULL;
	d->rec.owned = false;
	d->rec.dropped = true;
	*rec = d->rec;
	d->skip = (uint64_t)d->rec.len - d->got;
	d->have = 0;
	d->got = 0;
	d->state = S_SKIP;
	return FUT__WIRE_RECORD;
}

/* Makes room for more payload bytes: doubles the buffer, up to the
 * declared length.  False when out of memory: the decoder is dead, or
 * (may_drop) the record is to be handed over dropped. */
static bool gather_room(struct fut__wire_dec *d)
{
	if (d->got < d->cap)
		return true;
	size_t cap = d->cap > d->rec.len / 2 ? d->rec.len : d->cap * 2;
	void *grown = fut__realloc(d->rec.data, cap);
	if (grown == NULL) {
		if (d->may_drop)
			return false;
		fut__free(d->rec.data);
		d->rec.data = NULL;
		d->state = S_DEAD;
		d->error = nomem;
		return false;
	}
	d->rec.data = grown;
	d->cap = cap;
	return true;
}

static size_t gather(struct fut__wire_dec *d, size_t want,
		     const unsigned char *src, size_t avail)
{
	size_t take = want - d->have;
	if (take > avail)
		take = avail;
	memcpy(d->hdr + d->have, src, take);
	d->have += take;
	return take;
}

int fut__wire_dec_feed(struct fut__wire_dec *d, const void *buf, size_t len,
		       size_t *used, struct fut__wire_rec *rec)
{
	const unsigned char *src = buf;
	size_t pos = 0;
	int rc;
	*used = 0;
	for (;;) {
		switch (d->state) {
		case S_FRAME:
			pos += gather(d, FUT__WIRE_FRAME_HDR, src + pos,
				      len - pos);
			if (d->have < FUT__WIRE_FRAME_HDR)
				goto more;
			rc = parse_frame(d);
			*used = pos;
			if (rc != FUT__WIRE_MORE)
				return rc;
			d->have = 0;
			d->state = S_RECORD;
			break;
		case S_RECORD:
			if (d->have == 0 && len - pos >= FUT__WIRE_REC_HDR) {
				/* Whole in the caller's buffer: read in place,
				 * not gathered. */
				rc = parse_record(d, src + pos);
				pos += FUT__WIRE_REC_HDR;
			} else {
				pos += gather(d, FUT__WIRE_REC_HDR, src + pos,
					      len - pos);
				if (d->have < FUT__WIRE_REC_HDR)
					goto more;
				rc = parse_record(d, d->hdr);
			}
			*used = pos;
			if (rc != FUT__WIRE_MORE)
				return rc;
			if (d->rec.len <= len - pos) {
				/* Whole in the caller's buffer: in place. */
				/* Borrowed: the caller must not write or free it. */
				d->rec.data =
					d->rec.len == 0 ?
						NULL :
						(void *)(uintptr_t)(src + pos);
				pos += d->rec.len;
				*used = pos;
				return emit(d, rec);
			}
			d->cap = d->rec.len < GATHER_FIRST ? d->rec.len :
							     GATHER_FIRST;
			d->got = 0;
			if (d->may_drop && d->could_hold != NULL &&
			    d->rec.len > GATHER_FIRST &&
			    !d->could_hold(d->rec.len))
				return emit_dropped(d, rec);
			d->rec.data = fut__malloc(d->cap);
			if (d->rec.data == NULL && d->may_drop)
				return emit_dropped(d, rec);
			if (d->rec.data == NULL) {
				d->state = S_DEAD;
				d->error = nomem;
				return FUT__WIRE_ENOMEM;
			}
			d->rec.owned = true;
			d->state = S_PAYLOAD;
			break;
		case S_SKIP: {
			size_t take = len - pos;
			if (take > d->skip)
				take = (size_t)d->skip;
			d->skip -= take;
			pos += take;
			if (d->skip != 0)
				goto more;
			d->state = d->rec.last ? S_FRAME : S_RECORD;
			break;
		}
		case S_PAYLOAD: {
			if (pos == len)
				goto more;
			if (!gather_room(d)) {
				*used = pos;
				if (d->may_drop)
					return emit_dropped(d, rec);
				return FUT__WIRE_ENOMEM;
			}
			size_t take = d->cap - d->got;
			if (take > len - pos)
				take = len - pos;
			memcpy((char *)d->rec.data + d->got, src + pos, take);
			d->got += take;
			pos += take;
			if (d->got < d->rec.len)
				break; /* input used up, or the buffer full */
			*used = pos;
			return emit(d, rec);
		}
		default:
			*used = pos;
			if (d->error == NULL)
				d->error = "decoder used after an error";
			return d->error == nomem ? FUT__WIRE_ENOMEM :
						   FUT__WIRE_EBAD;
		}
	}
more:
	*used = pos;
	return FUT__WIRE_MORE;
}

void *fut__wire_dec_direct(struct fut__wire_dec *d, size_t *room)
{
	if (d->state != S_PAYLOAD || !gather_room(d)) {
		*room = 0;
		return NULL;
	}
	*room = d->cap - d->got;
	return (char *)d->rec.data + d->got;
}

int fut__wire_dec_direct_done(struct fut__wire_dec *d, size_t n,
			      struct fut__wire_rec *rec)
{
	if (d->state != S_PAYLOAD || n > d->cap - d->got)
		return fail(d, "direct read past the payload");
	d->got += n;
	if (d->got < d->rec.len)
		return FUT__WIRE_MORE;
	return emit(d, rec);
}

void fut__wire_ctl_put(void *buf, const struct fut__wire_ctl *c)
{
	unsigned char *p = buf;
	p[0] = FUT__WIRE_MAGIC;
	p[1] = FUT__WIRE_VERSION;
	p[2] = (unsigned char)c->type;
	p[3] = 0;
	put_u32(p + 4, c->slot);
	put_u32(p + 8, c->gen);
	put_u32(p + 12, (uint32_t)c->pid);
	put_u32(p + 16, (uint32_t)c->value);
	put_u32(p + 20, 0);
}

int fut__wire_ctl_get(const void *buf, size_t len, struct fut__wire_ctl *c)
{
	const unsigned char *p = buf;
	if (buf == NULL || len != FUT__WIRE_CTL_SIZE)
		return FUT_EINVAL;
	if (p[0] != FUT__WIRE_MAGIC || p[1] != FUT__WIRE_VERSION || p[3] != 0 ||
	    get_u32(p + 20) != 0)
		return FUT_EINVAL;
	if (p[2] < FUT__WIRE_CTL_SPAWN || p[2] > FUT__WIRE_CTL_KILL)
		return FUT_EINVAL;
	c->type = p[2];
	c->slot = get_u32(p + 4);
	c->gen = get_u32(p + 8);
	c->pid = (int32_t)get_u32(p + 12);
	c->value = (int32_t)get_u32(p + 16);
	if (c->type != FUT__WIRE_CTL_SPAWN &&
	    c->type != FUT__WIRE_CTL_SPAWN_FAILED && c->pid <= 0)
		return FUT_EINVAL;
	return FUT_OK;
}
