// Host side of the MSL emulator: what a test includes instead of Metal.framework.
// A dispatch runs every thread of a Metal compute grid on the CPU (one cooperative fiber per
// thread, threadgroups spread over OS threads) and reports, instead of crashing or hanging:
// out-of-bounds accesses to guarded buffers, divergent barriers, threads that returned before a
// barrier the others wait at, spin-waits (watchdog) and non-uniform SIMD-group operations.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string>
#include <utility>
#include <vector>

namespace msl {
// Order in which the fibers of a threadgroup run between two blocking points (barrier, simd op).
enum Sched {
    SCHED_FORWARD,      // thread 0, 1, 2, ... each runs until it blocks
    SCHED_REVERSE,      // last thread first
    SCHED_RANDOM,       // a fresh random permutation per pass (Dispatch::seed)
    SCHED_SG_FORWARD,   // one simdgroup runs all the way to its next threadgroup barrier, then the next
    SCHED_SG_REVERSE,
    SCHED_SG_RANDOM,
    SCHED_COUNT
};
// Initial content of threadgroup memory (on a GPU it is whatever the previous threadgroup left).
enum Poison { POISON_NONE, POISON_NAN, POISON_ZERO, POISON_GARBAGE };

struct Dispatch {
    uint32_t tgs[3] = {1, 1, 1};        // threadgroups per grid (dispatchThreadgroups:)
    uint32_t tpt[3] = {1, 1, 1};        // threads per threadgroup
    std::vector<size_t> tg_lengths;     // setThreadgroupMemoryLength:atIndex: for [[threadgroup(i)]]
    int policy = SCHED_FORWARD;         // Sched
    int poison = POISON_NAN;            // Poison (NaN = all bits set: NaN for half/float/bfloat, ~0 for ints)
    uint32_t seed = 1;                  // SCHED_*RANDOM order and POISON_GARBAGE bytes
    bool strict = true;                 // divergent barrier / early exit = error (else a warning)
    unsigned workers = 0;               // OS threads (0: MSL_WORKERS or all cores, at most 4)
    size_t stack_kb = 128;              // per kernel thread
    std::vector<std::pair<int, uint64_t>> function_constants;   // index -> value bits
};

struct Result {
    bool ok = true;
    std::string error;                  // first error (with kernel thread ids and source line)
    std::vector<std::string> warnings;  // deduplicated
    double seconds = 0;
    uint64_t barriers = 0;              // threadgroup barriers completed (summed over threadgroups)
    uint64_t simd_ops = 0;              // SIMD-group collectives resolved
};

// Runs `kernel` (its name or [[host_name]]); buffers[i] binds [[buffer(i)]].
Result dispatch(const char* kernel, const Dispatch& d, void* const* buffers, int nbuf);
bool has_kernel(const char* kernel);
std::vector<std::string> kernel_names();

// Device memory for kernels: the end of the block touches a PROT_NONE page (reads/writes past
// it are reported as out-of-bounds by dispatch), the start is 16-byte aligned; the up to 15 slack
// bytes between the requested size and the guard page are filled with a canary that dispatch
// checks afterwards (writes there are reported; reads see 0xFF bytes = NaN). Zero-filled.
void* alloc_guarded(size_t bytes);
void free_guarded(void* p);                   // (NULL ok)
size_t guarded_size(const void* p);           // requested size of the block containing p from p on; 0 if none

const char* sched_name(int policy);
const char* poison_name(int poison);
}  // namespace msl
