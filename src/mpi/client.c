/*
 * client.c: the MPI executor on root: its queue, its futures and the
 * manager thread.
 *
 * Owns: struct mclient and its jobs (a future and its task's input in one
 * block).  Submit copies the input into a job, names the function
 * (names.c) and queues the job; the manager thread owns every MPI call
 * from then on: it hands each server rank at most `prefetch` jobs, as
 * many per message as fit up to `batch`, each claimed RUNNING
 * (fut__future_start) as it goes; everything else stays PENDING and
 * cancellable (mpi4py's rule, with prefetch 1 its exact one).  It sends a
 * function's name to a rank once (a NAME record) and its small id after
 * that (HPX's typename -> id).  Results complete the futures in the
 * manager thread, so done callbacks run there.  A malformed message, or a
 * result for a task the rank does not hold, breaks the executor:
 * FUT_EBROKEN for every pending and running future, with the rank's name.
 * Shutdown: once the queue and the ranks are empty, one STOP per rank.
 * The manager waits by polling (link.c's clock): spin, then an
 * exponential backoff on a condition variable that submit signals.
 * Threads: any caller (submit, shutdown, interrupt); the manager.
 * Locks: c->lock guards the queue, the flags marked "lock" and the name
 * table; it is never held across an MPI call or user code.  Lock order:
 * c->lock -> a future's lock (fut_cancel of drained jobs runs unlocked).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "mpi_int.h"

struct mclient;

struct mjob {
	struct fut_future fut; /* first: the caller's handle */
	struct mclient *c;     /* one client reference while the block lives */
	struct mjob *next;     /* the queue, or its rank's in-flight list */
	uint64_t id;
	uint32_t name;
	bool interrupt_sent;
	size_t len;
	unsigned char input[];
};

/* A server rank, as the manager sees it (the manager's alone). */
struct mrank {
	struct mjob *head, *tail; /* in flight, in the order sent */
	size_t inflight;
	uint32_t names_sent; /* ids 1..names_sent are known there */
	bool stopped;
	bool bye; /* its BYE came: nothing more of it is in flight */
	struct fut__wire_dec dec;
};

struct cname {
	fut_fn fn;
	char *name;
};

struct mclient {
	struct fut_executor ex; /* first: the handle */
	_Atomic uint32_t refs;	/* handle + manager + one per job */
	struct fut__mpi_setup s;
	size_t batch;
	pthread_t manager;
	int keyval; /* the MPI_COMM_SELF attribute of the finalize hook */
	_Atomic bool unhooking;
	_Atomic bool interrupt_scan; /* some job asked for an interrupt */
	_Atomic bool interrupt_all;  /* shutdown(INTERRUPT) */

	pthread_mutex_t lock;
	pthread_cond_t wake_cv, done_cv;
	struct mjob *qhead, *qtail; /* lock */
	bool shutdown;		    /* lock */
	bool broken;		    /* lock */
	char *broken_msg;	    /* lock; never changes once set */
	bool wake, sleeping;	    /* lock: the manager's sleep */
	bool manager_done, joined;  /* lock */
	bool free_on_exit;	    /* lock: freed from a callback */
	struct cname *names;	    /* lock: id i + 1 at names[i] */
	uint32_t nnames, capnames;  /* lock */

	/* The manager's own. */
	struct fut__mpi_link link;
	struct mrank *ranks; /* [s.size]; root's unused */
	uint64_t next_id;
	int next_rank;
	int hot_rank; /* the rank whose result came last; -1: none yet */
	bool stopping;
	bool broke; /* break_all ran */
};

static const struct fut__executor_ops client_ops;

static struct mclient *client_of(fut_executor *ex)
{
	return fut__container_of(ex, struct mclient, ex);
}

bool fut__mpi_client_is(const fut_executor *ex)
{
	return ex != NULL && ex->ops == &client_ops &&
	       atomic_load_explicit(&ex->magic, memory_order_relaxed) ==
		       FUT__EXECUTOR_MAGIC;
}

void fut__mpi_client_info(const fut_executor *ex, int *servers, int *rank)
{
	const struct mclient *c = (const struct mclient *)(const void *)ex;
	if (servers != NULL)
		*servers = c->s.size - 1;
	if (rank != NULL)
		*rank = c->s.rank;
}

static _Atomic long live;

size_t fut__mpi_live_objects(void)
{
	return (size_t)atomic_load(&live);
}

void fut__mpi_live_count(int delta)
{
	atomic_fetch_add_explicit(&live, delta, memory_order_relaxed);
}

static void client_free(struct mclient *c)
{
	fut__mpi_live_count(-1);
	for (int r = 0; c->ranks != NULL && r < c->s.size; r++)
		fut__wire_dec_fini(&c->ranks[r].dec);
	fut__free(c->ranks);
	fut__mpi_link_fini(&c->link);
	for (uint32_t i = 0; i < c->nnames; i++)
		fut__free(c->names[i].name);
	fut__free(c->names);
	fut__free(c->s.common);
	fut__free(c->broken_msg);
	pthread_cond_destroy(&c->wake_cv);
	pthread_cond_destroy(&c->done_cv);
	pthread_mutex_destroy(&c->lock);
	fut__free(c);
}

static void client_unref(struct mclient *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		client_free(c);
}

/* Caller holds c->lock. */
static void wake_locked(struct mclient *c)
{
	c->wake = true;
	if (c->sleeping)
		pthread_cond_signal(&c->wake_cv);
}

/* ------------------------------------------------------------------ */
/* Jobs                                                                */

static void job_destroy(fut_future *f)
{
	struct mjob *j = (struct mjob *)(void *)f;
	struct mclient *c = j->c;
	fut__free(j);
	fut__mpi_live_count(-1);
	client_unref(c);
}

/* fut_interrupt() on a running job: the manager tells its rank. */
static void job_interrupt(fut_future *f)
{
	struct mjob *j = (struct mjob *)(void *)f;
	struct mclient *c = j->c;
	atomic_store(&c->interrupt_scan, true);
	pthread_mutex_lock(&c->lock);
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
}

static const struct fut__future_ops job_ops = {
	.interrupt = job_interrupt,
	.destroy = job_destroy,
};

/* A pending job with two references: the caller's and the queue's. */
static struct mjob *job_new(struct mclient *c, uint32_t name, const void *data,
			    size_t len)
{
	if (len > SIZE_MAX - sizeof(struct mjob))
		return NULL;
	struct mjob *j = fut__malloc(sizeof(*j) + len);
	if (j == NULL)
		return NULL;
	fut__future_init(&j->fut, &job_ops);
	atomic_store_explicit(&j->fut.refs, 2, memory_order_relaxed);
	j->c = c;
	j->next = NULL;
	j->id = 0;
	j->name = name;
	j->interrupt_sent = false;
	j->len = len;
	if (len != 0)
		memcpy(j->input, data, len);
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	fut__mpi_live_count(1);
	return j;
}

static void job_discard(struct mjob *j)
{
	fut_release(&j->fut);
	fut_release(&j->fut);
}

/* Completes j with a failure and drops the manager's reference. */
static void job_fail(struct mjob *j, int code, int task_code, const char *msg)
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
		wake_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static int admit(struct mclient *c, fut_fn fn, uint32_t *name)
{
	pthread_mutex_lock(&c->lock);
	int rc = admit_locked(c);
	pthread_mutex_unlock(&c->lock);
	return rc != FUT_OK ? rc : name_id(c, fn, name);
}

static int client_submit(fut_executor *ex, fut_fn fn, void *arg,
			 const void *data, size_t len, bool bytes,
			 fut_future **out)
{
	(void)arg;
	if (!bytes)
		return FUT_ENOTSUP; /* a pointer means nothing on a rank */
	struct mclient *c = client_of(ex);
	uint32_t name;
	int rc = admit(c, fn, &name);
	if (rc != FUT_OK)
		return rc;
	struct mjob *j = job_new(c, name, data, len);
	if (j == NULL)
		return FUT_ENOMEM;
	rc = enqueue(c, j, j);
	if (rc != FUT_OK) {
		job_discard(j);
		return rc;
	}
	*out = &j->fut;
	return FUT_OK;
}

static int client_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
			      size_t stride, size_t n, fut_future **out)
{
	struct mclient *c = client_of(ex);
	uint32_t name;
	int rc = admit(c, fn, &name);
	if (rc != FUT_OK)
		return rc;
	struct mjob *first = NULL, *last = NULL;
	size_t made = 0;
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
	}
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

/* ------------------------------------------------------------------ */
/* The manager                                                         */

/* Fails every job of list with FUT_EBROKEN. */
static void fail_broken(struct mclient *c, struct mjob *list)
{
	while (list != NULL) {
		struct mjob *j = list;
		list = j->next;
		job_fail(j, FUT_EBROKEN, 0, c->broken_msg);
	}
}

/* Sends one STOP to every server rank not yet stopped. */
static void stop_ranks(struct mclient *c)
{
	for (int r = 0; r < c->s.size; r++) {
		if (r == c->s.root || c->ranks[r].stopped)
			continue;
		struct fut__mpi_frame fr = { 0 };
		if (fut__mpi_frame_add(&fr, 0, 0, FUT__WIRE_T_STOP, 0, NULL,
				       0) != FUT_OK ||
		    fut__mpi_link_send(&c->link, r, FUT__WIRE_TASKS, &fr) !=
			    FUT_OK) {
			fut__free(fr.buf);
			continue; /* retried on the next pass */
		}
		c->ranks[r].stopped = true;
	}
}

/* The executor is broken (why: formatted): every queued and running job
 * ends FUT_EBROKEN, and every rank gets its STOP. */
static void break_all(struct mclient *c, const char *fmt, int rank,
		      const char *detail)
{
	char why[512];
	snprintf(why, sizeof(why), fmt, rank, detail);
	c->broke = true;
	pthread_mutex_lock(&c->lock);
	bool first = !c->broken;
	if (first) {
		c->broken = true;
		c->broken_msg = fut__strdup(why);
	}
	struct mjob *queued = c->qhead;
	c->qhead = c->qtail = NULL;
	pthread_mutex_unlock(&c->lock);
	fail_broken(c, queued);
	for (int r = 0; r < c->s.size; r++) {
		struct mrank *mr = &c->ranks[r];
		fail_broken(c, mr->head);
		mr->head = mr->tail = NULL;
		mr->inflight = 0;
	}
	if (first)
		stop_ranks(c);
}

/* An ISOLATE server's worker died running j: the payload is the wait
 * status (4 bytes, little-endian), then the message.  Takes data. */
static void on_crash(struct mclient *c, int rank, struct mjob *j,
		     unsigned char *data, size_t len)
{
	if (len < 4) {
		fut__free(data);
		job_fail(j, FUT_EBROKEN, 0, "malformed crash record");
		break_all(c, "rank %d sent a crash record without a status%s",
			  rank, "");
		return;
	}
	uint32_t u = 0;
	for (int k = 0; k < 4; k++)
		u |= (uint32_t)data[k] << (8 * k);
	char *msg = fut__malloc(len - 4 + 1);
	if (msg != NULL) {
		memcpy(msg, data + 4, len - 4);
		msg[len - 4] = '\0';
	}
	fut__free(data);
	(void)fut__future_crash(&j->fut, (int)u, msg);
	fut_release(&j->fut);
}

/* Completes the job of a result record. */
static void on_result(struct mclient *c, int rank, struct fut__wire_rec *rec)
{
	struct mrank *mr = &c->ranks[rank];
	struct mjob *j = mr->head, *prev = NULL;
	while (j != NULL && j->id != rec->id) {
		prev = j;
		j = j->next;
	}
	if (j == NULL) {
		if (rec->owned)
			fut__free(rec->data);
		break_all(c,
			  "rank %d sent a result for a task it does not hold%s",
			  rank, "");
		return;
	}
	if (prev != NULL)
		prev->next = j->next;
	else
		mr->head = j->next;
	if (mr->tail == j)
		mr->tail = prev;
	mr->inflight--;

	void *data = rec->data;
	if (!rec->owned && rec->len != 0) {
		data = fut__malloc(rec->len);
		if (data != NULL)
			memcpy(data, rec->data, rec->len);
	}
	if (rec->len != 0 && data == NULL) {
		job_fail(j, FUT_ENOMEM, 0,
			 "out of memory for the task's result");
		return;
	}
	char *msg = NULL;
	switch (rec->kind) {
	case FUT__WIRE_R_BYTES:
		(void)fut__future_succeed_bytes(&j->fut, data, rec->len);
		fut_release(&j->fut);
		return;
	case FUT__WIRE_R_ERROR:
		if (rec->code == FUT_ECRASHED) {
			on_crash(c, rank, j, (unsigned char *)data, rec->len);
			return;
		}
		/* fall through */
	case FUT__WIRE_R_FAIL:
		msg = fut__malloc(rec->len + 1);
		if (msg != NULL) {
			if (rec->len != 0)
				memcpy(msg, data, rec->len);
			msg[rec->len] = '\0';
		}
		fut__free(data);
		if (rec->kind == FUT__WIRE_R_FAIL)
			(void)fut__future_fail(&j->fut, FUT_ETASK, rec->code,
					       msg);
		else
			(void)fut__future_fail(&j->fut, rec->code, 0, msg);
		fut_release(&j->fut);
		return;
	case FUT__WIRE_R_VALUE:
		fut__free(data);
		job_fail(j, FUT_ENOTSUP, 0,
			 "an MPI task returned a pointer (fut_task_return); "
			 "return bytes instead");
		return;
	default:
		fut__free(data);
		(void)fut__future_succeed(&j->fut, NULL);
		fut_release(&j->fut);
		return;
	}
}

/* Feeds one message from rank into its decoder. */
static void feed(struct mclient *c, int rank, const unsigned char *data,
		 size_t len, bool broken)
{
	if (rank < 0 || rank >= c->s.size || rank == c->s.root || broken)
		return; /* after a break, results are drained and dropped */
	struct mrank *mr = &c->ranks[rank];
	size_t off = 0;
	while (off < len || !fut__wire_dec_idle(&mr->dec)) {
		struct fut__wire_rec rec;
		size_t used = 0;
		int rc = fut__wire_dec_feed(&mr->dec, data + off, len - off,
					    &used, &rec);
		off += used;
		if (rc == FUT__WIRE_MORE)
			return;
		if (rc == FUT__WIRE_RECORD) {
			c->hot_rank = rank;
			on_result(c, rank, &rec);
			if (c->broke)
				return;
			continue;
		}
		break_all(c, "rank %d sent a malformed message: %s", rank,
			  mr->dec.error != NULL ? mr->dec.error :
						  "out of memory");
		return;
	}
}

static bool receive_all(struct mclient *c)
{
	bool did = false;
	for (;;) {
		const void *data;
		size_t len;
		int src = -1, tag = -1;
		int rc = fut__mpi_link_recv(&c->link, MPI_ANY_SOURCE, &data,
					    &len, &src, &tag);
		if (rc == FUT_ETIMEDOUT)
			return did;
		if (rc != FUT_OK) {
			break_all(c, "rank %d: an MPI receive failed%s",
				  c->s.rank, "");
			return true;
		}
		did = true;
		if (tag == FUT__MPI_TAG_BYE) {
			if (src >= 0 && src < c->s.size)
				c->ranks[src].bye = true;
			continue;
		}
		feed(c, src, data, len, c->broke);
	}
}

/* Caller holds c->lock: pops up to n queued jobs. */
static struct mjob *pop_locked(struct mclient *c, size_t n)
{
	struct mjob *first = c->qhead, *last = NULL;
	for (struct mjob *j = first; j != NULL && n > 0; j = j->next, n--)
		last = j;
	if (last == NULL)
		return NULL;
	c->qhead = last->next;
	if (c->qhead == NULL)
		c->qtail = NULL;
	last->next = NULL;
	return first;
}

/* Sends rank r the jobs of list (claimed here; cancelled ones dropped). */
static void send_jobs(struct mclient *c, int r, struct mjob *list)
{
	struct mrank *mr = &c->ranks[r];
	struct fut__mpi_frame fr = { 0 };
	while (list != NULL) {
		struct mjob *j = list;
		list = j->next;
		j->next = NULL;
		if (fut__future_start(&j->fut) != FUT_OK) {
			fut_release(&j->fut); /* cancelled while queued */
			continue;
		}
		int rc = FUT_OK;
		while (rc == FUT_OK && mr->names_sent < j->name) {
			pthread_mutex_lock(&c->lock);
			const char *name = c->names[mr->names_sent].name;
			pthread_mutex_unlock(&c->lock);
			rc = fut__mpi_frame_add(&fr, mr->names_sent + 1, 0,
						FUT__WIRE_T_NAME, 0, name,
						strlen(name));
			if (rc == FUT_OK)
				mr->names_sent++;
		}
		j->id = ++c->next_id;
		if (rc == FUT_OK)
			rc = fut__mpi_frame_add(&fr, j->id, j->name,
						FUT__WIRE_T_TASK, 0, j->input,
						j->len);
		if (rc != FUT_OK) {
			job_fail(j, FUT_ENOMEM, 0,
				 "out of memory for the task's message");
			continue;
		}
		if (mr->tail != NULL)
			mr->tail->next = j;
		else
			mr->head = j;
		mr->tail = j;
		mr->inflight++;
	}
	int rc = fut__mpi_link_send(&c->link, r, FUT__WIRE_TASKS, &fr);
	fut__free(fr.buf);
	if (rc == FUT_EBROKEN)
		break_all(c, "rank %d: an MPI send failed%s", r, "");
	else if (rc != FUT_OK)
		break_all(c, "rank %d: out of memory for a message%s", r, "");
}

/*
 * Hands queued jobs to the ranks with room, round-robin, but the rank that
 * answered last first: its loop has just sent and still spins, while a
 * rank left idle for a round trip or more has fallen into its backoff.
 * One task at a time round-robin made each server's idle gap two round
 * trips: past poll_spin on a loaded machine, both servers slept, and
 * round trips stayed at the backoff cap (W-MPI1: 2.7 ms; docs/mpi.md).
 */
static bool dispatch(struct mclient *c)
{
	bool did = false;
	int size = c->s.size;
	for (int k = -1; k < size; k++) {
		int r = k < 0 ? c->hot_rank : (c->next_rank + k) % size;
		if (r < 0)
			continue;
		struct mrank *mr = &c->ranks[r];
		if (r == c->s.root || mr->stopped ||
		    mr->inflight >= c->s.prefetch)
			continue;
		size_t room = c->s.prefetch - mr->inflight;
		if (room > c->batch)
			room = c->batch;
		pthread_mutex_lock(&c->lock);
		struct mjob *list = c->broken ? NULL : pop_locked(c, room);
		pthread_mutex_unlock(&c->lock);
		if (list == NULL)
			break;
		send_jobs(c, r, list);
		if (k >= 0)
			c->next_rank = (r + 1) % size;
		did = true;
	}
	return did;
}

/* Sends an INTERRUPT for every running job that asked for one. */
static bool send_interrupts(struct mclient *c)
{
	bool all = atomic_load(&c->interrupt_all);
	bool did = false;
	for (int r = 0; r < c->s.size; r++) {
		struct fut__mpi_frame fr = { 0 };
		for (struct mjob *j = c->ranks[r].head; j != NULL;
		     j = j->next) {
			bool asked = all || (atomic_load(&j->fut.flags) &
					     FUT__F_INTERRUPT);
			if (!asked || j->interrupt_sent)
				continue;
			if (fut__mpi_frame_add(&fr, j->id, 0,
					       FUT__WIRE_T_INTERRUPT, 0, NULL,
					       0) == FUT_OK)
				j->interrupt_sent = true;
		}
		if (fr.count != 0) {
			did = true;
			if (fut__mpi_link_send(&c->link, r, FUT__WIRE_TASKS,
					       &fr) != FUT_OK)
				break_all(c, "rank %d: an MPI send failed%s", r,
					  "");
		}
		fut__free(fr.buf);
	}
	return did;
}

/* True once shut down with nothing left: then the ranks get their STOP. */
static bool drained(struct mclient *c)
{
	pthread_mutex_lock(&c->lock);
	bool done = c->shutdown && c->qhead == NULL;
	pthread_mutex_unlock(&c->lock);
	for (int r = 0; done && r < c->s.size; r++)
		done = c->ranks[r].inflight == 0;
	return done;
}

/* True once every server's BYE came (they come after their STOP). */
static bool all_said_bye(const struct mclient *c)
{
	for (int r = 0; r < c->s.size; r++)
		if (r != c->s.root && !c->ranks[r].bye)
			return false;
	return true;
}

static void *manager_main(void *arg)
{
	struct mclient *c = arg;
	fut__current_executor_set(&c->ex);
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, c->s.spin, c->s.backoff);
	for (;;) {
		bool did = receive_all(c);
		did |= dispatch(c);
		if (atomic_exchange(&c->interrupt_scan, false))
			did |= send_interrupts(c);
		did |= fut__mpi_link_progress(&c->link);
		if (!c->stopping && drained(c)) {
			stop_ranks(c);
			c->stopping = true;
		}
		if (c->stopping && !fut__mpi_link_busy(&c->link) &&
		    all_said_bye(c))
			break;
		if (did) {
			fut__mpi_idle_busy(&idle);
			continue;
		}
		int64_t ns = fut__mpi_idle_next(&idle, true);
		if (ns > 0) /* woken early by submit, interrupt, shutdown */
			fut__mpi_nap(&c->lock, &c->wake_cv, &c->wake,
				     &c->sleeping, ns);
	}
	fut__mpi_comm_release(&c->s);
	pthread_mutex_lock(&c->lock);
	c->manager_done = true;
	pthread_cond_broadcast(&c->done_cv);
	bool free_handle = c->free_on_exit;
	pthread_mutex_unlock(&c->lock);
	fut__current_executor_set(NULL);
	if (free_handle) {
		pthread_detach(pthread_self());
		client_unref(c);
	}
	client_unref(c);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Shutdown and free                                                   */

static int client_shutdown(fut_executor *ex, unsigned flags)
{
	struct mclient *c = client_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	if (wait && fut__current_executor() == ex)
		return FUT_EINVAL;
	struct mjob *drained_jobs = NULL;
	if (flags & FUT_SHUTDOWN_INTERRUPT) {
		atomic_store(&c->interrupt_all, true);
		atomic_store(&c->interrupt_scan, true);
	}
	pthread_mutex_lock(&c->lock);
	c->shutdown = true;
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING) {
		drained_jobs = c->qhead;
		c->qhead = c->qtail = NULL;
	}
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
	while (drained_jobs != NULL) {
		struct mjob *j = drained_jobs;
		drained_jobs = j->next;
		(void)fut_cancel(&j->fut);
		fut_release(&j->fut);
	}
	if (!wait)
		return FUT_OK;
	pthread_mutex_lock(&c->lock);
	while (!c->manager_done)
		pthread_cond_wait(&c->done_cv, &c->lock);
	bool join = !c->joined;
	c->joined = true;
	pthread_mutex_unlock(&c->lock);
	if (join)
		pthread_join(c->manager, NULL);
	return FUT_OK;
}

static void unhook(struct mclient *c)
{
	int finalized = 1;
	(void)MPI_Finalized(&finalized);
	if (finalized || c->keyval == MPI_KEYVAL_INVALID)
		return;
	atomic_store(&c->unhooking, true);
	(void)MPI_Comm_delete_attr(MPI_COMM_SELF, c->keyval);
	(void)MPI_Comm_free_keyval(&c->keyval);
}

static void client_destroy(fut_executor *ex)
{
	struct mclient *c = client_of(ex);
	atomic_store_explicit(&c->ex.magic, 0, memory_order_relaxed);
	unhook(c);
	if (fut__current_executor() == ex) {
		/* Freed from one of its own done callbacks: the manager ends
		 * the work, detaches and drops the handle's reference. */
		(void)client_shutdown(ex, FUT_SHUTDOWN_NOWAIT);
		pthread_mutex_lock(&c->lock);
		c->free_on_exit = true;
		c->joined = true;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	client_unref(c);
}

static const struct fut__executor_ops client_ops = {
	.submit = client_submit,
	.submit_many = client_submit_many,
	.shutdown = client_shutdown,
	.destroy = client_destroy,
};

void fut__mpi_client_finalize(fut_executor *ex)
{
	if (fut__current_executor() != ex)
		(void)client_shutdown(ex, 0);
}

/* MPI_Finalize deletes MPI_COMM_SELF's attributes first: an executor the
 * program forgot to free is shut down there, so finalize does not hang. */
static int finalize_hook(MPI_Comm comm, int keyval, void *value, void *extra)
{
	(void)comm;
	(void)keyval;
	(void)extra;
	struct mclient *c = value;
	if (!atomic_load(&c->unhooking))
		fut__mpi_client_finalize(&c->ex);
	return MPI_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */

int fut__mpi_client_new(fut_executor **out, struct fut__mpi_setup *setup)
{
	struct mclient *c = fut__calloc(1, sizeof(*c));
	if (c == NULL)
		goto nomem;
	fut__mpi_live_count(1);
	c->s = *setup;
	setup->common = NULL;
	c->keyval = MPI_KEYVAL_INVALID;
	c->hot_rank = -1;
	c->batch = c->s.prefetch;
	c->ranks = fut__calloc((size_t)c->s.size, sizeof(*c->ranks));
	if (c->ranks == NULL) {
		fut__free(c->s.common);
		fut__free(c);
		fut__mpi_live_count(-1);
		goto nomem;
	}
	for (int r = 0; r < c->s.size; r++)
		fut__wire_dec_init(&c->ranks[r].dec, FUT__WIRE_TO_CLIENT);
	fut__mpi_link_init(&c->link, c->s.comm);
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->wake_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&c->done_cv, NULL);
	atomic_init(&c->refs, 2); /* the handle and the manager */
	c->ex.ops = &client_ops;
	fut__executor_init(&c->ex);

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&c->manager, NULL, manager_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		setup->comm = c->s.comm; /* the caller stops the servers */
		client_free(c);
		return FUT_EAGAIN;
	}
	setup->comm = MPI_COMM_NULL;
	if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, finalize_hook,
				   &c->keyval, NULL) == MPI_SUCCESS &&
	    MPI_Comm_set_attr(MPI_COMM_SELF, c->keyval, c) != MPI_SUCCESS) {
		(void)MPI_Comm_free_keyval(&c->keyval);
		c->keyval = MPI_KEYVAL_INVALID;
	}
	*out = &c->ex;
	return FUT_OK;
nomem:
	return FUT_ENOMEM;
}
