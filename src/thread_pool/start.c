/*
 * thread_pool/start.c: starting worker threads: their places in
 * workers[] and where they start (Placement).
 *
 * Owns: the places of threads (nthreads, nholes, nstarted, workers[] and
 * each worker's starting, hole and joined marks) and the placement
 * (cpus, home_cpu, pushed_seen).
 * Threads: submitters (a pool's first thread), workers (fut__tp_wakep's
 * starts, a nested wait's looker).
 * Locks: p->ctl guards the places and the placement, and is taken alone;
 * it is held across pthread_create only for a pool's first thread.
 */
#include <sched.h>

#include "thread_pool/pool.h"

/* Whether a start is refused with `live` threads (places taken), `off`
 * of them holding no slot and not looking meanwhile (waiting, or running
 * callbacks aside: none of max_workers): FUT_EAGAIN at max_threads,
 * FUT_ESTATE when enough run (or will once back), else FUT_OK. */
static int refused(const struct tpool *p, uint32_t live, uint32_t off)
{
	if (live >= p->max_threads)
		return FUT_EAGAIN;
	if (live - (off < live ? off : live) >= p->max_workers)
		return FUT_ESTATE;
	return FUT_OK;
}

/*
 * Takes a place in workers[] for a thread about to be started: the place
 * of a start that failed, else the next one.  The worker is counted from
 * here on (nlive, a pool reference, the limits) and marked `starting`
 * until start_done: a shutdown waits for it and a join skips it until
 * then.  A refusal that only places of starts not over (their
 * pthread_create runs, p->ctl dropped) make says so:
 * FUT__TP_BESIDE_A_START, for those starts may yet fail (past_bound
 * tests again).  Caller holds p->ctl.
 */
static int reserve_locked(struct tpool *p, struct worker **out)
{
	assert(fut__mutex_held(&p->ctl));
	uint32_t n = atomic_load_explicit(&p->nthreads, memory_order_relaxed);
	uint32_t live = pool_threads(p);
	uint32_t off = atomic_load(&p->nwaiting) + atomic_load(&p->naside);
	int rc = refused(p, live, off);
	if (rc != FUT_OK) {
		uint32_t started = atomic_load(&p->nstarted);
		return started != live && refused(p, started, off) == FUT_OK ?
			       FUT__TP_BESIDE_A_START :
			       rc;
	}
	struct worker *w = NULL;
	if (atomic_load(&p->nholes) > 0) {
		for (uint32_t i = 0; i < n && w == NULL; i++)
			if (p->workers[i]->hole)
				w = p->workers[i];
		assert(w != NULL);
		w->hole = false;
		atomic_fetch_sub(&p->nholes, 1);
	} else {
		w = p->workers[n];
		if (w == NULL) {
			w = fut__calloc(1, sizeof(*w));
			if (w == NULL)
				return FUT_ENOMEM;
			p->workers[n] = w;
		}
		w->pool = p;
		w->index = n;
		atomic_store_explicit(&p->nthreads, n + 1,
				      memory_order_release);
	}
	w->joined = false;
	w->starting = true;
	p->nlive++;
	atomic_fetch_add(&p->refs, 1);
	*out = w;
	return FUT_OK;
}

/* After the pthread_create of a reserved worker (rc its code).  A place
 * whose start failed is given back: the last one is dropped, one below
 * others is left a hole for the next start.  Caller holds p->ctl. */
static int start_done_locked(struct tpool *p, struct worker *w, int rc)
{
	assert(fut__mutex_held(&p->ctl));
	w->starting = false;
	if (rc == 0) {
		atomic_store_explicit(&p->started, true, memory_order_release);
		atomic_fetch_add_explicit(&p->nstarted, 1,
					  memory_order_seq_cst);
		if (p->detached) { /* freed from its own thread: nobody joins */
			fut__tp_thread_abandon(w->thread, &w->stack);
			w->joined = true;
		}
	} else {
		w->joined = true; /* nothing to join */
		uint32_t n = atomic_load_explicit(&p->nthreads,
						  memory_order_relaxed);
		if (w->index + 1 == n) {
			atomic_store_explicit(&p->nthreads, n - 1,
					      memory_order_release);
		} else {
			w->hole = true;
			atomic_fetch_add(&p->nholes, 1);
		}
		p->nlive--;
		atomic_fetch_sub(&p->refs, 1);
	}
	/* A join or a shutdown may wait for this start to be over. */
	pthread_cond_broadcast(&p->ctl_cv);
	return rc == 0 ? FUT_OK : FUT_EAGAIN;
}

/*
 * Placement.  Linux puts a new thread on its starter's cpu, or on the
 * other one when that has a queue, and there it waits for the running
 * thread's time slice to end (1.8-3.8 ms on these VMs, the other cpu
 * idle).  A submitter in a burst does not stop for it: the pool's
 * threads started while it submits waited that long, and so did every
 * task queued behind the first (W8).  So the pool's first thread starts
 * on its submitter's cpus less the one the submitter runs on (its
 * "home"), and a thread started later avoids that cpu too while the
 * submits go on: when tasks were pushed since the last start placed.
 * Once the submitter has stopped (W7b's and W9's bursts are over by the
 * time the first thread starts others), starts are left to the kernel,
 * both cpus clone, and the submitter's cpu takes threads once it waits.
 * A placed thread takes the submitter's cpus back as its first act.
 * Nothing is placed when the cpus cannot be read or the submitter may
 * run on one cpu only.
 *
 * A thread not placed starts on those cpus too, the pool's, whoever
 * starts it: pthread_create's default, its starter's cpus, would hand a
 * task's pinning of its own thread to every thread that thread starts.
 * Only cpus that cannot be read leave a start to the default.
 */

/* The submitter's cpus less its home, in *away; false when none is left.
 * Caller holds p->ctl. */
static bool away_from_home(const struct tpool *p, cpu_set_t *away)
{
	*away = p->cpus;
	CPU_CLR(p->home_cpu, away);
	return CPU_COUNT(away) > 0;
}

/* The first thread's cpus, in *away (and the pool's, in p->cpus); false:
 * leave it to the kernel.  Caller holds p->ctl. */
static bool place_first(struct tpool *p, cpu_set_t *away)
{
	assert(fut__mutex_held(&p->ctl));
	p->cpus_known = pthread_getaffinity_np(pthread_self(), sizeof(p->cpus),
					       &p->cpus) == 0;
	p->home_cpu = sched_getcpu();
	if (!p->cpus_known || p->home_cpu < 0 || p->home_cpu >= CPU_SETSIZE ||
	    CPU_COUNT(&p->cpus) < 2) {
		p->home_cpu = -1;
		return false;
	}
	p->pushed_seen =
		atomic_load_explicit(&p->q.pushed, memory_order_relaxed);
	return away_from_home(p, away);
}

/* A later thread's cpus, in *away, while tasks are being pushed; false:
 * leave it to the kernel.  Caller holds p->ctl. */
static bool place_later(struct tpool *p, cpu_set_t *away)
{
	assert(fut__mutex_held(&p->ctl));
	uint64_t pushed =
		atomic_load_explicit(&p->q.pushed, memory_order_relaxed);
	if (p->home_cpu < 0 || pushed == p->pushed_seen)
		return false;
	p->pushed_seen = pushed;
	return away_from_home(p, away);
}

/* Where w starts, in *cpus (first: the pool's first thread): away from
 * the submitter's home, or on the pool's cpus when its starter is not on
 * them (a task moved its worker); false: where its starter may run (on
 * the pool's cpus already, or they could not be read).  Reading the
 * starter's cpus is one system call; naming cpus for every start made a
 * thread's start cost ~15 us more, since the new thread then sets them
 * (W7b, docs/perf-log.md).  Caller holds p->ctl. */
static bool start_cpus_locked(struct tpool *p, struct worker *w, bool first,
			      cpu_set_t *cpus)
{
	w->placed = first ? place_first(p, cpus) : place_later(p, cpus);
	if (w->placed)
		return true;
	if (!p->cpus_known ||
	    (pthread_getaffinity_np(pthread_self(), sizeof(*cpus), cpus) == 0 &&
	     CPU_EQUAL(cpus, &p->cpus)))
		return false;
	*cpus = p->cpus;
	return true;
}

/* Starts one worker, which starts as a looker (the caller counted it in
 * nspinning).  Caller holds p->ctl, across pthread_create: the pool's
 * first thread, started by a submit, away from the submitter's cpu. */
int fut__tp_spawn_locked(struct tpool *p)
{
	struct worker *w;
	int rc = reserve_locked(p, &w);
	if (rc != FUT_OK)
		return rc;
	cpu_set_t cpus;
	bool set = start_cpus_locked(p, w, true, &cpus);
	rc = fut__tp_thread_start(&w->thread, fut__tp_worker_main, w, &w->stack,
				  set ? &cpus : NULL, &p->sigmask);
	return start_done_locked(p, w, rc);
}

/* Starts reserved worker w where Placement says.  Caller holds p->ctl,
 * which is dropped across
 * pthread_create: threads that start others clone at once on every cpu
 * (a clone is most of a thread's start; under the lock they took turns). */
static int start_reserved_locked(struct tpool *p, struct worker *w)
{
	assert(fut__mutex_held(&p->ctl));
	cpu_set_t cpus;
	bool set = start_cpus_locked(p, w, false, &cpus);
	pthread_mutex_unlock(&p->ctl);
	int rc = fut__tp_thread_start(&w->thread, fut__tp_worker_main, w,
				      &w->stack, set ? &cpus : NULL,
				      &p->sigmask);
	pthread_mutex_lock(&p->ctl);
	return start_done_locked(p, w, rc);
}

/* Starts one worker from a worker or a submitter (the caller counted it
 * a looker), p->ctl held only to reserve its place and to record the
 * start. */
int fut__tp_spawn(struct tpool *p)
{
	struct worker *w;
	pthread_mutex_lock(&p->ctl);
	int rc = atomic_load(&p->broken) ? FUT_EBROKEN : reserve_locked(p, &w);
	if (rc == FUT_OK)
		rc = start_reserved_locked(p, w);
	pthread_mutex_unlock(&p->ctl);
	return rc;
}

/*
 * A nested wait (fut__tp_hook_block) saw every thread wait, no looker,
 * tasks queued: maybe in passing (a thread that took a task and began to
 * wait counts itself before its own wakep), so it starts a looker itself
 * (one too many at worst).  FUT_OK: started, or enough run (or the pool
 * broke); FUT_EAGAIN: none can be added (the pool has max_threads, or
 * the system refused one); FUT__TP_BESIDE_A_START: refused for the
 * place of another start taken since the caller looked, whose outcome
 * is not known yet.
 */
int fut__tp_start_looker(struct tpool *p)
{
	atomic_fetch_add_explicit(&p->nspinning, 1, memory_order_seq_cst);
	int rc = fut__tp_spawn(p);
	if (rc != FUT_OK)
		fut__tp_starts_failed(p, 1);
	if (rc == FUT_ESTATE || rc == FUT_EBROKEN)
		return FUT_OK;
	return rc == FUT_OK || rc == FUT__TP_BESIDE_A_START ? rc : FUT_EAGAIN;
}
