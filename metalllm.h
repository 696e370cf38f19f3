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

/* The implementation uses POSIX (mmap, clock_gettime, pthreads); under -std=c11 those need this macro
   before the first system header, so include the implementation before other headers or define it. */
#if defined(METALLLM_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

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
    int manual;                    /* no sampling: steps compute logits (mllm_seq_logits) and the caller
                                      feeds the next tokens with mllm_seq_append */
} mllm_seq_params;

/* Add a sequence with its prompt (token ids).  The prompt is processed by the following steps. */
mllm_status mllm_seq_add(mllm_context *ctx, const mllm_token *prompt, int n_prompt,
                         const mllm_seq_params *p, mllm_seq_id *out);
/* Fork: the new sequence shares src's KV blocks (copy-on-write) and history; its own sampler. */
mllm_status mllm_seq_fork(mllm_context *ctx, mllm_seq_id src, const mllm_seq_params *p,
                          mllm_seq_id *out);
mllm_status mllm_seq_remove(mllm_context *ctx, mllm_seq_id id);
/* Append tokens to a sequence (a user turn after the reply, or the caller's own pick in manual mode).
   A sequence that finished normally (EOG, max_tokens) resumes; its generated-token count restarts. */
mllm_status mllm_seq_append(mllm_context *ctx, mllm_seq_id id, const mllm_token *tokens, int n);

typedef struct mllm_step_token {
    mllm_seq_id seq;
    mllm_token token;              /* -1: no token (finished without one, or a manual sequence's logits
                                      are ready) */
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

/* ---------------------------------------------------------------- chat formatting */
typedef struct mllm_chat_message { const char *role; const char *content; } mllm_chat_message;
/* Formats messages with the model's chat template (ChatML, Llama 3 and Llama 2 / Mistral [INST] are
   recognised by their markers; a model without a template gets ChatML) and appends the opening of the
   assistant turn.  Writes a NUL-terminated string; returns the size needed including the NUL, or a
   negative status (MLLM_ERR_UNSUPPORTED for an unrecognised template). */
int mllm_chat_format(const mllm_model *model, const mllm_chat_message *msgs, int n_msgs, char *out, int cap);

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
#include <time.h>
#if !defined(_WIN32)
#include <unistd.h>
#endif
#ifndef MLLM_NO_THREADS
#include <pthread.h>
#endif

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

/* Sub-block j (0..7) of the 12-byte Q4_K/Q5_K scale field: bytes 0-3 hold the low 6 bits of scales
   0-3, bytes 4-7 those of mins 0-3; scales/mins 4-7 are a nibble of bytes 8-11 plus the top two bits
   of bytes 0-3 / 4-7. */
static void mllm__k4_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Scales and mins per 16 elements (mn and dmin are 0 for the symmetric formats). */
static void mllm__kscales(uint32_t type, const uint8_t *b, mllm__blk256 *o) {
    int j;
    if (type == MLLM__Q4_K || type == MLLM__Q5_K) {
        o->d = mllm__rdh(b);
        o->dmin = mllm__rdh(b + 2);
        for (j = 0; j < 8; j++) {
            mllm__k4_scale_min(b + 4, j, &o->sc[2 * j], &o->mn[2 * j]);
            o->sc[2 * j + 1] = o->sc[2 * j];
            o->mn[2 * j + 1] = o->mn[2 * j];
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
   Q8_K: the element of largest magnitude maps to -127 (scale -127/max), d = 1/scale stays float, and
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

/* A K-quant super-block as 8 x 32 unsigned quants plus, per 16 elements, the integer scale and the
   integer min.  Q6_K's -32 offset is folded into its mins (mn = 32*sc, dmin = d) so that every format
   multiplies unsigned quants: dot = d*dx*sum(sc*q.x) - dmin*dx*sum(mn*bsum). */
MLLM__INLINE void mllm__avx2_unpack_k(uint32_t type, const uint8_t *b, __m256i q[8], int16_t sc[16],
                                      int16_t mn[16], float *d, float *dmin) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30);
    mllm__blk256 s;
    int c;
    mllm__kscales(type, b, &s);
    for (c = 0; c < 16; c++) {
        sc[c] = (int16_t)s.sc[c];
        mn[c] = (int16_t)(type == MLLM__Q6_K ? 32 * s.sc[c] : s.mn[c]);
    }
    *d = s.d;
    *dmin = type == MLLM__Q6_K ? s.d : s.dmin;
    if (type == MLLM__Q6_K) {
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
        for (c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
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
        int16_t sc[16], mn[16];
        float d, dmin;
        mllm__avx2_unpack_k(type, w + i * wbytes, q, sc, mn, &d, &dmin);
        for (k = 0; k < 8; k++)             /* scale of elements 0-15 in the low lane, 16-31 high */
            scv[k] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
        mnv = _mm256_loadu_si256((const __m256i *)mn);
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

/* Returns 0 when the type has no AVX2 kernel.  The constant type arguments let each inlined kernel
   specialize. */
static int mllm__simd_dot_nx(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x, size_t xs,
                             int nx, float *out) {
    switch (type) {
    case MLLM__Q4_0: mllm__avx2_dot32(MLLM__Q4_0, n / MLLM__QK, w, x, xs, nx, out); return 1;
    case MLLM__Q4_1: mllm__avx2_dot32(MLLM__Q4_1, n / MLLM__QK, w, x, xs, nx, out); return 1;
    case MLLM__Q5_0: mllm__avx2_dot32(MLLM__Q5_0, n / MLLM__QK, w, x, xs, nx, out); return 1;
    case MLLM__Q5_1: mllm__avx2_dot32(MLLM__Q5_1, n / MLLM__QK, w, x, xs, nx, out); return 1;
    case MLLM__Q8_0: mllm__avx2_dot32(MLLM__Q8_0, n / MLLM__QK, w, x, xs, nx, out); return 1;
    case MLLM__Q4_K: mllm__avx2_dotk(MLLM__Q4_K, n / MLLM__QK_K, w, x, xs, nx, out); return 1;
    case MLLM__Q5_K: mllm__avx2_dotk(MLLM__Q5_K, n / MLLM__QK_K, w, x, xs, nx, out); return 1;
    case MLLM__Q6_K: mllm__avx2_dotk(MLLM__Q6_K, n / MLLM__QK_K, w, x, xs, nx, out); return 1;
    case MLLM__F32: mllm__avx2_dotf(MLLM__F32, n, w, x, xs, nx, out); return 1;
#ifdef __F16C__
    case MLLM__F16: mllm__avx2_dotf(MLLM__F16, n, w, x, xs, nx, out); return 1;
#endif
    case MLLM__BF16: mllm__avx2_dotf(MLLM__BF16, n, w, x, xs, nx, out); return 1;
    default: return 0;
    }
}

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
/* Architectures differ only in data: these flags, optional tensors (biases, q/k norms, experts) and the
   RoPE style.  One forward pass serves them all. */
typedef struct mllm__hparams {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    int n_rot;                     /* rotated dims per head */
    int rope_neox;                 /* 1: rotate (i, i + n_rot/2) pairs; 0: adjacent pairs */
    float rope_base, rope_freq_scale, norm_eps;
    int n_expert, n_expert_used, n_ff_exp;
} mllm__hparams;

/* A weight matrix (or a stack of expert matrices): rows of `cols` elements, row-major in the mapping. */
typedef struct mllm__weight {
    const void *data;              /* NULL: tensor absent */
    uint32_t type;
    int64_t cols, rows, n_mat;     /* n_mat > 1 for stacked experts */
    size_t row_bytes;
} mllm__weight;

typedef struct mllm__layer {
    const float *attn_norm, *ffn_norm;
    const float *bq, *bk, *bv;     /* qwen2 biases (NULL otherwise) */
    const float *q_norm, *k_norm;  /* qwen3 per-head RMSNorm weights (NULL otherwise) */
    mllm__weight wq, wk, wv, wo;
    mllm__weight w_gate, w_up, w_down;                 /* dense FFN */
    const float *router;                               /* MoE: [n_expert][n_embd] F32 */
    mllm__weight gate_exps, up_exps, down_exps;        /* MoE: stacks of n_expert matrices */
} mllm__layer;

typedef struct mllm__ops mllm__ops;
typedef struct mllm__pool mllm__pool;

struct mllm_model {
    mllm__gguf gguf;
    char arch[32];
    char name[128];
    char *chat_template;
    mllm__hparams hp;
    mllm__weight tok_embd, output;
    const float *output_norm;
    mllm__layer *layers;
    mllm_vocab vocab;
    int vocab_ready;
    int n_ctx;                     /* context per sequence */
    int n_threads;
    mllm__pool *pool;
    const mllm__ops *ops;
    size_t weight_bytes;
};

/* Architecture metadata keys are prefixed by the architecture name ("llama.block_count"). */
static int mllm__arch_int(const mllm_model *m, const char *suffix, int64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch, suffix);
    return mllm__gguf_get_int(&m->gguf, key, out);
}

static int mllm__arch_f32(const mllm_model *m, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch, suffix);
    return mllm__gguf_get_f32(&m->gguf, key, out);
}

/* Reads a required positive integer within [1, max]. */
static mllm_status mllm__hp_int(const mllm_model *m, const char *suffix, int *out, int64_t dflt, int64_t max) {
    int64_t v = dflt;
    if (!mllm__arch_int(m, suffix, &v) && dflt < 0)
        return mllm__fail(MLLM_ERR_FORMAT, "missing metadata key %s.%s", m->arch, suffix);
    if (v < 0 || v > max || (dflt < 0 && v == 0))
        return mllm__fail(MLLM_ERR_FORMAT, "metadata %s.%s = %lld is out of range", m->arch, suffix, (long long)v);
    *out = (int)v;
    return MLLM_OK;
}

static mllm_status mllm__load_hparams(mllm_model *m) {
    mllm__hparams *hp = &m->hp;
    mllm_status st;
    float scale = 1.0f;
    int64_t v;
    const int64_t big = 1 << 20;
    mllm__str s;
    if ((st = mllm__hp_int(m, "block_count", &hp->n_layer, -1, 4096)) ||
        (st = mllm__hp_int(m, "embedding_length", &hp->n_embd, -1, big)) ||
        (st = mllm__hp_int(m, "attention.head_count", &hp->n_head, -1, 4096)) ||
        (st = mllm__hp_int(m, "attention.head_count_kv", &hp->n_head_kv, hp->n_head, 4096)) ||
        (st = mllm__hp_int(m, "feed_forward_length", &hp->n_ff, 0, big)) ||
        (st = mllm__hp_int(m, "context_length", &hp->n_ctx_train, 4096, 1 << 24)) ||
        (st = mllm__hp_int(m, "expert_count", &hp->n_expert, 0, 4096)) ||
        (st = mllm__hp_int(m, "expert_used_count", &hp->n_expert_used, 0, 4096)) ||
        (st = mllm__hp_int(m, "expert_feed_forward_length", &hp->n_ff_exp, hp->n_ff, big)))
        return st;
    if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv)
        return mllm__fail(MLLM_ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d", hp->n_head, hp->n_head_kv);
    if (hp->n_embd % hp->n_head && !mllm__arch_int(m, "attention.key_length", &v))
        return mllm__fail(MLLM_ERR_FORMAT, "embedding_length %d is not a multiple of head_count %d", hp->n_embd, hp->n_head);
    if ((st = mllm__hp_int(m, "attention.key_length", &hp->head_dim, hp->n_embd / hp->n_head, 1 << 16))) return st;
    if (mllm__arch_int(m, "attention.value_length", &v) && v != hp->head_dim)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "value_length %lld differs from key_length %d", (long long)v, hp->head_dim);
    if (hp->head_dim < 2 || hp->head_dim % 2)
        return mllm__fail(MLLM_ERR_FORMAT, "head dimension %d must be even", hp->head_dim);
    if ((st = mllm__hp_int(m, "rope.dimension_count", &hp->n_rot, hp->head_dim, hp->head_dim))) return st;
    if (hp->n_rot % 2) return mllm__fail(MLLM_ERR_FORMAT, "rope.dimension_count %d must be even", hp->n_rot);
    hp->rope_base = 10000.0f;
    mllm__arch_f32(m, "rope.freq_base", &hp->rope_base);
    hp->norm_eps = 1e-5f;
    mllm__arch_f32(m, "attention.layer_norm_rms_epsilon", &hp->norm_eps);
    hp->rope_freq_scale = 1.0f;
    {   /* only linear scaling (or none) is implemented; others would silently give wrong text */
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch);
        if (mllm__gguf_get_str(&m->gguf, key, &s) && !mllm__str_eq(s, "none") && !mllm__str_eq(s, "linear"))
            return mllm__fail(MLLM_ERR_UNSUPPORTED, "rope scaling type '%.*s'", (int)s.n, s.p);
        if (mllm__arch_f32(m, "rope.scaling.factor", &scale) && scale > 0) hp->rope_freq_scale = 1.0f / scale;
    }
    if (!(hp->rope_base > 0) || !(hp->norm_eps > 0) || !(hp->norm_eps < 1))
        return mllm__fail(MLLM_ERR_FORMAT, "rope base %g or norm eps %g out of range", hp->rope_base, hp->norm_eps);
    if (hp->n_expert && (hp->n_expert_used < 1 || hp->n_expert_used > hp->n_expert))
        return mllm__fail(MLLM_ERR_FORMAT, "expert_used_count %d with expert_count %d", hp->n_expert_used, hp->n_expert);
    hp->rope_neox = strcmp(m->arch, "llama") != 0;   /* qwen2/qwen3/qwen3moe rotate NeoX-style */
    return MLLM_OK;
}

/* Looks a tensor up and checks it has exactly the expected shape (ne0 = cols, ne1 = rows, ne2 = n_mat).
   A missing optional tensor leaves *w zeroed and returns OK. */
static mllm_status mllm__get_weight(mllm_model *m, mllm__weight *w, const char *name, int64_t cols, int64_t rows,
                                    int64_t n_mat, int required) {
    const mllm__gguf_tensor *t = mllm__gguf_tensor_find(&m->gguf, name);
    memset(w, 0, sizeof *w);
    if (!t) return required ? mllm__fail(MLLM_ERR_FORMAT, "missing tensor %s", name) : MLLM_OK;
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != n_mat || t->ne[3] != 1)
        return mllm__fail(MLLM_ERR_FORMAT, "tensor %s has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]", name,
                          (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)cols,
                          (long long)rows, (long long)n_mat);
    if (!mllm__traits(t->type) || t->type == MLLM__Q8_1 || t->type == MLLM__Q8_K)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "tensor %s has unsupported type %u", name, t->type);
    w->data = t->data;
    w->type = t->type;
    w->cols = cols;
    w->rows = rows;
    w->n_mat = n_mat;
    w->row_bytes = mllm__row_bytes(t->type, cols);
    m->weight_bytes += t->nbytes;
    return MLLM_OK;
}

/* 1-D F32 vectors (norms, biases). */
static mllm_status mllm__get_vec(mllm_model *m, const float **out, const char *name, int64_t n, int required) {
    mllm__weight w;
    mllm_status st = mllm__get_weight(m, &w, name, n, 1, 1, required);
    if (st) return st;
    if (w.data && w.type != MLLM__F32) return mllm__fail(MLLM_ERR_UNSUPPORTED, "tensor %s must be F32", name);
    *out = (const float *)w.data;
    return MLLM_OK;
}

static mllm_status mllm__load_weights(mllm_model *m) {
    const mllm__hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Dq = (int64_t)hp->n_head * hp->head_dim, Dkv = (int64_t)hp->n_head_kv * hp->head_dim;
    mllm_status st;
    char nm[96];
    int l;
    if ((st = mllm__get_weight(m, &m->tok_embd, "token_embd.weight", E, hp->n_vocab, 1, 1))) return st;
    if ((st = mllm__get_vec(m, &m->output_norm, "output_norm.weight", E, 1))) return st;
    if ((st = mllm__get_weight(m, &m->output, "output.weight", E, hp->n_vocab, 1, 0))) return st;
    if (!m->output.data) m->output = m->tok_embd;   /* tied embeddings */
    m->layers = MLLM__CAST(mllm__layer *, mllm__calloc((size_t)hp->n_layer, sizeof(mllm__layer)));
    if (!m->layers) return mllm__fail(MLLM_ERR_NOMEM, "out of memory for %d layers", hp->n_layer);
    for (l = 0; l < hp->n_layer; l++) {
        mllm__layer *L = &m->layers[l];
#define MLLM__NAME(s) (snprintf(nm, sizeof nm, "blk.%d." s, l), nm)
        if ((st = mllm__get_vec(m, &L->attn_norm, MLLM__NAME("attn_norm.weight"), E, 1)) ||
            (st = mllm__get_vec(m, &L->ffn_norm, MLLM__NAME("ffn_norm.weight"), E, 1)) ||
            (st = mllm__get_weight(m, &L->wq, MLLM__NAME("attn_q.weight"), E, Dq, 1, 1)) ||
            (st = mllm__get_weight(m, &L->wk, MLLM__NAME("attn_k.weight"), E, Dkv, 1, 1)) ||
            (st = mllm__get_weight(m, &L->wv, MLLM__NAME("attn_v.weight"), E, Dkv, 1, 1)) ||
            (st = mllm__get_weight(m, &L->wo, MLLM__NAME("attn_output.weight"), Dq, E, 1, 1)) ||
            (st = mllm__get_vec(m, &L->bq, MLLM__NAME("attn_q.bias"), Dq, 0)) ||
            (st = mllm__get_vec(m, &L->bk, MLLM__NAME("attn_k.bias"), Dkv, 0)) ||
            (st = mllm__get_vec(m, &L->bv, MLLM__NAME("attn_v.bias"), Dkv, 0)) ||
            (st = mllm__get_vec(m, &L->q_norm, MLLM__NAME("attn_q_norm.weight"), hp->head_dim, 0)) ||
            (st = mllm__get_vec(m, &L->k_norm, MLLM__NAME("attn_k_norm.weight"), hp->head_dim, 0)))
            return st;
        if (hp->n_expert) {
            const float *router = NULL;
            mllm__weight r;
            if ((st = mllm__get_weight(m, &r, MLLM__NAME("ffn_gate_inp.weight"), E, hp->n_expert, 1, 1))) return st;
            if (r.type != MLLM__F32) return mllm__fail(MLLM_ERR_UNSUPPORTED, "router %s must be F32", nm);
            router = (const float *)r.data;
            L->router = router;
            if ((st = mllm__get_weight(m, &L->gate_exps, MLLM__NAME("ffn_gate_exps.weight"), E, hp->n_ff_exp, hp->n_expert, 1)) ||
                (st = mllm__get_weight(m, &L->up_exps, MLLM__NAME("ffn_up_exps.weight"), E, hp->n_ff_exp, hp->n_expert, 1)) ||
                (st = mllm__get_weight(m, &L->down_exps, MLLM__NAME("ffn_down_exps.weight"), hp->n_ff_exp, E, hp->n_expert, 1)))
                return st;
        } else {
            if ((st = mllm__get_weight(m, &L->w_gate, MLLM__NAME("ffn_gate.weight"), E, hp->n_ff, 1, 1)) ||
                (st = mllm__get_weight(m, &L->w_up, MLLM__NAME("ffn_up.weight"), E, hp->n_ff, 1, 1)) ||
                (st = mllm__get_weight(m, &L->w_down, MLLM__NAME("ffn_down.weight"), hp->n_ff, E, 1, 1)))
                return st;
        }
#undef MLLM__NAME
    }
    return MLLM_OK;
}

/* Which architectures we run, and what each requires beyond the common llama layout. */
static mllm_status mllm__check_arch(mllm_model *m) {
    static const char *const known[] = {"llama", "qwen2", "qwen3", "qwen3moe"};
    size_t i;
    for (i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(m->arch, known[i])) break;
    if (i == sizeof known / sizeof known[0])
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "unsupported architecture '%s' (supported: llama, qwen2, qwen3, qwen3moe)", m->arch);
    if (!strcmp(m->arch, "qwen3moe") && !m->hp.n_expert)
        return mllm__fail(MLLM_ERR_FORMAT, "qwen3moe model without expert_count");
    return MLLM_OK;
}

/* Validates the vocabulary against the embedding matrix. */
static mllm_status mllm__load_model_meta(mllm_model *m) {
    mllm__str s;
    const mllm__gguf_tensor *emb;
    mllm_status st;
    if (!mllm__gguf_get_str(&m->gguf, "general.architecture", &s))
        return mllm__fail(MLLM_ERR_FORMAT, "missing general.architecture");
    if (s.n >= sizeof m->arch) return mllm__fail(MLLM_ERR_UNSUPPORTED, "architecture name too long");
    memcpy(m->arch, s.p, s.n);
    m->arch[s.n] = 0;
    if (mllm__gguf_get_str(&m->gguf, "general.name", &s)) {
        size_t n = s.n < sizeof m->name - 1 ? s.n : sizeof m->name - 1;
        memcpy(m->name, s.p, n);
        m->name[n] = 0;
    }
    if (mllm__gguf_get_str(&m->gguf, "tokenizer.chat_template", &s)) {
        m->chat_template = MLLM__CAST(char *, mllm__calloc(s.n + 1, 1));
        if (!m->chat_template) return mllm__fail(MLLM_ERR_NOMEM, "out of memory");
        memcpy(m->chat_template, s.p, s.n);
    }
    if ((st = mllm__load_hparams(m)) || (st = mllm__check_arch(m))) return st;
    emb = mllm__gguf_tensor_find(&m->gguf, "token_embd.weight");
    if (!emb) return mllm__fail(MLLM_ERR_FORMAT, "missing tensor token_embd.weight");
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 24)) return mllm__fail(MLLM_ERR_FORMAT, "token_embd has %lld rows", (long long)emb->ne[1]);
    m->hp.n_vocab = (int)emb->ne[1];
    if ((st = mllm__vocab_init(&m->vocab, &m->gguf))) return st;
    m->vocab_ready = 1;
    if (mllm_vocab_size(&m->vocab) > m->hp.n_vocab)
        return mllm__fail(MLLM_ERR_FORMAT, "vocabulary has %d tokens but token_embd only %d rows",
                          mllm_vocab_size(&m->vocab), m->hp.n_vocab);
    return MLLM_OK;
}

/* ============================================================ SECTION: CPU backend */
/* Row-wise reference ops of the CPU backend (also what the Metal kernels are tested against). */
static void mllm__rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* RoPE in place on one token's heads (x: n_heads * head_dim).  neox: rotate pairs (i, i + n_rot/2);
   otherwise adjacent pairs (2i, 2i+1).  Only the first n_rot dims of each head rotate. */
static void mllm__rope(float *x, int n_heads, int head_dim, int n_rot, int pos, float freq_base,
                       float freq_scale, int neox);
static void mllm__swiglu(float *out, const float *gate, const float *up, int n);  /* silu(g) * u */
static void mllm__softmax(float *x, int n);

/* ---- the batch a step runs, and the paged KV cache it attends over ---- */

/* Paged KV cache: a pool of blocks, each holding block_tokens positions of every layer and KV head, in
   F16.  A sequence maps its logical block i (positions [i*B, (i+1)*B)) to a pool block through its
   block table; blocks are shared copy-on-write between forked sequences (refcount). */
typedef struct mllm__kv {
    int n_blocks, block_tokens, n_layer, n_head_kv, head_dim;
    uint16_t *k, *v;               /* [n_layer][n_blocks][n_head_kv][block_tokens][head_dim] */
    int32_t *refcount;             /* per block; 0 = free */
    int32_t *free_list;
    int n_free;
} mllm__kv;

static size_t mllm__kv_index(const mllm__kv *kv, int layer, int block, int head, int t) {
    return ((((size_t)layer * kv->n_blocks + block) * kv->n_head_kv + head) * kv->block_tokens + t) * kv->head_dim;
}

/* One sequence's slice of a batch: tokens [first, first + n) at positions pos0, pos0 + 1, ... */
typedef struct mllm__batch_seq {
    int first, n, pos0;
    const int32_t *blocks;         /* block table covering positions [0, pos0 + n) */
} mllm__batch_seq;

typedef struct mllm__batch {
    int n_tokens;
    const mllm_token *tokens;
    const int32_t *pos;            /* per token */
    int n_seqs;
    const mllm__batch_seq *seqs;
    int n_logits;                  /* rows of the LM head: only the tokens that sample */
    const int32_t *logits_idx;     /* batch token index of each logits row */
} mllm__batch;

/* ---- thread pool ----
   Persistent workers spin briefly on a generation counter (a decode step launches a few hundred parallel
   loops, so waking through a condition variable each time would dominate), then sleep.  Tasks are
   claimed dynamically, but each task always computes the same outputs in the same order, so results do
   not depend on the thread count. */
typedef void (*mllm__task_fn)(void *arg, int task, int thread);

struct mllm__pool {
    int n_threads;                 /* including the caller */
    mllm__task_fn fn;
    void *arg;
    int n_tasks;
    int next_task, gen, n_done, quit, n_sleeping;   /* accessed with __atomic builtins */
#ifndef MLLM_NO_THREADS
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
};

#define MLLM__LOAD(p) __atomic_load_n(p, __ATOMIC_SEQ_CST)
#define MLLM__STORE(p, v) __atomic_store_n(p, v, __ATOMIC_SEQ_CST)
#define MLLM__FETCH_ADD(p, v) __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST)

static void mllm__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void mllm__pool_work(mllm__pool *p, int thread) {
    int t;
    while ((t = MLLM__FETCH_ADD(&p->next_task, 1)) < p->n_tasks) p->fn(p->arg, t, thread);
}

#ifndef MLLM_NO_THREADS
typedef struct mllm__worker_arg { mllm__pool *pool; int index; } mllm__worker_arg;

static void *mllm__pool_worker(void *varg) {
    mllm__worker_arg *wa = (mllm__worker_arg *)varg;
    mllm__pool *p = wa->pool;
    int index = wa->index, seen = 0;
    MLLM_FREE(wa);
    for (;;) {
        int spins = 0;
        while (MLLM__LOAD(&p->gen) == seen && !MLLM__LOAD(&p->quit)) {
            if (++spins < 100000) { mllm__cpu_relax(); continue; }
            pthread_mutex_lock(&p->mu);
            MLLM__FETCH_ADD(&p->n_sleeping, 1);
            while (MLLM__LOAD(&p->gen) == seen && !MLLM__LOAD(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
            MLLM__FETCH_ADD(&p->n_sleeping, -1);
            pthread_mutex_unlock(&p->mu);
        }
        if (MLLM__LOAD(&p->quit)) return NULL;
        seen = MLLM__LOAD(&p->gen);
        mllm__pool_work(p, index);
        MLLM__FETCH_ADD(&p->n_done, 1);
    }
}
#endif

static void mllm__pool_free(mllm__pool *p) {
    if (!p) return;
#ifndef MLLM_NO_THREADS
    if (p->threads) {
        int i;
        pthread_mutex_lock(&p->mu);
        MLLM__STORE(&p->quit, 1);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
        MLLM_FREE(p->threads);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
#endif
    MLLM_FREE(p);
}

static mllm_status mllm__pool_create(mllm__pool **out, int n_threads) {
    mllm__pool *p = MLLM__CAST(mllm__pool *, mllm__calloc(1, sizeof(mllm__pool)));
    if (!p) return mllm__fail(MLLM_ERR_NOMEM, "out of memory for the thread pool");
#ifdef MLLM_NO_THREADS
    n_threads = 1;
#else
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        int i;
        p->threads = MLLM__CAST(pthread_t *, mllm__calloc((size_t)n_threads - 1, sizeof(pthread_t)));
        if (!p->threads) { mllm__pool_free(p); return mllm__fail(MLLM_ERR_NOMEM, "out of memory for threads"); }
        for (i = 0; i < n_threads - 1; i++) {
            mllm__worker_arg *wa = MLLM__CAST(mllm__worker_arg *, mllm__calloc(1, sizeof *wa));
            if (wa) { wa->pool = p; wa->index = i + 1; }
            if (!wa || pthread_create(&p->threads[i], NULL, mllm__pool_worker, wa)) {
                MLLM_FREE(wa);
                p->n_threads = i + 1;  /* join only the ones that started */
                mllm__pool_free(p);
                return mllm__fail(MLLM_ERR_NOMEM, "could not start thread %d", i + 1);
            }
        }
    }
#endif
    p->n_threads = n_threads;
    *out = p;
    return MLLM_OK;
}

/* Runs fn(arg, task, thread) for task in [0, n_tasks) on all threads and returns when all are done. */
static void mllm__pool_run(mllm__pool *p, mllm__task_fn fn, void *arg, int n_tasks) {
    if (p->n_threads <= 1 || n_tasks <= 1) {
        int t;
        for (t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
#ifndef MLLM_NO_THREADS
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    MLLM__STORE(&p->next_task, 0);
    MLLM__STORE(&p->n_done, 0);
    MLLM__FETCH_ADD(&p->gen, 1);
    if (MLLM__LOAD(&p->n_sleeping)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    mllm__pool_work(p, 0);
    while (MLLM__LOAD(&p->n_done) < p->n_threads - 1) mllm__cpu_relax();
#endif
}

/* ---- row ops ---- */
static void mllm__rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    float scale;
    int i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    scale = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* cos/sin of each rotated pair for one position: cs[2i] = cos, cs[2i+1] = sin. */
static void mllm__rope_table(float *cs, int n_rot, int pos, float freq_base, float freq_scale) {
    int i;
    for (i = 0; i < n_rot / 2; i++) {
        double theta = (double)pos * freq_scale * pow((double)freq_base, -2.0 * i / n_rot);
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
}

static void mllm__rope_apply(float *x, int n_heads, int head_dim, int n_rot, const float *cs, int neox) {
    int h, i;
    for (h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (i = 0; i < n_rot / 2; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
            float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

static void mllm__rope(float *x, int n_heads, int head_dim, int n_rot, int pos, float freq_base,
                       float freq_scale, int neox) {
    float cs[1024];
    if (n_rot > 1024) n_rot = 1024;
    mllm__rope_table(cs, n_rot, pos, freq_base, freq_scale);
    mllm__rope_apply(x, n_heads, head_dim, n_rot, cs, neox);
}

static void mllm__swiglu(float *out, const float *gate, const float *up, int n) {
    int i;
    for (i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void mllm__softmax(float *x, int n) {
    float mx = -INFINITY;
    double sum = 0;
    int i;
    for (i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    for (i = 0; i < n; i++) x[i] = (float)(x[i] / sum);
}

/* Dot product and axpy of float with F16 vectors (the KV cache). */
static float mllm__dot_f16(const float *a, const uint16_t *b, int n) {
    int i = 0;
    float sum = 0;
#if defined(MLLM__AVX2) && defined(__F16C__)
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i))), acc);
    {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        sum = _mm_cvtss_f32(s);
    }
#endif
    for (; i < n; i++) sum += a[i] * mllm__f16_to_f32(b[i]);
    return sum;
}

static void mllm__axpy_f16(float *y, float a, const uint16_t *x, int n) {
    int i = 0;
#if defined(MLLM__AVX2) && defined(__F16C__)
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * mllm__f16_to_f32(x[i]);
}

/* ---- execution state of one context on the CPU ---- */
typedef struct mllm__exec {
    mllm_model *model;
    mllm__pool *pool;
    mllm__kv *kv;
    void *qbuf;                    /* activations quantized for a matmul: n_batch rows */
    size_t qbuf_bytes;
    float *thread_scratch;         /* per thread: attention scores (n_ctx) */
    size_t thread_scratch_floats;
    float *rope_cs;                /* [n_batch][n_rot]: cos/sin per token of the step */
} mllm__exec;

/* matmul: out[t][r] = dot(W[mat][r], x[t]) for t < n_tok, r < rows. */
typedef struct mllm__matmul_job {
    const mllm__weight *w;
    const uint8_t *wdata;
    const uint8_t *xq;             /* activation rows in the weight's vec_dot_type */
    size_t xq_stride;
    int n_tok, rows_per_task;
    float *out;
} mllm__matmul_job;

static void mllm__matmul_task(void *arg, int task, int thread) {
    const mllm__matmul_job *j = (const mllm__matmul_job *)arg;
    const int64_t K = j->w->cols, N = j->w->rows;
    int64_t r0 = (int64_t)task * j->rows_per_task, r1 = r0 + j->rows_per_task, r;
    int t, k;
    float res[MLLM__DOT_MAX_NX];
    (void)thread;
    if (r1 > N) r1 = N;
    /* Token groups outermost: this task's weight rows stay in L1 while each group of activation rows
       is reused across them. */
    for (t = 0; t < j->n_tok; t += MLLM__DOT_MAX_NX) {
        int nx = j->n_tok - t < MLLM__DOT_MAX_NX ? j->n_tok - t : MLLM__DOT_MAX_NX;
        const uint8_t *x = j->xq + (size_t)t * j->xq_stride;
        for (r = r0; r < r1; r++) {
            const uint8_t *wr = j->wdata + (size_t)r * j->w->row_bytes;
            if (nx == 1) res[0] = mllm__vec_dot(j->w->type, K, wr, x);
            else mllm__vec_dot_nx(j->w->type, K, wr, x, j->xq_stride, nx, res);
            for (k = 0; k < nx; k++) j->out[(size_t)(t + k) * N + r] = res[k];
        }
    }
}

typedef struct mllm__quant_job {
    uint32_t type;
    const float *x;
    int64_t cols;
    uint8_t *dst;
    size_t stride;
} mllm__quant_job;

static void mllm__quant_task(void *arg, int task, int thread) {
    const mllm__quant_job *j = (const mllm__quant_job *)arg;
    (void)thread;
    mllm__quant_row(j->type, j->x + (size_t)task * j->cols, j->dst + (size_t)task * j->stride, j->cols);
}

static void mllm__cpu_matmul(mllm__exec *ex, const mllm__weight *w, int mat, const float *x, int n_tok, float *out) {
    const mllm__type_traits *tt = mllm__traits(w->type);
    const uint32_t xt = (uint32_t)tt->vec_dot_type;
    mllm__matmul_job j;
    int n_tasks, n_thr = ex->pool->n_threads;
    j.w = w;
    j.wdata = (const uint8_t *)w->data + (size_t)mat * w->row_bytes * (size_t)w->rows;
    j.n_tok = n_tok;
    j.out = out;
    if (xt == MLLM__F32) {
        j.xq = (const uint8_t *)x;
        j.xq_stride = (size_t)w->cols * sizeof(float);
    } else {
        mllm__quant_job q;
        q.type = xt;
        q.x = x;
        q.cols = w->cols;
        q.dst = (uint8_t *)ex->qbuf;
        q.stride = mllm__row_bytes(xt, w->cols);
        MLLM_ASSERT(q.stride * (size_t)n_tok <= ex->qbuf_bytes);
        mllm__pool_run(ex->pool, mllm__quant_task, &q, n_tok);
        j.xq = q.dst;
        j.xq_stride = q.stride;
    }
    /* ~8 tasks per thread balances load; at least 4 rows per task keeps overhead low. */
    j.rows_per_task = (int)((w->rows + n_thr * 8 - 1) / (n_thr * 8));
    if (j.rows_per_task < 4) j.rows_per_task = 4;
    n_tasks = (int)((w->rows + j.rows_per_task - 1) / j.rows_per_task);
    mllm__pool_run(ex->pool, mllm__matmul_task, &j, n_tasks);
}

/* Embedding rows: dequantize the token's row of token_embd. */
static void mllm__cpu_embed(mllm__exec *ex, const mllm_token *tokens, int n, float *out) {
    const mllm__weight *w = &ex->model->tok_embd;
    int i;
    for (i = 0; i < n; i++)
        mllm__dequant_row(w->type, (const uint8_t *)w->data + (size_t)tokens[i] * w->row_bytes, out + (size_t)i * w->cols, w->cols);
}

/* ---- attention over the paged KV cache, with the new K/V written in the same pass ---- */
typedef struct mllm__attn_job {
    mllm__exec *ex;
    const mllm__batch *b;
    int layer;
    const float *q, *k, *v;        /* [n_tokens][n_head * head_dim], [n_tokens][n_head_kv * head_dim] */
    float *out;                    /* [n_tokens][n_head * head_dim] */
} mllm__attn_job;

/* Task = (sequence, KV head): writes that head's new K/V, then attends for every query head of its
   group.  Writes go only to blocks the sequence owns exclusively (copy-on-write happened before the
   step), so tasks never race. */
static void mllm__attn_task(void *arg, int task, int thread) {
    const mllm__attn_job *j = (const mllm__attn_job *)arg;
    const mllm__hparams *hp = &j->ex->model->hp;
    const mllm__kv *kv = j->ex->kv;
    const int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv, B = kv->block_tokens;
    const int s = task / hp->n_head_kv, h = task % hp->n_head_kv;
    const mllm__batch_seq *sq = &j->b->seqs[s];
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = j->ex->thread_scratch + (size_t)thread * j->ex->thread_scratch_floats;
    float *acc = scores + j->ex->model->n_ctx;
    int i, g, p, d;
    for (i = 0; i < sq->n; i++) {
        int t = sq->first + i, pos = sq->pos0 + i;
        size_t off = mllm__kv_index(kv, j->layer, sq->blocks[pos / B], h, pos % B);
        const float *kt = j->k + ((size_t)t * hp->n_head_kv + h) * hd, *vt = j->v + ((size_t)t * hp->n_head_kv + h) * hd;
        for (d = 0; d < hd; d++) {
            kv->k[off + d] = mllm__f32_to_f16(kt[d]);
            kv->v[off + d] = mllm__f32_to_f16(vt[d]);
        }
    }
    for (i = 0; i < sq->n; i++) {
        int t = sq->first + i, n_pos = sq->pos0 + i + 1;   /* causal: positions 0..pos */
        for (g = 0; g < group; g++) {
            int hq = h * group + g;
            const float *q = j->q + ((size_t)t * hp->n_head + hq) * hd;
            float qr[512];
            double sum = 0;
            for (d = 0; d < hd; d++) qr[d] = mllm__f16_to_f32(mllm__f32_to_f16(q[d]));  /* as llama.cpp's FA */
            for (p = 0; p < n_pos; p++)
                scores[p] = scale * mllm__dot_f16(qr, kv->k + mllm__kv_index(kv, j->layer, sq->blocks[p / B], h, p % B), hd);
            {
                float mx = -INFINITY;
                for (p = 0; p < n_pos; p++) mx = scores[p] > mx ? scores[p] : mx;
                for (p = 0; p < n_pos; p++) { scores[p] = expf(scores[p] - mx); sum += scores[p]; }
            }
            memset(acc, 0, sizeof(float) * (size_t)hd);
            for (p = 0; p < n_pos; p++)
                mllm__axpy_f16(acc, scores[p], kv->v + mllm__kv_index(kv, j->layer, sq->blocks[p / B], h, p % B), hd);
            {
                float *o = j->out + ((size_t)t * hp->n_head + hq) * hd;
                float inv = (float)(1.0 / sum);
                for (d = 0; d < hd; d++) o[d] = acc[d] * inv;
            }
        }
    }
}

static void mllm__cpu_attention(mllm__exec *ex, const mllm__batch *b, int layer, const float *q, const float *k,
                                const float *v, float *out) {
    mllm__attn_job j;
    j.ex = ex;
    j.b = b;
    j.layer = layer;
    j.q = q;
    j.k = k;
    j.v = v;
    j.out = out;
    mllm__pool_run(ex->pool, mllm__attn_task, &j, b->n_seqs * ex->model->hp.n_head_kv);
}

/* Element-wise and row ops run on the calling thread: they are a small fraction of the work, and
   keeping them sequential keeps the per-step launch count (and spin time) low. */
static void mllm__cpu_rmsnorm_rows(mllm__exec *ex, float *out, const float *x, const float *w, int rows, int n, float eps) {
    int r;
    (void)ex;
    for (r = 0; r < rows; r++) mllm__rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

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

/* The backend seam: the forward pass calls these ops and nothing else.  Buffers are plain host
   pointers (on Apple Silicon, Metal buffers are unified memory, so the same pointers work there). */
struct mllm__ops {
    const char *name;
    void (*embed)(mllm__exec *ex, const mllm_token *tokens, int n, float *out);
    void (*rmsnorm)(mllm__exec *ex, float *out, const float *x, const float *w, int rows, int n, float eps);
    void (*matmul)(mllm__exec *ex, const mllm__weight *w, int mat, const float *x, int n_tok, float *out);
    void (*attention)(mllm__exec *ex, const mllm__batch *b, int layer, const float *q, const float *k,
                      const float *v, float *out);
};

static const mllm__ops mllm__cpu_ops = {"cpu", mllm__cpu_embed, mllm__cpu_rmsnorm_rows, mllm__cpu_matmul,
                                        mllm__cpu_attention};

typedef struct mllm__seq {
    int used;                      /* slot holds a sequence */
    mllm_seq_id id;
    mllm_seq_params params;
    mllm_token *tokens;            /* history: prompt, then generated tokens */
    int n_tokens, cap_tokens, n_prompt;
    int n_past;                    /* positions whose K/V are in the cache */
    int32_t *blocks;               /* block table */
    int n_blocks;
    int n_generated;
    int finished;
    mllm_status status;
    int sample_pending;            /* sample from `logits` without a forward pass (after a fork) */
    int has_logits;
} mllm__seq;

struct mllm_context {
    mllm_model *model;
    mllm_context_params p;
    mllm__exec ex;
    mllm__kv kv;
    mllm__seq *seqs;               /* n_seq_max slots */
    mllm_seq_id next_id;
    int max_blocks_per_seq;
    /* step scratch, sized for n_batch tokens */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *moe_in, *moe_out, *router_logits;
    int32_t *moe_sel;              /* [n_batch][n_expert_used] expert ids */
    float *moe_w;                  /* [n_batch][n_expert_used] routing weights */
    int32_t *moe_rows;             /* counting-sort output: (token, slot) per routed pair */
    float *logits;                 /* [n_seq_max][n_vocab]: last logits of each slot */
    float *logits_tmp;             /* [n_seq_max][n_vocab]: LM head output of one step */
    mllm_token *b_tokens;
    int32_t *b_pos, *b_logits_idx, *b_logits_seq;
    mllm__batch_seq *b_seqs;
    mllm_step_token *results;
    float *sample_buf;             /* sampler scratch: n_vocab (value, index) pairs */
};

/* ---- KV block pool ---- */
static int32_t mllm__kv_alloc(mllm__kv *kv) {
    int32_t b;
    if (!kv->n_free) return -1;
    b = kv->free_list[--kv->n_free];
    kv->refcount[b] = 1;
    return b;
}

static void mllm__kv_release(mllm__kv *kv, int32_t b) {
    if (--kv->refcount[b] == 0) kv->free_list[kv->n_free++] = b;
}

static void mllm__kv_copy_block(mllm__kv *kv, int32_t dst, int32_t src) {
    size_t n = (size_t)kv->n_head_kv * kv->block_tokens * kv->head_dim;
    int l;
    for (l = 0; l < kv->n_layer; l++) {
        memcpy(kv->k + mllm__kv_index(kv, l, dst, 0, 0), kv->k + mllm__kv_index(kv, l, src, 0, 0), n * 2);
        memcpy(kv->v + mllm__kv_index(kv, l, dst, 0, 0), kv->v + mllm__kv_index(kv, l, src, 0, 0), n * 2);
    }
}

/* Makes blocks for positions [seq->n_past, seq->n_past + n) exist and belong to seq alone
   (copy-on-write of shared blocks).  All or nothing: when the pool cannot cover the whole request it
   changes nothing and returns MLLM_ERR_KV_FULL, so a failing sequence takes no blocks from others. */
static mllm_status mllm__seq_reserve(mllm_context *ctx, mllm__seq *s, int n) {
    mllm__kv *kv = &ctx->kv;
    int B = kv->block_tokens, i, first = s->n_past / B, last = (s->n_past + n - 1) / B, need = 0;
    for (i = first; i <= last; i++) need += i >= s->n_blocks || kv->refcount[s->blocks[i]] > 1;
    if (need > kv->n_free)
        return mllm__fail(MLLM_ERR_KV_FULL, "KV pool exhausted: %d blocks needed, %d of %d free", need, kv->n_free, kv->n_blocks);
    for (i = first; i <= last; i++) {
        if (i >= s->n_blocks) {
            s->blocks[s->n_blocks++] = mllm__kv_alloc(kv);
        } else if (kv->refcount[s->blocks[i]] > 1) {
            int32_t b = mllm__kv_alloc(kv);
            mllm__kv_copy_block(kv, b, s->blocks[i]);
            mllm__kv_release(kv, s->blocks[i]);
            s->blocks[i] = b;
        }
    }
    return MLLM_OK;
}

/* ---- sampling ----
   A counter-based RNG (Philox4x32-10) keyed by the sequence's seed and indexed by its sample count, so
   each draw is reproducible alone and a GPU sampler can produce the same stream. */
static void mllm__philox(uint32_t ctr[4], const uint32_t key_in[2]) {
    uint32_t key[2];
    int r;
    key[0] = key_in[0];
    key[1] = key_in[1];
    for (r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0], p1 = (uint64_t)0xCD9E8D57u * ctr[2];
        uint32_t c0 = (uint32_t)(p1 >> 32) ^ ctr[1] ^ key[0], c2 = (uint32_t)(p0 >> 32) ^ ctr[3] ^ key[1];
        ctr[1] = (uint32_t)p1;
        ctr[3] = (uint32_t)p0;
        ctr[0] = c0;
        ctr[2] = c2;
        key[0] += 0x9E3779B9u;
        key[1] += 0xBB67AE85u;
    }
}

/* Uniform float in [0, 1) with 24 random bits: draw number `counter` of the stream `seed`. */
static float mllm__rng_uniform(uint64_t seed, uint64_t counter) {
    uint32_t ctr[4], key[2];
    ctr[0] = (uint32_t)counter;
    ctr[1] = (uint32_t)(counter >> 32);
    ctr[2] = ctr[3] = 0;
    key[0] = (uint32_t)seed;
    key[1] = (uint32_t)(seed >> 32);
    mllm__philox(ctr, key);
    return (float)(ctr[0] >> 8) * (1.0f / 16777216.0f);
}

typedef struct mllm__cand { float v; int32_t id; } mllm__cand;

/* Higher value first; equal values by lower id, so the order is total and deterministic. */
static int mllm__cand_cmp(const void *a, const void *b) {
    const mllm__cand *x = (const mllm__cand *)a, *y = (const mllm__cand *)b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Repetition (divide positive / multiply negative logits), frequency and presence penalties over the
   last `window` tokens of the history.  Modifies logits in place. */
static void mllm__apply_penalties(float *logits, int n_vocab, const mllm_token *hist, int n_hist,
                                  const mllm_sampler_params *sp, mllm__cand *scratch) {
    int window = sp->penalty_last_n > 0 ? sp->penalty_last_n : 64, i, n = 0, start;
    int rep = sp->repeat_penalty > 0 && sp->repeat_penalty != 1.0f;
    if (!rep && sp->frequency_penalty == 0 && sp->presence_penalty == 0) return;
    start = n_hist > window ? n_hist - window : 0;
    /* count occurrences: sort the window's ids (small) */
    for (i = start; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < n_vocab) { scratch[n].id = hist[i]; scratch[n].v = 0; n++; }
    for (i = 1; i < n; i++) {   /* insertion sort by id: windows are short */
        mllm__cand c = scratch[i];
        int j = i - 1;
        while (j >= 0 && scratch[j].id > c.id) { scratch[j + 1] = scratch[j]; j--; }
        scratch[j + 1] = c;
    }
    for (i = 0; i < n;) {
        int id = scratch[i].id, cnt = 0;
        float *l = &logits[id];
        while (i < n && scratch[i].id == id) { cnt++; i++; }
        if (rep) *l = *l > 0 ? *l / sp->repeat_penalty : *l * sp->repeat_penalty;
        *l -= sp->frequency_penalty * (float)cnt + sp->presence_penalty;
    }
}

/* Picks the next token.  Order: penalties, greedy or temperature, top-k, softmax, top-p, min-p, then an
   inverse-CDF draw with one uniform number. */
static mllm_token mllm__sample(float *logits, int n_vocab, const mllm_token *hist, int n_hist,
                               const mllm_sampler_params *sp, uint64_t counter, mllm__cand *c) {
    int i, n = n_vocab;
    float u, inv_t, pmax;
    double sum = 0, cum;
    mllm__apply_penalties(logits, n_vocab, hist, n_hist, sp, c);
    if (!(sp->temperature > 0)) {
        int best = 0;
        for (i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    inv_t = 1.0f / sp->temperature;
    for (i = 0; i < n_vocab; i++) { c[i].v = logits[i] * inv_t; c[i].id = i; }
    if (sp->top_k > 0 && sp->top_k < n) {
        /* keep the k best: a bounded insertion pass is O(n k) but k is small in practice */
        int k = sp->top_k, m = 0;
        for (i = 0; i < n; i++) {
            mllm__cand x = c[i];
            int j;
            if (m == k && mllm__cand_cmp(&x, &c[m - 1]) >= 0) continue;
            j = m < k ? m++ : k - 1;
            while (j > 0 && mllm__cand_cmp(&x, &c[j - 1]) < 0) { c[j] = c[j - 1]; j--; }
            c[j] = x;
        }
        n = k;
    } else {
        qsort(c, (size_t)n, sizeof *c, mllm__cand_cmp);
    }
    pmax = c[0].v;
    for (i = 0; i < n; i++) { c[i].v = expf(c[i].v - pmax); sum += c[i].v; }
    if (sp->top_p > 0 && sp->top_p < 1) {
        cum = 0;
        for (i = 0; i < n; i++) {
            cum += c[i].v;
            if (cum >= sp->top_p * sum) { n = i + 1; break; }
        }
    }
    if (sp->min_p > 0) {   /* c[0] holds the max, whose weight is exp(0) = 1 */
        for (i = 1; i < n; i++)
            if (c[i].v < sp->min_p) { n = i; break; }
    }
    sum = 0;
    for (i = 0; i < n; i++) sum += c[i].v;
    u = mllm__rng_uniform(sp->seed, counter);
    cum = 0;
    for (i = 0; i < n - 1; i++) {
        cum += c[i].v;
        if (u * sum < cum) break;
    }
    return c[i].id;
}

/* ---- forward pass ---- */

/* Mixture of experts: route each token to its top-k experts, group tokens by expert (counting sort), run
   each selected expert once over all its tokens, then combine with the routing weights. */
static void mllm__moe(mllm_context *ctx, const mllm__layer *L, const float *x, int T, float *out) {
    const mllm__hparams *hp = &ctx->model->hp;
    const mllm__ops *ops = ctx->model->ops;
    const int E = hp->n_embd, NE = hp->n_expert, K = hp->n_expert_used, F = hp->n_ff_exp;
    mllm__weight router;
    int t, e, k, i;
    int counts[4096 + 1];
    memset(&router, 0, sizeof router);
    router.data = L->router;
    router.type = MLLM__F32;
    router.cols = E;
    router.rows = NE;
    router.n_mat = 1;
    router.row_bytes = (size_t)E * sizeof(float);
    ops->matmul(&ctx->ex, &router, 0, x, T, ctx->router_logits);
    for (t = 0; t < T; t++) {   /* softmax, top-k (lower id wins ties), renormalize over the selected */
        const float *r = ctx->router_logits + (size_t)t * NE;
        int32_t *sel = ctx->moe_sel + (size_t)t * K;
        float *w = ctx->moe_w + (size_t)t * K, mx = -INFINITY;
        double sum = 0;
        for (k = 0; k < K; k++) {
            int best = -1;
            for (e = 0; e < NE; e++) {
                int taken = 0;
                for (i = 0; i < k; i++) taken |= sel[i] == e;
                if (!taken && (best < 0 || r[e] > r[best])) best = e;
            }
            sel[k] = best;
            mx = r[best] > mx ? r[best] : mx;
        }
        for (k = 0; k < K; k++) { w[k] = expf(r[sel[k]] - mx); sum += w[k]; }
        for (k = 0; k < K; k++) w[k] = (float)(w[k] / sum);
    }
    memset(counts, 0, sizeof(int) * (size_t)(NE + 1));
    for (t = 0; t < T * K; t++) counts[ctx->moe_sel[t] + 1]++;
    for (e = 0; e < NE; e++) counts[e + 1] += counts[e];   /* counts[e] = first row of expert e */
    for (t = 0; t < T * K; t++) ctx->moe_rows[counts[ctx->moe_sel[t]]++] = t;   /* t = token * K + slot */
    memset(out, 0, sizeof(float) * (size_t)T * E);
    for (e = 0, i = 0; e < NE; e++) {
        int n = counts[e] - i, j;   /* after the scatter, counts[e] is the end of expert e's rows */
        if (!n) continue;
        for (j = 0; j < n; j++)
            memcpy(ctx->moe_in + (size_t)j * E, x + (size_t)(ctx->moe_rows[i + j] / K) * E, sizeof(float) * (size_t)E);
        ops->matmul(&ctx->ex, &L->gate_exps, e, ctx->moe_in, n, ctx->hb);
        ops->matmul(&ctx->ex, &L->up_exps, e, ctx->moe_in, n, ctx->hb2);
        for (j = 0; j < n; j++) mllm__swiglu(ctx->hb + (size_t)j * F, ctx->hb + (size_t)j * F, ctx->hb2 + (size_t)j * F, F);
        ops->matmul(&ctx->ex, &L->down_exps, e, ctx->hb, n, ctx->moe_out);
        for (j = 0; j < n; j++) {
            int row = ctx->moe_rows[i + j], d;
            float w = ctx->moe_w[row], *o = out + (size_t)(row / K) * E;
            const float *y = ctx->moe_out + (size_t)j * E;
            for (d = 0; d < E; d++) o[d] += w * y[d];
        }
        i += n;
    }
}

static void mllm__add_bias(float *x, const float *bias, int rows, int n) {
    int r, i;
    if (!bias) return;
    for (r = 0; r < rows; r++)
        for (i = 0; i < n; i++) x[(size_t)r * n + i] += bias[i];
}

static void mllm__add(float *x, const float *y, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) x[i] += y[i];
}

/* One forward pass over a batch of tokens from many sequences.  Writes the LM head output of the
   batch's logits rows to ctx->logits_tmp. */
static void mllm__forward(mllm_context *ctx, const mllm__batch *b) {
    const mllm_model *m = ctx->model;
    const mllm__hparams *hp = &m->hp;
    const mllm__ops *ops = m->ops;
    mllm__exec *ex = &ctx->ex;
    const int T = b->n_tokens, E = hp->n_embd, hd = hp->head_dim;
    const int Dq = hp->n_head * hd, Dkv = hp->n_head_kv * hd;
    int l, t;
    ops->embed(ex, b->tokens, T, ctx->x);
    for (t = 0; t < T; t++)
        mllm__rope_table(ex->rope_cs + (size_t)t * hp->n_rot, hp->n_rot, b->pos[t], hp->rope_base, hp->rope_freq_scale);
    for (l = 0; l < hp->n_layer; l++) {
        const mllm__layer *L = &m->layers[l];
        /* attention */
        ops->rmsnorm(ex, ctx->xb, ctx->x, L->attn_norm, T, E, hp->norm_eps);
        ops->matmul(ex, &L->wq, 0, ctx->xb, T, ctx->q);
        ops->matmul(ex, &L->wk, 0, ctx->xb, T, ctx->k);
        ops->matmul(ex, &L->wv, 0, ctx->xb, T, ctx->v);
        mllm__add_bias(ctx->q, L->bq, T, Dq);
        mllm__add_bias(ctx->k, L->bk, T, Dkv);
        mllm__add_bias(ctx->v, L->bv, T, Dkv);
        if (L->q_norm) ops->rmsnorm(ex, ctx->q, ctx->q, L->q_norm, T * hp->n_head, hd, hp->norm_eps);
        if (L->k_norm) ops->rmsnorm(ex, ctx->k, ctx->k, L->k_norm, T * hp->n_head_kv, hd, hp->norm_eps);
        for (t = 0; t < T; t++) {
            const float *cs = ex->rope_cs + (size_t)t * hp->n_rot;
            mllm__rope_apply(ctx->q + (size_t)t * Dq, hp->n_head, hd, hp->n_rot, cs, hp->rope_neox);
            mllm__rope_apply(ctx->k + (size_t)t * Dkv, hp->n_head_kv, hd, hp->n_rot, cs, hp->rope_neox);
        }
        ops->attention(ex, b, l, ctx->q, ctx->k, ctx->v, ctx->att);
        ops->matmul(ex, &L->wo, 0, ctx->att, T, ctx->xb);
        mllm__add(ctx->x, ctx->xb, (size_t)T * E);
        /* feed-forward */
        ops->rmsnorm(ex, ctx->xb, ctx->x, L->ffn_norm, T, E, hp->norm_eps);
        if (hp->n_expert) {
            mllm__moe(ctx, L, ctx->xb, T, ctx->att);
            mllm__add(ctx->x, ctx->att, (size_t)T * E);
        } else {
            ops->matmul(ex, &L->w_gate, 0, ctx->xb, T, ctx->hb);
            ops->matmul(ex, &L->w_up, 0, ctx->xb, T, ctx->hb2);
            for (t = 0; t < T; t++)
                mllm__swiglu(ctx->hb + (size_t)t * hp->n_ff, ctx->hb + (size_t)t * hp->n_ff, ctx->hb2 + (size_t)t * hp->n_ff, hp->n_ff);
            ops->matmul(ex, &L->w_down, 0, ctx->hb, T, ctx->xb);
            mllm__add(ctx->x, ctx->xb, (size_t)T * E);
        }
    }
    /* LM head only for the tokens that sample (the last of each finished prompt chunk, decode tokens) */
    for (t = 0; t < b->n_logits; t++)
        memcpy(ctx->xb + (size_t)t * E, ctx->x + (size_t)b->logits_idx[t] * E, sizeof(float) * (size_t)E);
    ops->rmsnorm(ex, ctx->xb, ctx->xb, m->output_norm, b->n_logits, E, hp->norm_eps);
    ops->matmul(ex, &m->output, 0, ctx->xb, b->n_logits, ctx->logits_tmp);
}

/* ---- sequences and steps ---- */
static mllm__seq *mllm__seq_get(const mllm_context *ctx, mllm_seq_id id) {
    int i;
    for (i = 0; i < ctx->p.n_seq_max; i++)
        if (ctx->seqs[i].used && ctx->seqs[i].id == id) return &ctx->seqs[i];
    return NULL;
}

static void mllm__seq_clear(mllm_context *ctx, mllm__seq *s) {
    int i;
    for (i = 0; i < s->n_blocks; i++) mllm__kv_release(&ctx->kv, s->blocks[i]);
    s->n_blocks = 0;
    MLLM_FREE(s->tokens);
    MLLM_FREE(s->blocks);
    memset(s, 0, sizeof *s);
}

static mllm__seq *mllm__seq_slot(mllm_context *ctx) {
    int i;
    for (i = 0; i < ctx->p.n_seq_max; i++)
        if (!ctx->seqs[i].used) return &ctx->seqs[i];
    return NULL;
}

/* Allocates a slot's token history (room for the whole context) and block table. */
static mllm_status mllm__seq_init(mllm_context *ctx, mllm__seq *s, const mllm_seq_params *p) {
    memset(s, 0, sizeof *s);
    s->cap_tokens = ctx->model->n_ctx;
    s->tokens = MLLM__CAST(mllm_token *, mllm__calloc((size_t)s->cap_tokens, sizeof(mllm_token)));
    s->blocks = MLLM__CAST(int32_t *, mllm__calloc((size_t)ctx->max_blocks_per_seq, sizeof(int32_t)));
    if (!s->tokens || !s->blocks) {
        MLLM_FREE(s->tokens);
        MLLM_FREE(s->blocks);
        memset(s, 0, sizeof *s);
        return mllm__fail(MLLM_ERR_NOMEM, "out of memory for a sequence");
    }
    if (p) s->params = *p;
    s->used = 1;
    s->id = ctx->next_id++;
    return MLLM_OK;
}

/* Appends a sampled token and decides whether the sequence is done. */
static void mllm__seq_accept(mllm_context *ctx, mllm__seq *s, mllm_token tok, mllm_step_token *r) {
    const mllm_vocab *vocab = &ctx->model->vocab;
    r->seq = s->id;
    r->token = tok;
    r->finished = 0;
    r->status = MLLM_OK;
    s->n_generated++;
    s->tokens[s->n_tokens++] = tok;
    if (!s->params.ignore_eog && mllm_vocab_is_eog(vocab, tok)) r->finished = 1;
    else if (s->params.max_tokens > 0 && s->n_generated >= s->params.max_tokens) r->finished = 1;
    else if (s->n_tokens >= s->cap_tokens) {   /* no room to feed this token back */
        r->finished = 1;
        r->status = MLLM_ERR_CONTEXT_FULL;
    }
    if (r->finished) { s->finished = 1; s->status = r->status; }
}

mllm_status mllm_step(mllm_context *ctx, mllm_step_result *res) {
    mllm__batch b;
    const int V = ctx->model->hp.n_vocab;
    int i, n_res = 0, budget, n_active = 0, pass;
    if (!ctx || !res) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_step: NULL argument");
    memset(&b, 0, sizeof b);
    b.tokens = ctx->b_tokens;
    b.pos = ctx->b_pos;
    b.seqs = ctx->b_seqs;
    b.logits_idx = ctx->b_logits_idx;
    budget = ctx->p.n_batch;
    /* Pass 0 takes decode tokens (one each), pass 1 prompt chunks with what budget remains, so running
       sequences keep their pace while new prompts are absorbed. */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < ctx->p.n_seq_max && budget > 0; i++) {
            mllm__seq *s = &ctx->seqs[i];
            int todo, n, first = b.n_tokens, k;
            mllm__batch_seq *bs;
            if (!s->used || s->finished || s->sample_pending) continue;
            todo = s->n_tokens - s->n_past;
            if (todo <= 0 || (pass == 0) != (todo == 1)) continue;
            n = todo < budget ? todo : budget;
            if (mllm__seq_reserve(ctx, s, n)) {
                mllm_step_token *r = &ctx->results[n_res++];
                r->seq = s->id;
                r->token = -1;
                r->finished = 1;
                r->status = MLLM_ERR_KV_FULL;
                s->finished = 1;
                s->status = MLLM_ERR_KV_FULL;
                continue;
            }
            for (k = 0; k < n; k++) {
                ctx->b_tokens[first + k] = s->tokens[s->n_past + k];
                ctx->b_pos[first + k] = s->n_past + k;
            }
            bs = &ctx->b_seqs[b.n_seqs++];
            bs->first = first;
            bs->n = n;
            bs->pos0 = s->n_past;
            bs->blocks = s->blocks;
            b.n_tokens += n;
            budget -= n;
            if (s->n_past + n == s->n_tokens) {   /* chunk reaches the end: this token samples */
                ctx->b_logits_idx[b.n_logits] = first + n - 1;
                ctx->b_logits_seq[b.n_logits] = i;
                b.n_logits++;
            }
            s->n_past += n;
        }
    }
    if (b.n_tokens) mllm__forward(ctx, &b);
    for (i = 0; i < b.n_logits; i++) {
        mllm__seq *s = &ctx->seqs[ctx->b_logits_seq[i]];
        memcpy(ctx->logits + (size_t)ctx->b_logits_seq[i] * V, ctx->logits_tmp + (size_t)i * V, sizeof(float) * (size_t)V);
        s->sample_pending = 1;
        s->has_logits = 1;
    }
    for (i = 0; i < ctx->p.n_seq_max; i++) {   /* sample, in slot order */
        mllm__seq *s = &ctx->seqs[i];
        float *lg;
        mllm_token tok;
        if (!s->used || s->finished || !s->sample_pending) continue;
        if (s->params.manual) {   /* logits are ready; the caller appends the next token */
            mllm_step_token *r = &ctx->results[n_res++];
            memset(r, 0, sizeof *r);
            r->seq = s->id;
            r->token = -1;
            s->sample_pending = 0;
            continue;
        }
        /* penalties modify a copy, so mllm_seq_logits shows the model's logits */
        lg = ctx->logits_tmp;
        memcpy(lg, ctx->logits + (size_t)i * V, sizeof(float) * (size_t)V);
        tok = mllm__sample(lg, V, s->tokens, s->n_tokens, &s->params.sampler, (uint64_t)s->n_generated,
                           (mllm__cand *)ctx->sample_buf);
        s->sample_pending = 0;
        mllm__seq_accept(ctx, s, tok, &ctx->results[n_res++]);
    }
    for (i = 0; i < ctx->p.n_seq_max; i++) n_active += ctx->seqs[i].used && !ctx->seqs[i].finished;
    res->tokens = ctx->results;
    res->n_tokens = n_res;
    res->n_active = n_active;
    return MLLM_OK;
}

mllm_status mllm_seq_add(mllm_context *ctx, const mllm_token *prompt, int n_prompt, const mllm_seq_params *p,
                         mllm_seq_id *out) {
    mllm__seq *s;
    mllm_status st;
    int i;
    if (!ctx || !prompt || n_prompt <= 0 || !out) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_seq_add: empty prompt or NULL argument");
    for (i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= ctx->model->hp.n_vocab)
            return mllm__fail(MLLM_ERR_INVALID_ARG, "prompt token %d at index %d is out of range [0, %d)", prompt[i], i, ctx->model->hp.n_vocab);
    if (n_prompt >= ctx->model->n_ctx)
        return mllm__fail(MLLM_ERR_CONTEXT_FULL, "prompt of %d tokens does not fit the context of %d", n_prompt, ctx->model->n_ctx);
    if (!(s = mllm__seq_slot(ctx))) return mllm__fail(MLLM_ERR_INVALID_ARG, "all %d sequence slots are in use", ctx->p.n_seq_max);
    if ((st = mllm__seq_init(ctx, s, p))) return st;
    memcpy(s->tokens, prompt, sizeof(mllm_token) * (size_t)n_prompt);
    s->n_tokens = s->n_prompt = n_prompt;
    *out = s->id;
    return MLLM_OK;
}

mllm_status mllm_seq_fork(mllm_context *ctx, mllm_seq_id src_id, const mllm_seq_params *p, mllm_seq_id *out) {
    mllm__seq *src, *s;
    mllm_status st;
    int i;
    if (!ctx || !out) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_seq_fork: NULL argument");
    if (!(src = mllm__seq_get(ctx, src_id))) return mllm__fail(MLLM_ERR_INVALID_ARG, "no sequence %d", src_id);
    if (!(s = mllm__seq_slot(ctx))) return mllm__fail(MLLM_ERR_INVALID_ARG, "all %d sequence slots are in use", ctx->p.n_seq_max);
    if ((st = mllm__seq_init(ctx, s, p ? p : &src->params))) return st;
    /* Share every block with K/V computed; the child keeps src's history up to n_past.  If src has just
       sampled from logits it computed (its last token not yet fed), the child drops that token and
       samples its own from the same logits, so N forks of a prompt draw N independent continuations. */
    s->n_tokens = src->n_past;
    s->n_prompt = src->n_prompt < src->n_past ? src->n_prompt : src->n_past;
    memcpy(s->tokens, src->tokens, sizeof(mllm_token) * (size_t)src->n_past);
    s->n_past = src->n_past;
    for (i = 0; i < src->n_blocks && i * ctx->kv.block_tokens < src->n_past; i++) {
        s->blocks[i] = src->blocks[i];
        ctx->kv.refcount[src->blocks[i]]++;
    }
    s->n_blocks = i;
    s->n_generated = 0;
    if (src->has_logits && src->n_tokens == src->n_past + 1) {
        memcpy(ctx->logits + (size_t)(s - ctx->seqs) * ctx->model->hp.n_vocab,
               ctx->logits + (size_t)(src - ctx->seqs) * ctx->model->hp.n_vocab, sizeof(float) * (size_t)ctx->model->hp.n_vocab);
        s->has_logits = 1;
        s->sample_pending = 1;
    } else if (src->n_tokens > src->n_past) {   /* src still has unfed prompt tokens: copy them */
        memcpy(s->tokens + s->n_tokens, src->tokens + src->n_past, sizeof(mllm_token) * (size_t)(src->n_tokens - src->n_past));
        s->n_tokens = src->n_tokens;
        s->n_prompt = src->n_prompt;
    }
    *out = s->id;
    return MLLM_OK;
}

mllm_status mllm_seq_append(mllm_context *ctx, mllm_seq_id id, const mllm_token *tokens, int n) {
    mllm__seq *s;
    int i;
    if (!ctx || !(s = mllm__seq_get(ctx, id))) return mllm__fail(MLLM_ERR_INVALID_ARG, "no sequence %d", id);
    if (n < 0 || (n && !tokens)) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_seq_append: bad tokens");
    if (s->finished && s->status != MLLM_OK) return mllm__fail(s->status, "sequence %d ended with an error", id);
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= ctx->model->hp.n_vocab)
            return mllm__fail(MLLM_ERR_INVALID_ARG, "token %d at index %d is out of range [0, %d)", tokens[i], i, ctx->model->hp.n_vocab);
    if (s->n_tokens + n >= s->cap_tokens)
        return mllm__fail(MLLM_ERR_CONTEXT_FULL, "sequence %d: %d + %d tokens exceed the context of %d", id, s->n_tokens, n, s->cap_tokens);
    memcpy(s->tokens + s->n_tokens, tokens, sizeof(mllm_token) * (size_t)n);
    s->n_tokens += n;
    s->sample_pending = 0;
    if (s->finished) { s->finished = 0; s->n_generated = 0; }
    return MLLM_OK;
}

mllm_status mllm_seq_remove(mllm_context *ctx, mllm_seq_id id) {
    mllm__seq *s;
    if (!ctx || !(s = mllm__seq_get(ctx, id))) return mllm__fail(MLLM_ERR_INVALID_ARG, "no sequence %d", id);
    mllm__seq_clear(ctx, s);
    return MLLM_OK;
}

const float *mllm_seq_logits(const mllm_context *ctx, mllm_seq_id id) {
    mllm__seq *s = ctx ? mllm__seq_get(ctx, id) : NULL;
    if (!s || !s->has_logits) return NULL;
    return ctx->logits + (size_t)(s - ctx->seqs) * ctx->model->hp.n_vocab;
}

void mllm_context_free(mllm_context *ctx) {
    int i;
    if (!ctx) return;
    if (ctx->seqs)
        for (i = 0; i < ctx->p.n_seq_max; i++)
            if (ctx->seqs[i].used) mllm__seq_clear(ctx, &ctx->seqs[i]);
    MLLM_FREE(ctx->seqs);
    MLLM_FREE(ctx->kv.k);
    MLLM_FREE(ctx->kv.v);
    MLLM_FREE(ctx->kv.refcount);
    MLLM_FREE(ctx->kv.free_list);
    MLLM_FREE(ctx->ex.qbuf);
    MLLM_FREE(ctx->ex.thread_scratch);
    MLLM_FREE(ctx->ex.rope_cs);
    MLLM_FREE(ctx->x);
    MLLM_FREE(ctx->xb);
    MLLM_FREE(ctx->q);
    MLLM_FREE(ctx->k);
    MLLM_FREE(ctx->v);
    MLLM_FREE(ctx->att);
    MLLM_FREE(ctx->hb);
    MLLM_FREE(ctx->hb2);
    MLLM_FREE(ctx->moe_in);
    MLLM_FREE(ctx->moe_out);
    MLLM_FREE(ctx->router_logits);
    MLLM_FREE(ctx->moe_sel);
    MLLM_FREE(ctx->moe_w);
    MLLM_FREE(ctx->moe_rows);
    MLLM_FREE(ctx->logits);
    MLLM_FREE(ctx->logits_tmp);
    MLLM_FREE(ctx->b_tokens);
    MLLM_FREE(ctx->b_pos);
    MLLM_FREE(ctx->b_logits_idx);
    MLLM_FREE(ctx->b_logits_seq);
    MLLM_FREE(ctx->b_seqs);
    MLLM_FREE(ctx->results);
    MLLM_FREE(ctx->sample_buf);
    MLLM_FREE(ctx);
}

#define MLLM__ALLOC(ptr, n, T) ((ptr) = MLLM__CAST(T *, mllm__calloc((size_t)(n), sizeof(T))), (ptr) != NULL)

mllm_status mllm_context_create(mllm_context **out, mllm_model *model, const mllm_context_params *params) {
    mllm_context *ctx;
    const mllm__hparams *hp;
    mllm_context_params p;
    size_t kv_elems, nb, nsv;
    int ok = 1, i, ff, NB, NS, NK;
    if (!out || !model) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_context_create: NULL argument");
    *out = NULL;
    hp = &model->hp;
    memset(&p, 0, sizeof p);
    if (params) p = *params;
    if (p.n_seq_max <= 0) p.n_seq_max = 16;
    if (p.kv_block_tokens <= 0) p.kv_block_tokens = 16;
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_seq_max > 4096 || p.kv_block_tokens > 4096 || p.n_batch > 65536 || p.kv_blocks < 0)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "context parameters out of range");
    if (p.kv_blocks == 0) {   /* default pool: a full context for up to 4 sequences */
        int64_t per_seq = (model->n_ctx + p.kv_block_tokens - 1) / p.kv_block_tokens;
        p.kv_blocks = (int)(per_seq * (p.n_seq_max < 4 ? p.n_seq_max : 4));
    }
    if (!(ctx = MLLM__CAST(mllm_context *, mllm__calloc(1, sizeof *ctx)))) return mllm__fail(MLLM_ERR_NOMEM, "out of memory");
    ctx->model = model;
    ctx->p = p;
    ctx->max_blocks_per_seq = (model->n_ctx + p.kv_block_tokens - 1) / p.kv_block_tokens;
    ctx->kv.n_blocks = p.kv_blocks;
    ctx->kv.block_tokens = p.kv_block_tokens;
    ctx->kv.n_layer = hp->n_layer;
    ctx->kv.n_head_kv = hp->n_head_kv;
    ctx->kv.head_dim = hp->head_dim;
    kv_elems = (size_t)hp->n_layer * p.kv_blocks * hp->n_head_kv * p.kv_block_tokens * hp->head_dim;
    NB = p.n_batch;
    NS = p.n_seq_max;
    NK = hp->n_expert_used ? hp->n_expert_used : 1;
    ff = hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp;
    nb = (size_t)NB;
    nsv = (size_t)NS * hp->n_vocab;
    ctx->ex.model = model;
    ctx->ex.pool = model->pool;
    ctx->ex.kv = &ctx->kv;
    {   /* activations in a matmul's vec_dot_type: F32 rows of the widest input bound every format */
        int64_t widest = hp->n_embd > ff ? hp->n_embd : ff;
        if ((int64_t)hp->n_head * hp->head_dim > widest) widest = (int64_t)hp->n_head * hp->head_dim;
        ctx->ex.qbuf_bytes = nb * (size_t)widest * sizeof(float);
        ok &= (ctx->ex.qbuf = mllm__calloc(ctx->ex.qbuf_bytes, 1)) != NULL;
    }
    ctx->ex.thread_scratch_floats = (size_t)model->n_ctx + hp->head_dim;
    ok &= MLLM__ALLOC(ctx->ex.thread_scratch, ctx->ex.thread_scratch_floats * model->pool->n_threads, float);
    ok &= MLLM__ALLOC(ctx->ex.rope_cs, nb * hp->n_rot, float);
    ok &= MLLM__ALLOC(ctx->kv.k, kv_elems, uint16_t) && MLLM__ALLOC(ctx->kv.v, kv_elems, uint16_t);
    ok &= MLLM__ALLOC(ctx->kv.refcount, p.kv_blocks, int32_t) && MLLM__ALLOC(ctx->kv.free_list, p.kv_blocks, int32_t);
    ok &= MLLM__ALLOC(ctx->seqs, NS, mllm__seq);
    ok &= MLLM__ALLOC(ctx->x, nb * hp->n_embd, float) && MLLM__ALLOC(ctx->xb, nb * hp->n_embd, float);
    ok &= MLLM__ALLOC(ctx->q, nb * hp->n_head * hp->head_dim, float);
    ok &= MLLM__ALLOC(ctx->k, nb * hp->n_head_kv * hp->head_dim, float) && MLLM__ALLOC(ctx->v, nb * hp->n_head_kv * hp->head_dim, float);
    ok &= MLLM__ALLOC(ctx->att, nb * (hp->n_head * hp->head_dim > hp->n_embd ? hp->n_head * hp->head_dim : hp->n_embd), float);
    ok &= MLLM__ALLOC(ctx->hb, nb * ff, float) && MLLM__ALLOC(ctx->hb2, nb * ff, float);
    if (hp->n_expert) {   /* an expert sees each token at most once: n_batch rows suffice */
        ok &= MLLM__ALLOC(ctx->moe_in, nb * hp->n_embd, float) && MLLM__ALLOC(ctx->moe_out, nb * hp->n_embd, float);
        ok &= MLLM__ALLOC(ctx->router_logits, nb * hp->n_expert, float);
        ok &= MLLM__ALLOC(ctx->moe_sel, nb * NK, int32_t) && MLLM__ALLOC(ctx->moe_w, nb * NK, float);
        ok &= MLLM__ALLOC(ctx->moe_rows, nb * NK, int32_t);
    }
    ok &= MLLM__ALLOC(ctx->logits, nsv, float) && MLLM__ALLOC(ctx->logits_tmp, nsv > nb * hp->n_vocab ? nb * hp->n_vocab : nsv, float);
    ok &= MLLM__ALLOC(ctx->b_tokens, nb, mllm_token) && MLLM__ALLOC(ctx->b_pos, nb, int32_t);
    ok &= MLLM__ALLOC(ctx->b_logits_idx, NS, int32_t) && MLLM__ALLOC(ctx->b_logits_seq, NS, int32_t);
    ok &= MLLM__ALLOC(ctx->b_seqs, NS, mllm__batch_seq) && MLLM__ALLOC(ctx->results, NS, mllm_step_token);
    ok &= MLLM__ALLOC(ctx->sample_buf, 2 * (size_t)hp->n_vocab + 2 * (size_t)model->n_ctx, float);
    if (!ok) {
        mllm_context_free(ctx);
        return mllm__fail(MLLM_ERR_NOMEM, "out of memory for the context (KV pool of %d blocks = %.1f MiB)", p.kv_blocks,
                          2.0 * kv_elems * 2 / 1048576.0);
    }
    for (i = 0; i < p.kv_blocks; i++) ctx->kv.free_list[i] = p.kv_blocks - 1 - i;
    ctx->kv.n_free = p.kv_blocks;
    *out = ctx;
    return MLLM_OK;
}

/* ============================================================ SECTION: public API */
static int mllm__online_cores(void) {
#if defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

void mllm_model_free(mllm_model *m) {
    if (!m) return;
    mllm__pool_free(m->pool);
    if (m->vocab_ready) mllm__vocab_release(&m->vocab);
    MLLM_FREE(m->layers);
    MLLM_FREE(m->chat_template);
    mllm__gguf_close(&m->gguf);
    MLLM_FREE(m);
}

/* Reads one byte per page so the first tokens do not pay for page faults, reporting progress. */
static mllm_status mllm__prefault(const mllm_model *m, const mllm_model_params *p) {
    const volatile uint8_t *base = m->gguf.base;
    size_t size = m->gguf.size, step = (size + 63) / 64, off, i;
    unsigned sum = 0;
    for (off = 0; off < size; off += step) {
        size_t end = off + step < size ? off + step : size;
        for (i = off; i < end; i += 4096) sum += base[i];
        if (p->progress && p->progress((float)end / (float)size, p->progress_user))
            return mllm__fail(MLLM_ERR_INVALID_ARG, "loading cancelled by the progress callback");
    }
    (void)sum;
    return MLLM_OK;
}

mllm_status mllm_model_load(mllm_model **out, const char *path, const mllm_model_params *params) {
    mllm_model *m;
    mllm_model_params p;
    mllm_status st;
    if (!out || !path) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_model_load: NULL argument");
    *out = NULL;
    memset(&p, 0, sizeof p);
    if (params) p = *params;
    if (p.n_threads < 0 || p.n_threads > 1024 || p.n_ctx < 0) return mllm__fail(MLLM_ERR_INVALID_ARG, "n_threads or n_ctx out of range");
    if (p.backend == MLLM_BACKEND_METAL)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "the Metal backend is not available in this build");
    if (!(m = MLLM__CAST(mllm_model *, mllm__calloc(1, sizeof *m)))) return mllm__fail(MLLM_ERR_NOMEM, "out of memory");
    m->n_threads = p.n_threads ? p.n_threads : mllm__online_cores();
    if ((st = mllm__gguf_open(&m->gguf, path)) || (st = mllm__load_model_meta(m)) || (st = mllm__load_weights(m))) {
        mllm_model_free(m);
        return st;
    }
    if (m->hp.head_dim > 512) {
        st = mllm__fail(MLLM_ERR_UNSUPPORTED, "head dimension %d > 512", m->hp.head_dim);
        mllm_model_free(m);
        return st;
    }
    m->n_ctx = p.n_ctx ? p.n_ctx : (m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096);
    m->ops = &mllm__cpu_ops;
    if ((st = mllm__pool_create(&m->pool, m->n_threads)) || (st = mllm__prefault(m, &p))) {
        mllm_model_free(m);
        return st;
    }
    *out = m;
    return MLLM_OK;
}

const mllm_vocab *mllm_model_vocab(const mllm_model *m) { return m ? &m->vocab : NULL; }

void mllm_model_get_info(const mllm_model *m, mllm_model_info *info) {
    memset(info, 0, sizeof *info);
    if (!m) return;
    info->arch = m->arch;
    info->name = m->name;
    info->n_vocab = m->hp.n_vocab;
    info->n_embd = m->hp.n_embd;
    info->n_layer = m->hp.n_layer;
    info->n_head = m->hp.n_head;
    info->n_head_kv = m->hp.n_head_kv;
    info->head_dim = m->hp.head_dim;
    info->n_ff = m->hp.n_ff;
    info->n_ctx_train = m->hp.n_ctx_train;
    info->n_expert = m->hp.n_expert;
    info->n_expert_used = m->hp.n_expert_used;
    info->chat_template = m->chat_template;
    info->weight_bytes = m->weight_bytes;
}

/* ---- chat templates: recognised by their markers, formatted without a template engine ---- */
int mllm_chat_format(const mllm_model *m, const mllm_chat_message *msgs, int n, char *out, int cap) {
    const char *tpl = m ? m->chat_template : NULL;
    size_t len = 0;
    int i, kind;
    enum { CHATML, LLAMA3, LLAMA2 };
    if (!m || (!msgs && n) || n < 0 || (!out && cap)) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_chat_format: bad arguments");
    if (!tpl || strstr(tpl, "<|im_start|>")) kind = CHATML;   /* ChatML is also the fallback */
    else if (strstr(tpl, "<|start_header_id|>")) kind = LLAMA3;
    else if (strstr(tpl, "[INST]")) kind = LLAMA2;
    else return mllm__fail(MLLM_ERR_UNSUPPORTED, "unrecognised chat template");
#define MLLM__PUT(s)                                                    \
    do {                                                                \
        size_t l_ = strlen(s);                                          \
        if (len + l_ < (size_t)cap) memcpy(out + len, s, l_);           \
        len += l_;                                                      \
    } while (0)
    if (kind == LLAMA3) MLLM__PUT("<|begin_of_text|>");
    for (i = 0; i < n; i++) {
        const char *role = msgs[i].role ? msgs[i].role : "user", *text = msgs[i].content ? msgs[i].content : "";
        if (kind == CHATML) { MLLM__PUT("<|im_start|>"); MLLM__PUT(role); MLLM__PUT("\n"); MLLM__PUT(text); MLLM__PUT("<|im_end|>\n"); }
        else if (kind == LLAMA3) { MLLM__PUT("<|start_header_id|>"); MLLM__PUT(role); MLLM__PUT("<|end_header_id|>\n\n"); MLLM__PUT(text); MLLM__PUT("<|eot_id|>"); }
        else if (!strcmp(role, "assistant")) { MLLM__PUT(" "); MLLM__PUT(text); MLLM__PUT(" </s>"); }
        else if (!strcmp(role, "system")) { MLLM__PUT("<<SYS>>\n"); MLLM__PUT(text); MLLM__PUT("\n<</SYS>>\n\n"); }
        else { MLLM__PUT("[INST] "); MLLM__PUT(text); MLLM__PUT(" [/INST]"); }
    }
    if (kind == CHATML) MLLM__PUT("<|im_start|>assistant\n");
    else if (kind == LLAMA3) MLLM__PUT("<|start_header_id|>assistant<|end_header_id|>\n\n");
#undef MLLM__PUT
    if (cap > 0) out[len < (size_t)cap ? len : (size_t)cap - 1] = 0;
    if (len > INT_MAX - 1) return mllm__fail(MLLM_ERR_INVALID_ARG, "chat too long");
    return (int)len + 1;
}

static double mllm__now(void) {
#if defined(_WIN32)
    return (double)clock() / CLOCKS_PER_SEC;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
#endif
}

mllm_status mllm_generate_ex(mllm_model *model, const char *prompt, const mllm_generate_params *gp,
                             mllm_piece_fn on_piece, void *user, mllm_generate_stats *stats) {
    mllm_generate_params p;
    mllm_context *ctx = NULL;
    mllm_context_params cp;
    mllm_seq_params sp;
    mllm_seq_id id;
    mllm_token *toks = NULL;
    mllm_detok dt;
    mllm_status st;
    int n, flags = 0, stop = 0;
    double t0, t_first = 0;
    char piece[64];
    if (!model || !prompt) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_generate: NULL argument");
    memset(&p, 0, sizeof p);
    if (gp) p = *gp;
    if (stats) memset(stats, 0, sizeof *stats);
    if (p.add_special >= 0) flags |= MLLM_TOKENIZE_ADD_SPECIAL;
    if (p.parse_special >= 0) flags |= MLLM_TOKENIZE_PARSE_SPECIAL;
    n = mllm_tokenize(&model->vocab, prompt, strlen(prompt), NULL, 0, flags);
    if (n < 0) return (mllm_status)n;
    if (n == 0) return mllm__fail(MLLM_ERR_INVALID_ARG, "empty prompt");
    if (!(toks = MLLM__CAST(mllm_token *, mllm__calloc((size_t)n, sizeof(mllm_token))))) return mllm__fail(MLLM_ERR_NOMEM, "out of memory");
    mllm_tokenize(&model->vocab, prompt, strlen(prompt), toks, n, flags);
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 1;
    cp.kv_blocks = (model->n_ctx + 15) / 16;
    memset(&sp, 0, sizeof sp);
    sp.sampler = p.sampler;
    sp.max_tokens = p.max_tokens > 0 ? p.max_tokens : 128;
    sp.ignore_eog = p.ignore_eog;
    t0 = mllm__now();
    if ((st = mllm_context_create(&ctx, model, &cp)) || (st = mllm_seq_add(ctx, toks, n, &sp, &id))) goto done;
    memset(&dt, 0, sizeof dt);
    while (!stop) {
        mllm_step_result r;
        int i;
        if ((st = mllm_step(ctx, &r))) goto done;
        for (i = 0; i < r.n_tokens; i++) {
            const mllm_step_token *tk = &r.tokens[i];
            if (tk->token >= 0) {
                if (!t_first) t_first = mllm__now();
                if (stats) stats->n_generated++;
                if (on_piece && !(tk->finished && tk->status == MLLM_OK && mllm_vocab_is_eog(&model->vocab, tk->token) && !p.ignore_eog)) {
                    int len = mllm_detok_push(&model->vocab, &dt, tk->token, piece, sizeof piece);
                    if (len > 0 && on_piece(piece, len, tk->token, user)) stop = 1;
                }
            }
            if (tk->finished) {
                stop = 1;
                if (tk->status != MLLM_OK && tk->status != MLLM_ERR_CONTEXT_FULL) st = tk->status;
            }
        }
        if (!r.n_active) stop = 1;
    }
    if (on_piece) {
        int len = mllm_detok_flush(&dt, piece, sizeof piece);
        if (len > 0) on_piece(piece, len, -1, user);
    }
done:
    if (stats) {
        double t1 = mllm__now();
        stats->n_prompt = n;
        stats->prefill_seconds = t_first ? t_first - t0 : t1 - t0;
        stats->decode_seconds = t_first ? t1 - t_first : 0;
    }
    mllm_context_free(ctx);
    MLLM_FREE(toks);
    return st;
}

mllm_status mllm_generate(mllm_model *model, const char *prompt, const mllm_generate_params *p, mllm_piece_fn on_piece,
                          void *user) {
    return mllm_generate_ex(model, prompt, p, on_piece, user, NULL);
}

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
