// A fake Metal framework for Linux x86-64 (tests/metal/fake_metal.cpp + objc_msgsend_x86_64.S): the
// Objective-C runtime calls metalllm.h makes (objc_msgSend, objc_getClass, sel_registerName, autorelease
// pools) and the Metal/Foundation objects it talks to, executing dispatches on the MSL emulator.  The
// header's real Metal code (MLLM__HAVE_METAL, compiled here with -DMLLM__FORCE_METAL_STUBS against
// tests/emu/objc_stub) runs on it unchanged.  This is the test's handle on the fake: settings (limits,
// injected failures) and what it saw (object counts, command buffers, waits, API misuse).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

struct fake_metal_settings {
    unsigned max_threads = 1024;       // every pipeline's maxTotalThreadsPerThreadgroup
    unsigned simd_width = 32;          // every pipeline's threadExecutionWidth
    size_t max_buffer = (size_t)1 << 34;   // the device's maxBufferLength
    bool apple7 = true;                // supportsFamily:MTLGPUFamilyApple7 (and later)
    bool refuse_nocopy = false;        // newBufferWithBytesNoCopy:... returns nil
    bool nil_queue = false;            // newCommandQueue returns nil
    bool nil_command_buffer = false;   // commandBuffer returns nil
    bool nil_encoder = false;          // computeCommandEncoderWithDispatchType: returns nil
    std::string compile_error;         // non-empty: newLibraryWithSource fails with this message
    bool reverse_groups = true;        // dispatches between two barriers run last-first (any order is legal)
};

struct fake_metal_stats {
    uint64_t objects_created = 0;      // Objective-C objects made (alloc, new*, Create, autoreleased results)
    uint64_t objects_live = 0;         // of those, not yet released to zero
    uint64_t command_buffers = 0, commits = 0, waits = 0, dispatches = 0, barriers = 0;
    uint64_t libraries_from_source = 0, libraries_from_data = 0, pipelines = 0;
    int last_fast_math = -1;           // fastMathEnabled of the last library compiled from source (-1: default, YES)
    std::vector<std::string> misuse;   // API misuse: messages to released objects, autoreleases without a pool,
                                       // over-limit dispatches, releasing a buffer a pending command uses...
};

fake_metal_settings& fake_metal_config();   // takes effect for objects made afterwards
const fake_metal_stats& fake_metal_stat();
void fake_metal_reset();                    // zero the stats, default settings (objects must all be released)
std::string fake_metal_live_report();       // "NSString x2, MTLBuffer x1" for what is still alive
