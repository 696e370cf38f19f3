// RMSNorm over rows: y = x / sqrt(mean(x^2) + eps) [* w].  One threadgroup per row (any multiple of
// 32 threads up to 1024); the sum of squares is one pass of float4 loads, reduced once per row.
// (Threadgroup arrays are declared in the kernels themselves, as MSL requires, and passed down.)
#include <metal_stdlib>
#include "common.h"

template <bool MUL>
METAL_FUNC void rms_norm_impl(device const float *x, device const float *w, device float *y,
                              constant mllm__norm_args &a, threadgroup float *scratch, uint row,
                              ushort tid, ushort ntg, ushort sg, ushort lane) {
    const uint n = a.n, n4 = n / 4;
    device const packed_float4 *x4 = (device const packed_float4 *)(x + (ulong)row * n);
    device packed_float4 *y4 = (device packed_float4 *)(y + (ulong)row * n);
    device const packed_float4 *w4 = (device const packed_float4 *)w;

    float ss = 0.0f;
    for (uint i = tid; i < n4; i += ntg) {
        const float4 v = x4[i];
        ss += dot(v, v);
    }
    for (uint i = 4 * n4 + tid; i < n; i += ntg) ss += x[(ulong)row * n + i] * x[(ulong)row * n + i];
    ss = tg_sum(ss, scratch, sg, lane, (ntg + 31) / 32);
    const float scale = rsqrt(ss / float(n) + a.eps);

    for (uint i = tid; i < n4; i += ntg) {
        float4 v = float4(x4[i]) * scale;
        if (MUL) v *= float4(w4[i]);
        y4[i] = v;
    }
    for (uint i = 4 * n4 + tid; i < n; i += ntg) {
        float v = x[(ulong)row * n + i] * scale;
        if (MUL) v *= w[i];
        y[(ulong)row * n + i] = v;
    }
}

kernel void rms_norm(device const float *x [[buffer(0)]], device float *y [[buffer(1)]],
                     constant mllm__norm_args &a [[buffer(2)]],
                     uint row [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                     ushort ntg [[threads_per_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],
                     ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float scratch[32];
    rms_norm_impl<false>(x, x, y, a, scratch, row, tid, ntg, sg, lane);
}

// Fused with the weight multiply (every RMSNorm of a transformer block has one).
kernel void rms_norm_mul(device const float *x [[buffer(0)]], device const float *w [[buffer(1)]],
                         device float *y [[buffer(2)]], constant mllm__norm_args &a [[buffer(3)]],
                         uint row [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                         ushort ntg [[threads_per_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],
                         ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float scratch[32];
    rms_norm_impl<true>(x, w, y, a, scratch, row, tid, ntg, sg, lane);
}
