#!/bin/sh
# Usage: tests/check_exports.sh LIB HEADER
# The shared library exports exactly the functions the header declares with
# FUT_API: every declared fut_ function is defined in LIB's dynamic symbol
# table, and LIB exports no other function or object.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 LIB HEADER" >&2
	exit 2
fi
lib=$1
header=$2
[ -r "$lib" ] || { echo "$0: cannot read $lib" >&2; exit 2; }
[ -r "$header" ] || { echo "$0: cannot read $header" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

sh "$(dirname "$0")/list_functions.sh" "$header" >"$tmp/declared"

# Exported: every defined dynamic symbol (functions, data), minus the
# linker's own.
nm -D --defined-only "$lib" | awk '{ print $NF }' | sed 's/@.*//' |
	grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' |
	sort -u >"$tmp/exported"

ndecl=$(wc -l <"$tmp/declared")
if [ "$ndecl" -eq 0 ]; then
	echo "check_exports: no FUT_API function found in $header" >&2
	exit 1
fi

status=0
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
if [ -n "$missing" ]; then
	echo "check_exports: declared in $header but not exported by $lib:" >&2
	echo "$missing" | sed 's/^/  /' >&2
	status=1
fi
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
if [ -n "$extra" ]; then
	echo "check_exports: exported by $lib but not declared in $header:" >&2
	echo "$extra" | sed 's/^/  /' >&2
	status=1
fi
# Exported functions must be functions (T), not data.
nonfunc=$(nm -D --defined-only "$lib" | awk '$2 != "T" && $3 ~ /^fut_/ { print $3 }')
if [ -n "$nonfunc" ]; then
	echo "check_exports: exported symbols that are not functions:" >&2
	echo "$nonfunc" | sed 's/^/  /' >&2
	status=1
fi
[ $status -eq 0 ] && echo "check_exports: $ndecl functions declared, the same $ndecl exported"
exit $status
