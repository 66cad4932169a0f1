/*
 * server_end.c: how a serving rank stops serving early: it gives up
 * (a malformed message from the client, no memory), or the client broke
 * (its BREAK).
 *
 * Owns: the end of serving (stop, discard, ack_due and ack_sent of
 * struct server), and the look for a BREAK of a rank that gave up.
 * Threads: the loop's (server.c), or fut__mpi_serve() before it runs.
 * Locks: s->lock for the task queue and the flags it guards; never
 * held across an MPI call.
 */
#include "mpi_server.h"

/* Frees the tasks of list (none started); returns how many. */
size_t fut__mpi_server_drop_tasks(struct stask *list)
{
	size_t n = 0;
	for (struct stask *st = list, *next; st != NULL; st = next, n++) {
		next = st->next;
		fut__slab_free(st, st->slab);
	}
	return n;
}

/*
 * Serving cannot go on (a malformed message from the client, no memory):
 * stop what runs, finish it, then return code.  The client breaks the
 * executor at this rank's goodbye, so what has not started is dropped:
 * the tasks of the message being read (not queued yet: a task thread
 * that saw the queue empty and `stop` would have ended, leaving them to
 * no one) and the queued ones.  What runs is interrupted, as
 * fut_interrupt() does, since no INTERRUPT is read from now on: a task
 * waiting for one would have kept the rank, and the client's free, for
 * ever (found by review, 2026-12-07).  discard: the client's BREAK
 * (fut__mpi_server_on_break()), the same end without a code, every
 * result still to come dropped.
 */
static void end_serving(struct server *s, bool discard)
{
	struct stask *inbox = s->inbox_head;
	s->inbox_head = s->inbox_tail = NULL;
	s->inbox_n = 0;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	s->discard |= discard;
	struct stask *queued = s->qhead;
	for (struct stask *st = queued; st != NULL; st = st->next)
		s->ntasks--;
	s->qhead = s->qtail = NULL;
	for (struct stask *st = s->running; st != NULL; st = st->next)
		atomic_fetch_or(&st->flags, FUT__F_INTERRUPT);
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	fut__mpi_server_drop_tasks(inbox);
	fut__mpi_server_drop_tasks(queued);
	/* ISOLATE: what has not started is cancelled, what runs killed; the
	 * done callbacks still record every outcome. */
	if (s->s.pool != NULL)
		(void)fut_executor_shutdown(
			s->s.pool, FUT_SHUTDOWN_NOWAIT |
					   FUT_SHUTDOWN_CANCEL_PENDING |
					   FUT_SHUTDOWN_INTERRUPT);
}

void fut__mpi_server_give_up(struct server *s, int code)
{
	if (s->error == FUT_OK)
		s->error = code;
	end_serving(s, false);
}

void fut__mpi_server_on_break(struct server *s)
{
	/* It fails our tasks as soon as our ACK says nothing more of ours
	 * needs its receive (server.c, loop()). */
	if (!s->ack_sent)
		s->ack_due = true;
	end_serving(s, true);
}

/*
 * A rank that gave up reads nothing of the client's stream any more, but
 * the BREAK is a message of its own tag: without it, a break waited for
 * such a rank's BYE, which came only when its tasks ended (4 s against
 * 0.5 s, test_mpi_stop gaveupwait; a task that never ended left the
 * futures without an outcome; found by review, 2026-12-07).  Until the
 * break, its results still go (test_mpi_nomem srvnomem).  True if one
 * came.
 */
bool fut__mpi_server_look_for_break(struct server *s)
{
	int flag = 0;
	MPI_Status st;
	if (s->discard ||
	    MPI_Iprobe(s->s.root, FUT__MPI_TAG_BREAK, s->s.comm, &flag, &st) !=
		    MPI_SUCCESS ||
	    !flag)
		return false;
	unsigned char byte;
	if (MPI_Recv(&byte, 1, MPI_BYTE, s->s.root, FUT__MPI_TAG_BREAK,
		     s->s.comm, MPI_STATUS_IGNORE) != MPI_SUCCESS)
		return false;
	fut__mpi_server_on_break(s);
	return true;
}
