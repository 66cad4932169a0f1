/*
 * test_pp_exec.c: the process pool's FUT_START_EXEC start method (issue
 * 15, point 4): the fork server is a fresh exec of this test program,
 * taken over by the library before main (test_fork has a lock held at
 * pool creation, with both start methods).  Task functions and the initializer are found by build-id
 * and offset; one that is not code of the program fails FUT_ENOTSUP.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"

static int set_before_the_pool;
static int set_by_the_initializer;

static const fut_process_pool_opts exec_opts = {
	.max_workers = 2, .start_method = FUT_START_EXEC
};

static int init(void *arg)
{
	(void)arg;
	set_by_the_initializer = 42;
	return 0;
}

/* What the worker sees: the initializer's global, and the one the
 * parent set before the pool (a fresh program: not set). */
static void globals(fut_task *t)
{
	int v[2] = { set_by_the_initializer, set_before_the_pool };
	fut_task_return_bytes(t, v, sizeof(v));
}

static void test_exec_workers_are_a_fresh_program(void **state)
{
	(void)state;
	set_before_the_pool = 7;
	fut_process_pool_opts o = exec_opts;
	o.initializer = init;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(&pp, &o), FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pp, globals, NULL, 0, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_OK);
	assert_int_equal(len, 2 * sizeof(int));
	int v[2];
	memcpy(v, data, sizeof(v));
	assert_int_equal(v[0], 42);
	assert_int_equal(v[1], 0);
	fut_release(f);
	fut_executor_free(pp);
}

/* Not code of any module: the server cannot resolve it. */
static unsigned char not_code[64];

static void test_an_unresolvable_function_is_enotsup(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(&pp, &exec_opts), FUT_OK);
	fut_fn bogus = (fut_fn)(void *)not_code;
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pp, bogus, NULL, 0, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_ENOTSUP);
	print_message("%s\n", fut_error_message(f));
	fut_release(f);
	/* The worker goes on. */
	assert_int_equal(fut_submit_bytes(pp, globals, NULL, 0, &f), FUT_OK);
	assert_int_equal(fut_result_bytes(f, 60.0, &data, &len), FUT_OK);
	fut_release(f);
	fut_executor_free(pp);
}

static void test_bad_start_options_are_einval(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	fut_process_pool_opts o = exec_opts;
	o.start_method = 2;
	assert_int_equal(fut_process_pool_new(&pp, &o), FUT_EINVAL);
	o = exec_opts;
	o.initializer = init;
	o.initarg = &o;
	assert_int_equal(fut_process_pool_new(&pp, &o), FUT_EINVAL);
	assert_null(pp);
}

/*
 * The fork server's variable, FUT__PP_EXEC_SERVER, set by hand: this
 * program, run again with "--env-probe", must reach main as any program
 * (it took "0" for its socket, read stdin and exited 127 before main:
 * found by a user's trial, 2026-12-07).  The probe echoes its stdin,
 * says whether the variable is still set, and makes an exec pool of its
 * own, which runs a task.
 */
#define EXEC_VAR "FUT__PP_EXEC_SERVER"

static int env_probe(void)
{
	char buf[64];
	ssize_t n;
	while ((n = read(0, buf, sizeof(buf))) > 0)
		if (write(1, buf, (size_t)n) != n)
			return 2;
	if (getenv(EXEC_VAR) != NULL)
		return 3;
	fut_executor *pp = NULL;
	if (fut_process_pool_new(&pp, &exec_opts) != FUT_OK)
		return 4;
	fut_future *f = NULL;
	const void *data = NULL;
	size_t len = 0;
	int rc = fut_submit_bytes(pp, globals, NULL, 0, &f);
	if (rc == FUT_OK)
		rc = fut_result_bytes(f, 60.0, &data, &len);
	fut_release(f);
	fut_executor_free(pp);
	if (rc != FUT_OK)
		return 5;
	return write(1, "main ran\n", 9) == 9 ? 0 : 2;
}

/* Runs the probe with the variable at value (a "%d" in it: a Unix
 * seqpacket socket of ours, not the pool's); its output into out. */
static int run_probe(const char *value, char *out, size_t cap)
{
	int in[2], res[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(res), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int sv[2];
		char v[64];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
			_exit(90);
		snprintf(v, sizeof(v), value, sv[0]);
		if (dup2(in[0], 0) < 0 || dup2(res[1], 1) < 0 ||
		    setenv(EXEC_VAR, v, 1) != 0)
			_exit(91);
		close(in[1]);
		close(res[0]);
		/* The link's text: under valgrind an exec of the link
		 * itself would run valgrind's tool. */
		char exe[4096];
		ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (len <= 0)
			_exit(93);
		exe[len] = '\0';
		execl(exe, "test_pp_exec", "--env-probe", (char *)NULL);
		_exit(92);
	}
	close(in[0]);
	close(res[1]);
	assert_int_equal(write(in[1], "hi\n", 3), 3);
	close(in[1]);
	size_t got = 0;
	ssize_t n;
	while (got + 1 < cap &&
	       (n = read(res[0], out + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(res[0]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_the_servers_variable_set_by_hand_is_ignored(void **state)
{
	(void)state;
	static const char *const values[] = {
		"0", "bogus", "", "3:1", "%d", "%d:1", "%d:0", "0%d:1",
	};
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		char out[128];
		int rc = run_probe(values[i], out, sizeof(out));
		print_message("%s=\"%s\": exit %d, \"%s\"\n", EXEC_VAR,
			      values[i], rc, out);
		assert_int_equal(rc, 0);
		assert_string_equal(out, "hi\nmain ran\n");
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--env-probe") == 0)
		return env_probe();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exec_workers_are_a_fresh_program),
		cmocka_unit_test(test_an_unresolvable_function_is_enotsup),
		cmocka_unit_test(test_bad_start_options_are_einval),
		cmocka_unit_test(
			test_the_servers_variable_set_by_hand_is_ignored),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
