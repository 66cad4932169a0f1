/*
 * test_names.c: a function's name across processes (src/core/names.c):
 * its module's GNU build-id and offset, to text and back, and resolved
 * only to code of a module loaded here with that build-id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/names.h"

static void a_task(fut_task *t)
{
	fut_task_return(t, NULL);
}

static int a_global;

static void test_a_function_is_named_and_resolved(void **state)
{
	(void)state;
	struct fut__fn_name n;
	assert_int_equal(fut__fn_name_of(a_task, &n), FUT_OK);
	assert_true(n.id.len >= 8);
	assert_true(fut__fn_resolve(&n) == a_task);
	char text[FUT__FN_NAME_TEXT];
	size_t len = fut__fn_name_format(&n, text);
	assert_int_equal(len, strlen(text));
	assert_int_equal(text[0], '@');
	struct fut__fn_name back;
	assert_true(fut__fn_name_parse(text, len, &back));
	assert_int_equal(back.off, n.off);
	assert_memory_equal(&back.id, &n.id, sizeof(n.id));
	assert_true(fut__fn_resolve(&back) == a_task);
	struct fut__build_id *ids = NULL;
	size_t nids = 0;
	assert_int_equal(fut__fn_modules(&ids, &nids), FUT_OK);
	assert_true(nids >= 1);
	fut__free(ids);
}

static void test_what_is_not_code_here_resolves_to_nothing(void **state)
{
	(void)state;
	struct fut__fn_name n;
	/* Data is no function. */
	assert_int_equal(fut__fn_name_of((fut_fn)(void *)&a_global, &n),
			 FUT_EINVAL);
	assert_int_equal(fut__fn_name_of(a_task, &n), FUT_OK);
	struct fut__fn_name other = n;
	other.id.bytes[0] ^= 0xff; /* no module has that build-id */
	assert_null(fut__fn_resolve(&other));
	other = n;
	other.off = UINT64_MAX - 7; /* past every segment */
	assert_null(fut__fn_resolve(&other));
	other = n;
	other.id.len = 0;
	assert_null(fut__fn_resolve(&other));
	static const char *bad[] = { "",       "@",
				     "@+0x10", "@zz+0x10",
				     "@ab+0x", "@ab+0x12345678901234567",
				     "ab+0x1", "@ab-0x1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(fut__fn_name_parse(bad[i], strlen(bad[i]), &n));
	assert_true(fut__fn_name_parse("@ab+0x1f", 8, &n));
	assert_int_equal(n.id.len, 1);
	assert_int_equal(n.off, 0x1f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_function_is_named_and_resolved),
		cmocka_unit_test(
			test_what_is_not_code_here_resolves_to_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
