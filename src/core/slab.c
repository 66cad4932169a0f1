/*
 * core/slab.c: recycled fixed-size memory blocks, for executors' job
 * records (the thread pool's jobs, the process pool's small ones).
 *
 * Owns: slabs of fixed-size blocks (three size classes), the per-thread
 * caches of free blocks, and a bounded global overflow list.
 * Threads: any thread that submits (takes blocks) or drops the last
 * reference of a future that lives in a block (gives them back).
 * Locks: overflow[cls].lock guards that class's overflow list; it is a
 * leaf lock.  The per-thread caches need none.  A slab's live count is
 * atomic.
 *
 * Why: a task and its future live in one block.  Taking one from the
 * thread's cache is a pointer pop, cheaper than a malloc and a free per
 * task, which a stream of tiny tasks (W1) pays for (docs/perf-log.md).  Blocks outlive the pool
 * that used them (futures outlive their pool), so the caches are global,
 * not per pool.  A slab goes back to fut__free once every one of its
 * blocks came back (a thread's cache and its slab in use are
 * flushed at thread exit through a pthread key destructor, the main
 * thread's and the overflow list at process exit), so valgrind and ASan
 * see no leak.
 *
 * A slab is whole 4 KiB pages, 4 KiB aligned; each page starts with a
 * 64-byte page header that names its slab (the first page's holds the
 * slab itself), and blocks never straddle a page, so a block finds its
 * slab from its address alone.  A job block then carries no header: the
 * thread pool's 64-byte job takes 64 bytes (one cache line, 63 to a
 * page), where an 8-byte header per block made it 72.
 *
 * Two slab sizes: a thread's first GROW_AFTER slabs of a class are small
 * (one page), so that a program with a few tasks in flight
 * holds a few kilobytes; after that they are MED_SLAB bytes, still under
 * glibc's mmap threshold (so a freed one is reused from the heap, not
 * unmapped and faulted in again), and their pages are made present with
 * one madvise(MADV_POPULATE_WRITE) instead of one page fault each.  A
 * million pending tasks touch 65 MB of blocks, 16,000 pages, and a page
 * fault each cost a cold W1 more than its tasks did (docs/perf-log.md
 * has the numbers).  Blocks are carved from a slab REFILL at a time.
 */
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/slab.h"
#include "core/sync.h"

#define SLAB_PAGE 4096u /* a slab is whole ones of these, aligned */
#define PAGE_HEADER 64u /* at the start of each: its slab */
#define GROW_AFTER 16u	/* small (one-page) slabs per class made first */
#define MED_SLAB ((size_t)112 << 10) /* bytes of a later slab */
#define READY_MAX 2u		     /* larger slabs per class kept ready */
#define TCACHE_MAX 256u		     /* blocks per class a thread keeps */
#define OVERFLOW_MAX 8192u	     /* blocks per class kept globally */
#define REFILL 64u /* blocks moved from the overflow at a time */

/* What each page of a slab starts with. */
struct page_header {
	struct slab *slab;
};

/* In its first page's header. */
struct slab {
	struct page_header page; /* names itself */
	/* Blocks not yet given back, the ones not yet carved included. */
	_Atomic uint32_t live;
	uint32_t cls;
	uint32_t bytes; /* its size */
};

/* The slab and a ready slab's link (ready_link) fit the first header. */
_Static_assert(sizeof(struct slab) + sizeof(struct slab *) <= PAGE_HEADER,
	       "the slab must fit its first page header");
_Static_assert(MED_SLAB % SLAB_PAGE == 0, "a slab is whole pages");

struct free_block {
	struct free_block *next;
};

static const size_t class_user_size[FUT__SLAB_NCLASS] = {
	FUT__SLAB_SMALL,
	FUT__SLAB_MID,
	FUT__SLAB_LARGE,
};

unsigned fut__slab_class_for(size_t size)
{
	unsigned cls = 0;
	while (cls < FUT__SLAB_NCLASS && size > class_user_size[cls])
		cls++;
	return cls;
}

/* The slab a thread carves new blocks from: next up to page_end in the
 * page being carved, then the pages up to end. */
struct carve {
	struct slab *slab;
	char *next, *page_end, *end;
};

struct tcache {
	struct free_block *head[FUT__SLAB_NCLASS];
	uint32_t n[FUT__SLAB_NCLASS];
	struct carve carve[FUT__SLAB_NCLASS];
	uint32_t slabs_made[FUT__SLAB_NCLASS]; /* small ones, up to GROW_AFTER */
	bool registered;
};

static _Thread_local struct tcache tcache;

static struct {
	fut__lock lock;
	struct free_block *head;
	uint32_t n;
} overflow[FUT__SLAB_NCLASS];

/* Larger slabs made ready by idle workers (fut__slab_provision), their
 * pages present, linked through their first word past the header. */
static struct {
	fut__lock lock;
	struct slab *head;
	_Atomic uint32_t n;  /* written under lock, read as a hint */
	_Atomic bool wanted; /* a thread took one: make more */
} ready[FUT__SLAB_NCLASS];

static struct slab *ready_pop(unsigned cls);

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static bool key_ok;

/* Alignment of a class's user blocks: a thread-pool job (no inline
 * bytes) needs only its pointers' 8; inline input gets malloc's 16. */
static size_t class_align(unsigned cls)
{
	return cls == 0 ? 8 : 16;
}

/* A block, a multiple of the class's alignment (which PAGE_HEADER is). */
static size_t block_size(unsigned cls)
{
	size_t a = class_align(cls);
	return (class_user_size[cls] + a - 1) & ~(a - 1);
}

static size_t blocks_per_page(unsigned cls)
{
	return (SLAB_PAGE - PAGE_HEADER) / block_size(cls);
}

/* The start of the slab page p lies in. */
static uintptr_t page_of(const void *p)
{
	return (uintptr_t)p & ~(uintptr_t)(SLAB_PAGE - 1);
}

static struct slab *slab_of(void *block)
{
	return ((struct page_header *)page_of(block))->slab;
}

/* Starts carving the page at `page` (of c's slab): names the slab in its
 * header. */
static void carve_page(struct carve *c, char *page, unsigned cls)
{
	((struct page_header *)(void *)page)->slab = c->slab;
	c->next = page + PAGE_HEADER;
	c->page_end = c->next + blocks_per_page(cls) * block_size(cls);
}

/* The next block of c's slab; NULL when it has none left. */
static char *carve_one(struct carve *c, unsigned cls)
{
	if (c->next == c->page_end) {
		char *page = (char *)(page_of(c->page_end - 1) + SLAB_PAGE);
		if (page >= c->end)
			return NULL;
		carve_page(c, page, cls);
	}
	char *b = c->next;
	c->next += block_size(cls);
	return b;
}

/* Gives n blocks back to slab s; frees the slab with its last block. */
static void slab_drop(struct slab *s, uint32_t n)
{
	if (atomic_fetch_sub_explicit(&s->live, n, memory_order_acq_rel) != n)
		return;
	fut__free(s);
}

static void slab_return(struct free_block *b)
{
	slab_drop(slab_of(b), 1);
}

/* Gives back the blocks of this thread's slab in use never carved. */
static void carve_abandon(struct carve *c, unsigned cls)
{
	if (c->slab == NULL)
		return;
	uintptr_t page = page_of(c->page_end - 1);
	size_t later = ((uintptr_t)c->end - page) / SLAB_PAGE - 1;
	size_t left = (size_t)(c->page_end - c->next) / block_size(cls) +
		      later * blocks_per_page(cls);
	struct slab *s = c->slab;
	*c = (struct carve){ 0 };
	if (left > 0)
		slab_drop(s, (uint32_t)left);
}

static void return_list(struct free_block *b)
{
	while (b != NULL) {
		struct free_block *next = b->next;
		slab_return(b);
		b = next;
	}
}

/* Moves this thread's cache to the overflow list (what fits) and the
 * rest back to the slabs. */
static void tcache_flush(struct tcache *tc)
{
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++) {
		struct free_block *rest = NULL;
		fut__lock_acquire(&overflow[cls].lock);
		while (tc->head[cls] != NULL) {
			struct free_block *b = tc->head[cls];
			tc->head[cls] = b->next;
			if (overflow[cls].n < OVERFLOW_MAX) {
				b->next = overflow[cls].head;
				overflow[cls].head = b;
				overflow[cls].n++;
			} else {
				b->next = rest;
				rest = b;
			}
		}
		tc->n[cls] = 0;
		fut__lock_release(&overflow[cls].lock);
		return_list(rest);
		carve_abandon(&tc->carve[cls], cls);
		tc->slabs_made[cls] = 0; /* small slabs again */
	}
}

static void thread_exit(void *arg)
{
	(void)arg;
	tcache_flush(&tcache);
	/* A later put (another key's destructor) registers again, which
	 * makes pthread run this destructor once more. */
	tcache.registered = false;
}

static void make_key(void)
{
	key_ok = pthread_key_create(&key, thread_exit) == 0;
}

/* Runs at process exit (or library unload): the main thread's cache and
 * the overflow lists go back to malloc. */
__attribute__((destructor)) static void release_all(void)
{
	tcache_flush(&tcache);
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++) {
		fut__lock_acquire(&overflow[cls].lock);
		struct free_block *b = overflow[cls].head;
		overflow[cls].head = NULL;
		overflow[cls].n = 0;
		fut__lock_release(&overflow[cls].lock);
		return_list(b);
		atomic_store(&ready[cls].wanted, false);
		for (struct slab *r; (r = ready_pop(cls)) != NULL;)
			fut__free(r);
	}
}

void fut__slab_cache_flush(void)
{
	release_all();
}

static void tcache_register(void)
{
	pthread_once(&key_once, make_key);
	if (key_ok)
		pthread_setspecific(key, &tcache);
	tcache.registered = true;
}

/* Makes the whole pages of [p, p + n) present: one system call, where
 * touching them would fault once per page.  Advice only: a kernel before
 * 5.14 (no MADV_POPULATE_WRITE) faults them as they are touched. */
static void populate(void *p, size_t n)
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

/* A ready slab's link to the next: its first word past the header. */
static struct slab **ready_link(struct slab *s)
{
	return (struct slab **)(void *)(s + 1);
}

static struct slab *ready_pop(unsigned cls)
{
	if (atomic_load_explicit(&ready[cls].n, memory_order_relaxed) == 0)
		return NULL;
	fut__lock_acquire(&ready[cls].lock);
	struct slab *s = ready[cls].head;
	if (s != NULL) {
		ready[cls].head = *ready_link(s);
		atomic_store_explicit(
			&ready[cls].n,
			atomic_load_explicit(&ready[cls].n,
					     memory_order_relaxed) -
				1,
			memory_order_relaxed);
	}
	fut__lock_release(&ready[cls].lock);
	return s;
}

bool fut__slab_provision(void)
{
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++) {
		if (!atomic_load_explicit(&ready[cls].wanted,
					  memory_order_relaxed))
			continue;
		struct slab *s =
			fut__malloc_aligned_background(SLAB_PAGE, MED_SLAB);
		if (s == NULL)
			return false;
		populate(s, MED_SLAB);
		fut__lock_acquire(&ready[cls].lock);
		uint32_t n = atomic_load_explicit(&ready[cls].n,
						  memory_order_relaxed);
		bool keep = n < READY_MAX;
		if (keep) {
			*ready_link(s) = ready[cls].head;
			ready[cls].head = s;
			atomic_store_explicit(&ready[cls].n, ++n,
					      memory_order_relaxed);
		}
		if (n >= READY_MAX)
			atomic_store_explicit(&ready[cls].wanted, false,
					      memory_order_relaxed);
		fut__lock_release(&ready[cls].lock);
		if (!keep)
			fut__free(s);
		return true;
	}
	return false;
}

/* Makes the slab this thread carves class cls from; false when out of
 * memory.  The one before it has no block left to carve. */
static bool new_slab(unsigned cls)
{
	struct carve *c = &tcache.carve[cls];
	size_t size = SLAB_PAGE;
	bool med = tcache.slabs_made[cls] >= GROW_AFTER;
	struct slab *s = NULL;
	if (med) {
		size = MED_SLAB;
		s = ready_pop(cls);
		atomic_store_explicit(&ready[cls].wanted, true,
				      memory_order_relaxed);
	}
	if (s == NULL) {
		if ((s = fut__malloc_aligned(SLAB_PAGE, size)) == NULL)
			return false;
		if (med)
			populate(s, size);
	}
	if (!med)
		tcache.slabs_made[cls]++;
	s->bytes = (uint32_t)size;
	atomic_init(&s->live,
		    (uint32_t)(size / SLAB_PAGE * blocks_per_page(cls)));
	s->cls = cls;
	carve_abandon(c, cls); /* it has none left: forgets it */
	c->slab = s;
	c->end = (char *)s + size;
	carve_page(c, (char *)s, cls); /* the first header names s */
	return true;
}

/* Refills the cache from the overflow list, the slab in use or a new
 * slab; false when out of memory. */
static bool refill(unsigned cls)
{
	if (!tcache.registered)
		tcache_register();
	fut__lock_acquire(&overflow[cls].lock);
	if (overflow[cls].head != NULL) {
		for (unsigned i = 0; i < REFILL && overflow[cls].head != NULL;
		     i++) {
			struct free_block *b = overflow[cls].head;
			overflow[cls].head = b->next;
			overflow[cls].n--;
			b->next = tcache.head[cls];
			tcache.head[cls] = b;
			tcache.n[cls]++;
		}
		fut__lock_release(&overflow[cls].lock);
		return true;
	}
	fut__lock_release(&overflow[cls].lock);

	struct carve *c = &tcache.carve[cls];
	char *first = c->slab != NULL ? carve_one(c, cls) : NULL;
	if (first == NULL) {
		if (!new_slab(cls))
			return false;
		first = carve_one(c, cls);
	}
	for (unsigned i = 0; i < REFILL && first != NULL; i++) {
		struct free_block *b = (struct free_block *)(void *)first;
		first = i + 1 < REFILL ? carve_one(c, cls) : NULL;
		b->next = tcache.head[cls];
		tcache.head[cls] = b;
		tcache.n[cls]++;
	}
	return true;
}

size_t fut__slab_small_blocks(unsigned cls)
{
	return GROW_AFTER * blocks_per_page(cls);
}

uint32_t fut__slab_ready_count(unsigned cls)
{
	return atomic_load(&ready[cls].n);
}

void *fut__slab_of(void *block, size_t *bytes)
{
	struct slab *s = slab_of(block);
	*bytes = s->bytes;
	return s;
}

void *fut__slab_get(unsigned cls)
{
	if (tcache.head[cls] == NULL && !refill(cls))
		return NULL;
	struct free_block *b = tcache.head[cls];
	tcache.head[cls] = b->next;
	tcache.n[cls]--;
	return b;
}

void fut__slab_put(void *block)
{
	struct free_block *b = block;
	unsigned cls = slab_of(block)->cls;
	/* A thread that never took a block registers too, so that its
	 * cache is flushed when it exits. */
	if (!tcache.registered)
		tcache_register();
	if (tcache.n[cls] < TCACHE_MAX) {
		b->next = tcache.head[cls];
		tcache.head[cls] = b;
		tcache.n[cls]++;
		return;
	}
	/* The cache is full: half of it goes to the overflow list, so a
	 * thread that only releases (a worker dropping the last reference)
	 * feeds the threads that only submit. */
	struct free_block *rest = NULL;
	fut__lock_acquire(&overflow[cls].lock);
	for (unsigned i = 0; i < TCACHE_MAX / 2; i++) {
		struct free_block *x = tcache.head[cls];
		tcache.head[cls] = x->next;
		tcache.n[cls]--;
		if (overflow[cls].n < OVERFLOW_MAX) {
			x->next = overflow[cls].head;
			overflow[cls].head = x;
			overflow[cls].n++;
		} else {
			x->next = rest;
			rest = x;
		}
	}
	fut__lock_release(&overflow[cls].lock);
	return_list(rest);
	b->next = tcache.head[cls];
	tcache.head[cls] = b;
	tcache.n[cls]++;
}
