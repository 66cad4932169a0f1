#!/bin/sh
# make install into a scratch PREFIX, then:
# - the installed shared library has SONAME libfuture.so.<MAJOR>;
# - every function has its man page under share/man/man3, with
#   libfuture(3), and they render;
# - a program built with `pkg-config --cflags --libs libfuture` against the
#   installed copy runs and uses that copy, and so does every examples/*.c
#   (run with no arguments and FUT_EXAMPLE_QUICK=1 in the environment: an
#   example that would run long should honour it and run short; one that
#   names pkg-config packages in a " * pkg-config: " line is built with
#   them, or skipped when pkg-config does not find them);
# - with cmake, find_package(libfuture MAJOR.MINOR REQUIRED) finds the
#   installed copy, a program linked with libfuture::libfuture runs and
#   loads the installed shared library, one linked with libfuture::static
#   runs without it, and a newer MINOR or MAJOR than installed is refused;
#   with libfuture-mpi installed, COMPONENTS mpi builds examples/mpi_primes.c
#   with libfuture::mpi and libfuture::mpi_static, run under mpirun;
#   without it, COMPONENTS mpi is refused;
# - a DESTDIR install stages the same files under DESTDIR, with a .pc that
#   names PREFIX, not DESTDIR;
# - make uninstall leaves nothing but empty directories.
# Not part of `make test`; CI runs it, and so does `make install-check`.
set -eu

cd "$(dirname "$0")/.."
CC=${CC:-cc}
MAKE=${MAKE:-make}
work=$(mktemp -d "${TMPDIR:-/tmp}/libfuture-install.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
prefix="$work/prefix"

fail()
{
	echo "test_install: FAIL: $*" >&2
	exit 1
}

major=$(sed -n 's/^#define FUT_VERSION_MAJOR \([0-9]*\).*/\1/p' include/future.h)
minor=$(sed -n 's/^#define FUT_VERSION_MINOR \([0-9]*\).*/\1/p' include/future.h)
patch=$(sed -n 's/^#define FUT_VERSION_PATCH \([0-9]*\).*/\1/p' include/future.h)
version="$major.$minor.$patch"

echo "test_install: make install PREFIX=$prefix"
$MAKE --no-print-directory install PREFIX="$prefix" >"$work/install.log" 2>&1 ||
	{ cat "$work/install.log" >&2; fail "make install"; }

libdir="$prefix/lib"
[ -f "$prefix/include/future.h" ] || fail "future.h not installed"
[ -f "$libdir/libfuture.a" ] || fail "libfuture.a not installed"
[ -f "$libdir/libfuture.so.$version" ] || fail "libfuture.so.$version not installed"
[ -L "$libdir/libfuture.so.$major" ] || fail "libfuture.so.$major link missing"
[ -L "$libdir/libfuture.so" ] || fail "libfuture.so link missing"
[ -f "$libdir/pkgconfig/libfuture.pc" ] || fail "libfuture.pc not installed"

soname=$(readelf -d "$libdir/libfuture.so.$version" |
	sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libfuture.so.$major" ] ||
	fail "SONAME is '$soname', want libfuture.so.$major"
echo "test_install: SONAME $soname"

man3="$prefix/share/man/man3"
for page in $(sh tests/list_functions.sh include/future.h) libfuture; do
	[ -f "$man3/$page.3" ] || fail "man page $page.3 not installed"
done
if command -v mandoc >/dev/null 2>&1; then
	render="mandoc -Tascii"
elif command -v man >/dev/null 2>&1 && command -v groff >/dev/null 2>&1; then
	render="man -l -P cat"
else
	render=""
fi
if [ -n "$render" ]; then
	$render "$man3/fut_result.3" 2>/dev/null | grep -q "wait for a future and take its result" ||
		fail "$render does not render the installed fut_result.3"
	$render "$man3/libfuture.3" 2>/dev/null | grep -q "make a thread pool" ||
		fail "$render does not render the installed libfuture.3"
	echo "test_install: man pages installed and rendered ($render)"
else
	echo "test_install: man pages installed (neither mandoc nor man+groff to render them)"
fi

export PKG_CONFIG_PATH="$libdir/pkgconfig"
pc_version=$(pkg-config --modversion libfuture)
[ "$pc_version" = "$version" ] || fail "pkg-config version $pc_version, want $version"
flags=$(pkg-config --cflags --libs libfuture)
echo "test_install: pkg-config --cflags --libs libfuture: $flags"
case "$flags" in
*"-I$prefix/include"*) ;;
*) fail "cflags do not name $prefix/include" ;;
esac

cat >"$work/hello.c" <<'C'
#include <future.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	fut_future *f = NULL;
	const void *data;
	size_t len;

	if (strcmp(fut_version(), FUT_VERSION_STRING_) != 0) {
		fprintf(stderr, "library %s, header %s\n", fut_version(),
			FUT_VERSION_STRING_);
		return 1;
	}
	if (fut_future_new(&f) != FUT_OK)
		return 1;
	if (fut_set_result_bytes(f, "installed", 10) != FUT_OK)
		return 1;
	if (fut_result_bytes(f, FUT_FOREVER, &data, &len) != FUT_OK ||
	    len != 10 || strcmp(data, "installed") != 0)
		return 1;
	fut_release(f);
	printf("hello from libfuture %s\n", fut_version());
	return 0;
}
C
# shellcheck disable=SC2086 # $flags is a word list
$CC -std=c11 -Wall -Wextra -Werror -DFUT_VERSION_STRING_="\"$version\"" \
	-o "$work/hello" "$work/hello.c" $flags ||
	fail "building a program with pkg-config"
LD_LIBRARY_PATH="$libdir" ldd "$work/hello" | grep -q "$libdir/libfuture.so.$major" ||
	fail "the program does not load the installed library"
LD_LIBRARY_PATH="$libdir" "$work/hello" || fail "the program failed"

# Every example, built against the installed library the same way.
for src in examples/*.c; do
	[ -f "$src" ] || continue
	name=$(basename "$src" .c)
	case $name in mpi_*) continue ;; esac # libfuture-mpi's: tests/mpi/run.sh
	pkgs=$(sed -n 's/^ \* pkg-config: //p' "$src")
	extra=""
	if [ -n "$pkgs" ]; then
		# shellcheck disable=SC2086
		extra=$(pkg-config --cflags --libs $pkgs 2>/dev/null) || {
			echo "test_install: skipped: example $name: pkg-config does not find $pkgs"
			continue
		}
	fi
	# shellcheck disable=SC2086
	$CC -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread \
		-o "$work/$name" "$src" $flags $extra -lm ||
		fail "building example $name against the installed library"
	echo "test_install: running example $name"
	FUT_EXAMPLE_QUICK=1 LD_LIBRARY_PATH="$libdir" timeout 300 "$work/$name" \
		>"$work/$name.out" 2>&1 </dev/null ||
		{ cat "$work/$name.out" >&2; fail "example $name exited non-zero"; }
done

# The README's example, once the thread pool is in the library: it prints
# the squares of 0..9 in completion order.  The library's symbols are
# versioned (fut_thread_pool_new@@LIBFUTURE_0): a pattern without the
# version never matched, and the example went unrun.
if nm -D --defined-only "$libdir/libfuture.so.$version" | grep -q -E ' fut_thread_pool_new(@@[A-Z_0-9]+)?$'; then
	awk '/^```c$/ { f = 1; next } /^```$/ { if (f) exit } f' README.md >"$work/readme.c"
	# shellcheck disable=SC2086
	$CC -std=c11 -Wall -Wextra -Werror -o "$work/readme" "$work/readme.c" $flags ||
		fail "building the README example"
	LD_LIBRARY_PATH="$libdir" timeout 60 "$work/readme" >"$work/readme.out" ||
		fail "the README example exited non-zero"
	got=$(sort -n "$work/readme.out" | tr '\n' ' ')
	[ "$got" = "0 1 4 9 16 25 36 49 64 81 " ] ||
		fail "the README example printed: $got"
	echo "test_install: README example ok"
else
	echo "test_install: no thread pool in the library yet; README example not run"
fi

# CMake: a consumer project built against the scratch PREFIX, asking for
# the installed MAJOR.MINOR; then asked for one MINOR and one MAJOR more,
# which must not be found.
[ -f "$libdir/cmake/libfuture/libfutureConfig.cmake" ] ||
	fail "libfutureConfig.cmake not installed"
[ -f "$libdir/cmake/libfuture/libfutureConfigVersion.cmake" ] ||
	fail "libfutureConfigVersion.cmake not installed"
if command -v cmake >/dev/null 2>&1; then
	mkdir "$work/cmake"
	cp "$work/hello.c" "$work/cmake/hello.c"
	cat >"$work/cmake/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(libfuture_consumer C)
if(COMPONENTS)
	find_package(libfuture ${WANT} REQUIRED COMPONENTS ${COMPONENTS})
else()
	find_package(libfuture ${WANT} REQUIRED)
endif()
foreach(kind libfuture static)
	add_executable(hello_${kind} hello.c)
	target_link_libraries(hello_${kind} PRIVATE libfuture::${kind})
	target_compile_definitions(hello_${kind} PRIVATE
		"FUT_VERSION_STRING_=\"${libfuture_VERSION}\"")
endforeach()
CMAKE
	cmake_try()
	{
		rm -rf "$work/cmake/build"
		want=$1
		shift
		cmake -S "$work/cmake" -B "$work/cmake/build" -DWANT="$want" \
			-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$CC" \
			"$@" >"$work/cmake.log" 2>&1
	}
	# libfuture-mpi installed: COMPONENTS mpi gives libfuture::mpi and
	# libfuture::mpi_static, and examples/mpi_primes.c built with each
	# runs under mpirun against the installed libraries.
	cmake_mpi()
	{
		mkdir -p "$work/cmake_mpi"
		cp examples/mpi_primes.c "$work/cmake_mpi/"
		cat >"$work/cmake_mpi/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(libfuture_mpi_consumer C)
find_package(libfuture ${WANT} REQUIRED COMPONENTS mpi)
foreach(kind mpi mpi_static)
	add_executable(primes_${kind} mpi_primes.c)
	target_link_libraries(primes_${kind} PRIVATE libfuture::${kind} m)
	target_compile_definitions(primes_${kind} PRIVATE _GNU_SOURCE)
endforeach()
CMAKE
		cmake -S "$work/cmake_mpi" -B "$work/cmake_mpi/build" \
			-DWANT="$major.$minor" -DCMAKE_PREFIX_PATH="$prefix" \
			-DCMAKE_C_COMPILER="$CC" >"$work/cmake_mpi.log" 2>&1 &&
			cmake --build "$work/cmake_mpi/build" \
				>>"$work/cmake_mpi.log" 2>&1 ||
			{ cat "$work/cmake_mpi.log" >&2; fail "cmake: COMPONENTS mpi"; }
		LD_LIBRARY_PATH="$libdir" ldd "$work/cmake_mpi/build/primes_mpi" |
			grep -q "$libdir/libfuture-mpi.so.$major" ||
			fail "libfuture::mpi does not load the installed library"
		(
			. tests/mpi/env.sh
			for kind in mpi mpi_static; do
				LD_LIBRARY_PATH="$libdir" timeout 120 \
					${MPIRUN:-mpirun} -x LD_LIBRARY_PATH -np 3 \
					"$work/cmake_mpi/build/primes_$kind" \
					>"$work/primes_$kind.out" 2>&1 ||
					{ cat "$work/primes_$kind.out" >&2; exit 1; }
			done
		) || fail "a libfuture::mpi program failed under mpirun"
		echo "test_install: cmake COMPONENTS mpi: libfuture::mpi and libfuture::mpi_static build and run under mpirun"
	}
	cmake_try "$major.$minor" || { cat "$work/cmake.log" >&2; fail "cmake: find_package(libfuture $major.$minor)"; }
	cmake --build "$work/cmake/build" >>"$work/cmake.log" 2>&1 ||
		{ cat "$work/cmake.log" >&2; fail "cmake --build of the consumer"; }
	ldd "$work/cmake/build/hello_libfuture" | grep -q "$libdir/libfuture.so.$major" ||
		fail "libfuture::libfuture does not load the installed library"
	if ldd "$work/cmake/build/hello_static" | grep -q libfuture; then
		fail "libfuture::static links the shared library"
	fi
	"$work/cmake/build/hello_libfuture" || fail "the libfuture::libfuture program failed"
	"$work/cmake/build/hello_static" || fail "the libfuture::static program failed"
	echo "test_install: cmake find_package(libfuture $major.$minor): both targets build and run"
	for newer in "$major.$((minor + 1))" "$((major + 1)).0"; do
		if cmake_try "$newer"; then
			fail "cmake: find_package(libfuture $newer) found $version"
		fi
		grep -q "$version" "$work/cmake.log" ||
			{ cat "$work/cmake.log" >&2; fail "cmake: find_package(libfuture $newer) failed without naming $version"; }
	done
	echo "test_install: cmake refuses libfuture $major.$((minor + 1)) and $((major + 1)).0"
	if [ -f "$libdir/libfuture-mpi.so.$version" ]; then
		cmake_mpi
	elif cmake_try "$major.$minor" -DCOMPONENTS=mpi; then
		fail "cmake: COMPONENTS mpi found without libfuture-mpi installed"
	elif grep -q 'component mpi' "$work/cmake.log"; then
		echo "test_install: cmake refuses COMPONENTS mpi without libfuture-mpi"
	else
		cat "$work/cmake.log" >&2
		fail "cmake: COMPONENTS mpi failed without saying why"
	fi
else
	echo "test_install: skipped: cmake not found (the CMake package is installed but not tried)"
fi

echo "test_install: make uninstall PREFIX=$prefix"
$MAKE --no-print-directory uninstall PREFIX="$prefix" >"$work/uninstall.log" 2>&1 ||
	{ cat "$work/uninstall.log" >&2; fail "make uninstall"; }
left=$(find "$prefix" ! -type d)
[ -z "$left" ] || fail "make uninstall left files behind: $left"

# DESTDIR: staged under DESTDIR, configured for PREFIX.
stage="$work/stage"
$MAKE --no-print-directory install DESTDIR="$stage" PREFIX=/opt/libfuture \
	>"$work/destdir.log" 2>&1 || { cat "$work/destdir.log" >&2; fail "make install DESTDIR"; }
[ -f "$stage/opt/libfuture/lib/libfuture.so.$version" ] ||
	fail "DESTDIR install did not stage the library"
grep -q '^prefix=/opt/libfuture$' "$stage/opt/libfuture/lib/pkgconfig/libfuture.pc" ||
	fail "the staged .pc does not name PREFIX"
if grep -q "$stage" "$stage/opt/libfuture/lib/pkgconfig/libfuture.pc"; then
	fail "the staged .pc names DESTDIR"
fi
grep -q '"/opt/libfuture/lib/libfuture.a"' \
	"$stage/opt/libfuture/lib/cmake/libfuture/libfutureConfig.cmake" ||
	fail "the staged libfutureConfig.cmake does not name PREFIX"
if grep -rq "$stage" "$stage/opt/libfuture/lib/cmake"; then
	fail "the staged CMake package names DESTDIR"
fi
$MAKE --no-print-directory uninstall DESTDIR="$stage" PREFIX=/opt/libfuture \
	>"$work/destdir-un.log" 2>&1 || fail "make uninstall DESTDIR"
left=$(find "$stage" ! -type d)
[ -z "$left" ] || fail "make uninstall DESTDIR left files behind: $left"

echo "test_install: ok"
