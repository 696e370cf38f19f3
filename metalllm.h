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
    const uint8_t *val;            /* the value (arrays: the first element; strings: the u64 length
                                      before the bytes) inside the mapping, little-endian */
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
/* Array access: element i as int64 (integer and bool arrays) or float (any numeric array); 0 when i
   is out of range or the type does not fit.  String arrays are walked with mllm__gguf_arr_strings
   (fills arr_n entries; arrays were validated at parse). */
static int64_t mllm__gguf_arr_int(const mllm__gguf_kv *kv, uint64_t i);
static float mllm__gguf_arr_f32(const mllm__gguf_kv *kv, uint64_t i);
static mllm_status mllm__gguf_arr_strings(const mllm__gguf_kv *kv, mllm__str *out /* arr_n entries */);
static const mllm__gguf_tensor *mllm__gguf_tensor_find(const mllm__gguf *g, const char *name);
static int mllm__str_eq(mllm__str a, const char *b);

/* ---- implementation */
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX   /* keep windows.h from defining min/max macros */
#endif
#include <windows.h>
#else
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#define MLLM__GGUF_DEFAULT_ALIGN 32
#define MLLM__GGUF_MAX_ALIGN (1u << 20)   /* larger values are corruption, not a layout choice */
#define MLLM__GGUF_MAX_DIMS 4
/* Smallest encodings, used to bound the header's counts by the bytes that follow before allocating:
   a kv is key length + key + type + a 1-byte value; a tensor info is name length + n_dims + one dim +
   type + offset. */
#define MLLM__GGUF_MIN_KV 13u
#define MLLM__GGUF_MIN_TENSOR 32u

/* Defined after the weight types section, whose traits it needs: checks a tensor's type and row length
   and sets *nbytes from its element count. */
static mllm_status mllm__gguf_tensor_bytes(const mllm__gguf_tensor *t, size_t info_pos, uint64_t nel,
                                           uint64_t *nbytes);

/* Little-endian loads from unaligned memory, independent of the host's byte order. */
static uint32_t mllm__gguf_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t mllm__gguf_u64(const uint8_t *p) {
    return mllm__gguf_u32(p) | (uint64_t)mllm__gguf_u32(p + 4) << 32;
}

/* Size of one scalar value; 0 for STRING and ARRAY, whose size depends on their contents. */
static size_t mllm__gguf_vsize(uint32_t t) {
    static const unsigned char sz[MLLM__GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < MLLM__GGUF_NTYPES ? sz[t] : 0;
}

/* A bounds-checked cursor.  `where` names the entry being read, for error messages. */
typedef struct mllm__gguf_rd {
    const uint8_t *p;
    size_t size, pos;
    char where[160];
} mllm__gguf_rd;

#define MLLM__GGUF_TRY(x) do { mllm_status st_ = (x); if (st_ != MLLM_OK) return st_; } while (0)

static mllm_status mllm__gguf_take(mllm__gguf_rd *r, uint64_t n, const char *what, const uint8_t **out) {
    *out = NULL;
    if (n > r->size - r->pos)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: %s at offset %zu needs %llu bytes, only %zu left "
                          "(truncated or corrupt file)", r->where, what, r->pos, (unsigned long long)n,
                          r->size - r->pos);
    *out = r->p + r->pos;
    r->pos += (size_t)n;
    return MLLM_OK;
}

static mllm_status mllm__gguf_rd_u32(mllm__gguf_rd *r, const char *what, uint32_t *v) {
    const uint8_t *q;
    MLLM__GGUF_TRY(mllm__gguf_take(r, 4, what, &q));
    *v = mllm__gguf_u32(q);
    return MLLM_OK;
}

static mllm_status mllm__gguf_rd_u64(mllm__gguf_rd *r, const char *what, uint64_t *v) {
    const uint8_t *q;
    MLLM__GGUF_TRY(mllm__gguf_take(r, 8, what, &q));
    *v = mllm__gguf_u64(q);
    return MLLM_OK;
}

static mllm_status mllm__gguf_rd_str(mllm__gguf_rd *r, const char *what, mllm__str *s) {
    uint64_t n;
    const uint8_t *q;
    MLLM__GGUF_TRY(mllm__gguf_rd_u64(r, what, &n));
    MLLM__GGUF_TRY(mllm__gguf_take(r, n, what, &q));
    s->p = (const char *)q;
    s->n = (size_t)n;
    return MLLM_OK;
}

/* Validates and skips n values of scalar or string type t; *first points at the first one. */
static mllm_status mllm__gguf_skip_values(mllm__gguf_rd *r, uint32_t t, uint64_t n, const uint8_t **first) {
    size_t sz = mllm__gguf_vsize(t);
    const uint8_t *q;
    uint64_t i;
    *first = r->p + r->pos;
    if (t == MLLM__GGUF_STRING) {
        /* each string takes at least its 8-byte length, so a bogus n fails after size/8 steps */
        for (i = 0; i < n; i++) {
            mllm__str s;
            MLLM__GGUF_TRY(mllm__gguf_rd_str(r, "string value", &s));
        }
        return MLLM_OK;
    }
    if (n > (r->size - r->pos) / sz)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: %llu values of %zu bytes at offset %zu exceed the "
                          "%zu bytes left", r->where, (unsigned long long)n, sz, r->pos, r->size - r->pos);
    MLLM__GGUF_TRY(mllm__gguf_take(r, n * sz, "values", &q));
    if (t == MLLM__GGUF_BOOL)
        for (i = 0; i < n; i++)
            if (q[i] > 1)
                return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: bool value %u at offset %zu (must be 0 or 1)",
                                  r->where, q[i], (size_t)(q + i - r->p));
    return MLLM_OK;
}

static mllm_status mllm__gguf_read_kv(mllm__gguf_rd *r, mllm__gguf_kv *kv) {
    size_t at;
    MLLM__GGUF_TRY(mllm__gguf_rd_str(r, "key", &kv->key));
    snprintf(r->where + strlen(r->where), sizeof r->where - strlen(r->where), " '%.*s'",
             (int)(kv->key.n < 64 ? kv->key.n : 64), kv->key.p);
    at = r->pos;
    MLLM__GGUF_TRY(mllm__gguf_rd_u32(r, "value type", &kv->type));
    if (kv->type >= MLLM__GGUF_NTYPES)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: unknown value type %u at offset %zu", r->where,
                          kv->type, at);
    if (kv->type != MLLM__GGUF_ARRAY) return mllm__gguf_skip_values(r, kv->type, 1, &kv->val);
    at = r->pos;
    MLLM__GGUF_TRY(mllm__gguf_rd_u32(r, "array element type", &kv->arr_type));
    MLLM__GGUF_TRY(mllm__gguf_rd_u64(r, "array length", &kv->arr_n));
    /* the spec allows arrays of arrays, but no model uses them and nesting would need recursion */
    if (kv->arr_type == MLLM__GGUF_ARRAY)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "GGUF %s: nested arrays (offset %zu) are not supported",
                          r->where, at);
    if (kv->arr_type >= MLLM__GGUF_NTYPES)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: unknown array element type %u at offset %zu",
                          r->where, kv->arr_type, at);
    return mllm__gguf_skip_values(r, kv->arr_type, kv->arr_n, &kv->val);
}

static mllm_status mllm__gguf_read_tensor_info(mllm__gguf_rd *r, mllm__gguf_tensor *t) {
    size_t at = r->pos;
    uint32_t n_dims;
    uint64_t nel = 1, nbytes;
    int d;
    MLLM__GGUF_TRY(mllm__gguf_rd_str(r, "name", &t->name));
    snprintf(r->where + strlen(r->where), sizeof r->where - strlen(r->where), " '%.*s' (at offset %zu)",
             (int)(t->name.n < 64 ? t->name.n : 64), t->name.p, at);
    MLLM__GGUF_TRY(mllm__gguf_rd_u32(r, "n_dims", &n_dims));
    if (n_dims < 1 || n_dims > MLLM__GGUF_MAX_DIMS)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: n_dims %u (must be 1..%d)", r->where, n_dims,
                          MLLM__GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (d = 0; d < MLLM__GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        MLLM__GGUF_TRY(mllm__gguf_rd_u64(r, "dimension", &ne));
        /* zero-sized tensors are legal in ggml but meaningless for a model: treat as corruption */
        if (ne < 1 || ne > (uint64_t)INT64_MAX / nel)
            return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: dimension %d is %llu (must be >= 1, and the "
                              "element count must fit in int64)", r->where, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        nel *= ne;
    }
    MLLM__GGUF_TRY(mllm__gguf_rd_u32(r, "type", &t->type));
    MLLM__GGUF_TRY(mllm__gguf_rd_u64(r, "data offset", &t->offset));
    MLLM__GGUF_TRY(mllm__gguf_tensor_bytes(t, at, nel, &nbytes));
    if (nbytes > r->size)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF %s: needs %llu bytes of data, more than the whole file "
                          "(%zu bytes)", r->where, (unsigned long long)nbytes, r->size);
    t->nbytes = (size_t)nbytes;
    return MLLM_OK;
}

/* Header, metadata and tensor infos, in file order. */
static mllm_status mllm__gguf_read(mllm__gguf *g, mllm__gguf_rd *r) {
    const uint8_t *magic;
    uint64_t i;
    int64_t align = MLLM__GGUF_DEFAULT_ALIGN;
    size_t left;
    snprintf(r->where, sizeof r->where, "header");
    MLLM__GGUF_TRY(mllm__gguf_take(r, 4, "magic", &magic));
    if (memcmp(magic, "GGUF", 4) != 0)
        return mllm__fail(MLLM_ERR_FORMAT, "not a GGUF file: magic bytes %02x %02x %02x %02x (expected "
                          "'GGUF')", magic[0], magic[1], magic[2], magic[3]);
    MLLM__GGUF_TRY(mllm__gguf_rd_u32(r, "version", &g->version));
    if (g->version == 1)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "GGUF version 1 is not supported (re-convert the model)");
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "big-endian GGUF files are not supported");
    if (g->version != 2 && g->version != 3)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "unknown GGUF version %u (this reader handles 2 and 3)",
                          g->version);
    MLLM__GGUF_TRY(mllm__gguf_rd_u64(r, "tensor count", &g->n_tensors));
    MLLM__GGUF_TRY(mllm__gguf_rd_u64(r, "metadata count", &g->n_kv));
    left = r->size - r->pos;
    if (g->n_kv > left / MLLM__GGUF_MIN_KV ||
        g->n_tensors > (left - g->n_kv * MLLM__GGUF_MIN_KV) / MLLM__GGUF_MIN_TENSOR)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF header claims %llu metadata entries and %llu tensors, "
                          "more than the %zu bytes after the header can hold", (unsigned long long)g->n_kv,
                          (unsigned long long)g->n_tensors, left);
    g->kv = MLLM__CAST(mllm__gguf_kv *, mllm__calloc((size_t)g->n_kv, sizeof *g->kv));
    g->tensors = MLLM__CAST(mllm__gguf_tensor *, mllm__calloc((size_t)g->n_tensors, sizeof *g->tensors));
    if (!g->kv || !g->tensors) return mllm__fail(MLLM_ERR_NOMEM, "GGUF: out of memory for the index");

    for (i = 0; i < g->n_kv; i++) {
        snprintf(r->where, sizeof r->where, "metadata entry %llu", (unsigned long long)i);
        MLLM__GGUF_TRY(mllm__gguf_read_kv(r, &g->kv[i]));
    }
    if (mllm__gguf_find(g, "general.alignment") && !mllm__gguf_get_int(g, "general.alignment", &align))
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF general.alignment is not an integer");
    if (align <= 0 || align > (int64_t)MLLM__GGUF_MAX_ALIGN || (align & (align - 1)) != 0)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF general.alignment is %lld (must be a power of two "
                          "up to %u)", (long long)align, MLLM__GGUF_MAX_ALIGN);
    g->alignment = (size_t)align;

    for (i = 0; i < g->n_tensors; i++) {
        snprintf(r->where, sizeof r->where, "tensor %llu", (unsigned long long)i);
        MLLM__GGUF_TRY(mllm__gguf_read_tensor_info(r, &g->tensors[i]));
    }
    /* the data section starts at the next multiple of the alignment (files without tensors may end
       before it, which is harmless) */
    g->data_offset = r->pos + (g->alignment - r->pos % g->alignment) % g->alignment;
    return MLLM_OK;
}

/* A name with an interval, for the sort-based duplicate and overlap checks (O(n log n), so a crafted
   file with many entries cannot make the checks quadratic). */
typedef struct mllm__gguf_span { mllm__str name; uint64_t begin, end; } mllm__gguf_span;

static int mllm__gguf_cmp_name(const void *a, const void *b) {
    const mllm__str *x = &((const mllm__gguf_span *)a)->name, *y = &((const mllm__gguf_span *)b)->name;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = n ? memcmp(x->p, y->p, n) : 0;
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static int mllm__gguf_cmp_begin(const void *a, const void *b) {
    uint64_t x = ((const mllm__gguf_span *)a)->begin, y = ((const mllm__gguf_span *)b)->begin;
    return (x > y) - (x < y);
}

/* Sorts s by name and fails on the first name that appears twice. */
static mllm_status mllm__gguf_unique(mllm__gguf_span *s, size_t n, const char *what) {
    size_t i;
    if (n > 1) qsort(s, n, sizeof *s, mllm__gguf_cmp_name);
    for (i = 1; i < n; i++)
        if (mllm__gguf_cmp_name(&s[i - 1], &s[i]) == 0)
            return mllm__fail(MLLM_ERR_FORMAT, "GGUF: duplicate %s '%.*s'", what,
                              (int)(s[i].name.n < 64 ? s[i].name.n : 64), s[i].name.p);
    return MLLM_OK;
}

/* Tensor data placement: aligned, inside the file, not overlapping; and unique names and keys. */
static mllm_status mllm__gguf_check_layout(mllm__gguf *g, mllm__gguf_span *s) {
    size_t data_size = g->data_offset <= g->size ? g->size - g->data_offset : 0;
    uint64_t i;
    for (i = 0; i < g->n_kv; i++) s[i].name = g->kv[i].key;
    MLLM__GGUF_TRY(mllm__gguf_unique(s, (size_t)g->n_kv, "metadata key"));
    for (i = 0; i < g->n_tensors; i++) {
        mllm__gguf_tensor *t = &g->tensors[i];
        int nn = (int)(t->name.n < 64 ? t->name.n : 64);
        if (t->offset % g->alignment != 0)
            return mllm__fail(MLLM_ERR_FORMAT, "GGUF tensor '%.*s': data offset %llu is not a multiple of "
                              "the alignment %zu", nn, t->name.p, (unsigned long long)t->offset, g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return mllm__fail(MLLM_ERR_FORMAT, "GGUF tensor '%.*s': data at offset %llu + %zu bytes lies "
                              "outside the file (data section at %zu, file size %zu)", nn, t->name.p,
                              (unsigned long long)t->offset, t->nbytes, g->data_offset, g->size);
        t->data = g->base + g->data_offset + t->offset;
        s[i].name = t->name;
        s[i].begin = t->offset;
        s[i].end = t->offset + t->nbytes;
    }
    MLLM__GGUF_TRY(mllm__gguf_unique(s, (size_t)g->n_tensors, "tensor name"));
    if (g->n_tensors > 1) qsort(s, (size_t)g->n_tensors, sizeof *s, mllm__gguf_cmp_begin);
    for (i = 1; i < g->n_tensors; i++)
        if (s[i].begin < s[i - 1].end)
            return mllm__fail(MLLM_ERR_FORMAT, "GGUF tensors '%.*s' and '%.*s' overlap (data offsets %llu "
                              "and %llu)", (int)(s[i - 1].name.n < 64 ? s[i - 1].name.n : 64),
                              s[i - 1].name.p, (int)(s[i].name.n < 64 ? s[i].name.n : 64), s[i].name.p,
                              (unsigned long long)s[i - 1].begin, (unsigned long long)s[i].begin);
    return MLLM_OK;
}

static mllm_status mllm__gguf_parse(mllm__gguf *g, const void *data, size_t size) {
    mllm__gguf_rd r;
    mllm__gguf_span *spans = NULL;
    mllm_status st;
    if (!g) return mllm__fail(MLLM_ERR_INVALID_ARG, "GGUF: no output struct");
    memset(g, 0, sizeof *g);
    if (!data && size) return mllm__fail(MLLM_ERR_INVALID_ARG, "GGUF: NULL data");
    g->base = (const uint8_t *)data;
    g->size = size;
    memset(&r, 0, sizeof r);
    r.p = g->base;
    r.size = size;
    st = mllm__gguf_read(g, &r);
    if (st == MLLM_OK) {
        spans = MLLM__CAST(mllm__gguf_span *, mllm__calloc((size_t)(g->n_kv > g->n_tensors ? g->n_kv
                                                                    : g->n_tensors), sizeof *spans));
        st = spans ? mllm__gguf_check_layout(g, spans) : mllm__fail(MLLM_ERR_NOMEM, "GGUF: out of memory");
        if (spans) MLLM_FREE(spans);
    }
    if (st != MLLM_OK) mllm__gguf_close(g);
    return st;
}

/* Maps a whole file read-only; the mapping outlives the file handle. */
static mllm_status mllm__gguf_map(const char *path, void **addr, size_t *size) {
#ifdef _WIN32
    LARGE_INTEGER sz;
    HANDLE m, f = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                              FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE)
        return mllm__fail(MLLM_ERR_IO, "cannot open '%s' (error %lu)", path, (unsigned long)GetLastError());
    if (!GetFileSizeEx(f, &sz) || sz.QuadPart <= 0 || (unsigned long long)sz.QuadPart > SIZE_MAX) {
        CloseHandle(f);
        return mllm__fail(MLLM_ERR_IO, "'%s' is empty or its size cannot be mapped", path);
    }
    m = CreateFileMappingA(f, NULL, PAGE_READONLY, 0, 0, NULL);
    CloseHandle(f);
    *addr = m ? MapViewOfFile(m, FILE_MAP_READ, 0, 0, 0) : NULL;
    if (m) CloseHandle(m);
    if (!*addr) return mllm__fail(MLLM_ERR_IO, "cannot map '%s' (error %lu)", path, (unsigned long)GetLastError());
    *size = (size_t)sz.QuadPart;
    return MLLM_OK;
#else
    struct stat sb;
    void *p;
    int fd = open(path, O_RDONLY), e;
    if (fd < 0) return mllm__fail(MLLM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0 ||
        (unsigned long long)sb.st_size > SIZE_MAX) {
        close(fd);
        return mllm__fail(MLLM_ERR_IO, "'%s' is not a non-empty regular file", path);
    }
    p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    e = errno;
    close(fd);
    if (p == MAP_FAILED) return mllm__fail(MLLM_ERR_IO, "cannot map '%s': %s", path, strerror(e));
    *addr = p;
    *size = (size_t)sb.st_size;
    return MLLM_OK;
#endif
}

static void mllm__gguf_unmap(void *addr, size_t size) {
#ifdef _WIN32
    (void)size;
    UnmapViewOfFile(addr);
#else
    munmap(addr, size);
#endif
}

static mllm_status mllm__gguf_open(mllm__gguf *g, const char *path) {
    void *addr = NULL;
    size_t size = 0;
    mllm_status st;
    if (!g || !path) return mllm__fail(MLLM_ERR_INVALID_ARG, "GGUF: NULL argument");
    memset(g, 0, sizeof *g);
    MLLM__GGUF_TRY(mllm__gguf_map(path, &addr, &size));
    st = mllm__gguf_parse(g, addr, size);
    if (st != MLLM_OK) {
        char msg[sizeof mllm__err_msg];
        snprintf(msg, sizeof msg, "%s", mllm__err_msg);
        mllm__gguf_unmap(addr, size);
        return mllm__fail(st, "%s: %s", path, msg);   /* say which file */
    }
    g->map_handle = addr;
    return MLLM_OK;
}

static void mllm__gguf_close(mllm__gguf *g) {
    if (!g) return;
    if (g->kv) MLLM_FREE(g->kv);
    if (g->tensors) MLLM_FREE(g->tensors);
    if (g->map_handle) mllm__gguf_unmap(g->map_handle, g->size);
    memset(g, 0, sizeof *g);
}

static int mllm__str_eq(mllm__str a, const char *b) {
    size_t n = strlen(b);
    return a.n == n && (n == 0 || memcmp(a.p, b, n) == 0);
}

static const mllm__gguf_kv *mllm__gguf_find(const mllm__gguf *g, const char *key) {
    size_t n = strlen(key);
    uint64_t i;
    for (i = 0; i < g->n_kv; i++)
        if (g->kv[i].key.n == n && memcmp(g->kv[i].key.p, key, n) == 0) return &g->kv[i];
    return NULL;
}

static const mllm__gguf_tensor *mllm__gguf_tensor_find(const mllm__gguf *g, const char *name) {
    size_t n = strlen(name);
    uint64_t i;
    for (i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name.n == n && memcmp(g->tensors[i].name.p, name, n) == 0) return &g->tensors[i];
    return NULL;
}

/* One value of integer type t at p as int64; 0 when t is not an integer type or a U64 exceeds int64. */
static int mllm__gguf_int_at(uint32_t t, const uint8_t *p, int64_t *out) {
    uint64_t u;
    switch (t) {
    case MLLM__GGUF_U8: *out = p[0]; return 1;
    case MLLM__GGUF_I8: *out = (int8_t)p[0]; return 1;
    case MLLM__GGUF_U16: *out = (int64_t)(p[0] | p[1] << 8); return 1;
    case MLLM__GGUF_I16: *out = (int16_t)(uint16_t)(p[0] | p[1] << 8); return 1;
    case MLLM__GGUF_U32: *out = (int64_t)mllm__gguf_u32(p); return 1;
    case MLLM__GGUF_I32: *out = (int32_t)mllm__gguf_u32(p); return 1;
    case MLLM__GGUF_I64: *out = (int64_t)mllm__gguf_u64(p); return 1;
    case MLLM__GGUF_U64:
        u = mllm__gguf_u64(p);
        if (u > (uint64_t)INT64_MAX) return 0;
        *out = (int64_t)u;
        return 1;
    default: return 0;
    }
}

/* One F32 or F64 value at p as float (F64 outside float's range becomes +-inf). */
static int mllm__gguf_float_at(uint32_t t, const uint8_t *p, float *out) {
    if (t == MLLM__GGUF_F32) {
        uint32_t u = mllm__gguf_u32(p);
        memcpy(out, &u, 4);
        return 1;
    }
    if (t == MLLM__GGUF_F64) {
        uint64_t u = mllm__gguf_u64(p);
        double d;
        memcpy(&d, &u, 8);
        *out = d > FLT_MAX ? HUGE_VALF : d < -FLT_MAX ? -HUGE_VALF : (float)d;
        return 1;
    }
    return 0;
}

static int mllm__gguf_get_int(const mllm__gguf *g, const char *key, int64_t *out) {
    const mllm__gguf_kv *kv = mllm__gguf_find(g, key);
    return kv ? mllm__gguf_int_at(kv->type, kv->val, out) : 0;
}

static int mllm__gguf_get_f32(const mllm__gguf *g, const char *key, float *out) {
    const mllm__gguf_kv *kv = mllm__gguf_find(g, key);
    return kv ? mllm__gguf_float_at(kv->type, kv->val, out) : 0;
}

static int mllm__gguf_get_bool(const mllm__gguf *g, const char *key, int *out) {
    const mllm__gguf_kv *kv = mllm__gguf_find(g, key);
    if (!kv || kv->type != MLLM__GGUF_BOOL) return 0;
    *out = kv->val[0];
    return 1;
}

static int mllm__gguf_get_str(const mllm__gguf *g, const char *key, mllm__str *out) {
    const mllm__gguf_kv *kv = mllm__gguf_find(g, key);
    if (!kv || kv->type != MLLM__GGUF_STRING) return 0;
    out->n = (size_t)mllm__gguf_u64(kv->val);
    out->p = (const char *)kv->val + 8;
    return 1;
}

static int64_t mllm__gguf_arr_int(const mllm__gguf_kv *kv, uint64_t i) {
    int64_t v = 0;
    if (kv->type != MLLM__GGUF_ARRAY || i >= kv->arr_n || kv->arr_type == MLLM__GGUF_STRING) return 0;
    if (kv->arr_type == MLLM__GGUF_BOOL) return kv->val[i];
    return mllm__gguf_int_at(kv->arr_type, kv->val + i * mllm__gguf_vsize(kv->arr_type), &v) ? v : 0;
}

static float mllm__gguf_arr_f32(const mllm__gguf_kv *kv, uint64_t i) {
    const uint8_t *p;
    float f = 0;
    int64_t v;
    if (kv->type != MLLM__GGUF_ARRAY || i >= kv->arr_n || kv->arr_type == MLLM__GGUF_STRING) return 0;
    p = kv->val + i * mllm__gguf_vsize(kv->arr_type);
    if (mllm__gguf_float_at(kv->arr_type, p, &f)) return f;
    return mllm__gguf_int_at(kv->arr_type, p, &v) ? (float)v : 0;
}

static mllm_status mllm__gguf_arr_strings(const mllm__gguf_kv *kv, mllm__str *out) {
    const uint8_t *p = kv->val;
    uint64_t i;
    if (kv->type != MLLM__GGUF_ARRAY || kv->arr_type != MLLM__GGUF_STRING)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "GGUF '%.*s' is not an array of strings",
                          (int)(kv->key.n < 64 ? kv->key.n : 64), kv->key.p);
    for (i = 0; i < kv->arr_n; i++) {   /* lengths were bounds-checked by the parser */
        out[i].n = (size_t)mllm__gguf_u64(p);
        out[i].p = (const char *)p + 8;
        p += 8 + out[i].n;
    }
    return MLLM_OK;
}


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


/* ============================================================ SECTION: GGUF reader (tensor sizes) */
/* The one part of the GGUF reader that needs the weight type traits, so it follows their section. */
static mllm_status mllm__gguf_tensor_bytes(const mllm__gguf_tensor *t, size_t info_pos, uint64_t nel,
                                           uint64_t *nbytes) {
    const mllm__type_traits *tt = mllm__traits(t->type);
    int nn = (int)(t->name.n < 64 ? t->name.n : 64);
    *nbytes = 0;
    if (!tt || !tt->name)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "GGUF tensor '%.*s' (at offset %zu): type id %u is not "
                          "supported", nn, t->name.p, info_pos, t->type);
    if (t->ne[0] % tt->block != 0)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF tensor '%.*s' (at offset %zu): row length %lld is not a "
                          "multiple of the %s block size %d", nn, t->name.p, info_pos, (long long)t->ne[0],
                          tt->name, tt->block);
    /* nel < 2^63 and bytes per block < 2^9, so only absurd shapes can overflow here */
    if (nel / (uint64_t)tt->block > UINT64_MAX / (uint64_t)tt->bytes)
        return mllm__fail(MLLM_ERR_FORMAT, "GGUF tensor '%.*s' (at offset %zu): size overflows", nn,
                          t->name.p, info_pos);
    *nbytes = nel / (uint64_t)tt->block * (uint64_t)tt->bytes;
    return MLLM_OK;
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
