/*
 * test_tp_review.c: thread-pool bugs found by the review of 2026-12-06
 * (wing D), one test each; each failed before the fix it covers.
 * - An initializer that completes a future with done callbacks: the
 *   worker stepped aside as a looker it was not (it counts in ninit),
 *   so nspinning fell below zero and no submit woke or started a thread
 *   while a slot was free.
 * - A shutdown with FUT_SHUTDOWN_CANCEL_PENDING returned while a broken
 *   initializer's drain still held queued futures, not yet done: only
 *   the drains of other shutdowns were waited for.
 * - A worker that runs done callbacks without its slot (added as its
 *   task returned) stops counting as a looker, but it still counted as a
 *   running thread against max_workers: a task submitted meanwhile found
 *   its slot free and no thread would start for it.
 * - A task that forked and returned in the child: the thread that forked
 *   went on as a worker there, ran the parent's next queued task a
 *   second time in the child, then slept for ever (docs/api.md: the
 *   thread that forked is none of the parent's executors' threads in the
 *   child).
 * - An interrupting shutdown missed a task that had just gone RUNNING
 *   (not yet on its worker's stack of frames).
 * Timeouts here only guard against hangs (GUARD_S).
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/sync.h"
#include "thread_pool/pool.h"

#define GUARD_S 20.0 /* a guard against a hang, never a measurement */

static void tiny(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

/* Waits on the gate (a future of the test's) untimed. */
static void wait_gate(fut_task *t)
{
	fut_future *gate = fut_task_arg(t);
	(void)fut_result(gate, FUT_FOREVER, NULL);
}

/* ------------------------------------------------------------------ */
/* An initializer whose future has done callbacks                      */

static _Atomic int init_cb_ran;

static void count_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_fetch_add(&init_cb_ran, 1);
}

/* Completes a future of its own with a done callback: the callback runs
 * here, in the worker, while it initializes. */
static int init_completes_a_future(void *arg)
{
	(void)arg;
	fut_future *f = NULL;
	if (fut_future_new(&f) != FUT_OK)
		return 0;
	(void)fut_add_done_callback(f, count_cb, NULL);
	(void)fut_set_result(f, NULL);
	fut_release(f);
	return 0;
}

/*
 * Two workers.  A waits on a gate; B, queued after A started, must run
 * on the other slot.  Before the fix the callback's step_aside took
 * nspinning below zero: the submit of B saw "someone looks", nobody did,
 * and B waited for A's gate.
 */
static void test_an_initializer_running_callbacks_leaves_lookers(void **st)
{
	(void)st;
	atomic_store(&init_cb_ran, 0);
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_thread_pool_new(&ex,
				    &(fut_thread_pool_opts){
					    .max_workers = 2,
					    .initializer =
						    init_completes_a_future }),
		FUT_OK);
	fut_future *gate = NULL, *a = NULL, *b = NULL;
	assert_int_equal(fut_future_new(&gate), FUT_OK);
	assert_int_equal(fut_submit(ex, wait_gate, gate, &a), FUT_OK);
	while (fut_state(a) == FUT_PENDING)
		sched_yield();
	assert_int_equal(fut_submit(ex, tiny, (void *)(uintptr_t)4, &b),
			 FUT_OK);
	void *v = NULL;
	int rc = fut_result(b, GUARD_S, &v);
	(void)fut_set_result(gate, NULL);
	assert_int_equal(fut_result(a, GUARD_S, NULL), FUT_OK);
	if (rc != FUT_OK)
		assert_int_equal(fut_result(b, GUARD_S, &v), FUT_OK);
	fut_release(a);
	fut_release(b);
	fut_release(gate);
	fut_executor_free(ex);
	assert_true(atomic_load(&init_cb_ran) >= 1);
	assert_int_equal(rc, FUT_OK);
	assert_int_equal((uintptr_t)v, 5);
}

/* ------------------------------------------------------------------ */
/* A shutdown beside an initializer's break                            */

static fut_future *brk_init_gate; /* the initializer fails once set */
static fut_future *brk_cb_gate;	  /* A's done callback returns once set */
static _Atomic bool brk_cb_in;
static _Atomic bool brk_shut_back;
static _Atomic bool brk_b_done_then;
static fut_executor *brk_pool;
static fut_future *brk_b;

static int init_fails_at_gate(void *arg)
{
	(void)arg;
	(void)fut_result(brk_init_gate, FUT_FOREVER, NULL);
	return -1;
}

static void cb_holds(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&brk_cb_in, true);
	(void)fut_result(brk_cb_gate, GUARD_S, NULL);
}

static void *shut_cancel(void *arg)
{
	(void)arg;
	(void)fut_executor_shutdown(
		brk_pool, FUT_SHUTDOWN_NOWAIT | FUT_SHUTDOWN_CANCEL_PENDING);
	atomic_store(&brk_b_done_then, fut_done(brk_b));
	atomic_store(&brk_shut_back, true);
	return NULL;
}

/*
 * A and B queued; the initializer fails: the break drains both and fails
 * A first, whose callback holds the drain.  A shutdown with
 * CANCEL_PENDING meanwhile drains nothing: it must not return before B,
 * which it would have cancelled, is done.  The callback is let go once
 * the shutdown returned, or after a while (with the fix the shutdown
 * waits for it).
 */
static void test_cancel_pending_waits_for_a_broken_pools_drain(void **st)
{
	(void)st;
	atomic_store(&brk_cb_in, false);
	atomic_store(&brk_shut_back, false);
	atomic_store(&brk_b_done_then, false);
	assert_int_equal(fut_future_new(&brk_init_gate), FUT_OK);
	assert_int_equal(fut_future_new(&brk_cb_gate), FUT_OK);
	assert_int_equal(fut_thread_pool_new(
				 &brk_pool,
				 &(fut_thread_pool_opts){
					 .max_workers = 1,
					 .initializer = init_fails_at_gate }),
			 FUT_OK);
	fut_future *a = NULL;
	assert_int_equal(fut_submit(brk_pool, tiny, NULL, &a), FUT_OK);
	assert_int_equal(fut_submit(brk_pool, tiny, NULL, &brk_b), FUT_OK);
	assert_int_equal(fut_add_done_callback(a, cb_holds, NULL), FUT_OK);
	(void)fut_set_result(brk_init_gate, NULL);
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (!atomic_load(&brk_cb_in) && fut__now_ns() < deadline)
		sched_yield();
	assert_true(atomic_load(&brk_cb_in));
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, shut_cancel, NULL), 0);
	/* Not a measurement: the callback is held a while so that a
	 * shutdown that does not wait for it returns first. */
	deadline = fut__now_ns() + 200 * 1000000LL;
	while (!atomic_load(&brk_shut_back) && fut__now_ns() < deadline)
		sched_yield();
	(void)fut_set_result(brk_cb_gate, NULL);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(fut_result(a, GUARD_S, NULL), FUT_EBROKEN);
	assert_int_equal(fut_result(brk_b, GUARD_S, NULL), FUT_EBROKEN);
	fut_release(a);
	fut_release(brk_b);
	fut_executor_free(brk_pool);
	fut_release(brk_init_gate);
	fut_release(brk_cb_gate);
	assert_true(atomic_load(&brk_b_done_then));
}

/* ------------------------------------------------------------------ */
/* A callback run aside, at max_workers threads                        */

static fut_executor *aside_pool;
static _Atomic bool aside_go;
static _Atomic bool aside_cb_done;
static _Atomic int aside_hits;	/* callbacks run aside */
static _Atomic int aside_stuck; /* of them, whose task did not run */

static void aside_spin(fut_task *t)
{
	while (!atomic_load_explicit(&aside_go, memory_order_relaxed))
		;
	fut_task_return(t, NULL);
}

/* Run aside (in the worker, its slot given up): the pool's one slot is
 * free, so a task submitted here must run, though this thread is busy. */
static void aside_cb(fut_future *done, void *ud)
{
	(void)done;
	(void)ud;
	struct worker *w =
		fut__tp_self_worker((struct tpool *)(void *)aside_pool);
	if (w != NULL && !w->has_slot && w->aside) {
		atomic_fetch_add(&aside_hits, 1);
		fut_future *t = NULL;
		if (fut_submit(aside_pool, tiny, NULL, &t) == FUT_OK) {
			/* timed: this thread keeps no slot and waits as a
			 * busy thread would */
			if (fut_result(t, GUARD_S / 2, NULL) != FUT_OK) {
				atomic_fetch_add(&aside_stuck, 1);
				(void)fut_cancel(t);
			}
			fut_release(t);
		}
	}
	atomic_store(&aside_cb_done, true);
}

static void test_a_callback_run_aside_leaves_its_slot_usable(void **st)
{
	(void)st;
	assert_int_equal(fut_thread_pool_new(
				 &aside_pool,
				 &(fut_thread_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	atomic_store(&aside_hits, 0);
	atomic_store(&aside_stuck, 0);
	unsigned seed = 7;
	for (long i = 0; i < 20000 && atomic_load(&aside_hits) < 3; i++) {
		atomic_store(&aside_go, false);
		atomic_store(&aside_cb_done, false);
		fut_future *f = NULL;
		assert_int_equal(fut_submit(aside_pool, aside_spin, NULL, &f),
				 FUT_OK);
		while (fut_state(f) == FUT_PENDING)
			sched_yield();
		atomic_store(&aside_go, true);
		seed = seed * 1103515245u + 12345u;
		for (unsigned k = (seed >> 16) % 400; k > 0; k--)
			fut__cpu_relax();
		assert_int_equal(fut_add_done_callback(f, aside_cb, NULL),
				 FUT_OK);
		int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
		while (!atomic_load(&aside_cb_done) && fut__now_ns() < deadline)
			sched_yield();
		assert_true(atomic_load(&aside_cb_done));
		fut_release(f);
	}
	print_message("callbacks run aside: %d\n", atomic_load(&aside_hits));
	fut_executor_free(aside_pool);
	assert_int_equal(atomic_load(&aside_stuck), 0);
}

/* ------------------------------------------------------------------ */
/* A task that forks and returns in the child                          */

static _Atomic bool in_fork_child;

/* LeakSanitizer would report the parent's memory at the child's exit:
 * it is off in the child. */
#if defined(__SANITIZE_ADDRESS__)
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
	return atomic_load(&in_fork_child);
}
#endif

static int fork_pipe[2];
static fut_future *fork_gate; /* set once B is queued */

/* Forks once B is queued (a timed wait: it keeps the one slot, and no
 * submit allocates as it forks); both sides return.  The parent's
 * result: the child's pid. */
static void forks_and_returns(fut_task *t)
{
	if (fut_result(fork_gate, GUARD_S, NULL) != FUT_OK) {
		fut_task_return(t, NULL);
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		atomic_store(&in_fork_child, true);
		alarm(10); /* a child that hangs ends; the test fails */
		fut_task_return(t, NULL);
		return;
	}
	fut_task_return(t, (void *)(intptr_t)pid);
}

/* Writes the pid of the process it runs in. */
static void writes_pid(fut_task *t)
{
	pid_t me = getpid();
	(void)!write(fork_pipe[1], &me, sizeof(me));
	fut_task_return(t, NULL);
}

/*
 * One worker; A forks, B is queued behind it.  In the child the thread
 * that forked must take no task of the parent's: B runs once, in the
 * parent, and the child, its only thread done, exits 0.
 */
static void test_a_task_that_forks_leaves_no_worker_in_the_child(void **st)
{
	(void)st;
	assert_int_equal(pipe(fork_pipe), 0);
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	fut_future *a = NULL, *b = NULL;
	assert_int_equal(fut_future_new(&fork_gate), FUT_OK);
	(void)fflush(NULL); /* nothing buffered for the child to repeat */
	assert_int_equal(fut_submit(ex, forks_and_returns, NULL, &a), FUT_OK);
	assert_int_equal(fut_submit(ex, writes_pid, NULL, &b), FUT_OK);
	assert_int_equal(fut_set_result(fork_gate, NULL), FUT_OK);
	void *v = NULL;
	assert_int_equal(fut_result(a, GUARD_S, &v), FUT_OK);
	assert_int_equal(fut_result(b, GUARD_S, NULL), FUT_OK);
	pid_t child = (pid_t)(intptr_t)v;
	assert_true(child > 0);
	int status = 0;
	while (waitpid(child, &status, 0) < 0)
		;
	close(fork_pipe[1]);
	pid_t ran[4];
	ssize_t n = read(fork_pipe[0], ran, sizeof(ran));
	close(fork_pipe[0]);
	fut_release(a);
	fut_release(b);
	fut_release(fork_gate);
	fut_executor_free(ex);
	assert_int_equal(n, (ssize_t)sizeof(pid_t)); /* B ran once */
	assert_int_equal(ran[0], getpid());
	assert_true(WIFEXITED(status)); /* not hung (SIGALRM) */
	/* Under valgrind the child's exit runs its leak check, where the
	 * heap it inherited (reachable only from threads it lacks) counts
	 * as lost: it exits with the Makefile's --error-exitcode, 99. */
	if (!(getenv("FUT_TEST_UNDER_VALGRIND") != NULL &&
	      WEXITSTATUS(status) == 99))
		assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * An interrupting shutdown reaches a task its caller saw RUNNING: the
 * walk of the workers' stacks missed one that had gone RUNNING but not
 * yet pushed its frame (about 2 in 10,000 rounds of this test before
 * the fix, 0 in 60,000 after).  The task spins until interrupted, or
 * gives up after 1 s and says so.
 */
static void spin_until_interrupted(fut_task *t)
{
	int64_t end = fut__now_ns() + 1000000000LL;
	while (!fut_task_cancelled(t))
		if (fut__now_ns() > end) {
			fut_task_return(t, (void *)1); /* missed */
			return;
		}
	fut_task_return(t, (void *)2);
}

static int interrupt_rounds(void)
{
	if (getenv("FUT_TEST_UNDER_VALGRIND") != NULL)
		return 50;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	return 1000;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
	return 1000;
#endif
#endif
	return 10000;
}

static void test_an_interrupt_reaches_a_task_just_started(void **st)
{
	(void)st;
	int rounds = interrupt_rounds(), missed = 0;
	for (int i = 0; i < rounds; i++) {
		fut_executor *ex = NULL;
		assert_int_equal(
			fut_thread_pool_new(
				&ex,
				&(fut_thread_pool_opts){ .max_workers = 1 }),
			FUT_OK);
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, spin_until_interrupted, NULL,
					    &f),
				 FUT_OK);
		while (fut_state(f) != FUT_RUNNING)
			;
		assert_int_equal(
			fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT |
							  FUT_SHUTDOWN_NOWAIT),
			FUT_OK);
		void *v = NULL;
		assert_int_equal(fut_result(f, GUARD_S, &v), FUT_OK);
		missed += (uintptr_t)v == 1;
		fut_release(f);
		fut_executor_free(ex);
	}
	assert_int_equal(missed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_an_initializer_running_callbacks_leaves_lookers),
		cmocka_unit_test(
			test_cancel_pending_waits_for_a_broken_pools_drain),
		cmocka_unit_test(
			test_a_callback_run_aside_leaves_its_slot_usable),
		cmocka_unit_test(
			test_a_task_that_forks_leaves_no_worker_in_the_child),
		cmocka_unit_test(test_an_interrupt_reaches_a_task_just_started),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
