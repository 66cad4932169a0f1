/*
 * recv.c: the process pool's result frames, read in.
 *
 * Owns: reading each worker's result pipe (non-blocking, into the
 * manager's stage buffer or straight into a large payload's own buffer),
 * decoding it (wire.c) and completing each job from its record, in the
 * order the worker was given them: bytes (a short result takes the
 * input's place in the job block), a task failure, nothing, a shared
 * result (shared.c maps it); and a worker that sent a malformed frame.
 * Threads: the manager thread only.
 * Locks: none (the pipes are the manager's alone); never held while a
 * future completes.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

void fut__pp_bad_frame(struct pp_mgr *m, struct pp_worker *w, const char *why)
{
	if (w->bad_frame == NULL)
		w->bad_frame = fut__strdup(why);
	fut__pp_slot_kill(m, w, FUT_ECRASHED, false, 0);
	/* Stop reading what it sends; its EXITED ends it. */
	w->eof = true;
	fut__pp_close_fd(&w->result_fd);
}

/*
 * Bytes on w's task socket that the worker did not send (it sends each
 * memfd alone with one byte), with any fds (closed): a task of w wrote
 * them, at some time since the last shared result, and which one cannot
 * be told.  They were skipped (fut__pp_take_fd), the result they stood
 * in front of is good; w is replaced, its jobs not yet answered run
 * again elsewhere and none is blamed.
 */
static void foreign_bytes(struct pp_mgr *m, struct pp_worker *w)
{
	fut__pp_slot_kill(m, w, FUT_ECRASHED, false, FUT__PP_BLAME_NONE);
}

/* A dropped result of more bytes than this is not read through: its
 * worker is killed and replaced (reading 4 GiB through a pipe to skip it
 * took 25 s); a smaller one is skipped and the worker kept. */
#define DROP_SKIP_MAX ((size_t)64 << 20)

/* A result too large to hold here (the decoder dropped it from its
 * header and skips its bytes): the task ends FUT_ENOMEM at once; the
 * worker goes on, or is replaced when the rest is large (the tasks sent
 * to it behind this one run elsewhere). */
static void dropped_result(struct pp_mgr *m, struct pp_worker *w,
			   struct pp_job *j, const struct fut__wire_rec *r)
{
	if (r->kind == FUT__WIRE_R_SHARED) {
		bool foreign = false;
		int fd = fut__pp_take_fd(m->p, w, &foreign);
		fut__pp_close_fd(&fd);
		if (foreign)
			foreign_bytes(m, w);
	}
	bool replace = r->len > DROP_SKIP_MAX;
	fut__pp_job_end(j, FUT_ENOMEM, 0, 0,
			"out of memory for the task's %s: its %zu bytes "
			"cannot be held by this process%s",
			r->kind == FUT__WIRE_R_FAIL ? "failure message" :
						      "result",
			r->len, replace ? " (its worker is replaced)" : "");
	if (replace)
		fut__pp_slot_kill(m, w, FUT_ENOMEM, false, r->id);
}

static void on_result(struct pp_mgr *m, struct pp_worker *w,
		      struct fut__wire_rec *r)
{
	/* Tasks taken back before it got to them send nothing: a result
	 * for the head is for a task not taken back, and the claim words
	 * are read only when the head is another. */
	struct pp_job *j = w->head;
	if (j == NULL || r->id != j->id) {
		fut__pp_purge(m, w);
		j = w->head;
	}
	if (j == NULL || r->id != j->id) {
		if (r->owned)
			fut__free(r->data);
		fut__pp_bad_frame(m, w, "a result for a task it was not given");
		return;
	}
	fut__pp_unlink(w, NULL, j);
	w->answered++;
	/* It ran: its input will not be sent again, and it no longer
	 * counts against max_queue. */
	fut__pp_uncount(j);
	fut__pp_job_input_close(j);
	if (r->dropped) {
		dropped_result(m, w, j, r);
		return;
	}
	if (r->kind == FUT__WIRE_R_SHARED) {
		uint64_t len = fut__wire_get_u64(r->data);
		if (r->owned)
			fut__free(r->data);
		bool foreign = false;
		int fd = fut__pp_take_fd(m->p, w, &foreign);
		if (foreign)
			foreign_bytes(m, w);
		if (fd >= 0) {
			fut__pp_complete_shared(j, fd, len);
			return;
		}
		int err = errno;
		fut__pp_job_end(j, FUT_ESYS, err, 0,
				"cannot take in the task's result (shared "
				"memory): %s",
				strerror(err));
		if (err == EPROTO)
			fut__pp_bad_frame(m, w,
					  "a shared result without its memfd");
		return;
	}
	if (r->kind == FUT__WIRE_R_BYTES && r->len != 0 && r->len <= j->len &&
	    !r->owned && !(j->shared & PP_SHARED_INPUT)) {
		/* A result no longer than the input takes the input's place
		 * in the job block: no allocation per task. */
		memcpy(j->input, r->data, r->len);
		(void)fut__future_succeed_borrowed(&j->fut, j->input, r->len);
		fut_release(&j->fut);
		return;
	}
	void *data = r->data;
	if (r->len != 0 && !r->owned) {
		data = fut__malloc(r->len);
		if (data != NULL)
			memcpy(data, r->data, r->len);
	}
	if (r->len != 0 && data == NULL) {
		fut__pp_job_end(j, FUT_ENOMEM, 0, 0,
				"out of memory for the task's result: %zu "
				"bytes",
				r->len);
		return;
	}
	switch (r->kind) {
	case FUT__WIRE_R_BYTES:
		(void)fut__future_succeed_bytes(&j->fut, data, r->len);
		fut_release(&j->fut);
		return;
	case FUT__WIRE_R_FAIL: {
		char *msg = fut__malloc(r->len + 1);
		if (msg != NULL) {
			if (r->len != 0)
				memcpy(msg, data, r->len);
			msg[r->len] = '\0';
		}
		fut__free(data);
		(void)fut__future_fail(&j->fut, FUT_ETASK, r->code, msg);
		fut_release(&j->fut);
		return;
	}
	case FUT__WIRE_R_NOFN:
		fut__free(data);
		fut__pp_job_end(j, FUT_ENOTSUP, 0, 0,
				"the task function is not in the fork "
				"server's program (FUT_START_EXEC finds a "
				"function by its module's build-id: a module "
				"the program did not load at start has none "
				"there)");
		return;
	case FUT__WIRE_R_VALUE:
		fut__free(data);
		fut__pp_job_end(j, FUT_ENOTSUP, 0, 0,
				"a process-pool task returned a pointer "
				"(fut_task_return); return bytes instead");
		return;
	default:
		fut__free(data);
		(void)fut__future_succeed(&j->fut, NULL);
		fut_release(&j->fut);
		return;
	}
}

static void on_record(struct pp_mgr *m, struct pp_worker *w,
		      struct fut__wire_rec *r)
{
	if (r->dropped && r->type == FUT__WIRE_HELLO)
		fut__pp_bad_frame(m, w, "no memory for its hello");
	else if (r->type == FUT__WIRE_HELLO)
		fut__pp_slot_hello(m, w, r);
	else if (w->state != PW_READY && w->state != PW_RETIRING)
		fut__pp_bad_frame(m, w, "a result before its hello");
	else
		on_result(m, w, r);
	if (r->type == FUT__WIRE_HELLO && r->owned)
		fut__free(r->data);
}

/* fut__pp_read_results's reads, for fut__pp_feed. */
struct reading {
	struct pp_mgr *m;
	struct pp_worker *w;
	bool foreign; /* bytes the worker did not write came */
};

/* The worker counts in its slot every byte it writes to the pipe before
 * it writes it (child.c), so an honest worker's count is never behind
 * what was read.  Bytes past it were written by one of its tasks (it
 * found the fd): a forged frame could announce a length that never
 * comes and stall the pipe for ever, while the decoder sees nothing
 * wrong.  Such a read is dropped and counts as an EOF; the caller kills
 * the worker. */
static ssize_t pipe_read(void *ctx, void *buf, size_t len, bool direct)
{
	(void)direct;
	struct reading *rd = ctx;
	struct pp_worker *w = rd->w;
	ssize_t n = read(w->result_fd, buf, len);
	if (n <= 0)
		return n;
	w->read_bytes += (uint64_t)n;
	if (w->read_bytes >
	    atomic_load_explicit(&rd->m->p->slots[w->slot].written,
				 memory_order_acquire)) {
		rd->foreign = true;
		return 0;
	}
	return n;
}

static bool pipe_record(void *ctx, struct fut__wire_rec *r)
{
	struct reading *rd = ctx;
	on_record(rd->m, rd->w, r);
	return !rd->w->eof;
}

/* What the results read by this call tell of how long a task takes: the
 * time since w was last heard from (or given work while it had none),
 * over the tasks answered.  A moving average over the pool's workers. */
static void measure(struct pp_mgr *m, struct pp_worker *w)
{
	struct ppool *p = m->p;
	if (w->answered == 0)
		return;
	int64_t per = (m->now - w->active_ns) / (int64_t)w->answered;
	if (per < 1)
		per = 1;
	p->task_ns = p->task_ns == 0 ? per : (3 * p->task_ns + per) / 4;
	w->active_ns = m->now;
	w->answered = 0;
}

void fut__pp_read_results(struct pp_mgr *m, struct pp_worker *w)
{
	static const struct fut__pp_feed_ops ops = { .read = pipe_read,
						     .record = pipe_record };
	struct reading rd = { m, w, false };
	w->answered = 0;
	while (w->result_fd >= 0 && !w->eof) {
		switch (fut__pp_feed(&w->dec, m->p->stage, FUT__PP_STAGE_BYTES,
				     &ops, &rd)) {
		case FUT__PP_FEED_AGAIN:
			measure(m, w);
			return;
		case FUT__PP_FEED_EOF:
			if (rd.foreign)
				fut__pp_bad_frame(
					m, w,
					"bytes on its result pipe that "
					"the worker did not write (a "
					"task wrote to the pipe)");
			w->eof = true;
			if (!w->exited) { /* now: m->now may be a stall old */
				w->eof_ns = fut__now_ns();
				w->eof_started = atomic_load_explicit(
					&m->p->slots[w->slot].started,
					memory_order_acquire);
			}
			return;
		case FUT__PP_FEED_NOMEM:
			fut__pp_bad_frame(m, w, "no memory for its result");
			break;
		case FUT__PP_FEED_BAD:
			fut__pp_bad_frame(m, w, w->dec.error);
			break;
		default:
			break;
		}
	}
}

/* A worker whose exit has not come, past its pipe's EOF. */
static bool pipe_lost(const struct pp_worker *w)
{
	return w->state != PW_FREE && w->eof && w->eof_ns != 0 && !w->exited &&
	       !w->orphan && w->kill_reason == 0;
}

/* Kills a worker that lives on FUT__PP_EOF_GRACE_NS after its result
 * pipe gave EOF (a task closed it, or put another file in its place):
 * nothing it answers can come, and its futures waited for ever, the free
 * too (found by review, 2026-12-07).  A worker that died gives EOF too,
 * and its exit comes in milliseconds.  Returns when to look again. */
int64_t fut__pp_lost_pipes(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	int64_t next = -1;
	bool read = false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (!pipe_lost(w))
			continue;
		int64_t due = w->eof_ns + FUT__PP_EOF_GRACE_NS;
		if (due > m->now) {
			if (next < 0 || due < next)
				next = due;
			continue;
		}
		/* Its exit may wait unread on the fork server's socket (the
		 * manager stalled in a done callback): read that first. */
		if (!read && p->fs_sock >= 0) {
			fut__pp_fs_read(m);
			read = true;
			if (!pipe_lost(w))
				continue;
		}
		/* The task it ran as the pipe closed is the one blamed: with
		 * a larger chunk, the one running at the kill may be another
		 * (found by review, 2026-12-07). */
		if (w->bad_frame == NULL)
			w->bad_frame = fut__strdup(
				"its result pipe closed while it lived (a task "
				"closed or replaced the worker's fds)");
		w->pipe_lost = w->state == PW_STARTING ||
			       w->state == PW_SPAWNING;
		fut__pp_slot_kill(m, w, FUT_ECRASHED, false, w->eof_started);
		fut__pp_close_fd(&w->result_fd);
	}
	return next;
}
