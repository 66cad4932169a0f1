/*
 * drain_helpers.h: two shutdowns at once, for test_tp_cancel.c and
 * test_pp_shutdown.c.  Shutdown A (FUT_SHUTDOWN_CANCEL_PENDING) takes the
 * queued tasks out and cancels them one by one, and a done callback of
 * the file's own holds it there until `go`; shutdown B, started then,
 * finds the queue empty and must not return before A's futures are
 * done.  The includer defines QUEUED (the tasks queued) first.
 * Functions are static inline: each file uses what it needs.
 */
#ifndef FUT_TEST_DRAIN_HELPERS_H
#define FUT_TEST_DRAIN_HELPERS_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "proc_helpers.h"

/* Waits for s up to 60 s (only so that a bug fails instead of hanging):
 * true if it came. */
static inline bool sem_wait_bounded(sem_t *s)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 60;
	int rc;
	while ((rc = sem_timedwait(s, &until)) != 0 && errno == EINTR)
		;
	return rc == 0;
}

struct held_drain {
	fut_executor *ex;
	fut_future *queued[QUEUED];
	pthread_t a, b;
	sem_t in_callback, go;
	_Atomic bool held;
	unsigned b_flags;
	_Atomic pid_t b_tid;
	_Atomic bool b_returned;
	int b_not_done; /* futures not done when B returned */
};

static inline void *shutdown_a(void *arg)
{
	struct held_drain *h = arg;
	(void)fut_executor_shutdown(h->ex, FUT_SHUTDOWN_CANCEL_PENDING |
						   FUT_SHUTDOWN_NOWAIT);
	return NULL;
}

static inline void *shutdown_b(void *arg)
{
	struct held_drain *h = arg;
	atomic_store(&h->b_tid, gettid());
	assert_int_equal(fut_executor_shutdown(h->ex, h->b_flags), FUT_OK);
	for (int i = 0; i < QUEUED; i++)
		h->b_not_done += !fut_done(h->queued[i]);
	atomic_store(&h->b_returned, true);
	return NULL;
}

/* Whether thread tid sleeps (or is gone). */
static inline bool thread_sleeps(pid_t tid)
{
	char id[16], st = '?';
	int ppid;
	snprintf(id, sizeof(id), "%d", (int)tid);
	return !read_stat(id, &ppid, &st) || st == 'S';
}

/* With A held in its callback and nothing else left to wait for: starts
 * B, lets A go once B returned (before the fix, at once) or sleeps, and
 * checks that every queued future was done when B returned, cancelled,
 * then releases them.  A thread that sleeps for another reason only
 * lets A go early, which cannot fail a correct pool. */
static inline void held_drain_race(struct held_drain *h)
{
	assert_int_equal(pthread_create(&h->b, NULL, shutdown_b, h), 0);
	while (!atomic_load(&h->b_returned) &&
	       (atomic_load(&h->b_tid) == 0 ||
		!thread_sleeps(atomic_load(&h->b_tid))))
		sched_yield();
	sem_post(&h->go);
	pthread_join(h->b, NULL);
	pthread_join(h->a, NULL);
	assert_int_equal(h->b_not_done, 0);
	for (int i = 0; i < QUEUED; i++) {
		assert_int_equal(fut_error(h->queued[i]), FUT_ECANCELLED);
		fut_release(h->queued[i]);
	}
	sem_destroy(&h->in_callback);
	sem_destroy(&h->go);
}

#endif /* FUT_TEST_DRAIN_HELPERS_H */
