/* Vocabulary load from a GGUF image (the seeds are the tiny models' metadata as vocabulary-only files);
   a vocabulary that loads must tokenize and detokenize a fixed text without error. */
/* part of fuzz.c */

static int fz_one_vocab(const uint8_t *in, size_t n) {
    mllm_vocab *v = NULL;
    unsigned char *copy = (unsigned char *)malloc(n ? n : 1);   /* exact size: reads past it are caught */
    memcpy(copy, in, n);
    if (fz_vocab_from_memory(&v, copy, n) == MLLM_OK) {
        static const char text[] = "Hello world! <|im_start|>user\n  caf\xc3\xa9 \xff\xfe 123";
        mllm_token toks[256];
        char out[4096];
        int k = mllm_tokenize(v, text, sizeof text - 1, toks, 256, MLLM_TOKENIZE_ADD_SPECIAL | MLLM_TOKENIZE_PARSE_SPECIAL);
        FZ_ASSERT(k >= 0 || k == MLLM_ERR_NOMEM);
        if (k > 256) k = 256;
        if (k > 0) FZ_ASSERT(mllm_detokenize(v, toks, k, out, sizeof out) >= 0);
        mllm_vocab_free(v);
    }
    free(copy);
    return 0;
}
