/*
 * test_pp_forkchild.c: futures a fork child inherits from its parent's
 * pools (docs/api.md, "Executors in a fork child").
 *
 * The child has copies of the futures but none of the pools' threads,
 * workers or fork server.  Every call on an inherited future stays in the
 * child: a process-pool task sent ahead to the parent's worker reads as
 * pending and a cancel takes the child's copy only; an interrupt of a
 * running one raises its flag and nothing more.  None of them may reach
 * the parent's worker (the claim words it shares with the parent), the
 * fds the child's free closed (their numbers reused by then), or the
 * mapping that free unmapped.
 *
 * Found by review: after the child freed the pool, fut_state and
 * fut_cancel of a task sent ahead crashed (the shared slots unmapped),
 * fut_interrupt of a running one wrote into whatever fd had taken the
 * pool's wake eventfd's number; without the free, the child's cancel
 * took the task back from the parent's worker.
 *
 * A task may also free a pool its worker inherited (the worker is a
 * fork child too): the fds that free would close are the worker's own
 * by then.
 *
 * The child reports through a pipe; a crash or a hang (alarm) there
 * leaves no report, and the parent fails.  Timeouts only bound waits.
 */
#include <stdatomic.h>

#include "pp_test.h"

/* A pool of one worker that runs `block` (OP_BLOCK, until interrupted)
 * with `sent` in its first frame behind it (sent ahead, not started),
 * and `done`, a task that finished before them. */
struct scene {
	fut_executor *pp;
	fut_future *done, *block, *sent;
};

static bool is_sent(fut_future *f)
{
	const struct pp_job *j = (const struct pp_job *)(const void *)f;
	return atomic_load(&j->ticket) != 0 &&
	       (atomic_load(&f->state) & FUT__S_MASK) == FUT__S_SENT;
}

static void scene_end(struct scene *s);

/* One try at the scene: false if the manager took `sent` back already
 * (it does so 5 ms after the worker started a long task: a slow or
 * loaded machine may get there before the fork). */
static bool scene_try(struct scene *s)
{
	atomic_store(started, 0);
	s->pp = pool_with(
		&(fut_process_pool_opts){ .max_workers = 1, .chunk = 2 });
	s->done = submit_op(s->pp, OP_SQUARE, 0, 3);
	CHECK(result_u64(s->done) == 9);
	struct op_in in[2] = { { OP_BLOCK, 0, 1 }, { OP_SQUARE, 0, 5 } };
	fut_future *fs[2] = { NULL, NULL };
	CHECK(fut_submit_many(s->pp, op_task, in, sizeof(in[0]), 2, fs) ==
	      FUT_OK);
	s->block = fs[0];
	s->sent = fs[1];
	wait_started(fs, 2, 1);
	for (long i = 0; fut_state(s->block) != FUT_RUNNING; i++) {
		CHECK(i < 1200000);
		usleep(100);
	}
	if (is_sent(s->sent))
		return true;
	scene_end(s);
	return false;
}

static void scene_set(struct scene *s)
{
	for (int i = 0; !scene_try(s); i++)
		CHECK(i < 20);
}

/* The parent's tasks after the child: the blocked one interrupted, the
 * one sent ahead runs as if no child had been. */
static void scene_end(struct scene *s)
{
	assert_int_equal(fut_interrupt(s->block), FUT_OK);
	assert_int_equal(final_code(s->block), FUT_ECANCELLED);
	assert_int_equal(result_u64(s->sent), 25);
	fut_release(s->done);
	fut_release(s->block);
	fut_release(s->sent);
	fut_executor_free(s->pp);
}

/* Forks; the child runs fn(scene, report) and writes the len bytes of
 * its report to a pipe; the parent reads them into report (false: the
 * child died without one). */
static bool in_fork_child(void (*fn)(void *, void *), void *scene, void *report,
			  size_t len)
{
	int rep[2];
	assert_int_equal(pipe(rep), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* A crash kills the child (not cmocka's handler, inherited). */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		alarm(30);
		close(rep[0]);
		in_child = true;
		fn(scene, report);
		_exit(write(rep[1], report, len) == (ssize_t)len ? 0 : 1);
	}
	close(rep[1]);
	struct pollfd p = { .fd = rep[0], .events = POLLIN | POLLHUP };
	assert_int_equal(poll(&p, 1, 60000), 1);
	ssize_t got = read(rep[0], report, len);
	close(rep[0]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		print_message("the child died of signal %d\n",
			      WTERMSIG(status));
	return got == (ssize_t)len;
}

/* ------------------------------------------------------------------ */
/* Interrupt after the free                                            */

struct interrupt_report {
	int wake_fd, reused, interrupt, state;
	ssize_t stray; /* bytes that reached the child's own pipe */
	int cancel, error;
};

/* The child frees the pool, then a pipe of its own takes the number of
 * the pool's wake eventfd, as the next open of the child would. */
static void interrupt_after_free(void *scene, void *ud)
{
	struct scene *s = scene;
	struct interrupt_report *r = ud;
	r->wake_fd = ((struct ppool *)(void *)s->pp)->wake_fd;
	int mine[2];
	if (pipe2(mine, O_NONBLOCK) != 0)
		return;
	fut_executor_free(s->pp);
	r->reused = dup2(mine[1], r->wake_fd) == r->wake_fd;
	r->interrupt = fut_interrupt(s->block);
	r->state = fut_state(s->block);
	char buf[64];
	r->stray = read(mine[0], buf, sizeof(buf));
	r->cancel = fut_cancel(s->block);
	r->error = fut_error(s->block);
	fut_release(s->block);
	fut_release(s->done); /* finished before the fork */
}

static void
test_an_inherited_interrupt_writes_to_no_fd_of_the_child(void **state)
{
	(void)state;
	struct scene s;
	scene_set(&s);
	struct interrupt_report r;
	memset(&r, 0, sizeof(r));
	assert_true(in_fork_child(interrupt_after_free, &s, &r, sizeof(r)));
	assert_true(r.wake_fd >= 0);
	assert_true(r.reused);
	assert_int_equal(r.interrupt, FUT_OK);
	assert_int_equal(r.state, FUT_RUNNING); /* nothing can stop it here */
	print_message("bytes in the child's pipe: %zd\n", r.stray);
	assert_true(r.stray < 0); /* EAGAIN: nothing was written */
	assert_false(r.cancel);
	assert_int_equal(r.error, FUT_ESTATE);
	scene_end(&s);
}

/* ------------------------------------------------------------------ */
/* State and cancel after the free                                     */

struct cancel_report {
	int state, cancelled, state_after, error, interrupt;
	int running, after_free;
};

static void cancel_after_free(void *scene, void *ud)
{
	struct scene *s = scene;
	struct cancel_report *r = ud;
	fut_executor_free(s->pp);
	r->state = fut_state(s->sent);
	r->cancelled = fut_cancel(s->sent);
	r->state_after = fut_state(s->sent);
	r->error = fut_error(s->sent);
	r->interrupt = fut_interrupt(s->sent);
	r->running = fut_state(s->block);
	fut_future *f = NULL;
	r->after_free = fut_submit_bytes(s->pp, op_task, NULL, 0, &f);
	fut_release(s->sent);
	fut_release(s->block);
	fut_release(s->done);
}

static void
test_an_inherited_future_sent_ahead_is_cancelled_after_the_free(void **state)
{
	(void)state;
	struct scene s;
	scene_set(&s);
	struct cancel_report r;
	memset(&r, 0, sizeof(r));
	assert_true(in_fork_child(cancel_after_free, &s, &r, sizeof(r)));
	assert_int_equal(r.state, FUT_PENDING);
	assert_true(r.cancelled);
	assert_int_equal(r.state_after, FUT_CANCELLED);
	assert_int_equal(r.error, FUT_ECANCELLED);
	assert_int_equal(r.interrupt, FUT_ESTATE);
	assert_int_equal(r.running, FUT_RUNNING);
	assert_int_equal(r.after_free, FUT_EINVAL);
	scene_end(&s);
}

/* ------------------------------------------------------------------ */
/* Cancel without a free: the parent's worker is not the child's        */

struct revoke_report {
	int state, cancelled, interrupt;
	bool sent_before, sent_after; /* the shared claim word, in the child */
};

static bool still_sent(const struct scene *s);

static void cancel_before_free(void *scene, void *ud)
{
	struct scene *s = scene;
	struct revoke_report *r = ud;
	r->sent_before = still_sent(s);
	r->state = fut_state(s->sent);
	r->cancelled = fut_cancel(s->sent);
	r->sent_after = still_sent(s);
	r->interrupt = fut_interrupt(s->block);
	fut_executor_free(s->pp);
}

/* The claim word the parent's worker reads before it starts `sent`: the
 * child must leave it as the parent wrote it. */
static bool still_sent(const struct scene *s)
{
	const struct ppool *p = (const struct ppool *)(const void *)s->pp;
	const struct pp_job *j = (const struct pp_job *)(const void *)s->sent;
	uint64_t t = atomic_load(&j->ticket);
	uint32_t key = (uint32_t)t;
	_Atomic uint32_t *w =
		&p->slots[(t >> 32) - 1].claim[key % FUT__PP_CLAIMS];
	return atomic_load(w) == fut__pp_claim_word(key, FUT__PP_SENT);
}

static void
test_an_inherited_cancel_leaves_the_parents_worker_alone(void **state)
{
	(void)state;
	for (int attempt = 0;; attempt++) {
		struct scene s;
		scene_set(&s);
		struct revoke_report r;
		memset(&r, 0, sizeof(r));
		assert_true(
			in_fork_child(cancel_before_free, &s, &r, sizeof(r)));
		assert_int_equal(r.state, FUT_PENDING);
		assert_true(r.cancelled);
		assert_int_equal(r.interrupt, FUT_OK);
		assert_int_equal(fut_state(s.block), FUT_RUNNING);
		scene_end(&s);
		/* The child's cancel left the word the parent's worker reads
		 * as it was (read in the child, around the cancel).  The
		 * parent's manager may take the task back itself once 5 ms
		 * have passed: before the child looked (unchecked), or
		 * between its two reads, as a slow child (valgrind) sees in
		 * CI.  Then again: a cancel that writes the word writes it
		 * every time. */
		if (!r.sent_before)
			print_message(
				"taken back before the child looked: unchecked\n");
		if (!r.sent_before || r.sent_after)
			return;
		print_message("changed between the child's reads: again\n");
		assert_true(attempt < 10);
	}
}

/* ------------------------------------------------------------------ */
/* The thread pool's                                                   */

/* Blocks until a byte comes on the pipe its argument names. */
static void gated(fut_task *t)
{
	int fd = (int)(intptr_t)fut_task_arg(t);
	char c;
	ssize_t r;
	do
		r = read(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	fut_task_return(t, (void *)(uintptr_t)(r == 1 ? 7 : 0));
}

static void plus_one(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

struct tp_scene {
	fut_executor *tp;
	fut_future *done, *running, *queued;
};

struct tp_report {
	int running, queued, interrupt, cancel_running, still_running;
	int cancel_queued, queued_after, result;
};

static void tp_child(void *scene, void *report)
{
	struct tp_scene *s = scene;
	struct tp_report *r = report;
	fut_executor_free(s->tp);
	r->running = fut_state(s->running);
	r->queued = fut_state(s->queued);
	r->interrupt = fut_interrupt(s->running);
	r->cancel_running = fut_cancel(s->running);
	r->still_running = fut_state(s->running);
	r->cancel_queued = fut_cancel(s->queued);
	r->queued_after = fut_state(s->queued);
	r->result = fut_result(s->queued, 0, NULL);
	fut_release(s->running);
	fut_release(s->queued);
	fut_release(s->done);
}

static void test_inherited_thread_pool_futures_stay_in_the_child(void **state)
{
	(void)state;
	struct tp_scene s;
	assert_int_equal(
		fut_thread_pool_new(&s.tp,
				    &(fut_thread_pool_opts){ .max_workers = 1,
							     .max_queue = 4 }),
		FUT_OK);
	assert_int_equal(fut_submit(s.tp, plus_one, (void *)1, &s.done),
			 FUT_OK);
	assert_int_equal(fut_result(s.done, LONG_WAIT, NULL), FUT_OK);
	int gate[2];
	assert_int_equal(pipe(gate), 0);
	assert_int_equal(fut_submit(s.tp, gated, (void *)(intptr_t)gate[0],
				    &s.running),
			 FUT_OK);
	for (long i = 0; fut_state(s.running) != FUT_RUNNING; i++) {
		assert_true(i < 1200000);
		usleep(100);
	}
	assert_int_equal(fut_submit(s.tp, plus_one, (void *)2, &s.queued),
			 FUT_OK);
	struct tp_report r;
	memset(&r, 0, sizeof(r));
	assert_true(in_fork_child(tp_child, &s, &r, sizeof(r)));
	assert_int_equal(r.running, FUT_RUNNING);
	assert_int_equal(r.queued, FUT_PENDING);
	assert_int_equal(r.interrupt, FUT_OK);
	assert_false(r.cancel_running);
	assert_int_equal(r.still_running, FUT_RUNNING);
	assert_true(r.cancel_queued);
	assert_int_equal(r.queued_after, FUT_CANCELLED);
	assert_int_equal(r.result, FUT_ECANCELLED);
	/* The parent's: neither was touched. */
	assert_int_equal(write(gate[1], "g", 1), 1);
	void *v = NULL;
	assert_int_equal(fut_result(s.running, LONG_WAIT, &v), FUT_OK);
	assert_int_equal((uintptr_t)v, 7);
	assert_int_equal(fut_result(s.queued, LONG_WAIT, &v), FUT_OK);
	assert_int_equal((uintptr_t)v, 3);
	fut_release(s.done);
	fut_release(s.running);
	fut_release(s.queued);
	fut_executor_free(s.tp);
	close(gate[0]);
	close(gate[1]);
}

/* ------------------------------------------------------------------ */
/* A pool freed in another pool's worker                               */

/* The pool made first, which the second pool's workers inherit. */
static fut_executor *first_pool;

/* Frees the inherited first pool, then answers (its return code 0). */
static void free_first_pool(fut_task *t)
{
	fut_executor_free(first_pool);
	uint64_t ok = 0;
	(void)fut_task_return_bytes(t, &ok, sizeof(ok));
}

/* A worker is a fork child of its pool's fork server, which closed every
 * fd it inherited: the numbers of the first pool's fds are the worker's
 * own by then (its task socket and result pipe take the lowest).  The
 * free closed them by number, so the worker lost its channels and died
 * after the task, which ran again on each new worker until it failed
 * FUT_ECRASHED ("its worker process died 4 times"). */
static void test_a_task_may_free_a_pool_its_worker_inherited(void **state)
{
	(void)state;
	first_pool = pool_with(&(fut_process_pool_opts){ .max_workers = 1 });
	fut_future *f = submit_op(first_pool, OP_SQUARE, 0, 3);
	CHECK(result_u64(f) == 9); /* its worker's fds are open too */
	fut_release(f);
	fut_executor *second =
		pool_with(&(fut_process_pool_opts){ .max_workers = 1 });
	assert_int_equal(fut_submit_bytes(second, free_first_pool, NULL, 0, &f),
			 FUT_OK);
	CHECK(result_u64(f) == 0);
	fut_release(f);
	/* Both pools go on in the parent. */
	f = submit_op(second, OP_SQUARE, 0, 4);
	CHECK(result_u64(f) == 16);
	fut_release(f);
	f = submit_op(first_pool, OP_SQUARE, 0, 5);
	CHECK(result_u64(f) == 25);
	fut_release(f);
	fut_executor_free(second);
	fut_executor_free(first_pool);
}

/* An iterator the program made (its fd too) before the pool. */
static fut_as_completed *first_iterator;

/* Polls the inherited iterator's fd, then frees it; answers 0. */
static void use_first_iterator(fut_task *t)
{
	(void)fut_as_completed_fd(first_iterator);
	fut_as_completed_free(first_iterator);
	uint64_t ok = 0;
	(void)fut_task_return_bytes(t, &ok, sizeof(ok));
}

/* The same for an as_completed iterator's eventfd: in a fork child the
 * iterator takes a fresh eventfd under its number (dup3) and its free
 * closes it; in a worker that number was the worker's own channel: its
 * task socket and result pipe take the lowest numbers, 3 and 4, and the
 * iterator's fd is made at 4 here.  The dup3 put an eventfd in place of
 * the result pipe: the worker died writing the result, the task ran
 * again on each new worker and failed FUT_ECRASHED. */
static void test_a_task_may_use_an_iterator_its_worker_inherited(void **state)
{
	(void)state;
	fut_future *standalone = NULL;
	assert_int_equal(fut_future_new(&standalone), FUT_OK);
	assert_int_equal(fut_as_completed_new(&first_iterator, &standalone, 1),
			 FUT_OK);
	/* Its fd at 4 if that is free: the lower ones held meanwhile. */
	int held[4], nheld = 0, d;
	while ((d = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && d < 4)
		held[nheld++] = d;
	if (d >= 0)
		close(d);
	assert_true(fut_as_completed_fd(first_iterator) >= 0);
	while (nheld > 0)
		close(held[--nheld]);
	fut_executor *pool =
		pool_with(&(fut_process_pool_opts){ .max_workers = 1 });
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(pool, use_first_iterator, NULL, 0,
					  &f),
			 FUT_OK);
	CHECK(result_u64(f) == 0);
	fut_release(f);
	f = submit_op(pool, OP_SQUARE, 0, 4);
	CHECK(result_u64(f) == 16);
	fut_release(f);
	fut_executor_free(pool);
	/* The parent's iterator is untouched. */
	assert_int_equal(fut_set_result(standalone, NULL), FUT_OK);
	fut_future *got = NULL;
	assert_int_equal(fut_as_completed_next(first_iterator, 0, &got),
			 FUT_OK);
	assert_ptr_equal(got, standalone);
	fut_as_completed_free(first_iterator);
	fut_release(standalone);
}

static void inner_task(fut_task *t)
{
	fut_task_return_bytes(t, "inner", 5);
}

/* A process-pool task that makes a process pool of its own (start method
 * in its input), runs a task there and returns that task's bytes, or
 * fails with the inner outcome. */
static void nesting_task(fut_task *t)
{
	size_t len = 0;
	const int *method = fut_task_input(t, &len);
	fut_executor *inner = NULL;
	int rc = fut_process_pool_new(
		&inner, &(fut_process_pool_opts){ .max_workers = 1,
						  .start_method = *method });
	if (rc != FUT_OK) {
		fut_task_fail(t, rc, "inner pool: %s", fut_strerror(rc));
		return;
	}
	fut_future *f = NULL;
	const void *data = NULL;
	size_t n = 0;
	rc = fut_submit_bytes(inner, inner_task, NULL, 0, &f);
	if (rc == FUT_OK)
		rc = fut_result_bytes(f, 20, &data, &n);
	if (rc == FUT_OK)
		fut_task_return_bytes(t, data, n);
	else
		fut_task_fail(t, rc, "inner task: %s: %s", fut_strerror(rc),
			      f != NULL && fut_error_message(f) != NULL ?
				      fut_error_message(f) :
				      "");
	fut_release(f);
	fut_executor_free(inner);
}

/*
 * A pool made inside a process-pool task (its worker process is a fork
 * child too) works as any other (docs/api.md), with either start method.
 * Before (found by review, 2026-12-07) the worker's fork-child hook,
 * meant for a child the task forks, stayed installed in that child's own
 * children: the inner fork server ran it as it forked the inner worker
 * and turned the fds the inner worker had just received into /dev/null.
 * Inner tasks ended FUT_ECRASHED (fork), or never ended (exec).
 */
static void test_a_task_may_make_a_process_pool_of_its_own(void **state)
{
	(void)state;
	int methods[2] = { FUT_START_FORK, FUT_START_EXEC };
	for (int m = 0; m < 2; m++) {
		fut_executor *ex = pool_with(&(fut_process_pool_opts){
			.max_workers = 1, .start_method = methods[m] });
		fut_future *f = NULL;
		assert_int_equal(fut_submit_bytes(ex, nesting_task, &methods[m],
						  sizeof(int), &f),
				 FUT_OK);
		const void *data = NULL;
		size_t len = 0;
		/* A timeout only against a hang. */
		int rc = fut_result_bytes(f, 60, &data, &len);
		if (rc != FUT_OK)
			fprintf(stderr, "start method %d: %s: %s\n", methods[m],
				fut_strerror(rc),
				fut_error_message(f) ? fut_error_message(f) :
						       "");
		assert_int_equal(rc, FUT_OK);
		assert_int_equal(len, 5);
		assert_memory_equal(data, "inner", 5);
		fut_release(f);
		fut_executor_free(ex);
	}
}

int main(void)
{
	if (!pp_test_prepare())
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_an_inherited_interrupt_writes_to_no_fd_of_the_child),
		cmocka_unit_test(
			test_an_inherited_future_sent_ahead_is_cancelled_after_the_free),
		cmocka_unit_test(
			test_an_inherited_cancel_leaves_the_parents_worker_alone),
		cmocka_unit_test(
			test_inherited_thread_pool_futures_stay_in_the_child),
		cmocka_unit_test(
			test_a_task_may_free_a_pool_its_worker_inherited),
		cmocka_unit_test(
			test_a_task_may_use_an_iterator_its_worker_inherited),
		cmocka_unit_test(
			test_a_task_may_make_a_process_pool_of_its_own),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
