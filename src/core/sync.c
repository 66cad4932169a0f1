/*
 * sync.c: time, futexes, the 4-byte lock, and the library's one wait loop.
 *
 * Owns: CLOCK_MONOTONIC deadlines, futex wait/wake, fut__lock, the
 * per-thread wait hooks, and fut__park_wait(), which every blocking call
 * (fut_result, fut_wait, as_completed, executors' own waits) goes through.
 * Threads: any.
 * Locks: fut__lock is a leaf lock (Drepper's three-state futex mutex); it
 * guards only short critical sections that never call user code.
 *
 * Why one wait loop: a thread that sleeps and is woken costs far more than
 * a short spin (docs/perf-log.md has the figures), so every wait spins a
 * bounded while before it sleeps on a futex (not on one cpu).  A
 * pool's worker that waits without a deadline first runs the awaited task
 * itself if it has not started, and gives its place in the pool up while
 * it sleeps (the hooks); no other thread ever runs a pool's task.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/sync.h"

#ifdef __has_include
#if __has_include(<linux/membarrier.h>)
#include <linux/membarrier.h>
#endif
#endif

int64_t fut__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t fut__deadline_ns(double timeout)
{
	if (!(timeout >= 0)) /* negative or NaN: forever */
		return -1;
	if (timeout > 1e9) /* ~31 years: as good as forever, no overflow */
		return -1;
	return fut__now_ns() + (int64_t)(timeout * 1e9);
}

int fut__futex_wait(_Atomic uint32_t *word, uint32_t expected,
		    int64_t deadline_ns)
{
	struct timespec ts, *tsp = NULL;
	if (deadline_ns >= 0) {
		if (fut__now_ns() >= deadline_ns)
			return FUT_ETIMEDOUT;
		ts.tv_sec = (time_t)(deadline_ns / 1000000000);
		ts.tv_nsec = (long)(deadline_ns % 1000000000);
		tsp = &ts;
	}
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time. */
	long r = syscall(SYS_futex, (void *)(uintptr_t)word,
			 FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp,
			 NULL, FUTEX_BITSET_MATCH_ANY);
	if (r == -1 && errno == ETIMEDOUT)
		return FUT_ETIMEDOUT;
	return 0; /* woken, EAGAIN (value changed) or EINTR: caller loops */
}

void fut__futex_wake(_Atomic uint32_t *word, int n)
{
	syscall(SYS_futex, (void *)(uintptr_t)word,
		FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

void fut__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

int fut__ncpus(void)
{
	static _Atomic int cached;
	int n = atomic_load_explicit(&cached, memory_order_relaxed);
	if (n == 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		n = c < 1 ? 1 : (c > 4096 ? 4096 : (int)c);
		atomic_store_explicit(&cached, n, memory_order_relaxed);
	}
	return n;
}

/* fut__lock_acquire's first try failed: spin a little, then sleep. */
void fut__lock_acquire_slow(fut__lock *l)
{
	uint32_t c = atomic_load_explicit(&l->word, memory_order_relaxed);
	if (c == 0 && atomic_compare_exchange_strong_explicit(
			      &l->word, &c, 1, memory_order_acquire,
			      memory_order_relaxed))
		return;
	for (int i = 0; i < 100 && c != 0; i++) {
		fut__cpu_relax();
		c = atomic_load_explicit(&l->word, memory_order_relaxed);
		if (c == 0 && atomic_compare_exchange_strong_explicit(
				      &l->word, &c, 1, memory_order_acquire,
				      memory_order_relaxed))
			return;
	}
	if (c != 2)
		c = atomic_exchange_explicit(&l->word, 2, memory_order_acquire);
	while (c != 0) {
		fut__futex_wait(&l->word, 2, -1);
		c = atomic_exchange_explicit(&l->word, 2, memory_order_acquire);
	}
}

/* fut__lock_release found sleepers. */
void fut__lock_wake(fut__lock *l)
{
	fut__futex_wake(&l->word, 1);
}

/* The locks taken around fork() (fut__lock_fork_guard). */
#define FORK_LOCKS_MAX 8u
static fut__lock *fork_locks[FORK_LOCKS_MAX];
static unsigned nfork_locks;

static void fork_prepare(void)
{
	for (unsigned i = 0; i < nfork_locks; i++)
		fut__lock_acquire(fork_locks[i]);
}

/* In the parent, and in the child, whose one thread took them. */
static void fork_done(void)
{
	for (unsigned i = nfork_locks; i-- > 0;)
		fut__lock_release(fork_locks[i]);
}

/* Fork children since load (fut__fork_gen). */
_Atomic uint32_t fut__fork_count;

static void fence_refork(void);

/* The fork generation in which this process closed every fd it
 * inherited (0: never).  Written by a single-threaded process (a fork
 * server or a worker, as it starts); atomic for a task's threads. */
static _Atomic uint32_t fds_gone_gen;

void fut__fds_gone(void)
{
	atomic_store_explicit(&fds_gone_gen, fut__fork_gen(),
			      memory_order_relaxed);
}

bool fut__fd_lost(uint32_t gen)
{
	uint32_t gone =
		atomic_load_explicit(&fds_gone_gen, memory_order_relaxed);
	return gone != 0 && gen < gone;
}

static void (*_Atomic child_hook)(void);

void fut__fork_child_hook(void (*fn)(void))
{
	atomic_store_explicit(&child_hook, fn, memory_order_relaxed);
}

static void fork_child(void)
{
	fork_done();
	atomic_fetch_add_explicit(&fut__fork_count, 1, memory_order_relaxed);
	fence_refork();
	void (*fn)(void) =
		atomic_load_explicit(&child_hook, memory_order_relaxed);
	if (fn != NULL)
		fn();
}

void fut__lock_fork_guard(fut__lock *l)
{
	/* The slab's six locks and the module table's (names.c) use it: a
	 * lock more would need a larger table, not a lock left unguarded. */
	assert(nfork_locks < FORK_LOCKS_MAX);
	if (nfork_locks == FORK_LOCKS_MAX)
		return;
	fork_locks[nfork_locks++] = l;
}

/* At load: the handlers take the guarded locks (those guarded by then,
 * and any later) and count the fork children. */
__attribute__((constructor)) static void install_fork_handlers(void)
{
	(void)pthread_atfork(fork_prepare, fork_done, fork_child);
}

static _Thread_local const struct fut__wait_hooks *thread_hooks;

void fut__wait_hooks_set(const struct fut__wait_hooks *hooks)
{
	thread_hooks = hooks;
}

const struct fut__wait_hooks *fut__wait_hooks_get(void)
{
	return thread_hooks;
}

static _Thread_local const sigset_t *callback_mask;

void fut__callback_mask_set(const sigset_t *mask)
{
	callback_mask = mask;
}

const sigset_t *fut__callback_mask_get(void)
{
	return callback_mask;
}

/* Spins up to FUT__SPIN_NS for the condition; true if it came. */
static bool spin(struct fut__park *p, int64_t deadline_ns)
{
	if (fut__ncpus() < 2)
		return false;
	/* Never past a deadline nearer than the spin: a wait of 1 us took
	 * 21 us. */
	int64_t until = fut__now_ns() + FUT__SPIN_NS;
	if (deadline_ns >= 0 && deadline_ns < until)
		until = deadline_ns;
	for (;;) {
		for (int i = 0; i < 64; i++) {
			if (p->ready(p))
				return true;
			fut__cpu_relax();
		}
		if (fut__now_ns() >= until)
			return false;
	}
}

int fut__park_wait(struct fut__park *p, int64_t deadline_ns)
{
	const struct fut__wait_hooks *h = NULL;
	bool spun = false, blocked = false;
	int rc;
	for (;;) {
		if (p->ready(p)) {
			rc = FUT_OK;
			break;
		}
		/* Running the awaited task inline could overrun a timed wait,
		 * so only waits without a deadline do, and only while this
		 * thread holds its executor's place (before block). */
		if (deadline_ns < 0 && !blocked && p->assist != NULL &&
		    p->assist(p))
			continue;
		if (deadline_ns >= 0 && fut__now_ns() >= deadline_ns) {
			rc = FUT_ETIMEDOUT;
			break;
		}
		if (!spun) {
			spun = true;
			if (!p->no_spin && spin(p, deadline_ns)) {
				rc = FUT_OK;
				break;
			}
			continue;
		}
		/* The hooks are read here, not as the wait began: a task run
		 * inline (assist) may have forked, and in the child this thread
		 * is no worker any more (the handler cleared them). */
		if (!blocked && deadline_ns < 0 && (h = thread_hooks) != NULL &&
		    h->block != NULL) {
			blocked = true;
			if ((rc = h->block(h->ctx, p)) != FUT_OK)
				break;
			continue;
		}
		uint32_t expected;
		if (!p->arm(p, &expected))
			continue;
		fut__futex_wait(p->word, expected, deadline_ns);
	}
	if (blocked && h->unblock != NULL)
		h->unblock(h->ctx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The asymmetric fence (sync.h)                                       */

_Atomic bool fut__fence_asym;
static pthread_once_t fence_once = PTHREAD_ONCE_INIT;

static void fence_decide(void)
{
#if defined(SYS_membarrier) && defined(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
		    0, 0) == 0)
		atomic_store(&fut__fence_asym, true);
#endif
}

/* A fork child is a new mm: its registration is its own to make (the
 * child has one thread, none on the light side yet). */
static void fence_refork(void)
{
	if (atomic_load(&fut__fence_asym)) {
		atomic_store(&fut__fence_asym, false);
		fence_decide();
	}
}

void fut__fence_setup(void)
{
	(void)pthread_once(&fence_once, fence_decide);
}

void fut__fence_heavy(void)
{
	fut__fence_full();
#if defined(SYS_membarrier) && defined(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
	/* Registered, it does not fail (membarrier(2)). */
	if (atomic_load(&fut__fence_asym))
		(void)syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED,
			      0, 0);
#endif
}
