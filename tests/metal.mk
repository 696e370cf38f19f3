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
                          $(EMU)/runtime.o $(EMU)/main.o
	$(EMU_CXX) $(EMU_TEST_SAN) -o $@ $^ -lpthread -lm
# the Mac twin (plain C, as make mac-check builds it) over the same fake
$(EMU)/metal/test_metal_gpu.o: tests/metal/test_metal_gpu.c tests/test.h $(HDR)
	@mkdir -p $(@D)
	$(EMU_CXX) -x c -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror -O1 -g $(EMU_TEST_SAN) $(METAL_FAKE_FLAGS) \
	  -DMLLM_TEST_FAKE_METAL -I. -c $< -o $@
$(BUILD)/test_metal_gpu: $(EMU)/metal/test_metal_gpu.o $(EMU)/metal/fake_metal.o $(EMU)/metal/objc_msgsend.o $(EMU_K_RUN) \
                         $(EMU)/runtime.o
	$(EMU_CXX) $(EMU_TEST_SAN) -o $@ $^ -lpthread -lm
TEST_BINS += $(BUILD)/test_metal_objc $(BUILD)/test_metal_gpu
endif
$(BUILD)/test_metal_sends: tests/metal/check_sends.py | $(BUILD)
	printf '#!/bin/sh\nexec $(PYTHON) tests/metal/check_sends.py --self-test "$$@"\n' > $@ && chmod +x $@
ifeq ($(EMU_TEST_SAN),)
TEST_BINS += $(BUILD)/test_metal_sends
endif
