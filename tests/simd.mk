# The x86 SIMD levels chosen at run time.  test_simd runs the models at every level the CPU has and wants
# identical logits from the SIMD levels; test_model_simd0 checks the llama.cpp fixtures on the scalar
# kernels of a SIMD build (MLLM_SIMD_MAX=0; the default build checks them at the best level);
# test_quant_portable is test_quant built with plain -O2 and no -march, as an embedder would.
TEST_BINS += $(BUILD)/test_model_simd0 $(BUILD)/test_quant_portable
all: $(BUILD)/test_model_simd0 $(BUILD)/test_quant_portable
$(BUILD)/test_model_simd0: tests/test_model.c $(HDR) tests/test.h | $(BUILD)
	$(CC) $(ALLCFLAGS) -DMLLM_SIMD_MAX=0 -o $@ $< $(LDLIBS)
$(BUILD)/test_quant_portable: tests/test_quant.c $(HDR) tests/test.h | $(BUILD)
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -O2 -g -I. -o $@ $< $(LDLIBS)
