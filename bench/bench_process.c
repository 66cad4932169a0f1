/*
 * bench_process.c: W4-W6 of PERF.md on the process pool, two workers
 * (W5mix: eight).
 *
 *   W4: 20,000 times: submit a 16-byte input, wait for its 16 bytes back.
 *   W5: 200,000 tasks of 16 bytes in, 16 out, through fut_submit_many in
 *       batches of 10,000 all submitted before the first result is read
 *       (as Python's map), every result checked.
 *   W6: one task returns a 64 MiB buffer, checked byte for byte (outside
 *       the timed part).
 *   W5-one-call: W5 as one fut_submit_many call of 200,000 distinct
 *       inputs (each holds its index), every result checked.
 *   W6e: a task allocates and fills 64 MiB, the caller reads (checks)
 *       every byte, all timed: through fut_task_result_buffer (shared
 *       memory) and through fut_task_return_bytes (the pipe).
 *   W6in: a 64 MiB input (shared memory from 256 KiB) to a task that
 *       reads every byte, timed from the submit to its answer.
 *   W3: W3 of PERF.md (2,000 tasks of ~0.5 ms CPU) on the process pool,
 *       against running them serially in this process (for the guide's
 *       table; the targets are the thread pool's).
 *   MEM: peak RSS growth of this process with 1,000,000 16-byte tasks
 *       pending behind a blocked worker, per pending task + future.
 *   W4 and W5 run again on a pool made with FUT_START_EXEC (impl
 *       libfuture-process-exec): the fork server a fresh exec.
 *   W5mix, the mixed batch: 8 workers, one fut_submit_many call of 1,002
 *       tasks that sleep the milliseconds their input names: 1,000 ms for
 *       tasks 0 and 1 (side by side: one chunk or frame holds both),
 *       1 ms for the other 1,000; seconds from the call until every
 *       result is in and checked, the median of 3 runs, each the first
 *       batch of a new pool.  The ideal is the longest task, ~1.0 s; the
 *       two long tasks run one after the other (~2.1 s) if the worker
 *       that holds both keeps them.
 * Prints RESULT lines (bench/run.sh takes medians).  BENCH_QUICK=1 scales
 * the counts down (W5mix keeps its 1,002 tasks, one run).  With the
 * argument W5mix only W5mix runs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench_common.h"
#include "future.h"

#define MSG 16
#define W6_BYTES ((size_t)64 << 20)

/* The impl of W4's and W5's RESULT lines. */
static const char *impl = "libfuture-process";

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_process: %s: %s\n", what, fut_strerror(rc));
	exit(1);
}

/* W6's and W6e's bytes: byte i of the 64 MiB. */
static unsigned char w6_byte(size_t i)
{
	return (unsigned char)(i * 31 + 7);
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

/* Fills b (NULL: fails t) with the 64 MiB of W6 and W6e; false if NULL. */
static bool fill_64mib(fut_task *t, unsigned char *b)
{
	if (b == NULL) {
		(void)fut_task_fail(t, 1, "out of memory");
		return false;
	}
	for (size_t i = 0; i < W6_BYTES; i++)
		b[i] = w6_byte(i);
	return true;
}

/* The 64 MiB answer, built once per worker (the first, unprinted W6 run
 * pays for it), so that W6 times the transfer, as the pipe floor does. */
static void big_task(fut_task *t)
{
	static unsigned char *b;
	if (b == NULL) {
		unsigned char *m = malloc(W6_BYTES);
		if (!fill_64mib(t, m))
			return;
		b = m;
	}
	(void)fut_task_return_bytes(t, b, W6_BYTES);
}

/* W6e as a user writes it: a result buffer of 64 MiB, filled in place. */
static void fill_buffer_task(fut_task *t)
{
	(void)fill_64mib(t, fut_task_result_buffer(t, W6_BYTES));
}

/* W6e the other way: 64 MiB of the task's own, fut_task_return_bytes. */
static void fill_return_task(fut_task *t)
{
	unsigned char *b = malloc(W6_BYTES);
	if (fill_64mib(t, b))
		(void)fut_task_return_bytes(t, b, W6_BYTES);
	free(b);
}

/* W6in's task: the sum of its input's bytes. */
static void sum_task(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	uint64_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += in[i];
	(void)fut_task_return_bytes(t, &sum, sizeof(sum));
}

/* W3's unit of CPU work, seeded by its 8-byte input. */
static void w3_task(fut_task *t)
{
	uint64_t seed = 0;
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	if (len == sizeof(seed))
		memcpy(&seed, in, sizeof(seed));
	uint64_t x = w3_work(seed);
	(void)fut_task_return_bytes(t, &x, sizeof(x));
}

/* W5mix's input: the milliseconds to sleep and the task's index. */
struct w5mix_in {
	uint32_t ms;
	uint32_t index;
};

/* The answer W5mix's task gives for its input. */
static uint64_t w5mix_answer(const struct w5mix_in *in)
{
	return (uint64_t)in->index * 1000003u + in->ms;
}

/* W5mix's task: sleeps in->ms milliseconds, then answers. */
static void sleep_task(fut_task *t)
{
	struct w5mix_in in;
	size_t len = 0;
	const void *p = fut_task_input(t, &len);
	if (len != sizeof(in)) {
		(void)fut_task_fail(t, 1, "W5mix input of %zu bytes", len);
		return;
	}
	memcpy(&in, p, sizeof(in));
	struct timespec d = { (time_t)(in.ms / 1000),
			      (long)(in.ms % 1000) * 1000000L };
	while (nanosleep(&d, &d) != 0 && errno == EINTR)
		;
	uint64_t r = w5mix_answer(&in);
	(void)fut_task_return_bytes(t, &r, sizeof(r));
}

/* Shared with the workers (the mapping survives their fork): MEM's gate. */
static _Atomic int *gate_open;

static void gate_task(fut_task *t)
{
	(void)t;
	struct timespec ms = { 0, 1000 * 1000 };
	while (!atomic_load(gate_open))
		nanosleep(&ms, NULL);
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

/* Checks and releases the n echo results of fs (inputs in). */
static void check_all(fut_future **fs, const unsigned char *in, long n)
{
	for (long i = 0; i < n; i++) {
		check_echo(fs[i], in + i * MSG);
		fut_release(fs[i]);
	}
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
			printf("RESULT workload=W4 impl=%s n=%ld "
			       "us_per_op=%.3f\n",
			       impl, n, (bench_now() - t0) * 1e6 / (double)n);
	}
}

/* As Python's executor.map(fn, items, chunksize=1000): every task is
 * submitted before the first result is read, in submit_many calls of
 * BATCH tasks each. */
static void w5(fut_executor *ex, long n)
{
	enum {
		BATCH = 10000
	};
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
	check_all(fs, in, n);
	double t = bench_now() - t0;
	printf("RESULT workload=W5 impl=%s n=%ld rate=%.0f\n", impl, n,
	       (double)n / t);
	free(in);
	free(fs);
}

/* f's 64 MiB result. */
static const unsigned char *result_64mib(fut_future *f, const char *what)
{
	const unsigned char *out = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, -1, (const void **)&out, &len);
	if (rc != FUT_OK)
		die(what, rc);
	if (len != W6_BYTES)
		die(what, FUT_ESTATE);
	return out;
}

/* Reads every byte of W6's and W6e's 64 MiB. */
static void check_64mib(const unsigned char *out, const char *what)
{
	for (size_t i = 0; i < W6_BYTES; i++)
		if (out[i] != w6_byte(i))
			die(what, FUT_ESTATE);
}

static void w6(fut_executor *ex, bool print)
{
	double t0 = bench_now();
	fut_future *f = NULL;
	int rc = fut_submit_bytes(ex, big_task, NULL, 0, &f);
	if (rc != FUT_OK)
		die("submit", rc);
	const unsigned char *out = result_64mib(f, "W6");
	double t = bench_now() - t0;
	check_64mib(out, "W6");
	fut_release(f);
	if (print)
		printf("RESULT workload=W6 impl=libfuture-process n=1 MBps=%.0f\n",
		       (double)W6_BYTES / t / 1e6);
}

/* W5 in one fut_submit_many call of n distinct inputs (each holds its
 * index), every result checked. */
static void w5_one_call(fut_executor *ex, long n)
{
	unsigned char *in = malloc((size_t)n * MSG);
	fut_future **fs = malloc((size_t)n * sizeof(*fs));
	if (in == NULL || fs == NULL)
		die("malloc", FUT_ENOMEM);
	for (long i = 0; i < n; i++) {
		uint64_t k = (uint64_t)i, h = k * 0x9E3779B97F4A7C15u;
		memcpy(in + i * MSG, &k, 8);
		memcpy(in + i * MSG + 8, &h, 8);
	}
	double t0 = bench_now();
	int rc = fut_submit_many(ex, echo_task, in, MSG, (size_t)n, fs);
	if (rc != FUT_OK)
		die("submit_many", rc);
	check_all(fs, in, n);
	double t = bench_now() - t0;
	printf("RESULT workload=W5-one-call impl=libfuture-process n=%ld "
	       "rate=%.0f\n",
	       n, (double)n / t);
	free(in);
	free(fs);
}

/* W6e: fn fills 64 MiB in the worker; the time runs from the submit until
 * this process has read every byte (and checked it). */
static void w6e(fut_executor *ex, fut_fn fn, const char *impl)
{
	double t0 = bench_now();
	fut_future *f = NULL;
	int rc = fut_submit_bytes(ex, fn, NULL, 0, &f);
	if (rc != FUT_OK)
		die("submit", rc);
	check_64mib(result_64mib(f, "W6e"), "W6e");
	double t = bench_now() - t0;
	fut_release(f);
	if (impl != NULL)
		printf("RESULT workload=W6e impl=%s n=1 MBps=%.0f\n", impl,
		       (double)W6_BYTES / t / 1e6);
}

static uint64_t result_u64(fut_future *f);

/* W6in: a 64 MiB input (made and filled before the clock starts) to a task
 * that reads every byte; timed from the submit to its 8-byte answer. */
static void w6in(fut_executor *ex, const unsigned char *in, uint64_t want,
		 bool print)
{
	double t0 = bench_now();
	fut_future *f = NULL;
	int rc = fut_submit_bytes(ex, sum_task, in, W6_BYTES, &f);
	if (rc != FUT_OK)
		die("submit", rc);
	if (result_u64(f) != want)
		die("W6in sum", FUT_ESTATE);
	double t = bench_now() - t0;
	fut_release(f);
	if (print)
		printf("RESULT workload=W6in impl=libfuture-process n=1 "
		       "MBps=%.0f\n",
		       (double)W6_BYTES / t / 1e6);
}

static uint64_t result_u64(fut_future *f)
{
	const void *out = NULL;
	size_t len = 0;
	uint64_t v = 0;
	int rc = fut_result_bytes(f, -1, &out, &len);
	if (rc != FUT_OK)
		die("result", rc);
	if (len != sizeof(v))
		die("result length", FUT_ESTATE);
	memcpy(&v, out, sizeof(v));
	return v;
}

static void w3(fut_executor *ex, long n)
{
	uint64_t want;
	double serial = w3_serial(n, &want);
	uint64_t *seeds = malloc((size_t)n * sizeof(*seeds));
	fut_future **fs = malloc((size_t)n * sizeof(*fs));
	if (seeds == NULL || fs == NULL)
		die("malloc", FUT_ENOMEM);
	for (long i = 0; i < n; i++)
		seeds[i] = (uint64_t)i;
	double t0 = bench_now();
	int rc = fut_submit_many(ex, w3_task, seeds, sizeof(*seeds), (size_t)n,
				 fs);
	if (rc != FUT_OK)
		die("submit_many", rc);
	uint64_t got = 0;
	for (long i = 0; i < n; i++) {
		got ^= result_u64(fs[i]);
		fut_release(fs[i]);
	}
	double d = bench_now() - t0;
	free(seeds);
	free(fs);
	if (got != want)
		die("W3 checksum", FUT_ESTATE);
	printf("RESULT workload=W3 impl=libfuture-process n=%ld speedup=%.2f "
	       "serial_s=%.3f\n",
	       n, serial / d, serial);
}

/* Peak RSS growth with n tasks pending behind the one worker, blocked in
 * gate_task, per pending task + future.  The baseline holds the caller's
 * array of handles (8 bytes a task) and the inputs (MSG bytes a task),
 * both made present before it: the figure is the pool's, the tasks' and
 * the futures' memory. */
static void mem(long n)
{
	gate_open = mmap(NULL, sizeof(*gate_open), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (gate_open == MAP_FAILED)
		die("mmap", FUT_ENOMEM);
	fut_future **fs = calloc((size_t)n, sizeof(*fs));
	unsigned char *in = calloc((size_t)n, MSG);
	if (fs == NULL || in == NULL)
		die("calloc", FUT_ENOMEM);
	/* The handles through a volatile pointer: GCC drops a memset(0) of
	 * calloc'd memory, and calloc leaves fresh mmap'd pages untouched, so
	 * up to 2026-12-07 their pages were faulted in by the submits, after
	 * the baseline, and counted in the figure. */
	fut_future *volatile *touch = fs;
	for (long i = 0; i < n; i++)
		touch[i] = NULL;
	memset(in, 1, (size_t)n * MSG);
	fut_executor *ex = NULL;
	int rc = fut_process_pool_new(
		&ex, &(fut_process_pool_opts){ .max_workers = 1 });
	if (rc != FUT_OK)
		die("fut_process_pool_new", rc);
	fut_future *blocker = NULL;
	if ((rc = fut_submit_bytes(ex, gate_task, NULL, 0, &blocker)) != FUT_OK)
		die("submit", rc);
	long before = bench_maxrss();
	for (long done = 0; done < n; done += 10000) {
		long k = n - done < 10000 ? n - done : 10000;
		rc = fut_submit_many(ex, echo_task, in + done * MSG, MSG,
				     (size_t)k, fs + done);
		if (rc != FUT_OK)
			die("submit_many", rc);
	}
	long after = bench_maxrss();
	atomic_store(gate_open, 1);
	for (long i = 0; i < n; i++) {
		check_echo(fs[i], in + i * MSG);
		fut_release(fs[i]);
	}
	fut_release(blocker);
	fut_executor_free(ex);
	free(fs);
	free(in);
	printf("RESULT workload=MEM impl=libfuture-process n=%ld "
	       "bytes_per_task=%.1f\n",
	       n, (double)(after - before) / (double)n);
}

enum {
	W5MIX_N = 1002,	   /* tasks in the one fut_submit_many call */
	W5MIX_LONG = 2,	   /* the first this many: 1,000 ms, the rest 1 */
	W5MIX_WORKERS = 8, /* max_workers */
	W5MIX_RUNS = 3	   /* the printed figure is their median */
};

/* One W5mix run: the seconds from the fut_submit_many call until every
 * result has been read and checked. */
static double w5mix_once(fut_executor *ex, const struct w5mix_in *in, size_t n,
			 fut_future **fs)
{
	double t0 = bench_now();
	int rc = fut_submit_many(ex, sleep_task, in, sizeof(*in), n, fs);
	if (rc != FUT_OK)
		die("submit_many", rc);
	for (size_t i = 0; i < n; i++) {
		if (result_u64(fs[i]) != w5mix_answer(&in[i]))
			die("W5mix result", FUT_ESTATE);
		fut_release(fs[i]);
	}
	return bench_now() - t0;
}

/* W5mix, the mixed batch: runs times, each the first batch of a new pool
 * of W5MIX_WORKERS, the median printed.  The clock runs from the submit,
 * so it counts the workers' start (a few ms here).  No warm-up: the
 * automatic frames hold about 2 ms of the time the pool has seen tasks
 * take, and a pool that had timed tasks of a millisecond or more (a
 * warm-up's, start-up included) would send tasks 0 and 1 one per frame;
 * a new pool sends them in one chunk, the case W5mix is about. */
static void w5mix(long runs)
{
	static struct w5mix_in in[W5MIX_N];
	static fut_future *fs[W5MIX_N];
	double t[W5MIX_RUNS];
	const fut_process_pool_opts opts = { .max_workers = W5MIX_WORKERS };
	if (runs < 1 || runs > W5MIX_RUNS)
		runs = W5MIX_RUNS;
	for (uint32_t i = 0; i < W5MIX_N; i++)
		in[i] = (struct w5mix_in){ .ms = i < W5MIX_LONG ? 1000 : 1,
					   .index = i };
	for (long r = 0; r < runs; r++) {
		fut_executor *ex = NULL;
		int rc = fut_process_pool_new(&ex, &opts);
		if (rc != FUT_OK)
			die("fut_process_pool_new", rc);
		double d = w5mix_once(ex, in, W5MIX_N, fs);
		fut_executor_free(ex);
		long k = r; /* insertion: t[0..r] stays sorted */
		for (; k > 0 && t[k - 1] > d; k--)
			t[k] = t[k - 1];
		t[k] = d;
	}
	printf("RESULT workload=W5mix impl=libfuture-process n=%d "
	       "seconds=%.3f\n",
	       W5MIX_N,
	       runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "W5mix") == 0) {
		w5mix(bench_n(W5MIX_RUNS));
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "usage: bench_process [W5mix]\n");
		return 2;
	}
	/* In a process of its own: its peak RSS is its own, and its heap
	 * does not warm the timed workloads (W1 ran 7.7 M/s after it in the
	 * same process, 5-6 M/s cold as the peers run). */
	bench_in_child(mem, bench_n(1000000));
	fut_executor *ex = NULL;
	int rc = fut_process_pool_new(
		&ex, &(fut_process_pool_opts){ .max_workers = 2 });
	if (rc != FUT_OK)
		die("fut_process_pool_new", rc);
	w4(ex, bench_n(20000));
	w5(ex, bench_n(200000));
	w5_one_call(ex, bench_n(200000));
	w3(ex, bench_n(2000));
	fut_executor_free(ex);
	/* W4 and W5 with the fork server a fresh exec of this program. */
	rc = fut_process_pool_new(
		&ex,
		&(fut_process_pool_opts){ .max_workers = 2,
					  .start_method = FUT_START_EXEC });
	if (rc != FUT_OK)
		die("fut_process_pool_new", rc);
	impl = "libfuture-process-exec";
	w4(ex, bench_n(20000));
	w5(ex, bench_n(200000));
	impl = "libfuture-process";
	/* One worker, so that the second run finds the buffer built. */
	fut_executor_free(ex);
	rc = fut_process_pool_new(&ex,
				  &(fut_process_pool_opts){ .max_workers = 1 });
	if (rc != FUT_OK)
		die("fut_process_pool_new", rc);
	w6(ex, false);
	w6(ex, true);
	/* A first unprinted run of each starts nothing the second needs: it
	 * warms the code paths only (every run maps fresh memory). */
	w6e(ex, fill_buffer_task, NULL);
	w6e(ex, fill_buffer_task, "libfuture-process-buffer");
	w6e(ex, fill_return_task, NULL);
	w6e(ex, fill_return_task, "libfuture-process-return-bytes");
	unsigned char *in = malloc(W6_BYTES);
	if (in == NULL)
		die("malloc", FUT_ENOMEM);
	uint64_t want = 0;
	for (size_t i = 0; i < W6_BYTES; i++)
		want += in[i] = w6_byte(i);
	w6in(ex, in, want, false);
	w6in(ex, in, want, true);
	free(in);
	fut_executor_free(ex);
	w5mix(bench_n(W5MIX_RUNS));
	return 0;
}
