/*
 * child_in.c: a worker's task socket read in, with the memfds of shared
 * inputs that ride on it (the worker's side of "Results and inputs in
 * shared memory", docs/design-process-pool.md).
 *
 * Owns: the queue of memfds that came over the socket and are not yet
 * taken by their records (in order; -1 for one the kernel could not give
 * us), the reads that fill it, and the mapping of a shared input.
 * Threads: the worker process's one thread (a task's own threads never
 * call here).
 * Locks: none.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "process_pool/child.h"
#include "process_pool/wire.h"

/* The memfds of shared inputs that came over the task socket, in order,
 * not yet taken by their records; -1 for one the kernel could not give us
 * (no fd free: MSG_CTRUNC). */
#define IN_FDS 16
static int in_fds[IN_FDS];
static unsigned in_head, in_count;

static void in_fd_push(int mfd)
{
	if (in_count == IN_FDS) {
		/* The parent sends one per frame: cannot happen. */
		if (mfd >= 0)
			(void)close(mfd);
		return;
	}
	in_fds[(in_head + in_count++) % IN_FDS] = mfd;
}

int fut__pp_in_fd_pop(void)
{
	if (in_count == 0)
		return -1;
	int mfd = in_fds[in_head];
	in_head = (in_head + 1) % IN_FDS;
	in_count--;
	return mfd;
}

/* read(2) of the task socket that keeps the memfds riding with the
 * bytes. */
ssize_t fut__pp_recv_in(int sock, void *buf, size_t len, int flags)
{
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(4 * sizeof(int))];
	} u;
	struct iovec iov = { buf, len };
	struct msghdr m = { 0 };
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.space;
	m.msg_controllen = sizeof(u.space);
	ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
	if (n <= 0)
		return n;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL;
	     c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int mfd;
			memcpy(&mfd, CMSG_DATA(c) + i * sizeof(int),
			       sizeof(mfd));
			in_fd_push(mfd);
		}
	}
	if (m.msg_flags & MSG_CTRUNC)
		in_fd_push(-1);
	return n;
}

/* A T_SHARED record's input: its memfd mapped read-only (*len its
 * length), or MAP_FAILED with errno set. */
void *fut__pp_map_input(const struct fut__wire_rec *r, size_t *len)
{
	uint64_t want = fut__wire_get_u64(r->data);
	int mfd = fut__pp_in_fd_pop();
	if (mfd < 0) {
		errno = EMFILE;
		return MAP_FAILED;
	}
	void *map = MAP_FAILED;
	errno = EPROTO;
	if (want != 0 && want <= FUT_MAX_BYTES)
		map = mmap(NULL, (size_t)want, PROT_READ,
			   MAP_SHARED | MAP_POPULATE, mfd, 0);
	int err = errno;
	(void)close(mfd);
	errno = err;
	*len = (size_t)want;
	return map;
}
