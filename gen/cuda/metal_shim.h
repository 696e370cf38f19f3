// metal_shim.h - the part of the Metal Shading Language standard library that the kernels use, for
// CUDA: gen/cudac.py translates kernels/*.metal (like tests/emu/mslc.py does for the emulator) into
// CUDA C++ against this header, and clang (CUDA device mode, NVPTX) compiles it to PTX.  The types and
// math are the emulator shim's (clang vector extensions, _Float16, __bf16); what runs the threads is
// CUDA's: threadgroups are blocks, simdgroups are warps (32 lanes, 1:1), threadgroup memory is shared
// memory, SIMD-group collectives are warp shuffles and votes, simdgroup_matrix products are shuffles.
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

#define INFINITY __builtin_huge_valf()
#define NAN __builtin_nanf("")
#define MAXFLOAT 3.402823466e+38f
#define FLT_MAX 3.402823466e+38f
#define FLT_MIN 1.175494351e-38f
#define FLT_EPSILON 1.192092896e-07f
#define HALF_MAX ((half)65504.0f)
#define HALF_MIN ((half)6.10351562e-05f)
#define M_PI_F 3.14159265358979323846f
#define M_PI_2_F 1.57079632679489661923f
#define M_E_F 2.71828182845904523536f
#define M_LN2_F 0.693147180559945309417f
#define M_LOG2E_F 1.44269504088896340736f
#define M_SQRT2_F 1.41421356237309504880f
#define M_SQRT1_2_F 0.707106781186547524401f
#define M_2_SQRTPI_F 1.12837916709551257390f

// ------------------------------------------------------------------------------ scalar and vector types
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
typedef _Float16 half;   // with -ffloat16-excess-precision=none every half operation rounds, as on the GPU
typedef __bf16 bfloat;
#define MSL_VECTYPES(T)                                  \
    typedef T T##2 __attribute__((ext_vector_type(2)));  \
    typedef T T##3 __attribute__((ext_vector_type(3)));  \
    typedef T T##4 __attribute__((ext_vector_type(4)));
MSL_VECTYPES(float) MSL_VECTYPES(half) MSL_VECTYPES(bfloat) MSL_VECTYPES(bool) MSL_VECTYPES(char)
MSL_VECTYPES(uchar) MSL_VECTYPES(short) MSL_VECTYPES(ushort) MSL_VECTYPES(int) MSL_VECTYPES(uint)
MSL_VECTYPES(long) MSL_VECTYPES(ulong)
#undef MSL_VECTYPES

namespace metal {
template <class T, int N> using vec = T __attribute__((ext_vector_type(N)));
// element type and length of scalars and vectors
template <class T> struct vtraits { using elem = T; static constexpr int n = 1; };
template <class T, int N> struct vtraits<T __attribute__((ext_vector_type(N)))> { using elem = T; static constexpr int n = N; };
// packed_T3: 3 elements without the padding of T3 (12 bytes for float); converts to and from T3.
template <class T> struct packed3 {
    T x, y, z;
    packed3() = default;
    METAL_FUNC packed3(vec<T, 3> v) : x(v.x), y(v.y), z(v.z) {}
    METAL_FUNC operator vec<T, 3>() const { return vec<T, 3>{x, y, z}; }
    METAL_FUNC T& operator[](int i) { return (&x)[i]; }
    METAL_FUNC T operator[](int i) const { return (&x)[i]; }
};
template <class T> struct vtraits<packed3<T>> { using elem = T; static constexpr int n = 3; };
}  // namespace metal
// packed vectors of 2 and 4 elements: same layout as the vector, element alignment
#define MSL_PACKED(T)                                                          \
    typedef T##2 packed_##T##2 __attribute__((aligned(sizeof(T))));            \
    typedef T##4 packed_##T##4 __attribute__((aligned(sizeof(T))));            \
    typedef metal::packed3<T> packed_##T##3;
MSL_PACKED(float) MSL_PACKED(half) MSL_PACKED(bfloat) MSL_PACKED(char) MSL_PACKED(uchar) MSL_PACKED(short)
MSL_PACKED(ushort) MSL_PACKED(int) MSL_PACKED(uint)
#undef MSL_PACKED

constexpr half operator""h(long double v) { return (half)v; }                  // 1.0h
constexpr half operator""h(unsigned long long v) { return (half)v; }           // 1h

namespace metal {
template <bool B, class T = void> struct enable_if {};
template <class T> struct enable_if<true, T> { using type = T; };
template <bool B, class T = void> using enable_if_t = typename enable_if<B, T>::type;
template <class A, class B> constexpr bool is_same_v = __is_same(A, B);
template <class A, class B> struct is_same { static constexpr bool value = __is_same(A, B); };
template <class T> constexpr bool is_floating_point_v =
    is_same_v<T, float> || is_same_v<T, half> || is_same_v<T, bfloat>;
template <class T> constexpr bool is_scalar_float_v = is_floating_point_v<T>;
template <class T> struct vec_elements { static constexpr uint value = vtraits<T>::n; };
template <class T, size_t N> struct array {
    T e_[N];
    METAL_FUNC T& operator[](size_t i) { return e_[i]; }
    METAL_FUNC const T& operator[](size_t i) const { return e_[i]; }
    static constexpr size_t size() { return N; }
};

template <class T> struct numeric_limits;
#define MSL_LIMITS(T, LO, HI, EPS, INF)                                        \
    template <> struct numeric_limits<T> {                                     \
        static constexpr T min() { return LO; }                                \
        static constexpr T max() { return HI; }                                \
        static constexpr T lowest() { return -HI; }                            \
        static constexpr T epsilon() { return EPS; }                           \
        static constexpr T infinity() { return INF; }                          \
    };
MSL_LIMITS(float, 1.175494351e-38f, 3.402823466e+38f, 1.192092896e-07f, __builtin_huge_valf())
MSL_LIMITS(half, (half)6.10351562e-05f, (half)65504.0f, (half)9.765625e-04f, (half)__builtin_huge_valf())
MSL_LIMITS(bfloat, (bfloat)1.175494351e-38f, (bfloat)3.38953139e38f, (bfloat)7.8125e-03f, (bfloat)__builtin_huge_valf())
#undef MSL_LIMITS
#define MSL_ILIMITS(T, LO, HI)                                                 \
    template <> struct numeric_limits<T> {                                     \
        static constexpr T min() { return LO; }                                \
        static constexpr T max() { return HI; }                                \
        static constexpr T lowest() { return LO; }                             \
    };
MSL_ILIMITS(char, -128, 127) MSL_ILIMITS(uchar, 0, 255) MSL_ILIMITS(short, -32768, 32767) MSL_ILIMITS(ushort, 0, 65535)
MSL_ILIMITS(int, -2147483647 - 1, 2147483647) MSL_ILIMITS(uint, 0, 4294967295u)
MSL_ILIMITS(long, -9223372036854775807L - 1, 9223372036854775807L) MSL_ILIMITS(ulong, 0, 18446744073709551615ul)
#undef MSL_ILIMITS

template <class To, class From> METAL_FUNC To as_type(From v) {
    static_assert(sizeof(To) == sizeof(From), "as_type: sizes differ");
    return __builtin_bit_cast(To, v);
}

// ------------------------------------------------------------------------------ math
// Scalars are computed in float and rounded to the argument type (half/bfloat); vectors per element.
// fast:: and precise:: are both the precise version here (the GPU's fast:: is less accurate).
#define MSL_MAP1(name)                                                                             \
    METAL_FUNC half name(half x) { return (half)name((float)x); }                                  \
    METAL_FUNC bfloat name(bfloat x) { return (bfloat)name((float)x); }                            \
    template <class T, int N> METAL_FUNC vec<T, N> name(vec<T, N> x) {                             \
        vec<T, N> r;                                                                               \
        for (int i = 0; i < N; i++) r[i] = name((T)x[i]);                                          \
        return r;                                                                                  \
    }
#define MSL_MAP2(name)                                                                             \
    METAL_FUNC half name(half x, half y) { return (half)name((float)x, (float)y); }                \
    METAL_FUNC bfloat name(bfloat x, bfloat y) { return (bfloat)name((float)x, (float)y); }        \
    template <class T, int N> METAL_FUNC vec<T, N> name(vec<T, N> x, vec<T, N> y) {                \
        vec<T, N> r;                                                                               \
        for (int i = 0; i < N; i++) r[i] = name((T)x[i], (T)y[i]);                                 \
        return r;                                                                                  \
    }                                                                                              \
    template <class T, int N> METAL_FUNC vec<T, N> name(vec<T, N> x, T y) { return name(x, (vec<T, N>)y); }
#define MSL_F1(name, expr) METAL_FUNC float name(float x) { return expr; } MSL_MAP1(name)
MSL_F1(exp, __nv_expf(x)) MSL_F1(exp2, __nv_exp2f(x)) MSL_F1(exp10, __nv_powf(10.0f, x))
MSL_F1(log, __nv_logf(x)) MSL_F1(log2, __nv_log2f(x)) MSL_F1(log10, __nv_log10f(x))
MSL_F1(sqrt, __nv_sqrtf(x)) MSL_F1(rsqrt, 1.0f / __nv_sqrtf(x)) MSL_F1(recip, 1.0f / x)
MSL_F1(sin, __nv_sinf(x)) MSL_F1(cos, __nv_cosf(x)) MSL_F1(tan, __nv_tanf(x))
MSL_F1(asin, __nv_asinf(x)) MSL_F1(acos, __nv_acosf(x)) MSL_F1(atan, __nv_atanf(x))
MSL_F1(sinh, __nv_sinhf(x)) MSL_F1(cosh, __nv_coshf(x)) MSL_F1(tanh, __nv_tanhf(x))
MSL_F1(erf, __nv_erff(x)) MSL_F1(floor, __nv_floorf(x)) MSL_F1(ceil, __nv_ceilf(x))
MSL_F1(round, __nv_roundf(x)) MSL_F1(rint, __nv_rintf(x)) MSL_F1(trunc, __nv_truncf(x))
MSL_F1(fabs, __nv_fabsf(x)) MSL_F1(fract, __nv_fminf(x - __nv_floorf(x), 0x1.fffffep-1f))
MSL_F1(saturate, __nv_fminf(__nv_fmaxf(x, 0.0f), 1.0f))
#undef MSL_F1
#define MSL_F2(name, expr) METAL_FUNC float name(float x, float y) { return expr; } MSL_MAP2(name)
MSL_F2(pow, __nv_powf(x, y)) MSL_F2(powr, __nv_powf(x, y)) MSL_F2(atan2, __nv_atan2f(x, y))
MSL_F2(fmod, __nv_fmodf(x, y)) MSL_F2(fmax, __nv_fmaxf(x, y)) MSL_F2(fmin, __nv_fminf(x, y))
MSL_F2(max, __nv_fmaxf(x, y)) MSL_F2(min, __nv_fminf(x, y)) MSL_F2(copysign, __nv_copysignf(x, y))
MSL_F2(step, y < x ? 0.0f : 1.0f) MSL_F2(divide, x / y)
#undef MSL_F2
METAL_FUNC float abs(float x) { return __nv_fabsf(x); }
MSL_MAP1(abs)
METAL_FUNC float sign(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f; }
MSL_MAP1(sign)
METAL_FUNC bool isnan(float x) { return __builtin_isnan(x); }
METAL_FUNC bool isinf(float x) { return __nv_isinf(x); }
METAL_FUNC bool isfinite(float x) { return __builtin_isfinite(x); }
METAL_FUNC bool signbit(float x) { return __builtin_signbit(x); }
METAL_FUNC bool isnan(half x) { return __builtin_isnan((float)x); }
METAL_FUNC bool isinf(half x) { return __nv_isinf((float)x); }
METAL_FUNC bool isfinite(half x) { return __builtin_isfinite((float)x); }
#undef MSL_MAP1
#undef MSL_MAP2
// three-argument float functions
#define MSL_F3(name, expr)                                                                         \
    METAL_FUNC float name(float x, float y, float z) { return expr; }                              \
    METAL_FUNC half name(half x, half y, half z) { return (half)name((float)x, (float)y, (float)z); } \
    template <class T, int N> METAL_FUNC vec<T, N> name(vec<T, N> x, vec<T, N> y, vec<T, N> z) {    \
        vec<T, N> r;                                                                               \
        for (int i = 0; i < N; i++) r[i] = name((T)x[i], (T)y[i], (T)z[i]);                        \
        return r;                                                                                  \
    }
MSL_F3(fma, __nv_fmaf(x, y, z)) MSL_F3(mix, x + (y - x) * z)
MSL_F3(clamp, __nv_fminf(__nv_fmaxf(x, y), z))
#undef MSL_F3
template <class T, int N> METAL_FUNC vec<T, N> clamp(vec<T, N> x, T lo, T hi) { return clamp(x, (vec<T, N>)lo, (vec<T, N>)hi); }
template <class T, int N> METAL_FUNC vec<T, N> mix(vec<T, N> x, vec<T, N> y, T a) { return mix(x, y, (vec<T, N>)a); }
// integer min/max/clamp/abs
#define MSL_INT(T)                                                                                 \
    METAL_FUNC T max(T a, T b) { return a > b ? a : b; }                                           \
    METAL_FUNC T min(T a, T b) { return a < b ? a : b; }                                           \
    METAL_FUNC T clamp(T x, T lo, T hi) { return min(max(x, lo), hi); }
MSL_INT(char) MSL_INT(uchar) MSL_INT(short) MSL_INT(ushort) MSL_INT(int) MSL_INT(uint) MSL_INT(long) MSL_INT(ulong)
#undef MSL_INT
METAL_FUNC int abs(int x) { return x < 0 ? -x : x; }
METAL_FUNC short abs(short x) { return x < 0 ? (short)-x : x; }
METAL_FUNC long abs(long x) { return x < 0 ? -x : x; }
template <class T> METAL_FUNC T clz(T x) {
    return x == 0 ? T(sizeof(T) * 8) : T(__builtin_clzll((unsigned long long)x) - (64 - sizeof(T) * 8));
}
template <class T> METAL_FUNC T ctz(T x) { return x == 0 ? T(sizeof(T) * 8) : T(__builtin_ctzll((unsigned long long)x)); }
template <class T> METAL_FUNC T popcount(T x) {
    return T(__builtin_popcountll((unsigned long long)x & (~0ull >> (64 - sizeof(T) * 8))));
}
template <class T> METAL_FUNC T mulhi(T a, T b) { return T(((long long)a * (long long)b) >> (sizeof(T) * 8)); }
template <class T> METAL_FUNC T extract_bits(T x, uint offset, uint bits) {
    return bits == 0 ? T(0) : T((x >> offset) & (T)((bits >= sizeof(T) * 8) ? ~0ull : ((1ull << bits) - 1)));
}
// geometric / relational
template <class T, int N> METAL_FUNC T dot(vec<T, N> a, vec<T, N> b) {
    T s = a[0] * b[0];
    for (int i = 1; i < N; i++) s += a[i] * b[i];
    return s;
}
template <class T, int N> METAL_FUNC T length(vec<T, N> a) { return sqrt(dot(a, a)); }
template <class T, int N> METAL_FUNC T length_squared(vec<T, N> a) { return dot(a, a); }
template <class T, int N> METAL_FUNC vec<T, N> normalize(vec<T, N> a) { return a * rsqrt(dot(a, a)); }
template <class T> METAL_FUNC vec<T, 3> cross(vec<T, 3> a, vec<T, 3> b) { return a.yzx * b.zxy - a.zxy * b.yzx; }
template <class T> METAL_FUNC T select(T a, T b, bool c) { return c ? b : a; }
template <class T, int N, class C> METAL_FUNC vec<T, N> select(vec<T, N> a, vec<T, N> b, C c) {
    static_assert(vtraits<C>::n == N, "select: condition length");
    vec<T, N> r;
    for (int i = 0; i < N; i++) r[i] = c[i] ? b[i] : a[i];
    return r;
}
template <class V> METAL_FUNC bool all(V v) {
    for (int i = 0; i < vtraits<V>::n; i++)
        if (!v[i]) return false;
    return true;
}
template <class V> METAL_FUNC bool any(V v) {
    for (int i = 0; i < vtraits<V>::n; i++)
        if (v[i]) return true;
    return false;
}
METAL_FUNC bool all(bool b) { return b; }
METAL_FUNC bool any(bool b) { return b; }
namespace fast {
using metal::abs; using metal::ceil; using metal::clamp; using metal::cos; using metal::divide; using metal::exp;
using metal::exp2; using metal::exp10; using metal::fabs; using metal::floor; using metal::fma; using metal::fmax;
using metal::fmin; using metal::fract; using metal::length; using metal::log; using metal::log2; using metal::max;
using metal::min; using metal::normalize; using metal::pow; using metal::powr; using metal::recip; using metal::round;
using metal::rsqrt; using metal::saturate; using metal::sin; using metal::sqrt; using metal::tanh; using metal::trunc;
using metal::erf; using metal::sign;
}  // namespace fast
namespace precise { using namespace fast; }

// ------------------------------------------------------------------------------ barriers
enum class mem_flags { mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4, mem_threadgroup_imageblock = 8, mem_object_data = 16 };
constexpr mem_flags operator|(mem_flags a, mem_flags b) { return (mem_flags)((int)a | (int)b); }
enum memory_order { memory_order_relaxed, memory_order_seq_cst };
enum class thread_scope { thread_scope_thread, thread_scope_simdgroup, thread_scope_threadgroup, thread_scope_device };
// bar.sync orders the block's shared and global memory accesses (CUDA's __syncthreads); a device-memory
// flag adds a device-scope fence, as Metal's mem_device makes the writes visible beyond the block.
METAL_FUNC void threadgroup_barrier(mem_flags f) {
    if ((int)f & (int)mem_flags::mem_device) __nvvm_membar_gl();
    __nvvm_barrier_sync(0);
}
METAL_FUNC void atomic_thread_fence(mem_flags, memory_order, thread_scope = thread_scope::thread_scope_device) { __nvvm_membar_gl(); }
}  // namespace metal

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
// Apple's per-lane fragment layout (as in the emulator): lane l holds row ((l>>4)&1)*4 + ((l>>1)&3),
// columns c and c+1 with c = ((l>>3)&1)*4 + (l&1)*2.  The product gathers each lane's row of A and
// column pair of B with 24 shuffles and sums in float with fma in k order from C, as the emulator does:
// exact float arithmetic (no TF32 rounding on the tensor cores, which the F32 tolerances would not take).
METAL_FUNC void sg_frag_coord(uint lane, thread uint& row, thread uint& col) {
    row = ((lane >> 4) & 1) * 4 + ((lane >> 1) & 3);
    col = ((lane >> 3) & 1) * 4 + (lane & 1) * 2;
}
METAL_FUNC uint sg_frag_lane(uint row, uint colpair) {   // the lane holding (row, 2 * colpair .. + 1)
    return ((row >> 2) << 4) | ((colpair >> 1) << 3) | ((row & 3) << 1) | (colpair & 1);
}
template <class T, int Cols, int Rows> struct simdgroup_matrix {
    static_assert(Cols == 8 && Rows == 8, "only 8x8 simdgroup matrices");
    vec<T, 2> e_;
    simdgroup_matrix() = default;
    METAL_FUNC explicit simdgroup_matrix(T d) {   // diagonal matrix
        uint r, c;
        sg_frag_coord(::msl::lane_id(), r, c);
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
template <class T, int C, int R, class P>
METAL_FUNC void simdgroup_load(thread simdgroup_matrix<T, C, R>& d, P src, ulong elements_per_row = C,
                               ulong2 matrix_origin = 0, bool transpose_matrix = false) {
    uint r, c;
    sg_frag_coord(::msl::lane_id(), r, c);
    for (uint i = 0; i < 2; i++) {
        ulong row = transpose_matrix ? c + i : r, col = transpose_matrix ? r : c + i;
        d.e_[i] = (T)src[(matrix_origin.y + row) * elements_per_row + matrix_origin.x + col];
    }
}
template <class T, int C, int R, class P>
METAL_FUNC void simdgroup_store(simdgroup_matrix<T, C, R> a, P dst, ulong elements_per_row = C,
                                ulong2 matrix_origin = 0, bool transpose_matrix = false) {
    uint r, c;
    sg_frag_coord(::msl::lane_id(), r, c);
    for (uint i = 0; i < 2; i++) {
        ulong row = transpose_matrix ? c + i : r, col = transpose_matrix ? r : c + i;
        dst[(matrix_origin.y + row) * elements_per_row + matrix_origin.x + col] = a.e_[i];
    }
}
template <class TD, class TA, class TB, class TC>
METAL_FUNC void simdgroup_multiply_accumulate(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                              simdgroup_matrix<TB, 8, 8> b, simdgroup_matrix<TC, 8, 8> c) {
    const uint32_t m = 0xffffffffu;   // Metal requires the whole simdgroup here
    uint r, col;
    sg_frag_coord(::msl::lane_id(), r, col);
    float A[8], s0 = (float)c.e_[0], s1 = (float)c.e_[1];
    for (uint kp = 0; kp < 4; kp++) {
        const uint src = sg_frag_lane(r, kp);
        A[2 * kp] = (float)::msl::shfl<::msl::SH_IDX>(m, a.e_[0], src);
        A[2 * kp + 1] = (float)::msl::shfl<::msl::SH_IDX>(m, a.e_[1], src);
    }
    for (uint k = 0; k < 8; k++) {
        const uint src = sg_frag_lane(k, col / 2);
        const float b0 = (float)::msl::shfl<::msl::SH_IDX>(m, b.e_[0], src);
        const float b1 = (float)::msl::shfl<::msl::SH_IDX>(m, b.e_[1], src);
        s0 = __nv_fmaf(A[k], b0, s0);
        s1 = __nv_fmaf(A[k], b1, s1);
    }
    d.e_[0] = (TD)s0;
    d.e_[1] = (TD)s1;
}
template <class TD, class TA, class TB>
METAL_FUNC void simdgroup_multiply(thread simdgroup_matrix<TD, 8, 8>& d, simdgroup_matrix<TA, 8, 8> a,
                                   simdgroup_matrix<TB, 8, 8> b) {
    simdgroup_multiply_accumulate(d, a, b, make_filled_simdgroup_matrix<TD, 8, 8>(TD(0)));
}

// ------------------------------------------------------------------------------ atomics (relaxed, device scope)
template <class T> struct atomic { typedef T value_type; T v_; };
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
template <class P> struct atomic_of;
template <class A> struct atomic_of<A*> { typedef typename A::value_type type; };
template <class P> using atomic_t = typename atomic_of<P>::type;
template <class P> METAL_FUNC atomic_t<P>* msl_atomic_ptr(P obj) { return (atomic_t<P>*)&obj->v_; }
template <class P> METAL_FUNC atomic_t<P> atomic_load_explicit(P obj, memory_order) { return __atomic_load_n(msl_atomic_ptr(obj), __ATOMIC_RELAXED); }
template <class P, class T> METAL_FUNC void atomic_store_explicit(P obj, T v, memory_order) {
    __atomic_store_n(msl_atomic_ptr(obj), (atomic_t<P>)v, __ATOMIC_RELAXED);
}
template <class P, class T> METAL_FUNC atomic_t<P> atomic_exchange_explicit(P obj, T v, memory_order) {
    return __atomic_exchange_n(msl_atomic_ptr(obj), (atomic_t<P>)v, __ATOMIC_RELAXED);
}
template <class P, class E, class T>
METAL_FUNC bool atomic_compare_exchange_weak_explicit(P obj, E expected, T desired, memory_order, memory_order) {
    return __atomic_compare_exchange_n(msl_atomic_ptr(obj), (atomic_t<P>*)expected, (atomic_t<P>)desired, true,
                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
template <class P, class T, class F> METAL_FUNC atomic_t<P> msl_atomic_rmw(P obj, T v, F f) {
    typedef atomic_t<P> V;
    V* p = msl_atomic_ptr(obj);
    V old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, (V)f(old, (V)v), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
#define MSL_ATOMIC_RMW(name, expr)                                                                 \
    template <class P, class T> METAL_FUNC auto atomic_fetch_##name##_explicit(P obj, T v, memory_order) { \
        return msl_atomic_rmw(obj, v, [](auto a, auto b) { return expr; });                        \
    }
MSL_ATOMIC_RMW(add, a + b) MSL_ATOMIC_RMW(sub, a - b) MSL_ATOMIC_RMW(and, a & b) MSL_ATOMIC_RMW(or, a | b)
MSL_ATOMIC_RMW(xor, a ^ b) MSL_ATOMIC_RMW(min, a < b ? a : b) MSL_ATOMIC_RMW(max, a > b ? a : b)
#undef MSL_ATOMIC_RMW
}  // namespace metal

// ------------------------------------------------------------------------------ vector constructors
// float4(a, b, c, d), float4(v.xy, 0, 1), float4(x) (splat), float4(half4) (conversion)
namespace msl {
template <class V, class X> METAL_FUNC void vput(V& r, int& i, X x) {
    using E = typename metal::vtraits<V>::elem;
    if constexpr (metal::vtraits<X>::n == 1) r[i++] = (E)x;
    else
        for (int k = 0; k < metal::vtraits<X>::n; k++) r[i++] = (E)x[k];
}
template <class V, class... A> METAL_FUNC V make_vec(A... a) {
    using E = typename metal::vtraits<V>::elem;
    constexpr int n = metal::vtraits<V>::n;
    if constexpr (sizeof...(A) == 0) return (V)(E)0;
    else if constexpr (sizeof...(A) == 1 && ((metal::vtraits<A>::n == 1) && ...)) return (V)(E)(a, ...);
    else {
        static_assert(((metal::vtraits<A>::n) + ...) == n, "vector constructor: wrong number of components");
        metal::vec<E, n> r;
        int i = 0;
        (vput(r, i, a), ...);
        return (V)r;
    }
}

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
