/*
 * thread_pool/queue.c: the thread pool's queue of tasks not yet taken.
 *
 * Owns: struct tp_queue (queue.h): one FIFO, its counts, its
 * closing, and the room protocol of max_queue (both halves: the
 * submitter's sleep and the taker's wake-up).
 * Threads: submitters push (and may sleep for room); workers take (and
 * start the job's future as they do); shutdown and a broken pool close
 * and drain.
 * Locks: plock (producers) guards tail, closed, broken and pushed's
 * writes; clock (consumers) guards head and popped's writes.  A pop that
 * takes the last job takes plock inside clock to put the stub back; no
 * other nesting.  Both are leaf locks of the pool.
 *
 * Why this shape: every task waits in one FIFO that every worker takes
 * from, one at a time, so no task is ever parked where an idle worker
 * cannot see it (a task that blocks strands nothing) and tasks start in
 * submission order.  Producers and consumers have separate locks on
 * separate cache lines, so a stream of submits from one thread and a
 * worker draining it share only the jobs themselves (and plock when the
 * worker catches up with the submitter and takes the last job).
 */
#include "thread_pool/pool.h"

static struct tp_link *link_of(struct job *j)
{
	return &j->link;
}

static struct job *job_of(struct tp_link *l)
{
	return fut__container_of(l, struct job, link);
}

void fut__tp_queue_init(struct tp_queue *q, size_t max)
{
	atomic_init(&q->stub.next, NULL);
	q->head = q->tail = &q->stub;
	q->max = max;
}

/* Links first..last behind the tail.  Caller holds plock. */
static void append_locked(struct tp_queue *q, struct tp_link *first,
			  struct tp_link *last)
{
	assert(fut__lock_held(&q->plock));
	atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
	/* Release: a worker that reads the link sees the jobs' contents. */
	atomic_store_explicit(&q->tail->next, first, memory_order_release);
	q->tail = last;
}

int fut__tp_queue_push(struct tp_queue *q, struct job *first, struct job *last,
		       size_t n, bool *was_empty)
{
	fut__lock_acquire(&q->plock);
	int rc = q->broken ? q->broken : q->closed ? FUT_ESHUTDOWN : FUT_OK;
	if (rc == FUT_OK) {
		/* The tail is the stub only once its last job was taken. */
		*was_empty = q->tail == &q->stub;
		/* Counted before it is linked, so popped never passes pushed
		 * for a reader that loads popped first.  The submitter's
		 * fence after the push orders it before its look at the
		 * idle workers (pool.c, after_push). */
		atomic_store_explicit(
			&q->pushed,
			atomic_load_explicit(&q->pushed, memory_order_relaxed) +
				n,
			memory_order_release);
		append_locked(q, link_of(first), link_of(last));
	}
	fut__lock_release(&q->plock);
	return rc;
}

void fut__tp_queue_close(struct tp_queue *q, int code)
{
	fut__lock_acquire(&q->plock);
	q->closed = true;
	if (code != FUT_ESHUTDOWN)
		q->broken = code;
	fut__lock_release(&q->plock);
}

/* Unlinks the head job; *last: it was the last one queued.  Caller holds
 * clock. */
static struct job *pop_locked(struct tp_queue *q, bool *last)
{
	assert(fut__lock_held(&q->clock));
	struct tp_link *h = q->head;
	struct tp_link *nx =
		atomic_load_explicit(&h->next, memory_order_acquire);
	if (h == &q->stub) {
		if (nx == NULL)
			return NULL;
		q->head = h = nx;
		nx = atomic_load_explicit(&h->next, memory_order_acquire);
	}
	*last = nx == NULL;
	if (nx == NULL) {
		/* h is the last job linked: the stub goes behind it, so that
		 * the list is never empty once h leaves.  A push that came
		 * first linked its jobs before the stub: either way h->next
		 * is set once plock is ours. */
		fut__lock_acquire(&q->plock);
		append_locked(q, &q->stub, &q->stub);
		fut__lock_release(&q->plock);
		nx = atomic_load_explicit(&h->next, memory_order_acquire);
	}
	q->head = nx;
	atomic_store_explicit(
		&q->popped,
		atomic_load_explicit(&q->popped, memory_order_relaxed) + 1,
		memory_order_release);
	return job_of(h);
}

/*
 * Room for one job more.  Pairs with reserve(), which counts itself a
 * waiter and then reads `reserved`: we changed `reserved`, then read the
 * waiters with a read-modify-write, which reads the latest value; either
 * we see its count or it sees ours.
 */
static void give_room(struct tp_queue *q, size_t n)
{
	atomic_fetch_sub_explicit(&q->reserved, n, memory_order_seq_cst);
	if (atomic_fetch_add_explicit(&q->nroom_waiters, 0,
				      memory_order_seq_cst) > 0)
		fut__tp_queue_wake_room(q);
}

/* Whether j's room is still held, which it then no longer is: a job's
 * room goes back once, when it is taken off the queue (popped, drained),
 * cancelled while queued or started inline, whichever comes first. */
static bool room_held(struct job *j)
{
	return !(atomic_fetch_or_explicit(&j->fut.flags, FUT__F_EXECUTOR2,
					  memory_order_relaxed) &
		 FUT__F_EXECUTOR2);
}

/* After a pop, out of clock: j (or NULL) is unlinked and its room given
 * back. */
static struct job *popped(struct tp_queue *q, struct job *j)
{
	if (j != NULL) {
		atomic_store_explicit(&j->link.next, NULL,
				      memory_order_relaxed);
		if (q->max != 0 && room_held(j))
			give_room(q, 1);
	}
	return j;
}

void fut__tp_queue_cancelled(struct tp_queue *q, struct job *j)
{
	if (q->max != 0 && room_held(j))
		give_room(q, 1);
}

struct job *fut__tp_queue_take(struct tp_queue *q, bool *last, int *rc,
			       const _Atomic uint32_t *gen, uint32_t *gen_seen)
{
	fut__lock_acquire(&q->clock);
	struct job *j = pop_locked(q, last);
	/* Read before the start, as late as can be: an interrupting
	 * shutdown that bumps it after the start sees the job RUNNING (the
	 * start's CAS orders the two), and one that bumped it before the
	 * read does not interrupt a job it found queued (a reviewer's
	 * injected pause there interrupted a job taken after the call). */
	*gen_seen = atomic_load_explicit(gen, memory_order_relaxed);
	/* Started while the lock is held: a shutdown's drain, which takes
	 * it, finds every job either still queued (it cancels those) or
	 * RUNNING (its interrupt reaches those).  Started after the lock,
	 * a job taken just before the drain could start after
	 * shutdown(CANCEL_PENDING) returned (found by review, 2026-12-07).
	 * The state shares the job's cache line with the link just read. */
	if (j != NULL)
		*rc = fut__future_start(&j->fut);
	fut__lock_release(&q->clock);
	return popped(q, j);
}

struct job *fut__tp_queue_pop_stale(struct tp_queue *q)
{
	bool last;
	struct job *j = NULL;
	fut__lock_acquire(&q->clock);
	struct tp_link *h = q->head;
	if (h == &q->stub)
		h = atomic_load_explicit(&h->next, memory_order_acquire);
	if (h != NULL && fut__future_state(&job_of(h)->fut) != FUT__S_PENDING)
		j = pop_locked(q, &last);
	fut__lock_release(&q->clock);
	return popped(q, j);
}

struct job *fut__tp_queue_drain(struct tp_queue *q, int code)
{
	uint32_t mark = FUT__F_EXECUTOR3 |
			(code == FUT_ECANCELLED ? 0 : FUT__F_EXECUTOR4);
	struct job *list = NULL, *tail = NULL;
	size_t n = 0;
	bool last = false;
	fut__lock_acquire(&q->clock);
	for (struct job *j; (j = pop_locked(q, &last)) != NULL;) {
		/* Drained: a waiter that would run it inline must not start
		 * it now, and ends it as this drain will, whatever happened
		 * to the pool since (fut__tp_queue_start_inline). */
		atomic_fetch_or_explicit(&j->fut.flags, mark,
					 memory_order_relaxed);
		atomic_store_explicit(&j->link.next, NULL,
				      memory_order_relaxed);
		if (q->max != 0 && room_held(j))
			n++;
		if (tail != NULL)
			atomic_store_explicit(&tail->link.next, &j->link,
					      memory_order_relaxed);
		else
			list = j;
		tail = j;
	}
	fut__lock_release(&q->clock);
	if (n > 0)
		give_room(q, n);
	return list;
}

int fut__tp_queue_start_inline(struct tp_queue *q, struct job *j)
{
	fut__lock_acquire(&q->clock);
	uint32_t flags =
		atomic_load_explicit(&j->fut.flags, memory_order_relaxed);
	int rc = flags & FUT__F_EXECUTOR4 ? FUT_EBROKEN : FUT_ECANCELLED;
	if (!(flags & FUT__F_EXECUTOR3))
		rc = fut__future_start(&j->fut) == FUT_OK ? FUT_OK : FUT_ESTATE;
	fut__lock_release(&q->clock);
	/* Started: it waits to start no more, though it stays queued until
	 * a worker passes it; its room goes back now, not at that pop (the
	 * running task's next submit slept on a finished task's room:
	 * found by review, 2026-12-07, fifteenth session). */
	if (rc == FUT_OK && q->max != 0 && room_held(j))
		give_room(q, 1);
	return rc;
}

void fut__tp_queue_wake_room(struct tp_queue *q)
{
	atomic_fetch_add(&q->room, 1);
	fut__futex_wake(&q->room, INT32_MAX);
}

/* Reserves n if they fit: the queue empty, or n more within max. */
static bool try_reserve(struct tp_queue *q, size_t n)
{
	size_t r = atomic_load_explicit(&q->reserved, memory_order_seq_cst);
	do {
		if (r != 0 && (r > q->max || n > q->max - r))
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&q->reserved, &r, r + n,
							memory_order_seq_cst,
							memory_order_seq_cst));
	return true;
}

int fut__tp_queue_reserve(struct tp_queue *q, size_t n, int (*stop)(void *),
			  void *ctx)
{
	if (q->max == 0)
		return FUT_OK;
	int rc = FUT_OK;
	while (!try_reserve(q, n)) {
		if ((rc = stop(ctx)) != FUT_OK)
			return rc;
		atomic_fetch_add_explicit(&q->nroom_waiters, 1,
					  memory_order_seq_cst);
		uint32_t v =
			atomic_load_explicit(&q->room, memory_order_seq_cst);
		if (!try_reserve(q, n)) {
			if ((rc = stop(ctx)) == FUT_OK)
				fut__futex_wait(&q->room, v, -1);
		} else {
			n = 0; /* reserved */
		}
		atomic_fetch_sub_explicit(&q->nroom_waiters, 1,
					  memory_order_seq_cst);
		if (n == 0 || rc != FUT_OK)
			return rc;
	}
	return FUT_OK;
}

void fut__tp_queue_unreserve(struct tp_queue *q, size_t n)
{
	if (q->max != 0 && n > 0)
		give_room(q, n);
}
