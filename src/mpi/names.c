/*
 * names.c: how a task function is named across ranks (docs/mpi.md,
 * "Naming").
 *
 * Owns: the process-wide registry (fut_mpi_register) and the module table
 * (every loaded module's GNU build-id and executable segments, from
 * dl_iterate_phdr).  A function goes on the wire as its registered name,
 * or else as "@<build-id hex>+0x<offset in its module>".  A rank resolves
 * a name through its registry, then through its own module with that
 * build-id, and only to an address inside one of that module's
 * executable segments: nothing is ever called through an address that
 * did not come from its own table.  Raw pointers never cross (ASLR).
 * Threads: any.
 * Locks: `lock` guards the registry and the table; it is never held while
 * anything else is called but dl_iterate_phdr and the allocator.
 */
#include <ctype.h>
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <string.h>

#include "mpi_int.h"

#define NAME_MAX_LEN 64u
#define MAX_SEGS 4

struct module {
	struct fut__mpi_build_id id;
	uintptr_t base;
	uintptr_t lo[MAX_SEGS], hi[MAX_SEGS]; /* executable PT_LOADs */
	unsigned nsegs;
};

struct entry {
	char *name;
	fut_fn fn;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *registry; /* lock */
static size_t nregistry, capregistry;
static struct module *modules; /* lock; rebuilt when a name misses */
static size_t nmodules;
static struct fut__mpi_build_id *ids; /* lock: the build-ids alone */

static bool name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > NAME_MAX_LEN || name[0] == '@')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '_' && c != '.' && c != ':' && c != '-')
			return false;
	}
	return true;
}

int fut_mpi_register(const char *name, fut_fn fn)
{
	if (name == NULL || fn == NULL ||
	    strnlen(name, NAME_MAX_LEN + 1) > NAME_MAX_LEN || !name_ok(name))
		return FUT_EINVAL;
	int rc = FUT_OK;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nregistry; i++) {
		if (strcmp(registry[i].name, name) == 0) {
			rc = registry[i].fn == fn ? FUT_OK : FUT_ESTATE;
			goto out;
		}
	}
	if (nregistry == capregistry) {
		size_t cap = capregistry ? 2 * capregistry : 16;
		struct entry *grown =
			fut__realloc(registry, cap * sizeof(*grown));
		if (grown == NULL) {
			rc = FUT_ENOMEM;
			goto out;
		}
		registry = grown;
		capregistry = cap;
	}
	char *copy = fut__strdup(name);
	if (copy == NULL) {
		rc = FUT_ENOMEM;
		goto out;
	}
	registry[nregistry].name = copy;
	registry[nregistry].fn = fn;
	nregistry++;
out:
	pthread_mutex_unlock(&lock);
	return rc;
}

/* The GNU build-id note of a module, if it has one. */
static void read_build_id(const struct dl_phdr_info *info,
			  struct fut__mpi_build_id *id)
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
			    nh.n_descsz <= FUT__MPI_BUILD_ID_MAX) {
				id->len = (unsigned char)nh.n_descsz;
				memcpy(id->bytes, desc, nh.n_descsz);
				return;
			}
			p = desc + descsz;
		}
	}
}

struct collect {
	struct module *mods;
	size_t n, cap;
	bool nomem;
};

static int collect_one(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct collect *c = arg;
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

/* Caller holds lock: (re)reads the modules. */
static int scan_locked(void)
{
	struct collect c = { 0 };
	(void)dl_iterate_phdr(collect_one, &c);
	struct fut__mpi_build_id *list =
		fut__calloc(c.n ? c.n : 1, sizeof(*list));
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
	return FUT_OK;
}

int fut__mpi_modules(const struct fut__mpi_build_id **out, size_t *n)
{
	pthread_mutex_lock(&lock);
	int rc = modules == NULL ? scan_locked() : FUT_OK;
	*out = ids;
	*n = rc == FUT_OK ? nmodules : 0;
	pthread_mutex_unlock(&lock);
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

int fut__mpi_name_of(fut_fn fn, char *name, struct fut__mpi_build_id *id)
{
	id->len = 0;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nregistry; i++) {
		if (registry[i].fn == fn) {
			snprintf(name, FUT__WIRE_MAX_NAME + 1, "%s",
				 registry[i].name);
			pthread_mutex_unlock(&lock);
			return FUT_OK;
		}
	}
	uintptr_t a = (uintptr_t)fn;
	const struct module *m = modules ? module_at_locked(a) : NULL;
	if (m == NULL && scan_locked() == FUT_OK)
		m = module_at_locked(a);
	int rc = FUT_EINVAL;
	if (m != NULL) {
		*id = m->id;
		char *p = name;
		*p++ = '@';
		for (unsigned k = 0; k < m->id.len; k++)
			p += snprintf(p, 3, "%02x", m->id.bytes[k]);
		snprintf(p, 24, "+0x%jx", (uintmax_t)(a - m->base));
		rc = FUT_OK;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Parses "@<hex>+0x<hex>"; false when it is not that. */
static bool parse_auto(const char *s, size_t len, struct fut__mpi_build_id *id,
		       uintptr_t *off)
{
	size_t i = 1;
	id->len = 0;
	while (i + 1 < len && s[i] != '+') {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0 || id->len == FUT__MPI_BUILD_ID_MAX)
			return false;
		id->bytes[id->len++] = (unsigned char)(hi * 16 + lo);
		i += 2;
	}
	if (id->len == 0 || i + 3 > len || s[i] != '+' || s[i + 1] != '0' ||
	    s[i + 2] != 'x')
		return false;
	i += 3;
	if (i == len || len - i > 16)
		return false;
	uintptr_t v = 0;
	for (; i < len; i++) {
		int d = hexval(s[i]);
		if (d < 0)
			return false;
		v = v * 16 + (uintptr_t)d;
	}
	*off = v;
	return true;
}

/* Caller holds lock: the address of offset off in the module with that
 * build-id, if it lies in one of its executable segments. */
static fut_fn find_locked(const struct fut__mpi_build_id *id, uintptr_t off)
{
	for (size_t i = 0; i < nmodules; i++) {
		const struct module *m = &modules[i];
		if (m->id.len != id->len ||
		    memcmp(m->id.bytes, id->bytes, id->len) != 0)
			continue;
		uintptr_t a = m->base + off;
		for (unsigned s = 0; s < m->nsegs; s++)
			if (a >= m->lo[s] && a < m->hi[s])
				return (fut_fn)a;
	}
	return NULL;
}

fut_fn fut__mpi_resolve(const char *name, size_t len)
{
	fut_fn fn = NULL;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nregistry; i++) {
		if (strlen(registry[i].name) == len &&
		    memcmp(registry[i].name, name, len) == 0) {
			fn = registry[i].fn;
			goto out;
		}
	}
	struct fut__mpi_build_id id;
	uintptr_t off;
	if (len == 0 || name[0] != '@' || !parse_auto(name, len, &id, &off))
		goto out;
	if (modules != NULL)
		fn = find_locked(&id, off);
	if (fn == NULL && scan_locked() == FUT_OK)
		fn = find_locked(&id, off);
out:
	pthread_mutex_unlock(&lock);
	return fn;
}
