/*
 * pmpi_watch.h: other threads' MPI calls, counted while `watching`,
 * through the MPI profiling interface: these definitions take the place
 * of the MPI library's in the program that includes this header (in one
 * of its files only), static libfuture-mpi included.  With
 * `watch_finalize` set, MPI_Finalize watches for 200 ms before it
 * finalizes: in a program without that pause, such a call races
 * finalize (MPICH aborts: docs/mpi.md).
 */
#ifndef FUT_PMPI_WATCH_H
#define FUT_PMPI_WATCH_H

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

static _Atomic bool watch_finalize, watching;
/* While set, every MPI_Test of this process fails (MPI_ERR_OTHER), the
 * request left as it was. */
static _Atomic bool fail_tests;
/* While set, every MPI_Test of this process says "not complete" without
 * testing (a send tested late); tests_failed counts the failed ones. */
static _Atomic bool defer_tests;
static _Atomic long tests_failed;
static _Atomic long stray_calls;
static pthread_t main_thread; /* set first thing in main() */

static void stray(void)
{
	if (atomic_load(&watching) &&
	    !pthread_equal(pthread_self(), main_thread))
		atomic_fetch_add(&stray_calls, 1);
}

int MPI_Iprobe(int source, int tag, MPI_Comm comm, int *flag,
	       MPI_Status *status)
{
	stray();
	return PMPI_Iprobe(source, tag, comm, flag, status);
}

int MPI_Isend(const void *buf, int count, MPI_Datatype type, int dest, int tag,
	      MPI_Comm comm, MPI_Request *request)
{
	stray();
	return PMPI_Isend(buf, count, type, dest, tag, comm, request);
}

int MPI_Test(MPI_Request *request, int *flag, MPI_Status *status)
{
	stray();
	if (atomic_load(&fail_tests)) {
		atomic_fetch_add(&tests_failed, 1);
		return MPI_ERR_OTHER;
	}
	if (atomic_load(&defer_tests)) {
		*flag = 0;
		return MPI_SUCCESS;
	}
	return PMPI_Test(request, flag, status);
}

int MPI_Comm_free(MPI_Comm *comm)
{
	stray();
	return PMPI_Comm_free(comm);
}

int MPI_Finalize(void)
{
	if (atomic_load(&watch_finalize)) {
		atomic_store(&watching, true);
		nanosleep(&(struct timespec){ 0, 200000000 }, NULL);
	}
	/* The finalize hook's own calls are allowed. */
	atomic_store(&watching, false);
	return PMPI_Finalize();
}

/* After MPI_Finalize: rc, or 1 when a call of another thread was counted
 * (`when` says since when). */
static int stray_report(const char *mode, int rank, const char *when, int rc)
{
	long n = atomic_load(&stray_calls);
	if (n == 0)
		return rc;
	fprintf(stderr, "%s: rank %d: %ld MPI calls of another thread %s\n",
		mode, rank, n, when);
	return 1;
}

/* The end of a test mode's main(): MPI_Finalize, then its exit status
 * (stray_report), and "MODE: ok" when it passed. */
static int finalize_and_report(const char *mode, int rank, const char *when,
			       int rc)
{
	MPI_Finalize();
	rc = stray_report(mode, rank, when, rc);
	if (rc == 0)
		printf("%s: ok\n", mode);
	return rc;
}

#endif
