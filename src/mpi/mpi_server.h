/*
 * mpi_server.h: what a serving rank's files share (server.c: the MPI loop;
 * server_end.c: the end of serving early; server_results.c: the results
 * until they are sent; server_tasks.c: the task threads; server_pool.c:
 * the FUT_MPI_ISOLATE bridge to a process pool).  Private to libfuture-mpi.
 *
 * One thread at a time runs the loop and makes every MPI call: the calling
 * thread, or with threads_per_rank 1 whichever of it and the standby holds
 * the loop (that one also runs the tasks); otherwise the workers (or, with
 * ISOLATE, the pool's manager thread) run the tasks and record their
 * results.  s->lock guards the fields marked "lock"; it is never
 * held while a task runs, across an MPI call, or across a call into the
 * pool.
 */
#ifndef FUT_MPI_SERVER_H
#define FUT_MPI_SERVER_H

#include "mpi_int.h"

struct stask {
	struct stask *next;
	uint64_t id;
	fut_fn fn;		/* NULL: not found here, */
	const char *missing;	/* by this name (the name table's) */
	_Atomic uint32_t flags; /* FUT__F_INTERRUPT */
	bool slab; /* a slab block (core/slab.h), else fut__malloc'd */
	size_t len;
	unsigned char input[];
};

struct sname {
	fut_fn fn; /* NULL: no such function here */
	char *name;
};

struct pbatch;

/* ISOLATE: a task in the pool. */
struct ptask {
	struct pbatch *b;
	uint64_t id;
	fut_future *f; /* the pool's future; released by its callback */
	bool done;     /* s->lock */
	bool watched;  /* no memory for its callback: the loop polls it */
};

/* ISOLATE: the tasks of one fut_submit_many, freed with the last one. */
struct pbatch {
	struct pbatch *next, *prev; /* s->lock: s->batches */
	struct server *s;
	size_t n, left; /* left: s->lock */
	struct ptask t[];
};

struct server {
	struct fut__mpi_setup s;
	struct fut__mpi_link link;
	struct fut__wire_dec dec;
	struct sname *names; /* loop; read by workers under lock */
	/* The loop's: the tasks of the message being read, queued once it
	 * is read (server.c, queue_inbox()). */
	struct stask *inbox_head, *inbox_tail;
	size_t inbox_n;
	uint32_t nnames, capnames;
	pthread_t *threads;
	size_t nthreads;
	int error; /* loop: why serving ended early */

	pthread_mutex_t lock;
	pthread_cond_t work_cv, loop_cv, standby_cv;
	struct stask *qhead, *qtail; /* lock */
	size_t ntasks;		     /* lock: tasks queued or running */
	struct stask *running;	     /* lock */
	size_t busy;		     /* lock: tasks taken by workers */
	bool stop;		     /* lock: STOP came (or serving failed) */
	bool discard;  /* lock: BREAK came: every result is dropped */
	bool ack_due;  /* the loop's: BREAK came, its ACK not sent yet */
	bool ack_sent; /* the loop's: the ACK went (at most one) */
	bool loop_sleeping, loop_wake; /* lock */
	struct fut__mpi_frame results; /* lock */
	/* lock: the ids whose result found no memory even for the record
	 * that says so, sent as one once memory lets (server_results.c);
	 * room for one per task held is made when it comes. */
	uint64_t *lost;
	size_t nlost, caplost;
	/* The loop's: results whose send found no memory, sent first. */
	struct fut__mpi_frame unsent;

	/* threads_per_rank 1 (run_here): the loop's thread runs each task
	 * itself, and the standby thread takes the loop over while one runs
	 * long (server.c, serve()). */
	bool run_here;
	bool loop_owned;      /* lock: a thread runs the loop */
	bool running_here;    /* lock: a task runs on the thread that left it */
	bool finished;	      /* lock: the loop is done */
	bool standby_parked;  /* lock: the other thread sleeps without a tick */
	uint64_t here_seq;    /* lock: tasks run that way so far */
	int64_t probed_ns;    /* the loop's: its last MPI_Iprobe (run_here) */
	uint32_t since_probe; /* the loop's: tasks it took since then */
	bool probe_wait;      /* the loop's: the last clock read was early */

	/* ISOLATE: the batches in the pool (lock), and the run of tasks
	 * being gathered from a message (the loop's): one function, one
	 * input length. */
	struct pbatch *batches;
	size_t nwatched; /* the loop's: tasks it polls (ptask watched) */
	uint32_t run_name;
	size_t run_len, run_n, run_cap;
	unsigned char *run_inputs;
	size_t run_bytes; /* allocated at run_inputs */
	uint64_t *run_ids;
	fut_future **run_futs;
};

/* server_results.c (every function: caller holds s->lock) */

/* Wakes the loop if results are due. */
void fut__mpi_server_wake_locked(struct server *s);
/* A result record for id was added (rc FUT_OK) or not (then a shorter
 * one says so, now or, out of memory, once there is some). */
void fut__mpi_server_result_added_locked(struct server *s, uint64_t id, int rc);
/* Records t's outcome for the client, or that the task named not_found
 * (when not NULL) is not here. */
void fut__mpi_server_add_result_locked(struct server *s, uint64_t id,
				       const fut_task *t,
				       const char *not_found);
/* The loop's: the lost ids it can now record, then the results that are
 * due move to *fr. */
void fut__mpi_server_take_results_locked(struct server *s,
					 struct fut__mpi_frame *fr);
/* Room in s->lost for every task held and `more` coming; false: no
 * memory (serving must give up). */
bool fut__mpi_server_reserve_locked(struct server *s, size_t more);

/* server_end.c (the loop's) */

/* Frees the tasks of list (none started); returns how many. */
size_t fut__mpi_server_drop_tasks(struct stask *list);
/* Serving cannot go on: finish what runs, then return code (the loop). */
void fut__mpi_server_give_up(struct server *s, int code);
/* The client broke (its BREAK): what is queued is dropped, what runs
 * interrupted, every result from now on dropped, and an ACK goes once
 * our sends are out. */
void fut__mpi_server_on_break(struct server *s);
/* A rank that gave up: reads and drops the client's messages until its
 * BREAK (true if any came). */
bool fut__mpi_server_look_for_break(struct server *s);

/* server_tasks.c */

/* Runs one task taken from the queue (no lock held), records its result
 * and frees it; returns with s->lock held. */
void fut__mpi_server_run_one(struct server *s, struct stask *st);
/* Caller holds s->lock: takes the next queued task, or NULL. */
struct stask *fut__mpi_server_take_locked(struct server *s);
/* A worker thread's body (arg: the server). */
void *fut__mpi_server_worker(void *arg);

/* server_pool.c (ISOLATE; the loop's thread) */

/* Gathers a task record for the pool. */
void fut__mpi_pool_gather(struct server *s, const struct fut__wire_rec *r);
/* Passes the tasks gathered to the pool: one fut_submit_many. */
void fut__mpi_pool_flush(struct server *s);
/* An INTERRUPT for task id, which the pool holds. */
void fut__mpi_pool_interrupt(struct server *s, uint64_t id);
/* Records the outcome of each watched task whose future is done; true if
 * there were any. */
bool fut__mpi_pool_poll(struct server *s);

#endif /* FUT_MPI_SERVER_H */
