/*
 * stress.c: many threads submitting, cancelling, interrupting, waiting with
 * timeouts, iterating with as_completed, adding callbacks that submit, and
 * shutting down and freeing executors at random, while every thread holds
 * futures of executors that others free.
 *
 *   stress [seconds [seed]]     (or STRESS_SECONDS, STRESS_SEED;
 *                                STRESS_THREADS: 4 by default)
 *
 * The seed is printed first; the same seed replays the same choices in
 * each thread (the interleaving is the scheduler's).  Every future gets
 * one "final" done callback that checks its outcome against what its task
 * was asked to do and records the state it saw.  At the end, with every
 * executor freed, it checks the invariant: every submitted future reached
 * exactly one final state (its final callback ran once, and the state it
 * saw is the state the future keeps), every result that was set is the
 * right one, every other callback ran exactly once, and no fd or thread (or
 * child process) is left over.  Memory: make check runs it under ASan,
 * whose leak check runs at exit.  A watchdog aborts (with the seed) when
 * no thread has made progress for STRESS_WATCHDOG seconds (120 by default),
 * and says what each thread and main were doing; STRESS_ON_HANG="cmd"
 * runs `cmd <pid>` before that, or when a future is found not done in
 * time (tests/stress/on_hang.sh: the process tree and a debugger's
 * backtrace of every thread; make check-stress sets it where gdb is).
 *
 * Some tasks write their result in fut_task_result_buffer, one in eight
 * of them past 256 KiB (shared memory on the process pool).
 *
 * Executors come from a table of kinds: three thread pools and a process
 * pool.  Under AddressSanitizer the process pool is left out: the ASan
 * runtime of gcc 12 and clang 14 does not take its allocator's lock
 * across fork(), so a fork server forked while another thread of this
 * busy process is inside malloc inherits that lock held, and every worker
 * it forks hangs in its first malloc (seen: two workers asleep in
 * SizeClassAllocator64::GetFromAllocator).  gcc 12's TSan runtime does
 * not either: its stress hung so twice in about 85 runs under load, the
 * pool's futures RUNNING for ever and both workers asleep in the same
 * GetFromAllocator, from their first fut__malloc (2026-12-06; before,
 * in CI at ae7088a, as process futures not done after 60 s).  Under
 * TSan the process pool starts its fork server with FUT_START_EXEC, a
 * fresh exec that inherits no lock; glibc's malloc takes its locks
 * across fork, so the plain run keeps FUT_START_FORK.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "future.h"

#define MAX_THREADS 64
#define HELD 64		    /* futures a thread holds at once */
#define RETIRE_TIMEOUT 60.0 /* a held future not done by then is a bug */

/* ------------------------------------------------------------------ */
/* Executor kinds                                                      */

struct exec_kind {
	const char *name;
	int (*make)(fut_executor **out);
	bool pointer_tasks;	/* fut_submit works: tasks may share memory */
	bool may_crash;		/* a task may kill its worker process */
	bool interrupt_cancels; /* an interrupted running task ends
				   FUT_ECANCELLED (its worker is killed) */
	const char *submitting; /* a stress thread's op, for the reports */
};

static int make_thread_pool(fut_executor **out)
{
	return fut_thread_pool_new(out,
				   &(fut_thread_pool_opts){ .max_workers = 4 });
}

static int make_bounded_thread_pool(fut_executor **out)
{
	return fut_thread_pool_new(out,
				   &(fut_thread_pool_opts){ .max_workers = 3,
							    .max_queue = 16 });
}

static int ready(void *initarg)
{
	return initarg == NULL ? 0 : 1;
}

/* One worker and an initializer: a waiter never runs a task inline here,
 * and a task that waits for work queued behind it must be helped by its
 * own worker. */
static int make_single_init_thread_pool(fut_executor **out)
{
	return fut_thread_pool_new(
		out, &(fut_thread_pool_opts){ .max_workers = 1,
					      .initializer = ready });
}

#if defined(__SANITIZE_THREAD__)
#define TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_BUILD 1
#endif
#endif

static int make_process_pool(fut_executor **out)
{
#ifdef TSAN_BUILD
	int start = FUT_START_EXEC; /* see the top of this file */
#else
	int start = FUT_START_FORK;
#endif
	return fut_process_pool_new(
		out, &(fut_process_pool_opts){ .max_workers = 2,
					       .start_method = start });
}

static const struct exec_kind kinds[] = {
	{ "thread", make_thread_pool, true, false, false, "submit (thread)" },
	{ "thread-bounded", make_bounded_thread_pool, true, false, false,
	  "submit (thread-bounded)" },
	{ "thread-single-init", make_single_init_thread_pool, true, false,
	  false, "submit (thread-single-init)" },
	{ "process", make_process_pool, false, true, true, "submit (process)" },
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif
#ifdef ASAN_BUILD
static const size_t nkinds = NKINDS - 1; /* no process pool: see above */
#else
static const size_t nkinds = NKINDS;
#endif

/* The current executor of each kind: submitters hold the read lock while
 * they use one, a swap takes the write lock to replace it, then shuts the
 * old one down and frees it outside the lock.  Readers are preferred: a
 * task or callback that submits may take the read lock again inside a
 * submit that already holds it. */
static pthread_rwlock_t pools_lock;
static fut_executor *pools[NKINDS];

/* ------------------------------------------------------------------ */
/* Counters and checks                                                 */

static _Atomic long submitted, finals, extras_added, extras_run,
	callback_submits, nested_submits, swaps, self_frees, ops, retired,
	released_early, timed_out_waits, eagains, large_buffers;
static _Atomic long failures;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			check_failed(__LINE__, #cond);                         \
	} while (0)

static void check_failed(int line, const char *what)
{
	if (atomic_fetch_add(&failures, 1) < 20)
		fprintf(stderr, "stress: line %d: check failed: %s\n", line,
			what);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint32_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (uint32_t)(*s >> 11);
}

/* ------------------------------------------------------------------ */
/* Tasks                                                               */

enum task_kind {
	K_VALUE,
	K_FAIL,
	K_SLOW,
	K_NESTED,
	K_SWAP,
	K_CRASH,
	K_BUFFER
};

/* A task's input, by value: the same bytes on every executor. */
struct input {
	uint32_t task;	  /* enum task_kind */
	uint32_t n;	  /* the value to transform */
	uint32_t kind;	  /* index into kinds[] */
	uint32_t pointer; /* submitted with fut_submit (arg is the input) */
	uint64_t pool;	  /* the executor it was submitted to (K_SWAP) */
};

static uint64_t expected_value(uint32_t n)
{
	return (uint64_t)n * 2654435761u + 1;
}

static int expected_code(uint32_t n)
{
	return (int)(n % 1000) + 1;
}

/* K_BUFFER's result length: mostly the 8 bytes of the value, one in
 * eight times past 256 KiB (shared memory on a process pool). */
static size_t buffer_len(uint32_t n)
{
	return n % 8 == 0 ? (size_t)(256 << 10) + n % 4096 : 8;
}

/* K_BUFFER's byte i (from 8 on). */
static unsigned char buffer_byte(uint32_t n, size_t i)
{
	return (unsigned char)(i * 7 + n);
}

static void task(fut_task *t);

/* Submits a K_VALUE to the current executor of `kind`, from a task or a
 * callback.  Returns the future or NULL (no executor: the end is near). */
static fut_future *submit_value(uint32_t kind, uint32_t n)
{
	struct input in = { .task = K_VALUE, .n = n, .kind = kind };
	fut_future *g = NULL;
	pthread_rwlock_rdlock(&pools_lock);
	fut_executor *ex = pools[kind];
	int rc = ex != NULL ? fut_submit_bytes(ex, task, &in, sizeof(in), &g) :
			      FUT_OK;
	pthread_rwlock_unlock(&pools_lock);
	if (rc == FUT_EAGAIN)
		eagains++;
	else
		CHECK(rc == FUT_OK);
	return g;
}

/* A new executor of a kind, or NULL (FUT_EAGAIN is counted, anything else
 * is a failure). */
static fut_executor *make_executor(uint32_t kind)
{
	fut_executor *ex = NULL;
	int rc = kinds[kind].make(&ex);
	if (rc == FUT_EAGAIN)
		eagains++;
	else
		CHECK(rc == FUT_OK);
	return rc == FUT_OK ? ex : NULL;
}

/* The executors freed from one of their own tasks (swap_from_task): their
 * last threads finish their queues on their own, so their futures may
 * still be pending after main has freed the last executors.  An address
 * reused by a later executor is found too, which only spares that one's
 * futures the check at the end; past SELF_FREED_MAX, every one is. */
#define SELF_FREED_MAX 4096
static pthread_mutex_t self_freed_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t self_freed[SELF_FREED_MAX];
static size_t nself_freed;
static bool self_freed_overflow;

static void note_self_freed(const fut_executor *ex)
{
	pthread_mutex_lock(&self_freed_lock);
	if (nself_freed < SELF_FREED_MAX)
		self_freed[nself_freed++] = (uint64_t)(uintptr_t)ex;
	else
		self_freed_overflow = true;
	pthread_mutex_unlock(&self_freed_lock);
}

static bool was_self_freed(uint64_t ex)
{
	pthread_mutex_lock(&self_freed_lock);
	bool found = self_freed_overflow;
	for (size_t i = 0; !found && i < nself_freed; i++)
		found = self_freed[i] == ex;
	pthread_mutex_unlock(&self_freed_lock);
	return found;
}

/*
 * A task replaces its own executor (if it is still the current one of its
 * kind) and frees it: from one of the pool's own threads, shutdown with
 * wait is FUT_EINVAL and the free is left to the pool's last thread.  The
 * write lock is only tried: a submitter holding the read lock may be
 * waiting for room in this very pool.
 */
static void swap_from_task(uint32_t kind, fut_executor *own)
{
	CHECK(fut_executor_shutdown(own, 0) == FUT_EINVAL);
	fut_executor *fresh = make_executor(kind);
	if (fresh == NULL)
		return;
	if (pthread_rwlock_trywrlock(&pools_lock) != 0) {
		fut_executor_free(fresh);
		return;
	}
	bool mine = pools[kind] == own;
	if (mine)
		pools[kind] = fresh;
	pthread_rwlock_unlock(&pools_lock);
	if (mine)
		note_self_freed(own);
	fut_executor_free(mine ? own : fresh);
	if (mine)
		self_frees++;
}

/* The one task function, on every executor. */
static void task(fut_task *t)
{
	struct input in;
	size_t len;
	const void *p = fut_task_input(t, &len);
	if (p == NULL) { /* fut_submit: the argument is the input */
		p = fut_task_arg(t);
		len = sizeof(in);
	}
	if (len != sizeof(in)) {
		fut_task_fail(t, 9999, "bad input length %zu", len);
		return;
	}
	memcpy(&in, p, sizeof(in));
	switch (in.task) {
	case K_FAIL:
		fut_task_fail(t, expected_code(in.n), "failed %u", in.n);
		return;
	case K_SLOW:
		for (int i = 0; i < 8 && !fut_task_cancelled(t); i++) {
			struct timespec gap = { 0, 250 * 1000 };
			nanosleep(&gap, NULL);
		}
		break;
	case K_NESTED: {
		/* Submit to the current pool of this kind and wait for it
		 * without a deadline: a worker helps instead of blocking. */
		fut_future *g = submit_value(in.kind, in.n + 1);
		if (g != NULL) {
			nested_submits++;
			const void *d;
			size_t dlen;
			int rc = fut_result_bytes(g, FUT_FOREVER, &d, &dlen);
			/* FUT_EAGAIN: every thread of the pool waits and no
			 * thread could be added (api.md), counted as the
			 * submits' are. */
			if (rc == FUT_EAGAIN)
				eagains++;
			else if (rc != FUT_OK && rc != FUT_ECANCELLED) {
				const char *why = fut_error_message(g);
				fprintf(stderr,
					"stress: nested wait on %s: %s (%s)\n",
					kinds[in.kind].name, fut_strerror(rc),
					why ? why : "no message");
			}
			CHECK(rc == FUT_OK || rc == FUT_ECANCELLED ||
			      rc == FUT_EAGAIN);
			if (rc == FUT_OK) {
				uint64_t got;
				CHECK(dlen == sizeof(got));
				memcpy(&got, d, sizeof(got));
				CHECK(got == expected_value(in.n + 1));
			}
			fut_release(g);
		}
		break;
	}
	case K_SWAP:
		swap_from_task(in.kind, (fut_executor *)(uintptr_t)in.pool);
		break;
	case K_CRASH: /* only ever given to an executor that may crash */
		raise(SIGKILL);
		break;
	case K_BUFFER: {
		/* The value, then a pattern, written in the result buffer. */
		size_t blen = buffer_len(in.n);
		unsigned char *b = fut_task_result_buffer(t, blen);
		CHECK(b != NULL);
		if (b == NULL)
			break;
		uint64_t v = expected_value(in.n);
		memcpy(b, &v, sizeof(v));
		for (size_t i = sizeof(v); i < blen; i++)
			b[i] = buffer_byte(in.n, i);
		return;
	}
	default:
		break;
	}
	uint64_t v = expected_value(in.n);
	if (in.pointer)
		fut_task_return(t, (void *)(uintptr_t)v);
	else
		fut_task_return_bytes(t, &v, sizeof(v));
}

/* ------------------------------------------------------------------ */
/* The final callback: every future gets exactly one                   */

struct note {
	struct input in;
	_Atomic int refs;      /* the holder's and the callback's */
	_Atomic uint32_t seen; /* the state the callback saw; 0 before */
};

static void note_unref(struct note *n)
{
	if (atomic_fetch_sub(&n->refs, 1) == 1)
		free(n);
}

/* A note for a future: the holder's reference and the final callback's. */
static struct note *new_note(struct input in)
{
	struct note *n = calloc(1, sizeof(*n));
	n->in = in;
	atomic_init(&n->refs, 2);
	return n;
}

/* Checks a done future's outcome against what its task was asked. */
static void verify(fut_future *f, const struct input *in)
{
	const struct exec_kind *k = &kinds[in->kind];
	int state = fut_state(f);
	int err = fut_error(f);
	CHECK(state == FUT_FINISHED || state == FUT_CANCELLED);
	if (state == FUT_CANCELLED) {
		CHECK(err == FUT_ECANCELLED);
		return;
	}
	switch (err) {
	case FUT_OK: {
		CHECK(in->task != K_FAIL && in->task != K_CRASH);
		void *v = NULL;
		const void *d = NULL;
		size_t len = 0;
		if (in->pointer) {
			CHECK(fut_result(f, 0, &v) == FUT_OK);
			CHECK((uint64_t)(uintptr_t)v == expected_value(in->n));
		} else {
			CHECK(fut_result_bytes(f, 0, &d, &len) == FUT_OK);
			uint64_t got = 0;
			size_t want = in->task == K_BUFFER ? buffer_len(in->n) :
							     sizeof(got);
			CHECK(len == want);
			if (len == want)
				memcpy(&got, d, sizeof(got));
			CHECK(got == expected_value(in->n));
			/* A sample of the rest, and its last byte. */
			const unsigned char *b = d;
			if (len == want && len > sizeof(got)) {
				large_buffers++;
				for (size_t i = sizeof(got); i < len; i += 4093)
					CHECK(b[i] == buffer_byte(in->n, i));
				CHECK(b[len - 1] ==
				      buffer_byte(in->n, len - 1));
			}
		}
		break;
	}
	case FUT_ETASK: {
		CHECK(in->task == K_FAIL);
		CHECK(fut_task_code(f) == expected_code(in->n));
		char want[32];
		snprintf(want, sizeof(want), "failed %u", in->n);
		const char *msg = fut_error_message(f);
		CHECK(msg != NULL && strcmp(msg, want) == 0);
		break;
	}
	case FUT_ECRASHED:
		CHECK(k->may_crash && in->task == K_CRASH);
		break;
	case FUT_ECANCELLED: /* finished cancelled: an interrupted worker */
		CHECK(k->interrupt_cancels);
		break;
	default:
		fprintf(stderr, "stress: unexpected outcome %s (%s) on %s\n",
			fut_strerror(err), fut_error_message(f), k->name);
		failures++;
	}
}

static void on_final(fut_future *f, void *ud)
{
	struct note *n = ud;
	verify(f, &n->in);
	uint32_t state = (uint32_t)fut_state(f);
	CHECK(atomic_exchange(&n->seen, state) == 0); /* runs once */
	finals++;
	note_unref(n);
}

/* An extra callback: counts, and sometimes submits more work. */
struct extra {
	uint32_t kind;
	uint32_t n;
	bool submit;
};

static void watch(fut_future *f, struct note *n);

static void on_extra(fut_future *f, void *ud)
{
	struct extra *x = ud;
	CHECK(fut_done(f));
	if (x->submit) {
		fut_future *g = submit_value(x->kind, x->n);
		if (g != NULL) {
			struct note *n = new_note((struct input){
				.task = K_VALUE, .n = x->n, .kind = x->kind });
			atomic_init(&n->refs, 1); /* the callback's alone */
			watch(g, n);
			callback_submits++;
			fut_release(g); /* released at once: still completes */
		}
	}
	free(x);
	extras_run++;
}

/* Gives f its final callback. */
static void watch(fut_future *f, struct note *n)
{
	submitted++;
	int rc = fut_add_done_callback(f, on_final, n);
	CHECK(rc == FUT_OK);
	if (rc != FUT_OK)
		note_unref(n);
}

/* ------------------------------------------------------------------ */
/* A stress thread                                                     */

struct record {
	fut_future *f;
	struct note *note;
};

struct worker {
	uint64_t seed;
	struct record held[HELD];
	size_t n;
	_Atomic(const char *) doing; /* the op it is in, for a hang report */
	double slowest;		     /* the longest op, in seconds */
	const char *slowest_op;
};

/* What main is doing, for a hang report. */
static _Atomic(const char *) phase = "running";
static _Atomic(const char *) phase_kind = "";

/* STRESS_ON_HANG="cmd": runs `cmd <pid>` (tests/stress/on_hang.sh: the
 * process tree and every thread's backtrace), once, where the stress
 * finds itself stuck: the watchdog, or a future not done in time. */
static void on_hang(void)
{
	static atomic_flag ran = ATOMIC_FLAG_INIT;
	const char *cmd = getenv("STRESS_ON_HANG");
	if (cmd == NULL || atomic_flag_test_and_set(&ran))
		return;
	char line[512];
	snprintf(line, sizeof(line), "%s %d 1>&2", cmd, (int)getpid());
	if (system(line) != 0)
		fprintf(stderr, "stress: %s failed\n", line);
}

/* Waits for a held future, checks it against its final callback, and
 * drops it. */
static void retire(struct record *r)
{
	int rc = fut_result(r->f, RETIRE_TIMEOUT, NULL);
	if (rc == FUT_ETIMEDOUT) {
		fprintf(stderr,
			"stress: a future was not done after %.0f s (kind %s, "
			"task %u, state %d)\n",
			RETIRE_TIMEOUT, kinds[r->note->in.kind].name,
			r->note->in.task, fut_state(r->f));
		failures++;
		on_hang();
	}
	/* The final callback runs right after the state is published. */
	double until = now() + RETIRE_TIMEOUT;
	while (atomic_load(&r->note->seen) == 0 && now() < until)
		sched_yield();
	CHECK(atomic_load(&r->note->seen) == (uint32_t)fut_state(r->f));
	fut_release(r->f);
	note_unref(r->note);
	retired++;
}

static void retire_oldest(struct worker *w)
{
	retire(&w->held[0]);
	w->n--;
	memmove(&w->held[0], &w->held[1], w->n * sizeof(w->held[0]));
}

static void hold(struct worker *w, fut_future *f, struct note *n)
{
	if (w->n == HELD)
		retire_oldest(w);
	w->held[w->n++] = (struct record){ f, n };
	watch(f, n);
}

static struct record *pick(struct worker *w)
{
	return w->n == 0 ? NULL : &w->held[next_rand(&w->seed) % w->n];
}

static void op_submit(struct worker *w, uint32_t roll)
{
	uint32_t kind = next_rand(&w->seed) % nkinds;
	const struct exec_kind *k = &kinds[kind];
	w->doing = k->submitting;
	struct input in = { .task = K_VALUE,
			    .n = next_rand(&w->seed),
			    .kind = kind };
	uint32_t t = roll % 100;
	if (t < 20)
		in.task = K_FAIL;
	else if (t < 30)
		in.task = K_SLOW;
	else if (t < 34 && k->pointer_tasks)
		in.task = K_NESTED;
	else if (t == 34 && roll % 7 == 1 && k->pointer_tasks)
		in.task = K_SWAP;
	else if (t == 34 && k->may_crash)
		in.task = K_CRASH;
	else if (t >= 35 && t < 38)
		in.task = K_BUFFER;
	uint32_t many = roll % 7 == 0 ? 1 + next_rand(&w->seed) % 8 : 1;
	bool pointer = many == 1 && k->pointer_tasks && roll % 5 == 0 &&
		       in.task != K_BUFFER;
	fut_future *fs[8];
	struct note *notes[8];
	struct input ins[8];
	for (uint32_t i = 0; i < many; i++) {
		ins[i] = in;
		ins[i].n = in.n + i;
		ins[i].pointer = pointer;
		notes[i] = new_note(ins[i]);
	}
	pthread_rwlock_rdlock(&pools_lock);
	fut_executor *ex = pools[kind];
	for (uint32_t i = 0; i < many; i++)
		ins[i].pool = notes[i]->in.pool = (uint64_t)(uintptr_t)ex;
	int rc;
	if (pointer) /* the note outlives the task: its final callback's */
		rc = fut_submit(ex, task, &notes[0]->in, &fs[0]);
	else if (many > 1 || roll % 2 == 0)
		rc = fut_submit_many(ex, task, ins, sizeof(ins[0]), many, fs);
	else
		rc = fut_submit_bytes(ex, task, &ins[0], sizeof(ins[0]),
				      &fs[0]);
	pthread_rwlock_unlock(&pools_lock);
	if (rc != FUT_OK) {
		if (rc == FUT_EAGAIN)
			eagains++;
		else
			CHECK(rc == FUT_OK);
		for (uint32_t i = 0; i < many; i++)
			free(notes[i]);
		return;
	}
	for (uint32_t i = 0; i < many; i++)
		hold(w, fs[i], notes[i]);
}

static void op_wait(struct worker *w, uint32_t roll)
{
	fut_future *fs[8];
	size_t n = 1 + roll % 8;
	for (size_t i = 0; i < n; i++)
		fs[i] = pick(w)->f;
	static const int modes[] = { FUT_FIRST_COMPLETED, FUT_FIRST_EXCEPTION,
				     FUT_ALL_COMPLETED };
	int mode = modes[next_rand(&w->seed) % 3];
	double timeout = (next_rand(&w->seed) % 4) * 0.0005;
	int rc = fut_wait(fs, n, mode, timeout);
	CHECK(rc == FUT_OK || rc == FUT_ETIMEDOUT);
	if (rc == FUT_ETIMEDOUT)
		timed_out_waits++;
	if (rc == FUT_OK && mode == FUT_ALL_COMPLETED)
		for (size_t i = 0; i < n; i++)
			CHECK(fut_done(fs[i]));
}

static void op_result(struct worker *w, uint32_t roll)
{
	struct record *r = pick(w);
	double timeout = roll % 50 == 0 ? FUT_FOREVER :
					  (next_rand(&w->seed) % 5) * 0.0005;
	int rc = fut_result(r->f, timeout, NULL);
	CHECK(rc != FUT_EINVAL && rc != FUT_ESTATE);
	if (rc == FUT_ETIMEDOUT) {
		CHECK(timeout >= 0);
		timed_out_waits++;
	} else {
		CHECK(fut_done(r->f));
	}
}

static void op_as_completed(struct worker *w, uint32_t roll)
{
	fut_future *fs[8];
	size_t n = 1 + roll % 8;
	for (size_t i = 0; i < n; i++)
		fs[i] = pick(w)->f;
	fut_as_completed *it;
	CHECK(fut_as_completed_new(&it, fs, n / 2) == FUT_OK);
	for (size_t i = n / 2; i < n; i++)
		CHECK(fut_as_completed_add(it, fs[i]) == FUT_OK);
	int fd = roll % 3 == 0 ? fut_as_completed_fd(it) : -1;
	size_t seen = 0;
	for (int tries = 0; tries < 8; tries++) {
		fut_future *f;
		if (fd >= 0) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int pr = poll(&p, 1, 1);
			CHECK(pr >= 0);
			if (pr == 1) {
				/* Readable: next does not block. */
				int rc = fut_as_completed_next(it, 0, &f);
				CHECK(rc == FUT_OK || rc == FUT_END);
			}
		}
		int rc = fut_as_completed_next(it, 0.0005, &f);
		if (rc == FUT_END)
			break;
		CHECK(rc == FUT_OK || rc == FUT_ETIMEDOUT);
		if (rc == FUT_OK) {
			CHECK(fut_done(f));
			seen++;
		}
	}
	CHECK(seen <= n);
	fut_as_completed_free(it);
}

static void op_extra_callback(struct worker *w, uint32_t roll)
{
	struct record *r = pick(w);
	struct extra *x = malloc(sizeof(*x));
	x->kind = next_rand(&w->seed) % nkinds;
	x->n = next_rand(&w->seed);
	x->submit = roll % 2 == 0;
	extras_added++;
	CHECK(fut_add_done_callback(r->f, on_extra, x) == FUT_OK);
}

/* Releases a held future early: its task still runs, its final callback
 * still checks it. */
static void op_release(struct worker *w)
{
	struct record *r = pick(w);
	size_t i = (size_t)(r - w->held);
	fut_release(r->f);
	note_unref(r->note);
	w->held[i] = w->held[--w->n];
	released_early++;
}

static void op_swap(struct worker *w, uint32_t roll)
{
	uint32_t kind = next_rand(&w->seed) % nkinds;
	fut_executor *fresh = make_executor(kind);
	if (fresh == NULL)
		return;
	pthread_rwlock_wrlock(&pools_lock);
	fut_executor *old = pools[kind];
	pools[kind] = fresh;
	pthread_rwlock_unlock(&pools_lock);
	/* Shut down with any flags (or not at all), then free, while this
	 * and other threads hold its futures. */
	unsigned flags = next_rand(&w->seed) % 8;
	if (roll % 4 != 0)
		CHECK(fut_executor_shutdown(old, flags) == FUT_OK);
	fut_executor_free(old);
	swaps++;
}

static double deadline;
static uint64_t seed;
static struct worker workers[MAX_THREADS];
static int nworkers;

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	for (double t0 = now(); t0 < deadline;) {
		uint32_t roll = next_rand(&w->seed);
		uint32_t op = roll % 1000;
		ops++;
		if (op < 420 || w->n < 8) {
			op_submit(w, next_rand(&w->seed)); /* names its kind */
		} else if (op < 490) {
			w->doing = "cancel";
			(void)fut_cancel(pick(w)->f);
		} else if (op < 530) {
			w->doing = "interrupt";
			(void)fut_interrupt(pick(w)->f);
		} else if (op < 660) {
			w->doing = "result";
			op_result(w, roll >> 10);
		} else if (op < 760) {
			w->doing = "wait";
			op_wait(w, roll >> 10);
		} else if (op < 840) {
			w->doing = "as_completed";
			op_as_completed(w, roll >> 10);
		} else if (op < 900) {
			w->doing = "extra_callback";
			op_extra_callback(w, roll >> 10);
		} else if (op < 950) {
			w->doing = "release";
			op_release(w);
		} else if (op < 995) {
			w->doing = "retire";
			retire_oldest(w);
		} else {
			w->doing = "swap";
			op_swap(w, roll >> 10);
		}
		double t1 = now();
		if (t1 - t0 > w->slowest) {
			w->slowest = t1 - t0;
			w->slowest_op = w->doing;
		}
		t0 = t1;
	}
	w->doing = "done";
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Main                                                                */

static _Atomic bool finished;
static int watchdog_seconds = 120;

/* Prints progress every minute, and aborts (with the seed) when no
 * operation completed for a long while: from the start to the last check,
 * joins and frees included. */
static void *watchdog(void *arg)
{
	(void)arg;
	long last_ops = -1;
	double start = now(), last_change = start, last_report = start;
	while (!atomic_load(&finished)) {
		struct timespec tick = { 0, 100 * 1000 * 1000 };
		nanosleep(&tick, NULL);
		if (now() - last_report >= 60) {
			last_report = now();
			printf("stress: %.0f s: ops=%ld submitted=%ld swaps=%ld "
			       "failures=%ld\n",
			       last_report - start, (long)ops, (long)submitted,
			       (long)swaps, (long)failures);
		}
		long o = atomic_load(&ops);
		if (o != last_ops) {
			last_ops = o;
			last_change = now();
		} else if (now() - last_change > watchdog_seconds) {
			fprintf(stderr,
				"stress: no progress for %d s (seed=%llu)\n",
				watchdog_seconds, (unsigned long long)seed);
			fprintf(stderr, "stress: main is %s %s\n",
				atomic_load(&phase), atomic_load(&phase_kind));
			for (int i = 0; i < nworkers; i++)
				fprintf(stderr, "stress: thread %d is in %s\n",
					i, atomic_load(&workers[i].doing));
			on_hang();
			abort();
		}
	}
	return NULL;
}

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	int n = 0;
	if (d == NULL)
		return -1;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static void *nothing(void *arg)
{
	return arg;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *env_s = getenv("STRESS_SECONDS");
	const char *env_seed = getenv("STRESS_SEED");
	double seconds = argc > 1 ? atof(argv[1]) : env_s ? atof(env_s) : 10;
	seed = argc > 2 ? strtoull(argv[2], NULL, 0) :
	       env_seed != NULL ?
			  strtoull(env_seed, NULL, 0) :
			  (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (seed == 0)
		seed = 1;
	const char *env_t = getenv("STRESS_THREADS");
	int threads = env_t != NULL ? atoi(env_t) : 4;
	const char *env_w = getenv("STRESS_WATCHDOG");
	if (env_w != NULL && atoi(env_w) > 0)
		watchdog_seconds = atoi(env_w);
	if (threads < 1 || threads > MAX_THREADS)
		threads = 4;
	printf("stress: seed=%llu seconds=%.0f threads=%d kinds=",
	       (unsigned long long)seed, seconds, threads);
	for (size_t k = 0; k < nkinds; k++)
		printf("%s%s", kinds[k].name, k + 1 < nkinds ? "," : "\n");
	printf("stress: replay with STRESS_SEED=%llu\n",
	       (unsigned long long)seed);

	/* ThreadSanitizer starts a helper thread with the first
	 * pthread_create: start one before counting threads. */
	pthread_t first;
	pthread_create(&first, NULL, nothing, NULL);
	pthread_join(first, NULL);
	int fds0 = count_dir("/proc/self/fd");
	int threads0 = count_dir("/proc/self/task");
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_READER_NP);
	pthread_rwlock_init(&pools_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	for (size_t k = 0; k < nkinds; k++) {
		if (kinds[k].make(&pools[k]) != FUT_OK) {
			fprintf(stderr, "stress: cannot make a %s executor\n",
				kinds[k].name);
			return 1;
		}
	}

	deadline = now() + seconds;
	struct worker *w = workers;
	pthread_t t[MAX_THREADS];
	nworkers = threads;
	for (int i = 0; i < threads; i++) {
		w[i].seed = (seed * 0x9e3779b97f4a7c15ull) ^ (uint64_t)(i + 1);
		if (w[i].seed == 0)
			w[i].seed = 1;
		pthread_create(&t[i], NULL, run_worker, &w[i]);
	}
	pthread_t dog;
	pthread_create(&dog, NULL, watchdog, NULL);
	phase = "joining the stress threads";
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	double joined = now(), freed[NKINDS];

	/* Take every executor out of reach of callbacks, then free them:
	 * everything queued completes (or was cancelled) before they go. */
	fut_executor *last[NKINDS];
	pthread_rwlock_wrlock(&pools_lock);
	for (size_t k = 0; k < NKINDS; k++) {
		last[k] = pools[k];
		pools[k] = NULL;
	}
	pthread_rwlock_unlock(&pools_lock);
	for (size_t k = 0; k < NKINDS; k++) {
		phase = "freeing the last executor of a kind";
		phase_kind = kinds[k].name;
		fut_executor_free(last[k]);
		freed[k] = now();
	}
	phase = "retiring the held futures";
	for (int i = 0; i < threads; i++) {
		for (size_t k = 0; k < w[i].n; k++) {
			/* Main's frees finished every queue, but a pool freed
			 * by one of its own tasks finishes its own: retire()
			 * waits for it (and fails the run if it never does). */
			const struct record *r = &w[i].held[k];
			CHECK(fut_done(r->f) ||
			      was_self_freed(r->note->in.pool));
			ops++;
			retire(&w[i].held[k]);
		}
		w[i].n = 0;
	}
	atomic_store(&finished, true);
	pthread_join(dog, NULL);
	/* A pool freed by one of its own tasks lets its last threads finish
	 * its queue and exit on their own: wait until every future's final
	 * callback ran and those threads are gone (the bound only avoids a
	 * hang; the checks below say what was missing). */
	double until = now() + RETIRE_TIMEOUT;
	bool settled;
	while (!(settled = finals == submitted && extras_run == extras_added &&
			   count_dir("/proc/self/task") == threads0) &&
	       now() < until)
		sched_yield();
	if (settled)
		pthread_rwlock_destroy(&pools_lock);

	CHECK(finals == submitted);
	CHECK(extras_run == extras_added);
	int fds1 = count_dir("/proc/self/fd");
	int threads1 = count_dir("/proc/self/task");
	CHECK(fds1 == fds0);
	CHECK(threads1 == threads0);
	errno = 0;
	CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
	/* Where the time went: a slow machine (valgrind on a loaded host)
	 * shows here how close it came to the watchdog. */
	int slow = 0;
	for (int i = 1; i < threads; i++)
		if (w[i].slowest > w[slow].slowest)
			slow = i;
	printf("stress: slowest op %.3f s (%s); the last op ended %.3f s "
	       "after the deadline; frees took",
	       w[slow].slowest, w[slow].slowest_op ? w[slow].slowest_op : "-",
	       joined - deadline);
	for (size_t k = 0; k < NKINDS; k++)
		printf(" %s %.3f s", kinds[k].name,
		       freed[k] - (k == 0 ? joined : freed[k - 1]));
	printf("\n");
	printf("stress: ops=%ld submitted=%ld finals=%ld retired=%ld "
	       "released_early=%ld extras=%ld callback_submits=%ld "
	       "nested_submits=%ld swaps=%ld self_frees=%ld timed_out_waits=%ld "
	       "eagain=%ld large_buffers=%ld "
	       "fds=%d/%d threads=%d/%d failures=%ld\n",
	       (long)ops, (long)submitted, (long)finals, (long)retired,
	       (long)released_early, (long)extras_run, (long)callback_submits,
	       (long)nested_submits, (long)swaps, (long)self_frees,
	       (long)timed_out_waits, (long)eagains, (long)large_buffers, fds0,
	       fds1, threads0, threads1, (long)failures);
	if (failures != 0) {
		printf("stress: FAILED (seed=%llu)\n",
		       (unsigned long long)seed);
		return 1;
	}
	printf("stress: passed\n");
	return 0;
}
