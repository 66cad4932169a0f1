# libfuture: a plain Makefile.  `make help` lists the targets.
# PREFIX, DESTDIR, CC, CFLAGS and LDFLAGS can be overridden;
# SANITIZER=address|thread builds into build/<sanitizer>/.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

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
SRCS := $(wildcard src/*.c)
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

EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLES := $(EXAMPLE_SRCS:examples/%.c=$(BUILD)/examples/%)
BENCH_SRCS := $(wildcard bench/*.c)
BENCHES := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib test check check-asan check-tsan check-valgrind bench demo \
	examples install uninstall clean format help deps fuzz stress check-stress \
	check-stress-valgrind

all: $(STATIC) $(BUILD)/libfuture.so

lib: all

$(BUILD)/obj/%.o: src/%.c include/future.h $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CPPFLAGS) -c -o $@ $<

$(STATIC): $(OBJS)
	rm -f $@
	ar rcs $@ $^

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

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror $(CFLAGS) $(SANFLAGS) -pthread \
		-D_GNU_SOURCE -Iinclude -o $@ $< $(STATIC) -lm

$(BUILD)/bench/%: bench/%.c $(STATIC) $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -O2 -g -pthread -D_GNU_SOURCE \
		-Iinclude -Isrc -o $@ $< $(STATIC) -lm

# Installs libcmocka-dev and pkg-config through apt-get when missing.
deps:
	@sh tests/deps.sh

test: deps
	@$(MAKE) --no-print-directory test-run

.PHONY: test-run
test-run: all $(TESTS) $(EXAMPLES)
	@set -e; for t in $(TESTS); do \
		echo "== $$t"; \
		timeout $(TEST_TIMEOUT) $(TEST_WRAPPER) $$t; \
	done; echo "all tests passed ($(BUILD))"

check: deps
	$(MAKE) --no-print-directory check-build
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

check-stress: all $(BUILD)/stress/stress
	STRESS_SECONDS=$(STRESS_CHECK_SECONDS) timeout $(TEST_TIMEOUT) \
		$(TEST_WRAPPER) $(BUILD)/stress/stress

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
	@sh bench/run.sh $(BUILD)

examples: $(EXAMPLES)

# The man pages are generated from docs/api.md and committed; `make check`
# (tests/check_docs.sh) fails when they drift from it.
.PHONY: man
man:
	rm -f docs/man/*.3
	sh docs/mkman.sh docs/api.md include/future.h README.md docs/man

# libFuzzer targets (clang): tests/fuzz/fuzz_<name>.c with a seed corpus in
# tests/fuzz/<name>/; each runs FUZZ_SECONDS on a scratch copy of its corpus.
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_CFLAGS = -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -pthread \
	      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	      -DFUT__WIRE_GATHER_FIRST=64

build/fuzz/%: tests/fuzz/%.c $(SRCS) include/future.h $(wildcard src/*.h) \
		$(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(SRCS) -lm

fuzz: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
		name=$$(basename $$f); seeds=tests/fuzz/$${name#fuzz_}; \
		work=build/fuzz/corpus-$$name; mkdir -p $$work; \
		[ -d $$seeds ] && cp -n $$seeds/* $$work/ 2>/dev/null || true; \
		echo "== $$name for $(FUZZ_SECONDS) s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=build/fuzz/$$name- $$work; \
	done

# Rewrites fuzz_wire's seed corpus (tests/fuzz/wire/) with the encoder.
.PHONY: fuzz-seeds
fuzz-seeds:
	@mkdir -p build/fuzz tests/fuzz/wire
	$(CC) $(WARN) -O1 -g -D_GNU_SOURCE -Iinclude -Isrc -Itests/fuzz \
		-o build/fuzz/gen_wire_seeds tests/fuzz/gen_wire_seeds.c \
		src/wire.c src/alloc.c
	build/fuzz/gen_wire_seeds tests/fuzz/wire

demo: all $(EXAMPLES)
	@$(BUILD)/examples/demo

install: all libfuture.pc.in
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/future.h $(DESTDIR)$(INCLUDEDIR)/future.h
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/libfuture.a
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/libfuture.so.$(VERSION)
	ln -sf libfuture.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf libfuture.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfuture.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    libfuture.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libfuture.pc
	@if [ -d docs/man ] && ls docs/man/*.3 >/dev/null 2>&1; then \
		install -d $(DESTDIR)$(MANDIR)/man3; \
		install -m 644 docs/man/*.3 $(DESTDIR)$(MANDIR)/man3/; \
	fi

# make install into a scratch PREFIX, build a program with pkg-config
# against it, run it, make uninstall (not part of `make test`; CI runs it).
.PHONY: install-check
install-check:
	sh tests/test_install.sh

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/future.h $(DESTDIR)$(LIBDIR)/libfuture.a \
	      $(DESTDIR)$(LIBDIR)/libfuture.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libfuture.so \
	      $(DESTDIR)$(PKGCONFIGDIR)/libfuture.pc
	@if [ -d docs/man ]; then for m in docs/man/*.3; do \
		[ -e "$$m" ] && rm -f $(DESTDIR)$(MANDIR)/man3/$$(basename $$m); \
	done; fi; true

format:
	clang-format -i include/*.h src/*.c src/*.h tests/*.c $(wildcard tests/*.h) \
		$(wildcard examples/*.c) $(wildcard bench/*.c) $(wildcard bench/*.h)

clean:
	rm -rf build

help:
	@echo "targets: all test check stress fuzz bench demo examples install uninstall install-check man clean format"
