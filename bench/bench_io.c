/*
 * bench_io.c: workloads W7, W7b, W8 and W9 of PERF.md on libfuture's
 * thread pool: tasks that block (io_common.h has the definitions and the
 * constants the peers share).  Each pool is made before its clock starts
 * and freed after it stops, as the peers (bench/peers/io_glib.c,
 * bench/peers/io_python.py) do.  Every workload checks that each task ran
 * exactly once (a count and a sum of the values the tasks returned) and
 * exits non-zero when not.  W7b runs in a fresh process (this program
 * exec'd again as `bench_io W7b`), as it does for the peers: run after
 * W7 in one process, our pool started 64 of its 256 threads on the
 * stacks W7's threads left (thread_pool/stack.c), and GLib's W7b ran
 * slower there than in a process of its own.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "future.h"
#include "io_common.h"

#define IMPL "libfuture-thread"

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_io: %s: %s\n", what, fut_strerror(rc));
	exit(1);
}

static void wrong(const char *workload, const char *what, long got, long want)
{
	fprintf(stderr, "bench_io: %s: %s %ld, want %ld\n", workload, what, got,
		want);
	exit(1);
}

static fut_executor *pool(size_t workers)
{
	fut_executor *ex = NULL;
	int rc = fut_thread_pool_new(
		&ex, &(fut_thread_pool_opts){ .max_workers = workers });
	if (rc != FUT_OK)
		die("fut_thread_pool_new", rc);
	return ex;
}

/* Submits fn(i) for i in [0, n) into fs. */
static void submit_range(fut_executor *ex, fut_fn fn, fut_future **fs, long n)
{
	for (long i = 0; i < n; i++) {
		int rc = fut_submit(ex, fn, (void *)(uintptr_t)i, &fs[i]);
		if (rc != FUT_OK)
			die("fut_submit", rc);
	}
}

/* Waits for all n: the end of a timed run, as Python's twin waits
 * (concurrent.futures.wait) before it stops its clock. */
static void wait_all(fut_future **fs, long n)
{
	int rc = fut_wait(fs, (size_t)n, FUT_ALL_COMPLETED, FUT_FOREVER);
	if (rc != FUT_OK)
		die("fut_wait", rc);
}

/* Waits for all n, releases them and returns the sum of their values. */
static uint64_t collect(fut_future **fs, long n)
{
	wait_all(fs, n);
	uint64_t sum = 0;
	for (long i = 0; i < n; i++) {
		void *v = NULL;
		int rc = fut_result(fs[i], 0, &v);
		if (rc != FUT_OK)
			die("fut_result", rc);
		sum += (uintptr_t)v;
		fut_release(fs[i]);
	}
	return sum;
}

/* The sum of i + 1 for i in [0, n): what n tasks returning arg + 1 give. */
static uint64_t sum_of_plus_one(long n)
{
	return (uint64_t)n * (uint64_t)(n + 1) / 2;
}

static atomic_long ran;

/* The start of W7's and W7b's tasks: how many have started, and the
 * process's CPU time when the last of the first `start_all` started (in
 * W7b, when the pool's 256th thread ran its task). */
static atomic_long started;
static long start_all;
static double start_cpu;

static void blocking_task(fut_task *t)
{
	if (atomic_fetch_add(&started, 1) + 1 == start_all)
		start_cpu = bench_cpu_now();
	io_block_ms(W7_BLOCK_MS);
	atomic_fetch_add(&ran, 1);
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

/* W7 and W7b: `tasks` blocking tasks on `workers` workers; the
 * efficiency, ideal wall time / measured. */
static void w7(const char *name, long tasks, size_t workers)
{
	fut_future **fs = calloc((size_t)tasks, sizeof(*fs));
	if (fs == NULL)
		die("calloc", FUT_ENOMEM);
	fut_executor *ex = pool(workers);
	atomic_store(&ran, 0);
	atomic_store(&started, 0);
	start_all = tasks < (long)workers ? tasks : (long)workers;
	double c0 = bench_cpu_now();
	double t0 = bench_now();
	submit_range(ex, blocking_task, fs, tasks);
	wait_all(fs, tasks);
	double d = bench_now() - t0;
	uint64_t sum = collect(fs, tasks);
	fut_executor_free(ex);
	free(fs);
	if (atomic_load(&ran) != tasks)
		wrong(name, "tasks ran", atomic_load(&ran), tasks);
	if (sum != sum_of_plus_one(tasks))
		wrong(name, "sum", (long)sum, (long)sum_of_plus_one(tasks));
	printf("RESULT workload=%s impl=%s n=%ld efficiency=%.3f\n", name, IMPL,
	       tasks, io_w7_ideal_s(tasks, (long)workers) / d);
	/* What starting each thread cost, every thread of the process
	 * counted: the CPU until the last started, per thread. */
	printf("RESULT workload=%s-start impl=%s n=%ld cpu_us=%.1f\n", name,
	       IMPL, start_all, (start_cpu - c0) / (double)start_all * 1e6);
}

static void long_blocker(fut_task *t)
{
	io_block_ms(W8_BLOCK_MS);
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

static void tiny_task(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

/* W8: the time until `tiny` tasks queued behind W8_BLOCKERS long blockers
 * are done, on W8_WORKERS workers. */
static void w8(long tiny)
{
	fut_future *blockers[W8_BLOCKERS];
	fut_future **fs = calloc((size_t)tiny, sizeof(*fs));
	if (fs == NULL)
		die("calloc", FUT_ENOMEM);
	fut_executor *ex = pool(W8_WORKERS);
	submit_range(ex, long_blocker, blockers, W8_BLOCKERS);
	double t0 = bench_now();
	submit_range(ex, tiny_task, fs, tiny);
	wait_all(fs, tiny);
	double d = bench_now() - t0;
	uint64_t sum = collect(fs, tiny);
	uint64_t blocked = collect(blockers, W8_BLOCKERS);
	fut_executor_free(ex);
	free(fs);
	if (sum != sum_of_plus_one(tiny))
		wrong("W8", "sum", (long)sum, (long)sum_of_plus_one(tiny));
	if (blocked != sum_of_plus_one(W8_BLOCKERS))
		wrong("W8", "blockers' sum", (long)blocked,
		      (long)sum_of_plus_one(W8_BLOCKERS));
	printf("RESULT workload=W8 impl=%s n=%ld ms=%.1f\n", IMPL, tiny,
	       d * 1e3);
}

static atomic_int running;
static atomic_int gate_open;

static void gated_task(fut_task *t)
{
	atomic_fetch_add(&running, 1);
	while (!atomic_load(&gate_open))
		io_block_us(W9_GATE_POLL_US);
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

/* One round of W9 on a new pool: the seconds until all W9_TASKS gated
 * tasks run, or W9_CAP_S when they never all do. */
static double w9_round(void)
{
	fut_future *fs[W9_TASKS];
	fut_executor *ex = pool(W9_TASKS);
	atomic_store(&running, 0);
	atomic_store(&gate_open, 0);
	double t0 = bench_now();
	submit_range(ex, gated_task, fs, W9_TASKS);
	while (atomic_load(&running) < W9_TASKS && bench_now() - t0 < W9_CAP_S)
		io_block_us(W9_WATCH_POLL_US);
	double d = bench_now() - t0;
	if (d > W9_CAP_S)
		d = W9_CAP_S;
	atomic_store(&gate_open, 1);
	uint64_t sum = collect(fs, W9_TASKS);
	fut_executor_free(ex);
	if (atomic_load(&running) != W9_TASKS)
		wrong("W9", "tasks ran", atomic_load(&running), W9_TASKS);
	if (sum != sum_of_plus_one(W9_TASKS))
		wrong("W9", "sum", (long)sum, (long)sum_of_plus_one(W9_TASKS));
	return d;
}

static void w9(long rounds)
{
	double worst = 0;
	for (long r = 0; r < rounds; r++) {
		double d = w9_round();
		if (d > worst)
			worst = d;
	}
	printf("RESULT workload=W9 impl=%s n=%d worst_ms=%.2f\n", IMPL,
	       W9_TASKS, worst * 1e3);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && strcmp(argv[1], "W7b") == 0) {
		w7("W7b", bench_n(W7B_TASKS), W7B_WORKERS);
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "usage: bench_io [W7b]\n");
		return 2;
	}
	bench_exec_self(argv[0], "W7b"); /* first, in a fresh process */
	w7("W7", bench_n(W7_TASKS), W7_WORKERS);
	w8(bench_n(W8_TINY));
	w9(bench_n(W9_ROUNDS));
	return 0;
}
