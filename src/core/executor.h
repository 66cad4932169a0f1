/*
 * core/executor.h: the executor interface every executor implements
 * (executor.c).
 */
#ifndef FUT_CORE_EXECUTOR_H
#define FUT_CORE_EXECUTOR_H

#include "core/base.h"

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
	/* In a fork child, for an executor the parent made (its threads
	 * and processes are the parent's): closes this process's copies of
	 * the executor's fds and frees what no inherited future can reach.
	 * Never waits.  May be NULL. */
	void (*orphan)(fut_executor *ex);
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
	/* The fork generation of the process that made it: another one is
	 * a fork child's copy (fut__executor_init). */
	uint32_t fork_gen;
};

/* Makes ex (its ops set) a valid handle: records the process's fork
 * generation, then the magic.  Every executor calls it last at creation.
 * In a fork child, an executor the parent made is orphaned: submits give
 * FUT_EBROKEN, shutdown returns at once, free calls ops->orphan. */
FUT__PRIVATE void fut__executor_init(fut_executor *ex);

/* Whether ex is a fork child's copy of an executor its parent made (its
 * threads and processes are the parent's).  Also true once such a copy
 * was freed: its memory stays for the futures that point into it.  The
 * futures' ops ask it before they reach the executor's workers or fds. */
FUT__PRIVATE bool fut__executor_orphaned(const fut_executor *ex);

/* Whether ex was made before this process closed every fd it inherited
 * (fut__fds_gone, core/sync.h): the numbers of its fds are someone
 * else's now, and its orphan op must not close them. */
FUT__PRIVATE bool fut__executor_fds_lost(const fut_executor *ex);

/* The executor whose thread this is (NULL in the caller's threads); set
 * by executors in their workers and manager threads. */
FUT__PRIVATE fut_executor *fut__current_executor(void);
FUT__PRIVATE void fut__current_executor_set(fut_executor *ex);

#endif /* FUT_CORE_EXECUTOR_H */
