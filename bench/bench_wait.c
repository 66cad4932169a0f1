/*
 * bench_wait.c: what fut_wait() costs on 10,000 futures that another thread
 * completes one by one.
 *
 * The waiter registers on every future and sleeps; the completer finishes
 * them in order.  Printed: the waiter's own CPU time (RUSAGE_THREAD), how
 * many times it went to sleep (voluntary context switches: O(1) if the wait
 * wakes only when its condition holds, N if it woke per completion), and
 * the completer's time per completion with the waiter registered compared
 * with nobody waiting.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "future.h"

#define N 10000

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static fut_future *fs[N];
static double complete_seconds;

static void *complete_all(void *arg)
{
	(void)arg;
	/* Let the waiter register and fall asleep first. */
	struct timespec pause = { 0, 50 * 1000 * 1000 };
	nanosleep(&pause, NULL);
	double t0 = now();
	for (int i = 0; i < N; i++)
		fut_set_result(fs[i], (void *)(intptr_t)(i + 1));
	complete_seconds = now() - t0;
	return NULL;
}

static void make_futures(void)
{
	for (int i = 0; i < N; i++)
		if (fut_future_new(&fs[i]) != FUT_OK)
			exit(1);
}

static long check_and_release(void)
{
	long sum = 0;
	for (int i = 0; i < N; i++) {
		void *v;
		if (fut_result(fs[i], 0, &v) != FUT_OK)
			exit(1);
		sum += (intptr_t)v;
		fut_release(fs[i]);
	}
	return sum;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Baseline: the completer alone, nobody waiting. */
	make_futures();
	double t0 = now();
	for (int i = 0; i < N; i++)
		fut_set_result(fs[i], (void *)(intptr_t)(i + 1));
	double alone = now() - t0;
	if (check_and_release() != (long)N * (N + 1) / 2)
		return 1;

	make_futures();
	pthread_t t;
	struct rusage r0, r1;
	pthread_create(&t, NULL, complete_all, NULL);
	getrusage(RUSAGE_THREAD, &r0);
	double w0 = now();
	if (fut_wait(fs, N, FUT_ALL_COMPLETED, FUT_FOREVER) != FUT_OK)
		return 1;
	double wall = now() - w0;
	getrusage(RUSAGE_THREAD, &r1);
	pthread_join(t, NULL);
	if (check_and_release() != (long)N * (N + 1) / 2)
		return 1;
	double cpu =
		(double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
		(double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
		(double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) * 1e-6 +
		(double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1e-6;
	long sleeps = r1.ru_nvcsw - r0.ru_nvcsw;
	printf("RESULT workload=wait10k impl=libfuture n=%d waiter_cpu_us=%.0f "
	       "waiter_sleeps=%ld wall_ms=%.1f\n",
	       N, cpu * 1e6, sleeps, wall * 1e3);
	printf("RESULT workload=wait10k-complete impl=libfuture n=%d "
	       "us_per_op=%.3f alone_us_per_op=%.3f\n",
	       N, complete_seconds / N * 1e6, alone / N * 1e6);
	return 0;
}
