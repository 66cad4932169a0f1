/*
 * process_pool/child.h: the contract between the process pool's parent
 * (pool.h's struct ppool, the manager thread) and its children (the fork
 * server, forkserver.c, and the worker loop, child.c).  The children's
 * files include this header, frame.h and wire.h, never pool.h: they see
 * no struct ppool, no pthread, no poll.  Private to the library.
 */
#ifndef FUT_PROCESS_POOL_CHILD_H
#define FUT_PROCESS_POOL_CHILD_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/base.h"
#include "core/names.h"
#include "process_pool/wire.h"

/* Claim words per slot: at most this many tasks are sent to a worker and
 * not answered. */
#define FUT__PP_CLAIMS 4096u

/*
 * One per worker slot, in a MAP_SHARED page made before the fork server:
 * the worker stores the id of each task before it runs it (and, with a
 * task_timeout, the time), so the parent knows which task of a batch was
 * running when the worker died or must be killed; and the id again once
 * the task returned, so that a task still running after its result came
 * back (fut_task_return_bytes sends a large result at once) is seen
 * running.
 */
struct fut__worker_slot {
	_Atomic uint64_t started;
	_Atomic int64_t started_ns;
	_Atomic uint64_t finished;
	/* Bytes the worker has written to its result pipe, raised before
	 * each write: the parent never reads more from an honest worker.
	 * More is a task's own write to the pipe (recv.c). */
	_Atomic uint64_t written;
	/* Bytes the parent has sent on the task socket: in_sending raised
	 * before each send by what it tries to send, in_sent after it by
	 * what went (in_sending then lowered to it).  A worker that has
	 * read in_sent bytes or fewer and finds none waiting knows a task
	 * read them (child.c); one that has read in_sending knows none
	 * could have been. */
	_Atomic uint64_t in_sending;
	_Atomic uint64_t in_sent;
	/* The id of the task the worker blames as it exits for bytes a task
	 * took from its task socket (0: none). */
	_Atomic uint64_t broke;
	/* The memfds of shared results the parent took from the task socket
	 * (shared.c): the worker's unread ones are those it sent less these
	 * (child_in.c, fut__pp_send_back). */
	_Atomic uint64_t back_taken;
	/* The claim words of the tasks sent to the worker, one per task,
	 * at its key (the task record's code) modulo FUT__PP_CLAIMS:
	 * fut__pp_claim_word(key, FUT__PP_SENT) as the parent sends it; the
	 * worker claims it (SENT -> RUN) just before it runs the task and
	 * skips a task it cannot claim; until then the parent may take it
	 * back (SENT -> REVOKED).  One compare-and-swap decides. */
	_Atomic uint32_t claim[FUT__PP_CLAIMS];
};

enum {
	FUT__PP_SENT = 1,
	FUT__PP_RUN = 2,
	FUT__PP_REVOKED = 3,
};

static inline uint32_t fut__pp_claim_word(uint32_t key, uint32_t st)
{
	return key << 2 | st;
}

/* The fork server's view of one slot (its own memory after the fork). */
struct fut__fs_child {
	pid_t pid; /* 0: none */
	uint32_t gen;
};

/* What the fork server gets from the parent (copied by the fork). */
struct fut__forkserver_cfg {
	int (*initializer)(void *initarg);
	void *initarg;
	struct fut__worker_slot *slots; /* shared, nslots */
	struct fut__fs_child *table;	/* nslots, zeroed */
	uint32_t nslots;
	bool track_time; /* write started_ns (task_timeout set) */
	/* The signal mask of the thread that made the pool: the fork server
	 * and the workers start with it, whichever thread forks them (a
	 * restart comes from the manager, which blocks every signal). */
	sigset_t worker_mask;
	/* FUT_START_EXEC: the fork server is a fresh exec of the program
	 * (exec.c), handed slots_fd, a memfd of the slots (the parent's; -1
	 * with fork).  In that server, parent_mods is the parent's module
	 * table: a task's function, an address in the parent, is found
	 * through it by build-id and offset (NULL with fork: it is used as
	 * is). */
	bool exec;
	int slots_fd;
	const struct fut__fn_module *parent_mods;
	size_t nparent_mods;
};

/* ------------------------------------------------------------------ */
/* For the parent                                                      */

/* Closes *fd if open, and marks it closed (-1). */
static inline void fut__pp_close_fd(int *fd)
{
	int old = *fd;
	if (old >= 0) {
		/* -1 first: a fork child of the application taken between
		 * the two would keep the number closed and its orphan pass
		 * close whatever the child opened there (a review,
		 * 2026-12-07). */
		*fd = -1;
		(void)close(old);
	}
}

/*
 * Forks the fork server (forkserver.c).  The child does only
 * async-signal-safe work until it runs its loop (which is
 * async-signal-safe throughout), so this may be called from a
 * multi-threaded process.  *pid gets its pid, *pidfd a pidfd of it (-1
 * where the kernel has none) and *sock the parent's end of a
 * SOCK_SEQPACKET socket (O_CLOEXEC), each as soon as it is made; 0, -1
 * and -1 again when it fails after the fork.  FUT_OK, FUT_ENOMEM,
 * FUT_ESYS (errno set), FUT_EAGAIN (fork failed).
 */
int fut__forkserver_start(const struct fut__forkserver_cfg *cfg, pid_t *pid,
			  int *pidfd, int *sock);

/*
 * Ends a fork server that fut__forkserver_start() started: its socket's
 * end of the connection is shut down, not only closed (a fork child of
 * the application's holds a copy of *sock, and the server would wait for
 * EOF until that child exits), then it is reaped (fut__forkserver_reap).
 * *sock becomes -1.
 */
void fut__forkserver_stop(int *sock, pid_t *pid, int *pidfd);

/* closefds.c: closes every fd >= 3 but keep[0..n) (ascending; async-
 * signal-safe).  fut__pp_sort_fds sorts fds[0..n) ascending and drops the
 * negative ones; how many are left. */
void fut__pp_close_all_but(const int *keep, int n);
int fut__pp_sort_fds(int *fds, int n);

/* Kills (kill_it) and reaps the fork server *pid, through *pidfd (-1:
 * none, the kernel has no pidfds) where there is one: the application
 * may have reaped it (waitpid(-1)), and its pid may be another
 * process's by then.  *pid becomes 0, *pidfd -1. */
void fut__forkserver_reap(pid_t *pid, int *pidfd, bool kill_it);

/* The fork server's loop on sock, in a process that is to become it (a
 * fork of the parent, or exec.c's fresh exec).  Never returns. */
void fut__forkserver_serve(const struct fut__forkserver_cfg *cfg, int sock,
			   pid_t parent) __attribute__((noreturn));

/* exec.c: FUT_START_EXEC.  In the parent, before the fork: what the
 * fresh exec needs (one fut__malloc'd block: [0] the program's path, then
 * its environment, which names sock and parent; NULL: out of memory).  In the forked
 * child: execs the program with it (async-signal-safe), or _exits 127.  In the parent, after the fork:
 * sends cfg and the slots memfd to the new server on sock. */
char **fut__pp_exec_env(int sock, pid_t parent);
void fut__pp_exec_child(char **block, int sock) __attribute__((noreturn));
bool fut__pp_exec_send(const struct fut__forkserver_cfg *cfg, int sock,
		       pid_t parent);
/* Whether this process is a FUT_START_EXEC fork server that is starting:
 * running the program's constructors, where a process pool is refused
 * (Python's "bootstrapping phase" error). */
bool fut__pp_exec_booting(void);

/*
 * Sends the control message c on sock, with the nfds (at most 2) fds of
 * fds as SCM_RIGHTS when nfds is not 0; flags are added to MSG_NOSIGNAL.
 * Retries EINTR; false when the whole message did not go.  Both ends of
 * the fork server's socket use it (async-signal-safe).
 */
bool fut__pp_ctl_send(int sock, const struct fut__wire_ctl *c, const int *fds,
		      size_t nfds, int flags);

/* Test hook, for a task to call in its worker: the next shared result
 * buffer cannot be had (memfd_create fails with err), so the task gets
 * heap memory, sent through the pipe. */
void fut__pp_shared_fail_next(int err);

/* Test hook, for a task to call in its worker: once the task returned
 * and its result is recorded (not yet sent, unless it was the last of
 * its frame), the worker exits (status 0), between two tasks. */
void fut__pp_exit_after_task(void);

/* Puts n fds into m as one SCM_RIGHTS message, in space (len bytes,
 * zeroed here, at least CMSG_SPACE(n * sizeof(int)), aligned for a
 * struct cmsghdr). */
static inline void fut__pp_attach_fds(struct msghdr *m, void *space, size_t len,
				      const int *fds, size_t n)
{
	memset(space, 0, len);
	m->msg_control = space;
	m->msg_controllen = len;
	struct cmsghdr *c = CMSG_FIRSTHDR(m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(c), fds, n * sizeof(int));
}

/* The byte a worker sends each shared result's memfd with, alone, over
 * its task socket (child_in.c); the parent takes it by it (shared.c). */
#define FUT__PP_BACK_BYTE 0

/* The name of a worker's memfd for a shared result (child.c): the fork
 * server finds the parent's mappings of them by it and drops them. */
#define FUT__PP_RESULT_MEMFD "libfuture-result"

/* In the fork server, just forked: unmaps the parent's mappings of
 * shared results (inherit.c).  Best effort: without /proc they stay. */
void fut__pp_drop_results(void);

/* Pipe and socket buffer size asked for each worker channel. */
#define FUT__PP_CHANNEL_BYTES (1u << 20)

/* ------------------------------------------------------------------ */
/* Within the worker (child.c, child_in.c)                             */

/* recvmsg(2) of the task socket into buf, with flags (MSG_DONTWAIT):
 * the memfds that ride with the bytes (shared inputs) are queued, in
 * order. */
ssize_t fut__pp_recv_in(int sock, void *buf, size_t len, int flags);
/* The next queued memfd (the caller's to close), or -1: none, or one the
 * kernel could not give us (no fd free). */
int fut__pp_in_fd_pop(void);
/* A T_SHARED record's input: the next memfd mapped read-only (*len its
 * length), closed; MAP_FAILED with errno set when it cannot be. */
void *fut__pp_map_input(const struct fut__wire_rec *r, size_t *len);
/* Sends the memfd fd of a shared result over the task socket (slot:
 * the worker's); flush(ctx) sends the results waiting, before it waits
 * for room.  False: the parent is gone.  Exits (123) when a task's
 * bytes left no room. */
bool fut__pp_send_back(struct fut__worker_slot *slot, int sock, int fd,
		       void (*flush)(void *), void *ctx);

/* ------------------------------------------------------------------ */
/* Between the fork server and the worker it forks                     */

/* The worker's life (child.c), in the process the fork server forked for
 * slot: in is its task socket, out its result pipe.  Never returns. */
void fut__pp_child_main(const struct fut__forkserver_cfg *cfg,
			struct fut__worker_slot *slot, int in, int out)
	__attribute__((noreturn));

#endif /* FUT_PROCESS_POOL_CHILD_H */
