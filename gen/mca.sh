#!/usr/bin/env bash
# llvm-mca estimates (not measurements) of the weight-type dot products: cycles per block of the
# single-row kernel (nx = 1) on x86 (AVX2 kernels with AVX-512 VNNI, LLVM's znver4 model) and on arm64
# (NEON with sdot, LLVM's apple-m1 model, which LLVM derives from its Cyclone model).  Each region is
# the kernel inlined for NB blocks (fully unrolled, the float accumulation chain included), run by
# llvm-mca for 100 iterations; cycles per block = total cycles / (100 * NB).  NB = 4 for the 32-element
# formats (the float accumulation chain between blocks included), 1 for the K-quants (one float add
# per 256 elements).  The regions must be straight-line code (checked).
# Usage: gen/mca.sh   (needs clang-19, llvm-mca-19 and the aarch64 cross libc headers)
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-clang-19}; MCA=${MCA:-llvm-mca-19}; NB=4
tmp=${MCA_TMP:-$(mktemp -d)}
cat > "$tmp/k.c" <<C
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#if MLLM__NEON
#define K32 mllm__neon_dot32
#define KK mllm__neon_dotk
#else
#define K32 mllm__avx2_dot32
#define KK mllm__avx2_dotk
#endif
#define REGION(name, kernel, type, nb)                                                      \\
    float mca_##name(const uint8_t *w, const uint8_t *x);                                   \\
    float mca_##name(const uint8_t *w, const uint8_t *x) {                                  \\
        float o;                                                                            \\
        __asm__ volatile("# LLVM-MCA-BEGIN " #name ::: "memory");                           \\
        kernel(type, nb, w, x, 0, 1, &o);                                                   \\
        __asm__ volatile("# LLVM-MCA-END " #name ::: "memory");                             \\
        return o;                                                                           \\
    }
REGION(q4_0, K32, MLLM__Q4_0, $NB)
REGION(q8_0, K32, MLLM__Q8_0, $NB)
REGION(q4_k, KK, MLLM__Q4_K, 1)
REGION(q6_k, KK, MLLM__Q6_K, 1)
C
$CC --target=x86_64-linux-gnu -march=znver4 -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I. -S -o "$tmp/x86.s" "$tmp/k.c"
$CC --target=aarch64-linux-gnu -mcpu=apple-m1 -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I. -S -o "$tmp/arm.s" "$tmp/k.c"
# each region's instructions into a file of its own (marker comments differ between the assemblers)
for arch in x86 arm; do
  for r in q4_0 q8_0 q4_k q6_k; do
    awk -v r="$r" '$0 ~ "LLVM-MCA-BEGIN "r"$" {on=1; next} $0 ~ "LLVM-MCA-END "r"$" {on=0} on' "$tmp/$arch.s" |
      grep -vE '^\s*(#|//|\.|[A-Za-z0-9_.$]+:)' > "$tmp/$arch-$r.s"
  done
done
run() {   # arch cpu region -> "cycles-per-block instructions-per-block"
  local nb=$NB
  case $3 in *_k) nb=1;; esac
  if grep -qE '^\s+(b|b\.[a-z]+|cbn?z|tbn?z|j[a-z]+|call|bl)\s' "$tmp/$3.s"; then echo "$3: the region has a branch or call" >&2; exit 1; fi
  $MCA -mtriple=$1 -mcpu=$2 -iterations=100 "$tmp/$3.s" 2>/dev/null |
    awk -v nb=$nb '/^Instructions:/{i=$2} /^Total Cycles:/{c=$3} END{printf "%.1f (%.0f instructions)", c/(100*nb), i/(100*nb)}'
}
echo "llvm-mca-19 estimates: cycles per block of the single-row dot product (not measurements)"
echo "| type | elements per block | x86-64 znver4 (AVX2 + VNNI) | arm64 apple-m1 (NEON + sdot) |"
echo "|---|---|---|---|"
for r in q4_0 q8_0 q4_k q6_k; do
  case $r in *_k) b=256;; *) b=32;; esac
  echo "| $(echo $r | tr a-z A-Z) | $b | $(run x86_64 znver4 x86-$r) | $(run aarch64 apple-m1 arm-$r) |"
done
