// Matrix-vector products for decode batches of several tokens (one per sequence): y[m][n] = dot(W[n],
// x[m]) (+ r[m][n] when a.add: the residual of the attention output and FFN down projections; y may
// alias r), each weight chunk dequantized once for up to MLLM__GEMV_MULTI_R tokens (gemv_rows_multi,
// common.h); a token's result equals gemv's / gemv_add's bit for bit.  One kernel per type for both
// forms (a.add is uniform): the token loop is unrolled, so each instantiation is ~4x gemv's code.
// Grid: ceil(N / (NSG * ROWS)) * G threadgroups in one dimension, G = ceil(M / MLLM__GEMV_MULTI_R) token
// groups, 32 * MLLM__GEMV_NSG threads each.  Threadgroup i takes token group i % G of row group i / G:
// the G threadgroups that read the same weight rows are neighbours in launch order, so they run
// together and W comes from memory once (the others hit the cache), even for a matrix larger than the
// last-level cache (an LM head); one dimension also leaves no grid limit on N (CUDA's y: 65535).
#include <metal_stdlib>
#include "common.h"

template <typename B>
kernel void gemv_multi(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                       device float *y [[buffer(2)]], constant mllm__gemv_multi_args &a [[buffer(3)]],
                       device const float *r [[buffer(4)]], uint tg [[threadgroup_position_in_grid]],
                       ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS * MLLM__GEMV_MULTI_R];
    const uint G = (a.M + MLLM__GEMV_MULTI_R - 1) / MLLM__GEMV_MULTI_R, m0 = tg % G * MLLM__GEMV_MULTI_R;
    gemv_rows_multi<B>(w, x + (ulong)m0 * a.K, y + (ulong)m0 * a.N, a.add ? r + (ulong)m0 * a.N : nullptr, a.K, a.N,
                       a.row_bytes, min((uint)MLLM__GEMV_MULTI_R, a.M - m0), red, tg / G, sg, lane);
}

#define MLLM_GEMV_MULTI(name, TYPE)                                                                          \
    template [[host_name("gemv_multi_" #name)]] [[kernel]] void gemv_multi<blk_##name>(device const uchar *, \
        device const float *, device float *, constant mllm__gemv_multi_args &, device const float *, uint,  \
        ushort, ushort);
MLLM__GPU_TYPES(MLLM_GEMV_MULTI)
