/*
 * test_mpi_spawn.c: FUT_MPI_SPAWN, run as a singleton (no mpirun;
 * tests/mpi/run.sh).  The program spawns copies of itself (the default
 * command, /proc/self/exe): a copy finds MPI_Comm_get_parent set, serves
 * inside its own fut_mpi_executor_new() call (with the flags its argv
 * names) and exits.  Where the MPI cannot spawn, every test is skipped
 * with a message.
 */
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpi_test.h"

static bool spawn_unsupported;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The spawning side: an executor over n spawned servers, or NULL (and
 * the test skipped) where the MPI cannot spawn. */
static fut_executor *spawn(size_t n, unsigned flags, char *const *argv)
{
	if (spawn_unsupported)
		skip();
	fut_executor *ex = NULL;
	double t = now();
	int rc = fut_mpi_executor_new(
		&ex, &(fut_mpi_opts){ .flags = FUT_MPI_SPAWN | flags,
				      .max_workers = n,
				      .argv = argv });
	double took = now() - t;
	if (rc == FUT_ENOTSUP) {
		spawn_unsupported = true;
		printf("test_mpi_spawn: skipped: this MPI cannot spawn\n");
		skip();
	}
	assert_int_equal(rc, FUT_OK);
	assert_non_null(ex);
	printf("spawn start-up: %zu servers in %.3f s\n", n, took);
	int servers = 0, rank = -1;
	assert_int_equal(fut_mpi_info(ex, &servers, &rank), FUT_OK);
	assert_int_equal(servers, (int)n);
	assert_int_equal(rank, 0);
	return ex;
}

static void a_singleton_spawns_two_servers_results_and_failures(void **state)
{
	(void)state;
	fut_executor *ex = spawn(2, 0, NULL);
	check_echo(ex, 0);
	check_echo(ex, 16);
	check_echo(ex, 1 << 20);
	/* Over the 1 MiB message limit main() set on both sides: parts
	 * (64 MiB + 1 runs in test_mpi; 4 MiB + 1 keeps TSan quick). */
	check_echo(ex, (4u << 20) + 1);
	check_both_servers_work(ex);
	check_failures(ex);
	fut_executor_free(ex);
}

static void spawned_isolated_servers_survive_a_crash(void **state)
{
	(void)state;
	static char isolate[] = "isolate";
	char *const argv[] = { isolate, NULL };
	fut_executor *ex = spawn(1, FUT_MPI_ISOLATE, argv);
	fut_future *f;
	assert_int_equal(fut_submit_bytes(ex, segv_task, NULL, 0, &f), FUT_OK);
	assert_int_equal(fut_result(f, 30, NULL), FUT_ECRASHED);
	int status = 0;
	assert_int_equal(fut_crash_status(f, &status), FUT_OK);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
	fut_release(f);
	check_echo(ex, 16);
	fut_executor_free(ex);
}

static void a_command_that_does_not_exist_fails_at_once(void **state)
{
	(void)state;
	if (spawn_unsupported)
		skip();
	const char *bad[] = { "/nonexistent/fut-mpi-server",
			      "fut-mpi-no-such-command", "/etc/passwd" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fut_executor *ex = (fut_executor *)(uintptr_t)1;
		double t = now();
		int rc = fut_mpi_executor_new(
			&ex, &(fut_mpi_opts){ .flags = FUT_MPI_SPAWN,
					      .max_workers = 2,
					      .command = bad[i] });
		assert_true(rc == FUT_EAGAIN || rc == FUT_ENOTSUP);
		assert_null(ex);
		assert_true(now() - t < 10);
	}
}

static void spawn_options_are_checked(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	MPI_Comm world = MPI_COMM_WORLD;
	assert_int_equal(fut_mpi_executor_new(
				 &ex, &(fut_mpi_opts){ .flags = FUT_MPI_SPAWN,
						       .comm = &world }),
			 FUT_EINVAL);
	assert_int_equal(fut_mpi_executor_new(
				 &ex, &(fut_mpi_opts){ .flags = FUT_MPI_SPAWN,
						       .root = 1 }),
			 FUT_EINVAL);
	assert_int_equal(
		fut_mpi_executor_new(
			&ex,
			&(fut_mpi_opts){ .flags = FUT_MPI_SPAWN,
					 .max_workers = FUT_MAX_WORKERS + 1 }),
		FUT_EINVAL);
	assert_null(ex);
}

int main(int argc, char **argv)
{
	init_mpi(&argc, &argv);
	fut__mpi_set_message_limit(1u << 20);
	MPI_Comm parent = MPI_COMM_NULL;
	MPI_Comm_get_parent(&parent);
	if (parent != MPI_COMM_NULL) {
		/* A spawned copy: serve, with the flags the parent chose. */
		unsigned flags = FUT_MPI_SPAWN;
		if (argc > 1 && strcmp(argv[1], "isolate") == 0)
			flags |= FUT_MPI_ISOLATE;
		fut_executor *ex = (fut_executor *)(uintptr_t)1;
		int rc = fut_mpi_executor_new(
			&ex, &(fut_mpi_opts){ .flags = flags });
		if (rc != FUT_OK || ex != NULL)
			fprintf(stderr, "test_mpi_spawn: a server: %s\n",
				fut_strerror(rc));
		size_t live = fut__mpi_live_objects();
		MPI_Finalize();
		return rc == FUT_OK && ex == NULL && live == 0 ? 0 : 1;
	}
	int size = 0;
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size != 1) {
		fprintf(stderr, "test_mpi_spawn: run as a singleton\n");
		MPI_Finalize();
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(spawn_options_are_checked),
		cmocka_unit_test(
			a_singleton_spawns_two_servers_results_and_failures),
		cmocka_unit_test(spawned_isolated_servers_survive_a_crash),
		cmocka_unit_test(a_command_that_does_not_exist_fails_at_once),
	};
	int failed =
		cmocka_run_group_tests_name("mpi spawn", tests, NULL, NULL);
	if (fut__mpi_live_objects() != 0) {
		fprintf(stderr, "test_mpi_spawn: %zu objects leaked\n",
			fut__mpi_live_objects());
		failed = 1;
	}
	MPI_Finalize();
	return failed ? 1 : 0;
}
