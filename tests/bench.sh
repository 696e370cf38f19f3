#!/usr/bin/env bash
# make bench: our throughput against llama.cpp's (built once from the llama-cpp-python sdist into peer/)
# on the same files and thread counts, like for like: prefill 128 tokens and decode 64 from an empty
# context (llama-bench's pp128 and tg64), runs alternating ours / llama-bench, ROUNDS rounds, mean and best;
# batched decode against llama-batched-bench; a STREAM-like triad bandwidth, a read-only bandwidth, and
# decode's traffic (weights + KV bytes per token x tokens/s) as a fraction of them.  A table is written at the end (and to $BUILD/bench-table.md).
#   tests/bench.sh BUILD [MODEL.gguf ...]
#   env: BENCH_THREADS ("1 2"), BENCH_ROUNDS (3), BENCH_PEER (1; 0 skips llama.cpp), BENCH_BATCH
#        ("1,4,16"; empty skips batched decode; ROUNDS rounds, alternating), BENCH_BATCH_PROMPT (32: prompt
#        tokens per sequence there)
# Default models: SmolLM2 Q4_1 and, when present, its requantized twins models/smollm2-*.gguf (made with
# tests/bench_models.sh) and the real models tests/fetch_model.sh fetches (Gemma 3 270M, Qwen2.5-Coder-1.5B).
set -uo pipefail
BUILD=${1:-build}; shift || true
THREADS=${BENCH_THREADS:-"1 2"}; ROUNDS=${BENCH_ROUNDS:-3}; PEER=${BENCH_PEER:-1}; BATCH=${BENCH_BATCH-1,4,16}; BPROMPT=${BENCH_BATCH_PROMPT:-32}
if [ $# -gt 0 ]; then MODELS=("$@"); else
  MODELS=(models/SmolLM2-135M-Instruct.Q4_1.gguf)
  for f in models/smollm2-*.gguf models/gemma-3-270m-Q4_K_M.gguf models/Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf; do
    [ -f "$f" ] && MODELS+=("$f"); done
fi
RAW="$BUILD/bench-raw.txt"; : >"$RAW"
LB=peer/bin/llama-bench; LBB=peer/bin/llama-batched-bench
if [ "$PEER" != 0 ] && [ ! -x "$LB" ]; then
  tests/peer/build_llamacpp.sh >"$BUILD/peer-build.log" 2>&1 || { echo "peer build failed: see $BUILD/peer-build.log"; PEER=0; }
fi
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $THREADS; do
  out=$("$BUILD/bench" --cpu -m "${MODELS[0]}" -t "$t" -p 8 -n 8 -r 1 --batch 0 --triad)
  tr=$(printf '%s\n' "$out" | sed -n 's/.*triad \([0-9.]*\) GB\/s.*/\1/p'); rd=$(printf '%s\n' "$out" | sed -n 's/.*read \([0-9.]*\) GB\/s.*/\1/p')
  echo "triad t=$t: $tr GB/s, read: $rd GB/s"; echo "triad $t $tr" >>"$RAW"; echo "read $t $rd" >>"$RAW"
done
for m in "${MODELS[@]}"; do
  [ -f "$m" ] || { echo "skip: $m not present"; continue; }
  for t in $THREADS; do
    for r in $(seq "$ROUNDS"); do
      # the first round also measures the bandwidths next to this model's runs (the load changes)
      out=$("$BUILD/bench" --cpu -m "$m" -t "$t" -p 128 -n 64 -r 1 --batch 0 $([ "$r" = 1 ] && echo --triad)) || { echo "bench failed on $m"; continue; }
      bw=$(printf '%s\n' "$out" | sed -n 's/.*triad \([0-9.]*\) GB\/s, read \([0-9.]*\) GB\/s.*/\1 \2/p')
      [ -n "$bw" ] && echo "bw $m $t $bw" >>"$RAW"
      pp=$(printf '%s\n' "$out" | awk '/^prefill/ {print $(NF-3)}'); tg=$(printf '%s\n' "$out" | awk '/^decode +[0-9]/ {print $(NF-3)}')
      mib=$(printf '%s\n' "$out" | sed -n 's/^decode traffic: \([0-9.]*\) MiB.*/\1/p')
      echo "ours $m $t $pp $tg $mib" | tee -a "$RAW"
      if [ "$PEER" != 0 ]; then
        csv=$("$LB" -m "$m" -t "$t" -p 128 -n 64 -r 1 -o csv 2>/dev/null)
        line=$(printf '%s\n' "$csv" | python3 -c '
import csv, sys
rows = list(csv.DictReader(sys.stdin))
pp = [r["avg_ts"] for r in rows if r["n_prompt"] == "128" and r["n_gen"] == "0"]
tg = [r["avg_ts"] for r in rows if r["n_prompt"] == "0" and r["n_gen"] == "64"]
print(pp[0] if pp else 0, tg[0] if tg else 0)')
        echo "peer $m $t $line" | tee -a "$RAW"
      fi
    done
  done
  if [ -n "$BATCH" ]; then   # ROUNDS rounds here too, alternating ours / llama-batched-bench
    t=${THREADS##* }
    for r in $(seq "$ROUNDS"); do
      out=$("$BUILD/bench" --cpu -m "$m" -t "$t" -p 8 -n 64 -r 1 --batch "$BATCH" --batch-prompt "$BPROMPT")
      printf '%s\n' "$out" | sed -n 's/^batched decode, *\([0-9]*\) sequences: *\([0-9.]*\).*/oursb '"${m//\//\\/}"' '"$t"' \1 \2/p' | tee -a "$RAW"
      if [ "$PEER" != 0 ] && [ -x "$LBB" ]; then
        "$LBB" -m "$m" -t "$t" -c 8192 -b 2048 -ub 512 -npp "$BPROMPT" -ntg 64 -npl "$BATCH" 2>/dev/null |
          awk -F'|' -v m="$m" -v t="$t" 'NF > 10 && $4 ~ /[0-9]/ {gsub(/ /, "", $4); gsub(/ /, "", $9); print "peerb", m, t, $4, $9}' | tee -a "$RAW"
      fi
    done
  fi
done
[ -x "$BUILD/bench_moe" ] && "$BUILD/bench_moe" || true
python3 - "$RAW" <<'PY' | tee "$BUILD/bench-table.md"
import sys, collections
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
triad = {r[1]: float(r[2] or 0) for r in rows if r[0] == "triad" and len(r) > 2}
read = {r[1]: float(r[2] or 0) for r in rows if r[0] == "read" and len(r) > 2}
bw = {(r[1], r[2]): (float(r[3]), float(r[4])) for r in rows if r[0] == "bw" and len(r) > 4}
runs = collections.defaultdict(lambda: {"ours": [], "peer": []})
mib = {}
for r in rows:
    if r[0] in ("ours", "peer") and len(r) >= 5:
        runs[(r[1], r[2])][r[0]].append((float(r[3]), float(r[4])))
        if r[0] == "ours" and len(r) > 5: mib[r[1]] = float(r[5])
def ms(v): return (sum(v) / len(v), max(v)) if v else (0.0, 0.0)
def ratio(a, b): return "%.2f" % (a / b) if b else "-"
print("\n| model | t | prefill ours mean/best | llama.cpp mean/best | ratio (mean) | decode ours mean/best | llama.cpp mean/best | ratio (mean) | decode GB/s, % of triad / of read (measured beside it) |")
print("|---|---|---|---|---|---|---|---|---|")
for (m, t), v in runs.items():
    op, ot = ms([x[0] for x in v["ours"]]), ms([x[1] for x in v["ours"]])
    pp, pt = ms([x[0] for x in v["peer"]]), ms([x[1] for x in v["peer"]])
    gbs = mib.get(m, 0) * 1048576 * ot[0] * 1e-9
    tr, rd = bw.get((m, t), (triad.get(t, 0), read.get(t, 0)))
    print("| %s | %s | %.1f / %.1f | %.1f / %.1f | %s | %.1f / %.1f | %.1f / %.1f | %s | %.1f, %s / %s |" % (
        m.split("/")[-1], t, op[0], op[1], pp[0], pp[1], ratio(op[0], pp[0]), ot[0], ot[1], pt[0], pt[1],
        ratio(ot[0], pt[0]), gbs, ("%.0f%%" % (100 * gbs / tr)) if tr else "-", ("%.0f%%" % (100 * gbs / rd)) if rd else "-"))
b = collections.defaultdict(lambda: {"oursb": [], "peerb": []})
for r in rows:
    if r[0] in ("oursb", "peerb"): b[(r[1], r[2], int(r[3]))][r[0]].append(float(r[4]))
if b:
    print("\n| model | t | sequences | batched decode ours mean/best tok/s | llama-batched-bench S_TG mean/best tok/s | ratio (mean) |")
    print("|---|---|---|---|---|---|")
    for (m, t, n), v in sorted(b.items()):
        o, p = ms(v["oursb"]), ms(v["peerb"])
        print("| %s | %s | %d | %.1f / %.1f | %.1f / %.1f | %s |" % (m.split("/")[-1], t, n, o[0], o[1], p[0], p[1], ratio(o[0], p[0])))
print("\ntriad bandwidth (GB/s): " + ", ".join("t=%s %.1f" % kv for kv in sorted(triad.items())) +
      "; read bandwidth (GB/s): " + ", ".join("t=%s %.1f" % kv for kv in sorted(read.items())))
PY
