/*
 * test_pp_sendfail.c: inputs and results that cannot take their usual
 * path.  First, a memfd that cannot be passed.  A process of a user
 * that has more fds in flight (sent over unix sockets, not yet received)
 * than its RLIMIT_NOFILE gets ETOOMANYREFS from sendmsg(SCM_RIGHTS),
 * unless it has CAP_SYS_RESOURCE or CAP_SYS_ADMIN: each test runs in a
 * forked child that drops root first (to nobody).  Found by review
 * (2026-12-07):
 *
 * - the manager could not send a shared input's memfd to a live worker:
 *   it took the error for a dead worker, dropped the frame, and the task
 *   waited for ever (its free too).  The worker is now told to exit, the
 *   task runs again elsewhere, and after 4 tries ends FUT_ESYS (with 4
 *   workers up; with one, FUT_EBROKEN: the spawn of the next worker fails
 *   the same way, and the pool breaks).
 *
 * - a worker could not send a shared result's memfd back: it exited,
 *   and the task ran again, 4 times, then ended FUT_ECRASHED (with chunk
 *   1 too, which promises at most one run).  The bytes go through the
 *   pipe instead.
 *
 * - a worker with no memory to grow its frame of results for a task's
 *   60 KiB result died, and the task ran again (4 times, with chunk 1
 *   too).  The record goes in a frame of its own, which needs none.
 *
 * - a task that closes the worker's fds (its result cannot be written,
 *   the worker exits): with chunk 1 it ran 4 times.  It runs once and
 *   ends FUT_ECRASHED now.
 *
 * - a task that puts /dev/null in place of the worker's result pipe: the
 *   worker lived on, its answers lost, and its future (and the free)
 *   waited for ever.  It is killed a second after the pipe's EOF: the
 *   task ends FUT_ECRASHED, and the pool goes on.  An initializer that
 *   does so breaks the pool after five workers (they were forked for
 *   ever).
 *
 * Every wait has a generous timeout only so that a bug fails the test
 * instead of hanging it.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include "pp_test.h"

#define SHARED_LEN ((size_t)300 * 1024) /* a memfd from 256 KiB */

/* Drops root (and with it the capabilities that lift the limit); exits
 * 77, a skip, when it cannot. */
static void become_nobody(void)
{
	if (geteuid() != 0)
		return;
	if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
		exit(77);
}

/* Sends fds over a socket no one reads until sendmsg fails (the user's
 * fds in flight are past the sender's RLIMIT_NOFILE), or `most` went.
 * Keeps the socket open: they stay in flight. */
static void fds_in_flight(int most)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return;
	int fds[100];
	for (int i = 0; i < 100; i++)
		fds[i] = sv[0];
	for (int sent = 0; sent < most; sent += 100) {
		char b = 0;
		struct iovec iov = { &b, 1 };
		union {
			struct cmsghdr h;
			char space[CMSG_SPACE(sizeof(fds))];
		} u;
		memset(&u, 0, sizeof(u));
		struct msghdr m = { .msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = u.space,
				    .msg_controllen = sizeof(u.space) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(c), fds, sizeof(fds));
		if (sendmsg(sv[0], &m, MSG_DONTWAIT) != 1)
			return;
	}
}

/* The last byte of its input, plus its length. */
static void tail_task(fut_task *t)
{
	size_t len;
	const unsigned char *in = fut_task_input(t, &len);
	return_u64(t, len + (len != 0 ? in[len - 1] : 0));
}

static void child_input_memfd_cannot_go(void)
{
	in_child = true;
	become_nobody();
	fut_executor *ex = new_pool(1);
	unsigned char *in = calloc(1, SHARED_LEN);
	CHECK(in != NULL);
	in[SHARED_LEN - 1] = 5;
	fut_future *f = NULL;
	const void *data;
	size_t len;
	/* The worker is up, and a shared input goes while the limit is. */
	CHECK(fut_submit_bytes(ex, tail_task, in, SHARED_LEN, &f) == FUT_OK);
	CHECK(fut_result_bytes(f, LONG_WAIT, &data, &len) == FUT_OK);
	fut_release(f);
	fds_in_flight(400);
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = 100;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	CHECK(fut_submit_bytes(ex, tail_task, in, SHARED_LEN, &f) == FUT_OK);
	int rc = fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT);
	if (rc != FUT_OK)
		diag("the task is still %u\n", fut_state(f));
	CHECK(rc == FUT_OK);
	/* Its worker told to exit, a new one asked for: the spawn request
	 * passes fds too, fails the same way, and the pool breaks (no
	 * worker can be had); a spawn that went would end it FUT_ESYS. */
	if (fut_error(f) != FUT_EBROKEN)
		explain(f, fut_error(f), FUT_ESYS);
	CHECK(fut_error(f) == FUT_ESYS || fut_error(f) == FUT_EBROKEN);
	fut_release(f);
	fut_executor_free(ex);
	free(in);
	exit(0);
}

static void test_an_input_memfd_that_cannot_go_ends_its_task(void **state)
{
	(void)state;
	in_a_child(child_input_memfd_cannot_go);
}

/* Tasks of the pool running now (shared with the workers). */
static _Atomic int *gathered;

/* Waits until 4 run at once: each on a worker of its own. */
static void gather_task(fut_task *t)
{
	atomic_fetch_add(gathered, 1);
	for (int i = 0; i < 30000 && atomic_load(gathered) < 4; i++)
		usleep(1000);
	return_u64(t, (uint64_t)atomic_load(gathered));
}

/* Four workers up before the fds go in flight: the shared input is
 * tried on each (no new one can be spawned: a spawn request passes fds
 * too) and ends FUT_ESYS with the errno. */
static void child_input_memfd_tried_on_every_worker(void)
{
	in_child = true;
	become_nobody();
	fut_executor *ex = new_pool(4);
	fut_future *warm[4];
	for (int i = 0; i < 4; i++)
		CHECK(fut_submit_bytes(ex, gather_task, NULL, 0, &warm[i]) ==
		      FUT_OK);
	CHECK(fut_wait(warm, 4, FUT_ALL_COMPLETED, LONG_WAIT) == FUT_OK);
	for (int i = 0; i < 4; i++) {
		CHECK(fut_error(warm[i]) == FUT_OK);
		fut_release(warm[i]);
	}
	unsigned char *in = calloc(1, SHARED_LEN);
	CHECK(in != NULL);
	fds_in_flight(400);
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = 100;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, tail_task, in, SHARED_LEN, &f) == FUT_OK);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT) == FUT_OK);
	explain(f, fut_error(f), FUT_ESYS);
	CHECK(fut_error(f) == FUT_ESYS && fut_task_code(f) == ETOOMANYREFS);
	fut_release(f);
	fut_executor_free(ex);
	free(in);
	exit(0);
}

static void test_an_input_memfd_tried_on_every_worker_ends_esys(void **state)
{
	(void)state;
	atomic_store(gathered, 0);
	in_a_child(child_input_memfd_tried_on_every_worker);
}

/* Times a task of the pool ran (shared with the workers). */
static _Atomic int *runs;

/* Puts the user's fds in flight past the worker's limit, then gives its
 * result in a shared buffer: bytes i & 0xff. */
static void shared_result_task(fut_task *t)
{
	atomic_fetch_add(runs, 1);
	fds_in_flight(1 << 20);
	unsigned char *b = fut_task_result_buffer(t, SHARED_LEN);
	if (b != NULL)
		for (size_t i = 0; i < SHARED_LEN; i++)
			b[i] = (unsigned char)i;
}

static void child_result_memfd_cannot_go(void)
{
	in_child = true;
	become_nobody();
	atomic_store(runs, 0);
	fut_executor *ex = pool_with(
		&(fut_process_pool_opts){ .max_workers = 1, .chunk = 1 });
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, shared_result_task, NULL, 0, &f) == FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, LONG_WAIT, &data, &len);
	explain(f, rc, FUT_OK);
	CHECK(rc == FUT_OK && len == SHARED_LEN);
	const unsigned char *b = data;
	for (size_t i = 0; i < SHARED_LEN; i++)
		CHECK(b[i] == (unsigned char)i);
	if (atomic_load(runs) != 1)
		diag("the task ran %d times\n", atomic_load(runs));
	CHECK(atomic_load(runs) == 1);
	fut_release(f);
	fut_executor_free(ex);
	exit(0);
}

static void
test_a_result_memfd_that_cannot_go_comes_through_the_pipe(void **state)
{
	(void)state;
	in_a_child(child_result_memfd_cannot_go);
}

/* Counted; its worker's next allocation, the growth of its frame of
 * results for this 60 KiB result, fails. */
static void frame_nomem_task(fut_task *t)
{
	static unsigned char r[60 * 1024];
	atomic_fetch_add(runs, 1);
	r[sizeof(r) - 1] = 9;
	(void)fut__alloc_fail_nth(1);
	(void)fut_task_return_bytes(t, r, sizeof(r));
	(void)fut__alloc_fail_nth(0);
}

static void test_a_result_with_no_frame_memory_runs_once(void **state)
{
	(void)state;
	atomic_store(runs, 0);
	fut_executor *ex = pool_with(
		&(fut_process_pool_opts){ .max_workers = 1, .chunk = 1 });
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, frame_nomem_task, NULL, 0, &f) == FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, LONG_WAIT, &data, &len);
	explain(f, rc, FUT_OK);
	CHECK(rc == FUT_OK && len == 60 * 1024);
	CHECK(((const unsigned char *)data)[len - 1] == 9);
	if (atomic_load(runs) != 1)
		diag("the task ran %d times\n", atomic_load(runs));
	CHECK(atomic_load(runs) == 1);
	fut_release(f);
	fut_executor_free(ex);
}

/* Counted; then closes the worker's fds (all but 0-2), or (ud 1) puts
 * /dev/null in place of its result pipe (the write-only FIFO). */
static void lose_pipe_task(fut_task *t)
{
	size_t len;
	const int *how = fut_task_input(t, &len);
	atomic_fetch_add(runs, 1);
	int null = open("/dev/null", O_WRONLY);
	for (int fd = 3; fd < 1024; fd++) {
		struct stat st;
		if (fd == null || fstat(fd, &st) != 0)
			continue;
		if (*how == 0)
			(void)close(fd);
		else if (S_ISFIFO(st.st_mode) &&
			 (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
			(void)dup2(null, fd);
	}
	(void)close(null);
	fut_task_return_bytes(t, "ok", 2);
}

static void test_a_task_that_loses_its_result_pipe_runs_once(void **state)
{
	(void)state;
	for (int how = 0; how < 2; how++) {
		atomic_store(runs, 0);
		fut_executor *ex = pool_with(&(fut_process_pool_opts){
			.max_workers = 1, .chunk = 1 });
		fut_future *f = NULL;
		CHECK(fut_submit_bytes(ex, lose_pipe_task, &how, sizeof(how),
				       &f) == FUT_OK);
		int rc = fut_result(f, LONG_WAIT, NULL);
		explain(f, rc, FUT_ECRASHED);
		CHECK(rc == FUT_ECRASHED);
		if (atomic_load(runs) != 1)
			diag("the task ran %d times\n", atomic_load(runs));
		CHECK(atomic_load(runs) == 1);
		fut_release(f);
		/* The pool goes on. */
		CHECK(fut_submit_bytes(ex, tail_task, "x", 1, &f) == FUT_OK);
		CHECK(fut_result(f, LONG_WAIT, NULL) == FUT_OK);
		fut_release(f);
		fut_executor_free(ex);
	}
}

/* An initializer that puts /dev/null in place of its worker's result
 * pipe: the hello never comes. */
static int lose_pipe_init(void *arg)
{
	(void)arg;
	int null = open("/dev/null", O_WRONLY);
	for (int fd = 3; fd < 1024; fd++) {
		struct stat st;
		if (fd != null && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) &&
		    (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
			(void)dup2(null, fd);
	}
	(void)close(null);
	return 0;
}

/*
 * Each worker's initializer loses its result pipe: each is killed a
 * second later, counted as a failed start, and the pool breaks after
 * five in a row, its task FUT_EBROKEN.  Before (found by review,
 * 2026-12-07) the kill was no failed start, and workers were forked for
 * ever, the task pending.
 */
static void
test_an_initializer_that_loses_its_pipe_breaks_the_pool(void **state)
{
	(void)state;
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .initializer = lose_pipe_init });
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, tail_task, "x", 1, &f) == FUT_OK);
	int rc = fut_result(f, LONG_WAIT, NULL);
	explain(f, rc, FUT_EBROKEN);
	CHECK(rc == FUT_EBROKEN);
	fut_release(f);
	fut_executor_free(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_an_input_memfd_that_cannot_go_ends_its_task),
		cmocka_unit_test(
			test_an_input_memfd_tried_on_every_worker_ends_esys),
		cmocka_unit_test(
			test_a_result_memfd_that_cannot_go_comes_through_the_pipe),
		cmocka_unit_test(test_a_result_with_no_frame_memory_runs_once),
		cmocka_unit_test(
			test_a_task_that_loses_its_result_pipe_runs_once),
		cmocka_unit_test(
			test_an_initializer_that_loses_its_pipe_breaks_the_pool),
	};
	if (!pp_test_prepare())
		return 2;
	_Atomic int *shared = mmap(NULL, 2 * sizeof(*shared),
				   PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return 2;
	runs = &shared[0];
	gathered = &shared[1];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
