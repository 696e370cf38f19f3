/* Reference fixture generator against llama.cpp's libllama (the peer; see build_llamacpp.sh).
 *
 *   mllm-peer-ref MODEL PROMPT_FILE OUT_PREFIX [N_GEN=32] [N_THREADS=2]
 *
 * Tokenizes the prompt file's bytes with the model's own special-token settings (add_special and
 * parse_special true, like llama-simple), decodes the prompt in one llama_decode, then runs N_GEN
 * greedy (argmax) steps, decoding each chosen token singly.  Writes
 *   OUT_PREFIX.logits.bin   float32 logits of the last prompt token (little-endian on x86)
 *   OUT_PREFIX.json         the layout of ../shared/testdata/tiny/fixtures/x/x.json
 * Context: llama_context_default_params() except n_ctx = n_batch = n_ubatch = 512 and the threads,
 * so K/V cache F16 and flash_attn auto, as for the tiny fixtures. */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static char *read_file(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = (char *)malloc((size_t)*len + 1);
    if (fread(buf, 1, (size_t)*len, f) != (size_t)*len) { fclose(f); free(buf); return NULL; }
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static void json_string(FILE *f, const char *s, long n) {
    fputc('"', f);
    for (long i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f); /* UTF-8 passes through */
    }
    fputc('"', f);
}

/* Indices of the k largest logits, best first (ties: lowest id first, like an argmax scan). */
static void topk(const float *x, int n, int k, int *idx) {
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (idx[j - 1] < 0 || x[i] > x[idx[j - 1]])) j--;
        if (j == k) continue;
        memmove(idx + j + 1, idx + j, (size_t)(k - j - 1) * sizeof(int));
        idx[j] = i;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT_FILE OUT_PREFIX [N_GEN=32] [N_THREADS=2]\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *prefix = argv[3];
    int n_gen = argc > 4 ? atoi(argv[4]) : 32, n_threads = argc > 5 ? atoi(argv[5]) : 2;
    long plen;
    char *prompt = read_file(argv[2], &plen);
    if (!prompt) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }

    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    fprintf(stderr, "system: %s\n", llama_print_system_info());
    struct llama_model *model = llama_model_load_from_file(model_path, llama_model_default_params());
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);

    int n_prompt = -llama_tokenize(vocab, prompt, (int32_t)plen, NULL, 0, true, true);
    llama_token *toks = (llama_token *)malloc(sizeof(llama_token) * (size_t)(n_prompt + n_gen));
    if (llama_tokenize(vocab, prompt, (int32_t)plen, toks, n_prompt, true, true) != n_prompt) {
        fprintf(stderr, "tokenize failed\n");
        return 1;
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = n_threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx || n_prompt + n_gen > 512) { fprintf(stderr, "context setup failed\n"); return 1; }

    if (llama_decode(ctx, llama_batch_get_one(toks, n_prompt))) { fprintf(stderr, "decode failed\n"); return 1; }

    float *margin = (float *)malloc(sizeof(float) * (size_t)n_gen);
    int *eog = (int *)malloc(sizeof(int) * (size_t)n_gen);
    int top5[5];
    float top5v[5];
    char path[4096];
    for (int i = 0; i < n_gen; i++) {
        const float *lg = llama_get_logits_ith(ctx, -1);
        int best[5];
        topk(lg, n_vocab, 5, best);
        margin[i] = lg[best[0]] - lg[best[1]];
        if (i == 0) {
            for (int j = 0; j < 5; j++) { top5[j] = best[j]; top5v[j] = lg[best[j]]; }
            snprintf(path, sizeof path, "%s.logits.bin", prefix);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(lg, sizeof(float), (size_t)n_vocab, f) != (size_t)n_vocab) return 1;
            fclose(f);
        }
        llama_token t = best[0];
        toks[n_prompt + i] = t;
        eog[i] = llama_vocab_is_eog(vocab, t);
        if (i + 1 < n_gen && llama_decode(ctx, llama_batch_get_one(&toks[n_prompt + i], 1))) {
            fprintf(stderr, "decode failed at step %d\n", i);
            return 1;
        }
    }

    snprintf(path, sizeof path, "%s.json", prefix);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    const char *base = strrchr(model_path, '/');
    fprintf(f, "{\n  \"model\": \"%s\",\n  \"prompt\": ", base ? base + 1 : model_path);
    json_string(f, prompt, plen);
    fprintf(f, ",\n  \"n_vocab\": %d,\n  \"n_threads\": %d,\n  \"flash_attn\": \"auto\",\n", n_vocab, n_threads);
    fprintf(f, "  \"prompt_tokens\": [");
    for (int i = 0; i < n_prompt; i++) fprintf(f, "%s%d", i ? ", " : "", toks[i]);
    fprintf(f, "],\n  \"greedy_tokens\": [");
    for (int i = 0; i < n_gen; i++) fprintf(f, "%s%d", i ? ", " : "", toks[n_prompt + i]);
    fprintf(f, "],\n  \"greedy_eog\": [");
    for (int i = 0; i < n_gen; i++) fprintf(f, "%s%s", i ? ", " : "", eog[i] ? "true" : "false");
    fprintf(f, "],\n  \"greedy_top1_top2_margin\": [");
    for (int i = 0; i < n_gen; i++) fprintf(f, "%s%.4g", i ? ", " : "", margin[i]);
    fprintf(f, "],\n  \"top5_prompt_logits\": [");
    for (int j = 0; j < 5; j++) fprintf(f, "%s[%d, %.9g]", j ? ", " : "", top5[j], top5v[j]);
    fprintf(f, "]\n}\n");
    fclose(f);

    /* The continuation as text, for a check against llama-simple. */
    for (int i = 0; i < n_gen; i++) {
        char buf[256];
        int n = llama_token_to_piece(vocab, toks[n_prompt + i], buf, sizeof buf, 0, true);
        if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    }
    fputc('\n', stdout);

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(prompt); free(toks); free(margin); free(eog);
    return 0;
}
