// Elementwise ops over n floats: one thread per float4 (packed loads: buffers may start at any
// float offset), so threads = ceil(n / 4) in any grouping.
#include <metal_stdlib>
#include "common.h"

// The FFN gate: out = silu(gate) * up, silu(g) = g / (1 + e^-g).
kernel void swiglu(device const float *gate [[buffer(0)]], device const float *up [[buffer(1)]],
                   device float *out [[buffer(2)]], constant mllm__vec_args &a [[buffer(3)]],
                   uint i [[thread_position_in_grid]]) {
    if (4 * i + 4 <= a.n) {
        const float4 g = float4(((device const packed_float4 *)gate)[i]);
        ((device packed_float4 *)out)[i] = g / (1.0f + exp(-g)) * float4(((device const packed_float4 *)up)[i]);
    } else {
        for (uint k = 4 * i; k < a.n; k++) out[k] = gate[k] / (1.0f + exp(-gate[k])) * up[k];
    }
}

// The GeGLU gate (gemma): out = gelu(gate) * up, GELU in its tanh form
// 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3))), as the CPU backend (mllm__geglu) computes it.
// precise::tanh: a fast tanh built from exp overflows to NaN for large arguments.
METAL_FUNC float4 gelu_tanh(float4 g) {
    return 0.5f * g * (1.0f + precise::tanh(0.7978845608f * (g + 0.044715f * g * g * g)));
}
kernel void geglu(device const float *gate [[buffer(0)]], device const float *up [[buffer(1)]],
                  device float *out [[buffer(2)]], constant mllm__vec_args &a [[buffer(3)]],
                  uint i [[thread_position_in_grid]]) {
    if (4 * i + 4 <= a.n) {
        ((device packed_float4 *)out)[i] = gelu_tanh(float4(((device const packed_float4 *)gate)[i])) *
                                           float4(((device const packed_float4 *)up)[i]);
    } else {
        for (uint k = 4 * i; k < a.n; k++) out[k] = gelu_tanh(float4(gate[k])).x * up[k];
    }
}

// Scale in place: x *= s (gemma's embeddings, by sqrt(n_embd)).
kernel void mul_scalar(device float *x [[buffer(0)]], constant mllm__scale_args &a [[buffer(1)]],
                       uint i [[thread_position_in_grid]]) {
    if (4 * i + 4 <= a.n) {
        ((device packed_float4 *)x)[i] = float4(((device packed_float4 *)x)[i]) * a.s;
    } else {
        for (uint k = 4 * i; k < a.n; k++) x[k] *= a.s;
    }
}

// Residual add: out = a + b (out may alias either input).
kernel void add(device const float *x [[buffer(0)]], device const float *y [[buffer(1)]],
                device float *out [[buffer(2)]], constant mllm__vec_args &a [[buffer(3)]],
                uint i [[thread_position_in_grid]]) {
    if (4 * i + 4 <= a.n) {
        ((device packed_float4 *)out)[i] = float4(((device const packed_float4 *)x)[i]) +
                                           float4(((device const packed_float4 *)y)[i]);
    } else {
        for (uint k = 4 * i; k < a.n; k++) out[k] = x[k] + y[k];
    }
}

// Bias broadcast over rows: out[r][c] = x[r][c] + b[c] (qwen2's Q/K/V biases; out may alias x).  One
// thread per float: rows need not be float4-aligned.
kernel void add_bias(device const float *x [[buffer(0)]], device const float *b [[buffer(1)]],
                     device float *out [[buffer(2)]], constant mllm__bias_args &a [[buffer(3)]],
                     uint i [[thread_position_in_grid]]) {
    if (i < a.n) out[i] = x[i] + b[i % a.cols];
}
