/*
 * io_common.h: the constants of W7-W9 of PERF.md (blocking tasks on a
 * thread pool), shared by bench/bench_io.c and its peers
 * (bench/peers/io_glib.c; bench/peers/io_python.py repeats them).  Copied
 * from the project's shared bench-peers/io_common.h so that `make bench`
 * needs nothing outside this tree; keep the numbers equal to it.
 *
 * The seed's case for threads: I/O-bound work with a limited number of
 * connections.  A task that sleeps stands in for a blocking call (a disk
 * read, a query, a request on a LAN): the pool must keep every worker slot
 * busy while tasks are queued, whatever the tasks do.
 *
 *   W7  512 tasks that each block 20 ms, 64 workers: efficiency = ideal
 *       wall time (8 rounds x 20 ms) / measured wall time (1.0 is perfect).
 *   W7b 256 tasks that each block 20 ms, 256 workers: ideal 20 ms, so the
 *       pool's thread start-up shows.
 *   W8  6 tasks that block 300 ms, then 20,000 tiny tasks, 8 workers: the
 *       time (ms) until every tiny task is done (the blockers hold only 6
 *       of the 8 slots, so the tiny ones need not wait for them).
 *   W9  16 tasks that block on a gate, 16 workers: the time (ms) until all
 *       16 are running, worst of 20 rounds (a pool that leaves a queued
 *       task behind a blocked one while a slot is free never gets there:
 *       reported as the 2 s cap).
 *
 * BENCH_QUICK=1 (bench_n() in bench_common.h) divides the task counts and
 * W9's rounds by 10; the worker counts and block times stay.
 */
#ifndef IO_COMMON_H
#define IO_COMMON_H
#include <time.h>

#define W7_TASKS 512
#define W7_WORKERS 64
#define W7B_TASKS 256
#define W7B_WORKERS 256
#define W7_BLOCK_MS 20
#define W8_BLOCKERS 6
#define W8_BLOCK_MS 300
#define W8_TINY 20000
#define W8_WORKERS 8
#define W9_TASKS 16
#define W9_ROUNDS 20
#define W9_CAP_S 2.0
/* How often W9's waiters look: the gated tasks and the timing thread. */
#define W9_GATE_POLL_US 200
#define W9_WATCH_POLL_US 50

/* Blocks the calling thread for us microseconds, as a blocking call. */
static inline void io_block_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static inline void io_block_ms(int ms)
{
	io_block_us(ms * 1000L);
}

/* W7's ideal wall time in seconds: the tasks in full rounds of workers. */
static inline double io_w7_ideal_s(long tasks, long workers)
{
	return (double)((tasks + workers - 1) / workers) * W7_BLOCK_MS / 1e3;
}
#endif
