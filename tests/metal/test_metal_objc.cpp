// metalllm.h's real Metal backend (the Objective-C layer: MLLM__HAVE_METAL, every objc_msgSend of the
// header) run on Linux over the fake Metal framework of tests/metal/ (fake_metal.cpp: its own
// objc_msgSend, retain counts, autorelease pools, MTL objects executing on the MSL emulator), through
// the public API with backend = MLLM_BACKEND_METAL.  Checked against the CPU backend (precise mode, the
// kernels' F32 activations): greedy tokens of dense and MoE models (all GPU weight types and SmolLM2:
// build/test_metal_gpu, the same path compiled as C); 4 concurrent sequences with a fork against their solo runs; one command buffer and one
// wait per step (counted by the fake device); at context free every object the header made released
// (none left alive, no message or release to a released object, no autorelease outside a pool);
// limits: maxTotalThreadsPerThreadgroup 256 (correct tokens) and 64 (MLLM_ERR_UNSUPPORTED), a GPU
// without Apple7 and a 16-wide simdgroup (MLLM_ERR_UNSUPPORTED at context creation), a small
// maxBufferLength (weights in several buffers, wrapped or copied), nil queue / command buffer /
// encoder and compile errors as errors; the embedded metallib preferred over the source; fast math off.
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "emu_test.hpp"
#include "fake_metal.h"

#include <string>
#include <vector>

namespace {
std::string testdata() {
    const char *e = getenv("MLLM_TESTDATA");
    return e ? e : "../shared/testdata";
}
std::string model_path(const std::string &name) {
    if (name == "smollm2") {
        const char *e = getenv("MLLM_MODEL");
        return e ? e : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    }
    return testdata() + "/tiny/models/" + name + ".gguf";
}

// What the fake saw since the last reset is clean: nothing the header made still alive, no misuse.
void check_clean(const char *what) {
    const fake_metal_stats &s = fake_metal_stat();
    CHECK(s.objects_live == 0, "%s: %llu of %llu objects never released: %s", what, (unsigned long long)s.objects_live,
          (unsigned long long)s.objects_created, fake_metal_live_report().c_str());
    for (size_t i = 0; i < s.misuse.size() && i < 5; i++) CHECK(false, "%s: misuse: %s", what, s.misuse[i].c_str());
    fake_metal_reset();
}

mllm_model *load(const std::string &name, mllm_backend backend) {
    mllm_model *m = nullptr;
    mllm_model_params mp;
    memset(&mp, 0, sizeof mp);
    mp.n_threads = 2;
    mp.precise = backend == MLLM_BACKEND_CPU;   // F32 activations, as the kernels use
    mp.backend = backend;
    const mllm_status st = mllm_model_load(&m, model_path(name).c_str(), &mp);
    CHECK(st == MLLM_OK, "%s: %s", name.c_str(), mllm_last_error());
    return st == MLLM_OK ? m : nullptr;
}

mllm_context_params ctx_params(int n_seq) {
    mllm_context_params cp;
    memset(&cp, 0, sizeof cp);
    cp.n_seq_max = n_seq;
    cp.kv_blocks = 16;
    cp.n_batch = 32;
    return cp;
}

struct run_seq {
    std::vector<mllm_token> prompt;
    int start_step = 0;
    int fork_of = -1;            // >= 0: forked from that sequence when this one starts
    int n_gen = 6;
    std::vector<mllm_token> out;
    mllm_seq_id id = -1;
    mllm_status status = MLLM_OK;
};

// Runs the sequences to completion (greedy); returns the first failing status (of a call or a sequence).
mllm_status run(mllm_context *ctx, std::vector<run_seq> &seqs, int *steps = nullptr) {
    int step = 0, active = 0;
    for (;; step++) {
        for (run_seq &s : seqs) {
            if (s.start_step != step || s.id >= 0) continue;
            mllm_seq_params sp;
            memset(&sp, 0, sizeof sp);
            sp.max_tokens = s.n_gen;
            sp.ignore_eog = 1;
            mllm_status st = s.fork_of >= 0 ? mllm_seq_fork(ctx, seqs[s.fork_of].id, &sp, &s.id)
                                            : mllm_seq_add(ctx, s.prompt.data(), (int)s.prompt.size(), &sp, &s.id);
            if (st != MLLM_OK) return st;
            active++;
        }
        bool later = false;
        for (const run_seq &s : seqs) later |= s.id < 0;
        if (!active && !later) break;
        mllm_step_result r;
        mllm_status st = mllm_step(ctx, &r);
        if (st != MLLM_OK) return st;
        for (int i = 0; i < r.n_tokens; i++)
            for (run_seq &s : seqs)
                if (s.id == r.tokens[i].seq) {
                    if (r.tokens[i].token >= 0) s.out.push_back(r.tokens[i].token);
                    if (r.tokens[i].finished) { s.status = r.tokens[i].status; active--; }
                }
        if (step > 1000) return MLLM_ERR_BACKEND;
    }
    if (steps) *steps = step;
    for (const run_seq &s : seqs)
        if (s.status != MLLM_OK) return s.status;
    return MLLM_OK;
}

// Greedy tokens of one prompt on a model (a fresh context); st gets the status.
std::vector<mllm_token> greedy(mllm_model *m, const std::vector<mllm_token> &prompt, int n_gen, mllm_status *st,
                               int *steps = nullptr) {
    std::vector<run_seq> seqs(1);
    seqs[0].prompt = prompt;
    seqs[0].n_gen = n_gen;
    mllm_context *ctx = nullptr;
    mllm_context_params cp = ctx_params(1);
    *st = mllm_context_create(&ctx, m, &cp);
    if (*st == MLLM_OK) *st = run(ctx, seqs, steps);
    mllm_context_free(ctx);
    return seqs[0].out;
}

std::string str(const std::vector<mllm_token> &t) {
    std::string s;
    for (mllm_token x : t) s += std::to_string(x) + " ";
    return s;
}

const std::vector<mllm_token> prompt_a = {1, 450, 3996, 1354, 1701, 432};   // (< 4096: the tiny vocabularies)

// The tokens of model `name` through the fake Metal device equal the CPU's; everything released.
void check_model_tokens(const std::string &name, int n_gen, const char *setting) {
    mllm_model *cpu = load(name, MLLM_BACKEND_CPU), *gpu = load(name, MLLM_BACKEND_METAL);
    if (!cpu || !gpu) { mllm_model_free(cpu); mllm_model_free(gpu); return; }
    std::vector<mllm_token> prompt = prompt_a;
    for (mllm_token &t : prompt) t %= cpu->hp.n_vocab;
    mllm_status st_c, st_g;
    int steps = 0;
    const std::vector<mllm_token> want = greedy(cpu, prompt, n_gen, &st_c);
    const std::vector<mllm_token> got = greedy(gpu, prompt, n_gen, &st_g, &steps);
    CHECK(st_c == MLLM_OK && st_g == MLLM_OK, "%s%s: cpu %d, metal %d: %s", name.c_str(), setting, st_c, st_g, mllm_last_error());
    CHECK(got == want && (int)got.size() == n_gen, "%s%s: metal tokens %s, cpu %s", name.c_str(), setting, str(got).c_str(),
          str(want).c_str());
    const fake_metal_stats &s = fake_metal_stat();
    CHECK(s.command_buffers == (uint64_t)steps && s.commits == (uint64_t)steps && s.waits == (uint64_t)steps,
          "%s: %d steps: %llu command buffers, %llu commits, %llu waits", name.c_str(), steps,
          (unsigned long long)s.command_buffers, (unsigned long long)s.commits, (unsigned long long)s.waits);
    CHECK(s.last_fast_math == 0, "%s: the library was compiled with fast math (%d)", name.c_str(), s.last_fast_math);
    printf("  %-22s%s metal = cpu: %s(%d steps, %llu dispatches, %llu objects made)\n", name.c_str(), setting, str(got).c_str(), steps,
           (unsigned long long)s.dispatches, (unsigned long long)s.objects_created);
    mllm_model_free(cpu);
    mllm_model_free(gpu);
    check_clean(name.c_str());
}
}  // namespace

EMU_TEST(metal_objc_models_match_cpu_with_every_object_released) {
    fake_metal_reset();
    // dense and MoE, plain and K-quant types, NeoX rope and biases (qwen2); every GPU weight type and
    // SmolLM2 run in build/test_metal_gpu (the same Objective-C path, compiled as C)
    const char *models[] = {"tiny-llama-F32", "tiny-llama-Q4_K_M", "tiny-qwen2-Q8_0", "tiny-qwen3moe-Q8_0"};
    for (const char *m : models) check_model_tokens(m, 5, "");
}

EMU_TEST(metal_objc_concurrent_sequences_and_fork_match_solo_runs) {
    fake_metal_reset();
    mllm_model *m = load("tiny-llama-Q8_0", MLLM_BACKEND_METAL);
    if (!m) return;
    const std::vector<mllm_token> pa = {1, 450, 3996, 17, 1701}, pb = {1, 22, 333, 4000}, pc = {1, 7, 8, 9, 10, 11, 12};
    mllm_status st;
    const std::vector<mllm_token> solo_a = greedy(m, pa, 8, &st);
    const std::vector<mllm_token> solo_b = greedy(m, pb, 6, &st);
    const std::vector<mllm_token> solo_c = greedy(m, pc, 5, &st);
    CHECK(st == MLLM_OK && solo_a.size() == 8, "solo runs: %s", mllm_last_error());
    if (solo_a.size() != 8) { mllm_model_free(m); return; }
    fake_metal_reset();
    std::vector<run_seq> seqs(4);
    seqs[0].prompt = pa; seqs[0].n_gen = 8;
    seqs[1].prompt = pb; seqs[1].n_gen = 6;
    seqs[2].prompt = pc; seqs[2].n_gen = 5; seqs[2].start_step = 2;
    seqs[3].fork_of = 0; seqs[3].start_step = 3; seqs[3].n_gen = 4;   // a copy of a after its 2nd token (shared blocks)
    mllm_context *ctx = nullptr;
    mllm_context_params cp = ctx_params(4);
    int steps = 0;
    st = mllm_context_create(&ctx, m, &cp);
    if (st == MLLM_OK) st = run(ctx, seqs, &steps);
    CHECK(st == MLLM_OK, "concurrent run: %s", mllm_last_error());
    CHECK(seqs[0].out == solo_a, "a: %s, solo %s", str(seqs[0].out).c_str(), str(solo_a).c_str());
    CHECK(seqs[1].out == solo_b, "b: %s, solo %s", str(seqs[1].out).c_str(), str(solo_b).c_str());
    CHECK(seqs[2].out == solo_c, "c: %s, solo %s", str(seqs[2].out).c_str(), str(solo_c).c_str());
    // the fork continues a's greedy text from where it was forked: a's tokens from the 3rd on
    const std::vector<mllm_token> want_d(solo_a.begin() + 2, solo_a.begin() + 6);
    CHECK(seqs[3].out == want_d, "fork: %s, a's continuation %s", str(seqs[3].out).c_str(), str(want_d).c_str());
    const fake_metal_stats &s = fake_metal_stat();
    CHECK(s.command_buffers == (uint64_t)steps && s.waits == (uint64_t)steps, "%d steps, %llu command buffers, %llu waits", steps,
          (unsigned long long)s.command_buffers, (unsigned long long)s.waits);
    mllm_context_free(ctx);
    mllm_model_free(m);
    check_clean("concurrent");
}

EMU_TEST(metal_objc_thread_limits_give_tokens_or_unsupported) {
    fake_metal_reset();
    fake_metal_config().max_threads = 256;   // reductions and sampling capped to 256 threads: same tokens
    check_model_tokens("tiny-llama-Q4_K_M", 4, " (max threads 256)");
    fake_metal_config().max_threads = 256;
    check_model_tokens("tiny-qwen3moe-Q8_0", 3, " (max threads 256)");
    // 64: the fixed 128- and 256-thread kernels cannot run: the step fails, no token comes out
    mllm_model *m = load("tiny-llama-Q8_0", MLLM_BACKEND_METAL);
    if (!m) return;
    fake_metal_config().max_threads = 64;
    mllm_status st;
    std::vector<mllm_token> got = greedy(m, {1, 2, 3}, 3, &st);
    CHECK(st == MLLM_ERR_UNSUPPORTED && strstr(mllm_last_error(), "threads per threadgroup") && got.empty(),
          "max threads 64: status %d (%s), %zu tokens", st, mllm_last_error(), got.size());
    printf("  max threads 64: %s\n", mllm_last_error());
    CHECK(fake_metal_stat().misuse.empty(), "an over-limit dispatch reached the device");
    check_clean("max threads 64");
    // below one simdgroup, or a 16-wide simdgroup: refused when the context opens the device
    const unsigned limits[2][2] = {{16, 1024}, {32, 16}};
    for (const auto &l : limits) {
        fake_metal_config().simd_width = l[0];
        fake_metal_config().max_threads = l[1];
        mllm_context *ctx = nullptr;
        mllm_context_params cp = ctx_params(1);
        st = mllm_context_create(&ctx, m, &cp);
        CHECK(st == MLLM_ERR_UNSUPPORTED && !ctx && strstr(mllm_last_error(), "simdgroups"), "width %u, max %u: status %d (%s)", l[0],
              l[1], st, mllm_last_error());
        check_clean("simd width");
    }
    printf("  16-wide: %s\n", mllm_last_error());
    mllm_model_free(m);
}

EMU_TEST(metal_objc_device_without_apple7_is_unsupported) {
    fake_metal_reset();
    fake_metal_config().apple7 = false;
    mllm_model *m = load("tiny-llama-Q8_0", MLLM_BACKEND_METAL);
    if (!m) return;
    mllm_context *ctx = nullptr;
    mllm_context_params cp = ctx_params(1);
    const mllm_status st = mllm_context_create(&ctx, m, &cp);
    CHECK(st == MLLM_ERR_UNSUPPORTED && !ctx && strstr(mllm_last_error(), "Apple7"), "status %d: %s", st, mllm_last_error());
    printf("  %s\n", mllm_last_error());
    mllm_model_free(m);
    check_clean("no Apple7");
}

EMU_TEST(metal_objc_weights_split_by_max_buffer_length) {
    for (int copy = 0; copy < 2; copy++) {
        fake_metal_reset();
        mllm_model *cpu = load("tiny-llama-Q8_0", MLLM_BACKEND_CPU), *gpu = load("tiny-llama-Q8_0", MLLM_BACKEND_METAL);
        if (!cpu || !gpu) return;
        size_t largest = 0;
        for (uint64_t i = 0; i < gpu->gguf.n_tensors; i++) largest = std::max(largest, gpu->gguf.tensors[i].nbytes);
        fake_metal_config().max_buffer = (largest + 3 * 4096) / 4096 * 4096;   // the file is over 3 times that
        fake_metal_config().refuse_nocopy = copy;
        mllm_context *ctx = nullptr;
        mllm_context_params cp = ctx_params(1);
        mllm_status st = mllm_context_create(&ctx, gpu, &cp);
        CHECK(st == MLLM_OK, "%s", mllm_last_error());
        if (ctx) {
            CHECK(ctx->gpu.n_wbufs > 2 && gpu->gguf.size > 2 * fake_metal_config().max_buffer, "%d weight buffers", ctx->gpu.n_wbufs);
            for (int i = 0; i < ctx->gpu.n_wbufs; i++)
                CHECK(ctx->gpu.wlen[i] <= fake_metal_config().max_buffer, "piece %d: %zu bytes", i, ctx->gpu.wlen[i]);
            printf("  %s: %.2f MiB file in %d buffers of at most %.2f MiB\n", copy ? "copied" : "wrapped", gpu->gguf.size / 1048576.0,
                   ctx->gpu.n_wbufs, fake_metal_config().max_buffer / 1048576.0);
            mllm_context_free(ctx);
        }
        mllm_status st_c, st_g;
        const std::vector<mllm_token> want = greedy(cpu, prompt_a, 5, &st_c), got = greedy(gpu, prompt_a, 5, &st_g);
        CHECK(st_g == MLLM_OK && got == want, "split weights: %s, cpu %s (%s)", str(got).c_str(), str(want).c_str(), mllm_last_error());
        // a tensor larger than the largest buffer: a clean error
        fake_metal_config().max_buffer = largest / 2;
        st = mllm_context_create(&ctx, gpu, &cp);
        CHECK(st != MLLM_OK && !ctx, "max buffer below the largest tensor: status %d", st);
        if (copy == 0) printf("  max buffer %zu: %s\n", largest / 2, mllm_last_error());
        mllm_model_free(cpu);
        mllm_model_free(gpu);
        check_clean(copy ? "split, copied" : "split, wrapped");
    }
}

EMU_TEST(metal_objc_failures_are_errors_not_tokens) {
    fake_metal_reset();
    mllm_model *m = load("tiny-llama-Q8_0", MLLM_BACKEND_METAL);
    if (!m) return;
    for (int k = 0; k < 4; k++) {
        fake_metal_settings &c = fake_metal_config();
        c.nil_command_buffer = k == 0;
        c.nil_encoder = k == 1;
        c.nil_queue = k == 2;
        if (k == 3) c.compile_error = "program_source:12:3: error: use of undeclared identifier 'bogus'";
        mllm_status st;
        std::vector<mllm_token> got = greedy(m, {1, 2, 3}, 3, &st);
        CHECK(st != MLLM_OK && got.empty(), "failure %d: status %d, %zu tokens", k, st, got.size());
        if (k == 3) CHECK(strstr(mllm_last_error(), "undeclared identifier 'bogus'") != nullptr, "compile error: %s", mllm_last_error());
        printf("  %s: %s\n", k == 0 ? "nil command buffer" : k == 1 ? "nil encoder" : k == 2 ? "nil queue" : "compile error",
               mllm_last_error());
        check_clean("failure");
    }
    mllm_model_free(m);
}

EMU_TEST(metal_objc_prefers_the_embedded_metallib) {
    fake_metal_reset();
    static const unsigned char lib[16] = {'M', 'T', 'L', 'B', 1, 0, 2, 0};
    mllm__gpu g;
    memset(&g, 0, sizeof g);
    mllm_status st = mllm__mtl_open_with(&g, lib, sizeof lib);
    CHECK(st == MLLM_OK && g.vt && g.vt->pipeline(g.dev, "gemv_q8_0"), "metallib: %s", mllm_last_error());
    CHECK(fake_metal_stat().libraries_from_data == 1 && fake_metal_stat().libraries_from_source == 0, "library not loaded from the data");
    mllm__gpu_close(&g);
    check_clean("metallib");
    static const unsigned char bad[16] = {'X'};
    st = mllm__mtl_open_with(&g, bad, sizeof bad);
    CHECK(st == MLLM_ERR_BACKEND && strstr(mllm_last_error(), "Invalid library file"), "bad metallib: %d %s", st, mllm_last_error());
    check_clean("bad metallib");
    size_t n = 1;
    CHECK(mllm__kernel_metallib(&n) == NULL && n == 0, "no metallib embedded on Linux");
    st = mllm__mtl_open(&g);   // none embedded: the source
    CHECK(st == MLLM_OK && fake_metal_stat().libraries_from_source == 1 && fake_metal_stat().last_fast_math == 0, "source library");
    mllm__gpu_close(&g);
    check_clean("source library");
}
