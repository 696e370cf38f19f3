/* metalllm.h - run large language models from GGUF files, on Apple GPUs through Metal or on any CPU.
   Single-header C library, no dependencies.  See the end of this file for the license (MIT / public domain).

   DO THIS in exactly one C or C++ file, before including the header:

       #define METALLLM_IMPLEMENTATION
       #include "metalllm.h"

   Other files include it without the define.  It compiles as C11 and as C++ (gcc, clang).

   CONFIGURATION (define before the implementation include)
       MLLM_MALLOC(sz), MLLM_REALLOC(p,sz), MLLM_FREE(p)   memory functions (default: stdlib)
       MLLM_ASSERT(x)        internal invariants only; bad input never asserts (default: assert)
       MLLM_NO_METAL         leave out the Metal backend even on Apple platforms
       MLLM_NO_THREADS       no thread pool (single-threaded CPU backend)
       MLLM_NO_SIMD          scalar CPU kernels only (for testing the fallback)

   USAGE
       mllm_model *model;
       mllm_model_params mp = {0};                 // zero means defaults everywhere
       mp.n_threads = 4;
       if (mllm_model_load(&model, "SmolLM2-135M-Instruct.Q4_1.gguf", &mp) != MLLM_OK) {
           fprintf(stderr, "%s\n", mllm_last_error());
           return 1;
       }
       mllm_generate_params gp = {0};
       gp.max_tokens = 64;
       gp.sampler.temperature = 0.7f;
       gp.sampler.seed = 42;
       mllm_generate(model, "The capital of France is", &gp, print_piece, NULL);  // streams text
       mllm_model_free(model);

   ERRORS
       Every fallible call returns mllm_status (0 = MLLM_OK, negative = error).  The message of the last
       error on the calling thread is mllm_last_error() (thread-local; the only global state besides the
       optional log callback set with mllm_set_log).  The library never prints by itself.

   LICENSE: see the end of this file.
*/
#ifndef METALLLM_H
#define METALLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status, errors, log */
typedef enum mllm_status {
    MLLM_OK = 0,
    MLLM_ERR_IO = -1,            /* file could not be opened, read or mapped */
    MLLM_ERR_FORMAT = -2,        /* malformed or truncated GGUF, inconsistent metadata */
    MLLM_ERR_UNSUPPORTED = -3,   /* valid file, but an architecture/type/feature we do not run */
    MLLM_ERR_NOMEM = -4,         /* allocation failed */
    MLLM_ERR_INVALID_ARG = -5,   /* caller error: NULL, out-of-range token, bad parameter */
    MLLM_ERR_CONTEXT_FULL = -6,  /* a sequence reached its context limit */
    MLLM_ERR_KV_FULL = -7,       /* the KV block pool has no free block */
    MLLM_ERR_BACKEND = -8        /* the GPU backend failed */
} mllm_status;

const char *mllm_last_error(void);              /* message of the last error on this thread */
const char *mllm_status_string(mllm_status s);

typedef enum mllm_log_level { MLLM_LOG_ERROR, MLLM_LOG_WARN, MLLM_LOG_INFO, MLLM_LOG_DEBUG } mllm_log_level;
typedef void (*mllm_log_fn)(mllm_log_level level, const char *msg, void *user);
void mllm_set_log(mllm_log_fn fn, void *user);  /* process-wide; NULL = silent (default) */

typedef int32_t mllm_token;

/* ---------------------------------------------------------------- vocabulary and tokenizer */
typedef struct mllm_vocab mllm_vocab;

enum {
    MLLM_TOKENIZE_ADD_SPECIAL = 1,   /* add BOS/EOS as the GGUF's add_bos_token/add_eos_token say */
    MLLM_TOKENIZE_PARSE_SPECIAL = 2  /* match control/user-defined token text as whole tokens */
};

/* Load only the tokenizer of a GGUF file (works on vocabulary-only files). */
mllm_status mllm_vocab_load(mllm_vocab **out, const char *path);
void mllm_vocab_free(mllm_vocab *vocab);

/* Tokenize len bytes of text (any bytes; invalid UTF-8 is handled).  Writes at most max_tokens ids and
   returns how many the whole text needs (so a second call with a larger buffer gets them all), or a
   negative mllm_status.  Matches llama.cpp's llama_tokenize exactly, including that user-defined
   tokens are matched in the text even without MLLM_TOKENIZE_PARSE_SPECIAL (control tokens only with
   it).  Byte-level BPE cannot represent invalid UTF-8: such bytes become U+FFFD, as in llama.cpp;
   SentencePiece vocabularies with byte tokens keep every byte. */
int mllm_tokenize(const mllm_vocab *vocab, const char *text, size_t len, mllm_token *tokens,
                  int max_tokens, int flags);

/* Text of one token as raw bytes (SentencePiece "▁" becomes a space, byte tokens become their byte).
   Returns the byte count (may exceed cap: then nothing is written) or a negative mllm_status. */
int mllm_token_to_bytes(const mllm_vocab *vocab, mllm_token token, char *buf, int cap);

/* Streaming detokenizer: zero-initialize, feed tokens one at a time; it emits only complete UTF-8
   characters and holds a partial one until its remaining bytes arrive.  Returns bytes written to out;
   cap >= mllm_vocab_max_piece(vocab) + 3 always suffices (a smaller buffer that cannot take the piece
   returns MLLM_ERR_INVALID_ARG with nothing consumed).  mllm_detok_flush emits held bytes as they are.
   Control tokens (BOS, EOS, <|im_end|>...) produce no text; user-defined tokens produce their text.
   SentencePiece vocabularies drop the leading space of the first piece with text (the tokenizer added
   it); to stream a continuation of earlier text (e.g. generated tokens after a prompt), set
   n_tokens = 1 before the first push so that space is kept. */
typedef struct mllm_detok {
    unsigned char pending[4];
    int n_pending;
    int n_tokens;                    /* tokens with text seen so far */
} mllm_detok;
int mllm_detok_push(const mllm_vocab *vocab, mllm_detok *state, mllm_token token, char *out, int cap);
int mllm_detok_flush(mllm_detok *state, char *out, int cap);

/* Whole-sequence detokenize (the concatenated pieces, first SentencePiece space dropped, as a fresh
   mllm_detok would emit them); returns bytes needed (writes only if <= cap) or negative status.
   Unlike llama_detokenize it never "cleans up" spaces before punctuation: the bytes are exact. */
int mllm_detokenize(const mllm_vocab *vocab, const mllm_token *tokens, int n, char *out, int cap);

int mllm_vocab_size(const mllm_vocab *vocab);
int mllm_vocab_max_piece(const mllm_vocab *vocab);    /* most bytes one token's text can have */
mllm_token mllm_vocab_bos(const mllm_vocab *vocab);   /* -1 when the vocabulary has none */
mllm_token mllm_vocab_eos(const mllm_vocab *vocab);
int mllm_vocab_is_eog(const mllm_vocab *vocab, mllm_token t);   /* end of generation (eos, eot, ...) */
/* Find a token by its exact text (e.g. "<|im_end|>"); -1 if absent. */
mllm_token mllm_vocab_find(const mllm_vocab *vocab, const char *text);

/* ---------------------------------------------------------------- model */
typedef struct mllm_model mllm_model;

typedef enum mllm_backend { MLLM_BACKEND_AUTO = 0, MLLM_BACKEND_CPU, MLLM_BACKEND_METAL } mllm_backend;

/* Return nonzero to cancel loading. */
typedef int (*mllm_progress_fn)(float fraction, void *user);

typedef struct mllm_model_params {
    int n_threads;                 /* 0: all online cores */
    mllm_backend backend;          /* AUTO: Metal where available, else CPU */
    int n_ctx;                     /* context per sequence; 0: min(model's training context, 4096) */
    mllm_progress_fn progress;
    void *progress_user;
} mllm_model_params;

mllm_status mllm_model_load(mllm_model **out, const char *path, const mllm_model_params *params);
void mllm_model_free(mllm_model *model);
const mllm_vocab *mllm_model_vocab(const mllm_model *model);

typedef struct mllm_model_info {
    const char *arch;              /* "llama", "qwen2", "qwen3", "qwen3moe" */
    const char *name;              /* general.name or "" */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    int n_expert, n_expert_used;   /* 0 for dense models */
    const char *chat_template;     /* tokenizer.chat_template or NULL */
    size_t weight_bytes;
} mllm_model_info;
void mllm_model_get_info(const mllm_model *model, mllm_model_info *info);

/* ---------------------------------------------------------------- sampling */
typedef struct mllm_sampler_params {
    float temperature;             /* 0: greedy (argmax) */
    int top_k;                     /* 0: off */
    float top_p;                   /* 0 or 1: off */
    float min_p;                   /* 0: off */
    float repeat_penalty;          /* 0 or 1: off */
    int penalty_last_n;            /* window for the three penalties; 0: 64 */
    float frequency_penalty;
    float presence_penalty;
    uint64_t seed;                 /* same seed, same tokens: on every run and any thread count */
} mllm_sampler_params;

/* ---------------------------------------------------------------- context, sequences, batched steps
   A context owns a paged KV cache (a pool of fixed-size blocks) and serves many sequences at once.
   Each mllm_step advances every active sequence: prompt chunks for new ones, one token for the rest,
   in one batched forward pass. */
typedef struct mllm_context mllm_context;
typedef int32_t mllm_seq_id;

typedef enum mllm_kv_policy {
    MLLM_KV_FAIL_SEQ = 0           /* a sequence that cannot grow finishes with MLLM_ERR_KV_FULL */
} mllm_kv_policy;

typedef struct mllm_context_params {
    int n_seq_max;                 /* 0: 64 */
    int kv_block_tokens;           /* tokens per KV block; 0: 16 */
    int kv_blocks;                 /* pool size in blocks; 0: enough for n_seq_max... see docs */
    int n_batch;                   /* max tokens in one step; 0: 512 */
    mllm_kv_policy kv_policy;
} mllm_context_params;

mllm_status mllm_context_create(mllm_context **out, mllm_model *model, const mllm_context_params *p);
void mllm_context_free(mllm_context *ctx);

typedef struct mllm_seq_params {
    mllm_sampler_params sampler;
    int max_tokens;                /* stop after this many generated tokens; 0: until EOG or context */
    int ignore_eog;                /* keep generating past end-of-generation tokens */
} mllm_seq_params;

/* Add a sequence with its prompt (token ids).  The prompt is processed by the following steps. */
mllm_status mllm_seq_add(mllm_context *ctx, const mllm_token *prompt, int n_prompt,
                         const mllm_seq_params *p, mllm_seq_id *out);
/* Fork: the new sequence shares src's KV blocks (copy-on-write) and history; its own sampler. */
mllm_status mllm_seq_fork(mllm_context *ctx, mllm_seq_id src, const mllm_seq_params *p,
                          mllm_seq_id *out);
mllm_status mllm_seq_remove(mllm_context *ctx, mllm_seq_id id);

typedef struct mllm_step_token {
    mllm_seq_id seq;
    mllm_token token;              /* -1 when the sequence finished without a token */
    int finished;                  /* 1: this sequence is done (EOG, max_tokens, context, error) */
    mllm_status status;            /* why it finished: MLLM_OK for EOG/max_tokens, else the error */
} mllm_step_token;

typedef struct mllm_step_result {
    const mllm_step_token *tokens; /* valid until the next step; one entry per sequence that sampled */
    int n_tokens;
    int n_active;                  /* sequences still running after this step */
} mllm_step_result;

mllm_status mllm_step(mllm_context *ctx, mllm_step_result *result);

/* Logits of the last sampled position of a sequence (n_vocab floats), valid until the next step. */
const float *mllm_seq_logits(const mllm_context *ctx, mllm_seq_id id);

/* ---------------------------------------------------------------- one-call generation */
typedef struct mllm_generate_params {
    mllm_sampler_params sampler;
    int max_tokens;                /* 0: 128 */
    int ignore_eog;
    int add_special;               /* 0: follow the GGUF's add_bos/add_eos; -1: add none */
    int parse_special;             /* 1: match special-token text in the prompt (default 1); -1: off */
} mllm_generate_params;

/* Called with each complete-UTF-8 piece of generated text; return nonzero to stop. */
typedef int (*mllm_piece_fn)(const char *piece, int len, mllm_token token, void *user);

typedef struct mllm_generate_stats {
    int n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
} mllm_generate_stats;

mllm_status mllm_generate(mllm_model *model, const char *prompt, const mllm_generate_params *p,
                          mllm_piece_fn on_piece, void *user);
mllm_status mllm_generate_ex(mllm_model *model, const char *prompt, const mllm_generate_params *p,
                             mllm_piece_fn on_piece, void *user, mllm_generate_stats *stats);

#ifdef __cplusplus
}
#endif
#endif /* METALLLM_H */

/* ================================================================================================ */
/*                                        IMPLEMENTATION                                            */
/* ================================================================================================ */
#ifdef METALLLM_IMPLEMENTATION
#ifndef METALLLM_IMPLEMENTATION_DONE
#define METALLLM_IMPLEMENTATION_DONE

/* ============================================================ SECTION: config and platform */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <math.h>
#include <float.h>
#include <limits.h>

#ifndef MLLM_MALLOC
#define MLLM_MALLOC(sz) malloc(sz)
#define MLLM_REALLOC(p, sz) realloc(p, sz)
#define MLLM_FREE(p) free(p)
#endif
#ifndef MLLM_ASSERT
#include <assert.h>
#define MLLM_ASSERT(x) assert(x)
#endif

#if defined(__APPLE__) && !defined(MLLM_NO_METAL)
#define MLLM__HAVE_METAL 1
#else
#define MLLM__HAVE_METAL 0
#endif

#if !defined(MLLM_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define MLLM__AVX2 1
#include <immintrin.h>
#elif !defined(MLLM_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#define MLLM__NEON 1
#include <arm_neon.h>
#endif

#ifdef __cplusplus
#define MLLM__TLS thread_local
#define MLLM__CAST(T, x) ((T)(x))
#else
#define MLLM__TLS _Thread_local
#define MLLM__CAST(T, x) (x)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MLLM__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define MLLM__UNUSED __attribute__((unused))
#else
#define MLLM__PRINTF(a, b)
#define MLLM__UNUSED
#endif

/* ============================================================ SECTION: utilities (errors, arena, threads) */
static MLLM__TLS char mllm__err_msg[512];
static mllm_log_fn mllm__log_fn;
static void *mllm__log_user;

void mllm_set_log(mllm_log_fn fn, void *user) { mllm__log_fn = fn; mllm__log_user = user; }
const char *mllm_last_error(void) { return mllm__err_msg; }

const char *mllm_status_string(mllm_status s) {
    switch (s) {
    case MLLM_OK: return "ok";
    case MLLM_ERR_IO: return "i/o error";
    case MLLM_ERR_FORMAT: return "malformed file";
    case MLLM_ERR_UNSUPPORTED: return "unsupported";
    case MLLM_ERR_NOMEM: return "out of memory";
    case MLLM_ERR_INVALID_ARG: return "invalid argument";
    case MLLM_ERR_CONTEXT_FULL: return "context full";
    case MLLM_ERR_KV_FULL: return "KV cache pool exhausted";
    case MLLM_ERR_BACKEND: return "backend error";
    }
    return "unknown status";
}

/* Record an error message for mllm_last_error() and return the status, so callers can write
   `return mllm__fail(MLLM_ERR_FORMAT, "bad %s", what);`. */
static MLLM__PRINTF(2, 3) mllm_status mllm__fail(mllm_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mllm__err_msg, sizeof mllm__err_msg, fmt, ap);
    va_end(ap);
    if (mllm__log_fn) mllm__log_fn(MLLM_LOG_ERROR, mllm__err_msg, mllm__log_user);
    return st;
}

static MLLM__PRINTF(2, 3) void mllm__log(mllm_log_level level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    if (!mllm__log_fn) return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    mllm__log_fn(level, buf, mllm__log_user);
}

/* Allocation helpers: zeroed, overflow-checked. NULL on failure (callers report MLLM_ERR_NOMEM). */
static void *mllm__calloc(size_t n, size_t size) {
    void *p;
    size_t bytes;
    if (size && n > SIZE_MAX / size) return NULL;
    bytes = n * size;
    p = MLLM_MALLOC(bytes ? bytes : 1);
    if (p) memset(p, 0, bytes);
    return p;
}

/* ============================================================ SECTION: GGUF reader */
/* GGUF v2/v3 over a read-only mmap.  mllm__gguf_parse validates everything before it returns OK
   (counts, string lengths, nested array sizes, dims, tensor offsets/sizes against the file), so the
   accessors below never read outside the mapping. */
enum mllm__gguf_vtype {
    MLLM__GGUF_U8 = 0, MLLM__GGUF_I8, MLLM__GGUF_U16, MLLM__GGUF_I16, MLLM__GGUF_U32, MLLM__GGUF_I32,
    MLLM__GGUF_F32, MLLM__GGUF_BOOL, MLLM__GGUF_STRING, MLLM__GGUF_ARRAY, MLLM__GGUF_U64,
    MLLM__GGUF_I64, MLLM__GGUF_F64, MLLM__GGUF_NTYPES
};

typedef struct mllm__str { const char *p; size_t n; } mllm__str;   /* not NUL-terminated */

typedef struct mllm__gguf_kv {
    mllm__str key;
    uint32_t type;                 /* mllm__gguf_vtype */
    uint32_t arr_type;             /* element type when type == ARRAY */
    uint64_t arr_n;                /* element count when type == ARRAY */
    const uint8_t *val;            /* the value (for arrays: the first element) inside the mapping */
} mllm__gguf_kv;

typedef struct mllm__gguf_tensor {
    mllm__str name;
    int n_dims;
    int64_t ne[4];                 /* ne[0] is the row length (contiguous), unused dims are 1 */
    uint32_t type;                 /* mllm__type */
    uint64_t offset;               /* relative to the data section */
    const void *data;              /* inside the mapping */
    size_t nbytes;
} mllm__gguf_tensor;

typedef struct mllm__gguf {
    const uint8_t *base;           /* whole file */
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    mllm__gguf_kv *kv;
    mllm__gguf_tensor *tensors;
    size_t alignment;
    size_t data_offset;            /* start of the tensor data section */
    void *map_handle;              /* platform mapping (NULL when parsed from caller memory) */
} mllm__gguf;

static mllm_status mllm__gguf_open(mllm__gguf *g, const char *path);         /* mmap + parse */
static mllm_status mllm__gguf_parse(mllm__gguf *g, const void *data, size_t size); /* caller memory */
static void mllm__gguf_close(mllm__gguf *g);
static const mllm__gguf_kv *mllm__gguf_find(const mllm__gguf *g, const char *key);
/* Typed getters: return 1 and set *out when the key exists with a compatible scalar type (any integer
   type that fits for ints; F32/F64 for floats), else 0. */
static int mllm__gguf_get_int(const mllm__gguf *g, const char *key, int64_t *out);
static int mllm__gguf_get_f32(const mllm__gguf *g, const char *key, float *out);
static int mllm__gguf_get_bool(const mllm__gguf *g, const char *key, int *out);
static int mllm__gguf_get_str(const mllm__gguf *g, const char *key, mllm__str *out);
/* Array access: element i of a numeric array as int64/float (0 if out of range or not numeric);
   string arrays are walked with mllm__gguf_arr_strings (fills n entries; arrays validated at parse). */
static int64_t mllm__gguf_arr_int(const mllm__gguf_kv *kv, uint64_t i);
static float mllm__gguf_arr_f32(const mllm__gguf_kv *kv, uint64_t i);
static mllm_status mllm__gguf_arr_strings(const mllm__gguf_kv *kv, mllm__str *out /* arr_n entries */);
static const mllm__gguf_tensor *mllm__gguf_tensor_find(const mllm__gguf *g, const char *name);
static int mllm__str_eq(mllm__str a, const char *b);


/* ============================================================ SECTION: weight types (dequantization, dot products) */
/* Block formats are those of GGUF (ggml).  Matrix-vector products quantize the activation row once to
   the weight type's partner format (vec_dot_type: Q8_0, Q8_1, Q8_K, F16, BF16 or F32) and then run an
   integer/low-precision dot product per weight row, as llama.cpp does, which keeps results within the
   fixtures' rounding. */
typedef enum mllm__type {
    MLLM__F32 = 0, MLLM__F16 = 1, MLLM__Q4_0 = 2, MLLM__Q4_1 = 3, MLLM__Q5_0 = 6, MLLM__Q5_1 = 7,
    MLLM__Q8_0 = 8, MLLM__Q8_1 = 9, MLLM__Q2_K = 10, MLLM__Q3_K = 11, MLLM__Q4_K = 12, MLLM__Q5_K = 13,
    MLLM__Q6_K = 14, MLLM__Q8_K = 15, MLLM__BF16 = 30, MLLM__NTYPES = 40
} mllm__type;

typedef struct mllm__type_traits {
    const char *name;              /* NULL: type id unknown or unsupported */
    int block;                     /* elements per block */
    int bytes;                     /* bytes per block */
    int vec_dot_type;              /* activation format for dot products (mllm__type) */
} mllm__type_traits;

static const mllm__type_traits *mllm__traits(uint32_t type);   /* NULL when unsupported */
static size_t mllm__row_bytes(uint32_t type, int64_t n);         /* n must be a block multiple */
static float mllm__f16_to_f32(uint16_t h);
static uint16_t mllm__f32_to_f16(float f);
static float mllm__bf16_to_f32(uint16_t h);
static uint16_t mllm__f32_to_bf16(float f);
static void mllm__dequant_row(uint32_t type, const void *src, float *dst, int64_t n);
/* Quantize n floats into type (needed for every vec_dot_type; n a multiple of its block). */
static void mllm__quant_row(uint32_t type, const float *src, void *dst, int64_t n);
/* Dot product of one weight row (type) with one activation row already in vec_dot_type. */
static float mllm__vec_dot(uint32_t type, int64_t n, const void *w, const void *x);
/* Same weight row against nx activation rows (x_stride bytes apart): out[j] = dot(w, x_j).  Lets
   prefill reuse each loaded weight block across tokens; nx <= MLLM__DOT_MAX_NX. */
#define MLLM__DOT_MAX_NX 4
static void mllm__vec_dot_nx(uint32_t type, int64_t n, const void *w, const void *x, size_t x_stride,
                             int nx, float *out);

#define MLLM__QK 32     /* elements per block of the legacy formats */
#define MLLM__QK_K 256  /* elements per super-block of the K-quants */

/* A switch over a plain table rather than designated initializers, so the header compiles as C++. */
static const mllm__type_traits *mllm__traits(uint32_t type) {
    static const mllm__type_traits t[] = {
        /* name, elements per block, bytes per block, vec_dot_type */
        {"F32", 1, 4, MLLM__F32},
        {"F16", 1, 2, MLLM__F16},
        {"Q4_0", MLLM__QK, 2 + 16, MLLM__Q8_0},
        {"Q4_1", MLLM__QK, 4 + 16, MLLM__Q8_1},
        {"Q5_0", MLLM__QK, 2 + 4 + 16, MLLM__Q8_0},
        {"Q5_1", MLLM__QK, 4 + 4 + 16, MLLM__Q8_1},
        {"Q8_0", MLLM__QK, 2 + 32, MLLM__Q8_0},
        {"Q8_1", MLLM__QK, 4 + 32, MLLM__Q8_1},
        {"Q4_K", MLLM__QK_K, 4 + 12 + 128, MLLM__Q8_K},
        {"Q5_K", MLLM__QK_K, 4 + 12 + 32 + 128, MLLM__Q8_K},
        {"Q6_K", MLLM__QK_K, 128 + 64 + 16 + 2, MLLM__Q8_K},
        {"Q8_K", MLLM__QK_K, 4 + 256 + 32, MLLM__Q8_K},
        {"BF16", 1, 2, MLLM__BF16},
    };
    switch (type) {
    case MLLM__F32: return &t[0];
    case MLLM__F16: return &t[1];
    case MLLM__Q4_0: return &t[2];
    case MLLM__Q4_1: return &t[3];
    case MLLM__Q5_0: return &t[4];
    case MLLM__Q5_1: return &t[5];
    case MLLM__Q8_0: return &t[6];
    case MLLM__Q8_1: return &t[7];
    case MLLM__Q4_K: return &t[8];
    case MLLM__Q5_K: return &t[9];
    case MLLM__Q6_K: return &t[10];
    case MLLM__Q8_K: return &t[11];
    case MLLM__BF16: return &t[12];
    default: return NULL;
    }
}

static size_t mllm__row_bytes(uint32_t type, int64_t n) {
    const mllm__type_traits *t = mllm__traits(type);
    return t ? (size_t)(n / t->block) * (size_t)t->bytes : 0;
}


/* ============================================================ SECTION: tokenizer */
/* Two tokenizer models, read from GGUF metadata, reproducing llama.cpp's tokenization exactly:
   - "llama" (SentencePiece BPE): spaces become U+2581, then adjacent pieces merge by best score while
     the merged text is a token; pieces that never form a token fall back to <0xNN> byte tokens.
   - "gpt2" (byte-level BPE): the text is first split into words by a pre-tokenizer (a fixed regex per
     tokenizer.ggml.pre, implemented here as small hand-written matchers), each word's bytes are mapped
     to GPT-2's printable code points, and pairs merge by rank (lowest first).
   Special tokens are cut out of the text first (longest token first), as llama.cpp does: user-defined
   tokens always, control tokens only when the caller asks to parse special text.  The vocabulary copies
   everything it needs out of the GGUF mapping, so the file may be closed after mllm__vocab_init. */

/* Unicode properties of a code point, as bits (the generator writes the same values). */
enum { MLLM__U_L = 1, MLLM__U_N = 2, MLLM__U_P = 4, MLLM__U_M = 8, MLLM__U_WS = 16 };

/* BEGIN GENERATED UNICODE TABLES */
/* Generated by gen/unicode_tables.py from Debian unicode-data (UnicodeData.txt, PropList.txt).
   Do not edit: run `python3 gen/unicode_tables.py`.  Entry = (first code point << 8) | flags. */
static const uint32_t mllm__ucd_runs[2094] = {
    0x0, 0x910, 0xe00, 0x2010, 0x2104, 0x2400, 0x2504, 0x2b00,
    0x2c04, 0x3002, 0x3a04, 0x3c00, 0x3f04, 0x4101, 0x5b04, 0x5e00,
    0x5f04, 0x6000, 0x6101, 0x7b04, 0x7c00, 0x7d04, 0x7e00, 0x8510,
    0x8600, 0xa010, 0xa104, 0xa200, 0xa704, 0xa800, 0xaa01, 0xab04,
    0xac00, 0xb202, 0xb400, 0xb501, 0xb604, 0xb800, 0xb902, 0xba01,
    0xbb04, 0xbc02, 0xbf04, 0xc001, 0xd700, 0xd801, 0xf700, 0xf801,
    0x2c200, 0x2c601, 0x2d200, 0x2e001, 0x2e500, 0x2ec01, 0x2ed00, 0x2ee01,
    0x2ef00, 0x30008, 0x37001, 0x37500, 0x37601, 0x37800, 0x37a01, 0x37e04,
    0x37f01, 0x38000, 0x38601, 0x38704, 0x38801, 0x38b00, 0x38c01, 0x38d00,
    0x38e01, 0x3a200, 0x3a301, 0x3f600, 0x3f701, 0x48200, 0x48308, 0x48a01,
    0x53000, 0x53101, 0x55700, 0x55901, 0x55a04, 0x56001, 0x58904, 0x58b00,
    0x59108, 0x5be04, 0x5bf08, 0x5c004, 0x5c108, 0x5c304, 0x5c408, 0x5c604,
    0x5c708, 0x5c800, 0x5d001, 0x5eb00, 0x5ef01, 0x5f304, 0x5f500, 0x60904,
    0x60b00, 0x60c04, 0x60e00, 0x61008, 0x61b04, 0x61c00, 0x61d04, 0x62001,
    0x64b08, 0x66002, 0x66a04, 0x66e01, 0x67008, 0x67101, 0x6d404, 0x6d501,
    0x6d608, 0x6dd00, 0x6df08, 0x6e501, 0x6e708, 0x6e900, 0x6ea08, 0x6ee01,
    0x6f002, 0x6fa01, 0x6fd00, 0x6ff01, 0x70004, 0x70e00, 0x71001, 0x71108,
    0x71201, 0x73008, 0x74b00, 0x74d01, 0x7a608, 0x7b101, 0x7b200, 0x7c002,
    0x7ca01, 0x7eb08, 0x7f401, 0x7f600, 0x7f704, 0x7fa01, 0x7fb00, 0x7fd08,
    0x7fe00, 0x80001, 0x81608, 0x81a01, 0x81b08, 0x82401, 0x82508, 0x82801,
    0x82908, 0x82e00, 0x83004, 0x83f00, 0x84001, 0x85908, 0x85c00, 0x85e04,
    0x85f00, 0x86001, 0x86b00, 0x87001, 0x88800, 0x88901, 0x88f00, 0x89808,
    0x8a001, 0x8ca08, 0x8e200, 0x8e308, 0x90401, 0x93a08, 0x93d01, 0x93e08,
    0x95001, 0x95108, 0x95801, 0x96208, 0x96404, 0x96602, 0x97004, 0x97101,
    0x98108, 0x98400, 0x98501, 0x98d00, 0x98f01, 0x99100, 0x99301, 0x9a900,
    0x9aa01, 0x9b100, 0x9b201, 0x9b300, 0x9b601, 0x9ba00, 0x9bc08, 0x9bd01,
    0x9be08, 0x9c500, 0x9c708, 0x9c900, 0x9cb08, 0x9ce01, 0x9cf00, 0x9d708,
    0x9d800, 0x9dc01, 0x9de00, 0x9df01, 0x9e208, 0x9e400, 0x9e602, 0x9f001,
    0x9f200, 0x9f402, 0x9fa00, 0x9fc01, 0x9fd04, 0x9fe08, 0x9ff00, 0xa0108,
    0xa0400, 0xa0501, 0xa0b00, 0xa0f01, 0xa1100, 0xa1301, 0xa2900, 0xa2a01,
    0xa3100, 0xa3201, 0xa3400, 0xa3501, 0xa3700, 0xa3801, 0xa3a00, 0xa3c08,
    0xa3d00, 0xa3e08, 0xa4300, 0xa4708, 0xa4900, 0xa4b08, 0xa4e00, 0xa5108,
    0xa5200, 0xa5901, 0xa5d00, 0xa5e01, 0xa5f00, 0xa6602, 0xa7008, 0xa7201,
    0xa7508, 0xa7604, 0xa7700, 0xa8108, 0xa8400, 0xa8501, 0xa8e00, 0xa8f01,
    0xa9200, 0xa9301, 0xaa900, 0xaaa01, 0xab100, 0xab201, 0xab400, 0xab501,
    0xaba00, 0xabc08, 0xabd01, 0xabe08, 0xac600, 0xac708, 0xaca00, 0xacb08,
    0xace00, 0xad001, 0xad100, 0xae001, 0xae208, 0xae400, 0xae602, 0xaf004,
    0xaf100, 0xaf901, 0xafa08, 0xb0000, 0xb0108, 0xb0400, 0xb0501, 0xb0d00,
    0xb0f01, 0xb1100, 0xb1301, 0xb2900, 0xb2a01, 0xb3100, 0xb3201, 0xb3400,
    0xb3501, 0xb3a00, 0xb3c08, 0xb3d01, 0xb3e08, 0xb4500, 0xb4708, 0xb4900,
    0xb4b08, 0xb4e00, 0xb5508, 0xb5800, 0xb5c01, 0xb5e00, 0xb5f01, 0xb6208,
    0xb6400, 0xb6602, 0xb7000, 0xb7101, 0xb7202, 0xb7800, 0xb8208, 0xb8301,
    0xb8400, 0xb8501, 0xb8b00, 0xb8e01, 0xb9100, 0xb9201, 0xb9600, 0xb9901,
    0xb9b00, 0xb9c01, 0xb9d00, 0xb9e01, 0xba000, 0xba301, 0xba500, 0xba801,
    0xbab00, 0xbae01, 0xbba00, 0xbbe08, 0xbc300, 0xbc608, 0xbc900, 0xbca08,
    0xbce00, 0xbd001, 0xbd100, 0xbd708, 0xbd800, 0xbe602, 0xbf300, 0xc0008,
    0xc0501, 0xc0d00, 0xc0e01, 0xc1100, 0xc1201, 0xc2900, 0xc2a01, 0xc3a00,
    0xc3c08, 0xc3d01, 0xc3e08, 0xc4500, 0xc4608, 0xc4900, 0xc4a08, 0xc4e00,
    0xc5508, 0xc5700, 0xc5801, 0xc5b00, 0xc5d01, 0xc5e00, 0xc6001, 0xc6208,
    0xc6400, 0xc6602, 0xc7000, 0xc7704, 0xc7802, 0xc7f00, 0xc8001, 0xc8108,
    0xc8404, 0xc8501, 0xc8d00, 0xc8e01, 0xc9100, 0xc9201, 0xca900, 0xcaa01,
    0xcb400, 0xcb501, 0xcba00, 0xcbc08, 0xcbd01, 0xcbe08, 0xcc500, 0xcc608,
    0xcc900, 0xcca08, 0xcce00, 0xcd508, 0xcd700, 0xcdd01, 0xcdf00, 0xce001,
    0xce208, 0xce400, 0xce602, 0xcf000, 0xcf101, 0xcf308, 0xcf400, 0xd0008,
    0xd0401, 0xd0d00, 0xd0e01, 0xd1100, 0xd1201, 0xd3b08, 0xd3d01, 0xd3e08,
    0xd4500, 0xd4608, 0xd4900, 0xd4a08, 0xd4e01, 0xd4f00, 0xd5401, 0xd5708,
    0xd5802, 0xd5f01, 0xd6208, 0xd6400, 0xd6602, 0xd7900, 0xd7a01, 0xd8000,
    0xd8108, 0xd8400, 0xd8501, 0xd9700, 0xd9a01, 0xdb200, 0xdb301, 0xdbc00,
    0xdbd01, 0xdbe00, 0xdc001, 0xdc700, 0xdca08, 0xdcb00, 0xdcf08, 0xdd500,
    0xdd608, 0xdd700, 0xdd808, 0xde000, 0xde602, 0xdf000, 0xdf208, 0xdf404,
    0xdf500, 0xe0101, 0xe3108, 0xe3201, 0xe3408, 0xe3b00, 0xe4001, 0xe4708,
    0xe4f04, 0xe5002, 0xe5a04, 0xe5c00, 0xe8101, 0xe8300, 0xe8401, 0xe8500,
    0xe8601, 0xe8b00, 0xe8c01, 0xea400, 0xea501, 0xea600, 0xea701, 0xeb108,
    0xeb201, 0xeb408, 0xebd01, 0xebe00, 0xec001, 0xec500, 0xec601, 0xec700,
    0xec808, 0xecf00, 0xed002, 0xeda00, 0xedc01, 0xee000, 0xf0001, 0xf0100,
    0xf0404, 0xf1300, 0xf1404, 0xf1500, 0xf1808, 0xf1a00, 0xf2002, 0xf3400,
    0xf3508, 0xf3600, 0xf3708, 0xf3800, 0xf3908, 0xf3a04, 0xf3e08, 0xf4001,
    0xf4800, 0xf4901, 0xf6d00, 0xf7108, 0xf8504, 0xf8608, 0xf8801, 0xf8d08,
    0xf9800, 0xf9908, 0xfbd00, 0xfc608, 0xfc700, 0xfd004, 0xfd500, 0xfd904,
    0xfdb00, 0x100001, 0x102b08, 0x103f01, 0x104002, 0x104a04, 0x105001, 0x105608,
    0x105a01, 0x105e08, 0x106101, 0x106208, 0x106501, 0x106708, 0x106e01, 0x107108,
    0x107501, 0x108208, 0x108e01, 0x108f08, 0x109002, 0x109a08, 0x109e00, 0x10a001,
    0x10c600, 0x10c701, 0x10c800, 0x10cd01, 0x10ce00, 0x10d001, 0x10fb04, 0x10fc01,
    0x124900, 0x124a01, 0x124e00, 0x125001, 0x125700, 0x125801, 0x125900, 0x125a01,
    0x125e00, 0x126001, 0x128900, 0x128a01, 0x128e00, 0x129001, 0x12b100, 0x12b201,
    0x12b600, 0x12b801, 0x12bf00, 0x12c001, 0x12c100, 0x12c201, 0x12c600, 0x12c801,
    0x12d700, 0x12d801, 0x131100, 0x131201, 0x131600, 0x131801, 0x135b00, 0x135d08,
    0x136004, 0x136902, 0x137d00, 0x138001, 0x139000, 0x13a001, 0x13f600, 0x13f801,
    0x13fe00, 0x140004, 0x140101, 0x166d00, 0x166e04, 0x166f01, 0x168010, 0x168101,
    0x169b04, 0x169d00, 0x16a001, 0x16eb04, 0x16ee02, 0x16f101, 0x16f900, 0x170001,
    0x171208, 0x171600, 0x171f01, 0x173208, 0x173504, 0x173700, 0x174001, 0x175208,
    0x175400, 0x176001, 0x176d00, 0x176e01, 0x177100, 0x177208, 0x177400, 0x178001,
    0x17b408, 0x17d404, 0x17d701, 0x17d804, 0x17db00, 0x17dc01, 0x17dd08, 0x17de00,
    0x17e002, 0x17ea00, 0x17f002, 0x17fa00, 0x180004, 0x180b08, 0x180e00, 0x180f08,
    0x181002, 0x181a00, 0x182001, 0x187900, 0x188001, 0x188508, 0x188701, 0x18a908,
    0x18aa01, 0x18ab00, 0x18b001, 0x18f600, 0x190001, 0x191f00, 0x192008, 0x192c00,
    0x193008, 0x193c00, 0x194404, 0x194602, 0x195001, 0x196e00, 0x197001, 0x197500,
    0x198001, 0x19ac00, 0x19b001, 0x19ca00, 0x19d002, 0x19db00, 0x1a0001, 0x1a1708,
    0x1a1c00, 0x1a1e04, 0x1a2001, 0x1a5508, 0x1a5f00, 0x1a6008, 0x1a7d00, 0x1a7f08,
    0x1a8002, 0x1a8a00, 0x1a9002, 0x1a9a00, 0x1aa004, 0x1aa701, 0x1aa804, 0x1aae00,
    0x1ab008, 0x1acf00, 0x1b0008, 0x1b0501, 0x1b3408, 0x1b4501, 0x1b4d00, 0x1b5002,
    0x1b5a04, 0x1b6100, 0x1b6b08, 0x1b7400, 0x1b7d04, 0x1b7f00, 0x1b8008, 0x1b8301,
    0x1ba108, 0x1bae01, 0x1bb002, 0x1bba01, 0x1be608, 0x1bf400, 0x1bfc04, 0x1c0001,
    0x1c2408, 0x1c3800, 0x1c3b04, 0x1c4002, 0x1c4a00, 0x1c4d01, 0x1c5002, 0x1c5a01,
    0x1c7e04, 0x1c8001, 0x1c8900, 0x1c9001, 0x1cbb00, 0x1cbd01, 0x1cc004, 0x1cc800,
    0x1cd008, 0x1cd304, 0x1cd408, 0x1ce901, 0x1ced08, 0x1cee01, 0x1cf408, 0x1cf501,
    0x1cf708, 0x1cfa01, 0x1cfb00, 0x1d0001, 0x1dc008, 0x1e0001, 0x1f1600, 0x1f1801,
    0x1f1e00, 0x1f2001, 0x1f4600, 0x1f4801, 0x1f4e00, 0x1f5001, 0x1f5800, 0x1f5901,
    0x1f5a00, 0x1f5b01, 0x1f5c00, 0x1f5d01, 0x1f5e00, 0x1f5f01, 0x1f7e00, 0x1f8001,
    0x1fb500, 0x1fb601, 0x1fbd00, 0x1fbe01, 0x1fbf00, 0x1fc201, 0x1fc500, 0x1fc601,
    0x1fcd00, 0x1fd001, 0x1fd400, 0x1fd601, 0x1fdc00, 0x1fe001, 0x1fed00, 0x1ff201,
    0x1ff500, 0x1ff601, 0x1ffd00, 0x200010, 0x200b00, 0x201004, 0x202810, 0x202a00,
    0x202f10, 0x203004, 0x204400, 0x204504, 0x205200, 0x205304, 0x205f10, 0x206000,
    0x207002, 0x207101, 0x207200, 0x207402, 0x207a00, 0x207d04, 0x207f01, 0x208002,
    0x208a00, 0x208d04, 0x208f00, 0x209001, 0x209d00, 0x20d008, 0x20f100, 0x210201,
    0x210300, 0x210701, 0x210800, 0x210a01, 0x211400, 0x211501, 0x211600, 0x211901,
    0x211e00, 0x212401, 0x212500, 0x212601, 0x212700, 0x212801, 0x212900, 0x212a01,
    0x212e00, 0x212f01, 0x213a00, 0x213c01, 0x214000, 0x214501, 0x214a00, 0x214e01,
    0x214f00, 0x215002, 0x218301, 0x218502, 0x218a00, 0x230804, 0x230c00, 0x232904,
    0x232b00, 0x246002, 0x249c00, 0x24ea02, 0x250000, 0x276804, 0x277602, 0x279400,
    0x27c504, 0x27c700, 0x27e604, 0x27f000, 0x298304, 0x299900, 0x29d804, 0x29dc00,
    0x29fc04, 0x29fe00, 0x2c0001, 0x2ce500, 0x2ceb01, 0x2cef08, 0x2cf201, 0x2cf400,
    0x2cf904, 0x2cfd02, 0x2cfe04, 0x2d0001, 0x2d2600, 0x2d2701, 0x2d2800, 0x2d2d01,
    0x2d2e00, 0x2d3001, 0x2d6800, 0x2d6f01, 0x2d7004, 0x2d7100, 0x2d7f08, 0x2d8001,
    0x2d9700, 0x2da001, 0x2da700, 0x2da801, 0x2daf00, 0x2db001, 0x2db700, 0x2db801,
    0x2dbf00, 0x2dc001, 0x2dc700, 0x2dc801, 0x2dcf00, 0x2dd001, 0x2dd700, 0x2dd801,
    0x2ddf00, 0x2de008, 0x2e0004, 0x2e2f01, 0x2e3004, 0x2e5000, 0x2e5204, 0x2e5e00,
    0x300010, 0x300104, 0x300400, 0x300501, 0x300702, 0x300804, 0x301200, 0x301404,
    0x302000, 0x302102, 0x302a08, 0x303004, 0x303101, 0x303600, 0x303802, 0x303b01,
    0x303d04, 0x303e00, 0x304101, 0x309700, 0x309908, 0x309b00, 0x309d01, 0x30a004,
    0x30a101, 0x30fb04, 0x30fc01, 0x310000, 0x310501, 0x313000, 0x313101, 0x318f00,
    0x319202, 0x319600, 0x31a001, 0x31c000, 0x31f001, 0x320000, 0x322002, 0x322a00,
    0x324802, 0x325000, 0x325102, 0x326000, 0x328002, 0x328a00, 0x32b102, 0x32c000,
    0x340001, 0x4dc000, 0x4e0001, 0xa48d00, 0xa4d001, 0xa4fe04, 0xa50001, 0xa60d04,
    0xa61001, 0xa62002, 0xa62a01, 0xa62c00, 0xa64001, 0xa66f08, 0xa67304, 0xa67408,
    0xa67e04, 0xa67f01, 0xa69e08, 0xa6a001, 0xa6e602, 0xa6f008, 0xa6f204, 0xa6f800,
    0xa71701, 0xa72000, 0xa72201, 0xa78900, 0xa78b01, 0xa7cb00, 0xa7d001, 0xa7d200,
    0xa7d301, 0xa7d400, 0xa7d501, 0xa7da00, 0xa7f201, 0xa80208, 0xa80301, 0xa80608,
    0xa80701, 0xa80b08, 0xa80c01, 0xa82308, 0xa82800, 0xa82c08, 0xa82d00, 0xa83002,
    0xa83600, 0xa84001, 0xa87404, 0xa87800, 0xa88008, 0xa88201, 0xa8b408, 0xa8c600,
    0xa8ce04, 0xa8d002, 0xa8da00, 0xa8e008, 0xa8f201, 0xa8f804, 0xa8fb01, 0xa8fc04,
    0xa8fd01, 0xa8ff08, 0xa90002, 0xa90a01, 0xa92608, 0xa92e04, 0xa93001, 0xa94708,
    0xa95400, 0xa95f04, 0xa96001, 0xa97d00, 0xa98008, 0xa98401, 0xa9b308, 0xa9c104,
    0xa9ce00, 0xa9cf01, 0xa9d002, 0xa9da00, 0xa9de04, 0xa9e001, 0xa9e508, 0xa9e601,
    0xa9f002, 0xa9fa01, 0xa9ff00, 0xaa0001, 0xaa2908, 0xaa3700, 0xaa4001, 0xaa4308,
    0xaa4401, 0xaa4c08, 0xaa4e00, 0xaa5002, 0xaa5a00, 0xaa5c04, 0xaa6001, 0xaa7700,
    0xaa7a01, 0xaa7b08, 0xaa7e01, 0xaab008, 0xaab101, 0xaab208, 0xaab501, 0xaab708,
    0xaab901, 0xaabe08, 0xaac001, 0xaac108, 0xaac201, 0xaac300, 0xaadb01, 0xaade04,
    0xaae001, 0xaaeb08, 0xaaf004, 0xaaf201, 0xaaf508, 0xaaf700, 0xab0101, 0xab0700,
    0xab0901, 0xab0f00, 0xab1101, 0xab1700, 0xab2001, 0xab2700, 0xab2801, 0xab2f00,
    0xab3001, 0xab5b00, 0xab5c01, 0xab6a00, 0xab7001, 0xabe308, 0xabeb04, 0xabec08,
    0xabee00, 0xabf002, 0xabfa00, 0xac0001, 0xd7a400, 0xd7b001, 0xd7c700, 0xd7cb01,
    0xd7fc00, 0xf90001, 0xfa6e00, 0xfa7001, 0xfada00, 0xfb0001, 0xfb0700, 0xfb1301,
    0xfb1800, 0xfb1d01, 0xfb1e08, 0xfb1f01, 0xfb2900, 0xfb2a01, 0xfb3700, 0xfb3801,
    0xfb3d00, 0xfb3e01, 0xfb3f00, 0xfb4001, 0xfb4200, 0xfb4301, 0xfb4500, 0xfb4601,
    0xfbb200, 0xfbd301, 0xfd3e04, 0xfd4000, 0xfd5001, 0xfd9000, 0xfd9201, 0xfdc800,
    0xfdf001, 0xfdfc00, 0xfe0008, 0xfe1004, 0xfe1a00, 0xfe2008, 0xfe3004, 0xfe5300,
    0xfe5404, 0xfe6200, 0xfe6304, 0xfe6400, 0xfe6804, 0xfe6900, 0xfe6a04, 0xfe6c00,
    0xfe7001, 0xfe7500, 0xfe7601, 0xfefd00, 0xff0104, 0xff0400, 0xff0504, 0xff0b00,
    0xff0c04, 0xff1002, 0xff1a04, 0xff1c00, 0xff1f04, 0xff2101, 0xff3b04, 0xff3e00,
    0xff3f04, 0xff4000, 0xff4101, 0xff5b04, 0xff5c00, 0xff5d04, 0xff5e00, 0xff5f04,
    0xff6601, 0xffbf00, 0xffc201, 0xffc800, 0xffca01, 0xffd000, 0xffd201, 0xffd800,
    0xffda01, 0xffdd00, 0x1000001, 0x1000c00, 0x1000d01, 0x1002700, 0x1002801, 0x1003b00,
    0x1003c01, 0x1003e00, 0x1003f01, 0x1004e00, 0x1005001, 0x1005e00, 0x1008001, 0x100fb00,
    0x1010004, 0x1010300, 0x1010702, 0x1013400, 0x1014002, 0x1017900, 0x1018a02, 0x1018c00,
    0x101fd08, 0x101fe00, 0x1028001, 0x1029d00, 0x102a001, 0x102d100, 0x102e008, 0x102e102,
    0x102fc00, 0x1030001, 0x1032002, 0x1032400, 0x1032d01, 0x1034102, 0x1034201, 0x1034a02,
    0x1034b00, 0x1035001, 0x1037608, 0x1037b00, 0x1038001, 0x1039e00, 0x1039f04, 0x103a001,
    0x103c400, 0x103c801, 0x103d004, 0x103d102, 0x103d600, 0x1040001, 0x1049e00, 0x104a002,
    0x104aa00, 0x104b001, 0x104d400, 0x104d801, 0x104fc00, 0x1050001, 0x1052800, 0x1053001,
    0x1056400, 0x1056f04, 0x1057001, 0x1057b00, 0x1057c01, 0x1058b00, 0x1058c01, 0x1059300,
    0x1059401, 0x1059600, 0x1059701, 0x105a200, 0x105a301, 0x105b200, 0x105b301, 0x105ba00,
    0x105bb01, 0x105bd00, 0x1060001, 0x1073700, 0x1074001, 0x1075600, 0x1076001, 0x1076800,
    0x1078001, 0x1078600, 0x1078701, 0x107b100, 0x107b201, 0x107bb00, 0x1080001, 0x1080600,
    0x1080801, 0x1080900, 0x1080a01, 0x1083600, 0x1083701, 0x1083900, 0x1083c01, 0x1083d00,
    0x1083f01, 0x1085600, 0x1085704, 0x1085802, 0x1086001, 0x1087700, 0x1087902, 0x1088001,
    0x1089f00, 0x108a702, 0x108b000, 0x108e001, 0x108f300, 0x108f401, 0x108f600, 0x108fb02,
    0x1090001, 0x1091602, 0x1091c00, 0x1091f04, 0x1092001, 0x1093a00, 0x1093f04, 0x1094000,
    0x1098001, 0x109b800, 0x109bc02, 0x109be01, 0x109c002, 0x109d000, 0x109d202, 0x10a0001,
    0x10a0108, 0x10a0400, 0x10a0508, 0x10a0700, 0x10a0c08, 0x10a1001, 0x10a1400, 0x10a1501,
    0x10a1800, 0x10a1901, 0x10a3600, 0x10a3808, 0x10a3b00, 0x10a3f08, 0x10a4002, 0x10a4900,
    0x10a5004, 0x10a5900, 0x10a6001, 0x10a7d02, 0x10a7f04, 0x10a8001, 0x10a9d02, 0x10aa000,
    0x10ac001, 0x10ac800, 0x10ac901, 0x10ae508, 0x10ae700, 0x10aeb02, 0x10af004, 0x10af700,
    0x10b0001, 0x10b3600, 0x10b3904, 0x10b4001, 0x10b5600, 0x10b5802, 0x10b6001, 0x10b7300,
    0x10b7802, 0x10b8001, 0x10b9200, 0x10b9904, 0x10b9d00, 0x10ba902, 0x10bb000, 0x10c0001,
    0x10c4900, 0x10c8001, 0x10cb300, 0x10cc001, 0x10cf300, 0x10cfa02, 0x10d0001, 0x10d2408,
    0x10d2800, 0x10d3002, 0x10d3a00, 0x10e6002, 0x10e7f00, 0x10e8001, 0x10eaa00, 0x10eab08,
    0x10ead04, 0x10eae00, 0x10eb001, 0x10eb200, 0x10efd08, 0x10f0001, 0x10f1d02, 0x10f2701,
    0x10f2800, 0x10f3001, 0x10f4608, 0x10f5102, 0x10f5504, 0x10f5a00, 0x10f7001, 0x10f8208,
    0x10f8604, 0x10f8a00, 0x10fb001, 0x10fc502, 0x10fcc00, 0x10fe001, 0x10ff700, 0x1100008,
    0x1100301, 0x1103808, 0x1104704, 0x1104e00, 0x1105202, 0x1107008, 0x1107101, 0x1107308,
    0x1107501, 0x1107600, 0x1107f08, 0x1108301, 0x110b008, 0x110bb04, 0x110bd00, 0x110be04,
    0x110c208, 0x110c300, 0x110d001, 0x110e900, 0x110f002, 0x110fa00, 0x1110008, 0x1110301,
    0x1112708, 0x1113500, 0x1113602, 0x1114004, 0x1114401, 0x1114508, 0x1114701, 0x1114800,
    0x1115001, 0x1117308, 0x1117404, 0x1117601, 0x1117700, 0x1118008, 0x1118301, 0x111b308,
    0x111c101, 0x111c504, 0x111c908, 0x111cd04, 0x111ce08, 0x111d002, 0x111da01, 0x111db04,
    0x111dc01, 0x111dd04, 0x111e000, 0x111e102, 0x111f500, 0x1120001, 0x1121200, 0x1121301,
    0x1122c08, 0x1123804, 0x1123e08, 0x1123f01, 0x1124108, 0x1124200, 0x1128001, 0x1128700,
    0x1128801, 0x1128900, 0x1128a01, 0x1128e00, 0x1128f01, 0x1129e00, 0x1129f01, 0x112a904,
    0x112aa00, 0x112b001, 0x112df08, 0x112eb00, 0x112f002, 0x112fa00, 0x1130008, 0x1130400,
    0x1130501, 0x1130d00, 0x1130f01, 0x1131100, 0x1131301, 0x1132900, 0x1132a01, 0x1133100,
    0x1133201, 0x1133400, 0x1133501, 0x1133a00, 0x1133b08, 0x1133d01, 0x1133e08, 0x1134500,
    0x1134708, 0x1134900, 0x1134b08, 0x1134e00, 0x1135001, 0x1135100, 0x1135708, 0x1135800,
    0x1135d01, 0x1136208, 0x1136400, 0x1136608, 0x1136d00, 0x1137008, 0x1137500, 0x1140001,
    0x1143508, 0x1144701, 0x1144b04, 0x1145002, 0x1145a04, 0x1145c00, 0x1145d04, 0x1145e08,
    0x1145f01, 0x1146200, 0x1148001, 0x114b008, 0x114c401, 0x114c604, 0x114c701, 0x114c800,
    0x114d002, 0x114da00, 0x1158001, 0x115af08, 0x115b600, 0x115b808, 0x115c104, 0x115d801,
    0x115dc08, 0x115de00, 0x1160001, 0x1163008, 0x1164104, 0x1164401, 0x1164500, 0x1165002,
    0x1165a00, 0x1166004, 0x1166d00, 0x1168001, 0x116ab08, 0x116b801, 0x116b904, 0x116ba00,
    0x116c002, 0x116ca00, 0x1170001, 0x1171b00, 0x1171d08, 0x1172c00, 0x1173002, 0x1173c04,
    0x1173f00, 0x1174001, 0x1174700, 0x1180001, 0x1182c08, 0x1183b04, 0x1183c00, 0x118a001,
    0x118e002, 0x118f300, 0x118ff01, 0x1190700, 0x1190901, 0x1190a00, 0x1190c01, 0x1191400,
    0x1191501, 0x1191700, 0x1191801, 0x1193008, 0x1193600, 0x1193708, 0x1193900, 0x1193b08,
    0x1193f01, 0x1194008, 0x1194101, 0x1194208, 0x1194404, 0x1194700, 0x1195002, 0x1195a00,
    0x119a001, 0x119a800, 0x119aa01, 0x119d108, 0x119d800, 0x119da08, 0x119e101, 0x119e204,
    0x119e301, 0x119e408, 0x119e500, 0x11a0001, 0x11a0108, 0x11a0b01, 0x11a3308, 0x11a3a01,
    0x11a3b08, 0x11a3f04, 0x11a4708, 0x11a4800, 0x11a5001, 0x11a5108, 0x11a5c01, 0x11a8a08,
    0x11a9a04, 0x11a9d01, 0x11a9e04, 0x11aa300, 0x11ab001, 0x11af900, 0x11b0004, 0x11b0a00,
    0x11c0001, 0x11c0900, 0x11c0a01, 0x11c2f08, 0x11c3700, 0x11c3808, 0x11c4001, 0x11c4104,
    0x11c4600, 0x11c5002, 0x11c6d00, 0x11c7004, 0x11c7201, 0x11c9000, 0x11c9208, 0x11ca800,
    0x11ca908, 0x11cb700, 0x11d0001, 0x11d0700, 0x11d0801, 0x11d0a00, 0x11d0b01, 0x11d3108,
    0x11d3700, 0x11d3a08, 0x11d3b00, 0x11d3c08, 0x11d3e00, 0x11d3f08, 0x11d4601, 0x11d4708,
    0x11d4800, 0x11d5002, 0x11d5a00, 0x11d6001, 0x11d6600, 0x11d6701, 0x11d6900, 0x11d6a01,
    0x11d8a08, 0x11d8f00, 0x11d9008, 0x11d9200, 0x11d9308, 0x11d9801, 0x11d9900, 0x11da002,
    0x11daa00, 0x11ee001, 0x11ef308, 0x11ef704, 0x11ef900, 0x11f0008, 0x11f0201, 0x11f0308,
    0x11f0401, 0x11f1100, 0x11f1201, 0x11f3408, 0x11f3b00, 0x11f3e08, 0x11f4304, 0x11f5002,
    0x11f5a00, 0x11fb001, 0x11fb100, 0x11fc002, 0x11fd500, 0x11fff04, 0x1200001, 0x1239a00,
    0x1240002, 0x1246f00, 0x1247004, 0x1247500, 0x1248001, 0x1254400, 0x12f9001, 0x12ff104,
    0x12ff300, 0x1300001, 0x1343000, 0x1344008, 0x1344101, 0x1344708, 0x1345600, 0x1440001,
    0x1464700, 0x1680001, 0x16a3900, 0x16a4001, 0x16a5f00, 0x16a6002, 0x16a6a00, 0x16a6e04,
    0x16a7001, 0x16abf00, 0x16ac002, 0x16aca00, 0x16ad001, 0x16aee00, 0x16af008, 0x16af504,
    0x16af600, 0x16b0001, 0x16b3008, 0x16b3704, 0x16b3c00, 0x16b4001, 0x16b4404, 0x16b4500,
    0x16b5002, 0x16b5a00, 0x16b5b02, 0x16b6200, 0x16b6301, 0x16b7800, 0x16b7d01, 0x16b9000,
    0x16e4001, 0x16e8002, 0x16e9704, 0x16e9b00, 0x16f0001, 0x16f4b00, 0x16f4f08, 0x16f5001,
    0x16f5108, 0x16f8800, 0x16f8f08, 0x16f9301, 0x16fa000, 0x16fe001, 0x16fe204, 0x16fe301,
    0x16fe408, 0x16fe500, 0x16ff008, 0x16ff200, 0x1700001, 0x187f800, 0x1880001, 0x18cd600,
    0x18d0001, 0x18d0900, 0x1aff001, 0x1aff400, 0x1aff501, 0x1affc00, 0x1affd01, 0x1afff00,
    0x1b00001, 0x1b12300, 0x1b13201, 0x1b13300, 0x1b15001, 0x1b15300, 0x1b15501, 0x1b15600,
    0x1b16401, 0x1b16800, 0x1b17001, 0x1b2fc00, 0x1bc0001, 0x1bc6b00, 0x1bc7001, 0x1bc7d00,
    0x1bc8001, 0x1bc8900, 0x1bc9001, 0x1bc9a00, 0x1bc9d08, 0x1bc9f04, 0x1bca000, 0x1cf0008,
    0x1cf2e00, 0x1cf3008, 0x1cf4700, 0x1d16508, 0x1d16a00, 0x1d16d08, 0x1d17300, 0x1d17b08,
    0x1d18300, 0x1d18508, 0x1d18c00, 0x1d1aa08, 0x1d1ae00, 0x1d24208, 0x1d24500, 0x1d2c002,
    0x1d2d400, 0x1d2e002, 0x1d2f400, 0x1d36002, 0x1d37900, 0x1d40001, 0x1d45500, 0x1d45601,
    0x1d49d00, 0x1d49e01, 0x1d4a000, 0x1d4a201, 0x1d4a300, 0x1d4a501, 0x1d4a700, 0x1d4a901,
    0x1d4ad00, 0x1d4ae01, 0x1d4ba00, 0x1d4bb01, 0x1d4bc00, 0x1d4bd01, 0x1d4c400, 0x1d4c501,
    0x1d50600, 0x1d50701, 0x1d50b00, 0x1d50d01, 0x1d51500, 0x1d51601, 0x1d51d00, 0x1d51e01,
    0x1d53a00, 0x1d53b01, 0x1d53f00, 0x1d54001, 0x1d54500, 0x1d54601, 0x1d54700, 0x1d54a01,
    0x1d55100, 0x1d55201, 0x1d6a600, 0x1d6a801, 0x1d6c100, 0x1d6c201, 0x1d6db00, 0x1d6dc01,
    0x1d6fb00, 0x1d6fc01, 0x1d71500, 0x1d71601, 0x1d73500, 0x1d73601, 0x1d74f00, 0x1d75001,
    0x1d76f00, 0x1d77001, 0x1d78900, 0x1d78a01, 0x1d7a900, 0x1d7aa01, 0x1d7c300, 0x1d7c401,
    0x1d7cc00, 0x1d7ce02, 0x1d80000, 0x1da0008, 0x1da3700, 0x1da3b08, 0x1da6d00, 0x1da7508,
    0x1da7600, 0x1da8408, 0x1da8500, 0x1da8704, 0x1da8c00, 0x1da9b08, 0x1daa000, 0x1daa108,
    0x1dab000, 0x1df0001, 0x1df1f00, 0x1df2501, 0x1df2b00, 0x1e00008, 0x1e00700, 0x1e00808,
    0x1e01900, 0x1e01b08, 0x1e02200, 0x1e02308, 0x1e02500, 0x1e02608, 0x1e02b00, 0x1e03001,
    0x1e06e00, 0x1e08f08, 0x1e09000, 0x1e10001, 0x1e12d00, 0x1e13008, 0x1e13701, 0x1e13e00,
    0x1e14002, 0x1e14a00, 0x1e14e01, 0x1e14f00, 0x1e29001, 0x1e2ae08, 0x1e2af00, 0x1e2c001,
    0x1e2ec08, 0x1e2f002, 0x1e2fa00, 0x1e4d001, 0x1e4ec08, 0x1e4f002, 0x1e4fa00, 0x1e7e001,
    0x1e7e700, 0x1e7e801, 0x1e7ec00, 0x1e7ed01, 0x1e7ef00, 0x1e7f001, 0x1e7ff00, 0x1e80001,
    0x1e8c500, 0x1e8c702, 0x1e8d008, 0x1e8d700, 0x1e90001, 0x1e94408, 0x1e94b01, 0x1e94c00,
    0x1e95002, 0x1e95a00, 0x1e95e04, 0x1e96000, 0x1ec7102, 0x1ecac00, 0x1ecad02, 0x1ecb000,
    0x1ecb102, 0x1ecb500, 0x1ed0102, 0x1ed2e00, 0x1ed2f02, 0x1ed3e00, 0x1ee0001, 0x1ee0400,
    0x1ee0501, 0x1ee2000, 0x1ee2101, 0x1ee2300, 0x1ee2401, 0x1ee2500, 0x1ee2701, 0x1ee2800,
    0x1ee2901, 0x1ee3300, 0x1ee3401, 0x1ee3800, 0x1ee3901, 0x1ee3a00, 0x1ee3b01, 0x1ee3c00,
    0x1ee4201, 0x1ee4300, 0x1ee4701, 0x1ee4800, 0x1ee4901, 0x1ee4a00, 0x1ee4b01, 0x1ee4c00,
    0x1ee4d01, 0x1ee5000, 0x1ee5101, 0x1ee5300, 0x1ee5401, 0x1ee5500, 0x1ee5701, 0x1ee5800,
    0x1ee5901, 0x1ee5a00, 0x1ee5b01, 0x1ee5c00, 0x1ee5d01, 0x1ee5e00, 0x1ee5f01, 0x1ee6000,
    0x1ee6101, 0x1ee6300, 0x1ee6401, 0x1ee6500, 0x1ee6701, 0x1ee6b00, 0x1ee6c01, 0x1ee7300,
    0x1ee7401, 0x1ee7800, 0x1ee7901, 0x1ee7d00, 0x1ee7e01, 0x1ee7f00, 0x1ee8001, 0x1ee8a00,
    0x1ee8b01, 0x1ee9c00, 0x1eea101, 0x1eea400, 0x1eea501, 0x1eeaa00, 0x1eeab01, 0x1eebc00,
    0x1f10002, 0x1f10d00, 0x1fbf002, 0x1fbfa00, 0x2000001, 0x2a6e000, 0x2a70001, 0x2b73a00,
    0x2b74001, 0x2b81e00, 0x2b82001, 0x2cea200, 0x2ceb001, 0x2ebe100, 0x2f80001, 0x2fa1e00,
    0x3000001, 0x3134b00, 0x3135001, 0x323b000, 0xe010008, 0xe01f000,
};
/* END GENERATED UNICODE TABLES */

static unsigned mllm__ucd_flags(uint32_t cp) {
    size_t lo = 0, hi = sizeof mllm__ucd_runs / sizeof mllm__ucd_runs[0];
    if (cp >= 0x110000) return 0;
    while (hi - lo > 1) {               /* last run starting at or before cp */
        size_t mid = (lo + hi) / 2;
        if ((mllm__ucd_runs[mid] >> 8) <= cp) lo = mid; else hi = mid;
    }
    return mllm__ucd_runs[lo] & 0xff;
}

/* Decodes one code point the way llama.cpp does (lenient: no overlong/surrogate checks), so that the
   same bytes give the same tokens.  A byte that starts no valid sequence decodes to U+FFFD, length 1. */
static uint32_t mllm__utf8_decode(const unsigned char *s, size_t n, size_t *len) {
    unsigned c = s[0];
    size_t need, i;
    uint32_t cp;
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xc0 || c >= 0xf8) { *len = 1; return 0xfffd; }
    need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (need > n) { *len = 1; return 0xfffd; }
    cp = c & (0x7f >> need);
    for (i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) { *len = 1; return 0xfffd; }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    *len = need;
    return cp < 0x110000 ? cp : 0xfffd;
}

static int mllm__utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f)); return 4;
}

/* Length of the UTF-8 sequence a lead byte announces (continuation bytes count as 1), as the BPE and
   SentencePiece symbol splitters of llama.cpp use it. */
static size_t mllm__utf8_len(unsigned char c) {
    static const unsigned char len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* GPT-2 maps every byte to a printable code point: printable Latin-1 bytes map to themselves, the rest
   (controls, space, DEL, NBSP, soft hyphen...) to 256, 257, ... in byte order. */
static uint32_t mllm__gpt2_byte_cp(unsigned b) {
    unsigned i, n = 0;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    for (i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174)) n++;
    return 256 + n;
}

/* ---------------------------------------------------------------- pre-tokenizers
   Each tokenizer.ggml.pre names a list of regexes applied in turn, as llama.cpp does: every regex
   splits every current chunk into its matches and the unmatched gaps between them (both become
   chunks), and a chunk's ends are the text's ends for the next regex (so (?!\S) and $ see them).
   The regexes come in a few families; each is a matcher returning the length of the leftmost-first
   (PCRE/ECMAScript) match at a position, 0 for none. */
enum mllm__pass_kind {
    MLLM__PK_GPT2,      /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
    MLLM__PK_LLAMA3,    /* (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|
                           \p{N}{1,arg}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
                           (flag marks: [\p{L}\p{M}] for \p{L} and \p{M} excluded from the other class) */
    MLLM__PK_ONE,       /* C        */
    MLLM__PK_RUN,       /* C+       */
    MLLM__PK_WS_RUN,    /* \s?C+    */
    MLLM__PK_TRAIL_WS,  /* \s+$     */
    MLLM__PK_DIGIT3     /* [0-9][0-9][0-9] */
};
enum mllm__cls {
    MLLM__C_NONE, MLLM__C_CRLF, MLLM__C_L, MLLM__C_N, MLLM__C_P,
    MLLM__C_CJK,         /* [一-龥ࠀ-一가-퟿] (deepseek) */
    MLLM__C_CASED,       /* deepseek-llm's explicit list of cased letters */
    MLLM__C_DS_PUNCT,    /* [!-/:-~！-／：-～‘-‟　-。] (deepseek-llm) */
    MLLM__C_FALCON_P,    /* [\p{P}\$\+<=>\^~\|`] */
    MLLM__C_DEFAULT_P    /* [\p{P}\$\+<=>\^~\|] */
};
typedef struct mllm__pass { unsigned char kind, cls, arg, marks; } mllm__pass;

#define MLLM__MAX_PASSES 6
typedef struct mllm__pretok {
    const char *names;                 /* tokenizer.ggml.pre values, '|'-separated */
    int ignore_merges;                 /* a word that is itself a token is not merged (llama3) */
    int add_bos;                       /* default when add_bos_token is absent */
    mllm__pass pass[MLLM__MAX_PASSES]; /* kind == 0xff ends the list */
} mllm__pretok;

#define MLLM__END {0xff, 0, 0, 0}
#define MLLM__GPT2 {MLLM__PK_GPT2, 0, 0, 0}
static const mllm__pretok mllm__pretoks[] = {
    {"default", 0, 0, {{MLLM__PK_RUN, MLLM__C_DEFAULT_P, 0, 0}, MLLM__GPT2, {MLLM__PK_RUN, MLLM__C_N, 0, 0},
                       {MLLM__PK_DIGIT3, 0, 0, 0}, MLLM__END}},
    {"llama3|llama-v3|llama-bpe|falcon3|dbrx|smaug-bpe", 1, 1, {{MLLM__PK_LLAMA3, 0, 3, 0}, MLLM__END}},
    {"qwen2|deepseek-r1-qwen|stablelm2", 0, 0, {{MLLM__PK_LLAMA3, 0, 1, 0}, MLLM__END}},
    {"qwen35", 0, 0, {{MLLM__PK_LLAMA3, 0, 1, 1}, MLLM__END}},
    {"gpt-2|phi-2|mpt|olmo", 0, 0, {MLLM__GPT2, MLLM__END}},
    {"starcoder|refact|command-r|smollm|codeshell|exaone", 0, 0,
     {{MLLM__PK_ONE, MLLM__C_N, 0, 0}, MLLM__GPT2, MLLM__END}},
    {"falcon", 0, 0, {{MLLM__PK_RUN, MLLM__C_FALCON_P, 0, 0}, MLLM__GPT2, {MLLM__PK_DIGIT3, 0, 0, 0}, MLLM__END}},
    {"deepseek-coder", 0, 0, {{MLLM__PK_ONE, MLLM__C_CRLF, 0, 0}, {MLLM__PK_WS_RUN, MLLM__C_L, 0, 0},
                              {MLLM__PK_WS_RUN, MLLM__C_P, 0, 0}, {MLLM__PK_RUN, MLLM__C_CJK, 0, 0},
                              {MLLM__PK_ONE, MLLM__C_N, 0, 0}, MLLM__END}},
    {"deepseek-llm", 0, 0, {{MLLM__PK_ONE, MLLM__C_CRLF, 0, 0}, {MLLM__PK_WS_RUN, MLLM__C_CASED, 0, 0},
                            {MLLM__PK_WS_RUN, MLLM__C_DS_PUNCT, 0, 0}, {MLLM__PK_TRAIL_WS, 0, 0, 0},
                            {MLLM__PK_RUN, MLLM__C_CJK, 0, 0}, {MLLM__PK_RUN, MLLM__C_N, 0, 0}}},
};
#undef MLLM__GPT2
#undef MLLM__END

/* Finds the pre-tokenizer named name (n bytes); NULL if unknown. */
static const mllm__pretok *mllm__pretok_find(const char *name, size_t n) {
    size_t i;
    for (i = 0; i < sizeof mllm__pretoks / sizeof mllm__pretoks[0]; i++) {
        const char *p = mllm__pretoks[i].names;
        while (*p) {
            size_t k = strcspn(p, "|");
            if (k == n && memcmp(p, name, n) == 0) return &mllm__pretoks[i];
            p += k + (p[k] == '|');
        }
    }
    return NULL;
}

/* deepseek-llm's cased-letter class, as the ranges its regex lists. */
static const uint32_t mllm__cased_ranges[][2] = {
    {0x41, 0x5a}, {0x61, 0x7a}, {0xb5, 0xb5}, {0xc0, 0xd6}, {0xd8, 0xf6}, {0xf8, 0x1ba}, {0x1bc, 0x1bf},
    {0x1c4, 0x293}, {0x295, 0x2af}, {0x370, 0x373}, {0x376, 0x377}, {0x37b, 0x37d}, {0x37f, 0x37f},
    {0x386, 0x386}, {0x388, 0x38a}, {0x38c, 0x38c}, {0x38e, 0x3a1}, {0x3a3, 0x3f5}, {0x3f7, 0x481},
    {0x48a, 0x52f}, {0x531, 0x556}, {0x10a0, 0x10c5}, {0x13a0, 0x13f5}, {0x13f8, 0x13fd}, {0x1c90, 0x1cba},
    {0x1cbd, 0x1cbf}, {0x1d00, 0x1d2b}, {0x1d6b, 0x1d77}, {0x1d79, 0x1d9a}, {0x1e00, 0x1f15},
    {0x1f18, 0x1f1d}, {0x1f20, 0x1f45}, {0x1f48, 0x1f4d}, {0x1f50, 0x1f57}, {0x1f59, 0x1f59},
    {0x1f5b, 0x1f5b}, {0x1f5d, 0x1f5d}, {0x1f5f, 0x1f7d}, {0x1f80, 0x1fb4}, {0x1fb6, 0x1fbc},
    {0x1fbe, 0x1fbe}, {0x1fc2, 0x1fc4}, {0x1fc6, 0x1fcc}, {0x1fd0, 0x1fd3}, {0x1fd6, 0x1fdb},
    {0x1fe0, 0x1fec}, {0x1ff2, 0x1ff4}, {0x1ff6, 0x1ffc}, {0x2102, 0x2102}, {0x2107, 0x2107},
    {0x210a, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211d}, {0x2124, 0x2124}, {0x2126, 0x2126},
    {0x2128, 0x2128}, {0x212a, 0x212d}, {0x212f, 0x2134}, {0x2139, 0x2139}, {0x213c, 0x213f},
    {0x2145, 0x2149}, {0x214e, 0x214e}, {0x2183, 0x2184}, {0x2c00, 0x2c7b}, {0x2c7e, 0x2ce4},
    {0x2ceb, 0x2cee}, {0x2cf2, 0x2cf3}, {0xa640, 0xa66d}, {0xa680, 0xa69b}, {0xa722, 0xa76f},
    {0xa771, 0xa787}, {0xa78b, 0xa78e}, {0xab70, 0xabbf}, {0xfb00, 0xfb06}, {0xfb13, 0xfb17},
    {0xff21, 0xff3a}, {0xff41, 0xff5a}, {0x10400, 0x1044f}, {0x104b0, 0x104d3}, {0x104d8, 0x104fb},
    {0x10c80, 0x10cb2}, {0x10cc0, 0x10cf2}, {0x118a0, 0x118df}, {0x1e900, 0x1e943},
};

static int mllm__in_cls(int cls, uint32_t c, unsigned f) {
    size_t i;
    switch (cls) {
    case MLLM__C_CRLF: return c == '\r' || c == '\n';
    case MLLM__C_L: return (f & MLLM__U_L) != 0;
    case MLLM__C_N: return (f & MLLM__U_N) != 0;
    case MLLM__C_P: return (f & MLLM__U_P) != 0;
    case MLLM__C_CJK: return (c >= 0x800 && c <= 0x9fa5) || (c >= 0xac00 && c <= 0xd7ff);
    case MLLM__C_CASED:
        for (i = 0; i < sizeof mllm__cased_ranges / sizeof mllm__cased_ranges[0]; i++)
            if (c >= mllm__cased_ranges[i][0] && c <= mllm__cased_ranges[i][1]) return 1;
        return 0;
    case MLLM__C_DS_PUNCT:
        return (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x7e) || (c >= 0xff01 && c <= 0xff0f) ||
               (c >= 0xff1a && c <= 0xff5e) || (c >= 0x2018 && c <= 0x201f) || (c >= 0x3000 && c <= 0x3002);
    case MLLM__C_FALCON_P: if (c == '`') return 1; /* fall through */
    case MLLM__C_DEFAULT_P:
        return (f & MLLM__U_P) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' ||
               c == '~' || c == '|';
    default: return 0;
    }
}

/* A text being split: its code points and their property bits. */
typedef struct mllm__utext { const uint32_t *cp; const unsigned char *fl; } mllm__utext;

/* End of the run of code points from i whose bits intersect mask (want=1) or avoid it (want=0). */
static size_t mllm__run_end(const mllm__utext *t, size_t i, size_t end, unsigned mask, int want) {
    while (i < end && ((t->fl[i] & mask) != 0) == want) i++;
    return i;
}

/* 's 't 're 've 'm 'll 'd at pos (case-insensitive in ASCII when nocase): the match length or 0. */
static size_t mllm__contraction(const mllm__utext *t, size_t pos, size_t end, int nocase) {
    uint32_t a, b;
    if (t->cp[pos] != '\'' || pos + 1 >= end) return 0;
    a = t->cp[pos + 1];
    if (nocase && a < 128) a |= 0x20;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    b = t->cp[pos + 2];
    if (nocase && b < 128) b |= 0x20;
    return ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) ? 3 : 0;
}

static size_t mllm__match_gpt2(const mllm__utext *t, size_t pos, size_t end) {
    const unsigned LNW = MLLM__U_L | MLLM__U_N | MLLM__U_WS;
    size_t p = pos, k;
    unsigned f;
    if ((k = mllm__contraction(t, pos, end, 0)) != 0) return k;
    if (t->cp[pos] == ' ' && pos + 1 < end) p = pos + 1;          /* the optional leading space */
    f = t->fl[p];
    if (f & MLLM__U_L) return mllm__run_end(t, p, end, MLLM__U_L, 1) - pos;
    if (f & MLLM__U_N) return mllm__run_end(t, p, end, MLLM__U_N, 1) - pos;
    if (!(f & LNW)) return mllm__run_end(t, p, end, LNW, 0) - pos;
    k = mllm__run_end(t, pos, end, MLLM__U_WS, 1) - pos;            /* \s+(?!\S) */
    if (k && pos + k == end) return k;
    return k >= 2 ? k - 1 : 0;
}

static size_t mllm__match_llama3(const mllm__utext *t, size_t pos, size_t end, int max_digits, int marks) {
    const unsigned LET = MLLM__U_L | (marks ? MLLM__U_M : 0u);
    const unsigned OTHER = MLLM__U_WS | MLLM__U_N | LET;            /* [^\s\p{L}(\p{M})\p{N}] avoids these */
    uint32_t c = t->cp[pos];
    unsigned f = t->fl[pos];
    size_t p, k, i, last;
    if ((k = mllm__contraction(t, pos, end, 1)) != 0) return k;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c != '\r' && c != '\n' && !(f & (MLLM__U_L | MLLM__U_N)) && pos + 1 < end && (t->fl[pos + 1] & LET))
        return mllm__run_end(t, pos + 1, end, LET, 1) - pos;
    if (f & LET) return mllm__run_end(t, pos, end, LET, 1) - pos;
    /* \p{N}{1,max} */
    if (f & MLLM__U_N) {
        for (k = 1; (int)k < max_digits && pos + k < end && (t->fl[pos + k] & MLLM__U_N); k++) {}
        return k;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    p = (c == ' ' && pos + 1 < end) ? pos + 1 : pos;
    if (!(t->fl[p] & OTHER)) {
        p = mllm__run_end(t, p, end, OTHER, 0);
        while (p < end && (t->cp[p] == '\r' || t->cp[p] == '\n')) p++;
        return p - pos;
    }
    /* \s*[\r\n]+ : the whitespace run up to its last newline */
    k = mllm__run_end(t, pos, end, MLLM__U_WS, 1) - pos;
    for (i = 0, last = 0; i < k; i++)
        if (t->cp[pos + i] == '\r' || t->cp[pos + i] == '\n') last = i + 1;
    if (last) return last;
    /* \s+(?!\S) | \s+ */
    if (k >= 2 && pos + k < end) return k - 1;
    return k;
}

/* One regex of a pre-tokenizer at pos of the chunk [.., end); tail is where the chunk's trailing
   whitespace starts (for \s+$). */
static size_t mllm__match(const mllm__pass *ps, const mllm__utext *t, size_t pos, size_t end, size_t tail) {
    size_t p;
    switch (ps->kind) {
    case MLLM__PK_GPT2: return mllm__match_gpt2(t, pos, end);
    case MLLM__PK_LLAMA3: return mllm__match_llama3(t, pos, end, ps->arg, ps->marks);
    case MLLM__PK_ONE: return mllm__in_cls(ps->cls, t->cp[pos], t->fl[pos]) ? 1 : 0;
    case MLLM__PK_RUN:
    case MLLM__PK_WS_RUN:
        p = pos;   /* \s? is taken only when a class character follows it */
        if (ps->kind == MLLM__PK_WS_RUN && (t->fl[pos] & MLLM__U_WS) && pos + 1 < end &&
            mllm__in_cls(ps->cls, t->cp[pos + 1], t->fl[pos + 1]))
            p = pos + 1;
        if (!mllm__in_cls(ps->cls, t->cp[p], t->fl[p])) return 0;
        while (p < end && mllm__in_cls(ps->cls, t->cp[p], t->fl[p])) p++;
        return p - pos;
    case MLLM__PK_TRAIL_WS: return pos >= tail ? end - pos : 0;
    case MLLM__PK_DIGIT3: {
        int i;
        if (pos + 3 > end) return 0;
        for (i = 0; i < 3; i++)
            if (t->cp[pos + i] < '0' || t->cp[pos + i] > '9') return 0;
        return 3;
    }
    default: return 0;
    }
}

/* Growable arrays for the tokenizer's scratch space. */
typedef struct mllm__buf { void *p; size_t n, cap; } mllm__buf;

static int mllm__buf_reserve(mllm__buf *b, size_t n, size_t elem) {
    size_t cap;
    void *p;
    if (n <= b->cap) return 1;
    cap = b->cap ? b->cap : 64;
    while (cap < n) {
        if (cap > SIZE_MAX / 2 / elem) return 0;
        cap *= 2;
    }
    p = MLLM_REALLOC(b->p, cap * elem);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

/* Appends one element of size elem; 0 when out of memory. */
static int mllm__buf_push(mllm__buf *b, const void *x, size_t elem) {
    if (!mllm__buf_reserve(b, b->n + 1, elem)) return 0;
    memcpy((char *)b->p + b->n * elem, x, elem);
    b->n++;
    return 1;
}

/* Splits t[0, n) with the pre-tokenizer's regexes.  On return ends (size_t) holds the exclusive end of
   each word, in order; tmp is scratch. */
static int mllm__pretokenize(const mllm__pretok *pt, const mllm__utext *t, size_t n, mllm__buf *ends,
                             mllm__buf *tmp) {
    int k;
    ends->n = 0;
    if (!n) return 1;
    if (!mllm__buf_push(ends, &n, sizeof n)) return 0;
    for (k = 0; k < MLLM__MAX_PASSES && pt->pass[k].kind != 0xff; k++) {
        mllm__buf swap;
        size_t c, start = 0;
        tmp->n = 0;
        for (c = 0; c < ends->n; c++) {
            size_t end = ((size_t *)ends->p)[c], pos = start, gap = start, tail = end;
            while (tail > start && (t->fl[tail - 1] & MLLM__U_WS)) tail--;
            while (pos < end) {
                size_t m = mllm__match(&pt->pass[k], t, pos, end, tail);
                if (!m) { pos++; continue; }
                if (gap < pos && !mllm__buf_push(tmp, &pos, sizeof pos)) return 0;
                pos += m;
                gap = pos;
                if (!mllm__buf_push(tmp, &pos, sizeof pos)) return 0;
            }
            if (gap < end && !mllm__buf_push(tmp, &end, sizeof end)) return 0;
            start = end;
        }
        swap = *ends; *ends = *tmp; *tmp = swap;
    }
    return 1;
}

/* ---------------------------------------------------------------- vocabulary */
enum { MLLM__VOCAB_SPM = 1, MLLM__VOCAB_BPE = 2 };
/* token_type values of GGUF */
enum { MLLM__TT_NORMAL = 1, MLLM__TT_UNKNOWN = 2, MLLM__TT_CONTROL = 3, MLLM__TT_USER = 4,
       MLLM__TT_UNUSED = 5, MLLM__TT_BYTE = 6 };
#define MLLM__MAX_EOG 16

struct mllm_vocab {
    int type;                       /* MLLM__VOCAB_SPM / BPE */
    const mllm__pretok *pre;        /* BPE only */
    int n_tokens;
    /* Strings: ids < n_tokens are tokens; ids >= n_tokens are merge parts that are not tokens (BPE). */
    int n_str;
    char *str;                      /* all string bytes */
    uint32_t *str_off;              /* string i is str[str_off[i] .. str_off[i+1]) */
    size_t str_cap, off_cap;
    uint32_t *hash;                 /* open addressing over string ids; UINT32_MAX = empty */
    uint32_t hash_mask;
    float *score;
    unsigned char *tt;              /* token type (MLLM__TT_*; 0 when unknown) */
    char *piece;                    /* detokenized bytes of each token */
    uint32_t *piece_off;
    int max_piece;
    /* BPE merges: (left id, right id) -> rank and merged id */
    uint64_t *mkey;
    int32_t *mrank, *mres;
    uint32_t merge_mask;
    int32_t byte_sym[256];          /* BPE: string id of the GPT-2 code point of each byte (or -1) */
    int32_t single_tok[256];        /* BPE: token of each one-byte string (fallback), or -1 */
    int32_t byte_tok[256];          /* SPM: <0xNN> token of each byte (or its one-byte text), or -1 */
    uint32_t gpt2_cp[256];          /* GPT-2 code point of each byte */
    int16_t gpt2_byte[512];         /* and back (-1: not a GPT-2 code point) */
    int32_t *special;               /* control / user-defined / unknown tokens, longest text first */
    int n_special;
    mllm_token bos, eos, unk, eot, eom;
    int add_bos, add_eos, add_space_prefix;
    mllm_token eog[MLLM__MAX_EOG];
    int n_eog;
};

static uint32_t mllm__hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;       /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static size_t mllm__str_len(const mllm_vocab *v, int32_t id) { return v->str_off[id + 1] - v->str_off[id]; }

/* String id of the text s[0, n), or -1. */
static int32_t mllm__str_find(const mllm_vocab *v, const char *s, size_t n) {
    uint32_t h;
    if (!v->hash) return -1;
    for (h = mllm__hash_bytes(s, n) & v->hash_mask;; h = (h + 1) & v->hash_mask) {
        uint32_t id = v->hash[h];
        if (id == UINT32_MAX) return -1;
        if (mllm__str_len(v, (int32_t)id) == n && memcmp(v->str + v->str_off[id], s, n) == 0) return (int32_t)id;
    }
}

static int32_t mllm__tok_find(const mllm_vocab *v, const char *s, size_t n) {
    int32_t id = mllm__str_find(v, s, n);
    return id < v->n_tokens ? id : -1;
}

static int mllm__hash_insert(mllm_vocab *v, uint32_t id) {
    uint32_t h = mllm__hash_bytes(v->str + v->str_off[id], mllm__str_len(v, (int32_t)id)) & v->hash_mask;
    while (v->hash[h] != UINT32_MAX) h = (h + 1) & v->hash_mask;
    v->hash[h] = id;
    return 1;
}

/* (Re)builds the string hash with room for at least `want` strings (load factor <= 1/2). */
static int mllm__hash_rebuild(mllm_vocab *v, size_t want) {
    size_t cap = 16, i;
    while (cap < want * 2) cap *= 2;
    if (cap > UINT32_MAX) return 0;
    MLLM_FREE(v->hash);
    v->hash = MLLM__CAST(uint32_t *, MLLM_MALLOC(cap * sizeof(uint32_t)));
    if (!v->hash) return 0;
    memset(v->hash, 0xff, cap * sizeof(uint32_t));
    v->hash_mask = (uint32_t)(cap - 1);
    for (i = 0; i < (size_t)v->n_str; i++) {
        int32_t old;
        /* the first of duplicate texts wins */
        old = mllm__str_find(v, v->str + v->str_off[i], mllm__str_len(v, (int32_t)i));
        if (old < 0) mllm__hash_insert(v, (uint32_t)i);
    }
    return 1;
}

/* Appends a string (not yet hashed); returns its id or -1 when out of memory. */
static int32_t mllm__str_add(mllm_vocab *v, const char *s, size_t n) {
    size_t used = v->n_str ? v->str_off[v->n_str] : 0;
    if (used + n > UINT32_MAX - 1 || v->n_str >= INT32_MAX - 1) return -1;
    if (used + n > v->str_cap) {
        size_t cap = v->str_cap ? v->str_cap : 1024;
        char *p;
        while (cap < used + n) cap *= 2;
        p = MLLM__CAST(char *, MLLM_REALLOC(v->str, cap));
        if (!p) return -1;
        v->str = p;
        v->str_cap = cap;
    }
    if ((size_t)v->n_str + 2 > v->off_cap) {
        size_t cap = v->off_cap ? v->off_cap * 2 : 1024;
        uint32_t *p = MLLM__CAST(uint32_t *, MLLM_REALLOC(v->str_off, cap * sizeof(uint32_t)));
        if (!p) return -1;
        v->str_off = p;
        v->off_cap = cap;
    }
    if (n) memcpy(v->str + used, s, n);
    v->str_off[v->n_str] = (uint32_t)used;
    v->str_off[v->n_str + 1] = (uint32_t)(used + n);
    return v->n_str++;
}

/* String id of s, adding it (as a non-token string) when absent; -1 when out of memory. */
static int32_t mllm__str_intern(mllm_vocab *v, const char *s, size_t n) {
    int32_t id = mllm__str_find(v, s, n);
    if (id >= 0) return id;
    if ((size_t)v->n_str + 1 > (size_t)(v->hash_mask + 1) / 2 && !mllm__hash_rebuild(v, 2 * ((size_t)v->n_str + 1)))
        return -1;
    id = mllm__str_add(v, s, n);
    if (id >= 0) mllm__hash_insert(v, (uint32_t)id);
    return id;
}

static uint32_t mllm__pair_hash(uint64_t k) { return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32); }

/* Rank and merged string id of the pair (a, b); 0 when the pair does not merge. */
static int mllm__merge_find(const mllm_vocab *v, int32_t a, int32_t b, int32_t *rank, int32_t *res) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t h;
    if (!v->mkey) return 0;
    for (h = mllm__pair_hash(key) & v->merge_mask;; h = (h + 1) & v->merge_mask) {
        if (v->mkey[h] == UINT64_MAX) return 0;
        if (v->mkey[h] == key) { *rank = v->mrank[h]; *res = v->mres[h]; return 1; }
    }
}

/* Bytes a token contributes to text: SentencePiece ▁ -> space, byte tokens -> their byte, GPT-2 code
   points -> bytes, user-defined tokens verbatim; control/unknown/unused tokens -> nothing. */
static int mllm__make_piece(const mllm_vocab *v, int32_t id, mllm__buf *out) {
    const char *s = v->str + v->str_off[id];
    size_t n = mllm__str_len(v, id), i = 0;
    int tt = v->tt[id];
    out->n = 0;
    if (!mllm__buf_reserve(out, n + 1, 1)) return 0;
    if (tt == MLLM__TT_USER) { memcpy(out->p, s, n); out->n = n; return 1; }
    if (tt == MLLM__TT_BYTE) {
        unsigned x;
        if (n == 6 && sscanf(s, "<0x%2x>", &x) == 1) { ((char *)out->p)[0] = (char)x; out->n = 1; }
        return 1;
    }
    if (tt != MLLM__TT_NORMAL) return 1;
    while (i < n) {
        char *o = (char *)out->p;
        if (v->type == MLLM__VOCAB_SPM) {
            if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) { o[out->n++] = ' '; i += 3; }
            else o[out->n++] = s[i++];
        } else {
            size_t len;
            uint32_t cp = mllm__utf8_decode((const unsigned char *)s + i, n - i, &len);
            int b = cp < 512 ? v->gpt2_byte[cp] : -1;
            if (b >= 0) o[out->n++] = (char)b;
            else { memcpy(o + out->n, s + i, len); out->n += len; }   /* not a GPT-2 code point: keep */
            i += len;
        }
    }
    return 1;
}

static int mllm__is_eog_text(const char *s, size_t n) {
    static const char *const names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<|eom_id|>", "<EOT>", "<|end_of_text|>", "<end_of_utterance>",
                                        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0) return 1;
    return 0;
}

static void mllm__add_eog(mllm_vocab *v, mllm_token t) {
    int i;
    if (t < 0 || t >= v->n_tokens) return;
    for (i = 0; i < v->n_eog; i++)
        if (v->eog[i] == t) return;
    if (v->n_eog < MLLM__MAX_EOG) v->eog[v->n_eog++] = t;
}

static int mllm__u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void mllm__vocab_release(mllm_vocab *v) {
    if (!v) return;
    MLLM_FREE(v->str); MLLM_FREE(v->str_off); MLLM_FREE(v->hash); MLLM_FREE(v->score); MLLM_FREE(v->tt);
    MLLM_FREE(v->piece); MLLM_FREE(v->piece_off); MLLM_FREE(v->mkey); MLLM_FREE(v->mrank); MLLM_FREE(v->mres);
    MLLM_FREE(v->special);
    memset(v, 0, sizeof *v);
}

/* Reads an optional token id key; out-of-range ids count as absent. */
static mllm_token mllm__vocab_id_key(const mllm__gguf *g, const char *key, mllm_token def, int n) {
    int64_t x;
    if (mllm__gguf_get_int(g, key, &x)) return (x >= 0 && x < n) ? (mllm_token)x : def;
    return (def >= 0 && def < n) ? def : -1;
}

static mllm_status mllm__vocab_load_merges(mllm_vocab *v, const mllm__gguf_kv *kv) {
    mllm__str *m;
    size_t cap = 16;
    uint64_t i;
    char *cat = NULL;
    size_t cat_cap = 0;
    mllm_status st = MLLM_OK;
    if (kv->arr_n > (uint64_t)INT32_MAX) return mllm__fail(MLLM_ERR_FORMAT, "tokenizer: too many merges");
    while (cap < kv->arr_n * 2) cap *= 2;
    m = MLLM__CAST(mllm__str *, mllm__calloc((size_t)kv->arr_n + 1, sizeof *m));
    v->mkey = MLLM__CAST(uint64_t *, MLLM_MALLOC(cap * sizeof(uint64_t)));
    v->mrank = MLLM__CAST(int32_t *, MLLM_MALLOC(cap * sizeof(int32_t)));
    v->mres = MLLM__CAST(int32_t *, MLLM_MALLOC(cap * sizeof(int32_t)));
    if (!m || !v->mkey || !v->mrank || !v->mres) { MLLM_FREE(m); return mllm__fail(MLLM_ERR_NOMEM, "tokenizer: out of memory"); }
    memset(v->mkey, 0xff, cap * sizeof(uint64_t));
    v->merge_mask = (uint32_t)(cap - 1);
    if ((st = mllm__gguf_arr_strings(kv, m)) != MLLM_OK) { MLLM_FREE(m); return st; }
    for (i = 0; i < kv->arr_n; i++) {
        const char *s = m[i].p, *sp;
        size_t n = m[i].n;
        int32_t a, b, r;
        uint64_t key;
        uint32_t h;
        /* "left right", split at the first space after the first byte */
        sp = n > 1 ? (const char *)memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp) continue;
        if (n > cat_cap) {
            char *p = MLLM__CAST(char *, MLLM_REALLOC(cat, n * 2));
            if (!p) { st = MLLM_ERR_NOMEM; break; }
            cat = p;
            cat_cap = n * 2;
        }
        memcpy(cat, s, (size_t)(sp - s));
        memcpy(cat + (sp - s), sp + 1, n - (size_t)(sp - s) - 1);
        a = mllm__str_intern(v, s, (size_t)(sp - s));
        b = mllm__str_intern(v, sp + 1, n - (size_t)(sp - s) - 1);
        r = mllm__str_intern(v, cat, n - 1);
        if (a < 0 || b < 0 || r < 0) { st = MLLM_ERR_NOMEM; break; }
        key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        for (h = mllm__pair_hash(key) & v->merge_mask; v->mkey[h] != UINT64_MAX && v->mkey[h] != key;
             h = (h + 1) & v->merge_mask) {}
        if (v->mkey[h] == key) continue;   /* the first (best-ranked) occurrence wins */
        v->mkey[h] = key;
        v->mrank[h] = (int32_t)i;
        v->mres[h] = r;
    }
    MLLM_FREE(cat);
    MLLM_FREE(m);
    return st == MLLM_OK ? MLLM_OK : mllm__fail(st, "tokenizer: out of memory");
}

static mllm_status mllm__vocab_init(mllm_vocab *v, const mllm__gguf *g) {
    const mllm__gguf_kv *ktok, *kscore, *ktype, *kmerge;
    mllm__str model, pre, *toks = NULL;
    mllm_status st;
    mllm__buf piece = {NULL, 0, 0};
    uint64_t i, *skey = NULL;
    int b, flag;
    size_t total = 0;

    memset(v, 0, sizeof *v);
    if (!mllm__gguf_get_str(g, "tokenizer.ggml.model", &model))
        return mllm__fail(MLLM_ERR_FORMAT, "tokenizer: no tokenizer.ggml.model");
    if (mllm__str_eq(model, "llama")) v->type = MLLM__VOCAB_SPM;
    else if (mllm__str_eq(model, "gpt2")) v->type = MLLM__VOCAB_BPE;
    else return mllm__fail(MLLM_ERR_UNSUPPORTED, "tokenizer: unsupported tokenizer model '%.*s'",
                           (int)(model.n > 64 ? 64 : model.n), model.p);
    if (v->type == MLLM__VOCAB_BPE) {
        if (!mllm__gguf_get_str(g, "tokenizer.ggml.pre", &pre) || pre.n == 0) pre.p = "default", pre.n = 7;
        v->pre = mllm__pretok_find(pre.p, pre.n);
        if (!v->pre)
            return mllm__fail(MLLM_ERR_UNSUPPORTED, "tokenizer: unsupported pre-tokenizer '%.*s'",
                              (int)(pre.n > 64 ? 64 : pre.n), pre.p);
    }
    ktok = mllm__gguf_find(g, "tokenizer.ggml.tokens");
    if (!ktok || ktok->type != MLLM__GGUF_ARRAY || ktok->arr_type != MLLM__GGUF_STRING || ktok->arr_n == 0 ||
        ktok->arr_n > (1u << 24))
        return mllm__fail(MLLM_ERR_FORMAT, "tokenizer: missing or bad tokenizer.ggml.tokens");
    v->n_tokens = (int)ktok->arr_n;
    kscore = mllm__gguf_find(g, "tokenizer.ggml.scores");
    ktype = mllm__gguf_find(g, "tokenizer.ggml.token_type");
    if ((kscore && (kscore->type != MLLM__GGUF_ARRAY || kscore->arr_n < ktok->arr_n)) ||
        (ktype && (ktype->type != MLLM__GGUF_ARRAY || ktype->arr_n < ktok->arr_n)))
        return mllm__fail(MLLM_ERR_FORMAT, "tokenizer: scores/token_type shorter than the token list");

    toks = MLLM__CAST(mllm__str *, mllm__calloc((size_t)ktok->arr_n, sizeof *toks));
    v->score = MLLM__CAST(float *, mllm__calloc((size_t)v->n_tokens, sizeof(float)));
    v->tt = MLLM__CAST(unsigned char *, mllm__calloc((size_t)v->n_tokens, 1));
    if (!toks || !v->score || !v->tt) { st = mllm__fail(MLLM_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
    if ((st = mllm__gguf_arr_strings(ktok, toks)) != MLLM_OK) goto fail;
    for (i = 0; i < ktok->arr_n; i++) total += toks[i].n;
    v->str = MLLM__CAST(char *, MLLM_MALLOC(total + 1));
    v->str_cap = total + 1;
    v->str_off = MLLM__CAST(uint32_t *, MLLM_MALLOC(((size_t)v->n_tokens + 2) * sizeof(uint32_t)));
    v->off_cap = (size_t)v->n_tokens + 2;
    if (!v->str || !v->str_off || total > UINT32_MAX / 2) { st = mllm__fail(MLLM_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
    for (i = 0; i < ktok->arr_n; i++) {
        int tt = MLLM__TT_NORMAL;
        mllm__str_add(v, toks[i].p, toks[i].n);   /* cannot fail: reserved above */
        if (kscore) v->score[i] = kscore->arr_type == MLLM__GGUF_F32 || kscore->arr_type == MLLM__GGUF_F64
                                      ? mllm__gguf_arr_f32(kscore, i) : (float)mllm__gguf_arr_int(kscore, i);
        if (ktype) tt = (int)mllm__gguf_arr_int(ktype, i);
        v->tt[i] = (unsigned char)(tt >= 1 && tt <= 6 ? tt : 0);
    }
    MLLM_FREE(toks);
    toks = NULL;
    if (!mllm__hash_rebuild(v, (size_t)v->n_tokens)) { st = mllm__fail(MLLM_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }

    for (b = 0; b < 512; b++) v->gpt2_byte[b] = -1;
    for (b = 0; b < 256; b++) {
        char buf[8];
        v->gpt2_cp[b] = mllm__gpt2_byte_cp((unsigned)b);
        v->gpt2_byte[v->gpt2_cp[b]] = (int16_t)b;
        v->byte_sym[b] = v->single_tok[b] = v->byte_tok[b] = -1;
        buf[0] = (char)b;
        v->single_tok[b] = mllm__tok_find(v, buf, 1);
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        v->byte_tok[b] = mllm__tok_find(v, buf, 6);
        if (v->byte_tok[b] < 0) v->byte_tok[b] = v->single_tok[b];
    }
    if (v->type == MLLM__VOCAB_BPE) {
        kmerge = mllm__gguf_find(g, "tokenizer.ggml.merges");
        if (!kmerge || kmerge->type != MLLM__GGUF_ARRAY || kmerge->arr_type != MLLM__GGUF_STRING) {
            st = mllm__fail(MLLM_ERR_FORMAT, "tokenizer: gpt2 model without tokenizer.ggml.merges");
            goto fail;
        }
        if ((st = mllm__vocab_load_merges(v, kmerge)) != MLLM_OK) goto fail;
        for (b = 0; b < 256; b++) {
            char buf[4];
            int n = mllm__utf8_encode(v->gpt2_cp[b], buf);
            v->byte_sym[b] = mllm__str_find(v, buf, (size_t)n);
        }
    }

    /* special ids and flags (defaults as llama.cpp) */
    v->bos = mllm__vocab_id_key(g, "tokenizer.ggml.bos_token_id", v->type == MLLM__VOCAB_SPM ? 1 : -1, v->n_tokens);
    v->eos = mllm__vocab_id_key(g, "tokenizer.ggml.eos_token_id", v->type == MLLM__VOCAB_SPM ? 2 : -1, v->n_tokens);
    v->unk = mllm__vocab_id_key(g, "tokenizer.ggml.unknown_token_id", v->type == MLLM__VOCAB_SPM ? 0 : -1, v->n_tokens);
    v->eot = mllm__vocab_id_key(g, "tokenizer.ggml.eot_token_id", -1, v->n_tokens);
    v->eom = mllm__vocab_id_key(g, "tokenizer.ggml.eom_token_id", -1, v->n_tokens);
    v->add_bos = v->type == MLLM__VOCAB_SPM || (v->pre && v->pre->add_bos);
    v->add_space_prefix = v->type == MLLM__VOCAB_SPM;
    if (mllm__gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag)) v->add_bos = flag;
    if (mllm__gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &flag)) v->add_eos = flag;
    if (mllm__gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &flag)) v->add_space_prefix = flag;
    if (v->bos < 0) v->add_bos = 0;
    if (v->eos < 0) v->add_eos = 0;

    /* end-of-generation tokens: eos, eot, eom and the usual end-of-turn texts; like llama.cpp, treat
       those texts as control tokens so they are only parsed on request */
    mllm__add_eog(v, v->eos);
    mllm__add_eog(v, v->eot);
    mllm__add_eog(v, v->eom);
    for (i = 0; i < (uint64_t)v->n_tokens; i++) {
        if (mllm__is_eog_text(v->str + v->str_off[i], mllm__str_len(v, (int32_t)i))) {
            mllm__add_eog(v, (mllm_token)i);
            v->tt[i] = MLLM__TT_CONTROL;
        }
    }

    /* special tokens, longest first */
    v->special = MLLM__CAST(int32_t *, mllm__calloc((size_t)v->n_tokens, sizeof(int32_t)));
    skey = MLLM__CAST(uint64_t *, mllm__calloc((size_t)v->n_tokens, sizeof(uint64_t)));
    v->piece_off = MLLM__CAST(uint32_t *, MLLM_MALLOC(((size_t)v->n_tokens + 1) * sizeof(uint32_t)));
    v->piece = MLLM__CAST(char *, MLLM_MALLOC(total + 1));   /* no piece is longer than its text */
    if (!v->special || !skey || !v->piece_off || !v->piece) { st = mllm__fail(MLLM_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
    for (i = 0; i < (uint64_t)v->n_tokens; i++) {
        int tt = v->tt[i];
        /* sort key: longer text first, then lower id */
        if ((tt == MLLM__TT_CONTROL || tt == MLLM__TT_USER || tt == MLLM__TT_UNKNOWN) && mllm__str_len(v, (int32_t)i))
            skey[v->n_special++] = ((uint64_t)(UINT32_MAX - mllm__str_len(v, (int32_t)i)) << 32) | i;
    }
    qsort(skey, (size_t)v->n_special, sizeof(uint64_t), mllm__u64_cmp);
    for (b = 0; b < v->n_special; b++) v->special[b] = (int32_t)(skey[b] & 0xffffffffu);
    MLLM_FREE(skey);
    skey = NULL;

    /* pieces */
    total = 0;
    for (i = 0; i < (uint64_t)v->n_tokens; i++) {
        if (!mllm__make_piece(v, (int32_t)i, &piece)) { st = mllm__fail(MLLM_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
        v->piece_off[i] = (uint32_t)total;
        memcpy(v->piece + total, piece.p, piece.n);
        total += piece.n;
        if ((int)piece.n > v->max_piece) v->max_piece = (int)piece.n;
    }
    v->piece_off[v->n_tokens] = (uint32_t)total;
    MLLM_FREE(piece.p);
    return MLLM_OK;
fail:
    MLLM_FREE(toks);
    MLLM_FREE(skey);
    MLLM_FREE(piece.p);
    mllm__vocab_release(v);
    return st;
}

mllm_status mllm_vocab_load(mllm_vocab **out, const char *path) {
    mllm__gguf g;
    mllm_vocab *v;
    mllm_status st;
    if (!out || !path) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_vocab_load: NULL argument");
    *out = NULL;
    v = MLLM__CAST(mllm_vocab *, mllm__calloc(1, sizeof *v));
    if (!v) return mllm__fail(MLLM_ERR_NOMEM, "out of memory");
    if ((st = mllm__gguf_open(&g, path)) != MLLM_OK) { MLLM_FREE(v); return st; }
    st = mllm__vocab_init(v, &g);
    mllm__gguf_close(&g);
    if (st != MLLM_OK) { MLLM_FREE(v); return st; }
    *out = v;
    return MLLM_OK;
}

void mllm_vocab_free(mllm_vocab *vocab) {
    mllm__vocab_release(vocab);
    MLLM_FREE(vocab);
}

int mllm_vocab_size(const mllm_vocab *v) { return v ? v->n_tokens : 0; }
mllm_token mllm_vocab_bos(const mllm_vocab *v) { return v ? v->bos : -1; }
mllm_token mllm_vocab_eos(const mllm_vocab *v) { return v ? v->eos : -1; }
int mllm_vocab_max_piece(const mllm_vocab *v) { return v ? v->max_piece : 0; }

int mllm_vocab_is_eog(const mllm_vocab *v, mllm_token t) {
    int i;
    if (!v) return 0;
    for (i = 0; i < v->n_eog; i++)
        if (v->eog[i] == t) return 1;
    return 0;
}

mllm_token mllm_vocab_find(const mllm_vocab *v, const char *text) {
    return v && text ? mllm__tok_find(v, text, strlen(text)) : -1;
}

/* ---------------------------------------------------------------- tokenize */
/* Scratch of one mllm_tokenize call. */
typedef struct mllm__tok_session {
    const mllm_vocab *v;
    mllm__buf out;                  /* mllm_token */
    mllm__buf text;                 /* char: escaped SPM text / word bytes */
    mllm__buf sym;                  /* mllm__sym */
    mllm__buf heap;                 /* mllm__bigram */
    mllm__buf cp, fl, ends, tmp;    /* BPE pre-tokenizer */
    mllm__buf enc;                  /* char: a word in GPT-2 encoding */
} mllm__tok_session;

typedef struct mllm__sym { int prev, next; uint32_t start, n; int32_t id; } mllm__sym;
typedef struct mllm__bigram { double key; int left, right; uint32_t size; int32_t res; } mllm__bigram;

static int mllm__emit(mllm__tok_session *s, mllm_token t) { return mllm__buf_push(&s->out, &t, sizeof t); }

/* Binary heap of bigrams: best first = smallest key (SPM stores -score, BPE the rank), then leftmost. */
static int mllm__bigram_less(const mllm__bigram *a, const mllm__bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static int mllm__heap_push(mllm__buf *h, const mllm__bigram *x) {
    mllm__bigram *a;
    size_t i;
    if (!mllm__buf_push(h, x, sizeof *x)) return 0;
    a = (mllm__bigram *)h->p;
    for (i = h->n - 1; i > 0 && mllm__bigram_less(&a[i], &a[(i - 1) / 2]); i = (i - 1) / 2) {
        mllm__bigram t = a[i]; a[i] = a[(i - 1) / 2]; a[(i - 1) / 2] = t;
    }
    return 1;
}

static mllm__bigram mllm__heap_pop(mllm__buf *h) {
    mllm__bigram *a = (mllm__bigram *)h->p, top = a[0];
    size_t i = 0;
    a[0] = a[--h->n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && mllm__bigram_less(&a[l], &a[m])) m = l;
        if (r < h->n && mllm__bigram_less(&a[r], &a[m])) m = r;
        if (m == i) break;
        { mllm__bigram t = a[i]; a[i] = a[m]; a[m] = t; }
        i = m;
    }
    return top;
}

/* Queues the merge of adjacent symbols l and r if the vocabulary has it. */
static int mllm__try_bigram(mllm__tok_session *s, int l, int r) {
    const mllm_vocab *v = s->v;
    mllm__sym *sym = (mllm__sym *)s->sym.p;
    mllm__bigram bg;
    int32_t rank;
    if (l < 0 || r < 0) return 1;
    bg.left = l;
    bg.right = r;
    bg.size = sym[l].n + sym[r].n;
    if (v->type == MLLM__VOCAB_SPM) {
        int32_t id = mllm__tok_find(v, (const char *)s->text.p + sym[l].start, bg.size);
        if (id < 0) return 1;
        bg.key = -v->score[id];
        bg.res = id;
    } else {
        if (sym[l].id < 0 || sym[r].id < 0 || !mllm__merge_find(v, sym[l].id, sym[r].id, &rank, &bg.res)) return 1;
        bg.key = (double)rank;
    }
    return mllm__heap_push(&s->heap, &bg);
}

/* Splits s->text[0, n) into symbols (one per UTF-8 character for SPM, one per byte for byte-level BPE)
   and merges them best-first, as llama.cpp's SPM and BPE sessions do. */
static int mllm__merge_symbols(mllm__tok_session *s, size_t n) {
    const mllm_vocab *v = s->v;
    const unsigned char *t = (const unsigned char *)s->text.p;
    mllm__sym *sym;
    size_t off = 0;
    int i, count = 0;
    s->sym.n = 0;
    s->heap.n = 0;
    while (off < n) {
        mllm__sym x;
        size_t len = v->type == MLLM__VOCAB_SPM ? mllm__utf8_len(t[off]) : 1;
        if (len > n - off) len = n - off;
        x.start = (uint32_t)off;
        x.n = (uint32_t)len;
        x.prev = count - 1;
        x.next = off + len == n ? -1 : count + 1;
        x.id = v->type == MLLM__VOCAB_SPM ? -1 : v->byte_sym[t[off]];
        if (!mllm__buf_push(&s->sym, &x, sizeof x)) return 0;
        off += len;
        count++;
    }
    for (i = 1; i < count; i++)
        if (!mllm__try_bigram(s, i - 1, i)) return 0;
    while (s->heap.n) {
        mllm__bigram bg = mllm__heap_pop(&s->heap);
        mllm__sym *l, *r;
        sym = (mllm__sym *)s->sym.p;
        l = &sym[bg.left];
        r = &sym[bg.right];
        /* stale: one side was merged away or grew since this pair was queued */
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size) continue;
        l->n += r->n;
        l->id = bg.res;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = bg.left;
        if (!mllm__try_bigram(s, l->prev, bg.left) || !mllm__try_bigram(s, bg.left, l->next)) return 0;
    }
    return 1;
}

/* Emits the merged symbols of s->text: tokens where they are, else byte fallback. */
static int mllm__emit_symbols(mllm__tok_session *s) {
    const mllm_vocab *v = s->v;
    const unsigned char *t = (const unsigned char *)s->text.p;
    int i;
    if (!s->sym.n) return 1;
    for (i = 0; i != -1; i = ((mllm__sym *)s->sym.p)[i].next) {
        const mllm__sym *x = &((mllm__sym *)s->sym.p)[i];
        uint32_t k;
        int32_t id = v->type == MLLM__VOCAB_SPM ? mllm__tok_find(v, (const char *)t + x->start, x->n)
                                                 : (x->id < v->n_tokens ? x->id : -1);
        if (id >= 0) {
            if (!mllm__emit(s, id)) return 0;
            continue;
        }
        for (k = 0; k < x->n; k++) {
            unsigned c = t[x->start + k];
            if (v->type == MLLM__VOCAB_SPM) {
                id = v->byte_tok[c] >= 0 ? v->byte_tok[c] : v->unk;
                if (id >= 0 && !mllm__emit(s, id)) return 0;
            } else {
                /* llama.cpp looks up each byte of the GPT-2 encoded text as a one-byte token */
                char enc[4];
                int e, ne = mllm__utf8_encode(v->gpt2_cp[c], enc);
                for (e = 0; e < ne; e++) {
                    id = v->single_tok[(unsigned char)enc[e]];
                    if (id >= 0 && !mllm__emit(s, id)) return 0;
                }
            }
        }
    }
    return 1;
}

/* SentencePiece: [▁] + text with spaces as ▁, merged by score. */
static int mllm__tokenize_spm(mllm__tok_session *s, const char *text, size_t n, int prefix_space) {
    size_t i;
    s->text.n = 0;
    if (!mllm__buf_reserve(&s->text, 3 * (n + 1), 1)) return 0;
    if (prefix_space) { memcpy(s->text.p, "\xe2\x96\x81", 3); s->text.n = 3; }
    for (i = 0; i < n; i++) {
        char *o = (char *)s->text.p + s->text.n;
        if (text[i] == ' ') { memcpy(o, "\xe2\x96\x81", 3); s->text.n += 3; }
        else { *o = text[i]; s->text.n++; }
    }
    return mllm__merge_symbols(s, s->text.n) && mllm__emit_symbols(s);
}

/* Byte-level BPE: decode, pre-tokenize, then merge each word's bytes by rank. */
static int mllm__tokenize_bpe(mllm__tok_session *s, const char *text, size_t n) {
    const mllm_vocab *v = s->v;
    const unsigned char *u = (const unsigned char *)text;
    mllm__utext ut;
    size_t i = 0, ncp = 0, w, start = 0;
    if (!mllm__buf_reserve(&s->cp, n + 1, sizeof(uint32_t)) || !mllm__buf_reserve(&s->fl, n + 1, 1)) return 0;
    while (i < n) {
        size_t len;
        uint32_t c = mllm__utf8_decode(u + i, n - i, &len);
        ((uint32_t *)s->cp.p)[ncp] = c;
        ((unsigned char *)s->fl.p)[ncp] = (unsigned char)mllm__ucd_flags(c);
        ncp++;
        i += len;
    }
    ut.cp = (const uint32_t *)s->cp.p;
    ut.fl = (const unsigned char *)s->fl.p;
    if (!mllm__pretokenize(v->pre, &ut, ncp, &s->ends, &s->tmp)) return 0;
    for (w = 0; w < s->ends.n; w++) {
        size_t end = ((size_t *)s->ends.p)[w], k;
        /* the word's bytes (invalid input was decoded to U+FFFD above, as llama.cpp does) */
        s->text.n = 0;
        if (!mllm__buf_reserve(&s->text, 4 * (end - start), 1)) return 0;
        for (k = start; k < end; k++)
            s->text.n += (size_t)mllm__utf8_encode(ut.cp[k], (char *)s->text.p + s->text.n);
        start = end;
        if (v->pre->ignore_merges) {
            /* the whole word in GPT-2 encoding may itself be a token */
            size_t m = 0, b;
            int32_t id;
            if (!mllm__buf_reserve(&s->enc, 2 * s->text.n + 1, 1)) return 0;
            for (b = 0; b < s->text.n; b++)
                m += (size_t)mllm__utf8_encode(v->gpt2_cp[((unsigned char *)s->text.p)[b]], (char *)s->enc.p + m);
            id = mllm__tok_find(v, (const char *)s->enc.p, m);
            if (id >= 0) {
                if (!mllm__emit(s, id)) return 0;
                continue;
            }
        }
        if (!mllm__merge_symbols(s, s->text.n) || !mllm__emit_symbols(s)) return 0;
    }
    return 1;
}

/* Text fragments after cutting out special tokens: tok >= 0 is a token, else text [start, start+n). */
typedef struct mllm__frag { mllm_token tok; size_t start, n; } mllm__frag;

/* First occurrence of needle in hay, or NULL. */
static const char *mllm__memfind(const char *hay, size_t hn, const char *nd, size_t nn) {
    const char *p = hay, *last;
    if (!nn || nn > hn) return NULL;
    last = hay + (hn - nn);
    while (p <= last) {
        p = (const char *)memchr(p, nd[0], (size_t)(last - p) + 1);
        if (!p) return NULL;
        if (memcmp(p, nd, nn) == 0) return p;
        p++;
    }
    return NULL;
}

/* Cuts special tokens out of the text, longest token first (llama.cpp's order): each token splits every
   text fragment at all its non-overlapping occurrences. */
static int mllm__partition(const mllm_vocab *v, const char *text, size_t len, int parse_special, mllm__buf *frags,
                           mllm__buf *tmp) {
    unsigned char present[256];
    int k;
    size_t i;
    mllm__frag f;
    frags->n = 0;
    if (!len) return 1;
    f.tok = -1; f.start = 0; f.n = len;
    if (!mllm__buf_push(frags, &f, sizeof f)) return 0;
    memset(present, 0, sizeof present);
    for (i = 0; i < len; i++) present[(unsigned char)text[i]] = 1;
    for (k = 0; k < v->n_special; k++) {
        int32_t id = v->special[k];
        const char *st = v->str + v->str_off[id];
        size_t sn = mllm__str_len(v, id);
        mllm__buf swap;
        int found = 0;
        if (!parse_special && v->tt[id] != MLLM__TT_USER) continue;
        if (!present[(unsigned char)st[0]]) continue;
        tmp->n = 0;
        for (i = 0; i < frags->n; i++) {
            mllm__frag x = ((mllm__frag *)frags->p)[i];
            const char *hit;
            while (x.tok < 0 && (hit = mllm__memfind(text + x.start, x.n, st, sn)) != NULL) {
                size_t at = (size_t)(hit - text);
                mllm__frag left, tok;
                left.tok = -1; left.start = x.start; left.n = at - x.start;
                tok.tok = id; tok.start = at; tok.n = sn;
                if ((left.n && !mllm__buf_push(tmp, &left, sizeof left)) || !mllm__buf_push(tmp, &tok, sizeof tok)) return 0;
                x.n -= at + sn - x.start;
                x.start = at + sn;
                found = 1;
            }
            if ((x.tok >= 0 || x.n) && !mllm__buf_push(tmp, &x, sizeof x)) return 0;
        }
        if (found) { swap = *frags; *frags = *tmp; *tmp = swap; }
    }
    return 1;
}

int mllm_tokenize(const mllm_vocab *v, const char *text, size_t len, mllm_token *tokens, int max_tokens, int flags) {
    mllm__tok_session s;
    mllm__buf frags = {NULL, 0, 0}, tmp = {NULL, 0, 0};
    int ok, prev_special = 1, add = (flags & MLLM_TOKENIZE_ADD_SPECIAL) != 0;
    size_t i;
    if (!v || (!text && len) || max_tokens < 0 || (max_tokens > 0 && !tokens))
        return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_tokenize: bad argument");
    memset(&s, 0, sizeof s);
    s.v = v;
    ok = mllm__partition(v, text, len, (flags & MLLM_TOKENIZE_PARSE_SPECIAL) != 0, &frags, &tmp);
    if (ok && add && v->add_bos) ok = mllm__emit(&s, v->bos);
    for (i = 0; ok && i < frags.n; i++) {
        const mllm__frag *f = &((const mllm__frag *)frags.p)[i];
        if (f->tok >= 0) {
            ok = mllm__emit(&s, f->tok);
            prev_special = 1;
        } else if (v->type == MLLM__VOCAB_SPM) {
            /* SentencePiece adds a space before the text and after each special token */
            ok = mllm__tokenize_spm(&s, text + f->start, f->n, v->add_space_prefix && prev_special);
            prev_special = 0;
        } else {
            ok = mllm__tokenize_bpe(&s, text + f->start, f->n);
        }
    }
    if (ok && add && v->add_eos) ok = mllm__emit(&s, v->eos);
    if (ok && s.out.n > (size_t)INT_MAX) ok = 0;
    if (ok) {
        size_t n = s.out.n < (size_t)max_tokens ? s.out.n : (size_t)max_tokens;
        if (n) memcpy(tokens, s.out.p, n * sizeof(mllm_token));
    }
    MLLM_FREE(frags.p); MLLM_FREE(tmp.p); MLLM_FREE(s.text.p); MLLM_FREE(s.sym.p); MLLM_FREE(s.heap.p);
    MLLM_FREE(s.cp.p); MLLM_FREE(s.fl.p); MLLM_FREE(s.ends.p); MLLM_FREE(s.tmp.p); MLLM_FREE(s.enc.p);
    MLLM_FREE(s.out.p);
    return ok ? (int)s.out.n : mllm__fail(MLLM_ERR_NOMEM, "mllm_tokenize: out of memory");
}

/* ---------------------------------------------------------------- detokenize */
int mllm_token_to_bytes(const mllm_vocab *v, mllm_token t, char *buf, int cap) {
    uint32_t n;
    if (!v || t < 0 || t >= v->n_tokens || cap < 0 || (cap > 0 && !buf))
        return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_token_to_bytes: bad argument or token %d", (int)t);
    n = v->piece_off[t + 1] - v->piece_off[t];
    if ((int)n <= cap) memcpy(buf, v->piece + v->piece_off[t], n);
    return (int)n;
}

/* Piece of t as it appears in running text: SentencePiece's added leading space is dropped from the
   first piece that has text.  *has_text: whether the token has text at all (before that drop). */
static const char *mllm__detok_piece(const mllm_vocab *v, int n_seen, mllm_token t, int *len, int *has_text) {
    const char *p = v->piece + v->piece_off[t];
    *len = (int)(v->piece_off[t + 1] - v->piece_off[t]);
    *has_text = *len > 0;
    if (n_seen == 0 && v->add_space_prefix && *len > 0 && p[0] == ' ') { p++; (*len)--; }
    return p;
}

/* Number of bytes at the end of s[0, n) that start a UTF-8 character still missing bytes. */
static int mllm__utf8_incomplete_tail(const unsigned char *s, int n) {
    int k;
    for (k = 1; k <= 3 && k <= n; k++) {
        unsigned c = s[n - k];
        if ((c & 0xc0) == 0x80) continue;            /* continuation byte: look further back */
        if (c >= 0xc0 && c < 0xf8 && (int)mllm__utf8_len((unsigned char)c) > k) return k;
        return 0;
    }
    return 0;
}

int mllm_detok_push(const mllm_vocab *v, mllm_detok *st, mllm_token t, char *out, int cap) {
    const char *p;
    int len, total, hold, has_text;
    if (!v || !st || t < 0 || t >= v->n_tokens || cap < 0 || (cap > 0 && !out) || st->n_pending < 0 ||
        st->n_pending > 3)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_detok_push: bad argument or token %d", (int)t);
    p = mllm__detok_piece(v, st->n_tokens, t, &len, &has_text);
    total = st->n_pending + len;
    if (total > cap) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_detok_push: buffer of %d bytes too small", cap);
    if (has_text) st->n_tokens++;
    memcpy(out, st->pending, (size_t)st->n_pending);
    memcpy(out + st->n_pending, p, (size_t)len);
    hold = mllm__utf8_incomplete_tail((const unsigned char *)out, total);
    memcpy(st->pending, out + total - hold, (size_t)hold);
    st->n_pending = hold;
    return total - hold;
}

int mllm_detok_flush(mllm_detok *st, char *out, int cap) {
    int n;
    if (!st || st->n_pending < 0 || st->n_pending > 3 || cap < st->n_pending || (st->n_pending && !out))
        return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_detok_flush: bad argument");
    n = st->n_pending;
    memcpy(out, st->pending, (size_t)n);
    st->n_pending = 0;
    return n;
}

int mllm_detokenize(const mllm_vocab *v, const mllm_token *tokens, int n, char *out, int cap) {
    int i, seen = 0;
    size_t total = 0;
    if (!v || n < 0 || (n > 0 && !tokens) || cap < 0 || (cap > 0 && !out))
        return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_detokenize: bad argument");
    for (i = 0; i < n; i++) {
        int len, has_text;
        if (tokens[i] < 0 || tokens[i] >= v->n_tokens)
            return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_detokenize: bad token %d", (int)tokens[i]);
        mllm__detok_piece(v, seen, tokens[i], &len, &has_text);
        seen += has_text;
        total += (size_t)len;
        if (total > (size_t)INT_MAX) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_detokenize: text too long");
    }
    if (total <= (size_t)cap) {
        char *o = out;
        for (i = 0, seen = 0; i < n; i++) {
            int len, has_text;
            const char *p = mllm__detok_piece(v, seen, tokens[i], &len, &has_text);
            seen += has_text;
            memcpy(o, p, (size_t)len);
            o += len;
        }
    }
    return (int)total;
}


/* ============================================================ SECTION: model (hyper-parameters, weights) */

/* ============================================================ SECTION: CPU backend */

/* ============================================================ SECTION: Metal backend */

/* ============================================================ SECTION: engine (paged KV, batched step, sampler) */

/* ============================================================ SECTION: public API */

#endif /* METALLLM_IMPLEMENTATION_DONE */
#endif /* METALLLM_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the metalllm.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions: The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain. Anyone is free to copy, modify,
publish, use, compile, sell, or distribute this software, either in source code form or as a compiled
binary, for any purpose, commercial or non-commercial, and by any means.
------------------------------------------------------------------------------
*/
