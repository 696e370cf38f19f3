// Interface between kernel code (the shim, compiled into every kernel object) and the emulator runtime.
#pragma once
#include <stddef.h>
#include <stdint.h>
namespace msl {
// What a kernel parameter is bound to (tests/emu/mslc.py writes these into the launch trampolines).
enum Bind { B_BUFFER, B_TGMEM, B_TPIG, B_TGPIG, B_TPITG, B_TPTG, B_TGPG, B_TPG, B_TIITG, B_TIISG,
            B_SGITG, B_SGPTG, B_TPSG, B_TGPIG_LINEAR };
namespace rt {
struct Ids {   // built-in ids of the running kernel thread
    uint32_t tpig[3], tgpig[3], tpitg[3], tptg[3], tgpg[3], tpg[3];
    uint32_t tiitg, tiisg, sgitg, sgptg, tpsg;
};
// A SIMD-group collective: every participating lane deposits `insz` bytes; once all lanes of the
// simdgroup are blocked, fn computes every lane's `outsz`-byte result. mask = participating lanes.
typedef void (*CollFn)(const unsigned char* in, size_t insz, unsigned char* out, size_t outsz, uint32_t mask,
                       const char* file, int line);
constexpr size_t kMaxPayload = 64;
const Ids& ids();
void barrier(int flags, const char* file, int line);
void collective(const void* in, size_t insz, void* out, size_t outsz, CollFn fn, const char* file, int line);
void* tg_var(const void* key, size_t size, size_t align);   // threadgroup variable of the running threadgroup
void* tg_param(int index);                                  // [[threadgroup(i)]]
void* buffer(int index);                                    // [[buffer(i)]]
void warn(const char* file, int line, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void* fc_slot(int index);                                   // function constant value bits
bool fc_defined(int index);
void register_kernel(const char* name, void (*thunk)());
}  // namespace rt
}  // namespace msl
