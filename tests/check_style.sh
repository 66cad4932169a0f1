#!/bin/sh
# Usage: tests/check_style.sh [STATIC_LIB]
# The mechanical checks of the house style (../shared/STYLE-ANCHORS.md
# section 3), run by `make check`:
#  1. include/ holds future.h, and future_mpi.h (libfuture-mpi's), only;
#  2. every global symbol of the static library starts with fut_;
#  3. nothing in src/ aborts, exits or prints (the worker child's _exit is
#     allowed: it is not matched);
#  4. only src/core/alloc.c calls malloc, calloc, realloc or free;
#  5. no nonnull attribute anywhere;
#  6. each src/*.c opens with a comment naming Owns:, Threads: and Locks:;
#  7. every fd is made close-on-exec (pipe2/dup3/accept4 with the flag,
#     open/socket/eventfd with it);
#  8. no source file passes 600 lines unless tests/long_files.txt lists
#     it with its reason;
#  9. the house's walls: src/core/ includes only core/ and the public
#     header; a pool includes core/ and its own folder, never the other
#     pool; the process pool's child side (child.c, forkserver.c,
#     inherit.c, child.h) never includes the parent's pool.h nor <pthread.h>, the
#     worker's (child.c, child.h) nor <poll.h>; wire.c, the pure
#     codec, includes neither <unistd.h> nor <pthread.h>; src/mpi/
#     (libfuture-mpi) includes core/, the codec and its own mpi_*.h only;
# 10. clang-format --dry-run -Werror agrees with every C file of src,
#     include, tests, examples and bench, and examples/*.cpp (when
#     clang-format exists).
set -eu
cd "$(dirname "$0")/.."
lib=${1:-build/libfuture.a}
status=0
fail()
{
	echo "check_style: $*" >&2
	status=1
}

# 1
extra=$(ls include | grep -v -E '^future(_mpi)?\.h$' || true)
[ -z "$extra" ] || fail "include/ holds more than future.h and future_mpi.h: $extra"

# 2
if [ -f "$lib" ]; then
	bad=$(nm -g --defined-only "$lib" 2>/dev/null |
		awk 'NF == 3 { print $3 }' | grep -v '^fut_' || true)
	[ -z "$bad" ] || fail "global symbols without the fut_ prefix in $lib: $(echo $bad)"
else
	fail "$lib not built"
fi

# 3
hits=$(grep -nE '(^|[^_a-zA-Z0-9])(abort|exit|printf|fprintf|vfprintf|perror|puts|putchar|fputs)\(' src/*/*.[ch] || true)
[ -z "$hits" ] || fail "src/ must not abort, exit or print:
$hits"

# 4
hits=$(grep -nE '(^|[^_a-zA-Z0-9.>])(malloc|calloc|realloc|free|strdup|strndup)\(' src/*/*.[ch] |
	grep -v '^src/core/alloc\.c:' || true)
[ -z "$hits" ] || fail "raw allocation outside src/core/alloc.c:
$hits"

# 5
hits=$(grep -rn 'nonnull' include src || true)
[ -z "$hits" ] || fail "nonnull attribute used:
$hits"

# 6
for f in src/*/*.c; do
	head=$(sed -n '1,/\*\//p' "$f")
	case "$head" in
	/\**) ;;
	*) fail "$f does not open with a comment"; continue ;;
	esac
	for k in Owns: Threads: Locks:; do
		echo "$head" | grep -q "$k" || fail "$f: its opening comment lacks '$k'"
	done
done

# 7: the call and the two lines after it must carry the flag.
check_flag()
{
	pattern=$1
	flag=$2
	for f in src/*/*.c; do
		grep -nE "(^|[^_a-zA-Z0-9])($pattern)\(" "$f" | cut -d: -f1 |
		while read -r n; do
			sed -n "${n},$((n + 2))p" "$f" | grep -qE "$flag" ||
				echo "$f:$n: $(sed -n "${n}p" "$f" | sed 's/^[[:space:]]*//')"
		done
	done
}
hits=$(grep -nE '(^|[^_a-zA-Z0-9])(pipe|dup|dup2|accept)\(' src/*/*.c || true)
[ -z "$hits" ] || fail "use pipe2/dup3/accept4 (or fcntl F_DUPFD_CLOEXEC) with close-on-exec:
$hits"
hits=$( (check_flag 'open|openat|creat' 'O_CLOEXEC'
	check_flag 'socket|socketpair|accept4' 'SOCK_CLOEXEC'
	check_flag 'eventfd' 'EFD_CLOEXEC'
	check_flag 'pipe2|dup3' 'O_CLOEXEC'
	check_flag 'epoll_create1' 'EPOLL_CLOEXEC'
	check_flag 'signalfd' 'SFD_CLOEXEC'
	check_flag 'timerfd_create' 'TFD_CLOEXEC') )
[ -z "$hits" ] || fail "fds not made close-on-exec:
$hits"

# 8
for f in include/*.h src/*/*.[ch]; do
	n=$(wc -l <"$f")
	[ "$n" -le 600 ] && continue
	grep -q "^$f: ." tests/long_files.txt ||
		fail "$f has $n lines: split it, or list it in tests/long_files.txt with its reason"
done

# 9: quoted includes name a folder of src/ ("core/sync.h") or future.h.
includes()
{
	sed -n 's/^#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$1"
}
check_walls()
{
	dir=$1
	allowed=$2
	for f in src/$dir/*.[ch]; do
		[ -e "$f" ] || continue
		for inc in $(includes "$f"); do
			echo "$inc" | grep -qE "^($allowed)$" ||
				fail "$f includes \"$inc\": $dir/ may include only $allowed"
		done
	done
}
check_walls core 'future\.h|core/[a-z_]+\.h'
check_walls thread_pool 'core/[a-z_]+\.h|thread_pool/[a-z_]+\.h'
check_walls process_pool 'core/[a-z_]+\.h|process_pool/[a-z_]+\.h'
check_walls mpi 'future\.h|future_mpi\.h|core/[a-z_]+\.h|process_pool/wire\.h|mpi_[a-z]+\.h'
for f in src/process_pool/child.c src/process_pool/child_in.c \
	src/process_pool/forkserver.c src/process_pool/inherit.c \
	src/process_pool/child.h; do
	[ -e "$f" ] || continue
	includes "$f" | grep -qx 'process_pool/pool\.h' &&
		fail "$f, the child's side, includes the parent's process_pool/pool.h"
	grep -qE '^#[[:space:]]*include[[:space:]]*<pthread\.h>' "$f" &&
		fail "$f, the child's side, includes <pthread.h>"
done
# The worker loop and the contract waits on nothing but its socket: no
# poll set (the fork server polls its socket, its signalfd and the
# parent's pidfd).
for f in src/process_pool/child.c src/process_pool/child_in.c \
	src/process_pool/child.h; do
	[ -e "$f" ] || continue
	grep -qE '^#[[:space:]]*include[[:space:]]*<poll\.h>' "$f" &&
		fail "$f, the worker's side, includes <poll.h>"
done
for f in src/process_pool/wire.c src/process_pool/wire.h; do
	grep -qE '^#[[:space:]]*include[[:space:]]*<(unistd|pthread)\.h>' "$f" &&
		fail "$f, the pure codec, includes <unistd.h> or <pthread.h>"
done

# 10
if command -v clang-format >/dev/null 2>&1; then
	files=$(ls src/*/*.[ch] include/*.h tests/*.[ch] tests/*/*.[ch] \
		examples/*.c examples/*.cpp bench/*.[ch] bench/*/*.[ch] \
		2>/dev/null)
	clang-format --dry-run -Werror $files 2>/dev/null ||
		fail "clang-format disagrees (make format fixes it):
$(clang-format --dry-run $files 2>&1 | grep -E '^[^ ]+:[0-9]+:[0-9]+: (error|warning)' | cut -d: -f1,2 | head -20)"
else
	echo "check_style: clang-format not found: formatting not checked" >&2
fi

[ $status -eq 0 ] && echo "check_style: ok"
exit $status
