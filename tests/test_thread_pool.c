/*
 * test_thread_pool.c: the thread-pool executor.
 *
 * Synchronisation in these tests is by semaphores, barriers and futures;
 * where a test must know that a thread is blocked inside the library it
 * polls the pool's own counter (fut__tp_blocked_submitters) with
 * sched_yield, never a sleep.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "thread_pool/pool.h"
#include "proc_helpers.h"
#include "test_env.h"

static fut_executor *new_pool(size_t workers)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex,
					     &(fut_thread_pool_opts){
						     .max_workers = workers }),
			 FUT_OK);
	assert_non_null(ex);
	return ex;
}

static int init_ok(void *arg)
{
	if (arg != NULL)
		atomic_fetch_add((_Atomic int *)arg, 1);
	return 0;
}

/* A pool with an initializer: tasks then run only in workers (a waiter
 * never runs them inline). */
static fut_executor *new_worker_only_pool(size_t workers, _Atomic int *inits)
{
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_thread_pool_new(
			&ex,
			&(fut_thread_pool_opts){ .max_workers = workers,
						 .initializer = init_ok,
						 .initarg = (void *)inits }),
		FUT_OK);
	return ex;
}

static void plus_one(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

static void twice_plus_one(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) * 2 + 1));
}

static void sum_bytes(fut_task *t);

static uintptr_t result_of(fut_future *f)
{
	void *v = NULL;
	assert_int_equal(fut_result(f, FUT_FOREVER, &v), FUT_OK);
	return (uintptr_t)v;
}

/* ------------------------------------------------------------------ */

static void test_submit_returns_the_task_value(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, plus_one, (void *)41, &f), FUT_OK);
	assert_int_equal(result_of(f), 42);
	assert_int_equal(fut_error(f), FUT_OK);
	fut_release(f);
	fut_executor_free(ex);
}

/* Returns the input bytes reversed. */
static void reverse(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	unsigned char *out = malloc(len ? len : 1);
	for (size_t i = 0; i < len; i++)
		out[i] = in[len - 1 - i];
	fut_task_return_bytes(t, out, len);
	free(out);
}

static void test_submit_bytes_gives_the_task_a_private_copy(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	size_t sizes[] = { 0, 1, 64, 65, 5000 };
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t n = sizes[k];
		unsigned char *buf = malloc(n ? n : 1);
		for (size_t i = 0; i < n; i++)
			buf[i] = (unsigned char)i;
		fut_future *f = NULL;
		assert_int_equal(fut_submit_bytes(ex, reverse, buf, n, &f),
				 FUT_OK);
		memset(buf, 0xee, n); /* the task has its own copy */
		const void *data = NULL;
		size_t len = 99;
		assert_int_equal(fut_result_bytes(f, FUT_FOREVER, &data, &len),
				 FUT_OK);
		assert_int_equal(len, n);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(((const unsigned char *)data)[i],
					 (unsigned char)(n - 1 - i));
		fut_release(f);
		free(buf);
	}
	fut_executor_free(ex);
}

static void test_sequential_submit_and_wait_uses_one_thread(void **state)
{
	(void)state;
	_Atomic int inits = 0;
	fut_executor *ex = new_worker_only_pool(8, &inits);
	for (uintptr_t i = 0; i < 200; i++) {
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, plus_one, (void *)i, &f),
				 FUT_OK);
		assert_int_equal(result_of(f), i + 1);
		fut_release(f);
	}
	assert_int_equal(fut__tp_threads(ex), 1);
	fut_executor_free(ex);
	assert_int_equal(atomic_load(&inits), 1);

	/* Without an initializer the waiter may run tasks inline: still
	 * one worker thread at most. */
	ex = new_pool(8);
	for (uintptr_t i = 0; i < 200; i++) {
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, plus_one, (void *)i, &f),
				 FUT_OK);
		assert_int_equal(result_of(f), i + 1);
		fut_release(f);
	}
	assert_int_equal(fut__tp_threads(ex), 1);
	fut_executor_free(ex);
}

/* Blocks on the semaphore in its argument. */
struct gate {
	sem_t started;
	sem_t release;
};

static void gated(fut_task *t)
{
	struct gate *g = fut_task_arg(t);
	sem_post(&g->started);
	sem_wait(&g->release);
	fut_task_return(t, (void *)1);
}

static void gate_init(struct gate *g)
{
	sem_init(&g->started, 0, 0);
	sem_init(&g->release, 0, 0);
}

static void gate_fini(struct gate *g)
{
	sem_destroy(&g->started);
	sem_destroy(&g->release);
}

/* Submits a task that blocks on g and waits until it runs: a worker of
 * ex is busy until sem_post(&g->release).  Its future (result 1). */
static fut_future *occupy_worker(fut_executor *ex, struct gate *g)
{
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, gated, g, &f), FUT_OK);
	sem_wait(&g->started);
	return f;
}

/* A pool of one worker and a queue of max_queue jobs. */
static fut_executor *bounded_pool(size_t max_queue)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex,
					     &(fut_thread_pool_opts){
						     .max_workers = 1,
						     .max_queue = max_queue }),
			 FUT_OK);
	return ex;
}

/* Returns the scheduling policy, or the thread id, of the thread that
 * runs it. */
static void report_policy(fut_task *t)
{
	fut_task_return(t, (void *)(intptr_t)sched_getscheduler(0));
}

static void report_tid(fut_task *t)
{
	fut_task_return(t, (void *)(intptr_t)gettid());
}

/* Waits (up to 10 s) until the worker tid sleeps with policy `want`. */
static bool sleeps_with_policy(pid_t tid, int want)
{
	int64_t deadline = fut__now_ns() + 10 * (int64_t)1000000000;
	while (fut__now_ns() < deadline) {
		char id[16], st = '?';
		int ppid;
		snprintf(id, sizeof(id), "%d", (int)tid);
		if (read_stat(id, &ppid, &st) && st == 'S' &&
		    sched_getscheduler(tid) == want)
			return true;
		usleep(1000);
	}
	return false;
}

/* A one-worker pool whose worker the calling thread starts (a worker
 * inherits the policy of the thread whose submit starts it); *tid gets
 * the worker's thread id. */
static fut_executor *pool_started_here(pid_t *tid)
{
	fut_executor *ex = new_worker_only_pool(1, NULL);
	fut_future *f = NULL;
	*tid = fut_submit(ex, report_tid, NULL, &f) == FUT_OK ?
		       (pid_t)result_of(f) :
		       -1;
	fut_release(f);
	return ex;
}

/* Checks what the worker tid of ex sleeps and runs its tasks with. */
static void check_worker_policies(fut_executor *ex, pid_t tid, int runs_with,
				  int sleeps_with)
{
	assert_true(tid > 0);
	for (int i = 0; i < 3; i++) {
		assert_true(sleeps_with_policy(tid, sleeps_with));
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, report_policy, NULL, &f),
				 FUT_OK);
		assert_int_equal((int)result_of(f), runs_with);
		fut_release(f);
	}
	fut_executor_free(ex);
}

/* Gives its worker SCHED_IDLE; returns the worker's thread id. */
static void become_idle(fut_task *t)
{
	struct sched_param sp = { 0 };
	int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	fut_task_return(t, (void *)(intptr_t)(rc == 0 ? gettid() : -1));
}

/* Takes SCHED_IDLE, then starts a pool's worker (no assertion here: a
 * failed one must be in the test's thread). */
struct idle_start {
	fut_executor *ex;
	pid_t tid;
};

static void *idle_policy_thread(void *arg)
{
	struct idle_start *st = arg;
	struct sched_param sp = { 0 };
	st->tid = -1;
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) == 0)
		st->ex = pool_started_here(&st->tid);
	return NULL;
}

/*
 * The pool never changes a worker's scheduling policy (0.1.0 slept idle
 * workers as SCHED_BATCH; it won nothing measurable once tasks were no
 * longer parked per worker, docs/design-thread-pool.md): a worker runs and
 * sleeps with the policy it was started with, inherited from the thread
 * whose submit started it (here SCHED_OTHER, then SCHED_IDLE, which an
 * unprivileged thread may take), or the one a task gave it.
 */
static void test_the_pool_never_changes_a_worker_policy(void **state)
{
	(void)state;
	pid_t tid = -1;
	fut_executor *ex = pool_started_here(&tid);
	check_worker_policies(ex, tid, SCHED_OTHER, SCHED_OTHER);
	struct idle_start st = { 0 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, idle_policy_thread, &st), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_non_null(st.ex);
	check_worker_policies(st.ex, st.tid, SCHED_IDLE, SCHED_IDLE);

	/* A task that gives its own worker another policy: kept too. */
	ex = new_worker_only_pool(1, NULL);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, become_idle, NULL, &f), FUT_OK);
	tid = (pid_t)(intptr_t)result_of(f);
	fut_release(f);
	check_worker_policies(ex, tid, SCHED_IDLE, SCHED_IDLE);
}

/* Tasks that give back the cpus their thread may run on, each waiting
 * until all PLACED_TASKS have run (so that each has a thread of its
 * own), or 10 s. */
enum {
	PLACED_TASKS = 8
};
static _Atomic int placed_arrived;

static void report_cpus(fut_task *t)
{
	cpu_set_t *out = fut_task_arg(t);
	atomic_fetch_add(&placed_arrived, 1);
	for (int i = 0;
	     i < 10000 && atomic_load(&placed_arrived) < PLACED_TASKS; i++)
		usleep(1000);
	if (pthread_getaffinity_np(pthread_self(), sizeof(*out), out) != 0)
		fut_task_fail(t, FUT_ESYS, "pthread_getaffinity_np");
	else
		fut_task_return(t, NULL);
}

/* A new pool's workers, started by submits on `cpus` (tasks pushed
 * between the starts, so the later ones are placed too): each one's
 * cpus must be `cpus`. */
static void check_worker_cpus(const cpu_set_t *cpus)
{
	cpu_set_t old, got[PLACED_TASKS];
	assert_int_equal(
		pthread_getaffinity_np(pthread_self(), sizeof(old), &old), 0);
	assert_int_equal(
		pthread_setaffinity_np(pthread_self(), sizeof(*cpus), cpus), 0);
	fut_executor *ex = new_pool(PLACED_TASKS);
	fut_future *f[PLACED_TASKS];
	atomic_store(&placed_arrived, 0);
	for (int i = 0; i < PLACED_TASKS; i++) {
		CPU_ZERO(&got[i]);
		assert_int_equal(fut_submit(ex, report_cpus, &got[i], &f[i]),
				 FUT_OK);
	}
	for (int i = 0; i < PLACED_TASKS; i++) {
		assert_int_equal(fut_result(f[i], 20.0, NULL), FUT_OK);
		fut_release(f[i]);
		assert_true(CPU_EQUAL(&got[i], cpus));
	}
	fut_executor_free(ex);
	assert_int_equal(
		pthread_setaffinity_np(pthread_self(), sizeof(old), &old), 0);
}

/*
 * Threads start away from their submitter's cpu while it submits (start.c,
 * "Placement"), then run where the submitter may: on all its cpus, on
 * the one cpu of a submitter pinned there (nothing else to start on),
 * and on a submitter's pair of cpus.
 */
static void test_workers_take_the_submitters_cpus(void **state)
{
	(void)state;
	cpu_set_t all;
	assert_int_equal(
		pthread_getaffinity_np(pthread_self(), sizeof(all), &all), 0);
	check_worker_cpus(&all);

	int here = sched_getcpu();
	assert_true(here >= 0);
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(here, &one);
	check_worker_cpus(&one);

	if (CPU_COUNT(&all) >= 3) { /* two of them, not all */
		cpu_set_t two;
		CPU_ZERO(&two);
		for (int c = 0; c < CPU_SETSIZE && CPU_COUNT(&two) < 2; c++)
			if (CPU_ISSET(c, &all))
				CPU_SET(c, &two);
		check_worker_cpus(&two);
	}
}

/* A task that moves its own thread onto `moved`, then submits one that
 * needs a thread of its own (a timed wait runs nothing inline) and
 * reports that thread's cpus in `got`. */
struct mover {
	fut_executor *ex;
	cpu_set_t moved, got;
};

static void report_own_cpus(fut_task *t)
{
	cpu_set_t *out = fut_task_arg(t);
	if (pthread_getaffinity_np(pthread_self(), sizeof(*out), out) != 0)
		fut_task_fail(t, FUT_ESYS, "pthread_getaffinity_np");
	else
		fut_task_return(t, NULL);
}

static void move_then_submit(fut_task *t)
{
	struct mover *m = fut_task_arg(t);
	fut_future *f;
	int rc = pthread_setaffinity_np(pthread_self(), sizeof(m->moved),
					&m->moved);
	if (rc == 0)
		rc = fut_submit(m->ex, report_own_cpus, &m->got, &f);
	if (rc == 0) {
		rc = fut_result(f, 20.0, NULL);
		fut_release(f);
	}
	if (rc != 0)
		fut_task_fail(t, rc, "moving or submitting");
	else
		fut_task_return(t, NULL);
}

/* A pool's threads run on its first submitter's cpus whoever starts them:
 * a worker whose task moved its thread elsewhere starts the next one
 * there no more (pthread_create's default, the starter's cpus). */
static void
test_a_thread_started_by_a_moved_worker_runs_on_the_pools_cpus(void **state)
{
	(void)state;
	cpu_set_t all, one;
	assert_int_equal(
		pthread_getaffinity_np(pthread_self(), sizeof(all), &all), 0);
	if (CPU_COUNT(&all) < 2)
		skip();
	int here = sched_getcpu();
	assert_true(here >= 0);
	CPU_ZERO(&one);
	CPU_SET(here, &one);
	assert_int_equal(
		pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);
	struct mover m = { .ex = new_pool(2), .moved = all };
	fut_future *f;
	assert_int_equal(fut_submit(m.ex, move_then_submit, &m, &f), FUT_OK);
	assert_int_equal(fut_result(f, 30.0, NULL), FUT_OK);
	fut_release(f);
	assert_int_equal(fut__tp_threads(m.ex), 2);
	assert_true(CPU_EQUAL(&m.got, &one));
	fut_executor_free(m.ex);
	assert_int_equal(
		pthread_setaffinity_np(pthread_self(), sizeof(all), &all), 0);
}

static void test_busy_workers_make_the_pool_start_more_threads(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(3);
	struct gate g;
	gate_init(&g);
	fut_future *fs[5];
	for (int i = 0; i < 5; i++) {
		assert_int_equal(fut_submit(ex, gated, &g, &fs[i]), FUT_OK);
		if (i < 3)
			sem_wait(&g.started); /* busy before the next submit */
	}
	assert_int_equal(fut__tp_threads(ex), 3); /* capped at max_workers */
	for (int i = 0; i < 5; i++)
		sem_post(&g.release);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(result_of(fs[i]), 1);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	gate_fini(&g);
}

static void thread_name(fut_task *t)
{
	char name[32] = { 0 };
	pthread_getname_np(pthread_self(), name, sizeof(name));
	fut_task_return_bytes(t, name, strlen(name) + 1);
}

static void expect_thread_name(const char *prefix, const char *want)
{
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_thread_pool_new(
			&ex,
			&(fut_thread_pool_opts){ .max_workers = 1,
						 .thread_name_prefix = prefix,
						 .initializer = init_ok }),
		FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, thread_name, NULL, &f), FUT_OK);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, FUT_FOREVER, &data, &len), FUT_OK);
	assert_string_equal((const char *)data, want);
	fut_release(f);
	fut_executor_free(ex);
}

static void test_worker_threads_are_named_after_the_prefix(void **state)
{
	(void)state;
	expect_thread_name("render", "render-1");
	expect_thread_name(NULL, "fut-worker-1");
	/* Linux keeps 15 bytes: the prefix is cut, the number kept. */
	expect_thread_name("averyveryverylongprefix", "averyveryvery-1");
	expect_thread_name("fifteen-bytes-p", "fifteen-bytes-1");
}

static void spin_until_interrupted(fut_task *t)
{
	sem_post(fut_task_arg(t));
	while (!fut_task_cancelled(t))
		sched_yield();
	fut_task_return(t, (void *)7);
}

static void test_running_task_sees_the_interrupt_flag(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	sem_t started;
	sem_init(&started, 0, 0);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, spin_until_interrupted, &started, &f),
			 FUT_OK);
	sem_wait(&started);
	assert_true(fut_running(f));
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_int_equal(result_of(f), 7);
	assert_int_equal(fut_interrupt(f), FUT_ESTATE);
	fut_release(f);
	fut_executor_free(ex);
	sem_destroy(&started);
}

static _Atomic int counter;

static void count(fut_task *t)
{
	(void)t;
	atomic_fetch_add(&counter, 1);
}

static void test_shutdown_waits_for_every_task(void **state)
{
	(void)state;
	atomic_store(&counter, 0);
	fut_executor *ex = new_pool(4);
	for (int i = 0; i < 500; i++) {
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, count, NULL, &f), FUT_OK);
		fut_release(f); /* released while pending: still runs */
	}
	assert_int_equal(fut_executor_shutdown(ex, 0), FUT_OK);
	assert_int_equal(atomic_load(&counter), 500);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, count, NULL, &f), FUT_ESHUTDOWN);
	assert_null(f);
	assert_int_equal(fut_submit_many(ex, count, "ab", 1, 2,
					 (fut_future *[2]){ 0 }),
			 FUT_ESHUTDOWN);
	assert_int_equal(fut_executor_shutdown(ex, 0), FUT_OK); /* twice */
	fut_executor_free(ex);
}

static void
test_shutdown_cancel_pending_cancels_what_has_not_started(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	struct gate g;
	gate_init(&g);
	fut_future *running = occupy_worker(ex, &g);
	fut_future *queued[10];
	for (int i = 0; i < 10; i++)
		assert_int_equal(fut_submit(ex, plus_one, NULL, &queued[i]),
				 FUT_OK);
	assert_int_equal(
		fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT |
						  FUT_SHUTDOWN_CANCEL_PENDING),
		FUT_OK);
	for (int i = 0; i < 10; i++) {
		assert_true(fut_cancelled(queued[i]));
		assert_int_equal(fut_result(queued[i], 0, NULL),
				 FUT_ECANCELLED);
	}
	assert_false(fut_done(running));
	sem_post(&g.release);
	fut_executor_free(ex);
	assert_int_equal(result_of(running), 1);
	fut_release(running);
	for (int i = 0; i < 10; i++)
		fut_release(queued[i]);
	gate_fini(&g);
}

static void test_shutdown_interrupt_flags_running_tasks(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	sem_t started;
	sem_init(&started, 0, 0);
	fut_future *f[2];
	assert_int_equal(fut_submit(ex, spin_until_interrupted, &started,
				    &f[0]),
			 FUT_OK);
	sem_wait(&started);
	assert_int_equal(fut_submit(ex, spin_until_interrupted, &started,
				    &f[1]),
			 FUT_OK);
	sem_wait(&started);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT),
			 FUT_OK);
	for (int i = 0; i < 2; i++) {
		assert_true(fut_done(f[i]));
		assert_int_equal(result_of(f[i]), 7);
		fut_release(f[i]);
	}
	fut_executor_free(ex);
	sem_destroy(&started);
}

static void test_shutdown_nowait_returns_while_tasks_run(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	struct gate g;
	gate_init(&g);
	fut_future *f = occupy_worker(ex, &g);
	fut_future *later = NULL;
	assert_int_equal(fut_submit(ex, plus_one, (void *)1, &later), FUT_OK);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	assert_false(fut_done(f));
	sem_post(&g.release);
	fut_executor_free(ex); /* waits; the queued task still ran */
	assert_int_equal(result_of(f), 1);
	assert_int_equal(result_of(later), 2);
	fut_release(f);
	fut_release(later);
	gate_fini(&g);
}

static void shutdown_self(fut_task *t)
{
	fut_executor *ex = fut_task_arg(t);
	int wait_rc = fut_executor_shutdown(ex, 0);
	int nowait_rc = fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT);
	fut_task_return(t, (void *)(uintptr_t)(wait_rc * 100 + nowait_rc));
}

static void test_shutdown_with_wait_from_own_task_is_einval(void **state)
{
	(void)state;
	/* With and without an initializer: a task run inline by a waiter
	 * counts as the pool's own too. */
	for (int k = 0; k < 2; k++) {
		fut_executor *ex = k ? new_worker_only_pool(2, NULL) :
				       new_pool(2);
		fut_future *f = NULL;
		assert_int_equal(fut_submit(ex, shutdown_self, ex, &f), FUT_OK);
		assert_int_equal(result_of(f), FUT_EINVAL * 100 + FUT_OK);
		fut_release(f);
		fut_executor_free(ex);
	}
}

static void free_self(fut_task *t)
{
	fut_executor_free(fut_task_arg(t));
	fut_task_return(t, (void *)3);
}

static void test_free_from_own_task_defers_the_free(void **state)
{
	(void)state;
	/* One worker: free_self runs while `after` is still queued. */
	fut_executor *ex = new_worker_only_pool(1, NULL);
	fut_future *f = NULL, *after = NULL;
	struct gate g;
	gate_init(&g);
	fut_future *gate_f = occupy_worker(ex, &g);
	assert_int_equal(fut_submit(ex, free_self, ex, &f), FUT_OK);
	assert_int_equal(fut_submit(ex, plus_one, (void *)9, &after), FUT_OK);
	sem_post(&g.release);
	/* ex is gone for us now; its futures stay valid. */
	assert_int_equal(result_of(f), 3);
	assert_int_equal(result_of(after), 10);
	assert_int_equal(result_of(gate_f), 1);
	fut_release(f);
	fut_release(after);
	fut_release(gate_f);
	gate_fini(&g);
}

static int init_fail(void *arg)
{
	(void)arg;
	return 1;
}

/* Fails in the second worker only. */
static int init_fail_second(void *arg)
{
	return atomic_fetch_add((_Atomic int *)arg, 1) == 1;
}

/* A pool of two workers whose second worker's initializer fails (inits
 * counts the initializer's runs). */
static fut_executor *second_init_fails_pool(_Atomic int *inits)
{
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_thread_pool_new(&ex,
				    &(fut_thread_pool_opts){
					    .max_workers = 2,
					    .initializer = init_fail_second,
					    .initarg = (void *)inits }),
		FUT_OK);
	return ex;
}

static void test_failing_initializer_breaks_the_pool(void **state)
{
	(void)state;
	/* The first worker fails: the first submit either sees the break
	 * or its future ends FUT_EBROKEN; later submits see it. */
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_thread_pool_new(
			&ex,
			&(fut_thread_pool_opts){ .max_workers = 2,
						 .initializer = init_fail }),
		FUT_OK);
	fut_future *f = NULL;
	int rc = fut_submit(ex, plus_one, NULL, &f);
	if (rc == FUT_OK) {
		assert_int_equal(fut_result(f, FUT_FOREVER, NULL), FUT_EBROKEN);
		assert_int_equal(fut_error(f), FUT_EBROKEN);
		assert_non_null(fut_error_message(f));
		fut_release(f);
		f = NULL;
		rc = fut_submit(ex, plus_one, NULL, &f);
	}
	assert_int_equal(rc, FUT_EBROKEN);
	assert_null(f);
	fut_executor_free(ex);

	/* The second worker fails while the first runs a task: the queued
	 * work ends FUT_EBROKEN, the running task finishes normally. */
	_Atomic int inits = 0;
	ex = second_init_fails_pool(&inits);
	struct gate g;
	gate_init(&g);
	fut_future *running = occupy_worker(ex, &g);
	fut_future *queued = NULL;
	/* Queued while the only worker is busy: starts the second one. */
	assert_int_equal(fut_submit(ex, plus_one, NULL, &queued), FUT_OK);
	assert_int_equal(fut_result(queued, FUT_FOREVER, NULL), FUT_EBROKEN);
	fut_release(queued);
	fut_future *f2 = NULL;
	assert_int_equal(fut_submit(ex, plus_one, NULL, &f2), FUT_EBROKEN);
	assert_int_equal(fut_submit_many(ex, sum_bytes, "ab", 1, 2,
					 (fut_future *[2]){ 0 }),
			 FUT_EBROKEN);
	sem_post(&g.release);
	assert_int_equal(result_of(running), 1);
	fut_release(running);
	fut_executor_free(ex);
	gate_fini(&g);
}

/* Submits a child task (arg is the pool) and returns its future. */
static void submit_child(fut_task *t)
{
	fut_future *child = NULL;
	if (fut_submit(fut_task_arg(t), plus_one, (void *)99, &child) != FUT_OK)
		fut_task_fail(t, 1, "submit failed");
	else
		fut_task_return(t, child);
}

struct cb_ctx {
	fut_executor *ex;
	fut_future *child;
	int rc;
	sem_t done;
};

static void submit_from_callback(fut_future *f, void *ud)
{
	(void)f;
	struct cb_ctx *c = ud;
	c->rc = fut_submit(c->ex, plus_one, (void *)5, &c->child);
	sem_post(&c->done);
}

/* Input sizes on both sides of the inline limit: no input, inline, the
 * largest inline one, the smallest heap copy, a large heap copy. */
static const size_t input_sizes[] = { 0, 1, FUT__TP_INLINE_BYTES,
				      FUT__TP_INLINE_BYTES + 1, 5000 };
#define NSIZES (sizeof(input_sizes) / sizeof(input_sizes[0]))

/* Checks that f holds the reverse of the n bytes 0, 1, ... */
static void assert_reversed(fut_future *f, size_t n)
{
	const void *data = NULL;
	size_t len = 99;
	assert_int_equal(fut_result_bytes(f, FUT_FOREVER, &data, &len), FUT_OK);
	assert_int_equal(len, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(((const unsigned char *)data)[i],
				 (unsigned char)(n - 1 - i));
}

/* In a worker: submits `reverse` of each input size to its own pool and
 * waits for each (the worker runs it inline); returns how many came back
 * right. */
struct sizes_inline {
	fut_executor *ex;
	const unsigned char *in;
};

static void run_each_size_inline(fut_task *t)
{
	const struct sizes_inline *a = fut_task_arg(t);
	const unsigned char *in = a->in;
	uintptr_t good = 0;
	for (size_t k = 0; k < NSIZES; k++) {
		fut_future *f = NULL;
		if (fut_submit_bytes(a->ex, reverse, in, input_sizes[k], &f) !=
		    FUT_OK)
			break;
		const void *data = NULL;
		size_t len = 0;
		bool ok = fut_result_bytes(f, FUT_FOREVER, &data, &len) ==
				  FUT_OK &&
			  len == input_sizes[k];
		for (size_t i = 0; ok && i < len; i++)
			ok = ((const unsigned char *)data)[i] ==
			     (unsigned char)(len - 1 - i);
		good += ok;
		fut_release(f);
	}
	fut_task_return(t, (void *)good);
}

/*
 * fut_submit_bytes' input waits in the job (inline or a heap copy) until
 * the task runs.  Whichever way the task ends (run by a worker, run inline
 * by a worker that waits for it while still queued, cancelled, cancelled by a shutdown, failed
 * by a broken pool), the input is freed once and the future reads as it
 * should; ASan and valgrind (make check) see the leaks and double frees.
 */
static void test_an_input_is_freed_however_its_task_ends(void **state)
{
	(void)state;
	unsigned char in[5000];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)i;
	fut_executor *ex = new_pool(1);
	struct gate g;
	gate_init(&g);
	/* Cancelled while queued (some released at once), then dropped by
	 * the worker; the others run in the worker. */
	fut_future *running = occupy_worker(ex, &g);
	fut_future *cancelled[NSIZES], *ran[NSIZES];
	for (size_t k = 0; k < NSIZES; k++) {
		assert_int_equal(fut_submit_bytes(ex, reverse, in,
						  input_sizes[k],
						  &cancelled[k]),
				 FUT_OK);
		assert_int_equal(fut_submit_bytes(ex, reverse, in,
						  input_sizes[k], &ran[k]),
				 FUT_OK);
	}
	for (size_t k = 0; k < NSIZES; k++) {
		assert_true(fut_cancel(cancelled[k]));
		assert_int_equal(fut_task_code(cancelled[k]), 0);
		assert_string_equal(fut_error_message(cancelled[k]),
				    fut_strerror(FUT_ECANCELLED));
		if (k % 2 == 0) { /* released while still queued */
			fut_release(cancelled[k]);
			cancelled[k] = NULL;
		}
	}
	sem_post(&g.release);
	for (size_t k = 0; k < NSIZES; k++) {
		assert_reversed(ran[k], input_sizes[k]);
		fut_release(ran[k]);
		if (cancelled[k] != NULL) {
			assert_int_equal(fut_result(cancelled[k], 0, NULL),
					 FUT_ECANCELLED);
			fut_release(cancelled[k]);
		}
	}
	assert_int_equal(result_of(running), 1);
	fut_release(running);

	/* Cancelled by a shutdown while queued. */
	running = occupy_worker(ex, &g);
	fut_future *drained[NSIZES];
	for (size_t k = 0; k < NSIZES; k++)
		assert_int_equal(fut_submit_bytes(ex, reverse, in,
						  input_sizes[k], &drained[k]),
				 FUT_OK);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING |
							   FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	sem_post(&g.release);
	assert_int_equal(result_of(running), 1);
	fut_release(running);
	for (size_t k = 0; k < NSIZES; k++) {
		assert_int_equal(fut_result(drained[k], FUT_FOREVER, NULL),
				 FUT_ECANCELLED);
		assert_string_equal(fut_error_message(drained[k]),
				    fut_strerror(FUT_ECANCELLED));
		fut_release(drained[k]);
	}
	fut_executor_free(ex);

	/* Run inline by the one worker, whose task waits for it while it is
	 * still queued; the worker drops the queue's entry later. */
	ex = new_pool(1);
	struct sizes_inline si = { .ex = ex, .in = in };
	fut_future *outer = NULL;
	assert_int_equal(fut_submit(ex, run_each_size_inline, &si, &outer),
			 FUT_OK);
	assert_int_equal(result_of(outer), NSIZES);
	fut_release(outer);
	fut_executor_free(ex);

	/* Queued when the pool breaks (its second worker's initializer
	 * fails): failed FUT_EBROKEN, never run. */
	_Atomic int inits = 0;
	ex = second_init_fails_pool(&inits);
	running = occupy_worker(ex, &g);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, reverse, in, sizeof(in), &f),
			 FUT_OK);
	assert_int_equal(fut_result(f, FUT_FOREVER, NULL), FUT_EBROKEN);
	assert_int_equal(fut_task_code(f), 0);
	fut_release(f);
	sem_post(&g.release);
	assert_int_equal(result_of(running), 1);
	fut_release(running);
	fut_executor_free(ex);
	gate_fini(&g);
}

/* Returns whether its input starts aligned as malloc's memory is. */
static void input_aligned(fut_task *t)
{
	const void *in = fut_task_input(t, NULL);
	fut_task_return(
		t, (void *)(uintptr_t)((uintptr_t)in % _Alignof(max_align_t) ==
				       0));
}

/*
 * A task's input starts aligned as malloc's memory (docs/api.md,
 * fut_task_input: no promise beyond malloc's), inline in the job block
 * or a heap copy, so that a task may read a long double or a
 * max_align_t of it in place.  Both started 8 bytes past it, behind the
 * input's length.
 */
static void test_an_input_starts_aligned_as_malloc_memory(void **state)
{
	(void)state;
	static unsigned char in[5000];
	const size_t sizes[] = {
		1,   16, 48, 49, FUT__TP_INLINE_BYTES, FUT__TP_INLINE_BYTES + 1,
		5000
	};
	enum {
		N = sizeof(sizes) / sizeof(sizes[0])
	};
	fut_executor *ex = new_pool(2);
	fut_future *fs[N];
	for (size_t k = 0; k < N; k++)
		assert_int_equal(fut_submit_bytes(ex, input_aligned, in,
						  sizes[k], &fs[k]),
				 FUT_OK);
	fut_future *many[3];
	assert_int_equal(fut_submit_many(ex, input_aligned, in, 24, 3, many),
			 FUT_OK);
	for (size_t k = 0; k < N; k++) {
		void *aligned = NULL;
		assert_int_equal(fut_result(fs[k], FUT_FOREVER, &aligned),
				 FUT_OK);
		if (aligned == NULL)
			print_error("input of %zu bytes misaligned\n",
				    sizes[k]);
		assert_non_null(aligned);
		fut_release(fs[k]);
	}
	for (size_t k = 0; k < 3; k++) {
		void *aligned = NULL;
		assert_int_equal(fut_result(many[k], FUT_FOREVER, &aligned),
				 FUT_OK);
		assert_non_null(aligned);
		fut_release(many[k]);
	}
	fut_executor_free(ex);
}

static void test_tasks_and_callbacks_can_submit(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, submit_child, ex, &f), FUT_OK);
	fut_future *child = (fut_future *)result_of(f);
	assert_int_equal(result_of(child), 100);
	fut_release(child);

	struct cb_ctx c = { .ex = ex };
	sem_init(&c.done, 0, 0);
	assert_int_equal(fut_add_done_callback(f, submit_from_callback, &c),
			 FUT_OK);
	sem_wait(&c.done);
	assert_int_equal(c.rc, FUT_OK);
	assert_int_equal(result_of(c.child), 6);
	fut_release(c.child);
	fut_release(f);

	/* A callback that runs in the worker as the task completes. */
	struct gate g;
	gate_init(&g);
	assert_int_equal(fut_submit(ex, gated, &g, &f), FUT_OK);
	assert_int_equal(fut_add_done_callback(f, submit_from_callback, &c),
			 FUT_OK);
	sem_post(&g.release);
	sem_wait(&c.done);
	assert_int_equal(c.rc, FUT_OK);
	assert_int_equal(result_of(c.child), 6);
	fut_release(c.child);
	fut_release(f);
	fut_executor_free(ex);
	sem_destroy(&c.done);
	gate_fini(&g);
}

static void test_futures_outlive_the_pool(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	fut_future *fs[64];
	for (uintptr_t i = 0; i < 64; i++)
		assert_int_equal(fut_submit(ex, plus_one, (void *)i, &fs[i]),
				 FUT_OK);
	fut_executor_free(ex);
	for (uintptr_t i = 0; i < 64; i++) {
		assert_true(fut_done(fs[i]));
		assert_int_equal(result_of(fs[i]), i + 1);
		fut_release(fs[i]);
	}
}

struct submitter {
	fut_executor *ex;
	size_t n;
	uintptr_t base;
	int failures;
};

static void *submit_and_check(void *arg)
{
	struct submitter *s = arg;
	fut_future **fs = calloc(s->n, sizeof(*fs));
	for (size_t i = 0; i < s->n; i++)
		if (fut_submit(s->ex, twice_plus_one, (void *)(s->base + i),
			       &fs[i]) != FUT_OK)
			s->failures++;
	for (size_t i = 0; i < s->n; i++) {
		void *v = NULL;
		if (fs[i] == NULL ||
		    fut_result(fs[i], FUT_FOREVER, &v) != FUT_OK ||
		    (uintptr_t)v != (s->base + i) * 2 + 1)
			s->failures++;
		fut_release(fs[i]);
	}
	free(fs);
	return NULL;
}

static void test_four_threads_submitting_at_once_get_every_result(void **state)
{
	(void)state;
	size_t n = under_valgrind() ? 2000 : 50000;
	for (int k = 0; k < 2; k++) {
		fut_executor *ex = k ? new_worker_only_pool(4, NULL) :
				       new_pool(4);
		pthread_t th[4];
		struct submitter s[4];
		for (int i = 0; i < 4; i++) {
			s[i] = (struct submitter){
				.ex = ex, .n = n, .base = (uintptr_t)i * 1000000
			};
			pthread_create(&th[i], NULL, submit_and_check, &s[i]);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			assert_int_equal(s[i].failures, 0);
		}
		fut_executor_free(ex);
	}
}

static void sum_bytes(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	uintptr_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += in[i];
	fut_task_return(t, (void *)sum);
}

static void test_submit_many_runs_every_input(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(3);
	size_t strides[] = { 0, 8, 100 };
	enum {
		N = 1000
	};
	unsigned char *inputs = malloc(N * 100);
	for (size_t i = 0; i < N * 100; i++)
		inputs[i] = (unsigned char)(i * 7);
	fut_future **out = calloc(N, sizeof(*out));
	for (size_t k = 0; k < 3; k++) {
		size_t stride = strides[k];
		assert_int_equal(fut_submit_many(ex, sum_bytes,
						 stride ? inputs : NULL, stride,
						 N, out),
				 FUT_OK);
		for (size_t i = 0; i < N; i++) {
			uintptr_t want = 0;
			for (size_t b = 0; b < stride; b++)
				want += inputs[i * stride + b];
			assert_int_equal(result_of(out[i]), want);
			fut_release(out[i]);
		}
	}
	assert_int_equal(fut_submit_many(ex, sum_bytes, NULL, 0, 0, NULL),
			 FUT_OK);
	fut_executor_free(ex);
	free(out);
	free(inputs);
}

static void test_bad_input_gives_einval(void **state)
{
	(void)state;
	fut_executor *ex = (fut_executor *)(uintptr_t)1;
	assert_int_equal(fut_thread_pool_new(NULL, NULL), FUT_EINVAL);
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){
					 .max_workers = FUT_MAX_WORKERS + 1 }),
			 FUT_EINVAL);
	assert_null(ex);
	assert_int_equal(
		fut_thread_pool_new(&ex,
				    &(fut_thread_pool_opts){
					    .max_workers = FUT_MAX_WORKERS }),
		FUT_OK);
	fut_executor_free(ex);
	assert_int_equal(fut_thread_pool_new(&ex, NULL), FUT_OK);
	fut_future *f = (fut_future *)(uintptr_t)1;
	assert_int_equal(fut_submit(NULL, plus_one, NULL, &f), FUT_EINVAL);
	assert_null(f);
	assert_int_equal(fut_submit(ex, NULL, NULL, &f), FUT_EINVAL);
	assert_int_equal(fut_submit(ex, plus_one, NULL, NULL), FUT_EINVAL);
	assert_int_equal(fut_submit_bytes(ex, reverse, NULL, 3, &f),
			 FUT_EINVAL);
	assert_int_equal(fut_submit_many(ex, sum_bytes, NULL, 4, 2,
					 (fut_future *[2]){ 0 }),
			 FUT_EINVAL);
	assert_int_equal(fut_submit_many(ex, sum_bytes, "abcd", 2, 2, NULL),
			 FUT_EINVAL);
	assert_int_equal(fut_executor_shutdown(ex, 0x100), FUT_EINVAL);
	assert_int_equal(fut_executor_shutdown(NULL, 0), FUT_EINVAL);
	fut_executor_free(NULL);
	fut_executor_free(ex);
}

static void test_allocation_failures_are_clean(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	int rc;
	long n = 1;
	do {
		fut__alloc_fail_nth(n++);
		rc = fut_thread_pool_new(&ex, NULL);
		if (rc != FUT_OK) {
			assert_int_equal(rc, FUT_ENOMEM);
			assert_null(ex);
		}
	} while (rc != FUT_OK);
	fut__alloc_fail_nth(0);
	assert_true(n > 2); /* at least one failure was injected */

	/* The first submit allocates blocks and the first worker. */
	fut__slab_cache_flush();
	fut_future *f = NULL;
	n = 1;
	do {
		fut__alloc_fail_nth(n++);
		static char large[5000];
		rc = fut_submit_bytes(ex, reverse, large, sizeof(large), &f);
		if (rc != FUT_OK) {
			assert_int_equal(rc, FUT_ENOMEM);
			assert_null(f);
		}
	} while (rc != FUT_OK);
	fut__alloc_fail_nth(0);
	assert_true(n > 3);
	assert_int_equal(fut_result(f, FUT_FOREVER, NULL), FUT_OK);
	fut_release(f);

	enum {
		N = 300
	};
	fut_future *out[N];
	static char inputs[N * 4];
	fut__slab_cache_flush();
	n = 1;
	do {
		fut__alloc_fail_nth(n++);
		rc = fut_submit_many(ex, sum_bytes, inputs, 4, N, out);
		if (rc != FUT_OK) {
			assert_int_equal(rc, FUT_ENOMEM);
			for (int i = 0; i < N; i++)
				assert_null(out[i]);
		}
	} while (rc != FUT_OK);
	fut__alloc_fail_nth(0);
	assert_true(n > 2);
	for (int i = 0; i < N; i++) {
		assert_int_equal(result_of(out[i]), 0);
		fut_release(out[i]);
	}
	fut_executor_free(ex);
}

/*
 * A thread's first 16 slabs of a block class are small (one 4 KiB page,
 * 63 job blocks); past them it takes 112 KiB slabs whose pages are made
 * present at once (MADV_POPULATE_WRITE).  After fut__slab_cache_flush()
 * this thread starts over: its first 1,008 blocks (the gate's and 1,007
 * more) fill the small slabs exactly, so the next submit makes a larger
 * one, and a failure of that allocation is FUT_ENOMEM with nothing
 * queued.
 */
#define SMALL_SLAB_BLOCKS ((int)fut__slab_small_blocks(0))
enum {
	PAST_SMALL = 3000
};

/* Pages of [p, p + n) not resident; -1 where the kernel cannot say or
 * cannot populate (before Linux 5.14). */
static long pages_absent(void *p, size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
	void *probe = mmap(NULL, page, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (probe == MAP_FAILED)
		return -1;
#ifdef MADV_POPULATE_WRITE
	bool can = madvise(probe, page, MADV_POPULATE_WRITE) == 0;
#else
	bool can = false;
#endif
	munmap(probe, page);
	unsigned char vec[64];
	size_t np = (e - a) / page;
	if (!can || np > sizeof(vec) || mincore((void *)a, e - a, vec) != 0)
		return -1;
	long absent = 0;
	for (size_t i = 0; i < np; i++)
		absent += !(vec[i] & 1);
	return absent;
}

static void
test_a_thread_with_many_pending_tasks_takes_populated_slabs(void **state)
{
	(void)state;
	fut__slab_cache_flush(); /* small slabs, an empty overflow list */
	fut_executor *ex = new_pool(1);
	struct gate g;
	gate_init(&g);
	fut_future *blocker = occupy_worker(ex, &g);
	size_t small = 0, bytes = 0;
	fut__slab_of(blocker, &small);
	assert_true(small < 16 << 10);
	fut_future **fs = calloc(PAST_SMALL, sizeof(*fs));
	assert_non_null(fs);
	int i = 0;
	for (; i < SMALL_SLAB_BLOCKS - 1; i++) {
		assert_int_equal(fut_submit(ex, twice_plus_one,
					    (void *)(uintptr_t)i, &fs[i]),
				 FUT_OK);
		fut__slab_of(fs[i], &bytes);
		assert_int_equal(bytes, small);
		/* A job is one cache line, and none straddles a page (its
		 * slab is found from the page it lies in). */
		assert_int_equal((uintptr_t)fs[i] % 64, 0);
		assert_true((uintptr_t)fs[i] % 4096 >= 64);
	}
	fut_future *f = NULL;
	fut__alloc_fail_nth(1);
	int rc = fut_submit(ex, twice_plus_one, NULL, &f);
	long left = fut__alloc_fail_nth(0);
	assert_int_equal(rc, FUT_ENOMEM);
	assert_int_equal(left, 0); /* the larger slab's allocation failed */
	/* Free heap pages go back to the kernel, so the next slab's pages
	 * are absent unless the slab populates them. */
	malloc_trim(0);
	assert_null(f);
	for (; i < PAST_SMALL; i++) {
		assert_int_equal(fut_submit(ex, twice_plus_one,
					    (void *)(uintptr_t)i, &fs[i]),
				 FUT_OK);
		void *slab = fut__slab_of(fs[i], &bytes);
		assert_int_equal(bytes, 112 << 10);
		/* Its first page is all that was touched yet; every page
		 * is present all the same (mincore). */
		if (i == SMALL_SLAB_BLOCKS - 1) {
			long absent = pages_absent(slab, bytes);
			assert_true(absent <= 0);
		}
	}
	sem_post(&g.release);
	assert_int_equal(result_of(blocker), 1);
	fut_release(blocker);
	for (i = 0; i < PAST_SMALL; i++) {
		assert_int_equal(result_of(fs[i]), (uintptr_t)i * 2 + 1);
		fut_release(fs[i]);
	}
	free(fs);
	fut_executor_free(ex);
	gate_fini(&g);
}

/*
 * An idle worker's spin makes larger slabs ready for a thread that takes
 * them, their pages present: that thread's next slab then costs it no
 * allocation (an injected failure stays armed) and no page fault.  A
 * second pool's worker does the spinning here.  Workers spin only with
 * more than one cpu.
 */
static void test_an_idle_worker_makes_the_next_slab_ready(void **state)
{
	(void)state;
	if (fut__ncpus() < 2)
		skip();
	fut__slab_cache_flush();
	fut_executor *ex = new_pool(1), *idle = new_pool(1);
	struct gate g;
	gate_init(&g);
	fut_future *blocker = occupy_worker(ex, &g);
	enum {
		N = 4000
	};
	fut_future **fs = calloc(N, sizeof(*fs));
	assert_non_null(fs);
	/* Into the first larger slab: that asks for ready ones. */
	int i = 0;
	size_t bytes = 0;
	do {
		assert_int_equal(fut_submit(ex, twice_plus_one,
					    (void *)(uintptr_t)i, &fs[i]),
				 FUT_OK);
		fut__slab_of(fs[i++], &bytes);
	} while (bytes != 112 << 10 && i < N);
	assert_true(i < N);
	void *slab = fut__slab_of(fs[i - 1], &bytes);
	/* The other pool's worker spins after each task it runs. */
	int64_t deadline = fut__now_ns() + (int64_t)30 * 1000000000;
	while (fut__slab_ready_count(0) == 0 && fut__now_ns() < deadline) {
		fut_future *f = NULL;
		assert_int_equal(fut_submit(idle, plus_one, NULL, &f), FUT_OK);
		assert_int_equal(result_of(f), 1);
		fut_release(f);
	}
	assert_true(fut__slab_ready_count(0) > 0);
	/* Up to the next slab: taken from the ready ones, no allocation. */
	fut__alloc_fail_nth(1);
	void *next = slab;
	for (; next == slab && i < N; i++) {
		assert_int_equal(fut_submit(ex, twice_plus_one,
					    (void *)(uintptr_t)i, &fs[i]),
				 FUT_OK);
		next = fut__slab_of(fs[i], &bytes);
	}
	assert_int_equal(fut__alloc_fail_nth(0), 1); /* still armed */
	assert_true(next != slab);
	assert_int_equal(bytes, 112 << 10);
	assert_true(pages_absent(next, bytes) <= 0);
	sem_post(&g.release);
	assert_int_equal(result_of(blocker), 1);
	fut_release(blocker);
	for (int k = 0; k < i; k++) {
		assert_int_equal(result_of(fs[k]), (uintptr_t)k * 2 + 1);
		fut_release(fs[k]);
	}
	free(fs);
	fut_executor_free(ex);
	fut_executor_free(idle);
	gate_fini(&g);
}

struct blocked_submit {
	fut_executor *ex;
	_Atomic int released;
	int released_at_return;
	int rc;
	fut_future *f;
};

static void *submit_into_full_queue(void *arg)
{
	struct blocked_submit *b = arg;
	b->rc = fut_submit(b->ex, plus_one, NULL, &b->f);
	b->released_at_return = atomic_load(&b->released);
	return NULL;
}

static void test_submit_blocks_while_the_queue_is_full(void **state)
{
	(void)state;
	fut_executor *ex = bounded_pool(2);
	struct gate g;
	gate_init(&g);
	fut_future *running = occupy_worker(ex, &g);
	fut_future *queued[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(fut_submit(ex, plus_one, NULL, &queued[i]),
				 FUT_OK);
	struct blocked_submit b = { .ex = ex };
	pthread_t th;
	pthread_create(&th, NULL, submit_into_full_queue, &b);
	while (fut__tp_blocked_submitters(ex) == 0)
		sched_yield();
	atomic_store(&b.released, 1);
	sem_post(&g.release);
	pthread_join(th, NULL);
	assert_int_equal(b.rc, FUT_OK);
	assert_int_equal(b.released_at_return, 1);
	assert_int_equal(result_of(b.f), 1);
	fut_release(b.f);
	for (int i = 0; i < 2; i++)
		fut_release(queued[i]);
	fut_release(running);
	fut_executor_free(ex);
	gate_fini(&g);
}

/* Returns its byte input's first byte + 1, after 20 ms: long enough
 * that a submitter woken while these jobs sit in the worker's local
 * queue sees the queue still full and sleeps again (the window the test
 * below needs; nothing waits on the time). */
static void slow_byte_plus_one(fut_task *t)
{
	struct timespec ms20 = { 0, 20 * 1000 * 1000 };
	nanosleep(&ms20, NULL);
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	fut_task_return(t, (void *)(uintptr_t)(len == 1 ? in[0] + 1 : 0));
}

struct blocked_batch {
	fut_executor *ex;
	unsigned char in[4];
	fut_future *fs[4];
	int rc;
	sem_t done;
};

static void *submit_batch_into_full_queue(void *arg)
{
	struct blocked_batch *b = arg;
	b->rc = fut_submit_many(b->ex, slow_byte_plus_one, b->in, 1, 4, b->fs);
	sem_post(&b->done);
	return NULL;
}

/*
 * The room a blocked submitter waits for opens when the worker runs the
 * jobs of the batch it took into its local queue, not only when it takes
 * from the global queue: once it had run them all and slept, a submitter
 * still asleep would wait for ever (a stress run hung so, 1 in ~4 runs of
 * 10 minutes).
 */
static void
test_a_blocked_batch_gets_room_as_the_worker_runs_its_local_jobs(void **state)
{
	(void)state;
	fut_executor *ex = bounded_pool(4);
	struct gate g;
	gate_init(&g);
	fut_future *running = occupy_worker(ex, &g);
	fut_future *queued[4];
	unsigned char first[4] = { 10, 20, 30, 40 };
	assert_int_equal(fut_submit_many(ex, slow_byte_plus_one, first, 1, 4,
					 queued),
			 FUT_OK);
	struct blocked_batch b = { .ex = ex, .in = { 1, 2, 3, 4 } };
	sem_init(&b.done, 0, 0);
	pthread_t th;
	pthread_create(&th, NULL, submit_batch_into_full_queue, &b);
	while (fut__tp_blocked_submitters(ex) == 0)
		sched_yield();
	/* The worker takes the four queued jobs as one batch: one runs, three
	 * wait in its local queue, and the queue stays too full for four. */
	sem_post(&g.release);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 60; /* only so that the bug fails instead of hanging */
	int waited;
	while ((waited = sem_timedwait(&b.done, &until)) != 0 && errno == EINTR)
		;
	assert_int_equal(waited, 0);
	pthread_join(th, NULL);
	assert_int_equal(b.rc, FUT_OK);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(result_of(queued[i]), first[i] + 1);
		assert_int_equal(result_of(b.fs[i]), b.in[i] + 1);
		fut_release(queued[i]);
		fut_release(b.fs[i]);
	}
	assert_int_equal(result_of(running), 1);
	fut_release(running);
	fut_executor_free(ex);
	sem_destroy(&b.done);
	gate_fini(&g);
}

/* Nested waits: a task waits on a task submitted after it. */
struct chain {
	fut_executor *ex;
	sem_t *started;
	pthread_barrier_t *both_busy;
	uintptr_t depth;
};

static void wait_on_later_task(fut_task *t)
{
	struct chain *c = fut_task_arg(t);
	if (c->started != NULL)
		sem_post(c->started);
	if (c->both_busy != NULL)
		pthread_barrier_wait(c->both_busy);
	if (c->depth == 0) {
		fut_task_return(t, (void *)1);
		return;
	}
	struct chain *next = malloc(sizeof(*next));
	*next = (struct chain){ .ex = c->ex, .depth = c->depth - 1 };
	fut_future *f = NULL;
	void *v = NULL;
	if (fut_submit(c->ex, wait_on_later_task, next, &f) != FUT_OK ||
	    fut_result(f, FUT_FOREVER, &v) != FUT_OK) {
		fut_task_fail(t, 1, "inner task failed");
	} else {
		fut_task_return(t, (void *)((uintptr_t)v + 1));
	}
	fut_release(f);
	free(next);
}

static void test_nested_wait_on_a_saturated_pool_does_not_hang(void **state)
{
	(void)state;
	for (int k = 0; k < 2; k++) {
		fut_executor *ex = k ? new_worker_only_pool(2, NULL) :
				       new_pool(2);
		pthread_barrier_t both_busy;
		pthread_barrier_init(&both_busy, NULL, 2);
		sem_t started;
		sem_init(&started, 0, 0);
		struct chain c[2];
		fut_future *f[2];
		for (int i = 0; i < 2; i++) {
			c[i] = (struct chain){ .ex = ex,
					       .started = &started,
					       .both_busy = &both_busy,
					       .depth = 20 };
			assert_int_equal(fut_submit(ex, wait_on_later_task,
						    &c[i], &f[i]),
					 FUT_OK);
			/* Running before the next submit, which therefore
			 * starts the second worker. */
			sem_wait(&started);
		}
		for (int i = 0; i < 2; i++) {
			assert_int_equal(result_of(f[i]), 21);
			fut_release(f[i]);
		}
		fut_executor_free(ex);
		pthread_barrier_destroy(&both_busy);
		sem_destroy(&started);
	}
}

/*
 * Memory follows what is live (issue 15): tiny tasks in windows of 10,000
 * (submit them, wait, release them) keep at most 10,000 futures alive,
 * and the slabs stay the size of one window, however many windows run;
 * freeing the pool gives them back.  0.1.0 grew ~8 MiB per million tasks
 * (blocks past a thread's cache pinned a slab each) and kept it all after
 * the free: 30 windows grew ~3 MiB.
 */
static void test_memory_in_windows_stays_the_size_of_a_window(void **state)
{
	(void)state;
	enum {
		WINDOW = 10000,
		WINDOWS = 30
	};
	fut__slab_cache_flush();
	size_t base = fut__slab_bytes();
	fut_executor *ex = new_pool(2);
	fut_future **fs = calloc(WINDOW, sizeof(*fs));
	assert_non_null(fs);
	size_t first = 0;
	for (int w = 0; w < WINDOWS; w++) {
		for (uintptr_t i = 0; i < WINDOW; i++)
			assert_int_equal(fut_submit(ex, plus_one, (void *)i,
						    &fs[i]),
					 FUT_OK);
		assert_int_equal(fut_wait(fs, WINDOW, FUT_ALL_COMPLETED,
					  FUT_FOREVER),
				 FUT_OK);
		for (uintptr_t i = 0; i < WINDOW; i++) {
			assert_int_equal(result_of(fs[i]), i + 1);
			fut_release(fs[i]);
		}
		if (w == 0)
			first = fut__slab_bytes();
	}
	size_t last = fut__slab_bytes();
	fut_executor_free(ex);
	size_t after = fut__slab_bytes();
	print_message("slabs: %zu KiB after one window, %zu KiB after %d, "
		      "%zu KiB after the free (%zu before the pool)\n",
		      first >> 10, last >> 10, WINDOWS, after >> 10,
		      base >> 10);
	assert_true(last <= first + (1u << 20));
	assert_true(after <= base + (128u << 10));
	free(fs);
}

/*
 * A burst's slabs are kept while their class is busy (a refill in the last
 * second), so that the next burst of the same size reuses their pages
 * instead of faulting fresh ones; once the class has been quiet a second,
 * the next give-back frees all but one; fut__slab_trim frees the rest.
 */
static void test_a_burst_reuses_the_slabs_of_the_last(void **state)
{
	(void)state;
	size_t first_peak_bytes = 0;
	enum {
		N = 20000, /* 128-byte blocks: ~2.5 MiB of slabs */
		HELD = 600 /* past a thread's cache: give-backs to the slabs */
	};
	fut__slab_cache_flush();
	size_t base = fut__slab_bytes();
	void **b = calloc(N, sizeof(*b));
	assert_non_null(b);
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < N; i++) {
			bool slab = false;
			b[i] = fut__slab_alloc(100, &slab);
			assert_non_null(b[i]);
			assert_true(slab);
		}
		size_t peak = fut__slab_bytes();
		assert_true(peak >= base + (size_t)N * 100);
		/* The second burst made no slab: it took the first's. */
		if (round == 1)
			assert_int_equal(peak, first_peak_bytes);
		first_peak_bytes = peak;
		size_t keep = round == 0 ? 0 : HELD;
		for (size_t i = keep; i < N; i++)
			fut__slab_free(b[i], true);
		/* Every slab emptied is kept while the class is busy. */
		assert_int_equal(fut__slab_bytes(), peak);
	}
	/* Quiet for a second: the next give-back frees the kept slabs. */
	struct timespec quiet = { 1, 100 * 1000 * 1000 };
	nanosleep(&quiet, NULL);
	for (size_t i = 0; i < HELD; i++)
		fut__slab_free(b[i], true);
	size_t after = fut__slab_bytes();
	print_message("slabs: %zu KiB at the peak, %zu KiB after a quiet "
		      "second\n",
		      first_peak_bytes >> 10, after >> 10);
	assert_true(after < first_peak_bytes / 4);
	fut__slab_trim();
	assert_true(fut__slab_bytes() <= base + (128u << 10));
	free(b);
}

/*
 * A slab whose every block came back is carved again from its start: the
 * next refill hands out its blocks by address, not through a free list
 * threaded through blocks long out of the cache (docs/perf-log.md,
 * 2026-12-07, "an emptied slab carved again").  Three threads, each with
 * a cache of its own: the first takes blocks of a new one-page slab, the
 * second gives them back in a scrambled order, the third takes them again.
 */
enum {
	CARVED = 40 /* of a one-page slab of 64-byte blocks (63) */
};

static void *take_carved(void *arg)
{
	void **b = arg;
	for (int i = 0; i < CARVED; i++)
		b[i] = fut__slab_get(0);
	return NULL;
}

static void *give_scrambled(void *arg)
{
	void **b = arg;
	for (int odd = 0; odd < 2; odd++)
		for (int i = odd; i < CARVED; i += 2)
			fut__slab_put(b[i]);
	return NULL;
}

static void in_a_thread(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
	assert_int_equal(pthread_join(t, NULL), 0); /* its cache flushed */
}

static void test_an_emptied_slab_is_carved_again_from_its_start(void **state)
{
	(void)state;
	void *first[CARVED], *again[CARVED];
	fut__slab_cache_flush(); /* the next refill makes a new slab */
	in_a_thread(take_carved, first);
	size_t bytes;
	void *slab = fut__slab_of(first[0], &bytes);
	assert_int_equal(bytes, 4096);
	in_a_thread(give_scrambled, first);
	in_a_thread(take_carved, again);
	ptrdiff_t step = (char *)again[0] - (char *)again[1];
	assert_int_equal(step, FUT__SLAB_SMALL);
	for (int i = 0; i < CARVED; i++) {
		assert_ptr_equal(fut__slab_of(again[i], &bytes), slab);
		/* A refill's blocks come off the cache last carved first. */
		if (i > 0)
			assert_int_equal(
				(char *)again[i - 1] - (char *)again[i], step);
	}
	in_a_thread(give_scrambled, again);
	fut__slab_trim();
}

/* A gated task that returns the address of a local: where its thread's
 * stack is. */
static void gated_stack_address(fut_task *t)
{
	struct gate *g = fut_task_arg(t);
	volatile char here = 0;
	sem_post(&g->started);
	sem_wait(&g->release);
	fut_task_return(t, (void *)(uintptr_t)&here);
}

/* Runs n tasks at once on a new pool of n, so each on a thread of its
 * own, and writes where each one's stack is. */
static void stacks_of_a_pool(size_t n, uintptr_t *at)
{
	fut_executor *ex = new_pool(n);
	struct gate g;
	gate_init(&g);
	fut_future *fs[16];
	for (size_t i = 0; i < n; i++)
		assert_int_equal(fut_submit(ex, gated_stack_address, &g,
					    &fs[i]),
				 FUT_OK);
	for (size_t i = 0; i < n; i++)
		sem_wait(&g.started);
	for (size_t i = 0; i < n; i++)
		sem_post(&g.release);
	for (size_t i = 0; i < n; i++) {
		at[i] = result_of(fs[i]);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	gate_fini(&g);
}

/*
 * The stacks of a freed pool's threads are kept for the next threads
 * (thread_pool/stack.c): the 8 threads of a pool made after one of 8 was
 * freed run on the same 8 stacks, where glibc alone keeps five of the
 * default 8 MiB and maps the others anew.
 */
static void test_a_new_pool_runs_on_the_stacks_of_a_freed_one(void **state)
{
	(void)state;
	enum {
		N = 8
	};
	uintptr_t first[N], second[N];
	stacks_of_a_pool(N, first);
	stacks_of_a_pool(N, second);
	size_t same = 0;
	for (size_t i = 0; i < N; i++)
		for (size_t k = 0; k < N; k++)
			if (second[i] - first[k] + (64u << 10) < (128u << 10))
				same++;
	print_message("%zu of %d threads ran on a kept stack\n", same, N);
	assert_int_equal(same, N);
}

/*
 * Keep this test last: what it checks is the process's exit.  A pool
 * freed from its own task leaves its worker to be joined later, when it
 * has exited; no later thread start joins it here, so the library's exit
 * hook must.  make check-valgrind fails the run if the thread's TLS
 * block is left behind ("possibly lost").  Natively it checks that the
 * worker ends.
 */
static pid_t freeing_worker;

/* free_self, in a worker whose thread id it records first. */
static void free_self_named(fut_task *t)
{
	freeing_worker = gettid();
	free_self(t);
}

static void
test_a_pool_freed_by_its_own_task_leaves_nothing_at_exit(void **state)
{
	(void)state;
	fut_executor *ex = new_worker_only_pool(1, NULL);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, free_self_named, ex, &f), FUT_OK);
	assert_int_equal(result_of(f), 3);
	fut_release(f);
	/* That very thread ends. */
	assert_true(thread_gone(freeing_worker, 5000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_submit_returns_the_task_value),
		cmocka_unit_test(
			test_submit_bytes_gives_the_task_a_private_copy),
		cmocka_unit_test(
			test_sequential_submit_and_wait_uses_one_thread),
		cmocka_unit_test(
			test_busy_workers_make_the_pool_start_more_threads),
		cmocka_unit_test(test_the_pool_never_changes_a_worker_policy),
		cmocka_unit_test(
			test_worker_threads_are_named_after_the_prefix),
		cmocka_unit_test(test_running_task_sees_the_interrupt_flag),
		cmocka_unit_test(test_shutdown_waits_for_every_task),
		cmocka_unit_test(
			test_shutdown_cancel_pending_cancels_what_has_not_started),
		cmocka_unit_test(test_shutdown_interrupt_flags_running_tasks),
		cmocka_unit_test(test_shutdown_nowait_returns_while_tasks_run),
		cmocka_unit_test(
			test_shutdown_with_wait_from_own_task_is_einval),
		cmocka_unit_test(test_free_from_own_task_defers_the_free),
		cmocka_unit_test(test_failing_initializer_breaks_the_pool),
		cmocka_unit_test(test_an_input_is_freed_however_its_task_ends),
		cmocka_unit_test(test_an_input_starts_aligned_as_malloc_memory),
		cmocka_unit_test(test_tasks_and_callbacks_can_submit),
		cmocka_unit_test(test_futures_outlive_the_pool),
		cmocka_unit_test(
			test_four_threads_submitting_at_once_get_every_result),
		cmocka_unit_test(test_submit_many_runs_every_input),
		cmocka_unit_test(test_workers_take_the_submitters_cpus),
		cmocka_unit_test(
			test_a_thread_started_by_a_moved_worker_runs_on_the_pools_cpus),
		cmocka_unit_test(test_bad_input_gives_einval),
		cmocka_unit_test(test_allocation_failures_are_clean),
		cmocka_unit_test(
			test_a_thread_with_many_pending_tasks_takes_populated_slabs),
		cmocka_unit_test(test_an_idle_worker_makes_the_next_slab_ready),
		cmocka_unit_test(
			test_memory_in_windows_stays_the_size_of_a_window),
		cmocka_unit_test(test_a_burst_reuses_the_slabs_of_the_last),
		cmocka_unit_test(
			test_an_emptied_slab_is_carved_again_from_its_start),
		cmocka_unit_test(
			test_a_new_pool_runs_on_the_stacks_of_a_freed_one),
		cmocka_unit_test(test_submit_blocks_while_the_queue_is_full),
		cmocka_unit_test(
			test_a_blocked_batch_gets_room_as_the_worker_runs_its_local_jobs),
		cmocka_unit_test(
			test_nested_wait_on_a_saturated_pool_does_not_hang),
		/* last: it checks the exit */
		cmocka_unit_test(
			test_a_pool_freed_by_its_own_task_leaves_nothing_at_exit),
	};
	/* TEST_FILTER=pattern runs the matching tests only. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
