/*
 * forkserver.c: the process pool's fork server.
 *
 * Owns: the fork server process (forked by fut__forkserver_start from the
 * parent) and the forking of every worker process.  The fork server is
 * single-threaded and runs only async-signal-safe calls (poll, recvmsg,
 * fork, waitpid, send, kill, close, fcntl, open, read, munmap,
 * pidfd_open), so it may be forked from a multi-threaded parent: this is
 * how a dead fork server is restarted.
 * It receives SPAWN requests with the worker's two channel fds
 * (SCM_RIGHTS), forks the worker, reports its pid, reaps its children
 * (SIGCHLD through a signalfd) and reports each (pid, wait status).  On
 * EOF from the parent, or once the parent process is gone (a pidfd of it,
 * else a look at getppid() each second), it kills every worker's process
 * group, reaps them and _exits: not when the parent's thread that forked
 * it exits, which PR_SET_PDEATHSIG would take for the parent's death.
 * A worker leads its own process group and dies with the fork server
 * (PR_SET_PDEATHSIG: the server has one thread); its loop is child.c's.
 * The server drops the parent's mappings of shared results it inherits
 * (inherit.c).  Both processes end with _exit: no atexit handler, no
 * stdio flush of the parent's buffers; and both drop (never flush) the
 * stdio buffers they inherit, first thing, so a task that flushes stdout
 * or calls exit cannot print again what the parent had buffered
 * (drop_stdio).
 * Threads: each process here is single-threaded (the parent's thread that
 * calls fut__forkserver_start only forks).
 * Locks: none (the parent's memory is a copy here).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/sync.h"
#include "process_pool/child.h"
#include "process_pool/wire.h"

/* ------------------------------------------------------------------ */
/* Async-signal-safe helpers                                           */

/* Closes the n fds of fds[]. */
static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		(void)close(fds[i]);
}

/* The app's handlers make no sense in our children: back to SIG_DFL
 * (ignored signals stay ignored, as across exec).  Through SIG_IGN, which
 * discards one pending: caught, it was harmless; by default it could
 * kill us as we unblock it (an exec'd program's constructor's SIGPROF). */
static void reset_handlers(void)
{
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sigaction(sig, NULL, &sa) != 0)
			continue;
		if (sa.sa_handler == SIG_IGN && !(sa.sa_flags & SA_SIGINFO))
			continue;
		if (sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO))
			continue;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_IGN;
		(void)sigaction(sig, &sa, NULL);
		sa.sa_handler = SIG_DFL;
		(void)sigaction(sig, &sa, NULL);
	}
}

/* ------------------------------------------------------------------ */
/* The fork server                                                     */

struct server {
	const struct fut__forkserver_cfg *cfg;
	int sock;
	int sigfd;
	pid_t self;
	sigset_t worker_mask;
	/* SIGCHLD as the application left it (SIG_IGN, or SA_NOCLDWAIT):
	 * given back to each worker.  The server itself needs the default,
	 * or the kernel reaps its workers unreported. */
	struct sigaction chld;
};

bool fut__pp_ctl_send(int sock, const struct fut__wire_ctl *c, const int *fds,
		      size_t nfds, int flags)
{
	unsigned char b[FUT__WIRE_CTL_SIZE];
	fut__wire_ctl_put(b, c);
	struct iovec iov = { b, sizeof(b) };
	struct msghdr msg = { 0 };
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(2 * sizeof(int))];
	} u;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (nfds != 0)
		fut__pp_attach_fds(&msg, u.space,
				   CMSG_SPACE(nfds * sizeof(int)), fds, nfds);
	for (;;) {
		ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
		if (n == (ssize_t)sizeof(b))
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		return false;
	}
}

static bool send_ctl(int sock, unsigned type, uint32_t slot, uint32_t gen,
		     pid_t pid, int value)
{
	struct fut__wire_ctl c = { type, slot, gen, pid, value };
	return fut__pp_ctl_send(sock, &c, NULL, 0, 0);
}

/*
 * What the parent had written into stdio's buffers and not yet flushed is
 * the parent's to print: dropped here, so no worker's fflush or exit
 * prints it again (buffered input is the parent's too).  __fpurge takes
 * no lock and allocates nothing.
 */
static void drop_stdio(void)
{
	__fpurge(stdin);
	__fpurge(stdout);
	__fpurge(stderr);
}

/* A worker gets the parent's fd limit of the moment it was asked for,
 * as a fork from the parent would (nofile: that soft limit, 0 unknown),
 * not the fork server's raised one. */
static void become_worker(struct server *s, uint32_t slot, int in, int out,
			  int32_t nofile)
{
	drop_stdio(); /* empty already, unless the server printed */
	(void)setpgid(0, 0);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != s->self)
		_exit(0);
	int keep[2] = { in < out ? in : out, in < out ? out : in };
	/* Closed under the server's limit: without close_range and /proc
	 * the last resort closes up to the limit (found by review,
	 * 2026-12-07: lowered first, it left the server's fds above it). */
	fut__pp_close_all_but(keep, 2);
	struct rlimit rl;
	if (nofile > 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    (rlim_t)nofile <= rl.rlim_max) {
		rl.rlim_cur = (rlim_t)nofile;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	fut__fds_gone();
	(void)sigaction(SIGCHLD, &s->chld, NULL);
	(void)sigprocmask(SIG_SETMASK, &s->worker_mask, NULL);
	fut__pp_child_main(s->cfg, &s->cfg->slots[slot], in, out);
}

/* Kills a worker not reaped yet (so its pid is still its own) and its
 * process group: its task's children die with it.  The worker itself by
 * its pid too: a task may have moved it to another group (setpgid), and
 * the kill of its own group would then find nothing. */
static void kill_worker(pid_t pid)
{
	(void)kill(-pid, SIGKILL);
	(void)kill(pid, SIGKILL);
}

/* One request from the parent; false at EOF or a fatal error. */
static bool serve(struct server *s)
{
	unsigned char b[FUT__WIRE_CTL_SIZE + 1];
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(2 * sizeof(int))];
	} ctl;
	struct iovec iov = { b, sizeof(b) };
	struct msghdr m = { 0 };
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = ctl.space;
	m.msg_controllen = sizeof(ctl.space);
	ssize_t n = recvmsg(s->sock, &m, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return false;
	int fds[2] = { -1, -1 };
	int nfds = 0;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (c != NULL && c->cmsg_level == SOL_SOCKET &&
	    c->cmsg_type == SCM_RIGHTS) {
		nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		if (nfds > 2)
			nfds = 2;
		memcpy(fds, CMSG_DATA(c), (size_t)nfds * sizeof(int));
	}
	struct fut__wire_ctl req;
	if (fut__wire_ctl_get(b, (size_t)n, &req) != FUT_OK) {
		/* Nothing to answer to: the parent never sends this. */
		close_fds(fds, nfds);
		return true;
	}
	if (nfds == 0 && req.type == FUT__WIRE_CTL_KILL) {
		/* Only a child not reaped yet: its pid cannot be reused. */
		if (req.slot < s->cfg->nslots &&
		    s->cfg->table[req.slot].pid == req.pid &&
		    s->cfg->table[req.slot].gen == req.gen)
			kill_worker(req.pid);
		return true;
	}
	if (nfds != 2 || (m.msg_flags & MSG_CTRUNC) ||
	    req.type != FUT__WIRE_CTL_SPAWN || req.slot >= s->cfg->nslots ||
	    s->cfg->table[req.slot].pid != 0) {
		close_fds(fds, nfds);
		/* The kernel drops the fds it cannot install here. */
		int err = (m.msg_flags & MSG_CTRUNC) ? EMFILE : EINVAL;
		return send_ctl(s->sock, FUT__WIRE_CTL_SPAWN_FAILED, req.slot,
				req.gen, 0, err);
	}
	pid_t pid = fork();
	if (pid == 0)
		become_worker(s, req.slot, fds[0], fds[1], req.value);
	int err = errno;
	close_fds(fds, 2);
	if (pid < 0)
		return send_ctl(s->sock, FUT__WIRE_CTL_SPAWN_FAILED, req.slot,
				req.gen, 0, err);
	/* Also here, so that a kill of the group cannot come before the
	 * child's own setpgid. */
	(void)setpgid(pid, pid);
	s->cfg->table[req.slot].pid = pid;
	s->cfg->table[req.slot].gen = req.gen;
	return send_ctl(s->sock, FUT__WIRE_CTL_SPAWNED, req.slot, req.gen, pid,
			0);
}

/* The slot of a worker not reaped yet, or nslots: pid is no worker (a
 * process a program's constructor started, FUT_START_EXEC). */
static uint32_t slot_of(const struct server *s, pid_t pid)
{
	uint32_t i = 0;
	while (i < s->cfg->nslots && s->cfg->table[i].pid != pid)
		i++;
	return i;
}

static bool reap(struct server *s)
{
	struct signalfd_siginfo si;
	bool term = false;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		if (si.ssi_signo == SIGTERM)
			term = true;
	if (term)
		return false; /* told to go */
	for (;;) {
		/* Peek first: while the worker is a zombie its pid (and so its
		 * process group id) cannot be reused, so the group kill hits
		 * only what the task left behind.  Then reap.  Another child
		 * (started by a program's constructor, FUT_START_EXEC) is
		 * reaped unreported, its group left alone. */
		siginfo_t si_w;
		memset(&si_w, 0, sizeof(si_w));
		if (waitid(P_ALL, 0, &si_w, WEXITED | WNOHANG | WNOWAIT) != 0 ||
		    si_w.si_pid <= 0)
			return true;
		uint32_t slot = slot_of(s, si_w.si_pid);
		if (slot < s->cfg->nslots)
			(void)kill(-si_w.si_pid, SIGKILL);
		int status;
		pid_t pid = waitpid(si_w.si_pid, &status, 0);
		if (pid <= 0)
			return true;
		if (slot == s->cfg->nslots)
			continue; /* not a worker: nothing to report */
		s->cfg->table[slot].pid = 0;
		if (!send_ctl(s->sock, FUT__WIRE_CTL_EXITED, slot,
			      s->cfg->table[slot].gen, pid, status))
			return false;
	}
}

/* Kills the workers and reaps them, and only them: with FUT_START_EXEC
 * the program's constructors ran here, and a process one of them started
 * (a crash reporter's helper) may live as long as we do (found by review,
 * 2026-12-07: a wait for every child never returned, nor the parent's
 * fut_executor_free()). */
static void server_exit(struct server *s)
{
	for (uint32_t i = 0; i < s->cfg->nslots; i++)
		if (s->cfg->table[i].pid > 0)
			kill_worker(s->cfg->table[i].pid);
	for (uint32_t i = 0; i < s->cfg->nslots; i++)
		if (s->cfg->table[i].pid > 0)
			while (waitpid(s->cfg->table[i].pid, NULL, 0) < 0 &&
			       errno == EINTR)
				;
	_exit(0);
}

/*
 * fds 0-2 are the application's stdio, or they were free when the pool
 * made its fds (all close-on-exec) and some of those took them: the
 * parent's wake eventfd, our own socket.  Left there, they would reach
 * every worker, and a task's printf would write into them (into our
 * socket: garbage for the manager).  Our socket moves above 2, and every
 * free or close-on-exec fd of 0-2 becomes /dev/null, inheritable (exec
 * would have closed it).  Best effort: without /dev/null or a free fd the
 * fd stays as it was.
 */
static void claim_stdio(struct server *s)
{
	if (s->sock < 3) {
		int moved = fcntl(s->sock, F_DUPFD_CLOEXEC, 3);
		if (moved >= 0) {
			(void)close(s->sock);
			s->sock = moved;
		}
	}
	for (int fd = 0; fd < 3; fd++) {
		int flags = fcntl(fd, F_GETFD);
		if ((flags >= 0 && !(flags & FD_CLOEXEC)) || fd == s->sock)
			continue; /* the application's (or ours, stuck) */
		if (flags >= 0)
			(void)close(fd);
		/* 0..fd-1 are open: the new fd is fd. */
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null == fd)
			(void)fcntl(fd, F_SETFD, 0);
		else if (null >= 0)
			(void)close(null);
	}
}

/*
 * A pidfd of the parent process, polled: readable once its last thread
 * has gone, not when the thread that forked us exits (PR_SET_PDEATHSIG
 * would fire then: a main thread that made the pool and called
 * pthread_exit took every worker down).  -1 where pidfd_open is missing
 * (before Linux 5.3, or filtered out): the loop then looks at getppid()
 * each second.  Opened before the getppid() check, so that it cannot
 * name a new process that took a dead parent's pid; kept above 2, where
 * claim_stdio would take it for a free fd of the workers' stdio.
 */
static int watch_parent(pid_t parent)
{
#ifdef SYS_pidfd_open
	int fd = (int)syscall(SYS_pidfd_open, parent, 0);
	if (fd >= 0 && fd < 3) {
		int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		(void)close(fd);
		fd = moved;
	}
	return fd;
#else
	(void)parent;
	return -1;
#endif
}

static void server_main(struct server *s, pid_t parent)
{
	/* Out of the caller's process group: a ^C meant for the app does not
	 * take the pool down; the server dies on EOF from the parent, or
	 * with it (watch_parent). */
	(void)setpgid(0, 0);
	/* The fds we inherited first (ours only are kept below): forked
	 * from a parent at its fd limit, we had none for the pidfd and the
	 * signalfd, and died at every restart; "the fork server died too
	 * often" (found by a user's trial, 2026-12-07). */
	int own[1] = { s->sock };
	fut__pp_close_all_but(own, 1);
	int pidfd = watch_parent(parent);
	if (getppid() != parent)
		_exit(0);
	reset_handlers();
	(void)sigaction(SIGCHLD, NULL, &s->chld);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	(void)sigaction(SIGCHLD, &dfl, NULL);
	/* The pool may have been made under a tight fd limit raised since:
	 * the server needs only a few fds, but must be able to take in
	 * each worker's two. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	claim_stdio(s);
	sigset_t m = s->worker_mask, chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigaddset(&chld, SIGTERM);
	sigaddset(&m, SIGCHLD);
	sigaddset(&m, SIGTERM);
	(void)sigprocmask(SIG_SETMASK, &m, NULL);
	s->sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->sigfd < 0)
		_exit(127);
	int keep[3] = { s->sock, s->sigfd, pidfd };
	fut__pp_close_all_but(keep, fut__pp_sort_fds(keep, 3));
	fut__fds_gone();
	fut__pp_drop_results();
	s->self = getpid();
	for (;;) {
		struct pollfd p[3] = { { s->sock, POLLIN, 0 },
				       { s->sigfd, POLLIN, 0 },
				       { pidfd, POLLIN, 0 } };
		int n = poll(p, 3, pidfd >= 0 ? -1 : 1000);
		if (n < 0 && errno != EINTR)
			break;
		if (p[2].revents || (pidfd < 0 && getppid() != parent))
			break; /* the parent process is gone */
		if (n <= 0)
			continue;
		if (p[1].revents && !reap(s))
			break;
		if (p[0].revents && !serve(s))
			break;
	}
	server_exit(s);
}

void fut__forkserver_serve(const struct fut__forkserver_cfg *cfg, int sock,
			   pid_t parent)
{
	struct server s = { 0 };
	s.cfg = cfg;
	s.sock = sock;
	s.worker_mask = cfg->worker_mask;
	server_main(&s, parent);
	_exit(0); /* server_main does not return */
}

int fut__forkserver_start(const struct fut__forkserver_cfg *cfg, pid_t *pid,
			  int *pidfd, int *sock)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return FUT_ESYS;
	struct server s = { 0 };
	s.cfg = cfg;
	s.sock = sv[1];
	s.worker_mask = cfg->worker_mask;
	/* No handler of the app may run in the child before it resets them:
	 * block everything across the fork. */
	sigset_t all, own;
	sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &own) != 0) {
		(void)close(sv[0]);
		(void)close(sv[1]);
		return FUT_ESYS;
	}
	pid_t parent = getpid();
	char **env = cfg->exec ? fut__pp_exec_env(sv[1], parent) : NULL;
	if (cfg->exec && env == NULL) {
		(void)pthread_sigmask(SIG_SETMASK, &own, NULL);
		(void)close(sv[0]);
		(void)close(sv[1]);
		return FUT_ENOMEM;
	}
	pid_t child = fork();
	if (child == 0) {
		drop_stdio();
		/* An allocation failure a test armed in the parent is the
		 * parent's: no worker may inherit it. */
		(void)fut__alloc_fail_nth(0);
		(void)close(sv[0]);
		if (cfg->exec) {
			/* The program starts as any would, under the caller's
			 * mask (its constructors run, and a process one starts
			 * inherits it: found by review, 2026-12-07, all was
			 * blocked), no handler of the app's left to run. */
			reset_handlers();
			(void)sigprocmask(SIG_SETMASK, &cfg->worker_mask, NULL);
			fut__pp_exec_child(env, sv[1]);
		}
		server_main(&s, parent);
	}
	int err = errno;
	fut__free(env);
	(void)pthread_sigmask(SIG_SETMASK, &own, NULL);
	(void)close(sv[1]);
	if (child < 0) {
		(void)close(sv[0]);
		errno = err;
		return FUT_EAGAIN;
	}
	/* Stored at once: a fork of the application's taken from here on
	 * finds them in the pool, whose orphan pass closes them (the pidfd
	 * sat in a local until the end, after the exec's message: found by
	 * review, 2026-12-07). */
	*pid = child;
	*sock = sv[0];
	*pidfd = -1;
#ifdef SYS_pidfd_open
	/* Our child, not reaped yet: the pid is still its.  Close-on-exec
	 * (pidfd_open's own).  Not tried again where the kernel (or
	 * valgrind 3.19) has none. */
	static _Atomic bool no_pidfd;
	if (!atomic_load_explicit(&no_pidfd, memory_order_relaxed)) {
		*pidfd = (int)syscall(SYS_pidfd_open, child, 0);
		if (*pidfd < 0 && errno == ENOSYS)
			atomic_store_explicit(&no_pidfd, true,
					      memory_order_relaxed);
		if (*pidfd < 0)
			*pidfd = -1;
	}
#endif
	if (cfg->exec && !fut__pp_exec_send(cfg, *sock, parent)) {
		/* It waits for its configuration: EOF ends it. */
		err = errno;
		fut__forkserver_stop(sock, pid, pidfd);
		errno = err;
		return err == ENOMEM ? FUT_ENOMEM : FUT_ESYS;
	}
	return FUT_OK;
}

void fut__forkserver_stop(int *sock, pid_t *pid, int *pidfd)
{
	/* Found by review, 2026-12-07: with only a close, the program's
	 * fork child (a helper that does not exec) kept the server, and
	 * fut_executor_free() waited for that child to exit. */
	(void)shutdown(*sock, SHUT_RDWR);
	fut__pp_close_fd(sock); /* -1 first (a review, 2026-12-07) */
	fut__forkserver_reap(pid, pidfd, false);
}

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* A signal through a pidfd: 0, or -1 with errno (ESRCH: reaped). */
static int pidfd_signal(int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
#else
	(void)pidfd;
	(void)sig;
	errno = ENOSYS;
	return -1;
#endif
}

void fut__forkserver_reap(pid_t *pid, int *pidfd, bool kill_it)
{
	bool by_pid = *pidfd < 0;
	if (!by_pid) {
		/* Its pidfd says whether it was reaped (ESRCH): until
		 * then its pid is its own. */
		bool gone = false;
		if (kill_it && pidfd_signal(*pidfd, SIGKILL) != 0) {
			gone = errno == ESRCH;
			if (!gone) /* no pidfd signals (a seccomp filter) */
				(void)kill(*pid, SIGKILL);
		}
		siginfo_t si;
		int r = 0;
		if (!gone)
			do
				r = waitid(P_PIDFD, (id_t)*pidfd, &si, WEXITED);
			while (r < 0 && errno == EINTR);
		/* No waitid on a pidfd (Linux 5.3): by the pid, while the
		 * pidfd says it is not reaped. */
		by_pid = r < 0 && errno == EINVAL &&
			 pidfd_signal(*pidfd, 0) == 0;
		fut__pp_close_fd(pidfd); /* -1 first (a review, 2026-12-07) */
		kill_it = false;	 /* sent */
	}
	if (by_pid && *pid > 0) {
		if (kill_it)
			(void)kill(*pid, SIGKILL);
		while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	*pid = 0;
}
