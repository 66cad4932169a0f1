/*
 * thread_pool/pool.c: the thread-pool executor (fut_thread_pool_new).
 *
 * Owns: struct tpool (options, the queue, the workers, the lifecycle):
 * creating it, submitting to it, shutting it down and freeing it.  Its
 * jobs are job.c's, its slots and idle workers idle.c's, running tasks
 * and the nested-wait hooks run.c's.
 * Threads: submitters (any thread), the workers.  A thread that is not a
 * worker of the pool never runs its tasks.
 * Locks: the queue's own (queue.c); w->lock guards the walk of a
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
 *   more are queued, so a burst starts its workers as a tree, each new
 *   thread starting up to two more (off the submitter's path).
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

/* ------------------------------------------------------------------ */
/* Submit                                                              */

struct admit_wait {
	struct tpool *p;
	/* The submitter's wait hooks: a worker's, of p or of another pool. */
	const struct fut__wait_hooks *h;
	int rc;	      /* the block hook's */
	bool blocked; /* the block hook ran: the unblock hook runs */
};

/* Before a submitter sleeps for room: a worker gives its slot up, in the
 * pool whose worker it is. */
static int admit_stop(void *ctx)
{
	struct admit_wait *a = ctx;
	int rc = pool_state(a->p);
	if (rc != FUT_OK)
		return rc;
	/* Its slot, or an initializer's or a callback's place (which
	 * hook_block knows how to give up), as a nested wait does.  No
	 * park: room that comes free may go to another submit first, so
	 * this wait counts as one until it has its room.  A worker of
	 * another pool gives up its own pool's slot: kept, a task there
	 * that the one holding up this queue waited for never ran (found
	 * by review, 2026-12-07, fifteenth session). */
	if (a->h != NULL && !a->blocked) {
		a->blocked = true;
		a->rc = a->h->block(a->h->ctx, NULL);
	}
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
				.h = p->q.max != 0 ? fut__wait_hooks_get() :
						     NULL };
	rc = fut__tp_queue_reserve(&p->q, n, admit_stop, &a);
	if (a.blocked)
		a.h->unblock(a.h->ctx);
	if (rc != FUT_OK)
		return rc;
	if (!atomic_load_explicit(&p->started, memory_order_acquire)) {
		/* The first thread, in the submitter, so that a pool that
		 * cannot start one says so (FUT_EAGAIN).  Until one started,
		 * every submit comes here: one that saw the first start's
		 * place (nthreads 1) while it was under way pushed, counted
		 * on its looker, and when that start failed its task waited
		 * in a pool of no thread (found by review, 2026-12-07).
		 * Here it waits for the start's outcome (ctl is held across
		 * it) and makes its own if that one failed. */
		pthread_mutex_lock(&p->ctl);
		rc = pool_state(p);
		if (rc == FUT_OK &&
		    !atomic_load_explicit(&p->started, memory_order_relaxed) &&
		    atomic_load_explicit(&p->nthreads, memory_order_relaxed) ==
			    0) {
			atomic_fetch_add(&p->nspinning, 1);
			rc = fut__tp_spawn_locked(p);
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
	if (!was_empty) {
		/* A thread in the initializer takes only the task it was
		 * started for: one queued behind it needs a thread too. */
		if (p->initializer != NULL &&
		    atomic_load_explicit(&p->ninit, memory_order_seq_cst) > 0)
			fut__tp_wakep(p);
		return;
	}
	/* A read-modify-write, not a load: it is ordered after the push as
	 * a fence would be (TSan knows no fences), and it reads the latest
	 * count, which a looker that stops changes with one too. */
	if (atomic_fetch_add_explicit(&p->nspinning, 0, memory_order_seq_cst) ==
	    0)
		fut__tp_wakep(p);
}

/*
 * A submit that may sleep for room (max_queue) keeps the pool meanwhile:
 * a task may free the pool, which then goes with its last thread, and
 * the submitter woke into freed memory (found by review, 2026-12-07:
 * ASan).  An unbounded queue never sleeps a submit: no reference, no
 * atomic on W1's path.
 */
static void hold_pool(struct tpool *p)
{
	if (p->q.max != 0)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

static void let_pool_go(struct tpool *p)
{
	if (p->q.max != 0)
		fut__tp_pool_unref(p);
}

static int submit_one(struct tpool *p, fut_fn fn, void *arg, const void *data,
		      size_t len, bool bytes, fut_future **out)
{
	int rc = admit(p, 1);
	if (rc != FUT_OK)
		return rc;
	struct job *j = fut__tp_job_new(p, fn, arg, data, len, bytes);
	bool was_empty = false;
	rc = j == NULL ? FUT_ENOMEM :
			 fut__tp_queue_push(&p->q, j, j, 1, &was_empty);
	if (rc != FUT_OK) {
		if (j != NULL)
			fut__tp_job_discard(j);
		fut__tp_queue_unreserve(&p->q, 1);
		return rc;
	}
	*out = &j->fut;
	after_push(p, was_empty);
	return FUT_OK;
}

static int tp_submit(fut_executor *ex, fut_fn fn, void *arg, const void *data,
		     size_t len, bool bytes, fut_future **out)
{
	struct tpool *p = pool_of(ex);
	hold_pool(p);
	int rc = submit_one(p, fn, arg, data, len, bytes, out);
	let_pool_go(p);
	return rc;
}

static int submit_batch(struct tpool *p, fut_fn fn, const void *inputs,
			size_t stride, size_t n, fut_future **out)
{
	int rc = admit(p, n);
	if (rc != FUT_OK)
		return rc;
	struct job *first = NULL, *last = NULL;
	size_t made = 0;
	for (; made < n; made++) {
		const unsigned char *in =
			(const unsigned char *)inputs + made * stride;
		struct job *j = fut__tp_job_new(p, fn, NULL, stride ? in : NULL,
						stride, true);
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
			fut__tp_job_discard(j);
		}
		for (size_t i = 0; i < n; i++)
			out[i] = NULL;
		fut__tp_queue_unreserve(&p->q, n);
		return rc;
	}
	after_push(p, was_empty);
	return FUT_OK;
}

static int tp_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
			  size_t stride, size_t n, fut_future **out)
{
	struct tpool *p = pool_of(ex);
	hold_pool(p);
	int rc = submit_batch(p, fn, inputs, stride, n, out);
	let_pool_go(p);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Shutdown and free                                                   */

static void interrupt_running(struct tpool *p)
{
	atomic_fetch_add_explicit(&p->interrupting, 1, memory_order_seq_cst);
	/* A task that went RUNNING before this call but has not pushed its
	 * frame yet is not on the stacks walked below: its worker sees the
	 * new generation after its push and interrupts it (run_started). */
	atomic_fetch_add_explicit(&p->interrupt_gen, 1, memory_order_seq_cst);
	fut__fence_heavy();
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
 * may start one for a nested wait), each once its pthread_create is over.
 * Caller holds p->ctl, which a worker that starts another takes: it is
 * dropped around each join and while a start is under way. */
static void join_all_locked(struct tpool *p)
{
	assert(fut__mutex_held(&p->ctl));
	for (uint32_t i = 0;
	     i < atomic_load_explicit(&p->nthreads, memory_order_acquire);
	     i++) {
		struct worker *v = p->workers[i];
		while (v != NULL && v->starting)
			pthread_cond_wait(&p->ctl_cv, &p->ctl);
		if (v != NULL && !v->joined) {
			v->joined = true;
			pthread_t th = v->thread;
			pthread_mutex_unlock(&p->ctl);
			pthread_join(th, NULL);
			pthread_mutex_lock(&p->ctl);
			fut__tp_thread_joined(&v->stack);
		}
	}
}

/* Drains the queue and ends every job drained: cancelled (CANCEL_PENDING)
 * or failed with `code` (a break).  The drain is counted under ctl while
 * it settles them, so that a shutdown that drains nothing because this
 * one took it all sees it (and waits for it: the jobs it holds are not
 * done yet); no user code runs meanwhile, so any thread may wait for it.
 * Their done callbacks run after, uncounted.  interrupt
 * (FUT_SHUTDOWN_INTERRUPT too): what runs is interrupted once the queue
 * is empty, before the first callback runs: one that frees the pool
 * waits for it (found by review, 2026-12-07: a task that ran until
 * interrupted hung such a shutdown; interrupted before the drain, a task
 * a worker took in between was missed). */
void fut__tp_drain_end(struct tpool *p, int code, bool interrupt)
{
	pthread_mutex_lock(&p->ctl);
	struct job *list = fut__tp_queue_drain(&p->q, code);
	if (list != NULL)
		p->ndraining++;
	pthread_mutex_unlock(&p->ctl);
	if (list == NULL)
		return;
	if (interrupt)
		interrupt_running(p);
	struct job *rest = NULL;
	fut__tp_drained_settle(&list, code, &rest);
	pthread_mutex_lock(&p->ctl);
	p->ndraining--;
	pthread_cond_broadcast(&p->ctl_cv);
	pthread_mutex_unlock(&p->ctl);
	fut__tp_drained_callbacks(list, rest);
}

static int tp_shutdown(fut_executor *ex, unsigned flags)
{
	struct tpool *p = pool_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	bool own = fut__current_executor() == ex;
	if (wait && own)
		return FUT_EINVAL;
	/* A done callback run here (a cancel's) may free the pool: it
	 * lives until this call is over. */
	atomic_fetch_add(&p->refs, 1);
	fut__tp_queue_close(&p->q, FUT_ESHUTDOWN);
	atomic_store(&p->shutdown, true);
	bool interrupt = flags & FUT_SHUTDOWN_INTERRUPT;
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING)
		fut__tp_drain_end(p, FUT_ECANCELLED, interrupt);
	if (interrupt)
		interrupt_running(p);
	fut__tp_wake_all(p);
	fut__tp_queue_wake_room(&p->q);
	if (wait || (flags & FUT_SHUTDOWN_CANCEL_PENDING)) {
		pthread_mutex_lock(&p->ctl);
		/* Jobs another shutdown (or a break) drained are not done
		 * until it has settled them, which runs no user code: a
		 * pool thread waits too (a drain's callbacks run once it no
		 * longer counts). */
		while (p->ndraining > 0)
			pthread_cond_wait(&p->ctl_cv, &p->ctl);
		while (wait && p->nlive > 0)
			pthread_cond_wait(&p->ctl_cv, &p->ctl);
		if (wait)
			join_all_locked(p);
		pthread_mutex_unlock(&p->ctl);
	}
	fut__tp_pool_unref(p);
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
			/* One being started is its starter's to abandon. */
			if (v != NULL && !v->joined && !v->starting) {
				fut__tp_thread_abandon(v->thread, &v->stack);
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
	fut__tp_jobs_settle(p); /* closed: by fut_executor_free or above */
	fut__tp_pool_unref(p);
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
	fut__fence_setup(); /* before any worker takes its light side */
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
	/* Aligned as its members are (_Alignas(64)): malloc's 16 put the
	 * queue's tail on the line of the count lookers poll, and the lock
	 * submitters take on a line of its own only by chance. */
	struct tpool *p =
		fut__malloc_aligned(_Alignof(struct tpool), sizeof(*p));
	if (p == NULL)
		return FUT_ENOMEM;
	memset(p, 0, sizeof(*p));
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
	p->fops = fut__tp_job_ops;
	fut__executor_init(&p->ex);
	p->max_workers = o.max_workers;
	p->initializer = o.initializer;
	p->initarg = o.initarg;
	fut__tp_queue_init(&p->q, o.max_queue);
	snprintf(p->prefix, sizeof(p->prefix), "%s",
		 o.thread_name_prefix != NULL ? o.thread_name_prefix :
						DEFAULT_PREFIX);
	atomic_init(&p->refs, 2); /* the handle's and the job blocks' */
	p->home_cpu = -1;	  /* no thread placed yet (idle.c) */
	/* Every thread starts with the creator's signal mask, not with that
	 * of the thread that starts it: a task that blocked a signal on its
	 * own thread passed that on to every thread it started, for the
	 * pool's life (found by review, 2026-12-07). */
	(void)pthread_sigmask(SIG_BLOCK, NULL, &p->sigmask);
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
	return pool_threads(pool_of(ex));
}

size_t fut__tp_queued(fut_executor *ex)
{
	return (size_t)fut__tp_queue_count(&pool_of(ex)->q);
}
