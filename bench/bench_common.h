/*
 * bench_common.h: helpers shared by the bench programs (bench/ and
 * bench/peers/): a monotonic clock, the process's CPU time, the W3 unit
 * of CPU work, the quick mode, peak RSS and running a workload in a child
 * process, forked or a fresh exec of the program.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline double bench_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CPU time used so far by every thread of this process, in seconds. */
static inline double bench_cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* W3's unit: a fixed LCG loop of W3_ITERS steps (~0.2-0.5 ms here).  The
 * result feeds a checksum so the compiler cannot drop the loop. */
#define W3_ITERS 400000u
static inline uint64_t w3_work(uint64_t seed)
{
	uint64_t x = seed;
	for (unsigned i = 0; i < W3_ITERS; i++)
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	return x;
}

/* W3 run serially in this thread: the seconds it took; *want gets the
 * checksum (the xor of every w3_work(i), i < n). */
static inline double w3_serial(long n, uint64_t *want)
{
	uint64_t x = 0;
	double t0 = bench_now();
	for (long i = 0; i < n; i++)
		x ^= w3_work((uint64_t)i);
	*want = x;
	return bench_now() - t0;
}

/* BENCH_QUICK=1 (a smoke run): n scaled down 10x. */
static inline long bench_n(long n)
{
	const char *q = getenv("BENCH_QUICK");
	if (q != NULL && *q != '\0' && *q != '0')
		return n / 10 > 0 ? n / 10 : 1;
	return n;
}

/* Peak resident set size of this process, in bytes. */
static inline long bench_maxrss(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss * 1024L;
}
/* Runs fn(n) in a child process and waits for it: a workload whose
 * state (a heap grown to hold a million pending tasks) must neither warm
 * nor disturb the workloads timed after it, as a program of its own would
 * not.  Call it before any thread exists.  Exits if the child failed. */
static inline void bench_in_child(void (*fn)(long), long n)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		fn(n);
		fflush(stdout);
		_exit(0);
	}
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench: a workload's child process failed\n");
		exit(1);
	}
}

extern char **environ;

/* Runs this program again, exec'd from /proc/self/exe with the one
 * argument `arg` (which names a workload), and waits for it: a workload
 * that must start in a fresh process, as a program of its own would,
 * whatever ran before it (W7b: no thread stacks kept or cached from an
 * earlier pool, no heap grown).  Its RESULT lines go to this program's
 * standard output.  Exits if the child failed. */
static inline void bench_exec_self(const char *argv0, const char *arg)
{
	fflush(stdout);
	char *args[] = { (char *)argv0, (char *)arg, NULL };
	pid_t pid;
	int status = 0;
	if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ) !=
		    0 ||
	    waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench: %s %s failed\n", argv0, arg);
		exit(1);
	}
}
#endif
