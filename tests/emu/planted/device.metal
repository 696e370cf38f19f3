// Kernels for the test of the emulated device (tests/emu/test_emu_device.cpp).
#include <metal_stdlib>
using namespace metal;

kernel void dev_scale(device const float* x [[buffer(0)]],
                      device float*       y [[buffer(1)]],
                      constant float&     s [[buffer(2)]],
                      uint i [[thread_position_in_grid]])
{
    y[i] = x[i] * s;
}

// y[i] += sum of a threadgroup-memory staging of x (uses [[threadgroup(0)]] set by the host)
kernel void dev_add_sum(device const float* x [[buffer(0)]],
                        device float*       y [[buffer(1)]],
                        threadgroup float*  t [[threadgroup(0)]],
                        uint i [[thread_position_in_grid]],
                        uint tid [[thread_index_in_threadgroup]],
                        uint n [[threads_per_threadgroup]])
{
    t[tid] = x[i];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float s = 0.0f;
    for (uint k = 0; k < n; k++) s += t[k];
    y[i] += s;
}
