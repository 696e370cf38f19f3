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
// Grid (n_chunks, n_head, n_seqs), NT threads: one query head over one chunk (MLLM__ATTN_CHUNK_OF its
// sequence's context).  Short contexts make this latency bound, so the loop has few dependent steps:
// simdgroup sg takes every NSG-th slab of 8 positions; a lane holds dimensions d = 4 lane + 128 i of q
// and of the output (so a K or V row is one coalesced load per simdgroup), and a slab's 8 K rows and 8 V
// rows are loaded together.  The slab's 8 dot products are summed over the simdgroup by halving
// exchanges (9 shuffles instead of 8 x 5), after which lane L holds position L / 4's score.  GQA heads
// of one KV head read the same rows, from cache.  Output: partial (max, sum, acc[hd]) per (sequence,
// head, chunk) for attn_reduce; a chunk wholly before the window writes nothing.
template <int HD>
kernel void attn_decode(device const float *q [[buffer(0)]], device const half *kp [[buffer(3)]],
                        device const half *vp [[buffer(4)]], device float *part [[buffer(6)]],
                        device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tables [[buffer(9)]],
                        constant mllm__attn_args &a [[buffer(10)]], uint3 tg [[threadgroup_position_in_grid]],
                        ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],
                        ushort lane [[thread_index_in_simdgroup]]) {
    constexpr int NC = (HD + 127) / 128;   // 4-dimension pieces per lane
    threadgroup float4 red[NSG][HD / 4];   // per-simdgroup accumulators for the final merge
    threadgroup float2 ml[NSG];            // per-simdgroup (max, sum)
    static_assert(HD % 8 == 0 && 4 * (NSG * HD + 2 * NSG) <= 32768, "attn_decode: unsupported head dimension");

    const mllm__attn_seq sq = seqs[tg.z];
    const uint n_ctx = uint(sq.pos0 + sq.n), chunk = MLLM__ATTN_CHUNK_OF(n_ctx);
    const uint c0 = max(tg.x * chunk, first_visible(n_ctx - 1, a));
    const uint c1 = min((tg.x + 1) * chunk, n_ctx);
    if (c0 >= c1) return;               // uniform: this sequence has fewer chunks, or the chunk is before the window
    const uint hq = tg.y, kvh = hq / (a.n_head / a.n_head_kv);
    device const int *table = tables + sq.blocks;
    device const float *qrow = q + ((ulong)(sq.first + sq.n - 1) * a.n_head + hq) * HD;

    // This lane's dimensions; past HD (head_dim 64, 80, 96) q is 0 there and the row offset is clamped,
    // so those lanes load valid memory and add nothing.
    uint dl[NC];
    float4 qv[NC], acc[NC];
    _Pragma("unroll") for (int i = 0; i < NC; i++) {
        const uint d = 4 * lane + 128 * i;
        dl[i] = d < uint(HD) ? d : 0u;
        qv[i] = d < uint(HD) ? float4(half4(*(device const float4 *)(qrow + d))) : float4(0.0f);   // rounded as the CPU
        acc[i] = float4(0.0f);
    }
    float m = NEG_BIG, l = 0.0f;        // l: this lane's share of the sum (lanes 4k count their position)
    const uint me = lane >> 2;          // the slab position whose score this lane ends with
    for (uint t0 = c0 + 8 * sg; t0 < c1; t0 += 8 * NSG) {   // uniform per simdgroup
        half4 kk[8][NC], vv[8][NC];
        _Pragma("unroll") for (int j = 0; j < 8; j++) {
            const uint row = kv_row(table, t0 + j < c1 ? t0 + j : c0, kvh, a);   // past the end: a valid row
            _Pragma("unroll") for (int i = 0; i < NC; i++) {
                kk[j][i] = *(device const half4 *)(kp + row + dl[i]);
                vv[j][i] = *(device const half4 *)(vp + row + dl[i]);
            }
        }
        float s[8];
        _Pragma("unroll") for (int j = 0; j < 8; j++) {
            s[j] = 0.0f;
            _Pragma("unroll") for (int i = 0; i < NC; i++) s[j] += dot(qv[i], float4(kk[j][i]));
        }
        // Halving exchanges: lanes with bit 4 set keep positions 4..7 and send 0..3 (the others the
        // reverse), then bit 3 over the 4 left, bit 2 over 2; bits 1 and 0 finish the one left.
        const bool b4 = (lane & 16) != 0, b3 = (lane & 8) != 0, b2 = (lane & 4) != 0;
        _Pragma("unroll") for (int j = 0; j < 4; j++)
            s[j] = (b4 ? s[j + 4] : s[j]) + simd_shuffle_xor(b4 ? s[j] : s[j + 4], 16);
        _Pragma("unroll") for (int j = 0; j < 2; j++)
            s[j] = (b3 ? s[j + 2] : s[j]) + simd_shuffle_xor(b3 ? s[j] : s[j + 2], 8);
        float sc = (b2 ? s[1] : s[0]) + simd_shuffle_xor(b2 ? s[0] : s[1], 4);
        sc += simd_shuffle_xor(sc, 2);
        sc += simd_shuffle_xor(sc, 1);
        sc = t0 + me < c1 ? a.scale * sc : NEG_BIG;
        const float mn = max(m, simd_max(sc));   // finite: position t0 >= c0 is in range
        const float corr = exp(m - mn), pr = exp(sc - mn);
        l = l * corr + ((lane & 3) == 0 ? pr : 0.0f);
        m = mn;
        _Pragma("unroll") for (int i = 0; i < NC; i++) acc[i] *= corr;
        _Pragma("unroll") for (int j = 0; j < 8; j++) {
            const float pj = simd_shuffle(pr, ushort(4 * j));
            const bool in = t0 + j < c1;   // (a row past the end is some other position's: never weighted)
            _Pragma("unroll") for (int i = 0; i < NC; i++) acc[i] += pj * (in ? float4(vv[j][i]) : float4(0.0f));
        }
    }

    // Merge the simdgroups (one with no slab has max NEG_BIG and weighs 0), write this chunk's partials.
    const float lsum = simd_sum(l);
    if (lane == 0) ml[sg] = float2(m, lsum);
    _Pragma("unroll") for (int i = 0; i < NC; i++)
        if (uint(4 * lane + 128 * i) < uint(HD)) red[sg][lane + 32 * i] = acc[i];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float mx = NEG_BIG;
    for (int i = 0; i < NSG; i++) mx = max(mx, ml[i].x);
    device float *pp = part + ((ulong)(tg.z * a.n_head + hq) * a.n_chunks + tg.x) * (HD + 2);
    for (uint d = tid; d < uint(HD); d += NT) {
        float sum = 0.0f, o = 0.0f;
        for (int i = 0; i < NSG; i++) {
            const float w = exp(ml[i].x - mx);
            sum += w * ml[i].y;
            o += w * ((threadgroup const float *)red[i])[d];
        }
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
