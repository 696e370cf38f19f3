# Hostile input and faults (issue 18): the allocation-failure sweep, parameter checks, the generate CLI,
# the multi-sequence stress test; `make stress` runs the stress test long, `make fuzz` the fuzzers.
HOSTILE_BINS := $(BUILD)/test_generate_cli
TEST_BINS += $(HOSTILE_BINS)
all: $(HOSTILE_BINS)

# The generate CLI test is a script installed next to the generate binary it runs.
$(BUILD)/test_generate_cli: tests/generate_cli.sh $(BUILD)/generate | $(BUILD)
	cp $< $@ && chmod +x $@

# The thread pool (late workers, task accounting) under ThreadSanitizer, with `make test-tsan`.
test-tsan: test-tsan-hostile
test-tsan-hostile:
	mkdir -p build-tsan
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -march=native -fsanitize=thread -I. -o build-tsan/test_hostile tests/test_hostile.c $(LDLIBS)
	tests/run.sh build-tsan/test_hostile

# The stress test, long: 5000 random steps (dense) and 2500 (MoE) instead of the suite's 300 and 150.
STRESS_STEPS ?= 5000
.PHONY: stress
stress: $(BUILD)/test_stress
	$(BUILD)/test_stress $(STRESS_STEPS)

# Thread pool under contention (README "Hostile input and faults"): idle vs every core busy.
CONTENTION_MODEL ?= $(MODEL)
.PHONY: contention
contention: $(BUILD)/generate
	tests/contention.sh $(CONTENTION_MODEL) $(BUILD)/generate
