// Self-test kernels: reversing a row through threadgroup memory, with and without the barrier
// between the writes and the reads of other threads' elements.
#include <metal_stdlib>
using namespace metal;

template <bool WITH_BARRIER>
kernel void reverse_rows(device const float* x [[buffer(0)]],
                         device float*       y [[buffer(1)]],
                         uint  row [[threadgroup_position_in_grid]],
                         uint  tid [[thread_index_in_threadgroup]],
                         uint  n   [[threads_per_threadgroup]])
{
    threadgroup float tile[256];
    tile[tid] = x[row * n + tid];
    if (WITH_BARRIER) threadgroup_barrier(mem_flags::mem_threadgroup);
    y[row * n + tid] = tile[n - 1 - tid];
}
template [[host_name("reverse_rows")]] [[kernel]] decltype(reverse_rows<true>) reverse_rows<true>;
template [[host_name("reverse_rows_no_barrier")]] [[kernel]] decltype(reverse_rows<false>) reverse_rows<false>;
