#!/usr/bin/env bash
# make test-gpu: the kernel tests on the GPU (plain, then under compute-sanitizer memcheck and racecheck
# when it is installed and SANITIZE=1), then the engine end to end against the CPU.
#   CUDA_KBINS="build/cuda/test_kernels_..." tests/cuda/test_gpu.sh build/test_cuda_e2e MODEL.gguf...
set -u
e2e=$1; shift
bins=()
for b in $CUDA_KBINS; do bins+=("$b"); done
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
wrap=()
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ "${SANITIZE:-1}" = 1 ] && [ -n "$CS" ]; then
  for b in "${bins[@]}"; do
    for tool in memcheck racecheck; do
      w="$dir/$(basename "$b")_$tool"
      # the sanitizer's own verdict counts: an error it reports is a failed test
      printf '#!/bin/sh\nout=$("%s" --tool %s --error-exitcode 9 --print-limit 20 "%s" 2>&1); rc=$?\nprintf "%%s\\n" "$out"\n[ $rc -eq 9 ] && { echo "FAIL compute-sanitizer %s reported errors"; echo "0 passed, 1 failed"; exit 1; }\nexit $rc\n' \
        "$CS" "$tool" "$b" "$tool" > "$w"
      chmod +x "$w"; wrap+=("$w")
    done
  done
else
  echo "(compute-sanitizer runs skipped)"
fi
e2ew="$dir/test_cuda_e2e"
printf '#!/bin/sh\nexec "%s" %s\n' "$e2e" "$*" > "$e2ew"; chmod +x "$e2ew"
"$(dirname "$0")/../run.sh" "${bins[@]}" "${wrap[@]}" "$e2ew"
