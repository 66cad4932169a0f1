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
/* A new string formatted from fmt (NULL when out of memory). */
FUT__PRIVATE char *fut__vasprintf(const char *fmt, va_list ap);

/* Test hook: the n-th allocation from now fails (1: the next one), every
 * later one succeeds; 0 disables.  Returns the countdown it replaces: 0
 * when the failure set before was injected (or none was set), else how
 * many allocations were still due before it. */
FUT__PRIVATE long fut__alloc_fail_nth(long n);

#endif /* FUT_CORE_ALLOC_H */
