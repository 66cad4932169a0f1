/*
 * core/alloc.h: every allocation of the library goes through alloc.c.
 */
#ifndef FUT_CORE_ALLOC_H
#define FUT_CORE_ALLOC_H

#include "core/base.h"

FUT__PRIVATE void *fut__malloc(size_t n);
/* n bytes aligned to `align` (a power of two, a multiple of the pointer
 * size); freed with fut__free. */
void *fut__malloc_aligned(size_t align, size_t n);
/* As fut__malloc_aligned, for work a thread does in the background (a
 * slab made ready ahead of need): no injected failure and no count, so
 * that a test that fails or counts the allocations of one call never
 * sees it. */
void *fut__malloc_aligned_background(size_t align, size_t n);
FUT__PRIVATE void *fut__calloc(size_t n, size_t size);
FUT__PRIVATE void *fut__realloc(void *p, size_t n);
FUT__PRIVATE void fut__free(void *p);
FUT__PRIVATE char *fut__strdup(const char *s);
/* A new string formatted from fmt; NULL when out of memory (errno
 * ENOMEM) or when vsnprintf fails (its errno: EILSEQ, EOVERFLOW). */
FUT__PRIVATE char *fut__vasprintf(const char *fmt, va_list ap);

/* Makes the whole pages of [p, p + n) present: one system call, where
 * touching them would fault once per page.  Advice only: a kernel before
 * 5.14 (no MADV_POPULATE_WRITE) faults them as they are touched. */
void fut__pages_populate(void *p, size_t n);
/* Reads a byte of each page of [p, p + n), from user space.  On a VM
 * whose host shadows the guest's page tables (this project's VM), a page
 * made present still costs ~4.4 us at its first access from user space,
 * by whichever thread of the process comes first: an idle worker pays it
 * here, ahead of the submitter who will use the memory (docs/perf-log.md,
 * 2026-12-05 "W1").  Elsewhere it is a TLB miss per page. */
void fut__pages_touch(const void *p, size_t n);

/* Test hook: the n-th allocation from now fails (1: the next one), every
 * later one succeeds; 0 disables.  Returns the countdown it replaces: 0
 * when the failure set before was injected (or none was set), else how
 * many allocations were still due before it. */
FUT__PRIVATE long fut__alloc_fail_nth(long n);
/* Test hook: count allocations in a row fail, from the n-th from now on
 * (fut__alloc_fail_nth(n) is fut__alloc_fail_run(n, 1)); n or count 0
 * disables.  Returns as fut__alloc_fail_nth, for the first failure of the
 * run it replaces.  Static link only (tests/mpi). */
long fut__alloc_fail_run(long n, long count);

#endif /* FUT_CORE_ALLOC_H */
