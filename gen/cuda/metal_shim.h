// metal_shim.h - the part of the Metal Shading Language standard library that the kernels use, for
// CUDA: gen/cudac.py translates kernels/*.metal (like tests/emu/mslc.py does for the emulator) into
// CUDA C++ against this header, and clang (CUDA device mode, NVPTX) compiles it to PTX.  The types and
// math are the emulator shim's (clang vector extensions, _Float16, __bf16); what runs the threads is
// CUDA's: threadgroups are blocks, simdgroups are warps (32 lanes, 1:1), threadgroup memory is shared
// memory, SIMD-group collectives are warp shuffles and votes, simdgroup_matrix products are
// tensor-core mma.sync (3xTF32).
// Everything CUDA-specific about the kernels lives here; the kernel sources stay MSL.
#pragma once
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
typedef __SIZE_TYPE__ size_t;
typedef __UINT8_TYPE__ uint8_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __UINT64_TYPE__ uint64_t;
typedef __INT32_TYPE__ int32_t;
typedef __INT64_TYPE__ int64_t;
// libdevice (linked as bitcode): correctly rounded or within its documented ulps
extern "C" {
__device__ float __nv_acosf(float);
__device__ float __nv_asinf(float);
__device__ float __nv_atanf(float);
__device__ float __nv_ceilf(float);
__device__ float __nv_cosf(float);
__device__ float __nv_coshf(float);
__device__ float __nv_erff(float);
__device__ float __nv_exp2f(float);
__device__ float __nv_expf(float);
__device__ float __nv_fabsf(float);
__device__ float __nv_floorf(float);
__device__ float __nv_isinf(float);
__device__ float __nv_log10f(float);
__device__ float __nv_log2f(float);
__device__ float __nv_logf(float);
__device__ float __nv_rintf(float);
__device__ float __nv_roundf(float);
__device__ float __nv_sinf(float);
__device__ float __nv_sinhf(float);
__device__ float __nv_sqrtf(float);
__device__ float __nv_tanf(float);
__device__ float __nv_tanhf(float);
__device__ float __nv_truncf(float);
__device__ float __nv_atan2f(float, float);
__device__ float __nv_copysignf(float, float);
__device__ float __nv_fmaxf(float, float);
__device__ float __nv_fminf(float, float);
__device__ float __nv_fmodf(float, float);
__device__ float __nv_powf(float, float);
__device__ float __nv_fmaf(float, float, float);
}
// every function below, and every function of the kernels, is a device function
#pragma clang force_cuda_host_device begin

// ------------------------------------------------------------------------------ address spaces
// Generic addressing: one pointer type for device, constant and threadgroup memory (PTX resolves it).
#define device
#define constant const
#define threadgroup
#define thread
#define kernel
#define METAL_FUNC inline __attribute__((always_inline))
// `threadgroup T name[dims];` in a kernel (gen/cudac.py rewrites it like mslc.py): shared memory
#define MSL_PAREN_STRIP(...) __VA_ARGS__
#define MSL_TG_VAR(name, dims, ...)                                                                     \
    typedef __VA_ARGS__ msl_tg_type_##name MSL_PAREN_STRIP dims;                                         \
    __shared__ msl_tg_type_##name msl_tg_store_##name;                                                  \
    msl_tg_type_##name &name = msl_tg_store_##name

#define MSL_MATHF(f) __nv_##f
#include "../../tests/emu/include/msl_common.hpp"

namespace metal {
// bar.sync orders the block's shared and global memory accesses (CUDA's __syncthreads); a device-memory
// flag adds a device-scope fence, as Metal's mem_device makes the writes visible beyond the block.
METAL_FUNC void threadgroup_barrier(mem_flags f) {
    if ((int)f & (int)mem_flags::mem_device) __nvvm_membar_gl();
    __nvvm_barrier_sync(0);
}
METAL_FUNC void atomic_thread_fence(mem_flags, memory_order, thread_scope = thread_scope::thread_scope_device) { __nvvm_membar_gl(); }
}  // namespace metal

// ------------------------------------------------------------------------------ bytes to floats
// The quantized weights' bytes and nibbles become floats through float4(uchar4) and float4(char4).  The
// conversion unit gives 16 results a clock per SM (sm_80, sm_90) against 64 for integer logic and 128 for
// float adds, and the decode GEMVs convert every weight.  A byte b in the mantissa of 2^23 is the float
// 2^23 + b exactly, so one byte extract and one subtraction give float(b), bit for bit (signed bytes:
// b + 128 there, less 2^23 + 128).  Measured on the H200 (tests/cuda/h200-bench.log, session 16): the
// GEMVs alone within 3% either way, decode of a Q8_0 model 6.7% faster, Q4_K_M and Q4_1 within 2%.
namespace msl {
METAL_FUNC float u8_float(uint32_t u, int k, float bias) {   // bias 2^23, or 2^23 + 128 for signed bytes
    return __builtin_bit_cast(float, ((u >> (8 * k)) & 0xFFu) | 0x4B000000u) - bias;
}
template <> METAL_FUNC ::float4 make_vec<::float4, ::uchar4>(::uchar4 a) {
    const uint32_t u = __builtin_bit_cast(uint32_t, a);
    return ::float4{u8_float(u, 0, 8388608.0f), u8_float(u, 1, 8388608.0f), u8_float(u, 2, 8388608.0f),
    u8_float(u, 3, 8388608.0f)};
}
template <> METAL_FUNC ::float4 make_vec<::float4, ::char4>(::char4 a) {
    const uint32_t u = __builtin_bit_cast(uint32_t, a) ^ 0x80808080u;   // b + 128 in each byte
    return ::float4{u8_float(u, 0, 8388736.0f), u8_float(u, 1, 8388736.0f), u8_float(u, 2, 8388736.0f),
    u8_float(u, 3, 8388736.0f)};
}
}  // namespace msl

// ------------------------------------------------------------------------------ SIMD-group collectives
// Warp shuffles over the active lanes.  Any type travels as 32-bit words.  Reductions over a full warp
// are xor butterflies (every lane adds the same two partial sums, so all lanes get bitwise the same
// result, as Metal promises); over a partial warp the active lanes are walked in order.
namespace msl {
enum { SH_IDX, SH_DOWN, SH_UP, SH_XOR };
METAL_FUNC uint32_t active_mask() { return __nvvm_activemask(); }
METAL_FUNC uint32_t lane_id() { return __nvvm_read_ptx_sreg_laneid(); }
template <int K> METAL_FUNC uint32_t shfl_word(uint32_t m, uint32_t w, uint32_t a) {
    if (K == SH_IDX) return (uint32_t)__nvvm_shfl_sync_idx_i32(m, (int)w, (int)a, 0x1f);
    if (K == SH_DOWN) return (uint32_t)__nvvm_shfl_sync_down_i32(m, (int)w, (int)a, 0x1f);
    if (K == SH_UP) return (uint32_t)__nvvm_shfl_sync_up_i32(m, (int)w, (int)a, 0);
    return (uint32_t)__nvvm_shfl_sync_bfly_i32(m, (int)w, (int)a, 0x1f);
}
template <int K, class T> METAL_FUNC T shfl(uint32_t m, T x, uint32_t a) {
    constexpr int W = (sizeof(T) + 3) / 4;
    uint32_t w[W] = {};
    __builtin_memcpy(w, &x, sizeof(T));
    for (int i = 0; i < W; i++) w[i] = shfl_word<K>(m, w[i], a);
    __builtin_memcpy(&x, w, sizeof(T));
    return x;
}
enum { R_SUM, R_PROD, R_MAX, R_MIN, R_AND, R_OR, R_XOR };
template <int OP, class T> METAL_FUNC T combine(T a, T b) {
    if constexpr (OP == R_SUM) return a + b;
    else if constexpr (OP == R_PROD) return a * b;
    else if constexpr (OP == R_MAX) return metal::max(a, b);
    else if constexpr (OP == R_MIN) return metal::min(a, b);
    else if constexpr (OP == R_AND) return a & b;
    else if constexpr (OP == R_OR) return a | b;
    else return a ^ b;
}
template <int OP, class T> METAL_FUNC T reduce(T x) {
    const uint32_t m = active_mask();
    if (m == 0xffffffffu) {
        for (uint32_t o = 16; o; o >>= 1) x = combine<OP>(x, shfl<SH_XOR>(m, x, o));
        return x;
    }
    T r = x;
    bool first = true;
    for (uint32_t l = 0; l < 32; l++)
        if ((m >> l) & 1u) {
            T v = shfl<SH_IDX>(m, x, l);
            r = first ? v : combine<OP>(r, v);
            first = false;
        }
    return r;
}
// prefix over the active lanes in lane order (exclusive: identity at the first)
template <int OP, bool INCL, class T> METAL_FUNC T scan(T x) {
    const uint32_t m = active_mask(), me = lane_id();
    T run = OP == R_PROD ? T(1) : T(0), mine = run;
    for (uint32_t l = 0; l < 32; l++)
        if ((m >> l) & 1u) {
            T v = shfl<SH_IDX>(m, x, l);
            if (l == me && !INCL) mine = run;
            run = combine<OP>(run, v);
            if (l == me && INCL) mine = run;
        }
    return mine;
}
}  // namespace msl

namespace metal {
template <class T> METAL_FUNC T simd_sum(T x) { return ::msl::reduce<::msl::R_SUM>(x); }
template <class T> METAL_FUNC T simd_product(T x) { return ::msl::reduce<::msl::R_PROD>(x); }
template <class T> METAL_FUNC T simd_max(T x) { return ::msl::reduce<::msl::R_MAX>(x); }
template <class T> METAL_FUNC T simd_min(T x) { return ::msl::reduce<::msl::R_MIN>(x); }
template <class T> METAL_FUNC T simd_and(T x) { return ::msl::reduce<::msl::R_AND>(x); }
template <class T> METAL_FUNC T simd_or(T x) { return ::msl::reduce<::msl::R_OR>(x); }
template <class T> METAL_FUNC T simd_xor(T x) { return ::msl::reduce<::msl::R_XOR>(x); }
template <class T> METAL_FUNC T simd_prefix_exclusive_sum(T x) { return ::msl::scan<::msl::R_SUM, false>(x); }
template <class T> METAL_FUNC T simd_prefix_inclusive_sum(T x) { return ::msl::scan<::msl::R_SUM, true>(x); }
template <class T> METAL_FUNC T simd_prefix_exclusive_product(T x) { return ::msl::scan<::msl::R_PROD, false>(x); }
template <class T> METAL_FUNC T simd_prefix_inclusive_product(T x) { return ::msl::scan<::msl::R_PROD, true>(x); }
template <class T> METAL_FUNC T simd_shuffle(T x, ushort l) { return ::msl::shfl<::msl::SH_IDX>(::msl::active_mask(), x, l); }
template <class T> METAL_FUNC T simd_broadcast(T x, ushort l) { return ::msl::shfl<::msl::SH_IDX>(::msl::active_mask(), x, l); }
template <class T> METAL_FUNC T simd_shuffle_down(T x, ushort d) { return ::msl::shfl<::msl::SH_DOWN>(::msl::active_mask(), x, d); }
template <class T> METAL_FUNC T simd_shuffle_up(T x, ushort d) { return ::msl::shfl<::msl::SH_UP>(::msl::active_mask(), x, d); }
template <class T> METAL_FUNC T simd_shuffle_xor(T x, ushort d) { return ::msl::shfl<::msl::SH_XOR>(::msl::active_mask(), x, d & 31u); }
template <class T> METAL_FUNC T simd_broadcast_first(T x) {
    const uint32_t m = ::msl::active_mask();
    return ::msl::shfl<::msl::SH_IDX>(m, x, (uint32_t)__builtin_ctz(m));
}
struct simd_vote {
    typedef ulong vote_t;
    vote_t v_;
    METAL_FUNC explicit operator vote_t() const { return v_; }
    METAL_FUNC bool all() const { return v_ == 0xffffffffull; }
    METAL_FUNC bool any() const { return v_ != 0; }
};
METAL_FUNC bool simd_all(bool b) { return __nvvm_vote_all_sync(::msl::active_mask(), b); }
METAL_FUNC bool simd_any(bool b) { return __nvvm_vote_any_sync(::msl::active_mask(), b); }
METAL_FUNC simd_vote simd_ballot(bool b) { return simd_vote{(ulong)__nvvm_vote_ballot_sync(::msl::active_mask(), b)}; }
METAL_FUNC simd_vote simd_active_threads_mask() { return simd_vote{(ulong)::msl::active_mask()}; }
METAL_FUNC bool simd_is_first() { return ::msl::lane_id() == (uint32_t)__builtin_ctz(::msl::active_mask()); }
METAL_FUNC void simdgroup_barrier(mem_flags) { __nvvm_bar_warp_sync(::msl::active_mask()); }

// ------------------------------------------------------------------------------ simdgroup_matrix (8x8)
// A fragment is 2 elements a lane in one of four layouts, recorded in lay_ (lane l, g = l >> 2, t = l & 3):
//   SG_A      (g, t), (g, t + 4)        mma.sync's A operand: what simdgroup_load gives
//   SG_B      (t, g), (t + 4, g)        mma.sync's B operand: what a transposed simdgroup_load gives
//   SG_C      (g, 2t), (g, 2t + 1)      mma.sync's accumulator rows: what a product and a fill give;
//             the value is e_ + lo_ (the accumulator's rows g and g + 8, see the product)
//   SG_APPLE  Apple's (as in the emulator): row ((l>>4)&1)*4 + ((l>>1)&3), columns c, c+1 with
//             c = ((l>>3)&1)*4 + (l&1)*2; thread_elements() hands it out (attention.metal's frag_row
//             relies on it).
// Loads, stores and fills take any layout for free (each lane knows its elements' places); an operand
// in another layout than the product wants is moved by sg_relayout (4 shuffles).  The layout is a
// value, but every kernel sets it at compile-time-known places, so after inlining the checks fold away
// and the GEMM's products run with no shuffle (the Apple layout cost 6 a product).
enum : uint { SG_APPLE = 0, SG_A = 1, SG_B = 2, SG_C = 3 };
METAL_FUNC void sg_frag_coord(uint lane, thread uint& row, thread uint& col) {
    row = ((lane >> 4) & 1) * 4 + ((lane >> 1) & 3);
    col = ((lane >> 3) & 1) * 4 + (lane & 1) * 2;
}
METAL_FUNC uint sg_frag_lane(uint row, uint colpair) {   // the Apple lane holding (row, 2 * colpair .. + 1)
    return ((row >> 2) << 4) | ((colpair >> 1) << 3) | ((row & 3) << 1) | (colpair & 1);
}
// Element i of lane l in layout lay: its (row, col).
METAL_FUNC void sg_pos(uint lay, uint l, uint i, thread uint& row, thread uint& col) {
    const uint g = l >> 2, t = l & 3;
    if (lay == SG_A) row = g, col = t + 4 * i;
    else if (lay == SG_B) row = t + 4 * i, col = g;
    else if (lay == SG_C) row = g, col = 2 * t + i;
    else sg_frag_coord(l, row, col), col += i;
}
// The lane and element index holding (row, col) in layout lay.
METAL_FUNC void sg_owner(uint lay, uint row, uint col, thread uint& l, thread uint& i) {
    if (lay == SG_A) l = 4 * row + (col & 3), i = col >> 2;
    else if (lay == SG_B) l = 4 * col + (row & 3), i = row >> 2;
    else if (lay == SG_C) l = 4 * row + (col >> 1), i = col & 1;
    else l = sg_frag_lane(row, col >> 1), i = col & 1;
}
template <class T> METAL_FUNC vec<T, 2> sg_relayout(vec<T, 2> e, uint from, uint to) {
    if (from == to) return e;
    const uint32_t m = 0xffffffffu;   // Metal requires the whole simdgroup in simdgroup_matrix operations
    const uint l = ::msl::lane_id();
    vec<T, 2> r;
    for (uint i = 0; i < 2; i++) {
        uint row, col, sl, si;
        sg_pos(to, l, i, row, col);
        sg_owner(from, row, col, sl, si);
        const T v0 = ::msl::shfl<::msl::SH_IDX>(m, e[0], sl), v1 = ::msl::shfl<::msl::SH_IDX>(m, e[1], sl);
        r[i] = si ? v1 : v0;
    }
    return r;
}
template <class T, int Cols, int Rows> struct simdgroup_matrix {
    static_assert(Cols == 8 && Rows == 8, "only 8x8 simdgroup matrices");
    vec<T, 2> e_, lo_;   // lo_: SG_C only
    uint lay_;
    simdgroup_matrix() = default;
    METAL_FUNC explicit simdgroup_matrix(T d) {   // diagonal matrix
        lay_ = SG_A;
        for (uint i = 0; i < 2; i++) {
            uint r, c;
            sg_pos(lay_, ::msl::lane_id(), i, r, c);
            e_[i] = r == c ? d : T(0);
        }
    }
    METAL_FUNC vec<T, 2> value() const {   // the elements, in layout lay_
        if (lay_ == SG_C) return e_ + lo_;
        return e_;
    }
    METAL_FUNC thread vec<T, 2>& thread_elements() {
        e_ = sg_relayout(value(), lay_, SG_APPLE);
        lay_ = SG_APPLE;
        return e_;
    }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;
template <class T, int C, int R> METAL_FUNC simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(T v) {
    simdgroup_matrix<T, C, R> m;
    m.e_ = v;
    m.lo_ = T(0);
    m.lay_ = SG_C;
    return m;
}
// Element (row, col) of the matrix is src[(origin.y + row) * elements_per_row + origin.x + col], or with
// transpose_matrix src[(origin.y + col) * elements_per_row + origin.x + row].
template <class T, int C, int R, class P>
METAL_FUNC void simdgroup_load(thread simdgroup_matrix<T, C, R>& d, P src, ulong elements_per_row = C,
                               ulong2 matrix_origin = 0, bool transpose_matrix = false) {
    d.lay_ = transpose_matrix ? SG_B : SG_A;
    for (uint i = 0; i < 2; i++) {
        uint r, c;
        sg_pos(d.lay_, ::msl::lane_id(), i, r, c);
        const ulong row = transpose_matrix ? c : r, col = transpose_matrix ? r : c;
        d.e_[i] = (T)src[(matrix_origin.y + row) * elements_per_row + matrix_origin.x + col];
    }
}
template <class T, int C, int R, class P>
METAL_FUNC void simdgroup_store(simdgroup_matrix<T, C, R> a, P dst, ulong elements_per_row = C,
                                ulong2 matrix_origin = 0, bool transpose_matrix = false) {
    const vec<T, 2> e = a.value();
    for (uint i = 0; i < 2; i++) {
        uint r, c;
        sg_pos(a.lay_, ::msl::lane_id(), i, r, c);
        const ulong row = transpose_matrix ? c : r, col = transpose_matrix ? r : c;
        dst[(matrix_origin.y + row) * elements_per_row + matrix_origin.x + col] = e[i];
    }
}
#ifndef MLLM__SG_MMA
#define MLLM__SG_MMA 1   // 0: the shuffle product below, for A/B runs
#endif
#if MLLM__SG_MMA
// D = A B + C on the tensor cores (sm_80 mma.sync m16n8k8 TF32) in "3xTF32": each float x splits into
// hi = x with the low 13 mantissa bits cleared (exact in TF32) and lo = x - hi (exact in float; the
// tensor core keeps its top 11 bits), and [A_hi; A_lo] (16 x 8) times B_hi and B_lo sums all four
// partial products, so a product is good to ~2^-21 relative like float's, not TF32's 2^-11.  half and
// bfloat convert to float exactly (their lo is 0).  In layouts SG_A, SG_B, SG_C the operands are the
// mma's own fragments: A rows g (hi) and g + 8 (lo), columns t, t + 4; B rows t, t + 4 of column g;
// the accumulator rows g (e_: A_hi B) and g + 8 (lo_: A_lo B), columns 2t, 2t + 1.  C accumulates in
// the tensor core's float accumulator from product to product, its two rows summed only when the value
// is read (store, thread_elements, another layout): only the order of float sums differs from the
// emulator's.
METAL_FUNC uint32_t sg_bits(float x) { return __builtin_bit_cast(uint32_t, x); }
METAL_FUNC float sg_tf32_hi(float x) { return __builtin_bit_cast(float, sg_bits(x) & 0xffffe000u); }
template <class TD, class TA, class TB, class TC>
METAL_FUNC void simdgroup_multiply_accumulate(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                              simdgroup_matrix<TB, 8, 8> b, simdgroup_matrix<TC, 8, 8> c) {
    const vec<TA, 2> ea = sg_relayout(a.value(), a.lay_, SG_A);
    const vec<TB, 2> eb = sg_relayout(b.value(), b.lay_, SG_B);
    const float x0 = (float)ea[0], x1 = (float)ea[1], y0 = (float)eb[0], y1 = (float)eb[1];
    const float xh0 = sg_tf32_hi(x0), xh1 = sg_tf32_hi(x1), yh0 = sg_tf32_hi(y0), yh1 = sg_tf32_hi(y1);
    const uint32_t A0 = sg_bits(xh0), A1 = sg_bits(x0 - xh0), A2 = sg_bits(xh1), A3 = sg_bits(x1 - xh1);
    float c0, c1, c2 = 0.0f, c3 = 0.0f;
    if (c.lay_ == SG_C) {
        c0 = (float)c.e_[0], c1 = (float)c.e_[1], c2 = (float)c.lo_[0], c3 = (float)c.lo_[1];
    } else {
        const vec<TC, 2> ec = sg_relayout(c.e_, c.lay_, SG_C);
        c0 = (float)ec[0], c1 = (float)ec[1];
    }
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                 : "r"(A0), "r"(A1), "r"(A2), "r"(A3), "r"(sg_bits(yh0)), "r"(sg_bits(yh1)));
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                 : "r"(A0), "r"(A1), "r"(A2), "r"(A3), "r"(sg_bits(y0 - yh0)),
                   "r"(sg_bits(y1 - yh1)));
    d.e_[0] = (TD)c0, d.e_[1] = (TD)c1, d.lo_[0] = (TD)c2, d.lo_[1] = (TD)c3;
    d.lay_ = SG_C;
}
#else
// The shuffle product (MLLM__SG_MMA=0): exact float fma in k order, 24 shuffles, in Apple's layout.
template <class TD, class TA, class TB, class TC>
METAL_FUNC void simdgroup_multiply_accumulate(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                              simdgroup_matrix<TB, 8, 8> b, simdgroup_matrix<TC, 8, 8> c) {
    const uint32_t m = 0xffffffffu;   // Metal requires the whole simdgroup here
    const vec<TA, 2> ea = sg_relayout(a.value(), a.lay_, SG_APPLE);
    const vec<TB, 2> eb = sg_relayout(b.value(), b.lay_, SG_APPLE);
    const vec<TC, 2> ec = sg_relayout(c.value(), c.lay_, SG_APPLE);
    uint r, col;
    sg_frag_coord(::msl::lane_id(), r, col);
    float A[8], s0 = (float)ec[0], s1 = (float)ec[1];
    for (uint kp = 0; kp < 4; kp++) {
        const uint src = sg_frag_lane(r, kp);
        A[2 * kp] = (float)::msl::shfl<::msl::SH_IDX>(m, ea[0], src);
        A[2 * kp + 1] = (float)::msl::shfl<::msl::SH_IDX>(m, ea[1], src);
    }
    for (uint k = 0; k < 8; k++) {
        const uint src = sg_frag_lane(k, col / 2);
        const float b0 = (float)::msl::shfl<::msl::SH_IDX>(m, eb[0], src);
        const float b1 = (float)::msl::shfl<::msl::SH_IDX>(m, eb[1], src);
        s0 = __nv_fmaf(A[k], b0, s0);
        s1 = __nv_fmaf(A[k], b1, s1);
    }
    d.e_[0] = (TD)s0;
    d.e_[1] = (TD)s1;
    d.lay_ = SG_APPLE;
}
#endif
template <class TD, class TA, class TB>
METAL_FUNC void simdgroup_multiply(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                   simdgroup_matrix<TB, 8, 8> b) {
    simdgroup_multiply_accumulate(d, a, b, make_filled_simdgroup_matrix<TD, 8, 8>(TD(0)));
}

}  // namespace metal

namespace msl {
// ------------------------------------------------------------------------------ kernel parameter binding
// (used by the __global__ entry points that gen/cudac.py appends: one per [[host_name]] / kernel)
enum Bind { B_BUFFER, B_TGMEM, B_TPIG, B_TGPIG, B_TPITG, B_TPTG, B_TGPG, B_TPG, B_TIITG, B_TIISG,
            B_SGITG, B_SGPTG, B_TPSG };
template <class F> struct fn_traits;
template <class R, class... A> struct fn_traits<R (*)(A...)> { template <size_t I> using arg = __type_pack_element<I, A...>; };
template <class F, size_t I> using arg_t = typename fn_traits<F>::template arg<I>;
template <class T> struct no_cv { using type = T; };
template <class T> struct no_cv<const T> { using type = T; };
// What the __global__ function takes for a [[buffer(i)]] parameter: pointers as pointers, `constant T &`
// by value (kernel parameter memory: set_bytes), plain structs by value.
template <class T> struct param { using type = typename no_cv<T>::type; };
template <class T> struct param<T&> { using type = typename no_cv<T>::type; };
template <class T> using param_t = typename param<T>::type;
METAL_FUNC uint32_t tid3(int i) { return i == 0 ? __nvvm_read_ptx_sreg_tid_x() : i == 1 ? __nvvm_read_ptx_sreg_tid_y() : __nvvm_read_ptx_sreg_tid_z(); }
METAL_FUNC uint32_t ctaid3(int i) { return i == 0 ? __nvvm_read_ptx_sreg_ctaid_x() : i == 1 ? __nvvm_read_ptx_sreg_ctaid_y() : __nvvm_read_ptx_sreg_ctaid_z(); }
METAL_FUNC uint32_t ntid3(int i) { return i == 0 ? __nvvm_read_ptx_sreg_ntid_x() : i == 1 ? __nvvm_read_ptx_sreg_ntid_y() : __nvvm_read_ptx_sreg_ntid_z(); }
METAL_FUNC uint32_t nctaid3(int i) { return i == 0 ? __nvvm_read_ptx_sreg_nctaid_x() : i == 1 ? __nvvm_read_ptx_sreg_nctaid_y() : __nvvm_read_ptx_sreg_nctaid_z(); }
METAL_FUNC uint32_t builtin_at(int kind, int i) {
    switch (kind) {
    case B_TPIG: return ctaid3(i) * ntid3(i) + tid3(i);
    case B_TGPIG: return ctaid3(i);
    case B_TPITG: return tid3(i);
    case B_TPTG: return ntid3(i);
    case B_TGPG: return nctaid3(i);
    case B_TPG: return nctaid3(i) * ntid3(i);
    default: break;
    }
    const uint32_t lin = tid3(0) + ntid3(0) * (tid3(1) + ntid3(1) * tid3(2));   // warps are formed in this order
    const uint32_t all = ntid3(0) * ntid3(1) * ntid3(2);
    switch (kind) {
    case B_TIITG: return lin;
    case B_TIISG: return lin % 32;
    case B_SGITG: return lin / 32;
    case B_SGPTG: return (all + 31) / 32;
    default: return 32;   // B_TPSG
    }
}
template <class T> METAL_FUNC T builtin(int kind) {
    if constexpr (metal::vtraits<T>::n == 1) return (T)builtin_at(kind, 0);
    else {
        T r;
        for (int i = 0; i < metal::vtraits<T>::n; i++) r[i] = builtin_at(kind, i);
        return r;
    }
}
}  // namespace msl
#define MSL_VEC_CTOR(T) ::msl::make_vec<::T>
#define float2(...) MSL_VEC_CTOR(float2)(__VA_ARGS__)
#define float3(...) MSL_VEC_CTOR(float3)(__VA_ARGS__)
#define float4(...) MSL_VEC_CTOR(float4)(__VA_ARGS__)
#define half2(...) MSL_VEC_CTOR(half2)(__VA_ARGS__)
#define half3(...) MSL_VEC_CTOR(half3)(__VA_ARGS__)
#define half4(...) MSL_VEC_CTOR(half4)(__VA_ARGS__)
#define bfloat2(...) MSL_VEC_CTOR(bfloat2)(__VA_ARGS__)
#define bfloat3(...) MSL_VEC_CTOR(bfloat3)(__VA_ARGS__)
#define bfloat4(...) MSL_VEC_CTOR(bfloat4)(__VA_ARGS__)
#define int2(...) MSL_VEC_CTOR(int2)(__VA_ARGS__)
#define int3(...) MSL_VEC_CTOR(int3)(__VA_ARGS__)
#define int4(...) MSL_VEC_CTOR(int4)(__VA_ARGS__)
#define uint2(...) MSL_VEC_CTOR(uint2)(__VA_ARGS__)
#define uint3(...) MSL_VEC_CTOR(uint3)(__VA_ARGS__)
#define uint4(...) MSL_VEC_CTOR(uint4)(__VA_ARGS__)
#define short2(...) MSL_VEC_CTOR(short2)(__VA_ARGS__)
#define short3(...) MSL_VEC_CTOR(short3)(__VA_ARGS__)
#define short4(...) MSL_VEC_CTOR(short4)(__VA_ARGS__)
#define ushort2(...) MSL_VEC_CTOR(ushort2)(__VA_ARGS__)
#define ushort3(...) MSL_VEC_CTOR(ushort3)(__VA_ARGS__)
#define ushort4(...) MSL_VEC_CTOR(ushort4)(__VA_ARGS__)
#define char2(...) MSL_VEC_CTOR(char2)(__VA_ARGS__)
#define char4(...) MSL_VEC_CTOR(char4)(__VA_ARGS__)
#define uchar2(...) MSL_VEC_CTOR(uchar2)(__VA_ARGS__)
#define uchar4(...) MSL_VEC_CTOR(uchar4)(__VA_ARGS__)
#define long2(...) MSL_VEC_CTOR(long2)(__VA_ARGS__)
#define ulong2(...) MSL_VEC_CTOR(ulong2)(__VA_ARGS__)
#define bool2(...) MSL_VEC_CTOR(bool2)(__VA_ARGS__)
#define bool4(...) MSL_VEC_CTOR(bool4)(__VA_ARGS__)
