/*
 * thread_pool.c: count the lines of some files on a thread pool and print
 * each count as soon as it is ready (fut_as_completed), the C version of
 * Python's
 *
 *     with ThreadPoolExecutor(4) as ex:
 *         fs = {ex.submit(count_lines, p): p for p in paths}
 *         for f in as_completed(fs): print(fs[f], f.result())
 *
 * Usage: thread_pool [FILE...]   (default: a few files under /etc)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "future.h"

/* The task: reads the file named by its argument; returns the line count
 * as a pointer-sized value, or fails with errno as the task code and its
 * text in the message. */
static void count_lines(fut_task *t)
{
	const char *path = fut_task_arg(t);
	FILE *fp = fopen(path, "r");
	if (fp == NULL) {
		int e = errno;
		fut_task_fail(t, e, "cannot open %s: %s", path, strerror(e));
		return;
	}
	size_t lines = 0;
	for (int c; (c = getc(fp)) != EOF;)
		lines += c == '\n';
	fclose(fp);
	fut_task_return(t, (void *)(uintptr_t)lines);
}

int main(int argc, char **argv)
{
	static const char *defaults[] = { "/etc/passwd", "/etc/group",
					  "/etc/hosts", "/etc/services",
					  "/etc/no-such-file" };
	const char **paths = (const char **)argv + 1;
	size_t n = (size_t)argc - 1;
	if (n == 0) {
		paths = defaults;
		n = sizeof(defaults) / sizeof(defaults[0]);
	}

	fut_executor *ex = NULL;
	int rc = fut_thread_pool_new(
		&ex, &(fut_thread_pool_opts){ .max_workers = 4,
					      .thread_name_prefix = "lines" });
	if (rc != FUT_OK) {
		fprintf(stderr, "thread pool: %s\n", fut_strerror(rc));
		return 1;
	}
	fut_future **fs = calloc(n, sizeof(*fs));
	if (fs == NULL) {
		fprintf(stderr, "out of memory\n");
		fut_executor_free(ex);
		return 1;
	}
	size_t submitted = 0;
	for (; submitted < n; submitted++) {
		rc = fut_submit(ex, count_lines, (void *)paths[submitted],
				&fs[submitted]);
		if (rc != FUT_OK) {
			fprintf(stderr, "submit: %s\n", fut_strerror(rc));
			break;
		}
	}

	fut_as_completed *it = NULL;
	rc = fut_as_completed_new(&it, fs, submitted);
	if (rc != FUT_OK)
		fprintf(stderr, "as_completed: %s\n", fut_strerror(rc));
	fut_future *f;
	while (rc == FUT_OK &&
	       fut_as_completed_next(it, FUT_FOREVER, &f) == FUT_OK) {
		size_t i = 0;
		while (fs[i] != f) /* which path was it? */
			i++;
		void *lines = NULL;
		if (fut_result(f, 0, &lines) == FUT_OK)
			printf("%8zu %s\n", (size_t)(uintptr_t)lines, paths[i]);
		else
			printf("%8s %s (%s)\n", "-", paths[i],
			       fut_error_message(f));
	}
	fut_as_completed_free(it);
	for (size_t i = 0; i < submitted; i++)
		fut_release(fs[i]);
	free(fs);
	fut_executor_free(ex);
	return rc == FUT_OK ? 0 : 1;
}
