#!/usr/bin/env bash
# One GPU run on the H200 device machine (see README "NVIDIA GPUs"): everything this project's CUDA
# measurements need, from a staging folder S that the run carries (the working tree's own copy is the
# lead's checkout, so the branch under test travels as S/wt):
#   S/wt           the branch's files;  S/wbuild.tar.xz  its build/bench, build/test_cuda_e2e and
#                  build/cuda/test_kernels_*, built on the CPU machine (clang-19 is not on the GPU machine)
#   S/tiny/*.gguf  tiny models for the e2e test;  S/gguf-py  llama.cpp's gguf package (model writer)
#   S/lc.tar.xz    trimmed llama.cpp sources (built here, ~5 min on 16 cores) or S/lcbin.tar.xz.* (a
#                  build an earlier run sent back)
#   tests/cuda/h200_session.sh S MODE      MODE: test (test-gpu only), bench, all
set -u
S=$(cd "$1" && pwd); MODE=${2:-all}; SAN=${SANITIZE:-1}
O=${OUT:-/tmp/out}; mkdir -p "$O"
W=$S/wt; M=/tmp/m; LC=/tmp/lc; mkdir -p $M $LC
t0=$(date +%s); el() { echo "[+$(( $(date +%s) - t0 ))s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv
el "start, mode $MODE"

# llama.cpp: a carried build, or build it in the background now
LB=$LC/lc/build/bin
if ls "$S"/lcbin.tar.xz.* >/dev/null 2>&1; then
  cat "$S"/lcbin.tar.xz.* | tar xJf - -C $LC; el "llama.cpp build unpacked"; LCPID=
elif [ "$MODE" != test ]; then
  tar xJf "$S/lc.tar.xz" -C $LC
  G=; command -v ninja >/dev/null && G="-G Ninja"
  ( cd $LC/lc && cmake -S . -B build $G -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF &&
    cmake --build build -j 13 --target llama-bench llama-batched-bench llama-quantize ) > "$O/lc-build.log" 2>&1 &
  LCPID=$!
fi
# bench models: random weights in the real shapes (F16 first, quantized once llama-quantize exists)
if [ "$MODE" != test ]; then
  ( PYTHONPATH=$S/gguf-py python3 "$W/tests/cuda/make_bench_model.py" smollm2-135m $M/smol-f16.gguf &&
    PYTHONPATH=$S/gguf-py python3 "$W/tests/cuda/make_bench_model.py" qwen2.5-1.5b $M/qwen-f16.gguf ) > "$O/models.log" 2>&1 &
  MPID=$!
fi

cd "$W" && tar xJf "$S/wbuild.tar.xz"
if [ "$MODE" != bench ]; then
  el "test-gpu (SANITIZE=$SAN)"
  CUDA_KBINS="$(ls build/cuda/test_kernels_* | tr '\n' ' ')" SANITIZE=$SAN timeout ${TEST_TIMEOUT:-300} \
    tests/cuda/test_gpu.sh build/test_cuda_e2e "$S"/tiny/*.gguf > "$O/test-gpu.log" 2>&1
  echo "test-gpu rc=$?"; grep -E "passed|FAIL|TOTAL|failed" "$O/test-gpu.log" | tail -40
  el "test-gpu done"
fi
[ "$MODE" = test ] && exit 0

wait $MPID; el "F16 models written: $(ls $M)"
if [ -n "${LCPID:-}" ]; then wait $LCPID; echo "llama.cpp build rc=$?"; tail -3 "$O/lc-build.log"; fi
el "llama.cpp ready"
Q=$LB/llama-quantize
$Q $M/smol-f16.gguf $M/smol.gguf Q4_1 14 > /dev/null 2>&1 &
$Q $M/qwen-f16.gguf $M/qwen-q4km.gguf Q4_K_M 14 > /dev/null 2>&1 &
$Q $M/qwen-f16.gguf $M/qwen-q8.gguf Q8_0 14 > /dev/null 2>&1 &
wait; ls -la $M; el "quantized"
if ! ls "$S"/lcbin.tar.xz.* >/dev/null 2>&1; then   # send the llama.cpp build back
  ( cd $LC && tar cf - lc/build/bin | xz -T8 -6 | split -b 15M - "$O/lcbin.tar.xz." ); ls -la "$O"
fi
BM="${BENCH_LIST:-$M/smol.gguf $M/qwen-q4km.gguf $M/qwen-q8.gguf}"
tests/cuda/bench_gpu.sh build $LB $BM 2>&1 | tee "$O/bench.log"
el "bench done"
