/* libFuzzer over the server's request path: an HTTP body, as either endpoint, through parse_request
   (JSON parse, field types and ranges, UTF-8 checks, chat template, tokenizer, context limit) with a
   tiny model's vocabulary.  The first input byte picks the endpoint.  Every input must give either a
   request or an error with an HTTP status and a message; the sanitizers catch the rest.
     make fuzz-server [FUZZ_TIME=20]      (clang-19: -fsanitize=fuzzer,address,undefined) */
#define SERVER_NO_MAIN
#include "examples/server.c"

static mllm_model *fz_model;
static server_cfg fz_cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *td = getenv("MLLM_TESTDATA");
    char path[1024];
    mllm_model_params mp;
    mllm_model_info info;
    (void)argc, (void)argv;
    memset(&mp, 0, sizeof mp);
    mp.n_threads = 1;
    mp.n_ctx = 256;
    snprintf(path, sizeof path, "%s/tiny/models/tiny-llama-Q8_0.gguf", td ? td : "../shared/testdata");
    if (mllm_model_load(&fz_model, path, &mp)) {
        fprintf(stderr, "fuzz_server: cannot load %s: %s\n", path, mllm_last_error());
        exit(1);
    }
    mllm_model_get_info(fz_model, &info);
    fz_cfg.n_ctx = 256;
    fz_cfg.parallel = 4;
    fz_cfg.max_waiting = 4;
    fz_cfg.n_vocab = info.n_vocab;
    fz_cfg.host_logits = 1;
    fz_cfg.model_name = "tiny";
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    request *rq;
    api_error err;
    int endpoint, rc, i;
    if (size < 1) return 0;
    endpoint = data[0] & 1 ? EP_CHAT : EP_COMPLETION;
    rq = (request *)calloc(1, sizeof *rq);
    pthread_cond_init(&rq->cv, NULL);
    rc = parse_request(&fz_cfg, fz_model, endpoint, (const char *)data + 1, size - 1, 42, rq, &err);
    if (rc) {
        if (err.http < 400 || err.http > 599 || !err.msg[0]) abort();   /* an error always says what */
    } else {
        if (rq->n_prompt < 1 || rq->n_prompt >= fz_cfg.n_ctx || rq->n < 1 || rq->n > fz_cfg.parallel || rq->max_tokens < 1) abort();
        for (i = 0; i < rq->n_prompt; i++)
            if (rq->prompt[i] < 0 || rq->prompt[i] >= fz_cfg.n_vocab) abort();
        for (i = 0; i < rq->n_stop; i++)
            if (!rq->stop[i][0] || !utf8_valid(rq->stop[i], strlen(rq->stop[i]))) abort();
        if (rq->top_logprobs < 0 || rq->top_logprobs > MAX_TOP_LOGPROBS || (rq->top_logprobs && !rq->logprobs)) abort();
    }
    request_free(rq);
    return 0;
}
