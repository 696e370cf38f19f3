# libFuzzer targets (tests/fuzz/): `make fuzz FUZZ_SECONDS=N` builds them with clang-19 under ASan+UBSan,
# makes their seed corpora from the test data and runs each for N seconds (default 60).
FUZZ_CC      ?= clang-19
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_TARGETS := gguf_model vocab tokenize chat detok_stream
FUZZ_BINS    := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_TARGETS))
TESTDATA     ?= ../shared/testdata

.PHONY: fuzz fuzz-build
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do tests/fuzz/run.sh $(FUZZ_BUILD) $$t $(FUZZ_SECONDS) || exit 1; done

fuzz-build: $(FUZZ_BINS)
	rm -rf $(FUZZ_BUILD)/seeds
	$(PYTHON) tests/fuzz/seeds.py $(TESTDATA) $(FUZZ_BUILD)/seeds

# one binary (the header compiled once), started under each target's name
$(FUZZ_BUILD)/fuzz: tests/fuzz/*.c tests/fuzz/fuzz_common.h $(HDR)
	mkdir -p $(FUZZ_BUILD)
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -O1 -g -march=native -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  $(WARN) -I. -o $@ tests/fuzz/fuzz.c $(LDLIBS)
$(FUZZ_BINS): $(FUZZ_BUILD)/fuzz
	ln -sf fuzz $@
