// The emulated GPU behind metalllm.h's host interface: buffers, pipelines, encoder state, barriers,
// command buffer order, errors and counters, driven only through the mllm__gpu_* calls the engine uses.
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

#include <sys/mman.h>

#include "emu_device.h"
#include "emu_test.hpp"

// y = 2x, barrier, y += sum over each threadgroup of 2x; z read back.
static mllm_status run_chain(mllm__gpu* g, bool with_barrier, float* out, int n) {
    mllm__gpu_buf* x = g->vt->buf_new(g->dev, n * sizeof(float), MLLM__GPU_SHARED);
    mllm__gpu_buf* y = g->vt->buf_new(g->dev, n * sizeof(float), MLLM__GPU_SHARED);
    for (int i = 0; i < n; i++) ((float*)g->vt->buf_contents(x))[i] = (float)i;
    mllm__gpu_pipe* scale = g->vt->pipeline(g->dev, "dev_scale");
    mllm__gpu_pipe* add = g->vt->pipeline(g->dev, "dev_add_sum");
    mllm__gpu_cmd* c = g->vt->begin(g->dev);
    float s = 2.0f;
    g->vt->set_buffer(c, x, 0, 0);
    g->vt->set_buffer(c, y, 0, 1);
    g->vt->set_bytes(c, &s, sizeof s, 2);
    s = 100.0f;   // set_bytes copied the value
    mllm__gpu_dispatch(g, c, scale, n / 32, 1, 1, 32, 1, 1);
    if (with_barrier) mllm__gpu_barrier(g, c);
    g->vt->set_buffer(c, y, 0, 0);   // dev_add_sum reads y, adds into x
    g->vt->set_buffer(c, x, 0, 1);
    g->vt->set_tg_memory(c, 32 * sizeof(float), 0);
    mllm__gpu_dispatch(g, c, add, n / 32, 1, 1, 32, 1, 1);
    mllm__gpu_commit(g, c);
    const float before = ((float*)g->vt->buf_contents(x))[1];   // nothing has run before wait
    mllm_status st = mllm__gpu_wait(g, c);
    if (st == MLLM_OK) st = mllm__gpu_read(g, x, 0, out, n * sizeof(float));
    if (before != 1.0f) st = MLLM_ERR_INVALID_ARG;
    g->vt->buf_free(x);
    g->vt->buf_free(y);
    return st;
}

EMU_TEST(emulated_gpu_runs_a_chain_with_barrier) {
    mllm__gpu g;
    CHECK(mllm__emu_gpu_open(&g, nullptr) == MLLM_OK, "open");
    const int n = 64;
    float out[n];
    CHECK(run_chain(&g, true, out, n) == MLLM_OK, "%s", mllm_last_error());
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double sum = 0;
        for (int k = i / 32 * 32; k < i / 32 * 32 + 32; k++) sum += 2.0 * k;
        bad += out[i] != (float)(i + sum);
    }
    CHECK(bad == 0, "%d wrong results", bad);
    CHECK(g.n.dispatches == 2 && g.n.barriers == 1 && g.n.commits == 1 && g.n.waits == 1 && g.n.bytes_read == n * sizeof(float),
          "counters %llu %llu %llu %llu %llu", (unsigned long long)g.n.dispatches, (unsigned long long)g.n.barriers,
          (unsigned long long)g.n.commits, (unsigned long long)g.n.waits, (unsigned long long)g.n.bytes_read);
    CHECK(mllm__emu_device(&g)->executed == 2, "executed %llu", (unsigned long long)mllm__emu_device(&g)->executed);
    mllm__gpu_close(&g);
}

// Without the barrier the two dispatches are unordered; the emulator runs them in reverse.
EMU_TEST(emulated_gpu_exposes_a_missing_barrier) {
    mllm__gpu g;
    mllm__emu_gpu_open(&g, nullptr);
    const int n = 64;
    float good[n], bad_out[n];
    CHECK(run_chain(&g, true, good, n) == MLLM_OK, "%s", mllm_last_error());
    CHECK(run_chain(&g, false, bad_out, n) == MLLM_OK, "%s", mllm_last_error());
    CHECK(memcmp(good, bad_out, sizeof good) != 0, "missing barrier went unnoticed");
    mllm__gpu_close(&g);
}

EMU_TEST(emulated_gpu_buffers_and_errors) {
    mllm__gpu g;
    mllm__emu_gpu_open(&g, nullptr);
    mllm__gpu_buf* p = g.vt->buf_new(g.dev, 100, MLLM__GPU_PRIVATE);
    CHECK(p && g.vt->buf_contents(p) == nullptr, "private buffer has CPU contents");
    float f;
    CHECK(mllm__gpu_read(&g, p, 0, &f, 4) == MLLM_ERR_BACKEND, "read of a private buffer accepted");
    g.vt->buf_free(p);
    // no-copy wrap of page-aligned memory (as for mmap'd weights); unaligned is refused
    void* m = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mllm__gpu_buf* w = g.vt->buf_wrap(g.dev, m, 8192);
    CHECK(w && g.vt->buf_contents(w) == m, "wrap copied or failed");
    g.vt->buf_free(w);
    CHECK(g.vt->buf_wrap(g.dev, (char*)m + 16, 4096) == nullptr, "unaligned wrap accepted");
    munmap(m, 8192);
    CHECK(g.vt->pipeline(g.dev, "no_such_kernel") == nullptr && strstr(mllm_last_error(), "no_such_kernel"), "unknown pipeline");
    CHECK(g.vt->pipeline(g.dev, "dev_scale") == g.vt->pipeline(g.dev, "dev_scale"), "pipelines are not cached");
    // a kernel fault fails the command buffer with the emulator's report
    mllm__gpu_buf* x = g.vt->buf_new(g.dev, 16 * sizeof(float), MLLM__GPU_SHARED);
    mllm__gpu_cmd* c = g.vt->begin(g.dev);
    float s = 1.0f;
    g.vt->set_buffer(c, x, 0, 0);
    g.vt->set_buffer(c, x, 0, 1);
    g.vt->set_bytes(c, &s, 4, 2);
    mllm__gpu_dispatch(&g, c, g.vt->pipeline(g.dev, "dev_scale"), 1, 1, 1, 32, 1, 1);   // 32 threads, 16 floats
    mllm__gpu_commit(&g, c);
    CHECK(mllm__gpu_wait(&g, c) == MLLM_ERR_BACKEND && strstr(mllm_last_error(), "out of bounds"), "%s", mllm_last_error());
    g.vt->buf_free(x);
    mllm__gpu_close(&g);
}
