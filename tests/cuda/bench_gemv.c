/* bench_gemv.c - the decode GEMV kernels alone on a CUDA GPU, in Qwen2.5-1.5B's shapes: each kernel
   launched back to back over enough copies of its weights that L2 (50 MB on an H200) holds none of
   them, timed with CUDA events; prints us per launch and the weight bytes per second.
     cc -O2 -I. tests/cuda/bench_gemv.c -o build/bench_gemv -ldl -lm -lpthread   (run: build/bench_gemv) */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include <dlfcn.h>

typedef int (*ev_create_fn)(void **, unsigned);
typedef int (*ev_record_fn)(void *, void *);
typedef int (*ev_sync_fn)(void *);
typedef int (*ev_elapsed_fn)(float *, void *, void *);
static ev_create_fn ev_create;
static ev_record_fn ev_record;
static ev_sync_fn ev_sync;
static ev_elapsed_fn ev_elapsed;
static mllm__cu_dev *D;

static mllm__cu_ptr dalloc(size_t n, unsigned char v) {
    mllm__cu_ptr p = 0;
    if (D->a.MemAlloc(&p, n) || D->a.MemsetD8(p, v, n)) { fprintf(stderr, "alloc %zu failed\n", n); exit(1); }
    return p;
}

/* bufs[i]: a device pointer (is_ptr[i]) or host bytes; wslot: buffer indices of weights (rotated copies) */
static void bench(const char *kernel, const char *what, uint32_t gx, uint32_t gy, uint32_t tpt, int nbuf,
                  void **host, mllm__cu_ptr *dev, const int *wslot, int nw, size_t wbytes, double rbytes) {
    mllm__cu_pipe *p = mllm__cu_pipeline(D, kernel);
    if (!p) { printf("%-22s no kernel\n", kernel); return; }
    const int copies = (int)(400000000 / (wbytes * nw) + 1), iters = copies < 20 ? 40 : 2 * copies;
    mllm__cu_ptr *wc = (mllm__cu_ptr *)malloc(sizeof(mllm__cu_ptr) * copies * nw);
    for (int c = 0; c < copies * nw; c++) wc[c] = dalloc(wbytes, 0x11);
    void *params[MLLM__CU_MAX_PARAMS];
    mllm__cu_ptr cur[16];
    void *e0, *e1;
    float ms = 0;
    ev_create(&e0, 0); ev_create(&e1, 0);
    for (int rep = 0; rep < 2; rep++) {   /* first: warm-up */
        ev_record(e0, D->stream);
        for (int it = 0; it < iters; it++) {
            for (int i = 0; i < nbuf; i++) cur[i] = dev[i];
            for (int j = 0; j < nw; j++) cur[wslot[j]] = wc[(it % copies) * nw + j];
            for (int i = 0; i < p->np; i++) {
                const int idx = p->idx[i];
                params[i] = p->ptr[i] ? (void *)&cur[idx] : host[idx];
            }
            if (D->a.LaunchKernel(p->fn, gx, gy, 1, tpt, 1, 1, 0, D->stream, params, NULL)) { printf("launch failed\n"); exit(1); }
        }
        ev_record(e1, D->stream);
        ev_sync(e1);
        ev_elapsed(&ms, e0, e1);
    }
    const double us = 1000.0 * ms / iters;
    if (rbytes == 0) rbytes = (double)wbytes * nw;
    printf("%-22s %-34s grid %6ux%u x%u  %8.2f us  %6.1f MB  %5.2f TB/s\n", kernel, what, gx, gy, tpt, us, rbytes / 1e6,
           rbytes / us / 1e6);
    for (int c = 0; c < copies * nw; c++) D->a.MemFree(wc[c]);
    free(wc);
}

int main(void) {
    static mllm__gpu g;
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib || mllm__cuda_open(&g, 0) != MLLM_OK) { fprintf(stderr, "no CUDA: %s\n", mllm_last_error()); return 2; }
    D = (mllm__cu_dev *)g.dev;
    ev_create = (ev_create_fn)dlsym(lib, "cuEventCreate");
    ev_record = (ev_record_fn)dlsym(lib, "cuEventRecord");
    ev_sync = (ev_sync_fn)dlsym(lib, "cuEventSynchronize");
    ev_elapsed = (ev_elapsed_fn)dlsym(lib, "cuEventElapsedTime_v2");
    if (!ev_elapsed) ev_elapsed = (ev_elapsed_fn)dlsym(lib, "cuEventElapsedTime");
    const uint32_t RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS, T = 32 * MLLM__GEMV_NSG;
    const uint32_t E = 1536, F = 8960, V = 151936;
    const size_t q4 = 144, q6 = 210;
    mllm__cu_ptr x = dalloc(4 * F * 8, 0x3c), y = dalloc(4 * (size_t)V * 8, 0), y2 = dalloc(4 * (size_t)V * 8, 0);
    mllm__cu_ptr nw = dalloc(4 * F, 0x3c), b = dalloc(4 * F, 0);
    printf("RT %u rows per threadgroup, %u threads\n", RT, T);
    { /* plain and residual products */
        struct { const char *k, *what; uint32_t K, N; size_t bb; uint32_t qk; } c[] = {
            {"gemv_add_q4_k", "o-proj 1536x1536", E, E, q4, 256},
            {"gemv_add_q4_k", "down 1536x8960 q4_k", F, E, q4, 256},
            {"gemv_add_q6_k", "down 1536x8960 q6_k", F, E, q6, 256},
            {"gemv_q6_k", "LM head 151936x1536", E, V, q6, 256},
            {"gemv_q4_k", "gate 8960x1536", E, F, q4, 256},
            {"gemv_q8_0", "gate 8960x1536 q8_0", E, F, 34, 32},
            {"gemv_q4_0", "gate 8960x1536 q4_0", E, F, 18, 32},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            mllm__mat_args a = {c[i].K, c[i].N, 1, (uint32_t)(c[i].K / c[i].qk * c[i].bb)};
            void *host[5] = {0, 0, 0, &a, 0};
            mllm__cu_ptr dev[5] = {0, x, y, 0, y2};
            const int ws[1] = {0};
            bench(c[i].k, c[i].what, (c[i].N + RT - 1) / RT, 1, T, 5, host, dev, ws, 1, (size_t)c[i].N * a.row_bytes, 0);
        }
    }
    { /* gemv_multi at 8 tokens */
        mllm__gemv_multi_args a = {E, F, 8, (uint32_t)(E / 256 * q4), 0};
        void *host[5] = {0, 0, 0, &a, 0};
        mllm__cu_ptr dev[5] = {0, x, y, 0, y2};
        const int ws[1] = {0};
        bench("gemv_multi_q4_k", "gate 8960x1536, 8 tokens", (F + RT - 1) / RT, 1, T, 5, host, dev, ws, 1, (size_t)F * a.row_bytes, 0);
    }
    for (int normed = 0; normed < 2; normed++) { /* fused GLU */
        mllm__glu_args a;
        memset(&a, 0, sizeof a);
        a.K = E; a.N = F; a.M = 1; a.row_bytes = (uint32_t)(E / 256 * q4);
        a.norm.on = (uint32_t)normed; a.norm.threads = 384; a.norm.eps = 1e-6f;
        void *host[6] = {0, 0, 0, 0, &a, 0};
        mllm__cu_ptr dev[6] = {0, 0, x, y, 0, nw};
        const int ws[2] = {0, 1};
        bench("gemv_swiglu_q4_k", normed ? "gate+up 2x8960x1536 normed" : "gate+up 2x8960x1536", (F + RT - 1) / RT, 1, T, 6,
              host, dev, ws, 2, (size_t)F * a.row_bytes, 0);
    }
    { /* fused QKV (q4_k q, k; as Q4_K_M's, whose v is q6_k: that one separately) */
        mllm__qkv_args a;
        memset(&a, 0, sizeof a);
        a.K = E; a.M = 1; a.n_mats = 2; a.N[0] = E; a.N[1] = 256; a.N[2] = 256;
        a.row_bytes[0] = a.row_bytes[1] = a.row_bytes[2] = (uint32_t)(E / 256 * q4);
        a.bias[0] = a.bias[1] = 1;
        a.norm.on = 1; a.norm.threads = 384; a.norm.eps = 1e-6f;
        void *host[12] = {0};
        mllm__cu_ptr dev[12] = {0, 0, 0, x, y, y2, y2, 0, b, b, b, nw};
        host[7] = &a;
        const int ws[2] = {0, 1};
        /* both weight slots rotate over copies of the larger size (the time counts 1536 + 256 rows) */
        bench("gemv_qkv_q4_k", "q 1536 + k 256, normed", (E + RT - 1) / RT + (256 + RT - 1) / RT, 1, T, 12, host, dev,
              ws, 2, (size_t)E * a.row_bytes[0], (double)(E + 256) * a.row_bytes[0]);
    }
    return 0;
}
