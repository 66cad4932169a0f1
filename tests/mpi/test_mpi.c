/*
 * test_mpi.c: the MPI executor in world mode, under `mpirun -np 3` (one
 * client, two servers; tests/mpi/run.sh).  Every test is collective: see
 * mpi_test.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpi_test.h"

/* NULL on servers (the test ends there), the executor on root. */
static fut_executor *make(const fut_mpi_opts *opts)
{
	fut_executor *ex = (fut_executor *)(uintptr_t)1;
	assert_int_equal(fut_mpi_executor_new(&ex, opts), FUT_OK);
	if (world_rank() != 0)
		assert_null(ex);
	else
		assert_non_null(ex);
	return ex;
}

static void nothing_task(fut_task *t)
{
	(void)t;
}

static void results_come_back_byte_exact_split_or_not(void **state)
{
	(void)state;
	fut_executor *ex = make(NULL);
	if (ex == NULL)
		return;
	int servers = 0, rank = -1;
	assert_int_equal(fut_mpi_info(ex, &servers, &rank), FUT_OK);
	assert_int_equal(servers, 2);
	assert_int_equal(rank, 0);
	check_echo(ex, 0);
	check_echo(ex, 16);
	check_echo(ex, 1 << 20);
	/* Over the 1 MiB message limit main() set: sent in parts. */
	check_echo(ex, (64u << 20) + 1);
	fut_executor_free(ex);
}

static void tasks_run_on_server_ranks_and_many_submit(void **state)
{
	(void)state;
	fut_executor *ex = make(&(fut_mpi_opts){ .prefetch = 8 });
	if (ex == NULL)
		return;
	check_many(ex, 2000);
	check_both_servers_work(ex);
	assert_int_equal(fut_mpi_task_rank(NULL), -1);
	fut_executor_free(ex);
}

static void failures_cross_ranks(void **state)
{
	(void)state;
	fut_executor *ex = make(NULL);
	if (ex == NULL)
		return;
	check_failures(ex);
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, nothing_task, NULL, 0, &f),
			 FUT_OK);
	const void *out = &out;
	size_t len = 1;
	assert_int_equal(fut_result_bytes(f, 30, &out, &len), FUT_OK);
	assert_int_equal(len, 0);
	fut_release(f);
	/* fut_submit (a pointer argument) has no meaning on a rank. */
	assert_int_equal(fut_submit(ex, nothing_task, NULL, &f), FUT_ENOTSUP);
	assert_null(f);
	fut_executor_free(ex);
}

/* Sleeps 200 ms, then returns its input. */
static void slow_echo_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	struct timespec ts = { 0, 200 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	fut_task_return_bytes(t, in, len);
}

/*
 * A server holds the results of quick tasks for its whole window, but a
 * task that ran long sends its result as it ends: the first of 4 slow
 * tasks on one rank (prefetch 4) completes alone, 600 ms before the last,
 * not with the next one (the rule before: half of prefetch gathered).
 */
static void a_long_task_result_goes_as_it_ends(void **state)
{
	(void)state;
	fut_executor *ex = make(&(fut_mpi_opts){ .prefetch = 4 });
	if (ex == NULL)
		return;
	uint32_t in[4] = { 10, 11, 12, 13 };
	fut_future *fs[4];
	assert_int_equal(fut_submit_many(ex, slow_echo_task, in, sizeof(in[0]),
					 4, fs),
			 FUT_OK);
	assert_int_equal(fut_wait(fs, 4, FUT_FIRST_COMPLETED, 30), FUT_OK);
	/* Results of one message complete a few microseconds apart: 50 ms
	 * lets any that came with the first complete, 150 ms before the
	 * second task can end. */
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	int done = 0;
	for (int i = 0; i < 4; i++)
		done += fut_done(fs[i]);
	assert_int_equal(done, 1);
	assert_int_equal(fut_wait(fs, 4, FUT_ALL_COMPLETED, 30), FUT_OK);
	for (int i = 0; i < 4; i++) {
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(fs[i], 0, &out, &len),
				 FUT_OK);
		assert_int_equal(len, sizeof(in[i]));
		assert_memory_equal(out, &in[i], len);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
}

static void registered_name_is_used(fut_task *t)
{
	fut_task_return_bytes(t, "registered", 10);
}

static void a_registered_name_resolves(void **state)
{
	(void)state;
	assert_int_equal(fut_mpi_register("test.registered",
					  registered_name_is_used),
			 FUT_OK);
	fut_executor *ex = make(NULL);
	if (ex == NULL)
		return;
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, registered_name_is_used, NULL, 0,
					  &f),
			 FUT_OK);
	const void *out;
	size_t len;
	assert_int_equal(fut_result_bytes(f, 30, &out, &len), FUT_OK);
	assert_int_equal(len, 10);
	assert_memory_equal(out, "registered", 10);
	fut_release(f);
	fut_executor_free(ex);
}

/* Sleeps 50 ms per task, or until interrupted; writes its side file
 * (the path is its input) when it runs. */
static void marking_task(fut_task *t)
{
	size_t len;
	const char *path = fut_task_input(t, &len);
	char p[256];
	snprintf(p, sizeof(p), "%.*s", (int)len, path);
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	nanosleep(&ts, NULL);
}

static void side_path(char *buf, size_t n, int i)
{
	snprintf(buf, n, "/tmp/fut-mpi-test-%d-%d", (int)getpid(), i);
}

static void queued_tasks_cancel_and_never_run(void **state)
{
	(void)state;
	fut_executor *ex = make(&(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL)
		return;
	enum {
		N = 12
	};
	fut_future *fs[N];
	char paths[N][64];
	for (int i = 0; i < N; i++) {
		side_path(paths[i], sizeof(paths[i]), i);
		unlink(paths[i]);
		assert_int_equal(fut_submit_bytes(ex, marking_task, paths[i],
						  strlen(paths[i]), &fs[i]),
				 FUT_OK);
	}
	int cancelled = 0;
	bool was_cancelled[N];
	for (int i = N - 1; i >= 0; i--) {
		was_cancelled[i] = fut_cancel(fs[i]);
		cancelled += was_cancelled[i];
		if (!was_cancelled[i])
			assert_true(fut_running(fs[i]) || fut_done(fs[i]));
	}
	/* Two servers, one in flight each: at most 2 dispatched when
	 * cancelling began, plus whatever finished meanwhile. */
	assert_true(cancelled >= N - 4);
	assert_int_equal(fut_wait(fs, N, FUT_ALL_COMPLETED, 30), FUT_OK);
	fut_executor_free(ex);
	for (int i = 0; i < N; i++) {
		struct stat st;
		bool ran = stat(paths[i], &st) == 0;
		assert_true(ran == !was_cancelled[i]);
		assert_int_equal(fut_result(fs[i], 0, NULL),
				 was_cancelled[i] ? FUT_ECANCELLED : FUT_OK);
		unlink(paths[i]);
		fut_release(fs[i]);
	}
}

/* Loops until interrupted (10 s at most). */
static void looping_task(fut_task *t)
{
	for (int i = 0; i < 10000 && !fut_task_cancelled(t); i++) {
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (fut_task_cancelled(t))
		fut_task_return_bytes(t, "stopped", 7);
}

static void wait_running(fut_future *f)
{
	for (int i = 0; i < 10000 && !fut_running(f) && !fut_done(f); i++) {
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	assert_true(fut_running(f));
}

/* One thread per rank runs tasks on the MPI loop's thread, its standby
 * serving the loop meanwhile; more run them on task threads. */
static void interrupt_reaches(const fut_mpi_opts *opts)
{
	fut_executor *ex = make(opts);
	if (ex == NULL)
		return;
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, looping_task, NULL, 0, &f),
			 FUT_OK);
	wait_running(f);
	assert_false(fut_cancel(f));
	assert_int_equal(fut_interrupt(f), FUT_OK);
	const void *out;
	size_t len;
	assert_int_equal(fut_result_bytes(f, 30, &out, &len), FUT_OK);
	assert_int_equal(len, 7);
	assert_memory_equal(out, "stopped", 7);
	assert_int_equal(fut_interrupt(f), FUT_ESTATE);
	fut_release(f);
	fut_executor_free(ex);
}

static void interrupt_reaches_a_running_task(void **state)
{
	(void)state;
	interrupt_reaches(NULL);
}

static void interrupt_reaches_a_task_on_a_task_thread(void **state)
{
	(void)state;
	interrupt_reaches(&(fut_mpi_opts){ .threads_per_rank = 2 });
}

static void shutdown_flags_behave_as_on_the_process_pool(void **state)
{
	(void)state;
	unsigned flags[] = { 0, FUT_SHUTDOWN_NOWAIT,
			     FUT_SHUTDOWN_CANCEL_PENDING,
			     FUT_SHUTDOWN_INTERRUPT |
				     FUT_SHUTDOWN_CANCEL_PENDING };
	for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
		fut_executor *ex = make(&(fut_mpi_opts){ .prefetch = 1 });
		if (ex == NULL)
			continue;
		enum {
			N = 6
		};
		fut_future *fs[N];
		bool loop = flags[k] & FUT_SHUTDOWN_INTERRUPT;
		for (int i = 0; i < N; i++)
			assert_int_equal(fut_submit_bytes(ex,
							  loop ? looping_task :
								 nothing_task,
							  NULL, 0, &fs[i]),
					 FUT_OK);
		if (loop)
			wait_running(fs[0]);
		assert_int_equal(fut_executor_shutdown(ex, flags[k]), FUT_OK);
		assert_int_equal(fut_executor_shutdown(ex, flags[k]), FUT_OK);
		fut_future *late = NULL;
		assert_int_equal(fut_submit_bytes(ex, nothing_task, NULL, 0,
						  &late),
				 FUT_ESHUTDOWN);
		if (flags[k] == 0 || flags[k] == FUT_SHUTDOWN_CANCEL_PENDING ||
		    loop)
			for (int i = 0; i < N; i++)
				assert_true(fut_done(fs[i]));
		fut_executor_free(ex);
		int ok = 0, cancelled = 0;
		for (int i = 0; i < N; i++) {
			int rc = fut_result(fs[i], 30, NULL);
			ok += rc == FUT_OK;
			cancelled += rc == FUT_ECANCELLED;
			fut_release(fs[i]);
		}
		assert_int_equal(ok + cancelled, N);
		if (flags[k] == 0 || flags[k] == FUT_SHUTDOWN_NOWAIT)
			assert_int_equal(ok, N);
		else
			assert_true(cancelled >= 1);
	}
}

static void wait_mixes_executors(void **state)
{
	(void)state;
	fut_executor *ex = make(NULL);
	if (ex == NULL)
		return;
	fut_executor *tp, *pp;
	assert_int_equal(fut_thread_pool_new(&tp, NULL), FUT_OK);
	assert_int_equal(fut_process_pool_new(
				 &pp,
				 &(fut_process_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	int x = 7;
	fut_future *fs[3];
	assert_int_equal(fut_submit_bytes(ex, square_task, &x, sizeof(x),
					  &fs[0]),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(tp, square_task, &x, sizeof(x),
					  &fs[1]),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(pp, square_task, &x, sizeof(x),
					  &fs[2]),
			 FUT_OK);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, 3), FUT_OK);
	int yielded = 0;
	fut_future *f;
	while (fut_as_completed_next(it, 30, &f) == FUT_OK) {
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(f, 0, &out, &len), FUT_OK);
		assert_int_equal(*(const int *)out, 49);
		yielded++;
	}
	assert_int_equal(yielded, 3);
	fut_as_completed_free(it);
	assert_int_equal(fut_wait(fs, 3, FUT_ALL_COMPLETED, 0), FUT_OK);
	for (int i = 0; i < 3; i++)
		fut_release(fs[i]);
	fut_executor_free(pp);
	fut_executor_free(tp);
	fut_executor_free(ex);
}

struct submitter {
	fut_executor *ex;
	int base;
	int bad;
};

static void *submit_many_from_a_thread(void *arg)
{
	struct submitter *s = arg;
	for (int i = 0; i < 200; i++) {
		int x = s->base + i;
		fut_future *f;
		if (fut_submit_bytes(s->ex, square_task, &x, sizeof(x), &f) !=
		    FUT_OK) {
			s->bad++;
			continue;
		}
		const void *out;
		size_t len;
		if (fut_result_bytes(f, 30, &out, &len) != FUT_OK ||
		    len != sizeof(int) || *(const int *)out != x * x)
			s->bad++;
		fut_release(f);
	}
	return NULL;
}

static void threads_submit_while_the_app_uses_mpi(void **state)
{
	(void)state;
	fut_executor *ex = make(NULL);
	if (ex == NULL)
		return;
	pthread_t th[4];
	struct submitter s[4];
	for (int i = 0; i < 4; i++) {
		s[i] = (struct submitter){ ex, i * 1000, 0 };
		assert_int_equal(pthread_create(&th[i], NULL,
						submit_many_from_a_thread,
						&s[i]),
				 0);
	}
	/* The application's own messages on COMM_WORLD, meanwhile: none is
	 * taken by the library, which works on its own communicator. */
	for (int i = 0; i < 200; i++) {
		int out = i, in = -1;
		MPI_Request rq;
		assert_int_equal(MPI_Isend(&out, 1, MPI_INT, 0, 7,
					   MPI_COMM_WORLD, &rq),
				 MPI_SUCCESS);
		assert_int_equal(MPI_Recv(&in, 1, MPI_INT, 0, MPI_ANY_TAG,
					  MPI_COMM_WORLD, MPI_STATUS_IGNORE),
				 MPI_SUCCESS);
		assert_int_equal(MPI_Wait(&rq, MPI_STATUS_IGNORE), MPI_SUCCESS);
		assert_int_equal(in, i);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(s[i].bad, 0);
	}
	fut_executor_free(ex);
}

struct in_callback {
	fut_executor *ex;
	_Atomic int shutdown_rc;
	fut_future *other; /* a task that runs on */
	_Atomic int wait_rc;
};

static void shutdown_from_callback(fut_future *f, void *ud)
{
	(void)f;
	struct in_callback *cb = ud;
	atomic_store(&cb->shutdown_rc, fut_executor_shutdown(cb->ex, 0));
	/* Only this thread, the manager, could complete it: it hung. */
	atomic_store(&cb->wait_rc, fut_result(cb->other, FUT_FOREVER, NULL));
}

static void shutdown_with_wait_from_a_callback_is_einval(void **state)
{
	(void)state;
	fut_executor *ex = make(NULL);
	if (ex == NULL)
		return;
	struct in_callback cb = { ex, -1, NULL, -1 };
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, looping_task, NULL, 0, &f),
			 FUT_OK);
	assert_int_equal(fut_submit_bytes(ex, looping_task, NULL, 0, &cb.other),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(f, shutdown_from_callback, &cb),
			 FUT_OK);
	wait_running(f);
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_OK);
	/* The callback ran in the manager thread: it would wait for itself. */
	for (int i = 0; i < 10000 && atomic_load(&cb.wait_rc) == -1; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&cb.wait_rc), FUT_EINVAL);
	assert_int_equal(fut_interrupt(cb.other), FUT_OK);
	assert_int_equal(fut_result(cb.other, 30, NULL), FUT_OK);
	fut_executor_free(ex);
	assert_int_equal(atomic_load(&cb.shutdown_rc), FUT_EINVAL);
	fut_release(f);
	fut_release(cb.other);
}

static int init_fails_on_rank_2(void *arg)
{
	(void)arg;
	return world_rank() == 2 ? 1 : 0;
}

static void a_failing_initializer_breaks_every_rank(void **state)
{
	(void)state;
	fut_executor *ex = (fut_executor *)(uintptr_t)1;
	assert_int_equal(
		fut_mpi_executor_new(
			&ex,
			&(fut_mpi_opts){ .initializer = init_fails_on_rank_2 }),
		FUT_EBROKEN);
	assert_null(ex);
}

static void a_malformed_message_breaks_the_executor(void **state)
{
	(void)state;
	/* Rank 1's first frame goes with a bad magic. */
	if (world_rank() == 1)
		fut__mpi_test_corrupt_next_send();
	fut_executor *ex = make(&(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL)
		return;
	enum {
		N = 8
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		assert_int_equal(fut_submit_bytes(ex, marking_task, "/dev/null",
						  9, &fs[i]),
				 FUT_OK);
	assert_int_equal(fut_wait(fs, N, FUT_ALL_COMPLETED, 30), FUT_OK);
	int broken = 0;
	for (int i = 0; i < N; i++) {
		int rc = fut_result(fs[i], 0, NULL);
		assert_true(rc == FUT_OK || rc == FUT_EBROKEN);
		if (rc == FUT_EBROKEN) {
			broken++;
			assert_non_null(
				strstr(fut_error_message(fs[i]), "rank 1"));
		}
		fut_release(fs[i]);
	}
	assert_true(broken >= 1);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, nothing_task, NULL, 0, &f),
			 FUT_EBROKEN);
	fut_executor_free(ex);
}

static void bad_options_are_einval_on_every_rank(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	MPI_Comm null = MPI_COMM_NULL;
	const fut_mpi_opts bad[] = {
		{ .root = 3 },
		{ .root = -1 },
		{ .comm = &null },
		{ .flags = 0x80 },
		{ .threads_per_rank = FUT_MAX_WORKERS + 1 },
		{ .prefetch = FUT_MAX_WORKERS + 1 },
		{ .max_workers = FUT_MAX_WORKERS + 1, .flags = FUT_MPI_SPAWN },
		{ .poll_spin = -1 },
		{ .poll_backoff = 0.0 / 0.0 },
		{ .task_timeout = 1 },
		{ .max_tasks_per_child = 1 },
		{ .command = "x" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(fut_mpi_executor_new(&ex, &bad[i]),
				 FUT_EINVAL);
		assert_null(ex);
	}
	assert_int_equal(fut_mpi_executor_new(NULL, NULL), FUT_EINVAL);
	assert_int_equal(fut_mpi_register(NULL, nothing_task), FUT_EINVAL);
	assert_int_equal(fut_mpi_register("x", NULL), FUT_EINVAL);
	assert_int_equal(fut_mpi_register("", nothing_task), FUT_EINVAL);
	assert_int_equal(fut_mpi_register("@auto", nothing_task), FUT_EINVAL);
	assert_int_equal(fut_mpi_register("sp ace", nothing_task), FUT_EINVAL);
	char longname[66];
	memset(longname, 'a', 65);
	longname[65] = '\0';
	assert_int_equal(fut_mpi_register(longname, nothing_task), FUT_EINVAL);
	longname[64] = '\0';
	assert_int_equal(fut_mpi_register(longname, nothing_task), FUT_OK);
	assert_int_equal(fut_mpi_register(longname, nothing_task), FUT_OK);
	assert_int_equal(fut_mpi_register(longname, echo_task), FUT_ESTATE);
	assert_int_equal(fut_mpi_info(NULL, NULL, NULL), FUT_EINVAL);
	fut_executor *tp;
	assert_int_equal(fut_thread_pool_new(&tp, NULL), FUT_OK);
	assert_int_equal(fut_mpi_info(tp, NULL, NULL), FUT_EINVAL);
	/* On failure the out-pointers read 0, as every out-pointer of the
	 * API does (they kept what the caller had left there). */
	int servers = 7, rank = 7;
	assert_int_equal(fut_mpi_info(tp, &servers, &rank), FUT_EINVAL);
	assert_int_equal(servers, 0);
	assert_int_equal(rank, 0);
	servers = rank = 7;
	assert_int_equal(fut_mpi_info(NULL, &servers, &rank), FUT_EINVAL);
	assert_int_equal(servers, 0);
	assert_int_equal(rank, 0);
	fut_executor_free(tp);
}

/* ------------------------------------------------------------------ */
/* FUT_MPI_ISOLATE: the tasks run in a process pool on each server     */

static void abort_task(fut_task *t)
{
	(void)t;
	abort();
}

static void exit3_task(fut_task *t)
{
	(void)t;
	_exit(3);
}

/* Sleeps 20 s, ignoring any interrupt. */
static void deaf_task(fut_task *t)
{
	(void)t;
	struct timespec ts = { 20, 0 };
	nanosleep(&ts, NULL);
	fut_task_return_bytes(t, "slept", 5);
}

static void pid_task(fut_task *t)
{
	int pid = (int)getpid();
	fut_task_return_bytes(t, &pid, sizeof(pid));
}

static void check_crash(fut_future *f, int sig, int code)
{
	int rc = fut_result(f, 30, NULL);
	if (rc != FUT_ECRASHED)
		fprintf(stderr, "check_crash: %s: %s\n", fut_strerror(rc),
			fut_error_message(f));
	assert_int_equal(rc, FUT_ECRASHED);
	int status = -1;
	assert_int_equal(fut_crash_status(f, &status), FUT_OK);
	if (sig != 0) {
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), sig);
	} else {
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), code);
	}
	assert_non_null(fut_error_message(f));
}

static void isolate_crashes_fail_only_their_task(void **state)
{
	(void)state;
	fut_executor *ex = make(
		&(fut_mpi_opts){ .flags = FUT_MPI_ISOLATE, .prefetch = 4 });
	if (ex == NULL)
		return;
	fut_future *crash[3], *ok[8];
	fut_fn crashers[3] = { segv_task, abort_task, exit3_task };
	for (int i = 0; i < 8; i++) {
		int x = i;
		if (i < 3)
			assert_int_equal(fut_submit_bytes(ex, crashers[i], NULL,
							  0, &crash[i]),
					 FUT_OK);
		assert_int_equal(fut_submit_bytes(ex, square_task, &x,
						  sizeof(x), &ok[i]),
				 FUT_OK);
	}
	check_crash(crash[0], SIGSEGV, 0);
	check_crash(crash[1], SIGABRT, 0);
	check_crash(crash[2], 0, 3);
	for (int i = 0; i < 8; i++) {
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(ok[i], 30, &out, &len),
				 FUT_OK);
		assert_int_equal(len, sizeof(int));
		assert_int_equal(*(const int *)out, i * i);
		fut_release(ok[i]);
	}
	for (int i = 0; i < 3; i++)
		fut_release(crash[i]);
	/* The ranks serve on: results, failures, submit_many. */
	check_echo(ex, 0);
	check_echo(ex, 16);
	check_echo(ex, (1u << 20) + 3);
	check_failures(ex);
	check_many(ex, 500);
	fut_executor_free(ex);
}

static void isolate_timeout_and_max_tasks_per_child(void **state)
{
	(void)state;
	fut_executor *ex = make(&(fut_mpi_opts){ .flags = FUT_MPI_ISOLATE,
						 .task_timeout = 0.5,
						 .max_tasks_per_child = 1 });
	if (ex == NULL)
		return;
	/* task_timeout: FUT_EDEADLINE, and the rank serves on. */
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, deaf_task, NULL, 0, &f), FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_EDEADLINE);
	fut_release(f);
	/* max_tasks_per_child 1: every task in a new worker process. */
	enum {
		N = 6
	};
	int pids[N];
	for (int i = 0; i < N; i++) {
		assert_int_equal(fut_submit_bytes(ex, pid_task, NULL, 0, &f),
				 FUT_OK);
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(f, 30, &out, &len), FUT_OK);
		assert_int_equal(len, sizeof(int));
		memcpy(&pids[i], out, sizeof(int));
		assert_int_not_equal(pids[i], (int)getpid());
		for (int k = 0; k < i; k++)
			assert_int_not_equal(pids[k], pids[i]);
		fut_release(f);
	}
	fut_executor_free(ex);
}

/* An interrupt kills a task that ignores it: FUT_ECANCELLED, and the next
 * task succeeds; shutdown(INTERRUPT) too. */
static void isolate_interrupt_kills_a_deaf_task(void **state)
{
	(void)state;
	fut_executor *ex = make(&(fut_mpi_opts){ .flags = FUT_MPI_ISOLATE });
	if (ex == NULL)
		return;
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, deaf_task, NULL, 0, &f), FUT_OK);
	wait_running(f);
	/* Running on the rank is not yet running in its pool: give the
	 * worker time to take it, so that the kill is what is tested. */
	struct timespec ts = { 0, 300 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_ECANCELLED);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Killed, not slept out (20 s). */
	assert_true(t1.tv_sec - t0.tv_sec < 10);
	fut_release(f);
	for (int i = 0; i < 4; i++) {
		int x = i + 3;
		assert_int_equal(fut_submit_bytes(ex, square_task, &x,
						  sizeof(x), &f),
				 FUT_OK);
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(f, 30, &out, &len), FUT_OK);
		assert_int_equal(*(const int *)out, x * x);
		fut_release(f);
	}
	/* Shutdown with INTERRUPT kills what runs. */
	assert_int_equal(fut_submit_bytes(ex, deaf_task, NULL, 0, &f), FUT_OK);
	wait_running(f);
	nanosleep(&ts, NULL);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT),
			 FUT_OK);
	assert_int_equal(fut_result(f, 0, NULL), FUT_ECANCELLED);
	fut_release(f);
	fut_executor_free(ex);
}

int main(int argc, char **argv)
{
	init_mpi(&argc, &argv);
	int size = 0;
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size != 3) {
		fprintf(stderr, "test_mpi: run under mpirun -np 3\n");
		MPI_Finalize();
		return 1;
	}
	fut__mpi_set_message_limit(1u << 20);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bad_options_are_einval_on_every_rank),
		cmocka_unit_test(results_come_back_byte_exact_split_or_not),
		cmocka_unit_test(tasks_run_on_server_ranks_and_many_submit),
		cmocka_unit_test(failures_cross_ranks),
		cmocka_unit_test(a_long_task_result_goes_as_it_ends),
		cmocka_unit_test(a_registered_name_resolves),
		cmocka_unit_test(queued_tasks_cancel_and_never_run),
		cmocka_unit_test(interrupt_reaches_a_running_task),
		cmocka_unit_test(interrupt_reaches_a_task_on_a_task_thread),
		cmocka_unit_test(shutdown_flags_behave_as_on_the_process_pool),
		cmocka_unit_test(wait_mixes_executors),
		cmocka_unit_test(threads_submit_while_the_app_uses_mpi),
		cmocka_unit_test(shutdown_with_wait_from_a_callback_is_einval),
		cmocka_unit_test(a_failing_initializer_breaks_every_rank),
		cmocka_unit_test(a_malformed_message_breaks_the_executor),
		cmocka_unit_test(isolate_crashes_fail_only_their_task),
		cmocka_unit_test(isolate_timeout_and_max_tasks_per_child),
		cmocka_unit_test(isolate_interrupt_kills_a_deaf_task),
	};
	int failed = cmocka_run_group_tests_name(
		world_rank() == 0 ? "mpi client" : "mpi server", tests, NULL,
		NULL);
	/* Every executor freed and every future released: nothing of the
	 * library's lives on (LSan cannot tell in an MPI program). */
	if (fut__mpi_live_objects() != 0) {
		fprintf(stderr, "test_mpi: rank %d: %zu objects leaked\n",
			world_rank(), fut__mpi_live_objects());
		failed = 1;
	}
	MPI_Finalize();
	return failed ? 1 : 0;
}
