// The MoE kernels (kernels/moe.metal) through the host encoder mllm__gpu_encode_moe on the emulated GPU
// (tests/emu/emu_device.h: dispatches between barriers run last-first, so a missing barrier shows),
// against the engine's own CPU MoE, mllm__moe, called with a minimal context in precise mode (F32
// activations, weight rows dequantized by mllm__dequant_row): the same routing, counting sort and
// float arithmetic as the engine's CPU path.  Checked: the selected experts (exactly, ties included),
// the routing weights, the GPU's expert-sorted rows (exactly: both sorts keep row order within an
// expert), the combined output; random shapes with tile edges, experts with no tokens, one expert with
// every token, every weight type, both the GEMV and GEMM paths, the emulator's schedules; and that the
// dispatch count does not depend on n_expert or on how many experts are active.
#include "kernels_test.h"
#include "emu_device.h"

#include <algorithm>

namespace {
int rnd(int lo, int hi) { return lo + (int)(kt_u32() % (uint32_t)(hi - lo + 1)); }

// The CPU reference: mllm__moe with just what it reads.
struct cpu_moe {
    mllm_model *m;
    mllm__exec ex;
    mllm__moe_buf b;
    std::vector<float> row_buf;
    cpu_moe(const mllm__hparams &hp, int T) {
        m = (mllm_model *)calloc(1, sizeof *m);
        memset(&ex, 0, sizeof ex);
        m->hp = hp;
        m->precise = 1;
        ex.model = m;
        mllm__pool_create(&ex.pool, 1);
        const size_t mx = (size_t)(hp.n_embd > hp.n_ff_exp ? hp.n_embd : hp.n_ff_exp);
        row_buf.resize(mx);
        ex.row_buf = row_buf.data();
        ex.row_buf_floats = mx;
        mllm__moe_buf_alloc(&b, &hp, T);
    }
    ~cpu_moe() {
        mllm__moe_buf_free(&b);
        mllm__pool_free(ex.pool);
        free(m);
    }
    void run(const mllm__layer &L, const float *x, int T, float *out) { mllm__moe(&ex, &b, &L, x, T, out); }
};

mllm__weight mk_weight(const kt_type &t, const void *data, int cols, int rows, int n_mat) {
    mllm__weight w;
    memset(&w, 0, sizeof w);
    w.data = data;
    w.type = t.id;
    w.cols = cols;
    w.rows = rows;
    w.n_mat = n_mat;
    w.row_bytes = (size_t)cols / t.qk * t.bytes;
    return w;
}

// A shared GPU buffer holding a copy of p.
mllm__gpu_buf *upload(mllm__gpu *g, const void *p, size_t bytes) {
    mllm__gpu_buf *b = g->vt->buf_new(g->dev, bytes, MLLM__GPU_SHARED);
    memcpy(g->vt->buf_contents(b), p, bytes);
    return b;
}

enum { RIG_NONE, RIG_ONE_HOT_EXPERT, RIG_K_EXPERTS };   // RIG_*: every token picks expert `hot` / the same K

struct moe_case {
    const kt_type *tg, *tu, *td;   // gate, up, down weight types
    int NE, K, T, E, F;
    int rig;
    int use_gemm;                  // -1: the encoder chooses by T
    emu::Variant v;
};

struct run_result { uint64_t dispatches, barriers, executed; bool ok; };

// Runs one MoE layer on the emulated GPU and compares with mllm__moe.
run_result check_moe(const moe_case &c) {
    kt_scope scope;
    run_result res = {0, 0, 0, false};
    const int NE = c.NE, K = c.K, T = c.T, E = c.E, F = c.F;
    mllm__hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_embd = E; hp.n_expert = NE; hp.n_expert_used = K; hp.n_ff_exp = F;

    // Router and input; rigged cases add a column that dominates the chosen experts' logits.
    std::vector<float> router((size_t)NE * E), x((size_t)T * E);
    for (float &f : router) f = kt_uniform(-1, 1) / sqrtf((float)E);
    const int hot = rnd(0, NE - 1);
    std::vector<int> chosen;   // RIG_K_EXPERTS: K distinct experts
    for (int i = 0; i < K; i++) chosen.push_back((hot + i) % NE);
    if (c.rig != RIG_NONE) {
        for (int e = 0; e < NE; e++) router[(size_t)e * E] = 0;
        if (c.rig == RIG_ONE_HOT_EXPERT) router[(size_t)hot * E] = 4;
        else for (int i = 0; i < K; i++) router[(size_t)chosen[i] * E] = 4 + 0.25f * i;
    }
    // Resample a token whose k-th and (k+1)-th logits are too close: float rounding (CPU vs GPU order of
    // summation) could then pick different experts, which is not what this test is about.
    for (int t = 0; t < T; t++) {
        for (int tries = 0; tries < 1000; tries++) {
            for (int j = 0; j < E; j++) x[(size_t)t * E + j] = kt_uniform(-1, 1);
            if (c.rig != RIG_NONE) x[(size_t)t * E] = 4;
            std::vector<double> l(NE);
            for (int e = 0; e < NE; e++) {
                double s = 0;
                for (int j = 0; j < E; j++) s += (double)router[(size_t)e * E + j] * x[(size_t)t * E + j];
                l[e] = s;
            }
            std::sort(l.begin(), l.end(), [](double a, double b) { return a > b; });
            double gap = 1;
            for (int i = 0; i + 1 < NE && i < K; i++) gap = std::min(gap, l[i] - l[i + 1]);
            if (gap > 1e-3) break;
        }
    }
    const size_t rbg = (size_t)E / c.tg->qk * c.tg->bytes, rbu = (size_t)E / c.tu->qk * c.tu->bytes,
                 rbd = (size_t)F / c.td->qk * c.td->bytes;
    uint8_t *wg = kt_weights(*c.tg, (uint32_t)NE * F, E), *wu = kt_weights(*c.tu, (uint32_t)NE * F, E),
            *wd = kt_weights(*c.td, (uint32_t)NE * E, F);
    mllm__layer L;
    memset(&L, 0, sizeof L);
    L.router = router.data();
    L.gate_exps = mk_weight(*c.tg, wg, E, F, NE);
    L.up_exps = mk_weight(*c.tu, wu, E, F, NE);
    L.down_exps = mk_weight(*c.td, wd, F, E, NE);

    cpu_moe cpu(hp, T);
    std::vector<float> ref((size_t)T * E);
    cpu.run(L, x.data(), T, ref.data());

    // GPU: every buffer of the layer, the scratch poisoned with NaN so that an unwritten value shows.
    mllm__gpu g;
    mllm__emu_settings st;
    st.policy = c.v.policy;
    st.poison = c.v.poison;
    mllm__emu_gpu_open(&g, &st);
    const mllm__gpu_moe_scratch ss = mllm__gpu_moe_scratch_of(&hp, T);
    mllm__gpu_moe_io io;
    memset(&io, 0, sizeof io);
    io.router.buf = upload(&g, router.data(), router.size() * 4);
    io.x.buf = upload(&g, x.data(), x.size() * 4);
    io.gate.buf = upload(&g, wg, rbg * NE * F);
    io.up.buf = upload(&g, wu, rbu * NE * F);
    io.down.buf = upload(&g, wd, rbd * NE * E);
    io.out.buf = g.vt->buf_new(g.dev, ref.size() * 4, MLLM__GPU_SHARED);
    io.scratch.buf = g.vt->buf_new(g.dev, ss.bytes, MLLM__GPU_SHARED);
    memset(g.vt->buf_contents(io.scratch.buf), 0xff, ss.bytes);
    memset(g.vt->buf_contents(io.out.buf), 0xff, ref.size() * 4);
    mllm__gpu_cmd *cmd = g.vt->begin(g.dev);
    mllm_status s = mllm__gpu_encode_moe(&g, cmd, &hp, &L, &io, T, c.use_gemm);
    mllm__gpu_commit(&g, cmd);
    if (s == MLLM_OK) s = mllm__gpu_wait(&g, cmd);
    else mllm__gpu_wait(&g, cmd);
    const bool gemm = c.use_gemm < 0 ? T >= MLLM__GPU_GEMM_MIN_TOKENS : c.use_gemm != 0;
    char what[200];
    snprintf(what, sizeof what, "moe %s gate %s up %s down %s NE=%d K=%d T=%d E=%d F=%d rig %d %s", gemm ? "gemm" : "gemv",
             c.tg->name, c.tu->name, c.td->name, NE, K, T, E, F, c.rig, msl::sched_name(c.v.policy));
    CHECK(s == MLLM_OK, "%s: %s", what, mllm_last_error());
    if (s == MLLM_OK) {
        const char *sc = (const char *)g.vt->buf_contents(io.scratch.buf);
        const int32_t *sel = (const int32_t *)(sc + ss.sel);
        const float *wts = (const float *)(sc + ss.wts);
        const uint32_t *map = (const uint32_t *)(sc + ss.map);
        const size_t TK = (size_t)T * K;
        size_t bad_sel = 0, bad_w = 0, bad_rows = 0;
        for (size_t r = 0; r < TK; r++) {
            bad_sel += sel[r] != cpu.b.sel[r];
            bad_w += !(fabsf(wts[r] - cpu.b.w[r]) <= 1e-5f);
        }
        CHECK(bad_sel == 0, "%s: %zu of %zu selected experts differ from the CPU's", what, bad_sel, TK);
        CHECK(bad_w == 0, "%s: %zu of %zu routing weights differ", what, bad_w, TK);
        if (c.rig == RIG_ONE_HOT_EXPERT)
            for (int t = 0; t < T; t++) CHECK(cpu.b.sel[(size_t)t * K] == hot, "%s: rig failed", what);
        if (gemm) {   // the counting sort: same rows as the CPU's, offsets = running counts, tiles cover them
            std::vector<uint32_t> first(NE + 1, 0);
            for (size_t r = 0; r < TK; r++) first[cpu.b.sel[r] + 1]++;
            for (int e = 0; e < NE; e++) first[e + 1] += first[e];
            for (int e = 0; e <= NE; e++) bad_rows += map[e] != first[e];
            for (size_t p = 0; p < TK; p++) bad_rows += map[MLLM__MOE_MAP_ROWS(NE) + p] != (uint32_t)cpu.b.row[p];
            uint32_t tiles = 0;
            for (int e = 0; e < NE; e++) tiles += (first[e + 1] - first[e] + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM;
            bad_rows += map[MLLM__MOE_MAP_NTILES(NE, TK)] != tiles;
            CHECK(bad_rows == 0, "%s: expert offsets / sorted rows / tile count differ from the CPU's sort", what);
        }
        // Output: element error against the row's largest value (the sums reach it; a wrong row or
        // expert is off by O(1) of it).
        std::vector<float> got(ref.size());
        mllm__gpu_read(&g, io.out.buf, 0, got.data(), got.size() * 4);
        std::vector<double> rd(ref.size()), scale(ref.size());
        for (int t = 0; t < T; t++) {
            double mx = 0;
            for (int j = 0; j < E; j++) mx = std::max(mx, (double)fabsf(ref[(size_t)t * E + j]));
            for (int j = 0; j < E; j++) { rd[(size_t)t * E + j] = ref[(size_t)t * E + j]; scale[(size_t)t * E + j] = mx + 1e-6; }
        }
        res.ok = kt_close(what, got.data(), rd.data(), scale.data(), got.size(), 1e-4) && bad_sel == 0 && bad_w == 0 && bad_rows == 0;
    }
    res.dispatches = g.n.dispatches;
    res.barriers = g.n.barriers;
    res.executed = mllm__emu_device(&g)->executed;
    mllm__gpu_buf *bufs[] = {io.router.buf, io.x.buf, io.gate.buf, io.up.buf, io.down.buf, io.out.buf, io.scratch.buf};
    for (mllm__gpu_buf *b : bufs) g.vt->buf_free(b);
    mllm__gpu_close(&g);
    return res;
}

int dim_for(const kt_type &t) {   // odd sizes for the float types (tile edges), 1..3 blocks otherwise
    if (t.qk == 1) return emu::tsan ? rnd(1, 40) : rnd(1, 100);
    if (t.qk == 32) return 32 * rnd(1, emu::tsan ? 2 : 3);
    return 256;
}

// Random shapes for gate/up of type t (down of type td), both paths, rigged and not, one schedule each.
// Half the cases for 256-element blocks: their rows are long (the emulator's time grows with them) and
// the type enters the grouped kernels only through its block loader, which test_kernels_gemv/gemm check
// on every path; the cases here check the grouping.
void run_types(const kt_type &t, const kt_type &td) {
    const std::vector<emu::Variant> vs = kt_variants();
    const int n = (emu::tsan ? 2 : 4) / (t.qk == 256 ? 2 : 1);
    for (int i = 0; i < n; i++) {
        moe_case c;
        c.tg = c.tu = &t;
        c.td = &td;
        c.NE = emu::tsan ? rnd(4, 16) : rnd(4, 64);
        c.K = rnd(1, std::min(8, c.NE));
        c.T = emu::tsan ? rnd(1, 12) : rnd(1, 40);
        c.E = dim_for(t);    // gate/up rows have E elements, down rows F
        c.F = dim_for(td);
        c.rig = (i + (int)t.id) % 3;   // (with 2 cases, the types between them still take every rig)
        c.v = vs[i % vs.size()];
        for (int p = 0; p < 2; p++) {
            c.use_gemm = p;
            check_moe(c);
        }
    }
}
}  // namespace

// The route kernel alone on logits full of ties (small integers): the selected experts must be the CPU
// path's (mllm__moe's, fed the same logits through a one-hot input), slot by slot.
EMU_TEST(moe_route_selection_equals_cpu_with_ties) {
    for (const emu::Variant &v : kt_variants()) {
        for (int i = 0; i < (emu::tsan ? 3 : 8); i++) {
            kt_scope scope;
            const int NE = i == 0 ? 1024 : i == 1 ? 256 : rnd(2, 100), K = rnd(1, std::min(8, NE)), T = rnd(1, 6);
            const int levels = rnd(1, 4);   // 1: every logit equal
            mllm__hparams hp;
            memset(&hp, 0, sizeof hp);
            hp.n_embd = T; hp.n_expert = NE; hp.n_expert_used = K; hp.n_ff_exp = 1;
            // token t's input is the one-hot e_t, so its logits are router column t, exactly
            std::vector<float> router((size_t)NE * T), x((size_t)T * T, 0.0f), out((size_t)T * T);
            float *logits = kt_buf<float>((size_t)T * NE);
            for (int t = 0; t < T; t++) {
                x[(size_t)t * T + t] = 1;
                for (int e = 0; e < NE; e++) logits[(size_t)t * NE + e] = router[(size_t)e * T + t] = (float)rnd(0, levels - 1);
            }
            std::vector<float> ones((size_t)NE * T, 1.0f);   // f32 experts of one row: only routing matters here
            mllm__layer L;
            memset(&L, 0, sizeof L);
            L.router = router.data();
            L.gate_exps = mk_weight(kt_types[KT_F32], ones.data(), T, 1, NE);
            L.up_exps = L.gate_exps;
            L.down_exps = mk_weight(kt_types[KT_F32], ones.data(), 1, T, NE);
            cpu_moe cpu(hp, T);
            cpu.run(L, x.data(), T, out.data());

            int32_t *sel = kt_buf<int32_t>((size_t)T * K);
            float *wts = kt_out((size_t)T * K);
            mllm__moe_args a = {(uint32_t)NE, (uint32_t)K, (uint32_t)T, 0};
            void *bufs[] = {logits, sel, wts, &a};
            memset(sel, 0xff, sizeof(int32_t) * T * K);
            if (!kt_dispatch("moe_route", v, T, 1, 32, bufs, 4)) continue;
            int bad = 0, badw = 0;
            for (int r = 0; r < T * K; r++) {
                bad += sel[r] != cpu.b.sel[r];
                badw += !(fabsf(wts[r] - cpu.b.w[r]) <= 1e-6f);
            }
            CHECK(bad == 0 && badw == 0, "NE=%d K=%d T=%d levels=%d %s: %d selections, %d weights differ (first: gpu %d cpu %d)",
                  NE, K, T, levels, msl::sched_name(v.policy), bad, badw, sel[0], cpu.b.sel[0]);
        }
    }
}

// one test per weight type of MLLM__GPU_TYPES for gate/up, each with the next type of the list for down
// (so every type is also a down type, and mixed-type layers are covered)
#define KT_TEST(name, TYPE) \
    EMU_TEST(moe_layer_##name##_matches_cpu_moe) { run_types(kt_types[KT_##TYPE], kt_types[(KT_##TYPE + 1) % KT_NTYPES]); }
MLLM__GPU_TYPES(KT_TEST)

// The encoder's dispatch and barrier counts (emulated device counters) at 1 token (GEMV path) and at
// many tokens (GEMM path): the same for 4 and 64 experts, and for one expert vs all experts active.
EMU_TEST(moe_dispatch_count_is_independent_of_experts) {
    const int Ts[2] = {1, emu::tsan ? 12 : 40};
    for (int path = 0; path < 2; path++) {
        run_result first = {0, 0, 0, false};
        for (int cfg = 0; cfg < 4; cfg++) {
            moe_case c;
            c.tg = c.tu = c.td = &kt_types[KT_F16];
            c.NE = cfg < 2 ? 4 : 64;
            c.T = Ts[path];
            c.K = cfg % 2 ? std::min(8, c.NE) : 1;   // with K = 1 and the rig: one expert active
            c.rig = cfg % 2 ? RIG_NONE : RIG_ONE_HOT_EXPERT;
            c.E = 40;
            c.F = 24;
            c.use_gemm = -1;   // the encoder's own choice
            c.v = kt_variants()[0];
            const run_result r = check_moe(c);
            CHECK(r.ok, "path %d cfg %d failed", path, cfg);
            CHECK(r.executed == r.dispatches, "emulator ran %llu of %llu dispatches", (unsigned long long)r.executed,
                  (unsigned long long)r.dispatches);
            if (cfg == 0) first = r;
            CHECK(r.dispatches == first.dispatches && r.barriers == first.barriers,
                  "T=%d NE=%d K=%d: %llu dispatches, %llu barriers; NE=4 K=1: %llu, %llu", c.T, c.NE, c.K,
                  (unsigned long long)r.dispatches, (unsigned long long)r.barriers, (unsigned long long)first.dispatches,
                  (unsigned long long)first.barriers);
        }
        printf("  %s path (T=%d): %llu dispatches, %llu barriers per MoE layer\n", path ? "gemm" : "gemv", Ts[path],
               (unsigned long long)first.dispatches, (unsigned long long)first.barriers);
        CHECK(first.dispatches == (path ? 8u : 7u), "expected %d dispatches", path ? 8 : 7);
    }
}
