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
        const emu::Variant v = kt_variants()[vi++ % kt_variants().size()];
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
