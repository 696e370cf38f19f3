/* bench: throughput of prefill (a 128-token prompt), decode (64 tokens) and batched decode (1, 4, 16
   concurrent sequences), best of several runs, plus peak memory.
     bench -m MODEL.gguf [-t THREADS] [-p PROMPT_TOKENS] [-n DECODE_TOKENS] [-r REPEATS] [--batch 1,4,16] [--cuda]
   On a GPU backend it also prints the dispatches per decode step (the host interface's counters). */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void random_tokens(mllm_token *t, int n, int n_vocab, unsigned seed) {
    int i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = 3 + (int)((seed >> 8) % (unsigned)(n_vocab - 3));
    }
}

/* n_seqs sequences with n_prompt-token prompts; returns prefill tok/s (all prompts in one step where the
   batch allows) and decode tok/s (aggregate over n_gen steps). */
static double g_dispatches_per_step;   /* GPU only: dispatches per decode step of the last run */

static int run(mllm_model *m, int n_seqs, int n_prompt, int n_gen, double *prefill_tps, double *decode_tps) {
    mllm_model_info info;
    mllm_context_params cp;
    mllm_context *ctx;
    mllm_seq_params sp;
    mllm_token *prompt;
    int i, steps, produced = 0;
    uint64_t d0 = 0;
    double t0, t1, t2;
    mllm_model_get_info(m, &info);
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = n_seqs;
    cp.n_batch = n_prompt * n_seqs;
    cp.kv_blocks = n_seqs * ((n_prompt + n_gen + 2 + 15) / 16 + 1);
    memset(&sp, 0, sizeof sp);
    sp.max_tokens = n_gen + 1;
    sp.ignore_eog = 1;
    prompt = (mllm_token *)malloc(sizeof(mllm_token) * (size_t)n_prompt);
    if (mllm_context_create(&ctx, m, &cp)) { fprintf(stderr, "error: %s\n", mllm_last_error()); free(prompt); return 1; }
    for (i = 0; i < n_seqs; i++) {
        mllm_seq_id id;
        random_tokens(prompt, n_prompt, info.n_vocab, 17u + (unsigned)i);
        if (mllm_seq_add(ctx, prompt, n_prompt, &sp, &id)) { fprintf(stderr, "error: %s\n", mllm_last_error()); return 1; }
    }
    t0 = now();
    {
        mllm_step_result r;
        mllm_step(ctx, &r);   /* all prompts (one batched forward) and the first token of each */
        produced += r.n_tokens;
    }
    t1 = now();
    if (ctx->gpu.g) d0 = ctx->gpu.g->n.dispatches;
    for (steps = 0; steps < n_gen; steps++) {
        mllm_step_result r;
        if (mllm_step(ctx, &r)) break;
        produced += r.n_tokens;
    }
    t2 = now();
    if (ctx->gpu.g && steps > 0) g_dispatches_per_step = (double)(ctx->gpu.g->n.dispatches - d0) / steps;
    *prefill_tps = (double)n_prompt * n_seqs / (t1 - t0);
    *decode_tps = (double)(produced - n_seqs) / (t2 - t1);
    mllm_context_free(ctx);
    free(prompt);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *batches = "1,4,16";
    int threads = 2, n_prompt = 128, n_gen = 64, repeats = 3, i;
    mllm_model_params mp;
    mllm_backend backend = MLLM_BACKEND_AUTO;
    mllm_model *m;
    mllm_model_info info;
    double pf = 0, dc = 0, t0, load_s;
    struct rusage ru;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--cuda")) { backend = MLLM_BACKEND_CUDA; continue; }
        if (i + 1 >= argc) break;
        if (!strcmp(a, "-m")) path = argv[++i];
        else if (!strcmp(a, "-t")) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-p")) n_prompt = atoi(argv[++i]);
        else if (!strcmp(a, "-n")) n_gen = atoi(argv[++i]);
        else if (!strcmp(a, "-r")) repeats = atoi(argv[++i]);
        else if (!strcmp(a, "--batch")) batches = argv[++i];
    }
    if (!path) { fprintf(stderr, "usage: bench -m MODEL.gguf [-t N] [-p N] [-n N] [-r N] [--batch 1,4,16] [--cuda]\n"); return 2; }
    memset(&mp, 0, sizeof mp);
    mp.n_threads = threads;
    mp.n_ctx = n_prompt + n_gen + 16;
    mp.backend = backend;
    t0 = now();
    if (mllm_model_load(&m, path, &mp)) { fprintf(stderr, "error: %s\n", mllm_last_error()); return 1; }
    load_s = now() - t0;
    mllm_model_get_info(m, &info);
    printf("model: %s (%s, %d layers, %.1f MiB of weights), threads: %d, load %.3f s\n", path, info.arch, info.n_layer,
           info.weight_bytes / 1048576.0, threads, load_s);
    for (i = 0; i < repeats; i++) {   /* best of `repeats`: least disturbed by other load on the machine */
        double p, d;
        if (run(m, 1, n_prompt, n_gen, &p, &d)) return 1;
        if (p > pf) pf = p;
        if (d > dc) dc = d;
    }
    printf("prefill %d tokens: %8.1f tok/s\n", n_prompt, pf);
    printf("decode  %d tokens:  %8.1f tok/s\n", n_gen, dc);
    if (g_dispatches_per_step > 0)
        printf("GPU dispatches per decode step: %.1f (%.2f per layer)\n", g_dispatches_per_step,
               g_dispatches_per_step / info.n_layer);
    {
        const char *s = batches;
        double base = 0;
        while (*s) {
            int n = atoi(s);
            double best = 0, p, d;
            int r;
            for (r = 0; r < repeats && n > 0; r++) {
                if (run(m, n, 32, n_gen, &p, &d)) return 1;
                if (d > best) best = d;
            }
            if (n == 1) base = best;
            if (n > 0)
                printf("batched decode, %2d sequences: %8.1f tok/s aggregate%s", n, best, base > 0 && n > 1 ? "" : "\n");
            if (n > 1 && base > 0) printf(" (%.2fx of 1 sequence)\n", best / base);
            while (*s && *s != ',') s++;
            if (*s == ',') s++;
        }
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("peak memory (max RSS): %.1f MiB\n", ru.ru_maxrss / 1024.0);
    mllm_model_free(m);
    return 0;
}
