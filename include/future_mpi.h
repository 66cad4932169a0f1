/*
 * libfuture-mpi: an executor whose tasks run on the ranks of an MPI job,
 * after mpi4py.futures.  Optional: a library beside libfuture, built only
 * where an MPI compiler exists (pkg-config libfuture-mpi).
 *
 * This header and future.h are the whole API of libfuture-mpi: anything
 * not declared here is internal.  Its names start with fut_mpi_/FUT_MPI_.
 * The executor it makes is a plain fut_executor: fut_submit_bytes,
 * fut_submit_many, fut_executor_shutdown, fut_executor_free, futures,
 * fut_wait and fut_as_completed work on it as on the other executors.
 * docs/mpi.md has the launch models, the naming of tasks and what is
 * promised on failure.
 */
#ifndef FUTURE_MPI_H
#define FUTURE_MPI_H

#include <mpi.h>

#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

/* fut_mpi_opts.flags */
#define FUT_MPI_SPAWN 0x1u   /* spawn servers instead of using comm's ranks */
#define FUT_MPI_ISOLATE 0x2u /* tasks run in a process pool on each server */

typedef struct fut_mpi_opts {
	/* NULL: MPI_COMM_WORLD.  The library works on its own duplicate. */
	const MPI_Comm *comm;
	/* The rank that gets the executor. */
	int root;
	unsigned flags;
	/* SPAWN: servers to start; 0: universe size - 1, at least 1.  In
	 * spawn mode comm must be NULL and root 0. */
	size_t max_workers;
	/* SPAWN: NULL: this executable. */
	const char *command;
	/* SPAWN: the servers' arguments, NULL-terminated; NULL: none. */
	char *const *argv;
	/* Tasks at once per server; 0: 1.  At most FUT_MAX_WORKERS. */
	size_t threads_per_rank;
	/* Tasks in flight per server; 0: 2 x threads_per_rank. */
	size_t prefetch;
	/* Runs once on each server, with that rank's own initarg (ISOLATE:
	 * in the rank, before its pool forks); non-zero on any rank:
	 * FUT_EBROKEN. */
	int (*initializer)(void *initarg);
	void *initarg;
	/* ISOLATE only, as the process pool's. */
	double task_timeout;
	/* ISOLATE only. */
	size_t max_tasks_per_child;
	/* Seconds a waiting rank polls before it sleeps; 0: 200e-6. */
	double poll_spin;
	/* Longest sleep between polls, seconds; 0: 1e-3. */
	double poll_backoff;
} fut_mpi_opts;

/*
 * Collective over opts->comm (every rank calls it with the same comm,
 * root and flags; a zeroed struct or NULL means MPI_COMM_WORLD and root 0).
 * On root *out gets a new executor: free it with fut_executor_free().  On
 * every other rank the call serves tasks until the root's executor is shut
 * down and drained (its STOP came), then returns FUT_OK with *out NULL.
 * A program that frees it from the done callback of its last future and
 * calls MPI_Finalize at once shuts it down (FUT_SHUTDOWN_NOWAIT) first
 * (docs/mpi.md, Finalize).  MPI must be initialized with
 * MPI_THREAD_MULTIPLE.
 * FUT_MPI_SPAWN: the caller alone (comm NULL, root 0) spawns max_workers
 * copies of command (NULL: this executable, from /proc/self/exe) and gets
 * the executor; a spawned copy's own call, with the same flags, serves,
 * then returns FUT_OK with *out NULL.
 * FUT_MPI_ISOLATE: each server runs its tasks in a process pool of
 * threads_per_rank workers (after its initializer): a crash fails only its
 * task (FUT_ECRASHED, fut_crash_status()), task_timeout gives
 * FUT_EDEADLINE, an interrupt kills the worker (FUT_ECANCELLED).
 * FUT_EINVAL (bad input: NULL out, a root outside comm, MPI_COMM_NULL, an
 * intercommunicator, a comm of size 1, unknown flags, sizes over
 * FUT_MAX_WORKERS, negative, NaN or over 60 s poll times, a NaN
 * task_timeout, options of a mode not asked for, a comm or root in spawn
 * mode), FUT_ENOTSUP (MPI not initialized, a thread level below
 * MULTIPLE, a spawn MPI refused),
 * FUT_EAGAIN (the spawn failed: MPI_ERR_SPAWN, or command is not an
 * executable file; or no manager thread), FUT_EBROKEN (an initializer or
 * an isolated rank's
 * pool failed on some rank, or the ranks disagree on the options or the
 * wire version: every rank returns it), FUT_ENOMEM (this rank ran out
 * of memory in the handshake: every other rank returns FUT_EBROKEN),
 * FUT_ESYS.
 */
FUT_API FUT_NODISCARD int fut_mpi_executor_new(fut_executor **out,
					       const fut_mpi_opts *opts);

/*
 * Names fn for ranks that run another program (MPMD): a rank resolves a
 * task's name through this registry first.  name is 1-64 bytes of
 * [A-Za-z0-9_.:-], not starting with '@' (copied before return).  The same
 * name and fn again is FUT_OK; the name for another fn FUT_ESTATE.
 * Process-wide and thread-safe; register before creating the executor.
 * FUT_EINVAL, FUT_ENOMEM.
 */
FUT_API int fut_mpi_register(const char *name, fut_fn fn);

/*
 * For an MPI executor: *servers gets its number of server ranks, *rank
 * this process's rank in comm (either pointer may be NULL).  FUT_EINVAL
 * for NULL or an executor that is not an MPI one; both then read 0.
 */
FUT_API int fut_mpi_info(const fut_executor *ex, int *servers, int *rank);

/*
 * Inside a task: the rank of the server running it; -1 for NULL or a task
 * of another executor.  For logging only.
 */
FUT_API int fut_mpi_task_rank(fut_task *t);

#ifdef __cplusplus
}
#endif
#endif /* FUTURE_MPI_H */
