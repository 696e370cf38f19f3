/* Minimal test framework shared by the test binaries.  Each binary ends with "N passed, N failed";
   tests/run.sh sums the binaries into the suite's closing line. */
#ifndef MLLM_TEST_H
#define MLLM_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed, t_cur_failed;
static const char *t_cur_name;

/* Records a failure of the current test (with a printf-style explanation) without stopping it. */
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_cur_failed++;                                                                \
            if (t_cur_failed <= 10) {                                                      \
                printf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
                printf(__VA_ARGS__);                                                       \
                printf("\n");                                                              \
            }                                                                              \
        }                                                                                  \
    } while (0)

/* MLLM_TEST_FILTER=WORD runs only the tests whose name contains WORD (make test-real-models). */
#define RUN(fn)                                                                            \
    do {                                                                                   \
        const char *t_filter_ = getenv("MLLM_TEST_FILTER");                                \
        if (t_filter_ && !strstr(#fn, t_filter_)) break;                                   \
        t_cur_name = #fn;                                                                  \
        t_cur_failed = 0;                                                                  \
        fn();                                                                              \
        if (t_cur_failed) { t_failed++; printf("FAIL %s (%d checks failed)\n", #fn, t_cur_failed); } \
        else { t_passed++; printf("ok   %s\n", #fn); }                                   \
        fflush(stdout);                                                                    \
    } while (0)

static int t_finish(void) {
    printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed ? 1 : 0;
}

/* Path of ../shared/testdata (override with MLLM_TESTDATA). */
static const char *t_testdata(void) {
    const char *e = getenv("MLLM_TESTDATA");
    return e ? e : "../shared/testdata";
}

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL if missing. */
static char *t_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = 0;
    if (len) *len = (size_t)n;
    fclose(f);
    return buf;
}
#endif
