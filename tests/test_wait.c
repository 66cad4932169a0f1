/*
 * test_wait.c: fut_wait() and the as_completed iterator with its fd.
 */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "test_env.h"

static fut_future *new_future(void)
{
	fut_future *f = NULL;
	assert_int_equal(fut_future_new(&f), FUT_OK);
	return f;
}

static void new_futures(fut_future **fs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fs[i] = new_future();
}

static void release_all(fut_future **fs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fut_release(fs[i]);
}

/* A thread that completes futures in order, each after the main thread
 * lets it (a semaphore-like counter), or all at once when free_run. */
struct feeder {
	fut_future **fs;
	size_t n;
	size_t fail_at; /* index completed with an error, or SIZE_MAX */
	pthread_barrier_t *go;
};

static void *feed(void *arg)
{
	struct feeder *fd = arg;
	if (fd->go != NULL)
		pthread_barrier_wait(fd->go);
	for (size_t i = 0; i < fd->n; i++) {
		if (i == fd->fail_at)
			fut_set_error(fd->fs[i], 1, "failed");
		else
			fut_set_result(fd->fs[i], (void *)(uintptr_t)(i + 1));
	}
	return NULL;
}

static void test_wait_on_nothing_is_ok(void **state)
{
	(void)state;
	assert_int_equal(fut_wait(NULL, 0, FUT_ALL_COMPLETED, 0), FUT_OK);
}

static void test_wait_bad_input_gives_einval(void **state)
{
	(void)state;
	fut_future *fs[2] = { new_future(), NULL };
	assert_int_equal(fut_wait(NULL, 3, FUT_ALL_COMPLETED, 0), FUT_EINVAL);
	assert_int_equal(fut_wait(fs, 1, 0, 0), FUT_EINVAL);
	assert_int_equal(fut_wait(fs, 1, 99, 0), FUT_EINVAL);
	assert_int_equal(fut_wait(fs, 1, -1, 0), FUT_EINVAL);
	assert_int_equal(fut_wait(fs, 2, FUT_ALL_COMPLETED, 0), FUT_EINVAL);
	assert_int_equal(fut_wait(fs, SIZE_MAX, FUT_ALL_COMPLETED, 0),
			 FUT_EINVAL);
	fut_release(fs[0]);
}

static void test_wait_all_completed_times_out_with_the_split(void **state)
{
	(void)state;
	fut_future *fs[3];
	new_futures(fs, 3);
	fut_set_result(fs[1], NULL);
	assert_int_equal(fut_wait(fs, 3, FUT_ALL_COMPLETED, 0.01),
			 FUT_ETIMEDOUT);
	assert_false(fut_done(fs[0]));
	assert_true(fut_done(fs[1]));
	assert_false(fut_done(fs[2]));
	assert_int_equal(fut_wait(fs, 3, FUT_FIRST_COMPLETED, 0), FUT_OK);
	release_all(fs, 3);
}

static void test_wait_first_completed_returns_when_one_is_done(void **state)
{
	(void)state;
	fut_future *fs[4];
	new_futures(fs, 4);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 2);
	struct feeder fd = { &fs[2], 1, SIZE_MAX, &go };
	pthread_t t;
	pthread_create(&t, NULL, feed, &fd);
	pthread_barrier_wait(&go);
	assert_int_equal(fut_wait(fs, 4, FUT_FIRST_COMPLETED, FUT_FOREVER),
			 FUT_OK);
	assert_true(fut_done(fs[2]));
	pthread_join(t, NULL);
	assert_false(fut_done(fs[0]));
	pthread_barrier_destroy(&go);
	release_all(fs, 4);
}

/* fut_wait(ALL) on n new futures that a thread running `fn` (a feeder)
 * completes: it returns once every one is done. */
static void wait_all_as_fed(fut_future **fs, size_t n, void *(*fn)(void *))
{
	new_futures(fs, n);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 2);
	struct feeder fd = { fs, n, SIZE_MAX, &go };
	pthread_t t;
	pthread_create(&t, NULL, fn, &fd);
	pthread_barrier_wait(&go);
	assert_int_equal(fut_wait(fs, n, FUT_ALL_COMPLETED, FUT_FOREVER),
			 FUT_OK);
	for (size_t i = 0; i < n; i++)
		assert_true(fut_done(fs[i]));
	pthread_join(t, NULL);
	pthread_barrier_destroy(&go);
}

static void test_wait_all_completed_waits_for_every_future(void **state)
{
	(void)state;
	fut_future *fs[64];
	wait_all_as_fed(fs, 64, feed);
	release_all(fs, 64);
}

static void test_wait_first_exception_returns_on_a_failure(void **state)
{
	(void)state;
	fut_future *fs[3];
	new_futures(fs, 3);
	/* A cancelled future is no failure. */
	assert_true(fut_cancel(fs[0]));
	assert_int_equal(fut_wait(fs, 3, FUT_FIRST_EXCEPTION, 0.01),
			 FUT_ETIMEDOUT);
	fut_set_error(fs[2], 5, "bad");
	assert_int_equal(fut_wait(fs, 3, FUT_FIRST_EXCEPTION, FUT_FOREVER),
			 FUT_OK);
	assert_false(fut_done(fs[1]));
	release_all(fs, 3);
}

static void
test_wait_first_exception_without_failure_waits_for_all(void **state)
{
	(void)state;
	size_t n = 32;
	fut_future *fs[32];
	new_futures(fs, n);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 2);
	struct feeder fd = { fs, n, SIZE_MAX, &go };
	pthread_t t;
	pthread_create(&t, NULL, feed, &fd);
	pthread_barrier_wait(&go);
	assert_int_equal(fut_wait(fs, n, FUT_FIRST_EXCEPTION, FUT_FOREVER),
			 FUT_OK);
	for (size_t i = 0; i < n; i++)
		assert_true(fut_done(fs[i]));
	pthread_join(t, NULL);
	pthread_barrier_destroy(&go);
	release_all(fs, n);
}

static void
test_wait_first_exception_wakes_on_failure_from_a_thread(void **state)
{
	(void)state;
	size_t n = 20;
	fut_future *fs[20];
	new_futures(fs, n);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 2);
	/* Complete the first 10, the 10th with a failure. */
	struct feeder fd = { fs, 10, 9, &go };
	pthread_t t;
	pthread_create(&t, NULL, feed, &fd);
	pthread_barrier_wait(&go);
	assert_int_equal(fut_wait(fs, n, FUT_FIRST_EXCEPTION, FUT_FOREVER),
			 FUT_OK);
	assert_int_equal(fut_error(fs[9]), FUT_ETASK);
	pthread_join(t, NULL);
	pthread_barrier_destroy(&go);
	release_all(fs, n);
}

static void test_wait_accepts_the_same_future_twice(void **state)
{
	(void)state;
	fut_future *a = new_future(), *b = new_future();
	fut_future *fs[4] = { a, b, a, b };
	struct feeder fd = { fs, 2, SIZE_MAX, NULL };
	pthread_t t;
	pthread_create(&t, NULL, feed, &fd);
	assert_int_equal(fut_wait(fs, 4, FUT_ALL_COMPLETED, FUT_FOREVER),
			 FUT_OK);
	pthread_join(t, NULL);
	fut_release(a);
	fut_release(b);
}

static void test_wait_on_ten_thousand_futures_completed_one_by_one(void **state)
{
	(void)state;
	size_t n = under_valgrind() ? 1000 : 10000;
	fut_future **fs = calloc(n, sizeof(*fs));
	wait_all_as_fed(fs, n, feed);
	for (size_t i = 0; i < n; i++) {
		void *v;
		assert_int_equal(fut_result(fs[i], 0, &v), FUT_OK);
		assert_int_equal((uintptr_t)v, i + 1);
	}
	release_all(fs, n);
	free(fs);
}

/* A wait for the first of more than 16 futures allocates its nodes; a
 * wait for all of them allocates nothing. */
static void test_wait_out_of_memory_gives_enomem(void **state)
{
	(void)state;
	fut_future *fs[40];
	new_futures(fs, 40);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_wait(fs, 40, FUT_FIRST_COMPLETED, 0.001),
			 FUT_ENOMEM);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_wait(fs, 40, FUT_FIRST_EXCEPTION, 0.001),
			 FUT_ENOMEM);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut_wait(fs, 40, FUT_ALL_COMPLETED, 0.001),
			 FUT_ETIMEDOUT);
	fut__alloc_fail_nth(0);
	release_all(fs, 40);
}

static void *feed_backwards(void *arg)
{
	struct feeder *fd = arg;
	pthread_barrier_wait(fd->go);
	for (size_t i = fd->n; i-- > 0;)
		fut_set_result(fd->fs[i], (void *)(uintptr_t)(i + 1));
	return NULL;
}

/* A wait for all of them, which looks at 16 at a time from the end,
 * returns only once every one is done, whatever the order they complete
 * in; and it times out on one pending future among done ones, wherever
 * that one is. */
static void test_wait_all_completed_in_any_order(void **state)
{
	(void)state;
	size_t n = 1000;
	fut_future **fs = calloc(n, sizeof(*fs));
	wait_all_as_fed(fs, n, feed_backwards);
	release_all(fs, n);

	const size_t pending[] = { 0, 15, 16, 17, 500, 983, 984, 999 };
	for (size_t k = 0; k < sizeof(pending) / sizeof(pending[0]); k++) {
		new_futures(fs, n);
		for (size_t i = 0; i < n; i++)
			if (i != pending[k])
				fut_set_result(fs[i], NULL);
		assert_int_equal(fut_wait(fs, n, FUT_ALL_COMPLETED, 0.01),
				 FUT_ETIMEDOUT);
		assert_false(fut_done(fs[pending[k]]));
		fut_set_result(fs[pending[k]], NULL);
		assert_int_equal(fut_wait(fs, n, FUT_ALL_COMPLETED, 0.01),
				 FUT_OK);
		release_all(fs, n);
	}
	free(fs);
}

/* ------------------------------------------------------------------ */

static bool fd_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void test_as_completed_yields_done_futures_first(void **state)
{
	(void)state;
	fut_future *fs[3];
	new_futures(fs, 3);
	fut_set_result(fs[2], NULL);
	fut_set_result(fs[0], NULL);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, 3), FUT_OK);
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_ptr_equal(f, fs[0]);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_ptr_equal(f, fs[2]);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_ETIMEDOUT);
	assert_null(f);
	fut_set_result(fs[1], NULL);
	assert_int_equal(fut_as_completed_next(it, FUT_FOREVER, &f), FUT_OK);
	assert_ptr_equal(f, fs[1]);
	assert_int_equal(fut_as_completed_next(it, FUT_FOREVER, &f), FUT_END);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	fut_as_completed_free(it);
	release_all(fs, 3);
}

static void test_as_completed_yields_duplicates_once(void **state)
{
	(void)state;
	fut_future *a = new_future();
	fut_future *fs[3] = { a, a, a };
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, 3), FUT_OK);
	assert_int_equal(fut_as_completed_add(it, a), FUT_OK);
	fut_set_result(a, NULL);
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, FUT_FOREVER, &f), FUT_OK);
	assert_int_equal(fut_as_completed_next(it, FUT_FOREVER, &f), FUT_END);
	fut_as_completed_free(it);
	fut_release(a);
}

static void test_as_completed_yields_every_future_of_a_thread(void **state)
{
	(void)state;
	size_t n = under_valgrind() ? 500 : 5000;
	fut_future **fs = calloc(n, sizeof(*fs));
	bool *seen = calloc(n, sizeof(*seen));
	new_futures(fs, n);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, n), FUT_OK);
	struct feeder fd = { fs, n, SIZE_MAX, NULL };
	pthread_t t;
	pthread_create(&t, NULL, feed, &fd);
	fut_future *f;
	size_t got = 0;
	int rc;
	while ((rc = fut_as_completed_next(it, FUT_FOREVER, &f)) == FUT_OK) {
		void *v;
		assert_int_equal(fut_result(f, 0, &v), FUT_OK);
		size_t i = (uintptr_t)v - 1;
		assert_ptr_equal(fs[i], f);
		assert_false(seen[i]);
		seen[i] = true;
		got++;
	}
	assert_int_equal(rc, FUT_END);
	assert_int_equal(got, n);
	pthread_join(t, NULL);
	fut_as_completed_free(it);
	release_all(fs, n);
	free(fs);
	free(seen);
}

static void test_as_completed_add_grows_it_while_iterating(void **state)
{
	(void)state;
	fut_future *a = new_future(), *b = new_future();
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, &a, 1), FUT_OK);
	fut_set_result(a, NULL);
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	assert_int_equal(fut_as_completed_add(it, b), FUT_OK);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_ETIMEDOUT);
	fut_set_result(b, NULL);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_ptr_equal(f, b);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	fut_as_completed_free(it);
	fut_release(a);
	fut_release(b);
}

static void test_as_completed_holds_its_own_references(void **state)
{
	(void)state;
	fut_future *a = new_future();
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, &a, 1), FUT_OK);
	fut_set_result(a, NULL);
	fut_release(a); /* the iterator still holds it */
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_true(fut_done(f));
	fut_as_completed_free(it);
}

static void test_as_completed_fd_is_readable_exactly_while_next_would_not_block(
	void **state)
{
	(void)state;
	fut_future *fs[2];
	new_futures(fs, 2);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, 2), FUT_OK);
	int fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	assert_int_equal(fut_as_completed_fd(it), fd);
	assert_false(fd_readable(fd));
	fut_set_result(fs[1], NULL);
	assert_true(fd_readable(fd));
	assert_true(fd_readable(fd)); /* level-triggered */
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_false(fd_readable(fd));
	fut_set_result(fs[0], NULL);
	assert_true(fd_readable(fd));
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	/* Exhausted: next returns FUT_END at once, so readable. */
	assert_true(fd_readable(fd));
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	assert_true(fd_readable(fd));
	fut_future *late = new_future();
	assert_int_equal(fut_as_completed_add(it, late), FUT_OK);
	assert_false(fd_readable(fd));
	fut_cancel(late);
	assert_true(fd_readable(fd));
	fut_as_completed_free(it);
	release_all(fs, 2);
	fut_release(late);
}

static void test_as_completed_fd_wakes_an_epoll_loop(void **state)
{
	(void)state;
	size_t n = 50;
	fut_future *fs[50];
	new_futures(fs, n);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, n), FUT_OK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN };
	assert_int_equal(
		epoll_ctl(ep, EPOLL_CTL_ADD, fut_as_completed_fd(it), &ev), 0);
	struct feeder fd = { fs, n, SIZE_MAX, NULL };
	pthread_t t;
	pthread_create(&t, NULL, feed, &fd);
	size_t got = 0;
	for (;;) {
		struct epoll_event out;
		assert_int_equal(epoll_wait(ep, &out, 1, 30000), 1);
		fut_future *f;
		int rc = fut_as_completed_next(it, 0, &f);
		if (rc == FUT_END)
			break;
		assert_int_equal(rc, FUT_OK); /* readable never lies */
		got++;
	}
	assert_int_equal(got, n);
	pthread_join(t, NULL);
	close(ep);
	fut_as_completed_free(it);
	release_all(fs, n);
}

static void
test_as_completed_free_with_pending_futures_leaks_nothing(void **state)
{
	(void)state;
	fut_future *fs[20];
	new_futures(fs, 20);
	fut_as_completed *it;
	assert_int_equal(fut_as_completed_new(&it, fs, 20), FUT_OK);
	assert_true(fut_as_completed_fd(it) >= 0);
	fut_as_completed_free(it);
	/* Completing after the iterator is gone notifies nobody. */
	for (int i = 0; i < 20; i++)
		fut_set_result(fs[i], NULL);
	release_all(fs, 20);
}

/* Found by fuzz_api: freeing an iterator while futures complete must not
 * free a node that a concurrent notification appends behind. */
static void test_as_completed_free_races_completions_safely(void **state)
{
	(void)state;
	int rounds = under_valgrind() ? 50 : 500;
	for (int r = 0; r < rounds; r++) {
		fut_future *fs[16];
		new_futures(fs, 16);
		for (int i = 0; i < 16; i += 2)
			fut_set_result(fs[i], NULL); /* on the ready list */
		fut_as_completed *it;
		assert_int_equal(fut_as_completed_new(&it, fs, 16), FUT_OK);
		fut_future *odd[8];
		for (int i = 0; i < 8; i++)
			odd[i] = fs[2 * i + 1];
		struct feeder fd = { odd, 8, SIZE_MAX, NULL };
		pthread_t t;
		pthread_create(&t, NULL, feed, &fd);
		fut_as_completed_free(it);
		pthread_join(t, NULL);
		release_all(fs, 16);
	}
}

static void test_as_completed_bad_input_gives_einval(void **state)
{
	(void)state;
	fut_future *a = new_future();
	fut_future *fs[2] = { a, NULL };
	fut_as_completed *it = (fut_as_completed *)1;
	assert_int_equal(fut_as_completed_new(NULL, fs, 1), FUT_EINVAL);
	assert_int_equal(fut_as_completed_new(&it, NULL, 2), FUT_EINVAL);
	assert_null(it);
	assert_int_equal(fut_as_completed_new(&it, fs, 2), FUT_EINVAL);
	assert_int_equal(fut_as_completed_new(&it, NULL, 0), FUT_OK);
	fut_future *f = (fut_future *)1;
	assert_int_equal(fut_as_completed_next(NULL, 0, &f), FUT_EINVAL);
	assert_null(f);
	assert_int_equal(fut_as_completed_next(it, 0, NULL), FUT_EINVAL);
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_END);
	assert_int_equal(fut_as_completed_add(NULL, a), FUT_EINVAL);
	assert_int_equal(fut_as_completed_add(it, NULL), FUT_EINVAL);
	assert_int_equal(fut_as_completed_fd(NULL), -1);
	fut_as_completed_free(NULL);
	fut_as_completed_free(it);
	fut_release(a);
}

static void test_as_completed_out_of_memory_unwinds_cleanly(void **state)
{
	(void)state;
	fut_future *fs[40];
	new_futures(fs, 40);
	fut_set_result(fs[3], NULL);
	int rc = FUT_ENOMEM;
	long nth;
	fut_as_completed *it = NULL;
	for (nth = 1; rc == FUT_ENOMEM && nth < 1000; nth++) {
		fut__alloc_fail_nth(nth);
		rc = fut_as_completed_new(&it, fs, 40);
		if (rc == FUT_ENOMEM)
			assert_null(it);
	}
	fut__alloc_fail_nth(0);
	assert_int_equal(rc, FUT_OK);
	assert_true(nth > 2); /* some allocations did fail first */
	fut_future *f;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_ptr_equal(f, fs[3]);
	fut_as_completed_free(it);
	for (int i = 0; i < 40; i++)
		fut_set_result(fs[i], NULL);
	release_all(fs, 40);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_on_nothing_is_ok),
		cmocka_unit_test(test_wait_bad_input_gives_einval),
		cmocka_unit_test(
			test_wait_all_completed_times_out_with_the_split),
		cmocka_unit_test(
			test_wait_first_completed_returns_when_one_is_done),
		cmocka_unit_test(
			test_wait_all_completed_waits_for_every_future),
		cmocka_unit_test(
			test_wait_first_exception_returns_on_a_failure),
		cmocka_unit_test(
			test_wait_first_exception_without_failure_waits_for_all),
		cmocka_unit_test(
			test_wait_first_exception_wakes_on_failure_from_a_thread),
		cmocka_unit_test(test_wait_accepts_the_same_future_twice),
		cmocka_unit_test(
			test_wait_on_ten_thousand_futures_completed_one_by_one),
		cmocka_unit_test(test_wait_out_of_memory_gives_enomem),
		cmocka_unit_test(test_wait_all_completed_in_any_order),
		cmocka_unit_test(test_as_completed_yields_done_futures_first),
		cmocka_unit_test(test_as_completed_yields_duplicates_once),
		cmocka_unit_test(
			test_as_completed_yields_every_future_of_a_thread),
		cmocka_unit_test(
			test_as_completed_add_grows_it_while_iterating),
		cmocka_unit_test(test_as_completed_holds_its_own_references),
		cmocka_unit_test(
			test_as_completed_fd_is_readable_exactly_while_next_would_not_block),
		cmocka_unit_test(test_as_completed_fd_wakes_an_epoll_loop),
		cmocka_unit_test(
			test_as_completed_free_with_pending_futures_leaks_nothing),
		cmocka_unit_test(
			test_as_completed_free_races_completions_safely),
		cmocka_unit_test(test_as_completed_bad_input_gives_einval),
		cmocka_unit_test(
			test_as_completed_out_of_memory_unwinds_cleanly),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
