#!/usr/bin/env bash
# llama.cpp's CUDA tools for the H200 comparisons (README "NVIDIA GPUs"): unpacks the trimmed sources that
# tests/cuda/stage_h200.sh packs (lc.tar.xz) into DIR and builds llama-bench, llama-batched-bench and
# llama-quantize into DIR/lc/build/bin (about 5 min on the H200 machine's 16 cores).
#   tests/cuda/lc_build.sh lc.tar.xz DIR JOBS
set -eu
tar xJf "$1" -C "$2"
G=; command -v ninja >/dev/null && G="-G Ninja"
cd "$2/lc"
cmake -S . -B build $G -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
cmake --build build -j "$3" --target llama-bench llama-batched-bench llama-quantize
