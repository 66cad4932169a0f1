/*
 * thread_pool.c: the thread-pool executor (fut_thread_pool_new).
 *
 * Owns: struct tpool (options, the queue, the workers, the lifecycle),
 * struct worker (a thread and the stack of tasks it runs), struct job (a
 * task and its future in one recycled block from tp_slab.c), the slots,
 * the idle workers' sleep and wake-up, and the nested-wait hooks.
 * Threads: submitters (any thread), the workers.  A thread that is not a
 * worker of the pool never runs its tasks.
 * Locks: the queue's own (tp_queue.c); w->lock guards the walk of a
 * worker's running stack; p->ctl (a pthread mutex, so that a waiter may
 * free the pool right after it wakes) guards nlive, the workers' joined
 * marks and starting threads.  Order: ctl -> the queue's locks; w->lock
 * alone.  No lock is held while a task, a done callback or an initializer
 * runs.
 *
 * The scheduling contract (docs/design-thread-pool.md has the long form):
 * - Slots.  A worker runs a task only while it holds one of max_workers
 *   slots (nbusy), so at most max_workers tasks run at once.  A worker
 *   that waits, untimed, on a future gives its slot up for the wait and
 *   takes one back after (waiting, if none is free, for a worker to end
 *   its task): the hand-off of Go's scheduler.  A timed wait keeps it.
 * - Work conservation.  Whenever a task is queued and a slot is free, an
 *   idle worker looks at the queue (nspinning > 0), or one is on its way:
 *   a submit that finds none wakes a sleeper or starts a thread, and a
 *   worker that stops looking because it found a task does the same if
 *   more are queued, so a burst starts the workers one after another,
 *   each thread started by the one before (off the submitter's path).
 * - A worker that waits on a task of its own pool that has not started
 *   runs that very task inline (at most FUT__TP_INLINE_DEPTH deep); past
 *   that it hands its slot off, and the pool adds threads beyond
 *   max_workers (at most FUT__TP_EXTRA_THREADS) so the queue keeps moving.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "thread_pool/pool.h"

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

static struct job *next_job(const struct job *j)
{
	struct tp_link *l =
		atomic_load_explicit(&j->link.next, memory_order_relaxed);
	return l != NULL ? fut__container_of(l, struct job, link) : NULL;
}

static void set_next_job(struct job *j, struct job *next)
{
	atomic_store_explicit(&j->link.next, next != NULL ? &next->link : NULL,
			      memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* The pool's memory                                                   */

static void pool_free(struct tpool *p)
{
	for (size_t i = 0; i < p->max_threads; i++)
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
	struct job *j = fut__slab_get(fut__slab_class_for(
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
			fut__slab_put(j);
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
	set_next_job(j, NULL);
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

/* Runs j's task in t, on the stack of the thread that runs it, then frees
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
	fut__slab_put(j);
}

static void job_destroy(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct tpool *p = job_pool(j);
	fut__slab_put(j);
	pool_unref(p);
}

/* Ends every drained job: cancelled, or failed with `code`. */
static void end_drained(struct job *list, int code)
{
	while (list != NULL) {
		struct job *j = list;
		list = next_job(j);
		/* Claimed from PENDING only: a task a worker started inline
		 * is its own. */
		if (code == FUT_ECANCELLED) {
			if (fut_cancel(&j->fut))
				job_forget(j);
		} else {
			int rc = fut__future_start(&j->fut);
			if (rc == FUT_OK) {
				job_free_input(j);
				(void)fut__future_fail(&j->fut, code, 0, NULL);
			} else if (rc == FUT_ECANCELLED) {
				job_forget(j);
			}
		}
		fut_release(&j->fut);
	}
}

/* Wakes every idle worker (shutdown, a break, a worker that exits). */
static void wake_all(struct tpool *p)
{
	atomic_fetch_add(&p->wake, 1);
	fut__futex_wake(&p->wake, INT32_MAX);
}

/* An initializer failed: the pool is broken for pending and new work. */
static void break_pool(struct tpool *p)
{
	atomic_store(&p->broken, true);
	fut__tp_queue_close(&p->q, FUT_EBROKEN);
	end_drained(fut__tp_queue_drain(&p->q), FUT_EBROKEN);
	wake_all(p);
	fut__tp_queue_wake_room(&p->q);
}

/* ------------------------------------------------------------------ */
/* Slots: at most max_workers threads run tasks at once                */

static bool slot_try(struct tpool *p)
{
	uint32_t b = atomic_load_explicit(&p->nbusy, memory_order_seq_cst);
	while (b < p->max_workers)
		if (atomic_compare_exchange_weak_explicit(&p->nbusy, &b, b + 1,
							  memory_order_seq_cst,
							  memory_order_seq_cst))
			return true;
	return false;
}

/*
 * Gives a slot back, to a waiter that wants its own back first.  Pairs
 * with slot_get: it counts itself in nwant, then tries; we freed the slot,
 * then read nwant: either it sees the slot free or we see it waiting.
 */
static void slot_put(struct tpool *p)
{
	atomic_fetch_sub_explicit(&p->nbusy, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&p->nwant, memory_order_seq_cst) > 0) {
		atomic_fetch_add(&p->slotword, 1);
		fut__futex_wake(&p->slotword, 1);
	}
}

/* A worker whose wait is over takes a slot back, sleeping until one is
 * free: it never runs beside max_workers others. */
static void slot_get(struct tpool *p)
{
	if (slot_try(p))
		return;
	atomic_fetch_add_explicit(&p->nwant, 1, memory_order_seq_cst);
	for (;;) {
		uint32_t v = atomic_load_explicit(&p->slotword,
						  memory_order_seq_cst);
		if (slot_try(p))
			break;
		fut__futex_wait(&p->slotword, v, -1);
	}
	atomic_fetch_sub_explicit(&p->nwant, 1, memory_order_seq_cst);
}

/* An idle worker may start a task now: one is queued and a slot free (a
 * waiter that wants its slot back comes first). */
static bool work_for_idle(struct tpool *p)
{
	return fut__tp_queue_count(&p->q) > 0 &&
	       atomic_load_explicit(&p->nwant, memory_order_seq_cst) == 0 &&
	       atomic_load_explicit(&p->nbusy, memory_order_seq_cst) <
		       p->max_workers;
}

/* ------------------------------------------------------------------ */
/* Idle workers: who looks at the queue, who sleeps, who is woken      */

static void *worker_main(void *arg);

static void name_thread(struct worker *w)
{
	char name[32]; /* prefix (15) + '-' + number fit; Linux keeps 15 */
	snprintf(name, sizeof(name), "%s-%u", w->pool->prefix, w->index + 1);
	name[15] = '\0';
	pthread_setname_np(pthread_self(), name);
}

/* Starts one worker, which starts as a looker (the caller counted it in
 * nspinning).  Caller holds p->ctl. */
static int spawn_locked(struct tpool *p)
{
	uint32_t n = atomic_load_explicit(&p->nthreads, memory_order_relaxed);
	if (n >= p->max_threads ||
	    n - atomic_load(&p->nwaiting) >= p->max_workers)
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
	atomic_fetch_add(&p->refs, 1);
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		atomic_fetch_sub(&p->refs, 1);
		return FUT_EAGAIN;
	}
	if (p->detached) { /* freed from its own thread: nobody joins */
		pthread_detach(w->thread);
		w->joined = true;
	}
	p->nlive++;
	atomic_store_explicit(&p->nthreads, n + 1, memory_order_release);
	return FUT_OK;
}

static int spawn(struct tpool *p)
{
	pthread_mutex_lock(&p->ctl);
	int rc = atomic_load(&p->broken) ? FUT_EBROKEN : spawn_locked(p);
	pthread_mutex_unlock(&p->ctl);
	return rc;
}

/*
 * Makes sure enough idle workers look at the queue: one per queued task
 * that a free slot could start, less those already looking.  It claims
 * that many looker credits in nspinning with one CAS (so two callers
 * never both wake for the same tasks), wakes that many sleepers with one
 * futex call (each takes a token: it is then a looker, counted by us),
 * and starts threads for the rest, at most two per call: each new thread
 * does the same once it finds a task, so a burst of N starts its threads
 * as a binary tree, log2(N) steps deep, none of them in the submitter.
 * Pairs with idle_sleep's last look: it stops looking, then reads the
 * queue; a submitter pushed, then reads nspinning with a read-modify-
 * write: one of the two sees the other.
 */
#define SPAWN_PER_CALL 2u

static void wakep(struct tpool *p)
{
	uint32_t s = atomic_load_explicit(&p->nspinning, memory_order_seq_cst);
	uint32_t k;
	for (;;) {
		uint32_t busy =
			atomic_load_explicit(&p->nbusy, memory_order_seq_cst);
		if (busy >= p->max_workers)
			return;
		uint64_t want = fut__tp_queue_count(&p->q);
		if (want > p->max_workers - busy)
			want = p->max_workers - busy;
		if (want <= s)
			return;
		k = (uint32_t)(want - s);
		if (atomic_compare_exchange_weak_explicit(
			    &p->nspinning, &s, s + k, memory_order_seq_cst,
			    memory_order_seq_cst))
			break;
	}
	/* Claims sleepers (nsleeping counts those not yet claimed), then
	 * hands them as many tokens. */
	uint32_t sleepers =
		atomic_load_explicit(&p->nsleeping, memory_order_seq_cst);
	uint32_t woken;
	do {
		woken = k < sleepers ? k : sleepers;
	} while (woken > 0 &&
		 !atomic_compare_exchange_weak_explicit(
			 &p->nsleeping, &sleepers, sleepers - woken,
			 memory_order_seq_cst, memory_order_seq_cst));
	if (woken > 0) {
		atomic_fetch_add(&p->tokens, woken);
		atomic_fetch_add(&p->wake, 1);
		fut__futex_wake(&p->wake, (int)woken);
		k -= woken;
	}
	/* The credits no thread will come for go first: a thread started
	 * below counts on nspinning naming exactly the lookers there are or
	 * that are on their way. */
	uint32_t start = k < SPAWN_PER_CALL ? k : SPAWN_PER_CALL;
	if (k > start)
		atomic_fetch_sub(&p->nspinning, k - start);
	for (; start > 0; start--)
		if (spawn(p) != FUT_OK)
			break;
	if (start > 0) /* could not start them */
		atomic_fetch_sub(&p->nspinning, start);
}

/* A looker found a task: if more are queued than lookers, others come
 * (Go's resetspinning, for as many as there are tasks to start). */
static void stop_looking(struct tpool *p)
{
	atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
	if (fut__tp_queue_count(&p->q) > 0)
		wakep(p);
}

static bool take_token(struct tpool *p)
{
	uint32_t t = atomic_load(&p->tokens);
	while (t > 0)
		if (atomic_compare_exchange_weak(&p->tokens, &t, t - 1))
			return true;
	return false;
}

/* A sleeper leaves: with a token (a waker claimed a sleeper and counted
 * it a looker), or else it unclaims itself.  If every sleeper is claimed
 * and no token is there yet, one is on its way: tokens are handed out
 * right after the claim, and any sleeper may take any of them. */
static bool leave_sleep(struct tpool *p)
{
	for (;;) {
		if (take_token(p))
			return true;
		uint32_t n = atomic_load_explicit(&p->nsleeping,
						  memory_order_seq_cst);
		if (n > 0 &&
		    atomic_compare_exchange_weak_explicit(
			    &p->nsleeping, &n, n - 1, memory_order_seq_cst,
			    memory_order_seq_cst))
			return false;
		if (n == 0)
			fut__cpu_relax();
	}
}

static bool should_exit(struct tpool *p)
{
	return atomic_load(&p->broken) ||
	       (atomic_load(&p->shutdown) && fut__tp_queue_count(&p->q) == 0);
}

/* A slot and the oldest task, or NULL; *last as fut__tp_queue_pop's. */
static struct job *take(struct worker *w, bool *last)
{
	struct tpool *p = w->pool;
	if (!work_for_idle(p) || !slot_try(p))
		return NULL;
	struct job *j = fut__tp_queue_pop(&p->q, last);
	if (j == NULL) {
		slot_put(p);
		return NULL;
	}
	w->has_slot = true;
	return j;
}

/*
 * Work has just appeared: while a submitter keeps adding to it, a spinning
 * looker lets a batch gather (up to GATHER jobs, or until the count stops
 * growing for 16 pauses, about a microsecond) before it takes the
 * first.  A worker that takes each job the moment it is pushed runs at the
 * queue's tail, where the submitter writes: the two trade the tail's cache
 * lines (and plock, to put the stub back) once per job, which costs more
 * than the jobs of a stream of tiny tasks.  A job pushed alone waits those
 * pauses more.
 */
#define GATHER 32u

static void gather(struct tpool *p)
{
	uint64_t seen = fut__tp_queue_count(&p->q);
	int still = 0;
	while (seen < GATHER && still < 8) {
		fut__cpu_relax();
		fut__cpu_relax();
		uint64_t now = fut__tp_queue_count(&p->q);
		if (now == seen) {
			still++;
		} else {
			seen = now;
			still = 0;
		}
	}
}

/* A looker looks for a task: a bounded spin when `spin`, else once.
 * Returns it with a slot held, or NULL. */
static struct job *look(struct worker *w, bool spin, bool *last)
{
	struct tpool *p = w->pool;
	int64_t until = spin ? fut__now_ns() + FUT__SPIN_NS : 0;
	for (;;) {
		for (int i = 0; i < 16; i++) {
			if (spin && fut__tp_queue_count(&p->q) > 0)
				gather(p);
			struct job *j = take(w, last);
			if (j != NULL)
				return j;
			if (!spin || should_exit(p))
				return NULL;
			/* A few pauses between looks: each look reads the
			 * line the submitter writes. */
			for (int k = 0; k < 4; k++)
				fut__cpu_relax();
		}
		/* Time a looking worker would waste: a submitter's next slab
		 * gets its pages here rather than in the submitter. */
		(void)fut__slab_provision();
		if (fut__now_ns() >= until)
			return NULL;
	}
}

/* A looker that found nothing sleeps until it is woken: it returns a
 * looker again (with a token, counted by its waker; else it counts
 * itself). */
static void idle_sleep(struct worker *w)
{
	struct tpool *p = w->pool;
	atomic_fetch_add_explicit(&p->nsleeping, 1, memory_order_seq_cst);
	atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
	uint32_t v = atomic_load_explicit(&p->wake, memory_order_seq_cst);
	if (atomic_load(&p->tokens) == 0 && !work_for_idle(p) &&
	    !should_exit(p))
		fut__futex_wait(&p->wake, v, -1);
	/* A looker again before it stops counting as a sleeper: a
	 * submitter that reads both in between must not find neither. */
	atomic_fetch_add_explicit(&p->nspinning, 1, memory_order_seq_cst);
	if (leave_sleep(p)) /* its waker counted it already */
		atomic_fetch_sub_explicit(&p->nspinning, 1,
					  memory_order_seq_cst);
}

/* ------------------------------------------------------------------ */
/* Running tasks                                                       */

/*
 * Runs j, which this thread claimed, on its running stack.  `last`: the
 * last task the queue held when a worker took it (not one run inline):
 * the worker gives its slot up and counts itself a looker before it completes
 * the future, so that a caller woken by the result who submits again
 * finds it looking (sequential submit + wait keeps one thread).  Not when
 * the future has waiters listed (done callbacks run here, and may take a
 * while).  Returns true if it did.
 */
static bool run_started(struct worker *w, struct job *j, bool last)
{
	struct tpool *p = w->pool;
	struct run_frame fr = {
		.job = j,
		.outer =
			atomic_load_explicit(&w->running, memory_order_relaxed),
	};
	atomic_store_explicit(&w->running, &fr, memory_order_release);
	fut_task t;
	job_run(&t, j);
	/* Off the stack before the job can be recycled.  A shutdown that
	 * raises `interrupting` and then walks the stack under w->lock
	 * either sees the frame gone (we stored first) or we see it
	 * interrupting and wait out its walk. */
	atomic_store_explicit(&w->running, fr.outer, memory_order_seq_cst);
	if (atomic_load_explicit(&p->interrupting, memory_order_seq_cst) != 0) {
		fut__lock_acquire(&w->lock);
		fut__lock_release(&w->lock);
	}
	bool looking = last && (atomic_load_explicit(&j->fut.state,
						     memory_order_relaxed) &
				FUT__S_LISTED) == 0;
	if (looking) {
		atomic_fetch_add_explicit(&p->nspinning, 1,
					  memory_order_seq_cst);
		w->has_slot = false;
		slot_put(p);
	}
	fut__task_finish(&t, &j->fut);
	return looking;
}

/* Runs (or drops, if cancelled or already run inline) a job taken off the
 * queue, then drops the queue's reference.  True if the worker is now a
 * looker without a slot (run_started). */
static bool run_job(struct worker *w, struct job *j, bool last)
{
	bool looking = false;
	int rc = fut__future_start(&j->fut);
	if (rc == FUT_ECANCELLED) /* never to run: it is ours to forget */
		job_forget(j);
	else if (rc == FUT_OK)
		looking = run_started(w, j, last);
	fut_release(&j->fut);
	return looking;
}

/* Runs j and then the queue's next tasks in the same slot, until the
 * queue is empty or a waiter wants a slot back; then gives it up and
 * looks again. */
static void run_jobs(struct worker *w, struct job *j, bool last)
{
	struct tpool *p = w->pool;
	while (j != NULL) {
		if (run_job(w, j, last))
			return;
		if (atomic_load_explicit(&p->nwant, memory_order_relaxed) > 0 ||
		    atomic_load_explicit(&p->broken, memory_order_relaxed))
			break;
		j = fut__tp_queue_pop(&p->q, &last);
	}
	/* A looker first, then a free slot: never a free slot that a
	 * submitter sees without a looker for it (it would start a thread). */
	atomic_fetch_add_explicit(&p->nspinning, 1, memory_order_seq_cst);
	w->has_slot = false;
	slot_put(p);
}

/* Inline: a worker that waits, untimed, for a task of its own pool that
 * has not started runs it itself, in its own slot. */
static int hook_block(void *ctx);

/* The worker of p that the calling thread is, or NULL. */
static struct worker *self_worker(struct tpool *p)
{
	const struct fut__wait_hooks *h = fut__wait_hooks_get();
	if (h == NULL || h->block != hook_block)
		return NULL;
	struct worker *w = h->ctx;
	return w->pool == p ? w : NULL;
}

static bool job_assist(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct tpool *p = job_pool(j); /* alive: the block holds a reference */
	struct worker *w = self_worker(p);
	if (w == NULL || !w->has_slot || w->depth >= FUT__TP_INLINE_DEPTH ||
	    fut__future_state(f) != FUT__S_PENDING ||
	    fut__future_start(f) != FUT_OK)
		return false;
	/* The job stays queued: the worker that pops it finds it started
	 * and drops it. */
	w->depth++;
	(void)run_started(w, j, false);
	w->depth--;
	return true;
}

/* ------------------------------------------------------------------ */
/* Nested waits: the slot hand-off                                     */

static int hook_block(void *ctx)
{
	struct worker *w = ctx;
	struct tpool *p = w->pool;
	if (!w->has_slot) /* the initializer waits: it holds none */
		return FUT_OK;
	w->has_slot = false;
	w->handed = true;
	atomic_fetch_add_explicit(&p->nwaiting, 1, memory_order_seq_cst);
	slot_put(p);
	if (fut__tp_queue_count(&p->q) == 0)
		return FUT_OK;
	wakep(p);
	/* Every thread waits, none can be added, and tasks are queued: a
	 * wait that depends on them would never end. */
	if (atomic_load(&p->nwaiting) >= atomic_load(&p->nthreads) &&
	    atomic_load(&p->nspinning) == 0 && fut__tp_queue_count(&p->q) > 0)
		return FUT_EAGAIN;
	return FUT_OK;
}

static void hook_unblock(void *ctx)
{
	struct worker *w = ctx;
	struct tpool *p = w->pool;
	if (!w->handed)
		return;
	w->handed = false;
	slot_get(p);
	w->has_slot = true;
	atomic_fetch_sub_explicit(&p->nwaiting, 1, memory_order_seq_cst);
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct tpool *p = w->pool;
	name_thread(w);
	w->hooks = (struct fut__wait_hooks){ .block = hook_block,
					     .unblock = hook_unblock,
					     .ctx = w };
	fut__current_executor_set(&p->ex);
	fut__wait_hooks_set(&w->hooks);
	if (p->initializer != NULL && p->initializer(p->initarg) != 0)
		break_pool(p);
	uint32_t ncpus = (uint32_t)fut__ncpus();
	/* A looker here: counted in nspinning by whoever started us. */
	for (;;) {
		/* At most ncpus - 1 spin (one cpu is left to the thread that
		 * submits); the others look once and sleep. */
		bool spin = ncpus > 1 &&
			    atomic_load_explicit(&p->nspinning,
						 memory_order_relaxed) < ncpus;
		bool last = false;
		struct job *j = look(w, spin, &last);
		if (j != NULL) {
			stop_looking(p);
			run_jobs(w, j, last); /* returns a looker */
			continue;
		}
		if (should_exit(p))
			break;
		idle_sleep(w);
	}
	atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
	/* Others asleep re-check: the queue they waited on is done. */
	wake_all(p);
	fut__wait_hooks_set(NULL);
	fut__current_executor_set(NULL);
	pthread_mutex_lock(&p->ctl);
	p->nlive--;
	pthread_cond_broadcast(&p->ctl_cv);
	pthread_mutex_unlock(&p->ctl);
	pool_unref(p);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Submit                                                              */

struct admit_wait {
	struct tpool *p;
	struct worker *w; /* the submitter, if a worker of p */
	int rc;		  /* hook_block's */
};

/* Before a submitter sleeps for room: a worker gives its slot up. */
static int admit_stop(void *ctx)
{
	struct admit_wait *a = ctx;
	int rc = pool_state(a->p);
	if (rc != FUT_OK)
		return rc;
	if (a->w != NULL && a->w->has_slot && !a->w->handed)
		a->rc = hook_block(a->w);
	return a->rc;
}

/* Waits for room (max_queue); makes sure one worker exists.  FUT_OK or
 * the code submit returns. */
static int admit(struct tpool *p, size_t n)
{
	int rc = pool_state(p);
	if (rc != FUT_OK)
		return rc;
	/* Only a bounded queue can make a submitter wait. */
	struct admit_wait a = { .p = p,
				.w = p->q.max != 0 ? self_worker(p) : NULL };
	rc = fut__tp_queue_reserve(&p->q, n, admit_stop, &a);
	if (a.w != NULL && a.w->handed)
		hook_unblock(a.w);
	if (rc != FUT_OK)
		return rc;
	if (atomic_load_explicit(&p->nthreads, memory_order_acquire) == 0) {
		/* The first thread, in the submitter, so that a pool that
		 * cannot start one says so (FUT_EAGAIN). */
		pthread_mutex_lock(&p->ctl);
		rc = pool_state(p);
		if (rc == FUT_OK &&
		    atomic_load_explicit(&p->nthreads, memory_order_relaxed) ==
			    0) {
			atomic_fetch_add(&p->nspinning, 1);
			rc = spawn_locked(p);
			if (rc != FUT_OK)
				atomic_fetch_sub(&p->nspinning, 1);
		}
		pthread_mutex_unlock(&p->ctl);
		if (rc != FUT_OK)
			fut__tp_queue_unreserve(&p->q, n);
	}
	return rc;
}

/*
 * After a push: an idle worker looks at the queue, or one is on its way.
 * Only a push onto an empty queue needs to see to it: while a job is
 * queued, either every slot is busy (a worker that ends its task takes
 * the next) or a looker is there for the first one (and one that stops
 * looking wakes another if more are queued), so a job pushed behind it is
 * covered by the same looker.  This keeps the fence and the read of the
 * workers' counts off the path of a stream of submits.
 */
static void after_push(struct tpool *p, bool was_empty)
{
	if (!was_empty)
		return;
	/* A read-modify-write, not a load: it is ordered after the push as
	 * a fence would be (TSan knows no fences), and it reads the latest
	 * count, which a looker that stops changes with one too. */
	if (atomic_fetch_add_explicit(&p->nspinning, 0, memory_order_seq_cst) ==
	    0)
		wakep(p);
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
	bool was_empty = false;
	rc = j == NULL ? FUT_ENOMEM :
			 fut__tp_queue_push(&p->q, j, j, 1, &was_empty);
	if (rc != FUT_OK) {
		if (j != NULL)
			job_discard(j);
		fut__tp_queue_unreserve(&p->q, 1);
		pool_unref(p);
		return rc;
	}
	*out = &j->fut;
	after_push(p, was_empty);
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
			set_next_job(last, j);
		else
			first = j;
		last = j;
	}
	if (made == n) {
		/* Before the push: once queued, workers own the links. */
		struct job *j = first;
		for (size_t i = 0; i < n; i++, j = next_job(j))
			out[i] = &j->fut;
	}
	bool was_empty = false;
	rc = made < n ? FUT_ENOMEM :
			fut__tp_queue_push(&p->q, first, last, n, &was_empty);
	if (rc != FUT_OK) {
		for (struct job *j = first, *next; made > 0; j = next, made--) {
			next = next_job(j);
			job_discard(j);
		}
		for (size_t i = 0; i < n; i++)
			out[i] = NULL;
		fut__tp_queue_unreserve(&p->q, n);
		atomic_fetch_sub_explicit(&p->refs, n - 1,
					  memory_order_relaxed);
		pool_unref(p);
		return rc;
	}
	after_push(p, was_empty);
	return FUT_OK;
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
		for (struct run_frame *fr = atomic_load(&v->running);
		     fr != NULL; fr = fr->outer)
			(void)fut_interrupt(&fr->job->fut);
		fut__lock_release(&v->lock);
	}
	atomic_fetch_sub_explicit(&p->interrupting, 1, memory_order_seq_cst);
}

/* Joins every worker, those started meanwhile too (a task still running
 * may start one for a nested wait).  Caller holds p->ctl, which a worker
 * that starts another takes: it is dropped around each join. */
static void join_all_locked(struct tpool *p)
{
	for (uint32_t i = 0;
	     i < atomic_load_explicit(&p->nthreads, memory_order_acquire);
	     i++) {
		struct worker *v = p->workers[i];
		if (v != NULL && !v->joined) {
			v->joined = true;
			pthread_t th = v->thread;
			pthread_mutex_unlock(&p->ctl);
			pthread_join(th, NULL);
			pthread_mutex_lock(&p->ctl);
		}
	}
}

static int tp_shutdown(fut_executor *ex, unsigned flags)
{
	struct tpool *p = pool_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	if (wait && fut__current_executor() == ex)
		return FUT_EINVAL;
	fut__tp_queue_close(&p->q, FUT_ESHUTDOWN);
	atomic_store(&p->shutdown, true);
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING)
		end_drained(fut__tp_queue_drain(&p->q), FUT_ECANCELLED);
	if (flags & FUT_SHUTDOWN_INTERRUPT)
		interrupt_running(p);
	wake_all(p);
	fut__tp_queue_wake_room(&p->q);
	if (!wait)
		return FUT_OK;
	pthread_mutex_lock(&p->ctl);
	while (p->nlive > 0)
		pthread_cond_wait(&p->ctl_cv, &p->ctl);
	join_all_locked(p);
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
		p->detached = true; /* threads started from now on too */
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
		join_all_locked(p);
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
	p->max_threads = o.max_workers + FUT__TP_EXTRA_THREADS;
	p->workers = fut__calloc(p->max_threads, sizeof(*p->workers));
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
	p->initializer = o.initializer;
	p->initarg = o.initarg;
	fut__tp_queue_init(&p->q, o.max_queue);
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
	return atomic_load(&pool_of(ex)->q.nroom_waiters);
}

size_t fut__tp_threads(fut_executor *ex)
{
	return atomic_load(&pool_of(ex)->nthreads);
}

size_t fut__tp_queued(fut_executor *ex)
{
	return (size_t)fut__tp_queue_count(&pool_of(ex)->q);
}
