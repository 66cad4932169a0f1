/*
 * choose: the table behind docs/guide.md's "Choosing an executor".
 *
 * Runs the same task functions on a thread pool and on a process pool:
 *   cpu   200 tasks of ~2 ms of arithmetic       (CPU-bound)
 *   io    200 tasks that wait 5 ms each           (I/O-bound: a sleep
 *         stands in for a slow disk or peer)
 *   tiny  5,000 empty tasks                        (the price per task)
 * and prints the wall time of each next to the serial time (measured for
 * cpu; for io the sum of the waits, 200 x 5 ms; none for tiny), so the rule
 * of thumb can be read off this machine: in C both pools run CPU work in
 * parallel; threads are cheaper per task; processes buy isolation.
 * FUT_EXAMPLE_QUICK=1 in the environment runs a tenth of each.
 */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <future.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t spin_work(uint64_t x)
{
	for (unsigned i = 0; i < 4000000u; i++)
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	return x;
}

static void cpu_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	uint64_t x;
	if (len != sizeof(x)) {
		fut_task_fail(t, 1, "want 8 bytes, got %zu", len);
		return;
	}
	memcpy(&x, in, sizeof(x));
	x = spin_work(x);
	fut_task_return_bytes(t, &x, sizeof(x));
}

static void io_task(fut_task *t)
{
	struct timespec wait = { 0, 5 * 1000 * 1000 };
	nanosleep(&wait, NULL);
	fut_task_return_bytes(t, "ok", 2);
}

static void tiny_task(fut_task *t)
{
	fut_task_return_bytes(t, "", 0);
}

/* Submits n tasks of fn with 8-byte inputs in one batch, waits for all,
 * and checks that every one succeeded.  Returns seconds, or -1. */
static double run(fut_executor *ex, fut_fn fn, size_t n)
{
	static uint64_t inputs[5000];
	static fut_future *fs[5000];
	for (size_t i = 0; i < n; i++)
		inputs[i] = i + 1;
	double t0 = now();
	if (fut_submit_many(ex, fn, inputs, sizeof(inputs[0]), n, fs) != FUT_OK)
		return -1;
	int bad = fut_wait(fs, n, FUT_ALL_COMPLETED, FUT_FOREVER) != FUT_OK;
	double s = now() - t0;
	for (size_t i = 0; i < n; i++) {
		bad |= fut_error(fs[i]) != FUT_OK;
		fut_release(fs[i]);
	}
	return bad ? -1 : s;
}

/* A column of the table: seconds, or "failed" when run() was -1. */
static void seconds(double s)
{
	if (s < 0)
		printf(" %12s", "failed");
	else
		printf(" %12.3f", s);
}

int main(void)
{
	const char *q = getenv("FUT_EXAMPLE_QUICK");
	size_t scale = q != NULL && *q != '\0' && *q != '0' ? 10 : 1;
	fut_executor *procs, *threads;
	/* The process pool first, while this process is single-threaded. */
	if (fut_process_pool_new(&procs, NULL) != FUT_OK ||
	    fut_thread_pool_new(&threads, NULL) != FUT_OK)
		return 1;
	double serial_cpu = now();
	for (uint64_t i = 1; i <= 200 / scale; i++) {
		volatile uint64_t x = spin_work(i);
		(void)x;
	}
	serial_cpu = now() - serial_cpu;

	struct {
		const char *name;
		fut_fn fn;
		size_t n;
		double serial;
	} rows[] = {
		{ "cpu (200 x ~2 ms compute)", cpu_task, 200 / scale,
		  serial_cpu },
		{ "io (200 x 5 ms wait)", io_task, 200 / scale,
		  200 / scale * 0.005 },
		{ "tiny (5000 empty tasks)", tiny_task, 5000 / scale, 0 },
	};
	printf("%-28s %10s %12s %12s\n", "workload", "serial s", "threads s",
	       "processes s");
	int rc = 0;
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		double t = run(threads, rows[r].fn, rows[r].n);
		double p = run(procs, rows[r].fn, rows[r].n);
		if (t < 0 || p < 0)
			rc = 1;
		printf("%-28s %10.3f", rows[r].name, rows[r].serial);
		seconds(t);
		seconds(p);
		putchar('\n');
	}
	size_t tiny = 5000 / scale;
	double t = run(threads, tiny_task, tiny);
	double p = run(procs, tiny_task, tiny);
	if (t < 0 || p < 0) {
		printf("per task (tiny): a run failed\n");
		rc = 1;
	} else {
		printf("per task (tiny): threads %.2f us, processes %.2f us\n",
		       t / (double)tiny * 1e6, p / (double)tiny * 1e6);
	}
	fut_executor_free(threads);
	fut_executor_free(procs);
	return rc;
}
