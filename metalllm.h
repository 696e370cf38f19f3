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


/* ============================================================ SECTION: tokenizer */

/* ============================================================ SECTION: model (hyper-parameters, weights) */

/* ============================================================ SECTION: CPU backend */

/* ============================================================ SECTION: Metal backend */
/* The engine drives a GPU only through this small host interface (a table of functions), with two
   implementations: Metal itself (below, MLLM__HAVE_METAL: Objective-C runtime calls from plain C,
   no .m files) and the MSL emulator of the test suite (tests/emu/emu_device.h), so the engine's GPU
   path runs unchanged on Linux. Semantics follow Metal's concurrent compute encoder: dispatches
   between two memory barriers may run in any order (the emulator runs them in reverse), and a
   command buffer's results are visible to the CPU only after wait. */
enum { MLLM__GPU_SHARED = 0, MLLM__GPU_PRIVATE = 1 };   /* private: no CPU access (contents == NULL) */
typedef struct mllm__gpu_buf mllm__gpu_buf;               /* opaque, backend-defined */
typedef struct mllm__gpu_pipe mllm__gpu_pipe;
typedef struct mllm__gpu_cmd mllm__gpu_cmd;               /* a command buffer with one open compute encoder */

typedef struct mllm__gpu_vt {
    const char *name;
    void (*destroy)(void *dev);
    mllm__gpu_buf *(*buf_new)(void *dev, size_t bytes, int storage);   /* zero-filled; NULL on failure */
    mllm__gpu_buf *(*buf_wrap)(void *dev, void *ptr, size_t bytes);    /* no copy; ptr and bytes page-aligned */
    void *(*buf_contents)(mllm__gpu_buf *b);                           /* NULL for private buffers */
    void (*buf_free)(mllm__gpu_buf *b);
    mllm__gpu_pipe *(*pipeline)(void *dev, const char *kernel);        /* cached by the backend; NULL + mllm__fail */
    mllm__gpu_cmd *(*begin)(void *dev);
    void (*set_buffer)(mllm__gpu_cmd *c, mllm__gpu_buf *b, size_t offset, int index);
    void (*set_bytes)(mllm__gpu_cmd *c, const void *data, size_t bytes, int index);   /* copied now */
    void (*set_tg_memory)(mllm__gpu_cmd *c, size_t bytes, int index);
    void (*dispatch)(mllm__gpu_cmd *c, mllm__gpu_pipe *p, const uint32_t tgs[3], const uint32_t tpt[3]);
    void (*barrier)(mllm__gpu_cmd *c);          /* dispatches after it see the buffer writes before it */
    void (*commit)(mllm__gpu_cmd *c);
    mllm_status (*wait)(mllm__gpu_cmd *c);      /* waits for c, then releases it */
} mllm__gpu_vt;

/* What the engine asked of the GPU, for the performance checks (e.g. one commit per decode step). */
typedef struct mllm__gpu_counters {
    uint64_t dispatches, barriers, commits, waits, bytes_read;
} mllm__gpu_counters;

typedef struct mllm__gpu {
    const mllm__gpu_vt *vt;
    void *dev;
    mllm__gpu_counters n;
} mllm__gpu;

/* The engine calls these (not the table) so that every backend is counted the same way. */
static void mllm__gpu_dispatch(mllm__gpu *g, mllm__gpu_cmd *c, mllm__gpu_pipe *p, uint32_t gx, uint32_t gy,
                               uint32_t gz, uint32_t tx, uint32_t ty, uint32_t tz) {
    uint32_t tgs[3], tpt[3];
    tgs[0] = gx; tgs[1] = gy; tgs[2] = gz;
    tpt[0] = tx; tpt[1] = ty; tpt[2] = tz;
    g->n.dispatches++;
    g->vt->dispatch(c, p, tgs, tpt);
}
static void mllm__gpu_barrier(mllm__gpu *g, mllm__gpu_cmd *c) { g->n.barriers++; g->vt->barrier(c); }
static void mllm__gpu_commit(mllm__gpu *g, mllm__gpu_cmd *c) { g->n.commits++; g->vt->commit(c); }
static mllm_status mllm__gpu_wait(mllm__gpu *g, mllm__gpu_cmd *c) { g->n.waits++; return g->vt->wait(c); }
/* Copies GPU results to the CPU (shared buffers only; after wait). */
static mllm_status mllm__gpu_read(mllm__gpu *g, mllm__gpu_buf *b, size_t offset, void *dst, size_t bytes) {
    const char *src = (const char *)g->vt->buf_contents(b);
    if (!src) return mllm__fail(MLLM_ERR_BACKEND, "gpu: reading a private buffer");
    memcpy(dst, src + offset, bytes);
    g->n.bytes_read += bytes;
    return MLLM_OK;
}
static void mllm__gpu_close(mllm__gpu *g) {
    if (g->vt && g->vt->destroy) g->vt->destroy(g->dev);
    g->vt = NULL;
    g->dev = NULL;
}

/* The kernels' MSL source (the files kernels/NAME.metal), embedded by gen/embed_kernels.sh; the Metal backend
   compiles them at start-up. (On a Mac with Xcode a precompiled .metallib could be embedded instead.) */
typedef struct mllm__kernel_src {
    const char *name;
    const unsigned char *src;
    unsigned int len;
} mllm__kernel_src;
/* BEGIN GENERATED KERNELS */
static const mllm__kernel_src mllm__kernel_sources[] = {
    {NULL, NULL, 0}   /* (keeps the array non-empty) */
};
static const size_t mllm__n_kernel_sources = 0;
/* END GENERATED KERNELS */

#if MLLM__HAVE_METAL || defined(MLLM__FORCE_METAL_STUBS)
/* Metal through the Objective-C runtime: every message is objc_msgSend cast to the exact C prototype
   of the method (the ABI requires the cast). MLLM__FORCE_METAL_STUBS compiles this on Linux against
   tests/emu/objc_stub, so that the test suite type-checks it. Link with -framework Metal -framework
   Foundation. */
#include <objc/runtime.h>
#include <objc/message.h>
typedef unsigned long mllm__nsuint;   /* NSUInteger on 64-bit Apple platforms */
typedef struct mllm__mtl_size { mllm__nsuint width, height, depth; } mllm__mtl_size;   /* MTLSize */
#ifdef __cplusplus
extern "C" {
#endif
id MTLCreateSystemDefaultDevice(void);
void *objc_autoreleasePoolPush(void);
void objc_autoreleasePoolPop(void *pool);
#ifdef __cplusplus
}
#endif
enum {
    MLLM__MTL_STORAGE_SHARED = 0 << 4,    /* MTLResourceStorageModeShared */
    MLLM__MTL_STORAGE_PRIVATE = 2 << 4,   /* MTLResourceStorageModePrivate */
    MLLM__MTL_DISPATCH_CONCURRENT = 1,    /* MTLDispatchTypeConcurrent */
    MLLM__MTL_BARRIER_BUFFERS = 1,        /* MTLBarrierScopeBuffers */
    MLLM__MTL_STATUS_ERROR = 5,           /* MTLCommandBufferStatusError */
    MLLM__NS_UTF8 = 4                     /* NSUTF8StringEncoding */
};
#define MLLM__SEL(s) sel_registerName(s)
/* Typed message sends: MLLM__MSG(return type, argument types...)(receiver, selector, arguments...).
   objc_msgSend goes through void (*)(void), the generic function pointer type, so that neither its
   declared type nor gcc's check of calls through casts gets in the way. */
typedef void (*mllm__objc_fn)(void);
static mllm__objc_fn mllm__msgsend(void) { return (mllm__objc_fn)objc_msgSend; }
#define MLLM__MSG(R, ...) ((R (*)(id, SEL, __VA_ARGS__))mllm__msgsend())
#define MLLM__MSG0(R) ((R (*)(id, SEL))mllm__msgsend())

#define MLLM__MTL_MAX_LIBS 32
#define MLLM__MTL_MAX_PIPES 128
struct mllm__gpu_pipe { char name[64]; id state; };
struct mllm__gpu_buf { id buf; int storage; };
struct mllm__gpu_cmd { id cb, enc; void *pool; };
typedef struct mllm__mtl {
    id device, queue;
    id libs[MLLM__MTL_MAX_LIBS];
    int n_libs, n_pipes;
    struct mllm__gpu_pipe pipes[MLLM__MTL_MAX_PIPES];
} mllm__mtl;

static void mllm__mtl_release(id o) { if (o) MLLM__MSG0(void)(o, MLLM__SEL("release")); }
static id mllm__mtl_string(const char *s, size_t len) {   /* owned NSString */
    id str = MLLM__MSG0(id)((id)objc_getClass("NSString"), MLLM__SEL("alloc"));
    return MLLM__MSG(id, const void *, mllm__nsuint, mllm__nsuint)(str, MLLM__SEL("initWithBytes:length:encoding:"), s,
                                                                   (mllm__nsuint)len, (mllm__nsuint)MLLM__NS_UTF8);
}
static const char *mllm__mtl_error_text(id err) {   /* NSError -> C string (autoreleased) */
    id d;
    if (!err) return "unknown error";
    d = MLLM__MSG0(id)(err, MLLM__SEL("localizedDescription"));
    return d ? MLLM__MSG0(const char *)(d, MLLM__SEL("UTF8String")) : "unknown error";
}

static void mllm__mtl_destroy(void *dev) {
    mllm__mtl *m = (mllm__mtl *)dev;
    int i;
    if (!m) return;
    for (i = 0; i < m->n_pipes; i++) mllm__mtl_release(m->pipes[i].state);
    for (i = 0; i < m->n_libs; i++) mllm__mtl_release(m->libs[i]);
    mllm__mtl_release(m->queue);
    mllm__mtl_release(m->device);
    MLLM_FREE(m);
}
static mllm__gpu_buf *mllm__mtl_buf_make(id buf, int storage) {
    mllm__gpu_buf *b;
    if (!buf) return NULL;
    b = MLLM__CAST(mllm__gpu_buf *, mllm__calloc(1, sizeof *b));
    if (!b) { mllm__mtl_release(buf); return NULL; }
    b->buf = buf;
    b->storage = storage;
    return b;
}
static mllm__gpu_buf *mllm__mtl_buf_new(void *dev, size_t bytes, int storage) {
    mllm__mtl *m = (mllm__mtl *)dev;
    mllm__nsuint opt = storage == MLLM__GPU_PRIVATE ? MLLM__MTL_STORAGE_PRIVATE : MLLM__MTL_STORAGE_SHARED;
    id buf = MLLM__MSG(id, mllm__nsuint, mllm__nsuint)(m->device, MLLM__SEL("newBufferWithLength:options:"),
                                                      (mllm__nsuint)(bytes ? bytes : 1), opt);
    return mllm__mtl_buf_make(buf, storage);
}
static mllm__gpu_buf *mllm__mtl_buf_wrap(void *dev, void *ptr, size_t bytes) {
    mllm__mtl *m = (mllm__mtl *)dev;
    id buf = MLLM__MSG(id, void *, mllm__nsuint, mllm__nsuint, void *)(
        m->device, MLLM__SEL("newBufferWithBytesNoCopy:length:options:deallocator:"), ptr, (mllm__nsuint)bytes,
        (mllm__nsuint)MLLM__MTL_STORAGE_SHARED, NULL);
    return mllm__mtl_buf_make(buf, MLLM__GPU_SHARED);
}
static void *mllm__mtl_buf_contents(mllm__gpu_buf *b) {
    return b->storage == MLLM__GPU_PRIVATE ? NULL : MLLM__MSG0(void *)(b->buf, MLLM__SEL("contents"));
}
static void mllm__mtl_buf_free(mllm__gpu_buf *b) {
    if (!b) return;
    mllm__mtl_release(b->buf);
    MLLM_FREE(b);
}
static mllm__gpu_pipe *mllm__mtl_pipeline(void *dev, const char *kernel) {
    mllm__mtl *m = (mllm__mtl *)dev;
    id name, fn = NULL, state, err = NULL;
    int i;
    for (i = 0; i < m->n_pipes; i++)
        if (!strcmp(m->pipes[i].name, kernel)) return &m->pipes[i];
    if (m->n_pipes == MLLM__MTL_MAX_PIPES || strlen(kernel) >= sizeof m->pipes[0].name) {
        mllm__fail(MLLM_ERR_BACKEND, "metal: too many pipelines or name too long: %s", kernel);
        return NULL;
    }
    name = mllm__mtl_string(kernel, strlen(kernel));
    for (i = 0; i < m->n_libs && !fn; i++) fn = MLLM__MSG(id, id)(m->libs[i], MLLM__SEL("newFunctionWithName:"), name);
    mllm__mtl_release(name);
    if (!fn) {
        mllm__fail(MLLM_ERR_BACKEND, "metal: no kernel named %s", kernel);
        return NULL;
    }
    state = MLLM__MSG(id, id, id *)(m->device, MLLM__SEL("newComputePipelineStateWithFunction:error:"), fn, &err);
    mllm__mtl_release(fn);
    if (!state) {
        mllm__fail(MLLM_ERR_BACKEND, "metal: pipeline %s: %s", kernel, mllm__mtl_error_text(err));
        return NULL;
    }
    snprintf(m->pipes[m->n_pipes].name, sizeof m->pipes[0].name, "%s", kernel);
    m->pipes[m->n_pipes].state = state;
    return &m->pipes[m->n_pipes++];
}
static mllm__gpu_cmd *mllm__mtl_begin(void *dev) {
    mllm__mtl *m = (mllm__mtl *)dev;
    mllm__gpu_cmd *c = MLLM__CAST(mllm__gpu_cmd *, mllm__calloc(1, sizeof *c));
    if (!c) return NULL;
    c->pool = objc_autoreleasePoolPush();   /* the command buffer and encoder are autoreleased */
    c->cb = MLLM__MSG0(id)(m->queue, MLLM__SEL("commandBuffer"));
    c->enc = MLLM__MSG(id, mllm__nsuint)(c->cb, MLLM__SEL("computeCommandEncoderWithDispatchType:"),
                                         (mllm__nsuint)MLLM__MTL_DISPATCH_CONCURRENT);
    return c;
}
static void mllm__mtl_set_buffer(mllm__gpu_cmd *c, mllm__gpu_buf *b, size_t offset, int index) {
    MLLM__MSG(void, id, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__SEL("setBuffer:offset:atIndex:"), b->buf,
                                                    (mllm__nsuint)offset, (mllm__nsuint)index);
}
static void mllm__mtl_set_bytes(mllm__gpu_cmd *c, const void *data, size_t bytes, int index) {
    MLLM__MSG(void, const void *, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__SEL("setBytes:length:atIndex:"), data,
                                                              (mllm__nsuint)bytes, (mllm__nsuint)index);
}
static void mllm__mtl_set_tg_memory(mllm__gpu_cmd *c, size_t bytes, int index) {
    MLLM__MSG(void, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__SEL("setThreadgroupMemoryLength:atIndex:"),
                                                (mllm__nsuint)bytes, (mllm__nsuint)index);
}
static void mllm__mtl_dispatch(mllm__gpu_cmd *c, mllm__gpu_pipe *p, const uint32_t tgs[3], const uint32_t tpt[3]) {
    mllm__mtl_size g, t;
    g.width = tgs[0]; g.height = tgs[1]; g.depth = tgs[2];
    t.width = tpt[0]; t.height = tpt[1]; t.depth = tpt[2];
    MLLM__MSG(void, id)(c->enc, MLLM__SEL("setComputePipelineState:"), p->state);
    MLLM__MSG(void, mllm__mtl_size, mllm__mtl_size)(c->enc, MLLM__SEL("dispatchThreadgroups:threadsPerThreadgroup:"), g, t);
}
static void mllm__mtl_barrier(mllm__gpu_cmd *c) {
    MLLM__MSG(void, mllm__nsuint)(c->enc, MLLM__SEL("memoryBarrierWithScope:"), (mllm__nsuint)MLLM__MTL_BARRIER_BUFFERS);
}
static void mllm__mtl_commit(mllm__gpu_cmd *c) {
    MLLM__MSG0(void)(c->enc, MLLM__SEL("endEncoding"));
    MLLM__MSG0(void)(c->cb, MLLM__SEL("commit"));
}
static mllm_status mllm__mtl_wait(mllm__gpu_cmd *c) {
    mllm_status st = MLLM_OK;
    MLLM__MSG0(void)(c->cb, MLLM__SEL("waitUntilCompleted"));
    if (MLLM__MSG0(mllm__nsuint)(c->cb, MLLM__SEL("status")) == MLLM__MTL_STATUS_ERROR)
        st = mllm__fail(MLLM_ERR_BACKEND, "metal: command buffer failed: %s",
                        mllm__mtl_error_text(MLLM__MSG0(id)(c->cb, MLLM__SEL("error"))));
    objc_autoreleasePoolPop(c->pool);
    MLLM_FREE(c);
    return st;
}
static const mllm__gpu_vt mllm__mtl_vt = {
    "metal", mllm__mtl_destroy, mllm__mtl_buf_new, mllm__mtl_buf_wrap, mllm__mtl_buf_contents, mllm__mtl_buf_free,
    mllm__mtl_pipeline, mllm__mtl_begin, mllm__mtl_set_buffer, mllm__mtl_set_bytes, mllm__mtl_set_tg_memory,
    mllm__mtl_dispatch, mllm__mtl_barrier, mllm__mtl_commit, mllm__mtl_wait};

/* Opens the default GPU and compiles the embedded kernels. */
static mllm_status mllm__mtl_open(mllm__gpu *g) {
    mllm__mtl *m = MLLM__CAST(mllm__mtl *, mllm__calloc(1, sizeof *m));
    size_t i;
    if (!m) return mllm__fail(MLLM_ERR_NOMEM, "metal: out of memory");
    m->device = MTLCreateSystemDefaultDevice();
    if (!m->device) { MLLM_FREE(m); return mllm__fail(MLLM_ERR_BACKEND, "metal: no GPU"); }
    m->queue = MLLM__MSG0(id)(m->device, MLLM__SEL("newCommandQueue"));
    for (i = 0; i < mllm__n_kernel_sources && m->n_libs < MLLM__MTL_MAX_LIBS; i++) {
        id err = NULL, lib, src = mllm__mtl_string((const char *)mllm__kernel_sources[i].src, mllm__kernel_sources[i].len);
        lib = MLLM__MSG(id, id, id, id *)(m->device, MLLM__SEL("newLibraryWithSource:options:error:"), src, (id)NULL, &err);
        mllm__mtl_release(src);
        if (!lib) {
            mllm__fail(MLLM_ERR_BACKEND, "metal: compiling %s: %s", mllm__kernel_sources[i].name, mllm__mtl_error_text(err));
            mllm__mtl_destroy(m);
            return MLLM_ERR_BACKEND;
        }
        m->libs[m->n_libs++] = lib;
    }
    g->vt = &mllm__mtl_vt;
    g->dev = m;
    memset(&g->n, 0, sizeof g->n);
    return MLLM_OK;
}
#endif /* MLLM__HAVE_METAL || MLLM__FORCE_METAL_STUBS */


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
