/*
 * server_end.c: how a serving rank stops serving early: it gives up
 * (a malformed message from the client, no memory), or the client broke
 * (its BREAK).
 *
 * Owns: the end of serving (stop, discard, ack_due and ack_sent of
 * struct server), and the read of a rank that gave up until the BREAK.
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
 * no one; with ISOLATE, gathered for the pool) and the queued ones.
 * What runs is interrupted, as fut_interrupt() does, since no INTERRUPT
 * is read from now on: a task waiting for one would have kept the rank,
 * and the client's free, for ever (found by review, 2026-12-07).
 * discard: the client's BREAK (fut__mpi_server_on_break()), the same end
 * without a code, every result still to come dropped.
 */
static void end_serving(struct server *s, bool discard)
{
	struct stask *inbox = s->inbox_head;
	s->inbox_head = s->inbox_tail = NULL;
	s->inbox_n = 0;
	/* ISOLATE: the run being gathered (copies of its inputs and ids, no
	 * future yet) is dropped too: flushed after this into the pool shut
	 * down below, its tasks ended FUT_ESHUTDOWN, not FUT_EBROKEN "rank N
	 * stopped serving" (test_mpi_break isojunk; found by review,
	 * 2026-12-07). */
	s->run_n = 0;
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
 * A rank that gave up acts on nothing of the client's stream any more,
 * but it reads it, in order, and drops it until the BREAK, a message of
 * its own tag: without it, a break waited for such a rank's BYE, which
 * came only when its tasks ended (4 s against 0.5 s, test_mpi_stop
 * gaveupwait; a task that never ended left the futures without an
 * outcome; found by review, 2026-12-07).  Read in order (MPI_ANY_TAG),
 * the BREAK comes after everything the client sent before it, its last
 * message to this rank: so the ACK goes with every send of the client's
 * received (a large one completes while the client's manager still waits
 * for that ACK), and the BYE needs no answer (fut__mpi_serve()).  Read by
 * its tag alone, the stream was left to the drain after a one-byte BYE,
 * whose answer a manager held by a free from a done callback gives only
 * in MPI_Finalize: that rank waited there, and a collective call after
 * the free hung (test_mpi_stop gaveupfree; found by review, 2026-12-07).
 * A message it has no memory to stage waits in MPI, tried again on the
 * next pass (a BREAK behind it waits too, and with it the client's
 * break; for ever if memory never comes back: MPI receives a message
 * only whole, so a small fixed buffer cannot drop it; docs/mpi.md,
 * found by review, 2026-12-07).  Until the break, its results still go (test_mpi_nomem
 * srvnomem).  True if anything came.
 */
bool fut__mpi_server_look_for_break(struct server *s)
{
	bool did = false;
	while (!s->discard) {
		const void *data;
		size_t len;
		int src, tag;
		if (fut__mpi_link_recv(&s->link, s->s.root, &data, &len, &src,
				       &tag) != FUT_OK)
			break;
		did = true;
		if (tag == FUT__MPI_TAG_BREAK)
			fut__mpi_server_on_break(s);
	}
	return did;
}
