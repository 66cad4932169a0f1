/*
 * server.c: a serving rank, inside its fut_mpi_executor_new() call.
 *
 * Owns: struct server: the decoder of the client's stream, the name table
 * (id -> function, resolved once per name through names.c), the local
 * queue, the tasks running, and the results not yet sent.  The calling
 * thread runs the MPI loop and owns every MPI call: it polls the client
 * with MPI_Iprobe (link.c's clock: spin, then backoff on loop_cv, which a
 * finished task signals), queues tasks, raises a running task's interrupt
 * flag (the task reads it with fut_task_cancelled()), sends the results
 * as they come, batched, and returns once STOP came and everything
 * before it was answered.  threads_per_rank worker threads run the tasks,
 * so the loop keeps running beside them.
 * With FUT_MPI_ISOLATE there are no worker threads: the tasks of each
 * received message go to the rank's process pool (s->s.pool), the runs
 * of one function and one input length in one fut_submit_many, and each
 * pool future's done callback (in the pool's manager thread) records its
 * outcome, a crash's wait status included (an ERROR record whose payload
 * starts with the status, 4 bytes little-endian); an INTERRUPT becomes
 * fut_interrupt() of the pool future, which kills its worker.
 * Threads: the calling thread (the loop); the workers, or the pool's
 * manager (the done callbacks).
 * Locks: s->lock guards the fields marked "lock"; never held while a task
 * runs, across an MPI call, or across a call into the pool.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mpi_int.h"

struct stask {
	struct stask *next;
	uint64_t id;
	uint32_t name;
	_Atomic uint32_t flags; /* FUT__F_INTERRUPT */
	size_t len;
	unsigned char input[];
};

struct sname {
	fut_fn fn; /* NULL: no such function here */
	char *name;
};

struct pbatch;

/* ISOLATE: a task in the pool. */
struct ptask {
	struct pbatch *b;
	uint64_t id;
	fut_future *f; /* the pool's future; released by its callback */
	bool done;     /* s->lock */
};

/* ISOLATE: the tasks of one fut_submit_many, freed with the last one. */
struct pbatch {
	struct pbatch *next, *prev; /* s->lock: s->batches */
	struct server *s;
	size_t n, left; /* left: s->lock */
	struct ptask t[];
};

struct server {
	struct fut__mpi_setup s;
	struct fut__mpi_link link;
	struct fut__wire_dec dec;
	struct sname *names; /* loop; read by workers under lock */
	uint32_t nnames, capnames;
	pthread_t *threads;
	size_t nthreads;
	int error; /* loop: why serving ended early */

	pthread_mutex_t lock;
	pthread_cond_t work_cv, loop_cv;
	struct stask *qhead, *qtail;   /* lock */
	struct stask *running;	       /* lock */
	size_t busy;		       /* lock: tasks taken by workers */
	bool stop;		       /* lock: STOP came (or serving failed) */
	bool loop_sleeping, loop_wake; /* lock */
	struct fut__mpi_frame results; /* lock */

	/* ISOLATE: the batches in the pool (lock), and the run of tasks
	 * being gathered from a message (the loop's): one function, one
	 * input length. */
	struct pbatch *batches;
	uint32_t run_name;
	size_t run_len, run_n, run_cap;
	unsigned char *run_inputs;
	size_t run_bytes; /* allocated at run_inputs */
	uint64_t *run_ids;
	fut_future **run_futs;
};

static _Thread_local fut_task *current_task;
static _Thread_local int current_rank = -1;
/* ISOLATE: the rank whose pool forked this process, and that rank's pid
 * (a worker process inherits both; the rank itself runs no task there). */
static _Atomic int isolate_rank = -1;
static _Atomic int isolate_pid;

void fut__mpi_isolate_rank_set(int rank)
{
	atomic_store(&isolate_pid, (int)getpid());
	atomic_store(&isolate_rank, rank);
}

int fut_mpi_task_rank(fut_task *t)
{
	if (t == NULL)
		return -1;
	if (t == current_task)
		return current_rank;
	/* A worker process of an ISOLATE server runs only its tasks. */
	int rank = atomic_load(&isolate_rank);
	if (rank >= 0 && (int)getpid() != atomic_load(&isolate_pid))
		return rank;
	return -1;
}

/*
 * Caller holds s->lock: whether the results gathered go now.  They wait
 * while tasks this rank received are still queued (here, or in the pool:
 * more of them than it runs at once), until half of prefetch gathered:
 * one message then answers many tasks, and the client refills the rank
 * with one message (measured: W-MPI2, docs/mpi.md).  A result never waits
 * for a task that runs: once nothing is queued, everything goes.
 */
static bool results_due_locked(const struct server *s)
{
	if (s->results.count == 0)
		return false;
	bool queued = s->s.pool != NULL ? s->busy > s->s.threads :
					  s->qhead != NULL;
	return s->stop || !queued || s->results.count >= s->s.prefetch / 2;
}

/* Caller holds s->lock: wakes the loop if results are due. */
static void wake_loop_locked(struct server *s)
{
	if (!results_due_locked(s))
		return;
	s->loop_wake = true;
	if (s->loop_sleeping)
		pthread_cond_signal(&s->loop_cv);
}

/* Caller holds s->lock: a result record for id was added (rc FUT_OK) or
 * not (then a shorter one says so). */
static void result_added_locked(struct server *s, uint64_t id, int rc)
{
	if (rc != FUT_OK) {
		static const char nomem[] = "out of memory for the result";
		(void)fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_ERROR,
					 FUT_ENOMEM, nomem, sizeof(nomem) - 1);
	}
	wake_loop_locked(s);
}

/* Caller holds s->lock: records t's outcome for the client. */
static void add_result_locked(struct server *s, uint64_t id, const fut_task *t,
			      const char *not_found)
{
	int rc;
	if (not_found != NULL) {
		char msg[256];
		int n = snprintf(msg, sizeof(msg),
				 "task %s not found on rank %d", not_found,
				 s->s.rank);
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_ERROR,
					FUT_ENOTSUP, msg, (size_t)n);
	} else if (t->outcome == FUT__OUT_BYTES) {
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_BYTES,
					0, t->value, t->len);
	} else if (t->outcome == FUT__OUT_FAIL) {
		size_t n = t->message != NULL ? strlen(t->message) : 0;
		if (n > FUT__WIRE_MAX_MESSAGE)
			n = FUT__WIRE_MAX_MESSAGE;
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_FAIL,
					t->task_code, t->message, n);
	} else if (t->outcome == FUT__OUT_VALUE) {
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_VALUE,
					0, NULL, 0);
	} else {
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_NONE, 0,
					NULL, 0);
	}
	result_added_locked(s, id, rc);
}

/* Runs one task taken from the queue (no lock held). */
static void run_one(struct server *s, struct stask *st)
{
	pthread_mutex_lock(&s->lock);
	struct sname nm = s->names[st->name - 1];
	pthread_mutex_unlock(&s->lock);
	fut_task t;
	fut__task_init(&t, nm.fn, NULL, st->input, st->len, &st->flags);
	if (nm.fn != NULL) {
		current_task = &t;
		current_rank = s->s.rank;
		fut__task_run(&t);
		current_task = NULL;
	}
	pthread_mutex_lock(&s->lock);
	for (struct stask **pp = &s->running; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	}
	s->busy--;
	add_result_locked(s, st->id, &t, nm.fn == NULL ? nm.name : NULL);
	pthread_mutex_unlock(&s->lock);
	fut__task_clear(&t);
	fut__free(st);
	fut__mpi_live_count(-1);
}

/* Caller holds s->lock: takes the next task, or NULL. */
static struct stask *take_locked(struct server *s)
{
	struct stask *st = s->qhead;
	if (st == NULL)
		return NULL;
	s->qhead = st->next;
	if (s->qhead == NULL)
		s->qtail = NULL;
	st->next = s->running;
	s->running = st;
	s->busy++;
	if (s->qhead == NULL) /* the results held for the queue go now */
		wake_loop_locked(s);
	return st;
}

static void *worker_main(void *arg)
{
	struct server *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct stask *st = take_locked(s);
		if (st == NULL) {
			if (s->stop)
				break;
			pthread_cond_wait(&s->work_cv, &s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		run_one(s, st);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Serving cannot go on (a malformed message from the client, no memory):
 * finish what runs, then return code. */
static void give_up(struct server *s, int code)
{
	if (s->error == FUT_OK)
		s->error = code;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	/* ISOLATE: what has not started is cancelled, what runs killed; the
	 * done callbacks still record every outcome. */
	if (s->s.pool != NULL)
		(void)fut_executor_shutdown(
			s->s.pool, FUT_SHUTDOWN_NOWAIT |
					   FUT_SHUTDOWN_CANCEL_PENDING |
					   FUT_SHUTDOWN_INTERRUPT);
}

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
	result_added_locked(s, id, added);
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

/* The gathered run of tasks fails with code (the pool refused it). */
static void fail_run(struct server *s, int code)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->run_n; i++) {
		static const char why[] = "the rank's process pool refused "
					  "the task";
		if (fut__mpi_frame_add(&s->results, s->run_ids[i], 0,
				       FUT__WIRE_R_ERROR, code, why,
				       sizeof(why) - 1) != FUT_OK) {
			pthread_mutex_unlock(&s->lock);
			give_up(s, FUT_ENOMEM);
			return;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/* Passes the gathered run to the pool: one fut_submit_many. */
static void flush_run(struct server *s)
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
					  false };
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
			/* No memory for the callback: wait here instead. */
			(void)fut_result(f, FUT_FOREVER, NULL);
			pool_done(f, &b->t[i]);
		}
	}
}

/* Gathers a task for the pool; a run ends at another function or input
 * length, or at the end of the message. */
static void gather(struct server *s, const struct fut__wire_rec *r)
{
	if (s->run_n != 0 &&
	    (s->run_name != (uint32_t)r->fn || s->run_len != r->len ||
	     s->run_n == FUT__WIRE_MAX_RECORDS))
		flush_run(s);
	if (s->run_n == s->run_cap) {
		size_t cap = s->run_cap ? 2 * s->run_cap : 64;
		uint64_t *ids = fut__realloc(s->run_ids, cap * sizeof(*ids));
		if (ids != NULL)
			s->run_ids = ids;
		fut_future **fs = fut__realloc(s->run_futs, cap * sizeof(*fs));
		if (fs != NULL)
			s->run_futs = fs;
		if (ids == NULL || fs == NULL) {
			give_up(s, FUT_ENOMEM);
			return;
		}
		s->run_cap = cap;
	}
	/* One block of inputs, reused from run to run. */
	size_t at = s->run_n * r->len;
	if (r->len > SIZE_MAX / 2 - at) {
		give_up(s, FUT_ENOMEM);
		return;
	}
	if (at + r->len > s->run_bytes) {
		size_t cap = s->run_bytes ? s->run_bytes : 4096;
		while (cap < at + r->len)
			cap *= 2;
		unsigned char *in = fut__realloc(s->run_inputs, cap);
		if (in == NULL) {
			give_up(s, FUT_ENOMEM);
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
static void pool_interrupt(struct server *s, uint64_t id)
{
	flush_run(s);
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

static void on_name(struct server *s, const struct fut__wire_rec *r)
{
	if (r->id != (uint64_t)s->nnames + 1) {
		give_up(s, FUT_EBROKEN);
		return;
	}
	char *copy = fut__malloc(r->len + 1);
	if (copy == NULL) {
		give_up(s, FUT_ENOMEM);
		return;
	}
	memcpy(copy, r->data, r->len);
	copy[r->len] = '\0';
	fut_fn fn = fut__mpi_resolve(copy, r->len);
	pthread_mutex_lock(&s->lock);
	if (s->nnames == s->capnames) {
		uint32_t cap = s->capnames ? 2 * s->capnames : 8;
		struct sname *grown =
			fut__realloc(s->names, cap * sizeof(*grown));
		if (grown == NULL) {
			pthread_mutex_unlock(&s->lock);
			fut__free(copy);
			give_up(s, FUT_ENOMEM);
			return;
		}
		s->names = grown;
		s->capnames = cap;
	}
	s->names[s->nnames].fn = fn;
	s->names[s->nnames].name = copy;
	s->nnames++;
	pthread_mutex_unlock(&s->lock);
}

static void on_task(struct server *s, const struct fut__wire_rec *r)
{
	if (r->fn == 0 || r->fn > s->nnames) {
		give_up(s, FUT_EBROKEN);
		return;
	}
	if (s->s.pool != NULL) {
		pthread_mutex_lock(&s->lock);
		const struct sname *nm = &s->names[r->fn - 1];
		if (nm->fn == NULL)
			add_result_locked(s, r->id, NULL, nm->name);
		pthread_mutex_unlock(&s->lock);
		if (nm->fn != NULL)
			gather(s, r);
		return;
	}
	struct stask *st = fut__malloc(sizeof(*st) + r->len);
	if (st == NULL) {
		give_up(s, FUT_ENOMEM);
		return;
	}
	fut__mpi_live_count(1);
	st->next = NULL;
	st->id = r->id;
	st->name = (uint32_t)r->fn;
	atomic_init(&st->flags, 0);
	st->len = r->len;
	if (r->len != 0)
		memcpy(st->input, r->data, r->len);
	pthread_mutex_lock(&s->lock);
	if (s->qtail != NULL)
		s->qtail->next = st;
	else
		s->qhead = st;
	s->qtail = st;
	pthread_cond_signal(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
}

static void on_interrupt(struct server *s, uint64_t id)
{
	if (s->s.pool != NULL) {
		pool_interrupt(s, id);
		return;
	}
	pthread_mutex_lock(&s->lock);
	struct stask *lists[2] = { s->running, s->qhead };
	for (int k = 0; k < 2; k++)
		for (struct stask *st = lists[k]; st != NULL; st = st->next)
			if (st->id == id)
				atomic_fetch_or(&st->flags, FUT__F_INTERRUPT);
	pthread_mutex_unlock(&s->lock);
}

static void on_record(struct server *s, const struct fut__wire_rec *r)
{
	switch (r->kind) {
	case FUT__WIRE_T_NAME:
		on_name(s, r);
		break;
	case FUT__WIRE_T_TASK:
		on_task(s, r);
		break;
	case FUT__WIRE_T_INTERRUPT:
		on_interrupt(s, r->id);
		break;
	default: /* FUT__WIRE_T_STOP */
		flush_run(s);
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_broadcast(&s->work_cv);
		pthread_mutex_unlock(&s->lock);
		break;
	}
}

/* Reads and handles what the client sent; true if anything came. */
static bool receive_all(struct server *s)
{
	bool did = false;
	while (s->error == FUT_OK) {
		const void *data;
		size_t len, off = 0;
		int src, tag;
		int rc = fut__mpi_link_recv(&s->link, s->s.root, &data, &len,
					    &src, &tag);
		if (rc == FUT_OK && tag != FUT__MPI_TAG)
			rc = FUT_EBROKEN; /* the client sends no other */
		if (rc == FUT_ETIMEDOUT)
			break;
		if (rc != FUT_OK) {
			give_up(s, rc);
			break;
		}
		did = true;
		while (s->error == FUT_OK) {
			struct fut__wire_rec r;
			size_t used = 0;
			rc = fut__wire_dec_feed(
				&s->dec, (const unsigned char *)data + off,
				len - off, &used, &r);
			off += used;
			if (rc == FUT__WIRE_MORE)
				break;
			if (rc != FUT__WIRE_RECORD) {
				give_up(s, rc == FUT__WIRE_ENOMEM ?
						   FUT_ENOMEM :
						   FUT_EBROKEN);
				break;
			}
			on_record(s, &r);
			if (r.owned)
				fut__free(r.data);
		}
		/* ISOLATE: what the message carried goes to the pool. */
		flush_run(s);
	}
	return did;
}

static void loop(struct server *s)
{
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, s->s.spin, s->s.backoff);
	for (;;) {
		bool did = receive_all(s);
		pthread_mutex_lock(&s->lock);
		struct fut__mpi_frame fr = { 0 };
		if (results_due_locked(s)) {
			fr = s->results;
			memset(&s->results, 0, sizeof(s->results));
		}
		struct stask *inline_task = s->nthreads == 0 ? take_locked(s) :
							       NULL;
		pthread_mutex_unlock(&s->lock);
		if (inline_task != NULL) {
			run_one(s, inline_task);
			did = true;
		}
		if (fr.count != 0) {
			if (fut__mpi_link_send(&s->link, s->s.root,
					       FUT__WIRE_RESULTS,
					       &fr) != FUT_OK)
				give_up(s, FUT_EBROKEN);
			did = true;
		}
		fut__free(fr.buf);
		did |= fut__mpi_link_progress(&s->link);
		pthread_mutex_lock(&s->lock);
		bool done = s->stop && s->qhead == NULL && s->busy == 0 &&
			    s->results.count == 0;
		/* While this rank's own tasks run, their end wakes the loop:
		 * it sleeps rather than spin, leaving the cpu to them. */
		bool spin = s->qhead == NULL && s->busy == 0;
		pthread_mutex_unlock(&s->lock);
		if (done && !fut__mpi_link_busy(&s->link))
			return;
		if (did) {
			fut__mpi_idle_busy(&idle);
			continue;
		}
		int64_t ns = fut__mpi_idle_next(&idle, spin);
		if (ns > 0) /* woken early by a finished task */
			fut__mpi_nap(&s->lock, &s->loop_cv, &s->loop_wake,
				     &s->loop_sleeping, ns);
	}
}

int fut__mpi_serve(struct fut__mpi_setup *setup)
{
	struct server *s = fut__calloc(1, sizeof(*s));
	if (s == NULL) {
		/* The client never hears from this rank: it waits (docs). */
		fut_executor_free(setup->pool);
		setup->pool = NULL;
		fut__mpi_comm_release(setup);
		return FUT_ENOMEM;
	}
	s->s = *setup;
	fut__mpi_link_init(&s->link, s->s.comm);
	fut__wire_dec_init(&s->dec, FUT__WIRE_TO_RANK);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->loop_cv, &ca);
	pthread_condattr_destroy(&ca);
	/* ISOLATE: the pool runs the tasks; no worker thread. */
	s->threads = s->s.pool != NULL ?
			     NULL :
			     fut__calloc(s->s.threads, sizeof(*s->threads));
	if (s->threads != NULL) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		while (s->nthreads < s->s.threads &&
		       pthread_create(&s->threads[s->nthreads], NULL,
				      worker_main, s) == 0)
			s->nthreads++;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	/* No worker thread at all: the loop runs the tasks itself. */
	loop(s);
	for (size_t i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	/* Everything this rank sent is out: the client may free the
	 * communicator once every server said so. */
	if (fut__mpi_send_bye(s->s.comm, s->s.root) != FUT_OK &&
	    s->error == FUT_OK)
		s->error = FUT_EBROKEN;
	/* Every pool task has reported (busy is 0): no callback is left. */
	fut_executor_free(s->s.pool);
	setup->pool = NULL;
	int rc = s->error;
	fut__mpi_comm_release(&s->s);
	setup->comm = MPI_COMM_NULL;
	setup->inter = MPI_COMM_NULL;
	for (struct stask *st = s->qhead, *next; st != NULL; st = next) {
		next = st->next;
		fut__free(st);
		fut__mpi_live_count(-1);
	}
	fut__free(s->run_inputs);
	fut__free(s->run_ids);
	fut__free(s->run_futs);
	for (uint32_t i = 0; i < s->nnames; i++)
		fut__free(s->names[i].name);
	fut__free(s->names);
	fut__free(s->results.buf);
	fut__free(s->threads);
	fut__wire_dec_fini(&s->dec);
	fut__mpi_link_fini(&s->link);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->loop_cv);
	pthread_mutex_destroy(&s->lock);
	fut__free(s);
	return rc;
}
