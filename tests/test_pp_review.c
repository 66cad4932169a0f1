/*
 * test_pp_review.c: the process pool's second review pass: what a task's
 * own processes do to a worker's death when its fork server is gone.
 *
 * - a task forks a helper (not exec'd: it keeps the worker's result
 *   pipe), then its fork server is SIGKILLed: the worker dies with it
 *   (PR_SET_PDEATHSIG), its helper must die with it too (docs/api.md:
 *   every kill takes the worker's whole process group) and its task end
 *   FUT_ECRASHED, not wait for ever for the pipe's EOF.
 *
 * - a burst of kills larger than the fork server's socket holds (a
 *   shutdown with FUT_SHUTDOWN_INTERRUPT of a pool of 300 busy workers,
 *   while the fork server is slow to read: stopped here) kills every
 *   worker: no kill is dropped when the socket is full.
 *
 * - a burst of spawns larger than that socket holds (the first work of a
 *   pool of 300 workers while the fork server is slow to read: stopped
 *   here) is spawned once the server reads again: a request refused by
 *   the full socket is no failed spawn, and five of them in a row with
 *   no worker alive do not break the pool.
 *
 * - a task that moves its worker out of its own process group (into the
 *   fork server's) is still killed by an interrupt: the kill of the
 *   group alone found no process there.
 *
 * - the program forks a helper that does not exec (it holds a copy of
 *   the pool's socket to its fork server), then frees the pool: the free
 *   ends the fork server and returns while the helper lives.
 *
 * - without close_range(2) the fork server and its workers still close
 *   every fd of the program's, one above RLIMIT_NOFILE too.
 *
 * - a task queued while its worker runs on after an early (large)
 *   result starts when that task ends; one queued behind a job the
 *   manager ends as it sends it (no fd for its shared input) runs; a
 *   worker spent (max_tasks_per_child) but still inside such a task
 *   counts against max_workers until it ends.
 *
 * - the program reaps the fork server itself (waitpid(-1)) and its pid
 *   goes to one of the program's own children: the pool's restart kills
 *   and reaps nothing of the program's.
 *
 * - what tasks print with stdio to a stdout that is a pipe reaches it
 *   when their worker retires.
 *
 * Every wait has a generous timeout only so that a bug fails the test
 * instead of hanging it; no test asserts a duration and no sleep
 * synchronises anything.
 */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "pp_test.h"
#include "test_env.h"

/* The helper a task forked (shared with the workers), for the test to
 * look at and clean up. */
static _Atomic int *helper_pid;

/* Forks a helper that keeps every fd of the worker's and waits for ever,
 * then blocks. */
static void fork_helper_then_block(fut_task *t)
{
	(void)t;
	pid_t kid = fork();
	if (kid == 0) {
		for (;;)
			pause();
	}
	atomic_store(helper_pid, (int)kid);
	atomic_fetch_add(started, 1);
	block_for_an_hour();
}

/* True once pid is gone or a zombie (its fds closed either way). */
static bool dead(pid_t pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return true;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *close_paren = strrchr(buf, ')');
	return close_paren != NULL && close_paren[1] == ' ' &&
	       (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

static void
test_a_task_helper_dies_with_its_worker_when_the_fork_server_dies(void **state)
{
	(void)state;
	atomic_store(started, 0);
	atomic_store(helper_pid, 0);
	fut_executor *ex = new_pool(1);
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, fork_helper_then_block, NULL, 0, &f) ==
	      FUT_OK);
	wait_started(&f, 1, 1);
	pid_t helper = (pid_t)atomic_load(helper_pid);
	CHECK(helper > 0);
	kill_fork_server_and_wait_for_the_next();
	(void)fut_wait(&f, 1, FUT_ALL_COMPLETED, 30.0);
	bool done = fut_done(f);
	bool helper_died = false;
	for (long i = 0; done && i < 300000 && !helper_died; i++) {
		helper_died = dead(helper);
		if (!helper_died)
			(void)fut_wait(&f, 1, FUT_ALL_COMPLETED, 0.0001);
	}
	/* Whatever happened, the helper goes now: the pool can end. */
	(void)kill(helper, SIGKILL);
	if (!done)
		diag("the task never ended: its worker's helper holds the "
		     "result pipe\n");
	CHECK(done);
	CHECK(helper_died);
	expect_failure(f, FUT_ECRASHED, "fork server");
	/* It goes on, on a new fork server. */
	expect_square(submit_op(ex, OP_SQUARE, 0, 5), 5);
	fut_executor_free(ex);
}

/* The worker pids of the blocked tasks, for the clean-up of a failure. */
#define BURST 300
static _Atomic int *burst_pids;

static void record_pid_then_block(fut_task *t)
{
	(void)t;
	int i = atomic_fetch_add(started, 1);
	if (i >= 0 && i < BURST)
		atomic_store(&burst_pids[i], (int)getpid());
	block_for_an_hour();
}

/* The parent's end of the fork server's socket (the manager's; read
 * once, it changes only when the server restarts). */
static int fs_sock_of(fut_executor *ex)
{
	struct ppool *p = (struct ppool *)(void *)ex;
	return p->fs_sock;
}

static void
test_a_burst_of_kills_past_the_servers_socket_kills_all(void **state)
{
	(void)state;
	atomic_store(started, 0);
	fut_executor *ex =
		pool_with(&(fut_process_pool_opts){ .max_workers = BURST });
	fut_future *fs[BURST];
	for (int i = 0; i < BURST; i++)
		CHECK(fut_submit_bytes(ex, record_pid_then_block, NULL, 0,
				       &fs[i]) == FUT_OK);
	wait_started(fs, BURST, BURST);
	/* The server stopped, the kills queue in its socket until it is
	 * full: more kills than it holds. */
	pid_t server = fork_server_pid();
	int sock = fs_sock_of(ex);
	CHECK(kill(server, SIGSTOP) == 0);
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT |
						FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	struct pollfd pfd = { sock, POLLOUT, 0 };
	for (long i = 0; i < 10000000 && poll(&pfd, 1, 0) == 1; i++)
		sched_yield();
	CHECK(kill(server, SIGCONT) == 0);
	(void)fut_wait(fs, BURST, FUT_ALL_COMPLETED, 60.0);
	int ended = 0;
	for (int i = 0; i < BURST; i++)
		ended += fut_done(fs[i]);
	if (ended != BURST) {
		diag("%d of %d tasks never ended: their kills were "
		     "dropped\n",
		     BURST - ended, BURST);
		for (int i = 0; i < BURST; i++)
			if (atomic_load(&burst_pids[i]) > 0)
				(void)kill(atomic_load(&burst_pids[i]),
					   SIGKILL);
	}
	CHECK(ended == BURST);
	for (int i = 0; i < BURST; i++) {
		CHECK(fut_error(fs[i]) == FUT_ECANCELLED);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
}

static void
test_a_burst_of_spawns_past_the_servers_socket_all_start(void **state)
{
	(void)state;
	fut_executor *ex =
		pool_with(&(fut_process_pool_opts){ .max_workers = BURST });
	pid_t server = fork_server_pid();
	int sock = fs_sock_of(ex);
	CHECK(kill(server, SIGSTOP) == 0);
	struct op_in in[BURST];
	for (int i = 0; i < BURST; i++)
		in[i] = (struct op_in){ OP_SQUARE, 0, (uint64_t)i };
	fut_future *fs[BURST];
	CHECK(fut_submit_many(ex, op_task, in, sizeof(in[0]), BURST, fs) ==
	      FUT_OK);
	/* The spawn requests fill the socket; then, while the server stays
	 * stopped, nothing may end (the pool broke, before: each refused
	 * request counted as a failed fork). */
	struct pollfd pfd = { sock, POLLOUT, 0 };
	for (long i = 0; i < 10000000 && poll(&pfd, 1, 0) == 1; i++)
		sched_yield();
	int rc = fut_wait(fs, BURST, FUT_FIRST_COMPLETED, 3.0);
	CHECK(kill(server, SIGCONT) == 0);
	CHECK(rc == FUT_ETIMEDOUT);
	for (int i = 0; i < BURST; i++)
		expect_square(fs[i], (uint64_t)i);
	fut_executor_free(ex);
}

/* Moves its worker into its fork server's process group (the worker's
 * own group is left empty), says so in *started, then blocks. */
static void leave_own_group_then_block(fut_task *t)
{
	(void)t;
	if (setpgid(0, getpgid(getppid())) != 0)
		_exit(3); /* the test then fails: no ECANCELLED */
	atomic_fetch_add(started, 1);
	block_for_an_hour();
}

/* The fork server killed the worker's process group (-pid), which was
 * empty: the worker lived on, and its future stayed RUNNING (a 60 s wait
 * timed out). */
static void test_an_interrupt_kills_a_worker_that_left_its_group(void **state)
{
	(void)state;
	atomic_store(started, 0);
	fut_executor *ex = new_pool(1);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, leave_own_group_then_block, NULL,
					  0, &f),
			 FUT_OK);
	for (long i = 0; atomic_load(started) == 0; i++) {
		assert_true(i < 600000);
		usleep(100);
	}
	assert_int_equal(fut_interrupt(f), FUT_OK);
	int rc = fut_result(f, 60.0, NULL);
	explain(f, rc, FUT_ECANCELLED);
	assert_int_equal(rc, FUT_ECANCELLED);
	fut_release(f);
	fut_executor_free(ex);
}

/*
 * The program forks a helper that does not exec (it inherits a copy of
 * the pool's socket to its fork server) and then frees the pool: the
 * free must end the fork server and return, the helper still alive.
 * Before (found by review, 2026-12-07) the free only closed the socket,
 * the fork server waited for an EOF the helper's copy held back, and the
 * free returned when the helper exited (here: its alarm, 10 s).
 */
static void test_free_returns_beside_a_fork_child_of_the_program(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	expect_square(submit_op(ex, OP_SQUARE, 0, 7), 7);
	pid_t server = fork_server_pid(); /* before the helper: a child too */
	int gate[2];
	CHECK(pipe(gate) == 0);
	pid_t kid = fork();
	CHECK(kid >= 0);
	if (kid == 0) {
		alarm(10);
		char c;
		(void)close(gate[1]);
		(void)read(gate[0], &c, 1);
		_exit(0);
	}
	(void)close(gate[0]);
	fut_executor_free(ex);
	/* The server was reaped; the helper waits on its gate still. */
	CHECK(kill(server, 0) != 0);
	CHECK(waitpid(kid, NULL, WNOHANG) == 0);
	(void)close(gate[1]);
	int status = 0;
	CHECK(waitpid(kid, &status, 0) == kid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static _Atomic int manager_held, manager_go;

/* A done callback: holds the pool's manager thread until the test lets
 * it go (10 s at most). */
static void hold_the_manager(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&manager_held, 1);
	for (long i = 0; !atomic_load(&manager_go) && i < 100000; i++)
		usleep(100);
}

/*
 * The program reaps the fork server (as one that reaps every child with
 * waitpid(-1) would) while the pool's manager is busy, and the kernel
 * gives its pid to the program's next child (staged through
 * ns_last_pid: root only, skipped otherwise).  Before (found by review,
 * 2026-12-07) the restart's kill(pid, SIGKILL) and waitpid(pid) took
 * that child; they go through the fork server's pidfd now.
 */
static void test_a_reaped_fork_servers_pid_is_not_the_pools(void **state)
{
	(void)state;
	int probe = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (probe < 0) {
		diag("no pidfd here (valgrind 3.19 has none): the pid is all "
		     "the pool has\n");
		skip();
	}
	(void)close(probe);
	int last = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
	if (last < 0)
		skip();
	fut_executor *ex = new_pool(1);
	expect_square(submit_op(ex, OP_SQUARE, 0, 7), 7);
	pid_t server = fork_server_pid();
	atomic_store(started, 0);
	atomic_store(&manager_held, 0);
	atomic_store(&manager_go, 0);
	fut_future *f = submit_op(ex, OP_BLOCK, 0, 0);
	wait_started(&f, 1, 1);
	CHECK(fut_add_done_callback(f, hold_the_manager, NULL) == FUT_OK);
	CHECK(fut_interrupt(f) == FUT_OK);
	for (long i = 0; !atomic_load(&manager_held); i++) {
		CHECK(i < 600000);
		usleep(100);
	}
	CHECK(kill(server, SIGKILL) == 0);
	CHECK(waitpid(server, NULL, 0) == server);
	bool staged = dprintf(last, "%d", (int)server - 1) > 0;
	(void)close(last);
	pid_t kid = fork();
	CHECK(kid >= 0);
	if (kid == 0) {
		alarm(20);
		for (;;)
			pause();
	}
	atomic_store(&manager_go, 1);
	/* The pool restarts its fork server and goes on. */
	expect_square(submit_op(ex, OP_SQUARE, 0, 9), 9);
	bool alive = waitpid(kid, NULL, WNOHANG) == 0;
	(void)kill(kid, SIGKILL);
	(void)waitpid(kid, NULL, 0);
	CHECK(final_code(f) == FUT_ECANCELLED);
	fut_release(f);
	fut_executor_free(ex);
	if (!staged || kid != server) {
		diag("the pid could not be staged (%d, not %d)\n", (int)kid,
		     (int)server);
		skip();
	}
	CHECK(alive);
}

/* Prints its input's number with stdio, unflushed. */
static void print_unflushed(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	printf("task %u printed\n", len > 0 ? in[0] : 0u);
	fut_task_return_bytes(t, NULL, 0);
}

/*
 * stdout a pipe (fully buffered): four tasks print a line each on two
 * workers, then the pool is freed: each line is in the file.  Before
 * (found by a user's trial, 2026-12-07) the worker's _exit at its
 * retirement dropped its buffer, and the file stayed empty.
 */
static void test_what_tasks_print_reaches_a_pipe_at_retirement(void **state)
{
	(void)state;
	fflush(stdout);
	int saved = dup(1);
	CHECK(saved >= 0);
	/* A pipe, as a program's stdout piped to another: a memfd's
	 * offset is not kept atomic across the processes that share it
	 * (two workers' writes landed at one offset). */
	int pipefd[2];
	CHECK(pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) == 0);
	CHECK(dup2(pipefd[1], 1) == 1);
	(void)close(pipefd[1]);
	fut_executor *ex = new_pool(2);
	fut_future *fs[4];
	for (unsigned char i = 0; i < 4; i++)
		CHECK(fut_submit_bytes(ex, print_unflushed, &i, 1, &fs[i]) ==
		      FUT_OK);
	int rc = fut_wait(fs, 4, FUT_ALL_COMPLETED, 60.0);
	fut_executor_free(ex);
	fflush(stdout);
	CHECK(dup2(saved, 1) == 1);
	(void)close(saved);
	CHECK(rc == FUT_OK);
	for (int i = 0; i < 4; i++) {
		CHECK(final_code(fs[i]) == FUT_OK);
		fut_release(fs[i]);
	}
	char buf[256] = { 0 };
	ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);
	(void)close(pipefd[0]);
	CHECK(n > 0);
	for (int i = 0; i < 4; i++) {
		char line[32];
		snprintf(line, sizeof(line), "task %d printed\n", i);
		if (strstr(buf, line) == NULL)
			diag("missing \"%s\" in \"%s\"\n", line, buf);
		CHECK(strstr(buf, line) != NULL);
	}
}

/*
 * The program's log, a stream on fd 0 (its stdin closed: a daemon's)
 * holds an unflushed line as the pool is made; one worker a task
 * (max_tasks_per_child 1), three tasks, then the free: the line is in
 * the file once, the program's own flush.  Before (found by review,
 * 2026-12-07) each worker's fflush(NULL) at its retirement wrote its
 * copy of the buffer too: four lines.
 */
static void test_a_retiring_worker_writes_no_stream_of_the_parents(void **st)
{
	(void)st;
	if (under_valgrind()) {
		/* Its exit-time __libc_freeres flushes every stream of each
		 * process it ends, the workers' and the fork server's too,
		 * which a plain _exit never does. */
		diag("under valgrind: every process flushes its streams\n");
		skip();
	}
	int saved = fcntl(0, F_DUPFD_CLOEXEC, 3);
	int fd = memfd_create("log", MFD_CLOEXEC);
	CHECK(fd >= 0 && dup2(fd, 0) == 0);
	(void)close(fd);
	FILE *log = fdopen(0, "w");
	CHECK(log != NULL && setvbuf(log, NULL, _IOFBF, 4096) == 0);
	static const char line[] = "app: started\n";
	CHECK(fputs(line, log) >= 0);
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .max_tasks_per_child = 1 });
	for (uint64_t i = 0; i < 3; i++)
		expect_square(submit_op(ex, OP_SQUARE, 0, i), i);
	fut_executor_free(ex);
	CHECK(fflush(log) == 0);
	struct stat sb;
	CHECK(fstat(0, &sb) == 0);
	if (sb.st_size != (off_t)strlen(line))
		diag("the log has %lld bytes\n", (long long)sb.st_size);
	(void)fclose(log); /* closes fd 0 */
	if (saved >= 0) {
		(void)dup2(saved, 0);
		(void)close(saved);
	}
	CHECK(sb.st_size == (off_t)strlen(line));
}

/* Returns 1 if the fd named by its input is open in the worker. */
static void fd_is_open(fut_task *t)
{
	size_t len = 0;
	const void *data = fut_task_input(t, &len);
	int fd = -1;
	if (len == sizeof(fd))
		memcpy(&fd, data, sizeof(fd));
	return_u64(t, fcntl(fd, F_GETFD) >= 0 ? 1 : 0);
}

/* Makes close_range(2) fail with ENOSYS in this process from now on, as
 * before Linux 5.9 or under a container's seccomp filter.  False if the
 * filter cannot be installed. */
static bool no_close_range(void)
{
#ifdef SYS_close_range
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close_range, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
	       prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
#else
	return false;
#endif
}

/* In a child: an fd of the program's above RLIMIT_NOFILE (opened before
 * the limit was lowered), close_range refused; the worker must not have
 * it.  Exits 0 if it has not, 1 if it has, 77 if it cannot be set up. */
static void child_high_fd(void)
{
	in_child = true;
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	if (rl.rlim_max < 2048)
		exit(77);
	int high = rl.rlim_max > 15000 ? 15000 : (int)rl.rlim_max - 10;
	rl.rlim_cur = (rlim_t)high + 1;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && dup3(fd, high, O_CLOEXEC) == high);
	rl.rlim_cur = rl.rlim_max = 1024; /* a sandbox's step, say */
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	if (!no_close_range())
		exit(77);
	fut_executor *ex = new_pool(1);
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, fd_is_open, &high, sizeof(high), &f) ==
	      FUT_OK);
	uint64_t open_there = result_u64(f);
	fut_release(f);
	fut_executor_free(ex);
	exit(open_there == 0 ? 0 : 1);
}

/*
 * Without close_range(2) (Linux before 5.9, or a seccomp filter that
 * refuses it), the fork server and its workers close the program's fds
 * one by one.  Before (found by review, 2026-12-07) they closed every
 * number up to min(RLIMIT_NOFILE, 65536) only: an fd above (opened before
 * the program lowered its limit, or past 65535) stayed open in every
 * worker, a listening socket of the program's among them.  Now they close
 * what /proc/self/fd lists.
 */
static void test_workers_get_no_high_fd_without_close_range(void **state)
{
	(void)state;
	in_a_child(child_high_fd);
}

/* Gives a 300,000-byte result (sent as it is given: a large one is
 * written from the task's buffer at once), then runs on for 200 ms. */
static void early_result(fut_task *t)
{
	static unsigned char big[300000];
	(void)fut_task_return_bytes(t, big, sizeof(big));
	struct timespec ts = { 0, 200 * 1000 * 1000 };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static void pid_task(fut_task *t)
{
	return_u64(t, (uint64_t)getpid());
}

/*
 * A task's large result comes back early and the task runs on; a task
 * submitted once its worker has been silent 5 ms must still start when
 * that task ends.  Before (found by review, 2026-12-07) the manager sent
 * nothing to a silent worker inside a task, and that task's end wrote
 * nothing that would wake it: the second task waited for the next
 * submit (here for ever: the 30 s bound only keeps a hang from hanging).
 */
static void test_a_task_behind_an_early_result_starts_when_it_ends(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *a = NULL, *b = NULL;
	CHECK(fut_submit_bytes(ex, early_result, NULL, 0, &a) == FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	CHECK(fut_result_bytes(a, LONG_WAIT, &data, &len) == FUT_OK);
	CHECK(len == 300000);
	struct timespec ts = { 0, 20 * 1000 * 1000 }; /* silent 5 ms+ */
	while (nanosleep(&ts, &ts) != 0)
		;
	CHECK(fut_submit_bytes(ex, pid_task, NULL, 0, &b) == FUT_OK);
	int rc = fut_result_bytes(b, 30, &data, &len);
	explain(b, rc, FUT_OK);
	CHECK(rc == FUT_OK);
	fut_release(a);
	fut_release(b);
	fut_executor_free(ex);
}

/* Tasks of the pool running now, and the most at once (shared). */
static _Atomic int *running_now, *running_peak;

/* early_result, counted while it runs. */
static void counted_early_result(fut_task *t)
{
	int n = atomic_fetch_add(running_now, 1) + 1;
	int peak = atomic_load(running_peak);
	while (n > peak &&
	       !atomic_compare_exchange_weak(running_peak, &peak, n))
		;
	early_result(t);
	atomic_fetch_sub(running_now, 1);
}

/*
 * max_workers 1, max_tasks_per_child 1, tasks whose large result comes
 * back early and which run on: one runs at a time.  Before (found by
 * review, 2026-12-07) the spent worker was retired as its result came,
 * still inside its task, counted no more, and a new worker ran the next
 * task beside it (2 at once).
 */
static void test_a_spent_worker_inside_its_task_still_counts(void **state)
{
	(void)state;
	atomic_store(running_now, 0);
	atomic_store(running_peak, 0);
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .max_tasks_per_child = 1 });
	enum {
		N = 3
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		CHECK(fut_submit_bytes(ex, counted_early_result, NULL, 0,
				       &fs[i]) == FUT_OK);
	CHECK(fut_wait(fs, N, FUT_ALL_COMPLETED, LONG_WAIT) == FUT_OK);
	for (int i = 0; i < N; i++) {
		CHECK(fut_error(fs[i]) == FUT_OK);
		fut_release(fs[i]);
	}
	fut_executor_free(ex); /* every task has ended */
	if (atomic_load(running_peak) != 1)
		diag("%d tasks ran at once on max_workers 1",
		     atomic_load(running_peak));
	CHECK(atomic_load(running_peak) == 1);
}

/* Runs 300 ms. */
static void slow_task(fut_task *t)
{
	struct timespec ts = { 0, 300 * 1000 * 1000 };
	while (nanosleep(&ts, &ts) != 0)
		;
	return_u64(t, 1);
}

/* In a child: A (a shared input) and B queued behind a running task;
 * no fd left when they are sent, so A's input cannot go.  Exits 0 when
 * A ends FUT_ESYS and B runs. */
static void child_no_fd_for_a_shared_input(void)
{
	in_child = true;
	fut_executor *ex = new_pool(1);
	fut_future *l = NULL, *a = NULL, *b = NULL;
	CHECK(fut_submit_bytes(ex, slow_task, NULL, 0, &l) == FUT_OK);
	for (int i = 0; i < 30000 && !fut_running(l) && !fut_done(l); i++)
		usleep(1000);
	CHECK(fut_running(l));
	static unsigned char big[300000]; /* a memfd from 256 KiB */
	CHECK(fut_submit_bytes(ex, pid_task, big, sizeof(big), &a) == FUT_OK);
	CHECK(fut_submit_bytes(ex, pid_task, NULL, 0, &b) == FUT_OK);
	int lowest = dup(0);
	CHECK(lowest >= 0 && close(lowest) == 0);
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = (rlim_t)lowest; /* no fd left for the manager's dup */
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	CHECK(fut_wait(&a, 1, FUT_ALL_COMPLETED, LONG_WAIT) == FUT_OK);
	CHECK(fut_error(a) == FUT_ESYS);
	int rc = fut_wait(&b, 1, FUT_ALL_COMPLETED, 30);
	if (rc != FUT_OK)
		diag("B still %u after A ended", fut_state(b));
	CHECK(rc == FUT_OK && fut_error(b) == FUT_OK);
	exit(0);
}

/*
 * A job the manager ends as it sends a batch (no fd for a shared input,
 * no memory for the frame) stopped the jobs queued behind it: nothing
 * would come from the worker, which got no frame, and the manager slept.
 * Before (found by review, 2026-12-07) B waited for the next submit.
 */
static void test_a_job_ended_as_it_is_sent_does_not_stop_the_queue(void **state)
{
	(void)state;
	in_a_child(child_no_fd_for_a_shared_input);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_task_helper_dies_with_its_worker_when_the_fork_server_dies),
		cmocka_unit_test(
			test_a_burst_of_kills_past_the_servers_socket_kills_all),
		cmocka_unit_test(
			test_a_burst_of_spawns_past_the_servers_socket_all_start),
		cmocka_unit_test(
			test_an_interrupt_kills_a_worker_that_left_its_group),
		cmocka_unit_test(
			test_free_returns_beside_a_fork_child_of_the_program),
		cmocka_unit_test(
			test_workers_get_no_high_fd_without_close_range),
		cmocka_unit_test(
			test_a_task_behind_an_early_result_starts_when_it_ends),
		cmocka_unit_test(
			test_a_job_ended_as_it_is_sent_does_not_stop_the_queue),
		cmocka_unit_test(
			test_a_spent_worker_inside_its_task_still_counts),
		cmocka_unit_test(
			test_a_reaped_fork_servers_pid_is_not_the_pools),
		cmocka_unit_test(
			test_what_tasks_print_reaches_a_pipe_at_retirement),
		cmocka_unit_test(
			test_a_retiring_worker_writes_no_stream_of_the_parents),
	};
	if (!pp_test_prepare())
		return 2;
	helper_pid = mmap(NULL, sizeof(*helper_pid), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	burst_pids = mmap(NULL, BURST * sizeof(*burst_pids),
			  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			  -1, 0);
	_Atomic int *counts = mmap(NULL, 2 * sizeof(*counts),
				   PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (helper_pid == MAP_FAILED || burst_pids == MAP_FAILED ||
	    counts == MAP_FAILED)
		return 2;
	running_now = &counts[0];
	running_peak = &counts[1];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
