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
   negative mllm_status. */
int mllm_tokenize(const mllm_vocab *vocab, const char *text, size_t len, mllm_token *tokens,
                  int max_tokens, int flags);

/* Text of one token as raw bytes (SentencePiece "▁" becomes a space, byte tokens become their byte).
   Returns the byte count (may exceed cap: then nothing is written) or a negative mllm_status. */
int mllm_token_to_bytes(const mllm_vocab *vocab, mllm_token token, char *buf, int cap);

/* Streaming detokenizer: zero-initialize, feed tokens one at a time; it emits only complete UTF-8
   characters and holds a partial one until its remaining bytes arrive.  Returns bytes written to out
   (cap >= 32 always suffices for one token of our vocabularies; a longer piece returns
   MLLM_ERR_INVALID_ARG with nothing consumed).  mllm_detok_flush emits held bytes as they are. */
typedef struct mllm_detok {
    unsigned char pending[4];
    int n_pending;
    int n_tokens;                    /* tokens seen: SPM drops the space of the first piece */
} mllm_detok;
int mllm_detok_push(const mllm_vocab *vocab, mllm_detok *state, mllm_token token, char *out, int cap);
int mllm_detok_flush(mllm_detok *state, char *out, int cap);

/* Whole-sequence detokenize; returns bytes needed (writes only if <= cap) or negative status. */
int mllm_detokenize(const mllm_vocab *vocab, const mllm_token *tokens, int n, char *out, int cap);

int mllm_vocab_size(const mllm_vocab *vocab);
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

#if defined(__GNUC__) || defined(__clang__)
#define MLLM__INLINE static inline __attribute__((always_inline))
#else
#define MLLM__INLINE static inline
#endif

/* Always-compiled scalar kernels: the fallback, and the baseline the SIMD kernels are tested against. */
static float mllm__vec_dot_scalar(uint32_t type, int64_t n, const void *w, const void *x);

/* ---- half precision and bfloat16.  With F16C the instructions do the same IEEE conversions
   (round to nearest even, NaN quieted with its payload kept), so both paths give identical bits. */
static float mllm__f16_to_f32(uint16_t h) {
#if MLLM__AVX2 && defined(__F16C__)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 0x3ff, u;
    float f;
    if (e == 31) u = sign | 0x7f800000 | (m ? 0x400000 | (m << 13) : 0);  /* inf, quiet NaN */
    else if (e) u = sign | ((e + 112) << 23) | (m << 13);                   /* rebias 15 -> 127 */
    else if (!m) u = sign;
    else {                                                                  /* subnormal: normalize */
        e = 113;
        while (!(m & 0x400)) { m <<= 1; e--; }
        u = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
    memcpy(&f, &u, 4);
    return f;
#endif
}

static uint16_t mllm__f32_to_f16(float f) {
#if MLLM__AVX2 && defined(__F16C__)
    return (uint16_t)_cvtss_sh(f, 0);
#else
    uint32_t u, a, sign, h;
    memcpy(&u, &f, 4);
    sign = (u >> 16) & 0x8000;
    a = u & 0x7fffffff;
    if (a > 0x7f800000) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));   /* quiet NaN */
    if (a >= 0x477ff000) return (uint16_t)(sign | 0x7c00);   /* >= 65520 rounds past 65504: inf */
    if (a >= 0x38800000) {                                    /* normal half: drop 13 mantissa bits */
        uint32_t rest = a & 0x1fff;
        h = (a - 0x38000000) >> 13;
        if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;   /* a carry may bump the exponent */
        return (uint16_t)(sign | h);
    }
    if (a < 0x33000000) return (uint16_t)sign;                /* below 2^-25: rounds to zero */
    {                                                         /* subnormal half: units of 2^-24 */
        uint32_t m = (a & 0x7fffff) | 0x800000, shift = 126 - (a >> 23), rest, halfway;
        h = m >> shift;
        rest = m & ((1u << shift) - 1);
        halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
#endif
}

static float mllm__bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t mllm__f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);   /* quiet NaN */
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);                 /* nearest even */
}

/* GGUF data is little-endian, as are the hosts we run on; memcpy keeps unaligned reads defined. */
static uint32_t mllm__rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static float mllm__rdf(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static float mllm__rdh(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return mllm__f16_to_f32(v); }
static float mllm__rdbf(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return mllm__bf16_to_f32(v); }

/* One element of a float-like row (F32, F16, BF16). */
MLLM__INLINE float mllm__rd_elem(uint32_t type, const uint8_t *row, int64_t i) {
    if (type == MLLM__F32) return mllm__rdf(row + 4 * i);
    return type == MLLM__F16 ? mllm__rdh(row + 2 * i) : mllm__rdbf(row + 2 * i);
}

/* ---- legacy 32-element blocks (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1).  Every block starts with an f16 scale d;
   the formats differ in where the quants live and what is added.  Element i < 16 is the low nibble of
   qs[i], element 16+i the high nibble; the 5-bit formats take bit 4 of element i from bit i of the
   32-bit qh.  Value = d * (q - zero) + m. */
typedef struct mllm__fmt32 {
    int qs, qh, m, s;              /* byte offsets in the block (-1: absent); s: Q8_1's d*sum(q) */
    int bits, zero;
} mllm__fmt32;

MLLM__INLINE mllm__fmt32 mllm__fmt32_of(uint32_t type) {
    mllm__fmt32 f = {2, -1, -1, -1, 8, 0};   /* Q8_0 */
    switch (type) {
    case MLLM__Q4_0: f.bits = 4; f.zero = 8; break;
    case MLLM__Q4_1: f.qs = 4; f.m = 2; f.bits = 4; break;
    case MLLM__Q5_0: f.qs = 6; f.qh = 2; f.bits = 5; f.zero = 16; break;
    case MLLM__Q5_1: f.qs = 8; f.qh = 4; f.m = 2; f.bits = 5; break;
    case MLLM__Q8_1: f.qs = 4; f.s = 2; break;
    default: break;
    }
    return f;
}

/* A decoded block: value i = d * q[i] + m.  Formats without a min use m = -0.0f, which adds exactly
   nothing (it even keeps the sign of a zero product), so dequantization stays bit-identical to d*q. */
typedef struct mllm__blk32 { float d, m, s; int8_t q[MLLM__QK]; } mllm__blk32;

static void mllm__decode32(uint32_t type, const uint8_t *b, mllm__blk32 *o) {
    mllm__fmt32 f = mllm__fmt32_of(type);
    uint32_t qh = f.qh >= 0 ? mllm__rd32(b + f.qh) : 0;
    int i;
    o->d = mllm__rdh(b);
    o->m = f.m >= 0 ? mllm__rdh(b + f.m) : -0.0f;
    o->s = f.s >= 0 ? mllm__rdh(b + f.s) : 0.0f;
    if (f.bits == 8) { memcpy(o->q, b + f.qs, MLLM__QK); return; }
    for (i = 0; i < 16; i++) {
        int lo = (b[f.qs + i] & 15) | (int)((qh >> i) & 1) << 4;
        int hi = (b[f.qs + i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
        o->q[i] = (int8_t)(lo - f.zero);
        o->q[i + 16] = (int8_t)(hi - f.zero);
    }
}

/* ---- K-quant super-blocks of 256 (Q4_K Q5_K Q6_K, and Q8_K).  Decoded to 16 sub-blocks of 16 with
   integer scale sc and min mn: value i = (d * sc[i/16]) * q[i] - dmin * mn[i/16].
     Q4_K: d, dmin (f16), 12 bytes of 6-bit scales/mins for 8 sub-blocks of 32, 128 bytes of nibbles
           (each 32 bytes hold sub-block 2c in the low and 2c+1 in the high nibbles).
     Q5_K: as Q4_K plus qh[32] before qs: bit c of qh[l] is bit 4 of element 32c + l.
     Q6_K: ql[128], qh[64], int8 scales[16], d; q = (4 low bits | 2 high bits << 4) - 32.
     Q8_K: float d, int8 qs[256], int16 bsums[16] (sums of 16 quants). */
typedef struct mllm__blk256 { float d, dmin; int sc[16], mn[16]; int8_t q[MLLM__QK_K]; } mllm__blk256;

/* The 12-byte Q4_K/Q5_K scale field, 8 six-bit scales and 8 six-bit mins: bytes 0-3 hold the low 6 bits
   of scales 0-3, bytes 4-7 those of mins 0-3; scale/min 4+k is the low/high nibble of byte 8+k with the
   top two bits of byte k / 4+k above it.  Done on whole 32-bit words. */
static void mllm__k4_scales(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w0 = mllm__rd32(s), w1 = mllm__rd32(s + 4), w2 = mllm__rd32(s + 8), v[4];
    v[0] = w0 & 0x3f3f3f3f;
    v[1] = (w2 & 0x0f0f0f0f) | ((w0 >> 2) & 0x30303030);
    v[2] = w1 & 0x3f3f3f3f;
    v[3] = ((w2 >> 4) & 0x0f0f0f0f) | ((w1 >> 2) & 0x30303030);
    memcpy(sc, v, 8);
    memcpy(mn, v + 2, 8);
}

/* Scales and mins per 16 elements (mn and dmin are 0 for the symmetric formats). */
static void mllm__kscales(uint32_t type, const uint8_t *b, mllm__blk256 *o) {
    int j;
    if (type == MLLM__Q4_K || type == MLLM__Q5_K) {
        uint8_t sc[8], mn[8];
        o->d = mllm__rdh(b);
        o->dmin = mllm__rdh(b + 2);
        mllm__k4_scales(b + 4, sc, mn);
        for (j = 0; j < 16; j++) {
            o->sc[j] = sc[j / 2];
            o->mn[j] = mn[j / 2];
        }
        return;
    }
    o->d = type == MLLM__Q6_K ? mllm__rdh(b + 208) : mllm__rdf(b);
    o->dmin = 0.0f;
    for (j = 0; j < 16; j++) {
        o->sc[j] = type == MLLM__Q6_K ? (int8_t)b[192 + j] : 1;
        o->mn[j] = 0;
    }
}

static void mllm__decode256(uint32_t type, const uint8_t *b, mllm__blk256 *o) {
    int c, l;
    mllm__kscales(type, b, o);
    if (type == MLLM__Q8_K) { memcpy(o->q, b + 4, MLLM__QK_K); return; }
    if (type == MLLM__Q6_K) {
        for (c = 0; c < 2; c++) {          /* 128 elements from ql[64c..], qh[32c..] */
            const uint8_t *ql = b + 64 * c, *qh = b + 128 + 32 * c;
            int8_t *q = o->q + 128 * c;
            for (l = 0; l < 32; l++) {
                q[l] = (int8_t)(((ql[l] & 15) | (qh[l] & 3) << 4) - 32);
                q[l + 32] = (int8_t)(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
                q[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
                q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
            }
        }
        return;
    }
    {                                      /* Q4_K, Q5_K */
        const uint8_t *qh = b + 16, *qs = b + (type == MLLM__Q5_K ? 48 : 16);
        for (c = 0; c < 4; c++)
            for (l = 0; l < 32; l++) {
                int lo = qs[32 * c + l] & 15, hi = qs[32 * c + l] >> 4;
                if (type == MLLM__Q5_K) {
                    lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                    hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                o->q[64 * c + l] = (int8_t)lo;
                o->q[64 * c + 32 + l] = (int8_t)hi;
            }
    }
}

static int mllm__is_k(uint32_t type) {
    return type == MLLM__Q4_K || type == MLLM__Q5_K || type == MLLM__Q6_K || type == MLLM__Q8_K;
}

static void mllm__dequant_row(uint32_t type, const void *src, float *dst, int64_t n) {
    const uint8_t *s = (const uint8_t *)src;
    const mllm__type_traits *t = mllm__traits(type);
    int64_t i, nb;
    int j;
    MLLM_ASSERT(t && n % t->block == 0);
    nb = n / t->block;
    if (t->block == 1) {
        for (i = 0; i < n; i++) dst[i] = mllm__rd_elem(type, s, i);
    } else if (mllm__is_k(type)) {
        mllm__blk256 b;
        for (i = 0; i < nb; i++, dst += MLLM__QK_K) {
            mllm__decode256(type, s + i * t->bytes, &b);
            for (j = 0; j < MLLM__QK_K; j++) dst[j] = b.d * (float)b.sc[j / 16] * b.q[j] - b.dmin * (float)b.mn[j / 16];
        }
    } else {
        mllm__blk32 b;
        for (i = 0; i < nb; i++, dst += MLLM__QK) {
            mllm__decode32(type, s + i * t->bytes, &b);
            for (j = 0; j < MLLM__QK; j++) dst[j] = b.d * b.q[j] + b.m;
        }
    }
}

/* ---- activation quantization, rounding as llama.cpp's x86 build does (its fixtures are ours):
   Q8_0/Q8_1: d = amax/127 stored as f16, q = round-half-even(x * (127/amax)); Q8_1 adds s = d*sum(q).
   Q8_K: the (first) element of largest magnitude maps to -127 (scale -127/max), d = 1/scale stays float, and
   bsums hold the sums of each 16 quants. */
static void mllm__quant_q8_32(const float *x, uint8_t *y, int with_sum) {
    float amax = 0.0f, d, id;
    int i, sum = 0, off = with_sum ? 4 : 2;
    uint16_t h;
    for (i = 0; i < MLLM__QK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    d = amax / 127.0f;
    id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (i = 0; i < MLLM__QK; i++) {
        int q = (int)nearbyintf(x[i] * id);
        y[off + i] = (uint8_t)(int8_t)q;
        sum += q;
    }
    h = mllm__f32_to_f16(d);
    memcpy(y, &h, 2);
    if (with_sum) {
        h = mllm__f32_to_f16(d * (float)sum);
        memcpy(y + 2, &h, 2);
    }
}

static void mllm__quant_q8_k(const float *x, uint8_t *y) {
    float amax = 0.0f, max = 0.0f, iscale, d;
    int16_t bsums[16] = {0};
    int i;
    for (i = 0; i < MLLM__QK_K; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    iscale = amax != 0.0f ? -127.0f / max : 0.0f;
    for (i = 0; i < MLLM__QK_K; i++) {
        int q = (int)nearbyintf(iscale * x[i]);
        q = q > 127 ? 127 : q;
        y[4 + i] = (uint8_t)(int8_t)q;
        bsums[i / 16] = (int16_t)(bsums[i / 16] + q);
    }
    d = amax != 0.0f ? 1.0f / iscale : 0.0f;
    memcpy(y, &d, 4);
    memcpy(y + 4 + MLLM__QK_K, bsums, sizeof bsums);
}

static void mllm__quant_row(uint32_t type, const float *src, void *dst, int64_t n) {
    uint8_t *y = (uint8_t *)dst;
    int64_t i;
    switch (type) {
    case MLLM__F32: memcpy(y, src, (size_t)n * 4); break;
    case MLLM__F16:
    case MLLM__BF16:
        for (i = 0; i < n; i++) {
            uint16_t h = type == MLLM__F16 ? mllm__f32_to_f16(src[i]) : mllm__f32_to_bf16(src[i]);
            memcpy(y + 2 * i, &h, 2);
        }
        break;
    case MLLM__Q8_0:
    case MLLM__Q8_1:
        MLLM_ASSERT(n % MLLM__QK == 0);
        for (i = 0; i < n / MLLM__QK; i++)
            mllm__quant_q8_32(src + i * MLLM__QK, y + i * (type == MLLM__Q8_1 ? 36 : 34), type == MLLM__Q8_1);
        break;
    case MLLM__Q8_K:
        MLLM_ASSERT(n % MLLM__QK_K == 0);
        for (i = 0; i < n / MLLM__QK_K; i++) mllm__quant_q8_k(src + i * MLLM__QK_K, y + i * 292);
        break;
    default: MLLM_ASSERT(!"quant_row: not an activation format");
    }
}

/* ---- scalar dot products.  Integer sums per block as llama.cpp does, so the only rounding is in
   scaling and accumulating the block sums (float), which keeps us within its rounding. */
static float mllm__vec_dot_scalar(uint32_t type, int64_t n, const void *w, const void *x) {
    const uint8_t *wb = (const uint8_t *)w, *xb = (const uint8_t *)x;
    const mllm__type_traits *t = mllm__traits(type), *tx;
    int64_t i, nb;
    int j, k;
    float sum = 0.0f;
    MLLM_ASSERT(t && n % t->block == 0);
    tx = mllm__traits((uint32_t)t->vec_dot_type);
    nb = n / t->block;
    if (t->block == 1) {                   /* F32, F16, BF16: activations in the same format */
        double acc = 0.0;
        for (i = 0; i < n; i++) acc += (double)mllm__rd_elem(type, wb, i) * mllm__rd_elem(type, xb, i);
        return (float)acc;
    }
    if (mllm__is_k(type)) {                /* against Q8_K */
        mllm__blk256 a, b;
        for (i = 0; i < nb; i++) {
            int isum = 0, msum = 0;
            mllm__decode256(type, wb + i * t->bytes, &a);
            mllm__decode256(MLLM__Q8_K, xb + i * tx->bytes, &b);
            for (j = 0; j < 16; j++) {
                int s = 0, bs = 0;
                for (k = 16 * j; k < 16 * j + 16; k++) { s += a.q[k] * b.q[k]; bs += b.q[k]; }
                isum += a.sc[j] * s;
                msum += a.mn[j] * bs;
            }
            sum += b.d * (a.d * (float)isum - a.dmin * (float)msum);
        }
        return sum;
    }
    {                                      /* legacy blocks against Q8_0 or Q8_1 */
        mllm__blk32 a, b;
        for (i = 0; i < nb; i++) {
            int isum = 0;
            mllm__decode32(type, wb + i * t->bytes, &a);
            mllm__decode32((uint32_t)t->vec_dot_type, xb + i * tx->bytes, &b);
            for (j = 0; j < MLLM__QK; j++) isum += a.q[j] * b.q[j];
            sum += a.d * b.d * (float)isum;
            if (t->vec_dot_type == MLLM__Q8_1) sum += a.m * b.s;   /* sum(m * x) = m * s */
        }
        return sum;
    }
}

#if MLLM__AVX2
/* ---- AVX2: each weight block is unpacked to bytes once and multiplied with up to four activation
   rows by maddubs (u8 x s8 -> s16 pairs) and madd (-> s32), exact integer sums per block. */
static float mllm__avx2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 packed bytes -> 32 nibbles (low nibbles first, then high). */
MLLM__INLINE __m256i mllm__avx2_nibbles(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}

/* Bit i of a 32-bit word -> 0x10 in byte i (the fifth bit of the 5-bit formats). */
MLLM__INLINE __m256i mllm__avx2_bit4(uint32_t bits) {
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);   /* byte k: bit k%8 */
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), pick);  /* byte i = byte i/8 */
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* The 32 quants of a legacy block, offset removed (signed bytes), per mllm__fmt32. */
MLLM__INLINE __m256i mllm__avx2_q32(uint32_t type, const uint8_t *b) {
    mllm__fmt32 f = mllm__fmt32_of(type);
    __m256i q;
    if (f.bits == 8) return _mm256_loadu_si256((const __m256i *)(b + f.qs));
    q = mllm__avx2_nibbles(b + f.qs);
    if (f.qh >= 0) q = _mm256_or_si256(q, mllm__avx2_bit4(mllm__rd32(b + f.qh)));
    return f.zero ? _mm256_sub_epi8(q, _mm256_set1_epi8((char)f.zero)) : q;
}

MLLM__INLINE void mllm__avx2_dot32(uint32_t type, int64_t nb, const uint8_t *w, const uint8_t *x,
                                   size_t xs, int nx, float *out) {
    const mllm__fmt32 f = mllm__fmt32_of(type);
    const int wbytes = mllm__traits(type)->bytes, q81 = f.m >= 0, xbytes = q81 ? 36 : 34;
    __m256 acc[MLLM__DOT_MAX_NX];
    float msum[MLLM__DOT_MAX_NX];
    int64_t i;
    int j;
    for (j = 0; j < nx; j++) { acc[j] = _mm256_setzero_ps(); msum[j] = 0.0f; }
    for (i = 0; i < nb; i++) {
        const uint8_t *b = w + i * wbytes;
        const __m256i q = mllm__avx2_q32(type, b), aq = _mm256_sign_epi8(q, q);
        const float d = mllm__rdh(b), m = q81 ? mllm__rdh(b + f.m) : 0.0f;
        for (j = 0; j < nx; j++) {
            const uint8_t *xb = x + j * xs + i * xbytes;
            __m256i y = _mm256_loadu_si256((const __m256i *)(xb + (q81 ? 4 : 2)));
            /* unsigned quants multiply as they are; signed ones move their sign onto y */
            __m256i p = f.zero || f.bits == 8 ? _mm256_maddubs_epi16(aq, _mm256_sign_epi8(y, q))
                                              : _mm256_maddubs_epi16(q, y);
            p = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * mllm__rdh(xb)), _mm256_cvtepi32_ps(p), acc[j]);
            if (q81) msum[j] += m * mllm__rdh(xb + 2);
        }
    }
    for (j = 0; j < nx; j++) out[j] = mllm__avx2_hsum(acc[j]) + msum[j];
}

/* A K-quant super-block as 8 x 32 unsigned quants, the integer scales as int16 vectors (elements 0-15
   of sub-block k scaled by the low lane of scv[k], 16-31 by the high lane) and the 16 integer mins.
   Q6_K's -32 offset is folded into its mins (mn = 32*sc, dmin = d) so that every format multiplies
   unsigned quants: dot = d*dx*sum(sc*q.x) - dmin*dx*sum(mn*bsum). */
MLLM__INLINE void mllm__avx2_unpack_k(uint32_t type, const uint8_t *b, __m256i q[8], __m256i scv[8],
                                      __m256i *mnv, float *d, float *dmin) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30);
    int c;
    if (type == MLLM__Q6_K) {
        const int8_t *sc = (const int8_t *)(b + 192);
        *d = *dmin = mllm__rdh(b + 208);
        for (c = 0; c < 8; c++) scv[c] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
        *mnv = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc)), 5);
        for (c = 0; c < 2; c++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * c));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * c + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * c));
            q[4 * c + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
            q[4 * c + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
            q[4 * c + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2));
            q[4 * c + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                           _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
        }
        return;
    }
    {
        const uint8_t *qs = b + (type == MLLM__Q5_K ? 48 : 16);
        const __m256i hb = type == MLLM__Q5_K ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
        const __m256i one = _mm256_set1_epi8(1);
        uint8_t sc[8], mn[8];
        __m128i m8;
        *d = mllm__rdh(b);
        *dmin = mllm__rdh(b + 2);
        mllm__k4_scales(b + 4, sc, mn);
        m8 = _mm_loadl_epi64((const __m128i *)mn);
        *mnv = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));   /* each min twice: per 16 */
        for (c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            scv[2 * c] = _mm256_set1_epi16(sc[2 * c]);
            scv[2 * c + 1] = _mm256_set1_epi16(sc[2 * c + 1]);
            q[2 * c] = _mm256_and_si256(v, m4);
            q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (type == MLLM__Q5_K) {
                __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one);
                __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one);
                q[2 * c] = _mm256_or_si256(q[2 * c], _mm256_slli_epi16(h0, 4));
                q[2 * c + 1] = _mm256_or_si256(q[2 * c + 1], _mm256_slli_epi16(h1, 4));
            }
        }
    }
}

MLLM__INLINE void mllm__avx2_dotk(uint32_t type, int64_t nb, const uint8_t *w, const uint8_t *x,
                                  size_t xs, int nx, float *out) {
    const int wbytes = mllm__traits(type)->bytes, xbytes = 292;
    __m256 acc[MLLM__DOT_MAX_NX];
    int64_t i;
    int j, k;
    for (j = 0; j < nx; j++) acc[j] = _mm256_setzero_ps();
    for (i = 0; i < nb; i++) {
        __m256i q[8], scv[8], mnv;
        float d, dmin;
        mllm__avx2_unpack_k(type, w + i * wbytes, q, scv, &mnv, &d, &dmin);
        for (j = 0; j < nx; j++) {
            const uint8_t *xb = x + j * xs + i * xbytes;
            const float dx = mllm__rdf(xb);
            __m256i s = _mm256_setzero_si256(), ms;
            for (k = 0; k < 8; k++) {
                __m256i y = _mm256_loadu_si256((const __m256i *)(xb + 4 + 32 * k));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], y), scv[k]));
            }
            ms = _mm256_madd_epi16(mnv, _mm256_loadu_si256((const __m256i *)(xb + 4 + MLLM__QK_K)));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(s), acc[j]);
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * dx), _mm256_cvtepi32_ps(ms), acc[j]);
        }
    }
    for (j = 0; j < nx; j++) out[j] = mllm__avx2_hsum(acc[j]);
}

/* 8 elements of a float-like row as floats. */
MLLM__INLINE __m256 mllm__avx2_load8(uint32_t type, const uint8_t *p) {
    if (type == MLLM__F32) return _mm256_loadu_ps((const float *)p);
#ifdef __F16C__
    if (type == MLLM__F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#endif
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

MLLM__INLINE void mllm__avx2_dotf(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x,
                                  size_t xs, int nx, float *out) {
    const int es = type == MLLM__F32 ? 4 : 2;
    __m256 acc[MLLM__DOT_MAX_NX];
    int64_t i;
    int j;
    for (j = 0; j < nx; j++) acc[j] = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 a = mllm__avx2_load8(type, w + i * es);
        for (j = 0; j < nx; j++) acc[j] = _mm256_fmadd_ps(a, mllm__avx2_load8(type, x + j * xs + i * es), acc[j]);
    }
    for (j = 0; j < nx; j++) {
        int64_t r;
        out[j] = mllm__avx2_hsum(acc[j]);
        for (r = i; r < n; r++) out[j] += mllm__rd_elem(type, w, r) * mllm__rd_elem(type, x + j * xs, r);
    }
}

/* Returns 0 when the type has no AVX2 kernel.  The constant type and row-count arguments let each
   inlined kernel specialize (accumulators in registers, loops over rows unrolled) for the common
   cases: one row (decode) and four (prefill). */
#define MLLM__AVX2_CASE(T, kernel, len)                                          \
    case T:                                                                      \
        if (nx == 1) kernel(T, len, w, x, xs, 1, out);                           \
        else if (nx == 4) kernel(T, len, w, x, xs, 4, out);                      \
        else kernel(T, len, w, x, xs, nx, out);                                  \
        return 1;
static int mllm__simd_dot_nx(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x, size_t xs,
                             int nx, float *out) {
    switch (type) {
    MLLM__AVX2_CASE(MLLM__Q4_0, mllm__avx2_dot32, n / MLLM__QK)
    MLLM__AVX2_CASE(MLLM__Q4_1, mllm__avx2_dot32, n / MLLM__QK)
    MLLM__AVX2_CASE(MLLM__Q5_0, mllm__avx2_dot32, n / MLLM__QK)
    MLLM__AVX2_CASE(MLLM__Q5_1, mllm__avx2_dot32, n / MLLM__QK)
    MLLM__AVX2_CASE(MLLM__Q8_0, mllm__avx2_dot32, n / MLLM__QK)
    MLLM__AVX2_CASE(MLLM__Q4_K, mllm__avx2_dotk, n / MLLM__QK_K)
    MLLM__AVX2_CASE(MLLM__Q5_K, mllm__avx2_dotk, n / MLLM__QK_K)
    MLLM__AVX2_CASE(MLLM__Q6_K, mllm__avx2_dotk, n / MLLM__QK_K)
    MLLM__AVX2_CASE(MLLM__F32, mllm__avx2_dotf, n)
#ifdef __F16C__
    MLLM__AVX2_CASE(MLLM__F16, mllm__avx2_dotf, n)
#endif
    MLLM__AVX2_CASE(MLLM__BF16, mllm__avx2_dotf, n)
    default: return 0;
    }
}
#undef MLLM__AVX2_CASE

#elif MLLM__NEON
/* ---- NEON: legacy blocks (the 32-quant unpack is shared with the scalar decoder; the products are
   8x8->16-bit multiply-accumulates, pairwise widened). K-quants and float rows use the scalar path. */
static int mllm__simd_dot_nx(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x, size_t xs,
                             int nx, float *out) {
    const mllm__type_traits *t = mllm__traits(type);
    const int q81 = t && t->vec_dot_type == MLLM__Q8_1, xbytes = q81 ? 36 : 34;
    int64_t i;
    int j;
    if (!t || t->block != MLLM__QK || type == MLLM__Q8_1) return 0;
    for (j = 0; j < nx; j++) out[j] = 0.0f;
    for (i = 0; i < n / MLLM__QK; i++) {
        mllm__blk32 a;
        int8x16_t q0, q1;
        mllm__decode32(type, w + i * t->bytes, &a);
        q0 = vld1q_s8(a.q);
        q1 = vld1q_s8(a.q + 16);
        for (j = 0; j < nx; j++) {
            const uint8_t *xb = x + j * xs + i * xbytes;
            const int8x16_t y0 = vld1q_s8((const int8_t *)(xb + (q81 ? 4 : 2))), y1 = vld1q_s8((const int8_t *)(xb + (q81 ? 20 : 18)));
            int16x8_t p0 = vmull_s8(vget_low_s8(q0), vget_low_s8(y0));
            int16x8_t p1 = vmull_s8(vget_low_s8(q1), vget_low_s8(y1));
            p0 = vmlal_s8(p0, vget_high_s8(q0), vget_high_s8(y0));
            p1 = vmlal_s8(p1, vget_high_s8(q1), vget_high_s8(y1));
            out[j] += a.d * mllm__rdh(xb) * (float)vaddvq_s32(vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)));
            if (q81) out[j] += a.m * mllm__rdh(xb + 2);
        }
    }
    return 1;
}
#else
static int mllm__simd_dot_nx(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x, size_t xs,
                             int nx, float *out) {
    (void)type; (void)n; (void)w; (void)x; (void)xs; (void)nx; (void)out;
    return 0;
}
#endif

static void mllm__vec_dot_nx(uint32_t type, int64_t n, const void *w, const void *x, size_t x_stride,
                             int nx, float *out) {
    int j;
    MLLM_ASSERT(nx >= 1 && nx <= MLLM__DOT_MAX_NX);
    if (mllm__simd_dot_nx(type, n, (const uint8_t *)w, (const uint8_t *)x, x_stride, nx, out)) return;
    for (j = 0; j < nx; j++) out[j] = mllm__vec_dot_scalar(type, n, w, (const uint8_t *)x + j * x_stride);
}

static float mllm__vec_dot(uint32_t type, int64_t n, const void *w, const void *x) {
    float r;
    mllm__vec_dot_nx(type, n, w, x, 0, 1, &r);
    return r;
}


/* ============================================================ SECTION: tokenizer */

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
