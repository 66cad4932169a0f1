/*
 * test_tp_bound.c: the thread pool's nested-wait rule at the thread bound
 * (docs/api.md, "Past the bound"): a worker's untimed wait returns
 * FUT_EAGAIN only when, as it starts to sleep, every thread waits, none
 * can be added and tasks are queued.
 *
 * - A wait that saw every thread waiting tried to start a looker;
 *   another start took the last place first; the thread it started ran
 *   a task that ran a job inline and waited too, the job still queued.
 *   The first wait then looked again, counted that job (which needs no
 *   thread) as a queued task and returned FUT_EAGAIN: test_tp_aside's
 *   bound tests, about 1 run in 40 under load (2026-12-07).
 * - A wait that saw a looker counted took it for a thread on its way,
 *   though it was a submit's start about to fail at the bound: it slept
 *   with a task queued that nothing would run.
 * - A start that failed at the bound gave its looker credit back and
 *   woke nobody, though a wakep had counted on it while a worker slept:
 *   the task queued waited beside the sleeper (test_tp_aside's inline
 *   bound test hung so, with delays injected).
 * - A thread whose wait was over counted as waiting until its wait hook
 *   returned: a wait beside it (it not yet woken) said FUT_EAGAIN though
 *   it was coming back to run the task queued, and so did its own wait
 *   when what it waited on was set while its test was under way.
 * - A wait took a start whose place was taken for a thread that does
 *   not wait, and slept; the start failed, and nobody tested the bound
 *   again: the task queued stayed there beside two free slots
 *   (2026-12-07, fourteenth session; the start's failure is the test
 *   hook's, held 500 ms).
 * - A wait saw no start under way, then tried one of its own, and
 *   another start had taken a place meanwhile: its own was refused, as
 *   if enough threads ran (max_workers) or none could be added
 *   (max_threads).  The wait slept, or said FUT_EAGAIN; the other start
 *   failed, and the task queued stayed there, or the wait ended though a
 *   place was free (review, 2026-12-07, fourteenth session).
 * The interleavings are made: the test holds the pool's start lock
 * (p->ctl) so that a start waits for it, a future's lock so that the
 * thread that sets it waits before it wakes the waiter, or the queue's
 * consumer lock so that a wait's test stops between its look and its
 * start.
 * Timeouts here only guard against hangs (GUARD_S).
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/sync.h"
#include "thread_pool/pool.h"
#include "proc_helpers.h"

#define GUARD_S 20.0 /* a guard against a hang, never a measurement */
#define HOLDERS 255  /* with L and A: 257 threads, the bound of 1 worker */

static fut_future *gate;       /* what the holders and L wait on */
static fut_future *h;	       /* what A waits on */
static fut_future *j_sets;     /* what W waits on, and J sets */
static _Atomic uint32_t in;    /* tasks that started */
static _Atomic uint32_t a_ran; /* A ran its job inline */
static _Atomic int bad;	       /* holders whose wait failed */

/* L and W: a task that holds its slot until told, then waits on *on. */
struct told {
	_Atomic bool go;
	_Atomic int rc; /* its wait's code; -1 until the wait ends */
	fut_future **on;
};
static struct told l = { .rc = -1, .on = &gate };
static struct told w = { .rc = -1, .on = &j_sets };

static void tiny(fut_task *t)
{
	(void)t;
}

static void hold(fut_task *t)
{
	(void)t;
	atomic_fetch_add(&in, 1);
	if (fut_result(gate, -1, NULL) != FUT_OK)
		atomic_fetch_add(&bad, 1);
}

static void waits_when_told(fut_task *t)
{
	struct told *x = fut_task_arg(t);
	atomic_fetch_add(&in, 1);
	while (!atomic_load(&x->go))
		sched_yield();
	atomic_store(&x->rc, fut_result(*x->on, -1, NULL));
}

/* A: runs a task of its pool inline (its job stays queued), then waits
 * on H. */
static void runs_inline(fut_task *t)
{
	fut_executor *ex = fut_task_arg(t);
	fut_future *z = NULL;
	assert_int_equal(fut_submit(ex, tiny, NULL, &z), FUT_OK);
	assert_int_equal(fut_result(z, -1, NULL), FUT_OK);
	fut_release(z);
	atomic_store(&a_ran, 1);
	(void)fut_result(h, -1, NULL);
}

/* Until *v reaches n (true) or the guard ends (false). */
static bool reaches(_Atomic uint32_t *v, uint32_t n)
{
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(v) < n && fut__now_ns() < deadline)
		sched_yield();
	return atomic_load(v) >= n;
}

static void nap_ms(long ms)
{
	struct timespec ts = { 0, ms * 1000000 };
	nanosleep(&ts, NULL);
}

/*
 * Until no other thread of the process runs (each is asleep: in Linux's
 * /proc, no state R), or the guard ends.  A holder counts itself waiting
 * as its test begins: one preempted before the rest of it could make
 * that test after the scene below is set, and take part in it.
 */
static bool all_asleep(void)
{
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	pid_t self = (pid_t)syscall(SYS_gettid);
	for (;;) {
		int running = 0;
		DIR *d = opendir("/proc/self/task");
		if (d == NULL)
			return false;
		for (struct dirent *e; (e = readdir(d)) != NULL;) {
			if (e->d_name[0] == '.' || atoi(e->d_name) == self)
				continue;
			char task[280]; /* read_stat reads /proc/<task>/stat */
			int ppid;
			char st;
			snprintf(task, sizeof(task), "self/task/%s", e->d_name);
			if (read_stat(task, &ppid, &st) && st == 'R')
				running++;
		}
		closedir(d);
		if (running == 0)
			return true;
		if (fut__now_ns() >= deadline)
			return false;
		nap_ms(1);
	}
}

/*
 * The scene every test begins with: a pool of one slot, n holders that
 * each gave their slot up to wait on the gate, every thread asleep.
 * The holders' futures go to fs[0..n).
 */
static struct tpool *holders_waiting(fut_executor **ex, fut_future **fs, int n)
{
	assert_int_equal(fut_thread_pool_new(
				 ex,
				 &(fut_thread_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	struct tpool *p = pool_of(*ex);
	atomic_store(&in, 0);
	assert_int_equal(fut_future_new(&gate), FUT_OK);
	for (int i = 0; i < n; i++)
		assert_int_equal(fut_submit(*ex, hold, NULL, &fs[i]), FUT_OK);
	assert_true(reaches(&in, (uint32_t)n));
	assert_true(reaches(&p->nwaiting, (uint32_t)n)); /* slots handed */
	assert_true(all_asleep());
	return p;
}

/* Opens the gate, waits for the n futures of fs and frees the pool. */
static void finish(fut_executor *ex, fut_future **fs, int n)
{
	(void)fut_set_result(gate, NULL);
	for (int i = 0; i < n; i++) {
		assert_int_equal(fut_result(fs[i], GUARD_S, NULL), FUT_OK);
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	fut_release(gate);
}

/*
 * Starts one thread of p while the caller holds p->ctl (as the pool's
 * first start does), counted a looker as a start is.  From one cpu: a
 * thread started away from its starter's cpu takes p->ctl as it begins
 * (start.c, Placement), and this one must run while the lock is held.
 */
static void start_one_locked(struct tpool *p)
{
	cpu_set_t all, one;
	assert_int_equal(
		pthread_getaffinity_np(pthread_self(), sizeof(all), &all), 0);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	assert_int_equal(
		pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);
	atomic_fetch_add(&p->nspinning, 1);
	int rc = fut__tp_spawn_locked(p);
	assert_int_equal(
		pthread_setaffinity_np(pthread_self(), sizeof(all), &all), 0);
	assert_int_equal(rc, FUT_OK);
}

static void
test_a_job_run_inline_by_a_thread_started_meanwhile_is_no_task(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	fut_future *fs[HOLDERS + 2];
	struct tpool *p = holders_waiting(&ex, fs, HOLDERS);
	assert_int_equal(fut_future_new(&h), FUT_OK);
	/* L takes the slot; A is queued behind it, no thread started for
	 * it (no slot free). */
	assert_int_equal(fut_submit(ex, waits_when_told, &l, &fs[HOLDERS]),
			 FUT_OK);
	assert_true(reaches(&in, HOLDERS + 1));
	assert_int_equal(fut_submit(ex, runs_inline, ex, &fs[HOLDERS + 1]),
			 FUT_OK);
	assert_int_equal(fut__tp_threads(ex), HOLDERS + 1);
	/* A slot held here keeps L's wait from waking or starting a
	 * thread for A: it sees every thread waiting, no looker, A queued,
	 * and tries a start of its own, which waits for p->ctl. */
	atomic_fetch_add(&p->nbusy, 1);
	pthread_mutex_lock(&p->ctl);
	atomic_store(&l.go, true);
	assert_true(reaches(&p->nspinning, 1)); /* L's looker credit */
	/* Meanwhile another start takes the last place; its thread takes
	 * A, which runs its job inline and waits on H; the job stays
	 * queued while A's test waits for L's start to end. */
	fut__tp_slot_put(p);
	start_one_locked(p);
	assert_true(reaches(&a_ran, 1));
	assert_true(reaches(&p->nwaiting, HOLDERS + 2));
	nap_ms(50); /* A's wait has come to its test */
	assert_int_equal(fut__tp_threads(ex), HOLDERS + 2);
	/* L's start fails at the bound; it looks again: every thread
	 * waits, and what is queued is a job that ran: no task. */
	pthread_mutex_unlock(&p->ctl);
	nap_ms(50);
	int early = atomic_load(&l.rc);
	(void)fut_set_result(h, NULL);
	finish(ex, fs, HOLDERS + 2);
	fut_release(h);
	if (early != -1)
		fprintf(stderr, "L's wait ended before its gate: %s\n",
			fut_strerror(early));
	assert_int_equal(early, -1);
	assert_int_equal(atomic_load(&l.rc), FUT_OK);
	assert_int_equal(atomic_load(&bad), 0);
}

static void sets(fut_task *t)
{
	(void)t;
	(void)fut_set_result(j_sets, NULL);
}

struct submit_arg {
	fut_executor *ex;
	fut_future *f;
	int rc;
};

static void *submit_j(void *arg)
{
	struct submit_arg *a = arg;
	a->rc = fut_submit(a->ex, sets, NULL, &a->f);
	return NULL;
}

/*
 * At the bound, a submit from outside the pool has counted a looker for
 * its task and tries a start (here it waits for p->ctl, held by the
 * test) as the last thread begins to wait, on what that task sets.  The
 * start fails: nothing will run the task.  The wait waits for the start's
 * outcome and says FUT_EAGAIN; it took the looker for a thread on its
 * way and slept for ever.
 */
static void test_a_wait_at_the_bound_waits_for_a_start_under_way(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	fut_future *fs[HOLDERS + 2];
	struct tpool *p = holders_waiting(&ex, fs, HOLDERS + 1);
	assert_int_equal(fut_future_new(&j_sets), FUT_OK);
	assert_int_equal(fut_submit(ex, waits_when_told, &w, &fs[HOLDERS + 1]),
			 FUT_OK);
	assert_true(reaches(&in, HOLDERS + 2));
	assert_int_equal(fut__tp_threads(ex), HOLDERS + 2); /* the bound */
	/* W's slot looks free to the submit (as after W gave it up and
	 * before its test): it counts a looker and tries a start, which
	 * waits for p->ctl. */
	pthread_mutex_lock(&p->ctl);
	atomic_fetch_sub(&p->nbusy, 1);
	struct submit_arg sa = { .ex = ex, .rc = -1 };
	pthread_t s;
	assert_int_equal(pthread_create(&s, NULL, submit_j, &sa), 0);
	assert_true(reaches(&p->nspinning, 1));
	atomic_fetch_add(&p->nbusy, 1);
	atomic_store(&w.go, true); /* W waits while the start is under way */
	assert_true(reaches(&p->nwaiting, HOLDERS + 2));
	nap_ms(50);
	pthread_mutex_unlock(&p->ctl); /* the start fails at the bound */
	assert_int_equal(pthread_join(s, NULL), 0);
	assert_int_equal(sa.rc, FUT_OK);
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&w.rc) == -1 && fut__now_ns() < deadline)
		sched_yield();
	int rc = atomic_load(&w.rc);
	if (rc == -1) /* W sleeps: end its wait */
		(void)fut_set_result(j_sets, NULL);
	(void)fut_set_result(gate, NULL);
	assert_int_equal(fut_result(sa.f, GUARD_S, NULL), FUT_OK);
	fut_release(sa.f);
	finish(ex, fs, HOLDERS + 2);
	fut_release(j_sets);
	assert_int_equal(rc, FUT_EAGAIN);
	assert_int_equal(atomic_load(&bad), 0);
}

static void sets_ran(fut_task *t)
{
	(void)t;
	atomic_store(&a_ran, 1);
}

/*
 * L's looker start waits for p->ctl while A is queued; meanwhile the
 * last place goes to a thread that finds no slot free, and sleeps.  The
 * slot comes free, and its wakep counts on L's looker.  L's start fails
 * at the bound: the sleeper must be woken for A, which no one ran
 * before (every other thread waits).
 */
static void test_a_failed_start_wakes_a_sleeper_for_a_queued_task(void **state)
{
	(void)state;
	atomic_store(&l.go, false);
	atomic_store(&l.rc, -1);
	atomic_store(&a_ran, 0);
	fut_executor *ex = NULL;
	fut_future *fs[HOLDERS + 2];
	struct tpool *p = holders_waiting(&ex, fs, HOLDERS);
	assert_int_equal(fut_submit(ex, waits_when_told, &l, &fs[HOLDERS]),
			 FUT_OK);
	assert_true(reaches(&in, HOLDERS + 1));
	assert_int_equal(fut_submit(ex, sets_ran, NULL, &fs[HOLDERS + 1]),
			 FUT_OK);
	atomic_fetch_add(&p->nbusy, 1); /* as in the first test */
	pthread_mutex_lock(&p->ctl);
	atomic_store(&l.go, true);
	assert_true(reaches(&p->nspinning, 1)); /* L's looker credit */
	start_one_locked(p);			/* finds no slot free: sleeps */
	assert_true(reaches(&p->nsleeping, 1));
	/* The slot comes free as a waiter's does: put, then wakep, which
	 * counts on L's looker. */
	fut__tp_slot_put(p);
	fut__tp_wakep(p);
	nap_ms(20);
	assert_int_equal(atomic_load(&a_ran), 0);
	pthread_mutex_unlock(&p->ctl); /* L's start fails at the bound */
	(void)reaches(&a_ran, 1);
	int ran = (int)atomic_load(&a_ran);
	finish(ex, fs, HOLDERS + 2); /* the holders' threads run A */
	assert_int_equal(ran, 1);
	assert_int_equal(atomic_load(&l.rc), FUT_OK);
	assert_int_equal(atomic_load(&bad), 0);
}

static fut_future *back; /* what X waits on */
static struct told x = { .rc = -1, .on = &back };
static struct told y = { .go = true, .rc = -1, .on = &h };

/* The scene of the last two tests begins as the others do; X, Y and T
 * will have fs[HOLDERS..HOLDERS + 3). */
static struct tpool *over_begin(fut_executor **ex, fut_future **fs)
{
	atomic_store(&a_ran, 0);
	struct tpool *p = holders_waiting(ex, fs, HOLDERS);
	assert_int_equal(fut_future_new(&back), FUT_OK);
	assert_int_equal(fut_future_new(&h), FUT_OK);
	return p;
}

/* Until T ran (X, back from its wait, runs it), then H is set and the
 * scene ends.  Whether T ran; *y_early: Y's code before H was set. */
static int over_end(fut_executor *ex, fut_future **fs, const struct told *yw,
		    int *y_early)
{
	(void)reaches(&a_ran, 1);
	int ran = (int)atomic_load(&a_ran);
	*y_early = atomic_load(&yw->rc);
	(void)fut_set_result(h, NULL);
	finish(ex, fs, HOLDERS + 3);
	fut_release(back);
	fut_release(h);
	return ran;
}

/*
 * X's wait is over (what it waits on is set) while its test is under
 * way: a start it tries waits for p->ctl, held by the test.  Meanwhile
 * the last place goes to Y, which waits too, T still queued.  X's start
 * fails at the bound, and every thread counts as waiting, X among them
 * until its wait hook returns: X's wait and Y's said FUT_EAGAIN (X's for
 * a future set, Y's beside a thread coming back to run T), one or both.
 */
static void test_a_wait_that_is_over_is_no_thread_waiting(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	fut_future *fs[HOLDERS + 3];
	struct tpool *p = over_begin(&ex, fs);
	/* X takes the slot; Y and T are queued behind it. */
	assert_int_equal(fut_submit(ex, waits_when_told, &x, &fs[HOLDERS]),
			 FUT_OK);
	assert_true(reaches(&in, HOLDERS + 1));
	assert_int_equal(fut_submit(ex, waits_when_told, &y, &fs[HOLDERS + 1]),
			 FUT_OK);
	assert_int_equal(fut_submit(ex, sets_ran, NULL, &fs[HOLDERS + 2]),
			 FUT_OK);
	atomic_fetch_add(&p->nbusy, 1); /* as in the first test */
	pthread_mutex_lock(&p->ctl);
	atomic_store(&x.go, true);
	assert_true(reaches(&p->nspinning, 1)); /* X's looker credit */
	(void)fut_set_result(back, NULL);	/* X's wait is over */
	/* The last place: its thread takes Y, which waits on H. */
	fut__tp_slot_put(p);
	start_one_locked(p);
	assert_true(reaches(&in, HOLDERS + 2));
	assert_true(reaches(&p->nwaiting, HOLDERS + 2));
	nap_ms(50); /* Y's wait has come to its test */
	assert_int_equal(fut__tp_threads(ex), HOLDERS + 2);
	pthread_mutex_unlock(&p->ctl); /* X's start fails at the bound */
	int y_early;
	int ran = over_end(ex, fs, &y, &y_early);
	int x_rc = atomic_load(&x.rc);
	if (x_rc != FUT_OK || y_early != -1)
		fprintf(stderr, "X's wait: %s; Y's, before H: %s\n",
			x_rc == -1 ? "not over" : fut_strerror(x_rc),
			y_early == -1 ? "not over" : fut_strerror(y_early));
	assert_int_equal(x_rc, FUT_OK);
	assert_int_equal(y_early, -1);
	assert_int_equal(ran, 1); /* X came back and ran T */
	assert_int_equal(atomic_load(&y.rc), FUT_OK);
	assert_int_equal(atomic_load(&bad), 0);
}

static struct told x_asleep = { .go = true, .rc = -1, .on = &back };
static struct told y_told = { .rc = -1, .on = &h };

static void nothing(fut_future *f, void *ud)
{
	(void)f;
	(void)ud;
}

static void *sets_back(void *arg)
{
	(void)arg;
	(void)fut_set_result(back, NULL);
	return NULL;
}

/*
 * X sleeps in its wait; what it waits on is set, and the setter is held
 * (the test holds the future's lock, which it takes for a callback)
 * before it wakes X: X's wait is over, X not yet back.  Y, the last
 * thread, begins to wait at the bound with T queued: X comes back and
 * runs T, so Y's wait must sleep; it said FUT_EAGAIN, X still counted.
 */
static void test_a_thread_whose_wait_is_over_is_no_thread_waiting(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	fut_future *fs[HOLDERS + 3];
	struct tpool *p = over_begin(&ex, fs);
	assert_int_equal(fut_add_done_callback(back, nothing, NULL), FUT_OK);
	assert_int_equal(fut_submit(ex, waits_when_told, &x_asleep,
				    &fs[HOLDERS]),
			 FUT_OK);
	assert_true(reaches(&p->nwaiting, HOLDERS + 1));
	assert_int_equal(fut_submit(ex, waits_when_told, &y_told,
				    &fs[HOLDERS + 1]),
			 FUT_OK);
	assert_true(reaches(&in, HOLDERS + 2));
	assert_int_equal(fut_submit(ex, sets_ran, NULL, &fs[HOLDERS + 2]),
			 FUT_OK);
	assert_int_equal(fut__tp_threads(ex), HOLDERS + 2); /* the bound */
	fut__lock_acquire(&back->lock);
	pthread_t s;
	assert_int_equal(pthread_create(&s, NULL, sets_back, NULL), 0);
	while (!fut_done(back)) /* set; X not woken */
		sched_yield();
	atomic_store(&y_told.go, true);
	assert_true(all_asleep());	/* Y's wait made its test */
	fut__lock_release(&back->lock); /* X is woken */
	assert_int_equal(pthread_join(s, NULL), 0);
	int y_early;
	int ran = over_end(ex, fs, &y_told, &y_early);
	if (y_early != -1)
		fprintf(stderr, "Y's wait ended before H: %s\n",
			fut_strerror(y_early));
	assert_int_equal(y_early, -1);
	assert_int_equal(ran, 1); /* X came back and ran T */
	assert_int_equal(atomic_load(&x_asleep.rc), FUT_OK);
	assert_int_equal(atomic_load(&y_told.rc), FUT_OK);
	assert_int_equal(atomic_load(&bad), 0);
}

static fut_future *g1, *g2; /* what T1 and T2 wait on; A sets g2 */
static struct told t1 = { .go = true, .rc = -1, .on = &g1 };
static struct told t2 = { .rc = -1, .on = &g2 };

static void sets_g2(fut_task *t)
{
	(void)t;
	(void)fut_set_result(g2, NULL);
}

static void *submit_a(void *arg)
{
	struct submit_arg *a = arg;
	a->rc = fut_submit(a->ex, sets_g2, NULL, &a->f);
	return NULL;
}

/*
 * Two slots: T1 waits (its slot given up), T2 runs.  A submit from
 * outside the pool finds no looker and starts a thread for A: its place
 * is taken (3 threads) and its pthread_create fails, slowly (the test
 * hook).  Meanwhile T2 waits on what A sets.  T2's test took the start
 * under way for a thread that does not wait and slept; the start failed,
 * and nobody tested the bound again: A stayed queued, both slots free,
 * every thread waiting, no wait said FUT_EAGAIN (review, 2026-12-07,
 * fourteenth session).  T2's test now waits for the start's outcome,
 * starts a looker itself, and A runs.
 */
static void test_a_wait_beside_a_start_that_fails_is_tested_again(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	fut_future *fs[2];
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){ .max_workers = 2 }),
			 FUT_OK);
	struct tpool *p = pool_of(ex);
	atomic_store(&in, 0);
	assert_int_equal(fut_future_new(&g1), FUT_OK);
	assert_int_equal(fut_future_new(&g2), FUT_OK);
	assert_int_equal(fut_submit(ex, waits_when_told, &t1, &fs[0]), FUT_OK);
	assert_true(reaches(&p->nwaiting, 1)); /* T1's slot given up */
	assert_int_equal(fut_submit(ex, waits_when_told, &t2, &fs[1]), FUT_OK);
	assert_true(reaches(&in, 2));
	/* No looker (T2's thread stopped looking as it took T2), no
	 * sleeper: A's submit starts a thread. */
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&p->nspinning) != 0 && fut__now_ns() < deadline)
		sched_yield();
	assert_int_equal(atomic_load(&p->nspinning), 0);
	assert_int_equal(atomic_load(&p->nsleeping), 0);
	assert_int_equal(fut__tp_threads(ex), 2);
	fut__tp_test_fail_start(0, 500);
	struct submit_arg sa = { .ex = ex, .rc = -1 };
	pthread_t s;
	assert_int_equal(pthread_create(&s, NULL, submit_a, &sa), 0);
	assert_true(reaches(&p->nthreads, 3)); /* its place taken */
	atomic_store(&t2.go, true); /* T2 waits while the start is under way */
	assert_true(reaches(&p->nwaiting, 2));
	assert_int_equal(pthread_join(s, NULL), 0); /* the start failed */
	fut__tp_test_fail_start(0, -1);
	assert_int_equal(sa.rc, FUT_OK);
	deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&t2.rc) == -1 && fut__now_ns() < deadline)
		sched_yield();
	int rc = atomic_load(&t2.rc);
	if (rc == -1) /* A stranded, T2 asleep: end its wait */
		(void)fut_set_result(g2, NULL);
	(void)fut_set_result(g1, NULL);
	assert_int_equal(fut_result(sa.f, GUARD_S, NULL), FUT_OK);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(fut_result(fs[i], GUARD_S, NULL), FUT_OK);
		fut_release(fs[i]);
	}
	fut_release(sa.f);
	fut_executor_free(ex);
	fut_release(g1);
	fut_release(g2);
	assert_int_equal(rc, FUT_OK);
	assert_int_equal(atomic_load(&t1.rc), FUT_OK);
}

static void *frees_a_slot(void *arg)
{
	struct tpool *p = arg;
	fut__tp_slot_put(p);
	fut__tp_wakep(p); /* its start fails, slowly */
	return NULL;
}

/*
 * n threads wait on the gate (0: none), T on G2, A queued (it sets G2),
 * a slot held by the test: T's wakep starts nothing.  T's test saw
 * every thread waiting and no start under way, and stops before its own
 * start (the test holds the queue's consumer lock).  Meanwhile a slot
 * comes free, and its wakep takes a place and starts a thread for A,
 * which fails after 500 ms (the test hook).  T's start then found the
 * other's place taken: refused as if one more thread ran (n 0, one
 * slot: T slept, A stayed queued) or as if the pool had max_threads
 * (n 255: T said FUT_EAGAIN though the place came free).  T's test now
 * waits for that start's outcome and starts a looker itself: A runs.
 */
static int wait_beside_a_start_that_took_a_place(int n)
{
	fut_executor *ex = NULL;
	fut_future *fs[HOLDERS + 2];
	struct told t = { .rc = -1, .on = &g2 };
	struct tpool *p = holders_waiting(&ex, fs, n);
	assert_int_equal(fut_future_new(&g2), FUT_OK);
	assert_int_equal(fut_submit(ex, waits_when_told, &t, &fs[n]), FUT_OK);
	assert_true(reaches(&in, (uint32_t)n + 1));
	assert_int_equal(fut_submit(ex, sets_g2, NULL, &fs[n + 1]), FUT_OK);
	int64_t deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&p->nspinning) != 0 && fut__now_ns() < deadline)
		sched_yield();
	assert_int_equal(atomic_load(&p->nspinning), 0);
	assert_int_equal(fut__tp_threads(ex), n + 1);
	atomic_fetch_add(&p->nbusy, 1); /* T's wakep starts nothing */
	fut__lock_acquire(&p->q.clock);
	atomic_store(&t.go, true);
	assert_true(reaches(&p->nwaiting, (uint32_t)n + 1));
	nap_ms(50); /* T's test waits for the queue's lock */
	fut__tp_test_fail_start(0, 500);
	pthread_t s;
	assert_int_equal(pthread_create(&s, NULL, frees_a_slot, p), 0);
	assert_true(reaches(&p->nthreads, (uint32_t)n + 2)); /* its place */
	fut__lock_release(&p->q.clock); /* T's start finds it taken */
	assert_int_equal(pthread_join(s, NULL), 0); /* the start failed */
	fut__tp_test_fail_start(0, -1);
	deadline = fut__now_ns() + (int64_t)(GUARD_S * 1e9);
	while (atomic_load(&t.rc) == -1 && fut__now_ns() < deadline)
		sched_yield();
	int rc = atomic_load(&t.rc);
	if (rc == -1) /* A stranded, T asleep: end its wait */
		(void)fut_set_result(g2, NULL);
	if (rc != FUT_OK)
		fprintf(stderr, "T's wait (%d waiting beside): %s\n", n,
			rc == -1 ? "asleep, A queued" : fut_strerror(rc));
	finish(ex, fs, n + 2);
	fut_release(g2);
	assert_int_equal(atomic_load(&bad), 0);
	return rc;
}

static void test_a_start_refused_beside_a_start_is_tried_again(void **state)
{
	(void)state;
	assert_int_equal(wait_beside_a_start_that_took_a_place(0), FUT_OK);
}

static void
test_a_start_refused_at_the_bound_beside_a_start_is_tried_again(void **state)
{
	(void)state;
	assert_int_equal(wait_beside_a_start_that_took_a_place(HOLDERS),
			 FUT_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_job_run_inline_by_a_thread_started_meanwhile_is_no_task),
		cmocka_unit_test(
			test_a_wait_at_the_bound_waits_for_a_start_under_way),
		cmocka_unit_test(
			test_a_failed_start_wakes_a_sleeper_for_a_queued_task),
		cmocka_unit_test(test_a_wait_that_is_over_is_no_thread_waiting),
		cmocka_unit_test(
			test_a_thread_whose_wait_is_over_is_no_thread_waiting),
		cmocka_unit_test(
			test_a_wait_beside_a_start_that_fails_is_tested_again),
		cmocka_unit_test(
			test_a_start_refused_beside_a_start_is_tried_again),
		cmocka_unit_test(
			test_a_start_refused_at_the_bound_beside_a_start_is_tried_again),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
