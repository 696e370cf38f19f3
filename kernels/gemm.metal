// Matrix-matrix products for prefill: Y[m][n] = dot(X[m], W[n]) (+ R[m][n]), X: M x K floats,
// W: N rows of K elements of any weight type, dequantized once per tile into threadgroup memory.
// A threadgroup computes a BM x BN tile of Y with 4 simdgroups (2 x 2), each owning 16 x 32 of it as
// 2 x 4 simdgroup_matrix 8x8 accumulators; the K loop is gemm_tile (common.h), shared with moe.metal.
// Edges (M, N not tile multiples, float-type K not a multiple of 16) are zero-filled in the tiles and
// masked on the store, so any shape is correct.
// Grid: threadgroups (ceil(N / BN), ceil(M / BM)), MLLM__GEMM_THREADS threads each.
#include <metal_stdlib>
#include "common.h"

#define BM MLLM__GEMM_BM
#define BN MLLM__GEMM_BN
enum { XS4 = BM * MLLM__GEMM_BKP / 4, WS4 = BN * MLLM__GEMM_BKP / 4, YS4 = BM * BN / 4 };   // tile sizes in float4

// The tile (tg.x, tm) of Y over K elements [k0, k0 + kn) (k0 a multiple of the type's block).
template <typename B>
METAL_FUNC void gemm_impl(device const uchar *w, device const float *x, device float *y, device const float *r,
                          uint M, uint N, uint K, uint row_bytes, uint k0, uint kn, threadgroup float (*Xs)[MLLM__GEMM_BKP],
                          threadgroup float (*Ws)[MLLM__GEMM_BKP], threadgroup float (*Ys)[BN], uint tgx, uint tm,
                          ushort tid, ushort sg) {
    const uint m0 = tm * BM, n0 = tgx * BN;
    const uint sm = sg / 2, sn = sg % 2;      // this simdgroup's 16 x 32 part of the tile
    const uint xm = m0 + tid / 4;             // the X row this thread stages (gemm_tile)
    simdgroup_matrix<float, 8, 8> acc[8];
    gemm_tile<B>(w + (ulong)(k0 / B::QK) * B::BYTES, N, kn, row_bytes, n0, xm < M ? x + (ulong)xm * K + k0 : nullptr,
                 Xs, Ws, acc, tid, sg);

    // Whole tile and nothing to add: straight to device memory.  Otherwise through Ys, masked.
    // (The condition is uniform over the threadgroup, so the barrier below is reached by all or none.)
    if (!r && m0 + BM <= M && n0 + BN <= N) {
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++)
                simdgroup_store(acc[4 * i + j], y + (ulong)(m0 + 16 * sm + 8 * i) * N + n0 + 32 * sn + 8 * j, N);
        return;
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) simdgroup_store(acc[4 * i + j], &Ys[16 * sm + 8 * i][32 * sn + 8 * j], BN);
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
    gemm_impl<B>(w, x, y, nullptr, a.M, a.N, a.K, a.row_bytes, 0, a.K, (threadgroup float(*)[MLLM__GEMM_BKP])Xs,
                 (threadgroup float(*)[MLLM__GEMM_BKP])Ws, (threadgroup float(*)[BN])Ys, tg.x, tg.y, tid, sg);
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
    gemm_impl<B>(w, x, y, r, a.M, a.N, a.K, a.row_bytes, 0, a.K, (threadgroup float(*)[MLLM__GEMM_BKP])Xs,
                 (threadgroup float(*)[MLLM__GEMM_BKP])Ws, (threadgroup float(*)[BN])Ys, tg.x, tg.y, tid, sg);
}

// Split K (MLLM__GEMM_SPLIT_K): a deep product on few tiles (the down projection at small M) leaves most of
// the GPU idle, so each tile's K is cut in parts of a.k_split, one threadgroup each, and every part's
// tile goes to part + s * M * N; gemm_reduce then adds the parts in order (deterministic) and the
// residual.  Grid: (ceil(N / BN), ceil(M / BM) * S): tg.y = s * ceil(M / BM) + the tile row.
template <typename B>
kernel void gemm_split(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                       device float *part [[buffer(2)]], constant mllm__split_args &a [[buffer(3)]],
                       uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                       ushort sg [[simdgroup_index_in_threadgroup]]) {
    threadgroup float4 Xs[XS4];
    threadgroup float4 Ws[WS4];
    threadgroup float4 Ys[YS4];
    const uint mt = (a.M + BM - 1) / BM, s = tg.y / mt, k0 = s * a.k_split;
    gemm_impl<B>(w, x, part + (ulong)s * a.M * a.N, nullptr, a.M, a.N, a.K, a.row_bytes, k0, min(a.k_split, a.K - k0),
                 (threadgroup float(*)[MLLM__GEMM_BKP])Xs, (threadgroup float(*)[MLLM__GEMM_BKP])Ws,
                 (threadgroup float(*)[BN])Ys, tg.x, tg.y % mt, tid, sg);
}

// y[i] = part[0][i] + ... + part[S - 1][i] (+ y[i] with a.add: the residual).  Grid: ceil(n / 256) x 256 threads.
kernel void gemm_reduce(device const float *part [[buffer(0)]], device float *y [[buffer(1)]],
                        constant mllm__reduce_args &a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (i >= a.n) return;
    float sum = part[i];
    for (uint s = 1; s < a.splits; s++) sum += part[(ulong)s * a.n + i];
    y[i] = a.add ? y[i] + sum : sum;
}

#define MLLM_GEMM(name, TYPE)                                                                            \
    template [[host_name("gemm_" #name)]] [[kernel]] void gemm<blk_##name>(device const uchar *,         \
        device const float *, device float *, constant mllm__mat_args &, uint2, ushort, ushort);         \
    template [[host_name("gemm_add_" #name)]] [[kernel]] void gemm_add<blk_##name>(device const uchar *, \
        device const float *, device float *, constant mllm__mat_args &, device const float *, uint2,    \
        ushort, ushort);                                                                                 \
    template [[host_name("gemm_split_" #name)]] [[kernel]] void gemm_split<blk_##name>(                  \
        device const uchar *, device const float *, device float *, constant mllm__split_args &, uint2,  \
        ushort, ushort);
MLLM__GPU_TYPES(MLLM_GEMM)
