#!/usr/bin/env bash
# make bench: our throughput, then llama.cpp's on the same machine and file (built once from the
# llama-cpp-python sdist on PyPI into peer/), and the ratios.  BENCH_PEER=0 skips the peer.
set -euo pipefail
BUILD=${1:-build}; MODEL=${2:-models/SmolLM2-135M-Instruct.Q4_1.gguf}; T=${BENCH_THREADS:-2}
echo "== metalllm.h (-t $T)"
"$BUILD/bench" -m "$MODEL" -t "$T" -p 128 -n 64 -r 3 | tee "$BUILD/bench.txt"
[ -x "$BUILD/bench_moe" ] && "$BUILD/bench_moe" || true
if [ "${BENCH_PEER:-1}" = 0 ]; then exit 0; fi
echo "== llama.cpp (llama-bench -p 128 -n 64 -t $T)"
tests/peer/build_llamacpp.sh >"$BUILD/peer-build.log" 2>&1 || { echo "peer build failed: see $BUILD/peer-build.log"; exit 0; }
peer/bin/llama-bench -m "$MODEL" -p 128 -n 64 -t "$T" -o csv 2>/dev/null | tee "$BUILD/peer.csv" >/dev/null
pp=$(awk -F, 'NR>1 && $0 ~ /"128","0"/ {gsub(/"/,"",$0); split($0,a,","); print a[length(a)-1]}' "$BUILD/peer.csv" | head -1)
tg=$(awk -F, 'NR>1 && $0 ~ /"0","64"/ {gsub(/"/,"",$0); split($0,a,","); print a[length(a)-1]}' "$BUILD/peer.csv" | head -1)
ours_pp=$(awk '/^prefill/ {print $(NF-1)}' "$BUILD/bench.txt")
ours_tg=$(awk '/^decode/ {print $(NF-1)}' "$BUILD/bench.txt")
echo "llama.cpp prefill: $pp tok/s   decode: $tg tok/s"
python3 - "$ours_pp" "$pp" "$ours_tg" "$tg" <<'PY'
import sys
a, b, c, d = (float(x) if x else 0 for x in sys.argv[1:])
print("ratio metalllm.h / llama.cpp: prefill %.2fx, decode %.2fx" % (a / b if b else 0, c / d if d else 0))
PY
