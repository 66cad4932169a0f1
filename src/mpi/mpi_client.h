/*
 * mpi_client.h: what the client's files share (client.c: the handle, its
 * creation, shutdown and free; client_submit.c: jobs and submission;
 * client_manager.c: the manager thread).  Private to libfuture-mpi.
 *
 * The manager thread owns every MPI call; submit, shutdown and interrupt
 * run on any caller's thread.  c->lock guards the queue, the flags marked
 * "lock" and the name table; it is never held across an MPI call or user
 * code.  Lock order: c->lock -> a future's lock.
 */
#ifndef FUT_MPI_CLIENT_H
#define FUT_MPI_CLIENT_H

#include "mpi_int.h"

struct mclient;

/* How far ahead in a batch a job names another (struct mjob, ahead). */
#define FUT__MPI_AHEAD 8

struct mjob {
	struct fut_future fut; /* first: the caller's handle */
	struct mclient *c;     /* one client reference while the block lives */
	struct mjob *next;     /* the queue, or its rank's in-flight list */
	/* A job AHEAD places later in the same fut_submit_many, or NULL:
	 * the manager prefetches it while it walks the queue (a hint only;
	 * client_manager.c, pop_locked()). */
	struct mjob *ahead;
	uint64_t id;
	uint32_t name;
	bool interrupt_sent;
	bool dropped; /* cancelled while queued (client_manager.c) */
	bool slab;    /* a slab block (core/slab.h), else fut__malloc'd */
	size_t len;
	/* The task's input until it is sent; then a result no longer than
	 * it (client_manager.c, on_result()). */
	unsigned char input[];
};

/* A result read and not yet completed (client_manager.c, on_result()). */
struct mheld {
	struct mjob *j;
	int rank;
	struct fut__wire_rec rec;
};

/* Results held in the client itself; more go to a heap array
 * (client_manager.c, on_result()). */
#define FUT__MPI_HELD_MAX 256

/* A server rank, as the manager sees it (the manager's alone). */
struct mrank {
	struct mjob *head, *tail; /* in flight, in the order sent */
	size_t inflight;
	uint32_t names_sent; /* ids 1..names_sent are known there */
	bool stopped;
	bool bye; /* its BYE came: nothing more of it is in flight */
	/* MPI refused a send to it: nothing more goes to it, and no BYE of
	 * its is waited for. */
	bool gone;
	/* A break found tasks of ours there: its STOP is a BREAK, and,
	 * unless gone, the break waits for its ACK (or its BYE) before it
	 * fails any future (client_stop.c, take_acks()). */
	bool brk, awaited, acked;
	struct fut__wire_dec dec;
};

struct cname {
	fut_fn fn;
	char *name;
};

struct mclient {
	struct fut_executor ex; /* first: the handle */
	struct fut__mpi_setup s;
	size_t batch;
	pthread_t manager;
	sigset_t maker_mask; /* done callbacks run with it (core/sync.h) */
	int keyval; /* the MPI_COMM_SELF attribute of the finalize hook */
	_Atomic bool unhooking;
	_Atomic bool interrupt_scan; /* some job asked for an interrupt */
	_Atomic bool interrupt_all;  /* shutdown(INTERRUPT) */
	/* Hints that let the manager's poll loop skip c->lock: queued is
	 * stored with the queue (under the lock) and is false only when it
	 * is empty; shutting is set with shutdown. */
	_Atomic bool queued;
	_Atomic bool shutting;

	pthread_mutex_t lock;
	pthread_cond_t wake_cv, done_cv;
	struct mjob *qhead, *qtail; /* lock */
	bool shutdown;		    /* lock */
	bool broken;		    /* lock */
	char *broken_msg;	    /* lock; never changes once set */
	bool wake, sleeping;	    /* lock: the manager's sleep */
	bool manager_done, joined;  /* lock */
	/* lock: the manager saw the shutdown with work left; until then a
	 * shutdown(NOWAIT) waits (client.c, client_shutdown()). */
	bool shutdown_seen;
	bool free_on_exit; /* lock: freed from a callback */
	/* Shut down from one of its done callbacks with nothing in flight
	 * or queued: the thread that has the last outcome may call
	 * MPI_Finalize, so the manager sends the STOPs at once (the servers
	 * return) and then makes no MPI call (the BYEs wait) until a thread
	 * outside that callback releases it (release_stop, under the lock):
	 * the finalize hook, a shutdown or free of another thread, or a new
	 * executor's creation (client.c, fut__mpi_release_held()). */
	_Atomic bool holding;
	bool release_stop; /* lock */
	/* lock: a thread outside the callbacks waits for the manager's end
	 * (a shutdown with wait, a release of the held): it is never held
	 * again (fut__mpi_hold_broken()). */
	bool let_go;
	struct mclient *held_next; /* client.c's list of held ones */
	struct cname *names;	   /* lock: id i + 1 at names[i] */
	uint32_t nnames, capnames; /* lock */

	/* The manager's own. */
	struct fut__mpi_link link;
	struct mrank *ranks; /* [s.size]; root's unused */
	size_t inflight;     /* the sum of the ranks' */
	uint64_t next_id;
	int next_rank;
	int hot_rank; /* the rank whose result came last; -1: none yet */
	bool stopping;
	bool hold_sent; /* holding: every STOP went, the BYEs wait */
	bool seen;	/* shutdown_seen was set */
	bool broke;	/* fut__mpi_break_all ran */
	bool deaf;	/* an MPI receive failed: none is waited for */
	/* A rank whose send failed in MPI_Test (then gone): the main loop
	 * breaks the executor, at once if tasks of ours are there
	 * (fut__mpi_progress()), else once a task waits to go
	 * (fut__mpi_break_lost()); -1: none. */
	int lost_rank;
	struct mheld held[FUT__MPI_HELD_MAX];
	struct mheld *more; /* results held past held[], capmore of them */
	size_t nheld, capmore;

	/* Handle + manager + one per job, on cache lines of its own: the
	 * caller's thread drops one for every job it releases, and shared
	 * with the fields above it made the manager miss on them. */
	char refs_gap[64];
	_Atomic size_t refs;
	char refs_gap_after[64 - sizeof(size_t)];
};

static inline struct mclient *fut__mpi_client_of(fut_executor *ex)
{
	return fut__container_of(ex, struct mclient, ex);
}

/* client.c */

/* Drops a reference: the handle's, the manager's or a job's. */
void fut__mpi_client_unref(struct mclient *c);
/* Caller holds c->lock: wakes the manager if it sleeps. */
void fut__mpi_client_wake_locked(struct mclient *c);
/* The manager, at its end: takes c off the list of held executors. */
void fut__mpi_unlist_held(struct mclient *c);
/* The manager, at the end of a break's wait, before any future ends:
 * holds it (holding) while a rank sent a BREAK still owes its BYE,
 * whatever release_stop says, unless a thread waits for its end. */
void fut__mpi_hold_broken(struct mclient *c);

/* client_submit.c: the executor's submit calls, and a job's end */

int fut__mpi_client_submit(fut_executor *ex, fut_fn fn, void *arg,
			   const void *data, size_t len, bool bytes,
			   fut_future **out);
int fut__mpi_client_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
				size_t stride, size_t n, fut_future **out);
/* Completes j with a failure and drops the manager's reference. */
void fut__mpi_job_fail(struct mjob *j, int code, int task_code,
		       const char *msg);

/* client_stop.c: the manager's stop of the ranks, and its pause */

/* Sends one STOP (BREAK: brk) to every server rank not yet stopped (nor
 * gone); one that found no memory is retried on the next call, one that
 * MPI refused is gone. */
void fut__mpi_stop_ranks(struct mclient *c);
/* The link's lost (link.c): a send to rank `to` failed in MPI_Test, so
 * that rank is gone (nothing more goes to it, no BYE of its is waited
 * for); arg: the client. */
void fut__mpi_rank_lost(void *arg, int to);
/* The manager's turn of fut__mpi_link_progress(): breaks the executor
 * when a rank with tasks of ours was lost meanwhile. */
bool fut__mpi_progress(struct mclient *c);
/* Tasks wait to go: breaks the executor if a rank was lost (with none of
 * ours there) meanwhile; true if it is broken. */
bool fut__mpi_break_lost(struct mclient *c);
/* Answers a rank's one-byte BYE (it gave up, and waits for this), but
 * for a rank sent a BREAK (its drain ends there); MPI refused it: that
 * rank is gone. */
void fut__mpi_answer_bye(struct mclient *c, int src);
/* MPI failed to receive: no message is waited for any more (deaf). */
void fut__mpi_go_deaf(struct mclient *c);
/* True once shut down with nothing left: then the ranks get their STOP. */
bool fut__mpi_drained(struct mclient *c);
/* True once every server's BYE came. */
bool fut__mpi_all_said_bye(const struct mclient *c);
/* Shut down with work left: a waiting shutdown(NOWAIT) may return. */
void fut__mpi_see_shutdown(struct mclient *c);
/* The end of a turn of the manager's polling loop: back to busy when it
 * did something, else a nap once the spin is over (none while a send is
 * in flight); a submit, an interrupt or a shutdown cuts the nap short. */
void fut__mpi_manager_pause(struct mclient *c, struct fut__mpi_idle *idle,
			    bool did);
/* Shut down and empty, the last job about to complete: STOPs and BYEs
 * first, then the communicator freed; false when the main loop must
 * finish that. */
bool fut__mpi_stop_first(struct mclient *c);

/* Asks rank r to interrupt every job in flight there (a break ends their
 * futures); best effort. */
void fut__mpi_interrupt_rank(struct mclient *c, int r);
/* Breaks the executor (why: fmt, formatted with rank and detail): every
 * queued and running job ends FUT_EBROKEN, what runs is interrupted, and
 * every rank gets its STOP (a BREAK where tasks ran, whose ACK it waits
 * for unless MPI refused a send to it) before any of them ends. */
void fut__mpi_break_all(struct mclient *c, const char *fmt, int rank,
			const char *detail);
/* Test hooks: the function fut__mpi_test_pause() runs, if any; whether
 * ex's shutdown has set `shutting` (for such a function). */
void fut__mpi_test_pause_hook(void (*fn)(void));
void fut__mpi_test_pause(void);
bool fut__mpi_test_shutting(fut_executor *ex);
/* While the executor is held (holding): sends the STOPs (again each
 * pass, 10 ms apart, until every rank has its own), then naps until
 * something wakes it; true while held. */
bool fut__mpi_hold(struct mclient *c);

/* client_manager.c: the manager thread's body (arg: the client); it
 * drops the manager's reference when it ends. */
void *fut__mpi_client_manager(void *arg);

#endif /* FUT_MPI_CLIENT_H */
