/* The GPU forward pass through metalllm.h's Metal backend against the CPU backend, written in plain C
   as a Mac owner builds it: `make mac-check` compiles and runs this with -framework Metal on Apple
   hardware (the real-Metal twin of tests/emu/test_gpu_forward.cpp); on Linux x86-64 the same file runs
   over the fake Metal framework (tests/metal/, MSL emulator underneath: build/test_metal_gpu).
   Per model (every tiny model with a GPU weight type, dense and MoE, the tiny gemma3 / phi3 / Llama-3
   rope_freqs models of build/tiny-extra when present (make tiny-extra), and SmolLM2 when present):
   the prompt's last logits (manual sequence) within 1e-3 of the CPU's relative to their range, and the
   same greedy tokens as the CPU (precise mode: F32 activations, as the kernels); then 4 concurrent
   sequences with a fork give their solo runs' tokens. Prints the context creation time (device open,
   library compile, first pipeline). On the fake framework also: every object released at context free. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "tests/test.h"

#include <math.h>

#ifdef MLLM_TEST_FAKE_METAL
long fake_metal_c_live_objects(void);   /* tests/metal/fake_metal.cpp */
long fake_metal_c_misuse(void);
#endif

static const char *model_path(const char *name, char *buf, size_t cap) {
    if (!strcmp(name, "smollm2")) {
        const char *e = getenv("MLLM_MODEL");
        snprintf(buf, cap, "%s", e ? e : "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    } else if (!strcmp(name, "tiny-gemma3-Q8_0") || !strcmp(name, "tiny-phi3-Q8_0") || !strcmp(name, "tiny-llama3-Q8_0")) {
        const char *b = getenv("MLLM_BUILD");   /* tests/gen_tiny.c's models */
        snprintf(buf, cap, "%s/tiny-extra/%s.gguf", b ? b : "build", name);
    } else {
        snprintf(buf, cap, "%s/tiny/models/%s.gguf", t_testdata(), name);
    }
    return buf;
}

static mllm_model *load(const char *name, mllm_backend backend) {
    char path[1024];
    mllm_model *m = NULL;
    mllm_model_params mp;
    memset(&mp, 0, sizeof mp);
    mp.precise = backend == MLLM_BACKEND_CPU;
    mp.backend = backend;
    if (mllm_model_load(&m, model_path(name, path, sizeof path), &mp) != MLLM_OK) {
        CHECK(0, "%s: %s", name, mllm_last_error());
        return NULL;
    }
    return m;
}

static mllm_context *context(mllm_model *m, int n_seq) {
    mllm_context *ctx = NULL;
    mllm_context_params cp;
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = n_seq;
    cp.kv_blocks = 16;
    cp.n_batch = 32;
    if (mllm_context_create(&ctx, m, &cp) != MLLM_OK) {
        CHECK(0, "context: %s", mllm_last_error());
        return NULL;
    }
    return ctx;
}

typedef struct run_seq {
    const mllm_token *prompt;
    int n_prompt, start_step, fork_of, n_gen, n_out;
    mllm_token out[16];
    mllm_seq_id id;
} run_seq;

/* Runs the sequences (greedy) to completion on a fresh context; returns the status. */
static mllm_status run(mllm_model *m, run_seq *s, int n) {
    mllm_context *ctx = context(m, n);
    mllm_status st = ctx ? MLLM_OK : MLLM_ERR_BACKEND;
    int step, i, k, active = 0, waiting = n;
    for (i = 0; i < n; i++) { s[i].id = -1; s[i].n_out = 0; }
    for (step = 0; st == MLLM_OK && (active || waiting) && step < 200; step++) {
        mllm_step_result r;
        for (i = 0; i < n && st == MLLM_OK; i++) {
            mllm_seq_params sp;
            if (s[i].start_step != step) continue;
            memset(&sp, 0, sizeof sp);
            sp.max_tokens = s[i].n_gen;
            sp.ignore_eog = 1;
            st = s[i].fork_of >= 0 ? mllm_seq_fork(ctx, s[s[i].fork_of].id, &sp, &s[i].id)
                                   : mllm_seq_add(ctx, s[i].prompt, s[i].n_prompt, &sp, &s[i].id);
            active++;
            waiting--;
        }
        if (st != MLLM_OK || !active) continue;
        if ((st = mllm_step(ctx, &r)) != MLLM_OK) break;
        for (k = 0; k < r.n_tokens; k++)
            for (i = 0; i < n; i++)
                if (s[i].id == r.tokens[k].seq) {
                    if (r.tokens[k].token >= 0 && s[i].n_out < 16) s[i].out[s[i].n_out++] = r.tokens[k].token;
                    if (r.tokens[k].finished) {
                        active--;
                        if (r.tokens[k].status != MLLM_OK) st = r.tokens[k].status;
                    }
                }
    }
    mllm_context_free(ctx);
    return st;
}

/* The logits of the prompt's last position (manual sequence); n_vocab floats into out. */
static mllm_status prompt_logits(mllm_model *m, const mllm_token *prompt, int n, float *out) {
    mllm_context *ctx = context(m, 1);
    mllm_seq_params sp;
    mllm_seq_id id;
    mllm_step_result r;
    mllm_status st;
    const float *l;
    if (!ctx) return MLLM_ERR_BACKEND;
    memset(&sp, 0, sizeof sp);
    sp.manual = 1;
    st = mllm_seq_add(ctx, prompt, n, &sp, &id);
    if (st == MLLM_OK) st = mllm_step(ctx, &r);
    if (st == MLLM_OK && (l = mllm_seq_logits(ctx, id)) != NULL) memcpy(out, l, (size_t)m->hp.n_vocab * sizeof *out);
    else if (st == MLLM_OK) st = MLLM_ERR_BACKEND;
    mllm_context_free(ctx);
    return st;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check_clean(const char *what) {
#ifdef MLLM_TEST_FAKE_METAL
    CHECK(fake_metal_c_live_objects() == 0 && fake_metal_c_misuse() == 0, "%s: %ld objects alive, %ld misuses", what,
          fake_metal_c_live_objects(), fake_metal_c_misuse());
#else
    (void)what;
#endif
}

static void check_model(const char *name, int n_gen) {
    static const mllm_token base[6] = {1, 450, 3996, 1354, 1701, 432};
    mllm_token prompt[6];
    mllm_model *cpu = load(name, MLLM_BACKEND_CPU), *gpu = load(name, MLLM_BACKEND_METAL);
    run_seq a, b;
    float *lc = NULL, *lg = NULL;
    int i, V;
    double t0, lo = 1e30, hi = -1e30, diff = 0;
    mllm_context *ctx;
    if (!cpu || !gpu) goto done;
    V = cpu->hp.n_vocab;
    for (i = 0; i < 6; i++) prompt[i] = base[i] % V;
    t0 = now_s();
    ctx = context(gpu, 1);
    printf("  %-20s context with the Metal backend (device, library, first pipeline): %.3f s\n", name, now_s() - t0);
    mllm_context_free(ctx);
    lc = (float *)malloc((size_t)V * sizeof *lc);
    lg = (float *)malloc((size_t)V * sizeof *lg);
    if (!lc || !lg) goto done;
    CHECK(prompt_logits(cpu, prompt, 6, lc) == MLLM_OK && prompt_logits(gpu, prompt, 6, lg) == MLLM_OK, "%s: logits: %s", name,
          mllm_last_error());
    for (i = 0; i < V; i++) {
        lo = lc[i] < lo ? lc[i] : lo;
        hi = lc[i] > hi ? lc[i] : hi;
        diff = fabs((double)lc[i] - lg[i]) > diff ? fabs((double)lc[i] - lg[i]) : diff;
    }
    CHECK(diff <= 1e-3 * (hi - lo), "%s: logits differ by %.3g (range %.3g)", name, diff, hi - lo);
    memset(&a, 0, sizeof a);
    a.prompt = prompt; a.n_prompt = 6; a.fork_of = -1; a.n_gen = n_gen;
    b = a;
    CHECK(run(cpu, &a, 1) == MLLM_OK && run(gpu, &b, 1) == MLLM_OK, "%s: %s", name, mllm_last_error());
    CHECK(a.n_out == n_gen && b.n_out == n_gen && !memcmp(a.out, b.out, sizeof a.out), "%s: greedy tokens differ", name);
    printf("  %-20s logits within %.2g of the CPU's (range %.3g); greedy:", name, diff, hi - lo);
    for (i = 0; i < b.n_out; i++) printf(" %d%s", b.out[i], b.out[i] == a.out[i] ? "" : "(!)");
    printf("\n");
done:
    free(lc);
    free(lg);
    mllm_model_free(cpu);
    mllm_model_free(gpu);
    check_clean(name);
}

/* make test-san's build (MSL_SAN_BUILD) runs make test's emulated kernels again: fewer tokens there, and
   SmolLM2 (the same host code as the tiny models) left out */
#if defined(MLLM_TEST_FAKE_METAL) && defined(MSL_SAN_BUILD)
#define T_QUICK 1
#else
#define T_QUICK 0
#endif

static void test_every_gpu_weight_type_matches_cpu(void) {
    static const char *const models[] = {"tiny-llama-F32",  "tiny-llama-F16",  "tiny-llama-BF16",   "tiny-llama-Q8_0",
                                         "tiny-llama-Q4_0", "tiny-llama-Q4_1", "tiny-llama-Q4_K",   "tiny-llama-Q6_K",
                                         "tiny-llama-Q4_K_M", "tiny-qwen2-Q8_0", "tiny-qwen3-Q8_0", "tiny-mixtral-Q8_0",
                                         "tiny-qwen3moe-Q8_0"};
    size_t i;
    for (i = 0; i < sizeof models / sizeof *models; i++) check_model(models[i], T_QUICK ? 2 : 5);
}

/* gemma3 (GeGLU, scaled embeddings, sliding windows, head_dim 256), phi3 (head_dim 96), Llama 3.x
   rope_freqs.  On the fake they only repeat tests/emu/test_gpu_forward.cpp's emulated runs: left out. */
static void test_new_architectures_match_cpu(void) {
#ifdef MLLM_TEST_FAKE_METAL
    printf("  (skipped on the fake: build/test_gpu_forward runs these models on the emulator)\n");
#else
    static const char *const models[] = {"tiny-gemma3-Q8_0", "tiny-phi3-Q8_0", "tiny-llama3-Q8_0"};
    size_t i;
    for (i = 0; i < sizeof models / sizeof *models; i++) {
        char path[1024];
        FILE *f = fopen(model_path(models[i], path, sizeof path), "rb");
        if (!f) { printf("  (skipped: %s missing; make tiny-extra)\n", path); continue; }
        fclose(f);
        check_model(models[i], 5);
    }
#endif
}

static void test_smollm2_matches_cpu(void) {
    char path[1024];
    FILE *f;
    if (T_QUICK) { printf("  (skipped in the sanitizer build: make test ran it)\n"); return; }
    f = fopen(model_path("smollm2", path, sizeof path), "rb");
    if (!f) { printf("  (skipped: %s missing; make model)\n", path); return; }
    fclose(f);
#ifdef MLLM_TEST_FAKE_METAL
    check_model("smollm2", 3);   /* emulated: a few tokens are enough to run every kernel of it */
#else
    check_model("smollm2", 8);
#endif
}

static void test_concurrent_sequences_and_fork_match_solo_runs(void) {
    static const mllm_token pa[5] = {1, 450, 3996, 17, 1701}, pb[4] = {1, 22, 333, 4000}, pc[7] = {1, 7, 8, 9, 10, 11, 12};
    mllm_model *m = load("tiny-llama-Q4_K_M", MLLM_BACKEND_METAL);
    run_seq solo[3], s[4];
    int i;
    if (!m) return;
    memset(solo, 0, sizeof solo);
    solo[0].prompt = pa; solo[0].n_prompt = 5; solo[0].n_gen = 8;
    solo[1].prompt = pb; solo[1].n_prompt = 4; solo[1].n_gen = 6;
    solo[2].prompt = pc; solo[2].n_prompt = 7; solo[2].n_gen = 5;
    for (i = 0; i < 3; i++) {
        solo[i].fork_of = -1;
        CHECK(run(m, &solo[i], 1) == MLLM_OK, "solo %d: %s", i, mllm_last_error());
    }
    memcpy(s, solo, sizeof solo);
    s[2].start_step = 2;
    memset(&s[3], 0, sizeof s[3]);
    s[3].fork_of = 0; s[3].start_step = 3; s[3].n_gen = 4;   /* a copy of the first after its 2nd token */
    CHECK(run(m, s, 4) == MLLM_OK, "concurrent: %s", mllm_last_error());
    for (i = 0; i < 3; i++)
        CHECK(s[i].n_out == solo[i].n_gen && !memcmp(s[i].out, solo[i].out, sizeof s[i].out), "sequence %d differs from its solo run", i);
    CHECK(s[3].n_out == 4 && !memcmp(s[3].out, solo[0].out + 2, 4 * sizeof(mllm_token)), "the fork does not continue its parent");
    mllm_model_free(m);
    check_clean("concurrent");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_every_gpu_weight_type_matches_cpu);
#ifndef MLLM_TEST_FAKE_METAL   /* on the fake: build/test_metal_objc runs this one, with command buffers counted */
    RUN(test_concurrent_sequences_and_fork_match_solo_runs);
#endif
    RUN(test_new_architectures_match_cpu);
    RUN(test_smollm2_matches_cpu);
    return t_finish();
}
