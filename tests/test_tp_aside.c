/*
 * test_tp_aside.c: the thread pool's contract when a worker runs user
 * code that is not a task, and when a slot comes back from a nested wait
 * (docs/api.md, "Scheduling"):
 * - the initializer: tasks queued while it runs get threads of their own
 *   (as Python's, which starts a thread per submit), and a wait in it on
 *   a task of its own pool is served;
 * - done callbacks run by the worker that completed the future, even one
 *   added just as the task returned: a callback that waits on a task of
 *   the pool gets it run; one added before the task ended holds no slot
 *   either (fifteenth session, 2026-12-07), but for a task run inline,
 *   whose callbacks are part of the task that waits for it, in its slot;
 * - a worker taking its slot back after a nested wait leaves no other
 *   slot free while a task is queued, and no longer counts as waiting
 *   at the thread bound; a job run inline is no queued task there;
 * - an initializer that submits to its pool's full queue gives its
 *   place up, and so does a worker that submits to another pool's full
 *   queue (fifteenth session, 2026-12-07).
 * Each failed before the fix it covers (found by review, 2026-12-06).
 * Timeouts here only guard against hangs (GUARD_S): a wait that would
 * never end is ended by cancelling what it waits for, and the test fails.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
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

static fut_executor *new_pool(size_t workers, int (*init)(void *))
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex,
					     &(fut_thread_pool_opts){
						     .max_workers = workers,
						     .initializer = init }),
			 FUT_OK);
	return ex;
}

/* Submits tiny(x) to ex and waits for it, untimed, publishing the future
 * in *waited meanwhile (for the guard to cancel); FUT_OK if it gave x+1. */
static int submit_and_wait(fut_executor *ex, uintptr_t x,
			   _Atomic(fut_future *) *waited)
{
	fut_future *f = NULL;
	int rc = fut_submit(ex, tiny, (void *)x, &f);
	if (rc != FUT_OK)
		return rc;
	atomic_store(waited, f);
	void *v = NULL;
	rc = fut_result(f, FUT_FOREVER, &v);
	if (rc == FUT_OK && (uintptr_t)v != x + 1)
		rc = FUT_EINVAL;
	atomic_store(waited, NULL);
	fut_release(f);
	return rc;
}

/* Waits until *flag is set, at most GUARD_S; true if it was. */
static bool guard_until(_Atomic bool *flag)
{
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (!atomic_load(flag) && fut__now_ns() < deadline)
		sched_yield();
	return atomic_load(flag);
}

/* As guard_until; if the guard ran out (a hang), cancels the future the
 * hung wait is on (published in *waited), so that it ends and the test
 * can fail.  True if *flag was set in time. */
static bool guard_or_cancel(_Atomic bool *flag, _Atomic(fut_future *) *waited)
{
	if (guard_until(flag))
		return true;
	fut_future *w = atomic_load(waited);
	if (w != NULL)
		(void)fut_cancel(w);
	(void)guard_until(flag);
	return false;
}

/* ------------------------------------------------------------------ */
/* The initializer                                                     */

static fut_executor *init_pool;
static _Atomic bool init_first;
static _Atomic(fut_future *) init_waited; /* what the initializer waits on */
static _Atomic int init_rc;
static _Atomic bool init_done;

/* The first thread's initializer submits a task to its own pool and
 * waits for it, untimed. */
static int init_waits(void *arg)
{
	(void)arg;
	if (!atomic_exchange(&init_first, false))
		return 0;
	atomic_store(&init_rc, submit_and_wait(init_pool, 41, &init_waited));
	atomic_store(&init_done, true);
	return 0;
}

static void check_initializer_wait(size_t workers)
{
	atomic_store(&init_first, true);
	atomic_store(&init_done, false);
	atomic_store(&init_rc, -1);
	init_pool = new_pool(workers, init_waits);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(init_pool, tiny, (void *)(uintptr_t)1, &f),
			 FUT_OK);
	bool done = guard_or_cancel(&init_done, &init_waited);
	void *v = NULL;
	assert_int_equal(fut_result(f, GUARD_S, &v), FUT_OK);
	assert_int_equal((uintptr_t)v, 2);
	fut_release(f);
	fut_executor_free(init_pool);
	assert_true(done);
	assert_int_equal(atomic_load(&init_rc), FUT_OK);
}

static void test_an_initializer_that_waits_on_its_pool_is_served(void **state)
{
	(void)state;
	check_initializer_wait(1);
	check_initializer_wait(2);
}

/* N initializers that wait for one another: they can only all return if
 * the pool runs them at once, a thread per queued task. */
#define INIT_N 4
static _Atomic int inits_in;
static _Atomic int inits_saw_all;

static int init_meets_the_others(void *arg)
{
	(void)arg;
	atomic_fetch_add(&inits_in, 1);
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&inits_in) < INIT_N && fut__now_ns() < deadline)
		sched_yield();
	if (atomic_load(&inits_in) >= INIT_N)
		atomic_fetch_add(&inits_saw_all, 1);
	return 0;
}

static void test_tasks_queued_during_initializers_get_threads(void **state)
{
	(void)state;
	atomic_store(&inits_in, 0);
	atomic_store(&inits_saw_all, 0);
	fut_executor *ex = new_pool(INIT_N, init_meets_the_others);
	fut_future *fs[INIT_N];
	for (uintptr_t i = 0; i < INIT_N; i++)
		assert_int_equal(fut_submit(ex, tiny, (void *)i, &fs[i]),
				 FUT_OK);
	for (uintptr_t i = 0; i < INIT_N; i++) {
		void *v = NULL;
		assert_int_equal(fut_result(fs[i], 2 * GUARD_S, &v), FUT_OK);
		assert_int_equal((uintptr_t)v, i + 1);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	assert_int_equal(atomic_load(&inits_saw_all), INIT_N);
}

/* ------------------------------------------------------------------ */
/* Done callbacks added as the task returns                            */

static fut_executor *cb_pool;
static _Atomic bool go;
static _Atomic bool cb_done;
static _Atomic int cb_rc;
static _Atomic(fut_future *) cb_waited;
static _Atomic int cb_in_worker_without_slot;

static void spin_until_go(fut_task *t)
{
	while (!atomic_load_explicit(&go, memory_order_relaxed))
		;
	fut_task_return(t, NULL);
}

/* Submits a task to the pool and waits for it, untimed, as a done
 * callback may. */
static void cb_waits(fut_future *done, void *ud)
{
	(void)done;
	(void)ud;
	struct worker *w = fut__tp_self_worker((struct tpool *)(void *)cb_pool);
	if (w != NULL && (!w->has_slot || w->aside))
		atomic_fetch_add(&cb_in_worker_without_slot, 1);
	atomic_store(&cb_rc, submit_and_wait(cb_pool, 6, &cb_waited));
	atomic_store(&cb_done, true);
}

/* Adds the callback at varied moments around the task's return, until
 * it has run in the worker after the worker gave its slot up (the
 * window) a few times, or enough rounds went by. */
static void check_callback_as_task_ends(size_t workers)
{
	cb_pool = new_pool(workers, NULL);
	atomic_store(&cb_in_worker_without_slot, 0);
	unsigned seed = 1;
	for (long i = 0;
	     i < 20000 && atomic_load(&cb_in_worker_without_slot) < 5; i++) {
		atomic_store(&go, false);
		atomic_store(&cb_done, false);
		atomic_store(&cb_rc, -1);
		fut_future *f = NULL;
		assert_int_equal(fut_submit(cb_pool, spin_until_go, NULL, &f),
				 FUT_OK);
		while (fut_state(f) == FUT_PENDING)
			sched_yield();
		atomic_store(&go, true);
		seed = seed * 1103515245u + 12345u;
		for (unsigned k = (seed >> 16) % 400; k > 0; k--)
			fut__cpu_relax();
		assert_int_equal(fut_add_done_callback(f, cb_waits, NULL),
				 FUT_OK);
		bool done = guard_or_cancel(&cb_done, &cb_waited);
		fut_release(f);
		assert_true(done);
		assert_int_equal(atomic_load(&cb_rc), FUT_OK);
	}
	print_message("callbacks run in a worker without its slot: %d\n",
		      atomic_load(&cb_in_worker_without_slot));
	fut_executor_free(cb_pool);
}

static void test_a_callback_added_as_its_task_ends_can_wait(void **state)
{
	(void)state;
	check_callback_as_task_ends(1);
	check_callback_as_task_ends(2);
}

/* ------------------------------------------------------------------ */
/* A callback added before its task ends                               */

static fut_executor *slot_pool;
static _Atomic bool slot_go, slot_cb_in, slot_cb_done;
/* The task the callback waits for: queued behind, or submitted while
 * the callback runs. */
static _Atomic(fut_future *) slot_next;
static _Atomic int slot_next_rc;
static double slot_wait_s; /* the callback's timed wait for slot_next */

static void until_slot_go(fut_task *t)
{
	while (!atomic_load(&slot_go))
		sched_yield();
	fut_task_return(t, NULL);
}

/* Added before its task ended: waits, timed (a timed wait keeps what it
 * holds), for slot_next, slot_wait_s.  In a pool of one worker that kept
 * its slot for this callback, slot_next does not start meanwhile. */
static void slot_cb(fut_future *done, void *ud)
{
	(void)done;
	(void)ud;
	atomic_store(&slot_cb_in, true);
	fut_future *next = NULL;
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while ((next = atomic_load(&slot_next)) == NULL &&
	       fut__now_ns() < deadline)
		sched_yield();
	atomic_store(&slot_next_rc,
		     next == NULL ? FUT_ETIMEDOUT :
				    fut_result(next, slot_wait_s, NULL));
	atomic_store(&slot_cb_done, true);
}

/* Submits J with slot_cb, then waits for it, untimed: J runs inline
 * here, and its callback in this thread below this wait. */
static void runs_one_inline(fut_task *t)
{
	fut_future *j = NULL;
	int rc = fut_submit(slot_pool, tiny, NULL, &j);
	if (rc == FUT_OK)
		rc = fut_add_done_callback(j, slot_cb, NULL);
	while (rc == FUT_OK && !atomic_load(&slot_go))
		sched_yield();
	if (rc == FUT_OK)
		rc = fut_result(j, FUT_FOREVER, NULL);
	if (j != NULL)
		fut_release(j);
	fut_task_return(t, (void *)(intptr_t)rc);
}

/* One worker; task A's callback (slot_cb) is added before A ends.
 * variant 0: the task the callback waits for is submitted while it
 * runs; 1: it was queued behind A; 2: A is a task run inline (J above,
 * in a task that waits for it), the next one submitted while the
 * callback runs: J's callback is part of the task that waits for J,
 * which still runs in the one slot, so the next task starts only once
 * that task is done (the callback's short wait runs out; until the
 * review of 2026-12-07, fifteenth session, it gave the slot up too, and
 * the task that waited lost it to the next task: test below). */
static void check_callback_gives_its_slot(int variant)
{
	atomic_store(&slot_go, false);
	atomic_store(&slot_cb_in, false);
	atomic_store(&slot_cb_done, false);
	atomic_store(&slot_next, NULL);
	atomic_store(&slot_next_rc, -1);
	slot_wait_s = variant == 2 ? 0.2 : GUARD_S;
	slot_pool = new_pool(1, NULL);
	fut_future *a = NULL, *next = NULL;
	assert_int_equal(fut_submit(slot_pool,
				    variant == 2 ? runs_one_inline :
						   until_slot_go,
				    NULL, &a),
			 FUT_OK);
	if (variant != 2)
		assert_int_equal(fut_add_done_callback(a, slot_cb, NULL),
				 FUT_OK);
	if (variant == 1) {
		assert_int_equal(fut_submit(slot_pool, tiny, NULL, &next),
				 FUT_OK);
		atomic_store(&slot_next, next);
	}
	atomic_store(&slot_go, true);
	assert_true(guard_until(&slot_cb_in));
	if (variant != 1) {
		assert_int_equal(fut_submit(slot_pool, tiny, NULL, &next),
				 FUT_OK);
		atomic_store(&slot_next, next);
	}
	assert_true(guard_until(&slot_cb_done));
	assert_int_equal(atomic_load(&slot_next_rc),
			 variant == 2 ? FUT_ETIMEDOUT : FUT_OK);
	void *rc = NULL;
	assert_int_equal(fut_result(a, GUARD_S, &rc), FUT_OK);
	assert_int_equal((intptr_t)rc, variant == 2 ? FUT_OK : 0);
	assert_int_equal(fut_result(next, GUARD_S, NULL), FUT_OK);
	fut_release(a);
	fut_release(next);
	fut_executor_free(slot_pool);
}

/*
 * A done callback added before its task ended ran in the worker that ran
 * the task, which kept its slot meanwhile: with max_workers 1, a task
 * submitted (or queued) then waited for the callback, though no task ran
 * (review, 2026-12-07, fifteenth session: a callback that slept 1 s held
 * the next task 1 s).  One added after the task ended already ran aside.
 * The callback waits for the task here (timed), so a slot kept fails it.
 * Not for a task run inline (variant 2): its callbacks keep the slot of
 * the task that waits for it.
 */
static void
test_a_callback_added_before_its_task_ends_gives_its_slot(void **state)
{
	(void)state;
	for (int variant = 0; variant < 3; variant++)
		check_callback_gives_its_slot(variant);
}

/* ------------------------------------------------------------------ */
/* A task run inline keeps the slot for its callbacks                  */

static fut_executor *ik_pool;
static _Atomic(fut_future *) ik_a;
static _Atomic bool ik_go, ik_c_started, ik_c_saw_a_done, ik_cb_saw_c;
static _Atomic int ik_c_rc, ik_a_rc;

/* B's callback, run below A's wait for B: gives C a moment to start,
 * which it does only in a slot given up for this callback. */
static void ik_cb(fut_future *done, void *ud)
{
	(void)done;
	(void)ud;
	int64_t deadline = fut__now_ns() + 500 * 1000000LL;
	while (!atomic_load(&ik_c_started) && fut__now_ns() < deadline)
		sched_yield();
	atomic_store(&ik_cb_saw_c, atomic_load(&ik_c_started));
}

/* A: submits B (queued behind C) with ik_cb, and waits for it, untimed:
 * B runs inline here, its callback below the wait. */
static void ik_a_task(fut_task *t)
{
	(void)t;
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (!atomic_load(&ik_go) && fut__now_ns() < deadline)
		sched_yield();
	fut_future *b = NULL;
	int rc = fut_submit(ik_pool, tiny, NULL, &b);
	if (rc == FUT_OK)
		rc = fut_add_done_callback(b, ik_cb, NULL);
	if (rc == FUT_OK)
		rc = fut_result(b, FUT_FOREVER, NULL);
	if (b != NULL)
		fut_release(b);
	atomic_store(&ik_a_rc, rc);
}

/* C: queued behind A; waits for A, timed. */
static void ik_c_task(fut_task *t)
{
	(void)t;
	fut_future *a = atomic_load(&ik_a);
	atomic_store(&ik_c_saw_a_done, fut_done(a));
	atomic_store(&ik_c_started, true);
	atomic_store(&ik_c_rc, fut_result(a, GUARD_S, NULL));
}

/*
 * One worker: A runs; C is queued; A submits B and waits for it, so B
 * runs inline in A's slot, and B's done callback below A's wait.  Until
 * the review of 2026-12-07 (fifteenth session: 428326c) the worker gave
 * the slot up for B's callbacks as for a task's own: C started in it,
 * and A, still running, slept for a slot until C ended; C's timed wait
 * for A ran out (A done after 1.10 s for a 1 s wait, 0.41 s before).
 * B's callbacks are A's work now: C starts once A is done.
 */
static void
test_a_task_run_inline_keeps_its_slot_for_its_callbacks(void **state)
{
	(void)state;
	alarm(120);
	atomic_store(&ik_a, NULL);
	atomic_store(&ik_go, false);
	atomic_store(&ik_c_started, false);
	atomic_store(&ik_c_saw_a_done, false);
	atomic_store(&ik_cb_saw_c, false);
	atomic_store(&ik_c_rc, -1);
	atomic_store(&ik_a_rc, -1);
	ik_pool = new_pool(1, NULL);
	fut_future *a = NULL, *c = NULL;
	assert_int_equal(fut_submit(ik_pool, ik_a_task, NULL, &a), FUT_OK);
	atomic_store(&ik_a, a);
	assert_int_equal(fut_submit(ik_pool, ik_c_task, NULL, &c), FUT_OK);
	atomic_store(&ik_go, true);
	assert_int_equal(fut_result(a, 2 * GUARD_S, NULL), FUT_OK);
	assert_int_equal(fut_result(c, 2 * GUARD_S, NULL), FUT_OK);
	assert_int_equal(atomic_load(&ik_a_rc), FUT_OK);
	assert_false(atomic_load(&ik_cb_saw_c));
	assert_true(atomic_load(&ik_c_saw_a_done));
	assert_int_equal(atomic_load(&ik_c_rc), FUT_OK);
	fut_release(a);
	fut_release(c);
	fut_executor_free(ik_pool);
	alarm(0);
}

/* ------------------------------------------------------------------ */
/* A slot taken back after a nested wait                               */

static void *take_slot_back(void *arg)
{
	fut__tp_slot_get(arg);
	return NULL;
}

/*
 * Both slots are held; a worker back from a nested wait wants its slot
 * (nwant 1), so the idle workers stay asleep and a task queued then
 * waits.  Both slots come free; the waiter takes one: the other must go
 * to the queued task.  The slot holders are the test's (nbusy raised by
 * hand) and the waiter a thread of the test in fut__tp_slot_get: the
 * state a pool reaches when two tasks end while a worker that was
 * woken from its wait is slow to get a cpu back.
 */
static void
test_a_slot_taken_back_leaves_none_free_with_tasks_queued(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2, NULL);
	struct tpool *p = (struct tpool *)(void *)ex;
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, tiny, NULL, &f), FUT_OK);
	assert_int_equal(fut_result(f, GUARD_S, NULL), FUT_OK);
	fut_release(f);
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&p->nspinning) != 0 && fut__now_ns() < deadline)
		sched_yield(); /* every worker asleep */
	assert_int_equal(atomic_load(&p->nspinning), 0);
	atomic_fetch_add(&p->nbusy, 2);
	pthread_t waiter;
	assert_int_equal(pthread_create(&waiter, NULL, take_slot_back, p), 0);
	while (atomic_load(&p->nwant) != 1 && fut__now_ns() < deadline)
		sched_yield();
	assert_int_equal(atomic_load(&p->nwant), 1);
	fut_future *d = NULL;
	assert_int_equal(fut_submit(ex, tiny, (void *)(uintptr_t)9, &d),
			 FUT_OK);
	atomic_fetch_sub(&p->nbusy, 1); /* one holder leaves quietly... */
	fut__tp_slot_put(p);		/* ...the other wakes the waiter */
	assert_int_equal(pthread_join(waiter, NULL), 0);
	int rc = fut_result(d, GUARD_S, NULL);
	if (rc != FUT_OK)
		(void)fut_cancel(d);
	fut__tp_slot_put(p); /* the waiter's slot */
	fut_release(d);
	fut_executor_free(ex);
	assert_int_equal(rc, FUT_OK);
}

/*
 * The thread bound (review of 2026-12-06, /tmp/tp-review): one worker,
 * so 257 threads at most; `holders` tasks wait on gate G until the end.
 * A nested wait may say FUT_EAGAIN only when every thread waits and a
 * task is queued that none will run.
 */
static fut_future *bound_gate;	  /* the holders' gate */
static fut_future *bound_back;	  /* X's gate: its wait ends */
static fut_future *bound_h;	  /* what the tested wait waits on */
static _Atomic int bound_in;	  /* tasks that started */
static _Atomic bool bound_go;	  /* the tested task may wait */
static _Atomic int bound_rc = -1; /* the tested wait's code */
static _Atomic int bound_bad;	  /* holders whose wait failed */

static void bound_hold(fut_task *t)
{
	fut_future *gate = fut_task_arg(t);
	atomic_fetch_add(&bound_in, 1);
	/* Below the bound, or with the gate set: never FUT_EAGAIN (a
	 * waiter that counted itself before its own wakep made another
	 * give up, at load, before the fix of 2026-12-06). */
	int rc = fut_result(gate, -1, NULL);
	if (rc != FUT_OK) {
		atomic_fetch_add(&bound_bad, 1);
		fprintf(stderr, "a holder's wait: %s\n", fut_strerror(rc));
	}
}

static void bound_set_h(fut_task *t)
{
	(void)t;
	(void)fut_set_result(bound_h, NULL);
}

/* Y of the first test: queues Z (which sets H), then waits on H once
 * told; A of the second: runs a task inline, then waits on H. */
static void bound_wait_h(fut_task *t)
{
	fut_executor *ex = fut_task_arg(t);
	fut_future *z = NULL;
	bool inline_first = atomic_load(&bound_go);
	assert_int_equal(fut_submit(ex, inline_first ? tiny : bound_set_h, NULL,
				    &z),
			 FUT_OK);
	if (inline_first) /* runs it here: its job stays queued */
		assert_int_equal(fut_result(z, -1, NULL), FUT_OK);
	fut_release(z);
	atomic_fetch_add(&bound_in, 1);
	while (!atomic_load(&bound_go))
		sched_yield();
	atomic_store(&bound_rc, fut_result(bound_h, -1, NULL));
}

/* Until *v reaches n (true) or the guard ends (false). */
static bool reaches(_Atomic uint32_t *v, uint32_t n)
{
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(v) < n && fut__now_ns() < deadline)
		sched_yield();
	return atomic_load(v) >= n;
}

static bool bound_wait_in(int n)
{
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&bound_in) < n && fut__now_ns() < deadline)
		sched_yield();
	return atomic_load(&bound_in) >= n;
}

/* Starts `holders` tasks on gate G (and X on its own gate when `x`). */
static fut_executor *bound_pool(int holders, bool x, fut_future **fs)
{
	fut_executor *ex = new_pool(1, NULL);
	assert_int_equal(fut_future_new(&bound_gate), FUT_OK);
	assert_int_equal(fut_future_new(&bound_back), FUT_OK);
	assert_int_equal(fut_future_new(&bound_h), FUT_OK);
	atomic_store(&bound_in, 0);
	atomic_store(&bound_rc, -1);
	atomic_store(&bound_bad, 0);
	for (int i = 0; i < holders; i++)
		assert_int_equal(fut_submit(ex, bound_hold,
					    i == 0 && x ? bound_back :
							  bound_gate,
					    &fs[i]),
				 FUT_OK);
	assert_true(bound_wait_in(holders));
	/* all asleep, slots handed */
	assert_true(reaches(&pool_of(ex)->nwaiting, (uint32_t)holders));
	return ex;
}

static void bound_end(fut_executor *ex, fut_future **fs, int n)
{
	(void)fut_set_result(bound_back, NULL);
	(void)fut_set_result(bound_h, NULL);
	(void)fut_set_result(bound_gate, NULL);
	for (int i = 0; i < n; i++) {
		assert_int_equal(fut_result(fs[i], GUARD_S, NULL), FUT_OK);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	fut_release(bound_gate);
	fut_release(bound_back);
	fut_release(bound_h);
	assert_int_equal(atomic_load(&bound_bad), 0);
}

/*
 * X's wait ends while Y holds the one slot: X sleeps for it.  Y queues Z
 * and waits: X takes the slot Y gives up, ends, and runs Z, which ends
 * Y's wait.  X counted as waiting until it had its slot made Y's wait
 * FUT_EAGAIN at the bound.
 */
static void test_a_worker_back_from_its_wait_counts_at_the_bound(void **state)
{
	(void)state;
	fut_future *fs[257];
	fut_executor *ex = bound_pool(256, true, fs);
	atomic_store(&bound_go, false);
	assert_int_equal(fut_submit(ex, bound_wait_h, ex, &fs[256]), FUT_OK);
	assert_true(bound_wait_in(257));
	assert_int_equal(fut__tp_threads(ex), 257);
	(void)fut_set_result(bound_back, NULL);	      /* X's wait is over */
	assert_true(reaches(&pool_of(ex)->nwant, 1)); /* X sleeps for a slot */
	atomic_store(&bound_go, true);
	/* Z sets H: Y's wait ends by itself (the guard only ends a hang) */
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&bound_rc) == -1 && fut__now_ns() < deadline)
		sched_yield();
	int rc = atomic_load(&bound_rc);
	bound_end(ex, fs, 257);
	assert_int_equal(rc, FUT_OK);
}

/* At the bound, a task run inline leaves only its started job queued:
 * nothing is left to run, and a wait on a gate set later is served. */
static void test_a_job_run_inline_is_no_queued_task_at_the_bound(void **state)
{
	(void)state;
	fut_future *fs[257];
	fut_executor *ex = bound_pool(256, false, fs);
	atomic_store(&bound_go, true); /* inline first, then wait at once */
	assert_int_equal(fut_submit(ex, bound_wait_h, ex, &fs[256]), FUT_OK);
	assert_true(bound_wait_in(257));
	struct timespec ts = { 0, 50000000 }; /* the wait on H sleeps */
	nanosleep(&ts, NULL);
	assert_int_equal(atomic_load(&bound_rc), -1);
	bound_end(ex, fs, 257);
	assert_int_equal(atomic_load(&bound_rc), FUT_OK);
}

/* An initializer that submits to its pool's full queue (max_queue 1,
 * behind the task its thread was started for) gives its place up: the
 * queued task gets a thread. */
static fut_executor *fullq_pool;
static _Atomic int fullq_rc = -1;
static _Atomic bool fullq_once;
static fut_future *fullq_f;

static int init_submits(void *arg)
{
	(void)arg;
	if (!atomic_exchange(&fullq_once, true))
		atomic_store(&fullq_rc,
			     fut_submit(fullq_pool, tiny, NULL, &fullq_f));
	return 0;
}

static void
test_an_initializer_submitting_to_a_full_queue_holds_up_nothing(void **state)
{
	(void)state;
	assert_int_equal(
		fut_thread_pool_new(
			&fullq_pool,
			&(fut_thread_pool_opts){ .max_workers = 2,
						 .max_queue = 1,
						 .initializer = init_submits }),
		FUT_OK);
	fut_future *a = NULL;
	assert_int_equal(fut_submit(fullq_pool, tiny, NULL, &a), FUT_OK);
	int rc = fut_result(a, GUARD_S, NULL);
	/* A's end gave room: the initializer's submit goes in (before the
	 * free below, or it would lose to the shutdown). */
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (rc == FUT_OK && atomic_load(&fullq_rc) == -1 &&
	       fut__now_ns() < deadline)
		sched_yield();
	if (atomic_load(&fullq_rc) == -1) /* wakes the initializer's submit */
		(void)fut_executor_shutdown(fullq_pool, FUT_SHUTDOWN_NOWAIT);
	fut_executor_free(fullq_pool);
	fut_release(a);
	if (atomic_load(&fullq_rc) == FUT_OK)
		fut_release(fullq_f);
	assert_int_equal(rc, FUT_OK);
	assert_int_equal(atomic_load(&fullq_rc), FUT_OK);
}

/* ------------------------------------------------------------------ */
/* A worker that waits for room in another pool's queue                */

static fut_executor *room_b;	     /* one worker, max_queue 1 */
static _Atomic(fut_future *) room_y; /* A's task queued behind T */
static _Atomic bool room_go;
static _Atomic int room_x_rc, room_t_rc;

/* B's running task: waits, timed (it keeps B's slot, so B's queue stays
 * full), for y. */
static void room_x(fut_task *t)
{
	(void)t;
	fut_future *y = NULL;
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while ((y = atomic_load(&room_y)) == NULL && fut__now_ns() < deadline)
		sched_yield();
	atomic_store(&room_x_rc,
		     y == NULL ? FUT_ETIMEDOUT : fut_result(y, GUARD_S, NULL));
}

/* A's task T: once told, submits to B's full queue. */
static void room_t(fut_task *t)
{
	(void)t;
	while (!atomic_load(&room_go))
		sched_yield();
	fut_future *f = NULL;
	int rc = fut_submit(room_b, tiny, NULL, &f);
	if (rc == FUT_OK)
		fut_release(f);
	atomic_store(&room_t_rc, rc);
}

/*
 * Pool A (one worker) runs T, which blocks in fut_submit on pool B's full
 * queue (max_queue 1); y, an A task queued behind T, is what B's running
 * task x waits for, timed, holding B's queue full.  T kept A's slot:
 * admit() handed a slot off only for a worker of the pool it submits to,
 * so y ran only once x's wait ran out (review, 2026-12-07, fifteenth
 * session).  An untimed wait of T's on B's queued task gave its slot up.
 */
static void
test_a_worker_waiting_for_another_pools_room_gives_its_slot(void **state)
{
	(void)state;
	atomic_store(&room_y, NULL);
	atomic_store(&room_go, false);
	atomic_store(&room_x_rc, -1);
	atomic_store(&room_t_rc, -1);
	fut_executor *a = new_pool(1, NULL);
	assert_int_equal(
		fut_thread_pool_new(&room_b,
				    &(fut_thread_pool_opts){ .max_workers = 1,
							     .max_queue = 1 }),
		FUT_OK);
	fut_future *t = NULL, *y = NULL, *x = NULL, *q = NULL;
	assert_int_equal(fut_submit(a, room_t, NULL, &t), FUT_OK);
	assert_int_equal(fut_submit(a, tiny, NULL, &y), FUT_OK);
	atomic_store(&room_y, y);
	assert_int_equal(fut_submit(room_b, room_x, NULL, &x), FUT_OK);
	while (fut_state(x) == FUT_PENDING)
		sched_yield();
	assert_int_equal(fut_submit(room_b, tiny, NULL, &q), FUT_OK);
	atomic_store(&room_go, true);
	assert_int_equal(fut_result(t, 3 * GUARD_S, NULL), FUT_OK);
	assert_int_equal(fut_result(x, GUARD_S, NULL), FUT_OK);
	assert_int_equal(atomic_load(&room_x_rc), FUT_OK);
	assert_int_equal(atomic_load(&room_t_rc), FUT_OK);
	fut_release(t);
	fut_release(y);
	fut_release(x);
	fut_release(q);
	fut_executor_free(a);
	fut_executor_free(room_b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_an_initializer_that_waits_on_its_pool_is_served),
		cmocka_unit_test(
			test_tasks_queued_during_initializers_get_threads),
		cmocka_unit_test(
			test_a_callback_added_as_its_task_ends_can_wait),
		cmocka_unit_test(
			test_a_callback_added_before_its_task_ends_gives_its_slot),
		cmocka_unit_test(
			test_a_task_run_inline_keeps_its_slot_for_its_callbacks),
		cmocka_unit_test(
			test_a_slot_taken_back_leaves_none_free_with_tasks_queued),
		cmocka_unit_test(
			test_a_worker_back_from_its_wait_counts_at_the_bound),
		cmocka_unit_test(
			test_a_job_run_inline_is_no_queued_task_at_the_bound),
		cmocka_unit_test(
			test_an_initializer_submitting_to_a_full_queue_holds_up_nothing),
		cmocka_unit_test(
			test_a_worker_waiting_for_another_pools_room_gives_its_slot),
	};
	/* TEST_FILTER=pattern runs the matching tests only. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
