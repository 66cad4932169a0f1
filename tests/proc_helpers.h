/*
 * proc_helpers.h: what the process-pool tests read from /proc (shared by
 * test_process_pool.c and, through pp_test.h, test_pp_faults.c and
 * test_pp_alloc.c; the thread-pool tests read threads): this process's
 * fds, threads and children, its fork server, and whether a process or
 * a thread still runs.  Functions are static inline: each file
 * uses some of them.  A /proc that cannot be read gives -1 (counts) or
 * "gone", which the callers' comparisons then fail on.
 */
#ifndef FUT_TEST_PROC_HELPERS_H
#define FUT_TEST_PROC_HELPERS_H

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The ppid and state of process `pid` (a decimal string) from
 * /proc/pid/stat; false if it is gone.  Allocates nothing. */
static inline bool read_stat(const char *pid, int *ppid, char *st)
{
	char path[300], buf[512]; /* a d_name is at most 255 bytes */
	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t got = read(fd, buf, sizeof(buf) - 1);
	(void)close(fd);
	if (got <= 0)
		return false;
	buf[got] = '\0';
	const char *rp = strrchr(buf, ')'); /* "pid (comm) S ppid ..." */
	return rp != NULL && sscanf(rp + 2, "%c %d", st, ppid) == 2;
}

/* True once pid runs no more (gone, or a zombie not yet reaped). */
static inline bool process_gone(pid_t pid)
{
	char id[16];
	int ppid;
	char st;
	snprintf(id, sizeof(id), "%d", (int)pid);
	return !read_stat(id, &ppid, &st) || st == 'Z' || st == 'X';
}

/* Until thread tid of this process has exited (true), or ms milliseconds
 * passed (false): a thread is named by its id, since a count of threads
 * is fooled by another test's thread ending meanwhile. */
static inline bool thread_gone(pid_t tid, int ms)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d", (int)tid);
	for (int i = 0; i < ms && access(path, F_OK) == 0; i++)
		usleep(1000);
	return access(path, F_OK) != 0;
}

/* Threads of this process (. and .. included). */
static inline int count_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		return -1;
	int n = 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* Open fds of this process (the directory's own fd, . and .. included). */
static inline int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return -1;
	int n = 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/*
 * Calls fn(pid, state, ctx) for each child of this process, zombies
 * included, and returns how many there are.  Allocates nothing
 * (getdents64 and open/read into buffers on the stack): tests poll for
 * children while a manager thread forks a new fork server, and under ASan
 * a fork while this thread is inside malloc would hand the new fork
 * server's workers the allocator's lock held (see tests/stress/stress.c).
 */
static inline int each_child(void (*fn)(pid_t pid, char st, void *ctx),
			     void *ctx)
{
	int dir = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return -1;
	int n = 0;
	pid_t me = getpid();
	char ents[8192];
	for (;;) {
		long got = syscall(SYS_getdents64, dir, ents, sizeof(ents));
		if (got <= 0)
			break;
		for (long off = 0; off < got;) {
			struct dirent64 *e = (struct dirent64 *)(ents + off);
			off += e->d_reclen;
			int ppid = 0;
			char st = 0;
			if (e->d_name[0] < '0' || e->d_name[0] > '9' ||
			    !read_stat(e->d_name, &ppid, &st) || ppid != me)
				continue;
			n++;
			if (fn != NULL)
				fn((pid_t)atoi(e->d_name), st, ctx);
		}
	}
	(void)close(dir);
	return n;
}

static inline void kill_if_live(pid_t pid, char st, void *ctx)
{
	(void)ctx;
	if (st != 'Z')
		(void)kill(pid, SIGKILL);
}

/* Children of this process, zombies included; with kill_live, SIGKILLs
 * every one that is not a zombie yet (the fork server is a pool's one
 * child: its workers are its own children). */
static inline int children(bool kill_live)
{
	return each_child(kill_live ? kill_if_live : NULL, NULL);
}

static inline int count_children(void)
{
	return children(false);
}

static inline void note_live(pid_t pid, char st, void *ctx)
{
	if (st != 'Z')
		*(pid_t *)ctx = pid;
}

/* This process's live child (the fork server of the one pool there is),
 * 0: none. */
static inline pid_t live_child(void)
{
	pid_t found = 0;
	(void)each_child(note_live, &found);
	return found;
}

#endif /* FUT_TEST_PROC_HELPERS_H */
