/* tokenize: the token ids of a text file, on one line (as llama.cpp's llama-tokenize --ids would).
     tokenize -m VOCAB.gguf -f FILE [--raw] [--bench]
   VOCAB is any GGUF file with a tokenizer (a model or a vocabulary-only file).  By default BOS/EOS are
   added as the file says and special-token text (<|im_start|>...) becomes those tokens; --raw adds
   none and tokenizes special-token text as plain text.  --bench prints tokens/s and MB/s to stderr. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr,
            "usage: tokenize -m VOCAB.gguf -f FILE [--raw] [--bench]\n"
            "  prints the token ids of FILE on one line\n"
            "  --raw     no BOS/EOS, special-token text tokenized as plain text\n"
            "  --bench   tokenize repeatedly (at least 1 s) and print tokens/s and MB/s to stderr\n");
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    if (!f) return NULL;
    do {
        if (n == cap) {
            char *nb = (char *)realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    if (ferror(f)) { free(buf); buf = NULL; }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    const char *vocab_path = NULL, *file = NULL;
    int raw = 0, bench = 0, flags, n, i;
    size_t len = 0;
    char *text;
    mllm_vocab *vocab;
    mllm_token *toks = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) vocab_path = argv[++i];
        else if (!strcmp(a, "-f") && v) file = argv[++i];
        else if (!strcmp(a, "--raw")) raw = 1;
        else if (!strcmp(a, "--bench")) bench = 1;
        else { usage(); return 2; }
    }
    if (!vocab_path || !file) { usage(); return 2; }
    if (!(text = read_file(file, &len))) {
        fprintf(stderr, "error: cannot read %s\n", file);
        return 1;
    }
    if (mllm_vocab_load(&vocab, vocab_path) != MLLM_OK) {
        fprintf(stderr, "error: %s\n", mllm_last_error());
        free(text);
        return 1;
    }
    flags = raw ? 0 : MLLM_TOKENIZE_ADD_SPECIAL | MLLM_TOKENIZE_PARSE_SPECIAL;
    n = mllm_tokenize(vocab, text, len, NULL, 0, flags);   /* how many ids the text needs */
    if (n >= 0 && !(toks = (mllm_token *)malloc(sizeof(mllm_token) * (size_t)(n ? n : 1)))) n = MLLM_ERR_NOMEM;
    if (n > 0) n = mllm_tokenize(vocab, text, len, toks, n, flags);
    if (n < 0) {
        fprintf(stderr, "error: %s\n", n == MLLM_ERR_NOMEM ? "out of memory" : mllm_last_error());
        free(toks);
        free(text);
        mllm_vocab_free(vocab);
        return 1;
    }
    for (i = 0; i < n; i++) printf(i ? " %d" : "%d", toks[i]);
    printf("\n");
    if (bench) {
        int runs = 0;
        double t0 = now(), t;
        do {
            mllm_tokenize(vocab, text, len, toks, n, flags);
            runs++;
        } while ((t = now() - t0) < 1.0);
        fprintf(stderr, "%d tokens from %zu bytes, %d runs in %.2f s: %.0f tokens/s, %.2f MB/s\n", n, len, runs, t,
                (double)n * runs / t, (double)len * runs / t / 1e6);
    }
    free(toks);
    free(text);
    mllm_vocab_free(vocab);
    return 0;
}
