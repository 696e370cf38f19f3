# The OpenAI-compatible HTTP server (examples/server.c) needs libmicrohttpd and cJSON; everything
# else builds without them.  `make` builds build/server when pkg-config finds both, and says how to
# get them otherwise.  Targets:
#   build/server          the server
#   build/test_server     the server test (run by make test / make test-san): tests/test_server.py
#                         against a server on loopback, with the openai client from .venv (made by
#                         `make server-venv` from PyPI)
#   make fuzz-server      libFuzzer over the request path (body -> parse -> validation), FUZZ_TIME s
#   make bench-server     16 and 64 streaming clients on SmolLM2, ours and llama.cpp's llama-server
#                         alternating (BENCH_THREADS="1 2" thread counts; BENCH_SERVER_ARGS: more options
#                         of tests/bench_server.py, e.g. --time-limit 90); about 5 minutes at most
SERVER_LIBS := $(shell pkg-config --silence-errors --libs libmicrohttpd libcjson)
SERVER_CFLAGS := $(shell pkg-config --silence-errors --cflags libmicrohttpd libcjson)
SERVER_VENV ?= .venv
SERVER_PY := $(SERVER_VENV)/bin/python
FUZZ_TIME ?= 20
FUZZ_CC ?= clang-19

.PHONY: server-note server-venv fuzz-server bench-server test-tsan-server

ifeq ($(SERVER_LIBS),)
EXAMPLES := $(filter-out $(BUILD)/server,$(EXAMPLES))
all: server-note
server-note:
	@echo "note: build/server skipped: needs libmicrohttpd and cJSON (Debian/Ubuntu: apt-get install libmicrohttpd-dev libcjson-dev pkg-config)"
else
TEST_BINS += $(BUILD)/test_server

$(BUILD)/server: examples/server.c $(HDR) | $(BUILD)
	$(CC) $(ALLCFLAGS) $(SERVER_CFLAGS) -o $@ $< $(LDLIBS) $(SERVER_LIBS)

# A tiny script so tests/run.sh can run it like the other test binaries; it tests the server built
# into the same $(BUILD) (build-san/server under make test-san).
# (sanitizer builds: the tiny model only, --quick).  The openai client comes from $(SERVER_VENV), which
# `make test` creates from PyPI when missing.
$(BUILD)/test_server: tests/test_server.py $(BUILD)/server $(BUILD)/generate | $(BUILD)
	printf '#!/bin/sh\nexec %s tests/test_server.py --build %s --model %s %s "$$@"\n' \
	  "$(abspath $(SERVER_PY))" "$(BUILD)" "$(MODEL)" "$(if $(findstring sanitize,$(CFLAGS)),--quick,)" > $@
	chmod +x $@

$(SERVER_PY):
	$(PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_VENV)/bin/pip install -q openai
server-venv: $(SERVER_PY)
test: server-venv

$(BUILD)/fuzz_server: tests/fuzz_server.c examples/server.c $(HDR) | $(BUILD)
	$(FUZZ_CC) -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -march=native -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -I. $(SERVER_CFLAGS) -o $@ $< $(LDLIBS) $(SERVER_LIBS)

fuzz-server: $(BUILD)/fuzz_server
	mkdir -p $(BUILD)/fuzz-corpus
	cp tests/fuzz_server_seeds/* $(BUILD)/fuzz-corpus/
	$(BUILD)/fuzz_server -max_total_time=$(FUZZ_TIME) -rss_limit_mb=4096 -print_final_stats=1 $(BUILD)/fuzz-corpus

# llama-server is built once into peer/ (PEER_SERVER=1); without it only ours is measured.
bench-server: $(BUILD)/server $(MODEL) $(SERVER_PY)
	PEER_SERVER=1 tests/peer/build_llamacpp.sh > $(BUILD)/peer-server-build.log 2>&1 || echo "llama-server build failed: see $(BUILD)/peer-server-build.log"
	$(SERVER_PY) tests/bench_server.py --server $(BUILD)/server --model $(MODEL) --logdir $(BUILD) $(BENCH_SERVER_ARGS)
bench: bench-server
endif

# The server's threads (connections, engine, the shared request table) under ThreadSanitizer, with the
# concurrent parts of its test (tiny model); make test-tsan runs it after the engine test.
ifneq ($(SERVER_LIBS),)
test-tsan: test-tsan-server
test-tsan-server: $(SERVER_PY)
	mkdir -p build-tsan
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -march=native -fsanitize=thread -I. $(SERVER_CFLAGS) -o build-tsan/server examples/server.c $(LDLIBS) $(SERVER_LIBS)
	printf '#!/bin/sh\nexec %s tests/test_server.py --build build-tsan --threads-only\n' "$(abspath $(SERVER_PY))" > build-tsan/test_server
	chmod +x build-tsan/test_server
	tests/run.sh build-tsan/test_server
endif
