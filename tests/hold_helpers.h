/*
 * hold_helpers.h: a process pool's manager thread held in a done
 * callback while a test sets its scene (test_pp_requeue.c,
 * test_pp_rerun.c): the worker runs on meanwhile, and the manager moves
 * nothing (it would take tasks sent behind a long one back after 5 ms).
 * The workers' initializer waits for a flag, so that no task runs before
 * the hold is in place.  Waits are in 1 ms naps, bounded by ROUNDS_1MS
 * (120 s) only so that a bug fails instead of hanging.
 * Functions are static inline: each file uses what it needs.
 */
#ifndef FUT_TEST_HOLD_HELPERS_H
#define FUT_TEST_HOLD_HELPERS_H

#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#define ROUNDS_1MS (120 * 1000) /* 120 s in 1 ms naps */

static inline void nap_1ms(void)
{
	struct timespec ts = { 0, 1000000 };
	(void)nanosleep(&ts, NULL);
}

/* An initializer's wait for *flag (in memory the workers share): 0 once
 * it is set, 1 (the pool breaks) if it never is. */
static inline int wait_for_flag(_Atomic int *flag)
{
	for (long i = 0; atomic_load(flag) == 0; i++) {
		if (i > ROUNDS_1MS)
			return 1;
		nap_1ms();
	}
	return 0;
}

/* The manager thread, held in a done callback until release is posted. */
struct hold {
	sem_t release;
	_Atomic bool held;
};

static inline void hold_manager(fut_future *f, void *ud)
{
	(void)f;
	struct hold *h = ud;
	atomic_store(&h->held, true);
	while (sem_wait(&h->release) != 0 && errno == EINTR)
		;
}

/* Waits until *flag is set (fails the test after ROUNDS_1MS naps). */
static inline void wait_until(_Atomic bool *flag)
{
	for (long i = 0; !atomic_load(flag); i++) {
		assert_true(i < ROUNDS_1MS);
		nap_1ms();
	}
}

#endif /* FUT_TEST_HOLD_HELPERS_H */
