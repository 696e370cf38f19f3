// Self-test kernels with planted bugs that the emulator must report instead of crashing or hanging.
#include <metal_stdlib>
using namespace metal;

// Reads x[gid] without checking gid < n: the grid is rounded up to whole threadgroups.
kernel void copy_unchecked(device const float* x [[buffer(0)]],
                           device float*       y [[buffer(1)]],
                           uint gid [[thread_position_in_grid]])
{
    y[gid] = x[gid];
}

// Writes one element past the end (n + 1 threads), landing in the alignment slack of y.
kernel void write_one_past(device float*  y [[buffer(0)]],
                           constant uint& n [[buffer(1)]],
                           uint gid [[thread_position_in_grid]])
{
    if (gid <= n) y[gid] = 1.0f;
}

// Threads that are out of range return before the barrier the others wait at.
kernel void early_exit(device float*  x [[buffer(0)]],
                       constant uint& n [[buffer(1)]],
                       uint gid [[thread_position_in_grid]],
                       uint tid [[thread_index_in_threadgroup]])
{
    threadgroup float t[64];
    if (gid >= n) return;
    t[tid] = x[gid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    x[gid] = t[tid] + t[tid ^ 1];
}

// Two halves of the threadgroup wait at different barriers.
kernel void divergent_barrier(device float* x [[buffer(0)]],
                              uint tid [[thread_index_in_threadgroup]])
{
    threadgroup float t[64];
    t[tid] = x[tid];
    if (tid < 32) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
        x[tid] = t[63 - tid];
    } else {
        threadgroup_barrier(mem_flags::mem_threadgroup);
        x[tid] = t[tid - 32];
    }
}

// Integer division by a value read from memory (0 here).
kernel void divide_by_zero(device int* x [[buffer(0)]], uint tid [[thread_index_in_threadgroup]])
{
    x[tid] = 100 / x[tid];
}
