#!/bin/sh
# Installs what the tests need (libcmocka-dev, pkg-config) when missing.
missing=""
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
pkg-config --exists cmocka 2>/dev/null || [ -f /usr/include/cmocka.h ] || missing="$missing libcmocka-dev"
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get install -y -qq $missing >/dev/null 2>&1 || {
	$SUDO apt-get update -qq >/dev/null 2>&1 &&
	$SUDO apt-get install -y -qq $missing >/dev/null; } || {
	echo "could not install$missing" >&2; exit 1; }
