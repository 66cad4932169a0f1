/*
 * test_pp_socket.c: a process-pool task that reads from or writes to its
 * worker's task socket (it finds the fd: the one socket a worker has).
 *
 * A task that read the next frame of tasks off the socket left its
 * worker waiting for ever for bytes that never came: the stolen tasks'
 * futures, and the thief's, never ended.  Now the parent counts in the
 * worker's slot the bytes it sent; a worker that finds none waiting
 * when the count says some are knows a task took them, exits, and
 * blames its last task, whose result it held back (FUT_ECRASHED); the
 * stolen tasks run again.
 *
 * A byte a task wrote to the socket was read by the parent, later, as
 * the one that carries a shared result's memfd: an innocent later task's
 * shared result failed FUT_ESYS ("cannot take in the task's result
 * (shared memory): Protocol error") and its worker was killed.  Now the
 * parent skips the bytes in front of the memfd (the worker sends each
 * memfd with one byte, never bytes without one), the result is good, and
 * the worker is replaced.
 *
 * A task that filled the socket left the worker waiting for ever for
 * room to send the next shared result's memfd.  Now the worker sends it
 * without waiting, and exits when the room went to a task's bytes.
 *
 * A message a task sent on the socket with several fds (SCM_RIGHTS) was
 * read by the parent into room for one: with 2 fds both were installed
 * and never closed, and the byte taken as foreign; with 3 or more the
 * task failed FUT_ESYS ("Too many open files"), two fds leaked, and the
 * worker's own memfd stayed on the socket, so that every later shared
 * result of that worker was the one before it (FUT_OK, another task's
 * bytes).  One fd that is not a memfd the worker sealed, or that came
 * with another byte than the worker's, was taken as the memfd.  Now
 * every fd that came is closed but the worker's, and such a message is
 * foreign: skipped, the worker replaced.
 *
 * One worker, so that every task goes to the same one.  Waits have
 * timeouts only to fail a hang.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "proc_helpers.h"

/* Only a hang gets here. */
#define HANG_GUARD 60.0
/* A shared result: from 256 KiB (fut_task_result_buffer). */
#define SHARED_LEN ((size_t)512 << 10)

/* Shared with the workers (MAP_SHARED, made before the pools). */
struct board {
	_Atomic int running; /* the thief is in its task */
	_Atomic long stolen; /* the bytes it read off the socket */
};
static struct board *board;

/* The worker's task socket: its only socket. */
static int find_socket(void)
{
	for (int fd = 3; fd < 256; fd++) {
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
			return fd;
	}
	return -1;
}

static void square_task(fut_task *t)
{
	uint64_t v;
	memcpy(&v, fut_task_input(t, NULL), sizeof(v));
	v *= v;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* Waits (10 s at most) for bytes on the socket, the next frame sent to
 * its worker, and reads them all. */
static void thief_task(fut_task *t)
{
	unsigned char b[4096];
	int sock = find_socket();
	atomic_store(&board->running, 1);
	struct pollfd pfd = { sock, POLLIN, 0 };
	long n = 0;
	if (sock >= 0 && poll(&pfd, 1, 10000) == 1)
		n = (long)recv(sock, b, sizeof(b), MSG_DONTWAIT);
	atomic_store(&board->stolen, n);
	uint64_t v = 7;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* Writes a byte to the socket, then returns as usual. */
static void scribbler_task(fut_task *t)
{
	int sock = find_socket();
	(void)!write(sock, "x", 1);
	uint64_t v = 7;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* Fills the socket (as much as it takes without waiting), then
 * returns as usual. */
static void filler_task(fut_task *t)
{
	static char junk[65536];
	int sock = find_socket();
	while (send(sock, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
	uint64_t v = 7;
	(void)fut_task_return_bytes(t, &v, sizeof(v));
}

/* The mailer's message: how many fds, of what, with which byte. */
enum {
	MAIL_NULL,
	MAIL_FORGED
};
#define MAIL_FDS_MAX 40

/* A memfd as the worker's: SHARED_LEN bytes of 0xEE, sealed against
 * shrinking and growing. */
static int forged_memfd(void)
{
	static unsigned char b[SHARED_LEN];
	int fd = memfd_create("forged", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	memset(b, 0xEE, sizeof(b));
	if (fd >= 0 &&
	    (write(fd, b, sizeof(b)) != (ssize_t)sizeof(b) ||
	     fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)) {
		(void)close(fd);
		fd = -1;
	}
	return fd;
}

/* Sends the message its input names on the socket (the byte, with nfds
 * copies of an fd: /dev/null or a forged memfd), then returns a shared
 * result of 0x11. */
static void mailer_task(fut_task *t)
{
	uint64_t v;
	memcpy(&v, fut_task_input(t, NULL), sizeof(v));
	unsigned nfds = (unsigned)(v & 0xFF);
	unsigned char byte = (unsigned char)(v >> 8);
	int fd = (v >> 16) == MAIL_FORGED ? forged_memfd() :
					    open("/dev/null", O_RDONLY);
	int fds[MAIL_FDS_MAX];
	for (unsigned i = 0; i < nfds && i < MAIL_FDS_MAX; i++)
		fds[i] = fd;
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(fds))];
	} u;
	memset(&u, 0, sizeof(u));
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { 0 };
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.space;
	m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	if (fd >= 0)
		(void)sendmsg(find_socket(), &m, MSG_NOSIGNAL);
	if (fd >= 0)
		(void)close(fd);
	void *p = fut_task_result_buffer(t, SHARED_LEN);
	if (p != NULL)
		memset(p, 0x11, SHARED_LEN);
}

/* An innocent task with a shared result: SHARED_LEN bytes of its
 * input's low byte. */
static void shared_task(fut_task *t)
{
	unsigned char c = *(const unsigned char *)fut_task_input(t, NULL);
	void *p = fut_task_result_buffer(t, SHARED_LEN);
	if (p != NULL)
		memset(p, c, SHARED_LEN);
}

static fut_future *submit(fut_executor *ex, fut_fn fn, uint64_t v)
{
	fut_future *f = NULL;
	assert_int_equal(fut_submit_bytes(ex, fn, &v, sizeof(v), &f), FUT_OK);
	return f;
}

static void wait_done(fut_future *f, const char *what)
{
	int rc = fut_wait(&f, 1, FUT_ALL_COMPLETED, HANG_GUARD);
	if (rc != FUT_OK)
		fail_msg("%s: its future never ended (%d)", what, rc);
}

static void expect_square(fut_future *f, uint64_t v, const char *what)
{
	const void *p = NULL;
	size_t len = 0;
	uint64_t got = 0;
	wait_done(f, what);
	if (fut_error(f) != FUT_OK)
		fail_msg("%s: ended %d: %s", what, fut_error(f),
			 fut_error_message(f));
	assert_int_equal(fut_result_bytes(f, 0, &p, &len), FUT_OK);
	assert_int_equal(len, sizeof(got));
	memcpy(&got, p, sizeof(got));
	assert_int_equal(got, v * v);
	fut_release(f);
}

static void expect_shared(fut_future *f, unsigned char c, const char *what)
{
	const void *p = NULL;
	size_t len = 0;
	wait_done(f, what);
	if (fut_error(f) != FUT_OK)
		fail_msg("%s: ended %d: %s", what, fut_error(f),
			 fut_error_message(f));
	assert_int_equal(fut_result_bytes(f, 0, &p, &len), FUT_OK);
	assert_int_equal(len, SHARED_LEN);
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i += 4096)
		assert_int_equal(b[i], c);
	fut_release(f);
}

/* Until the shared word is set (only a hang times out). */
static void await_flag(_Atomic int *flag)
{
	for (long i = 0; i < 600000 && atomic_load(flag) == 0; i++) {
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	assert_int_not_equal(atomic_load(flag), 0);
}

static fut_executor *lone_worker(void)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_process_pool_new(
				 &ex,
				 &(fut_process_pool_opts){ .max_workers = 1 }),
			 FUT_OK);
	return ex;
}

/*
 * The thief runs; then two tasks go to its worker as one frame, behind
 * it (chunk 2: a second frame goes to a busy worker for bulk work, if it
 * has not been silent for 5 ms); the thief reads that frame whole.  The
 * frame may not go behind it in time (a slow machine, valgrind): then
 * nothing was stolen, and it is tried again, on a new pool.  True when
 * the thief stole.
 */
static bool steal_once(void)
{
	atomic_store(&board->running, 0);
	atomic_store(&board->stolen, 0);
	fut_executor *ex = NULL;
	assert_int_equal(
		fut_process_pool_new(&ex,
				     &(fut_process_pool_opts){ .max_workers = 1,
							       .chunk = 2 }),
		FUT_OK);
	expect_square(submit(ex, square_task, 2), 2, "the first task");
	fut_future *thief = submit(ex, thief_task, 0);
	await_flag(&board->running);
	uint64_t in[2] = { 5, 6 };
	fut_future *victims[2] = { NULL, NULL };
	assert_int_equal(fut_submit_many(ex, square_task, in, sizeof(in[0]), 2,
					 victims),
			 FUT_OK);
	wait_done(thief, "the thief");
	for (int i = 0; i < 2; i++)
		expect_square(victims[i], in[i],
			      "a task whose frame was stolen");
	bool stole = atomic_load(&board->stolen) > 0;
	if (stole) {
		/* Its result was held back: the thief is blamed. */
		if (fut_error(thief) != FUT_ECRASHED)
			fail_msg("the thief ended %d: %s", fut_error(thief),
				 fut_error_message(thief));
		assert_non_null(
			strstr(fut_error_message(thief), "task socket"));
	}
	fut_release(thief);
	/* The worker was replaced. */
	expect_square(submit(ex, square_task, 9), 9, "a later task");
	fut_executor_free(ex);
	return stole;
}

static void test_a_task_that_steals_a_frame_hangs_nothing(void **st)
{
	(void)st;
	for (int i = 0; i < 5; i++)
		if (steal_once())
			return;
	skip(); /* the frame never went behind the thief in time */
}

/* The scribbler's byte waits on the socket; an innocent task's shared
 * result comes later.  Before, that one failed FUT_ESYS ("cannot take
 * in the task's result"). */
static void test_a_byte_written_to_the_socket_fails_no_shared_result(void **st)
{
	(void)st;
	fut_executor *ex = lone_worker();
	fut_future *bad = submit(ex, scribbler_task, 0);
	wait_done(bad, "the scribbler");
	fut_release(bad);
	expect_shared(submit(ex, shared_task, 0x5A), 0x5A,
		      "a shared result after the scribbler");
	expect_shared(submit(ex, shared_task, 0x33), 0x33,
		      "the next shared result");
	expect_square(submit(ex, square_task, 3), 3, "a later task");
	fut_executor_free(ex);
}

/* The filler leaves no room on the socket for the memfd of the next
 * shared result. */
static void test_a_socket_filled_by_a_task_hangs_no_shared_result(void **st)
{
	(void)st;
	fut_executor *ex = lone_worker();
	fut_future *bad = submit(ex, filler_task, 0);
	wait_done(bad, "the filler");
	fut_release(bad);
	expect_shared(submit(ex, shared_task, 0x5A), 0x5A,
		      "a shared result after the filler");
	expect_square(submit(ex, square_task, 3), 3, "a later task");
	fut_executor_free(ex);
}

/* One mailer's message: its own shared result and each later one are
 * their own tasks' bytes, and the fds it sent are gone with the pool. */
static void mail_once(unsigned nfds, unsigned char byte, uint64_t what)
{
	int before = count_fds();
	fut_executor *ex = lone_worker();
	char name[80];
	snprintf(name, sizeof(name), "a mailer of %u fd(s), byte 0x%02x%s",
		 nfds, byte, what == MAIL_FORGED ? " (a forged memfd)" : "");
	expect_shared(submit(ex, mailer_task,
			     nfds | (uint64_t)byte << 8 | what << 16),
		      0x11, name);
	expect_shared(submit(ex, shared_task, 0x5A), 0x5A,
		      "a shared result after the mailer");
	expect_shared(submit(ex, shared_task, 0x33), 0x33,
		      "the next shared result");
	expect_square(submit(ex, square_task, 3), 3, "a later task");
	fut_executor_free(ex);
	int after = count_fds();
	if (after != before)
		fail_msg("%s: the caller had %d fds, %d after the pool", name,
			 before, after);
}

/* Before, the fds leaked and (3 or more) the results shifted by one. */
static void test_fds_sent_on_the_socket_leak_and_shift_nothing(void **st)
{
	(void)st;
	/* Whatever a first pool leaves for good is not counted. */
	fut_executor_free(lone_worker());
	mail_once(2, 'x', MAIL_NULL);
	mail_once(3, 'x', MAIL_NULL);
	mail_once(MAIL_FDS_MAX, 'x', MAIL_NULL);
	/* One fd as the worker sends it, but not a sealed memfd. */
	mail_once(1, 0, MAIL_NULL);
	/* A sealed memfd, but not with the worker's byte. */
	mail_once(1, 'x', MAIL_FORGED);
}

int main(void)
{
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	board = mmap(NULL, sizeof(*board), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (board == MAP_FAILED)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_task_that_steals_a_frame_hangs_nothing),
		cmocka_unit_test(
			test_a_byte_written_to_the_socket_fails_no_shared_result),
		cmocka_unit_test(
			test_a_socket_filled_by_a_task_hangs_no_shared_result),
		cmocka_unit_test(
			test_fds_sent_on_the_socket_leak_and_shift_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
