/*
 * send.c: the process pool's task frames, out to a worker.
 *
 * Owns: claiming each job of a batch popped for a worker (a job cancelled
 * while queued is dropped here), encoding the frame into the worker's
 * output buffer, and writing it with non-blocking sendmsg: the buffer
 * first, then a large input straight from its job block; an input in
 * shared memory is a SHARED record whose memfd (the job's) rides with the
 * frame's first bytes as SCM_RIGHTS.
 * Threads: the manager thread only.
 * Locks: none (the worker's fds and buffers are the manager's alone).
 */
#include <errno.h>
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

void fut__pp_flush_out(struct pp_worker *w)
{
	while (w->task_fd >= 0 && (w->ooff < w->olen || w->opay != NULL)) {
		struct iovec iov[2];
		int n = 0;
		if (w->ooff < w->olen) {
			iov[n].iov_base = w->obuf + w->ooff;
			iov[n++].iov_len = w->olen - w->ooff;
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
		ssize_t got =
			sendmsg(w->task_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0 && errno == EAGAIN)
			return;
		if (got < 0) {
			/* It is gone: its EXITED will settle its jobs. */
			w->olen = w->ooff = 0;
			w->opay = NULL;
			w->ofd = -1;
			return;
		}
		w->ofd = -1; /* sent: the worker has its own copy */
		size_t left = (size_t)got;
		size_t a = w->olen - w->ooff;
		if (left >= a) {
			w->ooff = w->olen;
			left -= a;
			w->opayoff += left;
		} else {
			w->ooff += left;
		}
		if (w->ooff == w->olen && w->opay != NULL &&
		    w->opayoff == w->opaylen)
			w->opay = NULL;
	}
	if (w->ooff == w->olen)
		w->ooff = w->olen = 0;
}

static bool obuf_reserve(struct pp_worker *w, size_t more)
{
	if (w->olen + more <= w->ocap)
		return true;
	size_t cap = w->ocap ? w->ocap : 4096;
	while (cap < w->olen + more)
		cap *= 2;
	unsigned char *b = fut__realloc(w->obuf, cap);
	if (b == NULL)
		return false;
	w->obuf = b;
	w->ocap = cap;
	return true;
}

size_t fut__pp_send_batch(struct ppool *p, struct pp_worker *w,
			  struct pp_job *batch)
{
	size_t dropped = 0;
	struct pp_job *first = NULL, *last = NULL;
	uint32_t count = 0;
	uint64_t body = 0;
	size_t start = w->olen;
	bool ok = obuf_reserve(w, FUT__WIRE_FRAME_HDR);
	if (ok)
		w->olen += FUT__WIRE_FRAME_HDR;
	while (batch != NULL) {
		struct pp_job *j = batch;
		batch = j->next;
		j->next = NULL;
		if (j->requeued == 0) {
			if (fut__future_start(&j->fut) != FUT_OK) {
				/* Cancelled while queued: done already. */
				fut__pp_job_input_close(j);
				fut_release(&j->fut);
				dropped++;
				continue;
			}
		} else if (atomic_load(&j->fut.flags) & FUT__F_INTERRUPT) {
			/* Back from a dead worker (so RUNNING already), and
			 * interrupted meanwhile. */
			fut__pp_job_end(j, FUT_ECANCELLED, 0, 0, "interrupted");
			continue;
		}
		int in_fd = fut__pp_job_input_fd(j);
		bool inline_input = in_fd < 0 && j->len <= FUT__PP_FRAME_BYTES;
		size_t payload = in_fd >= 0 ? FUT__WIRE_SHARED_LEN : j->len;
		if (!ok ||
		    !obuf_reserve(w, FUT__WIRE_REC_HDR +
					     (in_fd >= 0 || inline_input ?
						      payload :
						      0))) {
			ok = false;
			fut__pp_job_end(j, FUT_ENOMEM, 0, 0,
					"out of memory for the task frame");
			continue;
		}
		j->id = p->next_id++;
		fut__wire_put_record(w->obuf + w->olen, j->id,
				     (uint64_t)(uintptr_t)j->fn,
				     in_fd >= 0 ? FUT__WIRE_T_SHARED : 0, 0,
				     payload);
		w->olen += FUT__WIRE_REC_HDR;
		if (in_fd >= 0) {
			/* It travels alone in its frame (its len is large):
			 * one memfd pending per worker at most. */
			fut__wire_put_u64(w->obuf + w->olen, j->len);
			w->olen += FUT__WIRE_SHARED_LEN;
			w->ofd = in_fd;
		} else if (inline_input) {
			if (j->len != 0)
				memcpy(w->obuf + w->olen, j->input, j->len);
			w->olen += j->len;
		} else {
			w->opay = j->input;
			w->opaylen = j->len;
			w->opayoff = 0;
		}
		body += FUT__WIRE_REC_HDR + (uint64_t)payload;
		count++;
		j->frame_last = false;
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
	}
	if (count == 0) {
		w->olen = start;
		return dropped;
	}
	fut__wire_put_frame(w->obuf + start, FUT__WIRE_TASKS, count, body);
	last->frame_last = true;
	if (w->tail != NULL)
		w->tail->next = first;
	else
		w->head = first;
	w->tail = last;
	w->frames++;
	w->sent += count;
	fut__pp_flush_out(w);
	return dropped;
}
