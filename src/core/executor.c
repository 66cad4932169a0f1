/*
 * executor.c: the public executor calls, written once for every pool.
 *
 * Owns: argument checking for fut_submit*, fut_executor_shutdown and
 * fut_executor_free, and the thread-local "current executor" that tells
 * a pool's own threads apart from the caller's.  Each pool implements
 * struct fut__executor_ops (executor.h): the checks here let the pools
 * assume valid arguments.
 * Threads: any.
 * Locks: none.
 */
#include <pthread.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"

#define ALL_SHUTDOWN_FLAGS                                                     \
	(FUT_SHUTDOWN_NOWAIT | FUT_SHUTDOWN_CANCEL_PENDING |                   \
	 FUT_SHUTDOWN_INTERRUPT)

static _Thread_local fut_executor *current;

/* An executor made before a fork tells it is a copy by the fork
 * children sync.c counts (fut__fork_gen), without a system call (getpid)
 * on the submit path. */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* In the child, in the thread that forked: that thread is none of the
 * parent's executors' threads here, and waits nothing for them. */
static void atfork_child(void)
{
	current = NULL;
	fut__wait_hooks_set(NULL);
}

static void register_atfork(void)
{
	(void)pthread_atfork(NULL, NULL, atfork_child);
}

void fut__executor_init(fut_executor *ex)
{
	pthread_once(&atfork_once, register_atfork);
	ex->fork_gen = fut__fork_gen();
	atomic_store_explicit(&ex->magic, FUT__EXECUTOR_MAGIC,
			      memory_order_release);
}

bool fut__executor_fds_lost(const fut_executor *ex)
{
	return fut__fd_lost(ex->fork_gen);
}

/* A fork child's copy of an executor its parent made. */
bool fut__executor_orphaned(const fut_executor *ex)
{
	return ex->fork_gen != fut__fork_gen();
}

fut_executor *fut__current_executor(void)
{
	return current;
}

void fut__current_executor_set(fut_executor *ex)
{
	current = ex;
}

static bool executor_ok(const fut_executor *ex)
{
	return ex != NULL &&
	       atomic_load_explicit(&ex->magic, memory_order_relaxed) ==
		       FUT__EXECUTOR_MAGIC &&
	       ex->ops != NULL;
}

int fut_submit(fut_executor *ex, fut_fn fn, void *arg, fut_future **out)
{
	if (out != NULL)
		*out = NULL;
	if (!executor_ok(ex) || fn == NULL || out == NULL)
		return FUT_EINVAL;
	if (FUT__UNLIKELY(fut__executor_orphaned(ex)))
		return FUT_EBROKEN;
	return ex->ops->submit(ex, fn, arg, NULL, 0, false, out);
}

int fut_submit_bytes(fut_executor *ex, fut_fn fn, const void *data, size_t len,
		     fut_future **out)
{
	if (out != NULL)
		*out = NULL;
	if (!executor_ok(ex) || fn == NULL || out == NULL ||
	    (data == NULL && len != 0) || len > FUT_MAX_BYTES)
		return FUT_EINVAL;
	if (FUT__UNLIKELY(fut__executor_orphaned(ex)))
		return FUT_EBROKEN;
	return ex->ops->submit(ex, fn, NULL, data, len, true, out);
}

int fut_submit_many(fut_executor *ex, fut_fn fn, const void *inputs,
		    size_t stride, size_t n, fut_future **out)
{
	if (n == 0)
		return executor_ok(ex) && fn != NULL ? FUT_OK : FUT_EINVAL;
	/* The count is checked before out[] is written: a bad one must not
	 * make us write past the caller's array.  Every other failure
	 * leaves out[] all NULL, as documented. */
	if (out == NULL || n > FUT_MAX_COUNT)
		return FUT_EINVAL;
	for (size_t i = 0; i < n; i++)
		out[i] = NULL;
	if (!executor_ok(ex) || fn == NULL || (inputs == NULL && stride != 0) ||
	    stride > FUT_MAX_BYTES ||
	    (stride != 0 && n > FUT_MAX_BYTES / stride))
		return FUT_EINVAL;
	if (FUT__UNLIKELY(fut__executor_orphaned(ex)))
		return FUT_EBROKEN;
	return ex->ops->submit_many(ex, fn, inputs, stride, n, out);
}

int fut_executor_shutdown(fut_executor *ex, unsigned flags)
{
	if (!executor_ok(ex) || (flags & ~ALL_SHUTDOWN_FLAGS) != 0)
		return FUT_EINVAL;
	/* A fork child's copy: the parent's threads, nothing to wait for. */
	if (fut__executor_orphaned(ex))
		return FUT_OK;
	return ex->ops->shutdown(ex, flags);
}

void fut_executor_free(fut_executor *ex)
{
	if (!executor_ok(ex))
		return;
	if (fut__executor_orphaned(ex)) {
		/* A fork child's copy: the parent's workers, fork server and
		 * pipes are left alone; this process's copies of its fds
		 * close.  Its memory stays: the futures it made, inherited
		 * too, point into it. */
		atomic_store_explicit(&ex->magic, 0, memory_order_relaxed);
		if (ex->ops->orphan != NULL)
			ex->ops->orphan(ex);
		fut__slab_trim();
		return;
	}
	/* FUT_EINVAL here means a pool thread frees its own pool: destroy
	 * then defers the free to the pool's last thread. */
	(void)ex->ops->shutdown(ex, 0);
	ex->ops->destroy(ex);
	/* The blocks this thread cached go back to their slabs, and the
	 * slabs left with none out to malloc: a freed pool returns its
	 * memory (its workers' caches went back as they exited). */
	fut__slab_trim();
}
