/*
 * server.c: a serving rank, inside its fut_mpi_executor_new() call: the
 * MPI loop (the results it sends are server_results.c's).
 *
 * Owns: struct server (mpi_server.h): the decoder of the client's stream,
 * the name table (id -> function, resolved once per name through
 * names.c), and the results not yet sent.  One thread at a time runs the
 * MPI loop and makes every MPI call: it polls the client with MPI_Iprobe
 * (link.c's clock: spin, then backoff on loop_cv, which a finished task
 * signals), runs the next task itself when threads_per_rank is 1
 * (serve(): the calling thread and a standby take turns at the loop),
 * queues tasks for the task threads (server_tasks.c) when it is more, or,
 * with FUT_MPI_ISOLATE, gathers them for the rank's process pool
 * (server_pool.c), raises a running task's interrupt flag (the task reads
 * it with fut_task_cancelled()), sends the results as they come, batched,
 * and returns once STOP came and everything before it was answered (a
 * BREAK: the client broke; the results still to come are dropped).
 * Threads: the calling thread and, threads_per_rank 1, the standby (the
 * loop, one at a time: loop_owned); the result calls below run in the
 * workers, or the pool's manager (the done callbacks), too.
 * Locks: s->lock guards the fields marked "lock"; never held while a task
 * runs, across an MPI call, or across a call into the pool.
 */
#include <stdio.h>
#include <string.h>

#include "mpi_server.h"

static void on_name(struct server *s, const struct fut__wire_rec *r)
{
	if (r->id != (uint64_t)s->nnames + 1) {
		fut__mpi_server_give_up(s, FUT_EBROKEN);
		return;
	}
	char *copy = fut__malloc(r->len + 1);
	if (copy == NULL) {
		fut__mpi_server_give_up(s, FUT_ENOMEM);
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
			fut__mpi_server_give_up(s, FUT_ENOMEM);
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
		fut__mpi_server_give_up(s, FUT_EBROKEN);
		return;
	}
	if (s->s.pool != NULL) {
		pthread_mutex_lock(&s->lock);
		bool room = fut__mpi_server_reserve_locked(s, 1);
		const struct sname *nm = &s->names[r->fn - 1];
		if (room && nm->fn == NULL)
			fut__mpi_server_add_result_locked(s, r->id, NULL,
							  nm->name);
		pthread_mutex_unlock(&s->lock);
		if (!room)
			fut__mpi_server_give_up(s, FUT_ENOMEM);
		else if (nm->fn != NULL)
			fut__mpi_pool_gather(s, r);
		return;
	}
	bool slab;
	struct stask *st = fut__slab_alloc(sizeof(*st) + r->len, &slab);
	if (st == NULL) {
		fut__mpi_server_give_up(s, FUT_ENOMEM);
		return;
	}
	st->next = NULL;
	st->id = r->id;
	/* Only this thread (the loop's) adds names: no lock to read them. */
	st->fn = s->names[r->fn - 1].fn;
	st->missing = st->fn == NULL ? s->names[r->fn - 1].name : NULL;
	st->slab = slab;
	atomic_init(&st->flags, 0);
	st->len = r->len;
	if (r->len != 0)
		memcpy(st->input, r->data, r->len);
	if (s->inbox_tail != NULL)
		s->inbox_tail->next = st;
	else
		s->inbox_head = st;
	s->inbox_tail = st;
	s->inbox_n++;
}

/* Queues the tasks of the message read so far (on_task): one lock round
 * a message, not a task. */
static void queue_inbox(struct server *s)
{
	if (s->inbox_head == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	if (s->qtail != NULL)
		s->qtail->next = s->inbox_head;
	else
		s->qhead = s->inbox_head;
	s->qtail = s->inbox_tail;
	s->ntasks += s->inbox_n;
	/* Without room for their results' ids, the tasks still run, but
	 * serving gives up: the client then fails them (EBROKEN). */
	bool room = fut__mpi_server_reserve_locked(s, 0);
	if (s->inbox_n > 1)
		pthread_cond_broadcast(&s->work_cv);
	else
		pthread_cond_signal(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	s->inbox_head = s->inbox_tail = NULL;
	s->inbox_n = 0;
	if (!room)
		fut__mpi_server_give_up(s, FUT_ENOMEM);
}

static void on_interrupt(struct server *s, uint64_t id)
{
	if (s->s.pool != NULL) {
		fut__mpi_pool_interrupt(s, id);
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
		queue_inbox(s);
		on_interrupt(s, r->id);
		break;
	case FUT__WIRE_T_BREAK: /* no longer sent: a message of tag 3 */
		fut__mpi_server_on_break(s);
		break;
	default: /* FUT__WIRE_T_STOP */
		queue_inbox(s);
		fut__mpi_pool_flush(s);
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_broadcast(&s->work_cv);
		pthread_mutex_unlock(&s->lock);
		break;
	}
}

/* Sends the results of fr (fut__mpi_server_take_results_locked); true if
 * it had any. */
static bool send_results(struct server *s, struct fut__mpi_frame *fr)
{
	if (fr->count == 0)
		return false;
	int rc = fut__mpi_link_send(&s->link, s->s.root, FUT__WIRE_RESULTS, fr);
	if (rc == FUT_ENOMEM) {
		/* Nothing went, fr is whole: loop() sends it first, once
		 * memory lets (a nap between tries). */
		s->unsent = *fr;
		return false;
	}
	if (rc != FUT_OK)
		fut__mpi_server_give_up(s, FUT_EBROKEN);
	fut__free(fr->buf);
	return true;
}

/*
 * Reads and handles what the client sent; true if anything came.  one:
 * a single message, so that a task it brings starts without a further
 * MPI_Iprobe (which yields the cpu when nothing came, oversubscribed).
 */
static bool receive_all(struct server *s, bool one)
{
	bool did = false;
	while (s->error == FUT_OK) {
		const void *data;
		size_t len, off = 0;
		int src, tag;
		int rc = fut__mpi_link_recv(&s->link, s->s.root, &data, &len,
					    &src, &tag);
		if (rc == FUT_OK && tag == FUT__MPI_TAG_BREAK) {
			did = true;
			fut__mpi_server_on_break(s);
			continue;
		}
		if (rc == FUT_OK && tag != FUT__MPI_TAG)
			rc = FUT_EBROKEN; /* the client sends no other */
		if (rc == FUT_ETIMEDOUT)
			break;
		if (rc != FUT_OK) {
			fut__mpi_server_give_up(s, rc);
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
				fut__mpi_server_give_up(s,
							rc == FUT__WIRE_ENOMEM ?
								FUT_ENOMEM :
								FUT_EBROKEN);
				break;
			}
			on_record(s, &r);
			if (r.owned)
				fut__free(r.data);
		}
		/* What the message carried is queued, or with ISOLATE goes
		 * to the pool. */
		queue_inbox(s);
		fut__mpi_pool_flush(s);
		if (one)
			break;
	}
	return did;
}

/*
 * run_here: while this rank's own tasks are queued, the loop runs the
 * next one without an MPI_Iprobe first, for up to this long since the
 * last one.  An empty MPI_Iprobe yields the cpu (Open MPI, oversubscribed):
 * one a task made W-MPI2's servers switch 200,000 times a second
 * (docs/perf-log.md).  A task that runs longer leaves the loop to the
 * standby, which probes; an interrupt for a queued task waits at most
 * this long more.
 */
#define PROBE_NS 50000

/*
 * run_here: whether the next task may run without a probe first.  The
 * clock is read after 1, 2, 4, 8... tasks since the last probe, not after
 * each: a read costs 42 ns on the development VM, a tenth of a W-MPI2
 * task's server time (docs/perf-log.md).  With tasks of about one length
 * the loop probes at most 2 x PROBE_NS late; a task longer than a tick
 * leaves the loop to the standby, which probes.
 */
static bool probe_may_wait(struct server *s)
{
	uint32_t n = ++s->since_probe;
	if ((n & (n - 1)) == 0)
		s->probe_wait = fut__mpi_now_ns() - s->probed_ns < PROBE_NS;
	return s->probe_wait;
}

/*
 * The MPI loop.  Caller holds s->lock.  Returns a task for the calling
 * thread to run (run_here; one at a time), or NULL once done; either
 * with s->lock held.  The lock is held from the end of one task to the
 * start of the next: one lock round a task, with the result's
 * (docs/perf-log.md).
 */
static struct stask *loop(struct server *s)
{
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, s->s.spin, s->s.backoff);
	/* threads_per_rank 1: the loop's thread runs the tasks (a rank
	 * without a thread beside its loop gave up: fut__mpi_serve()). */
	bool here = s->run_here;
	for (;;) {
		/* Results first: a task run here has just ended.  While tasks
		 * of its own are queued, the next runs without a probe
		 * (PROBE_NS). */
		bool fast = here && probe_may_wait(s);
		struct fut__mpi_frame fr = s->unsent;
		memset(&s->unsent, 0, sizeof(s->unsent));
		if (fr.count == 0 || s->discard)
			fut__mpi_server_take_results_locked(s, &fr);
		struct stask *take = fast && s->busy == 0 ?
					     fut__mpi_server_take_locked(s) :
					     NULL;
		if (take != NULL && fr.count == 0 &&
		    !fut__mpi_link_busy(&s->link))
			return take;
		pthread_mutex_unlock(&s->lock);
		bool did = send_results(s, &fr);
		if (take == NULL) {
			if (here) {
				s->probed_ns = fut__mpi_now_ns();
				s->since_probe = 0;
			}
			did |= receive_all(s, here);
		}
		did |= fut__mpi_link_progress(&s->link);
		did |= fut__mpi_pool_poll(s);
		if (s->error != FUT_OK) /* it acts on nothing else now */
			did |= fut__mpi_server_look_for_break(s);
		/* Once what we sent before the BREAK is out: no large send of
		 * ours waits for root's receive, and the ACK, small, cannot
		 * overtake one (the BYE follows once what runs has ended). */
		if (s->ack_due && !fut__mpi_link_busy(&s->link)) {
			s->ack_due = false;
			s->ack_sent = true;
			did = true;
			if (fut__mpi_send_ack(s->s.comm, s->s.root) != FUT_OK)
				fut__mpi_server_give_up(s, FUT_EBROKEN);
		}
		pthread_mutex_lock(&s->lock);
		if (take == NULL && here && s->busy == 0)
			take = fut__mpi_server_take_locked(s);
		if (take != NULL)
			return take;
		/* A lost result's id, and results a send found no memory
		 * for, go before the end, once memory lets them
		 * (server_results.c), unless serving gave up. */
		bool done = s->stop && !s->ack_due && s->qhead == NULL &&
			    s->busy == 0 && s->results.count == 0 &&
			    ((s->nlost == 0 && s->unsent.count == 0) ||
			     s->error != FUT_OK);
		/* While this rank's own tasks run, their end wakes the loop:
		 * it sleeps rather than spin, leaving the cpu to them. */
		bool spin = s->qhead == NULL && s->busy == 0;
		if (done && !fut__mpi_link_busy(&s->link))
			return NULL;
		if (did) {
			fut__mpi_idle_busy(&idle);
			continue;
		}
		/* Results in flight move only in our MPI calls (a large
		 * message, a fragment pipeline at a time): no nap meanwhile. */
		int64_t ns = fut__mpi_link_busy(&s->link) ?
				     0 :
				     fut__mpi_idle_next(&idle, spin);
		if (ns > 0) { /* woken early by a finished task */
			pthread_mutex_unlock(&s->lock);
			fut__mpi_nap(&s->lock, &s->loop_cv, &s->loop_wake,
				     &s->loop_sleeping, ns);
			pthread_mutex_lock(&s->lock);
		}
	}
}

/*
 * run_here: the body of the calling thread and of the standby thread.
 * Whichever holds the loop runs the next task itself when the rank has
 * none running: no hand-off to a task thread, which cost a wake-up and
 * two context switches a task, most of a W-MPI1 round trip
 * (docs/perf-log.md, 2026-12-05).  While it runs the task it leaves the
 * loop, so that interrupts and the client's messages are still served:
 * the other thread takes the loop once the same task has run for a tick
 * (poll_backoff), and the first thread, its task done, becomes the
 * standby.  The standby ticks while tasks run here and parks once a tick
 * saw none; a task run here wakes a parked standby.
 */
static void *serve(void *arg)
{
	struct server *s = arg;
	int64_t tick = (int64_t)(s->s.backoff * 1e9);
	if (tick < 100000) /* a tiny poll_backoff must not make it spin */
		tick = 100000;
	uint64_t seen = UINT64_MAX;
	pthread_mutex_lock(&s->lock);
	while (!s->finished) {
		if (!s->loop_owned &&
		    (!s->running_here || s->here_seq == seen)) {
			s->loop_owned = true;
			struct stask *st = loop(s);
			s->loop_owned = false;
			if (st == NULL) {
				s->finished = true;
				pthread_cond_broadcast(&s->standby_cv);
				break;
			}
			s->running_here = true;
			s->here_seq++;
			if (s->standby_parked)
				pthread_cond_signal(&s->standby_cv);
			pthread_mutex_unlock(&s->lock);
			fut__mpi_server_run_one(s, st); /* locks */
			s->running_here = false;
			continue;
		}
		bool active = s->running_here || s->here_seq != seen;
		seen = s->here_seq;
		if (active) {
			struct timespec until = fut__mpi_abstime(tick);
			(void)pthread_cond_timedwait(&s->standby_cv, &s->lock,
						     &until);
		} else {
			s->standby_parked = true;
			pthread_cond_wait(&s->standby_cv, &s->lock);
			s->standby_parked = false;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static _Atomic bool fail_thread_start;

/* Test hook: the next server of this process starts none of its threads
 * (its standby, or its task threads), as if pthread_create failed. */
void fut__mpi_test_fail_thread_start(void);
void fut__mpi_test_fail_thread_start(void)
{
	atomic_store(&fail_thread_start, true);
}

/* The link's lost (link.c): a send of ours (to root) failed in MPI_Test
 * and was dropped.  Kept, it was tested for ever, and the loop, which
 * ends with no send in flight, never did (found by review, 2026-12-07):
 * serving gives up, and the client breaks the executor at our BYE. */
static void give_up_lost(void *arg, int to)
{
	(void)to;
	fut__mpi_server_give_up(arg, FUT_EBROKEN);
}

int fut__mpi_serve(struct fut__mpi_setup *setup)
{
	struct server *s = fut__calloc(1, sizeof(*s));
	if (s == NULL) {
		/* It gives up at once, as a server that ran out of memory
		 * later: its BYE breaks the executor on the client, which
		 * answers it (silent, the client waited for it forever). */
		fut_executor_free(setup->pool);
		setup->pool = NULL;
		fut__mpi_isolate_rank_set(-1);
		struct fut__mpi_link l;
		fut__mpi_link_init(&l, setup->comm);
		if (fut__mpi_send_bye(setup->comm, setup->root, true) == FUT_OK)
			fut__mpi_link_drain(&l, setup->root, setup->spin,
					    setup->backoff);
		fut__mpi_link_fini(&l);
		fut__mpi_comm_release(setup);
		setup->comm = MPI_COMM_NULL;
		setup->inter = MPI_COMM_NULL;
		return FUT_ENOMEM;
	}
	s->s = *setup;
	fut__mpi_link_init(&s->link, s->s.comm);
	s->link.lost = give_up_lost;
	s->link.lost_arg = s;
	fut__wire_dec_init(&s->dec, FUT__WIRE_TO_RANK);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->loop_cv, &ca);
	pthread_cond_init(&s->standby_cv, &ca);
	pthread_condattr_destroy(&ca);
	/* ISOLATE: the pool runs the tasks; no worker thread.  One task at a
	 * time: the loop's thread runs them, with a standby (serve()). */
	s->run_here = s->s.pool == NULL && s->s.threads == 1;
	s->threads = s->s.pool != NULL ?
			     NULL :
			     fut__calloc(s->s.threads, sizeof(*s->threads));
	/* The threads run tasks: they start with the signal mask of the
	 * thread that called fut_mpi_executor_new(), as a thread pool's
	 * workers do.  They started with every signal blocked: a task's
	 * child process ignored SIGTERM, and raise(SIGABRT) did nothing
	 * (found by a user's trial, 2026-12-07). */
	if (s->threads != NULL) {
		bool fail = atomic_exchange(&fail_thread_start, false);
		while (!fail && s->nthreads < s->s.threads &&
		       pthread_create(&s->threads[s->nthreads], NULL,
				      s->run_here ? serve :
						    fut__mpi_server_worker,
				      s) == 0)
			s->nthreads++;
	}
	/* No thread beside the loop (no memory for their table, or none
	 * could start): the loop's thread alone would run the tasks, and
	 * while one ran nothing would read the client's messages, so an
	 * interrupt would never reach it (test mode nostandby: such a task
	 * ran on).  It gives up serving at once, as without memory for its
	 * state: FUT_EAGAIN (FUT_ENOMEM), and the client breaks the
	 * executor. */
	if (s->s.pool == NULL && s->nthreads == 0)
		fut__mpi_server_give_up(s, s->threads == NULL ? FUT_ENOMEM :
								FUT_EAGAIN);
	/* With worker threads, loop() returns no task: serve() only runs
	 * it. */
	(void)serve(s);
	for (size_t i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	/* Everything this rank sent is out: the client may free the
	 * communicator once every server said so.  A rank that gave up says
	 * so, and waits for the client's answer, unless the client's BREAK
	 * came: that was its last message, and everything before it was read
	 * (fut__mpi_server_look_for_break()). */
	bool gave_up = s->error != FUT_OK && !s->discard;
	if (fut__mpi_send_bye(s->s.comm, s->s.root, gave_up) != FUT_OK) {
		if (s->error == FUT_OK)
			s->error = FUT_EBROKEN;
	} else if (gave_up) {
		fut__mpi_link_drain(&s->link, s->s.root, s->s.spin,
				    s->s.backoff);
	}
	/* Every pool task has reported (busy is 0): no callback is left. */
	fut_executor_free(s->s.pool);
	setup->pool = NULL;
	/* A process this rank forks from now on runs no task of ours. */
	fut__mpi_isolate_rank_set(-1);
	int rc = s->error;
	fut__mpi_comm_release(&s->s);
	setup->comm = MPI_COMM_NULL;
	setup->inter = MPI_COMM_NULL;
	s->ntasks -= fut__mpi_server_drop_tasks(s->qhead);
	/* Tasks not freed (none, unless a bug leaked them) stay counted as
	 * live objects, which the tests check. */
	fut__mpi_live_count((int)s->ntasks);
	fut__free(s->run_inputs);
	fut__free(s->run_ids);
	fut__free(s->run_futs);
	for (uint32_t i = 0; i < s->nnames; i++)
		fut__free(s->names[i].name);
	fut__free(s->names);
	fut__free(s->results.buf);
	fut__free(s->unsent.buf);
	fut__free(s->lost);
	fut__free(s->threads);
	fut__wire_dec_fini(&s->dec);
	fut__mpi_link_fini(&s->link);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->loop_cv);
	pthread_cond_destroy(&s->standby_cv);
	pthread_mutex_destroy(&s->lock);
	fut__free(s);
	return rc;
}
