#!/usr/bin/env bash
# Pastes kernels/ into metalllm.h, in two generated regions (between BEGIN/END marker comments):
#   KERNEL PARAMS  (in the GPU host interface, before the encoders): the host part of kernels/common.h,
#                  i.e. everything before its MSL-only block: launch geometry, the weight-type list
#                  MLLM__GPU_TYPES and the kernels' parameter structs, compiled as C by the host code.
#   KERNELS        (at the end of the implementation, in the Metal backend's #if): every kernel file as
#                  a C string, one adjacent literal per source line, so a single-header user can read,
#                  patch and diff a kernel in place.  common.h comes first; each .metal file's
#                  `#include "common.h"` line becomes a comment (newLibraryWithSource has no include
#                  path) so line numbers still match the file.  The Metal layer compiles them joined,
#                  as one library (mllm__kernel_source_joined): names must be unique across files.
#   gen/embed_kernels.sh           rewrite metalllm.h
#   gen/embed_kernels.sh --check   exit 1 (and say which) if an embedded copy is stale
# Why one literal per line: C11 only promises 4095 characters per string literal; gcc, clang and MSVC
# all accept longer strings made of adjacent literals (MSVC caps each literal at ~16 KB and the joined
# string at 64 KB, which every kernel file stays under).  Kernel files must be ASCII.
# The region METALLIB (a precompiled .metallib, built with Xcode on a Mac) is not touched here: see
# gen/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
HDR=${HDR:-metalllm.h}

# The files, in compile order: common.h first, then every kernel family.
files() {
    echo kernels/common.h
    ls kernels/*.metal
}

params_block() {
    echo "/* kernels/common.h (host part): launch geometry, GPU weight types, kernel parameter structs */"
    awk '/^\/\* -+ MSL: per-type block loaders/ { skip = 1 } !skip { print } /^#endif \/\* __METAL_VERSION__ \*\// { skip = 0 }' \
        kernels/common.h
}

# One file as a C string literal per line: \ and " escaped, ?? split (no trigraphs), tabs as \t.
c_lines() {
    sed -e 's/^#include "common.h"$/\/\/ #include "common.h": embedded before this file/' \
        -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/??/?\\?/g' -e 's/\t/\\t/g' -e 's/.*/    "&\\n"/' "$1"
}

# C identifier of a file: kernels/gemv.metal -> mllm__kernel_gemv_metal
ident() { local b; b=$(basename "$1"); echo "mllm__kernel_${b//[^A-Za-z0-9]/_}"; }

kernels_block() {
    local f
    echo "/* The kernels' MSL source, one array per file of kernels/ (see the accessors below). */"
    echo "#if defined(__GNUC__) || defined(__clang__)"
    echo "#pragma GCC diagnostic push"
    echo "#pragma GCC diagnostic ignored \"-Woverlength-strings\"   /* C11 promises 4095 characters */"
    echo "#endif"
    for f in $(files); do
        echo "static const char $(ident "$f")[] = /* $f */"
        c_lines "$f"
        echo "    ;"
    done
    echo "#if defined(__GNUC__) || defined(__clang__)"
    echo "#pragma GCC diagnostic pop"
    echo "#endif"
    echo "static const mllm__kernel_src mllm__kernel_files[] = {"
    for f in $(files); do
        echo "    {\"$f\", $(ident "$f"), sizeof $(ident "$f") - 1},"
    done
    echo "};"
}

# replace_region NAME BLOCKFILE: the lines between /* BEGIN GENERATED NAME */ and /* END GENERATED NAME */
replace_region() {
    local b="/* BEGIN GENERATED $1 */" e="/* END GENERATED $1 */"
    [ "$(grep -cxF "$b" "$tmp/new")" = 1 ] && [ "$(grep -cxF "$e" "$tmp/new")" = 1 ] ||
        { echo "embed_kernels: markers of $1 missing (or repeated) in $HDR" >&2; exit 2; }
    awk -v b="$b" -v e="$e" -v blk="$2" '
        $0 == b { print; while ((getline line < blk) > 0) print line; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }' "$tmp/new" > "$tmp/out"
    mv "$tmp/out" "$tmp/new"
}

if LC_ALL=C grep -nP '[^\x00-\x7f]' kernels/common.h kernels/*.metal >&2; then
    echo "embed_kernels: kernel sources must be ASCII (the lines above are not)" >&2; exit 2
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$HDR" "$tmp/new"
params_block > "$tmp/blk"; replace_region "KERNEL PARAMS" "$tmp/blk"
kernels_block > "$tmp/blk"; replace_region "KERNELS" "$tmp/blk"
if [ "${1:-}" = "--check" ]; then
    if cmp -s "$tmp/new" "$HDR"; then echo "embedded kernels up to date"; exit 0; fi
    echo "embedded kernels in $HDR are stale: run gen/embed_kernels.sh" >&2
    diff "$HDR" "$tmp/new" | head -5 >&2 || true
    exit 1
fi
cmp -s "$tmp/new" "$HDR" || cp "$tmp/new" "$HDR"
echo "embedded $(files | wc -l) kernel files into $HDR"
