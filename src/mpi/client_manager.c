/*
 * client_manager.c: the client's manager thread, which owns every MPI
 * call on root.
 *
 * Owns: the ranks as the manager sees them (struct mrank: jobs in flight,
 * names sent, the decoder of their stream), dispatch and results (the
 * executor's break is client_stop.c's).  It hands each server rank at
 * most `prefetch` jobs, as many per message as fit up to `batch`, each
 * claimed RUNNING (fut__future_start) as it leaves the queue; everything
 * else stays PENDING and cancellable (mpi4py's rule, with prefetch 1 its
 * exact one).  It sends a function's name to a rank once (a NAME record)
 * and its small id after that (HPX's typename -> id).  Results complete
 * the futures in this thread, so done callbacks run here.  A malformed
 * message, or a result for a task the rank does not hold, breaks the
 * executor: FUT_EBROKEN for every pending and running future, with the
 * rank's name.  Once shut down
 * and empty, it sends one STOP per rank and ends when every rank's BYE
 * came.  It waits by polling (link.c's clock): spin, then an exponential
 * backoff on a condition variable that submit signals.  With no job in
 * flight and no STOP unanswered it makes no MPI call (go_quiet()): a
 * program whose futures are all done may call MPI_Finalize.
 * Threads: the manager only (c->ranks, c->link and the fields below "the
 * manager's own" are its alone).
 * Locks: c->lock for the queue, the broken flag and the name table; never
 * held across an MPI call or a future's completion.
 */
#include <string.h>

#include "mpi_client.h"

/* ------------------------------------------------------------------ */
/* The manager                                                         */

/* An ISOLATE server's worker died running j: the payload is the wait
 * status (4 bytes, little-endian), then the message (on_result() checked
 * its length).  Takes data. */
static void on_crash(struct mjob *j, unsigned char *data, size_t len)
{
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

/*
 * The last job in flight is about to complete.  Once it has, its caller
 * may call MPI_Finalize, and MPI forbids any other thread inside MPI then:
 * MPICH 4.0 stops taking its global lock as MPI_Finalize starts, before
 * the finalize hook runs, so a call of this thread that entered the lock
 * before leaves without unlocking it, and MPI_Finalize aborts on
 * destroying it (pthread_mutex_destroy: EBUSY; docs/reliability.md).  So
 * the sends still in flight complete first (the servers hold every task
 * sent: they received them; a second is ample), and receive_all() probes
 * no more until a job or a STOP is out again: from here until the next
 * submit or shutdown this thread makes no MPI call.  Shut down and
 * empty, it stops the ranks first instead (client_stop.c), once: a
 * second call (the rest of a message's results, after the first
 * FUT__MPI_HELD_MAX completed when no memory held more: hold_slot())
 * must not probe the communicator that stop freed (MPI_ERR_COMM aborted
 * the job; test_mpi_edge heldstop).
 */
static void go_quiet(struct mclient *c)
{
	if (!c->broke && !c->stopping && fut__mpi_drained(c) &&
	    fut__mpi_stop_first(c))
		return;
	(void)fut__mpi_link_flush(&c->link, 1000000000);
}

/* Whether a message can come: a job in flight, or a STOP not answered
 * (by a rank not gone); not while held (the BYEs wait), nor deaf. */
static bool expecting(const struct mclient *c)
{
	if (atomic_load_explicit(&c->holding, memory_order_relaxed) || c->deaf)
		return false;
	if (c->inflight != 0)
		return true;
	for (int r = 0; r < c->s.size; r++)
		if (c->ranks[r].stopped && !c->ranks[r].bye &&
		    !c->ranks[r].gone)
			return true;
	return false;
}

static void finish_results(struct mclient *c);

/* The i-th result held. */
static struct mheld *held_at(struct mclient *c, size_t i)
{
	return i < FUT__MPI_HELD_MAX ? &c->held[i] :
				       &c->more[i - FUT__MPI_HELD_MAX];
}

/* Room for one more result held; NULL when c->more cannot grow (then
 * those held complete first).  A message's results complete once all of
 * it is decoded, so after the break a malformed tail causes: before, the
 * first FUT__MPI_HELD_MAX did as the next came, and had they been the
 * last jobs in flight, MPI_Finalize could meet the break's calls
 * (test_mpi_break heldjunk; found by review, 2026-12-07). */
static struct mheld *hold_slot(struct mclient *c)
{
	if (c->nheld < FUT__MPI_HELD_MAX)
		return &c->held[c->nheld++];
	size_t k = c->nheld - FUT__MPI_HELD_MAX;
	if (k == c->capmore) {
		size_t cap = c->capmore ? c->capmore * 2 : FUT__MPI_HELD_MAX;
		struct mheld *grown =
			cap > SIZE_MAX / sizeof(*grown) ?
				NULL :
				fut__realloc(c->more, cap * sizeof(*grown));
		if (grown == NULL)
			return NULL;
		c->more = grown;
		c->capmore = cap;
	}
	c->nheld++;
	return &c->more[k];
}

/* Takes the job of a result record out of its rank's list and holds the
 * record until finish_results(): the rank's room is known, and the
 * manager refills it, before it completes the futures. */
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
		fut__mpi_break_all(
			c,
			"rank %d sent a result for a task it does not hold%s",
			rank, "");
		return;
	}
	/* A crash record without its wait status (on_crash()) breaks the
	 * executor while j is still its rank's: the break ends it after its
	 * MPI calls (before, j's done callback ran before them; test_mpi_break
	 * shortcrash; found by review, 2026-12-07). */
	if (rec->kind == FUT__WIRE_R_ERROR && rec->code == FUT_ECRASHED &&
	    rec->len < 4) {
		if (rec->owned)
			fut__free(rec->data);
		fut__mpi_break_all(
			c, "rank %d sent a crash record without a status%s",
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
	c->inflight--;
	struct mheld *h = hold_slot(c);
	if (h == NULL) {
		finish_results(c);
		h = &c->held[c->nheld++];
	}
	*h = (struct mheld){ .j = j, .rank = rank, .rec = *rec };
}

/* Completes j with the outcome rec carries. */
static void complete(struct mjob *j, struct fut__wire_rec *rec)
{
	if (rec->dropped) {
		/* A result in several messages, and no memory to gather it:
		 * its bytes are skipped, the rank serves on (test mode
		 * gathernomem: it broke the executor, "malformed"). */
		fut__mpi_job_fail(j, FUT_ENOMEM, 0,
				  "out of memory for the task's result");
		return;
	}
	if (rec->kind == FUT__WIRE_R_BYTES && rec->len != 0 &&
	    rec->len <= j->len && !rec->owned) {
		/* A result no longer than the input takes the input's place
		 * in the job (sent already): no allocation a task, as on the
		 * process pool. */
		memcpy(j->input, rec->data, rec->len);
		(void)fut__future_succeed_borrowed(&j->fut, j->input, rec->len);
		fut_release(&j->fut);
		return;
	}
	void *data = rec->data;
	if (!rec->owned && rec->len != 0) {
		data = fut__malloc(rec->len);
		if (data != NULL)
			memcpy(data, rec->data, rec->len);
	}
	if (rec->len != 0 && data == NULL) {
		fut__mpi_job_fail(j, FUT_ENOMEM, 0,
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
			on_crash(j, (unsigned char *)data, rec->len);
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
		fut__mpi_job_fail(
			j, FUT_ENOTSUP, 0,
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

/* Completes the jobs of the results held (on_result()).  Their records'
 * bytes lie in the message just received: this runs before the next. */
static void finish_results(struct mclient *c)
{
	for (size_t i = 0; i < c->nheld; i++) {
		/* The last job in flight is about to complete (go_quiet()). */
		if (i == 0 && c->inflight == 0)
			go_quiet(c);
		struct mheld *h = held_at(c, i);
		complete(h->j, &h->rec);
	}
	c->nheld = 0;
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
		fut__mpi_break_all(c, "rank %d sent a malformed message: %s",
				   rank,
				   mr->dec.error != NULL ? mr->dec.error :
							   "out of memory");
		return;
	}
}

static bool dispatch(struct mclient *c);

static bool receive_all(struct mclient *c)
{
	bool did = false;
	while (expecting(c)) {
		const void *data;
		size_t len;
		int src = -1, tag = -1;
		int rc = fut__mpi_link_recv(&c->link, MPI_ANY_SOURCE, &data,
					    &len, &src, &tag);
		/* None came, or no memory to stage it: the message waits in
		 * MPI, and the next pass tries again, after a nap while
		 * nothing else happens (test mode recvnomem; it broke the
		 * executor, "an MPI receive failed"). */
		if (rc == FUT_ETIMEDOUT || rc == FUT_ENOMEM)
			return did;
		if (rc != FUT_OK) {
			fut__mpi_go_deaf(c);
			fut__mpi_break_all(c,
					   "rank %d: an MPI receive failed%s",
					   c->s.rank, "");
			return true;
		}
		did = true;
		if (tag == FUT__MPI_TAG_BYE) {
			if (src < 0 || src >= c->s.size)
				continue;
			c->ranks[src].bye = true;
			/* A one-byte BYE: it gave up, and reads (and drops) what
			 * we sent it until this answer (link.c). */
			if (len != 0)
				fut__mpi_answer_bye(c, src);
			/* Before its STOP, or with tasks of ours: it gave up
			 * serving (no memory, a malformed message), and what
			 * it held will never come back. */
			if (!c->ranks[src].stopped || c->ranks[src].inflight)
				fut__mpi_break_all(
					c, "rank %d stopped serving%s", src,
					" (it gave up: see its return code)");
			continue;
		}
		feed(c, src, data, len, c->broke);
		/* The room the results made is refilled before their futures
		 * complete: the rank's next tasks leave one completion pass
		 * sooner (W-MPI2: a server sat idle ~24 us an exchange). */
		(void)dispatch(c);
		finish_results(c);
	}
	return did;
}

/* Asks for p's cache line for writing: the submitter wrote the job on
 * another cpu, and a plain prefetch brings it shared, so the manager's
 * claim (a compare-and-swap) then waits for it a second time.  x86's
 * PREFETCHW (a no-op on cpus that lack it); elsewhere the compiler's. */
static inline void prefetch_w(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1);
#endif
}

/* Caller holds c->lock: pops up to n queued jobs, each claimed RUNNING
 * here, under the lock, and with them every job marked dropped
 * (cancelled while queued) on the way: a shutdown(CANCEL_PENDING) that
 * drains the queue then cancels every job not claimed yet (claimed in
 * send_jobs() instead, a job popped and not yet claimed was neither, and
 * stayed PENDING after that shutdown returned, to run).  A dropped job
 * takes no room: cancelled jobs left in the queue, a rank's room a pass,
 * kept fut__mpi_drained() false after the last job ran, and the manager
 * stopped the ranks while its caller could be in MPI_Finalize
 * (test_mpi_edge cancelfin). */
static struct mjob *pop_locked(struct mclient *c, size_t n)
{
	struct mjob *first = c->qhead, *last = NULL;
	/* Each job's next is a cache miss (the submitter wrote it), and a
	 * walk of misses one after another was 8-10% of the client's cpu in
	 * W-MPI2: prefetching the job AHEAD places on, for writing (the
	 * manager starts each), has that many in flight at once. */
	for (struct mjob *j = first; j != NULL && n > 0; j = j->next) {
		if (j->ahead != NULL) {
			/* Both lines: the future's, and the one with next and
			 * ahead, which this walk reads. */
			prefetch_w(j->ahead);
			prefetch_w(&j->ahead->next);
		}
		j->dropped = fut__future_start(&j->fut) != FUT_OK;
		if (!j->dropped)
			n--;
		last = j;
	}
	if (last == NULL)
		return NULL;
	c->qhead = last->next;
	if (c->qhead == NULL) {
		c->qtail = NULL;
		atomic_store(&c->queued, false);
	}
	last->next = NULL;
	return first;
}

/*
 * Sends rank r the jobs of list (claimed by pop_locked(); the dropped ones,
 * cancelled while queued, released).  A job whose record finds no memory
 * ends FUT_ENOMEM, but only once the frame is out, and, the last job in
 * flight, after go_quiet(): the NAME records it added stay in the frame
 * (the rank learns a name early, harmless), and sent after its future
 * completed, its caller could be in MPI_Finalize (test mode namenomem).
 */
static void send_jobs(struct mclient *c, int r, struct mjob *list)
{
	struct mrank *mr = &c->ranks[r];
	struct fut__mpi_frame fr = { 0 };
	struct mjob *failed = NULL;
	fut__mpi_link_frame(&c->link, &fr);
	while (list != NULL) {
		struct mjob *j = list;
		list = j->next;
		j->next = NULL;
		if (j->dropped) {
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
			j->next = failed;
			failed = j;
			continue;
		}
		if (mr->tail != NULL)
			mr->tail->next = j;
		else
			mr->head = j;
		mr->tail = j;
		mr->inflight++;
		c->inflight++;
	}
	int rc = fut__mpi_link_send(&c->link, r, FUT__WIRE_TASKS, &fr);
	fut__free(fr.buf);
	if (rc == FUT_EBROKEN) {
		mr->gone = true; /* MPI refused it: not waited for */
		fut__mpi_break_all(c, "rank %d: an MPI send failed%s", r, "");
	} else if (rc != FUT_OK) {
		fut__mpi_break_all(c, "rank %d: out of memory for a message%s",
				   r, "");
	}
	if (failed != NULL && c->inflight == 0)
		go_quiet(c);
	while (failed != NULL) {
		struct mjob *j = failed;
		failed = j->next;
		fut__mpi_job_fail(j, FUT_ENOMEM, 0,
				  "out of memory for the task's message");
	}
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
	/* The poll loop comes here each turn: no lock while nothing waits. */
	if (!atomic_load(&c->queued) || fut__mpi_break_lost(c))
		return false;
	bool did = false;
	int size = c->s.size;
	for (int k = -1; k < size; k++) {
		int r = k < 0 ? c->hot_rank : (c->next_rank + k) % size;
		if (r < 0)
			continue;
		struct mrank *mr = &c->ranks[r];
		if (r == c->s.root || mr->stopped || mr->gone ||
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

/* Sends an INTERRUPT for every running job that asked for one.
 * shutdown(INTERRUPT) asks once, for the jobs in flight then, as
 * fut_interrupt() of each (the pools' rule): the flag goes onto them, so
 * a later scan (another job's fut_interrupt()) spares jobs sent since. */
static bool send_interrupts(struct mclient *c)
{
	bool all = atomic_exchange(&c->interrupt_all, false);
	bool did = false;
	for (int r = 0; r < c->s.size; r++) {
		struct fut__mpi_frame fr = { 0 };
		for (struct mjob *j = c->ranks[r].head; j != NULL;
		     j = j->next) {
			if (all)
				atomic_fetch_or(&j->fut.flags,
						FUT__F_INTERRUPT);
			bool asked = atomic_load(&j->fut.flags) &
				     FUT__F_INTERRUPT;
			if (!asked || j->interrupt_sent)
				continue;
			if (fut__mpi_frame_add(&fr, j->id, 0,
					       FUT__WIRE_T_INTERRUPT, 0, NULL,
					       0) == FUT_OK)
				j->interrupt_sent = true;
			else /* no memory: the next pass tries again */
				atomic_store(&c->interrupt_scan, true);
		}
		if (fr.count != 0) {
			did = true;
			int rc = fut__mpi_link_send(&c->link, r,
						    FUT__WIRE_TASKS, &fr);
			if (rc == FUT_EBROKEN) /* refused: not waited for */
				c->ranks[r].gone = true;
			if (rc != FUT_OK)
				fut__mpi_break_all(
					c, "rank %d: an MPI send failed%s", r,
					"");
		}
		fut__free(fr.buf);
	}
	return did;
}

void *fut__mpi_client_manager(void *arg)
{
	struct mclient *c = arg;
	fut__current_executor_set(&c->ex);
	fut__callback_mask_set(&c->maker_mask);
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, c->s.spin, c->s.backoff);
	for (;;) {
		if (fut__mpi_hold(c)) /* freed from its last callback */
			continue;
		bool did = receive_all(c);
		did |= dispatch(c);
		if (atomic_exchange(&c->interrupt_scan, false))
			did |= send_interrupts(c);
		did |= fut__mpi_progress(c);
		/* One read of `shutting` decides both: read twice, a shutdown
		 * between the reads made an idle executor look busy, and a
		 * shutdown(NOWAIT) returned before the STOPs and the BYEs
		 * (found by review, 2026-12-07: MPI calls after it). */
		fut__mpi_test_pause();
		if (!c->stopping && atomic_load(&c->shutting)) {
			if (fut__mpi_drained(c))
				c->stopping = true;
			else if (!c->seen)
				fut__mpi_see_shutdown(c);
		}
		if (c->stopping) /* again each pass: a STOP not sent is retried */
			fut__mpi_stop_ranks(c);
		/* Not while held (a callback's free in this pass's break). */
		if (c->stopping && !fut__mpi_link_busy(&c->link) &&
		    fut__mpi_all_said_bye(c) && !atomic_load(&c->holding))
			break;
		fut__mpi_manager_pause(c, &idle, did);
	}
	fut__mpi_comm_release(&c->s);
	fut__mpi_unlist_held(c);
	fut__free(c->more);
	pthread_mutex_lock(&c->lock);
	c->manager_done = true;
	pthread_cond_broadcast(&c->done_cv);
	bool free_handle = c->free_on_exit;
	pthread_mutex_unlock(&c->lock);
	fut__current_executor_set(NULL);
	if (free_handle) {
		pthread_detach(pthread_self());
		fut__mpi_client_unref(c);
	}
	fut__mpi_client_unref(c);
	return NULL;
}
