// Planted address-space mismatch: a helper that sums threadgroup memory is handed the device input.
// Apple's compiler rejects this; the emulator's CHECK mode (MSL_AS) must reject it too. With
// -DFIXED the call is correct, which shows the failure is due to the planted bug alone.
#include <metal_stdlib>
using namespace metal;

static float sum_tile(threadgroup const float* t, uint count) {
    float s = 0.0f;
    for (uint i = 0; i < count; i++) s += t[i];
    return s;
}

kernel void sum_rows(device const float* x [[buffer(0)]],
                     device float*       y [[buffer(1)]],
                     uint row [[threadgroup_position_in_grid]],
                     uint tid [[thread_index_in_threadgroup]])
{
    threadgroup float part[64];
    part[tid] = x[row * 64 + tid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
#ifdef FIXED
    if (tid == 0) y[row] = sum_tile(part, 64);
#else
    if (tid == 0) y[row] = sum_tile(x + row * 64, 64);   // BUG: device pointer where threadgroup is expected
#endif
}
