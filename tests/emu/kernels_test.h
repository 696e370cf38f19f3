// Shared helpers of the kernel tests (tests/emu/test_kernels_*.cpp): run one kernel under several
// emulator schedules with poisoned threadgroup memory, random inputs, weight rows of every type, and
// references from the CPU backend in metalllm.h.  Each test binary includes this once and ends with t_finish().
#ifndef MLLM_KERNELS_TEST_H
#define MLLM_KERNELS_TEST_H
#include "msl_host.hpp"
#define METALLLM_IMPLEMENTATION   // the CPU backend's ops and dequantization are the references
#include "metalllm.h"   // (built with -I at the repository root)
#include "../test.h"
#include "../../kernels/common.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

static std::mt19937 kt_rng(12345);
static float kt_uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(kt_rng); }
static uint32_t kt_u32() { return kt_rng(); }

// Device buffers: the end of each touches a guard page, so an overrun faults (and is reported).
// Never freed: a test binary makes a few hundred small ones.
template <class T> static T *kt_buf(size_t n) {
    T *p = (T *)msl::alloc_guarded((n ? n : 1) * sizeof(T));
    memset((void *)p, 0, (n ? n : 1) * sizeof(T));
    return p;
}
// Output buffers start as NaN, so an element the kernel never writes cannot pass.
static float *kt_out(size_t n) {
    float *p = kt_buf<float>(n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}
static float *kt_rand(size_t n, float lo = -1.0f, float hi = 1.0f) {
    float *p = kt_buf<float>(n);
    for (size_t i = 0; i < n; i++) p[i] = kt_uniform(lo, hi);
    return p;
}

// The three schedules every kernel must pass (fiber order inside each scheduling pass, and whole
// simdgroups running to the next barrier in reverse or random order), all with threadgroup memory
// poisoned with NaN so that a read before a write shows up in the result.
struct kt_sched { int policy; int poison; const char *name; };
static const kt_sched kt_scheds[] = {
    {msl::SCHED_FORWARD, msl::POISON_NAN, "fwd"},
    {msl::SCHED_SG_REVERSE, msl::POISON_NAN, "sg-rev"},
    {msl::SCHED_RANDOM, msl::POISON_NAN, "rand"},
};
#define KT_NSCHED 3

// Dispatches kernel under schedule s; a failed dispatch (fault, divergent barrier...) or a warning
// (e.g. a non-uniform shuffle) fails the current test.
static bool kt_dispatch(const char *kernel, const kt_sched &s, uint32_t gx, uint32_t gy, uint32_t tpt,
                        void *const *bufs, int nbuf) {
    msl::Dispatch d;
    d.tgs[0] = gx; d.tgs[1] = gy; d.tpt[0] = tpt;
    d.policy = s.policy; d.poison = s.poison; d.seed = kt_u32();
    msl::Result r = msl::dispatch(kernel, d, bufs, nbuf);
    CHECK(r.ok, "%s (%s, grid %ux%u, %u threads): %s", kernel, s.name, gx, gy, tpt, r.error.c_str());
    CHECK(r.warnings.empty(), "%s (%s): %s", kernel, s.name, r.warnings.empty() ? "" : r.warnings[0].c_str());
    return r.ok;
}

// got vs ref element by element: |got - ref| <= tol * scale[i] (scale: the magnitude the rounding
// error grows with, e.g. sum |w x| for a dot product).  Reports the worst element.
static bool kt_close(const char *what, const float *got, const double *ref, const double *scale, size_t n, double tol) {
    size_t bad = 0, worst = 0;
    double worst_r = 0;
    for (size_t i = 0; i < n; i++) {
        const double err = std::fabs((double)got[i] - ref[i]), lim = tol * scale[i] + 1e-30;
        if (!(err <= lim)) bad++;
        const double rr = std::isnan(err) ? INFINITY : err / lim;
        if (rr > worst_r) { worst_r = rr; worst = i; }
    }
    CHECK(bad == 0, "%s: %zu of %zu elements off; worst [%zu] got %.8g want %.8g (err/limit %.3g)", what, bad, n,
          worst, n ? got[worst] : 0.0f, n ? ref[worst] : 0.0, worst_r);
    return bad == 0;
}

// ---------------------------------------------------------------- weight rows of every type
// Weight types by GGUF id (metalllm.h's mllm__type) with the kernel-name suffix; block geometry comes
// from the CPU side's type traits.
struct kt_type { uint32_t id; const char *name; int qk, bytes; };
static kt_type kt_mk(uint32_t id, const char *name) {
    const mllm__type_traits *tr = mllm__traits(id);
    kt_type t = {id, name, tr->block, tr->bytes};
    return t;
}
static const kt_type kt_types[] = {
    kt_mk(MLLM__F32, "f32"), kt_mk(MLLM__F16, "f16"), kt_mk(MLLM__BF16, "bf16"), kt_mk(MLLM__Q8_0, "q8_0"),
    kt_mk(MLLM__Q4_0, "q4_0"), kt_mk(MLLM__Q4_1, "q4_1"), kt_mk(MLLM__Q4_K, "q4_k"), kt_mk(MLLM__Q6_K, "q6_k"),
};
#define KT_NTYPES 8

static void kt_put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void kt_put_f16(uint8_t *p, float f) { kt_put_u16(p, mllm__f32_to_f16(f)); }

// n rows of k random weights: random quant bits, scales of moderate size so that values are O(1).
static uint8_t *kt_weights(const kt_type &t, uint32_t nrows, uint32_t k) {
    const size_t rb = (size_t)k / t.qk * t.bytes;
    uint8_t *w = kt_buf<uint8_t>(rb * nrows);
    for (size_t i = 0; i < rb * nrows; i++) w[i] = (uint8_t)kt_u32();
    for (size_t b = 0; b < rb * nrows / t.bytes; b++) {
        uint8_t *blk = w + b * t.bytes;
        switch (t.id) {
        case MLLM__F32: { float f = kt_uniform(-1, 1); memcpy(blk, &f, 4); break; }
        case MLLM__F16: kt_put_f16(blk, kt_uniform(-1, 1)); break;
        case MLLM__BF16: kt_put_u16(blk, mllm__f32_to_bf16(kt_uniform(-1, 1))); break;
        case MLLM__Q8_0: kt_put_f16(blk, kt_uniform(-1, 1) / 127); break;
        case MLLM__Q4_0: kt_put_f16(blk, kt_uniform(-1, 1) / 8); break;
        case MLLM__Q4_1: kt_put_f16(blk, kt_uniform(0, 1) / 15); kt_put_f16(blk + 2, kt_uniform(-1, 0)); break;
        case MLLM__Q4_K: kt_put_f16(blk, kt_uniform(0, 1) / 600); kt_put_f16(blk + 2, kt_uniform(0, 1) / 60); break;
        case MLLM__Q6_K: kt_put_f16(blk + 208, kt_uniform(-1, 1) / 4000); break;
        }
    }
    return w;
}

// One row dequantized by the CPU backend (metalllm.h's mllm__dequant_row), widened to double.
static void kt_dequant(const kt_type &t, const uint8_t *row, uint32_t k, double *out) {
    std::vector<float> f(k);
    mllm__dequant_row(t.id, row, f.data(), k);
    for (uint32_t i = 0; i < k; i++) out[i] = f[i];
}
#endif
