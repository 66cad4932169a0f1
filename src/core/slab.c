/*
 * core/slab.c: recycled fixed-size memory blocks, for executors' job
 * records (the thread pool's jobs, the process pool's small ones).
 *
 * Owns: slabs of fixed-size blocks (three size classes), each with its
 * own list of blocks given back; per class, the list of slabs that have
 * blocks to give (free or not yet carved); the per-thread caches; the
 * larger slabs idle workers make ready ahead of need.
 * Threads: any thread that submits (takes blocks) or drops the last
 * reference of a future that lives in a block (gives them back).
 * Locks: cls_lock(c) guards every slab of class c (its free list, live
 * count, carving and its place in the partial list) and the partial
 * list; ready[c].lock the ready list.  Both are leaf locks, never held
 * together.  The per-thread caches need none.
 *
 * Why: a task and its future live in one block; taking one from the
 * thread's cache is a pointer pop, cheaper than the malloc and free per
 * task a stream of tiny tasks (W1) pays (docs/perf-log.md).  Futures
 * outlive their pool, so the caches are global, not per pool.
 *
 * Memory follows what is live (issue 15): a thread's cache holds at most
 * TCACHE_MAX blocks per class; past that half of it goes back to the
 * blocks' slabs, where any thread's next refill finds them.  (Before, such
 * blocks pinned a slab each: windows of 10,000 tasks grew ~8 MiB per
 * million tasks.)  A slab whose every block came back is kept while its
 * class is busy (a refill in the last KEEP_NS), so that the next burst
 * reuses its pages: freed, it came back from malloc as fresh pages every
 * other burst, a fault each (W-MPI2, docs/perf-log.md).  Kept, it is
 * carved again from its start (a refill computes addresses, no chase of
 * a free list through blocks out of the cache).  Once the class has been
 * quiet that long, the next give-back frees all but EMPTY_MAX.  A
 * thread's cache goes back when it exits, the caller's when a pool is
 * freed (fut__slab_trim), which frees every empty slab.
 *
 * A slab is whole 4 KiB pages, 4 KiB aligned; each page starts with a
 * 64-byte header that names its slab (the first page's holds the slab),
 * and blocks never straddle a page, so a block finds its slab from its
 * address: a job block has no header (the thread pool's 64-byte job is
 * one cache line, 63 to a page).  A slab is carved a refill at a time, so
 * a program with a few tasks touches a few pages.
 *
 * A thread's first GROW_AFTER slabs of a class are one page; later ones
 * MED_SLAB bytes, under glibc's mmap threshold (a freed one is reused from
 * the heap, not unmapped), their pages made present with one
 * madvise(MADV_POPULATE_WRITE), not a fault each: a million pending tasks
 * touch 16,000 pages, and the faults cost a cold W1 more than its tasks
 * did (docs/perf-log.md).
 */
#include <assert.h>
#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "core/slab.h"
#include "core/sync.h"

#define SLAB_PAGE 4096u /* a slab is whole ones of these, aligned */
#define PAGE_HEADER 64u /* at the start of each: its slab */
#define GROW_AFTER 16u	/* small (one-page) slabs per class made first */
#define MED_SLAB ((size_t)112 << 10) /* bytes of a later slab */
#define READY_MAX 2u		     /* larger slabs per class kept ready */
#define TCACHE_MAX 256u		     /* blocks per class a thread keeps */
#define EMPTY_MAX 1u	   /* slabs per class kept with every block back */
#define KEEP_NS 1000000000 /* ...or all of them, this long after a refill */
#define REFILL 64u	   /* blocks a cache takes from a slab at a time */

/* What each page of a slab starts with. */
struct page_header {
	struct slab *slab;
};

struct free_block {
	struct free_block *next;
};

/* In its first page's header.  All but page, cls and bytes are guarded
 * by its class's lock. */
struct slab {
	struct page_header page; /* names itself */
	/* In the partial list (or, while ready, the ready list: next). */
	struct slab *prev, *next;
	struct free_block *free; /* blocks given back */
	uint32_t live;		 /* blocks taken and not given back */
	uint32_t carve;		 /* offset of the next block never carved */
	uint32_t bytes;		 /* its size */
	uint16_t cls;
	bool listed;  /* in the partial list */
	bool retired; /* fut__slab_cache_flush: never reused */
};

_Static_assert(sizeof(struct slab) <= PAGE_HEADER,
	       "the slab must fit its first page header");
_Static_assert(MED_SLAB % SLAB_PAGE == 0, "a slab is whole pages");

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

struct tcache {
	struct free_block *head[FUT__SLAB_NCLASS];
	uint32_t n[FUT__SLAB_NCLASS];
	uint32_t slabs_made[FUT__SLAB_NCLASS]; /* small ones, up to GROW_AFTER */
	bool registered;
};

static _Thread_local struct tcache tcache;

/* Per class: the slabs with a block to give (given back or never
 * carved), most recently listed first. */
static struct {
	fut__lock lock;
	struct slab *partial;
	uint32_t nempty;     /* listed slabs with live == 0 */
	int64_t refilled_ns; /* the last refill's time */
} classes[FUT__SLAB_NCLASS];

/* Whether cls had a refill lately: its empty slabs are kept.  Caller
 * holds the class lock. */
static bool busy(unsigned cls)
{
	return fut__now_ns() - classes[cls].refilled_ns < KEEP_NS;
}

/* Larger slabs made ready by idle workers (fut__slab_provision), their
 * pages present, linked through next. */
static struct {
	fut__lock lock;
	struct slab *head;
	_Atomic uint32_t n;  /* written under lock, read as a hint */
	_Atomic bool wanted; /* a thread took one: make more */
} ready[FUT__SLAB_NCLASS];

/* Bytes of every slab alive, ready ones too (fut__slab_bytes). */
static _Atomic size_t slab_bytes;

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

/* Where the next block never carved would start, past a page's end or
 * header; s->bytes or more when there is none. */
static uint32_t carve_next(const struct slab *s)
{
	size_t bs = block_size(s->cls);
	uint32_t in_page = s->carve % SLAB_PAGE;
	if (in_page == 0)
		return s->carve + PAGE_HEADER;
	if (in_page + bs <= PAGE_HEADER + blocks_per_page(s->cls) * bs)
		return s->carve;
	return s->carve - in_page + SLAB_PAGE + PAGE_HEADER;
}

/* The next block of s never carved, or NULL.  Caller holds the class
 * lock. */
static void *carve_one(struct slab *s)
{
	uint32_t at = carve_next(s);
	if (at >= s->bytes)
		return NULL;
	if (at % SLAB_PAGE == PAGE_HEADER && at != PAGE_HEADER)
		/* A page's first block: its header names the slab. */
		((struct page_header *)(void *)((char *)s + at - PAGE_HEADER))
			->slab = s;
	s->carve = at + (uint32_t)block_size(s->cls);
	return (char *)s + at;
}

static void slab_free(struct slab *s)
{
	atomic_fetch_sub_explicit(&slab_bytes, s->bytes, memory_order_relaxed);
	fut__free(s);
}

size_t fut__slab_bytes(void)
{
	return atomic_load_explicit(&slab_bytes, memory_order_relaxed);
}

static bool has_blocks(const struct slab *s)
{
	return s->free != NULL || carve_next(s) < s->bytes;
}

static void list_add(unsigned cls, struct slab *s)
{
	assert(fut__lock_held(&classes[cls].lock));
	s->prev = NULL;
	s->next = classes[cls].partial;
	if (s->next != NULL)
		s->next->prev = s;
	classes[cls].partial = s;
	s->listed = true;
}

static void list_remove(unsigned cls, struct slab *s)
{
	assert(fut__lock_held(&classes[cls].lock));
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		classes[cls].partial = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	s->listed = false;
}

/* Gives block b back to its slab; returns the slab if it is to be freed
 * (the caller holds the class lock and frees it once dropped), else NULL. */
static struct slab *give_back(unsigned cls, struct free_block *b)
{
	struct slab *s = slab_of(b);
	assert(fut__lock_held(&classes[cls].lock) && s->live > 0);
	s->live--;
	if (s->retired)
		return s->live == 0 ? s : NULL;
	if (!s->listed)
		list_add(cls, s);
	if (s->live != 0) {
		b->next = s->free;
		s->free = b;
		return NULL;
	}
	if (classes[cls].nempty < EMPTY_MAX || busy(cls)) {
		/* Carved again (see the opening comment): no free list. */
		s->free = NULL;
		s->carve = PAGE_HEADER;
		classes[cls].nempty++;
		return NULL;
	}
	list_remove(cls, s);
	return s;
}

/* Caller holds the class lock: unlists the slabs of cls with no block
 * out but `keep` of them, onto *dead (retire: and retires the others, so
 * that none of their blocks is reused). */
static void unlist_empty(unsigned cls, uint32_t keep, bool retire,
			 struct slab **dead)
{
	for (struct slab *s = classes[cls].partial, *next; s != NULL;
	     s = next) {
		next = s->next;
		if (s->live == 0 ? classes[cls].nempty <= keep : !retire)
			continue;
		list_remove(cls, s);
		if (s->live != 0) {
			s->retired = true;
			continue;
		}
		classes[cls].nempty--;
		s->next = *dead;
		*dead = s;
	}
}

static void free_slabs(struct slab *dead)
{
	while (dead != NULL) {
		struct slab *next = dead->next;
		slab_free(dead);
		dead = next;
	}
}

/* Gives back a list of blocks of class cls, and frees the slabs it
 * empties that are not kept (give_back()). */
static void give_back_list(unsigned cls, struct free_block *b)
{
	struct slab *dead = NULL;
	fut__lock_acquire(&classes[cls].lock);
	while (b != NULL) {
		struct free_block *next = b->next;
		struct slab *s = give_back(cls, b);
		if (s != NULL) {
			s->next = dead;
			dead = s;
		}
		b = next;
	}
	/* Quiet: the empty slabs kept for a burst go, but for EMPTY_MAX. */
	if (classes[cls].nempty > EMPTY_MAX && !busy(cls))
		unlist_empty(cls, EMPTY_MAX, false, &dead);
	fut__lock_release(&classes[cls].lock);
	free_slabs(dead);
}

/* Moves this thread's cache back to the slabs. */
static void tcache_flush(struct tcache *tc)
{
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++) {
		struct free_block *b = tc->head[cls];
		tc->head[cls] = NULL;
		tc->n[cls] = 0;
		give_back_list(cls, b);
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

static struct slab *ready_pop(unsigned cls)
{
	if (atomic_load_explicit(&ready[cls].n, memory_order_relaxed) == 0)
		return NULL;
	fut__lock_acquire(&ready[cls].lock);
	struct slab *s = ready[cls].head;
	if (s != NULL) {
		ready[cls].head = s->next;
		atomic_fetch_sub_explicit(&ready[cls].n, 1,
					  memory_order_relaxed);
	}
	fut__lock_release(&ready[cls].lock);
	return s;
}

/* Frees the slabs of every class with no block out (retire: and
 * retires the others, so that none of their blocks is reused), and the
 * ready ones. */
static void release_empty(bool retire)
{
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++) {
		struct slab *dead = NULL;
		fut__lock_acquire(&classes[cls].lock);
		unlist_empty(cls, 0, retire, &dead);
		assert(classes[cls].nempty == 0);
		fut__lock_release(&classes[cls].lock);
		free_slabs(dead);
		atomic_store(&ready[cls].wanted, false);
		for (struct slab *r; (r = ready_pop(cls)) != NULL;)
			slab_free(r);
	}
}

void fut__slab_trim(void)
{
	tcache_flush(&tcache);
	release_empty(false);
}

/* A fork child must not inherit a lock another thread held. */
__attribute__((constructor)) static void guard_locks(void)
{
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++) {
		fut__lock_fork_guard(&classes[cls].lock);
		fut__lock_fork_guard(&ready[cls].lock);
	}
}

/* Runs at process exit (or library unload): the main thread's cache and
 * the empty slabs go back to malloc. */
__attribute__((destructor)) static void release_all(void)
{
	fut__slab_trim();
}

void fut__slab_cache_flush(void)
{
	tcache_flush(&tcache);
	release_empty(true);
	for (unsigned cls = 0; cls < FUT__SLAB_NCLASS; cls++)
		tcache.slabs_made[cls] = 0; /* small slabs again */
}

static void tcache_register(void)
{
	pthread_once(&key_once, make_key);
	if (key_ok)
		pthread_setspecific(key, &tcache);
	tcache.registered = true;
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
		s->bytes = MED_SLAB;
		atomic_fetch_add_explicit(&slab_bytes, MED_SLAB,
					  memory_order_relaxed);
		fut__pages_populate(s, MED_SLAB);
		fut__pages_touch(s, MED_SLAB);
		fut__lock_acquire(&ready[cls].lock);
		uint32_t n = atomic_load_explicit(&ready[cls].n,
						  memory_order_relaxed);
		bool keep = n < READY_MAX;
		if (keep) {
			s->next = ready[cls].head;
			ready[cls].head = s;
			atomic_store_explicit(&ready[cls].n, ++n,
					      memory_order_relaxed);
		}
		if (n >= READY_MAX)
			atomic_store_explicit(&ready[cls].wanted, false,
					      memory_order_relaxed);
		fut__lock_release(&ready[cls].lock);
		if (!keep)
			slab_free(s);
		return true;
	}
	return false;
}

/* A new slab of class cls, nothing carved yet; NULL when out of memory. */
static struct slab *new_slab(unsigned cls)
{
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
			return NULL;
		atomic_fetch_add_explicit(&slab_bytes, size,
					  memory_order_relaxed);
		if (med)
			fut__pages_populate(s, size);
	}
	if (!med)
		tcache.slabs_made[cls]++;
	memset(s, 0, sizeof(*s));
	s->page.slab = s; /* the first header names s */
	s->bytes = (uint32_t)size;
	s->cls = (uint16_t)cls;
	s->carve = PAGE_HEADER;
	return s;
}

/* Takes up to REFILL blocks of slab s into this thread's cache.  Caller
 * holds the class lock. */
static void take_from(unsigned cls, struct slab *s)
{
	assert(fut__lock_held(&classes[cls].lock));
	if (s->live == 0 && s->listed)
		classes[cls].nempty--;
	uint32_t k = 0;
	while (k < REFILL) {
		struct free_block *f = s->free;
		if (f != NULL)
			s->free = f->next;
		else if ((f = carve_one(s)) == NULL)
			break;
		f->next = tcache.head[cls];
		tcache.head[cls] = f;
		k++;
	}
	s->live += k;
	tcache.n[cls] += k;
	if (s->listed && !has_blocks(s))
		list_remove(cls, s);
}

/* Refills the cache from a slab with blocks to give, or a new slab;
 * false when out of memory. */
static bool refill(unsigned cls)
{
	if (!tcache.registered)
		tcache_register();
	fut__lock_acquire(&classes[cls].lock);
	classes[cls].refilled_ns = fut__now_ns();
	struct slab *s = classes[cls].partial;
	if (s != NULL) {
		take_from(cls, s);
		fut__lock_release(&classes[cls].lock);
		return true;
	}
	fut__lock_release(&classes[cls].lock);
	if ((s = new_slab(cls)) == NULL)
		return false;
	fut__lock_acquire(&classes[cls].lock);
	take_from(cls, s);
	if (has_blocks(s))
		list_add(cls, s);
	fut__lock_release(&classes[cls].lock);
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

void *fut__slab_alloc(size_t size, bool *slab)
{
	unsigned cls = fut__slab_class_for(size);
	*slab = cls < FUT__SLAB_NCLASS;
	return *slab ? fut__slab_get(cls) : fut__malloc(size);
}

void fut__slab_free(void *block, bool slab)
{
	(slab ? fut__slab_put : fut__free)(block);
}

void fut__slab_put(void *block)
{
	struct free_block *b = block;
	unsigned cls = slab_of(block)->cls;
	/* A thread that only gives back registers too (flushed at exit). */
	if (!tcache.registered)
		tcache_register();
	if (tcache.n[cls] >= TCACHE_MAX) {
		/* Full: half goes back to its slabs, for any thread's next
		 * refill (a worker dropping the last reference feeds the
		 * threads that only submit). */
		struct free_block *half = tcache.head[cls], *last = half;
		for (unsigned i = 1; i < TCACHE_MAX / 2; i++)
			last = last->next;
		tcache.head[cls] = last->next;
		last->next = NULL;
		tcache.n[cls] -= TCACHE_MAX / 2;
		give_back_list(cls, half);
	}
	b->next = tcache.head[cls];
	tcache.head[cls] = b;
	tcache.n[cls]++;
}
