/*
 * test_pp_limits.c: a process-pool result the caller cannot hold (issue
 * 15, point 5).
 *
 * The parent's decoder (wire.c, may_drop) asks whether a large payload
 * could be held (frame.c tries its whole length) as soon as its header is
 * read; one it cannot hold is handed over
 * as a dropped record at once and its bytes are skipped as they come, so
 * the task ends FUT_ENOMEM with the size in its message and the worker
 * goes on (past 64 MiB it is replaced instead: the next task runs at
 * once).  The codec part is tested alone with injected allocation
 * failures; the whole with a real 4 GiB result under RLIMIT_AS 3 GiB in a
 * forked child (address-space limits mean nothing under ASan, TSan or
 * valgrind, which reserve terabytes: skipped there).
 *
 * Out of fds (RLIMIT_NOFILE 64, the table filled but a few): a pool is
 * FUT_EAGAIN at creation when a first worker's fds cannot be had, or
 * works; a worker that cannot be started for want of fds later ends the
 * waiting tasks FUT_EAGAIN ("out of file descriptors"), and the pool
 * works once fds are back (it broke for good, or said "the fork server
 * died too often": a user's trial, 2026-12-07).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "process_pool/wire.h"
#include "fault_helpers.h"

#define UNDER_SANITIZER (UNDER_ASAN || UNDER_TSAN)

#define BIG_LEN ((size_t)2 << 20) /* past the decoder's first 1 MiB */

/* A RESULTS frame of one record of len bytes, each (unsigned char)i. */
static unsigned char *one_record(uint64_t id, size_t len, size_t *out_len)
{
	size_t n = FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR + len;
	unsigned char *buf = malloc(n);
	assert_non_null(buf);
	fut__wire_put_frame(buf, FUT__WIRE_RESULTS, 1, FUT__WIRE_REC_HDR + len);
	fut__wire_put_record(buf + FUT__WIRE_FRAME_HDR, id, 0,
			     FUT__WIRE_R_BYTES, 0, len);
	for (size_t i = 0; i < len; i++)
		buf[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR + i] =
			(unsigned char)i;
	*out_len = n;
	return buf;
}

/* Feeds buf in 64 KiB pieces; counts the records (ids into ids[]) and
 * says which were dropped.  The decoder's status at the end. */
static int feed_all(struct fut__wire_dec *d, const unsigned char *buf,
		    size_t len, uint64_t *ids, bool *dropped, int *n)
{
	size_t pos = 0;
	while (pos < len) {
		size_t piece = len - pos < 65536 ? len - pos : 65536;
		size_t used = 0;
		struct fut__wire_rec r;
		int rc = fut__wire_dec_feed(d, buf + pos, piece, &used, &r);
		pos += used;
		if (rc == FUT__WIRE_RECORD) {
			ids[*n] = r.id;
			dropped[*n] = r.dropped;
			if (r.dropped) {
				assert_null(r.data);
				assert_int_equal(r.len, BIG_LEN);
			} else {
				for (size_t i = 0; i < r.len; i++)
					assert_int_equal(
						((unsigned char *)r.data)[i],
						(unsigned char)i);
			}
			if (r.owned)
				fut__free(r.data);
			(*n)++;
			continue;
		}
		if (rc != FUT__WIRE_MORE)
			return rc;
	}
	return FUT__WIRE_MORE;
}

static bool hold_nothing(size_t len)
{
	(void)len;
	return false;
}

/* could_hold refusing it; failing the first buffer or its growth: the record is
 * handed over dropped, and the next one decodes right.  Without
 * may_drop (MPI's decoders) the failure stays FUT__WIRE_ENOMEM. */
static void test_the_decoder_drops_a_payload_it_cannot_hold(void **state)
{
	(void)state;
	size_t la, lb;
	unsigned char *a = one_record(1, BIG_LEN, &la);
	unsigned char *b = one_record(2, 100, &lb);
	unsigned char *both = malloc(la + lb);
	assert_non_null(both);
	memcpy(both, a, la);
	memcpy(both + la, b, lb);
	for (long nth = 0; nth <= 2; nth++) {
		struct fut__wire_dec d;
		fut__wire_dec_init(&d, FUT__WIRE_TO_PARENT);
		d.may_drop = true;
		if (nth == 0)
			d.could_hold = hold_nothing;
		uint64_t ids[4];
		bool dropped[4];
		int n = 0;
		(void)fut__alloc_fail_nth(nth);
		int rc = feed_all(&d, both, la + lb, ids, dropped, &n);
		assert_int_equal(fut__alloc_fail_nth(0), 0); /* it was hit */
		if (nth == 0)
			assert_non_null(d.could_hold); /* no allocation */
		assert_int_equal(rc, FUT__WIRE_MORE);
		assert_int_equal(n, 2);
		assert_int_equal(ids[0], 1);
		assert_true(dropped[0]);
		assert_int_equal(ids[1], 2);
		assert_false(dropped[1]);
		assert_true(fut__wire_dec_idle(&d));
		fut__wire_dec_fini(&d);
	}
	struct fut__wire_dec d;
	fut__wire_dec_init(&d, FUT__WIRE_TO_PARENT);
	uint64_t ids[4];
	bool dropped[4];
	int n = 0;
	(void)fut__alloc_fail_nth(1);
	assert_int_equal(feed_all(&d, both, la + lb, ids, dropped, &n),
			 FUT__WIRE_ENOMEM);
	(void)fut__alloc_fail_nth(0);
	fut__wire_dec_fini(&d);
	free(both);
	free(a);
	free(b);
}

/* ------------------------------------------------------------------ */

#define HUGE_LEN ((size_t)4 << 30)
#define LIMIT_AS ((rlim_t)3 << 30)

/* Returns HUGE_LEN bytes of zero pages (never touched: no memory). */
static void huge(fut_task *t)
{
	void *p = mmap(NULL, HUGE_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED) {
		fut_task_fail(t, errno, "mmap");
		return;
	}
	fut_task_return_bytes(t, p, HUGE_LEN);
	(void)munmap(p, HUGE_LEN);
}

static void my_pid(fut_task *t)
{
	pid_t pid = getpid();
	fut_task_return_bytes(t, &pid, sizeof(pid));
}

static int pid_of_future(fut_executor *ex, fut_future **f)
{
	return fut_submit_bytes(ex, my_pid, NULL, 0, f);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct report {
	int rc_before, rc_huge, rc_after;
	pid_t pid_before, pid_after;
	double huge_seconds, after_seconds;
	char message[200];
};

static int pid_of(fut_executor *ex, pid_t *pid)
{
	fut_future *f = NULL;
	int rc = fut_submit_bytes(ex, my_pid, NULL, 0, &f);
	if (rc != FUT_OK)
		return rc;
	const void *data = NULL;
	size_t len = 0;
	rc = fut_result_bytes(f, 60.0, &data, &len);
	if (rc == FUT_OK && len == sizeof(*pid))
		memcpy(pid, data, sizeof(*pid));
	fut_release(f);
	return rc;
}

static void limited_child(int out, int arg)
{
	(void)arg;
	alarm(120);
	struct report r;
	memset(&r, 0, sizeof(r));
	fut_executor *ex = NULL;
	if (fut_process_pool_new(&ex, &(fut_process_pool_opts){
					      .max_workers = 1 }) != FUT_OK)
		_exit(2);
	/* The fork server (and so the worker) is forked before the limit:
	 * the worker can make the 4 GiB, this process cannot hold them. */
	r.rc_before = pid_of(ex, &r.pid_before);
	struct rlimit rl = { LIMIT_AS, LIMIT_AS };
	if (setrlimit(RLIMIT_AS, &rl) != 0)
		_exit(3);
	fut_future *f = NULL;
	double t0 = now_s();
	if (fut_submit_bytes(ex, huge, NULL, 0, &f) != FUT_OK)
		_exit(4);
	const void *data = NULL;
	size_t len = 0;
	r.rc_huge = fut_result_bytes(f, 60.0, &data, &len);
	r.huge_seconds = now_s() - t0;
	const char *msg = fut_error_message(f);
	snprintf(r.message, sizeof(r.message), "%s", msg ? msg : "(none)");
	fut_release(f);
	t0 = now_s();
	r.rc_after = pid_of(ex, &r.pid_after);
	r.after_seconds = now_s() - t0;
	fut_executor_free(ex);
	_exit(write(out, &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
}

/* Runs child(out, arg) in a forked process, which writes its report of
 * len bytes to out and exits; reads it into r. */
static void run_child(void (*child)(int out, int arg), int arg, void *r,
		      size_t len)
{
	int rep[2];
	assert_int_equal(pipe(rep), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(rep[0]);
		child(rep[1], arg);
	}
	close(rep[1]);
	memset(r, 0, len);
	struct pollfd p = { .fd = rep[0], .events = POLLIN };
	assert_int_equal(poll(&p, 1, 180000), 1);
	ssize_t got = read(rep[0], r, len);
	close(rep[0]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (got != (ssize_t)len)
		print_message("the child exited %d\n",
			      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	assert_int_equal(got, (ssize_t)len);
	assert_true(WIFEXITED(status));
}

static void
test_a_result_the_caller_cannot_hold_ends_enomem_at_once(void **state)
{
	(void)state;
	if (UNDER_SANITIZER || under_valgrind()) {
		print_message("skipped: RLIMIT_AS cannot work under a "
			      "sanitizer or valgrind (they reserve more "
			      "address space than the limit)\n");
		skip();
	}
	struct report r;
	run_child(limited_child, 0, &r, sizeof(r));
	print_message("4 GiB under RLIMIT_AS 3 GiB: %s after %.3f s (\"%s\"); "
		      "the next task %.3f s later\n",
		      fut_strerror(r.rc_huge), r.huge_seconds, r.message,
		      r.after_seconds);
	assert_int_equal(r.rc_before, FUT_OK);
	assert_int_equal(r.rc_huge, FUT_ENOMEM);
	assert_non_null(strstr(r.message, "4294967296 bytes"));
	/* From the header: not after 4 GiB went through a pipe. */
	assert_true(r.huge_seconds < 1.0);
	/* Its worker is replaced rather than read through (4 GiB through a
	 * pipe took 25 s): the next task runs at once, elsewhere. */
	assert_int_equal(r.rc_after, FUT_OK);
	assert_true(r.pid_after != r.pid_before);
	assert_true(r.after_seconds < 5.0);
}

/* ------------------------------------------------------------------ */
/* Out of fds (found by a user's trial, 2026-12-07)                    */

#define FD_LIMIT 64
#define MAX_SPARE 9

/* What one forked child saw: the pool made with spare fds free, its
 * first task, and one more once the fds are back; then, on a pool
 * whose every task needs a new worker, a task with no fd free and one
 * after. */
struct fd_report {
	int made[MAX_SPARE + 1], first[MAX_SPARE + 1], later[MAX_SPARE + 1];
	bool first_says_fds[MAX_SPARE + 1];
	int squeezed, after;
	bool squeezed_says_fds;
	double squeezed_seconds;
};

/* Opens /dev/null until EMFILE, into fds[] (at most cap); how many. */
static int fill_fds(int *fds, int cap)
{
	int n = 0;
	while (n < cap && (fds[n] = open("/dev/null", O_RDONLY)) >= 0)
		n++;
	return n;
}

static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Ends FUT_OK, or with its code (and whether its message says fds). */
static int one_task(fut_executor *ex, bool *says_fds)
{
	fut_future *f = NULL;
	int rc = pid_of_future(ex, &f);
	if (rc != FUT_OK)
		return rc;
	rc = fut_result(f, 60.0, NULL);
	const char *msg = fut_error_message(f);
	if (says_fds != NULL)
		*says_fds = msg != NULL &&
			    strstr(msg, "out of file descriptors") != NULL;
	fut_release(f);
	return rc;
}

static void fd_child(int out, int method)
{
	alarm(120);
	struct fd_report r;
	memset(&r, 0, sizeof(r));
	struct rlimit rl = { FD_LIMIT, FD_LIMIT };
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		_exit(2);
	int fds[FD_LIMIT];
	for (int spare = 0; spare <= MAX_SPARE; spare++) {
		int n = fill_fds(fds, FD_LIMIT);
		if (n < spare)
			_exit(3);
		close_fds(fds + n - spare, spare);
		n -= spare;
		fut_executor *ex = NULL;
		r.made[spare] = fut_process_pool_new(
			&ex,
			&(fut_process_pool_opts){ .max_workers = 1,
						  .start_method = method });
		if (r.made[spare] == FUT_OK)
			r.first[spare] = one_task(ex, &r.first_says_fds[spare]);
		close_fds(fds, n);
		if (r.made[spare] == FUT_OK) {
			r.later[spare] = one_task(ex, NULL);
			fut_executor_free(ex);
		}
	}
	fut_executor *ex = NULL;
	if (fut_process_pool_new(
		    &ex, &(fut_process_pool_opts){ .max_workers = 1,
						   .max_tasks_per_child = 1,
						   .start_method = method }) !=
	    FUT_OK)
		_exit(4);
	if (one_task(ex, NULL) != FUT_OK)
		_exit(5);
	int n = fill_fds(fds, FD_LIMIT);
	double t0 = now_s();
	r.squeezed = one_task(ex, &r.squeezed_says_fds);
	r.squeezed_seconds = now_s() - t0;
	close_fds(fds, n);
	r.after = one_task(ex, NULL);
	fut_executor_free(ex);
	_exit(write(out, &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
}

static void expect_fd_report(int method, const char *name)
{
	struct fd_report r;
	run_child(fd_child, method, &r, sizeof(r));
	for (int spare = 0; spare <= MAX_SPARE; spare++) {
		print_message("%s, %d fds free: new %s\n", name, spare,
			      fut_strerror(r.made[spare]));
		/* FUT_EAGAIN, or a pool that works once the fds are back;
		 * never broken. */
		if (r.made[spare] == FUT_EAGAIN)
			continue;
		print_message("  its task %s, the next %s\n",
			      fut_strerror(r.first[spare]),
			      fut_strerror(r.later[spare]));
		assert_int_equal(r.made[spare], FUT_OK);
		if (r.first[spare] != FUT_OK) {
			assert_int_equal(r.first[spare], FUT_EAGAIN);
			assert_true(r.first_says_fds[spare]);
		}
		assert_int_equal(r.later[spare], FUT_OK);
	}
	assert_int_equal(r.made[MAX_SPARE], FUT_OK);
	assert_int_equal(r.first[MAX_SPARE], FUT_OK);
	print_message("%s, no fd free for a new worker: %s after %.3f s; "
		      "then %s\n",
		      name, fut_strerror(r.squeezed), r.squeezed_seconds,
		      fut_strerror(r.after));
	assert_int_equal(r.squeezed, FUT_EAGAIN);
	assert_true(r.squeezed_says_fds);
	assert_int_equal(r.after, FUT_OK);
}

static void test_out_of_fds_is_eagain_never_a_broken_pool(void **state)
{
	(void)state;
	if (under_valgrind()) {
		print_message("skipped: valgrind keeps RLIMIT_NOFILE to "
			      "itself\n");
		skip();
	}
	expect_fd_report(FUT_START_FORK, "fork");
	expect_fd_report(FUT_START_EXEC, "exec");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_the_decoder_drops_a_payload_it_cannot_hold),
		cmocka_unit_test(
			test_a_result_the_caller_cannot_hold_ends_enomem_at_once),
		cmocka_unit_test(test_out_of_fds_is_eagain_never_a_broken_pool),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
