/*
 * glib.c: GLib's GThreadPool on W1-W3, two workers.  GThreadPool returns
 * nothing per task: W1 and W3 fold results into atomics and count down
 * (glib_countdown.h); W2 passes each result back through a GAsyncQueue.
 */
#include <glib.h>
#include <stdio.h>

#include "../bench_common.h"
#include "glib_countdown.h"

static gint64 sum;

/* Items are i + 1: GThreadPool refuses NULL data. */
static void w1_task(gpointer data, gpointer ud)
{
	(void)ud;
	gint64 i = (gint64)GPOINTER_TO_SIZE(data) - 1;
	__atomic_fetch_add(&sum, i * 2 + 1, __ATOMIC_RELAXED);
	count_down();
}

static void w2_task(gpointer data, gpointer ud)
{
	g_async_queue_push(ud, GSIZE_TO_POINTER(GPOINTER_TO_SIZE(data) + 1));
}

static void w3_task(gpointer data, gpointer ud)
{
	(void)ud;
	uint64_t x = w3_work(GPOINTER_TO_SIZE(data) - 1);
	__atomic_fetch_xor((uint64_t *)&sum, x, __ATOMIC_RELAXED);
	count_down();
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	long n = bench_n(1000000);
	GThreadPool *p = g_thread_pool_new(w1_task, NULL, 2, FALSE, NULL);
	g_atomic_int_set(&left, (gint)n);
	double t0 = bench_now();
	for (long i = 0; i < n; i++)
		g_thread_pool_push(p, GSIZE_TO_POINTER((gsize)i + 1), NULL);
	wait_all();
	double d = bench_now() - t0;
	g_thread_pool_free(p, FALSE, TRUE);
	if (sum != (gint64)n * n)
		return 1;
	printf("RESULT workload=W1 impl=glib-gthreadpool n=%ld rate=%.0f\n", n,
	       n / d);

	long m = bench_n(100000);
	GAsyncQueue *q = g_async_queue_new();
	p = g_thread_pool_new(w2_task, q, 2, FALSE, NULL);
	t0 = bench_now();
	for (long i = 0; i < m; i++) {
		g_thread_pool_push(p, GSIZE_TO_POINTER((gsize)i + 1), NULL);
		if (GPOINTER_TO_SIZE(g_async_queue_pop(q)) != (gsize)i + 2)
			return 1;
	}
	d = bench_now() - t0;
	g_thread_pool_free(p, FALSE, TRUE);
	g_async_queue_unref(q);
	printf("RESULT workload=W2 impl=glib-gthreadpool n=%ld us_per_op=%.3f\n",
	       m, d / m * 1e6);

	long k = bench_n(2000);
	uint64_t want = 0;
	t0 = bench_now();
	for (long i = 0; i < k; i++)
		want ^= w3_work((uint64_t)i);
	double serial = bench_now() - t0;
	sum = 0;
	g_atomic_int_set(&left, (gint)k);
	p = g_thread_pool_new(w3_task, NULL, 2, FALSE, NULL);
	t0 = bench_now();
	for (long i = 0; i < k; i++)
		g_thread_pool_push(p, GSIZE_TO_POINTER((gsize)i + 1), NULL);
	wait_all();
	d = bench_now() - t0;
	g_thread_pool_free(p, FALSE, TRUE);
	if ((uint64_t)sum != want)
		return 1;
	printf("RESULT workload=W3 impl=glib-gthreadpool n=%ld speedup=%.2f\n",
	       k, serial / d);
	return 0;
}
