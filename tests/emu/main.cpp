// Runs the registered emulator tests: `test_emu [substring]`.
#include <chrono>

#include "emu_test.hpp"

#if defined(MSL_TSAN_BUILD)
// ThreadSanitizer calls this for every report; a test that did not plant a race fails on one.
extern "C" void __tsan_on_report(void*) { emu::tsan_reports++; }
// Reports are counted as test failures; the exit status is ours.
extern "C" const char* __tsan_default_options() { return "exitcode=0 report_signal_unsafe=0 history_size=4"; }
#endif

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    int passed = 0, failed = 0;
    for (const emu::Test& t : emu::registry()) {
        if (argc > 1 && !strstr(t.name, argv[1])) continue;
        emu::cur_failed = 0;
        emu::tsan_expected = 0;
        const long reports = emu::tsan_reports;
        const auto t0 = std::chrono::steady_clock::now();
        t.fn();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const long got = emu::tsan_reports - reports;
        if (emu::tsan_expected == 0 && got > 0) {
            printf("  FAIL ThreadSanitizer reported %ld data race(s) between kernel threads (see stderr)\n", got);
            emu::cur_failed++;
        }
        if (emu::cur_failed) {
            failed++;
            printf("FAIL %s (%d checks failed) %.2f s\n", t.name, emu::cur_failed, s);
        } else {
            passed++;
            printf("ok   %s %.2f s\n", t.name, s);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
