/*
 * files: I/O-bound work on a thread pool.  Reads and hashes files (the
 * paths given, or every regular file in a directory, default /usr/include),
 * collects the results with fut_as_completed as they finish, and draws a
 * progress bar on stderr when stderr is a terminal.
 *
 *   files [DIR | FILE...]
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future.h>

struct digest {
	uint64_t hash;
	uint64_t size;
};

/* FNV-1a over the file, read in 64 KiB blocks: the thread mostly waits
 * for the disk, which is what threads are for. */
static void hash_file(fut_task *t)
{
	const char *path = fut_task_arg(t);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fut_task_fail(t, 1, "cannot open %s", path);
		return;
	}
	static _Thread_local unsigned char buf[65536];
	struct digest d = { 1469598103934665603ull, 0 };
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++)
			d.hash = (d.hash ^ buf[i]) * 1099511628211ull;
		d.size += (uint64_t)n;
	}
	close(fd);
	if (n < 0)
		fut_task_fail(t, 2, "cannot read %s", path);
	else
		fut_task_return_bytes(t, &d, sizeof(d));
}

static void progress(size_t done, size_t total)
{
	if (!isatty(STDERR_FILENO) || total == 0)
		return;
	int width = 40, filled = (int)(done * (size_t)width / total);
	fprintf(stderr, "\r[%.*s%*s] %zu/%zu", filled,
		"########################################", width - filled, "",
		done, total);
	if (done == total)
		fputc('\n', stderr);
}

/* Collects regular files of dir (not recursive) into paths. */
static size_t list_dir(const char *dir, char ***paths)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			*paths = realloc(*paths, cap * sizeof(**paths));
		}
		(*paths)[n++] = strdup(path);
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	char **paths = NULL;
	size_t n = 0;
	struct stat st;
	if (argc == 2 && stat(argv[1], &st) == 0 && S_ISDIR(st.st_mode)) {
		n = list_dir(argv[1], &paths);
	} else if (argc >= 2) {
		paths = malloc((size_t)(argc - 1) * sizeof(*paths));
		for (int i = 1; i < argc; i++)
			paths[n++] = strdup(argv[i]);
	} else {
		n = list_dir("/usr/include", &paths);
	}
	if (n == 0) {
		fprintf(stderr, "files: nothing to read\n");
		return 1;
	}

	fut_executor *pool;
	if (fut_thread_pool_new(&pool, &(fut_thread_pool_opts){
					       .thread_name_prefix =
						       "files" }) != FUT_OK)
		return 1;
	fut_future **fs = calloc(n, sizeof(*fs));
	for (size_t i = 0; i < n; i++)
		if (fut_submit(pool, hash_file, paths[i], &fs[i]) != FUT_OK)
			return 1;

	fut_as_completed *it;
	if (fut_as_completed_new(&it, fs, n) != FUT_OK)
		return 1;
	uint64_t total = 0;
	size_t done = 0, failed = 0;
	fut_future *f;
	while (fut_as_completed_next(it, FUT_FOREVER, &f) == FUT_OK) {
		const void *data;
		size_t len;
		if (fut_result_bytes(f, 0, &data, &len) == FUT_OK &&
		    len == sizeof(struct digest)) {
			struct digest d;
			memcpy(&d, data, sizeof(d));
			total += d.size;
		} else {
			failed++;
			fprintf(stderr, "\n%s\n", fut_error_message(f));
		}
		progress(++done, n);
	}
	fut_as_completed_free(it);

	for (size_t i = 0; i < n; i++) {
		const void *data;
		size_t len;
		if (fut_result_bytes(fs[i], 0, &data, &len) == FUT_OK) {
			struct digest d;
			memcpy(&d, data, sizeof(d));
			printf("%016llx %10llu %s\n",
			       (unsigned long long)d.hash,
			       (unsigned long long)d.size, paths[i]);
		}
		fut_release(fs[i]);
		free(paths[i]);
	}
	printf("%zu files, %llu bytes, %zu failed\n", n,
	       (unsigned long long)total, failed);
	fut_executor_free(pool);
	free(fs);
	free(paths);
	return failed == 0 ? 0 : 1;
}
