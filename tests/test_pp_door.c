/*
 * test_pp_door.c: a task handed to an idle worker by the thread that
 * submits it, while the manager sleeps (src/process_pool/door.c), ends as
 * any other: with its result, crashed when its worker dies, cancelled by
 * an interrupt, a cancel or a shutdown; and many threads submitting at
 * once each get their own results.  Each test waits until the manager
 * sleeps with a door open, then checks that the submit went through it
 * (the pool's count of tasks handed off).
 */
#include "pp_test.h"

static struct ppool *ppool_of(fut_executor *ex)
{
	return fut__container_of(ex, struct ppool, ex);
}

static uint64_t handed(fut_executor *ex)
{
	struct ppool *p = ppool_of(ex);
	fut__pp_lock(p);
	uint64_t n = p->handed;
	fut__pp_unlock(p);
	return n;
}

/* Waits until the manager sleeps with the door of an idle worker open.
 * An idle pool's manager sleeps with no timeout: the door stays open
 * until a submit or a worker wakes it. */
static void wait_door(fut_executor *ex)
{
	struct ppool *p = ppool_of(ex);
	for (long i = 0;; i++) {
		CHECK(i < 1200000); /* LONG_WAIT at 0.1 ms a round */
		fut__pp_lock(p);
		size_t doors = p->doors;
		fut__pp_unlock(p);
		if (doors != 0)
			return;
		struct timespec ts = { 0, 100000 };
		(void)nanosleep(&ts, NULL);
	}
}

/* Submits op once a door is open; *through: whether the submitting
 * thread sent it.  A late word of a worker (a task cancelled before its
 * claim, read after it) may wake the manager between the two, and the
 * door closes: then the manager sends it. */
static fut_future *try_hand_off(fut_executor *ex, uint32_t op, uint64_t v,
				bool *through)
{
	wait_door(ex);
	uint64_t before = handed(ex);
	fut_future *f = submit_op(ex, op, 0, v);
	*through = handed(ex) == before + 1;
	return f;
}

/*
 * Runs scene(ex, &through) until its task went through a door, at most
 * TRIES times.  Between the look at the door and the submit the manager
 * can wake for another reason (a worker's late word, or the fork
 * server's word of a worker's start, read late on a loaded machine: 1
 * run in ~100 of a check loop beside a stress); it closes the door and
 * sends the task itself.  A scene checks its task's ending whichever way
 * it went, and each try is a new pool.
 */
enum {
	TRIES = 5,
};

static void until_handed(void (*scene)(fut_executor *ex, bool *through))
{
	int tries = 0;
	bool through = false;
	while (!through) {
		CHECK(tries++ < TRIES);
		fut_executor *ex = new_pool(1);
		scene(ex, &through);
		fut_executor_free(ex);
	}
	if (tries > 1)
		print_message("handed off at try %d\n", tries);
}

/* The pid of the pool's one worker (a pool of one). */
static uint64_t worker_pid(fut_executor *ex)
{
	atomic_store(started, 0);
	fut_future *f = submit_op(ex, OP_MEET, 1, 0);
	uint64_t pid = result_u64(f);
	fut_release(f);
	return pid;
}

/* Twenty tasks one after another, each through the door if it can. */
static void twenty_squares(fut_executor *ex, bool *through)
{
	expect_square(submit_op(ex, OP_SQUARE, 0, 3), 3);
	unsigned n = 0;
	for (uint64_t v = 0; v < 20; v++) {
		bool was = false;
		expect_square(try_hand_off(ex, OP_SQUARE, v, &was), v);
		n += was;
	}
	*through = n == 20;
}

static void test_tasks_handed_to_an_idle_worker_give_their_results(void **state)
{
	(void)state;
	until_handed(twenty_squares);
}

static void a_crash_then_a_square(fut_executor *ex, bool *through)
{
	expect_square(submit_op(ex, OP_SQUARE, 0, 3), 3);
	bool crashed = false, squared = false;
	fut_future *f = try_hand_off(ex, OP_SEGV, 0, &crashed);
	expect_failure(f, FUT_ECRASHED, "SIGSEGV");
	/* A new worker takes the next (queued: no worker idles until it
	 * comes), and then one through its door. */
	expect_square(submit_op(ex, OP_SQUARE, 0, 5), 5);
	expect_square(try_hand_off(ex, OP_SQUARE, 7, &squared), 7);
	*through = crashed && squared;
}

static void
test_a_handed_task_that_crashes_its_worker_ends_crashed(void **state)
{
	(void)state;
	until_handed(a_crash_then_a_square);
}

static void a_blocked_task_killed(fut_executor *ex, bool *through)
{
	pid_t pid = (pid_t)worker_pid(ex);
	atomic_store(started, 0);
	fut_future *f = try_hand_off(ex, OP_BLOCK, 1, through);
	wait_started(&f, 1, 1);
	CHECK(kill(pid, SIGKILL) == 0);
	expect_failure(f, FUT_ECRASHED, "SIGKILL");
	expect_square(submit_op(ex, OP_SQUARE, 0, 6), 6);
}

static void
test_a_worker_killed_after_a_hand_off_ends_its_task_crashed(void **state)
{
	(void)state;
	until_handed(a_blocked_task_killed);
}

/* The interrupt kills the worker that runs the task. */
static void a_blocked_task_interrupted(fut_executor *ex, bool *through)
{
	uint64_t pid = worker_pid(ex);
	atomic_store(started, 0);
	fut_future *f = try_hand_off(ex, OP_BLOCK, 1, through);
	wait_started(&f, 1, 1);
	CHECK(fut_interrupt(f) == FUT_OK);
	CHECK(final_code(f) == FUT_ECANCELLED);
	fut_release(f);
	CHECK(worker_pid(ex) != pid);
}

static void test_an_interrupt_reaches_a_handed_task(void **state)
{
	(void)state;
	until_handed(a_blocked_task_interrupted);
}

/* A cancel right after the hand-off races the worker's claim: whichever
 * wins, the future ends once, as it says, and the worker lives on (a
 * result for a task taken back would have it killed as a liar). */
static void test_a_cancel_racing_a_hand_off_ends_the_task_once(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	uint64_t pid = worker_pid(ex);
	unsigned cancelled = 0, through = 0;
	for (uint64_t v = 0; v < 200; v++) {
		/* The cancel of the task before, read by its worker after its
		 * hand-off, may wake the manager as this one is submitted: the
		 * manager sends that one, and the race is the dispatch's. */
		bool was = false;
		fut_future *f = try_hand_off(ex, OP_SQUARE, v, &was);
		through += was;
		bool c = fut_cancel(f);
		if (c) {
			CHECK(final_code(f) == FUT_ECANCELLED);
			CHECK(fut_cancelled(f));
			fut_release(f);
			cancelled++;
		} else {
			expect_square(f, v);
		}
	}
	print_message("%u of 200 tasks cancelled before they ran; %u of "
		      "200 handed off\n",
		      cancelled, through);
	CHECK(through > 0);
	CHECK(worker_pid(ex) == pid);
	fut_executor_free(ex);
}

static unsigned shutdown_flags;

static void a_shutdown_right_after(fut_executor *ex, bool *through)
{
	expect_square(submit_op(ex, OP_SQUARE, 0, 3), 3);
	fut_future *f = try_hand_off(ex, OP_SQUARE, 4, through);
	CHECK(fut_executor_shutdown(ex, shutdown_flags) == FUT_OK);
	/* Done when the shutdown returns: it ran, or it was cancelled
	 * before its worker started it. */
	int st = fut_state(f);
	CHECK(st == FUT_FINISHED || st == FUT_CANCELLED);
	if (shutdown_flags == 0 || st == FUT_FINISHED)
		expect_square(f, 4);
	else
		fut_release(f);
}

static void test_shutdown_right_after_a_hand_off_ends_the_task(void **state)
{
	(void)state;
	for (shutdown_flags = 0; shutdown_flags <= FUT_SHUTDOWN_CANCEL_PENDING;
	     shutdown_flags += FUT_SHUTDOWN_CANCEL_PENDING)
		until_handed(a_shutdown_right_after);
}

enum {
	THREADS = 8,
	PER_THREAD = 300,
};

struct submitter {
	fut_executor *ex;
	uint64_t base;
	pthread_t thread;
};

static void *submit_and_wait(void *arg)
{
	struct submitter *s = arg;
	for (uint64_t i = 0; i < PER_THREAD; i++)
		expect_square(submit_op(s->ex, OP_SQUARE, 0, s->base + i),
			      s->base + i);
	return NULL;
}

static void
test_many_threads_submitting_at_once_get_their_own_results(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	start_two_workers(ex);
	struct submitter s[THREADS];
	for (int i = 0; i < THREADS; i++) {
		s[i] = (struct submitter){ .ex = ex,
					   .base = (uint64_t)i * 1000000 };
		CHECK(pthread_create(&s[i].thread, NULL, submit_and_wait,
				     &s[i]) == 0);
	}
	for (int i = 0; i < THREADS; i++)
		CHECK(pthread_join(s[i].thread, NULL) == 0);
	print_message("%llu of %d tasks handed off\n",
		      (unsigned long long)handed(ex), THREADS * PER_THREAD);
	fut_executor_free(ex);
}

/* With a task_timeout the manager times every task from its start: no
 * door opens, every task goes through the queue. */
static void test_no_door_opens_with_a_task_timeout(void **state)
{
	(void)state;
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .task_timeout = 60 });
	for (uint64_t v = 0; v < 20; v++)
		expect_square(submit_op(ex, OP_SQUARE, 0, v), v);
	CHECK(handed(ex) == 0);
	fut_executor_free(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_tasks_handed_to_an_idle_worker_give_their_results),
		cmocka_unit_test(
			test_a_handed_task_that_crashes_its_worker_ends_crashed),
		cmocka_unit_test(
			test_a_worker_killed_after_a_hand_off_ends_its_task_crashed),
		cmocka_unit_test(test_an_interrupt_reaches_a_handed_task),
		cmocka_unit_test(
			test_a_cancel_racing_a_hand_off_ends_the_task_once),
		cmocka_unit_test(
			test_shutdown_right_after_a_hand_off_ends_the_task),
		cmocka_unit_test(
			test_many_threads_submitting_at_once_get_their_own_results),
		cmocka_unit_test(test_no_door_opens_with_a_task_timeout),
	};
	if (!pp_test_prepare())
		return 2;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
