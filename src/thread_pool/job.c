/*
 * thread_pool/job.c: a thread-pool job, from submit to its block's reuse.
 *
 * Owns: struct job (a task and its future in one recycled block from
 * core/slab.c), its input (inline or a heap copy), running its task on a
 * worker's stack, ending jobs drained at shutdown, and the pool's memory
 * (freed with its last reference: the handle, each worker, and the job
 * blocks', one between them).
 * Threads: submitters create jobs; the worker (or the waiter running it
 * inline) runs one; whoever drops the last reference of its future
 * recycles it.
 * Locks: none of its own: a job is reached through the queue's locks
 * (queue.c) or by the one thread that took it.
 */
#include <string.h>

#include "thread_pool/pool.h"

static void job_destroy(fut_future *f);
static void job_cancelled(fut_future *f);

const struct fut__future_ops fut__tp_job_ops = {
	.interrupt = NULL, /* the flag fut_interrupt() sets is all we need */
	.assist = fut__tp_job_assist,
	.runs_here = fut__tp_job_runs_here,
	.destroy = job_destroy,
	.cancelled = job_cancelled,
};

/* ------------------------------------------------------------------ */
/* The pool's memory                                                   */

static void pool_free(struct tpool *p)
{
	for (size_t i = 0; i < p->max_threads; i++)
		fut__free(p->workers[i]);
	fut__free(p->workers);
	pthread_cond_destroy(&p->ctl_cv);
	pthread_mutex_destroy(&p->ctl);
	fut__free(p);
}

void fut__tp_pool_unref(struct tpool *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		pool_free(p);
}

/*
 * The job blocks hold one pool reference between them, not one each: a
 * read-modify-write on the pool per submit, and another per destroy,
 * cost the submitter of a stream of tiny tasks ~15% (docs/perf-log.md,
 * 2026-12-05 "W1").  A job counts once pushed (q.pushed, written under
 * plock: no atomic of its own); a job whose push failed is discarded,
 * never destroyed.  Before the settle jobs_left only goes down from 0,
 * so no destroy finds it at 1; after it, it reaches 0 exactly once.
 */
void fut__tp_jobs_settle(struct tpool *p)
{
	/* Final: the queue is closed, and a push after the close fails. */
	uint64_t pushed =
		atomic_load_explicit(&p->q.pushed, memory_order_relaxed);
	if (atomic_fetch_add_explicit(&p->jobs_left, pushed,
				      memory_order_acq_rel) +
		    pushed ==
	    0)
		fut__tp_pool_unref(p);
}

/* ------------------------------------------------------------------ */
/* Jobs                                                                */

struct job *fut__tp_job_new(struct tpool *p, fut_fn fn, void *arg,
			    const void *data, size_t len, bool bytes)
{
	bool inline_input = bytes && len > 0 && len <= FUT__TP_INLINE_BYTES;
	struct job *j = fut__slab_get(fut__slab_class_for(
		sizeof(struct job) +
		(inline_input ? sizeof(struct job_input) + len : 0)));
	if (j == NULL)
		return NULL;
	struct job_input *in = NULL;
	if (inline_input) {
		in = (struct job_input *)(void *)j->bytes;
	} else if (bytes && len > 0) {
		/* len <= FUT_MAX_BYTES (checked by fut_submit_bytes). */
		in = fut__malloc(sizeof(*in) + len);
		if (in == NULL) {
			fut__slab_put(j);
			return NULL;
		}
	}
	if (in != NULL) {
		in->len = len;
		memcpy(in->bytes, data, len);
	}
	fut__future_init(&j->fut, &p->fops);
	/* The caller's reference and the queue's. */
	atomic_store_explicit(&j->fut.refs, 2, memory_order_relaxed);
	j->fut.task.fn = fn;
	j->fut.task.data = bytes ? in : arg;
	if (bytes)
		atomic_store_explicit(&j->fut.flags, FUT__F_EXECUTOR,
				      memory_order_relaxed);
	set_next_job(j, NULL);
	return j;
}

/* True if j came from fut_submit_bytes (its data is a job_input). */
static bool job_has_input(const struct job *j)
{
	return atomic_load_explicit(&j->fut.flags, memory_order_relaxed) &
	       FUT__F_EXECUTOR;
}

/* Frees j's heap copy of its input, if it has one.  Only while the job
 * slots still hold the task (before the future completes), by the thread
 * that ran the task or dropped it unstarted. */
static void job_free_input(struct job *j)
{
	const void *in = j->fut.task.data;
	if (job_has_input(j) && in != NULL && in != (const void *)j->bytes)
		fut__free((void *)(uintptr_t)in);
}

/* A job whose task will never run: its input goes, and its task slots are
 * emptied, so that the future's outcome reads as none (fut_cancel left
 * them alone). */
void fut__tp_job_forget(struct job *j)
{
	job_free_input(j);
	j->fut.value = NULL; /* also the message */
	j->fut.len = 0;
}

/* Runs j's task in t, on the stack of the thread that runs it, then frees
 * the input, before fut__task_finish writes the outcome over the slots
 * that name it. */
void fut__tp_job_run(fut_task *t, struct job *j)
{
	bool bytes = job_has_input(j);
	const void *data = j->fut.task.data;
	const struct job_input *in = bytes ? data : NULL;
	fut__task_init(t, j->fut.task.fn,
		       bytes ? NULL : (void *)(uintptr_t)data,
		       in != NULL ? in->bytes : NULL, in != NULL ? in->len : 0,
		       &j->fut.flags);
	fut__task_run(t);
	job_free_input(j);
}

/* A job that was never queued: back to the cache (the caller adjusts the
 * pool's references). */
void fut__tp_job_discard(struct job *j)
{
	fut__tp_job_forget(j);
	fut__future_fini(&j->fut);
	fut__slab_put(j);
}

/* Cancelled before it started: queued, or taken and not yet started
 * (its room went back then).  The block holds the pool. */
static void job_cancelled(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	fut__tp_queue_cancelled(&job_pool(j)->q, j);
}

static void job_destroy(fut_future *f)
{
	struct job *j = fut__container_of(f, struct job, fut);
	struct tpool *p = job_pool(j);
	fut__slab_put(j);
	if (atomic_fetch_sub_explicit(&p->jobs_left, 1, memory_order_acq_rel) ==
	    1)
		fut__tp_pool_unref(p);
}

/* Starts j, if still pending, and fails it with code, its input freed;
 * held: its done callbacks stay on it (fut__future_fail_held). */
static int fail_unstarted(struct job *j, int code, bool held)
{
	int rc = fut__future_start(&j->fut);
	if (rc == FUT_OK) {
		job_free_input(j);
		if (held)
			(void)fut__future_fail_held(&j->fut, code);
		else
			(void)fut__future_fail(&j->fut, code, 0, NULL);
	}
	return rc;
}

int fut__tp_job_fail_unstarted(struct job *j, int code)
{
	return fail_unstarted(j, code, false);
}

/* Appends j to the list of head *head and last *last. */
static void append_job(struct job **head, struct job **last, struct job *j)
{
	set_next_job(j, NULL);
	if (*last != NULL)
		set_next_job(*last, j);
	else
		*head = j;
	*last = j;
}

/*
 * A drain ends its jobs in two passes: every job first (no user code
 * runs), then their done callbacks, one job after another.  A callback
 * may wait, untimed, for another job of the same drain (any wait: its
 * own thread may be no worker, or a worker that holds no slot, and
 * fut_wait(FIRST_COMPLETED) or as_completed run no job inline): ended
 * one at a time, each with its callbacks, that job would end only once
 * the callback had returned, and the wait never did (found by review,
 * 2026-12-07, fifteenth session).
 */
void fut__tp_drained_settle(struct job **list, int code, struct job **rest)
{
	struct job *held = NULL, *held_last = NULL;
	struct job *other = NULL, *other_last = NULL;
	for (struct job *j = *list, *next; j != NULL; j = next) {
		next = next_job(j);
		/* Claimed from PENDING only: a task a worker started inline
		 * is its own (its end runs its callbacks), and one a waiter
		 * ended first had them run by that waiter.  Only the jobs
		 * settled here have callbacks held for the second pass: the
		 * waiter list of a job still running holds waits, not only
		 * callbacks (review, 2026-12-07, fifteenth session: that
		 * pass ran them as callbacks, the task running). */
		bool mine = false;
		if (code == FUT_ECANCELLED) {
			if (fut__future_cancel_held(&j->fut, &mine))
				fut__tp_job_forget(j);
		} else {
			int rc = fail_unstarted(j, code, true);
			mine = rc == FUT_OK;
			if (rc == FUT_ECANCELLED)
				fut__tp_job_forget(j);
		}
		if (mine)
			append_job(&held, &held_last, j);
		else
			append_job(&other, &other_last, j);
	}
	*list = held;
	*rest = other;
}

void fut__tp_drained_callbacks(struct job *held, struct job *rest)
{
	while (held != NULL) {
		struct job *j = held;
		held = next_job(j);
		fut__future_run_held(&j->fut);
		fut_release(&j->fut); /* the queue's */
	}
	while (rest != NULL) {
		struct job *j = rest;
		rest = next_job(j);
		fut_release(&j->fut); /* the queue's */
	}
}
