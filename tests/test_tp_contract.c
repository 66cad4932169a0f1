/*
 * test_tp_contract.c: the thread pool's scheduling contract (docs/api.md,
 * "Scheduling"), each promise as a program a user writes, with a Python
 * twin that behaves:
 * - work conservation: while a task is queued and a slot is free, a
 *   worker starts it, whatever the running tasks do (tasks on a gate, a
 *   barrier, tasks that sleep);
 * - waits that wait: a thread that is not a worker never runs a task; a
 *   timed wait does not run one; FIRST_COMPLETED returns at the first;
 *   nested waits (a handshake, a chain of 100,000) neither deadlock nor
 *   overflow a stack;
 * - a cap that holds (max_workers, max_queue), FIFO start order;
 * - bad counts refused before any element is touched.
 * Timeouts here only guard against hangs (HANG_S); nothing asserts a
 * duration.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "thread_pool/pool.h"

#define HANG_S 60.0 /* a guard against a hang, never a measurement */

static fut_executor *new_pool(size_t workers)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex,
					     &(fut_thread_pool_opts){
						     .max_workers = workers }),
			 FUT_OK);
	return ex;
}

static uintptr_t result_of(fut_future *f)
{
	void *v = NULL;
	assert_int_equal(fut_result(f, HANG_S, &v), FUT_OK);
	return (uintptr_t)v;
}

static void release_all(fut_future **fs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fut_release(fs[i]);
}

/* ------------------------------------------------------------------ */
static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* A gate: tasks count themselves in and block (in nanosleep, outside the
 * library, as a read() would) until it opens. */

struct gate {
	_Atomic int in;
	_Atomic bool open;
};

static void gate_init(struct gate *g)
{
	atomic_init(&g->in, 0);
	atomic_init(&g->open, false);
}

/* Waits (at most HANG_S) until n tasks are in; returns how many are. */
static int gate_wait_in(struct gate *g, int n)
{
	int64_t deadline = fut__now_ns() + (int64_t)(HANG_S * 1e9);
	while (atomic_load(&g->in) < n && fut__now_ns() < deadline)
		sched_yield();
	return atomic_load(&g->in);
}

static void gate_open(struct gate *g)
{
	atomic_store(&g->open, true);
}

/* Once every task that waited on it returned. */
static void gate_fini(struct gate *g)
{
	(void)g;
}

/* Blocks until g opens (at most HANG_S); true if it did. */
static bool gate_pass(struct gate *g)
{
	atomic_fetch_add(&g->in, 1);
	int64_t deadline = fut__now_ns() + (int64_t)(HANG_S * 1e9);
	while (!atomic_load(&g->open) && fut__now_ns() < deadline)
		sleep_ms(1);
	return atomic_load(&g->open);
}

static void gated(fut_task *t)
{
	fut_task_return(t, (void *)(uintptr_t)gate_pass(fut_task_arg(t)));
}

/* As gated, the gate's address passed as bytes (fut_submit_many). */
static void gated_bytes_task(fut_task *t)
{
	size_t len = 0;
	struct gate *const *g = fut_task_input(t, &len);
	fut_task_return(t, (void *)(uintptr_t)gate_pass(*g));
}

static void tiny(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

enum how {
	ONE_BY_ONE,
	MANY,
	FROM_A_TASK,
	AFTER_A_BURST,
	FROM_CALLBACKS
};

struct from_task {
	fut_executor *ex;
	struct gate *g;
	size_t n;
	fut_future **out;
	_Atomic size_t next, submitted; /* FROM_CALLBACKS */
};

/* A done callback (in the worker that completed a tiny task) submits a
 * gated task. */
static void submit_gated_cb(fut_future *f, void *ud)
{
	(void)f;
	struct from_task *a = ud;
	size_t i = atomic_fetch_add(&a->next, 1);
	if (fut_submit(a->ex, gated, a->g, &a->out[i]) == FUT_OK)
		atomic_fetch_add(&a->submitted, 1);
}

/* Submits n gated tasks to its own pool; returns how many went in. */
static void submit_gated_from_task(fut_task *t)
{
	struct from_task *a = fut_task_arg(t);
	size_t ok = 0;
	for (size_t i = 0; i < a->n; i++)
		ok += fut_submit(a->ex, gated, a->g, &a->out[i]) == FUT_OK;
	fut_task_return(t, (void *)ok);
}

/* N tasks on a gate, max_workers N: all N start. */
static void check_all_start(size_t n, enum how how)
{
	fut_executor *ex = new_pool(n);
	struct gate g;
	gate_init(&g);
	fut_future **fs = calloc(n, sizeof(*fs));
	assert_non_null(fs);
	if (how == AFTER_A_BURST) {
		enum {
			BURST = 10000
		};
		fut_future **b = calloc(BURST, sizeof(*b));
		assert_non_null(b);
		for (uintptr_t i = 0; i < BURST; i++)
			assert_int_equal(fut_submit(ex, tiny, (void *)i, &b[i]),
					 FUT_OK);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(fut_submit(ex, gated, &g, &fs[i]),
					 FUT_OK);
		for (uintptr_t i = 0; i < BURST; i++)
			assert_int_equal(result_of(b[i]), i + 1);
		release_all(b, BURST);
		free(b);
	} else if (how == MANY) {
		/* fut_submit_many passes bytes: the gate's address. */
		struct gate *gp = &g;
		struct gate **in = calloc(n, sizeof(*in));
		assert_non_null(in);
		for (size_t i = 0; i < n; i++)
			in[i] = gp;
		assert_int_equal(fut_submit_many(ex, gated_bytes_task, in,
						 sizeof(*in), n, fs),
				 FUT_OK);
		free(in);
	} else if (how == FROM_A_TASK) {
		/* The submitting task takes a slot while it runs: N - 1 of
		 * the gated ones fit beside it, the last once it returns. */
		struct from_task a = { .ex = ex, .g = &g, .n = n, .out = fs };
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, submit_gated_from_task, &a, &f),
				 FUT_OK);
		assert_int_equal(result_of(f), n);
		fut_release(f);
	} else if (how == FROM_CALLBACKS) {
		struct from_task a = { .ex = ex, .g = &g, .n = n, .out = fs };
		for (uintptr_t i = 0; i < n; i++) {
			fut_future *f = NULL;
			assert_int_equal(fut_submit(ex, tiny, (void *)i, &f),
					 FUT_OK);
			assert_int_equal(
				fut_add_done_callback(f, submit_gated_cb, &a),
				FUT_OK);
			fut_release(f);
		}
		int64_t deadline = fut__now_ns() + (int64_t)(HANG_S * 1e9);
		while (atomic_load(&a.submitted) < n &&
		       fut__now_ns() < deadline)
			sched_yield();
		assert_int_equal(atomic_load(&a.submitted), n);
	} else {
		for (size_t i = 0; i < n; i++)
			assert_int_equal(fut_submit(ex, gated, &g, &fs[i]),
					 FUT_OK);
	}
	assert_int_equal(gate_wait_in(&g, (int)n), (int)n);
	gate_open(&g);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(result_of(fs[i]), 1);
	gate_fini(&g);
	release_all(fs, n);
	free(fs);
	fut_executor_free(ex);
}

static const size_t sizes[] = { 2, 4, 16, 64 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void test_n_tasks_on_a_gate_all_start_one_by_one(void **state)
{
	(void)state;
	for (size_t k = 0; k < NSIZES; k++)
		check_all_start(sizes[k], ONE_BY_ONE);
}

static void test_n_tasks_on_a_gate_all_start_by_submit_many(void **state)
{
	(void)state;
	for (size_t k = 0; k < NSIZES; k++)
		check_all_start(sizes[k], MANY);
}

static void test_n_tasks_on_a_gate_all_start_from_a_task(void **state)
{
	(void)state;
	for (size_t k = 0; k < NSIZES; k++)
		check_all_start(sizes[k], FROM_A_TASK);
}

static void test_n_tasks_on_a_gate_all_start_after_a_burst(void **state)
{
	(void)state;
	for (size_t k = 0; k < NSIZES; k++)
		check_all_start(sizes[k], AFTER_A_BURST);
}

static void test_n_tasks_on_a_gate_all_start_from_callbacks(void **state)
{
	(void)state;
	for (size_t k = 0; k < NSIZES; k++)
		check_all_start(sizes[k], FROM_CALLBACKS);
}

/* ------------------------------------------------------------------ */
/* A barrier of N tasks on N workers: each waits for all the others.   */

struct barrier {
	_Atomic int arrived;
	int n;
};

static void barrier_task(fut_task *t)
{
	struct barrier *b = fut_task_arg(t);
	atomic_fetch_add(&b->arrived, 1);
	int64_t deadline = fut__now_ns() + (int64_t)(HANG_S * 1e9);
	while (atomic_load(&b->arrived) < b->n && fut__now_ns() < deadline)
		sleep_ms(1);
	fut_task_return(t,
			(void *)(uintptr_t)(atomic_load(&b->arrived) == b->n));
}

static void test_a_barrier_of_n_tasks_on_n_workers_completes(void **state)
{
	(void)state;
	for (size_t k = 0; k < NSIZES; k++) {
		size_t n = sizes[k];
		fut_executor *ex = new_pool(n);
		struct barrier b = { .n = (int)n };
		atomic_init(&b.arrived, 0);
		fut_future **fs = calloc(n, sizeof(*fs));
		assert_non_null(fs);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(fut_submit(ex, barrier_task, &b,
						    &fs[i]),
					 FUT_OK);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(result_of(fs[i]), 1);
		release_all(fs, n);
		free(fs);
		fut_executor_free(ex);
	}
}

/* ------------------------------------------------------------------ */
/* Six tasks that sleep 360, 300, ... 60 ms on 8 workers run side by   */
/* side: they complete in reverse order, as in Python.                  */

static void sleeper(fut_task *t)
{
	uintptr_t i = (uintptr_t)fut_task_arg(t);
	sleep_ms((long)(360 - 60 * i));
	fut_task_return(t, (void *)i);
}

static void test_sleeping_tasks_complete_in_reverse_order(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(8);
	/* Threads started first (each start is slower than a wake-up
	 * under valgrind); the order below needs only that all six run at
	 * once. */
	struct gate g;
	gate_init(&g);
	fut_future *warm[8];
	for (int i = 0; i < 8; i++)
		assert_int_equal(fut_submit(ex, gated, &g, &warm[i]), FUT_OK);
	assert_int_equal(gate_wait_in(&g, 8), 8);
	gate_open(&g);
	for (int i = 0; i < 8; i++)
		assert_int_equal(result_of(warm[i]), 1);
	gate_fini(&g);
	release_all(warm, 8);

	/* The order needs the six to sleep side by side, 60 ms apart: on a
	 * machine so loaded that a thread waits 60 ms for a cpu, a round
	 * can come out of order though the pool did nothing wrong.  A round
	 * is tried up to three times; a pool that runs any of them one after
	 * another (the bug this guards against) fails all three. */
	bool reversed = false;
	for (int round = 0; round < 3 && !reversed; round++) {
		fut_future *fs[6];
		for (uintptr_t i = 0; i < 6; i++)
			assert_int_equal(fut_submit(ex, sleeper, (void *)i,
						    &fs[i]),
					 FUT_OK);
		fut_as_completed *it = NULL;
		assert_int_equal(fut_as_completed_new(&it, fs, 6), FUT_OK);
		reversed = true;
		for (uintptr_t k = 0; k < 6; k++) {
			fut_future *f = NULL;
			assert_int_equal(fut_as_completed_next(it, HANG_S, &f),
					 FUT_OK);
			if (result_of(f) != 5 - k) {
				print_message(
					"round %d: #%lu came in place %lu\n",
					round, (unsigned long)result_of(f),
					(unsigned long)k + 1);
				reversed = false;
			}
		}
		fut_as_completed_free(it);
		release_all(fs, 6);
	}
	assert_true(reversed);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* Nested waits                                                        */

struct handshake {
	fut_future *ready, *go;
};

/* The helper: says it is ready, then waits for the go. */
static void helper(fut_task *t)
{
	struct handshake *h = fut_task_arg(t);
	(void)fut_set_result(h->ready, NULL);
	int rc = fut_result(h->go, FUT_FOREVER, NULL);
	fut_task_return(t, (void *)(uintptr_t)(rc == FUT_OK));
}

struct starter {
	fut_executor *ex;
};

/* Starts a helper, waits (untimed) for its "ready", sends "go", waits for
 * the helper.  Python's twin: 0 deadlocks in 50. */
static void starter(fut_task *t)
{
	struct starter *s = fut_task_arg(t);
	struct handshake h = { 0 };
	fut_future *hf = NULL;
	uintptr_t ok = 0;
	if (fut_future_new(&h.ready) == FUT_OK &&
	    fut_future_new(&h.go) == FUT_OK &&
	    fut_submit(s->ex, helper, &h, &hf) == FUT_OK &&
	    fut_result(h.ready, FUT_FOREVER, NULL) == FUT_OK &&
	    fut_set_result(h.go, NULL) == FUT_OK) {
		void *v = NULL;
		ok = fut_result(hf, FUT_FOREVER, &v) == FUT_OK && v != NULL;
	}
	fut_release(hf);
	fut_release(h.ready);
	fut_release(h.go);
	fut_task_return(t, (void *)ok);
}

static void test_a_task_and_its_helper_shake_hands(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(8);
	struct starter s = { .ex = ex };
	for (int round = 0; round < 10; round++) {
		fut_future *fs[4];
		for (int i = 0; i < 4; i++)
			assert_int_equal(fut_submit(ex, starter, &s, &fs[i]),
					 FUT_OK);
		for (int i = 0; i < 4; i++)
			assert_int_equal(result_of(fs[i]), 1);
		release_all(fs, 4);
	}
	fut_executor_free(ex);
}

#define CHAIN 100000u

struct chain {
	fut_executor *ex;
};
static struct chain the_chain;

/* Submits the next link and waits for it, untimed; returns the links
 * below plus one, or fails with the code that stopped the chain. */
static void link_task(fut_task *t)
{
	uintptr_t left = (uintptr_t)fut_task_arg(t);
	if (left == 0) {
		fut_task_return(t, NULL);
		return;
	}
	fut_future *f = NULL;
	int rc = fut_submit(the_chain.ex, link_task, (void *)(left - 1), &f);
	void *v = NULL;
	if (rc == FUT_OK)
		rc = fut_result(f, FUT_FOREVER, &v);
	if (rc == FUT_OK)
		fut_task_return(t, (void *)((uintptr_t)v + 1));
	else
		fut_task_fail(t, rc == FUT_ETASK ? fut_task_code(f) : rc,
			      "link %lu", (unsigned long)left);
	fut_release(f);
}

/* Each link waits on the next: the chain ends with its count, or with
 * the documented code once no thread can be added (FUT_EAGAIN, never a
 * crash or a hang). */
static void
test_a_chain_of_waiting_tasks_ends_with_a_result_or_a_code(void **state)
{
	(void)state;
	the_chain.ex = new_pool(4);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(the_chain.ex, link_task,
				    (void *)(uintptr_t)CHAIN, &f),
			 FUT_OK);
	void *v = NULL;
	int rc = fut_result(f, 600.0, &v);
	if (rc == FUT_OK) {
		assert_int_equal((uintptr_t)v, CHAIN);
	} else {
		assert_int_equal(rc, FUT_ETASK);
		assert_int_equal(fut_task_code(f), FUT_EAGAIN);
	}
	fut_release(f);
	fut_executor_free(the_chain.ex);
}

/* ------------------------------------------------------------------ */
/* Waits that wait                                                     */

static void report_thread(fut_task *t)
{
	fut_task_return(t, (void *)(uintptr_t)gettid());
}

struct timed {
	fut_executor *ex;
};

/* In the pool's only slot: waits 50 ms for a task that cannot start
 * before it returns.  Returns 1 if the wait timed out with that task
 * still pending (a wait that ran it inline would find it done). */
static void timed_waiter(fut_task *t)
{
	struct timed *a = fut_task_arg(t);
	fut_future *f = NULL;
	uintptr_t ok = 0;
	if (fut_submit(a->ex, report_thread, NULL, &f) == FUT_OK)
		ok = fut_result(f, 0.05, NULL) == FUT_ETIMEDOUT &&
		     fut_state(f) == FUT_PENDING;
	fut_release(f);
	fut_task_return(t, (void *)ok);
}

static void test_a_timed_wait_in_a_task_never_runs_a_task(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	struct timed a = { .ex = ex };
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, timed_waiter, &a, &f), FUT_OK);
	assert_int_equal(result_of(f), 1);
	fut_release(f);
	fut_executor_free(ex);
}

static void *open_later(void *arg)
{
	sleep_ms(50);
	gate_open(arg);
	return NULL;
}

/* main waits, untimed, for a task queued behind a busy worker, with a cpu
 * to spare: it waits for the worker rather than run the task itself. */
static void test_a_thread_outside_the_pool_never_runs_a_task(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	uintptr_t me = (uintptr_t)gettid();
	for (int i = 0; i < 5; i++) {
		struct gate g;
		gate_init(&g);
		fut_future *busy = NULL, *f = NULL;
		assert_int_equal(fut_submit(ex, gated, &g, &busy), FUT_OK);
		assert_int_equal(gate_wait_in(&g, 1), 1);
		assert_int_equal(fut_submit(ex, report_thread, NULL, &f),
				 FUT_OK);
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, open_later, &g), 0);
		void *v = NULL;
		assert_int_equal(fut_result(f, FUT_FOREVER, &v), FUT_OK);
		assert_int_not_equal((uintptr_t)v, me);
		pthread_join(th, NULL);
		assert_int_equal(result_of(busy), 1);
		fut_release(busy);
		fut_release(f);
	}
	fut_executor_free(ex);
}

static void sleep_200ms(fut_task *t)
{
	sleep_ms(200);
	fut_task_return(t, (void *)1);
}

/* FIRST_COMPLETED in main returns once the first future completes; the
 * other, queued behind it on a one-worker pool, is not run by main. */
static void test_first_completed_returns_at_the_first(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	struct gate g;
	gate_init(&g);
	fut_future *fs[2];
	assert_int_equal(fut_submit(ex, sleep_200ms, NULL, &fs[0]), FUT_OK);
	assert_int_equal(fut_submit(ex, gated, &g, &fs[1]), FUT_OK);
	assert_int_equal(fut_wait(fs, 2, FUT_FIRST_COMPLETED, FUT_FOREVER),
			 FUT_OK);
	assert_true(fut_done(fs[0]));
	assert_false(fut_done(fs[1]));
	gate_open(&g);
	assert_int_equal(result_of(fs[1]), 1);
	gate_fini(&g);
	release_all(fs, 2);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* The cap                                                             */

struct cap {
	fut_executor *ex;
	_Atomic int running, most;
	bool nested;
};

static void cap_enter(struct cap *c)
{
	int now = atomic_fetch_add(&c->running, 1) + 1;
	int most = atomic_load(&c->most);
	while (now > most &&
	       !atomic_compare_exchange_weak(&c->most, &most, now))
		;
}

static void cap_leave(struct cap *c)
{
	atomic_fetch_sub(&c->running, 1);
}

static void capped(fut_task *t);

static void capped_child(fut_task *t)
{
	struct cap *c = fut_task_arg(t);
	cap_enter(c);
	sleep_ms(1);
	cap_leave(c);
	fut_task_return(t, (void *)1);
}

/* Counts itself running while it runs; a nested one waits (untimed) on a
 * child, not counting itself meanwhile: it gave its slot up. */
static void capped(fut_task *t)
{
	struct cap *c = fut_task_arg(t);
	uintptr_t ok = 1;
	cap_enter(c);
	sleep_ms(2);
	if (c->nested) {
		fut_future *f = NULL;
		cap_leave(c);
		ok = fut_submit(c->ex, capped_child, c, &f) == FUT_OK &&
		     fut_result(f, FUT_FOREVER, NULL) == FUT_OK;
		fut_release(f);
		cap_enter(c);
	}
	cap_leave(c);
	fut_task_return(t, (void *)ok);
}

static void test_at_most_max_workers_tasks_run_at_once(void **state)
{
	(void)state;
	for (int nested = 0; nested < 2; nested++) {
		struct cap c = { .ex = new_pool(16), .nested = nested };
		atomic_init(&c.running, 0);
		atomic_init(&c.most, 0);
		fut_future *fs[64];
		for (int i = 0; i < 64; i++)
			assert_int_equal(fut_submit(c.ex, capped, &c, &fs[i]),
					 FUT_OK);
		/* Untimed: a wait that ran a task inline would make 17. */
		assert_int_equal(fut_wait(fs, 64, FUT_ALL_COMPLETED,
					  FUT_FOREVER),
				 FUT_OK);
		for (int i = 0; i < 64; i++)
			assert_int_equal(result_of(fs[i]), 1);
		release_all(fs, 64);
		assert_in_range(atomic_load(&c.most), 1, 16);
		fut_executor_free(c.ex);
	}
}

/* max_queue bounds the tasks submitted and not finished, however four
 * submitters interleave: at most max_queue queued plus the one running. */
struct bounded {
	fut_executor *ex;
	_Atomic long submitted, finished, most;
};

static void counted(fut_task *t)
{
	struct bounded *b = fut_task_arg(t);
	for (volatile int i = 0; i < 2000; i++)
		;
	atomic_fetch_add(&b->finished, 1);
}

static void *bounded_submitter(void *arg)
{
	struct bounded *b = arg;
	for (int i = 0; i < 500; i++) {
		fut_future *f = NULL;
		if (fut_submit(b->ex, counted, b, &f) != FUT_OK)
			break;
		long out = atomic_fetch_add(&b->submitted, 1) + 1 -
			   atomic_load(&b->finished);
		long most = atomic_load(&b->most);
		while (out > most &&
		       !atomic_compare_exchange_weak(&b->most, &most, out))
			;
		fut_release(f);
	}
	return NULL;
}

static void test_max_queue_holds_with_many_submitters(void **state)
{
	(void)state;
	struct bounded b = { 0 };
	assert_int_equal(
		fut_thread_pool_new(&b.ex,
				    &(fut_thread_pool_opts){ .max_workers = 1,
							     .max_queue = 64 }),
		FUT_OK);
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(
			pthread_create(&th[i], NULL, bounded_submitter, &b), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(fut_executor_shutdown(b.ex, 0), FUT_OK);
	assert_int_equal(atomic_load(&b.finished), 2000);
	assert_in_range(atomic_load(&b.most), 1, 64 + 1);
	fut_executor_free(b.ex);
}

/* ------------------------------------------------------------------ */
/* Start order                                                         */

struct order {
	_Atomic uintptr_t next;
};

static void record_start(fut_task *t)
{
	struct order *o = fut_task_arg(t);
	fut_task_return(t, (void *)atomic_fetch_add(&o->next, 1));
}

static void test_tasks_start_in_submission_order(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	struct order o;
	atomic_init(&o.next, 0);
	enum {
		N = 500
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		assert_int_equal(fut_submit(ex, record_start, &o, &fs[i]),
				 FUT_OK);
	for (uintptr_t i = 0; i < N; i++)
		assert_int_equal(result_of(fs[i]), i);
	release_all(fs, N);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* Bad counts                                                          */

static void test_bad_counts_are_refused_before_any_element(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *sentinel = (fut_future *)(uintptr_t)0x1234;
	fut_future *out[4] = { sentinel, sentinel, sentinel, sentinel };
	unsigned char in[32] = { 0 };
	const size_t bad[] = { SIZE_MAX, SIZE_MAX / 2, FUT_MAX_COUNT + 1 };
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		assert_int_equal(fut_submit_many(ex, tiny, in, 8, bad[k], out),
				 FUT_EINVAL);
		assert_int_equal(fut_submit_many(ex, tiny, in, 0, bad[k], out),
				 FUT_EINVAL);
		for (int i = 0; i < 4; i++)
			assert_ptr_equal(out[i], sentinel);
		assert_int_equal(fut_wait(out, bad[k], FUT_ALL_COMPLETED, 0),
				 FUT_EINVAL);
		fut_as_completed *it = (fut_as_completed *)(uintptr_t)1;
		assert_int_equal(fut_as_completed_new(&it, out, bad[k]),
				 FUT_EINVAL);
		assert_null(it);
	}
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* A task that waits for itself                                        */

/* What wait_on_itself saw: its own future (set by the submitter), then
 * the codes of its waits. */
struct self_wait {
	fut_future *_Atomic self;
	fut_future *done;  /* a future already done */
	fut_future *inner; /* the task run inline below, or NULL */
	int rc[12];
	void *value;
	const void *data;
	size_t len;
};

static fut_future *own_future(struct self_wait *s)
{
	fut_future *f;
	while ((f = atomic_load(&s->self)) == NULL)
		sched_yield();
	return f;
}

static void wait_on_itself(fut_task *t)
{
	struct self_wait *s = fut_task_arg(t);
	fut_future *f = own_future(s);
	fut_future *two[2] = { f, s->done };
	s->value = (void *)1;
	s->data = (void *)1;
	s->len = 1;
	s->rc[0] = fut_result(f, FUT_FOREVER, &s->value);
	s->rc[1] = fut_result_bytes(f, FUT_FOREVER, &s->data, &s->len);
	s->rc[2] = fut_wait(&f, 1, FUT_ALL_COMPLETED, FUT_FOREVER);
	s->rc[3] = fut_wait(&f, 1, FUT_FIRST_COMPLETED, FUT_FOREVER);
	s->rc[4] = fut_wait(&f, 1, FUT_FIRST_EXCEPTION, FUT_FOREVER);
	s->rc[5] = fut_wait(two, 2, FUT_ALL_COMPLETED, FUT_FOREVER);
	/* The condition holds through the other one: no refusal. */
	s->rc[6] = fut_wait(two, 2, FUT_FIRST_COMPLETED, FUT_FOREVER);
	/* A timed wait runs out as any. */
	s->rc[7] = fut_result(f, 0.001, NULL);
	s->rc[8] = fut_wait(&f, 1, FUT_ALL_COMPLETED, 0.001);
	/* An iterator: the done one first, then nothing else can come. */
	fut_as_completed *it = NULL;
	fut_future *next = NULL;
	if (fut_as_completed_new(&it, two, 2) != FUT_OK)
		return;
	s->rc[9] = fut_as_completed_next(it, FUT_FOREVER, &next);
	s->rc[10] = fut_as_completed_next(it, FUT_FOREVER, &next);
	s->rc[11] = fut_as_completed_next(it, 0.001, &next);
	fut_as_completed_free(it);
}

/* Run inline by its submitter's untimed wait (one worker): it waits for
 * that submitter, whose task lies below it on the same thread. */
static void wait_on_outer(fut_task *t)
{
	struct self_wait *s = fut_task_arg(t);
	s->rc[1] = fut_result(own_future(s), FUT_FOREVER, NULL);
}

static void submit_and_wait_inline(fut_task *t)
{
	struct self_wait *s = fut_task_arg(t);
	(void)own_future(s);
	fut_executor *ex = (fut_executor *)s->value;
	if (fut_submit(ex, wait_on_outer, s, &s->inner) == FUT_OK)
		s->rc[0] = fut_result(s->inner, FUT_FOREVER, NULL);
}

static void test_a_task_waiting_for_itself_is_einval(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	struct self_wait s = { .rc = { -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
				       -1, -1 } };
	assert_int_equal(fut_future_new(&s.done), FUT_OK);
	assert_int_equal(fut_set_result(s.done, NULL), FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, wait_on_itself, &s, &f), FUT_OK);
	atomic_store(&s.self, f);
	/* It hung here, its waits never ending. */
	assert_int_equal(fut_result(f, 10, NULL), FUT_OK);
	assert_int_equal(s.rc[0], FUT_EINVAL);
	assert_null(s.value);
	assert_int_equal(s.rc[1], FUT_EINVAL);
	assert_null(s.data);
	assert_int_equal(s.len, 0);
	for (int i = 2; i < 6; i++)
		assert_int_equal(s.rc[i], FUT_EINVAL);
	assert_int_equal(s.rc[6], FUT_OK);
	assert_int_equal(s.rc[7], FUT_ETIMEDOUT);
	assert_int_equal(s.rc[8], FUT_ETIMEDOUT);
	assert_int_equal(s.rc[9], FUT_OK);
	assert_int_equal(s.rc[10], FUT_EINVAL);
	assert_int_equal(s.rc[11], FUT_ETIMEDOUT);
	fut_release(f);

	struct self_wait in = { .rc = { -1, -1 }, .value = ex };
	assert_int_equal(fut_submit(ex, submit_and_wait_inline, &in, &f),
			 FUT_OK);
	atomic_store(&in.self, f);
	assert_int_equal(fut_result(f, 10, NULL), FUT_OK);
	assert_int_equal(in.rc[0], FUT_OK);
	assert_int_equal(in.rc[1], FUT_EINVAL);
	fut_release(in.inner);
	fut_release(f);
	fut_release(s.done);
	fut_executor_free(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_n_tasks_on_a_gate_all_start_one_by_one),
		cmocka_unit_test(
			test_n_tasks_on_a_gate_all_start_by_submit_many),
		cmocka_unit_test(test_n_tasks_on_a_gate_all_start_from_a_task),
		cmocka_unit_test(
			test_n_tasks_on_a_gate_all_start_after_a_burst),
		cmocka_unit_test(
			test_n_tasks_on_a_gate_all_start_from_callbacks),
		cmocka_unit_test(
			test_a_barrier_of_n_tasks_on_n_workers_completes),
		cmocka_unit_test(test_sleeping_tasks_complete_in_reverse_order),
		cmocka_unit_test(test_a_task_and_its_helper_shake_hands),
		cmocka_unit_test(
			test_a_chain_of_waiting_tasks_ends_with_a_result_or_a_code),
		cmocka_unit_test(test_a_timed_wait_in_a_task_never_runs_a_task),
		cmocka_unit_test(
			test_a_thread_outside_the_pool_never_runs_a_task),
		cmocka_unit_test(test_first_completed_returns_at_the_first),
		cmocka_unit_test(test_at_most_max_workers_tasks_run_at_once),
		cmocka_unit_test(test_max_queue_holds_with_many_submitters),
		cmocka_unit_test(test_tasks_start_in_submission_order),
		cmocka_unit_test(
			test_bad_counts_are_refused_before_any_element),
		cmocka_unit_test(test_a_task_waiting_for_itself_is_einval),
	};
	/* TEST_FILTER=pattern runs the matching tests only. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
