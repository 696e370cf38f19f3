#!/usr/bin/env bash
# Runs every test binary given on the command line and sums their "N passed, N failed" lines.
# TEST_JOBS programs run at once (default: the CPU count; most programs are single-threaded, so on
# CI's 2 cores this halves the suite's time); each program's output is printed whole, in the order given.
# A program still running after TEST_TIMEOUT seconds (default 1800) is stopped and counts as failed.
set -u
jobs=${TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
total_p=0; total_f=0; broken=0

run_one() {   # $1 index, $2 program: output to $tmp/$1.out, exit code to $tmp/$1.rc, seconds to $tmp/$1.s
  local t0=$SECONDS rc
  timeout -k 10 "${TEST_TIMEOUT:-1800}" "$2" >"$tmp/$1.out" 2>&1; rc=$?
  [ $rc -eq 124 ] && echo "FAIL: stopped after ${TEST_TIMEOUT:-1800} s" >>"$tmp/$1.out"
  echo $((SECONDS - t0)) >"$tmp/$1.s"; echo $rc >"$tmp/$1.rc"
}

i=0
for bin in "$@"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_one $i "$bin" &
  i=$((i+1))
done
wait

i=0
for bin in "$@"; do
  echo "=== $bin"
  cat "$tmp/$i.out"
  rc=$(cat "$tmp/$i.rc"); echo "--- $bin: $(cat "$tmp/$i.s") s"   # where CI time goes
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/$i.out" | tail -1)
  i=$((i+1))
  if [ -z "$line" ]; then
    echo "FAIL $bin: exited $rc without a result line"; broken=$((broken+1)); continue
  fi
  p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
  total_p=$((total_p+p)); total_f=$((total_f+f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "FAIL $bin: exit code $rc"; broken=$((broken+1)); fi
done
total_f=$((total_f+broken))
echo "$total_p passed, $total_f failed"
[ $total_f -eq 0 ]
