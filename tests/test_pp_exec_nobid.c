/*
 * test_pp_exec_nobid.c: FUT_START_EXEC names task functions by their
 * module's GNU build-id; this program is linked without one
 * (-Wl,--build-id=none: its Makefile rule), statically with libfuture
 * and, as test_pp_exec_nobid_shared, with libfuture.so.  The pool is
 * refused FUT_ENOTSUP as it is made (found by a user's trial,
 * 2026-12-07: it was made, and every task failed FUT_ENOTSUP blaming "a
 * module the program did not load at start"); FUT_START_FORK, which
 * names nothing, works.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"

static void echo(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	(void)fut_task_return_bytes(t, in, len);
}

static void test_an_exec_pool_without_a_build_id_is_refused(void **state)
{
	(void)state;
	fut_executor *pp = (fut_executor *)&pp;
	assert_int_equal(
		fut_process_pool_new(&pp,
				     &(fut_process_pool_opts){
					     .max_workers = 1,
					     .start_method = FUT_START_EXEC }),
		FUT_ENOTSUP);
	assert_null(pp);
}

static void test_a_fork_pool_without_a_build_id_works(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(
				 &pp,
				 &(fut_process_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pp, echo, "ok", 2, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_OK);
	assert_int_equal(len, 2);
	assert_memory_equal(data, "ok", 2);
	fut_release(f);
	fut_executor_free(pp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_an_exec_pool_without_a_build_id_is_refused),
		cmocka_unit_test(test_a_fork_pool_without_a_build_id_works),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
