/*
 * child.c: the worker process's loop, the child side of the process pool.
 *
 * Owns: a worker's life after the fork server forked it
 * (fut__pp_child_main): it runs the initializer, says hello, then loops:
 * read a frame of tasks, run each (storing its id in the shared slot
 * first), send the results batched per frame.  Shared memory both ways:
 * the memfds of large inputs ride in on the task socket (child_in.c maps
 * them for the task), and a large result buffer is a memfd sent back
 * over the same socket.  It ends with _exit on EOF of its task channel.
 * Threads: the worker process is single-threaded (a task may make
 * threads of its own).
 * Locks: none (nothing is shared but the slot words the worker writes and
 * the parent reads).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/child.h"
#include "process_pool/child_clock.h"
#include "process_pool/frame.h"
#include "process_pool/wire.h"

/* Results are sent once this many bytes of them wait; a larger one goes
 * alone, from where it lies. */
#define FLUSH_BYTES (64u * 1024u)

/* The slot's count of bytes written to the result pipe (child.h). */
static _Atomic uint64_t *written;

/* Writes to the result pipe, the only fd it writes to, each byte counted
 * in the slot before it goes: bytes the parent reads past that count
 * were written by a task, not by us. */
static bool write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	atomic_store_explicit(
		written,
		atomic_load_explicit(written, memory_order_relaxed) + len,
		memory_order_release);
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
/* Results out                                                         */

struct out {
	struct fut__pp_frame f; /* a RESULTS frame, always begun */
	int64_t since;		/* when the oldest unsent record was added */
	int64_t last_ns;	/* how long the last task ran */
	/* When the last task ended, if the worker did nothing slow since
	 * (no write, no read); 0: not known.  A run of tasks reads the
	 * clock at most once a task: each starts when the one before it
	 * ended. */
	int64_t mark;
	struct fut__pp_clock clk; /* child_clock.h */
	/* Bytes read from the task socket (the parent counts what it sent
	 * in the slot, child.h). */
	uint64_t in_read;
	/* The last task run (ran), and the last one whose result waits
	 * here, unsent (suspect, 0: none): the one blamed if bytes sent to
	 * us are found gone (child_read). */
	uint64_t ran, suspect;
};

/* A result waits at most this long for the rest of its frame's. */
#define FLUSH_NS 1000000
/* Results waiting are sent before the next task starts when the last one
 * ran this long: the next may run long too, and a result must not wait
 * behind it (a write costs a few us, a small part of such a task). */
#define FLUSH_BEFORE_NS 50000

static void die(int code)
{
	_exit(code);
}

static void out_begin(struct out *o)
{
	if (!fut__pp_frame_begin(&o->f))
		die(126); /* out of memory: the parent sees a crash */
}

static void out_flush(struct out *o, int fd)
{
	if (o->f.count == 0)
		return;
	(void)fut__pp_frame_end(&o->f, FUT__WIRE_RESULTS);
	if (!write_all(fd, o->f.buf, o->f.len))
		die(0); /* the parent closed our channel: it is gone */
	out_begin(o);
	o->mark = 0;
	o->suspect = 0;
}

/* A record in a frame of its own, written from where its payload lies:
 * no allocation. */
static void out_alone(struct out *o, int fd, uint64_t id, uint32_t kind,
		      int32_t code, const void *data, size_t len)
{
	unsigned char hdr[FUT__PP_FRAME_ONE];
	out_flush(o, fd);
	fut__pp_frame_one(hdr, FUT__WIRE_RESULTS, id, kind, code, len);
	if (!write_all(fd, hdr, sizeof(hdr)) || !write_all(fd, data, len))
		die(0);
	o->suspect = 0;
}

/* A large payload goes alone; so does a record the frame has no memory
 * to grow for (the worker died there, and the task that had returned ran
 * again, with chunk 1 too: found by review, 2026-12-07). */
static void out_record(struct out *o, int fd, uint64_t id, uint32_t kind,
		       int32_t code, const void *data, size_t len)
{
	if (len > FLUSH_BYTES) {
		out_alone(o, fd, id, kind, code, data, len);
		return;
	}
	if (o->f.count == 0)
		o->since = o->mark != 0 ? o->mark : fut__pp_clock_read(&o->clk);
	if (!fut__pp_frame_add(&o->f, id, 0, kind, code, data, len, len)) {
		out_alone(o, fd, id, kind, code, data, len);
		return;
	}
	if (id == o->ran)
		o->suspect = id;
}

/* What the worker is sending to, for a large result the task emits
 * itself (the task's sink). */
struct emit_ctx {
	struct out *out;
	int fd;
	uint64_t id;
};

static bool emit_bytes(fut_task *t, const void *data, size_t len, void *ctx)
{
	(void)t;
	struct emit_ctx *e = ctx;
	out_record(e->out, e->fd, e->id, FUT__WIRE_R_BYTES, 0, data, len);
	return true; /* or the worker died */
}

/* The worker's task socket: a shared result's memfd goes back over it;
 * and its slot. */
static int back_sock = -1;
static struct fut__worker_slot *back_slot;
/* Test hooks: the errno the next shared buffer fails with (0: none);
 * exit after the task that runs (fut__pp_exit_after_task). */
static int shared_fail_errno;
static bool exit_after_task;

void fut__pp_exit_after_task(void)
{
	exit_after_task = true;
}

void fut__pp_shared_fail_next(int err)
{
	shared_fail_errno = err;
}

/* The sink's shared(): len bytes of a new memfd, mapped writable, its
 * pages made present in one call, cheaper than a fault per page
 * (docs/perf-log.md); and a memfd whose pages cannot be had fails here,
 * so the task gets heap memory, instead of the worker's dying of SIGBUS
 * as it writes.  Kernels before 5.14 (EINVAL) fault the pages in as they
 * are written. */
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
	int m = memfd_create(FUT__PP_RESULT_MEMFD,
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

/* fut__pp_send_back's flush: the results waiting, sent. */
struct flush_to {
	struct out *o;
	int fd;
};

static void flush_cb(void *ctx)
{
	struct flush_to *f = ctx;
	out_flush(f->o, f->fd);
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
	struct flush_to ft = { o, fd };
	if (fut__pp_send_back(back_slot, back_sock, mfd, flush_cb, &ft)) {
		unsigned char len[FUT__WIRE_SHARED_LEN];
		fut__wire_put_u64(len, t->len);
		out_record(o, fd, id, FUT__WIRE_R_SHARED, 0, len, sizeof(len));
	} else if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
		die(0); /* the parent closed our channel: it is gone */
	} else {
		/* The fd could not go (ETOOMANYREFS: this user has more fds
		 * in flight than RLIMIT_NOFILE; ENOBUFS, ENOMEM): the bytes
		 * go through the pipe, as a result that had no shared
		 * memory.  Before (found by review, 2026-12-07) the worker
		 * exited, and the task ran again, 4 times. */
		void *copy = mmap(NULL, t->len, PROT_READ, MAP_SHARED, mfd, 0);
		if (copy == MAP_FAILED)
			die(126);
		out_record(o, fd, id, FUT__WIRE_R_BYTES, 0, copy, t->len);
		(void)munmap(copy, t->len);
	}
	(void)close(mfd);
	t->buffer_fd = -1;
	t->outcome = FUT__OUT_NONE;
	t->value = NULL;
	t->len = 0;
}

/* Claims the task of r (its key is the record's code): false when the
 * parent took it back first, and then the task is skipped, its memfd (a
 * shared input's) closed unread. */
static bool claim(struct fut__worker_slot *slot, const struct fut__wire_rec *r)
{
	uint32_t key = (uint32_t)r->code;
	uint32_t want = fut__pp_claim_word(key, FUT__PP_SENT);
	if (atomic_compare_exchange_strong_explicit(
		    &slot->claim[key % FUT__PP_CLAIMS], &want,
		    fut__pp_claim_word(key, FUT__PP_RUN), memory_order_acq_rel,
		    memory_order_acquire))
		return true;
	if (r->kind == FUT__WIRE_T_SHARED) {
		int mfd = fut__pp_in_fd_pop();
		if (mfd >= 0)
			(void)close(mfd);
	}
	return false;
}

/*
 * A frame's results go as its last task returned, but when bytes sent
 * to us wait on the task socket, unread, and this read's bytes are used
 * up: then they go once the next read shows the bytes there (child_read)
 * -- none of this frame's tasks took them -- a moment later, with no
 * task run between.  When the read's bytes are not used up (more), the
 * results go now, unchecked (a check would cost a syscall a frame).
 */
static bool frame_flush_now(struct fut__worker_slot *slot, const struct out *o,
			    const struct fut__wire_rec *r)
{
	return r->more ||
	       o->in_read == atomic_load_explicit(&slot->in_sending,
						  memory_order_acquire);
}

static void run_one(const struct fut__forkserver_cfg *cfg,
		    struct fut__worker_slot *slot, struct out *o, int fd,
		    struct fut__wire_rec *r)
{
	const void *input = r->data;
	size_t input_len = r->len;
	void *map = MAP_FAILED;
	int64_t ended = 0; /* when the task returned; 0: it did not run */
	if (!claim(slot, r))
		goto done;
	if (r->kind == FUT__WIRE_T_SHARED) {
		map = fut__pp_map_input(r, &input_len);
		if (map == MAP_FAILED) {
			static const char why[] =
				"cannot map the task's input (shared memory)";
			out_record(o, fd, r->id, FUT__WIRE_R_FAIL, errno, why,
				   sizeof(why) - 1);
			goto done;
		}
		input = map;
	}
	fut_fn fn = (fut_fn)(uintptr_t)r->fn;
	if (cfg->parent_mods != NULL)
		fn = fut__fn_translate(cfg->parent_mods, cfg->nparent_mods,
				       r->fn);
	if (fn == NULL) {
		out_record(o, fd, r->id, FUT__WIRE_R_NOFN, 0, NULL, 0);
		if (map != MAP_FAILED)
			(void)munmap(map, input_len);
		goto done;
	}
	if (o->f.count != 0 && o->last_ns >= FLUSH_BEFORE_NS)
		out_flush(o, fd);
	int64_t t0 = o->mark;
	if (t0 == 0 || cfg->track_time) /* a task_timeout needs the start */
		t0 = fut__pp_clock_read(&o->clk);
	if (cfg->track_time)
		atomic_store_explicit(&slot->started_ns, t0,
				      memory_order_relaxed);
	atomic_store_explicit(&slot->started, r->id, memory_order_release);
	struct fut_task t;
	fut__task_init(&t, fn, NULL, input, input_len, NULL);
	o->ran = r->id;
	struct emit_ctx ec = { .out = o, .fd = fd, .id = r->id };
	/* A small byte result is copied into the frame at once (no
	 * allocation for it); from FUT__TASK_EMIT_MIN it is written from
	 * the task's buffer. */
	const struct fut__task_sink sink = { .emit = emit_bytes,
					     .shared = shared_map,
					     .ctx = &ec,
					     .copy_max = FLUSH_BYTES };
	t.sink = &sink;
	fut__task_run(&t);
	atomic_store_explicit(&slot->finished, r->id, memory_order_release);
	/* A task_timeout times the next task from its very start. */
	ended = cfg->track_time ? fut__pp_clock_read(&o->clk) :
				  fut__pp_clock_task_end(&o->clk);
	o->last_ns = ended - t0;
	o->mark = ended;
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
		/* No message (fmt NULL, or no memory for it): the code's
		 * text, as a thread pool gives; the caller would read an
		 * empty one. */
		const char *msg = t.message != NULL ? t.message :
						      fut_strerror(FUT_ETASK);
		size_t mlen = strlen(msg);
		if (mlen > FUT__WIRE_MAX_MESSAGE)
			mlen = FUT__WIRE_MAX_MESSAGE;
		out_record(o, fd, r->id, FUT__WIRE_R_FAIL, t.task_code, msg,
			   mlen);
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
	 * with the worker if a later task crashes it).  The time the task
	 * ended serves as now: one clock read a task fewer. */
	if ((r->last && frame_flush_now(slot, o, r)) ||
	    o->f.len >= FLUSH_BYTES ||
	    (o->f.count != 0 &&
	     (ended != 0 ? ended : fut__pp_clock_task_end(&o->clk)) -
			     o->since >=
		     FLUSH_NS))
		out_flush(o, fd);
}

static void say_hello(int fd, int rc)
{
	unsigned char b[FUT__PP_FRAME_ONE];
	fut__pp_frame_one(b, FUT__WIRE_HELLO, 0,
			  rc ? FUT__WIRE_HELLO_INIT_FAILED : FUT__WIRE_HELLO_OK,
			  rc, 0);
	if (!write_all(fd, b, sizeof(b)))
		die(0);
}

/* The worker's loop, for fut__pp_feed. */
struct child {
	const struct fut__forkserver_cfg *cfg;
	struct fut__worker_slot *slot;
	struct out out;
	int in, outfd;
};

/*
 * Bytes the parent sent (in_sent, stored once they were on the socket)
 * that are neither read by us nor on the socket were read by a task
 * that found it: the frame they belonged to is lost, and we would wait
 * for it for ever.  So the read waits only when we have read all the
 * parent is sending (in_sending, raised before each send); else it is
 * made not to wait.  Finding no bytes though in_sent says some wait,
 * the worker exits (124), blaming the last task it ran whose result it
 * holds (slot->broke; that result is not sent, the parent ends the task
 * FUT_ECRASHED); its other tasks run again.  Finding none while a send
 * is under way (in_sent not raised yet), it yields until it is.  The
 * same one read as before, told not to wait.
 */
static ssize_t child_read(void *ctx, void *buf, size_t len, bool direct)
{
	struct child *c = ctx;
	struct out *o = &c->out;
	struct fut__worker_slot *s = c->slot;
	ssize_t n;
	for (;;) {
		uint64_t sent =
			atomic_load_explicit(&s->in_sent, memory_order_acquire);
		if (o->in_read >= sent &&
		    o->in_read >= atomic_load_explicit(&s->in_sending,
						       memory_order_acquire)) {
			/* About to wait for input: send what is done
			 * first. */
			if (!direct)
				out_flush(o, c->outfd);
			n = fut__pp_recv_in(c->in, buf, len, 0);
			break;
		}
		n = fut__pp_recv_in(c->in, buf, len, MSG_DONTWAIT);
		if (n >= 0 || errno != EAGAIN) {
			if (!direct)
				out_flush(o, c->outfd);
			break;
		}
		if (o->in_read < sent) {
			atomic_store_explicit(&s->broke, o->suspect,
					      memory_order_release);
			die(124);
		}
		(void)sched_yield();
	}
	if (n > 0)
		o->in_read += (uint64_t)n;
	o->mark = 0;
	return n;
}

static bool child_record(void *ctx, struct fut__wire_rec *r)
{
	struct child *c = ctx;
	run_one(c->cfg, c->slot, &c->out, c->outfd, r);
	if (exit_after_task)
		die(0);
	return true;
}

/* What a process a task (or the initializer) forks must not use as the
 * worker's: its channels and the shared slots. */
static int worker_out = -1; /* its channel in is back_sock */
static void *slots_map;
static size_t slots_bytes;
static _Atomic uint64_t written_elsewhere;

/*
 * In a child a task forked: it is no worker (as a thread-pool task's
 * fork child is none, docs/api.md).  If the task returned there too, the
 * loop went on as the worker's: it sent a result for the task (the caller
 * got the child's), and read tasks sent to the worker.  Its copies of
 * the channels become /dev/null (the loop then reads no task and the
 * child exits), the slots a private mapping, the count of bytes written
 * its own.  Runs in that child only: nothing on a task's path.
 */
static void task_forked(void)
{
	/* Once: this child is no worker, and neither are its own children.
	 * Left installed, the hook ran in them too, where the channels'
	 * numbers may name other fds by then: the fork server of a pool
	 * made in a task turned its new worker's channels into /dev/null
	 * (found by review, 2026-12-07). */
	fut__fork_child_hook(NULL);
	written = &written_elsewhere;
	/* The result pipe stays open here, unused, under another number: a
	 * process of the worker's group that holds it tells the pool, once
	 * the fork server is gone, that the group still lives and must be
	 * killed (slot.c, fs_restart), as a helper that kept it did. */
	(void)fcntl(worker_out, F_DUPFD_CLOEXEC, 3);
	if (slots_map != NULL)
		(void)mmap(slots_map, slots_bytes, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0) { /* no fd: the channels close instead */
		(void)close(back_sock);
		(void)close(worker_out);
		return;
	}
	(void)dup3(null, back_sock, O_CLOEXEC);
	(void)dup3(null, worker_out, O_CLOEXEC);
	(void)close(null);
}

/* What the tasks printed to stdout and stderr goes out as the worker
 * ends (a user's trial, 2026-12-07: _exit dropped it); the inherited
 * bytes were dropped at the fork.  Not fflush(NULL): other inherited
 * streams hold the parent's bytes, written again by each worker (a
 * review, 2026-12-07).  A task's own streams are its to flush. */
static void flush_stdio(void)
{
	(void)fflush(stdout);
	(void)fflush(stderr);
}

void fut__pp_child_main(const struct fut__forkserver_cfg *cfg,
			struct fut__worker_slot *slot, int in, int outfd)
{
	back_sock = in;
	written = &slot->written;
	worker_out = outfd;
	slots_map = cfg->slots;
	slots_bytes = cfg->nslots * sizeof(*cfg->slots);
	fut__fork_child_hook(task_forked);
	back_slot = slot;
	int rc = cfg->initializer ? cfg->initializer(cfg->initarg) : 0;
	say_hello(outfd, rc);
	if (rc != 0) {
		flush_stdio();
		die(0);
	}
	unsigned char *stage = fut__malloc(FUT__PP_STAGE_BYTES);
	if (stage == NULL)
		die(126);
	struct child c = { .cfg = cfg, .slot = slot, .in = in, .outfd = outfd };
	out_begin(&c.out);
	struct fut__wire_dec d;
	fut__wire_dec_init(&d, FUT__WIRE_TO_WORKER);
	static const struct fut__pp_feed_ops ops = { .read = child_read,
						     .record = child_record };
	for (;;) {
		int st = fut__pp_feed(&d, stage, FUT__PP_STAGE_BYTES, &ops, &c);
		if (st == FUT__PP_FEED_EOF || st == FUT__PP_FEED_AGAIN) {
			out_flush(&c.out, outfd);
			/* EOF: retired, or the pool is gone. */
			fut__free(stage);
			flush_stdio();
			die(0);
		}
		if (st != FUT__PP_FEED_OK)
			die(125); /* malformed task frame */
	}
}
