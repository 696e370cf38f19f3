#!/usr/bin/env bash
# CHECK mode (copied to build/test_emu_check): every kernel is compiled with device / constant /
# threadgroup as distinct clang address spaces (OpenCL global/constant/local, in clang's SYCL mode so
# that structs and vectors still copy out of device memory), so passing a pointer of one space where
# another is expected fails to compile, as with Apple's compiler. Type-checking only (clang cannot
# generate code in this mode); the kernels run in build/test_emu and build/test_emu_tsan.
# Also the self-tests: the planted mismatch tests/emu/planted/bad_addrspace.metal must fail, and
# compile once the bug is fixed (-DFIXED), so the failure is due to the mismatch alone.
cd "$(dirname "$0")/.." 2>/dev/null && [ -f metalllm.h ] || cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
CXX=${EMU_CXX:-clang++-19}
PY=${PYTHON:-python3}
pass=0; fail=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
check() {   # check FILE [defines...]: prints diagnostics, returns the compiler's status
    local f=$1; shift
    local out=$tmp/$(echo "$f" | tr '/' '_').cpp
    $PY tests/emu/mslc.py "$f" -o "$out" "$@" --cxx "$CXX" 2>&1 || return 1
    $CXX -std=c++17 -fsycl -DMSL_AS -fsyntax-only -Itests/emu/include -Wno-unknown-attributes "$out" 2>&1
}
for f in kernels/*.metal tests/emu/planted/*.metal; do
    [ -e "$f" ] || continue
    case $f in */bad_*) continue ;; esac
    if out=$(check "$f") && [ -z "$out" ]; then echo "ok   CHECK mode: $f"; pass=$((pass + 1))
    else echo "FAIL CHECK mode: $f"; printf '%s\n' "$out" | grep -E 'error|warning' | head -8 | sed 's/^/    /'; fail=$((fail + 1)); fi
done
out=$(check tests/emu/planted/bad_addrspace.metal)
if [ $? -ne 0 ] && printf '%s' "$out" | grep -q "no matching function for call to 'sum_tile'"; then
    echo "ok   planted address-space mismatch fails to compile"; pass=$((pass + 1))
else echo "FAIL planted address-space mismatch was not rejected"; printf '%s\n' "$out" | head -5; fail=$((fail + 1)); fi
if out=$(check tests/emu/planted/bad_addrspace.metal -D FIXED) && [ -z "$out" ]; then
    echo "ok   planted address-space mismatch, fixed, compiles"; pass=$((pass + 1))
else echo "FAIL fixed address-space kernel does not compile"; printf '%s\n' "$out" | head -5; fail=$((fail + 1)); fi
# The planted attribute-width mix (uint2 position, scalar threads_per_threadgroup) must be rejected by
# mslc.py (the MSL spec rule clang does not enforce), and compile once fixed.
out=$(check tests/emu/planted/bad_attr_width.metal)
if [ $? -ne 0 ] && printf '%s' "$out" | grep -q "all scalars or all vectors of one width"; then
    echo "ok   planted attribute-width mix fails to compile"; pass=$((pass + 1))
else echo "FAIL planted attribute-width mix was not rejected"; printf '%s\n' "$out" | head -5; fail=$((fail + 1)); fi
if out=$(check tests/emu/planted/bad_attr_width.metal -D FIXED) && [ -z "$out" ]; then
    echo "ok   planted attribute-width mix, fixed, compiles"; pass=$((pass + 1))
else echo "FAIL fixed attribute-width kernel does not compile"; printf '%s\n' "$out" | head -5; fail=$((fail + 1)); fi
# Metal compiles all kernels as one source (the files joined, as metalllm.h embeds them), the emulator each
# file alone: the concatenation must compile as one unit too (names and macros of different files may
# collide), in both modes; the planted collision (a helper named as one of attention.metal's) must fail.
for f in kernels/common.h kernels/*.metal; do   # as mllm__kernel_source_joined (byte for byte: test_emu_static)
    printf '#line 1 "%s"\n' "$f"
    sed 's|^#include "common.h"$|// #include "common.h": embedded before this file|' "$f"
done > "$tmp/all.metal"
both() {   # both FILE [defines]: the normal and the CHECK-mode compile of FILE
    local out=$tmp/both.cpp
    $PY tests/emu/mslc.py "$1" -o "$out" "${@:2}" --cxx "$CXX" 2>&1 || return 1
    $CXX -std=c++17 -fsyntax-only -Itests/emu/include -Wno-unknown-attributes "$out" 2>&1 &&
        $CXX -std=c++17 -fsycl -DMSL_AS -fsyntax-only -Itests/emu/include -Wno-unknown-attributes "$out" 2>&1
}
if out=$(both "$tmp/all.metal") && [ -z "$out" ]; then
    echo "ok   the concatenated kernel source compiles as one unit"; pass=$((pass + 1))
else echo "FAIL the concatenated kernel source does not compile as one unit"; printf '%s\n' "$out" | grep -E 'error' | head -5; fail=$((fail + 1)); fi
{ cat "$tmp/all.metal"; grep -v '#include' tests/emu/planted/bad_collision.metal; } > "$tmp/all_bad.metal"
out=$(both "$tmp/all_bad.metal")
if [ $? -ne 0 ] && printf '%s' "$out" | grep -q "redefinition of 'frag_row'"; then
    echo "ok   planted name collision fails in the concatenation"; pass=$((pass + 1))
else echo "FAIL planted name collision was not rejected"; printf '%s\n' "$out" | head -5; fail=$((fail + 1)); fi
if out=$(both "$tmp/all_bad.metal" -D FIXED) && [ -z "$out" ] && out=$(check tests/emu/planted/bad_collision.metal) && [ -z "$out" ]; then
    echo "ok   planted name collision: compiles alone, and in the concatenation once renamed"; pass=$((pass + 1))
else echo "FAIL planted collision kernel, alone or renamed, does not compile"; printf '%s\n' "$out" | head -5; fail=$((fail + 1)); fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
