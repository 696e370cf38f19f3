# The x86 SIMD levels chosen at run time: test_simd runs the models at every level and wants identical
# logits from the SIMD levels; test_model_simd0 checks the llama.cpp fixtures on the scalar kernels of a
# SIMD build (MLLM_SIMD_MAX=0; the default build checks them at the best level the CPU has).
TEST_BINS += $(BUILD)/test_model_simd0
all: $(BUILD)/test_model_simd0
$(BUILD)/test_model_simd0: tests/test_model.c $(HDR) tests/test.h | $(BUILD)
	$(CC) $(ALLCFLAGS) -DMLLM_SIMD_MAX=0 -o $@ $< $(LDLIBS)
