/*
 * client_submit.c: the client's jobs and their submission.
 *
 * Owns: struct mjob (a future and its task's input in one block), its
 * future ops (destroy, interrupt), and the name table (a function's name
 * id).  Submit copies the input into a job, names the function (names.c;
 * FUT_ENOTSUP at once when the servers lack its module) and queues the
 * job, waking the manager (client_manager.c), which takes it from there.
 * Queued jobs stay PENDING and cancellable.
 * Threads: any caller (submit); a job's destroy runs in whichever thread
 * drops its last reference; its interrupt in fut_interrupt's caller.
 * Locks: c->lock guards the queue, the shutdown and broken flags and the
 * name table; never held across user code.  Lock order: c->lock -> a
 * future's lock.
 */
#include <string.h>

#include "mpi_client.h"

/* ------------------------------------------------------------------ */
/* Jobs                                                                */

static void job_destroy(fut_future *f)
{
	struct mjob *j = (struct mjob *)(void *)f;
	struct mclient *c = j->c;
	fut__slab_free(j, j->slab);
	fut__mpi_client_unref(c);
}

/* fut_interrupt() on a running job: the manager tells its rank. */
static void job_interrupt(fut_future *f)
{
	struct mjob *j = (struct mjob *)(void *)f;
	struct mclient *c = j->c;
	/* A fork child's copy (docs/api.md, "Executors in a fork child"):
	 * the flag fut_interrupt() raised is all there is.  The client's
	 * lock may have been held by a thread the child lacks. */
	if (fut__executor_orphaned(&c->ex))
		return;
	atomic_store(&c->interrupt_scan, true);
	pthread_mutex_lock(&c->lock);
	fut__mpi_client_wake_locked(c);
	pthread_mutex_unlock(&c->lock);
}

/* no_spin: a caller spinning for its result held a cpu that the manager
 * or a rank's loop needed: W-MPI1 flipped between 5 and 25-50 us a round
 * trip; sleeping at once, 3.4-7 (docs/perf-log.md). */
/* The manager completes every job (done callbacks run there): a wait in
 * it for one would wait for itself. */
static bool job_runs_here(fut_future *f)
{
	return fut__current_executor() == &((struct mjob *)(void *)f)->c->ex;
}

static const struct fut__future_ops job_ops = {
	.interrupt = job_interrupt,
	.runs_here = job_runs_here,
	.destroy = job_destroy,
	.no_spin = true,
};

/* A pending job with two references: the caller's and the queue's.  The
 * caller has taken the client reference the job holds (one atomic add for
 * a whole fut_submit_many).  A job is not counted in the live objects: it
 * holds its client, which is. */
static struct mjob *job_new(struct mclient *c, uint32_t name, const void *data,
			    size_t len)
{
	if (len > SIZE_MAX - sizeof(struct mjob))
		return NULL;
	/* A small job takes a slab block, as the pools' do, and the
	 * manager walks blocks that lie together. */
	bool slab;
	struct mjob *j = fut__slab_alloc(sizeof(*j) + len, &slab);
	if (j == NULL)
		return NULL;
	j->slab = slab;
	fut__future_init(&j->fut, &job_ops);
	atomic_store_explicit(&j->fut.refs, 2, memory_order_relaxed);
	j->c = c;
	j->next = NULL;
	j->ahead = NULL;
	j->id = 0;
	j->name = name;
	j->interrupt_sent = false;
	j->len = len;
	if (len != 0)
		memcpy(j->input, data, len);
	return j;
}

static void job_discard(struct mjob *j)
{
	fut_release(&j->fut);
	fut_release(&j->fut);
}

/* Completes j with a failure and drops the manager's reference. */
void fut__mpi_job_fail(struct mjob *j, int code, int task_code, const char *msg)
{
	char *copy = msg != NULL ? fut__strdup(msg) : NULL;
	(void)fut__future_fail(&j->fut, code, task_code, copy);
	fut_release(&j->fut);
}

/* ------------------------------------------------------------------ */
/* Submission                                                          */

/* Caller holds c->lock.  The id of fn's name (0: not known yet). */
static uint32_t known_name_locked(const struct mclient *c, fut_fn fn)
{
	for (uint32_t i = c->nnames; i > 0; i--)
		if (c->names[i - 1].fn == fn)
			return i;
	return 0;
}

static bool servers_have(const struct mclient *c,
			 const struct fut__build_id *id)
{
	for (size_t i = 0; i < c->s.ncommon; i++)
		if (c->s.common[i].len == id->len &&
		    memcmp(c->s.common[i].bytes, id->bytes, id->len) == 0)
			return true;
	return false;
}

/* fn's name id: FUT_OK, FUT_EINVAL (it cannot be named), FUT_ENOTSUP (the
 * servers lack its module), FUT_ENOMEM. */
static int name_id(struct mclient *c, fut_fn fn, uint32_t *id)
{
	pthread_mutex_lock(&c->lock);
	*id = known_name_locked(c, fn);
	pthread_mutex_unlock(&c->lock);
	if (*id != 0)
		return FUT_OK;
	char name[FUT__WIRE_MAX_NAME + 1];
	struct fut__build_id bid;
	int rc = fut__mpi_name_of(fn, name, &bid);
	if (rc != FUT_OK)
		return rc;
	if (bid.len != 0 && !servers_have(c, &bid))
		return FUT_ENOTSUP;
	char *copy = fut__strdup(name);
	if (copy == NULL)
		return FUT_ENOMEM;
	rc = FUT_OK;
	pthread_mutex_lock(&c->lock);
	*id = known_name_locked(c, fn);
	if (*id == 0 && c->nnames == c->capnames) {
		uint32_t cap = c->capnames ? 2 * c->capnames : 8;
		struct cname *grown =
			fut__realloc(c->names, cap * sizeof(*grown));
		if (grown == NULL) {
			rc = FUT_ENOMEM;
		} else {
			c->names = grown;
			c->capnames = cap;
		}
	}
	if (*id == 0 && rc == FUT_OK) {
		c->names[c->nnames].fn = fn;
		c->names[c->nnames].name = copy;
		copy = NULL;
		*id = ++c->nnames;
	}
	pthread_mutex_unlock(&c->lock);
	fut__free(copy);
	return rc;
}

/* Caller holds c->lock. */
static int admit_locked(const struct mclient *c)
{
	if (c->shutdown)
		return FUT_ESHUTDOWN;
	if (c->broken)
		return FUT_EBROKEN;
	return FUT_OK;
}

static int enqueue(struct mclient *c, struct mjob *first, struct mjob *last)
{
	pthread_mutex_lock(&c->lock);
	int rc = admit_locked(c);
	if (rc == FUT_OK) {
		if (c->qtail != NULL)
			c->qtail->next = first;
		else
			c->qhead = first;
		c->qtail = last;
		last->next = NULL;
		atomic_store(&c->queued, true);
		fut__mpi_client_wake_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static int admit(struct mclient *c, fut_fn fn, uint32_t *name)
{
	/* A name already known costs no second lock round. */
	pthread_mutex_lock(&c->lock);
	int rc = admit_locked(c);
	*name = rc == FUT_OK ? known_name_locked(c, fn) : 0;
	pthread_mutex_unlock(&c->lock);
	if (rc != FUT_OK || *name != 0)
		return rc;
	return name_id(c, fn, name);
}

int fut__mpi_client_submit(fut_executor *ex, fut_fn fn, void *arg,
			   const void *data, size_t len, bool bytes,
			   fut_future **out)
{
	(void)arg;
	if (!bytes)
		return FUT_ENOTSUP; /* a pointer means nothing on a rank */
	struct mclient *c = fut__mpi_client_of(ex);
	uint32_t name;
	int rc = admit(c, fn, &name);
	if (rc != FUT_OK)
		return rc;
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	struct mjob *j = job_new(c, name, data, len);
	if (j == NULL) {
		fut__mpi_client_unref(c);
		return FUT_ENOMEM;
	}
	rc = enqueue(c, j, j);
	if (rc != FUT_OK) {
		job_discard(j);
		return rc;
	}
	*out = &j->fut;
	return FUT_OK;
}

int fut__mpi_client_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
				size_t stride, size_t n, fut_future **out)
{
	struct mclient *c = fut__mpi_client_of(ex);
	uint32_t name;
	int rc = admit(c, fn, &name);
	if (rc != FUT_OK)
		return rc;
	struct mjob *first = NULL, *last = NULL;
	size_t made = 0;
	/* The jobs' client references at once: n atomic adds were a tenth of
	 * the submitting thread's time (W-MPI2, docs/perf-log.md). */
	atomic_fetch_add_explicit(&c->refs, n, memory_order_relaxed);
	for (; made < n; made++) {
		const unsigned char *in =
			(const unsigned char *)inputs + made * stride;
		struct mjob *j = job_new(c, name, stride ? in : NULL, stride);
		if (j == NULL)
			break;
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
		out[made] = &j->fut;
		if (made >= FUT__MPI_AHEAD)
			((struct mjob *)(void *)out[made - FUT__MPI_AHEAD])
				->ahead = j;
	}
	/* The handle's reference is held: these are never the last. */
	atomic_fetch_sub_explicit(&c->refs, n - made, memory_order_relaxed);
	rc = made == n ? enqueue(c, first, last) : FUT_ENOMEM;
	if (rc == FUT_OK)
		return FUT_OK;
	while (first != NULL) {
		struct mjob *j = first;
		first = j->next;
		job_discard(j);
	}
	for (size_t i = 0; i < n; i++)
		out[i] = NULL;
	return rc;
}
