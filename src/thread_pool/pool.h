/*
 * thread_pool/pool.h: private to the thread pool's files.
 *
 * The job block, the worker and the pool, and what each file of the wing
 * gives the others (job.c, idle.c, run.c; the queue has queue.h).  Locks
 * are described where they are used.
 */
#ifndef FUT_THREAD_POOL_POOL_H
#define FUT_THREAD_POOL_POOL_H

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "thread_pool/queue.h"

/* Threads a pool may add beyond max_workers while workers wait on futures
 * (the slot hand-off of a nested wait): as Java's ForkJoinPool. */
#define FUT__TP_EXTRA_THREADS 256u
/* Tasks a worker runs inline on its own stack, nested, because it waits
 * for exactly that task and it had not started. */
#define FUT__TP_INLINE_DEPTH 32u

/*
 * The task's fut_task is built on the stack of the thread that runs it
 * (job_run): the block keeps only what the task starts from, so that a
 * job and its future fit one 64-byte block.  The task's function and its
 * argument (or input) wait in the future's task slots, which its outcome
 * replaces; the pool is found from the future's ops pointer, which points
 * into the pool (tpool.fops).  Only the queue link is the job's own: a
 * waiter may run a task (and settle its outcome) while the job is still
 * queued.
 *
 * fut_submit_bytes' input (FUT__F_EXECUTOR in the future's flags) is a
 * struct job_input: inline in the block when it is short, else a heap
 * copy, which the thread that runs the task frees once the task returned
 * (the thread that drops a task never started frees it then).
 */
struct job {
	struct fut_future fut; /* first: the caller's handle */
	struct tp_link link;   /* queue link */
	unsigned char bytes[]; /* inline class: a struct job_input */
};

/* The bytes start aligned as malloc's memory, as docs/api.md promises
 * (a task may read a long double of its input in place): in a heap copy,
 * and inline, behind the 64-byte job in a block of slab.c's larger
 * classes, which are 16-aligned. */
struct job_input {
	size_t len;
	_Alignas(max_align_t) unsigned char bytes[];
};

_Static_assert(sizeof(struct job) <= FUT__SLAB_SMALL,
	       "a job must fit the smallest block class");
_Static_assert(offsetof(struct job, bytes) % _Alignof(max_align_t) == 0 &&
		       _Alignof(max_align_t) <= 16,
	       "an inline input starts aligned in a 16-aligned block");

struct tpool;

/* A task a worker runs: a frame of its running stack (on its stack). */
struct run_frame {
	struct job *job;
	struct run_frame *outer;
};

/* A worker thread's stack (stack.c); base NULL: glibc's own. */
struct fut__tp_stack {
	void *base;
	size_t size;
};

struct worker {
	struct tpool *pool;
	/* Written by its starter, then guarded by p->ctl once `starting`
	 * is false. */
	pthread_t thread;
	struct fut__tp_stack stack;
	unsigned index;
	bool joined;   /* guarded by p->ctl: joined, or nothing to join */
	bool starting; /* guarded by p->ctl: pthread_create not yet over */
	bool hole;     /* guarded by p->ctl: its start failed; place free */
	bool has_slot; /* this thread's own */
	bool handed;   /* gave its slot up for a nested wait; its own */
	/* Runs done callbacks with no slot and is no looker meanwhile
	 * (run.c, fut__tp_step_aside); its own. */
	bool aside;
	/* Of them, it gave its slot up for the callbacks of a task it took
	 * off the queue (run.c, fut__tp_hook_callbacks); its own. */
	bool aside_slot;
	bool initializing; /* runs the initializer; its own */
	bool placed;	   /* started away from its starter's cpu (idle.c) */
	unsigned depth;	   /* tasks run nested inline; this thread's own */
	struct fut__wait_hooks hooks;
	/* Guards the walk of `running` (interrupt) and another thread's
	 * look at `park` (run.c, a_wait_is_over). */
	fut__lock lock;
	/* Tasks it runs, innermost first: written by the worker alone;
	 * read by an interrupting shutdown under lock (see run_started). */
	_Atomic(struct run_frame *) running;
	/* Its nested wait's, from hook_block until hook_unblock (NULL for
	 * a submit's wait for room); written by the worker alone. */
	_Atomic(struct fut__park *) park;
};

struct tpool {
	struct fut_executor ex; /* first: the handle */
	/* Set at creation, read-only afterwards. */
	struct fut__future_ops fops; /* every job's future points here */
	size_t max_workers;
	size_t max_threads; /* max_workers + FUT__TP_EXTRA_THREADS */
	int (*initializer)(void *initarg);
	void *initarg;
	/* Threads in the initializer: each will look for the task it was
	 * started for (idle.c, "Idle workers").  Written only then. */
	_Atomic uint32_t ninit;
	char prefix[16];
	struct worker **workers; /* [max_threads]; published by nthreads */
	_Atomic bool shutdown;	 /* written once */
	_Atomic bool broken;	 /* written once */

	struct tp_queue q;

	/* Slots and idle workers: see "Slots" and "Idle workers" in
	 * idle.c. */
	_Alignas(64) _Atomic uint32_t nbusy; /* threads holding a slot */
	_Atomic uint32_t nwant;	   /* waiters wanting their slot back */
	_Atomic uint32_t slotword; /* futex word of those waiters */
	_Atomic uint32_t nwaiting; /* workers in a nested wait, slot given */
	/* Workers running done callbacks aside (no slot) outside a nested
	 * wait: as nwaiting, no thread of max_workers (reserve_locked). */
	_Atomic uint32_t naside;
	_Atomic uint32_t nspinning;    /* idle workers looking for work */
	_Atomic uint32_t nsleeping;    /* idle workers asleep on wake */
	_Atomic uint32_t tokens;       /* wake-ups sent, not yet taken */
	_Atomic uint32_t wake;	       /* futex word of idle workers */
	_Atomic uint32_t nthreads;     /* places in workers[] (published) */
	_Atomic uint32_t nholes;       /* of them, left by starts that failed */
	_Atomic uint32_t interrupting; /* shutdowns walking running stacks */
	/* Interrupting shutdowns begun: a task that starts as one walks is
	 * interrupted by its own worker (run.c, run_started). */
	_Atomic uint32_t interrupt_gen;
	/* Of the places (nthreads - nholes), threads whose start is over
	 * and succeeded (written under ctl): fewer while a start that has
	 * taken its place runs pthread_create, which may fail (run.c,
	 * past_bound). */
	_Atomic uint32_t nstarted;

	/* The handle, each worker, and one for every job block between
	 * them (see fut__tp_jobs_settle). */
	_Alignas(64) _Atomic size_t refs;
	/* Job blocks not yet destroyed, less every job ever pushed: each
	 * destroy counts down from 0 (wrapping), the handle's free adds
	 * the queue's final pushed count; the one that brings it to 0
	 * drops the job blocks' reference. */
	_Atomic uint64_t jobs_left;
	pthread_mutex_t ctl;
	pthread_cond_t ctl_cv;
	uint32_t nlive; /* guarded by ctl: worker threads not yet exited */
	/* A worker thread has started: set (under ctl) at the first
	 * pthread_create that succeeds, never cleared (admit()). */
	_Atomic bool started;
	bool detached; /* guarded by ctl: freed from its own thread */
	/* Guarded by ctl: shutdowns (or a break) settling the jobs they
	 * drained (no user code runs meanwhile). */
	uint32_t ndraining;
	/* Where threads start (start.c, "Placement"), guarded by ctl. */
	cpu_set_t cpus;	      /* the cpus of the first thread's starter */
	bool cpus_known;      /* they could be read: every thread runs there */
	int home_cpu;	      /* the cpu it ran on; -1: none */
	sigset_t sigmask;     /* the creator's: every thread starts with it */
	uint64_t pushed_seen; /* q.pushed at the last start placed */
};

static inline int pool_state(struct tpool *p)
{
	if (atomic_load(&p->broken))
		return FUT_EBROKEN;
	if (atomic_load(&p->shutdown))
		return FUT_ESHUTDOWN;
	return FUT_OK;
}

/* Worker threads started or being started (not yet exited or not). */
static inline uint32_t pool_threads(struct tpool *p)
{
	return atomic_load(&p->nthreads) - atomic_load(&p->nholes);
}

static inline struct tpool *pool_of(fut_executor *ex)
{
	return (struct tpool *)(void *)ex;
}

/* The pool of a job: its future's ops point into the pool. */
static inline struct tpool *job_pool(const struct job *j)
{
	uintptr_t ops = (uintptr_t)j->fut.ops;
	return (struct tpool *)(ops - offsetof(struct tpool, fops));
}

static inline struct job *next_job(const struct job *j)
{
	struct tp_link *l =
		atomic_load_explicit(&j->link.next, memory_order_relaxed);
	return l != NULL ? fut__container_of(l, struct job, link) : NULL;
}

static inline void set_next_job(struct job *j, struct job *next)
{
	atomic_store_explicit(&j->link.next, next != NULL ? &next->link : NULL,
			      memory_order_relaxed);
}

/* job.c */
/* Every job's future points at a copy of these (tpool.fops). */
extern const struct fut__future_ops fut__tp_job_ops;
/* A new job in a block of the slab (its future PENDING, one reference
 * for the caller and one for the queue), or NULL when out of memory. */
struct job *fut__tp_job_new(struct tpool *p, fut_fn fn, void *arg,
			    const void *data, size_t len, bool bytes);
/* Runs j's task in t on this thread's stack, then frees its input. */
void fut__tp_job_run(fut_task *t, struct job *j);
/* A job whose task will never run (cancelled): its input goes. */
void fut__tp_job_forget(struct job *j);
/* A job that was never queued: back to the cache. */
void fut__tp_job_discard(struct job *j);
/* Starts j, if still pending, and fails it with code (its input freed):
 * fut__future_start's code (FUT_OK: it ended here). */
int fut__tp_job_fail_unstarted(struct job *j, int code);
/* The jobs a drain took off the queue (*list, linked through link.next,
 * each with the queue's reference) end in two passes: settle ends every
 * one still pending (cancelled, or failed with code, a break's), its
 * done callbacks held on it, and leaves those in *list, the others (one
 * a waiter started inline, or ended first) in *rest; callbacks then runs
 * the held ones, job after job, and drops every queue's reference. */
void fut__tp_drained_settle(struct job **list, int code, struct job **rest);
void fut__tp_drained_callbacks(struct job *held, struct job *rest);
/* Drops a reference of the pool; the last frees it. */
void fut__tp_pool_unref(struct tpool *p);
/* The handle is freed and the queue closed: adds every job ever pushed
 * to jobs_left, and drops the job blocks' reference if none is left. */
void fut__tp_jobs_settle(struct tpool *p);

/* idle.c */
/* Makes sure enough idle workers look at the queue (wakes or starts). */
void fut__tp_wakep(struct tpool *p);
/* n looker credits of starts that failed go back; sleepers are woken
 * for what is queued. */
void fut__tp_starts_failed(struct tpool *p, uint32_t n);
/* A looker stops looking; wakes or starts lookers for what is queued. */
void fut__tp_stop_looking(struct tpool *p);
/* A worker thread's body (arg: its struct worker). */
void *fut__tp_worker_main(void *arg);
/* Wakes every idle worker (shutdown, a break, a worker that exits). */
void fut__tp_wake_all(struct tpool *p);
/* Gives a slot back / takes one, sleeping until one is free. */
void fut__tp_slot_put(struct tpool *p);
void fut__tp_slot_get(struct tpool *p);

/* start.c */
/* Starts one worker, counted a looker by the caller: p->ctl held across
 * pthread_create (the pool's first thread, _locked) or only around it. */
int fut__tp_spawn_locked(struct tpool *p);
int fut__tp_spawn(struct tpool *p);
/* reserve_locked refused a start only for the places of starts not over
 * (pthread_create under way), which may yet fail: from fut__tp_spawn and
 * fut__tp_start_looker, never returned out of the pool. */
#define FUT__TP_BESIDE_A_START (-1)
/* A nested wait's looker: FUT_OK (one comes, or enough run), FUT_EAGAIN
 * (none can be added) or FUT__TP_BESIDE_A_START (look again). */
int fut__tp_start_looker(struct tpool *p);

/* pool.c */
/* Drains the queue and ends its jobs (fut__tp_drained_settle's `code`),
 * counted in ndraining until every one is done: a CANCEL_PENDING
 * shutdown waits for that; interrupt: what runs is interrupted before
 * the first job ends. */
void fut__tp_drain_end(struct tpool *p, int code, bool interrupt);

/* stack.c */
/* Test hook: the thread start after the next `after` ones waits ms,
 * then fails (EAGAIN), as a pthread_create refused slowly. */
void fut__tp_test_fail_start(unsigned after, long ms);
/* pthread_create on a kept stack, or a new one (glibc's when none can be
 * made); *st records it.  cpus: where the thread starts (NULL: where its
 * starter may run); mask: its signal mask.  pthread_create's code. */
int fut__tp_thread_start(pthread_t *th, void *(*fn)(void *), void *arg,
			 struct fut__tp_stack *st, const cpu_set_t *cpus,
			 const sigset_t *mask);
/* After the thread was joined: its stack is kept for the next. */
void fut__tp_thread_joined(struct fut__tp_stack *st);
/* Instead of pthread_detach (a pool freed from its own task): the thread
 * is joined once it has exited, by a later start, and its stack kept. */
void fut__tp_thread_abandon(pthread_t th, struct fut__tp_stack *st);

/* run.c */
/* A job a worker took off the queue (fut__tp_queue_take): `rc` its
 * start's, `last` as the take's, `gen` the pool's interrupt_gen read
 * in the take, just before the start (run.c, run_started). */
struct tp_taken {
	struct job *job;
	int rc;
	bool last;
	uint32_t gen;
};

/* Takes the oldest job into *t; false if the queue had none. */
bool fut__tp_take(struct tpool *p, struct tp_taken *t);
/* Runs t's job, then the queue's next tasks in the same slot; returns a
 * looker without a slot. */
void fut__tp_run_jobs(struct worker *w, struct tp_taken *t);
/* The nested-wait hooks of a worker (ctx: the struct worker). */
int fut__tp_hook_block(void *ctx, struct fut__park *park);
void fut__tp_hook_unblock(void *ctx);
void fut__tp_hook_callbacks(void *ctx);
/* The worker of p that the calling thread is, or NULL. */
struct worker *fut__tp_self_worker(struct tpool *p);
/* A looker that is about to run done callbacks without a slot (they may
 * take long or wait): it stops counting as a looker (it counts in
 * naside), and the tasks queued meanwhile get another; fut__tp_step_back
 * makes it a looker again. */
void fut__tp_step_aside(struct worker *w);
void fut__tp_step_back(struct worker *w);
/* fut__tp_job_ops.assist: runs f's task inline if this worker waits for
 * it and it has not started. */
bool fut__tp_job_assist(fut_future *f);
/* fut__tp_job_ops.runs_here: whether this worker runs f's task, perhaps
 * below a nested wait. */
bool fut__tp_job_runs_here(fut_future *f);

/* FUT__SLAB_LARGE holds a job and an inline input with its length. */
#define FUT__TP_INLINE_BYTES                                                   \
	(FUT__SLAB_LARGE - FUT__SLAB_SMALL - offsetof(struct job_input, bytes))

/* Test hooks: submitters of thread pool ex now blocked on a full queue
 * (max_queue), and the worker threads it has started. */
size_t fut__tp_blocked_submitters(fut_executor *ex);
size_t fut__tp_threads(fut_executor *ex);
/* Test hook: tasks queued in thread pool ex, not yet taken. */
size_t fut__tp_queued(fut_executor *ex);

#endif /* FUT_THREAD_POOL_POOL_H */
