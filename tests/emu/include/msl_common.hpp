// msl_common.hpp - the part of the Metal Shading Language standard library that does not depend on
// how threads run: constants, scalar and vector types, numeric limits, math, integer, geometric and
// relational functions, the barrier flag types, atomics (relaxed: each shim's compiler maps the __atomic
// builtins) and vector constructors.  Shared by the emulator's shim (metal_shim.hpp, here) and the CUDA
// one (gen/cuda/metal_shim.h), which include it after defining
//   METAL_FUNC       how a shim function is declared (in CUDA the file sits inside
//                    `#pragma clang force_cuda_host_device`, so everything here is a device function)
//   MSL_MATHF(f)     the float function f (expf, sqrtf, isinf...): __builtin_f on the CPU, libdevice's
//                    __nv_f on the GPU
// Every namespace it opens it closes; the shims reopen metal for their barriers.
#pragma once
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
MSL_F1(exp, MSL_MATHF(expf)(x)) MSL_F1(exp2, MSL_MATHF(exp2f)(x)) MSL_F1(exp10, MSL_MATHF(powf)(10.0f, x))
MSL_F1(log, MSL_MATHF(logf)(x)) MSL_F1(log2, MSL_MATHF(log2f)(x)) MSL_F1(log10, MSL_MATHF(log10f)(x))
MSL_F1(sqrt, MSL_MATHF(sqrtf)(x)) MSL_F1(rsqrt, 1.0f / MSL_MATHF(sqrtf)(x)) MSL_F1(recip, 1.0f / x)
MSL_F1(sin, MSL_MATHF(sinf)(x)) MSL_F1(cos, MSL_MATHF(cosf)(x)) MSL_F1(tan, MSL_MATHF(tanf)(x))
MSL_F1(asin, MSL_MATHF(asinf)(x)) MSL_F1(acos, MSL_MATHF(acosf)(x)) MSL_F1(atan, MSL_MATHF(atanf)(x))
MSL_F1(sinh, MSL_MATHF(sinhf)(x)) MSL_F1(cosh, MSL_MATHF(coshf)(x)) MSL_F1(tanh, MSL_MATHF(tanhf)(x))
MSL_F1(erf, MSL_MATHF(erff)(x)) MSL_F1(floor, MSL_MATHF(floorf)(x)) MSL_F1(ceil, MSL_MATHF(ceilf)(x))
MSL_F1(round, MSL_MATHF(roundf)(x)) MSL_F1(rint, MSL_MATHF(rintf)(x)) MSL_F1(trunc, MSL_MATHF(truncf)(x))
MSL_F1(fabs, MSL_MATHF(fabsf)(x)) MSL_F1(fract, MSL_MATHF(fminf)(x - MSL_MATHF(floorf)(x), 0x1.fffffep-1f))
MSL_F1(saturate, MSL_MATHF(fminf)(MSL_MATHF(fmaxf)(x, 0.0f), 1.0f))
#undef MSL_F1
#define MSL_F2(name, expr) METAL_FUNC float name(float x, float y) { return expr; } MSL_MAP2(name)
MSL_F2(pow, MSL_MATHF(powf)(x, y)) MSL_F2(powr, MSL_MATHF(powf)(x, y)) MSL_F2(atan2, MSL_MATHF(atan2f)(x, y))
MSL_F2(fmod, MSL_MATHF(fmodf)(x, y)) MSL_F2(fmax, MSL_MATHF(fmaxf)(x, y)) MSL_F2(fmin, MSL_MATHF(fminf)(x, y))
MSL_F2(max, MSL_MATHF(fmaxf)(x, y)) MSL_F2(min, MSL_MATHF(fminf)(x, y)) MSL_F2(copysign, MSL_MATHF(copysignf)(x, y))
MSL_F2(step, y < x ? 0.0f : 1.0f) MSL_F2(divide, x / y)
#undef MSL_F2
METAL_FUNC float abs(float x) { return MSL_MATHF(fabsf)(x); }
MSL_MAP1(abs)
METAL_FUNC float sign(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f; }
MSL_MAP1(sign)
METAL_FUNC bool isnan(float x) { return __builtin_isnan(x); }
METAL_FUNC bool isinf(float x) { return MSL_MATHF(isinf)(x); }
METAL_FUNC bool isfinite(float x) { return __builtin_isfinite(x); }
METAL_FUNC bool signbit(float x) { return __builtin_signbit(x); }
METAL_FUNC bool isnan(half x) { return __builtin_isnan((float)x); }
METAL_FUNC bool isinf(half x) { return MSL_MATHF(isinf)((float)x); }
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
MSL_F3(fma, MSL_MATHF(fmaf)(x, y, z)) MSL_F3(mix, x + (y - x) * z)
MSL_F3(clamp, MSL_MATHF(fminf)(MSL_MATHF(fmaxf)(x, y), z))
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
}  // namespace metal

namespace metal {
// ------------------------------------------------------------------------------ atomics (relaxed, device scope)
template <class T> struct atomic { typedef T value_type; T v_; };
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
// P is a pointer to atomic<T> in any address space; the casts drop the space (one flat memory here).
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
// read-modify-write through a CAS loop: one definition for every operation and type (float included)
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

namespace msl {
// ------------------------------------------------------------------------------ vector constructors
// float4(a, b, c, d), float4(v.xy, 0, 1), float4(x) (splat), float4(half4) (conversion)
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
}  // namespace msl
