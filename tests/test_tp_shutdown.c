/*
 * test_tp_shutdown.c: the thread pool's shutdown and thread starts, as a
 * reviewer's adversarial programs found them (2026-12-07, thirteenth
 * session); each test failed before its fix:
 *
 * - shutdown(CANCEL_PENDING | INTERRUPT), with or without NOWAIT, while
 *   a task runs until interrupted and a queued job's done callback frees
 *   the pool (or shuts it down and waits): the callback ran before the
 *   interrupt, waited for the task, and the call never returned.
 *
 * - a task that waits (untimed) for a queued job of its own pool, after
 *   a CANCEL_PENDING shutdown drained it and while that shutdown runs the
 *   callback of a job drained before it: the task ran the job inline,
 *   and it ended finished, not cancelled.
 *
 * - the same, where that callback waits for the task, which waits for the
 *   drained job: the task cancels the job itself (refused and left
 *   pending, it was a deadlock).
 *
 * - a task that waits (untimed) for a job a CANCEL_PENDING shutdown
 *   drained, after the pool broke (an initializer failed) while that
 *   shutdown ran an earlier job's callback: the task failed the job
 *   FUT_EBROKEN, as if the break had drained it, and the shutdown
 *   returned with it not cancelled (fourteenth session).
 *
 * - a task that blocks SIGTERM on its own thread and then submits: the
 *   threads its worker started meanwhile kept SIGTERM blocked, for good.
 *
 * - a done callback run by a drain (a shutdown's, in any thread or in a
 *   task, or a failed initializer's break) that waits, untimed, for
 *   another job of the same drain: the drain ended its jobs one at a
 *   time, each with its callbacks, and the wait never returned
 *   (fifteenth session).
 *
 * - a job a waiter runs inline, still queued, drained while it runs: the
 *   drain's second pass ran its waiter list as callbacks, a done
 *   callback while the task ran and a wait's node as one (a crash).
 *
 * alarm() ends a hang as a failure; no test asserts a duration.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/future_int.h"
#include "drained_wait_helpers.h"

#define GUARD_S 60.0 /* a guard against a hang, never a measurement */

/* A pool of `workers` whose threads run `init` first. */
static fut_executor *pool_with_init(size_t workers, int (*init)(void *))
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex,
					     &(fut_thread_pool_opts){
						     .max_workers = workers,
						     .initializer = init }),
			 FUT_OK);
	return ex;
}

static fut_executor *pool_of(size_t workers)
{
	return pool_with_init(workers, NULL);
}

static void wait_running(fut_future *f)
{
	for (int i = 0; i < 60000 && fut_state(f) == FUT_PENDING; i++)
		usleep(1000);
	assert_int_equal(fut_state(f), FUT_RUNNING);
}

static void nothing(fut_task *t)
{
	(void)t;
}

static void until_interrupted(fut_task *t)
{
	for (int i = 0; i < 600000 && !fut_task_cancelled(t); i++)
		usleep(100);
}

/* The pool a callback frees, and how (0: free; 1: shutdown, waiting). */
static fut_executor *cb_pool;
static int cb_mode;

static void end_pool_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	if (cb_mode == 0)
		fut_executor_free(cb_pool);
	else
		(void)fut_executor_shutdown(cb_pool, 0);
}

static void
test_a_drained_callback_that_ends_the_pool_sees_the_interrupt(void **state)
{
	(void)state;
	for (int mode = 0; mode < 4; mode++) {
		alarm(60);
		cb_mode = mode & 1;
		cb_pool = pool_of(1);
		fut_future *run = NULL, *queued = NULL;
		assert_int_equal(fut_submit(cb_pool, until_interrupted, NULL,
					    &run),
				 FUT_OK);
		wait_running(run);
		assert_int_equal(fut_submit(cb_pool, nothing, NULL, &queued),
				 FUT_OK);
		assert_int_equal(fut_add_done_callback(queued, end_pool_cb,
						       NULL),
				 FUT_OK);
		unsigned flags = FUT_SHUTDOWN_CANCEL_PENDING |
				 FUT_SHUTDOWN_INTERRUPT |
				 (mode & 2 ? FUT_SHUTDOWN_NOWAIT : 0);
		assert_int_equal(fut_executor_shutdown(cb_pool, flags), FUT_OK);
		assert_true(fut_cancelled(queued));
		assert_int_equal(fut_result(run, GUARD_S, NULL), FUT_OK);
		fut_release(run);
		fut_release(queued);
		if (cb_mode == 1)
			fut_executor_free(cb_pool);
		alarm(0);
	}
}

static fut_executor *drain_pool;
static fut_future *first, *second;
static _Atomic bool in_first_cb, second_ran;

static void mark_ran(fut_task *t)
{
	(void)t;
	atomic_store(&second_ran, true);
}

/* The drain's first callback: slow, so the task waits meanwhile. */
static void slow_first_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&in_first_cb, true);
	usleep(200 * 1000);
}

/* Waits, untimed, for `second` once the drain is in the first's
 * callback; returns what the wait gave. */
static void wait_for_second(fut_task *t)
{
	for (int i = 0; i < 60000 && !atomic_load(&in_first_cb); i++)
		usleep(1000);
	int rc = fut_result(second, -1, NULL);
	fut_task_return(t, (void *)(intptr_t)rc);
}

/* The drain scene (alarm set): a 1-worker pool runs *waiter (which waits
 * for `second`), `first` (done callback cb) and `second` are queued, then
 * shutdown(CANCEL_PENDING | NOWAIT). */
static void drain_behind(fut_future **waiter, fut_callback cb)
{
	alarm(60);
	atomic_store(&in_first_cb, false);
	atomic_store(&second_ran, false);
	drain_pool = pool_of(1);
	assert_int_equal(fut_submit(drain_pool, wait_for_second, NULL, waiter),
			 FUT_OK);
	wait_running(*waiter);
	assert_int_equal(fut_submit(drain_pool, nothing, NULL, &first), FUT_OK);
	assert_int_equal(fut_submit(drain_pool, mark_ran, NULL, &second),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(first, cb, NULL), FUT_OK);
	assert_int_equal(fut_executor_shutdown(drain_pool,
					       FUT_SHUTDOWN_CANCEL_PENDING |
						       FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
}

static void test_a_drained_job_never_starts_inline(void **state)
{
	(void)state;
	fut_future *waiter = NULL;
	drain_behind(&waiter, slow_first_cb);
	assert_true(fut_cancelled(first));
	assert_true(fut_cancelled(second));
	void *rc = NULL;
	assert_int_equal(fut_result(waiter, GUARD_S, &rc), FUT_OK);
	assert_int_equal((int)(intptr_t)rc, FUT_ECANCELLED);
	assert_false(atomic_load(&second_ran));
	fut_release(waiter);
	fut_release(first);
	fut_release(second);
	fut_executor_free(drain_pool);
	alarm(0);
}

static fut_future *cycle_task;

/* The drain's first callback waits for the task that waits for the
 * second drained job. */
static void wait_for_task_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&in_first_cb, true);
	(void)fut_result(cycle_task, GUARD_S, NULL);
}

/*
 * The drain's callback of the first job waits for task T, and T waits
 * (untimed) for the second drained job: T cancels it itself (the drain
 * would only after that callback).  With the second job refused to T
 * but left pending (this fix's first form) that was a deadlock; before
 * it, T ran the job (found by review, 2026-12-07).
 */
static void
test_a_waiter_cancels_a_drained_job_its_drain_waits_behind(void **state)
{
	(void)state;
	drain_behind(&cycle_task, wait_for_task_cb);
	void *rc = NULL;
	assert_int_equal(fut_result(cycle_task, GUARD_S, &rc), FUT_OK);
	assert_int_equal((int)(intptr_t)rc, FUT_ECANCELLED);
	assert_true(fut_cancelled(first));
	assert_true(fut_cancelled(second));
	assert_false(atomic_load(&second_ran));
	fut_release(cycle_task);
	fut_release(first);
	fut_release(second);
	fut_executor_free(drain_pool);
	alarm(0);
}

static _Atomic int inits;
/* The job the break's waiter waits for, once submitted (NULL: the break
 * refused it); set: it was. */
static fut_future *_Atomic broken_second;
static _Atomic bool broken_second_set;

/* Waits, untimed, for broken_second once the drain is in the first's
 * callback and it is set; returns what the wait gave. */
static void wait_for_broken_second(fut_task *t)
{
	for (int i = 0; i < 60000 && !(atomic_load(&in_first_cb) &&
				       atomic_load(&broken_second_set));
	     i++)
		usleep(1000);
	fut_future *f = atomic_load(&broken_second);
	int rc = f != NULL ? fut_result(f, -1, NULL) : FUT_EBROKEN;
	fut_task_return(t, (void *)(intptr_t)rc);
}

/* The first thread's initializer passes, the second's fails: a break. */
static int second_init_fails(void *arg)
{
	(void)arg;
	return atomic_fetch_add(&inits, 1) == 0 ? 0 : -1;
}

/*
 * A break (an initializer failed) drains the queue: a task that waits for
 * a job of that drain, while the drain runs an earlier job's slow
 * callback, sees it end FUT_EBROKEN, as the drain ends it.  Before (found
 * by review, 2026-12-07) the waiter cancelled it: FUT_ECANCELLED.
 */
static void test_a_waiter_ends_a_job_a_break_drained_as_broken(void **state)
{
	(void)state;
	alarm(60);
	atomic_store(&inits, 0);
	atomic_store(&in_first_cb, false);
	atomic_store(&second_ran, false);
	atomic_store(&broken_second, NULL);
	atomic_store(&broken_second_set, false);
	drain_pool = pool_with_init(2, second_init_fails);
	fut_future *waiter = NULL;
	assert_int_equal(fut_submit(drain_pool, wait_for_broken_second, NULL,
				    &waiter),
			 FUT_OK);
	wait_running(waiter);
	assert_int_equal(fut_submit(drain_pool, nothing, NULL, &first), FUT_OK);
	assert_int_equal(fut_add_done_callback(first, slow_first_cb, NULL),
			 FUT_OK);
	fut_future *f = NULL;
	int rc = fut_submit(drain_pool, mark_ran, NULL, &f);
	assert_true(rc == FUT_OK || rc == FUT_EBROKEN); /* EBROKEN: the
							  * break came first */
	atomic_store(&broken_second, rc == FUT_OK ? f : NULL);
	atomic_store(&broken_second_set, true);
	void *got = NULL;
	assert_int_equal(fut_result(waiter, GUARD_S, &got), FUT_OK);
	assert_int_equal(fut_result(first, GUARD_S, NULL), FUT_EBROKEN);
	assert_int_equal((int)(intptr_t)got, FUT_EBROKEN);
	if (f != NULL) {
		assert_int_equal(fut_result(f, 0, NULL), FUT_EBROKEN);
		assert_false(atomic_load(&second_ran));
		fut_release(f);
	}
	fut_release(waiter);
	fut_release(first);
	fut_executor_free(drain_pool);
	alarm(0);
}

static _Atomic bool init_go, t_go;

/* The first thread's initializer passes; the second's waits until told,
 * then fails: a break, while a shutdown's drain runs a callback. */
static int second_init_fails_when_told(void *arg)
{
	(void)arg;
	if (atomic_fetch_add(&inits, 1) == 0)
		return 0;
	for (int i = 0; i < 60000 && !atomic_load(&init_go); i++)
		usleep(1000);
	return -1;
}

/* Waits, untimed, for `second` once told; returns what the wait gave. */
static void wait_for_second_when_told(fut_task *t)
{
	for (int i = 0; i < 60000 && !atomic_load(&t_go); i++)
		usleep(1000);
	int rc = fut_result(second, -1, NULL);
	fut_task_return(t, (void *)(intptr_t)rc);
}

/* The shutdown's drain cancels `first`: its callback breaks the pool
 * (the second initializer fails), then lets the task wait for `second`,
 * which the same drain took, and waits until `second` is done. */
static void break_then_wait_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&init_go, true);
	fut_future *g = NULL;
	int rc = FUT_ESHUTDOWN;
	for (int i = 0; i < 60000 && rc != FUT_EBROKEN; i++) {
		rc = fut_submit(drain_pool, nothing, NULL, &g);
		if (rc == FUT_OK) /* cannot be: the queue is closed */
			fut_release(g);
		if (rc != FUT_EBROKEN)
			usleep(1000);
	}
	atomic_store(&t_go, true);
	(void)fut_wait(&second, 1, FUT_ALL_COMPLETED, GUARD_S);
}

/*
 * shutdown(CANCEL_PENDING) drains `second`; before it cancels it (it
 * runs `first`'s callback) an initializer fails and the pool breaks, and
 * a task waits, untimed, for `second`: the task ended it as the break's
 * drain would, FUT_EBROKEN, because it read p->broken rather than which
 * drain took the job, and the shutdown returned with a drained future
 * not cancelled (review, 2026-12-07, fourteenth session).
 */
static void
test_a_job_a_shutdown_drained_is_cancelled_despite_a_break(void **state)
{
	(void)state;
	alarm(60);
	atomic_store(&inits, 0);
	atomic_store(&init_go, false);
	atomic_store(&t_go, false);
	atomic_store(&second_ran, false);
	drain_pool = pool_with_init(2, second_init_fails_when_told);
	fut_future *waiter = NULL;
	assert_int_equal(fut_submit(drain_pool, wait_for_second_when_told, NULL,
				    &waiter),
			 FUT_OK);
	wait_running(waiter);
	/* The second thread starts for them and waits in its initializer. */
	assert_int_equal(fut_submit(drain_pool, nothing, NULL, &first), FUT_OK);
	assert_int_equal(fut_submit(drain_pool, mark_ran, NULL, &second),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(first, break_then_wait_cb, NULL),
			 FUT_OK);
	assert_int_equal(fut_executor_shutdown(drain_pool,
					       FUT_SHUTDOWN_CANCEL_PENDING |
						       FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	bool cancelled = fut_cancelled(second);
	void *rc = NULL;
	assert_int_equal(fut_result(waiter, GUARD_S, &rc), FUT_OK);
	assert_true(fut_cancelled(first));
	assert_false(atomic_load(&second_ran));
	fut_release(waiter);
	fut_release(first);
	fut_release(second);
	fut_executor_free(drain_pool);
	alarm(0);
	assert_true(cancelled);
	assert_int_equal((int)(intptr_t)rc, FUT_ECANCELLED);
}

static fut_executor *mask_pool;
static _Atomic int masked_runs;

static void check_mask(fut_task *t)
{
	(void)t;
	usleep(2000);
	sigset_t m;
	pthread_sigmask(SIG_BLOCK, NULL, &m);
	if (sigismember(&m, SIGTERM))
		atomic_fetch_add(&masked_runs, 1);
}

/* Blocks SIGTERM on its own thread while it submits 8 (every worker busy:
 * its thread starts new ones), then waits for them. */
static void submit_masked(fut_task *t)
{
	(void)t;
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &old);
	fut_future *fs[8];
	for (int i = 0; i < 8; i++)
		if (fut_submit(mask_pool, check_mask, NULL, &fs[i]) != FUT_OK)
			fs[i] = NULL;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (int i = 0; i < 8; i++)
		if (fs[i] != NULL) {
			(void)fut_result(fs[i], GUARD_S, NULL);
			fut_release(fs[i]);
		}
}

static void test_a_task_signal_mask_reaches_no_thread_it_starts(void **state)
{
	(void)state;
	atomic_store(&masked_runs, 0);
	mask_pool = pool_of(8);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(mask_pool, submit_masked, NULL, &f),
			 FUT_OK);
	assert_int_equal(fut_result(f, GUARD_S, NULL), FUT_OK);
	fut_release(f);
	/* And tasks submitted later, from here (SIGTERM unblocked). */
	fut_future *g[8];
	for (int i = 0; i < 8; i++)
		assert_int_equal(fut_submit(mask_pool, check_mask, NULL, &g[i]),
				 FUT_OK);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(fut_result(g[i], GUARD_S, NULL), FUT_OK);
		fut_release(g[i]);
	}
	fut_executor_free(mask_pool);
	assert_int_equal(atomic_load(&masked_runs), 0);
}

/* ------------------------------------------------------------------ */
/* A drained job's callback waits for another job of its drain         */

static _Atomic bool dj_go; /* the drain may begin */

/* Queues j1 and j2 on ex (a task, or an initializer, holds its one
 * worker) with their callbacks; how: j1's first callback's wait. */
static void queue_dj(fut_executor *ex, int how)
{
	dj_reset(how);
	assert_int_equal(fut_submit(ex, nothing, NULL, &dj1), FUT_OK);
	assert_int_equal(fut_submit(ex, nothing, NULL, &dj2), FUT_OK);
	dj_add_callbacks();
}

static void until_dj_go(fut_task *t)
{
	(void)t;
	for (int i = 0; i < 600000 && !atomic_load(&dj_go); i++)
		usleep(100);
}

/*
 * One worker busy, j1 and j2 queued; this thread shuts the pool down
 * (CANCEL_PENDING | NOWAIT) and j1's callback, run by that drain here,
 * waits untimed for j2.  Before (review, 2026-12-07, fifteenth session)
 * the drain cancelled its jobs one at a time, each with its callbacks:
 * j2 was to be cancelled once that callback returned, which it never
 * did (Python returns: j2 is cancelled first).  Each kind of wait.
 */
static void test_a_drained_callback_may_wait_for_its_drains_jobs(void **state)
{
	(void)state;
	for (int how = 0; how < BY_KINDS; how++) {
		alarm(60);
		atomic_store(&dj_go, false);
		fut_executor *ex = pool_of(1);
		fut_future *busy = NULL;
		assert_int_equal(fut_submit(ex, until_dj_go, NULL, &busy),
				 FUT_OK);
		wait_running(busy);
		queue_dj(ex, how);
		assert_int_equal(
			fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING |
							  FUT_SHUTDOWN_NOWAIT),
			FUT_OK);
		check_dj(FUT_ECANCELLED);
		atomic_store(&dj_go, true);
		assert_int_equal(fut_result(busy, GUARD_S, NULL), FUT_OK);
		fut_release(busy);
		fut_executor_free(ex);
		alarm(0);
	}
}

static fut_executor *dj_pool;

/* Shuts its own pool down (CANCEL_PENDING | NOWAIT) once j1 and j2 are
 * queued: the drain, and j1's callback, run in its worker. */
static void shut_own_pool_when_told(fut_task *t)
{
	until_dj_go(t);
	(void)fut_executor_shutdown(dj_pool, FUT_SHUTDOWN_CANCEL_PENDING |
						     FUT_SHUTDOWN_NOWAIT);
}

/* The same, the drain in a task: a worker that holds its slot, whose
 * fut_result ran (cancelled) a queued job itself, but whose
 * fut_wait(FIRST_COMPLETED) and as_completed wait only (they hung). */
static void test_a_drained_callback_in_a_task_may_wait_too(void **state)
{
	(void)state;
	for (int how = 0; how < BY_KINDS; how++) {
		alarm(60);
		atomic_store(&dj_go, false);
		dj_pool = pool_of(1);
		fut_future *shutter = NULL;
		assert_int_equal(fut_submit(dj_pool, shut_own_pool_when_told,
					    NULL, &shutter),
				 FUT_OK);
		wait_running(shutter);
		queue_dj(dj_pool, how);
		atomic_store(&dj_go, true);
		assert_int_equal(fut_result(shutter, GUARD_S, NULL), FUT_OK);
		check_dj(FUT_ECANCELLED);
		fut_release(shutter);
		fut_executor_free(dj_pool);
		alarm(0);
	}
}

static int init_fails_when_told(void *arg)
{
	(void)arg;
	for (int i = 0; i < 600000 && !atomic_load(&dj_go); i++)
		usleep(100);
	return -1;
}

/* The same, the drain a break's: the initializer fails, and the worker
 * that ran it fails j1 and j2 FUT_EBROKEN and runs their callbacks. */
static void test_a_broken_pools_callback_may_wait_for_its_drain(void **state)
{
	(void)state;
	for (int how = 0; how < BY_KINDS; how++) {
		alarm(60);
		atomic_store(&dj_go, false);
		fut_executor *ex = pool_with_init(1, init_fails_when_told);
		queue_dj(ex, how);
		atomic_store(&dj_go, true);
		/* Its worker has run the callbacks once it exited. */
		assert_int_equal(fut_executor_shutdown(ex, 0), FUT_OK);
		check_dj(FUT_EBROKEN);
		fut_executor_free(ex);
		alarm(0);
	}
}

/* ------------------------------------------------------------------ */
/* A job run inline, drained while it runs                             */

static _Atomic(fut_future *) ib; /* B, which A runs inline */
static _Atomic bool ib_running, ib_go, ib_cb_ran, ib_cb_saw_done;
static _Atomic int ib_cb_runs, ib_wait_rc;

static void ib_task(fut_task *t)
{
	(void)t;
	atomic_store(&ib_running, true);
	for (int i = 0; i < 600000 && !atomic_load(&ib_go); i++)
		usleep(100);
}

/* A: waits, untimed, for B, which it runs inline (the one worker). */
static void ib_waits(fut_task *t)
{
	(void)t;
	fut_future *b;
	for (int i = 0; i < 600000 && (b = atomic_load(&ib)) == NULL; i++)
		usleep(100);
	if (b != NULL)
		(void)fut_result(b, FUT_FOREVER, NULL);
}

static void ib_cb(fut_future *f, void *ud)
{
	(void)ud;
	atomic_store(&ib_cb_saw_done, fut_done(f));
	atomic_fetch_add(&ib_cb_runs, 1);
	atomic_store(&ib_cb_ran, true);
}

static void *ib_waiter(void *arg)
{
	(void)arg;
	fut_future *b = atomic_load(&ib);
	atomic_store(&ib_wait_rc,
		     fut_wait(&b, 1, FUT_FIRST_COMPLETED, FUT_FOREVER));
	return NULL;
}

/*
 * One worker: A waits, untimed, for B, which it runs inline; B stays
 * queued while it runs.  A shutdown (CANCEL_PENDING | NOWAIT) drains B
 * then.  Before (review, 2026-12-07, fifteenth session: f8f2586) the
 * drain's second pass ran B's whole waiter list as held callbacks,
 * though it had not ended B: mode 0, B's done callback ran in the
 * shutdown, B running, and never again; mode 1, another thread's
 * fut_wait(FIRST_COMPLETED) node was called as a callback and freed
 * (SIGSEGV).  B now ends as it runs, its callbacks then.
 */
static void test_a_drain_leaves_a_job_run_inline_alone(void **state)
{
	(void)state;
	for (int mode = 0; mode < 2; mode++) {
		alarm(60);
		atomic_store(&ib, NULL);
		atomic_store(&ib_running, false);
		atomic_store(&ib_go, false);
		atomic_store(&ib_cb_ran, false);
		atomic_store(&ib_cb_saw_done, false);
		atomic_store(&ib_cb_runs, 0);
		atomic_store(&ib_wait_rc, -1);
		fut_executor *ex = pool_of(1);
		fut_future *a = NULL, *b = NULL;
		assert_int_equal(fut_submit(ex, ib_waits, NULL, &a), FUT_OK);
		wait_running(a);
		assert_int_equal(fut_submit(ex, ib_task, NULL, &b), FUT_OK);
		if (mode == 0)
			assert_int_equal(fut_add_done_callback(b, ib_cb, NULL),
					 FUT_OK);
		atomic_store(&ib, b);
		for (int i = 0; i < 600000 && !atomic_load(&ib_running); i++)
			usleep(100);
		assert_true(atomic_load(&ib_running));
		pthread_t th;
		if (mode == 1) {
			assert_int_equal(
				pthread_create(&th, NULL, ib_waiter, NULL), 0);
			/* Its node is listed on B (the callback's, mode 0). */
			for (int i = 0; i < 600000 && !(atomic_load(&b->state) &
							FUT__S_LISTED);
			     i++)
				usleep(100);
		}
		assert_int_equal(
			fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING |
							  FUT_SHUTDOWN_NOWAIT),
			FUT_OK);
		assert_false(atomic_load(&ib_cb_ran));
		assert_false(fut_done(b));
		atomic_store(&ib_go, true);
		assert_int_equal(fut_result(a, GUARD_S, NULL), FUT_OK);
		assert_int_equal(fut_result(b, GUARD_S, NULL), FUT_OK);
		if (mode == 0) {
			assert_int_equal(atomic_load(&ib_cb_runs), 1);
			assert_true(atomic_load(&ib_cb_saw_done));
		} else {
			assert_int_equal(pthread_join(th, NULL), 0);
			assert_int_equal(atomic_load(&ib_wait_rc), FUT_OK);
		}
		fut_release(a);
		fut_release(b);
		fut_executor_free(ex);
		alarm(0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_drained_callback_that_ends_the_pool_sees_the_interrupt),
		cmocka_unit_test(test_a_drained_job_never_starts_inline),
		cmocka_unit_test(
			test_a_waiter_cancels_a_drained_job_its_drain_waits_behind),
		cmocka_unit_test(
			test_a_waiter_ends_a_job_a_break_drained_as_broken),
		cmocka_unit_test(
			test_a_task_signal_mask_reaches_no_thread_it_starts),
		cmocka_unit_test(
			test_a_job_a_shutdown_drained_is_cancelled_despite_a_break),
		cmocka_unit_test(
			test_a_drained_callback_may_wait_for_its_drains_jobs),
		cmocka_unit_test(
			test_a_drained_callback_in_a_task_may_wait_too),
		cmocka_unit_test(
			test_a_broken_pools_callback_may_wait_for_its_drain),
		cmocka_unit_test(test_a_drain_leaves_a_job_run_inline_alone),
	};
	const char *only = getenv("TEST_FILTER");
	if (only != NULL)
		cmocka_set_test_filter(only);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
