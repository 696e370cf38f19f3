#!/bin/sh
# Regenerate tests/fixtures/tiny-extra/ from the llama.cpp peer (run tests/peer/build_llamacpp.sh first):
# the tiny random models of tests/gen_tiny.c (architectures and weight types ../shared/testdata/tiny
# lacks), llama.cpp's prompt logits and greedy continuations on the prompts of the shared tiny fixtures,
# and each model's sha256 so a test can check that the file it regenerated is the one llama.cpp saw.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/peer/bin"
VOCAB="${MLLM_TESTDATA:-$ROOT/../shared/testdata}/tiny/models/tiny-llama-F32.gguf"
OUT="$ROOT/tests/fixtures/tiny-extra"
MODELS="$ROOT/build/tiny-extra"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$MODELS"
cc -std=c11 -O2 -o "$TMP/gen_tiny" "$ROOT/tests/gen_tiny.c"
printf 'The quick brown fox' > "$TMP/p1_fox"
printf 'Hello' > "$TMP/p2_hello"
printf 'Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker who spent his days repairing clocks. One morning, a young girl knocked on his door and' > "$TMP/p3_story"
for m in $("$TMP/gen_tiny" --list); do
    "$TMP/gen_tiny" "$VOCAB" "$MODELS/$m.gguf" "$m"
    mkdir -p "$OUT/$m"
    (cd "$MODELS" && sha256sum "$m.gguf") > "$OUT/$m/sha256"
    for slug in p1_fox p2_hello p3_story; do
        "$BIN/mllm-peer-ref" "$MODELS/$m.gguf" "$TMP/$slug" "$OUT/$m/$slug" 24 2 > /dev/null 2> "$TMP/err" \
            || { cat "$TMP/err"; exit 1; }
    done
    echo "$m: ok"
done
