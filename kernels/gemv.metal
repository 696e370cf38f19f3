// Matrix-vector products for decode: y[m][n] = dot(W[n], x[m]) (+ r[m][n] for the fused residual add).
// Written once over the per-type block loaders of common.h; the inner loop is gemv_rows (common.h),
// shared with the grouped expert products of moe.metal.  Each threadgroup owns NSG * ROWS weight rows.
// Grid: threadgroups (ceil(N / (NSG * ROWS)), M), 32 * MLLM__GEMV_NSG threads each.
#include <metal_stdlib>
#include "common.h"

template <typename B>
kernel void gemv(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                 device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                 uint2 tg [[threadgroup_position_in_grid]], ushort sg [[simdgroup_index_in_threadgroup]],
                 ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS];
    gemv_rows<B>(w, x + (ulong)tg.y * a.K, y + (ulong)tg.y * a.N, nullptr, a.K, a.N, a.row_bytes, red, tg.x, sg, lane);
}

// Fused with the residual add that follows the attention output and FFN down projections:
// y = W x + r (y may alias r).
template <typename B>
kernel void gemv_add(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                     device const float *r [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                     ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS];
    gemv_rows<B>(w, x + (ulong)tg.y * a.K, y + (ulong)tg.y * a.N, r + (ulong)tg.y * a.N, a.K, a.N, a.row_bytes,
                 red, tg.x, sg, lane);
}

#define MLLM_GEMV(name, TYPE)                                                                            \
    template [[host_name("gemv_" #name)]] [[kernel]] void gemv<blk_##name>(device const uchar *,         \
        device const float *, device float *, constant mllm__mat_args &, uint2, ushort, ushort);         \
    template [[host_name("gemv_add_" #name)]] [[kernel]] void gemv_add<blk_##name>(device const uchar *, \
        device const float *, device float *, constant mllm__mat_args &, device const float *, uint2,    \
        ushort, ushort);
MLLM__GPU_TYPES(MLLM_GEMV)
