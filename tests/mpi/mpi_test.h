/*
 * mpi_test.h: what the MPI tests share.  Each test is collective: every
 * rank calls fut_mpi_executor_new(); on root the test goes on with the
 * executor, on the servers the call serves and returns FUT_OK with NULL,
 * and the test returns there.  tests/mpi/run.sh launches the programs.
 */
#ifndef FUT_MPI_TEST_H
#define FUT_MPI_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "future_mpi.h"

/* The test hooks of libfuture-mpi (static link only). */
void fut__mpi_set_message_limit(size_t bytes);
void fut__mpi_test_corrupt_next_send(void);
size_t fut__mpi_live_objects(void);

static inline int world_rank(void)
{
	int r = -1;
	MPI_Comm_rank(MPI_COMM_WORLD, &r);
	return r;
}

/* MPI_Init_thread with MULTIPLE, or exit 1. */
static inline void init_mpi(int *argc, char ***argv)
{
	int provided = 0;
	if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) !=
		    MPI_SUCCESS ||
	    provided < MPI_THREAD_MULTIPLE) {
		fprintf(stderr, "MPI_THREAD_MULTIPLE not provided\n");
		exit(1);
	}
}

/* Echoes its input; "rank?" returns the server's rank as an int. */
static inline void echo_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	if (len == 5 && memcmp(in, "rank?", 5) == 0) {
		int r = fut_mpi_task_rank(t);
		fut_task_return_bytes(t, &r, sizeof(r));
		return;
	}
	fut_task_return_bytes(t, in, len);
}

/* Squares its int input. */
static inline void square_task(fut_task *t)
{
	size_t len;
	const int *x = fut_task_input(t, &len);
	int y = len == sizeof(int) ? *x * *x : -1;
	fut_task_return_bytes(t, &y, sizeof(y));
}

#endif
