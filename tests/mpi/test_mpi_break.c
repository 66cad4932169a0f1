/*
 * test_mpi_break.c: a break's MPI calls all come before any future ends
 * (a done callback may free the executor, and main call MPI_Finalize as
 * soon as it has every outcome), in modes that tests/mpi/run.sh runs
 * under mpirun (test_mpi_stop.c's style: every rank's call must return,
 * and pmpi_watch.h counts root's other threads' MPI calls as finalize
 * begins).  Each future's done callback asks whether fut_submit already
 * returns FUT_EBROKEN: whether the break came first.  Found by review
 * (2026-12-07, fourteenth session):
 *   shortcrash   one server's result goes as a crash record shorter than
 *                its 4-byte wait status (a test hook) while the other
 *                runs a task for 1 s.  Before, that future failed
 *                ("malformed crash record") and its callback ran before
 *                the break's INTERRUPTs, BREAKs and wait for the ACKs.
 *   heldjunk     (np 2) the one server's results for 400 quick tasks
 *                come in one message (prefetch 1000, 2 task threads:
 *                all but the last one or two), with junk after
 *                the frame (a test hook).  Before, the manager completed
 *                the first 256 results held (FUT__MPI_HELD_MAX) as the
 *                257th came, before the junk broke the executor: had
 *                they been the last jobs in flight, main could call
 *                MPI_Finalize as the break's MPI calls came.
 * Found by review (2026-12-07, fifteenth session):
 *   brokennowaitfin  every server's result is malformed; root shuts the
 *                executor down (NOWAIT) once its one task is submitted,
 *                as docs/mpi.md says, and the future's done callback
 *                frees it; main calls MPI_Finalize once it has the
 *                outcome (the servers nap up to 0.5 s).  Before, the
 *                manager took the BYEs after the future ended, the busy
 *                rank's included, as finalize began (hundreds of calls).
 *   brokennowaitfin2  the same without the free.
 *   freethenbreak  (prefetch 1) the first future's callback frees the
 *                executor while the second task runs; that task's
 *                result is malformed: the break.  Before, the free with
 *                a task running held nothing, and the manager took the
 *                BYEs as finalize began.
 *   nowaitbroken (prefetch 1) a rank's malformed result breaks the
 *                executor while the other runs a task that ignores its
 *                interrupt for 5 s; once both futures ended, shutdown
 *                (NOWAIT) must return at once (under 1 s), and make no
 *                MPI call after.  Before, it waited for that task's end
 *                (4.6 s), the broken executor counting as drained.
 *   isojunk      (ISOLATE, prefetch 4) root's message of 4 tasks to rank
 *                1 carries junk after them (a test hook): that rank gives
 *                up while it gathers them for its pool.  Every future
 *                must end FUT_EBROKEN, "rank 1 stopped serving".  Before,
 *                the gathered run went to the pool the give-up had shut
 *                down, and its tasks ended FUT_ESHUTDOWN.
 *   orphanbye    (prefetch 1) rank 2 gives up (a malformed INTERRUPT)
 *                while its task runs 0.5 s more, then says its one-byte
 *                BYE; root's manager is paused 1.2 s (a test hook), and
 *                rank 1's malformed result, read first, breaks the
 *                executor: rank 2 is sent a BREAK, then its BYE is read.
 *                A second executor on the same ranks must then run 8
 *                tasks.  Before, root answered that BYE and rank 2's
 *                drain ended at the BREAK: the answer stayed unread, and
 *                on MPICH (context ids reused at once) rank 2 received
 *                it in the second executor, returned FUT_EBROKEN, and
 *                its tasks failed "rank 2 stopped serving".
 * run.sh's timeout ends a hang as a failure.
 */
#include <unistd.h>

#include "mpi_test.h"
#include "pmpi_watch.h"

/* src/mpi/mpi_client.h's FUT__MPI_HELD_MAX: the results the manager held
 * before it completed them early. */
#define FUT__MPI_HELD_MAX_TEST 256

static fut_executor *ex;
/* Callbacks that ran before the break; callbacks that ran at all. */
static _Atomic long early, called;

static void noop_task(fut_task *t)
{
	(void)t;
}

/* From the manager's thread: whether the break came before this future
 * ended (a submit after it fails FUT_EBROKEN). */
static void broken_first_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	CHECK(!pthread_equal(pthread_self(), main_thread));
	fut_future *g = NULL;
	int rc = fut_submit_bytes(ex, noop_task, NULL, 0, &g);
	if (rc != FUT_EBROKEN)
		atomic_fetch_add(&early, 1);
	if (g != NULL)
		fut_release(g);
	atomic_fetch_add(&called, 1);
}

/* Runs 1 s (past the break), then returns 1 byte. */
static void small_late_task(fut_task *t)
{
	usleep(1000000);
	fut_task_return_bytes(t, "s", 1);
}

/* Its 1-byte result goes as a crash record, 200 ms in. */
static void short_crash_task(fut_task *t)
{
	usleep(200000);
	fut__mpi_test_short_crash_next_send();
	fut_task_return_bytes(t, "c", 1);
}

static int mode_shortcrash(void)
{
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (ex == NULL)
		return 0;
	fut_future *fs[2];
	CHECK(fut_submit_bytes(ex, small_late_task, NULL, 0, &fs[0]) == FUT_OK);
	CHECK(fut_submit_bytes(ex, short_crash_task, NULL, 0, &fs[1]) ==
	      FUT_OK);
	for (int i = 0; i < 2; i++)
		CHECK(fut_add_done_callback(fs[i], broken_first_cb, NULL) ==
		      FUT_OK);
	two_broken(fs);
	/* The callbacks run on the manager's thread, maybe after the
	 * wait returned. */
	for (int i = 0; i < 3000 && atomic_load(&called) < 2; i++)
		usleep(1000);
	CHECK(atomic_load(&called) == 2);
	long n = atomic_load(&early);
	if (n != 0)
		fprintf(stderr,
			"shortcrash: %ld of 2 futures ended before the "
			"break\n",
			n);
	fut_executor_free(ex);
	atomic_store(&watch_finalize, true);
	return n != 0;
}

static void byte_task(fut_task *t)
{
	fut_task_return_bytes(t, "b", 1);
}

static int mode_heldjunk(void)
{
	enum {
		N = 400
	};
	if (world_rank() != 0)
		fut__mpi_test_junk_after_send(FUT__MPI_HELD_MAX_TEST + 1);
	/* Two task threads: the results wait while tasks are queued
	 * (fewer than prefetch / 2 came), so one message takes all but the
	 * last one or two; with one, the first went alone. */
	CHECK(fut_mpi_executor_new(
		      &ex, &(fut_mpi_opts){ .prefetch = 1000,
					    .threads_per_rank = 2 }) == FUT_OK);
	if (ex == NULL)
		return 0;
	static unsigned char in[N];
	static fut_future *fs[N];
	CHECK(fut_submit_many(ex, byte_task, in, 1, N, fs) == FUT_OK);
	for (int i = 0; i < N; i++)
		CHECK(fut_add_done_callback(fs[i], broken_first_cb, NULL) ==
		      FUT_OK);
	CHECK(fut_wait(fs, N, FUT_ALL_COMPLETED, 30) == FUT_OK);
	/* Results decoded before the junk keep their outcome (one message:
	 * all of them); the rest are FUT_EBROKEN. */
	long broken = 0;
	for (int i = 0; i < N; i++) {
		broken += fut_error(fs[i]) == FUT_EBROKEN;
		fut_release(fs[i]);
	}
	for (int i = 0; i < 3000 && atomic_load(&called) < N; i++)
		usleep(1000);
	CHECK(atomic_load(&called) == N);
	/* The junk came, and broke the executor. */
	fut_future *g = NULL;
	CHECK(fut_submit_bytes(ex, noop_task, NULL, 0, &g) == FUT_EBROKEN);
	long n = atomic_load(&early);
	if (n != 0)
		fprintf(stderr,
			"heldjunk: %ld of %d futures ended before the break "
			"(%ld FUT_EBROKEN)\n",
			n, (int)N, broken);
	fut_executor_free(ex);
	atomic_store(&watch_finalize, true);
	return n != 0;
}

static void quick_task(fut_task *t)
{
	fut_task_return_bytes(t, "q", 1);
}

/* Returns 1 byte after 200 ms. */
static void slow_quick_task(fut_task *t)
{
	usleep(200000);
	quick_task(t);
}

/* Frees the executor ud, from the manager's thread. */
static void free_now_cb(fut_future *f, void *ud)
{
	(void)f;
	CHECK(!pthread_equal(pthread_self(), main_thread));
	fut_executor_free(ud);
}

/* An executor whose servers nap up to 0.5 s (their BYEs come late). */
static void new_napping(fut_executor **out, size_t prefetch)
{
	double nap = world_rank() == 0 ? 0 : 0.5;
	CHECK(fut_mpi_executor_new(
		      out, &(fut_mpi_opts){ .prefetch = prefetch,
					    .poll_backoff = nap }) == FUT_OK);
}

static int mode_brokennowaitfin(bool cbfree)
{
	if (world_rank() != 0)
		fut__mpi_test_corrupt_next_send();
	new_napping(&ex, 0);
	if (ex == NULL)
		return 0;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, slow_quick_task, NULL, 0, &f) == FUT_OK);
	if (cbfree)
		CHECK(fut_add_done_callback(f, free_now_cb, ex) == FUT_OK);
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
	CHECK(fut_error(f) == FUT_EBROKEN);
	fut_release(f);
	atomic_store(&watch_finalize, true);
	return 0;
}

/* Its result is malformed, 300 ms in. */
static void corrupt_late_task(fut_task *t)
{
	usleep(300000);
	fut__mpi_test_corrupt_next_send();
	quick_task(t);
}

static int mode_freethenbreak(void)
{
	new_napping(&ex, 1);
	if (ex == NULL)
		return 0;
	fut_future *fs[2];
	CHECK(fut_submit_bytes(ex, corrupt_late_task, NULL, 0, &fs[1]) ==
	      FUT_OK);
	CHECK(fut_submit_bytes(ex, quick_task, NULL, 0, &fs[0]) == FUT_OK);
	CHECK(fut_add_done_callback(fs[0], free_now_cb, ex) == FUT_OK);
	CHECK(fut_wait(fs, 2, FUT_ALL_COMPLETED, 30) == FUT_OK);
	CHECK(fut_error(fs[0]) == FUT_OK);
	CHECK(fut_error(fs[1]) == FUT_EBROKEN);
	fut_release(fs[0]);
	fut_release(fs[1]);
	atomic_store(&watch_finalize, true);
	return 0;
}

/* Runs 5 s, deaf to its interrupt. */
static void deaf_task(fut_task *t)
{
	usleep(5000000);
	quick_task(t);
}

static int mode_nowaitbroken(void)
{
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (ex == NULL)
		return 0;
	fut_future *fs[2];
	CHECK(fut_submit_bytes(ex, deaf_task, NULL, 0, &fs[0]) == FUT_OK);
	usleep(100000); /* sent: the next task goes to the other rank */
	CHECK(fut_submit_bytes(ex, corrupt_late_task, NULL, 0, &fs[1]) ==
	      FUT_OK);
	two_broken(fs);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double took = (double)(t1.tv_sec - t0.tv_sec) +
		      (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	if (took > 1.0)
		fprintf(stderr, "nowaitbroken: shutdown(NOWAIT) took %.2f s\n",
			took);
	/* No MPI call of the manager's from here until the free. */
	atomic_store(&watching, true);
	usleep(200000);
	atomic_store(&watching, false);
	fut_executor_free(ex);
	return took > 1.0;
}

static int mode_isojunk(void)
{
	enum {
		N = 4
	};
	if (world_rank() == 0)
		fut__mpi_test_junk_after_send(N);
	int rc = fut_mpi_executor_new(
		&ex,
		&(fut_mpi_opts){ .prefetch = N, .flags = FUT_MPI_ISOLATE });
	if (ex == NULL)
		return rc != (world_rank() == 1 ? FUT_EBROKEN : FUT_OK);
	static unsigned char in[N];
	fut_future *fs[N];
	CHECK(fut_submit_many(ex, byte_task, in, 1, N, fs) == FUT_OK);
	CHECK(fut_wait(fs, N, FUT_ALL_COMPLETED, 30) == FUT_OK);
	int bad = 0;
	for (int i = 0; i < N; i++) {
		const char *msg = fut_error_message(fs[i]);
		if (fut_error(fs[i]) != FUT_EBROKEN ||
		    strstr(msg, "rank 1 stopped serving") == NULL) {
			fprintf(stderr, "isojunk: future %d: %s (%s)\n", i,
				fut_strerror(fut_error(fs[i])), msg);
			bad = 1;
		}
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	return bad;
}

/* orphanbye: rank 1's result, 0.4 s in, is malformed. */
static void breaker_task(fut_task *t)
{
	usleep(400000);
	fut__mpi_test_corrupt_next_send();
	fut_task_return_bytes(t, "b", 1);
}

/* orphanbye: runs until interrupted (its rank gives up), then 0.5 s. */
static void victim_task(fut_task *t)
{
	for (int i = 0; i < 20000 && !fut_task_cancelled(t); i++)
		usleep(1000);
	usleep(500000);
	fut_task_return_bytes(t, "v", 1);
}

static void byte_ok_task(fut_task *t)
{
	fut_task_return_bytes(t, "q", 1);
}

static _Atomic int orphan_armed;

/* Root's manager: once armed, the pass after next naps 1.2 s, while
 * rank 1's malformed result and rank 2's one-byte BYE come. */
static void orphan_pause(void)
{
	int a = atomic_load(&orphan_armed);
	if (a == 1)
		atomic_store(&orphan_armed, 2);
	else if (a == 2) {
		atomic_store(&orphan_armed, 3);
		usleep(1200000);
	}
}

static int mode_orphanbye(void)
{
	int rank = world_rank();
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL && rank == 2 && rc != FUT_EBROKEN) {
		fprintf(stderr, "orphanbye: rank 2's first executor: %s\n",
			fut_strerror(rc));
		return 1;
	}
	if (ex != NULL) {
		fut__mpi_test_pause_hook(orphan_pause);
		fut_future *fs[2];
		CHECK(fut_submit_bytes(ex, breaker_task, NULL, 0, &fs[0]) ==
		      FUT_OK);
		usleep(50000);
		CHECK(fut_submit_bytes(ex, victim_task, NULL, 0, &fs[1]) ==
		      FUT_OK);
		usleep(50000);
		fut__mpi_test_corrupt_next_send();
		CHECK(fut_interrupt(fs[1]) == FUT_OK);
		atomic_store(&orphan_armed, 1);
		two_broken(fs);
		fut__mpi_test_pause_hook(NULL);
		fut_executor_free(ex);
	}
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	ex = NULL;
	rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 });
	if (rc != FUT_OK) {
		fprintf(stderr, "orphanbye: rank %d's second executor: %s\n",
			rank, fut_strerror(rc));
		return 1;
	}
	if (ex == NULL)
		return 0;
	enum {
		N = 8
	};
	fut_future *g[N];
	int bad = 0;
	for (int i = 0; i < N; i++)
		CHECK(fut_submit_bytes(ex, byte_ok_task, NULL, 0, &g[i]) ==
		      FUT_OK);
	CHECK(fut_wait(g, N, FUT_ALL_COMPLETED, 30) == FUT_OK);
	for (int i = 0; i < N; i++) {
		if (fut_error(g[i]) != FUT_OK) {
			fprintf(stderr,
				"orphanbye: second executor's task "
				"%d: %s\n",
				i, fut_error_message(g[i]));
			bad = 1;
		}
		fut_release(g[i]);
	}
	fut_executor_free(ex);
	return bad;
}

int main(int argc, char **argv)
{
	main_thread = pthread_self();
	init_mpi(&argc, &argv);
	int rank = world_rank();
	const char *mode = argc > 1 ? argv[1] : "";
	int rc;
	if (strcmp(mode, "shortcrash") == 0)
		rc = mode_shortcrash();
	else if (strcmp(mode, "heldjunk") == 0)
		rc = mode_heldjunk();
	else if (strcmp(mode, "brokennowaitfin") == 0)
		rc = mode_brokennowaitfin(true);
	else if (strcmp(mode, "brokennowaitfin2") == 0)
		rc = mode_brokennowaitfin(false);
	else if (strcmp(mode, "freethenbreak") == 0)
		rc = mode_freethenbreak();
	else if (strcmp(mode, "nowaitbroken") == 0)
		rc = mode_nowaitbroken();
	else if (strcmp(mode, "isojunk") == 0)
		rc = mode_isojunk();
	else if (strcmp(mode, "orphanbye") == 0)
		rc = mode_orphanbye();
	else {
		fprintf(stderr,
			"usage: %s shortcrash|heldjunk|brokennowaitfin|"
			"brokennowaitfin2|freethenbreak|nowaitbroken|isojunk|"
			"orphanbye\n",
			argv[0]);
		rc = 2;
	}
	return finalize_and_report(mode, rank, "as MPI_Finalize began", rc);
}
