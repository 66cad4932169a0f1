/*
 * test_contract_review.c: the public contract as a user sees it across
 * executors, pinned by the review of 2026-12-06 (wing H): the same task
 * on a thread pool and a process pool, the codes docs/api.md names for
 * each call (one table), waits and iterators over futures of several
 * executors, done callbacks that submit, cancel or free, and the
 * as_completed fd in an epoll loop.
 * Bug it found (the test failed before the fix):
 * - fut_task_fail(t, code, NULL) on a process pool (and the MPI
 *   executor) gave the caller an empty message: the worker sent no
 *   bytes, the manager made "" of them.  docs/api.md: "fmt NULL: the
 *   code's text", and fut_error_message() is "the code's fut_strerror()
 *   text" where no message was given, as a thread pool gives.
 *
 * Timeouts here only guard against hangs (GUARD_S).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"

#define GUARD_S 60.0 /* a guard against a hang, never a measurement */

/* ------------------------------------------------------------------ */
/* One task for every executor: an op in its input                     */

enum op {
	OP_ECHO,	 /* returns its input */
	OP_FAIL_NULL,	 /* fut_task_fail(t, 7, NULL) */
	OP_FAIL_EMPTY,	 /* fut_task_fail(t, 8, "") */
	OP_FAIL_TEXT,	 /* fut_task_fail(t, 9, "bad %d", 42) */
	OP_SETTLE_TWICE, /* bytes, then every other settle is FUT_ESTATE */
	OP_BAD_ARGS,	 /* every task call with bad input is refused */
	OP_POINTER,	 /* fut_task_return: FUT_ENOTSUP on a process pool */
};

struct input {
	int op;
	char text[12];
};

static void task(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	struct input req;
	if (in == NULL || len != sizeof(req)) {
		fut_task_fail(t, 1, "input of %zu bytes", len);
		return;
	}
	memcpy(&req, in, sizeof(req));
	switch (req.op) {
	case OP_ECHO:
		fut_task_return_bytes(t, req.text, strlen(req.text));
		break;
	case OP_FAIL_NULL:
		fut_task_fail(t, 7, NULL);
		break;
	case OP_FAIL_EMPTY:
		fut_task_fail(t, 8, "%s", "");
		break;
	case OP_FAIL_TEXT:
		fut_task_fail(t, 9, "bad %d", 42);
		break;
	case OP_SETTLE_TWICE: {
		int a = fut_task_return_bytes(t, "a", 1);
		int b = fut_task_return_bytes(t, "b", 1);
		int c = fut_task_fail(t, 1, NULL);
		int d = fut_task_return(t, NULL);
		void *e = fut_task_result_buffer(t, 4);
		if (a != FUT_OK || b != FUT_ESTATE || c != FUT_ESTATE ||
		    d != FUT_ESTATE || e != NULL)
			abort(); /* the caller sees it as a crash or a death */
		break;
	}
	case OP_BAD_ARGS: {
		unsigned bad = 0;
		bad |= (fut_task_return_bytes(NULL, "x", 1) != FUT_EINVAL) << 0;
		bad |= (fut_task_return_bytes(t, NULL, 1) != FUT_EINVAL) << 1;
		bad |= (fut_task_return_bytes(t, "x", FUT_MAX_BYTES + 1) !=
			FUT_EINVAL)
		       << 2;
		bad |= (fut_task_return(NULL, NULL) != FUT_EINVAL) << 3;
		bad |= (fut_task_fail(NULL, 1, NULL) != FUT_EINVAL) << 4;
		bad |= (fut_task_result_buffer(NULL, 1) != NULL) << 5;
		bad |= (fut_task_result_buffer(t, FUT_MAX_BYTES + 1) != NULL)
		       << 6;
		bad |= (fut_task_input(NULL, NULL) != NULL) << 7;
		bad |= (fut_task_arg(NULL) != NULL) << 8;
		bad |= fut_task_cancelled(NULL) << 9;
		bad |= (fut_task_arg(t) != NULL) << 10; /* a byte task */
		if (bad != 0)
			fut_task_fail(t, (int)bad, "bad args %#x", bad);
		break;
	}
	case OP_POINTER:
		fut_task_return(t, &req);
		break;
	default:
		fut_task_fail(t, 2, "unknown op %d", req.op);
	}
}

static fut_future *submit_op(fut_executor *ex, int op, const char *text)
{
	struct input req;
	memset(&req, 0, sizeof(req));
	req.op = op;
	if (text != NULL)
		snprintf(req.text, sizeof(req.text), "%s", text);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, task, &req, sizeof(req), &f),
			 FUT_OK);
	assert_non_null(f);
	return f;
}

static fut_executor *new_pool(bool process, size_t workers)
{
	fut_executor *ex = NULL;
	fut_thread_pool_opts t = { .max_workers = workers };
	fut_process_pool_opts p = { .max_workers = workers };
	assert_int_equal(process ? fut_process_pool_new(&ex, &p) :
				   fut_thread_pool_new(&ex, &t),
			 FUT_OK);
	return ex;
}

/* ------------------------------------------------------------------ */
/* The failure message: the same on every executor                     */

static void check_messages(bool process)
{
	fut_executor *ex = new_pool(process, 2);
	fut_future *none = submit_op(ex, OP_FAIL_NULL, NULL);
	fut_future *empty = submit_op(ex, OP_FAIL_EMPTY, NULL);
	fut_future *text = submit_op(ex, OP_FAIL_TEXT, NULL);

	assert_int_equal(fut_result(none, GUARD_S, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(none), 7);
	assert_non_null(fut_error_message(none));
	assert_string_equal(fut_error_message(none), fut_strerror(FUT_ETASK));

	/* A message given, even empty, is the message. */
	assert_int_equal(fut_result(empty, GUARD_S, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(empty), 8);
	assert_non_null(fut_error_message(empty));
	assert_string_equal(fut_error_message(empty), "");

	assert_int_equal(fut_result(text, GUARD_S, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(text), 9);
	assert_string_equal(fut_error_message(text), "bad 42");

	fut_future *all[] = { none, empty, text };
	for (size_t i = 0; i < 3; i++)
		fut_release(all[i]);
	fut_executor_free(ex);
}

static void
test_a_failure_without_message_reads_the_code_text_on_threads(void **state)
{
	(void)state;
	check_messages(false);
}

static void
test_a_failure_without_message_reads_the_code_text_on_processes(void **state)
{
	(void)state;
	check_messages(true);
}

/* ------------------------------------------------------------------ */
/* The same task on both pools                                         */

static void check_same_task(bool process)
{
	fut_executor *ex = new_pool(process, 2);
	fut_future *echo = submit_op(ex, OP_ECHO, "hello");
	fut_future *twice = submit_op(ex, OP_SETTLE_TWICE, NULL);
	fut_future *bad = submit_op(ex, OP_BAD_ARGS, NULL);
	fut_future *ptr = submit_op(ex, OP_POINTER, NULL);
	const void *data = NULL;
	size_t len = 0;

	assert_int_equal(fut_result_bytes(echo, GUARD_S, &data, &len), FUT_OK);
	assert_int_equal(len, 5);
	assert_memory_equal(data, "hello", 5);
	assert_int_equal((uintptr_t)data % 8, 0);

	assert_int_equal(fut_result_bytes(twice, GUARD_S, &data, &len), FUT_OK);
	assert_int_equal(len, 1);
	assert_memory_equal(data, "a", 1);

	if (fut_result(bad, GUARD_S, NULL) != FUT_OK)
		fail_msg("bad args: %s", fut_error_message(bad));

	/* A pointer cannot cross to another process. */
	void *value = NULL;
	assert_int_equal(fut_result(ptr, GUARD_S, &value),
			 process ? FUT_ENOTSUP : FUT_OK);
	assert_true(process ? value == NULL : value != NULL);

	fut_future *all[] = { echo, twice, bad, ptr };
	for (size_t i = 0; i < 4; i++)
		fut_release(all[i]);
	fut_executor_free(ex);
}

static void test_the_same_task_keeps_its_contract_on_threads(void **state)
{
	(void)state;
	check_same_task(false);
}

static void test_the_same_task_keeps_its_contract_on_processes(void **state)
{
	(void)state;
	check_same_task(true);
}

/* ------------------------------------------------------------------ */
/* Every documented code where docs/api.md names it: one table          */

struct row {
	const char *call;
	int got, want;
};

#define ROW(expr, code)                                                        \
	{                                                                      \
#expr, (int)(expr), code                                       \
	}

static void check_rows(const char *where, const struct row *rows, size_t n)
{
	size_t wrong = 0;
	for (size_t i = 0; i < n; i++) {
		if (rows[i].got == rows[i].want)
			continue;
		print_error("%s: %s gave %d (%s), want %d (%s)\n", where,
			    rows[i].call, rows[i].got,
			    fut_strerror(rows[i].got), rows[i].want,
			    fut_strerror(rows[i].want));
		wrong++;
	}
	assert_int_equal(wrong, 0);
}

static void check_executor_codes(bool process)
{
	fut_executor *ex = new_pool(process, 1);
	fut_future *f = NULL, *g = NULL, *fs[3] = { NULL, NULL, NULL };
	fut_future *done = submit_op(ex, OP_ECHO, "x");
	fut_future *failed = submit_op(ex, OP_FAIL_TEXT, NULL);
	assert_int_equal(fut_result(done, GUARD_S, NULL), FUT_OK);
	assert_int_equal(fut_result(failed, GUARD_S, NULL), FUT_ETASK);
	const void *data = NULL;
	size_t len = 0;
	int status = -1;
	struct input req = { .op = OP_ECHO };
	const struct row rows[] = {
		ROW(fut_submit(ex, task, NULL, &f),
		    process ? FUT_ENOTSUP : FUT_OK),
		ROW(fut_submit(NULL, task, NULL, &g), FUT_EINVAL),
		ROW(fut_submit(ex, NULL, NULL, &g), FUT_EINVAL),
		ROW(fut_submit(ex, task, NULL, NULL), FUT_EINVAL),
		ROW(fut_submit_bytes(ex, task, NULL, 1, &g), FUT_EINVAL),
		ROW(fut_submit_bytes(ex, task, &req, FUT_MAX_BYTES + 1, &g),
		    FUT_EINVAL),
		ROW(fut_submit_bytes(ex, NULL, &req, sizeof(req), &g),
		    FUT_EINVAL),
		ROW(fut_submit_many(ex, task, NULL, 0, 0, NULL), FUT_OK),
		ROW(fut_submit_many(NULL, task, NULL, 0, 0, NULL), FUT_EINVAL),
		ROW(fut_submit_many(ex, task, NULL, 4, 3, fs), FUT_EINVAL),
		ROW(fut_submit_many(ex, task, &req, sizeof(req), 1, NULL),
		    FUT_EINVAL),
		ROW(fut_submit_many(ex, task, &req, sizeof(req),
				    FUT_MAX_COUNT + 1, fs),
		    FUT_EINVAL),
		ROW(fut_executor_shutdown(NULL, 0), FUT_EINVAL),
		ROW(fut_executor_shutdown(ex, 0x80), FUT_EINVAL),
		ROW(fut_result_bytes(done, 0, &data, NULL), FUT_EINVAL),
		ROW(fut_result_bytes(done, 0, NULL, &len), FUT_EINVAL),
		ROW(fut_result_bytes(NULL, 0, &data, &len), FUT_EINVAL),
		ROW(fut_result(NULL, 0, NULL), FUT_EINVAL),
		ROW(fut_result(failed, 0, NULL), FUT_ETASK),
		ROW(fut_error(failed), FUT_ETASK),
		ROW(fut_error(done), FUT_OK),
		ROW(fut_state(done), FUT_FINISHED),
		ROW(fut_crash_status(done, &status), FUT_ESTATE),
		ROW(status, 0),
		ROW(fut_crash_status(done, NULL), FUT_EINVAL),
		ROW(fut_interrupt(done), FUT_ESTATE),
		ROW(fut_interrupt(NULL), FUT_EINVAL),
		ROW(fut_cancel(done), false),
		ROW(fut_set_result(done, NULL), FUT_EINVAL),
		ROW(fut_set_error(done, 1, NULL), FUT_EINVAL),
		ROW(fut_set_running(done), FUT_EINVAL),
		ROW(fut_add_done_callback(done, NULL, NULL), FUT_EINVAL),
		ROW(fut_task_code(done), 0),
		ROW(fut_error_message(done) == NULL, true),
		ROW(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT), FUT_OK),
		ROW(fut_submit_bytes(ex, task, &req, sizeof(req), &g),
		    FUT_ESHUTDOWN),
		ROW(g == NULL, true),
		ROW(fut_submit_many(ex, task, &req, sizeof(req), 1, fs),
		    FUT_ESHUTDOWN),
		ROW(fs[0] == NULL, true),
		ROW(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT), FUT_OK),
		ROW(fut_executor_shutdown(ex, 0), FUT_OK),
	};
	check_rows(process ? "process pool" : "thread pool", rows,
		   sizeof(rows) / sizeof(rows[0]));
	fut_release(f);
	fut_release(done);
	fut_release(failed);
	fut_executor_free(ex);
}

static void test_every_executor_call_gives_its_documented_code(void **state)
{
	(void)state;
	check_executor_codes(false);
	check_executor_codes(true);
}

static void test_every_future_call_gives_its_documented_code(void **state)
{
	(void)state;
	fut_future *p = NULL, *c = NULL, *none[1] = { NULL };
	fut_as_completed *it = NULL, *bad = NULL;
	assert_int_equal(fut_future_new(&p), FUT_OK);
	assert_int_equal(fut_future_new(&c), FUT_OK);
	assert_int_equal(fut_as_completed_new(&it, NULL, 0), FUT_OK);
	fut_future *out = NULL;
	const struct row rows[] = {
		ROW(fut_thread_pool_new(NULL, NULL), FUT_EINVAL),
		ROW(fut_process_pool_new(NULL, NULL), FUT_EINVAL),
		ROW(fut_future_new(NULL), FUT_EINVAL),
		ROW(fut_error(p), FUT_ESTATE),
		ROW(fut_error_message(p) == NULL, true),
		ROW(fut_result(p, 0, NULL), FUT_ETIMEDOUT),
		ROW(fut_wait(&p, 1, FUT_ALL_COMPLETED, 0), FUT_ETIMEDOUT),
		ROW(fut_wait(&p, 1, 0, 0), FUT_EINVAL),
		ROW(fut_wait(NULL, 1, FUT_ALL_COMPLETED, 0), FUT_EINVAL),
		ROW(fut_wait(none, 1, FUT_FIRST_COMPLETED, 0), FUT_EINVAL),
		ROW(fut_wait(NULL, 0, FUT_FIRST_EXCEPTION, 0), FUT_OK),
		ROW(fut_wait(&p, FUT_MAX_COUNT + 1, FUT_ALL_COMPLETED, 0),
		    FUT_EINVAL),
		ROW(fut_set_result_bytes(p, NULL, 1), FUT_EINVAL),
		ROW(fut_set_result_bytes(p, "x", FUT_MAX_BYTES + 1),
		    FUT_EINVAL),
		ROW(fut_set_running(NULL), FUT_EINVAL),
		ROW(fut_set_running(p), FUT_OK),
		ROW(fut_set_running(p), FUT_ESTATE),
		ROW(fut_state(p), FUT_RUNNING),
		ROW(fut_cancel(p), false),
		ROW(fut_interrupt(p), FUT_OK),
		ROW(fut_set_error(p, 3, NULL), FUT_OK),
		ROW(fut_set_error(p, 3, NULL), FUT_ESTATE),
		ROW(fut_set_result(p, NULL), FUT_ESTATE),
		ROW(fut_set_result_bytes(p, "x", 1), FUT_ESTATE),
		ROW(fut_interrupt(p), FUT_ESTATE),
		ROW(fut_result(p, 0, NULL), FUT_ETASK),
		ROW(fut_task_code(p), 3),
		ROW(strcmp(fut_error_message(p), fut_strerror(FUT_ETASK)), 0),
		ROW(fut_cancel(c), true),
		ROW(fut_cancel(c), true),
		ROW(fut_set_running(c), FUT_ECANCELLED),
		ROW(fut_set_result(c, NULL), FUT_ESTATE),
		ROW(fut_result(c, 0, NULL), FUT_ECANCELLED),
		ROW(fut_error(c), FUT_ECANCELLED),
		ROW(fut_state(c), FUT_CANCELLED),
		ROW(fut_wait(&c, 1, FUT_FIRST_EXCEPTION, 0), FUT_OK),
		ROW(strcmp(fut_error_message(c), fut_strerror(FUT_ECANCELLED)),
		    0),
		ROW(fut_as_completed_new(NULL, &p, 1), FUT_EINVAL),
		ROW(fut_as_completed_new(&bad, none, 1), FUT_EINVAL),
		ROW(fut_as_completed_new(&bad, NULL, 1), FUT_EINVAL),
		ROW(bad == NULL, true),
		ROW(fut_as_completed_next(it, 0, &out), FUT_END),
		ROW(fut_as_completed_next(it, 0, NULL), FUT_EINVAL),
		ROW(fut_as_completed_next(NULL, 0, &out), FUT_EINVAL),
		ROW(fut_as_completed_add(it, NULL), FUT_EINVAL),
		ROW(fut_as_completed_add(NULL, p), FUT_EINVAL),
		ROW(fut_as_completed_add(it, c), FUT_OK),
		ROW(fut_as_completed_add(it, c), FUT_OK),
		ROW(fut_as_completed_next(it, 0, &out), FUT_OK),
		ROW(out == c, true),
		ROW(fut_as_completed_add(it, c), FUT_OK),
		ROW(fut_as_completed_next(it, 0, &out), FUT_END),
		ROW(fut_as_completed_fd(NULL), -1),
	};
	check_rows("futures", rows, sizeof(rows) / sizeof(rows[0]));
	fut_as_completed_free(it);
	fut_release(p);
	fut_release(c);
}

/* ------------------------------------------------------------------ */
/* Many executors at once                                              */

static void test_waits_mix_executors_and_duplicates(void **state)
{
	(void)state;
	fut_executor *tp = new_pool(false, 2), *pp = new_pool(true, 2);
	fut_future *standalone = NULL;
	assert_int_equal(fut_future_new(&standalone), FUT_OK);
	fut_future *fs[6] = {
		submit_op(tp, OP_ECHO, "t"),
		submit_op(pp, OP_ECHO, "p"),
		standalone,
		submit_op(pp, OP_FAIL_TEXT, NULL),
	};
	fs[4] = fs[2]; /* the same future twice */
	fs[5] = fs[3];
	/* The failure, whatever the standalone does. */
	assert_int_equal(fut_wait(fs, 6, FUT_FIRST_EXCEPTION, GUARD_S), FUT_OK);
	assert_int_equal(fut_error(fs[3]), FUT_ETASK);
	assert_int_equal(fut_wait(fs, 6, FUT_ALL_COMPLETED, 0), FUT_ETIMEDOUT);
	assert_true(fut_cancel(standalone));
	assert_int_equal(fut_wait(fs, 6, FUT_ALL_COMPLETED, GUARD_S), FUT_OK);

	/* Each yielded once, the duplicates too. */
	fut_as_completed *it = NULL;
	assert_int_equal(fut_as_completed_new(&it, fs, 6), FUT_OK);
	fut_future *f = NULL;
	unsigned seen = 0;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
		for (unsigned k = 0; k < 4; k++)
			if (f == fs[k]) {
				assert_false(seen & (1u << k));
				seen |= 1u << k;
			}
	}
	assert_int_equal(seen, 0xf);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	fut_as_completed_free(it);
	for (int i = 0; i < 4; i++)
		fut_release(fs[i]);
	fut_executor_free(tp);
	fut_executor_free(pp);
}

struct cross {
	fut_executor *other;
	fut_future *cancel_me;
	atomic_int calls, wrong;
};

/* Submits to another executor, waits for it, cancels a future. */
static void cross_callback(fut_future *f, void *ud)
{
	struct cross *c = ud;
	fut_future *g = submit_op(c->other, OP_ECHO, "cb");
	const void *data = NULL;
	size_t len = 0;
	if (fut_error(f) != FUT_OK ||
	    fut_result_bytes(g, GUARD_S, &data, &len) != FUT_OK || len != 2)
		atomic_fetch_add(&c->wrong, 1);
	fut_release(g);
	(void)fut_cancel(c->cancel_me);
	atomic_fetch_add(&c->calls, 1);
}

static void free_executor(fut_future *f, void *ud)
{
	(void)f;
	fut_executor_free(ud);
}

static void check_callbacks_across(bool process)
{
	fut_executor *ex = new_pool(process, 2), *other = new_pool(!process, 2);
	struct cross c = { .other = other };
	assert_int_equal(fut_future_new(&c.cancel_me), FUT_OK);
	fut_future *fs[8];
	for (int i = 0; i < 8; i++) {
		fs[i] = submit_op(ex, OP_ECHO, "x");
		assert_int_equal(fut_add_done_callback(fs[i], cross_callback,
						       &c),
				 FUT_OK);
	}
	/* The pool is freed from one of its own callbacks: it does not wait
	 * for itself, and every future still completes. */
	assert_int_equal(fut_add_done_callback(fs[7], free_executor, ex),
			 FUT_OK);
	assert_int_equal(fut_wait(fs, 8, FUT_ALL_COMPLETED, GUARD_S), FUT_OK);
	for (int i = 0; i < 8; i++)
		assert_int_equal(fut_error(fs[i]), FUT_OK);
	/* Callbacks run after the waiters hear of the outcome. */
	while (atomic_load(&c.calls) < 8)
		usleep(1000);
	assert_int_equal(atomic_load(&c.wrong), 0);
	assert_true(fut_cancelled(c.cancel_me));
	for (int i = 0; i < 8; i++)
		fut_release(fs[i]);
	fut_release(c.cancel_me);
	fut_executor_free(other);
}

static void test_callbacks_submit_wait_cancel_and_free_on_threads(void **st)
{
	(void)st;
	check_callbacks_across(false);
}

static void test_callbacks_submit_wait_cancel_and_free_on_processes(void **st)
{
	(void)st;
	check_callbacks_across(true);
}

/* A process pool's done callback runs in its manager thread, the one
 * that completes every task of the pool: an untimed wait there for
 * another of its futures would wait for itself (it hung). */
static void nap_half_a_second(fut_task *t)
{
	(void)t;
	usleep(500 * 1000);
}

static void sleep_a_minute(fut_task *t)
{
	(void)t;
	sleep(60);
}

struct in_manager {
	fut_future *other; /* runs on, until interrupted */
	atomic_int rc[5];
	atomic_int ran;
};

static void wait_in_the_manager(fut_future *f, void *ud)
{
	struct in_manager *m = ud;
	fut_future *two[2] = { m->other, f };
	fut_as_completed *it = NULL;
	fut_future *next = NULL;
	atomic_store(&m->rc[0], fut_result(m->other, FUT_FOREVER, NULL));
	atomic_store(&m->rc[1],
		     fut_wait(&m->other, 1, FUT_ALL_COMPLETED, FUT_FOREVER));
	/* f is done: that wait holds at once. */
	atomic_store(&m->rc[2],
		     fut_wait(two, 2, FUT_FIRST_COMPLETED, FUT_FOREVER));
	if (fut_as_completed_new(&it, &m->other, 1) == FUT_OK)
		atomic_store(&m->rc[3],
			     fut_as_completed_next(it, FUT_FOREVER, &next));
	fut_as_completed_free(it);
	atomic_store(&m->rc[4], fut_result(m->other, 0.001, NULL));
	atomic_store(&m->ran, 1);
}

static void test_a_wait_in_the_process_managers_callback_is_einval(void **st)
{
	(void)st;
	fut_executor *ex = new_pool(true, 2);
	struct in_manager m = { .rc = { -1, -1, -1, -1, -1 } };
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, sleep_a_minute, NULL, 0,
					  &m.other),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(ex, nap_half_a_second, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(f, wait_in_the_manager, &m),
			 FUT_OK);
	for (int i = 0; i < 10000 && !atomic_load(&m.ran); i++)
		usleep(1000);
	assert_int_equal(atomic_load(&m.rc[0]), FUT_EINVAL);
	assert_int_equal(atomic_load(&m.rc[1]), FUT_EINVAL);
	assert_int_equal(atomic_load(&m.rc[2]), FUT_OK);
	assert_int_equal(atomic_load(&m.rc[3]), FUT_EINVAL);
	assert_int_equal(atomic_load(&m.rc[4]), FUT_ETIMEDOUT);
	assert_int_equal(fut_interrupt(m.other), FUT_OK);
	assert_int_equal(fut_result(m.other, GUARD_S, NULL), FUT_ECANCELLED);
	fut_release(m.other);
	fut_release(f);
	fut_executor_free(ex);
}

static void test_as_completed_fd_in_epoll_over_both_pools(void **state)
{
	(void)state;
	fut_executor *tp = new_pool(false, 2), *pp = new_pool(true, 2);
	fut_as_completed *it = NULL;
	assert_int_equal(fut_as_completed_new(&it, NULL, 0), FUT_OK);
	int fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	assert_true(ep >= 0);
	struct epoll_event ev = { .events = EPOLLIN }, got;
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
	/* Empty: FUT_END, which does not block, so readable. */
	assert_int_equal(epoll_wait(ep, &got, 1, 0), 1);
	enum {
		N = 40
	};
	for (int i = 0; i < N; i++) {
		fut_future *f = submit_op(i % 2 ? tp : pp,
					  i % 3 ? OP_ECHO : OP_FAIL_NULL, "e");
		assert_int_equal(fut_as_completed_add(it, f), FUT_OK);
		fut_release(f);
	}
	int yielded = 0, rc = FUT_OK;
	while (rc != FUT_END) {
		int r;
		do
			r = epoll_wait(ep, &got, 1, (int)(GUARD_S * 1000));
		while (r < 0 && errno == EINTR);
		assert_int_equal(r, 1);
		fut_future *f = NULL;
		while ((rc = fut_as_completed_next(it, 0, &f)) == FUT_OK) {
			yielded++;
			assert_true(fut_done(f));
			if (fut_error(f) != FUT_OK)
				assert_string_equal(fut_error_message(f),
						    fut_strerror(FUT_ETASK));
		}
		assert_true(rc == FUT_ETIMEDOUT || rc == FUT_END);
	}
	assert_int_equal(yielded, N);
	assert_int_equal(epoll_wait(ep, &got, 1, 0), 1); /* FUT_END */
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), 0);
	close(ep);
	fut_as_completed_free(it);
	fut_executor_free(tp);
	fut_executor_free(pp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_failure_without_message_reads_the_code_text_on_threads),
		cmocka_unit_test(
			test_a_failure_without_message_reads_the_code_text_on_processes),
		cmocka_unit_test(
			test_the_same_task_keeps_its_contract_on_threads),
		cmocka_unit_test(
			test_the_same_task_keeps_its_contract_on_processes),
		cmocka_unit_test(
			test_every_executor_call_gives_its_documented_code),
		cmocka_unit_test(
			test_every_future_call_gives_its_documented_code),
		cmocka_unit_test(test_waits_mix_executors_and_duplicates),
		cmocka_unit_test(
			test_callbacks_submit_wait_cancel_and_free_on_threads),
		cmocka_unit_test(
			test_callbacks_submit_wait_cancel_and_free_on_processes),
		cmocka_unit_test(test_as_completed_fd_in_epoll_over_both_pools),
		cmocka_unit_test(
			test_a_wait_in_the_process_managers_callback_is_einval),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
