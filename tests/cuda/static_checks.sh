#!/usr/bin/env bash
# CUDA backend checks that need no GPU (run by make test; CI has no GPU):
#   1. the PTX embedded in metalllm.h is what gen/cudac.py makes of kernels/*.metal now (not stale)
#   2. the header's unpacker (mllm__cuda_ptx_unpack, through tests/cuda/ptx_dump.c, built with MLLM_STATIC:
#      1 s instead of 16, as it compiles only what it calls) gives back exactly
#      that PTX
#   3. ptxas accepts what the header gives the driver for sm_90 (the H200), as the driver's JIT will
# Needs clang-19 (as the emulator) and the CUDA toolkit (libdevice, ptxas); without the toolkit the
# checks are reported as skipped.
for d in "$PWD" "$(dirname "$0")/.." "$(dirname "$0")/../.."; do   # the repository (make test runs from it)
  [ -f "$d/gen/cudac.py" ] && { cd "$d"; break; }
done
CUDA=${CUDA_PATH:-/usr/local/cuda}
p=0; f=0
# the timing twin of bench (-DMLLM__CU_TIMING, make cuda's bench_timing) compiles warning-free (no toolkit needed)
if ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Werror -I. -DMLLM__CU_TIMING -fsyntax-only examples/bench.c; then
  echo "ok   bench's CUDA timing build compiles"; p=$((p+1))
else echo "FAIL bench's CUDA timing build"; f=$((f+1)); fi
if [ ! -f "$CUDA/nvvm/libdevice/libdevice.10.bc" ] || [ ! -x "$CUDA/bin/ptxas" ]; then
  echo "skipped: no CUDA toolkit at $CUDA (set CUDA_PATH)"; echo "$p passed, $f failed"; [ $f -eq 0 ]; exit
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if CUDA_PATH=$CUDA python3 gen/cudac.py --check --ptx "$tmp/k.ptx"; then echo "ok   embedded PTX up to date"; p=$((p+1))
else echo "FAIL embedded PTX stale (run gen/cudac.py)"; f=$((f+1)); fi
if ${CC:-cc} -std=c11 -O1 -w -DMLLM_STATIC -I. tests/cuda/ptx_dump.c -o "$tmp/ptx_dump" -lm -lpthread -ldl &&
   "$tmp/ptx_dump" > "$tmp/h.ptx" && [ -s "$tmp/k.ptx" ] && cmp -s "$tmp/k.ptx" "$tmp/h.ptx"; then
  echo "ok   the header unpacks the PTX exactly ($(wc -c < "$tmp/h.ptx") bytes)"; p=$((p+1))
else echo "FAIL the PTX unpacked from metalllm.h differs from gen/cudac.py's"; f=$((f+1)); fi
if [ -s "$tmp/h.ptx" ] && "$CUDA/bin/ptxas" -arch=sm_90 "$tmp/h.ptx" -o "$tmp/k.cubin"; then echo "ok   ptxas sm_90"; p=$((p+1))
else echo "FAIL ptxas sm_90"; f=$((f+1)); fi
echo "$p passed, $f failed"
[ $f -eq 0 ]
