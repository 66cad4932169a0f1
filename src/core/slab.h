/*
 * core/slab.h: recycled fixed-size blocks, per-thread caches over slabs
 * (slab.c); executors take their job records from here.
 */
#ifndef FUT_CORE_SLAB_H
#define FUT_CORE_SLAB_H

#include "core/base.h"

/* Three block classes (user bytes): small (64, 64-byte aligned: a
 * thread-pool job is one), mid (128) and large (160), the larger two
 * 16-aligned.  Executors size their records to fit: a thread-pool job
 * with inline input and a process-pool job take the two larger ones. */
#define FUT__SLAB_NCLASS 3u
#define FUT__SLAB_SMALL 64u
#define FUT__SLAB_MID 128u
#define FUT__SLAB_LARGE 160u

/* The smallest class whose blocks hold `size` bytes; FUT__SLAB_NCLASS when
 * none does. */
unsigned fut__slab_class_for(size_t size);
/* A free block of class cls from this thread's cache (class 0's are
 * 64-byte aligned, the others 16); NULL when out of memory. */
void *fut__slab_get(unsigned cls);
/* Gives a block back (to this thread's cache). */
void fut__slab_put(void *block);
/* `size` bytes (16-byte aligned) for a record that lives as long as a
 * task: a block of the smallest class that holds them (*slab true), else
 * malloc's; NULL when out of memory.  For a small task a malloc and a
 * free would be most of what submitting it costs (docs/perf-log.md). */
FUT__PRIVATE void *fut__slab_alloc(size_t size, bool *slab);
/* Gives back what fut__slab_alloc gave, `slab` as it said. */
FUT__PRIVATE void fut__slab_free(void *block, bool slab);
/* Gives this thread's cached blocks back to their slabs and frees the
 * slabs with no block out, and those made ready (a pool was freed). */
void fut__slab_trim(void);
/* Test hook: as fut__slab_trim, and no block of a slab that has one out
 * is reused, so that the next submit allocates; this thread starts over
 * with small slabs. */
void fut__slab_cache_flush(void);
/* Called by an idle thread-pool worker: makes one larger slab ready (its
 * pages present) for a thread that is taking them, so that thread need
 * not wait for its pages.  True if it did; cheap when nothing is wanted. */
bool fut__slab_provision(void);
/* Test hook: the blocks of class cls a thread takes from its small slabs
 * before it takes larger ones. */
size_t fut__slab_small_blocks(unsigned cls);
/* Test hook: the slabs of class cls made ready and not yet taken. */
uint32_t fut__slab_ready_count(unsigned cls);
/* Test and bench hook: bytes of every slab alive (blocks in use, in
 * caches, given back, and slabs made ready). */
size_t fut__slab_bytes(void);
/* Test hook: the slab a block (or a thread-pool future) lies in: *bytes
 * its size (a thread's first slabs of a class are small, later ones
 * larger), the return value its start. */
void *fut__slab_of(void *block, size_t *bytes);
#endif /* FUT_CORE_SLAB_H */
