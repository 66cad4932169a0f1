/*
 * test_names.c: a function's name across processes (src/core/names.c):
 * its module's GNU build-id and offset, to text and back, and resolved
 * only to code of a module loaded here with that build-id.
 */
#include <dlfcn.h>
#include <link.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* A library of glibc's own (libc6, vector math) that a test program has not loaded:
 * it has a build-id and code, and dlclose unloads it. */
#define SPARE_LIB "libmvec.so.1"
#define SPARE_FN "_ZGVbN2v_cos"

/*
 * A module unloaded after its function was named: the name resolves to
 * nothing, and the old address has no name.  Before (found by review,
 * 2026-12-07) the table read while it was loaded kept its addresses: the
 * name resolved into unmapped memory (an MPI server crashed on it), or
 * into a module loaded at the same place since.
 */
static void test_a_name_of_an_unloaded_module_resolves_to_nothing(void **state)
{
	(void)state;
	void *h = dlopen(SPARE_LIB, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		skip();
	fut_fn fn = (fut_fn)(uintptr_t)dlsym(h, SPARE_FN);
	assert_non_null(fn);
	struct fut__fn_name n;
	assert_int_equal(fut__fn_name_of(fn, &n), FUT_OK);
	assert_true(fut__fn_resolve(&n) == fn);
	assert_int_equal(dlclose(h), 0);
	if (dlopen(SPARE_LIB, RTLD_NOW | RTLD_NOLOAD) != NULL)
		skip(); /* still loaded (another user of it): nothing to test */
	assert_null(fut__fn_resolve(&n));
	struct fut__fn_name again;
	assert_int_equal(fut__fn_name_of(fn, &again), FUT_EINVAL);
}

/*
 * Two copies of one module (the same file under two paths: the same
 * build-id): neither can be named, and a name with that build-id
 * resolves to nothing.  Before (found by review, 2026-12-07) a function
 * of the second copy resolved into the first, and ran with its state.
 */
static void test_two_copies_of_a_module_are_neither_named(void **state)
{
	(void)state;
	void *h = dlopen(SPARE_LIB, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		skip();
	struct link_map *lm = NULL;
	assert_int_equal(dlinfo(h, RTLD_DI_LINKMAP, &lm), 0);
	char copy[] = "/tmp/fut_names_XXXXXX";
	int out = mkstemp(copy);
	assert_true(out >= 0);
	FILE *in = fopen(lm->l_name, "rb");
	assert_non_null(in);
	char buf[65536];
	size_t got;
	while ((got = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(write(out, buf, got), (ssize_t)got);
	fclose(in);
	close(out);
	void *h2 = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
	unlink(copy);
	assert_non_null(h2);
	fut_fn one = (fut_fn)(uintptr_t)dlsym(h, SPARE_FN);
	fut_fn two = (fut_fn)(uintptr_t)dlsym(h2, SPARE_FN);
	assert_true(one != NULL && two != NULL && one != two);
	struct fut__fn_name n;
	assert_int_equal(fut__fn_name_of(two, &n), FUT_EINVAL);
	assert_int_equal(fut__fn_name_of(one, &n), FUT_EINVAL);
	dlclose(h2);
	/* One copy again: it is named, and its name resolves to it. */
	assert_int_equal(fut__fn_name_of(one, &n), FUT_OK);
	assert_true(fut__fn_resolve(&n) == one);
	dlclose(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_function_is_named_and_resolved),
		cmocka_unit_test(
			test_a_name_of_an_unloaded_module_resolves_to_nothing),
		cmocka_unit_test(test_two_copies_of_a_module_are_neither_named),
		cmocka_unit_test(
			test_what_is_not_code_here_resolves_to_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
