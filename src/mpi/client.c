/*
 * client.c: the MPI executor on root: its handle, creation, shutdown and
 * free, and the MPI_Finalize hook.
 *
 * Owns: struct mclient's life (mpi_client.h): its references (the handle,
 * the manager thread, one per job), the manager thread's start and join,
 * and the MPI_COMM_SELF attribute whose delete callback shuts a forgotten
 * executor down inside MPI_Finalize.  Also the library's count of live
 * objects (a test hook).  Jobs and submission are client_submit.c's; the
 * manager thread, which owns every MPI call, is client_manager.c's.
 * Shutdown: once the queue and the ranks are empty, the manager sends one
 * STOP per rank; shutdown with wait joins it.
 * Threads: any caller (creation, shutdown, free); the finalize hook runs
 * in MPI_Finalize's thread; the manager drops its reference at its end.
 * Locks: c->lock (mpi_client.h) guards the flags marked "lock"; it is
 * never held across an MPI call or user code.  Lock order: c->lock -> a
 * future's lock (fut_cancel of drained jobs runs unlocked).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "mpi_client.h"

static const struct fut__executor_ops client_ops;

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

void fut__mpi_client_unref(struct mclient *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		client_free(c);
}

/* Caller holds c->lock. */
void fut__mpi_client_wake_locked(struct mclient *c)
{
	c->wake = true;
	if (c->sleeping)
		pthread_cond_signal(&c->wake_cv);
}

/* ------------------------------------------------------------------ */
/* Shutdown and free                                                   */

/* The executors held in this process (holding), each with a
 * reference, until their manager ends or fut__mpi_release_held() takes
 * them. */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mclient *held_list;

static void list_held(struct mclient *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	pthread_mutex_lock(&held_lock);
	c->held_next = held_list;
	held_list = c;
	pthread_mutex_unlock(&held_lock);
}

void fut__mpi_unlist_held(struct mclient *c)
{
	bool found = false;
	pthread_mutex_lock(&held_lock);
	for (struct mclient **p = &held_list; *p != NULL; p = &(*p)->held_next)
		if (*p == c) {
			*p = c->held_next;
			found = true;
			break;
		}
	pthread_mutex_unlock(&held_lock);
	if (found)
		fut__mpi_client_unref(c);
}

void fut__mpi_release_held(void)
{
	pthread_mutex_lock(&held_lock);
	struct mclient *list = held_list;
	held_list = NULL;
	pthread_mutex_unlock(&held_lock);
	while (list != NULL) {
		struct mclient *c = list;
		list = c->held_next;
		/* From one of its own callbacks (a collective call there):
		 * it stops the ranks once that callback returns. */
		bool own = pthread_equal(c->manager, pthread_self());
		pthread_mutex_lock(&c->lock);
		c->release_stop = true;
		c->let_go |= !own;
		atomic_store(&c->holding, false);
		fut__mpi_client_wake_locked(c);
		while (!own && !c->manager_done)
			pthread_cond_wait(&c->done_cv, &c->lock);
		pthread_mutex_unlock(&c->lock);
		fut__mpi_client_unref(c);
	}
}

/*
 * A break has had its ACKs, and its futures are about to end: their
 * callbacks may free the executor, and the thread with the last outcome
 * call MPI_Finalize at once.  A rank sent a BREAK says its BYE only once
 * its tasks end (one that ignores its interrupt, much later), and the
 * manager took it after the futures ended, as finalize began (hundreds
 * of calls counted: test_mpi_break brokennowaitfin, freethenbreak; found
 * by review, 2026-12-07).  So it holds, as after a free from the last
 * callback (mpi_client.h, holding), but whatever release_stop says (a
 * shutdown(NOWAIT) before the break, or a free from a callback while
 * tasks ran, left the manager free to call MPI): until the finalize
 * hook, a shutdown or free of another thread, or root's next
 * fut_mpi_executor_new.  Not while such a thread waits for the
 * manager's end already (let_go): it would wait for ever.
 */
void fut__mpi_hold_broken(struct mclient *c)
{
	bool owed = false;
	for (int r = 0; r < c->s.size && !c->deaf; r++) {
		const struct mrank *mr = &c->ranks[r];
		if (r != c->s.root && !mr->bye && !mr->gone)
			owed = true;
	}
	if (!owed) {
		/* Shut down already: the manager ends without waiting for
		 * anything, and frees the communicator first, here (after,
		 * MPI_Comm_free met the finalize that a shutdown(NOWAIT)
		 * before the break allowed: 1 run in 5). */
		if (fut__mpi_drained(c)) {
			c->stopping = true;
			fut__mpi_comm_release(&c->s);
		}
		return;
	}
	bool held = false;
	pthread_mutex_lock(&c->lock);
	if (!c->let_go && !atomic_load(&c->holding)) {
		held = true;
		atomic_store(&c->holding, true);
		/* A shutdown(NOWAIT) returns at once, and leaves the hold
		 * (client_shutdown()): it waited for the manager's end, so
		 * for a task that ignored its interrupt (4.6 s against the
		 * futures' 0.3: test_mpi_break nowaitbroken; found by review,
		 * 2026-12-07). */
		c->seen = true;
		c->shutdown_seen = true;
		pthread_cond_broadcast(&c->done_cv);
	}
	pthread_mutex_unlock(&c->lock);
	if (!held)
		return;
	/* Every STOP went (fut__mpi_hold() sends any not sent). */
	c->hold_sent = true;
	for (int r = 0; r < c->s.size; r++)
		if (r != c->s.root && !c->ranks[r].stopped &&
		    !c->ranks[r].bye && !c->ranks[r].gone)
			c->hold_sent = false;
	list_held(c);
}

static int client_shutdown(fut_executor *ex, unsigned flags)
{
	struct mclient *c = fut__mpi_client_of(ex);
	bool wait = (flags & FUT_SHUTDOWN_NOWAIT) == 0;
	if (wait && fut__current_executor() == ex)
		return FUT_EINVAL;
	struct mjob *drained_jobs = NULL;
	/* A done callback run below may free the executor: c stays ours
	 * until we return. */
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	if (flags & FUT_SHUTDOWN_INTERRUPT) {
		atomic_store(&c->interrupt_all, true);
		atomic_store(&c->interrupt_scan, true);
	}
	bool held = false;
	pthread_mutex_lock(&c->lock);
	c->shutdown = true;
	atomic_store(&c->shutting, true);
	if (flags & FUT_SHUTDOWN_CANCEL_PENDING) {
		drained_jobs = c->qhead;
		c->qhead = c->qtail = NULL;
		atomic_store(&c->queued, false);
	}
	if (fut__current_executor() == ex) {
		/* A done callback, on the manager's thread (its fields are
		 * ours to read): with nothing left, its future may have been
		 * the last, and the thread that has it in MPI_Finalize soon.
		 * The wait for the BYEs raced that (MPICH aborted; found by
		 * review, 2026-12-07), so it waits (mpi_client.h). */
		held = !c->release_stop && !atomic_load(&c->holding) &&
		       c->qhead == NULL && c->inflight == 0 && !c->stopping;
		if (held)
			atomic_store(&c->holding, true);
	} else if (wait || !c->shutdown_seen) {
		/* Not a NOWAIT that returns at once: the manager would call
		 * MPI after it (fut__mpi_hold_broken()). */
		c->release_stop = true;
		c->let_go |= wait;
		atomic_store(&c->holding, false);
	}
	fut__mpi_client_wake_locked(c);
	pthread_mutex_unlock(&c->lock);
	if (held)
		list_held(c);
	/* Every job first, then their callbacks, job after job: one may
	 * wait, untimed, for another of them (cancelled one by one, each
	 * followed by its callbacks, that wait never ended: found by
	 * review, 2026-12-07, fifteenth session). */
	for (struct mjob *j = drained_jobs; j != NULL; j = j->next) {
		bool mine; /* one cancelled before has no callback left */
		(void)fut__future_cancel_held(&j->fut, &mine);
	}
	while (drained_jobs != NULL) {
		struct mjob *j = drained_jobs;
		drained_jobs = j->next;
		fut__future_run_held(&j->fut);
		fut_release(&j->fut);
	}
	if (!wait && fut__current_executor() != ex) {
		/* NOWAIT: once the caller has every result it may call
		 * MPI_Finalize, and MPI forbids any other thread inside MPI
		 * then (MPICH aborts: docs/mpi.md, Finalize).  So the STOPs
		 * of an executor shut down idle, and the BYEs that answer
		 * them, are done before this returns; with work left it
		 * returns once the manager has seen the shutdown. */
		pthread_mutex_lock(&c->lock);
		while (!c->manager_done && !c->shutdown_seen)
			pthread_cond_wait(&c->done_cv, &c->lock);
		pthread_mutex_unlock(&c->lock);
	}
	if (wait) {
		pthread_mutex_lock(&c->lock);
		while (!c->manager_done)
			pthread_cond_wait(&c->done_cv, &c->lock);
		bool join = !c->joined;
		c->joined = true;
		pthread_mutex_unlock(&c->lock);
		if (join)
			pthread_join(c->manager, NULL);
	}
	fut__mpi_client_unref(c);
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
	struct mclient *c = fut__mpi_client_of(ex);
	atomic_store_explicit(&c->ex.magic, 0, memory_order_relaxed);
	if (fut__current_executor() == ex) {
		/* Freed from one of its own done callbacks: the manager ends
		 * the work, detaches and drops the handle's reference.  No
		 * MPI call here: the caller that has this future's result
		 * may be in MPI_Finalize already, even deleting this very
		 * attribute (MPICH then released it twice and aborted).  The
		 * attribute stays, with its reference: the hook drops it. */
		(void)client_shutdown(ex, FUT_SHUTDOWN_NOWAIT);
		pthread_mutex_lock(&c->lock);
		c->free_on_exit = true;
		c->joined = true;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	unhook(c);
	fut__mpi_client_unref(c);
}

static const struct fut__executor_ops client_ops = {
	.submit = fut__mpi_client_submit,
	.submit_many = fut__mpi_client_submit_many,
	.shutdown = client_shutdown,
	.destroy = client_destroy,
};

void fut__mpi_client_finalize(fut_executor *ex)
{
	if (fut__current_executor() != ex)
		(void)client_shutdown(ex, 0);
}

/* MPI_Finalize deletes MPI_COMM_SELF's attributes first: an executor the
 * program forgot to free (or freed from one of its done callbacks) is shut
 * down there, so finalize does not hang.  Runs once, in MPI_Finalize or in
 * unhook()'s delete, and drops the attribute's reference. */
static int finalize_hook(MPI_Comm comm, int keyval, void *value, void *extra)
{
	(void)comm;
	(void)keyval;
	(void)extra;
	struct mclient *c = value;
	if (!atomic_load(&c->unhooking))
		fut__mpi_client_finalize(&c->ex);
	fut__mpi_client_unref(c);
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
	for (int r = 0; r < c->s.size; r++) {
		fut__wire_dec_init(&c->ranks[r].dec, FUT__WIRE_TO_CLIENT);
		/* A result it has no memory to gather is handed over dropped
		 * (client_manager.c, complete()). */
		c->ranks[r].dec.may_drop = true;
	}
	fut__mpi_link_init(&c->link, c->s.comm);
	c->link.lost = fut__mpi_rank_lost;
	c->link.lost_arg = c;
	c->lost_rank = -1;
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

	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &c->maker_mask);
	int err = pthread_create(&c->manager, NULL, fut__mpi_client_manager, c);
	pthread_sigmask(SIG_SETMASK, &c->maker_mask, NULL);
	if (err != 0) {
		setup->comm = c->s.comm; /* the caller stops the servers */
		client_free(c);
		return FUT_EAGAIN;
	}
	setup->comm = MPI_COMM_NULL;
	/* The attribute holds a reference, which its hook drops. */
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, finalize_hook,
				   &c->keyval, NULL) != MPI_SUCCESS) {
		c->keyval = MPI_KEYVAL_INVALID;
		fut__mpi_client_unref(c);
	} else if (MPI_Comm_set_attr(MPI_COMM_SELF, c->keyval, c) !=
		   MPI_SUCCESS) {
		(void)MPI_Comm_free_keyval(&c->keyval);
		c->keyval = MPI_KEYVAL_INVALID;
		fut__mpi_client_unref(c);
	}
	*out = &c->ex;
	return FUT_OK;
nomem:
	return FUT_ENOMEM;
}
