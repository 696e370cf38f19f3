#!/usr/bin/env bash
# Embeds kernels/*.metal (MSL source, one xxd -i byte array) into metalllm.h between the markers
# /* BEGIN GENERATED KERNELS */ and /* END GENERATED KERNELS */ in the Metal backend section.
#   gen/embed_kernels.sh           rewrite metalllm.h
#   gen/embed_kernels.sh --check   exit 1 (and say which) if the embedded copy is stale
#   gen/embed_kernels.sh --print-source   print the concatenated source (what Metal compiles)
# A precompiled gen/kernels.metallib (gen/build_metallib.sh, on a Mac with Xcode) is embedded too when
# present; the Metal backend then loads it instead of compiling the source at start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
HDR=${HDR:-metalllm.h}
BEGIN='/* BEGIN GENERATED KERNELS */'
END='/* END GENERATED KERNELS */'

# All kernels as one MSL source, so one library compiled once at start-up: kernels/common.h (the structs
# and block loaders the kernels share with the host) once, then every kernels/*.metal without its
# #include "common.h" (newLibraryWithSource has no include path).
all_kernels() {
    echo '#include <metal_stdlib>'
    cat kernels/common.h
    for f in kernels/*.metal; do
        [ -e "$f" ] || continue
        printf '\n// ---- %s\n' "$f"
        grep -vxF '#include "common.h"' "$f" || true
    done
}

block() {
    # the host half of kernels/common.h as C: the kernels' parameter structs and launch geometry
    echo "/* kernels/common.h (host part): kernel parameter structs, launch geometry */"
    awk '/^\/\* -+ MSL: per-type block loaders/ { skip = 1 } !skip { print } /^#endif \/\* __METAL_VERSION__ \*\// { skip = 0 }' \
        kernels/common.h
    echo "static const unsigned char mllm__kernels_metal[] = {"
    all_kernels | xxd -i
    echo "};"
    echo "static const mllm__kernel_src mllm__kernel_sources[] = {"
    echo "    {\"kernels.metal\", mllm__kernels_metal, $(all_kernels | wc -c | tr -d ' ')u},"
    echo "    {NULL, NULL, 0}   /* (keeps the array non-empty) */"
    echo "};"
    echo "static const size_t mllm__n_kernel_sources = 1;"
    # the precompiled library, when gen/build_metallib.sh made one on a Mac (the Metal backend prefers it)
    if [ -f gen/kernels.metallib ]; then
        echo "static const unsigned char mllm__kernels_metallib[] = {"
        xxd -i < gen/kernels.metallib
        echo "};"
        echo "static const unsigned char *mllm__kernel_metallib(size_t *n) { *n = sizeof mllm__kernels_metallib; return mllm__kernels_metallib; }"
    else
        echo "static MLLM__UNUSED const unsigned char *mllm__kernel_metallib(size_t *n) { *n = 0; return NULL; }   /* none embedded */"
    fi
}

if [ "${1:-}" = "--print-source" ]; then all_kernels; exit 0; fi   # the one MSL source Metal compiles

grep -qF "$BEGIN" "$HDR" && grep -qF "$END" "$HDR" || { echo "embed_kernels: markers missing in $HDR" >&2; exit 2; }
new=$(mktemp); trap 'rm -f "$new" "$new.blk"' EXIT
block > "$new.blk"
awk -v b="$BEGIN" -v e="$END" -v blk="$new.blk" '
    index($0, b) == 1 { print; while ((getline line < blk) > 0) print line; skip = 1; next }
    index($0, e) == 1 { skip = 0 }
    !skip { print }' "$HDR" > "$new"
if [ "${1:-}" = "--check" ]; then
    if cmp -s "$new" "$HDR"; then echo "embedded kernels up to date"; exit 0; fi
    echo "embedded kernels in $HDR are stale: run gen/embed_kernels.sh" >&2
    diff "$HDR" "$new" | head -5 >&2 || true
    exit 1
fi
cmp -s "$new" "$HDR" || cp "$new" "$HDR"
echo "embedded $(ls kernels/*.metal 2>/dev/null | wc -l) kernel file(s) into $HDR as one source"
