/*
 * test_pp_server.c: what a process pool's fork server inherits from, and
 * how long it lives beside, the process that made it.
 *
 * - the fork server lives as long as the parent process, not as long as
 *   the thread that made the pool: a main thread that made the pool and
 *   then called pthread_exit took it down (its workers too), so the next
 *   worker came from a new fork server, and running tasks crashed;
 * - a fork server (and so each of its workers) holds no mapping of the
 *   shared results another pool of the parent handed out: pool 2's fork
 *   server kept pool 1's large results mapped as long as it lived.
 *
 * Found by review on 2026-12-06.  Timeouts only bound a hang, which then
 * fails.
 */
#include "pp_test.h"

/* ------------------------------------------------------------------ */
/* The parent's main thread exits                                      */

/* Its worker's parent: the fork server that forked it. */
static void parent_pid_task(fut_task *t)
{
	return_u64(t, (uint64_t)getppid());
}

/* Counts itself in *started, waits until *started reaches 2 (the test
 * adds one), then returns 7. */
static void hold_task(fut_task *t)
{
	atomic_fetch_add(started, 1);
	for (long i = 0; atomic_load(started) < 2; i++) {
		if (i > 1200000) { /* LONG_WAIT at 0.1 ms a round */
			(void)fut_task_fail(t, 1, "never released");
			return;
		}
		struct timespec ts = { 0, 100 * 1000 };
		nanosleep(&ts, NULL);
	}
	return_u64(t, 7);
}

/* True once this process's main thread has exited (a zombie until the
 * process ends). */
static bool main_thread_gone(void)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	ssize_t got = read(fd, buf, sizeof(buf) - 1);
	(void)close(fd);
	if (got <= 0)
		return true;
	buf[got] = '\0';
	const char *rp = strrchr(buf, ')');
	return rp == NULL || rp[2] == 'Z' || rp[2] == 'X';
}

struct orphan {
	fut_executor *ex;
	fut_future *held; /* running on one worker across main's exit */
	pid_t server;	  /* the fork server main saw */
};

/* The process's one thread once main has gone.  Main's exit is past, so
 * a fork server that takes it for the parent's death has its signal, and
 * acts on it before any request that comes later: the spawn of a second
 * worker must still come from the same server, and the held task's
 * worker must live to finish it. */
static void *after_main(void *arg)
{
	struct orphan *o = arg;
	for (long i = 0; !main_thread_gone(); i++) {
		CHECK(i < 1200000); /* LONG_WAIT at 0.1 ms a look */
		struct timespec ts = { 0, 100 * 1000 };
		nanosleep(&ts, NULL);
	}
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(o->ex, parent_pid_task, NULL, 0, &f) == FUT_OK);
	pid_t server = (pid_t)result_u64(f);
	fut_release(f);
	if (server != o->server)
		diag("the worker's parent is %d, not the fork server %d\n",
		     (int)server, (int)o->server);
	CHECK(server == o->server);
	atomic_fetch_add(started, 1); /* releases hold_task */
	CHECK(result_u64(o->held) == 7);
	fut_release(o->held);
	CHECK(fut_executor_shutdown(o->ex, 0) == FUT_OK);
	fut_executor_free(o->ex);
	_exit(0);
}

/* A child of the test: its main thread makes the pool, starts a task and
 * the thread that goes on using the pool, and exits. */
static void pool_then_pthread_exit(void)
{
	static struct orphan o;
	o.ex = new_pool(2);
	o.server = fork_server_pid();
	atomic_store(started, 0);
	CHECK(fut_submit_bytes(o.ex, hold_task, NULL, 0, &o.held) == FUT_OK);
	wait_started(&o.held, 1, 1);
	pthread_t th;
	CHECK(pthread_create(&th, NULL, after_main, &o) == 0);
	pthread_exit(NULL);
}

/* What the child's exit status says (0: all went well). */
static void expect_clean_exit(pid_t child)
{
	int status = 0;
	for (long i = 0;; i++) {
		pid_t got = waitpid(child, &status, WNOHANG);
		assert_true(got == 0 || got == child);
		if (got == child)
			break;
		if (i >= 1200000) { /* LONG_WAIT at 0.1 ms a look */
			(void)kill(child, SIGKILL);
			(void)waitpid(child, &status, 0);
			fail_msg("the child hangs");
		}
		struct timespec ts = { 0, 100 * 1000 };
		nanosleep(&ts, NULL);
	}
	/* Under valgrind the child's _exit runs its leak check, where the
	 * heap it inherited (reachable only from threads it lacks) counts
	 * as lost: it exits with the Makefile's --error-exitcode. */
	if (WIFEXITED(status) && WEXITSTATUS(status) == VALGRIND_ERROR_EXIT &&
	    under_valgrind())
		return;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("the child ended with status %#x", status);
}

static void
test_the_fork_server_outlives_the_main_thread_that_made_it(void **state)
{
	(void)state;
	fflush(NULL);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		in_child = true;
		pool_then_pthread_exit();
	}
	expect_clean_exit(child);
}

/* ------------------------------------------------------------------ */
/* Shared results of another pool                                      */

#define BIG_RESULT (1024u * 1024u) /* past FUT__TASK_SHARED_MIN */

/* A result large enough to go through shared memory. */
static void big_result_task(fut_task *t)
{
	unsigned char *out = fut_task_result_buffer(t, BIG_RESULT);
	if (out == NULL) {
		(void)fut_task_fail(t, 1, "no result buffer");
		return;
	}
	memset(out, 0xA5, BIG_RESULT);
}

/* Mappings of shared results in process pid's /proc/pid/maps ("self":
 * this process); -1 if it cannot be read. */
static int result_mappings(const char *pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%s/maps", pid);
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return -1;
	int n = 0;
	char line[4096];
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, "/memfd:libfuture-result") != NULL)
			n++;
	fclose(f);
	return n;
}

/* In a worker: its own count of result mappings, and its parent's (the
 * fork server's), ahead of any result of its own. */
static void count_mappings_task(fut_task *t)
{
	char server[16];
	snprintf(server, sizeof(server), "%d", (int)getppid());
	int32_t counts[2] = { result_mappings("self"),
			      result_mappings(server) };
	(void)fut_task_return_bytes(t, counts, sizeof(counts));
}

static void
test_a_new_fork_server_holds_no_shared_result_of_another_pool(void **state)
{
	(void)state;
	fut_executor *first = new_pool(1);
	fut_future *big = NULL;
	assert_int_equal(fut_submit_bytes(first, big_result_task, NULL, 0,
					  &big),
			 FUT_OK);
	const unsigned char *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(big, LONG_WAIT, (const void **)&data,
					  &len),
			 FUT_OK);
	assert_int_equal(len, BIG_RESULT);
	assert_int_equal(data[0], 0xA5);
	assert_int_equal(data[BIG_RESULT - 1], 0xA5);
	/* Else the test proves nothing: the result is a mapping here. */
	assert_true(result_mappings("self") >= 1);

	fut_executor *second = new_pool(1);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(second, count_mappings_task, NULL, 0,
					  &f),
			 FUT_OK);
	const void *counts = NULL;
	assert_int_equal(fut_result_bytes(f, LONG_WAIT, &counts, &len), FUT_OK);
	assert_int_equal(len, 2 * sizeof(int32_t));
	int32_t c[2];
	memcpy(c, counts, sizeof(c));
	assert_int_equal(c[0], 0); /* the worker */
	assert_int_equal(c[1], 0); /* its fork server */
	fut_release(f);

	assert_int_equal(fut_executor_shutdown(second, 0), FUT_OK);
	fut_executor_free(second);
	fut_release(big);
	assert_int_equal(fut_executor_shutdown(first, 0), FUT_OK);
	fut_executor_free(first);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_the_fork_server_outlives_the_main_thread_that_made_it),
		cmocka_unit_test(
			test_a_new_fork_server_holds_no_shared_result_of_another_pool),
	};
	if (!pp_test_prepare())
		return 2;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
