/*
 * names.c: a function's name across processes (core/names.h): its
 * module's GNU build-id and its offset there.
 *
 * Owns: the module table (every loaded module's build-id and executable
 * segments, from dl_iterate_phdr), read again whenever the loader's
 * counts of modules loaded and unloaded (dlpi_adds, dlpi_subs) moved
 * since.  Raw pointers never cross: a name resolves only to an address
 * inside an executable segment of a module loaded here now with that
 * build-id, and of no other module with it (two copies of one module
 * cannot be told apart: neither is named, nor resolved).
 * Threads: any.
 * Locks: `lock` guards the table; it is never held while anything else is
 * called but dl_iterate_phdr and the allocator.  It is taken around
 * fork(), as the library's other process-wide locks are.
 */
#include <elf.h>
#include <link.h>
#include <stddef.h>
#include <string.h>

#include "core/alloc.h"
#include "core/names.h"
#include "core/sync.h"

#define MAX_SEGS FUT__FN_MODULE_SEGS

struct module {
	struct fut__build_id id;
	uintptr_t base;
	uintptr_t lo[MAX_SEGS], hi[MAX_SEGS]; /* executable PT_LOADs */
	unsigned nsegs;
};

static fut__lock lock;
static struct module *modules; /* lock; rebuilt when the modules change */
static size_t nmodules;
static struct fut__build_id *ids; /* lock: the build-ids alone */
/* lock: the loader's counts when the table was read (valid: they were
 * given). */
static unsigned long long table_adds, table_subs;
static bool table_counts;

/* The lock is taken around fork() (fut__lock_fork_guard): a child forked
 * while another thread read the table (a FUT_START_EXEC fork server
 * starting) would find it held for good, and its own such pool would
 * hang in its creation. */
__attribute__((constructor)) static void guard_lock(void)
{
	fut__lock_fork_guard(&lock);
}

/* The GNU build-id note of a module, if it has one. */
static void read_build_id(const struct dl_phdr_info *info,
			  struct fut__build_id *id)
{
	id->len = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_NOTE)
			continue;
		const unsigned char *p =
			(const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
		const unsigned char *end = p + ph->p_memsz;
		while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
			ElfW(Nhdr) nh;
			memcpy(&nh, p, sizeof(nh));
			size_t namesz = (nh.n_namesz + 3u) & ~(size_t)3;
			size_t descsz = (nh.n_descsz + 3u) & ~(size_t)3;
			const unsigned char *name = p + sizeof(nh);
			const unsigned char *desc = name + namesz;
			if ((size_t)(end - name) < namesz ||
			    (size_t)(end - desc) < descsz)
				break;
			if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
			    memcmp(name, "GNU", 4) == 0 && nh.n_descsz > 0 &&
			    nh.n_descsz <= FUT__BUILD_ID_MAX) {
				id->len = (unsigned char)nh.n_descsz;
				memcpy(id->bytes, desc, nh.n_descsz);
				return;
			}
			p = desc + descsz;
		}
	}
}

/* The loader's counts of modules loaded and unloaded, as dl_iterate_phdr
 * gives them (glibc: with every module). */
struct counts {
	unsigned long long adds, subs;
	bool valid;
};

static void read_counts(const struct dl_phdr_info *info, size_t size,
			struct counts *n)
{
	if (size >= offsetof(struct dl_phdr_info, dlpi_subs) +
			    sizeof(info->dlpi_subs)) {
		n->adds = info->dlpi_adds;
		n->subs = info->dlpi_subs;
		n->valid = true;
	}
}

static int counts_one(struct dl_phdr_info *info, size_t size, void *arg)
{
	read_counts(info, size, arg);
	return 1; /* the first module tells */
}

/* Caller holds lock: whether the table is that of the modules loaded now.
 * A module unloaded since it was read left its addresses there (a name
 * then resolved into unmapped memory, or into the module loaded at the
 * same place: found by review, 2026-12-07). */
static bool fresh_locked(void)
{
	struct counts n = { 0 };
	(void)dl_iterate_phdr(counts_one, &n);
	return modules != NULL && n.valid && table_counts &&
	       n.adds == table_adds && n.subs == table_subs;
}

struct collect {
	struct module *mods;
	size_t n, cap;
	bool nomem;
	struct counts counts;
};

static int collect_one(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct collect *c = arg;
	read_counts(info, size, &c->counts);
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 32;
		struct module *grown =
			fut__realloc(c->mods, cap * sizeof(*grown));
		if (grown == NULL) {
			c->nomem = true;
			return 1;
		}
		c->mods = grown;
		c->cap = cap;
	}
	struct module *m = &c->mods[c->n];
	memset(m, 0, sizeof(*m));
	m->base = (uintptr_t)info->dlpi_addr;
	read_build_id(info, &m->id);
	for (int i = 0; i < info->dlpi_phnum && m->nsegs < MAX_SEGS; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		m->lo[m->nsegs] = m->base + ph->p_vaddr;
		m->hi[m->nsegs] = m->base + ph->p_vaddr + ph->p_memsz;
		m->nsegs++;
	}
	if (m->id.len != 0 && m->nsegs != 0)
		c->n++;
	return 0;
}

struct unnamed {
	uintptr_t own; /* an address of libfuture's module */
	bool first_seen;
	const char *missing;
};

static int find_unnamed(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct unnamed *u = arg;
	bool first = !u->first_seen; /* the executable comes first */
	u->first_seen = true;
	bool own = false;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD &&
		    u->own - (info->dlpi_addr + ph->p_vaddr) < ph->p_memsz)
			own = true;
	}
	if (!first && !own)
		return 0;
	struct fut__build_id id;
	read_build_id(info, &id);
	if (id.len == 0) {
		u->missing = first ? "the executable" : "libfuture's module";
		return 1;
	}
	return own; /* both seen */
}

const char *fut__fn_unnamed_module(void)
{
	struct unnamed u = { .own = (uintptr_t)fut__fn_unnamed_module };
	(void)dl_iterate_phdr(find_unnamed, &u);
	return u.missing;
}

/* Caller holds lock: (re)reads the modules. */
static int scan_locked(void)
{
	struct collect c = { 0 };
	(void)dl_iterate_phdr(collect_one, &c);
	struct fut__build_id *list = fut__calloc(c.n ? c.n : 1, sizeof(*list));
	if (c.nomem || list == NULL) {
		fut__free(c.mods);
		fut__free(list);
		return FUT_ENOMEM;
	}
	for (size_t i = 0; i < c.n; i++)
		list[i] = c.mods[i].id;
	fut__free(modules);
	fut__free(ids);
	modules = c.mods;
	nmodules = c.n;
	ids = list;
	table_adds = c.counts.adds;
	table_subs = c.counts.subs;
	table_counts = c.counts.valid;
	return FUT_OK;
}

/* Caller holds lock: the table, read again if the modules changed. */
static int current_locked(void)
{
	return fresh_locked() ? FUT_OK : scan_locked();
}

static bool same_id(const struct fut__build_id *a,
		    const struct fut__build_id *b)
{
	return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* Caller holds lock: how many modules have the build-id id. */
static size_t copies_locked(const struct fut__build_id *id)
{
	size_t n = 0;
	for (size_t i = 0; i < nmodules; i++)
		n += same_id(&modules[i].id, id);
	return n;
}

int fut__fn_modules(struct fut__build_id **out, size_t *n)
{
	/* Read again each time: a table read before a dlopen lacks that
	 * module (an MPI server's list then made root refuse its functions,
	 * FUT_ENOTSUP).  A copy: another thread's rescan frees `ids`. */
	*out = NULL;
	*n = 0;
	fut__lock_acquire(&lock);
	int rc = scan_locked();
	struct fut__build_id *copy = NULL;
	if (rc == FUT_OK)
		copy = fut__calloc(nmodules ? nmodules : 1, sizeof(*copy));
	if (copy != NULL) {
		if (nmodules != 0)
			memcpy(copy, ids, nmodules * sizeof(*copy));
		*out = copy;
		*n = nmodules;
	} else {
		rc = FUT_ENOMEM;
	}
	fut__lock_release(&lock);
	return rc;
}

/* Caller holds lock: the module holding address a, or NULL. */
static const struct module *module_at_locked(uintptr_t a)
{
	for (size_t i = 0; i < nmodules; i++)
		for (unsigned s = 0; s < modules[i].nsegs; s++)
			if (a >= modules[i].lo[s] && a < modules[i].hi[s])
				return &modules[i];
	return NULL;
}

int fut__fn_name_of(fut_fn fn, struct fut__fn_name *out)
{
	memset(out, 0, sizeof(*out));
	uintptr_t a = (uintptr_t)fn;
	fut__lock_acquire(&lock);
	int rc = current_locked();
	const struct module *m = rc == FUT_OK ? module_at_locked(a) : NULL;
	if (m != NULL && copies_locked(&m->id) > 1)
		m = NULL; /* which copy it is cannot be named */
	if (m != NULL) {
		out->id = m->id;
		out->off = (uint64_t)(a - m->base);
		rc = FUT_OK;
	} else if (rc == FUT_OK) {
		rc = FUT_EINVAL;
	}
	fut__lock_release(&lock);
	return rc;
}

/* Caller holds lock: the address of the name in this process, if it lies
 * in an executable segment of the one module with that build-id. */
static fut_fn find_locked(const struct fut__fn_name *name)
{
	if (copies_locked(&name->id) != 1)
		return NULL;
	for (size_t i = 0; i < nmodules; i++) {
		const struct module *m = &modules[i];
		if (!same_id(&m->id, &name->id))
			continue;
		if (name->off > UINTPTR_MAX - m->base)
			continue;
		uintptr_t a = m->base + (uintptr_t)name->off;
		for (unsigned s = 0; s < m->nsegs; s++)
			if (a >= m->lo[s] && a < m->hi[s])
				return (fut_fn)a;
	}
	return NULL;
}

fut_fn fut__fn_resolve(const struct fut__fn_name *name)
{
	if (name->id.len == 0 || name->id.len > FUT__BUILD_ID_MAX)
		return NULL;
	fut__lock_acquire(&lock);
	fut_fn fn = current_locked() == FUT_OK ? find_locked(name) : NULL;
	fut__lock_release(&lock);
	return fn;
}

size_t fut__fn_table(struct fut__fn_module *out, size_t max)
{
	fut__lock_acquire(&lock);
	size_t n = 0;
	if (scan_locked() == FUT_OK) {
		n = nmodules;
		for (size_t i = 0; i < n && i < max; i++) {
			const struct module *m = &modules[i];
			memset(&out[i], 0, sizeof(out[i]));
			out[i].id = m->id;
			out[i].base = m->base;
			for (unsigned k = 0; k < m->nsegs; k++) {
				out[i].lo[k] = m->lo[k];
				out[i].hi[k] = m->hi[k];
			}
			out[i].nsegs = m->nsegs;
		}
	}
	fut__lock_release(&lock);
	return n;
}

fut_fn fut__fn_translate(const struct fut__fn_module *theirs, size_t n,
			 uint64_t addr)
{
	for (size_t i = 0; i < n; i++) {
		const struct fut__fn_module *m = &theirs[i];
		for (uint32_t k = 0; k < m->nsegs && k < FUT__FN_MODULE_SEGS;
		     k++) {
			if (addr < m->lo[k] || addr >= m->hi[k])
				continue;
			struct fut__fn_name name = { .id = m->id,
						     .off = addr - m->base };
			return fut__fn_resolve(&name);
		}
	}
	return NULL;
}

static const char hex[] = "0123456789abcdef";

size_t fut__fn_name_format(const struct fut__fn_name *name, char *buf)
{
	char *p = buf;
	*p++ = '@';
	for (unsigned k = 0; k < name->id.len && k < FUT__BUILD_ID_MAX; k++) {
		*p++ = hex[name->id.bytes[k] >> 4];
		*p++ = hex[name->id.bytes[k] & 15];
	}
	*p++ = '+';
	*p++ = '0';
	*p++ = 'x';
	int digits = 1;
	while (digits < 16 && (name->off >> (4 * digits)) != 0)
		digits++;
	for (int d = digits - 1; d >= 0; d--)
		*p++ = hex[(name->off >> (4 * d)) & 15];
	*p = '\0';
	return (size_t)(p - buf);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

bool fut__fn_name_parse(const char *s, size_t len, struct fut__fn_name *out)
{
	memset(out, 0, sizeof(*out));
	if (len == 0 || s[0] != '@')
		return false;
	size_t i = 1;
	while (i + 1 < len && s[i] != '+') {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0 || out->id.len == FUT__BUILD_ID_MAX)
			return false;
		out->id.bytes[out->id.len++] = (unsigned char)(hi * 16 + lo);
		i += 2;
	}
	if (out->id.len == 0 || i + 3 > len || s[i] != '+' || s[i + 1] != '0' ||
	    s[i + 2] != 'x')
		return false;
	i += 3;
	if (i == len || len - i > 16)
		return false;
	uint64_t v = 0;
	for (; i < len; i++) {
		int d = hexval(s[i]);
		if (d < 0)
			return false;
		v = v * 16 + (uint64_t)d;
	}
	out->off = v;
	return true;
}
