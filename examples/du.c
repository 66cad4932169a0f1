/*
 * du: fork-join on a thread pool, tasks that wait for tasks.
 *
 * Sums the sizes of the regular files under a directory (default
 * /usr/include, else the current one).  A task per directory lists it,
 * submits a task for each subdirectory to its own pool, adds up its
 * files, then waits for its subdirectories' futures.  A worker that
 * waits with no timeout for a task of its own pool gives its slot up
 * while it waits (docs/api.md, "A cap that holds"), so a tree deeper than
 * max_workers does not deadlock the pool, as it deadlocks a pool whose
 * waiting workers keep their threads (Python's ThreadPoolExecutor).  Past
 * the pool's bound (max_workers + 256 threads) such a wait returns
 * FUT_EAGAIN; the task then walks that subtree itself, and du says how
 * often it fell back so.  The same walk done serially first checks the
 * sum and warms the kernel's caches, so that the two timings after it
 * compare walks, not disks.  The exit status is 1 if the sums differ,
 * if the tasks run and the directories walked in place do not add up to
 * the directories found, or if a tree too shallow to reach the bound
 * (see shallow below) fell back at all: `make test` runs it so.
 *
 *   du [DIR]
 */
#include <dirent.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <future.h>

struct usage {
	uint64_t bytes, files, dirs;
};

static fut_executor *pool;
/* Tasks run; fallbacks (a wait past the bound, or a submit refused), and
 * the directories they walked in place instead of in tasks. */
static atomic_ullong tasks, fallbacks, walked_here;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void add(struct usage *to, const struct usage *u)
{
	to->bytes += u->bytes;
	to->files += u->files;
	to->dirs += u->dirs;
}

/* dir/name in buf; false if it does not fit. */
static bool join(char *buf, const char *dir, const char *name)
{
	int n = snprintf(buf, PATH_MAX, "%s/%s", dir, name);
	return n > 0 && n < PATH_MAX;
}

/* Counts dir, adds its regular files to *u, and calls sub(path, u, ctx)
 * for each subdirectory; no more when dir cannot be read. */
static void scan(const char *dir, struct usage *u,
		 void (*sub)(const char *path, struct usage *u, void *ctx),
		 void *ctx)
{
	u->dirs++;
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *e;
	char path[PATH_MAX];
	struct stat st;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 ||
		    strcmp(e->d_name, "..") == 0 ||
		    !join(path, dir, e->d_name) || lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			sub(path, u, ctx);
		} else if (S_ISREG(st.st_mode)) {
			u->bytes += (uint64_t)st.st_size;
			u->files++;
		}
	}
	closedir(d);
}

/* The serial walk: what the pool's walk must find.  ctx: the level of
 * the directory above path (dir's is 1), and the deepest level yet. */
struct level {
	unsigned n, *deepest;
};

static void walk_into(const char *path, struct usage *u, void *ctx)
{
	const struct level *up = ctx;
	struct level l = { up->n + 1, up->deepest };
	if (*l.deepest < l.n)
		*l.deepest = l.n;
	scan(path, u, walk_into, &l);
}

/* Returns the levels of dir's tree (1: no subdirectory). */
static unsigned walk(const char *dir, struct usage *u)
{
	unsigned deepest = 1;
	scan(dir, u, walk_into, &(struct level){ 1, &deepest });
	return deepest;
}

/* A fallback: dir's subtree walked here, not in tasks. */
static void walk_here(const char *dir, struct usage *u)
{
	struct usage sub = { 0 };
	walk(dir, &sub);
	add(u, &sub);
	fallbacks++;
	walked_here += sub.dirs;
}

/* The result of a subdirectory's task, or (it could not run for us) the
 * subtree walked here. */
static void collect(fut_future *f, const char *dir, struct usage *u)
{
	const void *data;
	size_t len;
	int rc = fut_result_bytes(f, FUT_FOREVER, &data, &len);
	if (rc == FUT_EAGAIN) {
		/* Past the pool's bound.  Not started: ours to walk. */
		if (fut_cancel(f)) {
			walk_here(dir, u);
			return;
		}
		fallbacks++;
		/* It runs: a timed wait keeps this worker's slot. */
		do
			rc = fut_result_bytes(f, 0.1, &data, &len);
		while (rc == FUT_ETIMEDOUT);
	}
	if (rc != FUT_OK || len != sizeof(*u)) {
		fprintf(stderr, "du: %s: %s\n", dir, fut_strerror(rc));
		return;
	}
	struct usage sub;
	memcpy(&sub, data, sizeof(sub));
	add(u, &sub);
}

static void du_task(fut_task *t);

/* A directory's subdirectories, each given a task of its own. */
struct forks {
	fut_future **futs;
	char **paths;
	size_t n, cap;
};

/* Submits path's task to the pool; walks it here when it cannot. */
static void fork_into(const char *path, struct usage *u, void *ctx)
{
	struct forks *k = ctx;
	if (k->n == k->cap) {
		size_t c = k->cap ? 2 * k->cap : 16;
		fut_future **f = realloc(k->futs, c * sizeof(*f));
		if (f != NULL)
			k->futs = f;
		char **p = realloc(k->paths, c * sizeof(*p));
		if (p != NULL)
			k->paths = p;
		if (f != NULL && p != NULL)
			k->cap = c;
	}
	char *copy = k->n < k->cap ? strdup(path) : NULL;
	if (copy == NULL || fut_submit_bytes(pool, du_task, copy, strlen(copy),
					     &k->futs[k->n]) != FUT_OK) {
		free(copy);
		walk_here(path, u);
		return;
	}
	k->paths[k->n++] = copy;
}

/* A directory's task: its input is the path, its result a struct usage. */
static void du_task(fut_task *t)
{
	tasks++;
	size_t len;
	const char *in = fut_task_input(t, &len);
	char dir[PATH_MAX];
	if (len == 0 || len >= sizeof(dir)) {
		fut_task_fail(t, 1, "bad path");
		return;
	}
	memcpy(dir, in, len);
	dir[len] = '\0';
	struct usage u = { 0 };
	struct forks k = { 0 };
	scan(dir, &u, fork_into, &k);
	/* Forked; the join: each wait gives this worker's slot to the
	 * subdirectories' tasks until they are done. */
	for (size_t i = 0; i < k.n; i++) {
		collect(k.futs[i], k.paths[i], &u);
		fut_release(k.futs[i]);
		free(k.paths[i]);
	}
	free(k.futs);
	free(k.paths);
	fut_task_return_bytes(t, &u, sizeof(u));
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1			    ? argv[1] :
			  access("/usr/include", R_OK) == 0 ? "/usr/include" :
							      ".";
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "du: %s: not a directory\n", dir);
		return 1;
	}
	/* Few workers, as for I/O with a few connections: the tree's
	 * depth, not max_workers, sets how many threads its waits need. */
	if (fut_thread_pool_new(&pool,
				&(fut_thread_pool_opts){
					.max_workers = 4,
					.thread_name_prefix = "du" }) != FUT_OK)
		return 1;
	struct usage serial = { 0 };
	unsigned levels = walk(dir, &serial);

	double t0 = now();
	fut_future *f = NULL;
	struct usage pooled = { 0 };
	int rc = fut_submit_bytes(pool, du_task, dir, strlen(dir), &f);
	if (rc == FUT_OK)
		collect(f, dir, &pooled);
	fut_release(f);
	double t1 = now();
	fut_executor_free(pool);
	if (rc != FUT_OK) {
		fprintf(stderr, "du: submit: %s\n", fut_strerror(rc));
		return 1;
	}

	struct usage again = { 0 };
	double t2 = now();
	walk(dir, &again);
	double t3 = now();
	printf("%s: %llu bytes in %llu files, %llu directories\n", dir,
	       (unsigned long long)pooled.bytes,
	       (unsigned long long)pooled.files,
	       (unsigned long long)pooled.dirs);
	printf("pool of 4 (a task per directory): %.1f ms; serial: %.1f ms\n",
	       (t1 - t0) * 1e3, (t3 - t2) * 1e3);
	printf("%llu tasks, %llu fallbacks (%llu directories walked in place), "
	       "%u levels\n",
	       (unsigned long long)tasks, (unsigned long long)fallbacks,
	       (unsigned long long)walked_here, levels);
	int bad = 0;
	if (memcmp(&pooled, &serial, sizeof(pooled)) != 0) {
		fprintf(stderr,
			"du: the serial walk found %llu bytes in %llu files\n",
			(unsigned long long)serial.bytes,
			(unsigned long long)serial.files);
		bad = 1;
	}
	if (tasks + walked_here != pooled.dirs) {
		fprintf(stderr,
			"du: tasks and walks in place do not make "
			"%llu directories\n",
			(unsigned long long)pooled.dirs);
		bad = 1;
	}
	/* A wait past the bound needs every thread of the pool waiting, so
	 * at the end of the waits' chain a worker that may not run the task
	 * it waits for: it runs 32 nested already (docs/api.md, "Waits that
	 * wait"), each a level below the one before.  Shallow: no tree of 32
	 * levels or fewer gets there. */
	bool shallow = levels <= 32;
	if (shallow && fallbacks != 0) {
		fprintf(stderr, "du: %u levels fell back: fork-join failed\n",
			levels);
		bad = 1;
	}
	return bad;
}
