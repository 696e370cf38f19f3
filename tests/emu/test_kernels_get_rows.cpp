// get_rows_<type> (kernels/get_rows.metal): embedding rows of every weight type against the rows
// dequantized by the CPU backend (mllm__dequant_row); ids outside the table give zero rows, not a fault.
#include "kernels_test.h"

static void run_type(const kt_type &t) {
    static const uint32_t k1[] = {1, 7, 33, 576}, k32[] = {32, 576}, k256[] = {256, 1536};
    const uint32_t *ks = t.qk == 1 ? k1 : t.qk == 32 ? k32 : k256;
    const int nk = t.qk == 1 ? 4 : 2;
    for (int ki = 0; ki < nk; ki++)
        for (int s = 0; s < KT_NSCHED; s++) {
            const uint32_t K = ks[ki], N = 5, M = 6;
            const size_t rb = (size_t)K / t.qk * t.bytes;
            uint8_t *w = kt_weights(t, N, K);
            int *ids = kt_buf<int>(M);
            const int want_ids[M] = {3, 0, 4, -1, 5, 3};   // -1 and 5 are outside the 5-row table
            memcpy(ids, want_ids, sizeof want_ids);
            float *out = kt_out((size_t)M * K);
            mllm__mat_args a = {K, N, M, (uint32_t)rb};
            void *bufs[] = {w, ids, out, &a};
            char name[64];
            snprintf(name, sizeof name, "get_rows_%s", t.name);
            if (!kt_dispatch(name, kt_scheds[s], M, 1, s == 1 ? 64 : 32, bufs, 4)) continue;
            std::vector<double> ref((size_t)M * K, 0.0), scale((size_t)M * K);
            for (uint32_t m = 0; m < M; m++)
                if (want_ids[m] >= 0 && want_ids[m] < (int)N) kt_dequant(t, w + want_ids[m] * rb, K, &ref[(size_t)m * K]);
            for (size_t i = 0; i < ref.size(); i++) scale[i] = std::fabs(ref[i]) + 1e-3;
            char what[96];
            snprintf(what, sizeof what, "%s K=%u %s", name, K, kt_scheds[s].name);
            kt_close(what, out, ref.data(), scale.data(), ref.size(), 1e-6);
        }
}

#define GET_ROWS_TEST(name, idx) static void test_get_rows_##name##_matches_dequantized_rows(void) { run_type(kt_types[idx]); }
GET_ROWS_TEST(f32, 0)
GET_ROWS_TEST(f16, 1)
GET_ROWS_TEST(bf16, 2)
GET_ROWS_TEST(q8_0, 3)
GET_ROWS_TEST(q4_0, 4)
GET_ROWS_TEST(q4_1, 5)
GET_ROWS_TEST(q4_k, 6)
GET_ROWS_TEST(q6_k, 7)

int main(void) {
    RUN(test_get_rows_f32_matches_dequantized_rows);
    RUN(test_get_rows_f16_matches_dequantized_rows);
    RUN(test_get_rows_bf16_matches_dequantized_rows);
    RUN(test_get_rows_q8_0_matches_dequantized_rows);
    RUN(test_get_rows_q4_0_matches_dequantized_rows);
    RUN(test_get_rows_q4_1_matches_dequantized_rows);
    RUN(test_get_rows_q4_k_matches_dequantized_rows);
    RUN(test_get_rows_q6_k_matches_dequantized_rows);
    return t_finish();
}
