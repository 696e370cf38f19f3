// Shared helpers of the kernel tests (tests/emu/test_kernels_*.cpp): run one kernel under several
// emulator schedules with poisoned threadgroup memory, random inputs, weight rows of every type, and
// double-precision references.  Each test binary includes this once and ends with t_finish().
#ifndef MLLM_KERNELS_TEST_H
#define MLLM_KERNELS_TEST_H
#include "msl_host.hpp"
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
// GGUF type ids (metalllm.h's mllm__type) with the kernel-name suffix and block geometry.
struct kt_type { uint32_t id; const char *name; int qk, bytes; };
static const kt_type kt_types[] = {
    {0, "f32", 1, 4}, {1, "f16", 1, 2}, {30, "bf16", 1, 2}, {8, "q8_0", 32, 34},
    {2, "q4_0", 32, 18}, {3, "q4_1", 32, 20}, {12, "q4_k", 256, 144}, {14, "q6_k", 256, 210},
};
#define KT_NTYPES 8

static uint16_t kt_f16_bits(float f) { _Float16 h = (_Float16)f; uint16_t b; memcpy(&b, &h, 2); return b; }
static double kt_f16(const uint8_t *p) { _Float16 h; memcpy(&h, p, 2); return (double)(float)h; }
static double kt_bf16(const uint8_t *p) {
    uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static void kt_put_f16(uint8_t *p, float f) { uint16_t b = kt_f16_bits(f); memcpy(p, &b, 2); }

// n rows of k random weights: random quants with scales of moderate size so values are O(1).
static uint8_t *kt_weights(const kt_type &t, uint32_t nrows, uint32_t k) {
    const size_t rb = (size_t)k / t.qk * t.bytes;
    uint8_t *w = kt_buf<uint8_t>(rb * nrows);
    for (size_t i = 0; i < rb * nrows; i++) w[i] = (uint8_t)kt_u32();
    for (uint32_t r = 0; r < nrows; r++) {
        uint8_t *row = w + r * rb;
        for (uint32_t b = 0; b < k / t.qk; b++) {
            uint8_t *blk = row + (size_t)b * t.bytes;
            switch (t.id) {
            case 0: { float f = kt_uniform(-1, 1); memcpy(blk, &f, 4); break; }
            case 1: kt_put_f16(blk, kt_uniform(-1, 1)); break;
            case 30: { float f = kt_uniform(-1, 1); uint32_t u; memcpy(&u, &f, 4); blk[0] = (uint8_t)(u >> 16); blk[1] = (uint8_t)(u >> 24); break; }
            case 8: kt_put_f16(blk, kt_uniform(-1, 1) / 127); break;
            case 2: kt_put_f16(blk, kt_uniform(-1, 1) / 8); break;
            case 3: kt_put_f16(blk, kt_uniform(0, 1) / 15); kt_put_f16(blk + 2, kt_uniform(-1, 0)); break;
            case 12: kt_put_f16(blk, kt_uniform(0, 1) / 600); kt_put_f16(blk + 2, kt_uniform(0, 1) / 60); break;
            case 14: kt_put_f16(blk + 208, kt_uniform(-1, 1) / 4000); break;
            }
        }
    }
    return w;
}

// Dequantizes one row to double, straight from the GGUF block definitions (element by element, no
// chunking: independent of the kernels' loaders).
// TODO(quant): compare against metalllm.h's mllm__dequant_row once the quant branch has landed.
static void kt_dequant(const kt_type &t, const uint8_t *row, uint32_t k, double *out) {
    for (uint32_t b = 0; b < k / t.qk; b++) {
        const uint8_t *x = row + (size_t)b * t.bytes;
        double *y = out + (size_t)b * t.qk;
        switch (t.id) {
        case 0: { float f; memcpy(&f, x, 4); y[0] = f; break; }
        case 1: y[0] = kt_f16(x); break;
        case 30: y[0] = kt_bf16(x); break;
        case 8:
            for (int j = 0; j < 32; j++) y[j] = kt_f16(x) * (int8_t)x[2 + j];
            break;
        case 2:
            for (int j = 0; j < 16; j++) {
                y[j] = kt_f16(x) * ((x[2 + j] & 15) - 8);
                y[j + 16] = kt_f16(x) * ((x[2 + j] >> 4) - 8);
            }
            break;
        case 3:
            for (int j = 0; j < 16; j++) {
                y[j] = kt_f16(x) * (x[4 + j] & 15) + kt_f16(x + 2);
                y[j + 16] = kt_f16(x) * (x[4 + j] >> 4) + kt_f16(x + 2);
            }
            break;
        case 12: {
            const uint8_t *sc = x + 4, *q = x + 16;
            for (int s = 0; s < 8; s++) {   // sub-block s: 6-bit scale and min
                int scale, min;
                if (s < 4) { scale = sc[s] & 63; min = sc[s + 4] & 63; }
                else { scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4); min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4); }
                for (int l = 0; l < 32; l++) {
                    const int nib = (s & 1) ? q[32 * (s / 2) + l] >> 4 : q[32 * (s / 2) + l] & 15;
                    y[32 * s + l] = kt_f16(x) * scale * nib - kt_f16(x + 2) * min;
                }
            }
            break;
        }
        case 14: {
            const uint8_t *ql = x, *qh = x + 128;
            const int8_t *sc = (const int8_t *)(x + 192);
            for (int h = 0; h < 2; h++)
                for (int l = 0; l < 32; l++) {
                    const int q0 = ((ql[64 * h + l] & 15) | ((qh[32 * h + l] >> 0 & 3) << 4)) - 32;
                    const int q1 = ((ql[64 * h + l + 32] & 15) | ((qh[32 * h + l] >> 2 & 3) << 4)) - 32;
                    const int q2 = ((ql[64 * h + l] >> 4) | ((qh[32 * h + l] >> 4 & 3) << 4)) - 32;
                    const int q3 = ((ql[64 * h + l + 32] >> 4) | ((qh[32 * h + l] >> 6 & 3) << 4)) - 32;
                    const double d = kt_f16(x + 208);
                    const int is = 8 * h + l / 16;
                    y[128 * h + l] = d * sc[is] * q0;
                    y[128 * h + l + 32] = d * sc[is + 2] * q1;
                    y[128 * h + l + 64] = d * sc[is + 4] * q2;
                    y[128 * h + l + 96] = d * sc[is + 6] * q3;
                }
            break;
        }
        }
    }
}
#endif
