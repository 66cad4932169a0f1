/*
 * thread_pool.c: the thread-pool executor (fut_thread_pool_new).
 *
 * Owns: struct tpool (options, the global queue, the workers, the
 * lifecycle), struct worker (a thread, its local queue, the stack of jobs
 * it runs), struct job (a task and its future in one recycled block from
 * tp_slab.c), and the wait hooks installed in workers.
 * Threads: submitters (any thread), the workers, and any thread waiting on
 * one of our futures (assist runs a still-queued task inline there).
 * Locks: p->qlock guards the global queue (qhead, qtail, qlen's writes,
 * closed); w->lock guards a worker's local queue (head, tail, nlocal's
 * writes), its blocked word and the walk of its running stack (written by
 * the worker alone, see run_job); p->ctl (a pthread
 * mutex, so that a waiter may free the pool right after it wakes) guards
 * nlive, the workers' joined marks and spawning.  Order: ctl -> qlock ->
 * w->lock; each lock is taken alone wherever possible.  No lock is held
 * while a task, a done callback or an initializer runs.
 *
 * Design (docs/design-thread-pool.md has the long form):
 * - Submit appends to the global FIFO under qlock: one lock per submit,
 *   one per fut_submit_many batch.  A worker takes the whole global queue
 *   at once into its local queue, so it touches the global lock once per
 *   batch; idle workers steal half of a busy worker's local queue (up to
 *   FUT__TP_BATCH jobs), so a long batch never strands work.
 * - A job holds two future references (the caller's and the queue's) and
 *   one pool reference, so futures stay valid after the pool is freed and
 *   the pool's memory stays until the last future goes.
 * - Claiming a job to run it is fut__future_start(): exactly one of the
 *   worker that pops it and a waiter that assists wins.
 * - Idle workers spin ~FUT__SPIN_NS (more than one cpu only, at most
 *   ncpus - 1 at once), then sleep on p->wake; a submit wakes one sleeper
 *   when none spins and no wake-up is already on its way.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "thread_pool.h"

#define DEFAULT_PREFIX "fut-worker"

static bool job_assist(fut_future *f);
static void job_destroy(fut_future *f);

static const struct fut__future_ops job_ops = {
	.interrupt = NULL, /* the flag fut_interrupt() sets is all we need */
	.assist = job_assist,
	.destroy = job_destroy,
};

static struct tpool *pool_of(fut_executor *ex)
{
	return (struct tpool *)(void *)ex;
}

/* The pool of a job: its future's ops point into the pool. */
static struct tpool *job_pool(const struct job *j)
{
	uintptr_t ops = (uintptr_t)j->fut.ops;
	return (struct tpool *)(ops - offsetof(struct tpool, fops));
}

/* ------------------------------------------------------------------ */
/* The pool's memory                                                   */

static void pool_free(struct tpool *p)
{
	for (size_t i = 0; i < p->max_workers; i++)
		fut__free(p->workers[i]);
	fut__free(p->workers);
	pthread_cond_destroy(&p->ctl_cv);
	pthread_mutex_destroy(&p->ctl);
	fut__free(p);
}

static void pool_unref(struct tpool *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		pool_free(p);
}

/* ------------------------------------------------------------------ */
/* Jobs                                                                */

static struct job *job_new(struct tpool *p, fut_fn fn, void *arg,
			   const void *data, size_t len, bool bytes)
{
	bool inline_input = bytes && len > 0 && len <= FUT__TP_INLINE_BYTES;
	struct job *j = fut__tp_block_get(fut__tp_class_for(
		sizeof(struct job) +
		(inline_input ? sizeof(struct job_input) + len : 0)));
	if (j == NULL)
		return NULL;
	struct job_input *in = NULL;
	if (inline_input) {
		in = (struct job_input *)(void *)j->bytes;
	} else if (bytes && len > 0) {
		/* len <= FUT_MAX_BYTES (checked by fut_submit_bytes). */
		in = fut__malloc(sizeof(*in) + len);
		if (in == NULL) {
			fut__tp_block_put(j);
			return NULL;
		}
	}
	if (in != NULL) {
		in->len = len;
		memcpy(in->bytes, data, len);
	}
	fut__future_init(&j->fut, &p->fops);
	/* The caller's reference and the queue's. */
	atomic_store_explicit(&j->fut.refs, 2, memory_order_relaxed);
	j->fut.job.fn = fn;
	j->fut.job.data = bytes ? in : arg;
	if (bytes)
		atomic_store_explicit(&j->fut.flags, FUT__F_INPUT,
				      memory_order_relaxed);
	j->next = NULL;
	return j;
}

/* True if j came from fut_submit_bytes (its data is a job_input). */
static bool job_has_input(const struct job *j)
{
	return atomic_load_explicit(&j->fut.flags, memory_order_relaxed) &
	       FUT__F_INPUT;
}

/* Frees j's heap copy of its input, if it has one.  Only while the job
 * slots still hold the task (before the future completes), by the thread
 * that ran the task or dropped it unstarted. */
static void job_free_input(struct job *j)
{
	const void *in = j->fut.job.data;
	if (job_has_input(j) && in != NULL && in != (const void *)j->bytes)
		fut__free((void *)(uintptr_t)in);
}

/* A job whose task will never run: its input goes, and its job slots are
 * emptied, so that the future's outcome reads as none (fut_cancel left
 * them alone). */
static void job_forget(struct job *j)
{
	job_free_input(j);
	j->fut.value = NULL; /* also the message */
	j->fut.len = 0;
}

/* Runs j's task in t, on the stack of the thread that runs it (whoever
 * won fut__future_start: t is the task's only while it runs), then frees
 * the input, before fut__task_finish writes the outcome over the slots
 * that name it. */
static void job_run(fut_task *t, struct job *j)
{
	bool bytes = job_has_input(j);
	const void *data = j->fut.job.data;
	const struct job_input *in = bytes ? data : NULL;
	fut__task_init(t, j->fut.job.fn, bytes ? NULL : (void *)(uintptr_t)data,
		       in != NULL ? in->bytes : NULL, in != NULL ? in->len : 0,
		       &j->fut.flags);
	fut__task_run(t);
	job_free_input(j);
}

/* A job that was never queued: back to the cache (the caller adjusts the
 * pool's references). */
static void job_discard(struct job *j)
{
	job_forget(j);
	fut__future_fini(&j->fut);
	fut__tp_block_put(j);
}

static void job_destroy(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct tpool *p = job_pool(j);
	fut__tp_block_put(j);
	pool_unref(p);
}

/* Ends every drained job: cancelled, or failed with `code`. */
static void end_drained(struct job *list, int code)
{
	while (list != NULL) {
		struct job *j = list;
		list = j->next;
		/* Claimed from PENDING only: a task a waiter started is its. */
		if (code == FUT_ECANCELLED) {
			if (fut_cancel(&j->fut))
				job_forget(j);
		} else {
			int rc = fut__future_start(&j->fut);
			if (rc == FUT_OK) {
				job_free_input(j);
				(void)fut__future_complete(&j->fut, code, 0,
							   NULL, 0, false, NULL,
							   0);
			} else if (rc == FUT_ECANCELLED) {
				job_forget(j);
			}
		}
		fut_release(&j->fut);
	}
}

/* An initializer failed: the pool is broken for pending and new work. */
static void break_pool(struct tpool *p)
{
	atomic_store(&p->broken, true);
	end_drained(fut__tp_queue_drain(p), FUT_EBROKEN);
	atomic_fetch_add(&p->wake, 1);
	fut__futex_wake(&p->wake, INT32_MAX);
	atomic_fetch_add(&p->space, 1);
	fut__futex_wake(&p->space, INT32_MAX);
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */

static void wake_blocked(struct tpool *p)
{
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < nt; i++) {
		struct worker *v = p->workers[i];
		if (v == NULL)
			continue;
		fut__lock_acquire(&v->lock);
		if (v->blocked != NULL)
			fut__futex_wake(v->blocked, INT32_MAX);
		fut__lock_release(&v->lock);
	}
}

static void set_idle(struct worker *w, bool idle)
{
	if (w->idle == idle)
		return;
	w->idle = idle;
	if (idle)
		atomic_fetch_add_explicit(&w->pool->nidle, 1,
					  memory_order_seq_cst);
	else
		atomic_fetch_sub_explicit(&w->pool->nidle, 1,
					  memory_order_seq_cst);
}

/* Runs (or drops, if cancelled or run by an assisting waiter) one job,
 * then drops the queue's reference. */
static void run_job(struct worker *w, struct job *j)
{
	struct tpool *p = w->pool;
	int rc = fut__future_start(&j->fut);
	if (rc == FUT_ECANCELLED) /* never to run: it is ours to forget */
		job_forget(j);
	if (rc == FUT_ESTATE) /* a waiter ran it (job_assist) */
		/* Release: whoever reads this count also sees the qlen of
		 * the take that came before it (see after_push). */
		atomic_fetch_sub_explicit(&p->stale, 1, memory_order_release);
	if (rc == FUT_OK) {
		/* Busy only for a job it really runs: dropping one that a
		 * waiter ran keeps it idle, so that waiter never sees the
		 * pool without an idle worker. */
		if (w->depth == 0)
			set_idle(w, false);
		j->next =
			atomic_load_explicit(&w->running, memory_order_relaxed);
		atomic_store_explicit(&w->running, j, memory_order_release);
		fut_task t;
		job_run(&t, j);
		/* Off the stack before the job can be recycled.  A shutdown
		 * that raises `interrupting` and then walks the stack under
		 * w->lock either sees the job gone (we stored first) or we
		 * see it interrupting and wait out its walk. */
		atomic_store_explicit(&w->running, j->next,
				      memory_order_seq_cst);
		if (atomic_load_explicit(&p->interrupting,
					 memory_order_seq_cst) != 0) {
			fut__lock_acquire(&w->lock);
			fut__lock_release(&w->lock);
		}
		/* Idle before the future completes: a caller that waited for
		 * it and submits again finds this worker idle, so sequential
		 * submit + wait never starts a second thread. */
		if (w->depth == 0 &&
		    atomic_load_explicit(&w->nlocal, memory_order_relaxed) ==
			    0 &&
		    atomic_load_explicit(&p->qlen, memory_order_relaxed) == 0)
			set_idle(w, true);
		fut__task_finish(&t, &j->fut);
		/* Work queued while every worker slept in a nested wait. */
		if (atomic_load_explicit(&p->nblocked, memory_order_relaxed) >
			    0 &&
		    fut__tp_queue_visible(p, NULL))
			wake_blocked(p);
	}
	fut_release(&j->fut);
}

static bool hook_help(void *ctx)
{
	struct worker *w = ctx;
	struct job *j = fut__tp_queue_take(w);
	if (j == NULL)
		return false;
	w->depth++;
	run_job(w, j);
	w->depth--;
	return true;
}

static void hook_block(void *ctx, _Atomic uint32_t *word)
{
	struct worker *w = ctx;
	fut__lock_acquire(&w->lock);
	w->blocked = word;
	fut__lock_release(&w->lock);
	atomic_fetch_add_explicit(&w->pool->nblocked, 1, memory_order_seq_cst);
	/* Work pushed between the wait loop's last help() and the count
	 * above was not seen by its submitter as blocked: run it now (the
	 * futex wait that follows returns at once if the awaited word
	 * changed meanwhile).  A task run here may block and unblock in
	 * turn, so the word is set again afterwards. */
	bool helped = false;
	while (hook_help(w))
		helped = true;
	if (helped) {
		fut__lock_acquire(&w->lock);
		w->blocked = word;
		fut__lock_release(&w->lock);
	}
}

static void hook_unblock(void *ctx)
{
	struct worker *w = ctx;
	atomic_fetch_sub_explicit(&w->pool->nblocked, 1, memory_order_seq_cst);
	fut__lock_acquire(&w->lock);
	w->blocked = NULL;
	fut__lock_release(&w->lock);
}

static bool should_exit(struct tpool *p)
{
	if (atomic_load(&p->broken))
		return true;
	return atomic_load(&p->shutdown) &&
	       atomic_load_explicit(&p->qlen, memory_order_seq_cst) == 0;
}

/*
 * Work has just appeared in the global queue: while a submitter keeps
 * adding to it, let a batch gather (up to FUT__TP_BATCH jobs, or until the
 * count stops growing) before taking it.  A worker that takes each job the
 * moment it is pushed makes the submitter and itself trade the queue's
 * cache lines once per job, which costs more than the jobs of a stream of
 * tiny tasks; a job pushed alone waits a few hundred nanoseconds more.
 */
static void gather(struct tpool *p)
{
	size_t seen = atomic_load_explicit(&p->qlen, memory_order_relaxed);
	int still = 0;
	while (seen < FUT__TP_BATCH && still < 16) {
		fut__cpu_relax();
		size_t now =
			atomic_load_explicit(&p->qlen, memory_order_relaxed);
		if (now == seen) {
			still++;
		} else {
			seen = now;
			still = 0;
		}
	}
}

/* Spins a bounded while for work; true if some came. */
static bool idle_spin(struct worker *w)
{
	struct tpool *p = w->pool;
	int64_t until = fut__now_ns() + FUT__SPIN_NS;
	for (;;) {
		for (int i = 0; i < 64; i++) {
			if (atomic_load_explicit(&p->shutdown,
						 memory_order_relaxed))
				return true;
			if (atomic_load_explicit(&p->qlen,
						 memory_order_relaxed) > 0) {
				gather(p);
				return true;
			}
			fut__cpu_relax();
		}
		/* Time a spinning worker would waste: a submitter's next slab
		 * gets its pages here rather than in the submitter. */
		(void)fut__tp_slab_provision();
		if (fut__tp_queue_visible(p, w))
			return true;
		if (fut__now_ns() >= until)
			return false;
	}
}

/* The calling thread's policy, -1 if it cannot be read. */
static int own_policy(void)
{
	int policy = -1;
	struct sched_param sp;
	return pthread_getschedparam(pthread_self(), &policy, &sp) == 0 ?
		       policy :
		       -1;
}

/*
 * Sleeps on p->wake while it reads v.  A worker of normal policy sleeps
 * as SCHED_BATCH and is back to SCHED_OTHER once it runs: the kernel does
 * not let a waking batch thread preempt a running one, so a worker woken
 * for work while every cpu is busy waits for a cpu to free or for the
 * next tick (a few ms at most) rather than preempting the thread that
 * submits; on an idle cpu it runs at once.  Without it, in W1 the
 * submitter was preempted 19-536 times (median 210) by workers woken to
 * steal, and W1 ran 11.8 M tasks/s against 14.6 (medians of 8 runs).
 * Only the idle sleep: a task sleeping in a system call or in a nested
 * wait keeps its policy.  The policy is read before every sleep, so a
 * worker that its creator, its initializer or a task gave another policy
 * (real-time, idle, batch) keeps that one; after a failed change (a
 * sandbox that forbids it) the worker stops trying.
 */
static void idle_sleep(struct worker *w, uint32_t v)
{
	struct tpool *p = w->pool;
	struct sched_param sp = { 0 };
	bool batch = w->batch_sleep && own_policy() == SCHED_OTHER;
	if (batch &&
	    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp) != 0)
		batch = w->batch_sleep = false;
	fut__futex_wait(&p->wake, v, -1);
	/* Unless someone else changed it meanwhile. */
	if (batch && own_policy() == SCHED_BATCH &&
	    pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp) != 0)
		w->batch_sleep = false;
}

/*
 * Spins a bounded while, then sleeps until work or shutdown.  At most
 * ncpus - 1 workers spin at once (one cpu is left to the thread that
 * submits): on two cpus two spinning workers would take the submitter's
 * cpu and slow the very stream of work they wait for.
 */
static void idle_wait(struct worker *w)
{
	struct tpool *p = w->pool;
	uint32_t ncpus = (uint32_t)fut__ncpus();
	if (ncpus > 1) {
		bool came = false;
		if (atomic_fetch_add(&p->nspinning, 1) < ncpus - 1)
			came = idle_spin(w);
		atomic_fetch_sub(&p->nspinning, 1);
		if (came)
			return;
	}
	atomic_fetch_add_explicit(&p->nsleeping, 1, memory_order_seq_cst);
	/* See fut__tp_queue_wake_sleepers: clear, then look. */
	atomic_store(&p->waking, false);
	uint32_t v = atomic_load_explicit(&p->wake, memory_order_seq_cst);
	if (!fut__tp_queue_visible(p, w) && !atomic_load(&p->shutdown) &&
	    !atomic_load(&p->broken)) {
		idle_sleep(w, v);
		atomic_store(&p->waking, false);
	}
	atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_seq_cst);
}

static void name_thread(struct worker *w)
{
	char name[32]; /* prefix (15) + '-' + number fit; Linux keeps 15 */
	snprintf(name, sizeof(name), "%s-%u", w->pool->prefix, w->index + 1);
	name[15] = '\0';
	pthread_setname_np(pthread_self(), name);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct tpool *p = w->pool;
	name_thread(w);
	w->batch_sleep = true;
	fut__current_executor_set(&p->ex);
	fut__wait_hooks_set(&w->hooks);
	if (p->initializer != NULL && p->initializer(p->initarg) != 0)
		break_pool(p);
	while (!atomic_load(&p->broken)) {
		struct job *j = fut__tp_queue_take(w);
		if (j != NULL) {
			run_job(w, j);
			continue;
		}
		set_idle(w, true);
		if (should_exit(p))
			break;
		idle_wait(w);
	}
	if (atomic_load(&p->broken)) /* submits racing the break */
		end_drained(fut__tp_queue_drain(p), FUT_EBROKEN);
	set_idle(w, false);
	fut__wait_hooks_set(NULL);
	fut__current_executor_set(NULL);
	pthread_mutex_lock(&p->ctl);
	p->nlive--;
	pthread_cond_broadcast(&p->ctl_cv);
	pthread_mutex_unlock(&p->ctl);
	pool_unref(p);
	return NULL;
}

/* Starts one worker.  Caller holds p->ctl. */
static int spawn_locked(struct tpool *p)
{
	uint32_t n = atomic_load_explicit(&p->nthreads, memory_order_relaxed);
	if (n >= p->max_workers)
		return FUT_EAGAIN;
	struct worker *w = p->workers[n];
	if (w == NULL) {
		w = fut__calloc(1, sizeof(*w));
		if (w == NULL)
			return FUT_ENOMEM;
		p->workers[n] = w;
	}
	w->pool = p;
	w->index = n;
	w->idle = true; /* it will look at the queue first thing */
	w->hooks = (struct fut__wait_hooks){ .help = hook_help,
					     .block = hook_block,
					     .unblock = hook_unblock,
					     .ctx = w };
	atomic_fetch_add(&p->nidle, 1);
	atomic_fetch_add(&p->refs, 1);
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		atomic_fetch_sub(&p->nidle, 1);
		atomic_fetch_sub(&p->refs, 1);
		return FUT_EAGAIN;
	}
	p->nlive++;
	atomic_store_explicit(&p->nthreads, n + 1, memory_order_release);
	return FUT_OK;
}

/* Starts up to `want` workers (lazily, while none is idle). */
static void spawn_some(struct tpool *p, size_t want)
{
	pthread_mutex_lock(&p->ctl);
	while (want-- > 0 && !atomic_load(&p->shutdown) &&
	       !atomic_load(&p->broken) &&
	       atomic_load(&p->nthreads) < p->max_workers)
		if (spawn_locked(p) != FUT_OK)
			break;
	pthread_mutex_unlock(&p->ctl);
}

/* ------------------------------------------------------------------ */
/* Submit                                                              */

/* The worker of p that the calling thread is, or NULL. */
static struct worker *self_worker(struct tpool *p)
{
	const struct fut__wait_hooks *h = fut__wait_hooks_get();
	if (h == NULL || h->help != hook_help)
		return NULL;
	struct worker *w = h->ctx;
	return w->pool == p ? w : NULL;
}

/* Waits while the queue is full (max_queue); makes sure one worker
 * exists.  FUT_OK or the code submit returns. */
static int admit(struct tpool *p, size_t n)
{
	int rc = pool_state(p);
	if (rc != FUT_OK)
		return rc;
	while (p->max_queue != 0) {
		size_t q = fut__tp_queue_count(p);
		if (q == 0 || q + n <= p->max_queue)
			break;
		struct worker *w = self_worker(p);
		if (w != NULL) {
			/* A worker that blocked here could wait for itself:
			 * it runs queued work instead. */
			if (!hook_help(w))
				break;
			continue;
		}
		atomic_fetch_add_explicit(&p->nspace_waiters, 1,
					  memory_order_seq_cst);
		uint32_t v =
			atomic_load_explicit(&p->space, memory_order_seq_cst);
		q = fut__tp_queue_count(p);
		if (q != 0 && q + n > p->max_queue && pool_state(p) == FUT_OK)
			fut__futex_wait(&p->space, v, -1);
		atomic_fetch_sub_explicit(&p->nspace_waiters, 1,
					  memory_order_seq_cst);
		if ((rc = pool_state(p)) != FUT_OK)
			return rc;
	}
	if (atomic_load_explicit(&p->nthreads, memory_order_acquire) == 0) {
		pthread_mutex_lock(&p->ctl);
		rc = pool_state(p);
		if (rc == FUT_OK &&
		    atomic_load_explicit(&p->nthreads, memory_order_relaxed) ==
			    0)
			rc = spawn_locked(p);
		pthread_mutex_unlock(&p->ctl);
	}
	return rc;
}

/*
 * After a push: start, wake or nudge workers (one wake-up per call).  A
 * new thread starts while the queued jobs outnumber the idle workers (a
 * worker just started counts as idle: it is about to take one), so
 * sequential submit + wait keeps one thread and a burst starts them all.
 */
static void after_push(struct tpool *p, size_t n)
{
	atomic_thread_fence(memory_order_seq_cst);
	uint32_t idle = atomic_load_explicit(&p->nidle, memory_order_relaxed);
	/* stale before qlen: a worker takes a batch (qlen falls) and only
	 * then drops its stale jobs (stale falls), so this order can only
	 * undercount.  The other order overcounted when a worker took and
	 * dropped between the two reads, and sequential submit + wait
	 * started a second thread (1 round in 100 under TSan on a loaded
	 * machine). */
	int64_t stale = atomic_load_explicit(&p->stale, memory_order_acquire);
	int64_t waiting =
		(int64_t)atomic_load_explicit(&p->qlen, memory_order_relaxed) -
		stale;
	if (waiting > (int64_t)idle &&
	    atomic_load_explicit(&p->nthreads, memory_order_relaxed) <
		    p->max_workers)
		spawn_some(p, (size_t)(waiting - (int64_t)idle));
	fut__tp_queue_wake_sleepers(p, n > INT32_MAX ? INT32_MAX : (int)n);
	if (idle == 0 &&
	    atomic_load_explicit(&p->nblocked, memory_order_relaxed) > 0)
		wake_blocked(p);
	/* A break that raced the push: nobody may be left to drain. */
	if (atomic_load(&p->broken))
		end_drained(fut__tp_queue_drain(p), FUT_EBROKEN);
}

static int tp_submit(fut_executor *ex, fut_fn fn, void *arg, const void *data,
		     size_t len, bool bytes, fut_future **out)
{
	struct tpool *p = pool_of(ex);
	int rc = admit(p, 1);
	if (rc != FUT_OK)
		return rc;
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	struct job *j = job_new(p, fn, arg, data, len, bytes);
	if (j == NULL) {
		pool_unref(p);
		return FUT_ENOMEM;
	}
	rc = fut__tp_queue_push(p, j, j, 1);
	if (rc != FUT_OK) {
		job_discard(j);
		pool_unref(p);
		return rc;
	}
	*out = &j->fut;
	after_push(p, 1);
	return FUT_OK;
}

static int tp_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
			  size_t stride, size_t n, fut_future **out)
{
	struct tpool *p = pool_of(ex);
	int rc = admit(p, n);
	if (rc != FUT_OK)
		return rc;
	atomic_fetch_add_explicit(&p->refs, n, memory_order_relaxed);
	struct job *first = NULL, *last = NULL;
	size_t made = 0;
	for (; made < n; made++) {
		const unsigned char *in =
			(const unsigned char *)inputs + made * stride;
		struct job *j =
			job_new(p, fn, NULL, stride ? in : NULL, stride, true);
		if (j == NULL)
			break;
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
	}
	if (made == n) {
		/* Before the push: once queued, workers own the links. */
		struct job *j = first;
		for (size_t i = 0; i < n; i++, j = j->next)
			out[i] = &j->fut;
	}
	rc = made < n ? FUT_ENOMEM : fut__tp_queue_push(p, first, last, n);
	if (rc != FUT_OK) {
		for (struct job *j = first, *next; made > 0; j = next, made--) {
			next = j->next;
			job_discard(j);
		}
		for (size_t i = 0; i < n; i++)
			out[i] = NULL;
		atomic_fetch_sub_explicit(&p->refs, n - 1,
					  memory_order_relaxed);
		pool_unref(p);
		return rc;
	}
	after_push(p, n);
	return FUT_OK;
}

/* ------------------------------------------------------------------ */
/* Assist: a waiter runs a still-queued task inline                    */

static void assist_done(struct tpool *p)
{
	pthread_mutex_lock(&p->ctl);
	if (atomic_fetch_sub(&p->assisting, 1) == 1)
		pthread_cond_broadcast(&p->ctl_cv);
	pthread_mutex_unlock(&p->ctl);
}

static bool job_assist(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct tpool *p = job_pool(j); /* alive: the block holds a reference */
	/* An initializer prepares worker threads for their tasks: a task
	 * may then run only in a worker. */
	if (p->initializer != NULL || fut__future_state(f) != FUT__S_PENDING)
		return false;
	/* An outside waiter runs it only where it costs no cpu a worker
	 * needs: when a worker is idle (the hand-off would cost a wake-up)
	 * or fewer workers are busy than there are cpus.  A worker of this
	 * pool always may: it would only sleep. */
	if (self_worker(p) == NULL &&
	    atomic_load_explicit(&p->nidle, memory_order_relaxed) == 0 &&
	    atomic_load_explicit(&p->nthreads, memory_order_relaxed) >=
		    (uint32_t)fut__ncpus())
		return false;
	/* Counted before the claim, so a shutdown that saw every queued job
	 * popped also sees this run. */
	atomic_fetch_add(&p->assisting, 1);
	if (fut__future_start(f) != FUT_OK) {
		assist_done(p);
		return false;
	}
	fut_executor *prev = fut__current_executor();
	fut__current_executor_set(&p->ex);
	fut_task t;
	job_run(&t, j);
	fut__current_executor_set(prev);
	fut__task_finish(&t, f);
	atomic_fetch_add_explicit(&p->stale, 1, memory_order_relaxed);
	assist_done(p);
	return true;
}

/* ------------------------------------------------------------------ */
/* Shutdown and free                                                   */

static void interrupt_running(struct tpool *p)
{
	atomic_fetch_add_explicit(&p->interrupting, 1, memory_order_seq_cst);
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < nt; i++) {
		struct worker *v = p->workers[i];
		if (v == NULL)
			continue;
		fut__lock_acquire(&v->lock);
		/* Only sets a flag: no user code, no other lock. */
		for (struct job *j = atomic_load(&v->running); j != NULL;
		     j = j->next)
			(void)fut_interrupt(&j->fut);
		fut__lock_release(&v->lock);
	}
	atomic_fetch_sub_explicit(&p->interrupting, 1, memory_order_seq_cst);
}

/* Joins the exited workers.  Caller holds p->ctl. */
static void join_exited_locked(struct tpool *p)
{
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < nt; i++) {
		struct worker *v = p->workers[i];
		if (v != NULL && !v->joined) {
			pthread_join(v->thread, NULL);
			v->joined = true;
		}
	}
}

static int tp_shutdown(fut_executor *ex, unsigned flags)
{
	struct tpool *p = pool_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	if (wait && fut__current_executor() == ex)
		return FUT_EINVAL;
	fut__lock_acquire(&p->qlock);
	p->closed = true;
	atomic_store(&p->shutdown, true);
	fut__lock_release(&p->qlock);
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING)
		end_drained(fut__tp_queue_drain(p), FUT_ECANCELLED);
	if (flags & FUT_SHUTDOWN_INTERRUPT)
		interrupt_running(p);
	atomic_fetch_add(&p->wake, 1);
	fut__futex_wake(&p->wake, INT32_MAX);
	atomic_fetch_add(&p->space, 1);
	fut__futex_wake(&p->space, INT32_MAX);
	if (!wait)
		return FUT_OK;
	pthread_mutex_lock(&p->ctl);
	while (p->nlive > 0 || atomic_load(&p->assisting) > 0)
		pthread_cond_wait(&p->ctl_cv, &p->ctl);
	join_exited_locked(p);
	pthread_mutex_unlock(&p->ctl);
	return FUT_OK;
}

static void tp_destroy(fut_executor *ex)
{
	struct tpool *p = pool_of(ex);
	if (fut__current_executor() == ex) {
		/* One of our own threads frees the pool: it cannot wait for
		 * itself.  Stop taking work, let the workers finish the queue
		 * and exit on their own; the last reference frees. */
		(void)tp_shutdown(ex, FUT_SHUTDOWN_NOWAIT);
		pthread_mutex_lock(&p->ctl);
		uint32_t nt = atomic_load(&p->nthreads);
		for (uint32_t i = 0; i < nt; i++) {
			struct worker *v = p->workers[i];
			if (v != NULL && !v->joined) {
				pthread_detach(v->thread);
				v->joined = true;
			}
		}
		pthread_mutex_unlock(&p->ctl);
	} else {
		pthread_mutex_lock(&p->ctl);
		join_exited_locked(p);
		pthread_mutex_unlock(&p->ctl);
	}
	atomic_store_explicit(&p->ex.magic, 0, memory_order_relaxed);
	pool_unref(p);
}

static const struct fut__executor_ops tp_ops = {
	.submit = tp_submit,
	.submit_many = tp_submit_many,
	.shutdown = tp_shutdown,
	.destroy = tp_destroy,
};

/* ------------------------------------------------------------------ */
/* Creation                                                            */

int fut_thread_pool_new(fut_executor **out, const fut_thread_pool_opts *opts)
{
	if (out == NULL)
		return FUT_EINVAL;
	*out = NULL;
	fut_thread_pool_opts o = { 0 };
	if (opts != NULL)
		o = *opts;
	if (o.max_workers > FUT_MAX_WORKERS)
		return FUT_EINVAL;
	if (o.max_workers == 0) {
		int n = fut__ncpus() + 4;
		o.max_workers = (size_t)(n < 32 ? n : 32);
	}
	struct tpool *p = fut__calloc(1, sizeof(*p));
	if (p == NULL)
		return FUT_ENOMEM;
	p->workers = fut__calloc(o.max_workers, sizeof(*p->workers));
	if (p->workers == NULL)
		goto fail;
	if (pthread_mutex_init(&p->ctl, NULL) != 0)
		goto fail;
	if (pthread_cond_init(&p->ctl_cv, NULL) != 0) {
		pthread_mutex_destroy(&p->ctl);
		goto fail;
	}
	p->ex.ops = &tp_ops;
	p->fops = job_ops;
	atomic_store_explicit(&p->ex.magic, FUT__EXECUTOR_MAGIC,
			      memory_order_relaxed);
	p->max_workers = o.max_workers;
	p->max_queue = o.max_queue;
	p->initializer = o.initializer;
	p->initarg = o.initarg;
	snprintf(p->prefix, sizeof(p->prefix), "%s",
		 o.thread_name_prefix != NULL ? o.thread_name_prefix :
						DEFAULT_PREFIX);
	atomic_init(&p->refs, 1);
	*out = &p->ex;
	return FUT_OK;
fail:
	fut__free(p->workers);
	fut__free(p);
	return FUT_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* Test hooks                                                          */

size_t fut__tp_blocked_submitters(fut_executor *ex)
{
	return atomic_load(&pool_of(ex)->nspace_waiters);
}

size_t fut__tp_threads(fut_executor *ex)
{
	return atomic_load(&pool_of(ex)->nthreads);
}
