# MSL emulator suite (README.md, "The MSL emulator"): kernels/*.metal are translated to C++
# by tests/emu/mslc.py, compiled with clang-19 against tests/emu/include (the metal_stdlib shim) and
# run on the CPU by tests/emu/runtime.cpp. Every tests/emu/test_NAME.cpp becomes two programs, each
# linking all kernels (kernels/*.metal and tests/emu/planted/*.metal):
#   $(BUILD)/test_NAME       plain
#   $(BUILD)/test_NAME_tsan  kernels and test under ThreadSanitizer (races between kernel threads)
# plus two scripts run as tests:
#   $(BUILD)/test_emu_check  CHECK mode: every kernel type-checks with device/constant/threadgroup as
#                            distinct address spaces; the planted mismatch must fail to compile
#   $(BUILD)/test_emu_static embedded kernels up to date; Metal host code compiles on ObjC stubs
EMU_CXX  ?= clang++-19
EMU      := $(BUILD)/emu
# the generated kernels, their objects, the runtime and main (nothing of them depends on the build's
# flags): make test-san links make test's (EMU_K=build/emu) instead of compiling them again
EMU_K    := $(EMU)
EMU_DIR  := tests/emu
EMU_FLAGS := -std=c++17 -O1 -g -Xclang -ffloat16-excess-precision=none -Xclang -fbfloat16-excess-precision=none \
             -I$(EMU_DIR)/include -I$(EMU_DIR) -I. -Wall -Wextra -Wno-unused-function -Wno-unused-parameter \
             -Wno-unknown-attributes -Wno-unused-variable -Wno-unused-but-set-variable -Wno-gcc-compat
# the kernels at -O2, with FMA and F16C instructions where the CPU has them: fmaf, simdgroup_matrix's fma
# and half conversions were library calls (a third of test_kernels_gemv's CPU time); -ffp-contract=off
# keeps every result bit for bit (no a * b + c fused that was not before)
EMU_KFLAGS := -O2 -ffp-contract=off $(if $(shell grep -qw fma /proc/cpuinfo 2>/dev/null && grep -qw f16c /proc/cpuinfo && echo y),-mfma -mf16c)
EMU_TSAN := -fsanitize=thread -DMSL_TSAN_BUILD
EMU_SHIM := $(EMU_DIR)/include/metal_shim.hpp $(EMU_DIR)/include/msl_common.hpp $(EMU_DIR)/include/msl_rt.hpp
EMU_HOST := $(EMU_DIR)/msl_host.hpp $(EMU_DIR)/emu_test.hpp $(wildcard $(EMU_DIR)/*.h)

# bad_*.metal are planted compile errors: never linked, compiled by the self-test to see them fail
EMU_METAL := $(wildcard kernels/*.metal) $(filter-out $(EMU_DIR)/planted/bad_%,$(wildcard $(EMU_DIR)/planted/*.metal))
EMU_GEN   := $(patsubst %.metal,$(EMU_K)/gen/%.cpp,$(EMU_METAL))
EMU_TESTS := $(wildcard $(EMU_DIR)/test_*.cpp)
EMU_K_RUN := $(patsubst $(EMU_K)/gen/%.cpp,$(EMU_K)/run/%.o,$(EMU_GEN))
EMU_K_TSAN := $(patsubst $(EMU_K)/gen/%.cpp,$(EMU_K)/tsan/%.o,$(EMU_GEN))

.PRECIOUS: $(EMU_K)/gen/%.cpp
$(EMU_K)/gen/%.cpp: %.metal $(EMU_DIR)/mslc.py
	@mkdir -p $(@D)
	$(PYTHON) $(EMU_DIR)/mslc.py $< -o $@ --dep $@.d --cxx $(EMU_CXX)
-include $(patsubst %.cpp,%.cpp.d,$(EMU_GEN))

$(EMU_K)/run/%.o: $(EMU_K)/gen/%.cpp $(EMU_SHIM)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_KFLAGS) -c $< -o $@
$(EMU_K)/tsan/%.o: $(EMU_K)/gen/%.cpp $(EMU_SHIM)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_KFLAGS) $(EMU_TSAN) -c $< -o $@
# test sources (kernel tests and self-tests), once per build.  make test-san sets EMU_TEST_SAN: the test
# code and the metalllm.h host code it includes (GPU forward, encoders) then run under ASan+UBSan; the
# kernels and the fiber runtime stay uninstrumented (they run on fiber stacks).
# MLLM_STATIC: the implementation's public functions are static, so each program compiles only the part
# of metalllm.h it calls (a kernel test: 2 s instead of 18, as every public function and all they reach
# were compiled into each of the 20 objects)
EMU_TEST_FLAGS := -DMLLM_STATIC
$(EMU)/run/%.o: %.cpp $(EMU_HOST) $(HDR)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_TEST_FLAGS) $(EMU_TEST_SAN) -c $< -o $@
$(EMU)/tsan/%.o: %.cpp $(EMU_HOST) $(HDR)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_TEST_FLAGS) $(EMU_TSAN) -c $< -o $@
# the runtime is never instrumented (the TSan build only adds fiber / happens-before annotations)
$(EMU_K)/runtime.o: $(EMU_DIR)/runtime.cpp $(EMU_DIR)/msl_host.hpp $(EMU_SHIM)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) -O2 -c $< -o $@
$(EMU_K)/runtime_tsan.o: $(EMU_DIR)/runtime.cpp $(EMU_DIR)/msl_host.hpp $(EMU_SHIM)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) -O2 -DMSL_TSAN -c $< -o $@
$(EMU_K)/main.o: $(EMU_DIR)/main.cpp $(EMU_HOST)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) -c $< -o $@
$(EMU_K)/main_tsan.o: $(EMU_DIR)/main.cpp $(EMU_HOST)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_TSAN) -c $< -o $@

# one program per test file (each may #define METALLLM_IMPLEMENTATION), all kernels linked into each
EMU_NAMES := $(notdir $(basename $(EMU_TESTS)))
EMU_RUN_BINS := $(addprefix $(BUILD)/,$(EMU_NAMES))
EMU_TSAN_BINS := $(addsuffix _tsan,$(EMU_RUN_BINS))
$(EMU_RUN_BINS): $(BUILD)/%: $(EMU)/run/tests/emu/%.o $(EMU_K_RUN) $(EMU_K)/runtime.o $(EMU_K)/main.o
	$(EMU_CXX) $(EMU_TEST_SAN) -o $@ $^ -lpthread -lm
$(EMU_TSAN_BINS): $(BUILD)/%_tsan: $(EMU)/tsan/tests/emu/%.o $(EMU_K_TSAN) $(EMU_K)/runtime_tsan.o $(EMU_K)/main_tsan.o
	$(EMU_CXX) -fsanitize=thread -o $@ $^ -lpthread -lm
# static checks, run as a test: embedded kernels fresh, Metal host code compiles (C and C++) on stubs
$(BUILD)/test_emu_static: $(EMU_DIR)/static_checks.sh | $(BUILD)
	cp $< $@ && chmod +x $@
$(BUILD)/test_emu_check: $(EMU_DIR)/check_mode.sh | $(BUILD)
	cp $< $@ && chmod +x $@

EMU_BINS := $(EMU_RUN_BINS) $(EMU_TSAN_BINS) $(BUILD)/test_emu_check $(BUILD)/test_emu_static
ifneq ($(EMU_TEST_SAN),)   # the sanitizer build: the TSan twins and script checks already ran in make test
# and so did the kernel tests: their kernels are not instrumented here (the emulator's guard pages check
# them in make test), only the programs that run metalllm.h's host code are
EMU_BINS := $(filter-out $(BUILD)/test_kernels_%,$(EMU_RUN_BINS))
endif
TEST_BINS += $(EMU_BINS)
.PHONY: emu
emu: $(EMU_BINS)
