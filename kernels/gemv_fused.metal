// Fused decode products: the matrices a transformer block applies to one normalized x, in one
// dispatch instead of the RMSNorm, one per matrix and the elementwise op after them.  With a.norm.on, X
// is the residual stream and each threadgroup computes its row's RMSNorm scale itself (rms_scale, in
// rms_norm_mul's order; K is at most a few thousand floats) while its first weight loads are in flight;
// the inner loop is gemv_dots (common.h), so every output has the bits of the unfused kernels.
// Threadgroups of 32 * MLLM__GEMV_NSG threads, as in gemv.metal.

#include <metal_stdlib>
#include "common.h"

// Y_i = W_i X (+ bias_i) for up to three matrices of one type and one K (attention's Q, K, V with
// qwen2's biases, which enter where gemv_add's residual does: y = s + b, as add_bias adds them).
// Grid: (sum over i of ceil(N_i / (NSG * ROWS)), M): the row tiles of W_0, then of W_1, then of W_2.
template <typename B>
kernel void gemv_qkv(device const uchar *w0 [[buffer(0)]], device const uchar *w1 [[buffer(1)]],
                       device const uchar *w2 [[buffer(2)]], device const float *x [[buffer(3)]],
                       device float *y0 [[buffer(4)]], device float *y1 [[buffer(5)]], device float *y2 [[buffer(6)]],
                       constant mllm__qkv_args &a [[buffer(7)]], device const float *b0 [[buffer(8)]],
                       device const float *b1 [[buffer(9)]], device const float *b2 [[buffer(10)]],
                       device const float *nw [[buffer(11)]], uint2 tg [[threadgroup_position_in_grid]],
                       ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS], scratch[32];
    const uint RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS;
    const uint t0 = (a.N[0] + RT - 1) / RT, t1 = a.n_mats > 1 ? (a.N[1] + RT - 1) / RT : 0;
    const uint i = tg.x < t0 ? 0 : tg.x < t0 + t1 ? 1 : 2;   // which matrix this threadgroup's rows are in
    const uint tile = tg.x - (i == 0 ? 0 : i == 1 ? t0 : t0 + t1);
    device const uchar *w = i == 0 ? w0 : i == 1 ? w1 : w2;
    device float *y = i == 0 ? y0 : i == 1 ? y1 : y2;
    device const float *b = !a.bias[i] ? nullptr : i == 0 ? b0 : i == 1 ? b1 : b2;
    gemv_rows<B>(w, x + (ulong)tg.y * a.K, y + (ulong)tg.y * a.N[i], b, a.K, a.N[i], a.row_bytes[i], red, tile, sg,
                 lane, a.norm.on ? nw : nullptr, a.norm.eps, a.norm.threads, scratch);
}

// The gated FFN's first half: out = act(W_gate X) * (W_up X), act silu (swiglu) or GELU (geglu), for
// gate and up of one type.  Each threadgroup dots its RT rows of gate, then the same RT rows of up (two
// passes of gemv_dots: one threadgroup's fixed costs for both), and thread t < RT gates its row.
// Grid: (ceil(N / RT), M); buffers 0 W_gate, 1 W_up, 2 X, 3 out, 4 args, 5 the RMSNorm weight (read with
// a.norm.on).
template <typename B, bool GELU>
kernel void gemv_glu(device const uchar *wg [[buffer(0)]], device const uchar *wu [[buffer(1)]],
                     device const float *x [[buffer(2)]], device float *out [[buffer(3)]],
                     constant mllm__glu_args &a [[buffer(4)]], device const float *nw [[buffer(5)]],
                     uint2 tg [[threadgroup_position_in_grid]], ushort sg [[simdgroup_index_in_threadgroup]],
                     ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS], scratch[32];
    const uint RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS, n0 = tg.x * RT;
    if (n0 >= a.N) return;
    const uint nr = min(RT, a.N - n0), t = sg * 32u + lane;   // rows past N are read as row N - 1, never stored
    device const float *xm = x + (ulong)tg.y * a.K, *nwo = a.norm.on ? nw : nullptr;
    gemv_rowptrs wr;
    _Pragma("unroll") for (uint i = 0; i < RT; i++) wr.p[i] = wg + (ulong)(n0 + min(i, nr - 1)) * a.row_bytes;
    gemv_dots<B>(wr, xm, a.K, red, sg, lane, nwo, a.norm.eps, a.norm.threads, scratch);
    const float gate = t < nr ? gemv_sum(red, t) : 0.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);   // red is reused
    _Pragma("unroll") for (uint i = 0; i < RT; i++) wr.p[i] = wu + (ulong)(n0 + min(i, nr - 1)) * a.row_bytes;
    gemv_dots<B>(wr, xm, a.K, red, sg, lane, nwo, a.norm.eps, a.norm.threads, scratch);
    if (t < nr) out[(ulong)tg.y * a.N + n0 + t] = (GELU ? gelu_tanh(float4(gate)) : silu(float4(gate))).x * gemv_sum(red, t);
}

#define MLLM_GEMV_FUSED(name, TYPE)                                                                          \
    template [[host_name("gemv_qkv_" #name)]] [[kernel]] void gemv_qkv<blk_##name>(device const uchar *,     \
        device const uchar *, device const uchar *, device const float *, device float *, device float *,    \
        device float *, constant mllm__qkv_args &, device const float *, device const float *,               \
        device const float *, device const float *, uint2, ushort, ushort);                                  \
    template [[host_name("gemv_swiglu_" #name)]] [[kernel]] void gemv_glu<blk_##name, false>(                \
        device const uchar *, device const uchar *, device const float *, device float *,                    \
        constant mllm__glu_args &, device const float *, uint2, ushort, ushort);                             \
    template [[host_name("gemv_geglu_" #name)]] [[kernel]] void gemv_glu<blk_##name, true>(                  \
        device const uchar *, device const uchar *, device const float *, device float *,                    \
        constant mllm__glu_args &, device const float *, uint2, ushort, ushort);
MLLM__GPU_TYPES(MLLM_GEMV_FUSED)
