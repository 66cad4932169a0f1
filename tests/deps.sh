#!/bin/sh
# Installs what the tests need (libcmocka-dev, pkg-config) when missing;
# with the argument "mpi", Open MPI (openmpi-bin, libopenmpi-dev) for
# libfuture-mpi (`make deps-mpi`).
missing=""
if [ "${1:-}" = mpi ]; then
	command -v mpicc >/dev/null 2>&1 || missing="$missing libopenmpi-dev"
	command -v mpirun >/dev/null 2>&1 || missing="$missing openmpi-bin"
else
	command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
	pkg-config --exists cmocka 2>/dev/null || [ -f /usr/include/cmocka.h ] || missing="$missing libcmocka-dev"
fi
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get install -y -qq $missing >/dev/null 2>&1 || {
	$SUDO apt-get update -qq >/dev/null 2>&1 &&
	$SUDO apt-get install -y -qq $missing >/dev/null; } || {
	echo "could not install$missing" >&2; exit 1; }
