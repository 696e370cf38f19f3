// GPU sampling (kernels/sample.metal through metalllm.h's mllm__gpu_sampler host code, on the emulated
// device) against: a plain argmax (greedy), the CPU sampler mllm__sample (same rule, same Philox stream:
// token-for-token agreement), and the exact target distribution computed here in double from the
// definition (chi-square over many draws).  Penalty state on the GPU is checked against the CPU's
// penalties over a sliding window, and a step's read-back against the device's byte counter.
#include "kernels_test.h"

#include <algorithm>
#include <chrono>

#include "emu_device.h"

namespace {

// One emulated GPU with a sampler; runs sampling steps from host logits.
struct gpu_run {
    mllm__gpu g;
    mllm__gpu_sampler s;
    mllm__gpu_buf *lb = nullptr;
    size_t lb_bytes = 0;
    bool ok = false;
    gpu_run(int n_vocab, int n_seq, int ring_cap, const emu::Variant &v, int threads = 0) {
        mllm__emu_settings set;
        set.policy = v.policy;
        set.poison = v.poison;
        mllm__emu_gpu_open(&g, &set);
        ok = mllm__gpu_sampler_init(&g, &s, n_vocab, n_seq, ring_cap) == MLLM_OK;
        CHECK(ok, "sampler init: %s", mllm_last_error());
        s.threads = threads;
    }
    ~gpu_run() {
        if (lb) g.vt->buf_free(lb);
        if (ok) mllm__gpu_sampler_free(&g, &s);
        mllm__gpu_close(&g);
    }
    // logits: n rows of n_vocab; out: n picks.  False (and a failed check) on any error.
    bool step(const float *logits, const mllm__sample_row *rows, int n, mllm_token *out) {
        const size_t bytes = (size_t)n * s.n_vocab * sizeof(float);
        if (bytes > lb_bytes) {
            if (lb) g.vt->buf_free(lb);
            lb = g.vt->buf_new(g.dev, bytes, MLLM__GPU_SHARED);
            lb_bytes = bytes;
        }
        memcpy(g.vt->buf_contents(lb), logits, bytes);
        mllm__gpu_cmd *c = g.vt->begin(g.dev);
        mllm_status st = mllm__gpu_encode_sample(&g, c, &s, lb, 0, rows, n);
        mllm__gpu_commit(&g, c);
        if (st == MLLM_OK) st = mllm__gpu_wait(&g, c);
        else mllm__gpu_wait(&g, c);
        if (st == MLLM_OK) st = mllm__gpu_read_samples(&g, &s, out, n);
        CHECK(st == MLLM_OK, "gpu sampling step: %s", mllm_last_error());
        return st == MLLM_OK;
    }
};

int cpu_sample(const float *logits, int n_vocab, const std::vector<mllm_token> &hist, const mllm_sampler_params &sp,
               uint64_t counter) {
    std::vector<float> l(logits, logits + n_vocab);
    std::vector<mllm__cand> cand((size_t)n_vocab + hist.size() + 1);
    return mllm__sample(l.data(), n_vocab, hist.data(), (int)hist.size(), &sp, counter, cand.data());
}

mllm_sampler_params params(float temp, int top_k = 0, float top_p = 0, float min_p = 0) {
    mllm_sampler_params sp;
    memset(&sp, 0, sizeof sp);
    sp.temperature = temp;
    sp.top_k = top_k;
    sp.top_p = top_p;
    sp.min_p = min_p;
    sp.seed = 0x1234567890abcdefull;
    return sp;
}

}  // namespace

// ---------------------------------------------------------------- greedy
// Reference: the first index of the largest value, NaN never wins, all -inf/NaN -> 0 (+inf and
// FLT_MAX are not mixed in one row: the rule clamps +inf to FLT_MAX).
static int plain_argmax(const float *x, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && x[i] != -INFINITY && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

EMU_TEST(sample_greedy_equals_argmax) {
    const int lens[] = {1, 7, 50, 2000, 49152};
    int vi = 0;
    for (int n : lens) {
        const emu::Variant v = emu::variants()[vi++ % emu::variants().size()];
        const int rows = 8;
        gpu_run gr(n, rows, 4, v);
        if (!gr.ok) continue;
        std::vector<float> x((size_t)rows * n);
        for (float &f : x) f = kt_uniform(-3, 3);
        float *r;
        const int a0 = kt_u32() % n, a1 = a0 + (n - a0) / 2;
        r = &x[1 * (size_t)n]; r[a1] = 9; r[a0] = 9;                               // tie: the lower id
        r = &x[2 * (size_t)n]; for (int i = 0; i < n; i++) r[i] = -INFINITY;     // all -inf: 0
        r = &x[3 * (size_t)n]; r[kt_u32() % n] = NAN; r[0] = NAN;                 // NaN never wins
        r = &x[4 * (size_t)n]; r[a1] = FLT_MAX; r[a0] = -FLT_MAX;                 // extremes
        r = &x[5 * (size_t)n]; r[a1] = INFINITY; r[a0] = INFINITY;                // +inf tie: the lower id
        r = &x[6 * (size_t)n]; for (int i = 0; i < n; i++) r[i] = i % 3 ? -INFINITY : -1e30f;
        r = &x[7 * (size_t)n]; for (int i = 0; i < n; i++) r[i] = (float)(kt_u32() % 4);   // many ties
        std::vector<mllm__sample_row> rw(rows);
        mllm_sampler_params sp = params(0.0f);
        for (int i = 0; i < rows; i++) rw[i] = mllm__gpu_sample_row(i, &sp, 0, kt_u32());
        std::vector<mllm_token> out(rows, -2);
        if (!gr.step(x.data(), rw.data(), rows, out.data())) continue;
        for (int i = 0; i < rows; i++) {
            const float *xr = &x[(size_t)i * n];
            const int want = plain_argmax(xr, n), cpu = cpu_sample(xr, n, {}, sp, 0);
            CHECK(out[i] == want && cpu == want, "greedy n=%d row %d: gpu %d cpu %d argmax %d", n, i, out[i], cpu, want);
        }
    }
}

// ---------------------------------------------------------------- GPU vs CPU, token for token
namespace {
struct rand_step {
    std::vector<float> logits;
    std::vector<mllm_token> hist;
    mllm_sampler_params sp;
    uint64_t counter;
};
std::mt19937_64 st_rng(777);
double st_u() { return std::uniform_real_distribution<double>(0, 1)(st_rng); }
int st_int(int lo, int hi) { return (int)(lo + st_rng() % (uint64_t)(hi - lo + 1)); }

// Random logits of varied scale (some with ties, some with -inf), random settings and history.
rand_step make_step(int n) {
    rand_step s;
    const double scales[] = {0.05, 0.5, 2, 5, 20};
    const double scale = scales[st_rng() % 5];
    std::normal_distribution<double> nd(0, scale);
    const bool ties = st_u() < 0.2, masked = st_u() < 0.1;
    s.logits.resize(n);
    for (float &f : s.logits) {
        double v = nd(st_rng);
        if (ties) v = std::round(v * 4 / scale) * scale / 4;
        f = (float)v;
        if (masked && st_u() < 0.3) f = -INFINITY;
    }
    mllm_sampler_params &sp = s.sp;
    memset(&sp, 0, sizeof sp);
    sp.temperature = st_u() < 0.1 ? 0.0f : (float)(0.3 + 1.5 * st_u());
    if (st_u() < 0.5) sp.top_k = st_int(1, std::min(n + 5, 120));
    if (st_u() < 0.5) sp.top_p = (float)(0.3 + 0.69 * st_u());
    if (st_u() < 0.4) sp.min_p = (float)(0.3 * st_u() * st_u());
    if (st_u() < 0.4) {
        if (st_u() < 0.7) sp.repeat_penalty = (float)(1 + 0.5 * st_u());
        if (st_u() < 0.5) sp.frequency_penalty = (float)(0.5 * st_u());
        if (st_u() < 0.5) sp.presence_penalty = (float)(0.5 * st_u());
        sp.penalty_last_n = st_u() < 0.2 ? 0 : st_int(1, 64);
    }
    sp.seed = st_rng();
    s.counter = st_u() < 0.5 ? st_rng() % 1000 : st_rng();
    const int nh = st_int(0, 150);
    for (int i = 0; i < nh; i++) s.hist.push_back(st_u() < 0.02 ? -1 : (mllm_token)(st_rng() % n));
    return s;
}

struct agree_count { long steps = 0, same = 0, same_wrong_counter = 0, stochastic = 0; };

// One dispatch of `rows` random steps at vocabulary n; counts agreements with the CPU sampler, and
// with the CPU sampler at counter + 1 (what a GPU with an off-by-one counter would match).
void agree_batch(int n, int rows, const emu::Variant &v, agree_count &ac, int threads = 0) {
    std::vector<rand_step> steps;
    for (int r = 0; r < rows; r++) steps.push_back(make_step(n));
    gpu_run gr(n, rows, 64, v, threads);
    if (!gr.ok) return;
    std::vector<float> logits;
    std::vector<mllm__sample_row> rw;
    for (int r = 0; r < rows; r++) {
        const rand_step &s = steps[r];
        logits.insert(logits.end(), s.logits.begin(), s.logits.end());
        const int window = s.sp.penalty_last_n > 0 ? s.sp.penalty_last_n : 64;
        CHECK(mllm__gpu_sampler_seed(&gr.g, &gr.s, r, s.hist.data(), (int)s.hist.size(), window) == MLLM_OK, "seed");
        rw.push_back(mllm__gpu_sample_row(r, &s.sp, (int)s.hist.size(), s.counter));
    }
    std::vector<mllm_token> out(rows, -2);
    if (!gr.step(logits.data(), rw.data(), rows, out.data())) return;
    for (int r = 0; r < rows; r++) {
        const rand_step &s = steps[r];
        const int cpu = cpu_sample(s.logits.data(), n, s.hist, s.sp, s.counter);
        const int cpu1 = cpu_sample(s.logits.data(), n, s.hist, s.sp, s.counter + 1);
        ac.steps++;
        ac.same += out[r] == cpu;
        ac.same_wrong_counter += out[r] == cpu1;
        ac.stochastic += cpu != cpu1;
        if (out[r] != cpu && ac.steps - ac.same <= 5)
            printf("    differ: n=%d T=%g k=%d p=%g min_p=%g rep=%g freq=%g pres=%g: gpu %d cpu %d\n", n, s.sp.temperature,
                   s.sp.top_k, s.sp.top_p, s.sp.min_p, s.sp.repeat_penalty, s.sp.frequency_penalty, s.sp.presence_penalty,
                   out[r], cpu);
    }
}
}  // namespace

EMU_TEST(sample_gpu_agrees_with_cpu_on_random_steps) {
    const auto t0 = std::chrono::steady_clock::now();
    agree_count ac;
    const int batches = emu::tsan ? 200 : 625, rows = 16;   // 10,000 steps (3,200 under TSan)
    const std::vector<emu::Variant> vs = emu::variants();      // (all four under TSan too: cheap here)
    const int threads[] = {0, 96, 0, 256, 0, 1024};             // 0: the host's choice (32 or 64 here)
    for (int b = 0; b < batches; b++) agree_batch(st_int(50, 2000), rows, vs[b % vs.size()], ac, threads[b % 6]);
    const long small = ac.steps;
    // vocabulary-sized rows: SmolLM2's and Qwen2's
    agree_batch(49152, 4, vs[0], ac, 1024);
    agree_batch(151936, emu::tsan ? 1 : 4, vs[1 % vs.size()], ac, 1024);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("    GPU = CPU on %ld of %ld steps (%ld at n_vocab 50..2000, %ld at 49152/151936); at counter + 1: %ld;"
           " %ld steps random; %.1f s\n", ac.same, ac.steps, small, ac.steps - small, ac.same_wrong_counter, ac.stochastic, s);
    CHECK(ac.same * 1000 >= ac.steps * 999, "agreement %ld of %ld is below 99.9%%", ac.same, ac.steps);
    // The test has power: a wrong counter would disagree on most random steps.
    CHECK(ac.stochastic * 2 > ac.steps && ac.same_wrong_counter < ac.steps - ac.stochastic / 2,
          "weak test: %ld random steps, %ld agree at counter + 1", ac.stochastic, ac.same_wrong_counter);
}

// ---------------------------------------------------------------- distribution (chi-square)
namespace {
// The exact target distribution from the definition, in double, with a full sort: x = logit / T;
// rank order; kept = the shortest of top-k, top-p (of the top-k weight) and min-p prefixes, then
// `extra` more or fewer (a deliberately wrong threshold, to show the test can tell); p ~ exp(x - xmax).
// margin: the smallest relative distance of a top-p / min-p decision from its boundary.
std::vector<double> target_dist(const std::vector<float> &l, const mllm_sampler_params &sp, int extra, double *margin) {
    const int n = (int)l.size();
    std::vector<int> ord(n);
    for (int i = 0; i < n; i++) ord[i] = i;
    std::vector<double> x(n);
    for (int i = 0; i < n; i++) x[i] = (double)l[i] / sp.temperature;
    std::sort(ord.begin(), ord.end(), [&](int a, int b) { return x[a] != x[b] ? x[a] > x[b] : a < b; });
    int m = sp.top_k > 0 && sp.top_k < n ? sp.top_k : n;
    std::vector<double> w(n);
    double total = 0;
    for (int j = 0; j < m; j++) total += (w[j] = exp(x[ord[j]] - x[ord[0]]));
    *margin = 1;
    if (sp.top_p > 0 && sp.top_p < 1) {
        double cum = 0;
        for (int j = 0; j < m; j++) {
            cum += w[j];
            *margin = std::min(*margin, fabs(cum - sp.top_p * total) / total);
            if (cum >= sp.top_p * total) { m = j + 1; break; }
        }
    }
    if (sp.min_p > 0)
        for (int j = 0; j < m; j++) {
            *margin = std::min(*margin, fabs(w[j] - sp.min_p));
            if (w[j] < sp.min_p) { m = j; break; }
        }
    m = std::max(1, std::min(n, m + extra));
    for (int j = 0; j < m; j++) w[j] = exp(x[ord[j]] - x[ord[0]]);
    std::vector<double> p(n, 0.0);
    double s = 0;
    for (int j = 0; j < m; j++) s += w[j];
    for (int j = 0; j < m; j++) p[ord[j]] = w[j] / s;
    return p;
}

// Pearson's statistic over bins of expected count >= 5 (smaller ones pooled); a draw of a token of
// probability 0 makes it infinite.  Returns chi2 / (critical value at alpha = 1e-3): > 1 rejects.
double chi2_ratio(const std::vector<long> &obs, const std::vector<double> &p, long draws, double *chi2_out, int *df_out) {
    double chi2 = 0, pool_e = 0;
    long pool_o = 0;
    int bins = 0;
    for (size_t i = 0; i < p.size(); i++) {
        const double e = p[i] * draws;
        if (p[i] == 0) {
            if (obs[i]) chi2 = INFINITY;
        } else if (e >= 5) {
            chi2 += (obs[i] - e) * (obs[i] - e) / e;
            bins++;
        } else {
            pool_e += e;
            pool_o += obs[i];
        }
    }
    if (pool_e > 0) { chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e; bins++; }   // (may be < 5: conservative)
    const int df = std::max(1, bins - 1);
    const double z = 3.0902, h = 2.0 / (9.0 * df);   // Wilson-Hilferty, upper 1e-3 point
    const double crit = df * pow(1 - h + z * sqrt(h), 3);
    *chi2_out = chi2;
    *df_out = df;
    return chi2 / crit;
}
}  // namespace

EMU_TEST(sample_gpu_distribution_matches_target_chi_square) {
    const int n = 64;
    const long draws = emu::tsan ? 3000 : 10000;
    std::mt19937 rng(2024);
    std::normal_distribution<float> nd(0, 1.5f);
    std::vector<float> l(n);
    for (float &f : l) f = nd(rng);
    struct setting { const char *name; mllm_sampler_params sp; };
    const setting settings[] = {
        {"temperature 0.7", params(0.7f)},
        {"top-k 8", params(1.0f, 8)},
        {"top-p 0.6", params(1.2f, 0, 0.6f)},
        {"min-p 0.08", params(1.0f, 0, 0, 0.08f)},
        {"k 20 + p 0.85 + min-p 0.02", params(0.9f, 20, 0.85f, 0.02f)},
    };
    int si = 0;
    for (const setting &st : settings) {
        double margin;
        const std::vector<double> p = target_dist(l, st.sp, 0, &margin);
        CHECK(margin > 1e-4, "%s: a cut within %g of its boundary (pick other logits)", st.name, margin);
        gpu_run gr(n, (int)draws, 1, kt_variants()[si++ % kt_variants().size()]);
        if (!gr.ok) continue;
        std::vector<float> rows_l;
        std::vector<mllm__sample_row> rw;
        for (long d = 0; d < draws; d++) {
            rows_l.insert(rows_l.end(), l.begin(), l.end());
            rw.push_back(mllm__gpu_sample_row((int)d, &st.sp, 0, (uint64_t)d));   // counters 0, 1, 2, ...
        }
        std::vector<mllm_token> out(draws, -1);
        if (!gr.step(rows_l.data(), rw.data(), (int)draws, out.data())) continue;
        std::vector<long> obs(n, 0), obs_cpu(n, 0);
        for (long d = 0; d < draws; d++) {
            if (out[d] >= 0 && out[d] < n) obs[out[d]]++;
            obs_cpu[cpu_sample(l.data(), n, {}, st.sp, (uint64_t)d)]++;
        }
        double chi2, chi2c, chi2w;
        int df, dfc, dfw;
        const double r = chi2_ratio(obs, p, draws, &chi2, &df), rc = chi2_ratio(obs_cpu, p, draws, &chi2c, &dfc);
        // power: one token more or fewer than the target keeps is rejected
        double rw_min = INFINITY;
        for (int extra : {-1, 1}) {
            double mg;
            rw_min = std::min(rw_min, chi2_ratio(obs, target_dist(l, st.sp, extra, &mg), draws, &chi2w, &dfw));
        }
        int kept = 0;
        for (double q : p) kept += q > 0;
        printf("    %-28s %d kept: GPU chi2 %.1f (df %d), CPU chi2 %.1f (df %d); critical %.1f; off-by-one cuts: >= %.1f x critical\n",
               st.name, kept, chi2, df, chi2c, dfc, chi2 / r, rw_min);
        CHECK(r <= 1, "%s: GPU draws do not follow the target (chi2 %.1f, df %d)", st.name, chi2, df);
        CHECK(rc <= 1, "%s: CPU draws do not follow the target (chi2 %.1f, df %d)", st.name, chi2c, dfc);
        if (kept < n && !emu::tsan)   // (with a cut, and enough draws to see it)
            CHECK(rw_min > 1, "%s: weak test: a cut off by one token passes (%.2f x critical)", st.name, rw_min);
    }
}

// ---------------------------------------------------------------- penalties over a sliding window
// Two sequences step together for 80 picks (greedy, and sampled), their penalty state only on the GPU
// after a seed from a prompt longer than the window; every pick must equal the CPU sampler's over the
// same history, and at the end the GPU's counts must be those of the last `window` tokens.
EMU_TEST(sample_gpu_penalties_match_cpu_over_sliding_window) {
    const int n = 40, steps = emu::tsan ? 30 : 80, nseq = 2, cap = 16;
    mllm_sampler_params sp[nseq] = {params(0.0f), params(1.0f, 0, 0.95f)};
    sp[0].repeat_penalty = 1.3f; sp[0].frequency_penalty = 0.4f; sp[0].presence_penalty = 0.3f; sp[0].penalty_last_n = 8;
    sp[1].repeat_penalty = 1.5f; sp[1].frequency_penalty = 0.2f; sp[1].penalty_last_n = 5;
    sp[1].seed = 99;
    gpu_run gr(n, nseq, cap, kt_variants()[2 % kt_variants().size()]);
    if (!gr.ok) return;
    std::vector<mllm_token> hist[nseq];
    for (int q = 0; q < nseq; q++) {
        for (int t = 0; t < 20; t++) hist[q].push_back((mllm_token)(kt_u32() % 6));   // a repetitive prompt
        CHECK(mllm__gpu_sampler_seed(&gr.g, &gr.s, q, hist[q].data(), 20, sp[q].penalty_last_n) == MLLM_OK, "seed");
    }
    int same = 0, total = 0, penalised = 0;
    for (int step = 0; step < steps; step++) {
        std::vector<float> l((size_t)nseq * n);
        for (float &f : l) f = kt_uniform(-1, 1);
        for (int q = 0; q < nseq; q++) l[(size_t)q * n + kt_u32() % 6] += 1.0f;   // the prompt's tokens are likely
        mllm__sample_row rw[nseq];
        for (int q = 0; q < nseq; q++) rw[q] = mllm__gpu_sample_row(q, &sp[q], (int)hist[q].size(), (uint64_t)step);
        mllm_token out[nseq];
        if (!gr.step(l.data(), rw, nseq, out)) return;
        for (int q = 0; q < nseq; q++) {
            const int cpu = cpu_sample(&l[(size_t)q * n], n, hist[q], sp[q], (uint64_t)step);
            mllm_sampler_params plain = sp[q];
            plain.repeat_penalty = plain.frequency_penalty = plain.presence_penalty = 0;
            penalised += cpu != cpu_sample(&l[(size_t)q * n], n, hist[q], plain, (uint64_t)step);
            same += out[q] == cpu;
            total++;
            if (out[q] != cpu) printf("    step %d seq %d: gpu %d cpu %d\n", step, q, out[q], cpu);
            hist[q].push_back(out[q]);
        }
    }
    printf("    %d of %d picks equal; penalties changed %d of them\n", same, total, penalised);
    CHECK(same == total, "penalised picks differ: %d of %d equal", same, total);
    CHECK(penalised * 4 > total, "weak test: penalties changed only %d of %d picks", penalised, total);
    const uint16_t *counts = (const uint16_t *)gr.g.vt->buf_contents(gr.s.counts);
    for (int q = 0; q < nseq; q++) {
        std::vector<int> want(n, 0);
        const int w = sp[q].penalty_last_n;
        for (size_t t = hist[q].size() - w; t < hist[q].size(); t++) want[hist[q][t]]++;
        int bad = 0;
        for (int i = 0; i < n; i++) bad += counts[(size_t)q * n + i] != want[i];
        CHECK(bad == 0, "seq %d: %d token counts differ from the last %d tokens", q, bad, w);
    }
}

// ---------------------------------------------------------------- read-back
EMU_TEST(sample_step_reads_back_4_bytes_per_sequence) {
    const int n = 1000, nseq = 16;
    gpu_run gr(n, nseq, 64, kt_variants()[0]);
    if (!gr.ok) return;
    std::vector<float> l((size_t)nseq * n);
    for (float &f : l) f = kt_uniform(-4, 4);
    std::vector<mllm__sample_row> rw;
    std::vector<mllm_token> hist = {1, 2, 3};
    for (int q = 0; q < nseq; q++) {
        mllm_sampler_params sp = params(0.8f, 40, 0.9f, 0.05f);
        sp.repeat_penalty = 1.1f;
        sp.seed = (uint64_t)q;
        CHECK(mllm__gpu_sampler_seed(&gr.g, &gr.s, q, hist.data(), 3, 64) == MLLM_OK, "seed");
        rw.push_back(mllm__gpu_sample_row(q, &sp, 3, 7));
    }
    memset(&gr.g.n, 0, sizeof gr.g.n);
    std::vector<mllm_token> out(nseq, -1);
    if (!gr.step(l.data(), rw.data(), nseq, out.data())) return;
    const mllm__gpu_counters &c = gr.g.n;
    CHECK(c.bytes_read == 4u * nseq && c.dispatches == 1 && c.commits == 1 && c.waits == 1,
          "bytes_read %llu (want %d), dispatches %llu, commits %llu, waits %llu", (unsigned long long)c.bytes_read, 4 * nseq,
          (unsigned long long)c.dispatches, (unsigned long long)c.commits, (unsigned long long)c.waits);
    for (int q = 0; q < nseq; q++) CHECK(out[q] >= 0 && out[q] < n, "seq %d: token %d", q, out[q]);
}

// The host refuses rows it cannot serve (before anything is written or dispatched).
EMU_TEST(sample_host_rejects_bad_rows) {
    gpu_run gr(100, 2, 8, kt_variants()[0]);
    if (!gr.ok) return;
    mllm_sampler_params sp = params(1.0f);
    sp.presence_penalty = 0.5f;                       // penalties on: the window must fit the ring
    mllm__sample_row ok_row = mllm__gpu_sample_row(1, &sp, 0, 0), bad_seq = ok_row, bad_window = ok_row;
    ok_row.window = 8;
    bad_seq.seq = 2;
    bad_window.window = 9;
    mllm__gpu_cmd *c = gr.g.vt->begin(gr.g.dev);
    mllm__gpu_buf *lb = gr.g.vt->buf_new(gr.g.dev, 2 * 100 * sizeof(float), MLLM__GPU_SHARED);
    const mllm__sample_row rows_seq[2] = {ok_row, bad_seq}, rows_win[2] = {ok_row, bad_window};
    CHECK(mllm__gpu_encode_sample(&gr.g, c, &gr.s, lb, 0, rows_seq, 2) == MLLM_ERR_INVALID_ARG, "sequence out of range accepted");
    CHECK(mllm__gpu_encode_sample(&gr.g, c, &gr.s, lb, 0, rows_win, 2) == MLLM_ERR_INVALID_ARG, "window > ring_cap accepted");
    CHECK(mllm__gpu_encode_sample(&gr.g, c, &gr.s, lb, 0, rows_win, 3) == MLLM_ERR_INVALID_ARG, "more rows than sequences accepted");
    CHECK(mllm__gpu_sampler_seed(&gr.g, &gr.s, 0, nullptr, 0, 9) == MLLM_ERR_INVALID_ARG, "seed window > ring_cap accepted");
    CHECK(gr.g.n.dispatches == 0, "dispatched %llu", (unsigned long long)gr.g.n.dispatches);
    mllm__gpu_commit(&gr.g, c);
    mllm__gpu_wait(&gr.g, c);
    gr.g.vt->buf_free(lb);
}
