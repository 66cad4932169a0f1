#!/bin/sh
# Usage: tests/check_docs.sh [HEADER [API_MD [MAN_DIR]]]
# Every function include/future.h declares has an entry in docs/api.md (a
# heading that names it, e.g. "### fut_result"), and, once docs/man exists,
# a man page docs/man/<function>.3; the man pages must pass mandoc -Tlint.
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
for fn in $funcs; do
	# A markdown heading naming the function as a whole word.
	if ! grep -Eq "^#+ .*\\b$fn\\b" "$api"; then
		echo "check_docs: $fn has no heading in $api" >&2
		status=1
	fi
done

if [ -d "$man" ]; then
	for fn in $funcs; do
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
readme=$(dirname "$api")/../README.md
if [ -r "$readme" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT INT TERM
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

[ $status -eq 0 ] && echo "check_docs: all $n functions documented in $api$mans"
exit $status
