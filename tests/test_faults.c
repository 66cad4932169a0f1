/*
 * test_faults.c: the library when the system says no.
 *
 * - The allocation-failure hook: a run of failures in a row
 *   (fut__alloc_fail_run), as tests/mpi use it.
 * - Allocation failure at every allocation site in turn: each public call
 *   that allocates is run with the 1st, 2nd, 3rd... allocation failing
 *   (fut__alloc_fail_nth) until it runs with no failure injected.  Each
 *   failed run must give FUT_ENOMEM and leave nothing behind: no future,
 *   no reference (future or pool), no registered callback or waiter, no
 *   byte (ASan/LSan and valgrind run this file in make check).
 * - A storm of signals (a SIGUSR1 handler without SA_RESTART, sent every
 *   ~50 us to the waiting thread and to the process) while thread-pool work
 *   and timed waits flow: no EINTR surfaces, every result is right.
 * - The parent's stdout closed while the pool runs.
 * - No thread can be started (RLIMIT_NPROC, in a child process): submit
 *   gives FUT_EAGAIN and leaves nothing behind; the pool works once
 *   threads can be started again.  A burst whose thread starts fail (some
 *   at once) runs on the threads there are, and every slot gets a thread
 *   once they can start.
 * - No fd can be opened (RLIMIT_NOFILE): fut_as_completed_fd() gives -1
 *   with EMFILE, the iterator still works, and a later call gets the fd.
 * The process pool's faults are in test_pp_faults.c.
 *
 * No sleep synchronises anything: timeouts only bound the waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
#include "thread_pool/pool.h"
#include "fault_helpers.h"

/* ------------------------------------------------------------------ */
/* The sweep                                                           */

static uint32_t refs_of(const fut_future *f)
{
	return atomic_load(&f->refs);
}

/* The pool's references: its handle's, its job blocks' (one between
 * them) and one per worker thread. */
static size_t pool_refs(fut_executor *ex)
{
	return atomic_load(&((struct tpool *)(void *)ex)->refs);
}

/* Job blocks of the pool not yet destroyed: pushed, less destroyed. */
static uint64_t pool_jobs(fut_executor *ex)
{
	struct tpool *p = (struct tpool *)(void *)ex;
	return atomic_load(&p->q.pushed) + atomic_load(&p->jobs_left);
}

static void new_futures(fut_future **fs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_int_equal(fut_future_new(&fs[i]), FUT_OK);
}

static void finish_and_release(fut_future **fs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!fut_done(fs[i]))
			assert_int_equal(fut_set_result(fs[i], NULL), FUT_OK);
		fut_release(fs[i]);
	}
}

/* ------------------------------------------------------------------ */
/* Futures                                                             */

struct future_new_ctx {
	fut_future *f;
};

static int future_new_run(void *ctx)
{
	struct future_new_ctx *c = ctx;
	c->f = (fut_future *)(uintptr_t)1; /* must be reset */
	return fut_future_new(&c->f);
}

static void future_new_after(void *ctx, int rc, bool injected)
{
	struct future_new_ctx *c = ctx;
	(void)injected;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		assert_null(c->f);
		return;
	}
	assert_int_equal(fut_state(c->f), FUT_PENDING);
	fut_release(c->f);
}

static void test_future_new_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct future_new_ctx c;
	const struct sweep_op op = { future_new_run, future_new_after };
	assert_int_equal(sweep(&op, &c), 1);
}

static _Atomic int callback_runs;

static void count_callback(fut_future *f, void *ud)
{
	(void)ud;
	assert_true(fut_done(f));
	atomic_fetch_add(&callback_runs, 1);
}

struct callback_ctx {
	fut_future *f;
};

static int callback_run(void *ctx)
{
	struct callback_ctx *c = ctx;
	return fut_add_done_callback(c->f, count_callback, NULL);
}

/* A refused callback is not registered: completing the future runs
 * nothing; an accepted one runs exactly once. */
static void callback_after(void *ctx, int rc, bool injected)
{
	struct callback_ctx *c = ctx;
	(void)injected;
	atomic_store(&callback_runs, 0);
	assert_true(rc == FUT_OK || rc == FUT_ENOMEM);
	assert_int_equal(fut_set_result(c->f, NULL), FUT_OK);
	assert_int_equal(atomic_load(&callback_runs), rc == FUT_OK ? 1 : 0);
	assert_int_equal(refs_of(c->f), 1);
	fut_release(c->f);
	if (injected) /* another run follows */
		assert_int_equal(fut_future_new(&c->f), FUT_OK);
}

static void test_done_callback_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct callback_ctx c;
	const struct sweep_op op = { callback_run, callback_after };
	assert_int_equal(fut_future_new(&c.f), FUT_OK);
	assert_int_equal(sweep(&op, &c), 1);
}

struct produce_ctx {
	fut_future *f;
	bool bytes;
};

static int produce_run(void *ctx)
{
	struct produce_ctx *c = ctx;
	if (c->bytes)
		return fut_set_result_bytes(c->f, "result", 6);
	return fut_set_error(c->f, 42, "a failure message");
}

/* A refused completion leaves the future pending, completable later. */
static void produce_after(void *ctx, int rc, bool injected)
{
	struct produce_ctx *c = ctx;
	(void)injected;
	if (rc == FUT_ENOMEM) {
		assert_int_equal(fut_state(c->f), FUT_PENDING);
		return;
	}
	assert_int_equal(rc, FUT_OK);
	const void *data;
	size_t len;
	int outcome = fut_result_bytes(c->f, 0, &data, &len);
	if (c->bytes) {
		assert_int_equal(outcome, FUT_OK);
		assert_int_equal(len, 6);
		assert_memory_equal(data, "result", 6);
	} else {
		assert_int_equal(outcome, FUT_ETASK);
		assert_int_equal(fut_task_code(c->f), 42);
		assert_string_equal(fut_error_message(c->f),
				    "a failure message");
	}
}

static void
test_producer_completion_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	const struct sweep_op op = { produce_run, produce_after };
	for (int bytes = 0; bytes < 2; bytes++) {
		struct produce_ctx c = { .bytes = bytes };
		assert_int_equal(fut_future_new(&c.f), FUT_OK);
		assert_int_equal(sweep(&op, &c), 1);
		fut_release(c.f);
	}
}

/* ------------------------------------------------------------------ */
/* Waiting on many                                                     */

#define MANY 40

struct ac_ctx {
	fut_future *fs[MANY];
	fut_as_completed *it;
};

static int ac_new_run(void *ctx)
{
	struct ac_ctx *c = ctx;
	c->it = (fut_as_completed *)(uintptr_t)1;
	return fut_as_completed_new(&c->it, c->fs, MANY);
}

/* A refused iterator holds no reference and no node: every future has
 * only the test's reference and completes without touching it. */
static void ac_new_after(void *ctx, int rc, bool injected)
{
	struct ac_ctx *c = ctx;
	(void)injected;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		assert_null(c->it);
		for (int i = 0; i < MANY; i++)
			assert_int_equal(refs_of(c->fs[i]), 1);
		return;
	}
	for (int i = 0; i < MANY; i++)
		assert_int_equal(refs_of(c->fs[i]), 2);
	fut_future *f;
	assert_int_equal(fut_as_completed_next(c->it, 0, &f), FUT_OK);
	assert_ptr_equal(f, c->fs[5]);
	assert_int_equal(fut_as_completed_next(c->it, 0, &f), FUT_ETIMEDOUT);
	fut_as_completed_free(c->it);
}

static void
test_as_completed_new_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct ac_ctx c;
	new_futures(c.fs, MANY);
	assert_int_equal(fut_set_result(c.fs[5], NULL), FUT_OK);
	const struct sweep_op op = { ac_new_run, ac_new_after };
	assert_true(sweep(&op, &c) > MANY);
	finish_and_release(c.fs, MANY);
}

struct ac_add_ctx {
	fut_as_completed *it;
	fut_future *base[4];
	fut_future *extra[MANY];
	size_t added;
};

static int ac_add_run(void *ctx)
{
	struct ac_add_ctx *c = ctx;
	return fut_as_completed_add(c->it, c->extra[c->added]);
}

static void ac_add_after(void *ctx, int rc, bool injected)
{
	struct ac_add_ctx *c = ctx;
	(void)injected;
	fut_future *f = c->extra[c->added];
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		assert_int_equal(refs_of(f), 1);
		return;
	}
	assert_int_equal(refs_of(f), 2);
	c->added++;
}

/* Adding while iterating: a refused add leaves the future out (the
 * iterator never yields it), the ones added are each yielded once. */
static void
test_as_completed_add_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct ac_add_ctx c = { 0 };
	new_futures(c.base, 4);
	new_futures(c.extra, MANY);
	assert_int_equal(fut_as_completed_new(&c.it, c.base, 4), FUT_OK);
	const struct sweep_op op = { ac_add_run, ac_add_after };
	long failures = 0;
	while (c.added < MANY)
		failures += sweep(&op, &c);
	assert_true(failures >= MANY); /* a node each, and the table grew */
	for (int i = 0; i < MANY; i++)
		assert_int_equal(fut_set_result(c.extra[i], NULL), FUT_OK);
	for (int i = 0; i < 4; i++)
		assert_int_equal(fut_set_result(c.base[i], NULL), FUT_OK);
	fut_future *f;
	int yielded = 0;
	while (fut_as_completed_next(c.it, 0, &f) == FUT_OK)
		yielded++;
	assert_int_equal(yielded, 4 + MANY);
	assert_int_equal(fut_as_completed_next(c.it, 0, &f), FUT_END);
	fut_as_completed_free(c.it);
	finish_and_release(c.base, 4);
	finish_and_release(c.extra, MANY);
}

/* fut_wait on more futures than its stack nodes hold allocates; the block
 * hook (called before the wait first sleeps) completes one future, so the
 * wait returns without any other thread or any timing. */
struct wait_ctx {
	fut_future *fs[MANY];
};

static int complete_one(void *ctx, struct fut__park *park)
{
	(void)park;
	struct wait_ctx *c = ctx;
	fut_future *f = c->fs[MANY - 1];
	if (!fut_done(f))
		assert_int_equal(fut_set_result(f, NULL), FUT_OK);
	return FUT_OK;
}

static int wait_run(void *ctx)
{
	struct wait_ctx *c = ctx;
	const struct fut__wait_hooks hooks = { .block = complete_one,
					       .ctx = c };
	fut__wait_hooks_set(&hooks);
	int rc = fut_wait(c->fs, MANY, FUT_FIRST_COMPLETED, FUT_FOREVER);
	fut__wait_hooks_set(NULL);
	return rc;
}

/* A refused wait left no node on any future: completing them all is
 * quiet (a stale node would be written into a dead stack frame). */
static void wait_after(void *ctx, int rc, bool injected)
{
	struct wait_ctx *c = ctx;
	(void)injected;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		assert_false(fut_done(c->fs[MANY - 1]));
	} else {
		assert_true(fut_done(c->fs[MANY - 1]));
	}
	for (int i = 0; i < MANY; i++) {
		assert_null(c->fs[i]->waiters);
		assert_int_equal(refs_of(c->fs[i]), 1);
	}
	finish_and_release(c->fs, MANY);
	if (injected) /* another run follows */
		new_futures(c->fs, MANY);
}

static void test_wait_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct wait_ctx c;
	const struct sweep_op op = { wait_run, wait_after };
	new_futures(c.fs, MANY);
	assert_int_equal(sweep(&op, &c), 1); /* the nodes */
}

/* ------------------------------------------------------------------ */
/* Thread pool                                                         */

struct pool_new_ctx {
	fut_executor *ex;
};

static int pool_new_run(void *ctx)
{
	struct pool_new_ctx *c = ctx;
	c->ex = (fut_executor *)(uintptr_t)1;
	return fut_thread_pool_new(&c->ex,
				   &(fut_thread_pool_opts){ .max_workers = 3 });
}

static void pool_new_after(void *ctx, int rc, bool injected)
{
	struct pool_new_ctx *c = ctx;
	(void)injected;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		assert_null(c->ex);
		return;
	}
	fut_executor_free(c->ex);
}

static void test_thread_pool_new_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct pool_new_ctx c;
	const struct sweep_op op = { pool_new_run, pool_new_after };
	assert_true(sweep(&op, &c) >= 2);
}

/* Bytes in, their checksum out as a pointer result: a task that
 * allocated could take the failure meant for the submit (the worker runs
 * it while the sweep's countdown is still armed). */
static uintptr_t checksum(const unsigned char *p, size_t len)
{
	uintptr_t h = len;
	for (size_t i = 0; i < len; i++)
		h = h * 131 + p[i];
	return h;
}

static void echo_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	if (in == NULL)
		fut_task_return(t, fut_task_arg(t));
	else
		fut_task_return(t, (void *)checksum(in, len));
}

enum submit_kind {
	SUBMIT_PTR,
	SUBMIT_SMALL,
	SUBMIT_LARGE,
	SUBMIT_MANY
};

#define BATCH 100
#define LARGE 5000

struct submit_ctx {
	fut_executor *ex;
	enum submit_kind kind;
	fut_future *out[BATCH];
	size_t refs_before, threads_before;
	unsigned char input[BATCH * 8 > LARGE ? BATCH * 8 : LARGE];
};

static int submit_run(void *ctx)
{
	struct submit_ctx *c = ctx;
	for (int i = 0; i < BATCH; i++)
		c->out[i] = (fut_future *)(uintptr_t)1;
	/* Quiet first: the last run's jobs are gone (a worker drops the
	 * queue's reference after the caller saw the result), so the pool
	 * has no job block left. */
	while (pool_jobs(c->ex) != 0)
		sched_yield();
	/* Empty the block caches so that this submit has to allocate. */
	fut__slab_cache_flush();
	c->refs_before = pool_refs(c->ex);
	c->threads_before = fut__tp_threads(c->ex);
	switch (c->kind) {
	case SUBMIT_PTR:
		return fut_submit(c->ex, echo_task, c, &c->out[0]);
	case SUBMIT_SMALL:
		return fut_submit_bytes(c->ex, echo_task, c->input, 8,
					&c->out[0]);
	case SUBMIT_LARGE:
		return fut_submit_bytes(c->ex, echo_task, c->input, LARGE,
					&c->out[0]);
	default:
		return fut_submit_many(c->ex, echo_task, c->input, 8, BATCH,
				       c->out);
	}
}

/* A refused submit made no future, took no pool reference, queued
 * nothing; an accepted one completes with the right result. */
static void submit_after(void *ctx, int rc, bool injected)
{
	struct submit_ctx *c = ctx;
	(void)injected;
	size_t n = c->kind == SUBMIT_MANY ? BATCH : 1;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		for (size_t i = 0; i < n; i++)
			assert_null(c->out[i]);
		/* A worker started by this call holds a reference of its
		 * own; nothing else may. */
		size_t started = fut__tp_threads(c->ex) - c->threads_before;
		assert_int_equal(pool_refs(c->ex), c->refs_before + started);
		assert_int_equal(pool_jobs(c->ex), 0);
		assert_int_equal(fut__tp_queued(c->ex), 0);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		void *v;
		assert_int_equal(fut_result(c->out[i], FUT_FOREVER, &v),
				 FUT_OK);
		if (c->kind == SUBMIT_PTR)
			assert_ptr_equal(v, c);
		else
			assert_int_equal(
				(uintptr_t)v,
				checksum(c->input + i * 8,
					 c->kind == SUBMIT_LARGE ? LARGE : 8));
		fut_release(c->out[i]);
	}
}

static void test_submit_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	const struct sweep_op op = { submit_run, submit_after };
	for (int kind = SUBMIT_PTR; kind <= SUBMIT_MANY; kind++) {
		/* A fresh pool: its first submit starts the first worker. */
		struct submit_ctx *c = calloc(1, sizeof(*c));
		assert_non_null(c);
		for (size_t i = 0; i < sizeof(c->input); i++)
			c->input[i] = (unsigned char)(i * 7 + 1);
		assert_int_equal(
			fut_thread_pool_new(
				&c->ex,
				&(fut_thread_pool_opts){ .max_workers = 2 }),
			FUT_OK);
		c->kind = (enum submit_kind)kind;
		/* The worker, then the job block (a worker started by a run
		 * that failed later stays: the next run needs no new one). */
		assert_true(sweep(&op, c) >= 2);
		/* Again on a pool whose worker exists: the block, and the
		 * input's copy when it is too large to sit in the block. */
		assert_true(sweep(&op, c) >= (kind == SUBMIT_LARGE ? 2 : 1));
		fut_executor_free(c->ex);
		free(c);
	}
}

/* Inside a task: the byte result's copy and the failure message's
 * formatting each fail once.  return_bytes reports it and settles
 * nothing, so the task can settle again; fail settles with the code and
 * no message (the future reports the code's text). */
static void task_out_of_memory(fut_task *t)
{
	bool fail = fut_task_arg(t) != NULL;
	long left;
	if (!fail) {
		fut__alloc_fail_nth(1);
		int rc = fut_task_return_bytes(t, "bytes", 5);
		left = fut__alloc_fail_nth(0);
		assert_int_equal(rc, FUT_ENOMEM);
		assert_int_equal(left, 0);
		assert_int_equal(fut_task_return_bytes(t, "again", 5), FUT_OK);
		return;
	}
	fut__alloc_fail_nth(1);
	int rc = fut_task_fail(t, 77, "message %d", 77);
	left = fut__alloc_fail_nth(0);
	assert_int_equal(rc, FUT_ENOMEM);
	assert_int_equal(left, 0);
	assert_int_equal(fut_task_fail(t, 78, "too late"), FUT_ESTATE);
}

static void test_task_results_report_out_of_memory(void **state)
{
	(void)state;
	fut_executor *ex;
	/* One worker: no other pool thread allocates meanwhile. */
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	fut_future *ok, *failed;
	assert_int_equal(fut_submit(ex, task_out_of_memory, NULL, &ok), FUT_OK);
	assert_int_equal(fut_submit(ex, task_out_of_memory, ex, &failed),
			 FUT_OK);
	const void *data;
	size_t len;
	assert_int_equal(fut_result_bytes(ok, FUT_FOREVER, &data, &len),
			 FUT_OK);
	assert_int_equal(len, 5);
	assert_memory_equal(data, "again", 5);
	assert_int_equal(fut_result(failed, FUT_FOREVER, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(failed), 77);
	assert_string_equal(fut_error_message(failed), fut_strerror(FUT_ETASK));
	fut_release(ok);
	fut_release(failed);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* A storm of signals                                                  */

static void spin_task(fut_task *t)
{
	size_t len;
	uint32_t n, acc = 0;
	memcpy(&n, fut_task_input(t, &len), sizeof(n));
	for (uint32_t i = 0; i < (n % 64) * 100; i++)
		acc = acc * 31 + i;
	(void)acc;
	uint64_t v = (uint64_t)n * 3 + 1;
	if (n % 5 == 0)
		fut_task_fail(t, (int)(n % 100), "n=%u", n);
	else
		fut_task_return_bytes(t, &v, sizeof(v));
}

static void check_spin_result(fut_future *f, uint32_t n)
{
	const void *data;
	size_t len;
	int rc = fut_result_bytes(f, 0, &data, &len);
	if (n % 5 == 0) {
		assert_int_equal(rc, FUT_ETASK);
		assert_int_equal(fut_task_code(f), (int)(n % 100));
		return;
	}
	assert_int_equal(rc, FUT_OK);
	assert_int_equal(len, sizeof(uint64_t));
	uint64_t v;
	memcpy(&v, data, sizeof(v));
	assert_int_equal(v, (uint64_t)n * 3 + 1);
}

/* One round: a batch, a few submits into a bounded queue (they block on a
 * futex), timed result / wait / as_completed (and its fd under poll)
 * until all are done, then the check of every result. */
static void storm_round(fut_executor *ex, uint32_t base)
{
	enum {
		N = 48
	};
	fut_future *fs[N];
	uint32_t in[N];
	for (uint32_t i = 0; i < N; i++)
		in[i] = base + i;
	/* Timed waits: only FUT_OK or FUT_ETIMEDOUT may come back. */
	storm_submit_and_wait(ex, spin_task, in, sizeof(in[0]), N, fs, base % N,
			      FUT_CODE_BIT(FUT_OK) | FUT_CODE_BIT(FUT_ETASK) |
				      FUT_CODE_BIT(FUT_ETIMEDOUT));
	for (uint32_t i = 0; i < N; i++) {
		check_spin_result(fs[i], in[i]);
		fut_release(fs[i]);
	}
}

static void test_signal_storm_surfaces_no_eintr(void **state)
{
	(void)state;
	fut_executor *ex;
	assert_int_equal(
		fut_thread_pool_new(&ex,
				    &(fut_thread_pool_opts){ .max_workers = 3,
							     .max_queue = 8 }),
		FUT_OK);
	struct storm s;
	storm_start(&s);
	long min_signals = under_valgrind() ? 200 : 2000;
	uint32_t rounds = 0;
	while (rounds < 20 || atomic_load(storm_signals_seen()) < min_signals)
		storm_round(ex, rounds++ * 1000);
	/* Shutdown waits on a condition variable with signals arriving. */
	fut_future *last;
	uint32_t n = 7;
	assert_int_equal(fut_submit_bytes(ex, spin_task, &n, sizeof(n), &last),
			 FUT_OK);
	assert_int_equal(fut_executor_shutdown(ex, 0), FUT_OK);
	check_spin_result(last, n);
	fut_release(last);
	storm_stop(&s);
	fut_executor_free(ex);
	print_message("signal storm: %ld signals over %u rounds\n",
		      atomic_load(storm_signals_seen()), rounds);
}

/* ------------------------------------------------------------------ */
/* stdout closed                                                       */

static void print_task(fut_task *t)
{
	/* Writing to a closed stdout fails (EBADF); it must not bring the
	 * task, the worker or the pool down. */
	int rc = printf("task %p\n", (void *)t);
	int flushed = fflush(stdout);
	int out[2] = { rc < 0 ? 1 : 0, flushed };
	fut_task_return_bytes(t, out, sizeof(out));
}

static void test_pool_runs_with_stdout_closed(void **state)
{
	(void)state;
	fflush(stdout);
	int saved = dup(1);
	assert_true(saved >= 0);
	assert_int_equal(close(1), 0);

	fut_executor *ex;
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){ .max_workers = 2 }),
			 FUT_OK);
	enum {
		N = 32
	};
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		assert_int_equal(fut_submit(ex, print_task, NULL, &fs[i]),
				 FUT_OK);
	/* The iterator's eventfd may well take fd 1 now: it must work. */
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, N), FUT_OK);
	int fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	int yielded = 0;
	fut_future *f;
	while (fut_as_completed_next(it, FUT_FOREVER, &f) == FUT_OK) {
		const void *data;
		size_t len;
		assert_int_equal(fut_result_bytes(f, 0, &data, &len), FUT_OK);
		assert_int_equal(len, 2 * sizeof(int));
		yielded++;
	}
	assert_int_equal(yielded, N);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 0), 1); /* FUT_END polls readable */
	fut_as_completed_free(it);
	assert_int_equal(fut_executor_shutdown(ex, 0), FUT_OK);
	for (int i = 0; i < N; i++)
		fut_release(fs[i]);
	fut_executor_free(ex);

	assert_int_equal(dup2(saved, 1), 1);
	close(saved);
	clearerr(stdout);
}

/* ------------------------------------------------------------------ */
/* Resource limits                                                     */

/* In a forked child (it changes its user and its limits): a plain check
 * that says what failed and exits 1, since cmocka's asserts belong to the
 * parent. */
#define CHILD_CHECK(cond)                                                      \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "child: line %d: %s\n", __LINE__,      \
				#cond);                                        \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* In a child: a pool of `workers`, for a user that RLIMIT_NPROC binds
 * (root is exempt: it becomes nobody). */
static fut_executor *child_pool(size_t workers)
{
	if (geteuid() == 0) {
		CHILD_CHECK(setgid(65534) == 0);
		CHILD_CHECK(setuid(65534) == 0);
	}
	fut_executor *ex;
	CHILD_CHECK(fut_thread_pool_new(
			    &ex, &(fut_thread_pool_opts){
					 .max_workers = workers }) == FUT_OK);
	return ex;
}

/* In a child: no thread can start from here on until *old is set back
 * (the soft limit alone is lowered, so it can come back). */
static void child_no_more_threads(struct rlimit *old)
{
	CHILD_CHECK(getrlimit(RLIMIT_NPROC, old) == 0);
	struct rlimit low = *old;
	low.rlim_cur = 0;
	CHILD_CHECK(setrlimit(RLIMIT_NPROC, &low) == 0);
}

static void child_no_threads(void)
{
	fut_executor *ex = child_pool(2);
	struct rlimit old;
	child_no_more_threads(&old);
	fut_future *f = (fut_future *)(uintptr_t)1;
	for (int i = 0; i < 3; i++) {
		CHILD_CHECK(fut_submit(ex, echo_task, &old, &f) == FUT_EAGAIN);
		CHILD_CHECK(f == NULL);
		CHILD_CHECK(fut__tp_threads(ex) == 0);
		CHILD_CHECK(pool_refs(ex) == 2 && pool_jobs(ex) == 0);
	}
	CHILD_CHECK(setrlimit(RLIMIT_NPROC, &old) == 0);
	void *v;
	CHILD_CHECK(fut_submit(ex, echo_task, &old, &f) == FUT_OK);
	CHILD_CHECK(fut_result(f, FUT_FOREVER, &v) == FUT_OK && v == &old);
	fut_release(f);
	fut_executor_free(ex);
	exit(0); /* exit, not _exit: the leak checkers run at exit */
}

/* Runs child() in a forked child, which must exit 0. */
static void expect_child_passes(void (*child)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child();
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_submit_without_threads_gives_eagain(void **state)
{
	(void)state;
	expect_child_passes(child_no_threads);
}

static void answer_task(fut_task *t)
{
	fut_task_return(t, (void *)(uintptr_t)42);
}

static void *submit_one(void *arg)
{
	fut_future *f = NULL;
	int rc = fut_submit(arg, answer_task, NULL, &f);
	fut_release(f);
	return (void *)(intptr_t)rc;
}

/*
 * The pool's first thread start fails slowly (a test hook: 500 ms, then
 * EAGAIN) while another thread submits.  Its submit says FUT_EAGAIN; the
 * other, made meanwhile, must run.  Before (found by review, 2026-12-07)
 * that one saw the first start's place taken, pushed beside the looker it
 * counted on, and when the start failed its task waited in a pool of no
 * thread for ever (here, fut_result ran out).
 */
static void test_a_submit_beside_a_failed_first_start_runs(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){ .max_workers = 4 }),
			 FUT_OK);
	fut__tp_test_fail_start(0, 500);
	pthread_t first;
	assert_int_equal(pthread_create(&first, NULL, submit_one, ex), 0);
	/* Until the first start is under way (its place published); the
	 * hook holds it 500 ms.  A bound only against a hang. */
	for (int i = 0; i < 10000 && atomic_load(&pool_of(ex)->nthreads) == 0;
	     i++)
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	assert_int_not_equal(atomic_load(&pool_of(ex)->nthreads), 0);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, answer_task, NULL, &f), FUT_OK);
	void *rc = NULL;
	assert_int_equal(pthread_join(first, &rc), 0);
	assert_int_equal((intptr_t)rc, FUT_EAGAIN);
	void *v = NULL;
	/* A timeout only against a hang. */
	assert_int_equal(fut_result(f, 30, &v), FUT_OK);
	assert_int_equal((uintptr_t)v, 42);
	fut_release(f);
	fut_executor_free(ex);
}

/* Tasks that all run at once or fail: each waits (10 s at most) until
 * GATED of them run. */
#define GATED 16
static atomic_int gated_running;

static void gated_task(fut_task *t)
{
	atomic_fetch_add(&gated_running, 1);
	struct timespec end, now;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += 10;
	while (atomic_load(&gated_running) < GATED) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > end.tv_sec ||
		    (now.tv_sec == end.tv_sec && now.tv_nsec > end.tv_nsec)) {
			fut_task_fail(t, FUT_ETIMEDOUT, "not all %d ran",
				      GATED);
			return;
		}
		sched_yield();
	}
	fut_task_return(t, NULL);
}

static void child_some_threads(void)
{
	fut_executor *ex = child_pool(GATED);
	void *v;
	fut_future *f;
	CHILD_CHECK(fut_submit(ex, echo_task, &v, &f) == FUT_OK);
	CHILD_CHECK(fut_result(f, FUT_FOREVER, &v) == FUT_OK);
	fut_release(f);
	struct rlimit old;
	child_no_more_threads(&old);
	/* A burst: the workers started to cover it all fail to start, some
	 * of them at once; the one thread runs every task. */
	enum {
		BURST = 256
	};
	static fut_future *fs[BURST];
	static unsigned char in[BURST];
	CHILD_CHECK(fut_submit_many(ex, echo_task, in, 1, BURST, fs) == FUT_OK);
	CHILD_CHECK(fut_wait(fs, BURST, FUT_ALL_COMPLETED, FUT_FOREVER) ==
		    FUT_OK);
	for (int i = 0; i < BURST; i++) {
		CHILD_CHECK(fut_result(fs[i], 0, &v) == FUT_OK);
		fut_release(fs[i]);
	}
	CHILD_CHECK(fut__tp_threads(ex) == 1);
	/* Threads can start again: the places of the failed starts are
	 * taken anew, and every slot gets a thread. */
	CHILD_CHECK(setrlimit(RLIMIT_NPROC, &old) == 0);
	for (int i = 0; i < GATED; i++)
		CHILD_CHECK(fut_submit(ex, gated_task, NULL, &fs[i]) == FUT_OK);
	for (int i = 0; i < GATED; i++) {
		CHILD_CHECK(fut_result(fs[i], FUT_FOREVER, &v) == FUT_OK);
		fut_release(fs[i]);
	}
	CHILD_CHECK(fut__tp_threads(ex) == GATED);
	fut_executor_free(ex);
	exit(0); /* exit, not _exit: the leak checkers run at exit */
}

static void
test_a_burst_whose_thread_starts_fail_runs_and_recovers(void **state)
{
	(void)state;
	expect_child_passes(child_some_threads);
}

static void test_as_completed_fd_reports_emfile_and_recovers(void **state)
{
	(void)state;
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int lowest = lowest_free_fd();
	assert_true(lowest >= 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest;
	if (setrlimit(RLIMIT_NOFILE, &low) != 0)
		skip(); /* valgrind keeps this limit to itself */
	fut_future *fs[2];
	new_futures(fs, 2);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, 2), FUT_OK);
	errno = 0;
	int fd = fut_as_completed_fd(it);
	int err = errno;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(fd, -1);
	assert_int_equal(err, EMFILE);
	/* Without its fd the iterator works as before. */
	assert_int_equal(fut_set_result(fs[1], NULL), FUT_OK);
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, FUT_FOREVER, &f), FUT_OK);
	assert_ptr_equal(f, fs[1]);
	/* With fds back, the next call makes it, at the right level. */
	fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 0), 0);
	assert_int_equal(fut_set_result(fs[0], NULL), FUT_OK);
	assert_int_equal(poll(&p, 1, 0), 1);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	fut_as_completed_free(it);
	finish_and_release(fs, 2);
}

/* The hook itself: a run of count allocations in a row fails from the
 * n-th on, and what replacing it returns says whether its first failure
 * came (0) or how many allocations were still due for it.  First in the
 * list: no pool of an earlier test allocates meanwhile. */
static void test_a_run_of_allocations_fails_in_a_row(void **state)
{
	(void)state;
	void *p[6];
	assert_int_equal(fut__alloc_fail_run(2, 3), 0);
	for (int i = 0; i < 6; i++)
		p[i] = fut__malloc(8);
	assert_non_null(p[0]);
	assert_null(p[1]);
	assert_null(p[2]);
	assert_null(p[3]);
	assert_non_null(p[4]);
	assert_non_null(p[5]);
	for (int i = 0; i < 6; i++)
		fut__free(p[i]);
	assert_int_equal(fut__alloc_fail_nth(0), 0);

	/* Not reached: one allocation went, its first failure is next but
	 * one. */
	(void)fut__alloc_fail_run(3, 4);
	fut__free(fut__malloc(8));
	assert_int_equal(fut__alloc_fail_run(0, 0), 2);
	void *q = fut__malloc(8);
	assert_non_null(q); /* disabled */
	fut__free(q);

	/* Begun: replacing it gives 0, and the rest of it is off. */
	(void)fut__alloc_fail_run(1, 3);
	assert_null(fut__malloc(8));
	assert_int_equal(fut__alloc_fail_nth(0), 0);
	q = fut__malloc(8);
	assert_non_null(q);
	fut__free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_run_of_allocations_fails_in_a_row),
		cmocka_unit_test(
			test_future_new_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_done_callback_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_producer_completion_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_as_completed_new_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_as_completed_add_fails_cleanly_at_every_allocation),
		cmocka_unit_test(test_wait_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_thread_pool_new_fails_cleanly_at_every_allocation),
		cmocka_unit_test(test_submit_fails_cleanly_at_every_allocation),
		cmocka_unit_test(test_task_results_report_out_of_memory),
		cmocka_unit_test(test_signal_storm_surfaces_no_eintr),
		cmocka_unit_test(test_pool_runs_with_stdout_closed),
		cmocka_unit_test(test_submit_without_threads_gives_eagain),
		cmocka_unit_test(
			test_a_submit_beside_a_failed_first_start_runs),
		cmocka_unit_test(
			test_a_burst_whose_thread_starts_fail_runs_and_recovers),
		cmocka_unit_test(
			test_as_completed_fd_reports_emfile_and_recovers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
