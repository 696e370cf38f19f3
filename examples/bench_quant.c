/* Micro benchmark of the weight-type dot products: ns per row-dot and weight GB/s for each type, scalar
   kernels vs each SIMD level the CPU has (one activation row, and four rows per weight load as prefill
   does, and four weight rows per call against one activation row as decode does, and 8 activation rows
   against every weight row as batched decode and prefill do, where the level has that kernel).  The
   weights (256 rows) stay in cache, so this measures the kernels, not memory.
   usage: bench_quant [milliseconds per measurement, default 60] [TYPE (all)] */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include <time.h>

/* The thread's CPU time where there is one (time it was descheduled on a shared machine does not count),
   else wall time. */
static double now(void) {
    struct timespec ts;
#ifdef CLOCK_THREAD_CPUTIME_ID
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
#else
    timespec_get(&ts, TIME_UTC);
#endif
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

enum { ROWS = 256, NX = 8, SCALAR = 0, SIMD1 = 1, SIMD4 = 2, ROWS4 = 3, TOK8 = 4 };
static volatile float sink;

/* Seconds per row-dot of one variant: the best of 7 trials of ms/7 milliseconds each (the machine may
   be shared; the minimum is the least disturbed); 0 where the level has no such kernel. */
static double measure(int variant, uint32_t type, int64_t n, const uint8_t *w, size_t wrow,
                      const uint8_t *x, size_t xrow, double ms) {
    double best = 1e30;
    static float out[ROWS * NX];
    int trial;
    if (variant == TOK8 && !mllm__simd_dot_tok(type, n, w, wrow, 0, ROWS, x, xrow, NX, out, ROWS)) return 0;
    for (trial = 0; trial < 7; trial++) {
        double t0 = now(), t;
        long reps = 0, r;
        do {
            if (variant == TOK8) mllm__simd_dot_tok(type, n, w, wrow, 0, ROWS, x, xrow, NX, out, ROWS);
            else for (r = 0; r < ROWS; r++) {
                const uint8_t *wr = w + r * wrow;
                if (variant == SCALAR) out[0] += mllm__vec_dot_scalar(type, n, wr, x);
                else if (variant == SIMD1) out[0] += mllm__vec_dot(type, n, wr, x);
                else if (variant == SIMD4) mllm__vec_dot_nx(type, n, wr, x, xrow, 4, out);
                else if (r % 4 == 0) mllm__vec_dot_rows(type, n, wr, wrow, 4, x, out);
            }
            reps++;
            t = now() - t0;
        } while (t < ms * 1e-3 / 7);
        t /= (double)reps * ROWS * (variant == SIMD4 ? 4 : variant == TOK8 ? NX : 1);
        best = t < best ? t : best;
    }
    sink = out[0] + out[3];
    return best;
}

int main(int argc, char **argv) {
    static const uint32_t types[] = {MLLM__F32, MLLM__F16, MLLM__BF16, MLLM__Q8_0, MLLM__Q4_0, MLLM__Q4_1,
                                     MLLM__Q5_0, MLLM__Q5_1, MLLM__Q4_K, MLLM__Q5_K, MLLM__Q6_K};
    static const int64_t lens[] = {576, 1536};
    double ms = argc > 1 ? atof(argv[1]) : 60.0;
    unsigned seed = 1;
    size_t ti, li, i;
    const int top = mllm__simd_force(99);
    int lvl;
    printf("dot products, %d cached weight rows; ns per row-dot (weight GB/s); nx4 = per row of a 4-row "
           "vec_dot_nx, rows4 = per row of a 4-weight-row vec_dot_rows, tok8 = per row and token of the batched "
           "kernel (dot_tok, 8 tokens; GMAC/s)\n", ROWS);
    printf("%-5s %5s  %20s", "type", "n", "scalar");
    for (lvl = 1; lvl <= top; lvl++)
        printf(" %20s %16s nx4 %14s rows4 %13s tok8", mllm__simd_name(lvl), mllm__simd_name(lvl), mllm__simd_name(lvl),
               mllm__simd_name(lvl));
    printf("\n");
    for (ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti], tx = (uint32_t)mllm__traits(t)->vec_dot_type;
        if (argc > 2 && strcmp(argv[2], mllm__traits(t)->name)) continue;
        for (li = 0; li < 2; li++) {
            int64_t n = lens[li];
            size_t wrow, xrow;
            uint8_t *w, *x;
            float *xf;
            int v;
            if (n % mllm__traits(t)->block) n = n / mllm__traits(t)->block * mllm__traits(t)->block + mllm__traits(t)->block;
            wrow = mllm__row_bytes(t, n);
            xrow = mllm__row_bytes(tx, n);
            w = (uint8_t *)malloc(wrow * ROWS);
            x = (uint8_t *)malloc(xrow * NX);
            xf = (float *)malloc(sizeof(float) * (size_t)n * NX);
            for (i = 0; i < (size_t)n * NX; i++) xf[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
            /* random weight bytes are valid blocks once the scales are finite */
            for (i = 0; i < wrow * ROWS; i++) w[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
            if (t == MLLM__F32 || t == MLLM__F16 || t == MLLM__BF16)   /* keep float weights finite */
                for (i = 0; i < ROWS; i++) mllm__quant_row(t, xf, w + i * wrow, n);
            else if (t != MLLM__Q6_K)   /* clear f16 scales' exponent top bit: no inf/NaN */
                for (i = 0; i < ROWS * wrow; i += (size_t)mllm__traits(t)->bytes) w[i + 1] &= 0x3f;
            else
                for (i = 0; i < ROWS * wrow; i += 210) w[i + 209] &= 0x3f;
            for (i = 0; i < NX; i++) mllm__quant_row(tx, xf + i * n, x + i * xrow, n);
            printf("%-5s %5ld%s", mllm__traits(t)->name, (long)n, n != lens[li] ? "*" : " ");
            for (lvl = 0; lvl <= top; lvl++)
                for (v = lvl ? SIMD1 : SCALAR; v <= (lvl ? TOK8 : SCALAR); v++) {
                    double s;
                    mllm__simd_force(lvl ? lvl : top);
                    s = measure(v, t, n, w, wrow, x, xrow, ms);
                    if (v == TOK8 && !s) printf(" %8s (%5s GMAC/s)", "-", "-");
                    else if (v == TOK8) printf(" %8.1f (%5.1f GMAC/s)", s * 1e9, (double)n / s * 1e-9);
                    else printf(" %9.1f (%6.1f GB/s)", s * 1e9, (double)wrow / s * 1e-9);
                }
            printf("\n");
            free(w); free(x); free(xf);
        }
    }
    printf("* n rounded up to a whole K-quant super-block (256)\n");
    return 0;
}
