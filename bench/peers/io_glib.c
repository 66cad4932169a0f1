/*
 * io_glib.c: GLib's GThreadPool on W7-W9 (../io_common.h), adapted from
 * the project's shared bench-peers/io_glib.c: the same pools, pushes and
 * clocks, plus BENCH_QUICK (bench_n) and checks that every task ran once
 * (a count per workload and, in W9, that all 16 ran).  GThreadPool
 * returns nothing per task: the tasks count down (glib_countdown.h).
 * W7b runs in a fresh process (this program exec'd again as `io_glib
 * W7b`), as it does for libfuture and Python: right after W7's pool in
 * the same process it ran 5.6% slower than in a process of its own (the
 * bench audit of 2026-12-07).
 */
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "../bench_common.h"
#include "../io_common.h"
#include "glib_countdown.h"

/* What a task does; the items are these + 1 (GThreadPool refuses NULL). */
enum {
	TINY,
	BLOCK_W7,
	BLOCK_W8,
	GATED
};

/* ran: how many counted tasks ran (left counts them down too). */
static gint ran, running, gate;

static void task(gpointer data, gpointer ud)
{
	(void)ud;
	switch (GPOINTER_TO_INT(data) - 1) {
	case BLOCK_W7:
		io_block_ms(W7_BLOCK_MS);
		break;
	case BLOCK_W8: /* not counted: W8 times the tiny ones only */
		io_block_ms(W8_BLOCK_MS);
		return;
	case GATED:
		g_atomic_int_inc(&running);
		while (!g_atomic_int_get(&gate))
			io_block_us(W9_GATE_POLL_US);
		break;
	}
	g_atomic_int_inc(&ran);
	count_down();
}

static GThreadPool *pool(int workers)
{
	return g_thread_pool_new(task, NULL, workers, FALSE, NULL);
}

static void push(GThreadPool *p, int what, long n)
{
	for (long i = 0; i < n; i++)
		g_thread_pool_push(p, GINT_TO_POINTER(what + 1), NULL);
}

static void expect_ran(const char *workload, long n)
{
	if (g_atomic_int_get(&ran) != n) {
		fprintf(stderr, "io_glib: %s: %d tasks ran, want %ld\n",
			workload, g_atomic_int_get(&ran), n);
		exit(1);
	}
}

static void w7(const char *name, long tasks, int workers)
{
	GThreadPool *p = pool(workers);
	g_atomic_int_set(&left, (gint)tasks);
	g_atomic_int_set(&ran, 0);
	double t0 = bench_now();
	push(p, BLOCK_W7, tasks);
	wait_all();
	double d = bench_now() - t0;
	g_thread_pool_free(p, FALSE, TRUE);
	expect_ran(name, tasks);
	printf("RESULT workload=%s impl=glib-gthreadpool n=%ld efficiency=%.3f\n",
	       name, tasks, io_w7_ideal_s(tasks, workers) / d);
}

static void w8(long tiny)
{
	GThreadPool *p = pool(W8_WORKERS);
	push(p, BLOCK_W8, W8_BLOCKERS);
	g_atomic_int_set(&left, (gint)tiny);
	g_atomic_int_set(&ran, 0);
	double t0 = bench_now();
	push(p, TINY, tiny);
	wait_all();
	double d = bench_now() - t0;
	g_thread_pool_free(p, FALSE, TRUE);
	expect_ran("W8", tiny);
	printf("RESULT workload=W8 impl=glib-gthreadpool n=%ld ms=%.1f\n", tiny,
	       d * 1e3);
}

static void w9(long rounds)
{
	double worst = 0;
	for (long r = 0; r < rounds; r++) {
		GThreadPool *p = pool(W9_TASKS);
		g_atomic_int_set(&running, 0);
		g_atomic_int_set(&gate, 0);
		g_atomic_int_set(&left, W9_TASKS);
		g_atomic_int_set(&ran, 0);
		double t0 = bench_now();
		push(p, GATED, W9_TASKS);
		while (g_atomic_int_get(&running) < W9_TASKS &&
		       bench_now() - t0 < W9_CAP_S)
			io_block_us(W9_WATCH_POLL_US);
		double d = bench_now() - t0;
		if (d > W9_CAP_S)
			d = W9_CAP_S;
		if (d > worst)
			worst = d;
		g_atomic_int_set(&gate, 1);
		wait_all();
		g_thread_pool_free(p, FALSE, TRUE);
		expect_ran("W9", W9_TASKS);
	}
	printf("RESULT workload=W9 impl=glib-gthreadpool n=%d worst_ms=%.2f\n",
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
		fprintf(stderr, "usage: io_glib [W7b]\n");
		return 2;
	}
	bench_exec_self(argv[0], "W7b"); /* first, in a fresh process */
	w7("W7", bench_n(W7_TASKS), W7_WORKERS);
	w8(bench_n(W8_TINY));
	w9(bench_n(W9_ROUNDS));
	return 0;
}
