/*
 * internal.h: private to libfuture; never installed.
 *
 * The contract between the modules: the allocation wrapper (alloc.c), time
 * and futex primitives (sync.c), the future's insides (future.c), the task
 * record (task.c) and the executor vtable (executor.c) that the thread pool
 * and the process pool implement.  Internal names shared across files are
 * fut__<module>_<verb>; everything else is static.  The library is built
 * with -fvisibility=hidden, so none of these leave libfuture.so.
 *
 * Lock order (docs/design.md has the picture): an executor's own locks ->
 * a future's lock -> an as_completed iterator's lock.  No library lock is
 * ever held while user code (tasks, callbacks, initializers) runs.
 */
#ifndef FUT_INTERNAL_H
#define FUT_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "future.h"

#define FUT__UNUSED __attribute__((unused))
/*
 * The few internals that libfuture-mpi (src/mpi/) links from libfuture.so:
 * they leave it in the version node LIBFUTURE_PRIVATE_<version> of
 * libfuture.map, so that an MPI library built against another version of
 * the core fails at load time, never at run time.  They are no API:
 * tests/check_exports.sh pins the list.
 */
#define FUT__PRIVATE __attribute__((visibility("default")))
#define FUT__LIKELY(x) __builtin_expect(!!(x), 1)
#define FUT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define fut__container_of(ptr, type, member)                                   \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ------------------------------------------------------------------ */
/* alloc.c: every allocation of the library goes through here.          */

FUT__PRIVATE void *fut__malloc(size_t n);
/* n bytes aligned to `align` (a power of two, a multiple of the pointer
 * size); freed with fut__free. */
void *fut__malloc_aligned(size_t align, size_t n);
/* As fut__malloc_aligned, for work a thread does in the background (a
 * slab made ready ahead of need): no injected failure and no count, so
 * that a test that fails or counts the allocations of one call never
 * sees it. */
void *fut__malloc_aligned_background(size_t align, size_t n);
FUT__PRIVATE void *fut__calloc(size_t n, size_t size);
FUT__PRIVATE void *fut__realloc(void *p, size_t n);
FUT__PRIVATE void fut__free(void *p);
FUT__PRIVATE char *fut__strdup(const char *s);
/* A new string formatted from fmt (NULL when out of memory). */
FUT__PRIVATE char *fut__vasprintf(const char *fmt, va_list ap);

/* Test hook: the n-th allocation from now fails (1: the next one), every
 * later one succeeds; 0 disables.  Returns the countdown it replaces: 0
 * when the failure set before was injected (or none was set), else how
 * many allocations were still due before it. */
FUT__PRIVATE long fut__alloc_fail_nth(long n);

/* ------------------------------------------------------------------ */
/* sync.c: the clock, futexes, a 4-byte lock, and the one wait loop.    */

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t fut__now_ns(void);
/* A relative timeout in seconds to an absolute deadline; -1: forever
 * (negative timeouts and NaN), now for 0. */
int64_t fut__deadline_ns(double timeout);

/* Sleeps while *word == expected, until woken or the deadline (-1:
 * forever).  Returns 0, or FUT_ETIMEDOUT once the deadline has passed.
 * Spurious returns happen: callers loop. */
int fut__futex_wait(_Atomic uint32_t *word, uint32_t expected,
		    int64_t deadline_ns);
/* Wakes up to n sleepers on word (INT32_MAX: all). */
void fut__futex_wake(_Atomic uint32_t *word, int n);

void fut__cpu_relax(void);
/* Online cpus, at least 1 (cached). */
int fut__ncpus(void);

/* A 4-byte mutex (futex based: 0 free, 1 locked, 2 locked with sleepers).
 * Zero-initialised is unlocked. */
typedef struct fut__lock {
	_Atomic uint32_t word;
} fut__lock;
/* The contended paths, out of line. */
void fut__lock_acquire_slow(fut__lock *l);
void fut__lock_wake(fut__lock *l);

static inline void fut__lock_acquire(fut__lock *l)
{
	uint32_t c = 0;
	if (FUT__UNLIKELY(!atomic_compare_exchange_strong_explicit(
		    &l->word, &c, 1, memory_order_acquire,
		    memory_order_relaxed)))
		fut__lock_acquire_slow(l);
}

static inline void fut__lock_release(fut__lock *l)
{
	if (FUT__UNLIKELY(atomic_exchange_explicit(&l->word, 0,
						   memory_order_release) == 2))
		fut__lock_wake(l);
}
#define fut__lock_held(l)                                                      \
	(atomic_load_explicit(&(l)->word, memory_order_relaxed) != 0)

/*
 * Per-thread wait hooks.  An executor installs them in its own threads so
 * that a task which waits (fut_result, fut_wait, as_completed) without a
 * deadline does not hold up the executor's other work meanwhile:
 * - block(ctx) is called once, before the thread first sleeps in such a
 *   wait: the executor may hand the thread's place (its slot) to another
 *   thread.  A code other than FUT_OK ends the wait with that code (the
 *   executor could not keep its queue moving: FUT_EAGAIN);
 * - unblock(ctx) once when that wait ends, whatever ended it: the thread
 *   takes its place back (it may sleep until one is free).
 * Timed waits call neither: they keep their place, as any blocking call.
 */
struct fut__wait_hooks {
	int (*block)(void *ctx);
	void (*unblock)(void *ctx);
	void *ctx;
};
/* Installs (or with NULL removes) this thread's hooks. */
void fut__wait_hooks_set(const struct fut__wait_hooks *hooks);
const struct fut__wait_hooks *fut__wait_hooks_get(void);

/*
 * The one wait loop every blocking call of the library uses.
 * ready(p) says whether the condition holds; assist(p), when not NULL, may
 * make progress itself (run the awaited task inline, in an executor's own
 * thread) and returns true if it did; arm(p, &expected) prepares to sleep
 * and returns false if the condition became true meanwhile, else
 * *expected is the value *p->word has while the condition is false.  The
 * loop: check, assist (only without a deadline, and only before the
 * thread's block hook ran), spin a bounded while (only with more than one
 * cpu), then block (once, without a deadline) and sleep on the futex until
 * woken or the deadline.  FUT_OK, FUT_ETIMEDOUT, or the block hook's code.
 */
struct fut__park {
	bool (*ready)(struct fut__park *p);
	bool (*assist)(struct fut__park *p);
	bool (*arm)(struct fut__park *p, uint32_t *expected);
	_Atomic uint32_t *word;
};
int fut__park_wait(struct fut__park *p, int64_t deadline_ns);

/* How long a waiter spins before it sleeps (ns); 0 on one cpu. */
#define FUT__SPIN_NS 20000
/* How many times a thread polls a future another thread is completing
 * before it sleeps until that thread publishes. */
#define FUT__COMPLETING_SPINS 100

/* ------------------------------------------------------------------ */
/* future.c: the future.                                                */

/* The state word: low 3 bits the state, higher bits flags. */
enum {
	FUT__S_PENDING = 0,
	FUT__S_RUNNING = 1,
	FUT__S_COMPLETING = 2, /* one completer owns the result fields */
	FUT__S_CANCELLED = 3,
	FUT__S_FINISHED = 4,
	FUT__S_MASK = 7,
	FUT__S_SLEEPERS = 8, /* a thread sleeps on the state word */
	FUT__S_LISTED = 16,  /* the waiter list is not empty */
};
#define FUT__S_DONE(s)                                                         \
	(((s)&FUT__S_MASK) == FUT__S_CANCELLED ||                              \
	 ((s)&FUT__S_MASK) == FUT__S_FINISHED)

/* The flags word. */
enum {
	FUT__F_INTERRUPT = 1, /* fut_interrupt() asked the task to stop */
	FUT__F_BYTES = 2,     /* value is a byte buffer the future owns */
	/* A thread-pool job holds fut_submit_bytes' input (thread_pool.h). */
	FUT__F_INPUT = 4,
};

#define FUT__FUTURE_MAGIC 0x4655u /* "FU" */

/*
 * A waiter: a node linked into a pending future's list.  notify(w, f) runs
 * when f completes, with f's lock held: it must be short and must not call
 * user code or take any lock but an iterator's.  notify == NULL marks a
 * done callback node, which the completer unlinks and runs after dropping
 * the lock.
 */
struct fut__waiter {
	struct fut__waiter *next;
	struct fut__waiter **pprev;
	void (*notify)(struct fut__waiter *w, fut_future *f);
};

/* What an executor lets the future call back into. */
struct fut__future_ops {
	/* f is RUNNING and fut_interrupt() was called (the flag is already
	 * set): stop the task if the executor can.  May be NULL. */
	void (*interrupt)(fut_future *f);
	/* A thread is about to wait for f: run f's task inline if it is still
	 * queued and may run here.  True if it ran something.  May be NULL. */
	bool (*assist)(fut_future *f);
	/* The last reference is gone; fut__future_fini() was called.  Free the
	 * memory that holds f.  NULL: fut__free(f). */
	void (*destroy)(fut_future *f);
};

struct fut_future {
	_Atomic uint32_t state; /* FUT__S_*: also the futex word */
	_Atomic uint32_t refs;
	_Atomic uint32_t flags; /* FUT__F_* */
	fut__lock lock;		/* guards waiters */
	uint16_t magic;
	/* The outcome: written by the one completer while COMPLETING, read
	 * by anyone once the state is FINISHED (acquire). */
	int16_t error; /* a FUT_E* code */
	/* FUT_ECRASHED: the crash status; otherwise the task code (or the
	 * errno of FUT_ESYS).  One field: a crash has no task code. */
	int code;
	union {
		struct {
			/* One or the other: a failure has no value, a
			 * success no message (error tells which). */
			union {
				void *value;
				char *message;
			};
			size_t len;
		};
		/* Until the future starts, an executor may keep its task's
		 * function and argument here (thread_pool.c): the outcome
		 * replaces them when the future completes, and fut_cancel()
		 * writes neither. */
		struct {
			fut_fn fn;
			const void *data;
		} job;
	};
	struct fut__waiter *waiters; /* guarded by lock */
	const struct fut__future_ops *ops;
};

/* Makes f a pending future with one reference (inline: every submit
 * makes one). */
static inline void fut__future_init(fut_future *f,
				    const struct fut__future_ops *ops)
{
	atomic_init(&f->state, FUT__S_PENDING);
	atomic_init(&f->refs, 1);
	atomic_init(&f->flags, 0);
	atomic_init(&f->lock.word, 0);
	f->magic = FUT__FUTURE_MAGIC;
	f->error = FUT_OK;
	f->code = 0;
	f->value = NULL;
	f->len = 0;
	f->waiters = NULL;
	f->ops = ops;
}
/* Frees what f owns (result bytes, message, callback nodes never run). */
void fut__future_fini(fut_future *f);

/*
 * Completes f once: error is FUT_OK or a FUT_E* code; value/len the
 * result (len 0 for a pointer result, bytes owned by f when `owned`);
 * message (owned, may be NULL) the failure text; crash_status for
 * FUT_ECRASHED.  Takes ownership of value (when owned) and message in every
 * case.  Wakes sleepers, notifies waiters, then runs done callbacks in the
 * caller.  FUT_OK, or FUT_ESTATE when f was already done.  The caller must
 * hold a reference across the call.
 */
FUT__PRIVATE int fut__future_complete(fut_future *f, int error, int task_code, void *value,
			 size_t len, bool owned, char *message,
			 int crash_status);

/* fut__future_complete in two steps: the claim (PENDING or RUNNING ->
 * COMPLETING; false if f is done or another thread claimed it), then the
 * outcome, which only the thread whose claim succeeded may give. */
bool fut__future_claim(fut_future *f);
void fut__future_settle(fut_future *f, int error, int task_code, void *value,
			size_t len, bool owned, char *message,
			int crash_status);

/* As fut__future_complete(f, FUT_OK, ...) with a byte result that lives
 * as long as f does (in the executor's block that holds f): never freed
 * by the future. */
int fut__future_complete_borrowed(fut_future *f, const void *data, size_t len);

/*
 * An executor's claim before it runs f's task: PENDING -> RUNNING (FUT_OK),
 * FUT_ECANCELLED if the caller cancelled it, FUT_ESTATE otherwise.  Exactly
 * one caller wins.  Executors must use this, not fut_set_running(), which
 * refuses (FUT_EINVAL) futures that have ops, i.e. that an executor owns.
 */
FUT__PRIVATE int fut__future_start(fut_future *f);

/* Links w into f's list.  Returns false (w not linked) if f is done. */
bool fut__future_register(fut_future *f, struct fut__waiter *w);
/* Unlinks w if it is still linked (f may have completed meanwhile). */
void fut__future_unregister(fut_future *f, struct fut__waiter *w);

/* Load helpers. */
static inline uint32_t fut__future_state(const fut_future *f)
{
	return atomic_load_explicit(&f->state, memory_order_acquire) &
	       FUT__S_MASK;
}
/* True if f finished with a failure (not a cancel); f must be done. */
bool fut__future_failed(const fut_future *f);
/* The caller's handle check: non-NULL and the magic intact. */
static inline bool fut__future_ok(const fut_future *f)
{
	return f != NULL && f->magic == FUT__FUTURE_MAGIC;
}

/* ------------------------------------------------------------------ */
/* task.c: the task record a task function sees.                        */

enum {
	FUT__OUT_NONE = 0,
	FUT__OUT_VALUE,
	FUT__OUT_BYTES,
	FUT__OUT_FAIL,
	FUT__OUT_SENT,	 /* bytes already written out by fut__task_emit_fn */
	FUT__OUT_SHARED, /* the result buffer, shared memory: value, len, fd */
};

/*
 * Set only in a process worker (single-threaded): while it runs task
 * fut__task_emit_for, a byte result of at least FUT__TASK_EMIT_MIN bytes
 * is handed to fut__task_emit_fn, which writes it to the result pipe
 * straight from the task's buffer (no copy); the outcome is then SENT.
 */
#define FUT__TASK_EMIT_MIN (256u * 1024u)
extern fut_task *fut__task_emit_for;
extern void (*fut__task_emit_fn)(fut_task *t, const void *data, size_t len);

/*
 * Also set only in a process worker, for fut__task_emit_for: a result
 * buffer (fut_task_result_buffer) of at least FUT__TASK_SHARED_MIN bytes
 * is asked of fut__task_shared_fn, which maps len bytes of a new memfd
 * writable (*fd gets it) or returns NULL (errno set), and the task then
 * gets heap memory instead, sent through the pipe.
 */
#define FUT__TASK_SHARED_MIN (256u * 1024u)
extern void *(*fut__task_shared_fn)(size_t len, int *fd);

/*
 * What a task function reads and settles.  Executors embed it and run
 * fn(task); the outcome fields then hold what the task settled: a pointer
 * (OUT_VALUE), bytes it owns (OUT_BYTES, value/len), or a failure
 * (OUT_FAIL, task_code, message).  The thread pool hands them to the
 * future with fut__task_finish(); the process worker encodes them.
 */
struct fut_task {
	fut_fn fn;
	void *arg;
	const void *input;
	size_t input_len;
	/* The future's flags word (FUT__F_INTERRUPT), NULL: never asked. */
	const _Atomic uint32_t *interrupt;
	int outcome;
	int task_code;
	void *value;
	size_t len;
	char *message;
	/* The result buffer (fut_task_result_buffer), while the task runs:
	 * heap (buffer_fd -1) or a shared mapping of the memfd buffer_fd.
	 * fut__task_run makes it the outcome when the task settled nothing
	 * else, and frees it otherwise. */
	void *buffer;
	size_t buffer_len;
	int buffer_fd;
};

FUT__PRIVATE void fut__task_init(fut_task *t, fut_fn fn, void *arg, const void *input,
		    size_t input_len, const _Atomic uint32_t *interrupt);
/* Runs the task function in this thread (no lock may be held). */
FUT__PRIVATE void fut__task_run(fut_task *t);
/* Completes f from t's outcome (moving the bytes and message into f). */
int fut__task_finish(fut_task *t, fut_future *f);
/* Frees an outcome nobody took (and closes an OUT_SHARED's fd). */
FUT__PRIVATE void fut__task_clear(fut_task *t);

/* ------------------------------------------------------------------ */
/* executor.c: the executor interface both pools implement.             */

#define FUT__EXECUTOR_MAGIC 0x45584543u /* "EXEC" */

struct fut__executor_ops {
	/* One task; arguments already checked (fn, out non-NULL; data/len
	 * valid; `bytes` tells submit_bytes from submit).  *out is NULL on
	 * entry. */
	int (*submit)(fut_executor *ex, fut_fn fn, void *arg, const void *data,
		      size_t len, bool bytes, fut_future **out);
	/* n >= 1 byte tasks, arguments checked; all or nothing. */
	int (*submit_many)(fut_executor *ex, fut_fn fn, const void *inputs,
			   size_t stride, size_t n, fut_future **out);
	/* flags checked; must return FUT_EINVAL (and change nothing) when it
	 * would wait and the caller is one of the executor's own threads. */
	int (*shutdown)(fut_executor *ex, unsigned flags);
	/* After shutdown(0) succeeded (or failed with FUT_EINVAL because it
	 * was called from the executor's own thread: then destroy must defer
	 * the free until its last thread exits): free everything. */
	void (*destroy)(fut_executor *ex);
};

/* The common head of every executor. */
struct fut_executor {
	const struct fut__executor_ops *ops;
	/* Atomic: after a free from one of the pool's own tasks the memory
	 * lives on until its last thread exits, and another of its tasks
	 * may still call with the handle (it then gets FUT_EINVAL). */
	_Atomic uint32_t magic;
};

/* The executor whose thread this is (NULL in the caller's threads); set
 * by executors in their workers and manager threads. */
FUT__PRIVATE fut_executor *fut__current_executor(void);
FUT__PRIVATE void fut__current_executor_set(fut_executor *ex);

/* ------------------------------------------------------------------ */
/* tp_slab.c: recycled job blocks (the thread pool's, and the process  */
/* pool's small jobs).                                                  */

/* Three block classes (user bytes): a thread-pool job (64), one with up to
 * 56 bytes of input inline (128), and one with up to FUT__TP_INLINE_BYTES
 * (152); process-pool jobs (112 bytes and their input) take the two
 * larger ones.  Inline input is preceded by its 8-byte length. */
#define FUT__TP_NCLASS 3u
#define FUT__TP_JOB_SIZE 64u
#define FUT__TP_MID_SIZE 128u
#define FUT__TP_LARGE_SIZE 152u
#define FUT__TP_INLINE_BYTES (FUT__TP_LARGE_SIZE - FUT__TP_JOB_SIZE - 8u)

/* The smallest class whose blocks hold `size` bytes; FUT__TP_NCLASS when
 * none does. */
unsigned fut__tp_class_for(size_t size);
/* A free block of class cls from this thread's cache (class 0's are
 * 64-byte aligned, the others 16); NULL when out of memory. */
void *fut__tp_block_get(unsigned cls);
/* Gives a block back (to this thread's cache). */
void fut__tp_block_put(void *block);
/* Test hook: returns this thread's cached blocks and the global overflow
 * list to malloc, so that the next submit allocates, and starts this
 * thread over with small slabs. */
void fut__tp_cache_flush(void);
/* Called by an idle thread-pool worker: makes one larger slab ready (its
 * pages present) for a thread that is taking them, so that thread need
 * not wait for its pages.  True if it did; cheap when nothing is wanted. */
bool fut__tp_slab_provision(void);
/* Test hook: the blocks of class cls a thread takes from its small slabs
 * before it takes larger ones. */
size_t fut__tp_small_blocks(unsigned cls);
/* Test hook: the slabs of class cls made ready and not yet taken. */
uint32_t fut__tp_slabs_ready(unsigned cls);
/* Test hook: the slab a block (or a thread-pool future) lies in: *bytes
 * its size (a thread's first slabs of a class are small, later ones
 * larger), the return value its start. */
void *fut__tp_block_slab(void *block, size_t *bytes);
/* Test hooks: submitters of thread pool ex now blocked on a full queue
 * (max_queue), and the worker threads it has started. */
size_t fut__tp_blocked_submitters(fut_executor *ex);
size_t fut__tp_threads(fut_executor *ex);
/* Test hook: tasks queued in thread pool ex, not yet taken. */
size_t fut__tp_queued(fut_executor *ex);

#endif /* FUT_INTERNAL_H */
