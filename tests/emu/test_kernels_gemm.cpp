// gemm_<type> and gemm_add_<type> (kernels/gemm.metal, simdgroup_matrix tiles) against a
// double-precision product with weight rows dequantized by the CPU backend (mllm__dequant_row): every
// weight type, shapes that are and are not tile multiples (M, N, and K for the float types), the
// full-tile direct-store path and the masked one, the emulator's schedule/poison variants; and the split-K
// pair (gemm_split_<type> then gemm_reduce, as mllm__gpu_matmul encodes it) on K cut in parts of 256, the
// last one short where K is not a multiple.
#include "kernels_test.h"

namespace {
struct shape { uint32_t K, N, M; };

void check_gemm(const kt_type &t, shape s, const emu::Variant &v, bool add) {
    kt_scope scope;
    const size_t rb = (size_t)s.K / t.qk * t.bytes;
    uint8_t *w = kt_weights(t, s.N, s.K);
    float *x = kt_rand((size_t)s.M * s.K), *r = kt_rand((size_t)s.M * s.N), *y = kt_out((size_t)s.M * s.N);
    mllm__mat_args a = {s.K, s.N, s.M, (uint32_t)rb};
    void *bufs[] = {w, x, y, &a, r};
    char name[64];
    snprintf(name, sizeof name, "%s_%s", add ? "gemm_add" : "gemm", t.name);
    if (!kt_dispatch(name, v, (s.N + MLLM__GEMM_BN - 1) / MLLM__GEMM_BN, (s.M + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM,
                     MLLM__GEMM_THREADS, bufs, add ? 5 : 4))
        return;
    kt_check_product(name, t, w, x, add ? r : nullptr, y, s.K, s.N, s.M, v);
}

// Parts of k_split = 256 (the smallest a part can be: every block size divides it); with add, the
// reduction adds the residual in place as the host binds it (y aliases r).
void check_split(const kt_type &t, shape s, const emu::Variant &v, bool add) {
    kt_scope scope;
    const size_t rb = (size_t)s.K / t.qk * t.bytes;
    const uint32_t S = (s.K + 255) / 256, mt = (s.M + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM;
    uint8_t *w = kt_weights(t, s.N, s.K);
    float *x = kt_rand((size_t)s.M * s.K), *r = kt_rand((size_t)s.M * s.N), *part = kt_out((size_t)S * s.M * s.N);
    float *y = kt_out((size_t)s.M * s.N);
    if (add) memcpy(y, r, sizeof(float) * s.M * s.N);
    mllm__split_args a = {s.K, s.N, s.M, (uint32_t)rb, 256};
    mllm__reduce_args ra = {s.M * s.N, S, add ? 1u : 0u};
    void *bufs[] = {w, x, part, &a}, *rbufs[] = {part, y, &ra};
    char name[64];
    snprintf(name, sizeof name, "gemm_split_%s", t.name);
    if (!kt_dispatch(name, v, (s.N + MLLM__GEMM_BN - 1) / MLLM__GEMM_BN, mt * S, MLLM__GEMM_THREADS, bufs, 4) ||
        !kt_dispatch("gemm_reduce", v, (ra.n + 255) / 256, 1, 256, rbufs, 3))
        return;
    kt_check_product(name, t, w, x, add ? r : nullptr, y, s.K, s.N, s.M, v);
}

void run_type(const kt_type &t) {
    static const shape s1[] = {{1, 1, 1}, {7, 33, 7}, {33, 7, 33}, {576, 64, 32}, {4097, 7, 2}};
    static const shape s32[] = {{32, 1, 7}, {576, 65, 33}, {1536, 64, 32}};
    static const shape s256[] = {{256, 7, 1}, {512, 64, 32}, {1536, 33, 7}};
    const shape *sh = t.qk == 1 ? s1 : t.qk == 32 ? s32 : s256;
    const int ns = t.qk == 1 ? 5 : 3;
    for (int i = 0; i < ns; i++)
        for (const emu::Variant &v : kt_variants()) {
            check_gemm(t, sh[i], v, false);
            check_gemm(t, sh[i], v, true);
        }
    static const shape split1[] = {{576, 65, 33}, {1000, 7, 2}}, split[] = {{512, 64, 32}, {1536, 33, 7}};
    const std::vector<emu::Variant> vs = kt_variants();
    for (int i = 0; i < 2; i++) check_split(t, t.qk == 1 ? split1[i] : split[i], vs[i % vs.size()], i == 1);
}
}  // namespace

// one test per weight type of MLLM__GPU_TYPES
#define KT_TEST(name, TYPE) EMU_TEST(gemm_##name##_matches_dequantized_product) { run_type(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_TEST)
