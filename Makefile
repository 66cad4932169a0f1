# libfuture: a plain Makefile.  `make help` lists the targets.
# PREFIX, DESTDIR, CC, CFLAGS and LDFLAGS can be overridden;
# SANITIZER=address|thread builds into build/<sanitizer>/.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR ?= $(LIBDIR)/cmake/libfuture

CC ?= cc
OPT ?= -O2 -g
CFLAGS ?= $(OPT)
WARN = -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
       -Wmissing-prototypes -Wmissing-declarations -Wcast-qual -Wwrite-strings
LIB_CPPFLAGS = -D_GNU_SOURCE -Iinclude -Isrc

# The version lives once, in the header.
hdr_version = $(shell sed -n 's/^\#define FUT_VERSION_$(1) \([0-9]*\)/\1/p' include/future.h)
MAJOR := $(call hdr_version,MAJOR)
MINOR := $(call hdr_version,MINOR)
PATCH := $(call hdr_version,PATCH)
VERSION := $(MAJOR).$(MINOR).$(PATCH)

ifeq ($(SANITIZER),address)
  SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
  BUILD ?= build/address
else ifeq ($(SANITIZER),thread)
  SANFLAGS = -fsanitize=thread
  BUILD ?= build/thread
else
  SANFLAGS =
  BUILD ?= build
endif

ALL_CFLAGS = $(WARN) $(CFLAGS) $(SANFLAGS) -fPIC -pthread -fvisibility=hidden
SRCS := $(wildcard src/core/*.c src/thread_pool/*.c src/process_pool/*.c)
OBJS := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
STATIC = $(BUILD)/libfuture.a
SONAME = libfuture.so.$(MAJOR)
SHARED = $(BUILD)/libfuture.so.$(VERSION)

CMOCKA_CFLAGS = $(shell pkg-config --cflags cmocka 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
TEST_SRCS := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_CFLAGS = -std=c11 -Wall -Wextra -Werror $(CFLAGS) $(SANFLAGS) -pthread \
	      -D_GNU_SOURCE -Iinclude -Isrc -Itests
TEST_TIMEOUT ?= 600

# An example or bench program that needs a library beyond libc names its
# pkg-config packages in a line " * pkg-config: <names>" of its opening
# comment (tests/test_install.sh reads the same line): it is built with
# their flags when pkg-config finds them, and skipped, saying why,
# otherwise.  unbuildable: those of the sources $(1) it does not find.
PKGS_LINE = s/^ \* pkg-config: //p
needs_pkgs = $(shell sed -n '$(PKGS_LINE)' $(1))
pkg_flags = $(if $(call needs_pkgs,$(1)),$(shell pkg-config --cflags \
	--libs $(call needs_pkgs,$(1))))
unbuildable = $(foreach s,$(1),$(if $(call needs_pkgs,$(s)),$(if $(shell \
	pkg-config --exists $(call needs_pkgs,$(s)) 2>/dev/null && echo y),,$(s))))
say_skipped = for s in $(1); do echo "skipped: $$s: pkg-config does not" \
	"find $$(sed -n '$(PKGS_LINE)' $$s)"; done
# examples/mpi_*.c need libfuture-mpi: built with the MPI part.
EXAMPLE_SRCS := $(filter-out examples/mpi_%.c,$(wildcard examples/*.c))
EXAMPLES_UNBUILDABLE := $(call unbuildable,$(EXAMPLE_SRCS))
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,\
	$(filter-out $(EXAMPLES_UNBUILDABLE),$(EXAMPLE_SRCS)))
# The event-loop examples also run in `make test` (so under ASan and TSan
# in `make check`): each starts its own clients, checks every answer and
# ends by itself.  So does du, which checks its sum against a serial walk,
# and that its tasks, not its fallback, walked a tree too shallow to need it.
LOOP_EXAMPLES = uv_server glib_loop
RUN_EXAMPLES := $(filter $(LOOP_EXAMPLES:%=$(BUILD)/examples/%) \
	$(BUILD)/examples/du,$(EXAMPLES))
SKIP_EXAMPLES := $(filter $(LOOP_EXAMPLES:%=examples/%.c),$(EXAMPLES_UNBUILDABLE))
# The C++ examples (examples/*.cpp) are built and run as the loop
# examples are when $(CXX) is found, and skipped, saying so, when not.
# CXXSTD=c++20 builds them as C++20.  With CC=clang the default CXX is
# clang++: a sanitizer's runtime must be the one its objects were built
# for.
ifeq ($(origin CXX),default)
  ifneq ($(findstring clang,$(CC)),)
    CXX = $(subst clang,clang++,$(CC))
  endif
endif
CXXSTD ?= c++11
CXXFLAGS ?= $(OPT)
HAVE_CXX := $(shell command -v $(CXX) >/dev/null 2>&1 && echo yes)
CXX_EXAMPLE_SRCS := $(wildcard examples/*.cpp)
CXX_EXAMPLES := $(if $(HAVE_CXX),$(CXX_EXAMPLE_SRCS:examples/%.cpp=$(BUILD)/examples/%))
EXAMPLES += $(CXX_EXAMPLES)
RUN_EXAMPLES += $(CXX_EXAMPLES)
say_no_cxx = for s in $(if $(HAVE_CXX),,$(CXX_EXAMPLE_SRCS)); do \
	echo "skipped: $$s: no C++ compiler"; done
BENCH_SRCS := $(wildcard bench/*.c)
BENCHES_UNBUILDABLE := $(call unbuildable,$(BENCH_SRCS))
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,\
	$(filter-out $(BENCHES_UNBUILDABLE),$(BENCH_SRCS)))

.PHONY: all lib test check check-asan check-tsan check-valgrind bench demo \
	examples install uninstall clean format help deps fuzz stress check-stress \
	check-stress-valgrind

all: $(STATIC) $(BUILD)/libfuture.so mpi-if-present

lib: all

$(BUILD)/obj/%.o: src/%.c include/future.h $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CPPFLAGS) -c -o $@ $<

# q, not r: members of different folders share names (pool.o).
$(STATIC): $(OBJS)
	rm -f $@
	ar qcs $@ $^

# libfuture.map with the version written into its private node.
$(BUILD)/libfuture.map: libfuture.map include/future.h
	@mkdir -p $(dir $@)
	sed 's/@VERSION@/$(VERSION)/' libfuture.map >$@

$(SHARED): $(OBJS) $(BUILD)/libfuture.map
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,$(SONAME) \
		-Wl,--version-script=$(BUILD)/libfuture.map -o $@ $(OBJS) $(LDFLAGS)

$(BUILD)/libfuture.so: $(SHARED)
	ln -sf libfuture.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf libfuture.so.$(VERSION) $@

# Tests link the static library so they can reach the internal test hooks.
$(BUILD)/tests/%: tests/%.c $(STATIC) $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< $(STATIC) $(CMOCKA_LIBS) -lm

# test_pp_exec_ctors has a constructor in an object linked after the
# library (tests/exec_ctors_late.c), and is built once more linked with
# libfuture.so as a user's program is: the loader then runs the
# program's constructors after the library's.
EXEC_CTORS_LATE = tests/exec_ctors_late.c
$(BUILD)/tests/test_pp_exec_ctors: tests/test_pp_exec_ctors.c \
		tests/exec_ctors.h $(EXEC_CTORS_LATE) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< $(STATIC) \
		$(EXEC_CTORS_LATE) $(CMOCKA_LIBS) -lm
TESTS += $(BUILD)/tests/test_pp_exec_ctors_shared
$(BUILD)/tests/test_pp_exec_ctors_shared: tests/test_pp_exec_ctors.c \
		tests/exec_ctors.h $(EXEC_CTORS_LATE) $(BUILD)/libfuture.so
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< -L$(BUILD) -lfuture \
		$(EXEC_CTORS_LATE) $(CMOCKA_LIBS) -lm -Wl,-rpath,'$$ORIGIN/..'

# test_pp_exec_nobid is linked without a build-id (a FUT_START_EXEC pool
# is then refused), statically and, as _shared, with libfuture.so.
$(BUILD)/tests/test_pp_exec_nobid: tests/test_pp_exec_nobid.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< $(STATIC) \
		$(CMOCKA_LIBS) -lm -Wl,--build-id=none
TESTS += $(BUILD)/tests/test_pp_exec_nobid_shared
$(BUILD)/tests/test_pp_exec_nobid_shared: tests/test_pp_exec_nobid.c \
		$(BUILD)/libfuture.so
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< -L$(BUILD) -lfuture \
		$(CMOCKA_LIBS) -lm -Wl,-rpath,'$$ORIGIN/..' -Wl,--build-id=none

# test_pp_exec_ctors_wrap links libfuture.so, then a library that links
# it too (tests/exec_ctors_wrap.c, built beside the test): the loader
# initialises that library after libfuture.
EXEC_CTORS_WRAP = $(BUILD)/tests/libexec_ctors_wrap.so
$(EXEC_CTORS_WRAP): tests/exec_ctors_wrap.c $(BUILD)/libfuture.so
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -fPIC -shared -o $@ $< -L$(BUILD) -lfuture
$(BUILD)/tests/test_pp_exec_ctors_wrap: tests/test_pp_exec_ctors_wrap.c \
		tests/exec_ctors.h $(EXEC_CTORS_WRAP) $(BUILD)/libfuture.so
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< -L$(BUILD) -lfuture \
		-L$(BUILD)/tests -lexec_ctors_wrap $(CMOCKA_LIBS) -lm \
		-Wl,-rpath,'$$ORIGIN/..' -Wl,-rpath,'$$ORIGIN'

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror $(CFLAGS) $(SANFLAGS) -pthread \
		-D_GNU_SOURCE -Iinclude -o $@ $< $(STATIC) $(call pkg_flags,$<) -lm

$(BUILD)/examples/%: examples/%.cpp $(STATIC)
	@mkdir -p $(dir $@)
	$(CXX) -std=$(CXXSTD) -Wall -Wextra -Werror $(CXXFLAGS) $(SANFLAGS) \
		-pthread -Iinclude -o $@ $< $(STATIC) -lm

$(BUILD)/bench/%: bench/%.c $(STATIC) $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -O2 -g -pthread -D_GNU_SOURCE \
		-Iinclude -Isrc -o $@ $< $(STATIC) $(call pkg_flags,$<) -lm

# ------------------------------------------------------------------
# libfuture-mpi (docs/mpi.md): built only when $(MPICC) exists; without
# it `make` says so and the core build is unchanged.  `make mpi` builds it
# or fails.  It links the core's internals from libfuture.so's private
# node (libfuture.map) and exports fut_mpi_* only (libfuture-mpi.map).
MPICC ?= mpicc
MPIRUN ?= mpirun
HAVE_MPI := $(shell command -v $(MPICC) >/dev/null 2>&1 && echo yes)
MPI_SRCS := $(wildcard src/mpi/*.c)
MPI_OBJS := $(MPI_SRCS:src/mpi/%.c=$(BUILD)/obj/mpi/%.o)
MPI_STATIC = $(BUILD)/libfuture-mpi.a
# A symbol libfuture.so does not export fails the link, not the load (a
# sanitizer's runtime is linked into programs only: not then).
MPI_NO_UNDEFINED = $(if $(SANFLAGS),,-Wl,--no-undefined)
MPI_SONAME = libfuture-mpi.so.$(MAJOR)
MPI_SHARED = $(BUILD)/libfuture-mpi.so.$(VERSION)
# The MPI's own .pc for libfuture-mpi.pc's Requires, where there is one:
# that of the MPI $(MPICC) wraps (Open MPI's answers --showme), not the
# first installed: Debian's mpi-c is Open MPI's even for mpicc.mpich
# (tests/mpi/check_pc.sh).
MPI_PC = $(shell if $(MPICC) --showme:version >/dev/null 2>&1; then \
	l="ompi-c mpi-c"; else l="mpich"; fi; for p in $$l; do \
	pkg-config --exists $$p 2>/dev/null && { echo $$p; break; }; done)
MPI_TEST_SRCS := $(wildcard tests/mpi/test_*.c)
# The MPI examples link the shared libraries, as a user's program would:
# run, they prove libfuture-mpi.so loads against libfuture.so's private
# node.  Their run path, $ORIGIN/.., finds those in $(BUILD), so that
# README's `mpirun -np 3 build/examples/mpi_primes` runs as written.
MPI_EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,\
	$(wildcard examples/mpi_*.c))
MPI_TESTS := $(MPI_TEST_SRCS:tests/mpi/%.c=$(BUILD)/tests/mpi/%)

.PHONY: mpi mpi-if-present test-mpi
ifeq ($(HAVE_MPI),yes)
mpi-if-present: mpi
else
mpi-if-present:
	@echo "skipped libfuture-mpi: no $(MPICC) (make deps-mpi installs Open MPI)"
endif

mpi: $(MPI_STATIC) $(BUILD)/libfuture-mpi.so $(BUILD)/libfuture-mpi.pc \
	$(MPI_EXAMPLES)

$(BUILD)/examples/mpi_%: examples/mpi_%.c $(BUILD)/libfuture-mpi.so
	@mkdir -p $(dir $@)
	$(MPICC) -std=c11 -Wall -Wextra -Werror $(CFLAGS) $(SANFLAGS) -pthread \
		-D_GNU_SOURCE -Iinclude -o $@ $< -L$(BUILD) -lfuture-mpi \
		-lfuture -lm -Wl,-rpath,'$$ORIGIN/..'

$(BUILD)/obj/mpi/%.o: src/mpi/%.c include/future.h include/future_mpi.h \
		$(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(MPICC) $(ALL_CFLAGS) $(LIB_CPPFLAGS) -c -o $@ $<

$(MPI_STATIC): $(MPI_OBJS)
	rm -f $@
	ar rcs $@ $^

$(MPI_SHARED): $(MPI_OBJS) libfuture-mpi.map $(BUILD)/libfuture.so
	$(MPICC) $(ALL_CFLAGS) -shared -Wl,-soname,$(MPI_SONAME) \
		-Wl,--version-script=libfuture-mpi.map $(MPI_NO_UNDEFINED) \
		-o $@ $(MPI_OBJS) \
		-L$(BUILD) -lfuture $(LDFLAGS)

$(BUILD)/libfuture-mpi.so: $(MPI_SHARED)
	ln -sf libfuture-mpi.so.$(VERSION) $(BUILD)/$(MPI_SONAME)
	ln -sf libfuture-mpi.so.$(VERSION) $@

MPI_PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	-e 's|@MPI_PC@|$(MPI_PC)|g' \
	-e 's|@MPI_CFLAGS@|$(if $(MPI_PC),,$(shell $(MPICC) --showme:compile 2>/dev/null))|g' \
	-e 's|@MPI_LIBS@|$(if $(MPI_PC),,$(shell $(MPICC) --showme:link 2>/dev/null))|g' \
	libfuture-mpi.pc.in

$(BUILD)/libfuture-mpi.pc: libfuture-mpi.pc.in include/future.h Makefile
	@mkdir -p $(dir $@)
	$(MPI_PC_SED) >$@

# The MPI tests link both static libraries (they reach the test hooks).
$(BUILD)/tests/mpi/%: tests/mpi/%.c $(MPI_STATIC) $(STATIC) \
		$(wildcard tests/mpi/*.h)
	@mkdir -p $(dir $@)
	$(MPICC) $(TEST_CFLAGS) $(CMOCKA_CFLAGS) -Itests/mpi -o $@ $< \
		$(MPI_STATIC) $(STATIC) $(CMOCKA_LIBS) -lm -ldl

# A module the "dlopen" mode of test_mpi_launch loads (with a build-id).
MPI_PLUGIN = $(BUILD)/tests/mpi/libmpi_plugin.so
$(MPI_PLUGIN): tests/mpi/mpi_plugin.c include/future.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror $(CFLAGS) -fPIC -shared \
		-Wl,--build-id -Iinclude -o $@ $<

# Every MPI test under `timeout 60 mpirun`, loopback only, root allowed,
# oversubscribed (tests/mpi/run.sh).  Part of `make test` when MPI exists.
ifeq ($(HAVE_MPI),yes)
test-mpi: mpi $(MPI_TESTS) $(MPI_PLUGIN)
	@MPIRUN=$(MPIRUN) TEST_WRAPPER="$(TEST_WRAPPER)" SANITIZER=$(SANITIZER) \
		sh tests/mpi/run.sh $(BUILD)
	@sh tests/mpi/check_pc.sh $(BUILD) $(MPICC)
else
test-mpi:
	@echo "test-mpi: skipped: no MPI ($(MPICC) not found; make deps-mpi)"
endif

# The MPI tests again against MPICH, beside Open MPI (Debian's mpich and
# libmpich-dev: mpicc.mpich, mpirun.mpich), built into $(BUILD)/mpich;
# skipped with a message where MPICH is not installed.  Its spawn tests
# skip themselves (a singleton MPICH cannot spawn here).
.PHONY: test-mpich
test-mpich:
	@if command -v mpicc.mpich >/dev/null 2>&1 && \
	    command -v mpirun.mpich >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory BUILD=$(BUILD)/mpich \
			MPICC=mpicc.mpich MPIRUN=mpirun.mpich test-mpi; \
	else \
		echo "test-mpich: skipped: no MPICH (apt-get install mpich libmpich-dev)"; \
	fi

# W-MPI1 and W-MPI2 beside the C floors and mpi4py.futures (bench/mpi/run.sh;
# BENCH_MPI_QUICK=1 for one short run).
.PHONY: bench-mpi
ifeq ($(HAVE_MPI),yes)
bench-mpi: mpi $(BUILD)/bench/bench_mpi $(BUILD)/bench/mpi_floors
	@sh bench/mpi/run.sh $(BUILD)

$(BUILD)/bench/bench_mpi: bench/mpi/bench_mpi.c $(MPI_STATIC) $(STATIC)
	@mkdir -p $(dir $@)
	$(MPICC) -std=c11 -Wall -Wextra -Werror -O2 -g -pthread -D_GNU_SOURCE \
		-Iinclude -o $@ $< $(MPI_STATIC) $(STATIC) -lm

$(BUILD)/bench/mpi_floors: bench/mpi/floors.c
	@mkdir -p $(dir $@)
	$(MPICC) -std=c11 -Wall -Wextra -Werror -O2 -o $@ $<
else
bench-mpi:
	@echo "bench-mpi: skipped: no MPI ($(MPICC) not found; make deps-mpi)"
endif

# Installs Open MPI (openmpi-bin, libopenmpi-dev) through apt-get.
.PHONY: deps-mpi
deps-mpi:
	@sh tests/deps.sh mpi

# Installs libcmocka-dev and pkg-config through apt-get when missing.
deps:
	@sh tests/deps.sh

test: deps
	@$(MAKE) --no-print-directory test-run

.PHONY: test-run
test-run: all $(TESTS) $(EXAMPLES)
	@set -e; for t in $(TESTS) $(RUN_EXAMPLES); do \
		echo "== $$t"; \
		timeout $(TEST_TIMEOUT) $(TEST_WRAPPER) $$t; \
	done; $(call say_skipped,$(SKIP_EXAMPLES)); $(say_no_cxx)
	@$(MAKE) --no-print-directory test-mpi
	@echo "all tests passed ($(BUILD))"

check: deps
	$(MAKE) --no-print-directory check-build
	$(MAKE) --no-print-directory check-fuzz
	$(MAKE) --no-print-directory SANITIZER=address test-run
	$(MAKE) --no-print-directory SANITIZER=thread test-run
	$(MAKE) --no-print-directory check-valgrind
	$(MAKE) --no-print-directory SANITIZER=address check-stress
	$(MAKE) --no-print-directory SANITIZER=thread STRESS_CHECK_SECONDS=10 \
		check-stress
	$(MAKE) --no-print-directory check-stress-valgrind
	@echo "check: all clean"

.PHONY: check-build
check-build:
	$(MAKE) --no-print-directory CC=gcc BUILD=build/gcc all
	$(MAKE) --no-print-directory CC=clang BUILD=build/clang all
	sh tests/check_exports.sh build/gcc/libfuture.so include/future.h \
		build/gcc/libfuture.map
	@if [ "$(HAVE_MPI)" = yes ]; then \
		sh tests/check_exports.sh build/gcc/libfuture-mpi.so \
			include/future_mpi.h; fi
	sh tests/check_docs.sh include/future.h docs/api.md docs/man
	sh tests/check_style.sh build/gcc/libfuture.a

# tests/test_process_pool.c knows the 99: a forked worker's _exit status
# reads 99 under valgrind when its inherited heap shows as lost.
# --fair-sched: valgrind runs one thread at a time under one lock, and its
# default lock goes back to the thread that released it more often than
# not (its manual, "Scheduling and Multi-Thread Performance"); the fair
# one hands it round, as a kernel's scheduler would, so a thread that is
# ready to run is never kept waiting for long.  "try": where it cannot,
# the default.
check-valgrind: all $(TESTS)
	@set -e; for t in $(TESTS); do \
		echo "== valgrind $$t"; \
		FUT_TEST_UNDER_VALGRIND=1 timeout $(TEST_TIMEOUT) valgrind -q \
			--fair-sched=try --error-exitcode=99 --leak-check=full \
			--child-silent-after-fork=yes \
			--errors-for-leak-kinds=definite,indirect,possible \
			--track-fds=no $$t; \
	done

# tests/stress: `make stress` runs STRESS_SECONDS (STRESS_SEED replays a
# seed, STRESS_THREADS sets the threads); make check runs
# STRESS_CHECK_SECONDS of it under ASan (leaks too), and 10 s under TSan.
STRESS_SECONDS ?= 600
STRESS_CHECK_SECONDS ?= 20

$(BUILD)/stress/stress: tests/stress/stress.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -o $@ $< $(STATIC) -lm

stress: all $(BUILD)/stress/stress
	STRESS_SECONDS=$(STRESS_SECONDS) $(TEST_WRAPPER) $(BUILD)/stress/stress

# A stuck run prints its process tree and every thread's backtrace
# (tests/stress/on_hang.sh, with gdb) before it fails: a CI log then says
# where it stuck.
check-stress: all $(BUILD)/stress/stress
	STRESS_SECONDS=$(STRESS_CHECK_SECONDS) \
		STRESS_ON_HANG="$${STRESS_ON_HANG:-sh $(CURDIR)/tests/stress/on_hang.sh}" \
		timeout $(TEST_TIMEOUT) $(TEST_WRAPPER) $(BUILD)/stress/stress

# The ASan stress leaves the process pool out (tests/stress/stress.c says
# why); valgrind runs one thread at a time, so its fork is safe: a short
# stress of every kind under memcheck finds what the process pool leaks.
# Valgrind's report goes to a file, printed before the stress's own lines,
# so that those (the seed; on a hang, what each thread was doing) end the
# output that a CI log shows the tail of.
STRESS_VALGRIND_SECONDS ?= 10
STRESS_VALGRIND_LOG = $(BUILD)/stress/valgrind.log
check-stress-valgrind: all $(BUILD)/stress/stress
	@rm -f $(STRESS_VALGRIND_LOG) $(STRESS_VALGRIND_LOG).out
	@FUT_TEST_UNDER_VALGRIND=1 STRESS_SECONDS=$(STRESS_VALGRIND_SECONDS) \
		timeout $(TEST_TIMEOUT) valgrind -q --fair-sched=try \
		--error-exitcode=99 \
		--leak-check=full --child-silent-after-fork=yes \
		--errors-for-leak-kinds=definite,indirect,possible \
		--track-fds=no --log-file=$(STRESS_VALGRIND_LOG) \
		$(BUILD)/stress/stress >$(STRESS_VALGRIND_LOG).out 2>&1; \
	rc=$$?; cat $(STRESS_VALGRIND_LOG); \
	if [ $$rc -ne 0 ]; then echo "== stress under valgrind: exit $$rc"; fi; \
	cat $(STRESS_VALGRIND_LOG).out; exit $$rc

bench: all $(BENCHES)
	@$(call say_skipped,$(BENCHES_UNBUILDABLE))
	@sh bench/run.sh $(BUILD)

examples: $(EXAMPLES)
	@$(call say_skipped,$(EXAMPLES_UNBUILDABLE)); $(say_no_cxx)

# The man pages are generated from docs/api.md and committed; `make check`
# (tests/check_docs.sh) fails when they drift from it.
.PHONY: man
man:
	rm -f docs/man/*.3
	sh docs/mkman.sh docs/api.md include/future.h README.md docs/man
	sh docs/mkman.sh docs/mpi.md include/future_mpi.h docs/mpi.md docs/man \
		libfuture-mpi

# libFuzzer targets (clang): tests/fuzz/fuzz_<name>.c with a seed corpus in
# tests/fuzz/<name>/; each runs FUZZ_SECONDS on a scratch copy of its corpus.
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_CFLAGS = -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -pthread \
	      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	      -DFUT__WIRE_GATHER_FIRST=64

build/fuzz/%: tests/fuzz/%.c $(SRCS) include/future.h $(wildcard src/*/*.h) \
		$(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(SRCS) -lm

fuzz: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
		name=$$(basename $$f); seeds=tests/fuzz/$${name#fuzz_}; \
		work=build/fuzz/corpus-$$name; mkdir -p $$work; \
		[ -d $$seeds ] && cp -n $$seeds/* $$work/ 2>/dev/null || true; \
		echo "== $$name for $(FUZZ_SECONDS) s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -timeout=60 \
			-print_final_stats=1 \
			-artifact_prefix=build/fuzz/$$name- $$work; \
	done

# Runs each target once over every input of its seed corpus (the seeds
# and the regressions kept there): no mutation, so it passes or fails
# the same way every time.  make check runs it; it skips, saying so, when
# clang cannot link libFuzzer (Debian: libclang-rt-dev).
.PHONY: check-fuzz
check-fuzz:
	@if printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' | \
		clang -fsanitize=fuzzer -x c -o /dev/null - >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory check-fuzz-run; \
	else \
		echo "check-fuzz: skipped: clang cannot link libFuzzer (libclang-rt-dev)"; \
	fi

.PHONY: check-fuzz-run
check-fuzz-run: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
		name=$$(basename $$f); seeds=tests/fuzz/$${name#fuzz_}; \
		echo "== $$name over the $$(ls $$seeds | wc -l) inputs of $$seeds"; \
		if ! $$f -timeout=60 $$seeds/* >build/fuzz/$$name.check 2>&1; \
		then cat build/fuzz/$$name.check; exit 1; fi; \
	done

# Rewrites fuzz_wire's seed corpus (tests/fuzz/wire/) with the encoder.
.PHONY: fuzz-seeds
fuzz-seeds:
	@mkdir -p build/fuzz tests/fuzz/wire
	$(CC) $(WARN) -O1 -g -D_GNU_SOURCE -Iinclude -Isrc -Itests/fuzz \
		-o build/fuzz/gen_wire_seeds tests/fuzz/gen_wire_seeds.c \
		src/process_pool/wire.c src/core/alloc.c
	build/fuzz/gen_wire_seeds tests/fuzz/wire

demo: all $(EXAMPLES)
	@$(BUILD)/examples/demo

# The .pc and the CMake package name the install's paths and version.
CMAKE_FILES = libfutureConfig.cmake libfutureConfigVersion.cmake
SIZEOF_VOID_P = $(shell echo __SIZEOF_POINTER__ | $(CC) -E -P - | tail -n 1)
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	-e 's|@MAJOR@|$(MAJOR)|g' -e 's|@MINOR@|$(MINOR)|g' \
	-e 's|@SIZEOF_VOID_P@|$(SIZEOF_VOID_P)|g'

install: all libfuture.pc.in $(CMAKE_FILES:%=cmake/%.in)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	install -m 644 include/future.h $(DESTDIR)$(INCLUDEDIR)/future.h
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/libfuture.a
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/libfuture.so.$(VERSION)
	ln -sf libfuture.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf libfuture.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfuture.so
	$(SUBST) libfuture.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libfuture.pc
	for f in $(CMAKE_FILES); do \
		$(SUBST) cmake/$$f.in > $(DESTDIR)$(CMAKEDIR)/$$f || exit 1; \
	done
	@if [ -d docs/man ] && ls docs/man/*.3 >/dev/null 2>&1; then \
		install -d $(DESTDIR)$(MANDIR)/man3; \
		for m in docs/man/*.3; do case $$m in \
		*/fut_mpi_*|*/libfuture-mpi.3) ;; \
		*) install -m 644 $$m $(DESTDIR)$(MANDIR)/man3/ || exit 1 ;; \
		esac; done; \
	fi
	@if [ -f $(MPI_SHARED) ]; then \
		set -x; \
		install -m 644 docs/man/fut_mpi_*.3 docs/man/libfuture-mpi.3 \
			$(DESTDIR)$(MANDIR)/man3/; \
		install -m 644 include/future_mpi.h $(DESTDIR)$(INCLUDEDIR)/; \
		install -m 644 $(MPI_STATIC) $(DESTDIR)$(LIBDIR)/; \
		install -m 755 $(MPI_SHARED) $(DESTDIR)$(LIBDIR)/; \
		ln -sf libfuture-mpi.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(MPI_SONAME); \
		ln -sf libfuture-mpi.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfuture-mpi.so; \
		$(MPI_PC_SED) >$(DESTDIR)$(PKGCONFIGDIR)/libfuture-mpi.pc; \
	fi

# make install into a scratch PREFIX, build programs against it with
# pkg-config and with CMake's find_package, run them, make uninstall (not
# part of `make test`; CI runs it inside `make distcheck`).
.PHONY: install-check
install-check:
	sh tests/test_install.sh

# make dist: libfuture-<version>.tar.gz of exactly the files git tracks at
# HEAD (git archive: no build output, nothing untracked; uncommitted
# changes are left out, with a warning).  It runs at the top of a git
# checkout only: an unpacked tarball inside some other checkout (as
# distcheck's is) must not archive that one.  make distcheck unpacks it in
# build/distcheck/, checks it holds exactly those files, runs make test
# and make install-check there, and checks that they wrote nothing outside
# the unpacked tree's build/.
DIST = libfuture-$(VERSION)
DISTCHECK = build/distcheck
.PHONY: dist distcheck
dist:
	@top=$$(git rev-parse --show-toplevel 2>/dev/null) && \
		[ "$$top" = "$$(pwd -P)" ] || { echo "make dist: $$(pwd -P)" \
		"is not the top of a git checkout" >&2; exit 1; }
	@git diff --quiet HEAD -- || echo "make dist: warning: the" \
		"uncommitted changes are not in $(DIST).tar.gz (it is HEAD)" >&2
	git archive --format=tar.gz --prefix=$(DIST)/ -o $(DIST).tar.gz HEAD

distcheck: dist
	rm -rf $(DISTCHECK)
	mkdir -p $(DISTCHECK)
	tar -xzf $(DIST).tar.gz -C $(DISTCHECK)
	git ls-tree -r --name-only HEAD | sort >$(DISTCHECK)/tracked
	cd $(DISTCHECK)/$(DIST) && find . ! -type d | sed 's|^\./||' | sort \
		>../unpacked
	diff -u $(DISTCHECK)/tracked $(DISTCHECK)/unpacked
	$(MAKE) -C $(DISTCHECK)/$(DIST) test
	$(MAKE) -C $(DISTCHECK)/$(DIST) install-check
	cd $(DISTCHECK)/$(DIST) && find . ! -type d ! -path './build/*' | \
		sed 's|^\./||' | sort >../after
	diff -u $(DISTCHECK)/unpacked $(DISTCHECK)/after
	@echo "distcheck: $(DIST).tar.gz: builds, passes make test and" \
		"make install-check"

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/future.h $(DESTDIR)$(LIBDIR)/libfuture.a \
	      $(DESTDIR)$(LIBDIR)/libfuture.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libfuture.so \
	      $(DESTDIR)$(PKGCONFIGDIR)/libfuture.pc \
	      $(CMAKE_FILES:%=$(DESTDIR)$(CMAKEDIR)/%) \
	      $(DESTDIR)$(INCLUDEDIR)/future_mpi.h \
	      $(DESTDIR)$(LIBDIR)/libfuture-mpi.a \
	      $(DESTDIR)$(LIBDIR)/libfuture-mpi.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/$(MPI_SONAME) $(DESTDIR)$(LIBDIR)/libfuture-mpi.so \
	      $(DESTDIR)$(PKGCONFIGDIR)/libfuture-mpi.pc
	@if [ -d docs/man ]; then for m in docs/man/*.3; do \
		[ -e "$$m" ] && rm -f $(DESTDIR)$(MANDIR)/man3/$$(basename $$m); \
	done; fi; true
	@rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null || true

format:
	clang-format -i include/*.h src/*/*.[ch] tests/*.c \
		$(wildcard tests/*.h) $(wildcard tests/mpi/*.[ch]) \
		$(wildcard tests/stress/*.c) $(wildcard tests/fuzz/*.c) \
		$(wildcard examples/*.c) $(wildcard examples/*.cpp) \
		$(wildcard bench/*.c) $(wildcard bench/*.h)

clean:
	rm -rf build

help:
	@echo "targets: all lib test check stress fuzz fuzz-seeds bench demo examples"
	@echo "         install uninstall install-check dist distcheck man clean format"
	@echo "         check-build check-fuzz check-valgrind check-stress"
	@echo "         check-stress-valgrind"
	@echo "         deps deps-mpi mpi test-mpi test-mpich bench-mpi help"
	@echo "variables: PREFIX DESTDIR CC CFLAGS LDFLAGS SANITIZER=address|thread"
	@echo "         MPICC BENCH_ONLY BENCH_RUNS BENCH_MPI_QUICK STRESS_SECONDS"
