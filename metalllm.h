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

   BACKENDS
       Contexts run their steps on the CPU.  On Apple platforms mllm_model_params.backend = METAL runs
       them on the GPU through Metal instead (one command buffer per step; weights used in place from the
       file mapping).  The Metal path is tested on Linux on an emulated GPU only and has never run on
       Apple hardware, so it is opt-in until it has: AUTO means CPU for now.

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
/* On Apple platforms _POSIX_C_SOURCE hides the Darwin APIs (sysctlbyname, thread QoS, MAP_ANON);
   _DARWIN_C_SOURCE brings them back beside POSIX. */
#if defined(METALLLM_IMPLEMENTATION) && defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#define _DARWIN_C_SOURCE 1
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
    mllm_backend backend;          /* where contexts of this model run their steps.  AUTO (0) and CPU:
                                      the CPU (AUTO becomes "Metal when it can run the model" once the
                                      Metal path is verified on Apple hardware).  METAL (Apple builds):
                                      the GPU; mllm_context_create fails when there is none or the model
                                      needs what the GPU kernels lack (a weight type such as Q5_0/Q5_1/
                                      Q5_K, head_dim other than 64/128): MLLM_ERR_UNSUPPORTED/_BACKEND */
    int n_ctx;                     /* context per sequence; 0: min(model's training context, 4096) */
    mllm_progress_fn progress;
    void *progress_user;
    int precise;                   /* 1: matmuls keep activations in F32 and dequantize weights on the
                                      fly: closest to the unquantized model, slower.  0 (default):
                                      activations are rounded to 8 bits for integer dot products, as
                                      llama.cpp does (about 2-5% relative logit noise on small models) */
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

/* Logits of the last sampled position of a sequence (n_vocab floats), valid until the next step.  On
   a GPU context only manual sequences have them (the others sample on the GPU): NULL otherwise. */
const float *mllm_seq_logits(const mllm_context *ctx, mllm_seq_id id);

/* Free blocks in the context's KV pool; *n_total (if not NULL) gets the pool size.  A block shared by
   forks counts once; a removed or finished-and-removed sequence's blocks are free again.  Negative
   mllm_status for a NULL context. */
int mllm_kv_free_blocks(const mllm_context *ctx, int *n_total);

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

/* MLLM__FORCE_METAL_STUBS (tests only): the Metal layer on a non-Apple system, against the test suite's
   Objective-C declarations and fake Metal framework (tests/metal/). */
#if (defined(__APPLE__) && !defined(MLLM_NO_METAL)) || defined(MLLM__FORCE_METAL_STUBS)
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

static MLLM__PRINTF(2, 3) MLLM__UNUSED void mllm__log(mllm_log_level level, const char *fmt, ...) {
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
    MLLM__Q6_K = 14, MLLM__Q8_K = 15, MLLM__IQ4_NL = 20, MLLM__IQ4_XS = 23, MLLM__BF16 = 30, MLLM__NTYPES = 40
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

/* Indexed by type id.  Positional (no designated initializers, so the header compiles as C++): each
   row's comment is its id, and tests/test_quant.c checks every id against the GGUF spec. */
static const mllm__type_traits mllm__type_table[MLLM__NTYPES] = {
    /* name, elements per block, bytes per block, vec_dot_type */
    /*  0 */ {"F32", 1, 4, MLLM__F32},
    /*  1 */ {"F16", 1, 2, MLLM__F16},
    /*  2 */ {"Q4_0", MLLM__QK, 2 + 16, MLLM__Q8_0},
    /*  3 */ {"Q4_1", MLLM__QK, 4 + 16, MLLM__Q8_1},
    /*  4 */ {NULL, 0, 0, 0},   /* (Q4_2, removed from GGUF) */
    /*  5 */ {NULL, 0, 0, 0},   /* (Q4_3, removed from GGUF) */
    /*  6 */ {"Q5_0", MLLM__QK, 2 + 4 + 16, MLLM__Q8_0},
    /*  7 */ {"Q5_1", MLLM__QK, 4 + 4 + 16, MLLM__Q8_1},
    /*  8 */ {"Q8_0", MLLM__QK, 2 + 32, MLLM__Q8_0},
    /*  9 */ {"Q8_1", MLLM__QK, 4 + 32, MLLM__Q8_1},
    /* 10 */ {"Q2_K", MLLM__QK_K, 16 + 64 + 4, MLLM__Q8_K},
    /* 11 */ {"Q3_K", MLLM__QK_K, 32 + 64 + 12 + 2, MLLM__Q8_K},
    /* 12 */ {"Q4_K", MLLM__QK_K, 4 + 12 + 128, MLLM__Q8_K},
    /* 13 */ {"Q5_K", MLLM__QK_K, 4 + 12 + 32 + 128, MLLM__Q8_K},
    /* 14 */ {"Q6_K", MLLM__QK_K, 128 + 64 + 16 + 2, MLLM__Q8_K},
    /* 15 */ {"Q8_K", MLLM__QK_K, 4 + 256 + 32, MLLM__Q8_K},
    /* 16-19: IQ2_XXS IQ2_XS IQ3_XXS IQ1_S, not run */
    {NULL, 0, 0, 0}, {NULL, 0, 0, 0}, {NULL, 0, 0, 0}, {NULL, 0, 0, 0},
    /* 20 */ {"IQ4_NL", MLLM__QK, 2 + 16, MLLM__Q8_0},
    /* 21-22: IQ3_S IQ2_S, not run */
    {NULL, 0, 0, 0}, {NULL, 0, 0, 0},
    /* 23 */ {"IQ4_XS", MLLM__QK_K, 2 + 2 + 4 + 128, MLLM__Q8_K},
    /* 24-29: IQ1_M, integer and F64 tensors, not run */
    {NULL, 0, 0, 0}, {NULL, 0, 0, 0}, {NULL, 0, 0, 0}, {NULL, 0, 0, 0}, {NULL, 0, 0, 0}, {NULL, 0, 0, 0},
    /* 30 */ {"BF16", 1, 2, MLLM__BF16},
    /* 31-39: zero */
};

static const mllm__type_traits *mllm__traits(uint32_t type) {
    return type < MLLM__NTYPES && mllm__type_table[type].name ? &mllm__type_table[type] : NULL;
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
#elif MLLM__NEON   /* the same IEEE conversion in one instruction (FPCR's default NaN mode is off) */
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
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
#elif MLLM__NEON
    return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0);
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

/* IQ4_NL and IQ4_XS: each nibble indexes this non-linear table of 16 levels (GGUF's kvalues_iq4nl). */
static const int8_t mllm__iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                              1, 13, 25, 38, 53, 69, 89, 113};

static void mllm__decode32(uint32_t type, const uint8_t *b, mllm__blk32 *o) {
    mllm__fmt32 f = mllm__fmt32_of(type);
    uint32_t qh = f.qh >= 0 ? mllm__rd32(b + f.qh) : 0;
    int i;
    o->d = mllm__rdh(b);
    o->m = f.m >= 0 ? mllm__rdh(b + f.m) : -0.0f;
    o->s = f.s >= 0 ? mllm__rdh(b + f.s) : 0.0f;
    if (type == MLLM__IQ4_NL) {            /* d, qs[16]: element i / 16+i: low / high nibble of qs[i] */
        for (i = 0; i < 16; i++) {
            o->q[i] = mllm__iq4nl_levels[b[2 + i] & 15];
            o->q[i + 16] = mllm__iq4nl_levels[b[2 + i] >> 4];
        }
        return;
    }
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
     Q8_K: float d, int8 qs[256], int16 bsums[16] (sums of 16 quants).
     Q2_K: scales[16] (low nibble: scale, high: min of each 16), qs[64], d, dmin; 2-bit q.
     Q3_K: hmask[32], qs[64], 12 bytes of 6-bit scales (offset 32), d; q = 2 low bits - (hmask bit ? 0 : 4).
           Q2_K and Q3_K share one order: element 128h + 32j + l (l < 32) is bits 2j..2j+1 of qs[32h + l]
           (Q3_K: its high bit is bit 4h + j of hmask[l]).
     IQ4_XS: d, scales_h (u16), scales_l[4], qs[128]: per 32, a 6-bit scale (offset 32) from a nibble of
           scales_l and two bits of scales_h; nibbles as IQ4_NL (16 bytes per 32, low then high). */
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
    if (type == MLLM__Q2_K) {
        o->d = mllm__rdh(b + 80);
        o->dmin = mllm__rdh(b + 82);
        for (j = 0; j < 16; j++) {
            o->sc[j] = b[j] & 15;
            o->mn[j] = b[j] >> 4;
        }
        return;
    }
    if (type == MLLM__Q3_K) {              /* low 4 bits: a nibble of bytes 0-7; top 2: byte 8 + j%4 */
        const uint8_t *s = b + 96;
        o->d = mllm__rdh(b + 108);
        o->dmin = 0.0f;
        for (j = 0; j < 16; j++) {
            int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
            o->sc[j] = (lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
            o->mn[j] = 0;
        }
        return;
    }
    if (type == MLLM__IQ4_XS) {            /* scale of 32-block k, used for sub-blocks 2k and 2k+1 */
        const uint32_t sh = (uint32_t)b[2] | (uint32_t)b[3] << 8;
        o->d = mllm__rdh(b);
        o->dmin = 0.0f;
        for (j = 0; j < 16; j++) {
            const int k = j / 2;
            o->sc[j] = (((b[4 + k / 2] >> (4 * (k % 2))) & 15) | (int)((sh >> (2 * k)) & 3) << 4) - 32;
            o->mn[j] = 0;
        }
        return;
    }
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
    if (type == MLLM__Q2_K || type == MLLM__Q3_K) {
        const uint8_t *qs = b + (type == MLLM__Q3_K ? 32 : 16), *hm = b;
        for (c = 0; c < 8; c++)            /* c = 4h + j */
            for (l = 0; l < 32; l++) {
                int q = (qs[32 * (c / 4) + l] >> (2 * (c % 4))) & 3;
                if (type == MLLM__Q3_K && !((hm[l] >> c) & 1)) q -= 4;
                o->q[32 * c + l] = (int8_t)q;
            }
        return;
    }
    if (type == MLLM__IQ4_XS) {
        const uint8_t *qs = b + 8;
        for (c = 0; c < 8; c++)
            for (l = 0; l < 16; l++) {
                o->q[32 * c + l] = mllm__iq4nl_levels[qs[16 * c + l] & 15];
                o->q[32 * c + 16 + l] = mllm__iq4nl_levels[qs[16 * c + l] >> 4];
            }
        return;
    }
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
    return type == MLLM__Q4_K || type == MLLM__Q5_K || type == MLLM__Q6_K || type == MLLM__Q8_K ||
           type == MLLM__Q2_K || type == MLLM__Q3_K || type == MLLM__IQ4_XS;
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

#if MLLM__NEON
/* NEON activation quantizers, bytewise equal to the scalar ones: vcvtnq rounds half to even as
   nearbyintf does, maxnm skips NaN as the scalar compare does, the other float steps are the same. */
static float mllm__neon_amax(const float *x, int n) {
    float32x4_t m = vdupq_n_f32(0.0f);
    int i;
    for (i = 0; i < n; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + i)));
    return vmaxnmvq_f32(m);
}

/* q = round(x * s) for 16 floats, stored as bytes (Q8_K: at most 127); returns the lane sums of q. */
MLLM__INLINE int32x4_t mllm__neon_round16(const float *x, float s, uint8_t *q, int clamp127) {
    int32x4_t r[4];
    int k;
    for (k = 0; k < 4; k++) {
        r[k] = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 4 * k), s));
        if (clamp127) r[k] = vminq_s32(r[k], vdupq_n_s32(127));
    }
    vst1q_u8(q, vreinterpretq_u8_s8(vcombine_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(r[0]), vqmovn_s32(r[1]))),
                                                vqmovn_s16(vcombine_s16(vqmovn_s32(r[2]), vqmovn_s32(r[3]))))));
    return vaddq_s32(vaddq_s32(r[0], r[1]), vaddq_s32(r[2], r[3]));
}

static void mllm__neon_quant_q8_32(const float *x, uint8_t *y, int with_sum) {
    const float amax = mllm__neon_amax(x, MLLM__QK), d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int off = with_sum ? 4 : 2;
    const int32x4_t s = vaddq_s32(mllm__neon_round16(x, id, y + off, 0), mllm__neon_round16(x + 16, id, y + off + 16, 0));
    uint16_t h = mllm__f32_to_f16(d);
    memcpy(y, &h, 2);
    if (with_sum) {
        h = mllm__f32_to_f16(d * (float)vaddvq_s32(s));
        memcpy(y + 2, &h, 2);
    }
}

static void mllm__neon_quant_q8_k(const float *x, uint8_t *y) {
    const float amax = mllm__neon_amax(x, MLLM__QK_K);
    float max = 0.0f, iscale, d;
    int16_t bsums[16];
    int i = 0;
    if (amax != 0.0f) {                    /* the first element of largest magnitude, as in the scalar loop */
        while (fabsf(x[i]) != amax) i++;
        max = x[i];
    }
    iscale = amax != 0.0f ? -127.0f / max : 0.0f;
    for (i = 0; i < 16; i++) bsums[i] = (int16_t)vaddvq_s32(mllm__neon_round16(x + 16 * i, iscale, y + 4 + 16 * i, 1));
    d = amax != 0.0f ? 1.0f / iscale : 0.0f;
    memcpy(y, &d, 4);
    memcpy(y + 4 + MLLM__QK_K, bsums, sizeof bsums);
}
#define MLLM__QUANT_Q8_32 mllm__neon_quant_q8_32
#define MLLM__QUANT_Q8_K mllm__neon_quant_q8_k
#else
#define MLLM__QUANT_Q8_32 mllm__quant_q8_32
#define MLLM__QUANT_Q8_K mllm__quant_q8_k
#endif

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
            MLLM__QUANT_Q8_32(src + i * MLLM__QK, y + i * (type == MLLM__Q8_1 ? 36 : 34), type == MLLM__Q8_1);
        break;
    case MLLM__Q8_K:
        MLLM_ASSERT(n % MLLM__QK_K == 0);
        for (i = 0; i < n / MLLM__QK_K; i++) MLLM__QUANT_Q8_K(src + i * MLLM__QK_K, y + i * 292);
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

/* Sums of 4 adjacent u8 x s8 products per int32 lane: one VNNI instruction where the CPU has it.
   Without VNNI the 16-bit pair sums cannot saturate for our operands (|q| <= 128, |y| <= 127, two
   products), so both paths give the same integers. */
MLLM__INLINE __m256i mllm__avx2_dot_u8s8(__m256i u, __m256i s) {
#if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
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
            const __m256i p = f.zero || f.bits == 8 ? mllm__avx2_dot_u8s8(aq, _mm256_sign_epi8(y, q))
                                                    : mllm__avx2_dot_u8s8(q, y);
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
/* ---- NEON: each weight block is unpacked to signed bytes once and multiplied with up to four
   activation rows: sdot (vdotq_s32, four adjacent byte products per int32 lane) where the CPU has the
   dot-product extension, else widening 8x8->16-bit multiplies added pairwise into 32 bits (a product
   is at most 128*128, so neither overflows).  The integer block sums are exact, and the float steps
   after them are the scalar kernel's, written the same way and in its order, so the results are the
   scalar path's bits (tests/arm64_neon.c checks it) and vec_dot_nx stays exact per row.  i8mm's
   vmmlaq_s32 is not used: it multiplies 2x8 by 2x8 tiles, and these kernels see one weight row at a
   time, so half of each tile would be wasted.  Float rows (F32, F16, BF16) accumulate in float lanes
   with FMA, as the AVX2 kernels do (not the scalar kernel's bits: it sums in double). */
/* The K-quant loops index arrays of vectors: unrolled, they stay in registers. */
#define MLLM__UNROLL _Pragma("GCC unroll 16")

MLLM__INLINE int32x4_t mllm__neon_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    return vpadalq_s16(vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b))), vmull_high_s8(a, b));
#endif
}

MLLM__INLINE int8x16_t mllm__neon_ld(const uint8_t *p) { return vreinterpretq_s8_u8(vld1q_u8(p)); }

/* Bits 0-15 of a word -> 0x10 in byte i where bit i is set (the fifth bit of Q5_0/Q5_1). */
MLLM__INLINE uint8x16_t mllm__neon_bit4(uint32_t bits) {
    static const uint8_t sel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)bits), vdup_n_u8((uint8_t)(bits >> 8)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(sel)), vdupq_n_u8(0x10));
}

/* The 32 quants of a legacy block (elements 0-15 in q[0], 16-31 in q[1]), offset removed. */
MLLM__INLINE void mllm__neon_q32(uint32_t type, const uint8_t *b, int8x16_t q[2]) {
    const mllm__fmt32 f = mllm__fmt32_of(type);
    uint8x16_t v, lo, hi;
    if (f.bits == 8) { q[0] = mllm__neon_ld(b + f.qs); q[1] = mllm__neon_ld(b + f.qs + 16); return; }
    v = vld1q_u8(b + f.qs);
    lo = vandq_u8(v, vdupq_n_u8(15));
    hi = vshrq_n_u8(v, 4);
    if (f.qh >= 0) {
        const uint32_t qh = mllm__rd32(b + f.qh);
        lo = vorrq_u8(lo, mllm__neon_bit4(qh));
        hi = vorrq_u8(hi, mllm__neon_bit4(qh >> 16));
    }
    q[0] = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8((int8_t)f.zero));
    q[1] = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8((int8_t)f.zero));
}

MLLM__INLINE void mllm__neon_dot32(uint32_t type, int64_t nb, const uint8_t *w, const uint8_t *x,
                                   size_t xs, int nx, float *out) {
    const mllm__fmt32 f = mllm__fmt32_of(type);
    const int wbytes = mllm__traits(type)->bytes, q81 = f.m >= 0, xbytes = q81 ? 36 : 34;
    float sum[MLLM__DOT_MAX_NX];
    int64_t i;
    int j;
    for (j = 0; j < nx; j++) sum[j] = 0.0f;
    for (i = 0; i < nb; i++) {
        const uint8_t *b = w + i * wbytes;
        const float d = mllm__rdh(b), m = q81 ? mllm__rdh(b + f.m) : 0.0f;
        int8x16_t q[2];
        mllm__neon_q32(type, b, q);
        for (j = 0; j < nx; j++) {
            const uint8_t *xb = x + j * xs + i * xbytes, *y = xb + (q81 ? 4 : 2);
            const int32x4_t p = mllm__neon_dot16(mllm__neon_dot16(vdupq_n_s32(0), q[0], mllm__neon_ld(y)), q[1],
                                                 mllm__neon_ld(y + 16));
            sum[j] += d * mllm__rdh(xb) * (float)vaddvq_s32(p);   /* the scalar kernel's expression */
            if (q81) sum[j] += m * mllm__rdh(xb + 2);
        }
    }
    for (j = 0; j < nx; j++) out[j] = sum[j];
}

/* A K-quant super-block as 16 groups of 16 signed quants (q[g] = elements 16g..16g+15, as
   mllm__decode256 numbers them) with the scales and mins of mllm__kscales: Q4_K/Q5_K have one scale
   and min per 32 (sc[k], mn[k], k < 8), Q6_K one int8 scale per 16 and no min. */
MLLM__INLINE void mllm__neon_unpack_k(uint32_t type, const uint8_t *b, int8x16_t q[16], int sc[16], uint8_t mn[8],
                                      float *d, float *dmin) {
    const uint8x16_t m4 = vdupq_n_u8(15), m2 = vdupq_n_u8(0x30);
    int c, h;
    if (type == MLLM__Q6_K) {
        *d = mllm__rdh(b + 208);
        *dmin = 0.0f;
        for (c = 0; c < 16; c++) sc[c] = (int8_t)b[192 + c];
        MLLM__UNROLL
        for (c = 0; c < 2; c++)              /* 128 elements from ql[64c..], qh[32c..] */
            for (h = 0; h < 2; h++) {
                const uint8x16_t l0 = vld1q_u8(b + 64 * c + 16 * h), l1 = vld1q_u8(b + 64 * c + 32 + 16 * h);
                const uint8x16_t hb = vld1q_u8(b + 128 + 32 * c + 16 * h), off = vdupq_n_u8(32);
                q[8 * c + h] = vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8(hb, 4), m2)), off));
                q[8 * c + 2 + h] = vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vandq_u8(l1, m4), vandq_u8(vshlq_n_u8(hb, 2), m2)), off));
                q[8 * c + 4 + h] = vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hb, m2)), off));
                q[8 * c + 6 + h] = vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hb, 2), m2)), off));
            }
        return;
    }
    {
        const uint8_t *qs = b + (type == MLLM__Q5_K ? 48 : 16);
        uint8x16_t hb[2];
        uint8_t s8[8];
        *d = mllm__rdh(b);
        *dmin = mllm__rdh(b + 2);
        mllm__k4_scales(b + 4, s8, mn);
        for (c = 0; c < 8; c++) sc[c] = s8[c];
        hb[0] = vld1q_u8(b + 16);
        hb[1] = vld1q_u8(b + 32);
        MLLM__UNROLL
        for (c = 0; c < 4; c++)              /* 32 bytes: sub-block 2c in the low nibbles, 2c+1 in the high */
            for (h = 0; h < 2; h++) {
                const uint8x16_t v = vld1q_u8(qs + 32 * c + 16 * h);
                uint8x16_t lo = vandq_u8(v, m4), hi = vshrq_n_u8(v, 4);
                if (type == MLLM__Q5_K) {    /* bit 2c / 2c+1 of qh[l] is bit 4 of the low / high quant */
                    const uint8x16_t bit = vdupq_n_u8(0x10);
                    lo = vorrq_u8(lo, vandq_u8(vtstq_u8(hb[h], vdupq_n_u8((uint8_t)(1u << (2 * c)))), bit));
                    hi = vorrq_u8(hi, vandq_u8(vtstq_u8(hb[h], vdupq_n_u8((uint8_t)(2u << (2 * c)))), bit));
                }
                q[4 * c + h] = vreinterpretq_s8_u8(lo);
                q[4 * c + 2 + h] = vreinterpretq_s8_u8(hi);
            }
    }
}

MLLM__INLINE void mllm__neon_dotk(uint32_t type, int64_t nb, const uint8_t *w, const uint8_t *x,
                                  size_t xs, int nx, float *out) {
    const int wbytes = mllm__traits(type)->bytes, xbytes = 292;
    float sum[MLLM__DOT_MAX_NX];
    int64_t i;
    int j, g;
    for (j = 0; j < nx; j++) sum[j] = 0.0f;
    for (i = 0; i < nb; i++) {
        int8x16_t q[16];
        int sc[16];
        uint8_t mn[8];
        float d, dmin;
        mllm__neon_unpack_k(type, w + i * wbytes, q, sc, mn, &d, &dmin);
        for (j = 0; j < nx; j++) {
            const uint8_t *xb = x + j * xs + i * xbytes, *y = xb + 4;
            int32x4_t acc = vdupq_n_s32(0);
            int isum, msum = 0;
            if (type == MLLM__Q6_K) {
                MLLM__UNROLL
                for (g = 0; g < 16; g++)
                    acc = vmlaq_n_s32(acc, mllm__neon_dot16(vdupq_n_s32(0), q[g], mllm__neon_ld(y + 16 * g)), sc[g]);
            } else {
                int16x8_t bs, mn16;
                int32x4_t ms;
                MLLM__UNROLL
                for (g = 0; g < 8; g++) {
                    int32x4_t p = mllm__neon_dot16(vdupq_n_s32(0), q[2 * g], mllm__neon_ld(y + 32 * g));
                    acc = vmlaq_n_s32(acc, mllm__neon_dot16(p, q[2 * g + 1], mllm__neon_ld(y + 32 * g + 16)), sc[g]);
                }
                /* bsums of 16 quants, paired to 32 (|sum| <= 4064), times the 8 mins */
                bs = vpaddq_s16(vreinterpretq_s16_u8(vld1q_u8(y + MLLM__QK_K)), vreinterpretq_s16_u8(vld1q_u8(y + MLLM__QK_K + 16)));
                mn16 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
                ms = vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(mn16)), bs, mn16);
                msum = vaddvq_s32(ms);
            }
            isum = vaddvq_s32(acc);
            sum[j] += mllm__rdf(xb) * (d * (float)isum - dmin * (float)msum);   /* the scalar kernel's expression */
        }
    }
    for (j = 0; j < nx; j++) out[j] = sum[j];
}

/* 4 elements of a float-like row as floats. */
MLLM__INLINE float32x4_t mllm__neon_load4(uint32_t type, const uint8_t *p) {
    if (type == MLLM__F32) return vreinterpretq_f32_u8(vld1q_u8(p));
    if (type == MLLM__F16) return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p)));
    return vreinterpretq_f32_u32(vshll_n_u16(vreinterpret_u16_u8(vld1_u8(p)), 16));
}

MLLM__INLINE void mllm__neon_dotf(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x,
                                  size_t xs, int nx, float *out) {
    const int es = type == MLLM__F32 ? 4 : 2;
    float32x4_t acc[MLLM__DOT_MAX_NX][2];
    int64_t i;
    int j;
    for (j = 0; j < nx; j++) acc[j][0] = acc[j][1] = vdupq_n_f32(0.0f);
    for (i = 0; i + 8 <= n; i += 8) {
        const float32x4_t a0 = mllm__neon_load4(type, w + i * es), a1 = mllm__neon_load4(type, w + (i + 4) * es);
        for (j = 0; j < nx; j++) {
            const uint8_t *xr = x + j * xs;
            acc[j][0] = vfmaq_f32(acc[j][0], a0, mllm__neon_load4(type, xr + i * es));
            acc[j][1] = vfmaq_f32(acc[j][1], a1, mllm__neon_load4(type, xr + (i + 4) * es));
        }
    }
    for (j = 0; j < nx; j++) {
        int64_t r;
        out[j] = vaddvq_f32(vaddq_f32(acc[j][0], acc[j][1]));
        for (r = i; r < n; r++) out[j] += mllm__rd_elem(type, w, r) * mllm__rd_elem(type, x + j * xs, r);
    }
}

/* Returns 0 when the type has no NEON kernel; constant arguments let each inlined kernel specialize
   for one row (decode) and four (prefill), as on AVX2. */
#define MLLM__NEON_CASE(T, kernel, len)                                          \
    case T:                                                                      \
        if (nx == 1) kernel(T, len, w, x, xs, 1, out);                           \
        else if (nx == 4) kernel(T, len, w, x, xs, 4, out);                      \
        else kernel(T, len, w, x, xs, nx, out);                                  \
        return 1;
static int mllm__simd_dot_nx(uint32_t type, int64_t n, const uint8_t *w, const uint8_t *x, size_t xs,
                             int nx, float *out) {
    switch (type) {
    MLLM__NEON_CASE(MLLM__Q4_0, mllm__neon_dot32, n / MLLM__QK)
    MLLM__NEON_CASE(MLLM__Q4_1, mllm__neon_dot32, n / MLLM__QK)
    MLLM__NEON_CASE(MLLM__Q5_0, mllm__neon_dot32, n / MLLM__QK)
    MLLM__NEON_CASE(MLLM__Q5_1, mllm__neon_dot32, n / MLLM__QK)
    MLLM__NEON_CASE(MLLM__Q8_0, mllm__neon_dot32, n / MLLM__QK)
    MLLM__NEON_CASE(MLLM__Q4_K, mllm__neon_dotk, n / MLLM__QK_K)
    MLLM__NEON_CASE(MLLM__Q5_K, mllm__neon_dotk, n / MLLM__QK_K)
    MLLM__NEON_CASE(MLLM__Q6_K, mllm__neon_dotk, n / MLLM__QK_K)
    MLLM__NEON_CASE(MLLM__F32, mllm__neon_dotf, n)
    MLLM__NEON_CASE(MLLM__F16, mllm__neon_dotf, n)
    MLLM__NEON_CASE(MLLM__BF16, mllm__neon_dotf, n)
    default: return 0;
    }
}
#undef MLLM__NEON_CASE
#undef MLLM__UNROLL
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
    const unsigned LET = MLLM__U_L | (marks ? (unsigned)MLLM__U_M : 0u);
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
                                        ("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>")};
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
/* Architectures differ only in data: each has a row of mllm__archs (what the architecture implies), and
   a model adds its hyper-parameters and tensors from the file.  One graph (mllm__forward) serves them all.

   A new family is a row here, plus a field for each way it differs that no field expresses yet (read by
   the loader or the graph; zero in the other rows keeps their behaviour), plus, only where it brings an
   operation the backends lack (another activation, norm, RoPE scaling...), that op in mllm__backend_ops
   and in each backend that implements it (the CPU's, and the GPU's with its kernel). */
enum { MLLM__OPTIONAL = 0, MLLM__REQUIRED = 1 };   /* tensors: used when present / a file without them is refused */
typedef struct mllm__arch {
    const char *name;              /* general.architecture; also the prefix of its metadata keys */
    int rope_neox;                 /* RoPE rotates pairs (i, i + n_rot/2) (GPT-NeoX style); 0: pairs (2i, 2i + 1) */
    int qkv_bias;                  /* attn_{q,k,v}.bias, added to Q, K, V */
    int qk_norm;                   /* attn_{q,k}_norm.weight: per-head RMSNorm of Q and K before RoPE */
    int moe;                       /* expert FFN (ffn_*_exps): REQUIRED, or OPTIONAL: when expert_count > 0 */
    int act;                       /* the FFN gate's activation: MLLM__SILU (SwiGLU) or MLLM__GELU (GeGLU, tanh form) */
    int emb_scale;                 /* embeddings multiplied by sqrt(n_embd) */
    int post_norms;                /* post_attention_norm / post_ffw_norm: RMSNorm of a block's output before
                                      the residual add */
    int swa_period;                /* with a sliding_window key: every swa_period-th layer attends globally,
                                      the others over the window (with their own RoPE base); the file's
                                      sliding_window_pattern overrides it */
    int fused;                     /* attn_qkv holds Q, K, V and ffn_up holds gate then up, as row blocks */
    const char *chat;              /* the chat format's markers when a file has no tokenizer.chat_template
                                      (NULL: ChatML) */
} mllm__arch;

enum { MLLM__SILU = 0, MLLM__GELU = 1 };

static const mllm__arch mllm__archs[] = {
    /* name      rope_neox  qkv_bias        qk_norm         moe             act         emb_scale post_norms      swa_period fused chat */
    {"llama",    0,         MLLM__OPTIONAL, MLLM__OPTIONAL, MLLM__OPTIONAL, MLLM__SILU, 0,        MLLM__OPTIONAL, 0,         0,    NULL},   /* (Mixtral: llama with experts) */
    {"qwen2",    1,         MLLM__REQUIRED, MLLM__OPTIONAL, MLLM__OPTIONAL, MLLM__SILU, 0,        MLLM__OPTIONAL, 0,         0,    NULL},
    {"qwen3",    1,         MLLM__OPTIONAL, MLLM__REQUIRED, MLLM__OPTIONAL, MLLM__SILU, 0,        MLLM__OPTIONAL, 0,         0,    NULL},
    {"qwen3moe", 1,         MLLM__OPTIONAL, MLLM__REQUIRED, MLLM__REQUIRED, MLLM__SILU, 0,        MLLM__OPTIONAL, 0,         0,    NULL},
    {"gemma3",   1,         MLLM__OPTIONAL, MLLM__REQUIRED, MLLM__OPTIONAL, MLLM__GELU, 1,        MLLM__REQUIRED, 6,         0,    "<start_of_turn>"},
    {"phi3",     1,         MLLM__OPTIONAL, MLLM__OPTIONAL, MLLM__OPTIONAL, MLLM__SILU, 0,        MLLM__OPTIONAL, 0,         1,    "<|user|><|end|>"},
};

typedef struct mllm__hparams {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    int n_rot;                     /* rotated dims per head */
    float rope_base, rope_freq_scale, norm_eps;
    int n_expert, n_expert_used, n_ff_exp;
    float emb_scale;               /* embeddings are multiplied by it (1, or sqrt(n_embd): mllm__arch.emb_scale) */
    int n_swa;                     /* sliding window: a windowed layer's query sees this many positions, itself
                                      included; 0: every layer attends globally */
    float rope_base_swa;           /* RoPE base of the windowed layers (no frequency scaling or factors) */
    int swa_period;                /* with n_swa: layer l is global when l % swa_period == swa_period - 1 */
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
    const float *bq, *bk, *bv;     /* Q, K, V biases (mllm__arch.qkv_bias; NULL when absent) */
    const float *q_norm, *k_norm;  /* per-head RMSNorm weights (mllm__arch.qk_norm; NULL when absent) */
    const float *attn_post_norm, *ffn_post_norm;       /* mllm__arch.post_norms (NULL when absent) */
    int swa;                       /* attends over the sliding window hp.n_swa, RoPE base hp.rope_base_swa */
    mllm__weight wq, wk, wv, wo;
    mllm__weight w_gate, w_up, w_down;                 /* dense FFN */
    const float *router;                               /* MoE: [n_expert][n_embd] F32 */
    mllm__weight gate_exps, up_exps, down_exps;        /* MoE: stacks of n_expert matrices */
} mllm__layer;

typedef struct mllm__pool mllm__pool;

struct mllm_model {
    mllm__gguf gguf;
    char arch[32];
    const mllm__arch *arch_desc;   /* arch's row of mllm__archs */
    char name[128];
    char *chat_template;
    mllm__hparams hp;
    mllm__weight tok_embd, output;
    const float *output_norm;
    const float *rope_freqs;       /* [n_rot / 2] divisors of the RoPE frequencies (Llama 3.x rope_freqs), or NULL */
    mllm__layer *layers;
    mllm_vocab vocab;
    int vocab_ready;
    int n_ctx;                     /* context per sequence */
    int n_threads;
    int precise;                   /* F32 activations in matmuls (mllm_model_params.precise) */
    mllm__pool *pool;
    mllm_backend backend;          /* mllm_model_params.backend: contexts decide by it */
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
    if (m->arch_desc->moe == MLLM__REQUIRED && !hp->n_expert)
        return mllm__fail(MLLM_ERR_FORMAT, "%s model without expert_count", m->arch);
    {   /* what the graph has no op for is refused, never ignored */
        static const char *const unsupported[] = {"final_logit_softcapping", "attn_logit_softcapping"};
        float f;
        size_t i;
        for (i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
            if (mllm__arch_f32(m, unsupported[i], &f) && f != 0)
                return mllm__fail(MLLM_ERR_UNSUPPORTED, "%s.%s (logit soft-capping) is not implemented", m->arch, unsupported[i]);
    }
    hp->emb_scale = m->arch_desc->emb_scale ? sqrtf((float)hp->n_embd) : 1.0f;
    hp->rope_base_swa = 10000.0f;
    if (m->arch_desc->swa_period) {   /* architectures without it ignore the key, as llama.cpp does */
        if ((st = mllm__hp_int(m, "attention.sliding_window", &hp->n_swa, 0, 1 << 24)) ||
            (st = mllm__hp_int(m, "attention.sliding_window_pattern", &hp->swa_period, m->arch_desc->swa_period, 4096)))
            return st;
        mllm__arch_f32(m, "rope.freq_base_swa", &hp->rope_base_swa);
        if (!(hp->rope_base_swa > 0)) return mllm__fail(MLLM_ERR_FORMAT, "rope.freq_base_swa %g out of range", hp->rope_base_swa);
    }
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

/* Rows [r0, r0 + n) of a matrix, as a matrix of their own (a block of a fused tensor). */
static mllm__weight mllm__weight_rows(const mllm__weight *w, int64_t r0, int64_t n) {
    mllm__weight v = *w;
    v.data = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    v.rows = n;
    return v;
}

/* Q, K, V projections: three tensors, or blocks of rows of one attn_qkv tensor (mllm__arch.fused). */
static mllm_status mllm__get_qkv(mllm_model *m, mllm__layer *L, int l) {
    const mllm__hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Dq = (int64_t)hp->n_head * hp->head_dim, Dkv = (int64_t)hp->n_head_kv * hp->head_dim;
    mllm__weight qkv;
    mllm_status st;
    char nm[96];
    if (m->arch_desc->fused) {
        snprintf(nm, sizeof nm, "blk.%d.attn_qkv.weight", l);
        if ((st = mllm__get_weight(m, &qkv, nm, E, Dq + 2 * Dkv, 1, 1))) return st;
        L->wq = mllm__weight_rows(&qkv, 0, Dq);
        L->wk = mllm__weight_rows(&qkv, Dq, Dkv);
        L->wv = mllm__weight_rows(&qkv, Dq + Dkv, Dkv);
        return MLLM_OK;
    }
    snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
    if ((st = mllm__get_weight(m, &L->wq, nm, E, Dq, 1, 1))) return st;
    snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l);
    if ((st = mllm__get_weight(m, &L->wk, nm, E, Dkv, 1, 1))) return st;
    snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
    return mllm__get_weight(m, &L->wv, nm, E, Dkv, 1, 1);
}

static mllm_status mllm__load_weights(mllm_model *m) {
    const mllm__hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Dq = (int64_t)hp->n_head * hp->head_dim, Dkv = (int64_t)hp->n_head_kv * hp->head_dim;
    const int bias = m->arch_desc->qkv_bias == MLLM__REQUIRED, qk_norm = m->arch_desc->qk_norm == MLLM__REQUIRED;
    const int post = m->arch_desc->post_norms == MLLM__REQUIRED;
    mllm_status st;
    char nm[96];
    int l;
    if ((st = mllm__get_weight(m, &m->tok_embd, "token_embd.weight", E, hp->n_vocab, 1, 1))) return st;
    if ((st = mllm__get_vec(m, &m->output_norm, "output_norm.weight", E, 1))) return st;
    if ((st = mllm__get_weight(m, &m->output, "output.weight", E, hp->n_vocab, 1, 0))) return st;
    if (!m->output.data) m->output = m->tok_embd;   /* tied embeddings */
    if ((st = mllm__get_vec(m, &m->rope_freqs, "rope_freqs.weight", hp->n_rot / 2, 0))) return st;
    if (mllm__gguf_tensor_find(&m->gguf, "rope_factors_long.weight") || mllm__gguf_tensor_find(&m->gguf, "blk.0.rope_factors_long.weight"))
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "LongRoPE (rope_factors_long) is not implemented");
    m->layers = MLLM__CAST(mllm__layer *, mllm__calloc((size_t)hp->n_layer, sizeof(mllm__layer)));
    if (!m->layers) return mllm__fail(MLLM_ERR_NOMEM, "out of memory for %d layers", hp->n_layer);
    for (l = 0; l < hp->n_layer; l++) {
        mllm__layer *L = &m->layers[l];
#define MLLM__NAME(s) (snprintf(nm, sizeof nm, "blk.%d." s, l), nm)
        if ((st = mllm__get_vec(m, &L->attn_norm, MLLM__NAME("attn_norm.weight"), E, 1)) ||
            (st = mllm__get_vec(m, &L->ffn_norm, MLLM__NAME("ffn_norm.weight"), E, 1)) ||
            (st = mllm__get_qkv(m, L, l)) ||
            (st = mllm__get_weight(m, &L->wo, MLLM__NAME("attn_output.weight"), Dq, E, 1, 1)) ||
            (st = mllm__get_vec(m, &L->bq, MLLM__NAME("attn_q.bias"), Dq, bias)) ||
            (st = mllm__get_vec(m, &L->bk, MLLM__NAME("attn_k.bias"), Dkv, bias)) ||
            (st = mllm__get_vec(m, &L->bv, MLLM__NAME("attn_v.bias"), Dkv, bias)) ||
            (st = mllm__get_vec(m, &L->q_norm, MLLM__NAME("attn_q_norm.weight"), hp->head_dim, qk_norm)) ||
            (st = mllm__get_vec(m, &L->k_norm, MLLM__NAME("attn_k_norm.weight"), hp->head_dim, qk_norm)))
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
            if (m->arch_desc->fused) {   /* gate then up, one tensor */
                mllm__weight gu;
                if ((st = mllm__get_weight(m, &gu, MLLM__NAME("ffn_up.weight"), E, 2 * (int64_t)hp->n_ff, 1, 1))) return st;
                L->w_gate = mllm__weight_rows(&gu, 0, hp->n_ff);
                L->w_up = mllm__weight_rows(&gu, hp->n_ff, hp->n_ff);
            } else if ((st = mllm__get_weight(m, &L->w_gate, MLLM__NAME("ffn_gate.weight"), E, hp->n_ff, 1, 1)) ||
                       (st = mllm__get_weight(m, &L->w_up, MLLM__NAME("ffn_up.weight"), E, hp->n_ff, 1, 1)))
                return st;
            if ((st = mllm__get_weight(m, &L->w_down, MLLM__NAME("ffn_down.weight"), hp->n_ff, E, 1, 1))) return st;
        }
        if ((st = mllm__get_vec(m, &L->attn_post_norm, MLLM__NAME("post_attention_norm.weight"), E, post)) ||
            (st = mllm__get_vec(m, &L->ffn_post_norm, MLLM__NAME("post_ffw_norm.weight"), E, post)))
            return st;
        L->swa = hp->n_swa > 0 && hp->swa_period > 0 && l % hp->swa_period < hp->swa_period - 1;
#undef MLLM__NAME
    }
    return MLLM_OK;
}

/* Finds the architecture's row of mllm__archs. */
static mllm_status mllm__find_arch(mllm_model *m) {
    char known[256] = "";
    size_t i, n = 0;
    for (i = 0; i < sizeof mllm__archs / sizeof mllm__archs[0]; i++) {
        if (!strcmp(m->arch, mllm__archs[i].name)) {
            m->arch_desc = &mllm__archs[i];
            return MLLM_OK;
        }
        n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", i ? ", " : "", mllm__archs[i].name);
        if (n >= sizeof known) n = sizeof known - 1;
    }
    return mllm__fail(MLLM_ERR_UNSUPPORTED, "unsupported architecture '%s' (supported: %s)", m->arch, known);
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
    if ((st = mllm__find_arch(m)) || (st = mllm__load_hparams(m))) return st;
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
static MLLM__UNUSED void mllm__rope(float *x, int n_heads, int head_dim, int n_rot, int pos, float freq_base,
                       float freq_scale, int neox);
static void mllm__swiglu(float *out, const float *gate, const float *up, int n);  /* silu(g) * u */
static MLLM__UNUSED void mllm__softmax(float *x, int n);

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
    int n_sample;                  /* logits rows [0, n_sample) are sampled by the backend (a GPU) */
} mllm__batch;

/* ---- the backend interface: what the model graph (mllm__forward) runs on ----
   Activations are named buffers of F32 rows, which each backend maps to its own storage (the CPU: the
   context's arrays; a GPU: parts of its buffers).  Ops read and write them by name; rows are the batch's
   tokens unless an op takes a count.  A backend may run ops concurrently until sync(): a barrier on a
   GPU, nothing on the CPU, whose ops complete in order.  be is the backend's state for the step (it
   knows the model and the batch); an op fails only with a message (a GPU kernel not found). */
enum {
    MLLM__X,                       /* [T][n_embd] the residual stream */
    MLLM__XB,                      /* [T][n_embd] a block's normalized input */
    MLLM__Q, MLLM__K, MLLM__V,     /* [T][n_head * head_dim], [T][n_head_kv * head_dim] (K, V) */
    MLLM__ATT,                     /* [T][max(n_head * head_dim, n_embd)] attention output, MoE output */
    MLLM__HB, MLLM__HB2,           /* [T][n_ff] FFN gate and up */
    MLLM__LOGITS,                  /* [n_logits][n_vocab] the LM head's rows */
    MLLM__N_BUFS
};

typedef struct mllm__backend_ops {
    mllm_status (*embed)(void *be, int out);              /* out[t] = token_embd[token t] * hp.emb_scale */
    mllm_status (*rmsnorm)(void *be, int in, const float *w, int rows, int n, int out);   /* out may be in */
    /* out[r] = W in[r] (add: out[r] += W in[r]) for rows r, W one matrix of w */
    mllm_status (*matmul)(void *be, const mllm__weight *w, int in, int rows, int out, int add);
    mllm_status (*add_bias)(void *be, int x, const float *bias, int n);   /* x[t][i] += bias[i], rows of n */
    /* in place, at the tokens' positions, with the RoPE of the layer (its base; windowed layers differ) */
    mllm_status (*rope)(void *be, int x, int n_heads, int layer);
    /* Q, K, V -> ATT for layer: writes K and V into the KV cache, then attends causally over it (over the
       last hp.n_swa positions in a windowed layer) */
    mllm_status (*attention)(void *be, int layer);
    mllm_status (*moe)(void *be, const mllm__layer *L, int in, int out);   /* out not in */
    /* gate[t][i] = act(gate) * up, rows of n; act MLLM__SILU (SwiGLU) or MLLM__GELU (GeGLU) */
    mllm_status (*glu)(void *be, int gate, int up, int n, int act);
    mllm_status (*add)(void *be, int x, int y, int n);               /* x[t][i] += y[t][i], rows of n */
    mllm_status (*gather_rows)(void *be, int in, int n, int out);    /* out[i] = in[logits_idx[i]], rows of n */
    mllm_status (*sample)(void *be);                                 /* the LOGITS rows [0, n_sample) */
    void (*sync)(void *be);
} mllm__backend_ops;

static mllm_status mllm__forward(const mllm__backend_ops *ops, void *be, const mllm_model *m, const mllm__batch *b);

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
/* The NEON row ops round differently from the scalar ones (other summation order, a polynomial exp),
   so the arm64 test build that checks the NEON weight kernels against the scalar build bit for bit
   (tests/arm64.mk) leaves them out with MLLM__TEST_SCALAR_ROW_OPS. */
#if MLLM__NEON && !defined(MLLM__TEST_SCALAR_ROW_OPS)
#define MLLM__NEON_ROWS 1
#endif

static void mllm__rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    float scale;
    int i = 0;
#if MLLM__NEON_ROWS                        /* squares are exact in double; two pairs of partial sums */
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = vdupq_n_f64(0.0);
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
        s0 = vfmaq_f64(s0, lo, lo);
        s1 = vfmaq_f64(s1, hi, hi);
    }
    ss = vaddvq_f64(vaddq_f64(s0, s1));
#endif
    for (; i < n; i++) ss += (double)x[i] * x[i];
    scale = (float)(1.0 / sqrt(ss / n + eps));
    i = 0;
#if MLLM__NEON_ROWS                        /* (x * scale) * w per element, as below */
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), scale), vld1q_f32(w + i)));
#endif
    for (; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* cos/sin of each rotated pair for one position: cs[2i] = cos, cs[2i+1] = sin.  factors (or NULL): each
   pair's frequency is divided by factors[i] (Llama 3.x's rope_freqs). */
static void mllm__rope_table(float *cs, int n_rot, int pos, float freq_base, float freq_scale, const float *factors) {
    int i;
    for (i = 0; i < n_rot / 2; i++) {
        double theta = (double)pos * freq_scale * pow((double)freq_base, -2.0 * i / n_rot) / (factors ? factors[i] : 1.0f);
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
    mllm__rope_table(cs, n_rot, pos, freq_base, freq_scale, NULL);
    mllm__rope_apply(x, n_heads, head_dim, n_rot, cs, neox);
}

#ifdef MLLM__AVX2
/* exp(x) for 8 floats: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (relative error
   about 2e-7), 2^n through the exponent bits.  SwiGLU calls exp once per FFN activation, which made
   scalar expf a visible share of a token's time. */
static __m256 mllm__exp8(__m256 x) {
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 n, r, p;
    __m256i e;
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    p = _mm256_set1_ps(1.3981999507e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

#if MLLM__NEON_ROWS
/* mllm__exp8's range reduction and polynomial on four lanes. */
static float32x4_t mllm__neon_exp4(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    float32x4_t n, r, p;
    int32x4_t e;
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
    n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), vdupq_n_f32(1.3981999507e-3f), r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, one), p, vmulq_f32(r, r));
    e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}
#endif

static void mllm__swiglu(float *out, const float *gate, const float *up, int n) {
    int i = 0;
#if MLLM__NEON_ROWS
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(gate + i);
        const float32x4_t silu = vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), mllm__neon_exp4(vnegq_f32(g))));
        vst1q_f32(out + i, vmulq_f32(silu, vld1q_f32(up + i)));
    }
#endif
#ifdef MLLM__AVX2
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = mllm__exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
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
#if MLLM__NEON_ROWS
    {
        float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
        for (; i + 8 <= n; i += 8) {
            acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(b + i))));
            acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(b + i + 4))));
        }
        sum = vaddvq_f32(vaddq_f32(acc0, acc1));
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
#if MLLM__NEON_ROWS
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))), a));
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
    float *rope_cs;                /* [2][n_batch][n_rot]: cos/sin per token of the step, for global layers,
                                      then for windowed ones (mllm__layer.swa) */
    float *row_buf;                /* per thread: one dequantized weight row (precise matmuls) */
    size_t row_buf_floats;
} mllm__exec;

/* matmul: out[t][r] = dot(W[mat][r], x[t]) for t < n_tok, r < rows. */
typedef struct mllm__matmul_job {
    const mllm__weight *w;
    const uint8_t *wdata;
    const uint8_t *xq;             /* activation rows in the weight's vec_dot_type */
    size_t xq_stride;
    int n_tok, rows_per_task;
    float *out;
    float *row_buf;                /* non-NULL: precise mode, x is F32 and weight rows are dequantized */
    size_t row_buf_floats;
} mllm__matmul_job;

/* out[t * N + r] = dot(W[r], x[t]) for weight rows [r0, r1) of wdata and n_tok activation rows of xq
   (in the weight's vec_dot_type, xq_stride bytes apart; F32 with row_buf set: precise mode, each weight
   row dequantized into row_buf first).  Token groups outermost: the weight rows stay in L1 while each
   group of activation rows is reused across them. */
static void mllm__matmul_rows(const mllm__weight *w, const uint8_t *wdata, const uint8_t *xq, size_t xq_stride,
                              int n_tok, float *out, int64_t r0, int64_t r1, float *row_buf) {
    const int64_t K = w->cols, N = w->rows;
    int64_t r;
    int t, k;
    float res[MLLM__DOT_MAX_NX];
    for (t = 0; t < n_tok; t += MLLM__DOT_MAX_NX) {
        int nx = n_tok - t < MLLM__DOT_MAX_NX ? n_tok - t : MLLM__DOT_MAX_NX;
        const uint8_t *x = xq + (size_t)t * xq_stride;
        for (r = r0; r < r1; r++) {
            const uint8_t *wr = wdata + (size_t)r * w->row_bytes;
            if (row_buf) {
                mllm__dequant_row(w->type, wr, row_buf, K);
                for (k = 0; k < nx; k++) res[k] = mllm__vec_dot(MLLM__F32, K, row_buf, x + (size_t)k * xq_stride);
            } else if (nx == 1) res[0] = mllm__vec_dot(w->type, K, wr, x);
            else mllm__vec_dot_nx(w->type, K, wr, x, xq_stride, nx, res);
            for (k = 0; k < nx; k++) out[(size_t)(t + k) * N + r] = res[k];
        }
    }
}

static void mllm__matmul_task(void *arg, int task, int thread) {
    const mllm__matmul_job *j = (const mllm__matmul_job *)arg;
    int64_t r0 = (int64_t)task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->w->rows) r1 = j->w->rows;
    mllm__matmul_rows(j->w, j->wdata, j->xq, j->xq_stride, j->n_tok, j->out, r0, r1,
                      j->row_buf ? j->row_buf + (size_t)thread * j->row_buf_floats : NULL);
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

/* ~8 tasks per thread balances load; at least 4 rows per task keeps overhead low. */
static int mllm__rows_per_task(int64_t rows, int n_threads) {
    int64_t n = (rows + n_threads * 8 - 1) / (n_threads * 8);
    return n < 4 ? 4 : (int)n;
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
    j.row_buf = NULL;
    j.row_buf_floats = ex->row_buf_floats;
    if (ex->model->precise && xt != MLLM__F32) j.row_buf = ex->row_buf;
    if (xt == MLLM__F32 || j.row_buf) {
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
    j.rows_per_task = mllm__rows_per_task(w->rows, n_thr);
    n_tasks = (int)((w->rows + j.rows_per_task - 1) / j.rows_per_task);
    mllm__pool_run(ex->pool, mllm__matmul_task, &j, n_tasks);
}

/* Embedding rows: dequantize the token's row of token_embd. */
static void mllm__cpu_embed(mllm__exec *ex, const mllm_token *tokens, int n, float *out) {
    const mllm__weight *w = &ex->model->tok_embd;
    int i;
    const float scale = ex->model->hp.emb_scale;
    int64_t k;
    for (i = 0; i < n; i++) {
        float *o = out + (size_t)i * w->cols;
        mllm__dequant_row(w->type, (const uint8_t *)w->data + (size_t)tokens[i] * w->row_bytes, o, w->cols);
        if (scale != 1.0f)
            for (k = 0; k < w->cols; k++) o[k] *= scale;
    }
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
    const int win = j->ex->model->layers[j->layer].swa ? hp->n_swa : 0;
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
        int t = sq->first + i, n_pos = sq->pos0 + i + 1;   /* causal: positions p0..pos */
        int p0 = win && n_pos > win ? n_pos - win : 0;   /* a windowed layer sees the last win positions */
        for (g = 0; g < group; g++) {
            int hq = h * group + g;
            const float *q = j->q + ((size_t)t * hp->n_head + hq) * hd;
            float qr[512];
            double sum = 0;
            for (d = 0; d < hd; d++) qr[d] = mllm__f16_to_f32(mllm__f32_to_f16(q[d]));  /* as llama.cpp's FA */
            for (p = p0; p < n_pos; p++)
                scores[p] = scale * mllm__dot_f16(qr, kv->k + mllm__kv_index(kv, j->layer, sq->blocks[p / B], h, p % B), hd);
            {
                float mx = -INFINITY;
                for (p = p0; p < n_pos; p++) mx = scores[p] > mx ? scores[p] : mx;
                for (p = p0; p < n_pos; p++) { scores[p] = expf(scores[p] - mx); sum += scores[p]; }
            }
            memset(acc, 0, sizeof(float) * (size_t)hd);
            for (p = p0; p < n_pos; p++)
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
   command buffer's results are visible to the CPU only after wait.  The engine's GPU forward pass
   (mllm__gpu_forward, below the kernel encoders) is written once against this interface. */
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
    uint32_t (*max_threads)(mllm__gpu_pipe *p); /* threads per threadgroup p allows (Metal: maxTotalThreadsPerThreadgroup) */
    size_t (*max_buffer)(void *dev);            /* largest buffer buf_new/buf_wrap can make (Metal: maxBufferLength) */
} mllm__gpu_vt;

/* What the engine asked of the GPU, for the performance checks (e.g. one commit per decode step). */
typedef struct mllm__gpu_span { mllm__gpu_buf *buf; size_t off; } mllm__gpu_span;   /* bytes at buf + off */

typedef struct mllm__gpu_counters {
    uint64_t dispatches, barriers, commits, waits, bytes_read;
} mllm__gpu_counters;

typedef struct mllm__gpu {
    const mllm__gpu_vt *vt;
    void *dev;
    mllm__gpu_counters n;
    mllm_status fault;      /* a dispatch refused since the last wait (the wait returns it); opening sets MLLM_OK */
    char fault_msg[160];
} mllm__gpu;

/* The engine calls these (not the table) so that every backend is counted the same way. */
static MLLM__UNUSED void mllm__gpu_dispatch(mllm__gpu *g, mllm__gpu_cmd *c, mllm__gpu_pipe *p, uint32_t gx, uint32_t gy,
                               uint32_t gz, uint32_t tx, uint32_t ty, uint32_t tz) {
    uint32_t tgs[3], tpt[3];
    tgs[0] = gx; tgs[1] = gy; tgs[2] = gz;
    tpt[0] = tx; tpt[1] = ty; tpt[2] = tz;
    g->n.dispatches++;
    if ((uint64_t)tx * ty * tz > g->vt->max_threads(p)) {   /* Metal would silently run nothing: fail the step */
        if (!g->fault)
            snprintf(g->fault_msg, sizeof g->fault_msg, "gpu: a kernel needs %u threads per threadgroup, its pipeline allows %u",
                     (unsigned)(tx * ty * tz), (unsigned)g->vt->max_threads(p));
        g->fault = MLLM_ERR_UNSUPPORTED;
        return;
    }
    g->vt->dispatch(c, p, tgs, tpt);
}
/* At most max threads per threadgroup, and no more than pipeline p allows. */
static MLLM__UNUSED uint32_t mllm__gpu_max_tpt(const mllm__gpu *g, mllm__gpu_pipe *p, uint32_t max) {
    uint32_t pm = g->vt->max_threads(p) / 32 * 32;
    return pm < max ? pm : max;
}
static MLLM__UNUSED void mllm__gpu_barrier(mllm__gpu *g, mllm__gpu_cmd *c) { g->n.barriers++; g->vt->barrier(c); }
static MLLM__UNUSED void mllm__gpu_commit(mllm__gpu *g, mllm__gpu_cmd *c) { g->n.commits++; g->vt->commit(c); }
static MLLM__UNUSED mllm_status mllm__gpu_wait(mllm__gpu *g, mllm__gpu_cmd *c) {
    mllm_status st;
    g->n.waits++;
    st = g->vt->wait(c);
    if (g->fault) st = mllm__fail(g->fault, "%s", g->fault_msg);
    g->fault = MLLM_OK;
    return st;
}
/* Copies GPU results to the CPU (shared buffers only; after wait). */
static MLLM__UNUSED mllm_status mllm__gpu_read(mllm__gpu *g, mllm__gpu_buf *b, size_t offset, void *dst, size_t bytes) {
    const char *src = (const char *)g->vt->buf_contents(b);
    if (!src) return mllm__fail(MLLM_ERR_BACKEND, "gpu: reading a private buffer");
    memcpy(dst, src + offset, bytes);
    g->n.bytes_read += bytes;
    return MLLM_OK;
}
static MLLM__UNUSED void mllm__gpu_close(mllm__gpu *g) {
    if (g->vt && g->vt->destroy) g->vt->destroy(g->dev);
    g->vt = NULL;
    g->dev = NULL;
}

/* The host part of kernels/common.h (launch geometry, the GPU weight types MLLM__GPU_TYPES, the kernels'
   parameter structs), pasted by gen/embed_kernels.sh.  The kernels' MSL source is at the end of this
   file, inside the Metal backend's #if (mllm__kernel_sources). */
/* BEGIN GENERATED KERNEL PARAMS */
/* kernels/common.h (host part): launch geometry, GPU weight types, kernel parameter structs */
/* kernels/common.h - what the Metal kernels share with the host.

   Compiled twice: by the Metal compiler (as part of every .metal file in kernels/) and by C/C++ host code
   (metalllm.h's Metal backend, the emulator tests).  The parameter structs below are therefore plain C
   with fixed-width fields and no padding surprises: one definition, read by both sides.  Everything
   MSL-only (the per-type block loaders) is under __METAL_VERSION__.

   Shapes, for every matrix kernel: the weight W has N rows of K elements (GGUF ne[0] = K, rows are
   row_bytes apart); activations X have M rows of K floats; outputs Y have M rows of N floats. */
#ifndef MLLM_KERNELS_COMMON_H
#define MLLM_KERNELS_COMMON_H

#ifdef __METAL_VERSION__
#include <metal_stdlib>
using namespace metal;
#else
#include <stdint.h>
#endif

/* ---------------------------------------------------------------- launch geometry (host must match) */
#define MLLM__GEMV_NSG 2         /* simdgroups per threadgroup: threads per threadgroup = 32 * NSG */
#define MLLM__GEMV_ROWS 4        /* weight rows per simdgroup: threadgroups.x = ceil(N / (NSG * ROWS)) */
#define MLLM__GEMM_BM 32         /* activation rows (tokens) per threadgroup tile: threadgroups.y */
#define MLLM__GEMM_BN 64         /* weight rows (outputs) per threadgroup tile: threadgroups.x */
#define MLLM__GEMM_BK 32         /* depth of one tile step */
#define MLLM__GEMM_THREADS 128   /* 4 simdgroups in a 2 x 2 arrangement */
#define MLLM__REDUCE_MAX_THREADS 1024  /* row reductions (norm, softmax, argmax) use <= this many */

/* ---------------------------------------------------------------- the weight types the kernels read
   The one list of GPU weight types: X(suffix, TYPE) with suffix the kernel-name suffix (gemv_q4_k...)
   and the block loader's name (blk_q4_k, below), TYPE the GGUF type (MLLM__TYPE in metalllm.h).  The
   kernel files instantiate their templates over it, the host maps weight types to kernel names with it
   and the emulator tests build their tables from it: a new type is a line here plus its blk_ loader. */
#define MLLM__GPU_TYPES(X) \
    X(f32, F32)            \
    X(f16, F16)            \
    X(bf16, BF16)          \
    X(q8_0, Q8_0)          \
    X(q4_0, Q4_0)          \
    X(q4_1, Q4_1)          \
    X(q4_k, Q4_K)          \
    X(q6_k, Q6_K)

/* ---------------------------------------------------------------- kernel parameters */
typedef struct mllm__mat_args {  /* gemv_*, gemm_*, get_rows_* */
    uint32_t K;                  /* elements per weight row (a multiple of the type's block) */
    uint32_t N;                  /* weight rows */
    uint32_t M;                  /* activation rows (gemv/gemm) or ids (get_rows) */
    uint32_t row_bytes;          /* bytes between weight rows */
} mllm__mat_args;

typedef struct mllm__norm_args { /* rms_norm, rms_norm_mul: one threadgroup per row of n floats */
    uint32_t n;
    float eps;
} mllm__norm_args;

typedef struct mllm__rope_args { /* rope, rope_neox: in place on [tokens][n_heads][head_dim] */
    uint32_t n_heads;
    uint32_t head_dim;
    uint32_t n_rot;              /* leading dims of each head that rotate (even, <= head_dim) */
    uint32_t stride;             /* floats between consecutive tokens (>= n_heads * head_dim) */
    float freq_base;
    float freq_scale;
} mllm__rope_args;

typedef struct mllm__vec_args {  /* swiglu, add, softmax, argmax */
    uint32_t n;                  /* elements (per row for softmax/argmax, in total otherwise) */
} mllm__vec_args;

typedef struct mllm__bias_args { /* add_bias: rows of cols floats, each plus the same bias row */
    uint32_t n;                  /* elements in total (a multiple of cols) */
    uint32_t cols;
} mllm__bias_args;

/* ---------------------------------------------------------------- attention (kernels/attention.metal)
   Paged KV exactly as the CPU engine's mllm__kv: F16 pools [n_layer][n_blocks][n_head_kv][block_tokens]
   [head_dim]; the host binds each pool at its layer's offset, so kernels index [block][head][t][d].
   Every attention kernel takes the same bindings (the host sets them once per layer):
     0 q [n_tokens][n_head*hd]   1 k, 2 v [n_tokens][n_head_kv*hd] (new rows, f32)
     3 K pool, 4 V pool (f16, layer base)   5 out [n_tokens][n_head*hd]   6 decode partials (f32)
     7 mllm__attn_seq[n_seqs]   8 int tok_seq[n_tokens]   9 int block tables   10 mllm__attn_args */
#define MLLM__ATTN_NSG 4          /* simdgroups per threadgroup (128 threads) in every attention kernel */
#define MLLM__ATTN_CHUNK 256      /* decode: context positions per threadgroup (split-K); multiple of 32 */
#define MLLM__ATTN_GROUP 8        /* decode: query heads of one KV head handled per threadgroup */
#define MLLM__ATTN_BQ 32          /* prefill: query tokens per threadgroup (8 per simdgroup) */

typedef struct mllm__attn_seq {  /* one sequence of the batch: tokens [first, first + n) at pos0.. */
    int32_t first, n, pos0;
    int32_t blocks;              /* index of its block table (ceil((pos0 + n) / block_tokens) ids) in buffer 9 */
} mllm__attn_seq;

typedef struct mllm__attn_args {
    uint32_t n_seqs, n_tokens;
    uint32_t n_head, n_head_kv, head_dim, block_tokens;
    uint32_t n_chunks;           /* decode: splits of the longest context (grid x, partials per head) */
    float scale;                 /* 1 / sqrt(head_dim) */
} mllm__attn_args;

/* ---------------------------------------------------------------- mllm__moe_*: mixture of experts
   (kernels/moe.metal).  One MoE layer is a fixed chain of dispatches, whatever n_expert and however
   many experts are active: route (top-k per token) -> [map (counting sort by expert), gemm path only]
   -> grouped gate and up products -> swiglu -> grouped down product -> combine.  An "assigned row" is
   r = token * n_used + slot; the gemm path works on them in sorted order p (grouped by expert). */
#define MLLM__MOE_MAX_EXPERT 1024  /* moe_route keeps a 32-bit "taken" mask per lane (32 x 32 experts) */
#define MLLM__MOE_MAX_USED 8       /* experts per token */
#define MLLM__MOE_MAP_THREADS 256  /* moe_map: one threadgroup of this many threads */
#define MLLM__MOE_COMBINE_THREADS 64

typedef struct mllm__moe_args {  /* moe_route, moe_map, moe_combine */
    uint32_t n_expert;
    uint32_t n_used;             /* experts per token (<= n_expert, <= MLLM__MOE_MAX_USED) */
    uint32_t n_tokens;
    uint32_t n;                  /* moe_combine: floats per row */
} mllm__moe_args;

typedef struct mllm__moe_mat_args {  /* moe_gemv_*, moe_gemm_*: W holds n_expert matrices of N rows */
    uint32_t K, N, row_bytes;    /* as mllm__mat_args, for one expert's matrix (N * row_bytes apart) */
    uint32_t n_rows;             /* assigned rows: n_tokens * n_used */
    uint32_t n_used;
    uint32_t n_expert;
    uint32_t gather;             /* 1 (gate, up): X has a row per token, Y a row per sorted row p;
                                    0 (down): X has a row per sorted row p, Y a row per assigned row r
                                    (gemv: p = r, there is no sort) */
} mllm__moe_mat_args;

/* moe_map's output, one uint buffer: offsets[n_expert + 1] (first sorted row of each expert), then
   rows[n_rows] (assigned row r at sorted position p), then the gemm tile count, then per tile
   {expert, first sorted row}.  At most ceil(n_rows / BM) + min(n_expert, n_rows) tiles. */
#define MLLM__MOE_MAP_ROWS(n_expert) ((n_expert) + 1)
#define MLLM__MOE_MAP_NTILES(n_expert, n_rows) ((n_expert) + 1 + (n_rows))
#define MLLM__MOE_MAP_TILES(n_expert, n_rows) ((n_expert) + 2 + (n_rows))
#define MLLM__MOE_MAX_TILES(n_expert, n_rows) \
    (((n_rows) + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM + ((n_expert) < (n_rows) ? (n_expert) : (n_rows)))
/* ---------------------------------------------------------------- end of mllm__moe_* */

/* ---------------------------------------------------------------- mllm__sample_*: GPU sampling
   kernels/sample.metal picks one token per sampled row under the rule written out above metalllm.h's
   mllm__sample (both samplers follow it).  Per-sequence penalty state lives on the GPU: counts[seq][n_vocab]
   (ushort: occurrences in the window) and ring[seq][ring_cap] (the last `window` tokens, token number
   t at t % window), updated by the kernel after each pick and seeded by the host. */
typedef struct mllm__sample_args {  /* sample: the whole dispatch */
    uint32_t n_vocab;
    uint32_t ring_cap;              /* ints per ring row (>= every row's window, <= 65535) */
} mllm__sample_args;

typedef struct mllm__sample_row {   /* sample: one per logits row */
    uint32_t seq;                   /* its row in counts / ring (distinct among rows with penalties) */
    uint32_t n_hist;                /* tokens in its history before this pick (the ring position) */
    uint32_t window;                /* penalty window, 1..ring_cap */
    uint32_t top_k;                 /* 0 (or >= n_vocab): off */
    uint32_t greedy;                /* temperature <= 0: argmax of the penalised logits */
    uint32_t penalties;             /* any penalty on (else counts and ring are not used) */
    float inv_temp;                 /* 1 / temperature, rounded on the host as the CPU sampler does */
    float top_p;                    /* 0: off */
    float min_p;                    /* min(min_p, 1); 0: off */
    float repeat, inv_repeat;       /* repetition penalty and 1 / it (1, 1: off) */
    float frequency, presence;
    uint32_t seed_lo, seed_hi;      /* the sequence's RNG stream ... */
    uint32_t counter_lo, counter_hi;/* ... and this draw's number in it */
} mllm__sample_row;

#endif /* MLLM_KERNELS_COMMON_H */
/* END GENERATED KERNEL PARAMS */

/* ---- attention over the paged KV cache on the GPU (kernels/attention.metal) ----
   Per step the CPU writes the batch's metadata (sequences, each token's sequence, block tables) into a
   shared buffer once; per layer mllm__gpu_encode_attention encodes, in the caller's command buffer:
   attn_kv_write (the step's K/V into their blocks), barrier, then attn_decode_hd<D> + barrier +
   attn_reduce when every sequence has one token (split over the context), else attn_prefill_hd<D>
   for the whole batch (it takes any n >= 1, so mixed decode/prefill batches go there). */

typedef struct mllm__gpu_attn_io {
    mllm__gpu_span q, k, v, out;   /* f32 rows: [n_tokens][n_head * hd], [n_tokens][n_head_kv * hd] (k, v) */
    mllm__gpu_buf *kpool, *vpool;  /* whole F16 pools, laid out as mllm__kv's k and v */
    mllm__gpu_buf *meta;           /* shared, filled by mllm__gpu_attn_meta for this batch */
    mllm__gpu_buf *part;           /* decode partials: mllm__gpu_attn_layout(...).part_bytes */
} mllm__gpu_attn_io;

typedef struct mllm__gpu_attn_layout {
    size_t seqs, tok_seq, tables, meta_bytes;   /* byte offsets of the parts of the meta buffer, its size */
    size_t part_bytes;                          /* decode partials (0 for a prefill batch) */
    uint32_t n_chunks, max_n;                   /* decode splits of the longest context; longest n */
    int decode;                                 /* every sequence has one token */
} mllm__gpu_attn_layout;

static MLLM__UNUSED mllm__gpu_attn_layout mllm__gpu_attn_layout_of(const mllm__batch *b, int block_tokens, int n_head,
                                                                  int head_dim) {
    mllm__gpu_attn_layout L;
    size_t n_tab = 0;
    int s, max_ctx = 0;
    memset(&L, 0, sizeof L);
    L.decode = 1;
    for (s = 0; s < b->n_seqs; s++) {
        const mllm__batch_seq *sq = &b->seqs[s];
        n_tab += (size_t)((sq->pos0 + sq->n + block_tokens - 1) / block_tokens);
        max_ctx = sq->pos0 + sq->n > max_ctx ? sq->pos0 + sq->n : max_ctx;
        L.max_n = (uint32_t)sq->n > L.max_n ? (uint32_t)sq->n : L.max_n;
        L.decode &= sq->n == 1;
    }
    L.tok_seq = ((size_t)b->n_seqs * sizeof(mllm__attn_seq) + 15) & ~(size_t)15;   /* 16-byte aligned parts */
    L.tables = (L.tok_seq + (size_t)b->n_tokens * 4 + 15) & ~(size_t)15;
    L.meta_bytes = L.tables + n_tab * 4;
    L.n_chunks = (uint32_t)((max_ctx + MLLM__ATTN_CHUNK - 1) / MLLM__ATTN_CHUNK);
    if (L.decode) L.part_bytes = (size_t)b->n_seqs * n_head * L.n_chunks * (head_dim + 2) * sizeof(float);
    return L;
}

/* Writes the batch's metadata at dst (the meta buffer's contents, meta_bytes of them). */
static MLLM__UNUSED void mllm__gpu_attn_meta(const mllm__batch *b, int block_tokens, const mllm__gpu_attn_layout *L,
                                            void *dst) {
    mllm__attn_seq *seqs = (mllm__attn_seq *)dst;
    int32_t *tok_seq = (int32_t *)((char *)dst + L->tok_seq), *tables = (int32_t *)((char *)dst + L->tables);
    int s, i, n_tab = 0;
    for (s = 0; s < b->n_seqs; s++) {
        const mllm__batch_seq *sq = &b->seqs[s];
        const int nb = (sq->pos0 + sq->n + block_tokens - 1) / block_tokens;
        seqs[s].first = sq->first;
        seqs[s].n = sq->n;
        seqs[s].pos0 = sq->pos0;
        seqs[s].blocks = n_tab;
        memcpy(tables + n_tab, sq->blocks, (size_t)nb * 4);
        n_tab += nb;
        for (i = 0; i < sq->n; i++) tok_seq[sq->first + i] = s;
    }
}

/* Encodes one layer's attention for batch b (metadata already in io->meta).  kv gives the pool shape
   (its host pointers are not used).  The outputs are complete after a barrier. */
static MLLM__UNUSED mllm_status mllm__gpu_encode_attention(mllm__gpu *g, mllm__gpu_cmd *c, const mllm__batch *b,
                                                          const mllm__kv *kv, int n_head, int layer,
                                                          const mllm__gpu_attn_io *io) {
    const int hd = kv->head_dim;
    const mllm__gpu_attn_layout L = mllm__gpu_attn_layout_of(b, kv->block_tokens, n_head, hd);
    const size_t layer_off = mllm__kv_index(kv, layer, 0, 0, 0) * 2;
    mllm__attn_args a;
    mllm__gpu_pipe *pw, *pa, *pr = NULL;
    char name[32];
    if (hd != 64 && hd != 128) return mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu attention: head_dim %d (64, 128 only)", hd);
    snprintf(name, sizeof name, "attn_%s_hd%d", L.decode ? "decode" : "prefill", hd);
    pw = g->vt->pipeline(g->dev, "attn_kv_write");
    pa = g->vt->pipeline(g->dev, name);
    if (L.decode) pr = g->vt->pipeline(g->dev, "attn_reduce");
    if (!pw || !pa || (L.decode && !pr)) return MLLM_ERR_BACKEND;

    a.n_seqs = (uint32_t)b->n_seqs;
    a.n_tokens = (uint32_t)b->n_tokens;
    a.n_head = (uint32_t)n_head;
    a.n_head_kv = (uint32_t)kv->n_head_kv;
    a.head_dim = (uint32_t)hd;
    a.block_tokens = (uint32_t)kv->block_tokens;
    a.n_chunks = L.n_chunks;
    a.scale = 1.0f / sqrtf((float)hd);
    g->vt->set_buffer(c, io->q.buf, io->q.off, 0);   /* the same bindings serve all three kernels */
    g->vt->set_buffer(c, io->k.buf, io->k.off, 1);
    g->vt->set_buffer(c, io->v.buf, io->v.off, 2);
    g->vt->set_buffer(c, io->kpool, layer_off, 3);
    g->vt->set_buffer(c, io->vpool, layer_off, 4);
    g->vt->set_buffer(c, io->out.buf, io->out.off, 5);
    if (L.decode) g->vt->set_buffer(c, io->part, 0, 6);
    g->vt->set_buffer(c, io->meta, 0, 7);
    g->vt->set_buffer(c, io->meta, L.tok_seq, 8);
    g->vt->set_buffer(c, io->meta, L.tables, 9);
    g->vt->set_bytes(c, &a, sizeof a, 10);

    mllm__gpu_dispatch(g, c, pw, (uint32_t)b->n_tokens, 1, 1, 128, 1, 1);
    mllm__gpu_barrier(g, c);   /* the attention reads the rows just written */
    if (L.decode) {
        const int group = n_head / kv->n_head_kv, slices = (group + MLLM__ATTN_GROUP - 1) / MLLM__ATTN_GROUP;
        mllm__gpu_dispatch(g, c, pa, L.n_chunks, (uint32_t)(kv->n_head_kv * slices), (uint32_t)b->n_seqs,
                           32 * MLLM__ATTN_NSG, 1, 1);
        mllm__gpu_barrier(g, c);
        mllm__gpu_dispatch(g, c, pr, (uint32_t)n_head, (uint32_t)b->n_seqs, 1, (uint32_t)hd, 1, 1);
    } else {
        mllm__gpu_dispatch(g, c, pa, (L.max_n + MLLM__ATTN_BQ - 1) / MLLM__ATTN_BQ, (uint32_t)n_head,
                           (uint32_t)b->n_seqs, 32 * MLLM__ATTN_NSG, 1, 1);
    }
    return MLLM_OK;
}

/* ---- one MoE layer on the GPU (kernels/moe.metal): host side of the mllm__moe_* kernels ---- */
/* Weight type -> kernel-name suffix (gemv_<suffix>, moe_gemm_<suffix>...), from the list the kernels
   are instantiated over (MLLM__GPU_TYPES, kernels/common.h); NULL: no kernel reads it. */
static MLLM__UNUSED const char *mllm__gpu_type_suffix(uint32_t type) {
    switch (type) {
#define MLLM__GPU_SUFFIX(name, TYPE) case MLLM__##TYPE: return #name;
    MLLM__GPU_TYPES(MLLM__GPU_SUFFIX)
#undef MLLM__GPU_SUFFIX
    default: return NULL;
    }
}


typedef struct mllm__gpu_moe_io {
    mllm__gpu_span router;          /* F32 [n_expert][n_embd] */
    mllm__gpu_span gate, up, down;  /* the expert stacks of mllm__layer's gate_exps, up_exps, down_exps */
    mllm__gpu_span x, out;          /* [T][n_embd]: normalized input, combined output (not aliased) */
    mllm__gpu_span scratch;         /* mllm__gpu_moe_scratch(hp, T).bytes */
} mllm__gpu_moe_io;

/* The scratch of one MoE layer of T tokens (byte offsets, 256-aligned for any binding). */
typedef struct mllm__gpu_moe_scratch {
    size_t logits, sel, wts, map, hg, hu, yd, bytes;
} mllm__gpu_moe_scratch;

static MLLM__UNUSED mllm__gpu_moe_scratch mllm__gpu_moe_scratch_of(const mllm__hparams *hp, int T) {
    const size_t NE = (size_t)hp->n_expert, TK = (size_t)T * (size_t)hp->n_expert_used;
    const size_t map = MLLM__MOE_MAP_TILES(NE, TK) + 2 * (size_t)MLLM__MOE_MAX_TILES(NE, TK);
    mllm__gpu_moe_scratch s;
    size_t o = 0;
#define MLLM__MOE_TAKE(field, n) (s.field = o, o += ((n) * 4 + 255) / 256 * 256)
    MLLM__MOE_TAKE(logits, (size_t)T * NE);
    MLLM__MOE_TAKE(sel, TK);
    MLLM__MOE_TAKE(wts, TK);
    MLLM__MOE_TAKE(map, map);
    MLLM__MOE_TAKE(hg, TK * (size_t)hp->n_ff_exp);
    MLLM__MOE_TAKE(hu, TK * (size_t)hp->n_ff_exp);
    MLLM__MOE_TAKE(yd, TK * (size_t)hp->n_embd);
#undef MLLM__MOE_TAKE
    s.bytes = o;
    return s;
}

/* Weight products of fewer tokens than this take the GEMV kernels, from it on the simdgroup-matrix GEMM
   (dense products and a MoE layer's grouped ones alike, chosen by the step's token count).  The GEMV
   reads each weight once per row of activations, the GEMM once per tile of MLLM__GEMM_BM rows, whose
   padding is waste at decode sizes.  8: a guess between the two (not tuned on Apple hardware). */
#define MLLM__GPU_GEMM_MIN_TOKENS 8

static MLLM__UNUSED mllm__gpu_pipe *mllm__gpu_pipe_of(mllm__gpu *g, const char *family, uint32_t type) {
    char name[48];
    const char *sfx = mllm__gpu_type_suffix(type);
    if (!sfx) {
        mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu: no %s kernel for weight type %u", family, (unsigned)type);
        return NULL;
    }
    snprintf(name, sizeof name, "%s_%s", family, sfx);
    return g->vt->pipeline(g->dev, name);
}

/* Encodes one MoE layer, x -> out, for T tokens on c: router product, route, [map,] gate and up, swiglu,
   down, combine, with a barrier between dependent steps.  The dispatch count is a constant (7 on the
   GEMV path, 8 on the GEMM path), independent of n_expert and of which experts are active: each
   expert product is one grid over all (token, slot) rows.  use_gemm < 0 chooses by T. */
static MLLM__UNUSED mllm_status mllm__gpu_encode_moe(mllm__gpu *g, mllm__gpu_cmd *c, const mllm__hparams *hp,
                                                     const mllm__layer *L, const mllm__gpu_moe_io *io, int T,
                                                     int use_gemm) {
    const uint32_t NE = (uint32_t)hp->n_expert, K = (uint32_t)hp->n_expert_used, E = (uint32_t)hp->n_embd;
    const uint32_t F = (uint32_t)hp->n_ff_exp, TK = (uint32_t)T * K;
    const mllm__gpu_moe_scratch s = mllm__gpu_moe_scratch_of(hp, T);
    const int mm = use_gemm < 0 ? T >= MLLM__GPU_GEMM_MIN_TOKENS : use_gemm != 0;
    const char *fam = mm ? "moe_gemm" : "moe_gemv";
    mllm__gpu_pipe *p_router, *p_route, *p_map = NULL, *p_gate, *p_up, *p_down, *p_swiglu, *p_combine;
    mllm__gpu_buf *sb = io->scratch.buf;
    const size_t so = io->scratch.off;
    mllm__mat_args ra;
    mllm__moe_args ma;
    mllm__moe_mat_args ga, da;
    mllm__vec_args va;
    const mllm__weight *mats[3];
    const mllm__gpu_span *refs[3];
    int i;

    if (T < 1 || K < 1 || K > NE || K > MLLM__MOE_MAX_USED || NE > MLLM__MOE_MAX_EXPERT)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "gpu moe: %d tokens, %u of %u experts not supported", T, K, NE);
    p_router = g->vt->pipeline(g->dev, mm ? "gemm_f32" : "gemv_f32");
    p_route = g->vt->pipeline(g->dev, "moe_route");
    if (mm) p_map = g->vt->pipeline(g->dev, "moe_map");
    p_gate = mllm__gpu_pipe_of(g, fam, L->gate_exps.type);
    p_up = mllm__gpu_pipe_of(g, fam, L->up_exps.type);
    p_down = mllm__gpu_pipe_of(g, fam, L->down_exps.type);
    p_swiglu = g->vt->pipeline(g->dev, "swiglu");
    p_combine = g->vt->pipeline(g->dev, "moe_combine");
    if (!p_router || !p_route || (mm && !p_map) || !p_gate || !p_up || !p_down || !p_swiglu || !p_combine)
        return MLLM_ERR_BACKEND;   /* (the lookup said why) */

    /* router logits [T][NE] = x router^T */
    ra.K = E; ra.N = NE; ra.M = (uint32_t)T; ra.row_bytes = E * 4;
    g->vt->set_buffer(c, io->router.buf, io->router.off, 0);
    g->vt->set_buffer(c, io->x.buf, io->x.off, 1);
    g->vt->set_buffer(c, sb, so + s.logits, 2);
    g->vt->set_bytes(c, &ra, sizeof ra, 3);
    if (mm) mllm__gpu_dispatch(g, c, p_router, (NE + MLLM__GEMM_BN - 1) / MLLM__GEMM_BN,
                               ((uint32_t)T + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM, 1, MLLM__GEMM_THREADS, 1, 1);
    else mllm__gpu_dispatch(g, c, p_router, (NE + MLLM__GEMV_NSG * MLLM__GEMV_ROWS - 1) / (MLLM__GEMV_NSG * MLLM__GEMV_ROWS),
                            (uint32_t)T, 1, 32 * MLLM__GEMV_NSG, 1, 1);
    mllm__gpu_barrier(g, c);

    /* top-k and weights per token; then (GEMM path) the rows sorted by expert and the tile list */
    ma.n_expert = NE; ma.n_used = K; ma.n_tokens = (uint32_t)T; ma.n = E;
    g->vt->set_buffer(c, sb, so + s.logits, 0);
    g->vt->set_buffer(c, sb, so + s.sel, 1);
    g->vt->set_buffer(c, sb, so + s.wts, 2);
    g->vt->set_bytes(c, &ma, sizeof ma, 3);
    mllm__gpu_dispatch(g, c, p_route, (uint32_t)T, 1, 1, 32, 1, 1);
    mllm__gpu_barrier(g, c);
    if (mm) {
        g->vt->set_buffer(c, sb, so + s.sel, 0);
        g->vt->set_buffer(c, sb, so + s.map, 1);
        g->vt->set_bytes(c, &ma, sizeof ma, 2);
        mllm__gpu_dispatch(g, c, p_map, 1, 1, 1, MLLM__MOE_MAP_THREADS, 1, 1);
        mllm__gpu_barrier(g, c);
    }

    /* gate and up (independent: no barrier between them), swiglu, down */
    mats[0] = &L->gate_exps; mats[1] = &L->up_exps; mats[2] = &L->down_exps;
    refs[0] = &io->gate; refs[1] = &io->up; refs[2] = &io->down;
    for (i = 0; i < 3; i++) {
        mllm__moe_mat_args *a = i < 2 ? &ga : &da;
        mllm__gpu_pipe *pp = i == 0 ? p_gate : i == 1 ? p_up : p_down;
        const uint32_t N = i < 2 ? F : E;
        a->K = i < 2 ? E : F; a->N = N; a->row_bytes = (uint32_t)mats[i]->row_bytes;
        a->n_rows = TK; a->n_used = K; a->n_expert = NE; a->gather = i < 2;
        if (i == 2) {   /* swiglu in place on the gate rows, then down reads them */
            va.n = TK * F;
            mllm__gpu_barrier(g, c);
            g->vt->set_buffer(c, sb, so + s.hg, 0);
            g->vt->set_buffer(c, sb, so + s.hu, 1);
            g->vt->set_buffer(c, sb, so + s.hg, 2);
            g->vt->set_bytes(c, &va, sizeof va, 3);
            mllm__gpu_dispatch(g, c, p_swiglu, (va.n / 4 + 256) / 256, 1, 1, 256, 1, 1);
            mllm__gpu_barrier(g, c);
        }
        g->vt->set_buffer(c, refs[i]->buf, refs[i]->off, 0);
        g->vt->set_buffer(c, i < 2 ? io->x.buf : sb, i < 2 ? io->x.off : so + s.hg, 1);
        g->vt->set_buffer(c, sb, so + (i == 0 ? s.hg : i == 1 ? s.hu : s.yd), 2);
        g->vt->set_bytes(c, a, sizeof *a, 3);
        g->vt->set_buffer(c, sb, so + (mm ? s.map : s.sel), 4);
        if (mm) mllm__gpu_dispatch(g, c, pp, (N + MLLM__GEMM_BN - 1) / MLLM__GEMM_BN, MLLM__MOE_MAX_TILES(NE, TK), 1,
                                   MLLM__GEMM_THREADS, 1, 1);
        else mllm__gpu_dispatch(g, c, pp, (N + MLLM__GEMV_NSG * MLLM__GEMV_ROWS - 1) / (MLLM__GEMV_NSG * MLLM__GEMV_ROWS),
                                TK, 1, 32 * MLLM__GEMV_NSG, 1, 1);
    }
    mllm__gpu_barrier(g, c);

    /* out[t] = sum_k w[t,k] y[t,k] */
    g->vt->set_buffer(c, sb, so + s.yd, 0);
    g->vt->set_buffer(c, sb, so + s.wts, 1);
    g->vt->set_buffer(c, io->out.buf, io->out.off, 2);
    g->vt->set_bytes(c, &ma, sizeof ma, 3);
    mllm__gpu_dispatch(g, c, p_combine, (E + 4 * MLLM__MOE_COMBINE_THREADS - 1) / (4 * MLLM__MOE_COMBINE_THREADS),
                       (uint32_t)T, 1, MLLM__MOE_COMBINE_THREADS, 1, 1);
    return MLLM_OK;
}


/* ---- GPU sampling (kernels/sample.metal; the rule is written out above mllm__sample).  Each sequence's
   penalty state stays on the GPU, seeded once from its history by the host and updated by the kernel
   after each pick, so a step uploads one small row of settings per sequence and reads back 4 bytes. */
typedef struct mllm__gpu_sampler {
    mllm__gpu_buf *counts;   /* ushort [n_seq][n_vocab]: occurrences in each sequence's penalty window */
    mllm__gpu_buf *ring;     /* int [n_seq][ring_cap]: the window's tokens */
    mllm__gpu_buf *rows;     /* mllm__sample_row [n_seq]: written at encode */
    mllm__gpu_buf *out;      /* int [n_seq]: the picks */
    mllm__gpu_pipe *pipe;
    int n_vocab, n_seq, ring_cap;
    int threads;             /* per threadgroup (a multiple of 32, <= 1024); 0: from n_vocab */
} mllm__gpu_sampler;

static MLLM__UNUSED void mllm__gpu_sampler_free(mllm__gpu *g, mllm__gpu_sampler *s) {
    mllm__gpu_buf *b[4];
    int i;
    b[0] = s->counts; b[1] = s->ring; b[2] = s->rows; b[3] = s->out;
    for (i = 0; i < 4; i++)
        if (b[i]) g->vt->buf_free(b[i]);
    memset(s, 0, sizeof *s);
}

/* State for n_seq sequences; ring_cap bounds penalty_last_n (<= 65535: counts are 16-bit). */
static MLLM__UNUSED mllm_status mllm__gpu_sampler_init(mllm__gpu *g, mllm__gpu_sampler *s, int n_vocab, int n_seq,
                                                       int ring_cap) {
    memset(s, 0, sizeof *s);
    if (n_vocab < 1 || n_seq < 1 || ring_cap < 1 || ring_cap > 65535)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "gpu sampler: bad sizes");
    s->n_vocab = n_vocab;
    s->n_seq = n_seq;
    s->ring_cap = ring_cap;
    s->counts = g->vt->buf_new(g->dev, (size_t)n_seq * (size_t)n_vocab * 2, MLLM__GPU_SHARED);
    s->ring = g->vt->buf_new(g->dev, (size_t)n_seq * (size_t)ring_cap * 4, MLLM__GPU_SHARED);
    s->rows = g->vt->buf_new(g->dev, (size_t)n_seq * sizeof(mllm__sample_row), MLLM__GPU_SHARED);
    s->out = g->vt->buf_new(g->dev, (size_t)n_seq * 4, MLLM__GPU_SHARED);
    s->pipe = g->vt->pipeline(g->dev, "sample");
    if (!s->counts || !s->ring || !s->rows || !s->out || !s->pipe) {
        const int oom = !s->pipe ? 0 : 1;
        mllm__gpu_sampler_free(g, s);
        return oom ? mllm__fail(MLLM_ERR_NOMEM, "gpu sampler: no buffers for %d sequences", n_seq)
                   : mllm__fail(MLLM_ERR_BACKEND, "gpu sampler: no sample kernel");
    }
    return MLLM_OK;
}

/* Sets sequence seq's penalty window from its history (prompt, or after a fork or an append).  Host
   writes: no command buffer that samples may be in flight. */
static MLLM__UNUSED mllm_status mllm__gpu_sampler_seed(mllm__gpu *g, mllm__gpu_sampler *s, int seq,
                                                       const mllm_token *hist, int n_hist, int window) {
    uint16_t *cnt = (uint16_t *)g->vt->buf_contents(s->counts);
    int32_t *ring = (int32_t *)g->vt->buf_contents(s->ring);
    int t;
    if (seq < 0 || seq >= s->n_seq || window < 1 || window > s->ring_cap || !cnt || !ring)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "gpu sampler: bad seed");
    cnt += (size_t)seq * (size_t)s->n_vocab;
    ring += (size_t)seq * (size_t)s->ring_cap;
    memset(cnt, 0, (size_t)s->n_vocab * 2);
    for (t = n_hist > window ? n_hist - window : 0; t < n_hist; t++) {
        ring[t % window] = hist[t];
        if (hist[t] >= 0 && hist[t] < s->n_vocab) cnt[hist[t]]++;
    }
    return MLLM_OK;
}

/* One row of settings: sequence seq (its state row), its sampler, the tokens in its history before this
   pick, and the pick's number in its RNG stream.  Host arithmetic as in mllm__sample. */
static MLLM__UNUSED mllm__sample_row mllm__gpu_sample_row(int seq, const mllm_sampler_params *sp, int n_hist,
                                                          uint64_t counter) {
    mllm__sample_row r;
    int rep = sp->repeat_penalty > 0 && sp->repeat_penalty != 1.0f;
    memset(&r, 0, sizeof r);
    r.seq = (uint32_t)seq;
    r.n_hist = (uint32_t)n_hist;
    r.window = (uint32_t)(sp->penalty_last_n > 0 ? sp->penalty_last_n : 64);
    r.top_k = sp->top_k > 0 ? (uint32_t)sp->top_k : 0;
    r.greedy = !(sp->temperature > 0);
    r.penalties = rep || sp->frequency_penalty != 0 || sp->presence_penalty != 0;
    r.inv_temp = r.greedy ? 0.0f : 1.0f / sp->temperature;
    r.top_p = sp->top_p > 0 && sp->top_p < 1 ? sp->top_p : 0.0f;
    r.min_p = sp->min_p < 1 ? sp->min_p : 1.0f;
    r.repeat = rep ? sp->repeat_penalty : 1.0f;
    r.inv_repeat = rep ? 1.0f / sp->repeat_penalty : 1.0f;
    r.frequency = sp->frequency_penalty;
    r.presence = sp->presence_penalty;
    r.seed_lo = (uint32_t)sp->seed;
    r.seed_hi = (uint32_t)(sp->seed >> 32);
    r.counter_lo = (uint32_t)counter;
    r.counter_hi = (uint32_t)(counter >> 32);
    return r;
}

/* Encodes the picks of n_rows sequences from logits rows [n_rows][n_vocab] at (lb, offset); rows[r]
   names row r's sequence (distinct among rows with penalties) and settings.  The settings go through a shared buffer written now:
   the previous sampling command buffer must have completed.  Read the picks after wait. */
static MLLM__UNUSED mllm_status mllm__gpu_encode_sample(mllm__gpu *g, mllm__gpu_cmd *c, mllm__gpu_sampler *s,
                                                        mllm__gpu_buf *lb, size_t offset, const mllm__sample_row *rows,
                                                        int n_rows) {
    mllm__sample_args a;
    mllm__sample_row *dst = (mllm__sample_row *)g->vt->buf_contents(s->rows);
    uint32_t tpt = (uint32_t)s->threads;
    int r;
    if (n_rows < 0 || n_rows > s->n_seq || !dst) return mllm__fail(MLLM_ERR_INVALID_ARG, "gpu sampler: bad rows");
    for (r = 0; r < n_rows; r++)
        if (rows[r].seq >= (uint32_t)s->n_seq ||
            (rows[r].penalties && (rows[r].window < 1 || rows[r].window > (uint32_t)s->ring_cap)))
            return mllm__fail(MLLM_ERR_INVALID_ARG, "gpu sampler: row %d: bad sequence or window", r);
    if (n_rows == 0) return MLLM_OK;
    memcpy(dst, rows, (size_t)n_rows * sizeof *rows);
    if (!tpt) {   /* about 32 tokens a thread, as one threadgroup walks the whole vocabulary */
        tpt = ((uint32_t)s->n_vocab / 32 + 31) / 32 * 32;
        tpt = tpt < 32 ? 32 : tpt > MLLM__REDUCE_MAX_THREADS ? MLLM__REDUCE_MAX_THREADS : tpt;
        if (tpt > mllm__gpu_max_tpt(g, s->pipe, tpt)) tpt = mllm__gpu_max_tpt(g, s->pipe, tpt);
    }
    a.n_vocab = (uint32_t)s->n_vocab;
    a.ring_cap = (uint32_t)s->ring_cap;
    g->vt->set_buffer(c, lb, offset, 0);
    g->vt->set_buffer(c, s->rows, 0, 1);
    g->vt->set_buffer(c, s->counts, 0, 2);
    g->vt->set_buffer(c, s->ring, 0, 3);
    g->vt->set_buffer(c, s->out, 0, 4);
    g->vt->set_bytes(c, &a, sizeof a, 5);
    mllm__gpu_dispatch(g, c, s->pipe, (uint32_t)n_rows, 1, 1, tpt, 1, 1);
    return MLLM_OK;
}

/* The picks of the last encoded sampling, after wait: 4 bytes per row. */
static MLLM__UNUSED mllm_status mllm__gpu_read_samples(mllm__gpu *g, mllm__gpu_sampler *s, mllm_token *out, int n_rows) {
    return mllm__gpu_read(g, s->out, 0, out, (size_t)n_rows * sizeof *out);
}

/* ---- the GPU backend of the model graph: one step = one command buffer ----
   mllm__forward encodes its ops (below) into the step's command buffer, sync() a barrier.  Buffers,
   made once per context: the GGUF mapping wrapped without a copy (every tensor is bound at its offset in
   it), the KV pools (shared: mllm__kv's k and v point at their contents, so block allocation, refcounts
   and the copy-on-write memcpy stay on the CPU, between steps), the activations (private scratch), and a
   shared io buffer (the step's metadata in, the LM head's logits rows out). */
typedef struct mllm__gpu_fwd {
    mllm__gpu *g;                  /* the device: &own (Metal) or the caller's (tests) */
    mllm__gpu own;
    mllm__gpu_buf **wbufs;         /* the model file in n_wbufs pieces (each <= the device's largest buffer) */
    size_t *wstart, *wlen;         /* piece i holds bytes wstart[i]..+wlen[i] of the file (ascending starts) */
    int n_wbufs;
    const uint8_t *wbase;
    mllm__gpu_buf *kpool, *vpool;  /* shared; laid out as mllm__kv */
    mllm__gpu_buf *act;            /* private: activations of n_batch tokens */
    mllm__gpu_buf *io;             /* shared: attention metadata at 0, then tokens, pos, logits rows */
    mllm__gpu_sampler smp;         /* one penalty state per sequence slot */
    mllm__gpu_span buf[MLLM__N_BUFS];   /* the graph's named buffers: in act, LOGITS in io */
    size_t part, moe;              /* offsets in act: attention partials (at 0), MoE scratch */
    size_t tok, pos, lidx;         /* offsets in io */
    /* the step being encoded */
    mllm__gpu_cmd *c;
    const mllm_model *m;
    const mllm__kv *kv;
    const mllm__batch *b;
    const mllm__sample_row *rows;  /* settings of the rows sampled here */
} mllm__gpu_fwd;

static mllm__gpu_span mllm__gpu_span_of(mllm__gpu_buf *b, size_t off) {
    mllm__gpu_span s;
    s.buf = b;
    s.off = off;
    return s;
}
static mllm__gpu_span mllm__gpu_wspan(const mllm__gpu_fwd *f, const void *p) {   /* a tensor of the mapping */
    const size_t off = (size_t)((const uint8_t *)p - f->wbase);
    int lo = 0, hi = f->n_wbufs - 1;
    while (lo < hi) {   /* the last piece starting at or before off holds the whole tensor (mllm__gpu_wsplit) */
        const int mid = (lo + hi + 1) / 2;
        if (f->wstart[mid] <= off) lo = mid; else hi = mid - 1;
    }
    return mllm__gpu_span_of(f->wbufs[lo], off - f->wstart[lo]);
}
static uint32_t mllm__gpu_tpt(uint32_t want, uint32_t max) {   /* want threads, as a multiple of 32 in [32, max] */
    want = (want + 31) / 32 * 32;
    return want < 32 ? 32 : want > max ? max : want;
}

/* Whether every tensor the GPU reads has a kernel: checked once, at context creation. */
static mllm_status mllm__gpu_check_model(const mllm_model *m) {
    const mllm__hparams *hp = &m->hp;
    const mllm__weight *ws[9];
    int l, i;
    if (hp->head_dim != 64 && hp->head_dim != 128)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu: head dimension %d (the attention kernels take 64 or 128)", hp->head_dim);
    if (m->arch_desc->act != MLLM__SILU || hp->emb_scale != 1.0f || hp->n_swa || m->rope_freqs)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu: %s needs %s, which the GPU kernels lack (the CPU backend runs it)", m->arch,
                          m->arch_desc->act != MLLM__SILU ? "GELU" : hp->emb_scale != 1.0f ? "scaled embeddings"
                          : hp->n_swa ? "sliding-window attention" : "RoPE frequency factors");
    if (hp->n_expert && (hp->n_expert > MLLM__MOE_MAX_EXPERT || hp->n_expert_used > MLLM__MOE_MAX_USED))
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu: %d experts, %d used (at most %d, %d)", hp->n_expert, hp->n_expert_used,
                          MLLM__MOE_MAX_EXPERT, MLLM__MOE_MAX_USED);
    for (l = -1; l < hp->n_layer; l++) {
        const mllm__layer *L = l >= 0 ? &m->layers[l] : NULL;
        int n = 0;
        if (!L) { ws[n++] = &m->tok_embd; ws[n++] = &m->output; }
        else {
            ws[n++] = &L->wq; ws[n++] = &L->wk; ws[n++] = &L->wv; ws[n++] = &L->wo;
            if (hp->n_expert) { ws[n++] = &L->gate_exps; ws[n++] = &L->up_exps; ws[n++] = &L->down_exps; }
            else { ws[n++] = &L->w_gate; ws[n++] = &L->w_up; ws[n++] = &L->w_down; }
        }
        for (i = 0; i < n; i++)
            if (!mllm__gpu_type_suffix(ws[i]->type)) {
                const mllm__type_traits *tr = mllm__traits(ws[i]->type);
                return mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu: no kernel for weight type %s (%s)", tr ? tr->name : "?",
                                  L ? "a layer's matrix" : i ? "output" : "token_embd");
            }
    }
    return MLLM_OK;
}

static void mllm__gpu_fwd_free(mllm__gpu_fwd *f) {
    mllm__gpu *g = f->g;
    mllm__gpu_buf *bufs[4];
    int i;
    if (!g) return;
    mllm__gpu_sampler_free(g, &f->smp);
    for (i = 0; i < f->n_wbufs; i++)
        if (f->wbufs[i]) g->vt->buf_free(f->wbufs[i]);
    MLLM_FREE(f->wbufs);
    MLLM_FREE(f->wstart);
    MLLM_FREE(f->wlen);
    bufs[0] = f->kpool; bufs[1] = f->vpool; bufs[2] = f->act; bufs[3] = f->io;
    for (i = 0; i < 4; i++)
        if (bufs[i]) g->vt->buf_free(bufs[i]);
    if (g == &f->own) mllm__gpu_close(&f->own);
    memset(f, 0, sizeof *f);
}

/* Splits the model file into the pieces the device can wrap (or copy): one when it fits a buffer, else
   page-aligned pieces of at most max_buffer bytes, each tensor inside one piece (pieces may share a page). */
typedef struct mllm__gpu_wrange { size_t off, end; } mllm__gpu_wrange;
static int mllm__gpu_wrange_cmp(const void *a, const void *b) {
    const size_t x = ((const mllm__gpu_wrange *)a)->off, y = ((const mllm__gpu_wrange *)b)->off;
    return x < y ? -1 : x > y;
}
static mllm_status mllm__gpu_wsplit(mllm__gpu_fwd *f, mllm__gpu *g, const mllm__gguf *gg, size_t page, size_t wbytes) {
    size_t maxlen = g->vt->max_buffer(g->dev), n = (size_t)gg->n_tensors, i, start, end;
    mllm__gpu_wrange *r;
    maxlen = maxlen ? maxlen / page * page : wbytes;
    f->wbufs = MLLM__CAST(mllm__gpu_buf **, mllm__calloc(n + 1, sizeof *f->wbufs));
    f->wstart = MLLM__CAST(size_t *, mllm__calloc(n + 1, sizeof *f->wstart));
    f->wlen = MLLM__CAST(size_t *, mllm__calloc(n + 1, sizeof *f->wlen));
    if (!f->wbufs || !f->wstart || !f->wlen) return mllm__fail(MLLM_ERR_NOMEM, "gpu: out of memory");
    if (wbytes <= maxlen || n == 0) {
        f->wlen[0] = wbytes;
        f->n_wbufs = 1;
        return MLLM_OK;
    }
    if (!(r = MLLM__CAST(mllm__gpu_wrange *, mllm__calloc(n, sizeof *r)))) return mllm__fail(MLLM_ERR_NOMEM, "gpu: out of memory");
    for (i = 0; i < n; i++) {
        r[i].off = (size_t)((const uint8_t *)gg->tensors[i].data - gg->base);
        r[i].end = r[i].off + gg->tensors[i].nbytes;
    }
    qsort(r, n, sizeof *r, mllm__gpu_wrange_cmp);
    start = r[0].off / page * page;
    end = r[0].end;
    for (i = 0; i <= n; i++) {
        const size_t e = i < n && r[i].end > end ? r[i].end : end;
        if (i < n && (e + page - 1) / page * page - start <= maxlen) { end = e; continue; }
        f->wstart[f->n_wbufs] = start;   /* close the piece before tensor i */
        f->wlen[f->n_wbufs++] = (end + page - 1) / page * page - start;
        if (i == n) break;
        start = r[i].off / page * page;
        end = r[i].end;
        if ((end + page - 1) / page * page - start > maxlen) {
            const double mib = (double)(end - r[i].off) / 1048576.0;
            MLLM_FREE(r);
            return mllm__fail(MLLM_ERR_UNSUPPORTED, "gpu: a tensor of %.1f MiB does not fit the device's largest buffer (%.1f MiB)",
                              mib, maxlen / 1048576.0);
        }
    }
    MLLM_FREE(r);
    return MLLM_OK;
}

/* Sets up the GPU side of a context on device g (f->g = g; a Metal device opened into f->own is
   closed by mllm__gpu_fwd_free).  kv has its shape; its k and v are pointed at the shared pools. */
static mllm_status mllm__gpu_fwd_init(mllm__gpu_fwd *f, mllm__gpu *g, const mllm_model *m, mllm__kv *kv, int n_batch,
                                      int n_seq, int max_blocks_per_seq) {
    const mllm__hparams *hp = &m->hp;
    const size_t NB = (size_t)n_batch, NS = (size_t)n_seq, E = (size_t)hp->n_embd, hd = (size_t)hp->head_dim;
    const size_t Dq = (size_t)hp->n_head * hd, Dkv = (size_t)hp->n_head_kv * hd;
    const size_t ff = (size_t)(hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp);
    const size_t kv_bytes = mllm__kv_index(kv, kv->n_layer, 0, 0, 0) * 2;
    size_t o = 0, page, wbytes, act[MLLM__N_BUFS];
    mllm_status st;
    int i;
    f->g = g;
    if ((st = mllm__gpu_check_model(m))) return st;
    /* weights: the page-aligned mapping as is (Metal's no-copy wrap wants whole pages); a model parsed
       from unaligned memory, or a wrap the device refuses, gets a copy */
#ifdef _WIN32
    page = 65536;
#else
    page = (size_t)sysconf(_SC_PAGESIZE);
    if (page < 4096) page = 4096;
#endif
    wbytes = (m->gguf.size + page - 1) / page * page;
    f->wbase = m->gguf.base;
    if ((st = mllm__gpu_wsplit(f, g, &m->gguf, page, wbytes))) return st;
    for (i = 0; i < f->n_wbufs; i++) {
        const size_t len = f->wlen[i];
        if (m->gguf.map_handle && (uintptr_t)m->gguf.base % page == 0)
            f->wbufs[i] = g->vt->buf_wrap(g->dev, (void *)(uintptr_t)(m->gguf.base + f->wstart[i]), len);
        if (!f->wbufs[i]) {
            void *dst;
            f->wbufs[i] = g->vt->buf_new(g->dev, len, MLLM__GPU_SHARED);
            if (!f->wbufs[i] || !(dst = g->vt->buf_contents(f->wbufs[i])))
                return mllm__fail(MLLM_ERR_NOMEM, "gpu: no buffer for %.1f MiB of weights", len / 1048576.0);
            memcpy(dst, m->gguf.base + f->wstart[i], f->wstart[i] + len <= m->gguf.size ? len : m->gguf.size - f->wstart[i]);
        }
    }
    /* KV pools: the CPU engine's layout, CPU-visible */
    f->kpool = g->vt->buf_new(g->dev, kv_bytes, MLLM__GPU_SHARED);
    f->vpool = g->vt->buf_new(g->dev, kv_bytes, MLLM__GPU_SHARED);
    if (!f->kpool || !f->vpool || !g->vt->buf_contents(f->kpool) || !g->vt->buf_contents(f->vpool))
        return mllm__fail(MLLM_ERR_NOMEM, "gpu: no buffers for the KV pools (2 x %.1f MiB)", kv_bytes / 1048576.0);
    kv->k = (uint16_t *)g->vt->buf_contents(f->kpool);
    kv->v = (uint16_t *)g->vt->buf_contents(f->vpool);
    /* activations, 256-byte aligned parts; the decode partials first (the attention encoder binds them
       at offset 0) */
#define MLLM__GPU_TAKE(field, bytes) ((field) = o, o += ((bytes) + 255) / 256 * 256)
    MLLM__GPU_TAKE(f->part, NS * (size_t)hp->n_head * ((size_t)(max_blocks_per_seq * kv->block_tokens) / MLLM__ATTN_CHUNK + 1) *
                                (hd + 2) * 4);
    MLLM__GPU_TAKE(act[MLLM__X], NB * E * 4);
    MLLM__GPU_TAKE(act[MLLM__XB], NB * E * 4);
    MLLM__GPU_TAKE(act[MLLM__Q], NB * Dq * 4);
    MLLM__GPU_TAKE(act[MLLM__K], NB * Dkv * 4);
    MLLM__GPU_TAKE(act[MLLM__V], NB * Dkv * 4);
    MLLM__GPU_TAKE(act[MLLM__ATT], NB * (Dq > E ? Dq : E) * 4);
    MLLM__GPU_TAKE(act[MLLM__HB], NB * ff * 4);
    MLLM__GPU_TAKE(act[MLLM__HB2], NB * ff * 4);
    MLLM__GPU_TAKE(f->moe, hp->n_expert ? mllm__gpu_moe_scratch_of(hp, n_batch).bytes : 0);
    f->act = g->vt->buf_new(g->dev, o, MLLM__GPU_PRIVATE);
    /* io: the largest attention metadata (mllm__gpu_attn_layout_of), the batch, the logits rows */
    o = ((NS * sizeof(mllm__attn_seq) + 15) / 16 * 16 + (NB * 4 + 15) / 16 * 16 + NS * (size_t)max_blocks_per_seq * 4 +
         255) / 256 * 256;   /* the attention metadata first: its encoder binds it at offset 0 */
    MLLM__GPU_TAKE(f->tok, NB * 4);
    MLLM__GPU_TAKE(f->pos, NB * 4);
    MLLM__GPU_TAKE(f->lidx, NS * 4);
    MLLM__GPU_TAKE(act[MLLM__LOGITS], (NS < NB ? NS : NB) * (size_t)hp->n_vocab * 4);
#undef MLLM__GPU_TAKE
    f->io = g->vt->buf_new(g->dev, o, MLLM__GPU_SHARED);
    if (!f->act || !f->io || !g->vt->buf_contents(f->io))
        return mllm__fail(MLLM_ERR_NOMEM, "gpu: no buffers for the activations of %d tokens", n_batch);
    for (i = 0; i < MLLM__N_BUFS; i++) f->buf[i] = mllm__gpu_span_of(i == MLLM__LOGITS ? f->io : f->act, act[i]);
    /* penalty windows up to the whole context (while 16-bit counts hold them) */
    return mllm__gpu_sampler_init(g, &f->smp, hp->n_vocab, n_seq, m->n_ctx < 65535 ? m->n_ctx : 65535);
}

/* out[i] = row ids[i] of W (K columns), for M ids in the io buffer at ids_off. */
static mllm_status mllm__gpu_get_rows(mllm__gpu_fwd *f, uint32_t type, mllm__gpu_span w, size_t row_bytes, int K, int N,
                                      size_t ids_off, int M, mllm__gpu_span out) {
    mllm__gpu *g = f->g;
    mllm__gpu_pipe *p = mllm__gpu_pipe_of(g, "get_rows", type);
    mllm__mat_args a;
    if (!p) return MLLM_ERR_BACKEND;
    a.K = (uint32_t)K; a.N = (uint32_t)N; a.M = (uint32_t)M; a.row_bytes = (uint32_t)row_bytes;
    g->vt->set_buffer(f->c, w.buf, w.off, 0);
    g->vt->set_buffer(f->c, f->io, ids_off, 1);
    g->vt->set_buffer(f->c, out.buf, out.off, 2);
    g->vt->set_bytes(f->c, &a, sizeof a, 3);
    mllm__gpu_dispatch(g, f->c, p, (uint32_t)M, 1, 1, mllm__gpu_tpt((uint32_t)K / 16, mllm__gpu_max_tpt(g, p, 256)), 1, 1);
    return MLLM_OK;
}

/* a + b or swiglu(a, b) into out, over n floats (out may alias a). */
static mllm_status mllm__gpu_vec(mllm__gpu_fwd *f, const char *kernel, mllm__gpu_span a_, mllm__gpu_span b_,
                                 mllm__gpu_span out, size_t n) {
    mllm__gpu *g = f->g;
    mllm__gpu_pipe *p = g->vt->pipeline(g->dev, kernel);
    mllm__vec_args a;
    if (!p) return MLLM_ERR_BACKEND;
    a.n = (uint32_t)n;
    g->vt->set_buffer(f->c, a_.buf, a_.off, 0);
    g->vt->set_buffer(f->c, b_.buf, b_.off, 1);
    g->vt->set_buffer(f->c, out.buf, out.off, 2);
    g->vt->set_bytes(f->c, &a, sizeof a, 3);
    mllm__gpu_dispatch(g, f->c, p, (uint32_t)((n + 3) / 4 + 255) / 256, 1, 1, 256, 1, 1);
    return MLLM_OK;
}

/* The ops of mllm__backend_ops; be is the mllm__gpu_fwd of the step being encoded. */
static mllm_status mllm__gpu_embed(void *be, int out) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    const mllm__weight *w = &f->m->tok_embd;
    return mllm__gpu_get_rows(f, w->type, mllm__gpu_wspan(f, w->data), w->row_bytes, (int)w->cols, (int)w->rows, f->tok,
                              f->b->n_tokens, f->buf[out]);
}

static mllm_status mllm__gpu_gather_rows(void *be, int in, int n, int out) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    return mllm__gpu_get_rows(f, MLLM__F32, f->buf[in], (size_t)n * 4, n, f->b->n_tokens, f->lidx, f->b->n_logits,
                              f->buf[out]);
}

static mllm_status mllm__gpu_rmsnorm(void *be, int in, const float *w, int rows, int n, int out) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    mllm__gpu *g = f->g;
    mllm__gpu_pipe *p = g->vt->pipeline(g->dev, "rms_norm_mul");
    const mllm__gpu_span ws = mllm__gpu_wspan(f, w);
    mllm__norm_args a;
    if (!p) return MLLM_ERR_BACKEND;
    a.n = (uint32_t)n;
    a.eps = f->m->hp.norm_eps;
    g->vt->set_buffer(f->c, f->buf[in].buf, f->buf[in].off, 0);
    g->vt->set_buffer(f->c, ws.buf, ws.off, 1);
    g->vt->set_buffer(f->c, f->buf[out].buf, f->buf[out].off, 2);
    g->vt->set_bytes(f->c, &a, sizeof a, 3);
    mllm__gpu_dispatch(g, f->c, p, (uint32_t)rows, 1, 1, mllm__gpu_tpt((uint32_t)n / 4, mllm__gpu_max_tpt(g, p, MLLM__REDUCE_MAX_THREADS)), 1, 1);
    return MLLM_OK;
}

/* Y[M][N] = X[M][K] W^T (+ Y: the _add kernels take a residual, bound here to the output itself). */
static mllm_status mllm__gpu_matmul(void *be, const mllm__weight *w, int in, int rows, int out, int add) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    mllm__gpu *g = f->g;
    const int mm = rows >= MLLM__GPU_GEMM_MIN_TOKENS;
    const uint32_t N = (uint32_t)w->rows, M = (uint32_t)rows;
    mllm__gpu_pipe *p = mllm__gpu_pipe_of(g, mm ? (add ? "gemm_add" : "gemm") : (add ? "gemv_add" : "gemv"), w->type);
    const mllm__gpu_span ws = mllm__gpu_wspan(f, w->data), y = f->buf[out];
    mllm__mat_args a;
    if (!p) return MLLM_ERR_BACKEND;
    a.K = (uint32_t)w->cols; a.N = N; a.M = M; a.row_bytes = (uint32_t)w->row_bytes;
    g->vt->set_buffer(f->c, ws.buf, ws.off, 0);
    g->vt->set_buffer(f->c, f->buf[in].buf, f->buf[in].off, 1);
    g->vt->set_buffer(f->c, y.buf, y.off, 2);
    g->vt->set_bytes(f->c, &a, sizeof a, 3);
    if (add) g->vt->set_buffer(f->c, y.buf, y.off, 4);
    if (mm) mllm__gpu_dispatch(g, f->c, p, (N + MLLM__GEMM_BN - 1) / MLLM__GEMM_BN, (M + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM,
                               1, MLLM__GEMM_THREADS, 1, 1);
    else mllm__gpu_dispatch(g, f->c, p, (N + MLLM__GEMV_NSG * MLLM__GEMV_ROWS - 1) / (MLLM__GEMV_NSG * MLLM__GEMV_ROWS), M,
                            1, 32 * MLLM__GEMV_NSG, 1, 1);
    return MLLM_OK;
}

static mllm_status mllm__gpu_add_bias(void *be, int x, const float *bias, int n) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    mllm__gpu *g = f->g;
    mllm__gpu_pipe *p = g->vt->pipeline(g->dev, "add_bias");
    const mllm__gpu_span bs = mllm__gpu_wspan(f, bias), xs = f->buf[x];
    mllm__bias_args a;
    if (!p) return MLLM_ERR_BACKEND;
    a.n = (uint32_t)f->b->n_tokens * (uint32_t)n;
    a.cols = (uint32_t)n;
    g->vt->set_buffer(f->c, xs.buf, xs.off, 0);
    g->vt->set_buffer(f->c, bs.buf, bs.off, 1);
    g->vt->set_buffer(f->c, xs.buf, xs.off, 2);
    g->vt->set_bytes(f->c, &a, sizeof a, 3);
    mllm__gpu_dispatch(g, f->c, p, (a.n + 255) / 256, 1, 1, 256, 1, 1);
    return MLLM_OK;
}

static mllm_status mllm__gpu_rope(void *be, int x, int n_heads, int layer) {   /* (no windowed layers: checked) */
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    (void)layer;
    mllm__gpu *g = f->g;
    const mllm__hparams *hp = &f->m->hp;
    mllm__gpu_pipe *p = g->vt->pipeline(g->dev, f->m->arch_desc->rope_neox ? "rope_neox" : "rope");
    mllm__rope_args a;
    if (!p) return MLLM_ERR_BACKEND;
    a.n_heads = (uint32_t)n_heads;
    a.head_dim = (uint32_t)hp->head_dim;
    a.n_rot = (uint32_t)hp->n_rot;
    a.stride = (uint32_t)(n_heads * hp->head_dim);
    a.freq_base = hp->rope_base;
    a.freq_scale = hp->rope_freq_scale;
    g->vt->set_buffer(f->c, f->buf[x].buf, f->buf[x].off, 0);
    g->vt->set_buffer(f->c, f->io, f->pos, 1);
    g->vt->set_bytes(f->c, &a, sizeof a, 2);
    mllm__gpu_dispatch(g, f->c, p, (uint32_t)n_heads, (uint32_t)f->b->n_tokens, 1, mllm__gpu_tpt((uint32_t)hp->n_rot / 2, mllm__gpu_max_tpt(g, p, 1024)),
                       1, 1);
    return MLLM_OK;
}

static mllm_status mllm__gpu_attention(void *be, int layer) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    mllm__gpu_attn_io io;
    memset(&io, 0, sizeof io);
    io.q = f->buf[MLLM__Q]; io.k = f->buf[MLLM__K]; io.v = f->buf[MLLM__V]; io.out = f->buf[MLLM__ATT];
    io.kpool = f->kpool; io.vpool = f->vpool; io.meta = f->io;
    io.part = f->act;   /* (f->part == 0) */
    return mllm__gpu_encode_attention(f->g, f->c, f->b, f->kv, f->m->hp.n_head, layer, &io);
}

static mllm_status mllm__gpu_moe(void *be, const mllm__layer *L, int in, int out) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    mllm__gpu_moe_io io;
    io.router = mllm__gpu_wspan(f, L->router);
    io.gate = mllm__gpu_wspan(f, L->gate_exps.data);
    io.up = mllm__gpu_wspan(f, L->up_exps.data);
    io.down = mllm__gpu_wspan(f, L->down_exps.data);
    io.x = f->buf[in];
    io.out = f->buf[out];
    io.scratch = mllm__gpu_span_of(f->act, f->moe);
    return mllm__gpu_encode_moe(f->g, f->c, &f->m->hp, L, &io, f->b->n_tokens, -1);
}

static mllm_status mllm__gpu_glu(void *be, int gate, int up, int n, int act) {   /* (SiLU only: checked) */
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    (void)act;
    return mllm__gpu_vec(f, "swiglu", f->buf[gate], f->buf[up], f->buf[gate], (size_t)f->b->n_tokens * (size_t)n);
}

static mllm_status mllm__gpu_add(void *be, int x, int y, int n) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    return mllm__gpu_vec(f, "add", f->buf[x], f->buf[y], f->buf[x], (size_t)f->b->n_tokens * (size_t)n);
}

/* One threadgroup per sampled row, whatever their number. */
static mllm_status mllm__gpu_sample(void *be) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    return mllm__gpu_encode_sample(f->g, f->c, &f->smp, f->buf[MLLM__LOGITS].buf, f->buf[MLLM__LOGITS].off, f->rows,
                                   f->b->n_sample);
}

static void mllm__gpu_sync(void *be) {
    mllm__gpu_fwd *f = (mllm__gpu_fwd *)be;
    mllm__gpu_barrier(f->g, f->c);
}

static const mllm__backend_ops mllm__gpu_backend = {
    mllm__gpu_embed, mllm__gpu_rmsnorm, mllm__gpu_matmul, mllm__gpu_add_bias, mllm__gpu_rope, mllm__gpu_attention,
    mllm__gpu_moe, mllm__gpu_glu, mllm__gpu_add, mllm__gpu_gather_rows, mllm__gpu_sample, mllm__gpu_sync};

/* One step on the GPU: uploads the batch's metadata, encodes the graph into one command buffer, commits,
   waits.  Logits rows [0, b->n_sample) are sampled on the GPU (settings rows[], the picks to picks: 4
   bytes each come back); rows [n_sample, b->n_logits) are copied to logits (row i at logits + i *
   n_vocab).  Every dispatch count depends on the architecture and on the batch's kind (decode / prefill
   attention), never on how many sequences or tokens it holds.  A failed encode still commits what it
   has and waits, so the command buffer is released and the device stays usable. */
static mllm_status mllm__gpu_forward(mllm__gpu_fwd *f, const mllm_model *m, const mllm__kv *kv, const mllm__batch *b,
                                     const mllm__sample_row *rows, mllm_token *picks, float *logits) {
    const size_t V = (size_t)m->hp.n_vocab;
    const int n_sample = b->n_sample;
    mllm__gpu *g = f->g;
    char *io = (char *)g->vt->buf_contents(f->io);
    const mllm__gpu_attn_layout L = mllm__gpu_attn_layout_of(b, kv->block_tokens, m->hp.n_head, m->hp.head_dim);
    mllm_status st, wst;
    mllm__gpu_attn_meta(b, kv->block_tokens, &L, io);
    memcpy(io + f->tok, b->tokens, (size_t)b->n_tokens * 4);
    memcpy(io + f->pos, b->pos, (size_t)b->n_tokens * 4);
    memcpy(io + f->lidx, b->logits_idx, (size_t)b->n_logits * 4);
    if (!(f->c = g->vt->begin(g->dev))) return mllm__fail(MLLM_ERR_BACKEND, "gpu: no command buffer");
    f->m = m;
    f->kv = kv;
    f->b = b;
    f->rows = rows;
    st = mllm__forward(&mllm__gpu_backend, f, m, b);
    mllm__gpu_commit(g, f->c);
    wst = mllm__gpu_wait(g, f->c);
    f->c = NULL;
    f->b = NULL;
    f->rows = NULL;
    if (st == MLLM_OK) st = wst;
    if (st == MLLM_OK && n_sample) st = mllm__gpu_read_samples(g, &f->smp, picks, n_sample);
    if (st == MLLM_OK && b->n_logits > n_sample)
        st = mllm__gpu_read(g, f->io, f->buf[MLLM__LOGITS].off + (size_t)n_sample * V * 4, logits + (size_t)n_sample * V,
                            (size_t)(b->n_logits - n_sample) * V * sizeof(float));
    return st;
}

#if MLLM__HAVE_METAL || defined(MLLM__FORCE_METAL_STUBS)
/* The kernels, defined at the end of this file (SECTION: Metal kernels): their MSL source per file of
   kernels/ (common.h first), and a precompiled .metallib when gen/ embedded one (NULL otherwise). */
typedef struct mllm__kernel_src {
    const char *name;              /* "kernels/gemv.metal" */
    const char *text;              /* the file's text (its #include "common.h" line commented out) */
    size_t len;
} mllm__kernel_src;
static const mllm__kernel_src *mllm__kernel_sources(int *n);
/* All files joined, each after a #line directive naming it (so compiler messages point at the file):
   the one source the Metal layer compiles.  MLLM_MALLOC'd, NUL-terminated; NULL when out of memory. */
static char *mllm__kernel_source_joined(size_t *len);
static const unsigned char *mllm__kernel_metallib(size_t *n);

/* Metal through the Objective-C runtime: every message is objc_msgSend cast to the exact C prototype
   of the method (the ABI requires the cast; tests/metal/check_sends.py checks each cast against Apple's
   metal-cpp signatures in ../shared/reference/metal-api). On Linux, MLLM__FORCE_METAL_STUBS compiles this
   against tests/emu/objc_stub: type-checked there, and run by the test suite on the fake Metal framework
   of tests/metal/ (its own objc_msgSend, MTL objects executing on the MSL emulator). Link with
   -framework Metal -framework Foundation -lobjc.
   Ownership follows Cocoa's rule: objects from alloc/new/copy/Create are ours (+1) and released here;
   every other returned object is autoreleased, so each call that gets one runs inside an autorelease
   pool of its own (nothing leaks into, or depends on, the caller's pools). */
#include <objc/runtime.h>
#include <objc/message.h>
#include <dispatch/dispatch.h>
typedef unsigned long mllm__nsuint;   /* NSUInteger on 64-bit Apple platforms */
typedef long mllm__nsint;             /* NSInteger */
#if defined(__arm64__) || defined(__aarch64__)
#ifdef __cplusplus
typedef bool mllm__objc_bool;         /* BOOL is bool on arm64... */
#else
typedef _Bool mllm__objc_bool;
#endif
#else
typedef signed char mllm__objc_bool;  /* ...and signed char on x86-64 */
#endif
typedef void *mllm__objc_block;       /* a block parameter (only NULL is passed) */
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
    MLLM__MTL_STATUS_COMPLETED = 4,       /* MTLCommandBufferStatusCompleted */
    MLLM__MTL_STATUS_ERROR = 5,           /* MTLCommandBufferStatusError */
    MLLM__MTL_FAMILY_APPLE7 = 1007,       /* MTLGPUFamilyApple7 (M1, A14): simdgroup_matrix */
    MLLM__NS_UTF8 = 4                     /* NSUTF8StringEncoding */
};
/* Every selector sent, with the metal-cpp class or protocol that declares it (the checker's key).
   Registered once per device (mllm__mtl_open), not at every send. */
#define MLLM__MTL_SELECTORS(X)                                                                       \
    X(alloc, "NS::Object", "+alloc")                                                                 \
    X(init, "NS::Object", "-init")                                                                   \
    X(retain, "NS::Referencing", "-retain")                                                          \
    X(release, "NS::Referencing", "-release")                                                        \
    X(initWithBytes, "NS::String", "-initWithBytes:length:encoding:")                                \
    X(UTF8String, "NS::String", "-UTF8String")                                                       \
    X(localizedDescription, "NS::Error", "-localizedDescription")                                    \
    X(newCommandQueue, "MTL::Device", "-newCommandQueue")                                            \
    X(supportsFamily, "MTL::Device", "-supportsFamily:")                                             \
    X(maxBufferLength, "MTL::Device", "-maxBufferLength")                                            \
    X(newBuffer, "MTL::Device", "-newBufferWithLength:options:")                                     \
    X(newBufferNoCopy, "MTL::Device", "-newBufferWithBytesNoCopy:length:options:deallocator:")       \
    X(newLibraryWithSource, "MTL::Device", "-newLibraryWithSource:options:error:")                   \
    X(newLibraryWithData, "MTL::Device", "-newLibraryWithData:error:")                               \
    X(newPipeline, "MTL::Device", "-newComputePipelineStateWithFunction:error:")                     \
    X(setFastMathEnabled, "MTL::CompileOptions", "-setFastMathEnabled:")                             \
    X(newFunctionWithName, "MTL::Library", "-newFunctionWithName:")                                  \
    X(maxTotalThreads, "MTL::ComputePipelineState", "-maxTotalThreadsPerThreadgroup")                \
    X(threadExecutionWidth, "MTL::ComputePipelineState", "-threadExecutionWidth")                    \
    X(contents, "MTL::Buffer", "-contents")                                                          \
    X(commandBuffer, "MTL::CommandQueue", "-commandBuffer")                                          \
    X(computeEncoder, "MTL::CommandBuffer", "-computeCommandEncoderWithDispatchType:")               \
    X(commit, "MTL::CommandBuffer", "-commit")                                                       \
    X(waitUntilCompleted, "MTL::CommandBuffer", "-waitUntilCompleted")                               \
    X(status, "MTL::CommandBuffer", "-status")                                                       \
    X(error, "MTL::CommandBuffer", "-error")                                                         \
    X(endEncoding, "MTL::CommandEncoder", "-endEncoding")                                            \
    X(setBuffer, "MTL::ComputeCommandEncoder", "-setBuffer:offset:atIndex:")                         \
    X(setBytes, "MTL::ComputeCommandEncoder", "-setBytes:length:atIndex:")                           \
    X(setTgMemory, "MTL::ComputeCommandEncoder", "-setThreadgroupMemoryLength:atIndex:")             \
    X(setPipeline, "MTL::ComputeCommandEncoder", "-setComputePipelineState:")                        \
    X(dispatch, "MTL::ComputeCommandEncoder", "-dispatchThreadgroups:threadsPerThreadgroup:")        \
    X(memoryBarrier, "MTL::ComputeCommandEncoder", "-memoryBarrierWithScope:")
#define MLLM__MTL_SEL_ENUM(name, cls, sel) MLLM__MTL_SEL_##name,
enum { MLLM__MTL_SELECTORS(MLLM__MTL_SEL_ENUM) MLLM__MTL_N_SEL };
#undef MLLM__MTL_SEL_ENUM
/* Typed message sends: MLLM__MSG(return type, argument types...)(receiver, MLLM__S(m, name), arguments...).
   objc_msgSend goes through void (*)(void), the generic function pointer type, so that neither its
   declared type nor gcc's check of calls through casts gets in the way. */
typedef void (*mllm__objc_fn)(void);
static mllm__objc_fn mllm__msgsend(void) { return (mllm__objc_fn)objc_msgSend; }
#define MLLM__MSG(R, ...) ((R (*)(id, SEL, __VA_ARGS__))mllm__msgsend())
#define MLLM__MSG0(R) ((R (*)(id, SEL))mllm__msgsend())
#define MLLM__S(m, name) ((m)->sel[MLLM__MTL_SEL_##name])

#define MLLM__MTL_MAX_PIPES 128
typedef struct mllm__mtl mllm__mtl;
struct mllm__gpu_pipe { char name[64]; id state; uint32_t max_threads; };
struct mllm__gpu_buf { mllm__mtl *m; id buf; int storage; };
struct mllm__gpu_cmd { mllm__mtl *m; id cb, enc; };   /* both retained by us: no pool spans begin..wait */
struct mllm__mtl {
    SEL sel[MLLM__MTL_N_SEL];
    id device, queue, lib;
    size_t max_buffer;
    mllm_status pipe_status;   /* why the last pipeline creation failed */
    int n_pipes;
    struct mllm__gpu_pipe pipes[MLLM__MTL_MAX_PIPES];
};


static void mllm__mtl_release(mllm__mtl *m, id o) { if (o) MLLM__MSG0(void)(o, MLLM__S(m, release)); }
static id mllm__mtl_string(mllm__mtl *m, const char *s, size_t len) {   /* owned NSString (nil on failure) */
    id str = MLLM__MSG0(id)((id)objc_getClass("NSString"), MLLM__S(m, alloc));
    return MLLM__MSG(id, const void *, mllm__nsuint, mllm__nsuint)(str, MLLM__S(m, initWithBytes), s, (mllm__nsuint)len,
                                                                   (mllm__nsuint)MLLM__NS_UTF8);
}
static const char *mllm__mtl_error_text(mllm__mtl *m, id err) {   /* NSError -> C string, valid until the pool pops */
    id d;
    const char *s;
    if (!err) return "unknown error";
    d = MLLM__MSG0(id)(err, MLLM__S(m, localizedDescription));
    s = d ? MLLM__MSG0(const char *)(d, MLLM__S(m, UTF8String)) : NULL;
    return s ? s : "unknown error";
}

static void mllm__mtl_destroy(void *dev) {
    mllm__mtl *m = (mllm__mtl *)dev;
    int i;
    if (!m) return;
    for (i = 0; i < m->n_pipes; i++) mllm__mtl_release(m, m->pipes[i].state);
    mllm__mtl_release(m, m->lib);
    mllm__mtl_release(m, m->queue);
    mllm__mtl_release(m, m->device);
    MLLM_FREE(m);
}
static mllm__gpu_buf *mllm__mtl_buf_make(mllm__mtl *m, id buf, int storage) {
    mllm__gpu_buf *b;
    if (!buf) return NULL;
    b = MLLM__CAST(mllm__gpu_buf *, mllm__calloc(1, sizeof *b));
    if (!b) { mllm__mtl_release(m, buf); return NULL; }
    b->m = m;
    b->buf = buf;
    b->storage = storage;
    return b;
}
static mllm__gpu_buf *mllm__mtl_buf_new(void *dev, size_t bytes, int storage) {
    mllm__mtl *m = (mllm__mtl *)dev;
    mllm__nsuint opt = storage == MLLM__GPU_PRIVATE ? MLLM__MTL_STORAGE_PRIVATE : MLLM__MTL_STORAGE_SHARED;
    id buf;
    if (bytes > m->max_buffer) return NULL;   /* Metal would return nil (and log); say nothing twice */
    buf = MLLM__MSG(id, mllm__nsuint, mllm__nsuint)(m->device, MLLM__S(m, newBuffer), (mllm__nsuint)(bytes ? bytes : 1), opt);
    return mllm__mtl_buf_make(m, buf, storage);
}
static mllm__gpu_buf *mllm__mtl_buf_wrap(void *dev, void *ptr, size_t bytes) {
    mllm__mtl *m = (mllm__mtl *)dev;
    id buf;
    if (bytes > m->max_buffer) return NULL;
    buf = MLLM__MSG(id, const void *, mllm__nsuint, mllm__nsuint, mllm__objc_block)(
        m->device, MLLM__S(m, newBufferNoCopy), ptr, (mllm__nsuint)bytes, (mllm__nsuint)MLLM__MTL_STORAGE_SHARED, NULL);
    return mllm__mtl_buf_make(m, buf, MLLM__GPU_SHARED);
}
static void *mllm__mtl_buf_contents(mllm__gpu_buf *b) {
    return b->storage == MLLM__GPU_PRIVATE ? NULL : MLLM__MSG0(void *)(b->buf, MLLM__S(b->m, contents));
}
static void mllm__mtl_buf_free(mllm__gpu_buf *b) {
    if (!b) return;
    mllm__mtl_release(b->m, b->buf);
    MLLM_FREE(b);
}
/* A pipeline (cached). The kernels assume 32-wide simdgroups: another width is refused here. */
static mllm__gpu_pipe *mllm__mtl_pipeline(void *dev, const char *kernel) {
    mllm__mtl *m = (mllm__mtl *)dev;
    id name, fn, state, err = NULL;
    mllm__nsuint width = 0, max_threads = 0;
    void *pool;
    int i;
    for (i = 0; i < m->n_pipes; i++)
        if (!strcmp(m->pipes[i].name, kernel)) return &m->pipes[i];
    if (m->n_pipes == MLLM__MTL_MAX_PIPES || strlen(kernel) >= sizeof m->pipes[0].name) {
        mllm__fail(MLLM_ERR_BACKEND, "metal: too many pipelines or name too long: %s", kernel);
        return NULL;
    }
    pool = objc_autoreleasePoolPush();   /* the NSError, if any */
    name = mllm__mtl_string(m, kernel, strlen(kernel));
    fn = name ? MLLM__MSG(id, id)(m->lib, MLLM__S(m, newFunctionWithName), name) : NULL;
    mllm__mtl_release(m, name);
    state = fn ? MLLM__MSG(id, id, id *)(m->device, MLLM__S(m, newPipeline), fn, &err) : NULL;
    mllm__mtl_release(m, fn);
    if (state) {
        width = MLLM__MSG0(mllm__nsuint)(state, MLLM__S(m, threadExecutionWidth));
        max_threads = MLLM__MSG0(mllm__nsuint)(state, MLLM__S(m, maxTotalThreads));
    }
    if (!fn) mllm__fail(MLLM_ERR_BACKEND, "metal: no kernel named %s", kernel);
    else if (!state) mllm__fail(MLLM_ERR_BACKEND, "metal: pipeline %s: %s", kernel, mllm__mtl_error_text(m, err));
    else if (width != 32 || max_threads < 32)
        mllm__fail(MLLM_ERR_UNSUPPORTED, "metal: pipeline %s runs %lu-wide simdgroups, at most %lu threads per threadgroup "
                   "(the kernels need 32 and at least 32)", kernel, (unsigned long)width, (unsigned long)max_threads);
    objc_autoreleasePoolPop(pool);
    m->pipe_status = !state ? MLLM_ERR_BACKEND : MLLM_ERR_UNSUPPORTED;
    if (!state || width != 32 || max_threads < 32) {
        mllm__mtl_release(m, state);
        return NULL;
    }
    snprintf(m->pipes[m->n_pipes].name, sizeof m->pipes[0].name, "%s", kernel);
    m->pipes[m->n_pipes].state = state;
    m->pipes[m->n_pipes].max_threads = max_threads > 1024 ? 1024 : (uint32_t)max_threads;
    return &m->pipes[m->n_pipes++];
}
static uint32_t mllm__mtl_max_threads(mllm__gpu_pipe *p) { return p->max_threads; }
static size_t mllm__mtl_max_buffer(void *dev) { return ((mllm__mtl *)dev)->max_buffer; }
static void mllm__mtl_cmd_free(mllm__gpu_cmd *c) {
    mllm__mtl_release(c->m, c->enc);
    mllm__mtl_release(c->m, c->cb);
    MLLM_FREE(c);
}
static mllm__gpu_cmd *mllm__mtl_begin(void *dev) {
    mllm__mtl *m = (mllm__mtl *)dev;
    mllm__gpu_cmd *c = MLLM__CAST(mllm__gpu_cmd *, mllm__calloc(1, sizeof *c));
    void *pool;
    id cb, enc = NULL;
    if (!c) return NULL;
    c->m = m;
    pool = objc_autoreleasePoolPush();   /* the command buffer and encoder are autoreleased: retain both */
    cb = MLLM__MSG0(id)(m->queue, MLLM__S(m, commandBuffer));
    if (cb) enc = MLLM__MSG(id, mllm__nsuint)(cb, MLLM__S(m, computeEncoder), (mllm__nsuint)MLLM__MTL_DISPATCH_CONCURRENT);
    if (cb) c->cb = MLLM__MSG0(id)(cb, MLLM__S(m, retain));
    if (enc) c->enc = MLLM__MSG0(id)(enc, MLLM__S(m, retain));
    objc_autoreleasePoolPop(pool);
    if (!c->cb || !c->enc) {   /* a nil command buffer or encoder would swallow every message: fail now */
        mllm__mtl_cmd_free(c);
        return NULL;
    }
    return c;
}
static void mllm__mtl_set_buffer(mllm__gpu_cmd *c, mllm__gpu_buf *b, size_t offset, int index) {
    MLLM__MSG(void, id, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__S(c->m, setBuffer), b->buf, (mllm__nsuint)offset,
                                                    (mllm__nsuint)index);
}
static void mllm__mtl_set_bytes(mllm__gpu_cmd *c, const void *data, size_t bytes, int index) {
    MLLM__MSG(void, const void *, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__S(c->m, setBytes), data, (mllm__nsuint)bytes,
                                                              (mllm__nsuint)index);
}
static void mllm__mtl_set_tg_memory(mllm__gpu_cmd *c, size_t bytes, int index) {
    MLLM__MSG(void, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__S(c->m, setTgMemory), (mllm__nsuint)bytes, (mllm__nsuint)index);
}
static void mllm__mtl_dispatch(mllm__gpu_cmd *c, mllm__gpu_pipe *p, const uint32_t tgs[3], const uint32_t tpt[3]) {
    mllm__mtl_size g, t;
    g.width = tgs[0]; g.height = tgs[1]; g.depth = tgs[2];
    t.width = tpt[0]; t.height = tpt[1]; t.depth = tpt[2];
    MLLM__MSG(void, id)(c->enc, MLLM__S(c->m, setPipeline), p->state);
    MLLM__MSG(void, mllm__mtl_size, mllm__mtl_size)(c->enc, MLLM__S(c->m, dispatch), g, t);
}
static void mllm__mtl_barrier(mllm__gpu_cmd *c) {
    MLLM__MSG(void, mllm__nsuint)(c->enc, MLLM__S(c->m, memoryBarrier), (mllm__nsuint)MLLM__MTL_BARRIER_BUFFERS);
}
static void mllm__mtl_commit(mllm__gpu_cmd *c) {
    MLLM__MSG0(void)(c->enc, MLLM__S(c->m, endEncoding));
    MLLM__MSG0(void)(c->cb, MLLM__S(c->m, commit));
}
static mllm_status mllm__mtl_wait(mllm__gpu_cmd *c) {
    mllm__mtl *m = c->m;
    mllm_status st = MLLM_OK;
    mllm__nsuint status;
    void *pool = objc_autoreleasePoolPush();   /* the error and its description */
    MLLM__MSG0(void)(c->cb, MLLM__S(m, waitUntilCompleted));
    status = MLLM__MSG0(mllm__nsuint)(c->cb, MLLM__S(m, status));
    if (status != MLLM__MTL_STATUS_COMPLETED)
        st = mllm__fail(MLLM_ERR_BACKEND, "metal: command buffer %s: %s", status == MLLM__MTL_STATUS_ERROR ? "failed" : "did not complete",
                        mllm__mtl_error_text(m, MLLM__MSG0(id)(c->cb, MLLM__S(m, error))));
    objc_autoreleasePoolPop(pool);
    mllm__mtl_cmd_free(c);
    return st;
}
static const mllm__gpu_vt mllm__mtl_vt = {
    "metal", mllm__mtl_destroy, mllm__mtl_buf_new, mllm__mtl_buf_wrap, mllm__mtl_buf_contents, mllm__mtl_buf_free,
    mllm__mtl_pipeline, mllm__mtl_begin, mllm__mtl_set_buffer, mllm__mtl_set_bytes, mllm__mtl_set_tg_memory,
    mllm__mtl_dispatch, mllm__mtl_barrier, mllm__mtl_commit, mllm__mtl_wait, mllm__mtl_max_threads, mllm__mtl_max_buffer};

/* The kernels as one library: the embedded .metallib when there is one, else the embedded source,
   compiled without fast math.  Why: fast math lets the compiler assume no NaN/Inf, and the sampler
   sanitises NaN/Inf logits by bit tests on as_type<uint> (kernels/sample.metal), which that
   assumption may fold away; the kernels call no math function whose precise form is slow enough
   to matter next to the weight reads. */
static mllm_status mllm__mtl_library(mllm__mtl *m, const unsigned char *metallib, size_t metallib_len) {
    id err = NULL, src, opts;
    mllm_status st = MLLM_OK;
    void *pool = objc_autoreleasePoolPush();   /* the NSError, if any */
    if (metallib && metallib_len) {
        dispatch_data_t data = dispatch_data_create(metallib, metallib_len, NULL, DISPATCH_DATA_DESTRUCTOR_DEFAULT);
        m->lib = data ? MLLM__MSG(id, dispatch_data_t, id *)(m->device, MLLM__S(m, newLibraryWithData), data, &err) : NULL;
        if (data) dispatch_release(data);
        if (!m->lib) st = mllm__fail(MLLM_ERR_BACKEND, "metal: loading the embedded metallib: %s", mllm__mtl_error_text(m, err));
    } else {   /* every kernel file, joined: one library */
        size_t len = 0;
        char *text = mllm__kernel_source_joined(&len);
        src = text ? mllm__mtl_string(m, text, len) : NULL;
        MLLM_FREE(text);
        opts = MLLM__MSG0(id)((id)objc_getClass("MTLCompileOptions"), MLLM__S(m, alloc));
        opts = opts ? MLLM__MSG0(id)(opts, MLLM__S(m, init)) : NULL;
        if (opts) MLLM__MSG(void, mllm__objc_bool)(opts, MLLM__S(m, setFastMathEnabled), (mllm__objc_bool)0);
        m->lib = src && opts ? MLLM__MSG(id, id, id, id *)(m->device, MLLM__S(m, newLibraryWithSource), src, opts, &err) : NULL;
        mllm__mtl_release(m, opts);
        mllm__mtl_release(m, src);
        if (!m->lib)
            st = mllm__fail(MLLM_ERR_BACKEND, "metal: compiling the kernels: %s", src ? mllm__mtl_error_text(m, err) : "out of memory");
    }
    objc_autoreleasePoolPop(pool);
    return st;
}

/* Opens the default GPU and makes the kernel library (metallib: the embedded one, if any; tests pass
   their own). */
static mllm_status mllm__mtl_open_with(mllm__gpu *g, const unsigned char *metallib, size_t metallib_len) {
    static const char *const names[] = {
#define MLLM__MTL_SEL_NAME(name, cls, sel) (sel) + 1,
        MLLM__MTL_SELECTORS(MLLM__MTL_SEL_NAME)
#undef MLLM__MTL_SEL_NAME
    };
    mllm__mtl *m = MLLM__CAST(mllm__mtl *, mllm__calloc(1, sizeof *m));
    mllm_status st;
    int i;
    if (!m) return mllm__fail(MLLM_ERR_NOMEM, "metal: out of memory");
    for (i = 0; i < MLLM__MTL_N_SEL; i++) m->sel[i] = sel_registerName(names[i]);
    m->device = MTLCreateSystemDefaultDevice();
    if (!m->device) { MLLM_FREE(m); return mllm__fail(MLLM_ERR_BACKEND, "metal: no GPU"); }
    if (!MLLM__MSG(mllm__objc_bool, mllm__nsint)(m->device, MLLM__S(m, supportsFamily), (mllm__nsint)MLLM__MTL_FAMILY_APPLE7)) {
        mllm__mtl_destroy(m);
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "metal: this GPU is not of family Apple7 or newer (Apple M1/A14 on), which the "
                          "kernels need for simdgroup_matrix; use the CPU backend");
    }
    m->max_buffer = (size_t)MLLM__MSG0(mllm__nsuint)(m->device, MLLM__S(m, maxBufferLength));
    if (!m->max_buffer) m->max_buffer = (size_t)-1;
    m->queue = MLLM__MSG0(id)(m->device, MLLM__S(m, newCommandQueue));
    if (!m->queue) { mllm__mtl_destroy(m); return mllm__fail(MLLM_ERR_BACKEND, "metal: no command queue"); }
    if ((st = mllm__mtl_library(m, metallib, metallib_len))) { mllm__mtl_destroy(m); return st; }
    if (!mllm__mtl_pipeline(m, "rms_norm_mul")) {   /* the device's simdgroup width and thread limits, now */
        st = m->pipe_status;
        mllm__mtl_destroy(m);
        return st;
    }
    g->vt = &mllm__mtl_vt;
    g->dev = m;
    memset(&g->n, 0, sizeof g->n);
    g->fault = MLLM_OK;
    return MLLM_OK;
}
static mllm_status mllm__mtl_open(mllm__gpu *g) {
    size_t n = 0;
    const unsigned char *lib = mllm__kernel_metallib(&n);
    return mllm__mtl_open_with(g, lib, n);
}
#endif /* MLLM__HAVE_METAL || MLLM__FORCE_METAL_STUBS */


/* ============================================================ SECTION: engine (paged KV, batched step, sampler) */

typedef struct mllm__seq {
    int used;                      /* slot holds a sequence */
    mllm_seq_id sid;
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
    mllm_token gpu_pick;           /* >= 0: this step's token, sampled on the GPU */
    int gpu_sampled;               /* the last token came from the GPU and is not fed yet (its logits
                                      stayed there) */
} mllm__seq;

/* MoE step scratch (see "mixture of experts" below) */
typedef struct mllm__moe_buf {
    float *logits;                 /* [T][n_expert] router logits */
    int32_t *sel;                  /* [T][K] selected experts, best first */
    float *w;                      /* [T][K] their routing weights */
    int32_t *seg;                  /* [n_expert + 1]: sorted rows of expert e are [seg[e], seg[e + 1]) */
    int32_t *pos;                  /* [T * K]: sorted position of row token * K + slot */
    int32_t *row;                  /* [T * K]: the row token * K + slot at each sorted position */
    int32_t *active;               /* experts with rows this step */
    int n_active;
    uint8_t *xq;                   /* [T * K] sorted activation rows in the matrices' vec_dot_type (F32
                                      in precise mode), xq_row bytes apart */
    size_t xq_row;
    float *h, *h2;                 /* [T * K][n_ff_exp]: gate and up outputs, sorted */
    float *y;                      /* [T * K][n_embd]: down outputs, sorted */
} mllm__moe_buf;

struct mllm_context {
    mllm_model *model;
    mllm_context_params p;
    mllm__exec ex;
    mllm__kv kv;
    mllm__seq *seqs;               /* n_seq_max slots */
    mllm_seq_id next_id;
    int max_blocks_per_seq;
    /* the CPU backend's step scratch (mllm__cpu_backend), sized for n_batch tokens */
    float *act[MLLM__N_BUFS];      /* the graph's named buffers; act[MLLM__LOGITS] is logits_tmp */
    float *res;                    /* [n_batch][n_embd]: a product before it is added to the residual */
    mllm__moe_buf moe;             /* MoE models only */
    const mllm__batch *batch;      /* the step in flight */
    float *logits;                 /* [n_seq_max][n_vocab]: last logits of each slot */
    float *logits_tmp;             /* [n_seq_max][n_vocab]: LM head output of one step */
    mllm_token *b_tokens;
    int32_t *b_pos, *b_logits_idx, *b_logits_seq;
    mllm__batch_seq *b_seqs;
    int32_t *b_seq_slot;           /* [n_seq_max]: slot of each batch sequence */
    mllm_step_token *results;
    float *sample_buf;             /* sampler scratch: n_vocab (value, index) pairs */
    mllm__gpu_fwd gpu;             /* gpu.g != NULL: steps run on the GPU (the CPU scratch above is not
                                      allocated, kv.k / kv.v point into GPU-shared pools) */
    mllm__sample_row *b_rows;      /* GPU only, [n_seq_max]: settings of the rows sampled on the GPU */
    mllm_token *b_picks;           /* GPU only, [n_seq_max]: their picks */
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

/* The sampling rule, followed by both mllm__sample (CPU) and kernels/sample.metal (GPU):
   1. Penalties over the last penalty_last_n tokens of the history (mllm__apply_penalties).
   2. temperature <= 0: the largest penalised logit, the lowest id among equals (NaN never wins; all
      -inf or NaN: token 0).
   3. x = logit * (1 / temperature), sanitised (mllm__sample_x): NaN -> -inf, +inf -> FLT_MAX, -0 -> +0.
      Rank order: larger x first, equal x by lower id.  Weight w = exp(max(x - xmax, -87)), 0 for
      x = -inf, so the best token has w = 1 (all -inf: token 0).
   4. Kept set: the shortest of these prefixes of rank order: top-k, the first k; top-p, the shortest
      prefix of the top-k prefix whose weight reaches top_p times the top-k prefix's weight; then only
      tokens with w >= min(min_p, 1) (min-p; also a prefix, as w grows with x).
   5. One draw u = mllm__rng_uniform(seed, counter): walk the kept tokens in id order and take the
      first whose running weight exceeds u * (kept weight); if rounding leaves none, the last kept
      token with w > 0.
   That is the distribution of the usual sort-and-cut sampler, but it needs no sort: the cuts are
   selections (quickselect here; radix select over the float bits on the GPU) and the draw a prefix
   sum in id order.  The sums differ in order and precision (double here, float there), so the two
   samplers can differ when u * weight or a top-p cut lands within rounding of a boundary. */
static float mllm__sample_x(float logit, float inv_t) {
    float x = logit * inv_t;
    uint32_t b;
    memcpy(&b, &x, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return -INFINITY;
    if (b == 0x7f800000u) return FLT_MAX;
    return b == 0x80000000u ? 0.0f : x;
}
static float mllm__sample_w(float x, float xmax) { return x == -INFINITY ? 0.0f : expf(fmaxf(x - xmax, -87.0f)); }

/* Rank order: higher value first; equal values by lower id, so the order is total and deterministic. */
static int mllm__cand_cmp(const void *a, const void *b) {
    const mllm__cand *x = (const mllm__cand *)a, *y = (const mllm__cand *)b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}
static void mllm__cand_swap(mllm__cand *c, int i, int j) { mllm__cand t = c[i]; c[i] = c[j]; c[j] = t; }

/* Partitions c[lo, hi) around a median-of-three pivot and returns its index p: c[lo, p) come before it
   in rank order, c(p, hi) after. */
static int mllm__cand_partition(mllm__cand *c, int lo, int hi) {
    int mid = lo + (hi - lo) / 2, i, p = lo;
    if (mllm__cand_cmp(&c[mid], &c[lo]) < 0) mllm__cand_swap(c, mid, lo);
    if (mllm__cand_cmp(&c[hi - 1], &c[lo]) < 0) mllm__cand_swap(c, hi - 1, lo);
    if (mllm__cand_cmp(&c[mid], &c[hi - 1]) < 0) mllm__cand_swap(c, mid, hi - 1);   /* median at hi - 1 */
    for (i = lo; i < hi - 1; i++)
        if (mllm__cand_cmp(&c[i], &c[hi - 1]) < 0) mllm__cand_swap(c, i, p++);
    mllm__cand_swap(c, p, hi - 1);
    return p;
}

/* Quickselect: afterwards c[0, k) are the first k of c[0, n) in rank order, c[k - 1] the last of them. */
static void mllm__cand_select_k(mllm__cand *c, int n, int k) {
    int lo = 0, hi = n;
    while (hi - lo > 1) {
        int p = mllm__cand_partition(c, lo, hi);
        if (p == k - 1) break;
        if (p < k - 1) lo = p + 1; else hi = p;
    }
}

/* Top-k: c[0, k) become the first k of c[0, n) in rank order, c[k - 1] the last of them.  The k-th
   of a prefix of m ~ sqrt(k n) candidates bounds the answer (k candidates are at least as good), so
   the full quickselect usually runs on a few thousand survivors instead of n. */
static void mllm__cand_top_k(mllm__cand *c, int n, int k) {
    int m = (int)sqrt((double)k * n), i, kept = 0;
    if (m < k) m = k;
    if (m < n) {
        mllm__cand bound;
        mllm__cand_select_k(c, m, k);
        bound = c[k - 1];
        for (i = 0; i < n; i++)
            if (mllm__cand_cmp(&c[i], &bound) <= 0) mllm__cand_swap(c, i, kept++);
        n = kept;
    }
    mllm__cand_select_k(c, n, k);
}

/* Top-p by quickselect on weight (w[id]): returns m, the length of the shortest prefix of rank order
   whose weight reaches target, with that prefix in c[0, m). */
static int mllm__cand_select_mass(mllm__cand *c, int n, const float *w, double target) {
    int lo = 0, hi = n;
    double acc = 0;   /* weight of c[0, lo), all in the prefix; acc < target */
    while (hi - lo > 1) {
        int p = mllm__cand_partition(c, lo, hi), i;
        double left = 0, wp = w[c[p].id];
        for (i = lo; i < p; i++) left += w[c[i].id];
        if (acc + left >= target) hi = p;
        else if (acc + left + wp >= target) return p + 1;
        else { acc += left + wp; lo = p + 1; }
    }
    return hi - lo == 1 ? lo + 1 : hi;   /* (lo == hi: rounding; keep up to there) */
}

/* Repetition (divide positive / multiply negative logits; the division as a multiplication by the
   reciprocal, which the GPU reproduces exactly), frequency and presence penalties over the last
   `window` tokens of the history.  Modifies logits in place. */
static void mllm__apply_penalties(float *logits, int n_vocab, const mllm_token *hist, int n_hist,
                                  const mllm_sampler_params *sp, mllm__cand *scratch) {
    int window = sp->penalty_last_n > 0 ? sp->penalty_last_n : 64, i, n = 0, start;
    int rep = sp->repeat_penalty > 0 && sp->repeat_penalty != 1.0f;
    float inv_rep = rep ? 1.0f / sp->repeat_penalty : 1.0f;
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
        int tok = scratch[i].id, cnt = 0;
        float *l = &logits[tok];
        while (i < n && scratch[i].id == tok) { cnt++; i++; }
        if (rep) *l = *l > 0 ? *l * inv_rep : *l * sp->repeat_penalty;
        *l -= fmaf(sp->frequency_penalty, (float)cnt, sp->presence_penalty);   /* fma: as the GPU */
    }
}

/* Picks the next token by the sampling rule above; c is scratch for n_vocab candidates, and logits
   is scratch too: it ends up holding the kept tokens' weights (0 for the others). */
static mllm_token mllm__sample(float *logits, int n_vocab, const mllm_token *hist, int n_hist,
                               const mllm_sampler_params *sp, uint64_t counter, mllm__cand *c) {
    int i, n = n_vocab, m, best = 0;
    float inv_t, xmax, x;
    double sum = 0, cum = 0, target;
    mllm__apply_penalties(logits, n_vocab, hist, n_hist, sp, c);
    if (!(sp->temperature > 0)) {
        xmax = mllm__sample_x(logits[0], 1.0f);
        for (i = 1; i < n_vocab; i++)
            if ((x = mllm__sample_x(logits[i], 1.0f)) > xmax) { xmax = x; best = i; }
        return best;
    }
    inv_t = 1.0f / sp->temperature;
    for (i = 0; i < n; i++) {
        c[i].v = mllm__sample_x(logits[i], inv_t);
        c[i].id = i;
        if (c[i].v > c[best].v) best = i;
    }
    xmax = c[best].v;
    if (xmax == -INFINITY) return 0;
    /* the kept set is c[0, m) (a prefix of rank order, in no order), its weights go to logits[id] */
    m = n;
    if (sp->top_k > 0 && sp->top_k < n) mllm__cand_top_k(c, n, m = sp->top_k);
    memset(logits, 0, sizeof(float) * (size_t)n);
    for (i = 0; i < m; i++) sum += logits[c[i].id] = mllm__sample_w(c[i].v, xmax);
    if (sp->top_p > 0 && sp->top_p < 1) {
        int mp = mllm__cand_select_mass(c, m, logits, sp->top_p * sum);
        for (i = mp; i < m; i++) logits[c[i].id] = 0;
        m = mp;
    }
    if (sp->min_p > 0) {
        float min_p = sp->min_p < 1 ? sp->min_p : 1;
        for (i = 0; i < m; i++)
            if (logits[c[i].id] < min_p) logits[c[i].id] = 0;
    }
    /* the draw, in id order */
    for (sum = 0, i = 0; i < n_vocab; i++) sum += logits[i];
    target = (double)mllm__rng_uniform(sp->seed, counter) * sum;
    for (best = -1, i = 0; i < n_vocab; i++) {
        if (logits[i] == 0) continue;
        cum += logits[i];
        if (target < cum) return i;
        best = i;
    }
    return best;
}

/* ---- forward pass ---- */

/* gate[t] = act(gate[t]) * up[t] for each of `rows` rows, spread over the pool. */
typedef struct mllm__glu_job { float *gate; const float *up; int n, act; } mllm__glu_job;

/* GELU in its tanh form (as GGUF GeGLU models use it), computed in float; llama.cpp's CPU backend reads
   it from a table at F16-rounded inputs, a difference of about 1e-3 relative. */
static void mllm__geglu(float *out, const float *gate, const float *up, int n) {
    int i;
    for (i = 0; i < n; i++) {
        float x = gate[i];
        out[i] = 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x))) * up[i];
    }
}

static void mllm__glu_task(void *arg, int task, int thread) {
    const mllm__glu_job *j = (const mllm__glu_job *)arg;
    float *g = j->gate + (size_t)task * j->n;
    (void)thread;
    if (j->act == MLLM__GELU) mllm__geglu(g, g, j->up + (size_t)task * j->n, j->n);
    else mllm__swiglu(g, g, j->up + (size_t)task * j->n, j->n);
}

static void mllm__glu_rows(mllm__exec *ex, float *gate, const float *up, int rows, int n, int act) {
    mllm__glu_job j;
    j.gate = gate;
    j.up = up;
    j.n = n;
    j.act = act;
    mllm__pool_run(ex->pool, mllm__glu_task, &j, rows);
}


/* ---- mixture of experts ----
   Each token goes to its top-k experts; the (token, slot) rows are then sorted by expert (counting sort)
   so that every selected expert's weights are read once per step for all of its rows.  A layer is a
   fixed chain of parallel loops whatever the number of experts, active or not: router matmul, gather
   (and quantize) the sorted inputs, gate and up of all experts, swiglu (and quantize), down of all
   experts, weighted combine.  The combine adds a token's slots in a fixed order, so its result does not
   depend on the rest of the batch.  kernels/moe.metal follows the same plan on the GPU. */

static void mllm__moe_buf_free(mllm__moe_buf *b) {
    MLLM_FREE(b->logits); MLLM_FREE(b->sel); MLLM_FREE(b->w); MLLM_FREE(b->seg); MLLM_FREE(b->pos);
    MLLM_FREE(b->row); MLLM_FREE(b->active); MLLM_FREE(b->xq); MLLM_FREE(b->h); MLLM_FREE(b->h2); MLLM_FREE(b->y);
    memset(b, 0, sizeof *b);
}

/* Scratch for steps of up to n_tok tokens. */
static mllm_status mllm__moe_buf_alloc(mllm__moe_buf *b, const mllm__hparams *hp, int n_tok) {
    const size_t T = (size_t)n_tok, TK = T * (size_t)hp->n_expert_used, NE = (size_t)hp->n_expert;
    const size_t widest = (size_t)(hp->n_embd > hp->n_ff_exp ? hp->n_embd : hp->n_ff_exp);
    memset(b, 0, sizeof *b);
    b->xq_row = widest * sizeof(float);   /* F32 is the widest activation type */
    b->logits = MLLM__CAST(float *, mllm__calloc(T * NE, sizeof(float)));
    b->sel = MLLM__CAST(int32_t *, mllm__calloc(TK, sizeof(int32_t)));
    b->w = MLLM__CAST(float *, mllm__calloc(TK, sizeof(float)));
    b->seg = MLLM__CAST(int32_t *, mllm__calloc(NE + 1, sizeof(int32_t)));
    b->pos = MLLM__CAST(int32_t *, mllm__calloc(TK, sizeof(int32_t)));
    b->row = MLLM__CAST(int32_t *, mllm__calloc(TK, sizeof(int32_t)));
    b->active = MLLM__CAST(int32_t *, mllm__calloc(NE, sizeof(int32_t)));
    b->xq = MLLM__CAST(uint8_t *, mllm__calloc(TK, b->xq_row));
    b->h = MLLM__CAST(float *, mllm__calloc(TK * (size_t)hp->n_ff_exp, sizeof(float)));
    b->h2 = MLLM__CAST(float *, mllm__calloc(TK * (size_t)hp->n_ff_exp, sizeof(float)));
    b->y = MLLM__CAST(float *, mllm__calloc(TK * (size_t)hp->n_embd, sizeof(float)));
    if (!b->logits || !b->sel || !b->w || !b->seg || !b->pos || !b->row || !b->active || !b->xq || !b->h || !b->h2 || !b->y) {
        mllm__moe_buf_free(b);
        return mllm__fail(MLLM_ERR_NOMEM, "out of memory for the MoE scratch (%zu routed rows)", TK);
    }
    return MLLM_OK;
}

/* Top-k of each token's router logits (lower id wins ties), softmax over the selected k (the same as
   softmax over all then renormalising), then the counting sort of rows by expert. */
static void mllm__moe_route(mllm__moe_buf *b, int T, int NE, int K) {
    int t, e, k, i, r;
    for (t = 0; t < T; t++) {
        const float *lg = b->logits + (size_t)t * NE;
        int32_t *sel = b->sel + (size_t)t * K;
        float *w = b->w + (size_t)t * K;
        double sum = 0;
        for (k = 0; k < K; k++) {
            int best = -1;
            for (e = 0; e < NE; e++) {
                int taken = 0;
                for (i = 0; i < k; i++) taken |= sel[i] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            sel[k] = best;
        }
        for (k = 0; k < K; k++) { w[k] = expf(lg[sel[k]] - lg[sel[0]]); sum += w[k]; }
        for (k = 0; k < K; k++) w[k] = (float)(w[k] / sum);
    }
    memset(b->seg, 0, sizeof(int32_t) * (size_t)(NE + 1));
    for (r = 0; r < T * K; r++) b->seg[b->sel[r] + 1]++;
    b->n_active = 0;
    for (e = 0; e < NE; e++) {
        if (b->seg[e + 1]) b->active[b->n_active++] = e;
        b->seg[e + 1] += b->seg[e];
    }
    for (r = 0; r < T * K; r++) {   /* rows of one expert in row order; seg[e] advances to its end */
        int p = b->seg[b->sel[r]]++;
        b->pos[r] = p;
        b->row[p] = r;
    }
    for (e = NE; e > 0; e--) b->seg[e] = b->seg[e - 1];   /* back to seg[e] = first row of e */
    b->seg[0] = 0;
}

typedef struct mllm__moe_job {
    const mllm__exec *ex;
    const mllm__moe_buf *b;
    const float *src;              /* gather: x [T][n_embd]; act: h */
    uint32_t xt;                   /* activation type written into b->xq */
    int64_t n;                     /* floats per gathered row */
    const mllm__weight *mat[2];    /* grouped matmul: up to two matrices of every active expert */
    float *out[2];
    int n_mat, chunk, n_chunks;    /* chunk: weight rows per task */
    float *dst;                    /* combine: out [T][n_embd] */
} mllm__moe_job;

/* Row p of b->xq from a float row: quantized to the matrices' activation type (copied in precise mode). */
static void mllm__moe_put_row(const mllm__moe_job *j, int p, const float *row) {
    uint8_t *dst = j->b->xq + (size_t)p * j->b->xq_row;
    if (j->xt == MLLM__F32) memcpy(dst, row, sizeof(float) * (size_t)j->n);
    else mllm__quant_row(j->xt, row, dst, j->n);
}

static void mllm__moe_gather_task(void *arg, int p, int thread) {
    const mllm__moe_job *j = (const mllm__moe_job *)arg;
    (void)thread;
    mllm__moe_put_row(j, p, j->src + (size_t)(j->b->row[p] / j->ex->model->hp.n_expert_used) * j->n);
}

static void mllm__moe_act_task(void *arg, int p, int thread) {
    const mllm__moe_job *j = (const mllm__moe_job *)arg;
    float *h = j->b->h + (size_t)p * j->n;
    (void)thread;
    mllm__swiglu(h, h, j->b->h2 + (size_t)p * j->n, (int)j->n);
    mllm__moe_put_row(j, p, h);
}

/* Task = (active expert, matrix, chunk of its rows) over all of that expert's sorted rows. */
static void mllm__moe_mat_task(void *arg, int task, int thread) {
    const mllm__moe_job *j = (const mllm__moe_job *)arg;
    const mllm__moe_buf *b = j->b;
    const int c = task % j->n_chunks, m = task / j->n_chunks % j->n_mat, e = b->active[task / j->n_chunks / j->n_mat];
    const mllm__weight *w = j->mat[m];
    const int64_t r0 = (int64_t)c * j->chunk, r1 = r0 + j->chunk < w->rows ? r0 + j->chunk : w->rows;
    const int first = b->seg[e];
    float *row_buf = j->xt == MLLM__F32 && w->type != MLLM__F32 ? j->ex->row_buf + (size_t)thread * j->ex->row_buf_floats : NULL;
    mllm__matmul_rows(w, (const uint8_t *)w->data + (size_t)e * w->row_bytes * (size_t)w->rows,
                      b->xq + (size_t)first * b->xq_row, b->xq_row, b->seg[e + 1] - first,
                      j->out[m] + (size_t)first * w->rows, r0, r1, row_buf);
}

static void mllm__moe_combine_task(void *arg, int t, int thread) {
    const mllm__moe_job *j = (const mllm__moe_job *)arg;
    const mllm__moe_buf *b = j->b;
    const int K = j->ex->model->hp.n_expert_used;
    float *o = j->dst + (size_t)t * j->n;
    int k, d;
    (void)thread;
    memset(o, 0, sizeof(float) * (size_t)j->n);
    for (k = 0; k < K; k++) {
        const float w = b->w[t * K + k], *y = b->y + (size_t)b->pos[t * K + k] * j->n;
        for (d = 0; d < j->n; d++) o[d] += w * y[d];
    }
}

/* Activation type of a matrix's products: F32 in precise mode (weight rows dequantized instead). */
static uint32_t mllm__moe_xtype(const mllm__exec *ex, const mllm__weight *w) {
    return ex->model->precise ? (uint32_t)MLLM__F32 : (uint32_t)mllm__traits(w->type)->vec_dot_type;
}

/* Writes the n-float rows of src (indexed by token, or by sorted row for the activations) into xq as
   the activation type of w, then runs w (and w2, which must take the same type) for all active experts. */
static void mllm__moe_grouped(mllm__moe_job *j, mllm__task_fn fill, int n_rows, const mllm__weight *w, float *out,
                              const mllm__weight *w2, float *out2) {
    mllm__pool *pool = j->ex->pool;
    j->xt = mllm__moe_xtype(j->ex, w);
    mllm__pool_run(pool, fill, j, n_rows);
    j->mat[0] = w;
    j->out[0] = out;
    j->mat[1] = w2;
    j->out[1] = out2;
    j->n_mat = w2 ? 2 : 1;
    j->chunk = mllm__rows_per_task(w->rows * j->n_mat * j->b->n_active, pool->n_threads);
    if (j->chunk > w->rows) j->chunk = (int)w->rows;
    j->n_chunks = (int)((w->rows + j->chunk - 1) / j->chunk);
    mllm__pool_run(pool, mllm__moe_mat_task, j, j->b->n_active * j->n_mat * j->n_chunks);
}

/* Router logits, expert choice and weights, rows sorted by expert: fills b for the T tokens of x. */
static void mllm__moe_router(mllm__exec *ex, mllm__moe_buf *b, const mllm__layer *L, const float *x, int T) {
    const mllm__hparams *hp = &ex->model->hp;
    mllm__weight router;
    memset(&router, 0, sizeof router);
    router.data = L->router;
    router.type = MLLM__F32;
    router.cols = hp->n_embd;
    router.rows = hp->n_expert;
    router.n_mat = 1;
    router.row_bytes = (size_t)hp->n_embd * sizeof(float);
    mllm__cpu_matmul(ex, &router, 0, x, T, b->logits);
    mllm__moe_route(b, T, hp->n_expert, hp->n_expert_used);
}

static void mllm__moe(mllm__exec *ex, mllm__moe_buf *b, const mllm__layer *L, const float *x, int T, float *out) {
    const mllm__hparams *hp = &ex->model->hp;
    const int E = hp->n_embd, K = hp->n_expert_used, F = hp->n_ff_exp;
    mllm__moe_job j;
    mllm__moe_router(ex, b, L, x, T);
    memset(&j, 0, sizeof j);
    j.ex = ex;
    j.b = b;
    j.src = x;
    j.n = E;
    if (mllm__moe_xtype(ex, &L->gate_exps) == mllm__moe_xtype(ex, &L->up_exps)) {
        mllm__moe_grouped(&j, mllm__moe_gather_task, T * K, &L->gate_exps, b->h, &L->up_exps, b->h2);
    } else {
        mllm__moe_grouped(&j, mllm__moe_gather_task, T * K, &L->gate_exps, b->h, NULL, NULL);
        mllm__moe_grouped(&j, mllm__moe_gather_task, T * K, &L->up_exps, b->h2, NULL, NULL);
    }
    j.n = F;
    mllm__moe_grouped(&j, mllm__moe_act_task, T * K, &L->down_exps, b->y, NULL, NULL);
    j.n = E;
    j.dst = out;
    mllm__pool_run(ex->pool, mllm__moe_combine_task, &j, T);
}

/* The CPU backend's ops of mllm__backend_ops; be is the mllm_context. */
static mllm_status mllm__cpu_embed_op(void *be, int out) {
    mllm_context *ctx = (mllm_context *)be;
    mllm__cpu_embed(&ctx->ex, ctx->batch->tokens, ctx->batch->n_tokens, ctx->act[out]);
    return MLLM_OK;
}

static mllm_status mllm__cpu_rmsnorm(void *be, int in, const float *w, int rows, int n, int out) {
    mllm_context *ctx = (mllm_context *)be;
    mllm__cpu_rmsnorm_rows(&ctx->ex, ctx->act[out], ctx->act[in], w, rows, n, ctx->model->hp.norm_eps);
    return MLLM_OK;
}

static void mllm__add(float *x, const float *y, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) x[i] += y[i];
}

/* A product added to out goes through the scratch res: no kernel here fuses the addition. */
static mllm_status mllm__cpu_matmul_op(void *be, const mllm__weight *w, int in, int rows, int out, int add) {
    mllm_context *ctx = (mllm_context *)be;
    MLLM_ASSERT(!add || w->rows <= ctx->model->hp.n_embd);   /* res's rows */
    mllm__cpu_matmul(&ctx->ex, w, 0, ctx->act[in], rows, add ? ctx->res : ctx->act[out]);
    if (add) mllm__add(ctx->act[out], ctx->res, (size_t)rows * (size_t)w->rows);
    return MLLM_OK;
}

static mllm_status mllm__cpu_add_bias(void *be, int x, const float *bias, int n) {
    mllm_context *ctx = (mllm_context *)be;
    float *p = ctx->act[x];
    int r, i;
    for (r = 0; r < ctx->batch->n_tokens; r++)
        for (i = 0; i < n; i++) p[(size_t)r * n + i] += bias[i];
    return MLLM_OK;
}

/* With the cos/sin table of the step's positions (mllm__cpu_step). */
static mllm_status mllm__cpu_rope(void *be, int x, int n_heads, int layer) {
    mllm_context *ctx = (mllm_context *)be;
    const mllm__hparams *hp = &ctx->model->hp;
    const size_t stride = (size_t)n_heads * hp->head_dim;
    const float *cs = ctx->ex.rope_cs + (ctx->model->layers[layer].swa ? (size_t)ctx->p.n_batch * hp->n_rot : 0);
    int t;
    for (t = 0; t < ctx->batch->n_tokens; t++)
        mllm__rope_apply(ctx->act[x] + (size_t)t * stride, n_heads, hp->head_dim, hp->n_rot, cs + (size_t)t * hp->n_rot,
                         ctx->model->arch_desc->rope_neox);
    return MLLM_OK;
}

static mllm_status mllm__cpu_attention_op(void *be, int layer) {
    mllm_context *ctx = (mllm_context *)be;
    mllm__cpu_attention(&ctx->ex, ctx->batch, layer, ctx->act[MLLM__Q], ctx->act[MLLM__K], ctx->act[MLLM__V],
                        ctx->act[MLLM__ATT]);
    return MLLM_OK;
}

static mllm_status mllm__cpu_moe(void *be, const mllm__layer *L, int in, int out) {
    mllm_context *ctx = (mllm_context *)be;
    mllm__moe(&ctx->ex, &ctx->moe, L, ctx->act[in], ctx->batch->n_tokens, ctx->act[out]);
    return MLLM_OK;
}

static mllm_status mllm__cpu_glu(void *be, int gate, int up, int n, int act) {
    mllm_context *ctx = (mllm_context *)be;
    mllm__glu_rows(&ctx->ex, ctx->act[gate], ctx->act[up], ctx->batch->n_tokens, n, act);
    return MLLM_OK;
}

static mllm_status mllm__cpu_add(void *be, int x, int y, int n) {
    mllm_context *ctx = (mllm_context *)be;
    mllm__add(ctx->act[x], ctx->act[y], (size_t)ctx->batch->n_tokens * (size_t)n);
    return MLLM_OK;
}

static mllm_status mllm__cpu_gather_rows(void *be, int in, int n, int out) {
    mllm_context *ctx = (mllm_context *)be;
    int i;
    for (i = 0; i < ctx->batch->n_logits; i++)
        memcpy(ctx->act[out] + (size_t)i * n, ctx->act[in] + (size_t)ctx->batch->logits_idx[i] * n, sizeof(float) * (size_t)n);
    return MLLM_OK;
}

/* The CPU samples after the step, in mllm_step (n_sample is 0). */
static mllm_status mllm__cpu_sample(void *be) {
    (void)be;
    return MLLM_OK;
}

static void mllm__cpu_sync(void *be) { (void)be; }

static const mllm__backend_ops mllm__cpu_backend = {
    mllm__cpu_embed_op, mllm__cpu_rmsnorm, mllm__cpu_matmul_op, mllm__cpu_add_bias, mllm__cpu_rope,
    mllm__cpu_attention_op, mllm__cpu_moe, mllm__cpu_glu, mllm__cpu_add, mllm__cpu_gather_rows, mllm__cpu_sample,
    mllm__cpu_sync};

/* x += W in; where the architecture normalizes a block's output first (post_norm), x += rmsnorm(W in). */
static mllm_status mllm__residual(const mllm__backend_ops *ops, void *be, const mllm__weight *w, int in, int T, int E,
                                  const float *post_norm) {
    mllm_status st;
    if (!post_norm) return ops->matmul(be, w, in, T, MLLM__X, 1);
    if ((st = ops->matmul(be, w, in, T, MLLM__XB, 0))) return st;
    ops->sync(be);
    if ((st = ops->rmsnorm(be, MLLM__XB, post_norm, T, E, MLLM__XB))) return st;
    ops->sync(be);
    return ops->add(be, MLLM__X, MLLM__XB, E);
}

/* The model graph: one forward pass over a batch of tokens from many sequences, on any backend.  Ends
   with the LM head's rows (only the tokens that sample: the last of each finished prompt chunk, decode
   tokens) in LOGITS, and those the backend samples sampled. */
static mllm_status mllm__forward(const mllm__backend_ops *ops, void *be, const mllm_model *m, const mllm__batch *b) {
    const mllm__hparams *hp = &m->hp;
    const int T = b->n_tokens, E = hp->n_embd, hd = hp->head_dim;
    const int Dq = hp->n_head * hd, Dkv = hp->n_head_kv * hd;
    mllm_status st;
    int l;
#define MLLM__DO(op) do { if ((st = (op)) != MLLM_OK) return st; } while (0)
    MLLM__DO(ops->embed(be, MLLM__X));
    ops->sync(be);
    for (l = 0; l < hp->n_layer; l++) {
        const mllm__layer *L = &m->layers[l];
        /* attention */
        MLLM__DO(ops->rmsnorm(be, MLLM__X, L->attn_norm, T, E, MLLM__XB));
        ops->sync(be);
        MLLM__DO(ops->matmul(be, &L->wq, MLLM__XB, T, MLLM__Q, 0));
        MLLM__DO(ops->matmul(be, &L->wk, MLLM__XB, T, MLLM__K, 0));
        MLLM__DO(ops->matmul(be, &L->wv, MLLM__XB, T, MLLM__V, 0));
        ops->sync(be);
        if (L->bq) MLLM__DO(ops->add_bias(be, MLLM__Q, L->bq, Dq));
        if (L->bk) MLLM__DO(ops->add_bias(be, MLLM__K, L->bk, Dkv));
        if (L->bv) MLLM__DO(ops->add_bias(be, MLLM__V, L->bv, Dkv));
        if (L->bq || L->bk || L->bv) ops->sync(be);
        if (L->q_norm) MLLM__DO(ops->rmsnorm(be, MLLM__Q, L->q_norm, T * hp->n_head, hd, MLLM__Q));
        if (L->k_norm) MLLM__DO(ops->rmsnorm(be, MLLM__K, L->k_norm, T * hp->n_head_kv, hd, MLLM__K));
        if (L->q_norm || L->k_norm) ops->sync(be);
        MLLM__DO(ops->rope(be, MLLM__Q, hp->n_head, l));
        MLLM__DO(ops->rope(be, MLLM__K, hp->n_head_kv, l));
        ops->sync(be);
        MLLM__DO(ops->attention(be, l));
        ops->sync(be);
        MLLM__DO(mllm__residual(ops, be, &L->wo, MLLM__ATT, T, E, L->attn_post_norm));   /* x += wo att */
        ops->sync(be);
        /* feed-forward */
        MLLM__DO(ops->rmsnorm(be, MLLM__X, L->ffn_norm, T, E, MLLM__XB));
        ops->sync(be);
        if (hp->n_expert) {
            MLLM__DO(ops->moe(be, L, MLLM__XB, MLLM__ATT));
            ops->sync(be);
            MLLM__DO(ops->add(be, MLLM__X, MLLM__ATT, E));
        } else {
            MLLM__DO(ops->matmul(be, &L->w_gate, MLLM__XB, T, MLLM__HB, 0));
            MLLM__DO(ops->matmul(be, &L->w_up, MLLM__XB, T, MLLM__HB2, 0));
            ops->sync(be);
            MLLM__DO(ops->glu(be, MLLM__HB, MLLM__HB2, hp->n_ff, m->arch_desc->act));
            ops->sync(be);
            MLLM__DO(mllm__residual(ops, be, &L->w_down, MLLM__HB, T, E, L->ffn_post_norm));   /* x += down hb */
        }
        ops->sync(be);
    }
    /* the LM head, only for the tokens that sample: gather their rows, norm, project */
    if (b->n_logits) {
        MLLM__DO(ops->gather_rows(be, MLLM__X, E, MLLM__XB));
        ops->sync(be);
        MLLM__DO(ops->rmsnorm(be, MLLM__XB, m->output_norm, b->n_logits, E, MLLM__XB));
        ops->sync(be);
        MLLM__DO(ops->matmul(be, &m->output, MLLM__XB, b->n_logits, MLLM__LOGITS, 0));
        if (b->n_sample) {
            ops->sync(be);
            MLLM__DO(ops->sample(be));
        }
    }
#undef MLLM__DO
    return MLLM_OK;
}

/* A step on the CPU: the cos/sin table of the batch's positions, then the graph (logits to logits_tmp). */
static void mllm__cpu_step(mllm_context *ctx, const mllm__batch *b) {
    const mllm__hparams *hp = &ctx->model->hp;
    int t;
    for (t = 0; t < b->n_tokens; t++) {
        mllm__rope_table(ctx->ex.rope_cs + (size_t)t * hp->n_rot, hp->n_rot, b->pos[t], hp->rope_base, hp->rope_freq_scale,
                         ctx->model->rope_freqs);
        if (hp->n_swa)
            mllm__rope_table(ctx->ex.rope_cs + ((size_t)ctx->p.n_batch + t) * hp->n_rot, hp->n_rot, b->pos[t], hp->rope_base_swa,
                             1.0f, NULL);
    }
    ctx->batch = b;
    mllm__forward(&mllm__cpu_backend, ctx, ctx->model, b);   /* (CPU ops do not fail) */
    ctx->batch = NULL;
}

/* ---- sequences and steps ---- */
static mllm__seq *mllm__seq_get(const mllm_context *ctx, mllm_seq_id sid) {
    int i;
    for (i = 0; i < ctx->p.n_seq_max; i++)
        if (ctx->seqs[i].used && ctx->seqs[i].sid == sid) return &ctx->seqs[i];
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
    s->gpu_pick = -1;
    s->used = 1;
    s->sid = ctx->next_id++;
    return MLLM_OK;
}

/* The penalty window a sequence samples with on the GPU; 0 when it does not sample there (no GPU,
   manual, or a window wider than the GPU's ring while the history can outgrow the ring). */
static int mllm__gpu_window(const mllm_context *ctx, const mllm__seq *s) {
    const int w = s->params.sampler.penalty_last_n > 0 ? s->params.sampler.penalty_last_n : 64, cap = ctx->gpu.smp.ring_cap;
    if (!ctx->gpu.g || s->params.manual) return 0;
    return w <= cap ? w : s->cap_tokens <= cap ? cap : 0;   /* a window past any history is all of it */
}

/* Sets s's GPU penalty state from its history: after add, fork and append, which change the history
   other than by a GPU pick (the sample kernel records those itself). */
static mllm_status mllm__gpu_seq_seed(mllm_context *ctx, const mllm__seq *s) {
    const int w = mllm__gpu_window(ctx, s);
    if (!w) return MLLM_OK;
    return mllm__gpu_sampler_seed(ctx->gpu.g, &ctx->gpu.smp, (int)(s - ctx->seqs), s->tokens, s->n_tokens, w);
}

/* Appends a sampled token and decides whether the sequence is done. */
static void mllm__seq_accept(mllm_context *ctx, mllm__seq *s, mllm_token tok, mllm_step_token *r) {
    const mllm_vocab *vocab = &ctx->model->vocab;
    r->seq = s->sid;
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

/* A step's forward pass on the GPU.  The logits rows of sequences that sample there move to the front
   and are sampled in the step's command buffer (their picks go to gpu_pick); the other rows (manual
   sequences) come back to logits_tmp, at their row. */
static mllm_status mllm__gpu_step(mllm_context *ctx, mllm__batch *b) {
    int32_t *idx = ctx->b_logits_idx, *seq = ctx->b_logits_seq, t;
    int i, n = 0;
    mllm_status st;
    for (i = 0; i < b->n_logits; i++) {
        mllm__seq *s = &ctx->seqs[seq[i]];
        mllm_sampler_params sp = s->params.sampler;
        if (!(sp.penalty_last_n = mllm__gpu_window(ctx, s))) continue;
        t = idx[i]; idx[i] = idx[n]; idx[n] = t;   /* the order of rows is free: they are found by slot */
        t = seq[i]; seq[i] = seq[n]; seq[n] = t;
        ctx->b_rows[n] = mllm__gpu_sample_row(seq[n], &sp, s->n_tokens, (uint64_t)s->n_generated);
        n++;
    }
    b->n_sample = n;
    st = mllm__gpu_forward(&ctx->gpu, ctx->model, &ctx->kv, b, ctx->b_rows, ctx->b_picks, ctx->logits_tmp);
    for (i = 0; i < n && st == MLLM_OK; i++) {
        if (ctx->b_picks[i] < 0 || ctx->b_picks[i] >= ctx->model->hp.n_vocab)
            return mllm__fail(MLLM_ERR_BACKEND, "gpu: sampled token %d out of range", ctx->b_picks[i]);
        ctx->seqs[seq[i]].gpu_pick = ctx->b_picks[i];
    }
    return st;
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
                r->seq = s->sid;
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
            ctx->b_seq_slot[b.n_seqs] = i;
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
    if (b.n_tokens) {
        mllm_status st = MLLM_OK;
        if (ctx->gpu.g) st = mllm__gpu_step(ctx, &b);
        else mllm__cpu_step(ctx, &b);
        if (st != MLLM_OK) {   /* the batch's K/V rows are unknown now: its sequences end with the error */
            for (i = 0; i < b.n_seqs; i++) {
                mllm__seq *s = &ctx->seqs[ctx->b_seq_slot[i]];
                s->gpu_pick = -1;
                mllm_step_token *r = &ctx->results[n_res++];
                r->seq = s->sid;
                r->token = -1;
                r->finished = 1;
                r->status = st;
                s->finished = 1;
                s->status = st;
            }
            for (i = 0; i < ctx->p.n_seq_max; i++) n_active += ctx->seqs[i].used && !ctx->seqs[i].finished;
            res->tokens = ctx->results;
            res->n_tokens = n_res;
            res->n_active = n_active;
            return st;
        }
    }
    for (i = 0; i < b.n_logits; i++) {
        mllm__seq *s = &ctx->seqs[ctx->b_logits_seq[i]];
        s->sample_pending = 1;
        s->has_logits = s->gpu_pick < 0;   /* a GPU pick leaves its logits on the GPU */
        if (s->has_logits)
            memcpy(ctx->logits + (size_t)ctx->b_logits_seq[i] * V, ctx->logits_tmp + (size_t)i * V, sizeof(float) * (size_t)V);
    }
    for (i = 0; i < ctx->p.n_seq_max; i++) {   /* sample, in slot order */
        mllm__seq *s = &ctx->seqs[i];
        mllm_step_token *out;
        mllm_status st;
        float *lg;
        mllm_token tok;
        if (!s->used || s->finished || !s->sample_pending) continue;
        if (s->params.manual) {   /* logits are ready; the caller appends the next token */
            mllm_step_token *r = &ctx->results[n_res++];
            memset(r, 0, sizeof *r);
            r->seq = s->sid;
            r->token = -1;
            s->sample_pending = 0;
            continue;
        }
        s->gpu_sampled = s->gpu_pick >= 0;
        if (s->gpu_sampled) {
            tok = s->gpu_pick;
            s->gpu_pick = -1;
        } else {   /* penalties modify a copy, so mllm_seq_logits shows the model's logits */
            lg = ctx->logits_tmp;
            memcpy(lg, ctx->logits + (size_t)i * V, sizeof(float) * (size_t)V);
            tok = mllm__sample(lg, V, s->tokens, s->n_tokens, &s->params.sampler, (uint64_t)s->n_generated,
                               (mllm__cand *)ctx->sample_buf);
        }
        s->sample_pending = 0;
        out = &ctx->results[n_res++];
        mllm__seq_accept(ctx, s, tok, out);
        if (!s->gpu_sampled && (st = mllm__gpu_seq_seed(ctx, s)) != MLLM_OK) {   /* a host pick (after a fork) */
            out->finished = s->finished = 1;
            out->status = s->status = st;
        }
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
    if ((st = mllm__gpu_seq_seed(ctx, s)) != MLLM_OK) { mllm__seq_clear(ctx, s); return st; }
    *out = s->sid;
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
    } else if (src->gpu_sampled && src->n_tokens == src->n_past + 1) {
        /* src's logits stayed on the GPU: the child computes them again from src's last fed token (in
           a shared block, which the child's write copies) and samples its own pick */
        s->n_past--;
    } else if (src->n_tokens > src->n_past) {   /* src still has unfed prompt tokens: copy them */
        memcpy(s->tokens + s->n_tokens, src->tokens + src->n_past, sizeof(mllm_token) * (size_t)(src->n_tokens - src->n_past));
        s->n_tokens = src->n_tokens;
        s->n_prompt = src->n_prompt;
    }
    if ((st = mllm__gpu_seq_seed(ctx, s)) != MLLM_OK) { mllm__seq_clear(ctx, s); return st; }
    *out = s->sid;
    return MLLM_OK;
}

mllm_status mllm_seq_append(mllm_context *ctx, mllm_seq_id sid, const mllm_token *tokens, int n) {
    mllm__seq *s;
    int i;
    if (!ctx || !(s = mllm__seq_get(ctx, sid))) return mllm__fail(MLLM_ERR_INVALID_ARG, "no sequence %d", sid);
    if (n < 0 || (n && !tokens)) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_seq_append: bad tokens");
    if (s->finished && s->status != MLLM_OK) return mllm__fail(s->status, "sequence %d ended with an error", sid);
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= ctx->model->hp.n_vocab)
            return mllm__fail(MLLM_ERR_INVALID_ARG, "token %d at index %d is out of range [0, %d)", tokens[i], i, ctx->model->hp.n_vocab);
    if (s->n_tokens + n >= s->cap_tokens)
        return mllm__fail(MLLM_ERR_CONTEXT_FULL, "sequence %d: %d + %d tokens exceed the context of %d", sid, s->n_tokens, n, s->cap_tokens);
    memcpy(s->tokens + s->n_tokens, tokens, sizeof(mllm_token) * (size_t)n);
    s->n_tokens += n;
    s->sample_pending = 0;
    s->gpu_sampled = 0;
    if (s->finished) { s->finished = 0; s->n_generated = 0; }
    return mllm__gpu_seq_seed(ctx, s);
}

mllm_status mllm_seq_remove(mllm_context *ctx, mllm_seq_id sid) {
    mllm__seq *s;
    if (!ctx || !(s = mllm__seq_get(ctx, sid))) return mllm__fail(MLLM_ERR_INVALID_ARG, "no sequence %d", sid);
    mllm__seq_clear(ctx, s);
    return MLLM_OK;
}

const float *mllm_seq_logits(const mllm_context *ctx, mllm_seq_id sid) {
    mllm__seq *s = ctx ? mllm__seq_get(ctx, sid) : NULL;
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
    if (ctx->gpu.g) {   /* the pools belong to the GPU buffers */
        ctx->kv.k = ctx->kv.v = NULL;
        mllm__gpu_fwd_free(&ctx->gpu);
    }
    MLLM_FREE(ctx->kv.k);
    MLLM_FREE(ctx->kv.v);
    MLLM_FREE(ctx->kv.refcount);
    MLLM_FREE(ctx->kv.free_list);
    MLLM_FREE(ctx->ex.qbuf);
    MLLM_FREE(ctx->ex.thread_scratch);
    MLLM_FREE(ctx->ex.rope_cs);
    MLLM_FREE(ctx->ex.row_buf);
    for (i = 0; i < MLLM__LOGITS; i++) MLLM_FREE(ctx->act[i]);   /* (act[MLLM__LOGITS] is logits_tmp) */
    MLLM_FREE(ctx->res);
    mllm__moe_buf_free(&ctx->moe);
    MLLM_FREE(ctx->logits);
    MLLM_FREE(ctx->logits_tmp);
    MLLM_FREE(ctx->b_tokens);
    MLLM_FREE(ctx->b_pos);
    MLLM_FREE(ctx->b_logits_idx);
    MLLM_FREE(ctx->b_logits_seq);
    MLLM_FREE(ctx->b_seqs);
    MLLM_FREE(ctx->b_seq_slot);
    MLLM_FREE(ctx->b_rows);
    MLLM_FREE(ctx->b_picks);
    MLLM_FREE(ctx->results);
    MLLM_FREE(ctx->sample_buf);
    MLLM_FREE(ctx);
}

#define MLLM__ALLOC(ptr, n, T) ((ptr) = MLLM__CAST(T *, mllm__calloc((size_t)(n), sizeof(T))), (ptr) != NULL)

/* Creates a context.  Its steps run on gpu when given (tests attach the emulated device here), else on
   Metal when the model's backend asks for it and this build has it, else on the CPU. */
static mllm_status mllm__context_create(mllm_context **out, mllm_model *model, const mllm_context_params *params,
                                        mllm__gpu *gpu) {
    mllm_context *ctx;
    const mllm__hparams *hp;
    mllm_context_params p;
    size_t kv_elems, nb, nsv;
    int ok = 1, i, ff, NB, NS, cpu;
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
#if MLLM__HAVE_METAL || defined(MLLM__FORCE_METAL_STUBS)
    if (!gpu && model->backend == MLLM_BACKEND_METAL) {   /* opt-in until verified on hardware */
        mllm_status st = mllm__mtl_open(&ctx->gpu.own);
        if (st != MLLM_OK) { MLLM_FREE(ctx); return st; }
        gpu = &ctx->gpu.own;
    }
#endif
    if (gpu) {
        mllm_status st = mllm__gpu_fwd_init(&ctx->gpu, gpu, model, &ctx->kv, p.n_batch, p.n_seq_max, ctx->max_blocks_per_seq);
        if (st != MLLM_OK) {
            mllm__gpu_fwd_free(&ctx->gpu);
            MLLM_FREE(ctx);
            return st;
        }
    }
    cpu = ctx->gpu.g == NULL;   /* the CPU forward's scratch and KV pools only when it runs */
    kv_elems = (size_t)hp->n_layer * p.kv_blocks * hp->n_head_kv * p.kv_block_tokens * hp->head_dim;
    NB = p.n_batch;
    NS = p.n_seq_max;
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
        ok &= !cpu || (ctx->ex.qbuf = mllm__calloc(ctx->ex.qbuf_bytes, 1)) != NULL;
    }
    ctx->ex.thread_scratch_floats = (size_t)model->n_ctx + hp->head_dim;
    if (model->precise) {
        ctx->ex.row_buf_floats = (size_t)(hp->n_embd > ff ? hp->n_embd : ff);
        if ((size_t)hp->n_head * hp->head_dim > ctx->ex.row_buf_floats) ctx->ex.row_buf_floats = (size_t)hp->n_head * hp->head_dim;
        ok &= MLLM__ALLOC(ctx->ex.row_buf, ctx->ex.row_buf_floats * model->pool->n_threads, float);
    }
    ok &= MLLM__ALLOC(ctx->ex.thread_scratch, ctx->ex.thread_scratch_floats * model->pool->n_threads, float);
    ok &= MLLM__ALLOC(ctx->ex.rope_cs, 2 * nb * hp->n_rot, float);
    ok &= !cpu || (MLLM__ALLOC(ctx->kv.k, kv_elems, uint16_t) && MLLM__ALLOC(ctx->kv.v, kv_elems, uint16_t));
    ok &= MLLM__ALLOC(ctx->kv.refcount, p.kv_blocks, int32_t) && MLLM__ALLOC(ctx->kv.free_list, p.kv_blocks, int32_t);
    ok &= MLLM__ALLOC(ctx->seqs, NS, mllm__seq);
    if (cpu) {
        const size_t Dq = (size_t)hp->n_head * hp->head_dim, Dkv = (size_t)hp->n_head_kv * hp->head_dim;
        ok &= MLLM__ALLOC(ctx->act[MLLM__X], nb * hp->n_embd, float) && MLLM__ALLOC(ctx->act[MLLM__XB], nb * hp->n_embd, float);
        ok &= MLLM__ALLOC(ctx->act[MLLM__Q], nb * Dq, float);
        ok &= MLLM__ALLOC(ctx->act[MLLM__K], nb * Dkv, float) && MLLM__ALLOC(ctx->act[MLLM__V], nb * Dkv, float);
        ok &= MLLM__ALLOC(ctx->act[MLLM__ATT], nb * (Dq > (size_t)hp->n_embd ? Dq : (size_t)hp->n_embd), float);
        ok &= MLLM__ALLOC(ctx->act[MLLM__HB], nb * ff, float) && MLLM__ALLOC(ctx->act[MLLM__HB2], nb * ff, float);
        ok &= MLLM__ALLOC(ctx->res, nb * hp->n_embd, float);
        if (hp->n_expert) ok &= mllm__moe_buf_alloc(&ctx->moe, hp, (int)nb) == MLLM_OK;
    }
    ok &= MLLM__ALLOC(ctx->logits, nsv, float) && MLLM__ALLOC(ctx->logits_tmp, nsv > nb * hp->n_vocab ? nb * hp->n_vocab : nsv, float);
    ctx->act[MLLM__LOGITS] = ctx->logits_tmp;
    ok &= MLLM__ALLOC(ctx->b_tokens, nb, mllm_token) && MLLM__ALLOC(ctx->b_pos, nb, int32_t);
    ok &= MLLM__ALLOC(ctx->b_logits_idx, NS, int32_t) && MLLM__ALLOC(ctx->b_logits_seq, NS, int32_t);
    ok &= MLLM__ALLOC(ctx->b_seqs, NS, mllm__batch_seq) && MLLM__ALLOC(ctx->results, NS, mllm_step_token);
    ok &= MLLM__ALLOC(ctx->b_seq_slot, NS, int32_t);
    ok &= cpu || (MLLM__ALLOC(ctx->b_rows, NS, mllm__sample_row) && MLLM__ALLOC(ctx->b_picks, NS, mllm_token));
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

mllm_status mllm_context_create(mllm_context **out, mllm_model *model, const mllm_context_params *params) {
    return mllm__context_create(out, model, params, NULL);
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
    if ((int)p.backend < MLLM_BACKEND_AUTO || (int)p.backend > MLLM_BACKEND_METAL)
        return mllm__fail(MLLM_ERR_INVALID_ARG, "unknown backend %d", (int)p.backend);
    if (p.backend == MLLM_BACKEND_METAL && !MLLM__HAVE_METAL)
        return mllm__fail(MLLM_ERR_UNSUPPORTED, "the Metal backend is not available in this build");
    if (!(m = MLLM__CAST(mllm_model *, mllm__calloc(1, sizeof *m)))) return mllm__fail(MLLM_ERR_NOMEM, "out of memory");
    m->n_threads = p.n_threads ? p.n_threads : mllm__online_cores();
    m->precise = p.precise != 0;
    m->backend = p.backend;
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

int mllm_kv_free_blocks(const mllm_context *ctx, int *n_total) {
    if (!ctx) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_kv_free_blocks: NULL context");
    if (n_total) *n_total = ctx->kv.n_blocks;
    return ctx->kv.n_free;
}

/* ---- chat templates: recognised by their markers, formatted without a template engine ---- */
int mllm_chat_format(const mllm_model *m, const mllm_chat_message *msgs, int n, char *out, int cap) {
    const char *tpl = !m ? NULL : m->chat_template ? m->chat_template : m->arch_desc->chat;
    size_t len = 0;
    int i, kind;
    enum { CHATML, LLAMA3, LLAMA2, GEMMA, PHI3 };
    if (!m || (!msgs && n) || n < 0 || (!out && cap)) return mllm__fail(MLLM_ERR_INVALID_ARG, "mllm_chat_format: bad arguments");
    if (!tpl || strstr(tpl, "<|im_start|>")) kind = CHATML;   /* ChatML is also the fallback */
    else if (strstr(tpl, "<|start_header_id|>")) kind = LLAMA3;
    else if (strstr(tpl, "[INST]")) kind = LLAMA2;
    else if (strstr(tpl, "<start_of_turn>")) kind = GEMMA;
    else if (strstr(tpl, "<|user|>") && strstr(tpl, "<|end|>")) kind = PHI3;
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
        else if (kind == PHI3) { MLLM__PUT("<|"); MLLM__PUT(role); MLLM__PUT("|>\n"); MLLM__PUT(text); MLLM__PUT("<|end|>\n"); }
        else if (kind == GEMMA) {   /* no system role: its text opens the next user turn; the assistant is "model" */
            if (!strcmp(role, "system")) { MLLM__PUT("<start_of_turn>user\n"); MLLM__PUT(text); MLLM__PUT("\n\n"); continue; }
            if (!(i > 0 && msgs[i - 1].role && !strcmp(msgs[i - 1].role, "system"))) {
                MLLM__PUT("<start_of_turn>"); MLLM__PUT(!strcmp(role, "assistant") ? "model" : role); MLLM__PUT("\n");
            }
            MLLM__PUT(text); MLLM__PUT("<end_of_turn>\n");
        }
        else if (!strcmp(role, "assistant")) { MLLM__PUT(" "); MLLM__PUT(text); MLLM__PUT(" </s>"); }
        else if (!strcmp(role, "system")) { MLLM__PUT("<<SYS>>\n"); MLLM__PUT(text); MLLM__PUT("\n<</SYS>>\n\n"); }
        else { MLLM__PUT("[INST] "); MLLM__PUT(text); MLLM__PUT(" [/INST]"); }
    }
    if (kind == CHATML) MLLM__PUT("<|im_start|>assistant\n");
    else if (kind == LLAMA3) MLLM__PUT("<|start_header_id|>assistant<|end_header_id|>\n\n");
    else if (kind == GEMMA) MLLM__PUT("<start_of_turn>model\n");
    else if (kind == PHI3) MLLM__PUT("<|assistant|>\n");
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
    mllm_seq_id sid;
    mllm_token *toks = NULL;
    mllm_detok dt;
    mllm_status st;
    int n, flags = 0, stop = 0;
    double t0, t_first = 0;
    char piece[512];
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
    if ((st = mllm_context_create(&ctx, model, &cp)) || (st = mllm_seq_add(ctx, toks, n, &sp, &sid))) goto done;
    memset(&dt, 0, sizeof dt);
    dt.n_tokens = 1;   /* the text continues the prompt: keep the space of the first piece */
    if (mllm_vocab_max_piece(&model->vocab) + 3 > (int)sizeof piece) { st = mllm__fail(MLLM_ERR_UNSUPPORTED, "token pieces longer than %d bytes", (int)sizeof piece - 3); goto done; }
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

/* ============================================================ SECTION: Metal kernels (generated) */
#if MLLM__HAVE_METAL || defined(MLLM__FORCE_METAL_STUBS)
/* The files of kernels/, pasted by gen/embed_kernels.sh: edit a kernel here (a single-header user) or
   in kernels/ followed by gen/embed_kernels.sh (this repository; the test suite checks they agree). */
/* BEGIN GENERATED KERNELS */
/* The kernels' MSL source, one array per file of kernels/ (see the accessors below). */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverlength-strings"   /* C11 promises 4095 characters */
#endif
static const char mllm__kernel_common_h[] = /* kernels/common.h */
    "/* kernels/common.h - what the Metal kernels share with the host.\n"
    "\n"
    "   Compiled twice: by the Metal compiler (as part of every .metal file in kernels/) and by C/C++ host code\n"
    "   (metalllm.h's Metal backend, the emulator tests).  The parameter structs below are therefore plain C\n"
    "   with fixed-width fields and no padding surprises: one definition, read by both sides.  Everything\n"
    "   MSL-only (the per-type block loaders) is under __METAL_VERSION__.\n"
    "\n"
    "   Shapes, for every matrix kernel: the weight W has N rows of K elements (GGUF ne[0] = K, rows are\n"
    "   row_bytes apart); activations X have M rows of K floats; outputs Y have M rows of N floats. */\n"
    "#ifndef MLLM_KERNELS_COMMON_H\n"
    "#define MLLM_KERNELS_COMMON_H\n"
    "\n"
    "#ifdef __METAL_VERSION__\n"
    "#include <metal_stdlib>\n"
    "using namespace metal;\n"
    "#else\n"
    "#include <stdint.h>\n"
    "#endif\n"
    "\n"
    "/* ---------------------------------------------------------------- launch geometry (host must match) */\n"
    "#define MLLM__GEMV_NSG 2         /* simdgroups per threadgroup: threads per threadgroup = 32 * NSG */\n"
    "#define MLLM__GEMV_ROWS 4        /* weight rows per simdgroup: threadgroups.x = ceil(N / (NSG * ROWS)) */\n"
    "#define MLLM__GEMM_BM 32         /* activation rows (tokens) per threadgroup tile: threadgroups.y */\n"
    "#define MLLM__GEMM_BN 64         /* weight rows (outputs) per threadgroup tile: threadgroups.x */\n"
    "#define MLLM__GEMM_BK 32         /* depth of one tile step */\n"
    "#define MLLM__GEMM_THREADS 128   /* 4 simdgroups in a 2 x 2 arrangement */\n"
    "#define MLLM__REDUCE_MAX_THREADS 1024  /* row reductions (norm, softmax, argmax) use <= this many */\n"
    "\n"
    "/* ---------------------------------------------------------------- the weight types the kernels read\n"
    "   The one list of GPU weight types: X(suffix, TYPE) with suffix the kernel-name suffix (gemv_q4_k...)\n"
    "   and the block loader's name (blk_q4_k, below), TYPE the GGUF type (MLLM__TYPE in metalllm.h).  The\n"
    "   kernel files instantiate their templates over it, the host maps weight types to kernel names with it\n"
    "   and the emulator tests build their tables from it: a new type is a line here plus its blk_ loader. */\n"
    "#define MLLM__GPU_TYPES(X) \\\n"
    "    X(f32, F32)            \\\n"
    "    X(f16, F16)            \\\n"
    "    X(bf16, BF16)          \\\n"
    "    X(q8_0, Q8_0)          \\\n"
    "    X(q4_0, Q4_0)          \\\n"
    "    X(q4_1, Q4_1)          \\\n"
    "    X(q4_k, Q4_K)          \\\n"
    "    X(q6_k, Q6_K)\n"
    "\n"
    "/* ---------------------------------------------------------------- kernel parameters */\n"
    "typedef struct mllm__mat_args {  /* gemv_*, gemm_*, get_rows_* */\n"
    "    uint32_t K;                  /* elements per weight row (a multiple of the type's block) */\n"
    "    uint32_t N;                  /* weight rows */\n"
    "    uint32_t M;                  /* activation rows (gemv/gemm) or ids (get_rows) */\n"
    "    uint32_t row_bytes;          /* bytes between weight rows */\n"
    "} mllm__mat_args;\n"
    "\n"
    "typedef struct mllm__norm_args { /* rms_norm, rms_norm_mul: one threadgroup per row of n floats */\n"
    "    uint32_t n;\n"
    "    float eps;\n"
    "} mllm__norm_args;\n"
    "\n"
    "typedef struct mllm__rope_args { /* rope, rope_neox: in place on [tokens][n_heads][head_dim] */\n"
    "    uint32_t n_heads;\n"
    "    uint32_t head_dim;\n"
    "    uint32_t n_rot;              /* leading dims of each head that rotate (even, <= head_dim) */\n"
    "    uint32_t stride;             /* floats between consecutive tokens (>= n_heads * head_dim) */\n"
    "    float freq_base;\n"
    "    float freq_scale;\n"
    "} mllm__rope_args;\n"
    "\n"
    "typedef struct mllm__vec_args {  /* swiglu, add, softmax, argmax */\n"
    "    uint32_t n;                  /* elements (per row for softmax/argmax, in total otherwise) */\n"
    "} mllm__vec_args;\n"
    "\n"
    "typedef struct mllm__bias_args { /* add_bias: rows of cols floats, each plus the same bias row */\n"
    "    uint32_t n;                  /* elements in total (a multiple of cols) */\n"
    "    uint32_t cols;\n"
    "} mllm__bias_args;\n"
    "\n"
    "/* ---------------------------------------------------------------- attention (kernels/attention.metal)\n"
    "   Paged KV exactly as the CPU engine's mllm__kv: F16 pools [n_layer][n_blocks][n_head_kv][block_tokens]\n"
    "   [head_dim]; the host binds each pool at its layer's offset, so kernels index [block][head][t][d].\n"
    "   Every attention kernel takes the same bindings (the host sets them once per layer):\n"
    "     0 q [n_tokens][n_head*hd]   1 k, 2 v [n_tokens][n_head_kv*hd] (new rows, f32)\n"
    "     3 K pool, 4 V pool (f16, layer base)   5 out [n_tokens][n_head*hd]   6 decode partials (f32)\n"
    "     7 mllm__attn_seq[n_seqs]   8 int tok_seq[n_tokens]   9 int block tables   10 mllm__attn_args */\n"
    "#define MLLM__ATTN_NSG 4          /* simdgroups per threadgroup (128 threads) in every attention kernel */\n"
    "#define MLLM__ATTN_CHUNK 256      /* decode: context positions per threadgroup (split-K); multiple of 32 */\n"
    "#define MLLM__ATTN_GROUP 8        /* decode: query heads of one KV head handled per threadgroup */\n"
    "#define MLLM__ATTN_BQ 32          /* prefill: query tokens per threadgroup (8 per simdgroup) */\n"
    "\n"
    "typedef struct mllm__attn_seq {  /* one sequence of the batch: tokens [first, first + n) at pos0.. */\n"
    "    int32_t first, n, pos0;\n"
    "    int32_t blocks;              /* index of its block table (ceil((pos0 + n) / block_tokens) ids) in buffer 9 */\n"
    "} mllm__attn_seq;\n"
    "\n"
    "typedef struct mllm__attn_args {\n"
    "    uint32_t n_seqs, n_tokens;\n"
    "    uint32_t n_head, n_head_kv, head_dim, block_tokens;\n"
    "    uint32_t n_chunks;           /* decode: splits of the longest context (grid x, partials per head) */\n"
    "    float scale;                 /* 1 / sqrt(head_dim) */\n"
    "} mllm__attn_args;\n"
    "\n"
    "/* ---------------------------------------------------------------- mllm__moe_*: mixture of experts\n"
    "   (kernels/moe.metal).  One MoE layer is a fixed chain of dispatches, whatever n_expert and however\n"
    "   many experts are active: route (top-k per token) -> [map (counting sort by expert), gemm path only]\n"
    "   -> grouped gate and up products -> swiglu -> grouped down product -> combine.  An \"assigned row\" is\n"
    "   r = token * n_used + slot; the gemm path works on them in sorted order p (grouped by expert). */\n"
    "#define MLLM__MOE_MAX_EXPERT 1024  /* moe_route keeps a 32-bit \"taken\" mask per lane (32 x 32 experts) */\n"
    "#define MLLM__MOE_MAX_USED 8       /* experts per token */\n"
    "#define MLLM__MOE_MAP_THREADS 256  /* moe_map: one threadgroup of this many threads */\n"
    "#define MLLM__MOE_COMBINE_THREADS 64\n"
    "\n"
    "typedef struct mllm__moe_args {  /* moe_route, moe_map, moe_combine */\n"
    "    uint32_t n_expert;\n"
    "    uint32_t n_used;             /* experts per token (<= n_expert, <= MLLM__MOE_MAX_USED) */\n"
    "    uint32_t n_tokens;\n"
    "    uint32_t n;                  /* moe_combine: floats per row */\n"
    "} mllm__moe_args;\n"
    "\n"
    "typedef struct mllm__moe_mat_args {  /* moe_gemv_*, moe_gemm_*: W holds n_expert matrices of N rows */\n"
    "    uint32_t K, N, row_bytes;    /* as mllm__mat_args, for one expert's matrix (N * row_bytes apart) */\n"
    "    uint32_t n_rows;             /* assigned rows: n_tokens * n_used */\n"
    "    uint32_t n_used;\n"
    "    uint32_t n_expert;\n"
    "    uint32_t gather;             /* 1 (gate, up): X has a row per token, Y a row per sorted row p;\n"
    "                                    0 (down): X has a row per sorted row p, Y a row per assigned row r\n"
    "                                    (gemv: p = r, there is no sort) */\n"
    "} mllm__moe_mat_args;\n"
    "\n"
    "/* moe_map's output, one uint buffer: offsets[n_expert + 1] (first sorted row of each expert), then\n"
    "   rows[n_rows] (assigned row r at sorted position p), then the gemm tile count, then per tile\n"
    "   {expert, first sorted row}.  At most ceil(n_rows / BM) + min(n_expert, n_rows) tiles. */\n"
    "#define MLLM__MOE_MAP_ROWS(n_expert) ((n_expert) + 1)\n"
    "#define MLLM__MOE_MAP_NTILES(n_expert, n_rows) ((n_expert) + 1 + (n_rows))\n"
    "#define MLLM__MOE_MAP_TILES(n_expert, n_rows) ((n_expert) + 2 + (n_rows))\n"
    "#define MLLM__MOE_MAX_TILES(n_expert, n_rows) \\\n"
    "    (((n_rows) + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM + ((n_expert) < (n_rows) ? (n_expert) : (n_rows)))\n"
    "/* ---------------------------------------------------------------- end of mllm__moe_* */\n"
    "\n"
    "/* ---------------------------------------------------------------- mllm__sample_*: GPU sampling\n"
    "   kernels/sample.metal picks one token per sampled row under the rule written out above metalllm.h's\n"
    "   mllm__sample (both samplers follow it).  Per-sequence penalty state lives on the GPU: counts[seq][n_vocab]\n"
    "   (ushort: occurrences in the window) and ring[seq][ring_cap] (the last `window` tokens, token number\n"
    "   t at t % window), updated by the kernel after each pick and seeded by the host. */\n"
    "typedef struct mllm__sample_args {  /* sample: the whole dispatch */\n"
    "    uint32_t n_vocab;\n"
    "    uint32_t ring_cap;              /* ints per ring row (>= every row's window, <= 65535) */\n"
    "} mllm__sample_args;\n"
    "\n"
    "typedef struct mllm__sample_row {   /* sample: one per logits row */\n"
    "    uint32_t seq;                   /* its row in counts / ring (distinct among rows with penalties) */\n"
    "    uint32_t n_hist;                /* tokens in its history before this pick (the ring position) */\n"
    "    uint32_t window;                /* penalty window, 1..ring_cap */\n"
    "    uint32_t top_k;                 /* 0 (or >= n_vocab): off */\n"
    "    uint32_t greedy;                /* temperature <= 0: argmax of the penalised logits */\n"
    "    uint32_t penalties;             /* any penalty on (else counts and ring are not used) */\n"
    "    float inv_temp;                 /* 1 / temperature, rounded on the host as the CPU sampler does */\n"
    "    float top_p;                    /* 0: off */\n"
    "    float min_p;                    /* min(min_p, 1); 0: off */\n"
    "    float repeat, inv_repeat;       /* repetition penalty and 1 / it (1, 1: off) */\n"
    "    float frequency, presence;\n"
    "    uint32_t seed_lo, seed_hi;      /* the sequence's RNG stream ... */\n"
    "    uint32_t counter_lo, counter_hi;/* ... and this draw's number in it */\n"
    "} mllm__sample_row;\n"
    "\n"
    "/* ---------------------------------------------------------------- MSL: per-type block loaders */\n"
    "#ifdef __METAL_VERSION__\n"
    "#define MLLM_CONST static constant constexpr const\n"
    "\n"
    "/* Every weight type is read through one small loader struct, so each kernel family is written once:\n"
    "     QK          elements per block (1 for the float types)\n"
    "     BYTES       bytes per block\n"
    "     chunk(r,c)  dequantizes elements [16c, 16c + 16) of the row at r into four float4 registers\n"
    "     at(r,k)     one element; only the float types have rows that end inside a chunk (K % 16 != 0)\n"
    "   Block layouts are GGUF's.  Rows of odd length are not 4-byte aligned, hence the packed_* loads. */\n"
    "\n"
    "/* Element k of a row through its chunk: used by the quantized types, whose rows never end in a chunk. */\n"
    "template <typename B> METAL_FUNC float chunk_elem(device const uchar *row, uint k) {\n"
    "    float4 v[4];\n"
    "    B::chunk(row, k / 16, v);\n"
    "    return v[(k % 16) / 4][k % 4];\n"
    "}\n"
    "\n"
    "struct blk_f32 {\n"
    "    MLLM_CONST int QK = 1, BYTES = 4;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const packed_float4 *p = (device const packed_float4 *)row + 4 * c;\n"
    "        for (int i = 0; i < 4; i++) v[i] = float4(p[i]);\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return ((device const float *)row)[k]; }\n"
    "};\n"
    "\n"
    "struct blk_f16 {\n"
    "    MLLM_CONST int QK = 1, BYTES = 2;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const packed_half4 *p = (device const packed_half4 *)row + 4 * c;\n"
    "        for (int i = 0; i < 4; i++) v[i] = float4(half4(p[i]));\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return float(((device const half *)row)[k]); }\n"
    "};\n"
    "\n"
    "/* bfloat16 is the top half of a float32: widen by shifting (works on every Metal version). */\n"
    "struct blk_bf16 {\n"
    "    MLLM_CONST int QK = 1, BYTES = 2;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const packed_ushort4 *p = (device const packed_ushort4 *)row + 4 * c;\n"
    "        for (int i = 0; i < 4; i++) v[i] = as_type<float4>(uint4(ushort4(p[i])) << 16u);\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) {\n"
    "        return as_type<float>(uint(((device const ushort *)row)[k]) << 16u);\n"
    "    }\n"
    "};\n"
    "\n"
    "/* Q8_0: {half d; int8 q[32]}, x = d * q.  Chunk c is half c & 1 of block c / 2. */\n"
    "struct blk_q8_0 {\n"
    "    MLLM_CONST int QK = 32, BYTES = 34;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const uchar *b = row + (c / 2) * BYTES;\n"
    "        const float d = float(*(device const half *)b);\n"
    "        device const packed_char4 *q = (device const packed_char4 *)(b + 2 + 16 * (c & 1));\n"
    "        for (int i = 0; i < 4; i++) v[i] = float4(char4(q[i])) * d;\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q8_0>(row, k); }\n"
    "};\n"
    "\n"
    "/* Q4_0: {half d; uint8 q[16]}, element j < 16 is the low nibble of q[j], j >= 16 the high nibble of\n"
    "   q[j - 16]; x = d * (nibble - 8).  Chunk c & 1 selects the nibble. */\n"
    "struct blk_q4_0 {\n"
    "    MLLM_CONST int QK = 32, BYTES = 18;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const uchar *b = row + (c / 2) * BYTES;\n"
    "        const float d = float(*(device const half *)b);\n"
    "        const uint sh = 4 * (c & 1);\n"
    "        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 2);\n"
    "        for (int i = 0; i < 4; i++) v[i] = (float4((uint4(uchar4(q[i])) >> sh) & 15u) - 8.0f) * d;\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q4_0>(row, k); }\n"
    "};\n"
    "\n"
    "/* Q4_1: {half d, m; uint8 q[16]}, nibbles as Q4_0; x = d * nibble + m. */\n"
    "struct blk_q4_1 {\n"
    "    MLLM_CONST int QK = 32, BYTES = 20;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const uchar *b = row + (c / 2) * BYTES;\n"
    "        const float d = float(((device const half *)b)[0]), m = float(((device const half *)b)[1]);\n"
    "        const uint sh = 4 * (c & 1);\n"
    "        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 4);\n"
    "        for (int i = 0; i < 4; i++) v[i] = float4((uint4(uchar4(q[i])) >> sh) & 15u) * d + m;\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q4_1>(row, k); }\n"
    "};\n"
    "\n"
    "/* Q4_K super-block of 256: {half d, dmin; uint8 scales[12]; uint8 q[128]}.  Eight sub-blocks of 32\n"
    "   with 6-bit scale sc and min m packed in scales[]; x = d * sc * nibble - dmin * m.  Sub-block s uses\n"
    "   the low (s even) or high (s odd) nibbles of q[32 * (s / 2) .. + 32). */\n"
    "struct blk_q4_k {\n"
    "    MLLM_CONST int QK = 256, BYTES = 144;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const uchar *b = row + (c / 16) * BYTES;\n"
    "        c %= 16;\n"
    "        const uint s = c / 2;\n"
    "        device const uchar *sc = b + 4;\n"
    "        uint scale, min;\n"
    "        if (s < 4) {\n"
    "            scale = sc[s] & 63;\n"
    "            min = sc[s + 4] & 63;\n"
    "        } else {\n"
    "            scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);\n"
    "            min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);\n"
    "        }\n"
    "        const float d = float(((device const half *)b)[0]) * float(scale);\n"
    "        const float m = float(((device const half *)b)[1]) * float(min);\n"
    "        const uint sh = 4 * (s & 1);\n"
    "        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 16 + 32 * (s / 2) + 16 * (c & 1));\n"
    "        for (int i = 0; i < 4; i++) v[i] = float4((uint4(uchar4(q[i])) >> sh) & 15u) * d - m;\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q4_k>(row, k); }\n"
    "};\n"
    "\n"
    "/* Q6_K super-block of 256: {uint8 ql[128], qh[64]; int8 scales[16]; half d}.  Each 128-element half h\n"
    "   uses ql[64h..], qh[32h..]; its quarter t (32 elements) takes nibble t / 2 of ql[64h + 32(t & 1) + l]\n"
    "   and bits 2t..2t+1 of qh[32h + l] as the 6-bit q; x = d * scales[chunk] * (q - 32). */\n"
    "struct blk_q6_k {\n"
    "    MLLM_CONST int QK = 256, BYTES = 210;\n"
    "    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {\n"
    "        device const uchar *b = row + (c / 16) * BYTES;\n"
    "        c %= 16;\n"
    "        const uint h = c / 8, t = (c % 8) / 2, l0 = 16 * (c & 1);\n"
    "        const float d = float(*(device const half *)(b + 208)) * float(((device const char *)(b + 192))[c]);\n"
    "        device const packed_uchar4 *ql = (device const packed_uchar4 *)(b + 64 * h + 32 * (t & 1) + l0);\n"
    "        device const packed_uchar4 *qh = (device const packed_uchar4 *)(b + 128 + 32 * h + l0);\n"
    "        const uint shl = 4 * (t / 2), shh = 2 * t;\n"
    "        for (int i = 0; i < 4; i++) {\n"
    "            const uint4 q = ((uint4(uchar4(ql[i])) >> shl) & 15u) | (((uint4(uchar4(qh[i])) >> shh) & 3u) << 4u);\n"
    "            v[i] = (float4(q) - 32.0f) * d;\n"
    "        }\n"
    "    }\n"
    "    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q6_k>(row, k); }\n"
    "};\n"
    "\n"
    "/* ---- matmul inner loops, shared by the plain (gemv.metal, gemm.metal) and grouped (moe.metal) kernels */\n"
    "\n"
    "/* GEMV: simdgroup sg of threadgroup column tgx computes ym[n] = dot(W[n], xm) (+ rm[n]) for its\n"
    "   MLLM__GEMV_ROWS rows n of W.  Lane l walks the 16-element chunks l, l + 32, ... of the row, loads its\n"
    "   x chunk once into registers and reuses it for all of its rows, and keeps per-lane partial sums: the\n"
    "   only reduction is one simd_sum per row at the end.  No barriers: a simdgroup may leave on its own. */\n"
    "template <typename B>\n"
    "METAL_FUNC void gemv_rows(device const uchar *w, device const float *xm, device float *ym, device const float *rm,\n"
    "                          uint K, uint N, uint row_bytes, uint tgx, ushort sg, ushort lane) {\n"
    "    const uint R = MLLM__GEMV_ROWS;\n"
    "    const uint n0 = (tgx * MLLM__GEMV_NSG + sg) * R;\n"
    "    if (n0 >= N) return;\n"
    "    const uint nr = min(R, N - n0);           // rows of this simdgroup inside W\n"
    "    device const uchar *w0 = w + (ulong)n0 * row_bytes;\n"
    "    device const packed_float4 *x4 = (device const packed_float4 *)xm;\n"
    "\n"
    "    float acc[R] = {0.0f};\n"
    "    const uint nch = K / 16;\n"
    "    for (uint c = lane; c < nch; c += 32) {\n"
    "        const float4 x0 = x4[4 * c], x1 = x4[4 * c + 1], x2 = x4[4 * c + 2], x3 = x4[4 * c + 3];\n"
    "        for (uint i = 0; i < R; i++) {\n"
    "            if (i < nr) {\n"
    "                float4 v[4];\n"
    "                B::chunk(w0 + i * row_bytes, c, v);\n"
    "                acc[i] += dot(v[0], x0) + dot(v[1], x1) + dot(v[2], x2) + dot(v[3], x3);\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "    // Float types only: the elements after the last whole chunk.\n"
    "    for (uint k = 16 * nch + lane; k < K; k += 32)\n"
    "        for (uint i = 0; i < nr; i++) acc[i] += B::at(w0 + i * row_bytes, k) * xm[k];\n"
    "\n"
    "    for (uint i = 0; i < R; i++) {\n"
    "        const float s = simd_sum(acc[i]);\n"
    "        if (lane == 0 && i < nr) ym[n0 + i] = rm ? s + rm[n0 + i] : s;\n"
    "    }\n"
    "}\n"
    "\n"
    "/* GEMM: one threadgroup (MLLM__GEMM_THREADS = 4 simdgroups, 2 x 2) accumulates a BM x BN tile\n"
    "   acc = X W^T for weight rows [n0, n0 + BN); each simdgroup owns 16 x 32 of it as 2 x 4 simdgroup_matrix\n"
    "   8x8 accumulators (acc[4 * i + j]).  The K loop stages BM x BK of X and BN x BK of W per step.\n"
    "   Which activation rows form the tile is the caller's business: thread tid stages row tid / 4 of the\n"
    "   tile from xrow (NULL: a row outside the tile, zero-filled).  Edges are zero-filled, so any N and any\n"
    "   float-type K work.  The caller stores acc (the barrier at the end of each step lets it reuse Xs/Ws). */\n"
    "enum { MLLM__GEMM_BKP = MLLM__GEMM_BK + 4 };   // padded tile rows: spreads the loads over more banks\n"
    "\n"
    "template <typename B>\n"
    "METAL_FUNC void gemm_tile(device const uchar *w, uint N, uint K, uint row_bytes, uint n0, device const float *xrow,\n"
    "                          threadgroup float (*Xs)[MLLM__GEMM_BKP], threadgroup float (*Ws)[MLLM__GEMM_BKP],\n"
    "                          thread simdgroup_matrix<float, 8, 8> *acc, ushort tid, ushort sg) {\n"
    "    const uint BK = MLLM__GEMM_BK, BKP = MLLM__GEMM_BKP;\n"
    "    const uint sm = sg / 2, sn = sg % 2;      // this simdgroup's 16 x 32 part of the tile\n"
    "    // What this thread stages: half (16 elements, one loader chunk) of one W row, 8 floats of one X row.\n"
    "    const uint wn = tid / 2, wh = tid % 2;\n"
    "    const uint xm = tid / 4, xq = tid % 4;\n"
    "    const bool wok = n0 + wn < N, xok = xrow != nullptr;\n"
    "    device const uchar *wrow = w + (ulong)(wok ? n0 + wn : 0) * row_bytes;\n"
    "\n"
    "    for (int i = 0; i < 8; i++) acc[i] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);\n"
    "\n"
    "    for (uint k0 = 0; k0 < K; k0 += BK) {\n"
    "        const uint kw = k0 + 16 * wh;\n"
    "        float4 v[4];\n"
    "        if (wok && kw + 16 <= K) {\n"
    "            B::chunk(wrow, kw / 16, v);\n"
    "        } else {\n"
    "            for (uint i = 0; i < 16; i++) v[i / 4][i % 4] = wok && kw + i < K ? B::at(wrow, kw + i) : 0.0f;\n"
    "        }\n"
    "        for (int i = 0; i < 4; i++) *(threadgroup float4 *)&Ws[wn][16 * wh + 4 * i] = v[i];\n"
    "\n"
    "        for (uint j = 0; j < 2; j++) {\n"
    "            const uint kx = k0 + 8 * xq + 4 * j;\n"
    "            float4 u;\n"
    "            if (xok && kx + 4 <= K) u = *(device const packed_float4 *)(xrow + kx);\n"
    "            else for (uint i = 0; i < 4; i++) u[i] = xok && kx + i < K ? xrow[kx + i] : 0.0f;\n"
    "            *(threadgroup float4 *)&Xs[xm][8 * xq + 4 * j] = u;\n"
    "        }\n"
    "        threadgroup_barrier(mem_flags::mem_threadgroup);   // tiles complete before anyone multiplies\n"
    "\n"
    "        for (uint kk = 0; kk < BK; kk += 8) {\n"
    "            simdgroup_matrix<float, 8, 8> xa[2], wb[4];\n"
    "            for (int i = 0; i < 2; i++) simdgroup_load(xa[i], &Xs[16 * sm + 8 * i][kk], BKP);\n"
    "            // W is stored row = output, so load it transposed: wb[j](k, n) = Ws[n][k].\n"
    "            for (int j = 0; j < 4; j++) simdgroup_load(wb[j], &Ws[32 * sn + 8 * j][kk], BKP, ulong2(0, 0), true);\n"
    "            for (int i = 0; i < 2; i++)\n"
    "                for (int j = 0; j < 4; j++) simdgroup_multiply_accumulate(acc[4 * i + j], xa[i], wb[j], acc[4 * i + j]);\n"
    "        }\n"
    "        threadgroup_barrier(mem_flags::mem_threadgroup);   // everyone done reading before the next stage\n"
    "    }\n"
    "}\n"
    "\n"
    "/* Row reductions over a whole threadgroup (<= 1024 threads = 32 simdgroups): simd_* inside each\n"
    "   simdgroup, then one slot per simdgroup in threadgroup memory.  All threads get the result.  The\n"
    "   scratch array must hold 32 floats; the leading barrier lets callers reuse it back to back. */\n"
    "METAL_FUNC float tg_sum(float v, threadgroup float *scratch, ushort sg, ushort lane, ushort nsg) {\n"
    "    v = simd_sum(v);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (lane == 0) scratch[sg] = v;\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    return simd_sum(lane < nsg ? scratch[lane] : 0.0f);\n"
    "}\n"
    "\n"
    "METAL_FUNC float tg_max(float v, threadgroup float *scratch, ushort sg, ushort lane, ushort nsg) {\n"
    "    v = simd_max(v);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (lane == 0) scratch[sg] = v;\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    return simd_max(lane < nsg ? scratch[lane] : -INFINITY);\n"
    "}\n"
    "#endif /* __METAL_VERSION__ */\n"
    "#endif /* MLLM_KERNELS_COMMON_H */\n"
    ;
static const char mllm__kernel_attention_metal[] = /* kernels/attention.metal */
    "// Causal attention over the paged F16 KV cache (mllm__kv's layout), with the step's new K/V written\n"
    "// into their blocks on the GPU.  One layer, one batch of sequences; the host encodes\n"
    "//   attn_kv_write, barrier, then either\n"
    "//   attn_decode_hd<D>, barrier, attn_reduce        (every sequence has exactly one new token)\n"
    "//   attn_prefill_hd<D>                             (any n >= 1: prompts, continuations, mixed batches)\n"
    "// Numerics follow the CPU engine (mllm__attn_task): new K/V rounded to half, Q rounded to half,\n"
    "// scores scale * dot(q, k) in float, softmax in float (online here, exact-max there).\n"
    "// Bindings: see the attention block of common.h (the same indices in every kernel).\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "#define NSG MLLM__ATTN_NSG\n"
    "#define NT (32 * NSG)\n"
    "// \"Minus infinity\" for masks and empty maxima: finite, because Metal compiles with fast math (which\n"
    "// may assume no infinities); exp(NEG_BIG - any real score) is still exactly 0.\n"
    "#define NEG_BIG (-0.5f * FLT_MAX)\n"
    "\n"
    "// Element offset of position p's row for KV head h in one layer's pool.\n"
    "METAL_FUNC uint kv_row(device const int *table, uint p, uint h, constant mllm__attn_args &a) {\n"
    "    const uint B = a.block_tokens;\n"
    "    return ((uint(table[p / B]) * a.n_head_kv + h) * B + p % B) * a.head_dim;\n"
    "}\n"
    "\n"
    "// ---------------------------------------------------------------- new K/V into their blocks\n"
    "// Grid: n_tokens threadgroups, any threads.  Each token's slot belongs to its own sequence only (the\n"
    "// engine did copy-on-write before the step), so no two threads write the same element.\n"
    "kernel void attn_kv_write(device const float *k [[buffer(1)]], device const float *v [[buffer(2)]],\n"
    "                          device half *kp [[buffer(3)]], device half *vp [[buffer(4)]],\n"
    "                          device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tok_seq [[buffer(8)]],\n"
    "                          device const int *tables [[buffer(9)]], constant mllm__attn_args &a [[buffer(10)]],\n"
    "                          uint t [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],\n"
    "                          ushort ntg [[threads_per_threadgroup]]) {\n"
    "    const mllm__attn_seq sq = seqs[tok_seq[t]];\n"
    "    const uint pos = uint(sq.pos0 + (int(t) - sq.first)), hd = a.head_dim, n = a.n_head_kv * hd;\n"
    "    for (uint e = tid; e < n; e += ntg) {\n"
    "        const uint o = kv_row(tables + sq.blocks, pos, e / hd, a) + e % hd;\n"
    "        kp[o] = half(k[(ulong)t * n + e]);\n"
    "        vp[o] = half(v[(ulong)t * n + e]);\n"
    "    }\n"
    "}\n"
    "\n"
    "// ---------------------------------------------------------------- decode: one query per sequence\n"
    "// Grid (n_chunks, n_head_kv * ceil(group / GROUP), n_seqs), NT threads.  A threadgroup takes up to\n"
    "// GROUP query heads sharing one KV head over one chunk of the context, so each K/V row is read once\n"
    "// for the whole group.  Lane = position inside a 32-position tile (each lane does full dot products:\n"
    "// no reduction per score); simdgroups take every NSG-th tile with their own online-softmax state,\n"
    "// merged at the end.  Output: partial (max, sum, acc[hd]) per (sequence, head, chunk) for attn_reduce.\n"
    "template <int HD>\n"
    "kernel void attn_decode(device const float *q [[buffer(0)]], device const half *kp [[buffer(3)]],\n"
    "                        device const half *vp [[buffer(4)]], device float *part [[buffer(6)]],\n"
    "                        device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tables [[buffer(9)]],\n"
    "                        constant mllm__attn_args &a [[buffer(10)]], uint3 tg [[threadgroup_position_in_grid]],\n"
    "                        ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],\n"
    "                        ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    constexpr int G = MLLM__ATTN_GROUP, DPL = HD / 32;   // dims of the output each lane accumulates\n"
    "    threadgroup float4 qs[G][HD / 4];\n"
    "    threadgroup float ps[NSG][G][32];   // this tile's probabilities, shared inside the simdgroup\n"
    "    threadgroup uint rows[NSG][32];     // this tile's K/V row offsets\n"
    "    threadgroup float red[NSG][G][HD];  // per-simdgroup accumulators for the final merge\n"
    "    threadgroup float2 ml[NSG][G];      // per-simdgroup (max, sum)\n"
    "\n"
    "    const mllm__attn_seq sq = seqs[tg.z];\n"
    "    const uint n_ctx = uint(sq.pos0 + sq.n), c0 = tg.x * MLLM__ATTN_CHUNK;\n"
    "    if (c0 >= n_ctx) return;            // uniform: this sequence has fewer chunks\n"
    "    const uint c1 = min(c0 + MLLM__ATTN_CHUNK, n_ctx);\n"
    "    const uint group = a.n_head / a.n_head_kv, nslice = (group + G - 1) / G;\n"
    "    const uint kvh = tg.y / nslice, g0 = (tg.y % nslice) * G, ng = min(uint(G), group - g0);\n"
    "    const uint hq0 = kvh * group + g0;  // first query head of this threadgroup\n"
    "    device const int *table = tables + sq.blocks;\n"
    "    device const float *qrow = q + ((ulong)(sq.first + sq.n - 1) * a.n_head + hq0) * HD;\n"
    "\n"
    "    for (uint e = tid; e < ng * HD; e += NT) ((threadgroup float *)qs)[e] = float(half(qrow[e]));   // as the CPU\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "\n"
    "    float m[G], l[G], acc[G][DPL];      // l: this lane's share of the sum (the max is simdgroup-uniform)\n"
    "    for (int g = 0; g < G; g++) {\n"
    "        m[g] = NEG_BIG;\n"
    "        l[g] = 0.0f;\n"
    "        for (int i = 0; i < DPL; i++) acc[g][i] = 0.0f;\n"
    "    }\n"
    "    for (uint t0 = c0 + 32 * sg; t0 < c1; t0 += 32 * NSG) {   // uniform per simdgroup\n"
    "        const uint p = t0 + lane;\n"
    "        const bool ok = p < c1;\n"
    "        const uint row = ok ? kv_row(table, p, kvh, a) : 0;\n"
    "        rows[sg][lane] = row;\n"
    "        float s[G];\n"
    "        for (int g = 0; g < G; g++) s[g] = 0.0f;\n"
    "        device const packed_half4 *kr = (device const packed_half4 *)(kp + row);\n"
    "        for (int d4 = 0; d4 < HD / 4; d4++) {\n"
    "            const float4 kk = float4(half4(kr[d4]));\n"
    "            for (int g = 0; g < G; g++)\n"
    "                if (uint(g) < ng) s[g] += dot(qs[g][d4], kk);\n"
    "        }\n"
    "        for (int g = 0; g < G; g++) {\n"
    "            if (uint(g) >= ng) break;\n"
    "            const float sc = ok ? a.scale * s[g] : NEG_BIG;\n"
    "            const float mn = max(m[g], simd_max(sc));   // finite: lane 0 is always in range\n"
    "            const float corr = exp(m[g] - mn), pr = exp(sc - mn);\n"
    "            l[g] = l[g] * corr + pr;\n"
    "            for (int i = 0; i < DPL; i++) acc[g][i] *= corr;\n"
    "            m[g] = mn;\n"
    "            ps[sg][g][lane] = pr;\n"
    "        }\n"
    "        simdgroup_barrier(mem_flags::mem_threadgroup);    // ps, rows complete for the simdgroup\n"
    "        const uint nv = min(32u, c1 - t0);\n"
    "        for (uint j = 0; j < nv; j++) {\n"
    "            device const half *vr = vp + rows[sg][j] + DPL * lane;\n"
    "            float vv[DPL];\n"
    "            for (int i = 0; i < DPL; i++) vv[i] = float(vr[i]);\n"
    "            for (int g = 0; g < G; g++)\n"
    "                if (uint(g) < ng)\n"
    "                    for (int i = 0; i < DPL; i++) acc[g][i] += ps[sg][g][j] * vv[i];\n"
    "        }\n"
    "        simdgroup_barrier(mem_flags::mem_threadgroup);    // read before the next tile overwrites\n"
    "    }\n"
    "\n"
    "    // Merge the simdgroups (one with no tile has max NEG_BIG and weighs 0), write this chunk's partials.\n"
    "    for (int g = 0; g < G; g++) {\n"
    "        if (uint(g) >= ng) break;\n"
    "        const float lsum = simd_sum(l[g]);\n"
    "        if (lane == 0) ml[sg][g] = float2(m[g], lsum);\n"
    "        for (int i = 0; i < DPL; i++) red[sg][g][DPL * lane + i] = acc[g][i];\n"
    "    }\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    for (uint e = tid; e < ng * HD; e += NT) {\n"
    "        const uint g = e / HD, d = e % HD;\n"
    "        float mx = NEG_BIG;\n"
    "        for (int i = 0; i < NSG; i++) mx = max(mx, ml[i][g].x);\n"
    "        float sum = 0.0f, o = 0.0f;\n"
    "        for (int i = 0; i < NSG; i++) {\n"
    "            const float w = exp(ml[i][g].x - mx);\n"
    "            sum += w * ml[i][g].y;\n"
    "            o += w * red[i][g][d];\n"
    "        }\n"
    "        device float *pp = part + ((ulong)(tg.z * a.n_head + hq0 + g) * a.n_chunks + tg.x) * (HD + 2);\n"
    "        if (d == 0) { pp[0] = mx; pp[1] = sum; }\n"
    "        pp[2 + d] = o;\n"
    "    }\n"
    "}\n"
    "\n"
    "// Merges a sequence's chunk partials: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c.\n"
    "// Grid (n_head, n_seqs), head_dim threads (one output element each).\n"
    "kernel void attn_reduce(device float *out [[buffer(5)]], device const float *part [[buffer(6)]],\n"
    "                        device const mllm__attn_seq *seqs [[buffer(7)]], constant mllm__attn_args &a [[buffer(10)]],\n"
    "                        uint2 tg [[threadgroup_position_in_grid]], ushort d [[thread_index_in_threadgroup]]) {\n"
    "    const mllm__attn_seq sq = seqs[tg.y];\n"
    "    const uint hd = a.head_dim, nc = (uint(sq.pos0 + sq.n) + MLLM__ATTN_CHUNK - 1) / MLLM__ATTN_CHUNK;\n"
    "    device const float *pp = part + (ulong)(tg.y * a.n_head + tg.x) * a.n_chunks * (hd + 2);\n"
    "    float mx = NEG_BIG;\n"
    "    for (uint c = 0; c < nc; c++) mx = max(mx, pp[c * (hd + 2)]);\n"
    "    float sum = 0.0f, o = 0.0f;\n"
    "    for (uint c = 0; c < nc; c++) {\n"
    "        const float w = exp(pp[c * (hd + 2)] - mx);\n"
    "        sum += w * pp[c * (hd + 2) + 1];\n"
    "        o += w * pp[c * (hd + 2) + 2 + d];\n"
    "    }\n"
    "    out[((ulong)(sq.first + sq.n - 1) * a.n_head + tg.x) * hd + d] = o / sum;\n"
    "}\n"
    "\n"
    "// ---------------------------------------------------------------- prefill: flash attention\n"
    "// Grid (ceil(max n / BQ), n_head, n_seqs), NT threads.  A threadgroup takes BQ queries of one head;\n"
    "// simdgroup sg owns query rows [8 sg, 8 sg + 8) and keeps Q (8 x HD) and O (8 x HD) as 8x8\n"
    "// simdgroup matrices.  Per key tile of BK positions (staged once in threadgroup memory, f16 -> f32):\n"
    "// S = Q K^T, online softmax by rows (4 lanes per row), O = O * corr + P V.  Causal mask: key position\n"
    "// <= query position; key tiles stop at the last query of the tile.\n"
    "METAL_FUNC uint frag_row(ushort lane) { return ((lane >> 4) & 1) * 4 + ((lane >> 1) & 3); }   // Apple's 8x8 layout\n"
    "\n"
    "template <int HD>\n"
    "kernel void attn_prefill(device const float *q [[buffer(0)]], device const half *kp [[buffer(3)]],\n"
    "                         device const half *vp [[buffer(4)]], device float *out [[buffer(5)]],\n"
    "                         device const mllm__attn_seq *seqs [[buffer(7)]], device const int *tables [[buffer(9)]],\n"
    "                         constant mllm__attn_args &a [[buffer(10)]], uint3 tg [[threadgroup_position_in_grid]],\n"
    "                         ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],\n"
    "                         ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    constexpr int BQ = MLLM__ATTN_BQ, BK = 2048 / HD;   // BK keys per tile: K + V tiles stay at 16 KiB\n"
    "    constexpr int LD = HD + 4;                          // padded rows: fewer bank conflicts\n"
    "    constexpr int CPL = BK / 4;                         // score columns per lane (4 lanes per row)\n"
    "    constexpr int KV4 = BK * LD / 2;                    // float4s of the K and V tiles together\n"
    "    threadgroup float4 kvbuf[KV4];                      // K tile, V tile; also Q and O staging (BQ x LD)\n"
    "    threadgroup float ss[NSG][8][BK];                   // per simdgroup: scores, then probabilities\n"
    "    threadgroup float rs[NSG][8];                       // per simdgroup row: rescale factor, then 1 / sum\n"
    "    threadgroup float(*Ks)[LD] = (threadgroup float(*)[LD])kvbuf;\n"
    "    threadgroup float(*Vs)[LD] = Ks + BK;\n"
    "    threadgroup float(*Qs)[LD] = Ks;\n"
    "\n"
    "    const mllm__attn_seq sq = seqs[tg.z];\n"
    "    const uint q0 = tg.x * BQ;\n"
    "    if (q0 >= uint(sq.n)) return;       // uniform: a shorter sequence\n"
    "    const uint hq = tg.y, kvh = hq / (a.n_head / a.n_head_kv);\n"
    "    const uint nq = min(uint(BQ), uint(sq.n) - q0), kend = uint(sq.pos0) + q0 + nq;   // keys [0, kend)\n"
    "    device const int *table = tables + sq.blocks;\n"
    "\n"
    "    for (uint e = tid; e < BQ * HD; e += NT) {\n"
    "        const uint r = e / HD, d = e % HD;\n"
    "        Qs[r][d] = r < nq ? float(half(q[((ulong)(sq.first + q0 + r) * a.n_head + hq) * HD + d])) : 0.0f;\n"
    "    }\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    simdgroup_matrix<float, 8, 8> qm[HD / 8], om[HD / 8];\n"
    "    for (int k = 0; k < HD / 8; k++) {\n"
    "        simdgroup_load(qm[k], &Qs[8 * sg][8 * k], LD);\n"
    "        om[k] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);\n"
    "    }\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);   // Q read before the K/V tiles overwrite it\n"
    "\n"
    "    // This lane's softmax row and columns; padding rows act as the tile's last query (never stored).\n"
    "    const uint r = lane / 4, cq = lane % 4;\n"
    "    const uint qpos = min(uint(sq.pos0) + q0 + 8 * sg + r, kend - 1);\n"
    "    float m = NEG_BIG, l = 0.0f;      // l: this lane's share of the row sum\n"
    "    for (uint k0 = 0; k0 < kend; k0 += BK) {\n"
    "        for (uint e = 4 * tid; e < BK * HD; e += 4 * NT) {   // zero past kend: P = 0 there, V must not be NaN\n"
    "            const uint j = e / HD, d = e % HD, p = k0 + j;\n"
    "            float4 kk = 0.0f, vv = 0.0f;\n"
    "            if (p < kend) {\n"
    "                const uint o = kv_row(table, p, kvh, a) + d;\n"
    "                kk = float4(half4(*(device const packed_half4 *)(kp + o)));\n"
    "                vv = float4(half4(*(device const packed_half4 *)(vp + o)));\n"
    "            }\n"
    "            *(threadgroup float4 *)&Ks[j][d] = kk;\n"
    "            *(threadgroup float4 *)&Vs[j][d] = vv;\n"
    "        }\n"
    "        threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "\n"
    "        for (int jb = 0; jb < BK / 8; jb++) {             // S = Q K^T, 8 keys at a time\n"
    "            simdgroup_matrix<float, 8, 8> s = make_filled_simdgroup_matrix<float, 8, 8>(0.0f), kt;\n"
    "            for (int k = 0; k < HD / 8; k++) {\n"
    "                simdgroup_load(kt, &Ks[8 * jb][8 * k], LD, ulong2(0, 0), true);\n"
    "                simdgroup_multiply_accumulate(s, qm[k], kt, s);\n"
    "            }\n"
    "            simdgroup_store(s, &ss[sg][0][8 * jb], BK);\n"
    "        }\n"
    "        simdgroup_barrier(mem_flags::mem_threadgroup);\n"
    "\n"
    "        float mx = NEG_BIG;\n"
    "        for (int c = 0; c < CPL; c++) {\n"
    "            const uint col = cq * CPL + c;\n"
    "            mx = max(mx, k0 + col <= qpos ? a.scale * ss[sg][r][col] : NEG_BIG);\n"
    "        }\n"
    "        mx = max(mx, simd_shuffle_xor(mx, 1));\n"
    "        mx = max(mx, simd_shuffle_xor(mx, 2));\n"
    "        const float mn = max(m, mx);      // finite: key 0 is in every row's first tile\n"
    "        float ls = 0.0f;\n"
    "        for (int c = 0; c < CPL; c++) {\n"
    "            const uint col = cq * CPL + c;\n"
    "            const float p = k0 + col <= qpos ? exp(a.scale * ss[sg][r][col] - mn) : 0.0f;\n"
    "            ss[sg][r][col] = p;\n"
    "            ls += p;\n"
    "        }\n"
    "        const float corr = exp(m - mn);\n"
    "        l = l * corr + ls;\n"
    "        m = mn;\n"
    "        if (cq == 0) rs[sg][r] = corr;\n"
    "        simdgroup_barrier(mem_flags::mem_threadgroup);\n"
    "\n"
    "        const float f = rs[sg][frag_row(lane)];          // rescale the rows of O this lane holds\n"
    "        for (int k = 0; k < HD / 8; k++) om[k].thread_elements() *= f;\n"
    "        for (int kb = 0; kb < BK / 8; kb++) {             // O += P V\n"
    "            simdgroup_matrix<float, 8, 8> pm, vm;\n"
    "            simdgroup_load(pm, &ss[sg][0][8 * kb], BK);\n"
    "            for (int k = 0; k < HD / 8; k++) {\n"
    "                simdgroup_load(vm, &Vs[8 * kb][8 * k], LD);\n"
    "                simdgroup_multiply_accumulate(om[k], pm, vm, om[k]);\n"
    "            }\n"
    "        }\n"
    "        threadgroup_barrier(mem_flags::mem_threadgroup);   // tiles, ss and rs read before reuse\n"
    "    }\n"
    "\n"
    "    l += simd_shuffle_xor(l, 1);\n"
    "    l += simd_shuffle_xor(l, 2);\n"
    "    if (cq == 0) rs[sg][r] = 1.0f / l;\n"
    "    threadgroup float(*Os)[LD] = Ks + 8 * sg;            // this simdgroup's 8 rows of staging\n"
    "    for (int k = 0; k < HD / 8; k++) simdgroup_store(om[k], &Os[0][8 * k], LD);\n"
    "    simdgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    for (uint e = lane; e < 8 * HD; e += 32) {\n"
    "        const uint rr = e / HD, d = e % HD, qi = q0 + 8 * sg + rr;\n"
    "        if (qi < uint(sq.n)) out[((ulong)(sq.first + qi) * a.n_head + hq) * HD + d] = Os[rr][d] * rs[sg][rr];\n"
    "    }\n"
    "}\n"
    "\n"
    "#define MLLM_ATTN(D)                                                                                         \\\n"
    "    template [[host_name(\"attn_decode_hd\" #D)]] [[kernel]] void attn_decode<D>(device const float *,         \\\n"
    "        device const half *, device const half *, device float *, device const mllm__attn_seq *,             \\\n"
    "        device const int *, constant mllm__attn_args &, uint3, ushort, ushort, ushort);                      \\\n"
    "    template [[host_name(\"attn_prefill_hd\" #D)]] [[kernel]] void attn_prefill<D>(device const float *,       \\\n"
    "        device const half *, device const half *, device float *, device const mllm__attn_seq *,             \\\n"
    "        device const int *, constant mllm__attn_args &, uint3, ushort, ushort, ushort);\n"
    "MLLM_ATTN(64)\n"
    "MLLM_ATTN(128)\n"
    ;
static const char mllm__kernel_elementwise_metal[] = /* kernels/elementwise.metal */
    "// Elementwise ops over n floats: one thread per float4 (packed loads: buffers may start at any\n"
    "// float offset), so threads = ceil(n / 4) in any grouping.\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "// The FFN gate: out = silu(gate) * up, silu(g) = g / (1 + e^-g).\n"
    "kernel void swiglu(device const float *gate [[buffer(0)]], device const float *up [[buffer(1)]],\n"
    "                   device float *out [[buffer(2)]], constant mllm__vec_args &a [[buffer(3)]],\n"
    "                   uint i [[thread_position_in_grid]]) {\n"
    "    if (4 * i + 4 <= a.n) {\n"
    "        const float4 g = float4(((device const packed_float4 *)gate)[i]);\n"
    "        ((device packed_float4 *)out)[i] = g / (1.0f + exp(-g)) * float4(((device const packed_float4 *)up)[i]);\n"
    "    } else {\n"
    "        for (uint k = 4 * i; k < a.n; k++) out[k] = gate[k] / (1.0f + exp(-gate[k])) * up[k];\n"
    "    }\n"
    "}\n"
    "\n"
    "// Residual add: out = a + b (out may alias either input).\n"
    "kernel void add(device const float *x [[buffer(0)]], device const float *y [[buffer(1)]],\n"
    "                device float *out [[buffer(2)]], constant mllm__vec_args &a [[buffer(3)]],\n"
    "                uint i [[thread_position_in_grid]]) {\n"
    "    if (4 * i + 4 <= a.n) {\n"
    "        ((device packed_float4 *)out)[i] = float4(((device const packed_float4 *)x)[i]) +\n"
    "                                           float4(((device const packed_float4 *)y)[i]);\n"
    "    } else {\n"
    "        for (uint k = 4 * i; k < a.n; k++) out[k] = x[k] + y[k];\n"
    "    }\n"
    "}\n"
    "\n"
    "// Bias broadcast over rows: out[r][c] = x[r][c] + b[c] (qwen2's Q/K/V biases; out may alias x).  One\n"
    "// thread per float: rows need not be float4-aligned.\n"
    "kernel void add_bias(device const float *x [[buffer(0)]], device const float *b [[buffer(1)]],\n"
    "                     device float *out [[buffer(2)]], constant mllm__bias_args &a [[buffer(3)]],\n"
    "                     uint i [[thread_position_in_grid]]) {\n"
    "    if (i < a.n) out[i] = x[i] + b[i % a.cols];\n"
    "}\n"
    ;
static const char mllm__kernel_gemm_metal[] = /* kernels/gemm.metal */
    "// Matrix-matrix products for prefill: Y[m][n] = dot(X[m], W[n]) (+ R[m][n]), X: M x K floats,\n"
    "// W: N rows of K elements of any weight type, dequantized once per tile into threadgroup memory.\n"
    "// A threadgroup computes a BM x BN tile of Y with 4 simdgroups (2 x 2), each owning 16 x 32 of it as\n"
    "// 2 x 4 simdgroup_matrix 8x8 accumulators; the K loop is gemm_tile (common.h), shared with moe.metal.\n"
    "// Edges (M, N not tile multiples, float-type K not a multiple of 16) are zero-filled in the tiles and\n"
    "// masked on the store, so any shape is correct.\n"
    "// Grid: threadgroups (ceil(N / BN), ceil(M / BM)), MLLM__GEMM_THREADS threads each.\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "#define BM MLLM__GEMM_BM\n"
    "#define BN MLLM__GEMM_BN\n"
    "enum { XS4 = BM * MLLM__GEMM_BKP / 4, WS4 = BN * MLLM__GEMM_BKP / 4, YS4 = BM * BN / 4 };   // tile sizes in float4\n"
    "\n"
    "template <typename B>\n"
    "METAL_FUNC void gemm_impl(device const uchar *w, device const float *x, device float *y, device const float *r,\n"
    "                          constant mllm__mat_args &a, threadgroup float (*Xs)[MLLM__GEMM_BKP],\n"
    "                          threadgroup float (*Ws)[MLLM__GEMM_BKP], threadgroup float (*Ys)[BN], uint2 tg, ushort tid,\n"
    "                          ushort sg) {\n"
    "    const uint M = a.M, N = a.N;\n"
    "    const uint m0 = tg.y * BM, n0 = tg.x * BN;\n"
    "    const uint sm = sg / 2, sn = sg % 2;      // this simdgroup's 16 x 32 part of the tile\n"
    "    const uint xm = m0 + tid / 4;             // the X row this thread stages (gemm_tile)\n"
    "    simdgroup_matrix<float, 8, 8> acc[8];\n"
    "    gemm_tile<B>(w, N, a.K, a.row_bytes, n0, xm < M ? x + (ulong)xm * a.K : nullptr, Xs, Ws, acc, tid, sg);\n"
    "\n"
    "    // Whole tile and nothing to add: straight to device memory.  Otherwise through Ys, masked.\n"
    "    // (The condition is uniform over the threadgroup, so the barrier below is reached by all or none.)\n"
    "    if (!r && m0 + BM <= M && n0 + BN <= N) {\n"
    "        for (int i = 0; i < 2; i++)\n"
    "            for (int j = 0; j < 4; j++)\n"
    "                simdgroup_store(acc[4 * i + j], y + (ulong)(m0 + 16 * sm + 8 * i) * N + n0 + 32 * sn + 8 * j, N);\n"
    "        return;\n"
    "    }\n"
    "    for (int i = 0; i < 2; i++)\n"
    "        for (int j = 0; j < 4; j++) simdgroup_store(acc[4 * i + j], &Ys[16 * sm + 8 * i][32 * sn + 8 * j], BN);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    for (uint e = tid; e < BM * BN; e += MLLM__GEMM_THREADS) {\n"
    "        const uint m = m0 + e / BN, n = n0 + e % BN;\n"
    "        if (m < M && n < N) {\n"
    "            const ulong o = (ulong)m * N + n;\n"
    "            y[o] = r ? Ys[e / BN][e % BN] + r[o] : Ys[e / BN][e % BN];\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n"
    "template <typename B>\n"
    "kernel void gemm(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],\n"
    "                 device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],\n"
    "                 uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],\n"
    "                 ushort sg [[simdgroup_index_in_threadgroup]]) {\n"
    "    threadgroup float4 Xs[XS4];   // float4 arrays: 16-byte aligned for the float4 stores\n"
    "    threadgroup float4 Ws[WS4];\n"
    "    threadgroup float4 Ys[YS4];\n"
    "    gemm_impl<B>(w, x, y, nullptr, a, (threadgroup float(*)[MLLM__GEMM_BKP])Xs, (threadgroup float(*)[MLLM__GEMM_BKP])Ws,\n"
    "                 (threadgroup float(*)[BN])Ys, tg, tid, sg);\n"
    "}\n"
    "\n"
    "// Fused with the residual add: Y = X W^T + R (Y may alias R).\n"
    "template <typename B>\n"
    "kernel void gemm_add(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],\n"
    "                     device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],\n"
    "                     device const float *r [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],\n"
    "                     ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]]) {\n"
    "    threadgroup float4 Xs[XS4];   // float4 arrays: 16-byte aligned for the float4 stores\n"
    "    threadgroup float4 Ws[WS4];\n"
    "    threadgroup float4 Ys[YS4];\n"
    "    gemm_impl<B>(w, x, y, r, a, (threadgroup float(*)[MLLM__GEMM_BKP])Xs, (threadgroup float(*)[MLLM__GEMM_BKP])Ws,\n"
    "                 (threadgroup float(*)[BN])Ys, tg, tid, sg);\n"
    "}\n"
    "\n"
    "#define MLLM_GEMM(name, TYPE)                                                                            \\\n"
    "    template [[host_name(\"gemm_\" #name)]] [[kernel]] void gemm<blk_##name>(device const uchar *,         \\\n"
    "        device const float *, device float *, constant mllm__mat_args &, uint2, ushort, ushort);         \\\n"
    "    template [[host_name(\"gemm_add_\" #name)]] [[kernel]] void gemm_add<blk_##name>(device const uchar *, \\\n"
    "        device const float *, device float *, constant mllm__mat_args &, device const float *, uint2,    \\\n"
    "        ushort, ushort);\n"
    "MLLM__GPU_TYPES(MLLM_GEMM)\n"
    ;
static const char mllm__kernel_gemv_metal[] = /* kernels/gemv.metal */
    "// Matrix-vector products for decode: y[m][n] = dot(W[n], x[m]) (+ r[m][n] for the fused residual add).\n"
    "// Written once over the per-type block loaders of common.h; the inner loop is gemv_rows (common.h),\n"
    "// shared with the grouped expert products of moe.metal.  Each simdgroup owns MLLM__GEMV_ROWS weight rows.\n"
    "// Grid: threadgroups (ceil(N / (NSG * ROWS)), M), 32 * MLLM__GEMV_NSG threads each.\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "template <typename B>\n"
    "kernel void gemv(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],\n"
    "                 device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],\n"
    "                 uint2 tg [[threadgroup_position_in_grid]], ushort sg [[simdgroup_index_in_threadgroup]],\n"
    "                 ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    gemv_rows<B>(w, x + (ulong)tg.y * a.K, y + (ulong)tg.y * a.N, nullptr, a.K, a.N, a.row_bytes, tg.x, sg, lane);\n"
    "}\n"
    "\n"
    "// Fused with the residual add that follows the attention output and FFN down projections:\n"
    "// y = W x + r (y may alias r).\n"
    "template <typename B>\n"
    "kernel void gemv_add(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],\n"
    "                     device float *y [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],\n"
    "                     device const float *r [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],\n"
    "                     ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    gemv_rows<B>(w, x + (ulong)tg.y * a.K, y + (ulong)tg.y * a.N, r + (ulong)tg.y * a.N, a.K, a.N, a.row_bytes,\n"
    "                  tg.x, sg, lane);\n"
    "}\n"
    "\n"
    "#define MLLM_GEMV(name, TYPE)                                                                            \\\n"
    "    template [[host_name(\"gemv_\" #name)]] [[kernel]] void gemv<blk_##name>(device const uchar *,         \\\n"
    "        device const float *, device float *, constant mllm__mat_args &, uint2, ushort, ushort);         \\\n"
    "    template [[host_name(\"gemv_add_\" #name)]] [[kernel]] void gemv_add<blk_##name>(device const uchar *, \\\n"
    "        device const float *, device float *, constant mllm__mat_args &, device const float *, uint2,    \\\n"
    "        ushort, ushort);\n"
    "MLLM__GPU_TYPES(MLLM_GEMV)\n"
    ;
static const char mllm__kernel_get_rows_metal[] = /* kernels/get_rows.metal */
    "// Embedding lookup: out[t] = dequantized row ids[t] of W, for every weight type.  One threadgroup per\n"
    "// id, its threads take 16-element chunks.  An id outside [0, N) yields a zero row rather than a read\n"
    "// outside W (the host validates tokens; this keeps a bad one from faulting the GPU).\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "template <typename B>\n"
    "kernel void get_rows(device const uchar *w [[buffer(0)]], device const int *ids [[buffer(1)]],\n"
    "                     device float *out [[buffer(2)]], constant mllm__mat_args &a [[buffer(3)]],\n"
    "                     uint t [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],\n"
    "                     ushort ntg [[threads_per_threadgroup]]) {\n"
    "    const int id = ids[t];\n"
    "    const bool ok = id >= 0 && uint(id) < a.N;\n"
    "    device const uchar *row = w + (ulong)(ok ? id : 0) * a.row_bytes;\n"
    "    device float *o = out + (ulong)t * a.K;\n"
    "    device packed_float4 *o4 = (device packed_float4 *)o;\n"
    "    const uint nch = a.K / 16;\n"
    "    for (uint c = tid; c < nch; c += ntg) {\n"
    "        float4 v[4];\n"
    "        B::chunk(row, c, v);\n"
    "        for (int i = 0; i < 4; i++) o4[4 * c + i] = ok ? v[i] : float4(0.0f);\n"
    "    }\n"
    "    for (uint k = 16 * nch + tid; k < a.K; k += ntg) o[k] = ok ? B::at(row, k) : 0.0f;\n"
    "}\n"
    "\n"
    "#define MLLM_GET_ROWS(name, TYPE)                                                                        \\\n"
    "    template [[host_name(\"get_rows_\" #name)]] [[kernel]] void get_rows<blk_##name>(device const uchar *, \\\n"
    "        device const int *, device float *, constant mllm__mat_args &, uint, ushort, ushort);\n"
    "MLLM__GPU_TYPES(MLLM_GET_ROWS)\n"
    ;
static const char mllm__kernel_moe_metal[] = /* kernels/moe.metal */
    "// Mixture of experts: routing, grouping by expert and the grouped expert products, each a single\n"
    "// dispatch whatever n_expert is and however many experts are active (see mllm__moe_* in common.h).\n"
    "// Assigned row r = token * n_used + slot; sel[r] is its expert, wts[r] its routing weight.\n"
    "// The products reuse the inner loops of gemv.metal / gemm.metal (gemv_rows, gemm_tile in common.h),\n"
    "// so expert weights may be of every type the block loaders read.\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "// Top-k of one token's router logits (lower id wins ties, as the CPU path), then the softmax over the\n"
    "// selected k (= softmax over all, renormalised).  One simdgroup per token; lane l owns experts\n"
    "// l, l + 32, ... and keeps which of them are taken in a bit mask.\n"
    "// Grid: n_tokens threadgroups of 32 threads.\n"
    "kernel void moe_route(device const float *logits [[buffer(0)]], device int *sel [[buffer(1)]],\n"
    "                      device float *wts [[buffer(2)]], constant mllm__moe_args &a [[buffer(3)]],\n"
    "                      uint t [[threadgroup_position_in_grid]], ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    const uint NONE = 0xffffffffu;\n"
    "    device const float *l = logits + (ulong)t * a.n_expert;\n"
    "    uint taken = 0;\n"
    "    float val[MLLM__MOE_MAX_USED];\n"
    "    for (uint k = 0; k < a.n_used; k++) {\n"
    "        float bv = -INFINITY;\n"
    "        uint bi = NONE;\n"
    "        for (uint j = 0, e = lane; e < a.n_expert; j++, e += 32) {\n"
    "            const float v = l[e];\n"
    "            // ids grow with j, so strict > keeps the lower id of equal logits\n"
    "            if (!((taken >> j) & 1u) && (bi == NONE || v > bv)) { bv = v; bi = e; }\n"
    "        }\n"
    "        const float mv = simd_max(bi == NONE ? -INFINITY : bv);\n"
    "        const uint win = simd_min(bi != NONE && bv == mv ? bi : NONE);   // lowest id among the best\n"
    "        if (win % 32 == lane) taken |= 1u << (win / 32);\n"
    "        val[k] = mv;\n"
    "        if (lane == 0) sel[(ulong)t * a.n_used + k] = int(win);\n"
    "    }\n"
    "    if (lane == 0) {\n"
    "        float s = 0.0f;   // val[0] is the largest selected logit\n"
    "        for (uint k = 0; k < a.n_used; k++) s += exp(val[k] - val[0]);\n"
    "        for (uint k = 0; k < a.n_used; k++) wts[(ulong)t * a.n_used + k] = exp(val[k] - val[0]) / s;\n"
    "    }\n"
    "}\n"
    "\n"
    "// Counting sort of the assigned rows by expert, and the gemm tile list (layout: MLLM__MOE_MAP_* in\n"
    "// common.h).  One threadgroup; thread i owns experts i, i + MLLM__MOE_MAP_THREADS, ... and scans sel in\n"
    "// order, so each expert's rows come out in increasing r: the output does not depend on the schedule.\n"
    "// Grid: 1 threadgroup of MLLM__MOE_MAP_THREADS threads.\n"
    "kernel void moe_map(device const int *sel [[buffer(0)]], device uint *map [[buffer(1)]],\n"
    "                    constant mllm__moe_args &a [[buffer(2)]], ushort tid [[thread_index_in_threadgroup]]) {\n"
    "    threadgroup uint first[MLLM__MOE_MAX_EXPERT + 1];   // per expert: counts, then first sorted row\n"
    "    threadgroup uint tile0[MLLM__MOE_MAX_EXPERT + 1];   // per expert: first tile\n"
    "    const uint NE = a.n_expert, TK = a.n_tokens * a.n_used, BMR = MLLM__GEMM_BM;\n"
    "    for (uint e = tid; e < NE; e += MLLM__MOE_MAP_THREADS) {\n"
    "        uint c = 0;\n"
    "        for (uint r = 0; r < TK; r++) c += sel[r] == int(e);\n"
    "        first[e] = c;\n"
    "    }\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (tid == 0) {   // exclusive scans over <= 1024 experts: serial is short next to the products\n"
    "        uint s = 0, st = 0;\n"
    "        for (uint e = 0; e < NE; e++) {\n"
    "            const uint c = first[e];\n"
    "            first[e] = s;\n"
    "            tile0[e] = st;\n"
    "            s += c;\n"
    "            st += (c + BMR - 1) / BMR;\n"
    "        }\n"
    "        first[NE] = s;\n"
    "        tile0[NE] = st;\n"
    "        map[MLLM__MOE_MAP_ROWS(NE) - 1] = s;\n"
    "        map[MLLM__MOE_MAP_NTILES(NE, TK)] = st;\n"
    "    }\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    device uint *rows = map + MLLM__MOE_MAP_ROWS(NE), *tiles = map + MLLM__MOE_MAP_TILES(NE, TK);\n"
    "    for (uint e = tid; e < NE; e += MLLM__MOE_MAP_THREADS) {\n"
    "        uint p = first[e];\n"
    "        const uint end = first[e + 1];\n"
    "        map[e] = p;\n"
    "        for (uint q = p, i = tile0[e]; q < end; q += BMR, i++) {\n"
    "            tiles[2 * i] = e;\n"
    "            tiles[2 * i + 1] = q;\n"
    "        }\n"
    "        for (uint r = 0; r < TK && p < end; r++)\n"
    "            if (sel[r] == int(e)) rows[p++] = r;\n"
    "    }\n"
    "}\n"
    "\n"
    "// Grouped GEMV (decode): every assigned row r against its expert's matrix, all experts in one grid.\n"
    "// Y row r = W[sel[r]] X row (gather ? r / n_used : r).\n"
    "// Grid: threadgroups (ceil(N / (NSG * ROWS)), n_rows), 32 * MLLM__GEMV_NSG threads each.\n"
    "template <typename B>\n"
    "kernel void moe_gemv(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],\n"
    "                     device float *y [[buffer(2)]], constant mllm__moe_mat_args &a [[buffer(3)]],\n"
    "                     device const int *sel [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],\n"
    "                     ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    const uint r = tg.y;\n"
    "    device const uchar *we = w + (ulong)sel[r] * a.N * a.row_bytes;\n"
    "    const uint xr = a.gather ? r / a.n_used : r;\n"
    "    gemv_rows<B>(we, x + (ulong)xr * a.K, y + (ulong)r * a.N, nullptr, a.K, a.N, a.row_bytes, tg.x, sg, lane);\n"
    "}\n"
    "\n"
    "// Grouped GEMM (prefill): tile row ty is moe_map's tile ty, up to BM sorted rows of one expert; the grid\n"
    "// is an upper bound (MLLM__MOE_MAX_TILES) and tiles past the count leave at once.\n"
    "// gather: X row of sorted row p is token rows[p] / n_used, Y row is p.  Otherwise X row p, Y row rows[p].\n"
    "// Grid: threadgroups (ceil(N / BN), MLLM__MOE_MAX_TILES(n_expert, n_rows)), MLLM__GEMM_THREADS each.\n"
    "enum { MOE_XS4 = MLLM__GEMM_BM * MLLM__GEMM_BKP / 4, MOE_WS4 = MLLM__GEMM_BN * MLLM__GEMM_BKP / 4,\n"
    "       MOE_YS4 = MLLM__GEMM_BM * MLLM__GEMM_BN / 4 };\n"
    "template <typename B>\n"
    "kernel void moe_gemm(device const uchar *w [[buffer(0)]], device const float *x [[buffer(1)]],\n"
    "                     device float *y [[buffer(2)]], constant mllm__moe_mat_args &a [[buffer(3)]],\n"
    "                     device const uint *map [[buffer(4)]], uint2 tg [[threadgroup_position_in_grid]],\n"
    "                     ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]]) {\n"
    "    threadgroup float4 Xs[MOE_XS4];   // float4 arrays: 16-byte aligned for the float4 stores\n"
    "    threadgroup float4 Ws[MOE_WS4];\n"
    "    threadgroup float4 Ys[MOE_YS4];\n"
    "    const uint NE = a.n_expert, TK = a.n_rows, TM = MLLM__GEMM_BM, TN = MLLM__GEMM_BN;\n"
    "    if (tg.y >= map[MLLM__MOE_MAP_NTILES(NE, TK)]) return;   // uniform over the threadgroup\n"
    "    device const uint *rows = map + MLLM__MOE_MAP_ROWS(NE), *tile = map + MLLM__MOE_MAP_TILES(NE, TK) + 2 * tg.y;\n"
    "    const uint e = tile[0], p0 = tile[1], pn = min(p0 + TM, map[e + 1]);   // sorted rows [p0, pn)\n"
    "    const uint n0 = tg.x * TN, p = p0 + tid / 4;                            // gemm_tile: tid stages row tid / 4\n"
    "    device const float *xrow = p < pn ? x + (ulong)(a.gather ? rows[p] / a.n_used : p) * a.K : nullptr;\n"
    "    simdgroup_matrix<float, 8, 8> acc[8];\n"
    "    gemm_tile<B>(w + (ulong)e * a.N * a.row_bytes, a.N, a.K, a.row_bytes, n0, xrow,\n"
    "                 (threadgroup float(*)[MLLM__GEMM_BKP])Xs, (threadgroup float(*)[MLLM__GEMM_BKP])Ws, acc, tid, sg);\n"
    "\n"
    "    // Rows are scattered (down) or the tile is partial: always through Ys, masked.\n"
    "    threadgroup float(*Yt)[MLLM__GEMM_BN] = (threadgroup float(*)[MLLM__GEMM_BN])Ys;\n"
    "    const uint sm = sg / 2, sn = sg % 2;\n"
    "    for (int i = 0; i < 2; i++)\n"
    "        for (int j = 0; j < 4; j++) simdgroup_store(acc[4 * i + j], &Yt[16 * sm + 8 * i][32 * sn + 8 * j], TN);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    for (uint i = tid; i < TM * TN; i += MLLM__GEMM_THREADS) {\n"
    "        const uint q = p0 + i / TN, n = n0 + i % TN;\n"
    "        if (q < pn && n < a.N) y[(ulong)(a.gather ? q : rows[q]) * a.N + n] = Yt[i / TN][i % TN];\n"
    "    }\n"
    "}\n"
    "\n"
    "// out[t] = sum over slots k, in order, of wts[t, k] * y[t * n_used + k] (rows of n floats).\n"
    "// Grid: threadgroups (ceil(n / (4 * MLLM__MOE_COMBINE_THREADS)), n_tokens), MLLM__MOE_COMBINE_THREADS each.\n"
    "kernel void moe_combine(device const float *y [[buffer(0)]], device const float *wts [[buffer(1)]],\n"
    "                        device float *out [[buffer(2)]], constant mllm__moe_args &a [[buffer(3)]],\n"
    "                        uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]]) {\n"
    "    const uint t = tg.y, d = 4 * (tg.x * MLLM__MOE_COMBINE_THREADS + tid), n = a.n;\n"
    "    if (d >= n) return;\n"
    "    device const float *yt = y + (ulong)t * a.n_used * n;\n"
    "    device const float *wt = wts + (ulong)t * a.n_used;\n"
    "    device float *o = out + (ulong)t * n;\n"
    "    if (d + 4 <= n) {\n"
    "        float4 s = 0.0f;\n"
    "        for (uint k = 0; k < a.n_used; k++) s += wt[k] * float4(*(device const packed_float4 *)(yt + (ulong)k * n + d));\n"
    "        *(device packed_float4 *)(o + d) = s;\n"
    "    } else {\n"
    "        for (uint i = d; i < n; i++) {\n"
    "            float s = 0.0f;\n"
    "            for (uint k = 0; k < a.n_used; k++) s += wt[k] * yt[(ulong)k * n + i];\n"
    "            o[i] = s;\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n"
    "#define MLLM_MOE_MAT(name, TYPE)                                                                         \\\n"
    "    template [[host_name(\"moe_gemv_\" #name)]] [[kernel]] void moe_gemv<blk_##name>(device const uchar *, \\\n"
    "        device const float *, device float *, constant mllm__moe_mat_args &, device const int *, uint2,  \\\n"
    "        ushort, ushort);                                                                                 \\\n"
    "    template [[host_name(\"moe_gemm_\" #name)]] [[kernel]] void moe_gemm<blk_##name>(device const uchar *, \\\n"
    "        device const float *, device float *, constant mllm__moe_mat_args &, device const uint *, uint2, \\\n"
    "        ushort, ushort);\n"
    "MLLM__GPU_TYPES(MLLM_MOE_MAT)\n"
    ;
static const char mllm__kernel_norm_metal[] = /* kernels/norm.metal */
    "// RMSNorm over rows: y = x / sqrt(mean(x^2) + eps) [* w].  One threadgroup per row (any multiple of\n"
    "// 32 threads up to 1024); the sum of squares is one pass of float4 loads, reduced once per row.\n"
    "// (Threadgroup arrays are declared in the kernels themselves, as MSL requires, and passed down.)\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "template <bool MUL>\n"
    "METAL_FUNC void rms_norm_impl(device const float *x, device const float *w, device float *y,\n"
    "                              constant mllm__norm_args &a, threadgroup float *scratch, uint row,\n"
    "                              ushort tid, ushort ntg, ushort sg, ushort lane) {\n"
    "    const uint n = a.n, n4 = n / 4;\n"
    "    device const packed_float4 *x4 = (device const packed_float4 *)(x + (ulong)row * n);\n"
    "    device packed_float4 *y4 = (device packed_float4 *)(y + (ulong)row * n);\n"
    "    device const packed_float4 *w4 = (device const packed_float4 *)w;\n"
    "\n"
    "    float ss = 0.0f;\n"
    "    for (uint i = tid; i < n4; i += ntg) {\n"
    "        const float4 v = x4[i];\n"
    "        ss += dot(v, v);\n"
    "    }\n"
    "    for (uint i = 4 * n4 + tid; i < n; i += ntg) ss += x[(ulong)row * n + i] * x[(ulong)row * n + i];\n"
    "    ss = tg_sum(ss, scratch, sg, lane, (ntg + 31) / 32);\n"
    "    const float scale = rsqrt(ss / float(n) + a.eps);\n"
    "\n"
    "    for (uint i = tid; i < n4; i += ntg) {\n"
    "        float4 v = float4(x4[i]) * scale;\n"
    "        if (MUL) v *= float4(w4[i]);\n"
    "        y4[i] = v;\n"
    "    }\n"
    "    for (uint i = 4 * n4 + tid; i < n; i += ntg) {\n"
    "        float v = x[(ulong)row * n + i] * scale;\n"
    "        if (MUL) v *= w[i];\n"
    "        y[(ulong)row * n + i] = v;\n"
    "    }\n"
    "}\n"
    "\n"
    "kernel void rms_norm(device const float *x [[buffer(0)]], device float *y [[buffer(1)]],\n"
    "                     constant mllm__norm_args &a [[buffer(2)]],\n"
    "                     uint row [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],\n"
    "                     ushort ntg [[threads_per_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],\n"
    "                     ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    threadgroup float scratch[32];\n"
    "    rms_norm_impl<false>(x, x, y, a, scratch, row, tid, ntg, sg, lane);\n"
    "}\n"
    "\n"
    "// Fused with the weight multiply (every RMSNorm of a transformer block has one).\n"
    "kernel void rms_norm_mul(device const float *x [[buffer(0)]], device const float *w [[buffer(1)]],\n"
    "                         device float *y [[buffer(2)]], constant mllm__norm_args &a [[buffer(3)]],\n"
    "                         uint row [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],\n"
    "                         ushort ntg [[threads_per_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]],\n"
    "                         ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    threadgroup float scratch[32];\n"
    "    rms_norm_impl<true>(x, w, y, a, scratch, row, tid, ntg, sg, lane);\n"
    "}\n"
    ;
static const char mllm__kernel_rope_metal[] = /* kernels/rope.metal */
    "// Rotary position embedding, in place on x[token][head][head_dim] (tokens a.stride floats apart).\n"
    "// Pair i of the first n_rot dims turns by pos * freq_scale * freq_base^(-2i / n_rot): pairs are\n"
    "// (2i, 2i + 1) for the normal variant (llama) and (i, i + n_rot / 2) for NeoX (qwen2/3).\n"
    "// Grid: threadgroups (n_heads, tokens), any threads per threadgroup; one thread per pair.\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "template <bool NEOX>\n"
    "kernel void rope(device float *x [[buffer(0)]], device const int *pos [[buffer(1)]],\n"
    "                 constant mllm__rope_args &a [[buffer(2)]], uint2 tg [[threadgroup_position_in_grid]],\n"
    "                 ushort tid [[thread_index_in_threadgroup]], ushort2 ntg [[threads_per_threadgroup]]) {\n"
    "    device float *h = x + (ulong)tg.y * a.stride + (ulong)tg.x * a.head_dim;\n"
    "    const float p = float(pos[tg.y]) * a.freq_scale;\n"
    "    const uint half_rot = a.n_rot / 2;\n"
    "    for (uint i = tid; i < half_rot; i += ntg.x) {\n"
    "        // precise:: because the angle reaches thousands of radians at long positions.\n"
    "        const float theta = p * precise::pow(a.freq_base, -float(2 * i) / float(a.n_rot));\n"
    "        const float c = precise::cos(theta), s = precise::sin(theta);\n"
    "        const uint i0 = NEOX ? i : 2 * i, i1 = NEOX ? i + half_rot : 2 * i + 1;\n"
    "        const float x0 = h[i0], x1 = h[i1];\n"
    "        h[i0] = x0 * c - x1 * s;\n"
    "        h[i1] = x0 * s + x1 * c;\n"
    "    }\n"
    "}\n"
    "\n"
    "template [[host_name(\"rope\")]] [[kernel]] void rope<false>(device float *, device const int *,\n"
    "    constant mllm__rope_args &, uint2, ushort, ushort2);\n"
    "template [[host_name(\"rope_neox\")]] [[kernel]] void rope<true>(device float *, device const int *,\n"
    "    constant mllm__rope_args &, uint2, ushort, ushort2);\n"
    ;
static const char mllm__kernel_sample_metal[] = /* kernels/sample.metal */
    "// Token sampling: one threadgroup per sampled row picks one token id under the rule written out above\n"
    "// metalllm.h's mllm__sample (\"The sampling rule\"), so that the CPU and GPU samplers agree token for token.\n"
    "// Instead of sorting the vocabulary, the top-k and top-p cuts are found by radix select over rank keys\n"
    "// (4 bits a pass, histograms of counts or of weights), and the draw walks the kept tokens in id order\n"
    "// with a threadgroup prefix sum.  Every pass recomputes the penalised, scaled logit from the row (cheaper\n"
    "// than a scratch copy for these sizes, and it needs no extra buffer).\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "#define SAMP_NONE 0xffffffffu\n"
    "#define SAMP_KEY_NEG_INF 0x007fffffu   // samp_key(-inf): the smallest key after sanitising\n"
    "\n"
    "// Float bits, so that NaN/inf handling survives fast math: NaN -> -inf, +inf -> FLT_MAX, -0 -> +0.\n"
    "METAL_FUNC float samp_sanitize(float x) {\n"
    "    uint b = as_type<uint>(x);\n"
    "    if ((b & 0x7fffffffu) > 0x7f800000u) b = 0xff800000u;\n"
    "    else if (b == 0x7f800000u) b = 0x7f7fffffu;\n"
    "    else if (b == 0x80000000u) b = 0u;\n"
    "    return as_type<float>(b);\n"
    "}\n"
    "// Rank key: an unsigned int in the order of the (sanitised) float, so \"larger x\" is \"larger key\".\n"
    "METAL_FUNC uint samp_key(float x) {\n"
    "    const uint b = as_type<uint>(x);\n"
    "    return b ^ ((b >> 31) != 0u ? 0xffffffffu : 0x80000000u);\n"
    "}\n"
    "METAL_FUNC float samp_unkey(uint k) { return as_type<float>(k ^ ((k >> 31) != 0u ? 0x80000000u : 0xffffffffu)); }\n"
    "\n"
    "// Weight relative to the best candidate; clamped so fast math never sees exp(-inf); precise, to stay\n"
    "// close to the CPU's expf at the cuts.\n"
    "METAL_FUNC float samp_w(uint key, float x, float xmax) {\n"
    "    return key == SAMP_KEY_NEG_INF ? 0.0f : precise::exp(max(x - xmax, -87.0f));\n"
    "}\n"
    "\n"
    "// Philox4x32-10 as mllm__philox: the uniform number `counter` of the stream `seed` (24 bits).\n"
    "METAL_FUNC float samp_uniform(uint seed_lo, uint seed_hi, uint ctr_lo, uint ctr_hi) {\n"
    "    uint c0 = ctr_lo, c1 = ctr_hi, c2 = 0, c3 = 0, k0 = seed_lo, k1 = seed_hi;\n"
    "    for (int r = 0; r < 10; r++) {\n"
    "        const ulong p0 = ulong(0xD2511F53u) * c0, p1 = ulong(0xCD9E8D57u) * c2;\n"
    "        const uint n0 = uint(p1 >> 32) ^ c1 ^ k0, n2 = uint(p0 >> 32) ^ c3 ^ k1;\n"
    "        c1 = uint(p1);\n"
    "        c3 = uint(p0);\n"
    "        c0 = n0;\n"
    "        c2 = n2;\n"
    "        k0 += 0x9E3779B9u;\n"
    "        k1 += 0xBB67AE85u;\n"
    "    }\n"
    "    return float(c0 >> 8) * (1.0f / 16777216.0f);\n"
    "}\n"
    "\n"
    "// What every pass needs to rebuild a candidate's value from the row.\n"
    "struct samp_row {\n"
    "    device const float *logits;\n"
    "    device const ushort *counts;\n"
    "    mllm__sample_row p;\n"
    "    uint n;\n"
    "    // Penalised logit, with the same operations as mllm__apply_penalties (no-ops when off).\n"
    "    METAL_FUNC float logit(uint i) const {\n"
    "        float l = logits[i];\n"
    "        if (p.penalties != 0u) {\n"
    "            const uint c = counts[i];\n"
    "            if (c != 0u) {\n"
    "                l = l > 0.0f ? l * p.inv_repeat : l * p.repeat;\n"
    "                l -= fma(p.frequency, float(c), p.presence);\n"
    "            }\n"
    "        }\n"
    "        return l;\n"
    "    }\n"
    "    METAL_FUNC float x(uint i) const { return samp_sanitize(p.greedy != 0u ? logit(i) : logit(i) * p.inv_temp); }\n"
    "};\n"
    "\n"
    "// A prefix of rank order (larger key first, equal keys by lower id): key > t, or key == t and id <= last.\n"
    "// t = 0 holds every candidate (all keys are >= SAMP_KEY_NEG_INF).\n"
    "struct samp_cut {\n"
    "    uint t, last;\n"
    "    METAL_FUNC bool holds(uint key, uint i) const { return key > t || (key == t && i <= last); }\n"
    "};\n"
    "\n"
    "struct samp_tg {   // the thread's place in the threadgroup\n"
    "    ushort tid, ntg, sg, lane, nsg;\n"
    "};\n"
    "\n"
    "METAL_FUNC uint samp_max_u(uint v, threadgroup uint *s, samp_tg g) {\n"
    "    v = simd_max(v);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (g.lane == 0) s[g.sg] = v;\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    return simd_max(g.lane < g.nsg ? s[g.lane] : 0u);\n"
    "}\n"
    "METAL_FUNC uint samp_min_u(uint v, threadgroup uint *s, samp_tg g) {\n"
    "    v = simd_min(v);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (g.lane == 0) s[g.sg] = v;\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    return simd_min(g.lane < g.nsg ? s[g.lane] : SAMP_NONE);\n"
    "}\n"
    "// Exclusive prefix sum over the threads in index order, and the total; every thread sums the simdgroup\n"
    "// totals in the same order, so all agree bit for bit on the total.\n"
    "template <typename T> METAL_FUNC T samp_scan(T v, threadgroup T *s, samp_tg g, thread T &total) {\n"
    "    const T e = simd_prefix_exclusive_sum(v), sum = simd_sum(v);\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (g.lane == 0) s[g.sg] = sum;\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    T base = 0, tot = 0;\n"
    "    for (ushort k = 0; k < g.nsg; k++) {\n"
    "        if (k == g.sg) base = tot;\n"
    "        tot += s[k];\n"
    "    }\n"
    "    total = tot;\n"
    "    return base + e;\n"
    "}\n"
    "\n"
    "// Radix select over rank keys, 4 bits a pass from the top: the key T of the candidate at which the\n"
    "// running total of a(i) in rank order first reaches the target (a = 1 and target = k for top-k; a = the\n"
    "// weight and target = frac * (total weight) for top-p).  Candidates: those within `within`.  Returns T;\n"
    "// above = the total over keys > T, at = over keys == T, target as used.\n"
    "template <bool MASS>\n"
    "METAL_FUNC uint samp_select(const thread samp_row &r, samp_cut within, float xmax, float target, float frac,\n"
    "                            threadgroup float *part, threadgroup float *bins, samp_tg g, thread float &above,\n"
    "                            thread float &at, thread float &target_out) {\n"
    "    uint prefix = 0;\n"
    "    above = 0.0f;\n"
    "    for (int shift = 28; shift >= 0; shift -= 4) {\n"
    "        float h[16];\n"
    "        for (int b = 0; b < 16; b++) h[b] = 0.0f;\n"
    "        const uint hi_mask = shift == 28 ? 0u : 0xffffffffu << uint(shift + 4);\n"
    "        for (uint i = g.tid; i < r.n; i += g.ntg) {\n"
    "            const float x = r.x(i);\n"
    "            const uint key = samp_key(x);\n"
    "            if ((key & hi_mask) != prefix || !within.holds(key, i)) continue;\n"
    "            h[(key >> uint(shift)) & 15u] += MASS ? samp_w(key, x, xmax) : 1.0f;\n"
    "        }\n"
    "        for (int b = 0; b < 16; b++) {\n"
    "            const float v = simd_sum(h[b]);\n"
    "            if (g.lane == 0) part[g.sg * 16 + b] = v;\n"
    "        }\n"
    "        threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "        if (g.tid < 16) {\n"
    "            float s = 0.0f;\n"
    "            for (ushort k = 0; k < g.nsg; k++) s += part[k * 16 + g.tid];\n"
    "            bins[g.tid] = s;\n"
    "        }\n"
    "        threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "        if (MASS && shift == 28) {\n"
    "            float total = 0.0f;\n"
    "            for (int b = 15; b >= 0; b--) total += bins[b];\n"
    "            target = frac * total;\n"
    "        }\n"
    "        // Walk the bins from the top.  If rounding leaves the target just out of reach, the last\n"
    "        // non-empty bin is taken (that is: all candidates are kept).\n"
    "        int d = -1, last = 0;\n"
    "        float acc = above, acc_last = above;\n"
    "        for (int b = 15; b >= 0; b--) {\n"
    "            const float v = bins[b];\n"
    "            if (v > 0.0f) {\n"
    "                last = b;\n"
    "                acc_last = acc;\n"
    "                if (acc + v >= target) { d = b; break; }\n"
    "            }\n"
    "            acc += v;\n"
    "        }\n"
    "        if (d < 0) { d = last; acc = acc_last; }\n"
    "        above = acc;\n"
    "        at = bins[d];\n"
    "        prefix |= uint(d) << uint(shift);\n"
    "    }\n"
    "    target_out = target;\n"
    "    return prefix;\n"
    "}\n"
    "\n"
    "// The id of the rank-th (1-based) candidate within `within` whose key is t, in id order; SAMP_NONE if\n"
    "// there are fewer.  Threads own contiguous id ranges here, so a prefix sum over threads is id order.\n"
    "METAL_FUNC uint samp_tie_id(const thread samp_row &r, samp_cut within, uint t, uint rank, threadgroup uint *su,\n"
    "                            samp_tg g) {\n"
    "    const uint chunk = (r.n + g.ntg - 1) / g.ntg, begin = min(r.n, g.tid * chunk), end = min(r.n, begin + chunk);\n"
    "    uint cnt = 0, total;\n"
    "    for (uint i = begin; i < end; i++) {\n"
    "        const uint key = samp_key(r.x(i));\n"
    "        cnt += key == t && within.holds(key, i);\n"
    "    }\n"
    "    const uint before = samp_scan<uint>(cnt, su, g, total);\n"
    "    uint found = SAMP_NONE;\n"
    "    if (before < rank && rank <= before + cnt) {\n"
    "        uint c = before;\n"
    "        for (uint i = begin; i < end; i++) {\n"
    "            const uint key = samp_key(r.x(i));\n"
    "            if (key == t && within.holds(key, i) && ++c == rank) { found = i; break; }\n"
    "        }\n"
    "    }\n"
    "    return samp_min_u(found, su, g);\n"
    "}\n"
    "\n"
    "// buffers: 0 logits [rows][n_vocab], 1 mllm__sample_row [rows], 2 ushort counts [seqs][n_vocab],\n"
    "// 3 int ring [seqs][ring_cap], 4 int out [rows], 5 mllm__sample_args.  Grid: rows threadgroups of a\n"
    "// multiple of 32 threads (<= 1024).  Afterwards counts/ring of each row's sequence with penalties on\n"
    "// include its pick.\n"
    "kernel void sample(device const float *logits [[buffer(0)]], device const mllm__sample_row *rows [[buffer(1)]],\n"
    "                   device ushort *counts [[buffer(2)]], device int *ring [[buffer(3)]], device int *out [[buffer(4)]],\n"
    "                   constant mllm__sample_args &a [[buffer(5)]], uint row [[threadgroup_position_in_grid]],\n"
    "                   ushort tid [[thread_index_in_threadgroup]], ushort ntg [[threads_per_threadgroup]],\n"
    "                   ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    threadgroup float part[512];   // per-simdgroup histograms: 32 x 16\n"
    "    threadgroup float bins[16];\n"
    "    threadgroup float sf[32];\n"
    "    threadgroup uint su[32];\n"
    "    const samp_tg g = {tid, ntg, sg, lane, ushort((ntg + 31) / 32)};\n"
    "    samp_row r;\n"
    "    r.p = rows[row];\n"
    "    r.n = a.n_vocab;\n"
    "    r.logits = logits + (ulong)row * r.n;\n"
    "    r.counts = counts + (ulong)r.p.seq * r.n;\n"
    "    const uint n = r.n;\n"
    "\n"
    "    // The best candidate (largest key, lowest id): the greedy pick, and xmax for the weights.\n"
    "    uint bk = 0, bi = SAMP_NONE;\n"
    "    for (uint i = tid; i < n; i += ntg) {   // ids ascend per thread, so > keeps the lowest id\n"
    "        const uint key = samp_key(r.x(i));\n"
    "        if (key > bk) { bk = key; bi = i; }\n"
    "    }\n"
    "    const uint kmax = samp_max_u(bk, su, g);\n"
    "    uint tok = samp_min_u(bk == kmax ? bi : SAMP_NONE, su, g);\n"
    "\n"
    "    if (r.p.greedy == 0u && kmax != SAMP_KEY_NEG_INF) {   // all -inf: the best (id 0), as greedy\n"
    "        const float xmax = samp_unkey(kmax);\n"
    "        float above, at, target;\n"
    "        samp_cut keep = {0u, SAMP_NONE};   // everything\n"
    "        if (r.p.top_k > 0u && r.p.top_k < n) {\n"
    "            const uint t = samp_select<false>(r, keep, xmax, float(r.p.top_k), 0.0f, part, bins, g, above, at, target);\n"
    "            const uint rank = r.p.top_k - uint(above);   // ties at t to keep, lowest ids first\n"
    "            keep.t = t;\n"
    "            keep.last = rank < uint(at) ? samp_tie_id(r, keep, t, rank, su, g) : SAMP_NONE;\n"
    "        }\n"
    "        if (r.p.top_p > 0.0f && r.p.top_p < 1.0f) {\n"
    "            const uint t = samp_select<true>(r, keep, xmax, 0.0f, r.p.top_p, part, bins, g, above, at, target);\n"
    "            const float wt = samp_w(t, samp_unkey(t), xmax);\n"
    "            uint last = SAMP_NONE;\n"
    "            if (wt > 0.0f && at > 1.5f * wt) {   // several tokens tie at the cut: keep the fewest that reach\n"
    "                const float need = ceil((target - above) / wt);\n"
    "                last = samp_tie_id(r, keep, t, uint(clamp(need, 1.0f, float(n))), su, g);\n"
    "            }\n"
    "            // keep := keep within (key > t, or key == t and id <= last): t only tightens the cut\n"
    "            if (t > keep.t) { keep.t = t; keep.last = last; }\n"
    "            else if (t == keep.t) keep.last = min(keep.last, last);\n"
    "        }\n"
    "\n"
    "        // Draw: the first kept token, in id order, whose running weight exceeds u * (kept weight).\n"
    "        const uint chunk = (n + ntg - 1) / ntg, begin = min(n, tid * chunk), end = min(n, begin + chunk);\n"
    "        const float min_p = r.p.min_p;\n"
    "        float local = 0.0f;\n"
    "        uint last_pos = 0;   // last kept id with weight > 0, + 1\n"
    "        for (uint i = begin; i < end; i++) {\n"
    "            const float x = r.x(i);\n"
    "            const uint key = samp_key(x);\n"
    "            const float w = samp_w(key, x, xmax);\n"
    "            if (!keep.holds(key, i) || !(w >= min_p)) continue;\n"
    "            local += w;\n"
    "            if (w > 0.0f) last_pos = i + 1;\n"
    "        }\n"
    "        float total;\n"
    "        const float before = samp_scan<float>(local, sf, g, total);\n"
    "        const float target_w = samp_uniform(r.p.seed_lo, r.p.seed_hi, r.p.counter_lo, r.p.counter_hi) * total;\n"
    "        // Claims: the first kept id with weight > 0 in this range whose running weight exceeds target_w\n"
    "        // (all of them do once `before` does; if the compiler summed in another order than for `local`,\n"
    "        // the range's last).  The lowest claim wins; none (rounding): the last kept.\n"
    "        uint pick = SAMP_NONE;\n"
    "        if (before > target_w || target_w - before < local) {\n"
    "            const float rem = target_w - before;\n"
    "            float c = 0.0f;\n"
    "            for (uint i = begin; i < end; i++) {\n"
    "                const float x = r.x(i);\n"
    "                const uint key = samp_key(x);\n"
    "                const float w = samp_w(key, x, xmax);\n"
    "                if (!keep.holds(key, i) || !(w >= min_p) || !(w > 0.0f)) continue;\n"
    "                c += w;\n"
    "                pick = i;\n"
    "                if (before > target_w || rem < c) break;\n"
    "            }\n"
    "        }\n"
    "        pick = samp_min_u(pick, su, g);\n"
    "        tok = pick != SAMP_NONE ? pick : samp_max_u(last_pos, su, g) - 1u;\n"
    "    }\n"
    "    if (tok == SAMP_NONE) tok = 0;   // (n == 0)\n"
    "\n"
    "    // The pick enters the penalty window: the token leaving it (history position n_hist - window) is\n"
    "    // uncounted.  Every count read of this threadgroup came before the reductions' barriers above.\n"
    "    // (Sequences without penalties keep no state.)\n"
    "    if (tid == 0) out[row] = int(tok);\n"
    "    if (tid == 0 && r.p.penalties != 0u) {\n"
    "        const uint w = r.p.window, pos = r.p.n_hist % w;\n"
    "        device int *rg = ring + (ulong)r.p.seq * a.ring_cap;\n"
    "        device ushort *cr = counts + (ulong)r.p.seq * n;\n"
    "        if (r.p.n_hist >= w) {\n"
    "            const int old = rg[pos];\n"
    "            if (old >= 0 && uint(old) < n) cr[old] -= 1;\n"
    "        }\n"
    "        rg[pos] = int(tok);\n"
    "        if (tok < n) cr[tok] += 1;\n"
    "    }\n"
    "}\n"
    ;
static const char mllm__kernel_softmax_metal[] = /* kernels/softmax.metal */
    "// Softmax and argmax over rows of a vocabulary-sized vector: one threadgroup per row (a multiple of\n"
    "// 32 threads, up to 1024), float4 loads, one threadgroup reduction per pass.\n"
    "#include <metal_stdlib>\n"
    "// #include \"common.h\": embedded before this file\n"
    "\n"
    "// y = exp(x - max) / sum(exp(x - max)); y may alias x.\n"
    "kernel void softmax(device const float *x [[buffer(0)]], device float *y [[buffer(1)]],\n"
    "                    constant mllm__vec_args &a [[buffer(2)]], uint row [[threadgroup_position_in_grid]],\n"
    "                    ushort tid [[thread_index_in_threadgroup]], ushort ntg [[threads_per_threadgroup]],\n"
    "                    ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    threadgroup float scratch[32];\n"
    "    const uint n = a.n, n4 = n / 4, nsg = (ntg + 31) / 32;\n"
    "    device const float *xr = x + (ulong)row * n;\n"
    "    device float *yr = y + (ulong)row * n;\n"
    "    device const packed_float4 *x4 = (device const packed_float4 *)xr;\n"
    "    device packed_float4 *y4 = (device packed_float4 *)yr;\n"
    "\n"
    "    float m = -INFINITY;\n"
    "    for (uint i = tid; i < n4; i += ntg) {\n"
    "        const float4 v = x4[i];\n"
    "        m = max(m, max(max(v.x, v.y), max(v.z, v.w)));\n"
    "    }\n"
    "    for (uint i = 4 * n4 + tid; i < n; i += ntg) m = max(m, xr[i]);\n"
    "    m = tg_max(m, scratch, sg, lane, nsg);\n"
    "\n"
    "    float s = 0.0f;\n"
    "    for (uint i = tid; i < n4; i += ntg) {\n"
    "        const float4 e = exp(float4(x4[i]) - m);\n"
    "        y4[i] = e;\n"
    "        s += e.x + e.y + e.z + e.w;\n"
    "    }\n"
    "    for (uint i = 4 * n4 + tid; i < n; i += ntg) {\n"
    "        const float e = exp(xr[i] - m);\n"
    "        yr[i] = e;\n"
    "        s += e;\n"
    "    }\n"
    "    const float inv = 1.0f / tg_sum(s, scratch, sg, lane, nsg);\n"
    "    // Each thread rescales exactly the elements it wrote, so no barrier is needed on y.\n"
    "    for (uint i = tid; i < n4; i += ntg) y4[i] = float4(y4[i]) * inv;\n"
    "    for (uint i = 4 * n4 + tid; i < n; i += ntg) yr[i] *= inv;\n"
    "}\n"
    "\n"
    "// out[row] = index of the largest x (the lowest index among equal maxima, like the CPU sampler).\n"
    "// NaNs never win.\n"
    "kernel void argmax(device const float *x [[buffer(0)]], device int *out [[buffer(1)]],\n"
    "                   constant mllm__vec_args &a [[buffer(2)]], uint row [[threadgroup_position_in_grid]],\n"
    "                   ushort tid [[thread_index_in_threadgroup]], ushort ntg [[threads_per_threadgroup]],\n"
    "                   ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]) {\n"
    "    threadgroup float sv[32];\n"
    "    threadgroup uint si[32];\n"
    "    const uint n = a.n, nsg = (ntg + 31) / 32;\n"
    "    device const float *xr = x + (ulong)row * n;\n"
    "    device const packed_float4 *x4 = (device const packed_float4 *)xr;\n"
    "\n"
    "    // Per thread: its indices come in increasing order, so a strict > keeps the first maximum.\n"
    "    float best = -INFINITY;\n"
    "    uint bi = 0xffffffffu;\n"
    "    for (uint i = tid; i < n / 4; i += ntg) {\n"
    "        const float4 v = x4[i];\n"
    "        for (uint k = 0; k < 4; k++)\n"
    "            if (v[k] > best) { best = v[k]; bi = 4 * i + k; }\n"
    "    }\n"
    "    for (uint i = 4 * (n / 4) + tid; i < n; i += ntg)\n"
    "        if (xr[i] > best) { best = xr[i]; bi = i; }\n"
    "\n"
    "    // Lowest index among the lanes holding the maximum, then the same across simdgroups.\n"
    "    float m = simd_max(best);\n"
    "    uint idx = simd_min(best == m ? bi : 0xffffffffu);\n"
    "    if (lane == 0) { sv[sg] = m; si[sg] = idx; }\n"
    "    threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "    if (sg == 0) {\n"
    "        const float v = lane < nsg ? sv[lane] : -INFINITY;\n"
    "        const uint vi = lane < nsg ? si[lane] : 0xffffffffu;\n"
    "        m = simd_max(v);\n"
    "        idx = simd_min(v == m ? vi : 0xffffffffu);\n"
    "        // All -inf or NaN: fall back to 0 so the caller always gets a valid token.\n"
    "        if (lane == 0) out[row] = idx == 0xffffffffu ? 0 : int(idx);\n"
    "    }\n"
    "}\n"
    ;
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
static const mllm__kernel_src mllm__kernel_files[] = {
    {"kernels/common.h", mllm__kernel_common_h, sizeof mllm__kernel_common_h - 1},
    {"kernels/attention.metal", mllm__kernel_attention_metal, sizeof mllm__kernel_attention_metal - 1},
    {"kernels/elementwise.metal", mllm__kernel_elementwise_metal, sizeof mllm__kernel_elementwise_metal - 1},
    {"kernels/gemm.metal", mllm__kernel_gemm_metal, sizeof mllm__kernel_gemm_metal - 1},
    {"kernels/gemv.metal", mllm__kernel_gemv_metal, sizeof mllm__kernel_gemv_metal - 1},
    {"kernels/get_rows.metal", mllm__kernel_get_rows_metal, sizeof mllm__kernel_get_rows_metal - 1},
    {"kernels/moe.metal", mllm__kernel_moe_metal, sizeof mllm__kernel_moe_metal - 1},
    {"kernels/norm.metal", mllm__kernel_norm_metal, sizeof mllm__kernel_norm_metal - 1},
    {"kernels/rope.metal", mllm__kernel_rope_metal, sizeof mllm__kernel_rope_metal - 1},
    {"kernels/sample.metal", mllm__kernel_sample_metal, sizeof mllm__kernel_sample_metal - 1},
    {"kernels/softmax.metal", mllm__kernel_softmax_metal, sizeof mllm__kernel_softmax_metal - 1},
};
/* END GENERATED KERNELS */

/* A precompiled library of the same kernels (gen/README.md: built with Xcode on a Mac); the Metal
   layer uses it when present and compiles the source above otherwise. */
/* BEGIN GENERATED METALLIB */
static MLLM__UNUSED const unsigned char *mllm__kernel_metallib(size_t *n) { *n = 0; return NULL; }   /* none embedded */
/* END GENERATED METALLIB */

static const mllm__kernel_src *mllm__kernel_sources(int *n) {
    *n = (int)(sizeof mllm__kernel_files / sizeof mllm__kernel_files[0]);
    return mllm__kernel_files;
}

static char *mllm__kernel_source_joined(size_t *len) {
    int i, n;
    const mllm__kernel_src *f = mllm__kernel_sources(&n);
    size_t total = 1, o = 0;
    char *s;
    for (i = 0; i < n; i++) total += f[i].len + strlen(f[i].name) + 16;   /* + #line 1 "name"\n */
    s = MLLM__CAST(char *, MLLM_MALLOC(total));
    if (!s) return NULL;
    for (i = 0; i < n; i++) {
        o += (size_t)snprintf(s + o, total - o, "#line 1 \"%s\"\n", f[i].name);
        memcpy(s + o, f[i].text, f[i].len);
        o += f[i].len;
    }
    s[o] = 0;
    *len = o;
    return s;
}
#endif /* MLLM__HAVE_METAL || MLLM__FORCE_METAL_STUBS */

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
