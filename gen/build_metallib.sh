#!/usr/bin/env bash
# On a Mac with Xcode: compiles the kernels (the same joined source the Metal layer would compile,
# mllm__kernel_source_joined) into a .metallib with Apple's compiler and writes it into metalllm.h's
# METALLIB region (see gen/README.md): an array of its bytes and mllm__kernel_metallib returning them.
# The Metal layer then loads it (newLibraryWithData:error:) instead of compiling the source at start-up;
# the source stays embedded. The region records the SHA-256 of the source it was built from.
#   gen/build_metallib.sh            build and embed
#   gen/build_metallib.sh --clean    put back the accessor that returns NULL (source only)
# Never run yet (no Mac here). Metal 3.0 (macOS 13+); the kernels need GPU family Apple7 (M1 on).
set -euo pipefail
cd "$(dirname "$0")/.."
HDR=${HDR:-metalllm.h}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
none='static MLLM__UNUSED const unsigned char *mllm__kernel_metallib(size_t *n) { *n = 0; return NULL; }   /* none embedded */'
if [ "${1:-}" = "--clean" ]; then
    echo "$none" > "$tmp/blk"
else
    command -v xcrun >/dev/null && xcrun --find metal >/dev/null 2>&1 || { echo "build_metallib: needs Xcode's metal compiler (xcrun metal)" >&2; exit 1; }
    for f in kernels/common.h kernels/*.metal; do   # the joined source (build/test_emu_static checks this equals the header's)
        printf '#line 1 "%s"\n' "$f"
        sed 's|^#include "common.h"$|// #include "common.h": embedded before this file|' "$f"
    done > "$tmp/kernels.metal"
    # -fno-fast-math: as the source path (the sampler's NaN/Inf bit tests must survive; see metalllm.h)
    xcrun -sdk macosx metal -std=metal3.0 -fno-fast-math -c "$tmp/kernels.metal" -o "$tmp/kernels.air"
    xcrun -sdk macosx metallib "$tmp/kernels.air" -o "$tmp/kernels.metallib"
    {
        echo "/* kernels.metallib, built by gen/build_metallib.sh from the joined kernel source of SHA-256"
        echo "   $(shasum -a 256 < "$tmp/kernels.metal" | cut -d' ' -f1) (rebuild whenever kernels/ changes) */"
        echo "static const unsigned char mllm__kernels_metallib[] = {"
        xxd -i < "$tmp/kernels.metallib"
        echo "};"
        echo "static const unsigned char *mllm__kernel_metallib(size_t *n) { *n = sizeof mllm__kernels_metallib; return mllm__kernels_metallib; }"
    } > "$tmp/blk"
fi
b='/* BEGIN GENERATED METALLIB */' e='/* END GENERATED METALLIB */'
[ "$(grep -cxF "$b" "$HDR")" = 1 ] && [ "$(grep -cxF "$e" "$HDR")" = 1 ] || { echo "build_metallib: METALLIB markers missing in $HDR" >&2; exit 2; }
awk -v b="$b" -v e="$e" -v blk="$tmp/blk" '
    $0 == b { print; while ((getline line < blk) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$HDR" > "$tmp/new"
cp "$tmp/new" "$HDR"
echo "build_metallib: METALLIB region of $HDR rewritten"
