/*
 * test_mpi_peer.c: the servers of the MPMD test (tests/mpi/run.sh):
 * another program than the client's, so another build-id, that registers
 * the client's task name for its own copy of the function.
 */
#include "mpi_test.h"

int main(int argc, char **argv)
{
	init_mpi(&argc, &argv);
	int rc = fut_mpi_register("mpmd.square", square_task);
	fut_executor *ex = (fut_executor *)(uintptr_t)1;
	if (rc == FUT_OK)
		rc = fut_mpi_executor_new(&ex, NULL);
	MPI_Finalize();
	if (rc != FUT_OK || ex != NULL) {
		fprintf(stderr, "test_mpi_peer: %s\n", fut_strerror(rc));
		return 1;
	}
	return 0;
}
