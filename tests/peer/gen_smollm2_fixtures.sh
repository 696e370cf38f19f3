#!/bin/sh
# Regenerate tests/fixtures/smollm2/ from the llama.cpp peer (run tests/peer/build_llamacpp.sh first).
# Also cross-checks the peer's tokenization against llama-tokenize and its greedy text against
# llama-simple, and fails if either differs.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/peer/bin"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
OUT="$ROOT/tests/fixtures/smollm2"
N_GEN=32
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# slug and exact prompt bytes (printf escapes; no trailing newline unless written)
printf '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n' > "$TMP/p1_chat"
printf 'The quick brown fox jumps over the lazy dog. The dog was not amused, so it' > "$TMP/p2_fox"
printf 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n    return' > "$TMP/p3_code"
printf 'Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker who spent his days repairing clocks. One morning, a young girl knocked on his door and' > "$TMP/p4_story"

for slug in p1_chat p2_fox p3_code p4_story; do
    "$BIN/mllm-peer-ref" "$MODEL" "$TMP/$slug" "$OUT/$slug" $N_GEN 2 > "$TMP/$slug.gen" 2>"$TMP/$slug.err" \
        || { cat "$TMP/$slug.err"; exit 1; }
    # Tokenizer cross-check: llama-tokenize prints "[id, id, ...]" with --ids.
    ids=$("$BIN/llama-tokenize" -m "$MODEL" -f "$TMP/$slug" --ids --log-disable 2>/dev/null | tail -1)
    want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['prompt_tokens'])" "$OUT/$slug.json")
    [ "$ids" = "$want" ] || { echo "$slug: llama-tokenize $ids != peer $want"; exit 1; }
    # Greedy text cross-check: llama-simple prints prompt + continuation.
    # ($(cat) would drop the ChatML prompt's trailing newline: keep it with a sentinel.)
    prompt=$(cat "$TMP/$slug"; printf x); prompt=${prompt%x}
    "$BIN/llama-simple" -m "$MODEL" -n $N_GEN "$prompt" > "$TMP/$slug.simple" 2>/dev/null
    cat "$TMP/$slug" "$TMP/$slug.gen" > "$TMP/$slug.mine"   # both end with one newline
    if cmp -s "$TMP/$slug.simple" "$TMP/$slug.mine"; then echo "$slug: ok (tokenize, llama-simple agree)"
    else echo "$slug: llama-simple output differs:"; diff "$TMP/$slug.simple" "$TMP/$slug.mine" || true; exit 1; fi
done
