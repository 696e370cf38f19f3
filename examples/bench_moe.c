/* bench_moe: throughput of one MoE feed-forward layer on the CPU backend, batched expert dispatch
   (mllm__moe: rows grouped per expert, each selected expert's weights read once per step, a fixed
   number of parallel loops per layer) against one expert at a time (every (token, expert) pair runs
   its own gate, up and down matmuls, as an engine without grouping does), at 1 and 16 tokens, for two
   real layer shapes with random weights:
     Qwen3-30B-A3B: n_embd 2048, 128 experts, top-8, expert FFN 768, Q4_K
     Mixtral-8x7B:  n_embd 4096,   8 experts, top-2, expert FFN 14336, Q4_0
   Both paths must give bitwise equal outputs (checked), so the ratio is pure dispatch/weight-reuse gain.
     bench_moe [-t THREADS] [-r REPEATS] */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct shape { const char *name; int n_embd, n_expert, n_used, n_ff; uint32_t type; } shape;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t lcg(uint32_t *s) { *s = *s * 1664525u + 1013904223u; return *s >> 8; }
static float frand(uint32_t *s) { return (float)lcg(s) / 16777216.0f * 2.0f - 1.0f; }   /* [-1, 1) */

/* n_mat stacked rows x cols matrices of random quant bits whose block scales are set so values are O(1). */
static int make_weight(mllm__weight *w, uint32_t type, int64_t cols, int64_t rows, int64_t n_mat, uint32_t *seed) {
    const mllm__type_traits *tr = mllm__traits(type);
    size_t bytes, b, n_blocks;
    uint8_t *p;
    w->type = type;
    w->cols = cols;
    w->rows = rows;
    w->n_mat = n_mat;
    w->row_bytes = mllm__row_bytes(type, cols);
    bytes = w->row_bytes * (size_t)rows * (size_t)n_mat;
    if (!(p = (uint8_t *)malloc(bytes))) return 0;
    for (b = 0; b + 4 <= bytes; b += 4) { uint32_t r = lcg(seed) ^ (lcg(seed) << 16); memcpy(p + b, &r, 4); }
    n_blocks = bytes / (size_t)tr->bytes;
    for (b = 0; b < n_blocks; b++) {   /* leading f16 scale(s) of each block: d (and dmin for Q4_K) */
        uint16_t d = mllm__f32_to_f16(type == MLLM__Q4_K ? 1.0f / 512 : 1.0f / 64);
        memcpy(p + b * (size_t)tr->bytes, &d, 2);
        if (type == MLLM__Q4_K) memcpy(p + b * (size_t)tr->bytes + 2, &d, 2);
    }
    w->data = p;
    return 1;
}

/* What mllm__moe reads: the model's hparams, the exec state (pool) and the MoE scratch. */
static int setup(const shape *s, int n_threads, int n_tok, mllm_model *m, mllm__exec *ex, mllm__moe_buf *b, mllm__layer *L) {
    uint32_t seed = 1234;
    size_t i, nr = (size_t)s->n_expert * (size_t)s->n_embd;
    float *router;
    memset(m, 0, sizeof *m);
    memset(ex, 0, sizeof *ex);
    memset(L, 0, sizeof *L);
    m->hp.n_embd = s->n_embd;
    m->hp.n_expert = s->n_expert;
    m->hp.n_expert_used = s->n_used;
    m->hp.n_ff_exp = s->n_ff;
    if (mllm__pool_create(&m->pool, n_threads) || mllm__moe_buf_alloc(b, &m->hp, n_tok)) return 0;
    ex->model = m;
    ex->pool = m->pool;
    ex->qbuf_bytes = sizeof(float) * (size_t)(s->n_embd > s->n_ff ? s->n_embd : s->n_ff);   /* one quantized row */
    if (!(ex->qbuf = malloc(ex->qbuf_bytes))) return 0;
    L->router = router = (float *)malloc(sizeof(float) * nr);
    if (!router) return 0;
    for (i = 0; i < nr; i++) router[i] = frand(&seed) * 0.1f;
    return make_weight(&L->gate_exps, s->type, s->n_embd, s->n_ff, s->n_expert, &seed) &&
           make_weight(&L->up_exps, s->type, s->n_embd, s->n_ff, s->n_expert, &seed) &&
           make_weight(&L->down_exps, s->type, s->n_ff, s->n_embd, s->n_expert, &seed);
}

static void teardown(mllm_model *m, mllm__exec *ex, mllm__moe_buf *b, mllm__layer *L) {
    mllm__moe_buf_free(b);
    free(ex->qbuf);
    free((void *)L->router);
    free((void *)L->gate_exps.data);
    free((void *)L->up_exps.data);
    free((void *)L->down_exps.data);
    mllm__pool_free(m->pool);
}

/* The baseline: same routing, then one (token, expert) pair at a time, each matmul its own parallel
   loop; slots combined in the same order as mllm__moe. */
static void moe_one_at_a_time(mllm__exec *ex, mllm__moe_buf *b, const mllm__layer *L, const float *x, int T, float *out) {
    const mllm__hparams *hp = &ex->model->hp;
    const int E = hp->n_embd, K = hp->n_expert_used, F = hp->n_ff_exp;
    int t, k, d;
    mllm__moe_router(ex, b, L, x, T);
    for (t = 0; t < T; t++) {
        float *o = out + (size_t)t * E;
        memset(o, 0, sizeof(float) * (size_t)E);
        for (k = 0; k < K; k++) {
            const int e = b->sel[t * K + k];
            const float w = b->w[t * K + k];
            mllm__cpu_matmul(ex, &L->gate_exps, e, x + (size_t)t * E, 1, b->h);
            mllm__cpu_matmul(ex, &L->up_exps, e, x + (size_t)t * E, 1, b->h2);
            mllm__swiglu(b->h, b->h, b->h2, F);
            mllm__cpu_matmul(ex, &L->down_exps, e, b->h, 1, b->y);
            for (d = 0; d < E; d++) o[d] += w * b->y[d];
        }
    }
}

/* Best-of-`reps` seconds for one layer over n_tok tokens, batched or one token (hence expert) at a time. */
static double time_layer(mllm__exec *ex, mllm__moe_buf *b, const mllm__layer *L, const float *x, int n_tok, float *out,
                         int batched, int reps) {
    double best = 1e30;
    int r;
    for (r = 0; r < reps; r++) {
        double t0 = now(), dt;
        if (batched) mllm__moe(ex, b, L, x, n_tok, out);
        else moe_one_at_a_time(ex, b, L, x, n_tok, out);
        dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    static const shape shapes[] = {
        {"Qwen3-30B-A3B layer (2048, 128 experts, top-8, ff 768, Q4_K)", 2048, 128, 8, 768, MLLM__Q4_K},
        {"Mixtral-8x7B layer (4096, 8 experts, top-2, ff 14336, Q4_0)", 4096, 8, 2, 14336, MLLM__Q4_0},
    };
    static const int tokens[] = {1, 16};
    int n_threads = 2, reps = 3, i, si, ti;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s [-t THREADS] [-r REPEATS]\n", argv[0]); return 2; }
    }
    printf("== MoE layer, CPU (-t %d, best of %d): batched expert dispatch vs one expert at a time\n", n_threads, reps);
    for (si = 0; si < 2; si++) {
        const shape *s = &shapes[si];
        const int T = tokens[1];
        mllm_model m;
        mllm__exec ex;
        mllm__moe_buf b;
        mllm__layer L;
        uint32_t seed = 99;
        float *x = (float *)malloc(sizeof(float) * (size_t)T * (size_t)s->n_embd);
        float *y1 = (float *)malloc(sizeof(float) * (size_t)T * (size_t)s->n_embd);
        float *y2 = (float *)malloc(sizeof(float) * (size_t)T * (size_t)s->n_embd);
        if (!x || !y1 || !y2 || !setup(s, n_threads, T, &m, &ex, &b, &L)) { fprintf(stderr, "out of memory\n"); return 1; }
        for (i = 0; i < T * s->n_embd; i++) x[i] = frand(&seed);
        printf("%s\n", s->name);
        for (ti = 0; ti < 2; ti++) {
            const int n = tokens[ti];
            double tb = time_layer(&ex, &b, &L, x, n, y1, 1, reps), to = time_layer(&ex, &b, &L, x, n, y2, 0, reps);
            const int same = !memcmp(y1, y2, sizeof(float) * (size_t)n * (size_t)s->n_embd);
            printf("  moe %2d tok  batched %8.1f tok/s  one-expert-at-a-time %8.1f tok/s  ratio %.2fx  outputs %s\n", n,
                   n / tb, n / to, to / tb, same ? "identical" : "DIFFER");
            if (!same) return 1;
        }
        teardown(&m, &ex, &b, &L);
        free(x); free(y1); free(y2);
    }
    return 0;
}
