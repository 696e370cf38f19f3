#!/usr/bin/env bash
# Thread-pool behaviour under contention (issue 18, item 7): a 16-token greedy run at the default thread
# count and at -t 8, first on idle cores, then with every core busy (one `yes` per core, killed at the
# end).  Each binary given is run alternately with the others, R times per setting; prints each time and
# the median ratio busy/idle.  Usage: tests/contention.sh MODEL GENERATE_BIN... (R=5 runs per setting,
# LIMIT=120 seconds per run by default).
set -u
model=$1; shift
R=${R:-5}
ncpu=$(nproc)
prompt="The history of the city begins"
run() {   # bin, threads flag... -> wall seconds
  local bin=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  timeout "${LIMIT:-120}" "$bin" -m "$model" -p "$prompt" -n 16 --temp 0 --ignore-eos "$@" >/dev/null 2>&1 || echo "run failed or over ${LIMIT:-120} s (counted as that): $bin $*" >&2
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A times
measure() {   # label
  local r b t
  for r in $(seq 1 "$R"); do
    for b in "$@"; do
      for t in default 8; do
        if [ $t = default ]; then v=$(run "$b"); else v=$(run "$b" -t 8); fi
        times["$label|$b|$t"]+="$v "
      done
    done
  done
}
echo "uptime before: $(uptime)"
label=idle; measure "$@"
pids=""
for i in $(seq 1 "$ncpu"); do yes >/dev/null & pids="$pids $!"; done
label=busy; measure "$@"
kill $pids
echo "uptime after: $(uptime)"
for b in "$@"; do
  for t in default 8; do
    mi=$(echo ${times["idle|$b|$t"]} | tr ' ' '\n' | median)
    mb=$(echo ${times["busy|$b|$t"]} | tr ' ' '\n' | median)
    printf '%s -t %s\n  idle: %s\n  busy (%d x yes): %s\n  median ratio busy/idle: %.2f\n' "$b" "$t" \
      "${times["idle|$b|$t"]}" "$ncpu" "${times["busy|$b|$t"]}" "$(echo "$mb / $mi" | bc -l)"
  done
done
