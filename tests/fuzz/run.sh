#!/usr/bin/env bash
# Runs one fuzz target for N seconds over its seed corpus (made by seeds.py) and a corpus it grows;
# prints one summary line.  usage: tests/fuzz/run.sh BUILD_DIR TARGET SECONDS
set -u
b=$1; t=$2; secs=$3
mkdir -p "$b/corpus/$t" "$b/artifacts"
log="$b/fuzz_$t.log"
"$b/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=3072 -max_len=200000 \
  -artifact_prefix="$b/artifacts/$t-" "$b/corpus/$t" "$b/seeds/$t" >"$log" 2>&1
rc=$?
execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$')
last=$(grep -E '^#[0-9]+' "$log" | tail -1)
cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
corp=$(echo "$last" | grep -o 'corp: [0-9/]*[a-zA-Z]*' | sed 's/corp: //')
if [ $rc -eq 0 ]; then res="no findings"; else res="FINDING (exit $rc, see $log and $b/artifacts/)"; fi
printf 'fuzz %-13s %5ss  execs %-9s cov %-6s ft %-6s corpus %-12s %s\n' "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$res"
[ $rc -eq 0 ] || { tail -40 "$log"; exit 1; }
