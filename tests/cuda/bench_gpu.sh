#!/usr/bin/env bash
# make bench-gpu: metalllm.h's CUDA backend against llama.cpp's CUDA build on the same GGUFs, same GPU,
# same run: decode at batch 1, aggregate decode at 16 and 64 sequences, prefill of 512 tokens, and the
# dispatches per decode step (host interface counters).
#   tests/cuda/bench_gpu.sh BUILD_DIR LLAMA_CPP_BIN_DIR MODEL.gguf...
# (On the H200 of this project's measurements the models were random weights in real shapes, written
# by tests/cuda/make_bench_model.py and quantized with llama-quantize; see README.)
set -u
B=$1; L=$2; shift 2
for m in "$@"; do
  echo "=== $(basename "$m")"
  if [ "${OURS:-1}" = 1 ]; then   # (OURS=0: llama.cpp's side alone)
    echo "--- metalllm.h (CUDA)"
    "$B/bench" -m "$m" --cuda -p 512 -n 128 -r 3 --batch 1,16,64 2>&1
  fi
  if [ -x "$L/llama-bench" ]; then
    echo "--- llama.cpp llama-bench (-ngl 99, flash attention auto)"
    "$L/llama-bench" -m "$m" -ngl 99 -p 512 -n 128 -r 3 2>&1 | grep -E "^\|"
    echo "--- llama.cpp llama-batched-bench (prompt 32, 128 generated per sequence)"
    "$L/llama-batched-bench" -m "$m" -ngl 99 -c 16384 -b 2048 -ub 512 -npp 32 -ntg 128 -npl 1,16,64 2>&1 | grep -E "^\|"
  fi
done
