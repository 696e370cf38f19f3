// The MSL emulator as a GPU behind metalllm.h's host interface (mllm__gpu_vt), so that the engine's
// Metal path runs unchanged in tests. Include after metalllm.h with METALLLM_IMPLEMENTATION, in a C++
// test file of tests/emu/; then mllm__emu_gpu_open(&gpu, &settings).
//
// Like Metal's concurrent compute encoder, dispatches between two memory barriers may run in any
// order: this device runs each such group in reverse (settings.reverse_groups), so a missing barrier
// gives wrong results. Command buffers run at wait (all committed ones, in commit order), so reading
// results before wait sees old data, as it may on a GPU. Private buffers have no CPU contents.
#pragma once
#include <string>
#include <vector>

#include "msl_host.hpp"

struct mllm__emu_settings {
    int policy = msl::SCHED_FORWARD;   // schedule and poison of every dispatch
    int poison = msl::POISON_NAN;
    bool reverse_groups = true;        // run barrier-free groups of dispatches last-first
    bool fail_on_warning = true;       // a dispatch with emulator warnings fails the command buffer
    uint32_t max_threads = 1024;       // every pipeline's maxTotalThreadsPerThreadgroup
    size_t max_buffer = 0;             // maxBufferLength (0: no limit)
};
struct mllm__emu_dev;
// A staged buffer has CPU contents of its own (host), as on a GPU with memory apart (CUDA): the engine's
// writes reach the kernels only through buf_flush and its results come back only through buf_read, so a
// missing flush or a read of the contents shows up here although Metal's one memory would hide it.
struct mllm__gpu_buf { char* mem; size_t bytes; int storage; bool wrapped; char* host = nullptr; mllm__emu_dev* dev = nullptr; };
struct mllm__gpu_pipe { std::string name; mllm__emu_dev* dev; };
struct mllm__emu_cmd_op {   // a dispatch (pipe != NULL) or a barrier
    mllm__gpu_pipe* pipe;
    std::vector<void*> buffers;
    std::vector<size_t> tg;
    uint32_t tgs[3], tpt[3];
};
struct mllm__emu_dev;
struct mllm__gpu_cmd {
    mllm__emu_dev* dev;
    std::vector<void*> bind;          // current bindings (contents + offset; set_bytes copies)
    std::vector<size_t> tg;
    std::vector<void*> owned;         // set_bytes copies, freed at wait
    std::vector<mllm__emu_cmd_op> ops;
    std::vector<std::pair<char*, std::vector<char>>> uploads;   // staged bytes flushed before the commit
    bool committed = false, done = false;
    mllm_status status = MLLM_OK;
    std::string error;
};
struct mllm__emu_dev {
    mllm__emu_settings s;
    std::vector<mllm__gpu_pipe*> pipes;
    std::vector<mllm__gpu_cmd*> queue;   // committed, not yet run
    std::vector<std::string> warnings;   // all emulator warnings so far
    uint64_t executed = 0;               // dispatches run
    std::vector<std::pair<char*, std::vector<char>>> flushed;   // staged writes for the next commit
};

static void mllm__emu_destroy(void* dev) {
    mllm__emu_dev* d = (mllm__emu_dev*)dev;
    for (mllm__gpu_pipe* p : d->pipes) delete p;
    delete d;
}
static mllm__gpu_buf* mllm__emu_buf_new(void* dev, size_t bytes, int storage) {
    if (((mllm__emu_dev*)dev)->s.max_buffer && bytes > ((mllm__emu_dev*)dev)->s.max_buffer) return nullptr;
    char* m = (char*)msl::alloc_guarded(bytes ? bytes : 1);
    if (!m) return nullptr;
    mllm__gpu_buf* b = new mllm__gpu_buf{m, bytes, storage, false};
    b->dev = (mllm__emu_dev*)dev;
    if (storage == MLLM__GPU_STAGED && !(b->host = (char*)msl::alloc_guarded(bytes ? bytes : 1))) {
        msl::free_guarded(m);
        delete b;
        return nullptr;
    }
    if (b->host) memset(b->host, 0, bytes ? bytes : 1);
    return b;
}
static mllm__gpu_buf* mllm__emu_buf_wrap(void* dev, void* ptr, size_t bytes) {
    if (((mllm__emu_dev*)dev)->s.max_buffer && bytes > ((mllm__emu_dev*)dev)->s.max_buffer) return nullptr;
    if (((uintptr_t)ptr | bytes) % 4096) {   // Metal's requirement for newBufferWithBytesNoCopy
        mllm__fail(MLLM_ERR_BACKEND, "gpu: wrapped memory must be page-aligned in address and length");
        return nullptr;
    }
    return new mllm__gpu_buf{(char*)ptr, bytes, MLLM__GPU_SHARED, true};
}
static void* mllm__emu_buf_contents(mllm__gpu_buf* b) {
    return b->storage == MLLM__GPU_PRIVATE ? nullptr : b->host ? b->host : b->mem;
}
static void mllm__emu_buf_free(mllm__gpu_buf* b) {
    if (!b) return;
    if (!b->wrapped) msl::free_guarded(b->mem);
    if (b->host) msl::free_guarded(b->host);
    delete b;
}
// (the bytes are taken now: the CPU may not write them again before the command that reads them runs)
static void mllm__emu_buf_flush(mllm__gpu_buf* b, size_t off, size_t bytes) {
    if (!b->host || off > b->bytes || bytes > b->bytes - off) return;
    b->dev->flushed.emplace_back(b->mem + off, std::vector<char>(b->host + off, b->host + off + bytes));
}
static mllm_status mllm__emu_buf_read(mllm__gpu_buf* b, size_t off, void* dst, size_t bytes) {
    if (off > b->bytes || bytes > b->bytes - off) return mllm__fail(MLLM_ERR_INVALID_ARG, "gpu: read past a buffer");
    memcpy(dst, b->mem + off, bytes);
    return MLLM_OK;
}
static mllm__gpu_pipe* mllm__emu_pipeline(void* dev, const char* kernel) {
    mllm__emu_dev* d = (mllm__emu_dev*)dev;
    for (mllm__gpu_pipe* p : d->pipes)
        if (p->name == kernel) return p;
    if (!msl::has_kernel(kernel)) {
        mllm__fail(MLLM_ERR_BACKEND, "gpu: no kernel named %s", kernel);
        return nullptr;
    }
    d->pipes.push_back(new mllm__gpu_pipe{kernel, d});
    return d->pipes.back();
}
static mllm__gpu_cmd* mllm__emu_begin(void* dev) {
    mllm__gpu_cmd* c = new mllm__gpu_cmd;
    c->dev = (mllm__emu_dev*)dev;
    return c;
}
static void mllm__emu_slot(std::vector<void*>& v, int i) { if ((int)v.size() <= i) v.resize(i + 1, nullptr); }
static void mllm__emu_set_buffer(mllm__gpu_cmd* c, mllm__gpu_buf* b, size_t offset, int index) {
    mllm__emu_slot(c->bind, index);
    c->bind[index] = b->mem + offset;
}
static void mllm__emu_set_bytes(mllm__gpu_cmd* c, const void* data, size_t bytes, int index) {
    void* p = msl::alloc_guarded(bytes);
    memcpy(p, data, bytes);
    c->owned.push_back(p);
    mllm__emu_slot(c->bind, index);
    c->bind[index] = p;
}
static void mllm__emu_set_tg_memory(mllm__gpu_cmd* c, size_t bytes, int index) {
    if ((int)c->tg.size() <= index) c->tg.resize(index + 1, 0);
    c->tg[index] = bytes;
}
static void mllm__emu_dispatch(mllm__gpu_cmd* c, mllm__gpu_pipe* p, const uint32_t tgs[3], const uint32_t tpt[3]) {
    mllm__emu_cmd_op op{p, c->bind, c->tg, {tgs[0], tgs[1], tgs[2]}, {tpt[0], tpt[1], tpt[2]}};
    c->ops.push_back(op);
}
static void mllm__emu_barrier(mllm__gpu_cmd* c) { c->ops.push_back(mllm__emu_cmd_op{nullptr, {}, {}, {0, 0, 0}, {0, 0, 0}}); }
static void mllm__emu_commit(mllm__gpu_cmd* c) {
    c->uploads.swap(c->dev->flushed);
    c->committed = true;
    c->dev->queue.push_back(c);
}
static void mllm__emu_run(mllm__gpu_cmd* c) {
    mllm__emu_dev* d = c->dev;
    size_t start = 0;
    for (auto& u : c->uploads) memcpy(u.first, u.second.data(), u.second.size());
    while (start < c->ops.size() && c->status == MLLM_OK) {   // one barrier-free group at a time
        size_t end = start;
        while (end < c->ops.size() && c->ops[end].pipe) end++;
        for (size_t k = 0; k < end - start && c->status == MLLM_OK; k++) {
            const mllm__emu_cmd_op& op = c->ops[d->s.reverse_groups ? end - 1 - k : start + k];
            msl::Dispatch ds;
            memcpy(ds.tgs, op.tgs, sizeof ds.tgs);
            memcpy(ds.tpt, op.tpt, sizeof ds.tpt);
            ds.tg_lengths = op.tg;
            ds.policy = d->s.policy;
            ds.poison = d->s.poison;
            msl::Result r = msl::dispatch(op.pipe->name.c_str(), ds, op.buffers.data(), (int)op.buffers.size());
            d->executed++;
            for (const std::string& w : r.warnings) d->warnings.push_back(op.pipe->name + ": " + w);
            if (!r.ok || (d->s.fail_on_warning && !r.warnings.empty())) {
                c->status = MLLM_ERR_BACKEND;
                c->error = op.pipe->name + ": " + (r.ok ? r.warnings[0] : r.error);
            }
        }
        start = end + 1;
    }
    c->done = true;
}
static mllm_status mllm__emu_wait(mllm__gpu_cmd* c) {
    mllm__emu_dev* d = c->dev;
    mllm_status st;
    if (!c->committed) {
        st = mllm__fail(MLLM_ERR_BACKEND, "gpu: wait on a command buffer that was not committed");
    } else {
        while (!c->done) {   // the queue runs in commit order up to c
            mllm__gpu_cmd* q = d->queue.front();
            d->queue.erase(d->queue.begin());
            mllm__emu_run(q);
        }
        st = c->status == MLLM_OK ? MLLM_OK : mllm__fail(c->status, "gpu: %s", c->error.c_str());
    }
    for (void* p : c->owned) msl::free_guarded(p);
    delete c;
    return st;
}
static uint32_t mllm__emu_max_threads(mllm__gpu_pipe* p) { return p->dev->s.max_threads; }
static size_t mllm__emu_max_buffer(void* dev) { return ((mllm__emu_dev*)dev)->s.max_buffer; }
static const mllm__gpu_vt mllm__emu_vt = {
    "msl-emulator", mllm__emu_destroy, mllm__emu_buf_new, mllm__emu_buf_wrap, mllm__emu_buf_contents, mllm__emu_buf_free,
    mllm__emu_pipeline, mllm__emu_begin, mllm__emu_set_buffer, mllm__emu_set_bytes, mllm__emu_set_tg_memory,
    mllm__emu_dispatch, mllm__emu_barrier, mllm__emu_commit, mllm__emu_wait, mllm__emu_max_threads, mllm__emu_max_buffer,
    MLLM__GPU_GEMM_MIN_TOKENS, 0, 0, mllm__emu_buf_flush, mllm__emu_buf_read};

static mllm_status mllm__emu_gpu_open(mllm__gpu* g, const mllm__emu_settings* s) {
    mllm__emu_dev* d = new mllm__emu_dev;
    if (s) d->s = *s;
    g->vt = &mllm__emu_vt;
    g->dev = d;
    memset(&g->n, 0, sizeof g->n);
    g->fault = MLLM_OK;
    return MLLM_OK;
}
static mllm__emu_dev* mllm__emu_device(mllm__gpu* g) { return (mllm__emu_dev*)g->dev; }
