/*
 * alloc.c: the one place that calls malloc, calloc, realloc,
 * posix_memalign and free.
 *
 * Owns: the allocation wrapper and its fault-injection hook, and the
 * helpers that make fresh pages present ahead of use (the slabs').
 * Threads: any; the hook is two atomics, so it costs one relaxed load per
 * allocation when disabled.
 * Locks: none.
 *
 * Tests fail the n-th allocation (fut__alloc_fail_nth) to prove that every
 * constructor unwinds with FUT_ENOMEM and leaks nothing, or a run of them
 * (fut__alloc_fail_run) to prove that a path which meets a failure while
 * handling one still ends what it handles.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"

/* 0: off; n: calls up to the last failure of the run, which fails the
 * last fail_run of them (1: the n-th call alone). */
static _Atomic long fail_countdown;
static _Atomic long fail_run = 1; /* read only while the countdown runs */

long fut__alloc_fail_run(long n, long count)
{
	if (n <= 0 || count <= 0) {
		n = 0;
		count = 1;
	}
	long run = atomic_exchange(&fail_run, count);
	long left = atomic_exchange(&fail_countdown, n > 0 ? n + count - 1 : 0);
	/* The replaced run's first failure is the (left - run + 1)-th call
	 * from now; 0 once it came (or none was set). */
	return left >= run ? left - run + 1 : 0;
}

long fut__alloc_fail_nth(long n)
{
	return fut__alloc_fail_run(n, 1);
}

/* True if the hook says this allocation must fail. */
static bool injected_failure(void)
{
	long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
	while (FUT__UNLIKELY(c > 0)) {
		if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1))
			return c <= atomic_load(&fail_run);
	}
	return false;
}

void *fut__malloc(size_t n)
{
	if (injected_failure())
		return NULL;
	return malloc(n ? n : 1);
}

void *fut__malloc_aligned_background(size_t align, size_t n)
{
	void *p = NULL;
	return posix_memalign(&p, align, n ? n : 1) == 0 ? p : NULL;
}

void *fut__malloc_aligned(size_t align, size_t n)
{
	if (injected_failure())
		return NULL;
	return fut__malloc_aligned_background(align, n);
}

void *fut__calloc(size_t n, size_t size)
{
	if (injected_failure())
		return NULL;
	return calloc(n ? n : 1, size ? size : 1);
}

void *fut__realloc(void *p, size_t n)
{
	if (injected_failure())
		return NULL;
	return realloc(p, n ? n : 1);
}

void fut__free(void *p)
{
	free(p);
}

char *fut__strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *copy = fut__malloc(n);
	if (copy != NULL)
		memcpy(copy, s, n);
	return copy;
}

char *fut__vasprintf(const char *fmt, va_list ap)
{
	va_list again;
	va_copy(again, ap);
	int n = vsnprintf(NULL, 0, fmt, again);
	va_end(again);
	if (n < 0)
		return NULL; /* errno: EILSEQ, EOVERFLOW */
	char *s = fut__malloc((size_t)n + 1);
	if (s != NULL)
		vsnprintf(s, (size_t)n + 1, fmt, ap);
	else
		errno = ENOMEM;
	return s;
}

void fut__pages_populate(void *p, size_t n)
{
#ifdef MADV_POPULATE_WRITE
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(page - 1);
	if (e > a)
		(void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
	(void)p;
	(void)n;
#endif
}

void fut__pages_touch(const void *p, size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < n; i += page)
		(void)*((const volatile char *)p + i);
}
