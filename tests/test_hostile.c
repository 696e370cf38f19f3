/* Hostile arguments (issue 18): NULL and garbage arguments, out-of-range parameters and sizes return an
   error with a message (never a crash, undefined behaviour or a silently changed setting); the thread
   pool never waits on a worker that is not running; SentencePiece on invalid UTF-8 matches llama.cpp. */
#if defined(__APPLE__)
#define _DARWIN_C_SOURCE 1   /* <signal.h> needs it beside _POSIX_C_SOURCE (set before <stdlib.h>, the first include) */
#endif
#include <stdlib.h>
/* Allocations over 256 MiB fail, so the huge-context tests get MLLM_ERR_NOMEM instead of touching RAM. */
static void *t_malloc(size_t n) { return n > ((size_t)1 << 28) ? NULL : malloc(n); }
static void *t_realloc(void *p, size_t n) { return n > ((size_t)1 << 28) ? NULL : realloc(p, n); }
#define MLLM_MALLOC(sz) t_malloc(sz)
#define MLLM_REALLOC(p, sz) t_realloc(p, sz)
#define MLLM_FREE(p) free(p)
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"
#include <signal.h>
#include <limits.h>
#include <math.h>

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

/* 1: mllm_step dereferenced ctx before its NULL check. */
static void test_step_null_arguments(void) {
    mllm_step_result r;
    CHECK(mllm_step(NULL, &r) == MLLM_ERR_INVALID_ARG, "step(NULL, &r)");
    CHECK(mllm_step(NULL, NULL) == MLLM_ERR_INVALID_ARG, "step(NULL, NULL)");
}

/* 3: size queries (NULL buffer, cap 0) on tokens without text were memcpy(NULL, src, 0). */
static void test_size_queries_without_buffer(void) {
    mllm_model *m = load("tiny-llama-Q8_0", 64, 1);
    const mllm_vocab *v;
    mllm_token t[4];
    mllm_detok st;
    int n;
    if (!m) { CHECK(0, "model"); return; }
    v = mllm_model_vocab(m);
    n = mllm_tokenize(v, "", 0, t, 4, MLLM_TOKENIZE_ADD_SPECIAL);
    CHECK(n == 1 && t[0] == mllm_vocab_bos(v), "tokenize(\"\") = %d tokens", n);
    CHECK(mllm_detokenize(v, t, 1, NULL, 0) == 0, "detokenize(BOS, NULL, 0)");
    memset(&st, 0, sizeof st);
    CHECK(mllm_detok_push(v, &st, t[0], NULL, 0) == 0, "detok_push(BOS, NULL, 0)");
    CHECK(mllm_detok_flush(&st, NULL, 0) == 0, "detok_flush(NULL, 0)");
    CHECK(mllm_token_to_bytes(v, t[0], NULL, 0) == 0, "token_to_bytes(BOS, NULL, 0)");
    mllm_model_free(m);
}

static int count_pieces(const char *piece, int len, mllm_token token, void *user) {
    (void)piece; (void)len; (void)token;
    ++*(int *)user;
    return 0;
}

/* 4: n_ctx near INT_MAX overflowed (n_ctx + block - 1) and (n_ctx + 15) / 16, and the CLI reported
   "context parameters out of range".  n_ctx is now bounded (2^24) where it enters, sizes are computed in
   64 bits, and a context too large for memory fails as the allocation it is. */
static void test_huge_context_sizes(void) {
    char path[512];
    mllm_model_params mp;
    mllm_model *m = NULL;
    mllm_context *ctx = NULL;
    mllm_context_params cp;
    mllm_generate_params gp;
    int pieces = 0;
    mllm_status st;
    memset(&mp, 0, sizeof mp);
    mp.n_ctx = INT_MAX;
    snprintf(path, sizeof path, "%s/tiny/models/tiny-llama-Q8_0.gguf", t_testdata());
    st = mllm_model_load(&m, path, &mp);
    CHECK(st == MLLM_ERR_INVALID_ARG && !m && strstr(mllm_last_error(), "n_ctx"), "load n_ctx INT_MAX: %d %s", (int)st, mllm_last_error());
    mllm_model_free(m);
    if (!(m = load("tiny-llama-Q8_0", 1 << 24, 1))) { CHECK(0, "model"); return; }
    memset(&gp, 0, sizeof gp);
    gp.max_tokens = 2;
    st = mllm_generate(m, "Hello", &gp, count_pieces, &pieces);
    CHECK(st == MLLM_ERR_NOMEM && strstr(mllm_last_error(), "KV pool"), "generate: %d %s", (int)st, mllm_last_error());
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 1;
    st = mllm_context_create(&ctx, m, &cp);
    CHECK(st == MLLM_ERR_NOMEM && !ctx, "context n_seq_max 1: %d %s", (int)st, mllm_last_error());
    mllm_model_free(m);
}

/* 5: mllm_model_get_info(model, NULL) crashed. */
static void test_get_info_null(void) {
    mllm_model *m = load("tiny-llama-Q8_0", 64, 1);
    mllm_model_info info;
    if (!m) { CHECK(0, "model"); return; }
    mllm_model_get_info(m, NULL);
    mllm_model_get_info(NULL, NULL);
    mllm_model_get_info(m, &info);
    CHECK(info.n_vocab > 0, "info");
    mllm_model_free(m);
}

/* 6: out-of-range parameters are errors everywhere they enter: the public check, mllm_seq_add,
   mllm_seq_fork and mllm_generate; boundary values stay accepted. */
static void test_out_of_range_parameters(void) {
    mllm_model *m = load("tiny-llama-Q8_0", 64, 1);
    mllm_context *ctx = NULL;
    mllm_context_params cp;
    mllm_seq_params sp;
    mllm_generate_params gp;
    mllm_sampler_params good, bad[16];
    mllm_seq_id id, id2;
    mllm_token prompt[3] = {1, 20, 30};
    mllm_chat_message msg = {"user", "hi"}, nul_role = {NULL, "hi"}, nul_content = {"user", NULL};
    char buf[256];
    int i, n_bad = 0, pieces = 0;
    if (!m) { CHECK(0, "model"); return; }
    memset(&good, 0, sizeof good);
    for (i = 0; i < 16; i++) bad[i] = good;
    bad[n_bad++].temperature = -0.5f;
    bad[n_bad++].temperature = NAN;
    bad[n_bad++].temperature = INFINITY;
    bad[n_bad++].top_k = -1;
    bad[n_bad++].top_p = 7;
    bad[n_bad++].top_p = -0.1f;
    bad[n_bad++].top_p = NAN;
    bad[n_bad++].min_p = -0.01f;
    bad[n_bad++].min_p = 1.5f;
    bad[n_bad++].penalty_last_n = -1;
    bad[n_bad++].repeat_penalty = INFINITY;
    bad[n_bad++].repeat_penalty = -1;
    bad[n_bad++].frequency_penalty = NAN;
    bad[n_bad++].presence_penalty = -INFINITY;

    memset(&cp, 0, sizeof cp);
    cp.kv_policy = (mllm_kv_policy)42;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_ERR_INVALID_ARG && !ctx, "kv_policy 42");
    cp.kv_policy = MLLM_KV_FAIL_SEQ;
    cp.n_seq_max = -3;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_ERR_INVALID_ARG && !ctx, "n_seq_max -3");
    cp.n_seq_max = 4;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "%s", mllm_last_error());
    if (!ctx) { mllm_model_free(m); return; }
    memset(&sp, 0, sizeof sp);
    memset(&gp, 0, sizeof gp);
    gp.max_tokens = 1;
    for (i = 0; i < n_bad; i++) {
        CHECK(mllm_sampler_params_check(&bad[i]) == MLLM_ERR_INVALID_ARG && strstr(mllm_last_error(), "sampler"), "check %d", i);
        sp.sampler = bad[i];
        CHECK(mllm_seq_add(ctx, prompt, 3, &sp, &id) == MLLM_ERR_INVALID_ARG, "seq_add %d", i);
        gp.sampler = bad[i];
        CHECK(mllm_generate(m, "Hi", &gp, count_pieces, &pieces) == MLLM_ERR_INVALID_ARG, "generate %d", i);
    }
    CHECK(pieces == 0, "generated with a bad sampler");
    CHECK(mllm_sampler_params_check(NULL) == MLLM_ERR_INVALID_ARG, "check(NULL)");
    /* boundary values are fine */
    good.temperature = 0; good.top_k = 0; good.top_p = 1; good.min_p = 1; good.repeat_penalty = 0; good.penalty_last_n = 0;
    good.frequency_penalty = -2; good.presence_penalty = 2;
    CHECK(mllm_sampler_params_check(&good) == MLLM_OK, "%s", mllm_last_error());
    good.temperature = 1e30f; good.top_p = 0; good.min_p = 0; good.repeat_penalty = 1.3f; good.penalty_last_n = 100000;
    CHECK(mllm_sampler_params_check(&good) == MLLM_OK, "%s", mllm_last_error());
    sp.sampler = good;
    sp.max_tokens = -1;
    CHECK(mllm_seq_add(ctx, prompt, 3, &sp, &id) == MLLM_ERR_INVALID_ARG, "seq max_tokens -1");
    sp.max_tokens = 2;
    CHECK(mllm_seq_add(ctx, prompt, 3, &sp, &id) == MLLM_OK, "%s", mllm_last_error());
    sp.sampler = bad[0];
    CHECK(mllm_seq_fork(ctx, id, &sp, &id2) == MLLM_ERR_INVALID_ARG, "fork with a bad sampler");
    CHECK(mllm_seq_fork(ctx, id, NULL, &id2) == MLLM_OK, "fork NULL params: %s", mllm_last_error());
    gp.sampler = good;
    gp.max_tokens = -1;
    CHECK(mllm_generate(m, "Hi", &gp, count_pieces, &pieces) == MLLM_ERR_INVALID_ARG, "generate max_tokens -1");
    /* chat formatting */
    CHECK(mllm_chat_format(m, &msg, 1, buf, -1) == MLLM_ERR_INVALID_ARG, "chat cap -1");
    CHECK(mllm_chat_format(m, &msg, 1, NULL, 5) == MLLM_ERR_INVALID_ARG, "chat NULL out, cap 5");
    CHECK(mllm_chat_format(m, &nul_role, 1, buf, sizeof buf) == MLLM_ERR_INVALID_ARG, "chat NULL role");
    CHECK(mllm_chat_format(m, &nul_content, 1, NULL, 0) == MLLM_ERR_INVALID_ARG, "chat NULL content");
    CHECK(mllm_chat_format(m, &msg, 1, buf, sizeof buf) > 0, "chat ok: %s", mllm_last_error());
    mllm_context_free(ctx);
    mllm_model_free(m);
}

/* Found by the chat fuzzer: a buffer too small for the text got a NUL at cap - 1 but only the pieces that
   fitted whole before it, leaving uninitialized bytes in the "string".  Now it holds the text's prefix. */
static void test_chat_short_buffer_gets_a_prefix(void) {
    mllm_model *m = load("tiny-llama-Q8_0", 64, 1);
    mllm_chat_message msg = {"user", "hi"};
    char full[256], part[64];
    int need, cap;
    if (!m) { CHECK(0, "model"); return; }
    need = mllm_chat_format(m, &msg, 1, full, sizeof full);
    CHECK(need > 8 && need <= (int)sizeof full, "need %d", need);
    for (cap = 1; cap < need && cap < (int)sizeof part; cap++) {
        memset(part, 'X', sizeof part);
        CHECK(mllm_chat_format(m, &msg, 1, part, cap) == need, "cap %d", cap);
        CHECK(part[cap - 1] == 0 && !memcmp(part, full, (size_t)cap - 1) && part[cap] == 'X', "cap %d: not the prefix", cap);
    }
    mllm_model_free(m);
}

/* 7: more threads than usable cores only wait on each other: the count is capped. */
static void test_thread_count_capped(void) {
    mllm_model *m = load("tiny-llama-Q8_0", 64, 1000);
    int cores = mllm__usable_cores();
    if (!m) { CHECK(0, "model"); return; }
    CHECK(m->pool->n_threads == cores, "1000 threads requested: pool has %d, usable cores %d", m->pool->n_threads, cores);
    mllm_model_free(m);
    m = load("tiny-llama-Q8_0", 64, 0);
    if (!m) { CHECK(0, "model"); return; }
    CHECK(m->pool->n_threads >= 1 && m->pool->n_threads <= cores, "default threads %d of %d cores", m->pool->n_threads, cores);
    mllm_model_free(m);
}

/* Each task of each run is done exactly once, whatever the interleaving (also run under TSan). */
typedef struct count_job { int *hits; } count_job;
static void count_task(void *arg, int task, int thread) {
    (void)thread;
    __atomic_fetch_add(&((count_job *)arg)->hits[task], 1, __ATOMIC_RELAXED);
}

static void test_pool_runs_each_task_once(void) {
    mllm__pool *p = NULL;
    int hits[97], run, i, bad = 0;
    count_job j = {hits};
    CHECK(mllm__pool_create(&p, 4) == MLLM_OK, "pool");
    if (!p) return;
    for (run = 0; run < 30000; run++) {
        int n = run % 10 < 5 ? 2 + run % 3 : 1 + (run * 37) % 97;
        memset(hits, 0, sizeof hits);
        mllm__pool_run(p, count_task, &j, n);
        for (i = 0; i < 97; i++) bad += hits[i] != (i < n);
        if (run % 500 == 499) { struct timespec ts = {0, 200000}; nanosleep(&ts, NULL); }   /* let workers fall asleep */
    }
    CHECK(bad == 0, "%d tasks not run exactly once", bad);
    mllm__pool_free(p);
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#endif

#ifndef T_TSAN
/* A worker held in a signal handler stands for a worker whose core is taken by another program. */
static volatile sig_atomic_t t_held, t_release;
static void hold_handler(int sig) {
    (void)sig;
    t_held = 1;
    while (!t_release) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}
static void on_alarm(int sig) {
    static const char msg[] = "  FAIL test_pool_does_not_wait_for_a_descheduled_worker: pool runs hang\n0 passed, 1 failed\n";
    (void)sig;
    if (write(1, msg, sizeof msg - 1)) {}
    _exit(1);
}

/* 7: a run ends when its tasks are done; a worker that is not running (here: stuck in a signal handler)
   must not hold the caller back.  The old pool waited for every worker to check in, and hung. */
static void test_pool_does_not_wait_for_a_descheduled_worker(void) {
    mllm__pool *p = NULL;
    int hits[8], run, bad = 0, i;
    count_job j = {hits};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hold_handler;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGALRM, on_alarm);
    CHECK(mllm__pool_create(&p, 2) == MLLM_OK, "pool");
    if (!p) return;
    while (!MLLM__LOAD(&p->n_sleeping)) { struct timespec ts = {0, 100000}; nanosleep(&ts, NULL); }
    pthread_mutex_lock(&p->mu);   /* the worker holds no lock now: it waits in pthread_cond_wait */
    pthread_mutex_unlock(&p->mu);
    pthread_kill(p->threads[0], SIGUSR1);
    while (!t_held) { struct timespec ts = {0, 100000}; nanosleep(&ts, NULL); }
    alarm(20);
    for (run = 0; run < 200; run++) {
        memset(hits, 0, sizeof hits);
        mllm__pool_run(p, count_task, &j, 8);
        for (i = 0; i < 8; i++) bad += hits[i] != 1;
    }
    alarm(0);
    t_release = 1;
    CHECK(bad == 0, "%d tasks wrong", bad);
    mllm__pool_free(p);
}
#endif

/* 9: SentencePiece with byte tokens on invalid UTF-8: token ids from llama.cpp's llama-tokenize
   (peer/bin, ggml-vocab-llama-spm.gguf, BOS added); the detokenized bytes as the header documents. */
static void test_spm_invalid_utf8_matches_llamacpp(void) {
    static const struct { const char *in; int n_in; int ids[10]; int n_ids; const char *out; int n_out; } c[] = {
        {"\xff\xfe a", 4, {1, 29871, 258, 257, 229, 153, 132, 29874}, 8, "\xff\xfe\xe2\x96\x81" "a", 6},
        {"\xff a", 3, {1, 29871, 258, 229, 153, 132, 29874}, 7, "\xff\xe2\x96\x81" "a", 5},
        {"\xc3 a", 3, {1, 29871, 198, 229, 153, 132, 29874}, 7, "\xc3\xe2\x96\x81" "a", 5},
        {"\xe0\x80 a", 4, {1, 29871, 227, 131, 229, 153, 132, 29874}, 8, "\xe0\x80\xe2\x96\x81" "a", 6},
        {"\x80 a", 3, {1, 29871, 131, 263}, 4, "\x80 a", 3},
        {"\xf0\x9f\x98 a", 5, {1, 29871, 243, 162, 155, 229, 153, 132, 29874}, 9, "\xf0\x9f\x98\xe2\x96\x81" "a", 7},
        {"a\xff" "b c", 5, {1, 263, 258, 101, 229, 153, 132, 29883}, 8, "a\xff" "b\xe2\x96\x81" "c", 7},
    };
    char path[512], out[64];
    mllm_vocab *v = NULL;
    mllm_token t[16];
    int i, k, n;
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-llama-spm.gguf", t_testdata());
    if (mllm_vocab_load(&v, path) != MLLM_OK) { CHECK(0, "%s: %s", path, mllm_last_error()); return; }
    for (i = 0; i < (int)(sizeof c / sizeof c[0]); i++) {
        n = mllm_tokenize(v, c[i].in, (size_t)c[i].n_in, t, 16, MLLM_TOKENIZE_ADD_SPECIAL);
        CHECK(n == c[i].n_ids, "case %d: %d tokens", i, n);
        for (k = 0; k < n && k < c[i].n_ids; k++) CHECK(t[k] == c[i].ids[k], "case %d token %d: %d != %d", i, k, t[k], c[i].ids[k]);
        n = mllm_detokenize(v, t, n, out, sizeof out);
        CHECK(n == c[i].n_out && !memcmp(out, c[i].out, (size_t)n), "case %d: detokenized %d bytes", i, n);
    }
    mllm_vocab_free(v);
}

/* A test name as argument runs only that test. */
#define RUN1(fn) do { if (argc < 2 || !strcmp(argv[1], #fn)) RUN(fn); } while (0)
int main(int argc, char **argv) {
    RUN1(test_step_null_arguments);
    RUN1(test_size_queries_without_buffer);
    RUN1(test_huge_context_sizes);
    RUN1(test_get_info_null);
    RUN1(test_out_of_range_parameters);
    RUN1(test_chat_short_buffer_gets_a_prefix);
    RUN1(test_thread_count_capped);
    RUN1(test_pool_runs_each_task_once);
#ifndef T_TSAN
    RUN1(test_pool_does_not_wait_for_a_descheduled_worker);
#endif
    RUN1(test_spm_invalid_utf8_matches_llamacpp);
    return t_finish();
}
