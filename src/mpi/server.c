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
 * Threads: the calling thread (the loop); the workers.
 * Locks: s->lock guards the fields marked "lock"; never held while a task
 * runs or across an MPI call.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

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
};

static _Thread_local fut_task *current_task;
static _Thread_local int current_rank = -1;

int fut_mpi_task_rank(fut_task *t)
{
	return t != NULL && t == current_task ? current_rank : -1;
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
	if (rc != FUT_OK) {
		static const char nomem[] = "out of memory for the result";
		(void)fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_ERROR,
					 FUT_ENOMEM, nomem, sizeof(nomem) - 1);
	}
	s->loop_wake = true;
	if (s->loop_sleeping)
		pthread_cond_signal(&s->loop_cv);
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
		int src;
		int rc = fut__mpi_link_recv(&s->link, s->s.root, &data, &len,
					    &src);
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
		struct fut__mpi_frame fr = s->results;
		memset(&s->results, 0, sizeof(s->results));
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
		pthread_mutex_unlock(&s->lock);
		if (done && !fut__mpi_link_busy(&s->link))
			return;
		if (did) {
			fut__mpi_idle_busy(&idle);
			continue;
		}
		int64_t ns = fut__mpi_idle_next(&idle);
		if (ns > 0) /* woken early by a finished task */
			fut__mpi_nap(&s->lock, &s->loop_cv, &s->loop_wake,
				     &s->loop_sleeping, ns);
	}
}

int fut__mpi_serve(struct fut__mpi_setup *setup)
{
	struct server *s = fut__calloc(1, sizeof(*s));
	if (s == NULL)
		return FUT_ENOMEM; /* the caller stops serving */
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
	s->threads = fut__calloc(s->s.threads, sizeof(*s->threads));
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
	int rc = s->error;
	(void)MPI_Comm_free(&s->s.comm);
	setup->comm = MPI_COMM_NULL;
	for (struct stask *st = s->qhead, *next; st != NULL; st = next) {
		next = st->next;
		fut__free(st);
		fut__mpi_live_count(-1);
	}
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
