/*
 * test_abi.c: a program built against 0.1's header still runs on this
 * libfuture.so.0.
 *
 * 0.2 added start_method to the end of fut_process_pool_opts.  A binary
 * built against 0.1 passes the smaller struct to the symbol it linked,
 * fut_process_pool_new@LIBFUTURE_0, which must read no byte past it: the
 * test puts such a struct at the very end of a readable page, with an
 * unreadable page after it.  The test loads the shared library beside
 * its own build folder (../libfuture.so.0) and calls through dlvsym, as
 * an old binary's dynamic linker would bind it.  Also: the functions new
 * in 0.2 are bound to its version node.
 */
#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"

/* fut_process_pool_opts as 0.1's header had it. */
struct opts_0_1 {
	size_t max_workers;
	int (*initializer)(void *initarg);
	void *initarg;
	size_t max_tasks_per_child;
	double task_timeout;
};

static void echo(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	fut_task_return_bytes(t, in, len);
}

static void *library(void)
{
	char self[PATH_MAX], path[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = '\0';
	char *slash = strrchr(self, '/'); /* .../tests/test_abi */
	assert_non_null(slash);
	*slash = '\0';
	snprintf(path, sizeof(path), "%s/../libfuture.so.0", self);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		print_message("dlopen %s: %s\n", path, dlerror());
	assert_non_null(h);
	return h;
}

static void test_a_binary_built_against_0_1_makes_a_process_pool(void **state)
{
	(void)state;
	void *h = library();
	int (*pp_new_0_1)(fut_executor **, const struct opts_0_1 *) =
		(int (*)(fut_executor **, const struct opts_0_1 *))dlvsym(
			h, "fut_process_pool_new", "LIBFUTURE_0");
	int (*pp_new)(fut_executor **, const fut_process_pool_opts *) =
		(int (*)(fut_executor **, const fut_process_pool_opts *))dlsym(
			h, "fut_process_pool_new");
	int (*submit_bytes)(fut_executor *, fut_fn, const void *, size_t,
			    fut_future **) =
		(int (*)(fut_executor *, fut_fn, const void *, size_t,
			 fut_future **))dlsym(h, "fut_submit_bytes");
	int (*result_bytes)(fut_future *, double, const void **, size_t *) =
		(int (*)(fut_future *, double, const void **,
			 size_t *))dlsym(h, "fut_result_bytes");
	void (*release)(fut_future *) =
		(void (*)(fut_future *))dlsym(h, "fut_release");
	void (*executor_free)(fut_executor *) =
		(void (*)(fut_executor *))dlsym(h, "fut_executor_free");
	assert_non_null(pp_new_0_1);
	assert_non_null(pp_new);
	assert_true((void *)pp_new_0_1 != (void *)pp_new);
	assert_non_null(submit_bytes);
	assert_non_null(result_bytes);
	assert_non_null(release);
	assert_non_null(executor_free);

	/* The old struct ends where the readable memory ends. */
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(m != MAP_FAILED);
	assert_int_equal(mprotect(m + page, page, PROT_NONE), 0);
	struct opts_0_1 *o = (struct opts_0_1 *)(void *)(m + page - sizeof(*o));
	memset(o, 0, sizeof(*o));
	o->max_workers = 1;

	fut_executor *ex = NULL;
	assert_int_equal(pp_new_0_1(&ex, o), FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(submit_bytes(ex, echo, "abi", 3, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(result_bytes(f, 30.0, &data, &len), FUT_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(data, "abi", 3);
	release(f);
	executor_free(ex);
	/* NULL options, as 0.1 allowed. */
	assert_int_equal(pp_new_0_1(&ex, NULL), FUT_OK);
	executor_free(ex);
	munmap(m, 2 * page);
	dlclose(h);
}

/* A function new in 0.2 is bound to LIBFUTURE_0.2 only: a binary that
 * uses it names that node, and 0.1's library, which lacks it, refuses
 * the binary when it loads, not at the first call. */
static void test_functions_new_in_0_2_are_in_its_node(void **state)
{
	(void)state;
	void *h = library();
	bool (*requested)(const fut_future *) =
		(bool (*)(const fut_future *))dlvsym(
			h, "fut_interrupt_requested", "LIBFUTURE_0.2");
	assert_non_null(requested);
	assert_null(dlvsym(h, "fut_interrupt_requested", "LIBFUTURE_0"));
	assert_false(requested(NULL));
	void *(*buffer)(fut_task *, size_t) =
		(void *(*)(fut_task *, size_t))dlvsym(
			h, "fut_task_result_buffer", "LIBFUTURE_0.2");
	assert_non_null(buffer);
	assert_null(dlvsym(h, "fut_task_result_buffer", "LIBFUTURE_0"));
	assert_null(buffer(NULL, 16));
	dlclose(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_binary_built_against_0_1_makes_a_process_pool),
		cmocka_unit_test(test_functions_new_in_0_2_are_in_its_node),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
