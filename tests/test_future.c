/*
 * test_future.c: the future, caller and producer side, and the task record.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"

static fut_future *new_future(void)
{
	fut_future *f = NULL;
	assert_int_equal(fut_future_new(&f), FUT_OK);
	assert_non_null(f);
	return f;
}

static void test_pending_future_costs_under_128_bytes(void **state)
{
	(void)state;
	assert_true(sizeof(struct fut_future) <= 128);
}

static void test_new_future_is_pending(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_state(f), FUT_PENDING);
	assert_false(fut_done(f));
	assert_false(fut_running(f));
	assert_false(fut_cancelled(f));
	assert_int_equal(fut_error(f), FUT_ESTATE);
	assert_null(fut_error_message(f));
	fut_release(f);
}

static void test_set_running_moves_pending_to_running(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_set_running(f), FUT_OK);
	assert_int_equal(fut_state(f), FUT_RUNNING);
	assert_true(fut_running(f));
	assert_int_equal(fut_set_running(f), FUT_ESTATE);
	fut_release(f);
}

static void test_set_result_gives_the_pointer(void **state)
{
	(void)state;
	int x = 0;
	fut_future *f = new_future();
	assert_int_equal(fut_set_result(f, &x), FUT_OK);
	void *v = NULL;
	assert_int_equal(fut_result(f, FUT_FOREVER, &v), FUT_OK);
	assert_ptr_equal(v, &x);
	assert_int_equal(fut_state(f), FUT_FINISHED);
	assert_int_equal(fut_error(f), FUT_OK);
	assert_null(fut_error_message(f));
	/* The pointer result seen as bytes: the pointer and length 0. */
	const void *d = NULL;
	size_t len = 99;
	assert_int_equal(fut_result_bytes(f, 0, &d, &len), FUT_OK);
	assert_ptr_equal(d, &x);
	assert_int_equal(len, 0);
	fut_release(f);
}

static void test_second_completion_is_estate_and_changes_nothing(void **state)
{
	(void)state;
	int x, y;
	fut_future *f = new_future();
	assert_int_equal(fut_set_result(f, &x), FUT_OK);
	assert_int_equal(fut_set_result(f, &y), FUT_ESTATE);
	assert_int_equal(fut_set_result_bytes(f, "ab", 2), FUT_ESTATE);
	assert_int_equal(fut_set_error(f, 1, "no"), FUT_ESTATE);
	assert_int_equal(fut_set_running(f), FUT_ESTATE);
	void *v;
	assert_int_equal(fut_result(f, 0, &v), FUT_OK);
	assert_ptr_equal(v, &x);
	fut_release(f);
}

static void test_set_result_bytes_copies_the_bytes(void **state)
{
	(void)state;
	char buf[] = "hello";
	fut_future *f = new_future();
	assert_int_equal(fut_set_result_bytes(f, buf, 5), FUT_OK);
	buf[0] = 'X';
	const void *d;
	size_t len;
	assert_int_equal(fut_result_bytes(f, 0, &d, &len), FUT_OK);
	assert_int_equal(len, 5);
	assert_memory_equal(d, "hello", 5);
	void *p;
	assert_int_equal(fut_result(f, 0, &p), FUT_OK);
	assert_ptr_equal(p, d);
	fut_release(f);
}

static void test_empty_byte_result_is_valid(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_set_result_bytes(f, NULL, 0), FUT_OK);
	const void *d = (const void *)1;
	size_t len = 7;
	assert_int_equal(fut_result_bytes(f, 0, &d, &len), FUT_OK);
	assert_int_equal(len, 0);
	assert_non_null(d);
	fut_release(f);
}

static void test_set_error_gives_etask_code_and_message(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_set_error(f, 42, "disk on fire"), FUT_OK);
	assert_int_equal(fut_result(f, 0, NULL), FUT_ETASK);
	assert_int_equal(fut_error(f), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 42);
	assert_string_equal(fut_error_message(f), "disk on fire");
	assert_int_equal(fut_state(f), FUT_FINISHED);
	fut_release(f);
}

static void test_error_without_message_gives_the_code_text(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_set_error(f, 3, NULL), FUT_OK);
	assert_string_equal(fut_error_message(f), fut_strerror(FUT_ETASK));
	fut_release(f);
}

static void test_cancel_pending_future_returns_true(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_true(fut_cancel(f));
	assert_true(fut_cancelled(f));
	assert_true(fut_done(f));
	assert_int_equal(fut_state(f), FUT_CANCELLED);
	assert_true(fut_cancel(f)); /* already cancelled: still true */
	assert_int_equal(fut_result(f, FUT_FOREVER, NULL), FUT_ECANCELLED);
	assert_int_equal(fut_error(f), FUT_ECANCELLED);
	assert_string_equal(fut_error_message(f), fut_strerror(FUT_ECANCELLED));
	assert_int_equal(fut_set_running(f), FUT_ECANCELLED);
	assert_int_equal(fut_set_result(f, NULL), FUT_ESTATE);
	fut_release(f);
}

static void test_cancel_running_future_returns_false(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_set_running(f), FUT_OK);
	assert_false(fut_cancel(f));
	assert_int_equal(fut_state(f), FUT_RUNNING);
	assert_int_equal(fut_set_result(f, NULL), FUT_OK);
	assert_false(fut_cancel(f));
	fut_release(f);
}

static void test_result_times_out_and_changes_nothing(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_result(f, 0, NULL), FUT_ETIMEDOUT);
	assert_int_equal(fut_result(f, 0.01, NULL), FUT_ETIMEDOUT);
	const void *d;
	size_t len;
	assert_int_equal(fut_result_bytes(f, 0.001, &d, &len), FUT_ETIMEDOUT);
	assert_null(d);
	assert_int_equal(fut_state(f), FUT_PENDING);
	fut_release(f);
}

struct completer {
	fut_future *f;
	pthread_barrier_t *go;
	intptr_t value;
};

static void *complete_after_barrier(void *arg)
{
	struct completer *c = arg;
	if (c->go != NULL)
		pthread_barrier_wait(c->go);
	fut_set_result(c->f, (void *)c->value);
	return NULL;
}

static void test_result_waits_for_another_thread(void **state)
{
	(void)state;
	for (int i = 0; i < 200; i++) {
		fut_future *f = new_future();
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, 2);
		struct completer c = { f, &go, i + 1 };
		pthread_t t;
		pthread_create(&t, NULL, complete_after_barrier, &c);
		pthread_barrier_wait(&go);
		void *v = NULL;
		assert_int_equal(fut_result(f, FUT_FOREVER, &v), FUT_OK);
		assert_int_equal((intptr_t)v, i + 1);
		pthread_join(t, NULL);
		pthread_barrier_destroy(&go);
		fut_release(f);
	}
}

struct many_waiters {
	fut_future *f;
	_Atomic int woke;
};

static void *wait_forever(void *arg)
{
	struct many_waiters *m = arg;
	void *v;
	if (fut_result(m->f, FUT_FOREVER, &v) == FUT_OK && v == (void *)m)
		atomic_fetch_add(&m->woke, 1);
	return NULL;
}

static void test_every_thread_waiting_on_a_future_wakes(void **state)
{
	(void)state;
	struct many_waiters m = { new_future(), 0 };
	pthread_t t[8];
	for (int i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, wait_forever, &m);
	fut_set_result(m.f, &m);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&m.woke), 8);
	fut_release(m.f);
}

struct cb_log {
	int calls[8];
	int n;
	pthread_t thread;
	fut_future *seen;
};

static void record_cb(fut_future *f, void *ud)
{
	struct cb_log *log = ud;
	log->seen = f;
	log->thread = pthread_self();
	log->calls[log->n++] = fut_done(f) ? 1 : -1;
}

static void record_order_a(fut_future *f, void *ud)
{
	(void)f;
	struct cb_log *log = ud;
	log->calls[log->n++] = 10;
}

static void record_order_b(fut_future *f, void *ud)
{
	(void)f;
	struct cb_log *log = ud;
	log->calls[log->n++] = 20;
}

static void test_callback_runs_once_in_the_completing_thread(void **state)
{
	(void)state;
	struct cb_log log = { 0 };
	fut_future *f = new_future();
	assert_int_equal(fut_add_done_callback(f, record_cb, &log), FUT_OK);
	assert_int_equal(log.n, 0);
	struct completer c = { f, NULL, 1 };
	pthread_t t;
	pthread_create(&t, NULL, complete_after_barrier, &c);
	pthread_join(t, NULL);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.calls[0], 1);
	assert_true(pthread_equal(log.thread, t));
	assert_ptr_equal(log.seen, f);
	fut_release(f);
	assert_int_equal(log.n, 1);
}

static void test_callback_on_done_future_runs_at_once_in_caller(void **state)
{
	(void)state;
	struct cb_log log = { 0 };
	fut_future *f = new_future();
	fut_set_result(f, NULL);
	assert_int_equal(fut_add_done_callback(f, record_cb, &log), FUT_OK);
	assert_int_equal(log.n, 1);
	assert_true(pthread_equal(log.thread, pthread_self()));
	fut_release(f);
}

static void test_callbacks_run_in_the_order_added(void **state)
{
	(void)state;
	struct cb_log log = { 0 };
	fut_future *f = new_future();
	fut_add_done_callback(f, record_order_a, &log);
	fut_add_done_callback(f, record_order_b, &log);
	fut_add_done_callback(f, record_order_a, &log);
	assert_true(fut_cancel(f)); /* cancelling runs them too */
	assert_int_equal(log.n, 3);
	assert_int_equal(log.calls[0], 10);
	assert_int_equal(log.calls[1], 20);
	assert_int_equal(log.calls[2], 10);
	fut_release(f);
}

static void release_in_callback(fut_future *f, void *ud)
{
	(void)ud;
	/* No lock is held: calling back into the library is fine. */
	assert_true(fut_done(f));
	assert_int_equal(fut_result(f, 0, NULL), FUT_OK);
	fut_release(f);
}

static void test_callback_may_release_the_future(void **state)
{
	(void)state;
	fut_future *f = new_future();
	fut_retain(f); /* the callback's reference */
	assert_int_equal(fut_add_done_callback(f, release_in_callback, NULL),
			 FUT_OK);
	assert_int_equal(fut_set_result(f, NULL), FUT_OK);
	fut_release(f);
}

/* The first callback drops the only reference (the caller handed it
 * over); the second still gets a live future, whether fut_set_result()
 * or fut_cancel() completes it: the library holds a reference across the
 * callbacks.  Before (found by review, 2026-12-07) the second read a
 * freed future: AddressSanitizer, heap-use-after-free in fut_done. */
static void drop_reference(fut_future *f, void *ud)
{
	(void)ud;
	fut_release(f);
}

static void test_a_callback_may_drop_the_last_reference(void **state)
{
	(void)state;
	for (int cancel = 0; cancel < 2; cancel++) {
		struct cb_log log = { 0 };
		fut_future *f = new_future();
		assert_int_equal(fut_add_done_callback(f, drop_reference, NULL),
				 FUT_OK);
		assert_int_equal(fut_add_done_callback(f, record_cb, &log),
				 FUT_OK);
		if (cancel)
			assert_true(fut_cancel(f));
		else
			assert_int_equal(fut_set_result(f, NULL), FUT_OK);
		assert_int_equal(log.n, 1);
		assert_int_equal(log.calls[0], 1);
	}
}

static void
test_released_pending_future_with_callbacks_leaks_nothing(void **state)
{
	(void)state;
	struct cb_log log = { 0 };
	fut_future *f = new_future();
	fut_add_done_callback(f, record_cb, &log);
	fut_add_done_callback(f, record_cb, &log);
	fut_release(f); /* callbacks never run; ASan/valgrind see no leak */
	assert_int_equal(log.n, 0);
}

static void test_retain_keeps_the_future_alive(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_ptr_equal(fut_retain(f), f);
	fut_release(f);
	assert_int_equal(fut_set_result_bytes(f, "x", 1), FUT_OK);
	assert_true(fut_done(f));
	fut_release(f);
}

/*
 * Retains past the count's room are refused, not wrapped: with 2^32
 * retains the count came back to 1 and the next release freed a future
 * still held (found by review, 2026-12-07: ASan, heap-use-after-free).
 * The count is set near its bound here rather than retained there
 * (4 billion calls).
 */
static void test_retain_past_the_bound_is_refused(void **state)
{
	(void)state;
	fut_future *f = new_future();
	atomic_store(&f->refs, FUT__REFS_MAX - 1);
	assert_ptr_equal(fut_retain(f), f); /* the last one taken */
	assert_null(fut_retain(f));
	assert_null(fut_retain(f));
	assert_int_equal(atomic_load(&f->refs), FUT__REFS_MAX);
	fut_release(f);
	assert_ptr_equal(fut_retain(f), f);
	atomic_store(&f->refs, 1); /* back to the caller's own */
	assert_int_equal(fut_set_result_bytes(f, "x", 1), FUT_OK);
	fut_release(f);
}

/*
 * An iterator's reference is checked as fut_retain's: unchecked, 65,537
 * iterators on a future retained to the bound wrapped its count, and
 * freeing them freed the future still held (found by review,
 * 2026-12-07).
 */
static void test_an_iterator_past_the_reference_bound_is_enomem(void **state)
{
	(void)state;
	fut_future *f = new_future();
	fut_future *other = new_future();
	atomic_store(&f->refs, FUT__REFS_MAX);
	fut_as_completed *it = NULL;
	assert_int_equal(fut_as_completed_new(&it, &f, 1), FUT_ENOMEM);
	assert_null(it);
	assert_int_equal(atomic_load(&f->refs), FUT__REFS_MAX);
	assert_int_equal(fut_as_completed_new(&it, &other, 1), FUT_OK);
	assert_int_equal(fut_as_completed_add(it, f), FUT_ENOMEM);
	assert_int_equal(atomic_load(&f->refs), FUT__REFS_MAX);
	atomic_store(&f->refs, FUT__REFS_MAX - 1); /* room for one */
	assert_int_equal(fut_as_completed_add(it, f), FUT_OK);
	assert_int_equal(atomic_load(&f->refs), FUT__REFS_MAX);
	fut_as_completed_free(it);
	assert_int_equal(atomic_load(&f->refs), FUT__REFS_MAX - 1);
	atomic_store(&f->refs, 1); /* back to the caller's own */
	fut_release(f);
	fut_release(other);
}

static void test_interrupt_pending_future_cancels_it(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_true(fut_cancelled(f));
	assert_int_equal(fut_interrupt(f), FUT_ESTATE);
	fut_release(f);
}

static void test_interrupt_running_future_raises_the_task_flag(void **state)
{
	(void)state;
	fut_future *f = new_future();
	fut_task t;
	fut__task_init(&t, NULL, NULL, NULL, 0, &f->flags);
	assert_false(fut_task_cancelled(&t));
	assert_int_equal(fut_set_running(f), FUT_OK);
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_true(fut_task_cancelled(&t));
	assert_int_equal(fut_state(f), FUT_RUNNING);
	fut_set_result(f, NULL);
	assert_int_equal(fut_interrupt(f), FUT_ESTATE);
	fut_release(f);
}

/* The producer of a fut_future_new() future: it runs until asked to
 * stop, then ends the future its own way. */
static void *stop_when_asked(void *arg)
{
	fut_future *f = arg;
	while (!fut_interrupt_requested(f))
		sched_yield();
	(void)fut_set_error(f, 7, "stopped on request");
	return NULL;
}

static void
test_producer_reads_an_interrupt_with_interrupt_requested(void **state)
{
	(void)state;
	assert_false(fut_interrupt_requested(NULL));
	/* Pending: the interrupt cancels it, and raises no flag. */
	fut_future *f = new_future();
	assert_false(fut_interrupt_requested(f));
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_true(fut_cancelled(f));
	assert_false(fut_interrupt_requested(f));
	fut_release(f);
	/* Running: the flag goes up, stays up, and the producer (another
	 * thread) decides what the future ends with. */
	f = new_future();
	assert_int_equal(fut_set_running(f), FUT_OK);
	assert_false(fut_interrupt_requested(f));
	pthread_t producer;
	assert_int_equal(pthread_create(&producer, NULL, stop_when_asked, f),
			 0);
	assert_int_equal(fut_interrupt(f), FUT_OK);
	assert_int_equal(fut_result(f, FUT_FOREVER, NULL), FUT_ETASK);
	assert_int_equal(pthread_join(producer, NULL), 0);
	assert_string_equal(fut_error_message(f), "stopped on request");
	assert_true(fut_interrupt_requested(f));
	assert_int_equal(fut_interrupt(f), FUT_ESTATE);
	fut_release(f);
}

static void test_crash_status_is_readable_only_for_crashed_futures(void **state)
{
	(void)state;
	int status = -1;
	fut_future *f = new_future();
	assert_int_equal(fut_crash_status(f, &status), FUT_ESTATE);
	char *msg = fut__strdup("worker killed by signal 9");
	assert_int_equal(fut__future_crash(f, 9, msg), FUT_OK);
	assert_int_equal(fut_result(f, 0, NULL), FUT_ECRASHED);
	assert_int_equal(fut_crash_status(f, &status), FUT_OK);
	assert_int_equal(status, 9);
	assert_string_equal(fut_error_message(f), "worker killed by signal 9");
	fut_release(f);
}

struct race {
	fut_future *f;
	pthread_barrier_t *go;
	_Atomic int wins;
};

static void *race_set_running(void *arg)
{
	struct race *r = arg;
	pthread_barrier_wait(r->go);
	if (fut_set_running(r->f) == FUT_OK) {
		atomic_fetch_add(&r->wins, 1);
		fut_set_result(r->f, NULL);
	}
	return NULL;
}

static void test_cancel_and_start_racing_have_exactly_one_winner(void **state)
{
	(void)state;
	for (int i = 0; i < 2000; i++) {
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, 2);
		struct race r = { new_future(), &go, 0 };
		pthread_t t;
		pthread_create(&t, NULL, race_set_running, &r);
		pthread_barrier_wait(&go);
		if (fut_cancel(r.f))
			atomic_fetch_add(&r.wins, 1);
		pthread_join(t, NULL);
		assert_int_equal(atomic_load(&r.wins), 1);
		assert_true(fut_done(r.f));
		pthread_barrier_destroy(&go);
		fut_release(r.f);
	}
}

/* What a thread that meets a future in COMPLETING calls, and its answer. */
struct outwait {
	fut_future *f;
	int call; /* 0 fut_cancel, 1 fut_interrupt, 2 fut_set_running */
	int rc;
};

static void *outwait_completing(void *arg)
{
	struct outwait *o = arg;
	o->rc = o->call == 0 ? (int)fut_cancel(o->f) :
		o->call == 1 ? fut_interrupt(o->f) :
			       fut_set_running(o->f);
	return NULL;
}

/* A completer that loses its cpu between its claim and its publish makes
 * the threads that wait it out sleep (SLEEPERS set on the state word), not
 * spin until it runs again; its publish wakes every one. */
static void
test_threads_waiting_out_a_completion_sleep_until_it_ends(void **state)
{
	(void)state;
	fut_future *f = new_future();
	assert_true(fut__future_claim(f)); /* now COMPLETING, and held */
	struct outwait o[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		o[i] = (struct outwait){ f, i, -1 };
		pthread_create(&t[i], NULL, outwait_completing, &o[i]);
	}
	/* The bound only avoids a hang: a spinner never sets the bit. */
	bool asleep = false;
	for (int i = 0; i < 10000 && !asleep; i++) {
		asleep = atomic_load(&f->state) & FUT__S_SLEEPERS;
		if (!asleep)
			usleep(1000);
	}
	assert_true(asleep);
	assert_int_equal(fut__future_state(f), FUT__S_COMPLETING);
	fut__future_settle_value(f, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(o[0].rc, 0); /* fut_cancel: false, it finished */
	assert_int_equal(o[1].rc, FUT_ESTATE);
	assert_int_equal(o[2].rc, FUT_ESTATE);
	assert_int_equal(fut_state(f), FUT_FINISHED);
	assert_int_equal(atomic_load(&f->state), FUT__S_FINISHED);
	fut_release(f);
}

static void test_task_settles_once(void **state)
{
	(void)state;
	int x;
	fut_task t;
	fut__task_init(&t, NULL, &x, "in", 2, NULL);
	assert_ptr_equal(fut_task_arg(&t), &x);
	size_t len = 0;
	assert_memory_equal(fut_task_input(&t, &len), "in", 2);
	assert_int_equal(len, 2);
	assert_false(fut_task_cancelled(&t));
	assert_int_equal(fut_task_return_bytes(&t, "abc", 3), FUT_OK);
	assert_int_equal(fut_task_return(&t, &x), FUT_ESTATE);
	assert_int_equal(fut_task_fail(&t, 1, "no"), FUT_ESTATE);
	assert_int_equal(fut_task_return_bytes(&t, "d", 1), FUT_ESTATE);
	fut_future *f = new_future();
	assert_int_equal(fut__task_finish(&t, f), FUT_OK);
	const void *d;
	assert_int_equal(fut_result_bytes(f, 0, &d, &len), FUT_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(d, "abc", 3);
	fut_release(f);
}

static void test_task_fail_formats_its_message(void **state)
{
	(void)state;
	fut_task t;
	fut__task_init(&t, NULL, NULL, NULL, 0, NULL);
	assert_int_equal(fut_task_fail(&t, 7, "bad %s #%d", "row", 12), FUT_OK);
	fut_future *f = new_future();
	assert_int_equal(fut__task_finish(&t, f), FUT_OK);
	assert_int_equal(fut_result(f, 0, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 7);
	assert_string_equal(fut_error_message(f), "bad row #12");
	fut_release(f);
}

static void test_task_without_outcome_finishes_with_null(void **state)
{
	(void)state;
	fut_task t;
	fut__task_init(&t, NULL, NULL, NULL, 0, NULL);
	fut_future *f = new_future();
	assert_int_equal(fut__task_finish(&t, f), FUT_OK);
	void *v = (void *)1;
	assert_int_equal(fut_result(f, 0, &v), FUT_OK);
	assert_null(v);
	fut_release(f);
}

static void test_unclaimed_task_outcome_is_freed(void **state)
{
	(void)state;
	fut_task t;
	fut__task_init(&t, NULL, NULL, NULL, 0, NULL);
	assert_int_equal(fut_task_return_bytes(&t, "zz", 2), FUT_OK);
	fut__task_clear(&t);
	assert_int_equal(fut_task_fail(&t, 1, "m%d", 1), FUT_OK);
	fut__task_clear(&t);
}

static void nop_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
}

static const struct fut__future_ops executor_ops = { 0 };

static void test_producer_calls_refuse_an_executors_future(void **state)
{
	(void)state;
	/* A future with ops belongs to an executor: the caller may not
	 * start or complete it, or the executor would drop its task. */
	fut_future *f = malloc(sizeof(*f));
	fut__future_init(f, &executor_ops);
	assert_int_equal(fut_set_running(f), FUT_EINVAL);
	assert_int_equal(fut_set_result(f, NULL), FUT_EINVAL);
	assert_int_equal(fut_set_result_bytes(f, "a", 1), FUT_EINVAL);
	assert_int_equal(fut_set_error(f, 1, "x"), FUT_EINVAL);
	assert_int_equal(fut_state(f), FUT_PENDING);
	assert_int_equal(fut__future_start(f), FUT_OK);
	assert_int_equal(fut__future_start(f), FUT_ESTATE);
	fut__future_succeed(f, NULL);
	fut_release(f); /* ops->destroy is NULL: freed with fut__free */
}

static void test_bad_input_gives_einval(void **state)
{
	(void)state;
	fut_future *f = new_future();
	void *v = (void *)1;
	const void *d = (const void *)1;
	size_t len = 1;
	assert_int_equal(fut_future_new(NULL), FUT_EINVAL);
	assert_int_equal(fut_state(NULL), FUT_EINVAL);
	assert_false(fut_done(NULL));
	assert_false(fut_running(NULL));
	assert_false(fut_cancelled(NULL));
	assert_false(fut_cancel(NULL));
	assert_int_equal(fut_result(NULL, 0, &v), FUT_EINVAL);
	assert_null(v);
	assert_int_equal(fut_result_bytes(NULL, 0, &d, &len), FUT_EINVAL);
	assert_null(d);
	assert_int_equal(len, 0);
	assert_int_equal(fut_result_bytes(f, 0, NULL, &len), FUT_EINVAL);
	assert_int_equal(fut_result_bytes(f, 0, &d, NULL), FUT_EINVAL);
	assert_int_equal(fut_interrupt(NULL), FUT_EINVAL);
	assert_int_equal(fut_error(NULL), FUT_EINVAL);
	assert_int_equal(fut_task_code(NULL), 0);
	assert_null(fut_error_message(NULL));
	int st;
	assert_int_equal(fut_crash_status(NULL, &st), FUT_EINVAL);
	assert_int_equal(fut_crash_status(f, NULL), FUT_EINVAL);
	assert_int_equal(fut_add_done_callback(NULL, nop_cb, NULL), FUT_EINVAL);
	assert_int_equal(fut_add_done_callback(f, NULL, NULL), FUT_EINVAL);
	assert_null(fut_retain(NULL));
	fut_release(NULL);
	assert_int_equal(fut_set_running(NULL), FUT_EINVAL);
	assert_int_equal(fut_set_result(NULL, NULL), FUT_EINVAL);
	assert_int_equal(fut_set_result_bytes(NULL, "a", 1), FUT_EINVAL);
	assert_int_equal(fut_set_result_bytes(f, NULL, 5), FUT_EINVAL);
	assert_int_equal(fut_set_result_bytes(f, "a", FUT_MAX_BYTES + 1),
			 FUT_EINVAL);
	assert_int_equal(fut_set_result_bytes(f, "a", SIZE_MAX), FUT_EINVAL);
	assert_int_equal(fut_set_error(NULL, 1, "x"), FUT_EINVAL);
	assert_false(fut_done(f)); /* none of that touched it */
	/* Task functions with a NULL task. */
	assert_null(fut_task_arg(NULL));
	assert_null(fut_task_input(NULL, &len));
	assert_int_equal(len, 0);
	assert_int_equal(fut_task_return(NULL, NULL), FUT_EINVAL);
	assert_int_equal(fut_task_return_bytes(NULL, "a", 1), FUT_EINVAL);
	assert_int_equal(fut_task_fail(NULL, 1, "x"), FUT_EINVAL);
	assert_false(fut_task_cancelled(NULL));
	fut_task t;
	fut__task_init(&t, NULL, NULL, NULL, 0, NULL);
	assert_int_equal(fut_task_return_bytes(&t, NULL, 3), FUT_EINVAL);
	assert_int_equal(fut_task_return_bytes(&t, "a", SIZE_MAX), FUT_EINVAL);
	/* Executor front end with NULL handles. */
	fut_future *out = (fut_future *)1;
	assert_int_equal(fut_submit(NULL, NULL, NULL, &out), FUT_EINVAL);
	assert_null(out);
	assert_int_equal(fut_submit_bytes(NULL, NULL, "a", 1, &out),
			 FUT_EINVAL);
	out = (fut_future *)1;
	assert_int_equal(fut_submit_many(NULL, NULL, "a", 1, 1, &out),
			 FUT_EINVAL);
	assert_null(out); /* every slot NULL on failure */
	assert_int_equal(fut_executor_shutdown(NULL, 0), FUT_EINVAL);
	fut_executor_free(NULL);
	fut_release(f);
}

/* A fake executor for SENT: one claim word per send, as the process pool's
 * tickets.  The first revoke plays the manager between the caller's revoke
 * and its claim: it drops the revoked task from the worker, puts it back
 * in the queue and sends it again, on a new ticket. */
enum {
	CLAIM_SENT,
	CLAIM_REVOKED,
	CLAIM_RUN
};
static int claim_word[4];
static int claim_ticket;
static int claim_revokes;

static int resend_revoke(fut_future *f)
{
	int r = claim_word[claim_ticket] == CLAIM_RUN ? FUT__STARTED :
							FUT__REVOKED;
	claim_word[claim_ticket] = r == FUT__REVOKED ? CLAIM_REVOKED : r;
	if (claim_revokes++ == 0 && r == FUT__REVOKED) {
		assert_true(fut__future_unsend(f));
		claim_word[++claim_ticket] = CLAIM_SENT;
		assert_int_equal(fut__future_send(f), FUT_OK);
	}
	return r;
}

static bool resend_started(const fut_future *f)
{
	(void)f;
	return claim_word[claim_ticket] == CLAIM_RUN;
}

static void test_cancel_revokes_the_send_it_claims(void **state)
{
	(void)state;
	static const struct fut__future_ops ops = {
		.revoke = resend_revoke,
		.started = resend_started,
	};
	fut_future *f = fut__malloc(sizeof(*f));
	assert_non_null(f);
	fut__future_init(f, &ops);
	claim_ticket = 0;
	claim_revokes = 0;
	claim_word[0] = CLAIM_SENT;
	assert_int_equal(fut__future_send(f), FUT_OK);
	assert_true(fut_cancel(f));
	assert_true(fut_cancelled(f));
	/* The task of the second send was taken back too: no worker runs
	 * the task of a future that reads cancelled. */
	assert_int_equal(claim_word[claim_ticket], CLAIM_REVOKED);
	assert_int_equal(claim_revokes, 2);
	fut_release(f);
}

static void not_a_heap_block(fut_task *t)
{
	(void)t;
}

/*
 * An executor keeps its task in the outcome's field until the task runs
 * (the thread pool: the function and its argument).  A cancel writes no
 * outcome, so the field still holds the task: the future must neither
 * give it out as the message nor free it.  Before 0.2.0 fini freed the
 * field as a message whenever the error was not FUT_OK, the cancel's
 * included, and only the thread pool's clearing of it (in every path
 * that drops a cancelled job) kept that from freeing the function.
 */
static void
test_cancel_never_frees_or_reads_the_field_as_a_message(void **state)
{
	(void)state;
	static char input[8];
	fut_future *f = fut__malloc(sizeof(*f));
	assert_non_null(f);
	fut__future_init(f, &executor_ops);
	f->task.fn = not_a_heap_block;
	f->task.data = input;
	assert_true(fut_cancel(f));
	assert_int_equal(fut_error(f), FUT_ECANCELLED);
	assert_string_equal(fut_error_message(f), fut_strerror(FUT_ECANCELLED));
	assert_int_equal(fut_task_code(f), 0);
	fut_release(f); /* freed the function before: an invalid free */

	/* A producer's future: the same, and so with a message given to a
	 * completion that came too late. */
	f = new_future();
	assert_true(fut_cancel(f));
	assert_int_equal(fut_set_error(f, 3, "too late"), FUT_ESTATE);
	assert_string_equal(fut_error_message(f), fut_strerror(FUT_ECANCELLED));
	fut_release(f);

	/* A failure's message is the future's, freed with it. */
	f = new_future();
	assert_int_equal(fut_set_error(f, 3, "mine"), FUT_OK);
	assert_string_equal(fut_error_message(f), "mine");
	fut_release(f);
}

static void test_out_of_memory_gives_enomem_and_changes_nothing(void **state)
{
	(void)state;
	fut_future *f = (fut_future *)1;
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_future_new(&f), FUT_ENOMEM);
	assert_null(f);
	f = new_future();
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_add_done_callback(f, nop_cb, NULL), FUT_ENOMEM);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_set_result_bytes(f, "abc", 3), FUT_ENOMEM);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_set_error(f, 1, "msg"), FUT_ENOMEM);
	assert_int_equal(fut_state(f), FUT_PENDING);
	fut_task t;
	fut__task_init(&t, NULL, NULL, NULL, 0, NULL);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_task_return_bytes(&t, "abc", 3), FUT_ENOMEM);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_task_fail(&t, 5, "m%d", 1), FUT_ENOMEM);
	fut__alloc_fail_nth(0);
	assert_int_equal(fut__task_finish(&t, f), FUT_OK);
	assert_int_equal(fut_result(f, 0, NULL), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 5);
	assert_string_equal(fut_error_message(f), fut_strerror(FUT_ETASK));
	fut_release(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pending_future_costs_under_128_bytes),
		cmocka_unit_test(test_new_future_is_pending),
		cmocka_unit_test(test_set_running_moves_pending_to_running),
		cmocka_unit_test(test_set_result_gives_the_pointer),
		cmocka_unit_test(
			test_second_completion_is_estate_and_changes_nothing),
		cmocka_unit_test(test_set_result_bytes_copies_the_bytes),
		cmocka_unit_test(test_empty_byte_result_is_valid),
		cmocka_unit_test(test_set_error_gives_etask_code_and_message),
		cmocka_unit_test(
			test_error_without_message_gives_the_code_text),
		cmocka_unit_test(test_cancel_pending_future_returns_true),
		cmocka_unit_test(test_cancel_running_future_returns_false),
		cmocka_unit_test(test_result_times_out_and_changes_nothing),
		cmocka_unit_test(test_result_waits_for_another_thread),
		cmocka_unit_test(test_every_thread_waiting_on_a_future_wakes),
		cmocka_unit_test(
			test_callback_runs_once_in_the_completing_thread),
		cmocka_unit_test(
			test_callback_on_done_future_runs_at_once_in_caller),
		cmocka_unit_test(test_callbacks_run_in_the_order_added),
		cmocka_unit_test(test_callback_may_release_the_future),
		cmocka_unit_test(test_a_callback_may_drop_the_last_reference),
		cmocka_unit_test(
			test_released_pending_future_with_callbacks_leaks_nothing),
		cmocka_unit_test(test_retain_keeps_the_future_alive),
		cmocka_unit_test(test_retain_past_the_bound_is_refused),
		cmocka_unit_test(
			test_an_iterator_past_the_reference_bound_is_enomem),
		cmocka_unit_test(test_interrupt_pending_future_cancels_it),
		cmocka_unit_test(
			test_interrupt_running_future_raises_the_task_flag),
		cmocka_unit_test(
			test_producer_reads_an_interrupt_with_interrupt_requested),
		cmocka_unit_test(
			test_crash_status_is_readable_only_for_crashed_futures),
		cmocka_unit_test(
			test_cancel_and_start_racing_have_exactly_one_winner),
		cmocka_unit_test(
			test_threads_waiting_out_a_completion_sleep_until_it_ends),
		cmocka_unit_test(test_task_settles_once),
		cmocka_unit_test(test_task_fail_formats_its_message),
		cmocka_unit_test(test_task_without_outcome_finishes_with_null),
		cmocka_unit_test(test_unclaimed_task_outcome_is_freed),
		cmocka_unit_test(
			test_producer_calls_refuse_an_executors_future),
		cmocka_unit_test(test_bad_input_gives_einval),
		cmocka_unit_test(test_cancel_revokes_the_send_it_claims),
		cmocka_unit_test(
			test_cancel_never_frees_or_reads_the_field_as_a_message),
		cmocka_unit_test(
			test_out_of_memory_gives_enomem_and_changes_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
