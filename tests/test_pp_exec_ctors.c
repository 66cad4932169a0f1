/*
 * test_pp_exec_ctors.c: a FUT_START_EXEC fork server runs the program's
 * own constructors before it serves, as the program's start would before
 * main, whether the library is linked in statically (this build) or as
 * libfuture.so (the same file built as test_pp_exec_ctors_shared, where
 * the loader runs the program's constructors after the library's: none
 * ran there before, found by review, 2026-12-07).  A process pool made by
 * a constructor there is refused with FUT_ESTATE: each such server would
 * start another, for ever (Python's "bootstrapping phase" error).
 */
#include <link.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "future.h"

/* What a C++ program's static initializers would set up. */
static int ctor_value;
static char *ctor_string;
static int ctor_pool_rc = -1;
extern int exec_ctors_late_value; /* set by exec_ctors_late.c's */

#define TRY_POOL_ENV "TEST_PP_EXEC_CTORS_TRY_POOL"

__attribute__((constructor)) static void program_ctor(void)
{
	ctor_value = 42;
	ctor_string = strdup("made by a constructor");
	/* Set by the test below before it makes its pool: only the fork
	 * server's start sees it. */
	if (getenv(TRY_POOL_ENV) != NULL) {
		fut_executor *p = NULL;
		ctor_pool_rc = fut_process_pool_new(&p, NULL);
		fut_executor_free(p);
	}
}

__attribute__((destructor)) static void program_dtor(void)
{
	free(ctor_string);
}

static bool a_module_with_constructors_is_ahead(void);

/* What the worker sees, and whether a module with constructors is
 * loaded ahead of libfuture there (valgrind's preload is not: the fork
 * server runs outside it). */
static void report(fut_task *t)
{
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "%d %d %d %d %s",
			 a_module_with_constructors_is_ahead(), ctor_value,
			 exec_ctors_late_value, ctor_pool_rc,
			 ctor_string != NULL ? ctor_string : "(none)");
	fut_task_return_bytes(t, buf, (size_t)n);
}

/* Whether a module with constructors of its own is loaded between the
 * program and libfuture (GCC's sanitizer runtimes, which go first): the
 * loader initialises it after libfuture, and the fork server then runs
 * none of the program's constructors (docs/api.md). */
struct ahead_scan {
	uintptr_t lib; /* an address in libfuture */
	unsigned seen;
	bool ahead;
};

static bool has_ctors(const struct dl_phdr_info *info)
{
	for (int i = 0; i < info->dlpi_phnum; i++) {
		if (info->dlpi_phdr[i].p_type != PT_DYNAMIC)
			continue;
		const ElfW(Dyn) *d = (const ElfW(
			Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
		for (; d->d_tag != DT_NULL; d++)
			if (d->d_tag == DT_INIT ||
			    (d->d_tag == DT_INIT_ARRAYSZ && d->d_un.d_val != 0))
				return true;
	}
	return false;
}

static int scan_ahead(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	struct ahead_scan *a = data;
	bool first = a->seen++ == 0; /* the program */
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD &&
		    a->lib - (info->dlpi_addr + ph->p_vaddr) < ph->p_memsz)
			return 1; /* libfuture's (the program's: static) */
	}
	if (!first && has_ctors(info))
		a->ahead = true;
	return 0;
}

static bool a_module_with_constructors_is_ahead(void)
{
	struct ahead_scan a = { .lib = (uintptr_t)(void *)fut_strerror };
	(void)dl_iterate_phdr(scan_ahead, &a);
	return a.ahead;
}

static void test_the_programs_constructors_ran_in_the_server(void **state)
{
	(void)state;
	/* In this process the constructor ran without the variable. */
	assert_int_equal(ctor_value, 42);
	assert_int_equal(exec_ctors_late_value, 42);
	assert_int_equal(ctor_pool_rc, -1);
	assert_int_equal(setenv(TRY_POOL_ENV, "1", 1), 0);
	fut_process_pool_opts o = { .max_workers = 1,
				    .start_method = FUT_START_EXEC };
	fut_executor *pp = NULL;
	int rc = fut_process_pool_new(&pp, &o);
	assert_int_equal(unsetenv(TRY_POOL_ENV), 0);
	assert_int_equal(rc, FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pp, report, NULL, 0, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_OK);
	char want[128];
	if (len > 0 && *(const char *)data == '1') {
		print_message("a module with constructors is loaded ahead of "
			      "libfuture: none of the program's run there\n");
		snprintf(want, sizeof(want), "1 0 0 -1 (none)");
	} else {
		snprintf(want, sizeof(want), "0 42 42 %d made by a constructor",
			 FUT_ESTATE);
	}
	assert_int_equal(len, strlen(want));
	assert_memory_equal(data, want, len);
	fut_release(f);
	fut_executor_free(pp);
}

/* A pool of the usual kind, made by the program itself: not refused. */
static void test_a_pool_outside_a_server_start_is_made(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(&pp, NULL), FUT_OK);
	fut_executor_free(pp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_the_programs_constructors_ran_in_the_server),
		cmocka_unit_test(test_a_pool_outside_a_server_start_is_made),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
