// rms_norm / rms_norm_mul (kernels/norm.metal), rope / rope_neox (rope.metal) and swiglu
// (elementwise.metal) against the CPU backend's mllm__rmsnorm / mllm__rope / mllm__swiglu, add against
// a double sum, on random inputs: aligned and odd lengths, several threadgroup sizes, three schedules,
// NaN-poisoned threadgroup memory.
#include "kernels_test.h"

static const uint32_t lens[] = {1, 7, 33, 576, 1536, 4097};
#define NLENS 6

static void test_rms_norm_matches_cpu(void) {
    static const uint32_t tpts[] = {32, 256, 1024};
    for (int li = 0; li < NLENS; li++)
        for (int s = 0; s < KT_NSCHED; s++)
            for (int mul = 0; mul < 2; mul++) {
                const uint32_t n = lens[li], rows = 3, tpt = tpts[(li + s) % 3];
                const float eps = 1e-5f;
                float *x = kt_rand((size_t)rows * n, -2.0f, 2.0f), *w = kt_rand(n, 0.5f, 1.5f);
                float *y = kt_out((size_t)rows * n);
                mllm__norm_args a = {n, eps};
                void *plain[] = {x, y, &a}, *fused[] = {x, w, y, &a};
                const char *k = mul ? "rms_norm_mul" : "rms_norm";
                if (!kt_dispatch(k, kt_scheds[s], rows, 1, tpt, mul ? fused : plain, mul ? 4 : 3)) continue;
                std::vector<float> ones(n, 1.0f), cpu(n);
                std::vector<double> ref((size_t)rows * n), scale((size_t)rows * n);
                for (uint32_t r = 0; r < rows; r++) {
                    mllm__rmsnorm(cpu.data(), x + r * n, mul ? w : ones.data(), (int)n, eps);
                    for (uint32_t i = 0; i < n; i++) {
                        ref[r * n + i] = cpu[i];
                        scale[r * n + i] = std::fabs(cpu[i]);
                    }
                }
                char what[96];
                snprintf(what, sizeof what, "%s n=%u tpt=%u %s", k, n, tpt, kt_scheds[s].name);
                kt_close(what, y, ref.data(), scale.data(), (size_t)rows * n, 1e-5);
            }
}

// Rotation of the first n_rot dims of every head; the other dims and the gap between tokens must
// stay as they were.
static void test_rope_matches_cpu(void) {
    struct { uint32_t n_heads, head_dim, n_rot, gap, tokens; float base, fscale; } cases[] = {
        {3, 64, 64, 0, 7, 10000.0f, 1.0f},
        {2, 128, 128, 16, 3, 1000000.0f, 1.0f},
        {5, 64, 32, 0, 4, 10000.0f, 0.5f},   // partial rotation, scaled positions
        {1, 2, 2, 3, 1, 10000.0f, 1.0f},
    };
    for (int ci = 0; ci < 4; ci++)
        for (int s = 0; s < KT_NSCHED; s++)
            for (int neox = 0; neox < 2; neox++) {
                const auto &c = cases[ci];
                const uint32_t stride = c.n_heads * c.head_dim + c.gap, n = stride * c.tokens;
                float *x = kt_rand(n);
                std::vector<float> x0(x, x + n);
                int *pos = kt_buf<int>(c.tokens);
                for (uint32_t t = 0; t < c.tokens; t++) pos[t] = t == 0 ? 0 : (int)(kt_u32() % 2048);
                mllm__rope_args a = {c.n_heads, c.head_dim, c.n_rot, stride, c.base, c.fscale};
                void *bufs[] = {x, pos, &a};
                const char *k = neox ? "rope_neox" : "rope";
                if (!kt_dispatch(k, kt_scheds[s], c.n_heads, c.tokens, s == 1 ? 64 : 32, bufs, 3)) continue;
                std::vector<float> cpu(x0);
                std::vector<double> scale(n, 1.0);
                for (uint32_t t = 0; t < c.tokens; t++) {
                    mllm__rope(&cpu[(size_t)t * stride], (int)c.n_heads, (int)c.head_dim, (int)c.n_rot, pos[t],
                               c.base, c.fscale, neox);
                    for (uint32_t h = 0; h < c.n_heads; h++)
                        for (uint32_t i = 0; i < c.n_rot / 2; i++) {
                            const size_t o = (size_t)t * stride + (size_t)h * c.head_dim;
                            const size_t i0 = o + (neox ? i : 2 * i), i1 = o + (neox ? i + c.n_rot / 2 : 2 * i + 1);
                            // the kernel's float angle is off by ~1 ulp of pos * freq: error grows with it
                            const double th = (double)pos[t] * c.fscale * std::pow((double)c.base, -2.0 * i / c.n_rot);
                            scale[i0] = scale[i1] = (std::fabs(x0[i0]) + std::fabs(x0[i1])) * (1.0 + th);
                        }
                }
                std::vector<double> ref(cpu.begin(), cpu.end());
                std::vector<double> exact(n);   // untouched elements must be bit-identical
                for (uint32_t i = 0; i < n; i++) exact[i] = scale[i] == 1.0 ? 0.0 : 1.0;
                char what[96];
                snprintf(what, sizeof what, "%s heads=%u dim=%u rot=%u %s", k, c.n_heads, c.head_dim, c.n_rot,
                         kt_scheds[s].name);
                kt_close(what, x, ref.data(), scale.data(), n, 1e-6);
                size_t changed = 0;
                for (uint32_t i = 0; i < n; i++) changed += exact[i] == 0.0 && x[i] != x0[i];
                CHECK(changed == 0, "%s: %zu elements outside the rotated dims changed", what, changed);
            }
}

static void check_elementwise(bool swiglu) {
    for (int li = 0; li < NLENS; li++)
        for (int s = 0; s < KT_NSCHED; s++) {
            const uint32_t n = lens[li], threads = (n + 3) / 4, tpt = s == 1 ? 32 : 64;
            float *g = kt_rand(n, -6.0f, 6.0f), *u = kt_rand(n), *out = kt_out(n);
            std::vector<float> g0(g, g + n);
            const bool in_place = s == 2 && !swiglu;   // add as the residual stream uses it: x += y
            mllm__vec_args a = {n};
            void *bufs[] = {g, u, in_place ? g : out, &a};
            const char *k = swiglu ? "swiglu" : "add";
            if (!kt_dispatch(k, kt_scheds[s], (threads + tpt - 1) / tpt, 1, tpt, bufs, 4)) continue;
            std::vector<float> cpu(n);
            if (swiglu) mllm__swiglu(cpu.data(), g0.data(), u, (int)n);
            std::vector<double> ref(n), scale(n);
            for (uint32_t i = 0; i < n; i++) {
                const double gv = g0[i];
                ref[i] = swiglu ? (double)cpu[i] : gv + u[i];
                scale[i] = swiglu ? std::fabs(gv * u[i]) + 1e-30 : std::fabs(gv) + std::fabs(u[i]);
            }
            char what[96];
            snprintf(what, sizeof what, "%s n=%u %s%s", k, n, kt_scheds[s].name, in_place ? " in place" : "");
            kt_close(what, in_place ? g : out, ref.data(), scale.data(), n, 1e-6);
        }
}
static void test_swiglu_matches_cpu(void) { check_elementwise(true); }
static void test_add_matches_double_sum(void) { check_elementwise(false); }

int main(void) {
    RUN(test_rms_norm_matches_cpu);
    RUN(test_rope_matches_cpu);
    RUN(test_swiglu_matches_cpu);
    RUN(test_add_matches_double_sum);
    return t_finish();
}
