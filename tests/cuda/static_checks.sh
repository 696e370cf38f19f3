#!/usr/bin/env bash
# CUDA backend checks that need no GPU (run by make test; CI has no GPU):
#   1. the PTX embedded in metalllm.h is what gen/cudac.py makes of kernels/*.metal now (not stale)
#   2. ptxas accepts it for sm_90 (the H200) as the driver's JIT will
# Needs clang-19 (as the emulator) and the CUDA toolkit (libdevice, ptxas); without the toolkit the
# checks are reported as skipped.
for d in "$PWD" "$(dirname "$0")/.." "$(dirname "$0")/../.."; do   # the repository (make test runs from it)
  [ -f "$d/gen/cudac.py" ] && { cd "$d"; break; }
done
CUDA=${CUDA_PATH:-/usr/local/cuda}
p=0; f=0
if [ ! -f "$CUDA/nvvm/libdevice/libdevice.10.bc" ] || [ ! -x "$CUDA/bin/ptxas" ]; then
  echo "skipped: no CUDA toolkit at $CUDA (set CUDA_PATH)"; echo "0 passed, 0 failed"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if CUDA_PATH=$CUDA python3 gen/cudac.py --check --ptx "$tmp/k.ptx"; then echo "ok   embedded PTX up to date"; p=$((p+1))
else echo "FAIL embedded PTX stale (run gen/cudac.py)"; f=$((f+1)); fi
if [ -s "$tmp/k.ptx" ] && "$CUDA/bin/ptxas" -arch=sm_90 "$tmp/k.ptx" -o "$tmp/k.cubin"; then echo "ok   ptxas sm_90"; p=$((p+1))
else echo "FAIL ptxas sm_90"; f=$((f+1)); fi
echo "$p passed, $f failed"
[ $f -eq 0 ]
