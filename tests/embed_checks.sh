#!/usr/bin/env bash
# What a program embedding metalllm.h relies on (copied to build/test_embed and run as a test):
#  - the declarations alone include nothing but <stddef.h> and <stdint.h>;
#  - the implementation compiles warning-free at -Wall -Wextra -Wpedantic -Wshadow (no warning turned
#    off) as C11 and C++11 with gcc and clang;
#  - MLLM_STATIC makes every public function static (none exported, still no warning); by default
#    every declared function is exported;
#  - the version macros agree with each other;
#  - MSVC's cl.exe is refused with the #error (simulated by defining _MSC_VER);
#  - Windows (MinGW target, syntax only): the implementation compiles, and windows.h leaves no min/max
#    macros, WIN32_LEAN_AND_MEAN or NOMINMAX behind in the including program;
#  - the programs the README names (build/NAME, tests aside) are exactly those make builds (examples/).
cd "$(dirname "$0")/.." 2>/dev/null && [ -f metalllm.h ] || cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; printf '%s\n' "$2" | head -20 | sed 's/^/    /'; fail=$((fail + 1)); }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
CLANG=$(command -v clang-19 || command -v clang || true)
WARN="-Wall -Wextra -Wpedantic -Wshadow -Werror"

printf '#include "metalllm.h"\nint f(void);\nint f(void) { return MLLM_OK; }\n' > "$tmp/decl.c"
printf '#define METALLLM_IMPLEMENTATION\n#include "metalllm.h"\n#if defined(min) || defined(max) || defined(WIN32_LEAN_AND_MEAN) || defined(NOMINMAX)\n#error "windows.h macros leaked"\n#endif\nint main(void) { return 0; }\n' > "$tmp/impl.c"

# headers the declarations pull in: stddef.h, stdint.h and what those include themselves
cc -std=c11 -I. -M "$tmp/decl.c" | tr ' \\' '\n\n' | grep '\.h$' | grep -v -e 'metalllm\.h' > "$tmp/deps"
cc -std=c11 -M -x c - <<< $'#include <stddef.h>\n#include <stdint.h>' | tr ' \\' '\n\n' | grep '\.h$' > "$tmp/base"
extra=$(grep -vxFf "$tmp/base" "$tmp/deps")
if [ -z "$extra" ]; then ok "declarations include only <stddef.h> and <stdint.h>"
else bad "declarations include only <stddef.h> and <stdint.h>" "also: $extra"; fi

for c in "gcc -std=c11" "g++ -x c++ -std=c++11" ${CLANG:+"$CLANG -std=c11" "$CLANG -x c++ -std=c++11"}; do
    if out=$($c $WARN -I. -fsyntax-only "$tmp/impl.c" 2>&1); then ok "implementation warning-free ($c $WARN)"
    else bad "implementation warning-free ($c $WARN)" "$out"; fi
done

n_decl=$(grep -c '^MLLMDEF ' metalllm.h)
if out=$(gcc -std=c11 $WARN -I. -c "$tmp/impl.c" -o "$tmp/ext.o" 2>&1) &&
   out=$(gcc -std=c11 $WARN -DMLLM_STATIC -I. -c "$tmp/impl.c" -o "$tmp/static.o" 2>&1) &&
   out=$(g++ -x c++ -std=c++11 $WARN -DMLLM_STATIC -I. -fsyntax-only "$tmp/impl.c" 2>&1); then
    n_ext=$(nm -g --defined-only "$tmp/ext.o" | grep -c ' T mllm_')
    n_static=$(nm -g --defined-only "$tmp/static.o" | grep -c ' mllm' || true)
    if [ "$n_ext" = "$n_decl" ] && [ "$n_static" = 0 ]; then
        ok "MLLM_STATIC: 0 exported symbols (default: all $n_decl declared functions)"
    else bad "MLLM_STATIC: 0 exported symbols" "exported by default: $n_ext of $n_decl; with MLLM_STATIC: $n_static"; fi
else bad "MLLM_STATIC compiles warning-free" "$out"; fi

printf '#include <stdio.h>\n#include <string.h>\n#include "metalllm.h"\nint main(void) { char v[64]; snprintf(v, sizeof v, "%%d.%%d.%%d", MLLM_VERSION_MAJOR, MLLM_VERSION_MINOR, MLLM_VERSION_PATCH); return strcmp(v, MLLM_VERSION_STRING) != 0; }\n' > "$tmp/ver.c"
if cc -std=c11 -I. -o "$tmp/ver" "$tmp/ver.c" && "$tmp/ver"; then ok "MLLM_VERSION_STRING is MAJOR.MINOR.PATCH"
else bad "MLLM_VERSION_STRING is MAJOR.MINOR.PATCH" "$(grep -m4 'MLLM_VERSION' metalllm.h)"; fi

out=$(gcc -std=c11 -D_MSC_VER=1930 -I. -fsyntax-only "$tmp/impl.c" 2>&1)
if [ $? -ne 0 ] && printf '%s' "$out" | grep -q 'error: #error "metalllm.h: the implementation needs GCC or Clang'; then
    ok "MSVC (cl.exe) is refused with a clear #error"
else bad "MSVC (cl.exe) is refused with a clear #error" "$out"; fi

if [ -z "$CLANG" ] || [ ! -f /usr/x86_64-w64-mingw32/include/windows.h ]; then
    bad "Windows (MinGW) compile" "needs clang and mingw-w64-x86-64-dev: run tests/deps.sh"
else
    for x in "-std=c11" "-x c++ -std=c++11"; do
        if out=$($CLANG --target=x86_64-w64-mingw32 --sysroot=/usr/x86_64-w64-mingw32 $x $WARN -I. -fsyntax-only "$tmp/impl.c" 2>&1); then
            ok "Windows (MinGW, $x): compiles, no windows.h macros leak"
        else bad "Windows (MinGW, $x): compiles, no windows.h macros leak" "$out"; fi
    done
fi
readme=$(grep -o 'build/[a-z0-9_]*' README.md | sed 's|build/||' | grep -v -e '^test_' -e '^$' | sort -u)
built=$(ls examples/*.c | sed 's|examples/||; s|\.c$||' | sort -u)
if [ "$readme" = "$built" ]; then ok "README names exactly the programs make builds: $(echo $built)"
else bad "README names exactly the programs make builds" "README only: $(comm -23 <(echo "$readme") <(echo "$built") | tr '\n' ' ')
built only: $(comm -13 <(echo "$readme") <(echo "$built") | tr '\n' ' ')"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
