/*
 * server_pool.c: FUT_MPI_ISOLATE: a serving rank's tasks run in its
 * libfuture process pool (s->s.pool).
 *
 * Owns: struct pbatch and struct ptask (mpi_server.h), and the run of
 * tasks being gathered from a message.  There are no worker threads: the
 * tasks of each received message go to the pool, the runs of one function
 * and one input length in one fut_submit_many, and each pool future's
 * done callback (in the pool's manager thread) records its outcome, a
 * crash's wait status included (an ERROR record whose payload starts with
 * the status, 4 bytes little-endian); an INTERRUPT becomes fut_interrupt()
 * of the pool future, which kills its worker.
 * Threads: the loop (gather, flush, interrupt, poll); the pool's
 * manager, or the loop when a future was done already or had no memory
 * for its callback (the done callbacks).
 * Locks: s->lock guards s->batches, a batch's left and a task's done; it
 * is never held across a call into the pool.
 */
#include <string.h>

#include "mpi_server.h"

/* ------------------------------------------------------------------ */
/* ISOLATE: the tasks run in the rank's process pool                   */

/* Caller holds s->lock: records the outcome of pool future f. */
static void add_pool_result_locked(struct server *s, uint64_t id, fut_future *f)
{
	const void *data = NULL;
	size_t len = 0;
	int rc = fut_result_bytes(f, 0, &data, &len);
	const char *msg = NULL;
	if (rc != FUT_OK)
		msg = fut_error_message(f);
	size_t n = msg != NULL ? strlen(msg) : 0;
	if (n > FUT__WIRE_MAX_MESSAGE - 4)
		n = FUT__WIRE_MAX_MESSAGE - 4;
	int added;
	if (rc == FUT_OK && len == 0) {
		added = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_NONE,
					   0, NULL, 0);
	} else if (rc == FUT_OK) {
		added = fut__mpi_frame_add(&s->results, id, 0,
					   FUT__WIRE_R_BYTES, 0, data, len);
	} else if (rc == FUT_ETASK) {
		added = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_FAIL,
					   fut_task_code(f), msg, n);
	} else if (rc == FUT_ECRASHED) {
		/* The wait status first, then the message (the pool's are a
		 * line: "worker process <pid> died: signal <n>"). */
		unsigned char buf[4 + 1024];
		if (n > sizeof(buf) - 4)
			n = sizeof(buf) - 4;
		int status = 0;
		(void)fut_crash_status(f, &status);
		uint32_t u = (uint32_t)status;
		for (int k = 0; k < 4; k++)
			buf[k] = (unsigned char)(u >> (8 * k));
		if (n != 0)
			memcpy(buf + 4, msg, n);
		added = fut__mpi_frame_add(&s->results, id, 0,
					   FUT__WIRE_R_ERROR, FUT_ECRASHED, buf,
					   4 + n);
	} else {
		added = fut__mpi_frame_add(&s->results, id, 0,
					   FUT__WIRE_R_ERROR, rc, msg, n);
	}
	fut__mpi_server_result_added_locked(s, id, added);
}

/* A pool future's done callback (the pool's manager thread, or the loop
 * when the future was done already). */
static void pool_done(fut_future *f, void *ud)
{
	struct ptask *pt = ud;
	struct pbatch *b = pt->b;
	struct server *s = b->s;
	pthread_mutex_lock(&s->lock);
	pt->done = true;
	s->busy--;
	add_pool_result_locked(s, pt->id, f);
	bool last = --b->left == 0;
	if (last) {
		if (b->prev != NULL)
			b->prev->next = b->next;
		else
			s->batches = b->next;
		if (b->next != NULL)
			b->next->prev = b->prev;
	}
	pthread_mutex_unlock(&s->lock);
	fut_release(f);
	if (last) {
		fut__free(b);
		fut__mpi_live_count(-1);
	}
}

/* The gathered run of tasks fails with code (the pool refused it); a
 * record without memory becomes a lost id (server_results.c). */
static void fail_run(struct server *s, int code)
{
	static const char why[] = "the rank's process pool refused the task";
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->run_n; i++)
		fut__mpi_server_result_added_locked(
			s, s->run_ids[i],
			fut__mpi_frame_add(&s->results, s->run_ids[i], 0,
					   FUT__WIRE_R_ERROR, code, why,
					   sizeof(why) - 1));
	pthread_mutex_unlock(&s->lock);
}

/* Passes the gathered run to the pool: one fut_submit_many. */
void fut__mpi_pool_flush(struct server *s)
{
	size_t n = s->run_n;
	if (n == 0)
		return;
	pthread_mutex_lock(&s->lock);
	fut_fn fn = s->names[s->run_name - 1].fn;
	pthread_mutex_unlock(&s->lock);
	struct pbatch *b = fut__malloc(sizeof(*b) + n * sizeof(struct ptask));
	if (b == NULL) {
		fail_run(s, FUT_ENOMEM);
		s->run_n = 0;
		return;
	}
	int rc = fut_submit_many(s->s.pool, fn, s->run_inputs, s->run_len, n,
				 s->run_futs);
	if (rc != FUT_OK) {
		fut__free(b);
		fail_run(s, rc);
		s->run_n = 0;
		return;
	}
	fut__mpi_live_count(1);
	b->s = s;
	b->n = b->left = n;
	b->prev = NULL;
	for (size_t i = 0; i < n; i++)
		b->t[i] = (struct ptask){ b, s->run_ids[i], s->run_futs[i],
					  false, false };
	pthread_mutex_lock(&s->lock);
	b->next = s->batches;
	if (b->next != NULL)
		b->next->prev = b;
	s->batches = b;
	s->busy += n;
	pthread_mutex_unlock(&s->lock);
	s->run_n = 0;
	for (size_t i = 0; i < n; i++) {
		fut_future *f = b->t[i].f;
		if (fut_add_done_callback(f, pool_done, &b->t[i]) != FUT_OK) {
			/* No memory for the callback: the loop polls it
			 * (fut__mpi_pool_poll), a nap at most apart.  It
			 * waited here, and while it did nothing was read: an
			 * INTERRUPT, the one end of a task that waits for
			 * one, neither (found by review, 2026-12-07). */
			b->t[i].watched = true;
			s->nwatched++;
		}
	}
}

bool fut__mpi_pool_poll(struct server *s)
{
	if (s->nwatched == 0)
		return false;
	/* Collected under the lock, completed after it (pool_done takes
	 * it).  A batch outlives its watched tasks: it goes with its last
	 * task done, and only this thread completes these. */
	struct ptask *due[64];
	size_t n = 0;
	pthread_mutex_lock(&s->lock);
	for (struct pbatch *b = s->batches; b != NULL && n < 64; b = b->next)
		for (size_t i = 0; i < b->n && n < 64; i++)
			if (b->t[i].watched && !b->t[i].done &&
			    fut_done(b->t[i].f))
				due[n++] = &b->t[i];
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		s->nwatched--;
		pool_done(due[i]->f, due[i]);
	}
	return n != 0;
}

/* Gathers a task for the pool; a run ends at another function or input
 * length, or at the end of the message. */
void fut__mpi_pool_gather(struct server *s, const struct fut__wire_rec *r)
{
	if (s->run_n != 0 &&
	    (s->run_name != (uint32_t)r->fn || s->run_len != r->len ||
	     s->run_n == FUT__WIRE_MAX_RECORDS))
		fut__mpi_pool_flush(s);
	if (s->run_n == s->run_cap) {
		size_t cap = s->run_cap ? 2 * s->run_cap : 64;
		uint64_t *ids = fut__realloc(s->run_ids, cap * sizeof(*ids));
		if (ids != NULL)
			s->run_ids = ids;
		fut_future **fs = fut__realloc(s->run_futs, cap * sizeof(*fs));
		if (fs != NULL)
			s->run_futs = fs;
		if (ids == NULL || fs == NULL) {
			fut__mpi_server_give_up(s, FUT_ENOMEM);
			return;
		}
		s->run_cap = cap;
	}
	/* One block of inputs, reused from run to run. */
	size_t at = s->run_n * r->len;
	if (r->len > SIZE_MAX / 2 - at) {
		fut__mpi_server_give_up(s, FUT_ENOMEM);
		return;
	}
	if (at + r->len > s->run_bytes) {
		size_t cap = s->run_bytes ? s->run_bytes : 4096;
		while (cap < at + r->len)
			cap *= 2;
		unsigned char *in = fut__realloc(s->run_inputs, cap);
		if (in == NULL) {
			fut__mpi_server_give_up(s, FUT_ENOMEM);
			return;
		}
		s->run_inputs = in;
		s->run_bytes = cap;
	}
	if (r->len != 0)
		memcpy(s->run_inputs + at, r->data, r->len);
	s->run_name = (uint32_t)r->fn;
	s->run_len = r->len;
	s->run_ids[s->run_n++] = r->id;
}

/* An INTERRUPT of a task in the pool: fut_interrupt kills its worker
 * (FUT_ECANCELLED), or cancels it if the pool has not started it. */
void fut__mpi_pool_interrupt(struct server *s, uint64_t id)
{
	fut__mpi_pool_flush(s);
	fut_future *f = NULL;
	pthread_mutex_lock(&s->lock);
	for (struct pbatch *b = s->batches; b != NULL && f == NULL; b = b->next)
		for (size_t i = 0; i < b->n; i++)
			if (b->t[i].id == id && !b->t[i].done) {
				f = fut_retain(b->t[i].f);
				break;
			}
	pthread_mutex_unlock(&s->lock);
	if (f != NULL) {
		(void)fut_interrupt(f);
		fut_release(f);
	}
}
