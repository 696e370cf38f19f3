// Self-test kernels for simdgroup_matrix: the thread_elements layout and D = A*B + C with offsets,
// row strides and a transposed load.
#include <metal_stdlib>
#include <metal_simdgroup_matrix>
using namespace metal;

// out[2*lane], out[2*lane+1]: which elements of m (m[i] = i) lane `lane` holds; out[64..127]: m * I
kernel void sg_layout(device float2*      out [[buffer(0)]],
                      device const float* m   [[buffer(1)]],
                      ushort lane [[thread_index_in_simdgroup]])
{
    simdgroup_float8x8 a;
    simdgroup_load(a, m, 8);
    out[lane] = a.thread_elements();
    simdgroup_float8x8 r;
    simdgroup_multiply(r, a, simdgroup_float8x8(1.0f));
    simdgroup_store(r, (device float*)(out + 32), 8);
}

// A: 8x8 at column 8 of a row-major 8x16 array; B: given transposed (bt[j*8+k] = B[k][j]);
// C: 8x8; D = A*B + C stored at column 4 of a 8x12 array. Inputs staged through threadgroup memory.
template <typename T>
kernel void sg_mma(device const T* a  [[buffer(0)]],
                   device const T* bt [[buffer(1)]],
                   device const T* c  [[buffer(2)]],
                   device T*       d  [[buffer(3)]],
                   ushort lane [[thread_index_in_simdgroup]])
{
    threadgroup T tb[64];
    for (ushort i = lane; i < 64; i += 32) tb[i] = bt[i];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    simdgroup_matrix<T, 8, 8> ma, mb, mc, md;
    simdgroup_load(ma, a, 16, ulong2(8, 0));
    simdgroup_load(mb, tb, 8, ulong2(0, 0), true);
    simdgroup_load(mc, c, 8);
    simdgroup_multiply_accumulate(md, ma, mb, mc);
    simdgroup_store(md, d, 12, ulong2(4, 0));
}
template [[host_name("sg_mma_f32")]] [[kernel]] decltype(sg_mma<float>) sg_mma<float>;
template [[host_name("sg_mma_f16")]] [[kernel]] decltype(sg_mma<half>) sg_mma<half>;
template [[host_name("sg_mma_bf16")]] [[kernel]] decltype(sg_mma<bfloat>) sg_mma<bfloat>;
