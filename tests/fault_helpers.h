/*
 * fault_helpers.h: what the fault-injection tests share (test_faults.c,
 * test_pp_alloc.c and test_pp_faults.c, the latter two through
 * pp_test.h): the allocation-failure sweep, the signal storm, and whether
 * valgrind runs us.  Include it after <cmocka.h> and "internal.h".
 * Functions are static inline: each file uses some of them.
 */
#ifndef FUT_TEST_FAULT_HELPERS_H
#define FUT_TEST_FAULT_HELPERS_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "test_env.h"

/* The lowest fd number open(2) would give now (RLIMIT_NOFILE bounds fd
 * numbers: a limit there leaves none to open), or -1. */
static inline int lowest_free_fd(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || close(fd) != 0)
		return -1;
	return fd;
}

/* ------------------------------------------------------------------ */
/* The sweep                                                           */

struct sweep_op {
	/* Runs the operation once. */
	int (*run)(void *ctx);
	/* After each run: injected says whether the failure was injected.
	 * Checks that a failed run left nothing behind, and releases what a
	 * successful run made. */
	void (*after)(void *ctx, int rc, bool injected);
};

/*
 * Runs op with the n-th allocation failing, n = 1, 2, ..., until a run
 * meets no injected failure (it made fewer than n allocations); that run
 * must succeed.  Returns how many runs met an injected failure.
 */
static inline long sweep(const struct sweep_op *op, void *ctx)
{
	for (long n = 1;; n++) {
		assert_true(n < 100000);
		fut__alloc_fail_nth(n);
		int rc = op->run(ctx);
		bool injected = fut__alloc_fail_nth(0) == 0;
		if (!injected)
			assert_int_equal(rc, FUT_OK);
		op->after(ctx, rc, injected);
		if (!injected)
			return n - 1;
	}
}

/* ------------------------------------------------------------------ */
/* A storm of signals                                                  */

/* SIGUSR1s that reached the handler since the storm started. */
static inline _Atomic long *storm_signals_seen(void)
{
	static _Atomic long seen;
	return &seen;
}

static inline void storm_on_sigusr1(int sig)
{
	(void)sig;
	atomic_fetch_add_explicit(storm_signals_seen(), 1,
				  memory_order_relaxed);
}

struct storm {
	pthread_t target; /* the thread that waits */
	pthread_t thread;
	_Atomic bool stop;
	long sent;
	struct sigaction old;
};

/* Every ~50 us: a signal to the waiting thread, then one to the process
 * (which lands in any thread that does not block it). */
static inline void *storm_main(void *arg)
{
	struct storm *s = arg;
	const struct timespec gap = { 0, 50 * 1000 };
	while (!atomic_load(&s->stop)) {
		pthread_kill(s->target, SIGUSR1);
		if (s->sent++ % 2 == 0)
			kill(getpid(), SIGUSR1);
		nanosleep(&gap, NULL); /* EINTR just shortens the gap */
	}
	return NULL;
}

/* Installs a SIGUSR1 handler without SA_RESTART (interrupted calls fail
 * EINTR) and starts the storm at the calling thread. */
static inline void storm_start(struct storm *s)
{
	struct sigaction sa = { 0 };
	sa.sa_handler = storm_on_sigusr1;
	sa.sa_flags = 0;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &s->old), 0);
	atomic_store(storm_signals_seen(), 0);
	s->target = pthread_self();
	atomic_store(&s->stop, false);
	s->sent = 0;
	assert_int_equal(pthread_create(&s->thread, NULL, storm_main, s), 0);
}

/* Stops the storm and puts SIGUSR1's action back.  A signal sent may
 * still be pending: ignoring discards it, so that restoring the default
 * action cannot end the process. */
static inline void storm_stop(struct storm *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	struct sigaction ignore = { 0 };
	ignore.sa_handler = SIG_IGN;
	assert_int_equal(sigaction(SIGUSR1, &ignore, NULL), 0);
	assert_int_equal(sigaction(SIGUSR1, &s->old, NULL), 0);
}

/* Yields every one of fs[n] through an as_completed iterator with short
 * timed nexts, and checks after each yield that its fd polls readable
 * (next would not block) even while signals interrupt the calls. */
static inline void drain_as_completed_checking_fd(fut_future *const *fs,
						  size_t n)
{
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, n), FUT_OK);
	int fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	size_t yielded = 0;
	for (;;) {
		fut_future *f;
		int rc = fut_as_completed_next(it, 0.0001, &f);
		if (rc == FUT_END)
			break;
		assert_int_equal(rc, FUT_OK);
		yielded++;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr;
		do
			pr = poll(&p, 1, 0);
		while (pr < 0 && errno == EINTR);
		assert_int_equal(pr, 1); /* readable: next will not block */
	}
	assert_int_equal(yielded, n);
	fut_as_completed_free(it);
}

/* FUT_CODE_BIT(c): code c in a set of codes. */
#define FUT_CODE_BIT(c) (1u << (c))

/*
 * A signal storm's round on ex: the first half of in[n] (stride bytes
 * each) as one fut_submit_many, the rest one fut_submit_bytes at a time,
 * then fut_wait in short slices until all are done (each slice ends
 * FUT_OK or FUT_ETIMEDOUT), with a short fut_result on fs[probe] between
 * slices whose code must be in `allowed` (FUT_CODE_BITs); then the
 * as_completed drain with its fd check.  The caller checks the results.
 */
static inline void storm_submit_and_wait(fut_executor *ex, fut_fn fn,
					 const void *in, size_t stride,
					 size_t n, fut_future **fs,
					 size_t probe, unsigned allowed)
{
	assert_int_equal(fut_submit_many(ex, fn, in, stride, n / 2, fs),
			 FUT_OK);
	for (size_t i = n / 2; i < n; i++)
		assert_int_equal(fut_submit_bytes(ex, fn,
						  (const char *)in + i * stride,
						  stride, &fs[i]),
				 FUT_OK);
	for (;;) {
		int rc = fut_wait(fs, n, FUT_ALL_COMPLETED, 0.0003);
		assert_true(rc == FUT_OK || rc == FUT_ETIMEDOUT);
		if (rc == FUT_OK)
			break;
		rc = fut_result(fs[probe], 0.0002, NULL);
		assert_true(rc >= 0 && rc < 32 && (allowed & FUT_CODE_BIT(rc)));
	}
	drain_as_completed_checking_fd(fs, n);
}

#endif /* FUT_TEST_FAULT_HELPERS_H */
