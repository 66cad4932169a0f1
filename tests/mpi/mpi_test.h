/*
 * mpi_test.h: what the MPI tests share.  Each test is collective: every
 * rank calls fut_mpi_executor_new(); on root the test goes on with the
 * executor, on the servers the call serves and returns FUT_OK with NULL,
 * and the test returns there.  tests/mpi/run.sh launches the programs.
 */
#ifndef FUT_MPI_TEST_H
#define FUT_MPI_TEST_H

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "future_mpi.h"

/* The test hooks of libfuture-mpi (static link only). */
void fut__mpi_set_message_limit(size_t bytes);
void fut__mpi_test_corrupt_next_send(void);
void fut__mpi_test_short_crash_next_send(void);
void fut__mpi_test_junk_after_send(uint32_t records);
void fut__mpi_test_pause_hook(void (*fn)(void));
bool fut__mpi_test_shutting(fut_executor *ex);
unsigned long fut__mpi_test_fail_mpi(unsigned sends, unsigned recvs);
size_t fut__mpi_live_objects(void);

static inline int world_rank(void)
{
	int r = -1;
	MPI_Comm_rank(MPI_COMM_WORLD, &r);
	return r;
}

/* The core's allocation-failure hooks (core/alloc.h; static link only). */
long fut__alloc_fail_nth(long n);
long fut__alloc_fail_run(long n, long count);

/* A check outside cmocka's runner (a server rank, a fork child): says
 * where and on which rank, and exits 1. */
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: rank %d: check failed: %s\n",  \
				__FILE__, __LINE__, world_rank(), #cond);      \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Waits for the two futures of fs, checks that each ended FUT_EBROKEN
 * (the executor broke), and releases them. */
static inline void two_broken(fut_future **fs)
{
	CHECK(fut_wait(fs, 2, FUT_ALL_COMPLETED, 30) == FUT_OK);
	for (int i = 0; i < 2; i++) {
		CHECK(fut_error(fs[i]) == FUT_EBROKEN);
		fut_release(fs[i]);
	}
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

/* square_task after 100 ms: its caller adds a done callback meanwhile. */
static inline void slow_square_task(fut_task *t)
{
	struct timespec ts = { 0, 100000000 };
	while (nanosleep(&ts, &ts) != 0)
		;
	square_task(t);
}

/* One slow_square_task through ex with cb as its done callback, which
 * the manager runs, its ud ex: returns once the caller has its result
 * (the callback may free ex).  nowait: ex is shut down (NOWAIT) after
 * the submit, the documented way before a free from the last callback. */
static inline void square_with_callback_then(fut_executor *ex, fut_callback cb,
					     bool nowait)
{
	int x = 9;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, slow_square_task, &x, sizeof(x), &f) ==
	      FUT_OK);
	CHECK(fut_add_done_callback(f, cb, ex) == FUT_OK);
	if (nowait)
		CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
}

static inline void square_with_callback(fut_executor *ex, fut_callback cb)
{
	square_with_callback_then(ex, cb, false);
}

/* Fails with code 42 and a message naming the server's rank. */
static inline void fail_task(fut_task *t)
{
	fut_task_fail(t, 42, "failed on rank %d", fut_mpi_task_rank(t));
}

/* Fails with no message: the caller reads the code's text. */
static inline void fail_null_task(fut_task *t)
{
	fut_task_fail(t, 43, NULL);
}

/* Returns a pointer: FUT_ENOTSUP on the caller's side. */
static inline void pointer_task(fut_task *t)
{
	static int pointee;
	fut_task_return(t, &pointee);
}

static inline void segv_task(fut_task *t)
{
	(void)t;
	raise(SIGSEGV);
}

/* len bytes to echo_task and back, byte-exact. */
static inline void check_echo(fut_executor *ex, size_t len)
{
	unsigned char *in = (unsigned char *)malloc(len ? len : 1);
	assert_non_null(in);
	for (size_t i = 0; i < len; i++)
		in[i] = (unsigned char)(i * 7 + len);
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, echo_task, in, len, &f), FUT_OK);
	const void *out;
	size_t outlen;
	assert_int_equal(fut_result_bytes(f, 30, &out, &outlen), FUT_OK);
	assert_int_equal(outlen, len);
	assert_true(len == 0 || memcmp(out, in, len) == 0);
	fut_release(f);
	free(in);
}

/* fut_task_fail's code and message cross (from rank 1 or 2), no
 * message as the code's text (it came as ""), and a pointer result is
 * FUT_ENOTSUP. */
static inline void check_failures(fut_executor *ex)
{
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, fail_task, NULL, 0, &f), FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 42);
	const char *msg = fut_error_message(f);
	assert_true(strcmp(msg, "failed on rank 1") == 0 ||
		    strcmp(msg, "failed on rank 2") == 0);
	fut_release(f);
	assert_int_equal(fut_submit_bytes(ex, fail_null_task, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 43);
	assert_string_equal(fut_error_message(f), fut_strerror(FUT_ETASK));
	fut_release(f);
	assert_int_equal(fut_submit_bytes(ex, pointer_task, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_ENOTSUP);
	fut_release(f);
}

/* n 4-byte inputs through fut_submit_many and echo_task, each back. */
static inline void check_many(fut_executor *ex, uint32_t n)
{
	uint32_t *in = (uint32_t *)malloc(n * sizeof(*in));
	fut_future **fs = (fut_future **)malloc(n * sizeof(*fs));
	assert_non_null(in);
	assert_non_null(fs);
	for (uint32_t i = 0; i < n; i++)
		in[i] = i;
	assert_int_equal(fut_submit_many(ex, echo_task, in, sizeof(in[0]), n,
					 fs),
			 FUT_OK);
	assert_int_equal(fut_wait(fs, n, FUT_ALL_COMPLETED, 30), FUT_OK);
	for (uint32_t i = 0; i < n; i++) {
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(fs[i], 0, &out, &len),
				 FUT_OK);
		assert_int_equal(len, 4);
		assert_memory_equal(out, &i, 4);
		fut_release(fs[i]);
	}
	free(fs);
	free(in);
}

/* Tasks submitted together spread over both servers (ranks 1 and 2, and
 * no other): at most prefetch (under 16) go to one rank.  (One at a time
 * they go to the rank that answered last.) */
static inline void check_both_servers_work(fut_executor *ex)
{
	enum {
		N = 16
	};
	char in[N][5];
	fut_future *fs[N];
	for (int k = 0; k < N; k++)
		memcpy(in[k], "rank?", 5);
	assert_int_equal(fut_submit_many(ex, echo_task, in, 5, N, fs), FUT_OK);
	bool seen[3] = { false, false, false };
	for (int k = 0; k < N; k++) {
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(fs[k], 30, &out, &len),
				 FUT_OK);
		int r;
		assert_int_equal(len, sizeof(r));
		memcpy(&r, out, sizeof(r));
		assert_true(r == 1 || r == 2);
		seen[r] = true;
		fut_release(fs[k]);
	}
	assert_true(seen[1] && seen[2]);
}

#endif
