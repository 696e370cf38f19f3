// Self-test kernel for the language features the shim and the generator must handle: function
// constants, [[threadgroup(0)]] memory, threadgroup and device atomics, a threadgroup scalar,
// packed_float3, half literals, vector constructors and swizzles, macro-made [[host_name]].
#include <metal_stdlib>
using namespace metal;

constant bool use_scale [[function_constant(0)]];
constant float fc_scale [[function_constant(1)]];

struct Params { uint n; float bias; };

#define INSTANTIATE(name, T) \
    template [[host_name(name)]] [[kernel]] decltype(features<T>) features<T>;

template <typename T>
[[kernel, max_total_threads_per_threadgroup(256)]] void features(
    device const packed_float3* p      [[buffer(0)]],
    device T*                   out    [[buffer(1)]],
    device atomic_uint*         count  [[buffer(2)]],
    constant Params&            prm    [[buffer(3)]],
    threadgroup uint*           hist   [[threadgroup(0)]],
    uint3 gid [[thread_position_in_grid]],
    uint  tid [[thread_index_in_threadgroup]])
{
    threadgroup atomic_uint tg_total;
    if (tid == 0) atomic_store_explicit(&tg_total, 0u, memory_order_relaxed);
    if (tid < 4) hist[tid] = 0;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (gid.x < prm.n) {
        const float3 v = p[gid.x];
        float4 w = float4(v.zyx, 1.0f);      // swizzle + constructor
        w.xy = w.yx * 2.0h;                  // swizzle assignment, half literal
        float s = dot(w, float4(1.0f)) + prm.bias;
        if (is_function_constant_defined(use_scale) && use_scale) s *= fc_scale;
        out[gid.x] = T(s);
        atomic_fetch_add_explicit((threadgroup atomic_uint*)&hist[uint(clamp(s, 0.0f, 3.0f))], 1u, memory_order_relaxed);
        atomic_fetch_add_explicit(&tg_total, 1u, memory_order_relaxed);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid < 4) atomic_fetch_add_explicit(&count[tid], hist[tid], memory_order_relaxed);
    if (tid == 0) atomic_fetch_max_explicit(&count[4], atomic_load_explicit(&tg_total, memory_order_relaxed), memory_order_relaxed);
}
INSTANTIATE("features_f32", float)
INSTANTIATE("features_f16", half)

// A threadgroup array whose size is an expression (parentheses, '*') must still be one array shared
// by the threadgroup, next to a threadgroup pointer into it: each thread reads what another wrote.
kernel void tg_expr_array(device float *y [[buffer(0)]], uint t [[thread_index_in_threadgroup]]) {
    threadgroup float4 buf[(2 * 8 * 4) / 4];
    threadgroup float *p = (threadgroup float *)buf;
    buf[t] = float4(float(t));
    threadgroup_barrier(mem_flags::mem_threadgroup);
    y[t] = p[4 * (15 - t)];
}
