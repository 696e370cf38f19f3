/* Allocation-failure sweep: a full run (load, context, tokenize, chat format, add, fork, steps,
   generate, detokenize) is made once to count its N allocations (MLLM_MALLOC/MLLM_REALLOC), then N more
   times with the i-th allocation failing.  Every run must either fail with a negative status and a
   message, or succeed with exactly the tokens and text of the run without failures; and every run must
   return every block it took (live blocks counted by the wrappers below). */
#include <stdatomic.h>
#include <stdlib.h>

static atomic_long t_calls, t_live, t_fail_at;   /* t_fail_at: 1-based call to fail, 0: none */

static int t_should_fail(void) { return atomic_fetch_add(&t_calls, 1) + 1 == atomic_load(&t_fail_at); }
static void *t_malloc(size_t n) {
    void *p = t_should_fail() ? NULL : malloc(n);
    if (p) atomic_fetch_add(&t_live, 1);
    return p;
}
static void *t_realloc(void *old, size_t n) {
    void *p = t_should_fail() ? NULL : realloc(old, n);
    if (p && !old) atomic_fetch_add(&t_live, 1);
    return p;
}
static void t_free(void *p) {
    if (p) atomic_fetch_sub(&t_live, 1);
    free(p);
}
#define MLLM_MALLOC(sz) t_malloc(sz)
#define MLLM_REALLOC(p, sz) t_realloc(p, sz)
#define MLLM_FREE(p) t_free(p)
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"

#define MAX_OUT 64

typedef struct run_out {
    mllm_token toks[MAX_OUT];
    int n_toks;
    char text[1024];
    int n_text;
} run_out;

static int collect(const char *piece, int len, mllm_token token, void *user) {
    run_out *o = (run_out *)user;
    (void)piece; (void)len;
    if (token >= 0 && o->n_toks < MAX_OUT) o->toks[o->n_toks++] = token;
    return 0;
}

/* One full run; returns MLLM_OK or the first error (after freeing everything). */
static mllm_status full_run(const char *path, run_out *o) {
    mllm_model *m = NULL;
    mllm_context *ctx = NULL;
    mllm_model_params mp;
    mllm_context_params cp;
    mllm_seq_params sp;
    mllm_generate_params gp;
    mllm_chat_message msg = {"user", "Hello there, how are you?"};
    mllm_token prompt[64];
    mllm_seq_id id, child;
    char chat[512];
    const char *text = "The quick brown fox, jumps over 12 lazy dogs.";
    int n, need, active = 1, k;
    mllm_status st;
    memset(o, 0, sizeof *o);
    memset(&mp, 0, sizeof mp);
    mp.n_threads = 2;
    mp.n_ctx = 128;
    if ((st = mllm_model_load(&m, path, &mp))) return st;
    n = mllm_tokenize(mllm_model_vocab(m), text, strlen(text), NULL, 0, MLLM_TOKENIZE_ADD_SPECIAL);
    if (n < 0) { st = (mllm_status)n; goto done; }
    if (n > 64) { st = MLLM_ERR_INVALID_ARG; goto done; }
    if ((k = mllm_tokenize(mllm_model_vocab(m), text, strlen(text), prompt, n, MLLM_TOKENIZE_ADD_SPECIAL)) != n) {
        st = k < 0 ? (mllm_status)k : MLLM_ERR_INVALID_ARG;
        goto done;
    }
    need = mllm_chat_format(m, &msg, 1, NULL, 0);
    if (need < 0) { st = (mllm_status)need; goto done; }
    if (need > (int)sizeof chat || (k = mllm_chat_format(m, &msg, 1, chat, (int)sizeof chat)) != need) {
        st = k < 0 ? (mllm_status)k : MLLM_ERR_INVALID_ARG;
        goto done;
    }
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 2;
    if ((st = mllm_context_create(&ctx, m, &cp))) goto done;
    memset(&sp, 0, sizeof sp);
    sp.max_tokens = 5;
    sp.ignore_eog = 1;
    if ((st = mllm_seq_add(ctx, prompt, n, &sp, &id))) goto done;
    for (k = 0; active; k++) {
        mllm_step_result r;
        int j;
        if ((st = mllm_step(ctx, &r))) goto done;
        for (j = 0; j < r.n_tokens; j++) {
            if (r.tokens[j].status != MLLM_OK) { st = r.tokens[j].status; goto done; }
            if (r.tokens[j].token >= 0 && o->n_toks < MAX_OUT) o->toks[o->n_toks++] = r.tokens[j].token;
        }
        if (k == 1 && (st = mllm_seq_fork(ctx, id, NULL, &child))) goto done;
        active = r.n_active;
    }
    memset(&gp, 0, sizeof gp);
    gp.max_tokens = 5;
    gp.ignore_eog = 1;
    if ((st = mllm_generate(m, chat, &gp, collect, o))) goto done;
    n = mllm_detokenize(mllm_model_vocab(m), o->toks, o->n_toks, o->text, (int)sizeof o->text - 1);
    if (n < 0) { st = (mllm_status)n; goto done; }
    o->n_text = n;
done:
    mllm_context_free(ctx);
    mllm_model_free(m);
    return st;
}

static void sweep(const char *name) {
    char path[512];
    run_out ref, got;
    long n_alloc, i, n_fail = 0, n_ok = 0;
    mllm_status st;
    snprintf(path, sizeof path, "%s/tiny/models/%s.gguf", t_testdata(), name);
    atomic_store(&t_fail_at, 0);
    atomic_store(&t_calls, 0);
    st = full_run(path, &ref);
    n_alloc = atomic_load(&t_calls);
    CHECK(st == MLLM_OK, "reference run of %s: %s", name, mllm_last_error());
    CHECK(atomic_load(&t_live) == 0, "reference run leaks %ld blocks", atomic_load(&t_live));
    CHECK(ref.n_toks == 15 && ref.n_text > 0, "reference run: %d tokens, %d bytes", ref.n_toks, ref.n_text);
    if (st != MLLM_OK) return;
    for (i = 1; i <= n_alloc; i++) {
        atomic_store(&t_calls, 0);
        atomic_store(&t_live, 0);
        atomic_store(&t_fail_at, i);
        st = full_run(path, &got);
        CHECK(atomic_load(&t_live) == 0, "%s, allocation %ld failed: %ld blocks leak", name, i, atomic_load(&t_live));
        if (st == MLLM_OK) {   /* the failure was absorbed: the output must be exactly the reference */
            n_ok++;
            CHECK(got.n_toks == ref.n_toks && !memcmp(got.toks, ref.toks, sizeof(mllm_token) * (size_t)ref.n_toks) &&
                      got.n_text == ref.n_text && !memcmp(got.text, ref.text, (size_t)ref.n_text),
                  "%s, allocation %ld failed: success with different output", name, i);
        } else {
            n_fail++;
            CHECK(st < 0 && mllm_last_error()[0], "%s, allocation %ld failed: status %d without a message", name, i, (int)st);
        }
    }
    atomic_store(&t_fail_at, 0);
    printf("  %s: %ld allocations, %ld injected failures reported as errors, %ld succeeded (all with the reference output)\n", name,
           n_alloc, n_fail, n_ok);
}

static void test_alloc_failure_sweep_dense(void) { sweep("tiny-llama-Q8_0"); }
static void test_alloc_failure_sweep_moe(void) { sweep("tiny-qwen3moe-Q8_0"); }

int main(void) {
    RUN(test_alloc_failure_sweep_dense);
    RUN(test_alloc_failure_sweep_moe);
    return t_finish();
}
