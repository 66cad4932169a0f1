#!/bin/sh
# Usage: tests/mpi/check_pc.sh BUILD MPICC
# BUILD/libfuture-mpi.pc must name the MPI that MPICC wraps: the library
# follows that MPI's ABI (docs/mpi.md), so a program built with
# `pkg-config --libs libfuture-mpi` must link that MPI's library, not
# another installed beside it (Debian's mpi-c.pc is Open MPI's by default,
# and MPICH's build found it first).
set -eu
build=$1
mpicc=$2
pc=$build/libfuture-mpi.pc
# The MPI's own library, as MPICC links it (Open MPI's --showme:link,
# MPICH's -link-info).
link=$($mpicc --showme:link 2>/dev/null || $mpicc -link-info 2>/dev/null ||
	true)
want=
for w in $link; do
	case $w in -lmpi | -lmpich) want=$w && break ;; esac
done
if [ -z "$want" ]; then
	echo "check_pc: skipped: $mpicc names no -lmpi or -lmpich"
	exit 0
fi
req=$(sed -n 's/^Requires: *libfuture *//p' "$pc")
if [ -n "$req" ]; then
	have=$(pkg-config --libs "$req")
else
	have=$(sed -n 's/^Libs.private: *//p' "$pc")
fi
case " $have " in
*" $want "*) echo "check_pc: $pc links $want, as $mpicc does" ;;
*)
	echo "check_pc: $pc (Requires: libfuture $req) links '$have';" \
		"$mpicc links $want" >&2
	exit 1
	;;
esac
