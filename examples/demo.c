/*
 * demo.c: futures and as_completed, fed by plain threads.
 *
 * The main thread makes one future per job (fut_future_new), starts one
 * pthread per job, and each thread computes the sum of the squares of a
 * range of integers and completes its future: fut_set_result_bytes() with
 * the sum, or fut_set_error() for a job whose range is empty.  Meanwhile
 * the main thread waits on an as_completed iterator through its pollable
 * file descriptor, the way an event loop would, and prints each result as
 * it completes.  It checks every sum against the closed form and that the
 * bad job failed the way it should; it exits 0 only if all is right.
 *
 * Build and run: make demo.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <future.h>

#define NJOBS 8

struct job {
	uint64_t lo, hi; /* the range [lo, hi) */
	fut_future *future;
	pthread_t thread;
	bool started;
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

/* The producer: runs in its own thread and completes the future. */
static void *compute(void *arg)
{
	struct job *job = arg;
	fut_future *f = job->future; /* this thread's own reference */

	if (fut_set_running(f) != FUT_OK) { /* cancelled before it started */
		fut_release(f);
		return NULL;
	}
	if (job->lo >= job->hi) {
		fut_set_error(f, EDOM, "empty range");
	} else {
		uint64_t sum = 0;
		for (uint64_t i = job->lo; i < job->hi; i++)
			sum += i * i;
		/* The bytes are copied before fut_set_result_bytes returns. */
		fut_set_result_bytes(f, &sum, sizeof sum);
	}
	fut_release(f);
	return NULL;
}

static int job_index(fut_future *const *fs, fut_future *f)
{
	for (int i = 0; i < NJOBS; i++)
		if (fs[i] == f)
			return i;
	return -1;
}

/* Prints one completed future and says whether it is right. */
static bool report(const struct job *job, int i, fut_future *f, double t0)
{
	const void *data;
	size_t len;
	int rc = fut_result_bytes(f, 0, &data, &len);
	double ms = now_ms() - t0;

	if (job->lo >= job->hi) { /* the job meant to fail */
		bool ok = rc == FUT_ETASK && fut_task_code(f) == EDOM;
		printf("%7.2f ms  job %d  [%" PRIu64 ", %" PRIu64
		       ")  failed: %s "
		       "(%s, task code %d)  %s\n",
		       ms, i, job->lo, job->hi, fut_error_message(f),
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
	uint64_t want = squares_below(job->hi) - squares_below(job->lo);
	printf("%7.2f ms  job %d  [%" PRIu64 ", %" PRIu64 ")  sum of squares "
	       "%" PRIu64 "  %s\n",
	       ms, i, job->lo, job->hi, sum, sum == want ? "ok" : "WRONG");
	return sum == want;
}

int main(void)
{
	struct job jobs[NJOBS];
	fut_future *fs[NJOBS];
	fut_as_completed *it = NULL;
	bool all_ok = true;
	int rc;

	printf("libfuture %s demo: %d futures completed by %d threads\n",
	       fut_version(), NJOBS, NJOBS);
	for (int i = 0; i < NJOBS; i++) {
		/* Uneven sizes, so they finish in some other order; job 5 has
		 * an empty range and reports an error. */
		jobs[i].lo = (uint64_t)i * 100000;
		jobs[i].hi = i == 5 ? jobs[i].lo :
				      jobs[i].lo + 50000 +
					      (uint64_t)(i % 3) * 400000;
		if ((rc = fut_future_new(&fs[i])) != FUT_OK) {
			fprintf(stderr, "fut_future_new: %s\n",
				fut_strerror(rc));
			return 1;
		}
		jobs[i].future = fs[i];
	}
	/* The iterator holds its own reference on every future. */
	if ((rc = fut_as_completed_new(&it, fs, NJOBS)) != FUT_OK) {
		fprintf(stderr, "fut_as_completed_new: %s\n", fut_strerror(rc));
		return 1;
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

	/* Consume the completions as an event loop would: poll the
	 * iterator's fd (readable while next() would not block), then take
	 * whatever is ready without blocking. */
	int fd = fut_as_completed_fd(it);
	int yielded = 0;
	for (;;) {
		if (fd >= 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			if (poll(&pfd, 1, 10000) == 0) {
				fprintf(stderr, "nothing completed in 10 s\n");
				all_ok = false;
				break;
			}
		}
		fut_future *f;
		rc = fut_as_completed_next(it, fd >= 0 ? 0 : FUT_FOREVER, &f);
		if (rc == FUT_END)
			break;
		if (rc == FUT_ETIMEDOUT)
			continue; /* not ready after all: poll again */
		if (rc != FUT_OK) {
			fprintf(stderr, "next: %s\n", fut_strerror(rc));
			all_ok = false;
			break;
		}
		int i = job_index(fs, f);
		all_ok &= i >= 0 && report(&jobs[i], i, f, t0);
		yielded++;
	}

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
	fut_as_completed_free(it);
	for (int i = 0; i < NJOBS; i++)
		fut_release(fs[i]);
	printf("%s\n", all_ok ? "all results correct" : "SOME RESULTS WRONG");
	return all_ok ? 0 : 1;
}
