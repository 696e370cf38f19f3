// Self-tests of the emulator: planted bugs (tests/emu/planted/) must be reported, and the SIMD-group
// operations and simdgroup_matrix must compute what MSL specifies (checked against host code).
#include <math.h>

#include <random>

#include "emu_test.hpp"

using msl::Dispatch;
using msl::Result;

static bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// A missing barrier between threadgroup writes and reads of other threads' elements must show up:
// as a wrong result under some schedule (poisoned memory), and as a race report under TSan.
EMU_TEST(planted_missing_barrier_is_caught) {
    const uint32_t rows = 3, n = 128;
    emu::Buffer<float> x(rows * n), y(rows * n);
    for (uint32_t i = 0; i < rows * n; i++) x[i] = (float)i;
    void* b[] = {x, y};
    int wrong = 0;
    for (const emu::Variant& v : emu::variants()) {
        Dispatch d;
        d.tgs[0] = rows;
        d.tpt[0] = n;
        d.policy = v.policy;
        d.poison = v.poison;
        // the correct kernel is right under every schedule
        Result r = msl::dispatch("reverse_rows", d, b, 2);
        CHECK_DISPATCH(r, "reverse_rows");
        int bad = 0;
        for (uint32_t i = 0; i < rows * n; i++) bad += y[i] != x[(i / n) * n + n - 1 - i % n];
        CHECK(bad == 0, "reverse_rows wrong under %s: %d elements", msl::sched_name(v.policy), bad);
        // the planted one
        if (emu::tsan) emu::tsan_expected = 1;
        memset(y.data(), 0, rows * n * sizeof(float));
        r = msl::dispatch("reverse_rows_no_barrier", d, b, 2);
        CHECK(r.ok, "%s", r.error.c_str());
        bad = 0;
        for (uint32_t i = 0; i < rows * n; i++) bad += y[i] != x[(i / n) * n + n - 1 - i % n];
        wrong += bad != 0;
    }
    CHECK(wrong >= 2, "the missing barrier changed the result under only %d of %zu schedules", wrong, emu::variants().size());
    if (emu::tsan) CHECK(emu::tsan_reports > 0, "ThreadSanitizer did not report the planted race");
}

EMU_TEST(planted_out_of_bounds_read_is_caught) {
    const uint32_t n = 1000;   // grid of 4 x 256 threads: 24 threads read past the end
    emu::Buffer<float> x(n), y(1024);
    void* b[] = {x, y};
    Dispatch d;
    d.tgs[0] = 4;
    d.tpt[0] = 256;
    Result r = msl::dispatch("copy_unchecked", d, b, 2);
    CHECK(!r.ok, "out-of-bounds read not reported");
    CHECK(contains(r.error, "out of bounds") && contains(r.error, "[[buffer(0)]]"), "error: %s", r.error.c_str());
    // the same kernel with an exact grid is fine, and the emulator still works after the fault
    d.tgs[0] = 1;
    d.tpt[0] = 1000;
    r = msl::dispatch("copy_unchecked", d, b, 2);
    CHECK_DISPATCH(r, "copy_unchecked, exact grid");
}

EMU_TEST(planted_out_of_bounds_write_into_slack_is_caught) {
    uint32_t n = 7;   // 28 bytes: the element past the end lies in the 16-byte alignment slack
    emu::Buffer<float> y(n);
    void* b[] = {y, &n};
    Dispatch d;
    d.tpt[0] = 8;
    Result r = msl::dispatch("write_one_past", d, b, 2);
    CHECK(!r.ok && contains(r.error, "out-of-bounds write"), "slack write not reported: %s", emu::describe(r).c_str());
    n = 6;   // in bounds now; the canary was re-armed
    r = msl::dispatch("write_one_past", d, b, 2);
    CHECK_DISPATCH(r, "write_one_past in bounds");
}

EMU_TEST(planted_early_exit_before_barrier_is_caught) {
    uint32_t n = 100;
    emu::Buffer<float> x(128);
    void* b[] = {x, &n};
    Dispatch d;
    d.tgs[0] = 2;
    d.tpt[0] = 64;
    for (int p = 0; p < msl::SCHED_COUNT; p++) {
        d.policy = p;
        Result r = msl::dispatch("early_exit", d, b, 2);
        CHECK(!r.ok && contains(r.error, "already returned"), "%s: %s", msl::sched_name(p), emu::describe(r).c_str());
    }
    n = 128;   // no thread returns early
    d.policy = msl::SCHED_FORWARD;
    CHECK_DISPATCH(msl::dispatch("early_exit", d, b, 2), "early_exit without early exit");
}

EMU_TEST(planted_divergent_barrier_is_caught) {
    emu::Buffer<float> x(64);
    void* b[] = {x};
    Dispatch d;
    d.tpt[0] = 64;
    Result r = msl::dispatch("divergent_barrier", d, b, 1);
    CHECK(!r.ok && contains(r.error, "divergent threadgroup_barrier"), "%s", emu::describe(r).c_str());
    d.strict = false;   // reported as a warning instead
    r = msl::dispatch("divergent_barrier", d, b, 1);
    CHECK(r.ok && !r.warnings.empty(), "%s", emu::describe(r).c_str());
}

EMU_TEST(planted_division_by_zero_is_caught) {
    if (emu::tsan) return;   // signals inside TSan-instrumented fibers: not worth the trouble
    emu::Buffer<int> x(32);
    for (int i = 0; i < 32; i++) x[i] = i == 5 ? 0 : i + 1;
    void* b[] = {x};
    Dispatch d;
    d.tpt[0] = 32;
    Result r = msl::dispatch("divide_by_zero", d, b, 1);
    CHECK(!r.ok && contains(r.error, "division") && contains(r.error, "thread (5,0,0)"), "%s", emu::describe(r).c_str());
}

EMU_TEST(unknown_kernel_and_bad_sizes_are_errors) {
    Dispatch d;
    CHECK(!msl::dispatch("no_such_kernel", d, nullptr, 0).ok, "unknown kernel accepted");
    d.tpt[0] = 2048;
    CHECK(!msl::dispatch("reverse_rows", d, nullptr, 0).ok, "2048 threads per threadgroup accepted");
}

// Every SIMD-group operation, checked lane by lane against a host computation per simdgroup.
EMU_TEST(simd_collectives_match_host) {
    const int n = 64;
    emu::Buffer<float> x(n), f(n * 12);
    emu::Buffer<uint32_t> u(n * 8);
    std::mt19937 rng(7);
    for (int i = 0; i < n; i++) x[i] = (float)((int)(rng() % 17) - 8);   // small integers: exact sums
    void* b[] = {x, f, u};
    for (const emu::Variant& v : emu::variants()) {
        Dispatch d;
        d.tpt[0] = n;
        d.policy = v.policy;
        Result r = msl::dispatch("simd_ops", d, b, 3);
        CHECK_DISPATCH(r, "simd_ops");
        int bad = 0;
        for (int t = 0; t < n; t++) {
            const int base = t / 32 * 32, lane = t % 32;
            auto X = [&](int l) { return x[base + l]; };
            double sum = 0, mx = -1e30, mn = 1e30, ex = 0, in = 0;
            uint32_t ballot = 0, all = 1, any = 0, band = ~0u, bor = 0, bxor = 0;
            for (int l = 0; l < 32; l++) {
                sum += X(l);
                mx = fmax(mx, X(l));
                mn = fmin(mn, X(l));
                if (l < lane) ex += X(l);
                if (l <= lane) in += X(l);
                ballot |= (X(l) > 0) ? 1u << l : 0;
                all &= X(l) > -100;
                any |= X(l) > 7.5f;
                const uint32_t bits = (uint32_t)((int)X(l) & 7);
                band &= bits | 8u;
                bor |= bits;
                bxor ^= bits;
            }
            const double want[12] = {sum, mx, mn, ex, in, X((lane * 7 + 3) % 32), X(lane + 5 < 32 ? lane + 5 : lane),
                                     X(lane >= 3 ? lane - 3 : lane), X(lane ^ 6), X(17), sum + 32, sum};
            for (int k = 0; k < 12; k++)
                if (f[t * 12 + k] != want[k]) {
                    if (bad++ < 5) printf("    thread %d op %d: got %g want %g\n", t, k, f[t * 12 + k], want[k]);
                }
            const uint32_t wantu[8] = {ballot, all, any, band, bor, bxor, (uint32_t)base, (uint32_t)(base / 32 * 1000 + 200 + 32)};
            for (int k = 0; k < 8; k++)
                if (u[t * 8 + k] != wantu[k]) {
                    if (bad++ < 5) printf("    thread %d int op %d: got %u want %u\n", t, k, u[t * 8 + k], wantu[k]);
                }
        }
        CHECK(bad == 0, "%d wrong SIMD-group results under %s", bad, msl::sched_name(v.policy));
    }
}

EMU_TEST(simd_sum_in_divergent_branch_uses_active_lanes) {
    emu::Buffer<float> x(32), y(32);
    double want = 0;
    for (int i = 0; i < 32; i++) {
        x[i] = (float)(i % 3) - 1.0f;   // -1, 0, 1, ...
        if (x[i] > 0) want += x[i];
    }
    void* b[] = {x, y};
    Dispatch d;
    d.tpt[0] = 32;
    Result r = msl::dispatch("simd_sum_divergent", d, b, 2);
    CHECK(r.ok, "%s", emu::describe(r).c_str());
    int bad = 0;
    for (int i = 0; i < 32; i++) bad += y[i] != (x[i] > 0 ? (float)want : -1.0f);
    CHECK(bad == 0, "%d lanes wrong", bad);
}

// The fragment layout is written here independently, as MLX's steel GEMM derives it
// (quad id = lane / 4; row = (qid & 4) + (lane / 2) % 4; col = (qid & 2) * 2 + (lane % 2) * 2).
EMU_TEST(simdgroup_matrix_thread_elements_layout) {
    emu::Buffer<float> out(128), m(64);
    for (int i = 0; i < 64; i++) m[i] = (float)i;
    void* b[] = {out, m};
    Dispatch d;
    d.tpt[0] = 32;
    CHECK_DISPATCH(msl::dispatch("sg_layout", d, b, 2), "sg_layout");
    int bad = 0;
    for (int lane = 0; lane < 32; lane++) {
        const int qid = lane / 4, row = (qid & 4) + (lane / 2) % 4, col = (qid & 2) * 2 + (lane % 2) * 2;
        bad += out[2 * lane] != row * 8 + col || out[2 * lane + 1] != row * 8 + col + 1;
    }
    for (int i = 0; i < 64; i++) bad += out[64 + i] != m[i];   // m * I == m
    CHECK(bad == 0, "%d layout mismatches (lane 9 holds %g, %g)", bad, out[18], out[19]);
}

template <class T> static void check_mma(const char* kernel, double tol) {
    emu::Buffer<T> a(8 * 16), bt(64), c(64), dd(8 * 12);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1, 1);
    for (int i = 0; i < 128; i++) a[i] = (T)u(rng);
    for (int i = 0; i < 64; i++) { bt[i] = (T)u(rng); c[i] = (T)u(rng); }
    for (int i = 0; i < 96; i++) dd[i] = (T)7.0f;
    void* b[] = {a, bt, c, dd};
    Dispatch d;
    d.tpt[0] = 32;
    CHECK_DISPATCH(msl::dispatch(kernel, d, b, 4), kernel);
    double maxerr = 0;
    int untouched = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 12; j++) {
            if (j < 4) { untouched += (float)dd[i * 12 + j] != 7.0f; continue; }
            double s = (float)c[i * 8 + j - 4];
            for (int k = 0; k < 8; k++) s += (double)(float)a[i * 16 + 8 + k] * (float)bt[(j - 4) * 8 + k];
            maxerr = fmax(maxerr, fabs((float)dd[i * 12 + j] - s));
        }
    CHECK(maxerr <= tol && untouched == 0, "%s: max error %g (tolerance %g), %d elements outside D written", kernel, maxerr, tol, untouched);
}
EMU_TEST(simdgroup_matrix_multiply_accumulate) {
    check_mma<float>("sg_mma_f32", 1e-5);
    check_mma<_Float16>("sg_mma_f16", 8e-3);    // one rounding to half of a value below 8
    check_mma<__bf16>("sg_mma_bf16", 6e-2);
}

EMU_TEST(language_features) {
    struct Params { uint32_t n; float bias; } prm = {300, 0.25f};
    emu::Buffer<float> p(3 * 300), outf(300);
    emu::Buffer<_Float16> outh(300);
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1, 1);
    for (int i = 0; i < 900; i++) p[i] = u(rng);
    for (int variant = 0; variant < 2; variant++) {
        emu::Buffer<uint32_t> count(5);
        Dispatch d;
        d.tgs[0] = 3;
        d.tpt[0] = 128;
        d.tg_lengths = {16};
        const float scale = 0.5f;
        uint32_t bits;
        memcpy(&bits, &scale, 4);
        d.function_constants = {{0, 1}, {1, bits}};   // use_scale = true, fc_scale = 0.5
        const bool half = variant == 1;
        void* b[] = {p, half ? (void*)outh : (void*)outf, count, &prm};
        Result r = msl::dispatch(half ? "features_f16" : "features_f32", d, b, 4);
        CHECK_DISPATCH(r, "features");
        uint32_t hist[4] = {0, 0, 0, 0};
        int bad = 0;
        for (int i = 0; i < 300; i++) {
            const float x = p[3 * i], y = p[3 * i + 1], z = p[3 * i + 2];
            // w = (z, y, x, 1); w.xy = w.yx * 2  ->  (2y, 2z, x, 1)
            float s = (2 * y + 2 * z + x + 1 + prm.bias) * scale;
            const float got = half ? (float)outh[i] : outf[i];
            bad += fabsf(got - s) > (half ? 2e-3f : 1e-6f);
            hist[(int)fminf(fmaxf(s, 0.0f), 3.0f)]++;
        }
        CHECK(bad == 0, "%d wrong outputs (%s)", bad, half ? "f16" : "f32");
        CHECK(!memcmp(hist, count.data(), 16) && count[4] == 128, "histogram %u %u %u %u max %u", count[0], count[1], count[2],
              count[3], count[4]);
    }
}

// `threadgroup float a[2 * 32];` is shared by the threadgroup (the '*' of the size is no pointer).
EMU_TEST(threadgroup_array_with_expression_size_is_shared) {
    emu::Buffer<float> out(64);
    Dispatch d;
    d.tgs[0] = 1;
    d.tpt[0] = 64;
    void* b[] = {out};
    Result r = msl::dispatch("tg_array_dims", d, b, 1);
    CHECK_DISPATCH(r, "tg_array_dims");
    int bad = 0;
    for (int i = 0; i < 64; i++) bad += out[i] != (float)((i + 1) % 64);
    CHECK(bad == 0, "%d threads did not see the others' writes", bad);
}
