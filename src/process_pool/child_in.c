/*
 * child_in.c: a worker's task socket read in, with the memfds of shared
 * inputs that ride on it (the worker's side of "Results and inputs in
 * shared memory", docs/design-process-pool.md).
 *
 * Owns: the queue of memfds that came over the socket and are not yet
 * taken by their records (in order; -1 for one the kernel could not give
 * us), the reads that fill it, and the mapping of a shared input; and
 * the sends of shared results' memfds back over it.
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
#include <time.h>
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

/* The memfds sent back over the task socket (the slot counts those the
 * parent took, child.h). */
static uint64_t back_sent;
/* No room on the socket with fewer of ours unread than this (a 1 MiB
 * buffer; each costs ~1 KiB of it): the room went to bytes a task
 * wrote there. */
#define BACK_FULL_MIN 16u

/*
 * Sends fd over the task socket with one byte (SCM_RIGHTS); flush(ctx)
 * sends the results waiting.  Bytes a task wrote to the socket, which
 * the parent never reads (it reads the socket only for a shared result's
 * record, shared.c), may leave no room: waiting, the worker would wait
 * for ever.  So it does not wait unless
 * enough of its own memfds are unread to fill the socket, whose records
 * it sends first (the parent takes each as it reads its record); else it
 * exits (123), and its tasks not yet answered run again elsewhere.
 */
bool fut__pp_send_back(struct fut__worker_slot *slot, int sock, int fd,
		       void (*flush)(void *), void *ctx)
{
	unsigned char byte = FUT__PP_BACK_BYTE;
	struct iovec iov = { &byte, 1 };
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = { 0 };
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	fut__pp_attach_fds(&m, u.space, sizeof(u.space), &fd, 1);
	for (;;) {
		ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == 1) {
			back_sent++;
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (back_sent -
				    atomic_load_explicit(&slot->back_taken,
							 memory_order_acquire) <
			    BACK_FULL_MIN)
				_exit(123);
			flush(ctx);
			/* The parent takes ours as it reads their records:
			 * room then, or a look again at what it took. */
			struct timespec ts = { 0, 10000000 };
			(void)nanosleep(&ts, NULL);
			continue;
		}
		return false;
	}
}
