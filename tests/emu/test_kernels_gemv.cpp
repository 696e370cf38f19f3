// gemv_<type> and gemv_add_<type> (kernels/gemv.metal) against a double-precision product with the
// weight rows dequantized by the CPU backend (mllm__dequant_row): every weight type, aligned and odd
// shapes, the emulator's schedule/poison variants.  gemv_multi_<type> (kernels/gemv_multi.metal: several
// tokens per threadgroup; with and without the residual) against the same reference, and each token's
// row bit for bit against gemv_<type>'s / gemv_add_<type>'s (what keeps a batched sequence equal to its
// solo run).  The fused decode products of gemv_fused.metal
// (gemv_qkv_<type>: Q, K, V with biases; gemv_swiglu/gemv_geglu_<type>: gate, up and the GLU) against
// the same references, and bit for bit against the unfused kernels they replace in the graph.
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

namespace {
// The fused products' own RMSNorm: with nt (the threads rms_norm_mul would take; 0: no norm) x is the
// residual stream.  Returns the x the products see: the CPU backend's mllm__rmsnorm rows (the reference)
// and, in xg, rms_norm_mul's output on the emulator with nt threads (the unfused graph's XB).
std::vector<float> kt_norm_input(const float *x, const float *nw, uint32_t K, uint32_t M, uint32_t nt, float eps,
                                 float *xg, const emu::Variant &v) {
    std::vector<float> xb((size_t)M * K);
    for (uint32_t m = 0; m < M; m++) mllm__rmsnorm(&xb[(size_t)m * K], x + (size_t)m * K, nw, (int)K, eps);
    mllm__norm_args na = {K, eps};
    void *bufs[] = {(void *)x, (void *)nw, xg, &na};
    kt_dispatch("rms_norm_mul", v, M, 1, nt, bufs, 4);
    return xb;
}

// gemv_qkv_<t>: n_mats matrices (N[i] rows of K) on one x, biases where bias_mask has bit i, x normalized
// first with nt > 0.  Checked against the double product (+ bias) and bit for bit against the unfused
// kernels: [rms_norm_mul,] gemv_<t>, then add_bias's float sum.
void check_qkv(const kt_type &t, uint32_t K, const uint32_t *N, uint32_t n_mats, uint32_t bias_mask, uint32_t M,
                 uint32_t nt, const emu::Variant &v) {
    kt_scope scope;
    const uint32_t RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS;
    const size_t rb = (size_t)K / t.qk * t.bytes;
    float *x = kt_rand((size_t)M * K, -3.0f, 3.0f), *nw = kt_rand(K, 0.5f, 2.0f), *xg = kt_out((size_t)M * K);
    const std::vector<float> xb = nt ? kt_norm_input(x, nw, K, M, nt, 1e-5f, xg, v) : std::vector<float>(x, x + (size_t)M * K);
    uint8_t *w[3];
    float *y[3], *b[3];
    mllm__qkv_args a;
    memset(&a, 0, sizeof a);
    a.K = K; a.M = M; a.n_mats = n_mats;
    a.norm.on = nt > 0; a.norm.threads = nt; a.norm.eps = 1e-5f;
    uint32_t tiles = 0;
    for (uint32_t i = 0; i < 3; i++) {
        const uint32_t n = N[i < n_mats ? i : 0];
        w[i] = kt_weights(t, n, K);
        y[i] = kt_out((size_t)M * n);
        b[i] = kt_rand(n);
        if (i < n_mats) {
            a.N[i] = n;
            a.row_bytes[i] = (uint32_t)rb;
            a.bias[i] = (bias_mask >> i) & 1;
            tiles += (n + RT - 1) / RT;
        }
    }
    void *bufs[] = {w[0], w[1], w[2], x, y[0], y[1], y[2], &a, b[0], b[1], b[2], nw};
    char name[64];
    snprintf(name, sizeof name, "gemv_qkv_%s", t.name);
    if (!kt_dispatch(name, v, tiles, M, 32 * MLLM__GEMV_NSG, bufs, 12)) return;
    for (uint32_t i = 0; i < n_mats; i++) {
        kt_scope inner;
        const uint32_t n = a.N[i];
        float *r = a.bias[i] ? kt_buf<float>((size_t)M * n) : nullptr, *z = kt_out((size_t)M * n);
        for (size_t k = 0; r && k < (size_t)M * n; k++) r[k] = b[i][k % n];
        char what[96];
        snprintf(what, sizeof what, "%s matrix %u of %u%s%s", name, i, n_mats, a.bias[i] ? " + bias" : "", nt ? " normed" : "");
        kt_check_product(what, t, w[i], xb.data(), r, y[i], K, n, M, v);
        // the unfused graph: [rms_norm_mul,] gemv_<t>, then add_bias (out = x + b)
        mllm__mat_args ma = {K, n, M, (uint32_t)rb};
        void *gb[] = {w[i], nt ? xg : x, z, &ma};
        char plain[64];
        snprintf(plain, sizeof plain, "gemv_%s", t.name);
        if (!kt_dispatch(plain, v, (n + RT - 1) / RT, M, 32 * MLLM__GEMV_NSG, gb, 4)) continue;
        std::vector<double> ref((size_t)M * n), zero((size_t)M * n, 0.0);
        for (size_t k = 0; k < (size_t)M * n; k++) ref[k] = r ? z[k] + r[k] : z[k];   // (float sum, widened)
        snprintf(what, sizeof what, "%s matrix %u equals %sgemv_%s%s", name, i, nt ? "rms_norm_mul + " : "", t.name,
                 r ? " + add_bias" : "");
        kt_close(what, y[i], ref.data(), zero.data(), (size_t)M * n, 0.0);
    }
}

// gemv_swiglu_<t> / gemv_geglu_<t>: out = act(W_gate x) * (W_up x), x normalized first with nt > 0.
// Checked against the CPU backend's mllm__swiglu / mllm__geglu of the double products (rounded to float),
// and bit for bit against the unfused graph on the GPU: [rms_norm_mul,] gemv_<t> twice, then the swiglu /
// geglu kernel.
void check_glu(const kt_type &t, uint32_t K, uint32_t N, uint32_t M, bool gelu, uint32_t nt, const emu::Variant &v) {
    kt_scope scope;
    const uint32_t RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS;
    const size_t rb = (size_t)K / t.qk * t.bytes, n = (size_t)M * N;
    uint8_t *wg = kt_weights(t, N, K), *wu = kt_weights(t, N, K);
    float *x = kt_rand((size_t)M * K, -3.0f, 3.0f), *out = kt_out(n);
    float *nw = kt_rand(K, 0.5f, 2.0f), *xg = kt_out((size_t)M * K);
    const std::vector<float> xb = nt ? kt_norm_input(x, nw, K, M, nt, 1e-6f, xg, v) : std::vector<float>(x, x + (size_t)M * K);
    mllm__glu_args a;
    memset(&a, 0, sizeof a);
    a.K = K; a.N = N; a.M = M; a.row_bytes = (uint32_t)rb;
    a.norm.on = nt > 0; a.norm.threads = nt; a.norm.eps = 1e-6f;
    void *bufs[] = {wg, wu, x, out, &a, nw};
    char name[64];
    snprintf(name, sizeof name, "%s_%s", gelu ? "gemv_geglu" : "gemv_swiglu", t.name);
    if (!kt_dispatch(name, v, (N + RT - 1) / RT, M, 32 * MLLM__GEMV_NSG, bufs, 6)) return;
    // CPU reference: the products in double, rounded, through the CPU's GLU
    std::vector<double> wd(K), gd(n), ud(n), gm(n), um(n);
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t r = 0; r < N; r++) {
            kt_cpu_dequant(t, (pass ? wu : wg) + r * rb, K, wd.data());
            for (uint32_t m = 0; m < M; m++) {
                double acc = 0, mag = 0;
                for (uint32_t k = 0; k < K; k++) {
                    const double p = wd[k] * xb[(size_t)m * K + k];
                    acc += p;
                    mag += fabs(p);
                }
                (pass ? ud : gd)[(size_t)m * N + r] = acc;
                (pass ? um : gm)[(size_t)m * N + r] = mag;
            }
        }
    std::vector<float> gf(gd.begin(), gd.end()), uf(ud.begin(), ud.end()), cpu(n);
    if (gelu) mllm__geglu(cpu.data(), gf.data(), uf.data(), (int)n);
    else mllm__swiglu(cpu.data(), gf.data(), uf.data(), (int)n);
    std::vector<double> ref(cpu.begin(), cpu.end()), scale(n);
    for (size_t i = 0; i < n; i++)   // act' <= 1.13: the products' errors carried through the gate
        scale[i] = 1.2 * (gm[i] * fabs(ud[i]) + fabs(gd[i]) * um[i]) + 0.1 * fabs(cpu[i]);
    char what[96];
    snprintf(what, sizeof what, "%s K=%u N=%u M=%u%s %s", name, K, N, M, nt ? " normed" : "", msl::sched_name(v.policy));
    kt_close(what, out, ref.data(), scale.data(), n, 2e-5);
    // the unfused graph on the GPU
    float *g2 = kt_out(n), *u2 = kt_out(n), *o2 = kt_out(n);
    mllm__mat_args ma = {K, N, M, (uint32_t)rb};
    mllm__vec_args va = {(uint32_t)n};
    void *gb[] = {wg, nt ? xg : x, g2, &ma}, *ub[] = {wu, nt ? xg : x, u2, &ma}, *eb[] = {g2, u2, o2, &va};
    char plain[64];
    snprintf(plain, sizeof plain, "gemv_%s", t.name);
    if (!kt_dispatch(plain, v, (N + RT - 1) / RT, M, 32 * MLLM__GEMV_NSG, gb, 4) ||
        !kt_dispatch(plain, v, (N + RT - 1) / RT, M, 32 * MLLM__GEMV_NSG, ub, 4) ||
        !kt_dispatch(gelu ? "geglu" : "swiglu", v, ((uint32_t)(n + 3) / 4 + 63) / 64, 1, 64, eb, 4))
        return;
    std::vector<double> ref2(o2, o2 + n), zero(n, 0.0);
    snprintf(what, sizeof what, "%s equals %sgemv_%s x2 + %s", name, nt ? "rms_norm_mul + " : "", t.name,
             gelu ? "geglu" : "swiglu");
    kt_close(what, out, ref2.data(), zero.data(), n, 0.0);
}

// Q/K/V-like shapes (N not multiples of the 4 rows of a threadgroup; one and two tokens; 1-3 matrices,
// with and without biases), gate/up shapes with odd N; with and without the norm, whose threads (32,
// 160 = 5 simdgroups: more than a GEMV threadgroup has, 1024) are what rms_norm_mul would take.
void run_fused(const kt_type &t) {
    // (normed: rows long enough that each of the norm's threads sums several float4s, so its order shows)
    const uint32_t K = t.qk == 1 ? 33 : t.qk == 32 ? 64 : 256, Kn = t.qk == 1 ? 1283 : 1280;
    static const uint32_t qkv[3] = {9, 6, 5}, big[3] = {64, 16, 16}, nts[3] = {32, 160, 1024};
    int vi = 0;
    for (const emu::Variant &v : kt_variants()) {
        const uint32_t nt = nts[vi % 3];
        check_qkv(t, Kn, qkv, 3, vi % 2 ? 7u : 0u, 1 + vi % 2, nt, v);
        check_qkv(t, K, big, 2 + vi % 2, 5, 1, 0, v);
        check_qkv(t, K, qkv, 1, 1, 2, 0, v);
        check_glu(t, Kn, 7, 1 + vi % 2, vi % 2 == 0, nt, v);
        check_glu(t, K, 16, 2, vi % 2 == 1, 0, v);
        vi++;
    }
}
}  // namespace

// one test per weight type of MLLM__GPU_TYPES
#define KT_TEST(name, TYPE) EMU_TEST(gemv_##name##_matches_dequantized_product) { run_type(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_TEST)
#define KT_TEST_MULTI(name, TYPE) \
    EMU_TEST(gemv_multi_##name##_matches_dequantized_product_and_gemv) { run_type_multi(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_TEST_MULTI)
#define KT_FUSED_TEST(name, TYPE) EMU_TEST(gemv_fused_##name##_matches_product_and_unfused_kernels) { run_fused(kt_types[KT_##TYPE]); }
MLLM__GPU_TYPES(KT_FUSED_TEST)
