/* The batched engine: many sequences in one step must give exactly what each gives alone; forks share KV
   blocks copy-on-write; pool exhaustion, removal and the context limit fail only the sequence concerned. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"

#define N_GEN 12

static mllm_model *load(const char *name, int n_ctx, int threads) {
    char path[512];
    mllm_model_params mp;
    mllm_model *m = NULL;
    memset(&mp, 0, sizeof mp);
    mp.n_threads = threads;
    mp.n_ctx = n_ctx;
    snprintf(path, sizeof path, "%s/tiny/models/%s.gguf", t_testdata(), name);
    if (mllm_model_load(&m, path, &mp) != MLLM_OK) printf("  load %s: %s\n", path, mllm_last_error());
    return m;
}

static void random_prompt(mllm_token *p, int n, unsigned seed, int n_vocab) {
    int i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = 3 + (int)((seed >> 8) % (unsigned)(n_vocab - 3));
    }
}

static mllm_seq_params params(float temp, uint64_t seed) {
    mllm_seq_params sp;
    memset(&sp, 0, sizeof sp);
    sp.max_tokens = N_GEN;
    sp.ignore_eog = 1;
    sp.sampler.temperature = temp;
    sp.sampler.top_k = temp > 0 ? 40 : 0;
    sp.sampler.top_p = 0.9f;
    sp.sampler.repeat_penalty = 1.1f;
    sp.sampler.seed = seed;
    return sp;
}

/* Generates from one prompt in a context of its own. */
static int run_alone(mllm_model *m, const mllm_token *prompt, int n, const mllm_seq_params *sp, mllm_token *out) {
    mllm_context *ctx;
    mllm_context_params cp;
    mllm_seq_id id;
    int got = 0, active = 1;
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 1;
    cp.n_batch = 512;
    if (mllm_context_create(&ctx, m, &cp) || mllm_seq_add(ctx, prompt, n, sp, &id)) return -1;
    while (active) {
        mllm_step_result r;
        int k;
        if (mllm_step(ctx, &r)) break;
        for (k = 0; k < r.n_tokens; k++)
            if (r.tokens[k].token >= 0 && got < N_GEN) out[got++] = r.tokens[k].token;
        active = r.n_active;
    }
    mllm_context_free(ctx);
    return got;
}

#define N_SEQ 8
static const int prompt_lens[N_SEQ] = {1, 5, 17, 33, 64, 100, 150, 300};

/* Sequences join at different steps, with a small batch so long prompts are chunked alongside other
   sequences' decode tokens. */
/* MLLM_TEST_SHORT=1 (the arm64 run under qemu, tests/arm64.mk): prompts an eighth as long, batches of
   16 tokens so the longer prompts are still chunked. */
static void check_equivalence(const char *model_name, float temp) {
    mllm_model *m = load(model_name, 512, 2);
    mllm_context *ctx;
    mllm_context_params cp;
    mllm_token prompts[N_SEQ][300], alone[N_SEQ][N_GEN], batched[N_SEQ][N_GEN];
    mllm_seq_id ids[N_SEQ];
    int got[N_SEQ] = {0}, lens[N_SEQ], i, step = 0, added = 0, active = 1, mismatches = 0;
    const int quick = getenv("MLLM_TEST_SHORT") != NULL;
    if (!m) { CHECK(0, "model missing"); return; }
    for (i = 0; i < N_SEQ; i++) {
        mllm_seq_params sp = params(temp, 1000 + i);
        lens[i] = quick ? (prompt_lens[i] + 7) / 8 : prompt_lens[i];
        random_prompt(prompts[i], lens[i], 77 + i, 4096);
        CHECK(run_alone(m, prompts[i], lens[i], &sp, alone[i]) == N_GEN, "alone run %d", i);
    }
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = N_SEQ;
    cp.n_batch = quick ? 16 : 48;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "%s", mllm_last_error());
    while (active || added < N_SEQ) {
        mllm_step_result r;
        int k;
        if (added < N_SEQ && step % 3 == 0) {   /* a new sequence every third step */
            mllm_seq_params sp = params(temp, 1000 + added);
            CHECK(mllm_seq_add(ctx, prompts[added], lens[added], &sp, &ids[added]) == MLLM_OK, "%s", mllm_last_error());
            added++;
        }
        CHECK(mllm_step(ctx, &r) == MLLM_OK, "%s", mllm_last_error());
        for (k = 0; k < r.n_tokens; k++) {
            int s;
            for (s = 0; s < added; s++)
                if (ids[s] == r.tokens[k].seq && r.tokens[k].token >= 0 && got[s] < N_GEN) batched[s][got[s]++] = r.tokens[k].token;
        }
        active = r.n_active;
        if (++step > 2000) break;
    }
    for (i = 0; i < N_SEQ; i++) {
        CHECK(got[i] == N_GEN, "seq %d produced %d tokens", i, got[i]);
        mismatches += memcmp(alone[i], batched[i], sizeof alone[i]) != 0;
        CHECK(!memcmp(alone[i], batched[i], sizeof alone[i]), "seq %d (prompt %d tokens): batched tokens differ from alone", i, lens[i]);
    }
    printf("  %s temp %.1f: %d sequences (prompts 1..%d tokens), %d steps, %d differ from their solo run\n", model_name, temp,
           N_SEQ, lens[N_SEQ - 1], step, mismatches);
    mllm_context_free(ctx);
    mllm_model_free(m);
}

static void test_batched_greedy_equals_alone(void) { check_equivalence("tiny-llama-Q4_K_M", 0.0f); }
static void test_batched_sampling_equals_alone(void) { check_equivalence("tiny-llama-Q4_0", 0.9f); }
static void test_batched_moe_equals_alone(void) { check_equivalence("tiny-qwen3moe-Q8_0", 0.0f); }

/* Thread count must not change the tokens (seeded sampling reproducible on any thread count). */
static void test_same_tokens_any_thread_count(void) {
    mllm_token prompt[40], out[3][N_GEN];
    mllm_seq_params sp = params(0.8f, 7);
    int t;
    random_prompt(prompt, 40, 5, 4096);
    for (t = 0; t < 3; t++) {
        mllm_model *m = load("tiny-llama-Q8_0", 256, t + 1);
        if (!m) { CHECK(0, "model missing"); return; }
        CHECK(run_alone(m, prompt, 40, &sp, out[t]) == N_GEN, "run");
        mllm_model_free(m);
    }
    CHECK(!memcmp(out[0], out[1], sizeof out[0]) && !memcmp(out[0], out[2], sizeof out[0]), "tokens differ across 1/2/3 threads");
}

/* The CPU's weights read into 2 MiB pages (the default on Linux) or left in the file's mapping
   (keep_mapping) give the same tokens; the progress callback ends at 1 either way, and a callback that
   cancels fails the load with a message, whichever path it interrupts. */
typedef struct progress_log {
    int calls, cancel_at;
    float last;
    int backwards;
} progress_log;

static int on_progress(float f, void *user) {
    progress_log *l = (progress_log *)user;
    l->backwards |= f < l->last;
    l->last = f;
    return ++l->calls == l->cancel_at;
}

/* Linux with transparent huge pages not "never" (where the CPU backend copies by default) */
static int thp_on(void) {
    char buf[128] = {0};
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    size_t n;
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n > 0 && !strstr(buf, "[never]");
}

static void test_copied_and_mapped_weights_agree(void) {
    char path[512];
    mllm_token prompt[40], out[2][N_GEN];
    mllm_seq_params sp = params(0.8f, 11);
    int k;
    random_prompt(prompt, 40, 9, 4096);
    snprintf(path, sizeof path, "%s/tiny/models/%s.gguf", t_testdata(), "tiny-llama-Q4_K_M");
    for (k = 0; k < 2; k++) {
        mllm_model_params mp;
        progress_log log;
        mllm_model_info info;
        mllm_model *m = NULL;
        mllm_status st;
        memset(&mp, 0, sizeof mp);
        memset(&log, 0, sizeof log);
        mp.backend = MLLM_BACKEND_CPU;
        mp.n_ctx = 256;
        mp.keep_mapping = k;
        mp.progress = on_progress;
        mp.progress_user = &log;
        st = mllm_model_load(&m, path, &mp);
        CHECK(st == MLLM_OK, "load (keep_mapping %d): %s", k, mllm_last_error());
        if (st != MLLM_OK) return;
        CHECK(log.calls > 0 && log.last == 1.0f && !log.backwards, "progress (keep_mapping %d): %d calls, last %g", k, log.calls, (double)log.last);
        CHECK(run_alone(m, prompt, 40, &sp, out[k]) == N_GEN, "run");
        mllm_model_get_info(m, &info);
        if (k == 1) CHECK(!info.weights_copied, "keep_mapping: the weights were copied");
        else {   /* the default copies wherever the kernel offers huge pages: then it must have */
            printf("  default: weights %s\n", info.weights_copied ? "read into 2 MiB pages" : "mapped (no transparent huge pages here)");
            CHECK(info.weights_copied || !thp_on(), "transparent huge pages are on, yet the weights stayed mapped");
        }
        mllm_model_free(m);
        memset(&log, 0, sizeof log);
        log.cancel_at = 1;
        m = NULL;
        st = mllm_model_load(&m, path, &mp);
        CHECK(st == MLLM_ERR_INVALID_ARG && !m && strstr(mllm_last_error(), "cancelled"), "cancelled load (keep_mapping %d): %d, %s", k, (int)st, mllm_last_error());
        if (m) mllm_model_free(m);
    }
    CHECK(!memcmp(out[0], out[1], sizeof out[0]), "copied and mapped weights give different tokens");
}

/* Fork after the prompt: children share the prompt's blocks (reference counts), sample their own first
   token from the shared logits, and continue exactly as a solo run with their seed would. */
static void test_fork_shares_blocks_then_diverges(void) {
    mllm_model *m = load("tiny-llama-Q4_0", 512, 2);
    mllm_context *ctx;
    mllm_context_params cp;
    mllm_token prompt[70], alone[4][N_GEN], got_tok[4][N_GEN];
    mllm_seq_id ids[4];
    mllm_step_result r;
    mllm__seq *src;
    int i, k, got[4] = {0}, shared_ok = 1, differ = 0;
    if (!m) { CHECK(0, "model missing"); return; }
    random_prompt(prompt, 70, 9, 4096);
    for (i = 0; i < 4; i++) {
        mllm_seq_params sp = params(1.0f, 500 + i);
        CHECK(run_alone(m, prompt, 70, &sp, alone[i]) == N_GEN, "alone");
    }
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 4;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "%s", mllm_last_error());
    {
        mllm_seq_params sp = params(1.0f, 500);
        CHECK(mllm_seq_add(ctx, prompt, 70, &sp, &ids[0]) == MLLM_OK, "add");
    }
    CHECK(mllm_step(ctx, &r) == MLLM_OK && r.n_tokens == 1, "prompt step");
    CHECK(alone[0][0] == r.tokens[0].token, "first token of the source differs");
    got_tok[0][got[0]++] = r.tokens[0].token;
    for (i = 1; i < 4; i++) {
        mllm_seq_params sp = params(1.0f, 500 + i);
        CHECK(mllm_seq_fork(ctx, ids[0], &sp, &ids[i]) == MLLM_OK, "%s", mllm_last_error());
    }
    src = mllm__seq_get(ctx, ids[0]);
    for (k = 0; k < src->n_blocks; k++) shared_ok &= ctx->kv.refcount[src->blocks[k]] == 4;
    CHECK(src->n_blocks == 5 && shared_ok, "70 prompt tokens = 5 blocks of 16, each shared by 4 sequences");
    for (;;) {
        int active;
        CHECK(mllm_step(ctx, &r) == MLLM_OK, "step");
        for (k = 0; k < r.n_tokens; k++)
            for (i = 0; i < 4; i++)
                if (ids[i] == r.tokens[k].seq && r.tokens[k].token >= 0 && got[i] < N_GEN) got_tok[i][got[i]++] = r.tokens[k].token;
        active = r.n_active;
        if (!active) break;
    }
    /* the partially filled block 4 was copied on write by every writer but one; blocks 0-3 stay shared */
    for (k = 0; k < 4; k++) CHECK(ctx->kv.refcount[src->blocks[k]] == 4, "full prompt block %d stays shared", k);
    for (i = 0; i < 4; i++) {
        CHECK(got[i] == N_GEN && !memcmp(got_tok[i], alone[i], sizeof alone[i]), "fork %d differs from its solo run", i);
        if (i) differ += memcmp(got_tok[i], got_tok[0], sizeof alone[0]) != 0;
    }
    CHECK(differ > 0, "forks with different seeds all produced the same text");
    for (i = 0; i < 4; i++) mllm_seq_remove(ctx, ids[i]);
    CHECK(ctx->kv.n_free == ctx->kv.n_blocks, "all blocks back in the pool after removal (%d of %d)", ctx->kv.n_free, ctx->kv.n_blocks);
    mllm_context_free(ctx);
    mllm_model_free(m);
}

/* A pool too small for two sequences: the one that cannot grow fails with KV_FULL; the other is intact.
   Then removal returns blocks, and a new sequence reuses them correctly. */
static void test_pool_exhaustion_and_reuse(void) {
    mllm_model *m = load("tiny-llama-Q8_0", 512, 2);
    mllm_context *ctx;
    mllm_context_params cp;
    mllm_token pa[40], pb[120], alone_a[N_GEN], alone_c[N_GEN], got_a[N_GEN], got_c[N_GEN];
    mllm_seq_params sp = params(0.0f, 1);
    mllm_seq_id a, b, c;
    int n_a = 0, n_c = 0, b_failed = 0, steps = 0, k;
    if (!m) { CHECK(0, "model missing"); return; }
    random_prompt(pa, 40, 1, 4096);
    random_prompt(pb, 120, 2, 4096);
    CHECK(run_alone(m, pa, 40, &sp, alone_a) == N_GEN, "alone a");
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 3;
    cp.kv_blocks = 8;   /* 128 positions: a needs 4 blocks (52 tokens), b needs 9 */
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm_seq_add(ctx, pa, 40, &sp, &a) == MLLM_OK, "add a");
    CHECK(mllm_seq_add(ctx, pb, 120, &sp, &b) == MLLM_OK, "add b");
    while (n_a < N_GEN && steps++ < 100) {
        mllm_step_result r;
        CHECK(mllm_step(ctx, &r) == MLLM_OK, "step");
        for (k = 0; k < r.n_tokens; k++) {
            if (r.tokens[k].seq == a && r.tokens[k].token >= 0) got_a[n_a++] = r.tokens[k].token;
            if (r.tokens[k].seq == b && r.tokens[k].finished) b_failed = r.tokens[k].status == MLLM_ERR_KV_FULL;
        }
    }
    CHECK(b_failed, "the sequence that could not grow reports MLLM_ERR_KV_FULL");
    CHECK(n_a == N_GEN && !memcmp(got_a, alone_a, sizeof got_a), "the other sequence is unaffected");
    CHECK(mllm_seq_remove(ctx, b) == MLLM_OK && mllm_seq_remove(ctx, a) == MLLM_OK, "remove");
    CHECK(ctx->kv.n_free == 8, "blocks returned: %d free", ctx->kv.n_free);
    random_prompt(pa, 40, 3, 4096);
    CHECK(run_alone(m, pa, 40, &sp, alone_c) == N_GEN, "alone c");
    CHECK(mllm_seq_add(ctx, pa, 40, &sp, &c) == MLLM_OK, "add c");
    while (n_c < N_GEN && steps++ < 200) {
        mllm_step_result r;
        CHECK(mllm_step(ctx, &r) == MLLM_OK, "step");
        for (k = 0; k < r.n_tokens; k++)
            if (r.tokens[k].seq == c && r.tokens[k].token >= 0) got_c[n_c++] = r.tokens[k].token;
    }
    CHECK(n_c == N_GEN && !memcmp(got_c, alone_c, sizeof got_c), "a sequence on reused blocks matches its solo run");
    mllm_context_free(ctx);
    mllm_model_free(m);
}

/* Removing a sequence mid-generation leaves the others exact. */
static void test_remove_mid_flight(void) {
    mllm_model *m = load("tiny-llama-Q4_1", 512, 2);
    mllm_context *ctx;
    mllm_context_params cp;
    mllm_token p[3][30], alone[3][N_GEN], got[3][N_GEN];
    mllm_seq_params sp = params(0.7f, 3);
    mllm_seq_id ids[3];
    int n[3] = {0}, i, k, steps = 0, active = 1;
    if (!m) { CHECK(0, "model missing"); return; }
    for (i = 0; i < 3; i++) {
        random_prompt(p[i], 30, 40 + i, 4096);
        CHECK(run_alone(m, p[i], 30, &sp, alone[i]) == N_GEN, "alone");
    }
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 3;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "ctx");
    for (i = 0; i < 3; i++) CHECK(mllm_seq_add(ctx, p[i], 30, &sp, &ids[i]) == MLLM_OK, "add");
    while (active && steps++ < 100) {
        mllm_step_result r;
        CHECK(mllm_step(ctx, &r) == MLLM_OK, "step");
        for (k = 0; k < r.n_tokens; k++)
            for (i = 0; i < 3; i++)
                if (r.tokens[k].seq == ids[i] && r.tokens[k].token >= 0 && n[i] < N_GEN) got[i][n[i]++] = r.tokens[k].token;
        if (steps == 4) CHECK(mllm_seq_remove(ctx, ids[1]) == MLLM_OK, "remove");
        active = r.n_active;
    }
    CHECK(n[0] == N_GEN && !memcmp(got[0], alone[0], sizeof got[0]), "seq 0 intact");
    CHECK(n[2] == N_GEN && !memcmp(got[2], alone[2], sizeof got[2]), "seq 2 intact");
    CHECK(n[1] == 4 && !memcmp(got[1], alone[1], 4 * sizeof(mllm_token)), "seq 1 stopped after its 4 tokens");
    mllm_context_free(ctx);
    mllm_model_free(m);
}

static void test_context_limit_and_bad_input(void) {
    mllm_model *m = load("tiny-llama-Q4_0", 64, 1);
    mllm_context *ctx;
    mllm_context_params cp;
    mllm_token p[64];
    mllm_seq_params sp = params(0.0f, 1);
    mllm_seq_id id;
    int steps = 0, n = 0, status = 1;
    if (!m) { CHECK(0, "model missing"); return; }
    sp.max_tokens = 0;
    random_prompt(p, 64, 4, 4096);
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 2;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "ctx");
    CHECK(mllm_seq_add(ctx, p, 64, &sp, &id) == MLLM_ERR_CONTEXT_FULL, "a prompt of n_ctx tokens is refused");
    CHECK(strlen(mllm_last_error()) > 0, "with a message");
    p[3] = 4096;
    CHECK(mllm_seq_add(ctx, p, 10, &sp, &id) == MLLM_ERR_INVALID_ARG, "out-of-range token refused");
    p[3] = -1;
    CHECK(mllm_seq_add(ctx, p, 10, &sp, &id) == MLLM_ERR_INVALID_ARG, "negative token refused");
    p[3] = 5;
    CHECK(mllm_seq_add(ctx, p, 0, &sp, &id) == MLLM_ERR_INVALID_ARG, "empty prompt refused");
    CHECK(mllm_seq_remove(ctx, 12345) == MLLM_ERR_INVALID_ARG, "unknown sequence");
    CHECK(mllm_seq_add(ctx, p, 50, &sp, &id) == MLLM_OK, "add");
    for (;;) {
        mllm_step_result r;
        int k;
        CHECK(mllm_step(ctx, &r) == MLLM_OK, "step");
        for (k = 0; k < r.n_tokens; k++) {
            n += r.tokens[k].token >= 0;
            if (r.tokens[k].finished) status = r.tokens[k].status;
        }
        if (!r.n_active || ++steps > 100) break;
    }
    CHECK(status == MLLM_ERR_CONTEXT_FULL && n == 14, "generation stops at the context limit: %d tokens, status %d", n, status);
    mllm_context_free(ctx);
    mllm_model_free(m);
}

int main(void) {
    RUN(test_batched_greedy_equals_alone);
    RUN(test_batched_sampling_equals_alone);
    RUN(test_batched_moe_equals_alone);
    RUN(test_same_tokens_any_thread_count);
    RUN(test_copied_and_mapped_weights_agree);
    RUN(test_fork_shares_blocks_then_diverges);
    RUN(test_pool_exhaustion_and_reuse);
    RUN(test_remove_mid_flight);
    RUN(test_context_limit_and_bad_input);
    return t_finish();
}
