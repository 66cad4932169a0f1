/*
 * demo.c: futures, as_completed and fut_wait, fed first by plain threads,
 * then by a thread pool, then by a process pool.
 *
 * Every job sums the squares of a range of integers; one job has an empty
 * range and reports an error instead.  The demo checks every sum against
 * the closed form and that the bad job failed the way it should, and exits
 * 0 only if all is right.
 *
 * Part 1, the producer side: the main thread makes one future per job
 * (fut_future_new) and starts one pthread per job, which completes it with
 * fut_set_result_bytes() or fut_set_error().  The main thread waits on an
 * as_completed iterator through its pollable fd, the way an event loop
 * would, and prints each result as it completes.
 *
 * Part 2, an executor: the same jobs go to a thread pool in one
 * fut_submit_many() call; the task function reads its range with
 * fut_task_input() and answers with fut_task_return_bytes() or
 * fut_task_fail().  A done callback counts where it ran.
 *
 * Part 3, the same on a process pool: only the constructor changes; the
 * task runs in forked worker processes and its bytes cross pipes.
 *
 * Build and run: make demo.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <future.h>

#define NJOBS 8
#define BAD_JOB 5 /* the job with an empty range */

struct range {
	uint64_t lo, hi; /* [lo, hi) */
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The sum of i*i for i in [0, n): n(n-1)(2n-1)/6. */
static uint64_t squares_below(uint64_t n)
{
	if (n == 0)
		return 0;
	uint64_t a = n, b = n - 1, c = 2 * n - 1;
	/* Divide before multiplying so nothing overflows for our sizes. */
	if (a % 2 == 0)
		a /= 2;
	else
		b /= 2;
	if (a % 3 == 0)
		a /= 3;
	else if (b % 3 == 0)
		b /= 3;
	else
		c /= 3;
	return a * b * c;
}

static uint64_t sum_squares(struct range r)
{
	uint64_t sum = 0;
	for (uint64_t i = r.lo; i < r.hi; i++)
		sum += i * i;
	return sum;
}

/* Uneven sizes, so they finish in some other order. */
static void make_ranges(struct range *r)
{
	for (int i = 0; i < NJOBS; i++) {
		r[i].lo = (uint64_t)i * 100000;
		r[i].hi = r[i].lo + 50000 + (uint64_t)(i % 3) * 400000;
	}
	r[BAD_JOB].hi = r[BAD_JOB].lo;
}

static int index_of(fut_future *const *fs, fut_future *f)
{
	for (int i = 0; i < NJOBS; i++)
		if (fs[i] == f)
			return i;
	return -1;
}

/* Prints one completed future and says whether it is right. */
static bool report(struct range r, int i, fut_future *f, double t0)
{
	const void *data;
	size_t len;
	int rc = fut_result_bytes(f, 0, &data, &len);
	double ms = now_ms() - t0;

	if (r.lo >= r.hi) { /* the job meant to fail */
		bool ok = rc == FUT_ETASK && fut_task_code(f) == EDOM;
		printf("%7.2f ms  job %d  [%" PRIu64 ", %" PRIu64 ")  "
		       "failed: %s (%s, task code %d)  %s\n",
		       ms, i, r.lo, r.hi, fut_error_message(f),
		       fut_strerror(rc), fut_task_code(f),
		       ok ? "as expected" : "WRONG");
		return ok;
	}
	if (rc != FUT_OK || len != sizeof(uint64_t)) {
		printf("%7.2f ms  job %d  failed: %s  WRONG\n", ms, i,
		       fut_strerror(rc));
		return false;
	}
	uint64_t sum;
	memcpy(&sum, data, sizeof sum);
	uint64_t want = squares_below(r.hi) - squares_below(r.lo);
	printf("%7.2f ms  job %d  [%" PRIu64 ", %" PRIu64 ")  "
	       "sum of squares %" PRIu64 "  %s\n",
	       ms, i, r.lo, r.hi, sum, sum == want ? "ok" : "WRONG");
	return sum == want;
}

/* ------------------------------------------------------------------ */
/* Part 1: plain threads complete futures                              */

struct job {
	struct range range;
	fut_future *future;
	pthread_t thread;
	bool started;
};

/* The producer: runs in its own thread and completes the future. */
static void *compute(void *arg)
{
	struct job *job = arg;
	fut_future *f = job->future; /* this thread's own reference */

	if (fut_set_running(f) == FUT_OK) { /* else it was cancelled */
		int rc;
		if (job->range.lo >= job->range.hi) {
			rc = fut_set_error(f, EDOM, "empty range");
		} else {
			uint64_t sum = sum_squares(job->range);
			/* Copied before fut_set_result_bytes returns. */
			rc = fut_set_result_bytes(f, &sum, sizeof sum);
		}
		/* No memory for the copy: fail it with the code's own text,
		 * which needs none, so that its waiters still wake. */
		if (rc == FUT_ENOMEM)
			(void)fut_set_error(f, ENOMEM, NULL);
	}
	fut_release(f);
	return NULL;
}

/* Takes what is ready from it, as an event loop would: poll its fd
 * (readable while next() would not block), then next() without blocking.
 * Returns how many futures were yielded, or -1 on an error. */
static int drain_with_poll(fut_as_completed *it, fut_future *const *fs,
			   const struct range *r, double t0, bool *all_ok)
{
	int fd = fut_as_completed_fd(it);
	int yielded = 0;
	if (fd < 0) {
		perror("fut_as_completed_fd");
		return -1;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 10000) == 0) {
			fprintf(stderr, "nothing completed in 10 s\n");
			return -1;
		}
		fut_future *f;
		int rc;
		while ((rc = fut_as_completed_next(it, 0, &f)) == FUT_OK) {
			int i = index_of(fs, f);
			*all_ok &= i >= 0 && report(r[i], i, f, t0);
			yielded++;
		}
		if (rc == FUT_END)
			return yielded;
		if (rc != FUT_ETIMEDOUT) {
			fprintf(stderr, "next: %s\n", fut_strerror(rc));
			return -1;
		}
	}
}

static bool run_with_threads(void)
{
	struct range r[NJOBS];
	struct job jobs[NJOBS];
	fut_future *fs[NJOBS];
	fut_as_completed *it = NULL;
	bool all_ok = true;
	int rc;

	printf("\n1. %d futures completed by %d plain threads, read through "
	       "the as_completed fd\n",
	       NJOBS, NJOBS);
	make_ranges(r);
	for (int i = 0; i < NJOBS; i++) {
		if ((rc = fut_future_new(&fs[i])) != FUT_OK) {
			fprintf(stderr, "fut_future_new: %s\n",
				fut_strerror(rc));
			while (i-- > 0)
				fut_release(fs[i]);
			return false;
		}
		jobs[i] = (struct job){ .range = r[i], .future = fs[i] };
	}
	/* The iterator holds its own reference on every future. */
	if ((rc = fut_as_completed_new(&it, fs, NJOBS)) != FUT_OK) {
		fprintf(stderr, "fut_as_completed_new: %s\n", fut_strerror(rc));
		all_ok = false;
		goto out;
	}

	double t0 = now_ms();
	for (int i = 0; i < NJOBS; i++) {
		fut_retain(fs[i]); /* the producer thread's reference */
		jobs[i].started = pthread_create(&jobs[i].thread, NULL, compute,
						 &jobs[i]) == 0;
		if (!jobs[i].started) {
			fut_release(fs[i]);
			fut_cancel(fs[i]); /* never started: cancel it */
			all_ok = false;
		}
	}
	int yielded = drain_with_poll(it, fs, r, t0, &all_ok);

	/* Everything was yielded, so fut_wait(ALL_COMPLETED) holds at once. */
	rc = fut_wait(fs, NJOBS, FUT_ALL_COMPLETED, 0);
	if (rc != FUT_OK || yielded != NJOBS) {
		fprintf(stderr, "fut_wait: %s, %d of %d yielded\n",
			fut_strerror(rc), yielded, NJOBS);
		all_ok = false;
	}
	for (int i = 0; i < NJOBS; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].thread, NULL);
out:
	fut_as_completed_free(it);
	for (int i = 0; i < NJOBS; i++)
		fut_release(fs[i]);
	return all_ok;
}

/* ------------------------------------------------------------------ */
/* Part 2: an executor runs the task function                          */

/* The task: one signature for every executor. */
static void sum_squares_task(fut_task *t)
{
	struct range r;
	size_t len;
	const void *in = fut_task_input(t, &len); /* a private copy */

	if (len != sizeof r) {
		fut_task_fail(t, EINVAL, "input of %zu bytes", len);
		return;
	}
	memcpy(&r, in, sizeof r);
	if (r.lo >= r.hi) {
		fut_task_fail(t, EDOM, "empty range [%" PRIu64 ", %" PRIu64 ")",
			      r.lo, r.hi);
		return;
	}
	uint64_t sum = sum_squares(r);
	fut_task_return_bytes(t, &sum, sizeof sum); /* copied */
}

static atomic_int callbacks_in_workers, callbacks_in_main;
static pthread_t main_thread;

/* A done callback: runs once, in the thread that completed the future, or
 * at once in the thread adding it when the future is already done. */
static void count_done(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	if (pthread_equal(pthread_self(), main_thread))
		atomic_fetch_add(&callbacks_in_main, 1);
	else
		atomic_fetch_add(&callbacks_in_workers, 1);
}

static int part = 1;

static bool run_on(fut_executor *ex, const char *name)
{
	struct range r[NJOBS];
	fut_future *fs[NJOBS];
	fut_as_completed *it = NULL;
	bool all_ok = true;
	int rc, yielded = 0;

	printf("\n%d. the same jobs on a %s, one fut_submit_many() call\n",
	       ++part, name);
	make_ranges(r);
	atomic_store(&callbacks_in_workers, 0);
	atomic_store(&callbacks_in_main, 0);
	main_thread = pthread_self();
	double t0 = now_ms();
	/* Input i is r + i * sizeof r[0]; copied before return. */
	rc = fut_submit_many(ex, sum_squares_task, r, sizeof r[0], NJOBS, fs);
	if (rc != FUT_OK) {
		fprintf(stderr, "fut_submit_many: %s\n", fut_strerror(rc));
		return false; /* all or nothing: no future to release */
	}
	for (int i = 0; i < NJOBS; i++)
		if (fut_add_done_callback(fs[i], count_done, NULL) != FUT_OK)
			all_ok = false;

	if ((rc = fut_as_completed_new(&it, fs, NJOBS)) != FUT_OK) {
		fprintf(stderr, "fut_as_completed_new: %s\n", fut_strerror(rc));
		all_ok = false;
	} else {
		fut_future *f;
		while ((rc = fut_as_completed_next(it, FUT_FOREVER, &f)) ==
		       FUT_OK) {
			int i = index_of(fs, f);
			all_ok &= i >= 0 && report(r[i], i, f, t0);
			yielded++;
		}
		if (rc != FUT_END || yielded != NJOBS) {
			fprintf(stderr, "next: %s after %d of %d\n",
				fut_strerror(rc), yielded, NJOBS);
			all_ok = false;
		}
	}
	/* FIRST_EXCEPTION holds: job BAD_JOB failed. */
	if (fut_wait(fs, NJOBS, FUT_FIRST_EXCEPTION, 0) != FUT_OK ||
	    fut_error(fs[BAD_JOB]) != FUT_ETASK)
		all_ok = false;

	fut_as_completed_free(it);
	for (int i = 0; i < NJOBS; i++)
		fut_release(fs[i]);
	/* A callback runs just after its future is published as done, so
	 * some may still be running here; shutdown(0) returns once the
	 * workers have finished, callbacks included. */
	fut_executor_shutdown(ex, 0);
	int workers = atomic_load(&callbacks_in_workers);
	int here = atomic_load(&callbacks_in_main);
	printf("done callbacks: %d ran in the pool's threads (its workers, or "
	       "a process pool's manager), %d at once in main (their future "
	       "was already done)\n",
	       workers, here);
	return all_ok && workers + here == NJOBS;
}

static bool run_with_thread_pool(void)
{
	fut_executor *ex;
	int rc = fut_thread_pool_new(
		&ex, &(fut_thread_pool_opts){ .max_workers = 4,
					      .thread_name_prefix = "demo" });
	if (rc != FUT_OK) {
		fprintf(stderr, "fut_thread_pool_new: %s\n", fut_strerror(rc));
		return false;
	}
	bool ok = run_on(ex, "thread pool of 4 workers");
	fut_executor_free(ex);
	return ok;
}

/* The same task function, the same calls: only the constructor changes.
 * The tasks run in worker processes forked from the pool's fork server;
 * their callbacks run in the pool's manager thread. */
static bool run_with_process_pool(void)
{
	fut_executor *ex;
	int rc = fut_process_pool_new(
		&ex, &(fut_process_pool_opts){ .max_workers = 2 });
	if (rc != FUT_OK) {
		fprintf(stderr, "fut_process_pool_new: %s\n", fut_strerror(rc));
		return false;
	}
	bool ok = run_on(ex, "process pool of 2 worker processes");
	fut_executor_free(ex);
	return ok;
}

int main(void)
{
	printf("libfuture %s demo\n", fut_version());
	bool ok = run_with_threads();
	ok &= run_with_thread_pool();
	ok &= run_with_process_pool();
	printf("\n%s\n", ok ? "all results correct" : "SOME RESULTS WRONG");
	return ok ? 0 : 1;
}
