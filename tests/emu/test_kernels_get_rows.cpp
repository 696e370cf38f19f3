// get_rows_<type> (kernels/get_rows.metal): embedding rows of every weight type against the rows
// dequantized by the CPU backend (mllm__dequant_row); ids outside the table give zero rows, not a fault.
#include "kernels_test.h"

namespace {
void run_type(const kt_type &t) {
    static const uint32_t k1[] = {1, 7, 33, 576}, k32[] = {32, 576}, k256[] = {256, 1536};
    const uint32_t *ks = t.qk == 1 ? k1 : t.qk == 32 ? k32 : k256;
    const int nk = t.qk == 1 ? 4 : 2;
    int vi = 0;
    for (int ki = 0; ki < nk; ki++)
        for (const emu::Variant &v : kt_variants()) {
            kt_scope scope;
            const uint32_t K = ks[ki], N = 5, M = 6, tpt = vi++ % 2 ? 64 : 32;
            const size_t rb = (size_t)K / t.qk * t.bytes;
            uint8_t *w = kt_weights(t, N, K);
            const int want_ids[M] = {3, 0, 4, -1, 5, 3};   // -1 and 5 are outside the 5-row table
            int *ids = kt_buf<int>(M);
            memcpy(ids, want_ids, sizeof want_ids);
            float *out = kt_out((size_t)M * K);
            mllm__mat_args a = {K, N, M, (uint32_t)rb};
            void *bufs[] = {w, ids, out, &a};
            char name[64];
            snprintf(name, sizeof name, "get_rows_%s", t.name);
            if (!kt_dispatch(name, v, M, 1, tpt, bufs, 4)) continue;
            std::vector<double> ref((size_t)M * K, 0.0), scale((size_t)M * K);
            for (uint32_t m = 0; m < M; m++)
                if (want_ids[m] >= 0 && want_ids[m] < (int)N) kt_cpu_dequant(t, w + want_ids[m] * rb, K, &ref[(size_t)m * K]);
            for (size_t i = 0; i < ref.size(); i++) scale[i] = fabs(ref[i]) + 1e-3;
            char what[128];
            snprintf(what, sizeof what, "%s K=%u %s", name, K, msl::sched_name(v.policy));
            kt_close(what, out, ref.data(), scale.data(), ref.size(), 1e-6);
        }
}
}  // namespace

// one test per weight type of MLLM__GPU_TYPES
#define KT_TEST(name, TYPE) EMU_TEST(get_rows_##name##_matches_dequantized_rows) { run_type(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_TEST)
