/*
 * slot.c: a worker slot's life, and the fork server's.
 *
 * Owns: asking the fork server for a worker (the channel fds, the spawn
 * request) and backing off when spawns fail; the hello that makes a
 * worker ready; killing (through the fork server, the one process that
 * knows whether the pid is still the worker's) and retiring a worker;
 * its death: for each job still in flight, the one it was running (the
 * id in its shared slot) fails FUT_ECRASHED, or with the code of the kill
 * we asked for, the others go back to the queue (or are cancelled, after
 * a shutdown(CANCEL_PENDING): jobs.c); the fork server's
 * control messages, and its restart when it died.
 * Threads: the manager thread only.
 * Locks: none of its own (the slots are the manager's alone); the queue's
 * through jobs.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

/* A job is put back in the queue at most this often before it fails. */
#define MAX_REQUEUES 3u
/* Spawn failures in a row with no worker alive that break the pool. */
#define MAX_SPAWN_FAILURES 5u
/* Fork server restarts (in the pool's life) before the pool breaks. */
#define MAX_FS_RESTARTS 16u

static bool ctl_send(struct ppool *p, unsigned type, struct pp_worker *w,
		     int32_t value, const int *fds)
{
	if (p->fs_sock < 0)
		return false;
	struct fut__wire_ctl c = { type, w->slot, w->gen, w->pid, value };
	return fut__pp_ctl_send(p->fs_sock, &c, fds, fds != NULL ? 2 : 0,
				MSG_DONTWAIT);
}

/* Nothing more goes to w: it reads EOF on its task socket, whose other
 * direction stays open for the memfds of its shared results. */
void fut__pp_task_shut(struct pp_worker *w)
{
	if (w->task_fd < 0)
		return;
	(void)shutdown(w->task_fd, SHUT_WR);
	w->back_fd = w->task_fd;
	w->task_fd = -1;
}

/* Back to a free slot (its jobs already dealt with).  A memfd it sent
 * that we never took is closed with the socket. */
static void worker_clear(struct pp_worker *w)
{
	fut__pp_close_fd(&w->task_fd);
	fut__pp_close_fd(&w->back_fd);
	fut__pp_close_fd(&w->result_fd);
	fut__wire_dec_fini(&w->dec);
	fut__free(w->bad_frame);
	w->bad_frame = NULL;
	w->state = PW_FREE;
	w->pid = 0;
	w->eof = w->exited = w->orphan = false;
	w->eof_ns = 0;
	w->eof_started = 0;
	w->pipe_lost = false;
	w->status = 0;
	w->head = w->tail = NULL;
	w->frames = 0;
	w->inflight = 0;
	w->answered = 0;
	w->sent = 0;
	w->kill_reason = 0;
	w->kill_all = false;
	w->kill_id = 0;
	w->kill_unsent = false;
	w->send_errno = 0;
	fut__pp_out_drop(w);
}

/* Asks the fork server for a worker in w's slot.  0, or an errno with
 * *what the call that failed. */
int fut__pp_slot_spawn(struct pp_mgr *m, struct pp_worker *w, const char **what)
{
	struct ppool *p = m->p;
	int sv[2], rp[2];
	*what = "socketpair";
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return errno;
	*what = "pipe2";
	if (pipe2(rp, O_CLOEXEC) != 0) {
		int err = errno;
		(void)close(sv[0]);
		(void)close(sv[1]);
		return err;
	}
	int size = FUT__PP_CHANNEL_BYTES;
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)fcntl(rp[0], F_SETPIPE_SZ, size);
	(void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
	(void)fcntl(rp[0], F_SETFL, O_NONBLOCK);
	w->gen++;
	w->pid = 0;
	struct fut__worker_slot *slot = &p->slots[w->slot];
	atomic_store(&slot->started, 0);
	atomic_store(&slot->finished, 0);
	atomic_store(&slot->written, 0);
	atomic_store(&slot->in_sending, 0);
	atomic_store(&slot->in_sent, 0);
	atomic_store(&slot->broke, 0);
	atomic_store(&slot->back_taken, 0);
	w->read_bytes = 0;
	/* Its keys go on from the last worker's (next_key kept: claim.c). */
	for (uint32_t k = 0; k < FUT__PP_CLAIMS; k++)
		atomic_store_explicit(&slot->claim[k], 0, memory_order_relaxed);
	int fds[2] = { sv[1], rp[1] };
	/* Our fd limit of now (0: none to give): the worker takes it. */
	struct rlimit rl;
	int32_t nofile = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur <= INT32_MAX)
		nofile = (int32_t)rl.rlim_cur;
	*what = "sending the spawn request";
	bool sent = ctl_send(p, FUT__WIRE_CTL_SPAWN, w, nofile, fds);
	int err = errno;
	(void)close(sv[1]);
	(void)close(rp[1]);
	w->task_fd = sv[0];
	w->result_fd = rp[0];
	fut__wire_dec_init(&w->dec, FUT__WIRE_TO_PARENT);
	/* A result this process cannot hold ends its task FUT_ENOMEM as
	 * soon as its header is read (recv.c). */
	w->dec.may_drop = true;
	w->dec.could_hold = fut__pp_could_hold;
	if (!sent) {
		worker_clear(w);
		if (err == EAGAIN || err == ENOBUFS) {
			/* The server is slow to read, not out of workers:
			 * counted as a failed spawn, five such in a row would
			 * break the pool. */
			*what = NULL;
			m->fs_full = true;
		}
		return err != 0 ? err : EIO;
	}
	w->state = PW_SPAWNING;
	return 0;
}

static struct pp_worker *ctl_worker(struct ppool *p,
				    const struct fut__wire_ctl *c)
{
	if (c->slot >= p->nslots)
		return NULL;
	struct pp_worker *w = &p->workers[c->slot];
	return w->gen == c->gen && w->state != PW_FREE ? w : NULL;
}

/* what: the call that failed (fork in the fork server, or ours). */
void fut__pp_slot_spawn_failed(struct pp_mgr *m, struct pp_worker *w,
			       const char *what, int err)
{
	struct ppool *p = m->p;
	worker_clear(w);
	p->spawn_failures++;
	unsigned k = p->spawn_failures < 7 ? p->spawn_failures : 7;
	p->spawn_after_ns = m->now + ((int64_t)5000000 << k);
	bool alive = false;
	for (uint32_t i = 0; i < p->nslots; i++)
		if (p->workers[i].state == PW_READY)
			alive = true;
	if (!alive && p->spawn_failures >= MAX_SPAWN_FAILURES)
		fut__pp_spawn_give_up(m, what, err);
}

void fut__pp_slot_hello(struct pp_mgr *m, struct pp_worker *w,
			const struct fut__wire_rec *r)
{
	if (w->state != PW_STARTING && w->state != PW_SPAWNING) {
		fut__pp_bad_frame(m, w, "a second hello");
		return;
	}
	if (r->kind == FUT__WIRE_HELLO_OK) {
		w->state = PW_READY;
		m->p->spawn_failures = 0;
		return;
	}
	char why[96];
	snprintf(why, sizeof(why),
		 "the initializer failed in a worker process (returned %d)",
		 (int)r->code);
	w->state = PW_RETIRING;
	fut__pp_task_shut(w);
	fut__pp_break(m, why);
}

/* Asks the fork server to kill w's process group.  A burst of kills (a
 * shutdown that interrupts hundreds of workers) may find its socket
 * full: dropped, a kill would leave its task running, its future
 * pending, for ever; it is sent again once there is room (the manager
 * polls for it). */
static void send_kill(struct pp_mgr *m, struct pp_worker *w)
{
	if (w->pid <= 0 || w->exited || w->orphan || m->p->fs_sock < 0)
		return;
	if (!ctl_send(m->p, FUT__WIRE_CTL_KILL, w, 0, NULL) &&
	    (errno == EAGAIN || errno == ENOBUFS)) {
		w->kill_unsent = true;
		m->fs_full = true;
	}
}

/* Kills w's process group (through the fork server, the one process that
 * knows whether the pid is still w's).  Its job(s) will end with reason. */
void fut__pp_slot_kill(struct pp_mgr *m, struct pp_worker *w, int reason,
		       bool all, uint64_t id)
{
	if (w->kill_reason == 0) {
		w->kill_reason = reason;
		w->kill_all = all;
		w->kill_id = id;
	}
	/* Nothing more goes to it. */
	fut__pp_out_drop(w);
	fut__pp_task_shut(w);
	w->state = PW_RETIRING;
	send_kill(m, w);
}

void fut__pp_slot_resend_kills(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	if (!m->fs_full)
		return;
	m->fs_full = false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->kill_unsent) {
			w->kill_unsent = false;
			send_kill(m, w);
		}
	}
}

/* Tells w to exit once it has answered what it has (EOF on its input). */
void fut__pp_slot_retire(struct pp_worker *w)
{
	fut__pp_task_shut(w);
	fut__pp_out_drop(w);
	w->state = PW_RETIRING;
}

/* ------------------------------------------------------------------ */
/* Death                                                               */

/* running: it died in the task; else after the task returned, its
 * result not sent. */
static void describe_status(char *buf, size_t n, pid_t pid, int status,
			    bool running)
{
	const char *when = running ? "while running the task" :
				     "after the task returned, before its "
				     "result came back";
	if (WIFSIGNALED(status)) {
		const char *name = sigabbrev_np(WTERMSIG(status));
		snprintf(buf, n,
			 "worker process %d was killed by signal %d (SIG%s) "
			 "%s",
			 (int)pid, WTERMSIG(status), name ? name : "?", when);
	} else if (WIFEXITED(status)) {
		snprintf(buf, n, "worker process %d exited with status %d %s",
			 (int)pid, WEXITSTATUS(status), when);
	} else {
		snprintf(buf, n, "worker process %d died", (int)pid);
	}
}

static void end_killed(struct pp_mgr *m, struct pp_worker *w, struct pp_job *j)
{
	switch (w->kill_reason) {
	case FUT_EDEADLINE:
		fut__pp_job_end(j, FUT_EDEADLINE, 0, 0,
				"task_timeout of %g s exceeded: worker process "
				"%d killed",
				m->p->timeout, (int)w->pid);
		break;
	case FUT_ECANCELLED:
		fut__pp_job_end(j, FUT_ECANCELLED, 0, 0,
				"interrupted: worker process %d killed",
				(int)w->pid);
		break;
	case FUT_EBROKEN:
		fut__pp_fail_broken(m->p, j);
		break;
	default:
		fut__pp_job_end(j, FUT_ECRASHED, 0, w->status,
				"worker process %d sent a malformed frame: %s",
				(int)w->pid, w->bad_frame ? w->bad_frame : "?");
		break;
	}
}

/* The worker found bytes it was sent gone from its task socket (a task
 * read them) and exited blaming its last task, id, whose result it held
 * back (child.c): that job, if w still has it and was not killed for
 * another reason, ends FUT_ECRASHED; the others run again. */
static void blame_thief(struct pp_worker *w, const struct pp_job *list,
			uint64_t id)
{
	if (id == 0 || w->kill_reason != 0)
		return;
	for (const struct pp_job *j = list; j != NULL; j = j->next) {
		if (j->id != id)
			continue;
		w->kill_reason = FUT_ECRASHED;
		w->kill_id = id;
		if (w->bad_frame == NULL)
			w->bad_frame = fut__strdup(
				"its task read from the worker's task socket "
				"(bytes sent to the worker never reached it)");
		return;
	}
}

/* w is dead and its results are read: settle every job it had. */
void fut__pp_slot_finalize(struct pp_mgr *m, struct pp_worker *w)
{
	struct ppool *p = m->p;
	const struct fut__worker_slot *s = &p->slots[w->slot];
	uint64_t started =
		atomic_load_explicit(&s->started, memory_order_acquire);
	/* It died between tasks (the last one it started had returned):
	 * none was running.  That one's result, still in its buffer, died
	 * with it: it runs again, as the others it ran. */
	bool running = started != 0 &&
		       atomic_load_explicit(&s->finished,
					    memory_order_acquire) != started;
	/* With chunk 1 a task runs at most once: the one that returned and
	 * whose result died with the worker (a task that closed the
	 * worker's fds: its write failed) ends FUT_ECRASHED instead (it ran
	 * 4 times: found by review, 2026-12-07). */
	bool once = started != 0 && p->chunk == 1;
	struct pp_job *list = w->head, *rq_first = NULL, *rq_last = NULL;
	bool blamed = false;
	w->head = w->tail = NULL;
	blame_thief(w, list,
		    atomic_load_explicit(&s->broke, memory_order_acquire));
	for (struct pp_job *j = list; j != NULL; j = j->next)
		if (((running || once) && j->id == started) ||
		    (w->kill_id && j->id == w->kill_id))
			blamed = true;
	while (list != NULL) {
		struct pp_job *j = list;
		list = j->next;
		j->next = NULL;
		bool victim;
		if (w->kill_all)
			victim = true;
		else if (w->kill_id != 0)
			victim = j->id == w->kill_id;
		else
			victim = ((running || once) && j->id == started) ||
				 (!blamed && w->bad_frame != NULL);
		if (victim) {
			blamed = true;
			if (w->kill_reason != 0 &&
			    (w->kill_reason != FUT_ECRASHED ||
			     w->bad_frame != NULL)) {
				end_killed(m, w, j);
			} else {
				char msg[160];
				if (w->orphan && !w->exited)
					/* Its wait status went to init. */
					snprintf(msg, sizeof(msg),
						 "worker process %d died with "
						 "its fork server while "
						 "running the task",
						 (int)w->pid);
				else
					describe_status(
						msg, sizeof(msg), w->pid,
						w->status,
						running || j->id != started);
				fut__pp_job_end(j, FUT_ECRASHED, 0, w->status,
						"%s", msg);
			}
			continue;
		}
		/* It had not started, or it finished but its result died
		 * with the worker: run it again elsewhere.  Not started, it
		 * is SENT still, and pending again (or cancelled meanwhile:
		 * dropped); started, it stays RUNNING. */
		w->inflight--;
		if (fut__pp_claim_revoke(p, j) == FUT__REVOKED) {
			if (!fut__future_unsend(&j->fut) &&
			    fut__future_state(&j->fut) != FUT__S_RUNNING) {
				fut__pp_job_drop(j);
				continue;
			}
		} else {
			(void)fut__future_start(&j->fut);
		}
		if (++j->requeued > MAX_REQUEUES) {
			if (w->send_errno != 0)
				fut__pp_job_end(j, FUT_ESYS, w->send_errno, 0,
						"cannot send the task to a "
						"worker process (%u tries): %s",
						j->requeued,
						strerror(w->send_errno));
			else
				fut__pp_job_end(j, FUT_ECRASHED, 0, w->status,
						"its worker process died %u "
						"times before the task's "
						"result came back",
						j->requeued);
			continue;
		}
		j->id = 0;
		j->chunk_end = true;
		if (rq_last != NULL)
			rq_last->next = j;
		else
			rq_first = j;
		rq_last = j;
	}
	fut__pp_requeue(m->p, rq_first, rq_last);
	worker_clear(w);
}

/* ------------------------------------------------------------------ */
/* The fork server                                                     */

static void on_ctl(struct pp_mgr *m, const struct fut__wire_ctl *c)
{
	struct ppool *p = m->p;
	struct pp_worker *w = ctl_worker(p, c);
	if (w == NULL)
		return;
	switch (c->type) {
	case FUT__WIRE_CTL_SPAWNED:
		if (w->pid != 0)
			break;
		w->pid = c->pid;
		if (w->state == PW_SPAWNING)
			w->state = PW_STARTING;
		else if (w->kill_reason != 0)
			/* Its hello came first, and a kill was asked before
			 * its pid was known. */
			send_kill(m, w);
		break;
	case FUT__WIRE_CTL_SPAWN_FAILED:
		if (w->state == PW_SPAWNING)
			fut__pp_slot_spawn_failed(
				m, w,
				c->value == EMFILE ?
					"taking in the worker's fds" :
					"fork",
				c->value);
		else if (w->pid == 0)
			/* Retired while its spawn was pending (the pool broke
			 * or shut down): no process will ever report on the
			 * slot, and it never had a job. */
			worker_clear(w);
		break;
	case FUT__WIRE_CTL_EXITED:
		if (w->pid != c->pid && w->pid != 0)
			break;
		w->pid = c->pid;
		w->exited = true;
		w->status = c->value;
		/* Everything it wrote before it died is in the pipe now. */
		fut__pp_read_results(m, w);
		if (((w->state == PW_STARTING || w->state == PW_SPAWNING) &&
		     w->kill_reason == 0) ||
		    w->pipe_lost) {
			/* It died before its hello (in its initializer): a
			 * failed spawn, so that a worker that can never start
			 * breaks the pool instead of being forked for ever.
			 * So did one killed for an initializer that closed
			 * or replaced its result pipe (forked for ever: found
			 * by review, 2026-12-07). */
			char what[96];
			if (w->pipe_lost)
				snprintf(what, sizeof(what),
					 "its initializer closed or replaced "
					 "its result pipe");
			else if (WIFSIGNALED(c->value))
				snprintf(what, sizeof(what),
					 "it was killed by signal %d before "
					 "its hello",
					 WTERMSIG(c->value));
			else
				snprintf(what, sizeof(what),
					 "it exited with status %d before its "
					 "hello",
					 WEXITSTATUS(c->value));
			fut__pp_slot_spawn_failed(m, w, what, 0);
			break;
		}
		fut__pp_slot_finalize(m, w);
		break;
	default:
		break;
	}
}

/* The fork server died (or spoke nonsense): its workers die with it
 * (PR_SET_PDEATHSIG); each ends at the EOF of its pipe.  A new server is
 * forked from this process, as at creation. */
static void fs_restart(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	fut__pp_close_fd(&p->fs_sock);
	/* Through its pidfd: found by review, 2026-12-07, the application
	 * may have reaped it, and its pid be one of its own children's. */
	fut__forkserver_reap(&p->fs_pid, &p->fs_pidfd, true);
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_FREE)
			continue;
		if (w->state == PW_SPAWNING && w->pid == 0) {
			worker_clear(w);
			continue;
		}
		w->orphan = true;
		fut__pp_task_shut(w);
		w->state = PW_RETIRING;
		/* No server is left to kill its group when it dies: a
		 * process its task forked would outlive it, holding its
		 * result pipe open, and its jobs would wait for an EOF
		 * that never comes.  Its pipe still open, a process of its
		 * group holds it (it, or one it forked): the group id is
		 * still its. */
		fut__pp_read_results(m, w);
		if (w->pid > 0 && !w->exited && !w->eof)
			(void)kill(-w->pid, SIGKILL);
		if (w->eof)
			fut__pp_slot_finalize(m, w);
	}
	if (m->closing)
		return;
	if (++m->fs_restarts > MAX_FS_RESTARTS) {
		fut__pp_break(m, "the fork server died too often");
		return;
	}
	int rc = fut__forkserver_start(&p->cfg, &p->fs_pid, &p->fs_pidfd,
				       &p->fs_sock);
	if (rc != FUT_OK) {
		char why[128];
		snprintf(why, sizeof(why),
			 "the fork server died and could not be restarted: %s",
			 strerror(errno));
		fut__pp_break(m, why);
	}
}

/* Reads the fork server's messages; restarts it when it is gone. */
void fut__pp_fs_read(struct pp_mgr *m)
{
	struct ppool *p = m->p;
	for (;;) {
		unsigned char b[FUT__WIRE_CTL_SIZE + 1];
		ssize_t n = recv(p->fs_sock, b, sizeof(b), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		struct fut__wire_ctl c;
		if (n <= 0 || fut__wire_ctl_get(b, (size_t)n, &c) != FUT_OK) {
			fs_restart(m);
			return;
		}
		on_ctl(m, &c);
	}
}
