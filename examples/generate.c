/* generate: text generation from a GGUF model, with llama.cpp-like flags.
   stdout gets only the generated text (or ids with --ids); timings go to stderr. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>

static void usage(void) {
    fprintf(stderr,
            "usage: generate -m MODEL.gguf [-p PROMPT | -f FILE] [options]\n"
            "  samples by default (the defaults below); --temp 0 for greedy decoding\n"
            "  -p PROMPT            the prompt; without -p and -f it is read from stdin (a pipe)\n"
            "  -f FILE              read the prompt from FILE (- for stdin)\n"
            "  -n N                 tokens to generate, 1 or more (default 128)\n"
            "  -t N                 threads (default: the performance cores, or all usable cores but one\n"
            "                       when there are more than 4; capped to the usable cores)\n"
            "  --metal              run on the GPU (Apple builds; never yet run on hardware)\n"
            "  --cuda               run on an NVIDIA GPU (Linux, needs only the driver; the default\n"
            "                       when there is one and it can run the model)\n"
            "  --cpu                run on the CPU\n"
            "  --device N           which GPU (default 0: the first)\n"
            "  -c N                 context size (default: model's, at most 4096)\n"
            "  --temp T             temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K            (default 40)     --top-p P  (default 0.95)\n"
            "  --min-p P            (default 0.05)   --repeat-penalty R (default 1.0, off)\n"
            "  --repeat-last-n N    penalty window (default 64)\n"
            "  --seed S             sampling seed (default 42): same seed, same text\n"
            "  --chat               wrap the prompt in the model's chat template\n"
            "  --ids                print generated token ids instead of text\n"
            "  --ignore-eos         keep generating after end-of-generation tokens\n"
            "  --dump-logits FILE   write the last prompt token's logits (float32 LE) and exit\n");
}

typedef struct out_state { int ids, first; } out_state;

static int on_piece(const char *piece, int len, mllm_token token, void *user) {
    out_state *o = (out_state *)user;
    if (o->ids) {
        if (token >= 0) printf(o->first ? "%d" : " %d", token);
        o->first = 0;
    } else {
        fwrite(piece, 1, (size_t)len, stdout);
    }
    fflush(stdout);
    return 0;
}

/* Reads a whole file, "-" for stdin, in chunks (pipes have no size; a directory fails to read). */
static char *read_file(const char *path) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (cap - n < 4096) {
            char *nb = cap > ((size_t)1 << 30) ? NULL : (char *)realloc(buf, cap * 2 + 4096);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap = cap * 2 + 4096;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) { free(buf); buf = NULL; }
            break;
        }
    }
    if (buf) buf[n] = 0;
    if (f != stdin) fclose(f);
    return buf;
}

/* Strict flag values: the whole string must be a number in range, else a message and exit code 2. */
static int parse_int(const char *flag, const char *v, long lo, long hi) {
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "error: %s expects an integer from %ld to %ld, got '%s'\n", flag, lo, hi, v);
        exit(2);
    }
    return (int)x;
}

static float parse_float(const char *flag, const char *v) {
    char *end;
    float x;
    errno = 0;
    x = strtof(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "error: %s expects a number, got '%s'\n", flag, v);
        exit(2);
    }
    return x;
}

/* Runs the prompt through one step and writes the logits that decide the first generated token. */
static int dump_logits(mllm_model *model, const char *prompt, const char *path) {
    const mllm_vocab *vocab = mllm_model_vocab(model);
    mllm_context_params cp;
    mllm_seq_params sp;
    mllm_context *ctx;
    mllm_seq_id id;
    mllm_step_result r;
    mllm_model_info info;
    const float *logits;
    mllm_token *toks;
    int n = mllm_tokenize(vocab, prompt, strlen(prompt), NULL, 0, MLLM_TOKENIZE_ADD_SPECIAL | MLLM_TOKENIZE_PARSE_SPECIAL);
    FILE *f;
    if (n <= 0) { fprintf(stderr, "error: empty prompt\n"); return 1; }
    toks = (mllm_token *)malloc(sizeof(mllm_token) * (size_t)n);
    mllm_tokenize(vocab, prompt, strlen(prompt), toks, n, MLLM_TOKENIZE_ADD_SPECIAL | MLLM_TOKENIZE_PARSE_SPECIAL);
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = 1;
    memset(&sp, 0, sizeof sp);
    sp.manual = 1;   /* keeps its logits on any backend (a GPU samples the others where they are) */
    if (mllm_context_create(&ctx, model, &cp) || mllm_seq_add(ctx, toks, n, &sp, &id) || mllm_step(ctx, &r)) {
        fprintf(stderr, "error: %s\n", mllm_last_error());
        free(toks);
        return 1;
    }
    mllm_model_get_info(model, &info);
    logits = mllm_seq_logits(ctx, id);
    f = fopen(path, "wb");
    if (!logits || !f || fwrite(logits, sizeof(float), (size_t)info.n_vocab, f) != (size_t)info.n_vocab) {
        fprintf(stderr, "error: cannot write %s\n", path);
        if (f) fclose(f);
        mllm_context_free(ctx);
        free(toks);
        return 1;
    }
    fclose(f);
    mllm_context_free(ctx);
    free(toks);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *dump = NULL;
    char *prompt_buf = NULL, *chat_buf = NULL;
    mllm_model_params mp;
    mllm_generate_params gp;
    mllm_generate_stats stats;
    mllm_model *model;
    mllm_status st;
    out_state o;
    int i, chat = 0, rc = 0;
    double t0, t_load;
    memset(&mp, 0, sizeof mp);
    memset(&gp, 0, sizeof gp);
    memset(&o, 0, sizeof o);
    o.first = 1;
    gp.max_tokens = 128;
    gp.sampler.temperature = 0.8f;
    gp.sampler.top_k = 40;
    gp.sampler.top_p = 0.95f;
    gp.sampler.min_p = 0.05f;
    gp.sampler.seed = 42;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("-m")) model_path = v;
        else if (ARG("-p")) prompt = v;
        else if (ARG("-f")) prompt_file = v;
        else if (ARG("-n")) gp.max_tokens = parse_int(a, v, 1, INT_MAX);
        else if (ARG("-t")) mp.n_threads = parse_int(a, v, 0, 1024);
        else if (!strcmp(a, "--metal")) mp.backend = MLLM_BACKEND_METAL;
        else if (!strcmp(a, "--cuda")) mp.backend = MLLM_BACKEND_CUDA;
        else if (!strcmp(a, "--cpu")) mp.backend = MLLM_BACKEND_CPU;
        else if (ARG("--device")) mp.device = parse_int(a, v, 0, INT_MAX);
        else if (ARG("-c")) mp.n_ctx = parse_int(a, v, 0, INT_MAX);
        else if (ARG("--temp")) gp.sampler.temperature = parse_float(a, v);
        else if (ARG("--top-k")) gp.sampler.top_k = parse_int(a, v, INT_MIN, INT_MAX);
        else if (ARG("--top-p")) gp.sampler.top_p = parse_float(a, v);
        else if (ARG("--min-p")) gp.sampler.min_p = parse_float(a, v);
        else if (ARG("--repeat-penalty")) gp.sampler.repeat_penalty = parse_float(a, v);
        else if (ARG("--repeat-last-n")) gp.sampler.penalty_last_n = parse_int(a, v, INT_MIN, INT_MAX);
        else if (ARG("--seed")) {
            char *end;
            errno = 0;
            gp.sampler.seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || *v == '-') { fprintf(stderr, "error: --seed expects an unsigned integer, got '%s'\n", v); return 2; }
        }
        else if (ARG("--dump-logits")) dump = v;
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--ids")) o.ids = 1;
        else if (!strcmp(a, "--ignore-eos")) gp.ignore_eog = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else { usage(); return 2; }
#undef ARG
    }
    if (!model_path) { usage(); return 2; }
    if (mllm_sampler_params_check(&gp.sampler) != MLLM_OK) {   /* the library's own check, before the load */
        fprintf(stderr, "error: %s\n", mllm_last_error());
        return 2;
    }
    if (!prompt && !prompt_file) {
        if (isatty(0)) { usage(); return 2; }
        prompt_file = "-";
    }
    if (prompt_file && !(prompt = prompt_buf = read_file(prompt_file))) {
        fprintf(stderr, "error: cannot read %s\n", strcmp(prompt_file, "-") ? prompt_file : "stdin");
        return 1;
    }
    t0 = (double)clock();
    {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        st = mllm_model_load(&model, model_path, &mp);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t_load = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    }
    (void)t0;
    if (st) {
        fprintf(stderr, "error: %s\n", mllm_last_error());
        free(prompt_buf);
        return 1;
    }
    if (chat) {
        mllm_chat_message msg;
        int need;
        msg.role = "user";
        msg.content = prompt;
        need = mllm_chat_format(model, &msg, 1, NULL, 0);
        if (need < 0 || !(chat_buf = (char *)malloc((size_t)need))) {
            fprintf(stderr, "error: %s\n", mllm_last_error());
            mllm_model_free(model);
            free(prompt_buf);
            return 1;
        }
        mllm_chat_format(model, &msg, 1, chat_buf, need);
        prompt = chat_buf;
    }
    if (dump) {
        rc = dump_logits(model, prompt, dump);
    } else {
        st = mllm_generate_ex(model, prompt, &gp, on_piece, &o, &stats);
        printf("\n");
        fflush(stdout);
        if (st) {
            fprintf(stderr, "error: %s\n", mllm_last_error());
            rc = 1;
        }
        fprintf(stderr, "load: %.3f s | prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s\n", t_load,
                stats.n_prompt, stats.prefill_seconds > 0 ? stats.n_prompt / stats.prefill_seconds : 0.0,
                stats.n_generated, stats.decode_seconds > 0 ? (stats.n_generated - 1) / stats.decode_seconds : 0.0);
    }
    mllm_model_free(model);
    free(chat_buf);
    free(prompt_buf);
    return rc;
}
