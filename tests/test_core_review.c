/*
 * test_core_review.c: core behaviours a review found broken, pinned.
 *
 * - An as_completed iterator's eventfd in a fork child: the child's copy
 *   of the fd is the parent's eventfd (one counter, shared), so the
 *   child's completions and yields moved the parent's level; a child
 *   that could not make its own got the parent's fd, and one that had
 *   closed the parent's got a closed fd; one whose own file took that
 *   number had it replaced by an eventfd, or closed by the free.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "future.h"
#include "test_env.h"

static fut_future *new_future(void)
{
	fut_future *f = NULL;
	assert_int_equal(fut_future_new(&f), FUT_OK);
	return f;
}

static bool fd_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;
	do
		r = poll(&p, 1, 0);
	while (r < 0 && errno == EINTR);
	return r == 1 && (p.revents & POLLIN);
}

/* Forks; the child runs fn(it, fs) and exits with its code (0: all
 * held).  Returns the child's exit status. */
static int in_child(int (*fn)(fut_as_completed *, fut_future **),
		    fut_as_completed *it, fut_future **fs)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn(it, fs));
	int status = 0;
	pid_t r;
	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	assert_int_equal(r, pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* The child completes an inherited future: its own fd turns readable. */
static int child_completes(fut_as_completed *it, fut_future **fs)
{
	int fd = fut_as_completed_fd(it);
	if (fd < 0 || fd_readable(fd))
		return 1;
	if (fut_set_result(fs[0], NULL) != FUT_OK)
		return 2;
	if (!fd_readable(fd))
		return 3;
	fut_as_completed_free(it); /* fs[0] not taken: left ready */
	return 0;
}

static void test_as_completed_fd_of_a_fork_child_leaves_the_parents_level_alone(
	void **state)
{
	(void)state;
	fut_future *fs[2] = { new_future(), new_future() };
	fut_as_completed *it = NULL;
	assert_int_equal(fut_as_completed_new(&it, fs, 2), FUT_OK);
	int fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	assert_false(fd_readable(fd));

	assert_int_equal(in_child(child_completes, it, fs), 0);

	/* Nothing completed here: next would block, so not readable. */
	fut_future *f = NULL;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_ETIMEDOUT);
	assert_false(fd_readable(fd));
	/* And the parent's own completions still show. */
	assert_int_equal(fut_set_result(fs[1], NULL), FUT_OK);
	assert_true(fd_readable(fd));
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_ptr_equal(f, fs[1]);
	assert_false(fd_readable(fd));
	fut_as_completed_free(it);
	fut_release(fs[0]);
	fut_release(fs[1]);
}

/* The child takes the future the parent has ready. */
static int child_yields(fut_as_completed *it, fut_future **fs)
{
	fut_future *f = NULL;
	if (fut_as_completed_next(it, 0, &f) != FUT_OK || f != fs[0])
		return 1;
	int fd = fut_as_completed_fd(it);
	if (fd < 0 || fd_readable(fd))
		return 2;
	fut_as_completed_free(it);
	return 0;
}

static void
test_as_completed_next_in_a_fork_child_keeps_the_parents_fd_up(void **state)
{
	(void)state;
	fut_future *fs[2] = { new_future(), new_future() };
	fut_as_completed *it = NULL;
	assert_int_equal(fut_as_completed_new(&it, fs, 2), FUT_OK);
	int fd = fut_as_completed_fd(it);
	assert_true(fd >= 0);
	assert_int_equal(fut_set_result(fs[0], NULL), FUT_OK);
	assert_true(fd_readable(fd));

	assert_int_equal(in_child(child_yields, it, fs), 0);

	/* Here fs[0] was not yielded: next would not block, so readable. */
	assert_true(fd_readable(fd));
	fut_future *f = NULL;
	assert_int_equal(fut_as_completed_next(it, 0, &f), FUT_OK);
	assert_ptr_equal(f, fs[0]);
	assert_false(fd_readable(fd));
	fut_as_completed_free(it);
	fut_release(fs[0]);
	fut_release(fs[1]);
}

/* The parent's fd, in the parent (the children close it or make
 * their own). */
static int inherited_fd = -1;

/* In a child: its iterator's fd is its own, not readable until it
 * completes fs[0], then readable.  0, or the step that failed (1, 2). */
static int level_is_its_own(fut_as_completed *it, fut_future **fs)
{
	int fd = fut_as_completed_fd(it);
	if (fd < 0 || fd_readable(fd))
		return 1;
	if (fut_set_result(fs[0], NULL) != FUT_OK || !fd_readable(fd))
		return 2;
	return 0;
}

/* The child has no fd to spare: -1 (EMFILE), not the parent's fd;
 * with one again, an fd of its own at its own level. */
static int child_without_fds(fut_as_completed *it, fut_future **fs)
{
	int lowest = dup(0);
	if (lowest < 0)
		return 1;
	(void)close(lowest);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 2;
	rlim_t soft = rl.rlim_cur;
	rl.rlim_cur = (rlim_t)lowest; /* no new fd can open */
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 3;
	errno = 0;
	if (fut_as_completed_fd(it) != -1 || errno != EMFILE)
		return 4;
	rl.rlim_cur = soft;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 5;
	int rc = level_is_its_own(it, fs);
	return rc == 0 ? 0 : 5 + rc;
}

/* The inherited iterator of one pending future, whose fd the parent made,
 * used by child() (its exit code 0: all held); the parent's level stays
 * as it was. */
static void check_child_of_one(int (*child)(fut_as_completed *, fut_future **))
{
	fut_future *fs[1] = { new_future() };
	fut_as_completed *it = NULL;
	assert_int_equal(fut_as_completed_new(&it, fs, 1), FUT_OK);
	inherited_fd = fut_as_completed_fd(it);
	assert_true(inherited_fd >= 0);
	assert_int_equal(in_child(child, it, fs), 0);
	assert_false(fd_readable(inherited_fd)); /* the child's was its own */
	fut_as_completed_free(it);
	fut_release(fs[0]);
}

/*
 * Before (found by review, 2026-12-07) a child whose eventfd() failed got
 * the parent's fd, whose level is not the child's: its own completion did
 * not show there.  Not under valgrind, whose own fds sit past the limit.
 */
static void
test_as_completed_fd_of_a_child_without_fds_is_minus_one(void **state)
{
	(void)state;
	if (under_valgrind())
		skip();
	check_child_of_one(child_without_fds);
}

/* The child closes the inherited fd first, as a daemon closes every fd
 * after its fork: its next fd (the eventfd it makes) takes that number
 * when no lower one is free. */
static int child_closes_the_fd(fut_as_completed *it, fut_future **fs)
{
	(void)close(inherited_fd);
	return level_is_its_own(it, fs);
}

/*
 * Before (found by review, 2026-12-07) the fresh eventfd, under the
 * closed fd's number, was dup3'd onto itself (EINVAL) and closed: every
 * call returned a closed fd (poll: POLLNVAL).
 */
static void
test_as_completed_fd_of_a_child_that_closed_it_is_its_own(void **state)
{
	(void)state;
	check_child_of_one(child_closes_the_fd);
}

/* The child puts a file of its own under the inherited fd's number (a
 * daemon's log after it closed every fd), then uses the iterator and
 * frees it: the file stays its own. */
static int child_reuses_it_for(int log, fut_as_completed *it, fut_future **fs)
{
	if (log < 0 || dup2(log, inherited_fd) != inherited_fd)
		return 1;
	(void)close(log);
	struct stat before, after;
	if (fstat(inherited_fd, &before) != 0)
		return 2;
	int rc = level_is_its_own(it, fs);
	if (rc != 0)
		return 2 + rc;
	if (fut_as_completed_fd(it) == inherited_fd)
		return 10;
	fut_as_completed_free(it);
	if (fstat(inherited_fd, &after) != 0 || after.st_ino != before.st_ino ||
	    after.st_dev != before.st_dev)
		return 11;
	return 0;
}

static int child_reuses_the_number(fut_as_completed *it, fut_future **fs)
{
	int rc = child_reuses_it_for(memfd_create("log", MFD_CLOEXEC), it, fs);
	if (rc != 0)
		return rc;
	return write(inherited_fd, "x", 1) == 1 ? 0 : 12;
}

/* An epoll fd shares the eventfd's inode (every anonymous one does). */
static int child_reuses_it_for_epoll(fut_as_completed *it, fut_future **fs)
{
	int rc = child_reuses_it_for(epoll_create1(EPOLL_CLOEXEC), it, fs);
	if (rc != 0)
		return rc;
	struct epoll_event ev;
	return epoll_wait(inherited_fd, &ev, 1, 0) == 0 ? 0 : 13;
}

/*
 * Before (found by review, 2026-12-07) the child's file under that
 * number was replaced by the iterator's fresh eventfd (dup3) at its first
 * use, and closed by the free.
 */
static void
test_as_completed_fd_leaves_a_childs_own_file_at_that_number(void **state)
{
	(void)state;
	check_child_of_one(child_reuses_the_number);
}

/* Before (found by a review of the fix above, 2026-12-07), an epoll fd
 * there passed for the iterator's: replaced by the eventfd (epoll_wait:
 * EINVAL), then closed by the free. */
static void
test_as_completed_fd_leaves_a_childs_epoll_at_that_number(void **state)
{
	(void)state;
	check_child_of_one(child_reuses_it_for_epoll);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_as_completed_fd_of_a_fork_child_leaves_the_parents_level_alone),
		cmocka_unit_test(
			test_as_completed_next_in_a_fork_child_keeps_the_parents_fd_up),
		cmocka_unit_test(
			test_as_completed_fd_of_a_child_without_fds_is_minus_one),
		cmocka_unit_test(
			test_as_completed_fd_of_a_child_that_closed_it_is_its_own),
		cmocka_unit_test(
			test_as_completed_fd_leaves_a_childs_own_file_at_that_number),
		cmocka_unit_test(
			test_as_completed_fd_leaves_a_childs_epoll_at_that_number),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
