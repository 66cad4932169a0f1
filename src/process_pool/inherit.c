/*
 * inherit.c: what the fork server drops of what it inherits from the
 * parent: the parent's mappings of the shared results its pools handed
 * out (shared.c maps them, from a worker's memfd, child.c).
 *
 * Owns: finding those mappings in /proc/self/maps by their memfd's name
 * and unmapping them.
 * Threads: the fork server's one thread, just forked (forkserver.c): only
 * async-signal-safe calls (open, read, close, munmap), no allocation.
 * Locks: none.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "process_pool/child.h"

/* The parent's mappings of shared results (shared.c): start and end of
 * each, read from /proc/self/maps. */
struct span {
	uintptr_t lo, hi;
};

/* The hex number at *p, p moved past it. */
static uintptr_t parse_hex(const char **p)
{
	uintptr_t v = 0;
	for (;; (*p)++) {
		char c = **p;
		if (c >= '0' && c <= '9')
			v = v << 4 | (uintptr_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uintptr_t)(c - 'a' + 10);
		else
			return v;
	}
}

/* Notes the line of /proc/self/maps (len bytes, truncated if long) in
 * spans[*n] if it maps a worker's result memfd and there is room. */
static void note_result(const char *line, size_t len, struct span *spans,
			size_t max, size_t *n)
{
	static const char name[] = "/memfd:" FUT__PP_RESULT_MEMFD;
	const char *at = memmem(line, len, name, sizeof(name) - 1);
	if (at == NULL || *n == max)
		return;
	const char *end = at + sizeof(name) - 1;
	if (end < line + len && *end != ' ')
		return; /* a longer name, not ours */
	const char *p = line;
	spans[*n].lo = parse_hex(&p);
	if (*p++ != '-')
		return;
	spans[*n].hi = parse_hex(&p);
	if (spans[*n].hi > spans[*n].lo)
		(*n)++;
}

/* Up to max of the result mappings this process has; how many. */
static size_t find_results(struct span *spans, size_t max)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[4096], line[256];
	size_t len = 0, n = 0;
	ssize_t got;
	while ((got = read(fd, buf, sizeof(buf))) > 0 ||
	       (got < 0 && errno == EINTR)) {
		for (ssize_t i = 0; i < got; i++) {
			if (buf[i] != '\n') {
				if (len < sizeof(line))
					line[len++] = buf[i];
				continue;
			}
			note_result(line, len, spans, max, &n);
			len = 0;
		}
	}
	(void)close(fd);
	return n;
}

/*
 * A fork of the parent inherits its mappings of the shared results other
 * pools (or this one, for a restart) handed out: each would stay in this
 * server, and in every worker, as long as the server lives.  They are
 * found by name and unmapped, a batch at a time (the maps file is not
 * read while it changes).  Not MADV_DONTFORK in the parent: that would
 * take them from the application's own fork children too, where an
 * inherited future's result must stay readable.  Best effort: without
 * /proc they stay.
 */
void fut__pp_drop_results(void)
{
	struct span spans[32];
	size_t n;
	do {
		n = find_results(spans, 32);
		for (size_t i = 0; i < n; i++)
			if (munmap((void *)spans[i].lo,
				   spans[i].hi - spans[i].lo) != 0)
				return; /* it would be found again */
	} while (n == 32);
}
