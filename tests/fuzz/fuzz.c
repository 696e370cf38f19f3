/* libFuzzer targets for metalllm.h, in one binary so the header is compiled once; the name the binary
   is started under picks the target (build-fuzz/fuzz_<target> are links to build-fuzz/fuzz):
     gguf_model    GGUF model load, structure-aware (fuzz_gguf_model.c)
     vocab         vocabulary load (fuzz_vocab.c)
     tokenize      tokenize / detokenize round trips (fuzz_tokenize.c)
     chat          chat formatting (fuzz_chat.c)
     detok_stream  the streaming detokenizer (fuzz_detok_stream.c)
   Seeds come from the test data (seeds.py); `make fuzz FUZZ_SECONDS=N` runs each target. */
#include "fuzz_common.h"
#include "fuzz_gguf_model.c"
#include "fuzz_vocab.c"
#include "fuzz_tokenize.c"
#include "fuzz_chat.c"
#include "fuzz_detok_stream.c"

static int (*fz_one)(const uint8_t *in, size_t n);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *name = strrchr((*argv)[0], '/');
    name = name ? name + 1 : (*argv)[0];
    (void)argc;
    if (!strcmp(name, "fuzz_gguf_model")) { fz_init_gguf_model(); fz_one = fz_one_gguf_model; }
    else if (!strcmp(name, "fuzz_vocab")) fz_one = fz_one_vocab;
    else if (!strcmp(name, "fuzz_tokenize")) { fz_init_tokenize(); fz_one = fz_one_tokenize; }
    else if (!strcmp(name, "fuzz_chat")) fz_one = fz_one_chat;
    else if (!strcmp(name, "fuzz_detok_stream")) { fz_init_detok_stream(); fz_one = fz_one_detok_stream; }
    else { fprintf(stderr, "fuzz: start me as fuzz_<target> (a link), not %s\n", name); abort(); }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n) { return fz_one(in, n); }
