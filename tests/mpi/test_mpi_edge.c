/*
 * test_mpi_edge.c: out of memory on one rank from the call of
 * fut_mpi_executor_new on (tests/mpi/run.sh runs each mode under mpirun
 * -np 3; not cmocka tests, because what they check is that every rank's
 * call returns).  The rank fails its n-th allocation, for n = 1, 2...
 * until one is not reached; each time every rank's call returns a
 * documented code, four tasks then end (their result, or FUT_EBROKEN /
 * FUT_ENOMEM), free returns, and no live object is left:
 *   sweep RANK   RANK 0 (root) or 1 (a server), the default options
 *   threads      rank 1, threads_per_rank 2
 *   isolate      rank 1, FUT_MPI_ISOLATE
 * Found by review (2026-12-06): a rank whose first allocation failed left
 * the others in MPI_Allgather forever; root out of memory for the module
 * lists passed NULL buffers to MPI_Gatherv (SIGSEGV); a server that could
 * not allocate its state never answered, and one with threads_per_rank 2
 * that could not allocate its table of task threads queued its tasks for
 * threads that never existed (the futures never completed, free hung).
 * Not sweeps, runs of failures in a row (fut__alloc_fail_run):
 *   lostresult   a task makes its server fail the next N allocations in a
 *                row (N = 2, 3, 8; threads_per_rank 1 and 2), then
 *                returns a small result: its record and the shorter one
 *                that says "out of memory" both find none.  The future
 *                must end, FUT_ENOMEM with that message, and the rank
 *                serve on.  Before 2026-12-06 the result was lost: the
 *                future never completed (here: not within 20 s).
 *   sendnomem    the same task arms the run from its server's second
 *                allocation on (N = 1, 3, 10): the results frame is
 *                made, and the send finds no memory.  The future must
 *                end with its result once memory is back, and the rank
 *                serve on (before 2026-12-06 the server gave up serving:
 *                FUT_EBROKEN, and the executor broke).
 *   nowaitfin    every future done, shutdown(NOWAIT), MPI_Finalize at
 *                once, never freed: no other thread of root may call MPI
 *                as MPI_Finalize begins (counted through the profiling
 *                interface).  Before 2026-12-07 the manager sent the STOPs
 *                and probed for the BYEs after shutdown returned: MPICH
 *                aborted in finalize ~1 run in 15, "pthread_mutex_destroy:
 *                Device or resource busy" (docs/reliability.md).
 *   nowaitbusy   the same with a task running at the shutdown, whose
 *                result the caller waits for: the manager sent the STOPs
 *                after completing it (before 2026-12-07).
 *   modnomem     rank 1 has no memory for its module list: its call
 *                returns FUT_ENOMEM, the others FUT_EBROKEN (it returned
 *                FUT_EBROKEN too before 2026-12-07).
 *   heldstop     shutdown(NOWAIT), then a results message of more than
 *                256 records ends the last job: the job aborted on an
 *                MPI_Iprobe of the freed communicator (before
 *                2026-12-07, mode_heldstop()).
 *   cancelfin    nowaitfin with 19,999 of 20,000 jobs cancelled while
 *                queued (the manager still called MPI in finalize before
 *                2026-12-07, mode_cancelfin()).
 *   sigmask      every rank blocks SIGUSR2 (only) before its call; tasks
 *                of 20 ms (so that a server's standby takes the loop and
 *                runs some) on threads_per_rank 1 and 2 each see SIGUSR2
 *                blocked and SIGTERM not, and a done callback on root
 *                (the manager's thread) sees the same.  Before 2026-12-07
 *                (a user's trial) the servers' threads and root's
 *                callbacks had every signal blocked: a task's child
 *                process ignored SIGTERM, raise(SIGABRT) did nothing.
 *   drainwait    shutdown(CANCEL_PENDING | NOWAIT) from root's main
 *                thread takes j1 and j2 out of the client's queue; j1's
 *                done callback waits, untimed, for j2.  Before
 *                2026-12-07 (fifteenth session) the drain cancelled them
 *                one at a time, each followed by its callbacks: j2 was
 *                to be cancelled once that callback returned, a hang.
 * run.sh's timeout ends a hang as a failure.
 */
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpi_test.h"
#include "pmpi_watch.h"
#include "mpi/mpi_client.h"

/* One task through ex: its square, or the executor broke (a server gave
 * up) or the client ran out of memory for it. */
static void one_task(fut_executor *ex)
{
	int x = 7;
	fut_future *f = NULL;
	int rc = fut_submit_bytes(ex, square_task, &x, sizeof(x), &f);
	CHECK(rc == FUT_OK || rc == FUT_EBROKEN || rc == FUT_ENOMEM ||
	      rc == FUT_ENOTSUP);
	if (rc != FUT_OK)
		return;
	const void *out = NULL;
	size_t len = 0;
	rc = fut_result_bytes(f, 30, &out, &len);
	CHECK(rc == FUT_OK || rc == FUT_EBROKEN || rc == FUT_ENOMEM);
	if (rc == FUT_OK)
		CHECK(len == sizeof(int) && *(const int *)out == 49);
	fut_release(f);
}

/* RANK fails its n-th allocation from its fut_mpi_executor_new call on,
 * for n = 1, 2... until one is not reached; opts as given.  NOMEM_DEBUG
 * set: root prints each n (to find a hang). */
static int sweep(int who, const fut_mpi_opts *opts, const char *what)
{
	int rank = world_rank();
	long n = 1;
	for (; n <= 400; n++) {
		if (getenv("NOMEM_DEBUG") != NULL && rank == 0)
			fprintf(stderr, "n=%ld\n", n);
		if (rank == who)
			(void)fut__alloc_fail_nth(n);
		fut_executor *ex = NULL;
		int rc = fut_mpi_executor_new(&ex, opts);
		long left = 0;
		if (rank == who && rank != 0)
			left = fut__alloc_fail_nth(0);
		CHECK(rc == FUT_OK || rc == FUT_ENOMEM || rc == FUT_EBROKEN);
		CHECK((ex != NULL) == (rank == 0 && rc == FUT_OK));

		if (ex != NULL) {
			for (int i = 0; i < 4; i++)
				one_task(ex);
			fut_executor_free(ex);
		}
		if (rank == who && rank == 0)
			left = fut__alloc_fail_nth(0);
		CHECK(fut__mpi_live_objects() == 0);
		/* Root out of memory makes it FUT_ENOMEM and every server
		 * FUT_EBROKEN (docs/mpi.md).  After the handshake's verdict,
		 * root's failure left the servers FUT_OK, though no executor
		 * was made (found by review, 2026-12-07). */
		int roots = rc;
		CHECK(MPI_Bcast(&roots, 1, MPI_INT, 0, MPI_COMM_WORLD) ==
		      MPI_SUCCESS);
		if (who == 0 && rank != 0 && roots == FUT_ENOMEM &&
		    rc != FUT_EBROKEN) {
			fprintf(stderr, "%s: n=%ld: root %s, rank %d %s\n",
				what, n, fut_strerror(roots), rank,
				fut_strerror(rc));
			CHECK(rc == FUT_EBROKEN);
		}
		/* Done once the failure was not reached (left > 0). */
		long any = 0;
		CHECK(MPI_Allreduce(&left, &any, 1, MPI_LONG, MPI_MAX,
				    MPI_COMM_WORLD) == MPI_SUCCESS);
		if (any > 0)
			break;
	}
	CHECK(n <= 400);
	if (rank == 0)
		printf("%s: %ld allocations of rank %d failed in turn\n", what,
		       n - 1, who);
	return 0;
}

/* Runs on a server: from the allocation run[0] on, run[1] in a row fail
 * there, then it returns 4 bytes (copied to the stack: no allocation). */
static void fail_run_task(fut_task *t)
{
	const long *run = fut_task_input(t, NULL);
	(void)fut__alloc_fail_run(run[0], run[1]);
	fut_task_return_bytes(t, "four", 4);
}

/* The first task of a new executor (its server's frame of results has no
 * buffer yet, nor its link a table of sends) arms a run of failures
 * from allocation `from` on, `count` long; threads_per_rank as given.
 * Returns the future's outcome: its result must be right, a FUT_ENOMEM
 * must say "out of memory". */
static int first_task_with_failures(fut_executor *ex, long from, long count,
				    size_t threads)
{
	long run[2] = { from, count };
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, fail_run_task, run, sizeof(run), &f) ==
	      FUT_OK);
	/* The timeout only guards against the hang. */
	int rc = fut_result(f, 20, NULL);
	const char *message = rc == FUT_ETIMEDOUT ? "the future never ended" :
			      rc == FUT_OK	  ? "(none)" :
						    fut_error_message(f);
	fprintf(stderr, "%ld failures from the %ld-th, threads %zu: %s (%s)\n",
		count, from, threads, fut_strerror(rc), message);
	if (rc == FUT_ENOMEM)
		CHECK(strstr(message, "out of memory") != NULL);
	if (rc == FUT_OK) {
		const void *out = NULL;
		size_t len = 0;
		CHECK(fut_result_bytes(f, 0, &out, &len) == FUT_OK);
		CHECK(len == 4 && memcmp(out, "four", 4) == 0);
	}
	fut_release(f);
	return rc;
}

/* A task after the failures: its square, and nothing else will do (the
 * rank serves on, the executor is not broken). */
static void square_ok(fut_executor *ex)
{
	int x = 9;
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) == FUT_OK);
	const void *out = NULL;
	size_t len = 0;
	CHECK(fut_result_bytes(f, 20, &out, &len) == FUT_OK);
	CHECK(len == sizeof(int) && *(const int *)out == 81);
	fut_release(f);
}

/* lostresult and sendnomem (see the top): each run of failures on a new
 * executor's first task, which must end `want` (with a message that
 * says "out of memory" for FUT_ENOMEM); then the rank serves on. */
static int failure_runs(long from, const long *counts, size_t n, int want)
{
	for (size_t threads = 1; threads <= 2; threads++) {
		for (size_t i = 0; i < n; i++) {
			fut_executor *ex = NULL;
			CHECK(fut_mpi_executor_new(
				      &ex, &(fut_mpi_opts){
						   .threads_per_rank = threads,
					   }) == FUT_OK);
			if (ex == NULL) {
				/* A server: what the run left armed, off. */
				(void)fut__alloc_fail_nth(0);
				continue;
			}
			CHECK(first_task_with_failures(ex, from, counts[i],
						       threads) == want);
			square_ok(ex);
			fut_executor_free(ex);
			CHECK(fut__mpi_live_objects() == 0);
		}
	}
	return 0;
}

static int mode_lostresult(void)
{
	static const long counts[] = { 2, 3, 8 };
	return failure_runs(1, counts, 3, FUT_ENOMEM);
}

static int mode_sendnomem(void)
{
	static const long counts[] = { 1, 3, 10 };
	return failure_runs(2, counts, 3, FUT_OK);
}

/* shutdown(NOWAIT | CANCEL_PENDING) while the manager is handing a
 * window of large tasks to a rank: once it returns, no future is left
 * PENDING (each is cancelled, or was claimed RUNNING before), rounds
 * times. */
static int mode_cancel(void)
{
	enum {
		PREFETCH = 32,
		N = 3 * PREFETCH,
		LEN = 128 << 10,
		ROUNDS = 20
	};
	unsigned char *in = calloc(N, LEN);
	CHECK(in != NULL);
	int bad = 0;
	for (int round = 0; round < ROUNDS; round++) {
		fut_executor *ex = NULL;
		CHECK(fut_mpi_executor_new(
			      &ex, &(fut_mpi_opts){ .prefetch = PREFETCH }) ==
		      FUT_OK);
		if (ex == NULL)
			continue;
		fut_future *f[N];
		CHECK(fut_submit_many(ex, echo_task, in, LEN, N, f) == FUT_OK);
		/* The manager claims the first window's tasks one by one. */
		while (fut_state(f[0]) == FUT_PENDING)
			sched_yield();
		CHECK(fut_executor_shutdown(
			      ex, FUT_SHUTDOWN_NOWAIT |
					  FUT_SHUTDOWN_CANCEL_PENDING) ==
		      FUT_OK);
		int pending = 0;
		for (int i = 0; i < N; i++)
			pending += fut_state(f[i]) == FUT_PENDING;
		if (pending != 0) {
			fprintf(stderr, "round %d: %d futures still PENDING\n",
				round, pending);
			bad++;
		}
		for (int i = 0; i < N; i++) {
			int rc = fut_result(f[i], 30, NULL);
			CHECK(rc == FUT_OK || rc == FUT_ECANCELLED);
			fut_release(f[i]);
		}
		fut_executor_free(ex);
	}
	free(in);
	CHECK(bad == 0);
	return 0;
}

/* Returns fut_mpi_task_rank() of its own task. */
static void rank_task(fut_task *t)
{
	int r = fut_mpi_task_rank(t);
	fut_task_return_bytes(t, &r, sizeof(r));
}

/* fut_mpi_task_rank() of a task of a process pool made on each rank after
 * an ISOLATE executor served there: -1, a task of another executor (the
 * rank's number stayed set for every process forked since). */
static int mode_taskrank(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(
		      &ex, &(fut_mpi_opts){ .flags = FUT_MPI_ISOLATE }) ==
	      FUT_OK);
	if (ex != NULL) {
		fut_future *f;
		CHECK(fut_submit_bytes(ex, rank_task, NULL, 0, &f) == FUT_OK);
		const void *out = NULL;
		size_t len = 0;
		CHECK(fut_result_bytes(f, 30, &out, &len) == FUT_OK);
		CHECK(len == sizeof(int) && *(const int *)out >= 1);
		fut_release(f);
		fut_executor_free(ex);
	}
	fut_executor *pool = NULL;
	CHECK(fut_process_pool_new(&pool, NULL) == FUT_OK);
	fut_future *f;
	CHECK(fut_submit_bytes(pool, rank_task, NULL, 0, &f) == FUT_OK);
	const void *out = NULL;
	size_t len = 0;
	CHECK(fut_result_bytes(f, 30, &out, &len) == FUT_OK);
	CHECK(len == sizeof(int));
	int r = *(const int *)out;
	fut_release(f);
	fut_executor_free(pool);
	if (r != -1)
		fprintf(stderr, "rank %d: a process pool's task got rank %d\n",
			world_rank(), r);
	/* Every rank's verdict, and a plain exit: an exit(1) of a rank
	 * while its fork server ends hung mpirun now and then. */
	int bad = r != -1, any = 0;
	CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) ==
	      MPI_SUCCESS);
	return any;
}

/*
 * forkint: a fork child interrupts a future it inherited from the
 * client while the parent's client lock was held at the fork (as the
 * manager holds it in its loop): the child's copy of that lock stays
 * held for good.  fut_interrupt there must not take it (docs/api.md,
 * "Executors in a fork child"); before the fix the child hung until its
 * alarm.  The lock is held by the test, across the fork, to make the
 * case certain.
 */
static void spin_until_interrupted(fut_task *t)
{
	for (int i = 0; i < 30000 && !fut_task_cancelled(t); i++) {
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	(void)fut_task_return_bytes(t, NULL, 0);
}

static int mode_forkint(void)
{
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, NULL) == FUT_OK);
	if (ex == NULL)
		return 0; /* a server: it served */
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, spin_until_interrupted, NULL, 0, &f) ==
	      FUT_OK);
	for (int i = 0; fut_state(f) != FUT_RUNNING; i++) {
		CHECK(i < 30000);
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	struct mclient *c = fut__mpi_client_of(ex);
	pthread_mutex_lock(&c->lock);
	pid_t pid = fork();
	if (pid == 0) {
		alarm(10);
		_exit(fut_interrupt(f) == FUT_OK ? 0 : 1);
	}
	pthread_mutex_unlock(&c->lock);
	CHECK(pid > 0);
	int status = 0;
	CHECK(waitpid(pid, &status, 0) == pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fprintf(stderr, "forkint: the child ended with status %#x\n",
			status);
	CHECK(fut_interrupt(f) == FUT_OK);
	CHECK(fut_wait(&f, 1, FUT_ALL_COMPLETED, 30) == FUT_OK);
	fut_release(f);
	fut_executor_free(ex);
	return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

/* nowaitfin, nowaitbusy: MPI calls of other threads from MPI_Finalize's
 * start on (pmpi_watch.h). */
/* Every future done, shutdown(NOWAIT), then MPI_Finalize at once, never
 * freed.  The servers nap up to 0.5 s (each rank passes its own poll
 * times) when the STOP comes: the manager, which sent it after
 * shutdown returned, was probing for their BYE as finalize began. */
static int mode_nowaitfin(void)
{
	bool root = world_rank() == 0;
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(
		      &ex, &(fut_mpi_opts){ .poll_backoff = root ? 0 : 0.5 }) ==
	      FUT_OK);
	if (ex == NULL)
		return 0;
	int x = 5;
	fut_future *f;
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &f) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
	/* The servers nap 0.5 s at a time by now. */
	nanosleep(&(struct timespec){ 1, 500000000 }, NULL);
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	atomic_store(&watch_finalize, true);
	return 0;
}

/* Rank 1's first allocation, its module list's, fails: that rank's call
 * returns FUT_ENOMEM, every other's FUT_EBROKEN (it returned EBROKEN
 * too, as if its initializer had failed). */
static int mode_modnomem(void)
{
	int rank = world_rank();
	if (rank == 1)
		(void)fut__alloc_fail_nth(1);
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, NULL);
	long left = rank == 1 ? fut__alloc_fail_nth(0) : 0;
	if (rank == 1 && left > 0) {
		fprintf(stderr, "modnomem: no allocation failed\n");
		return 1;
	}
	if (rc != (rank == 1 ? FUT_ENOMEM : FUT_EBROKEN) || ex != NULL) {
		fprintf(stderr, "modnomem: rank %d: %s\n", rank,
			fut_strerror(rc));
		return 1;
	}
	return 0;
}

static void nap_task(fut_task *t)
{
	nanosleep(&(struct timespec){ 0, 300000000 }, NULL);
	fut_task_return_bytes(t, "ok", 2);
}

/* nowaitfin with a task running at the shutdown: its caller waits for
 * its result, then MPI_Finalize.  The manager sent the STOPs after that
 * last completion, and probed for the BYEs as finalize began. */
static int mode_nowaitbusy(void)
{
	bool root = world_rank() == 0;
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(
		      &ex, &(fut_mpi_opts){ .poll_backoff = root ? 0 : 0.5 }) ==
	      FUT_OK);
	if (ex == NULL)
		return 0;
	/* The servers nap 0.5 s at a time by now. */
	nanosleep(&(struct timespec){ 1, 500000000 }, NULL);
	fut_future *f;
	CHECK(fut_submit_bytes(ex, nap_task, NULL, 0, &f) == FUT_OK);
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	CHECK(fut_result(f, 30, NULL) == FUT_OK);
	fut_release(f);
	atomic_store(&watch_finalize, true);
	return 0;
}

static void byte_task(fut_task *t)
{
	fut_task_return_bytes(t, "b", 1);
}

/* A results message of more than FUT__MPI_HELD_MAX (256) records whose
 * last completes the last job in flight, after shutdown(NOWAIT): the
 * manager completed the first 256 at the last one's record, and with it
 * the last job (go_quiet(): the STOPs go, the BYEs come, the communicator
 * is freed), then the rest, and went quiet again: MPI_Iprobe on the freed
 * communicator, MPI_ERR_COMM, the job aborted (found by review,
 * 2026-12-07).  With prefetch 1024 the 514 tasks go to one server in one
 * message, and it answers the first alone and the other 513 (2 x 256 +
 * 1) in one message. */
static int mode_heldstop(void)
{
	enum {
		N = 514
	};
	for (int round = 0; round < 4; round++) {
		fut_executor *ex = NULL;
		CHECK(fut_mpi_executor_new(
			      &ex, &(fut_mpi_opts){ .prefetch = 1024 }) ==
		      FUT_OK);
		if (ex == NULL)
			continue;
		static unsigned char in[N];
		static fut_future *f[N];
		CHECK(fut_submit_many(ex, byte_task, in, 1, N, f) == FUT_OK);
		CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
		for (size_t i = 0; i < N; i++) {
			const void *d;
			size_t len;
			CHECK(fut_result_bytes(f[i], 30, &d, &len) == FUT_OK &&
			      len == 1);
			fut_release(f[i]);
		}
		fut_executor_free(ex);
	}
	return 0;
}

static void tenth_task(fut_task *t)
{
	nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
	fut_task_return_bytes(t, "ok", 2);
}

/* nowaitfin with most jobs cancelled while queued: the queue still held
 * them (a cancelled job leaves it when dispatch pops it, at most
 * `prefetch` a rank a pass), so the manager took the executor for busy:
 * shutdown(NOWAIT) returned at once, and the STOPs went, and the BYEs
 * were probed for, while MPI_Finalize ran (found by review, 2026-12-07:
 * 1,500-2,300 calls of the manager's inside it). */
static int mode_cancelfin(void)
{
	enum {
		N = 20000
	};
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (ex == NULL)
		return 0;
	static unsigned char in[N];
	static fut_future *f[N];
	CHECK(fut_submit_many(ex, tenth_task, in, 1, N, f) == FUT_OK);
	size_t cancelled = 0;
	for (size_t i = 0; i < N; i++)
		cancelled += fut_cancel(f[i]);
	CHECK(cancelled > N - 10);
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	for (size_t i = 0; i < N; i++) {
		int rc = fut_wait(&f[i], 1, FUT_ALL_COMPLETED, 30);
		CHECK(rc == FUT_OK);
		fut_release(f[i]);
	}
	atomic_store(&watch_finalize, true);
	return 0;
}

/* 1 if the calling thread blocks SIGUSR2 and not SIGTERM (the mask
 * mode_sigmask() gives every rank), else 0. */
static int mask_is_the_makers(void)
{
	sigset_t m;
	if (pthread_sigmask(SIG_BLOCK, NULL, &m) != 0)
		return 0;
	return sigismember(&m, SIGUSR2) == 1 && sigismember(&m, SIGTERM) == 0;
}

static void mask_task(fut_task *t)
{
	nanosleep(&(struct timespec){ 0, 20000000 }, NULL);
	int ok = mask_is_the_makers();
	fut_task_return_bytes(t, &ok, sizeof(ok));
}

static atomic_int callback_saw; /* 0: not run; 1: the maker's mask; 2: not */

static void mask_callback(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&callback_saw, mask_is_the_makers() ? 1 : 2);
}

static int mode_sigmask(void)
{
	sigset_t usr2, old;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	CHECK(pthread_sigmask(SIG_SETMASK, &usr2, &old) == 0);
	for (size_t threads = 1; threads <= 2; threads++) {
		fut_executor *ex = NULL;
		CHECK(fut_mpi_executor_new(
			      &ex,
			      &(fut_mpi_opts){ .threads_per_rank = threads }) ==
		      FUT_OK);
		if (ex == NULL)
			continue;
		fut_future *fs[8];
		for (size_t i = 0; i < 8; i++)
			CHECK(fut_submit_bytes(ex, mask_task, NULL, 0,
					       &fs[i]) == FUT_OK);
		atomic_store(&callback_saw, 0);
		CHECK(fut_add_done_callback(fs[7], mask_callback, NULL) ==
		      FUT_OK);
		for (size_t i = 0; i < 8; i++) {
			const void *d = NULL;
			size_t len = 0;
			CHECK(fut_result_bytes(fs[i], 30, &d, &len) == FUT_OK);
			int ok = 0;
			if (len == sizeof(ok))
				memcpy(&ok, d, sizeof(ok));
			if (!ok)
				fprintf(stderr,
					"sigmask: task %zu (threads_per_rank"
					" %zu) ran with another mask\n",
					i, threads);
			CHECK(ok == 1);
		}
		for (int i = 0; i < 3000 && atomic_load(&callback_saw) == 0;
		     i++)
			nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
		CHECK(atomic_load(&callback_saw) == 1);
		for (size_t i = 0; i < 8; i++)
			fut_release(fs[i]);
		fut_executor_free(ex);
	}
	CHECK(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0);
	return 0;
}

/* mode_drainwait(): j1's callback waits for j2, drained together. */
static fut_future *dw_j2;
static _Atomic int dw_rc = -1; /* j2's code, as that wait saw it */
static _Atomic bool dw_first;  /* j2 was done as the callback began */

static void dw_j1_callback(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&dw_first, fut_done(dw_j2));
	atomic_store(&dw_rc, fut_result(dw_j2, FUT_FOREVER, NULL));
}

static bool dw_queued(struct mclient *c, fut_future *f)
{
	bool found = false;
	pthread_mutex_lock(&c->lock);
	for (struct mjob *j = c->qhead; j != NULL && !found; j = j->next)
		found = &j->fut == f;
	pthread_mutex_unlock(&c->lock);
	return found;
}

static int mode_drainwait(void)
{
	enum {
		SLOW = 8
	};
	fut_executor *ex = NULL;
	CHECK(fut_mpi_executor_new(&ex, &(fut_mpi_opts){ .prefetch = 1 }) ==
	      FUT_OK);
	if (ex == NULL)
		return 0;
	int x = 3;
	fut_future *slow[SLOW], *j1 = NULL;
	for (int i = 0; i < SLOW; i++)
		CHECK(fut_submit_bytes(ex, slow_square_task, &x, sizeof(x),
				       &slow[i]) == FUT_OK);
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &j1) == FUT_OK);
	CHECK(fut_submit_bytes(ex, square_task, &x, sizeof(x), &dw_j2) ==
	      FUT_OK);
	CHECK(fut_add_done_callback(j1, dw_j1_callback, NULL) == FUT_OK);
	struct mclient *c = fut__mpi_client_of(ex);
	CHECK(dw_queued(c, j1) && dw_queued(c, dw_j2));
	CHECK(fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING |
						FUT_SHUTDOWN_NOWAIT) == FUT_OK);
	CHECK(atomic_load(&dw_first));
	CHECK(atomic_load(&dw_rc) == FUT_ECANCELLED);
	for (int i = 0; i < SLOW; i++) {
		int rc = fut_result(slow[i], 30, NULL);
		CHECK(rc == FUT_OK || rc == FUT_ECANCELLED);
		fut_release(slow[i]);
	}
	fut_release(j1);
	fut_release(dw_j2);
	fut_executor_free(ex);
	return 0;
}

int main(int argc, char **argv)
{
	main_thread = pthread_self();
	init_mpi(&argc, &argv);
	int rank = world_rank();
	const char *mode = argc > 1 ? argv[1] : "";
	int rc;
	if (strcmp(mode, "sweep") == 0 && argc > 2)
		rc = sweep(atoi(argv[2]), NULL, mode);
	else if (strcmp(mode, "threads") == 0)
		rc = sweep(1, &(fut_mpi_opts){ .threads_per_rank = 2 }, mode);
	else if (strcmp(mode, "cancel") == 0)
		rc = mode_cancel();
	else if (strcmp(mode, "lostresult") == 0)
		rc = mode_lostresult();
	else if (strcmp(mode, "sendnomem") == 0)
		rc = mode_sendnomem();
	else if (strcmp(mode, "taskrank") == 0)
		rc = mode_taskrank();
	else if (strcmp(mode, "forkint") == 0)
		rc = mode_forkint();
	else if (strcmp(mode, "nowaitfin") == 0)
		rc = mode_nowaitfin();
	else if (strcmp(mode, "nowaitbusy") == 0)
		rc = mode_nowaitbusy();
	else if (strcmp(mode, "modnomem") == 0)
		rc = mode_modnomem();
	else if (strcmp(mode, "heldstop") == 0)
		rc = mode_heldstop();
	else if (strcmp(mode, "cancelfin") == 0)
		rc = mode_cancelfin();
	else if (strcmp(mode, "sigmask") == 0)
		rc = mode_sigmask();
	else if (strcmp(mode, "drainwait") == 0)
		rc = mode_drainwait();
	else if (strcmp(mode, "isolate") == 0)
		rc = sweep(1, &(fut_mpi_opts){ .flags = FUT_MPI_ISOLATE },
			   mode);
	else {
		fprintf(stderr,
			"usage: %s sweep RANK|threads|isolate|cancel|taskrank|"
			"forkint|lostresult|sendnomem|nowaitfin|nowaitbusy|"
			"modnomem|heldstop|cancelfin|sigmask|drainwait\n",
			argv[0]);
		rc = 2;
	}
	return finalize_and_report(mode, rank, "as MPI_Finalize began", rc);
}
