/*
 * libfuture: thread-pool and process-pool executors that return futures,
 * and a completion/wait module, after Python's concurrent.futures.
 *
 * This header is the whole API: anything not declared here is internal and
 * may change without notice.  Every public name starts with fut_ or FUT_.
 *
 * Conventions (docs/api.md has the long form):
 * - Fallible functions return FUT_OK (0) or a positive FUT_E* code.  Bad
 *   input (NULL handles or out-pointers, a NULL buffer with a length, sizes
 *   over FUT_MAX_BYTES, unknown flags or modes) gives FUT_EINVAL; nothing
 *   aborts, exits or prints.  Results come back through the last parameters.
 * - Timeouts are double seconds: negative (FUT_FOREVER) waits forever, 0
 *   polls.  They are measured on CLOCK_MONOTONIC.
 * - Ownership is written at each function: "new reference" (release it),
 *   "borrowed" (do not release), "owned by the future" (valid until the
 *   future is released), "copied before return".
 * - Every function may be called from any thread, except that one
 *   fut_as_completed iterator is used by one thread at a time.
 */
#ifndef FUTURE_H
#define FUTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FUT_API __attribute__((visibility("default")))
#define FUT_NODISCARD __attribute__((warn_unused_result))
#define FUT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FUT_API
#define FUT_NODISCARD
#define FUT_PRINTF(f, a)
#endif

/* The version of this header; fut_version() gives the library's. */
#define FUT_VERSION_MAJOR 0
#define FUT_VERSION_MINOR 2
#define FUT_VERSION_PATCH 0

/* Wait forever. */
#define FUT_FOREVER (-1.0)

/* The largest max_workers any executor accepts. */
#define FUT_MAX_WORKERS 1024

/* The largest byte input or result; a larger length is FUT_EINVAL. */
#if SIZE_MAX > 0xffffffffu
#define FUT_MAX_BYTES ((size_t)1 << 40)
#else
#define FUT_MAX_BYTES ((size_t)1 << 30)
#endif

/* The most futures or tasks one call takes (fut_submit_many, fut_wait,
 * fut_as_completed_new); a larger count is FUT_EINVAL, refused before any
 * element is read or written. */
#if SIZE_MAX > 0xffffffffu
#define FUT_MAX_COUNT ((size_t)1 << 32)
#else
#define FUT_MAX_COUNT ((size_t)1 << 24)
#endif

/*
 * The result codes, one list: FUT_OK is 0, failures are positive.
 * X(name, value, text) -- fut_strerror() returns the text.
 */
#define FUT_CODE_LIST(X)                                                       \
	X(FUT_OK, 0, "success")                                                \
	X(FUT_EINVAL, 1, "invalid argument")                                   \
	X(FUT_ENOMEM, 2, "out of memory")                                      \
	X(FUT_ETIMEDOUT, 3, "wait timed out")                                  \
	X(FUT_ECANCELLED, 4, "future was cancelled")                           \
	X(FUT_ESHUTDOWN, 5, "executor is shut down")                           \
	X(FUT_ETASK, 6, "task reported a failure")                             \
	X(FUT_ECRASHED, 7, "worker process died running the task")             \
	X(FUT_EBROKEN, 8, "executor is broken")                                \
	X(FUT_ESTATE, 9, "operation not valid in this state")                  \
	X(FUT_ENOTSUP, 10, "not supported by this executor")                   \
	X(FUT_EAGAIN, 11, "resource temporarily unavailable")                  \
	X(FUT_EDEADLINE, 12, "task ran past its deadline and was stopped")     \
	X(FUT_ESYS, 13, "system call failed")                                  \
	X(FUT_END, 14, "iterator exhausted")

#define FUT_CODE_ENUM_(name, value, text) name = value,
enum fut_code {
	FUT_CODE_LIST(FUT_CODE_ENUM_)
};
#undef FUT_CODE_ENUM_

/* Future states, as Python's: PENDING -> RUNNING -> FINISHED, or
 * PENDING -> CANCELLED.  The values never collide with the codes. */
enum fut_state {
	FUT_PENDING = 100,
	FUT_RUNNING = 101,
	FUT_CANCELLED = 102,
	FUT_FINISHED = 103,
};

/* fut_wait()'s return_when. */
enum fut_return_when {
	FUT_FIRST_COMPLETED = 1,
	FUT_FIRST_EXCEPTION = 2,
	FUT_ALL_COMPLETED = 3,
};

/* fut_executor_shutdown()'s flags; they combine with |. */
#define FUT_SHUTDOWN_NOWAIT 0x1u
#define FUT_SHUTDOWN_CANCEL_PENDING 0x2u
#define FUT_SHUTDOWN_INTERRUPT 0x4u

typedef struct fut_executor fut_executor;
typedef struct fut_future fut_future;
typedef struct fut_task fut_task;
typedef struct fut_as_completed fut_as_completed;

/* A task: one signature for every executor.  It reads its argument or
 * input from `task` and reports its outcome with fut_task_return*() or
 * fut_task_fail(); returning without either finishes with a NULL result. */
typedef void (*fut_fn)(fut_task *task);

/* A done callback: runs once, with no library lock held. */
typedef void (*fut_callback)(fut_future *f, void *ud);

/* ------------------------------------------------------------------ */
/* Library                                                             */

/* The text for a code; "unknown code" for a value not in the list.  A
 * static string: never free it. */
FUT_API const char *fut_strerror(int code);

/* The library's version, "MAJOR.MINOR.PATCH"; a static string. */
FUT_API const char *fut_version(void);

/* ------------------------------------------------------------------ */
/* Futures, caller side                                                */

/* The state: FUT_PENDING, FUT_RUNNING, FUT_CANCELLED or FUT_FINISHED;
 * FUT_EINVAL for a NULL future. */
FUT_API int fut_state(const fut_future *f);

/* True when finished or cancelled (false for NULL). */
FUT_API bool fut_done(const fut_future *f);
/* True while the task runs (false for NULL). */
FUT_API bool fut_running(const fut_future *f);
/* True when cancelled (false for NULL). */
FUT_API bool fut_cancelled(const fut_future *f);

/*
 * Waits up to `timeout` for the future, then gives its outcome: FUT_OK
 * with the result pointer in *value (may be NULL: wait only), or the code
 * it ended with (FUT_ECANCELLED, FUT_ETASK, FUT_ECRASHED, FUT_EBROKEN,
 * FUT_EDEADLINE...), or FUT_ETIMEDOUT when the wait ran out (nothing
 * changed).  A byte result gives the pointer to its bytes (owned by the
 * future).  FUT_EINVAL for a NULL future, and, with no timeout, for one
 * only the calling thread could complete (a thread-pool task's own
 * future, or that of a task below it on its stack; in a process pool's
 * done callback, one of that pool): it would wait for itself.
 * FUT_EAGAIN only for an untimed wait in a thread-pool worker that its
 * pool can neither run nor hand its slot over for (docs/api.md, "threads:
 * who runs what").
 */
FUT_API int fut_result(fut_future *f, double timeout, void **value);

/*
 * As fut_result() for a byte result: *data and *len (both required) get the
 * bytes, owned by the future and valid until it is released; they start
 * 8-aligned on every executor.  A pointer result gives the pointer and
 * length 0.  On failure *data is NULL, *len 0.  Codes as fut_result(), and
 * FUT_EINVAL for NULL data or len.
 */
FUT_API int fut_result_bytes(fut_future *f, double timeout, const void **data,
			     size_t *len);

/*
 * Python's cancel(): true if the future is now cancelled (it was pending,
 * or already cancelled); false if it is running or finished, or NULL.
 * Cancelling runs the done callbacks in the caller.
 */
FUT_API bool fut_cancel(fut_future *f);

/*
 * Beyond Python: asks a running task to stop.  A thread-pool task sees it
 * through fut_task_cancelled(); a process-pool task's worker is killed and
 * the future ends FUT_ECANCELLED.  On a pending future it cancels it.
 * FUT_OK, or FUT_ESTATE when the future is already done.
 */
FUT_API int fut_interrupt(fut_future *f);

/* The code the future ended with: FUT_OK when it succeeded, FUT_ESTATE
 * while it is not done, FUT_EINVAL for NULL. */
FUT_API int fut_error(const fut_future *f);

/* The task's own code given to fut_task_fail() (0 otherwise); for a
 * future that ended FUT_ESYS, the errno. */
FUT_API int fut_task_code(const fut_future *f);

/* The failure message, owned by the future; never NULL for a failed
 * future (the code's fut_strerror() text where none was given); NULL for
 * a future that is not done or succeeded, or a NULL future. */
FUT_API const char *fut_error_message(const fut_future *f);

/*
 * For a future that ended FUT_ECRASHED: *status gets the worker's wait
 * status as waitpid() reports it (test it with WIFSIGNALED/WTERMSIG or
 * WIFEXITED/WEXITSTATUS).  FUT_ESTATE for any other future.
 */
FUT_API int fut_crash_status(const fut_future *f, int *status);

/*
 * Adds a done callback: it runs once when the future is done (finished or
 * cancelled), in the thread that completes it, or at once in the caller if
 * it is already done.  Callbacks registered before it completes run in
 * the order added (one added after runs at once, in the adding thread),
 * with no library lock held: they may call any fut_ function, submit
 * work, or release the future.  FUT_ENOMEM leaves nothing registered.
 */
FUT_API int fut_add_done_callback(fut_future *f, fut_callback cb, void *ud);

/* Takes one more reference; returns f (NULL, taking none, past
 * 2^32 - 2^16 references: the count would wrap). */
FUT_API fut_future *fut_retain(fut_future *f);

/* Drops one reference; the last frees the future.  Releasing a pending
 * future is fine: the task still runs.  NULL is a no-op. */
FUT_API void fut_release(fut_future *f);

/* ------------------------------------------------------------------ */
/* Futures, producer side: for building executors and tools on top      */

/* A new pending future with no executor (new reference).  The four
 * fut_set_* calls below are for such futures only: on one an executor
 * made they return FUT_EINVAL and change nothing (as for NULL). */
FUT_API FUT_NODISCARD int fut_future_new(fut_future **out);

/* Python's set_running_or_notify_cancel(): FUT_OK and RUNNING, or
 * FUT_ECANCELLED when it was cancelled; FUT_ESTATE when not pending. */
FUT_API int fut_set_running(fut_future *f);

/* True once fut_interrupt() asked the future's running task to stop:
 * how a producer reads the flag that call raises on a future of
 * fut_future_new() (a task reads its own with fut_task_cancelled()).
 * The flag stays raised; false for a NULL future. */
FUT_API bool fut_interrupt_requested(const fut_future *f);

/* Complete the future once with a pointer result; FUT_ESTATE if it is
 * already done.  Done callbacks run in the caller. */
FUT_API int fut_set_result(fut_future *f, void *value);

/* Complete it with a byte result (copied before return). */
FUT_API int fut_set_result_bytes(fut_future *f, const void *data, size_t len);

/* Complete it with a failure: it ends FUT_ETASK with the task code and a
 * copy of the message (NULL: the code's text). */
FUT_API int fut_set_error(fut_future *f, int task_code, const char *message);

/* ------------------------------------------------------------------ */
/* Tasks: called from inside a task function                           */

/* The pointer given to fut_submit() (NULL for byte tasks). */
FUT_API void *fut_task_arg(fut_task *t);

/* The input bytes given to fut_submit_bytes() (a private copy, owned by
 * the task); *len gets the length when len is not NULL. */
FUT_API const void *fut_task_input(fut_task *t, size_t *len);

/* Settles a pointer result (thread pools; a process pool reports
 * FUT_ENOTSUP to the caller).  FUT_ESTATE if already settled. */
FUT_API int fut_task_return(fut_task *t, void *value);

/* Settles a byte result (copied before return).  FUT_ESTATE if already
 * settled, FUT_ENOMEM when the copy failed. */
FUT_API int fut_task_return_bytes(fut_task *t, const void *data, size_t len);

/*
 * A writable buffer of len bytes (owned by the task) that becomes the
 * task's byte result, without a copy, when the task returns -- unless it
 * settles otherwise first or later (fut_task_fail, fut_task_return*: then
 * the buffer is freed and that outcome stands).  A second call replaces
 * the first buffer (freed; its bytes are not carried over).  On a process
 * pool, from 256 KiB, it is shared memory (a sealed memfd) that the
 * caller maps: fut_result_bytes() then points into that mapping (owned by
 * the future); smaller buffers, and any when a memfd or its mapping
 * cannot be had, go through the pipe as fut_task_return_bytes' do.
 * NULL, with nothing changed, for NULL t, len over FUT_MAX_BYTES, a task
 * that already settled, or no memory.  len 0 gives a valid pointer to no
 * bytes and an empty result.
 */
FUT_API void *fut_task_result_buffer(fut_task *t, size_t len);

/* Settles a failure: the future ends FUT_ETASK with task_code and the
 * formatted message (fmt may be NULL; fmt itself when the locale cannot
 * write it).  FUT_ENOMEM: settled without a message.  FUT_ESTATE if
 * already settled.  A thread pool keeps the whole message; a process
 * pool (and the MPI executor) its first 64 KiB. */
FUT_API int fut_task_fail(fut_task *t, int task_code, const char *fmt, ...)
	FUT_PRINTF(3, 4);

/* True once fut_interrupt() or FUT_SHUTDOWN_INTERRUPT asked this task to
 * stop (thread pools). */
FUT_API bool fut_task_cancelled(const fut_task *t);

/* ------------------------------------------------------------------ */
/* Executors                                                           */

typedef struct fut_thread_pool_opts {
	/* 0: min(32, cpus + 4), as Python; at most FUT_MAX_WORKERS. */
	size_t max_workers;
	/* Threads are named "<prefix>-<n>" (15 bytes at most, as Linux keeps);
	 * NULL: "fut-worker".  Copied before return. */
	const char *thread_name_prefix;
	/* Runs once in each new worker thread; non-zero breaks the pool. */
	int (*initializer)(void *initarg);
	void *initarg;
	/* 0: unbounded; else submit blocks while this many tasks wait, not
	 * yet taken by a worker. */
	size_t max_queue;
} fut_thread_pool_opts;

typedef struct fut_process_pool_opts {
	/* 0: the number of cpus; at most FUT_MAX_WORKERS. */
	size_t max_workers;
	/* Runs once in each worker process; non-zero breaks the pool. */
	int (*initializer)(void *initarg);
	void *initarg;
	/* 0: unlimited; else a worker is replaced after this many tasks. */
	size_t max_tasks_per_child;
	/* Seconds, <= 0: none.  A task over it has its worker killed and ends
	 * FUT_EDEADLINE; the worker is replaced. */
	double task_timeout;
	/* How the fork server starts: FUT_START_FORK (0) or FUT_START_EXEC. */
	int start_method;
	/* Most tasks sent to a worker in one frame (Python's chunksize);
	 * 0: automatic, about 2 ms of work per frame as tasks are timed. */
	size_t chunk;
	/* 0: unbounded; else fut_submit_bytes and fut_submit_many block while
	 * this many tasks are not started, queued or sent ahead to a worker
	 * (a larger batch goes in when none is).  From a done callback (the
	 * pool's manager thread) a submit that would block is FUT_EAGAIN. */
	size_t max_queue;
} fut_process_pool_opts;

/*
 * FUT_START_FORK: the fork server is a fork of the caller, made in
 * fut_process_pool_new: fastest, and tasks see the globals set before the
 * pool; but a lock another thread holds at that instant stays held in
 * every worker.  FUT_START_EXEC: the fork server is a fresh exec of the
 * program's own executable (/proc/self/exe), which the library takes over
 * before main runs: no thread, lock or memory of the caller; a task
 * function is found there by its module's build-id and offset, and one
 * the program does not have at start (a dlopen'd module) fails its
 * future FUT_ENOTSUP.  The program's own constructors run there before
 * it serves, as at its start.  initarg must be NULL (FUT_EINVAL).
 */
enum {
	FUT_START_FORK = 0,
	FUT_START_EXEC = 1,
};

/*
 * A thread pool.  opts may be NULL (defaults); a zeroed struct is the
 * defaults too.  Threads start lazily (each new one started by the one
 * before it), up to max_workers.  The scheduling contract (Python's):
 * while a task is queued and fewer than max_workers tasks run, a worker
 * starts it promptly, whatever the running tasks do; tasks are taken in
 * submission order; at most max_workers run at once; a thread that is not
 * a worker never runs a task.  A worker that waits untimed on a future
 * gives its slot up meanwhile (the pool may then run up to max_workers +
 * 256 threads), or runs the awaited task itself if it has not started (32
 * deep at most); past those bounds such a wait returns FUT_EAGAIN.  A
 * timed wait keeps its slot.  *out gets a new executor: free it with
 * fut_executor_free().  FUT_EINVAL, FUT_ENOMEM.
 */
FUT_API FUT_NODISCARD int fut_thread_pool_new(fut_executor **out,
					      const fut_thread_pool_opts *opts);

/*
 * A process pool.  A single-threaded fork server is forked now; every
 * worker is forked from it, never from the caller's process afterwards.
 * Tasks take and return bytes through pipes.  A worker that dies fails only
 * the task it was running (FUT_ECRASHED) and is replaced; tasks of its
 * frame that had returned, their results not sent yet, run again (not
 * with chunk 1).  Done callbacks
 * run in the pool's manager thread.  FUT_EINVAL, FUT_ENOMEM, FUT_EAGAIN
 * (no process could be forked), FUT_ESYS; FUT_ESTATE from a constructor
 * of the program run in a FUT_START_EXEC fork server.
 */
FUT_API FUT_NODISCARD int
fut_process_pool_new(fut_executor **out, const fut_process_pool_opts *opts);

/*
 * Submits fn(arg) (thread pools; FUT_ENOTSUP on a process pool).  *out
 * gets a new reference to its future.  FUT_ESHUTDOWN after shutdown,
 * FUT_EBROKEN on a broken pool, FUT_ENOMEM, FUT_EAGAIN.  With max_queue,
 * blocks while the queue is full.
 */
FUT_API FUT_NODISCARD int fut_submit(fut_executor *ex, fut_fn fn, void *arg,
				     fut_future **out);

/* Submits fn with a private copy of data[0..len) (copied before return);
 * every executor.  *out gets a new reference.  On a process pool an input
 * of 256 KiB or more is copied into a sealed memfd that the worker maps
 * (one fd held until the task's outcome comes, 64 at most per pool), or,
 * past that or when no memfd can be had, into the task's frame as a
 * smaller one is.  Codes as fut_submit(), and FUT_EINVAL for NULL data
 * with a length or len over FUT_MAX_BYTES. */
FUT_API FUT_NODISCARD int fut_submit_bytes(fut_executor *ex, fut_fn fn,
					   const void *data, size_t len,
					   fut_future **out);

/*
 * Submits n byte tasks in one call, input i at inputs + i*stride, stride
 * bytes each (copied before return): one lock, one wake-up, and on a process
 * pool as few pipe frames as possible.  out[0..n) get new references.  All
 * or nothing: on failure nothing was submitted and out holds no future.
 * n over FUT_MAX_COUNT is FUT_EINVAL before out is written; other codes as
 * fut_submit_bytes().
 */
FUT_API FUT_NODISCARD int fut_submit_many(fut_executor *ex, fut_fn fn,
					  const void *inputs, size_t stride,
					  size_t n, fut_future **out);

/*
 * Stops accepting work (submit then gives FUT_ESHUTDOWN).  flags 0 waits
 * for every submitted task; FUT_SHUTDOWN_NOWAIT returns at once;
 * FUT_SHUTDOWN_CANCEL_PENDING cancels what has not started;
 * FUT_SHUTDOWN_INTERRUPT also interrupts what runs (as fut_interrupt()).
 * Calling it twice is harmless.  Waiting from one of the executor's own
 * tasks or callbacks is FUT_EINVAL (it would wait for itself).
 */
FUT_API int fut_executor_shutdown(fut_executor *ex, unsigned flags);

/* shutdown(0), then frees the executor.  Futures the caller still holds
 * stay valid.  NULL is a no-op. */
FUT_API void fut_executor_free(fut_executor *ex);

/* ------------------------------------------------------------------ */
/* Waiting on many futures                                             */

/*
 * Waits until the condition holds: FUT_FIRST_COMPLETED (any future done),
 * FUT_FIRST_EXCEPTION (any finished with a failure, else all done; a
 * cancelled future is no failure), FUT_ALL_COMPLETED.  FUT_OK when it
 * holds, FUT_ETIMEDOUT when the timeout ran out first; read fut_done() for
 * the split.  n == 0 is FUT_OK; the same future may appear twice.  The
 * futures are borrowed.  FUT_EINVAL for NULL fs with n > 0, n over
 * FUT_MAX_COUNT (checked before any element is read), a NULL future, an
 * unknown return_when, or an untimed wait for itself (fut_result's) that
 * nothing else could end; FUT_ENOMEM; FUT_EAGAIN as fut_result().
 */
FUT_API int fut_wait(fut_future *const *fs, size_t n, int return_when,
		     double timeout);

/*
 * An iterator that yields the futures as they complete, already-done ones
 * first, each at most once (duplicates are yielded once).  It holds its own
 * reference on each future until fut_as_completed_free().  *out gets a new
 * iterator.  FUT_EINVAL for NULL out, NULL fs with n > 0, n over
 * FUT_MAX_COUNT (checked before any element is read) or a NULL future;
 * FUT_ENOMEM (also for a future whose references are at fut_retain's
 * bound).
 */
FUT_API FUT_NODISCARD int fut_as_completed_new(fut_as_completed **out,
					       fut_future *const *fs, size_t n);

/* The next done future (borrowed) in *out; FUT_ETIMEDOUT when none
 * completed in time; FUT_END when all were yielded.  FUT_EINVAL for NULL
 * it or out, or an untimed wait for itself (every future not yielded
 * is one only the calling thread could complete, as fut_result's);
 * FUT_EAGAIN as fut_result(). */
FUT_API int fut_as_completed_next(fut_as_completed *it, double timeout,
				  fut_future **out);

/* Adds a future while iterating (a no-op if it is there already).
 * FUT_EINVAL for NULL it or f; FUT_ENOMEM (also as fut_as_completed_new). */
FUT_API int fut_as_completed_add(fut_as_completed *it, fut_future *f);

/*
 * A file descriptor for poll/epoll/libuv/libevent: level-triggered, it
 * polls readable exactly while fut_as_completed_next() would not block
 * (FUT_END included).  Owned by the iterator: never read or close it.
 * -1 for a NULL iterator or when it could not be made (errno says why).
 */
FUT_API int fut_as_completed_fd(fut_as_completed *it);

/* Frees the iterator and drops its references.  NULL is a no-op. */
FUT_API void fut_as_completed_free(fut_as_completed *it);

#ifdef __cplusplus
}
#endif
#endif /* FUTURE_H */
