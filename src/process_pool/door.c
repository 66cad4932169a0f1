/*
 * door.c: a task handed to an idle worker by the thread that submits it.
 *
 * Owns: the doors.  A queued task wakes the manager, which writes its
 * frame: on the 2-vCPU VMs we measure on, a sleeping thread woken costs
 * tens of microseconds, a round trip's largest part (docs/design-process-
 * pool.md, "Wake-ups per task").  So before the manager sleeps it opens
 * the door of each idle worker (ready, nothing sent, not inside a task),
 * and a submitter that finds the queue empty and a door open sends its
 * task through it itself, exactly as the manager would have (send.c's
 * fut__pp_send_one: claim word, id, the worker's list, one frame), and
 * closes it: one task per door.  The manager wakes when the result comes,
 * as for any task, and closes every door first: from then on the task is
 * one of the worker's as if the manager had sent it, so a crash, a
 * deadline, an interrupt, a cancel, a shutdown find it where they look.
 * Threads: the manager opens and closes the doors; any submitting thread
 * hands off.
 * Locks: p->lock guards each w->door and p->doors.  While a door is open
 * the manager touches nothing of that worker's slot (it is asleep in
 * poll): the submitter that holds p->lock may; opening and closing under
 * the lock orders the two.  A submitter holds p->lock across one
 * non-blocking sendmsg.
 */
#include <assert.h>

#include "process_pool/pool.h"

/* Whether w may take a task from a submitter while the manager sleeps. */
static bool idle(const struct ppool *p, const struct pp_worker *w)
{
	return w->head == NULL && w->kill_reason == 0 &&
	       fut__pp_allowance(p, w) != 0 && !fut__pp_in_task(p, w);
}

bool fut__pp_doors_open(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	/* A task_timeout is the manager's to time from the task's start:
	 * it would sleep through a deadline it was never told of. */
	if (m->closing || p->timeout_ns != 0)
		return false;
	fut__pp_lock(p);
	assert(p->doors == 0);
	if (p->qhead == NULL && !p->shutdown && !p->broken) {
		for (uint32_t i = 0; i < p->nslots; i++) {
			struct pp_worker *w = &p->workers[i];
			if (idle(p, w)) {
				w->door = true;
				p->doors++;
			}
		}
	}
	bool opened = p->doors != 0;
	fut__pp_unlock(p);
	return opened;
}

void fut__pp_doors_close(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	fut__pp_lock(p);
	for (uint32_t i = 0; i < p->nslots && p->doors != 0; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->door) {
			w->door = false;
			p->doors--;
		}
	}
	fut__pp_unlock(p);
}

bool fut__pp_hand_off_locked(struct ppool *p, struct pp_job *j)
{
	assert(fut__pp_lock_held(p));
	/* Behind a queued task it would overtake it; a large input is
	 * streamed by the manager, a shared one goes as a dup it makes. */
	if (p->doors == 0 || p->qhead != NULL || j->len > FUT__PP_FRAME_BYTES ||
	    (j->shared & PP_SHARED_INPUT))
		return false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (!w->door)
			continue;
		if (!fut__pp_send_one(p, w, j))
			return false;
		w->door = false;
		p->doors--;
		p->handed++;
		/* What the socket did not take now waits for the manager's
		 * POLLOUT. */
		if (fut__pp_out_pending(w))
			fut__pp_wake(p);
		return true;
	}
	return false;
}
