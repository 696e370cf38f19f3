// softmax and argmax (kernels/softmax.metal) over rows of aligned, odd and vocabulary-sized lengths,
// several threadgroup sizes, three schedules, NaN-poisoned threadgroup memory.
// TODO(cpu ops): compare softmax against metalllm.h's mllm__softmax once it lands on main.
#include "kernels_test.h"

static const uint32_t lens[] = {1, 7, 33, 576, 1536, 4097, 49152};
static const uint32_t tpts[] = {32, 256, 1024};

static void test_softmax_matches_double_reference(void) {
    for (int li = 0; li < 7; li++)
        for (int s = 0; s < KT_NSCHED; s++) {
            const uint32_t n = lens[li], rows = 2, tpt = tpts[(li + s) % 3];
            float *x = kt_rand((size_t)rows * n, -12.0f, 12.0f), *y = kt_buf<float>((size_t)rows * n);
            mllm__vec_args a = {n};
            void *bufs[] = {x, y, &a};
            if (!kt_dispatch("softmax", kt_scheds[s], rows, 1, tpt, bufs, 3)) continue;
            std::vector<double> ref((size_t)rows * n), scale((size_t)rows * n);
            for (uint32_t r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * n;
                double m = -INFINITY, sum = 0;
                for (uint32_t i = 0; i < n; i++) m = std::fmax(m, xr[i]);
                for (uint32_t i = 0; i < n; i++) sum += std::exp((double)xr[i] - m);
                for (uint32_t i = 0; i < n; i++) {
                    ref[(size_t)r * n + i] = std::exp((double)xr[i] - m) / sum;
                    scale[(size_t)r * n + i] = ref[(size_t)r * n + i];
                }
            }
            char what[96];
            snprintf(what, sizeof what, "softmax n=%u tpt=%u %s", n, tpt, kt_scheds[s].name);
            kt_close(what, y, ref.data(), scale.data(), (size_t)rows * n, 1e-5);
        }
}

// In place (y = x), as the sampler uses it.
static void test_softmax_in_place(void) {
    const uint32_t n = 4097;
    float *x = kt_rand(n, -5.0f, 5.0f);
    std::vector<float> x0(x, x + n);
    mllm__vec_args a = {n};
    void *bufs[] = {x, x, &a};
    if (!kt_dispatch("softmax", kt_scheds[2], 1, 1, 256, bufs, 3)) return;
    double m = -INFINITY, sum = 0;
    for (float v : x0) m = std::fmax(m, v);
    for (float v : x0) sum += std::exp((double)v - m);
    std::vector<double> ref(n), scale(n);
    for (uint32_t i = 0; i < n; i++) scale[i] = ref[i] = std::exp((double)x0[i] - m) / sum;
    kt_close("softmax in place n=4097", x, ref.data(), scale.data(), n, 1e-5);
}

// The first index of the maximum (ties: lowest index; NaN never wins; all -inf: 0).
static void test_argmax_first_maximum(void) {
    for (int li = 0; li < 7; li++)
        for (int s = 0; s < KT_NSCHED; s++) {
            const uint32_t n = lens[li], rows = 4, tpt = tpts[(li + s) % 3];
            float *x = kt_rand((size_t)rows * n, -3.0f, 3.0f);
            int *out = kt_buf<int>(rows);
            // row 1: a tie between two planted maxima; row 2: NaN planted before the maximum;
            // row 3: all -inf.
            const uint32_t a0 = kt_u32() % n, a1 = a0 + (n - a0) / 2;
            x[n + a1] = 7.0f;
            x[n + a0] = 7.0f;
            x[2 * n + kt_u32() % n] = NAN;
            for (uint32_t i = 0; i < n; i++) x[3 * n + i] = -INFINITY;
            mllm__vec_args a = {n};
            void *bufs[] = {x, out, &a};
            if (!kt_dispatch("argmax", kt_scheds[s], rows, 1, tpt, bufs, 3)) continue;
            for (uint32_t r = 0; r < rows; r++) {
                int want = 0;
                float best = -INFINITY;
                for (uint32_t i = 0; i < n; i++)
                    if (x[(size_t)r * n + i] > best) { best = x[(size_t)r * n + i]; want = (int)i; }
                CHECK(out[r] == want, "argmax n=%u tpt=%u %s row %u: got %d want %d", n, tpt, kt_scheds[s].name, r,
                      out[r], want);
            }
            CHECK(out[1] == (int)a0, "tie: got %d want first index %u", out[1], a0);
        }
}

int main(void) {
    RUN(test_softmax_matches_double_reference);
    RUN(test_softmax_in_place);
    RUN(test_argmax_first_maximum);
    return t_finish();
}
