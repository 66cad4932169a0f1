/*
 * client_stop.c: how the client's manager (client_manager.c) stops the
 * server ranks.
 *
 * Owns: the STOP of each rank once the executor is shut down and empty,
 * and the wait for every rank's BYE after it.  Shut down with nothing
 * queued, the STOPs go and the BYEs come before the last job in flight
 * completes (fut__mpi_stop_first()): the caller may call MPI_Finalize
 * once it has that result, and no other thread may be inside MPI then.
 * Also the pause between two turns of either polling loop, the main one
 * (client_manager.c) and this one; the hold of a stop asked for from
 * the last done callback (mpi_client.h, holding); the executor's break
 * (fut__mpi_break_all()) and its INTERRUPTs.
 * Threads: the manager only.
 * Locks: c->lock for the queue and the shutdown flags.
 */
#include <stdio.h>

#include "mpi_client.h"

/* Sends one STOP (a BREAK to a rank marked brk) to every server rank not
 * yet stopped (nor gone: one that gave up said BYE unasked, or MPI failed
 * for it).  One that found no memory is retried on the next pass; one
 * whose send MPI refused is gone: retried, a held manager tried it every
 * 10 ms for ever (test_mpi_stop holdsendfail; found by review,
 * 2026-12-07). */
void fut__mpi_stop_ranks(struct mclient *c)
{
	for (int r = 0; r < c->s.size; r++) {
		struct mrank *mr = &c->ranks[r];
		if (r == c->s.root || mr->stopped || mr->bye || mr->gone)
			continue;
		/* A BREAK is a message of its own tag, after the stream's:
		 * a rank that gave up drops the stream until it, and then
		 * says an empty BYE, which needs no answer (server_end.c).
		 * Held, the manager stops every rank so (nothing of ours is
		 * there to drop): a STOP, a frame, could make a rank give
		 * up (malformed, no memory to receive it) with no task
		 * there, so no BREAK, and say a goodbye that waits for an
		 * answer we give only once let go; a collective call after
		 * the free hung (test_mpi_stop heldstopjunk; found by
		 * review, 2026-12-07). */
		if (atomic_load(&c->holding))
			mr->brk = true;
		struct fut__mpi_frame fr = { 0 };
		int rc = mr->brk ?
				 fut__mpi_send_ack(c->s.comm, r) :
				 fut__mpi_frame_add(&fr, 0, 0, FUT__WIRE_T_STOP,
						    0, NULL, 0);
		if (rc == FUT_OK && !mr->brk)
			rc = fut__mpi_link_send(&c->link, r, FUT__WIRE_TASKS,
						&fr);
		fut__free(fr.buf);
		if (rc == FUT_OK)
			mr->stopped = true;
		else if (rc != FUT_ENOMEM)
			mr->gone = true;
	}
}

void fut__mpi_rank_lost(void *arg, int to)
{
	struct mclient *c = arg;
	if (to < 0 || to >= c->s.size)
		return;
	c->ranks[to].gone = true;
	/* Not broken here, inside the link's progress (the break flushes
	 * the link): by the main loop, at its next turn, or, with no task of
	 * ours there, once a task waits to go (fut__mpi_break_lost()). */
	if (c->lost_rank < 0 || c->ranks[to].inflight != 0)
		c->lost_rank = to;
}

bool fut__mpi_progress(struct mclient *c)
{
	bool did = fut__mpi_link_progress(&c->link);
	int r = c->lost_rank;
	if (r >= 0 && (c->broke || c->ranks[r].inflight != 0)) {
		c->lost_rank = -1;
		if (!c->broke)
			fut__mpi_break_all(c, "rank %d: an MPI send failed%s",
					   r, "");
	}
	return did;
}

/*
 * A rank lost with no task of ours there (a send tested late, after its
 * results came; an INTERRUPT's): the executor breaks once a task waits to
 * go, before any goes.  Only marked gone, it still got tasks (dispatch()
 * did not look), was never stopped, and root's free returned while that
 * server stayed in fut_mpi_executor_new (test_mpi_stop lostidle; found
 * by review, 2026-12-07).  Not at once: after the last result the
 * manager makes no MPI call until a submit or a shutdown (go_quiet()),
 * and a break's are many; stopping, nothing is left to fail.  True if
 * the executor is broken.
 */
bool fut__mpi_break_lost(struct mclient *c)
{
	int r = c->lost_rank;
	c->lost_rank = -1;
	if (r >= 0 && !c->broke)
		fut__mpi_break_all(c, "rank %d: an MPI send failed%s", r, "");
	return c->broke;
}

/* Unchecked, a failed answer left that rank's BYE counted as answered;
 * nothing more can reach it (found by review, 2026-12-07).  A rank sent
 * a BREAK gets no answer, whichever came first: its drain (link.c) ends
 * at the BREAK, root's last message to it.  Answered, the answer stayed
 * unread, and on MPICH (context ids reused at once) the next executor's
 * first receive there took it: that rank returned FUT_EBROKEN, its tasks
 * failed (test_mpi_break orphanbye; found by review, 2026-12-07). */
void fut__mpi_answer_bye(struct mclient *c, int src)
{
	struct mrank *mr = &c->ranks[src];
	if (mr->brk && mr->stopped)
		return;
	if (fut__mpi_send_bye(c->s.comm, src, false) != FUT_OK)
		mr->gone = true;
}

/* MPI failed to receive: no BYE (nor ACK) can be waited for (the STOPs
 * still go).  Waited for, the manager tried the failing receive again in
 * a hot loop (test_mpi_stop recvfail; found by review, 2026-12-07). */
void fut__mpi_go_deaf(struct mclient *c)
{
	c->deaf = true;
}

static void (*_Atomic pause_hook)(void);

/* Test hook: fn runs in the manager's loop, each pass, just before it
 * reads `shutting` (test_mpi_stop cancelnowait); NULL: none. */
void fut__mpi_test_pause_hook(void (*fn)(void))
{
	atomic_store(&pause_hook, fn);
}

bool fut__mpi_test_shutting(fut_executor *ex)
{
	return atomic_load(&fut__mpi_client_of(ex)->shutting);
}

void fut__mpi_test_pause(void)
{
	void (*fn)(void) =
		atomic_load_explicit(&pause_hook, memory_order_relaxed);
	if (fn != NULL)
		fn();
}

/* True once shut down with nothing left: then the ranks get their STOP.
 * A queue of cancelled jobs alone is nothing left: they are dropped here.
 * Counted as work, they made a shutdown(NOWAIT) return before the STOPs
 * and the BYEs, which the next pass made while its caller could be in
 * MPI_Finalize (test_mpi_stop cancelnowait; found by review,
 * 2026-12-07). */
bool fut__mpi_drained(struct mclient *c)
{
	if (!atomic_load(&c->shutting))
		return false;
	struct mjob *dropped = NULL;
	pthread_mutex_lock(&c->lock);
	bool done = c->shutdown;
	/* Queued, a job is PENDING or CANCELLED, and stays CANCELLED. */
	for (struct mjob *j = c->qhead; done && j != NULL; j = j->next)
		done = fut_cancelled(&j->fut);
	if (done && c->qhead != NULL) {
		dropped = c->qhead;
		c->qhead = c->qtail = NULL;
		atomic_store(&c->queued, false);
	}
	pthread_mutex_unlock(&c->lock);
	while (dropped != NULL) {
		struct mjob *j = dropped;
		dropped = j->next;
		fut_release(&j->fut);
	}
	for (int r = 0; done && r < c->s.size; r++)
		done = c->ranks[r].inflight == 0;
	return done;
}

/* True once every server's BYE came (they come after their STOP), but
 * for the ones gone. */
bool fut__mpi_all_said_bye(const struct mclient *c)
{
	if (c->deaf)
		return true;
	for (int r = 0; r < c->s.size; r++)
		if (r != c->s.root && !c->ranks[r].bye && !c->ranks[r].gone)
			return false;
	return true;
}

/* Shut down with work left: a shutdown(NOWAIT) waiting in client.c may
 * return (its caller's futures are not all done).  Shut down idle, the
 * manager stops the ranks and ends instead, and that caller waits for
 * it: MPI_Finalize may follow that shutdown at once. */
void fut__mpi_see_shutdown(struct mclient *c)
{
	c->seen = true;
	pthread_mutex_lock(&c->lock);
	c->shutdown_seen = true;
	pthread_cond_broadcast(&c->done_cv);
	pthread_mutex_unlock(&c->lock);
}

/*
 * Shut down, and the last job is about to complete: the ranks get their
 * STOP, and their BYEs come, before it does (nothing else can come: every
 * result is in), for the same reason.  The BYEs are read into a byte of
 * our own: the held records point into the link's stage.  False, the
 * main loop then finishing the stop, when something else came or MPI
 * failed.
 */
bool fut__mpi_stop_first(struct mclient *c)
{
	c->stopping = true;
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, c->s.spin, c->s.backoff);
	for (;;) {
		fut__mpi_stop_ranks(c);
		bool did = fut__mpi_link_progress(&c->link);
		int flag = 0, n = -1;
		MPI_Status st;
		if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c->s.comm, &flag,
			       &st) != MPI_SUCCESS)
			return false;
		if (flag) {
			int src = st.MPI_SOURCE;
			unsigned char byte;
			if (st.MPI_TAG != FUT__MPI_TAG_BYE || src < 0 ||
			    src >= c->s.size ||
			    MPI_Get_count(&st, MPI_BYTE, &n) != MPI_SUCCESS ||
			    n < 0 || n > 1 ||
			    MPI_Recv(&byte, 1, MPI_BYTE, src, FUT__MPI_TAG_BYE,
				     c->s.comm,
				     MPI_STATUS_IGNORE) != MPI_SUCCESS)
				return false;
			c->ranks[src].bye = true;
			if (n != 0) /* it gave up: it waits for our answer */
				fut__mpi_answer_bye(c, src);
			did = true;
		}
		if (fut__mpi_all_said_bye(c) && !fut__mpi_link_busy(&c->link)) {
			fut__mpi_comm_release(&c->s);
			return true;
		}
		fut__mpi_manager_pause(c, &idle, did);
	}
}

void fut__mpi_manager_pause(struct mclient *c, struct fut__mpi_idle *idle,
			    bool did)
{
	if (did) {
		fut__mpi_idle_busy(idle);
		return;
	}
	/* A send in flight moves only in our MPI calls (a large one, a
	 * fragment pipeline at a time): no nap until it is out. */
	int64_t ns = fut__mpi_link_busy(&c->link) ?
			     0 :
			     fut__mpi_idle_next(idle, true);
	if (ns > 0)
		fut__mpi_nap(&c->lock, &c->wake_cv, &c->wake, &c->sleeping, ns);
}

/* Asks rank r to interrupt every job of its list, whose futures the
 * break is about to end: no one wants their results, and a task that
 * waits for fut_task_cancelled() would keep the rank, and with it the
 * shutdown and the free, for ever (found by review, 2026-12-07).  Best
 * effort: a send that fails leaves what runs to end by itself. */
void fut__mpi_interrupt_rank(struct mclient *c, int r)
{
	struct fut__mpi_frame fr = { 0 };
	for (struct mjob *j = c->ranks[r].head; j != NULL; j = j->next)
		if (!j->interrupt_sent &&
		    fut__mpi_frame_add(&fr, j->id, 0, FUT__WIRE_T_INTERRUPT, 0,
				       NULL, 0) != FUT_OK)
			break;
	if (fr.count != 0)
		(void)fut__mpi_link_send(&c->link, r, FUT__WIRE_TASKS, &fr);
	fut__free(fr.buf);
}

/* Shut down from a done callback with nothing left (mpi_client.h,
 * holding): the STOPs (BREAKs) go at once, so that the servers' calls return (a
 * collective call of the program's may follow: holding them too hung
 * it); then no MPI call until a thread outside the callback releases the
 * executor (the BYEs wait).  Those sends are the only MPI calls that may
 * meet an MPI_Finalize the thread with the last outcome begins at once
 * (docs/mpi.md says how to have none). */
bool fut__mpi_hold(struct mclient *c)
{
	if (!atomic_load_explicit(&c->holding, memory_order_acquire))
		return false;
	if (!c->hold_sent) {
		c->stopping = true;
		fut__mpi_stop_ranks(c);
		(void)fut__mpi_link_flush(&c->link, 1000000000);
		/* Sent only once every rank has its STOP: one that found no
		 * memory goes on the next pass, else that rank served on and
		 * a collective call after the free hung (test_mpi_nomem
		 * holdnomem; found by review, 2026-12-07). */
		c->hold_sent = true;
		for (int r = 0; r < c->s.size; r++)
			if (r != c->s.root && !c->ranks[r].stopped &&
			    !c->ranks[r].bye && !c->ranks[r].gone)
				c->hold_sent = false;
	}
	fut__mpi_nap(&c->lock, &c->wake_cv, &c->wake, &c->sleeping,
		     c->hold_sent ? 1000000000 : 10000000);
	return true;
}

/* Fails every job of list with FUT_EBROKEN. */
static void fail_broken(struct mclient *c, struct mjob *list)
{
	while (list != NULL) {
		struct mjob *j = list;
		list = j->next;
		fut__mpi_job_fail(j, FUT_EBROKEN, 0, c->broken_msg);
	}
}

/* True while the break waits for a rank's ACK (struct mrank, awaited),
 * or for the BYE of a rank sent a STOP (no task of ours there: it comes
 * at once). */
static bool awaiting(const struct mclient *c)
{
	if (c->deaf)
		return false;
	for (int r = 0; r < c->s.size; r++) {
		const struct mrank *mr = &c->ranks[r];
		if (r == c->s.root || mr->bye || mr->gone)
			continue;
		if (mr->awaited ? !mr->acked : !mr->brk)
			return true;
	}
	return false;
}

/*
 * The break's wait, before any future ends: each rank sent a BREAK
 * (struct mrank, awaited) answers with an ACK once every
 * send of its own is out (or with its BYE), and drops its results from
 * then on; each rank sent a STOP says its BYE (waited for after the
 * futures ended, it raced MPI_Finalize: test_mpi_break brokennowaitfin;
 * found by review, 2026-12-07).  The BYEs of the ranks sent a BREAK
 * wait in the hold (fut__mpi_hold_broken()).  Until then whatever comes is received, into a buffer of our
 * own (the held results point into the link's stage), and dropped; a
 * one-byte BYE (a rank that gave up) is answered.  This takes message
 * transfers, not task run time: a result too large to go eagerly
 * completes here, and after the ACK only the rank's BYE, empty, comes.
 * Once the futures end, their callbacks may free the executor and the
 * thread with the last outcome call MPI_Finalize: receives after that
 * raced it (741 calls counted, test_mpi_stop brokenbusyfin), and
 * without them such a result never completed (brokenbarrier; both found
 * by review, 2026-12-07).  A receive that fails ends the wait
 * (fut__mpi_go_deaf()).
 */
static void take_acks(struct mclient *c)
{
	unsigned char *buf = NULL;
	size_t cap = 0;
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, c->s.spin, c->s.backoff);
	while (awaiting(c)) {
		fut__mpi_stop_ranks(c); /* one that found no memory */
		bool did = fut__mpi_link_progress(&c->link);
		int flag = 0, n = 0;
		MPI_Status st;
		if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c->s.comm, &flag,
			       &st) != MPI_SUCCESS ||
		    (flag && (MPI_Get_count(&st, MPI_BYTE, &n) != MPI_SUCCESS ||
			      n < 0))) {
			fut__mpi_go_deaf(c);
			break;
		}
		if (flag && (size_t)n > cap) {
			unsigned char *grown = fut__malloc((size_t)n);
			if (grown != NULL) {
				fut__free(buf);
				buf = grown;
				cap = (size_t)n;
			}
		}
		/* No memory for it: it waits in MPI, tried again after a
		 * nap. */
		if (flag && (size_t)n <= cap) {
			int src = st.MPI_SOURCE;
			if (MPI_Recv(buf, n, MPI_BYTE, src, st.MPI_TAG,
				     c->s.comm,
				     MPI_STATUS_IGNORE) != MPI_SUCCESS) {
				fut__mpi_go_deaf(c);
				break;
			}
			did = true;
			if (src >= 0 && src < c->s.size &&
			    st.MPI_TAG == FUT__MPI_TAG_ACK)
				c->ranks[src].acked = true;
			if (src >= 0 && src < c->s.size &&
			    st.MPI_TAG == FUT__MPI_TAG_BYE) {
				c->ranks[src].bye = true;
				if (n != 0) /* it gave up: it waits for this */
					fut__mpi_answer_bye(c, src);
			}
		}
		fut__mpi_manager_pause(c, &idle, did);
	}
	fut__free(buf);
}

/* The executor is broken (why: formatted): every queued and running job
 * ends FUT_EBROKEN, what runs is interrupted, and every rank gets its
 * STOP, a BREAK where tasks of ours ran, whose ACK comes first
 * (take_acks()). */
void fut__mpi_break_all(struct mclient *c, const char *fmt, int rank,
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
	struct mjob *all = c->qhead, **tail = &all;
	c->qhead = c->qtail = NULL;
	atomic_store(&c->queued, false);
	pthread_mutex_unlock(&c->lock);
	/* The INTERRUPTs and the STOPs go before any future ends: a done
	 * callback may free the executor, and the thread that has its
	 * outcome call MPI_Finalize (found by review, 2026-12-07). */
	for (int r = 0; r < c->s.size; r++) {
		struct mrank *mr = &c->ranks[r];
		if (r == c->s.root || mr->bye || mr->gone)
			continue;
		fut__mpi_interrupt_rank(c, r);
		/* Its results would still come (take_acks()).  The rank
		 * whose message broke the executor too: its ACK has a tag
		 * of its own, and its stream is not decoded any more, while
		 * a large result it began to send before it read the BREAK
		 * completes only once received (a collective call after a
		 * callback's free hung: test_mpi_stop blamedbig; found by
		 * review, 2026-12-07).  Only a rank MPI refused a send to
		 * (gone, above) is not waited for. */
		if (mr->inflight != 0 && !mr->stopped) {
			mr->brk = true;
			mr->awaited = true;
		}
	}
	if (first)
		fut__mpi_stop_ranks(c);
	(void)fut__mpi_link_flush(&c->link, 1000000000);
	while (*tail != NULL)
		tail = &(*tail)->next;
	for (int r = 0; r < c->s.size; r++) {
		struct mrank *mr = &c->ranks[r];
		*tail = mr->head;
		if (mr->head != NULL)
			tail = &mr->tail->next;
		mr->head = mr->tail = NULL;
		mr->inflight = 0;
	}
	c->inflight = 0;
	take_acks(c);
	fut__mpi_hold_broken(c);
	fail_broken(c, all);
}
