/*
 * fuzz_api.c: libFuzzer target over sequences of public API calls.
 *
 * Each input byte picks an operation on one of eight future slots, one
 * as_completed iterator, or one thread pool; the following bytes are its
 * arguments.  Invalid calls are part of the game: whatever the sequence,
 * nothing may crash, leak (ASan/LSan), hang (run it with -timeout) or
 * break the invariants checked here: every code is a known one, a done
 * callback runs exactly once, and an iterator yields each future at most
 * once.  A submitted task may be a waiter: it waits, in a worker, for the
 * pool's futures in the slots when it was submitted (fut_wait in any mode,
 * or fut_result; no timeout, a short one or none), so that chains of
 * nested waits, with cancels, interrupts and shutdowns among them, go
 * through the pool's hand-over of a waiting worker's slot (issue 11).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "future.h"

#define SLOTS 8

struct input {
	const uint8_t *p;
	size_t left;
};

static uint8_t take(struct input *in)
{
	if (in->left == 0)
		return 0;
	in->left--;
	return *in->p++;
}

/* Atomic: pool futures run their callbacks in the pool's workers, two
 * at a time (a plain int lost increments: the fuzzer's first find). */
static _Atomic int callbacks_added, callbacks_run;

static void count_cb(fut_future *f, void *ud)
{
	(void)ud;
	if (!fut_done(f))
		abort();
	callbacks_run++;
}

static void check_code(int rc)
{
	if (rc < FUT_OK || rc > FUT_END)
		abort();
}

static void tiny_task(fut_task *t)
{
	size_t len;
	const uint8_t *in = fut_task_input(t, &len);
	if (len > 0 && in[0] % 3 == 0)
		fut_task_fail(t, in[0], "fail %u", (unsigned)in[0]);
	else if (len > 0 && in[0] % 3 == 1)
		fut_task_return_bytes(t, in, len);
	else
		fut_task_return(t, fut_task_arg(t));
}

/* A waiter's orders: the futures it waits for (its own references),
 * how and how long.  Freed by its future's done callback, which runs
 * once whether the task ran or was cancelled. */
struct waiter {
	fut_future *fs[SLOTS];
	size_t n;
	uint8_t how; /* fut_wait's return_when, or fut_result of fs[0] */
	uint8_t how_long;
};

static void waiter_task(fut_task *t)
{
	struct waiter *w = fut_task_arg(t);
	static const double timeouts[] = { FUT_FOREVER, 0, 0.001 };
	double timeout = timeouts[w->how_long % 3];
	bool by_result = w->how % 5 == 4 && w->n > 0;
	int mode = w->how % 4; /* 0: not a mode, FUT_EINVAL */
	int rc = by_result ? fut_result(w->fs[0], timeout, NULL) :
			     fut_wait(w->fs, w->n, mode, timeout);
	check_code(rc);
	/* An untimed wait that returned FUT_OK waited for what it was told:
	 * every future, or (FUT_FIRST_COMPLETED) one. */
	if (timeout == FUT_FOREVER && rc == FUT_OK && !by_result) {
		size_t done = 0;
		for (size_t i = 0; i < w->n; i++)
			done += fut_done(w->fs[i]);
		if (mode == FUT_ALL_COMPLETED && done != w->n)
			abort();
		if (mode == FUT_FIRST_COMPLETED && w->n > 0 && done == 0)
			abort();
	}
	if (by_result && timeout == FUT_FOREVER && rc != FUT_EAGAIN &&
	    rc != FUT_EINVAL && !fut_done(w->fs[0]))
		abort();
	fut_task_return(t, NULL);
}

static void waiter_done(fut_future *f, void *ud)
{
	(void)f;
	struct waiter *w = ud;
	for (size_t i = 0; i < w->n; i++)
		fut_release(w->fs[i]);
	free(w);
}

/* Submits a waiter for the pool's futures in slot[], pooled[] telling
 * them; *out as fut_submit's. */
static int submit_waiter(fut_executor *pool, fut_future **slot,
			 const bool *pooled, uint8_t how, uint8_t how_long,
			 fut_future **out)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return FUT_ENOMEM;
	for (int i = 0; i < SLOTS; i++)
		if (slot[i] != NULL && pooled[i])
			w->fs[w->n++] = fut_retain(slot[i]);
	w->how = how;
	w->how_long = how_long;
	int rc = fut_submit(pool, waiter_task, w, out);
	if (rc == FUT_OK)
		rc = fut_add_done_callback(*out, waiter_done, w);
	else
		waiter_done(NULL, w);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	fut_future *slot[SLOTS] = { 0 };
	fut_as_completed *it = NULL;
	fut_executor *pool = NULL;
	uint8_t yielded[SLOTS] = { 0 };
	bool pooled[SLOTS] = { 0 }; /* the slot's future came from the pool */
	callbacks_added = callbacks_run = 0;
	bool trace = getenv("FUZZ_API_TRACE") != NULL;

	while (in.left > 0) {
		uint8_t op = take(&in);
		unsigned s = take(&in) % SLOTS;
		fut_future *f = slot[s];
		if (trace)
			fprintf(stderr,
				"op %2d slot %u f=%p state=%d added=%d run=%d\n",
				op % 16, s, (void *)f, fut_state(f),
				(int)callbacks_added, (int)callbacks_run);
		switch (op % 16) {
		case 0:
			if (f == NULL)
				check_code(fut_future_new(&slot[s]));
			break;
		case 1:
			check_code(fut_set_running(f));
			break;
		case 2:
			check_code(fut_set_result(f, &slot[s]));
			break;
		case 3: {
			size_t len = take(&in) % 32;
			if (len > in.left)
				len = in.left;
			check_code(fut_set_result_bytes(f, in.p, len));
			break;
		}
		case 4:
			check_code(fut_set_error(f, take(&in),
						 take(&in) & 1 ? "m" : NULL));
			break;
		case 5:
			fut_cancel(f);
			break;
		case 6:
			check_code(fut_interrupt(f));
			break;
		case 7:
			if (fut_add_done_callback(f, count_cb, NULL) == FUT_OK)
				callbacks_added++;
			break;
		case 8: {
			fut_future *fs[SLOTS];
			size_t n = 0;
			for (int i = 0; i < SLOTS; i++)
				if (slot[i] != NULL)
					fs[n++] = slot[i];
			check_code(fut_wait(fs, n, take(&in) % 5, 0));
			break;
		}
		case 9:
			if (it == NULL) {
				fut_future *fs[SLOTS];
				size_t n = 0;
				for (int i = 0; i < SLOTS; i++)
					if (slot[i] != NULL)
						fs[n++] = slot[i];
				check_code(fut_as_completed_new(&it, fs, n));
				memset(yielded, 0, sizeof(yielded));
			} else {
				fut_as_completed_free(it);
				it = NULL;
			}
			break;
		case 10: {
			fut_future *got = NULL;
			int rc = fut_as_completed_next(it, 0, &got);
			check_code(rc);
			for (int i = 0; rc == FUT_OK && i < SLOTS; i++)
				if (slot[i] == got && yielded[i]++)
					abort();
			break;
		}
		case 11:
			if (f != NULL && it != NULL)
				check_code(fut_as_completed_add(it, f));
			(void)fut_as_completed_fd(it);
			break;
		case 12: {
			void *v;
			const void *d;
			size_t len;
			check_code(fut_result(f, 0, &v));
			check_code(fut_result_bytes(f, 0, &d, &len));
			check_code(fut_error(f));
			(void)fut_error_message(f);
			(void)fut_task_code(f);
			break;
		}
		case 13:
			/* Release the slot (an iterator holds its own refs).
			 * A standalone future released while pending never
			 * completes, so its callbacks would never run: finish
			 * it first to keep the callback count exact.  A pool
			 * future is completed by its pool. */
			if (f != NULL) {
				if (!pooled[s] && !fut_done(f))
					fut_set_result(f, NULL);
				fut_release(f);
				slot[s] = NULL;
				yielded[s] = 0;
				pooled[s] = false;
			}
			break;
		case 14:
			if (pool == NULL) {
				fut_thread_pool_opts o = {
					.max_workers = take(&in) % 3
				};
				check_code(fut_thread_pool_new(&pool, &o));
			} else if (f == NULL) {
				uint8_t b = take(&in);
				if (b & 0x80)
					check_code(submit_waiter(
						pool, slot, pooled, b,
						take(&in), &slot[s]));
				else
					check_code(fut_submit_bytes(
						pool, tiny_task, &b, 1,
						&slot[s]));
				pooled[s] = slot[s] != NULL;
			}
			break;
		case 15:
			if (pool != NULL) {
				check_code(fut_executor_shutdown(
					pool, take(&in) % 9));
			}
			break;
		}
	}
	fut_as_completed_free(it);
	fut_executor_free(pool);
	/* Every future ends done: cancel what nobody completed. */
	for (int i = 0; i < SLOTS; i++) {
		if (slot[i] == NULL)
			continue;
		if (!fut_cancel(slot[i]) && !fut_done(slot[i]))
			fut_set_result(slot[i], NULL);
		if (!fut_done(slot[i]))
			abort();
	}
	if (callbacks_run != callbacks_added)
		abort();
	for (int i = 0; i < SLOTS; i++)
		fut_release(slot[i]);
	return 0;
}
