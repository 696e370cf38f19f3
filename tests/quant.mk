# test_quant again with the scalar kernels only (MLLM_NO_SIMD), so both paths meet the references.
TEST_BINS += $(BUILD)/test_quant_scalar
all: $(BUILD)/test_quant_scalar
$(BUILD)/test_quant_scalar: tests/test_quant.c $(HDR) tests/test.h | $(BUILD)
	$(CC) $(ALLCFLAGS) -DMLLM_STATIC -DMLLM_NO_SIMD -o $@ $< $(LDLIBS)
