#!/usr/bin/env bash
# Runs every test binary given on the command line and sums their "N passed, N failed" lines.
set -u
total_p=0; total_f=0; broken=0
for bin in "$@"; do
  echo "=== $bin"
  t0=$SECONDS
  out=$("$bin" 2>&1); rc=$?
  printf '%s\n' "$out"
  echo "--- $bin: $((SECONDS - t0)) s"   # where CI time goes
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
  if [ -z "$line" ]; then
    echo "FAIL $bin: exited $rc without a result line"; broken=$((broken+1)); continue
  fi
  p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
  total_p=$((total_p+p)); total_f=$((total_f+f))
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then echo "FAIL $bin: exit code $rc"; broken=$((broken+1)); fi
done
total_f=$((total_f+broken))
echo "$total_p passed, $total_f failed"
[ $total_f -eq 0 ]
