# wdeltafs - build, test, demo, bench, install.
# `make` builds build/libwdelta.a and .so, build/wdelta, build/wdeltafs
# (python/wdelta loads build/libwdelta.so in a source tree).
# `make test` builds everything under ASan+UBSan too and runs all tests.
.DEFAULT_GOAL := all
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKGS    := fuse3 libzstd libcrypto libcjson
WERROR  ?= $(if $(CI),-Werror,)
BASEFLAGS := -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wextra $(WERROR) \
             -ffp-contract=off -pthread -Icore
CFLAGS  ?= -O2 -g
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   = $(shell pkg-config --libs check 2>/dev/null)
# the library exports only what core/wdelta.h declares with WD_API
LIB_VISIBILITY := -fvisibility=hidden
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# core/ in one-way layers, each folder using only those listed before it
# (tests/integration/test_layers.sh checks it on the built objects)
CORE_LAYERS := util model codec format legacy delta cache lineage ops
CORE_SRC  := $(foreach l,$(CORE_LAYERS),$(wildcard core/$(l)/*.c))
CORE_HDR  := core/*.h $(foreach l,$(CORE_LAYERS),$(wildcard core/$(l)/*.h))
FS_SRC    := $(wildcard fs/*.c)
UNIT_SRC  := $(wildcard tests/unit/*.c)
TOOLS     := wdelta genmodel
# the wdelta tool: its commands (tools/cmd_*.c) and shared helpers (tools/cli.c;
# tools/json.c: its one JSON writer)
TOOL_SRC  := tools/cli.c tools/json.c $(wildcard tools/cmd_*.c)

# $(1)=build dir, $(2)=extra flags
define buildset
$(1)/core/%.o: core/%.c $$(CORE_HDR) | deps-check
	@mkdir -p $$(@D)
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) -fPIC $$(LIB_VISIBILITY) $$(PKG_CFLAGS) -c $$< -o $$@
$(1)/libwdelta.a: $$(CORE_SRC:%.c=$(1)/%.o)
	rm -f $$@ && ar rcs $$@ $$^
$(1)/libwdelta.so: $$(CORE_SRC:%.c=$(1)/%.o)
	$$(CC) -shared $$(CFLAGS) $(2) -pthread -Wl,-soname,$$(SONAME) $$^ $$(PKG_LIBS) -lm -o $$@
$(1)/wdelta: tools/wdelta.c $$(TOOL_SRC) tools/*.h $(1)/libwdelta.a
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) -Itools $$(PKG_CFLAGS) $$< $$(TOOL_SRC) $(1)/libwdelta.a $$(PKG_LIBS) -lm -o $$@
$(1)/genmodel: tools/genmodel.c $(1)/libwdelta.a
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) $$(PKG_CFLAGS) $$< $(1)/libwdelta.a $$(PKG_LIBS) -lm -o $$@
$(1)/decode_speed: tests/bench/decode_speed.c $(1)/libwdelta.a
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) $$(PKG_CFLAGS) $$< $(1)/libwdelta.a $$(PKG_LIBS) -lm -o $$@
$(1)/chain_read: tests/bench/chain_read.c $(1)/libwdelta.a
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) $$(PKG_CFLAGS) $$< $(1)/libwdelta.a $$(PKG_LIBS) -lm -o $$@
$(1)/wdeltafs: $$(FS_SRC) fs/*.h core/wdelta.h $(1)/libwdelta.a
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) -Ifs $$(PKG_CFLAGS) $$(FS_SRC) $(1)/libwdelta.a $$(PKG_LIBS) -lm -o $$@
$(1)/unit_tests: $$(UNIT_SRC) tests/unit/*.h tests/fuzz/fuzz_common.h $(1)/libwdelta.a
	$$(CC) $$(BASEFLAGS) $$(CFLAGS) $(2) -Itests/unit -Itests/fuzz $$(PKG_CFLAGS) $$(CHECK_CFLAGS) $$(UNIT_SRC) $(1)/libwdelta.a $$(PKG_LIBS) $$(CHECK_LIBS) -lm -o $$@
endef

$(eval $(call buildset,build,))
$(eval $(call buildset,build-asan,$(SAN) -O1))

BINS := build/wdelta build/genmodel build/libwdelta.so $(if $(FS_SRC),build/wdeltafs,)
ASAN_BINS := build-asan/wdelta build-asan/genmodel build-asan/libwdelta.so build-asan/unit_tests $(if $(FS_SRC),build-asan/wdeltafs,)

.PHONY: all deps deps-check test test-unit test-integration test-asan demo bench clean
.PHONY: stress fuzz fuzz-build fuzz-deps
all: $(BINS)

deps:
	@bash tools/deps.sh

# Quiet check before compiling; installs (root) or prints the apt-get line
# and fails.  For `make test` it also covers the packages the tests call
# (getfattr, useradd, numpy...), so a fresh machine's `make test` has them.
# PKG_CFLAGS/CHECK_CFLAGS above are recursive (=): pkg-config runs when a
# recipe runs, after this, so packages installed here are found.
DEPS_TEST := $(if $(filter test test-asan,$(MAKECMDGOALS)),--test,)
deps-check:
	@bash tools/deps.sh --quiet $(DEPS_TEST)

test: all $(ASAN_BINS)
	@bash tools/deps.sh --quiet --test
	@bash tests/run-all.sh

test-asan: test

demo: all
	@bash tools/demo.sh

bench: all build/decode_speed build/chain_read
	@bash tests/bench/run.sh

# ---- fuzzing (libFuzzer + ASan/UBSan; clang installed on demand)
# `make fuzz` builds build-fuzz/fuzz_* and runs each FUZZ_SECONDS seconds
# (FUZZ_TARGETS, FUZZ_JOBS: see tests/fuzz/run.sh); `make fuzz-build` only builds.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_NAMES   := fuzz_safetensors fuzz_v1 fuzz_v2 fuzz_codec
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
                -ffp-contract=off -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread -Wno-unknown-attributes -Icore -Itests/fuzz
FUZZ_PKG_CFLAGS = $(shell pkg-config --cflags libzstd libcrypto libcjson 2>/dev/null)
FUZZ_PKG_LIBS   = $(shell pkg-config --libs libzstd libcrypto libcjson 2>/dev/null)

# clang must link a libFuzzer program; if it cannot, install clang and its
# runtime (libclang-rt-dev: the distribution's default version) through deps.sh.
fuzz-deps:
	@printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }\n' | \
	  $(FUZZ_CC) -x c - -fsanitize=fuzzer,address,undefined -o /dev/null >/dev/null 2>&1 \
	  || EXTRA_PKGS="clang libclang-rt-dev" bash tools/deps.sh
	@bash tools/deps.sh --quiet

build-fuzz/core/%.o: core/%.c $(CORE_HDR) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_PKG_CFLAGS) -c $< -o $@
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(CORE_SRC:%.c=build-fuzz/%.o)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_PKG_CFLAGS) $< $(CORE_SRC:%.c=build-fuzz/%.o) $(FUZZ_PKG_LIBS) -lm -o $@

fuzz-build: $(FUZZ_NAMES:%=build-fuzz/%)
.SECONDARY: $(CORE_SRC:%.c=build-fuzz/%.o)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

stress: all
	@bash tests/stress/run.sh

# install, uninstall, deb, test-deb: tools/install.mk
include tools/install.mk

clean:
	rm -rf build build-asan build-fuzz
