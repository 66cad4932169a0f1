/*
 * pp_test.h: what the process-pool fault tests (test_pp_faults.c,
 * test_pp_alloc.c) share: checks that also work in a forked child, the
 * tasks (one function, an op in its input), and helpers that count fds
 * and child processes and find, kill and wait for the fork server.
 * Functions are static inline: each file uses some of them.
 */
#ifndef FUT_PP_TEST_H
#define FUT_PP_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"
#include "process_pool/wire.h"
#include "fault_helpers.h"
#include "proc_helpers.h"
#include "test_env.h"
#define LONG_WAIT 120.0
#define VALGRIND_ERROR_EXIT 99 /* the Makefile's valgrind --error-exitcode */

/* Checks that work in the test process (cmocka) and in a forked child
 * (which says what failed and exits 1: cmocka belongs to the parent). */
static bool in_child;
static int diag_fd = 2; /* where a child says what failed */

static inline void check_failed(const char *what, int line)
{
	if (in_child) {
		dprintf(diag_fd, "child: line %d: %s\n", line, what);
		exit(1);
	}
	fail_msg("line %d: %s", line, what);
}

/* Says something before a check fails: on the child's diagnostic fd
 * (prefixed "child: ") or through cmocka. */
static inline void CMOCKA_PRINTF_ATTRIBUTE(1, 2) diag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (in_child) {
		dprintf(diag_fd, "child: ");
		vdprintf(diag_fd, fmt, ap);
	} else {
		vprint_error(fmt, ap);
	}
	va_end(ap);
}

/* Says why a future ended as it did, before the check fails. */
static inline void explain(fut_future *f, int rc, int want)
{
	if (rc != want)
		diag("rc %d, not %d: %s\n", rc, want, fut_error_message(f));
}

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			check_failed(#cond, __LINE__);                         \
	} while (0)

/* ------------------------------------------------------------------ */
/* Tasks                                                               */

/* Shared with every worker (mapped in main, before any pool): how many
 * tasks reached their blocking point. */
static _Atomic int *started;

enum op {
	OP_SQUARE,     /* v * v */
	OP_FAIL,       /* fails with code v % 100 */
	OP_SEGV,       /* crashes its worker */
	OP_BLOCK,      /* counts itself in *started, then blocks */
	OP_MEET,       /* waits until arg tasks run at once; gives its pid */
	OP_CUT_SMALL,  /* half of a 1000-byte result frame, then _exit */
	OP_CUT_LARGE,  /* 300 KiB of a 1 MiB result frame, then _exit */
	OP_NOISE,      /* writes to the fds of mask arg; checks /dev/null */
	OP_EMIT_BLOCK, /* returns EMIT_LEN bytes, then blocks */
};

struct op_in {
	uint32_t op;
	uint32_t arg;
	uint64_t v;
};

#define EMIT_LEN (256u * 1024u) /* written by the task itself */

/* Longer than any wait of the tests: only a kill ends it. */
static inline void block_for_an_hour(void)
{
	struct timespec ts = { 3600, 0 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static inline void return_u64(fut_task *t, uint64_t v)
{
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* Writes to every fd of the worker open for writing only but 0-2: its
 * result pipe gets `what`. */
static inline void scribble(const void *what, size_t len)
{
	for (int fd = 3; fd < 64; fd++) {
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY)
			(void)!write(fd, what, len);
	}
}

/* A result frame whose payload stops after `sent` of its `len` bytes:
 * the worker dies in the middle of writing it. */
static inline void die_mid_frame(size_t len, size_t sent)
{
	unsigned char hdr[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR];
	fut__wire_put_frame(hdr, FUT__WIRE_RESULTS, 1,
			    FUT__WIRE_REC_HDR + (uint64_t)len);
	fut__wire_put_record(hdr + FUT__WIRE_FRAME_HDR, (uint64_t)1 << 40, 0,
			     FUT__WIRE_R_BYTES, 0, len);
	unsigned char *payload = calloc(1, sent);
	if (payload == NULL)
		_exit(2);
	scribble(hdr, sizeof(hdr));
	scribble(payload, sent);
	_exit(0);
}

static inline void meet(fut_task *t, int n)
{
	atomic_fetch_add(started, 1);
	struct timespec now, end;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += 60;
	while (atomic_load(started) < n) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > end.tv_sec) {
			(void)fut_task_fail(t, 1, "only %d of %d met",
					    atomic_load(started), n);
			return;
		}
		sched_yield();
	}
	return_u64(t, (uint64_t)getpid());
}

/* The fds of mask (bits 0-2) were closed in the parent: each must be
 * /dev/null here, and writing to it must disturb nothing. */
static inline void noise(fut_task *t, uint32_t mask, uint64_t v)
{
	static const char junk[24] = "noise from a task: 0123\n";
	for (int fd = 0; fd < 3; fd++) {
		if (!(mask & (1u << fd)))
			continue;
		(void)!write(fd, junk, sizeof(junk));
		char path[32], link[256];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = '\0';
		if (strcmp(link, "/dev/null") != 0) {
			(void)fut_task_fail(t, 100 + fd, "fd %d is '%s'", fd,
					    link);
			return;
		}
	}
	if (mask & 2) {
		printf("printf from a task\n");
		fflush(stdout);
	}
	if (mask & 4)
		fprintf(stderr, "stderr from a task\n");
	return_u64(t, v * v);
}

static inline void op_task(fut_task *t)
{
	size_t len = 0;
	const void *data = fut_task_input(t, &len);
	struct op_in in = { 0 };
	if (len == sizeof(in))
		memcpy(&in, data, sizeof(in));
	switch (in.op) {
	case OP_SQUARE:
		return_u64(t, in.v * in.v);
		return;
	case OP_FAIL:
		(void)fut_task_fail(t, (int)(in.v % 100), "v=%u",
				    (unsigned)in.v);
		return;
	case OP_SEGV:
		raise(SIGSEGV);
		return;
	case OP_BLOCK:
		atomic_fetch_add(started, 1);
		block_for_an_hour();
		return_u64(t, in.v);
		return;
	case OP_MEET:
		meet(t, (int)in.arg);
		return;
	case OP_CUT_SMALL:
		die_mid_frame(1000, 500);
		return;
	case OP_CUT_LARGE:
		die_mid_frame(1u << 20, 300u * 1024u);
		return;
	case OP_NOISE:
		noise(t, in.arg, in.v);
		return;
	case OP_EMIT_BLOCK: {
		static unsigned char out[EMIT_LEN];
		memset(out, 0x5A, sizeof(out));
		(void)fut_task_return_bytes(t, out, sizeof(out));
		block_for_an_hour();
		return;
	}
	default:
		(void)fut_task_fail(t, 1, "unknown op %u", in.op);
	}
}

/* A sample of a big input: its length and every 4096th byte. */
static inline uint64_t sample_of(const unsigned char *p, size_t len)
{
	uint64_t h = len;
	for (size_t i = 0; i < len; i += 4096)
		h = h * 131 + p[i];
	return h;
}

static inline void sample_task(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	return_u64(t, sample_of(in, len));
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static inline fut_executor *pool_with(const fut_process_pool_opts *o)
{
	fut_executor *ex = NULL;
	CHECK(fut_process_pool_new(&ex, o) == FUT_OK);
	CHECK(ex != NULL);
	return ex;
}

static inline fut_executor *new_pool(size_t workers)
{
	return pool_with(&(fut_process_pool_opts){ .max_workers = workers });
}

static inline fut_future *submit_op(fut_executor *ex, uint32_t op, uint32_t arg,
				    uint64_t v)
{
	struct op_in in = { op, arg, v };
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, op_task, &in, sizeof(in), &f) == FUT_OK);
	return f;
}

static inline uint64_t result_u64(fut_future *f)
{
	const void *data = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, LONG_WAIT, &data, &len);
	explain(f, rc, FUT_OK);
	CHECK(rc == FUT_OK);
	CHECK(len == sizeof(uint64_t));
	uint64_t v;
	memcpy(&v, data, sizeof(v));
	return v;
}

/* Waits for f's final state; its code. */
static inline int final_code(fut_future *f)
{
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT) == FUT_OK);
	return fut_error(f);
}

static inline void expect_square(fut_future *f, uint64_t v)
{
	CHECK(result_u64(f) == v * v);
	fut_release(f);
}

/* Ends with code, its message naming `why`. */
static inline void expect_failure(fut_future *f, int code, const char *why)
{
	int rc = final_code(f);
	explain(f, rc, code);
	CHECK(rc == code);
	const char *msg = fut_error_message(f);
	CHECK(msg != NULL);
	if (strstr(msg, why) == NULL)
		diag("\"%s\" lacks \"%s\"\n", msg, why);
	CHECK(strstr(msg, why) != NULL);
	fut_release(f);
}

static inline pid_t fork_server_pid(void)
{
	pid_t pid = live_child();
	CHECK(pid > 0);
	return pid;
}

/* Kills the fork server and waits for its successor: by then the pool
 * has seen it die, so no new work goes to the dying workers. */
static inline void kill_fork_server_and_wait_for_the_next(void)
{
	pid_t old = fork_server_pid();
	CHECK(kill(old, SIGKILL) == 0);
	for (long i = 0;; i++) {
		CHECK(i < 10000000);
		pid_t now = live_child();
		if (now != 0 && now != old)
			return;
		sched_yield();
	}
}

/* Both workers of a two-worker pool are up (each ran one task while the
 * other did): two different pids. */
static inline void start_two_workers(fut_executor *ex)
{
	atomic_store(started, 0);
	fut_future *a = submit_op(ex, OP_MEET, 2, 0);
	fut_future *b = submit_op(ex, OP_MEET, 2, 0);
	uint64_t pa = result_u64(a), pb = result_u64(b);
	CHECK(pa != pb);
	fut_release(a);
	fut_release(b);
}

/* Waits until n tasks reached their blocking point (OP_BLOCK). */
static inline void wait_started(fut_future **fs, size_t nfs, int n)
{
	for (long i = 0; atomic_load(started) < n; i++) {
		CHECK(i < 1200000); /* LONG_WAIT at 0.1 ms a round */
		(void)fut_wait(fs, nfs, FUT_ALL_COMPLETED, 0.0001);
	}
}

/* What main does before running the tests: the shared counter of tasks
 * that started, and TEST_FILTER=pattern to run only the matching tests.
 * False if the counter cannot be mapped. */
static inline bool pp_test_prepare(void)
{
	started = mmap(NULL, sizeof(*started), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (started == MAP_FAILED)
		return false;
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return true;
}

/* Runs child() in a forked child (not under valgrind, whose own fds sit
 * past the limits these children set): passes on its exit 0, skips on
 * 77 (it could not set its scene up). */
static inline void in_a_child(void (*child)(void))
{
	if (under_valgrind())
		skip();
	fflush(NULL);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0)
		child();
	int status = 0;
	assert_int_equal(waitpid(kid, &status, 0), kid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

#endif /* FUT_PP_TEST_H */
