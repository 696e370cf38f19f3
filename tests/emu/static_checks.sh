#!/usr/bin/env bash
# Static checks run as part of the suite (copied to build/test_emu_static):
#  - the kernels embedded in metalllm.h are up to date (gen/embed_kernels.sh --check);
#  - the Metal host code of metalllm.h compiles, as C11 and as C++, with gcc and clang, warning-free
#    (-Wpedantic too), against the Objective-C stubs (tests/emu/objc_stub) - so a typo there cannot hide
#    on Linux;
#  - the source the Metal layer compiles (mllm__kernel_source_joined: the embedded files as one unit)
#    is, byte for byte, kernels/ as gen/embed_kernels.sh describes it, and compiles as one MSL unit in
#    the emulator (a name defined in two kernel files fails here; the per-file emulator build keeps
#    each file in its own namespace and cannot see it).
# (Each message send's selector and C types are checked against Apple's signatures by
# tests/metal/check_sends.py, build/test_metal_sends; the Metal code runs in build/test_metal_objc.)
cd "$(dirname "$0")/.." 2>/dev/null && [ -f metalllm.h ] || cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; printf '%s\n' "$2" | head -20 | sed 's/^/    /'; fail=$((fail + 1)); }

if out=$(gen/embed_kernels.sh --check 2>&1); then ok "embedded kernels up to date"; else bad "embedded kernels up to date" "$out"; fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#define METALLLM_IMPLEMENTATION\n#include "metalllm.h"\nint main(void) { mllm__gpu g; memset(&g, 0, sizeof g); return mllm__mtl_open(&g) == MLLM_OK; }\n' > "$tmp/m.c"
WARN="-Wall -Wextra -Wshadow -Wpedantic -Werror -Wno-unused-function"
for cc in gcc clang; do
    command -v $cc >/dev/null || continue
    cxx=$([ $cc = gcc ] && echo g++ || echo clang++)
    if out=$($cc -std=c11 $WARN -DMLLM__FORCE_METAL_STUBS -I. -Itests/emu/objc_stub -c "$tmp/m.c" -o "$tmp/m.o" 2>&1); then
        ok "metal backend compiles on stubs ($cc, C11)"; else bad "metal backend compiles on stubs ($cc, C11)" "$out"; fi
    if out=$($cxx -x c++ -std=c++17 $WARN -DMLLM__FORCE_METAL_STUBS -I. -Itests/emu/objc_stub -c "$tmp/m.c" -o "$tmp/m.o" 2>&1); then
        ok "metal backend compiles on stubs ($cxx)"; else bad "metal backend compiles on stubs ($cxx)" "$out"; fi
done
# The joined kernel source, printed by a program linked against do-nothing Objective-C symbols.
cat > "$tmp/j.c" <<'EOF'
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
void objc_msgSend(void) {}   /* the Objective-C runtime and Metal, never called here */
SEL sel_registerName(const char *name) { (void)name; return NULL; }
id objc_getClass(const char *name) { (void)name; return NULL; }
id MTLCreateSystemDefaultDevice(void) { return NULL; }
void *objc_autoreleasePoolPush(void) { return NULL; }
void objc_autoreleasePoolPop(void *pool) { (void)pool; }
dispatch_data_t dispatch_data_create(const void *b, size_t n, dispatch_queue_t q, void *d) { (void)b; (void)n; (void)q; (void)d; return NULL; }
void dispatch_release(void *o) { (void)o; }
int main(void) {
    size_t len = 0;
    char *s = mllm__kernel_source_joined(&len);
    if (!s || fwrite(s, 1, len, stdout) != len) return 1;
    MLLM_FREE(s);
    return 0;
}
EOF
want() {   # the joined source as gen/embed_kernels.sh's header comment describes it, from kernels/
    local f
    for f in kernels/common.h kernels/*.metal; do
        printf '#line 1 "%s"\n' "$f"
        sed 's|^#include "common.h"$|// #include "common.h": embedded before this file|' "$f"
    done
}
if out=$(cc -std=c11 -O0 -DMLLM__FORCE_METAL_STUBS -I. -Itests/emu/objc_stub -o "$tmp/j" "$tmp/j.c" -lm -lpthread 2>&1) &&
   "$tmp/j" > "$tmp/joined.metal" && out=$(want | cmp - "$tmp/joined.metal" 2>&1); then
    ok "embedded kernel source joined = kernels/ ($(wc -c < "$tmp/joined.metal") bytes)"
else bad "embedded kernel source joined = kernels/" "$out"; fi
CXX=${EMU_CXX:-clang++-19}
if out=$(${PYTHON:-python3} tests/emu/mslc.py "$tmp/joined.metal" -o "$tmp/joined.cpp" --cxx "$CXX" 2>&1) &&
   out=$($CXX -std=c++17 -fsyntax-only -Xclang -ffloat16-excess-precision=none -Xclang -fbfloat16-excess-precision=none \
         -Itests/emu/include -Wno-unknown-attributes "$tmp/joined.cpp" 2>&1); then
    ok "embedded kernel source compiles as one MSL unit ($(grep -c msl_registrar "$tmp/joined.cpp") kernels)"
else bad "embedded kernel source compiles as one MSL unit" "$out"; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
