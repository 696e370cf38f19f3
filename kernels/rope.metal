// Rotary position embedding, in place on x[token][head][head_dim] (tokens a.stride floats apart).
// Pair i of the first n_rot dims turns by pos * freq_scale * freq_base^(-2i / n_rot) (rope_pair, common.h,
// which attn_kv_write shares): pairs are (2i, 2i + 1) for the normal variant (llama) and (i, i + n_rot / 2)
// for NeoX (qwen2/3).  With a.factors the frequency of pair i is divided by factors[i] (Llama 3.x's
// rope_freqs.weight).
// With a.n_heads_k the heads of a second tensor (K, in buffer 4) follow Q's in the grid: one dispatch
// rotates both.
// Grid: threadgroups (n_heads + n_heads_k, tokens), any threads per threadgroup; one thread per pair.
#include <metal_stdlib>
#include "common.h"

template <bool NEOX>
kernel void rope(device float *x [[buffer(0)]], device const int *pos [[buffer(1)]],
                 constant mllm__rope_args &a [[buffer(2)]], device const float *factors [[buffer(3)]],
                 device float *xk [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                 ushort tid [[thread_index_in_threadgroup]], ushort2 ntg [[threads_per_threadgroup]]) {
    const bool k = tg.x >= a.n_heads;
    device float *h = k ? xk + (ulong)tg.y * a.stride_k + (ulong)(tg.x - a.n_heads) * a.head_dim
                        : x + (ulong)tg.y * a.stride + (ulong)tg.x * a.head_dim;
    const float p = float(pos[tg.y]) * a.freq_scale;
    for (uint i = tid; i < a.n_rot / 2; i += ntg.x) rope_pair(h, i, p, a.n_rot, a.freq_base, a.factors ? factors : nullptr, NEOX);
}

template [[host_name("rope")]] [[kernel]] void rope<false>(device float *, device const int *,
    constant mllm__rope_args &, device const float *, device float *, uint2, ushort, ushort2);
template [[host_name("rope_neox")]] [[kernel]] void rope<true>(device float *, device const int *,
    constant mllm__rope_args &, device const float *, device float *, uint2, ushort, ushort2);
