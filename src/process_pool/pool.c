/*
 * process_pool.c: the process-pool executor, its caller side.
 *
 * Owns: the pool object, its queue of jobs (a job is a task and its future
 * in one block, the input copied behind it, or from 256 KiB into a sealed
 * memfd whose fd the block keeps until the outcome), submission, shutdown
 * and free.  Everything that touches a process or a pipe is the manager
 * thread's (pp_manager.c); worker.c is the children's side.
 * Threads: any caller thread submits; the manager thread takes jobs off
 * the queue and completes them (done callbacks run there).
 * Locks: p->lock (a pthread mutex, so that a thread that waited on
 * done_cv may free the pool right after) guards the queue, the shutdown
 * and broken states and the wake fd once the manager ended.  It is never
 * held while a future completes or user code runs; it comes before a
 * future's own lock.
 * References: the handle, the manager thread and every job block hold one
 * on the pool each; the last one frees it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
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
	if (p->wake_fd >= 0)
		(void)close(p->wake_fd);
	fut__free(p->cfg.table);
	fut__free(p->workers);
	fut__free(p->stage);
	fut__free(p->pfd);
	fut__free(p->pfd_w);
	fut__free(p->broken_msg);
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
/* Jobs                                                                */

static void job_destroy(fut_future *f)
{
	struct pp_job *j = (struct pp_job *)(void *)f;
	struct ppool *p = j->pool;
	if (j->shared & PP_SHARED_RESULT)
		(void)munmap(j->fut.value, j->fut.len);
	fut__pp_job_input_close(j);
	if (j->slab)
		fut__slab_put(j);
	else
		fut__free(j);
	fut__pp_unref(p);
}

/* The caller asked a running task to stop: the manager kills its worker. */
static void job_interrupt(fut_future *f)
{
	struct pp_job *j = (struct pp_job *)(void *)f;
	struct ppool *p = j->pool;
	atomic_store(&p->interrupt_scan, true);
	pthread_mutex_lock(&p->lock);
	if (!atomic_exchange(&p->wake_pending, true)) {
		uint64_t one = 1;
		(void)!write(p->wake_fd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&p->lock);
}

static const struct fut__future_ops job_ops = {
	.interrupt = job_interrupt,
	.destroy = job_destroy,
};

/* A pending job holding two references: the caller's and the queue's. */
static struct pp_job *job_new(struct ppool *p, fut_fn fn, const void *data,
			      size_t len)
{
	if (len > SIZE_MAX - sizeof(struct pp_job))
		return NULL;
	/* Small jobs come from the thread pool's recycled blocks: a malloc
	 * and a free per task are most of what W5 would cost the caller. */
	size_t size = sizeof(struct pp_job) + len;
	unsigned cls = fut__slab_class_for(size);
	bool slab = cls < FUT__SLAB_NCLASS;
	struct pp_job *j = slab ? fut__slab_get(cls) : fut__malloc(size);
	if (j == NULL)
		return NULL;
	j->slab = slab;
	fut__future_init(&j->fut, &job_ops);
	atomic_store_explicit(&j->fut.refs, 2, memory_order_relaxed);
	j->pool = p;
	j->next = NULL;
	j->id = 0;
	j->fn = fn;
	j->len = len;
	j->chunk_end = true;
	j->shared = 0;
	j->requeued = 0;
	if (len != 0)
		memcpy(j->input, data, len);
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return j;
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
static struct pp_job *job_new_shared(struct ppool *p, fut_fn fn,
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
	struct pp_job *j = fd >= 0 ? job_new(p, fn, &fd, sizeof(fd)) : NULL;
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
static void job_discard(struct pp_job *j)
{
	fut_release(&j->fut);
	fut_release(&j->fut);
}

void fut__pp_job_end(struct pp_job *j, int code, int task_code,
		     int crash_status, const char *fmt, ...)
{
	char *msg = NULL;
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

void fut__pp_break_locked(struct ppool *p, const char *why, struct pp_job **out)
{
	if (!p->broken) {
		p->broken = true;
		/* NULL when out of memory: the jobs then read the code's
		 * text. */
		p->broken_msg = fut__strdup(why);
	}
	*out = p->qhead;
	p->qhead = p->qtail = NULL;
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

/* ------------------------------------------------------------------ */
/* Submission                                                          */

/* Caller holds p->lock. */
static int admit_locked(const struct ppool *p)
{
	if (p->shutdown)
		return FUT_ESHUTDOWN;
	if (p->broken)
		return FUT_EBROKEN;
	return FUT_OK;
}

/* Appends first..last (n jobs) and wakes the manager. */
static int enqueue(struct ppool *p, struct pp_job *first, struct pp_job *last)
{
	pthread_mutex_lock(&p->lock);
	int rc = admit_locked(p);
	if (rc == FUT_OK) {
		if (p->qtail != NULL)
			p->qtail->next = first;
		else
			p->qhead = first;
		p->qtail = last;
		last->next = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	if (rc == FUT_OK && !atomic_exchange(&p->wake_pending, true)) {
		/* Our jobs hold references on the pool, and the fd is closed
		 * only when the pool is freed. */
		uint64_t one = 1;
		(void)!write(p->wake_fd, &one, sizeof(one));
	}
	return rc;
}

static int pp_submit(fut_executor *ex, fut_fn fn, void *arg, const void *data,
		     size_t len, bool bytes, fut_future **out)
{
	(void)arg;
	if (!bytes)
		return FUT_ENOTSUP; /* a pointer means nothing in a child */
	struct ppool *p = pool_of(ex);
	pthread_mutex_lock(&p->lock);
	int rc = admit_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (rc != FUT_OK)
		return rc;
	struct pp_job *j = NULL;
	if (len >= FUT__TASK_SHARED_MIN)
		j = job_new_shared(p, fn, data, len);
	if (j == NULL)
		j = job_new(p, fn, data, len);
	if (j == NULL)
		return FUT_ENOMEM;
	rc = enqueue(p, j, j);
	if (rc != FUT_OK) {
		job_discard(j);
		return rc;
	}
	*out = &j->fut;
	return FUT_OK;
}

static int pp_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
			  size_t stride, size_t n, fut_future **out)
{
	struct ppool *p = pool_of(ex);
	pthread_mutex_lock(&p->lock);
	int rc = admit_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (rc != FUT_OK)
		return rc;
	/* Chunks: a few per worker, so that the work stays balanced, each
	 * one frame each way (Python's chunksize). */
	size_t chunk = (n + 4 * p->max_workers - 1) / (4 * p->max_workers);
	if (chunk > CHUNK_MAX)
		chunk = CHUNK_MAX;
	if (stride > FUT__WIRE_MAX_MESSAGE)
		chunk = 1;
	struct pp_job *first = NULL, *last = NULL;
	size_t made = 0;
	for (; made < n; made++) {
		const unsigned char *in =
			(const unsigned char *)inputs + made * stride;
		struct pp_job *j = job_new(p, fn, stride ? in : NULL, stride);
		if (j == NULL)
			break;
		j->chunk_end = (made + 1) % chunk == 0 || made + 1 == n;
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
		out[made] = &j->fut;
	}
	if (made == n) {
		rc = enqueue(p, first, last);
		if (rc == FUT_OK)
			return FUT_OK;
	} else {
		rc = FUT_ENOMEM;
	}
	while (first != NULL) {
		struct pp_job *j = first;
		first = j->next;
		job_discard(j);
	}
	for (size_t i = 0; i < n; i++)
		out[i] = NULL;
	return rc;
}

/* ------------------------------------------------------------------ */
/* Shutdown and free                                                   */

static void wake_locked(struct ppool *p)
{
	atomic_store(&p->wake_pending, true);
	uint64_t one = 1;
	(void)!write(p->wake_fd, &one, sizeof(one));
}

static int pp_shutdown(fut_executor *ex, unsigned flags)
{
	struct ppool *p = pool_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	if (wait && fut__current_executor() == ex)
		return FUT_EINVAL;
	struct pp_job *drained = NULL;
	pthread_mutex_lock(&p->lock);
	p->shutdown = true;
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING) {
		drained = p->qhead;
		p->qhead = p->qtail = NULL;
	}
	if (flags & FUT_SHUTDOWN_INTERRUPT)
		p->interrupt_all = true;
	wake_locked(p);
	pthread_mutex_unlock(&p->lock);
	while (drained != NULL) {
		struct pp_job *j = drained;
		drained = j->next;
		(void)fut_cancel(&j->fut);
		fut_release(&j->fut);
	}
	if (!wait)
		return FUT_OK;
	pthread_mutex_lock(&p->lock);
	while (!p->manager_done)
		pthread_cond_wait(&p->done_cv, &p->lock);
	bool join = !p->joined;
	p->joined = true;
	pthread_mutex_unlock(&p->lock);
	if (join)
		pthread_join(p->manager, NULL);
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
		pthread_mutex_lock(&p->lock);
		p->free_on_exit = true;
		p->joined = true;
		pthread_mutex_unlock(&p->lock);
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
 * wake eventfd, the fork server's socket, each worker's pipes) and of the
 * workers' shared slots mapping; the parent's manager, fork server and
 * workers never notice.  The rest stays: inherited futures point into
 * their job blocks, which hold a reference of the pool. */
static void pp_orphan(fut_executor *ex)
{
	struct ppool *p = pool_of(ex);
	close_fd(p->wake_fd);
	close_fd(p->fs_sock);
	for (uint32_t i = 0; p->workers != NULL && i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		close_fd(w->task_fd);
		close_fd(w->result_fd);
		close_fd(w->back_fd);
	}
	if (p->slots != NULL)
		(void)munmap(p->slots, p->slots_bytes);
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
	if (pthread_mutex_init(&p->lock, NULL) != 0) {
		fut__free(p);
		return FUT_ENOMEM;
	}
	if (pthread_cond_init(&p->done_cv, NULL) != 0) {
		pthread_mutex_destroy(&p->lock);
		fut__free(p);
		return FUT_ENOMEM;
	}
	p->max_workers = o->max_workers;
	p->nslots = (uint32_t)(2 * o->max_workers);
	p->max_tasks_per_child = o->max_tasks_per_child;
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
		p->workers[i].task_fd = -1;
		p->workers[i].result_fd = -1;
		p->workers[i].back_fd = -1;
		p->workers[i].ofd = -1;
	}
	p->slots_bytes = p->nslots * sizeof(struct fut__worker_slot);
	void *m = mmap(NULL, p->slots_bytes, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
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
	if (o.max_workers == 0)
		o.max_workers = (size_t)fut__ncpus();
	struct ppool *p = NULL;
	int rc = pool_alloc(&p, &o);
	if (rc != FUT_OK)
		goto fail;
	rc = fut__forkserver_start(&p->cfg, &p->fs_pid, &p->fs_sock);
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
		if (p->fs_sock >= 0) {
			/* EOF tells the fork server to go; reap it. */
			(void)close(p->fs_sock);
			while (waitpid(p->fs_pid, NULL, 0) < 0 &&
			       errno == EINTR)
				;
		}
		pool_free(p);
	}
	return rc;
}
