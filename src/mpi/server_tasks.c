/*
 * server_tasks.c: a serving rank's task threads.
 *
 * Owns: running a struct stask (mpi_server.h) that the loop (server.c)
 * queued: threads_per_rank worker threads take tasks from s->qhead, run
 * them with this thread's fut_mpi_task_rank() set, record the result and
 * free the task, so the loop keeps running beside them (and fut_interrupt
 * reaches a running task as fut_task_cancelled()).  With threads_per_rank
 * 1 the loop's thread runs them itself, a standby beside it (server.c,
 * serve()); a rank that could start no thread gave up serving.  Also
 * fut_mpi_task_rank() for the FUT_MPI_ISOLATE pool's worker processes.
 * Threads: the workers (or the loop); fut_mpi_task_rank in any task.
 * Locks: s->lock guards the queue, the running list and busy; never held
 * while a task runs.
 */
#include <string.h>
#include <unistd.h>

#include "mpi_server.h"

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

/* A byte result up to this long is copied to the task runner's stack
 * (the sink's emit), not to a malloc'd buffer freed again once it is in
 * the frame: no allocation for a small result, as on the process pool. */
#define RESULT_COPY_MAX 256u

struct result_copy {
	unsigned char small[RESULT_COPY_MAX];
};

/* The sink's emit: the result stays in t->value and t->len (outcome
 * SENT) until run_one puts it in the frame: in rc->small, or for one of
 * FUT__TASK_EMIT_MIN bytes or more a malloc'd copy.  False with no
 * memory for that copy: fut_task_return_bytes then returns FUT_ENOMEM
 * and the task is not settled (it returned FUT_OK, settled, and a later
 * fut_task_fail got FUT_ESTATE: found by review, 2026-12-07). */
static bool emit_result(fut_task *t, const void *data, size_t len, void *ctx)
{
	struct result_copy *rc = ctx;
	void *copy = len <= sizeof(rc->small) ? rc->small : fut__malloc(len);
	if (copy == NULL)
		return false;
	if (len != 0)
		memcpy(copy, data, len);
	t->value = copy;
	t->len = len;
	return true;
}

/* Runs one task taken from the queue (no lock held); returns with
 * s->lock held. */
void fut__mpi_server_run_one(struct server *s, struct stask *st)
{
	fut_task t;
	fut__task_init(&t, st->fn, NULL, st->input, st->len, &st->flags);
	struct result_copy copy;
	const struct fut__task_sink sink = { .emit = emit_result,
					     .ctx = &copy,
					     .copy_max = RESULT_COPY_MAX };
	t.sink = &sink;
	if (st->fn != NULL) {
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
	fut__mpi_server_add_result_locked(s, st->id, &t, st->missing);
	if (t.outcome == FUT__OUT_SENT && t.value != copy.small)
		fut__free(t.value);
	fut__task_clear(&t);
	fut__slab_free(st, st->slab);
	s->ntasks--;
}

/* Caller holds s->lock: takes the next task, or NULL. */
struct stask *fut__mpi_server_take_locked(struct server *s)
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
		fut__mpi_server_wake_locked(s);
	return st;
}

void *fut__mpi_server_worker(void *arg)
{
	struct server *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct stask *st = fut__mpi_server_take_locked(s);
		if (st == NULL) {
			if (s->stop)
				break;
			pthread_cond_wait(&s->work_cv, &s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		fut__mpi_server_run_one(s, st); /* locks */
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}
