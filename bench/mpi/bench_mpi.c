/*
 * bench_mpi.c: libfuture-mpi on the MPI workloads of issue 14, under
 * `mpirun -np 3` (one client, two servers; bench/mpi/run.sh runs it beside
 * the C floors of floors.c and mpi4py.futures).
 *
 *   W-MPI1  16 bytes to a rank and back, one at a time, N1 times (us/op),
 *           at the default poll_spin and at 1 ms
 *   W-MPI2  N2 tasks of 16 bytes in (x), 16 out (x + 1), over 2 servers:
 *           fut_submit_bytes each then fut_wait(ALL), at prefetch 64, the
 *           default and 1; fut_submit_many in batches of 10,000 (tasks/s)
 *   idle    CPU seconds each rank used over 2 s without tasks (/proc)
 *   startup fut_mpi_executor_new's time on root, after MPI_Init; and,
 *           run as `bench_mpi spawn` (a singleton, no mpirun), its time
 *           to spawn 2 servers (FUT_MPI_SPAWN) and answer one task
 *
 * Results are checked (the bytes, the sum).  Prints RESULT lines in
 * PERF.md's format.  Usage: bench_mpi [N1 N2] | bench_mpi spawn.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <future_mpi.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct msg {
	uint64_t x;
	uint64_t pad;
};

static void inc_task(fut_task *t)
{
	size_t len;
	const struct msg *in = fut_task_input(t, &len);
	struct msg out = { len == sizeof(out) ? in->x + 1 : 0, 0 };
	fut_task_return_bytes(t, &out, sizeof(out));
}

static void pid_task(fut_task *t)
{
	int pid = (int)getpid();
	fut_task_return_bytes(t, &pid, sizeof(pid));
}

static int bad;

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "bench_mpi: check failed: %s\n", what);
		bad = 1;
	}
}

static uint64_t take(fut_future *f)
{
	const void *out;
	size_t len;
	uint64_t x = 0;
	if (fut_result_bytes(f, FUT_FOREVER, &out, &len) == FUT_OK &&
	    len == sizeof(struct msg))
		x = ((const struct msg *)out)->x;
	fut_release(f);
	return x;
}

static void w_mpi1(fut_executor *ex, long n, const char *impl)
{
	for (long i = 0; i < 200; i++) {
		fut_future *f;
		struct msg m = { (uint64_t)i, 0 };
		check(fut_submit_bytes(ex, inc_task, &m, sizeof(m), &f) ==
			      FUT_OK,
		      "submit");
		check(take(f) == (uint64_t)i + 1, "W-MPI1 warm-up result");
	}
	double t = now();
	for (long i = 0; i < n; i++) {
		fut_future *f;
		struct msg m = { (uint64_t)i, 0 };
		check(fut_submit_bytes(ex, inc_task, &m, sizeof(m), &f) ==
			      FUT_OK,
		      "submit");
		check(take(f) == (uint64_t)i + 1, "W-MPI1 result");
	}
	double dt = now() - t;
	printf("RESULT workload=W-MPI1 impl=%s n=%ld us_per_op=%.1f\n", impl, n,
	       dt / (double)n * 1e6);
}

/* Waits for the n futures submitted since t, reads every result (inside
 * the clock, as the C farm sums its results and mpi4py its map's), checks
 * the sum of x + 1 over 0..n-1 and prints the rate. */
static void finish_w_mpi2(fut_future **fs, long n, double t, const char *impl)
{
	check(fut_wait(fs, (size_t)n, FUT_ALL_COMPLETED, FUT_FOREVER) == FUT_OK,
	      "wait");
	uint64_t sum = 0;
	for (long i = 0; i < n; i++)
		sum += take(fs[i]);
	double dt = now() - t;
	uint64_t want = (uint64_t)n * (uint64_t)(n + 1) / 2;
	printf("RESULT workload=W-MPI2 impl=%s n=%ld rate=%.0f check=%s\n",
	       impl, n, (double)n / dt, sum == want ? "ok" : "BAD");
	check(sum == want, "W-MPI2 sum");
}

static void w_mpi2_each(fut_executor *ex, long n, const char *tag)
{
	fut_future **fs = malloc((size_t)n * sizeof(*fs));
	double t = now();
	for (long i = 0; i < n; i++) {
		struct msg m = { (uint64_t)i, 0 };
		check(fut_submit_bytes(ex, inc_task, &m, sizeof(m), &fs[i]) ==
			      FUT_OK,
		      "submit");
	}
	char impl[64];
	snprintf(impl, sizeof(impl), "libfuture-mpi-submit-%s", tag);
	finish_w_mpi2(fs, n, t, impl);
	free(fs);
}

static void w_mpi2_many(fut_executor *ex, long n)
{
	enum {
		BATCH = 10000
	};
	fut_future **fs = malloc((size_t)n * sizeof(*fs));
	struct msg *in = malloc((size_t)n * sizeof(*in));
	/* The inputs are made inside the clock, batch by batch, as the farm
	 * writes its messages and mpi4py's map walks its range. */
	double t = now();
	for (long i = 0; i < n; i += BATCH) {
		long k = n - i < BATCH ? n - i : BATCH;
		for (long j = i; j < i + k; j++)
			in[j] = (struct msg){ (uint64_t)j, 0 };
		check(fut_submit_many(ex, inc_task, &in[i], sizeof(*in),
				      (size_t)k, &fs[i]) == FUT_OK,
		      "submit_many");
	}
	finish_w_mpi2(fs, n, t, "libfuture-mpi-many-p64");
	free(fs);
	free(in);
}

/* utime + stime of a process, seconds. */
static double cpu_of(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (p == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void idle(fut_executor *ex)
{
	int pids[3] = { (int)getpid(), 0, 0 };
	/* One task per server: prefetch 1 and two queued together (one
	 * fut_submit_many) reach both. */
	fut_future *f[2];
	check(fut_submit_many(ex, pid_task, NULL, 0, 2, f) == FUT_OK,
	      "submit_many");
	for (int k = 0; k < 2; k++) {
		const void *out;
		size_t len;
		if (fut_result_bytes(f[k], FUT_FOREVER, &out, &len) == FUT_OK &&
		    len == sizeof(int))
			pids[k + 1] = *(const int *)out;
		fut_release(f[k]);
	}
	check(pids[1] != pids[2], "idle: the two tasks reached both servers");
	struct timespec settle = { 0, 100 * 1000 * 1000 };
	nanosleep(&settle, NULL);
	double before[3], after[3];
	for (int k = 0; k < 3; k++)
		before[k] = cpu_of(pids[k]);
	struct timespec two = { 2, 0 };
	nanosleep(&two, NULL);
	for (int k = 0; k < 3; k++) {
		after[k] = cpu_of(pids[k]);
		double pct = (after[k] - before[k]) / 2.0 * 100;
		printf("RESULT workload=idle impl=libfuture-mpi-rank%d s=2 "
		       "cpu_pct=%.1f\n",
		       k, pct);
	}
}

static fut_executor *make(const fut_mpi_opts *o, double *took)
{
	fut_executor *ex = NULL;
	double t = now();
	int rc = fut_mpi_executor_new(&ex, o);
	*took = now() - t;
	if (rc != FUT_OK) {
		fprintf(stderr, "bench_mpi: fut_mpi_executor_new: %s\n",
			fut_strerror(rc));
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	return ex;
}

/* `bench_mpi spawn`, a singleton: FUT_MPI_SPAWN's start-up with 2
 * servers (copies of this program, which serve and exit here). */
static int spawn_startup(void)
{
	MPI_Comm parent = MPI_COMM_NULL;
	MPI_Comm_get_parent(&parent);
	static char spawn_arg[] = "spawn";
	char *const args[] = { spawn_arg, NULL };
	bool parent_side = parent == MPI_COMM_NULL;
	fut_executor *ex = NULL;
	double t = now();
	int rc = fut_mpi_executor_new(
		&ex, &(fut_mpi_opts){ .flags = FUT_MPI_SPAWN,
				      .max_workers = parent_side ? 2 : 0,
				      .argv = parent_side ? args : NULL });
	double took = now() - t;
	if (rc != FUT_OK) {
		printf("bench_mpi: spawn skipped: %s\n", fut_strerror(rc));
	} else if (ex != NULL) {
		fut_future *f;
		struct msg m = { 41, 0 };
		check(fut_submit_bytes(ex, inc_task, &m, sizeof(m), &f) ==
			      FUT_OK,
		      "submit");
		check(take(f) == 42, "spawn result");
		double answered = now() - t;
		fut_executor_free(ex);
		printf("RESULT workload=startup impl=libfuture-mpi-spawn2 "
		       "ms=%.1f first_answer_ms=%.1f\n",
		       took * 1e3, answered * 1e3);
	}
	fflush(stdout);
	MPI_Finalize();
	return bad;
}

int main(int argc, char **argv)
{
	int provided = 0;
	MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
	if (argc > 1 && strcmp(argv[1], "spawn") == 0)
		return spawn_startup();
	long n1 = argc > 1 ? atol(argv[1]) : 20000;
	long n2 = argc > 2 ? atol(argv[2]) : 100000;
	double took;
	fut_executor *ex = make(&(fut_mpi_opts){ .prefetch = 64 }, &took);
	if (ex != NULL) {
		printf("RESULT workload=startup impl=libfuture-mpi-world "
		       "ms=%.1f\n",
		       took * 1e3);
		w_mpi1(ex, n1, "libfuture-mpi");
		w_mpi2_each(ex, n2, "p64");
		w_mpi2_many(ex, n2);
		fut_executor_free(ex);
	}
	/* The default spin (200 us) against 1 ms: on a loaded machine a round
	 * trip outlasts 200 us and both sides fall into their backoff. */
	ex = make(&(fut_mpi_opts){ .poll_spin = 1e-3 }, &took);
	if (ex != NULL) {
		w_mpi1(ex, n1, "libfuture-mpi-spin1ms");
		fut_executor_free(ex);
	}
	ex = make(NULL, &took);
	if (ex != NULL) {
		w_mpi2_each(ex, n2, "pdefault");
		fut_executor_free(ex);
	}
	ex = make(&(fut_mpi_opts){ .prefetch = 1 }, &took);
	if (ex != NULL) {
		w_mpi2_each(ex, n2 / 10, "p1");
		idle(ex);
		fut_executor_free(ex);
	}
	fflush(stdout);
	MPI_Finalize();
	return bad;
}
