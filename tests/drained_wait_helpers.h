/*
 * drained_wait_helpers.h: two jobs j1 and j2 ended by the same drain (a
 * shutdown's cancel, or a break), j1's first done callback waiting,
 * untimed, for j2: for test_tp_shutdown.c and test_pp_shutdown.c.  The
 * includer includes cmocka.h and future.h first.  Functions are static
 * inline: each file uses what it needs.
 */
#ifndef FUT_TEST_DRAINED_WAIT_HELPERS_H
#define FUT_TEST_DRAINED_WAIT_HELPERS_H

#include <stdatomic.h>
#include <stdbool.h>

enum {
	BY_RESULT,
	BY_FIRST_COMPLETED,
	BY_AS_COMPLETED,
	BY_KINDS
};

/* Drained together: j1's first callback waits, untimed, for j2. */
static fut_future *dj1, *dj2;
static _Atomic int dj_how;	    /* BY_* */
static _Atomic bool dj2_done_first; /* j2 was done as that callback began */
static _Atomic int dj_wait_rc;	    /* what its wait gave, then j2's code */
static _Atomic int dj1_seq;	    /* j1's callbacks, in turn: 1, then 2 */
static _Atomic bool dj1_in_order, dj2_cb_ran;

/* j2's outcome after an untimed wait of kind dj_how. */
static inline int wait_for_dj2(void)
{
	int rc;
	switch (atomic_load(&dj_how)) {
	case BY_RESULT:
		return fut_result(dj2, FUT_FOREVER, NULL);
	case BY_FIRST_COMPLETED:
		rc = fut_wait(&dj2, 1, FUT_FIRST_COMPLETED, FUT_FOREVER);
		return rc == FUT_OK ? fut_error(dj2) : rc;
	default: {
		fut_as_completed *it = NULL;
		fut_future *out = NULL;
		rc = fut_as_completed_new(&it, &dj2, 1);
		if (rc == FUT_OK)
			rc = fut_as_completed_next(it, FUT_FOREVER, &out);
		if (rc == FUT_OK)
			rc = out == dj2 ? fut_error(dj2) : FUT_EINVAL;
		fut_as_completed_free(it);
		return rc;
	}
	}
}

static inline void dj1_waits_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&dj2_done_first, fut_done(dj2));
	atomic_store(&dj_wait_rc, wait_for_dj2());
	atomic_store(&dj1_seq, 1);
}

static inline void dj1_second_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&dj1_in_order, atomic_load(&dj1_seq) == 1);
	atomic_store(&dj1_seq, 2);
}

static inline void dj2_cb(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
	atomic_store(&dj2_cb_ran, true);
}

/* Clears the record for a new round whose wait is `how`. */
static inline void dj_reset(int how)
{
	atomic_store(&dj_how, how);
	atomic_store(&dj2_done_first, false);
	atomic_store(&dj_wait_rc, -1);
	atomic_store(&dj1_seq, 0);
	atomic_store(&dj1_in_order, false);
	atomic_store(&dj2_cb_ran, false);
}

/* Adds the callbacks to dj1 and dj2, just submitted. */
static inline void dj_add_callbacks(void)
{
	assert_int_equal(fut_add_done_callback(dj1, dj1_waits_cb, NULL),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(dj1, dj1_second_cb, NULL),
			 FUT_OK);
	assert_int_equal(fut_add_done_callback(dj2, dj2_cb, NULL), FUT_OK);
}

/* Both ended with code, j2 before any callback ran, every callback run,
 * j1's in the order they were added; releases them. */
static inline void check_dj(int code)
{
	assert_int_equal(fut_result(dj1, 60.0, NULL), code);
	assert_int_equal(fut_result(dj2, 60.0, NULL), code);
	assert_true(atomic_load(&dj2_done_first));
	assert_int_equal(atomic_load(&dj_wait_rc), code);
	assert_int_equal(atomic_load(&dj1_seq), 2);
	assert_true(atomic_load(&dj1_in_order));
	assert_true(atomic_load(&dj2_cb_ran));
	fut_release(dj1);
	fut_release(dj2);
}

#endif
