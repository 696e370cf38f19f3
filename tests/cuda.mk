# CUDA backend (see README "NVIDIA GPUs"): the Metal kernels translated by gen/cudac.py, PTX embedded in
# metalllm.h.  make test (no GPU needed) checks the embedded PTX and that the CUDA path builds and refuses
# cleanly without a driver; make test-gpu runs on a machine with an NVIDIA GPU:
#   every emulator kernel test (tests/emu/test_kernels_*.cpp, unchanged) on the GPU, also under
#   compute-sanitizer memcheck and racecheck when present, and the engine on the GPU against the CPU
#   token for token on the tiny models and SmolLM2.
CUDA_B     := $(BUILD)/cuda
CUDA_KT    := $(notdir $(basename $(wildcard tests/emu/test_kernels_*.cpp)))
CUDA_KBINS := $(addprefix $(CUDA_B)/,$(CUDA_KT))
CUDA_CXXFLAGS := -std=c++17 -O1 -g -Itests/emu -I. -Wall -Wextra -Wno-unused-function -Wno-unused-parameter \
                 -Wno-unused-variable -Wno-unused-but-set-variable
GPU_MODELS ?= $(wildcard $(TESTDATA_MODELS)/*.gguf) $(wildcard $(MODEL))
TESTDATA_MODELS ?= ../shared/testdata/tiny/models

# the test sources are copied next to tests/cuda/emu_device.h, so that their #include "emu_device.h" finds it
$(CUDA_B)/src/%.cpp: tests/emu/%.cpp
	@mkdir -p $(@D)
	cp $< $@
$(CUDA_B)/src/emu_device.h: tests/cuda/emu_device.h
	@mkdir -p $(@D)
	cp $< $@
$(CUDA_B)/main.o: tests/emu/main.cpp $(EMU_HOST)
	@mkdir -p $(@D)
	$(EMU_CXX) $(CUDA_CXXFLAGS) -c $< -o $@
$(CUDA_KBINS): $(CUDA_B)/%: $(CUDA_B)/src/%.cpp $(CUDA_B)/src/emu_device.h tests/cuda/msl_cuda.hpp $(HDR) $(EMU_HOST) $(CUDA_B)/main.o
	$(EMU_CXX) $(CUDA_CXXFLAGS) -include tests/cuda/msl_cuda.hpp -o $@ $< $(CUDA_B)/main.o -ldl -lpthread -lm

$(BUILD)/test_cuda_e2e: tests/cuda/test_cuda_e2e.c $(HDR) tests/test.h | $(BUILD)
	$(CC) $(ALLCFLAGS) -o $@ $< $(LDLIBS) -ldl
# run by make test: PTX fresh and accepted by ptxas (the GPU kernel test programs build in make test-gpu)
$(BUILD)/test_cuda_static: tests/cuda/static_checks.sh | $(BUILD)
	cp $< $@ && chmod +x $@
# without a driver the e2e test checks the clean refusal (MLLM_ERR_UNSUPPORTED) on one tiny model
$(BUILD)/test_cuda_nodriver: | $(BUILD)
	printf '#!/bin/sh\nexec $(BUILD)/test_cuda_e2e $(TESTDATA_MODELS)/tiny-llama-Q8_0.gguf\n' > $@ && chmod +x $@
$(BUILD)/test_cuda_nodriver: $(BUILD)/test_cuda_e2e
TEST_BINS += $(BUILD)/test_cuda_nodriver
ifeq ($(EMU_TEST_SAN),)   # (make test-san: the PTX check already ran in make test)
TEST_BINS += $(BUILD)/test_cuda_static
endif

.PHONY: test-gpu bench-gpu cuda
cuda: $(CUDA_KBINS) $(BUILD)/test_cuda_e2e $(BUILD)/bench_timing
# bench with per-kernel GPU times (--kernel-times; steps launched kernel by kernel between events)
$(BUILD)/bench_timing: examples/bench.c $(HDR) | $(BUILD)
	$(CC) $(ALLCFLAGS) -DMLLM__CU_TIMING -o $@ $< $(LDLIBS)
# On a machine with an NVIDIA GPU (driver only).  SANITIZE=0 skips the compute-sanitizer runs.
SANITIZE ?= 1
test-gpu: cuda
	CUDA_KBINS="$(CUDA_KBINS)" SANITIZE=$(SANITIZE) tests/cuda/test_gpu.sh $(BUILD)/test_cuda_e2e $(GPU_MODELS)
# LLAMA_BIN: a llama.cpp CUDA build's bin folder (llama-bench, llama-batched-bench); BENCH_MODELS: GGUFs
LLAMA_BIN ?= peer/bin
BENCH_MODELS ?= $(MODEL)
bench-gpu: $(BUILD)/bench
	tests/cuda/bench_gpu.sh $(BUILD) $(LLAMA_BIN) $(BENCH_MODELS)
