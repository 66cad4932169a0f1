/*
 * core/sync.h: the clock, futexes, a 4-byte lock, per-thread wait hooks
 * and the one wait loop (sync.c).
 */
#ifndef FUT_CORE_SYNC_H
#define FUT_CORE_SYNC_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>

#include "core/base.h"

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t fut__now_ns(void);
/* A relative timeout in seconds to an absolute deadline; -1: forever
 * (negative timeouts and NaN), now for 0. */
int64_t fut__deadline_ns(double timeout);

/* Sleeps while *word == expected, until woken or the deadline (-1:
 * forever).  Returns 0, or FUT_ETIMEDOUT once the deadline has passed.
 * Spurious returns happen: callers loop. */
int fut__futex_wait(_Atomic uint32_t *word, uint32_t expected,
		    int64_t deadline_ns);
/* Wakes up to n sleepers on word (INT32_MAX: all). */
void fut__futex_wake(_Atomic uint32_t *word, int n);

void fut__cpu_relax(void);
/* Online cpus, at least 1 (cached). */
int fut__ncpus(void);

/*
 * An asymmetric fence (Dekker's pattern with one side rare): a hot path
 * that stores, then loads, pairs fut__fence_light() between the two with
 * a rare path that stores, fut__fence_heavy(), then loads; one of the
 * two sees the other's store.  With membarrier(2) the light side is a
 * compiler barrier and the heavy one a barrier on every cpu running a
 * thread of this process; without it (before Linux 4.14, or refused),
 * both are full fences.  fut__fence_setup() decides, once, before a
 * thread that takes the light side starts.
 */
void fut__fence_setup(void);
void fut__fence_heavy(void);
extern _Atomic bool fut__fence_asym;
/* A full fence.  GCC's ThreadSanitizer refuses atomic_thread_fence: a
 * seq_cst read-modify-write (a locked instruction, a full fence on x86
 * and arm64) stands in for it there. */
static inline void fut__fence_full(void)
{
#ifdef __SANITIZE_THREAD__
	static _Atomic int dummy;
	(void)atomic_fetch_add_explicit(&dummy, 0, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}
static inline void fut__fence_light(void)
{
	if (atomic_load_explicit(&fut__fence_asym, memory_order_relaxed))
		atomic_signal_fence(memory_order_seq_cst);
	else
		fut__fence_full();
}

/* A 4-byte mutex (futex based: 0 free, 1 locked, 2 locked with sleepers).
 * Zero-initialised is unlocked. */
typedef struct fut__lock {
	_Atomic uint32_t word;
} fut__lock;
/* The contended paths, out of line. */
void fut__lock_acquire_slow(fut__lock *l);
void fut__lock_wake(fut__lock *l);

static inline void fut__lock_acquire(fut__lock *l)
{
	uint32_t c = 0;
	if (FUT__UNLIKELY(!atomic_compare_exchange_strong_explicit(
		    &l->word, &c, 1, memory_order_acquire,
		    memory_order_relaxed)))
		fut__lock_acquire_slow(l);
}

static inline void fut__lock_release(fut__lock *l)
{
	if (FUT__UNLIKELY(atomic_exchange_explicit(&l->word, 0,
						   memory_order_release) == 2))
		fut__lock_wake(l);
}
/*
 * Takes l around every fork(), as glibc takes malloc's locks: a child
 * forked while another thread held l would find it held for good (that
 * thread is not in the child), and its first use would hang.  For a
 * process-wide leaf lock (never held while another is taken), guarded
 * once, at load time (a constructor): the calls are not thread-safe.
 */
void fut__lock_fork_guard(fut__lock *l);
/* How many fork children deep this process is since the library loaded
 * (counted by the handler fut__lock_fork_guard installs, at load time):
 * a value recorded earlier that differs says "made in a parent". */
extern _Atomic uint32_t fut__fork_count;
static inline uint32_t fut__fork_gen(void)
{
	return atomic_load_explicit(&fut__fork_count, memory_order_relaxed);
}
/* This process has closed every fd it inherited (a process pool's fork
 * server and its workers do, as they start): the number of an fd made
 * before, in a parent, is someone else's now (the worker's own channels
 * take the lowest). */
void fut__fds_gone(void);
/* Whether an fd made at fork generation gen went so: this process must
 * neither close it nor dup onto its number. */
bool fut__fd_lost(uint32_t gen);
/* fn runs in every fork child of this process from now on, after the
 * library's fork handlers (one fn: the last one set).  For a
 * single-threaded process (a process-pool worker), set before it forks. */
void fut__fork_child_hook(void (*fn)(void));
#define fut__lock_held(l)                                                      \
	(atomic_load_explicit(&(l)->word, memory_order_relaxed) != 0)
/* For asserts: a pthread mutex is held (by some thread: pthread cannot
 * tell whose).  Takes and drops it when it was free. */
static inline bool fut__mutex_held(pthread_mutex_t *m)
{
	int rc = pthread_mutex_trylock(m);
	if (rc == 0)
		pthread_mutex_unlock(m);
	return rc == EBUSY;
}

/*
 * Per-thread wait hooks.  An executor installs them in its own threads so
 * that a task which waits (fut_result, fut_wait, as_completed) without a
 * deadline does not hold up the executor's other work meanwhile:
 * - block(ctx, park) is called once, before the thread first sleeps in
 *   such a wait: the executor may hand the thread's place (its slot) to
 *   another thread.  A code other than FUT_OK ends the wait with that code
 *   (the executor could not keep its queue moving: FUT_EAGAIN).  park is
 *   the wait's (below): until unblock(ctx) returns, another thread may
 *   call park->ready(park) to learn that the wait is over before this one
 *   runs again (a ready() reads only atomics and what was set before the
 *   wait began);
 * - unblock(ctx) once when that wait ends, whatever ended it: the thread
 *   takes its place back (it may sleep until one is free).
 * Timed waits call neither: they keep their place, as any blocking call.
 * - callbacks(ctx), when not NULL, before the thread runs the done
 *   callbacks of a future it completed: they may take long, block or
 *   wait, so the executor stops counting on the thread meanwhile (the
 *   thread pool: for the callbacks of a task's own future, not for those
 *   a task runs as it goes, which are part of the task: of a future it
 *   completes, or of a task run inline for its wait).
 */
struct fut__park;
struct fut__wait_hooks {
	int (*block)(void *ctx, struct fut__park *park);
	void (*unblock)(void *ctx);
	void (*callbacks)(void *ctx);
	void *ctx;
};
/* Installs (or with NULL removes) this thread's hooks. */
void fut__wait_hooks_set(const struct fut__wait_hooks *hooks);
const struct fut__wait_hooks *fut__wait_hooks_get(void);

/* The signal mask done callbacks completed by this thread run with (NULL:
 * the thread's own).  A manager thread blocks every signal (the
 * application's handlers never run there), and sets the mask of the
 * thread that made its executor here: a callback that starts a process
 * or waits for a signal must not find every signal blocked. */
FUT__PRIVATE void fut__callback_mask_set(const sigset_t *mask);
const sigset_t *fut__callback_mask_get(void);

/*
 * The one wait loop every blocking call of the library uses.
 * ready(p) says whether the condition holds; assist(p), when not NULL, may
 * make progress itself (run the awaited task inline, in an executor's own
 * thread) and returns true if it did; arm(p, &expected) prepares to sleep
 * and returns false if the condition became true meanwhile, else
 * *expected is the value *p->word has while the condition is false.  The
 * loop: check, assist (only without a deadline, and only before the
 * thread's block hook ran), spin a bounded while (only with more than one
 * cpu), then block (once, without a deadline) and sleep on the futex until
 * woken or the deadline.  FUT_OK, FUT_ETIMEDOUT, or the block hook's code.
 */
struct fut__park {
	bool (*ready)(struct fut__park *p);
	bool (*assist)(struct fut__park *p);
	bool (*arm)(struct fut__park *p, uint32_t *expected);
	_Atomic uint32_t *word;
	bool no_spin; /* sleep at once (fut__future_ops.no_spin) */
};
int fut__park_wait(struct fut__park *p, int64_t deadline_ns);

/* How long a waiter spins before it sleeps (ns); 0 on one cpu. */
#define FUT__SPIN_NS 20000
/* How many times a thread polls a future another thread is completing
 * before it sleeps until that thread publishes. */
#define FUT__COMPLETING_SPINS 100

#endif /* FUT_CORE_SYNC_H */
