/* Shared by the libFuzzer targets (tests/fuzz/README.md): the implementation, file reading, and model /
   vocabulary loading from memory through the same steps mllm_model_load / mllm_vocab_load take. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Path of ../shared/testdata (MLLM_TESTDATA overrides), as the tests use it. */
static const char *fz_testdata(void) {
    const char *e = getenv("MLLM_TESTDATA");
    return e ? e : "../shared/testdata";
}

static unsigned char *fz_read(const char *rel, size_t *len) {
    char path[1024];
    FILE *f;
    unsigned char *buf;
    long n;
    snprintf(path, sizeof path, "%s/%s", fz_testdata(), rel);
    if (!(f = fopen(path, "rb"))) { fprintf(stderr, "fuzz: cannot open %s\n", path); abort(); }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static mllm_vocab *fz_vocab(const char *rel) {
    char path[1024];
    mllm_vocab *v = NULL;
    snprintf(path, sizeof path, "%s/%s", fz_testdata(), rel);
    if (mllm_vocab_load(&v, path) != MLLM_OK) { fprintf(stderr, "fuzz: %s: %s\n", path, mllm_last_error()); abort(); }
    return v;
}

/* A model from a GGUF image in memory (1 thread, n_ctx 32); mirrors mllm_model_load. */
static mllm_status fz_model_from_memory(mllm_model **out, const void *data, size_t size) {
    mllm_model *m = MLLM__CAST(mllm_model *, mllm__calloc(1, sizeof *m));
    mllm_status st;
    *out = NULL;
    if (!m) return MLLM_ERR_NOMEM;
    m->n_threads = 1;
    if ((st = mllm__gguf_parse(&m->gguf, data, size)) || (st = mllm__load_model_meta(m)) || (st = mllm__load_weights(m))) {
        mllm_model_free(m);
        return st;
    }
    if (m->hp.head_dim > 512) { mllm_model_free(m); return MLLM_ERR_UNSUPPORTED; }
    m->n_ctx = 32;
    if ((st = mllm__pool_create(&m->pool, 1))) { mllm_model_free(m); return st; }
    *out = m;
    return MLLM_OK;
}

/* A vocabulary from a GGUF image in memory; mirrors mllm_vocab_load. */
static mllm_status fz_vocab_from_memory(mllm_vocab **out, const void *data, size_t size) {
    mllm__gguf g;
    mllm_vocab *v = MLLM__CAST(mllm_vocab *, mllm__calloc(1, sizeof *v));
    mllm_status st;
    *out = NULL;
    if (!v) return MLLM_ERR_NOMEM;
    memset(&g, 0, sizeof g);
    if ((st = mllm__gguf_parse(&g, data, size)) == MLLM_OK) st = mllm__vocab_init(v, &g);
    mllm__gguf_close(&g);
    if (st != MLLM_OK) { MLLM_FREE(v); return st; }   /* vocab_init cleans up after itself */
    *out = v;
    return MLLM_OK;
}

#define FZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz assertion failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)
