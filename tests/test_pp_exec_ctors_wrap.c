/*
 * test_pp_exec_ctors_wrap.c: FUT_START_EXEC in a program linked with
 * libfuture.so first, then a library that links it too and sets up its
 * state in a constructor (tests/exec_ctors_wrap.c, a wrapper's): the
 * loader initialises that library after libfuture, though it comes after
 * it in the loader's list, so in the fork server it never is, and none
 * of the program's constructors may run there (docs/api.md).  Before
 * (found by review, 2026-12-07) they ran, and saw the wrapper unset.
 */
#include "exec_ctors.h"

extern int exec_ctors_wrap_ready;
const char *exec_ctors_wrap_name(int code);

static int ctor_ran;
static int ctor_saw_wrap = -1;

__attribute__((constructor)) static void program_ctor(void)
{
	ctor_ran = 1;
	ctor_saw_wrap = exec_ctors_wrap_ready;
}

static void report(fut_task *t)
{
	int seen[2] = { ctor_ran, ctor_saw_wrap };
	fut_task_return_bytes(t, seen, sizeof(seen));
}

static void
test_no_constructor_runs_before_a_library_that_links_it(void **state)
{
	(void)state;
	/* Here the loader ran the wrapper's first. */
	assert_int_equal(ctor_ran, 1);
	assert_int_equal(ctor_saw_wrap, 1);
	assert_string_equal(exec_ctors_wrap_name(FUT_OK), fut_strerror(FUT_OK));
	fut_executor *pp = exec_pool(NULL);
	int seen[2];
	run_for(pp, report, seen, sizeof(seen));
	fut_executor_free(pp);
	/* Not run, so nothing seen ("1 0" before). */
	assert_int_equal(seen[0], 0);
	assert_int_equal(seen[1], -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_no_constructor_runs_before_a_library_that_links_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
