/*
 * test_api_contract.c: the parts of the public contract that hold for the
 * whole API rather than one module: every code has its own text, the
 * version string matches the header, the constants keep their documented
 * bounds, and every _free/_release takes NULL.  (The export list itself is
 * checked against the header by tests/check_exports.sh.)
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "future.h"

struct code_row {
	const char *name;
	int value;
	const char *text;
};

#define CODE_ROW_(name, value, text) { #name, name, text },
static const struct code_row codes[] = { FUT_CODE_LIST(CODE_ROW_) };
#undef CODE_ROW_
#define NCODES (sizeof codes / sizeof codes[0])

static void test_every_code_has_its_listed_text(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++) {
		const char *text = fut_strerror(codes[i].value);
		assert_non_null(text);
		assert_string_equal(text, codes[i].text);
		assert_true(strlen(text) > 0);
		assert_string_not_equal(text, "unknown code");
	}
}

static void test_every_code_text_is_distinct(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++)
		for (size_t j = i + 1; j < NCODES; j++)
			assert_string_not_equal(fut_strerror(codes[i].value),
						fut_strerror(codes[j].value));
}

static void test_codes_are_distinct_and_only_ok_is_zero(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++) {
		if (strcmp(codes[i].name, "FUT_OK") == 0)
			assert_int_equal(codes[i].value, 0);
		else
			assert_true(codes[i].value > 0);
		for (size_t j = i + 1; j < NCODES; j++)
			assert_int_not_equal(codes[i].value, codes[j].value);
	}
}

static void test_states_never_collide_with_codes(void **state)
{
	static const int states[] = { FUT_PENDING, FUT_RUNNING, FUT_CANCELLED,
				      FUT_FINISHED };
	(void)state;
	for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
		for (size_t i = 0; i < NCODES; i++)
			assert_int_not_equal(states[s], codes[i].value);
		/* fut_strerror knows codes, not states. */
		assert_string_equal(fut_strerror(states[s]), "unknown code");
	}
}

static void test_values_outside_the_list_are_unknown_code(void **state)
{
	static const int others[] = { -1, -2, INT_MIN, INT_MAX, 1000, 15, 99 };
	(void)state;
	for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
		bool listed = false;
		for (size_t j = 0; j < NCODES; j++)
			listed |= codes[j].value == others[i];
		if (listed)
			continue; /* the list grew: 15 may be a code one day */
		assert_string_equal(fut_strerror(others[i]), "unknown code");
	}
	/* Just past the largest code. */
	int max = 0;
	for (size_t j = 0; j < NCODES; j++)
		if (codes[j].value > max)
			max = codes[j].value;
	assert_string_equal(fut_strerror(max + 1), "unknown code");
}

static void test_version_matches_the_header_macros(void **state)
{
	char want[64];
	(void)state;
	snprintf(want, sizeof want, "%d.%d.%d", FUT_VERSION_MAJOR,
		 FUT_VERSION_MINOR, FUT_VERSION_PATCH);
	assert_non_null(fut_version());
	assert_string_equal(fut_version(), want);
	/* A static string: the same pointer every time. */
	assert_ptr_equal(fut_version(), fut_version());
}

static void test_constants_keep_their_documented_bounds(void **state)
{
	(void)state;
	assert_true(FUT_FOREVER < 0);
	assert_true(FUT_MAX_WORKERS >= 1024);
	assert_true(FUT_MAX_BYTES >= ((size_t)1 << 30));
	assert_true(FUT_MAX_BYTES < SIZE_MAX / 2);
	/* Shutdown flags are distinct bits. */
	assert_int_equal(FUT_SHUTDOWN_NOWAIT & FUT_SHUTDOWN_CANCEL_PENDING, 0);
	assert_int_equal(FUT_SHUTDOWN_NOWAIT & FUT_SHUTDOWN_INTERRUPT, 0);
	assert_int_equal(FUT_SHUTDOWN_CANCEL_PENDING & FUT_SHUTDOWN_INTERRUPT,
			 0);
	/* return_when values are distinct and none is 0 (zeroed memory). */
	assert_int_not_equal(FUT_FIRST_COMPLETED, 0);
	assert_int_not_equal(FUT_FIRST_COMPLETED, FUT_FIRST_EXCEPTION);
	assert_int_not_equal(FUT_FIRST_EXCEPTION, FUT_ALL_COMPLETED);
	assert_int_not_equal(FUT_FIRST_COMPLETED, FUT_ALL_COMPLETED);
}

static void test_every_free_and_release_accepts_null(void **state)
{
	(void)state;
	fut_release(NULL);
	fut_executor_free(NULL);
	fut_as_completed_free(NULL);
}

static void test_queries_on_null_give_their_documented_values(void **state)
{
	(void)state;
	assert_int_equal(fut_state(NULL), FUT_EINVAL);
	assert_false(fut_done(NULL));
	assert_false(fut_running(NULL));
	assert_false(fut_cancelled(NULL));
	assert_false(fut_cancel(NULL));
	assert_int_equal(fut_error(NULL), FUT_EINVAL);
	assert_null(fut_error_message(NULL));
	assert_int_equal(fut_as_completed_fd(NULL), -1);
}

static void test_options_structs_are_plain_and_zeroable(void **state)
{
	/* Zeroed means defaults; the compound literal idiom compiles. */
	const fut_thread_pool_opts t = { 0 };
	const fut_process_pool_opts p = { 0 };
	const fut_thread_pool_opts *tp =
		&(fut_thread_pool_opts){ .max_workers = 4 };
	(void)state;
	assert_int_equal(t.max_workers, 0);
	assert_null(t.thread_name_prefix);
	assert_null(t.initializer);
	assert_int_equal(t.max_queue, 0);
	assert_int_equal(p.max_workers, 0);
	assert_int_equal(p.max_tasks_per_child, 0);
	assert_true(p.task_timeout <= 0);
	assert_int_equal(tp->max_workers, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_code_has_its_listed_text),
		cmocka_unit_test(test_every_code_text_is_distinct),
		cmocka_unit_test(test_codes_are_distinct_and_only_ok_is_zero),
		cmocka_unit_test(test_states_never_collide_with_codes),
		cmocka_unit_test(test_values_outside_the_list_are_unknown_code),
		cmocka_unit_test(test_version_matches_the_header_macros),
		cmocka_unit_test(test_constants_keep_their_documented_bounds),
		cmocka_unit_test(test_every_free_and_release_accepts_null),
		cmocka_unit_test(
			test_queries_on_null_give_their_documented_values),
		cmocka_unit_test(test_options_structs_are_plain_and_zeroable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
