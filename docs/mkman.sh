#!/bin/sh
# Usage: docs/mkman.sh API_MD HEADER README OUTDIR [LIBRARY]
#
# LIBRARY (default libfuture; libfuture-mpi for docs/mpi.md) names the
# overview page, the library to link and the header to include (HEADER's
# own name); its version is always libfuture's, from future.h.
#
# Writes the man pages (mdoc) from their one source, docs/api.md:
# - every entry "### fut_name - summary" becomes OUTDIR/fut_name.3: NAME
#   from the heading, SYNOPSIS from the entry's first line (the prototype
#   in backquotes) plus the typedefs of the header it uses, DESCRIPTION from
#   the rest of the entry, SEE ALSO from the functions it names;
# - the rest becomes OUTDIR/libfuture.3: the introduction, the conventions,
#   each group's introduction with an index of its functions, the codes
#   (RETURN VALUES), and the README's C example (EXAMPLES).
# The header gives the version and the typedefs; the README the example.
#
# It reads the markdown api.md uses: paragraphs, "-" lists two levels deep,
# tables, fenced code, `code`, *emphasis*, **strong**, [links](...) (the
# text is kept).  HTML comments: "man-date: Month D, YYYY" sets the pages'
# date; lines between "man: skip" and "man: end" stay out of the pages.
# The output depends on nothing else (no clock, no locale), so
# tests/check_docs.sh regenerates the pages and diffs them with docs/man.
# POSIX sh and awk (mawk is enough).
set -eu

[ $# -eq 4 ] || [ $# -eq 5 ] ||
	{ echo "usage: $0 API_MD HEADER README OUTDIR [LIBRARY]" >&2; exit 2; }
api=$1 header=$2 readme=$3 out=$4 lib=${5:-libfuture}
for f in "$api" "$header" "$readme"; do
	[ -r "$f" ] || { echo "mkman: cannot read $f" >&2; exit 2; }
done
mkdir -p "$out"

part()
{
	sed -n "s/^#define FUT_VERSION_$1 \\([0-9][0-9]*\\).*/\\1/p" \
		"$(dirname "$header")/future.h"
}
version=$(part MAJOR).$(part MINOR).$(part PATCH)
case $version in
[0-9]*.[0-9]*.[0-9]*) ;;
*) echo "mkman: no FUT_VERSION_* in $header" >&2; exit 1 ;;
esac

LC_ALL=C awk -v version="$version" -v outdir="$out" -v lib="$lib" \
	-v hdr="$(basename "$header")" -v src="$api" '
# ---------------------------------------------------------------- input
# By position, not by name: the same file may come twice (mpi.md is both
# the source and the README of the libfuture-mpi pages).
FNR == 1 { ++input }
input == 1 { L[++n] = $0; next }
input == 2 { header_line($0); next }
/^```c$/ && !exdone { inex = 1; next }
inex && /^```$/ { inex = 0; exdone = 1; next }
inex { EX[++nex] = $0; next }

# The header: single-line function-pointer typedefs, and struct typedefs
# with their comments taken out.
function header_line(s) {
	if (instruct) {
		if (incomm) {
			if (index(s, "*/"))
				incomm = 0
			return
		}
		if (s ~ /^[ \t]*\/\*/) {
			incomm = index(s, "*/") == 0
			return
		}
		TD[instruct] = TD[instruct] "\n" s
		if (s ~ /^}/)
			instruct = ""
		return
	}
	if (match(s, /^typedef struct fut_[a-z_]+ [{]/)) {
		instruct = substr(s, 16, RLENGTH - 17)
		TD[instruct] = s
	} else if (match(s, /\(\*fut_[a-z_]+\)/) && s ~ /^typedef .*;$/) {
		TD[substr(s, RSTART + 2, RLENGTH - 3)] = s
	}
}

# ------------------------------------------------------------ utilities
function trim(s) {
	sub(/^[ \t]+/, "", s)
	sub(/[ \t]+$/, "", s)
	return s
}

# A quoted macro argument.
function q(s) {
	gsub(/\\/, "\\e", s)
	gsub(/"/, "\\(dq", s)
	gsub(/\|/, "\\(ba", s)
	if (isdelim(substr(s, length(s))))
		s = s "\\&"
	return "\"" s "\""
}

# A line of text or of a literal display, made safe for roff.
function esc(s) {
	gsub(/\\/, "\\e", s)
	if (s ~ /^[.\047]/)
		s = "\\&" s
	return s
}

function isdelim(c) {
	return c != "" && index(".,:;)]?!", c) > 0
}

# ------------------------------------------------------- inline markup
# tokenize(s) fills TK[1..NT] (the mdoc macro, or "text") and TV[] (the
# text or argument); FA[] holds an Fn token s arguments, OP[] an opening
# delimiter moved in front of a macro.
function tokenize(s,    p, r, e) {
	NT = 0
	split("", FA)
	split("", OP)
	while (s != "") {
		p = index(s, "`")
		if (p == 0) {
			add_text(s)
			break
		}
		add_text(substr(s, 1, p - 1))
		r = substr(s, p + 1)
		e = index(r, "`")
		if (e == 0) {
			add_text("`" r)
			break
		}
		add_code(substr(r, 1, e - 1))
		s = substr(r, e + 1)
	}
}

function push(kind, value) {
	TK[++NT] = kind
	TV[NT] = value
}

# Text: links keep their text; **strong** and *emphasis* become Sy, Em.
function add_text(s,    t, p, e, m) {
	while (match(s, /\[[^]]*\]\([^)]*\)/)) {
		t = substr(s, RSTART + 1)
		t = substr(t, 1, index(t, "]") - 1)
		s = substr(s, 1, RSTART - 1) t substr(s, RSTART + RLENGTH)
	}
	while ((p = index(s, "*")) > 0) {
		m = substr(s, p, 2) == "**" ? "**" : "*"
		e = index(substr(s, p + length(m)), m)
		if (e == 0)
			break
		push_text(substr(s, 1, p - 1))
		push_marked(m == "**" ? "Sy" : "Em", substr(s, p + length(m), e - 1))
		s = substr(s, p + e - 1 + 2 * length(m))
	}
	push_text(s)
}

# Trailing punctuation of emphasised text goes after the macro.
function push_marked(kind, s,    tail) {
	tail = ""
	while (isdelim(substr(s, length(s)))) {
		tail = substr(s, length(s)) tail
		s = substr(s, 1, length(s) - 1)
	}
	push(kind, s)
	push_text(tail)
}

function push_text(s) {
	if (s == "")
		return
	if (NT > 0 && TK[NT] == "text")
		TV[NT] = TV[NT] s
	else
		push("text", s)
}

# Code: a call is Fn, a constant Dv, a parameter of the function Fa, a
# libfuture function Fn, a libfuture type Vt; anything else Li.
function add_code(v,    name, args, bare) {
	bare = v
	sub(/^\*+/, "", bare)
	if (match(v, /^[A-Za-z_][A-Za-z0-9_]*\(/) && v ~ /\)$/) {
		name = substr(v, 1, RLENGTH - 1)
		args = substr(v, RLENGTH + 1, length(v) - RLENGTH - 1)
		push("Fn", name)
		FA[NT] = args
		if (name in ND)
			REF[name] = 1
	} else if (v ~ /^[A-Z][A-Z0-9_]*$/) {
		push("Dv", v)
	} else if (bare in PARAM) {
		push("Fa", v)
	} else if (v in ND) {
		push("Fn", v)
		REF[v] = 1
	} else if (v ~ /^fut_[a-z_]+$/) {
		push("Vt", v)
	} else {
		push("Li", v)
	}
}

function macro_args(i,    s, n, a, k) {
	s = " " q(TV[i])
	if (TK[i] == "Fn" && FA[i] != "") {
		n = split(FA[i], a, /, */)
		for (k = 1; k <= n; k++)
			s = s " " q(a[k])
	}
	return s
}

# Emits s as text lines and macro lines.  Text glued to a macro is joined
# with \c before it and Ns after it; punctuation right after a macro goes
# on its line as delimiters, an opening parenthesis before it likewise.
function emit_inline(s,    i, t, line, glued) {
	tokenize(s)
	for (i = 1; i <= NT; i++) {
		if (TK[i] == "text") {
			t = TV[i]
			if (i < NT && match(t, /[([]$/)) {
				OP[i + 1] = substr(t, RSTART)
				t = substr(t, 1, RSTART - 1)
			}
			glued = i < NT && t != "" && t !~ /[ \t]$/ && OP[i + 1] == ""
			t = trim(t)
			if (t != "")
				emit_text(t, glued)
			continue
		}
		line = "." TK[i]
		if (OP[i] != "")
			line = line " " OP[i]
		line = line macro_args(i)
		if (i < NT && TK[i + 1] == "text") {
			t = TV[i + 1]
			while (isdelim(substr(t, 1, 1))) {
				line = line " " substr(t, 1, 1)
				t = substr(t, 2)
			}
			if (t != "" && t !~ /^[ \t]/)
				line = line " Ns"
			TV[i + 1] = t
		} else if (i < NT) {
			line = line " Ns"
		}
		print line > OUT
	}
}

# One sentence a line, as mdoc wants, wrapped before 80 columns.
function emit_text(t, glued) {
	while (match(t, /[.?!] +[A-Z]/)) {
		emit_line(substr(t, 1, RSTART))
		t = trim(substr(t, RSTART + 1))
	}
	emit_line(t, glued ? "\\c" : "")
}

function emit_line(t, join,    cut, k) {
	while (length(t) > 72) {
		cut = 0
		for (k = 72; k > 1; k--)
			if (substr(t, k, 1) == " " && !isdelim(substr(t, k + 1, 1))) {
				cut = k
				break
			}
		if (cut == 0)
			break
		print esc(substr(t, 1, cut - 1)) > OUT
		t = substr(t, cut + 1)
	}
	print esc(t) join > OUT
}

# The same markup as the arguments of one macro line (a list tag).
function inline_args(s,    i, t, out, op, prevmac) {
	tokenize(s)
	out = ""
	prevmac = 0
	for (i = 1; i <= NT; i++) {
		if (TK[i] == "text") {
			t = TV[i]
			if (prevmac) {
				while (isdelim(substr(t, 1, 1))) {
					out = out " " substr(t, 1, 1)
					t = substr(t, 2)
				}
				if (t != "" && t !~ /^[ \t]/)
					out = out " Ns"
			}
			op = ""
			if (i < NT && match(t, /[([]$/)) {
				op = substr(t, RSTART)
				t = substr(t, 1, RSTART - 1)
			}
			if (trim(t) != "") {
				out = out (prevmac ? " No " : " ") q(trim(t))
				if (i < NT && op == "" && t !~ /[ \t]$/)
					out = out " Ns"
				prevmac = 0
			}
			if (op != "")
				out = out " " op
			continue
		}
		out = out " " TK[i] macro_args(i)
		if (i < NT && TK[i + 1] != "text")
			out = out " Ns"
		prevmac = 1
	}
	return out
}

# ------------------------------------------------------------- blocks
# render(a, b): lines a..b of api.md as mdoc, to OUT.
function render(a, b,    i, line, ind) {
	para = ""
	lvl = 0
	needpp = 0
	for (i = a; i <= b; i++) {
		line = L[i]
		if (SKIP[i])
			continue
		if (line ~ /^[ \t]*$/) {
			flush()
			close_lists(0)
			continue
		}
		if (line ~ /^```/) {
			flush()
			close_lists(0)
			print ".Bd -literal -offset indent" > OUT
			for (i++; i <= b && L[i] !~ /^```/; i++)
				print esc(L[i]) > OUT
			print ".Ed" > OUT
			needpp = 1
			continue
		}
		if (line ~ /^\|/) {
			flush()
			close_lists(0)
			i = table(i, b)
			needpp = 1
			continue
		}
		if (match(line, /^ *- /)) {
			ind = RLENGTH
			flush()
			open_item(ind > 3 ? 2 : 1)
			para = substr(line, ind + 1)
			continue
		}
		match(line, /^ */)
		ind = RLENGTH
		if (lvl == 2 && ind >= 2 && ind < 4) {
			flush()
			close_lists(1)
		}
		para = para == "" ? trim(line) : para " " trim(line)
	}
	flush()
	close_lists(0)
}

function flush() {
	if (para == "")
		return
	if (lvl == 0 && needpp)
		print ".Pp" > OUT
	emit_inline(para)
	para = ""
	if (lvl == 0)
		needpp = 1
}

function open_item(level) {
	while (lvl > level) {
		print ".El" > OUT
		lvl--
	}
	while (lvl < level) {
		print ".Bl -bullet" > OUT
		lvl++
	}
	print ".It" > OUT
}

function close_lists(level) {
	if (lvl > level && level == 0)
		needpp = 1
	while (lvl > level) {
		print ".El" > OUT
		lvl--
	}
}

# A table as a tag list: the first column is the tag (with the second in
# parentheses when that column holds only numbers), the others its body,
# each named by its header when there are several.
function table(i, b,    r, nr, nc, k, c, cell, numeric, first) {
	nr = 0
	for (; i <= b && L[i] ~ /^\|/; i++) {
		c = L[i]
		sub(/^\|/, "", c)
		sub(/\|[ \t]*$/, "", c)
		if (c ~ /^[ \t:|-]*$/)
			continue
		gsub(/\\\|/, "\001", c)	# an escaped \| is no column break
		nr++
		nc = split(c, cell, /\|/)
		for (k = 1; k <= nc; k++) {
			gsub(/\001/, "|", cell[k])
			T[nr, k] = trim(cell[k])
		}
	}
	numeric = nc > 2
	for (r = 2; r <= nr; r++)
		if (T[r, 2] !~ /^[0-9]+$/)
			numeric = 0
	first = numeric ? 3 : 2
	print ".Bl -tag -width Ds" > OUT
	for (r = 2; r <= nr; r++) {
		print ".It" inline_args(T[r, 1]) (numeric ? " Pq " q(T[r, 2]) : "") > OUT
		for (k = first; k <= nc; k++) {
			if (k > first)
				print ".br" > OUT
			if (nc - first > 0)
				emit_inline(toupper(substr(T[1, k], 1, 1)) substr(T[1, k], 2) ": " T[r, k])
			else
				emit_inline(T[r, k])
		}
	}
	print ".El" > OUT
	return i - 1
}

# --------------------------------------------------------------- pages
function preamble(title, name, nd) {
	print ".\\\" Generated from " src " by docs/mkman.sh: do not edit." > OUT
	print ".Dd " date > OUT
	print ".Dt " toupper(title) " 3" > OUT
	print ".Os libfuture " version > OUT
	print ".Sh NAME" > OUT
	print ".Nm " name > OUT
	print ".Nd " nd > OUT
	print ".Sh LIBRARY" > OUT
	print lib > OUT
	print ".Pq Fl l" substr(lib, 4) > OUT
	print ".Sh SYNOPSIS" > OUT
	if (hdr != "future.h")
		print ".In future.h" > OUT
	print ".In " hdr > OUT
}

# The entry of function k: its first line is the prototype.
function function_page(k,    a, b, s, p, head, type, name, np, P, j, t, refs, nrefs, tmp, x, y, shown) {
	a = FSTART[k] + 1
	b = FEND[k]
	while (a <= b && L[a] ~ /^[ \t]*$/)
		a++
	s = L[a]
	if (s !~ /^`.*\);`$/) {
		printf "mkman: %s: the first line is not a `prototype;`\n", FNAME[k] > "/dev/stderr"
		failed = 1
		return
	}
	s = substr(s, 2, length(s) - 3)
	p = index(s, "(")
	head = substr(s, 1, p - 1)
	match(head, /[A-Za-z_][A-Za-z0-9_]*$/)
	name = substr(head, RSTART)
	type = trim(substr(head, 1, RSTART - 1))
	if (name != FNAME[k]) {
		printf "mkman: the entry %s declares %s\n", FNAME[k], name > "/dev/stderr"
		failed = 1
		return
	}
	np = split(substr(s, p + 1, length(s) - p - 1), P, /, */)
	split("", PARAM)
	split("", REF)
	for (j = 1; j <= np; j++)
		if (match(P[j], /[A-Za-z_][A-Za-z0-9_]*$/) && P[j] != "void")
			PARAM[substr(P[j], RSTART)] = 1

	OUT = outdir "/" name ".3"
	preamble(name, name, FND[k])
	split("", shown)
	for (j = 1; j <= np; j++) {
		if (!match(P[j], /fut_[a-z_]+/))
			continue
		t = substr(P[j], RSTART, RLENGTH)
		if ((t in TD) && !(t in shown)) {
			shown[t] = 1
			print ".Bd -literal" > OUT
			x = TD[t]
			while ((y = index(x, "\n")) > 0) {
				print esc(substr(x, 1, y - 1)) > OUT
				x = substr(x, y + 1)
			}
			print esc(x) > OUT
			print ".Ed" > OUT
			print ".Pp" > OUT
		}
	}
	print ".Ft " (type ~ / / ? q(type) : type) > OUT
	print ".Fo " name > OUT
	for (j = 1; j <= np; j++)
		print ".Fa " q(P[j]) > OUT
	print ".Fc" > OUT
	print ".Sh DESCRIPTION" > OUT
	render(a + 1, b)
	print ".Sh SEE ALSO" > OUT
	# The functions it names, its neighbours in its group, the overview.
	if (k > 1 && FGROUP[k - 1] == FGROUP[k])
		REF[FNAME[k - 1]] = 1
	if (k < nfn && FGROUP[k + 1] == FGROUP[k])
		REF[FNAME[k + 1]] = 1
	nrefs = 0
	for (t in REF)
		if (t != name)
			refs[++nrefs] = t
	refs[++nrefs] = lib
	for (j = 2; j <= nrefs; j++)
		for (p = j; p > 1 && refs[p - 1] > refs[p]; p--) {
			tmp = refs[p]
			refs[p] = refs[p - 1]
			refs[p - 1] = tmp
		}
	for (j = 1; j <= nrefs; j++)
		print ".Xr " refs[j] " 3" (j < nrefs ? " ," : "") > OUT
	close(OUT)
}

# libfuture.3: everything around the entries.
function overview_page(    g, k, codes) {
	OUT = outdir "/" lib ".3"
	split("", PARAM)
	preamble(lib, lib, lib == "libfuture" ? "thread and process pools that return futures" : "an executor whose tasks run on the ranks of an MPI job")
	print ".Pp" > OUT
	print ".Nm cc" > OUT
	print ".Ar file.c" > OUT
	print ".Li " q("$(pkg-config --cflags --libs " lib ")") > OUT
	print ".Sh DESCRIPTION" > OUT
	render(TITLE + 1, GSTART[1] - 1)
	for (g = 1; g <= ng; g++) {
		if (GTITLE[g] == "Codes") {
			codes = g
			continue
		}
		print ".Ss " GTITLE[g] > OUT
		render(GSTART[g] + 1, GINTRO[g])
		if (GFIRST[g] == 0)
			continue
		print ".Bl -tag -width Ds" > OUT
		for (k = GFIRST[g]; k <= nfn && FGROUP[k] == g; k++) {
			print ".It Xr " FNAME[k] " 3" > OUT
			print esc(FND[k]) > OUT
		}
		print ".El" > OUT
	}
	if (codes) {
		print ".Sh RETURN VALUES" > OUT
		render(GSTART[codes] + 1, GINTRO[codes])
	}
	if (nex) {
		print ".Sh EXAMPLES" > OUT
		print (lib == "libfuture" ? "The example of the README" : "An example") ", built with" > OUT
		print ".Ql " (lib == "libfuture" ? "cc" : "mpicc") " -o example example.c $(pkg-config --cflags --libs " lib ") :" > OUT
		print ".Bd -literal -offset indent" > OUT
		for (k = 1; k <= nex; k++)
			print esc(EX[k]) > OUT
		print ".Ed" > OUT
	}
	print ".Sh SEE ALSO" > OUT
	print ".Xr pkg-config 1" > OUT
	close(OUT)
}

# ---------------------------------------------------------------- main
END {
	date = ""
	skipping = 0
	for (i = 1; i <= n; i++) {
		if (L[i] ~ /^<!-- man-date: .* -->$/) {
			date = L[i]
			sub(/^<!-- man-date: /, "", date)
			sub(/ -->$/, "", date)
		}
		if (L[i] ~ /^<!-- man: skip -->$/)
			skipping = 1
		if (L[i] ~ /^<!--/ || skipping)
			SKIP[i] = 1
		if (L[i] ~ /^<!-- man: end -->$/)
			skipping = 0
		if (L[i] ~ /^# / && !TITLE)
			TITLE = i
		if (L[i] ~ /^## /) {
			GTITLE[++ng] = substr(L[i], 4)
			GSTART[ng] = GINTRO[ng] = i
		}
		if (L[i] ~ /^### fut_[a-z_]+ - /) {
			FNAME[++nfn] = substr(L[i], 5, index(substr(L[i], 5), " ") - 1)
			FND[nfn] = substr(L[i], 5 + length(FNAME[nfn]) + 3)
			ND[FNAME[nfn]] = FND[nfn]
			FSTART[nfn] = i
			FGROUP[nfn] = ng
			if (!GFIRST[ng])
				GFIRST[ng] = nfn
		} else if (L[i] ~ /^###/) {
			printf "mkman: %d: a ### heading not \"fut_name - summary\"\n", i > "/dev/stderr"
			failed = 1
		}
	}
	if (date == "" || !TITLE || ng == 0) {
		print "mkman: api.md needs a man-date comment, a # title and ## groups" > "/dev/stderr"
		exit 1
	}
	# Where each entry ends, and where each group introduction does.
	for (k = 1; k <= nfn; k++) {
		for (i = FSTART[k] + 1; i <= n && L[i] !~ /^#/; i++)
			;
		FEND[k] = i - 1
	}
	for (g = 1; g <= ng; g++) {
		for (i = GSTART[g] + 1; i <= n && L[i] !~ /^#/; i++)
			;
		GINTRO[g] = i - 1
	}
	for (k = 1; k <= nfn; k++)
		function_page(k)
	overview_page()
	exit failed
}
' "$api" "$header" "$readme"
