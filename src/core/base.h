/*
 * core/base.h: what every file of the library includes first; private,
 * never installed.
 *
 * Internal names shared across files are fut__<module>_<verb>; everything
 * else is static.  The library is built with -fvisibility=hidden, so none
 * of these leave libfuture.so, except the few marked FUT__PRIVATE.
 *
 * The house (docs/design.md has the picture): src/core/ knows neither
 * pool; src/thread_pool/ and src/process_pool/ include core/ and their own
 * folder, never each other.  Each module has one private header here.
 *
 * Lock order: an executor's own locks -> a future's lock -> an
 * as_completed iterator's lock.  No library lock is ever held while user
 * code (tasks, callbacks, initializers) runs.
 */
#ifndef FUT_CORE_BASE_H
#define FUT_CORE_BASE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "future.h"

#define FUT__UNUSED __attribute__((unused))
/*
 * The few internals that libfuture-mpi (src/mpi/) links from libfuture.so:
 * they leave it in the version node LIBFUTURE_PRIVATE_<version> of
 * libfuture.map, so that an MPI library built against another version of
 * the core fails at load time, never at run time.  They are no API:
 * tests/check_exports.sh pins the list.
 */
#define FUT__PRIVATE __attribute__((visibility("default")))
#define FUT__LIKELY(x) __builtin_expect(!!(x), 1)
#define FUT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define fut__container_of(ptr, type, member)                                   \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif /* FUT_CORE_BASE_H */
