/*
 * process_pool/pool.h: the parent side of the process pool: the pool
 * object, its jobs and worker slots, and what its files call of each
 * other.  The children's files never include it (child.h is their
 * contract with the parent).  Private to the library.
 */
#ifndef FUT_PROCESS_POOL_H
#define FUT_PROCESS_POOL_H

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/child.h"
#include "process_pool/frame.h"
#include "process_pool/wire.h"

struct ppool;

/* A task and its future in one block. */
struct pp_job {
	struct fut_future fut; /* first: the caller's handle */
	struct ppool *pool;    /* one pool reference while the block lives */
	struct pp_job *next;   /* the queue or a worker's in-flight list */
	uint64_t id;	       /* given at dispatch; 0 while queued */
	/* Where its task was last sent: (slot + 1) << 32 | its claim key
	 * there (claim.c); 0 before.  Read by a cancelling thread. */
	_Atomic uint64_t ticket;
	fut_fn fn;
	size_t len;
	bool chunk_end;	 /* the last job of its frame-sized chunk */
	bool frame_last; /* in flight: the last job of its frame */
	/* It counts against max_queue: not seen started or ended yet. */
	_Atomic bool counted;
	bool slab;	  /* a recycled block (fut__slab_get) */
	uint8_t shared;	  /* PP_SHARED_* */
	uint8_t requeued; /* times it went back to the queue */
	/* 8-aligned: a short result takes the input's place and is read in
	 * place by the caller (docs/api.md, fut_result_bytes). */
	_Alignas(8) unsigned char input[];
};

/* A job's shared memory. */
enum {
	/* Its result (fut.value, fut.len) is a mapping of shared memory,
	 * unmapped when the block goes. */
	PP_SHARED_RESULT = 1,
	/* Its input (len bytes) is in a sealed memfd whose fd input[] holds
	 * (-1 once closed: when its outcome came, or it ended). */
	PP_SHARED_INPUT = 2,
};

enum {
	PW_FREE = 0, /* slot unused */
	PW_SPAWNING, /* SPAWN sent, no answer yet */
	PW_STARTING, /* pid known, hello not received */
	PW_READY,    /* took its hello: may get work */
	PW_RETIRING, /* its task channel is closed or it was killed */
};

/* A kill_id no job has: the worker is killed and none of its jobs
 * blamed (they run again elsewhere). */
#define FUT__PP_BLAME_NONE UINT64_MAX

/* One worker slot: the manager's alone, but for an open door (door.c):
 * then a submitter holding p->lock may send it one task. */
struct pp_worker {
	/* p->lock: idle while the manager sleeps, it takes one task from a
	 * submitter (door.c); the manager touches nothing of the slot
	 * until it closed the door again. */
	bool door;
	int state;
	uint32_t slot;
	uint32_t gen;
	pid_t pid;
	int task_fd;   /* our end of its task socket, -1 */
	int result_fd; /* our end of its result pipe, -1 */
	/* Our end of its task socket once nothing more goes to it (shut
	 * for writing, so the worker reads EOF): the memfds of its shared
	 * results still come over it.  -1. */
	int back_fd;
	bool eof;	      /* result pipe at EOF */
	int64_t eof_ns;	      /* when, if it had not exited then; 0: not */
	uint64_t eof_started; /* the last task it had started then */
	/* Killed for living on past that EOF before its hello (its
	 * initializer lost the pipe): a failed spawn. */
	bool pipe_lost;
	bool exited; /* the fork server reported its wait status */
	bool orphan; /* its fork server died: ends at EOF */
	int status;
	struct pp_job *head, *tail; /* in flight, in the order it runs them */
	unsigned frames;	    /* frames in flight */
	unsigned inflight;	    /* jobs in head..tail */
	/* The claim key of the next task sent: the slot's, never reset
	 * when a new worker takes the slot (claim.c). */
	uint32_t next_key;
	/* When it last sent a result, or was sent work while it had none:
	 * a worker silent for long with tasks waiting behind the one it
	 * runs has them taken back when another worker idles. */
	int64_t active_ns;
	unsigned answered;   /* results read by this fut__pp_read_results */
	uint64_t read_bytes; /* from its result pipe */
	/* Tasks sent and not taken back (each runs there, or dies with
	 * it): what max_tasks_per_child counts. */
	size_t sent;
	/* Why we killed it: 0, or the code its victim(s) end with. */
	int kill_reason;
	bool kill_all;	  /* every job in flight ends kill_reason */
	uint64_t kill_id; /* else the one job that does */
	char *bad_frame;  /* it sent a malformed frame: why */
	/* Its KILL did not fit in the fork server's socket: sent again
	 * when there is room (fut__pp_slot_resend_kills). */
	bool kill_unsent;
	/* A send to it failed, not for want of room: errno (send.c). */
	int send_errno;
	/* Output still to write: out.buf[ooff, out.len) then
	 * opay[opayoff, opaylen) (a large input, sent from the job block
	 * itself). */
	struct fut__pp_frame out;
	size_t ooff;
	const unsigned char *opay;
	size_t opaylen, opayoff;
	/* A memfd (a dup of a job's shared input) to send with the next
	 * bytes that go out; -1. */
	int ofd;
	/* The job opay points into, which w holds a reference on; NULL. */
	struct pp_job *out_job;
	struct fut__wire_dec dec;
};

struct ppool {
	struct fut_executor ex; /* first: the handle */
	_Atomic uint32_t refs;	/* handle + manager + one per job block */
	/* Set at creation. */
	size_t max_workers;
	uint32_t nslots; /* 2 * max_workers: retiring ones keep a slot */
	size_t max_tasks_per_child;
	size_t chunk; /* opts.chunk: most tasks per frame; 0: automatic */
	/* opts.max_queue (0: none): submit waits while this many tasks are
	 * not started, queued or sent ahead.  unstarted counts the jobs with
	 * counted set; room_waiters the submitters waiting on room_cv. */
	size_t max_queue;
	_Atomic size_t unstarted;
	_Atomic uint32_t room_waiters;
	/* The time a task takes, as its results come back (a moving
	 * average, ns; 0: none seen): frames hold ~FUT__PP_FRAME_NS of work
	 * (manager's). */
	int64_t task_ns;
	double timeout;	    /* task_timeout, seconds; 0: none */
	int64_t timeout_ns; /* 0: none */
	struct fut__forkserver_cfg cfg;
	struct fut__worker_slot *slots; /* shared mapping */
	size_t slots_bytes;
	int wake_fd; /* eventfd, open until the pool is freed */
	_Atomic bool wake_pending;
	_Atomic bool interrupt_scan; /* some future asked fut_interrupt */
	/* A caller cancelled a task sent to a worker: the manager drops it
	 * from the worker's list (claim.c). */
	_Atomic bool revoke_scan;
	/* Shared inputs whose memfd the pool holds open; at most
	 * FUT__PP_MAX_SHARED_INPUTS, beyond that inputs are copied. */
	_Atomic uint32_t shared_inputs;
	pthread_t manager;

	/* Taken and dropped through fut__pp_lock and fut__pp_unlock. */
	pthread_mutex_t lock;
	/* Who holds lock, for fut__pp_lock_held's asserts: kept in builds
	 * without NDEBUG only (the fields stay, so that the struct is the
	 * same in every build). */
	pthread_t lock_owner;
	bool lock_owned;
	pthread_cond_t done_cv;	      /* manager_done */
	pthread_cond_t room_cv;	      /* room under max_queue, or the end */
	struct pp_job *qhead, *qtail; /* lock */
	bool shutdown;		      /* lock */
	bool interrupt_all;	      /* lock: kill what runs */
	/* lock: shutdown(CANCEL_PENDING): tasks sent and not started are
	 * cancelled too, by the manager, which then bumps cancel_done. */
	uint64_t cancel_asked, cancel_done;
	/* lock: shut down with CANCEL_PENDING: a task not started that
	 * comes back from a worker (taken back, or its worker died) is
	 * cancelled instead of queued, since that drain is over. */
	bool cancel_pending;
	/* lock: shut down with INTERRUPT: a RUNNING task queued again (its
	 * worker died before its result came) ends FUT_ECANCELLED instead
	 * of running again (fut__pp_requeue, the manager's loop). */
	bool interrupting;
	/* lock: shutdowns cancelling the queued jobs they took out. */
	uint32_t ndraining;
	size_t doors;	   /* lock: workers whose door is open */
	uint64_t handed;   /* lock: tasks sent through a door (for tests) */
	bool broken;	   /* lock */
	char *broken_msg;  /* lock: why (may be NULL) */
	bool manager_done; /* lock */
	bool joined;	   /* lock: someone joined the manager */
	bool free_on_exit; /* lock: freed from the manager thread */

	/* The manager's own. */
	pid_t fs_pid;
	int fs_pidfd; /* -1: none (no pidfds) */
	int fs_sock;
	unsigned spawn_failures; /* in a row */
	int64_t spawn_after_ns;	 /* no spawn before (backoff) */
	uint64_t next_id;
	struct pp_worker *workers; /* [nslots] */
	unsigned char *stage;
	/* poll's set, made with the pool so that the manager thread has
	 * nothing to allocate before work comes: 2 + 2 * nslots entries. */
	struct pollfd *pfd;
	struct pp_worker **pfd_w; /* the worker of each entry, NULL */
};

/* The most memfds of shared inputs a pool holds open at once: a queue
 * of many large inputs must not fill the application's fd table. */
#define FUT__PP_MAX_SHARED_INPUTS 64u

/* Automatic frames hold about this much work (pool.h's task_ns). */
#define FUT__PP_FRAME_NS ((int64_t)2000000)
/* A worker silent this long while tasks wait behind the one it runs has
 * them taken back when another worker idles. */
#define FUT__PP_TAKE_BACK_NS ((int64_t)5000000)
/* A worker with tasks sent and none started yet is looked at again after
 * this long: it may have begun a long one meanwhile. */
#define FUT__PP_RECHECK_NS ((int64_t)1000000)
/* A worker whose result pipe gave EOF and whose exit was not reported
 * this long after lives on without it (a task closed or replaced its
 * fds): it is killed (manager.c, lost_pipes). */
#define FUT__PP_EOF_GRACE_NS ((int64_t)1000000000)

/* A task frame carries at most this many input bytes copied into it; a
 * larger input travels alone, straight from its job block. */
#define FUT__PP_FRAME_BYTES (64u * 1024u)

/* ------------------------------------------------------------------ */
/* p->lock                                                             */

static inline void fut__pp_lock(struct ppool *p)
{
	pthread_mutex_lock(&p->lock);
#ifndef NDEBUG
	p->lock_owner = pthread_self();
	p->lock_owned = true;
#endif
}

static inline void fut__pp_unlock(struct ppool *p)
{
#ifndef NDEBUG
	p->lock_owned = false;
#endif
	pthread_mutex_unlock(&p->lock);
}

/* Waits on cv, which drops p->lock meanwhile. */
static inline void fut__pp_cond_wait(struct ppool *p, pthread_cond_t *cv)
{
#ifndef NDEBUG
	p->lock_owned = false;
#endif
	pthread_cond_wait(cv, &p->lock);
#ifndef NDEBUG
	p->lock_owner = pthread_self();
	p->lock_owned = true;
#endif
}

/* Whether this thread holds p->lock (always true under NDEBUG): for
 * assert() only.  A thread that does not hold it may read the fields as
 * their holder writes them, but then the assert fails anyway. */
static inline bool fut__pp_lock_held(const struct ppool *p)
{
#ifndef NDEBUG
	return p->lock_owned && pthread_equal(p->lock_owner, pthread_self());
#else
	(void)p;
	return true;
#endif
}

/* ------------------------------------------------------------------ */
/* The manager thread's state, and what its files call of each other  */

struct pp_mgr {
	struct ppool *p;
	int64_t now;
	unsigned fs_restarts;
	bool closing; /* shut down and drained: workers are told to go */
	/* fs_sock was full: a KILL or a SPAWN waits for room (POLLOUT). */
	bool fs_full;
	int64_t take_back_at; /* manager.c's take_back_waiting; -1: none */
	/* manager.c's dispatch: when to look again at a worker it skipped
	 * inside a task whose result went early (the task's end writes
	 * nothing), and retire_spent's for such a worker that is spent;
	 * -1: none. */
	int64_t recheck_at;
	struct pollfd *pfd;
	struct pp_worker **pfd_w; /* the worker of each entry, NULL */
};

/* pool.c */
void fut__pp_unref(struct ppool *p);

/* manager.c */
void *fut__pp_manager_main(void *arg);
/* claim.c: the most tasks the next frame to w may hold (0: none now). */
size_t fut__pp_allowance(const struct ppool *p, const struct pp_worker *w);
/* Wakes the manager thread (any thread, any lock held or none): it will
 * look at the queue, the shutdown state and the interrupts again. */
void fut__pp_wake(struct ppool *p);
/* The pool is broken (why is copied): its queued jobs fail FUT_EBROKEN,
 * its workers are killed (those with jobs) or retired. */
void fut__pp_break(struct pp_mgr *m, const char *why);

/* jobs.c: job blocks, how they end, the queue.  A *_locked function
 * asserts that its caller holds p->lock. */
/* A pending job holding two references (the caller's and the queue's),
 * its len bytes of input copied into the block; NULL: out of memory. */
struct pp_job *fut__pp_job_new(struct ppool *p, fut_fn fn, const void *data,
			       size_t len);
/* The same with the input in a sealed memfd the block holds; NULL when
 * the memfd cannot be had (the caller then copies it). */
struct pp_job *fut__pp_job_new_shared(struct ppool *p, fut_fn fn,
				      const void *data, size_t len);
/* Frees a job that was never queued. */
void fut__pp_job_discard(struct pp_job *j);
/* j's shared input's fd, -1 when it has none (or it was closed). */
int fut__pp_job_input_fd(const struct pp_job *j);
/* Closes j's shared input's fd: its task will not be sent again. */
void fut__pp_job_input_close(struct pp_job *j);
/* A job cancelled before it started, out of the queue or a worker's list:
 * its input closed, uncounted, the manager's reference dropped. */
void fut__pp_job_drop(struct pp_job *j);
/* j no longer counts against max_queue (it started, or it ended): true
 * when it did.  fut__pp_uncount also wakes the submitters waiting for
 * room; fut__pp_uncount_quiet leaves that to its caller
 * (fut__pp_room_wake). */
bool fut__pp_uncount_quiet(struct pp_job *j);
void fut__pp_uncount(struct pp_job *j);
void fut__pp_room_wake(struct ppool *p);
/* Fails j with code and a formatted message, then drops the manager's
 * reference to it. */
void fut__pp_job_end(struct pp_job *j, int code, int task_code,
		     int crash_status, const char *fmt, ...) FUT_PRINTF(5, 6);
/* Fails every job of list with FUT_EBROKEN and the pool's broken text
 * (no lock held; once broken, the text never changes). */
void fut__pp_fail_broken(struct ppool *p, struct pp_job *list);
/* No worker lives and the last MAX_SPAWN_FAILURES starts failed (what:
 * the call, err: its errno or 0).  Out of fds (EMFILE, ENFILE): the
 * queued jobs end FUT_EAGAIN and the pool goes on; else it breaks. */
void fut__pp_spawn_give_up(struct pp_mgr *m, const char *what, int err);
/* FUT_OK, or why p takes no more work (FUT_ESHUTDOWN, FUT_EBROKEN). */
int fut__pp_admit_locked(const struct ppool *p);
/* Appends first..last to the queue and wakes the manager, or returns why
 * the pool takes no more work. */
int fut__pp_enqueue(struct ppool *p, struct pp_job *first, struct pp_job *last);
/* Takes the RUNNING jobs out of the queue: a list (caller holds the
 * lock). */
struct pp_job *fut__pp_take_reruns_locked(struct ppool *p);
/* Ends each job of list FUT_ECANCELLED: RUNNING, queued to run again,
 * and interrupted by a shutdown. */
void fut__pp_end_rerun(struct pp_job *list);
/* Puts first..last (in order) back at the head of the queue, or fails
 * them when the pool broke; after a shutdown(CANCEL_PENDING), cancels
 * the ones not started instead, and after a shutdown(INTERRUPT) ends the
 * RUNNING ones FUT_ECANCELLED. */
void fut__pp_requeue(struct ppool *p, struct pp_job *first,
		     struct pp_job *last);
/* The pool is broken (why is copied); every queued job is moved to *out
 * to be failed FUT_EBROKEN by the caller. */
void fut__pp_break_locked(struct ppool *p, const char *why,
			  struct pp_job **out);
/* Pops the next frame's worth of jobs (at most allowance) from the queue,
 * or NULL. */
struct pp_job *fut__pp_pop_batch_locked(struct ppool *p, size_t allowance);
/* How many chunks the queue holds, up to cap. */
size_t fut__pp_queued_chunks_locked(const struct ppool *p, size_t cap);

/* Whether w's process is inside a task (one whose result may have come
 * back already: fut_task_return_bytes sends it at once). */
static inline bool fut__pp_in_task(const struct ppool *p,
				   const struct pp_worker *w)
{
	const struct fut__worker_slot *s = &p->slots[w->slot];
	return atomic_load_explicit(&s->started, memory_order_acquire) !=
	       atomic_load_explicit(&s->finished, memory_order_acquire);
}

/* door.c: a task handed to an idle worker by its submitter, while the
 * manager sleeps. */
/* Before the manager sleeps: opens the door of every idle worker; false
 * when it opened none. */
bool fut__pp_doors_open(struct pp_mgr *m);
/* As the manager wakes, if it opened any: closes every door (the tasks
 * handed meanwhile are in their workers' lists already). */
void fut__pp_doors_close(struct pp_mgr *m);
/* Under p->lock, with j admitted: sends j to a worker whose door is open
 * when the queue is empty, and closes that door.  False: j is to be
 * queued. */
bool fut__pp_hand_off_locked(struct ppool *p, struct pp_job *j);

/* slot.c: a worker slot's life, and the fork server's. */
/* Asks the fork server for a worker in w's slot.  0, or an errno with
 * *what the call that failed (NULL: the fork server's socket was full,
 * no failure; m->fs_full is set and the slot is free again). */
int fut__pp_slot_spawn(struct pp_mgr *m, struct pp_worker *w,
		       const char **what);
/* A spawn failed (what: the call that failed; err its errno): back off,
 * and break the pool when no worker can be had. */
void fut__pp_slot_spawn_failed(struct pp_mgr *m, struct pp_worker *w,
			       const char *what, int err);
/* w's hello came. */
void fut__pp_slot_hello(struct pp_mgr *m, struct pp_worker *w,
			const struct fut__wire_rec *r);
/* Kills w's process group; its job(s) will end with reason: every job in
 * flight (all), or the one with that id. */
void fut__pp_slot_kill(struct pp_mgr *m, struct pp_worker *w, int reason,
		       bool all, uint64_t id);
/* Sends again the KILLs that found the fork server's socket full, and
 * clears m->fs_full (a SPAWN that did not fit is the next dispatch's). */
void fut__pp_slot_resend_kills(struct pp_mgr *m);
/* Tells w to exit once it has answered what it has. */
void fut__pp_slot_retire(struct pp_worker *w);
/* Sends w nothing more: EOF on its input (its socket stays, for the fds
 * it sends back). */
void fut__pp_task_shut(struct pp_worker *w);
/* w is dead and its results are read: settles every job it had and frees
 * the slot. */
void fut__pp_slot_finalize(struct pp_mgr *m, struct pp_worker *w);
/* Reads the fork server's messages; restarts it when it is gone. */
void fut__pp_fs_read(struct pp_mgr *m);

/* recv.c: result frames in. */
/* Reads what w has sent, until its pipe is empty or at EOF. */
void fut__pp_read_results(struct pp_mgr *m, struct pp_worker *w);
/* w sent what it should not have (why): it is killed, its jobs crash. */
void fut__pp_bad_frame(struct pp_mgr *m, struct pp_worker *w, const char *why);
/* Kills the workers that live on long after their result pipe gave EOF;
 * returns when to look again (-1: never). */
int64_t fut__pp_lost_pipes(struct pp_mgr *m);

/* send.c: task frames out. */
/* Whether w has output not yet written. */
static inline bool fut__pp_out_pending(const struct pp_worker *w)
{
	return w->out.len != 0 || w->opay != NULL;
}
/* Drops what w has not been sent yet: nothing more goes to it. */
void fut__pp_out_drop(struct pp_worker *w);
/* Writes what w has pending, as far as its socket takes it now (a worker
 * gone leaves its EXITED to settle its jobs). */
void fut__pp_flush_out(struct ppool *p, struct pp_worker *w);
/* Claims, encodes and sends the jobs popped for w (batch, in order):
 * returns how many it did not send, cancelled while queued or ended
 * here (interrupted, no fd or no memory for it): the caller dispatches
 * again, as nothing from w may come for the jobs queued behind them. */
size_t fut__pp_send_batch(struct ppool *p, struct pp_worker *w,
			  struct pp_job *batch);
/* A submitter's hand-off through w's open door, under p->lock: j (new,
 * small, its input in its block) is claimed, encoded and sent alone.
 * False when there was no memory for the frame: nothing changed. */
bool fut__pp_send_one(struct ppool *p, struct pp_worker *w, struct pp_job *j);

/* claim.c: tasks sent ahead, until their worker claims them. */
/* Gives j, about to be sent to w, its claim key there, SENT. */
void fut__pp_claim_sent(struct ppool *p, struct pp_worker *w, struct pp_job *j);
/* Takes j's task back if its worker has not claimed it: FUT__REVOKED,
 * FUT__STARTED or FUT__MOVED (it was sent elsewhere since); any thread. */
int fut__pp_claim_revoke(struct ppool *p, const struct pp_job *j);
/* Whether j's worker claimed it; any thread. */
bool fut__pp_claim_started(struct ppool *p, const struct pp_job *j);
/* Drops the jobs at w's head that were taken back: they will send no
 * result. */
void fut__pp_purge(struct pp_mgr *m, struct pp_worker *w);
/* Takes back every job sent to w that it has not claimed: they go back
 * to the head of the queue, or are cancelled (cancel).  How many. */
size_t fut__pp_take_back(struct pp_mgr *m, struct pp_worker *w, bool cancel);
/* Unlinks j from w's list (prev: the job before it, NULL at the head). */
void fut__pp_unlink(struct pp_worker *w, struct pp_job *prev, struct pp_job *j);

/* shared.c: results in shared memory. */
/* The memfd w sent before its R_SHARED record: -1 with errno set (EMFILE:
 * no fd free to take it in; EPROTO: none came).  *foreign: a task's
 * message came first, skipped (its fds closed): replace w. */
int fut__pp_take_fd(struct ppool *p, struct pp_worker *w, bool *foreign);
/* Completes j with the len bytes of the sealed memfd fd (which it closes),
 * mapped read-only, or fails j; drops the manager's reference to j. */
void fut__pp_complete_shared(struct pp_job *j, int fd, uint64_t len);

#endif /* FUT_PROCESS_POOL_H */
