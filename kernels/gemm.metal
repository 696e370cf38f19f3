// Matrix-matrix products for prefill: Y[m][n] = dot(X[m], W[n]) (+ R[m][n]), X: M x K floats,
// W: N rows of K elements of any weight type, dequantized once per tile into threadgroup memory.
// A threadgroup computes a BM x BN tile of Y with 4 simdgroups (2 x 2), each owning 16 x 32 of it as
// 2 x 4 simdgroup_matrix 8x8 accumulators; the K loop stages BM x BK of X and BN x BK of W per step.
// Edges (M, N not tile multiples, float-type K not a multiple of 16) are zero-filled in the tiles and
// masked on the store, so any shape is correct.
// Grid: threadgroups (ceil(N / BN), ceil(M / BM)), MLLM__GEMM_THREADS threads each.
#include <metal_stdlib>
#include "common.h"

#define BM MLLM__GEMM_BM
#define BN MLLM__GEMM_BN
#define BK MLLM__GEMM_BK
enum { BKP = BK + 4 };   // padded tile rows: spreads the simdgroup loads over more memory banks
enum { XS4 = BM * BKP / 4, WS4 = BN * BKP / 4, YS4 = BM * BN / 4 };   // tile sizes in float4

template <typename B>
METAL_FUNC void gemm_impl(device const uchar *w, device const float *x, device float *y, device const float *r,
                          constant mllm__mat_args &a, threadgroup float (*Xs)[BKP], threadgroup float (*Ws)[BKP],
                          threadgroup float (*Ys)[BN], uint2 tg, ushort tid, ushort sg) {
    const uint M = a.M, N = a.N, K = a.K;
    const uint m0 = tg.y * BM, n0 = tg.x * BN;
    const uint sm = sg / 2, sn = sg % 2;      // this simdgroup's 16 x 32 part of the tile

    // What this thread stages: half (16 elements, one loader chunk) of one W row, 8 floats of one X row.
    const uint wn = tid / 2, wh = tid % 2;
    const uint xm = tid / 4, xq = tid % 4;
    const bool wok = n0 + wn < N, xok = m0 + xm < M;
    device const uchar *wrow = w + (ulong)(wok ? n0 + wn : 0) * a.row_bytes;
    device const float *xrow = x + (ulong)(xok ? m0 + xm : 0) * K;

    simdgroup_matrix<float, 8, 8> acc[2][4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

    for (uint k0 = 0; k0 < K; k0 += BK) {
        const uint kw = k0 + 16 * wh;
        float4 v[4];
        if (wok && kw + 16 <= K) {
            B::chunk(wrow, kw / 16, v);
        } else {
            for (uint i = 0; i < 16; i++) v[i / 4][i % 4] = wok && kw + i < K ? B::at(wrow, kw + i) : 0.0f;
        }
        for (int i = 0; i < 4; i++) *(threadgroup float4 *)&Ws[wn][16 * wh + 4 * i] = v[i];

        for (uint j = 0; j < 2; j++) {
            const uint kx = k0 + 8 * xq + 4 * j;
            float4 u;
            if (xok && kx + 4 <= K) u = *(device const packed_float4 *)(xrow + kx);
            else for (uint i = 0; i < 4; i++) u[i] = xok && kx + i < K ? xrow[kx + i] : 0.0f;
            *(threadgroup float4 *)&Xs[xm][8 * xq + 4 * j] = u;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);   // tiles complete before anyone multiplies

        for (uint kk = 0; kk < BK; kk += 8) {
            simdgroup_matrix<float, 8, 8> xa[2], wb[4];
            for (int i = 0; i < 2; i++) simdgroup_load(xa[i], &Xs[16 * sm + 8 * i][kk], BKP);
            // W is stored row = output, so load it transposed: wb[j](k, n) = Ws[n][k].
            for (int j = 0; j < 4; j++) simdgroup_load(wb[j], &Ws[32 * sn + 8 * j][kk], BKP, ulong2(0, 0), true);
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 4; j++) simdgroup_multiply_accumulate(acc[i][j], xa[i], wb[j], acc[i][j]);
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);   // everyone done reading before the next stage
    }

    // Whole tile and nothing to add: straight to device memory.  Otherwise through Ys, masked.
    // (The condition is uniform over the threadgroup, so the barrier below is reached by all or none.)
    if (!r && m0 + BM <= M && n0 + BN <= N) {
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++)
                simdgroup_store(acc[i][j], y + (ulong)(m0 + 16 * sm + 8 * i) * N + n0 + 32 * sn + 8 * j, N);
        return;
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) simdgroup_store(acc[i][j], &Ys[16 * sm + 8 * i][32 * sn + 8 * j], BN);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint e = tid; e < BM * BN; e += MLLM__GEMM_THREADS) {
        const uint m = m0 + e / BN, n = n0 + e % BN;
        if (m < M && n < N) {
            const ulong o = (ulong)m * N + n;
            y[o] = r ? Ys[e / BN][e % BN] + r[o] : Ys[e / BN][e % BN];
        }
    }
}

template <typename B>
kernel void gemm(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                 device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                 uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                 ushort sg [[simdgroup_index_in_threadgroup]]) {
    threadgroup float4 Xs[XS4];   // float4 arrays: 16-byte aligned for the float4 stores
    threadgroup float4 Ws[WS4];
    threadgroup float4 Ys[YS4];
    gemm_impl<B>(w, x, y, nullptr, a, (threadgroup float(*)[BKP])Xs, (threadgroup float(*)[BKP])Ws,
                 (threadgroup float(*)[BN])Ys, tg, tid, sg);
}

// Fused with the residual add: Y = X W^T + R (Y may alias R).
template <typename B>
kernel void gemm_add(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],
                     device const float *r [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                     ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]]) {
    threadgroup float4 Xs[XS4];   // float4 arrays: 16-byte aligned for the float4 stores
    threadgroup float4 Ws[WS4];
    threadgroup float4 Ys[YS4];
    gemm_impl<B>(w, x, y, r, a, (threadgroup float(*)[BKP])Xs, (threadgroup float(*)[BKP])Ws,
                 (threadgroup float(*)[BN])Ys, tg, tid, sg);
}

#define MLLM_GEMM(name, B)                                                                          \
    template [[host_name("gemm_" #name)]] [[kernel]] void gemm<B>(device const uchar *,             \
        device const float *, device float *, constant mllm__mat_args &, uint2, ushort, ushort);    \
    template [[host_name("gemm_add_" #name)]] [[kernel]] void gemm_add<B>(device const uchar *,     \
        device const float *, device float *, constant mllm__mat_args &, device const float *, uint2, \
        ushort, ushort);
MLLM_GEMM(f32, blk_f32)
MLLM_GEMM(f16, blk_f16)
MLLM_GEMM(bf16, blk_bf16)
MLLM_GEMM(q8_0, blk_q8_0)
MLLM_GEMM(q4_0, blk_q4_0)
MLLM_GEMM(q4_1, blk_q4_1)
MLLM_GEMM(q4_k, blk_q4_k)
MLLM_GEMM(q6_k, blk_q6_k)
