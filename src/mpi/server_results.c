/*
 * server_results.c: a serving rank's results, until the loop (server.c)
 * sends them.
 *
 * Owns: s->results, the frame the results gather in, and when they go
 * (the batching rule below); s->lost, the ids whose result found no
 * memory even for the short record that says so.  Every task must end on
 * the client, so such an id waits there, and the loop turns it into that
 * record (FUT_ENOMEM, "out of memory for the result") as soon as a frame
 * has room, retrying at each turn.  Recording an id allocates nothing:
 * the room was made when its task came (fut__mpi_server_reserve_locked,
 * at most one id per task the rank holds).
 * Threads: the loop, the task threads, the pool's manager (the done
 * callbacks of server_pool.c).
 * Locks: every function here runs with s->lock held.
 */
#include <stdio.h>
#include <string.h>

#include "mpi_server.h"

/*
 * Caller holds s->lock: whether the results gathered go now.  They wait
 * while tasks this rank received are still queued (here, or in the pool:
 * more of them than it runs at once): one message then answers many
 * tasks, and the client refills the rank with one message.  A result
 * does not wait for a task that runs: once nothing is queued, everything
 * goes (but for the last task taken here while results wait for the
 * window: they go when it ends or when the standby takes the loop,
 * docs/mpi.md).  With run_here, while its tasks are quick (the loop's
 * last clock read came within PROBE_NS of its last probe) they wait for
 * the whole window, `prefetch`; once a task has run long, they go as they
 * come (a message is little beside such a task).  W-MPI2, alternated on
 * the slow VM: the whole window 2.57 M/s against half of it 2.28
 * (docs/perf-log.md).  Otherwise they wait until half of `prefetch`
 * gathered.
 */
static bool fut__mpi_server_results_due_locked(const struct server *s)
{
	if (s->results.count == 0)
		return false;
	bool queued = s->s.pool != NULL ? s->busy > s->s.threads :
					  s->qhead != NULL;
	size_t due = !s->run_here  ? s->s.prefetch / 2 :
		     s->probe_wait ? s->s.prefetch :
				     1;
	return s->stop || !queued || s->results.count >= due;
}

/* Caller holds s->lock: wakes the loop if results are due. */
void fut__mpi_server_wake_locked(struct server *s)
{
	if (!fut__mpi_server_results_due_locked(s))
		return;
	s->loop_wake = true;
	if (s->loop_sleeping)
		pthread_cond_signal(&s->loop_cv);
}

/* Caller holds s->lock: the record that tells the client id's result
 * found no memory. */
static int add_nomem_locked(struct server *s, uint64_t id)
{
	static const char nomem[] = "out of memory for the result";
	return fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_ERROR,
				  FUT_ENOMEM, nomem, sizeof(nomem) - 1);
}

/* Caller holds s->lock: a result record for id was added (rc FUT_OK) or
 * not (then a shorter one says so, or, with no memory for that either,
 * id joins s->lost, whose room fut__mpi_server_reserve_locked made when
 * the task came). */
void fut__mpi_server_result_added_locked(struct server *s, uint64_t id, int rc)
{
	if (rc != FUT_OK && add_nomem_locked(s, id) != FUT_OK) {
		/* No room: the reserve failed and serving gave up, so the
		 * client fails every task of this rank (EBROKEN). */
		if (s->nlost < s->caplost)
			s->lost[s->nlost++] = id;
	}
	fut__mpi_server_wake_locked(s);
}

/* Caller holds s->lock: records t's outcome for the client. */
void fut__mpi_server_add_result_locked(struct server *s, uint64_t id,
				       const fut_task *t, const char *not_found)
{
	int rc;
	if (not_found != NULL) {
		char msg[256];
		int n = snprintf(msg, sizeof(msg),
				 "task %s not found on rank %d", not_found,
				 s->s.rank);
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_ERROR,
					FUT_ENOTSUP, msg, (size_t)n);
	} else if (t->outcome == FUT__OUT_BYTES ||
		   t->outcome == FUT__OUT_SENT) {
		/* SENT: emitted to the runner's copy (server_tasks.c); NULL
		 * with a length when that copy found no memory. */
		rc = t->value == NULL && t->len != 0 ?
			     FUT_ENOMEM :
			     fut__mpi_frame_add(&s->results, id, 0,
						FUT__WIRE_R_BYTES, 0, t->value,
						t->len);
	} else if (t->outcome == FUT__OUT_FAIL) {
		/* No message: the code's text, as a thread pool gives. */
		const char *msg = t->message != NULL ? t->message :
						       fut_strerror(FUT_ETASK);
		size_t n = strlen(msg);
		if (n > FUT__WIRE_MAX_MESSAGE)
			n = FUT__WIRE_MAX_MESSAGE;
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_FAIL,
					t->task_code, msg, n);
	} else if (t->outcome == FUT__OUT_VALUE) {
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_VALUE,
					0, NULL, 0);
	} else {
		rc = fut__mpi_frame_add(&s->results, id, 0, FUT__WIRE_R_NONE, 0,
					NULL, 0);
	}
	fut__mpi_server_result_added_locked(s, id, rc);
}

/* Caller holds s->lock (and the loop): the ids of s->lost go into
 * ERROR records as far as memory allows, then the results that are due
 * move to *fr, and the next ones get the link's spare buffer.  After a
 * BREAK (discard), *fr (results whose send found no memory), the results
 * gathered and the lost ids are dropped instead. */
void fut__mpi_server_take_results_locked(struct server *s,
					 struct fut__mpi_frame *fr)
{
	if (s->discard) {
		/* The client broke (BREAK): nothing more of ours is read. */
		fut__free(fr->buf);
		memset(fr, 0, sizeof(*fr));
		s->results.len = 0;
		s->results.count = 0;
		s->nlost = 0;
		return;
	}
	while (s->nlost != 0 &&
	       add_nomem_locked(s, s->lost[s->nlost - 1]) == FUT_OK)
		s->nlost--;
	if (!fut__mpi_server_results_due_locked(s))
		return;
	*fr = s->results;
	memset(&s->results, 0, sizeof(s->results));
	fut__mpi_link_frame(&s->link, &s->results);
}

/* Caller holds s->lock: room in s->lost for every task this rank holds,
 * and for `more` about to come: false when there is no memory for it. */
bool fut__mpi_server_reserve_locked(struct server *s, size_t more)
{
	size_t need = s->nlost + s->ntasks + s->busy + s->run_n + more;
	if (need <= s->caplost)
		return true;
	size_t cap = s->caplost ? s->caplost : 8;
	while (cap < need)
		cap *= 2;
	uint64_t *grown = fut__realloc(s->lost, cap * sizeof(*grown));
	if (grown == NULL)
		return false;
	s->lost = grown;
	s->caplost = cap;
	return true;
}
