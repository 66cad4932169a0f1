#!/bin/sh
# bench/run.sh BUILD: runs every benchmark program in BUILD/bench/ (built by
# `make bench`; W1-W6 and W5mix, and W7-W9, the blocking tasks of
# bench_io), the floors among them, and the peers of PERF.md (GLib
# GThreadPool, oneTBB task_group, Python concurrent.futures; peers/io_*
# for W7-W9), each BENCH_RUNS times (default 5); prints the median of
# each (workload, impl, figure) and then the ratios the issues set as
# targets.  bench_io, io_glib and io_python.py each run W7b first in a
# fresh process of its own (the program run again with the argument W7b),
# so that no implementation's W7b follows its W7 pool in one process.
#   BENCH_RUNS=n   runs per program
#   BENCH_QUICK=1  a smoke run: one run, counts scaled down 10x
#   BENCH_ONLY="bench_io io_glib io_python.py"  only the programs so named
#                  (ours and the peers, by file name): W7-W9 side by side
# The peers are built here into BUILD/bench-peers/; missing packages
# (libglib2.0-dev, libtbb-dev, g++) are installed with apt-get when
# possible, and a peer that cannot be built or run is skipped, saying so.
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
quick=${BENCH_QUICK:-0}
if [ "$quick" != 0 ] && [ -n "$quick" ]; then
	runs=${BENCH_RUNS:-1}
else
	runs=${BENCH_RUNS:-5}
fi
export BENCH_QUICK="$quick"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
peers="$build/bench-peers"
mkdir -p "$peers"

say() { echo "bench: $*" >&2; }

# --- peers ------------------------------------------------------------
missing=""
for pkg in libglib2.0-dev libtbb-dev g++; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
	say "installing:$missing"
	$sudo apt-get install -y -qq $missing >/dev/null 2>&1 ||
		{ $sudo apt-get update -qq >/dev/null 2>&1 &&
		  $sudo apt-get install -y -qq $missing >/dev/null 2>&1; } ||
		say "could not install$missing"
fi

progs=""
for p in "$build"/bench/*; do
	case ${p##*/} in
	bench_mpi | mpi_floors) continue ;; # MPI jobs: make bench-mpi
	esac
	[ -f "$p" ] && [ -x "$p" ] && progs="$progs $p"
done
# build_glib NAME: builds peers/NAME.c against GLib into $peers/NAME.
build_glib() {
	if pkg-config --exists glib-2.0 2>/dev/null &&
		${CC:-cc} -O2 -o "$peers/$1" "$here/peers/$1.c" \
			$(pkg-config --cflags --libs glib-2.0) 2>"$work/$1.err"; then
		progs="$progs $peers/$1"
	else
		say "skipping the GLib peer $1 (libglib2.0-dev missing or build failed)"
	fi
}
build_glib glib
build_glib io_glib
if command -v "${CXX:-g++}" >/dev/null 2>&1 &&
	${CXX:-g++} -O2 -std=c++17 -o "$peers/tbb" "$here/peers/tbb.cpp" \
		-ltbb -pthread 2>"$work/tbb.err"; then
	progs="$progs $peers/tbb"
else
	say "skipping the oneTBB peer (libtbb-dev or g++ missing, or build failed)"
fi
if command -v python3 >/dev/null 2>&1; then
	progs="$progs python3:$here/peers/python_futures.py"
	progs="$progs python3:$here/peers/io_python.py"
else
	say "skipping the Python peer (no python3)"
fi

# BENCH_ONLY keeps the programs whose file name it lists.
if [ -n "${BENCH_ONLY:-}" ]; then
	kept=""
	for p in $progs; do
		case " $BENCH_ONLY " in
		*" $(basename "${p#python3:}") "*) kept="$kept $p" ;;
		esac
	done
	progs=$kept
	[ -n "$progs" ] || { say "BENCH_ONLY=$BENCH_ONLY names no program"; exit 1; }
fi

# --- runs -------------------------------------------------------------
i=1
while [ "$i" -le "$runs" ]; do
	for p in $progs; do
		case "$p" in
		python3:*) cmd="python3 ${p#python3:}" ;;
		*) cmd="$p" ;;
		esac
		say "run $i/$runs: $cmd"
		timeout 900 $cmd >"$work/out" 2>"$work/err" ||
			{
				say "FAILED: $cmd"
				sed 's/^/  /' "$work/err" >&2
				echo "$cmd" >>"$work/failed"
			}
		grep '^RESULT ' "$work/out" >>"$work/results"
	done
	i=$((i + 1))
done
[ -s "$work/results" ] || { say "no results"; exit 1; }

# --- medians ----------------------------------------------------------
# "workload impl n figure value" per line, then the median per key.
sed -n 's/^RESULT workload=\([^ ]*\) impl=\([^ ]*\) n=\([^ ]*\) \([^= ]*\)=\([^ ]*\).*/\1 \2 \3 \4 \5/p' \
	"$work/results" | sort -k1,1 -k2,2 -k4,4 -k5,5g >"$work/sorted"
awk '
function flush() {
	if (cnt == 0) return
	if (cnt % 2) m = v[(cnt + 1) / 2]
	else m = (v[cnt / 2] + v[cnt / 2 + 1]) / 2
	printf "%s %s %s %s %s %d\n", kw, ki, kn, kf, m, cnt
}
{
	if ($1 != kw || $2 != ki || $4 != kf) { flush(); cnt = 0 }
	kw = $1; ki = $2; kn = $3; kf = $4; v[++cnt] = $5
}
END { flush() }' "$work/sorted" >"$work/medians"

echo
echo "Medians of $runs run(s)$( [ "$quick" != 0 ] && echo ', QUICK (counts / 10)'):"
echo
printf '| workload | impl | n | figure | median | runs |\n|---|---|---|---|---|---|\n'
awk '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' \
	"$work/medians"

# --- targets ----------------------------------------------------------
echo
echo "Targets (ratios within this run):"
echo
awk '
{ val[$1 "/" $2] = $5 }
function has(k) { return (k in val) }
# r against tv; ok is ">=", "<=" or "report" (a figure with no target).
function verdict(r, ok) {
	if (ok == "report") return ""
	return (ok == ">=" ? (r >= tv) : (r <= tv)) ? "met" : "NOT met"
}
function row(what, num, den, target, ok,    r, m) {
	m = missing; missing = "" # set by best(), for this row only
	if (!has(num) || !has(den)) {
		printf "| %s | n/a (missing %s) | %s | |\n", what, \
			has(num) ? (den != "" ? den : "every peer:" m) : num, \
			target
		return
	}
	if (val[den] == 0) {
		printf "| %s | n/a (%s is 0) | %s | |\n", what, den, target
		return
	}
	r = val[num] / val[den]
	if (m != "" && ok != "report") {
		printf "| %s | %.3f | %s | no verdict: missing%s |\n", what, r, \
			target, m
		return
	}
	printf "| %s | %.3f | %s | %s |\n", what, r, target, verdict(r, ok)
}
# An absolute target: val[key] against tv.
function bound(what, key, target, ok,    r) {
	if (!has(key)) {
		printf "| %s | n/a (missing %s) | %s | |\n", what, key, target
		return
	}
	r = val[key]
	printf "| %s | %.3f | %s | %s |\n", what, r, target, verdict(r, ok)
}
# The peer of list with the highest figure; one missing is named in
# `missing`, and row() then gives no verdict (the target is against the
# best of them all).
function best(w, list,    n, i, b, k) {
	n = split(list, names, " "); b = ""; missing = ""
	for (i = 1; i <= n; i++) {
		k = w "/" names[i]
		if (!has(k)) missing = missing " " names[i]
		else if (b == "" || val[k] > val[b]) b = k
	}
	return b
}
END {
	print "| ratio | value | target | |"
	print "|---|---|---|---|"
	b = best("W1", "glib-gthreadpool onetbb-task_group")
	tv = 1.5; row("W1 ours / max(GLib, oneTBB) rate", "W1/libfuture-thread", b, ">= 1.5", ">=")
	row("W1-warm (a second W1 in the same process) / the same peer", "W1-warm/libfuture-thread", b, "(report)", "report")
	tv = 0.5; row("W2 ours / floor-futex time", "W2/libfuture-thread", "W2/floor-futex", "<= 0.5", "<=")
	row("W2 ours / floor-spin time", "W2/libfuture-thread", "W2/floor-spin", "(report)", "report")
	b = best("W3", "glib-gthreadpool onetbb-task_group python-tpe python-ppe")
	tv = 0.97; row("W3 ours / best peer speedup", "W3/libfuture-thread", b, ">= 0.97", ">=")
	tv = 1.5; row("W4 ours / floor-pipe-pingpong time", "W4/libfuture-process", "W4/floor-pipe-pingpong", "<= 1.5", "<=")
	tv = 1.5; row("W5 ours / python-ppe-chunk1000 rate", "W5/libfuture-process", "W5/python-ppe-chunk1000", ">= 1.5", ">=")
	tv = 0.7; row("W6 ours / floor-pipe-64MiB MBps", "W6/libfuture-process", "W6/floor-pipe-64MiB", ">= 0.7", ">=")
	tv = 0.95; bound("W7 ours efficiency", "W7/libfuture-thread", ">= 0.95", ">=")
	b = best("W7", "glib-gthreadpool python-tpe")
	tv = 1; row("W7 ours / best peer efficiency", "W7/libfuture-thread", b, ">= 1", ">=")
	b = best("W7b", "glib-gthreadpool python-tpe")
	tv = 1.3; row("W7b ours / best peer efficiency", "W7b/libfuture-thread", b, ">= 1.3", ">=")
	b = best("W7b", "floor-threads-one-starter floor-threads-tree")
	row("W7b ours / raw pthread efficiency, the better start (floors.c)", "W7b/libfuture-thread", b, "(report)", "report")
	# The most a pool can reach that starts every thread on a fresh
	# stack: 20 ms after the last of 256 thread starts, each costing the
	# CPU of a raw thread start (the cheaper of the two in W7b-start) and
	# every cpu starting threads all along.  Ours starts W7b in a fresh
	# process too since 2026-12-07; before, it ran after W7 in the same
	# process and reused the stacks left by the threads of W7, and was no
	# bound on it (docs/perf-log.md, 2026-12-06).
	c = "W7b-start/floor-threads-one-starter"; k = "W7b-start/floor-threads-tree"
	if (!has(c) || (has(k) && val[k] < val[c])) c = k
	if (has(c) && ncpus > 0) {
		ceil = 20 / (20 + 256 * val[c] / 1000 / ncpus)
		printf "| W7b ceiling on %d cpus from the CPU of a raw thread start, %.1f us | %.3f | (report) | |\n", ncpus, val[c], ceil
		if (has("W7b/libfuture-thread"))
			printf "| W7b ours / that ceiling | %.3f | (report) | |\n", val["W7b/libfuture-thread"] / ceil
		p = best("W7b", "glib-gthreadpool python-tpe")
		if (p != "")
			printf "| W7b that ceiling / best peer efficiency | %.3f | (report: above 1.3?) | |\n", ceil / val[p]
	}
	# floors.c: 256 bare clone(2) threads on stacks made present ahead,
	# no glibc set-up: the most any pool that starts its threads can
	# reach.  Below 1.3 of the best peer, the W7b target is out of reach.
	p = best("W7b", "glib-gthreadpool python-tpe")
	if (has("W7b/floor-clone-prepared") && p != "")
		printf "| W7b bare clone(2) floor / best peer efficiency | %.3f | (report: above 1.3?) | |\n", val["W7b/floor-clone-prepared"] / val[p]
	row("W7b ours / bare clone(2) floor efficiency", "W7b/libfuture-thread", "W7b/floor-clone-prepared", "(report)", "report")
	tv = 0.5; row("W8 ours / GLib time", "W8/libfuture-thread", "W8/glib-gthreadpool", "<= 0.5", "<=")
	tv = 2; bound("W9 ours worst ms to start all 16", "W9/libfuture-thread", "<= 2", "<=")
	tv = 1; row("W9 ours / GLib worst time", "W9/libfuture-thread", "W9/glib-gthreadpool", "<= 1", "<=")
	tv = 1.5; row("W5 in one call, distinct items / python-ppe-chunk1000 on distinct items", "W5-one-call/libfuture-process", "W5-distinct/python-ppe-chunk1000", ">= 1.5", ">=")
	tv = 1.1; row("W5mix seconds ours / python-ppe-submit", "W5mix/libfuture-process", "W5mix/python-ppe-submit", "<= 1.1", "<=")
	row("W5mix seconds ours / python-ppe-map32", "W5mix/libfuture-process", "W5mix/python-ppe-map32", "(report)", "report")
	tv = 0.7; row("W6e through the result buffer / floor-fill-once MBps", "W6e/libfuture-process-buffer", "W6e/floor-fill-once", ">= 0.7", ">=")
	tv = 5; row("W6e through the result buffer / python-ppe MBps", "W6e/libfuture-process-buffer", "W6e/python-ppe", ">= 5", ">=")
	row("W6e through fut_task_return_bytes / floor-fill-once MBps", "W6e/libfuture-process-return-bytes", "W6e/floor-fill-once", "(report)", "report")
	k = "MEM/libfuture-thread"
	if (has(k))
		printf "| memory, bytes per pending task + future | %.1f | < 200 | %s |\n", \
			val[k], val[k] < 200 ? "met" : "NOT met"
	else
		print "| memory, bytes per pending task + future | n/a | < 200 | |"
}' ncpus="$(nproc 2>/dev/null || echo 0)" "$work/medians"

# A program that failed its own check (a wrong sum) or crashed: its
# figures are not to be quoted, and make bench fails.
if [ -s "$work/failed" ]; then
	echo
	echo "FAILED: $(wc -l <"$work/failed") run(s) failed (see above); the"
	echo "figures above do not count."
	exit 1
fi
