/*
 * thread_pool.h: private to the thread pool (thread_pool.c, tp_queue.c).
 *
 * The job block, the queue (tp_queue.c, a unit of its own), the worker
 * and the pool.  Locks are described where they are used.
 */
#ifndef FUT_THREAD_POOL_H
#define FUT_THREAD_POOL_H

#include <assert.h>
#include <pthread.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"

/* Threads a pool may add beyond max_workers while workers wait on futures
 * (the slot hand-off of a nested wait): as Java's ForkJoinPool. */
#define FUT__TP_EXTRA_THREADS 256u
/* Tasks a worker runs inline on its own stack, nested, because it waits
 * for exactly that task and it had not started. */
#define FUT__TP_INLINE_DEPTH 32u

/* The queue link of a job (and of the queue's stub). */
struct tp_link {
	_Atomic(struct tp_link *) next;
};

/*
 * The task's fut_task is built on the stack of the thread that runs it
 * (job_run): the block keeps only what the task starts from, so that a
 * job and its future fit one 64-byte block.  The task's function and its
 * argument (or input) wait in the future's job slots, which its outcome
 * replaces; the pool is found from the future's ops pointer, which points
 * into the pool (tpool.fops).  Only the queue link is the job's own: a
 * waiter may run a task (and settle its outcome) while the job is still
 * queued.
 *
 * fut_submit_bytes' input (FUT__F_INPUT in the future's flags) is a
 * struct job_input: inline in the block when it is short, else a heap
 * copy, which the thread that runs the task frees once the task returned
 * (the thread that drops a task never started frees it then).
 */
struct job {
	struct fut_future fut; /* first: the caller's handle */
	struct tp_link link;   /* queue link */
	unsigned char bytes[]; /* inline class: a struct job_input */
};

struct job_input {
	size_t len;
	unsigned char bytes[];
};

_Static_assert(sizeof(struct job) <= FUT__SLAB_SMALL,
	       "a job must fit the smallest block class");

/*
 * The queue: one FIFO of every task not yet taken, whoever submitted it.
 * Submitters append under plock, workers take from the head under clock
 * (a lock only workers touch), so a submitter and a worker share no lock
 * while the queue holds more than one job.  A stub node keeps the list
 * non-empty; a worker that takes the last job puts the stub back behind
 * it under plock.  pushed and popped count jobs in and out (written under
 * their lock, read without it as hints: queued = pushed - popped).
 * max_queue is held with reservations: `reserved` counts jobs admitted
 * and not yet taken, and a submitter that finds no room sleeps on `room`.
 */
struct tp_queue {
	_Alignas(64) fut__lock plock;
	bool closed; /* guarded by plock: no more pushes */
	int broken;  /* guarded by plock: a code pushes return, 0: none */
	struct tp_link *tail;
	/* Apart from plock: lookers poll it, and their reads must not
	 * make the submitter wait for the lock's line. */
	_Alignas(64) _Atomic uint64_t pushed;

	_Alignas(64) fut__lock clock;
	struct tp_link *head;
	_Atomic uint64_t popped;

	_Alignas(64) size_t max; /* max_queue; 0: unbounded */
	_Atomic size_t reserved;
	_Atomic uint32_t room; /* futex word of submitters waiting for room */
	_Atomic uint32_t nroom_waiters;
	struct tp_link stub;
};

void fut__tp_queue_init(struct tp_queue *q, size_t max);
/* Appends first..last (n linked jobs); FUT_ESHUTDOWN once closed, the
 * broken code once broken (nothing queued then).  *was_empty: no job was
 * queued before them (one may still be being taken). */
int fut__tp_queue_push(struct tp_queue *q, struct job *first, struct job *last,
		       size_t n, bool *was_empty);
/* The oldest job, or NULL; *last: it was the last one queued (read
 * without touching the submitters' cache lines). */
struct job *fut__tp_queue_pop(struct tp_queue *q, bool *last);
/* Closes the queue to pushes: with `code` FUT_ESHUTDOWN, or a broken
 * pool's code (FUT_EBROKEN). */
void fut__tp_queue_close(struct tp_queue *q, int code);
/* Empties the queue: the caller owns the returned list (linked through
 * link.next as struct job; each still holds its queue reference). */
struct job *fut__tp_queue_drain(struct tp_queue *q);
/* Jobs queued (a hint: it may count one being pushed or taken). */
static inline uint64_t fut__tp_queue_count(struct tp_queue *q)
{
	uint64_t out = atomic_load_explicit(&q->popped, memory_order_seq_cst);
	uint64_t in = atomic_load_explicit(&q->pushed, memory_order_seq_cst);
	return in > out ? in - out : 0;
}
/* max_queue: reserves room for n jobs, sleeping while there is none
 * (a batch larger than max_queue goes in when the queue is empty).
 * stop(ctx) is asked before each sleep: a nonzero code returns it. */
int fut__tp_queue_reserve(struct tp_queue *q, size_t n, int (*stop)(void *),
			  void *ctx);
/* Gives back room for n jobs that were reserved and never pushed. */
void fut__tp_queue_unreserve(struct tp_queue *q, size_t n);
/* Wakes every submitter waiting for room (shutdown, break). */
void fut__tp_queue_wake_room(struct tp_queue *q);

struct tpool;

/* A task a worker runs: a frame of its running stack (on its stack). */
struct run_frame {
	struct job *job;
	struct run_frame *outer;
};

struct worker {
	struct tpool *pool;
	pthread_t thread;
	unsigned index;
	bool joined;	/* guarded by p->ctl */
	bool has_slot;	/* this thread's own */
	bool handed;	/* gave its slot up for a nested wait; its own */
	unsigned depth; /* tasks run nested inline; this thread's own */
	struct fut__wait_hooks hooks;
	fut__lock lock; /* guards the walk of `running` (interrupt) */
	/* Tasks it runs, innermost first: written by the worker alone;
	 * read by an interrupting shutdown under lock (see run_started). */
	_Atomic(struct run_frame *) running;
};

struct tpool {
	struct fut_executor ex; /* first: the handle */
	/* Set at creation, read-only afterwards. */
	struct fut__future_ops fops; /* every job's future points here */
	size_t max_workers;
	size_t max_threads; /* max_workers + FUT__TP_EXTRA_THREADS */
	int (*initializer)(void *initarg);
	void *initarg;
	char prefix[16];
	struct worker **workers; /* [max_threads]; published by nthreads */
	_Atomic bool shutdown;	 /* written once */
	_Atomic bool broken;	 /* written once */

	struct tp_queue q;

	/* Slots and idle workers: see "Slots" and "Idle workers" in
	 * thread_pool.c. */
	_Alignas(64) _Atomic uint32_t nbusy; /* threads holding a slot */
	_Atomic uint32_t nwant;	    /* waiters wanting their slot back */
	_Atomic uint32_t slotword;  /* futex word of those waiters */
	_Atomic uint32_t nwaiting;  /* workers in a nested wait, slot given */
	_Atomic uint32_t nspinning; /* idle workers looking for work */
	_Atomic uint32_t nsleeping; /* idle workers asleep on wake */
	_Atomic uint32_t tokens;    /* wake-ups sent, not yet taken */
	_Atomic uint32_t wake;	    /* futex word of idle workers */
	_Atomic uint32_t nthreads;  /* workers started (published) */
	_Atomic uint32_t interrupting; /* shutdowns walking running stacks */

	_Alignas(64) _Atomic size_t refs; /* handle + workers + job blocks */
	pthread_mutex_t ctl;
	pthread_cond_t ctl_cv;
	uint32_t nlive; /* guarded by ctl: worker threads not yet exited */
	bool detached;	/* guarded by ctl: freed from its own thread */
};

static inline int pool_state(struct tpool *p)
{
	if (atomic_load(&p->broken))
		return FUT_EBROKEN;
	if (atomic_load(&p->shutdown))
		return FUT_ESHUTDOWN;
	return FUT_OK;
}

/* FUT__SLAB_LARGE holds a job and an inline input with its 8-byte length. */
#define FUT__TP_INLINE_BYTES (FUT__SLAB_LARGE - FUT__SLAB_SMALL - 8u)

/* Test hooks: submitters of thread pool ex now blocked on a full queue
 * (max_queue), and the worker threads it has started. */
size_t fut__tp_blocked_submitters(fut_executor *ex);
size_t fut__tp_threads(fut_executor *ex);
/* Test hook: tasks queued in thread pool ex, not yet taken. */
size_t fut__tp_queued(fut_executor *ex);

#endif /* FUT_THREAD_POOL_H */
