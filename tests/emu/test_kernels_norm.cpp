// rms_norm / rms_norm_mul (kernels/norm.metal), rope / rope_neox (rope.metal, with and without
// rope_freqs factors) and swiglu / geglu (elementwise.metal) against the CPU backend's mllm__rmsnorm /
// mllm__rope_table + mllm__rope_apply / mllm__swiglu / mllm__geglu, add and add_bias against a double
// sum, mul_scalar against the float product, on random inputs: aligned and odd lengths, several
// threadgroup sizes, the emulator's schedule/poison variants.
#include "kernels_test.h"

namespace {
const uint32_t lens[] = {1, 7, 33, 576, 1536, 4097};

enum glu_op { ADD, SWIGLU, GEGLU };
void check_elementwise(glu_op op) {
    const bool swiglu = op != ADD;   // (either gate)
    int vi = 0;
    for (uint32_t n : lens)
        for (const emu::Variant &v : kt_variants()) {
            kt_scope scope;
            const uint32_t threads = (n + 3) / 4, tpt = vi % 2 ? 32 : 64;
            const bool in_place = !swiglu && vi % 3 == 2;   // add as the residual stream uses it: x += y
            vi++;
            float *g = kt_rand(n, -6.0f, 6.0f), *u = kt_rand(n), *out = kt_out(n);
            std::vector<float> g0(g, g + n);
            mllm__vec_args a = {n};
            void *bufs[] = {g, u, in_place ? g : out, &a};
            const char *k = op == SWIGLU ? "swiglu" : op == GEGLU ? "geglu" : "add";
            if (!kt_dispatch(k, v, (threads + tpt - 1) / tpt, 1, tpt, bufs, 4)) continue;
            std::vector<float> cpu(n);
            if (op == SWIGLU) mllm__swiglu(cpu.data(), g0.data(), u, (int)n);
            if (op == GEGLU) mllm__geglu(cpu.data(), g0.data(), u, (int)n);
            std::vector<double> ref(n), scale(n);
            for (uint32_t i = 0; i < n; i++) {
                ref[i] = swiglu ? (double)cpu[i] : (double)g0[i] + u[i];
                scale[i] = swiglu ? fabs((double)g0[i] * u[i]) + 1e-30 : fabs(g0[i]) + fabs(u[i]);
            }
            char what[128];
            snprintf(what, sizeof what, "%s n=%u %s%s", k, n, msl::sched_name(v.policy), in_place ? " in place" : "");
            kt_close(what, in_place ? g : out, ref.data(), scale.data(), n, 1e-6);
        }
}
}  // namespace

EMU_TEST(rms_norm_matches_cpu) {
    static const uint32_t tpts[] = {32, 256, 1024};
    int vi = 0;
    for (uint32_t n : lens)
        for (const emu::Variant &v : kt_variants())
            for (int mul = 0; mul < 2; mul++) {
                kt_scope scope;
                const uint32_t rows = 3, tpt = tpts[vi++ % 3];
                const float eps = 1e-5f;
                float *x = kt_rand((size_t)rows * n, -2.0f, 2.0f), *w = kt_rand(n, 0.5f, 1.5f);
                float *y = kt_out((size_t)rows * n);
                mllm__norm_args a = {n, eps};
                void *plain[] = {x, y, &a}, *fused[] = {x, w, y, &a};
                const char *k = mul ? "rms_norm_mul" : "rms_norm";
                if (!kt_dispatch(k, v, rows, 1, tpt, mul ? fused : plain, mul ? 4 : 3)) continue;
                std::vector<float> ones(n, 1.0f), cpu(n);
                std::vector<double> ref((size_t)rows * n), scale((size_t)rows * n);
                for (uint32_t r = 0; r < rows; r++) {
                    mllm__rmsnorm(cpu.data(), x + r * n, mul ? w : ones.data(), (int)n, eps);
                    for (uint32_t i = 0; i < n; i++) {
                        ref[r * n + i] = cpu[i];
                        scale[r * n + i] = fabs(cpu[i]);
                    }
                }
                char what[128];
                snprintf(what, sizeof what, "%s n=%u tpt=%u %s", k, n, tpt, msl::sched_name(v.policy));
                kt_close(what, y, ref.data(), scale.data(), (size_t)rows * n, 1e-5);
            }
}

// Rotation of the first n_rot dims of every head of Q and, in the same dispatch, of K (its heads follow
// Q's in the grid; kheads 0: no K); the other dims and the gaps between tokens must stay bit-identical.
EMU_TEST(rope_matches_cpu) {
    struct { uint32_t n_heads, kheads, head_dim, n_rot, gap, tokens; float base, fscale; } cases[] = {
        {3, 1, 64, 64, 0, 7, 10000.0f, 1.0f},
        {2, 2, 128, 128, 16, 3, 1000000.0f, 1.0f},
        {5, 0, 64, 32, 0, 4, 10000.0f, 0.5f},   // partial rotation, scaled positions
        {1, 3, 2, 2, 3, 1, 10000.0f, 1.0f},
    };
    int vi = 0;
    for (const auto &c : cases)
        for (const emu::Variant &v : kt_variants())
            for (int neox_f = 0; neox_f < 4; neox_f++) {
                const int neox = neox_f & 1, with_factors = neox_f >> 1;   // factors: Llama 3.x's rope_freqs
                kt_scope scope;
                const uint32_t heads[2] = {c.n_heads, c.kheads};
                uint32_t stride[2], n[2];
                float *x[2];
                std::vector<float> x0[2];
                for (int j = 0; j < 2; j++) {
                    stride[j] = heads[j] * c.head_dim + c.gap + j;
                    n[j] = stride[j] * c.tokens;
                    x[j] = kt_rand(n[j]);
                    x0[j].assign(x[j], x[j] + n[j]);
                }
                int *pos = kt_buf<int>(c.tokens);
                for (uint32_t t = 0; t < c.tokens; t++) pos[t] = t == 0 ? 0 : (int)(kt_u32() % 2048);
                float *factors = kt_rand(c.n_rot / 2, 1.0f, 8.0f);
                mllm__rope_args a = {c.n_heads, c.head_dim, c.n_rot, stride[0], c.base, c.fscale, (uint32_t)with_factors,
                                     c.kheads, stride[1]};
                void *bufs[] = {x[0], pos, &a, factors, x[1]};
                const char *k = neox ? "rope_neox" : "rope";
                if (!kt_dispatch(k, v, c.n_heads + c.kheads, c.tokens, vi++ % 2 ? 64 : 32, bufs, 5)) continue;
                for (int j = 0; j < 2; j++) {
                    std::vector<float> cpu(x0[j]);
                    std::vector<double> scale(n[j], 0.0);   // 0: not rotated, must be unchanged
                    for (uint32_t t = 0; t < c.tokens; t++) {
                        std::vector<float> cs(c.n_rot);
                        mllm__rope_table(cs.data(), (int)c.n_rot, pos[t], c.base, c.fscale, with_factors ? factors : NULL);
                        mllm__rope_apply(&cpu[(size_t)t * stride[j]], (int)heads[j], (int)c.head_dim, (int)c.n_rot, cs.data(),
                                         neox);
                        for (uint32_t h = 0; h < heads[j]; h++)
                            for (uint32_t i = 0; i < c.n_rot / 2; i++) {
                                const size_t o = (size_t)t * stride[j] + (size_t)h * c.head_dim;
                                const size_t i0 = o + (neox ? i : 2 * i), i1 = o + (neox ? i + c.n_rot / 2 : 2 * i + 1);
                                // the kernel's float angle is off by ~1 ulp of pos * freq: the error grows with it
                                const double th = (double)pos[t] * c.fscale * pow((double)c.base, -2.0 * i / c.n_rot);
                                scale[i0] = scale[i1] = (fabs(x0[j][i0]) + fabs(x0[j][i1])) * (1.0 + th);
                            }
                    }
                    std::vector<double> ref(cpu.begin(), cpu.end());
                    char what[128];
                    snprintf(what, sizeof what, "%s %s heads=%u dim=%u rot=%u%s %s", k, j ? "K" : "Q", heads[j], c.head_dim,
                             c.n_rot, with_factors ? " factors" : "", msl::sched_name(v.policy));
                    kt_close(what, x[j], ref.data(), scale.data(), n[j], 1e-6);
                }
            }
}

EMU_TEST(swiglu_matches_cpu) { check_elementwise(SWIGLU); }
EMU_TEST(geglu_matches_cpu) { check_elementwise(GEGLU); }
EMU_TEST(add_matches_double_sum) { check_elementwise(ADD); }

// The embedding scale (gemma): one float product per element, so the same bits as the CPU's o[k] *= scale.
EMU_TEST(mul_scalar_matches_float_product) {
    int vi = 0;
    for (uint32_t n : lens)
        for (const emu::Variant &v : kt_variants()) {
            kt_scope scope;
            const uint32_t threads = (n + 3) / 4, tpt = vi++ % 2 ? 32 : 64;
            float *x = kt_rand(n, -3.0f, 3.0f);
            std::vector<float> x0(x, x + n);
            mllm__scale_args a = {n, sqrtf(640.0f)};
            void *bufs[] = {x, &a};
            if (!kt_dispatch("mul_scalar", v, (threads + tpt - 1) / tpt, 1, tpt, bufs, 2)) continue;
            std::vector<double> ref(n), zero(n, 0.0);
            for (uint32_t i = 0; i < n; i++) ref[i] = x0[i] * a.s;   // (float product, then widened)
            char what[128];
            snprintf(what, sizeof what, "mul_scalar n=%u %s", n, msl::sched_name(v.policy));
            kt_close(what, x, ref.data(), zero.data(), n, 0.0);
        }
}

// The bias broadcast (qwen2's Q/K/V biases): every row gets the same bias row, in place and not, odd
// row lengths (rows not float4-aligned); the sum of two floats is exact in double, so the check is tight.
EMU_TEST(add_bias_matches_double_sum) {
    const uint32_t shapes[][2] = {{1, 1}, {3, 7}, {5, 64}, {17, 192}, {2, 4097}};
    int vi = 0;
    for (const auto &sh : shapes)
        for (const emu::Variant &v : kt_variants()) {
            kt_scope scope;
            const uint32_t rows = sh[0], cols = sh[1], n = rows * cols, tpt = vi % 2 ? 32 : 256;
            const bool in_place = vi++ % 2 == 0;
            float *x = kt_rand(n), *b = kt_rand(cols), *out = kt_out(n);
            std::vector<float> x0(x, x + n);
            mllm__bias_args a = {n, cols};
            void *bufs[] = {x, b, in_place ? x : out, &a};
            if (!kt_dispatch("add_bias", v, (n + tpt - 1) / tpt, 1, tpt, bufs, 4)) continue;
            std::vector<double> ref(n), scale(n);
            for (uint32_t i = 0; i < n; i++) {
                ref[i] = (double)x0[i] + b[i % cols];
                scale[i] = fabs(x0[i]) + fabs(b[i % cols]);
            }
            char what[128];
            snprintf(what, sizeof what, "add_bias %ux%u %s%s", rows, cols, msl::sched_name(v.policy), in_place ? " in place" : "");
            kt_close(what, in_place ? x : out, ref.data(), scale.data(), n, 1e-6);
        }
}
