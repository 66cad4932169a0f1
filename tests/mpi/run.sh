#!/bin/sh
# Usage: tests/mpi/run.sh BUILD
# Runs the MPI tests of BUILD/tests/mpi under `timeout -k 10 60 mpirun` (a
# launcher stuck in its abort is killed 10 s after the TERM): Open
# MPI on loopback only (pml ob1, btl self,vader,tcp on lo), root allowed,
# oversubscribed (../shared/design-mpi.md section 4).  Sanitizer builds run
# with detect_leaks=0: Open MPI's own allocations make LSan useless; TSan
# with tsan.supp.
set -eu
build=${1:-build}
MPIRUN=${MPIRUN:-mpirun}
. "$(cd "$(dirname "$0")/../.." && pwd)/tests/mpi/env.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
# What TSan sees inside Open MPI, which it cannot follow (tsan.supp).
here=$(cd "$(dirname "$0")" && pwd)
export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS }suppressions=$here/tsan.supp"
# Absolute: the check for processes left behind (pgrep -f, below) must not
# match another build's tests running on the same machine.
t=$(cd "$build/tests/mpi" && pwd)
wrap=${TEST_WRAPPER:-}

run()
{
	echo "== mpirun $*"
	# shellcheck disable=SC2086
	timeout -k 10 60 $wrap "$MPIRUN" "$@"
}

start=$(date +%s)
run -np 3 "$t/test_mpi"
timeout -k 10 60 $wrap "$t/test_mpi_launch" uninit
run -np 1 "$t/test_mpi_launch" single
run -np 1 "$t/test_mpi_launch" np1
run -np 3 "$t/test_mpi_launch" nofree
run -np 3 "$t/test_mpi_launch" giveup
run -np 3 "$t/test_mpi_launch" stopnomem
run -np 3 "$t/test_mpi_launch" cbfree
run -np 3 "$t/test_mpi_launch" intnomem
run -np 3 "$t/test_mpi_launch" bignomem
run -np 3 "$t/test_mpi_launch" drainnomem
run -np 3 "$t/test_mpi_launch" cbfinal
run -np 3 "$t/test_mpi_launch" intonce
run -np 3 "$t/test_mpi_launch" dlopen "$t/libmpi_plugin.so"
run -np 3 "$t/test_mpi_launch" bigslow
run -np 3 "$t/test_mpi_edge" sweep 0
run -np 3 "$t/test_mpi_edge" sweep 1
run -np 3 "$t/test_mpi_edge" threads
run -np 3 "$t/test_mpi_edge" isolate
run -np 3 "$t/test_mpi_edge" cancel
run -np 3 "$t/test_mpi_edge" taskrank
run -np 3 "$t/test_mpi_edge" forkint
run -np 3 "$t/test_mpi_edge" lostresult
run -np 3 "$t/test_mpi_edge" sendnomem
run -np 3 "$t/test_mpi_edge" nowaitfin
run -np 3 "$t/test_mpi_edge" nowaitbusy
run -np 3 "$t/test_mpi_edge" modnomem
run -np 3 "$t/test_mpi_edge" heldstop
run -np 3 "$t/test_mpi_edge" cancelfin
run -np 3 "$t/test_mpi_edge" sigmask
run -np 3 "$t/test_mpi_edge" drainwait
for m in brokenint nowaitrace cbfreefin heldnew cbfreebarrier brokencbfin \
	brokenbarrier brokenbusyfin holdsendfail recvfail cancelnowait \
	blamedbig gaveupwait gaveupfree testfail srvtestfail heldstopjunk; do
	run -np 3 "$t/test_mpi_stop" $m
done
# Not run here: test_mpi_stop lostidle, whose lost rank never returns, so
# it ends the job with MPI_Abort; Open MPI's launcher then exited 0, 124
# (its abort took the whole timeout) or 137 (it killed the timeout around
# it) in 5 runs, and once lost the verdict's line.  Run it by hand:
# `mpirun -np 3 build/tests/mpi/test_mpi_stop lostidle` prints
# "lostidle: ok".
for m in shortcrash brokennowaitfin brokennowaitfin2 freethenbreak \
	nowaitbroken isojunk orphanbye; do
	run -np 3 "$t/test_mpi_break" $m
done
run -np 2 "$t/test_mpi_break" heldjunk
for m in namenomem namestop recvnomem srvnomem nostandby gathernomem \
	emitnomem holdnomem; do
	run -np 3 "$t/test_mpi_nomem" $m
done
run -np 1 "$t/test_mpi_launch" mpmd : -np 2 "$t/test_mpi_peer"
# FUT_MPI_SPAWN: a singleton (no mpirun) spawns copies of itself.
echo "== $t/test_mpi_spawn (a singleton)"
timeout -k 10 60 $wrap "$t/test_mpi_spawn"
# The example, linked against the shared libraries.  Passing the
# environment on: Open MPI's -x, MPICH's (Hydra's) -envlist.
pass_env="-x LD_LIBRARY_PATH"
if "$MPIRUN" --version 2>&1 | grep -qi hydra; then
	pass_env="-envlist LD_LIBRARY_PATH"
fi
# shellcheck disable=SC2086
LD_LIBRARY_PATH="$build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
	run $pass_env -np 3 "$build/examples/mpi_primes"

# A task that kills its server: the job must abort, within 10 s, and
# leave no process behind (the documented outcome, docs/mpi.md).
echo "== mpirun -np 3 $t/test_mpi_launch die (must abort)"
t0=$(date +%s)
if timeout -k 10 30 "$MPIRUN" -np 3 "$t/test_mpi_launch" die >"$build/tests/mpi/die.log" 2>&1; then
	cat "$build/tests/mpi/die.log"
	echo "run.sh: the job whose rank died exited 0" >&2
	exit 1
fi
took=$(($(date +%s) - t0))
if [ "$took" -gt 10 ]; then
	echo "run.sh: the aborted job took $took s (over 10)" >&2
	exit 1
fi
sleep 1
if pgrep -f "$t/test_mpi_launch die" >/dev/null; then
	echo "run.sh: processes of the aborted job remain:" >&2
	pgrep -af "$t/test_mpi_launch die" >&2
	exit 1
fi
echo "the job aborted in $took s, nothing left"
echo "mpi tests passed ($build, $(($(date +%s) - start)) s)"
