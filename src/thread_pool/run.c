/*
 * thread_pool/run.c: running tasks, and a worker that waits.
 *
 * Owns: a worker's running stack (struct run_frame), running a job and
 * then the queue's next ones in the same slot, the nested-wait hooks (the
 * slot hand-off) and running inline the very task a worker waits for.
 * Threads: workers only: a thread that is not one of the pool's workers
 * never runs its tasks.
 * Locks: w->lock guards the walk of a worker's running stack (an
 * interrupting shutdown) and another's look at its wait (past_bound);
 * taken alone, never while a task runs.
 */
#include "thread_pool/pool.h"

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
static bool run_started(struct worker *w, struct job *j, bool last,
			uint32_t gen)
{
	struct tpool *p = w->pool;
	struct run_frame fr = {
		.job = j,
		.outer =
			atomic_load_explicit(&w->running, memory_order_relaxed),
	};
	atomic_store_explicit(&w->running, &fr, memory_order_release);
	/* An interrupting shutdown begun since the job went RUNNING may
	 * have walked the stack before the frame was on it: one of us sees
	 * the other (the fence pairs with its fut__fence_heavy). */
	fut__fence_light();
	if (FUT__UNLIKELY(atomic_load_explicit(&p->interrupt_gen,
					       memory_order_relaxed) != gen))
		(void)fut_interrupt(&j->fut);
	fut_task t;
	fut__tp_job_run(&t, j);
	/* Off the stack before the job can be recycled.  A shutdown that
	 * raises `interrupting` and then walks the stack under w->lock
	 * either sees the frame gone (we stored first) or we see it
	 * interrupting and wait out its walk. */
	atomic_store_explicit(&w->running, fr.outer, memory_order_seq_cst);
	/* Not in a fork child of the task's: a walk under way as it forked
	 * left w->lock held there, with no thread to release it (found by
	 * review, 2026-12-07: the child never exited). */
	if (atomic_load_explicit(&p->interrupting, memory_order_seq_cst) != 0 &&
	    !fut__executor_orphaned(&p->ex)) {
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
		fut__tp_slot_put(p);
	}
	fut__task_finish(&t, &j->fut);
	if (w->aside) { /* callbacks came, and ran aside */
		/* One that gave its slot up for them (a task taken off the
		 * queue, depth 0) is a looker now, as one that stepped aside
		 * from looking is. */
		looking = looking || w->aside_slot;
		w->aside_slot = false;
		fut__tp_step_back(w);
	}
	return looking;
}

bool fut__tp_take(struct tpool *p, struct tp_taken *t)
{
	t->job = fut__tp_queue_take(&p->q, &t->last, &t->rc, &p->interrupt_gen,
				    &t->gen);
	return t->job != NULL;
}

/* Runs (or drops, if cancelled or already run inline) a job taken off the
 * queue, then drops the queue's reference.  True if the worker is now a
 * looker without a slot (run_started). */
static bool run_job(struct worker *w, const struct tp_taken *t)
{
	bool looking = false;
	struct job *j = t->job;
	if (t->rc == FUT_ECANCELLED) /* never to run: it is ours to forget */
		fut__tp_job_forget(j);
	else if (t->rc == FUT_OK)
		looking = run_started(w, j, t->last, t->gen);
	fut_release(&j->fut);
	return looking;
}

/* Runs the job taken and then the queue's next tasks in the same slot,
 * until the queue is empty or a waiter wants a slot back; then gives it
 * up and looks again. */
void fut__tp_run_jobs(struct worker *w, struct tp_taken *t)
{
	struct tpool *p = w->pool;
	for (;;) {
		if (run_job(w, t))
			return;
		/* The task forked and this is the child, where the thread
		 * that forked is no worker (docs/api.md): the parent's queue
		 * is not ours (worker_main lets the thread end). */
		if (FUT__UNLIKELY(fut__executor_orphaned(&p->ex)))
			return;
		if (atomic_load_explicit(&p->nwant, memory_order_relaxed) > 0 ||
		    atomic_load_explicit(&p->broken, memory_order_relaxed) ||
		    !fut__tp_take(p, t))
			break;
	}
	/* A looker first, then a free slot: never a free slot that a
	 * submitter sees without a looker for it (it would start a thread). */
	atomic_fetch_add_explicit(&p->nspinning, 1, memory_order_seq_cst);
	w->has_slot = false;
	fut__tp_slot_put(p);
}

/* Inline: a worker that waits, untimed, for a task of its own pool that
 * has not started runs it itself, in its own slot. */

/* The worker of p that the calling thread is, or NULL. */
struct worker *fut__tp_self_worker(struct tpool *p)
{
	const struct fut__wait_hooks *h = fut__wait_hooks_get();
	if (h == NULL || h->block != fut__tp_hook_block)
		return NULL;
	struct worker *w = h->ctx;
	return w->pool == p ? w : NULL;
}

bool fut__tp_job_assist(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct tpool *p = job_pool(j); /* alive: the block holds a reference */
	struct worker *w = fut__tp_self_worker(p);
	if (w == NULL || !w->has_slot || w->depth >= FUT__TP_INLINE_DEPTH ||
	    fut__future_state(f) != FUT__S_PENDING)
		return false;
	uint32_t gen =
		atomic_load_explicit(&p->interrupt_gen, memory_order_relaxed);
	/* Not one a shutdown drained: CANCEL_PENDING ends every task that
	 * had not started (it ran here, found by review, 2026-12-07).  The
	 * waiter ends that one itself, as the drain is about to (whichever
	 * comes first; the drain settles every job before it runs a
	 * callback). */
	int rc = fut__tp_queue_start_inline(&p->q, j);
	if (rc == FUT_ECANCELLED || rc == FUT_EBROKEN) {
		/* As the drain that took it ends it: a break's fails its
		 * jobs FUT_EBROKEN (a cancel here said FUT_ECANCELLED), a
		 * shutdown's cancels them, though the pool broke since (the
		 * test of p->broken here failed it FUT_EBROKEN: both found
		 * by review, 2026-12-07).  The drain frees what the job
		 * holds when it started it; otherwise here. */
		if (rc == FUT_ECANCELLED)
			(void)fut_cancel(f);
		else
			(void)fut__tp_job_fail_unstarted(j, FUT_EBROKEN);
		return true;
	}
	if (rc != FUT_OK)
		return false;
	/* The job stays queued: the worker that pops it finds it started
	 * and drops it. */
	w->depth++;
	(void)run_started(w, j, false, gen);
	w->depth--;
	return true;
}

/* Whether this thread runs f's task: on its running stack, which only
 * this thread writes. */
bool fut__tp_job_runs_here(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct worker *w = fut__tp_self_worker(job_pool(j));
	if (w == NULL)
		return false;
	for (const struct run_frame *fr =
		     atomic_load_explicit(&w->running, memory_order_relaxed);
	     fr != NULL; fr = fr->outer)
		if (fr->job == j)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* Nested waits: the slot hand-off                                     */

/* It counts in naside before it stops looking: a thread started then
 * (or by a submit meanwhile) must not be refused at max_workers threads
 * for it. */
void fut__tp_step_aside(struct worker *w)
{
	w->aside = true;
	atomic_fetch_add_explicit(&w->pool->naside, 1, memory_order_seq_cst);
	fut__tp_stop_looking(w->pool);
}

void fut__tp_step_back(struct worker *w)
{
	w->aside = false;
	atomic_fetch_add_explicit(&w->pool->nspinning, 1, memory_order_seq_cst);
	atomic_fetch_sub_explicit(&w->pool->naside, 1, memory_order_seq_cst);
}

/* Whether worker w completes the future of a task it took off the queue
 * (run_started at depth 0): its frame is off the running stack, now
 * empty; a future the task completes as it goes has the task's frame on
 * it.  A task run inline (depth > 0) runs below a task that waits for it
 * in this thread, still running: its callbacks are that task's work, in
 * its slot (review, 2026-12-07, fifteenth session: given up, the slot
 * went to a queued task, and the waiting task slept for a slot until
 * that one ended: with max_workers 1, for good if it waited for the
 * waiting task untimed, until its timeout if timed).  Read only where
 * callbacks run: no cost where a task has none. */
static bool finishing_its_task(const struct worker *w)
{
	return w->depth == 0 &&
	       atomic_load_explicit(&w->running, memory_order_relaxed) == NULL;
}

/*
 * Done callbacks are about to run in worker ctx: it steps aside while
 * they run, no thread of max_workers (naside).  One that counts as a
 * looker with no slot (run_started gave it up before it completed the
 * future, which had no callbacks then) stops looking; one that holds a
 * slot and completes the future of a task it took off the queue gives
 * the slot up, and tasks queued get a looker (run_started makes it a
 * looker again once they returned).  Until the review of 2026-12-07
 * (fifteenth session) a callback added before the task ended kept the
 * slot: with one worker, a task submitted meanwhile waited for a
 * callback that slept, with no task running.  Callbacks a task runs in
 * the middle of its own work (it completed another future, or ran one
 * inline for its wait) run as part of the task, in its slot.  A thread
 * in the initializer is no looker (it counts in ninit): it has nothing
 * to step aside from.
 */
void fut__tp_hook_callbacks(void *ctx)
{
	struct worker *w = ctx;
	if (w->aside || w->initializing)
		return;
	if (!w->has_slot) {
		fut__tp_step_aside(w);
		return;
	}
	if (!finishing_its_task(w))
		return;
	struct tpool *p = w->pool;
	/* Counted aside before the slot is free: a start it allows must
	 * not be refused at max_workers threads for this one. */
	w->aside = true;
	w->aside_slot = true;
	atomic_fetch_add_explicit(&p->naside, 1, memory_order_seq_cst);
	w->has_slot = false;
	fut__tp_slot_put(p);
	/* A task queued while every slot was busy has no looker. */
	if (fut__tp_queue_count(&p->q) > 0)
		fut__tp_wakep(p);
}

/*
 * Whether every thread of the pool counts as waiting; *threads: the
 * threads whose start is over (they exist).  A start that has taken its
 * place (nthreads) runs pthread_create with p->ctl dropped, and may fail:
 * counted as a thread, a wait beside it saw "not every thread waits" and
 * slept, and when the start failed nobody tested the bound again (found
 * by review, 2026-12-07).
 */
static bool every_thread_waits(struct tpool *p, uint32_t *threads)
{
	uint32_t waiting = atomic_load(&p->nwaiting);
	*threads = atomic_load(&p->nstarted);
	return waiting >= *threads;
}

/* Whether a start is under way: its looker counted (a submit's, a
 * waiter's), or its place taken and its start not over.  Read after the
 * threads, a start under way then is seen here, unless it failed since. */
static bool a_start_is_under_way(struct tpool *p, uint32_t threads)
{
	return atomic_load(&p->nspinning) != 0 || pool_threads(p) != threads;
}

/*
 * Whether a thread counted waiting comes back: its wait is over (what it
 * waits on is done) though its hook_unblock has not run yet (it is not
 * woken or not scheduled yet, or it is in past_bound too).  Its park is
 * looked at under its lock, which hook_unblock takes before the park's
 * frame can go.
 */
static bool a_wait_is_over(struct tpool *p)
{
	uint32_t n = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < n; i++) {
		struct worker *v = p->workers[i];
		if (v == NULL ||
		    atomic_load_explicit(&v->park, memory_order_relaxed) ==
			    NULL)
			continue;
		fut__lock_acquire(&v->lock);
		struct fut__park *park =
			atomic_load_explicit(&v->park, memory_order_acquire);
		bool over = park != NULL && park->ready(park);
		fut__lock_release(&v->lock);
		if (over)
			return true;
	}
	return false;
}

/*
 * A wait that gave its place up: FUT_EAGAIN if every thread waits, none
 * can be added, and tasks are queued (a wait that depends on them would
 * never end).  A thread whose wait is over waits no more, though it
 * counts in nwaiting until it is back (a_wait_is_over): it will run
 * them.  Jobs that ran inline (or were cancelled) count in the queue
 * until popped: they are dropped first, they need no thread.
 *
 * A start under way (a looker counted, its place taken or not yet) is
 * waited for: its thread comes and looks, or it fails and the test goes
 * on.  A start that fails is looked at again: another's start may have
 * taken the last place between the look and the try (a submit's, at the
 * bound), and what that thread did since counts: it may be looking, or
 * it ran a job inline and waits too, the job still queued: its own test
 * saw this wait's start under way and waited for it, or has not come to
 * it yet.  So the rule is applied in full again, until it says no or a
 * start fails with the thread count it looked at: then none could be
 * added.  A start refused only for the place of another start taken
 * since the look (FUT__TP_BESIDE_A_START) is no failure: that start is
 * waited for, as one under way at the look is.
 */
static int past_bound(struct worker *w)
{
	struct tpool *p = w->pool;
	uint32_t tried = UINT32_MAX; /* threads when a start last failed */
	for (;;) {
		uint32_t threads;
		if (!every_thread_waits(p, &threads))
			return FUT_OK;
		/* Every thread waits: a looker counted, or a place taken
		 * by a start not over, is a start under way.  Its thread
		 * comes (a thread that does not wait) or the start fails
		 * and no one may run the queue: see which. */
		if (a_start_is_under_way(p, threads)) {
			sched_yield();
			continue;
		}
		for (struct job *j; (j = fut__tp_queue_pop_stale(&p->q));) {
			/* Not pending: the start says which (cancelled, or
			 * run inline) and changes nothing; only dropped. */
			struct tp_taken t = {
				.job = j,
				.rc = fut__future_start(&j->fut),
			};
			(void)run_job(w, &t);
		}
		if (fut__tp_queue_count(&p->q) == 0)
			return FUT_OK;
		if (threads == tried) {
			if (a_wait_is_over(p))
				return FUT_OK;
			/* None added, none started since, and each still
			 * waits (one that cleared its park had left
			 * nwaiting first): else the rule again. */
			uint32_t now;
			if (every_thread_waits(p, &now) && now == threads &&
			    !a_start_is_under_way(p, now))
				return FUT_EAGAIN;
			continue;
		}
		int rc = fut__tp_start_looker(p);
		if (rc == FUT_OK)
			return FUT_OK;
		/* Refused for another start's place, taken since the look
		 * above: that start may fail, so none may come; wait for
		 * its outcome and look again.  Taken for "enough run" (no
		 * test again) or "none can be added" (FUT_EAGAIN though its
		 * place came free), it left a task queued beside free slots
		 * or a wait ended for nothing. */
		if (rc == FUT__TP_BESIDE_A_START) {
			sched_yield();
			continue;
		}
		tried = threads;
	}
}

int fut__tp_hook_block(void *ctx, struct fut__park *park)
{
	struct worker *w = ctx;
	struct tpool *p = w->pool;
	if (!w->has_slot && !w->aside && !w->initializing)
		return FUT_OK;
	/* Before it counts: one that sees it counted sees its park. */
	atomic_store_explicit(&w->park, park, memory_order_release);
	/* Aside: from naside to nwaiting, never counted twice meanwhile. */
	if (w->aside)
		atomic_fetch_sub_explicit(&p->naside, 1, memory_order_seq_cst);
	atomic_fetch_add_explicit(&p->nwaiting, 1, memory_order_seq_cst);
	if (w->has_slot) {
		w->has_slot = false;
		w->handed = true;
		fut__tp_slot_put(p);
	} else if (w->initializing) {
		/* No slot to give, but another thread may start in its
		 * place and take the task this one was started for. */
		atomic_fetch_sub_explicit(&p->ninit, 1, memory_order_seq_cst);
	}
	if (fut__tp_queue_count(&p->q) == 0)
		return FUT_OK;
	fut__tp_wakep(p);
	return past_bound(w);
}

void fut__tp_hook_unblock(void *ctx)
{
	struct worker *w = ctx;
	struct tpool *p = w->pool;
	if (!w->handed && !w->initializing && !w->aside)
		return; /* hook_block counted nothing */
	/* Its wait is over: it no longer counts as waiting, even while it
	 * sleeps for a slot below (a slot it is sure to get: hook_block's
	 * FUT_EAGAIN must not count it). */
	atomic_fetch_sub_explicit(&p->nwaiting, 1, memory_order_seq_cst);
	/* After, so that a past_bound that finds no park sees the count
	 * fall; under the lock, so that one that looks at the park is done
	 * before the park (on this thread's stack, in the wait) goes. */
	if (atomic_load_explicit(&w->park, memory_order_relaxed) != NULL) {
		fut__lock_acquire(&w->lock);
		atomic_store_explicit(&w->park, NULL, memory_order_relaxed);
		fut__lock_release(&w->lock);
	}
	if (w->handed) {
		w->handed = false;
		fut__tp_slot_get(p);
		w->has_slot = true;
	} else if (w->initializing) {
		atomic_fetch_add_explicit(&p->ninit, 1, memory_order_seq_cst);
	} else if (w->aside) {
		atomic_fetch_add_explicit(&p->naside, 1, memory_order_seq_cst);
	}
}
