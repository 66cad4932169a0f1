/*
 * test_pp_forged.c: a process-pool task that writes a frame of its own
 * to its worker's result pipe (it finds the fd and write()s a header),
 * then returns as usual.
 *
 * A header that announces a payload that never comes is a valid start of
 * a frame: the decoder waits for the rest, and the worker's own result,
 * written behind it, is taken for payload.  The parent used to wait for
 * ever, task_timeout or not (the task had returned).  Now the worker
 * counts in its shared slot every byte it writes to the pipe, the parent
 * sees more come than that, kills the worker and fails the task
 * FUT_ECRASHED ("malformed frame"); every other future completes and the
 * worker is replaced.
 *
 * Each forging task is submitted alone (one task a frame, and nothing
 * more is sent to its worker until it answers): it is the task its
 * worker runs or ran last when the parent reads the forged bytes, so the
 * one blamed.  Waits have timeouts only to fail a hang.
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
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "process_pool/wire.h"

/* Only a hang gets here. */
#define HANG_GUARD 60.0
#define NOTHERS 16

enum forgery {
	/* A valid frame and record header announcing 1000 bytes that never
	 * come. */
	FORGE_SHORT_PAYLOAD,
	/* The same, announcing 1 GiB. */
	FORGE_HUGE_PAYLOAD,
	/* A frame header alone, announcing a body of 64 GiB. */
	FORGE_FRAME_HEADER,
	/* 40 bytes of 0xAB. */
	FORGE_GARBAGE,
	NFORGERIES
};

/* Writes to every fd of the worker open for writing only but 0-2: its
 * result pipe gets `what`. */
static void scribble(const void *what, size_t len)
{
	for (int fd = 3; fd < 64; fd++) {
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY)
			(void)!write(fd, what, len);
	}
}

static void forge_task(fut_task *t)
{
	uint32_t how = 0;
	memcpy(&how, fut_task_input(t, NULL), sizeof(how));
	unsigned char b[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR];
	uint64_t len = how == FORGE_HUGE_PAYLOAD ? (uint64_t)1 << 30 : 1000;
	size_t n = sizeof(b);
	switch (how) {
	case FORGE_SHORT_PAYLOAD:
	case FORGE_HUGE_PAYLOAD:
		fut__wire_put_frame(b, FUT__WIRE_RESULTS, 1,
				    FUT__WIRE_REC_HDR + len);
		fut__wire_put_record(b + FUT__WIRE_FRAME_HDR, 1, 0,
				     FUT__WIRE_R_BYTES, 0, len);
		break;
	case FORGE_FRAME_HEADER:
		fut__wire_put_frame(b, FUT__WIRE_RESULTS, 1, (uint64_t)1 << 36);
		n = FUT__WIRE_FRAME_HDR;
		break;
	default:
		memset(b, 0xAB, sizeof(b));
		n = 40;
		break;
	}
	scribble(b, n);
	uint64_t v = 7;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

static void square_task(fut_task *t)
{
	uint64_t v;
	memcpy(&v, fut_task_input(t, NULL), sizeof(v));
	v *= v;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

static fut_future *submit_square(fut_executor *ex, uint64_t v)
{
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, square_task, &v, sizeof(v), &f),
			 FUT_OK);
	return f;
}

static void expect_square(fut_future *f, uint64_t v)
{
	const void *p = NULL;
	size_t len = 0;
	uint64_t got = 0;
	assert_int_equal(fut_result_bytes(f, HANG_GUARD, &p, &len), FUT_OK);
	assert_int_equal(len, sizeof(got));
	memcpy(&got, p, sizeof(got));
	assert_int_equal(got, v * v);
	fut_release(f);
}

/* One forgery on a pool of two workers, others' tasks around it. */
static void forge_once(fut_executor *ex, uint32_t how)
{
	fut_future *others[NOTHERS], *bad = NULL;
	for (int i = 0; i < NOTHERS / 2; i++)
		others[i] = submit_square(ex, (uint64_t)i);
	assert_int_equal(fut_submit_bytes(ex, forge_task, &how, sizeof(how),
					  &bad),
			 FUT_OK);
	for (int i = NOTHERS / 2; i < NOTHERS; i++)
		others[i] = submit_square(ex, (uint64_t)i);
	int rc = fut_wait(&bad, 1, FUT_ALL_COMPLETED, HANG_GUARD);
	if (rc != FUT_OK)
		fail_msg(
			"forgery %u: the forging task's future never ended (%d)",
			how, rc);
	assert_int_equal(fut_error(bad), FUT_ECRASHED);
	assert_non_null(strstr(fut_error_message(bad), "malformed frame"));
	fut_release(bad);
	for (int i = 0; i < NOTHERS; i++)
		expect_square(others[i], (uint64_t)i);
}

static void forge_each(const fut_process_pool_opts *o)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(&ex, o), FUT_OK);
	for (uint32_t how = 0; how < NFORGERIES; how++)
		forge_once(ex, how);
	/* The killed workers were replaced. */
	expect_square(submit_square(ex, 12), 12);
	fut_executor_free(ex);
}

static void test_a_forged_frame_fails_its_task_and_nothing_else(void **st)
{
	(void)st;
	forge_each(&(fut_process_pool_opts){ .max_workers = 2 });
}

/* The task had returned when its frame stalled: its task_timeout did not
 * run any more.  The stall is caught all the same (far sooner than the
 * timeout, which would end it FUT_EDEADLINE). */
static void test_a_forged_frame_is_caught_with_a_task_timeout(void **st)
{
	(void)st;
	forge_each(&(fut_process_pool_opts){ .max_workers = 2,
					     .task_timeout = 30 });
}

/* One worker, so the forging task's own result and the next task's are
 * what the parent took for the forged payload. */
static void test_a_forged_frame_on_a_lone_worker_fails_only_its_task(void **st)
{
	(void)st;
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(
				 &ex,
				 &(fut_process_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	forge_once(ex, FORGE_SHORT_PAYLOAD);
	fut_executor_free(ex);
}

int main(void)
{
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_forged_frame_fails_its_task_and_nothing_else),
		cmocka_unit_test(
			test_a_forged_frame_is_caught_with_a_task_timeout),
		cmocka_unit_test(
			test_a_forged_frame_on_a_lone_worker_fails_only_its_task),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
