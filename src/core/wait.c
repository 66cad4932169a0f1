/*
 * wait.c: waiting on many futures: fut_wait() and fut_as_completed_*.
 *
 * Owns: the wait context of one fut_wait() call and the as_completed
 * iterator (its nodes, its ready list, its pollable eventfd).
 * Threads: any thread waits; the notify functions run in whichever thread
 * completes a future, under that future's lock.
 * Locks: future lock -> iterator lock (it->lock guards the ready list,
 * nready's increments and the eventfd level).  Everything else in the
 * iterator belongs to the one thread using it.
 *
 * Design.  A wait registers nodes on pending futures and sleeps on one
 * futex word of its own.  A completing future notifies each node under
 * its lock; the node does O(1) work (a counter, a list push) and wakes the
 * waiter only when the waiter's condition now holds.  fut_wait for the
 * first of N futures registers a node on each; fut_wait for all of them
 * registers at most WAIT_CHUNK at a time, the last pending ones first
 * (wait_all), and N futures that complete in order cost one wake-up.  An
 * as_completed iterator is woken at most once per yielded future (and
 * only while it sleeps).  Nothing polls, nothing sleeps for a fixed time.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"

/* ------------------------------------------------------------------ */
/* fut_wait                                                            */

struct wait_ctx {
	struct fut__park park;
	_Atomic uint32_t fired; /* futex word: 1 once the condition holds */
	_Atomic size_t pending; /* entries not yet done */
	int return_when;
	fut_future *const *fs;
	size_t n;
	size_t cursor; /* assist: the next future to try running inline */
};

struct wait_node {
	struct fut__waiter w;
	struct wait_ctx *ctx;
	fut_future *f;
};

static bool valid_return_when(int rw)
{
	return rw == FUT_FIRST_COMPLETED || rw == FUT_FIRST_EXCEPTION ||
	       rw == FUT_ALL_COMPLETED;
}

/* Whether one more done future (f; `left` entries still pending) makes
 * the condition hold. */
static bool condition_met(int return_when, const fut_future *f, size_t left)
{
	if (left == 0 || return_when == FUT_FIRST_COMPLETED)
		return true;
	return return_when == FUT_FIRST_EXCEPTION && fut__future_failed(f);
}

static bool condition_holds(fut_future *const *fs, size_t n, int return_when)
{
	size_t done = 0;
	for (size_t i = 0; i < n; i++) {
		if (!fut_done(fs[i])) {
			/* One pending future settles ALL_COMPLETED: a wait on
			 * 100,000 futures read them all here (W-MPI2). */
			if (return_when == FUT_ALL_COMPLETED)
				return false;
			continue;
		}
		done++;
		if (condition_met(return_when, fs[i], n - done))
			return true;
	}
	return done == n;
}

/* Called under the future's lock when it completes. */
static void wait_notify(struct fut__waiter *w, fut_future *f)
{
	struct wait_ctx *ctx = fut__container_of(w, struct wait_node, w)->ctx;
	size_t left = atomic_fetch_sub_explicit(&ctx->pending, 1,
						memory_order_acq_rel) -
		      1;
	if (condition_met(ctx->return_when, f, left) &&
	    atomic_exchange_explicit(&ctx->fired, 1, memory_order_release) == 0)
		fut__futex_wake(&ctx->fired, 1);
}

static bool wait_ready(struct fut__park *p)
{
	struct wait_ctx *ctx = fut__container_of(p, struct wait_ctx, park);
	return atomic_load_explicit(&ctx->fired, memory_order_acquire) != 0;
}

static bool wait_arm(struct fut__park *p, uint32_t *expected)
{
	*expected = 0;
	return !wait_ready(p);
}

/* Runs a still-queued task of one of the futures in this thread. */
static bool wait_assist(struct fut__park *p)
{
	struct wait_ctx *ctx = fut__container_of(p, struct wait_ctx, park);
	for (; ctx->cursor < ctx->n; ctx->cursor++) {
		fut_future *f = ctx->fs[ctx->cursor];
		if (fut_done(f) || f->ops == NULL || f->ops->assist == NULL)
			continue;
		if (f->ops->assist(f))
			return true;
	}
	return false;
}

_Static_assert(FUT_MAX_COUNT <= SIZE_MAX / sizeof(struct wait_node),
	       "a wait's nodes for FUT_MAX_COUNT futures must not overflow");

/* A wait for fs[0..n) under `return_when`, its nodes not yet armed;
 * assist: queued tasks of fs may run inline while it waits. */
static void ctx_init(struct wait_ctx *ctx, fut_future *const *fs, size_t n,
		     int return_when, bool no_spin, bool assist)
{
	*ctx = (struct wait_ctx){
		.park = { .ready = wait_ready,
			  /* Only where every future must be done anyway:
			   * running one inline must not delay a return
			   * that another's completion would allow. */
			  .assist = assist && return_when == FUT_ALL_COMPLETED ?
					    wait_assist :
					    NULL,
			  .arm = wait_arm,
			  .word = &ctx->fired,
			  .no_spin = no_spin },
		.return_when = return_when,
		.fs = fs,
		.n = n,
	};
	atomic_init(&ctx->fired, 0);
}

/* Registers nodes[0..k) (each node's f set) for ctx, counted pending
 * first; a future done before its node is linked is counted at once.
 * Stops once the condition holds.  Returns how many were registered. */
static size_t arm_nodes(struct wait_ctx *ctx, struct wait_node *nodes, size_t k)
{
	atomic_init(&ctx->pending, k);
	size_t registered = 0;
	for (; registered < k; registered++) {
		struct wait_node *node = &nodes[registered];
		node->ctx = ctx;
		node->w.notify = wait_notify;
		node->w.pprev = NULL;
		if (fut__future_register(node->f, &node->w))
			continue;
		wait_notify(&node->w, node->f);
		if (wait_ready(&ctx->park))
			return registered + 1;
	}
	return registered;
}

static void disarm_nodes(struct wait_node *nodes, size_t registered)
{
	for (size_t i = 0; i < registered; i++)
		fut__future_unregister(nodes[i].f, &nodes[i].w);
}

/*
 * ALL_COMPLETED, with no memory of its own: it waits on at most
 * WAIT_CHUNK futures at a time, the pending ones nearest the end first,
 * then goes on down from the lowest of them.  Futures of a pool complete
 * about in the order they were submitted, so the last ones are the last
 * to finish, and a wait on a million futures registers 16 nodes and
 * sleeps once (a node per future cost a wait on 100,000 futures 4 MB of
 * fresh memory: docs/perf-log.md).  Futures that complete in the reverse
 * order cost a wake-up per WAIT_CHUNK.  Each future is looked at about
 * once: below the chunk, a future is done or waited on later.
 */
#define WAIT_CHUNK 16u

static int wait_all(fut_future *const *fs, size_t n, int64_t deadline,
		    bool no_spin, bool assist)
{
	struct wait_node nodes[WAIT_CHUNK];
	size_t top = n; /* fs[top..n) are done */
	size_t cursor = 0;
	for (;;) {
		size_t k = 0;
		size_t low = top;
		while (low > 0 && k < WAIT_CHUNK) {
			low--;
			if (!fut_done(fs[low]))
				nodes[k++].f = fs[low];
		}
		if (k == 0)
			return FUT_OK;
		struct wait_ctx ctx;
		/* The assist may run any still-queued task below the top. */
		ctx_init(&ctx, fs, top, FUT_ALL_COMPLETED, no_spin, assist);
		ctx.cursor = cursor < top ? cursor : 0;
		size_t registered = arm_nodes(&ctx, nodes, k);
		int rc = fut__park_wait(&ctx.park, deadline);
		disarm_nodes(nodes, registered);
		cursor = ctx.cursor;
		if (rc == FUT_ETIMEDOUT &&
		    condition_holds(fs, n, FUT_ALL_COMPLETED))
			return FUT_OK;
		if (rc != FUT_OK)
			return rc;
		top = low;
	}
}

/* In an executor's thread (elsewhere runs_here is never true): one not done
 * runs here and all must be done, or all not done run here.  It stops at
 * the first future that decides it. */
static bool waits_for_itself(fut_future *const *fs, size_t n, int rw)
{
	bool all = rw == FUT_ALL_COMPLETED, here = false;
	for (size_t i = 0; i < n; i++) {
		if (fut_done(fs[i]))
			continue;
		here = fut__future_runs_here(fs[i]);
		if (here == all)
			return all;
	}
	return here;
}

int fut_wait(fut_future *const *fs, size_t n, int return_when, double timeout)
{
	if ((fs == NULL && n != 0) || !valid_return_when(return_when) ||
	    n > FUT_MAX_COUNT)
		return FUT_EINVAL;
	/* Sleep at once only where every future asks it; run queued tasks
	 * inline only where one of them can (else the assist would read
	 * every future once more for nothing: W-MPI2's 100,000). */
	bool no_spin = n != 0, assist = false;
	for (size_t i = 0; i < n; i++) {
		if (!fut__future_ok(fs[i]))
			return FUT_EINVAL;
		const struct fut__future_ops *ops = fs[i]->ops;
		no_spin = no_spin && ops != NULL && ops->no_spin;
		assist = assist || (ops != NULL && ops->assist != NULL);
	}
	if (condition_holds(fs, n, return_when))
		return FUT_OK;
	int64_t deadline = fut__deadline_ns(timeout);
	if (deadline >= 0 && fut__now_ns() >= deadline)
		return FUT_ETIMEDOUT;
	if (deadline < 0 && fut__current_executor() != NULL &&
	    waits_for_itself(fs, n, return_when))
		return condition_holds(fs, n, return_when) ? FUT_OK :
							     FUT_EINVAL;
	if (return_when == FUT_ALL_COMPLETED)
		return wait_all(fs, n, deadline, no_spin, assist);

	/* The first of them: a node on every one. */
	struct wait_node local[16];
	struct wait_node *nodes = local;
	if (n > sizeof(local) / sizeof(local[0])) {
		nodes = fut__malloc(n * sizeof(*nodes));
		if (nodes == NULL)
			return FUT_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		nodes[i].f = fs[i];
	struct wait_ctx ctx;
	ctx_init(&ctx, fs, n, return_when, no_spin, false);
	size_t registered = arm_nodes(&ctx, nodes, n);
	int rc = fut__park_wait(&ctx.park, deadline);
	disarm_nodes(nodes, registered);
	if (nodes != local)
		fut__free(nodes);
	if (rc == FUT_ETIMEDOUT && condition_holds(fs, n, return_when))
		rc = FUT_OK;
	return rc;
}

/* ------------------------------------------------------------------ */
/* as_completed                                                        */

#define AC_MAGIC 0x41534330u /* "ASC0" */

struct ac_node {
	struct fut__waiter w;
	fut_as_completed *it;
	fut_future *f; /* the iterator's own reference */
	struct ac_node *ready_next;
};

struct fut_as_completed {
	uint32_t magic;
	fut__lock lock;		   /* guards ready_*, raised, fd writes */
	_Atomic uint32_t seq;	   /* futex word: bumped by every push */
	_Atomic uint32_t sleeping; /* the owner sleeps on seq */
	_Atomic size_t nready;	   /* length of the ready list */
	struct ac_node *ready_head, *ready_tail;
	int fd;	     /* eventfd, -1 until asked for */
	bool raised; /* the eventfd counter is non-zero */
	/* fut__fork_gen() when fd was made: in a fork child fd is the
	 * parent's eventfd (one counter), replaced before it is touched. */
	uint32_t fd_gen;
	dev_t fd_dev; /* the eventfd's, to know it in a fork child */
	ino_t fd_ino;
	/* The owner's: an open-addressing set of every node, by future. */
	struct ac_node **table;
	size_t cap, count, yielded;
	struct fut__park park;
};

/* Notes the identity of it->fd, the iterator's own eventfd. */
static void note_fd(fut_as_completed *it)
{
	struct stat st;
	it->fd_dev = 0;
	it->fd_ino = 0;
	if (it->fd >= 0 && fstat(it->fd, &st) == 0) {
		it->fd_dev = st.st_dev;
		it->fd_ino = st.st_ino;
	}
}

/* Whether it->fd, inherited by a fork child, still holds an eventfd:
 * the child may have closed it and opened a file of its own under that
 * number (a daemon's log), which is the child's to keep (found by review,
 * 2026-12-07: replaced, or closed by the free).  Every anonymous-inode
 * fd (eventfd, epoll, timerfd, signalfd) has one inode: /proc names the
 * kind, where it can be read.  An eventfd of the child's own there
 * cannot be told from it. */
static bool fd_still_ours(const fut_as_completed *it)
{
	struct stat st;
	if (fstat(it->fd, &st) != 0 || st.st_dev != it->fd_dev ||
	    st.st_ino != it->fd_ino)
		return false;
	char path[32], link[32];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", it->fd);
	static const char kind[] = "anon_inode:[eventfd]";
	ssize_t n = readlink(path, link, sizeof(link));
	return n < 0 || ((size_t)n == sizeof(kind) - 1 &&
			 memcmp(link, kind, sizeof(kind) - 1) == 0);
}

/*
 * In a fork child, an iterator made in the parent has the parent's
 * eventfd: reading or writing it would move the parent's level.  A fresh
 * one takes its place under the same number (dup3), cleared; or under a
 * number of its own where this process closed the parent's (a
 * process-pool worker: fut__fd_lost).  False (fd left alone) when none
 * can be had; the next call tries again.  Caller holds it->lock.
 */
static bool own_fd(fut_as_completed *it)
{
	uint32_t gen = fut__fork_gen();
	if (FUT__LIKELY(it->fd_gen == gen))
		return true;
	int fresh = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fresh < 0)
		return false;
	if (fut__fd_lost(it->fd_gen) || fresh == it->fd || !fd_still_ours(it)) {
		/* A process-pool worker closed the parent's fd as it started,
		 * and the number may be its own channel's now: the fresh fd
		 * keeps its own number.  Or the child closed the parent's fd
		 * (a daemon closes every fd), and the fresh one took its
		 * number: dup3 onto itself would fail; or another file of
		 * the child's took it. */
		it->fd = fresh;
		note_fd(it);
	} else {
		int r;
		do
			r = dup3(fresh, it->fd, O_CLOEXEC);
		while (r < 0 && errno == EINTR);
		(void)close(fresh);
		if (r < 0)
			return false;
	}
	it->raised = false;
	it->fd_gen = gen;
	return true;
}

/* Makes the eventfd readable or not; caller holds it->lock. */
static void set_level(fut_as_completed *it, bool readable)
{
	assert(fut__lock_held(&it->lock));
	if (it->fd < 0 || !own_fd(it) || readable == it->raised)
		return;
	uint64_t v = 1;
	ssize_t r;
	if (readable) {
		do
			r = write(it->fd, &v, sizeof(v));
		while (r < 0 && errno == EINTR);
	} else {
		do
			r = read(it->fd, &v, sizeof(v));
		while (r < 0 && errno == EINTR);
	}
	it->raised = readable;
}

static bool exhausted(const fut_as_completed *it)
{
	return it->yielded == it->count;
}

/* Appends node to the ready list and wakes the owner if it sleeps. */
static void push_ready(fut_as_completed *it, struct ac_node *node)
{
	fut__lock_acquire(&it->lock);
	node->ready_next = NULL;
	if (it->ready_tail != NULL)
		it->ready_tail->ready_next = node;
	else
		it->ready_head = node;
	it->ready_tail = node;
	atomic_fetch_add_explicit(&it->nready, 1, memory_order_seq_cst);
	set_level(it, true);
	atomic_fetch_add_explicit(&it->seq, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&it->sleeping, memory_order_seq_cst))
		fut__futex_wake(&it->seq, 1);
	fut__lock_release(&it->lock);
}

static void ac_notify(struct fut__waiter *w, fut_future *f)
{
	(void)f;
	struct ac_node *node = fut__container_of(w, struct ac_node, w);
	push_ready(node->it, node);
}

static bool ac_ready(struct fut__park *p)
{
	fut_as_completed *it = fut__container_of(p, fut_as_completed, park);
	return atomic_load_explicit(&it->nready, memory_order_seq_cst) != 0;
}

static bool ac_arm(struct fut__park *p, uint32_t *expected)
{
	fut_as_completed *it = fut__container_of(p, fut_as_completed, park);
	atomic_store_explicit(&it->sleeping, 1, memory_order_seq_cst);
	*expected = atomic_load_explicit(&it->seq, memory_order_seq_cst);
	return !ac_ready(p);
}

static size_t slot_of(const fut_as_completed *it, const fut_future *f)
{
	size_t h = (size_t)(uintptr_t)f;
	h ^= h >> 17;
	h *= (size_t)0x9e3779b97f4a7c15ull;
	size_t i = (h >> 7) & (it->cap - 1);
	while (it->table[i] != NULL && it->table[i]->f != f)
		i = (i + 1) & (it->cap - 1);
	return i;
}

/* Makes room for one more node in the set. */
static int grow(fut_as_completed *it)
{
	if ((it->count + 1) * 2 <= it->cap)
		return FUT_OK;
	size_t cap = it->cap ? it->cap * 2 : 16;
	if (cap > SIZE_MAX / sizeof(*it->table))
		return FUT_ENOMEM;
	struct ac_node **table = fut__calloc(cap, sizeof(*table));
	if (table == NULL)
		return FUT_ENOMEM;
	struct ac_node **old = it->table;
	size_t old_cap = it->cap;
	it->table = table;
	it->cap = cap;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i] != NULL)
			it->table[slot_of(it, old[i]->f)] = old[i];
	fut__free(old);
	return FUT_OK;
}

static int add_one(fut_as_completed *it, fut_future *f)
{
	if (it->cap != 0 && it->table[slot_of(it, f)] != NULL)
		return FUT_OK; /* already there */
	if (grow(it) != FUT_OK)
		return FUT_ENOMEM;
	struct ac_node *node = fut__malloc(sizeof(*node));
	if (node == NULL)
		return FUT_ENOMEM;
	/* A checked reference, as fut_retain's: iterators are as many as the
	 * caller makes, and the unchecked room is the library's own (found
	 * by review, 2026-12-07: 65,537 iterators on a future retained to
	 * the bound wrapped its count). */
	if (fut_retain(f) == NULL) {
		fut__free(node);
		return FUT_ENOMEM;
	}
	node->it = it;
	node->f = f;
	node->w.notify = ac_notify;
	node->w.pprev = NULL;
	it->table[slot_of(it, f)] = node;
	fut__lock_acquire(&it->lock);
	it->count++;
	set_level(it, it->ready_head != NULL); /* no longer exhausted */
	fut__lock_release(&it->lock);
	if (!fut__future_register(f, &node->w))
		push_ready(it, node);
	return FUT_OK;
}

int fut_as_completed_new(fut_as_completed **out, fut_future *const *fs,
			 size_t n)
{
	if (out == NULL)
		return FUT_EINVAL;
	*out = NULL;
	if ((fs == NULL && n != 0) || n > FUT_MAX_COUNT)
		return FUT_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!fut__future_ok(fs[i]))
			return FUT_EINVAL;
	fut_as_completed *it = fut__calloc(1, sizeof(*it));
	if (it == NULL)
		return FUT_ENOMEM;
	it->magic = AC_MAGIC;
	it->fd = -1;
	it->park.ready = ac_ready;
	it->park.arm = ac_arm;
	it->park.word = &it->seq;
	for (size_t i = 0; i < n; i++) {
		if (add_one(it, fs[i]) != FUT_OK) {
			fut_as_completed_free(it);
			return FUT_ENOMEM;
		}
	}
	*out = it;
	return FUT_OK;
}

static bool ac_ok(const fut_as_completed *it)
{
	return it != NULL && it->magic == AC_MAGIC;
}

/* Whether every future not yet yielded runs here, as fut_wait's.  It
 * stops at the first that does not: the tail of an iteration, few
 * pending at random places, reads about cap / pending slots a call. */
static bool ac_self(const fut_as_completed *it)
{
	size_t here = 0;
	for (size_t i = 0; i < it->cap; i++) {
		struct ac_node *node = it->table[i];
		if (node == NULL || fut_done(node->f))
			continue;
		if (!fut__future_runs_here(node->f))
			return false;
		here++;
	}
	return here != 0 && here == it->count - it->yielded;
}

int fut_as_completed_next(fut_as_completed *it, double timeout,
			  fut_future **out)
{
	if (out != NULL)
		*out = NULL;
	if (!ac_ok(it) || out == NULL)
		return FUT_EINVAL;
	int64_t deadline = fut__deadline_ns(timeout);
	for (;;) {
		fut__lock_acquire(&it->lock);
		struct ac_node *node = it->ready_head;
		if (node != NULL) {
			it->ready_head = node->ready_next;
			if (it->ready_head == NULL)
				it->ready_tail = NULL;
			atomic_fetch_sub_explicit(&it->nready, 1,
						  memory_order_seq_cst);
			it->yielded++;
			set_level(it, it->ready_head != NULL || exhausted(it));
			fut__lock_release(&it->lock);
			*out = node->f;
			return FUT_OK;
		}
		bool end = exhausted(it);
		fut__lock_release(&it->lock);
		if (end)
			return FUT_END;
		if (deadline < 0 && fut__current_executor() != NULL &&
		    ac_self(it))
			return FUT_EINVAL;
		int rc = fut__park_wait(&it->park, deadline);
		atomic_store_explicit(&it->sleeping, 0, memory_order_relaxed);
		if (rc != FUT_OK)
			return rc;
	}
}

int fut_as_completed_add(fut_as_completed *it, fut_future *f)
{
	if (!ac_ok(it) || !fut__future_ok(f))
		return FUT_EINVAL;
	return add_one(it, f);
}

int fut_as_completed_fd(fut_as_completed *it)
{
	if (!ac_ok(it))
		return -1;
	fut__lock_acquire(&it->lock);
	if (it->fd < 0) {
		it->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		it->raised = false;
		it->fd_gen = fut__fork_gen();
		note_fd(it);
	}
	/* Also a fork child's first call: its own eventfd, at its level. */
	set_level(it, it->ready_head != NULL || exhausted(it));
	/* A fork child that could not make its own (errno set): not the
	 * parent's, whose level is not ours (found by review, 2026-12-07). */
	int fd = it->fd_gen == fut__fork_gen() ? it->fd : -1;
	int err = errno;
	fut__lock_release(&it->lock);
	errno = err;
	return fd;
}

void fut_as_completed_free(fut_as_completed *it)
{
	if (!ac_ok(it))
		return;
	/* First stop every notification, then free: a node still on the ready
	 * list is where the next notified node would be appended. */
	for (size_t i = 0; i < it->cap; i++)
		if (it->table[i] != NULL)
			fut__future_unregister(it->table[i]->f,
					       &it->table[i]->w);
	for (size_t i = 0; i < it->cap; i++) {
		struct ac_node *node = it->table[i];
		if (node == NULL)
			continue;
		fut_release(node->f);
		fut__free(node);
	}
	fut__free(it->table);
	if (it->fd >= 0 && !fut__fd_lost(it->fd_gen) &&
	    (it->fd_gen == fut__fork_gen() || fd_still_ours(it)))
		close(it->fd);
	it->magic = 0;
	fut__free(it);
}
