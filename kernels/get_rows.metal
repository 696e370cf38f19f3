// Embedding lookup: out[t] = dequantized row ids[t] of W, for every weight type.  One threadgroup per
// id, its threads take 16-element chunks.  An id outside [0, N) yields a zero row rather than a read
// outside W (the host validates tokens; this keeps a bad one from faulting the GPU).
#include <metal_stdlib>
#include "common.h"

template <typename B>
kernel void get_rows(device const uchar *w [[buffer(0)]], device const int *ids [[buffer(1)]],
                     device float *out [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                     uint t [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                     ushort ntg [[threads_per_threadgroup]]) {
    const int id = ids[t];
    const bool ok = id >= 0 && uint(id) < a.N;
    device const uchar *row = w + (ulong)(ok ? id : 0) * a.row_bytes;
    device float *o = out + (ulong)t * a.K;
    device packed_float4 *o4 = (device packed_float4 *)o;
    const uint nch = a.K / 16;
    for (uint c = tid; c < nch; c += ntg) {
        float4 v[4];
        B::chunk(row, c, v);
        for (int i = 0; i < 4; i++) o4[4 * c + i] = ok ? v[i] : float4(0.0f);
    }
    for (uint k = 16 * nch + tid; k < a.K; k += ntg) o[k] = ok ? B::at(row, k) : 0.0f;
}

#define MLLM_GET_ROWS(name, TYPE)                                                                        \
    template [[host_name("get_rows_" #name)]] [[kernel]] void get_rows<blk_##name>(device const uchar *, \
        device const int *, device float *, constant mllm__mat_args &, uint, ushort, ushort);
MLLM__GPU_TYPES(MLLM_GET_ROWS)
