/*
 * loops: completions per second through fut_as_completed_fd() in three
 * event loops (epoll, libuv, GLib), beside fut_as_completed_next() waiting
 * with no loop at all.
 *
 * A thread pool of two workers runs an empty task (it returns its
 * argument); the loop thread keeps a window of them in flight, and each
 * time its loop says the fd is readable it takes every completion that is
 * ready (next with a zero timeout), checks it and submits the next task.
 * Two windows: 256 tasks in flight (throughput: one wake-up takes many
 * completions) and 1, where the loop takes one completion per wake-up
 * (each completion is a round trip: submit, a worker runs it, the fd
 * turns readable, the loop calls back, next takes it).  A run is n completions on a fresh
 * iterator; ROUNDS rounds of every kind, interleaved, then the median and
 * the spread, and a RESULT line per kind and window for bench/run.sh.
 * "per wake-up" is the completions one readable fd gave (n/a without
 * an fd).
 *
 *   build/bench/loops          (BENCH_QUICK=1: N / 10)
 *
 * pkg-config: libuv glib-2.0
 */
#include <glib-unix.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include "bench_common.h"
#include <future.h>

#define ROUNDS 5

struct run {
	fut_executor *pool;
	fut_as_completed *it;
	int fd;
	long window, total, submitted, completed, wakeups;
	uint64_t sum; /* of the returned values: 1 + 2 + ... + total */
	int failed;
};

static void echo_task(fut_task *t)
{
	fut_task_return(t, fut_task_arg(t));
}

static void submit_one(struct run *r)
{
	fut_future *f;
	void *arg = (void *)(uintptr_t)(r->submitted + 1);
	if (fut_submit(r->pool, echo_task, arg, &f) != FUT_OK) {
		r->failed = 1;
		return;
	}
	if (fut_as_completed_add(r->it, f) != FUT_OK)
		r->failed = 1;
	fut_release(f); /* the iterator keeps its own reference */
	r->submitted++;
}

static void take(struct run *r, fut_future *f)
{
	void *v;
	if (fut_result(f, 0, &v) != FUT_OK)
		r->failed = 1;
	r->sum += (uintptr_t)v;
	r->completed++;
	if (r->submitted < r->total && !r->failed)
		submit_one(r);
}

/* The fd is readable: every completion that is ready, or with a window
 * of 1 only one, so that each completion passes through the loop. */
static void drain(struct run *r)
{
	fut_future *f;
	r->wakeups++;
	while (fut_as_completed_next(r->it, 0, &f) == FUT_OK) {
		take(r, f);
		if (r->window == 1)
			break;
	}
}

static void fill_window(struct run *r)
{
	while (r->submitted < r->total && r->submitted < r->window &&
	       !r->failed)
		submit_one(r);
}

/* ---- the four ways to wait ---------------------------------------- */

static void run_blocking(struct run *r)
{
	fut_future *f;
	fill_window(r);
	while (r->completed < r->total && !r->failed) {
		if (fut_as_completed_next(r->it, FUT_FOREVER, &f) != FUT_OK) {
			r->failed = 1;
			break;
		}
		take(r, f); /* no wake-ups counted: no fd */
	}
}

static void run_epoll(struct run *r)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN };
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, r->fd, &ev) != 0) {
		r->failed = 1;
		return;
	}
	fill_window(r);
	while (r->completed < r->total && !r->failed) {
		if (epoll_wait(ep, &ev, 1, 10000) != 1) {
			r->failed = 1;
			break;
		}
		drain(r);
	}
	close(ep);
}

static void on_uv_readable(uv_poll_t *h, int status, int events)
{
	struct run *r = h->data;
	(void)events;
	if (status < 0)
		r->failed = 1;
	else
		drain(r);
	if (r->completed == r->total || r->failed) {
		uv_poll_stop(h);
		uv_close((uv_handle_t *)h, NULL);
	}
}

static void run_uv(struct run *r)
{
	uv_loop_t loop;
	uv_poll_t w;
	if (uv_loop_init(&loop) != 0 || uv_poll_init(&loop, &w, r->fd) != 0) {
		r->failed = 1;
		return;
	}
	w.data = r;
	fill_window(r);
	if (uv_poll_start(&w, UV_READABLE, on_uv_readable) != 0)
		r->failed = 1;
	else
		uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		r->failed = 1;
}

struct glib_run {
	struct run *r;
	GMainLoop *loop;
};

static gboolean on_glib_readable(gint fd, GIOCondition cond, gpointer data)
{
	struct glib_run *g = data;
	(void)fd;
	(void)cond;
	drain(g->r);
	if (g->r->completed < g->r->total && !g->r->failed)
		return G_SOURCE_CONTINUE;
	g_main_loop_quit(g->loop);
	return G_SOURCE_REMOVE;
}

static void run_glib(struct run *r)
{
	GMainContext *ctx = g_main_context_new();
	struct glib_run g = { .r = r, .loop = g_main_loop_new(ctx, FALSE) };
	GSource *s = g_unix_fd_source_new(r->fd, G_IO_IN);
	g_source_set_callback(s, G_SOURCE_FUNC(on_glib_readable), &g, NULL);
	g_source_attach(s, ctx);
	g_source_unref(s);
	fill_window(r);
	g_main_loop_run(g.loop);
	g_main_loop_unref(g.loop);
	g_main_context_unref(ctx);
}

/* ------------------------------------------------------------------- */

static const struct kind {
	const char *name;
	void (*run)(struct run *);
} kinds[] = {
	{ "next-blocking", run_blocking },
	{ "epoll", run_epoll },
	{ "libuv", run_uv },
	{ "glib", run_glib },
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* ROUNDS runs of every kind with this window; prints the table. */
static int measure(fut_executor *pool, long window, long n)
{
	double rate[NKINDS][ROUNDS], per_wakeup[NKINDS][ROUNDS];
	for (int round = -1; round < ROUNDS; round++) { /* -1: warm-up */
		for (size_t k = 0; k < NKINDS; k++) {
			struct run r = { .pool = pool,
					 .window = window,
					 .total = n };
			if (fut_as_completed_new(&r.it, NULL, 0) != FUT_OK)
				return 1;
			r.fd = fut_as_completed_fd(r.it);
			double t0 = bench_now();
			kinds[k].run(&r);
			double dt = bench_now() - t0;
			fut_as_completed_free(r.it);
			uint64_t want = (uint64_t)n * (uint64_t)(n + 1) / 2;
			if (r.failed || r.completed != n || r.sum != want) {
				fprintf(stderr,
					"loops: %s failed (%ld of %ld)\n",
					kinds[k].name, r.completed, n);
				return 1;
			}
			if (round < 0)
				continue;
			rate[k][round] = (double)n / dt;
			per_wakeup[k][round] =
				r.wakeups == 0 ? 0 :
						 (double)n / (double)r.wakeups;
		}
	}
	printf("\n%ld empty tasks per run, %ld in flight, 2 workers; "
	       "median (min-max) of %d runs\n",
	       n, window, ROUNDS);
	printf("%-14s %28s %10s %12s\n", "wait", "completions/s", "us each",
	       "per wake-up");
	for (size_t k = 0; k < NKINDS; k++) {
		qsort(rate[k], ROUNDS, sizeof(double), cmp_double);
		qsort(per_wakeup[k], ROUNDS, sizeof(double), cmp_double);
		double med = rate[k][ROUNDS / 2];
		char wakeup[32] = "n/a";
		if (per_wakeup[k][ROUNDS / 2] > 0)
			snprintf(wakeup, sizeof(wakeup), "%.1f",
				 per_wakeup[k][ROUNDS / 2]);
		printf("%-14s %10.0f (%7.0f-%7.0f) %10.2f %12s\n",
		       kinds[k].name, med, rate[k][0], rate[k][ROUNDS - 1],
		       1e6 / med, wakeup);
	}
	for (size_t k = 0; k < NKINDS; k++)
		printf("RESULT workload=FD-window%ld impl=%s n=%ld "
		       "completions_per_s=%.0f\n",
		       window, kinds[k].name, n, rate[k][ROUNDS / 2]);
	return 0;
}

int main(void)
{
	fut_executor *pool;
	if (fut_thread_pool_new(&pool, &(fut_thread_pool_opts){
					       .max_workers = 2 }) != FUT_OK)
		return 1;
	int rc = measure(pool, 256, bench_n(200000));
	if (rc == 0)
		rc = measure(pool, 1, bench_n(20000));
	fut_executor_free(pool);
	return rc;
}
