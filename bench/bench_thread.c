/*
 * bench_thread.c: workloads W1-W3 of PERF.md on libfuture's thread pool,
 * plus the memory figures: peak RSS per pending task + future (MEM), and
 * the heap in use after n tiny tasks in windows of 10,000 and after the
 * pool is freed (MEM-WIN: memory must follow what is live).
 * Every workload checks its result (a sum, a checksum) and exits non-zero
 * when it is wrong.  Two workers, as the peers (GLib, oneTBB, Python) use.
 */
#include <inttypes.h>
#include <malloc.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"
#include "future.h"

#define WORKERS 2
#define IMPL "libfuture-thread"

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_thread: %s: %s\n", what, fut_strerror(rc));
	exit(1);
}

static fut_executor *pool(void)
{
	fut_executor *ex = NULL;
	int rc = fut_thread_pool_new(
		&ex, &(fut_thread_pool_opts){ .max_workers = WORKERS });
	if (rc != FUT_OK)
		die("fut_thread_pool_new", rc);
	return ex;
}

static uintptr_t value_of(fut_future *f)
{
	void *v = NULL;
	int rc = fut_result(f, FUT_FOREVER, &v);
	if (rc != FUT_OK)
		die("fut_result", rc);
	return (uintptr_t)v;
}

static void w1_task(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) * 2 + 1));
}

static void w2_task(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

static void w3_task(fut_task *t)
{
	fut_task_return(t,
			(void *)(uintptr_t)w3_work((uintptr_t)fut_task_arg(t)));
}

static void gate_task(fut_task *t)
{
	sem_wait(fut_task_arg(t));
}

/* Peak RSS growth with n tasks pending behind one blocked worker, per
 * pending task + future.  The baseline holds the caller's array of
 * handles (8 bytes a task), made present before it: the figure is the
 * pool's, the tasks' and the futures' memory, not the caller's handles. */
static void mem(long n)
{
	fut_future **fs = calloc((size_t)n, sizeof(*fs));
	if (fs == NULL)
		die("calloc", FUT_ENOMEM);
	/* Through a volatile pointer: GCC drops plain stores of zero into
	 * calloc'd memory, and calloc leaves fresh mmap'd pages untouched, so
	 * up to 2026-12-07 the array's pages were faulted in by the submits,
	 * after the baseline, and counted in the figure. */
	fut_future *volatile *touch = fs;
	for (long i = 0; i < n; i++)
		touch[i] = NULL;
	fut_executor *ex = NULL;
	int rc = fut_thread_pool_new(
		&ex, &(fut_thread_pool_opts){ .max_workers = 1 });
	if (rc != FUT_OK)
		die("fut_thread_pool_new", rc);
	sem_t gate;
	sem_init(&gate, 0, 0);
	fut_future *blocker = NULL;
	if ((rc = fut_submit(ex, gate_task, &gate, &blocker)) != FUT_OK)
		die("fut_submit", rc);
	long before = bench_maxrss();
	for (long i = 0; i < n; i++)
		if ((rc = fut_submit(ex, w1_task, (void *)(uintptr_t)i,
				     &fs[i])) != FUT_OK)
			die("fut_submit", rc);
	long after = bench_maxrss();
	sem_post(&gate);
	uint64_t sum = 0;
	for (long i = 0; i < n; i++) {
		sum += value_of(fs[i]);
		fut_release(fs[i]);
	}
	fut_release(blocker);
	fut_executor_free(ex);
	sem_destroy(&gate);
	free(fs);
	if (sum != (uint64_t)n * (uint64_t)n) {
		fprintf(stderr, "bench_thread: MEM sum %" PRIu64 " wrong\n",
			sum);
		exit(1);
	}
	printf("RESULT workload=MEM impl=%s n=%ld bytes_per_task=%.1f\n", IMPL,
	       n, (double)(after - before) / (double)n);
}

/* MEM-WIN: n tiny tasks in windows of 10,000 (submit, wait, release), as
 * a long-running server sees them; the heap in use (glibc's mallinfo2,
 * over the process's before the pool) after the last window and after
 * the pool is freed. */
static void mem_windows(long n)
{
	enum {
		WINDOW = 10000
	};
	fut_future **fs = calloc(WINDOW, sizeof(*fs));
	size_t before = mallinfo2().uordblks;
	fut_executor *ex = pool();
	uint64_t sum = 0;
	for (long done = 0; done < n; done += WINDOW) {
		long k = n - done < WINDOW ? n - done : WINDOW;
		int rc;
		for (long i = 0; i < k; i++)
			if ((rc = fut_submit(ex, w1_task, (void *)(uintptr_t)i,
					     &fs[i])) != FUT_OK)
				die("fut_submit", rc);
		for (long i = 0; i < k; i++) {
			sum += value_of(fs[i]) - 2 * (uint64_t)i - 1;
			fut_release(fs[i]);
		}
	}
	size_t in_use = mallinfo2().uordblks;
	fut_executor_free(ex);
	size_t after = mallinfo2().uordblks;
	free(fs);
	if (sum != 0) {
		fprintf(stderr, "bench_thread: MEM-WIN results wrong\n");
		exit(1);
	}
	printf("RESULT workload=MEM-WIN impl=%s n=%ld in_use_kib=%.0f "
	       "after_free_kib=%.0f\n",
	       IMPL, n, ((double)in_use - (double)before) / 1024,
	       ((double)after - (double)before) / 1024);
}

/* W1; `name` tells the cold run (the first in this process, as the peers
 * run it) from a second one, whose heap the first has grown already. */
static void w1(long n, const char *name)
{
	fut_future **fs = calloc((size_t)n, sizeof(*fs));
	fut_executor *ex = pool();
	double t0 = bench_now();
	for (long i = 0; i < n; i++) {
		int rc = fut_submit(ex, w1_task, (void *)(uintptr_t)i, &fs[i]);
		if (rc != FUT_OK)
			die("fut_submit", rc);
	}
	uint64_t sum = 0;
	for (long i = 0; i < n; i++) {
		sum += value_of(fs[i]);
		fut_release(fs[i]);
	}
	double d = bench_now() - t0;
	fut_executor_free(ex);
	free(fs);
	if (sum != (uint64_t)n * (uint64_t)n) {
		fprintf(stderr, "bench_thread: W1 sum %" PRIu64 " wrong\n",
			sum);
		exit(1);
	}
	printf("RESULT workload=%s impl=%s n=%ld rate=%.0f\n", name, IMPL, n,
	       n / d);
}

static void w2(long n)
{
	fut_executor *ex = pool();
	/* The pool starts its first worker on the first submit: outside the
	 * timed loop, as the peers' pools exist before theirs. */
	fut_future *f = NULL;
	if (fut_submit(ex, w2_task, NULL, &f) != FUT_OK || value_of(f) != 1)
		die("warm-up", FUT_ESTATE);
	fut_release(f);
	double t0 = bench_now();
	for (long i = 0; i < n; i++) {
		int rc = fut_submit(ex, w2_task, (void *)(uintptr_t)i, &f);
		if (rc != FUT_OK)
			die("fut_submit", rc);
		if (value_of(f) != (uintptr_t)i + 1) {
			fprintf(stderr, "bench_thread: W2 wrong result\n");
			exit(1);
		}
		fut_release(f);
	}
	double d = bench_now() - t0;
	fut_executor_free(ex);
	printf("RESULT workload=W2 impl=%s n=%ld us_per_op=%.3f\n", IMPL, n,
	       d / n * 1e6);
}

static void w3(long n)
{
	if (n < 1 || n > 1000000000)
		return;
	uint64_t want;
	double serial = w3_serial(n, &want);

	fut_future **fs = calloc((size_t)n, sizeof(*fs));
	fut_executor *ex = pool();
	double t0 = bench_now();
	for (long i = 0; i < n; i++) {
		int rc = fut_submit(ex, w3_task, (void *)(uintptr_t)i, &fs[i]);
		if (rc != FUT_OK)
			die("fut_submit", rc);
	}
	/* Wait for all first (one sleep, as GLib's and oneTBB's wait), then
	 * read the results. */
	int rc = fut_wait(fs, (size_t)n, FUT_ALL_COMPLETED, FUT_FOREVER);
	if (rc != FUT_OK)
		die("fut_wait", rc);
	uint64_t got = 0;
	for (long i = 0; i < n; i++) {
		got ^= value_of(fs[i]);
		fut_release(fs[i]);
	}
	double d = bench_now() - t0;
	fut_executor_free(ex);
	free(fs);
	if (got != want) {
		fprintf(stderr, "bench_thread: W3 checksum wrong\n");
		exit(1);
	}
	printf("RESULT workload=W3 impl=%s n=%ld speedup=%.2f serial_s=%.3f\n",
	       IMPL, n, serial / d, serial);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* In a process of its own: its peak RSS is its own, and its heap
	 * does not warm the timed workloads (W1 ran 7.7 M/s after it in the
	 * same process, 5-6 M/s cold as the peers run). */
	bench_in_child(mem, bench_n(1000000));
	bench_in_child(mem_windows, bench_n(10000000));
	w1(bench_n(1000000), "W1");
	w1(bench_n(1000000), "W1-warm");
	w2(bench_n(100000));
	w3(bench_n(2000));
	return 0;
}
