# The x86 SIMD levels chosen at run time: tests/test_simd.c runs the models at every level the CPU has;
# test_quant_portable is test_quant built with plain -O2 and no -march, as an embedder would build it.
TEST_BINS += $(BUILD)/test_quant_portable
all: $(BUILD)/test_quant_portable
$(BUILD)/test_quant_portable: tests/test_quant.c $(HDR) tests/test.h | $(BUILD)
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -O2 -g -DMLLM_STATIC -I. -o $@ $< $(LDLIBS)
