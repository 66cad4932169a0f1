/*
 * mpi_primes: examples/primes.c on the ranks of an MPI job -- the same
 * task and the same futures; only the executor's creation and the launch
 * line changed (mpi4py.futures' MPIPoolExecutor, is_prime).
 *
 *   PRIMES = [112272535095293, 112582705942171, 112272535095293,
 *             115280095190773, 115797848077099, 1099726899285419]
 *   with ProcessPoolExecutor() as executor:
 *       for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):
 *           print('%d is prime: %s' % (number, prime))
 *
 * fut_submit_many() is executor.map: one call, one future per input, the
 * inputs copied before it returns and sent to the serving ranks in MPI
 * messages.  The task reads its
 * number with fut_task_input() and answers one byte with
 * fut_task_return_bytes().  The last number is not prime; the program
 * checks every answer and exits 0 only if all are right.
 *
 * Every rank runs main() up to fut_mpi_executor_new(): rank 0 gets the
 * executor, the others serve tasks inside the call and return with NULL.
 *
 * Build and run: make && mpirun -np 3 build/examples/mpi_primes
 * (as root, or in a container: docs/mpi.md has the environment).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <future_mpi.h>

static const uint64_t primes[] = {
	112272535095293ull, 112582705942171ull, 112272535095293ull,
	115280095190773ull, 115797848077099ull, 1099726899285419ull,
};
static const unsigned char expected[] = { 1, 1, 1, 1, 1, 0 };
#define N (sizeof(primes) / sizeof(primes[0]))

static int is_prime(uint64_t n)
{
	if (n < 2)
		return 0;
	if (n == 2)
		return 1;
	if (n % 2 == 0)
		return 0;
	uint64_t root = (uint64_t)floor(sqrt((double)n));
	for (uint64_t i = 3; i <= root + 1; i += 2)
		if (n % i == 0 && i != n)
			return 0;
	return 1;
}

/* The task: the same signature on a thread pool or a process pool. */
static void is_prime_task(fut_task *t)
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	uint64_t n;
	if (len != sizeof(n)) {
		fut_task_fail(t, 1, "expected an 8-byte number, got %zu bytes",
			      len);
		return;
	}
	memcpy(&n, in, sizeof(n));
	unsigned char answer = (unsigned char)is_prime(n);
	fut_task_return_bytes(t, &answer, 1);
}

int main(int argc, char **argv)
{
	int provided = 0;
	MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
	fut_executor *ex = NULL;
	int rc = fut_mpi_executor_new(&ex, NULL); /* every other rank serves */
	if (rc != FUT_OK || ex == NULL) {
		if (rc != FUT_OK)
			fprintf(stderr, "mpi_primes: %s%s\n", fut_strerror(rc),
				rc == FUT_EINVAL ?
					" (launch it with mpirun -np 2 "
					"or more)" :
					"");
		MPI_Finalize();
		return rc != FUT_OK;
	}
	fut_future *fs[N];
	rc = fut_submit_many(ex, is_prime_task, primes, sizeof(primes[0]), N,
			     fs);
	if (rc != FUT_OK) {
		fprintf(stderr, "mpi_primes: submit: %s\n", fut_strerror(rc));
		fut_executor_free(ex);
		MPI_Finalize();
		return 1;
	}
	int bad = 0;
	for (size_t i = 0; i < N; i++) {
		const void *data = NULL;
		size_t len = 0;
		rc = fut_result_bytes(fs[i], FUT_FOREVER, &data, &len);
		if (rc != FUT_OK || len != 1) {
			fprintf(stderr, "mpi_primes: %llu: %s\n",
				(unsigned long long)primes[i],
				fut_error_message(fs[i]));
			bad = 1;
		} else {
			unsigned char p = *(const unsigned char *)data;
			printf("%llu is prime: %s\n",
			       (unsigned long long)primes[i],
			       p ? "True" : "False");
			bad |= p != expected[i];
		}
		fut_release(fs[i]);
	}
	fut_executor_free(ex);
	MPI_Finalize();
	return bad;
}
