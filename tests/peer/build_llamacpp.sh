#!/bin/sh
# Build the llama.cpp peer (CPU only) used for reference fixtures and `make bench` ratios.
# Sources come from the llama-cpp-python sdist on PyPI (it vendors llama.cpp); everything lands in
# peer/ (git-ignored).  Idempotent: each stage is skipped when its output already exists.
#   tests/peer/build_llamacpp.sh            -> peer/bin/{llama-bench,llama-simple,llama-tokenize,mllm-peer-ref}
#   PEER_SERVER=1 tests/peer/build_llamacpp.sh   also peer/bin/llama-server (for make bench-server)
# Env: PEER_VERSION (llama-cpp-python version), JOBS (parallel build jobs, default 2).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEER="$ROOT/peer"
# peer/ may be a symlink to a shared folder: use its real path, so the CMake cache and the tool links
# stay the same whichever checkout runs this (a different path makes CMake rebuild everything).
[ -d "$PEER" ] && PEER=$(cd "$PEER" && pwd -P)
VER="${PEER_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
PYTHON="${PYTHON:-python3}"
SRC="$PEER/src/llama_cpp_python-$VER/vendor/llama.cpp"
BLD="$PEER/build-$VER"
# -march=native turns on AMX where cpuid reports it; where its tiles fault anyway (some VMs), build without
# (tests/peer/amx_probe.c), in a build directory of its own
NOAMX=""
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    mkdir -p "$PEER"
    if ! { cc -O1 -mamx-tile -o "$PEER/amx_probe" "$ROOT/tests/peer/amx_probe.c" && "$PEER/amx_probe"; } 2>/dev/null; then
        NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        BLD="$PEER/build-$VER-noamx"
        echo "build_llamacpp: AMX tiles fault on this machine: llama.cpp without AMX ($BLD)" >&2
    fi
fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cmake || ! need g++ || ! need cc; then
    echo "installing cmake/g++ via apt" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q && $SUDO apt-get install -y -q cmake g++ gcc make
fi

if [ ! -f "$SRC/CMakeLists.txt" ]; then
    mkdir -p "$PEER/dl" "$PEER/src"
    tgz="$PEER/dl/llama_cpp_python-$VER.tar.gz"
    [ -f "$tgz" ] || "$PYTHON" -m pip download --no-deps --no-binary :all: -d "$PEER/dl" "llama-cpp-python==$VER"
    tar xzf "$tgz" -C "$PEER/src"
fi

# Tools only: no tests, no server/cli (they pull the web UI), no HTTPS.  Shared libs so our small
# reference program links against the same libllama the tools use.
[ -f "$BLD/CMakeCache.txt" ] || cmake -S "$SRC" -B "$BLD" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$NOAMX" -DCMAKE_CXX_FLAGS="$NOAMX" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON
cmake --build "$BLD" -j "$JOBS" --target llama-bench llama-simple llama-tokenize llama-batched-bench llama-quantize

# Our fixture generator against libllama (tests/peer/peer_ref.c).
mkdir -p "$PEER/bin"
LIBDIR="$BLD/bin"
if [ ! -x "$PEER/bin/mllm-peer-ref" ] || [ "$ROOT/tests/peer/peer_ref.c" -nt "$PEER/bin/mllm-peer-ref" ]; then
    cc -O2 -std=c11 -Wall -o "$PEER/bin/mllm-peer-ref" "$ROOT/tests/peer/peer_ref.c" \
        -I"$SRC/include" -I"$SRC/ggml/include" -L"$LIBDIR" -lllama -lggml -lggml-base \
        -Wl,-rpath,"$LIBDIR" -lm
fi
for t in llama-bench llama-simple llama-tokenize llama-batched-bench llama-quantize; do ln -sf "$LIBDIR/$t" "$PEER/bin/$t"; done

# llama-server for `make bench-server` (only with PEER_SERVER=1; the other tools do not need it), in a
# build directory of its own so the tools above are never reconfigured or rebuilt.  Its web UI is off
# (no npm, no download: the UI stage then embeds nothing), so it builds offline.
SBLD="$PEER/build-server-$VER${NOAMX:+-noamx}"
if [ "${PEER_SERVER:-0}" = 1 ] && [ ! -x "$SBLD/bin/llama-server" ]; then
    [ -f "$SBLD/CMakeCache.txt" ] || cmake -S "$SRC" -B "$SBLD" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS="$NOAMX" -DCMAKE_CXX_FLAGS="$NOAMX" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF
    cmake --build "$SBLD" -j "$JOBS" --target llama-server
fi
if [ -x "$SBLD/bin/llama-server" ]; then ln -sf "$SBLD/bin/llama-server" "$PEER/bin/llama-server"; fi
echo "llama.cpp peer ready in $PEER/bin (llama-cpp-python $VER)"
