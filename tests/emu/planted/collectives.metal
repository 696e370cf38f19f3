// Self-test kernels: every SIMD-group operation once per lane; results checked on the host against
// an independent per-simdgroup computation.
#include <metal_stdlib>
using namespace metal;

kernel void simd_ops(device const float* x  [[buffer(0)]],
                     device float*       f  [[buffer(1)]],   // 12 float results per thread
                     device uint*        u  [[buffer(2)]],   // 8 integer results per thread
                     uint tid  [[thread_index_in_threadgroup]],
                     uint lane [[thread_index_in_simdgroup]],
                     uint sg   [[simdgroup_index_in_threadgroup]],
                     uint nsg  [[simdgroups_per_threadgroup]],
                     uint width [[threads_per_simdgroup]])
{
    const float v = x[tid];
    device float* o = f + tid * 12;
    o[0] = simd_sum(v);
    o[1] = simd_max(v);
    o[2] = simd_min(v);
    o[3] = simd_prefix_exclusive_sum(v);
    o[4] = simd_prefix_inclusive_sum(v);
    o[5] = simd_shuffle(v, (ushort)((lane * 7 + 3) % 32));
    o[6] = simd_shuffle_down(v, 5);
    o[7] = simd_shuffle_up(v, 3);
    o[8] = simd_shuffle_xor(v, 6);
    o[9] = simd_broadcast(v, 17);
    const float4 v4 = float4(v, 2.0f * v, -v, 1.0f);
    const float4 s4 = simd_sum(v4);
    o[10] = s4.y + s4.z + s4.w;            // = sum(v) + 32
    o[11] = float(simd_sum(half(v)));      // small integers: exact in half
    device uint* q = u + tid * 8;
    const uint b = uint(int(v) & 7);
    q[0] = uint(static_cast<simd_vote::vote_t>(simd_ballot(v > 0.0f)));
    q[1] = simd_all(v > -100.0f) ? 1u : 0u;
    q[2] = simd_any(v > 7.5f) ? 1u : 0u;
    q[3] = simd_and(b | 8u);
    q[4] = simd_or(b);
    q[5] = simd_xor(b);
    q[6] = simd_broadcast_first(tid);
    q[7] = sg * 1000 + nsg * 100 + width;
}

// Reduction inside a branch: only the lanes that take it participate.
kernel void simd_sum_divergent(device const float* x [[buffer(0)]],
                               device float*       y [[buffer(1)]],
                               uint tid [[thread_index_in_threadgroup]])
{
    const float v = x[tid];
    float s = -1.0f;
    if (v > 0.0f) s = simd_sum(v);
    y[tid] = s;
}
