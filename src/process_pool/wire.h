/*
 * wire.h: the frames the process pool sends over its pipes, and the
 * fork server's control messages.  Pure encoding and decoding over
 * caller buffers (wire.c): no I/O, no locks, no globals.
 *
 * A frame (docs/design-process-pool.md has the picture):
 *   header, 16 bytes: magic 0xFB, version, type, 0, u32 count, u64 body
 *   body: `count` records, each a 32-byte header (u64 id, u64 fn, u32 kind,
 *   i32 code, u64 len) followed by len payload bytes.
 * Integers are little-endian.  The decoder checks every field against the
 * frame type and every length against what is left of the body before it
 * uses it; a decoding error is final for that stream.
 */
#ifndef FUT_WIRE_H
#define FUT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base.h"

#define FUT__WIRE_MAGIC 0xFBu
#define FUT__WIRE_VERSION 1u
#define FUT__WIRE_FRAME_HDR 16u
#define FUT__WIRE_REC_HDR 32u
/* Most records in one frame. */
#define FUT__WIRE_MAX_RECORDS 65536u
/* Longest failure message a worker may send. */
#define FUT__WIRE_MAX_MESSAGE 65536u
/* An R_SHARED record's payload. */
#define FUT__WIRE_SHARED_LEN 8u
void fut__wire_put_u64(void *buf, uint64_t v);
uint64_t fut__wire_get_u64(const void *buf);

/* Frame types. */
enum {
	FUT__WIRE_TASKS = 1,   /* parent -> worker: records are tasks */
	FUT__WIRE_RESULTS = 2, /* worker -> parent: records are outcomes */
	FUT__WIRE_HELLO = 3,   /* worker -> parent: one record, the init */
};

/* A task record's kind: 0, its payload the input; or T_SHARED, its
 * payload the u64 length of an input in shared memory, whose memfd comes
 * over the task socket (SCM_RIGHTS) with or before this record. */
enum {
	FUT__WIRE_T_SHARED = 1,
};

/* Result record kinds. */
enum {
	FUT__WIRE_R_NONE = 0,  /* returned nothing */
	FUT__WIRE_R_BYTES = 1, /* payload: the result bytes */
	FUT__WIRE_R_VALUE = 2, /* returned a pointer: FUT_ENOTSUP */
	FUT__WIRE_R_FAIL = 3,  /* code: the task code; payload: message */
	/* payload: the u64 length of a result in shared memory, whose memfd
	 * came over the task socket (SCM_RIGHTS) before this record */
	FUT__WIRE_R_SHARED = 4,
	/* the task function is not in the worker's program (a fork server
	 * started by exec could not resolve it): FUT_ENOTSUP */
	FUT__WIRE_R_NOFN = 5,
	FUT__WIRE_R_NKINDS = 6,
};

/*
 * libfuture-mpi's records (directions TO_RANK and TO_CLIENT only; the
 * process pool's directions refuse them).  In a TASKS frame to a rank a
 * record is a task (kind 0, fn: a name id), or one of these: a NAME (id:
 * the name id, payload: the name, 1-FUT__WIRE_MAX_NAME bytes), an
 * INTERRUPT of the task with that id, STOP (id 0), or BREAK (id 0): a
 * STOP after which the rank drops every result still to come and, once
 * its sends are out, tells root so (src/mpi/server.c; root now sends
 * its BREAK as a message of a tag of its own, which a rank that gave up
 * still reads: src/mpi/server_end.c; the record is still taken as one).
 * A result to the
 * client may also be an ERROR: code a FUT_E* code, payload its message.
 */
enum {
	FUT__WIRE_T_TASK = 0,
	FUT__WIRE_T_NAME = 1,
	FUT__WIRE_T_INTERRUPT = 2,
	FUT__WIRE_T_STOP = 3,
	FUT__WIRE_T_BREAK = 4,
	FUT__WIRE_T_NKINDS = 5,
};
#define FUT__WIRE_R_ERROR 4u
#define FUT__WIRE_MAX_NAME 128u

/* A hello record: kind 0 the initializer succeeded, 1 it failed (code). */
enum {
	FUT__WIRE_HELLO_OK = 0,
	FUT__WIRE_HELLO_INIT_FAILED = 1,
};

/* Which frames a decoder accepts. */
enum {
	FUT__WIRE_TO_WORKER = 1, /* TASKS */
	FUT__WIRE_TO_PARENT = 2, /* RESULTS, HELLO */
	FUT__WIRE_TO_RANK = 3,	 /* TASKS with NAME, INTERRUPT, STOP, BREAK */
	FUT__WIRE_TO_CLIENT = 4, /* RESULTS with ERROR */
};

/* Decoder results. */
enum {
	FUT__WIRE_MORE = 0,   /* all input consumed; feed more */
	FUT__WIRE_RECORD = 1, /* a record is complete */
	FUT__WIRE_EBAD = 2,   /* malformed: d->error says how */
	FUT__WIRE_ENOMEM = 3, /* could not allocate a payload */
};

struct fut__wire_rec {
	unsigned type; /* the frame type it came in */
	uint64_t id;
	uint64_t fn;
	uint32_t kind;
	int32_t code;
	void *data; /* len bytes; NULL when len is 0 */
	size_t len;
	/* data was fut__malloc'd for this record and is the caller's now;
	 * else it points into the buffer given to fut__wire_dec_feed(). */
	bool owned;
	bool last; /* the last record of its frame */
	/* fut__pp_feed: more bytes of the same read follow it (the next
	 * frame's, when last). */
	bool more;
	/* A payload of len bytes that could not be held (a decoder that
	 * may_drop, out of memory): data is NULL, and its bytes are skipped
	 * as they come.  Handed over as soon as its header is read. */
	bool dropped;
};

struct fut__wire_dec {
	unsigned dir;
	unsigned state;
	unsigned char hdr[FUT__WIRE_REC_HDR];
	size_t have;	    /* header bytes gathered */
	unsigned type;	    /* the current frame's */
	uint32_t left_recs; /* records still due in the current frame */
	uint64_t left_body; /* body bytes still due */
	struct fut__wire_rec rec;
	size_t got; /* payload bytes gathered into rec.data */
	size_t cap; /* bytes allocated at rec.data (grows up to rec.len) */
	const char *error;
	/* Set after init: a payload it cannot allocate is a dropped record
	 * (whose bytes are then skipped), not FUT__WIRE_ENOMEM; and, with
	 * could_hold, a large payload (past the first gathering buffer) that
	 * could_hold(len) refuses is dropped from its header, before any of
	 * its bytes.  The decoder itself never tries a declared length. */
	bool may_drop;
	bool (*could_hold)(size_t len);
	uint64_t skip; /* bytes of a dropped payload still to skip */
};

FUT__PRIVATE void fut__wire_dec_init(struct fut__wire_dec *d, unsigned dir);
/* Frees a payload still being gathered. */
FUT__PRIVATE void fut__wire_dec_fini(struct fut__wire_dec *d);

/*
 * Consumes bytes from buf[0..len), sets *used to how many.  RECORD: *rec
 * holds the next record (when !rec->owned its data points into buf, valid
 * while buf is);  MORE: everything was used;  EBAD, ENOMEM: stop.
 */
FUT__PRIVATE int fut__wire_dec_feed(struct fut__wire_dec *d, const void *buf,
				    size_t len, size_t *used,
				    struct fut__wire_rec *rec);
/*
 * While a large payload is being gathered into its own buffer, where the
 * next bytes may be read straight into (at most *room): reading there
 * skips a copy.  NULL when the decoder wants bytes through feed.  The
 * buffer grows as bytes arrive (a declared length costs no memory until
 * it is sent), so *room may be less than the rest of the payload.
 */
void *fut__wire_dec_direct(struct fut__wire_dec *d, size_t *room);
/* n bytes were written at fut__wire_dec_direct(): RECORD or MORE. */
int fut__wire_dec_direct_done(struct fut__wire_dec *d, size_t n,
			      struct fut__wire_rec *rec);
/* True between frames (nothing of a frame gathered). */
FUT__PRIVATE bool fut__wire_dec_idle(const struct fut__wire_dec *d);

/* Writes a frame header into buf[0..FUT__WIRE_FRAME_HDR). */
FUT__PRIVATE void fut__wire_put_frame(void *buf, unsigned type, uint32_t count,
				      uint64_t body_len);
/* Writes a record header into buf[0..FUT__WIRE_REC_HDR). */
FUT__PRIVATE void fut__wire_put_record(void *buf, uint64_t id, uint64_t fn,
				       uint32_t kind, int32_t code,
				       uint64_t len);

/*
 * The fork server's control messages (one SOCK_SEQPACKET message each):
 * magic, version, type, 0, u32 slot, u32 gen, i32 pid, i32 value, 4 zero
 * bytes.  SPAWN (parent -> server, with the worker's two fds) asks for a
 * worker in slot/gen; SPAWNED gives its pid; SPAWN_FAILED an errno in
 * value; EXITED a reaped worker's pid and wait status; KILL (parent ->
 * server) kills the process group of the worker in slot/gen with that pid.
 */
#define FUT__WIRE_CTL_SIZE 24u
enum {
	FUT__WIRE_CTL_SPAWN = 1,
	FUT__WIRE_CTL_SPAWNED = 2,
	FUT__WIRE_CTL_SPAWN_FAILED = 3,
	FUT__WIRE_CTL_EXITED = 4,
	FUT__WIRE_CTL_KILL = 5, /* parent -> server: kill slot/gen's group */
};
struct fut__wire_ctl {
	unsigned type;
	uint32_t slot;
	uint32_t gen;
	int32_t pid;
	int32_t value;
};
void fut__wire_ctl_put(void *buf, const struct fut__wire_ctl *c);
/* FUT_OK, or FUT_EINVAL when buf is not a well-formed message. */
int fut__wire_ctl_get(const void *buf, size_t len, struct fut__wire_ctl *c);

#endif /* FUT_WIRE_H */
