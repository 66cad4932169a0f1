/*
 * exec_ctors_wrap.c: a wrapper library that links libfuture.so and sets
 * up its state in a constructor (test_pp_exec_ctors_wrap links it after
 * -lfuture): the loader initialises it after libfuture.
 */
#include "future.h"

int exec_ctors_wrap_ready;

__attribute__((constructor)) static void wrap_ctor(void)
{
	exec_ctors_wrap_ready = 1;
}

/* Uses libfuture: it is linked with it. */
const char *exec_ctors_wrap_name(int code);
const char *exec_ctors_wrap_name(int code)
{
	return fut_strerror(code);
}
