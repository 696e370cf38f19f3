// Test framework of the emulator suite (the C++ counterpart of tests/test.h) and helpers for kernel
// tests. A test file defines tests with EMU_TEST(name) { ... CHECK(cond, fmt, ...); ... }; main.cpp
// runs them all (or those whose name contains argv[1]) and prints "N passed, N failed".
// Every test of every build fails if ThreadSanitizer reported a race while it ran (test_emu_tsan).
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "msl_host.hpp"

namespace emu {
struct Test { const char* name; const char* file; void (*fn)(); };
inline std::vector<Test>& registry() {
    static std::vector<Test> t;
    return t;
}
struct Register { Register(const char* n, const char* f, void (*fn)()) { registry().push_back({n, f, fn}); } };
inline int cur_failed = 0;
inline long tsan_reports = 0;       // races reported by ThreadSanitizer so far (test_emu_tsan only)
inline long tsan_expected = 0;      // races the running test wants to see (planted bugs)

#if defined(MSL_TSAN_BUILD)
constexpr bool tsan = true;         // kernels run ~10x slower: tests may use smaller shapes
#else
constexpr bool tsan = false;
#endif
// the sanitizer builds (make test-san, the TSan twins) run the plain build's kernels again: fewer steps
// of the same host code there
#if defined(MSL_TSAN_BUILD) || defined(MSL_SAN_BUILD)
constexpr bool quick = true;
#else
constexpr bool quick = false;
#endif
#if defined(MSL_AS)
constexpr bool check_mode = true;   // kernels were compiled with distinct address spaces
#else
constexpr bool check_mode = false;
#endif

// Guarded device memory (see msl::alloc_guarded), freed with the object.
template <class T> struct Buffer {
    T* p = nullptr;
    size_t n = 0;
    explicit Buffer(size_t count) : p((T*)msl::alloc_guarded(count * sizeof(T))), n(count) {}
    ~Buffer() { msl::free_guarded(p); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    T& operator[](size_t i) { return p[i]; }
    const T& operator[](size_t i) const { return p[i]; }
    T* data() { return p; }
    operator void*() { return p; }
};

// The schedule/poison combinations every kernel test should pass (at least 3 schedules, poisoned
// threadgroup memory). Use with d.policy = r.policy; d.poison = r.poison.
struct Variant { int policy, poison; };
inline std::vector<Variant> variants() {
    return {{msl::SCHED_FORWARD, msl::POISON_NAN}, {msl::SCHED_REVERSE, msl::POISON_GARBAGE},
            {msl::SCHED_RANDOM, msl::POISON_NAN}, {msl::SCHED_SG_RANDOM, msl::POISON_GARBAGE}};
}
inline std::string describe(const msl::Result& r) {
    std::string s = r.ok ? "ok" : "error: " + r.error;
    for (size_t i = 0; i < r.warnings.size() && i < 3; i++) s += "\n      warning: " + r.warnings[i];
    return s;
}
}  // namespace emu

#define EMU_TEST(name)                                                      \
    static void name();                                                     \
    static ::emu::Register name##_register_(#name, __FILE__, name);         \
    static void name()

#ifndef CHECK
#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            if (++::emu::cur_failed <= 10) {                                \
                printf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
                printf(__VA_ARGS__);                                        \
                printf("\n");                                               \
            }                                                               \
        }                                                                   \
    } while (0)
#endif
// A dispatch that must succeed without warnings.
#define CHECK_DISPATCH(r, what)                                             \
    CHECK((r).ok && (r).warnings.empty(), "%s: %s", what, ::emu::describe(r).c_str())
