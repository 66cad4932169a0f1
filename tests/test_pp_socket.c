/*
 * test_pp_socket.c: a process-pool task that writes to its worker's task
 * socket (it finds the fd: the one socket a worker has).
 *
 * A byte a task wrote to the socket was read by the parent, later, as
 * the one that carries a shared result's memfd: an innocent later task's
 * shared result failed FUT_ESYS ("cannot take in the task's result
 * (shared memory): Protocol error") and its worker was killed.  Now the
 * parent skips the bytes in front of the memfd (the worker sends each
 * memfd with one byte, never bytes without one), the result is good, and
 * the worker is replaced.
 *
 * One worker, so that every task goes to the same one.  Waits have
 * timeouts only to fail a hang.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"

/* Only a hang gets here. */
#define HANG_GUARD 60.0
/* A shared result: from 256 KiB (fut_task_result_buffer). */
#define SHARED_LEN ((size_t)512 << 10)

/* The worker's task socket: its only socket. */
static int find_socket(void)
{
	for (int fd = 3; fd < 256; fd++) {
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
			return fd;
	}
	return -1;
}

static void square_task(fut_task *t)
{
	uint64_t v;
	memcpy(&v, fut_task_input(t, NULL), sizeof(v));
	v *= v;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* Writes a byte to the socket, then returns as usual. */
static void scribbler_task(fut_task *t)
{
	int sock = find_socket();
	(void)!write(sock, "x", 1);
	uint64_t v = 7;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* An innocent task with a shared result: SHARED_LEN bytes of its
 * input's low byte. */
static void shared_task(fut_task *t)
{
	unsigned char c = *(const unsigned char *)fut_task_input(t, NULL);
	void *p = fut_task_result_buffer(t, SHARED_LEN);
	if (p != NULL)
		memset(p, c, SHARED_LEN);
}

static fut_future *submit(fut_executor *ex, fut_fn fn, uint64_t v)
{
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, fn, &v, sizeof(v), &f), FUT_OK);
	return f;
}

static void wait_done(fut_future *f, const char *what)
{
	int rc = fut_wait(&f, 1, FUT_ALL_COMPLETED, HANG_GUARD);
	if (rc != FUT_OK)
		fail_msg("%s: its future never ended (%d)", what, rc);
}

static void expect_square(fut_future *f, uint64_t v, const char *what)
{
	const void *p = NULL;
	size_t len = 0;
	uint64_t got = 0;
	wait_done(f, what);
	if (fut_error(f) != FUT_OK)
		fail_msg("%s: ended %d: %s", what, fut_error(f),
			 fut_error_message(f));
	assert_int_equal(fut_result_bytes(f, 0, &p, &len), FUT_OK);
	assert_int_equal(len, sizeof(got));
	memcpy(&got, p, sizeof(got));
	assert_int_equal(got, v * v);
	fut_release(f);
}

static void expect_shared(fut_future *f, unsigned char c, const char *what)
{
	const void *p = NULL;
	size_t len = 0;
	wait_done(f, what);
	if (fut_error(f) != FUT_OK)
		fail_msg("%s: ended %d: %s", what, fut_error(f),
			 fut_error_message(f));
	assert_int_equal(fut_result_bytes(f, 0, &p, &len), FUT_OK);
	assert_int_equal(len, SHARED_LEN);
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i += 4096)
		assert_int_equal(b[i], c);
	fut_release(f);
}

static fut_executor *lone_worker(void)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(
				 &ex,
				 &(fut_process_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	return ex;
}

/* The scribbler's byte waits on the socket; an innocent task's shared
 * result comes later.  Before, that one failed FUT_ESYS ("cannot take
 * in the task's result"). */
static void test_a_byte_written_to_the_socket_fails_no_shared_result(void **st)
{
	(void)st;
	fut_executor *ex = lone_worker();
	fut_future *bad = submit(ex, scribbler_task, 0);
	wait_done(bad, "the scribbler");
	fut_release(bad);
	expect_shared(submit(ex, shared_task, 0x5A), 0x5A,
		      "a shared result after the scribbler");
	expect_shared(submit(ex, shared_task, 0x33), 0x33,
		      "the next shared result");
	expect_square(submit(ex, square_task, 3), 3, "a later task");
	fut_executor_free(ex);
}

int main(void)
{
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_byte_written_to_the_socket_fails_no_shared_result),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
