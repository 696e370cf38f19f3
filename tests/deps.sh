#!/usr/bin/env bash
# Installs what the test suite needs beyond make and a C compiler (run by `make test` and `.ci/run`;
# `make` and `make run` need none of it).  The one list, as "what must exist  Debian package":
#   - as root: apt-get installs the missing packages;
#   - otherwise with password-less sudo: the same through sudo;
#   - otherwise: prints the one command to run and fails.
set -u
NEED="
clang++-19                                       clang-19
/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.tsan-*.a    libclang-rt-19-dev
clang                                            clang
g++                                              g++
python3                                          python3
unzip                                            unzip
/usr/share/unicode/UnicodeData.txt               unicode-data
/usr/x86_64-w64-mingw32/include/windows.h        mingw-w64-x86-64-dev
"
# what each is for: clang-19 compiles the MSL emulator suite, libclang-rt-19-dev its ThreadSanitizer
# build; clang for make test-san/test-tsan; python3 runs tests/emu/mslc.py (and pip fetches the
# model); unicode-data feeds gen/unicode_tables.py; the MinGW headers let build/test_embed compile
# the header for Windows.

missing() {   # the packages whose file or command is absent
    local what pkg out=""
    while read -r what pkg; do
        [ -n "$what" ] || continue
        case $what in
            /*) compgen -G "$what" >/dev/null || out="$out $pkg" ;;   # a path (or pattern)
            *) command -v "$what" >/dev/null 2>&1 || out="$out $pkg" ;;
        esac
    done <<< "$NEED"
    echo "$out"
}

pkgs=$(missing)
[ -z "$pkgs" ] && exit 0
echo "deps: the test suite needs:$pkgs"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: no apt-get here: install the equivalents of these Debian packages, then rerun" >&2
    exit 1
fi
install="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$pkgs"
if [ "$(id -u)" = 0 ]; then
    sh -c "$install" >/dev/null || { echo "deps: apt-get failed: $install" >&2; exit 1; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo sh -c "$install" >/dev/null || { echo "deps: apt-get failed: sudo sh -c '$install'" >&2; exit 1; }
else
    echo "deps: run this once, then make test again:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y$pkgs" >&2
    exit 1
fi
still=$(missing)
if [ -n "$still" ]; then
    echo "deps: installed, yet still missing (not on PATH?):$still" >&2
    exit 1
fi
echo "deps: installed$pkgs"
