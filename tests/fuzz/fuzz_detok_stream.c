/* The streaming detokenizer: token ids (2 bytes each, modulo the vocabulary) pushed one by one, with a
   buffer size taken from the input; the emitted bytes plus the flush must equal mllm_detokenize of the
   same tokens, and no emitted chunk may end inside a UTF-8 character that later bytes complete. */
/* part of fuzz.c */

#define DS_N_VOCAB 2
static const char *ds_names[DS_N_VOCAB] = {"tokenizer/ggml-vocab-llama-spm.gguf", "tokenizer/ggml-vocab-qwen2.gguf"};
static mllm_vocab *ds_v[DS_N_VOCAB];

static int fz_init_detok_stream(void) {
    int i;
    for (i = 0; i < DS_N_VOCAB; i++) ds_v[i] = fz_vocab(ds_names[i]);
    return 0;
}

static int fz_one_detok_stream(const uint8_t *in, size_t n) {
    const mllm_vocab *v;
    mllm_detok st, before;
    mllm_token toks[512];
    char *ref, *stream, piece[512];
    int n_tok, i, need, len = 0, cont, tiny, got;
    if (n < 2 || n > 1 + 2 * 512) return 0;
    v = ds_v[in[0] % DS_N_VOCAB];
    cont = in[0] & 0x80;   /* continuation mode (n_tokens = 1): the first piece keeps its space */
    tiny = in[0] & 0x40;   /* first try each push with a buffer too small for it */
    n_tok = (int)((n - 1) / 2);
    for (i = 0; i < n_tok; i++) toks[i] = (mllm_token)((in[1 + 2 * i] | in[2 + 2 * i] << 8) % mllm_vocab_size(v));
    /* reference: mllm_detokenize, or in continuation mode the raw pieces one after another */
    if (!cont) {
        need = mllm_detokenize(v, toks, n_tok, NULL, 0);
        FZ_ASSERT(need >= 0);
        ref = (char *)malloc((size_t)need + 1);
        FZ_ASSERT(mllm_detokenize(v, toks, n_tok, ref, need) == need);
    } else {
        int k;
        ref = (char *)malloc((size_t)n_tok * (size_t)mllm_vocab_max_piece(v) + 1);
        for (need = 0, i = 0; i < n_tok; i++) {
            k = mllm_token_to_bytes(v, toks[i], ref + need, mllm_vocab_max_piece(v));
            FZ_ASSERT(k >= 0 && k <= mllm_vocab_max_piece(v));
            need += k;
        }
    }
    stream = (char *)malloc((size_t)need + 4);
    memset(&st, 0, sizeof st);
    if (cont) st.n_tokens = 1;
    for (i = 0; i < n_tok; i++) {
        if (tiny) {
            before = st;
            got = mllm_detok_push(v, &st, toks[i], NULL, 0);
            FZ_ASSERT(got == 0 || (got == MLLM_ERR_INVALID_ARG && !memcmp(&st, &before, sizeof st)));
            if (got == 0) continue;   /* it fit in nothing: consumed */
        }
        got = mllm_detok_push(v, &st, toks[i], piece, mllm_vocab_max_piece(v) + 3);
        FZ_ASSERT(got >= 0 && st.n_pending >= 0 && st.n_pending <= 3 && len + got <= need);
        memcpy(stream + len, piece, (size_t)got);
        len += got;
    }
    got = mllm_detok_flush(&st, piece, 3);
    FZ_ASSERT(got >= 0 && len + got == need);
    memcpy(stream + len, piece, (size_t)got);
    FZ_ASSERT(!memcmp(stream, ref, (size_t)need));
    free(ref);
    free(stream);
    return 0;
}
