/*
 * thread_pool/idle.c: the slots and the idle workers: who looks at the
 * queue, who sleeps, who is woken or started, and the worker's loop.
 *
 * Owns: the slot count (nbusy, nwant, slotword), the lookers and sleepers
 * (nspinning, nsleeping, tokens, wake), and the worker's loop
 * (fut__tp_worker_main).  Starting a thread is start.c's.  Each sleep
 * protocol here has its wake half beside its sleep half.
 * Threads: workers; submitters call fut__tp_wakep.
 * Locks: none of its own but p->ctl, taken alone by a worker that exits
 * (and by one placed, to read the submitter's cpus).  Everything else is
 * atomics, the pairings written at each function.
 */
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "thread_pool/pool.h"

/* Wakes every idle worker (shutdown, a break, a worker that exits). */
void fut__tp_wake_all(struct tpool *p)
{
	atomic_fetch_add(&p->wake, 1);
	fut__futex_wake(&p->wake, INT32_MAX);
}

/* An initializer failed: the pool is broken for pending and new work. */
static void break_pool(struct tpool *p)
{
	atomic_store(&p->broken, true);
	fut__tp_queue_close(&p->q, FUT_EBROKEN);
	/* Counted as a shutdown's drain: a CANCEL_PENDING meanwhile waits
	 * for the jobs it took. */
	fut__tp_drain_end(p, FUT_EBROKEN, false);
	fut__tp_wake_all(p);
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
void fut__tp_slot_put(struct tpool *p)
{
	atomic_fetch_sub_explicit(&p->nbusy, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&p->nwant, memory_order_seq_cst) > 0) {
		atomic_fetch_add(&p->slotword, 1);
		fut__futex_wake(&p->slotword, 1);
	}
}

/* A worker whose wait is over takes a slot back, sleeping until one is
 * free: it never runs beside max_workers others. */
void fut__tp_slot_get(struct tpool *p)
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
	/* Idle workers did not take tasks while we wanted (work_for_idle),
	 * and more slots than ours may have come free meanwhile: a queued
	 * task must not wait with one free. */
	if (fut__tp_queue_count(&p->q) > 0)
		fut__tp_wakep(p);
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

/* "<prefix>-<n>" in the 15 bytes Linux keeps: a long prefix is cut, not
 * the number, so that every worker still has a name of its own. */
static void name_thread(struct worker *w)
{
	char num[16], name[16];
	int k = snprintf(num, sizeof(num), "-%u", w->index + 1);
	size_t n = strnlen(w->pool->prefix, sizeof(name) - 1 - (size_t)k);
	memcpy(name, w->pool->prefix, n);
	memcpy(name + n, num, (size_t)k + 1);
	pthread_setname_np(pthread_self(), name);
}

/*
 * Makes sure enough idle workers look at the queue: one per queued task
 * that a free slot could start, less those already looking.  It claims
 * that many looker credits in nspinning with one CAS (so two callers
 * never both wake for the same tasks), wakes that many sleepers with one
 * futex call (each takes a token: it is then a looker, counted by us),
 * and starts threads for the rest, at most two per call: each new thread
 * does the same once it finds a task, so a burst of N starts its threads
 * as a binary tree, log2(N) steps deep, none of them in the submitter,
 * and the threads that start others clone at once, one on each cpu
 * (spawn holds no lock across pthread_create).
 * Pairs with idle_sleep's last look: it stops looking, then reads the
 * queue; a submitter pushed, then reads nspinning with a read-modify-
 * write: one of the two sees the other.
 */
#define SPAWN_PER_CALL 2u

static void wake_or_start(struct tpool *p, bool may_start)
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
		/* A thread in the initializer will look for one task. */
		uint64_t coming =
			(uint64_t)s +
			(p->initializer != NULL ? atomic_load(&p->ninit) : 0);
		if (want <= coming)
			return;
		k = (uint32_t)(want - coming);
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
	uint32_t start = !may_start	    ? 0 :
			 k < SPAWN_PER_CALL ? k :
					      SPAWN_PER_CALL;
	if (k > start)
		atomic_fetch_sub(&p->nspinning, k - start);
	for (; start > 0; start--)
		if (fut__tp_spawn(p) != FUT_OK)
			break;
	if (start > 0) /* could not start them */
		fut__tp_starts_failed(p, start);
}

void fut__tp_wakep(struct tpool *p)
{
	wake_or_start(p, true);
}

/*
 * Looker credits claimed for starts that failed go back.  A submitter
 * that pushed since they were claimed saw them and woke nobody, and a
 * worker asleep since before its push never saw its task: wakes sleepers
 * for what is queued now (as a looker that stops looking would), and
 * starts none (that just failed).  Without it a task queued at the bound
 * waited beside a sleeping thread while every other one waited.
 */
void fut__tp_starts_failed(struct tpool *p, uint32_t n)
{
	atomic_fetch_sub_explicit(&p->nspinning, n, memory_order_seq_cst);
	if (fut__tp_queue_count(&p->q) > 0 &&
	    atomic_load_explicit(&p->nsleeping, memory_order_seq_cst) > 0)
		wake_or_start(p, false);
}

/* A looker found a task (or steps aside): if more are queued than
 * lookers, others come (Go's resetspinning, for as many as there are
 * tasks to start). */
void fut__tp_stop_looking(struct tpool *p)
{
	atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
	if (fut__tp_queue_count(&p->q) > 0)
		fut__tp_wakep(p);
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

/* A slot and the oldest task into *t; false if none. */
static bool take(struct worker *w, struct tp_taken *t)
{
	struct tpool *p = w->pool;
	if (!work_for_idle(p) || !slot_try(p))
		return false;
	if (!fut__tp_take(p, t)) {
		fut__tp_slot_put(p);
		return false;
	}
	w->has_slot = true;
	return true;
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
 * True if it took one into *t, with a slot held. */
static bool look(struct worker *w, bool spin, struct tp_taken *t)
{
	struct tpool *p = w->pool;
	int64_t until = spin ? fut__now_ns() + FUT__SPIN_NS : 0;
	/* A slab the submitter wants ready first: a stream of submits
	 * keeps its lookers finding work at once, so the provision below,
	 * after 16 looks that found none, came too seldom (W1 made a third
	 * of its slabs in the submitter). */
	(void)fut__slab_provision();
	for (;;) {
		for (int i = 0; i < 16; i++) {
			if (spin && fut__tp_queue_count(&p->q) > 0)
				gather(p);
			if (take(w, t))
				return true;
			if (!spin || should_exit(p))
				return false;
			/* A few pauses between looks: each look reads the
			 * line the submitter writes. */
			for (int k = 0; k < 4; k++)
				fut__cpu_relax();
		}
		/* Time a looking worker would waste: a submitter's next slab
		 * gets its pages here rather than in the submitter. */
		(void)fut__slab_provision();
		if (fut__now_ns() >= until)
			return false;
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
/* Workers                                                             */

void *fut__tp_worker_main(void *arg)
{
	struct worker *w = arg;
	struct tpool *p = w->pool;
	if (w->placed) { /* the submitter's cpus back (start.c, Placement) */
		pthread_mutex_lock(&p->ctl);
		(void)pthread_setaffinity_np(pthread_self(), sizeof(p->cpus),
					     &p->cpus);
		pthread_mutex_unlock(&p->ctl);
	}
	name_thread(w);
	w->hooks = (struct fut__wait_hooks){
		.block = fut__tp_hook_block,
		.unblock = fut__tp_hook_unblock,
		.callbacks = fut__tp_hook_callbacks,
		.ctx = w,
	};
	fut__current_executor_set(&p->ex);
	fut__wait_hooks_set(&w->hooks);
	if (p->initializer != NULL) {
		/* It may take long or wait: it stays counted for the task it
		 * was started for (ninit), and the tasks queued beyond that
		 * get threads of their own meanwhile, as Python's. */
		w->initializing = true;
		atomic_fetch_add_explicit(&p->ninit, 1, memory_order_seq_cst);
		atomic_fetch_sub_explicit(&p->nspinning, 1,
					  memory_order_seq_cst);
		if (fut__tp_queue_count(&p->q) > 0)
			fut__tp_wakep(p);
		/* One that forked and failed in the child breaks nothing of
		 * the parent's pool there (the loop lets the thread end). */
		if (p->initializer(p->initarg) != 0 &&
		    !fut__executor_orphaned(&p->ex))
			break_pool(p);
		atomic_fetch_add_explicit(&p->nspinning, 1,
					  memory_order_seq_cst);
		atomic_fetch_sub_explicit(&p->ninit, 1, memory_order_seq_cst);
		w->initializing = false;
	}
	uint32_t ncpus = (uint32_t)fut__ncpus();
	/* A looker here: counted in nspinning by whoever started us. */
	for (;;) {
		/* A fork child of a task's (or the initializer's): the thread
		 * ends, touching nothing of the parent's pool. */
		if (FUT__UNLIKELY(fut__executor_orphaned(&p->ex)))
			return NULL;
		/* At most ncpus - 1 spin (one cpu is left to the thread that
		 * submits); the others look once and sleep. */
		bool spin = ncpus > 1 &&
			    atomic_load_explicit(&p->nspinning,
						 memory_order_relaxed) < ncpus;
		struct tp_taken t;
		if (look(w, spin, &t)) {
			fut__tp_stop_looking(p);
			fut__tp_run_jobs(w, &t); /* returns a looker */
			continue;
		}
		if (should_exit(p))
			break;
		idle_sleep(w);
	}
	atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
	/* Others asleep re-check: the queue they waited on is done. */
	fut__tp_wake_all(p);
	fut__wait_hooks_set(NULL);
	fut__current_executor_set(NULL);
	pthread_mutex_lock(&p->ctl);
	p->nlive--;
	pthread_cond_broadcast(&p->ctl_cv);
	pthread_mutex_unlock(&p->ctl);
	fut__tp_pool_unref(p);
	return NULL;
}
