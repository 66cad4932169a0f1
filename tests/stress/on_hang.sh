#!/bin/sh
# Usage: tests/stress/on_hang.sh PID   (STRESS_ON_HANG, make check-stress)
#
# What a stuck stress run was doing, for the CI log: the process tree
# under PID (the stress, a process pool's fork server and its workers)
# with each process's state and kernel wait channel, then every thread's
# backtrace in each of them (gdb -batch; skipped where gdb is missing).
# It only reads: the stress aborts after it (the watchdog) or goes on (a
# future found not done).
pid=${1:?usage: on_hang.sh PID}
tree() {
	echo "$1"
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		tree "$c"
	done
}
pids=$(tree "$pid")
echo "== on_hang: processes under $pid"
for p in $pids; do
	ps -o pid=,ppid=,pgid=,stat=,wchan:24=,args= -p "$p" 2>/dev/null
done
if ! command -v gdb >/dev/null 2>&1; then
	echo "== on_hang: no gdb, no backtraces"
	exit 0
fi
for p in $pids; do
	echo "== on_hang: backtraces of $p"
	timeout 60 gdb -p "$p" -batch -nx -ex 'set pagination off' \
		-ex 'thread apply all bt 30' 2>&1 |
		grep -v '^\[New LWP\|^\[Thread debugging\|^Using host\|^$' |
		head -400
done
exit 0
