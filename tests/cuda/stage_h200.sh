#!/usr/bin/env bash
# Fills a staging folder for tests/cuda/h200_session.sh (one GPU run carries it; at most 64 MiB travel):
# this checkout's files and its CPU-built GPU test programs (make cuda build/bench first; wbuild.tar.xz), tiny models,
# llama.cpp's gguf package and trimmed llama.cpp sources (from the llama-cpp-python sdist in peer/src).
#   tests/cuda/stage_h200.sh STAGE [LLAMA_BIN_PARTS...]   (parts: lcbin.tar.xz.* an earlier run sent back)
# TINY= / TINY_EXTRA= choose the tiny models (empty: none; the llama.cpp build takes 43 MiB of the 64).
# NOWT=1 leaves out S/wt (the branch's files) for runs with h200_session.sh's WT=. (the checkout carried).
# QBIN=1 adds a CPU llama-quantize (peer/build-*/bin) for runs without a llama.cpp CUDA build.
set -eu
S=$1; shift
R=$(cd "$(dirname "$0")/../.." && pwd)
LCS=$R/peer/src/llama_cpp_python-0.3.36/vendor/llama.cpp
TINY=${TINY-"Q4_0 Q4_1 Q4_K_M Q6_K Q8_0"}
rm -rf "$S/wt" "$S/tiny"; mkdir -p "$S/tiny"
if [ "${NOWT:-0}" != 1 ]; then   # NOWT=1: the run uses the carried checkout itself (h200_session.sh WT=.)
  mkdir -p "$S/wt" && (cd "$R" && git ls-files --cached --others --exclude-standard -z | tar cf - --null -T -) | tar xf - -C "$S/wt"
fi
# twins of the bench for A/B runs in one GPU run: graphs off; BASE_REV's header (default HEAD) built with
# BASE_CFLAGS (e.g. -DMLLM__GPU_FUSE=0), as bench_base and bench_gemv_base (this checkout's bench_gemv.c); TWINS (below)
B=$(mktemp -d); git -C "$R" show "${BASE_REV:-HEAD}:metalllm.h" > "$B/metalllm.h"; git -C "$R" show "${BASE_REV:-HEAD}:examples/bench.c" > "$B/bench.c"
(cd "$R" && ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -I. -DMLLM__CU_GRAPH_MIN=1000000 \
   -o build/bench_nograph examples/bench.c -lm -lpthread &&
 ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native ${BASE_CFLAGS:-} -I"$B" -o build/bench_base "$B/bench.c" -lm -lpthread &&
 ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -I. -o build/bench_gemv tests/cuda/bench_gemv.c -ldl -lm -lpthread &&
 ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native ${BASE_CFLAGS:-} -I"$B" -o build/bench_gemv_base tests/cuda/bench_gemv.c -ldl -lm -lpthread)
rm -rf "$B"
# more twins: TWINS="NAME[@REV]:CFLAGS ..." builds build/bench_NAME from this checkout's header (or REV's)
# with CFLAGS (commas for spaces)
TW=""
for tw in ${TWINS:-}; do
  n=${tw%%:*}; f=$(echo "${tw#*:}" | tr ',' ' '); inc=.
  case $n in *@*) inc=$(mktemp -d); git -C "$R" show "${n#*@}:metalllm.h" > "$inc/metalllm.h"; n=${n%%@*};; esac
  (cd "$R" && ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -I"$inc" $f -o "build/bench_$n" examples/bench.c -lm -lpthread)
  [ "$inc" = . ] || rm -rf "$inc"
  TW="$TW build/bench_$n"
done
(cd "$R" && tar cf - build/bench build/bench_nograph build/bench_base build/bench_gemv build/bench_gemv_base $TW build/test_cuda_e2e build/cuda/test_kernels_*) |
  xz -T1 --lzma2=preset=6,dict=96MiB > "$S/wbuild.tar.xz"   # a dictionary over all of them: each holds the ~4 MB PTX (70 -> 6 MB)
rm -f "$S/qbin.tar.xz"
if [ "${QBIN:-0}" = 1 ]; then
  (cd "$(dirname "$(readlink -f "$R/peer/bin/llama-quantize")")/.." && tar cf - bin/llama-quantize bin/libllama-quantize-impl.so bin/libllama-common.so* \
     bin/libllama.so* bin/libggml-base.so* bin/libggml.so* bin/libggml-cpu.so*) | xz -T2 -6 > "$S/qbin.tar.xz"
fi
for t in $TINY; do cp "$R/../shared/testdata/tiny/models/tiny-llama-$t.gguf" "$S/tiny/"; done
for m in ${TINY_EXTRA-qwen2-Q8_0 qwen3-Q8_0 qwen3moe-Q8_0}; do cp "$R/../shared/testdata/tiny/models/tiny-$m.gguf" "$S/tiny/"; done
[ -d "$S/gguf-py" ] || cp -a "$LCS/gguf-py" "$S/gguf-py"
if [ $# -gt 0 ]; then rm -f "$S"/lcbin.tar.xz.*; cp "$@" "$S/"; fi
if [ ! -f "$S/lc.tar.xz" ] && ! ls "$S"/lcbin.tar.xz.* >/dev/null 2>&1; then   # sources: ggml (CPU, CUDA), src, common, 3 tools
  T=$(mktemp -d); mkdir -p "$T/lc/ggml/src" "$T/lc/tools"
  (cd "$LCS" && cp -a CMakeLists.txt cmake include src common vendor "$T/lc/" &&
   cp -a ggml/CMakeLists.txt ggml/cmake ggml/include "$T/lc/ggml/" &&
   cp -a tools/batched-bench tools/llama-bench tools/quantize "$T/lc/tools/")
  (cd "$LCS/ggml/src" && for f in *; do [ -d "$f" ] && case $f in ggml-cpu|ggml-cuda) ;; *) continue;; esac; cp -a "$f" "$T/lc/ggml/src/"; done)
  printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\nadd_subdirectory(batched-bench)\nadd_subdirectory(llama-bench)\nadd_subdirectory(quantize)\n' > "$T/lc/tools/CMakeLists.txt"
  tar cf - -C "$T" lc | xz -T2 -6 > "$S/lc.tar.xz"; rm -rf "$T"
fi
du -sh "$S"
