/*
 * glib_loop: a GLib main loop that keeps a thread pool busy and counts its
 * completions, which come back through the completion fd.
 *
 * From inside the loop the program submits jobs to a libfuture thread
 * pool, at most WINDOW in flight, and watches fut_as_completed_fd() with
 * g_unix_fd_add().  A job is "the divisor count summed over 1..n", done by
 * trial division; each time the fd is readable the callback takes every
 * result that is ready, checks it against the sum of n / k over k (the
 * same number counted the other way round), counts it and submits the next
 * job.  A g_timeout_add() prints the count as a progress line every 100 ms.
 * The loop quits when the last answer is in; a 60 s timeout fails a stalled
 * run.
 *
 *   glib_loop [jobs]      (default 2000; 400 with FUT_EXAMPLE_QUICK=1)
 *
 * pkg-config: glib-2.0
 */
#include <glib-unix.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <future.h>

#define WINDOW 64

struct job {
	uint32_t index;
	uint32_t n;
};

struct answer {
	uint32_t index;
	uint64_t divisors; /* d(1) + d(2) + ... + d(n) */
};

/* The thread-pool task: a job in, an answer out. */
static void divisor_sum_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	struct job job;
	if (len != sizeof(job)) {
		fut_task_fail(t, 1, "want %zu bytes, got %zu", sizeof(job),
			      len);
		return;
	}
	memcpy(&job, in, sizeof(job));
	struct answer a = { .index = job.index, .divisors = 0 };
	for (uint32_t m = 1; m <= job.n; m++)
		for (uint32_t d = 1; d * d <= m; d++)
			if (m % d == 0)
				a.divisors += d * d == m ? 1 : 2;
	fut_task_return_bytes(t, &a, sizeof(a));
}

/* The same sum counted by divisor: d divides n / d of the numbers 1..n. */
static uint64_t divisor_sum_check(uint32_t n)
{
	uint64_t sum = 0;
	for (uint32_t d = 1; d <= n; d++)
		sum += n / d;
	return sum;
}

static uint32_t number_for(uint32_t i)
{
	return 2000u + (i % 512u) * 4u;
}

struct state {
	GMainLoop *loop;
	fut_executor *pool;
	fut_as_completed *done;
	int done_fd;
	guint fd_source; /* 0 while the fd is not watched */
	guint watchdog;	 /* 0 once it fired */
	uint32_t jobs, submitted, checked, wrong, in_flight;
	unsigned char *seen; /* seen[i]: job i's answer came */
	int failed;
};

static gboolean on_completions(gint fd, GIOCondition cond, gpointer data);

static void fail(struct state *st, const char *what, int rc)
{
	fprintf(stderr, "glib_loop: %s: %s\n", what, fut_strerror(rc));
	st->failed = 1;
	g_main_loop_quit(st->loop);
}

/* Submits the next job; watches the fd again if it was not watched. */
static int submit_next(struct state *st)
{
	struct job job = { .index = st->submitted,
			   .n = number_for(st->submitted) };
	fut_future *f;
	int rc = fut_submit_bytes(st->pool, divisor_sum_task, &job, sizeof(job),
				  &f);
	if (rc != FUT_OK) {
		fail(st, "fut_submit_bytes", rc);
		return rc;
	}
	rc = fut_as_completed_add(st->done, f);
	fut_release(f); /* the iterator keeps its own reference */
	if (rc != FUT_OK) {
		fail(st, "fut_as_completed_add", rc);
		return rc;
	}
	st->submitted++;
	st->in_flight++;
	if (st->fd_source == 0)
		st->fd_source =
			g_unix_fd_add(st->done_fd, G_IO_IN, on_completions, st);
	return FUT_OK;
}

static void take_answer(struct state *st, fut_future *f)
{
	const void *data;
	size_t len;
	struct answer a;
	int rc = fut_result_bytes(f, 0, &data, &len);
	if (rc != FUT_OK || len != sizeof(a)) {
		fprintf(stderr, "glib_loop: a job failed: %s\n",
			rc != FUT_OK ? fut_error_message(f) : "wrong length");
		st->wrong++;
		return;
	}
	memcpy(&a, data, sizeof(a));
	if (a.index >= st->submitted || st->seen[a.index]) {
		fprintf(stderr, "glib_loop: an answer for job %u\n",
			(unsigned)a.index);
		st->wrong++;
		return;
	}
	st->seen[a.index] = 1;
	uint64_t want = divisor_sum_check(number_for(a.index));
	if (a.divisors != want) {
		fprintf(stderr, "glib_loop: job %u: got %llu, want %llu\n",
			(unsigned)a.index, (unsigned long long)a.divisors,
			(unsigned long long)want);
		st->wrong++;
	}
}

/* The completion fd is readable: take every answer that is ready and
 * keep the window full.  FUT_END (nothing in flight) keeps the fd
 * readable, so the source is removed until the next submit adds it. */
static gboolean on_completions(gint fd, GIOCondition cond, gpointer data)
{
	struct state *st = data;
	fut_future *f;
	int rc;
	(void)fd;
	(void)cond;
	while ((rc = fut_as_completed_next(st->done, 0, &f)) == FUT_OK) {
		take_answer(st, f); /* f is borrowed from the iterator */
		st->checked++;
		st->in_flight--;
		if (st->submitted < st->jobs && submit_next(st) != FUT_OK) {
			st->fd_source = 0; /* removed by this return */
			return G_SOURCE_REMOVE;
		}
	}
	if (rc == FUT_ETIMEDOUT)
		return G_SOURCE_CONTINUE;
	st->fd_source = 0;
	if (rc != FUT_END)
		fail(st, "fut_as_completed_next", rc);
	else /* every job submitted is checked: the window refills above */
		g_main_loop_quit(st->loop);
	return G_SOURCE_REMOVE;
}

/* The first WINDOW jobs, once the loop runs. */
static gboolean start_jobs(gpointer data)
{
	struct state *st = data;
	while (st->submitted < st->jobs && st->submitted < WINDOW)
		if (submit_next(st) != FUT_OK)
			break;
	return G_SOURCE_REMOVE;
}

static gboolean print_progress(gpointer data)
{
	const struct state *st = data;
	printf("glib_loop: %u/%u answers, %u in flight\n",
	       (unsigned)st->checked, (unsigned)st->jobs,
	       (unsigned)st->in_flight);
	fflush(stdout);
	return G_SOURCE_CONTINUE;
}

static gboolean on_stalled(gpointer data)
{
	struct state *st = data;
	fprintf(stderr, "glib_loop: stalled at %u/%u answers\n",
		(unsigned)st->checked, (unsigned)st->jobs);
	st->watchdog = 0;
	st->failed = 1;
	g_main_loop_quit(st->loop);
	return G_SOURCE_REMOVE;
}

int main(int argc, char **argv)
{
	const char *q = getenv("FUT_EXAMPLE_QUICK");
	int jobs = q != NULL && *q != '\0' && *q != '0' ? 400 : 2000;
	if (argc > 1)
		jobs = atoi(argv[1]);
	if (jobs < 1 || jobs > 1000000)
		return 2;

	struct state st = { .jobs = (uint32_t)jobs };
	st.seen = calloc((size_t)jobs, 1);
	int rc = fut_thread_pool_new(&st.pool, NULL);
	if (rc == FUT_OK)
		rc = fut_as_completed_new(&st.done, NULL, 0);
	if (st.seen == NULL || rc != FUT_OK) {
		fprintf(stderr, "glib_loop: %s\n", fut_strerror(rc));
		return 1;
	}
	st.done_fd = fut_as_completed_fd(st.done);
	if (st.done_fd < 0) {
		perror("glib_loop: fut_as_completed_fd");
		return 1;
	}

	st.loop = g_main_loop_new(NULL, FALSE);
	g_idle_add(start_jobs, &st);
	guint progress = g_timeout_add(100, print_progress, &st);
	st.watchdog = g_timeout_add_seconds(60, on_stalled, &st);
	g_main_loop_run(st.loop);

	g_source_remove(progress);
	if (st.watchdog != 0)
		g_source_remove(st.watchdog);
	if (st.fd_source != 0)
		g_source_remove(st.fd_source);
	g_main_loop_unref(st.loop);
	fut_as_completed_free(st.done);
	fut_executor_free(st.pool); /* waits for any task still running */
	free(st.seen);
	print_progress(&st);
	printf("glib_loop: %u jobs, %u answers checked, %u wrong\n",
	       (unsigned)st.jobs, (unsigned)st.checked, (unsigned)st.wrong);
	return !st.failed && st.checked == st.jobs && st.wrong == 0 ? 0 : 1;
}
