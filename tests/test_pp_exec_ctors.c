/*
 * test_pp_exec_ctors.c: a FUT_START_EXEC fork server runs the program's
 * own constructors before it serves, as the program's start would before
 * main, whether the library is linked in statically (this build) or as
 * libfuture.so (the same file built as test_pp_exec_ctors_shared, where
 * the loader runs the program's constructors after the library's: none
 * ran there before, found by review, 2026-12-07).  A process pool made by
 * a constructor there is refused with FUT_ESTATE: each such server would
 * start another, for ever (Python's "bootstrapping phase" error).
 */
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "exec_ctors.h"

/* What a C++ program's static initializers would set up. */
static int ctor_value;
static char *ctor_string;
static int ctor_pool_rc = -1;
extern int exec_ctors_late_value; /* set by exec_ctors_late.c's */

#define TRY_POOL_ENV "TEST_PP_EXEC_CTORS_TRY_POOL"
#define HELPER_ENV "TEST_PP_EXEC_CTORS_HELPER"
#define PROF_ENV "TEST_PP_EXEC_CTORS_PROF"

/* Signals 1-63 as bits (bit n-1: signal n). */
static uint64_t mask_bits(void)
{
	sigset_t now;
	uint64_t bits = 0;
	if (pthread_sigmask(SIG_SETMASK, NULL, &now) != 0)
		return ~(uint64_t)0;
	for (int sig = 1; sig < 64; sig++)
		if (sigismember(&now, sig) == 1)
			bits |= (uint64_t)1 << (sig - 1);
	return bits;
}

/* What a crash reporter or a log shipper started by a constructor is: a
 * process that lives as long as its parent (the fork server there). */
static pid_t ctor_helper;
static uint64_t ctor_mask;

static void start_helper(void)
{
	ctor_mask = mask_bits();
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == parent)
			for (;;)
				pause();
		_exit(0);
	}
	ctor_helper = pid > 0 ? pid : 0;
}

/* What a sampling profiler a constructor starts does (gperftools'
 * CPUPROFILE): a SIGPROF handler and an ITIMER_PROF of 1 ms, and a
 * wall-clock one's: SIGALRM and ITIMER_REAL.  It runs until the first
 * SIGPROF came (caught, or pending if blocked). */
static volatile sig_atomic_t prof_ticks;
static int ctor_prof_fired = -1;

static void on_prof(int sig)
{
	if (sig == SIGPROF)
		prof_ticks++;
}

static bool prof_pending(void)
{
	sigset_t p;
	return sigpending(&p) == 0 && sigismember(&p, SIGPROF) == 1;
}

static void start_profiler(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_prof;
	sa.sa_flags = SA_RESTART;
	struct itimerval it = { { 0, 1000 }, { 0, 1000 } };
	if (sigaction(SIGPROF, &sa, NULL) != 0 ||
	    sigaction(SIGALRM, &sa, NULL) != 0 ||
	    setitimer(ITIMER_PROF, &it, NULL) != 0 ||
	    setitimer(ITIMER_REAL, &it, NULL) != 0)
		return;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do { /* cpu time: 10 s at most (a loaded machine) */
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (prof_ticks == 0 && !prof_pending() &&
		 t.tv_sec - t0.tv_sec < 10);
	ctor_prof_fired = prof_ticks != 0 || prof_pending();
}

__attribute__((constructor)) static void program_ctor(void)
{
	ctor_value = 42;
	ctor_string = strdup("made by a constructor");
	if (getenv(HELPER_ENV) != NULL)
		start_helper();
	if (getenv(PROF_ENV) != NULL)
		start_profiler();
	/* Set by the test below before it makes its pool: only the fork
	 * server's start sees it. */
	if (getenv(TRY_POOL_ENV) != NULL) {
		fut_executor *p = NULL;
		ctor_pool_rc = fut_process_pool_new(&p, NULL);
		fut_executor_free(p);
	}
}

__attribute__((destructor)) static void program_dtor(void)
{
	free(ctor_string);
}

static bool a_module_with_constructors_is_ahead(void);

/* What the worker sees, and whether a module with constructors is
 * loaded ahead of libfuture there (valgrind's preload is not: the fork
 * server runs outside it). */
static void report(fut_task *t)
{
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "%d %d %d %d %s",
			 a_module_with_constructors_is_ahead(), ctor_value,
			 exec_ctors_late_value, ctor_pool_rc,
			 ctor_string != NULL ? ctor_string : "(none)");
	fut_task_return_bytes(t, buf, (size_t)n);
}

/* Whether a module with constructors of its own is loaded between the
 * program and libfuture (GCC's sanitizer runtimes, which go first): the
 * loader initialises it after libfuture, and the fork server then runs
 * none of the program's constructors (docs/api.md). */
struct ahead_scan {
	uintptr_t lib; /* an address in libfuture */
	unsigned seen;
	bool ahead;
};

static bool has_ctors(const struct dl_phdr_info *info)
{
	for (int i = 0; i < info->dlpi_phnum; i++) {
		if (info->dlpi_phdr[i].p_type != PT_DYNAMIC)
			continue;
		const ElfW(Dyn) *d = (const ElfW(
			Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
		for (; d->d_tag != DT_NULL; d++)
			if (d->d_tag == DT_INIT ||
			    (d->d_tag == DT_INIT_ARRAYSZ && d->d_un.d_val != 0))
				return true;
	}
	return false;
}

static int scan_ahead(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	struct ahead_scan *a = data;
	bool first = a->seen++ == 0; /* the program */
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD &&
		    a->lib - (info->dlpi_addr + ph->p_vaddr) < ph->p_memsz)
			return 1; /* libfuture's (the program's: static) */
	}
	if (!first && has_ctors(info))
		a->ahead = true;
	return 0;
}

static bool a_module_with_constructors_is_ahead(void)
{
	struct ahead_scan a = { .lib = (uintptr_t)(void *)fut_strerror };
	(void)dl_iterate_phdr(scan_ahead, &a);
	return a.ahead;
}

/* Whether the program's constructors ran in the server; says so when not
 * (a module with constructors is ahead of libfuture: docs/api.md). */
static bool ran_there(bool ran)
{
	if (!ran)
		print_message("none of the program's constructors ran in the "
			      "server (a module is ahead of libfuture)\n");
	return ran;
}

static void test_the_programs_constructors_ran_in_the_server(void **state)
{
	(void)state;
	/* In this process the constructor ran without the variable. */
	assert_int_equal(ctor_value, 42);
	assert_int_equal(exec_ctors_late_value, 42);
	assert_int_equal(ctor_pool_rc, -1);
	fut_executor *pp = exec_pool(TRY_POOL_ENV);
	fut_future *f = NULL;
	size_t len = 0;
	const void *data = run_task(pp, report, &f, &len);
	char want[128];
	if (len > 0 && *(const char *)data == '1') {
		print_message("a module with constructors is loaded ahead of "
			      "libfuture: none of the program's run there\n");
		snprintf(want, sizeof(want), "1 0 0 -1 (none)");
	} else {
		snprintf(want, sizeof(want), "0 42 42 %d made by a constructor",
			 FUT_ESTATE);
	}
	assert_int_equal(len, strlen(want));
	assert_memory_equal(data, want, len);
	fut_release(f);
	fut_executor_free(pp);
}

/* A pool of the usual kind, made by the program itself: not refused. */
static void test_a_pool_outside_a_server_start_is_made(void **state)
{
	(void)state;
	fut_executor *pp = NULL;
	assert_int_equal(fut_process_pool_new(&pp, NULL), FUT_OK);
	fut_executor_free(pp);
}

/* The fork server's pid, its constructor's helper's (0: none ran) and
 * the signal mask the constructor ran under. */
struct helper_seen {
	pid_t server, helper;
	uint64_t mask;
};

static void report_helper(fut_task *t)
{
	struct helper_seen h = { getppid(), ctor_helper, ctor_mask };
	fut_task_return_bytes(t, &h, sizeof(h));
}

static int freed_fd = -1; /* written once the pool is freed */

static void *free_pool(void *arg)
{
	fut_executor_free(arg);
	uint64_t one = 1;
	if (write(freed_fd, &one, sizeof(one)) != sizeof(one))
		abort();
	return NULL;
}

/*
 * A constructor of the program starts a helper process in the fork
 * server: the free still returns (the server reaps its workers only and
 * exits; the helper dies with it).  Before (found by review, 2026-12-07)
 * the server waited for every child of its own, the helper too, and the
 * free for the server, for ever.  The constructor runs under the
 * caller's signal mask, which its helper inherits: it ran with every
 * signal blocked.
 */
static void test_free_returns_beside_a_constructors_helper(void **state)
{
	(void)state;
	fut_executor *pp = exec_pool(HELPER_ENV);
	struct helper_seen h;
	run_for(pp, report_helper, &h, sizeof(h));
	int pfd[2];
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	freed_fd = pfd[1];
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, free_pool, pp), 0);
	struct pollfd p = { pfd[0], POLLIN, 0 };
	int n;
	do
		n = poll(&p, 1, 60000);
	while (n < 0 && errno == EINTR);
	if (n != 1) /* stuck: the server goes, and so the helper */
		(void)kill(h.server, SIGKILL);
	assert_int_equal(pthread_join(t, NULL), 0);
	(void)close(pfd[0]);
	(void)close(pfd[1]);
	assert_int_equal(n, 1);
	if (ran_there(h.helper != 0))
		assert_int_equal(h.mask, mask_bits());
}

/* What the worker sees: whether the constructor's SIGPROF fired there
 * (-1: it did not run), and whether the worker has a timer armed or a
 * handler of SIGPROF or SIGALRM. */
struct prof_seen {
	int fired;
	int armed;
	int caught;
};

static void report_prof(fut_task *t)
{
	/* Past the timers' period: a server they still signal is dead by
	 * then, and its worker with it. */
	struct timespec nap = { 0, 20 * 1000 * 1000 };
	while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
		;
	struct prof_seen p = { ctor_prof_fired, 0, 0 };
	static const int which[] = { ITIMER_PROF, ITIMER_REAL };
	static const int sigs[] = { SIGPROF, SIGALRM };
	for (int i = 0; i < 2; i++) {
		struct itimerval it;
		struct sigaction sa;
		if (getitimer(which[i], &it) != 0 || it.it_value.tv_sec != 0 ||
		    it.it_value.tv_usec != 0)
			p.armed = 1;
		if (sigaction(sigs[i], NULL, &sa) != 0 ||
		    sa.sa_handler != SIG_DFL)
			p.caught = 1;
	}
	fut_task_return_bytes(t, &p, sizeof(p));
}

/*
 * A constructor arms a profiler's ITIMER_PROF with a SIGPROF handler,
 * and an ITIMER_REAL with a SIGALRM one: the fork server serves (its
 * handlers reset, the timers disarmed) while a task sleeps past their
 * period, and the worker has neither.  Before (found by review,
 * 2026-12-07) a signal due killed every server, and the pool broke
 * ("the fork server died too often").
 */
static void test_a_constructors_interval_timer_stops_in_the_server(void **state)
{
	(void)state;
	fut_executor *pp = exec_pool(PROF_ENV);
	struct prof_seen p;
	run_for(pp, report_prof, &p, sizeof(p));
	fut_executor_free(pp);
	if (ran_there(p.fired != -1))
		assert_int_equal(p.fired, 1);
	assert_int_equal(p.armed, 0);
	assert_int_equal(p.caught, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_the_programs_constructors_ran_in_the_server),
		cmocka_unit_test(test_a_pool_outside_a_server_start_is_made),
		cmocka_unit_test(
			test_free_returns_beside_a_constructors_helper),
		cmocka_unit_test(
			test_a_constructors_interval_timer_stops_in_the_server),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
