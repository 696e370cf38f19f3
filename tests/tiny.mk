# Tiny random models that ../shared/testdata/tiny lacks (architectures gemma3, phi3, llama with
# rope_freqs; weight types Q2_K, Q3_K, IQ4_NL, IQ4_XS), written by tests/gen_tiny.c at test time, the
# same bytes on every machine; llama.cpp's outputs on them are in tests/fixtures/tiny-extra.
TINY_EXTRA := $(BUILD)/tiny-extra
TINY_VOCAB ?= $(or $(MLLM_TESTDATA),../shared/testdata)/tiny/models/tiny-llama-F32.gguf
.PHONY: tiny-extra
# Fixed flags, whatever the build's: the bytes must not depend on the compiler fusing a * b + c.
$(BUILD)/gen_tiny: tests/gen_tiny.c | $(BUILD)
	$(CC) -std=c11 -O2 -ffp-contract=off -Wall -Wextra -o $@ $<
tiny-extra: $(BUILD)/gen_tiny
	@mkdir -p $(TINY_EXTRA)
	@for m in $$($(BUILD)/gen_tiny --list); do $(BUILD)/gen_tiny $(TINY_VOCAB) $(TINY_EXTRA)/$$m.gguf $$m || exit 1; \
	  (cd $(TINY_EXTRA) && sha256sum -c --quiet $(CURDIR)/tests/fixtures/tiny-extra/$$m/sha256) || \
	  { echo "$(TINY_EXTRA)/$$m.gguf differs from the file of tests/fixtures/tiny-extra/$$m"; exit 1; }; done
all: $(BUILD)/gen_tiny
test: tiny-extra
test-arm64: tiny-extra
export MLLM_BUILD := $(BUILD)
