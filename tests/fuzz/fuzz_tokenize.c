/* Tokenize / detokenize round trips on the tokenizer test vocabularies (byte-level BPE and SentencePiece
   with byte tokens).  Input: a flags byte (vocabulary, parse-special), then the text.  Checks: the size
   query equals the count, every id is in range, and valid UTF-8 comes back byte for byte (for
   SentencePiece: unless it contains U+2581, which the tokenizer reads as a space). */
/* part of fuzz.c */

#define TK_N_VOCAB 3
static const char *tk_names[TK_N_VOCAB] = {"tokenizer/ggml-vocab-llama-spm.gguf", "tokenizer/ggml-vocab-gpt-2.gguf",
                                        "tokenizer/ggml-vocab-qwen2.gguf"};
static mllm_vocab *tk_v[TK_N_VOCAB];

static int fz_init_tokenize(void) {
    int i;
    for (i = 0; i < TK_N_VOCAB; i++) tk_v[i] = fz_vocab(tk_names[i]);
    return 0;
}

static int fz_valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i], cp, len, k;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

static int fz_one_tokenize(const uint8_t *in, size_t n) {
    const mllm_vocab *v;
    const char *text;
    int flags, k, k2, i, spm;
    mllm_token *toks;
    char *out;
    if (n < 1 || n > 4096) return 0;
    v = tk_v[(in[0] & 3) % TK_N_VOCAB];
    spm = (in[0] & 3) % TK_N_VOCAB == 0;
    flags = in[0] & 4 ? MLLM_TOKENIZE_PARSE_SPECIAL : 0;
    text = (const char *)in + 1;
    n--;
    k = mllm_tokenize(v, text, n, NULL, 0, flags);
    FZ_ASSERT(k >= 0);
    toks = (mllm_token *)malloc(sizeof(mllm_token) * (size_t)(k ? k : 1));
    k2 = mllm_tokenize(v, text, n, toks, k, flags);
    FZ_ASSERT(k2 == k);
    for (i = 0; i < k; i++) FZ_ASSERT(toks[i] >= 0 && toks[i] < mllm_vocab_size(v));
    k2 = mllm_detokenize(v, toks, k, NULL, 0);
    FZ_ASSERT(k2 >= 0);
    out = (char *)malloc((size_t)k2 + 1);
    FZ_ASSERT(mllm_detokenize(v, toks, k, out, k2) == k2);
    /* control tokens (parse-special) have no text; without them, valid UTF-8 round-trips */
    if (!(flags & MLLM_TOKENIZE_PARSE_SPECIAL) && fz_valid_utf8(in + 1, n) &&
        !(spm && memmem(text, n, "\xe2\x96\x81", 3)))
        FZ_ASSERT((size_t)k2 == n && !memcmp(out, text, n));
    free(out);
    free(toks);
    return 0;
}
