// Token sampling: one threadgroup per sampled row picks one token id under the rule written out above
// metalllm.h's mllm__sample ("The sampling rule"), so that the CPU and GPU samplers agree token for token.
// Instead of sorting the vocabulary, the top-k and top-p cuts are found by radix select over rank keys
// (4 bits a pass, histograms of counts or of weights), and the draw walks the kept tokens in id order
// with a threadgroup prefix sum.  Every pass recomputes the penalised, scaled logit from the row (cheaper
// than a scratch copy for these sizes, and it needs no extra buffer).
#include <metal_stdlib>
#include "common.h"

#define SAMP_NONE 0xffffffffu
#define SAMP_KEY_NEG_INF 0x007fffffu   // samp_key(-inf): the smallest key after sanitising

// Float bits, so that NaN/inf handling survives fast math: NaN -> -inf, +inf -> FLT_MAX, -0 -> +0.
METAL_FUNC float samp_sanitize(float x) {
    uint b = as_type<uint>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) b = 0xff800000u;
    else if (b == 0x7f800000u) b = 0x7f7fffffu;
    else if (b == 0x80000000u) b = 0u;
    return as_type<float>(b);
}
// Rank key: an unsigned int in the order of the (sanitised) float, so "larger x" is "larger key".
METAL_FUNC uint samp_key(float x) {
    const uint b = as_type<uint>(x);
    return b ^ ((b >> 31) != 0u ? 0xffffffffu : 0x80000000u);
}
METAL_FUNC float samp_unkey(uint k) { return as_type<float>(k ^ ((k >> 31) != 0u ? 0x80000000u : 0xffffffffu)); }

// Weight relative to the best candidate; clamped so fast math never sees exp(-inf); precise, to stay
// close to the CPU's expf at the cuts.
METAL_FUNC float samp_w(uint key, float x, float xmax) {
    return key == SAMP_KEY_NEG_INF ? 0.0f : precise::exp(max(x - xmax, -87.0f));
}

// Philox4x32-10 as mllm__philox: the uniform number `counter` of the stream `seed` (24 bits).
METAL_FUNC float samp_uniform(uint seed_lo, uint seed_hi, uint ctr_lo, uint ctr_hi) {
    uint c0 = ctr_lo, c1 = ctr_hi, c2 = 0, c3 = 0, k0 = seed_lo, k1 = seed_hi;
    for (int r = 0; r < 10; r++) {
        const ulong p0 = ulong(0xD2511F53u) * c0, p1 = ulong(0xCD9E8D57u) * c2;
        const uint n0 = uint(p1 >> 32) ^ c1 ^ k0, n2 = uint(p0 >> 32) ^ c3 ^ k1;
        c1 = uint(p1);
        c3 = uint(p0);
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return float(c0 >> 8) * (1.0f / 16777216.0f);
}

// What every pass needs to rebuild a candidate's value from the row.
struct samp_row {
    device const float *logits;
    device const ushort *counts;
    mllm__sample_row p;
    uint n;
    // Penalised logit, with the same operations as mllm__apply_penalties (no-ops when off).
    METAL_FUNC float logit(uint i) const {
        float l = logits[i];
        if (p.penalties != 0u) {
            const uint c = counts[i];
            if (c != 0u) {
                l = l > 0.0f ? l * p.inv_repeat : l * p.repeat;
                l -= fma(p.frequency, float(c), p.presence);
            }
        }
        return l;
    }
    METAL_FUNC float x(uint i) const { return samp_sanitize(p.greedy != 0u ? logit(i) : logit(i) * p.inv_temp); }
};

// A prefix of rank order (larger key first, equal keys by lower id): key > t, or key == t and id <= last.
// t = 0 holds every candidate (all keys are >= SAMP_KEY_NEG_INF).
struct samp_cut {
    uint t, last;
    METAL_FUNC bool holds(uint key, uint i) const { return key > t || (key == t && i <= last); }
};

struct samp_tg {   // the thread's place in the threadgroup
    ushort tid, ntg, sg, lane, nsg;
};

METAL_FUNC uint samp_max_u(uint v, threadgroup uint *s, samp_tg g) {
    v = simd_max(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (g.lane == 0) s[g.sg] = v;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return simd_max(g.lane < g.nsg ? s[g.lane] : 0u);
}
METAL_FUNC uint samp_min_u(uint v, threadgroup uint *s, samp_tg g) {
    v = simd_min(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (g.lane == 0) s[g.sg] = v;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return simd_min(g.lane < g.nsg ? s[g.lane] : SAMP_NONE);
}
// Exclusive prefix sum over the threads in index order, and the total; every thread sums the simdgroup
// totals in the same order, so all agree bit for bit on the total.
template <typename T> METAL_FUNC T samp_scan(T v, threadgroup T *s, samp_tg g, thread T &total) {
    const T e = simd_prefix_exclusive_sum(v), sum = simd_sum(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (g.lane == 0) s[g.sg] = sum;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    T base = 0, tot = 0;
    for (ushort k = 0; k < g.nsg; k++) {
        if (k == g.sg) base = tot;
        tot += s[k];
    }
    total = tot;
    return base + e;
}

// Radix select over rank keys, 4 bits a pass from the top: the key T of the candidate at which the
// running total of a(i) in rank order first reaches the target (a = 1 and target = k for top-k; a = the
// weight and target = frac * (total weight) for top-p).  Candidates: those within `within`.  Returns T;
// above = the total over keys > T, at = over keys == T, target as used.
template <bool MASS>
METAL_FUNC uint samp_select(const thread samp_row &r, samp_cut within, float xmax, float target, float frac,
                            threadgroup float *part, threadgroup float *bins, samp_tg g, thread float &above,
                            thread float &at, thread float &target_out) {
    uint prefix = 0;
    above = 0.0f;
    for (int shift = 28; shift >= 0; shift -= 4) {
        float h[16];
        for (int b = 0; b < 16; b++) h[b] = 0.0f;
        const uint hi_mask = shift == 28 ? 0u : 0xffffffffu << uint(shift + 4);
        for (uint i = g.tid; i < r.n; i += g.ntg) {
            const float x = r.x(i);
            const uint key = samp_key(x);
            if ((key & hi_mask) != prefix || !within.holds(key, i)) continue;
            h[(key >> uint(shift)) & 15u] += MASS ? samp_w(key, x, xmax) : 1.0f;
        }
        for (int b = 0; b < 16; b++) {
            const float v = simd_sum(h[b]);
            if (g.lane == 0) part[g.sg * 16 + b] = v;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        if (g.tid < 16) {
            float s = 0.0f;
            for (ushort k = 0; k < g.nsg; k++) s += part[k * 16 + g.tid];
            bins[g.tid] = s;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        if (MASS && shift == 28) {
            float total = 0.0f;
            for (int b = 15; b >= 0; b--) total += bins[b];
            target = frac * total;
        }
        // Walk the bins from the top.  If rounding leaves the target just out of reach, the last
        // non-empty bin is taken (that is: all candidates are kept).
        int d = -1, last = 0;
        float acc = above, acc_last = above;
        for (int b = 15; b >= 0; b--) {
            const float v = bins[b];
            if (v > 0.0f) {
                last = b;
                acc_last = acc;
                if (acc + v >= target) { d = b; break; }
            }
            acc += v;
        }
        if (d < 0) { d = last; acc = acc_last; }
        above = acc;
        at = bins[d];
        prefix |= uint(d) << uint(shift);
    }
    target_out = target;
    return prefix;
}

// The id of the rank-th (1-based) candidate within `within` whose key is t, in id order; SAMP_NONE if
// there are fewer.  Threads own contiguous id ranges here, so a prefix sum over threads is id order.
METAL_FUNC uint samp_tie_id(const thread samp_row &r, samp_cut within, uint t, uint rank, threadgroup uint *su,
                            samp_tg g) {
    const uint chunk = (r.n + g.ntg - 1) / g.ntg, begin = min(r.n, g.tid * chunk), end = min(r.n, begin + chunk);
    uint cnt = 0, total;
    for (uint i = begin; i < end; i++) {
        const uint key = samp_key(r.x(i));
        cnt += key == t && within.holds(key, i);
    }
    const uint before = samp_scan<uint>(cnt, su, g, total);
    uint found = SAMP_NONE;
    if (before < rank && rank <= before + cnt) {
        uint c = before;
        for (uint i = begin; i < end; i++) {
            const uint key = samp_key(r.x(i));
            if (key == t && within.holds(key, i) && ++c == rank) { found = i; break; }
        }
    }
    return samp_min_u(found, su, g);
}

// buffers: 0 logits [rows][n_vocab], 1 mllm__sample_row [rows], 2 ushort counts [seqs][n_vocab],
// 3 int ring [seqs][ring_cap], 4 int out [rows], 5 mllm__sample_args.  Grid: rows threadgroups of a
// multiple of 32 threads (<= 1024).  Afterwards counts/ring of each row's sequence with penalties on
// include its pick.
kernel void sample(device const float *logits [[buffer(0)]], device const mllm__sample_row *rows [[buffer(1)]],
                   device ushort *counts [[buffer(2)]], device int *ring [[buffer(3)]], device int *out [[buffer(4)]],
                   constant mllm__sample_args &a [[buffer(5)]], uint row [[threadgroup_position_in_grid]],
                   ushort tid [[thread_index_in_threadgroup]], ushort ntg [[threads_per_threadgroup]],
                   ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float part[512];   // per-simdgroup histograms: 32 x 16
    threadgroup float bins[16];
    threadgroup float sf[32];
    threadgroup uint su[32];
    const samp_tg g = {tid, ntg, sg, lane, ushort((ntg + 31) / 32)};
    samp_row r;
    r.p = rows[row];
    r.n = a.n_vocab;
    r.logits = logits + (ulong)row * r.n;
    r.counts = counts + (ulong)r.p.seq * r.n;
    const uint n = r.n;

    // The best candidate (largest key, lowest id): the greedy pick, and xmax for the weights.
    uint bk = 0, bi = SAMP_NONE;
    for (uint i = tid; i < n; i += ntg) {   // ids ascend per thread, so > keeps the lowest id
        const uint key = samp_key(r.x(i));
        if (key > bk) { bk = key; bi = i; }
    }
    const uint kmax = samp_max_u(bk, su, g);
    uint tok = samp_min_u(bk == kmax ? bi : SAMP_NONE, su, g);

    if (r.p.greedy == 0u && kmax != SAMP_KEY_NEG_INF) {   // all -inf: the best (id 0), as greedy
        const float xmax = samp_unkey(kmax);
        float above, at, target;
        samp_cut keep = {0u, SAMP_NONE};   // everything
        if (r.p.top_k > 0u && r.p.top_k < n) {
            const uint t = samp_select<false>(r, keep, xmax, float(r.p.top_k), 0.0f, part, bins, g, above, at, target);
            const uint rank = r.p.top_k - uint(above);   // ties at t to keep, lowest ids first
            keep.t = t;
            keep.last = rank < uint(at) ? samp_tie_id(r, keep, t, rank, su, g) : SAMP_NONE;
        }
        if (r.p.top_p > 0.0f && r.p.top_p < 1.0f) {
            const uint t = samp_select<true>(r, keep, xmax, 0.0f, r.p.top_p, part, bins, g, above, at, target);
            const float wt = samp_w(t, samp_unkey(t), xmax);
            uint last = SAMP_NONE;
            if (wt > 0.0f && at > 1.5f * wt) {   // several tokens tie at the cut: keep the fewest that reach
                const float need = ceil((target - above) / wt);
                last = samp_tie_id(r, keep, t, uint(clamp(need, 1.0f, float(n))), su, g);
            }
            // keep := keep within (key > t, or key == t and id <= last): t only tightens the cut
            if (t > keep.t) { keep.t = t; keep.last = last; }
            else if (t == keep.t) keep.last = min(keep.last, last);
        }

        // Draw: the first kept token, in id order, whose running weight exceeds u * (kept weight).
        const uint chunk = (n + ntg - 1) / ntg, begin = min(n, tid * chunk), end = min(n, begin + chunk);
        const float min_p = r.p.min_p;
        float local = 0.0f;
        uint last_pos = 0;   // last kept id with weight > 0, + 1
        for (uint i = begin; i < end; i++) {
            const float x = r.x(i);
            const uint key = samp_key(x);
            const float w = samp_w(key, x, xmax);
            if (!keep.holds(key, i) || !(w >= min_p)) continue;
            local += w;
            if (w > 0.0f) last_pos = i + 1;
        }
        float total;
        const float before = samp_scan<float>(local, sf, g, total);
        const float target_w = samp_uniform(r.p.seed_lo, r.p.seed_hi, r.p.counter_lo, r.p.counter_hi) * total;
        // Claims: the first kept id with weight > 0 in this range whose running weight exceeds target_w
        // (all of them do once `before` does; if the compiler summed in another order than for `local`,
        // the range's last).  The lowest claim wins; none (rounding): the last kept.
        uint pick = SAMP_NONE;
        if (before > target_w || target_w - before < local) {
            const float rem = target_w - before;
            float c = 0.0f;
            for (uint i = begin; i < end; i++) {
                const float x = r.x(i);
                const uint key = samp_key(x);
                const float w = samp_w(key, x, xmax);
                if (!keep.holds(key, i) || !(w >= min_p) || !(w > 0.0f)) continue;
                c += w;
                pick = i;
                if (before > target_w || rem < c) break;
            }
        }
        pick = samp_min_u(pick, su, g);
        tok = pick != SAMP_NONE ? pick : samp_max_u(last_pos, su, g) - 1u;
    }
    if (tok == SAMP_NONE) tok = 0;   // (n == 0)

    // The pick enters the penalty window: the token leaving it (history position n_hist - window) is
    // uncounted.  Every count read of this threadgroup came before the reductions' barriers above.
    // (Sequences without penalties keep no state.)
    if (tid == 0) out[row] = int(tok);
    if (tid == 0 && r.p.penalties != 0u) {
        const uint w = r.p.window, pos = r.p.n_hist % w;
        device int *rg = ring + (ulong)r.p.seq * a.ring_cap;
        device ushort *cr = counts + (ulong)r.p.seq * n;
        if (r.p.n_hist >= w) {
            const int old = rg[pos];
            if (old >= 0 && uint(old) < n) cr[old] -= 1;
        }
        rg[pos] = int(tok);
        if (tok < n) cr[tok] += 1;
    }
}
