/*
 * pool.c: the process-pool executor, its caller side.
 *
 * Owns: the pool object (creation, references, free), submission,
 * shutdown and destroy.  The jobs and the queue are jobs.c's; everything
 * that touches a process or a pipe is the manager thread's (manager.c,
 * slot.c, recv.c, send.c, shared.c); the children's side is forkserver.c
 * and child.c.
 * Threads: any caller thread submits, shuts down and destroys; the
 * manager thread completes the jobs (done callbacks run there).
 * Locks: p->lock (a pthread mutex, so that a thread that waited on
 * done_cv may free the pool right after) guards the queue, the shutdown
 * and broken states and the manager's end.  It is never held while a
 * future completes or user code runs; it comes before a future's own
 * lock.
 * References: the handle, the manager thread and every job block hold one
 * on the pool each; the last one frees it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/names.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

/* Most tasks of one fut_submit_many() chunk, i.e. of one frame. */
#define CHUNK_MAX 4096u

static struct ppool *pool_of(fut_executor *ex)
{
	return fut__container_of(ex, struct ppool, ex);
}

static void pool_free(struct ppool *p)
{
	if (p->slots != NULL)
		(void)munmap(p->slots, p->slots_bytes);
	if (p->cfg.slots_fd >= 0)
		(void)close(p->cfg.slots_fd);
	if (p->wake_fd >= 0)
		(void)close(p->wake_fd);
	if (p->fs_pidfd >= 0) /* a restart that failed: no server */
		(void)close(p->fs_pidfd);
	fut__free(p->cfg.table);
	fut__free(p->workers);
	fut__free(p->stage);
	fut__free(p->pfd);
	fut__free(p->pfd_w);
	fut__free(p->broken_msg);
	pthread_cond_destroy(&p->room_cv);
	pthread_cond_destroy(&p->done_cv);
	pthread_mutex_destroy(&p->lock);
	fut__free(p);
}

void fut__pp_unref(struct ppool *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		pool_free(p);
}

/* ------------------------------------------------------------------ */
/* Submission                                                          */

/* Whether n more tasks fit under max_queue with u not started (a batch
 * larger than max_queue goes in when none waits). */
static bool room_for(const struct ppool *p, size_t u, size_t n)
{
	return u == 0 || (u < p->max_queue && n <= p->max_queue - u);
}

/* Admits n tasks: with max_queue, waits for room and takes it (*counted:
 * the n are counted, to be given back with unadmit when they do not go
 * in).  FUT_EAGAIN when the wait is the manager's own, from a done
 * callback: nobody else could make room. */
static int admit(struct ppool *p, size_t n, bool *counted)
{
	*counted = false;
	fut__pp_lock(p);
	int rc;
	for (;;) {
		rc = fut__pp_admit_locked(p);
		if (rc != FUT_OK || p->max_queue == 0)
			break;
		if (room_for(p, atomic_load(&p->unstarted), n)) {
			atomic_fetch_add(&p->unstarted, n);
			*counted = true;
			break;
		}
		if (fut__current_executor() == &p->ex) {
			rc = FUT_EAGAIN;
			break;
		}
		/* The manager looks for tasks that started while someone
		 * waits (fut__pp_room_wake says why in this order). */
		atomic_fetch_add(&p->room_waiters, 1);
		fut__pp_wake(p);
		if (!room_for(p, atomic_load(&p->unstarted), n))
			fut__pp_cond_wait(p, &p->room_cv);
		atomic_fetch_sub(&p->room_waiters, 1);
	}
	fut__pp_unlock(p);
	return rc;
}

/* n tasks admitted and counted did not go in. */
static void unadmit(struct ppool *p, size_t n, bool counted)
{
	if (!counted)
		return;
	atomic_fetch_sub(&p->unstarted, n);
	fut__pp_room_wake(p);
}

static int pp_submit(fut_executor *ex, fut_fn fn, void *arg, const void *data,
		     size_t len, bool bytes, fut_future **out)
{
	(void)arg;
	if (!bytes)
		return FUT_ENOTSUP; /* a pointer means nothing in a child */
	struct ppool *p = pool_of(ex);
	bool counted;
	int rc = admit(p, 1, &counted);
	if (rc != FUT_OK)
		return rc;
	struct pp_job *j = NULL;
	if (len >= FUT__TASK_SHARED_MIN)
		j = fut__pp_job_new_shared(p, fn, data, len);
	if (j == NULL)
		j = fut__pp_job_new(p, fn, data, len);
	if (j == NULL) {
		unadmit(p, 1, counted);
		return FUT_ENOMEM;
	}
	atomic_store_explicit(&j->counted, counted, memory_order_relaxed);
	rc = fut__pp_enqueue(p, j, j);
	if (rc != FUT_OK) {
		fut__pp_job_discard(j);
		unadmit(p, 1, counted);
		return rc;
	}
	*out = &j->fut;
	return FUT_OK;
}

static int pp_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
			  size_t stride, size_t n, fut_future **out)
{
	struct ppool *p = pool_of(ex);
	bool counted;
	int rc = admit(p, n, &counted);
	if (rc != FUT_OK)
		return rc;
	/* Chunks: a few per worker, so that the work stays balanced, each
	 * one frame each way (Python's chunksize). */
	size_t chunk = (n + 4 * p->max_workers - 1) / (4 * p->max_workers);
	if (p->chunk != 0)
		chunk = p->chunk;
	if (chunk > CHUNK_MAX)
		chunk = CHUNK_MAX;
	if (stride > FUT__WIRE_MAX_MESSAGE)
		chunk = 1;
	struct pp_job *first = NULL, *last = NULL;
	size_t made = 0;
	for (; made < n; made++) {
		const unsigned char *in =
			(const unsigned char *)inputs + made * stride;
		struct pp_job *j =
			fut__pp_job_new(p, fn, stride ? in : NULL, stride);
		if (j == NULL)
			break;
		j->chunk_end = (made + 1) % chunk == 0 || made + 1 == n;
		atomic_store_explicit(&j->counted, counted,
				      memory_order_relaxed);
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
		out[made] = &j->fut;
	}
	if (made == n) {
		rc = fut__pp_enqueue(p, first, last);
		if (rc == FUT_OK)
			return FUT_OK;
	} else {
		rc = FUT_ENOMEM;
	}
	while (first != NULL) {
		struct pp_job *j = first;
		first = j->next;
		fut__pp_job_discard(j);
	}
	unadmit(p, n, counted);
	for (size_t i = 0; i < n; i++)
		out[i] = NULL;
	return rc;
}

/* ------------------------------------------------------------------ */
/* Shutdown and free                                                   */

/*
 * Cancels the jobs a shutdown took out of the queue (counted in
 * ndraining), in two passes, as the thread pool's drain: every job, then
 * their callbacks, job after job.  One by one, a callback that waited,
 * untimed, for a later job of the drain waited for good (review,
 * 2026-12-07, fifteenth session).  ndraining counts the first pass only:
 * a shutdown beside this one waits for the jobs, not their callbacks.
 */
static void cancel_drained(struct ppool *p, struct pp_job *drained)
{
	for (struct pp_job *j = drained; j != NULL; j = j->next) {
		(void)fut__pp_uncount_quiet(j);
		bool held; /* one cancelled before has no callback left */
		(void)fut__future_cancel_held(&j->fut, &held);
		/* Its input's memfd goes with it, not with the caller's
		 * last reference. */
		fut__pp_job_input_close(j);
	}
	fut__pp_lock(p);
	p->ndraining--;
	pthread_cond_broadcast(&p->done_cv);
	fut__pp_unlock(p);
	while (drained != NULL) {
		struct pp_job *j = drained;
		drained = j->next;
		fut__future_run_held(&j->fut);
		fut_release(&j->fut);
	}
}

static int pp_shutdown(fut_executor *ex, unsigned flags)
{
	struct ppool *p = pool_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	bool own = fut__current_executor() == ex;
	if (wait && own)
		return FUT_EINVAL;
	/* A done callback run here (a cancel's) may free the pool: it
	 * lives until this call is over. */
	atomic_fetch_add(&p->refs, 1);
	struct pp_job *drained = NULL;
	uint64_t ticket = 0;
	fut__pp_lock(p);
	p->shutdown = true;
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING) {
		/* What has not started leaves the queue.  A job that ran on a
		 * worker that died before its result came is queued RUNNING
		 * (slot.c): it cannot be cancelled, and stays to run again. */
		struct pp_job **at = &p->qhead, **dt = &drained;
		p->qtail = NULL;
		while (*at != NULL) {
			struct pp_job *j = *at;
			if (fut__future_state(&j->fut) == FUT__S_RUNNING) {
				p->qtail = j;
				at = &j->next;
				continue;
			}
			*at = j->next;
			j->next = NULL;
			*dt = j;
			dt = &j->next;
		}
		/* And what was sent to a worker that has not started it: the
		 * manager's to take back.  What comes back later (from a
		 * worker killed or dead meanwhile) is cancelled as it comes
		 * (fut__pp_requeue). */
		ticket = ++p->cancel_asked;
		p->cancel_pending = true;
	}
	/* A shutdown that finds the queue drained waits for this one. */
	if (drained != NULL)
		p->ndraining++;
	if (flags & FUT_SHUTDOWN_INTERRUPT)
		p->interrupt_all = p->interrupting = true;
	/* Submitters waiting for room: ESHUTDOWN now. */
	pthread_cond_broadcast(&p->room_cv);
	fut__pp_wake(p);
	fut__pp_unlock(p);
	if (drained != NULL)
		cancel_drained(p, drained);
	/* Another shutdown's drained jobs are not done until it cancelled
	 * them, which runs no user code (their callbacks run after). */
	if (ticket != 0 && !own) {
		/* Every task not started is cancelled when this returns (the
		 * manager's own call, from a done callback, cannot wait: it
		 * takes them back as soon as the callback returns). */
		fut__pp_lock(p);
		while ((p->cancel_done < ticket && !p->manager_done) ||
		       p->ndraining > 0)
			fut__pp_cond_wait(p, &p->done_cv);
		fut__pp_unlock(p);
	}
	if (wait) {
		fut__pp_lock(p);
		while (!p->manager_done || p->ndraining > 0)
			fut__pp_cond_wait(p, &p->done_cv);
		bool join = !p->joined;
		p->joined = true;
		fut__pp_unlock(p);
		if (join)
			pthread_join(p->manager, NULL);
	}
	fut__pp_unref(p);
	return FUT_OK;
}

static void pp_destroy(fut_executor *ex)
{
	struct ppool *p = pool_of(ex);
	atomic_store_explicit(&p->ex.magic, 0, memory_order_relaxed);
	if (fut__current_executor() == ex) {
		/* Freed from one of its own done callbacks: the manager cannot
		 * wait for itself.  It finishes the work, detaches and drops
		 * the handle's reference when it ends. */
		(void)pp_shutdown(ex, FUT_SHUTDOWN_NOWAIT);
		fut__pp_lock(p);
		p->free_on_exit = true;
		p->joined = true;
		fut__pp_unlock(p);
		return;
	}
	fut__pp_unref(p);
}

static void close_fd(int fd)
{
	if (fd >= 0)
		(void)close(fd);
}

/* In a fork child: this process's copies of the pool's fds close (the
 * wake eventfd, the fork server's socket, each worker's pipes), unless
 * they are gone already, and of the workers' shared slots mapping; the
 * parent's manager, fork server and workers never notice.  The rest
 * stays: inherited futures point into their job blocks, which hold a
 * reference of the pool. */
static void pp_orphan(fut_executor *ex)
{
	struct ppool *p = pool_of(ex);
	if (p->slots != NULL)
		(void)munmap(p->slots, p->slots_bytes);
	/* In a worker (or its fork server) of another pool, made after this
	 * one: every fd inherited was closed there, and the numbers are the
	 * worker's own channels now. */
	if (fut__executor_fds_lost(ex))
		return;
	close_fd(p->wake_fd);
	close_fd(p->fs_sock);
	close_fd(p->fs_pidfd);
	for (uint32_t i = 0; p->workers != NULL && i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		close_fd(w->task_fd);
		close_fd(w->result_fd);
		close_fd(w->back_fd);
		close_fd(w->ofd);
	}
	close_fd(p->cfg.slots_fd);
}

static const struct fut__executor_ops pp_ops = {
	.submit = pp_submit,
	.submit_many = pp_submit_many,
	.shutdown = pp_shutdown,
	.orphan = pp_orphan,
	.destroy = pp_destroy,
};

/* ------------------------------------------------------------------ */
/* Creation                                                            */

static int pool_alloc(struct ppool **out, const fut_process_pool_opts *o)
{
	struct ppool *p = fut__calloc(1, sizeof(*p));
	if (p == NULL)
		return FUT_ENOMEM;
	p->wake_fd = -1;
	p->fs_sock = -1;
	p->fs_pidfd = -1;
	p->cfg.slots_fd = -1;
	if (pthread_mutex_init(&p->lock, NULL) != 0) {
		fut__free(p);
		return FUT_ENOMEM;
	}
	if (pthread_cond_init(&p->done_cv, NULL) != 0) {
		pthread_mutex_destroy(&p->lock);
		fut__free(p);
		return FUT_ENOMEM;
	}
	if (pthread_cond_init(&p->room_cv, NULL) != 0) {
		pthread_cond_destroy(&p->done_cv);
		pthread_mutex_destroy(&p->lock);
		fut__free(p);
		return FUT_ENOMEM;
	}
	p->max_workers = o->max_workers;
	p->nslots = (uint32_t)(2 * o->max_workers);
	p->max_tasks_per_child = o->max_tasks_per_child;
	p->chunk = o->chunk;
	p->max_queue = o->max_queue;
	if (o->task_timeout > 0) {
		p->timeout = o->task_timeout;
		double ns = o->task_timeout * 1e9;
		p->timeout_ns = ns > 1e17 ? (int64_t)1e17 : (int64_t)ns;
		if (p->timeout_ns < 1)
			p->timeout_ns = 1;
	}
	p->next_id = 1;
	*out = p;
	p->workers = fut__calloc(p->nslots, sizeof(*p->workers));
	p->cfg.table = fut__calloc(p->nslots, sizeof(*p->cfg.table));
	p->stage = fut__malloc(FUT__PP_STAGE_BYTES);
	size_t nfd = 2 + 2 * (size_t)p->nslots;
	p->pfd = fut__calloc(nfd, sizeof(*p->pfd));
	p->pfd_w = fut__calloc(nfd, sizeof(*p->pfd_w));
	if (p->workers == NULL || p->cfg.table == NULL || p->stage == NULL ||
	    p->pfd == NULL || p->pfd_w == NULL)
		return FUT_ENOMEM;
	for (uint32_t i = 0; i < p->nslots; i++) {
		p->workers[i].slot = i;
		p->workers[i].next_key = 1;
		p->workers[i].task_fd = -1;
		p->workers[i].result_fd = -1;
		p->workers[i].back_fd = -1;
		p->workers[i].ofd = -1;
	}
	p->slots_bytes = p->nslots * sizeof(struct fut__worker_slot);
	void *m = MAP_FAILED;
	if (o->start_method == FUT_START_EXEC) {
		/* A fresh exec inherits no mapping: the slots are a memfd
		 * the new fork server maps. */
		p->cfg.exec = true;
		p->cfg.slots_fd = memfd_create("libfuture-slots", MFD_CLOEXEC);
		if (p->cfg.slots_fd < 0)
			return errno == EMFILE || errno == ENFILE ? FUT_EAGAIN :
								    FUT_ESYS;
		if (ftruncate(p->cfg.slots_fd, (off_t)p->slots_bytes) != 0)
			return errno == ENOMEM ? FUT_ENOMEM : FUT_ESYS;
		m = mmap(NULL, p->slots_bytes, PROT_READ | PROT_WRITE,
			 MAP_SHARED, p->cfg.slots_fd, 0);
	} else {
		m = mmap(NULL, p->slots_bytes, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	}
	if (m == MAP_FAILED)
		return errno == ENOMEM ? FUT_ENOMEM : FUT_ESYS;
	p->slots = m;
	p->cfg.initializer = o->initializer;
	p->cfg.initarg = o->initarg;
	p->cfg.slots = p->slots;
	p->cfg.nslots = p->nslots;
	p->cfg.track_time = p->timeout_ns != 0;
	(void)pthread_sigmask(SIG_SETMASK, NULL, &p->cfg.worker_mask);
	p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->wake_fd < 0)
		return errno == EMFILE || errno == ENFILE ? FUT_EAGAIN :
							    FUT_ESYS;
	return FUT_OK;
}

/*
 * 0.1's fut_process_pool_opts ended at task_timeout.  A program built
 * against that header passes the smaller struct: it links the symbol
 * fut_process_pool_new@LIBFUTURE_0, which reads only those fields; a
 * program built now links fut_process_pool_new@@LIBFUTURE_0.2
 * (libfuture.map).  So the SONAME stays libfuture.so.0.
 */
struct pp_opts_0_1 {
	size_t max_workers;
	int (*initializer)(void *initarg);
	void *initarg;
	size_t max_tasks_per_child;
	double task_timeout;
};

__attribute__((visibility("default"))) int
fut__process_pool_new_0_1(fut_executor **out, const struct pp_opts_0_1 *opts);
__asm__(".symver fut__process_pool_new_0_1, fut_process_pool_new@LIBFUTURE_0");

int fut__process_pool_new_0_1(fut_executor **out,
			      const struct pp_opts_0_1 *opts)
{
	if (opts == NULL)
		return fut_process_pool_new(out, NULL);
	fut_process_pool_opts o = {
		.max_workers = opts->max_workers,
		.initializer = opts->initializer,
		.initarg = opts->initarg,
		.max_tasks_per_child = opts->max_tasks_per_child,
		.task_timeout = opts->task_timeout,
	};
	return fut_process_pool_new(out, &o);
}

/* Whether a first worker's fds (slot.c: its socket pair and result
 * pipe, four) can be had now: a pool that could start no worker said
 * FUT_OK, and its first task failed (found by a user's trial,
 * 2026-12-07).  A check, not a reservation: a later shortage ends the
 * waiting tasks FUT_EAGAIN instead (jobs.c fut__pp_spawn_give_up). */
static bool worker_fds_free(void)
{
	int sv[2], rp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return false;
	bool ok = pipe2(rp, O_CLOEXEC) == 0;
	int err = errno;
	if (ok) {
		(void)close(rp[0]);
		(void)close(rp[1]);
	}
	(void)close(sv[0]);
	(void)close(sv[1]);
	errno = err;
	return ok;
}

int fut_process_pool_new(fut_executor **out, const fut_process_pool_opts *opts)
{
	if (out == NULL)
		return FUT_EINVAL;
	*out = NULL;
	fut_process_pool_opts o = { 0 };
	if (opts != NULL)
		o = *opts;
	if (o.max_workers > FUT_MAX_WORKERS || o.task_timeout != o.task_timeout)
		return FUT_EINVAL;
	/* A constructor of the program in a FUT_START_EXEC fork server:
	 * each such server would start another, for ever. */
	if (fut__pp_exec_booting())
		return FUT_ESTATE;
	/* A fresh exec has none of the caller's memory: initarg would
	 * point nowhere. */
	if ((o.start_method != FUT_START_FORK &&
	     o.start_method != FUT_START_EXEC) ||
	    (o.start_method == FUT_START_EXEC && o.initarg != NULL))
		return FUT_EINVAL;
	/* Its functions are named by build-id: without one every task
	 * failed FUT_ENOTSUP, blaming "a module the program did not load
	 * at start" (found by a user's trial, 2026-12-07). */
	if (o.start_method == FUT_START_EXEC &&
	    fut__fn_unnamed_module() != NULL)
		return FUT_ENOTSUP;
	if (o.max_workers == 0) /* the cpus, at most FUT_MAX_WORKERS */
		o.max_workers = (size_t)fut__ncpus() < FUT_MAX_WORKERS ?
					(size_t)fut__ncpus() :
					FUT_MAX_WORKERS;
	struct ppool *p = NULL;
	int rc = pool_alloc(&p, &o);
	if (rc != FUT_OK)
		goto fail;
	rc = fut__forkserver_start(&p->cfg, &p->fs_pid, &p->fs_pidfd,
				   &p->fs_sock);
	if (rc == FUT_OK && !worker_fds_free())
		rc = FUT_ESYS;
	if (rc != FUT_OK) {
		rc = rc == FUT_ESYS && (errno == EMFILE || errno == ENFILE) ?
			     FUT_EAGAIN :
			     rc;
		goto fail;
	}
	p->ex.ops = &pp_ops;
	fut__executor_init(&p->ex);
	atomic_init(&p->refs, 2); /* the handle and the manager */
	/* The manager blocks every signal: the application's handlers never
	 * run there and its syscalls never see EINTR. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&p->manager, NULL, fut__pp_manager_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		rc = err == EAGAIN ? FUT_EAGAIN : FUT_ENOMEM;
		goto fail;
	}
	*out = &p->ex;
	return FUT_OK;
fail:
	if (p != NULL) {
		/* EOF tells the fork server to go; reap it. */
		if (p->fs_sock >= 0)
			fut__forkserver_stop(&p->fs_sock, &p->fs_pid,
					     &p->fs_pidfd);
		pool_free(p);
	}
	return rc;
}
