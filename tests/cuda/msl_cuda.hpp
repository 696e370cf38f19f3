// The emulator suite's host API (tests/emu/msl_host.hpp) on a real NVIDIA GPU, through metalllm.h's
// CUDA backend: the kernel tests tests/emu/test_kernels_*.cpp compile unchanged against it (forced
// include, see tests/cuda.mk) and run their kernels as the PTX embedded in metalllm.h.
//   alloc_guarded   managed memory (the tests write inputs and read results through the pointer); no
//                   guard page: out-of-bounds accesses are compute-sanitizer's to find (make test-gpu
//                   runs the suite under memcheck and racecheck too)
//   dispatch        one launch, then a stream synchronization; launch and kernel errors fail it
// The schedule and poison variants of the emulator have no meaning here (the hardware schedules).
#pragma once
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "msl_host.hpp"

#include <map>
#include <string>

namespace msl {
inline mllm__gpu& cuda_gpu() {   // one device for the whole program
    static mllm__gpu g;
    static bool tried = false;
    if (!tried) {
        tried = true;
        if (mllm__cuda_open(&g, 0) != MLLM_OK) {
            fprintf(stderr, "no CUDA device: %s\n", mllm_last_error());
            exit(2);
        }
    }
    return g;
}
inline mllm__cu_dev* cuda_dev() { return (mllm__cu_dev*)cuda_gpu().dev; }
inline std::map<uintptr_t, size_t>& cuda_blocks() {
    static std::map<uintptr_t, size_t> m;
    return m;
}

void* alloc_guarded(size_t bytes) {
    mllm__cu_dev* d = cuda_dev();
    mllm__cu_ptr p = 0;
    if (d->a.MemAllocManaged(&p, bytes ? bytes : 1, 1) || d->a.MemsetD8(p, 0, bytes ? bytes : 1) || d->a.CtxSynchronize())
        return nullptr;
    cuda_blocks()[(uintptr_t)p] = bytes;
    return (void*)(uintptr_t)p;
}
void free_guarded(void* p) {
    if (!p) return;
    cuda_blocks().erase((uintptr_t)p);
    cuda_dev()->a.MemFree((mllm__cu_ptr)(uintptr_t)p);
}
size_t guarded_size(const void* p) {
    auto& m = cuda_blocks();
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin()) return 0;
    --it;
    const uintptr_t a = (uintptr_t)p;
    return a < it->first + it->second ? it->first + it->second - a : 0;
}
bool has_kernel(const char* kernel) {
    for (int i = 0; mllm__cuda_sigs()[i]; i += 2)
        if (!strcmp(mllm__cuda_sigs()[i], kernel)) return true;
    return false;
}
std::vector<std::string> kernel_names() {
    std::vector<std::string> v;
    for (int i = 0; mllm__cuda_sigs()[i]; i += 2) v.push_back(mllm__cuda_sigs()[i]);
    return v;
}
const char* sched_name(int policy) {
    static const char* n[] = {"forward", "reverse", "random", "sg-forward", "sg-reverse", "sg-random"};
    return policy >= 0 && policy < SCHED_COUNT ? n[policy] : "?";
}
const char* poison_name(int poison) {
    static const char* n[] = {"none", "nan", "zero", "garbage"};
    return poison >= 0 && poison <= POISON_GARBAGE ? n[poison] : "?";
}
Result dispatch(const char* kernel, const Dispatch& dd, void* const* buffers, int nbuf) {
    Result res;
    mllm__cu_dev* d = cuda_dev();
    mllm__cu_pipe* p = mllm__cu_pipeline(d, kernel);
    if (!p) { res.ok = false; res.error = mllm_last_error(); return res; }
    if (!dd.function_constants.empty()) { res.ok = false; res.error = "function constants: not supported on CUDA"; return res; }
    void* params[MLLM__CU_MAX_PARAMS];
    for (int i = 0; i < p->np; i++) {
        const int idx = p->idx[i];
        if (idx >= nbuf || !buffers[idx]) { res.ok = false; res.error = "buffer " + std::to_string(idx) + " not bound"; return res; }
        // a pointer parameter takes the address; a by-value struct is read from the (managed) buffer
        params[i] = p->ptr[i] ? (void*)&buffers[idx] : buffers[idx];
    }
    size_t shmem = 0;
    for (size_t s : dd.tg_lengths) shmem += s;
    mllm__cu_res r = d->a.LaunchKernel(p->fn, dd.tgs[0], dd.tgs[1], dd.tgs[2], dd.tpt[0], dd.tpt[1], dd.tpt[2],
                                       (unsigned)shmem, d->stream, params, nullptr);
    if (!r) r = d->a.StreamSynchronize(d->stream);
    if (r) { res.ok = false; res.error = std::string(kernel) + ": " + mllm__cu_err(&d->a, r); }
    return res;
}
}  // namespace msl
