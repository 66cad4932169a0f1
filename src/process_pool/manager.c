/*
 * pp_manager.c: the process pool's manager thread.
 *
 * Owns: every fd of the pool but the wake fd, and every worker's life.
 * One thread multiplexes the wake fd, the fork server's control socket and
 * each worker's task socket and result pipe with poll(2): it hands queued
 * jobs to ready workers in frames, streams them out and results in with
 * non-blocking I/O, asks the fork server for workers and for kills, reads
 * the (pid, wait status) of each dead worker from it, and enforces
 * task_timeout.  It completes the futures, so done callbacks run here.
 * Threads: this one; it blocks every signal.
 * Locks: takes p->lock only to pop, push back or drain the queue and to
 * read the shutdown state; never while a future completes.
 *
 * A job's way: queued -> popped into a frame for worker w (claimed with
 * fut__future_start, given an id) -> in w's in-flight list -> its result
 * record arrives, in order -> completed.  When w dies, finalize() decides
 * for each job still in flight: the one it was running (the id in w's
 * shared slot) fails FUT_ECRASHED, or the code of the kill we asked for;
 * the others go back to the queue.
 *
 * The encoding and sending of task frames is in pp_send.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/pool.h"

/* Reads straight into a large payload's buffer from this size on. */
#define DIRECT_MIN (16u * 1024u)
/* A job is put back in the queue at most this often before it fails. */
#define MAX_REQUEUES 3u
/* Spawn failures in a row with no worker alive that break the pool. */
#define MAX_SPAWN_FAILURES 5u
/* Fork server restarts (in the pool's life) before the pool breaks. */
#define MAX_FS_RESTARTS 16u

struct mgr {
	struct ppool *p;
	int64_t now;
	unsigned fs_restarts;
	bool closing; /* shut down and drained: workers are told to go */
	struct pollfd *pfd;
	struct pp_worker **pfd_w; /* the worker of each entry, NULL */
};

static void pool_break(struct mgr *m, const char *why);

/* ------------------------------------------------------------------ */
/* The fork server                                                     */

static bool ctl_send(struct ppool *p, unsigned type, struct pp_worker *w,
		     int32_t value, const int *fds)
{
	if (p->fs_sock < 0)
		return false;
	struct fut__wire_ctl c = { type, w->slot, w->gen, w->pid, value };
	return fut__pp_ctl_send(p->fs_sock, &c, fds, fds != NULL ? 2 : 0,
				MSG_DONTWAIT);
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		(void)close(*fd);
		*fd = -1;
	}
}

/* Nothing more goes to w: it reads EOF on its task socket, whose other
 * direction stays open for the memfds of its shared results. */
static void task_shut(struct pp_worker *w)
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
	close_fd(&w->task_fd);
	close_fd(&w->back_fd);
	close_fd(&w->result_fd);
	fut__wire_dec_fini(&w->dec);
	fut__free(w->bad_frame);
	w->bad_frame = NULL;
	w->state = PW_FREE;
	w->pid = 0;
	w->eof = w->exited = w->orphan = false;
	w->status = 0;
	w->head = w->tail = NULL;
	w->frames = 0;
	w->sent = 0;
	w->kill_reason = 0;
	w->kill_all = false;
	w->kill_id = 0;
	w->olen = w->ooff = 0;
	w->opay = NULL;
	w->ofd = -1;
	w->opaylen = w->opayoff = 0;
}

/* Asks the fork server for a worker in w's slot.  0, or an errno with
 * *what the call that failed. */
static int spawn(struct mgr *m, struct pp_worker *w, const char **what)
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
	(void)fcntl(rp[0], F_SETPIPE_SZ, size);
	(void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
	(void)fcntl(rp[0], F_SETFL, O_NONBLOCK);
	w->gen++;
	w->pid = 0;
	atomic_store(&p->slots[w->slot].started, 0);
	atomic_store(&p->slots[w->slot].finished, 0);
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
	if (!sent) {
		worker_clear(w);
		return err != 0 ? err : EIO;
	}
	w->state = PW_SPAWNING;
	return 0;
}

/* Kills w's process group (through the fork server, the one process that
 * knows whether the pid is still w's).  Its job(s) will end with reason. */
static void worker_kill(struct mgr *m, struct pp_worker *w, int reason,
			bool all, uint64_t id)
{
	if (w->kill_reason == 0) {
		w->kill_reason = reason;
		w->kill_all = all;
		w->kill_id = id;
	}
	/* Nothing more goes to it. */
	w->olen = w->ooff = 0;
	w->opay = NULL;
	w->ofd = -1;
	task_shut(w);
	w->state = PW_RETIRING;
	if (w->pid > 0 && !w->exited && !w->orphan)
		(void)ctl_send(m->p, FUT__WIRE_CTL_KILL, w, 0, NULL);
}

/* Tells w to exit once it has answered what it has (EOF on its input). */
static void worker_retire(struct pp_worker *w)
{
	task_shut(w);
	w->olen = w->ooff = 0;
	w->opay = NULL;
	w->ofd = -1;
	w->state = PW_RETIRING;
}

/* ------------------------------------------------------------------ */
/* Ending a worker                                                     */

static void describe_status(char *buf, size_t n, pid_t pid, int status)
{
	if (WIFSIGNALED(status)) {
		const char *name = sigabbrev_np(WTERMSIG(status));
		snprintf(buf, n,
			 "worker process %d was killed by signal %d (SIG%s) "
			 "while running the task",
			 (int)pid, WTERMSIG(status), name ? name : "?");
	} else if (WIFEXITED(status)) {
		snprintf(buf, n,
			 "worker process %d exited with status %d while "
			 "running the task",
			 (int)pid, WEXITSTATUS(status));
	} else {
		snprintf(buf, n, "worker process %d died", (int)pid);
	}
}

static void end_killed(struct mgr *m, struct pp_worker *w, struct pp_job *j)
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

/* Puts list (in order) back at the head of the queue. */
static void requeue(struct mgr *m, struct pp_job *first, struct pp_job *last)
{
	struct ppool *p = m->p;
	if (first == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	bool broken = p->broken;
	if (!broken) {
		last->next = p->qhead;
		p->qhead = first;
		if (p->qtail == NULL)
			p->qtail = last;
	}
	pthread_mutex_unlock(&p->lock);
	if (broken) {
		last->next = NULL;
		fut__pp_fail_broken(p, first);
	}
}

/* w is dead and its results are read: settle every job it had. */
static void finalize(struct mgr *m, struct pp_worker *w)
{
	struct ppool *p = m->p;
	uint64_t started = atomic_load_explicit(&p->slots[w->slot].started,
						memory_order_acquire);
	struct pp_job *list = w->head, *rq_first = NULL, *rq_last = NULL;
	bool blamed = false;
	w->head = w->tail = NULL;
	for (struct pp_job *j = list; j != NULL; j = j->next)
		if (j->id == started || (w->kill_id && j->id == w->kill_id))
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
			victim = j->id == started ||
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
					describe_status(msg, sizeof(msg),
							w->pid, w->status);
				fut__pp_job_end(j, FUT_ECRASHED, 0, w->status,
						"%s", msg);
			}
			continue;
		}
		/* It had not started, or it finished but its result died
		 * with the worker: run it again elsewhere. */
		if (++j->requeued > MAX_REQUEUES) {
			fut__pp_job_end(j, FUT_ECRASHED, 0, w->status,
					"its worker process died %u times "
					"before the task's result came back",
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
	requeue(m, rq_first, rq_last);
	worker_clear(w);
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

static void bad_frame(struct mgr *m, struct pp_worker *w, const char *why)
{
	if (w->bad_frame == NULL)
		w->bad_frame = fut__strdup(why);
	worker_kill(m, w, FUT_ECRASHED, false, 0);
	/* Stop reading what it sends; its EXITED ends it. */
	w->eof = true;
	close_fd(&w->result_fd);
}

static void on_hello(struct mgr *m, struct pp_worker *w,
		     const struct fut__wire_rec *r)
{
	if (w->state != PW_STARTING && w->state != PW_SPAWNING) {
		bad_frame(m, w, "a second hello");
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
	task_shut(w);
	pool_break(m, why);
}

static void on_result(struct mgr *m, struct pp_worker *w,
		      struct fut__wire_rec *r)
{
	struct pp_job *j = w->head;
	if (j == NULL || r->id != j->id) {
		if (r->owned)
			fut__free(r->data);
		bad_frame(m, w, "a result for a task it was not given");
		return;
	}
	w->head = j->next;
	if (w->head == NULL)
		w->tail = NULL;
	j->next = NULL;
	if (j->frame_last)
		w->frames--;
	/* It ran: its input will not be sent again. */
	fut__pp_job_input_close(j);
	if (r->kind == FUT__WIRE_R_SHARED) {
		uint64_t len = fut__wire_get_u64(r->data);
		if (r->owned)
			fut__free(r->data);
		int fd = fut__pp_take_fd(w);
		if (fd >= 0) {
			fut__pp_complete_shared(j, fd, len);
			return;
		}
		int err = errno;
		fut__pp_job_end(j, FUT_ESYS, err, 0,
				"cannot take in the task's result (shared "
				"memory): %s",
				strerror(err));
		if (err == EPROTO)
			bad_frame(m, w, "a shared result without its memfd");
		return;
	}
	if (r->kind == FUT__WIRE_R_BYTES && r->len != 0 && r->len <= j->len &&
	    !r->owned && !(j->shared & PP_SHARED_INPUT)) {
		/* A result no longer than the input takes the input's place
		 * in the job block: no allocation per task. */
		memcpy(j->input, r->data, r->len);
		(void)fut__future_succeed_borrowed(&j->fut, j->input, r->len);
		fut_release(&j->fut);
		return;
	}
	void *data = r->data;
	if (r->len != 0 && !r->owned) {
		data = fut__malloc(r->len);
		if (data != NULL)
			memcpy(data, r->data, r->len);
	}
	if (r->len != 0 && data == NULL) {
		fut__pp_job_end(j, FUT_ENOMEM, 0, 0,
				"out of memory for the task's result");
		return;
	}
	switch (r->kind) {
	case FUT__WIRE_R_BYTES:
		(void)fut__future_succeed_bytes(&j->fut, data, r->len);
		fut_release(&j->fut);
		return;
	case FUT__WIRE_R_FAIL: {
		char *msg = fut__malloc(r->len + 1);
		if (msg != NULL) {
			if (r->len != 0)
				memcpy(msg, data, r->len);
			msg[r->len] = '\0';
		}
		fut__free(data);
		(void)fut__future_fail(&j->fut, FUT_ETASK, r->code, msg);
		fut_release(&j->fut);
		return;
	}
	case FUT__WIRE_R_VALUE:
		fut__free(data);
		fut__pp_job_end(j, FUT_ENOTSUP, 0, 0,
				"a process-pool task returned a pointer "
				"(fut_task_return); return bytes instead");
		return;
	default:
		fut__free(data);
		(void)fut__future_succeed(&j->fut, NULL);
		fut_release(&j->fut);
		return;
	}
}

static void on_record(struct mgr *m, struct pp_worker *w,
		      struct fut__wire_rec *r)
{
	if (r->type == FUT__WIRE_HELLO)
		on_hello(m, w, r);
	else if (w->state != PW_READY && w->state != PW_RETIRING)
		bad_frame(m, w, "a result before its hello");
	else
		on_result(m, w, r);
	if (r->type == FUT__WIRE_HELLO && r->owned)
		fut__free(r->data);
}

/* Reads what w has sent, until the pipe is empty or at EOF. */
static void read_results(struct mgr *m, struct pp_worker *w)
{
	struct ppool *p = m->p;
	while (w->result_fd >= 0 && !w->eof) {
		struct fut__wire_rec r;
		size_t room;
		void *dst = fut__wire_dec_direct(&w->dec, &room);
		bool direct = dst != NULL && room >= DIRECT_MIN;
		ssize_t n = direct ? read(w->result_fd, dst, room) :
				     read(w->result_fd, p->stage,
					  FUT__PP_STAGE_BYTES);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			w->eof = true;
			return;
		}
		if (direct) {
			if (fut__wire_dec_direct_done(&w->dec, (size_t)n, &r) ==
			    FUT__WIRE_RECORD)
				on_record(m, w, &r);
			continue;
		}
		size_t off = 0;
		while (off < (size_t)n && !w->eof) {
			size_t used;
			int st = fut__wire_dec_feed(&w->dec, p->stage + off,
						    (size_t)n - off, &used, &r);
			off += used;
			if (st == FUT__WIRE_RECORD) {
				on_record(m, w, &r);
			} else if (st == FUT__WIRE_ENOMEM) {
				bad_frame(m, w, "no memory for its result");
			} else if (st != FUT__WIRE_MORE) {
				bad_frame(m, w, w->dec.error);
			}
		}
	}
}

/* ------------------------------------------------------------------ */
/* Control messages                                                    */

static struct pp_worker *ctl_worker(struct ppool *p,
				    const struct fut__wire_ctl *c)
{
	if (c->slot >= p->nslots)
		return NULL;
	struct pp_worker *w = &p->workers[c->slot];
	return w->gen == c->gen && w->state != PW_FREE ? w : NULL;
}

/* what: the call that failed (fork in the fork server, or ours). */
static void on_spawn_failed(struct mgr *m, struct pp_worker *w,
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
	if (!alive && p->spawn_failures >= MAX_SPAWN_FAILURES) {
		char why[128];
		snprintf(why, sizeof(why),
			 "cannot start a worker process: %s: %s", what,
			 strerror(err));
		pool_break(m, why);
	}
}

static void on_ctl(struct mgr *m, const struct fut__wire_ctl *c)
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
			(void)ctl_send(p, FUT__WIRE_CTL_KILL, w, 0, NULL);
		break;
	case FUT__WIRE_CTL_SPAWN_FAILED:
		if (w->state == PW_SPAWNING)
			on_spawn_failed(m, w,
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
		read_results(m, w);
		finalize(m, w);
		break;
	default:
		break;
	}
}

static void fs_restart(struct mgr *m);

/* Reads the fork server's messages; restarts it when it is gone. */
static void read_ctl(struct mgr *m)
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

/* The fork server died (or spoke nonsense): its workers die with it
 * (PR_SET_PDEATHSIG); each ends at the EOF of its pipe.  A new server is
 * forked from this process, as at creation. */
static void fs_restart(struct mgr *m)
{
	struct ppool *p = m->p;
	close_fd(&p->fs_sock);
	if (p->fs_pid > 0) {
		(void)kill(p->fs_pid, SIGKILL);
		while (waitpid(p->fs_pid, NULL, 0) < 0 && errno == EINTR)
			;
		p->fs_pid = 0;
	}
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_FREE)
			continue;
		if (w->state == PW_SPAWNING && w->pid == 0) {
			worker_clear(w);
			continue;
		}
		w->orphan = true;
		task_shut(w);
		w->state = PW_RETIRING;
		if (w->eof)
			finalize(m, w);
	}
	if (m->closing)
		return;
	if (++m->fs_restarts > MAX_FS_RESTARTS) {
		pool_break(m, "the fork server died too often");
		return;
	}
	int rc = fut__forkserver_start(&p->cfg, &p->fs_pid, &p->fs_sock);
	if (rc != FUT_OK) {
		char why[128];
		snprintf(why, sizeof(why),
			 "the fork server died and could not be restarted: %s",
			 strerror(errno));
		pool_break(m, why);
	}
}

/* ------------------------------------------------------------------ */
/* Breaking                                                            */

static void pool_break(struct mgr *m, const char *why)
{
	struct ppool *p = m->p;
	struct pp_job *list = NULL;
	pthread_mutex_lock(&p->lock);
	fut__pp_break_locked(p, why, &list);
	pthread_mutex_unlock(&p->lock);
	fut__pp_fail_broken(p, list);
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_FREE)
			continue;
		if (w->head != NULL)
			worker_kill(m, w, FUT_EBROKEN, true, 0);
		else
			worker_retire(w);
	}
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */

/* Hands queued work to ready workers and spawns the ones it needs.
 * Returns true when it dropped cancelled jobs: a worker may then have got
 * less than it could take, and the caller runs it again. */
static bool dispatch(struct mgr *m)
{
	size_t dropped = 0;
	struct ppool *p = m->p;
	struct pp_job *batches[FUT_MAX_WORKERS * 2];
	struct pp_worker *to[FUT_MAX_WORKERS * 2];
	size_t nb = 0;
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < p->nslots && p->qhead != NULL; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state != PW_READY || w->task_fd < 0 || w->olen != 0 ||
		    w->opay != NULL)
			continue;
		/* A second frame in flight only for bulk work (a chunk of
		 * many), so that a worker never waits between frames. */
		if (w->frames >= 2 || (w->frames == 1 && p->qhead->chunk_end))
			continue;
		size_t allowance = SIZE_MAX;
		if (p->max_tasks_per_child != 0)
			allowance = p->max_tasks_per_child - w->sent;
		if (allowance == 0)
			continue;
		batches[nb] = fut__pp_pop_batch_locked(p, allowance);
		to[nb++] = w;
	}
	size_t live = 0, coming = 0;
	for (uint32_t i = 0; i < p->nslots; i++) {
		int st = p->workers[i].state;
		if (st == PW_SPAWNING || st == PW_STARTING)
			coming++;
		if (st == PW_SPAWNING || st == PW_STARTING || st == PW_READY)
			live++;
	}
	/* The walk is bounded by max_workers chunks, and only made while the
	 * pool may still grow. */
	size_t want = 0;
	if (p->qhead != NULL && !p->broken && live < p->max_workers)
		want = fut__pp_queued_chunks_locked(p, p->max_workers);
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < nb; i++)
		dropped += fut__pp_send_batch(p, to[i], batches[i]);
	if (want == 0 || m->now < p->spawn_after_ns || p->fs_sock < 0)
		return dropped != 0;
	for (uint32_t i = 0;
	     i < p->nslots && coming < want && live < p->max_workers; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state != PW_FREE)
			continue;
		const char *what;
		int err = spawn(m, w, &what);
		if (err != 0) {
			on_spawn_failed(m, w, what, err);
			break;
		}
		coming++;
		live++;
	}
	return dropped != 0;
}

/* Retires workers that reached max_tasks_per_child. */
static void retire_spent(struct mgr *m)
{
	struct ppool *p = m->p;
	if (p->max_tasks_per_child == 0)
		return;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_READY && w->head == NULL &&
		    w->sent >= p->max_tasks_per_child)
			worker_retire(w);
	}
}

/* ------------------------------------------------------------------ */
/* Interrupts and deadlines                                            */

static void scan_interrupts(struct mgr *m, bool all)
{
	struct ppool *p = m->p;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->head == NULL || w->kill_reason != 0)
			continue;
		if (all) {
			worker_kill(m, w, FUT_ECANCELLED, true, 0);
			continue;
		}
		for (struct pp_job *j = w->head; j != NULL; j = j->next) {
			if (atomic_load(&j->fut.flags) & FUT__F_INTERRUPT) {
				worker_kill(m, w, FUT_ECANCELLED, false, j->id);
				break;
			}
		}
	}
}

/* Kills workers whose task ran over task_timeout; returns the next
 * deadline (-1: none). */
static int64_t check_deadlines(struct mgr *m)
{
	struct ppool *p = m->p;
	int64_t next = -1;
	if (p->timeout_ns == 0)
		return -1;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->head == NULL || w->kill_reason != 0)
			continue;
		struct fut__worker_slot *s = &p->slots[w->slot];
		uint64_t id =
			atomic_load_explicit(&s->started, memory_order_acquire);
		uint64_t done = atomic_load_explicit(&s->finished,
						     memory_order_acquire);
		if (id == 0 || done == id) {
			/* Between tasks: the next is due timeout_ns after it
			 * starts, so no sooner than that from now. */
			if (next < 0 || m->now + p->timeout_ns < next)
				next = m->now + p->timeout_ns;
			continue;
		}
		/* A task runs: one of w's jobs, or an earlier one whose result
		 * came back while it went on (then the jobs sent behind it
		 * wait for it, and run elsewhere once it is killed). */
		int64_t due = atomic_load_explicit(&s->started_ns,
						   memory_order_relaxed) +
			      p->timeout_ns;
		if (due <= m->now) {
			worker_kill(m, w, FUT_EDEADLINE, false, id);
			continue;
		}
		if (next < 0 || due < next)
			next = due;
	}
	return next;
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */

/* True when the manager may end: shut down, nothing queued or in flight,
 * every worker gone. */
static bool step_shutdown(struct mgr *m)
{
	struct ppool *p = m->p;
	pthread_mutex_lock(&p->lock);
	bool drained = p->shutdown && p->qhead == NULL;
	pthread_mutex_unlock(&p->lock);
	if (!drained)
		return false;
	bool busy = false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->head != NULL || w->state == PW_SPAWNING)
			busy = true;
	}
	if (busy)
		return false;
	m->closing = true;
	bool any = false;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pp_worker *w = &p->workers[i];
		if (w->state == PW_FREE)
			continue;
		if (w->task_fd >= 0)
			worker_retire(w);
		any = true;
	}
	return !any;
}

static int poll_timeout(struct mgr *m, int64_t deadline)
{
	struct ppool *p = m->p;
	if (p->spawn_after_ns > m->now &&
	    (deadline < 0 || p->spawn_after_ns < deadline))
		deadline = p->spawn_after_ns;
	if (deadline < 0)
		return -1;
	int64_t ms = (deadline - m->now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

static void loop(struct mgr *m)
{
	struct ppool *p = m->p;
	for (;;) {
		m->now = fut__now_ns();
		/* Drain, then clear: cleared first, a waker's write landing
		 * in between was drained with the flag left set, and every
		 * later waker, seeing it set, wrote nothing while we slept in
		 * poll (a lost wake-up: an interrupt after a burst of
		 * submits hung under valgrind).  Work published before a
		 * waker's flag is read below, after the clear. */
		uint64_t v;
		(void)!read(p->wake_fd, &v, sizeof(v));
		atomic_store(&p->wake_pending, false);
		pthread_mutex_lock(&p->lock);
		bool all = p->interrupt_all;
		p->interrupt_all = false;
		pthread_mutex_unlock(&p->lock);
		bool scan = atomic_exchange(&p->interrupt_scan, false);
		if (all || scan)
			scan_interrupts(m, all);
		retire_spent(m);
		if (!m->closing)
			while (dispatch(m))
				;
		if (step_shutdown(m))
			return;
		int64_t deadline = check_deadlines(m);
		size_t n = 0;
		m->pfd[n] = (struct pollfd){ p->wake_fd, POLLIN, 0 };
		m->pfd_w[n++] = NULL;
		if (p->fs_sock >= 0) {
			m->pfd[n] = (struct pollfd){ p->fs_sock, POLLIN, 0 };
			m->pfd_w[n++] = NULL;
		}
		size_t first = n;
		for (uint32_t i = 0; i < p->nslots; i++) {
			struct pp_worker *w = &p->workers[i];
			if (w->state == PW_FREE)
				continue;
			short ev = 0;
			int fd = -1;
			if (w->result_fd >= 0 && !w->eof) {
				fd = w->result_fd;
				ev = POLLIN;
			}
			if (fd >= 0) {
				m->pfd[n] = (struct pollfd){ fd, ev, 0 };
				m->pfd_w[n++] = w;
			}
			if (w->task_fd >= 0 &&
			    (w->olen != 0 || w->opay != NULL)) {
				m->pfd[n] = (struct pollfd){ w->task_fd,
							     POLLOUT, 0 };
				m->pfd_w[n++] = w;
			}
		}
		int rc = poll(m->pfd, n, poll_timeout(m, deadline));
		if (rc < 0)
			continue;
		m->now = fut__now_ns();
		bool ctl = first == 2 && m->pfd[1].revents != 0;
		for (size_t i = first; i < n && rc > 0; i++) {
			struct pp_worker *w = m->pfd_w[i];
			if (m->pfd[i].revents == 0)
				continue;
			if (m->pfd[i].events & POLLOUT)
				fut__pp_flush_out(w);
			else
				read_results(m, w);
			if (w->eof && w->orphan && w->state != PW_FREE)
				finalize(m, w);
		}
		if (ctl)
			read_ctl(m);
	}
}

static void teardown(struct ppool *p)
{
	for (uint32_t i = 0; i < p->nslots; i++) {
		fut__free(p->workers[i].obuf);
		p->workers[i].obuf = NULL;
	}
	if (p->fs_sock >= 0) {
		/* EOF: the fork server kills what is left and exits. */
		close_fd(&p->fs_sock);
		while (waitpid(p->fs_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
}

void *fut__pp_manager_main(void *arg)
{
	struct ppool *p = arg;
	fut__current_executor_set(&p->ex);
	struct mgr m = { 0 };
	m.p = p;
	m.pfd = p->pfd;
	m.pfd_w = p->pfd_w;
	loop(&m);
	teardown(p);
	pthread_mutex_lock(&p->lock);
	p->manager_done = true;
	/* The wake fd stays open until the pool is freed: a submitter that
	 * queued a job just before the shutdown may still write to it. */
	bool self_free = p->free_on_exit;
	pthread_cond_broadcast(&p->done_cv);
	pthread_mutex_unlock(&p->lock);
	if (self_free) {
		pthread_detach(pthread_self());
		fut__pp_unref(p); /* the handle's */
	}
	fut__pp_unref(p);
	return NULL;
}
