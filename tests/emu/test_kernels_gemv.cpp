// gemv_<type> and gemv_add_<type> (kernels/gemv.metal) against a double-precision product with the
// weight rows dequantized by the CPU backend (mllm__dequant_row): every weight type, aligned and odd
// shapes, the emulator's schedule/poison variants.  gemv_multi_<type> (kernels/gemv_multi.metal: several
// tokens per threadgroup; with and without the residual) against the same reference, and each token's
// row bit for bit against gemv_<type>'s / gemv_add_<type>'s (what keeps a batched sequence equal to its
// solo run).
#include "kernels_test.h"

namespace {
struct shape { uint32_t K, N, M; };

void check_gemv(const kt_type &t, shape s, const emu::Variant &v, bool add) {
    kt_scope scope;
    const size_t rb = (size_t)s.K / t.qk * t.bytes;
    uint8_t *w = kt_weights(t, s.N, s.K);
    float *x = kt_rand((size_t)s.M * s.K), *r = kt_rand((size_t)s.M * s.N), *y = kt_out((size_t)s.M * s.N);
    mllm__mat_args a = {s.K, s.N, s.M, (uint32_t)rb};
    void *bufs[] = {w, x, y, &a, r};
    char name[64];
    snprintf(name, sizeof name, "%s_%s", add ? "gemv_add" : "gemv", t.name);
    const uint32_t rows_per_tg = MLLM__GEMV_NSG * MLLM__GEMV_ROWS;
    if (!kt_dispatch(name, v, (s.N + rows_per_tg - 1) / rows_per_tg, s.M, 32 * MLLM__GEMV_NSG, bufs, add ? 5 : 4))
        return;
    kt_check_product(name, t, w, x, add ? r : nullptr, y, s.K, s.N, s.M, v);
}

// Shapes per block size: odd and aligned K (the float types take any K), row counts that are and are
// not multiples of a threadgroup's NSG * ROWS = 4 rows, one and several activation rows.
void run_type(const kt_type &t) {
    static const shape s1[] = {{1, 1, 1}, {7, 33, 2}, {33, 7, 1}, {576, 576, 1}, {4097, 7, 2}};
    static const shape s32[] = {{32, 1, 1}, {576, 33, 2}, {1536, 7, 1}, {4096, 576, 1}};
    static const shape s256[] = {{256, 7, 1}, {1536, 33, 2}, {4096, 576, 1}};
    const shape *sh = t.qk == 1 ? s1 : t.qk == 32 ? s32 : s256;
    const int ns = t.qk == 1 ? 5 : t.qk == 32 ? 4 : 3;
    for (int i = 0; i < ns; i++)
        for (const emu::Variant &v : kt_variants()) {
            check_gemv(t, sh[i], v, false);
            check_gemv(t, sh[i], v, true);
        }
}

// gemv_multi on M tokens: the product within the reference's tolerance, and every element equal to the
// single-token gemv's on the same row (the _add variant with y aliasing r, as the engine binds it).
void check_gemv_multi(const kt_type &t, shape s, const emu::Variant &v, bool add) {
    kt_scope scope;
    const size_t rb = (size_t)s.K / t.qk * t.bytes, ny = (size_t)s.M * s.N;
    uint8_t *w = kt_weights(t, s.N, s.K);
    float *x = kt_rand((size_t)s.M * s.K), *r = kt_rand(ny), *y = kt_out(ny), *y1 = kt_out(ny);
    if (add) { memcpy(y, r, ny * 4); memcpy(y1, r, ny * 4); }   // y = W x + y
    mllm__mat_args a = {s.K, s.N, s.M, (uint32_t)rb};
    mllm__gemv_multi_args ma = {s.K, s.N, s.M, (uint32_t)rb, add};
    void *bufs[] = {w, x, y, &ma, add ? y : r}, *bufs1[] = {w, x, y1, &a, y1};   // (r unread without add)
    char name[64], label[80], name1[64];
    snprintf(name, sizeof name, "gemv_multi_%s", t.name);
    snprintf(label, sizeof label, "%s%s", name, add ? " (add)" : "");
    snprintf(name1, sizeof name1, "%s_%s", add ? "gemv_add" : "gemv", t.name);
    const uint32_t rows_per_tg = MLLM__GEMV_NSG * MLLM__GEMV_ROWS, gx = (s.N + rows_per_tg - 1) / rows_per_tg;
    if (!kt_dispatch(name, v, gx * ((s.M + MLLM__GEMV_MULTI_R - 1) / MLLM__GEMV_MULTI_R), 1, 32 * MLLM__GEMV_NSG, bufs, 5))
        return;
    kt_check_product(label, t, w, x, add ? r : nullptr, y, s.K, s.N, s.M, v);
    if (!kt_dispatch(name1, v, gx, s.M, 32 * MLLM__GEMV_NSG, bufs1, add ? 5 : 4)) return;
    size_t diff = 0, first = 0;
    for (size_t i = ny; i-- > 0;)
        if (memcmp(&y[i], &y1[i], 4)) diff++, first = i;
    CHECK(diff == 0, "%s K=%u N=%u M=%u %s: %zu of %zu elements differ from %s's; first [%zu] %.9g vs %.9g", label, s.K,
          s.N, s.M, msl::sched_name(v.policy), diff, ny, name1, first, diff ? y[first] : 0.0f, diff ? y1[first] : 0.0f);
}

// Token counts below, at and above MLLM__GEMV_MULTI_R = 8 and not multiples of it; row counts not
// multiples of 4; odd K for the float types (their element tail).
void run_type_multi(const kt_type &t) {
    static const shape s1[] = {{7, 33, 2}, {33, 7, 9}, {4097, 7, 11}, {576, 66, 17}};
    static const shape s32[] = {{32, 1, 3}, {576, 33, 9}, {1536, 7, 17}, {64, 5, 8}};
    static const shape s256[] = {{256, 7, 2}, {1536, 33, 11}, {2048, 5, 17}};
    const shape *sh = t.qk == 1 ? s1 : t.qk == 32 ? s32 : s256;
    const int ns = t.qk == 1 ? 4 : t.qk == 32 ? 4 : 3;
    for (int i = 0; i < ns; i++)
        for (const emu::Variant &v : kt_variants()) {
            check_gemv_multi(t, sh[i], v, false);
            check_gemv_multi(t, sh[i], v, true);
        }
}
}  // namespace

// one test per weight type of MLLM__GPU_TYPES
#define KT_TEST(name, TYPE) EMU_TEST(gemv_##name##_matches_dequantized_product) { run_type(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_TEST)
#define KT_TEST_MULTI(name, TYPE) \
    EMU_TEST(gemv_multi_##name##_matches_dequantized_product_and_gemv) { run_type_multi(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_TEST_MULTI)
