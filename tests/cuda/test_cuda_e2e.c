/* The engine end to end on an NVIDIA GPU (MLLM_BACKEND_CUDA) against the CPU path, token for token
   (greedy) up to each sequence's first near tie on the CPU (top-2 gap <= 1e-3: there float sums in
   another order may pick the other token, as tiny llama Q4_0 did at a gap of 2e-5 when its first step
   took the GEMM), on the models named on the command line: eight concurrent sequences of different prompt
   lengths (so steps mix prefill and decode), one of them forked after its first token (copy-on-write
   KV), and each sequence run alone on the GPU too (concurrent == solo).  Decode steps of 9 tokens put a
   model's wide products (an LM head of >= 128 GEMM tiles, e.g. a 150k vocabulary) on the GEMM, the
   others on gemv_multi (mllm__gpu_use_gemm).
     test_cuda_e2e MODEL.gguf...
   Without a GPU (no driver): the CUDA backend must refuse cleanly (MLLM_ERR_UNSUPPORTED), checked on
   the first model; the comparisons are then skipped.  Also: AUTO's choice, the device parameter. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "../test.h"

#define N_ADD 8
#define N_SEQ 9      /* N_ADD added + 1 fork */
#define N_GEN 24

static const char **g_models;
static int g_n_models, g_have_gpu = -1;

/* margin: the top-2 gap of the logits each token was picked from; where the CPU's is at most NEAR_TIE the
   paths may part (float sums in another order), so tokens are compared up to such a step only */
#define NEAR_TIE 1e-3f
typedef struct run_out { mllm_token tok[N_SEQ][N_GEN]; float margin[N_SEQ][N_GEN]; int n[N_SEQ]; int ok; } run_out;

static float top2_margin(const float *l, int n) {
    float b1 = -INFINITY, b2 = -INFINITY;
    int k;
    for (k = 0; l && k < n; k++) {
        if (l[k] > b1) { b2 = b1; b1 = l[k]; }
        else if (l[k] > b2) b2 = l[k];
    }
    return b1 - b2;
}

/* the tokens of sequence s worth comparing: those before the CPU's first near tie */
static int safe_len(const run_out *cpu, int s) {
    int i;
    for (i = 0; i < N_GEN; i++)
        if (cpu->margin[s][i] <= NEAR_TIE) break;
    return i;
}

static void prompt_of(int s, int n_vocab, mllm_token *p, int n) {
    unsigned x = 1234567u + 7919u * (unsigned)s;
    int i;
    for (i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = 3 + (int)((x >> 8) % (unsigned)(n_vocab - 3));
    }
}
static const int prompt_len[N_ADD] = {5, 17, 1, 40, 3, 9, 2, 12};

/* only < 0: all N_ADD + fork concurrently; else sequence `only` alone (the fork: N_ADD, with its parent) */
static void run(mllm_model *m, int only, run_out *o) {
    mllm_model_info info;
    mllm_context_params cp;
    mllm_context *ctx = NULL;
    mllm_seq_params sp;
    mllm_seq_id ids[N_SEQ];
    mllm_token p[64];
    int s, step, forked = 0;
    memset(o, 0, sizeof *o);
    mllm_model_get_info(m, &info);
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 12;
    cp.n_batch = 64;
    if (mllm_context_create(&ctx, m, &cp)) { CHECK(0, "context: %s", mllm_last_error()); return; }
    memset(&sp, 0, sizeof sp);   /* greedy */
    sp.max_tokens = N_GEN;
    sp.ignore_eog = 1;
    for (s = 0; s < N_SEQ; s++) ids[s] = -1;
    for (s = 0; s < N_ADD; s++) {
        if (only >= 0 && s != only && !(only == N_ADD && s == 0)) continue;
        prompt_of(s, info.n_vocab, p, prompt_len[s]);
        if (mllm_seq_add(ctx, p, prompt_len[s], &sp, &ids[s])) { CHECK(0, "add: %s", mllm_last_error()); goto done; }
    }
    for (step = 0; step < 200; step++) {
        mllm_step_result r;
        int i;
        if (mllm_step(ctx, &r)) { CHECK(0, "step: %s", mllm_last_error()); goto done; }
        for (i = 0; i < r.n_tokens; i++) {
            for (s = 0; s < N_SEQ; s++)
                if (ids[s] == r.tokens[i].seq && r.tokens[i].token >= 0 && o->n[s] < N_GEN) {
                    o->margin[s][o->n[s]] = top2_margin(mllm_seq_logits(ctx, ids[s]), info.n_vocab);
                    o->tok[s][o->n[s]++] = r.tokens[i].token;
                }
        }
        if (!forked && (only < 0 || only == N_ADD) && o->n[0] >= 1) {   /* fork seq 0 after its first token */
            if (mllm_seq_fork(ctx, ids[0], &sp, &ids[N_ADD])) { CHECK(0, "fork: %s", mllm_last_error()); goto done; }
            o->tok[N_ADD][0] = o->tok[0][0];   /* the fork shares the history up to here */
            o->margin[N_ADD][0] = o->margin[0][0];
            o->n[N_ADD] = 1;
            forked = 1;
        }
        if (r.n_active == 0) break;
    }
    o->ok = 1;
done:
    mllm_context_free(ctx);
}

static void check_model(void) {
    int k;
    for (k = 0; k < g_n_models; k++) {
        const char *path = g_models[k];
        mllm_model_params mp;
        mllm_model *cpu = NULL, *gpu = NULL;
        run_out a, b, solo;
        int s, i, failed0 = t_cur_failed, compared = 0;
        memset(&mp, 0, sizeof mp);
        mp.n_ctx = 256;
        mp.backend = MLLM_BACKEND_CPU;
        mp.precise = 1;   /* F32 activations, as the GPU kernels: the default Q8 activations round differently and
                             greedy paths on random tiny models then part at near-ties (seen on the H200) */
        if (mllm_model_load(&cpu, path, &mp)) { CHECK(0, "%s: %s", path, mllm_last_error()); continue; }
        mp.backend = MLLM_BACKEND_CUDA;
        if (mllm_model_load(&gpu, path, &mp)) { CHECK(0, "%s: %s", path, mllm_last_error()); mllm_model_free(cpu); continue; }
        if (g_have_gpu < 0) {   /* does a CUDA context open at all? */
            mllm_context *ctx = NULL;
            mllm_status st = mllm_context_create(&ctx, gpu, NULL);
            g_have_gpu = st == MLLM_OK;
            if (st != MLLM_OK) {
                CHECK(st == MLLM_ERR_UNSUPPORTED, "no GPU must be MLLM_ERR_UNSUPPORTED, got %d (%s)", (int)st, mllm_last_error());
                printf("  (no CUDA device: %s; comparisons skipped)\n", mllm_last_error());
            }
            mllm_context_free(ctx);
        }
        if (g_have_gpu) {
            run(cpu, -1, &a);
            run(gpu, -1, &b);
            for (s = 0; s < N_SEQ && a.ok && b.ok; s++) {
                int diff = -1;
                CHECK(a.n[s] == N_GEN && b.n[s] == N_GEN, "%s seq %d: %d / %d tokens", path, s, a.n[s], b.n[s]);
                for (i = 0; i < safe_len(&a, s) && diff < 0; i++)
                    if (a.tok[s][i] != b.tok[s][i]) diff = i;
                compared += safe_len(&a, s);
                CHECK(diff < 0, "%s seq %d: GPU differs from CPU at token %d (%d vs %d)", path, s, diff,
                      diff >= 0 ? b.tok[s][diff] : 0, diff >= 0 ? a.tok[s][diff] : 0);
            }
            /* near ties must stay rare, or the comparisons above would say little */
            CHECK(compared >= N_SEQ * N_GEN / 2, "%s: only %d of %d tokens before a near tie", path, compared, N_SEQ * N_GEN);
            for (s = 0; s < N_SEQ && a.ok && b.ok; s++) {   /* concurrent == alone, on the GPU */
                run(gpu, s, &solo);
                CHECK(solo.ok && !memcmp(solo.tok[s], b.tok[s], (size_t)safe_len(&a, s) * sizeof b.tok[s][0]),
                      "%s seq %d: alone differs from concurrent", path, s);
            }
            printf("  %s: %s (%d of %d tokens before the CPU's first near tie of each sequence)\n", path,
                   t_cur_failed > failed0 ? "FAILED" : "GPU tokens == CPU tokens (9 sequences, fork, solo runs)", compared, N_SEQ * N_GEN);
        }
        mllm_model_free(gpu);
        mllm_model_free(cpu);
        if (!g_have_gpu) break;
    }
}

/* mllm_model_params.device: negative is refused at load; on a GPU machine an index past the last GPU
   is MLLM_ERR_UNSUPPORTED at context creation (without a driver every index is). */
static void check_device_param(void) {
    mllm_model_params mp;
    mllm_model *m = NULL;
    mllm_context *ctx = NULL;
    mllm_status st;
    memset(&mp, 0, sizeof mp);
    mp.n_ctx = 64;
    mp.backend = MLLM_BACKEND_CUDA;
    mp.device = -1;
    st = mllm_model_load(&m, g_models[0], &mp);
    CHECK(st == MLLM_ERR_INVALID_ARG && !m && strstr(mllm_last_error(), "device"), "device -1: %d %s", (int)st, mllm_last_error());
    mllm_model_free(m);
    m = NULL;
    mp.device = 4096;
    if (mllm_model_load(&m, g_models[0], &mp)) { CHECK(0, "load: %s", mllm_last_error()); return; }
    st = mllm_context_create(&ctx, m, NULL);
    CHECK(st == MLLM_ERR_UNSUPPORTED && !ctx, "device 4096: %d %s", (int)st, mllm_last_error());
    if (g_have_gpu > 0) CHECK(strstr(mllm_last_error(), "no GPU 4096") != NULL, "message: %s", mllm_last_error());
    mllm_context_free(ctx);
    mllm_model_free(m);
}

static int g_logged;
static void count_log(mllm_log_level level, const char *msg, void *user) { (void)level; (void)msg; (void)user; g_logged++; }

/* MLLM_BACKEND_AUTO: a context on the GPU when there is one (the same tokens as CUDA asked for), else on
   the CPU without an error or a log line; a GPU index that does not exist also means the CPU. */
static void check_auto(void) {
    mllm_model_params mp;
    mllm_model *m = NULL;
    mllm_context *ctx = NULL;
    mllm_status st;
    run_out a, c;
    memset(&mp, 0, sizeof mp);
    mp.n_ctx = 256;
    mp.precise = 1;
    if (mllm_model_load(&m, g_models[0], &mp)) { CHECK(0, "load: %s", mllm_last_error()); return; }
    g_logged = 0;
    mllm_set_log(count_log, NULL);
    st = mllm_context_create(&ctx, m, NULL);
    mllm_set_log(NULL, NULL);
    CHECK(st == MLLM_OK && ctx, "AUTO context: %d %s", (int)st, mllm_last_error());
    CHECK(mllm_context_backend(ctx) == (g_have_gpu > 0 ? MLLM_BACKEND_CUDA : MLLM_BACKEND_CPU), "AUTO chose backend %d (GPU: %d)",
          (int)mllm_context_backend(ctx), g_have_gpu);
    CHECK(g_logged == 0, "AUTO logged %d lines", g_logged);
    mllm_context_free(ctx);
    ctx = NULL;
    if (g_have_gpu > 0) {   /* the tokens of AUTO's context are the CUDA backend's */
        mllm_model *cu = NULL;
        mp.backend = MLLM_BACKEND_CUDA;
        if (mllm_model_load(&cu, g_models[0], &mp)) { CHECK(0, "load: %s", mllm_last_error()); mllm_model_free(m); return; }
        run(m, -1, &a);
        run(cu, -1, &c);
        CHECK(a.ok && c.ok && !memcmp(a.tok, c.tok, sizeof a.tok), "AUTO's tokens differ from CUDA's");
        mllm_model_free(cu);
        mp.backend = MLLM_BACKEND_AUTO;
    }
    mllm_model_free(m);
    m = NULL;
    mp.device = 4096;
    if (mllm_model_load(&m, g_models[0], &mp)) { CHECK(0, "load: %s", mllm_last_error()); return; }
    st = mllm_context_create(&ctx, m, NULL);
    CHECK(st == MLLM_OK && mllm_context_backend(ctx) == MLLM_BACKEND_CPU, "AUTO, device 4096: %d, backend %d", (int)st,
          (int)mllm_context_backend(ctx));
    mllm_context_free(ctx);
    mllm_model_free(m);
}

int main(int argc, char **argv) {
    g_models = (const char **)(argv + 1);
    g_n_models = argc - 1;
    if (g_n_models < 1) { fprintf(stderr, "usage: test_cuda_e2e MODEL.gguf...\n"); return 2; }
    RUN(check_model);
    RUN(check_device_param);
    RUN(check_auto);
    return t_finish();
}
