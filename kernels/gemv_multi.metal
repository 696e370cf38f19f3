// Matrix-vector products for decode batches of several tokens (one per sequence): y[m][n] = dot(W[n],
// x[m]) (+ r[m][n] when a.add: the residual of the attention output and FFN down projections; y may
// alias r), each weight chunk dequantized once for up to MLLM__GEMV_MULTI_R tokens (gemv_rows_multi,
// common.h); a token's result equals gemv's / gemv_add's bit for bit.  One kernel per type for both
// forms (a.add is uniform): the token loop is unrolled, so each instantiation is ~4x gemv's code.
// Grid: threadgroups (ceil(N / (NSG * ROWS)), ceil(M / MLLM__GEMV_MULTI_R)), 32 * MLLM__GEMV_NSG threads
// each.  The token groups of one row group are ceil(N / 4) threadgroups apart: each group re-reads
// its rows of W, from the last-level cache when the matrix fits there.
#include <metal_stdlib>
#include "common.h"

template <typename B>
kernel void gemv_multi(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                       device float *y [[buffer(2)]], constant mllm__gemv_multi_args &a [[buffer(3)]],
                       device const float *r [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                       ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS * MLLM__GEMV_MULTI_R];
    const uint m0 = tg.y * MLLM__GEMV_MULTI_R;
    gemv_rows_multi<B>(w, x + (ulong)m0 * a.K, y + (ulong)m0 * a.N, a.add ? r + (ulong)m0 * a.N : nullptr, a.K, a.N,
                       a.row_bytes, min((uint)MLLM__GEMV_MULTI_R, a.M - m0), red, tg.x, sg, lane);
}

#define MLLM_GEMV_MULTI(name, TYPE)                                                                          \
    template [[host_name("gemv_multi_" #name)]] [[kernel]] void gemv_multi<blk_##name>(device const uchar *, \
        device const float *, device float *, constant mllm__gemv_multi_args &, device const float *, uint2, \
        ushort, ushort);
MLLM__GPU_TYPES(MLLM_GEMV_MULTI)
