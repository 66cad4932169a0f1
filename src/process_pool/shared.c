/*
 * shared.c: the process pool's results in shared memory, the caller's
 * side (the worker's is in child.c, the task's buffer in core/task.c).
 *
 * Owns: taking in the memfd a worker sent over its task socket
 * (SCM_RIGHTS) before the R_SHARED record that names its length, checking
 * its seals and size, mapping it read-only and completing the job with a
 * pointer into the mapping; the job block unmaps it when it goes
 * (jobs.c, job_destroy).  The fd is closed once mapped: a result
 * held costs the caller one mapping and no fd.
 * Threads: the manager thread only.
 * Locks: none (the worker's fds are the manager's alone).
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

/* How the caller's mapping of a shared result is made: its pages are
 * populated in one call, cheaper than a fault per page
 * (docs/perf-log.md). */
#ifndef FUT__PP_MAP_FLAGS
#define FUT__PP_MAP_FLAGS MAP_POPULATE
#endif

/* Room for the fds of one message: the worker sends one; more are a
 * task's, and those past this many the kernel closes itself (and sets
 * MSG_CTRUNC). */
#define TAKE_FDS 16

/* How many fds msg brought in; every one is closed but the first, which
 * is left in *first (-1: none came). */
static int fds_in(struct msghdr *msg, int *first)
{
	int k = 0;
	*first = -1;
	char *end = (char *)msg->msg_control + msg->msg_controllen;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL;
	     c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		/* Truncated, cmsg_len may name more than the buffer held. */
		size_t len = c->cmsg_len - CMSG_LEN(0);
		size_t room = (size_t)(end - (char *)CMSG_DATA(c));
		if (len > room)
			len = room;
		for (size_t i = 0; i + sizeof(int) <= len; i += sizeof(int)) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i, sizeof(fd));
			if (k++ == 0)
				*first = fd;
			else
				(void)close(fd);
		}
	}
	return k;
}

/* One more of the worker's memfds taken (the manager alone writes it; the
 * worker reads it, child_in.c). */
static void took_ours(_Atomic uint64_t *taken)
{
	atomic_store_explicit(
		taken, atomic_load_explicit(taken, memory_order_relaxed) + 1,
		memory_order_release);
}

/*
 * The memfd w sent before its R_SHARED record: -1 with errno set
 * (EMFILE: we had no fd free to take it in; EPROTO: none came).
 * The worker sends each memfd alone, with one byte, FUT__PP_BACK_BYTE
 * (child_in.c).  Any other message was written by a task that found the
 * socket: bytes without fds, more than one fd, an fd that is not a
 * memfd, or one that came with another byte.  Its fds are closed, it is
 * skipped (the worker's memfd is behind it), and *foreign is set: the
 * caller replaces the worker.  A read stops after the bytes that carry
 * fds, so the worker's byte is the last of the bytes read with its
 * memfd (foreign bytes without fds in front are read with it, and set
 * *foreign).  A task can still pass for the worker: one message of
 * that byte with one memfd is taken as the worker's.
 */
int fut__pp_take_fd(struct ppool *p, struct pp_worker *w, bool *foreign)
{
	_Atomic uint64_t *taken = &p->slots[w->slot].back_taken;
	int sock = w->task_fd >= 0 ? w->task_fd : w->back_fd;
	unsigned char bytes[256];
	struct iovec iov = { bytes, sizeof(bytes) };
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(TAKE_FDS * sizeof(int))];
	} u;
	for (;;) {
		struct msghdr msg = { 0 };
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = u.space;
		msg.msg_controllen = sizeof(u.space);
		ssize_t n;
		do
			n = recvmsg(sock, &msg,
				    MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		while (n < 0 && errno == EINTR);
		if (n <= 0) {
			errno = EPROTO;
			return -1;
		}
		int fd;
		int k = fds_in(&msg, &fd);
		/* The kernel drops an fd it cannot install (or has no room
		 * for), and says so; it may have installed others. */
		bool cut = (msg.msg_flags & MSG_CTRUNC) != 0;
		bool ours = bytes[n - 1] == FUT__PP_BACK_BYTE;
		if (n > 1)
			*foreign = true;
		if (k == 1 && !cut && ours && fcntl(fd, F_GET_SEALS) >= 0) {
			took_ours(taken);
			return fd;
		}
		if (fd >= 0)
			(void)close(fd);
		if (k == 0 && cut && ours) {
			/* None installed: ours, lost for want of an fd (a
			 * task's lost so cannot be told from it). */
			took_ours(taken);
			errno = EMFILE;
			return -1;
		}
		*foreign = true;
	}
}

/* Maps the result j's worker left in shared memory (len bytes, the memfd
 * fd) read-only, its pages populated in one call, and completes j with a
 * pointer into the mapping, which j's block unmaps when it goes. */
void fut__pp_complete_shared(struct pp_job *j, int fd, uint64_t len)
{
	int seals = fcntl(fd, F_GET_SEALS);
	struct stat st;
	int need = F_SEAL_SHRINK | F_SEAL_GROW;
	if (seals < 0 || (seals & need) != need || fstat(fd, &st) != 0 ||
	    len == 0 || len > FUT_MAX_BYTES || (uint64_t)st.st_size < len) {
		(void)close(fd);
		fut__pp_job_end(j, FUT_ESYS, EPROTO, 0,
				"the worker's shared result is not sealed "
				"to its length");
		return;
	}
	void *map = mmap(NULL, (size_t)len, PROT_READ,
			 MAP_SHARED | FUT__PP_MAP_FLAGS, fd, 0);
	int err = errno;
	(void)close(fd);
	if (map == MAP_FAILED) {
		fut__pp_job_end(j, err == ENOMEM ? FUT_ENOMEM : FUT_ESYS,
				err == ENOMEM ? 0 : err, 0,
				"cannot map the task's result: %s",
				strerror(err));
		return;
	}
	j->shared |= PP_SHARED_RESULT;
	if (fut__future_succeed_borrowed(&j->fut, map, (size_t)len) != FUT_OK) {
		j->shared &= (uint8_t)~PP_SHARED_RESULT;
		(void)munmap(map, (size_t)len);
	}
	fut_release(&j->fut);
}
