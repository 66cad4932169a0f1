/*
 * mpi_plugin.c: a module that test_mpi_launch's "dlopen" mode loads with
 * dlopen(), for a task function named by its own module's build-id.  It
 * calls nothing (the tests link libfuture statically): the task returns
 * nothing, and its future succeeds.
 */
#include "future.h"

void mpi_plugin_task(fut_task *t);

void mpi_plugin_task(fut_task *t)
{
	(void)t;
}
