# What a program embedding metalllm.h relies on (linkage macro, version, includes, MSVC refusal,
# Windows compile): tests/embed_checks.sh, run as a test.
TEST_BINS += $(BUILD)/test_embed
$(BUILD)/test_embed: tests/embed_checks.sh | $(BUILD)
	cp $< $@ && chmod +x $@
