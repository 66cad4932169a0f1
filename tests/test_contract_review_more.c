/*
 * test_contract_review_more.c: more of the review of 2026-12-06 (wing
 * H), beside test_contract_review.c (which is full).
 *
 * Bug it found (the test failed before the fix):
 * - fut_error_message() of a process-pool future that fut_interrupt()
 *   (or FUT_SHUTDOWN_INTERRUPT) ended FUT_ECANCELLED gave
 *   "future was cancelled", not the message the pool gave it
 *   ("interrupted: worker process N killed"): every FUT_ECANCELLED
 *   outcome was read as a cancel, which writes no message.  docs/api.md:
 *   the code's text only "where no message was given".
 *
 * Review of 2026-12-07 (thirteenth session), failed before the fix:
 * - fut_task_fail() with a format the locale cannot write (a %ls of a
 *   character the C locale has no byte for: vsnprintf fails, EILSEQ)
 *   returned FUT_ENOMEM and settled no message, the code's text in its
 *   place.  The message is the format itself now, and the call FUT_OK.
 *
 * A user's trial, 2026-12-07 (fifteenth session), failed before the fix:
 * - an empty byte result (fut_task_return_bytes(t, NULL, 0),
 *   fut_task_result_buffer(t, 0), fut_set_result_bytes(f, NULL, 0)) gave
 *   fut_result_bytes() a NULL *data on every executor; docs/api.md
 *   promises 8-aligned bytes (and "a valid pointer to no bytes" for the
 *   buffer), and NULL is what a failure gives.
 * - a process pool's done callbacks ran in its manager thread with every
 *   signal blocked: a process a callback started ignored SIGTERM.  They
 *   run with the mask of the thread that made the pool now.
 *
 * Timeouts here only guard against hangs (GUARD_S).
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include <cmocka.h>

#include "future.h"

#define GUARD_S 60.0 /* a guard against a hang, never a measurement */

/* Runs until its worker is killed (the guard ends it otherwise). */
static void until_killed(fut_task *t)
{
	(void)t;
	for (int i = 0; i < 600; i++)
		usleep(100 * 1000);
}

static void wait_running(fut_future *f)
{
	for (int i = 0; i < 60000 && fut_state(f) == FUT_PENDING; i++)
		usleep(1000);
	assert_int_equal(fut_state(f), FUT_RUNNING);
}

static void check_interrupted(fut_future *f)
{
	assert_int_equal(fut_result(f, GUARD_S, NULL), FUT_ECANCELLED);
	const char *msg = fut_error_message(f);
	assert_non_null(msg);
	if (strncmp(msg, "interrupted", 11) != 0)
		fail_msg("message \"%s\", want the pool's \"interrupted...\"",
			 msg);
}

static void test_an_interrupted_process_task_keeps_its_message(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	fut_process_pool_opts o = { .max_workers = 2 };
	assert_int_equal(fut_process_pool_new(&ex, &o), FUT_OK);
	fut_future *f = NULL, *g = NULL, *queued = NULL;
	assert_int_equal(fut_submit_bytes(ex, until_killed, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(ex, until_killed, NULL, 0, &g),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(ex, until_killed, NULL, 0, &queued),
			 FUT_OK);
	wait_running(f);
	wait_running(g);
	/* Behind two tasks that never end: a cancel still reads the
	 * code's text. */
	assert_true(fut_cancel(queued));
	assert_string_equal(fut_error_message(queued),
			    fut_strerror(FUT_ECANCELLED));

	assert_int_equal(fut_interrupt(f), FUT_OK);
	check_interrupted(f);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT),
			 FUT_OK);
	check_interrupted(g);
	fut_release(f);
	fut_release(g);
	fut_release(queued);
	fut_executor_free(ex);
}

/* Fails with a message the C locale cannot write; returns the call's
 * code as the task code. */
static void fail_unwritable(fut_task *t)
{
	int rc = fut_task_fail(t, 0, "bad %ls", L"\u00e9");
	(void)fut_task_fail(t, rc, "not settled twice"); /* FUT_ESTATE */
}

static void
test_a_failure_the_locale_cannot_write_keeps_its_format(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, fail_unwritable, NULL, &f), FUT_OK);
	assert_int_equal(fut_result(f, GUARD_S, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(f), FUT_OK); /* the call's code */
	assert_string_equal(fut_error_message(f), "bad %ls");
	fut_release(f);
	fut_executor_free(ex);
}

static void return_no_bytes(fut_task *t)
{
	assert_int_equal(fut_task_return_bytes(t, NULL, 0), FUT_OK);
}

static void buffer_of_no_bytes(fut_task *t)
{
	assert_non_null(fut_task_result_buffer(t, 0));
}

static void check_empty(fut_future *f)
{
	const void *d = NULL;
	size_t len = 7;
	assert_int_equal(fut_result_bytes(f, GUARD_S, &d, &len), FUT_OK);
	assert_int_equal(len, 0);
	assert_non_null(d);
	assert_int_equal((uintptr_t)d % 8, 0);
	fut_release(f);
}

static void test_an_empty_byte_result_is_a_valid_pointer(void **state)
{
	(void)state;
	for (int kind = 0; kind < 2; kind++) {
		fut_executor *ex = NULL;
		assert_int_equal(kind == 0 ? fut_thread_pool_new(&ex, NULL) :
					     fut_process_pool_new(&ex, NULL),
				 FUT_OK);
		fut_fn fns[] = { return_no_bytes, buffer_of_no_bytes };
		for (size_t i = 0; i < 2; i++) {
			fut_future *f = NULL;
			assert_int_equal(fut_submit_bytes(ex, fns[i], NULL, 0,
							  &f),
					 FUT_OK);
			check_empty(f);
		}
		fut_executor_free(ex);
	}
	fut_future *f = NULL;
	assert_int_equal(fut_future_new(&f), FUT_OK);
	assert_int_equal(fut_set_result_bytes(f, NULL, 0), FUT_OK);
	check_empty(f);
}

static void sleep_100ms(fut_task *t)
{
	(void)t;
	usleep(100 * 1000);
}

static atomic_int callback_saw; /* 0: not run; 1: the maker's mask; 2: not */

static void note_mask(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	sigset_t m;
	int ok = pthread_sigmask(SIG_BLOCK, NULL, &m) == 0 &&
		 sigismember(&m, SIGUSR2) == 1 && sigismember(&m, SIGTERM) == 0;
	atomic_store(&callback_saw, ok ? 1 : 2);
}

static void test_process_pool_callbacks_run_with_the_makers_mask(void **state)
{
	(void)state;
	sigset_t usr2, old;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	assert_int_equal(pthread_sigmask(SIG_SETMASK, &usr2, &old), 0);
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(&ex, NULL), FUT_OK);
	assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, sleep_100ms, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(f, note_mask, NULL), FUT_OK);
	assert_int_equal(fut_result(f, GUARD_S, NULL), FUT_OK);
	for (int i = 0; i < 60000 && atomic_load(&callback_saw) == 0; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&callback_saw), 1);
	fut_release(f);
	fut_executor_free(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_an_interrupted_process_task_keeps_its_message),
		cmocka_unit_test(
			test_a_failure_the_locale_cannot_write_keeps_its_format),
		cmocka_unit_test(test_an_empty_byte_result_is_a_valid_pointer),
		cmocka_unit_test(
			test_process_pool_callbacks_run_with_the_makers_mask),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
