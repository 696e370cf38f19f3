// tests/emu/emu_device.h's interface (the emulated GPU behind mllm__gpu_vt) on a real NVIDIA GPU: the
// kernel tests that drive the engine's encoders (attention, MoE, sampling) run unchanged on metalllm.h's
// CUDA backend.  tests/cuda.mk copies the test sources next to this file, so their
// #include "emu_device.h" finds it.  Like the emulator, the device runs each barrier-free group of
// dispatches last-first (settings.reverse_groups), so a missing barrier still gives wrong results
// although one CUDA stream would hide it.
#pragma once
#include <string>
#include <vector>

#include "msl_host.hpp"

struct mllm__emu_settings {
    int policy = msl::SCHED_FORWARD;   // (no meaning on a GPU)
    int poison = msl::POISON_NAN;
    bool reverse_groups = true;
    bool fail_on_warning = true;
};
struct mllm__emu_dev {
    uint64_t executed = 0;              // dispatches launched
    std::vector<std::string> warnings;  // (never any)
    mllm__emu_settings s;
    std::vector<std::pair<mllm__cu_cmd*, size_t>> groups;   // barrier positions of open command buffers
};
static mllm__emu_dev& mllm__emu_state() {
    static mllm__emu_dev d;
    return d;
}
static void mllm__emu_destroy(void*) {}   // the one CUDA device stays open for the whole program
// (the CUDA backend's command buffer behind the host interface's opaque type)
static mllm__cu_cmd* mllm__emu_cu(mllm__gpu_cmd* c) { return (mllm__cu_cmd*)c; }
static void mllm__emu_barrier(mllm__gpu_cmd* gc) {
    mllm__emu_state().groups.push_back({mllm__emu_cu(gc), mllm__emu_cu(gc)->n_ops});
    mllm__cu_barrier(mllm__emu_cu(gc));   // (a graph's dependencies)
}
static void mllm__emu_commit(mllm__gpu_cmd* gc) {
    mllm__cu_cmd* c = mllm__emu_cu(gc);
    mllm__emu_dev& e = mllm__emu_state();
    std::vector<size_t> cuts{0};
    for (auto it = e.groups.begin(); it != e.groups.end();) {
        if (it->first == c) { cuts.push_back(it->second); it = e.groups.erase(it); }
        else ++it;
    }
    cuts.push_back(c->n_ops);
    if (e.s.reverse_groups)
        for (size_t i = 0; i + 1 < cuts.size(); i++)
            for (size_t a = cuts[i], b = cuts[i + 1]; a + 1 < b; a++, b--) std::swap(c->ops[a], c->ops[b - 1]);
    e.executed += c->n_ops;
    mllm__cu_commit(c);
}
static const mllm__gpu_vt mllm__emu_vt = {
    "cuda (test)", mllm__emu_destroy, mllm__cuv_buf_new, mllm__cuv_buf_wrap, mllm__cuv_buf_contents, mllm__cuv_buf_free,
    mllm__cuv_pipeline, mllm__cuv_begin, mllm__cuv_set_buffer, mllm__cuv_set_bytes, mllm__cuv_set_tg_memory,
    mllm__cuv_dispatch, mllm__emu_barrier, mllm__emu_commit, mllm__cuv_wait, mllm__cuv_max_threads, mllm__cuv_max_buffer,
    MLLM__CUDA_GEMM_MIN_TOKENS, MLLM__CUDA_GEMM_WIDE_TOKENS, MLLM__CUDA_GEMM_WIDE_TILES, mllm__cuv_buf_flush,
    mllm__cuv_buf_read};

static mllm_status mllm__emu_gpu_open(mllm__gpu* g, const mllm__emu_settings* s) {
    mllm__gpu& dev = msl::cuda_gpu();
    mllm__emu_state().s = s ? *s : mllm__emu_settings();
    mllm__emu_state().executed = 0;
    g->vt = &mllm__emu_vt;
    g->dev = dev.dev;
    memset(&g->n, 0, sizeof g->n);
    g->fault = MLLM_OK;   // (the tests' mllm__gpu may be uninitialised, as the real open assumes too)
    g->fault_msg[0] = 0;
    return MLLM_OK;
}
static mllm__emu_dev* mllm__emu_device(mllm__gpu*) { return &mllm__emu_state(); }
