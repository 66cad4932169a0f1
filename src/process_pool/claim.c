/*
 * claim.c: tasks sent ahead to a worker, until it claims them.
 *
 * Owns: the claim words of the workers' shared slots (child.h).  A task
 * sent to a worker is SENT there until the worker claims it (RUN), just
 * before it runs it; until then the parent may take it back (REVOKED),
 * and the worker skips it.  One compare-and-swap on the word decides
 * between them, so a task never both runs there and runs elsewhere (or
 * ends cancelled).  Its future is SENT meanwhile: pending, cancellable
 * (fut_cancel takes the task back through the job's ops, jobs.c), and
 * RUNNING once the worker claimed it.  The manager takes back the tasks
 * waiting behind a long one when another worker idles (manager.c), every
 * task not started at shutdown(CANCEL_PENDING), and drops from a worker's
 * list the tasks a caller took back.  Also how many tasks a worker may be
 * sent ahead (fut__pp_allowance), which its claim words bound.
 * Threads: fut__pp_claim_revoke and fut__pp_claim_started run in any
 * thread (a cancelling or polling caller); the rest is the manager's.
 * Locks: none: the claim word is the decision; the worker lists are the
 * manager's alone; the queue's lock through jobs.c.
 */
#include <assert.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

/* The claim word of ticket t: slot (t >> 32) - 1, key (uint32_t)t. */
static _Atomic uint32_t *word_of(struct ppool *p, uint64_t t)
{
	return &p->slots[(t >> 32) - 1].claim[(uint32_t)t % FUT__PP_CLAIMS];
}

void fut__pp_claim_sent(struct ppool *p, struct pp_worker *w, struct pp_job *j)
{
	/* Its key's word is free: fewer than FUT__PP_CLAIMS jobs are in
	 * w's list (the dispatch's allowance), and a task taken back that w
	 * has yet to read finds the word at another key, so skips it. */
	assert(w->inflight < FUT__PP_CLAIMS);
	/*
	 * And the key is the slot's once (in 2^30 sends: its word keeps 30
	 * bits of it): a new worker's keys go on from the last one's there.
	 * A canceller loads the ticket after it read the future SENT, then
	 * swaps the word, with no lock; meanwhile the task may be taken
	 * back, its worker die and the slot be respawned.  Were the keys
	 * to start again, the ticket it holds would name the word of
	 * another task of the new worker: revoked in its place (it went
	 * back to the queue), or RUN, and the canceller's own queued task
	 * was made RUNNING, never to be cancelled (found by review,
	 * 2026-12-07).  A word never holds a key's values again, so that
	 * ticket matches no other task's value, however stale or new the
	 * one it reads: no ordering against the respawn's reset is needed.
	 */
	uint32_t key = w->next_key++;
	uint64_t t = (uint64_t)(w->slot + 1) << 32 | key;
	atomic_store_explicit(word_of(p, t),
			      fut__pp_claim_word(key, FUT__PP_SENT),
			      memory_order_release);
	atomic_store_explicit(&j->ticket, t, memory_order_release);
}

int fut__pp_claim_revoke(struct ppool *p, const struct pp_job *j)
{
	uint64_t t = atomic_load_explicit(&j->ticket, memory_order_acquire);
	if (t == 0)
		return FUT__MOVED;
	uint32_t key = (uint32_t)t;
	uint32_t want = fut__pp_claim_word(key, FUT__PP_SENT);
	uint32_t revoked = fut__pp_claim_word(key, FUT__PP_REVOKED);
	if (atomic_compare_exchange_strong_explicit(
		    word_of(p, t), &want, revoked, memory_order_acq_rel,
		    memory_order_acquire) ||
	    want == revoked)
		return FUT__REVOKED;
	if (want == fut__pp_claim_word(key, FUT__PP_RUN))
		return FUT__STARTED;
	return FUT__MOVED;
}

bool fut__pp_claim_started(struct ppool *p, const struct pp_job *j)
{
	uint64_t t = atomic_load_explicit(&j->ticket, memory_order_acquire);
	return t != 0 &&
	       atomic_load_explicit(word_of(p, t), memory_order_acquire) ==
		       fut__pp_claim_word((uint32_t)t, FUT__PP_RUN);
}

void fut__pp_unlink(struct pp_worker *w, struct pp_job *prev, struct pp_job *j)
{
	if (prev != NULL)
		prev->next = j->next;
	else
		w->head = j->next;
	if (w->tail == j)
		w->tail = prev;
	j->next = NULL;
	if (j->frame_last) {
		j->frame_last = false;
		w->frames--;
	}
	w->inflight--;
}

/* j, out of its worker's list and not started there, goes back to the
 * queue (true), or is dropped: cancelled meanwhile. */
static bool back_to_queue(struct pp_job *j)
{
	/* RUNNING: it ran on a worker that died before its result came
	 * (slot.c), and runs again. */
	if (fut__future_state(&j->fut) == FUT__S_RUNNING ||
	    fut__future_unsend(&j->fut))
		return true;
	fut__pp_job_drop(j);
	return false;
}

void fut__pp_purge(struct pp_mgr *m, struct pp_worker *w)
{
	struct ppool *p = m->p;
	struct pp_job *j;
	while ((j = w->head) != NULL) {
		uint64_t t =
			atomic_load_explicit(&j->ticket, memory_order_relaxed);
		if (atomic_load_explicit(word_of(p, t), memory_order_acquire) !=
		    fut__pp_claim_word((uint32_t)t, FUT__PP_REVOKED))
			return;
		fut__pp_unlink(w, NULL, j);
		w->sent--; /* it will not run there */
		if (back_to_queue(j))
			fut__pp_requeue(p, j, j);
	}
}

size_t fut__pp_take_back(struct pp_mgr *m, struct pp_worker *w, bool cancel)
{
	struct ppool *p = m->p;
	struct pp_job *prev = NULL, *j = w->head, *first = NULL, *last = NULL;
	size_t n = 0;
	while (j != NULL) {
		struct pp_job *next = j->next;
		int r = fut__pp_claim_revoke(p, j);
		assert(r != FUT__MOVED); /* its word is its own while listed */
		if (r != FUT__REVOKED) {
			prev = j;
			j = next;
			continue;
		}
		fut__pp_unlink(w, prev, j);
		w->sent--; /* it will not run there */
		n++;
		if (cancel && fut_cancel(&j->fut)) {
			fut__pp_job_drop(j);
		} else if (back_to_queue(j)) {
			if (last != NULL)
				last->next = j;
			else
				first = j;
			last = j;
		}
		j = next;
	}
	if (last != NULL)
		last->chunk_end = true;
	fut__pp_requeue(p, first, last);
	return n;
}

size_t fut__pp_allowance(const struct ppool *p, const struct pp_worker *w)
{
	if (w->state != PW_READY || w->task_fd < 0 || fut__pp_out_pending(w))
		return 0;
	size_t n = FUT__PP_CLAIMS - w->inflight;
	/* Every job in w's list must own its claim word, key % CLAIMS: the
	 * keys from its oldest to the next one stay under CLAIMS apart.
	 * Counting the list is not enough: a job given a key that left no
	 * job in the list (cancelled as it was sent, or failed) widens the
	 * span, and a later key then took the word of a task w had yet to
	 * answer (found by review, 2026-12-07: an assertion in the caller,
	 * or without asserts a task skipped and others run twice). */
	if (w->head != NULL) {
		uint32_t oldest = (uint32_t)atomic_load_explicit(
			&w->head->ticket, memory_order_relaxed);
		uint32_t span = w->next_key - oldest;
		n = span >= FUT__PP_CLAIMS ? 0 : FUT__PP_CLAIMS - span;
	}
	/* Half the claims at most: room for a second frame while the
	 * worker runs the first, so that it never waits between them. */
	if (n > FUT__PP_CLAIMS / 2)
		n = FUT__PP_CLAIMS / 2;
	if (p->max_tasks_per_child != 0 && p->max_tasks_per_child - w->sent < n)
		n = p->max_tasks_per_child - w->sent;
	if (p->chunk != 0) {
		if (p->chunk < n)
			n = p->chunk;
	} else if (p->task_ns != 0) {
		/* Automatic: about FUT__PP_FRAME_NS of work per frame, so
		 * that a long task holds few others behind it. */
		int64_t depth = FUT__PP_FRAME_NS / p->task_ns;
		if ((size_t)(depth < 1 ? 1 : depth) < n)
			n = (size_t)(depth < 1 ? 1 : depth);
	}
	return n;
}
