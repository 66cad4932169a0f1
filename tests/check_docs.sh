#!/bin/sh
# Usage: tests/check_docs.sh [HEADER [API_MD [MAN_DIR]]]
# Every function include/future.h declares has an entry in docs/api.md (a
# heading that names it, e.g. "### fut_result - ..."), and a man page
# MAN_DIR/<function>.3; the man pages are what docs/mkman.sh makes of
# docs/api.md today (regenerated into a scratch directory and compared, so
# an edit of either side alone fails: run `make man`), and they pass
# mandoc -Tlint.  libfuture-mpi's the same way, beside them: the functions
# of future_mpi.h (next to HEADER) have their entries in mpi.md (next to
# API_MD), from which docs/mkman.sh makes their pages and libfuture-mpi.3.
set -eu

here=$(dirname "$0")
header=${1:-include/future.h}
api=${2:-docs/api.md}
man=${3:-docs/man}

[ -r "$header" ] || { echo "check_docs: cannot read $header" >&2; exit 2; }
[ -r "$api" ] || { echo "check_docs: $api is missing" >&2; exit 1; }

funcs=$(sh "$here/list_functions.sh" "$header")
n=$(echo "$funcs" | wc -l)
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
readme=$(dirname "$api")/../README.md
for fn in $funcs; do
	# A markdown heading naming the function as a whole word.
	if ! grep -Eq "^#+ .*\\b$fn\\b" "$api"; then
		echo "check_docs: $fn has no heading in $api" >&2
		status=1
	fi
done

# ...and every entry names a function the header still declares.
for fn in $(sed -n 's/^### \(fut_[a-z0-9_]*\).*/\1/p' "$api"); do
	if ! echo "$funcs" | grep -qx "$fn"; then
		echo "check_docs: $api has an entry for $fn, which $header does not declare" >&2
		status=1
	fi
done

mpi_header=$(dirname "$header")/future_mpi.h
mpi_api=$(dirname "$api")/mpi.md
mpi_funcs=""
if [ -r "$mpi_header" ]; then
	[ -r "$mpi_api" ] || { echo "check_docs: $mpi_api is missing" >&2; exit 1; }
	mpi_funcs=$(sh "$here/list_functions.sh" "$mpi_header")
	for fn in $mpi_funcs; do
		grep -Eq "^### $fn - " "$mpi_api" || {
			echo "check_docs: $fn has no entry in $mpi_api" >&2
			status=1
		}
	done
	for fn in $(sed -n 's/^### \(fut_[a-z0-9_]*\).*/\1/p' "$mpi_api"); do
		echo "$mpi_funcs" | grep -qx "$fn" || {
			echo "check_docs: $mpi_api has an entry for $fn, which $mpi_header does not declare" >&2
			status=1
		}
	done
	n=$((n + $(echo "$mpi_funcs" | wc -l)))
fi

mkman=$here/../docs/mkman.sh
if [ -r "$mkman" ]; then
	if ! sh "$mkman" "$api" "$header" "$readme" "$tmp/man"; then
		echo "check_docs: docs/mkman.sh failed on $api" >&2
		status=1
	elif [ -n "$mpi_funcs" ] &&
		! sh "$mkman" "$mpi_api" "$mpi_header" "$mpi_api" "$tmp/man" libfuture-mpi; then
		echo "check_docs: docs/mkman.sh failed on $mpi_api" >&2
		status=1
	elif ! diff -r "$tmp/man" "$man" >"$tmp/man.diff" 2>&1; then
		head -n 40 "$tmp/man.diff" >&2
		echo "check_docs: $man differs from what docs/mkman.sh makes of $api${mpi_funcs:+ and $mpi_api}: run make man" >&2
		status=1
	fi
fi

if [ -d "$man" ]; then
	for fn in $funcs $mpi_funcs; do
		if [ ! -f "$man/$fn.3" ]; then
			echo "check_docs: $fn has no man page $man/$fn.3" >&2
			status=1
		fi
	done
	if command -v mandoc >/dev/null 2>&1; then
		for page in "$man"/*.3; do
			[ -f "$page" ] || continue
			if ! mandoc -Tlint -Wwarning "$page" >&2; then
				echo "check_docs: $page fails mandoc -Tlint" >&2
				status=1
			fi
		done
	else
		echo "check_docs: mandoc not installed; man pages not linted" >&2
	fi
	mans=" (and man pages in $man)"
else
	mans=""
fi

# The README's example compiles against the header (test_install.sh also
# builds and runs it against the installed library).
if [ -r "$readme" ]; then
	awk '/^```c$/ { f = 1; next } /^```$/ { if (f) exit } f' "$readme" >"$tmp/example.c"
	if [ ! -s "$tmp/example.c" ]; then
		echo "check_docs: no C example in $readme" >&2
		status=1
	elif ! ${CC:-cc} -std=c11 -Wall -Wextra -Werror -fsyntax-only \
		-I"$(dirname "$header")" "$tmp/example.c"; then
		echo "check_docs: the example in $readme does not compile" >&2
		status=1
	fi
fi

[ $status -eq 0 ] && echo "check_docs: all $n functions documented in $api${mpi_funcs:+ and $mpi_api}$mans"
exit $status
