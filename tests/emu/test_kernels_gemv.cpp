// gemv_<type> and gemv_add_<type> (kernels/gemv.metal) against a double-precision product with the
// weight rows dequantized by the CPU backend (mllm__dequant_row), for every weight type, aligned and odd
// shapes, three schedules, NaN-poisoned threadgroup memory.
#include "kernels_test.h"

struct shape { uint32_t K, N, M; };

static void check_gemv(const kt_type &t, shape s, int sched, bool add) {
    const size_t rb = (size_t)s.K / t.qk * t.bytes;
    uint8_t *w = kt_weights(t, s.N, s.K);
    float *x = kt_rand((size_t)s.M * s.K), *r = kt_rand((size_t)s.M * s.N), *y = kt_out((size_t)s.M * s.N);
    mllm__mat_args a = {s.K, s.N, s.M, (uint32_t)rb};
    void *bufs[] = {w, x, y, &a, r};
    char name[64];
    snprintf(name, sizeof name, "%s_%s", add ? "gemv_add" : "gemv", t.name);
    const uint32_t rows_per_tg = MLLM__GEMV_NSG * MLLM__GEMV_ROWS;
    if (!kt_dispatch(name, kt_scheds[sched], (s.N + rows_per_tg - 1) / rows_per_tg, s.M, 32 * MLLM__GEMV_NSG,
                     bufs, add ? 5 : 4))
        return;
    std::vector<double> wd(s.K), ref((size_t)s.M * s.N), scale((size_t)s.M * s.N);
    for (uint32_t n = 0; n < s.N; n++) {
        kt_dequant(t, w + n * rb, s.K, wd.data());
        for (uint32_t m = 0; m < s.M; m++) {
            double acc = add ? r[(size_t)m * s.N + n] : 0, mag = add ? std::fabs(acc) : 0;
            for (uint32_t k = 0; k < s.K; k++) {
                acc += wd[k] * x[(size_t)m * s.K + k];
                mag += std::fabs(wd[k] * x[(size_t)m * s.K + k]);
            }
            ref[(size_t)m * s.N + n] = acc;
            scale[(size_t)m * s.N + n] = mag;
        }
    }
    char what[128];
    snprintf(what, sizeof what, "%s K=%u N=%u M=%u %s", name, s.K, s.N, s.M, kt_scheds[sched].name);
    kt_close(what, y, ref.data(), scale.data(), (size_t)s.M * s.N, 2e-5);
}

// Shapes per block size: odd and aligned K (the float types accept any K), row counts that are and
// are not multiples of the 8 rows of a threadgroup, one and several activation rows.
static void run_type(const kt_type &t) {
    static const shape s1[] = {{1, 1, 1}, {7, 33, 2}, {33, 7, 1}, {576, 576, 1}, {4097, 7, 2}};
    static const shape s32[] = {{32, 1, 1}, {576, 33, 2}, {1536, 7, 1}, {4096, 576, 1}};
    static const shape s256[] = {{256, 7, 1}, {1536, 33, 2}, {4096, 576, 1}};
    const shape *sh = t.qk == 1 ? s1 : t.qk == 32 ? s32 : s256;
    const int ns = t.qk == 1 ? 5 : t.qk == 32 ? 4 : 3;
    for (int i = 0; i < ns; i++)
        for (int sched = 0; sched < KT_NSCHED; sched++) {
            check_gemv(t, sh[i], sched, false);
            check_gemv(t, sh[i], sched, true);
        }
}

#define GEMV_TEST(name, idx) static void test_gemv_##name##_matches_dequantized_product(void) { run_type(kt_types[idx]); }
GEMV_TEST(f32, 0)
GEMV_TEST(f16, 1)
GEMV_TEST(bf16, 2)
GEMV_TEST(q8_0, 3)
GEMV_TEST(q4_0, 4)
GEMV_TEST(q4_1, 5)
GEMV_TEST(q4_k, 6)
GEMV_TEST(q6_k, 7)

int main(void) {
    RUN(test_gemv_f32_matches_dequantized_product);
    RUN(test_gemv_f16_matches_dequantized_product);
    RUN(test_gemv_bf16_matches_dequantized_product);
    RUN(test_gemv_q8_0_matches_dequantized_product);
    RUN(test_gemv_q4_0_matches_dequantized_product);
    RUN(test_gemv_q4_1_matches_dequantized_product);
    RUN(test_gemv_q4_k_matches_dequantized_product);
    RUN(test_gemv_q6_k_matches_dequantized_product);
    return t_finish();
}
