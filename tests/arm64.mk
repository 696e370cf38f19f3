# arm64, the ISA of Apple Silicon, executed on Linux under user-mode emulation, and macOS compiles.
#   make test-arm64    cross-compiles for aarch64 Linux (Debian's gcc-aarch64-linux-gnu, clang-19) and runs
#                      under qemu-aarch64: the NEON kernel check (tests/arm64_neon.c), test_quant, the tiny-
#                      model fixtures and the batching tests (short mode), built with the dot-product
#                      extension (clang, qemu -cpu max) and without it (gcc, qemu -cpu cortex-a53, which has
#                      no sdot: a stray dot-product instruction would trap); then logits of the NEON build
#                      (row ops scalar) against the MLLM_NO_SIMD build of the same program, bit for bit.
#   make mac-compile   the header, every example and the C tests compiled for aarch64-macos and
#                      x86_64-macos with zig's cc (PyPI ziglang: macOS libc headers, no Apple SDK), warnings
#                      as errors; the Metal layer is compiled in (__APPLE__) against tests/emu/objc_stub.
A64       := $(BUILD)/arm64
A64_GCC   ?= aarch64-linux-gnu-gcc
A64_CLANG ?= clang-19 --target=aarch64-linux-gnu
QEMU_A64  ?= qemu-aarch64 -L /usr/aarch64-linux-gnu
A64_FLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror -O2 -g -I.
A64_DEPS  := $(HDR) tests/test.h tests/arm64.mk

.PHONY: test-arm64 mac-compile

# $(A64)/<variant>/<prog>: dot = clang +dotprod, base = gcc armv8-a, scalar = MLLM_NO_SIMD,
# exact = NEON weight kernels with the scalar row ops (MLLM__TEST_SCALAR_ROW_OPS)
$(A64)/dot/%: tests/%.c $(A64_DEPS)
	@mkdir -p $(@D)
	$(A64_CLANG) $(A64_FLAGS) -march=armv8.2-a+dotprod -o $@ $< $(LDLIBS)
$(A64)/base/%: tests/%.c $(A64_DEPS)
	@mkdir -p $(@D)
	$(A64_GCC) $(A64_FLAGS) -march=armv8-a -o $@ $< $(LDLIBS)
$(A64)/scalar/%: tests/%.c $(A64_DEPS)
	@mkdir -p $(@D)
	$(A64_GCC) $(A64_FLAGS) -march=armv8.2-a+dotprod -DMLLM_NO_SIMD -o $@ $< $(LDLIBS)
$(A64)/exact/%: tests/%.c $(A64_DEPS)
	@mkdir -p $(@D)
	$(A64_GCC) $(A64_FLAGS) -march=armv8.2-a+dotprod -DMLLM__TEST_SCALAR_ROW_OPS -o $@ $< $(LDLIBS)

# run wrappers for tests/run.sh: $(A64)/run/<cpu>-<variant>-<prog>
$(A64)/run/max-%: FORCE_A64
	@mkdir -p $(@D)
	@printf '#!/bin/sh\nexec $(QEMU_A64) -cpu max $(A64)/%s "$$@"\n' "$$(echo $* | sed 's|-|/|')" > $@ && chmod +x $@
$(A64)/run/a53-%: FORCE_A64
	@mkdir -p $(@D)
	@printf '#!/bin/sh\nexec $(QEMU_A64) -cpu cortex-a53 $(A64)/%s "$$@"\n' "$$(echo $* | sed 's|-|/|')" > $@ && chmod +x $@
.PHONY: FORCE_A64
FORCE_A64:

A64_GROUP1 := max-dot-arm64_neon a53-base-arm64_neon max-dot-test_quant a53-base-test_quant max-scalar-test_quant max-dot-test_model
A64_GROUP2 := a53-base-test_engine
A64_BINS   := dot/arm64_neon base/arm64_neon dot/test_quant base/test_quant scalar/test_quant dot/test_model \
              base/test_engine exact/arm64_logits scalar/arm64_logits

# Two groups run side by side (2 cores); each ends with run.sh's "N passed, N failed".
# the header as C++ for arm64 (syntax only), warnings as errors
$(A64)/cxx.ok: $(HDR) tests/arm64.mk
	@mkdir -p $(@D)
	printf '#define METALLLM_IMPLEMENTATION\n#include "metalllm.h"\n' | $(A64_CLANG) -x c++ -std=c++17 $(WARN) -Werror -O2 -I. -march=armv8.2-a+dotprod -fsyntax-only - && touch $@

test-arm64: $(A64)/cxx.ok $(addprefix $(A64)/,$(A64_BINS)) $(addprefix $(A64)/run/,$(A64_GROUP1) $(A64_GROUP2) max-exact-arm64_logits max-scalar-arm64_logits)
	@rm -f $(A64)/group*.log
	@( MLLM_TEST_SHORT=1 tests/run.sh $(addprefix $(A64)/run/,$(A64_GROUP1)) > $(A64)/group1.log 2>&1; echo $$? > $(A64)/group1.rc ) & \
	 ( BUILD=$(BUILD) MLLM_TEST_SHORT=1 tests/run.sh $(addprefix $(A64)/run/,$(A64_GROUP2)) tests/arm64_logits.sh > $(A64)/group2.log 2>&1; echo $$? > $(A64)/group2.rc ) & \
	 wait
	@cat $(A64)/group1.log $(A64)/group2.log
	@p=0; f=0; for g in 1 2; do l=$$(grep -E '^[0-9]+ passed, [0-9]+ failed' $(A64)/group$$g.log | tail -1); \
	  p=$$((p + $${l%% passed*})); l=$${l#*, }; f=$$((f + $${l%% failed*})); [ "$$(cat $(A64)/group$$g.rc)" = 0 ] || f=$$((f + 1)); done; \
	  echo "arm64 under qemu: $$p passed, $$f failed"; [ $$f -eq 0 ]

# ---- macOS: compile only (no SDK to link against)
ZIGCC      ?= $(PYTHON) -m ziglang cc
MAC_TARGETS := aarch64-macos.11.0 x86_64-macos.10.15
# (the server needs libmicrohttpd and cJSON, which have no macOS headers here)
MAC_SRCS   := $(filter-out examples/server.c,$(wildcard examples/*.c)) $(TEST_SRCS) tests/arm64_neon.c tests/arm64_logits.c
# -O0: clang's warnings come from its front end, at any -O; the header as C++ below is built at -O2
# (x86_64: 13 s a file against 26 s at -O2, for 20 files a target).  The tests with MLLM_STATIC, as make
# builds them: only what each calls is compiled (the front end still checks all of it); the examples
# compile the whole implementation for each target.
MAC_FLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror -O0 -I. -Itests/emu/objc_stub
MAC_OBJS   := $(foreach t,$(MAC_TARGETS),$(patsubst %.c,$(BUILD)/mac/$(t)/%.o,$(filter-out $(if $(findstring x86_64,$(t)),tests/arm64_neon.c),$(MAC_SRCS))))

MAC_CXX_OBJS := $(foreach t,$(MAC_TARGETS),$(BUILD)/mac/$(t)/header-cxx.o)
mac-compile: $(MAC_OBJS) $(MAC_CXX_OBJS)
	@echo "macOS compiles: $(words $(MAC_OBJS)) C objects + the header as C++, $(MAC_TARGETS), warning-free"
$(BUILD)/mac/%/header-cxx.o: $(HDR) tests/arm64.mk
	@mkdir -p $(@D)
	printf '#define METALLLM_IMPLEMENTATION\n#include "metalllm.h"\n' | $(PYTHON) -m ziglang c++ -target $* -x c++ -std=c++17 $(WARN) -Werror -O2 -I. -Itests/emu/objc_stub -c -o $@ -
$(BUILD)/mac/%.o: $(HDR) tests/arm64.mk
	@mkdir -p $(@D)
	$(ZIGCC) -target $(firstword $(subst /, ,$*)) $(MAC_FLAGS) $(if $(findstring /tests/,$@),-DMLLM_STATIC) -c -o $@ $(patsubst $(firstword $(subst /, ,$*))/%,%,$*).c
