/*
 * core/future_int.h: the future's insides (future.c): its state word,
 * outcome, waiter list and the calls executors complete it with.
 * (Not future.h: that name is the public header's.)
 */
#ifndef FUT_CORE_FUTURE_INT_H
#define FUT_CORE_FUTURE_INT_H

#include "core/sync.h"

/* The state word: low 3 bits the state, higher bits flags. */
enum {
	FUT__S_PENDING = 0,
	FUT__S_RUNNING = 1,
	FUT__S_COMPLETING = 2, /* one completer owns the result fields */
	FUT__S_CANCELLED = 3,
	FUT__S_FINISHED = 4,
	/* Pending, its task handed to a place its executor can still take
	 * it back from (a process-pool worker's frame): fut_cancel() asks
	 * the executor (ops->revoke) first; reads as FUT_PENDING until the
	 * task starts there (ops->started). */
	FUT__S_SENT = 5,
	FUT__S_MASK = 7,
	FUT__S_SLEEPERS = 8, /* a thread sleeps on the state word */
	FUT__S_LISTED = 16,  /* the waiter list is not empty */
	/* The bits above: the send generation, bumped by each PENDING ->
	 * SENT, so that fut_cancel() tells the SENT it revoked from a later
	 * one (the task taken back and sent again meanwhile). */
	FUT__S_GEN_ONE = 32,
};
#define FUT__S_GEN(s) ((s) & ~(uint32_t)(FUT__S_GEN_ONE - 1))
#define FUT__S_DONE(s)                                                         \
	(((s)&FUT__S_MASK) == FUT__S_CANCELLED ||                              \
	 ((s)&FUT__S_MASK) == FUT__S_FINISHED)

/* The flags word. */
enum {
	FUT__F_INTERRUPT = 1, /* fut_interrupt() asked the task to stop */
	FUT__F_BYTES = 2,     /* value is a byte buffer the future owns */
	/* A bit the executor that owns the future gives its own meaning
	 * (the thread pool: the task's data is an input it copied). */
	FUT__F_EXECUTOR = 4,
	/* A second one (the thread pool: the job's max_queue room was
	 * given back). */
	FUT__F_EXECUTOR2 = 8,
	/* message is a failure's text the future owns.  Only a completion
	 * with a message sets it (never a cancel), so what else the shared
	 * field holds -- a value, an executor's task before it ran -- is
	 * never read or freed as a message. */
	FUT__F_MESSAGE = 16,
	/* A third executor's bit (the thread pool: a shutdown drained the
	 * job, and it must not start). */
	FUT__F_EXECUTOR3 = 32,
	/* A fourth (the thread pool: the drain that took the job was a
	 * break's, which fails it FUT_EBROKEN, not a shutdown's cancel). */
	FUT__F_EXECUTOR4 = 64,
};

#define FUT__FUTURE_MAGIC 0x4655u /* "FU" */

/*
 * A waiter: a node linked into a pending future's list.  notify(w, f) runs
 * when f completes, with f's lock held: it must be short and must not call
 * user code or take any lock but an iterator's.  notify == NULL marks a
 * done callback node, which the completer unlinks and runs after dropping
 * the lock.
 */
struct fut__waiter {
	struct fut__waiter *next;
	struct fut__waiter **pprev;
	void (*notify)(struct fut__waiter *w, fut_future *f);
};

/* What an executor lets the future call back into. */
struct fut__future_ops {
	/* f is RUNNING and fut_interrupt() was called (the flag is already
	 * set): stop the task if the executor can.  May be NULL. */
	void (*interrupt)(fut_future *f);
	/* A thread is about to wait for f: run f's task inline if it is still
	 * queued and may run here.  True if it ran something.  May be NULL. */
	bool (*assist)(fut_future *f);
	/* The last reference is gone; fut__future_fini() was called.  Free the
	 * memory that holds f.  NULL: fut__free(f). */
	void (*destroy)(fut_future *f);
	/* f is SENT and fut_cancel() was called: take its task back where it
	 * waits.  FUT__REVOKED: it will not start there (now or before: the
	 * cancel may go on), FUT__STARTED: it started, FUT__MOVED: it is no
	 * longer there (read the state again).  Needed with SENT. */
	int (*revoke)(fut_future *f);
	/* f is SENT: whether its task has started where it was sent.  Needed
	 * with SENT. */
	bool (*started)(const fut_future *f);
	/* fut_cancel() has just claimed f (it had not started), before its
	 * waiters and done callbacks hear of it: the executor lets go of
	 * what the task held while it waited (the thread pool: its place
	 * under max_queue, so that a callback may submit in its stead).
	 * May be NULL. */
	void (*cancelled)(fut_future *f);
	/* Whether f, not done, can complete only through the calling thread:
	 * it runs f's task, perhaps further down its stack (a thread-pool
	 * task run inline below a nested wait), or it is the thread that
	 * completes every task of f's executor (a manager, where done
	 * callbacks run).  A wait for f with no timeout would never end
	 * there.  May be NULL. */
	bool (*runs_here)(fut_future *f);
	/* A thread that waits for f sleeps at once instead of spinning first:
	 * the threads that complete f share the cpus with the waiter and need
	 * them (libfuture-mpi: the manager and the ranks' MPI loops; a
	 * spinning caller starved them, docs/perf-log.md). */
	bool no_spin;
};

/* ops->revoke's answers. */
enum {
	FUT__STARTED = 0,
	FUT__REVOKED = 1,
	FUT__MOVED = 2,
};

struct fut_future {
	_Atomic uint32_t state; /* FUT__S_*: also the futex word */
	_Atomic uint32_t refs;
	_Atomic uint32_t flags; /* FUT__F_* */
	fut__lock lock;		/* guards waiters */
	uint16_t magic;
	/* The outcome: written by the one completer while COMPLETING, read
	 * by anyone once the state is FINISHED (acquire). */
	int16_t error; /* a FUT_E* code */
	/* FUT_ECRASHED: the crash status; otherwise the task code (or the
	 * errno of FUT_ESYS).  One field: a crash has no task code. */
	int code;
	union {
		struct {
			/* One or the other: a failure has no value, a
			 * success no message.  The flags say what the
			 * future owns here: FUT__F_BYTES, FUT__F_MESSAGE,
			 * or nothing (a pointer result, a cancel). */
			union {
				void *value;
				char *message;
			};
			size_t len;
		};
		/* Until the future starts, an executor may keep its task's
		 * function and argument here: the outcome replaces them when
		 * the future completes, and fut_cancel() writes neither. */
		struct {
			fut_fn fn;
			const void *data;
		} task;
	};
	struct fut__waiter *waiters; /* guarded by lock */
	const struct fut__future_ops *ops;
};

/* Makes f a pending future with one reference (inline: every submit
 * makes one). */
static inline void fut__future_init(fut_future *f,
				    const struct fut__future_ops *ops)
{
	atomic_init(&f->state, FUT__S_PENDING);
	atomic_init(&f->refs, 1);
	atomic_init(&f->flags, 0);
	atomic_init(&f->lock.word, 0);
	f->magic = FUT__FUTURE_MAGIC;
	f->error = FUT_OK;
	f->code = 0;
	f->value = NULL;
	f->len = 0;
	f->waiters = NULL;
	f->ops = ops;
}
/* Frees what f owns (result bytes, message, callback nodes never run). */
void fut__future_fini(fut_future *f);

/*
 * Completing f, once; each call says what happened.  They take ownership
 * of the bytes and the message they are given in every case, wake
 * sleepers, notify waiters, then run done callbacks in the caller.
 * FUT_OK, or FUT_ESTATE when f was already done (what they were given is
 * freed).  The caller must hold a reference across the call.
 * - succeed: a pointer result (never freed by the future);
 * - succeed_bytes: a byte result the future owns (fut__malloc'd);
 * - succeed_borrowed: a byte result that lives as long as f does (in the
 *   executor's block that holds f), never freed by the future;
 * - fail: error (not FUT_OK) with its code: the task's code for
 *   FUT_ETASK, the errno for FUT_ESYS, the wait status for FUT_ECRASHED;
 *   message may be NULL;
 * - crash: fail with FUT_ECRASHED and the wait status.
 */
FUT__PRIVATE int fut__future_succeed(fut_future *f, void *value);
FUT__PRIVATE int fut__future_succeed_bytes(fut_future *f, void *bytes,
					   size_t len);
FUT__PRIVATE int fut__future_succeed_borrowed(fut_future *f, const void *data,
					      size_t len);
FUT__PRIVATE int fut__future_fail(fut_future *f, int error, int code,
				  char *message);
FUT__PRIVATE int fut__future_crash(fut_future *f, int status, char *message);

/*
 * Ending many futures at once (an executor's drain), so that no done
 * callback of one runs before every one is done (a callback may wait for
 * another of them): the _held calls settle f as fut_cancel() and
 * fut__future_fail() (no code, no message) do, its waiters told and its
 * sleepers woken, but leave its done callbacks on it; then
 * fut__future_run_held() runs them, in the order they were added, as a
 * completion does.  A callback added in between finds f done and runs at
 * once, in the thread that adds it.  The caller holds a reference from
 * the one to the other, and runs the held callbacks only of a future
 * its _held call settled (*held: cancel_held's, which is true for a
 * future cancelled before too; fail_held's FUT_OK): another's waiter
 * list is not its to empty.
 */
FUT__PRIVATE bool fut__future_cancel_held(fut_future *f, bool *held);
int fut__future_fail_held(fut_future *f, int error);
FUT__PRIVATE void fut__future_run_held(fut_future *f);

/* A completion in two steps, for a test that holds a future COMPLETING:
 * the claim (PENDING or RUNNING -> COMPLETING; false if f is done or
 * another thread claimed it), then a pointer result, which only the
 * thread whose claim succeeded may give. */
bool fut__future_claim(fut_future *f);
void fut__future_settle_value(fut_future *f, void *value);

/*
 * An executor's claim before it runs f's task: PENDING -> RUNNING (FUT_OK),
 * FUT_ECANCELLED if the caller cancelled it, FUT_ESTATE otherwise.  Exactly
 * one caller wins.  Executors must use this, not fut_set_running(), which
 * refuses (FUT_EINVAL) futures that have ops, i.e. that an executor owns.
 */
FUT__PRIVATE int fut__future_start(fut_future *f);

/* An executor hands f's task on to where it can still take it back
 * (ops->revoke): PENDING -> SENT (FUT_OK), FUT_ECANCELLED if the caller
 * cancelled it, FUT_ESTATE otherwise.  fut__future_start() then takes it
 * from SENT to RUNNING once it is seen to start (so may fut_state()), and
 * fut__future_unsend() back to PENDING when the executor took it back
 * (false: it was cancelled meanwhile).  Any completion accepts SENT. */
int fut__future_send(fut_future *f);
bool fut__future_unsend(fut_future *f);

/* Links w into f's list.  Returns false (w not linked) if f is done. */
bool fut__future_register(fut_future *f, struct fut__waiter *w);
/* Unlinks w if it is still linked (f may have completed meanwhile). */
void fut__future_unregister(fut_future *f, struct fut__waiter *w);

/* Load helpers. */
static inline uint32_t fut__future_state(const fut_future *f)
{
	return atomic_load_explicit(&f->state, memory_order_acquire) &
	       FUT__S_MASK;
}
/* Whether an untimed wait for f (not done) in this thread would wait for
 * itself (ops->runs_here): a thread-local read or two where it does not. */
static inline bool fut__future_runs_here(fut_future *f)
{
	return f->ops != NULL && f->ops->runs_here != NULL &&
	       f->ops->runs_here(f);
}
/* True if f finished with a failure (not a cancel); f must be done. */
bool fut__future_failed(const fut_future *f);
/* The caller's handle check: non-NULL and the magic intact. */
static inline bool fut__future_ok(const fut_future *f)
{
	return f != NULL && f->magic == FUT__FUTURE_MAGIC;
}

/* The most references fut_retain() takes: the 2^16 below the count's
 * wrap are the library's own, each held a while (a completion's, an
 * iterator's, an executor's), which fut__future_ref() takes unchecked. */
#define FUT__REFS_MAX 0xffff0000u

/* One more reference, for the library's own use. */
static inline void fut__future_ref(fut_future *f)
{
	atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

#endif /* FUT_CORE_FUTURE_INT_H */
