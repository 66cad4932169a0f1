/*
 * jobs.c: the process pool's jobs, how they end, and its queue.
 *
 * Owns: the job block (a task and its future in one block, the input
 * copied behind it, or from FUT__TASK_SHARED_MIN bytes into a sealed memfd
 * whose fd the block keeps until the outcome; small blocks come from the
 * core's slab), its future's ops (destroy, interrupt), ending a job with a
 * failure, and the queue: appending, putting jobs back at its head when
 * their worker died, popping a frame's worth, draining it when the pool
 * breaks.
 * Threads: submitters create and enqueue jobs (or hand one to an idle
 * worker, door.c); the manager thread pops, requeues and ends them; any
 * thread may drop the last reference.
 * Locks: p->lock guards the queue and the broken state; the *_locked
 * functions assert that the caller holds it.  Never held while a future
 * completes.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

static void job_destroy(fut_future *f)
{
	struct pp_job *j = (struct pp_job *)(void *)f;
	struct ppool *p = j->pool;
	if (j->shared & PP_SHARED_RESULT)
		(void)munmap(j->fut.value, j->fut.len);
	fut__pp_job_input_close(j);
	fut__slab_free(j, j->slab);
	fut__pp_unref(p);
}

/*
 * A fork child's copy of a job (docs/api.md, "Executors in a fork
 * child"): its task is in the parent's queue or worker, out of this
 * process's reach.  Its ops stay off the pool's fds and shared slots:
 * the eventfd and the claim words are the parent's too (a cancel here
 * would take a task back from the parent's worker), and once the child
 * freed the pool they are closed (their numbers reused) and unmapped.
 */
static bool inherited(const struct pp_job *j)
{
	return fut__executor_orphaned(&j->pool->ex);
}

/* The caller asked a running task to stop: the manager kills its worker.
 * In a fork child the flag fut_interrupt() raised is all there is. */
static void job_interrupt(fut_future *f)
{
	struct pp_job *j = (struct pp_job *)(void *)f;
	if (inherited(j))
		return;
	atomic_store(&j->pool->interrupt_scan, true);
	fut__pp_wake(j->pool);
}

/* A caller cancels a task sent to a worker: taken back unless the
 * worker claimed it; the manager then drops it from the worker's list.
 * In a fork child it never starts: the child's copy is cancelled, as a
 * queued one's is. */
static int job_revoke(fut_future *f)
{
	struct pp_job *j = (struct pp_job *)(void *)f;
	if (inherited(j))
		return FUT__REVOKED;
	int r = fut__pp_claim_revoke(j->pool, j);
	if (r == FUT__REVOKED) {
		atomic_store(&j->pool->revoke_scan, true);
		fut__pp_wake(j->pool);
	}
	return r;
}

/* In a fork child, pending as at the fork. */
static bool job_started(const fut_future *f)
{
	const struct pp_job *j = (const struct pp_job *)(const void *)f;
	return !inherited(j) && fut__pp_claim_started(j->pool, j);
}

/* The manager completes every task of its pool (done callbacks run
 * there): a wait in it for one would wait for itself. */
static bool job_runs_here(fut_future *f)
{
	return fut__current_executor() ==
	       &((struct pp_job *)(void *)f)->pool->ex;
}

static const struct fut__future_ops job_ops = {
	.interrupt = job_interrupt,
	.destroy = job_destroy,
	.revoke = job_revoke,
	.started = job_started,
	.runs_here = job_runs_here,
};

/* A job of 16 bytes of input (W5's) fits the slab's 128-byte class: at
 * 136 it took the 152-byte class, three cache lines a job, and W5 ran
 * ~10% slower (docs/perf-log.md). */
_Static_assert(sizeof(struct pp_job) + 16 <= FUT__SLAB_MID,
	       "a 16-byte job fits the slab's middle class");

/* A pending job holding two references: the caller's and the queue's. */
struct pp_job *fut__pp_job_new(struct ppool *p, fut_fn fn, const void *data,
			       size_t len)
{
	if (len > SIZE_MAX - sizeof(struct pp_job))
		return NULL;
	bool slab;
	struct pp_job *j = fut__slab_alloc(sizeof(struct pp_job) + len, &slab);
	if (j == NULL)
		return NULL;
	j->slab = slab;
	fut__future_init(&j->fut, &job_ops);
	atomic_store_explicit(&j->fut.refs, 2, memory_order_relaxed);
	j->pool = p;
	j->next = NULL;
	j->id = 0;
	atomic_init(&j->ticket, 0);
	j->fn = fn;
	j->len = len;
	j->chunk_end = true;
	atomic_init(&j->counted, false);
	j->shared = 0;
	j->requeued = 0;
	if (len != 0)
		memcpy(j->input, data, len);
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return j;
}

/* A sealed memfd holding data[0, len), or -1 (errno set). */
static int input_memfd(const void *data, size_t len)
{
	int fd = memfd_create("libfuture-input",
			      MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	const char *p = data;
	size_t left = len;
	while (left > 0) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			(void)close(fd);
			errno = err;
			return -1;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) !=
	    0) {
		int err = errno;
		(void)close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* A job whose len bytes of input wait in a memfd (the block holds its fd):
 * the worker maps them instead of reading them off its socket.  NULL when
 * the memfd cannot be had (no fd, no memory, FUT__PP_MAX_SHARED_INPUTS
 * held already): the caller copies the input into the block instead. */
struct pp_job *fut__pp_job_new_shared(struct ppool *p, fut_fn fn,
				      const void *data, size_t len)
{
	if (atomic_fetch_add_explicit(&p->shared_inputs, 1,
				      memory_order_relaxed) >=
	    FUT__PP_MAX_SHARED_INPUTS) {
		atomic_fetch_sub_explicit(&p->shared_inputs, 1,
					  memory_order_relaxed);
		return NULL;
	}
	int fd = input_memfd(data, len);
	struct pp_job *j = fd >= 0 ? fut__pp_job_new(p, fn, &fd, sizeof(fd)) :
				     NULL;
	if (j == NULL) {
		if (fd >= 0)
			(void)close(fd);
		atomic_fetch_sub_explicit(&p->shared_inputs, 1,
					  memory_order_relaxed);
		return NULL;
	}
	j->len = len;
	j->shared = PP_SHARED_INPUT;
	return j;
}

/* Frees a job that was never queued. */
void fut__pp_job_discard(struct pp_job *j)
{
	fut_release(&j->fut);
	fut_release(&j->fut);
}

int fut__pp_job_input_fd(const struct pp_job *j)
{
	int fd = -1;
	if (j->shared & PP_SHARED_INPUT)
		memcpy(&fd, j->input, sizeof(fd));
	return fd;
}

void fut__pp_job_input_close(struct pp_job *j)
{
	int fd = fut__pp_job_input_fd(j);
	if (fd < 0)
		return;
	(void)close(fd);
	fd = -1;
	memcpy(j->input, &fd, sizeof(fd));
	atomic_fetch_sub_explicit(&j->pool->shared_inputs, 1,
				  memory_order_relaxed);
}

bool fut__pp_uncount_quiet(struct pp_job *j)
{
	if (!atomic_load_explicit(&j->counted, memory_order_relaxed) ||
	    !atomic_exchange(&j->counted, false))
		return false;
	atomic_fetch_sub(&j->pool->unstarted, 1);
	return true;
}

void fut__pp_room_wake(struct ppool *p)
{
	/* A waiter adds itself to room_waiters, then reads unstarted, both
	 * under the lock and sequentially consistent, as the uncount above
	 * and the read here: it saw the room, or it is seen here and woken
	 * under the lock it waits with. */
	if (atomic_load(&p->room_waiters) == 0)
		return;
	fut__pp_lock(p);
	pthread_cond_broadcast(&p->room_cv);
	fut__pp_unlock(p);
}

void fut__pp_uncount(struct pp_job *j)
{
	if (fut__pp_uncount_quiet(j))
		fut__pp_room_wake(j->pool);
}

void fut__pp_job_drop(struct pp_job *j)
{
	fut__pp_uncount(j);
	fut__pp_job_input_close(j);
	fut_release(&j->fut); /* the manager's reference */
}

void fut__pp_job_end(struct pp_job *j, int code, int task_code,
		     int crash_status, const char *fmt, ...)
{
	char *msg = NULL;
	fut__pp_uncount(j);
	fut__pp_job_input_close(j);
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		msg = fut__vasprintf(fmt, ap);
		va_end(ap);
	}
	(void)fut__future_fail(&j->fut, code,
			       code == FUT_ECRASHED ? crash_status : task_code,
			       msg);
	fut_release(&j->fut);
}

void fut__pp_fail_broken(struct ppool *p, struct pp_job *list)
{
	while (list != NULL) {
		struct pp_job *j = list;
		list = j->next;
		if (p->broken_msg != NULL)
			fut__pp_job_end(j, FUT_EBROKEN, 0, 0, "%s",
					p->broken_msg);
		else
			fut__pp_job_end(j, FUT_EBROKEN, 0, 0, NULL);
	}
}

void fut__pp_spawn_give_up(struct pp_mgr *m, const char *what, int err)
{
	struct ppool *p = m->p;
	char why[160];
	if (err != EMFILE && err != ENFILE) {
		if (err != 0)
			snprintf(why, sizeof(why),
				 "cannot start a worker process: %s: %s", what,
				 strerror(err));
		else
			snprintf(why, sizeof(why),
				 "cannot start a worker process: %s", what);
		fut__pp_break(m, why);
		return;
	}
	/* Out of fds, here or in the fork server: a shortage of the
	 * program's, of the moment; the pool broke for good, and said "the
	 * fork server died too often" when the server had none to start
	 * with (found by a user's trial, 2026-12-07).  What waits ends
	 * FUT_EAGAIN; the next submit tries again at once. */
	snprintf(why, sizeof(why),
		 "cannot start a worker process: out of file descriptors "
		 "(%s: %s)",
		 what, strerror(err));
	p->spawn_failures = 0;
	p->spawn_after_ns = 0;
	fut__pp_lock(p);
	struct pp_job *list = p->qhead;
	p->qhead = p->qtail = NULL;
	fut__pp_unlock(p);
	while (list != NULL) {
		struct pp_job *j = list;
		list = j->next;
		j->next = NULL;
		fut__pp_job_end(j, FUT_EAGAIN, 0, 0, "%s", why);
	}
}

/* ------------------------------------------------------------------ */
/* The queue                                                           */

int fut__pp_admit_locked(const struct ppool *p)
{
	assert(fut__pp_lock_held(p));
	if (p->shutdown)
		return FUT_ESHUTDOWN;
	if (p->broken)
		return FUT_EBROKEN;
	return FUT_OK;
}

int fut__pp_enqueue(struct ppool *p, struct pp_job *first, struct pp_job *last)
{
	fut__pp_lock(p);
	int rc = fut__pp_admit_locked(p);
	/* One task, an idle worker and the manager asleep: the submitter
	 * sends it (door.c), and nobody is woken but the worker. */
	bool queue = rc == FUT_OK &&
		     (first != last || !fut__pp_hand_off_locked(p, first));
	if (queue) {
		if (p->qtail != NULL)
			p->qtail->next = first;
		else
			p->qhead = first;
		p->qtail = last;
		last->next = NULL;
	}
	fut__pp_unlock(p);
	if (queue)
		fut__pp_wake(p);
	return rc;
}

/* Takes the jobs that are RUNNING (running true: they ran on a worker
 * that died before their results came) or not started (false) out of
 * *first..*last: returns them, a list.  *first and *last become what is
 * left (NULL: nothing). */
static struct pp_job *split(struct pp_job **first, struct pp_job **last,
			    bool running)
{
	struct pp_job *keep = NULL, *keep_last = NULL, *cut = NULL;
	struct pp_job **ct = &cut, *end = *last, *next;
	for (struct pp_job *j = *first; j != NULL; j = next) {
		next = j == end ? NULL : j->next;
		j->next = NULL;
		if ((fut__future_state(&j->fut) == FUT__S_RUNNING) != running) {
			if (keep_last != NULL)
				keep_last->next = j;
			else
				keep = j;
			keep_last = j;
		} else {
			*ct = j;
			ct = &j->next;
		}
	}
	*first = keep;
	*last = keep_last;
	return cut;
}

void fut__pp_end_rerun(struct pp_job *list)
{
	while (list != NULL) {
		struct pp_job *j = list;
		list = j->next;
		j->next = NULL;
		fut__pp_job_end(j, FUT_ECANCELLED, 0, 0,
				"interrupted: the task's worker process died "
				"before its result came, and it was not run "
				"again");
	}
}

struct pp_job *fut__pp_take_reruns_locked(struct ppool *p)
{
	assert(fut__pp_lock_held(p));
	struct pp_job *first = p->qhead, *last = p->qtail;
	struct pp_job *reruns = split(&first, &last, true);
	p->qhead = first;
	p->qtail = last;
	return reruns;
}

void fut__pp_requeue(struct ppool *p, struct pp_job *first, struct pp_job *last)
{
	if (first == NULL)
		return;
	struct pp_job *cut = NULL, *reruns = NULL;
	fut__pp_lock(p);
	bool broken = p->broken;
	/* shutdown(CANCEL_PENDING) drained the queue already: queued now,
	 * these would run after it, though they never started.  The
	 * RUNNING ones ran (their results died with their worker) and run
	 * again, as that drain leaves them queued; unless a
	 * shutdown(INTERRUPT) came: it ends what runs. */
	if (!broken && p->cancel_pending)
		cut = split(&first, &last, false);
	if (!broken && p->interrupting)
		reruns = split(&first, &last, true);
	if (!broken && first != NULL) {
		last->next = p->qhead;
		p->qhead = first;
		if (p->qtail == NULL)
			p->qtail = last;
	}
	fut__pp_unlock(p);
	if (broken) {
		last->next = NULL;
		fut__pp_fail_broken(p, first);
	}
	while (cut != NULL) {
		struct pp_job *j = cut;
		cut = j->next;
		j->next = NULL;
		(void)fut_cancel(&j->fut); /* or a caller's cancel won */
		fut__pp_job_drop(j);
	}
	fut__pp_end_rerun(reruns);
}

void fut__pp_break_locked(struct ppool *p, const char *why, struct pp_job **out)
{
	assert(fut__pp_lock_held(p));
	if (!p->broken) {
		p->broken = true;
		/* NULL when out of memory: the jobs then read the code's
		 * text. */
		p->broken_msg = fut__strdup(why);
	}
	/* Submitters waiting for room: EBROKEN now. */
	pthread_cond_broadcast(&p->room_cv);
	*out = p->qhead;
	p->qhead = p->qtail = NULL;
}

struct pp_job *fut__pp_pop_batch_locked(struct ppool *p, size_t allowance)
{
	assert(fut__pp_lock_held(p));
	struct pp_job *first = p->qhead, *last = NULL, *j = first;
	size_t n = 0, bytes = 0;
	while (j != NULL && n < allowance) {
		if (n > 0 && (j->len > FUT__PP_FRAME_BYTES ||
			      bytes + j->len > FUT__PP_FRAME_BYTES))
			break;
		/* The future's line, which the send reads next (W5: the
		 * caller's cpu wrote it last). */
		__builtin_prefetch(&j->fut, 1);
		bytes += j->len;
		n++;
		last = j;
		if (j->chunk_end)
			break;
		j = j->next;
	}
	if (last == NULL)
		return NULL;
	p->qhead = last->next;
	if (p->qhead == NULL)
		p->qtail = NULL;
	last->next = NULL;
	return first;
}

size_t fut__pp_queued_chunks_locked(const struct ppool *p, size_t cap)
{
	assert(fut__pp_lock_held(p));
	size_t n = 0;
	for (const struct pp_job *j = p->qhead; j != NULL && n < cap;
	     j = j->next)
		if (j->chunk_end)
			n++;
	return n;
}
