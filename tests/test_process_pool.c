/*
 * test_process_pool.c: the process-pool executor.
 *
 * Every wait has a generous timeout only so that a bug fails the test
 * instead of hanging it; no test asserts a duration.  Tasks are functions
 * of this program: the workers are forked, not exec'd, so the pointers
 * stay valid in them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "fault_helpers.h"
#include "proc_helpers.h"

#define LONG_WAIT 120.0
#define VALGRIND_ERROR_EXIT 99 /* the Makefile's valgrind --error-exitcode */

static fut_executor *pool_with(const fut_process_pool_opts *o)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(&ex, o), FUT_OK);
	assert_non_null(ex);
	return ex;
}

static fut_executor *new_pool(size_t workers)
{
	return pool_with(&(fut_process_pool_opts){ .max_workers = workers });
}

static fut_future *submit_u64(fut_executor *ex, fut_fn fn, uint64_t v)
{
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, fn, &v, sizeof(v), &f), FUT_OK);
	return f;
}

static uint64_t input_u64(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	uint64_t v = 0;
	if (len == sizeof(v))
		memcpy(&v, in, sizeof(v));
	return v;
}

static uint64_t result_u64(fut_future *f)
{
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, LONG_WAIT, &data, &len), FUT_OK);
	assert_int_equal(len, sizeof(uint64_t));
	uint64_t v;
	memcpy(&v, data, sizeof(v));
	return v;
}

static void return_u64(fut_task *t, uint64_t v)
{
	assert_int_equal(fut_task_return_bytes(t, &v, sizeof(v)), FUT_OK);
}

/* ------------------------------------------------------------------ */
/* Tasks                                                               */

static void square_task(fut_task *t)
{
	uint64_t v = input_u64(t);
	return_u64(t, v * v);
}

static void square_or_crash_task(fut_task *t)
{
	uint64_t v = input_u64(t);
	if (v % 50 == 49)
		raise(SIGSEGV);
	return_u64(t, v * v);
}

static void pid_task(fut_task *t)
{
	return_u64(t, (uint64_t)getpid());
}

static void fail_task(fut_task *t)
{
	(void)fut_task_fail(t, 42, "bad input %d", 7);
}

static void pointer_task(fut_task *t)
{
	(void)fut_task_return(t, (void *)t);
}

static void abort_task(fut_task *t)
{
	(void)t;
	abort();
}

static void segv_task(fut_task *t)
{
	(void)t;
	raise(SIGSEGV);
}

static void exit3_task(fut_task *t)
{
	(void)t;
	_exit(3);
}

static void sigkill_task(fut_task *t)
{
	(void)t;
	raise(SIGKILL);
}

static void sleep_task(fut_task *t)
{
	uint64_t ms = input_u64(t);
	struct timespec ts = { (time_t)(ms / 1000),
			       (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return_u64(t, ms);
}

/* Shared with every worker (mapped before the pools are made). */
static _Atomic int *shared_pid;

/* Starts a child that sleeps, tells its pid, then sleeps itself. */
static void spawn_child_task(fut_task *t)
{
	(void)t;
	pid_t c = fork();
	if (c == 0) {
		pause();
		_exit(0);
	}
	atomic_store(shared_pid, (int)c);
	pause();
}

/* Writes to every fd of the worker open for writing but 0-2: its
 * result pipe gets `what`. */
static void scribble(const void *what, size_t len)
{
	for (int fd = 3; fd < 64; fd++) {
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY)
			(void)!write(fd, what, len);
	}
}

static void garbage_task(fut_task *t)
{
	(void)t;
	unsigned char junk[64];
	memset(junk, 0xAB, sizeof(junk));
	scribble(junk, sizeof(junk));
	pause(); /* the parent kills it */
}

/* A frame header announcing more than ever comes, then death. */
static void truncated_task(fut_task *t)
{
	(void)t;
	unsigned char hdr[16] = { 0xFB, 1, 2, 0, 1, 0, 0, 0, 0xE8, 3 };
	scribble(hdr, sizeof(hdr));
	_exit(0);
}

static void echo_task(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	assert_int_equal(fut_task_return_bytes(t, in, len), FUT_OK);
}

/* Checks a 64 MiB input pattern and answers with another. */
static void big_task(fut_task *t)
{
	size_t len = 0;
	const unsigned char *in = fut_task_input(t, &len);
	uint64_t sum = 0;
	for (size_t i = 0; i < len; i++)
		if (in[i] != (unsigned char)(i * 7 + 3))
			sum++;
	if (sum != 0 || len != ((size_t)64 << 20)) {
		(void)fut_task_fail(t, 1,
				    "input corrupt: %zu wrong bytes of %zu",
				    (size_t)sum, len);
		return;
	}
	unsigned char *out = malloc(len);
	if (out == NULL)
		abort();
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned char)(i * 13 + 1);
	(void)fut_task_return_bytes(t, out, len);
	free(out);
}

static int init_value;

static int init_sets(void *arg)
{
	init_value = (int)(intptr_t)arg;
	return 0;
}

static int init_fails(void *arg)
{
	(void)arg;
	return 5;
}

static void init_value_task(fut_task *t)
{
	return_u64(t, (uint64_t)init_value);
}

/* ------------------------------------------------------------------ */
/* Results and failures                                                */

static void test_byte_results_come_back(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	fut_future *fs[20];
	for (uint64_t i = 0; i < 20; i++)
		fs[i] = submit_u64(ex, square_task, i + 1);
	for (uint64_t i = 0; i < 20; i++) {
		assert_int_equal(result_u64(fs[i]), (i + 1) * (i + 1));
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
}

/* A result of any length, short ones included (they take the input's
 * place in the job block), starts 8-aligned: an int64_t or a double of
 * it is read in place (docs/api.md, fut_result_bytes). */
static void test_short_results_are_aligned_for_reading_in_place(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	enum {
		MAXLEN = 40
	};
	fut_future *fs[MAXLEN + 1];
	unsigned char in[MAXLEN];
	for (size_t i = 0; i < MAXLEN; i++)
		in[i] = (unsigned char)(i * 7 + 1);
	for (size_t n = 1; n <= MAXLEN; n++)
		assert_int_equal(fut_submit_bytes(ex, echo_task, in, n, &fs[n]),
				 FUT_OK);
	for (size_t n = 1; n <= MAXLEN; n++) {
		const void *out;
		size_t len;
		assert_int_equal(fut_result_bytes(fs[n], 30, &out, &len),
				 FUT_OK);
		assert_int_equal(len, n);
		assert_int_equal((uintptr_t)out % 8, 0);
		assert_memory_equal(out, in, n);
		fut_release(fs[n]);
	}
	fut_executor_free(ex);
}

static void test_empty_input_and_empty_result(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, echo_task, NULL, 0, &f), FUT_OK);
	const void *data = (void *)1;
	size_t len = 99;
	assert_int_equal(fut_result_bytes(f, LONG_WAIT, &data, &len), FUT_OK);
	assert_int_equal(len, 0);
	fut_release(f);
	fut_executor_free(ex);
}

static void test_submit_with_a_pointer_is_not_supported(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *f = (fut_future *)1;
	assert_int_equal(fut_submit(ex, square_task, NULL, &f), FUT_ENOTSUP);
	assert_null(f);
	fut_executor_free(ex);
}

static void test_a_pointer_result_reaches_the_caller_as_enotsup(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_u64(ex, pointer_task, 0);
	assert_int_equal(fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT), FUT_OK);
	assert_int_equal(fut_error(f), FUT_ENOTSUP);
	fut_release(f);
	fut_executor_free(ex);
}

static void test_task_failure_crosses_with_code_and_message(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_u64(ex, fail_task, 0);
	assert_int_equal(fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT), FUT_OK);
	assert_int_equal(fut_error(f), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 42);
	assert_string_equal(fut_error_message(f), "bad input 7");
	fut_release(f);
	fut_executor_free(ex);
}

static void test_submit_many_returns_every_result(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	enum {
		N = 20000
	};
	uint64_t *in = malloc(N * sizeof(*in));
	fut_future **fs = malloc(N * sizeof(*fs));
	assert_non_null(in);
	assert_non_null(fs);
	for (uint64_t i = 0; i < N; i++)
		in[i] = i;
	assert_int_equal(fut_submit_many(ex, square_task, in, sizeof(*in), N,
					 fs),
			 FUT_OK);
	assert_int_equal(fut_wait(fs, N, FUT_ALL_COMPLETED, LONG_WAIT), FUT_OK);
	for (uint64_t i = 0; i < N; i++) {
		assert_int_equal(result_u64(fs[i]), i * i);
		fut_release(fs[i]);
	}
	free(in);
	free(fs);
	fut_executor_free(ex);
}

static void test_big_argument_and_result_are_byte_exact(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	size_t len = (size_t)64 << 20;
	unsigned char *in = malloc(len);
	assert_non_null(in);
	for (size_t i = 0; i < len; i++)
		in[i] = (unsigned char)(i * 7 + 3);
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, big_task, in, len, &f), FUT_OK);
	free(in);
	const unsigned char *out = NULL;
	size_t got = 0;
	int rc = fut_result_bytes(f, LONG_WAIT, (const void **)&out, &got);
	if (rc != FUT_OK)
		fail_msg("rc %d: %s", rc, fut_error_message(f));
	assert_int_equal(got, len);
	size_t bad = 0;
	for (size_t i = 0; i < len; i++)
		if (out[i] != (unsigned char)(i * 13 + 1))
			bad++;
	assert_int_equal(bad, 0);
	fut_release(f);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* Crash isolation                                                     */

static void crash_fails_only_its_own_future(fut_fn crash, int want_sig,
					    int want_exit)
{
	fut_executor *ex = new_pool(2);
	fut_future *before[8], *bad, *after[8];
	for (uint64_t i = 0; i < 8; i++)
		before[i] = submit_u64(ex, square_task, i);
	bad = submit_u64(ex, crash, 0);
	for (uint64_t i = 0; i < 8; i++)
		after[i] = submit_u64(ex, square_task, i + 100);
	assert_int_equal(fut_wait(&bad, 1, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_int_equal(fut_error(bad), FUT_ECRASHED);
	assert_non_null(fut_error_message(bad));
	int status = 0;
	assert_int_equal(fut_crash_status(bad, &status), FUT_OK);
	if (want_sig != 0) {
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), want_sig);
	} else {
		assert_true(WIFEXITED(status));
		/* Under valgrind every forked child runs valgrind's leak check
		 * at _exit, and the parent's heap it inherited (reachable only
		 * from the parent's other threads, which the child lacks)
		 * counts as lost: valgrind then exits with its --error-exitcode
		 * (VALGRIND_ERROR_EXIT, as the Makefile sets it) instead. */
		int got = WEXITSTATUS(status);
		if (!(under_valgrind() && got == VALGRIND_ERROR_EXIT))
			assert_int_equal(got, want_exit);
	}
	for (uint64_t i = 0; i < 8; i++) {
		assert_int_equal(result_u64(before[i]), i * i);
		assert_int_equal(result_u64(after[i]), (i + 100) * (i + 100));
		fut_release(before[i]);
		fut_release(after[i]);
	}
	/* The pool goes on. */
	fut_future *f = submit_u64(ex, square_task, 9);
	assert_int_equal(result_u64(f), 81);
	fut_release(f);
	fut_release(bad);
	fut_executor_free(ex);
}

static void test_a_task_that_aborts_fails_only_its_future(void **state)
{
	(void)state;
	crash_fails_only_its_own_future(abort_task, SIGABRT, 0);
}

static void test_a_task_that_segfaults_fails_only_its_future(void **state)
{
	(void)state;
	crash_fails_only_its_own_future(segv_task, SIGSEGV, 0);
}

static void test_a_task_that_exits_fails_only_its_future(void **state)
{
	(void)state;
	crash_fails_only_its_own_future(exit3_task, 0, 3);
}

static void test_a_task_that_sigkills_itself_fails_only_its_future(void **state)
{
	(void)state;
	crash_fails_only_its_own_future(sigkill_task, SIGKILL, 0);
}

static void
test_crashes_inside_a_batch_fail_only_the_crashing_task(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	/* One submit_many batch (a few frames of many tasks each); every
	 * 50th task crashes its worker in the middle of a frame. */
	enum {
		N = 400
	};
	uint64_t in[N];
	fut_future *fs[N];
	for (uint64_t i = 0; i < N; i++)
		in[i] = i;
	assert_int_equal(fut_submit_many(ex, square_or_crash_task, in,
					 sizeof(in[0]), N, fs),
			 FUT_OK);
	for (uint64_t i = 0; i < N; i++) {
		assert_int_equal(fut_wait(&fs[i], 1, FUT_ALL_COMPLETED,
					  LONG_WAIT),
				 FUT_OK);
		if (i % 50 == 49) {
			assert_int_equal(fut_error(fs[i]), FUT_ECRASHED);
		} else {
			assert_int_equal(fut_error(fs[i]), FUT_OK);
			assert_int_equal(result_u64(fs[i]), i * i);
		}
		fut_release(fs[i]);
	}
	assert_int_equal(fut_submit_many(ex, square_task, in, sizeof(in[0]), N,
					 fs),
			 FUT_OK);
	fut_future *bad[4];
	for (int i = 0; i < 4; i++)
		bad[i] = submit_u64(ex, segv_task, 0);
	for (uint64_t i = 0; i < N; i++) {
		assert_int_equal(result_u64(fs[i]), i * i);
		fut_release(fs[i]);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(fut_wait(&bad[i], 1, FUT_ALL_COMPLETED,
					  LONG_WAIT),
				 FUT_OK);
		assert_int_equal(fut_error(bad[i]), FUT_ECRASHED);
		fut_release(bad[i]);
	}
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* Timeouts, interrupts, workers                                       */

static void
test_task_timeout_kills_the_worker_and_the_pool_goes_on(void **state)
{
	(void)state;
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .task_timeout = 0.2 });
	fut_future *slow = submit_u64(ex, sleep_task, 60000);
	fut_future *next = submit_u64(ex, square_task, 12);
	assert_int_equal(fut_wait(&slow, 1, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_int_equal(fut_error(slow), FUT_EDEADLINE);
	assert_int_equal(result_u64(next), 144);
	fut_release(slow);
	fut_release(next);
	fut_executor_free(ex);
}

static void test_interrupt_kills_a_sleeping_task(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *slow = submit_u64(ex, sleep_task, 60000);
	while (fut_state(slow) == FUT_PENDING)
		assert_int_equal(fut_wait(&slow, 1, FUT_ALL_COMPLETED, 0.001),
				 FUT_ETIMEDOUT);
	assert_int_equal(fut_interrupt(slow), FUT_OK);
	assert_int_equal(fut_wait(&slow, 1, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_int_equal(fut_error(slow), FUT_ECANCELLED);
	fut_future *f = submit_u64(ex, square_task, 5);
	assert_int_equal(result_u64(f), 25);
	fut_release(f);
	fut_release(slow);
	fut_executor_free(ex);
}

static void test_a_kill_takes_the_tasks_own_children(void **state)
{
	(void)state;
	atomic_store(shared_pid, 0);
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_u64(ex, spawn_child_task, 0);
	while (atomic_load(shared_pid) == 0)
		assert_int_equal(fut_wait(&f, 1, FUT_ALL_COMPLETED, 0.001),
				 FUT_ETIMEDOUT);
	pid_t child = atomic_load(shared_pid);
	assert_true(!process_gone(child));
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_int_equal(fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT), FUT_OK);
	assert_int_equal(fut_error(f), FUT_ECANCELLED);
	/* Its reaper is init: wait until it is gone or a zombie. */
	for (int i = 0; i < 100000 && !process_gone(child); i++)
		usleep(1000);
	assert_false(!process_gone(child));
	fut_release(f);
	fut_executor_free(ex);
}

static void test_max_tasks_per_child_one_gives_a_new_pid_per_task(void **state)
{
	(void)state;
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 2, .max_tasks_per_child = 1 });
	enum {
		N = 6
	};
	uint64_t pids[N];
	for (int i = 0; i < N; i++) {
		fut_future *f = submit_u64(ex, pid_task, 0);
		pids[i] = result_u64(f);
		fut_release(f);
		assert_int_not_equal(pids[i], (uint64_t)getpid());
		for (int k = 0; k < i; k++)
			assert_int_not_equal(pids[i], pids[k]);
	}
	fut_executor_free(ex);
}

static void test_the_initializer_runs_in_each_worker(void **state)
{
	(void)state;
	fut_executor *ex = pool_with(
		&(fut_process_pool_opts){ .max_workers = 2,
					  .initializer = init_sets,
					  .initarg = (void *)(intptr_t)77 });
	for (int i = 0; i < 4; i++) {
		fut_future *f = submit_u64(ex, init_value_task, 0);
		assert_int_equal(result_u64(f), 77);
		fut_release(f);
	}
	assert_int_equal(init_value, 0); /* not in the parent */
	fut_executor_free(ex);
}

static void test_a_failing_initializer_breaks_the_pool(void **state)
{
	(void)state;
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 2, .initializer = init_fails });
	fut_future *fs[4];
	for (int i = 0; i < 4; i++)
		fs[i] = submit_u64(ex, square_task, 1);
	assert_int_equal(fut_wait(fs, 4, FUT_ALL_COMPLETED, LONG_WAIT), FUT_OK);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(fut_error(fs[i]), FUT_EBROKEN);
		assert_non_null(
			strstr(fut_error_message(fs[i]), "initializer"));
		fut_release(fs[i]);
	}
	fut_future *f = NULL;
	uint64_t v = 1;
	assert_int_equal(fut_submit_bytes(ex, square_task, &v, sizeof(v), &f),
			 FUT_EBROKEN);
	assert_null(f);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* Threads in the parent                                               */

struct submitter {
	fut_executor *ex;
	int base;
	int bad;
};

static void *submit_thread(void *arg)
{
	struct submitter *s = arg;
	enum {
		N = 500
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++) {
		uint64_t v = (uint64_t)(s->base + i);
		if (fut_submit_bytes(s->ex, square_task, &v, sizeof(v),
				     &fs[i]) != FUT_OK) {
			s->bad++;
			fs[i] = NULL;
		}
	}
	for (int i = 0; i < N; i++) {
		if (fs[i] == NULL)
			continue;
		const void *d = NULL;
		size_t len = 0;
		uint64_t v = (uint64_t)(s->base + i), got = 0;
		if (fut_result_bytes(fs[i], LONG_WAIT, &d, &len) != FUT_OK ||
		    len != sizeof(got))
			s->bad++;
		else if (memcpy(&got, d, sizeof(got)), got != v * v)
			s->bad++;
		fut_release(fs[i]);
	}
	return NULL;
}

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static sem_t held_taken, held_release;

/* Holds `held` until told to let go. */
static void *hold_mutex(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&held);
	sem_post(&held_taken);
	while (sem_wait(&held_release) != 0)
		;
	pthread_mutex_unlock(&held);
	return NULL;
}

static void test_four_threads_submit_while_another_holds_a_mutex(void **state)
{
	(void)state;
	pthread_t holder;
	sem_init(&held_taken, 0, 0);
	sem_init(&held_release, 0, 0);
	assert_int_equal(pthread_create(&holder, NULL, hold_mutex, NULL), 0);
	while (sem_wait(&held_taken) != 0)
		;
	/* The pool and its replacement workers come after the lock was
	 * taken; workers that crash force replacements. */
	fut_executor *ex = new_pool(2);
	fut_future *crash = submit_u64(ex, abort_task, 0);
	struct submitter s[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		s[i] = (struct submitter){ ex, i * 1000, 0 };
		assert_int_equal(
			pthread_create(&th[i], NULL, submit_thread, &s[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(s[i].bad, 0);
	}
	assert_int_equal(fut_wait(&crash, 1, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_int_equal(fut_error(crash), FUT_ECRASHED);
	fut_release(crash);
	fut_executor_free(ex);
	sem_post(&held_release);
	pthread_join(holder, NULL);
	sem_destroy(&held_taken);
	sem_destroy(&held_release);
}

/* ------------------------------------------------------------------ */
/* Shutdown, free, leaks                                               */

static void test_no_child_and_no_fd_remain_after_free(void **state)
{
	(void)state;
	int fds = count_fds();
	int kids = count_children();
	fut_executor *ex = new_pool(3);
	fut_future *fs[30];
	for (uint64_t i = 0; i < 30; i++)
		fs[i] = submit_u64(ex, i % 10 == 9 ? segv_task : square_task,
				   i);
	assert_int_equal(fut_wait(fs, 30, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_true(count_children() > kids);
	fut_executor_free(ex);
	for (int i = 0; i < 30; i++)
		fut_release(fs[i]);
	assert_int_equal(count_children(), kids);
	assert_int_equal(count_fds(), fds);
}

static void test_shutdown_cancel_pending_cancels_the_queue(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *slow = submit_u64(ex, sleep_task, 300);
	while (fut_state(slow) == FUT_PENDING)
		(void)fut_wait(&slow, 1, FUT_ALL_COMPLETED, 0.001);
	fut_future *fs[20];
	for (uint64_t i = 0; i < 20; i++)
		fs[i] = submit_u64(ex, square_task, i);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_CANCEL_PENDING),
			 FUT_OK);
	assert_int_equal(result_u64(slow), 300);
	size_t cancelled = 0;
	for (int i = 0; i < 20; i++) {
		assert_true(fut_done(fs[i]));
		if (fut_cancelled(fs[i]))
			cancelled++;
		else
			assert_int_equal(fut_error(fs[i]), FUT_OK);
		fut_release(fs[i]);
	}
	assert_true(cancelled > 0);
	fut_future *f = (fut_future *)1;
	uint64_t v = 1;
	assert_int_equal(fut_submit_bytes(ex, square_task, &v, sizeof(v), &f),
			 FUT_ESHUTDOWN);
	fut_release(slow);
	fut_executor_free(ex);
}

static void test_shutdown_interrupt_kills_running_tasks(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	fut_future *fs[2];
	for (int i = 0; i < 2; i++)
		fs[i] = submit_u64(ex, sleep_task, 60000);
	while (fut_state(fs[0]) == FUT_PENDING ||
	       fut_state(fs[1]) == FUT_PENDING)
		(void)fut_wait(fs, 2, FUT_ALL_COMPLETED, 0.001);
	assert_int_equal(
		fut_executor_shutdown(ex, FUT_SHUTDOWN_INTERRUPT |
						  FUT_SHUTDOWN_CANCEL_PENDING),
		FUT_OK);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(fut_error(fs[i]), FUT_ECANCELLED);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
}

static void test_shutdown_nowait_then_free_completes_everything(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(2);
	fut_future *fs[50];
	for (uint64_t i = 0; i < 50; i++)
		fs[i] = submit_u64(ex, square_task, i);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	assert_int_equal(fut_executor_shutdown(ex, FUT_SHUTDOWN_NOWAIT),
			 FUT_OK);
	fut_executor_free(ex);
	for (uint64_t i = 0; i < 50; i++) {
		assert_int_equal(result_u64(fs[i]), i * i);
		fut_release(fs[i]);
	}
}

static _Atomic int cb_count;
static fut_executor *cb_pool;
static fut_future *_Atomic cb_next;

static void resubmit_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_fetch_add(&cb_count, 1);
	fut_future *g = NULL;
	uint64_t v = 6;
	if (fut_submit_bytes(cb_pool, square_task, &v, sizeof(v), &g) == FUT_OK)
		atomic_store(&cb_next, g);
	/* Waiting for itself from its own thread is refused. */
	assert_int_equal(fut_executor_shutdown(cb_pool, 0), FUT_EINVAL);
}

static void test_a_done_callback_may_submit_to_the_pool(void **state)
{
	(void)state;
	cb_pool = new_pool(1);
	fut_future *f = submit_u64(cb_pool, square_task, 3);
	assert_int_equal(fut_add_done_callback(f, resubmit_cb, NULL), FUT_OK);
	assert_int_equal(result_u64(f), 9);
	while (atomic_load(&cb_next) == NULL)
		(void)fut_wait(&f, 1, FUT_ALL_COMPLETED, 0.001);
	fut_future *g = atomic_load(&cb_next);
	assert_int_equal(result_u64(g), 36);
	assert_int_equal(atomic_load(&cb_count), 1);
	fut_release(g);
	fut_release(f);
	fut_executor_free(cb_pool);
}

static void free_pool_cb(fut_future *f, void *ud)
{
	(void)f;
	fut_executor_free(ud);
}

static void test_a_done_callback_may_free_its_pool(void **state)
{
	(void)state;
	int kids = count_children();
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_u64(ex, square_task, 4);
	assert_int_equal(fut_add_done_callback(f, free_pool_cb, ex), FUT_OK);
	assert_int_equal(result_u64(f), 16);
	fut_release(f);
	/* The manager finishes on its own; wait until its children went. */
	for (int i = 0; i < 100000 && count_children() != kids; i++)
		usleep(1000);
	assert_int_equal(count_children(), kids);
}

static void test_the_fork_server_is_restarted_when_killed(void **state)
{
	(void)state;
	int kids = count_children();
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_u64(ex, pid_task, 0);
	pid_t worker = (pid_t)result_u64(f);
	fut_release(f);
	assert_true(worker > 0 && worker != getpid());
	/* The fork server is this process's one child (the workers are its
	 * children): kill it. */
	assert_true(children(true) >= 1);
	/* Its worker dies with it (PR_SET_PDEATHSIG), a moment later.  A
	 * task the worker took in that moment dies with it (FUT_ECRASHED, as
	 * it should: the test failed that way once under valgrind), so the
	 * tasks below go in once it is gone and meet the new fork server's
	 * workers.  Its reaper is init: gone, or a zombie. */
	for (int i = 0; i < 100000 && !process_gone(worker); i++)
		usleep(1000);
	assert_true(process_gone(worker));
	for (uint64_t i = 0; i < 10; i++) {
		f = submit_u64(ex, square_task, i);
		assert_int_equal(result_u64(f), i * i);
		fut_release(f);
	}
	fut_executor_free(ex);
	assert_int_equal(count_children(), kids);
}

/* Counts atexit handlers run by processes other than this test's (the
 * pool's: none of them may run the parent's). */
static _Atomic int *foreign_exits;
static pid_t test_pid;

static void count_foreign_exit(void)
{
	if (getpid() != test_pid)
		atomic_fetch_add(foreign_exits, 1);
}

static void
test_workers_never_flush_the_parents_stdio_nor_run_its_atexit(void **state)
{
	(void)state;
	atomic_store(foreign_exits, 0);
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	if (fileno(tmp) < 3) {
		/* stdin was closed (some CI runners): on fd 0 the file would
		 * be every worker's stdin, and valgrind's exit-time libc
		 * cleanup (__libc_freeres) flushes a worker's copy of the
		 * buffer into it, which a plain _exit never does. */
		int fd = fcntl(fileno(tmp), F_DUPFD_CLOEXEC, 3);
		assert_true(fd >= 3);
		assert_int_equal(fclose(tmp), 0);
		tmp = fdopen(fd, "w+");
		assert_non_null(tmp);
	}
	assert_int_equal(setvbuf(tmp, NULL, _IOFBF, 4096), 0);
	fputs("buffered in the parent", tmp);
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .max_tasks_per_child = 1 });
	for (int i = 0; i < 3; i++) {
		fut_future *f =
			submit_u64(ex, i == 1 ? exit3_task : square_task, 1);
		(void)fut_wait(&f, 1, FUT_ALL_COMPLETED, LONG_WAIT);
		fut_release(f);
	}
	fut_executor_free(ex);
	struct stat st;
	assert_int_equal(fstat(fileno(tmp), &st), 0);
	assert_int_equal(st.st_size, 0);
	fclose(tmp);
	/* Workers retired (max_tasks_per_child), one _exit(3)ed in a task,
	 * the fork server and the last worker ended at free. */
	assert_int_equal(atomic_load(foreign_exits), 0);
}

static void test_a_worker_writing_garbage_fails_only_its_task(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *bad = submit_u64(ex, garbage_task, 0);
	fut_future *next = submit_u64(ex, square_task, 11);
	assert_int_equal(fut_wait(&bad, 1, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_int_equal(fut_error(bad), FUT_ECRASHED);
	assert_non_null(strstr(fut_error_message(bad), "malformed"));
	assert_int_equal(result_u64(next), 121);
	fut_release(bad);
	fut_release(next);
	fut_executor_free(ex);
}

static void test_a_truncated_frame_fails_only_its_task(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *bad = submit_u64(ex, truncated_task, 0);
	fut_future *next = submit_u64(ex, square_task, 12);
	assert_int_equal(fut_wait(&bad, 1, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	assert_int_equal(fut_error(bad), FUT_ECRASHED);
	assert_int_equal(result_u64(next), 144);
	fut_release(bad);
	fut_release(next);
	fut_executor_free(ex);
}

/* Room for a few fds only: the pool needs an eventfd, a socket pair and
 * the manager's pipes later.  Every limit from "none left" up must give
 * FUT_EAGAIN, or a pool that works once the limit is back, and leak
 * nothing (the fork server made under the limit must still take in each
 * worker's fds). */
static void create_under_tight_fd_limits(void)
{
	struct rlimit old;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int fds = count_fds();
	int kids = count_children();
	/* The limit bounds fd numbers: start where no fd can be had. */
	int lowest = lowest_free_fd();
	assert_true(lowest >= 0);
	for (int extra = 0; extra < 8; extra++) {
		struct rlimit lim = old;
		lim.rlim_cur = (rlim_t)(lowest + extra);
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
		fut_executor *ex = (fut_executor *)1;
		int rc = fut_process_pool_new(&ex, NULL);
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
		if (rc == FUT_OK) {
			fut_future *f = submit_u64(ex, square_task, 3);
			assert_int_equal(result_u64(f), 9);
			fut_release(f);
			fut_executor_free(ex);
		} else {
			assert_int_equal(rc, FUT_EAGAIN);
			assert_null(ex);
		}
		assert_int_equal(count_fds(), fds);
		assert_int_equal(count_children(), kids);
	}
}

static void test_fd_exhaustion_at_creation_is_eagain_without_leaks(void **state)
{
	(void)state;
	/* valgrind 3.19 keeps the limit to itself, and when a socketpair
	 * lands above it, closes both fds but reports success: the pool
	 * would be made on a closed fd.  The ASan build checks the leaks. */
	if (under_valgrind())
		skip();
	create_under_tight_fd_limits();
	/* With stdin closed (as under some CI runners) the pool's first fd
	 * takes 0 and the fork server is one fd tighter. */
	if (fcntl(0, F_GETFD) < 0)
		return; /* it is: done above */
	int saved = fcntl(0, F_DUPFD_CLOEXEC, 10);
	assert_true(saved >= 0);
	assert_int_equal(close(0), 0);
	create_under_tight_fd_limits();
	assert_int_equal(dup2(saved, 0), 0);
	assert_int_equal(close(saved), 0);
}

static void nofile_task(fut_task *t)
{
	struct rlimit rl;
	return_u64(t, getrlimit(RLIMIT_NOFILE, &rl) == 0 ?
			      (uint64_t)rl.rlim_cur :
			      0);
}

/* As a fork from this process would: the limit of the moment the
 * worker starts, not the fork server's. */
static void test_a_worker_gets_the_parents_fd_limit_when_it_starts(void **state)
{
	(void)state;
	struct rlimit old;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	struct rlimit lim = old;
	lim.rlim_cur = (rlim_t)(count_fds() + 100);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	fut_executor *ex = pool_with(&(fut_process_pool_opts){
		.max_workers = 1, .max_tasks_per_child = 1 });
	fut_future *f = submit_u64(ex, nofile_task, 0);
	uint64_t first = result_u64(f);
	fut_release(f);
	lim.rlim_cur += 7;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	f = submit_u64(ex, nofile_task, 0); /* a new worker */
	uint64_t second = result_u64(f);
	fut_release(f);
	fut_executor_free(ex);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	if (under_valgrind())
		return; /* valgrind keeps that limit to itself */
	assert_int_equal(first, lim.rlim_cur - 7);
	assert_int_equal(second, lim.rlim_cur);
}

static void test_bad_options_are_rejected(void **state)
{
	(void)state;
	fut_executor *ex = (fut_executor *)1;
	assert_int_equal(fut_process_pool_new(NULL, NULL), FUT_EINVAL);
	assert_int_equal(fut_process_pool_new(
				 &ex,
				 &(fut_process_pool_opts){
					 .max_workers = FUT_MAX_WORKERS + 1 }),
			 FUT_EINVAL);
	assert_null(ex);
	assert_int_equal(fut_process_pool_new(&ex,
					      &(fut_process_pool_opts){
						      .task_timeout = NAN }),
			 FUT_EINVAL);
	assert_null(ex);
}

int main(void)
{
	/* A worker that dies mid-write must not take us down: nothing to
	 * do here, the library never raises SIGPIPE. */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_byte_results_come_back),
		cmocka_unit_test(
			test_short_results_are_aligned_for_reading_in_place),
		cmocka_unit_test(test_empty_input_and_empty_result),
		cmocka_unit_test(test_submit_with_a_pointer_is_not_supported),
		cmocka_unit_test(
			test_a_pointer_result_reaches_the_caller_as_enotsup),
		cmocka_unit_test(
			test_task_failure_crosses_with_code_and_message),
		cmocka_unit_test(test_submit_many_returns_every_result),
		cmocka_unit_test(test_big_argument_and_result_are_byte_exact),
		cmocka_unit_test(test_a_task_that_aborts_fails_only_its_future),
		cmocka_unit_test(
			test_a_task_that_segfaults_fails_only_its_future),
		cmocka_unit_test(test_a_task_that_exits_fails_only_its_future),
		cmocka_unit_test(
			test_a_task_that_sigkills_itself_fails_only_its_future),
		cmocka_unit_test(
			test_crashes_inside_a_batch_fail_only_the_crashing_task),
		cmocka_unit_test(
			test_task_timeout_kills_the_worker_and_the_pool_goes_on),
		cmocka_unit_test(test_interrupt_kills_a_sleeping_task),
		cmocka_unit_test(test_a_kill_takes_the_tasks_own_children),
		cmocka_unit_test(
			test_max_tasks_per_child_one_gives_a_new_pid_per_task),
		cmocka_unit_test(test_the_initializer_runs_in_each_worker),
		cmocka_unit_test(test_a_failing_initializer_breaks_the_pool),
		cmocka_unit_test(
			test_four_threads_submit_while_another_holds_a_mutex),
		cmocka_unit_test(test_no_child_and_no_fd_remain_after_free),
		cmocka_unit_test(
			test_shutdown_cancel_pending_cancels_the_queue),
		cmocka_unit_test(test_shutdown_interrupt_kills_running_tasks),
		cmocka_unit_test(
			test_shutdown_nowait_then_free_completes_everything),
		cmocka_unit_test(test_a_done_callback_may_submit_to_the_pool),
		cmocka_unit_test(test_a_done_callback_may_free_its_pool),
		cmocka_unit_test(test_the_fork_server_is_restarted_when_killed),
		cmocka_unit_test(
			test_workers_never_flush_the_parents_stdio_nor_run_its_atexit),
		cmocka_unit_test(
			test_a_worker_writing_garbage_fails_only_its_task),
		cmocka_unit_test(test_a_truncated_frame_fails_only_its_task),
		cmocka_unit_test(
			test_fd_exhaustion_at_creation_is_eagain_without_leaks),
		cmocka_unit_test(
			test_a_worker_gets_the_parents_fd_limit_when_it_starts),
		cmocka_unit_test(test_bad_options_are_rejected),
	};
	shared_pid = mmap(NULL, sizeof(*shared_pid), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared_pid == MAP_FAILED)
		return 2;
	foreign_exits = mmap(NULL, sizeof(*foreign_exits),
			     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);
	if (foreign_exits == MAP_FAILED)
		return 2;
	test_pid = getpid();
	if (atexit(count_foreign_exit) != 0)
		return 2;
	/* TEST_FILTER=pattern runs only the matching tests. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
