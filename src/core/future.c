/*
 * future.c: the future, both sides.
 *
 * Owns: struct fut_future's state machine, its outcome fields, its waiter
 * list (fut_wait / as_completed nodes and done callbacks), references, and
 * the single-future waits (fut_result, fut_result_bytes).
 * Threads: any.  Callbacks run in the thread that completes the future (or
 * in the caller of fut_add_done_callback when it is already done).
 * Locks: f->lock guards f->waiters only; it is a leaf except that waiter
 * notify functions take an iterator's lock under it (order: future lock ->
 * iterator lock).  No lock is held while callbacks run.
 *
 * Design.  A future costs 56 bytes and no mutex or condvar of
 * its own.  Its state word holds the state in three bits plus two flags:
 * SLEEPERS (a thread sleeps on the word with a futex: the cheap single
 * future wait, or a thread waiting out another's completion) and LISTED
 * (waiter nodes are linked, so the completer must take the lock); the
 * bits above count the future's sends (PENDING -> SENT), so that a cancel
 * that revoked one send never claims a later one.  A
 * completer first claims the future (PENDING/RUNNING -> COMPLETING) so that
 * exactly one thread writes the outcome, then publishes it with one atomic
 * exchange to FINISHED or CANCELLED; the bits that exchange returns say
 * whether to wake sleepers and walk the list.  A future nobody waits on is
 * completed with two atomic operations and no lock.  Registering a node
 * sets LISTED with fetch_or under the lock: if the old value is already
 * done the node is taken back, so no node is ever missed and none is
 * notified twice.
 */
#include <assert.h>
#include <limits.h>
#include <string.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"

/* A done callback, linked into the waiter list with notify == NULL. */
struct callback {
	struct fut__waiter node;
	fut_callback cb;
	void *ud;
};

void fut__future_fini(fut_future *f)
{
	/* What the flags say f owns; a cancelled future owns nothing here
	 * (its executor may have left its task in the field). */
	uint32_t flags = atomic_load_explicit(&f->flags, memory_order_relaxed);
	if (flags & FUT__F_BYTES)
		fut__free(f->value);
	else if (flags & FUT__F_MESSAGE)
		fut__free(f->message);
	/* Only callback nodes can remain (a future released while pending);
	 * waiter nodes belong to waits, which hold their futures. */
	for (struct fut__waiter *w = f->waiters, *next; w != NULL; w = next) {
		next = w->next;
		if (w->notify == NULL)
			fut__free(fut__container_of(w, struct callback, node));
	}
	f->waiters = NULL;
	f->magic = 0;
}

static void link_node(fut_future *f, struct fut__waiter *w)
{
	w->next = f->waiters;
	if (w->next != NULL)
		w->next->pprev = &w->next;
	w->pprev = &f->waiters;
	f->waiters = w;
}

static void unlink_node(struct fut__waiter *w)
{
	*w->pprev = w->next;
	if (w->next != NULL)
		w->next->pprev = w->pprev;
	w->next = NULL;
	w->pprev = NULL;
}

bool fut__future_register(fut_future *f, struct fut__waiter *w)
{
	fut__lock_acquire(&f->lock);
	link_node(f, w);
	uint32_t old = atomic_fetch_or_explicit(&f->state, FUT__S_LISTED,
						memory_order_acq_rel);
	bool linked = !FUT__S_DONE(old);
	if (!linked)
		unlink_node(w); /* the completer did not see LISTED */
	fut__lock_release(&f->lock);
	return linked;
}

void fut__future_unregister(fut_future *f, struct fut__waiter *w)
{
	fut__lock_acquire(&f->lock);
	if (w->pprev != NULL)
		unlink_node(w);
	fut__lock_release(&f->lock);
}

/* Sets SLEEPERS on f's state word unless f is done (false); *expected is
 * then the word to sleep on, which publish() changes and wakes. */
static bool arm_sleepers(fut_future *f, uint32_t *expected)
{
	uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
	for (;;) {
		if (FUT__S_DONE(s))
			return false;
		if (s & FUT__S_SLEEPERS)
			break;
		if (atomic_compare_exchange_weak_explicit(
			    &f->state, &s, s | FUT__S_SLEEPERS,
			    memory_order_acq_rel, memory_order_acquire)) {
			s |= FUT__S_SLEEPERS;
			break;
		}
	}
	*expected = s;
	return true;
}

/*
 * Waits out another thread's COMPLETING; returns the settled state word.
 * The completer only writes a few fields before it publishes, but it can
 * lose its cpu in between: after a short spin the waiter sleeps on the
 * state word (SLEEPERS), which publish() wakes.  A waiter that spun until
 * then could keep a completer that lost its cpu from running wherever the
 * spinner keeps winning the cpu back: valgrind's default lock, which runs
 * one thread at a time and goes back to the thread that released it more
 * often than not, is such a place (docs/reliability.md: a CI hang).
 */
static uint32_t settled_state(fut_future *f)
{
	for (int spins = 0;; spins++) {
		uint32_t s =
			atomic_load_explicit(&f->state, memory_order_acquire);
		if ((s & FUT__S_MASK) != FUT__S_COMPLETING)
			return s;
		uint32_t expected;
		if (spins < FUT__COMPLETING_SPINS)
			fut__cpu_relax();
		else if (arm_sleepers(f, &expected))
			(void)fut__futex_wait(&f->state, expected, -1);
	}
}

/* Bit sets of states, for claim() and move(). */
#define IN(st) (1u << (st))
#define FROM_ANY_LIVE                                                          \
	(IN(FUT__S_PENDING) | IN(FUT__S_SENT) | IN(FUT__S_RUNNING))

/*
 * Claims f for completion: from one of the states of `from` (a set of
 * IN() bits) -> COMPLETING; from SENT only if of the send whose state
 * word `sent` is, when not 0 (a cancel that revoked that very send).
 * False if another thread completed or claimed it, or f is in no state of
 * `from`.  Inlined into each caller, where `sent` is a constant 0 but in
 * fut_cancel: with the third argument gcc kept it out of line, and every
 * task's completion paid a call it did not before.
 */
__attribute__((always_inline)) static inline bool
claim(fut_future *f, uint32_t from, uint32_t sent)
{
	uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
	for (;;) {
		uint32_t st = s & FUT__S_MASK;
		if (!(from & IN(st)) || (sent != 0 && st == FUT__S_SENT &&
					 FUT__S_GEN(s) != FUT__S_GEN(sent)))
			return false;
		uint32_t next = (s & ~(uint32_t)FUT__S_MASK) |
				FUT__S_COMPLETING;
		if (atomic_compare_exchange_weak_explicit(&f->state, &s, next,
							  memory_order_acquire,
							  memory_order_relaxed))
			return true;
	}
}

/* Runs f's done callbacks (`callbacks`, oldest first, unlinked) in this
 * thread, with no lock held. */
static void run_callbacks(fut_future *f, struct fut__waiter *callbacks)
{
	const struct fut__wait_hooks *h = fut__wait_hooks_get();
	if (h != NULL && h->callbacks != NULL)
		h->callbacks(h->ctx);
	/* A callback may release the future (docs/api.md): the reference
	 * held here keeps it for the callbacks after that one, whoever the
	 * completer is.  fut_set_result() and fut_cancel() by a caller whose
	 * reference a callback dropped handed the next callbacks a freed
	 * future (found by review, 2026-12-07). */
	fut__future_ref(f);
	/* A manager thread runs them with its executor's maker's mask, not
	 * its own, which blocks every signal: a process a callback started
	 * had every signal blocked (SIGTERM did not stop it), and a
	 * raise(SIGABRT) did nothing (found by a user's trial,
	 * 2026-12-07). */
	const sigset_t *mask = fut__callback_mask_get();
	sigset_t own;
	if (mask != NULL && pthread_sigmask(SIG_SETMASK, mask, &own) != 0)
		mask = NULL;
	while (callbacks != NULL) {
		struct callback *c =
			fut__container_of(callbacks, struct callback, node);
		callbacks = callbacks->next;
		c->cb(f, c->ud);
		fut__free(c);
	}
	if (mask != NULL)
		(void)pthread_sigmask(SIG_SETMASK, &own, NULL);
	fut_release(f);
}

/*
 * Publishes the outcome written while COMPLETING: the final state, then
 * the waiters (notified under the lock), the sleepers, and the callbacks
 * (run_callbacks).
 */
static void publish(fut_future *f, uint32_t final_state)
{
	uint32_t old = atomic_exchange_explicit(&f->state, final_state,
						memory_order_acq_rel);
	struct fut__waiter *callbacks = NULL;
	if (old & FUT__S_LISTED) {
		fut__lock_acquire(&f->lock);
		/* The list is newest first; pushing each callback onto
		 * `callbacks` puts them back in the order they were added. */
		while (f->waiters != NULL) {
			struct fut__waiter *w = f->waiters;
			unlink_node(w);
			if (w->notify != NULL) {
				w->notify(w, f);
			} else {
				w->next = callbacks;
				callbacks = w;
			}
		}
		fut__lock_release(&f->lock);
	}
	if (old & FUT__S_SLEEPERS)
		fut__futex_wake(&f->state, INT32_MAX);
	if (callbacks != NULL)
		run_callbacks(f, callbacks);
}

/*
 * publish(), but f's done callbacks stay linked on it (newest first, as
 * they were), for fut__future_run_held(): only the waiters are notified
 * and the sleepers woken.  A callback added now finds f done and runs at
 * once; the list is still guarded by f's lock.
 */
static void publish_held(fut_future *f, uint32_t final_state)
{
	uint32_t old = atomic_exchange_explicit(&f->state, final_state,
						memory_order_acq_rel);
	if (old & FUT__S_LISTED) {
		fut__lock_acquire(&f->lock);
		for (struct fut__waiter *w = f->waiters, *next; w != NULL;
		     w = next) {
			next = w->next;
			if (w->notify != NULL) {
				unlink_node(w);
				w->notify(w, f);
			}
		}
		fut__lock_release(&f->lock);
	}
	if (old & FUT__S_SLEEPERS)
		fut__futex_wake(&f->state, INT32_MAX);
}

void fut__future_run_held(fut_future *f)
{
	/* Held by a _held completion: f is done.  A drain ran this on a job
	 * a waiter had started inline, running, and took a wait's node for
	 * a callback (review, 2026-12-07, fifteenth session). */
	uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
	assert(FUT__S_DONE(s));
	if (!FUT__S_DONE(s))
		return;
	struct fut__waiter *callbacks = NULL;
	fut__lock_acquire(&f->lock);
	/* Newest first: pushed onto `callbacks`, oldest first again.  Only
	 * callbacks (no notify): a done future's waiters were told. */
	for (struct fut__waiter *w = f->waiters, *next; w != NULL; w = next) {
		next = w->next;
		if (w->notify == NULL) {
			unlink_node(w);
			w->next = callbacks;
			callbacks = w;
		}
	}
	fut__lock_release(&f->lock);
	if (callbacks != NULL)
		run_callbacks(f, callbacks);
}

/* Fills the outcome of a claimed future and publishes it. */
static void settle(fut_future *f, int error, int task_code, void *value,
		   size_t len, uint32_t flags, char *message, int crash_status)
{
	f->error = (int16_t)error;
	f->code = error == FUT_ECRASHED ? crash_status : task_code;
	/* Every completer passes a value with FUT_OK only, a message with a
	 * failure only: they share a field. */
	if (error == FUT_OK) {
		f->value = value;
		f->len = len;
		if (message != NULL)
			fut__free(message);
	} else {
		if (flags & FUT__F_BYTES)
			fut__free(value);
		flags &= ~(uint32_t)FUT__F_BYTES;
		if (message != NULL)
			flags |= FUT__F_MESSAGE;
		f->message = message;
		f->len = 0;
	}
	if (flags != 0)
		atomic_fetch_or_explicit(&f->flags, flags,
					 memory_order_relaxed);
	publish(f, FUT__S_FINISHED);
}

bool fut__future_claim(fut_future *f)
{
	return claim(f, FROM_ANY_LIVE, 0);
}

void fut__future_settle_value(fut_future *f, void *value)
{
	settle(f, FUT_OK, 0, value, 0, 0, NULL, 0);
}

/* The bytes of every empty byte result: fut_result_bytes() gives a valid,
 * 8-aligned pointer to no bytes (api.md), never NULL, which a memcpy of
 * length 0 may not be passed and which a failure gives.  Never freed.
 * Before, an empty result (a task's fut_task_return_bytes(t, NULL, 0), a
 * fut_task_result_buffer(t, 0), a fut_set_result_bytes(f, NULL, 0)) gave
 * NULL on every executor (found by a user's trial, 2026-12-07). */
static const uint64_t no_bytes[1];

/* Claims f and settles it; frees what it was given when f is done. */
static int complete(fut_future *f, int error, int code, void *value, size_t len,
		    bool owned, char *message)
{
	if (!claim(f, FROM_ANY_LIVE, 0)) {
		if (owned)
			fut__free(value);
		fut__free(message);
		return FUT_ESTATE;
	}
	if (owned && value == NULL && error == FUT_OK) {
		value = (void *)(uintptr_t)no_bytes;
		owned = false;
	}
	settle(f, error, code, value, owned ? len : 0, owned ? FUT__F_BYTES : 0,
	       message, code);
	return FUT_OK;
}

int fut__future_succeed(fut_future *f, void *value)
{
	return complete(f, FUT_OK, 0, value, 0, false, NULL);
}

int fut__future_succeed_bytes(fut_future *f, void *bytes, size_t len)
{
	return complete(f, FUT_OK, 0, bytes, len, true, NULL);
}

int fut__future_fail(fut_future *f, int error, int code, char *message)
{
	assert(error != FUT_OK);
	return complete(f, error, code, NULL, 0, false, message);
}

int fut__future_crash(fut_future *f, int status, char *message)
{
	return complete(f, FUT_ECRASHED, status, NULL, 0, false, message);
}

int fut__future_succeed_borrowed(fut_future *f, const void *data, size_t len)
{
	if (!claim(f, FROM_ANY_LIVE, 0))
		return FUT_ESTATE;
	if (data == NULL)
		data = no_bytes;
	/* No FUT__F_BYTES: fut__future_fini() leaves the bytes alone. */
	settle(f, FUT_OK, 0, (void *)(uintptr_t)data, len, 0, NULL, 0);
	return FUT_OK;
}

bool fut__future_failed(const fut_future *f)
{
	return fut__future_state(f) == FUT__S_FINISHED && f->error != FUT_OK;
}

/* ------------------------------------------------------------------ */
/* Caller side                                                         */

int fut_state(const fut_future *f)
{
	if (!fut__future_ok(f))
		return FUT_EINVAL;
	switch (fut__future_state(f)) {
	case FUT__S_PENDING:
		return FUT_PENDING;
	case FUT__S_SENT:
		/* Pending until its executor sees it start; then RUNNING for
		 * good, and the state is read again (it may have moved on). */
		if (!f->ops->started(f))
			return FUT_PENDING;
		(void)fut__future_start((fut_future *)(uintptr_t)f);
		return fut_state(f);
	case FUT__S_CANCELLED:
		return FUT_CANCELLED;
	case FUT__S_FINISHED:
		return FUT_FINISHED;
	default: /* RUNNING, or COMPLETING: not done yet */
		return FUT_RUNNING;
	}
}

bool fut_done(const fut_future *f)
{
	return fut__future_ok(f) && FUT__S_DONE(atomic_load_explicit(
					    &f->state, memory_order_acquire));
}

bool fut_running(const fut_future *f)
{
	return fut_state(f) == FUT_RUNNING;
}

bool fut_cancelled(const fut_future *f)
{
	return fut__future_ok(f) && fut__future_state(f) == FUT__S_CANCELLED;
}

/* The single-future wait: the park loop over f's own state word. */
struct single_park {
	struct fut__park park;
	fut_future *f;
};

static bool single_ready(struct fut__park *p)
{
	fut_future *f = fut__container_of(p, struct single_park, park)->f;
	return FUT__S_DONE(
		atomic_load_explicit(&f->state, memory_order_acquire));
}

static bool single_assist(struct fut__park *p)
{
	fut_future *f = fut__container_of(p, struct single_park, park)->f;
	return f->ops != NULL && f->ops->assist != NULL && f->ops->assist(f);
}

static bool single_arm(struct fut__park *p, uint32_t *expected)
{
	return arm_sleepers(fut__container_of(p, struct single_park, park)->f,
			    expected);
}

/* Waits until f is done or the timeout runs out; FUT_EINVAL, without a
 * timeout, when this thread runs f's task: it would wait for itself. */
static int wait_done(fut_future *f, double timeout)
{
	if (FUT__S_DONE(atomic_load_explicit(&f->state, memory_order_acquire)))
		return FUT_OK;
	int64_t deadline = fut__deadline_ns(timeout);
	if (deadline < 0 && fut__future_runs_here(f))
		return FUT_EINVAL;
	struct single_park sp = {
		.park = { .ready = single_ready,
			  .assist = single_assist,
			  .arm = single_arm,
			  .word = &f->state,
			  .no_spin = f->ops != NULL && f->ops->no_spin },
		.f = f,
	};
	return fut__park_wait(&sp.park, deadline);
}

/* The outcome of a done future: FUT_OK or the code it ended with. */
static int outcome(const fut_future *f)
{
	if (fut__future_state(f) == FUT__S_CANCELLED)
		return FUT_ECANCELLED;
	return f->error;
}

int fut_result(fut_future *f, double timeout, void **value)
{
	if (value != NULL)
		*value = NULL;
	if (!fut__future_ok(f))
		return FUT_EINVAL;
	int rc = wait_done(f, timeout);
	if (rc != FUT_OK)
		return rc;
	rc = outcome(f);
	if (rc == FUT_OK && value != NULL)
		*value = f->value;
	return rc;
}

int fut_result_bytes(fut_future *f, double timeout, const void **data,
		     size_t *len)
{
	if (data != NULL)
		*data = NULL;
	if (len != NULL)
		*len = 0;
	if (!fut__future_ok(f) || data == NULL || len == NULL)
		return FUT_EINVAL;
	int rc = wait_done(f, timeout);
	if (rc != FUT_OK)
		return rc;
	rc = outcome(f);
	if (rc == FUT_OK) {
		*data = f->value;
		*len = f->len;
	}
	return rc;
}

/* fut_cancel(); hold: its done callbacks stay on f (publish_held), and
 * *held tells whether this call cancelled it (not one before). */
static bool cancel(fut_future *f, bool hold, bool *held)
{
	/* From PENDING; from SENT too once a revoke took back the task of
	 * that very send (its state word, `sent`).  A later send (the
	 * executor took the task back and sent it again, with a new claim,
	 * after our revoke) is not ours to cancel: its task may start. */
	uint32_t from = IN(FUT__S_PENDING), sent = 0;
	for (;;) {
		if (claim(f, from, sent)) {
			f->error = FUT_ECANCELLED;
			if (f->ops != NULL && f->ops->cancelled != NULL)
				f->ops->cancelled(f);
			if (hold) {
				publish_held(f, FUT__S_CANCELLED);
				*held = true;
			} else
				publish(f, FUT__S_CANCELLED);
			return true;
		}
		uint32_t s = settled_state(f);
		uint32_t st = s & FUT__S_MASK;
		from = IN(FUT__S_PENDING);
		sent = 0;
		if (st == FUT__S_PENDING)
			continue; /* taken back meanwhile */
		if (st != FUT__S_SENT)
			return st == FUT__S_CANCELLED;
		/* Sent on: its executor takes it back first, if it has not
		 * started. */
		switch (f->ops->revoke(f)) {
		case FUT__REVOKED:
			from |= IN(FUT__S_SENT);
			sent = s;
			break;
		case FUT__STARTED:
			(void)fut__future_start(f);
			break;
		default: /* moved: read the state again */
			break;
		}
	}
}

bool fut_cancel(fut_future *f)
{
	return fut__future_ok(f) && cancel(f, false, NULL);
}

bool fut__future_cancel_held(fut_future *f, bool *held)
{
	*held = false;
	return cancel(f, true, held);
}

int fut__future_fail_held(fut_future *f, int error)
{
	assert(error != FUT_OK);
	if (!claim(f, FROM_ANY_LIVE, 0))
		return FUT_ESTATE;
	/* As settle() with no value, message nor flags. */
	f->error = (int16_t)error;
	f->code = 0;
	f->message = NULL;
	f->len = 0;
	publish_held(f, FUT__S_FINISHED);
	return FUT_OK;
}

int fut_interrupt(fut_future *f)
{
	if (!fut__future_ok(f))
		return FUT_EINVAL;
	for (;;) {
		uint32_t st = settled_state(f) & FUT__S_MASK;
		if (FUT__S_DONE(st))
			return FUT_ESTATE;
		if (st == FUT__S_PENDING || st == FUT__S_SENT) {
			if (fut_cancel(f))
				return FUT_OK;
			continue; /* it started meanwhile */
		}
		/* RUNNING: raise the flag the task polls, then let the
		 * executor stop it if it can. */
		atomic_fetch_or_explicit(&f->flags, FUT__F_INTERRUPT,
					 memory_order_release);
		if (f->ops != NULL && f->ops->interrupt != NULL)
			f->ops->interrupt(f);
		return FUT_OK;
	}
}

bool fut_interrupt_requested(const fut_future *f)
{
	return fut__future_ok(f) &&
	       (atomic_load_explicit(&f->flags, memory_order_acquire) &
		FUT__F_INTERRUPT);
}

int fut_error(const fut_future *f)
{
	if (!fut__future_ok(f))
		return FUT_EINVAL;
	if (!fut_done(f))
		return FUT_ESTATE;
	return outcome(f);
}

int fut_task_code(const fut_future *f)
{
	if (!fut_done(f))
		return 0;
	int rc = outcome(f);
	return rc == FUT_OK || rc == FUT_ECRASHED ? 0 : f->code;
}

const char *fut_error_message(const fut_future *f)
{
	if (!fut_done(f))
		return NULL;
	int rc = outcome(f);
	if (rc == FUT_OK)
		return NULL;
	/* A cancel writes no message (the field may still name the task's
	 * input): only FUT__F_MESSAGE says the field is one.  A future that
	 * finished FUT_ECANCELLED (a process-pool task interrupted) has the
	 * one its executor gave. */
	if (atomic_load_explicit(&f->flags, memory_order_relaxed) &
	    FUT__F_MESSAGE)
		return f->message;
	return fut_strerror(rc);
}

int fut_crash_status(const fut_future *f, int *status)
{
	if (status != NULL)
		*status = 0;
	if (!fut__future_ok(f) || status == NULL)
		return FUT_EINVAL;
	if (!fut_done(f) || outcome(f) != FUT_ECRASHED)
		return FUT_ESTATE;
	*status = f->code;
	return FUT_OK;
}

int fut_add_done_callback(fut_future *f, fut_callback cb, void *ud)
{
	if (!fut__future_ok(f) || cb == NULL)
		return FUT_EINVAL;
	if (!fut_done(f)) {
		struct callback *c = fut__malloc(sizeof(*c));
		if (c == NULL)
			return FUT_ENOMEM;
		c->node.notify = NULL;
		c->cb = cb;
		c->ud = ud;
		if (fut__future_register(f, &c->node))
			return FUT_OK;
		fut__free(c); /* it completed meanwhile: run it now */
	}
	cb(f, ud);
	return FUT_OK;
}

fut_future *fut_retain(fut_future *f)
{
	if (!fut__future_ok(f))
		return f;
	/* A count that would wrap is refused: one release more would free
	 * a future still held (found by review, 2026-12-07: 2^32 retains). */
	if (FUT__UNLIKELY(atomic_fetch_add_explicit(&f->refs, 1,
						    memory_order_relaxed) >=
			  FUT__REFS_MAX)) {
		atomic_fetch_sub_explicit(&f->refs, 1, memory_order_relaxed);
		return NULL;
	}
	return f;
}

void fut_release(fut_future *f)
{
	if (!fut__future_ok(f))
		return;
	if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
		return;
	const struct fut__future_ops *ops = f->ops;
	fut__future_fini(f);
	if (ops != NULL && ops->destroy != NULL)
		ops->destroy(f);
	else
		fut__free(f);
}

/* ------------------------------------------------------------------ */
/* Producer side                                                       */

int fut_future_new(fut_future **out)
{
	if (out == NULL)
		return FUT_EINVAL;
	*out = NULL;
	fut_future *f = fut__malloc(sizeof(*f));
	if (f == NULL)
		return FUT_ENOMEM;
	fut__future_init(f, NULL);
	*out = f;
	return FUT_OK;
}

/* A transition between live states: from one of `from` to `to`, the send
 * generation raised by `bump`.  FUT_OK, FUT_ECANCELLED if f was cancelled,
 * FUT_ESTATE if in no state of from. */
static int move(fut_future *f, uint32_t from, uint32_t to, uint32_t bump)
{
	uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
	for (;;) {
		uint32_t st = s & FUT__S_MASK;
		if (st == FUT__S_COMPLETING) {
			s = settled_state(f);
			continue;
		}
		if (st == FUT__S_CANCELLED)
			return FUT_ECANCELLED;
		if (!(from & IN(st)))
			return FUT_ESTATE;
		uint32_t next = ((s & ~(uint32_t)FUT__S_MASK) + bump) | to;
		if (atomic_compare_exchange_weak_explicit(&f->state, &s, next,
							  memory_order_acq_rel,
							  memory_order_relaxed))
			return FUT_OK;
	}
}

int fut__future_start(fut_future *f)
{
	return move(f, IN(FUT__S_PENDING) | IN(FUT__S_SENT), FUT__S_RUNNING, 0);
}

int fut__future_send(fut_future *f)
{
	return move(f, IN(FUT__S_PENDING), FUT__S_SENT, FUT__S_GEN_ONE);
}

bool fut__future_unsend(fut_future *f)
{
	return move(f, IN(FUT__S_SENT), FUT__S_PENDING, 0) == FUT_OK;
}

/*
 * The producer calls are for futures made by fut_future_new().  A future an
 * executor made (it has ops) is completed by its executor only: letting
 * the caller start or complete it would make the executor drop its task,
 * and the task's work or the future's callbacks could be lost.
 */
static bool producer_ok(const fut_future *f)
{
	return fut__future_ok(f) && f->ops == NULL;
}

int fut_set_running(fut_future *f)
{
	if (!producer_ok(f))
		return FUT_EINVAL;
	return fut__future_start(f);
}

int fut_set_result(fut_future *f, void *value)
{
	if (!producer_ok(f))
		return FUT_EINVAL;
	return fut__future_succeed(f, value);
}

int fut_set_result_bytes(fut_future *f, const void *data, size_t len)
{
	if (!producer_ok(f) || (data == NULL && len != 0) ||
	    len > FUT_MAX_BYTES)
		return FUT_EINVAL;
	if (fut_done(f))
		return FUT_ESTATE;
	void *copy = NULL;
	if (len != 0) {
		copy = fut__malloc(len);
		if (copy == NULL)
			return FUT_ENOMEM;
		memcpy(copy, data, len);
	}
	return fut__future_succeed_bytes(f, copy, len);
}

int fut_set_error(fut_future *f, int task_code, const char *message)
{
	if (!producer_ok(f))
		return FUT_EINVAL;
	if (fut_done(f))
		return FUT_ESTATE;
	char *copy = NULL;
	if (message != NULL && (copy = fut__strdup(message)) == NULL)
		return FUT_ENOMEM;
	return fut__future_fail(f, FUT_ETASK, task_code, copy);
}
