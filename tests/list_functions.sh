#!/bin/sh
# Usage: tests/list_functions.sh HEADER
# Prints, sorted, the name of every function HEADER declares with FUT_API.
# Comments and preprocessor lines are dropped, lines joined, statements split
# at ';'; a declaration is a statement that starts with FUT_API, and its name
# is the fut_ identifier before its first '('.
set -eu
[ $# -eq 1 ] && [ -r "$1" ] || { echo "usage: $0 HEADER" >&2; exit 2; }
sed -e 's|/\*.*\*/||g' "$1" |
	awk '
	incomment { if (/\*\//) { incomment = 0; sub(/.*\*\//, ""); printf "%s ", $0 } next }
	/\/\*/ { incomment = 1; sub(/\/\*.*/, ""); printf "%s ", $0; next }
	/^[[:space:]]*#/ { while (/\\$/ && (getline) > 0) { } next }
	{ printf "%s ", $0 }
	' | tr ';' '\n' |
	sed -n 's/^[[:space:]]*FUT_API[^(]*[^a-zA-Z0-9_]\(fut_[a-zA-Z0-9_]*\)[[:space:]]*(.*/\1/p' |
	sort -u
