/* GGUF model load, structure-aware: the input is a model's metadata (header, key/values, tensor infos:
   everything before the tensor data), whose first byte picks which tiny model's tensor data follows it.
   The mutations so land in the header, metadata and tensor infos while the data stays a real model's.
   A model that loads must also tokenize, chat-format and run two steps. */
/* part of fuzz.c */

#define GM_N_DATA 2
static const char *fz_models[GM_N_DATA] = {"tiny/models/tiny-llama-Q8_0.gguf", "tiny/models/tiny-qwen3moe-Q8_0.gguf"};
#define MAX_META (1u << 20)
static unsigned char *fz_img[GM_N_DATA];   /* [MAX_META bytes of room | tensor data] */
static size_t fz_data_size[GM_N_DATA];

static int fz_init_gguf_model(void) {
    int i;
    for (i = 0; i < GM_N_DATA; i++) {
        size_t n;
        unsigned char *file = fz_read(fz_models[i], &n);
        mllm__gguf g;
        memset(&g, 0, sizeof g);
        if (mllm__gguf_parse(&g, file, n) != MLLM_OK) abort();
        fz_data_size[i] = n - g.data_offset;
        if (posix_memalign((void **)&fz_img[i], 64, MAX_META + fz_data_size[i])) abort();
        memcpy(fz_img[i] + MAX_META, file + g.data_offset, fz_data_size[i]);
        mllm__gguf_close(&g);
        free(file);
    }
    return 0;
}

static int fz_sink(const char *piece, int len, mllm_token token, void *user) {
    (void)piece; (void)token;
    *(int *)user += len;
    return 0;
}

static int fz_one_gguf_model(const uint8_t *in, size_t n) {
    size_t meta, padded;
    unsigned char *base;
    mllm_model *m = NULL;
    int which;
    if (n < 1 || n - 1 > MAX_META - 64) return 0;
    which = in[0] % GM_N_DATA;
    meta = n - 1;
    padded = (meta + 31) & ~(size_t)31;   /* the data starts at the default 32-byte alignment */
    base = fz_img[which] + MAX_META - padded;
    memcpy(base, in + 1, meta);
    memset(base + meta, 0, padded - meta);
    if (fz_model_from_memory(&m, base, padded + fz_data_size[which]) == MLLM_OK) {
        mllm_generate_params gp;
        mllm_chat_message msg = {"user", "hi"};
        char chat[256];
        int bytes = 0;
        mllm_status st;
        memset(&gp, 0, sizeof gp);
        gp.max_tokens = 2;
        gp.ignore_eog = 1;
        st = mllm_generate(m, "Hello world", &gp, fz_sink, &bytes);
        FZ_ASSERT(st <= 0);
        FZ_ASSERT(mllm_chat_format(m, &msg, 1, chat, sizeof chat) != 0);
        mllm_model_free(m);
    }
    return 0;
}
