/*
 * names.c: how a task function is named across ranks (docs/mpi.md,
 * "Naming").
 *
 * Owns: the process-wide registry (fut_mpi_register).  A function goes on
 * the wire as its registered name, or else as "@<build-id hex>+0x<offset
 * in its module>", the core's name of it (src/core/names.c, which the
 * process pool's exec start method uses too): a rank resolves a name
 * through its registry, then through its own module with that build-id,
 * and only to an address inside one of that module's executable
 * segments.  Raw pointers never cross (ASLR).
 * Threads: any.
 * Locks: `lock` guards the registry; the core's table has its own.  Never
 * held while anything else is called but the allocator.
 */
#include <stdio.h>
#include <string.h>

#include "mpi_int.h"

#define NAME_MAX_LEN 64u

struct entry {
	char *name;
	fut_fn fn;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *registry; /* lock */
static size_t nregistry, capregistry;

static bool name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > NAME_MAX_LEN || name[0] == '@')
		return false;
	for (size_t i = 0; i < n; i++) {
		/* ASCII itself, not isalnum(): in a Latin-1 locale that
		 * takes bytes the documented [A-Za-z0-9_.:-] does not. */
		unsigned char c = (unsigned char)name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');
		if (!alnum && c != '_' && c != '.' && c != ':' && c != '-')
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

/* This process's modules' build-ids, read now. */
int fut__mpi_modules(struct fut__build_id **out, size_t *n)
{
	return fut__fn_modules(out, n);
}

int fut__mpi_name_of(fut_fn fn, char *name, struct fut__build_id *id)
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
	pthread_mutex_unlock(&lock);
	struct fut__fn_name n;
	int rc = fut__fn_name_of(fn, &n);
	if (rc != FUT_OK)
		return rc;
	_Static_assert(FUT__FN_NAME_TEXT <= FUT__WIRE_MAX_NAME + 1,
		       "an automatic name fits the wire's");
	(void)fut__fn_name_format(&n, name);
	*id = n.id;
	return FUT_OK;
}

fut_fn fut__mpi_resolve(const char *name, size_t len)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nregistry; i++) {
		if (strlen(registry[i].name) == len &&
		    memcmp(registry[i].name, name, len) == 0) {
			fut_fn fn = registry[i].fn;
			pthread_mutex_unlock(&lock);
			return fn;
		}
	}
	pthread_mutex_unlock(&lock);
	struct fut__fn_name n;
	if (len == 0 || name[0] != '@' || !fut__fn_name_parse(name, len, &n))
		return NULL;
	return fut__fn_resolve(&n);
}
