/*
 * bench_process.c: W4-W6 of PERF.md on the process pool, two workers.
 *
 *   W4: 20,000 times: submit a 16-byte input, wait for its 16 bytes back.
 *   W5: 200,000 tasks of 16 bytes in, 16 out, through fut_submit_many in
 *       batches of 10,000 all submitted before the first result is read
 *       (as Python's map), every result checked.
 *   W6: one task returns a 64 MiB buffer, checked byte for byte (outside
 *       the timed part).
 * Prints RESULT lines (bench/run.sh takes medians).  BENCH_QUICK=1 scales
 * the counts down.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "future.h"

#define MSG 16
#define W6_BYTES ((size_t)64 << 20)

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_process: %s: %s\n", what, fut_strerror(rc));
	exit(1);
}

/* Answers its 16 bytes with each byte plus one. */
static void echo_task(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	unsigned char out[MSG];
	for (size_t i = 0; i < MSG && i < len; i++)
		out[i] = (unsigned char)(in[i] + 1);
	(void)fut_task_return_bytes(t, out, len < MSG ? len : MSG);
}

/* The 64 MiB answer, built once per worker (the first, unprinted W6 run
 * pays for it), so that W6 times the transfer, as the pipe floor does. */
static void big_task(fut_task *t)
{
	static unsigned char *b;
	if (b == NULL) {
		b = malloc(W6_BYTES);
		if (b == NULL) {
			(void)fut_task_fail(t, 1, "out of memory");
			return;
		}
		for (size_t i = 0; i < W6_BYTES; i++)
			b[i] = (unsigned char)(i * 31 + 7);
	}
	(void)fut_task_return_bytes(t, b, W6_BYTES);
}

static void check_echo(fut_future *f, const unsigned char *in)
{
	const unsigned char *out = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, -1, (const void **)&out, &len);
	if (rc != FUT_OK)
		die("result", rc);
	if (len != MSG)
		die("result length", FUT_ESTATE);
	for (size_t i = 0; i < MSG; i++)
		if (out[i] != (unsigned char)(in[i] + 1))
			die("result bytes", FUT_ESTATE);
}

static void w4(fut_executor *ex, long n)
{
	unsigned char in[MSG];
	for (long i = -200; i < n; i++) { /* 200 warm-up round trips */
		static double t0;
		if (i == 0)
			t0 = bench_now();
		memset(in, (int)(i & 0x7f), sizeof(in));
		fut_future *f = NULL;
		int rc = fut_submit_bytes(ex, echo_task, in, sizeof(in), &f);
		if (rc != FUT_OK)
			die("submit", rc);
		check_echo(f, in);
		fut_release(f);
		if (i == n - 1)
			printf("RESULT workload=W4 impl=libfuture-process n=%ld "
			       "us_per_op=%.3f\n",
			       n, (bench_now() - t0) * 1e6 / (double)n);
	}
}

/* As Python's executor.map(fn, items, chunksize=1000): every task is
 * submitted before the first result is read, in submit_many calls of
 * BATCH tasks each. */
static void w5(fut_executor *ex, long n)
{
	enum { BATCH = 10000 };
	unsigned char *in = malloc((size_t)n * MSG);
	fut_future **fs = malloc((size_t)n * sizeof(*fs));
	if (in == NULL || fs == NULL)
		die("malloc", FUT_ENOMEM);
	for (long i = 0; i < n * MSG; i++)
		in[i] = (unsigned char)(i * 7);
	double t0 = bench_now();
	for (long done = 0; done < n; done += BATCH) {
		long k = n - done < BATCH ? n - done : BATCH;
		int rc = fut_submit_many(ex, echo_task, in + done * MSG, MSG,
					 (size_t)k, fs + done);
		if (rc != FUT_OK)
			die("submit_many", rc);
	}
	for (long i = 0; i < n; i++) {
		check_echo(fs[i], in + i * MSG);
		fut_release(fs[i]);
	}
	double t = bench_now() - t0;
	printf("RESULT workload=W5 impl=libfuture-process n=%ld rate=%.0f\n", n,
	       (double)n / t);
	free(in);
	free(fs);
}

static void w6(fut_executor *ex, bool print)
{
	double t0 = bench_now();
	fut_future *f = NULL;
	int rc = fut_submit_bytes(ex, big_task, NULL, 0, &f);
	if (rc != FUT_OK)
		die("submit", rc);
	const unsigned char *out = NULL;
	size_t len = 0;
	rc = fut_result_bytes(f, -1, (const void **)&out, &len);
	double t = bench_now() - t0;
	if (rc != FUT_OK)
		die("W6 result", rc);
	if (len != W6_BYTES)
		die("W6 length", FUT_ESTATE);
	for (size_t i = 0; i < len; i++)
		if (out[i] != (unsigned char)(i * 31 + 7))
			die("W6 bytes", FUT_ESTATE);
	fut_release(f);
	if (print)
		printf("RESULT workload=W6 impl=libfuture-process n=1 MBps=%.0f\n",
	       (double)W6_BYTES / t / 1e6);
}

int main(void)
{
	fut_executor *ex = NULL;
	int rc = fut_process_pool_new(&ex, &(fut_process_pool_opts){
						   .max_workers = 2 });
	if (rc != FUT_OK)
		die("fut_process_pool_new", rc);
	w4(ex, bench_n(20000));
	w5(ex, bench_n(200000));
	/* One worker, so that the second run finds the buffer built. */
	fut_executor_free(ex);
	rc = fut_process_pool_new(&ex, &(fut_process_pool_opts){
					       .max_workers = 1 });
	if (rc != FUT_OK)
		die("fut_process_pool_new", rc);
	w6(ex, false);
	w6(ex, true);
	fut_executor_free(ex);
	return 0;
}
