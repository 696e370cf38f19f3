// Causal attention over the paged F16 KV cache (mllm__kv's layout), with the step's new K/V written
// into their blocks on the GPU.  One layer, one batch of sequences; the host encodes
//   attn_kv_write, barrier, then either
//   attn_decode_hd<D>, barrier, attn_reduce        (every sequence has exactly one new token)
//   attn_prefill_hd<D>                             (any n >= 1: prompts, continuations, mixed batches)
// Numerics follow the CPU engine (mllm__attn_task): new K/V rounded to half, Q rounded to half,
// scores scale * dot(q, k) in float, softmax in float (online here, exact-max there).  In a windowed
// layer (a.n_swa > 0) the query at position p sees only (p - n_swa, p], and no kernel reads a position
// before that (its block may be gone).  Head dimensions: MLLM__ATTN_HEAD_DIMS (common.h); threadgroup
// memory stays under Apple's 32 KiB for each (static_asserts below).
// Bindings: see the attention block of common.h (the same indices in every kernel).
#include <metal_stdlib>
#include "common.h"

#define NSG MLLM__ATTN_NSG
#define NT (32 * NSG)
// "Minus infinity" for masks and empty maxima: finite, because Metal compiles with fast math (which
// may assume no infinities); exp(NEG_BIG - any real score) is still exactly 0.
#define NEG_BIG (-0.5f * FLT_MAX)

// The first position the query at qpos sees (the causal window's start).
METAL_FUNC uint first_visible(uint qpos, constant mllm__attn_args &a) {
    return a.n_swa && qpos >= a.n_swa ? qpos + 1 - a.n_swa : 0;
}

// Element offset of position p's row for KV head h in one layer's pool.
METAL_FUNC uint kv_row(device const int *table, uint p, uint h, constant mllm__attn_args &a) {
    const uint B = a.block_tokens;
    return ((uint(table[p / B]) * a.n_head_kv + h) * B + p % B) * a.head_dim;
}

// ---------------------------------------------------------------- new K/V into their blocks
// Grid (n_tokens, (a.rope ? n_head : 0) + n_head_kv), MLLM__ATTN_KVW_THREADS threads: one head of one
// token per threadgroup, so a decode step spreads over the GPU.  With a.rope the first n_head rows of the
// grid rotate the token's Q heads in place, the others its K head (then a barrier, since other threads
// read K's row) before writing that KV head's K and V rows; the rotation is the rope kernel's.  Each
// token's slot belongs to its own sequence only (the engine did copy-on-write before the step), so no two
// threads write the same element.
kernel void attn_kv_write(device float *q [[buffer(0)]], device float *k [[buffer(1)]],
                          device const float *v [[buffer(2)]], device half *kp [[buffer(3)]], device half *vp [[buffer(4)]],
                          device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tok_seq [[buffer(8)]],
                          device const int *tables [[buffer(9)]], constant mllm__attn_args &a [[buffer(10)]],
                          device const int *rpos [[buffer(11)]], device const float *factors [[buffer(12)]],
                          uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]]) {
    const uint t = tg.x, hd = a.head_dim, n = a.n_head_kv * hd, nq = a.rope ? a.n_head : 0;
    const float p = a.rope ? float(rpos[t]) * a.freq_scale : 0.0f;
    if (tg.y < nq) {                                  // uniform: a Q head
        device float *row = q + ((ulong)t * a.n_head + tg.y) * hd;
        for (uint i = tid; i < a.n_rot / 2; i += MLLM__ATTN_KVW_THREADS)
            rope_pair(row, i, p, a.n_rot, a.freq_base, a.factors ? factors : nullptr, a.rope == 2);
        return;
    }
    const uint h = tg.y - nq;
    device float *krow = k + (ulong)t * n + h * hd;
    if (a.rope) {
        for (uint i = tid; i < a.n_rot / 2; i += MLLM__ATTN_KVW_THREADS)
            rope_pair(krow, i, p, a.n_rot, a.freq_base, a.factors ? factors : nullptr, a.rope == 2);
        threadgroup_barrier(mem_flags::mem_device);
    }
    const mllm__attn_seq sq = seqs[tok_seq[t]];
    const uint pos = uint(sq.pos0 + (int(t) - sq.first));
    const uint o = kv_row(tables + sq.blocks, pos, h, a);
    device const float *vrow = v + (ulong)t * n + h * hd;
    for (uint d = tid; d < hd; d += MLLM__ATTN_KVW_THREADS) {
        kp[o + d] = half(krow[d]);
        vp[o + d] = half(vrow[d]);
    }
}

// ---------------------------------------------------------------- decode: one query per sequence
// Grid (n_chunks, n_head_kv * ceil(group / H), n_seqs), NT threads, H = a.heads_per_tg <= G =
// MLLM__ATTN_GROUP(HD).  A threadgroup takes up to H query heads sharing one KV head over one chunk
// (MLLM__ATTN_CHUNK_OF its sequence's context) so each K/V row is read once for those heads; the host
// picks a smaller H when the grid would not fill the GPU (a head's result does not depend on H).  Lane = position inside a 32-position tile (each lane does full
// dot products: no reduction per score); simdgroups take every NSG-th tile with their own online-softmax
// state, merged at the end.  Output: partial (max, sum, acc[hd]) per (sequence, head, chunk) for
// attn_reduce; a chunk wholly before the window writes nothing (attn_reduce starts after it).
template <int HD>
kernel void attn_decode(device const float *q [[buffer(0)]], device const half *kp [[buffer(3)]],
                        device const half *vp [[buffer(4)]], device float *part [[buffer(6)]],
                        device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tables [[buffer(9)]],
                        constant mllm__attn_args &a [[buffer(10)]], uint3 tg [[threadgroup_position_in_grid]],
                        ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],
                        ushort lane [[thread_index_in_simdgroup]]) {
    constexpr int G = MLLM__ATTN_GROUP(HD);
    constexpr int DPL = (HD + 31) / 32;   // output dims per lane: d = lane + 32 i (d < HD)
    threadgroup float4 qs[G][HD / 4];
    threadgroup float ps[NSG][G][32];   // this tile's probabilities, shared inside the simdgroup
    threadgroup uint rows[NSG][32];     // this tile's K/V row offsets
    threadgroup float red[NSG][G][HD];  // per-simdgroup accumulators for the final merge
    threadgroup float2 ml[NSG][G];      // per-simdgroup (max, sum)
    static_assert(4 * (G * HD + NSG * G * 32 + NSG * 32 + NSG * G * HD + 2 * NSG * G) <= 32768,
                  "attn_decode: threadgroup memory over 32 KiB");

    const mllm__attn_seq sq = seqs[tg.z];
    const uint n_ctx = uint(sq.pos0 + sq.n), chunk = MLLM__ATTN_CHUNK_OF(n_ctx);
    const uint c0 = max(tg.x * chunk, first_visible(n_ctx - 1, a));
    const uint c1 = min((tg.x + 1) * chunk, n_ctx);
    if (c0 >= c1) return;               // uniform: this sequence has fewer chunks, or the chunk is before the window
    const uint H = a.heads_per_tg, group = a.n_head / a.n_head_kv, nslice = (group + H - 1) / H;
    const uint kvh = tg.y / nslice, g0 = (tg.y % nslice) * H, ng = min(H, group - g0);
    const uint hq0 = kvh * group + g0;  // first query head of this threadgroup
    device const int *table = tables + sq.blocks;
    device const float *qrow = q + ((ulong)(sq.first + sq.n - 1) * a.n_head + hq0) * HD;

    for (uint e = tid; e < ng * HD; e += NT) ((threadgroup float *)qs)[e] = float(half(qrow[e]));   // as the CPU
    threadgroup_barrier(mem_flags::mem_threadgroup);

    float m[G], l[G], acc[G][DPL];      // l: this lane's share of the sum (the max is simdgroup-uniform)
    #pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = NEG_BIG;
        l[g] = 0.0f;
        #pragma unroll
        for (int i = 0; i < DPL; i++) acc[g][i] = 0.0f;
    }
    for (uint t0 = c0 + 32 * sg; t0 < c1; t0 += 32 * NSG) {   // uniform per simdgroup
        const uint p = t0 + lane;
        const bool ok = p < c1;
        const uint row = ok ? kv_row(table, p, kvh, a) : 0;
        rows[sg][lane] = row;
        float s[G];
        #pragma unroll
        for (int g = 0; g < G; g++) s[g] = 0.0f;
        device const packed_half4 *kr = (device const packed_half4 *)(kp + row);
        #pragma unroll
        for (int d4 = 0; d4 < HD / 4; d4++) {
            const float4 kk = float4(half4(kr[d4]));
            #pragma unroll
            for (int g = 0; g < G; g++)
                if (uint(g) < ng) s[g] += dot(qs[g][d4], kk);
        }
        #pragma unroll
        for (int g = 0; g < G; g++) {
            if (uint(g) >= ng) break;
            const float sc = ok ? a.scale * s[g] : NEG_BIG;
            const float mn = max(m[g], simd_max(sc));   // finite: lane 0 (position t0 >= c0) is always in range
            const float corr = exp(m[g] - mn), pr = exp(sc - mn);
            l[g] = l[g] * corr + pr;
            #pragma unroll
            for (int i = 0; i < DPL; i++) acc[g][i] *= corr;
            m[g] = mn;
            ps[sg][g][lane] = pr;
        }
        simdgroup_barrier(mem_flags::mem_threadgroup);    // ps, rows complete for the simdgroup
        // O += P V, rows 8 at a time: the 8 rows' loads go out together (one memory latency per 8 rows,
        // not per row); rows past the chunk's end are not read (their p is 0, their slot may be NaN).
        const uint nv = min(32u, c1 - t0);
        for (uint j0 = 0; j0 < nv; j0 += 8) {
            float vv[8][DPL];
            #pragma unroll
            for (int j = 0; j < 8; j++) {
                device const half *vr = vp + rows[sg][j0 + j] + lane;
                #pragma unroll
                for (int i = 0; i < DPL; i++)
                    vv[j][i] = j0 + j < nv && (HD % 32 == 0 || lane + 32 * i < HD) ? float(vr[32 * i]) : 0.0f;
            }
            #pragma unroll
            for (int j = 0; j < 8; j++)
                #pragma unroll
                for (int g = 0; g < G; g++)
                    if (uint(g) < ng)
                        #pragma unroll
                        for (int i = 0; i < DPL; i++) acc[g][i] += ps[sg][g][j0 + j] * vv[j][i];
        }
        simdgroup_barrier(mem_flags::mem_threadgroup);    // read before the next tile overwrites
    }

    // Merge the simdgroups (one with no tile has max NEG_BIG and weighs 0), write this chunk's partials.
    #pragma unroll
    for (int g = 0; g < G; g++) {
        if (uint(g) >= ng) break;
        const float lsum = simd_sum(l[g]);
        if (lane == 0) ml[sg][g] = float2(m[g], lsum);
        #pragma unroll
        for (int i = 0; i < DPL; i++)
            if (HD % 32 == 0 || lane + 32 * i < HD) red[sg][g][lane + 32 * i] = acc[g][i];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint e = tid; e < ng * HD; e += NT) {
        const uint g = e / HD, d = e % HD;
        float mx = NEG_BIG;
        for (int i = 0; i < NSG; i++) mx = max(mx, ml[i][g].x);
        float sum = 0.0f, o = 0.0f;
        for (int i = 0; i < NSG; i++) {
            const float w = exp(ml[i][g].x - mx);
            sum += w * ml[i][g].y;
            o += w * red[i][g][d];
        }
        device float *pp = part + ((ulong)(tg.z * a.n_head + hq0 + g) * a.n_chunks + tg.x) * (HD + 2);
        if (d == 0) { pp[0] = mx; pp[1] = sum; }
        pp[2 + d] = o;
    }
}

// Merges a sequence's chunk partials: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c, over the
// chunks attn_decode wrote (from the window's).  Grid (n_head, n_seqs), head_dim threads (one output
// element each).
kernel void attn_reduce(device float *out [[buffer(5)]], device const float *part [[buffer(6)]],
                        device const mllm__attn_seq *seqs [[buffer(7)]], constant mllm__attn_args &a [[buffer(10)]],
                        uint2 tg [[threadgroup_position_in_grid]], ushort d [[thread_index_in_threadgroup]]) {
    const mllm__attn_seq sq = seqs[tg.y];
    const uint hd = a.head_dim, n_ctx = uint(sq.pos0 + sq.n), chunk = MLLM__ATTN_CHUNK_OF(n_ctx);
    const uint nc = (n_ctx + chunk - 1) / chunk, c_lo = first_visible(n_ctx - 1, a) / chunk;
    device const float *pp = part + (ulong)(tg.y * a.n_head + tg.x) * a.n_chunks * (hd + 2);
    float mx = NEG_BIG;
    for (uint c = c_lo; c < nc; c++) mx = max(mx, pp[c * (hd + 2)]);
    float sum = 0.0f, o = 0.0f;
    for (uint c = c_lo; c < nc; c++) {
        const float w = exp(pp[c * (hd + 2)] - mx);
        sum += w * pp[c * (hd + 2) + 1];
        o += w * pp[c * (hd + 2) + 2 + d];
    }
    out[((ulong)(sq.first + sq.n - 1) * a.n_head + tg.x) * hd + d] = o / sum;
}

// ---------------------------------------------------------------- prefill: flash attention
// Grid (ceil(max n / BQ), n_head, n_seqs), NT threads.  A threadgroup takes BQ queries of one head;
// simdgroup sg owns query rows [8 sg, 8 sg + 8) and keeps Q (8 x HD) and O (8 x HD) as 8x8
// simdgroup matrices.  Per key tile of BK positions (staged once in threadgroup memory, f16 -> f32):
// S = Q K^T, online softmax by rows (4 lanes per row), O = O * corr + P V.  Causal mask: key position
// <= query position (and inside the query's window); key tiles run from the window start of the tile's
// first query to its last query.  Q comes in and O goes out through threadgroup memory in slabs of QW
// columns (one slab below head_dim 256: a whole 32 x 256 staging would not fit beside the rest).
METAL_FUNC uint frag_row(ushort lane) { return ((lane >> 4) & 1) * 4 + ((lane >> 1) & 3); }   // Apple's 8x8 layout

template <int HD>
kernel void attn_prefill(device const float *q [[buffer(0)]], device const half *kp [[buffer(3)]],
                         device const half *vp [[buffer(4)]], device float *out [[buffer(5)]],
                         device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tables [[buffer(9)]],
                         constant mllm__attn_args &a [[buffer(10)]], uint3 tg [[threadgroup_position_in_grid]],
                         ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],
                         ushort lane [[thread_index_in_simdgroup]]) {
    constexpr int BQ = MLLM__ATTN_BQ, BK = 2048 / HD / 8 * 8;   // BK keys per tile: K + V tiles <= 16.5 KiB
    constexpr int LD = HD + 4;                          // padded rows: fewer bank conflicts
    constexpr int CPL = BK / 4;                         // score columns per lane (4 lanes per row)
    constexpr int QW = HD > 128 ? 128 : HD, LQ = QW + 4; // Q / O staging: slabs of QW columns, rows LQ apart
    constexpr int KVF = 2 * BK * LD > BQ * LQ ? 2 * BK * LD : BQ * LQ;   // floats of kvbuf
    threadgroup float4 kvbuf[KVF / 4];                  // K tile, V tile; also Q and O staging (BQ x LQ)
    threadgroup float ss[NSG][8][BK];                   // per simdgroup: scores, then probabilities
    threadgroup float rs[NSG][8];                       // per simdgroup row: rescale factor, then 1 / sum
    static_assert(BK >= 8 && HD % QW == 0 && KVF % 4 == 0, "attn_prefill: unsupported head dimension");
    static_assert(4 * (KVF + NSG * 8 * BK + NSG * 8) <= 32768, "attn_prefill: threadgroup memory over 32 KiB");
    threadgroup float(*Ks)[LD] = (threadgroup float(*)[LD])kvbuf;
    threadgroup float(*Vs)[LD] = Ks + BK;
    threadgroup float(*Qs)[LQ] = (threadgroup float(*)[LQ])kvbuf;

    const mllm__attn_seq sq = seqs[tg.z];
    const uint q0 = tg.x * BQ;
    if (q0 >= uint(sq.n)) return;       // uniform: a shorter sequence
    const uint hq = tg.y, kvh = hq / (a.n_head / a.n_head_kv);
    const uint nq = min(uint(BQ), uint(sq.n) - q0), kend = uint(sq.pos0) + q0 + nq;   // keys [0, kend)
    device const int *table = tables + sq.blocks;

    // Every loop over qm / om is unrolled: constant indices keep them in registers (CUDA's compiler put
    // them in local memory otherwise).
    simdgroup_matrix<float, 8, 8> qm[HD / 8], om[HD / 8];
    _Pragma("unroll") for (int c0 = 0; c0 < HD; c0 += QW) {
        for (uint e = tid; e < BQ * QW; e += NT) {
            const uint r = e / QW, d = e % QW;
            Qs[r][d] = r < nq ? float(half(q[((ulong)(sq.first + q0 + r) * a.n_head + hq) * HD + c0 + d])) : 0.0f;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        _Pragma("unroll") for (int k = 0; k < QW / 8; k++) simdgroup_load(qm[c0 / 8 + k], &Qs[8 * sg][8 * k], LQ);
        threadgroup_barrier(mem_flags::mem_threadgroup);   // Q read before the next slab or the K/V tiles overwrite it
    }
    _Pragma("unroll") for (int k = 0; k < HD / 8; k++) om[k] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

    // This lane's softmax row and columns; padding rows act as the tile's last query (never stored).
    const uint r = lane / 4, cq = lane % 4;
    const uint qpos = min(uint(sq.pos0) + q0 + 8 * sg + r, kend - 1), qlo = first_visible(qpos, a);
    float m = NEG_BIG, l = 0.0f;      // l: this lane's share of the row sum
    for (uint k0 = first_visible(uint(sq.pos0) + q0, a); k0 < kend; k0 += BK) {
        for (uint e = 4 * tid; e < BK * HD; e += 4 * NT) {   // zero past kend: P = 0 there, V must not be NaN
            const uint j = e / HD, d = e % HD, p = k0 + j;
            float4 kk = 0.0f, vv = 0.0f;
            if (p < kend) {
                const uint o = kv_row(table, p, kvh, a) + d;
                kk = float4(half4(*(device const packed_half4 *)(kp + o)));
                vv = float4(half4(*(device const packed_half4 *)(vp + o)));
            }
            *(threadgroup float4 *)&Ks[j][d] = kk;
            *(threadgroup float4 *)&Vs[j][d] = vv;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);

        for (int jb = 0; jb < BK / 8; jb++) {             // S = Q K^T, 8 keys at a time
            simdgroup_matrix<float, 8, 8> s = make_filled_simdgroup_matrix<float, 8, 8>(0.0f), kt;
            _Pragma("unroll") for (int k = 0; k < HD / 8; k++) {
                simdgroup_load(kt, &Ks[8 * jb][8 * k], LD, ulong2(0, 0), true);
                simdgroup_multiply_accumulate(s, qm[k], kt, s);
            }
            simdgroup_store(s, &ss[sg][0][8 * jb], BK);
        }
        simdgroup_barrier(mem_flags::mem_threadgroup);

        float mx = NEG_BIG;
        for (int c = 0; c < CPL; c++) {
            const uint col = cq * CPL + c;
            mx = max(mx, k0 + col <= qpos && k0 + col >= qlo ? a.scale * ss[sg][r][col] : NEG_BIG);
        }
        mx = max(mx, simd_shuffle_xor(mx, 1));
        mx = max(mx, simd_shuffle_xor(mx, 2));
        // A row whose window starts past this tile keeps m = NEG_BIG, l = 0 (corr = e^0 = 1, p = 0).
        const float mn = max(m, mx);
        float ls = 0.0f;
        for (int c = 0; c < CPL; c++) {
            const uint col = cq * CPL + c;
            const float p = k0 + col <= qpos && k0 + col >= qlo ? exp(a.scale * ss[sg][r][col] - mn) : 0.0f;
            ss[sg][r][col] = p;
            ls += p;
        }
        const float corr = exp(m - mn);
        l = l * corr + ls;
        m = mn;
        if (cq == 0) rs[sg][r] = corr;
        simdgroup_barrier(mem_flags::mem_threadgroup);

        const float f = rs[sg][frag_row(lane)];          // rescale the rows of O this lane holds
        _Pragma("unroll") for (int k = 0; k < HD / 8; k++) om[k].thread_elements() *= f;
        for (int kb = 0; kb < BK / 8; kb++) {             // O += P V
            simdgroup_matrix<float, 8, 8> pm, vm;
            simdgroup_load(pm, &ss[sg][0][8 * kb], BK);
            _Pragma("unroll") for (int k = 0; k < HD / 8; k++) {
                simdgroup_load(vm, &Vs[8 * kb][8 * k], LD);
                simdgroup_multiply_accumulate(om[k], pm, vm, om[k]);
            }
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);   // tiles, ss and rs read before reuse
    }

    l += simd_shuffle_xor(l, 1);
    l += simd_shuffle_xor(l, 2);
    if (cq == 0) rs[sg][r] = 1.0f / l;
    threadgroup float(*Os)[LQ] = Qs + 8 * sg;            // this simdgroup's 8 rows of staging
    _Pragma("unroll") for (int c0 = 0; c0 < HD; c0 += QW) {
        _Pragma("unroll") for (int k = 0; k < QW / 8; k++) simdgroup_store(om[c0 / 8 + k], &Os[0][8 * k], LQ);
        simdgroup_barrier(mem_flags::mem_threadgroup);
        for (uint e = lane; e < 8 * QW; e += 32) {
            const uint rr = e / QW, d = e % QW, qi = q0 + 8 * sg + rr;
            if (qi < uint(sq.n)) out[((ulong)(sq.first + qi) * a.n_head + hq) * HD + c0 + d] = Os[rr][d] * rs[sg][rr];
        }
        simdgroup_barrier(mem_flags::mem_threadgroup);   // read before the next slab overwrites it
    }
}

#define MLLM_ATTN(D)                                                                                         \
    template [[host_name("attn_decode_hd" #D)]] [[kernel]] void attn_decode<D>(device const float *,         \
        device const half *, device const half *, device float *, device const mllm__attn_seq *,             \
        device const int *, constant mllm__attn_args &, uint3, ushort, ushort, ushort);                      \
    template [[host_name("attn_prefill_hd" #D)]] [[kernel]] void attn_prefill<D>(device const float *,       \
        device const half *, device const half *, device float *, device const mllm__attn_seq *,             \
        device const int *, constant mllm__attn_args &, uint3, ushort, ushort, ushort);
MLLM__ATTN_HEAD_DIMS(MLLM_ATTN)
