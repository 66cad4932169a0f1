/*
 * core/names.h: a function named across processes that do not share an
 * address space (ASLR, a fresh exec): its module's GNU build-id and its
 * offset in that module, and back (names.c).  Written once for every
 * executor that needs it (the process pool's exec start method, and
 * libfuture-mpi, whose src/mpi/names.c adds its registry of user names
 * on top).  No registry of user names here: that is
 * libfuture-mpi's.
 */
#ifndef FUT_CORE_NAMES_H
#define FUT_CORE_NAMES_H

#include "core/base.h"

#define FUT__BUILD_ID_MAX 32u
struct fut__build_id {
	unsigned char len; /* 0: none */
	unsigned char bytes[FUT__BUILD_ID_MAX];
};

/* A function as another process can find it. */
struct fut__fn_name {
	struct fut__build_id id;
	uint64_t off; /* from the module's load address */
};

/* The longest text form: '@', two hex digits a build-id byte, "+0x", 16
 * hex digits, and the NUL. */
#define FUT__FN_NAME_TEXT (1u + 2u * FUT__BUILD_ID_MAX + 3u + 16u + 1u)

/*
 * fn's name: the module (with a build-id) whose executable segment holds
 * it.  FUT_OK; FUT_EINVAL when no such module holds fn (a module without
 * a build-id, or not code), or when another module loaded here has the
 * same build-id (a second copy of it: which one cannot be named);
 * FUT_ENOMEM.
 */
FUT__PRIVATE int fut__fn_name_of(fut_fn fn, struct fut__fn_name *out);
/*
 * The function a name means in this process: the module loaded here with
 * that build-id, and only an address inside one of its executable
 * segments; NULL when there is none, or more than one module with it.
 * The table is read again whenever a module was loaded or unloaded since:
 * nothing is ever called through an address that did not come from this
 * process's own module table, as it is now.
 */
FUT__PRIVATE fut_fn fut__fn_resolve(const struct fut__fn_name *name);
/* "@<build-id hex>+0x<offset hex>" into buf (FUT__FN_NAME_TEXT bytes);
 * returns its length. */
FUT__PRIVATE size_t fut__fn_name_format(const struct fut__fn_name *name,
					char *buf);
/* Parses that text form (len bytes, no NUL needed); false when it is not
 * one. */
FUT__PRIVATE bool fut__fn_name_parse(const char *s, size_t len,
				     struct fut__fn_name *out);
/* A module of a process as another process sees it: its build-id, load
 * address and executable segments. */
#define FUT__FN_MODULE_SEGS 4
struct fut__fn_module {
	struct fut__build_id id;
	uint64_t base;
	uint64_t lo[FUT__FN_MODULE_SEGS], hi[FUT__FN_MODULE_SEGS];
	uint32_t nsegs;
};

/* This process's modules (with a build-id and code), at most max of them
 * into out; returns how many there are (more than max: some left out). */
size_t fut__fn_table(struct fut__fn_module *out, size_t max);
/* The function that address addr of the process whose table is
 * theirs[0..n) means here: its module there, by build-id and offset,
 * resolved here (fut__fn_resolve); NULL when it is none. */
fut_fn fut__fn_translate(const struct fut__fn_module *theirs, size_t n,
			 uint64_t addr);

/* NULL, or which of the executable and libfuture's own module has no
 * build-id ("the executable", "libfuture's module"): a FUT_START_EXEC
 * pool could name none of its functions (-Wl,--build-id=none). */
const char *fut__fn_unnamed_module(void);

/* Every loaded module's build-id (of modules with one and with code),
 * read anew (a module loaded since the last read is in it): *out gets a
 * fut__malloc'd array of *n, the caller's to free.  FUT_OK, FUT_ENOMEM
 * (then *out NULL and *n 0). */
FUT__PRIVATE int fut__fn_modules(struct fut__build_id **out, size_t *n);

#endif /* FUT_CORE_NAMES_H */
