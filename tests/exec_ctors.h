/*
 * exec_ctors.h: what the FUT_START_EXEC constructor tests share
 * (test_pp_exec_ctors.c, test_pp_exec_ctors_wrap.c): a pool whose fork
 * server starts with a variable set, and a task run there.  Public calls
 * only: the tests link libfuture.so too.
 */
#ifndef FUT_EXEC_CTORS_H
#define FUT_EXEC_CTORS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "future.h"

/* A FUT_START_EXEC pool of one worker, env (NULL: none) set in the
 * environment that its fork server starts with (the program's
 * constructors read it). */
static inline fut_executor *exec_pool(const char *env)
{
	if (env != NULL)
		assert_int_equal(setenv(env, "1", 1), 0);
	fut_process_pool_opts o = { .max_workers = 1,
				    .start_method = FUT_START_EXEC };
	fut_executor *pp = NULL;
	int rc = fut_process_pool_new(&pp, &o);
	if (env != NULL)
		assert_int_equal(unsetenv(env), 0);
	assert_int_equal(rc, FUT_OK);
	return pp;
}

/* Runs fn in pp; its result is *f's (released by the caller). */
static inline const void *run_task(fut_executor *pp, fut_fn fn, fut_future **f,
				   size_t *len)
{
	const void *data = NULL;
	assert_int_equal(fut_submit_bytes(pp, fn, NULL, 0, f), FUT_OK);
	assert_int_equal(fut_result_bytes(*f, 60.0, &data, len), FUT_OK);
	return data;
}

/* Runs fn in pp; its result, size bytes, into out. */
static inline void run_for(fut_executor *pp, fut_fn fn, void *out, size_t size)
{
	fut_future *f = NULL;
	size_t len = 0;
	const void *data = run_task(pp, fn, &f, &len);
	assert_int_equal(len, size);
	memcpy(out, data, size);
	fut_release(f);
}

#endif
