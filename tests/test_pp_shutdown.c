/*
 * test_pp_shutdown.c: a process pool's queued tasks cancelled by
 * shutdowns, and what may happen meanwhile: the twins of
 * test_tp_cancel.c's.
 *
 * - a shutdown with FUT_SHUTDOWN_CANCEL_PENDING returns once every task
 *   not started is cancelled, and one that waits once every task is done,
 *   also while another shutdown cancels the queued jobs it took out;
 * - a done callback run by a shutdown's cancel may free the pool;
 * - a shutdown with FUT_SHUTDOWN_INTERRUPT ends a worker stuck in its
 *   initializer, so that the free returns; so does a pool that broke;
 * - a done callback run by a shutdown's cancel may wait, untimed, for
 *   another task the same shutdown took out of the queue (it hung until
 *   alarm(60) when they were cancelled one at a time: fifteenth session).
 *
 * Found by review on 2026-12-06 (the second fails under ASan only).
 * Timeouts only bound a hang, which then fails.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/mman.h>

#include <cmocka.h>

#include "future.h"
#include "process_pool/pool.h"
#define QUEUED 32
#include "drain_helpers.h"
#include "drained_wait_helpers.h"

/* Sleeps the milliseconds of its input. */
static void nap(fut_task *t)
{
	uint32_t ms = 0;
	memcpy(&ms, fut_task_input(t, NULL), sizeof(ms));
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A pool of one worker busy on a long nap (*busy: its future), with
 * QUEUED tasks queued behind it (one frame at a time: they stay in the
 * pool's queue, where a shutdown takes them out itself). */
static fut_executor *busy_pool(fut_future **busy, fut_future **queued)
{
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_process_pool_new(&ex,
				     &(fut_process_pool_opts){ .max_workers = 1,
							       .chunk = 1 }),
		FUT_OK);
	uint32_t ms = 60000; /* interrupted at the end */
	assert_int_equal(fut_submit_bytes(ex, nap, &ms, sizeof(ms), busy),
			 FUT_OK);
	while (fut_state(*busy) != FUT_RUNNING)
		sched_yield();
	ms = 0;
	for (int i = 0; i < QUEUED; i++)
		assert_int_equal(fut_submit_bytes(ex, nap, &ms, sizeof(ms),
						  &queued[i]),
				 FUT_OK);
	return ex;
}

/* ------------------------------------------------------------------ */
/* Shutdowns at once                                                   */

/* The first queued task that shutdown A cancels itself (it took it out
 * of the queue) holds A in its callback until `go`. */

static void hold_canceller(fut_future *f, void *ud)
{
	(void)f;
	struct held_drain *h = ud;
	/* Not the manager's (a task it took back from the worker). */
	if (!pthread_equal(pthread_self(), h->a) ||
	    atomic_exchange(&h->held, true))
		return;
	sem_post(&h->in_callback);
	(void)sem_wait_bounded(&h->go);
}

/* Whether the pool's manager thread has ended (the pool is shut down
 * and nothing is left for it). */
static bool manager_done(fut_executor *ex)
{
	struct ppool *p = (struct ppool *)(void *)ex;
	pthread_mutex_lock(&p->lock);
	bool done = p->manager_done;
	pthread_mutex_unlock(&p->lock);
	return done;
}

static void check_shutdown_beside_a_drain(unsigned b_flags)
{
	fut_future *busy = NULL;
	struct held_drain h = { .b_flags = b_flags };
	h.ex = busy_pool(&busy, h.queued);
	sem_init(&h.in_callback, 0, 0);
	sem_init(&h.go, 0, 0);
	for (int i = 0; i < QUEUED; i++)
		assert_int_equal(fut_add_done_callback(h.queued[i],
						       hold_canceller, &h),
				 FUT_OK);
	assert_int_equal(pthread_create(&h.a, NULL, shutdown_a, &h), 0);
	assert_true(sem_wait_bounded(&h.in_callback));
	/* The queue is empty, the running task ends, the manager too: B
	 * has nothing to wait for but A. */
	assert_int_equal(fut_interrupt(busy), FUT_OK);
	assert_int_equal(fut_result(busy, 60.0, NULL), FUT_ECANCELLED);
	while (!manager_done(h.ex))
		sched_yield();
	held_drain_race(&h);
	fut_release(busy);
	fut_executor_free(h.ex);
}

/* Shutdown A takes the queued tasks out, then cancels them one by one,
 * running their callbacks; a shutdown B meanwhile found the queue empty
 * and returned with A's futures still pending (63 of 64 in a run). */
static void test_cancel_pending_beside_another_drain_returns_when_all_cancelled(
	void **state)
{
	(void)state;
	check_shutdown_beside_a_drain(FUT_SHUTDOWN_CANCEL_PENDING |
				      FUT_SHUTDOWN_NOWAIT);
}

static void
test_shutdown_wait_beside_another_drain_returns_when_all_done(void **state)
{
	(void)state;
	check_shutdown_beside_a_drain(0);
}

/* ------------------------------------------------------------------ */
/* Freed from a callback                                               */

struct last_frees {
	fut_executor *ex;
	_Atomic int left;
};

static void count_down(fut_future *f, void *ud)
{
	(void)f;
	struct last_frees *l = ud;
	if (atomic_fetch_sub(&l->left, 1) == 1)
		fut_executor_free(l->ex);
}

/* The last queued future's callback frees the pool while a shutdown
 * cancels it: the shutdown went on in freed memory (ASan: heap-use-
 * after-free in pp_shutdown, 10 runs of 10). */
static void test_a_cancelled_tasks_callback_may_free_the_pool(void **state)
{
	(void)state;
	fut_future *busy = NULL, *queued[QUEUED];
	struct last_frees l = { .left = QUEUED };
	l.ex = busy_pool(&busy, queued);
	for (int i = 0; i < QUEUED; i++) {
		assert_int_equal(fut_add_done_callback(queued[i], count_down,
						       &l),
				 FUT_OK);
		fut_release(queued[i]);
	}
	fut_release(busy);
	/* INTERRUPT: the callback's free waits for the running task. */
	assert_int_equal(fut_executor_shutdown(l.ex,
					       FUT_SHUTDOWN_CANCEL_PENDING |
						       FUT_SHUTDOWN_INTERRUPT |
						       FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	/* The manager may take some back: all cancelled in the end. */
	int64_t waited = 0;
	while (atomic_load(&l.left) > 0 && waited++ < 60000)
		usleep(1000);
	assert_int_equal(atomic_load(&l.left), 0);
}

/* ------------------------------------------------------------------ */
/* A worker stuck in its initializer                                   */

/* Says it runs (in the shared word initarg points to), then never
 * returns. */
static int stuck_initializer(void *initarg)
{
	atomic_store((_Atomic int *)initarg, 1);
	for (;;)
		pause();
	return 0;
}

static void *shutdown_and_free(void *arg)
{
	fut_executor *ex = arg;
	(void)fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING |
						FUT_SHUTDOWN_INTERRUPT);
	fut_executor_free(ex);
	return NULL;
}

static void *just_free(void *arg)
{
	fut_executor_free(arg);
	return NULL;
}

/* Joins th within 60 s (only so that a hang fails): its return code. */
static int join_bounded(pthread_t th)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 60;
	int rc;
	while ((rc = pthread_timedjoin_np(th, NULL, &until)) == EINTR)
		;
	return rc;
}

/* A worker whose initializer never returns, one task queued for it:
 * shutdown(CANCEL_PENDING | INTERRUPT) cancels the task, but killed only
 * workers with a task, so the worker lived and the shutdown (and the
 * free) waited for it for ever. */
static void
test_shutdown_interrupt_ends_a_worker_stuck_in_its_initializer(void **state)
{
	(void)state;
	_Atomic int *ran = mmap(NULL, sizeof(*ran), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(ran != MAP_FAILED);
	atomic_init(ran, 0);
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_process_pool_new(&ex,
				     &(fut_process_pool_opts){
					     .max_workers = 1,
					     .initializer = stuck_initializer,
					     .initarg = (void *)ran }),
		FUT_OK);
	uint32_t ms = 0;
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, nap, &ms, sizeof(ms), &f),
			 FUT_OK);
	/* The worker is in its initializer. */
	for (int i = 0; i < 60000 && atomic_load(ran) == 0; i++)
		usleep(1000);
	assert_int_equal(atomic_load(ran), 1);
	/* The hang is bounded (a bug fails instead). */
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, shutdown_and_free, ex), 0);
	assert_int_equal(join_bounded(th), 0);
	assert_int_equal(fut_state(f), FUT_CANCELLED);
	fut_release(f);
	(void)munmap((void *)ran, sizeof(*ran));
}

/* The first worker's initializer fails (it breaks the pool) once a
 * second one runs (a slow machine might break the pool before it asked
 * for the second), the others' never return. */
static int first_fails_others_stick(void *initarg)
{
	_Atomic int *ran = initarg;
	if (atomic_fetch_add(ran, 1) == 0) {
		for (int i = 0; i < 60000 && atomic_load(ran) < 2; i++)
			usleep(1000);
		return 1;
	}
	for (;;)
		pause();
	return 0;
}

/* Two workers: one's initializer fails and breaks the pool, the other's
 * never returns.  The break failed the queued tasks, told the workers
 * with no task to exit once they read EOF, and killed none of them: the
 * one in its initializer never read, and the free (a plain one, no
 * interrupt) waited for it for ever.  A broken pool's workers are of no
 * more use, as Python's terminate_broken() says of them. */
static void
test_a_broken_pool_ends_a_worker_stuck_in_its_initializer(void **state)
{
	(void)state;
	_Atomic int *ran = mmap(NULL, sizeof(*ran), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(ran != MAP_FAILED);
	atomic_init(ran, 0);
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_process_pool_new(&ex,
				     &(fut_process_pool_opts){
					     .max_workers = 2,
					     .initializer =
						     first_fails_others_stick,
					     .initarg = (void *)ran }),
		FUT_OK);
	uint32_t ms = 0;
	fut_future *f[2] = { NULL, NULL };
	for (int i = 0; i < 2; i++)
		assert_int_equal(fut_submit_bytes(ex, nap, &ms, sizeof(ms),
						  &f[i]),
				 FUT_OK);
	/* Both are in their initializers (the first may have failed). */
	for (int i = 0; i < 60000 && atomic_load(ran) < 2; i++)
		usleep(1000);
	assert_int_equal(atomic_load(ran), 2);
	for (int i = 0; i < 2; i++)
		assert_int_equal(fut_result(f[i], 60.0, NULL), FUT_EBROKEN);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, just_free, ex), 0);
	assert_int_equal(join_bounded(th), 0);
	for (int i = 0; i < 2; i++)
		fut_release(f[i]);
	(void)munmap((void *)ran, sizeof(*ran));
}

/* ------------------------------------------------------------------ */
/* A drained task's callback waits for another task of its drain       */

/* Whether f is in ex's queue, where a shutdown takes it out itself (not
 * sent ahead to the worker, which the manager takes back). */
static bool in_queue(fut_executor *ex, fut_future *f)
{
	struct ppool *p = (struct ppool *)(void *)ex;
	bool found = false;
	pthread_mutex_lock(&p->lock);
	for (struct pp_job *j = p->qhead; j != NULL && !found; j = j->next)
		found = &j->fut == f;
	pthread_mutex_unlock(&p->lock);
	return found;
}

/* busy_pool(), then j1 and j2 queued with their callbacks; this
 * thread's shutdown (flags) takes them out and runs their callbacks
 * here. */
static void check_drained_callback_waits(int how, unsigned flags)
{
	dj_reset(how);
	fut_future *busy = NULL, *queued[QUEUED];
	fut_executor *ex = busy_pool(&busy, queued);
	uint32_t ms = 0;
	assert_int_equal(fut_submit_bytes(ex, nap, &ms, sizeof(ms), &dj1),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(ex, nap, &ms, sizeof(ms), &dj2),
			 FUT_OK);
	dj_add_callbacks();
	assert_true(in_queue(ex, dj1) && in_queue(ex, dj2));
	alarm(60); /* before the fix: a hang, in j1's callback */
	assert_int_equal(fut_executor_shutdown(ex, flags), FUT_OK);
	alarm(0);
	check_dj(FUT_ECANCELLED); /* j2 cancelled before the callback */
	if (flags & FUT_SHUTDOWN_NOWAIT)
		(void)fut_interrupt(busy);
	assert_int_equal(fut_result(busy, 60.0, NULL), FUT_ECANCELLED);
	for (int i = 0; i < QUEUED; i++) {
		/* Cancelled, or run where one was sent ahead. */
		(void)fut_result(queued[i], 60.0, NULL);
		fut_release(queued[i]);
	}
	fut_release(busy);
	fut_executor_free(ex);
}

/* A shutdown(CANCEL_PENDING) cancelled the queued tasks it took out one
 * at a time, each followed by its callbacks: a callback of j1 that
 * waited, with no timeout, for j2 (taken out behind it) waited for the
 * very call that ran it, for good (review, 2026-12-07, fifteenth
 * session: the twin of the thread pool's).  Every task is cancelled
 * first now, then the callbacks run, task after task. */
static void test_a_drained_callback_may_wait_for_its_drains_tasks(void **state)
{
	(void)state;
	for (int how = 0; how < BY_KINDS; how++) {
		check_drained_callback_waits(how, FUT_SHUTDOWN_CANCEL_PENDING |
							  FUT_SHUTDOWN_NOWAIT);
		check_drained_callback_waits(how,
					     FUT_SHUTDOWN_CANCEL_PENDING |
						     FUT_SHUTDOWN_INTERRUPT);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_cancel_pending_beside_another_drain_returns_when_all_cancelled),
		cmocka_unit_test(
			test_shutdown_wait_beside_another_drain_returns_when_all_done),
		cmocka_unit_test(
			test_a_cancelled_tasks_callback_may_free_the_pool),
		cmocka_unit_test(
			test_shutdown_interrupt_ends_a_worker_stuck_in_its_initializer),
		cmocka_unit_test(
			test_a_broken_pool_ends_a_worker_stuck_in_its_initializer),
		cmocka_unit_test(
			test_a_drained_callback_may_wait_for_its_drains_tasks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
