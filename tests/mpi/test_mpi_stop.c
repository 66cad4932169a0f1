/*
 * test_mpi_stop.c: how an executor stops its ranks, in modes that
 * tests/mpi/run.sh runs under mpirun -np 3 (not cmocka tests: what they
 * check is that every rank's call returns, and which MPI calls another
 * thread of root makes, counted through the profiling interface,
 * pmpi_watch.h).  Found by review (2026-12-07):
 *   brokenint    a rank's malformed result breaks the executor while the
 *                other rank runs a task that waits for
 *                fut_task_cancelled(): the break must interrupt it.  Before,
 *                it ran on (here capped at 20 s, and that rank reports it),
 *                and shutdown(INTERRUPT|NOWAIT) and free waited for it.
 *   nowaitrace   300 times: an idle executor, shutdown(NOWAIT), then 3 ms
 *                in which no other thread of root may call MPI (the STOPs
 *                and BYEs come before it returns).  Before, a shutdown
 *                between the manager's two reads of its flag made the
 *                executor look busy: 5 of 300 returned first.
 *   cbfreefin    the last future's done callback frees the executor,
 *                shut down (NOWAIT) once the task was submitted, as
 *                docs/mpi.md says, while main, which has the result,
 *                calls MPI_Finalize: no other thread may call MPI as
 *                finalize begins (the servers nap up to 0.5 s, so the
 *                BYEs come late).  Without the shutdown the manager
 *                probed for the BYEs after the callback (MPICH aborted in
 *                finalize, 2 runs in 15); it sends the STOPs at once now
 *                and the BYEs wait, which leaves those sends to race.
 *   heldnew      a free from the last callback (no shutdown first), then
 *                a second executor: its creation lets the first take its
 *                BYEs first; the second is shut down after its submit
 *                (the documented way to free from the last callback).
 *   cbfreebarrier  the same free, then MPI_Barrier on every rank: the
 *                STOPs go as the callback returns, so the servers' calls
 *                return (only the BYEs wait; a hold of the STOPs too,
 *                this fix's first form, hung here).
 *   brokencbfin  every server's result is malformed; the one future's
 *                done callback frees the broken executor and main calls
 *                MPI_Finalize at once: the INTERRUPTs and STOPs went
 *                before the future ended, the BYEs wait (before, the
 *                manager sent them after and probed for the BYEs as
 *                finalize began).
 *   brokenbarrier  (fourteenth session) one server's result is malformed
 *                while the other still runs a task whose result (1 MiB)
 *                is too large to go eagerly; the broken future's done
 *                callback frees the executor, then every rank calls
 *                MPI_Barrier.  Before, the free held the manager (no
 *                receive after it), so that result's send never
 *                completed, its server never said BYE nor returned, and
 *                the barrier hung.
 *   brokenbusyfin (fourteenth session) brokenbarrier's scene with a
 *                1-byte result, then MPI_Finalize at once instead of the
 *                barrier: the break's MPI calls all come before any
 *                future ends.  Before, the manager counted the busy
 *                server as owing results and probed for them (and its
 *                BYE) after the free, as finalize began (741 calls).
 *   holdsendfail (fourteenth session) the last future's done callback
 *                makes MPI "refuse" root's next sends (a test hook: they
 *                go, and are reported failed) and frees the executor;
 *                300 ms later the hook must have failed only the two
 *                STOPs.  Before, the held manager tried a STOP that MPI
 *                refused again every 10 ms, for ever.
 *   recvfail     (fourteenth session) root's receives fail (a test hook)
 *                while a rank runs a task: the break must not probe
 *                again.  Before, the manager still expected that rank's
 *                BYE, and tried the failing receive in a hot loop.
 *   cancelnowait (fourteenth session) an idle executor's manager is
 *                paused (a test hook) after its pass's dispatch, before
 *                it reads the shutdown; main submits 64 jobs, cancels
 *                them all, shuts down (NOWAIT) and calls MPI_Finalize
 *                once that returns.  Before, the queue of cancelled jobs
 *                made the executor look busy: shutdown(NOWAIT) returned
 *                at once, and the manager dropped them, sent the STOPs
 *                and probed for the BYEs as finalize began.
 *   gaveupfree   (fifteenth session) rank 1 gives up serving (root's
 *                INTERRUPT reaches it malformed) while its task, deaf to
 *                interrupts, runs 1.5 s, and root sends it one more task
 *                with 1 MiB of input, which it does not read; rank 2's
 *                malformed result breaks the executor; a done callback
 *                frees it, then every rank calls MPI_Barrier.  Before,
 *                rank 1 said a goodbye that waits for root's answer,
 *                which the freed executor's manager gives only in
 *                MPI_Finalize: rank 1 never returned, the barrier hung.
 *   testfail     (fifteenth session) root's MPI_Test fails (MPI_ERR_OTHER,
 *                pmpi_watch.h) as an idle executor is freed: the STOPs
 *                go (eagerly), their tests fail.  Before, the manager
 *                kept them and tested them for ever: the free hung.
 *   srvtestfail  (fifteenth session) rank 1's MPI_Test fails from the
 *                start: its first result goes, its test fails.  Before,
 *                it served on with that send kept in flight for ever
 *                (its loop ends only with none): the executor did not
 *                break in 10 s, and its free would have hung.  Now it
 *                gives up (FUT_EBROKEN), and the executor breaks ("rank
 *                1 stopped serving").
 *   lostidle     (fifteenth session) root's MPI_Test of its task's send
 *                is put off (pmpi_watch.h) until that task's result came,
 *                then fails: its rank is lost with no task there.  The
 *                next task must end FUT_EBROKEN, "rank N: an MPI send
 *                failed".  Before, it went to that rank (marked gone,
 *                nothing else) and ran, and root's free returned with
 *                that server never stopped.  The lost server gets
 *                nothing more (nothing better is known of MPI failing):
 *                it stays in fut_mpi_executor_new, so root ends the job
 *                with MPI_Abort once it printed its verdict
 *                ("lostidle: ok"); run.sh does not run it (the
 *                launcher's abort is not reliable enough: run.sh).
 *   heldstopjunk (fifteenth session) the last future's done callback
 *                makes root's next frame malformed (a test hook) and
 *                frees the executor: the manager holds and stops the
 *                ranks; every rank then calls MPI_Barrier.  Before, the
 *                STOPs were frames: the servers gave up on them, with no
 *                task there (so no BREAK), and waited for root's answer
 *                to their one-byte goodbye, which the held manager gives
 *                only in MPI_Finalize: the barrier hung.
 * run.sh's timeout ends a hang as a failure.
 */
#include <time.h>
#include <unistd.h>

#include "mpi_test.h"
#include "pmpi_watch.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* brokenint: set on the server whose task saw the interrupt, or that
 * ran none; a server whose task ran out its 20 s fails. */
static bool waited_ok = true;

static void wait_cancel_task(fut_task *t)
{
	double t0 = now_s();
	while (!fut_task_cancelled(t) && now_s() - t0 < 20)
		usleep(1000);
	waited_ok = fut_task_cancelled(t);
	fut_task_return_bytes(t, "w", 1);
}

static void quick_task(fut_task *t)
{
	fut_task_return_bytes(t, "q", 1);
}

static int mode_brokenint(void)
{
	/* Every server's next send is malformed: the one that answers the
	 * quick task breaks the executor (prefetch 1: the waiting task
	 * fills the other rank). */
	if (world_rank() != 0)
		fut__mpi_test_corrupt_next_send();
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (ex == NULL) {
		if (!waited_ok)
			fprintf(stderr,
				"brokenint: rank %d: the task ran on "
				"after the break\n",
				world_rank());
		return waited_ok ? 0 : 1;
	}
	fut_future *fs[2];
	CHECK(fut_submit_bytes(ex, wait_cancel_task, NULL, 0, &fs[0]) ==
	      FUT_OK);
	usleep(200000); /* it runs by now */
	CHECK(fut_submit_bytes(ex, quick_task, NULL, 0, &fs[1]) == FUT_OK);
	CHECK(fut_wait(fs, 2, FUT_ALL_COMPLETED, 30) == FUT_OK);
	for (int i = 0; i < 2; i++) {
		CHECK(fut_result(fs[i], 0, NULL) == FUT_EBROKEN);
		fut_release(fs[i]);
	}
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT |
						FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	fut_executor_free(ex);
	return 0;
}

static int mode_nowaitrace(void)
{
	bool root = world_rank() == 0;
	long late = 0;
	for (int i = 0; i < 300; i++) {
		fut_executor *ex = NULL;
		/* Root's manager spins the whole time, reading the flag. */
		CHECK(fut_mpi_executor_new(
			      &ex,
			      &(fut_mpi_opts){ .poll_spin = root ? 60 : 0 }) ==
		      FUT_OK);
		if (ex == NULL)
			continue;
		usleep(300);
		atomic_store(&stray_calls, 0);
		CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
		atomic_store(&watching, true);
		usleep(3000);
		atomic_store(&watching, false);
		late += atomic_load(&stray_calls) != 0;
		fut_executor_free(ex);
	}
	atomic_store(&stray_calls, 0);
	if (late != 0)
		fprintf(stderr,
			"nowaitrace: %ld of 300 shutdown(NOWAIT)s "
			"returned before the manager's MPI calls\n",
			late);
	return late != 0;
}

static fut_executor *cb_ex;

/* Frees its executor, ud, from its manager's thread (the test would pass
 * vacuously on main, which holds no stop).  Not cb_ex: main may be making
 * the next executor there already. */
static void free_now_cb(fut_future *f, void *ud)
{
	(void)f;
	CHECK(!pthread_equal(pthread_self(), main_thread));
	fut_executor_free(ud);
}

/* The documented way (docs/mpi.md, Finalize): shut down once the last
 * task is submitted, so that the STOPs and BYEs come before the last
 * future completes; its done callback frees. */
static int mode_cbfreefin(void)
{
	bool root = world_rank() == 0;
	CHECK(fut_mpi_executor_new(&cb_ex,
				   &(fut_mpi_opts){ .poll_backoff =
							    root ? 0 : 0.5 }) ==
	      FUT_OK);
	if (cb_ex == NULL)
		return 0;
	square_with_callback_then(cb_ex, free_now_cb, true);
	atomic_store(&watch_finalize, true);
	return 0; /* MPI_Finalize at once */
}

static int mode_cbfreebarrier(void)
{
	CHECK(fut_mpi_executor_new(&cb_ex, NULL) == FUT_OK);
	if (cb_ex != NULL)
		square_with_callback(cb_ex, free_now_cb);
	/* Every rank: the servers' calls have returned. */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	return 0;
}

static void slow_quick_task(fut_task *t)
{
	usleep(200000);
	quick_task(t);
}

/* Every server's next send is malformed; the one task's done callback
 * frees the executor, which that broke; main, which has FUT_EBROKEN,
 * calls MPI_Finalize at once. */
static int mode_brokencbfin(void)
{
	bool root = world_rank() == 0;
	if (!root)
		fut__mpi_test_corrupt_next_send();
	CHECK(fut_mpi_executor_new(&cb_ex,
				   &(fut_mpi_opts){ .poll_backoff =
							    root ? 0 : 0.5 }) ==
	      FUT_OK);
	if (cb_ex == NULL)
		return 0;
	fut_future *f;
	CHECK(fut_submit_bytes(cb_ex, slow_quick_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_add_done_callback(f, free_now_cb, cb_ex) == FUT_OK);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
	CHECK(fut_error(f) == FUT_EBROKEN);
	fut_release(f);
	atomic_store(&watch_finalize, true);
	return 0;
}

/* brokenbarrier: runs 1 s, then returns 1 MiB (sent only once root
 * receives it: past Open MPI's and MPICH's eager limits). */
static void big_late_task(fut_task *t)
{
	enum {
		BIG = 1 << 20
	};
	usleep(1000000);
	unsigned char *b = calloc(1, BIG);
	CHECK(b != NULL);
	fut_task_return_bytes(t, b, BIG);
	free(b);
}

/* brokenbarrier: its result goes malformed (the hook is per process:
 * whichever server runs it), 200 ms in. */
static void corrupt_quick_task(fut_task *t)
{
	usleep(200000);
	fut__mpi_test_corrupt_next_send();
	quick_task(t);
}

static int mode_brokenbarrier(void)
{
	CHECK(fut_mpi_executor_new(&cb_ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (cb_ex != NULL) {
		fut_future *fs[2];
		CHECK(fut_submit_bytes(cb_ex, big_late_task, NULL, 0, &fs[0]) ==
		      FUT_OK);
		CHECK(fut_submit_bytes(cb_ex, corrupt_quick_task, NULL, 0,
				       &fs[1]) == FUT_OK);
		CHECK(fut_add_done_callback(fs[1], free_now_cb, cb_ex) ==
		      FUT_OK);
		two_broken(fs);
	}
	/* Every rank: the servers' calls have returned. */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	return 0;
}

/* brokenbusyfin: runs 1 s (past the break), then returns 1 byte. */
static void small_late_task(fut_task *t)
{
	usleep(1000000);
	fut_task_return_bytes(t, "s", 1);
}

static int mode_brokenbusyfin(void)
{
	CHECK(fut_mpi_executor_new(&cb_ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (cb_ex == NULL)
		return 0;
	fut_future *fs[2];
	CHECK(fut_submit_bytes(cb_ex, small_late_task, NULL, 0, &fs[0]) ==
	      FUT_OK);
	CHECK(fut_submit_bytes(cb_ex, corrupt_quick_task, NULL, 0, &fs[1]) ==
	      FUT_OK);
	CHECK(fut_add_done_callback(fs[1], free_now_cb, cb_ex) == FUT_OK);
	two_broken(fs);
	atomic_store(&watch_finalize, true);
	return 0; /* MPI_Finalize at once */
}

/* holdsendfail: from the manager's thread, as free_now_cb. */
static void fail_sends_free_cb(fut_future *f, void *ud)
{
	(void)f;
	CHECK(!pthread_equal(pthread_self(), main_thread));
	(void)fut__mpi_test_fail_mpi(1000, 0);
	fut_executor_free(ud);
}

static int mode_holdsendfail(void)
{
	CHECK(fut_mpi_executor_new(&cb_ex, NULL) == FUT_OK);
	unsigned long failed = 0;
	if (cb_ex != NULL) {
		square_with_callback(cb_ex, fail_sends_free_cb);
		usleep(300000);
		failed = fut__mpi_test_fail_mpi(0, 0);
	}
	/* Every rank: the STOPs went (the hook only says they failed). */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	if (failed > 2)
		fprintf(stderr,
			"holdsendfail: %lu sends tried in 300 ms after "
			"MPI refused the STOPs (2 before a retry)\n",
			failed);
	return failed > 2;
}

static int mode_recvfail(void)
{
	CHECK(fut_mpi_executor_new(&cb_ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (cb_ex == NULL)
		return 0;
	fut_future *f;
	CHECK(fut_submit_bytes(cb_ex, small_late_task, NULL, 0, &f) == FUT_OK);
	usleep(200000); /* it runs */
	(void)fut__mpi_test_fail_mpi(0, 1000000000);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
	CHECK(fut_error(f) == FUT_EBROKEN);
	fut_release(f);
	usleep(300000);
	unsigned long failed = fut__mpi_test_fail_mpi(0, 0);
	fut_executor_free(cb_ex);
	if (failed > 1)
		fprintf(stderr,
			"recvfail: %lu receives tried after the first "
			"failed\n",
			failed - 1);
	return failed > 1;
}

/* cancelnowait: the manager waits here once, armed, until main has
 * queued and cancelled its jobs and its shutdown has set `shutting`
 * (seen, else the test would pass without the window: a sleep here
 * could end first under load; found by review, 2026-12-07). */
static _Atomic bool pause_armed, paused, pause_saw;
static fut_executor *pause_ex;

static void pause_once(void)
{
	if (!atomic_exchange(&pause_armed, false))
		return;
	atomic_store(&paused, true);
	double t0 = now_s();
	while (!fut__mpi_test_shutting(pause_ex) && now_s() - t0 < 20)
		usleep(100);
	atomic_store(&pause_saw, fut__mpi_test_shutting(pause_ex));
}

static int mode_cancelnowait(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex == NULL)
		return 0;
	enum {
		N = 64
	};
	static unsigned char in[N];
	fut_future *fs[N];
	pause_ex = ex;
	fut__mpi_test_pause_hook(pause_once);
	atomic_store(&pause_armed, true);
	for (int i = 0; i < 2000 && !atomic_load(&paused); i++)
		usleep(1000);
	CHECK(atomic_load(&paused));
	CHECK(fut_submit_many(ex, quick_task, in, 1, N, fs) == FUT_OK);
	for (int i = 0; i < N; i++)
		CHECK(fut_cancel(fs[i]));
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	/* The manager read the shutdown only after it was set. */
	CHECK(atomic_load(&pause_saw));
	for (int i = 0; i < N; i++) {
		CHECK(fut_error(fs[i]) == FUT_ECANCELLED);
		fut_release(fs[i]);
	}
	atomic_store(&watch_finalize, true);
	return 0; /* MPI_Finalize at once */
}

static int mode_heldnew(void)
{
	/* The first executor's free, held, is let go by the second's
	 * creation.  The second, the last, is shut down (NOWAIT) after its
	 * submit, the documented way: its free from the callback then
	 * leaves no STOP send to meet MPI_Finalize (it did, 1 CI run of
	 * 5 on MPICH aborted in MPI_Finalize, 2026-12-07). */
	CHECK(fut_mpi_executor_new(&cb_ex, NULL) == FUT_OK);
	if (cb_ex != NULL)
		square_with_callback(cb_ex, free_now_cb);
	CHECK(fut_mpi_executor_new(&cb_ex, NULL) == FUT_OK);
	if (cb_ex == NULL)
		return 0;
	square_with_callback_then(cb_ex, free_now_cb, true);
	return 0;
}

/* blamedbig: one server runs both tasks; the first's result goes
 * malformed (300 ms), the second's, 1 MiB, starts 50 ms later, while
 * root naps (poll_backoff 0.5): it is in flight when the BREAK comes. */
static void twin_task(fut_task *t)
{
	const unsigned char *in = fut_task_input(t, NULL);
	if (in[0] == 0) {
		usleep(300000);
		fut__mpi_test_corrupt_next_send();
		quick_task(t);
		return;
	}
	usleep(350000);
	enum {
		BIG = 1 << 20
	};
	unsigned char *b = calloc(1, BIG);
	fut_task_return_bytes(t, b, BIG);
	free(b);
}

static int mode_blamedbig(void)
{
	bool root = world_rank() == 0;
	CHECK(fut_mpi_executor_new(
		      &cb_ex,
		      &(fut_mpi_opts){ .prefetch = 2,
				       .threads_per_rank = 2,
				       .poll_spin = root ? 1e-9 : 0,
				       .poll_backoff = root ? 0.5 : 0 }) ==
	      FUT_OK);
	if (cb_ex != NULL) {
		unsigned char in[2] = { 0, 1 };
		fut_future *fs[2];
		CHECK(fut_submit_many(cb_ex, twin_task, in, 1, 2, fs) ==
		      FUT_OK);
		CHECK(fut_add_done_callback(fs[0], free_now_cb, cb_ex) ==
		      FUT_OK);
		two_broken(fs);
	}
	/* Every rank: the servers' calls have returned (the blamed one's
	 * large send was received). */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	return 0;
}

/* gaveupwait, gaveupfree: runs as many ms as its input says, deaf to its
 * interrupt. */
static void deaf_long_task(fut_task *t)
{
	int ms;
	memcpy(&ms, fut_task_input(t, NULL), sizeof(ms));
	usleep((useconds_t)ms * 1000);
	quick_task(t);
}

static void corrupt_late_task(fut_task *t)
{
	usleep(500000);
	fut__mpi_test_corrupt_next_send();
	quick_task(t);
}

/* gaveupwait, gaveupfree: fs[0] runs on rank 1, deaf to its interrupt
 * for ms; root's INTERRUPT reaches that rank malformed, so it gives up;
 * fs[1], on rank 2, breaks the executor with its result 500 ms in. */
static void gaveup_scene(fut_executor *ex, fut_future **fs, int ms)
{
	CHECK(fut_submit_bytes(ex, deaf_long_task, &ms, sizeof(ms), &fs[0]) ==
	      FUT_OK);
	usleep(50000); /* sent: the next task goes to rank 2 */
	CHECK(fut_submit_bytes(ex, corrupt_late_task, NULL, 0, &fs[1]) ==
	      FUT_OK);
	usleep(50000);
	fut__mpi_test_corrupt_next_send();
	CHECK(fut_interrupt(fs[0]) == FUT_OK);
}

/* The break must not wait for the task. */
static int mode_gaveupwait(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
		      FUT_OK ||
	      world_rank() != 0);
	if (ex == NULL)
		return 0;
	fut_future *fs[2];
	double t0 = now_s();
	gaveup_scene(ex, fs, 4000);
	CHECK(fut_wait(fs, 2, FUT_ALL_COMPLETED, 30) == FUT_OK);
	double took = now_s() - t0;
	fprintf(stderr, "gaveupwait: the futures ended after %.2f s\n", took);
	CHECK(took < 2.5); /* 4.0 before */
	for (int i = 0; i < 2; i++) {
		CHECK(fut_error(fs[i]) == FUT_EBROKEN);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	return 0;
}

/* gaveupfree: the input of its third task, unread where it goes. */
static unsigned char big_input[1 << 20];

/* gaveupwait's scene, and a third task, its input 1 MiB (too large to go
 * eagerly), sent to rank 1 after it gave up; fs[1]'s done callback frees
 * the executor, then every rank calls MPI_Barrier while rank 1's task
 * runs on (1.5 s). */
static int mode_gaveupfree(void)
{
	int rc = fut_mpi_executor_new(&cb_ex, &(fut_mpi_opts){ .prefetch = 2 });
	if (cb_ex != NULL) {
		fut_future *fs[3];
		gaveup_scene(cb_ex, fs, 1500);
		CHECK(fut_add_done_callback(fs[1], free_now_cb, cb_ex) ==
		      FUT_OK);
		usleep(50000); /* rank 1 has room for one more */
		CHECK(fut_submit_bytes(cb_ex, quick_task, big_input,
				       sizeof(big_input), &fs[2]) == FUT_OK);
		two_broken(fs);
		CHECK(fut_wait(&fs[2], 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
		CHECK(fut_error(fs[2]) == FUT_EBROKEN);
		fut_release(fs[2]);
	}
	/* Every rank: the servers' calls have returned, rank 1's (it gave
	 * up) once its task ended. */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	CHECK(rc == (world_rank() == 1 ? FUT_EBROKEN : FUT_OK));
	return 0;
}

static int mode_testfail(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex == NULL)
		return 0;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, quick_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
	atomic_store(&fail_tests, true);
	double t0 = now_s();
	fut_executor_free(ex);
	atomic_store(&fail_tests, false);
	double took = now_s() - t0;
	if (took > 5)
		fprintf(stderr, "testfail: the free took %.2f s\n", took);
	return took > 5;
}

static int mode_srvtestfail(void)
{
	if (world_rank() == 1)
		atomic_store(&fail_tests, true);
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 });
	atomic_store(&fail_tests, false);
	if (ex == NULL)
		return rc != (world_rank() == 1 ? FUT_EBROKEN : FUT_OK);
	fut_future *f;
	CHECK(fut_submit_bytes(ex, quick_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
	fut_release(f);
	/* Rank 1 gives up: the executor breaks. */
	fut_future *g = NULL;
	double t0 = now_s();
	while ((rc = fut_submit_bytes(ex, quick_task, NULL, 0, &g)) == FUT_OK &&
	       now_s() - t0 < 10) {
		(void)fut_wait(&g, 1, FUT_ALL_COMPLETED, 30);
		fut_release(g);
		g = NULL;
		usleep(10000);
	}
	CHECK(rc == FUT_EBROKEN);
	fut_executor_free(ex);
	return 0;
}

static int mode_lostidle(void)
{
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 });
	if (ex == NULL)
		return rc != FUT_OK;
	atomic_store(&defer_tests, true);
	fut_future *f;
	CHECK(fut_submit_bytes(ex, quick_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
	/* The send, still untested, fails now: its rank has nothing of
	 * ours. */
	atomic_store(&fail_tests, true);
	atomic_store(&defer_tests, false);
	for (int i = 0; i < 10000 && atomic_load(&tests_failed) == 0; i++)
		usleep(1000);
	atomic_store(&fail_tests, false);
	CHECK(atomic_load(&tests_failed) != 0);
	CHECK(fut_submit_bytes(ex, quick_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
	const char *msg = fut_error_message(f);
	int bad = fut_error(f) != FUT_EBROKEN ||
		  strstr(msg, "an MPI send failed") == NULL;
	if (bad)
		fprintf(stderr, "lostidle: the next task: %s (%s)\n",
			fut_strerror(fut_error(f)), msg);
	fut_release(f);
	double t0 = now_s();
	fut_executor_free(ex);
	if (now_s() - t0 > 5) {
		fprintf(stderr, "lostidle: the free took %.2f s\n",
			now_s() - t0);
		bad = 1;
	}
	if (!bad)
		printf("lostidle: ok\n");
	fflush(stdout);
	fflush(stderr);
	/* The lost rank is never stopped: nothing else ends the job. */
	MPI_Abort(MPI_COMM_WORLD, bad);
	return bad;
}

/* heldstopjunk: from the manager's thread, as free_now_cb. */
static void junk_free_cb(fut_future *f, void *ud)
{
	(void)f;
	CHECK(!pthread_equal(pthread_self(), main_thread));
	fut__mpi_test_corrupt_next_send();
	fut_executor_free(ud);
}

static int mode_heldstopjunk(void)
{
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, NULL);
	if (ex != NULL)
		square_with_callback(ex, junk_free_cb);
	/* Every rank: the servers' calls have returned. */
	CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS);
	return rc != FUT_OK;
}

int main(int argc, char **argv)
{
	main_thread = pthread_self();
	init_mpi(&argc, &argv);
	int rank = world_rank();
	const char *mode = argc > 1 ? argv[1] : "";
	int rc;
	if (strcmp(mode, "brokenint") == 0)
		rc = mode_brokenint();
	else if (strcmp(mode, "nowaitrace") == 0)
		rc = mode_nowaitrace();
	else if (strcmp(mode, "cbfreefin") == 0)
		rc = mode_cbfreefin();
	else if (strcmp(mode, "heldnew") == 0)
		rc = mode_heldnew();
	else if (strcmp(mode, "cbfreebarrier") == 0)
		rc = mode_cbfreebarrier();
	else if (strcmp(mode, "brokencbfin") == 0)
		rc = mode_brokencbfin();
	else if (strcmp(mode, "brokenbarrier") == 0)
		rc = mode_brokenbarrier();
	else if (strcmp(mode, "brokenbusyfin") == 0)
		rc = mode_brokenbusyfin();
	else if (strcmp(mode, "holdsendfail") == 0)
		rc = mode_holdsendfail();
	else if (strcmp(mode, "recvfail") == 0)
		rc = mode_recvfail();
	else if (strcmp(mode, "cancelnowait") == 0)
		rc = mode_cancelnowait();
	else if (strcmp(mode, "blamedbig") == 0)
		rc = mode_blamedbig();
	else if (strcmp(mode, "gaveupwait") == 0)
		rc = mode_gaveupwait();
	else if (strcmp(mode, "gaveupfree") == 0)
		rc = mode_gaveupfree();
	else if (strcmp(mode, "testfail") == 0)
		rc = mode_testfail();
	else if (strcmp(mode, "srvtestfail") == 0)
		rc = mode_srvtestfail();
	else if (strcmp(mode, "lostidle") == 0)
		rc = mode_lostidle();
	else if (strcmp(mode, "heldstopjunk") == 0)
		rc = mode_heldstopjunk();
	else {
		fprintf(stderr,
			"usage: %s brokenint|nowaitrace|cbfreefin|heldnew|"
			"cbfreebarrier|brokencbfin|brokenbarrier|"
			"brokenbusyfin|holdsendfail|recvfail|cancelnowait|"
			"blamedbig|gaveupwait|gaveupfree|testfail|srvtestfail|"
			"lostidle|"
			"heldstopjunk\n",
			argv[0]);
		rc = 2;
	}
	return finalize_and_report(mode, rank, "as MPI_Finalize began", rc);
}
