/*
 * test_mpi_nomem.c: the client's and the servers' out-of-memory paths
 * past the handshake (tests/mpi/run.sh runs each mode under mpirun -np 3;
 * not cmocka tests: what they check is how every rank's call ends).
 * Found by review (2026-12-07):
 *   namenomem    the manager's next allocation, the growth of a frame that
 *                already holds a NAME record, fails for the task that
 *                follows it, the last one in flight: its future ends
 *                FUT_ENOMEM, and from then on the manager makes no MPI
 *                call (the program may call MPI_Finalize).  Before, the
 *                frame of the NAME alone went out after that future
 *                completed: other threads' MPI calls as MPI_Finalize
 *                began (counted through the profiling interface), what
 *                made MPICH abort in finalize (docs/reliability.md).
 *   namestop     the same after shutdown(NOWAIT): the manager also sent
 *                the STOPs and probed for the BYEs after it.
 *   recvnomem    root has no memory to receive a message of results, 3
 *                times in a row: the manager tries again (the message
 *                waits in MPI), and the future gets its result.  Before,
 *                the executor broke, "rank 0: an MPI receive failed".
 *   srvnomem     a server out of memory for a task record, for a name,
 *                and to receive a message (each in turn, on a new
 *                executor): it gives up serving and returns FUT_ENOMEM;
 *                the task it ran finishes with its result, the one it
 *                could not take ends FUT_EBROKEN, "rank N stopped
 *                serving"; the executor is broken (docs/mpi.md), the
 *                other server returns FUT_OK, free returns, MPI_Finalize
 *                completes.  Then once more with the running task one
 *                that ends only when interrupted: the server interrupts
 *                it as it gives up (it ran to its end before 2026-12-07).
 *   nostandby    rank 1 starts no thread beside its loop (a test hook,
 *                as if pthread_create failed; threads_per_rank 1: the
 *                standby): it gives up serving at once and returns
 *                FUT_EAGAIN, the executor is broken ("rank 1 stopped
 *                serving"), and no future outlives an interrupt by a
 *                second.  Before, the rank served alone, and a task
 *                running there never saw its interrupt (it ran on to
 *                its end, 3 s), nothing reading the client's messages.
 *   gathernomem  a result in several messages (a server's message limit
 *                100 bytes, a test hook), and no memory on root to gather
 *                it: that future ends FUT_ENOMEM, and the executor serves
 *                on.  Before, it broke: "rank N sent a malformed message:
 *                out of memory".
 *   emitnomem    a server's copy of a task's 300 KiB result finds no
 *                memory: fut_task_return_bytes returns FUT_ENOMEM and
 *                the task is not settled (its fut_task_fail, code 7,
 *                reaches root).  Before, it returned FUT_OK, settled, and
 *                the future ended FUT_ENOMEM whatever the task did next.
 *   holdnomem    (fourteenth session) the last future's done callback
 *                frees the executor (the manager holds: STOPs at once,
 *                the BYEs wait) and the manager's next 4 allocations,
 *                the frames of both ranks' STOPs, tried once by the
 *                main loop and once by the hold, fail; every rank then
 *                calls MPI_Barrier.  Before, the hold counted its STOPs
 *                sent and never tried again: the ranks served on and
 *                the barrier hung.  (Since the fifteenth session the
 *                hold's stops are BREAKs, which take no memory.)
 * run.sh's timeout ends a hang as a failure.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "mpi_test.h"
#include "pmpi_watch.h"

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* namenomem, namestop                                                 */

static void nap_task(fut_task *t)
{
	sleep_ms(100);
	fut_task_return_bytes(t, "ok", 2);
}

enum {
	BIG_IN = 8192 /* over the frame the manager's link keeps */
};
static unsigned char big_in[BIG_IN];
static fut_executor *name_ex;
static bool name_stop;
static fut_future *_Atomic name_f;

/* On the manager, as the last job fails: from here on, every MPI call of
 * another thread counts. */
static void watch_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&watching, true);
}

/* On the manager, as the first job completes: the next job, a function
 * the rank has no name for and a larger input, then the manager's next
 * allocation fails: the frame's growth for its TASK record, after its
 * NAME record went into the frame. */
static void arm_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	fut_future *g = NULL;
	CHECK(fut_submit_bytes(name_ex, echo_task, big_in, BIG_IN, &g) ==
	      FUT_OK);
	CHECK(fut_add_done_callback(g, watch_cb, NULL) == FUT_OK);
	if (name_stop)
		CHECK(fut_executor_shutdown(name_ex, FUT_SHUTDOWN_NOWAIT) ==
		      FUT_OK);
	atomic_store(&name_f, g);
	(void)fut__alloc_fail_nth(1);
}

static int mode_namenomem(bool stop)
{
	CHECK(fut_mpi_executor_new(&name_ex, NULL) == FUT_OK);
	if (name_ex == NULL)
		return 0;
	name_stop = stop;
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(name_ex, nap_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_add_done_callback(f, arm_cb, NULL) == FUT_OK);
	fut_future *g = NULL;
	for (int i = 0; i < 3000 && (g = atomic_load(&name_f)) == NULL; i++)
		sleep_ms(10);
	CHECK(g != NULL);
	int rc = fut_result(g, 30, NULL);
	CHECK(fut__alloc_fail_nth(0) == 0); /* the failure was injected */
	fprintf(stderr, "%s: the job: %s (%s)\n",
		stop ? "namestop" : "namenomem", fut_strerror(rc),
		rc == FUT_OK ? "" : fut_error_message(g));
	CHECK(rc == FUT_ENOMEM);
	CHECK(strstr(fut_error_message(g), "out of memory") != NULL);
	CHECK(fut_result(f, 0, NULL) == FUT_OK);
	fut_release(f);
	fut_release(g);
	/* Never freed: MPI_Finalize ends it (docs/mpi.md, Finalize). */
	atomic_store(&watch_finalize, true);
	return 0;
}

/* ------------------------------------------------------------------ */
/* recvnomem                                                           */

/* Echoes its input after 300 ms. */
static void slow_echo_task(fut_task *t)
{
	sleep_ms(300);
	echo_task(t);
}

static int mode_recvnomem(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex == NULL)
		return 0;
	enum {
		LEN = 256 << 10 /* over the receive stage's first size */
	};
	unsigned char *in = malloc(LEN);
	CHECK(in != NULL);
	for (size_t i = 0; i < LEN; i++)
		in[i] = (unsigned char)(i * 13);
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, slow_echo_task, in, LEN, &f) == FUT_OK);
	sleep_ms(100); /* sent; the manager idles until the result */
	(void)fut__alloc_fail_run(1, 3);
	const void *out = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, 30, &out, &len);
	long left = fut__alloc_fail_nth(0);
	fprintf(stderr, "recvnomem: %s (%s)\n", fut_strerror(rc),
		rc == FUT_OK ? "" : fut_error_message(f));
	CHECK(left == 0); /* the failures were injected */
	CHECK(rc == FUT_OK);
	CHECK(len == LEN && memcmp(out, in, LEN) == 0);
	fut_release(f);
	check_echo(ex, 100); /* it serves on */
	fut_executor_free(ex);
	free(in);
	CHECK(fut__mpi_live_objects() == 0);
	return 0;
}

/* ------------------------------------------------------------------ */
/* gathernomem                                                         */

enum {
	SPLIT_LEN = 1000
};

/* On a server: its messages from now on are 100 bytes at most, and its
 * result, SPLIT_LEN bytes, comes 300 ms later. */
static void split_task(fut_task *t)
{
	fut__mpi_set_message_limit(100);
	sleep_ms(300);
	unsigned char out[SPLIT_LEN];
	memset(out, 'r', sizeof(out));
	fut_task_return_bytes(t, out, sizeof(out));
}

static int mode_gathernomem(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex == NULL)
		return 0;
	check_echo(ex, 10); /* the receive stage is made */
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, split_task, NULL, 0, &f) == FUT_OK);
	sleep_ms(100); /* sent; the manager idles until the result */
	(void)fut__alloc_fail_nth(1);
	int rc = fut_result(f, 30, NULL);
	CHECK(fut__alloc_fail_nth(0) == 0); /* the failure was injected */
	const char *msg = rc == FUT_OK ? "" : fut_error_message(f);
	fprintf(stderr, "gathernomem: %s (%s)\n", fut_strerror(rc), msg);
	CHECK(rc == FUT_ENOMEM && strstr(msg, "out of memory") != NULL);
	fut_release(f);
	/* The executor serves on, that rank's results in 100-byte parts. */
	for (int i = 0; i < 4; i++)
		check_echo(ex, SPLIT_LEN);
	fut_executor_free(ex);
	CHECK(fut__mpi_live_objects() == 0);
	return 0;
}

/* On a server: the copy of its 300 KiB result finds no memory (its next
 * allocation): then it fails, code 7, which must settle it. */
static void emit_nomem_task(fut_task *t)
{
	static unsigned char big[300 * 1024];
	(void)fut__alloc_fail_nth(1);
	int rc = fut_task_return_bytes(t, big, sizeof(big));
	(void)fut__alloc_fail_nth(0);
	if (rc != FUT_OK)
		fut_task_fail(t, 7, "return_bytes: %s", fut_strerror(rc));
}

/* emitnomem: a server's copy of a large result finds no memory: the
 * task's fut_task_return_bytes must say FUT_ENOMEM, unsettled, so that
 * it can fail instead.  Before (found by review, 2026-12-07) it returned
 * FUT_OK, settled, and the future ended FUT_ENOMEM whatever it did. */
static int mode_emitnomem(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex == NULL)
		return 0;
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, emit_nomem_task, NULL, 0, &f) == FUT_OK);
	int rc = fut_result(f, 30, NULL);
	const char *msg = rc == FUT_OK ? "" : fut_error_message(f);
	if (rc != FUT_ETASK || fut_task_code(f) != 7)
		fprintf(stderr, "emitnomem: %s (%s)\n", fut_strerror(rc), msg);
	CHECK(rc == FUT_ETASK && fut_task_code(f) == 7 &&
	      strstr(msg, "out of memory") != NULL);
	fut_release(f);
	check_echo(ex, 10); /* it serves on */
	fut_executor_free(ex);
	CHECK(fut__mpi_live_objects() == 0);
	return 0;
}

/* ------------------------------------------------------------------ */
/* srvnomem                                                            */

/* On a server: its next allocation fails; it runs on 500 ms. */
static void arm_task(fut_task *t)
{
	(void)fut__alloc_fail_nth(1);
	sleep_ms(500);
	fut_task_return_bytes(t, "armed", 5);
}

/* On a server: its next allocation fails; it runs until interrupted, 8 s
 * at most: "stopped", or "ran out". */
static void arm_loop_task(fut_task *t)
{
	(void)fut__alloc_fail_nth(1);
	for (int i = 0; i < 800 && !fut_task_cancelled(t); i++)
		sleep_ms(10);
	fut_task_return_bytes(t, fut_task_cancelled(t) ? "stopped" : "ran out",
			      7);
}

static void other_task(fut_task *t)
{
	fut_task_return_bytes(t, "other", 5);
}

enum {
	P_TASK, /* a task record (input too long for a slab block) */
	P_NAME, /* the name of a function new to the rank */
	P_RECV, /* a message over the receive stage */
	P_N
};
static const char *const path_names[P_N] = { "a task record", "a name",
					     "a receive" };

/* Ends f, which must be FUT_EBROKEN with "rank R stopped serving". */
static void check_broken(fut_future *f, int r, const char *what)
{
	int rc = fut_result(f, 30, NULL);
	const char *msg = rc == FUT_ETIMEDOUT ? "never ended" :
			  rc == FUT_OK	      ? "" :
						fut_error_message(f);
	fprintf(stderr, "srvnomem: %s: %s (%s)\n", what, fut_strerror(rc), msg);
	char want[64];
	snprintf(want, sizeof(want), "rank %d stopped serving", r);
	CHECK(rc == FUT_EBROKEN && strstr(msg, want) != NULL);
	fut_release(f);
}

/* Every rank: whether exactly one server gave up (FUT_ENOMEM) while the
 * other returned FUT_OK. */
static void one_gave_up(int rc, bool server)
{
	CHECK(!server || rc == FUT_OK || rc == FUT_ENOMEM);
	int mine[2] = { server && rc == FUT_ENOMEM, server && rc == FUT_OK };
	int all[2] = { 0, 0 };
	CHECK(MPI_Allreduce(mine, all, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD) ==
	      MPI_SUCCESS);
	if (world_rank() == 0)
		fprintf(stderr, "srvnomem: %d server(s) gave up, %d ended ok\n",
			all[0], all[1]);
	CHECK(all[0] == 1 && all[1] == 1);
}

/* A server gives up (out of memory on `path`) while a task runs there:
 * one that ends by itself (arm_task), or, `waits`, one that ends only
 * when interrupted (arm_loop_task): the server reads no INTERRUPT once it
 * gave up, so it interrupts that task itself.  Before (found by review,
 * 2026-12-07) such a task ran to its own end, "ran out" after 8 s here,
 * and one with no end kept the rank, and the client's free, for ever. */
static void server_gives_up(int path, bool waits)
{
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 4 });
	if (ex == NULL) {
		(void)fut__alloc_fail_nth(0);
		CHECK(fut__mpi_live_objects() == 0);
		one_gave_up(rc, true);
		return;
	}
	/* The rank that answers is the hot one: the next tasks go there. */
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, echo_task, "rank?", 5, &f) == FUT_OK);
	const void *out = NULL;
	size_t len = 0;
	CHECK(fut_result_bytes(f, 30, &out, &len) == FUT_OK);
	CHECK(len == sizeof(int));
	int r = *(const int *)out;
	fut_release(f);
	fut_future *armed = NULL, *hit = NULL;
	CHECK(fut_submit_bytes(ex, waits ? arm_loop_task : arm_task, NULL, 0,
			       &armed) == FUT_OK);
	sleep_ms(200); /* it runs; the standby holds the loop */
	static unsigned char in[128 << 10];
	size_t n = path == P_TASK ? 1024 : path == P_RECV ? sizeof(in) : 0;
	CHECK(fut_submit_bytes(ex, path == P_NAME ? other_task : echo_task, in,
			       n, &hit) == FUT_OK);
	check_broken(hit, r, path_names[path]);
	/* What ran there finished (interrupted, if it waited for that), and
	 * its result came before the rank's goodbye. */
	const char *want = waits ? "stopped" : "armed";
	CHECK(fut_result_bytes(armed, 30, &out, &len) == FUT_OK);
	fprintf(stderr, "srvnomem: the task running there: %.*s\n", (int)len,
		(const char *)out);
	CHECK(len == strlen(want) && memcmp(out, want, len) == 0);
	fut_release(armed);
	CHECK(fut_submit_bytes(ex, echo_task, "x", 1, &f) == FUT_EBROKEN);
	fut_executor_free(ex);
	CHECK(fut__mpi_live_objects() == 0);
	one_gave_up(rc, false);
}

static int mode_srvnomem(void)
{
	for (int path = 0; path < P_N; path++)
		server_gives_up(path, false);
	server_gives_up(P_TASK, true);
	return 0;
}

/* ------------------------------------------------------------------ */
/* nostandby                                                           */

void fut__mpi_test_fail_thread_start(void);

/* Loops until interrupted, 3 s at most: "stopped", or "ran out". */
static void looping_task(fut_task *t)
{
	for (int i = 0; i < 300 && !fut_task_cancelled(t); i++)
		sleep_ms(10);
	if (fut_task_cancelled(t))
		fut_task_return_bytes(t, "stopped", 7);
	else
		fut_task_return_bytes(t, "ran out", 7);
}

static int mode_nostandby(void)
{
	if (world_rank() == 1)
		fut__mpi_test_fail_thread_start();
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL) {
		fprintf(stderr, "nostandby: rank %d: %s\n", world_rank(),
			fut_strerror(rc));
		CHECK(rc == (world_rank() == 1 ? FUT_EAGAIN : FUT_OK));
		CHECK(fut__mpi_live_objects() == 0);
		return 0;
	}
	enum {
		N = 2 /* one a server (prefetch 1) */
	};
	fut_future *fs[N] = { NULL, NULL };
	for (int i = 0; i < N; i++) {
		rc = fut_submit_bytes(ex, looping_task, NULL, 0, &fs[i]);
		CHECK(rc == FUT_OK || rc == FUT_EBROKEN);
	}
	for (int i = 0; i < 200; i++) {
		bool all = true;
		for (int k = 0; k < N; k++)
			all &= fs[k] == NULL || fut_state(fs[k]) != FUT_PENDING;
		if (all)
			break;
		sleep_ms(10);
	}
	sleep_ms(100);
	/* Each ends within a second: the interrupt reached it, or the
	 * executor is broken (a rank without the thread beside its loop
	 * gave up serving). */
	for (int k = 0; k < N; k++)
		CHECK(fs[k] == NULL || fut_interrupt(fs[k]) == FUT_OK ||
		      fut_done(fs[k]));
	double t0 = now_s();
	int bad = 0;
	for (int k = 0; k < N; k++) {
		if (fs[k] == NULL)
			continue;
		double left = 1.0 - (now_s() - t0);
		rc = fut_result(fs[k], left > 0 ? left : 0, NULL);
		const void *out = NULL;
		size_t len = 0;
		if (rc == FUT_OK)
			CHECK(fut_result_bytes(fs[k], 0, &out, &len) == FUT_OK);
		const char *msg = rc == FUT_OK ? (const char *)out :
				  rc == FUT_ETIMEDOUT ?
						 "not in 1 s" :
						 fut_error_message(fs[k]);
		fprintf(stderr, "nostandby: task %d: %s (%.*s)\n", k,
			fut_strerror(rc), rc == FUT_OK ? (int)len : 60, msg);
		if (!(rc == FUT_OK && len == 7 &&
		      memcmp(out, "stopped", 7) == 0) &&
		    !(rc == FUT_EBROKEN &&
		      strstr(fut_error_message(fs[k]),
			     "rank 1 stopped serving") != NULL))
			bad++;
		(void)fut_result(fs[k], 30, NULL);
		fut_release(fs[k]);
	}
	fut_executor_free(ex);
	CHECK(fut__mpi_live_objects() == 0);
	return bad != 0;
}

/* ------------------------------------------------------------------ */
/* holdnomem                                                           */

/* Frees its executor, ud, from its manager's thread; the manager's next
 * 4 allocations (the STOPs' frames, 2 ranks, 2 tries) fail. */
static void free_nomem_cb(fut_future *f, void *ud)
{
	(void)f;
	CHECK(!pthread_equal(pthread_self(), main_thread));
	(void)fut__alloc_fail_run(1, 4);
	fut_executor_free(ud);
}

static int mode_holdnomem(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex != NULL)
		square_with_callback(ex, free_nomem_cb);
	/* Every rank: the servers' calls have returned. */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	/* Disarmed: since the fifteenth session a held manager stops the
	 * ranks with BREAKs, which take no memory, so the failures may go
	 * unused; the barrier must return all the same. */
	if (ex != NULL)
		(void)fut__alloc_fail_nth(0);
	return 0;
}

int main(int argc, char **argv)
{
	main_thread = pthread_self();
	init_mpi(&argc, &argv);
	int rank = world_rank();
	const char *mode = argc > 1 ? argv[1] : "";
	int rc;
	if (strcmp(mode, "namenomem") == 0)
		rc = mode_namenomem(false);
	else if (strcmp(mode, "namestop") == 0)
		rc = mode_namenomem(true);
	else if (strcmp(mode, "recvnomem") == 0)
		rc = mode_recvnomem();
	else if (strcmp(mode, "srvnomem") == 0)
		rc = mode_srvnomem();
	else if (strcmp(mode, "nostandby") == 0)
		rc = mode_nostandby();
	else if (strcmp(mode, "gathernomem") == 0)
		rc = mode_gathernomem();
	else if (strcmp(mode, "emitnomem") == 0)
		rc = mode_emitnomem();
	else if (strcmp(mode, "holdnomem") == 0)
		rc = mode_holdnomem();
	else {
		fprintf(stderr,
			"usage: %s namenomem|namestop|recvnomem|srvnomem|"
			"nostandby|gathernomem|emitnomem|holdnomem\n",
			argv[0]);
		rc = 2;
	}
	return finalize_and_report(mode, rank,
				   "after the last future completed", rc);
}
