/* bench: throughput of prefill (a 128-token prompt), decode (64 tokens, from an empty context as
   llama-bench's tg test does) and batched decode (1, 4, 16 concurrent sequences with --batch-prompt
   tokens each), mean and best of several runs, plus peak memory, a STREAM-like triad bandwidth, a
   read-only bandwidth, and decode's weight + KV traffic as a fraction of them.
     bench -m MODEL.gguf [-t THREADS] [-p PROMPT_TOKENS] [-n DECODE_TOKENS] [-r REPEATS] [--batch 1,4,16]
           [--batch-prompt 32] [--triad] [--keep-mapping] [--cpu | --cuda] [--device N]
   On a GPU backend it also prints the dispatches per decode step (the host interface's counters) and the
   host's share of a step.  Built with -DMLLM__CU_TIMING (make build/bench_timing), --kernel-times prints
   each decode run's GPU time per kernel, measured between events around every launch. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <pthread.h>

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

/* STREAM-like triad a[i] = b[i] + s * c[i] over arrays far larger than the caches, split over the
   threads; bytes counted as STREAM does (two reads and a write per element).  Best of 5 passes.  With
   read_only, a sum over b and c instead (8 partial sums, so it is bound by loads, not by the add
   latency): decode only reads, and reads alone often stream faster than the triad's mix. */
typedef struct triad_part { float *a, *b, *c; size_t n; int read_only; float sum; } triad_part;
static void *triad_run(void *arg) {
    triad_part *p = (triad_part *)arg;
    size_t i;
    if (p->read_only) {
        float s[8] = {0};
        int k;
        for (i = 0; i + 8 <= p->n; i += 8)
            for (k = 0; k < 8; k++) s[k] += p->b[i + k] + p->c[i + k];
        for (k = 0; k < 8; k++) p->sum += s[k];
        return NULL;
    }
    for (i = 0; i < p->n; i++) p->a[i] = p->b[i] + 3.0f * p->c[i];
    return NULL;
}
static volatile float triad_sink;
/* An array in 2 MiB pages where Linux has them, as the CPU backend reads the weights (a roofline in 4 KiB
   pages sat 25-30% under what decode's kernels stream from the weights). */
static float *triad_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, bytes) != 0) return NULL;
#ifdef __linux__
    posix_madvise(p, bytes, 14);   /* MADV_HUGEPAGE, whose name needs _GNU_SOURCE */
#endif
    return (float *)p;
}
static double triad_gbs(int threads, int read_only) {
    const size_t n = (size_t)32 << 20;   /* 128 MiB per array */
    float *a = triad_alloc(n * 4), *b = triad_alloc(n * 4), *c = triad_alloc(n * 4);
    double best = 0;
    int pass, t;
    size_t i;
    if (!a || !b || !c) { free(a); free(b); free(c); return 0; }
    for (i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
    for (pass = 0; pass < 5; pass++) {
        pthread_t th[64];
        triad_part part[64];
        double t0 = now(), dt;
        if (threads > 64) threads = 64;
        for (t = 0; t < threads; t++) {
            size_t lo = n * (size_t)t / (size_t)threads, hi = n * (size_t)(t + 1) / (size_t)threads;
            part[t].a = a + lo; part[t].b = b + lo; part[t].c = c + lo; part[t].n = hi - lo;
            part[t].read_only = read_only; part[t].sum = 0;
            pthread_create(&th[t], NULL, triad_run, &part[t]);
        }
        for (t = 0; t < threads; t++) { pthread_join(th[t], NULL); triad_sink += part[t].sum; }
        dt = now() - t0;
        if ((read_only ? 2.0 : 3.0) * 4 * (double)n / dt * 1e-9 > best) best = (read_only ? 2.0 : 3.0) * 4 * (double)n / dt * 1e-9;
    }
    free(a); free(b); free(c);
    return best;
}

/* n_seqs sequences with n_prompt-token prompts; returns prefill tok/s (all prompts in one step where the
   batch allows) and decode tok/s (aggregate over n_gen steps). */
static double g_dispatches_per_step;   /* GPU only: dispatches per decode step of the last run */
static double g_graph_per_step[3];     /* CUDA only: graph launches, node updates and graph builds per decode step */
static double g_host_per_step[3];      /* GPU only: seconds per decode step encoding + committing, in wait, in all */
static int g_kernel_times;             /* --kernel-times */

#ifdef MLLM__CU_TIMING
static int by_ms(const void *a, const void *b) {
    const mllm__cu_pipe *x = *(const mllm__cu_pipe *const *)a, *y = *(const mllm__cu_pipe *const *)b;
    return x->ms < y->ms ? 1 : x->ms > y->ms ? -1 : 0;
}
/* The CUDA device's per-kernel GPU times since the last call (which zeroes them), per decode step. */
static void kernel_times(mllm_context *ctx, int n_seqs, int steps, double step_s) {
    mllm__cu_dev *d;
    mllm__cu_pipe *p[MLLM__CU_MAX_PIPES];
    double total = 0;
    int i, n = 0;
    if (!ctx->gpu.g || ctx->gpu.g->vt != &mllm__cu_vt) return;
    d = (mllm__cu_dev *)ctx->gpu.g->dev;
    for (i = 0; i < d->n_pipes; i++)
        if (d->pipes[i].calls) { p[n++] = &d->pipes[i]; total += d->pipes[i].ms; }
    if (steps > 0 && n > 0) {
        qsort(p, (size_t)n, sizeof p[0], by_ms);
        printf("kernel times, %d sequences, %d steps: GPU %.1f us of a %.1f us step\n", n_seqs, steps,
               total * 1e3 / steps, step_s * 1e6);
        printf("  %-28s %10s %10s %12s %7s\n", "kernel", "calls/step", "mean us", "us/step", "share");
        for (i = 0; i < n; i++)
            printf("  %-28s %10.1f %10.2f %12.1f %6.1f%%\n", p[i]->name, (double)p[i]->calls / steps,
                   p[i]->ms * 1e3 / (double)p[i]->calls, p[i]->ms * 1e3 / steps, 100.0 * p[i]->ms / total);
    }
    for (i = 0; i < d->n_pipes; i++) { d->pipes[i].ms = 0; d->pipes[i].calls = 0; }
}
#else
static void kernel_times(mllm_context *ctx, int n_seqs, int steps, double step_s) { (void)ctx; (void)n_seqs; (void)steps; (void)step_s; }
#endif

static int run(mllm_model *m, int n_seqs, int n_prompt, int n_gen, double *prefill_tps, double *decode_tps) {
    mllm_model_info info;
    mllm_context_params cp;
    mllm_context *ctx;
    mllm_seq_params sp;
    mllm_token *prompt;
    int i, steps, produced = 0;
    uint64_t d0 = 0, gl0 = 0, gu0 = 0, gb0 = 0;
    double t0, t1, t2, e0 = 0, w0 = 0;
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
    if (g_kernel_times) kernel_times(ctx, n_seqs, 0, 0);   /* zero the prefill's */
    if (ctx->gpu.g) { d0 = ctx->gpu.g->n.dispatches; e0 = ctx->gpu.g->n.encode_s; w0 = ctx->gpu.g->n.wait_s; }
#if MLLM__HAVE_CUDA
    if (ctx->gpu.g && ctx->gpu.g->vt == &mllm__cu_vt) {
        gl0 = ((mllm__cu_dev *)ctx->gpu.g->dev)->graph_launches;
        gu0 = ((mllm__cu_dev *)ctx->gpu.g->dev)->node_updates;
        gb0 = ((mllm__cu_dev *)ctx->gpu.g->dev)->graph_builds;
    }
#endif
    for (steps = 0; steps < n_gen; steps++) {
        mllm_step_result r;
        if (mllm_step(ctx, &r)) break;
        produced += r.n_tokens;
    }
    t2 = now();
    if (g_kernel_times && n_gen > 0) kernel_times(ctx, n_seqs, steps, steps > 0 ? (t2 - t1) / steps : 0);
    if (ctx->gpu.g && steps > 0) {
        g_dispatches_per_step = (double)(ctx->gpu.g->n.dispatches - d0) / steps;
        g_host_per_step[0] = (ctx->gpu.g->n.encode_s - e0) / steps;
        g_host_per_step[1] = (ctx->gpu.g->n.wait_s - w0) / steps;
        g_host_per_step[2] = (t2 - t1) / steps;
    }
#if MLLM__HAVE_CUDA
    if (ctx->gpu.g && ctx->gpu.g->vt == &mllm__cu_vt && steps > 0) {
        g_graph_per_step[0] = (double)(((mllm__cu_dev *)ctx->gpu.g->dev)->graph_launches - gl0) / steps;
        g_graph_per_step[1] = (double)(((mllm__cu_dev *)ctx->gpu.g->dev)->node_updates - gu0) / steps;
        g_graph_per_step[2] = (double)(((mllm__cu_dev *)ctx->gpu.g->dev)->graph_builds - gb0) / steps;
    }
#endif
    (void)gl0; (void)gu0; (void)gb0;
    *prefill_tps = (double)n_prompt * n_seqs / (t1 - t0);
    *decode_tps = n_gen > 0 ? (double)(produced - n_seqs) / (t2 - t1) : 0.0;
    mllm_context_free(ctx);
    free(prompt);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *batches = "1,4,16";
    int threads = 2, n_prompt = 128, n_gen = 64, repeats = 3, batch_prompt = 32, triad = 0, device = 0, keep_mapping = 0, i;
    mllm_model_params mp;
    mllm_backend backend = MLLM_BACKEND_AUTO;
    mllm_model *m;
    mllm_model_info info;
    double pf_best = 0, pf_sum = 0, dc_best = 0, dc_sum = 0, t0, load_s;
    struct rusage ru;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--triad")) { triad = 1; continue; }
        if (!strcmp(a, "--keep-mapping")) { keep_mapping = 1; continue; }
        if (!strcmp(a, "--cuda")) { backend = MLLM_BACKEND_CUDA; continue; }
        if (!strcmp(a, "--cpu")) { backend = MLLM_BACKEND_CPU; continue; }
        if (!strcmp(a, "--kernel-times")) { g_kernel_times = 1; continue; }
        if (i + 1 >= argc) break;
        if (!strcmp(a, "-m")) path = argv[++i];
        else if (!strcmp(a, "-t")) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-p")) n_prompt = atoi(argv[++i]);
        else if (!strcmp(a, "-n")) n_gen = atoi(argv[++i]);
        else if (!strcmp(a, "-r")) repeats = atoi(argv[++i]);
        else if (!strcmp(a, "--batch")) batches = argv[++i];
        else if (!strcmp(a, "--batch-prompt")) batch_prompt = atoi(argv[++i]);
        else if (!strcmp(a, "--device")) device = atoi(argv[++i]);
    }
    if (!path || repeats < 1 || n_prompt < 1 || n_gen < 1 || batch_prompt < 1) {
        fprintf(stderr, "usage: bench -m MODEL.gguf [-t N] [-p N] [-n N] [-r N] [--batch 1,4,16] [--batch-prompt N] [--triad] [--keep-mapping] [--cpu | --cuda] [--device N] [--kernel-times]\n");
        return 2;
    }
    memset(&mp, 0, sizeof mp);
    mp.n_threads = threads;
    mp.n_ctx = (n_prompt > batch_prompt ? n_prompt : batch_prompt) + n_gen + 16;
    mp.backend = backend;
    mp.device = device;
    mp.keep_mapping = keep_mapping;
    t0 = now();
    if (mllm_model_load(&m, path, &mp)) { fprintf(stderr, "error: %s\n", mllm_last_error()); return 1; }
    load_s = now() - t0;
    mllm_model_get_info(m, &info);
    printf("model: %s (%s, %d layers, %.1f MiB of weights, %s), threads: %d, SIMD: %s, load %.3f s\n", path, info.arch,
           info.n_layer, info.weight_bytes / 1048576.0, info.weights_copied ? "read into 2 MiB pages" : "mapped", threads,
           mllm__simd_name(mllm__simd_level()), load_s);
    for (i = 0; i < repeats; i++) {
        double p, d, unused;
        if (run(m, 1, n_prompt, 0, &p, &unused)) return 1;    /* prefill: llama-bench's pp test */
        if (run(m, 1, 1, n_gen, &unused, &d)) return 1;       /* decode from depth 1: its tg test */
        pf_sum += p; dc_sum += d;
        if (p > pf_best) pf_best = p;
        if (d > dc_best) dc_best = d;
    }
    printf("prefill %d tokens: mean %8.1f best %8.1f tok/s\n", n_prompt, pf_sum / repeats, pf_best);
    printf("decode  %d tokens: mean %8.1f best %8.1f tok/s\n", n_gen, dc_sum / repeats, dc_best);
    {
        /* bytes a decode step reads: the weights a token uses (the output matrix included; only its
           experts of an MoE) and the F16 KV cache at the mean depth of the run */
        double kv = 2.0 * info.n_layer * info.n_head_kv * info.head_dim * 2 * (1 + n_gen / 2.0);
        double gbs = ((double)info.token_bytes + kv) * (dc_sum / repeats) * 1e-9;
        printf("decode traffic: %.1f MiB per token, %.2f GB/s (mean)", ((double)info.token_bytes + kv) / 1048576.0, gbs);
        if (triad) {
            double tr = triad_gbs(threads, 0), rd = triad_gbs(threads, 1);
            printf(", triad %.2f GB/s, read %.2f GB/s (%d threads): decode at %.0f%% of the triad, %.0f%% of read",
                   tr, rd, threads, tr > 0 ? 100.0 * gbs / tr : 0.0, rd > 0 ? 100.0 * gbs / rd : 0.0);
        }
        printf("\n");
    }
    if (g_dispatches_per_step > 0)
        printf("GPU dispatches per decode step: %.1f (%.2f per layer)\n", g_dispatches_per_step,
               g_dispatches_per_step / info.n_layer);
    if (g_host_per_step[2] > 0)   /* the GPU idles while the host encodes: that share is the host's cost */
        printf("GPU decode step: %.1f us, of which encoding + committing %.1f us, waiting for the GPU %.1f us\n",
               g_host_per_step[2] * 1e6, g_host_per_step[0] * 1e6, g_host_per_step[1] * 1e6);
    if (g_graph_per_step[0] > 0)
        printf("CUDA graph launches per decode step: %.2f (%.1f kernel nodes updated, %.2f graphs built per step)\n",
               g_graph_per_step[0], g_graph_per_step[1], g_graph_per_step[2]);
    {
        const char *s = batches;
        double base = 0;
        while (*s) {
            int n = atoi(s);
            double best = 0, p, d;
            int r;
            for (r = 0; r < repeats && n > 0; r++) {
                if (run(m, n, batch_prompt, n_gen, &p, &d)) return 1;
                if (d > best) best = d;
            }
            if (n == 1) base = best;
            if (n > 0)
                printf("batched decode, %2d sequences: %8.1f tok/s aggregate (best)%s", n, best, base > 0 && n > 1 ? "" : "\n");
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
