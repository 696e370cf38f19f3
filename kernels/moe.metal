// Mixture of experts: routing, grouping by expert and the grouped expert products, each a single
// dispatch whatever n_expert is and however many experts are active (see mllm__moe_* in common.h).
// Assigned row r = token * n_used + slot; sel[r] is its expert, wts[r] its routing weight.
// The products reuse the inner loops of gemv.metal / gemm.metal (gemv_rows, gemm_tile in common.h),
// so expert weights may be of every type the block loaders read.
#include <metal_stdlib>
#include "common.h"

// Top-k of one token's router logits (lower id wins ties, as the CPU path), then the softmax over the
// selected k (= softmax over all, renormalised).  One simdgroup per token; lane l owns experts
// l, l + 32, ... and keeps which of them are taken in a bit mask.
// Grid: n_tokens threadgroups of 32 threads.
kernel void moe_route(device const float *logits [[buffer(0)]], device int *sel [[buffer(1)]],
                      device float *wts [[buffer(2)]], constant mllm__moe_args &a [[buffer(3)]],
                      uint t [[threadgroup_position_in_grid]], ushort lane [[thread_index_in_simdgroup]]) {
    const uint NONE = 0xffffffffu;
    device const float *l = logits + (ulong)t * a.n_expert;
    uint taken = 0;
    float val[MLLM__MOE_MAX_USED];
    for (uint k = 0; k < a.n_used; k++) {
        float bv = -INFINITY;
        uint bi = NONE;
        for (uint j = 0, e = lane; e < a.n_expert; j++, e += 32) {
            const float v = l[e];
            // ids grow with j, so strict > keeps the lower id of equal logits
            if (!((taken >> j) & 1u) && (bi == NONE || v > bv)) { bv = v; bi = e; }
        }
        const float mv = simd_max(bi == NONE ? -INFINITY : bv);
        const uint win = simd_min(bi != NONE && bv == mv ? bi : NONE);   // lowest id among the best
        if (win % 32 == lane) taken |= 1u << (win / 32);
        val[k] = mv;
        if (lane == 0) sel[(ulong)t * a.n_used + k] = int(win);
    }
    if (lane == 0) {
        float s = 0.0f;   // val[0] is the largest selected logit
        for (uint k = 0; k < a.n_used; k++) s += exp(val[k] - val[0]);
        for (uint k = 0; k < a.n_used; k++) wts[(ulong)t * a.n_used + k] = exp(val[k] - val[0]) / s;
    }
}

// Counting sort of the assigned rows by expert, and the gemm tile list (layout: MLLM__MOE_MAP_* in
// common.h).  One threadgroup; thread i owns experts i, i + MLLM__MOE_MAP_THREADS, ... and scans sel in
// order, so each expert's rows come out in increasing r: the output does not depend on the schedule.
// Grid: 1 threadgroup of MLLM__MOE_MAP_THREADS threads.
kernel void moe_map(device const int *sel [[buffer(0)]], device uint *map [[buffer(1)]],
                    constant mllm__moe_args &a [[buffer(2)]], ushort tid [[thread_index_in_threadgroup]]) {
    threadgroup uint first[MLLM__MOE_MAX_EXPERT + 1];   // per expert: counts, then first sorted row
    threadgroup uint tile0[MLLM__MOE_MAX_EXPERT + 1];   // per expert: first tile
    const uint NE = a.n_expert, TK = a.n_tokens * a.n_used, BMR = MLLM__GEMM_BM;
    for (uint e = tid; e < NE; e += MLLM__MOE_MAP_THREADS) {
        uint c = 0;
        for (uint r = 0; r < TK; r++) c += sel[r] == int(e);
        first[e] = c;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid == 0) {   // exclusive scans over <= 1024 experts: serial is short next to the products
        uint s = 0, st = 0;
        for (uint e = 0; e < NE; e++) {
            const uint c = first[e];
            first[e] = s;
            tile0[e] = st;
            s += c;
            st += (c + BMR - 1) / BMR;
        }
        first[NE] = s;
        tile0[NE] = st;
        map[MLLM__MOE_MAP_ROWS(NE) - 1] = s;
        map[MLLM__MOE_MAP_NTILES(NE, TK)] = st;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    device uint *rows = map + MLLM__MOE_MAP_ROWS(NE), *tiles = map + MLLM__MOE_MAP_TILES(NE, TK);
    for (uint e = tid; e < NE; e += MLLM__MOE_MAP_THREADS) {
        uint p = first[e];
        const uint end = first[e + 1];
        map[e] = p;
        for (uint q = p, i = tile0[e]; q < end; q += BMR, i++) {
            tiles[2 * i] = e;
            tiles[2 * i + 1] = q;
        }
        for (uint r = 0; r < TK && p < end; r++)
            if (sel[r] == int(e)) rows[p++] = r;
    }
}

// Grouped GEMV (decode): every assigned row r against its expert's matrix, all experts in one grid.
// Y row r = W[sel[r]] X row (gather ? r / n_used : r).
// Grid: threadgroups (ceil(N / (NSG * ROWS)), n_rows), 32 * MLLM__GEMV_NSG threads each.
template <typename B>
kernel void moe_gemv(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *y [[buffer(2)]], constant mllm__moe_mat_args &a [[buffer(3)]],
                     device const int *sel [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                     ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    const uint r = tg.y;
    device const uchar *we = w + (ulong)sel[r] * a.N * a.row_bytes;
    const uint xr = a.gather ? r / a.n_used : r;
    threadgroup float red[MLLM__GEMV_NSG * MLLM__GEMV_NSG * MLLM__GEMV_ROWS];
    gemv_rows<B>(we, x + (ulong)xr * a.K, y + (ulong)r * a.N, nullptr, a.K, a.N, a.row_bytes, red, tg.x, sg, lane);
}

// Grouped GEMM (prefill): tile row ty is moe_map's tile ty, up to BM sorted rows of one expert; the grid
// is an upper bound (MLLM__MOE_MAX_TILES) and tiles past the count leave at once.
// gather: X row of sorted row p is token rows[p] / n_used, Y row is p.  Otherwise X row p, Y row rows[p].
// Grid: threadgroups (ceil(N / BN), MLLM__MOE_MAX_TILES(n_expert, n_rows)), MLLM__GEMM_THREADS each.
enum { MOE_XS4 = MLLM__GEMM_BM * MLLM__GEMM_BKP / 4, MOE_WS4 = MLLM__GEMM_BN * MLLM__GEMM_BKP / 4,
       MOE_YS4 = MLLM__GEMM_BM * MLLM__GEMM_BN / 4 };
template <typename B>
kernel void moe_gemm(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *y [[buffer(2)]], constant mllm__moe_mat_args &a [[buffer(3)]],
                     device const uint *map [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],
                     ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]]) {
    threadgroup float4 Xs[MOE_XS4];   // float4 arrays: 16-byte aligned for the float4 stores
    threadgroup float4 Ws[MOE_WS4];
    threadgroup float4 Ys[MOE_YS4];
    const uint NE = a.n_expert, TK = a.n_rows, TM = MLLM__GEMM_BM, TN = MLLM__GEMM_BN;
    if (tg.y >= map[MLLM__MOE_MAP_NTILES(NE, TK)]) return;   // uniform over the threadgroup
    device const uint *rows = map + MLLM__MOE_MAP_ROWS(NE), *tile = map + MLLM__MOE_MAP_TILES(NE, TK) + 2 * tg.y;
    const uint e = tile[0], p0 = tile[1], pn = min(p0 + TM, map[e + 1]);   // sorted rows [p0, pn)
    const uint n0 = tg.x * TN, p = p0 + tid / 4;                            // gemm_tile: tid stages row tid / 4
    device const float *xrow = p < pn ? x + (ulong)(a.gather ? rows[p] / a.n_used : p) * a.K : nullptr;
    simdgroup_matrix<float, 8, 8> acc[8];
    gemm_tile<B>(w + (ulong)e * a.N * a.row_bytes, a.N, a.K, a.row_bytes, n0, xrow,
                 (threadgroup float(*)[MLLM__GEMM_BKP])Xs, (threadgroup float(*)[MLLM__GEMM_BKP])Ws, acc, tid, sg);

    // Rows are scattered (down) or the tile is partial: always through Ys, masked.
    threadgroup float(*Yt)[MLLM__GEMM_BN] = (threadgroup float(*)[MLLM__GEMM_BN])Ys;
    const uint sm = sg / 2, sn = sg % 2;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) simdgroup_store(acc[4 * i + j], &Yt[16 * sm + 8 * i][32 * sn + 8 * j], TN);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint i = tid; i < TM * TN; i += MLLM__GEMM_THREADS) {
        const uint q = p0 + i / TN, n = n0 + i % TN;
        if (q < pn && n < a.N) y[(ulong)(a.gather ? q : rows[q]) * a.N + n] = Yt[i / TN][i % TN];
    }
}

// out[t] = sum over slots k, in order, of wts[t, k] * y[t * n_used + k] (rows of n floats).
// Grid: threadgroups (ceil(n / (4 * MLLM__MOE_COMBINE_THREADS)), n_tokens), MLLM__MOE_COMBINE_THREADS each.
kernel void moe_combine(device const float *y [[buffer(0)]], device const float *wts [[buffer(1)]],
                        device float *out [[buffer(2)]], constant mllm__moe_args &a [[buffer(3)]],
                        uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]]) {
    const uint t = tg.y, d = 4 * (tg.x * MLLM__MOE_COMBINE_THREADS + tid), n = a.n;
    if (d >= n) return;
    device const float *yt = y + (ulong)t * a.n_used * n;
    device const float *wt = wts + (ulong)t * a.n_used;
    device float *o = out + (ulong)t * n;
    if (d + 4 <= n) {
        float4 s = 0.0f;
        for (uint k = 0; k < a.n_used; k++) s += wt[k] * float4(*(device const packed_float4 *)(yt + (ulong)k * n + d));
        *(device packed_float4 *)(o + d) = s;
    } else {
        for (uint i = d; i < n; i++) {
            float s = 0.0f;
            for (uint k = 0; k < a.n_used; k++) s += wt[k] * yt[(ulong)k * n + i];
            o[i] = s;
        }
    }
}

#define MLLM_MOE_MAT(name, TYPE)                                                                         \
    template [[host_name("moe_gemv_" #name)]] [[kernel]] void moe_gemv<blk_##name>(device const uchar *, \
        device const float *, device float *, constant mllm__moe_mat_args &, device const int *, uint2,  \
        ushort, ushort);                                                                                 \
    template [[host_name("moe_gemm_" #name)]] [[kernel]] void moe_gemm<blk_##name>(device const uchar *, \
        device const float *, device float *, constant mllm__moe_mat_args &, device const uint *, uint2, \
        ushort, ushort);
MLLM__GPU_TYPES(MLLM_MOE_MAT)
