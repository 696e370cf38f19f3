// The CPU backend's ops, as references for the kernel tests (see kernels_test.h).  This is the one
// translation unit of build/test_emu that compiles metalllm.h's implementation: its static functions
// are reachable only from here.
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <vector>

#include "kernels_test.h"

static kt_type kt_mk(uint32_t id, const char *name) {
    const mllm__type_traits *tr = mllm__traits(id);
    kt_type t = {id, name, tr->block, tr->bytes};
    return t;
}
// (Order: the KT_* indices of kernels_test.h.)
const kt_type kt_types[KT_NTYPES] = {
    kt_mk(MLLM__F32, "f32"), kt_mk(MLLM__F16, "f16"), kt_mk(MLLM__BF16, "bf16"), kt_mk(MLLM__Q8_0, "q8_0"),
    kt_mk(MLLM__Q4_0, "q4_0"), kt_mk(MLLM__Q4_1, "q4_1"), kt_mk(MLLM__Q4_K, "q4_k"), kt_mk(MLLM__Q6_K, "q6_k"),
};

uint16_t kt_f16_bits(float f) { return mllm__f32_to_f16(f); }
uint16_t kt_bf16_bits(float f) { return mllm__f32_to_bf16(f); }

void kt_cpu_dequant(const kt_type &t, const uint8_t *row, uint32_t k, double *out) {
    std::vector<float> f(k);
    mllm__dequant_row(t.id, row, f.data(), k);
    for (uint32_t i = 0; i < k; i++) out[i] = f[i];
}
void kt_cpu_rmsnorm(float *out, const float *x, const float *w, int n, float eps) { mllm__rmsnorm(out, x, w, n, eps); }
void kt_cpu_rope(float *x, int n_heads, int head_dim, int n_rot, int pos, float base, float scale, int neox) {
    mllm__rope(x, n_heads, head_dim, n_rot, pos, base, scale, neox);
}
void kt_cpu_swiglu(float *out, const float *gate, const float *up, int n) { mllm__swiglu(out, gate, up, n); }
void kt_cpu_softmax(float *x, int n) { mllm__softmax(x, n); }
int kt_cpu_greedy(float *logits, int n) {
    mllm_sampler_params greedy;
    memset(&greedy, 0, sizeof greedy);
    std::vector<mllm__cand> cand((size_t)n);
    return mllm__sample(logits, n, NULL, 0, &greedy, 0, cand.data());
}
