// Shared helpers of the kernel tests (tests/emu/test_kernels_*.cpp; each is its own emulator program
// and includes this once): run one kernel under the emulator's schedule/poison variants, random inputs,
// weight rows of every type, and the CPU backend's ops (metalllm.h) as references.
#ifndef MLLM_KERNELS_TEST_H
#define MLLM_KERNELS_TEST_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <random>
#include <vector>

#define METALLLM_IMPLEMENTATION   // the CPU backend's ops and dequantization are the references
#include "metalllm.h"
#include "emu_test.hpp"
#include "kernels/common.h"          // (already pasted into metalllm.h: the include guard skips it)

// ---------------------------------------------------------------- CPU references
struct kt_type { uint32_t id; const char *name; int qk, bytes; };   // a weight type, kernel-name suffix
static inline kt_type kt_mk(uint32_t id, const char *name) {
    const mllm__type_traits *tr = mllm__traits(id);
    kt_type t = {id, name, tr->block, tr->bytes};
    return t;
}
// Every type the kernels are instantiated for (MLLM__GPU_TYPES, kernels/common.h), in its order.
static const kt_type kt_types[] = {
#define KT_TYPE(name, TYPE) kt_mk(MLLM__##TYPE, #name),
    MLLM__GPU_TYPES(KT_TYPE)
#undef KT_TYPE
};
enum {   // indices into kt_types: KT_F32, KT_F16, ...
#define KT_INDEX(name, TYPE) KT_##TYPE,
    MLLM__GPU_TYPES(KT_INDEX)
#undef KT_INDEX
    KT_NTYPES
};

// One weight row dequantized by the CPU backend, widened to double.
static void kt_cpu_dequant(const kt_type &t, const uint8_t *row, uint32_t k, double *out) {
    std::vector<float> f(k);
    mllm__dequant_row(t.id, row, f.data(), k);
    for (uint32_t i = 0; i < k; i++) out[i] = f[i];
}
// The sampler at temperature 0 (greedy).
static int kt_cpu_greedy(float *logits, int n) {
    mllm_sampler_params greedy;
    memset(&greedy, 0, sizeof greedy);
    std::vector<mllm__cand> cand((size_t)n);
    return mllm__sample(logits, n, NULL, 0, &greedy, 0, cand.data());
}

// ---------------------------------------------------------------- buffers, randomness
static std::mt19937 kt_rng(12345);
static inline float kt_uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(kt_rng); }
static inline uint32_t kt_u32() { return kt_rng(); }

// Guarded device buffers (an overrun is reported by the dispatch), freed when the enclosing kt_scope
// ends: each check function opens one.
static std::vector<void *> kt_live;
struct kt_scope {
    size_t mark = kt_live.size();
    ~kt_scope() {
        while (kt_live.size() > mark) { msl::free_guarded(kt_live.back()); kt_live.pop_back(); }
    }
};
template <class T> static T *kt_buf(size_t n) {
    T *p = (T *)msl::alloc_guarded((n ? n : 1) * sizeof(T));   // zero-filled
    kt_live.push_back(p);
    return p;
}
static float *kt_rand(size_t n, float lo = -1.0f, float hi = 1.0f) {
    float *p = kt_buf<float>(n);
    for (size_t i = 0; i < n; i++) p[i] = kt_uniform(lo, hi);
    return p;
}
// Output buffers start as NaN, so an element the kernel never writes cannot pass.
static float *kt_out(size_t n) {
    float *p = kt_buf<float>(n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

// ---------------------------------------------------------------- dispatch and compare
// The emulator's schedule/poison variants (>= 3 schedules, poisoned threadgroup memory); under
// ThreadSanitizer one is enough (its race detection does not depend on the order) and kernels run
// ~10x slower.
static inline std::vector<emu::Variant> kt_variants() {
    std::vector<emu::Variant> v = emu::variants();
    if (emu::tsan) v.resize(1);
    return v;
}

// Dispatches kernel; a failed dispatch (fault, divergent barrier...) or a warning (e.g. a
// non-uniform shuffle) fails the current test.
static bool kt_dispatch(const char *kernel, const emu::Variant &v, uint32_t gx, uint32_t gy, uint32_t tpt,
                        void *const *bufs, int nbuf) {
    msl::Dispatch d;
    d.tgs[0] = gx; d.tgs[1] = gy; d.tpt[0] = tpt;
    d.policy = v.policy; d.poison = v.poison; d.seed = kt_u32();
    msl::Result r = msl::dispatch(kernel, d, bufs, nbuf);
    char what[160];
    snprintf(what, sizeof what, "%s (%s, %s, grid %ux%u, %u threads)", kernel, msl::sched_name(v.policy),
             msl::poison_name(v.poison), gx, gy, tpt);
    CHECK_DISPATCH(r, what);
    return r.ok;
}

// got vs ref element by element: |got - ref| <= tol * scale[i] (scale: the magnitude the rounding
// error grows with, e.g. sum |w x| for a dot product).  Reports the worst element.
static bool kt_close(const char *what, const float *got, const double *ref, const double *scale, size_t n, double tol) {
    size_t bad = 0, worst = 0;
    double worst_r = 0;
    for (size_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - ref[i]), lim = tol * scale[i] + 1e-30;
        if (!(err <= lim)) bad++;
        const double rr = isnan(err) ? INFINITY : err / lim;
        if (rr > worst_r) { worst_r = rr; worst = i; }
    }
    CHECK(bad == 0, "%s: %zu of %zu elements off; worst [%zu] got %.8g want %.8g (err/limit %.3g)", what, bad, n,
          worst, n ? got[worst] : 0.0f, n ? ref[worst] : 0.0, worst_r);
    return bad == 0;
}

// y (M x N) against the double-precision product of x (M x K) with the N weight rows w dequantized by
// the CPU backend (+ r when given), within 2e-5 of sum |w x| (gemv_* and gemm_* share this reference).
static void kt_check_product(const char *name, const kt_type &t, const uint8_t *w, const float *x, const float *r,
                             const float *y, uint32_t K, uint32_t N, uint32_t M, const emu::Variant &v) {
    const size_t rb = (size_t)K / t.qk * t.bytes;
    std::vector<double> wd(K), ref((size_t)M * N), scale((size_t)M * N);
    for (uint32_t n = 0; n < N; n++) {
        kt_cpu_dequant(t, w + n * rb, K, wd.data());
        for (uint32_t m = 0; m < M; m++) {
            const size_t o = (size_t)m * N + n;
            double acc = r ? r[o] : 0, mag = fabs(acc);
            for (uint32_t k = 0; k < K; k++) {
                const double p = wd[k] * x[(size_t)m * K + k];
                acc += p;
                mag += fabs(p);
            }
            ref[o] = acc;
            scale[o] = mag;
        }
    }
    char what[160];
    snprintf(what, sizeof what, "%s K=%u N=%u M=%u %s", name, K, N, M, msl::sched_name(v.policy));
    kt_close(what, y, ref.data(), scale.data(), (size_t)M * N, 2e-5);
}

// ---------------------------------------------------------------- weight rows of every type
static inline void kt_put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void kt_put_f16(uint8_t *p, float f) { kt_put_u16(p, mllm__f32_to_f16(f)); }

// n rows of k random weights: random quant bits, scales of moderate size so that values are O(1).
static uint8_t *kt_weights(const kt_type &t, uint32_t nrows, uint32_t k) {
    const size_t rb = (size_t)k / t.qk * t.bytes;
    uint8_t *w = kt_buf<uint8_t>(rb * nrows);
    for (size_t i = 0; i < rb * nrows; i++) w[i] = (uint8_t)kt_u32();
    for (size_t b = 0; b < rb * nrows / t.bytes; b++) {
        uint8_t *blk = w + b * t.bytes;
        switch (t.id) {   // GGUF type ids
        case 0: { float f = kt_uniform(-1, 1); memcpy(blk, &f, 4); break; }
        case 1: kt_put_f16(blk, kt_uniform(-1, 1)); break;
        case 30: kt_put_u16(blk, mllm__f32_to_bf16(kt_uniform(-1, 1))); break;
        case 8: kt_put_f16(blk, kt_uniform(-1, 1) / 127); break;
        case 2: kt_put_f16(blk, kt_uniform(-1, 1) / 8); break;
        case 3: kt_put_f16(blk, kt_uniform(0, 1) / 15); kt_put_f16(blk + 2, kt_uniform(-1, 0)); break;
        case 12: kt_put_f16(blk, kt_uniform(0, 1) / 600); kt_put_f16(blk + 2, kt_uniform(0, 1) / 60); break;
        case 14: kt_put_f16(blk + 208, kt_uniform(-1, 1) / 4000); break;
        case 6: kt_put_f16(blk, kt_uniform(-1, 1) / 16); break;                                   // Q5_0
        case 7: kt_put_f16(blk, kt_uniform(0, 1) / 31); kt_put_f16(blk + 2, kt_uniform(-1, 0)); break;   // Q5_1
        case 20: kt_put_f16(blk, kt_uniform(-1, 1) / 127); break;                                 // IQ4_NL
        case 10: kt_put_f16(blk + 80, kt_uniform(0, 1) / 45); kt_put_f16(blk + 82, kt_uniform(0, 1) / 15); break;   // Q2_K
        case 11: kt_put_f16(blk + 108, kt_uniform(-1, 1) / 128); break;                           // Q3_K
        case 13: kt_put_f16(blk, kt_uniform(0, 1) / 1200); kt_put_f16(blk + 2, kt_uniform(0, 1) / 60); break;   // Q5_K
        case 23: kt_put_f16(blk, kt_uniform(-1, 1) / 4000); break;                                // IQ4_XS
        }
    }
    return w;
}

#endif
