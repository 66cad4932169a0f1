/*
 * test_shared_memory.c: fut_task_result_buffer on both pools, and the
 * process pool's results and inputs in shared memory.
 *
 * - the thread pool: the buffer becomes the result; a failure, a later
 *   return or a second buffer replaces it; bad calls give NULL and change
 *   nothing;
 * - the process pool: results of 0 bytes, 1 byte, the shared-memory
 *   threshold minus one, the threshold, plus one and 256 MiB, checked byte
 *   for byte, the large ones seen in /proc/self/maps as a mapping of the
 *   worker's memfd while the future holds them, and not after;
 * - nothing lost or leaked: a worker that dies holding its buffer, or
 *   after its memfd was sent but before its record, an interrupted task,
 *   a future released before its result came, a pool freed with results
 *   unread, a worker whose memfd cannot be made (RLIMIT_NOFILE, ENOMEM:
 *   the pipe instead), a caller with no fd free to take the memfd in.
 *   Each ends with this process's fd count and its memfd mappings in
 *   /proc/self/maps where they were;
 * - large inputs of fut_submit_bytes: 0 and 1 byte, the threshold minus
 *   one, the threshold, plus one and 256 MiB, checked byte for byte by
 *   the task, which also says whether they lay in a memfd mapping; the
 *   caller's memfd is closed once the result came; a caller with no fd
 *   to spare copies the input as before; a worker that dies or is
 *   interrupted holding its input leaks nothing.
 * Timeouts only keep a bug from hanging the run; nothing is timed.
 */
#include <sys/sysinfo.h>

#include "pp_test.h"

#define THRESHOLD ((size_t)FUT__TASK_SHARED_MIN)
#define HUGE_LEN ((size_t)256 << 20)

/* ------------------------------------------------------------------ */
/* What /proc says                                                     */

/* Lines of /proc/self/maps naming a memfd `name`; with addr, only the
 * one that holds addr. */
static int memfd_maps(const char *name, const void *addr)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (f == NULL)
		return -1;
	char line[512];
	int n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;
		if (strstr(line, name) == NULL ||
		    sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		if (addr == NULL ||
		    ((uintptr_t)addr >= lo && (uintptr_t)addr < hi))
			n++;
	}
	fclose(f);
	return n;
}

/* The same for the memfds of shared results. */
static int shared_maps(const void *addr)
{
	return memfd_maps("memfd:libfuture-result", addr);
}

struct counts {
	int fds, maps;
};

static struct counts counts_now(void)
{
	return (struct counts){ count_fds(), shared_maps(NULL) };
}

/* The counts are back where they were.  The manager thread drops its
 * reference to a future just after completing it, so the last release
 * (and the unmapping) may come a moment after the caller's: wait for it,
 * within LONG_WAIT. */
static void wait_counts(struct counts was, bool fds)
{
	struct counts now = counts_now();
	int64_t deadline = fut__now_ns() + (int64_t)(LONG_WAIT * 1e9);
	if (!fds)
		now.fds = was.fds = 0;
	while ((now.fds != was.fds || now.maps != was.maps) &&
	       fut__now_ns() < deadline) {
		sched_yield();
		now = counts_now();
		if (!fds)
			now.fds = 0;
	}
	if (now.fds != was.fds || now.maps != was.maps)
		diag("fds %d -> %d, memfd maps %d -> %d\n", was.fds, now.fds,
		     was.maps, now.maps);
	CHECK(now.fds == was.fds);
	CHECK(now.maps == was.maps);
}

/* Both counts, once every pool is gone. */
static void expect_counts(struct counts was)
{
	wait_counts(was, true);
}

/* The memfd mappings only (a pool's own fds are open). */
static void expect_maps(struct counts was)
{
	wait_counts(was, false);
}

/* ------------------------------------------------------------------ */
/* The task                                                            */

enum {
	RB_FILL,	/* a buffer of len bytes, filled with the pattern */
	RB_FILL_DIE,	/* fills it, then SIGKILLs its worker */
	RB_FILL_BLOCK,	/* fills it, counts itself in *started, blocks */
	RB_FILL_FAIL,	/* fills it, then fails with code 7 */
	RB_TWICE,	/* a first buffer of 2 * len, then one of len */
	RB_RETURN,	/* a buffer, then fut_task_return_bytes of 8 bytes */
	RB_NO_FDS,	/* RLIMIT_NOFILE 0 while it asks for the buffer */
	RB_NO_MEMORY,	/* the memfd fails with ENOMEM */
	RB_SEGV,	/* crashes its worker */
	RB_BAD_CALLS,	/* NULL for bad calls; then a buffer of len */
	RB_INPUT,	/* checks its input: struct rb_in, then the pattern */
	RB_INPUT_DIE,	/* checks its input, then SIGKILLs its worker */
	RB_INPUT_BLOCK, /* checks its input, counts itself, blocks */
};

struct rb_in {
	uint32_t op;
	uint32_t pad;
	uint64_t len;
};

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 131u + (i >> 12) + 5u);
}

static void fill(unsigned char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		b[i] = pattern(i);
}

static bool matches(const unsigned char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != pattern(i))
			return false;
	return true;
}

/* What RB_INPUT answers. */
struct input_report {
	uint64_t len;	  /* of the whole input */
	uint32_t matches; /* the pattern after the header was intact */
	uint32_t shared;  /* the input lay in a memfd mapping */
};

static void input_task(fut_task *t, const unsigned char *in, size_t n,
		       uint32_t op)
{
	const size_t h = sizeof(struct rb_in);
	struct input_report rep = { n, 1, 0 };
	for (size_t i = h; i < n; i++)
		if (in[i] != pattern(i))
			rep.matches = 0;
	rep.shared = memfd_maps("memfd:libfuture-input", in) == 1;
	if (op == RB_INPUT_DIE)
		(void)raise(SIGKILL);
	if (op == RB_INPUT_BLOCK) {
		atomic_fetch_add(started, 1);
		block_for_an_hour();
	}
	(void)fut_task_return_bytes(t, &rep, sizeof(rep));
}

static void rb_task(fut_task *t)
{
	size_t n = 0;
	const struct rb_in *in = fut_task_input(t, &n);
	if (n >= sizeof(*in) && in->op >= RB_INPUT) {
		input_task(t, (const unsigned char *)in, n, in->op);
		return;
	}
	if (n != sizeof(*in)) {
		(void)fut_task_fail(t, 99, "bad input");
		return;
	}
	size_t len = (size_t)in->len;
	unsigned char *b = NULL;
	struct rlimit lim, none;
	switch (in->op) {
	case RB_TWICE:
		b = fut_task_result_buffer(t, 2 * len + 1);
		if (b == NULL)
			break;
		memset(b, 0xEE, 2 * len + 1);
		b = fut_task_result_buffer(t, len);
		break;
	case RB_NO_FDS:
		if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
			break;
		none = lim;
		none.rlim_cur = 0;
		b = setrlimit(RLIMIT_NOFILE, &none) == 0 ?
			    fut_task_result_buffer(t, len) :
			    NULL;
		(void)setrlimit(RLIMIT_NOFILE, &lim);
		break;
	case RB_NO_MEMORY:
		fut__pp_shared_fail_next(ENOMEM);
		b = fut_task_result_buffer(t, len);
		break;
	case RB_BAD_CALLS:
		b = fut_task_result_buffer(t, 3);
		if (b == NULL || fut_task_result_buffer(NULL, 1) != NULL ||
		    fut_task_result_buffer(t, FUT_MAX_BYTES + 1) != NULL ||
		    fut_task_result_buffer(t, SIZE_MAX) != NULL) {
			(void)fut_task_fail(t, 98, "bad call not refused");
			return;
		}
		/* The refused calls left the first buffer in place. */
		memcpy(b, "abc", 3);
		b = fut_task_result_buffer(t, len);
		break;
	case RB_SEGV:
		(void)raise(SIGSEGV);
		return;
	default:
		b = fut_task_result_buffer(t, len);
		break;
	}
	if (b == NULL) {
		(void)fut_task_fail(t, 97, "no result buffer");
		return;
	}
	fill(b, len);
	switch (in->op) {
	case RB_FILL_DIE:
		(void)raise(SIGKILL);
		break;
	case RB_FILL_BLOCK:
		atomic_fetch_add(started, 1);
		block_for_an_hour();
		break;
	case RB_FILL_FAIL:
		(void)fut_task_fail(t, 7, "failed after filling");
		/* Settled: no buffer may be had now. */
		if (fut_task_result_buffer(t, 1) != NULL)
			(void)fut_task_fail(t, 96, "buffer after settling");
		break;
	case RB_RETURN:
		(void)fut_task_return_bytes(t, "returned", 8);
		break;
	default:
		break;
	}
}

static fut_future *submit_rb(fut_executor *ex, uint32_t op, size_t len)
{
	struct rb_in in = { op, 0, len };
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, rb_task, &in, sizeof(in), &f) == FUT_OK);
	return f;
}

/* f's result is len pattern bytes; shared: whether they lie in a memfd
 * mapping of this process. */
static void expect_pattern(fut_future *f, size_t len, bool shared)
{
	const void *data = NULL;
	size_t got = 1;
	int rc = fut_result_bytes(f, LONG_WAIT, &data, &got);
	explain(f, rc, FUT_OK);
	CHECK(rc == FUT_OK);
	CHECK(got == len);
	CHECK(len == 0 || data != NULL);
	CHECK(matches(data, len));
	if (len != 0)
		CHECK(shared_maps(data) == (shared ? 1 : 0));
}

/* ------------------------------------------------------------------ */
/* The thread pool                                                     */

static fut_executor *thread_pool(void)
{
	fut_executor *ex = NULL;
	assert_int_equal(fut_thread_pool_new(&ex, NULL), FUT_OK);
	return ex;
}

static void test_thread_pool_buffer_becomes_the_result(void **state)
{
	(void)state;
	fut_executor *ex = thread_pool();
	size_t lens[] = { 0, 1, 4096, THRESHOLD + 1 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		fut_future *f = submit_rb(ex, RB_FILL, lens[i]);
		expect_pattern(f, lens[i], false);
		fut_release(f);
	}
	fut_executor_free(ex);
}

static void
test_thread_pool_buffer_gives_way_to_a_failure_or_a_return(void **state)
{
	(void)state;
	fut_executor *ex = thread_pool();
	fut_future *f = submit_rb(ex, RB_FILL_FAIL, 1000);
	assert_int_equal(final_code(f), FUT_ETASK);
	assert_int_equal(fut_task_code(f), 7);
	fut_release(f);

	f = submit_rb(ex, RB_RETURN, 1000);
	const void *data = NULL;
	size_t len = 0;
	assert_int_equal(fut_result_bytes(f, LONG_WAIT, &data, &len), FUT_OK);
	assert_int_equal(len, 8);
	assert_memory_equal(data, "returned", 8);
	fut_release(f);

	f = submit_rb(ex, RB_TWICE, 1000);
	expect_pattern(f, 1000, false);
	fut_release(f);
	fut_executor_free(ex);
}

static void test_bad_calls_give_null_and_change_nothing(void **state)
{
	(void)state;
	assert_null(fut_task_result_buffer(NULL, 0));
	fut_executor *ex = thread_pool();
	fut_future *f = submit_rb(ex, RB_BAD_CALLS, 100);
	expect_pattern(f, 100, false);
	fut_release(f);
	fut_executor_free(ex);

	ex = new_pool(1);
	f = submit_rb(ex, RB_BAD_CALLS, THRESHOLD);
	expect_pattern(f, THRESHOLD, true);
	fut_release(f);
	fut_executor_free(ex);
}

/* ------------------------------------------------------------------ */
/* The process pool: sizes                                             */

static void test_process_pool_results_of_every_size_arrive_whole(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(2);
	struct {
		size_t len;
		bool shared;
	} cases[] = {
		{ 0, false },
		{ 1, false },
		{ THRESHOLD - 1, false },
		{ THRESHOLD, true },
		{ THRESHOLD + 1, true },
		{ HUGE_LEN, true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fut_future *f = submit_rb(ex, RB_FILL, cases[i].len);
		expect_pattern(f, cases[i].len, cases[i].shared);
		fut_release(f);
		/* Released: its mapping goes. */
		expect_maps(was);
	}
	fut_executor_free(ex);
	expect_counts(was);
}

static void test_a_second_buffer_replaces_the_first(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_rb(ex, RB_TWICE, THRESHOLD + 10);
	expect_pattern(f, THRESHOLD + 10, true);
	fut_release(f);
	f = submit_rb(ex, RB_RETURN, THRESHOLD + 10);
	const void *data = NULL;
	size_t len = 0;
	CHECK(fut_result_bytes(f, LONG_WAIT, &data, &len) == FUT_OK);
	CHECK(len == 8 && memcmp(data, "returned", 8) == 0);
	fut_release(f);
	f = submit_rb(ex, RB_FILL_FAIL, THRESHOLD + 10);
	CHECK(final_code(f) == FUT_ETASK);
	CHECK(fut_task_code(f) == 7);
	fut_release(f);
	fut_executor_free(ex);
	expect_counts(was);
}

static void test_many_shared_results_held_then_released(void **state)
{
	(void)state;
	enum {
		N = 24
	};
	struct counts was = counts_now();
	fut_executor *ex = new_pool(2);
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		fs[i] = submit_rb(ex, RB_FILL, THRESHOLD + (size_t)i * 4099);
	for (int i = 0; i < N; i++)
		expect_pattern(fs[i], THRESHOLD + (size_t)i * 4099, true);
	/* Every result held: one mapping each, no fd. */
	CHECK(shared_maps(NULL) == was.maps + N);
	for (int i = 0; i < N; i++)
		fut_release(fs[i]);
	fut_executor_free(ex);
	expect_counts(was);
}

/* ------------------------------------------------------------------ */
/* The process pool: nothing lost or leaked                            */

static void test_a_worker_dying_with_its_buffer_leaks_nothing(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_rb(ex, RB_FILL_DIE, THRESHOLD * 4);
	CHECK(final_code(f) == FUT_ECRASHED);
	fut_release(f);
	/* The pool goes on. */
	f = submit_rb(ex, RB_FILL, THRESHOLD * 4);
	expect_pattern(f, THRESHOLD * 4, true);
	fut_release(f);
	fut_executor_free(ex);
	expect_counts(was);
}

static void test_a_memfd_sent_before_its_worker_died_is_not_kept(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(1);
	/* One worker and five inputs: chunks of two, so the first frame
	 * holds the shared result and then the crash; the result's record,
	 * batched with the frame's, most often dies unsent behind its memfd
	 * (that task then runs again), or else came back first. */
	struct rb_in in[5] = {
		{ RB_FILL, 0, THRESHOLD * 2 },
		{ RB_SEGV, 0, 0 },
		{ RB_FILL, 0, 10 },
		{ RB_FILL, 0, THRESHOLD },
		{ RB_FILL, 0, 1 },
	};
	fut_future *fs[5];
	CHECK(fut_submit_many(ex, rb_task, in, sizeof(in[0]), 5, fs) == FUT_OK);
	expect_pattern(fs[0], THRESHOLD * 2, true);
	CHECK(final_code(fs[1]) == FUT_ECRASHED);
	expect_pattern(fs[2], 10, false);
	expect_pattern(fs[3], THRESHOLD, true);
	expect_pattern(fs[4], 1, false);
	for (int i = 0; i < 5; i++)
		fut_release(fs[i]);
	fut_executor_free(ex);
	expect_counts(was);
}

static void
test_an_interrupted_task_holding_its_buffer_leaks_nothing(void **state)
{
	(void)state;
	struct counts was = counts_now();
	atomic_store(started, 0);
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_rb(ex, RB_FILL_BLOCK, THRESHOLD * 2);
	wait_started(&f, 1, 1);
	CHECK(fut_interrupt(f) == FUT_OK);
	CHECK(final_code(f) == FUT_ECANCELLED);
	fut_release(f);
	fut_executor_free(ex);
	expect_counts(was);
}

static void
test_a_future_released_before_its_result_came_leaks_nothing(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(1);
	for (int i = 0; i < 4; i++)
		fut_release(submit_rb(ex, RB_FILL, THRESHOLD * 2));
	/* One worker, in order: once this one is back, those were taken
	 * in, completed and unmapped. */
	fut_future *f = submit_rb(ex, RB_FILL, 3);
	expect_pattern(f, 3, false);
	fut_release(f);
	expect_maps(was);
	fut_executor_free(ex);
	expect_counts(was);
}

static void test_a_pool_freed_with_results_unread_leaks_nothing(void **state)
{
	(void)state;
	enum {
		N = 6
	};
	struct counts was = counts_now();
	fut_executor *ex = new_pool(2);
	fut_future *fs[N];
	for (int i = 0; i < N; i++)
		fs[i] = submit_rb(ex, RB_FILL, THRESHOLD + (size_t)i);
	fut_executor_free(ex); /* waits for them */
	CHECK(shared_maps(NULL) == was.maps + N);
	for (int i = 0; i < N; i++) {
		expect_pattern(fs[i], THRESHOLD + (size_t)i, true);
		fut_release(fs[i]);
	}
	expect_counts(was);
}

static void test_no_memfd_falls_back_to_the_pipe(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_rb(ex, RB_NO_FDS, THRESHOLD * 3);
	expect_pattern(f, THRESHOLD * 3, false);
	fut_release(f);
	f = submit_rb(ex, RB_NO_MEMORY, THRESHOLD * 3);
	expect_pattern(f, THRESHOLD * 3, false);
	fut_release(f);
	/* The next one is shared again. */
	f = submit_rb(ex, RB_FILL, THRESHOLD * 3);
	expect_pattern(f, THRESHOLD * 3, true);
	fut_release(f);
	fut_executor_free(ex);
	expect_counts(was);
}

static void
test_a_caller_with_no_fd_free_fails_the_task_with_emfile(void **state)
{
	(void)state;
	if (under_valgrind())
		skip(); /* it applies the limit to its own calls, not to
			 * the fds SCM_RIGHTS installs */
	struct rlimit lim;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &lim), 0);
	fut_executor *ex = new_pool(1);
	/* The worker is up (it took the limit of its start). */
	fut_future *f = submit_rb(ex, RB_FILL, 1);
	expect_pattern(f, 1, false);
	fut_release(f);
	struct counts was = counts_now();
	int low = lowest_free_fd();
	assert_true(low > 0);
	struct rlimit tight = lim;
	tight.rlim_cur = (rlim_t)low;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
	if (lowest_free_fd() >= 0) {
		/* valgrind keeps this limit to itself */
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
		fut_executor_free(ex);
		skip();
	}
	f = submit_rb(ex, RB_FILL, THRESHOLD);
	int rc = final_code(f);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	explain(f, rc, FUT_ESYS);
	CHECK(rc == FUT_ESYS);
	CHECK(fut_task_code(f) == EMFILE);
	fut_release(f);
	expect_counts(was);
	/* The worker goes on. */
	f = submit_rb(ex, RB_FILL, THRESHOLD);
	expect_pattern(f, THRESHOLD, true);
	fut_release(f);
	fut_executor_free(ex);
}

static void
test_a_buffer_larger_than_the_machine_is_null_not_a_crash(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	skip(); /* their allocators die on a request they cannot meet */
#endif
	struct sysinfo si;
	assert_int_equal(sysinfo(&si), 0);
	if (FUT_MAX_BYTES / si.mem_unit <= si.totalram + si.totalswap)
		skip(); /* a machine with more than FUT_MAX_BYTES */
	struct counts was = counts_now();
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_rb(ex, RB_FILL, FUT_MAX_BYTES);
	CHECK(final_code(f) == FUT_ETASK);
	CHECK(fut_task_code(f) == 97); /* NULL: "no result buffer" */
	fut_release(f);
	f = submit_rb(ex, RB_FILL, THRESHOLD);
	expect_pattern(f, THRESHOLD, true);
	fut_release(f);
	fut_executor_free(ex);
	expect_counts(was);
}

/* ------------------------------------------------------------------ */
/* The process pool: inputs in shared memory                           */

/* An input of len bytes (at least a struct rb_in): op, then the pattern. */
static fut_future *submit_input(fut_executor *ex, uint32_t op, size_t len)
{
	unsigned char *buf = malloc(len);
	CHECK(buf != NULL);
	struct rb_in head = { op, 0, len };
	fill(buf, len);
	memcpy(buf, &head, sizeof(head));
	fut_future *f = NULL;
	CHECK(fut_submit_bytes(ex, rb_task, buf, len, &f) == FUT_OK);
	free(buf);
	return f;
}

static void expect_input(fut_future *f, size_t len, bool shared)
{
	const void *data = NULL;
	size_t got = 0;
	int rc = fut_result_bytes(f, LONG_WAIT, &data, &got);
	explain(f, rc, FUT_OK);
	CHECK(rc == FUT_OK);
	CHECK(got == sizeof(struct input_report));
	struct input_report rep;
	memcpy(&rep, data, sizeof(rep));
	CHECK(rep.len == len);
	CHECK(rep.matches == 1);
	if (rep.shared != (shared ? 1u : 0u))
		diag("input of %zu bytes: shared %u\n", len, rep.shared);
	CHECK(rep.shared == (shared ? 1u : 0u));
}

static void test_process_pool_inputs_of_every_size_arrive_whole(void **state)
{
	(void)state;
	struct counts was = counts_now();
	fut_executor *ex = new_pool(2);
	const size_t h = sizeof(struct rb_in);
	struct {
		size_t len;
		bool shared;
	} cases[] = {
		{ h, false },
		{ h + 1, false },
		{ THRESHOLD - 1, false },
		{ THRESHOLD, true },
		{ THRESHOLD + 1, true },
		{ HUGE_LEN, true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fut_future *f = submit_input(ex, RB_INPUT, cases[i].len);
		expect_input(f, cases[i].len, cases[i].shared);
		fut_release(f);
	}
	fut_executor_free(ex);
	expect_counts(was);
}

static void
test_the_callers_input_memfd_is_closed_once_the_result_came(void **state)
{
	(void)state;
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_input(ex, RB_INPUT, 100);
	expect_input(f, 100, false);
	fut_release(f);
	/* The pool is up: its fds are counted in both. */
	int fds = count_fds();
	fut_future *fs[4];
	for (int i = 0; i < 4; i++)
		fs[i] = submit_input(ex, RB_INPUT, THRESHOLD * 2);
	for (int i = 0; i < 4; i++)
		expect_input(fs[i], THRESHOLD * 2, true);
	/* Held, done: no fd of theirs is left. */
	CHECK(count_fds() == fds);
	for (int i = 0; i < 4; i++)
		fut_release(fs[i]);
	fut_executor_free(ex);
}

static void test_a_caller_with_no_fd_to_spare_copies_the_input(void **state)
{
	(void)state;
	if (under_valgrind())
		skip(); /* it keeps RLIMIT_NOFILE to itself */
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_input(ex, RB_INPUT, 100);
	expect_input(f, 100, false);
	fut_release(f);
	struct counts was = counts_now();
	struct rlimit lim;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &lim), 0);
	int low = lowest_free_fd();
	assert_true(low > 0);
	struct rlimit tight = lim;
	tight.rlim_cur = (rlim_t)low;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
	f = submit_input(ex, RB_INPUT, THRESHOLD * 2);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	expect_input(f, THRESHOLD * 2, false);
	fut_release(f);
	expect_counts(was);
	fut_executor_free(ex);
}

static void test_a_pool_holds_at_most_its_cap_of_input_memfds(void **state)
{
	(void)state;
	enum {
		N = FUT__PP_MAX_SHARED_INPUTS + 16
	};
	atomic_store(started, 0);
	fut_executor *ex = new_pool(1);
	fut_future *block = submit_rb(ex, RB_FILL_BLOCK, 10);
	wait_started(&block, 1, 1);
	int fds = count_fds();
	fut_future **fs = calloc(N, sizeof(*fs));
	CHECK(fs != NULL);
	for (int i = 0; i < N; i++)
		fs[i] = submit_input(ex, RB_INPUT, THRESHOLD);
	/* Queued behind the blocked task: the first ones hold a memfd each,
	 * up to the cap; the rest were copied. */
	CHECK(count_fds() == fds + (int)FUT__PP_MAX_SHARED_INPUTS);
	CHECK(fut_interrupt(block) == FUT_OK);
	CHECK(final_code(block) == FUT_ECANCELLED);
	fut_release(block);
	for (int i = 0; i < N; i++) {
		expect_input(fs[i], THRESHOLD,
			     i < (int)FUT__PP_MAX_SHARED_INPUTS);
		fut_release(fs[i]);
	}
	free(fs);
	CHECK(count_fds() == fds);
	/* Below the cap again. */
	fut_future *f = submit_input(ex, RB_INPUT, THRESHOLD);
	expect_input(f, THRESHOLD, true);
	fut_release(f);
	fut_executor_free(ex);
}

static void
test_a_worker_dying_or_interrupted_with_its_input_leaks_nothing(void **state)
{
	(void)state;
	struct counts was = counts_now();
	atomic_store(started, 0);
	fut_executor *ex = new_pool(1);
	fut_future *f = submit_input(ex, RB_INPUT_DIE, THRESHOLD * 2);
	CHECK(final_code(f) == FUT_ECRASHED);
	fut_release(f);
	f = submit_input(ex, RB_INPUT_BLOCK, THRESHOLD * 2);
	wait_started(&f, 1, 1);
	CHECK(fut_interrupt(f) == FUT_OK);
	CHECK(final_code(f) == FUT_ECANCELLED);
	fut_release(f);
	/* A cancelled one never runs: its memfd goes with it. */
	f = submit_input(ex, RB_INPUT_BLOCK, THRESHOLD * 2);
	fut_future *g = submit_input(ex, RB_INPUT, THRESHOLD * 2);
	wait_started(&f, 1, 2);
	CHECK(fut_cancel(g));
	CHECK(fut_interrupt(f) == FUT_OK);
	CHECK(final_code(f) == FUT_ECANCELLED);
	fut_release(f);
	fut_release(g);
	fut_executor_free(ex);
	expect_counts(was);
}

int main(void)
{
	if (!pp_test_prepare())
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thread_pool_buffer_becomes_the_result),
		cmocka_unit_test(
			test_thread_pool_buffer_gives_way_to_a_failure_or_a_return),
		cmocka_unit_test(test_bad_calls_give_null_and_change_nothing),
		cmocka_unit_test(
			test_process_pool_results_of_every_size_arrive_whole),
		cmocka_unit_test(test_a_second_buffer_replaces_the_first),
		cmocka_unit_test(test_many_shared_results_held_then_released),
		cmocka_unit_test(
			test_a_worker_dying_with_its_buffer_leaks_nothing),
		cmocka_unit_test(
			test_a_memfd_sent_before_its_worker_died_is_not_kept),
		cmocka_unit_test(
			test_an_interrupted_task_holding_its_buffer_leaks_nothing),
		cmocka_unit_test(
			test_a_future_released_before_its_result_came_leaks_nothing),
		cmocka_unit_test(
			test_a_pool_freed_with_results_unread_leaks_nothing),
		cmocka_unit_test(test_no_memfd_falls_back_to_the_pipe),
		cmocka_unit_test(
			test_a_caller_with_no_fd_free_fails_the_task_with_emfile),
		cmocka_unit_test(
			test_a_buffer_larger_than_the_machine_is_null_not_a_crash),
		cmocka_unit_test(
			test_process_pool_inputs_of_every_size_arrive_whole),
		cmocka_unit_test(
			test_the_callers_input_memfd_is_closed_once_the_result_came),
		cmocka_unit_test(
			test_a_caller_with_no_fd_to_spare_copies_the_input),
		cmocka_unit_test(
			test_a_pool_holds_at_most_its_cap_of_input_memfds),
		cmocka_unit_test(
			test_a_worker_dying_or_interrupted_with_its_input_leaks_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
