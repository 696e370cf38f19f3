#!/bin/sh
# The weight-type matrix of `make bench`: SmolLM2 requantized from the Q4_1 file by the llama.cpp peer's
# llama-quantize (--allow-requantize), cached in models/ as models/smollm2-TYPE.gguf.  Rows whose width
# (576) is not a multiple of 256 fall back from K-quants to legacy types, as llama.cpp does (Q5_K_M: Q5_1
# rows, Q5_K/Q6_K ffn_down, Q8_0 attn_v).
set -eu
SRC=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
for t in Q4_0 Q8_0 F16 Q4_K_M Q5_K_M Q6_K; do
  f=models/smollm2-$t.gguf
  [ -f "$f" ] && continue
  peer/bin/llama-quantize --allow-requantize "$SRC" "$f.tmp" "$t" 2 >/dev/null 2>&1 && mv "$f.tmp" "$f"
done
