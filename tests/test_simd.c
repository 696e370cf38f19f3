/* The SIMD levels chosen at run time give the same model outputs.  Each tiny model (every weight type and
   architecture, ../shared/testdata/tiny) and SmolLM2 (when present) runs the same two sequences at every
   level the CPU has (x86: AVX-512, AVX2, scalar): the SIMD levels must give identical logits bit for bit
   (same integer sums, same float operations in the same order); the scalar kernels sum floats in another
   order, so they must only be close (tiny models only: SmolLM2 is too slow on them for CI).  The
   fixtures themselves are checked by test_model at the best level.  Each runs twice: two sequences
   batched (decode multiplies two activation rows) and one alone (decode's several-weight-row kernels). */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"
#include <math.h>

enum { N_PROMPT = 40, N_GEN = 6, N_SEQ = 2 };

/* Logits of n_seq <= N_SEQ sequences (different prompts, batched), the prompt step and N_GEN teacher-forced
   steps each, concatenated into out (n_seq * (N_GEN + 1) * n_vocab floats).  Returns n_vocab, 0 on
   failure. */
static int run_model(const char *path, float **out, int n_seq) {
    mllm_model *m = NULL;
    mllm_context *ctx;
    mllm_model_params mp;
    mllm_context_params cp;
    mllm_seq_params sp;
    mllm_model_info info;
    mllm_seq_id ids[N_SEQ];
    int steps[N_SEQ] = {0}, s, i, done = 0, nv;
    memset(&mp, 0, sizeof mp);
    mp.n_threads = 2;
    if (mllm_model_load(&m, path, &mp) != MLLM_OK) { CHECK(0, "%s: %s", path, mllm_last_error()); return 0; }
    mllm_model_get_info(m, &info);
    nv = info.n_vocab;
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = N_SEQ;
    cp.kv_blocks = 64;
    memset(&sp, 0, sizeof sp);
    sp.manual = 1;
    *out = (float *)calloc((size_t)N_SEQ * (N_GEN + 1) * (size_t)nv, sizeof(float));
    if (mllm_context_create(&ctx, m, &cp) != MLLM_OK) { CHECK(0, "%s", mllm_last_error()); mllm_model_free(m); return 0; }
    for (s = 0; s < n_seq; s++) {
        mllm_token p[N_PROMPT];
        for (i = 0; i < N_PROMPT; i++) p[i] = (mllm_token)(1 + (i * 7919 + s * 104729) % (nv - 1));
        CHECK(mllm_seq_add(ctx, p, N_PROMPT - 9 * s, &sp, &ids[s]) == MLLM_OK, "%s", mllm_last_error());
    }
    while (done < n_seq) {
        mllm_step_result r;
        int k;
        memset(&r, 0, sizeof r);   /* (filled by mllm_step; for gcc -Wmaybe-uninitialized) */
        if (mllm_step(ctx, &r) != MLLM_OK || r.n_tokens == 0) { CHECK(0, "step: %s", mllm_last_error()); break; }
        for (k = 0; k < r.n_tokens; k++) {
            mllm_token next;
            for (s = 0; s < n_seq && ids[s] != r.tokens[k].seq; s++) {}
            if (s == n_seq) continue;
            memcpy(*out + ((size_t)s * (N_GEN + 1) + (size_t)steps[s]) * (size_t)nv, mllm_seq_logits(ctx, ids[s]),
                   sizeof(float) * (size_t)nv);
            if (++steps[s] > N_GEN) { done++; mllm_seq_remove(ctx, ids[s]); ids[s] = -1; continue; }
            next = (mllm_token)(1 + (steps[s] * 31 + s) % (nv - 1));   /* teacher-forced: same on every level */
            CHECK(mllm_seq_append(ctx, ids[s], &next, 1) == MLLM_OK, "%s", mllm_last_error());
        }
    }
    mllm_context_free(ctx);
    mllm_model_free(m);
    return nv;
}

static void check_levels(const char *path, const char *label, int lowest, int n_seq) {
    const int top = mllm__simd_force(99);
    float *ref = NULL, *got = NULL;
    int lvl, nv = 0;
    size_t n, i;
    for (lvl = top; lvl >= lowest; lvl--) {
        double d2 = 0, r2 = 0;
        int nv_l;
        mllm__simd_force(lvl);
        nv_l = run_model(path, lvl == top ? &ref : &got, n_seq);
        if (lvl == top) { nv = nv_l; if (!nv) break; continue; }
        if (!nv_l) break;
        n = (size_t)n_seq * (N_GEN + 1) * (size_t)nv;
        for (i = 0; i < n; i++) { d2 += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]); r2 += (double)ref[i] * ref[i]; }
        if (lvl >= 1) CHECK(memcmp(got, ref, n * sizeof(float)) == 0, "%s: %s logits differ from %s (rel L2 %.3g)",
                            label, mllm__simd_name(lvl), mllm__simd_name(top), sqrt(d2 / r2));
        else CHECK(sqrt(d2 / r2) < 3e-2, "%s: scalar vs %s rel L2 %.3g", label, mllm__simd_name(top), sqrt(d2 / r2));
        printf("  %-22s %d seq %-7s vs %-7s: %s (rel L2 %.2e)\n", label, n_seq, mllm__simd_name(lvl), mllm__simd_name(top),
               memcmp(got, ref, n * sizeof(float)) ? "close" : "identical", sqrt(d2 / r2));
        free(got);
        got = NULL;
    }
    mllm__simd_force(top);
    free(ref);
}

static void test_tiny_models(void) {
    static const char *const names[] = {"tiny-llama-F32", "tiny-llama-F16", "tiny-llama-BF16", "tiny-llama-Q8_0",
                                        "tiny-llama-Q4_0", "tiny-llama-Q4_1", "tiny-llama-Q5_0", "tiny-llama-Q5_1",
                                        "tiny-llama-Q4_K", "tiny-llama-Q5_K", "tiny-llama-Q6_K", "tiny-llama-Q4_K_M",
                                        "tiny-qwen2-Q8_0", "tiny-qwen3-Q8_0", "tiny-mixtral-Q8_0", "tiny-qwen3moe-Q8_0"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "../shared/testdata/tiny/models/%s.gguf", names[i]);
        check_levels(path, names[i], 0, N_SEQ);
        check_levels(path, names[i], 0, 1);
    }
}

static void test_smollm2(void) {
    const char *model = getenv("MLLM_MODEL") ? getenv("MLLM_MODEL") : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    FILE *f = fopen(model, "rb");
    if (!f) { printf("  skipped: %s not present (make model)\n", model); return; }
    fclose(f);
    check_levels(model, "SmolLM2-135M Q4_1", 1, N_SEQ);   /* the scalar kernels are too slow for CI here */
    check_levels(model, "SmolLM2-135M Q4_1", 1, 1);
}

/* The gated FFN activations at every level against double precision: SwiGLU and GeGLU (tanh form; the
   SIMD levels compute it as x / (1 + e^(-2u))), inputs in and past exp's clamped range. */
static void test_glu_row_ops(void) {
    enum { N = 4096 + 5 };
    static float x[N], up[N], out[N];
    const int top = mllm__simd_force(99);
    uint32_t r = 12345;
    int level, i, act;
    for (i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = ((float)(r >> 8) / 16777216.0f * 2 - 1) * (i < 256 ? 200.0f : 12.0f);
        up[i] = 0.5f + (float)(i % 7) * 0.25f;
    }
    for (level = top; level >= 0; level--) {
        if (mllm__simd_force(level) != level) continue;
        for (act = 0; act < 2; act++) {
            double worst = 0;
            if (act) mllm__geglu(out, x, up, N);
            else mllm__swiglu(out, x, up, N);
            for (i = 0; i < N; i++) {
                const double v = x[i], u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
                const double want = (act ? 0.5 * v * (1 + tanh(u)) : v / (1 + exp(-v))) * up[i];
                const double err = fabs(out[i] - want) / (fmax(fabs(v), 1) * up[i]);   /* both are ~x for large x */
                worst = fmax(worst, err);
                CHECK(err <= 1e-6, "%s %s x=%g: %.9g want %.9g", mllm__simd_name(level), act ? "geglu" : "swiglu", x[i],
                      out[i], want);
            }
            printf("  %-8s %s worst error %.2g of max(|x|, 1)\n", mllm__simd_name(level), act ? "geglu" : "swiglu", worst);
        }
    }
    mllm__simd_force(top);
}

int main(void) {
    printf("SIMD levels: best %s\n", mllm__simd_name(mllm__simd_force(99)));
    RUN(test_glu_row_ops);
    RUN(test_tiny_models);
    RUN(test_smollm2);
    return t_finish();
}
