/*
 * thread_pool/queue.h: the thread pool's queue of tasks not yet taken
 * (queue.c), a unit of its own.
 */
#ifndef FUT_THREAD_POOL_QUEUE_H
#define FUT_THREAD_POOL_QUEUE_H

#include "core/sync.h"

struct job;

/* The queue link of a job (and of the queue's stub). */
struct tp_link {
	_Atomic(struct tp_link *) next;
};

/*
 * The queue: one FIFO of every task not yet taken, whoever submitted it.
 * Submitters append under plock, workers take from the head under clock
 * (a lock only workers touch), so a submitter and a worker share no lock
 * while the queue holds more than one job.  A stub node keeps the list
 * non-empty; a worker that takes the last job puts the stub back behind
 * it under plock.  pushed and popped count jobs in and out (written under
 * their lock, read without it as hints: queued = pushed - popped).
 * max_queue is held with reservations: `reserved` counts jobs admitted
 * and neither taken nor cancelled, and a submitter that finds no room
 * sleeps on `room`.
 */
struct tp_queue {
	_Alignas(64) fut__lock plock;
	bool closed; /* guarded by plock: no more pushes */
	int broken;  /* guarded by plock: a code pushes return, 0: none */
	struct tp_link *tail;
	/* Apart from plock: lookers poll it, and their reads must not
	 * make the submitter wait for the lock's line. */
	_Alignas(64) _Atomic uint64_t pushed;

	_Alignas(64) fut__lock clock;
	struct tp_link *head;
	_Atomic uint64_t popped;

	_Alignas(64) size_t max; /* max_queue; 0: unbounded */
	_Atomic size_t reserved;
	_Atomic uint32_t room; /* futex word of submitters waiting for room */
	_Atomic uint32_t nroom_waiters;
	struct tp_link stub;
};

void fut__tp_queue_init(struct tp_queue *q, size_t max);
/* Appends first..last (n linked jobs); FUT_ESHUTDOWN once closed, the
 * broken code once broken (nothing queued then).  *was_empty: no job was
 * queued before them (one may still be being taken). */
int fut__tp_queue_push(struct tp_queue *q, struct job *first, struct job *last,
		       size_t n, bool *was_empty);
/* The oldest job, or NULL; *last: it was the last one queued (read
 * without touching the submitters' cache lines).  Its future is started
 * before the job leaves the queue, under the consumers' lock, so that a
 * drain misses no job taken and not started: *rc is FUT_OK (it is
 * RUNNING: the caller's to run), FUT_ECANCELLED (cancelled while queued:
 * the caller's to forget) or FUT_ESTATE (a waiter ran it inline).
 * *gen_seen: *gen read under the lock just before the start (the pool's
 * interrupt generation: thread_pool/run.c, run_started). */
struct job *fut__tp_queue_take(struct tp_queue *q, bool *last, int *rc,
			       const _Atomic uint32_t *gen, uint32_t *gen_seen);
/* The oldest job if it is no longer pending (run inline by a waiter, or
 * cancelled), else NULL: it only needs dropping. */
struct job *fut__tp_queue_pop_stale(struct tp_queue *q);
/* Closes the queue to pushes: with `code` FUT_ESHUTDOWN, or a broken
 * pool's code (FUT_EBROKEN). */
void fut__tp_queue_close(struct tp_queue *q, int code);
/* A job still queued was cancelled: its room goes back now, not when it
 * is popped (max_queue bounds the tasks that wait to start). */
void fut__tp_queue_cancelled(struct tp_queue *q, struct job *j);
/* Empties the queue: the caller owns the returned list (linked through
 * link.next as struct job; each still holds its queue reference), each
 * marked drained (FUT__F_EXECUTOR3) with the code it will end with:
 * FUT_ECANCELLED (a shutdown's), else a break's (FUT__F_EXECUTOR4). */
struct job *fut__tp_queue_drain(struct tp_queue *q, int code);
/* A waiter's start of queued job j, inline: under the consumer lock, so
 * that a job a shutdown drained (and will cancel) never starts.  FUT_OK
 * if it started it (its max_queue room goes back then); the code of the drain that took it (FUT_ECANCELLED,
 * FUT_EBROKEN), which the waiter ends it with as that drain would;
 * FUT_ESTATE if it was no longer pending. */
int fut__tp_queue_start_inline(struct tp_queue *q, struct job *j);
/* Jobs queued (a hint: it may count one being pushed or taken). */
static inline uint64_t fut__tp_queue_count(struct tp_queue *q)
{
	uint64_t out = atomic_load_explicit(&q->popped, memory_order_seq_cst);
	uint64_t in = atomic_load_explicit(&q->pushed, memory_order_seq_cst);
	return in > out ? in - out : 0;
}
/* max_queue: reserves room for n jobs, sleeping while there is none
 * (a batch larger than max_queue goes in when the queue is empty).
 * stop(ctx) is asked before each sleep: a nonzero code returns it. */
int fut__tp_queue_reserve(struct tp_queue *q, size_t n, int (*stop)(void *),
			  void *ctx);
/* Gives back room for n jobs that were reserved and never pushed. */
void fut__tp_queue_unreserve(struct tp_queue *q, size_t n);
/* Wakes every submitter waiting for room (shutdown, break). */
void fut__tp_queue_wake_room(struct tp_queue *q);

#endif /* FUT_THREAD_POOL_QUEUE_H */
