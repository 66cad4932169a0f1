/*
 * manager.c: the process pool's manager thread, its loop.
 *
 * Owns: the loop, the wake-up and the dispatch.  One thread multiplexes
 * the wake fd, the fork server's control socket and each worker's task
 * socket and result pipe with poll(2): it hands queued jobs to ready
 * workers in frames (send.c streams them out), reads results in
 * (recv.c), asks for workers and kills (slot.c), enforces task_timeout
 * and interrupts, breaks the pool, and ends once shut down and drained.
 * It completes the futures, so done callbacks run here.
 * Threads: this one; it blocks every signal.  fut__pp_wake is called
 * from any thread.
 * Locks: takes p->lock only to pop, push back or drain the queue, to
 * read the shutdown state and to open and close the doors of idle
 * workers around its sleep in poll (door.c); never while a future
 * completes.
 *
 * A job's way: queued -> popped into a frame for worker w (claimed with
 * fut__future_start, given an id) -> in w's in-flight list -> its result
 * record arrives, in order -> completed.  When w dies,
 * fut__pp_slot_finalize decides for each job still in flight.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

void fut__pp_wake(struct ppool *p)
{
	/* At most one write per sleep of the manager, which clears
	 * wake_pending once it drained the fd (loop() says why in that
	 * order).  The fd is closed only when the pool is freed, and every
	 * caller holds a reference on it (the handle's or a job's). */
	if (!atomic_exchange(&p->wake_pending, true)) {
		uint64_t one = 1;
		(void)!write(p->wake_fd, &one, sizeof(one));
	}
}

void fut__pp_break(struct pp_mgr *m, const char *why)
{
	struct ppool *p = m->p;
	struct pp_job *list = NULL;
	fut__pp_lock(p);
	fut__pp_break_locked(p, why, &list);
	fut__pp_unlock(p);
	fut__pp_fail_broken(p, list);
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_FREE)
			continue;
		/* One still in its initializer may never read the EOF of a
		 * retirement: nothing is left for it to do. */
		if (w->head != NULL || w->state == PW_SPAWNING ||
		    w->state == PW_STARTING)
			fut__pp_slot_kill(m, w, FUT_EBROKEN, true, 0);
		else
			fut__pp_slot_retire(w);
	}
}

/* The sooner of two deadlines, -1 being none. */
static int64_t sooner(int64_t a, int64_t b)
{
	return a < 0 || (b >= 0 && b < a) ? b : a;
}

/*
 * Work conservation: the tasks sent to a worker that has been silent for
 * FUT__PP_TAKE_BACK_NS (it runs a long task) and that it has not started
 * come back to the head of the queue, for the next worker that is free
 * (dispatch sends nothing more to the silent one meanwhile).  Sets
 * m->take_back_at to when a worker that has tasks waiting will have been
 * silent that long (-1: none).  True when it took some back.
 */
static bool take_back_waiting(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	m->take_back_at = -1;
	size_t taken = 0;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->tail == NULL || w->kill_reason != 0 ||
		    fut__pp_claim_started(p, w->tail))
			continue;
		int64_t due = w->active_ns + FUT__PP_TAKE_BACK_NS;
		if (!fut__pp_in_task(p, w)) {
			/* Not inside a task: it still reads what it was sent
			 * (a large input takes a while), or is about to
			 * start it; nothing is held behind a long task.
			 * Taken back then, a large input would be sent
			 * again and again and never run.  Looked at again
			 * soon: it may start a long task meanwhile. */
			if (due < m->now + FUT__PP_RECHECK_NS)
				due = m->now + FUT__PP_RECHECK_NS;
		} else if (due <= m->now) {
			taken += fut__pp_take_back(m, w, false);
			continue;
		}
		m->take_back_at = sooner(m->take_back_at, due);
	}
	return taken != 0;
}

/* shutdown(CANCEL_PENDING) asked: every task sent to a worker that has
 * not started it is cancelled, and the caller told.  Also on a worker
 * killed for one task (an interrupt, a timeout): the others sent to it
 * would be queued again when it dies, after the caller was told. */
static void cancel_sent(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	fut__pp_lock(p);
	uint64_t asked = p->cancel_asked;
	fut__pp_unlock(p);
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		/* A worker being killed gives back what it has not started
		 * too, unless every job of its ends with the kill: one killed
		 * for a malformed frame (no job named) was skipped, and its
		 * tasks sent ahead stayed pending after the call returned
		 * (found by review, 2026-12-07). */
		if (w->kill_reason == 0 || !w->kill_all)
			(void)fut__pp_take_back(m, w, true);
	}
	fut__pp_lock(p);
	p->cancel_done = asked;
	pthread_cond_broadcast(&p->done_cv);
	fut__pp_unlock(p);
}

/*
 * Submitters wait for room under max_queue: the tasks sent that started
 * since (their claim words say so; their results may be a long task
 * away) and the queued ones cancelled no longer count.  True while
 * someone waits: the manager then looks again every
 * FUT__PP_RECHECK_NS, since a worker starting a task tells it nothing.
 */
static bool room_scan(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	if (p->max_queue == 0 || atomic_load(&p->room_waiters) == 0)
		return false;
	bool freed = false;
	for (uint32_t i = 0; i < p->nslots; i++)
		for (struct pp_job *j = p->workers[i].head; j != NULL;
		     j = j->next)
			if (atomic_load_explicit(&j->counted,
						 memory_order_relaxed) &&
			    fut__pp_claim_started(p, j))
				freed |= fut__pp_uncount_quiet(j);
	fut__pp_lock(p);
	for (struct pp_job *j = p->qhead; j != NULL; j = j->next)
		if (atomic_load_explicit(&j->counted, memory_order_relaxed) &&
		    fut__future_state(&j->fut) == FUT__S_CANCELLED)
			freed |= fut__pp_uncount_quiet(j);
	if (freed)
		pthread_cond_broadcast(&p->room_cv);
	fut__pp_unlock(p);
	return true;
}

/* Hands queued work to ready workers and spawns the ones it needs.
 * Returns true when it dropped cancelled jobs: a worker may then have got
 * less than it could take, and the caller runs it again. */
static bool dispatch(struct pp_mgr *m)
{
	size_t dropped = 0;
	struct ppool *p = m->p;
	struct pp_job *batches[FUT_MAX_WORKERS * 2];
	struct pp_worker *to[FUT_MAX_WORKERS * 2];
	size_t nb = 0;
	for (uint32_t i = 0; i < p->nslots; i++)
		fut__pp_purge(m, &p->workers[i]);
	fut__pp_lock(p);
	for (uint32_t i = 0; i < p->nslots && p->qhead != NULL; i++) {
		struct pp_worker *w = &p->workers[i];
		size_t n = fut__pp_allowance(p, w);
		if (n == 0)
			continue;
		/* Nothing more behind a long task: it would wait there while
		 * another worker could take it. */
		if ((w->head != NULL || fut__pp_in_task(p, w)) &&
		    m->now - w->active_ns >= FUT__PP_TAKE_BACK_NS) {
			/* Its task's result went early (a large one is sent
			 * as the task gives it): when the task ends, the
			 * worker writes nothing that would wake us.  Look
			 * again soon (found by review, 2026-12-07: a task
			 * queued behind it waited for the next submit). */
			if (w->head == NULL)
				m->recheck_at =
					sooner(m->recheck_at,
					       m->now + FUT__PP_RECHECK_NS);
			continue;
		}
		/* A second frame in flight only for bulk work (a chunk of
		 * many), so that a worker never waits between frames. */
		if (w->frames >= 2 || (w->frames == 1 && p->qhead->chunk_end))
			continue;
		batches[nb] = fut__pp_pop_batch_locked(p, n);
		to[nb++] = w;
	}
	size_t live = 0, coming = 0;
	for (uint32_t i = 0; i < p->nslots; i++) {
		int st = p->workers[i].state;
		if (st == PW_SPAWNING || st == PW_STARTING)
			coming++;
		if (st == PW_SPAWNING || st == PW_STARTING || st == PW_READY)
			live++;
	}
	/* The walk is bounded by max_workers chunks, and only made while the
	 * pool may still grow. */
	size_t want = 0;
	if (p->qhead != NULL && !p->broken && live < p->max_workers)
		want = fut__pp_queued_chunks_locked(p, p->max_workers);
	fut__pp_unlock(p);
	for (size_t i = 0; i < nb; i++)
		dropped += fut__pp_send_batch(p, to[i], batches[i]);
	if (want == 0 || m->now < p->spawn_after_ns || p->fs_sock < 0)
		return dropped != 0;
	for (uint32_t i = 0;
	     i < p->nslots && coming < want && live < p->max_workers; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state != PW_FREE)
			continue;
		const char *what;
		int err = fut__pp_slot_spawn(m, w, &what);
		if (err != 0) {
			/* No what: its socket is full; tried again once it
			 * has room. */
			if (what != NULL)
				fut__pp_slot_spawn_failed(m, w, what, err);
			break;
		}
		coming++;
		live++;
	}
	return dropped != 0;
}

/* Retires workers that reached max_tasks_per_child.  Not one still
 * inside its last task, whose result went early (a large one is sent as
 * the task gives it): retired, it no longer counted, and a new worker
 * ran tasks beside it, more than max_workers at once (found by review,
 * 2026-12-07).  Its end writes nothing, so while tasks wait it is looked
 * at again soon. */
static void retire_spent(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	if (p->max_tasks_per_child == 0)
		return;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state != PW_READY || w->head != NULL ||
		    w->sent < p->max_tasks_per_child)
			continue;
		int64_t again = m->now + FUT__PP_RECHECK_NS;
		if (!fut__pp_in_task(p, w)) {
			fut__pp_slot_retire(w);
			continue;
		}
		fut__pp_lock(p);
		bool waiting = p->qhead != NULL;
		fut__pp_unlock(p);
		if (waiting)
			m->recheck_at = sooner(m->recheck_at, again);
	}
}

/* ------------------------------------------------------------------ */
/* Interrupts and deadlines                                            */

/* Whether w's list holds j. */
static bool listed(const struct pp_worker *w, const struct pp_job *j)
{
	for (const struct pp_job *k = w->head; k != NULL; k = k->next)
		if (k == j)
			return true;
	return false;
}

/*
 * An interrupt asked for j, a task of w's list: w is killed only if j is
 * the task it runs now.  One it has not started is taken back (with the
 * others not started, which run as they would), and ends interrupted as
 * it is sent again (send.c); one it ran already sends its result (a
 * frame held it back).  Before (found by review, 2026-12-07) w was
 * killed for j whatever it ran: the task it did run was run again
 * elsewhere, its side effects twice, and j's result was lost.  True when
 * the scan of w's list must stop (the list changed, or w dies).
 */
static bool interrupt_one(struct pp_mgr *m, struct pp_worker *w,
			  struct pp_job *j)
{
	struct ppool *p = m->p;
	if (!fut__pp_claim_started(p, j)) {
		(void)fut__pp_take_back(m, w, false);
		if (!listed(w, j))
			return true;
		/* Claimed meanwhile: it runs now, or ran. */
	}
	struct fut__worker_slot *s = &p->slots[w->slot];
	uint64_t id = atomic_load_explicit(&s->started, memory_order_acquire);
	uint64_t done =
		atomic_load_explicit(&s->finished, memory_order_acquire);
	/* Ids grow along the list.  One below the started one, or that one
	 * finished, ran: nothing to kill.  Else j runs, or was claimed and
	 * the slot does not say so yet (the worker claims, then stores). */
	if (j->id < id || (j->id == id && done == id))
		return false;
	fut__pp_slot_kill(m, w, FUT_ECANCELLED, false, j->id);
	return true;
}

static void scan_interrupts(struct pp_mgr *m, bool all)
{
	struct ppool *p = m->p;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->kill_reason != 0 || w->state == PW_FREE)
			continue;
		if (all && (w->head != NULL || fut__pp_in_task(p, w))) {
			/* What it has not started runs elsewhere. */
			(void)fut__pp_take_back(m, w, false);
			fut__pp_slot_kill(m, w, FUT_ECANCELLED, true, 0);
			continue;
		}
		if (all &&
		    (w->state == PW_SPAWNING || w->state == PW_STARTING)) {
			/* In its initializer (it has no task yet): one that
			 * never returns would keep the shutdown waiting for
			 * ever.  Killed before its pid is known, it dies as
			 * that comes (on_ctl). */
			fut__pp_slot_kill(m, w, FUT_ECANCELLED, true, 0);
			continue;
		}
		for (struct pp_job *j = w->head; j != NULL; j = j->next) {
			if (!(atomic_load(&j->fut.flags) & FUT__F_INTERRUPT))
				continue;
			if (interrupt_one(m, w, j))
				break;
		}
	}
}

/* Kills workers whose task ran over task_timeout; returns the next
 * deadline (-1: none). */
static int64_t check_deadlines(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	int64_t next = -1;
	if (p->timeout_ns == 0)
		return -1;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->kill_reason != 0 || w->state == PW_FREE ||
		    (w->head == NULL && !fut__pp_in_task(p, w)))
			continue;
		struct fut__worker_slot *s = &p->slots[w->slot];
		uint64_t id =
			atomic_load_explicit(&s->started, memory_order_acquire);
		uint64_t done = atomic_load_explicit(&s->finished,
						     memory_order_acquire);
		if (id == 0 || done == id) {
			/* Between tasks: the next is due timeout_ns after it
			 * starts, so no sooner than that from now. */
			if (next < 0 || m->now + p->timeout_ns < next)
				next = m->now + p->timeout_ns;
			continue;
		}
		/* A task runs: one of w's jobs, or an earlier one whose result
		 * came back while it went on (then the jobs sent behind it
		 * wait for it, and run elsewhere once it is killed). */
		int64_t due = atomic_load_explicit(&s->started_ns,
						   memory_order_relaxed) +
			      p->timeout_ns;
		if (due <= m->now) {
			fut__pp_slot_kill(m, w, FUT_EDEADLINE, false, id);
			continue;
		}
		if (next < 0 || due < next)
			next = due;
	}
	return next;
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */

/* True when the manager may end: shut down, nothing queued or in flight,
 * every worker gone. */
static bool step_shutdown(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	fut__pp_lock(p);
	bool drained = p->shutdown && p->qhead == NULL;
	fut__pp_unlock(p);
	if (!drained)
		return false;
	bool busy = false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->head != NULL || w->state == PW_SPAWNING)
			busy = true;
	}
	if (busy)
		return false;
	m->closing = true;
	bool any = false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_FREE)
			continue;
		if (w->task_fd >= 0)
			fut__pp_slot_retire(w);
		any = true;
	}
	return !any;
}

static int poll_timeout(struct pp_mgr *m, int64_t deadline, bool waiters)
{
	struct ppool *p = m->p;
	if (waiters)
		deadline = sooner(deadline, m->now + FUT__PP_RECHECK_NS);
	deadline = sooner(deadline, m->take_back_at);
	deadline = sooner(deadline, m->recheck_at);
	if (p->spawn_after_ns > m->now)
		deadline = sooner(deadline, p->spawn_after_ns);
	if (deadline < 0)
		return -1;
	int64_t ms = (deadline - m->now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

static void loop(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	for (;;) {
		m->now = fut__now_ns();
		/* Drain, then clear: cleared first, a waker's write landing
		 * in between was drained with the flag left set, and every
		 * later waker, seeing it set, wrote nothing while we slept in
		 * poll (a lost wake-up).  Work published before a waker's
		 * flag is read below, after the clear. */
		uint64_t v;
		(void)!read(p->wake_fd, &v, sizeof(v));
		atomic_store(&p->wake_pending, false);
		fut__pp_lock(p);
		bool all = p->interrupt_all;
		p->interrupt_all = false;
		/* Queued to run again: they ran, and end as interrupted. */
		struct pp_job *reruns = all ? fut__pp_take_reruns_locked(p) :
					      NULL;
		fut__pp_unlock(p);
		fut__pp_end_rerun(reruns);
		if (atomic_exchange(&p->revoke_scan, false))
			for (uint32_t i = 0; i < p->nslots; i++)
				fut__pp_purge(m, &p->workers[i]);
		bool scan = atomic_exchange(&p->interrupt_scan, false);
		if (all || scan)
			scan_interrupts(m, all);
		m->take_back_at = -1;
		m->recheck_at = -1;
		retire_spent(m);
		fut__pp_slot_resend_kills(m);
		fut__pp_lock(p);
		bool cancel = p->cancel_asked != p->cancel_done;
		fut__pp_unlock(p);
		if (cancel)
			cancel_sent(m);
		if (!m->closing)
			while (dispatch(m) || take_back_waiting(m))
				;
		bool waiters = room_scan(m);
		if (step_shutdown(m))
			return;
		int64_t deadline =
			sooner(check_deadlines(m), fut__pp_lost_pipes(m));
		size_t n = 0;
		m->pfd[n] = (struct pollfd){ p->wake_fd, POLLIN, 0 };
		m->pfd_w[n++] = NULL;
		if (p->fs_sock >= 0) {
			/* POLLOUT: room for what did not fit. */
			short fs_ev = m->fs_full ? POLLIN | POLLOUT : POLLIN;
			m->pfd[n] = (struct pollfd){ p->fs_sock, fs_ev, 0 };
			m->pfd_w[n++] = NULL;
		}
		size_t first = n;
		for (uint32_t i = 0; i < p->nslots; i++) {
			struct pp_worker *w = &p->workers[i];
			if (w->state == PW_FREE)
				continue;
			short ev = 0;
			int fd = -1;
			if (w->result_fd >= 0 && !w->eof) {
				fd = w->result_fd;
				ev = POLLIN;
			}
			if (fd >= 0) {
				m->pfd[n] = (struct pollfd){ fd, ev, 0 };
				m->pfd_w[n++] = w;
			}
			if (w->task_fd >= 0 && fut__pp_out_pending(w)) {
				m->pfd[n] = (struct pollfd){ w->task_fd,
							     POLLOUT, 0 };
				m->pfd_w[n++] = w;
			}
		}
		/* Doors only around a poll that may sleep: a busy manager's
		 * loop takes p->lock for them not at all. */
		int timeout = poll_timeout(m, deadline, waiters);
		bool doors = timeout != 0 && fut__pp_doors_open(m);
		int rc = poll(m->pfd, n, timeout);
		if (doors)
			fut__pp_doors_close(m);
		if (rc < 0)
			continue;
		m->now = fut__now_ns();
		bool ctl = first == 2 && m->pfd[1].revents != 0;
		for (size_t i = first; i < n && rc > 0; i++) {
			struct pp_worker *w = m->pfd_w[i];
			if (m->pfd[i].revents == 0)
				continue;
			if (m->pfd[i].events & POLLOUT)
				fut__pp_flush_out(p, w);
			else
				fut__pp_read_results(m, w);
			if (w->eof && w->orphan && w->state != PW_FREE)
				fut__pp_slot_finalize(m, w);
		}
		if (ctl)
			fut__pp_fs_read(m);
	}
}

static void teardown(struct ppool *p)
{
	for (uint32_t i = 0; i < p->nslots; i++) {
		fut__pp_frame_fini(&p->workers[i].out);
	}
	/* EOF: the fork server kills what is left and exits. */
	if (p->fs_sock >= 0)
		fut__forkserver_stop(&p->fs_sock, &p->fs_pid, &p->fs_pidfd);
}

void *fut__pp_manager_main(void *arg)
{
	struct ppool *p = arg;
	fut__current_executor_set(&p->ex);
	fut__callback_mask_set(&p->cfg.worker_mask);
	struct pp_mgr m = { 0 };
	m.p = p;
	m.pfd = p->pfd;
	m.pfd_w = p->pfd_w;
	loop(&m);
	teardown(p);
	fut__pp_lock(p);
	p->manager_done = true;
	/* The wake fd stays open until the pool is freed: a submitter that
	 * queued a job just before the shutdown may still write to it. */
	bool self_free = p->free_on_exit;
	pthread_cond_broadcast(&p->done_cv);
	fut__pp_unlock(p);
	if (self_free) {
		pthread_detach(pthread_self());
		fut__pp_unref(p); /* the handle's */
	}
	fut__pp_unref(p);
	return NULL;
}
