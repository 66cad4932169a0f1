/*
 * worker.c: the child side of the process pool: the fork server and the
 * worker loop.
 *
 * Owns: the fork server process (forked by fut__forkserver_start from the
 * parent) and every worker process (forked by the fork server).  The fork
 * server is single-threaded and runs only async-signal-safe calls (poll,
 * recvmsg, fork, waitpid, send, kill, close, fcntl, open), so it may be
 * forked from a multi-threaded parent: this is how a dead fork server is
 * restarted.  It receives SPAWN requests with the worker's two channel fds
 * (SCM_RIGHTS), forks the worker, reports its pid, reaps its children
 * (SIGCHLD through a signalfd) and reports each (pid, wait status).  On
 * EOF from the parent it kills every worker's process group, reaps them
 * and _exits.
 * A worker leads its own process group, dies with the fork server
 * (PR_SET_PDEATHSIG) and on EOF of its task channel, runs the initializer,
 * says hello, then loops: read a frame of tasks, run each (storing its id
 * in the shared slot first), send the results batched per frame.  Shared
 * memory both ways: the memfds of large inputs ride in on the task socket
 * (mapped for the task), and a large result buffer is a memfd sent back
 * over the same socket.  Both
 * processes end with _exit: no atexit handler, no stdio flush of the
 * parent's buffers.
 * Threads: each process here is single-threaded.
 * Locks: none (nothing is shared but the slot word the worker writes and
 * the parent reads).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"
#include "process_pool/wire.h"

#define STAGE_BYTES (64u * 1024u)
#define FLUSH_BYTES (64u * 1024u)
#define DIRECT_MIN (16u * 1024u)

/* ------------------------------------------------------------------ */
/* Async-signal-safe helpers                                           */

static void close_span(unsigned lo, unsigned hi)
{
	if (lo > hi)
		return;
#ifdef SYS_close_range
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
#endif
	struct rlimit rl;
	unsigned max = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < max)
		max = (unsigned)rl.rlim_cur;
	if (hi >= max)
		hi = max - 1;
	for (unsigned fd = lo; fd <= hi && fd >= lo; fd++)
		(void)close((int)fd);
}

/* Closes the n fds of fds[]. */
static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		(void)close(fds[i]);
}

/* Closes every fd >= 3 but keep[0..n) (ascending). */
static void close_all_but(const int *keep, int n)
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

/* The app's handlers make no sense in our children: back to SIG_DFL
 * (ignored signals stay ignored, as across exec). */
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
		sa.sa_handler = SIG_DFL;
		(void)sigaction(sig, &sa, NULL);
	}
}

static bool write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* The worker                                                          */

struct out {
	unsigned char *buf; /* FUT__WIRE_FRAME_HDR reserved, then records */
	size_t len, cap;
	uint32_t count;
	int64_t since; /* when the oldest unsent record was added */
};

/* A result waits at most this long for the rest of its frame's. */
#define FLUSH_NS 1000000

static void die(int code)
{
	_exit(code);
}

static void out_reserve(struct out *o, size_t more)
{
	if (o->len + more <= o->cap)
		return;
	size_t cap = o->cap ? o->cap : 4096;
	while (cap < o->len + more)
		cap *= 2;
	unsigned char *b = fut__realloc(o->buf, cap);
	if (b == NULL)
		die(126); /* out of memory: the parent sees a crash */
	o->buf = b;
	o->cap = cap;
}

static void out_flush(struct out *o, int fd)
{
	if (o->count == 0)
		return;
	fut__wire_put_frame(o->buf, FUT__WIRE_RESULTS, o->count,
			    o->len - FUT__WIRE_FRAME_HDR);
	if (!write_all(fd, o->buf, o->len))
		die(0); /* the parent closed our channel: it is gone */
	o->len = FUT__WIRE_FRAME_HDR;
	o->count = 0;
}

static void out_record(struct out *o, int fd, uint64_t id, uint32_t kind,
		       int32_t code, const void *data, size_t len)
{
	if (len > FLUSH_BYTES) {
		/* A large payload goes in a frame of its own, written from
		 * where it lies. */
		unsigned char hdr[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR];
		out_flush(o, fd);
		fut__wire_put_frame(hdr, FUT__WIRE_RESULTS, 1,
				    FUT__WIRE_REC_HDR + (uint64_t)len);
		fut__wire_put_record(hdr + FUT__WIRE_FRAME_HDR, id, 0, kind,
				     code, len);
		if (!write_all(fd, hdr, sizeof(hdr)) ||
		    !write_all(fd, data, len))
			die(0);
		return;
	}
	out_reserve(o, FUT__WIRE_REC_HDR + len);
	if (o->count == 0)
		o->since = fut__now_ns();
	fut__wire_put_record(o->buf + o->len, id, 0, kind, code, len);
	if (len != 0)
		memcpy(o->buf + o->len + FUT__WIRE_REC_HDR, data, len);
	o->len += FUT__WIRE_REC_HDR + len;
	o->count++;
}

/* What the worker is sending to, for a large result the task emits
 * itself (the task's sink). */
struct emit_ctx {
	struct out *out;
	int fd;
	uint64_t id;
};

static void emit_bytes(fut_task *t, const void *data, size_t len, void *ctx)
{
	(void)t;
	struct emit_ctx *e = ctx;
	out_record(e->out, e->fd, e->id, FUT__WIRE_R_BYTES, 0, data, len);
}

/* The worker's task socket: a shared result's memfd goes back over it. */
static int back_sock = -1;
/* Test hook: the errno the next shared buffer fails with (0: none). */
static int shared_fail_errno;

void fut__pp_shared_fail_next(int err)
{
	shared_fail_errno = err;
}

/* The sink's shared(): len bytes of a new memfd, mapped writable, its
 * pages made present in one call: on this VM a page fault costs more than
 * the page (docs/design-process-pool.md), and a memfd whose pages cannot
 * be had fails here, so the task gets heap memory, instead of the
 * worker's dying of SIGBUS as it writes.  Kernels before 5.14 (EINVAL)
 * fault the pages in as they are written. */
static void *shared_map(size_t len, int *fd, void *ctx)
{
	(void)ctx;
	if (shared_fail_errno != 0) {
		errno = shared_fail_errno;
		shared_fail_errno = 0;
		return NULL;
	}
	/* More than the machine has would be populated until the OOM
	 * killer came: let the heap say no instead, as malloc does. */
	struct sysinfo si;
	if (sysinfo(&si) == 0 &&
	    len / si.mem_unit > si.totalram + si.totalswap) {
		errno = ENOMEM;
		return NULL;
	}
	int m = memfd_create("libfuture-result",
			     MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (m < 0)
		return NULL;
	void *p = MAP_FAILED;
	if (ftruncate(m, (off_t)len) == 0)
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
#ifdef MADV_POPULATE_WRITE
	if (p != MAP_FAILED && madvise(p, len, MADV_POPULATE_WRITE) != 0 &&
	    errno != EINVAL) {
		int err = errno;
		(void)munmap(p, len);
		p = MAP_FAILED;
		errno = err;
	}
#endif
	if (p == MAP_FAILED) {
		int err = errno;
		(void)close(m);
		errno = err;
		return NULL;
	}
	*fd = m;
	return p;
}

/* Sends fd over the task socket with one byte (SCM_RIGHTS). */
static bool send_fd(int sock, int fd)
{
	unsigned char byte = 0;
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
		ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
		if (n == 1)
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		return false;
	}
}

/*
 * A result in shared memory: our mapping goes (so that the write seal can
 * be set), the memfd is sealed and sent over the task socket, and the
 * record that names its length follows in the results, in order: the
 * parent takes the fd when it reads the record.  A process the task made
 * that still maps it writable keeps the write seal off; the size seals
 * always hold, and are what the parent checks.
 */
static void send_shared(struct out *o, int fd, uint64_t id, fut_task *t)
{
	(void)munmap(t->value, t->len);
	int mfd = t->buffer_fd;
	int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	if (fcntl(mfd, F_ADD_SEALS, seals | F_SEAL_WRITE) != 0)
		(void)fcntl(mfd, F_ADD_SEALS, seals);
	if (!send_fd(back_sock, mfd))
		die(0); /* the parent closed our channel: it is gone */
	unsigned char len[FUT__WIRE_SHARED_LEN];
	fut__wire_put_u64(len, t->len);
	out_record(o, fd, id, FUT__WIRE_R_SHARED, 0, len, sizeof(len));
	(void)close(mfd);
	t->buffer_fd = -1;
	t->outcome = FUT__OUT_NONE;
	t->value = NULL;
	t->len = 0;
}

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

static int in_fd_pop(void)
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
static ssize_t recv_in(int sock, void *buf, size_t len)
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
	ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
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
static void *map_input(const struct fut__wire_rec *r, size_t *len)
{
	uint64_t want = fut__wire_get_u64(r->data);
	int mfd = in_fd_pop();
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

static void run_one(const struct fut__forkserver_cfg *cfg,
		    struct fut__worker_slot *slot, struct out *o, int fd,
		    struct fut__wire_rec *r)
{
	const void *input = r->data;
	size_t input_len = r->len;
	void *map = MAP_FAILED;
	if (r->kind == FUT__WIRE_T_SHARED) {
		map = map_input(r, &input_len);
		if (map == MAP_FAILED) {
			static const char why[] =
				"cannot map the task's input (shared memory)";
			out_record(o, fd, r->id, FUT__WIRE_R_FAIL, errno, why,
				   sizeof(why) - 1);
			goto done;
		}
		input = map;
	}
	if (cfg->track_time)
		atomic_store_explicit(&slot->started_ns, fut__now_ns(),
				      memory_order_relaxed);
	atomic_store_explicit(&slot->started, r->id, memory_order_release);
	struct fut_task t;
	fut_fn fn = (fut_fn)(uintptr_t)r->fn;
	fut__task_init(&t, fn, NULL, input, input_len, NULL);
	struct emit_ctx ec = { .out = o, .fd = fd, .id = r->id };
	const struct fut__task_sink sink = { .emit = emit_bytes,
					     .shared = shared_map,
					     .ctx = &ec };
	t.sink = &sink;
	fut__task_run(&t);
	atomic_store_explicit(&slot->finished, r->id, memory_order_release);
	switch (t.outcome) {
	case FUT__OUT_SENT:
		break;
	case FUT__OUT_SHARED:
		send_shared(o, fd, r->id, &t);
		break;
	case FUT__OUT_BYTES:
		out_record(o, fd, r->id, FUT__WIRE_R_BYTES, 0, t.value, t.len);
		break;
	case FUT__OUT_VALUE:
		out_record(o, fd, r->id, FUT__WIRE_R_VALUE, 0, NULL, 0);
		break;
	case FUT__OUT_FAIL: {
		size_t mlen = t.message ? strlen(t.message) : 0;
		if (mlen > FUT__WIRE_MAX_MESSAGE)
			mlen = FUT__WIRE_MAX_MESSAGE;
		out_record(o, fd, r->id, FUT__WIRE_R_FAIL, t.task_code,
			   t.message, mlen);
		break;
	}
	default:
		out_record(o, fd, r->id, FUT__WIRE_R_NONE, 0, NULL, 0);
		break;
	}
	fut__task_clear(&t);
	if (map != MAP_FAILED)
		(void)munmap(map, input_len);
done:
	if (r->owned)
		fut__free(r->data);
	/* Results go back per frame of tasks, or sooner when they are big
	 * or old: a result should not wait long behind a slow task (nor die
	 * with the worker if a later task crashes it). */
	if (r->last || o->len >= FLUSH_BYTES ||
	    (o->count != 0 && fut__now_ns() - o->since >= FLUSH_NS))
		out_flush(o, fd);
}

static void say_hello(int fd, int rc)
{
	unsigned char b[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR];
	fut__wire_put_frame(b, FUT__WIRE_HELLO, 1, FUT__WIRE_REC_HDR);
	fut__wire_put_record(
		b + FUT__WIRE_FRAME_HDR, 0, 0,
		rc ? FUT__WIRE_HELLO_INIT_FAILED : FUT__WIRE_HELLO_OK, rc, 0);
	if (!write_all(fd, b, sizeof(b)))
		die(0);
}

static void worker_loop(const struct fut__forkserver_cfg *cfg,
			struct fut__worker_slot *slot, int in, int outfd)
{
	back_sock = in;
	int rc = cfg->initializer ? cfg->initializer(cfg->initarg) : 0;
	say_hello(outfd, rc);
	if (rc != 0)
		die(0);
	unsigned char *stage = fut__malloc(STAGE_BYTES);
	struct out o = { 0 };
	if (stage == NULL)
		die(126);
	out_reserve(&o, FUT__WIRE_FRAME_HDR);
	o.len = FUT__WIRE_FRAME_HDR;
	struct fut__wire_dec d;
	fut__wire_dec_init(&d, FUT__WIRE_TO_WORKER);
	for (;;) {
		struct fut__wire_rec r;
		size_t room;
		void *dst = fut__wire_dec_direct(&d, &room);
		if (dst != NULL && room >= DIRECT_MIN) {
			ssize_t n = recv_in(in, dst, room);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				die(0);
			if (fut__wire_dec_direct_done(&d, (size_t)n, &r) ==
			    FUT__WIRE_RECORD)
				run_one(cfg, slot, &o, outfd, &r);
			continue;
		}
		/* About to wait for input: send what is done first. */
		out_flush(&o, outfd);
		ssize_t n = recv_in(in, stage, STAGE_BYTES);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			out_flush(&o, outfd);
			die(0); /* EOF: retired, or the pool is gone */
		}
		size_t off = 0;
		while (off < (size_t)n) {
			size_t used;
			int st = fut__wire_dec_feed(&d, stage + off,
						    (size_t)n - off, &used, &r);
			off += used;
			if (st == FUT__WIRE_RECORD)
				run_one(cfg, slot, &o, outfd, &r);
			else if (st != FUT__WIRE_MORE)
				die(125); /* malformed task frame */
		}
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
};

static bool send_ctl(int sock, unsigned type, uint32_t slot, uint32_t gen,
		     pid_t pid, int value)
{
	unsigned char b[FUT__WIRE_CTL_SIZE];
	struct fut__wire_ctl c = { type, slot, gen, pid, value };
	fut__wire_ctl_put(b, &c);
	for (;;) {
		ssize_t n = send(sock, b, sizeof(b), MSG_NOSIGNAL);
		if (n == (ssize_t)sizeof(b))
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		return false;
	}
}

/* A worker gets the parent's fd limit of the moment it was asked for,
 * as a fork from the parent would (nofile: that soft limit, 0 unknown),
 * not the fork server's raised one. */
static void become_worker(struct server *s, uint32_t slot, int in, int out,
			  int32_t nofile)
{
	(void)setpgid(0, 0);
	struct rlimit rl;
	if (nofile > 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    (rlim_t)nofile <= rl.rlim_max) {
		rl.rlim_cur = (rlim_t)nofile;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != s->self)
		_exit(0);
	int keep[2] = { in < out ? in : out, in < out ? out : in };
	close_all_but(keep, 2);
	(void)sigprocmask(SIG_SETMASK, &s->worker_mask, NULL);
	worker_loop(s->cfg, &s->cfg->slots[slot], in, out);
	_exit(0);
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
			(void)kill(-req.pid, SIGKILL);
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

static bool reap(struct server *s)
{
	struct signalfd_siginfo si;
	bool term = false;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		if (si.ssi_signo == SIGTERM)
			term = true;
	if (term)
		return false; /* the parent died */
	for (;;) {
		/* Peek first: while the worker is a zombie its pid (and so its
		 * process group id) cannot be reused, so the group kill hits
		 * only what the task left behind.  Then reap. */
		siginfo_t si_w;
		memset(&si_w, 0, sizeof(si_w));
		if (waitid(P_ALL, 0, &si_w, WEXITED | WNOHANG | WNOWAIT) != 0 ||
		    si_w.si_pid <= 0)
			return true;
		(void)kill(-si_w.si_pid, SIGKILL);
		int status;
		pid_t pid = waitpid(si_w.si_pid, &status, 0);
		if (pid <= 0)
			return true;
		uint32_t slot = 0, gen = 0;
		for (uint32_t i = 0; i < s->cfg->nslots; i++) {
			if (s->cfg->table[i].pid == pid) {
				slot = i;
				gen = s->cfg->table[i].gen;
				s->cfg->table[i].pid = 0;
				break;
			}
		}
		if (!send_ctl(s->sock, FUT__WIRE_CTL_EXITED, slot, gen, pid,
			      status))
			return false;
	}
}

static void server_exit(struct server *s)
{
	for (uint32_t i = 0; i < s->cfg->nslots; i++)
		if (s->cfg->table[i].pid > 0)
			(void)kill(-s->cfg->table[i].pid, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
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

static void server_main(struct server *s, pid_t parent, bool pdeathsig)
{
	/* Out of the caller's process group: a ^C meant for the app does not
	 * take the pool down; the server dies on EOF from the parent. */
	(void)setpgid(0, 0);
	/* SIGTERM when the parent dies, read from the signalfd: the server
	 * then kills every worker's group (a task's own children too) and
	 * exits. */
	if (pdeathsig)
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(0);
	reset_handlers();
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
	int keep[2] = { s->sock < s->sigfd ? s->sock : s->sigfd,
			s->sock < s->sigfd ? s->sigfd : s->sock };
	close_all_but(keep, 2);
	s->self = getpid();
	for (;;) {
		struct pollfd p[2] = { { s->sock, POLLIN, 0 },
				       { s->sigfd, POLLIN, 0 } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents && !reap(s))
			break;
		if (p[0].revents && !serve(s))
			break;
	}
	server_exit(s);
}

int fut__forkserver_start(const struct fut__forkserver_cfg *cfg, pid_t *pid,
			  int *sock)
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
	/* PR_SET_PDEATHSIG fires when the forking *thread* exits: only ask
	 * for it when that thread is the main one. */
	bool pdeathsig = (pid_t)syscall(SYS_gettid) == parent;
	pid_t child = fork();
	if (child == 0) {
		/* An allocation failure a test armed in the parent is the
		 * parent's: no worker may inherit it. */
		(void)fut__alloc_fail_nth(0);
		(void)close(sv[0]);
		server_main(&s, parent, pdeathsig);
	}
	int err = errno;
	(void)pthread_sigmask(SIG_SETMASK, &own, NULL);
	(void)close(sv[1]);
	if (child < 0) {
		(void)close(sv[0]);
		errno = err;
		return FUT_EAGAIN;
	}
	*pid = child;
	*sock = sv[0];
	return FUT_OK;
}
