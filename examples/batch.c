/* batch: run several prompts concurrently through one context (continuous batching) and print each
   result and the aggregate throughput.
     batch -m MODEL.gguf [-t N] [-n N] [--temp T] [--seqs N] [--chat] [--cpu | --cuda] [--device N] [PROMPT ...]
   With --seqs N and fewer prompts, the prompts are reused round-robin. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct seq_out {
    mllm_seq_id id;
    char *text;
    size_t len, cap;
    mllm_detok dt;
    int n_gen;
} seq_out;

static void append(seq_out *o, const char *s, int n) {
    if (n <= 0) return;
    if (o->len + (size_t)n + 1 > o->cap) {
        o->cap = (o->len + (size_t)n + 1) * 2;
        o->text = (char *)realloc(o->text, o->cap);
    }
    memcpy(o->text + o->len, s, (size_t)n);
    o->len += (size_t)n;
    o->text[o->len] = 0;
}

int main(int argc, char **argv) {
    static const char *const default_prompts[] = {"The capital of France is", "Write a short poem about the sea.",
                                                   "Explain what a hash table is.", "Once upon a time"};
    const char *model_path = NULL, *prompts[64];
    int n_prompts = 0, n_seqs = 0, max_tokens = 64, threads = 0, chat = 0, device = 0, i, total = 0, prompt_tokens = 0;
    float temp = 0.0f;
    mllm_backend backend = MLLM_BACKEND_AUTO;
    mllm_model_params mp;
    mllm_context_params cp;
    mllm_model *model;
    mllm_context *ctx;
    seq_out *outs;
    double t0, t1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) model_path = argv[++i];
        else if (!strcmp(a, "-t") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-n") && v) max_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--temp") && v) temp = (float)atof(argv[++i]);
        else if (!strcmp(a, "--seqs") && v) n_seqs = atoi(argv[++i]);
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--cuda")) backend = MLLM_BACKEND_CUDA;
        else if (!strcmp(a, "--cpu")) backend = MLLM_BACKEND_CPU;
        else if (!strcmp(a, "--device") && v) device = atoi(argv[++i]);
        else if (a[0] == '-') { fprintf(stderr, "unknown option %s\n", a); return 2; }
        else if (n_prompts < 64) prompts[n_prompts++] = a;
    }
    if (!model_path) {
        fprintf(stderr, "usage: batch -m MODEL.gguf [-t N] [-n N] [--temp T] [--seqs N] [--chat] [--cpu | --cuda] [--device N] [PROMPT ...]\n");
        return 2;
    }
    if (!n_prompts)
        for (i = 0; i < 4; i++) prompts[n_prompts++] = default_prompts[i];
    if (n_seqs <= 0) n_seqs = n_prompts;
    memset(&mp, 0, sizeof mp);
    mp.n_threads = threads;
    mp.n_ctx = 1024;
    mp.backend = backend;
    mp.device = device;
    if (mllm_model_load(&model, model_path, &mp)) { fprintf(stderr, "error: %s\n", mllm_last_error()); return 1; }
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = n_seqs;
    cp.kv_blocks = n_seqs * ((1024 + 15) / 16);
    if (mllm_context_create(&ctx, model, &cp)) { fprintf(stderr, "error: %s\n", mllm_last_error()); return 1; }
    outs = (seq_out *)calloc((size_t)n_seqs, sizeof *outs);
    for (i = 0; i < n_seqs; i++) outs[i].dt.n_tokens = 1;   /* continuing the prompt's text */
    for (i = 0; i < n_seqs; i++) {
        const char *p = prompts[i % n_prompts];
        char buf[4096];
        mllm_token toks[1024];
        mllm_seq_params sp;
        int n;
        if (chat) {
            mllm_chat_message msg;
            msg.role = "user";
            msg.content = p;
            if (mllm_chat_format(model, &msg, 1, buf, sizeof buf) > 0) p = buf;
        }
        n = mllm_tokenize(mllm_model_vocab(model), p, strlen(p), toks, 1024, MLLM_TOKENIZE_ADD_SPECIAL | MLLM_TOKENIZE_PARSE_SPECIAL);
        memset(&sp, 0, sizeof sp);
        sp.max_tokens = max_tokens;
        sp.sampler.temperature = temp;
        sp.sampler.seed = (uint64_t)i + 1;
        if (n <= 0 || n > 1024 || mllm_seq_add(ctx, toks, n, &sp, &outs[i].id)) {
            fprintf(stderr, "error: prompt %d: %s\n", i, mllm_last_error());
            return 1;
        }
        prompt_tokens += n;
    }
    t0 = now();
    for (;;) {
        mllm_step_result r;
        char piece[512];
        if (mllm_step(ctx, &r)) { fprintf(stderr, "error: %s\n", mllm_last_error()); break; }
        for (i = 0; i < r.n_tokens; i++) {
            int s;
            for (s = 0; s < n_seqs; s++)
                if (outs[s].id == r.tokens[i].seq) break;
            if (s == n_seqs || r.tokens[i].token < 0) continue;
            outs[s].n_gen++;
            total++;
            if (!mllm_vocab_is_eog(mllm_model_vocab(model), r.tokens[i].token))
                append(&outs[s], piece, mllm_detok_push(mllm_model_vocab(model), &outs[s].dt, r.tokens[i].token, piece, sizeof piece));
        }
        if (!r.n_active) break;
    }
    t1 = now();
    for (i = 0; i < n_seqs; i++) {
        printf("--- [%d] %s\n%s\n", i, prompts[i % n_prompts], outs[i].text ? outs[i].text : "");
        free(outs[i].text);
    }
    fprintf(stderr, "%d sequences: %d prompt tokens, %d generated tokens in %.2f s: %.1f tok/s aggregate\n", n_seqs, prompt_tokens,
            total, t1 - t0, total / (t1 - t0));
    free(outs);
    mllm_context_free(ctx);
    mllm_model_free(model);
    return 0;
}
