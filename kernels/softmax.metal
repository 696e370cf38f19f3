// Softmax and argmax over rows of a vocabulary-sized vector: one threadgroup per row (a multiple of
// 32 threads, up to 1024), float4 loads, one threadgroup reduction per pass.
#include <metal_stdlib>
#include "common.h"

// y = exp(x - max) / sum(exp(x - max)); y may alias x.
kernel void softmax(device const float *x [[buffer(0)]], device float *y [[buffer(1)]],
                    constant mllm__vec_args &a [[buffer(2)]], uint row [[threadgroup_position_in_grid]],
                    ushort tid [[thread_index_in_threadgroup]], ushort ntg [[threads_per_threadgroup]],
                    ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float scratch[32];
    const uint n = a.n, n4 = n / 4, nsg = (ntg + 31) / 32;
    device const float *xr = x + (ulong)row * n;
    device float *yr = y + (ulong)row * n;
    device const packed_float4 *x4 = (device const packed_float4 *)xr;
    device packed_float4 *y4 = (device packed_float4 *)yr;

    float m = -INFINITY;
    for (uint i = tid; i < n4; i += ntg) {
        const float4 v = x4[i];
        m = max(m, max(max(v.x, v.y), max(v.z, v.w)));
    }
    for (uint i = 4 * n4 + tid; i < n; i += ntg) m = max(m, xr[i]);
    m = tg_max(m, scratch, sg, lane, nsg);

    float s = 0.0f;
    for (uint i = tid; i < n4; i += ntg) {
        const float4 e = exp(float4(x4[i]) - m);
        y4[i] = e;
        s += e.x + e.y + e.z + e.w;
    }
    for (uint i = 4 * n4 + tid; i < n; i += ntg) {
        const float e = exp(xr[i] - m);
        yr[i] = e;
        s += e;
    }
    const float inv = 1.0f / tg_sum(s, scratch, sg, lane, nsg);
    // Each thread rescales exactly the elements it wrote, so no barrier is needed on y.
    for (uint i = tid; i < n4; i += ntg) y4[i] = float4(y4[i]) * inv;
    for (uint i = 4 * n4 + tid; i < n; i += ntg) yr[i] *= inv;
}

// out[row] = index of the largest x (the lowest index among equal maxima, like the CPU sampler).
// NaNs never win.
kernel void argmax(device const float *x [[buffer(0)]], device int *out [[buffer(1)]],
                   constant mllm__vec_args &a [[buffer(2)]], uint row [[threadgroup_position_in_grid]],
                   ushort tid [[thread_index_in_threadgroup]], ushort ntg [[threads_per_threadgroup]],
                   ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float sv[32];
    threadgroup uint si[32];
    const uint n = a.n, nsg = (ntg + 31) / 32;
    device const float *xr = x + (ulong)row * n;
    device const packed_float4 *x4 = (device const packed_float4 *)xr;

    // Per thread: its indices come in increasing order, so a strict > keeps the first maximum.
    float best = -INFINITY;
    uint bi = 0xffffffffu;
    for (uint i = tid; i < n / 4; i += ntg) {
        const float4 v = x4[i];
        for (uint k = 0; k < 4; k++)
            if (v[k] > best) { best = v[k]; bi = 4 * i + k; }
    }
    for (uint i = 4 * (n / 4) + tid; i < n; i += ntg)
        if (xr[i] > best) { best = xr[i]; bi = i; }

    // Lowest index among the lanes holding the maximum, then the same across simdgroups.
    float m = simd_max(best);
    uint idx = simd_min(best == m ? bi : 0xffffffffu);
    if (lane == 0) { sv[sg] = m; si[sg] = idx; }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (sg == 0) {
        const float v = lane < nsg ? sv[lane] : -INFINITY;
        const uint vi = lane < nsg ? si[lane] : 0xffffffffu;
        m = simd_max(v);
        idx = simd_min(v == m ? vi : 0xffffffffu);
        // All -inf or NaN: fall back to 0 so the caller always gets a valid token.
        if (lane == 0) out[row] = idx == 0xffffffffu ? 0 : int(idx);
    }
}
