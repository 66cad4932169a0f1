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

/* The paths to read, each a copy of its own. */
struct list {
	char **v;
	size_t n, cap;
};

/* Appends a copy of path; false when out of memory. */
static bool add_path(struct list *l, const char *path)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL)
			return false;
		l->v = v;
		l->cap = cap;
	}
	char *copy = strdup(path);
	if (copy == NULL)
		return false;
	l->v[l->n++] = copy;
	return true;
}

/* Adds the regular files of dir (not recursive); false when out of
 * memory. */
static bool list_dir(const char *dir, struct list *l)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return true;
	bool ok = true;
	struct dirent *e;
	while (ok && (e = readdir(d)) != NULL) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			ok = add_path(l, path);
	}
	closedir(d);
	return ok;
}

/* Hashes the n files on a thread pool; the exit status. */
static int hash_all(char **paths, size_t n)
{
	fut_executor *pool;
	if (fut_thread_pool_new(&pool, &(fut_thread_pool_opts){
					       .thread_name_prefix =
						       "files" }) != FUT_OK)
		return 1;
	fut_future **fs = calloc(n, sizeof(*fs));
	size_t k = 0; /* submitted */
	while (fs != NULL && k < n &&
	       fut_submit(pool, hash_file, paths[k], &fs[k]) == FUT_OK)
		k++;
	fut_as_completed *it;
	if (k < n || fut_as_completed_new(&it, fs, n) != FUT_OK) {
		fprintf(stderr, "files: cannot submit\n");
		/* Frees the pool once what was submitted is done. */
		for (size_t i = 0; i < k; i++)
			fut_release(fs[i]);
		fut_executor_free(pool);
		free(fs);
		return 1;
	}

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
	}
	printf("%zu files, %llu bytes, %zu failed\n", n,
	       (unsigned long long)total, failed);
	fut_executor_free(pool);
	free(fs);
	return failed == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct list paths = { 0 };
	bool ok = true;
	struct stat st;
	if (argc == 2 && stat(argv[1], &st) == 0 && S_ISDIR(st.st_mode))
		ok = list_dir(argv[1], &paths);
	else if (argc >= 2)
		for (int i = 1; ok && i < argc; i++)
			ok = add_path(&paths, argv[i]);
	else
		ok = list_dir("/usr/include", &paths);
	int rc = 1;
	if (!ok)
		fprintf(stderr, "files: out of memory\n");
	else if (paths.n == 0)
		fprintf(stderr, "files: nothing to read\n");
	else
		rc = hash_all(paths.v, paths.n);
	for (size_t i = 0; i < paths.n; i++)
		free(paths.v[i]);
	free(paths.v);
	return rc;
}
