/*
 * test_fork_state.c: the library's process-wide state in a fork child of a
 * threaded program (docs/api.md, "Executors in a fork child").
 *
 * The library's own process-wide locks are taken around fork() and are
 * free in the child, whatever the parent's other threads were doing; and
 * the child never touches a thread of the parent's, which it does not
 * have.  The children here report through a pipe; a hang is bounded by
 * alarm() and the parent's poll, and then fails.  Timeouts only bound
 * the waits.
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "core/names.h"
#include "proc_helpers.h"
#include "test_env.h"

/* gcc 12's ASan and TSan allocators take no lock around fork(): a child
 * forked while another thread allocates may hang in its first malloc,
 * whatever the library does (docs/reliability.md). */
#define FORK_SAFE_MALLOC (!UNDER_ASAN && !UNDER_TSAN)

/* ThreadSanitizer cannot start a thread in the child of a threaded
 * process ("dup thread with used id"), and intercepts the pthread calls
 * the test below counts. */
#define CHILD_CAN_START_THREADS (!UNDER_TSAN)

static void a_task(fut_task *t)
{
	fut_task_return_bytes(t, "k", 1);
}

/* Forks up to `forks` children that each run child_fn and say 'y' on a
 * pipe; counts those that hung (no word in 10 s: the first ends the
 * forks) and those that said 'n'.  Returns how many it forked. */
static int fork_children(int forks, char (*child_fn)(void), int *hung,
			 int *failed)
{
	*hung = *failed = 0;
	int i = 0;
	for (; i < forks && *hung == 0; i++) {
		int rep[2];
		assert_int_equal(pipe(rep), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(rep[0]);
			alarm(20);
			char ok = child_fn();
			_exit(write(rep[1], &ok, 1) == 1 ? 0 : 1);
		}
		close(rep[1]);
		struct pollfd pf = { .fd = rep[0], .events = POLLIN };
		char ok = 0;
		if (poll(&pf, 1, 10000) != 1 || read(rep[0], &ok, 1) != 1) {
			kill(pid, SIGKILL);
			(*hung)++;
		} else if (ok != 'y') {
			print_message("child %d said '%c'\n", i, ok);
			(*failed)++;
		}
		close(rep[0]);
		int status = 0;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	return i;
}

/*
 * The table of the program's modules (src/core/names.c) is read under a
 * process-wide lock whenever a FUT_START_EXEC fork server starts (made by
 * fut_process_pool_new, or restarted by the pool's manager thread).  A
 * child forked while another thread held it inherited it held for good:
 * the child's own FUT_START_EXEC pool hung in its creation.  The thread
 * here reads the table in a loop, as such starts do, so that most forks
 * land while it holds the lock.
 */
static void *reads_the_module_table(void *arg)
{
	_Atomic bool *stop = arg;
	static struct fut__fn_module mods[64];
	while (!atomic_load(stop))
		(void)fut__fn_table(mods, 64);
	return NULL;
}

static char exec_pool_child(void)
{
	fut_executor *pp = NULL;
	if (fut_process_pool_new(&pp, &(fut_process_pool_opts){
					      .max_workers = 1,
					      .start_method = FUT_START_EXEC,
				      }) != FUT_OK)
		return 'n';
	fut_future *f = NULL;
	char ok = fut_submit_bytes(pp, a_task, NULL, 0, &f) == FUT_OK &&
				  fut_result(f, 10.0, NULL) == FUT_OK ?
			  'y' :
			  'n';
	fut_release(f);
	fut_executor_free(pp);
	return ok;
}

static void
test_a_child_forked_while_the_module_table_is_read_gets_a_pool(void **state)
{
	(void)state;
	if (!FORK_SAFE_MALLOC)
		skip();
	_Atomic bool stop = false;
	pthread_t th;
	assert_int_equal(
		pthread_create(&th, NULL, reads_the_module_table, &stop), 0);
	int forks = under_valgrind() ? 4 : 20, hung = 0, failed = 0;
	forks = fork_children(forks, exec_pool_child, &hung, &failed);
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	print_message("%d forks: %d children hung, %d failed\n", forks, hung,
		      failed);
	assert_int_equal(hung, 0);
	assert_int_equal(failed, 0);
}

/*
 * A pool freed by its own task leaves its threads to be joined later
 * (src/thread_pool/stack.c), when a thread starts or the process exits:
 * a fork child inherited that list and called pthread_tryjoin_np on the
 * parent's threads, which do not exist in the child (glibc read its copy
 * of their descriptors; one that had exited before the fork it "joined",
 * unlinking it from thread lists the child had reset).  The calls are
 * counted here, while the child's own pool starts a thread (which joins
 * what is to be joined first).
 */
#if CHILD_CAN_START_THREADS
static pid_t counting_in; /* calls from other processes are counted */
static _Atomic int foreign_joins;
static pthread_t foreign_thread;

int pthread_tryjoin_np(pthread_t th, void **ret)
{
	static int (*real)(pthread_t, void **);
	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "pthread_tryjoin_np");
	if (counting_in != 0 && getpid() != counting_in &&
	    pthread_equal(th, foreign_thread))
		atomic_fetch_add(&foreign_joins, 1);
	return real(th, ret);
}

struct self_freer {
	fut_executor *ex;
	int gate;	  /* read: the task ends */
	int freed;	  /* written: the pool is freed */
	pthread_t thread; /* the worker's */
};

/* Frees its own pool (its thread goes to the list to join), says so,
 * then waits for the gate. */
static void frees_its_pool(fut_task *t)
{
	struct self_freer *s = fut_task_arg(t);
	s->thread = pthread_self();
	fut_executor_free(s->ex);
	char c = 'f';
	if (write(s->freed, &c, 1) != 1)
		abort();
	ssize_t r;
	do
		r = read(s->gate, &c, 1);
	while (r < 0 && errno == EINTR);
	fut_task_return(t, NULL);
}

static void plus_one(fut_task *t)
{
	fut_task_return(t, (void *)((uintptr_t)fut_task_arg(t) + 1));
}

static char own_pool_child(void)
{
	fut_executor *ex = NULL;
	if (fut_thread_pool_new(&ex, NULL) != FUT_OK)
		return 'n';
	fut_future *f = NULL;
	void *v = NULL;
	bool ok = fut_submit(ex, plus_one, (void *)1, &f) == FUT_OK &&
		  fut_result(f, 10.0, &v) == FUT_OK && (uintptr_t)v == 2;
	fut_release(f);
	fut_executor_free(ex);
	return !ok ? 'n' : atomic_load(&foreign_joins) != 0 ? 'j' : 'y';
}
#endif

static void test_a_fork_child_joins_no_thread_of_the_parent(void **state)
{
	(void)state;
#if !CHILD_CAN_START_THREADS
	skip();
#else
	int gate[2], freed[2];
	assert_int_equal(pipe(gate), 0);
	assert_int_equal(pipe(freed), 0);
	struct self_freer s = { .gate = gate[0], .freed = freed[1] };
	assert_int_equal(fut_thread_pool_new(&s.ex, NULL), FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(s.ex, frees_its_pool, &s, &f), FUT_OK);
	char c;
	assert_int_equal(read(freed[0], &c, 1), 1);
	foreign_thread = s.thread;
	counting_in = getpid();
	int hung = 0, failed = 0;
	/* 'j': it called pthread_tryjoin_np on the parent's worker. */
	(void)fork_children(1, own_pool_child, &hung, &failed);
	counting_in = 0;
	assert_int_equal(write(gate[1], "g", 1), 1);
	assert_int_equal(fut_result(f, 30.0, NULL), FUT_OK);
	fut_release(f);
	for (int i = 0; i < 2; i++) {
		close(gate[i]);
		close(freed[i]);
	}
	assert_int_equal(hung, 0);
	assert_int_equal(failed, 0);
#endif
}

/*
 * An initializer that forks: in the child, the thread that forked is no
 * worker of the pool (docs/api.md), and the inherited futures stay as
 * they were at the fork.  An initializer that failed there broke the
 * parent's pool in the child: the child's copy of the task queued behind
 * it ended FUT_EBROKEN and its done callback ran in the child.  The
 * callback writes the pid it runs in.
 */
#if CHILD_CAN_START_THREADS
struct init_fork {
	int gate;  /* read before the fork */
	pid_t pid; /* the child, in the parent */
};

static void exit_quietly(void)
{
	_exit(0);
}

static int forks_then_fails_in_the_child(void *arg)
{
	struct init_fork *s = arg;
	char c;
	ssize_t r;
	do
		r = read(s->gate, &c, 1);
	while (r < 0 && errno == EINTR);
	pid_t pid = fork();
	if (pid == 0) {
		alarm(20);
		/* The process ends with the thread: LeakSanitizer's report of
		 * what it inherited is skipped. */
		(void)atexit(exit_quietly);
		return -1; /* the child's copy fails; the thread ends */
	}
	s->pid = pid;
	return 0;
}

static void says_its_pid(fut_future *f, void *ud)
{
	(void)f;
	pid_t me = getpid();
	if (write((int)(intptr_t)ud, &me, sizeof(me)) != sizeof(me))
		abort();
}
#endif

static void
test_an_initializer_that_forks_breaks_nothing_in_the_child(void **state)
{
	(void)state;
#if !CHILD_CAN_START_THREADS
	skip();
#else
	int gate[2], pids[2];
	assert_int_equal(pipe(gate), 0);
	assert_int_equal(pipe(pids), 0);
	struct init_fork s = { .gate = gate[0] };
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_thread_pool_new(
			&ex,
			&(fut_thread_pool_opts){
				.max_workers = 1,
				.initializer = forks_then_fails_in_the_child,
				.initarg = &s }),
		FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, plus_one, (void *)1, &f), FUT_OK);
	assert_int_equal(fut_add_done_callback(f, says_its_pid,
					       (void *)(intptr_t)pids[1]),
			 FUT_OK);
	assert_int_equal(write(gate[1], "g", 1), 1);
	void *v = NULL;
	assert_int_equal(fut_result(f, 30.0, &v), FUT_OK);
	assert_int_equal((uintptr_t)v, 2);
	assert_true(s.pid > 0);
	int status = 0;
	while (waitpid(s.pid, &status, 0) < 0 && errno == EINTR)
		;
	/* The worker runs the callback after it woke fut_result: until its
	 * pid is read, our end stays open (a write to it closed aborts). */
	pid_t seen[4];
	ssize_t got = 0, r;
	bool ours = false;
	while (!ours && got < (ssize_t)sizeof(seen)) {
		struct pollfd pfd = { .fd = pids[0], .events = POLLIN };
		assert_int_equal(poll(&pfd, 1, 30000), 1);
		r = read(pids[0], (char *)seen + got, sizeof(seen) - got);
		assert_true(r > 0);
		got += r;
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(pid_t); i++)
			ours = ours || seen[i] == getpid();
	}
	close(pids[1]); /* the child's copy is closed: it exited */
	while (got < (ssize_t)sizeof(seen) &&
	       (r = read(pids[0], (char *)seen + got, sizeof(seen) - got)) > 0)
		got += r;
	int n = (int)(got / (ssize_t)sizeof(pid_t)), in_child = 0;
	for (int i = 0; i < n; i++)
		in_child += seen[i] != getpid();
	print_message("the callback ran %d times, %d in the child\n", n,
		      in_child);
	assert_int_equal(in_child, 0);
	assert_int_equal(n, 1);
	fut_release(f);
	fut_executor_free(ex);
	for (int i = 0; i < 2; i++) {
		close(gate[i]);
		close(pids[i]);
	}
#endif
}

/*
 * A task that waits for two tasks of its own pool (FUT_ALL_COMPLETED)
 * runs the first inline, and that one forks.  In the child the thread
 * is no worker (docs/api.md), but its wait, which goes on for the second
 * task there, had read the worker's wait hooks before the fork: it gave
 * the worker's slot up and started a thread for the parent's pool in the
 * child, where the pool's initializer ran.  The initializer writes the
 * pid it runs in; the child ends, 'E' on the same pipe, at an alarm.
 */
#if CHILD_CAN_START_THREADS
static int inits_pipe = -1;

static int says_where_it_starts(void *arg)
{
	(void)arg;
	pid_t me = getpid();
	if (write(inits_pipe, &me, sizeof(me)) != sizeof(me))
		abort();
	return 0;
}

static void child_alarm(int sig)
{
	(void)sig;
	pid_t end = 0; /* no pid: the child's last word */
	_exit(write(inits_pipe, &end, sizeof(end)) == sizeof(end) ? 0 : 1);
}

/* Run inline by its waiter: forks; the child returns from it at once. */
static void forks_inline(fut_task *t)
{
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGALRM, child_alarm);
		alarm(1);
	}
	fut_task_return(t, (void *)(intptr_t)pid);
}

/* Waits for a task that forks and another, both of its own pool. */
static void waits_for_a_fork(fut_task *t)
{
	fut_executor *ex = fut_task_arg(t);
	fut_future *fs[2] = { NULL, NULL };
	pid_t pid = -1;
	if (fut_submit(ex, forks_inline, NULL, &fs[0]) == FUT_OK &&
	    fut_submit(ex, plus_one, NULL, &fs[1]) == FUT_OK &&
	    fut_wait(fs, 2, FUT_ALL_COMPLETED, FUT_FOREVER) == FUT_OK) {
		void *v = NULL;
		(void)fut_result(fs[0], 0, &v);
		pid = (pid_t)(intptr_t)v;
	}
	fut_release(fs[0]);
	fut_release(fs[1]);
	fut_task_return(t, (void *)(intptr_t)pid);
}
#endif

static void test_a_wait_that_forks_starts_no_thread_in_the_child(void **state)
{
	(void)state;
#if !CHILD_CAN_START_THREADS
	skip();
#else
	int pids[2];
	assert_int_equal(pipe(pids), 0);
	inits_pipe = pids[1];
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(
				 &ex,
				 &(fut_thread_pool_opts){
					 .max_workers = 1,
					 .initializer = says_where_it_starts }),
			 FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, waits_for_a_fork, ex, &f), FUT_OK);
	void *v = NULL;
	assert_int_equal(fut_result(f, 30.0, &v), FUT_OK);
	pid_t child = (pid_t)(intptr_t)v;
	assert_true(child > 0);
	fut_release(f);
	fut_executor_free(ex);
	/* Every pid the initializer wrote, up to the child's last word. */
	int in_parent = 0, in_child = 0;
	for (;;) {
		struct pollfd pf = { .fd = pids[0], .events = POLLIN };
		pid_t who = 0;
		if (poll(&pf, 1, 60000) != 1 ||
		    read(pids[0], &who, sizeof(who)) != sizeof(who)) {
			kill(child, SIGKILL);
			fail_msg("no word from the child");
		}
		if (who == 0)
			break;
		in_parent += who == getpid();
		in_child += who == child;
	}
	int status = 0;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	close(pids[0]);
	close(pids[1]);
	print_message("the initializer ran %d times in the parent, %d in the "
		      "child\n",
		      in_parent, in_child);
	assert_int_equal(in_parent, 1);
	assert_int_equal(in_child, 0);
#endif
}

/*
 * A process-pool task that forks, and whose child returns from it too,
 * as a thread-pool task's may (docs/api.md): the child is no worker.  It
 * went on as one, on the worker's own pipes: it sent a result for the
 * task (the worker's came too, "a result for a task it was not given",
 * and the manager killed the worker, failing the task it ran), and it
 * took tasks sent to the worker.  Rounds of a task that forks and one
 * that does not; the one that forks returns a little after its child.
 */
static void forks_and_returns(fut_task *t)
{
	pid_t pid = fork();
	if (pid > 0) {
		struct timespec ts = { 0, 20 * 1000000 };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	fut_task_return_bytes(t, pid == 0 ? "c" : "w", 1);
}

static void echoes(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	fut_task_return_bytes(t, in, len);
}

static void test_a_process_pool_task_that_forks_fails_no_task(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(
				 &pp,
				 &(fut_process_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	int rounds = under_valgrind() ? 3 : 10, bad = 0;
	for (int i = 0; i < rounds; i++) {
		fut_future *a = NULL, *b = NULL;
		assert_int_equal(fut_submit_bytes(pp, forks_and_returns, NULL,
						  0, &a),
				 FUT_OK);
		assert_int_equal(fut_submit_bytes(pp, echoes, &i, sizeof(i),
						  &b),
				 FUT_OK);
		const void *data = NULL;
		size_t len = 0;
		int ra = fut_result_bytes(a, 60.0, &data, &len);
		bool a_ok = ra == FUT_OK && len == 1 &&
			    memcmp(data, "w", 1) == 0;
		int rb = fut_result_bytes(b, 60.0, &data, &len);
		bool b_ok = rb == FUT_OK && len == sizeof(i) &&
			    memcmp(data, &i, sizeof(i)) == 0;
		if (!a_ok || !b_ok) {
			print_message(
				"round %d: forking task %d%s, next %d: "
				"%s\n",
				i, ra,
				ra == FUT_OK && !a_ok ? " (the child's)" : "",
				rb, rb != FUT_OK ? fut_error_message(b) : "");
			bad++;
		}
		fut_release(a);
		fut_release(b);
	}
	fut_executor_free(pp);
	assert_int_equal(bad, 0);
}

/*
 * The threads of a pool freed by its own task are joined later; once they
 * have exited, a fork joins them first (stack.c, fork_prepare), so that
 * the child does not inherit them unjoined.  ThreadSanitizer, at the
 * child's _exit, reported each such thread as leaked (two a test in CI's
 * log) and changed the child's exit status 0 into 66: that status is
 * what this test reads.  Built without it, the child exits 0 either way.
 */
static _Atomic pid_t freer_tid;

static void frees_its_own_pool(fut_task *t)
{
	atomic_store(&freer_tid, gettid());
	fut_executor_free(fut_task_arg(t));
	fut_task_return(t, NULL);
}

static void test_a_fork_child_inherits_no_exited_thread_unjoined(void **state)
{
	(void)state;
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex, NULL), FUT_OK);
	fut_future *f = NULL;
	assert_int_equal(fut_submit(ex, frees_its_own_pool, ex, &f), FUT_OK);
	assert_int_equal(fut_result(f, 30.0, NULL), FUT_OK);
	fut_release(f);
	/* Until the worker has exited (bounded: it only returns). */
	assert_true(thread_gone(atomic_load(&freer_tid), 30000));
	pid_t pid = fork();
	assert_int_not_equal(pid, -1);
	if (pid == 0)
		_exit(0);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	/* Under valgrind the status is valgrind's: its leak check at the
	 * child's exit counts what the child inherited (--error-exitcode). */
	if (!under_valgrind())
		assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_a_fork_child_joins_no_thread_of_the_parent),
		cmocka_unit_test(
			test_an_initializer_that_forks_breaks_nothing_in_the_child),
		cmocka_unit_test(
			test_a_wait_that_forks_starts_no_thread_in_the_child),
		cmocka_unit_test(
			test_a_process_pool_task_that_forks_fails_no_task),
		cmocka_unit_test(
			test_a_child_forked_while_the_module_table_is_read_gets_a_pool),
		cmocka_unit_test(
			test_a_fork_child_inherits_no_exited_thread_unjoined),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
