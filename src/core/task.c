/*
 * task.c: the task record a task function sees (fut_task_*).
 *
 * Owns: struct fut_task's outcome: what the task settled (a pointer, bytes
 * it owns, or a failure with a code and a message), and handing it to the
 * future (thread pools) -- the process worker encodes it instead.  Also the
 * result buffer a task writes in place (fut_task_result_buffer): heap
 * memory that becomes the outcome's bytes when the task returns, or in a
 * process worker, from FUT__TASK_SHARED_MIN bytes, a shared mapping the
 * worker makes (the task's sink) and hands to the caller whole.
 * Threads: the thread running the task; fut_task_cancelled() reads the
 * future's flags word, written by whoever calls fut_interrupt().
 * Locks: none: one task runs in one thread at a time.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"

/* Frees t's result buffer, if it has one. */
static void buffer_drop(fut_task *t)
{
	if (t->buffer_fd >= 0) {
		(void)munmap(t->buffer, t->buffer_len);
		(void)close(t->buffer_fd);
	} else {
		fut__free(t->buffer);
	}
	t->buffer = NULL;
	t->buffer_len = 0;
	t->buffer_fd = -1;
}

void fut__task_init(fut_task *t, fut_fn fn, void *arg, const void *input,
		    size_t input_len, const _Atomic uint32_t *interrupt)
{
	t->fn = fn;
	t->arg = arg;
	t->input = input;
	t->input_len = input_len;
	t->interrupt = interrupt;
	t->outcome = FUT__OUT_NONE;
	t->task_code = 0;
	t->value = NULL;
	t->len = 0;
	t->message = NULL;
	t->buffer = NULL;
	t->buffer_len = 0;
	t->buffer_fd = -1;
	t->sink = NULL;
}

void fut__task_run(fut_task *t)
{
	t->fn(t);
	if (t->buffer == NULL)
		return;
	if (t->outcome != FUT__OUT_NONE) {
		/* It settled otherwise (failed, or returned other bytes). */
		buffer_drop(t);
		return;
	}
	if (t->buffer_fd >= 0) {
		t->outcome = FUT__OUT_SHARED;
	} else {
		t->outcome = FUT__OUT_BYTES;
		if (t->buffer_len == 0)
			fut__free(t->buffer); /* the 1-byte stand-in */
	}
	t->value = t->buffer_len != 0 ? t->buffer : NULL;
	t->len = t->buffer_len;
	/* An OUT_SHARED keeps buffer_fd: the worker sends it. */
	t->buffer = NULL;
	t->buffer_len = 0;
}

int fut__task_finish(fut_task *t, fut_future *f)
{
	int rc;
	switch (t->outcome) {
	case FUT__OUT_VALUE:
		rc = fut__future_succeed(f, t->value);
		break;
	case FUT__OUT_BYTES:
		rc = fut__future_succeed_bytes(f, t->value, t->len);
		break;
	case FUT__OUT_FAIL:
		rc = fut__future_fail(f, FUT_ETASK, t->task_code, t->message);
		break;
	default:
		rc = fut__future_succeed(f, NULL);
		break;
	}
	/* The completion took ownership of the bytes and message. */
	t->outcome = FUT__OUT_NONE;
	t->value = NULL;
	t->len = 0;
	t->message = NULL;
	return rc;
}

void fut__task_clear(fut_task *t)
{
	if (t->outcome == FUT__OUT_BYTES)
		fut__free(t->value);
	if (t->outcome == FUT__OUT_SHARED) {
		(void)munmap(t->value, t->len);
		(void)close(t->buffer_fd);
		t->buffer_fd = -1;
	}
	buffer_drop(t);
	fut__free(t->message);
	t->outcome = FUT__OUT_NONE;
	t->value = NULL;
	t->len = 0;
	t->message = NULL;
}

void *fut_task_arg(fut_task *t)
{
	return t != NULL ? t->arg : NULL;
}

const void *fut_task_input(fut_task *t, size_t *len)
{
	if (len != NULL)
		*len = t != NULL ? t->input_len : 0;
	return t != NULL ? t->input : NULL;
}

int fut_task_return(fut_task *t, void *value)
{
	if (t == NULL)
		return FUT_EINVAL;
	if (t->outcome != FUT__OUT_NONE)
		return FUT_ESTATE;
	t->outcome = FUT__OUT_VALUE;
	t->value = value;
	return FUT_OK;
}

int fut_task_return_bytes(fut_task *t, const void *data, size_t len)
{
	if (t == NULL || (data == NULL && len != 0) || len > FUT_MAX_BYTES)
		return FUT_EINVAL;
	if (t->outcome != FUT__OUT_NONE)
		return FUT_ESTATE;
	if (t->sink != NULL && t->sink->emit != NULL &&
	    (len >= FUT__TASK_EMIT_MIN || len <= t->sink->copy_max)) {
		if (!t->sink->emit(t, data, len, t->sink->ctx))
			return FUT_ENOMEM; /* not settled: it may fail instead */
		t->outcome = FUT__OUT_SENT;
		return FUT_OK;
	}
	void *copy = NULL;
	if (len != 0) {
		copy = fut__malloc(len);
		if (copy == NULL)
			return FUT_ENOMEM;
		memcpy(copy, data, len);
	}
	t->outcome = FUT__OUT_BYTES;
	t->value = copy;
	t->len = len;
	return FUT_OK;
}

void *fut_task_result_buffer(fut_task *t, size_t len)
{
	if (t == NULL || len > FUT_MAX_BYTES || t->outcome != FUT__OUT_NONE)
		return NULL;
	void *b = NULL;
	int fd = -1;
	if (t->sink != NULL && t->sink->shared != NULL &&
	    len >= FUT__TASK_SHARED_MIN)
		b = t->sink->shared(len, &fd, t->sink->ctx);
	if (b == NULL) {
		/* No shared memory (no fd, no memory): the pipe, as for
		 * fut_task_return_bytes. */
		fd = -1;
		b = fut__malloc(len != 0 ? len : 1);
		if (b == NULL)
			return NULL;
	}
	buffer_drop(t);
	t->buffer = b;
	t->buffer_len = len;
	t->buffer_fd = fd;
	return b;
}

int fut_task_fail(fut_task *t, int task_code, const char *fmt, ...)
{
	if (t == NULL)
		return FUT_EINVAL;
	if (t->outcome != FUT__OUT_NONE)
		return FUT_ESTATE;
	int rc = FUT_OK;
	char *message = NULL;
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		message = fut__vasprintf(fmt, ap);
		va_end(ap);
		/* A format with no text in this locale (an encoding error, a
		 * %ls of a character it cannot write): the format itself
		 * tells more than none (it gave FUT_ENOMEM and no message:
		 * found by review, 2026-12-07). */
		if (message == NULL && errno == EILSEQ)
			message = fut__strdup(fmt);
		if (message == NULL)
			rc = FUT_ENOMEM; /* settled all the same, untold */
	}
	t->outcome = FUT__OUT_FAIL;
	t->task_code = task_code;
	t->message = message;
	return rc;
}

bool fut_task_cancelled(const fut_task *t)
{
	return t != NULL && t->interrupt != NULL &&
	       (atomic_load_explicit(t->interrupt, memory_order_acquire) &
		FUT__F_INTERRUPT);
}
