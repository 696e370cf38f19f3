/* mllm_kv_free_blocks: the pool count the server's disconnect test relies on.  Checked against the
   block arithmetic (ceil(tokens / block_tokens)), forks sharing blocks, copy-on-write and removal. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "tests/test.h"

static mllm_model *load_tiny(void) {
    char path[1024];
    mllm_model *m = NULL;
    mllm_model_params mp;
    memset(&mp, 0, sizeof mp);
    mp.n_threads = 1;
    mp.n_ctx = 256;
    snprintf(path, sizeof path, "%s/tiny/models/tiny-llama-Q8_0.gguf", t_testdata());
    if (mllm_model_load(&m, path, &mp)) printf("  cannot load %s: %s\n", path, mllm_last_error());
    return m;
}

static void test_kv_free_blocks_counts(void) {
    mllm_model *m = load_tiny();
    mllm_context *ctx = NULL;
    mllm_context_params cp;
    mllm_seq_params sp;
    mllm_seq_id a = 0, b = 0;   /* (set by mllm_seq_add; initialized for gcc -Wmaybe-uninitialized) */
    mllm_step_result r;
    mllm_token prompt[40];
    int i, total = -1;
    CHECK(m != NULL, "model");
    if (!m) return;
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 4;
    cp.kv_block_tokens = 16;
    cp.kv_blocks = 10;
    CHECK(mllm_context_create(&ctx, m, &cp) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm_kv_free_blocks(NULL, NULL) == MLLM_ERR_INVALID_ARG, "NULL context");
    CHECK(mllm_kv_free_blocks(ctx, &total) == 10 && total == 10, "fresh pool: %d of %d", mllm_kv_free_blocks(ctx, NULL), total);
    for (i = 0; i < 40; i++) prompt[i] = 1 + i;
    memset(&sp, 0, sizeof sp);
    sp.max_tokens = 100;
    CHECK(mllm_seq_add(ctx, prompt, 40, &sp, &a) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm_kv_free_blocks(ctx, NULL) == 10, "adding takes no block before a step");
    CHECK(mllm_step(ctx, &r) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm_kv_free_blocks(ctx, NULL) == 7, "40 positions = 3 blocks: %d free", mllm_kv_free_blocks(ctx, NULL));
    CHECK(mllm_seq_fork(ctx, a, &sp, &b) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm_kv_free_blocks(ctx, NULL) == 7, "a fork shares blocks: %d free", mllm_kv_free_blocks(ctx, NULL));
    CHECK(mllm_step(ctx, &r) == MLLM_OK, "%s", mllm_last_error());
    /* position 40 goes to the shared third block: one copy for whichever writes it first, and the
       child samples from the parent's logits without writing: 1 block more */
    CHECK(mllm_kv_free_blocks(ctx, NULL) == 6, "copy-on-write: %d free", mllm_kv_free_blocks(ctx, NULL));
    CHECK(mllm_seq_remove(ctx, a) == MLLM_OK, "remove a");
    CHECK(mllm_seq_remove(ctx, b) == MLLM_OK, "remove b");
    CHECK(mllm_kv_free_blocks(ctx, &total) == 10 && total == 10, "all back: %d", mllm_kv_free_blocks(ctx, NULL));
    mllm_context_free(ctx);
    mllm_model_free(m);
}

int main(void) {
    RUN(test_kv_free_blocks_counts);
    return t_finish();
}
