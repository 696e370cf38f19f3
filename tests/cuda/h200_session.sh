#!/usr/bin/env bash
# One GPU run on the H200 device machine (see README "NVIDIA GPUs"): everything this project's CUDA
# measurements need, from a staging folder S that the run carries (tests/cuda/stage_h200.sh fills it;
# the branch under test travels as S/wt because a run copies the lead's checkout):
#   S/wt           the branch's files;  S/wbuild.tar.xz  its build/bench (and the bench_nograph /
#                  bench_base twins), build/test_cuda_e2e and build/cuda/test_kernels_*, built on the CPU
#                  machine (clang-19 is not on the GPU machine)
#   S/tiny/*.gguf  tiny models for the e2e test;  S/gguf-py  llama.cpp's gguf package (model writer)
#   S/lc.tar.xz    trimmed llama.cpp sources (built here, ~5 min on 16 cores) or S/lcbin.tar.xz.* (a
#                  build an earlier run sent back)
#   tests/cuda/h200_session.sh S STEPS      STEPS: comma-separated test, bench, ab (default test,bench)
#     test   make test-gpu's runs (SANITIZE=0 skips compute-sanitizer)
#     bench  make bench-gpu's runs on the bench models vs llama.cpp
#     ab     decode at batch 1 and 16 (AB_BATCH) with graphs off / an earlier header or other flags (twin
#            builds: stage_h200.sh BASE_REV, BASE_CFLAGS), alternated
#     prof   ncu's time of every kernel in short decode runs (batch 1 and 16), summed by kernel
#     lcprof the same for llama.cpp's llama-bench (decode only, -ngl 99)
#     gemvprof  ncu's occupancy, launch, memory and warp-stall sections for bench_gemv's decode kernels
#     gemv   bench_gemv (the decode GEMVs alone, Qwen2.5-1.5B's shapes) against bench_gemv_base, alternated
#     gemmprof  the same kind of sections for the prefill GEMMs (Qwen Q4_K_M, 512 tokens)
#     ktimes GPU time per kernel in real decode runs (build/bench_timing --kernel-times: warm caches, real
#            clocks, steps launched kernel by kernel between events), batch 1 and KT_BATCH, KT_MODELS
#     lcbuild  build llama.cpp in the background beside the other steps (also with QBIN's quantize) and
#            send it back as lcbin.tar.xz.* at the end, for a later run's bench
#   TEST_KBINS: the kernel test programs of step test (default build/cuda/test_kernels_*).
#   AB_ARGS: bench's arguments in ab (default -p 64 -n 128 -r 3), AB_BINS, AB_BATCH, AB_REPS, AB_MODELS
#   OURS=0: bench runs llama.cpp's side alone (beside an ab of this build's variants).  LCPACK=0: lcbuild
#   sends nothing back.  MOE=1: also the Qwen3-30B-A3B shape (Q4_0, written directly) in bench.  WT=DIR: the branch's files
#   are DIR (e.g. the carried checkout itself) instead of S/wt.
set -u
S=$(cd "$1" && pwd); STEPS=,${2:-test,bench},; SAN=${SANITIZE:-1}
has() { case $STEPS in *,$1,*) return 0;; esac; return 1; }
O=${OUT:-/tmp/out}; mkdir -p "$O"
W=$(cd "${WT:-$S/wt}" && pwd); M=/tmp/m; LC=/tmp/lc; mkdir -p $M $LC
t0=$(date +%s); el() { echo "[+$(( $(date +%s) - t0 ))s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv
el "start, steps $STEPS"
need_models=0; { has bench || has ab || has prof || has lcprof || has gemmprof || has ktimes; } && need_models=1

# llama.cpp: a carried build, or build it in the background now
LB=$LC/lc/build/bin; LCPID=
Q=$LB/llama-quantize
if [ -x $LB/llama-bench ]; then   # built by an earlier call on this (still warm) machine
  el "llama.cpp build found in $LC"
elif ls "$S"/lcbin.tar.xz.* >/dev/null 2>&1; then
  cat "$S"/lcbin.tar.xz.* | tar xJf - -C $LC; el "llama.cpp build unpacked"
elif [ -f "$S/qbin.tar.xz" ]; then   # a CPU llama-quantize only (no llama.cpp bench in this run)
  mkdir -p $LC/q && tar xJf "$S/qbin.tar.xz" -C $LC/q; Q="env LD_LIBRARY_PATH=$LC/q/bin $LC/q/bin/llama-quantize"
  if has lcbuild; then "$(dirname "$0")/lc_build.sh" "$S/lc.tar.xz" $LC 13 > "$O/lc-build.log" 2>&1 & LCBG=$!; fi
elif [ $need_models = 1 ]; then
  "$(dirname "$0")/lc_build.sh" "$S/lc.tar.xz" $LC 13 > "$O/lc-build.log" 2>&1 &
  LCPID=$!
fi
# bench models: random weights in the real shapes (F16 first, quantized once llama-quantize exists)
have=0; [ -s $M/smol.gguf ] && [ -s $M/qwen-q4km.gguf ] && [ -s $M/qwen-q8.gguf ] && have=1   # an earlier call's
if [ $need_models = 1 ] && [ $have = 0 ]; then
  ( PYTHONPATH=$S/gguf-py python3 "$W/tests/cuda/make_bench_model.py" smollm2-135m $M/smol-f16.gguf &&
    PYTHONPATH=$S/gguf-py python3 "$W/tests/cuda/make_bench_model.py" qwen2.5-1.5b $M/qwen-f16.gguf ) > "$O/models.log" 2>&1 &
  MPID=$!
  if [ "${MOE:-0}" = 1 ]; then
    PYTHONPATH=$S/gguf-py python3 "$W/tests/cuda/make_bench_model.py" qwen3-30b-a3b $M/moe-q4_0.gguf > "$O/moe.log" 2>&1 &
    MOEPID=$!
  fi
fi

cd "$W" && tar xJf "$S/wbuild.tar.xz"
if has test; then
  el "test-gpu (SANITIZE=$SAN)"
  CUDA_KBINS="$(ls ${TEST_KBINS:-build/cuda/test_kernels_*} | tr '\n' ' ')" SANITIZE=$SAN timeout ${TEST_TIMEOUT:-300} \
    tests/cuda/test_gpu.sh build/test_cuda_e2e "$S"/tiny/*.gguf > "$O/test-gpu.log" 2>&1
  rc=$?; echo "test-gpu rc=$rc"
  # a timeout stops test_gpu.sh, not the programs tests/run.sh started: end them, or they share the GPU
  # with the bench that follows (the likely cause of session 7's spoiled SmolLM2 numbers)
  [ $rc = 124 ] && { pkill -f compute-sanitizer; pkill -f build/cuda/test_kernels_; pkill -f test_cuda_e2e; sleep 2; }
  grep -a -E "^(ok|FAIL|  FAIL|  /)|passed|ERROR SUMMARY" "$O/test-gpu.log" | grep -a -v '^ok' | tail -40
  el "test-gpu done"
fi
if [ $need_models != 1 ]; then   # (lcbuild alone: the build stays in $LC for a next call on the warm machine)
  if [ -n "${LCBG:-}" ]; then el "waiting for the llama.cpp build"; wait $LCBG; echo "llama.cpp build rc=$?"; tail -2 "$O/lc-build.log"; fi
  exit 0
fi

if [ $have = 0 ]; then
wait $MPID; el "F16 models written: $(ls $M | tr '\n' ' ')"
if [ -n "$LCPID" ]; then wait $LCPID; echo "llama.cpp build rc=$?"; tail -2 "$O/lc-build.log"; fi
# wait for these three only: a plain wait would also wait for the background llama.cpp build (lcbuild)
$Q $M/smol-f16.gguf $M/smol.gguf Q4_1 14 > /dev/null 2>&1 & Q1=$!
$Q $M/qwen-f16.gguf $M/qwen-q4km.gguf Q4_K_M 14 > /dev/null 2>&1 & Q2=$!
$Q $M/qwen-f16.gguf $M/qwen-q8.gguf Q8_0 14 > /dev/null 2>&1 & Q3=$!
wait $Q1 $Q2 $Q3; el "quantized: $(cd $M && ls -s *.gguf | tr '\n' ' ')"
[ -s $M/smol.gguf ] || cp $M/smol-f16.gguf $M/smol.gguf
[ -s $M/qwen-q4km.gguf ] || { echo "(quantize failed: F16 instead)"; cp $M/qwen-f16.gguf $M/qwen-q4km.gguf; }
fi
if [ -n "$LCPID" ]; then   # send the llama.cpp build back for later runs
  ( cd $LC && tar cf - lc/build/bin | xz -T8 -6 | split -b 15M - "$O/lcbin.tar.xz." )
fi
if [ "${MOE:-0}" = 1 ]; then wait $MOEPID; el "MoE model: $(ls -s $M/moe-q4_0.gguf)"; fi
if has bench; then
  BM="${BENCH_LIST:-$M/smol.gguf $M/qwen-q4km.gguf $M/qwen-q8.gguf}"
  [ "${MOE:-0}" = 1 ] && BM="$BM $M/moe-q4_0.gguf"
  OURS=${OURS:-1} tests/cuda/bench_gpu.sh build $LB $BM 2>&1 | tee "$O/bench.log"
  el "bench done"
fi
if has ab; then   # same file, same run: this build, graphs off, the earlier header; alternated
  for m in ${AB_MODELS:-$M/smol.gguf $M/qwen-q4km.gguf}; do
    for rep in $(seq ${AB_REPS:-2}); do
      for b in ${AB_BINS:-bench bench_nograph bench_base}; do
        printf '%-15s %-15s ' "$b" "$(basename $m)"
        build/$b -m $m --cuda ${AB_ARGS:--p 64 -n 128 -r 3} --batch ${AB_BATCH:-1,16} 2>&1 | grep -E "^prefill|^decode  |batched decode|dispatches per decode|graph launches|GPU decode step" | tr -s ' ' | tr '\n' ' '; echo
      done
    done
  done 2>&1 | tee "$O/ab.log"
  el "ab done"
fi
if has ktimes; then
  for m in ${KT_MODELS:-$M/smol.gguf $M/qwen-q4km.gguf}; do
    echo "== $(basename $m)"
    build/bench_timing -m $m --cuda --kernel-times -p 512 -n 128 -r 1 --batch ${KT_BATCH:-16,64} 2>&1 | grep -v "^ .* 0\.[0-4]%$"
  done 2>&1 | tee "$O/ktimes.log"
  el "ktimes done"
fi
if has prof; then   # ncu replays nothing for one duration metric; graphs are profiled node by node
  for m in ${PROF_MODELS:-$M/smol.gguf $M/qwen-q4km.gguf}; do
    for b in ${PROF_BATCHES:-1 16}; do
      f=$O/prof-$(basename $m .gguf)-b$b.csv
      timeout ${PROF_TIMEOUT:-100} ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-count ${PROF_LAUNCHES:-3000} \
        build/bench -m $m --cuda -p ${PROF_PROMPT:-512} -n 16 -r 1 --batch $b > $f 2> $f.err
      echo "== $(basename $m) batch $b (prefill 512, 16 decode steps, then the batched run)"
      python3 tests/cuda/ncu_summary.py $f 25
    done
  done 2>&1 | tee "$O/prof.log"
  el "prof done"
fi
if has lcprof; then   # llama.cpp's kernels in the same kind of run: llama-bench's decode (its warm-up run first)
  for m in ${PROF_MODELS:-$M/smol.gguf $M/qwen-q4km.gguf}; do
    f=$O/lcprof-$(basename $m .gguf).csv
    timeout ${PROF_TIMEOUT:-100} ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-count ${PROF_LAUNCHES:-3000} \
      $LB/llama-bench -m $m -ngl 99 -p 0 -n 16 -r 1 > $f 2> $f.err
    echo "== llama.cpp $(basename $m) decode (llama-bench -p 0 -n 16 -r 1, after its warm-up)"
    python3 tests/cuda/ncu_summary.py $f 25
  done 2>&1 | tee "$O/lcprof.log"
  el "lcprof done"
fi
if has gemmprof; then   # the prefill GEMMs: occupancy, stalls, pipes (Qwen shape, 512 tokens)
  timeout ${PROF_TIMEOUT:-150} ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section ComputeWorkloadAnalysis -k regex:"${GEMMPROF_K:-^gemm_}" --launch-skip 7 --launch-count ${GEMMPROF_N:-4} \
    build/bench -m $M/qwen-q4km.gguf --cuda -p 512 -n 2 -r 1 --batch 1 > "$O/gemmprof.log" 2>&1
  grep -E "^  [a-z_]+.*\(|Duration|Throughput|Registers Per|Achieved Occ|Theoretical Occ|Block Limit|Waves Per|Stall|Warp Cycles|Issued Ipc|Pipe|Dynamic Shared|Static Shared" "$O/gemmprof.log" | head -150
  el "gemmprof done"
fi
if has gemv; then   # the GEMV kernels alone: this branch's against BASE_REV's, twice each, alternated
  for r in 1 2; do for b in build/bench_gemv build/bench_gemv_base; do
    echo "== $b (pass $r)"; timeout 120 $b
  done; done 2>&1 | tee "$O/gemv.log"
  el "gemv done"
fi
if has gemvprof; then   # why the decode GEMVs stream 0.3-0.8 TB/s: occupancy, stalls, memory
  timeout ${PROF_TIMEOUT:-150} ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis -k regex:"${GEMVPROF_K:-gemv_q4_k|gemv_swiglu_q4_k|gemv_add_q4_k}" \
    --launch-skip 2 --launch-count ${GEMVPROF_N:-3} build/bench_gemv > "$O/gemvprof.log" 2>&1
  grep -E "^  [a-z_]+.*\(|Duration|Throughput|Registers Per|Achieved Occ|Theoretical Occ|Block Limit|Waves Per|Stall|Warp Cycles|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Issued Ipc|Dynamic Shared|Static Shared" "$O/gemvprof.log" | head -150
  el "gemvprof done"
fi
if has lcbuild && [ -n "${LCBG:-}" ]; then
  el "waiting for the llama.cpp build"; wait $LCBG; echo "llama.cpp build rc=$?"; tail -2 "$O/lc-build.log"
  [ "${LCPACK:-1}" = 1 ] && { ( cd $LC && tar cf - lc/build/bin | xz -T8 -6 | split -b 15M - "$O/lcbin.tar.xz." ); el "llama.cpp build packed"; }
fi
