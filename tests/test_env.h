/*
 * test_env.h: how the tests run, for those that must adapt to it.
 * UNDER_ASAN and UNDER_TSAN (0 or 1): built with AddressSanitizer or
 * ThreadSanitizer, as gcc (__SANITIZE_*__) or clang (__has_feature)
 * says; under_valgrind(): make check-valgrind set FUT_TEST_UNDER_VALGRIND.
 * What each test skips or shrinks under them is its own to say.
 */
#ifndef FUT_TEST_ENV_H
#define FUT_TEST_ENV_H

#include <stdbool.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

static inline bool under_valgrind(void)
{
	const char *v = getenv("FUT_TEST_UNDER_VALGRIND");
	return v != NULL && *v != '\0' && *v != '0';
}

#endif
