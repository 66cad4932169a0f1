/*
 * test_pp_exec.c: the process pool's FUT_START_EXEC start method (issue
 * 15, point 4): the fork server is a fresh exec of this test program,
 * taken over by the library before main (test_fork has a lock held at
 * pool creation, with both start methods).  Task functions and the initializer are found by build-id
 * and offset; one that is not code of the program fails FUT_ENOTSUP.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"

static int set_before_the_pool;
static int set_by_the_initializer;

static const fut_process_pool_opts exec_opts = {
	.max_workers = 2, .start_method = FUT_START_EXEC
};

static int init(void *arg)
{
	(void)arg;
	set_by_the_initializer = 42;
	return 0;
}

/* What the worker sees: the initializer's global, and the one the
 * parent set before the pool (a fresh program: not set). */
static void globals(fut_task *t)
{
	int v[2] = { set_by_the_initializer, set_before_the_pool };
	fut_task_return_bytes(t, v, sizeof(v));
}

static void test_exec_workers_are_a_fresh_program(void **state)
{
	(void)state;
	set_before_the_pool = 7;
	fut_process_pool_opts o = exec_opts;
	o.initializer = init;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(&pp, &o), FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pp, globals, NULL, 0, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_OK);
	assert_int_equal(len, 2 * sizeof(int));
	int v[2];
	memcpy(v, data, sizeof(v));
	assert_int_equal(v[0], 42);
	assert_int_equal(v[1], 0);
	fut_release(f);
	fut_executor_free(pp);
}

/* Not code of any module: the server cannot resolve it. */
static unsigned char not_code[64];

static void test_an_unresolvable_function_is_enotsup(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(&pp, &exec_opts), FUT_OK);
	fut_fn bogus = (fut_fn)(void *)not_code;
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pp, bogus, NULL, 0, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_ENOTSUP);
	print_message("%s\n", fut_error_message(f));
	fut_release(f);
	/* The worker goes on. */
	assert_int_equal(fut_submit_bytes(pp, globals, NULL, 0, &f), FUT_OK);
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_OK);
	fut_release(f);
	fut_executor_free(pp);
}

static void test_bad_start_options_are_einval(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	fut_process_pool_opts o = exec_opts;
	o.start_method = 2;
	assert_int_equal(fut_process_pool_new(&pp, &o), FUT_EINVAL);
	o = exec_opts;
	o.initializer = init;
	o.initarg = &o;
	assert_int_equal(fut_process_pool_new(&pp, &o), FUT_EINVAL);
	assert_null(pp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exec_workers_are_a_fresh_program),
		cmocka_unit_test(test_an_unresolvable_function_is_enotsup),
		cmocka_unit_test(test_bad_start_options_are_einval),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
