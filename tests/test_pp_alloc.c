/*
 * test_pp_alloc.c: the process pool when an allocation fails: each of
 * fut_process_pool_new (FUT_START_FORK and FUT_START_EXEC),
 * fut_submit_bytes (an input in a recycled block and
 * one in a block of its own) and fut_submit_many is run with the 1st, 2nd,
 * 3rd... allocation failing (fut__alloc_fail_nth) until it runs with no
 * failure injected.  Each failed run must give FUT_ENOMEM and leave
 * nothing behind: no future, no pool reference, nothing queued, no child
 * process, no fd, no byte (ASan/LSan and valgrind run this file in make
 * check); the pool works after, and its workers did not inherit the
 * failure.
 */
#include "pp_test.h"

struct pool_new_ctx {
	fut_executor *ex;
	int fds, kids;
	int start_method;
};

static int pool_new_run(void *ctx)
{
	struct pool_new_ctx *c = ctx;
	c->ex = (fut_executor *)(uintptr_t)1;
	return fut_process_pool_new(
		&c->ex,
		&(fut_process_pool_opts){ .max_workers = 2,
					  .start_method = c->start_method });
}

static void pool_new_after(void *ctx, int rc, bool injected)
{
	struct pool_new_ctx *c = ctx;
	(void)injected;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		assert_null(c->ex);
	} else {
		/* The workers must not inherit the injected failure.  (Not
		 * in a fresh exec, which has not the shared words the meeting
		 * of two tasks needs: main() set them up.) */
		if (c->start_method == FUT_START_FORK)
			start_two_workers(c->ex);
		expect_square(submit_op(c->ex, OP_SQUARE, 0, 6), 6);
		fut_executor_free(c->ex);
	}
	assert_int_equal(count_fds(), c->fds);
	assert_int_equal(count_children(), c->kids);
}

static void
test_process_pool_new_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct pool_new_ctx c = { NULL, count_fds(), count_children(),
				  FUT_START_FORK };
	const struct sweep_op op = { pool_new_run, pool_new_after };
	assert_true(sweep(&op, &c) >= 4);
}

/*
 * The same with FUT_START_EXEC, whose start allocates what the fresh
 * program is sent.  Before (found by review, 2026-12-07) a failed
 * allocation of the module table's scan sent an empty table: the pool
 * was made and every task ended FUT_ENOTSUP; the message's own
 * allocation failing gave FUT_ESYS.
 */
static void
test_an_exec_process_pool_new_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	struct pool_new_ctx c = { NULL, count_fds(), count_children(),
				  FUT_START_EXEC };
	const struct sweep_op op = { pool_new_run, pool_new_after };
	assert_true(sweep(&op, &c) >= 4);
}

enum submit_kind {
	SUBMIT_SMALL,
	SUBMIT_LARGE,
	SUBMIT_MANY
};

#define BATCH 100
#define LARGE (100u * 1024u) /* a job block of its own, sent from it */

struct submit_ctx {
	fut_executor *ex;
	enum submit_kind kind;
	size_t n;
	fut_future *out[BATCH];
	struct op_in in[BATCH];
	unsigned char *large;
	bool counted; /* fds and kids hold the pool's settled counts */
	int fds, kids;
};

static uint32_t pp_refs(fut_executor *ex)
{
	return atomic_load(&((struct ppool *)(void *)ex)->refs);
}

static bool pp_queue_empty(fut_executor *ex)
{
	struct ppool *p = (struct ppool *)(void *)ex;
	pthread_mutex_lock(&p->lock);
	bool empty = p->qhead == NULL && p->qtail == NULL;
	pthread_mutex_unlock(&p->lock);
	return empty;
}

/* Every job block is gone: the manager (which may drop the last
 * reference after the caller saw the result) is idle, and the pool holds
 * only the handle's and the manager's references. */
static void wait_quiet(fut_executor *ex)
{
	while (pp_refs(ex) != 2)
		sched_yield();
}

static int submit_run(void *ctx)
{
	struct submit_ctx *c = ctx;
	for (size_t i = 0; i < BATCH; i++)
		c->out[i] = (fut_future *)(uintptr_t)1;
	/* Empty the block caches so that this submit has to allocate. */
	fut__slab_cache_flush();
	switch (c->kind) {
	case SUBMIT_SMALL:
		return fut_submit_bytes(c->ex, op_task, &c->in[0],
					sizeof(c->in[0]), &c->out[0]);
	case SUBMIT_LARGE:
		return fut_submit_bytes(c->ex, sample_task, c->large, LARGE,
					&c->out[0]);
	default:
		return fut_submit_many(c->ex, op_task, c->in, sizeof(c->in[0]),
				       c->n, c->out);
	}
}

/* A refused submit made no future, took no pool reference, queued
 * nothing, started no process, opened no fd; an accepted one completes
 * right. */
static void submit_after(void *ctx, int rc, bool injected)
{
	struct submit_ctx *c = ctx;
	(void)injected;
	size_t n = c->kind == SUBMIT_MANY ? c->n : 1;
	if (rc != FUT_OK) {
		assert_int_equal(rc, FUT_ENOMEM);
		for (size_t i = 0; i < n; i++)
			assert_null(c->out[i]);
		assert_int_equal(pp_refs(c->ex), 2);
		assert_true(pp_queue_empty(c->ex));
	} else if (c->kind == SUBMIT_LARGE) {
		assert_int_equal(result_u64(c->out[0]),
				 sample_of(c->large, LARGE));
		fut_release(c->out[0]);
	} else {
		for (size_t i = 0; i < n; i++)
			expect_square(c->out[i], c->in[i].v);
	}
	if (c->counted) {
		assert_int_equal(count_fds(), c->fds);
		assert_int_equal(count_children(), c->kids);
	}
	wait_quiet(c->ex);
}

static void
test_process_pool_submit_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	const struct sweep_op op = { submit_run, submit_after };
	struct submit_ctx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->n = under_valgrind() ? 20 : BATCH;
	c->large = malloc(LARGE);
	assert_non_null(c->large);
	for (size_t i = 0; i < LARGE; i++)
		c->large[i] = (unsigned char)(i * 7 + 1);
	for (size_t i = 0; i < BATCH; i++)
		c->in[i] = (struct op_in){ OP_SQUARE, 0, i + 1 };
	/* One worker, up, with its frame buffer grown by a batch like the
	 * sweep's: while a failure is armed the manager allocates nothing
	 * (the results fit in their job blocks). */
	c->ex = new_pool(1);
	for (int kind = SUBMIT_MANY; kind >= SUBMIT_SMALL; kind--) {
		c->kind = (enum submit_kind)kind;
		assert_int_equal(submit_run(c), FUT_OK);
		submit_after(c, FUT_OK, false);
	}
	c->fds = count_fds();
	c->kids = count_children();
	c->counted = true;
	for (int kind = SUBMIT_SMALL; kind <= SUBMIT_MANY; kind++) {
		c->kind = (enum submit_kind)kind;
		assert_true(sweep(&op, c) >= 1);
	}
	fut_executor_free(c->ex);
	free(c->large);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_process_pool_new_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_an_exec_process_pool_new_fails_cleanly_at_every_allocation),
		cmocka_unit_test(
			test_process_pool_submit_fails_cleanly_at_every_allocation),
	};
	if (!pp_test_prepare())
		return 2;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
