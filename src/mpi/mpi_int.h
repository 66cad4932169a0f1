/*
 * mpi_int.h: what the files of libfuture-mpi share.  Private: never
 * installed.  libfuture-mpi reaches the core only through the FUT__PRIVATE
 * internals (libfuture.so's LIBFUTURE_PRIVATE_<version> node) and struct
 * layouts of the core's private headers (src/core/).
 *
 * The files: names.c (the registry, the module table, task names),
 * link.c (a byte stream of wire frames over MPI messages, the polling
 * clock); the executor on root: client.c (its handle, creation,
 * shutdown and free), client_submit.c (jobs, submission),
 * client_manager.c (the manager thread) and client_stop.c (its stop of
 * the ranks), sharing mpi_client.h; the
 * serving ranks: server.c (the MPI loop), server_results.c (the results
 * until they are sent), server_tasks.c (the task threads) and server_pool.c (FUT_MPI_ISOLATE: the tasks go to
 * a libfuture process pool), sharing mpi_server.h; spawn.c
 * (FUT_MPI_SPAWN: the spawn, the children's side, the disconnect),
 * mpi_executor.c (fut_mpi_executor_new: the checks and the handshake,
 * fut_mpi_info).
 */
#ifndef FUT_MPI_INT_H
#define FUT_MPI_INT_H

#include <mpi.h>
#include <pthread.h>

#include "future_mpi.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/names.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/wire.h"

/* The tags of the library's own communicator: the wire stream, and a
 * server's last message, empty, after everything it sent (the client
 * receives with MPI_ANY_TAG, so the BYE cannot overtake the stream: once
 * every server's BYE came, nothing of theirs is left in flight, and the
 * communicator can be freed without orphaning a message that a later
 * communicator could match -- MPICH reuses context ids at once). */
#define FUT__MPI_TAG 1
#define FUT__MPI_TAG_BYE 2
/* Root's BREAK (empty; root's last message to that rank: a rank that gave
 * up drops the stream until it, server_end.c), and a server's answer to
 * it (empty): everything it sent before is out, and it sends no more
 * results (server.c, loop()). */
#define FUT__MPI_TAG_ACK 3
#define FUT__MPI_TAG_BREAK FUT__MPI_TAG_ACK

/* ------------------------------------------------------------------ */
/* names.c                                                              */

/* A module's GNU build-id: the core's (core/names.h). */

/*
 * fn's name for the wire, into name[0..FUT__WIRE_MAX_NAME]: its
 * registered name, else "@<build-id>+0x<offset>"; *id gets its module's
 * build-id (len 0 for a registered name).  FUT_OK, FUT_EINVAL (no module,
 * or one without a build-id, and not registered).
 */
int fut__mpi_name_of(fut_fn fn, char *name, struct fut__build_id *id);
/* The function a name means here: the registry, then this process's own
 * modules with that build-id; NULL when neither has it. */
fut_fn fut__mpi_resolve(const char *name, size_t len);
/* This process's modules' build-ids, read now (a module dlopened since
 * an earlier executor included): *n of them at *ids, fut__malloc'd, the
 * caller's to free.  FUT_OK or FUT_ENOMEM. */
int fut__mpi_modules(struct fut__build_id **ids, size_t *n);

/* ------------------------------------------------------------------ */
/* link.c: wire frames as a byte stream over MPI messages               */

/* Test hook: the largest MPI message (bytes); a frame longer than it goes
 * in parts.  0 restores the default, INT_MAX. */
void fut__mpi_set_message_limit(size_t bytes);

/* A frame being written: header room at the front, records after it. */
struct fut__mpi_frame {
	unsigned char *buf;
	size_t len, cap;
	uint32_t count;
};
/* Appends a record (header and payload); FUT_OK or FUT_ENOMEM. */
int fut__mpi_frame_add(struct fut__mpi_frame *fr, uint64_t id, uint64_t fn,
		       uint32_t kind, int32_t code, const void *data,
		       size_t len);

/* The sends of one side, in flight; the receive stage. */
struct fut__mpi_link {
	MPI_Comm comm;
	struct fut__mpi_send *sends; /* in flight */
	MPI_Request *reqs;
	size_t nsends, capsends;
	unsigned char *stage;
	size_t stage_cap;
	/* A sent frame's buffer kept for the next frame (see
	 * fut__mpi_link_frame). */
	unsigned char *spare;
	size_t spare_cap;
	/* Called (if set) with the rank of a send whose MPI_Test failed: the
	 * send is dropped (fut__mpi_link_progress()). */
	void (*lost)(void *arg, int to);
	void *lost_arg;
};
void fut__mpi_link_init(struct fut__mpi_link *l, MPI_Comm comm);
/* Waits for nothing: cancels nothing.  Frees the link's memory. */
void fut__mpi_link_fini(struct fut__mpi_link *l);
/* Sends fr's frame (TASKS or RESULTS) to rank `to` and takes its buffer
 * (fr is then empty).  FUT_OK, FUT_ENOMEM, FUT_EBROKEN (MPI failed). */
int fut__mpi_link_send(struct fut__mpi_link *l, int to, unsigned type,
		       struct fut__mpi_frame *fr);
/* Gives an empty fr the buffer of a frame sent before, if the link kept
 * one: no malloc (and no glibc consolidation) a message. */
void fut__mpi_link_frame(struct fut__mpi_link *l, struct fut__mpi_frame *fr);
/* Completes what sends it can; true if one completed.  One whose
 * MPI_Test fails is dropped, and l->lost told. */
bool fut__mpi_link_progress(struct fut__mpi_link *l);
/* True while sends are in flight. */
bool fut__mpi_link_busy(const struct fut__mpi_link *l);
/* Tests the sends in flight until none is left, for up to ns: true once
 * none is. */
bool fut__mpi_link_flush(struct fut__mpi_link *l, int64_t ns);
/* One message from `from` (MPI_ANY_SOURCE allowed), of any tag, if one is
 * there: FUT_OK with *data and *len (the link's stage, valid until the
 * next call), *source and *tag; FUT_ETIMEDOUT when none; FUT_EBROKEN,
 * FUT_ENOMEM. */
int fut__mpi_link_recv(struct fut__mpi_link *l, int from, const void **data,
		       size_t *len, int *source, int *tag);
/* A server's BYE to root (blocking): empty, or one byte when it gave up
 * serving and root's BREAK did not come (it then drains what root sent
 * until root's own empty BYE, or a BREAK, so that no send of root's is left
 * unmatched: a large one would never complete).  Root answers a one-byte
 * BYE with an empty one, through the same call.  FUT_OK or FUT_EBROKEN. */
int fut__mpi_send_bye(MPI_Comm comm, int root, bool gave_up);
/* An empty message of tag 3 to rank to (blocking: eager): root's BREAK,
 * or a server's ACK of it.  FUT_OK or FUT_EBROKEN. */
int fut__mpi_send_ack(MPI_Comm comm, int to);
/* A server that gave up: reads and drops what root sends until root's
 * answer to its BYE (polling with the given spin and backoff, seconds). */
void fut__mpi_link_drain(struct fut__mpi_link *l, int root, double spin,
			 double backoff);

/* The polling clock: spin, then an exponential backoff up to a cap. */
struct fut__mpi_idle {
	int64_t spin_ns, cap_ns;
	int64_t idle_since; /* 0: busy */
	int64_t sleep_ns;
};
void fut__mpi_idle_init(struct fut__mpi_idle *c, double spin, double cap);
/* Something happened: spin again next time. */
void fut__mpi_idle_busy(struct fut__mpi_idle *c);
/* Nothing happened: 0 while spinning, else how long to sleep (ns).  spin false: sleep at once (a server whose own tasks
 * run: their end wakes it). */
int64_t fut__mpi_idle_next(struct fut__mpi_idle *c, bool spin);
/* CLOCK_MONOTONIC, ns. */
int64_t fut__mpi_now_ns(void);
/* An absolute CLOCK_MONOTONIC timespec ns from now. */
struct timespec fut__mpi_abstime(int64_t ns);
/* Sleeps on cv (a CLOCK_MONOTONIC one) up to ns unless *wake (both flags
 * guarded by lock, which the caller does not hold); clears *wake.  Whoever
 * sets *wake signals cv while *sleeping. */
void fut__mpi_nap(pthread_mutex_t *lock, pthread_cond_t *cv, bool *wake,
		  bool *sleeping, int64_t ns);

/* ------------------------------------------------------------------ */
/* the client's files and the server's                                 */

/* Test hook (LSan cannot check MPI programs): the library's live objects
 * in this process: clients, their jobs, server tasks.  0 once every
 * executor was freed and every future released. */
size_t fut__mpi_live_objects(void);
/* Counts one object more (+1) or less (-1). */
void fut__mpi_live_count(int delta);

struct fut__mpi_setup {
	MPI_Comm comm; /* the duplicate, owned by the executor */
	/* SPAWN: the intercommunicator between the spawning process and its
	 * children, disconnected once comm (their merge) is freed; else
	 * MPI_COMM_NULL. */
	MPI_Comm inter;
	int rank, size, root;
	size_t threads, prefetch;
	double spin, backoff;
	/* The build-ids every server has (client only). */
	struct fut__build_id *common;
	size_t ncommon;
	/* ISOLATE, servers only: the process pool the tasks run in, owned
	 * by the server (freed when serving ends); else NULL. */
	fut_executor *pool;
};

/* Frees setup->comm and, in spawn mode, disconnects setup->inter. */
void fut__mpi_comm_release(struct fut__mpi_setup *setup);

/* ------------------------------------------------------------------ */
/* spawn.c                                                              */

/* The spawning process: starts max_workers copies of command (NULL: this
 * executable, resolved from /proc/self/exe) with argv, under
 * MPI_ERRORS_RETURN, and merges them into *merged (this process rank 0)
 * with the intercommunicator in *inter.  FUT_OK; FUT_EAGAIN (no such
 * executable, or MPI_ERR_SPAWN); FUT_ENOTSUP (any other refusal);
 * FUT_ENOMEM. */
int fut__mpi_spawn(const char *command, char *const *argv, size_t n,
		   MPI_Comm *inter, MPI_Comm *merged);
/* A spawned copy: *merged gets the merge with its parent (ranks 1..n),
 * *inter the parent intercommunicator.  FUT_OK, or FUT_ENOTSUP when this
 * process was not spawned; FUT_EBROKEN when the merge failed. */
int fut__mpi_spawned(MPI_Comm *inter, MPI_Comm *merged);

/* ISOLATE: a worker process of a server's pool remembers its rank, for
 * fut_mpi_task_rank() (set before the pool forks; -1 once it is freed, so
 * that a process pool made later gets -1). */
void fut__mpi_isolate_rank_set(int rank);

/* The executor on root.  Takes setup->comm and setup->common in every
 * case.  FUT_OK, FUT_ENOMEM, FUT_EAGAIN (no manager thread). */
int fut__mpi_client_new(fut_executor **out, struct fut__mpi_setup *setup);
/* True if ex is a client of this library. */
bool fut__mpi_client_is(const fut_executor *ex);
void fut__mpi_client_info(const fut_executor *ex, int *servers, int *rank);
/* From the finalize hook: shuts the executor down and waits. */
void fut__mpi_client_finalize(fut_executor *ex);
/* Lets every executor of this process held after a free from its last
 * done callback (mpi_client.h, holding) take its servers' BYEs and end,
 * and waits until they have: fut_mpi_executor_new calls it first, so that
 * no manager of an old executor calls MPI beside its collective calls. */
void fut__mpi_release_held(void);

/* Serves until the client's STOP; frees setup->comm.  FUT_OK, or the code
 * that ended serving. */
int fut__mpi_serve(struct fut__mpi_setup *setup);

#endif /* FUT_MPI_INT_H */
