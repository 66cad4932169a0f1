#!/bin/sh
# Usage: tests/check_exports.sh LIB HEADER [MAP]
# The shared library exports exactly the functions the header declares with
# FUT_API: every declared fut_ function is defined in LIB's dynamic symbol
# table, and LIB exports no other function or object, except, when MAP (a
# version script as written for the link) is given, exactly the fut__
# internals its private node LIBFUTURE_PRIVATE_<version> lists, each bound
# to that node: the internals libfuture-mpi links, and no others.
set -eu

if [ $# -ne 2 ] && [ $# -ne 3 ]; then
	echo "usage: $0 LIB HEADER [MAP]" >&2
	exit 2
fi
lib=$1
header=$2
map=${3:-}
[ -r "$lib" ] || { echo "$0: cannot read $lib" >&2; exit 2; }
[ -r "$header" ] || { echo "$0: cannot read $header" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

sh "$(dirname "$0")/list_functions.sh" "$header" >"$tmp/declared"

# Exported: every defined dynamic symbol (functions, data), minus the
# linker's own and the version nodes' names.
nm -D --defined-only "$lib" | awk '!($2 == "A" && $3 ~ /^LIBFUTURE/) { print $NF }' |
	sed 's/@.*//' |
	grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' |
	sort -u >"$tmp/all"
grep -v '^fut__' "$tmp/all" >"$tmp/exported" || true
grep '^fut__' "$tmp/all" >"$tmp/private" || true

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
# The private node: the list in MAP, each symbol bound to that node.
node=""
if [ -n "$map" ]; then
	[ -r "$map" ] || { echo "$0: cannot read $map" >&2; exit 2; }
	node=$(sed -n 's/^\(LIBFUTURE_PRIVATE_[0-9.]*\) {.*/\1/p' "$map")
	[ -n "$node" ] || { echo "check_exports: no LIBFUTURE_PRIVATE_<version> node in $map" >&2; exit 1; }
	sed -n "/^$node {/,/^}/p" "$map" | sed -n 's/^[[:space:]]*\(fut__[a-z0-9_]*\);.*/\1/p' |
		sort -u >"$tmp/allowed"
else
	: >"$tmp/allowed"
fi
if ! cmp -s "$tmp/allowed" "$tmp/private"; then
	echo "check_exports: $lib's fut__ exports differ from the private node${map:+ of $map} (-listed, +exported):" >&2
	diff "$tmp/allowed" "$tmp/private" | grep '^[<>]' | sed 's/^</  -/; s/^>/  +/' >&2
	status=1
fi
if [ -n "$node" ]; then
	unbound=$(nm -D --defined-only "$lib" | awk '$3 ~ /^fut__/ { print $3 }' |
		grep -v "@@$node\$" || true)
	if [ -n "$unbound" ]; then
		echo "check_exports: fut__ exports not bound to $node:" >&2
		echo "$unbound" | sed 's/^/  /' >&2
		status=1
	fi
fi
# Exported functions must be functions (T), not data.
nonfunc=$(nm -D --defined-only "$lib" | awk '$2 != "T" && $3 ~ /^fut_/ { print $3 }')
if [ -n "$nonfunc" ]; then
	echo "check_exports: exported symbols that are not functions:" >&2
	echo "$nonfunc" | sed 's/^/  /' >&2
	status=1
fi
nprivate=$(wc -l <"$tmp/private")
[ $status -eq 0 ] && echo "check_exports: $ndecl functions declared, the same $ndecl exported${node:+; $nprivate internals in $node}"
exit $status
