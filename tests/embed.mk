# What a program embedding metalllm.h relies on (linkage macro, version, includes, MSVC refusal,
# Windows compile, the README's list of programs): tests/embed_checks.sh, run as a test.  Not rerun by
# make test-san (it instruments nothing).
ifeq ($(EMU_TEST_SAN),)
TEST_BINS += $(BUILD)/test_embed
endif
$(BUILD)/test_embed: tests/embed_checks.sh | $(BUILD)
	cp $< $@ && chmod +x $@
all: $(BUILD)/test_embed
