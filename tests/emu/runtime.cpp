// runtime.cpp - runs a Metal compute dispatch on the CPU.
//
// Threadgroups are spread over a few OS threads (workers). Inside a threadgroup every kernel thread
// is a cooperative fiber; a fiber runs until it reaches a threadgroup barrier or a SIMD-group
// operation, so the order in which fibers run (the schedule) is ours to choose. When every fiber is
// blocked the scheduler resolves SIMD-group operations (all lanes of the simdgroup present) and
// barriers (all threads at the same barrier), and reports what would hang or be undefined on a GPU.
//
// Built without -fsanitize=thread even in the TSan build: it only tells TSan, through the fiber and
// happens-before annotations, which kernel threads are ordered by barriers.
#include "msl_host.hpp"
#include "msl_rt.hpp"

#include <signal.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#if !defined(__x86_64__)
#define MSL_UCONTEXT 1
#endif
#ifdef MSL_UCONTEXT
#include <ucontext.h>
#endif
#ifdef MSL_TSAN
#include <sanitizer/tsan_interface.h>
#define TSAN(x) x
#else
#define TSAN(x)
#endif

#ifndef MSL_UCONTEXT
// Context switch: saves the callee-saved registers and the FP control words on the current stack,
// stores the stack pointer in *save and continues on stack `to`.
extern "C" void msl_switch(void** save, void* to);
extern "C" void msl_fiber_start();
asm(R"(
    .text
    .globl msl_switch
    .type msl_switch,@function
msl_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size msl_switch, .-msl_switch
    .globl msl_fiber_start
    .type msl_fiber_start,@function
msl_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size msl_fiber_start, .-msl_fiber_start
)");
#endif

// float -> bfloat conversion helper that clang calls; older libgcc lacks it (weak: compiler-rt wins).
extern "C" __attribute__((weak)) __bf16 __truncsfbf2(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t h = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40)                  // quiet NaN
                                                 : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);   // nearest even
    return __builtin_bit_cast(__bf16, h);
}

namespace msl {
namespace {
enum State { RUNNABLE, AT_BARRIER, AT_SIMD, DONE };
constexpr size_t kPage = 4096, kArena = 64 * 1024, kTgLimit = 32 * 1024;

struct Kernel { void (*thunk)(); int defs; };
std::map<std::string, Kernel>& registry() {
    static std::map<std::string, Kernel> r;
    return r;
}

// ---------------------------------------------------------------- guarded buffers
struct Block { char* user; size_t bytes; char* map; size_t maplen; };
std::mutex g_blocks_mu;
std::map<uintptr_t, Block> g_blocks;   // by user address
const Block* find_block(const std::map<uintptr_t, Block>& m, uintptr_t a) {   // block whose user range contains a
    auto it = m.upper_bound(a);
    if (it == m.begin()) return nullptr;
    --it;
    return a < it->first + it->second.bytes ? &it->second : nullptr;
}

struct Worker;
struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    size_t stack_size = 0;
#ifdef MSL_UCONTEXT
    ucontext_t uc;
#endif
    TSAN(void* tsan = nullptr;)
    State state = RUNNABLE;
    rt::Ids ids{};
    uint32_t nbar = 0, nsimd = 0;
    const char* file = nullptr;
    int line = 0;
    rt::CollFn fn = nullptr;
    size_t insz = 0, outsz = 0;
    alignas(16) unsigned char in[rt::kMaxPayload], out[rt::kMaxPayload];
    Worker* w = nullptr;
};

struct Job {   // one dispatch
    const Dispatch* d;
    void (*thunk)();
    void* const* buffers;
    int nbuf;
    std::map<uintptr_t, Block> blocks;   // snapshot, read by the signal handler
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> barriers{0}, simd_ops{0};
    // progress for the watchdog, a cache line per worker: one shared counter bumped at every fiber
    // switch bounced between the workers' cores and took a quarter of the emulator's time
    struct alignas(64) Progress { std::atomic<uint64_t> switches{0}; std::atomic<Fiber*> last{nullptr}; };
    static constexpr unsigned kMaxWorkers = 64;
    Progress progress[kMaxWorkers];
    std::atomic<unsigned> workers{0};
    std::mutex mu;
    std::string error;
    std::set<std::string> warnings;
};

struct Worker {
    Job* job;
    Job::Progress* progress;   // this worker's slot (written by it alone)
    std::vector<Fiber> fibers;
    std::vector<uint32_t> order, sg_order;   // schedule scratch, kept here: a fault unwinds past locals
    Fiber* cur = nullptr;
    void* sched_sp = nullptr;
#ifdef MSL_UCONTEXT
    ucontext_t sched_uc;
#endif
    sigjmp_buf escape;   // a fault in kernel code jumps back here
#ifdef MSL_TSAN
    // Happens-before objects. Barrier objects alternate by the barrier's parity: a fiber already
    // past barrier k must not release into the object that the fibers leaving barrier k acquire.
    void* tsan_self = nullptr;
    char hb_bar[2] = {}, hb_simd[32][2] = {}, hb_start = 0, hb_done = 0, hb_arena = 0;
#endif
    char* arena = nullptr;
    size_t arena_used = 0;
    std::vector<std::pair<const void*, void*>> tg_vars;
    std::vector<void*> tg_params;
    uint64_t rng = 0;
    bool failed = false;
};
thread_local Worker* tl_worker = nullptr;


uint64_t next_rand(uint64_t& s) {   // xorshift64*
    s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
}
// the lanes' payloads of SIMD-group operations; under TSan a byte copy it does not see (memcpy is
// intercepted even from uninstrumented code)
void raw_copy(void* d, const void* s, size_t n) {
#ifdef MSL_TSAN
    volatile unsigned char* dd = (volatile unsigned char*)d;
    const volatile unsigned char* ss = (const volatile unsigned char*)s;
    for (size_t i = 0; i < n; i++) dd[i] = ss[i];
#else
    memcpy(d, s, n);
#endif
}
std::string describe(const rt::Ids& i) {
    char b[160];
    snprintf(b, sizeof b, "threadgroup (%u,%u,%u) thread (%u,%u,%u) [simdgroup %u lane %u]", i.tgpig[0], i.tgpig[1],
             i.tgpig[2], i.tpitg[0], i.tpitg[1], i.tpitg[2], i.sgitg, i.tiisg);
    return b;
}
void fail(Worker* w, const std::string& msg) {
    std::lock_guard<std::mutex> g(w->job->mu);
    if (!w->job->failed.exchange(true)) w->job->error = msg;
    w->failed = true;
}

// ---------------------------------------------------------------- fibers
void block(Fiber* f);
void fiber_main(Fiber* f) {
    TSAN(__tsan_acquire(&f->w->hb_start);)
    f->w->job->thunk();
    f->state = DONE;
    TSAN(__tsan_release(&f->w->hb_done);)
    block(f);
    __builtin_trap();   // a finished fiber is never resumed
}
#ifdef MSL_UCONTEXT
void uc_entry(unsigned lo, unsigned hi) { fiber_main((Fiber*)(((uintptr_t)hi << 32) | lo)); }
#endif
void fiber_reset(Fiber* f) {
#ifdef MSL_UCONTEXT
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, (void (*)())uc_entry, 2, (unsigned)(uintptr_t)f, (unsigned)((uintptr_t)f >> 32));
#else
    // a frame as msl_switch leaves it: FP control words, r15..r12, rbx, rbp, return address
    uint64_t* top = (uint64_t*)(((uintptr_t)f->stack + f->stack_size) & ~(uintptr_t)15) - 1;
    top[0] = (uint64_t)&msl_fiber_start;
    top[-1] = 0;               // rbp
    top[-2] = 0;               // rbx
    top[-3] = (uint64_t)f;     // r12 -> argument
    top[-4] = (uint64_t)&fiber_main;   // r13 -> entry
    top[-5] = 0;               // r14
    top[-6] = 0;               // r15
    uint32_t* csr = (uint32_t*)&top[-7];
    csr[0] = 0x1F80;           // MXCSR default
    csr[1] = 0x037F;           // x87 control word default
    f->sp = &top[-7];
#endif
}
void run_fiber(Worker* w, Fiber* f) {
    w->cur = f;
    w->progress->switches.store(w->progress->switches.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    w->progress->last.store(f, std::memory_order_relaxed);
    TSAN(__tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);)
#ifdef MSL_UCONTEXT
    swapcontext(&w->sched_uc, &f->uc);
#else
    msl_switch(&w->sched_sp, f->sp);
#endif
    w->cur = nullptr;
}
void block(Fiber* f) {   // back to the scheduler
    TSAN(__tsan_switch_to_fiber(f->w->tsan_self, __tsan_switch_to_fiber_no_sync);)
#ifdef MSL_UCONTEXT
    swapcontext(&f->uc, &f->w->sched_uc);
#else
    msl_switch(&f->sp, f->w->sched_sp);
#endif
}

void poison(Worker* w, void* p, size_t n) {
    switch (w->job->d->poison) {
    case POISON_NAN: memset(p, 0xFF, n); break;
    case POISON_ZERO: memset(p, 0, n); break;
    case POISON_GARBAGE:
        for (size_t i = 0; i < n; i++) ((unsigned char*)p)[i] = (unsigned char)next_rand(w->rng);
        break;
    default: break;   // whatever the previous threadgroup left, as on a GPU
    }
}
void* arena_alloc(Worker* w, size_t size, size_t align, const char* what) {
    size_t off = (w->arena_used + align - 1) & ~(align - 1);
    if (off + size > kArena) {
        fail(w, std::string("threadgroup memory exhausted (") + what + ")");
        return w->arena;
    }
    if (off + size > kTgLimit && w->arena_used <= kTgLimit)
        rt::warn(nullptr, 0, "threadgroup memory use %zu bytes exceeds the 32 KiB of Apple GPUs (%s)", off + size, what);
    w->arena_used = off + size;
    void* p = w->arena + off;
    poison(w, p, size);
    return p;
}

// ---------------------------------------------------------------- the scheduler of one threadgroup
// Resolves the pending SIMD-group operation of simdgroup s: the lanes waiting at the same call site
// take part; the others (returned, at a barrier, at another operation) are inactive.
bool resolve_simd(Worker* w, uint32_t s, uint32_t n) {
    uint32_t lo = s * 32, hi = std::min(n, lo + 32), mask = 0, live = 0;
    Fiber* lead = nullptr;
    for (uint32_t l = lo; l < hi; l++) {
        Fiber& f = w->fibers[l];
        if (f.state != DONE) live |= 1u << (l - lo);
        if (f.state != AT_SIMD) continue;
        if (!lead) lead = &f;
        if (f.fn == lead->fn && f.line == lead->line && f.file == lead->file) mask |= 1u << (l - lo);
    }
    if (!lead) return false;
    if (mask != live)
        rt::warn(lead->file, lead->line, "SIMD-group operation reached by a subset of the live lanes (lanes %08x of %08x)", mask, live);
    unsigned char in[32 * rt::kMaxPayload], out[32 * rt::kMaxPayload];
    for (uint32_t l = lo; l < hi; l++)
        if ((mask >> (l - lo)) & 1) raw_copy(in + (l - lo) * lead->insz, w->fibers[l].in, lead->insz);
    lead->fn(in, lead->insz, out, lead->outsz, mask, lead->file, lead->line);
    for (uint32_t l = lo; l < hi; l++)
        if ((mask >> (l - lo)) & 1) {
            Fiber& f = w->fibers[l];
            raw_copy(f.out, out + (l - lo) * lead->outsz, lead->outsz);
            f.state = RUNNABLE;
        }
    w->job->simd_ops.fetch_add(1, std::memory_order_relaxed);
    return true;
}

bool run_threadgroup(Worker* w, uint32_t gx, uint32_t gy, uint32_t gz) {
    const Dispatch& d = *w->job->d;
    const uint32_t X = d.tpt[0], Y = d.tpt[1], n = d.tpt[0] * d.tpt[1] * d.tpt[2], nsg = (n + 31) / 32;
    const uint64_t linear = gx + (uint64_t)d.tgs[0] * (gy + (uint64_t)d.tgs[1] * gz);
    w->rng = (d.seed + 1) * 0x9E3779B97F4A7C15ull ^ (linear + 1) * 0xD1B54A32D192ED03ull;
    w->arena_used = 0;
    w->tg_vars.clear();
    w->tg_params.clear();
    for (size_t i = 0; i < d.tg_lengths.size(); i++)
        w->tg_params.push_back(arena_alloc(w, d.tg_lengths[i], 16, "[[threadgroup(i)]] argument"));
    for (uint32_t l = 0; l < n; l++) {
        Fiber& f = w->fibers[l];
        f.state = RUNNABLE;
        f.w = w;
        f.nbar = f.nsimd = 0;
        rt::Ids& i = f.ids;
        const uint32_t t[3] = {l % X, (l / X) % Y, l / (X * Y)}, g[3] = {gx, gy, gz};
        for (int k = 0; k < 3; k++) {
            i.tpitg[k] = t[k];
            i.tgpig[k] = g[k];
            i.tptg[k] = d.tpt[k];
            i.tgpg[k] = d.tgs[k];
            i.tpig[k] = g[k] * d.tpt[k] + t[k];
            i.tpg[k] = d.tgs[k] * d.tpt[k];
        }
        i.tiitg = l;
        i.tiisg = l % 32;
        i.sgitg = l / 32;
        i.sgptg = nsg;
        i.tpsg = 32;
        fiber_reset(&f);
    }
    TSAN(__tsan_release(&w->hb_start);)
    std::vector<uint32_t>& order = w->order;
    std::vector<uint32_t>& sg_order = w->sg_order;
    order.resize(n);
    sg_order.resize(nsg);
    for (uint32_t l = 0; l < n; l++) order[l] = l;
    for (uint32_t s = 0; s < nsg; s++) sg_order[s] = s;
    const bool in_order = d.policy == SCHED_FORWARD || d.policy == SCHED_SG_FORWARD;   // (no sort needed)
    auto permute = [&](std::vector<uint32_t>& v) {
        if (d.policy == SCHED_REVERSE || d.policy == SCHED_SG_REVERSE) std::reverse(v.begin(), v.end());
        if (d.policy == SCHED_RANDOM || d.policy == SCHED_SG_RANDOM)
            for (size_t k = v.size() - 1; k > 0; k--) std::swap(v[k], v[next_rand(w->rng) % (k + 1)]);
    };
    auto step = [&](uint32_t l) {   // false: the dispatch failed
        Fiber& f = w->fibers[l];
        if (f.state == RUNNABLE) run_fiber(w, &f);
        return !(w->failed || w->job->failed);
    };
    const bool by_simdgroup = d.policy >= SCHED_SG_FORWARD;
    for (;;) {
        if (by_simdgroup) {   // each simdgroup runs to its next threadgroup barrier before the next starts
            if (!in_order) {
                std::sort(sg_order.begin(), sg_order.end());
                permute(sg_order);
            }
            for (uint32_t s : sg_order) do {
                    for (uint32_t l = s * 32; l < std::min(n, s * 32 + 32); l++)
                        if (!step(l)) return false;
                } while (resolve_simd(w, s, n));
        } else {
            if (!in_order) {
                std::sort(order.begin(), order.end());
                permute(order);
            }
            for (uint32_t l : order)
                if (!step(l)) return false;
            bool progress = false;
            for (uint32_t s = 0; s < nsg; s++) progress |= resolve_simd(w, s, n);
            if (progress) continue;
        }
        // every fiber is at a barrier or done
        uint32_t ndone = 0, nbar = 0;
        Fiber *b0 = nullptr, *bx = nullptr, *e0 = nullptr;
        for (uint32_t l = 0; l < n; l++) {
            Fiber& f = w->fibers[l];
            if (f.state == DONE) {
                ndone++;
                if (!e0) e0 = &f;
            } else if (f.state == AT_BARRIER) {
                nbar++;
                if (!b0) b0 = &f;
                else if (!bx && (f.line != b0->line || f.file != b0->file || f.nbar != b0->nbar)) bx = &f;
            }
        }
        if (ndone == n) {
            TSAN(__tsan_acquire(&w->hb_done);)
            return true;
        }
        if (nbar + ndone != n) {
            fail(w, "emulator: internal scheduler error");
            return false;
        }
        char msg[600];
        if (bx) {
            snprintf(msg, sizeof msg, "divergent threadgroup_barrier: %s waits at %s:%d (its barrier #%u) while %s waits at %s:%d (#%u)",
                     describe(b0->ids).c_str(), b0->file, b0->line, b0->nbar, describe(bx->ids).c_str(), bx->file, bx->line, bx->nbar);
            if (d.strict) { fail(w, msg); return false; }
            rt::warn(nullptr, 0, "%s", msg);
        }
        if (ndone) {
            snprintf(msg, sizeof msg, "threadgroup_barrier at %s:%d waited for by %u threads, but %u threads of the threadgroup "
                     "already returned (e.g. %s): early exit before a barrier hangs or is undefined on the GPU",
                     b0->file, b0->line, nbar, ndone, describe(e0->ids).c_str());
            if (d.strict) { fail(w, msg); return false; }
            rt::warn(nullptr, 0, "%s", msg);
        }
        w->job->barriers.fetch_add(1, std::memory_order_relaxed);
        for (uint32_t l = 0; l < n; l++)
            if (w->fibers[l].state == AT_BARRIER) w->fibers[l].state = RUNNABLE;
    }
}

// ---------------------------------------------------------------- faults in kernel code
// A fault (out-of-bounds access to a guard page, stack overflow, integer division by zero) inside a
// kernel fiber fails the dispatch with a description and jumps back to the worker.
void on_fault(int sig, siginfo_t* si, void*) {
    Worker* w = tl_worker;
    if (!w || !w->cur) {   // not kernel code: let the default action happen
        signal(sig, SIG_DFL);
        return;
    }
    char msg[600];
    const uintptr_t a = (uintptr_t)si->si_addr;
    const char* what = sig == SIGFPE ? "integer division by zero or overflow" : sig == SIGBUS ? "bus error" : "invalid memory access";
    int len = snprintf(msg, sizeof msg, "%s at address %p by %s", what, si->si_addr, describe(w->cur->ids).c_str());
    if (sig == SIGSEGV || sig == SIGBUS) {
        // which guarded buffer does the address fall just after (or before)?
        for (auto& kv : w->job->blocks) {
            const Block& b = kv.second;
            const uintptr_t end = (uintptr_t)b.user + b.bytes, map_end = (uintptr_t)b.map + b.maplen;
            const bool after = a >= end && a < map_end, before = a >= (uintptr_t)b.map && a < (uintptr_t)b.user;
            if (!after && !before) continue;
            int idx = -1;
            for (int i = 0; i < w->job->nbuf; i++) {
                uintptr_t p = (uintptr_t)w->job->buffers[i];
                if (p >= (uintptr_t)b.user && p <= end) { idx = i; break; }
            }
            len += snprintf(msg + len, sizeof msg - len, ": out of bounds, %s of a %zu-byte buffer%s",
                            after ? "past the end" : "before the start", b.bytes, "");
            if (idx >= 0) {
                long off = (long)(a - (uintptr_t)w->job->buffers[idx]);
                snprintf(msg + len, sizeof msg - len, " bound at [[buffer(%d)]] (byte offset %ld from the binding)", idx, off);
            }
            break;
        }
        const uintptr_t stk = (uintptr_t)w->cur->stack;
        if (a >= stk - kPage && a < stk) snprintf(msg + len, sizeof msg - len, ": kernel thread stack overflow (Dispatch::stack_kb)");
    }
    fail(w, msg);
    TSAN(__tsan_switch_to_fiber(w->tsan_self, __tsan_switch_to_fiber_no_sync);)
    w->cur = nullptr;
    siglongjmp(w->escape, 1);
}
void install_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
        sigaction(SIGFPE, &sa, nullptr);
    });
}

void worker_main(Job* job) {
    const Dispatch& d = *job->d;
    Worker w;
    w.job = job;
    w.progress = &job->progress[job->workers.fetch_add(1) % Job::kMaxWorkers];
    const uint32_t n = d.tpt[0] * d.tpt[1] * d.tpt[2];
    w.fibers.resize(n);
    const size_t ss = (d.stack_kb ? d.stack_kb : 128) * 1024, span = ss + kPage;
    char* stacks = (char*)mmap(nullptr, span * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    w.arena = (char*)mmap(nullptr, kArena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    // the signal handler needs a stack of its own (a fiber stack may be the one that overflowed)
    stack_t alt{}, old_alt{};
    alt.ss_size = 64 * 1024;
    alt.ss_sp = mmap(nullptr, alt.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sigaltstack(&alt, &old_alt);
    if (stacks == MAP_FAILED || w.arena == MAP_FAILED || alt.ss_sp == MAP_FAILED) {
        fail(&w, "emulator: out of memory for fiber stacks");
        return;
    }
    for (uint32_t l = 0; l < n; l++) {
        char* base = stacks + l * span;
        mprotect(base, kPage, PROT_NONE);   // guard page below each fiber stack
        w.fibers[l].stack = base + kPage;
        w.fibers[l].stack_size = ss;
        TSAN(w.fibers[l].tsan = __tsan_create_fiber(0);)
    }
    TSAN(w.tsan_self = __tsan_get_current_fiber();)
    tl_worker = &w;
    const uint64_t total = (uint64_t)d.tgs[0] * d.tgs[1] * d.tgs[2];
    if (sigsetjmp(w.escape, 1) == 0) {
        for (;;) {
            const uint64_t t = job->next.fetch_add(1);
            if (t >= total || job->failed) break;
            if (!run_threadgroup(&w, (uint32_t)(t % d.tgs[0]), (uint32_t)(t / d.tgs[0] % d.tgs[1]),
                                 (uint32_t)(t / ((uint64_t)d.tgs[0] * d.tgs[1]))))
                break;
        }
    }
    tl_worker = nullptr;
#ifdef MSL_TSAN
    // Order everything the fibers did before what follows the dispatch, also when it was aborted
    // midway (a switch without the no_sync flag is a happens-before edge).
    for (auto& f : w.fibers) {
        __tsan_switch_to_fiber(f.tsan, 0);
        __tsan_switch_to_fiber(w.tsan_self, 0);
        __tsan_destroy_fiber(f.tsan);
    }
#endif
    sigaltstack(&old_alt, nullptr);
    munmap(alt.ss_sp, alt.ss_size);
    munmap(stacks, span * n);
    munmap(w.arena, kArena);
}

bool slack_intact(const Block& b) {
    const unsigned char* p = (const unsigned char*)b.user + b.bytes;
    const unsigned char* end = (const unsigned char*)b.map + b.maplen - kPage;
    for (; p < end; p++)
        if (*p != 0xFF) return false;
    return true;
}
}  // namespace

// ---------------------------------------------------------------- entry points for kernel code
namespace rt {
const Ids& ids() { return tl_worker->cur->ids; }
void barrier(int, const char* file, int line) {
    Fiber* f = tl_worker->cur;
    f->state = AT_BARRIER;
    f->file = file;
    f->line = line;
    TSAN(char* o = &tl_worker->hb_bar[f->nbar & 1]; __tsan_release(o);)
    f->nbar++;
    block(f);
    TSAN(__tsan_acquire(o);)
}
void collective(const void* in, size_t insz, void* out, size_t outsz, CollFn fn, const char* file, int line) {
    Fiber* f = tl_worker->cur;
    raw_copy(f->in, in, insz);
    f->insz = insz;
    f->outsz = outsz;
    f->fn = fn;
    f->file = file;
    f->line = line;
    f->state = AT_SIMD;
    TSAN(char* o = &tl_worker->hb_simd[f->ids.sgitg % 32][f->nsimd & 1]; __tsan_release(o);)
    f->nsimd++;
    block(f);
    TSAN(__tsan_acquire(o);)
    raw_copy(out, f->out, outsz);
}
void* tg_var(const void* key, size_t size, size_t align) {
    Worker* w = tl_worker;
    for (auto& kv : w->tg_vars)
        if (kv.first == key) {
            TSAN(__tsan_acquire(&w->hb_arena);)
            return kv.second;
        }
    void* p = arena_alloc(w, size, align < 16 ? 16 : align, "threadgroup variable");
    w->tg_vars.push_back({key, p});
    TSAN(__tsan_release(&w->hb_arena);)
    return p;
}
void* tg_param(int i) { return i >= 0 && i < (int)tl_worker->tg_params.size() ? tl_worker->tg_params[i] : nullptr; }
void* buffer(int i) { return i >= 0 && i < tl_worker->job->nbuf ? tl_worker->job->buffers[i] : nullptr; }
void warn(const char* file, int line, const char* fmt, ...) {
    char b[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    std::string s = file ? std::string(file) + ":" + std::to_string(line) + ": " + b : std::string(b);
    Job* job = tl_worker->job;
    std::lock_guard<std::mutex> g(job->mu);
    job->warnings.insert(s);
}
static uint64_t g_fc[256];
static bool g_fc_defined[256];
void* fc_slot(int i) { return &g_fc[i & 255]; }
bool fc_defined(int i) { return g_fc_defined[i & 255]; }
void register_kernel(const char* name, void (*thunk)()) {
    Kernel& k = registry()[name];
    k.thunk = thunk;
    k.defs++;
}
}  // namespace rt

// ---------------------------------------------------------------- host API
bool has_kernel(const char* name) { return registry().count(name) != 0; }
std::vector<std::string> kernel_names() {
    std::vector<std::string> v;
    for (auto& kv : registry()) v.push_back(kv.first);
    return v;
}
const char* sched_name(int p) {
    static const char* n[] = {"forward", "reverse", "random", "sg-forward", "sg-reverse", "sg-random"};
    return p >= 0 && p < SCHED_COUNT ? n[p] : "?";
}
const char* poison_name(int p) {
    static const char* n[] = {"none", "nan", "zero", "garbage"};
    return p >= 0 && p <= POISON_GARBAGE ? n[p] : "?";
}

Result dispatch(const char* name, const Dispatch& d0, void* const* buffers, int nbuf) {
    Result r;
    Dispatch d = d0;
    if (const char* e = getenv("MSL_SCHED")) d.policy = atoi(e);   // a whole run under another schedule
    if (const char* e = getenv("MSL_POISON")) d.poison = atoi(e);
    auto it = registry().find(name ? name : "");
    const uint64_t n = (uint64_t)d.tpt[0] * d.tpt[1] * d.tpt[2], total = (uint64_t)d.tgs[0] * d.tgs[1] * d.tgs[2];
    char msg[200];
    if (it == registry().end()) snprintf(msg, sizeof msg, "no kernel named '%s'", name ? name : "(null)");
    else if (it->second.defs > 1) snprintf(msg, sizeof msg, "kernel name '%s' is defined by %d entry points", name, it->second.defs);
    else if (n == 0 || n > 1024) snprintf(msg, sizeof msg, "threads per threadgroup %llu: must be 1..1024", (unsigned long long)n);
    else if (total == 0) snprintf(msg, sizeof msg, "empty grid");
    else if (d.policy < 0 || d.policy >= SCHED_COUNT) snprintf(msg, sizeof msg, "bad schedule %d", d.policy);
    else msg[0] = 0;
    if (msg[0]) {
        r.ok = false;
        r.error = msg;
        return r;
    }
    install_handlers();
    memset(rt::g_fc, 0, sizeof rt::g_fc);   // (dispatches run one at a time)
    memset(rt::g_fc_defined, 0, sizeof rt::g_fc_defined);
    for (auto& kv : d.function_constants) {
        rt::g_fc[kv.first & 255] = kv.second;
        rt::g_fc_defined[kv.first & 255] = true;
    }
    Job job;
    job.d = &d;
    job.thunk = it->second.thunk;
    job.buffers = buffers;
    job.nbuf = nbuf;
    {
        std::lock_guard<std::mutex> g(g_blocks_mu);
        job.blocks = g_blocks;
    }
    unsigned nw = d.workers;
    if (!nw) nw = getenv("MSL_WORKERS") ? (unsigned)atoi(getenv("MSL_WORKERS")) : std::min(4u, std::thread::hardware_concurrency());
    nw = (unsigned)std::max<uint64_t>(1, std::min<uint64_t>(nw ? nw : 1, total));
    // watchdog: a kernel thread that never reaches a barrier or SIMD-group operation (a spin-wait on
    // memory another thread writes) never gives the scheduler control back
    // (it waits on a condition variable, not in sleeps: the dispatch's end wakes it at once; a sleep of
    // 20 ms still running at the join cost every short dispatch that long, half of the kernel tests' time)
    std::mutex dog_mu;
    std::condition_variable dog_cv;
    bool done = false;
    const double limit = getenv("MSL_WATCHDOG_S") ? atof(getenv("MSL_WATCHDOG_S")) : 60.0;
    auto switches = [&job] {
        uint64_t sum = 0;
        for (const Job::Progress& p : job.progress) sum += p.switches.load(std::memory_order_relaxed);
        return sum;
    };
    std::thread dog([&] {
        uint64_t last = switches();
        auto t = std::chrono::steady_clock::now();
        std::unique_lock<std::mutex> lk(dog_mu);
        while (!done) {
            dog_cv.wait_for(lk, std::chrono::milliseconds(20));
            if (done) break;
            const uint64_t now = switches();
            if (now != last) {
                last = now;
                t = std::chrono::steady_clock::now();
            } else if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() > limit) {
                Fiber* f = nullptr;
                for (const Job::Progress& p : job.progress)
                    if (!f) f = p.last.load(std::memory_order_relaxed);
                fprintf(stderr, "[msl] watchdog: kernel '%s' made no progress for %.0f s; last running: %s "
                        "(a spin-wait on memory written by another thread? it hangs here and often on GPUs)\n",
                        name, limit, f ? describe(f->ids).c_str() : "?");
                _exit(124);
            }
        }
    });
    const auto t0 = std::chrono::steady_clock::now();
    if (nw == 1) worker_main(&job);
    else {
        std::vector<std::thread> ts;
        for (unsigned i = 0; i < nw; i++) ts.emplace_back(worker_main, &job);
        for (auto& t : ts) t.join();
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    {
        std::lock_guard<std::mutex> g(dog_mu);
        done = true;
    }
    dog_cv.notify_one();
    dog.join();
    // writes into the slack between a buffer's end and its guard page
    for (auto& kv : job.blocks)
        if (!slack_intact(kv.second) && !job.failed) {
            snprintf(msg, sizeof msg, "out-of-bounds write past the end of a %zu-byte buffer (into its alignment slack)", kv.second.bytes);
            job.failed = true;
            job.error = msg;
        }
    for (auto& kv : job.blocks)   // re-arm the canary for the next dispatch
        memset(kv.second.user + kv.second.bytes, 0xFF, (size_t)(kv.second.map + kv.second.maplen - kPage - (kv.second.user + kv.second.bytes)));
    r.ok = !job.failed;
    r.error = job.error;
    r.warnings.assign(job.warnings.begin(), job.warnings.end());
    r.barriers = job.barriers;
    r.simd_ops = job.simd_ops;
    return r;
}

void* alloc_guarded(size_t bytes) {
    const size_t user = (bytes + 15) & ~(size_t)15, span = (user + kPage - 1) / kPage * kPage;
    // [guard page][.. data, slack ..][guard page]; the data ends where the slack (< 16 bytes) begins
    const size_t maplen = span + 2 * kPage;
    char* m = (char*)mmap(nullptr, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    mprotect(m, kPage, PROT_NONE);
    mprotect(m + kPage + span, kPage, PROT_NONE);
    char* p = m + kPage + span - user;
    memset(p + bytes, 0xFF, user - bytes);
    std::lock_guard<std::mutex> g(g_blocks_mu);
    g_blocks[(uintptr_t)p] = Block{p, bytes, m, maplen};
    return p;
}
void free_guarded(void* p) {
    if (!p) return;
    Block b;
    {
        std::lock_guard<std::mutex> g(g_blocks_mu);
        auto it = g_blocks.find((uintptr_t)p);
        if (it == g_blocks.end()) return;
        b = it->second;
        g_blocks.erase(it);
    }
    munmap(b.map, b.maplen);
}
size_t guarded_size(const void* p) {
    std::lock_guard<std::mutex> g(g_blocks_mu);
    const Block* b = find_block(g_blocks, (uintptr_t)p);
    return b ? (size_t)(b->user + b->bytes - (const char*)p) : 0;
}
}  // namespace msl
