/*
 * tp_queue.c: the thread pool's queues.
 *
 * Owns: the global FIFO (p->qhead/qtail/qlen) and each worker's local
 * FIFO (w->head/tail/nlocal): pushing, taking in batches, stealing,
 * draining, and the wake-ups that go with them.
 * Threads: submitters push; workers (and waiters helping in a nested
 * wait) take; shutdown and a broken pool drain.
 * Locks: p->qlock guards the global queue; w->lock a worker's local queue
 * (and its running stack and blocked word, used in thread_pool.c).  Never
 * both at once: a batch is cut from the global queue under qlock, then
 * appended to the local queue under w->lock.  qlen and nlocal are written
 * under their lock and read without it, as hints.
 *
 * Why this shape: a submit costs one short critical section on qlock; a
 * worker takes the whole global queue per qlock acquisition (an O(1)
 * cut), so busy workers rarely touch the shared lock and never hold it
 * long; and a worker that finds nothing steals half of another's local
 * queue (up to FUT__TP_BATCH jobs at a time), so a long batch never
 * strands work behind one slow task.
 */
#include "thread_pool.h"

/* ------------------------------------------------------------------ */
/* Queues                                                              */

/*
 * Called after a queue shrank (a take from any queue, a drain).  This
 * pairs with admit(), which counts itself a waiter, then counts the
 * queues: we changed a count, then read the waiters with a read-modify-
 * write, which reads the latest value; if that is not admit's increment
 * yet, admit's increment reads ours and so sees our count.  Either way
 * one of us sees the other.
 */
void fut__tp_queue_wake_space(struct tpool *p)
{
	if (p->max_queue == 0)
		return;
	if (atomic_fetch_add_explicit(&p->nspace_waiters, 0,
				      memory_order_seq_cst) > 0) {
		atomic_fetch_add(&p->space, 1);
		fut__futex_wake(&p->space, INT32_MAX);
	}
}

/*
 * One wake-up in flight at a time: a sleeper takes tens of microseconds to
 * run once woken, and every submit in that window would otherwise pay a
 * futex syscall to wake it again.  The flag is cleared by every worker
 * that returns from its sleep and by every worker about to sleep (before
 * it looks at the queues for the last time), so a flag left set by a wake
 * that found nobody asleep never hides work from a new sleeper: either
 * the sleeper sees the job, or the submitter sees the flag cleared.
 */
void fut__tp_queue_wake_sleepers(struct tpool *p, int n)
{
	/* A spinning worker takes the work itself (it looks at the queues
	 * once more before it sleeps): waking a second one would only take a
	 * cpu from the submitter. */
	if (atomic_load_explicit(&p->nsleeping, memory_order_seq_cst) == 0 ||
	    atomic_load_explicit(&p->nspinning, memory_order_seq_cst) > 0)
		return;
	if (n == 1) {
		/* One sleeper wanted: skip if a wake-up is on its way. */
		if (atomic_load_explicit(&p->waking, memory_order_seq_cst) ||
		    atomic_exchange(&p->waking, true))
			return;
	} else {
		atomic_store(&p->waking, true); /* a batch wakes n anyway */
	}
	atomic_fetch_add(&p->wake, 1);
	fut__futex_wake(&p->wake, n);
}

/* Appends first..last (n jobs) to w's local queue. */
static void local_append(struct worker *w, struct job *first, struct job *last,
			 uint32_t n)
{
	fut__lock_acquire(&w->lock);
	last->next = NULL;
	if (w->tail != NULL)
		w->tail->next = first;
	else
		w->head = first;
	w->tail = last;
	atomic_store_explicit(
		&w->nlocal,
		atomic_load_explicit(&w->nlocal, memory_order_relaxed) + n,
		memory_order_relaxed);
	fut__lock_release(&w->lock);
}

static struct job *take_local(struct worker *w)
{
	if (atomic_load_explicit(&w->nlocal, memory_order_relaxed) == 0)
		return NULL;
	fut__lock_acquire(&w->lock);
	struct job *j = w->head;
	if (j != NULL) {
		w->head = j->next;
		if (w->head == NULL)
			w->tail = NULL;
		atomic_store_explicit(
			&w->nlocal,
			atomic_load_explicit(&w->nlocal, memory_order_relaxed) -
				1,
			memory_order_relaxed);
	}
	fut__lock_release(&w->lock);
	/* The local queues count toward max_queue too: a submitter waiting
	 * for room must hear of this one (once this worker has run its
	 * batch and slept, nothing else would tell it). */
	if (j != NULL)
		fut__tp_queue_wake_space(w->pool);
	return j;
}

/* Takes a batch from the global queue: returns the first job and keeps
 * the rest in w's local queue. */
static struct job *take_global(struct worker *w)
{
	struct tpool *p = w->pool;
	if (atomic_load_explicit(&p->qlen, memory_order_relaxed) == 0)
		return NULL;
	fut__lock_acquire(&p->qlock);
	size_t n = atomic_load_explicit(&p->qlen, memory_order_relaxed);
	if (n == 0) {
		fut__lock_release(&p->qlock);
		return NULL;
	}
	/* The whole queue: the cut is O(1), where walking to a batch's end
	 * under the lock held every submitter up for a chain of cache misses
	 * (its jobs are in the submitter's cache).  Other workers steal from
	 * the local queue it goes to, a batch at a time.  A queue too long
	 * for the local count (never seen: 2^30 jobs) is cut at a batch. */
	size_t k = n <= FUT__TP_TAKE_MAX ? n : FUT__TP_BATCH;
	struct job *first = p->qhead, *last = p->qtail;
	if (k < n) {
		last = first;
		for (size_t i = 1; i < k; i++)
			last = last->next;
	}
	p->qhead = last->next;
	if (p->qhead == NULL)
		p->qtail = NULL;
	atomic_store_explicit(&p->qlen, n - k, memory_order_relaxed);
	fut__lock_release(&p->qlock);
	if (k > 1) {
		local_append(w, first->next, last, (uint32_t)(k - 1));
		/* The batch is stealable: let a sleeper come for it. */
		fut__tp_queue_wake_sleepers(p, 1);
	}
	first->next = NULL;
	fut__tp_queue_wake_space(p);
	return first;
}

/* Steals half of another worker's local queue, up to a batch. */
static struct job *steal(struct worker *w)
{
	struct tpool *p = w->pool;
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 1; i < nt; i++) {
		struct worker *v = p->workers[(w->index + i) % nt];
		if (v == NULL ||
		    atomic_load_explicit(&v->nlocal, memory_order_relaxed) == 0)
			continue;
		fut__lock_acquire(&v->lock);
		uint32_t n =
			atomic_load_explicit(&v->nlocal, memory_order_relaxed);
		if (n == 0) {
			fut__lock_release(&v->lock);
			continue;
		}
		uint32_t k = (n + 1) / 2;
		if (k > FUT__TP_BATCH) /* the walk holds v's lock */
			k = FUT__TP_BATCH;
		struct job *first = v->head, *last = first;
		for (uint32_t m = 1; m < k; m++)
			last = last->next;
		v->head = last->next;
		if (v->head == NULL)
			v->tail = NULL;
		atomic_store_explicit(&v->nlocal, n - k, memory_order_relaxed);
		fut__lock_release(&v->lock);
		if (k > 1)
			local_append(w, first->next, last, k - 1);
		first->next = NULL;
		fut__tp_queue_wake_space(p);
		return first;
	}
	return NULL;
}

struct job *fut__tp_queue_take(struct worker *w)
{
	struct job *j = take_local(w);
	if (j == NULL)
		j = take_global(w);
	if (j == NULL)
		j = steal(w);
	return j;
}

/* Jobs waiting in any queue (for max_queue). */
size_t fut__tp_queue_count(struct tpool *p)
{
	size_t n = atomic_load_explicit(&p->qlen, memory_order_seq_cst);
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < nt; i++) {
		struct worker *v = p->workers[i];
		if (v != NULL)
			n += atomic_load_explicit(&v->nlocal,
						  memory_order_seq_cst);
	}
	return n;
}

/* Work an idle worker could take right now. */
bool fut__tp_queue_visible(struct tpool *p, const struct worker *self)
{
	if (atomic_load_explicit(&p->qlen, memory_order_seq_cst) > 0)
		return true;
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < nt; i++) {
		struct worker *v = p->workers[i];
		if (v != NULL && v != self &&
		    atomic_load_explicit(&v->nlocal, memory_order_relaxed) > 0)
			return true;
	}
	return false;
}

/* Empties every queue: the caller owns the returned list (each job still
 * holds its queue reference). */
struct job *fut__tp_queue_drain(struct tpool *p)
{
	fut__lock_acquire(&p->qlock);
	struct job *list = p->qhead, *tail = p->qtail;
	p->qhead = p->qtail = NULL;
	atomic_store_explicit(&p->qlen, 0, memory_order_relaxed);
	fut__lock_release(&p->qlock);
	uint32_t nt = atomic_load_explicit(&p->nthreads, memory_order_acquire);
	for (uint32_t i = 0; i < nt; i++) {
		struct worker *v = p->workers[i];
		if (v == NULL)
			continue;
		fut__lock_acquire(&v->lock);
		if (v->head != NULL) {
			if (tail != NULL)
				tail->next = v->head;
			else
				list = v->head;
			tail = v->tail;
			v->head = v->tail = NULL;
			atomic_store_explicit(&v->nlocal, 0,
					      memory_order_relaxed);
		}
		fut__lock_release(&v->lock);
	}
	fut__tp_queue_wake_space(p);
	return list;
}

/* Appends first..last (n jobs) to the global queue. */
int fut__tp_queue_push(struct tpool *p, struct job *first, struct job *last,
		       size_t n)
{
	fut__lock_acquire(&p->qlock);
	int rc = pool_state(p);
	if (rc == FUT_OK && p->closed)
		rc = FUT_ESHUTDOWN;
	if (rc != FUT_OK) {
		fut__lock_release(&p->qlock);
		return rc;
	}
	last->next = NULL;
	if (p->qtail != NULL)
		p->qtail->next = first;
	else
		p->qhead = first;
	p->qtail = last;
	atomic_store_explicit(
		&p->qlen,
		atomic_load_explicit(&p->qlen, memory_order_relaxed) + n,
		memory_order_relaxed);
	fut__lock_release(&p->qlock);
	return FUT_OK;
}
