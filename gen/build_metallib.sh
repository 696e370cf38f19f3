#!/usr/bin/env bash
# On a Mac with Xcode: compiles the kernels (the same concatenated source metalllm.h embeds) into
# gen/kernels.metallib with Apple's compiler, then re-embeds: metalllm.h then carries the .metallib and the
# Metal backend loads it (newLibraryWithData:error:) instead of compiling the source at start-up; the
# source stays embedded as the fallback for a header regenerated without it.
#   gen/build_metallib.sh            build gen/kernels.metallib and embed it
#   gen/build_metallib.sh --clean    remove it and re-embed the source only
# Never run yet (no Mac here). Targets Metal 3.0 (macOS 13+); the kernels need GPU family Apple7.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--clean" ]; then rm -f gen/kernels.metallib; exec gen/embed_kernels.sh; fi
command -v xcrun >/dev/null && xcrun --find metal >/dev/null 2>&1 || { echo "build_metallib: needs Xcode's metal compiler (xcrun metal)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
gen/embed_kernels.sh --print-source > "$tmp/kernels.metal"
# -fno-fast-math: as the source path (the sampler's NaN/Inf bit tests must survive; see metalllm.h)
xcrun -sdk macosx metal -std=metal3.0 -fno-fast-math -c "$tmp/kernels.metal" -o "$tmp/kernels.air"
xcrun -sdk macosx metallib "$tmp/kernels.air" -o gen/kernels.metallib
gen/embed_kernels.sh
echo "gen/kernels.metallib: $(wc -c < gen/kernels.metallib) bytes, embedded into metalllm.h"
