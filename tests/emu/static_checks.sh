#!/usr/bin/env bash
# Static checks run as part of the suite (copied to build/test_emu_static):
#  - the kernels embedded in metalllm.h are up to date (gen/embed_kernels.sh --check);
#  - the Metal host code of metalllm.h compiles, as C11 and as C++, with gcc and clang, warning-free,
#    against the Objective-C stubs (tests/emu/objc_stub) - so a typo there cannot hide on Linux.
#    (Each message send's selector and C types are checked against Apple's signatures by
#    tests/metal/check_sends.py, build/test_metal_sends; the code runs in build/test_metal_objc.)
cd "$(dirname "$0")/.." 2>/dev/null && [ -f metalllm.h ] || cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; printf '%s\n' "$2" | head -20 | sed 's/^/    /'; fail=$((fail + 1)); }

if out=$(gen/embed_kernels.sh --check 2>&1); then ok "embedded kernels up to date"; else bad "embedded kernels up to date" "$out"; fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#define METALLLM_IMPLEMENTATION\n#include "metalllm.h"\nint main(void) { mllm__gpu g; memset(&g, 0, sizeof g); return mllm__mtl_open(&g) == MLLM_OK; }\n' > "$tmp/m.c"
WARN="-Wall -Wextra -Wshadow -Werror -Wno-unused-function"
for cc in gcc clang; do
    command -v $cc >/dev/null || continue
    cxx=$([ $cc = gcc ] && echo g++ || echo clang++)
    if out=$($cc -std=c11 $WARN -DMLLM__FORCE_METAL_STUBS -I. -Itests/emu/objc_stub -c "$tmp/m.c" -o "$tmp/m.o" 2>&1); then
        ok "metal backend compiles on stubs ($cc, C11)"; else bad "metal backend compiles on stubs ($cc, C11)" "$out"; fi
    if out=$($cxx -x c++ -std=c++17 $WARN -DMLLM__FORCE_METAL_STUBS -I. -Itests/emu/objc_stub -c "$tmp/m.c" -o "$tmp/m.o" 2>&1); then
        ok "metal backend compiles on stubs ($cxx)"; else bad "metal backend compiles on stubs ($cxx)" "$out"; fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
