// softmax and argmax (kernels/softmax.metal) over rows of aligned, odd and vocabulary-sized lengths,
// several threadgroup sizes, the emulator's schedule/poison variants.  References: the CPU backend's
// mllm__softmax, and its sampler at temperature 0 (greedy) for argmax.
#include "kernels_test.h"

namespace {
const uint32_t lens[] = {1, 7, 33, 576, 1536, 4097, 49152};
const uint32_t tpts[] = {32, 256, 1024};
}  // namespace

EMU_TEST(softmax_matches_cpu) {
    int vi = 0;
    for (uint32_t n : lens)
        for (const emu::Variant &v : kt_variants()) {
            kt_scope scope;
            const uint32_t rows = 2, tpt = tpts[vi++ % 3];
            float *x = kt_rand((size_t)rows * n, -12.0f, 12.0f), *y = kt_out((size_t)rows * n);
            mllm__vec_args a = {n};
            void *bufs[] = {x, y, &a};
            if (!kt_dispatch("softmax", v, rows, 1, tpt, bufs, 3)) continue;
            std::vector<float> cpu(x, x + (size_t)rows * n);
            for (uint32_t r = 0; r < rows; r++) mllm__softmax(&cpu[(size_t)r * n], (int)n);
            std::vector<double> ref(cpu.begin(), cpu.end()), scale(ref);
            char what[128];
            snprintf(what, sizeof what, "softmax n=%u tpt=%u %s", n, tpt, msl::sched_name(v.policy));
            kt_close(what, y, ref.data(), scale.data(), (size_t)rows * n, 1e-5);
        }
}

// In place (y = x), as the sampler uses it.
EMU_TEST(softmax_in_place_matches_cpu) {
    kt_scope scope;
    const uint32_t n = 4097;
    float *x = kt_rand(n, -5.0f, 5.0f);
    std::vector<float> cpu(x, x + n);
    mllm__vec_args a = {n};
    void *bufs[] = {x, x, &a};
    if (!kt_dispatch("softmax", kt_variants().back(), 1, 1, 256, bufs, 3)) return;
    mllm__softmax(cpu.data(), (int)n);
    std::vector<double> ref(cpu.begin(), cpu.end()), scale(ref);
    kt_close("softmax in place n=4097", x, ref.data(), scale.data(), n, 1e-5);
}

// Greedy token choice: the first index of the maximum (ties: lowest index; NaN never wins; all -inf: 0).
EMU_TEST(argmax_matches_cpu_greedy_sampler) {
    int vi = 0;
    for (uint32_t n : lens)
        for (const emu::Variant &v : kt_variants()) {
            kt_scope scope;
            const uint32_t rows = 4, tpt = tpts[vi++ % 3];
            float *x = kt_rand((size_t)rows * n, -3.0f, 3.0f);
            int *out = kt_buf<int>(rows);
            for (uint32_t r = 0; r < rows; r++) out[r] = -2;   // never a valid answer
            // row 1: a tie between two planted maxima; row 2: a NaN; row 3: all -inf
            const uint32_t a0 = kt_u32() % n, a1 = a0 + (n - a0) / 2;
            x[n + a1] = 7.0f;
            x[n + a0] = 7.0f;
            if (n > 1) x[2 * n + 1 + kt_u32() % (n - 1)] = NAN;   // (at index 0 it would stall the CPU's scan)
            for (uint32_t i = 0; i < n; i++) x[3 * n + i] = -INFINITY;
            mllm__vec_args a = {n};
            void *bufs[] = {x, out, &a};
            if (!kt_dispatch("argmax", v, rows, 1, tpt, bufs, 3)) continue;
            for (uint32_t r = 0; r < rows; r++) {
                const int want = kt_cpu_greedy(x + (size_t)r * n, (int)n);
                CHECK(out[r] == want, "argmax n=%u tpt=%u %s row %u: got %d want %d", n, tpt, msl::sched_name(v.policy),
                      r, out[r], want);
            }
            CHECK(out[1] == (int)a0, "tie: got %d want the first index %u", out[1], a0);
        }
}
