/* Copied unchanged below this line from ../shared/mpi/floors.c, the measuring
 * program of the MPI design research (issue 14, ../shared/design-mpi.md). */
/*
 * MPI floors for the libfuture MPI backend research (design-mpi.md).
 *
 *   mpirun -np 2 ./floors lat N SIZE block   blocking Send/Recv ping-pong
 *   mpirun -np 2 ./floors lat N SIZE poll    Iprobe + nanosleep backoff
 *                                             on both sides (mpi4py's way)
 *   mpirun -np K ./floors farm N W B         rank 0 hands N 16-byte tasks
 *        to K-1 servers, W messages in flight per server, B tasks per
 *        message; a server answers each message with B 16-byte results
 *
 * Prints RESULT lines in ../../shared/PERF.md's format.  Loopback only: run
 * with --mca pml ob1 --mca btl self,vader,tcp --mca btl_tcp_if_include lo.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double backoff_max = 1e-3; /* seconds, as mpi4py's default */

static void nap(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

/* Waits for a message from src with tag; Iprobe + exponential backoff
 * (1 us .. backoff_max), as mpi4py.futures does. */
static void poll_recv(void *buf, int n, int src, int tag, MPI_Status *st)
{
	int flag = 0;
	double t = 0;
	for (;;) {
		MPI_Iprobe(src, tag, MPI_COMM_WORLD, &flag, st);
		if (flag)
			break;
		if (t > 0)
			nap(t);
		t = t == 0 ? backoff_max / 1024 : t * 2;
		if (t > backoff_max)
			t = backoff_max;
	}
	MPI_Recv(buf, n, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, MPI_COMM_WORLD,
		 st);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void lat(int rank, long n, int size, int poll)
{
	char *buf = calloc(1, (size_t)size + 1);
	MPI_Status st;
	enum {
		BLOCKS = 5
	};
	double us[BLOCKS];
	long per = n / BLOCKS;
	for (int b = -1; b < BLOCKS; b++) { /* block -1 warms up */
		long m = b < 0 ? 1000 : per;
		MPI_Barrier(MPI_COMM_WORLD);
		double t0 = MPI_Wtime();
		for (long i = 0; i < m; i++) {
			if (rank == 0) {
				MPI_Send(buf, size, MPI_BYTE, 1, 1,
					 MPI_COMM_WORLD);
				if (poll)
					poll_recv(buf, size, 1, 1, &st);
				else
					MPI_Recv(buf, size, MPI_BYTE, 1, 1,
						 MPI_COMM_WORLD, &st);
			} else if (rank == 1) {
				if (poll)
					poll_recv(buf, size, 0, 1, &st);
				else
					MPI_Recv(buf, size, MPI_BYTE, 0, 1,
						 MPI_COMM_WORLD, &st);
				MPI_Send(buf, size, MPI_BYTE, 0, 1,
					 MPI_COMM_WORLD);
			}
		}
		if (b >= 0)
			us[b] = (MPI_Wtime() - t0) / (double)m * 1e6;
	}
	if (rank == 0) {
		qsort(us, BLOCKS, sizeof us[0], cmp_d);
		int np;
		MPI_Comm_size(MPI_COMM_WORLD, &np);
		printf("RESULT workload=W-MPI1 impl=c-%s-np%d n=%ld us_per_op=%.2f"
		       " (min %.2f max %.2f)\n",
		       poll ? "poll" : "block", np, per * BLOCKS,
		       us[BLOCKS / 2], us[0], us[BLOCKS - 1]);
	}
	free(buf);
}

/* A task is {u64 id, u64 x}; its result {u64 id, u64 x + 1}. */
static void farm(int rank, int np, long n, int w, int batch)
{
	int nserv = np - 1;
	size_t msg = (size_t)batch * 16;
	uint64_t *buf = malloc(msg);
	MPI_Status st;
	if (rank != 0) { /* server */
		for (;;) {
			MPI_Recv(buf, (int)msg, MPI_BYTE, 0, MPI_ANY_TAG,
				 MPI_COMM_WORLD, &st);
			if (st.MPI_TAG == 2)
				break;
			int cnt;
			MPI_Get_count(&st, MPI_BYTE, &cnt);
			for (int i = 0; i < cnt / 16; i++)
				buf[2 * i + 1] += 1;
			MPI_Send(buf, cnt, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
		}
		free(buf);
		return;
	}
	/* client: keep w messages in flight per server */
	/* Sends are nonblocking: a blocking send of a large batch while the
	 * server blocks sending its results back deadlocks (rendezvous). */
	int nslots = nserv * w;
	uint64_t *outs = malloc(msg * (size_t)nslots), sum = 0, want = 0;
	MPI_Request *reqs = malloc(sizeof(MPI_Request) * (size_t)nslots);
	for (int i = 0; i < nslots; i++)
		reqs[i] = MPI_REQUEST_NULL;
	long sent = 0, done = 0;
	int *inflight = calloc((size_t)np, sizeof(int));
	unsigned long *seq = calloc((size_t)np, sizeof(unsigned long));
	double t0 = MPI_Wtime();
	for (;;) {
		int progressed = 0;
		for (int s = 1; s <= nserv && sent < n; s++) {
			while (inflight[s] < w && sent < n) {
				/* Results from one server come back in the order
				 * of its tasks, so this slot's last send has been
				 * received already: the wait returns at once. */
				int k = 0,
				    slot = (s - 1) * w + (int)(seq[s]++ % w);
				MPI_Wait(&reqs[slot], MPI_STATUS_IGNORE);
				uint64_t *out = outs + (size_t)slot * 2 * batch;
				for (; k < batch && sent < n; k++, sent++) {
					out[2 * k] = (uint64_t)sent;
					out[2 * k + 1] = (uint64_t)sent;
					want += (uint64_t)sent + 1;
				}
				MPI_Isend(out, k * 16, MPI_BYTE, s, 1,
					  MPI_COMM_WORLD, &reqs[slot]);
				inflight[s]++;
				progressed = 1;
			}
		}
		if (done == n)
			break;
		(void)progressed;
		MPI_Recv(buf, (int)msg, MPI_BYTE, MPI_ANY_SOURCE, 1,
			 MPI_COMM_WORLD, &st);
		int cnt;
		MPI_Get_count(&st, MPI_BYTE, &cnt);
		for (int i = 0; i < cnt / 16; i++)
			sum += buf[2 * i + 1];
		done += cnt / 16;
		inflight[st.MPI_SOURCE]--;
	}
	double dt = MPI_Wtime() - t0;
	MPI_Waitall(nslots, reqs, MPI_STATUSES_IGNORE);
	for (int s = 1; s <= nserv; s++)
		MPI_Send(outs, 0, MPI_BYTE, s, 2, MPI_COMM_WORLD);
	printf("RESULT workload=W-MPI2 impl=c-farm-np%d-w%d-b%d n=%ld rate=%.0f"
	       " check=%s\n",
	       np, w, batch, n, (double)n / dt, sum == want ? "ok" : "BAD");
	free(outs);
	free(reqs);
	free(buf);
	free(inflight);
	free(seq);
}

int main(int argc, char **argv)
{
	int prov, rank, np;
	MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &prov);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &np);
	const char *e = getenv("BACKOFF");
	if (e)
		backoff_max = atof(e);
	if (argc >= 5 && strcmp(argv[1], "lat") == 0)
		lat(rank, atol(argv[2]), atoi(argv[3]),
		    strcmp(argv[4], "poll") == 0);
	else if (argc >= 5 && strcmp(argv[1], "farm") == 0)
		farm(rank, np, atol(argv[2]), atoi(argv[3]), atoi(argv[4]));
	else if (rank == 0)
		fprintf(stderr, "usage: see the comment at the top\n");
	MPI_Finalize();
	return 0;
}
