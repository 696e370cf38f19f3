// metal_shim.hpp - the part of the Metal Shading Language standard library that compute kernels use,
// written in C++17 for clang, so that kernels/*.metal (after tests/emu/mslc.py) compile and run on the
// CPU under tests/emu/runtime.cpp.
//
// Two modes:
//   default   address-space keywords expand to nothing: plain C++ pointers.
//   MSL_AS    device/constant/threadgroup are distinct clang address spaces 1/2/3 (thread = the
//             default space 0), so passing a pointer to the wrong space is a compile error, as with
//             Apple's compiler. x86-64 code generation treats all spaces alike, so MSL_AS kernels
//             still run: this is the "CHECK" build (build/test_emu_check).
#pragma once
#pragma clang diagnostic ignored "-Wunknown-attributes"
#pragma clang diagnostic ignored "-Wuser-defined-literals"
#pragma clang diagnostic ignored "-Wduplicate-decl-specifier"
#pragma clang diagnostic ignored "-Wunused-parameter"
#include <stddef.h>
#include <stdint.h>
#include "msl_rt.hpp"

// ------------------------------------------------------------------------------ address spaces
#if defined(MSL_AS)
#define device __attribute__((opencl_global))
#define constant const __attribute__((opencl_constant))
#define threadgroup __attribute__((opencl_local))
#define MSL_TG_SPACE threadgroup
#else
#define device
#define constant const
#define threadgroup
#define MSL_TG_SPACE
#endif
#define thread
#define kernel
// `threadgroup T name[dims];` inside a kernel is rewritten by mslc.py into MSL_TG_VAR(name, (dims), T):
// a reference to storage shared by the threads of the running threadgroup.
#define MSL_PAREN_STRIP(...) __VA_ARGS__
#define MSL_TG_VAR(name, dims, ...)                                                                    \
    typedef __VA_ARGS__ msl_tg_type_##name MSL_PAREN_STRIP dims;                                        \
    static char msl_tg_key_##name;                                                                     \
    MSL_TG_SPACE msl_tg_type_##name& name = *(MSL_TG_SPACE msl_tg_type_##name*)::msl::rt::tg_var(       \
        &msl_tg_key_##name, sizeof(msl_tg_type_##name), alignof(msl_tg_type_##name))
#define METAL_FUNC inline __attribute__((always_inline))
// Call site of barriers and SIMD-group operations (for reports); filled in by default arguments.
#define MSL_SITE const char *msl_file_ = __builtin_FILE(), int msl_line_ = __builtin_LINE()

#define MSL_MATHF(f) __builtin_##f
#include "msl_common.hpp"

namespace metal {
METAL_FUNC void threadgroup_barrier(mem_flags f, MSL_SITE) { ::msl::rt::barrier((int)f, msl_file_, msl_line_); }
METAL_FUNC void atomic_thread_fence(mem_flags, memory_order, thread_scope = thread_scope::thread_scope_device) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
}  // namespace metal

// ------------------------------------------------------------------------------ SIMD-group collectives
namespace msl {
namespace coll {
using namespace ::metal;
enum Op { SUM, PROD, MAX, MIN, AND, OR, XOR, ALL, ANY, PSUM_EX, PSUM_IN, PPROD_EX, PPROD_IN,
          SHUF, SHUF_DOWN, SHUF_UP, SHUF_XOR, BCAST, BCAST_FIRST, BALLOT, ACTIVE, IS_FIRST, NOP };
template <class T> struct In { T v; uint32_t arg; };
template <class T> METAL_FUNC T combine(int op, T a, T b) {
    if (op == SUM || op == PSUM_EX || op == PSUM_IN) return a + b;
    if (op == PROD || op == PPROD_EX || op == PPROD_IN) return a * b;
    if (op == MAX) return metal::max(a, b);
    if (op == MIN) return metal::min(a, b);
    if constexpr (!is_floating_point_v<typename vtraits<T>::elem>) {
        if (op == AND || op == ALL) return a & b;
        if (op == OR || op == ANY) return a | b;
        if (op == XOR) return a ^ b;
    }
    return a;
}
template <class T> METAL_FUNC T identity(int op) {
    return (op == PPROD_EX || op == PPROD_IN) ? T(1) : T(0);
}
// Computes the results of one SIMD-group operation for every participating lane (bit set in mask).
template <class T, int OP>
void run(const unsigned char* in, size_t insz, unsigned char* out, size_t outsz, uint32_t mask, const char* file, int line) {
    auto I = [&](int l) -> const In<T>& { return *reinterpret_cast<const In<T>*>(in + l * insz); };
    auto O = [&](int l) -> unsigned char* { return out + l * outsz; };
    auto put = [&](int l, auto v) { __builtin_memcpy(O(l), &v, sizeof v); };
    auto active = [&](int l) { return l >= 0 && l < 32 && ((mask >> l) & 1u); };
    const int first = __builtin_ctz(mask);
    if (OP == SHUF_DOWN || OP == SHUF_UP || OP == SHUF_XOR || OP == BCAST)   // the argument must be uniform
        for (int l = first + 1; l < 32; l++)
            if (active(l) && I(l).arg != I(first).arg) {
                ::msl::rt::warn(file, line, "SIMD-group shuffle/broadcast argument differs between lanes (lane %d: %u, lane %d: %u)",
                                first, I(first).arg, l, I(l).arg);
                break;
            }
    if constexpr (OP <= ANY) {   // reductions: pairwise tree over the active lanes
        T v[32];
        int n = 0;
        for (int l = 0; l < 32; l++)
            if (active(l)) v[n++] = I(l).v;
        for (int s = 1; s < n; s *= 2)
            for (int i = 0; i + s < n; i += 2 * s) v[i] = combine<T>(OP, v[i], v[i + s]);
        for (int l = 0; l < 32; l++)
            if (active(l)) put(l, v[0]);
        return;
    }
    else if constexpr (OP == BALLOT || OP == ACTIVE) {
        uint64_t bits = 0;
        for (int l = 0; l < 32; l++)
            if (active(l) && (OP == ACTIVE || I(l).v)) bits |= 1ull << l;
        for (int l = 0; l < 32; l++)
            if (active(l)) put(l, bits);
        return;
    } else {
    T run = identity<T>(OP);
    for (int l = 0; l < 32; l++) {
        if (!active(l)) continue;
        int src = l;
        switch (OP) {
        case PSUM_EX: case PPROD_EX: put(l, run); run = combine<T>(OP, run, I(l).v); continue;
        case PSUM_IN: case PPROD_IN: run = combine<T>(OP, run, I(l).v); put(l, run); continue;
        case IS_FIRST: put(l, (int)(l == first)); continue;
        case NOP: continue;
        case SHUF: case BCAST: src = (int)I(l).arg; break;
        case SHUF_DOWN: src = l + (int)I(l).arg; if (src >= 32) src = l; break;   // top lanes keep their value
        case SHUF_UP: src = l - (int)I(l).arg; if (src < 0) src = l; break;
        case SHUF_XOR: src = l ^ (int)(I(l).arg & 31); break;
        case BCAST_FIRST: src = first; break;
        default: break;
        }
        if (!active(src)) {
            ::msl::rt::warn(file, line, "lane %d reads lane %d, which is not active in this SIMD-group operation (undefined value)", l, src);
            src = l;
        }
        put(l, I(src).v);
    }
    }
}
template <class R, class T, int OP> METAL_FUNC R op(T x, uint32_t arg, const char* file, int line) {
    static_assert(sizeof(In<T>) <= ::msl::rt::kMaxPayload, "SIMD-group operand too large");
    In<T> p{x, arg};
    R r;
    ::msl::rt::collective(&p, sizeof p, &r, sizeof r, &run<T, OP>, file, line);
    return r;
}
}  // namespace coll
}  // namespace msl

namespace metal {
#define MSL_SIMD1(name, OP)                                                                        \
    template <class T> METAL_FUNC T name(T x, MSL_SITE) { return ::msl::coll::op<T, T, ::msl::coll::OP>(x, 0, msl_file_, msl_line_); }
#define MSL_SIMD2(name, OP)                                                                        \
    template <class T> METAL_FUNC T name(T x, ushort a, MSL_SITE) {                                \
        return ::msl::coll::op<T, T, ::msl::coll::OP>(x, a, msl_file_, msl_line_);                  \
    }
MSL_SIMD1(simd_sum, SUM) MSL_SIMD1(simd_product, PROD) MSL_SIMD1(simd_max, MAX) MSL_SIMD1(simd_min, MIN)
MSL_SIMD1(simd_and, AND) MSL_SIMD1(simd_or, OR) MSL_SIMD1(simd_xor, XOR) MSL_SIMD1(simd_broadcast_first, BCAST_FIRST)
MSL_SIMD1(simd_prefix_exclusive_sum, PSUM_EX) MSL_SIMD1(simd_prefix_inclusive_sum, PSUM_IN)
MSL_SIMD1(simd_prefix_exclusive_product, PPROD_EX) MSL_SIMD1(simd_prefix_inclusive_product, PPROD_IN)
MSL_SIMD2(simd_shuffle, SHUF) MSL_SIMD2(simd_shuffle_down, SHUF_DOWN) MSL_SIMD2(simd_shuffle_up, SHUF_UP)
MSL_SIMD2(simd_shuffle_xor, SHUF_XOR) MSL_SIMD2(simd_broadcast, BCAST)
#undef MSL_SIMD1
#undef MSL_SIMD2
// simd_ballot result: one bit per lane
struct simd_vote {
    typedef ulong vote_t;
    vote_t v_;
    METAL_FUNC explicit operator vote_t() const { return v_; }
    METAL_FUNC bool all() const { return v_ == 0xffffffffull; }
    METAL_FUNC bool any() const { return v_ != 0; }
};
METAL_FUNC bool simd_all(bool b, MSL_SITE) { return ::msl::coll::op<int, int, ::msl::coll::ALL>(b ? 1 : 0, 0, msl_file_, msl_line_); }
METAL_FUNC bool simd_any(bool b, MSL_SITE) { return ::msl::coll::op<int, int, ::msl::coll::ANY>(b ? 1 : 0, 0, msl_file_, msl_line_); }
METAL_FUNC simd_vote simd_ballot(bool b, MSL_SITE) {
    return simd_vote{::msl::coll::op<ulong, int, ::msl::coll::BALLOT>(b ? 1 : 0, 0, msl_file_, msl_line_)};
}
METAL_FUNC simd_vote simd_active_threads_mask(MSL_SITE) {
    return simd_vote{::msl::coll::op<ulong, int, ::msl::coll::ACTIVE>(1, 0, msl_file_, msl_line_)};
}
METAL_FUNC bool simd_is_first(MSL_SITE) { return ::msl::coll::op<int, int, ::msl::coll::IS_FIRST>(0, 0, msl_file_, msl_line_); }
METAL_FUNC void simdgroup_barrier(mem_flags, MSL_SITE) { (void)::msl::coll::op<int, int, ::msl::coll::NOP>(0, 0, msl_file_, msl_line_); }

// ------------------------------------------------------------------------------ simdgroup_matrix (8x8)
// Apple's per-lane fragment layout (the one MLX's steel GEMM and metal-flash-attention rely on):
// lane l holds row ((l>>4)&1)*4 + ((l>>1)&3), columns c and c+1 with c = ((l>>3)&1)*4 + (l&1)*2.
METAL_FUNC void sg_frag_coord(uint lane, uint& row, uint& col) {
    row = ((lane >> 4) & 1) * 4 + ((lane >> 1) & 3);
    col = ((lane >> 3) & 1) * 4 + (lane & 1) * 2;
}
template <class T, int Cols, int Rows> struct simdgroup_matrix {
    static_assert(Cols == 8 && Rows == 8, "only 8x8 simdgroup matrices are emulated");
    vec<T, 2> e_;
    simdgroup_matrix() = default;
    METAL_FUNC explicit simdgroup_matrix(T d) {   // diagonal matrix
        uint r, c;
        sg_frag_coord(::msl::rt::ids().tiisg, r, c);
        e_[0] = r == c ? d : T(0);
        e_[1] = r == c + 1 ? d : T(0);
    }
    METAL_FUNC thread vec<T, 2>& thread_elements() { return e_; }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;
template <class T, int C, int R> METAL_FUNC simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(T v) {
    simdgroup_matrix<T, C, R> m;
    m.e_ = v;
    return m;
}
// Every lane loads/stores only the two elements it holds. matrix_origin is (column, row).
template <class T, int C, int R, class P>
METAL_FUNC void simdgroup_load(thread simdgroup_matrix<T, C, R>& d, P src, ulong elements_per_row = C,
                               ulong2 matrix_origin = 0, bool transpose_matrix = false) {
    uint r, c;
    sg_frag_coord(::msl::rt::ids().tiisg, r, c);
    for (uint i = 0; i < 2; i++) {
        ulong row = transpose_matrix ? c + i : r, col = transpose_matrix ? r : c + i;
        d.e_[i] = (T)src[(matrix_origin.y + row) * elements_per_row + matrix_origin.x + col];
    }
}
template <class T, int C, int R, class P>
METAL_FUNC void simdgroup_store(simdgroup_matrix<T, C, R> a, P dst, ulong elements_per_row = C,
                                ulong2 matrix_origin = 0, bool transpose_matrix = false) {
    uint r, c;
    sg_frag_coord(::msl::rt::ids().tiisg, r, c);
    for (uint i = 0; i < 2; i++) {
        ulong row = transpose_matrix ? c + i : r, col = transpose_matrix ? r : c + i;
        dst[(matrix_origin.y + row) * elements_per_row + matrix_origin.x + col] = a.e_[i];
    }
}
}  // namespace metal

namespace msl {
namespace coll {
template <class TA, class TB, class TC> struct MmaIn { vec<TA, 2> a; vec<TB, 2> b; vec<TC, 2> c; };
// D = A*B + C over the 32 lanes' fragments; products summed in float with fma in k order, rounded
// once to D's type (Apple does not document its internal precision; see notes/emulator.md).
template <class TD, class TA, class TB, class TC>
void mma(const unsigned char* in, size_t insz, unsigned char* out, size_t outsz, uint32_t mask, const char* file, int line) {
    if (mask != 0xffffffffu)
        ::msl::rt::warn(file, line, "simdgroup_multiply_accumulate by a partial SIMD-group (lanes %08x): undefined on the GPU", mask);
    float A[8][8] = {}, B[8][8] = {}, Cm[8][8] = {};
    for (uint l = 0; l < 32; l++) {
        if (!((mask >> l) & 1)) continue;
        const MmaIn<TA, TB, TC>& p = *reinterpret_cast<const MmaIn<TA, TB, TC>*>(in + l * insz);
        uint r, c;
        metal::sg_frag_coord(l, r, c);
        for (int i = 0; i < 2; i++) { A[r][c + i] = (float)p.a[i]; B[r][c + i] = (float)p.b[i]; Cm[r][c + i] = (float)p.c[i]; }
    }
    for (uint l = 0; l < 32; l++) {
        if (!((mask >> l) & 1)) continue;
        uint r, c;
        metal::sg_frag_coord(l, r, c);
        vec<TD, 2> o;
        for (int i = 0; i < 2; i++) {
            float s = Cm[r][c + i];
            for (int k = 0; k < 8; k++) s = __builtin_fmaf(A[r][k], B[k][c + i], s);
            o[i] = (TD)s;
        }
        __builtin_memcpy(out + l * outsz, &o, sizeof o);
    }
}
}  // namespace coll
}  // namespace msl

namespace metal {
template <class TD, class TA, class TB, class TC>
METAL_FUNC void simdgroup_multiply_accumulate(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                              simdgroup_matrix<TB, 8, 8> b, simdgroup_matrix<TC, 8, 8> c, MSL_SITE) {
    ::msl::coll::MmaIn<TA, TB, TC> p{a.e_, b.e_, c.e_};
    ::msl::rt::collective(&p, sizeof p, &d.e_, sizeof d.e_, &::msl::coll::mma<TD, TA, TB, TC>, msl_file_, msl_line_);
}
template <class TD, class TA, class TB>
METAL_FUNC void simdgroup_multiply(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                   simdgroup_matrix<TB, 8, 8> b, MSL_SITE) {
    simdgroup_multiply_accumulate(d, a, b, make_filled_simdgroup_matrix<TD, 8, 8>(TD(0)), msl_file_, msl_line_);
}

}  // namespace metal

namespace msl {
// ------------------------------------------------------------------------------ kernel parameter binding
// (used by the launch trampolines that mslc.py appends to every kernel file)
template <class F> struct fn_traits;
template <class R, class... A> struct fn_traits<R (*)(A...)> { template <size_t I> using arg = __type_pack_element<I, A...>; };
template <class F, size_t I> using arg_t = typename fn_traits<F>::template arg<I>;
template <class T> struct no_ref { using type = T; };
template <class T> struct no_ref<T&> { using type = T; };
template <class T> METAL_FUNC T bind(int kind, int idx) {
    if constexpr (__is_pointer(T)) return (T)(kind == B_TGMEM ? rt::tg_param(idx) : rt::buffer(idx));
    else if constexpr (__is_reference(T)) return *(typename no_ref<T>::type*)rt::buffer(idx);
    else {
        const rt::Ids& d = rt::ids();
        const uint32_t* v = nullptr;
        uint32_t s = 0;
        switch (kind) {
        case B_TPIG: v = d.tpig; break;
        case B_TGPIG: v = d.tgpig; break;
        case B_TPITG: v = d.tpitg; break;
        case B_TPTG: v = d.tptg; break;
        case B_TGPG: v = d.tgpg; break;
        case B_TPG: v = d.tpg; break;
        case B_TIITG: s = d.tiitg; break;
        case B_TIISG: s = d.tiisg; break;
        case B_SGITG: s = d.sgitg; break;
        case B_SGPTG: s = d.sgptg; break;
        case B_TPSG: s = d.tpsg; break;
        default: return *(T*)rt::buffer(idx);   // a struct passed by value in [[buffer(i)]]
        }
        if constexpr (metal::vtraits<T>::n == 1) return (T)(v ? v[0] : s);
        else {
            T r;
            for (int i = 0; i < metal::vtraits<T>::n; i++) r[i] = v ? v[i] : s;
            return r;
        }
    }
}
struct Registrar { Registrar(const char* name, void (*thunk)()) { rt::register_kernel(name, thunk); } };
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
