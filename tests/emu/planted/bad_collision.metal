// Planted name collision: a helper with the same name and signature as one in kernels/attention.metal
// (frag_row). Compiled alone, as the emulator compiles each file, it is fine; in the one concatenated
// source Metal compiles (gen/embed_kernels.sh --print-source) it is a redefinition, and the library, so
// the whole backend, would fail to build. check_mode.sh compiles the concatenation with this file
// appended: it must fail, and pass with -DFIXED (the helper renamed).
#include <metal_stdlib>
using namespace metal;

#ifdef FIXED
#define frag_row planted_frag_row
#endif
METAL_FUNC uint frag_row(ushort lane) { return lane * 2u; }

kernel void planted_rows(device uint* y [[buffer(0)]], ushort lane [[thread_index_in_simdgroup]]) {
    y[lane] = frag_row(lane);
}
