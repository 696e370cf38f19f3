#!/usr/bin/env bash
# One H200 run (see README "NVIDIA GPUs") that builds llama.cpp's CUDA tools in the background (sent back
# as $OUT/lcbin.tar.xz.* for later runs) and meanwhile writes the bench models (CPU llama-quantize from
# S/qbin.tar.xz) and runs the same-run A/B of build/bench vs build/bench_base; then make bench-gpu's
# runs on the Qwen2.5-1.5B Q4_K_M shape against the fresh llama.cpp build.
#   tests/cuda/h200_build_ab.sh S     (S staged by tests/cuda/stage_h200.sh plus QBIN=1's qbin.tar.xz)
set -u
S=$(cd "$1" && pwd); O=${OUT:-/tmp/out}; W=$S/wt; M=/tmp/m; LC=/tmp/lc; mkdir -p $M $LC $O
t0=$(date +%s); el() { echo "[+$(( $(date +%s) - t0 ))s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv
"$(dirname "$0")/lc_build.sh" "$S/lc.tar.xz" $LC 12 > "$O/lc-build.log" 2>&1 &
LCPID=$!
mkdir -p $LC/q && tar xJf "$S/qbin.tar.xz" -C $LC/q
Q="env LD_LIBRARY_PATH=$LC/q/bin $LC/q/bin/llama-quantize"
cd "$W" && tar xJf "$S/wbuild.tar.xz"
PYTHONPATH=$S/gguf-py python3 tests/cuda/make_bench_model.py smollm2-135m $M/smol-f16.gguf > /dev/null 2>&1 &
P1=$!
PYTHONPATH=$S/gguf-py python3 tests/cuda/make_bench_model.py qwen2.5-1.5b $M/qwen-f16.gguf > /dev/null 2>&1
wait $P1; el "F16 models"
$Q $M/smol-f16.gguf $M/smol.gguf Q4_1 4 > /dev/null 2>&1 &
P1=$!
$Q $M/qwen-f16.gguf $M/qwen-q4km.gguf Q4_K_M 6 > /dev/null 2>&1
wait $P1
if [ ! -s $M/qwen-q4km.gguf ] || [ ! -s $M/smol.gguf ]; then   # CPU quantize unusable here: the CUDA build's
  el "CPU quantize failed, waiting for the llama.cpp build"; wait $LCPID; LCPID=
  $LC/lc/build/bin/llama-quantize $M/smol-f16.gguf $M/smol.gguf Q4_1 4 > /dev/null 2>&1
  $LC/lc/build/bin/llama-quantize $M/qwen-f16.gguf $M/qwen-q4km.gguf Q4_K_M 12 > /dev/null 2>&1
fi
el "quantized: $(cd $M && ls -s *.gguf | tr '\n' ' ')"
for rep in 1 2; do
  for m in $M/smol.gguf $M/qwen-q4km.gguf; do
    for b in bench bench_base; do
      printf '%-11s %-15s ' "$b" "$(basename $m)"
      build/$b -m $m --cuda -p 64 -n 128 -r 3 --batch 1,16 2>&1 | grep -E "^decode  |batched decode, 16" | tr -s ' ' | tr '\n' ' '; echo
    done
  done
done > "$O/ab.log" 2>&1
el "ab done (during the llama.cpp build)"; cat "$O/ab.log"
[ -n "$LCPID" ] && wait $LCPID; echo "llama.cpp build rc=$?"; tail -2 "$O/lc-build.log"; el "llama.cpp built"
( cd $LC && tar cf - lc/build/bin | xz -T12 -6 | split -b 15M - "$O/lcbin.tar.xz." ); el "lcbin packed: $(ls -s $O/lcbin* | tr '\n' ' ')"
tests/cuda/bench_gpu.sh build $LC/lc/build/bin $M/qwen-q4km.gguf > "$O/bench.log" 2>&1
el "bench done"
