// Planted attribute-width mix: a uint2 [[threadgroup_position_in_grid]] with a scalar
// [[threads_per_threadgroup]], which the MSL specification forbids (all scalars, or all vectors of one
// width) and Apple's compiler rejects; mslc.py must reject it too. With -DFIXED the size is a ushort2,
// which shows the failure is due to the planted mix alone.
#include <metal_stdlib>
using namespace metal;

kernel void fill_tiles(device float* y [[buffer(0)]],
                       uint2 tg [[threadgroup_position_in_grid]],
                       ushort tid [[thread_index_in_threadgroup]],
#ifdef FIXED
                       ushort2 ntg [[threads_per_threadgroup]])
{
    const uint n = ntg.x;
#else
                       ushort ntg [[threads_per_threadgroup]])   // BUG: scalar next to the uint2 above
{
    const uint n = ntg;
#endif
    y[(tg.y * 16 + tg.x) * n + tid] = float(tid);
}
