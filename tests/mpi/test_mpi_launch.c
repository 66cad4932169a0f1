/*
 * test_mpi_launch.c: the MPI tests that need a launch of their own
 * (tests/mpi/run.sh runs each mode; they are not cmocka tests, because
 * what they check is how the process or the job ends):
 *   uninit       fut_mpi_executor_new before MPI_Init: FUT_ENOTSUP
 *   single       a thread level below MULTIPLE: FUT_ENOTSUP
 *   np1          a 1-rank job: world mode is FUT_EINVAL, and so is every
 *                bad option
 *   nofree       the client never frees its executor: MPI_Finalize still
 *                ends (the MPI_COMM_SELF attribute hook), every rank exits 0
 *   die          a task raise(SIGKILL)s its server: the job aborts (run.sh
 *                checks mpirun's status and that nothing of it remains)
 *   mpmd         the client of `-np 1 ./test_mpi_launch mpmd : -np 2
 *                ./test_mpi_peer`: a registered name runs on the peer
 *                program; an unregistered function is FUT_ENOTSUP at submit
 *   giveup       a server gives up serving (a malformed message, as when
 *                it runs out of memory): the task it held ends
 *                FUT_EBROKEN, free returns, every rank ends (before
 *                2026-12-06 the future never completed and the client
 *                hung in free)
 *   stopnomem    the manager cannot build a STOP at shutdown: it tries
 *                again, and shutdown returns (it hung)
 *   intnomem     the manager cannot build an interrupt's record: it tries
 *                again, and the running task stops (it ran on)
 *   cbfree       shutdown(CANCEL_PENDING) runs a cancelled task's done
 *                callback, which frees the executor (ASan saw shutdown
 *                read the freed client)
 *   bignomem     a server runs out of memory while a task runs there, and
 *                a large message goes to it after that: free returns (the
 *                message was never received, its send never completed,
 *                and free hung)
 *   drainnomem   bignomem, but the server's allocations keep failing,
 *                100 in a row: its drain finds no memory for the large
 *                message either, and must try again (it gave up: the
 *                message was never received, and free hung)
 *   cbfinal      never freed; a done callback frees the executor while
 *                main, which has the result, is in MPI_Finalize (the
 *                callback deleted the hook's attribute inside finalize:
 *                MPICH aborted on a keyval released twice)
 *   intonce      shutdown(INTERRUPT) interrupts what runs then, once: a
 *                task sent after it runs on when another task is
 *                interrupted (the flag stayed, and it stopped too)
 *   dlopen PATH  two executors one after the other; the second's
 *                servers dlopen PATH (mpi_plugin.c) in their initializer,
 *                root before it: a function of that module runs (the
 *                servers sent the module list read when the first was
 *                made, and before their initializer ran, which lacked it:
 *                FUT_ENOTSUP at submit)
 *   bigslow      a 16 MiB echo with poll_backoff 50 ms takes under 5 s
 *                (a large send moves only while its sender calls MPI: each
 *                side napped between its MPI_Tests, ~80 KB a nap, and it
 *                took ~20 s)
 * The last eight were found by review (2026-12-06); run.sh's timeout ends
 * a hang as a failure.
 */
#include <dlfcn.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "mpi_test.h"

/* fut_mpi_executor_new(opts), which must succeed: the executor on root,
 * NULL on a server once it has served. */
static fut_executor *client(const fut_mpi_opts *opts)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, opts) == FUT_OK);
	return ex;
}

static void kill_self_task(fut_task *t)
{
	(void)t;
	raise(SIGKILL);
}

static int mode_uninit(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_ENOTSUP);
	CHECK(ex == NULL);
	printf("uninit: ok\n");
	return 0;
}

static int mode_single(int *argc, char ***argv)
{
	int provided = 0;
	CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SINGLE, &provided) ==
	      MPI_SUCCESS);
	if (provided < MPI_THREAD_MULTIPLE) {
		fut_executor *ex = NULL;
		CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_ENOTSUP);
		CHECK(ex == NULL);
		printf("single: ok\n");
	} else {
		printf("single: the MPI gave MULTIPLE anyway; nothing to check\n");
	}
	MPI_Finalize();
	return 0;
}

static int mode_np1(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_EINVAL);
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .root = 1 }) ==
	      FUT_EINVAL);
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .flags = 4 }) ==
	      FUT_EINVAL);
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .poll_spin = -1 }) ==
	      FUT_EINVAL);
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .task_timeout = 1 }) ==
	      FUT_EINVAL);
	CHECK(fut_mpi_executor_new(
		      &ex, &(fut_mpi_opts){ .argv = (char *const[]){
						    NULL } }) == FUT_EINVAL);
	CHECK(ex == NULL);
	MPI_Comm self = MPI_COMM_SELF;
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .comm = &self }) ==
	      FUT_EINVAL);
	return 0;
}

static int mode_nofree(void)
{
	fut_executor *ex = client(NULL);
	if (ex == NULL)
		return 0;
	int x = 9;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) == FUT_OK);
	const void *out;
	size_t len;
	CHECK(fut_result_bytes(f, 30, &out, &len) == FUT_OK);
	CHECK(len == sizeof(int) && *(const int *)out == 81);
	fut_release(f);
	/* No fut_executor_free: MPI_Finalize shuts it down. */
	return 0;
}

static int mode_die(void)
{
	fut_executor *ex = client(NULL);
	if (ex == NULL)
		return 0;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, kill_self_task, NULL, 0, &f) == FUT_OK);
	/* The launcher aborts the job before this returns. */
	(void)fut_result(f, 60, NULL);
	return 0;
}

static int mode_mpmd(void)
{
	CHECK(fut_mpi_register("mpmd.square", square_task) == FUT_OK);
	fut_executor *ex = client(NULL);
	CHECK(ex != NULL);
	int x = 12;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) == FUT_OK);
	const void *out;
	size_t len;
	CHECK(fut_result_bytes(f, 30, &out, &len) == FUT_OK);
	CHECK(len == sizeof(int) && *(const int *)out == 144);
	fut_release(f);
	/* echo_task is this build's, unregistered: the servers, another
	 * program, lack its module. */
	f = (fut_future *)(uintptr_t)1;
	CHECK(fut_submit_bytes(ex, echo_task, "x", 1, &f) == FUT_ENOTSUP);
	CHECK(f == NULL);
	fut_executor_free(ex);
	return 0;
}

static int mode_giveup(void)
{
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL) { /* a server: the one that gave up says so */
		CHECK(rc == FUT_OK || rc == FUT_EBROKEN);
		return 0;
	}
	/* The task's message reaches its server malformed: the server
	 * gives up serving (as it does when out of memory). */
	fut__mpi_test_corrupt_next_send();
	fut_future *f;
	int x = 3;
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_EBROKEN);
	CHECK(strstr(fut_error_message(f), "stopped serving") != NULL);
	fut_release(f);
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) ==
	      FUT_EBROKEN);
	fut_executor_free(ex);
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static int mode_stopnomem(void)
{
	fut_executor *ex = client(NULL);
	if (ex == NULL)
		return 0;
	sleep_ms(200); /* the manager idles: its next allocation is a STOP */
	(void)fut__alloc_fail_nth(1);
	CHECK(fut_executor_shutdown(ex, 0) == FUT_OK);
	(void)fut__alloc_fail_nth(0);
	fut_executor_free(ex);
	return 0;
}

/* Loops until interrupted, 10 s at most. */
static void looping_task(fut_task *t)
{
	for (int i = 0; i < 1000 && !fut_task_cancelled(t); i++)
		sleep_ms(10);
	if (fut_task_cancelled(t))
		fut_task_return_bytes(t, "stopped", 7);
}

static int mode_intnomem(void)
{
	fut_executor *ex = client(NULL);
	if (ex == NULL)
		return 0;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, looping_task, NULL, 0, &f) == FUT_OK);
	for (int i = 0; i < 1000 && !fut_running(f); i++)
		sleep_ms(10);
	CHECK(fut_running(f));
	sleep_ms(200); /* the manager idles: its next allocation is the
			  interrupt's record */
	(void)fut__alloc_fail_nth(1);
	CHECK(fut_interrupt(f) == FUT_OK);
	const void *out = NULL;
	size_t len = 0;
	CHECK(fut_result_bytes(f, 30, &out, &len) == FUT_OK);
	(void)fut__alloc_fail_nth(0);
	CHECK(len == 7 && memcmp(out, "stopped", 7) == 0);
	fut_release(f);
	fut_executor_free(ex);
	return 0;
}

/* Whether f ended with looping_task's "stopped". */
static bool stopped(fut_future *f)
{
	const void *out = NULL;
	size_t len = 0;
	return fut_result_bytes(f, 30, &out, &len) == FUT_OK && len == 7 &&
	       memcmp(out, "stopped", 7) == 0;
}

static int mode_intonce(void)
{
	fut_executor *ex = client(&(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL)
		return 0;
	enum {
		N = 4
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		CHECK(fut_submit_bytes(ex, looping_task, NULL, 0, &fs[i]) ==
		      FUT_OK);
	for (int i = 0; i < 1000 && !(fut_running(fs[0]) && fut_running(fs[1]));
	     i++)
		sleep_ms(10);
	/* Two run (prefetch 1, two servers); two wait, and are sent once
	 * the first two stop. */
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT |
						FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	CHECK(stopped(fs[0]) && stopped(fs[1]));
	for (int i = 0; i < 1000 && !(fut_running(fs[2]) && fut_running(fs[3]));
	     i++)
		sleep_ms(10);
	CHECK(fut_interrupt(fs[2]) == FUT_OK);
	CHECK(stopped(fs[2]));
	sleep_ms(300);
	CHECK(!fut_done(fs[3])); /* not interrupted: it loops on */
	CHECK(fut_interrupt(fs[3]) == FUT_OK);
	CHECK(stopped(fs[3]));
	for (int i = 0; i < N; i++)
		fut_release(fs[i]);
	fut_executor_free(ex);
	return 0;
}

static void slow_task(fut_task *t)
{
	(void)t;
	sleep_ms(100);
}

static fut_executor *cb_ex;

static void free_executor_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	fut_executor_free(cb_ex);
}

static int mode_cbfree(void)
{
	cb_ex = client(&(fut_mpi_opts){ .prefetch = 1 });
	if (cb_ex == NULL)
		return 0;
	enum {
		N = 6
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		CHECK(fut_submit_bytes(cb_ex, slow_task, NULL, 0, &fs[i]) ==
		      FUT_OK);
	sleep_ms(20); /* two run (prefetch 1, two servers), four queued */
	CHECK(fut_add_done_callback(fs[N - 1], free_executor_cb, NULL) ==
	      FUT_OK);
	for (int i = 0; i < N; i++)
		fut_release(fs[i]);
	CHECK(fut_executor_shutdown(cb_ex, FUT_SHUTDOWN_CANCEL_PENDING) ==
	      FUT_OK);
	return 0;
}

/* Runs on a server: its next allocations fail, as many in a row as the
 * long it is given (none: one): the first is the NAME record of the next
 * new function (it gives up serving).  It runs on for 1 s. */
static void arm_nomem_task(fut_task *t)
{
	size_t len;
	const long *run = fut_task_input(t, &len);
	(void)fut__alloc_fail_run(1, len == sizeof(*run) ? *run : 1);
	sleep_ms(1000);
	fut_task_return_bytes(t, "armed", 5);
}

static void other_task(fut_task *t)
{
	fut_task_return_bytes(t, "other", 5);
}

/* bignomem and drainnomem: run allocations in a row fail on the server
 * (1, or enough for its drain to meet them too). */
static int mode_bignomem(long run)
{
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 4 });
	if (ex == NULL) { /* a server: the one that gave up says so */
		(void)fut__alloc_fail_nth(0);
		CHECK(rc == FUT_OK || rc == FUT_ENOMEM);
		return 0;
	}
	enum {
		BIG = 1 << 20 /* over every transport's eager limit */
	};
	char *in = calloc(1, BIG);
	CHECK(in != NULL);
	fut_future *f, *fs[3];
	/* The rank that answers is the hot one: the next tasks go there. */
	CHECK(fut_submit_bytes(ex, echo_task, "x", 1, &f) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
	CHECK(fut_submit_bytes(ex, arm_nomem_task, &run, sizeof(run), &fs[0]) ==
	      FUT_OK);
	sleep_ms(200);
	CHECK(fut_submit_bytes(ex, other_task, NULL, 0, &fs[1]) == FUT_OK);
	sleep_ms(100);
	rc = fut_submit_bytes(ex, echo_task, in, BIG, &fs[2]);
	CHECK(rc == FUT_OK || rc == FUT_EBROKEN);
	for (int i = 0; i < (rc == FUT_OK ? 3 : 2); i++) {
		(void)fut_result(fs[i], 30, NULL);
		CHECK(fut_done(fs[i]));
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	free(in);
	return 0;
}

static void free_late_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	sleep_ms(200); /* main is in MPI_Finalize by now */
	fut_executor_free(cb_ex);
}

static int mode_cbfinal(void)
{
	cb_ex = client(NULL);
	if (cb_ex == NULL)
		return 0;
	square_with_callback(cb_ex, free_late_cb);
	return 0; /* MPI_Finalize, while the callback frees */
}

static int load_module(void *path)
{
	return dlopen(path, RTLD_NOW) != NULL ? 0 : -1;
}

static int mode_dlopen(const char *path)
{
	fut_executor *ex = client(NULL);
	if (ex != NULL) {
		int x = 3;
		fut_future *f;
		CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) ==
		      FUT_OK);
		CHECK(fut_result(f, 30, NULL) == FUT_OK);
		fut_release(f);
		fut_executor_free(ex);
	}
	/* Loaded after the first executor read the module table: by root
	 * now, by the servers in their initializer. */
	if (world_rank() == 0)
		CHECK(load_module((void *)path) == 0);
	ex = client(&(fut_mpi_opts){ .initializer = load_module,
				     .initarg = (void *)path });
	if (ex == NULL)
		return 0;
	fut_fn fn = (fut_fn)dlsym(dlopen(path, RTLD_NOW), "mpi_plugin_task");
	CHECK(fn != NULL);
	fut_future *f;
	CHECK(fut_submit_bytes(ex, fn, "x", 1, &f) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
	fut_executor_free(ex);
	return 0;
}

static int mode_bigslow(void)
{
	fut_executor *ex = client(&(fut_mpi_opts){ .poll_backoff = 0.05 });
	if (ex == NULL)
		return 0;
	size_t n = (size_t)16 << 20;
	unsigned char *in = malloc(n);
	CHECK(in != NULL);
	for (size_t i = 0; i < n; i++)
		in[i] = (unsigned char)(i * 7);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fut_future *f;
	CHECK(fut_submit_bytes(ex, echo_task, in, n, &f) == FUT_OK);
	const void *out;
	size_t len;
	CHECK(fut_result_bytes(f, 50, &out, &len) == FUT_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(len == n && memcmp(out, in, n) == 0);
	double took = (double)(t1.tv_sec - t0.tv_sec) +
		      (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	printf("bigslow: 16 MiB there and back in %.2f s\n", took);
	CHECK(took < 5);
	fut_release(f);
	fut_executor_free(ex);
	free(in);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (strcmp(mode, "uninit") == 0)
		return mode_uninit();
	if (strcmp(mode, "single") == 0)
		return mode_single(&argc, &argv);
	init_mpi(&argc, &argv);
	int rc;
	if (strcmp(mode, "np1") == 0)
		rc = mode_np1();
	else if (strcmp(mode, "nofree") == 0)
		rc = mode_nofree();
	else if (strcmp(mode, "die") == 0)
		rc = mode_die();
	else if (strcmp(mode, "mpmd") == 0)
		rc = mode_mpmd();
	else if (strcmp(mode, "giveup") == 0)
		rc = mode_giveup();
	else if (strcmp(mode, "stopnomem") == 0)
		rc = mode_stopnomem();
	else if (strcmp(mode, "cbfree") == 0)
		rc = mode_cbfree();
	else if (strcmp(mode, "intnomem") == 0)
		rc = mode_intnomem();
	else if (strcmp(mode, "bignomem") == 0)
		rc = mode_bignomem(1);
	else if (strcmp(mode, "drainnomem") == 0)
		rc = mode_bignomem(100);
	else if (strcmp(mode, "cbfinal") == 0)
		rc = mode_cbfinal();
	else if (strcmp(mode, "intonce") == 0)
		rc = mode_intonce();
	else if (strcmp(mode, "bigslow") == 0)
		rc = mode_bigslow();
	else if (strcmp(mode, "dlopen") == 0 && argc > 2)
		rc = mode_dlopen(argv[2]);
	else {
		fprintf(stderr,
			"usage: %s uninit|single|np1|nofree|die|mpmd|giveup|"
			"stopnomem|cbfree|intnomem|bignomem|drainnomem|cbfinal|"
			"intonce|dlopen PATH|bigslow\n",
			argv[0]);
		rc = 2;
	}
	MPI_Finalize();
	if (rc == 0)
		printf("%s: ok\n", mode);
	return rc;
}
