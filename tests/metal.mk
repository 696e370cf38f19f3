# The header's real Metal backend (its Objective-C layer) on Linux x86-64, over the fake Metal framework
# of tests/metal/ (fake_metal.cpp + objc_msgsend_x86_64.S) executing on the MSL emulator (the kernel
# objects of tests/emu.mk): $(BUILD)/test_metal_objc.  And $(BUILD)/test_metal_sends: every message
# send of the header checked against Apple's metal-cpp signatures (tests/metal/check_sends.py).
# $(BUILD)/test_metal_gpu: tests/metal/test_metal_gpu.c, the plain-C test make mac-check runs on a Mac's
# real Metal, here over the fake.
ifeq ($(shell uname -s)-$(shell uname -m),Linux-x86_64)
METAL_FAKE_FLAGS := -DMLLM__FORCE_METAL_STUBS -Itests/emu/objc_stub -Itests/metal
$(EMU)/metal/fake_metal.o: tests/metal/fake_metal.cpp tests/metal/fake_metal.h $(EMU_DIR)/msl_host.hpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_TEST_SAN) $(METAL_FAKE_FLAGS) -c $< -o $@
$(EMU)/metal/objc_msgsend.o: tests/metal/objc_msgsend_x86_64.S
	@mkdir -p $(@D)
	$(EMU_CXX) -c $< -o $@
$(EMU)/metal/test_metal_objc.o: tests/metal/test_metal_objc.cpp tests/metal/fake_metal.h $(EMU_HOST) $(HDR)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_TEST_SAN) $(METAL_FAKE_FLAGS) -c $< -o $@
$(BUILD)/test_metal_objc: $(EMU)/metal/test_metal_objc.o $(EMU)/metal/fake_metal.o $(EMU)/metal/objc_msgsend.o $(EMU_K_RUN) \
                          $(EMU_K)/runtime.o $(EMU_K)/main.o
	$(EMU_CXX) $(EMU_TEST_SAN) -o $@ $^ -lpthread -lm
# the Mac twin (plain C, as make mac-check builds it) over the same fake
$(EMU)/metal/test_metal_gpu.o: tests/metal/test_metal_gpu.c tests/test.h $(HDR)
	@mkdir -p $(@D)
	$(EMU_CXX) -x c -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror -O1 -g $(EMU_TEST_SAN) $(METAL_FAKE_FLAGS) \
	  -DMLLM_TEST_FAKE_METAL -I. -c $< -o $@
$(BUILD)/test_metal_gpu: $(EMU)/metal/test_metal_gpu.o $(EMU)/metal/fake_metal.o $(EMU)/metal/objc_msgsend.o $(EMU_K_RUN) \
                         $(EMU_K)/runtime.o
	$(EMU_CXX) $(EMU_TEST_SAN) -o $@ $^ -lpthread -lm
TEST_BINS += $(BUILD)/test_metal_objc $(BUILD)/test_metal_gpu
endif
$(BUILD)/test_metal_sends: tests/metal/check_sends.py | $(BUILD)
	printf '#!/bin/sh\nexec $(PYTHON) tests/metal/check_sends.py --self-test "$$@"\n' > $@ && chmod +x $@
ifeq ($(EMU_TEST_SAN),)
TEST_BINS += $(BUILD)/test_metal_sends
endif

# make mac-check: for a Mac owner (Apple silicon, Xcode command-line tools). Builds with the Metal and
# Foundation frameworks (the Makefile adds them on Darwin), runs the C test suite and the real-Metal twin
# of the GPU forward tests (tests/metal/test_metal_gpu.c: GPU logits and greedy tokens vs the CPU on every
# tiny model and SmolLM2, concurrent sequences with a fork; it prints each context's start-up time:
# device, library compile or metallib load, first pipeline), then generation on the GPU and the CPU bench.
# Never run yet (no Mac here); .github/workflows/mac-check.yml runs it on GitHub's macOS arm64 runners.
MAC_TESTS := $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRCS)) $(BUILD)/test_metal_gpu_mac
$(BUILD)/test_metal_gpu_mac: tests/metal/test_metal_gpu.c tests/test.h $(HDR) | $(BUILD)
	$(CC) $(ALLCFLAGS) -o $@ $< $(LDLIBS)
.PHONY: mac-check
mac-check: $(MAC_TESTS) $(BUILD)/generate $(BUILD)/bench $(MODEL)
	@[ "$(UNAME_S)" = Darwin ] || { echo "mac-check needs macOS with Metal (here: make test runs the Metal layer on a fake)"; exit 1; }
	MLLM_MODEL=$(MODEL) tests/run.sh $(MAC_TESTS)
	@echo "== generation on the GPU (load time, prefill and decode tok/s on stderr)"
	$(BUILD)/generate -m $(MODEL) --metal -p "The capital of France is" -n 64
	@echo "== CPU bench"
	$(BUILD)/bench -m $(MODEL)
