/*
 * test_pp_faults.c: the process pool when the system says no or its own
 * processes misbehave (docs/reliability.md, "Faults tried (process
 * pool)").
 *
 * - fork fails (RLIMIT_NPROC, as nobody, in a child process) at creation,
 *   at the first worker and at a worker's replacement;
 * - no fd can be opened (RLIMIT_NOFILE) at a worker's replacement, in
 *   this process or in the fork server;
 * - the fork server is SIGKILLed with work running and queued, and cannot
 *   be restarted;
 * - a worker dies in the middle of a result frame;
 * - a worker stops reading its task socket (its task goes on after its
 *   result came back) while big inputs are sent to it;
 * - fds 0-2 are closed before the pool is made;
 * - a storm of signals while process-pool work flows.
 * Allocation failures are in test_pp_alloc.c; the helpers in pp_test.h.
 *
 * Every wait has a generous timeout only so that a bug fails the test
 * instead of hanging it; no test asserts a duration and no sleep
 * synchronises anything.
 */
#include "pp_test.h"

/* Runs fn in a forked child as nobody (root ignores RLIMIT_NPROC); the
 * child must exit 0. */
static void run_as_nobody(void (*fn)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = true;
		if (geteuid() == 0) {
			CHECK(setgroups(0, NULL) == 0);
			CHECK(setgid(65534) == 0);
			CHECK(setuid(65534) == 0);
		}
		/* setuid made us undumpable: /proc/self/fd would be root's. */
		CHECK(prctl(PR_SET_DUMPABLE, 1) == 0);
		fn();
		exit(0); /* exit, not _exit: the leak checkers run at exit */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void set_nproc(pid_t pid, rlim_t cur)
{
	struct rlimit lim;
	CHECK(prlimit(pid, RLIMIT_NPROC, NULL, &lim) == 0);
	lim.rlim_cur = cur < lim.rlim_max ? cur : lim.rlim_max;
	CHECK(prlimit(pid, RLIMIT_NPROC, &lim, NULL) == 0);
}

/* ------------------------------------------------------------------ */
/* fork fails                                                          */

static void child_fork_fails_at_creation(void)
{
	int fds = count_fds(), kids = count_children();
	struct rlimit old;
	CHECK(getrlimit(RLIMIT_NPROC, &old) == 0);
	set_nproc(0, 0);
	for (int i = 0; i < 3; i++) {
		fut_executor *ex = (fut_executor *)(uintptr_t)1;
		CHECK(fut_process_pool_new(
			      &ex, &(fut_process_pool_opts){
					   .max_workers = 2 }) == FUT_EAGAIN);
		CHECK(ex == NULL);
		CHECK(count_fds() == fds);
		CHECK(count_children() == kids);
	}
	set_nproc(0, old.rlim_cur);
	fut_executor *ex = new_pool(2);
	expect_square(submit_op(ex, OP_SQUARE, 0, 7), 7);
	fut_executor_free(ex);
	CHECK(count_fds() == fds);
	CHECK(count_children() == kids);
}

static void test_fork_failure_at_creation_is_eagain_without_leaks(void **state)
{
	(void)state;
	run_as_nobody(child_fork_fails_at_creation);
}

/* No worker can ever start: the pool breaks (after a few tries with
 * backoff) and every future ends FUT_EBROKEN saying why. */
static void child_fork_fails_at_first_worker(void)
{
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = new_pool(2);
	set_nproc(fork_server_pid(), 0);
	enum {
		N = 8,
		M = 32
	};
	fut_future *fs[N + M];
	for (int i = 0; i < N; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, (uint64_t)i);
	struct op_in in[M];
	for (int i = 0; i < M; i++)
		in[i] = (struct op_in){ OP_SQUARE, 0, (uint64_t)i };
	CHECK(fut_submit_many(ex, op_task, in, sizeof(in[0]), M, fs + N) ==
	      FUT_OK);
	for (int i = 0; i < N + M; i++)
		expect_failure(fs[i], FUT_EBROKEN, "fork");
	fut_future *f = (fut_future *)(uintptr_t)1;
	CHECK(fut_submit_bytes(ex, op_task, &in[0], sizeof(in[0]), &f) ==
	      FUT_EBROKEN);
	CHECK(f == NULL);
	fut_executor_free(ex);
	CHECK(count_fds() == fds);
	CHECK(count_children() == kids);
}

static void test_fork_failure_at_the_first_worker_breaks_the_pool(void **state)
{
	(void)state;
	run_as_nobody(child_fork_fails_at_first_worker);
}

static void child_fork_fails_at_replacement(void)
{
	int fds = count_fds(), kids = count_children();
	/* Another worker lives: the work goes on there; the replacement
	 * comes once forks work again. */
	fut_executor *ex = new_pool(2);
	start_two_workers(ex);
	pid_t fs_pid = fork_server_pid();
	struct rlimit old;
	CHECK(prlimit(fs_pid, RLIMIT_NPROC, NULL, &old) == 0);
	set_nproc(fs_pid, 0);
	fut_future *crash = submit_op(ex, OP_SEGV, 0, 0);
	fut_future *fs[20];
	for (uint64_t i = 0; i < 20; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, i);
	CHECK(final_code(crash) == FUT_ECRASHED);
	fut_release(crash);
	for (uint64_t i = 0; i < 20; i++)
		expect_square(fs[i], i);
	set_nproc(fs_pid, old.rlim_cur);
	start_two_workers(ex); /* the replacement came */
	fut_executor_free(ex);
	CHECK(count_fds() == fds);
	CHECK(count_children() == kids);

	/* The one worker dies and none can be forked: the pool breaks. */
	ex = new_pool(1);
	expect_square(submit_op(ex, OP_SQUARE, 0, 3), 3);
	set_nproc(fork_server_pid(), 0);
	crash = submit_op(ex, OP_SEGV, 0, 0);
	for (uint64_t i = 0; i < 8; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, i);
	CHECK(final_code(crash) == FUT_ECRASHED);
	fut_release(crash);
	for (int i = 0; i < 8; i++)
		expect_failure(fs[i], FUT_EBROKEN, "fork");
	fut_executor_free(ex);
	CHECK(count_fds() == fds);
	CHECK(count_children() == kids);
}

static void test_fork_failure_at_worker_replacement_is_survived(void **state)
{
	(void)state;
	run_as_nobody(child_fork_fails_at_replacement);
}

/* ------------------------------------------------------------------ */
/* No fd left for a replacement worker's channels                     */

/*
 * Two places can run out of fds when a worker is replaced: this process,
 * making the worker's channels (socketpair, pipe2), and the fork server,
 * taking them in (recvmsg drops what it cannot install: MSG_CTRUNC).
 * Each "lower" takes away every fd of one of them and says whether it
 * could; "restore" gives them back.
 */
struct fd_squeeze {
	bool (*lower)(pid_t fs_pid, struct rlimit *old);
	void (*restore)(pid_t fs_pid, const struct rlimit *old);
};

/* Lowers our RLIMIT_NOFILE to the lowest free fd: no fd can be opened. */
static bool lower_ours(pid_t fs_pid, struct rlimit *old)
{
	(void)fs_pid;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, old), 0);
	int lowest = lowest_free_fd();
	assert_true(lowest >= 0);
	struct rlimit low = *old;
	low.rlim_cur = (rlim_t)lowest;
	if (setrlimit(RLIMIT_NOFILE, &low) != 0)
		return false;
	int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (probe >= 0) { /* valgrind keeps this limit to itself */
		close(probe);
		assert_int_equal(setrlimit(RLIMIT_NOFILE, old), 0);
		return false;
	}
	return true;
}

static void restore_ours(pid_t fs_pid, const struct rlimit *old)
{
	(void)fs_pid;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, old), 0);
}

/* The fork server holds fds 0-2 (stdio or /dev/null) and two of its
 * own above them: with a limit of 3 it can take in none. */
static bool lower_the_servers(pid_t fs_pid, struct rlimit *old)
{
	if (under_valgrind()) /* its fork server is valgrind's too */
		return false;
	assert_int_equal(prlimit(fs_pid, RLIMIT_NOFILE, NULL, old), 0);
	struct rlimit low = *old;
	low.rlim_cur = 3;
	assert_int_equal(prlimit(fs_pid, RLIMIT_NOFILE, &low, NULL), 0);
	return true;
}

static void restore_the_servers(pid_t fs_pid, const struct rlimit *old)
{
	assert_int_equal(prlimit(fs_pid, RLIMIT_NOFILE, old, NULL), 0);
}

static void replacement_without_fds(const struct fd_squeeze *sq,
				    const char *why)
{
	int fds = count_fds(), kids = count_children();
	struct rlimit old;
	fut_executor *ex = new_pool(2);
	start_two_workers(ex);
	pid_t fs_pid = fork_server_pid();
	if (!sq->lower(fs_pid, &old)) {
		fut_executor_free(ex);
		skip();
	}
	/* Another worker lives: the work goes on there; the replacement
	 * comes once fds can be had again. */
	fut_future *crash = submit_op(ex, OP_SEGV, 0, 0);
	fut_future *fs[20];
	for (uint64_t i = 0; i < 20; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, i);
	int crashed = final_code(crash);
	for (uint64_t i = 0; i < 20; i++)
		(void)final_code(fs[i]);
	sq->restore(fs_pid, &old);
	assert_int_equal(crashed, FUT_ECRASHED);
	fut_release(crash);
	for (uint64_t i = 0; i < 20; i++)
		expect_square(fs[i], i);
	start_two_workers(ex); /* the replacement came */
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);

	/* The one worker dies and none can be started: the waiting tasks
	 * end FUT_EAGAIN, saying why, and the pool works once fds are back
	 * (it broke for good: a user's trial, 2026-12-07). */
	ex = new_pool(1);
	expect_square(submit_op(ex, OP_SQUARE, 0, 3), 3);
	fs_pid = fork_server_pid();
	assert_true(sq->lower(fs_pid, &old));
	crash = submit_op(ex, OP_SEGV, 0, 0);
	for (uint64_t i = 0; i < 8; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, i);
	for (uint64_t i = 0; i < 8; i++)
		(void)final_code(fs[i]);
	sq->restore(fs_pid, &old);
	assert_int_equal(final_code(crash), FUT_ECRASHED);
	fut_release(crash);
	for (int i = 0; i < 8; i++) {
		const char *msg = fut_error_message(fs[i]);
		assert_non_null(msg);
		assert_non_null(strstr(msg, strerror(EMFILE)));
		assert_non_null(strstr(msg, "out of file descriptors"));
		expect_failure(fs[i], FUT_EAGAIN, why);
	}
	expect_square(submit_op(ex, OP_SQUARE, 0, 4), 4);
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);
}

static void test_fd_exhaustion_at_worker_replacement_is_survived(void **state)
{
	(void)state;
	replacement_without_fds(
		&(struct fd_squeeze){ lower_ours, restore_ours },
		/* socketpair, or pipe2 under valgrind, which checks the
		 * limit itself and not on every call */
		"cannot start a worker process");
}

static void
test_a_fork_server_out_of_fds_at_worker_replacement_is_survived(void **state)
{
	(void)state;
	replacement_without_fds(&(struct fd_squeeze){ lower_the_servers,
						      restore_the_servers },
				"taking in the worker's fds");
}

/* ------------------------------------------------------------------ */
/* The fork server killed                                              */

static void test_killing_the_fork_server_fails_only_running_tasks(void **state)
{
	(void)state;
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = new_pool(2);
	atomic_store(started, 0);
	fut_future *blocked[2];
	for (int i = 0; i < 2; i++)
		blocked[i] = submit_op(ex, OP_BLOCK, 0, 0);
	enum {
		N = 10,
		M = 200
	};
	fut_future *fs[N + M];
	for (int i = 0; i < N; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, (uint64_t)i);
	struct op_in in[M];
	for (int i = 0; i < M; i++)
		in[i] = (struct op_in){ OP_SQUARE, 0, (uint64_t)(N + i) };
	assert_int_equal(fut_submit_many(ex, op_task, in, sizeof(in[0]), M,
					 fs + N),
			 FUT_OK);
	/* Both workers run a blocked task; the rest is queued (a chunk may
	 * be in flight behind one of them). */
	wait_started(blocked, 2, 2);
	kill_fork_server_and_wait_for_the_next();
	for (int i = 0; i < 2; i++)
		expect_failure(blocked[i], FUT_ECRASHED, "fork server");
	for (int i = 0; i < N + M; i++)
		expect_square(fs[i], (uint64_t)i);
	/* It goes on, on a new fork server. */
	start_two_workers(ex);
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);
}

static void child_fork_server_cannot_restart(void)
{
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = new_pool(1);
	expect_square(submit_op(ex, OP_SQUARE, 0, 3), 3);
	atomic_store(started, 0);
	fut_future *blocked = submit_op(ex, OP_BLOCK, 0, 0);
	fut_future *fs[8];
	for (uint64_t i = 0; i < 8; i++)
		fs[i] = submit_op(ex, OP_SQUARE, 0, i);
	wait_started(&blocked, 1, 1);
	struct rlimit old;
	CHECK(getrlimit(RLIMIT_NPROC, &old) == 0);
	set_nproc(0, 0); /* the manager forks the new fork server */
	CHECK(children(true) >= 1);
	int rc = final_code(blocked);
	CHECK(rc == FUT_ECRASHED || rc == FUT_EBROKEN);
	fut_release(blocked);
	for (int i = 0; i < 8; i++)
		expect_failure(fs[i], FUT_EBROKEN, "could not be restarted");
	fut_future *f = (fut_future *)(uintptr_t)1;
	struct op_in in = { OP_SQUARE, 0, 1 };
	CHECK(fut_submit_bytes(ex, op_task, &in, sizeof(in), &f) ==
	      FUT_EBROKEN);
	CHECK(f == NULL);
	set_nproc(0, old.rlim_cur);
	fut_executor_free(ex);
	CHECK(count_fds() == fds);
	CHECK(count_children() == kids);
}

static void
test_a_fork_server_that_cannot_be_restarted_breaks_the_pool(void **state)
{
	(void)state;
	run_as_nobody(child_fork_server_cannot_restart);
}

/* ------------------------------------------------------------------ */
/* A worker dies in the middle of a frame                              */

static void test_a_worker_dying_mid_frame_fails_only_its_task(void **state)
{
	(void)state;
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = new_pool(1);
	const uint32_t cuts[2] = { OP_CUT_SMALL, OP_CUT_LARGE };
	for (int c = 0; c < 2; c++) {
		/* One batch: chunks [0 1] [2 3] [4]; task 2 dies while
		 * writing its result, after 0 and 1 ran (their results may
		 * have died with it: they run again) and before 3. */
		struct op_in in[5];
		for (uint64_t i = 0; i < 5; i++)
			in[i] = (struct op_in){ OP_SQUARE, 0, i + 10 };
		in[2].op = cuts[c];
		fut_future *fs[5];
		assert_int_equal(fut_submit_many(ex, op_task, in, sizeof(in[0]),
						 5, fs),
				 FUT_OK);
		assert_int_equal(final_code(fs[2]), FUT_ECRASHED);
		int status = -1;
		assert_int_equal(fut_crash_status(fs[2], &status), FUT_OK);
		/* The task writes the frame itself (die_mid_frame): bytes
		 * its worker did not write, which the parent may see before
		 * the worker's _exit, and kill it first (SIGKILL), or close
		 * the pipe as the task still writes to it (SIGPIPE). */
		if (WIFSIGNALED(status))
			assert_true(WTERMSIG(status) == SIGKILL ||
				    WTERMSIG(status) == SIGPIPE);
		else if (!(under_valgrind() &&
			   WEXITSTATUS(status) == VALGRIND_ERROR_EXIT))
			assert_int_equal(WEXITSTATUS(status), 0);
		fut_release(fs[2]);
		for (uint64_t i = 0; i < 5; i++)
			if (i != 2)
				expect_square(fs[i], i + 10);
	}
	expect_square(submit_op(ex, OP_SQUARE, 0, 9), 9);
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);
}

/* ------------------------------------------------------------------ */
/* A worker that stops reading                                         */

enum stuck_end {
	STUCK_TIMEOUT,
	STUCK_SHUTDOWN,
};

#define BIG_LEN ((size_t)8 << 20) /* more than a socket buffer holds */

/*
 * The worker's task returns its (large) result, so the manager sees the
 * worker idle, then blocks: the worker reads nothing more.  A
 * big input sent to it fills its socket; the manager must not block on
 * it: the other worker's big tasks complete.  The stuck worker never
 * claims the first task, which stays pending, and is taken back for the
 * other worker once that one idles (the bytes of it still on their way
 * to the stuck worker are skipped there).  Then `how` ends the stuck
 * task, whose result came back already.
 */
static void stuck_reader(enum stuck_end how)
{
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 2,
		/* Room for the blocking task to send its result first, even
		 * on a loaded machine: only then may it be killed. */
		.task_timeout = how == STUCK_TIMEOUT ? 3.0 : 0 });
	fut_future *emit = submit_op(ex, OP_EMIT_BLOCK, 0, 0);
	const void *data;
	size_t len;
	assert_int_equal(fut_result_bytes(emit, LONG_WAIT, &data, &len),
			 FUT_OK);
	assert_int_equal(len, EMIT_LEN);
	fut_release(emit);
	unsigned char *big = malloc(BIG_LEN);
	assert_non_null(big);
	for (size_t i = 0; i < BIG_LEN; i++)
		big[i] = (unsigned char)(i * 7 + 3);
	enum {
		N = 4
	};
	fut_future *fs[N];
	uint64_t want[N];
	for (int i = 0; i < N; i++) {
		big[0] = (unsigned char)i;
		want[i] = sample_of(big, BIG_LEN);
		/* The first goes to the stuck worker (idle, to the manager). */
		assert_int_equal(fut_submit_bytes(ex, sample_task, big, BIG_LEN,
						  &fs[i]),
				 FUT_OK);
	}
	free(big);
	for (int i = 1; i < N; i++) {
		assert_int_equal(result_u64(fs[i]), want[i]);
		fut_release(fs[i]);
	}
	assert_int_equal(result_u64(fs[0]), want[0]);
	fut_release(fs[0]);
	expect_square(submit_op(ex, OP_SQUARE, 0, 5), 5);
	switch (how) {
	case STUCK_TIMEOUT:
		/* The stuck task runs over task_timeout: its worker is
		 * killed, though no future waits for it any more. */
		break;
	case STUCK_SHUTDOWN:
		assert_int_equal(fut_executor_shutdown(ex,
						       FUT_SHUTDOWN_INTERRUPT),
				 FUT_OK);
		break;
	}
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);
}

static void test_task_timeout_ends_a_worker_that_stopped_reading(void **state)
{
	(void)state;
	stuck_reader(STUCK_TIMEOUT);
}

static void
test_a_task_sent_to_a_worker_that_stopped_reading_runs_elsewhere(void **state)
{
	(void)state;
	stuck_reader(STUCK_SHUTDOWN);
}

/* ------------------------------------------------------------------ */
/* fds 0-2 closed before the pool is made                              */

/* In a child (its stdio is what it closes): fds of mask closed, a pool
 * made, tasks that write to those fds, a fork server restarted while our
 * fds sit on 0-2; nothing left behind. */
static void run_with_closed_stdio(uint32_t mask)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = true;
		diag_fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
		CHECK(diag_fd >= 0);
		for (int fd = 0; fd < 3; fd++)
			if (mask & (1u << fd))
				/* Closed already, as stdin is under some CI
				 * runners: as good. */
				CHECK(close(fd) == 0 || errno == EBADF);
		int fds = count_fds(), kids = count_children();
		/* The pool's eventfd and sockets may land on 0-2 now. */
		fut_executor *ex = new_pool(2);
		enum {
			N = 16
		};
		fut_future *fs[N];
		for (int round = 0; round < 2; round++) {
			if (round == 1)
				kill_fork_server_and_wait_for_the_next();
			for (int i = 0; i < N; i++)
				fs[i] = submit_op(ex, OP_NOISE, mask,
						  (uint64_t)i);
			for (int i = 0; i < N; i++)
				expect_square(fs[i], (uint64_t)i);
		}
		fut_executor_free(ex);
		CHECK(count_fds() == fds);
		CHECK(count_children() == kids);
		exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_a_pool_made_with_fds_0_to_2_closed_works(void **state)
{
	(void)state;
	/* stdout; stderr; both; all three; stdin alone. */
	const uint32_t masks[] = { 2, 4, 6, 7, 1 };
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++)
		run_with_closed_stdio(masks[i]);
}

/* ------------------------------------------------------------------ */
/* A storm of signals                                                  */

static void check_storm_result(fut_future *f, const struct op_in *in)
{
	const void *data;
	size_t len;
	int rc = fut_result_bytes(f, 0, &data, &len);
	if (in->op == OP_SEGV) {
		assert_int_equal(rc, FUT_ECRASHED);
	} else if (in->op == OP_FAIL) {
		assert_int_equal(rc, FUT_ETASK);
		assert_int_equal(fut_task_code(f), (int)(in->v % 100));
	} else {
		assert_int_equal(rc, FUT_OK);
		assert_int_equal(len, sizeof(uint64_t));
		uint64_t v;
		memcpy(&v, data, sizeof(v));
		assert_int_equal(v, in->v * in->v);
	}
}

/* A batch and single submits (one crashing its worker every 4th round),
 * timed waits and as_completed under poll until all are done, then every
 * result checked. */
static void storm_round(fut_executor *ex, uint32_t round)
{
	enum {
		N = 48
	};
	fut_future *fs[N];
	struct op_in in[N];
	for (uint32_t i = 0; i < N; i++) {
		uint64_t v = round * 1000 + i;
		in[i] = (struct op_in){ v % 5 == 0 ? OP_FAIL : OP_SQUARE, 0,
					v };
	}
	if (round % 4 == 3)
		in[N - 1].op = OP_SEGV;
	storm_submit_and_wait(
		ex, op_task, in, sizeof(in[0]), N, fs, round % N,
		FUT_CODE_BIT(FUT_ETIMEDOUT) | FUT_CODE_BIT(FUT_OK) |
			FUT_CODE_BIT(FUT_ETASK) | FUT_CODE_BIT(FUT_ECRASHED));
	for (uint32_t i = 0; i < N; i++) {
		check_storm_result(fs[i], &in[i]);
		fut_release(fs[i]);
	}
}

static void
test_signal_storm_with_process_pool_work_surfaces_no_eintr(void **state)
{
	(void)state;
	int kids = count_children();
	struct storm s;
	storm_start(&s);
	/* Made, used, restarted and shut down under the storm. */
	fut_executor *ex = new_pool(2);
	long min_signals = under_valgrind() ? 200 : 2000;
	uint32_t rounds = 0;
	while (rounds < 12 || atomic_load(storm_signals_seen()) < min_signals) {
		if (rounds == 5)
			kill_fork_server_and_wait_for_the_next();
		storm_round(ex, rounds++);
	}
	struct op_in last = { OP_SQUARE, 0, 7 };
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, op_task, &last, sizeof(last), &f),
			 FUT_OK);
	assert_int_equal(fut_executor_shutdown(ex, 0), FUT_OK);
	check_storm_result(f, &last);
	fut_release(f);
	fut_executor_free(ex);
	storm_stop(&s);
	assert_int_equal(count_children(), kids);
	print_message("signal storm: %ld signals over %u rounds\n",
		      atomic_load(storm_signals_seen()), rounds);
}

/* ------------------------------------------------------------------ */
/* The parent dies                                                     */

/* A child of ours makes a pool, has a worker block in a task, tells us
 * the fork server's and the worker's pids, and is SIGKILLed: no atexit,
 * no shutdown.  Both must go (the fork server by PR_SET_PDEATHSIG and the
 * EOF of its socket, the worker by its own PR_SET_PDEATHSIG). */
static void
test_the_fork_server_and_its_workers_die_with_the_parent(void **state)
{
	(void)state;
	int pfd[2];
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t parent = fork();
	assert_true(parent >= 0);
	if (parent == 0) {
		in_child = true;
		(void)close(pfd[0]);
		fut_executor *ex = new_pool(1);
		atomic_store(started, 0);
		fut_future *meet = submit_op(ex, OP_MEET, 1, 0);
		pid_t ids[2] = { 0, (pid_t)result_u64(meet) };
		atomic_store(started, 0);
		fut_future *blocked = submit_op(ex, OP_BLOCK, 0, 0);
		wait_started(&blocked, 1, 1);
		ids[0] = fork_server_pid();
		CHECK(write(pfd[1], ids, sizeof(ids)) == (ssize_t)sizeof(ids));
		for (;;)
			pause();
	}
	(void)close(pfd[1]);
	pid_t ids[2];
	assert_int_equal(read(pfd[0], ids, sizeof(ids)), (ssize_t)sizeof(ids));
	(void)close(pfd[0]);
	assert_false(process_gone(ids[0]));
	assert_false(process_gone(ids[1]));
	assert_int_equal(kill(parent, SIGKILL), 0);
	int status;
	assert_int_equal(waitpid(parent, &status, 0), parent);
	/* Polled with a bound only so that a failure cannot hang the test. */
	for (long i = 0; !process_gone(ids[0]) || !process_gone(ids[1]); i++) {
		assert_true(i < 600000); /* 60 s at 0.1 ms a look */
		struct timespec pause_ts = { 0, 100 * 1000 };
		nanosleep(&pause_ts, NULL);
	}
}

/* ------------------------------------------------------------------ */
/* Requeued, early deaths, SIGCHLD ignored (review 2026-12-06)        */

/* A replacement worker takes a while to start: a task requeued after a
 * crash waits in the queue meanwhile. */
static int slow_init(void *arg)
{
	(void)arg;
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return 0;
}

/*
 * One frame [square, segv] on one worker: the square ran, its result
 * (batched with the frame's) died with the worker, and it is queued
 * again RUNNING while the replacement starts.  shutdown(CANCEL_PENDING)
 * then must not take it for pending: it used to drain it, fail to cancel
 * it and drop it, RUNNING for ever.
 */
static void
test_a_task_requeued_after_a_crash_survives_cancel_pending(void **state)
{
	(void)state;
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .chunk = 2, .initializer = slow_init });
	struct op_in in[2] = { { OP_SQUARE, 0, 7 }, { OP_SEGV, 0, 0 } };
	fut_future *fs[2];
	assert_int_equal(fut_submit_many(ex, op_task, in, sizeof(in[0]), 2, fs),
			 FUT_OK);
	assert_int_equal(final_code(fs[1]), FUT_ECRASHED);
	fut_release(fs[1]);
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING),
			 FUT_OK);
	expect_square(fs[0], 7);
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);
}

static int crashing_init(void *arg)
{
	(void)arg;
	raise(SIGSEGV);
	return 0;
}

/* A worker that dies in its initializer, before its hello, is a spawn
 * that failed: five in a row break the pool (it used to be forked again
 * for ever, its task pending and the free hung). */
static void test_a_worker_dying_in_its_initializer_breaks_the_pool(void **state)
{
	(void)state;
	int fds = count_fds(), kids = count_children();
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 2, .initializer = crashing_init });
	fut_future *f = submit_op(ex, OP_SQUARE, 0, 3);
	expect_failure(f, FUT_EBROKEN, "before its hello"); /* releases f */
	fut_future *g = NULL;
	struct op_in in = { OP_SQUARE, 0, 3 };
	assert_int_equal(fut_submit_bytes(ex, op_task, &in, sizeof(in), &g),
			 FUT_EBROKEN);
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(), kids);
}

/* An application that ignores SIGCHLD: the fork server must still hear
 * of its workers' deaths (the kernel reaped them unreported, so a crash
 * never ended its task and the free hung); a task still sees SIGCHLD
 * ignored, as the application left it. */
static void sigchld_task(fut_task *t)
{
	struct sigaction sa;
	(void)sigaction(SIGCHLD, NULL, &sa);
	return_u64(t, sa.sa_handler == SIG_IGN);
}

static void test_a_pool_works_with_sigchld_ignored(void **state)
{
	(void)state;
	struct sigaction ign, old;
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	assert_int_equal(sigaction(SIGCHLD, &ign, &old), 0);
	int fds = count_fds();
	fut_executor *ex = new_pool(1);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, sigchld_task, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(result_u64(f), 1);
	fut_release(f);
	f = submit_op(ex, OP_SEGV, 0, 0);
	assert_int_equal(final_code(f), FUT_ECRASHED);
	fut_release(f);
	expect_square(submit_op(ex, OP_SQUARE, 0, 5), 5);
	fut_executor_free(ex);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);
}

/* shutdown(CANCEL_PENDING) closes the memfds of the large inputs it
 * cancels, not when the caller releases their futures. */
static void test_cancel_pending_closes_shared_inputs(void **state)
{
	(void)state;
	int kids = count_children();
	fut_executor *ex = new_pool(1);
	atomic_store(started, 0);
	fut_future *blocked = submit_op(ex, OP_BLOCK, 0, 0);
	wait_started(&blocked, 1, 1);
	size_t n = 256 * 1024;
	unsigned char *big = calloc(1, n);
	assert_non_null(big);
	int fds = count_fds();
	fut_future *fs[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(fut_submit_bytes(ex, sample_task, big, n,
						  &fs[i]),
				 FUT_OK);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING |
							   FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	for (int i = 0; i < 2; i++)
		assert_true(fut_cancelled(fs[i]));
	assert_int_equal(count_fds(), fds);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT),
			 FUT_OK);
	assert_int_equal(final_code(blocked), FUT_ECANCELLED);
	fut_release(blocked);
	for (int i = 0; i < 2; i++)
		fut_release(fs[i]);
	fut_executor_free(ex);
	free(big);
	assert_int_equal(count_children(), kids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_fork_failure_at_creation_is_eagain_without_leaks),
		cmocka_unit_test(
			test_fork_failure_at_the_first_worker_breaks_the_pool),
		cmocka_unit_test(
			test_fork_failure_at_worker_replacement_is_survived),
		cmocka_unit_test(
			test_fd_exhaustion_at_worker_replacement_is_survived),
		cmocka_unit_test(
			test_a_fork_server_out_of_fds_at_worker_replacement_is_survived),
		cmocka_unit_test(
			test_killing_the_fork_server_fails_only_running_tasks),
		cmocka_unit_test(
			test_a_fork_server_that_cannot_be_restarted_breaks_the_pool),
		cmocka_unit_test(
			test_a_worker_dying_mid_frame_fails_only_its_task),
		cmocka_unit_test(
			test_task_timeout_ends_a_worker_that_stopped_reading),
		cmocka_unit_test(
			test_a_task_sent_to_a_worker_that_stopped_reading_runs_elsewhere),
		cmocka_unit_test(test_a_pool_made_with_fds_0_to_2_closed_works),
		cmocka_unit_test(
			test_signal_storm_with_process_pool_work_surfaces_no_eintr),
		cmocka_unit_test(
			test_the_fork_server_and_its_workers_die_with_the_parent),
		cmocka_unit_test(
			test_a_task_requeued_after_a_crash_survives_cancel_pending),
		cmocka_unit_test(
			test_a_worker_dying_in_its_initializer_breaks_the_pool),
		cmocka_unit_test(test_a_pool_works_with_sigchld_ignored),
		cmocka_unit_test(test_cancel_pending_closes_shared_inputs),
	};
	if (!pp_test_prepare())
		return 2;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
