/*
 * core/task.h: the task record a task function sees (task.c).
 */
#ifndef FUT_CORE_TASK_H
#define FUT_CORE_TASK_H

#include "core/future_int.h"

enum {
	FUT__OUT_NONE = 0,
	FUT__OUT_VALUE,
	FUT__OUT_BYTES,
	FUT__OUT_FAIL,
	FUT__OUT_SENT,	 /* bytes already written out by the sink's emit */
	FUT__OUT_SHARED, /* the result buffer, shared memory: value, len, fd */
};

/*
 * Where an executor that runs tasks in another process sends what a task
 * makes (the process worker; thread pools set no sink): from
 * FUT__TASK_EMIT_MIN bytes, a byte result is handed to emit(), which
 * writes it to the result pipe straight from the task's buffer (no copy;
 * the outcome is then SENT); from FUT__TASK_SHARED_MIN bytes, a result
 * buffer (fut_task_result_buffer) is asked of shared(), which maps len
 * bytes of a new memfd writable (*fd gets it) or returns NULL (errno
 * set): the task then gets heap memory instead, sent through the pipe.
 * A byte result of at most copy_max bytes goes to emit() as well, which
 * copies it (into the worker's frame of results) before the call
 * returns: no allocation for a small result.  emit() returns false when
 * it took nothing (no memory for its copy): the task is not settled, and
 * fut_task_return_bytes returns FUT_ENOMEM.  Either function may be
 * NULL.
 */
#define FUT__TASK_EMIT_MIN (256u * 1024u)
#define FUT__TASK_SHARED_MIN (256u * 1024u)
struct fut__task_sink {
	bool (*emit)(fut_task *t, const void *data, size_t len, void *ctx);
	void *(*shared)(size_t len, int *fd, void *ctx);
	void *ctx;
	size_t copy_max;
};

/*
 * What a task function reads and settles.  Executors embed it and run
 * fn(task); the outcome fields then hold what the task settled: a pointer
 * (OUT_VALUE), bytes it owns (OUT_BYTES, value/len), or a failure
 * (OUT_FAIL, task_code, message).  The thread pool hands them to the
 * future with fut__task_finish(); the process worker encodes them.
 */
struct fut_task {
	fut_fn fn;
	void *arg;
	const void *input;
	size_t input_len;
	/* The future's flags word (FUT__F_INTERRUPT), NULL: never asked. */
	const _Atomic uint32_t *interrupt;
	int outcome;
	int task_code;
	void *value;
	size_t len;
	char *message;
	/* The result buffer (fut_task_result_buffer), while the task runs:
	 * heap (buffer_fd -1) or a shared mapping of the memfd buffer_fd.
	 * fut__task_run makes it the outcome when the task settled nothing
	 * else, and frees it otherwise. */
	void *buffer;
	size_t buffer_len;
	int buffer_fd;
	/* NULL, or where the executor takes large outcomes (set after
	 * fut__task_init, which clears it). */
	const struct fut__task_sink *sink;
};

FUT__PRIVATE void fut__task_init(fut_task *t, fut_fn fn, void *arg,
				 const void *input, size_t input_len,
				 const _Atomic uint32_t *interrupt);
/* Runs the task function in this thread (no lock may be held). */
FUT__PRIVATE void fut__task_run(fut_task *t);
/* Completes f from t's outcome (moving the bytes and message into f). */
int fut__task_finish(fut_task *t, fut_future *f);
/* Frees an outcome nobody took (and closes an OUT_SHARED's fd). */
FUT__PRIVATE void fut__task_clear(fut_task *t);

#endif /* FUT_CORE_TASK_H */
