#!/usr/bin/env bash
# NEON weight kernels vs scalar kernels on arm64, logits bit for bit (tests/arm64_logits.c says what runs):
# the two builds of the same program must print the same logits hashes.
set -u
dir=$(dirname "$0")/../${BUILD:-build}/arm64/run
"$dir/max-exact-arm64_logits" > "$dir/logits.neon" 2>&1 & a=$!
"$dir/max-scalar-arm64_logits" > "$dir/logits.scalar" 2>&1; rb=$?
wait $a; ra=$?
n=$(wc -l < "$dir/logits.neon")
paste "$dir/logits.neon" "$dir/logits.scalar" | awk '{ printf "  %-20s neon %s scalar %s %s\n", $1, $2, $4, ($2 == $4 ? "same" : "DIFFERENT") }'
if [ $ra -eq 0 ] && [ $rb -eq 0 ] && [ "$n" -ge 10 ] && cmp -s "$dir/logits.neon" "$dir/logits.scalar"; then
  echo "ok   arm64 logits: NEON == MLLM_NO_SIMD bit for bit on $n models"; echo "1 passed, 0 failed"
else
  echo "FAIL arm64 logits differ (or a run failed: $ra $rb)"; echo "0 passed, 1 failed"; exit 1
fi
