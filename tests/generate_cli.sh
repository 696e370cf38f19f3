#!/usr/bin/env bash
# The generate example on hostile flags (issue 18, item 8): each bad value is an error with a message
# and exit code 2 before anything is generated; the prompt can come from a pipe.  Installed next to the
# generate binary it tests (build/test_generate_cli runs build/generate).
set -u
dir=$(cd "$(dirname "$0")" && pwd)
gen="$dir/generate"
model="${MLLM_TESTDATA:-../shared/testdata}/tiny/models/tiny-llama-Q8_0.gguf"
pass=0; fail=0
ok()  { echo "ok   $1"; pass=$((pass+1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail+1)); }

# Each case: flags that must be refused with exit code 2 and "error:" on stderr, nothing on stdout.
refuse() {
  local name="$1"; shift
  local out err rc
  out=$("$gen" -m "$model" -p Hello "$@" 2>/tmp/gcli_err.$$); rc=$?
  err=$(cat /tmp/gcli_err.$$)
  if [ $rc -eq 2 ] && [ -z "$out" ] && grep -q '^error: ' <<<"$err"; then ok "$name"
  else bad "$name" "rc=$rc stdout='${out:0:60}' stderr='${err:0:100}'"; fi
}
refuse "n_minus_one" -n -1
refuse "n_zero" -n 0
refuse "n_not_a_number" -n abc
refuse "n_overflow" -n 99999999999
refuse "n_trailing_garbage" -n 12x
refuse "temp_negative" --temp -1
refuse "temp_nan" --temp nan
refuse "top_p_7" --top-p 7
refuse "top_k_negative" --top-k -2
refuse "min_p_negative" --min-p -0.5
refuse "repeat_penalty_inf" --repeat-penalty inf
refuse "repeat_last_n_negative" --repeat-last-n -5
refuse "threads_5000" -t 5000
refuse "seed_negative" --seed -3

# -f on a directory is a read error (exit 1), not a huge allocation
out=$("$gen" -m "$model" -f /tmp -n 2 2>/tmp/gcli_err.$$); rc=$?
if [ $rc -eq 1 ] && grep -q 'error: cannot read /tmp' /tmp/gcli_err.$$; then ok "prompt_file_is_a_directory"
else bad "prompt_file_is_a_directory" "rc=$rc $(cat /tmp/gcli_err.$$)"; fi

# the prompt from a pipe (-f - and plain stdin) gives the same greedy tokens as -p
ref=$("$gen" -m "$model" -p "Hello world" -n 6 --temp 0 --ids 2>/dev/null)
p1=$(printf 'Hello world' | "$gen" -m "$model" -f - -n 6 --temp 0 --ids 2>/dev/null)
p2=$(printf 'Hello world' | "$gen" -m "$model" -n 6 --temp 0 --ids 2>/dev/null)
if [ -n "$ref" ] && [ "$ref" = "$p1" ] && [ "$ref" = "$p2" ]; then ok "prompt_from_pipe"
else bad "prompt_from_pipe" "-p '$ref', -f - '$p1', stdin '$p2'"; fi
rm -f /tmp/gcli_err.$$
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
