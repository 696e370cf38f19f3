/* Prints a hash of the logits of every step of a short greedy run on each tiny model with integer-sum
   weight types (prefill of a 40-token prompt in chunks, then 8 decode steps, 2 sequences batched).
   tests/arm64.mk builds it twice for arm64, with the NEON weight kernels (row ops scalar:
   MLLM__TEST_SCALAR_ROW_OPS) and with MLLM_NO_SIMD, and requires the two outputs to be identical:
   the NEON kernels give the scalar kernels' logits bit for bit. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *t_testdata(void) { return getenv("MLLM_TESTDATA") ? getenv("MLLM_TESTDATA") : "../shared/testdata"; }

static const char *const models[] = {"tiny-llama-Q4_0", "tiny-llama-Q4_1", "tiny-llama-Q5_0", "tiny-llama-Q5_1",
                                     "tiny-llama-Q8_0", "tiny-llama-Q4_K", "tiny-llama-Q5_K", "tiny-llama-Q6_K",
                                     "tiny-llama-Q4_K_M", "tiny-qwen3moe-Q8_0"};

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int main(void) {
    unsigned mi;
    int bad = 0;
    for (mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        char path[512];
        mllm_model *m;
        mllm_context *ctx;
        mllm_model_params mp;
        mllm_context_params cp;
        mllm_seq_params sp;
        mllm_seq_id id[2];
        mllm_token prompt[40];
        uint64_t h = 0xcbf29ce484222325ull;
        int i, s, step, n_vocab = 4096;
        memset(&mp, 0, sizeof mp);
        mp.n_threads = 1;
        snprintf(path, sizeof path, "%s/tiny/models/%s.gguf", t_testdata(), models[mi]);
        if (mllm_model_load(&m, path, &mp) != MLLM_OK) { printf("%s: %s\n", path, mllm_last_error()); bad++; continue; }
        memset(&cp, 0, sizeof cp);
        cp.n_seq_max = 2;
        cp.n_batch = 24;                   /* prompts split into chunks */
        memset(&sp, 0, sizeof sp);
        sp.manual = 1;
        for (i = 0; i < 40; i++) prompt[i] = 3 + (i * 977 + 13) % (n_vocab - 3);
        if (mllm_context_create(&ctx, m, &cp) || mllm_seq_add(ctx, prompt, 40, &sp, &id[0]) ||
            mllm_seq_add(ctx, prompt + 5, 30, &sp, &id[1])) {
            printf("%s: %s\n", models[mi], mllm_last_error());
            bad++;
            mllm_model_free(m);
            continue;
        }
        for (step = 0; step < 12; step++) {
            mllm_step_result r;
            if (mllm_step(ctx, &r) != MLLM_OK) { printf("%s: step: %s\n", models[mi], mllm_last_error()); bad++; break; }
            for (s = 0; s < 2; s++) {
                const float *lg = mllm_seq_logits(ctx, id[s]);
                mllm_token best = 0;
                if (!lg) continue;                 /* prompt not finished yet */
                h = fnv(h, lg, sizeof(float) * (size_t)n_vocab);
                for (i = 1; i < n_vocab; i++) if (lg[i] > lg[best]) best = i;
                mllm_seq_append(ctx, id[s], &best, 1);
            }
        }
        printf("%-20s %016llx\n", models[mi], (unsigned long long)h);
        mllm_context_free(ctx);
        mllm_model_free(m);
    }
    return bad != 0;
}
