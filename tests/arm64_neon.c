/* arm64 only (tests/arm64.mk runs it under qemu-aarch64): every NEON kernel is executed and compared
   with the scalar code compiled into the same binary.  Integer-sum weight types and the activation
   quantizers must give the scalar path's bits exactly; float rows and row ops are checked against
   double-precision references.  Prints the NEON kernels it exercised. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"
#include <math.h>

#if !MLLM__NEON
#error "arm64_neon.c tests the NEON kernels: build it for aarch64 without MLLM_NO_SIMD"
#endif

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint64_t rnd(void) {   /* splitmix64 */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rnd_f(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 4.0 - 2.0); }

static const char *exercised[32];
static int n_exercised;
static void mark(const char *name) { exercised[n_exercised++] = name; }

/* Random quant bytes with moderate f16 scales at the places each format keeps them. */
static void rnd_weights(uint32_t t, uint8_t *w, int64_t n) {
    const mllm__type_traits *tt = mllm__traits(t);
    int64_t b, i, nb = n / tt->block;
    for (i = 0; i < (int64_t)mllm__row_bytes(t, n); i++) w[i] = (uint8_t)rnd();
    for (b = 0; b < nb; b++) {
        uint8_t *p = w + b * tt->bytes;
        uint16_t h1 = mllm__f32_to_f16(rnd_f() / 64), h2 = mllm__f32_to_f16(rnd_f() / 64);
        if (tt->block == 1) {
            float f = rnd_f();
            if (t == MLLM__F32) memcpy(p, &f, 4);
            else { h1 = t == MLLM__F16 ? mllm__f32_to_f16(f) : mllm__f32_to_bf16(f); memcpy(p, &h1, 2); }
        } else if (t == MLLM__Q6_K) memcpy(p + 208, &h1, 2);
        else {
            memcpy(p, &h1, 2);
            if (t == MLLM__Q4_1 || t == MLLM__Q5_1 || t == MLLM__Q4_K || t == MLLM__Q5_K) memcpy(p + 2, &h2, 2);
        }
    }
}

/* Weight-type dot products: the NEON kernel (mllm__simd_dot_nx) for 1..4 activation rows against the
   scalar kernel, bit for bit where the block sums are integers; float rows within float rounding. */
static void test_neon_dots(void) {
    static const uint32_t types[] = {MLLM__Q4_0, MLLM__Q4_1, MLLM__Q5_0, MLLM__Q5_1, MLLM__Q8_0, MLLM__Q4_K,
                                     MLLM__Q5_K, MLLM__Q6_K, MLLM__F16, MLLM__BF16, MLLM__F32};
    static const int64_t lens[] = {256, 512, 1536, 4096, 256 * 11};
    uint8_t *w = (uint8_t *)malloc(4096 * 4), *x = (uint8_t *)malloc(4 * (4096 * 4 + 16));
    float *xf = (float *)malloc(4096 * sizeof(float));
    unsigned ti, li, rep;
    for (ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t t = types[ti], tx = (uint32_t)mllm__traits(t)->vec_dot_type;
        const int exact = mllm__traits(t)->block > 1;
        int handled = 1;
        for (li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (rep = 0; rep < 4; rep++) {
                const int64_t n = lens[li];
                const size_t xs = mllm__row_bytes(tx, n) + 2 * rep;    /* unaligned rows */
                float got[4], want[4];
                int j, nx;
                int64_t k;
                rnd_weights(t, w, n);
                for (j = 0; j < 4; j++) {
                    for (k = 0; k < n; k++) xf[k] = rnd_f() * (rep == 3 ? 1e3f : 1.0f);
                    mllm__quant_row(tx, xf, x + j * xs, n);
                    want[j] = mllm__vec_dot_scalar(t, n, w, x + j * xs);
                }
                for (nx = 1; nx <= 4; nx++) {
                    handled &= mllm__simd_dot_nx(t, n, w, x, xs, nx, got);
                    for (j = 0; j < nx; j++) {
                        if (exact)
                            CHECK(memcmp(&got[j], &want[j], 4) == 0, "%s n=%ld nx=%d row %d: neon %.9g scalar %.9g",
                                  mllm__traits(t)->name, (long)n, nx, j, got[j], want[j]);
                        else
                            CHECK(fabsf(got[j] - want[j]) <= 1e-5f * (1.0f + fabsf(want[j])) * sqrtf((float)n),
                                  "%s n=%ld: neon %.9g scalar %.9g", mllm__traits(t)->name, (long)n, got[j], want[j]);
                    }
                }
            }
        CHECK(handled, "%s has no NEON kernel", mllm__traits(t)->name);
        if (handled) mark(mllm__traits(t)->name);
    }
    free(w); free(x); free(xf);
}

/* Activation quantizers: NEON writes the scalar quantizer's bytes, including ties, zeros, a row whose
   largest magnitude appears with both signs, and huge and tiny values. */
static void test_neon_quantizers(void) {
    float x[256];
    uint8_t a[300], b[300];
    int rep, i, k;
    for (rep = 0; rep < 400; rep++) {
        for (i = 0; i < 256; i++) {
            switch (rep % 5) {
            case 0: x[i] = rnd_f(); break;
            case 1: x[i] = (float)((int)(rnd() % 255) - 127) * 0.5f; break;       /* many exact ties */
            case 2: x[i] = rnd() % 3 ? 0.0f : rnd_f() * 1e-30f; break;
            case 3: x[i] = rnd_f() * 1e30f; break;
            default: x[i] = i % 7 == 3 ? (rnd() & 1 ? 3.0f : -3.0f) : rnd_f(); break;   /* +-max repeats */
            }
        }
        if (rep == 10) memset(x, 0, sizeof x);
        for (k = 0; k < 8; k++) {
            memset(a, 0, sizeof a); memset(b, 0, sizeof b);
            mllm__neon_quant_q8_32(x + 32 * k, a, 0);
            mllm__quant_q8_32(x + 32 * k, b, 0);
            CHECK(memcmp(a, b, 34) == 0, "Q8_0 rep %d block %d differs", rep, k);
            mllm__neon_quant_q8_32(x + 32 * k, a, 1);
            mllm__quant_q8_32(x + 32 * k, b, 1);
            CHECK(memcmp(a, b, 36) == 0, "Q8_1 rep %d block %d differs", rep, k);
        }
        mllm__neon_quant_q8_k(x, a);
        mllm__quant_q8_k(x, b);
        CHECK(memcmp(a, b, 292) == 0, "Q8_K rep %d differs", rep);
    }
    mark("quantize Q8_0"); mark("quantize Q8_1"); mark("quantize Q8_K");
}

/* Row ops against double-precision references. */
static void test_neon_row_ops(void) {
    enum { N = 576 + 3 };
    float x[N], w[N], out[N], acc[N], acc0[N];
    uint16_t h[N];
    double ss = 0, d = 0, worst = 0;
    int i;
#if !MLLM__NEON_ROWS
    CHECK(0, "NEON row ops are compiled out (MLLM__TEST_SCALAR_ROW_OPS)");
    return;
#endif
    for (i = 0; i < N; i++) { x[i] = rnd_f(); w[i] = rnd_f(); h[i] = mllm__f32_to_f16(rnd_f()); ss += (double)x[i] * x[i]; }
    mllm__rmsnorm(out, x, w, N, 1e-5f);
    for (i = 0; i < N; i++) {
        double want = x[i] / sqrt(ss / N + 1e-5) * w[i];
        CHECK(fabs(out[i] - want) <= 1e-6 * (fabs(want) + 1e-3), "rmsnorm %d: %.9g want %.9g", i, out[i], want);
    }
    mark("rmsnorm");
    for (i = 0; i < N; i++) d += (double)x[i] * mllm__f16_to_f32(h[i]);
    {
        float got = mllm__dot_f16(x, h, N);
        CHECK(fabs(got - d) <= 1e-5 * (fabs(d) + 1), "dot_f16 %.9g want %.9g", got, d);
        mark("dot_f16");
    }
    for (i = 0; i < N; i++) acc[i] = acc0[i] = rnd_f();
    mllm__axpy_f16(acc, 0.37f, h, N);
    for (i = 0; i < N; i++) {
        double want = acc0[i] + 0.37 * mllm__f16_to_f32(h[i]);
        CHECK(fabs(acc[i] - want) <= 1e-6 * (fabs(want) + 1), "axpy_f16 %d: %.9g want %.9g", i, acc[i], want);
    }
    mark("axpy_f16");
    for (i = 0; i < N; i++) x[i] = rnd_f() * (i < 64 ? 60.0f : 8.0f);   /* exp's clamped range too */
    mllm__swiglu(out, x, w, N);
    for (i = 0; i < N; i++) {
        double want = x[i] / (1.0 + exp(-(double)x[i])) * w[i], err = fabs(out[i] - want) / (fabs(want) + 1e-30);
        if (want != 0 && err > worst) worst = err;
        CHECK(fabs(out[i] - want) <= 1e-6 * fabs(want) + 1e-30, "swiglu %d (x=%g): %.9g want %.9g", i, x[i], out[i], want);
    }
    mark("swiglu");
    printf("  swiglu worst relative error %.2g\n", worst);
    mllm__geglu(out, x, w, N);   /* x / (1 + e^(-2u)): errors relative to max(|x|, 1), as both are ~x far out */
    for (worst = 0, i = 0; i < N; i++) {
        double v = x[i], want = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))) * w[i];
        double err = fabs(out[i] - want) / (fmax(fabs(v), 1) * fabs(w[i]) + 1e-30);
        worst = fmax(worst, err);
        CHECK(err <= 1e-6, "geglu %d (x=%g): %.9g want %.9g", i, x[i], out[i], want);
    }
    mark("geglu");
    printf("  geglu worst error %.2g of max(|x|, 1)\n", worst);
}

/* f16 <-> f32 in hardware, over every half and across the rounding boundaries of f32 -> f16. */
static void test_neon_f16_conversions(void) {
    uint32_t i;
    int bad = 0;
    for (i = 0; i < 65536; i++) {
        float f = mllm__f16_to_f32((uint16_t)i);
        uint32_t u, want;
        uint16_t back = mllm__f32_to_f16(f);
        /* the scalar decoder spelled out: normal, subnormal, inf/NaN */
        uint32_t s = (i & 0x8000) << 16, e = (i >> 10) & 31, m = i & 0x3ff;
        if (e == 31) want = s | 0x7f800000 | (m ? 0x400000 | m << 13 : 0);
        else if (e) want = s | (e + 112) << 23 | m << 13;
        else if (!m) want = s;
        else { float v = ldexpf((float)m, -24); memcpy(&want, &v, 4); want |= s; }
        memcpy(&u, &f, 4);
        bad += u != want;
        bad += back != (uint16_t)(e == 31 && m ? i | 0x200 : i);
    }
    CHECK(bad == 0, "%d f16 conversions differ", bad);
    mark("f16<->f32");
}

int main(void) {
    int i;
#if defined(__ARM_FEATURE_DOTPROD)
    printf("SIMD: NEON with the dot-product extension (sdot)\n");
#else
    printf("SIMD: NEON without the dot-product extension (widening multiplies)\n");
#endif
    RUN(test_neon_dots);
    RUN(test_neon_quantizers);
    RUN(test_neon_row_ops);
    RUN(test_neon_f16_conversions);
    printf("NEON kernels executed: %d:", n_exercised);
    for (i = 0; i < n_exercised; i++) printf(" %s", exercised[i]);
    printf("\n");
    return t_finish();
}
