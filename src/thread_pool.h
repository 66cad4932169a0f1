/*
 * thread_pool.h: private to the thread pool (thread_pool.c, tp_queue.c).
 *
 * The job block, the worker and the pool, and the queue functions that
 * tp_queue.c gives thread_pool.c.  Locks are described in thread_pool.c.
 */
#ifndef FUT_THREAD_POOL_H
#define FUT_THREAD_POOL_H

#include <pthread.h>

#include "internal.h"

#define FUT__TP_BATCH 32u /* most jobs a worker steals, or gathers */
#define FUT__TP_TAKE_MAX                                                       \
	((size_t)1 << 30) /* most taken from the global queue */

struct tpool;

/*
 * The task's fut_task is built on the stack of the thread that runs it
 * (job_run): the block keeps only what the task starts from, so that a
 * job and its future fit one 64-byte block.  Most of it lives
 * in the future: the task's function and its argument (or input) wait in
 * the future's job slots, which its outcome replaces, and the pool is
 * found from the future's ops pointer, which points into the pool
 * (tpool.fops).  Only the queue link is the job's own: a waiter may run a
 * task (and settle its outcome) while the job is still queued.
 *
 * fut_submit_bytes' input (FUT__F_INPUT in the future's flags) is a
 * struct job_input: inline in the block when it is short, else a heap
 * copy, which the thread that runs the task frees once the task returned
 * (the thread that drops a task never started frees it then).
 */
struct job {
	struct fut_future fut; /* first: the caller's handle */
	struct job *next; /* queue link; running-stack link while it runs */
	unsigned char bytes[]; /* inline class: a struct job_input */
};

struct job_input {
	size_t len;
	unsigned char bytes[];
};

_Static_assert(sizeof(struct job) <= FUT__TP_JOB_SIZE,
	       "a job must fit the smallest block class");

struct worker {
	struct tpool *pool;
	pthread_t thread;
	unsigned index;
	bool idle;	  /* counted in p->nidle; this thread's own */
	bool joined;	  /* guarded by p->ctl */
	bool batch_sleep; /* may sleep as SCHED_BATCH (idle_sleep); its own */
	unsigned depth;	  /* tasks run nested in help(); this thread's own */
	struct fut__wait_hooks hooks;
	fut__lock lock;
	struct job *head, *tail; /* local queue: guarded by lock */
	_Atomic uint32_t nlocal; /* written under lock */
	/* Jobs it runs, innermost first: written by the worker alone;
	 * read by an interrupting shutdown under lock (see run_job). */
	_Atomic(struct job *) running;
	_Atomic uint32_t *blocked; /* word it sleeps on: guarded by lock */
};

struct tpool {
	struct fut_executor ex; /* first: the handle */
	/* Set at creation, read-only afterwards. */
	struct fut__future_ops fops; /* every job's future points here */
	size_t max_workers;
	size_t max_queue;
	int (*initializer)(void *initarg);
	void *initarg;
	char prefix[16];
	struct worker **workers; /* [max_workers]; published by nthreads */
	char pad0[64];

	fut__lock qlock;
	bool closed; /* guarded by qlock: no more pushes */
	struct job *qhead, *qtail;
	_Atomic size_t qlen; /* written under qlock */
	char pad1[64];

	_Atomic uint32_t interrupting; /* shutdowns walking running stacks */
	_Atomic uint32_t nidle;	       /* workers not running a task */
	_Atomic uint32_t nsleeping;    /* workers asleep on wake */
	_Atomic uint32_t nspinning;    /* idle workers spinning before sleep */
	_Atomic uint32_t wake;	       /* futex word of idle workers */
	_Atomic bool waking;	   /* a wake-up is on its way to a sleeper */
	_Atomic uint32_t nthreads; /* workers started (published) */
	_Atomic uint32_t nblocked; /* workers asleep in a nested wait */
	_Atomic uint32_t space;	   /* futex word of max_queue submitters */
	_Atomic uint32_t nspace_waiters;
	_Atomic bool shutdown;
	_Atomic bool broken;
	_Atomic uint32_t assisting; /* tasks run inline by waiters */
	_Atomic int64_t stale;	    /* queued jobs a waiter already ran */
	char pad2[64];

	_Atomic size_t refs; /* handle + live workers + job blocks */
	pthread_mutex_t ctl;
	pthread_cond_t ctl_cv;
	uint32_t nlive; /* guarded by ctl: worker threads not yet exited */
};

static inline int pool_state(struct tpool *p)
{
	if (atomic_load(&p->broken))
		return FUT_EBROKEN;
	if (atomic_load(&p->shutdown))
		return FUT_ESHUTDOWN;
	return FUT_OK;
}

/* tp_queue.c.  Takes a job for w: its local queue, else a batch from the
 * global queue, else half of another worker's local queue; NULL if none. */
struct job *fut__tp_queue_take(struct worker *w);
/* Appends first..last (n linked jobs) to the global queue, unless the pool
 * is shut down or broken (then that code, nothing queued). */
int fut__tp_queue_push(struct tpool *p, struct job *first, struct job *last,
		       size_t n);
/* Empties every queue; the caller owns the returned list (each job still
 * holds its queue reference). */
struct job *fut__tp_queue_drain(struct tpool *p);
/* Jobs waiting in any queue (for max_queue). */
size_t fut__tp_queue_count(struct tpool *p);
/* True if an idle worker (other than self) could take a job now. */
bool fut__tp_queue_visible(struct tpool *p, const struct worker *self);
/* Wakes up to n sleeping idle workers (if any sleep). */
void fut__tp_queue_wake_sleepers(struct tpool *p, int n);
/* Wakes submitters blocked on a full queue (if any). */
void fut__tp_queue_wake_space(struct tpool *p);

#endif /* FUT_THREAD_POOL_H */
