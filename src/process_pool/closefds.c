/*
 * closefds.c: closing every fd of a process but a few, for the fork
 * server and each worker it forks (forkserver.c): close_range(2) where
 * there is one, else the fds /proc lists, else every number up to the
 * fd limit.
 * Owns: nothing.  Async-signal-safe throughout (no allocation: the
 * listing reads into the stack).
 * Threads: the fork server's, and a new worker's before its loop.
 * Locks: none.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "process_pool/child.h"

/* Closes the fds in [lo, hi] that /proc/self/fd lists (getdents64 into
 * a buffer on the stack: no allocation); false if it cannot be read. */
static bool close_listed(unsigned lo, unsigned hi)
{
	int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return false;
	_Alignas(8) char buf[4096];
	long n;
	while ((n = syscall(SYS_getdents64, dir, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			/* struct linux_dirent64: ino (8), off (8),
			 * reclen (2), type (1), then the name. */
			unsigned short reclen;
			memcpy(&reclen, buf + off + 16, sizeof(reclen));
			const char *name = buf + off + 19;
			off += reclen;
			unsigned fd = 0;
			bool digits = *name != '\0';
			for (const char *c = name; *c != '\0' && digits; c++) {
				digits = *c >= '0' && *c <= '9' &&
					 fd < 429496729u;
				fd = fd * 10 + (unsigned)(*c - '0');
			}
			if (digits && fd >= lo && fd <= hi && (int)fd != dir)
				(void)close((int)fd);
		}
	}
	(void)close(dir);
	return n == 0;
}

static void close_span(unsigned lo, unsigned hi)
{
	if (lo > hi)
		return;
#ifdef SYS_close_range
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
#endif
	/* No close_range (before Linux 5.9, or a seccomp filter): the fds
	 * /proc lists, whatever their numbers (found by review,
	 * 2026-12-07: one above the limit's cap stayed open in every
	 * worker); without /proc, every number up to the limit. */
	if (close_listed(lo, hi))
		return;
	struct rlimit rl;
	unsigned max = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < max)
		max = (unsigned)rl.rlim_cur;
	if (max == 0)
		return;
	if (hi >= max)
		hi = max - 1;
	for (unsigned fd = lo; fd <= hi && fd >= lo; fd++)
		(void)close((int)fd);
}

/* Sorts fds[0..n) ascending and drops the negative ones (not open);
 * how many are left. */
int fut__pp_sort_fds(int *fds, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && fds[j] < fds[j - 1]; j--) {
			int t = fds[j];
			fds[j] = fds[j - 1];
			fds[j - 1] = t;
		}
	int lo = 0;
	while (lo < n && fds[lo] < 0)
		lo++;
	for (int i = lo; i < n; i++)
		fds[i - lo] = fds[i];
	return n - lo;
}

/* Closes every fd >= 3 but keep[0..n) (ascending). */
void fut__pp_close_all_but(const int *keep, int n)
{
	unsigned lo = 3;
	for (int i = 0; i < n; i++) {
		if (keep[i] < 3)
			continue;
		if ((unsigned)keep[i] > lo)
			close_span(lo, (unsigned)keep[i] - 1);
		lo = (unsigned)keep[i] + 1;
	}
	close_span(lo, ~0u);
}
