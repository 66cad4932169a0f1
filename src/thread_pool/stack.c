/*
 * thread_pool/stack.c: worker threads' stacks, kept for the next thread.
 *
 * Owns: the stacks the pool's threads run on (the default thread stack
 * size, a guard page below), a process-wide cache of stacks whose thread
 * was joined, and the threads of pools freed from their own task, which
 * nobody joins at once: they are joined later, when they have exited
 * (pthread_tryjoin_np), and their stacks go to the cache too.
 * Threads: whoever starts a worker (a submitter, a worker) or joins one
 * (the thread that frees a pool).
 * Locks: `lock` guards the cache and the list of threads to reap; a leaf
 * lock, never held across pthread_create or a join that can wait.
 *
 * Why: glibc keeps 40 MiB of stacks of exited threads for the next ones,
 * five of the default 8 MiB; past that each thread maps a fresh stack and
 * each join unmaps one, and a mapping and its unmapping (a TLB shootdown
 * on every cpu) cost more than the thread's start.  A program that makes
 * a pool of 16 threads per request, or whose pool grows past its threads
 * of a burst before, started 16 threads in ~1.8 ms with fresh stacks and
 * in ~0.45 ms with kept ones (docs/perf-log.md).  A kept stack holds at
 * most KEEP_RESIDENT bytes of memory: the rest is given back.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "thread_pool/pool.h"

#define CACHE_MAX 64u		  /* stacks kept */
#define REAP_MAX 256u		  /* threads of freed pools to join */
#define KEEP_RESIDENT (64u << 10) /* bytes at a kept stack's top */

struct reap {
	pthread_t thread;
	struct fut__tp_stack stack;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct fut__tp_stack cache[CACHE_MAX];
static unsigned ncache;
static struct reap reaps[REAP_MAX];
static unsigned nreap;

/* The default thread stack size (as pthread_create with no attributes
 * would give) and the page size; 0 when it cannot be read. */
static size_t default_size(size_t *page)
{
	*page = (size_t)sysconf(_SC_PAGESIZE);
	pthread_attr_t a;
	size_t size = 0;
	if (pthread_getattr_default_np(&a) != 0)
		return 0;
	if (pthread_attr_getstacksize(&a, &size) != 0)
		size = 0;
	pthread_attr_destroy(&a);
	return (size + *page - 1) & ~(*page - 1);
}

/* Back to the cache, its memory given back but for its top; unmapped
 * when the cache is full.  Caller holds lock. */
static void keep_locked(struct fut__tp_stack st)
{
	assert(fut__mutex_held(&lock));
	if (ncache == CACHE_MAX) {
		(void)munmap(st.base, st.size);
		return;
	}
	if (st.size > KEEP_RESIDENT)
		(void)madvise(st.base, st.size - KEEP_RESIDENT, MADV_DONTNEED);
	cache[ncache++] = st;
}

/* Joins the threads of freed pools that have exited; their stacks are
 * kept.  Caller holds lock. */
static void reap_locked(void)
{
	assert(fut__mutex_held(&lock));
	for (unsigned i = 0; i < nreap;) {
		if (pthread_tryjoin_np(reaps[i].thread, NULL) == 0) {
			keep_locked(reaps[i].stack);
			reaps[i] = reaps[--nreap];
		} else {
			i++;
		}
	}
}

/* The lock is taken around fork(): a child forked while another thread
 * held it would find it held for good (that thread is not there).  The
 * threads of freed pools that have exited are joined first: a child
 * would inherit them unjoined, and a leak checker there (ThreadSanitizer
 * at the child's _exit) reports each as leaked. */
static void fork_prepare(void)
{
	pthread_mutex_lock(&lock);
	reap_locked();
}

static void fork_done(void)
{
	pthread_mutex_unlock(&lock);
}

/* The threads to join are the parent's, none of them this process's: a
 * join of one would read the child's copy of its descriptor (and "join"
 * one that had exited).  They are forgotten; the copies of their stacks
 * stay mapped, as they were: the thread that forked may run on one, and
 * what another held there (a wait's nodes, linked into futures) stays
 * readable. */
static void fork_child(void)
{
	nreap = 0;
	pthread_mutex_unlock(&lock);
}

__attribute__((constructor)) static void guard_lock(void)
{
	(void)pthread_atfork(fork_prepare, fork_done, fork_child);
}

/* Runs at process exit (or library unload): the threads of freed pools
 * that have exited are joined, so that nothing of theirs (glibc's TLS
 * block for the thread) outlives the process's last word on memory. */
__attribute__((destructor)) static void reap_at_exit(void)
{
	pthread_mutex_lock(&lock);
	reap_locked();
	pthread_mutex_unlock(&lock);
}

/* A stack of `size` bytes: a kept one, or a new mapping with a guard
 * page at its bottom.  false when none can be had. */
static bool take(size_t size, size_t page, struct fut__tp_stack *st)
{
	pthread_mutex_lock(&lock);
	reap_locked();
	for (unsigned i = ncache; i-- > 0;) {
		if (cache[i].size == size) {
			*st = cache[i];
			cache[i] = cache[--ncache];
			pthread_mutex_unlock(&lock);
			return true;
		}
	}
	pthread_mutex_unlock(&lock);
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
		       -1, 0);
	if (m == MAP_FAILED)
		return false;
	if (mprotect(m, page, PROT_NONE) != 0) {
		(void)munmap(m, size);
		return false;
	}
	*st = (struct fut__tp_stack){ .base = m, .size = size };
	return true;
}

/* Test hook (fut__tp_test_fail_start): ms to wait before refusing a
 * start, -1 for none; starts to let through before that one. */
static _Atomic long fail_ms = -1;
static _Atomic unsigned fail_after;

void fut__tp_test_fail_start(unsigned after, long ms)
{
	atomic_store(&fail_after, after);
	atomic_store(&fail_ms, ms);
}

/* Whether the test hook refuses this start (after holding it). */
static bool start_refused(void)
{
	unsigned a = atomic_load(&fail_after);
	while (a > 0)
		if (atomic_compare_exchange_weak(&fail_after, &a, a - 1))
			return false;
	long ms = atomic_exchange(&fail_ms, -1);
	if (ms < 0)
		return false;
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
	return true;
}

/* pthread_create with the new thread's signal mask `mask`: set in the
 * attributes (glibc 2.32 on: no system call more), or else around the
 * create in the starter. */
static int start_masked(pthread_t *th, pthread_attr_t *a, void *(*fn)(void *),
			void *arg, const sigset_t *mask)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
	if (pthread_attr_setsigmask_np(a, mask) == 0)
		return pthread_create(th, a, fn, arg);
#endif
	sigset_t old;
	if (pthread_sigmask(SIG_SETMASK, mask, &old) != 0)
		return pthread_create(th, a, fn, arg);
	int rc = pthread_create(th, a, fn, arg);
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int fut__tp_thread_start(pthread_t *th, void *(*fn)(void *), void *arg,
			 struct fut__tp_stack *st, const cpu_set_t *cpus,
			 const sigset_t *mask)
{
	*st = (struct fut__tp_stack){ 0 };
	if (FUT__UNLIKELY(atomic_load_explicit(&fail_ms,
					       memory_order_relaxed) >= 0) &&
	    start_refused())
		return EAGAIN;
	size_t page = 0;
	size_t size = default_size(&page);
	pthread_attr_t a;
	if (pthread_attr_init(&a) != 0)
		return pthread_create(th, NULL, fn, arg);
	bool ours = size > 2 * page && take(size, page, st);
	/* The stack starts above the guard page. */
	if (ours && pthread_attr_setstack(&a, (char *)st->base + page,
					  st->size - page) != 0) {
		fut__tp_thread_joined(st);
		ours = false;
	}
	bool placed = cpus != NULL &&
		      pthread_attr_setaffinity_np(&a, sizeof(*cpus), cpus) == 0;
	int rc = start_masked(th, &a, fn, arg, mask);
	pthread_attr_destroy(&a);
	if (ours && rc != 0)
		fut__tp_thread_joined(st);
	if (rc == EINVAL && placed) /* the cpus were taken away meanwhile */
		return fut__tp_thread_start(th, fn, arg, st, NULL, mask);
	return rc;
}

void fut__tp_thread_joined(struct fut__tp_stack *st)
{
	if (st->base == NULL)
		return;
	pthread_mutex_lock(&lock);
	keep_locked(*st);
	pthread_mutex_unlock(&lock);
	*st = (struct fut__tp_stack){ 0 };
}

void fut__tp_thread_abandon(pthread_t th, struct fut__tp_stack *st)
{
	if (st->base == NULL) { /* glibc's stack: it frees it */
		pthread_detach(th);
		return;
	}
	pthread_mutex_lock(&lock);
	reap_locked();
	bool listed = nreap < REAP_MAX;
	if (listed)
		reaps[nreap++] = (struct reap){ .thread = th, .stack = *st };
	pthread_mutex_unlock(&lock);
	if (!listed) /* never joined: its stack stays mapped */
		pthread_detach(th);
	*st = (struct fut__tp_stack){ 0 };
}
