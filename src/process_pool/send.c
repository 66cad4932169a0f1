/*
 * send.c: the process pool's task frames, out to a worker.
 *
 * Owns: claiming each job of a batch popped for a worker (a job cancelled
 * while queued is dropped here), encoding the frame into the worker's
 * output buffer, and writing it with non-blocking sendmsg: the buffer
 * first, then a large input straight from its job block; an input in
 * shared memory is a SHARED record whose memfd (the job's) rides with the
 * frame's first bytes as SCM_RIGHTS.
 * Threads: the manager thread; and fut__pp_send_one in a submitting
 * thread, through an idle worker's open door (door.c).
 * Locks: none (the worker's fds and buffers are the manager's alone, but
 * while its door is open: then whoever holds p->lock sends).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

/* The job whose input is still being written to w from its block goes:
 * w's reference to it with it. */
static void out_job_drop(struct pp_worker *w)
{
	if (w->out_job != NULL) {
		fut_release(&w->out_job->fut);
		w->out_job = NULL;
	}
}

/*
 * The worker's count of the bytes sent on its task socket (child.h):
 * raised by what is about to go before a send (in_sending), and by what
 * went after it (in_sent).  One writer at a time (the manager, or the
 * holder of p->lock through a door): a relaxed load, release stores.
 */
static void count_sending(struct fut__worker_slot *s, size_t len)
{
	uint64_t sent = atomic_load_explicit(&s->in_sent, memory_order_relaxed);
	atomic_store_explicit(&s->in_sending, sent + len, memory_order_release);
}

static void count_sent(struct fut__worker_slot *s, ssize_t got)
{
	uint64_t sent = atomic_load_explicit(&s->in_sent, memory_order_relaxed);
	if (got > 0) {
		sent += (uint64_t)got;
		atomic_store_explicit(&s->in_sent, sent, memory_order_release);
	}
	atomic_store_explicit(&s->in_sending, sent, memory_order_release);
}

void fut__pp_flush_out(struct ppool *p, struct pp_worker *w)
{
	struct fut__worker_slot *slot = &p->slots[w->slot];
	while (w->task_fd >= 0 && (w->ooff < w->out.len || w->opay != NULL)) {
		struct iovec iov[2];
		int n = 0;
		if (w->ooff < w->out.len) {
			iov[n].iov_base = w->out.buf + w->ooff;
			iov[n++].iov_len = w->out.len - w->ooff;
		}
		if (w->opay != NULL) {
			iov[n].iov_base =
				(void *)(uintptr_t)(w->opay + w->opayoff);
			iov[n++].iov_len = w->opaylen - w->opayoff;
		}
		struct msghdr msg = { 0 };
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)n;
		union {
			struct cmsghdr h;
			char space[CMSG_SPACE(sizeof(int))];
		} u;
		/* A shared input's memfd rides with the first bytes that
		 * go, which come no later than its record. */
		if (w->ofd >= 0)
			fut__pp_attach_fds(&msg, u.space, sizeof(u.space),
					   &w->ofd, 1);
		count_sending(slot,
			      iov[0].iov_len + (n == 2 ? iov[1].iov_len : 0));
		ssize_t got =
			sendmsg(w->task_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		count_sent(slot, got);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0 && errno == EAGAIN)
			return;
		if (got < 0) {
			/* Gone (EPIPE): its EXITED settles its jobs.  Alive
			 * (ETOOMANYREFS: this user has more fds in flight
			 * than RLIMIT_NOFILE, for a shared input's memfd;
			 * ENOBUFS, ENOMEM), it waited for ever for bytes that
			 * never came, its jobs with it (found by review,
			 * 2026-12-07): told to exit (EOF), it answers what it
			 * has, and its EXITED runs the rest again elsewhere,
			 * or ends them FUT_ESYS after a few tries. */
			w->send_errno = errno;
			fut__pp_out_drop(w);
			fut__pp_task_shut(w);
			return;
		}
		fut__pp_close_fd(&w->ofd); /* sent: the worker has a copy */
		size_t left = (size_t)got;
		size_t a = w->out.len - w->ooff;
		if (left >= a) {
			w->ooff = w->out.len;
			left -= a;
			w->opayoff += left;
		} else {
			w->ooff += left;
		}
		if (w->ooff == w->out.len && w->opay != NULL &&
		    w->opayoff == w->opaylen)
			w->opay = NULL;
	}
	if (w->ooff == w->out.len) {
		w->ooff = w->out.len = 0;
		if (w->opay == NULL)
			out_job_drop(w);
	}
}

void fut__pp_out_drop(struct pp_worker *w)
{
	w->out.len = w->ooff = 0;
	w->opay = NULL;
	w->opaylen = w->opayoff = 0;
	fut__pp_close_fd(&w->ofd);
	out_job_drop(w);
}

/* A frame of count jobs, first..last, is in w->out: they join w's list
 * (in the order it runs them), and it goes out. */
static void frame_out(struct ppool *p, struct pp_worker *w,
		      struct pp_job *first, struct pp_job *last, uint32_t count)
{
	last->frame_last = true;
	if (w->head == NULL)
		w->active_ns = fut__now_ns(); /* busy from now */
	if (w->tail != NULL)
		w->tail->next = first;
	else
		w->head = first;
	w->tail = last;
	w->frames++;
	w->sent += count;
	fut__pp_flush_out(p, w);
}

size_t fut__pp_send_batch(struct ppool *p, struct pp_worker *w,
			  struct pp_job *batch)
{
	size_t dropped = 0;
	struct pp_job *first = NULL, *last = NULL;
	/* The worker took all it was sent before it got this batch. */
	assert(!fut__pp_out_pending(w));
	bool ok = fut__pp_frame_begin(&w->out);
	while (batch != NULL) {
		struct pp_job *j = batch;
		batch = j->next;
		j->next = NULL;
		uint32_t st = fut__future_state(&j->fut);
		if (st == FUT__S_RUNNING &&
		    (atomic_load(&j->fut.flags) & FUT__F_INTERRUPT)) {
			/* It ran on a worker that died before its result
			 * came, and was interrupted meanwhile. */
			fut__pp_job_end(j, FUT_ECANCELLED, 0, 0, "interrupted");
			dropped++;
			continue;
		}
		/* Its claim word first, then SENT: a cancel that sees SENT
		 * finds the word (claim.c).  One cancelled already spends no
		 * key (fut__pp_allowance). */
		bool cancelled = st == FUT__S_CANCELLED;
		if (!cancelled) {
			fut__pp_claim_sent(p, w, j);
			cancelled = st != FUT__S_RUNNING &&
				    fut__future_send(&j->fut) != FUT_OK;
		}
		if (cancelled) { /* while queued: done already */
			fut__pp_job_drop(j);
			dropped++;
			continue;
		}
		/* The record's payload: the input copied into the frame, or
		 * sent from the job block after it (a large one), or the
		 * length of a shared input, whose memfd rides with the
		 * frame. */
		int in_fd = fut__pp_job_input_fd(j);
		int ofd = in_fd < 0 ? -1 : fcntl(in_fd, F_DUPFD_CLOEXEC, 0);
		if (in_fd >= 0 && ofd < 0) {
			fut__pp_job_end(j, FUT_ESYS, errno, 0,
					"cannot send the task's input (shared "
					"memory): %s",
					strerror(errno));
			dropped++;
			continue;
		}
		unsigned char shared_len[FUT__WIRE_SHARED_LEN];
		const void *data = j->input;
		size_t copy = j->len <= FUT__PP_FRAME_BYTES ? j->len : 0;
		uint64_t len = j->len;
		if (in_fd >= 0) {
			fut__wire_put_u64(shared_len, j->len);
			data = shared_len;
			copy = len = sizeof(shared_len);
		}
		uint32_t key = (uint32_t)atomic_load_explicit(
			&j->ticket, memory_order_relaxed);
		if (!ok ||
		    !fut__pp_frame_add(&w->out, p->next_id,
				       (uint64_t)(uintptr_t)j->fn,
				       in_fd >= 0 ? FUT__WIRE_T_SHARED : 0,
				       (int32_t)key, data, copy, len)) {
			ok = false;
			fut__pp_close_fd(&ofd);
			fut__pp_job_end(j, FUT_ENOMEM, 0, 0,
					"out of memory for the task frame");
			dropped++;
			continue;
		}
		j->id = p->next_id++;
		if (in_fd >= 0) {
			/* It travels alone in its frame (its len is large):
			 * one memfd pending per worker at most, w's own copy
			 * (the job may end elsewhere meanwhile: claim.c). */
			w->ofd = ofd;
		} else if (copy < len) {
			/* Written from the block, which w keeps meanwhile. */
			w->opay = j->input;
			w->opaylen = j->len;
			w->opayoff = 0;
			fut__future_ref(&j->fut);
			w->out_job = j;
		}
		j->frame_last = false;
		w->inflight++;
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
	}
	uint32_t count = fut__pp_frame_end(&w->out, FUT__WIRE_TASKS);
	if (count != 0)
		frame_out(p, w, first, last, count);
	return dropped;
}

bool fut__pp_send_one(struct ppool *p, struct pp_worker *w, struct pp_job *j)
{
	assert(fut__pp_lock_held(p) && w->door && w->head == NULL);
	assert(j->len <= FUT__PP_FRAME_BYTES && !(j->shared & PP_SHARED_INPUT));
	/* Encoded first, with the id and key it is about to take: nothing
	 * is changed when there is no memory for the frame. */
	uint32_t key = w->next_key;
	if (!fut__pp_frame_begin(&w->out) ||
	    !fut__pp_frame_add(&w->out, p->next_id, (uint64_t)(uintptr_t)j->fn,
			       0, (int32_t)key, j->input, j->len, j->len)) {
		fut__pp_out_drop(w);
		return false;
	}
	(void)fut__pp_frame_end(&w->out, FUT__WIRE_TASKS);
	fut__pp_claim_sent(p, w, j);
	/* Nobody else has seen the job yet: nobody could cancel it. */
	int rc = fut__future_send(&j->fut);
	assert(rc == FUT_OK);
	(void)rc;
	j->id = p->next_id++;
	w->inflight++;
	frame_out(p, w, j, j, 1);
	return true;
}
