// A threadgroup array whose size is an expression (here a product) must still be one array shared by
// the threadgroup (mslc once left `[2 * 32]` as a per-thread array, without a word).
#include <metal_stdlib>
using namespace metal;

kernel void tg_array_dims(device float *out [[buffer(0)]], ushort tid [[thread_index_in_threadgroup]],
                          ushort n [[threads_per_threadgroup]]) {
    threadgroup float a[2 * 32];
    a[tid] = float(tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = a[(tid + 1) % n];   // another thread's element
}
