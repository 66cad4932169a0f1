/*
 * test_pp_ticket.c: a process-pool task's ticket (its worker slot and
 * claim key, claim.c) outlives the worker it was sent to.
 *
 * A canceller (fut_cancel, or fut_state) reads the future SENT, then
 * loads its ticket and compares-and-swaps the claim word it names, with
 * no lock.  Between those steps the task may be taken back (its worker
 * silent in a long task, or dead), that worker die, and its slot be
 * respawned.  A new worker used to start its keys at 1 again: the stale
 * ticket then named the word of another task sent to the new worker
 * under the same key, and the canceller revoked that task (it went back
 * to the queue) or, that task running, was told STARTED and moved its
 * own queued future to RUNNING (fut_cancel false for a task that never
 * ran; a shutdown then ran it, or ended it FUT_ECANCELLED, "worker died
 * before its result came").  Each key is now its slot's once: a new
 * worker's keys go on from its predecessor's.
 *
 * The test plays the canceller with the very ticket it would hold (read
 * while the task was SENT), after the respawn.  Found by review on
 * 2026-12-07 (fourteenth session).  Timeouts only bound a hang, which then
 * fails.
 */
#include <errno.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/future_int.h"
#include "process_pool/pool.h"
#include "hold_helpers.h"

#define LONG_WAIT 120.0
#define NTASKS 4 /* one frame: the one that dies, then three behind it */

/* Mapped before any pool: the workers share it. */
struct shared {
	_Atomic int init_go; /* the workers' initializer may return */
	_Atomic int dying;   /* OP_DIE started */
	_Atomic int die;     /* OP_DIE may exit */
	_Atomic int holding; /* OP_HOLD started */
	_Atomic int go;	     /* OP_HOLD may return */
	_Atomic int runs;    /* runs of OP_QUICK and OP_HOLD */
};
static struct shared *sh;

enum op {
	OP_DIE,	  /* its worker exits when told */
	OP_QUICK, /* returns */
	OP_HOLD,  /* runs until told */
};

static int wait_for_go(void *arg)
{
	(void)arg;
	return wait_for_flag(&sh->init_go);
}

static void op_task(fut_task *t)
{
	uint32_t op = 0;
	memcpy(&op, fut_task_input(t, NULL), sizeof(op));
	switch (op) {
	case OP_DIE:
		atomic_store(&sh->dying, 1);
		(void)wait_for_flag(&sh->die);
		_exit(7);
	case OP_HOLD:
		atomic_fetch_add(&sh->runs, 1);
		atomic_store(&sh->holding, 1);
		(void)wait_for_flag(&sh->go);
		break;
	default:
		atomic_fetch_add(&sh->runs, 1);
		break;
	}
	(void)fut_task_return_bytes(t, &op, sizeof(op));
}

static unsigned state_of(fut_future *f)
{
	return atomic_load(&f->state) & FUT__S_MASK;
}

static uint64_t ticket_of(fut_future *f)
{
	return atomic_load(&((struct pp_job *)(void *)f)->ticket);
}

/* Waits until *flag is set in the workers' memory. */
static void wait_for(_Atomic int *flag)
{
	for (long i = 0; atomic_load(flag) == 0; i++) {
		assert_true(i < ROUNDS_1MS);
		nap_1ms();
	}
}

/*
 * One worker runs A (it will die) with B, C and D sent behind it in the
 * same frame: their tickets are read then.  The manager takes them back
 * (A is silent 5 ms), A's worker dies, and a new one in the same slot is
 * sent B, C and D again; C runs until told.  A canceller that read B, C
 * or D SENT in the first worker and holds its ticket finds no task of
 * the new worker's there: not started, and nothing to revoke (MOVED: it
 * reads the state again).  The key of B's first send was C's second
 * before: C's word, RUN, said STARTED.
 */
static void test_a_stale_ticket_names_no_task_of_a_new_worker(void **state)
{
	(void)state;
	memset(sh, 0, sizeof(*sh));
	fut_process_pool_opts o = { .max_workers = 1,
				    .chunk = NTASKS,
				    .initializer = wait_for_go };
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(&ex, &o), FUT_OK);
	struct ppool *p = (struct ppool *)(void *)ex;
	uint32_t ops[NTASKS] = { OP_DIE, OP_QUICK, OP_HOLD, OP_QUICK };
	fut_future *fs[NTASKS];
	assert_int_equal(fut_submit_many(ex, op_task, ops, sizeof(ops[0]),
					 NTASKS, fs),
			 FUT_OK);
	atomic_store(&sh->init_go, 1);
	wait_for(&sh->dying);
	/* Sent with A, then taken back to the queue: PENDING, the ticket
	 * of the first worker still theirs. */
	uint64_t stale[NTASKS - 1];
	for (int i = 1; i < NTASKS; i++) {
		for (long n = 0;
		     state_of(fs[i]) != FUT__S_PENDING || ticket_of(fs[i]) == 0;
		     n++) {
			assert_true(n < ROUNDS_1MS);
			nap_1ms();
		}
		stale[i - 1] = ticket_of(fs[i]);
	}
	atomic_store(&sh->die, 1);
	wait_for(&sh->holding);
	/* C runs in the new worker, in the dead one's slot. */
	assert_int_equal(state_of(fs[0]), FUT__S_FINISHED);
	assert_int_equal(fut_error(fs[0]), FUT_ECRASHED);
	uint64_t now = ticket_of(fs[2]);
	assert_int_equal(now >> 32, stale[1] >> 32);
	assert_int_not_equal(now, stale[1]);
	struct pp_job held;
	memset(&held, 0, sizeof(held));
	for (int i = 0; i < NTASKS - 1; i++) {
		atomic_store(&held.ticket, stale[i]);
		if (fut__pp_claim_started(p, &held))
			fail_msg("the ticket of task %d's first send: started",
				 i + 1);
	}
	for (int i = 0; i < NTASKS - 1; i++) {
		atomic_store(&held.ticket, stale[i]);
		int r = fut__pp_claim_revoke(p, &held);
		if (r != FUT__MOVED)
			fail_msg("the ticket of task %d's first send: revoke "
				 "%s",
				 i + 1,
				 r == FUT__STARTED ? "STARTED" : "REVOKED");
	}
	atomic_store(&sh->go, 1);
	assert_int_equal(fut_wait(fs, NTASKS, FUT_ALL_COMPLETED, LONG_WAIT),
			 FUT_OK);
	for (int i = 1; i < NTASKS; i++)
		assert_int_equal(fut_error(fs[i]), FUT_OK);
	assert_int_equal(atomic_load(&sh->runs), NTASKS - 1);
	fut_executor_free(ex);
	for (int i = 0; i < NTASKS; i++)
		fut_release(fs[i]);
}

int main(void)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 1;
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_stale_ticket_names_no_task_of_a_new_worker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
