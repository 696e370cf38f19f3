#!/bin/sh
# Regenerate tests/fixtures/{gemma3-270m,qwen2.5-coder-1.5b}/ from the llama.cpp peer (tests/peer/build_llamacpp.sh)
# and the float64 reference (tests/ref/model_ref.py --save), as gen_smollm2_fixtures.sh does for SmolLM2.
#   tests/peer/gen_real_fixtures.sh gemma3-270m|qwen2.5-coder-1.5b
# Cross-checks the peer's tokenization against llama-tokenize and its greedy text against llama-simple
# (up to the first end-of-generation token, where llama-simple stops), and fails if either differs.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/peer/bin"
N_GEN=32
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
case "${1:-}" in
  gemma3-270m)
    MODEL="$ROOT/models/gemma-3-270m-Q4_K_M.gguf"
    # the Gemma chat template; the tokenizer adds <bos> itself (add_bos_token = true)
    printf '<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n' > "$TMP/p1_chat" ;;
  qwen2.5-coder-1.5b)
    MODEL="$ROOT/models/Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf"
    printf '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n' > "$TMP/p1_chat" ;;
  *) echo "usage: $0 gemma3-270m|qwen2.5-coder-1.5b" >&2; exit 2 ;;
esac
OUT="$ROOT/tests/fixtures/$1"
mkdir -p "$OUT"
"$ROOT/tests/fetch_model.sh" "$1" >/dev/null
printf 'The quick brown fox jumps over the lazy dog. The dog was not amused, so it' > "$TMP/p2_fox"
printf 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n    return' > "$TMP/p3_code"

for slug in p1_chat p2_fox p3_code; do
    "$BIN/mllm-peer-ref" "$MODEL" "$TMP/$slug" "$OUT/$slug" $N_GEN 2 > "$TMP/$slug.gen" 2>"$TMP/$slug.err" \
        || { cat "$TMP/$slug.err"; exit 1; }
    ids=$("$BIN/llama-tokenize" -m "$MODEL" -f "$TMP/$slug" --ids --log-disable 2>/dev/null | tail -1)
    want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['prompt_tokens'])" "$OUT/$slug.json")
    [ "$ids" = "$want" ] || { echo "$slug: llama-tokenize $ids != peer $want"; exit 1; }
    prompt=$(cat "$TMP/$slug"; printf x); prompt=${prompt%x}
    "$BIN/llama-simple" -m "$MODEL" -n $N_GEN "$prompt" > "$TMP/$slug.simple" 2>/dev/null
    cat "$TMP/$slug" "$TMP/$slug.gen" > "$TMP/$slug.mine"
    # llama-simple stops at an end-of-generation token; the peer goes on (greedy_eog marks the step)
    if python3 - "$TMP/$slug.simple" "$TMP/$slug.mine" "$OUT/$slug.json" <<'PY'
import json, sys
simple, mine = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
simple = simple.removeprefix(b"<bos>")    # llama-simple prints the BOS that Gemma's tokenizer adds
eog = any(json.load(open(sys.argv[3]))["greedy_eog"])
sys.exit(0 if simple == mine or (eog and mine.startswith(simple.rstrip(b"\n"))) else 1)
PY
    then echo "$slug: ok (tokenize, llama-simple agree)"
    else echo "$slug: llama-simple output differs:"; diff "$TMP/$slug.simple" "$TMP/$slug.mine" || true; exit 1; fi
done
python3 "$ROOT/tests/ref/gguf_meta.py" "$MODEL" > "$OUT/meta.txt"
python3 "$ROOT/tests/ref/model_ref.py" --save --json "$TMP/ref.json" "$MODEL" "$OUT"
