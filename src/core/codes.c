/*
 * codes.c: the texts of the result codes, and the version.
 *
 * Owns: fut_strerror() and fut_version(), both made from the header's own
 * lists (FUT_CODE_LIST, FUT_VERSION_*), so a code cannot lack its text.
 * Threads: any.  Locks: none.
 */
#include "core/base.h"

#define FUT__STR_(x) #x
#define FUT__STR(x) FUT__STR_(x)

const char *fut_strerror(int code)
{
	switch (code) {
#define FUT_CODE_CASE_(name, value, text)                                      \
	case name:                                                             \
		return text;
		FUT_CODE_LIST(FUT_CODE_CASE_)
#undef FUT_CODE_CASE_
	default:
		return "unknown code";
	}
}

const char *fut_version(void)
{
	return FUT__STR(FUT_VERSION_MAJOR) "." FUT__STR(
		FUT_VERSION_MINOR) "." FUT__STR(FUT_VERSION_PATCH);
}
