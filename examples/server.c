/* server: an OpenAI-compatible HTTP server over metalllm.h's batched engine.

     server -m MODEL.gguf [--host 127.0.0.1] [--port 8080] [-t N] [-c CTX] [--parallel N] [--queue N]
            [--batch N] [--kv-blocks N] [--api-key KEY] [--alias NAME] [--timeout S] [--max-body BYTES]
            [--metal]

   POST /v1/chat/completions, POST /v1/completions (streaming with SSE or not), GET /v1/models,
   GET /health.  Needs libmicrohttpd and cJSON (Debian: apt-get install libmicrohttpd-dev libcjson-dev).

   How it is built, top to bottom:
     1. request parsing and validation: an HTTP body becomes a `request` or an OpenAI-style error
        (parse_request, a pure function: the fuzz target tests/fuzz_server.c calls it directly);
     2. the engine thread: the only thread that touches the mllm_context.  It admits waiting requests
        (mllm_seq_add), runs mllm_step, turns tokens into text per choice (stop strings checked across
        token boundaries), forks n-1 sequences after a prompt's first token for `n`, and removes the
        sequences of finished or abandoned requests at once;
     3. the response writers: one JSON body, or SSE chunks produced from each choice's new text;
     4. the HTTP layer (libmicrohttpd, one thread per connection): routing, body limits, API key.
   Shared state (the request queue and each request's output) is under one mutex; the engine sleeps on
   a condition variable when idle and each connection waits on its request's, so nothing spins. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cJSON.h>
#include <microhttpd.h>

#define MAX_STOP 4           /* stop strings per request (OpenAI's limit) */
#define MAX_STOP_LEN 256     /* bytes per stop string */
#define MAX_MESSAGES 4096
#define MAX_TOP_LOGPROBS 20  /* alternatives per token (OpenAI's limit for chat; completions allow 5) */

/* ================================================================ configuration and shared state */
typedef struct server_cfg {
    int n_ctx;               /* tokens per sequence */
    int parallel;            /* sequences generating at once (n of a request counts n) */
    int max_waiting;         /* requests queued beyond those running before 503 */
    int n_vocab;
    int host_logits;         /* the sampled logits are readable (mllm_seq_logits: the CPU backend) */
    const char *model_name;
} server_cfg;

enum { EP_CHAT, EP_COMPLETION };
enum { FIN_NONE, FIN_STOP, FIN_LENGTH };
enum { RQ_WAITING, RQ_RUNNING, RQ_DONE };

typedef struct api_error {
    int http;                /* 400, 401, 404, 405, 413, 500, 503 */
    const char *type;        /* "invalid_request_error", "server_error", ... */
    char msg[256];
} api_error;

typedef struct logprob {    /* one generated token: its log-probability and the top alternatives */
    mllm_token token;
    float lp;
    mllm_token top[MAX_TOP_LOGPROBS];
    float top_lp[MAX_TOP_LOGPROBS];
} logprob;

typedef struct choice {
    mllm_seq_id seq;         /* -1: no sequence (not forked yet, or removed) */
    mllm_detok dt;
    char *text;              /* generated text, valid UTF-8, stop string and what follows cut off */
    size_t len, cap;
    size_t safe;             /* text[0, safe) is final: no stop string can begin before it */
    size_t sent;             /* bytes of text already streamed */
    int n_gen;               /* tokens generated */
    int finish;              /* FIN_* */
    int finish_sent, role_sent;
    logprob *lps;            /* with logprobs: one per generated token that has text (not EOG) */
    int n_lps, cap_lps, lps_sent;
} choice;

typedef struct request {
    /* from the body (parse_request), read-only afterwards */
    int endpoint, stream, include_usage, n, max_tokens, ignore_eos;
    int logprobs, top_logprobs;   /* logprobs wanted; alternatives per token (0..MAX_TOP_LOGPROBS) */
    mllm_sampler_params sampler;
    mllm_token *prompt;
    int n_prompt;
    char *stop[MAX_STOP];
    int n_stop;
    char id[64];
    long long created;
    /* shared with the engine, under server.mu */
    struct request *next;    /* waiting queue or running list */
    int state;               /* RQ_* */
    int cancelled;           /* the client left: the engine drops the request */
    int refs;                /* the engine's and the connection's */
    int forked;
    api_error err;           /* err.http != 0: the request failed */
    choice *choices;
    pthread_cond_t cv;       /* new output or a state change */
    /* the connection's writer, its thread only */
    struct MHD_Connection *conn;
    char *wbuf;
    size_t wlen, woff, wcap;
    int done_sent;
} request;

typedef struct server {
    server_cfg cfg;
    mllm_model *model;
    mllm_context *ctx;
    const char *api_key;
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the engine: work arrived or a request was cancelled */
    request *wait_head, *wait_tail, *running;
    int n_waiting, n_running, slots_used, stopping;
    int kv_free, kv_total;   /* published by the engine after every step */
    long long n_served;
    uint64_t seed_counter;
} server;

static int api_fail(api_error *e, int http, const char *type, const char *fmt, ...) {
    va_list ap;
    e->http = http;
    e->type = type;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}
#define BAD(...) api_fail(err, 400, "invalid_request_error", __VA_ARGS__)

/* ================================================================ small utilities */
static int utf8_seq_len(const unsigned char *s, size_t n) {   /* length of a valid sequence, or 0 */
    unsigned c = s[0];
    int len, i;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return 0;
    if (n < (size_t)len) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int l = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

static int buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = (*len + n + 1) * 2;
        char *p = (char *)realloc(*buf, c);
        if (!p) return -1;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* Appends s with every invalid UTF-8 byte replaced by U+FFFD, so JSON output is always valid. */
static int buf_append_utf8(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        int l;
        while (j < n && (l = utf8_seq_len((const unsigned char *)s + j, n - j)) > 0) j += (size_t)l;
        if (buf_append(buf, len, cap, s + i, j - i)) return -1;
        if (j < n && buf_append(buf, len, cap, "\xEF\xBF\xBD", 3)) return -1;
        i = j < n ? j + 1 : j;
    }
    return 0;
}

/* Compares in time that depends only on the expected key's length (no early exit on a mismatch). */
static int key_equal(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key), i;
    unsigned char diff = (unsigned char)(gl != kl);
    for (i = 0; i < kl; i++) diff |= (unsigned char)(key[i] ^ (gl ? given[i % gl] : 0));
    return diff == 0;
}

/* ================================================================ request parsing and validation */
/* Reads an optional number field.  Returns 1 (set), 0 (absent or null) or -1 (bad: err filled). */
static int get_num(const cJSON *root, const char *name, double lo, double hi, int integral, double *out, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return BAD("'%s' must be a number", name);
    if (integral && v->valuedouble != floor(v->valuedouble)) return BAD("'%s' must be an integer", name);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi)) return BAD("'%s' must be between %g and %g", name, lo, hi);
    *out = v->valuedouble;
    return 1;
}

static int get_bool(const cJSON *root, const char *name, int *out, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return BAD("'%s' must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return 1;
}

static int check_text(const char *s, const char *what, api_error *err) {
    if (!utf8_valid(s, strlen(s))) return BAD("%s is not valid UTF-8", what);
    return 0;
}

/* Message content: a string, null, or an array of {"type": "text", "text": ...} parts (joined). */
static int message_text(const cJSON *content, char **out, api_error *err) {
    size_t len = 0, cap = 0;
    const cJSON *part;
    *out = NULL;
    if (!content || cJSON_IsNull(content)) return buf_append(out, &len, &cap, "", 0) ? BAD("out of memory") : 0;
    if (cJSON_IsString(content)) {
        if (check_text(content->valuestring, "message content", err)) return -1;
        return buf_append(out, &len, &cap, content->valuestring, strlen(content->valuestring)) ? BAD("out of memory") : 0;
    }
    if (!cJSON_IsArray(content)) return BAD("message 'content' must be a string or an array of parts");
    if (buf_append(out, &len, &cap, "", 0)) return BAD("out of memory");
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type"), *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return BAD("only text content parts are supported");
        if (check_text(text->valuestring, "message content", err)) return -1;
        if (buf_append(out, &len, &cap, text->valuestring, strlen(text->valuestring))) return BAD("out of memory");
    }
    return 0;
}

/* messages -> the model's chat template -> prompt text (malloc'd). */
static int chat_prompt(const mllm_model *model, const cJSON *messages, char **out, api_error *err) {
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    mllm_chat_message *msgs;
    char **texts;
    const cJSON *m;
    int n = cJSON_GetArraySize(messages), i = 0, k, need, rc = -1;
    *out = NULL;
    if (!cJSON_IsArray(messages) || n < 1) return BAD("'messages' must be a non-empty array");
    if (n > MAX_MESSAGES) return BAD("at most %d messages", MAX_MESSAGES);
    msgs = (mllm_chat_message *)calloc((size_t)n, sizeof *msgs);
    texts = (char **)calloc((size_t)n, sizeof *texts);
    if (!msgs || !texts) { free(msgs); free(texts); return BAD("out of memory"); }
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) { BAD("messages[%d] needs a string 'role'", i); goto done; }
        for (k = 0; k < 5 && strcmp(role->valuestring, roles[k]); k++) {}
        if (k == 5) { BAD("messages[%d]: unknown role", i); goto done; }
        if (message_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &texts[i], err)) goto done;
        msgs[i].role = k == 1 ? "system" : roles[k];   /* "developer" is OpenAI's new name for system */
        msgs[i].content = texts[i];
        i++;
    }
    need = mllm_chat_format(model, msgs, n, NULL, 0);
    if (need < 0 || !(*out = (char *)malloc((size_t)need))) { BAD("cannot format the chat: %s", mllm_last_error()); goto done; }
    mllm_chat_format(model, msgs, n, *out, need);
    rc = 0;
done:
    for (k = 0; k < n; k++) free(texts[k]);
    free(texts);
    free(msgs);
    return rc;
}

static int tokenize_prompt(const server_cfg *cfg, const mllm_model *model, const char *text, request *rq, api_error *err) {
    const int flags = MLLM_TOKENIZE_ADD_SPECIAL | MLLM_TOKENIZE_PARSE_SPECIAL;   /* as build/generate */
    size_t len = strlen(text);
    int n = mllm_tokenize(mllm_model_vocab(model), text, len, NULL, 0, flags);
    if (n < 0) return BAD("cannot tokenize the prompt: %s", mllm_last_error());
    if (n == 0) return BAD("the prompt is empty");
    if (n >= cfg->n_ctx) return BAD("the prompt has %d tokens; the context holds %d", n, cfg->n_ctx);
    if (!(rq->prompt = (mllm_token *)malloc(sizeof(mllm_token) * (size_t)n))) return BAD("out of memory");
    rq->n_prompt = mllm_tokenize(mllm_model_vocab(model), text, len, rq->prompt, n, flags);
    return 0;
}

/* "prompt": a string, an array of one string, or an array of token ids. */
static int completion_prompt(const server_cfg *cfg, const mllm_model *model, const cJSON *p, request *rq, api_error *err) {
    const cJSON *t;
    int n, i = 0;
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) p = p->child;
    if (cJSON_IsString(p)) {
        if (check_text(p->valuestring, "'prompt'", err)) return -1;
        return tokenize_prompt(cfg, model, p->valuestring, rq, err);
    }
    if (!cJSON_IsArray(p) || (n = cJSON_GetArraySize(p)) < 1)
        return BAD("'prompt' must be a string, an array of one string, or an array of token ids");
    if (n >= cfg->n_ctx) return BAD("the prompt has %d tokens; the context holds %d", n, cfg->n_ctx);
    if (!(rq->prompt = (mllm_token *)malloc(sizeof(mllm_token) * (size_t)n))) return BAD("out of memory");
    cJSON_ArrayForEach(t, p) {
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || !(t->valuedouble >= 0 && t->valuedouble < cfg->n_vocab))
            return BAD("'prompt' token %d is not an id in [0, %d)", i, cfg->n_vocab);
        rq->prompt[i++] = (mllm_token)t->valuedouble;
    }
    rq->n_prompt = n;
    return 0;
}

static int parse_stop(const cJSON *stop, request *rq, api_error *err) {
    const cJSON *s;
    if (!stop || cJSON_IsNull(stop)) return 0;
    if (cJSON_IsString(stop)) s = stop;
    else if (!cJSON_IsArray(stop)) return BAD("'stop' must be a string or an array of strings");
    else if (cJSON_GetArraySize(stop) > MAX_STOP) return BAD("at most %d stop strings", MAX_STOP);
    else s = stop->child;
    for (; s; s = s == stop ? NULL : s->next) {
        size_t len;
        if (!cJSON_IsString(s)) return BAD("'stop' must be a string or an array of strings");
        len = strlen(s->valuestring);
        if (len == 0 || len > MAX_STOP_LEN) return BAD("stop strings must have 1 to %d bytes", MAX_STOP_LEN);
        if (check_text(s->valuestring, "a stop string", err)) return -1;
        if (!(rq->stop[rq->n_stop++] = strdup(s->valuestring))) return BAD("out of memory");
    }
    return 0;
}

static void request_free(request *rq) {
    int i;
    if (!rq) return;
    for (i = 0; i < rq->n_stop; i++) free(rq->stop[i]);
    if (rq->choices)
        for (i = 0; i < rq->n; i++) free(rq->choices[i].text), free(rq->choices[i].lps);
    free(rq->choices);
    free(rq->prompt);
    free(rq->wbuf);
    pthread_cond_destroy(&rq->cv);
    free(rq);
}

/* The request path's pure part: an HTTP body for `endpoint` becomes a validated request (prompt
   tokenized, every field in range) or an error.  No shared state is read or written; unknown fields
   are ignored.  Returns 0, or -1 with err filled (rq then holds partial results: request_free it). */
static int parse_request(const server_cfg *cfg, const mllm_model *model, int endpoint, const char *body, size_t len,
                         uint64_t default_seed, request *rq, api_error *err) {
    cJSON *root;
    const char *end = NULL;
    double d;
    int rc = -1, r, i;
    char *text = NULL;
    memset(err, 0, sizeof *err);
    rq->endpoint = endpoint;
    rq->n = 1;
    rq->max_tokens = endpoint == EP_COMPLETION ? 16 : cfg->n_ctx;   /* OpenAI's defaults */
    rq->sampler.temperature = 1.0f;
    rq->sampler.seed = default_seed;
    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) return BAD("the body is not valid JSON");
    while (end && end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
    if (end != body + len) { BAD("the body has bytes after the JSON value"); goto done; }
    if (!cJSON_IsObject(root)) { BAD("the body must be a JSON object"); goto done; }
    if (get_bool(root, "stream", &rq->stream, err) < 0) goto done;
    if (get_bool(root, "ignore_eos", &rq->ignore_eos, err) < 0) goto done;   /* llama.cpp's extension */
    {
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
        if (so && !cJSON_IsNull(so) && (!cJSON_IsObject(so) || get_bool(so, "include_usage", &rq->include_usage, err) < 0)) {
            if (!err->http) BAD("'stream_options' must be an object");
            goto done;
        }
    }
    if ((r = get_num(root, "n", 1, cfg->parallel, 1, &d, err)) < 0) goto done;
    if (r) rq->n = (int)d;
    if ((r = get_num(root, "max_tokens", 1, 1 << 30, 1, &d, err)) < 0) goto done;
    if (r) rq->max_tokens = (int)d;
    if (endpoint == EP_CHAT) {
        if ((r = get_num(root, "max_completion_tokens", 1, 1 << 30, 1, &d, err)) < 0) goto done;
        if (r) rq->max_tokens = (int)d;
    }
    if ((r = get_num(root, "temperature", 0, 2, 0, &d, err)) < 0) goto done;
    if (r) rq->sampler.temperature = (float)d;
    if ((r = get_num(root, "top_p", 0, 1, 0, &d, err)) < 0) goto done;
    if (r) rq->sampler.top_p = (float)d;
    if ((r = get_num(root, "top_k", -1, 1 << 30, 1, &d, err)) < 0) goto done;
    if (r) rq->sampler.top_k = d < 0 ? 0 : (int)d;
    if ((r = get_num(root, "min_p", 0, 1, 0, &d, err)) < 0) goto done;
    if (r) rq->sampler.min_p = (float)d;
    if ((r = get_num(root, "presence_penalty", -2, 2, 0, &d, err)) < 0) goto done;
    if (r) rq->sampler.presence_penalty = (float)d;
    if ((r = get_num(root, "frequency_penalty", -2, 2, 0, &d, err)) < 0) goto done;
    if (r) rq->sampler.frequency_penalty = (float)d;
    if ((r = get_num(root, "repeat_penalty", 0, 10, 0, &d, err)) < 0) goto done;   /* llama.cpp's extension */
    if (r) rq->sampler.repeat_penalty = (float)d;
    if ((r = get_num(root, "seed", -9223372036854775808.0, 18446744073709549568.0, 1, &d, err)) < 0) goto done;
    if (r) rq->sampler.seed = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
    if (endpoint == EP_CHAT) {   /* chat: logprobs true/false and top_logprobs 0..20 alternatives */
        if (get_bool(root, "logprobs", &rq->logprobs, err) < 0) goto done;
        if ((r = get_num(root, "top_logprobs", 0, MAX_TOP_LOGPROBS, 1, &d, err)) < 0) goto done;
        if (r && !rq->logprobs) { BAD("'top_logprobs' needs 'logprobs': true"); goto done; }
        if (r) rq->top_logprobs = (int)d;
    } else {   /* completions: logprobs is the number of alternatives, 0..5 */
        if ((r = get_num(root, "logprobs", 0, 5, 1, &d, err)) < 0) goto done;
        if (r) rq->logprobs = 1, rq->top_logprobs = (int)d;
    }
    if (rq->logprobs && !cfg->host_logits) { BAD("logprobs need the CPU backend (on the GPU the logits never leave it)"); goto done; }
    if (parse_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), rq, err)) goto done;
    if (endpoint == EP_CHAT) {
        if (chat_prompt(model, cJSON_GetObjectItemCaseSensitive(root, "messages"), &text, err)) goto done;
        if (tokenize_prompt(cfg, model, text, rq, err)) goto done;
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (!p) { BAD("'prompt' is required"); goto done; }
        if (completion_prompt(cfg, model, p, rq, err)) goto done;
    }
    if (!(rq->choices = (choice *)calloc((size_t)rq->n, sizeof(choice)))) { BAD("out of memory"); goto done; }
    for (i = 0; i < rq->n; i++) {
        rq->choices[i].seq = -1;
        rq->choices[i].dt.n_tokens = 1;   /* the text continues the prompt: keep a leading space */
    }
    rc = 0;
done:
    if (rc && !err->http) BAD("invalid request");
    free(text);
    cJSON_Delete(root);
    return rc;
}

/* ================================================================ the engine thread */
static void request_release(request *rq) {   /* under mu */
    if (--rq->refs == 0) request_free(rq);
}

static void choice_end(server *s, choice *c, int finish) {   /* under mu */
    if (c->seq >= 0) mllm_seq_remove(s->ctx, c->seq);   /* its KV blocks return to the pool now */
    c->seq = -1;
    if (!c->finish) c->finish = finish;
    c->safe = c->len;
}

/* Takes a running request off the running list: every sequence removed, its slots freed. */
static void request_done(server *s, request *rq) {   /* under mu */
    request **pp;
    int i;
    for (i = 0; i < rq->n; i++) choice_end(s, &rq->choices[i], FIN_STOP);
    for (pp = &s->running; *pp && *pp != rq; pp = &(*pp)->next) {}
    if (*pp) { *pp = rq->next; s->n_running--; s->slots_used -= rq->n; }
    rq->state = RQ_DONE;
    pthread_cond_broadcast(&rq->cv);
    request_release(rq);
}

static void request_fail(server *s, request *rq, int http, const char *msg) {   /* under mu */
    if (!rq->err.http) {
        rq->err.http = http;
        rq->err.type = http == 400 ? "invalid_request_error" : "server_error";
        snprintf(rq->err.msg, sizeof rq->err.msg, "%s", msg);
    }
    request_done(s, rq);
}

static void fail_status(server *s, request *rq, mllm_status st) {   /* under mu */
    char msg[256];
    snprintf(msg, sizeof msg, "generation failed: %s", mllm_status_string(st));
    request_fail(s, rq, st == MLLM_ERR_KV_FULL ? 503 : st == MLLM_ERR_CONTEXT_FULL ? 400 : 500, msg);
}

/* Adds generated text to a choice and checks the stop strings, which may span token boundaries: a
   stop string ending in the new piece starts at most its length - 1 bytes before it.  Text that might
   be the beginning of a stop string is held back (not `safe`) until the next pieces decide. */
static int choice_add_text(request *rq, choice *c, const char *piece, int n) {
    size_t old = c->len, hold = 0, best = (size_t)-1;
    int k;
    if (n <= 0) return 0;
    if (buf_append_utf8(&c->text, &c->len, &c->cap, piece, (size_t)n)) return -1;
    for (k = 0; k < rq->n_stop; k++) {
        size_t sl = strlen(rq->stop[k]), from = old >= sl - 1 ? old - (sl - 1) : 0, i;
        for (i = from; i + sl <= c->len && i < best; i++)
            if (!memcmp(c->text + i, rq->stop[k], sl)) { best = i; break; }
    }
    if (best != (size_t)-1) {   /* cut at the stop string */
        c->len = best;
        c->text[best] = 0;
        c->safe = best;
        return 1;
    }
    for (k = 0; k < rq->n_stop; k++) {
        size_t sl = strlen(rq->stop[k]), l;
        for (l = sl - 1 < c->len ? sl - 1 : c->len; l > hold; l--)
            if (!memcmp(c->text + c->len - l, rq->stop[k], l)) { hold = l; break; }
    }
    c->safe = c->len - hold;
    return 0;
}

static request *find_seq(server *s, mllm_seq_id id, int *ci) {
    request *rq;
    int i;
    for (rq = s->running; rq; rq = rq->next)
        for (i = 0; i < rq->n; i++)
            if (rq->choices[i].seq == id) { *ci = i; return rq; }
    return NULL;
}

/* n > 1: the other choices fork from the first after it sampled its first token; they share the
   prompt's KV blocks and each draws its own first token from the same logits (seed + i). */
static int fork_choices(server *s, request *rq) {
    int i;
    rq->forked = 1;
    for (i = 1; i < rq->n; i++) {
        mllm_seq_params sp;
        memset(&sp, 0, sizeof sp);
        sp.sampler = rq->sampler;
        sp.sampler.seed = rq->sampler.seed + (uint64_t)i;
        sp.max_tokens = rq->max_tokens;
        sp.ignore_eog = rq->ignore_eos;
        if (mllm_seq_fork(s->ctx, rq->choices[0].seq, &sp, &rq->choices[i].seq) != MLLM_OK) {
            rq->choices[i].seq = -1;
            return -1;
        }
    }
    return 0;
}

/* The log-probabilities of the token just sampled for choice c: log-softmax of the logits it was drawn
   from (the model's, before temperature and penalties, as OpenAI and llama.cpp report them) and the
   top_logprobs most likely tokens.  -1: no memory, or no logits (cannot happen on the CPU backend). */
static int record_logprob(server *s, const request *rq, choice *c, mllm_token tok) {
    const float *l = mllm_seq_logits(s->ctx, c->seq);
    const int nv = s->cfg.n_vocab, k = rq->top_logprobs;
    logprob *e;
    double mx, sum = 0, lse;
    int i, j, n = 0;
    if (!l) return -1;
    if (c->n_lps == c->cap_lps) {
        int cap = c->cap_lps ? 2 * c->cap_lps : 16;
        logprob *p = (logprob *)realloc(c->lps, sizeof(logprob) * (size_t)cap);
        if (!p) return -1;
        c->lps = p;
        c->cap_lps = cap;
    }
    e = &c->lps[c->n_lps++];
    for (mx = l[0], i = 1; i < nv; i++) mx = l[i] > mx ? l[i] : mx;
    for (i = 0; i < nv; i++) sum += exp((double)l[i] - mx);
    lse = mx + log(sum);
    e->token = tok;
    e->lp = (float)(l[tok] - lse);
    for (i = 0; i < nv && k > 0; i++) {   /* insertion into the k best so far (ties: the lower id first) */
        if (n == k && !(l[i] > l[e->top[k - 1]])) continue;
        for (j = n < k ? n++ : k - 1; j > 0 && l[i] > l[e->top[j - 1]]; j--) e->top[j] = e->top[j - 1];
        e->top[j] = i;
    }
    for (i = 0; i < n; i++) e->top_lp[i] = (float)(l[e->top[i]] - lse);
    return 0;
}

/* One token of a step for choice ci of rq. */
static void on_token(server *s, request *rq, int ci, const mllm_step_token *t) {
    const mllm_vocab *vocab = mllm_model_vocab(s->model);
    choice *c = &rq->choices[ci];
    char piece[512];
    int i, all = 1;
    if (t->token >= 0) {
        c->n_gen++;
        if (rq->n > 1 && !rq->forked && fork_choices(s, rq)) { request_fail(s, rq, 503, "no room to fork the n choices"); return; }
        if (!mllm_vocab_is_eog(vocab, t->token)) {
            int len = mllm_detok_push(vocab, &c->dt, t->token, piece, sizeof piece);
            if (rq->logprobs && record_logprob(s, rq, c, t->token)) { request_fail(s, rq, 500, "logprobs: out of memory, or the logits are not on the host"); return; }
            int hit = choice_add_text(rq, c, piece, len);
            if (hit < 0) { request_fail(s, rq, 500, "out of memory"); return; }
            if (hit) choice_end(s, c, FIN_STOP);
        }
    }
    if (t->finished && !c->finish) {
        if (t->status != MLLM_OK && t->status != MLLM_ERR_CONTEXT_FULL) { fail_status(s, rq, t->status); return; }
        if (choice_add_text(rq, c, piece, mllm_detok_flush(&c->dt, piece, sizeof piece)) > 0) choice_end(s, c, FIN_STOP);
        else choice_end(s, c, t->token >= 0 && !rq->ignore_eos && mllm_vocab_is_eog(vocab, t->token) ? FIN_STOP : FIN_LENGTH);
    }
    for (i = 0; i < rq->n; i++) all &= rq->choices[i].finish != FIN_NONE;
    if (all) request_done(s, rq);
    else pthread_cond_broadcast(&rq->cv);
}

static void engine_admit(server *s) {   /* under mu */
    while (s->wait_head && s->slots_used + s->wait_head->n <= s->cfg.parallel) {
        request *rq = s->wait_head;
        mllm_seq_params sp;
        mllm_status st;
        s->wait_head = rq->next;
        if (!s->wait_head) s->wait_tail = NULL;
        s->n_waiting--;
        rq->next = NULL;
        if (rq->cancelled) { rq->state = RQ_DONE; request_release(rq); continue; }
        memset(&sp, 0, sizeof sp);
        sp.sampler = rq->sampler;
        sp.max_tokens = rq->max_tokens;
        sp.ignore_eog = rq->ignore_eos;
        rq->next = s->running;   /* running first, so request_fail below finds it */
        s->running = rq;
        s->n_running++;
        s->slots_used += rq->n;
        rq->state = RQ_RUNNING;
        if ((st = mllm_seq_add(s->ctx, rq->prompt, rq->n_prompt, &sp, &rq->choices[0].seq)) != MLLM_OK) {
            rq->choices[0].seq = -1;
            fail_status(s, rq, st);
        }
    }
}

static void engine_reap(server *s) {   /* under mu: requests whose client left */
    request *rq = s->running, *next, **pp;
    for (; rq; rq = next) {
        next = rq->next;
        if (rq->cancelled) request_done(s, rq);
    }
    for (pp = &s->wait_head, s->wait_tail = NULL; (rq = *pp);) {
        if (!rq->cancelled) { s->wait_tail = rq; pp = &rq->next; continue; }
        *pp = rq->next;
        s->n_waiting--;
        rq->state = RQ_DONE;
        request_release(rq);
    }
}

static void *engine_main(void *arg) {
    server *s = (server *)arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        mllm_step_result r;
        mllm_status st;
        int i;
        engine_reap(s);
        if (!s->stopping) engine_admit(s);
        s->kv_free = mllm_kv_free_blocks(s->ctx, &s->kv_total);
        if (s->stopping) break;
        if (!s->running) { pthread_cond_wait(&s->wake, &s->mu); continue; }
        pthread_mutex_unlock(&s->mu);   /* connections queue and read output while the step runs */
        st = mllm_step(s->ctx, &r);
        pthread_mutex_lock(&s->mu);
        for (i = 0; i < r.n_tokens; i++) {
            int ci;
            request *rq = find_seq(s, r.tokens[i].seq, &ci);
            if (rq) on_token(s, rq, ci, &r.tokens[i]);
        }
        if (st != MLLM_OK) {   /* the step's sequences ended with the error (reported above) */
            fprintf(stderr, "server: step failed: %s\n", mllm_last_error());
        }
    }
    while (s->running) request_fail(s, s->running, 503, "the server is shutting down");
    while (s->wait_head) {
        request *rq = s->wait_head;
        s->wait_head = rq->next;
        s->n_waiting--;
        rq->state = RQ_DONE;
        rq->err.http = 503;
        rq->err.type = "server_error";
        snprintf(rq->err.msg, sizeof rq->err.msg, "the server is shutting down");
        pthread_cond_broadcast(&rq->cv);
        request_release(rq);
    }
    s->wait_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ================================================================ response writers */
static char *error_json(const api_error *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    char *out;
    cJSON_AddStringToObject(o, "message", e->msg);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "server_error");
    cJSON_AddNullToObject(o, "param");
    cJSON_AddNullToObject(o, "code");
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static const char *finish_name(int f) { return f == FIN_STOP ? "stop" : f == FIN_LENGTH ? "length" : NULL; }

static void add_usage(cJSON *root, const request *rq) {
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    int i, gen = 0;
    for (i = 0; i < rq->n; i++) gen += rq->choices[i].n_gen;
    cJSON_AddNumberToObject(u, "prompt_tokens", rq->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", gen);
    cJSON_AddNumberToObject(u, "total_tokens", rq->n_prompt + gen);
}

static cJSON *response_head(const server *s, const request *rq, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", rq->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)rq->created);
    cJSON_AddStringToObject(root, "model", s->cfg.model_name);
    return root;
}

/* A token's text for JSON (malloc'd; invalid UTF-8, e.g. half a character, becomes U+FFFD); with
   bytes (not NULL) its exact bytes, as OpenAI's chat logprobs also give them. */
static char *token_text(const server *s, mllm_token tok, cJSON *bytes) {
    char piece[512], *t = NULL;
    size_t len = 0, cap = 0;
    int n = mllm_token_to_bytes(mllm_model_vocab(s->model), tok, piece, sizeof piece), i;
    if (n < 0) n = 0;
    if (buf_append_utf8(&t, &len, &cap, piece, (size_t)n) || !t) { free(t); t = strdup(""); }
    for (i = 0; bytes && i < n; i++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)piece[i]));
    return t;
}

static cJSON *chat_logprob_item(const server *s, mllm_token tok, float lp) {   /* {token, logprob, bytes} */
    cJSON *o = cJSON_CreateObject(), *bytes = cJSON_CreateArray();
    char *t = token_text(s, tok, bytes);
    cJSON_AddStringToObject(o, "token", t ? t : "");
    cJSON_AddNumberToObject(o, "logprob", lp);
    cJSON_AddItemToObject(o, "bytes", bytes);
    free(t);
    return o;
}

/* choice c's logprobs of tokens [from, to): chat's {"content": [{token, logprob, bytes, top_logprobs}]}
   or completions' {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}]}, whose maps hold the
   top ones and the sampled one (OpenAI's "up to logprobs + 1"). */
static cJSON *logprobs_json(const server *s, const request *rq, const choice *c, int from, int to) {
    cJSON *o = cJSON_CreateObject(), *content = NULL, *toks = NULL, *tlps = NULL, *tops = NULL;
    int k = rq->top_logprobs < s->cfg.n_vocab ? rq->top_logprobs : s->cfg.n_vocab, i, j;
    if (rq->endpoint == EP_CHAT) {
        content = cJSON_AddArrayToObject(o, "content");
    } else {
        toks = cJSON_AddArrayToObject(o, "tokens");
        tlps = cJSON_AddArrayToObject(o, "token_logprobs");
        tops = cJSON_AddArrayToObject(o, "top_logprobs");
    }
    for (i = from; i < to; i++) {
        const logprob *e = &c->lps[i];
        if (content) {
            cJSON *it = chat_logprob_item(s, e->token, e->lp), *alts = cJSON_AddArrayToObject(it, "top_logprobs");
            for (j = 0; j < k; j++) cJSON_AddItemToArray(alts, chat_logprob_item(s, e->top[j], e->top_lp[j]));
            cJSON_AddItemToArray(content, it);
        } else {
            cJSON *m = cJSON_CreateObject();
            char *t = token_text(s, e->token, NULL);
            cJSON_AddItemToArray(toks, cJSON_CreateString(t ? t : ""));
            cJSON_AddItemToArray(tlps, cJSON_CreateNumber(e->lp));
            for (j = 0; j <= k; j++) {   /* j == k: the sampled token, when not among the top ones */
                char *a = j < k ? token_text(s, e->top[j], NULL) : t;
                if (a && !cJSON_GetObjectItemCaseSensitive(m, a)) cJSON_AddNumberToObject(m, a, j < k ? e->top_lp[j] : e->lp);
                if (j < k) free(a);
            }
            cJSON_AddItemToArray(tops, m);
            free(t);
        }
    }
    return o;
}

/* The whole answer of a finished non-streaming request. */
static char *final_json(const server *s, const request *rq) {
    cJSON *root = response_head(s, rq, rq->endpoint == EP_CHAT ? "chat.completion" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(root, "choices");
    char *out;
    int i;
    for (i = 0; i < rq->n; i++) {
        const choice *c = &rq->choices[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        if (rq->endpoint == EP_CHAT) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", c->text ? c->text : "");
        } else {
            cJSON_AddStringToObject(ch, "text", c->text ? c->text : "");
        }
        if (rq->logprobs) cJSON_AddItemToObject(ch, "logprobs", logprobs_json(s, rq, c, 0, c->n_lps));
        else cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddStringToObject(ch, "finish_reason", finish_name(c->finish) ? finish_name(c->finish) : "stop");
        cJSON_AddItemToArray(arr, ch);
    }
    add_usage(root, rq);
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static int sse_put(request *rq, cJSON *root) {   /* "data: {json}\n\n" to the writer buffer */
    char *json = cJSON_PrintUnformatted(root);
    int rc = !json || buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, "data: ", 6) ||
             buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, json, strlen(json)) || buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, "\n\n", 2);
    free(json);
    cJSON_Delete(root);
    return rc ? -1 : 0;
}

/* One SSE chunk for choice i: new text (len bytes at text) and/or its finish reason. */
static int sse_choice(const server *s, request *rq, int i, const char *text, size_t len, int finish, int role) {
    int chat = rq->endpoint == EP_CHAT;
    cJSON *root = response_head(s, rq, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *ch = cJSON_CreateObject();
    char *t = (char *)malloc(len + 1);
    if (!t) { cJSON_Delete(root); cJSON_Delete(ch); return -1; }
    memcpy(t, text, len);
    t[len] = 0;
    cJSON_AddNumberToObject(ch, "index", i);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (len || role) cJSON_AddStringToObject(d, "content", t);
    } else {
        cJSON_AddStringToObject(ch, "text", t);
    }
    free(t);
    /* logprobs of the tokens generated since the last chunk (their text may still be held back) */
    if (rq->logprobs && rq->choices[i].lps_sent < rq->choices[i].n_lps) {
        choice *c = &rq->choices[i];
        cJSON_AddItemToObject(ch, "logprobs", logprobs_json(s, rq, c, c->lps_sent, c->n_lps));
        c->lps_sent = c->n_lps;
    } else {
        cJSON_AddNullToObject(ch, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(ch, "finish_reason", finish_name(finish));
    else cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), ch);
    return sse_put(rq, root);
}

static int stream_has_news(const request *rq) {
    int i;
    if (rq->state == RQ_DONE) return 1;
    for (i = 0; i < rq->n; i++) {
        const choice *c = &rq->choices[i];
        if (c->safe > c->sent || (c->finish && !c->finish_sent)) return 1;
    }
    return 0;
}

/* Formats what is new since the last call into the writer buffer (under mu). */
static int stream_collect(const server *s, request *rq) {
    int i;
    if (rq->err.http) {   /* failed after the stream began: an error event, as OpenAI sends */
        char *e = error_json(&rq->err);
        int rc = !e || buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, "data: ", 6) ||
                 buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, e, strlen(e)) || buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, "\n\n", 2);
        free(e);
        rq->done_sent = 1;
        return rc || buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, "data: [DONE]\n\n", 14) ? -1 : 0;
    }
    for (i = 0; i < rq->n; i++) {
        choice *c = &rq->choices[i];
        int role = rq->endpoint == EP_CHAT && !c->role_sent;
        if (c->safe > c->sent || role) {
            if (sse_choice(s, rq, i, c->text ? c->text + c->sent : "", c->safe - c->sent, 0, role)) return -1;
            c->sent = c->safe;
            c->role_sent = 1;
        }
        if (c->finish && !c->finish_sent && c->sent == c->len) {
            if (sse_choice(s, rq, i, "", 0, c->finish, 0)) return -1;
            c->finish_sent = 1;
        }
    }
    if (rq->state == RQ_DONE) {
        if (rq->include_usage) {
            cJSON *root = response_head(s, rq, rq->endpoint == EP_CHAT ? "chat.completion.chunk" : "text_completion");
            cJSON_AddArrayToObject(root, "choices");
            add_usage(root, rq);
            if (sse_put(rq, root)) return -1;
        }
        rq->done_sent = 1;
        return buf_append(&rq->wbuf, &rq->wlen, &rq->wcap, "data: [DONE]\n\n", 14);
    }
    return 0;
}

/* ================================================================ HTTP layer (libmicrohttpd) */
typedef struct conn_state {   /* one HTTP request on a connection: its body */
    char *body;
    size_t len, cap;
    int too_big;
} conn_state;

static server g_srv;              /* one per process (signals and MHD callbacks reach it) */
static size_t g_max_body = 1 << 20;

/* The peer closed its end (or reset it): checked while a request waits, so an abandoned request stops
   generating within a second even when no output is being written. */
static int client_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;
    char b;
    if (!ci) return 0;
    p.fd = ci->connect_fd;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return 1;
    return recv(ci->connect_fd, &b, 1, MSG_PEEK) <= 0;
}

static void cancel_request(server *s, request *rq) {   /* under mu */
    if (rq->state == RQ_DONE) return;
    rq->cancelled = 1;
    pthread_cond_signal(&s->wake);
}

/* Waits (under mu) until cond(rq) holds; 0, or -1 when the client left or the server stops. */
static int wait_for(server *s, request *rq, int (*cond)(const request *)) {
    while (!cond(rq)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&rq->cv, &s->mu, &ts);   /* woken by output, or once a second */
        if (!cond(rq) && client_gone(rq->conn)) {
            cancel_request(s, rq);
            return -1;
        }
    }
    return 0;
}

static int is_done(const request *rq) { return rq->state == RQ_DONE; }
static int first_output(const request *rq) {
    int i;
    if (rq->state == RQ_DONE) return 1;
    for (i = 0; i < rq->n; i++)
        if (rq->choices[i].safe > 0 || rq->choices[i].finish || rq->choices[i].n_gen > 0) return 1;
    return 0;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned code, char *json) {   /* takes json */
    struct MHD_Response *resp;
    enum MHD_Result ret;
    if (!json) return MHD_NO;
    resp = MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(json); return MHD_NO; }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    ret = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, int http, const char *type, const char *msg) {
    api_error e;
    e.http = http;
    e.type = type;
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    return send_json(conn, (unsigned)http, error_json(&e));
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    request *rq = (request *)cls;
    server *s = &g_srv;
    (void)pos;
    for (;;) {
        if (rq->woff < rq->wlen) {
            size_t n = rq->wlen - rq->woff < max ? rq->wlen - rq->woff : max;
            memcpy(buf, rq->wbuf + rq->woff, n);
            rq->woff += n;
            return (ssize_t)n;
        }
        rq->wlen = rq->woff = 0;
        if (rq->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&s->mu);
        if (wait_for(s, rq, stream_has_news) || stream_collect(s, rq)) {
            cancel_request(s, rq);
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

static void stream_free(void *cls) {   /* the response is gone: sent, or the client left */
    request *rq = (request *)cls;
    pthread_mutex_lock(&g_srv.mu);
    cancel_request(&g_srv, rq);
    request_release(rq);
    pthread_mutex_unlock(&g_srv.mu);
}

static enum MHD_Result handle_generate(server *s, struct MHD_Connection *conn, int endpoint, const conn_state *cs) {
    request *rq = (request *)calloc(1, sizeof *rq);
    api_error err;
    uint64_t seed, idn;
    if (!rq) return send_error(conn, 500, "server_error", "out of memory");
    pthread_cond_init(&rq->cv, NULL);
    pthread_mutex_lock(&s->mu);
    seed = ++s->seed_counter * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    idn = s->seed_counter;
    pthread_mutex_unlock(&s->mu);
    if (parse_request(&s->cfg, s->model, endpoint, cs->body ? cs->body : "", cs->len, seed, rq, &err)) {
        request_free(rq);
        return send_json(conn, (unsigned)err.http, error_json(&err));
    }
    snprintf(rq->id, sizeof rq->id, "%s%016llx", endpoint == EP_CHAT ? "chatcmpl-" : "cmpl-", (unsigned long long)(seed ^ idn << 40));
    rq->created = (long long)time(NULL);
    rq->conn = conn;
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_waiting + s->n_running >= s->cfg.parallel + s->cfg.max_waiting) {
        pthread_mutex_unlock(&s->mu);
        request_free(rq);
        return send_error(conn, 503, "server_error", "the server is busy: too many requests waiting; retry later");
    }
    rq->refs = 2;   /* the engine's and this connection's */
    rq->state = RQ_WAITING;
    if (s->wait_tail) s->wait_tail->next = rq; else s->wait_head = rq;
    s->wait_tail = rq;
    s->n_waiting++;
    s->n_served++;
    pthread_cond_signal(&s->wake);
    if (rq->stream) {
        struct MHD_Response *resp;
        enum MHD_Result ret;
        /* headers go out with the first token, so an error before it still gets its HTTP status */
        if (wait_for(s, rq, first_output)) { request_release(rq); pthread_mutex_unlock(&s->mu); return MHD_NO; }
        if (rq->err.http) {
            api_error e = rq->err;
            request_release(rq);
            pthread_mutex_unlock(&s->mu);
            return send_json(conn, (unsigned)e.http, error_json(&e));
        }
        pthread_mutex_unlock(&s->mu);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, rq, stream_free);
        if (!resp) { pthread_mutex_lock(&s->mu); cancel_request(s, rq); request_release(rq); pthread_mutex_unlock(&s->mu); return MHD_NO; }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);   /* stream_free runs when the connection is done with it */
        return ret;
    } else {
        char *json;
        unsigned code = 200;
        if (wait_for(s, rq, is_done)) { request_release(rq); pthread_mutex_unlock(&s->mu); return MHD_NO; }
        if (rq->err.http) { json = error_json(&rq->err); code = (unsigned)rq->err.http; }
        else json = final_json(s, rq);
        request_release(rq);
        pthread_mutex_unlock(&s->mu);
        return send_json(conn, code, json);
    }
}

static enum MHD_Result handle_health(server *s, struct MHD_Connection *conn) {
    cJSON *root = cJSON_CreateObject();
    char *json;
    pthread_mutex_lock(&s->mu);
    cJSON_AddStringToObject(root, "status", "ok");
    cJSON_AddNumberToObject(root, "requests_running", s->n_running);
    cJSON_AddNumberToObject(root, "requests_waiting", s->n_waiting);
    cJSON_AddNumberToObject(root, "slots_used", s->slots_used);
    cJSON_AddNumberToObject(root, "slots_total", s->cfg.parallel);
    cJSON_AddNumberToObject(root, "kv_blocks_free", s->kv_free);
    cJSON_AddNumberToObject(root, "kv_blocks_total", s->kv_total);
    cJSON_AddNumberToObject(root, "requests_served", (double)s->n_served);
    pthread_mutex_unlock(&s->mu);
    json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return send_json(conn, 200, json);
}

static enum MHD_Result handle_models(server *s, struct MHD_Connection *conn) {
    cJSON *root = cJSON_CreateObject(), *m = cJSON_CreateObject();
    char *json;
    cJSON_AddStringToObject(root, "object", "list");
    cJSON_AddStringToObject(m, "id", s->cfg.model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "metalllm.h");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), m);
    json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return send_json(conn, 200, json);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    server *s = (server *)cls;
    conn_state *cs = (conn_state *)*con_cls;
    int post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    (void)version;
    if (!cs) {   /* first call: headers only */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!(cs = (conn_state *)calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        if (cl && strtoull(cl, NULL, 10) > g_max_body) cs->too_big = 1;
        if (cs->too_big) return send_error(conn, 413, "invalid_request_error", "the request body is too large");
        return MHD_YES;
    }
    if (*upload_size) {   /* a piece of the body */
        if (cs->len + *upload_size > g_max_body) cs->too_big = 1;
        else if (buf_append(&cs->body, &cs->len, &cs->cap, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (cs->too_big) return send_error(conn, 413, "invalid_request_error", "the request body is too large");
    if (!strcmp(url, "/health")) return get ? handle_health(s, conn) : send_error(conn, 405, "invalid_request_error", "use GET");
    if (s->api_key) {
        const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncmp(auth, "Bearer ", 7) || !key_equal(auth + 7, s->api_key))
            return send_error(conn, 401, "invalid_request_error", "invalid API key");
    }
    if (!strcmp(url, "/v1/models")) return get ? handle_models(s, conn) : send_error(conn, 405, "invalid_request_error", "use GET");
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/completions")) {
        if (!post) return send_error(conn, 405, "invalid_request_error", "use POST");
        return handle_generate(s, conn, !strcmp(url, "/v1/chat/completions") ? EP_CHAT : EP_COMPLETION, cs);
    }
    return send_error(conn, 404, "invalid_request_error", "no such endpoint");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    conn_state *cs = (conn_state *)*con_cls;
    (void)cls, (void)conn, (void)toe;
    if (cs) { free(cs->body); free(cs); }
    *con_cls = NULL;
}

/* ================================================================ main */
#ifndef SERVER_NO_MAIN
static void usage(void) {
    fprintf(stderr,
            "usage: server -m MODEL.gguf [options]\n"
            "  --host ADDR        IPv4 address to listen on (default 127.0.0.1)\n"
            "  --port N           (default 8080)\n"
            "  -t N               threads (default: all cores)\n"
            "  -c N               context per sequence (default: model's, at most 4096)\n"
            "  --parallel N       sequences generating at once (default 8; a request with n=k takes k)\n"
            "  --queue N          requests waiting beyond those before 503 (default 64)\n"
            "  --batch N          tokens per step: long prompts are prefilled in chunks (default 256)\n"
            "  --kv-blocks N      KV pool size in 16-token blocks (default: 4 full contexts)\n"
            "  --api-key KEY      require 'Authorization: Bearer KEY' on /v1/*\n"
            "  --alias NAME       model name reported by the API (default: the file name)\n"
            "  --timeout S        idle connection timeout in seconds (default 30)\n"
            "  --max-body BYTES   largest request body (default 1048576)\n"
            "  --metal            run on the GPU (Apple builds)\n"
            "  --cuda             run on an NVIDIA GPU (Linux, needs only the driver; the default\n"
            "                     when there is one and it can run the model)\n"
            "  --cpu              run on the CPU (logprobs need it)\n"
            "  --device N         which GPU (default 0: the first)\n");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *host = "127.0.0.1", *alias = NULL;
    int port = 8080, n_batch = 256, kv_blocks = 0, timeout = 30, i, sig, rc = 0, kv_total = 0;
    server *s = &g_srv;
    mllm_model_params mp;
    mllm_context_params cp;
    mllm_model_info info;
    struct sockaddr_in addr;
    struct MHD_Daemon *http;
    pthread_t engine;
    sigset_t sigs;
    memset(&mp, 0, sizeof mp);
    s->cfg.parallel = 8;
    s->cfg.max_waiting = 64;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("-m")) model_path = v;
        else if (ARG("--host")) host = v;
        else if (ARG("--port")) port = atoi(v);
        else if (ARG("-t")) mp.n_threads = atoi(v);
        else if (ARG("-c")) mp.n_ctx = atoi(v);
        else if (ARG("--parallel")) s->cfg.parallel = atoi(v);
        else if (ARG("--queue")) s->cfg.max_waiting = atoi(v);
        else if (ARG("--batch")) n_batch = atoi(v);
        else if (ARG("--kv-blocks")) kv_blocks = atoi(v);
        else if (ARG("--api-key")) s->api_key = v;
        else if (ARG("--alias")) alias = v;
        else if (ARG("--timeout")) timeout = atoi(v);
        else if (ARG("--max-body")) g_max_body = (size_t)strtoull(v, NULL, 10);
        else if (ARG("--device")) mp.device = atoi(v);
        else if (!strcmp(a, "--metal")) mp.backend = MLLM_BACKEND_METAL;
        else if (!strcmp(a, "--cuda")) mp.backend = MLLM_BACKEND_CUDA;
        else if (!strcmp(a, "--cpu")) mp.backend = MLLM_BACKEND_CPU;
        else { usage(); return 2; }
#undef ARG
    }
    if (!model_path || port <= 0 || port > 65535 || s->cfg.parallel < 1 || s->cfg.parallel > 4096 || s->cfg.max_waiting < 0 ||
        n_batch < 1 || kv_blocks < 0 || timeout < 1 || mp.n_ctx < 0 || g_max_body < 16) {
        usage();
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "error: --host must be an IPv4 address\n"); return 2; }
    if (mllm_model_load(&s->model, model_path, &mp)) { fprintf(stderr, "error: %s\n", mllm_last_error()); return 1; }
    mllm_model_get_info(s->model, &info);
    s->cfg.n_ctx = mp.n_ctx ? mp.n_ctx : info.n_ctx_train < 4096 ? info.n_ctx_train : 4096;   /* the library's default */
    s->cfg.n_vocab = info.n_vocab;
    if (!alias) alias = strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path;
    s->cfg.model_name = alias;
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = s->cfg.parallel;
    cp.n_batch = n_batch;
    cp.kv_blocks = kv_blocks;
    if (mllm_context_create(&s->ctx, s->model, &cp)) {
        fprintf(stderr, "error: %s\n", mllm_last_error());
        mllm_model_free(s->model);
        return 1;
    }
    s->cfg.host_logits = mllm_context_backend(s->ctx) == MLLM_BACKEND_CPU;   /* CPU steps keep every sequence's logits */
    s->kv_free = mllm_kv_free_blocks(s->ctx, &kv_total);
    s->kv_total = kv_total;   /* the engine thread updates both from now on */
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    /* SIGINT/SIGTERM are taken by sigwait below; every thread started from here inherits the mask */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&engine, NULL, engine_main, s);
    http = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, (uint16_t)port, NULL,
                            NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)timeout,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)(4 * (s->cfg.parallel + s->cfg.max_waiting) + 16),
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,   /* headers: a flood gets 431 */
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!http) {
        fprintf(stderr, "error: cannot listen on %s:%d\n", host, port);
        rc = 1;
    } else {
        fprintf(stderr, "server: %s on http://%s:%d (parallel %d, context %d, KV %d blocks)\n", alias, host, port,
                s->cfg.parallel, s->cfg.n_ctx, kv_total);
        sigwait(&sigs, &sig);
        fprintf(stderr, "server: shutting down\n");
    }
    pthread_mutex_lock(&s->mu);   /* the engine fails what is left; waiting connections then return */
    s->stopping = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(engine, NULL);
    if (http) MHD_stop_daemon(http);
    mllm_context_free(s->ctx);
    mllm_model_free(s->model);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    return rc;
}
#endif
