/*
 * floors.c: what the hardware and kernel allow, measured in the same run
 * as libfuture and the peers, so that targets are ratios.
 *   W2: a thread hand-off and back: futex sleep/wake, mutex + condvar,
 *       and two spinning threads.
 *   W3: two raw threads splitting the W3 work statically.
 *   W4: two processes ping-ponging 16 bytes over two pipes.
 *   W5: 16-byte records streamed to a child and back in batches of 1000.
 *   W6: a child writing 64 MiB through one pipe.
 *   W6e: "fill once": one process faulting in, writing and reading back
 *       64 MiB, with no transfer at all.
 *   W7b: 256 raw threads that each block 20 ms, on glibc's own stacks,
 *       started by one thread, or as a binary tree (each new thread
 *       starts two more before it blocks): the thread start-up a pool
 *       cannot avoid unless it keeps threads or stacks; W7b-start is
 *       the process's CPU time until the last has started, per thread.
 *       floor-clone-prepared: the same 256 started by one thread with
 *       bare clone(2) (no glibc thread set-up, no TLS) on stacks mapped
 *       and made present before the clock starts: what the kernel alone
 *       costs, the most any pool that starts its threads can reach.
 * Each floor checks what it moved.
 */
#include <fcntl.h>
#include <sched.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "io_common.h"

static void fail(const char *what)
{
	fprintf(stderr, "floors: %s failed\n", what);
	exit(1);
}

/* ------------------------------------------------------------------ */
/* W2                                                                  */

static long rounds;
static _Atomic uint32_t word; /* 1: the peer's turn, 0: the main thread's */

static void futex_wait(_Atomic uint32_t *w, uint32_t v)
{
	while (atomic_load(w) == v)
		syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *futex_peer(void *arg)
{
	(void)arg;
	for (long i = 0; i < rounds; i++) {
		futex_wait(&word, 0);
		atomic_store(&word, 0);
		futex_wake(&word);
	}
	return NULL;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn;

static void *condvar_peer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	for (long i = 0; i < rounds; i++) {
		while (turn != 1)
			pthread_cond_wait(&cv, &mu);
		turn = 0;
		pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void *spin_peer(void *arg)
{
	(void)arg;
	for (long i = 0; i < rounds; i++) {
		while (atomic_load_explicit(&word, memory_order_acquire) != 1)
			;
		atomic_store_explicit(&word, 0, memory_order_release);
	}
	return NULL;
}

static void w2(long n)
{
	pthread_t t;
	rounds = n;
	pthread_create(&t, NULL, futex_peer, NULL);
	double t0 = bench_now();
	for (long i = 0; i < n; i++) {
		atomic_store(&word, 1);
		futex_wake(&word);
		futex_wait(&word, 1);
	}
	double d = bench_now() - t0;
	pthread_join(t, NULL);
	printf("RESULT workload=W2 impl=floor-futex n=%ld us_per_op=%.3f\n", n,
	       d / n * 1e6);

	pthread_create(&t, NULL, condvar_peer, NULL);
	t0 = bench_now();
	pthread_mutex_lock(&mu);
	for (long i = 0; i < n; i++) {
		turn = 1;
		pthread_cond_signal(&cv);
		while (turn != 0)
			pthread_cond_wait(&cv, &mu);
	}
	pthread_mutex_unlock(&mu);
	d = bench_now() - t0;
	pthread_join(t, NULL);
	printf("RESULT workload=W2 impl=floor-condvar n=%ld us_per_op=%.3f\n",
	       n, d / n * 1e6);

	rounds = n * 10;
	pthread_create(&t, NULL, spin_peer, NULL);
	t0 = bench_now();
	for (long i = 0; i < rounds; i++) {
		atomic_store_explicit(&word, 1, memory_order_release);
		while (atomic_load_explicit(&word, memory_order_acquire) != 0)
			;
	}
	d = bench_now() - t0;
	pthread_join(t, NULL);
	printf("RESULT workload=W2 impl=floor-spin n=%ld us_per_op=%.3f\n",
	       rounds, d / rounds * 1e6);
}

/* ------------------------------------------------------------------ */
/* W3                                                                  */

struct half {
	long from, to;
	uint64_t x;
};

static void *w3_half(void *arg)
{
	struct half *h = arg;
	for (long i = h->from; i < h->to; i++)
		h->x ^= w3_work((uint64_t)i);
	return NULL;
}

static void w3(long n)
{
	uint64_t want = 0;
	double t0 = bench_now();
	for (long i = 0; i < n; i++)
		want ^= w3_work((uint64_t)i);
	double serial = bench_now() - t0;
	struct half h[2] = { { 0, n / 2, 0 }, { n / 2, n, 0 } };
	pthread_t t;
	t0 = bench_now();
	pthread_create(&t, NULL, w3_half, &h[1]);
	w3_half(&h[0]);
	pthread_join(t, NULL);
	double d = bench_now() - t0;
	if ((h[0].x ^ h[1].x) != want)
		fail("W3 checksum");
	printf("RESULT workload=W3 impl=floor-2-threads-static n=%ld "
	       "speedup=%.2f\n",
	       n, serial / d);
}

/* ------------------------------------------------------------------ */
/* W4-W6: pipes between two processes                                  */

static void read_all(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r <= 0)
			fail("read");
		got += (size_t)r;
	}
}

static void write_all(int fd, const void *buf, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t r = write(fd, (const char *)buf + put, len - put);
		if (r <= 0)
			fail("write");
		put += (size_t)r;
	}
}

/* A child that echoes `total` bytes from in to out, `chunk` at a time. */
static pid_t echo_child(int in, int out, long total, size_t chunk)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	char *buf = malloc(chunk);
	for (long done = 0; done < total;) {
		size_t k = (size_t)(total - done) < chunk ?
				   (size_t)(total - done) :
				   chunk;
		read_all(in, buf, k);
		write_all(out, buf, k);
		done += (long)k;
	}
	_exit(0);
}

static void pipes(int a[2], int b[2])
{
	if (pipe2(a, O_CLOEXEC) != 0 || pipe2(b, O_CLOEXEC) != 0)
		fail("pipe");
}

static void close_pipes(int a[2], int b[2], pid_t pid)
{
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	waitpid(pid, NULL, 0);
}

static void w4(long n)
{
	int a[2], b[2];
	pipes(a, b);
	pid_t pid = echo_child(a[0], b[1], n * 16, 16);
	unsigned char msg[16], back[16];
	double t0 = bench_now();
	for (long i = 0; i < n; i++) {
		memset(msg, (int)(i & 0xff), sizeof(msg));
		write_all(a[1], msg, 16);
		read_all(b[0], back, 16);
		if (memcmp(msg, back, 16) != 0)
			fail("W4 echo");
	}
	double d = bench_now() - t0;
	close_pipes(a, b, pid);
	printf("RESULT workload=W4 impl=floor-pipe-pingpong n=%ld "
	       "us_per_op=%.3f\n",
	       n, d / n * 1e6);
}

static void w5(long n)
{
	enum {
		BATCH = 1000
	};
	int a[2], b[2];
	pipes(a, b);
	pid_t pid = echo_child(a[0], b[1], n * 16, BATCH * 16);
	static unsigned char out[BATCH * 16], in[BATCH * 16];
	uint64_t sent = 0, got = 0;
	double t0 = bench_now();
	for (long done = 0; done < n; done += BATCH) {
		long k = n - done < BATCH ? n - done : BATCH;
		for (long i = 0; i < k * 16; i++) {
			out[i] = (unsigned char)(done + i);
			sent += out[i];
		}
		write_all(a[1], out, (size_t)k * 16);
		read_all(b[0], in, (size_t)k * 16);
		for (long i = 0; i < k * 16; i++)
			got += in[i];
	}
	double d = bench_now() - t0;
	close_pipes(a, b, pid);
	if (sent != got)
		fail("W5 checksum");
	printf("RESULT workload=W5 impl=floor-pipe-batch1000 n=%ld rate=%.0f\n",
	       n, n / d);
}

/* As ../shared/bench-peers/floors.c's w6_floor: 1 MiB writes through a
 * pipe of the default size, and the destination's pages faulted in before
 * the clock starts ("as a pool's buffer would be").  Unlike it, the writer
 * is forked before the destination is mapped, and started once the clock
 * runs by a byte over a second pipe: the shared one forks inside its
 * clock, after faulting the destination in, so that every destination
 * page is copy-on-write shared with the child and its read() copies each
 * page again inside the clock (docs/perf-log.md, 2026-12-07).  The bytes
 * are checked, which the shared one does not; the check is outside the
 * clock. */
static void w6(void)
{
	const size_t total = (size_t)64 << 20, chunk = (size_t)1 << 20;
	int p[2], go[2];
	if (pipe2(p, O_CLOEXEC) != 0 || pipe2(go, O_CLOEXEC) != 0)
		fail("pipe");
	static unsigned char buf[1 << 20]; /* the child only reads it */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)i;
	pid_t pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		close(p[0]);
		close(go[1]);
		char start;
		read_all(go[0], &start, 1);
		for (size_t put = 0; put < total; put += chunk)
			write_all(p[1], buf, chunk);
		_exit(0);
	}
	close(p[1]);
	close(go[0]);
	/* Mapped after the fork (64 MiB is above malloc's mmap threshold):
	 * the parent's alone, no page of it shared with the child.  Filled
	 * with a non-zero byte: GCC turns malloc + memset(0) into calloc,
	 * which leaves fresh mmap'd pages untouched, and the read would then
	 * fault every page in inside the clock (as it did up to 2026-12-07). */
	unsigned char *dst = malloc(total);
	if (dst == NULL)
		fail("malloc");
	memset(dst, 0xa5, total);
	double t0 = bench_now();
	write_all(go[1], "", 1);
	read_all(p[0], dst, total);
	double d = bench_now() - t0;
	close(p[0]);
	close(go[1]);
	int status = 0;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		fail("W6 writer");
	for (size_t i = 0; i < total; i += 4093)
		if (dst[i] != (unsigned char)(i % chunk % 256))
			fail("W6 bytes");
	free(dst);
	printf("RESULT workload=W6 impl=floor-pipe-64MiB n=1 MBps=%.0f\n",
	       (double)total / d / 1e6);
}

/* W6e's floor: this one process faults in 64 MiB, writes W6e's bytes and
 * reads them back (what W6e's task and caller do, with no transfer). */
static void w6e_fill_once(void)
{
	const size_t total = (size_t)64 << 20;
	double t0 = bench_now();
	unsigned char *b = mmap(NULL, total, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		fail("mmap");
	for (size_t i = 0; i < total; i++)
		b[i] = (unsigned char)(i * 31 + 7);
	for (size_t i = 0; i < total; i++)
		if (b[i] != (unsigned char)(i * 31 + 7))
			fail("W6e bytes");
	double d = bench_now() - t0;
	munmap(b, total);
	printf("RESULT workload=W6e impl=floor-fill-once n=1 MBps=%.0f\n",
	       (double)total / d / 1e6);
}

/* ------------------------------------------------------------------ */
/* W7b                                                                 */

static pthread_t w7b_threads[W7B_TASKS];
static atomic_int w7b_next;
static int w7b_created, w7b_done; /* guarded by w7b_mu */
static pthread_mutex_t w7b_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t w7b_cv = PTHREAD_COND_INITIALIZER;
static bool w7b_tree;
static atomic_int w7b_started;
static double w7b_start_cpu; /* the process's CPU when the last started */

/* Counts one more in *n and tells the main thread. */
static void w7b_count(int *n)
{
	pthread_mutex_lock(&w7b_mu);
	if (++*n == W7B_TASKS)
		pthread_cond_signal(&w7b_cv);
	pthread_mutex_unlock(&w7b_mu);
}

static void w7b_start(int i);

static void *w7b_thread(void *arg)
{
	(void)arg;
	if (atomic_fetch_add(&w7b_started, 1) + 1 == W7B_TASKS)
		w7b_start_cpu = bench_cpu_now();
	for (int k = 0; w7b_tree && k < 2; k++) {
		int i = atomic_fetch_add(&w7b_next, 1);
		if (i < W7B_TASKS)
			w7b_start(i);
	}
	io_block_ms(W7_BLOCK_MS);
	w7b_count(&w7b_done);
	return NULL;
}

static void w7b_start(int i)
{
	if (pthread_create(&w7b_threads[i], NULL, w7b_thread, NULL) != 0)
		fail("W7b pthread_create");
	w7b_count(&w7b_created);
}

/* One round: the efficiency, 20 ms / the time until every thread is
 * done (as a pool's caller waits for every future). */
static void w7b(bool tree)
{
	w7b_tree = tree;
	w7b_created = w7b_done = 0;
	atomic_store(&w7b_next, tree ? 1 : W7B_TASKS);
	atomic_store(&w7b_started, 0);
	double c0 = bench_cpu_now();
	double t0 = bench_now();
	for (int i = 0; i < (tree ? 1 : W7B_TASKS); i++)
		w7b_start(i);
	pthread_mutex_lock(&w7b_mu);
	while (w7b_done < W7B_TASKS || w7b_created < W7B_TASKS)
		pthread_cond_wait(&w7b_cv, &w7b_mu);
	pthread_mutex_unlock(&w7b_mu);
	double d = bench_now() - t0;
	for (int i = 0; i < W7B_TASKS; i++)
		if (pthread_join(w7b_threads[i], NULL) != 0)
			fail("W7b pthread_join");
	printf("RESULT workload=W7b impl=floor-threads-%s n=%d "
	       "efficiency=%.3f\n",
	       tree ? "tree" : "one-starter", W7B_TASKS,
	       io_w7_ideal_s(W7B_TASKS, W7B_WORKERS) / d);
	/* The CPU a thread's start costs, creator and thread counted. */
	printf("RESULT workload=W7b-start impl=floor-threads-%s n=%d "
	       "cpu_us=%.1f\n",
	       tree ? "tree" : "one-starter", W7B_TASKS,
	       (w7b_start_cpu - c0) / W7B_TASKS * 1e6);
}

/* W7b on bare clone(2): the kernel's thread start and nothing else.  A
 * child shares the starter's TLS (no CLONE_SETTLS), so it makes raw
 * system calls only; the kernel clears its tid word when it has exited
 * (CLONE_CHILD_CLEARTID), before its stack is unmapped. */
#define CLONE_STACK (64u << 10)

static _Atomic uint32_t clone_done;
static pid_t clone_tids[W7B_TASKS];

static int clone_thread(void *arg)
{
	(void)arg;
	if (atomic_fetch_add(&w7b_started, 1) + 1 == W7B_TASKS)
		w7b_start_cpu = bench_cpu_now();
	struct timespec ts = { 0, W7_BLOCK_MS * 1000000L };
	while (syscall(SYS_nanosleep, &ts, &ts) != 0)
		;
	if (atomic_fetch_add(&clone_done, 1) + 1 == W7B_TASKS)
		futex_wake(&clone_done);
	return 0;
}

static void w7b_clone(void)
{
	size_t size = (size_t)W7B_TASKS * CLONE_STACK;
	char *stacks = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (stacks == MAP_FAILED)
		fail("W7b mmap");
	atomic_store(&clone_done, 0);
	atomic_store(&w7b_started, 0);
	const int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
			  CLONE_THREAD | CLONE_SYSVSEM | CLONE_PARENT_SETTID |
			  CLONE_CHILD_CLEARTID;
	double c0 = bench_cpu_now();
	double t0 = bench_now();
	for (int i = 0; i < W7B_TASKS; i++)
		if (clone(clone_thread, stacks + (size_t)(i + 1) * CLONE_STACK,
			  flags, NULL, &clone_tids[i], NULL,
			  &clone_tids[i]) < 0)
			fail("W7b clone");
	for (uint32_t n; (n = atomic_load(&clone_done)) < W7B_TASKS;)
		futex_wait(&clone_done, n);
	double d = bench_now() - t0;
	for (int i = 0; i < W7B_TASKS; i++) /* cleared once it has exited */
		for (pid_t t; (t = __atomic_load_n(&clone_tids[i],
						   __ATOMIC_ACQUIRE)) != 0;)
			syscall(SYS_futex, &clone_tids[i], FUTEX_WAIT, t, NULL,
				NULL, 0);
	munmap(stacks, size);
	printf("RESULT workload=W7b impl=floor-clone-prepared n=%d "
	       "efficiency=%.3f\n",
	       W7B_TASKS, io_w7_ideal_s(W7B_TASKS, W7B_WORKERS) / d);
	printf("RESULT workload=W7b-start impl=floor-clone-prepared n=%d "
	       "cpu_us=%.1f\n",
	       W7B_TASKS, (w7b_start_cpu - c0) / W7B_TASKS * 1e6);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	w2(bench_n(100000));
	w3(bench_n(2000));
	w4(bench_n(20000));
	w5(bench_n(200000));
	w6();
	w6e_fill_once();
	w7b(false);
	w7b(true);
	w7b_clone();
	return 0;
}
