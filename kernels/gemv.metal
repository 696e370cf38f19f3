// Matrix-vector products for decode: y[m][n] = dot(W[n], x[m]) (+ r[m][n] for the fused residual add).
// Written once over the per-type block loaders of common.h.  Each simdgroup owns MLLM__GEMV_ROWS weight
// rows; lane l walks the 16-element chunks l, l + 32, ... of the row, loads its x chunk once into
// registers and reuses it for all of its rows, and keeps per-lane partial sums: the only reduction is
// one simd_sum per row at the end.
// Grid: threadgroups (ceil(N / (NSG * ROWS)), M), 32 * MLLM__GEMV_NSG threads each.
#include <metal_stdlib>
#include "common.h"

template <typename B>
METAL_FUNC void gemv_impl(device const uchar *w, device const float *x, device float *y, device const float *r,
                          constant mllm__mat_args &a, uint2 tg, ushort sg, ushort lane) {
    const uint R = MLLM__GEMV_ROWS;
    const uint n0 = (tg.x * MLLM__GEMV_NSG + sg) * R;
    if (n0 >= a.N) return;                    // no barriers below: a simdgroup may leave on its own
    const uint nr = min(R, a.N - n0);         // rows of this simdgroup inside W
    device const uchar *w0 = w + (ulong)n0 * a.row_bytes;
    device const float *xm = x + (ulong)tg.y * a.K;
    device const packed_float4 *x4 = (device const packed_float4 *)xm;

    float acc[R] = {0.0f};
    const uint nch = a.K / 16;
    for (uint c = lane; c < nch; c += 32) {
        const float4 x0 = x4[4 * c], x1 = x4[4 * c + 1], x2 = x4[4 * c + 2], x3 = x4[4 * c + 3];
        for (uint i = 0; i < R; i++) {
            if (i < nr) {
                float4 v[4];
                B::chunk(w0 + i * a.row_bytes, c, v);
                acc[i] += dot(v[0], x0) + dot(v[1], x1) + dot(v[2], x2) + dot(v[3], x3);
            }
        }
    }
    // Float types only: the elements after the last whole chunk.
    for (uint k = 16 * nch + lane; k < a.K; k += 32)
        for (uint i = 0; i < nr; i++) acc[i] += B::at(w0 + i * a.row_bytes, k) * xm[k];

    device float *ym = y + (ulong)tg.y * a.N + n0;
    for (uint i = 0; i < R; i++) {
        const float s = simd_sum(acc[i]);
        if (lane == 0 && i < nr) ym[i] = r ? s + r[(ulong)tg.y * a.N + n0 + i] : s;
    }
}

template <typename B>
kernel void gemv(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                 device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                 uint2 tg [[threadgroup_position_in_grid]], ushort sg [[simdgroup_index_in_threadgroup]],
                 ushort lane [[thread_index_in_simdgroup]]) {
    gemv_impl<B>(w, x, y, nullptr, a, tg, sg, lane);
}

// Fused with the residual add that follows the attention output and FFN down projections:
// y = W x + r (y may alias r).
template <typename B>
kernel void gemv_add(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                     device const float *r [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                     ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    gemv_impl<B>(w, x, y, r, a, tg, sg, lane);
}

#define MLLM_GEMV(name, B)                                                                          \
    template [[host_name("gemv_" #name)]] [[kernel]] void gemv<B>(device const uchar *,             \
        device const float *, device float *, constant mllm__mat_args &, uint2, ushort, ushort);    \
    template [[host_name("gemv_add_" #name)]] [[kernel]] void gemv_add<B>(device const uchar *,     \
        device const float *, device float *, constant mllm__mat_args &, device const float *, uint2, \
        ushort, ushort);
MLLM_GEMV(f32, blk_f32)
MLLM_GEMV(f16, blk_f16)
MLLM_GEMV(bf16, blk_bf16)
MLLM_GEMV(q8_0, blk_q8_0)
MLLM_GEMV(q4_0, blk_q4_0)
MLLM_GEMV(q4_1, blk_q4_1)
MLLM_GEMV(q4_k, blk_q4_k)
MLLM_GEMV(q6_k, blk_q6_k)
