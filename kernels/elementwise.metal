// Elementwise ops over n floats: one thread per float4 (packed loads: buffers may start at any
// float offset), so threads = ceil(n / 4) in any grouping.
#include <metal_stdlib>
#include "common.h"

// The FFN gates: out = act(gate) * up, act silu (swiglu) or GELU (geglu, gemma), both in common.h.
kernel void swiglu(device const float *gate [[buffer(0)]], device const float *up [[buffer(1)]],
                   device float *out [[buffer(2)]], constant mllm__vec_args &a [[buffer(3)]],
                   uint i [[thread_position_in_grid]]) {
    if (4 * i + 4 <= a.n) {
        ((device packed_float4 *)out)[i] = silu(float4(((device const packed_float4 *)gate)[i])) *
                                           float4(((device const packed_float4 *)up)[i]);
    } else {
        for (uint k = 4 * i; k < a.n; k++) out[k] = silu(float4(gate[k])).x * up[k];
    }
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
