// The fake Metal framework (see fake_metal.h): a small Objective-C runtime and the Metal / Foundation
// classes metalllm.h uses, each method an ordinary C++ function with exactly the C prototype of the
// metal-cpp signature (../shared/reference/metal-api; tests/metal/check_sends.py checks the METHOD
// lines below against it, and each METHOD static_asserts that its function has the prototype it names).
// Dispatches run on the MSL emulator (the kernels linked into the test); a command buffer runs at
// waitUntilCompleted, after every buffer committed before it, dispatches between two memory barriers in
// reverse order (a concurrent encoder may run them in any order).
//
// Object model: every object starts with its class pointer (isa) and carries a retain count; release
// to zero frees its resources but keeps the object as a zombie, so a later message or release to it is
// reported (stats.misuse) instead of corrupting memory. Autorelease pools are a per-thread stack with
// Apple's pop semantics (popping a token pops every pool pushed after it).
#include "fake_metal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "msl_host.hpp"
#include "objc/runtime.h"
#include "dispatch/dispatch.h"

// ---- the C types of the metal-cpp signatures (x86-64)
typedef unsigned long NSUInteger;
typedef long NSInteger;
typedef signed char BOOL;                          // ObjC BOOL on x86-64
typedef void *Block;                               // a block parameter (only nil supported)
struct MTLSize { NSUInteger width, height, depth; };
typedef void (*IMP)(void);

struct FClass;
struct objc_object { FClass *isa; };
namespace {
struct FObj : objc_object {   // (polymorphic: the vtable pointer sits before isa; id points at isa)
    virtual ~FObj() {}
    long rc = 1;
    bool dead = false;
    void (*dtor)(FObj *) = nullptr;                // frees resources when the count reaches zero
};
}  // namespace
struct FClass {
    std::string name;
    FClass *super = nullptr;
    FClass *meta = nullptr;                        // class methods
    std::unordered_map<SEL, IMP> methods;
    FObj class_object;                             // what objc_getClass returns (isa = meta)
};

namespace {
std::recursive_mutex mu;                           // the engine calls from one thread; cheap insurance
fake_metal_settings settings;
fake_metal_stats stats;
std::vector<std::unique_ptr<FObj>> all_objects;    // zombies are kept until fake_metal_reset
std::map<std::string, FClass *> classes;
std::vector<std::unique_ptr<FClass>> class_storage;   // classes and metaclasses live as long as the program
std::map<std::string, std::unique_ptr<std::string>> selectors;
thread_local std::vector<FObj *> pool_objs;
thread_local std::vector<size_t> pool_marks;

void misuse(const std::string &what) {
    std::lock_guard<std::recursive_mutex> l(mu);
    if (stats.misuse.size() < 100) stats.misuse.push_back(what);
}
const char *sel_name(SEL s) { return (const char *)s; }

FClass *class_named(const char *name, const char *super) {
    FClass *&c = classes[name];
    if (!c) {
        class_storage.emplace_back(new FClass);
        c = class_storage.back().get();
        c->name = name;
        class_storage.emplace_back(new FClass);
        c->meta = class_storage.back().get();
        c->meta->name = std::string("meta ") + name;
        c->class_object.isa = c->meta;
        c->class_object.rc = 1L << 40;
        if (super) {
            c->super = class_named(super, nullptr);
            c->meta->super = c->super->meta;
        }
    }
    return c;
}

template <class T> T *make(const char *cls) {      // a new object, +1
    T *o = new T;
    o->isa = classes.at(cls);
    std::lock_guard<std::recursive_mutex> l(mu);
    all_objects.emplace_back(o);
    stats.objects_created++;
    stats.objects_live++;
    return o;
}
FObj *autorelease(FObj *o) {
    if (!o) return o;
    if (pool_marks.empty()) misuse(o->isa->name + " autoreleased with no pool in place (leaks on Apple's runtime)");
    else pool_objs.push_back(o);
    return o;
}
void release_obj(FObj *o) {
    if (!o) return;
    if (o->dead) { misuse("release of a released " + o->isa->name); return; }
    if (--o->rc == 0) {
        o->dead = true;
        if (o->dtor) o->dtor(o);
        std::lock_guard<std::recursive_mutex> l(mu);
        stats.objects_live--;
    }
}
template <class T> T *as(id o, const char *cls) {   // checked downcast of a message argument
    FObj *f = static_cast<FObj *>(o);
    if (!f) return nullptr;
    if (f->dead) misuse("a released " + f->isa->name + " passed as an argument");
    for (FClass *c = f->isa; c; c = c->super)
        if (c->name == cls) return static_cast<T *>(f);
    misuse(std::string("passed a ") + f->isa->name + " where " + cls + " is expected");
    return nullptr;
}

// ---- registration: METHOD(class, "-sel" or "+sel", function, return type, parameter types...)
void add_method(const char *cls, const char *sel, IMP imp) {
    FClass *c = classes.at(cls);
    (sel[0] == '+' ? c->meta : c)->methods[sel_registerName(sel + 1)] = imp;
}
#define METHOD(cls, sel, fn, R, ...)                                                                        \
    do {                                                                                                    \
        static_assert(std::is_same<decltype(&fn), R (*)(id, SEL, ##__VA_ARGS__)>::value, cls " " sel);     \
        add_method(cls, sel, (IMP)(void *)&fn);                                                             \
    } while (0)

// ---- NSObject / NSString / NSError
struct FString : FObj { std::string s; };
struct FError : FObj { std::string text; };

id obj_alloc(id self, SEL) {   // +alloc: the class object is the receiver
    FClass *meta = static_cast<FObj *>(self)->isa;
    for (auto &kv : classes)
        if (kv.second->meta == meta) {
            if (kv.first == "NSString") return make<FString>("NSString");
            if (kv.first == "MTLCompileOptions") break;
            misuse("+alloc of " + kv.first);
            return nullptr;
        }
    return nullptr;   // (MTLCompileOptions registers its own +alloc)
}
id obj_init(id self, SEL) { return self; }
id obj_retain(id self, SEL) {
    static_cast<FObj *>(self)->rc++;
    return self;
}
void obj_release(id self, SEL) { release_obj(static_cast<FObj *>(self)); }
FString *new_string(const std::string &s) {   // +1
    FString *o = make<FString>("NSString");
    o->s = s;
    return o;
}
id str_initWithBytes(id self, SEL, const void *bytes, NSUInteger length, NSUInteger encoding) {
    FString *o = as<FString>(self, "NSString");
    if (encoding != 4) misuse("initWithBytes:length:encoding: with an encoding other than UTF-8");
    if (!bytes && length) { release_obj(o); return nullptr; }
    o->s.assign((const char *)bytes, length);
    return o;
}
const char *str_UTF8String(id self, SEL) { return as<FString>(self, "NSString")->s.c_str(); }
id error_localizedDescription(id self, SEL) {
    return autorelease(new_string(as<FError>(self, "NSError")->text));
}
FError *new_error(const std::string &text) {   // autoreleased, as NSError ** out-parameters are
    FError *e = make<FError>("NSError");
    e->text = text;
    autorelease(e);
    return e;
}

// ---- MTLCompileOptions
struct FOptions : FObj { int fast_math = -1; };
id options_alloc(id, SEL) { return make<FOptions>("MTLCompileOptions"); }
void options_setFastMathEnabled(id self, SEL, BOOL on) { as<FOptions>(self, "MTLCompileOptions")->fast_math = on ? 1 : 0; }

// ---- buffers
struct FBuffer : FObj {
    char *mem = nullptr;
    size_t length = 0;
    bool nocopy = false, priv = false;
};
void buffer_dtor(FObj *o) {
    FBuffer *b = static_cast<FBuffer *>(o);
    if (!b->nocopy) msl::free_guarded(b->mem);
    b->mem = nullptr;
}
void *buffer_contents(id self, SEL) {
    FBuffer *b = as<FBuffer>(self, "MTLBuffer");
    return b->priv ? nullptr : b->mem;
}
NSUInteger buffer_length(id self, SEL) { return as<FBuffer>(self, "MTLBuffer")->length; }

// ---- library, function, pipeline
struct FLibrary : FObj { std::set<std::string> kernels; };
struct FFunction : FObj { std::string name; };
struct FPipeline : FObj { std::string name; NSUInteger max_threads = 0, width = 0; };
id library_newFunctionWithName(id self, SEL, id name) {
    FLibrary *lib = as<FLibrary>(self, "MTLLibrary");
    FString *n = as<FString>(name, "NSString");
    if (!lib || !n || !lib->kernels.count(n->s)) return nullptr;
    FFunction *f = make<FFunction>("MTLFunction");
    f->name = n->s;
    return f;
}
NSUInteger pipeline_maxTotalThreads(id self, SEL) { return as<FPipeline>(self, "MTLComputePipelineState")->max_threads; }
NSUInteger pipeline_threadExecutionWidth(id self, SEL) { return as<FPipeline>(self, "MTLComputePipelineState")->width; }

// ---- command queue, command buffer, encoder
struct FOp {                  // a dispatch (pipe) or a memory barrier (no pipe)
    FPipeline *pipe = nullptr;
    std::vector<std::pair<FBuffer *, size_t>> bufs;   // binding i: buffer + offset, or (nullptr, bytes index)
    std::vector<size_t> tg;
    MTLSize tgs{}, tpt{};
};
struct FCommandBuffer;
struct FEncoder : FObj {
    FCommandBuffer *cb = nullptr;
    FPipeline *pipe = nullptr;
    std::vector<std::pair<FBuffer *, size_t>> bind;
    std::vector<size_t> tg;
    bool ended = false;
};
struct FCommandBuffer : FObj {
    std::vector<FOp> ops;
    std::vector<void *> bytes;            // setBytes copies, freed when the buffer completes
    NSUInteger status = 0;                // MTLCommandBufferStatusNotEnqueued
    std::string error;
    FError *err = nullptr;                // made at completion on failure (+1, released with the buffer)
    bool has_encoder = false, encoding = false;
};
struct FQueue : FObj { std::vector<FCommandBuffer *> pending; };   // committed, retained until run
void cb_dtor(FObj *o) {
    FCommandBuffer *cb = static_cast<FCommandBuffer *>(o);
    for (void *p : cb->bytes) msl::free_guarded(p);
    cb->bytes.clear();
    release_obj(cb->err);
    cb->err = nullptr;
}
std::map<FCommandBuffer *, FQueue *> cb_queue;

id queue_commandBuffer(id self, SEL) {
    FQueue *q = as<FQueue>(self, "MTLCommandQueue");
    if (settings.nil_command_buffer) return nullptr;
    FCommandBuffer *cb = make<FCommandBuffer>("MTLCommandBuffer");
    cb->dtor = cb_dtor;
    cb_queue[cb] = q;
    stats.command_buffers++;
    return autorelease(cb);
}
id cb_computeCommandEncoderWithDispatchType(id self, SEL, NSUInteger type) {
    FCommandBuffer *cb = as<FCommandBuffer>(self, "MTLCommandBuffer");
    if (settings.nil_encoder) return nullptr;
    if (type != 0 && type != 1) misuse("unknown MTLDispatchType");
    if (cb->status != 0 || cb->encoding) { misuse("encoder on a committed command buffer or while another encodes"); return nullptr; }
    FEncoder *e = make<FEncoder>("MTLComputeCommandEncoder");
    e->cb = cb;
    cb->encoding = cb->has_encoder = true;
    return autorelease(e);
}
FEncoder *live_encoder(id self, const char *what) {
    FEncoder *e = as<FEncoder>(self, "MTLComputeCommandEncoder");
    if (e && e->ended) { misuse(std::string(what) + " after endEncoding"); return nullptr; }
    return e;
}
void enc_setBuffer(id self, SEL, id buffer, NSUInteger offset, NSUInteger index) {
    FEncoder *e = live_encoder(self, "setBuffer");
    FBuffer *b = as<FBuffer>(buffer, "MTLBuffer");
    if (!e) return;
    if (index >= 31) { misuse("setBuffer: index >= 31"); return; }
    if (b && offset > b->length) misuse("setBuffer: offset past the buffer's end");
    if (e->bind.size() <= index) e->bind.resize(index + 1);
    e->bind[index] = {b, offset};
}
void enc_setBytes(id self, SEL, const void *data, NSUInteger length, NSUInteger index) {
    FEncoder *e = live_encoder(self, "setBytes");
    if (!e) return;
    if (index >= 31 || length > 4096) { misuse("setBytes: index >= 31 or more than 4 KB"); return; }
    void *p = msl::alloc_guarded(length);
    memcpy(p, data, length);
    e->cb->bytes.push_back(p);
    if (e->bind.size() <= index) e->bind.resize(index + 1);
    e->bind[index] = {nullptr, e->cb->bytes.size() - 1};
}
void enc_setThreadgroupMemoryLength(id self, SEL, NSUInteger length, NSUInteger index) {
    FEncoder *e = live_encoder(self, "setThreadgroupMemoryLength");
    if (!e) return;
    if (length % 16) misuse("threadgroup memory length not a multiple of 16");
    if (e->tg.size() <= index) e->tg.resize(index + 1);
    e->tg[index] = length;
}
void enc_setComputePipelineState(id self, SEL, id state) {
    FEncoder *e = live_encoder(self, "setComputePipelineState");
    if (e) e->pipe = as<FPipeline>(state, "MTLComputePipelineState");
}
void enc_dispatchThreadgroups(id self, SEL, MTLSize tgs, MTLSize tpt) {
    FEncoder *e = live_encoder(self, "dispatchThreadgroups");
    if (!e) return;
    if (!e->pipe) { misuse("dispatch without a pipeline"); return; }
    if (tpt.width * tpt.height * tpt.depth > e->pipe->max_threads) {   // Metal runs nothing (or faults)
        misuse("dispatch of " + e->pipe->name + " with " + std::to_string(tpt.width * tpt.height * tpt.depth) +
               " threads per threadgroup, over the pipeline's maxTotalThreadsPerThreadgroup " + std::to_string(e->pipe->max_threads));
        return;
    }
    FOp op;
    op.pipe = e->pipe;
    op.bufs = e->bind;
    op.tg = e->tg;
    op.tgs = tgs;
    op.tpt = tpt;
    e->cb->ops.push_back(op);
}
void enc_memoryBarrierWithScope(id self, SEL, NSUInteger scope) {
    FEncoder *e = live_encoder(self, "memoryBarrierWithScope");
    if (!e) return;
    if (!(scope & 1)) misuse("memory barrier without MTLBarrierScopeBuffers");
    e->cb->ops.push_back(FOp());
    stats.barriers++;
}
void enc_endEncoding(id self, SEL) {
    FEncoder *e = live_encoder(self, "endEncoding");
    if (!e) return;
    e->ended = true;
    e->cb->encoding = false;
}

void run(FCommandBuffer *cb) {
    size_t start = 0;
    cb->status = 4;   // completed, unless a dispatch fails
    while (start < cb->ops.size() && cb->status == 4) {
        size_t end = start;
        while (end < cb->ops.size() && cb->ops[end].pipe) end++;
        for (size_t k = 0; k < end - start && cb->status == 4; k++) {
            const FOp &op = cb->ops[settings.reverse_groups ? end - 1 - k : start + k];
            std::vector<void *> ptrs;
            for (const auto &bd : op.bufs) {
                if (!bd.first && bd.second < cb->bytes.size()) ptrs.push_back(cb->bytes[bd.second]);
                else if (!bd.first) ptrs.push_back(nullptr);
                else if (bd.first->dead) {
                    misuse("a buffer was released before the command buffer using it completed");
                    ptrs.push_back(nullptr);
                } else ptrs.push_back(bd.first->mem + bd.second);
            }
            msl::Dispatch ds;
            ds.tgs[0] = (uint32_t)op.tgs.width; ds.tgs[1] = (uint32_t)op.tgs.height; ds.tgs[2] = (uint32_t)op.tgs.depth;
            ds.tpt[0] = (uint32_t)op.tpt.width; ds.tpt[1] = (uint32_t)op.tpt.height; ds.tpt[2] = (uint32_t)op.tpt.depth;
            ds.tg_lengths = op.tg;
            msl::Result r = msl::dispatch(op.pipe->name.c_str(), ds, ptrs.data(), (int)ptrs.size());
            stats.dispatches++;
            if (!r.ok || !r.warnings.empty()) {
                cb->status = 5;   // MTLCommandBufferStatusError
                cb->error = op.pipe->name + ": " + (r.ok ? r.warnings[0] : r.error);
            }
        }
        start = end + 1;
    }
    if (cb->status == 5) {
        cb->err = make<FError>("NSError");
        cb->err->text = cb->error;
    }
}
void cb_commit(id self, SEL) {
    FCommandBuffer *cb = as<FCommandBuffer>(self, "MTLCommandBuffer");
    if (cb->status != 0) { misuse("commit of a committed command buffer"); return; }
    if (cb->encoding) misuse("commit while an encoder has not ended encoding");
    cb->status = 2;   // committed
    cb->rc++;         // the queue keeps it until it has run
    cb_queue.at(cb)->pending.push_back(cb);
    stats.commits++;
}
void cb_waitUntilCompleted(id self, SEL) {
    FCommandBuffer *cb = as<FCommandBuffer>(self, "MTLCommandBuffer");
    stats.waits++;
    if (cb->status == 0) { misuse("waitUntilCompleted on a command buffer never committed (hangs on Apple's)"); return; }
    FQueue *q = cb_queue.at(cb);
    while (cb->status == 2) {   // the queue runs in commit order up to cb
        FCommandBuffer *next = q->pending.front();
        q->pending.erase(q->pending.begin());
        run(next);
        cb_queue.erase(next);
        release_obj(next);
    }
}
NSUInteger cb_status(id self, SEL) { return as<FCommandBuffer>(self, "MTLCommandBuffer")->status; }
id cb_error(id self, SEL) { return as<FCommandBuffer>(self, "MTLCommandBuffer")->err; }

// ---- the device
struct FDevice : FObj {};
id device_newCommandQueue(id self, SEL) {
    (void)as<FDevice>(self, "MTLDevice");
    return settings.nil_queue ? nullptr : make<FQueue>("MTLCommandQueue");
}
BOOL device_supportsFamily(id, SEL, NSInteger family) {
    if (family >= 1001 && family <= 1009) return settings.apple7 || family < 1007;   // MTLGPUFamilyApple1..9
    return 0;
}
NSUInteger device_maxBufferLength(id, SEL) { return settings.max_buffer; }
id device_newBufferWithLength(id, SEL, NSUInteger length, NSUInteger options) {
    if (length == 0 || length > settings.max_buffer) return nullptr;
    if ((options >> 4) != 0 && (options >> 4) != 2) misuse("buffer storage mode other than shared or private");
    char *m = (char *)msl::alloc_guarded(length);
    if (!m) return nullptr;
    FBuffer *b = make<FBuffer>("MTLBuffer");
    b->dtor = buffer_dtor;
    b->mem = m;
    b->length = length;
    b->priv = (options >> 4) == 2;
    return b;
}
id device_newBufferWithBytesNoCopy(id, SEL, const void *ptr, NSUInteger length, NSUInteger options, Block deallocator) {
    if (settings.refuse_nocopy || length == 0 || length > settings.max_buffer) return nullptr;
    if (((uintptr_t)ptr | length) % 4096) { misuse("newBufferWithBytesNoCopy: address or length not page-aligned"); return nullptr; }
    if (deallocator) misuse("newBufferWithBytesNoCopy: deallocator blocks are not supported by the fake");
    if ((options >> 4) != 0) misuse("newBufferWithBytesNoCopy: not shared storage");
    FBuffer *b = make<FBuffer>("MTLBuffer");
    b->dtor = buffer_dtor;
    b->mem = (char *)ptr;
    b->length = length;
    b->nocopy = true;
    return b;
}
FLibrary *library_with_all_kernels() {
    FLibrary *lib = make<FLibrary>("MTLLibrary");
    for (const std::string &k : msl::kernel_names()) lib->kernels.insert(k);
    stats.libraries_from_source++;
    return lib;
}
// "Compiling" = taking the kernels the emulator built (kernels/*.metal, as linked into the test).
id device_newLibraryWithSource(id self, SEL, id source, id options, id *error) {
    (void)as<FDevice>(self, "MTLDevice");
    FString *src = as<FString>(source, "NSString");
    FOptions *opt = as<FOptions>(options, "MTLCompileOptions");
    stats.last_fast_math = opt ? opt->fast_math : -1;
    std::string err = settings.compile_error;
    if (!src || src->s.find("kernel void") == std::string::npos) err = "no kernels in the source";
    if (!err.empty()) {
        if (error) *error = new_error("Compilation failed: " + err);
        return nullptr;
    }
    FLibrary *lib = library_with_all_kernels();
    return lib;
}
struct FData { std::string bytes; };
id device_newLibraryWithData(id, SEL, dispatch_data_t data, id *error) {
    const FData *d = (const FData *)data;
    if (!d || d->bytes.compare(0, 4, "MTLB") != 0) {   // a metallib starts with its magic
        if (error) *error = new_error("Invalid library file");
        return nullptr;
    }
    FLibrary *lib = library_with_all_kernels();
    stats.libraries_from_source--;
    stats.libraries_from_data++;
    return lib;
}
id device_newComputePipelineStateWithFunction(id, SEL, id function, id *error) {
    FFunction *f = as<FFunction>(function, "MTLFunction");
    if (!f || !msl::has_kernel(f->name.c_str())) {
        if (error) *error = new_error("no such function");
        return nullptr;
    }
    FPipeline *p = make<FPipeline>("MTLComputePipelineState");
    p->name = f->name;
    p->max_threads = settings.max_threads;
    p->width = settings.simd_width;
    stats.pipelines++;
    return p;
}

void register_classes() {
    static bool done = false;
    if (done) return;
    done = true;
    class_named("NSObject", nullptr);
    for (const char *c : {"NSString", "NSError", "MTLCompileOptions", "MTLDevice", "MTLCommandQueue", "MTLCommandBuffer",
                          "MTLComputeCommandEncoder", "MTLBuffer", "MTLLibrary", "MTLFunction", "MTLComputePipelineState"})
        class_named(c, "NSObject");
    METHOD("NSObject", "+alloc", obj_alloc, id);
    METHOD("NSObject", "-init", obj_init, id);
    METHOD("NSObject", "-retain", obj_retain, id);
    METHOD("NSObject", "-release", obj_release, void);
    METHOD("NSString", "-initWithBytes:length:encoding:", str_initWithBytes, id, const void *, NSUInteger, NSUInteger);
    METHOD("NSString", "-UTF8String", str_UTF8String, const char *);
    METHOD("NSError", "-localizedDescription", error_localizedDescription, id);
    METHOD("MTLCompileOptions", "+alloc", options_alloc, id);
    METHOD("MTLCompileOptions", "-setFastMathEnabled:", options_setFastMathEnabled, void, BOOL);
    METHOD("MTLDevice", "-newCommandQueue", device_newCommandQueue, id);
    METHOD("MTLDevice", "-supportsFamily:", device_supportsFamily, BOOL, NSInteger);
    METHOD("MTLDevice", "-maxBufferLength", device_maxBufferLength, NSUInteger);
    METHOD("MTLDevice", "-newBufferWithLength:options:", device_newBufferWithLength, id, NSUInteger, NSUInteger);
    METHOD("MTLDevice", "-newBufferWithBytesNoCopy:length:options:deallocator:", device_newBufferWithBytesNoCopy, id,
           const void *, NSUInteger, NSUInteger, Block);
    METHOD("MTLDevice", "-newLibraryWithSource:options:error:", device_newLibraryWithSource, id, id, id, id *);
    METHOD("MTLDevice", "-newLibraryWithData:error:", device_newLibraryWithData, id, dispatch_data_t, id *);
    METHOD("MTLDevice", "-newComputePipelineStateWithFunction:error:", device_newComputePipelineStateWithFunction, id, id, id *);
    METHOD("MTLLibrary", "-newFunctionWithName:", library_newFunctionWithName, id, id);
    METHOD("MTLComputePipelineState", "-maxTotalThreadsPerThreadgroup", pipeline_maxTotalThreads, NSUInteger);
    METHOD("MTLComputePipelineState", "-threadExecutionWidth", pipeline_threadExecutionWidth, NSUInteger);
    METHOD("MTLBuffer", "-contents", buffer_contents, void *);
    METHOD("MTLBuffer", "-length", buffer_length, NSUInteger);
    METHOD("MTLCommandQueue", "-commandBuffer", queue_commandBuffer, id);
    METHOD("MTLCommandBuffer", "-computeCommandEncoderWithDispatchType:", cb_computeCommandEncoderWithDispatchType, id, NSUInteger);
    METHOD("MTLCommandBuffer", "-commit", cb_commit, void);
    METHOD("MTLCommandBuffer", "-waitUntilCompleted", cb_waitUntilCompleted, void);
    METHOD("MTLCommandBuffer", "-status", cb_status, NSUInteger);
    METHOD("MTLCommandBuffer", "-error", cb_error, id);
    METHOD("MTLComputeCommandEncoder", "-setBuffer:offset:atIndex:", enc_setBuffer, void, id, NSUInteger, NSUInteger);
    METHOD("MTLComputeCommandEncoder", "-setBytes:length:atIndex:", enc_setBytes, void, const void *, NSUInteger, NSUInteger);
    METHOD("MTLComputeCommandEncoder", "-setThreadgroupMemoryLength:atIndex:", enc_setThreadgroupMemoryLength, void, NSUInteger,
           NSUInteger);
    METHOD("MTLComputeCommandEncoder", "-setComputePipelineState:", enc_setComputePipelineState, void, id);
    METHOD("MTLComputeCommandEncoder", "-dispatchThreadgroups:threadsPerThreadgroup:", enc_dispatchThreadgroups, void, MTLSize,
           MTLSize);
    METHOD("MTLComputeCommandEncoder", "-memoryBarrierWithScope:", enc_memoryBarrierWithScope, void, NSUInteger);
    METHOD("MTLComputeCommandEncoder", "-endEncoding", enc_endEncoding, void);
}
struct Init { Init() { std::lock_guard<std::recursive_mutex> l(mu); register_classes(); } } init_;

long zombie_imp(void) { return 0; }
}  // namespace

// ---- the Objective-C runtime's C functions
extern "C" {
SEL sel_registerName(const char *name) {
    std::lock_guard<std::recursive_mutex> l(mu);
    std::unique_ptr<std::string> &s = selectors[name];
    if (!s) s.reset(new std::string(name));
    return (SEL)s->c_str();
}
id objc_getClass(const char *name) {
    std::lock_guard<std::recursive_mutex> l(mu);
    register_classes();
    auto it = classes.find(name);
    return it == classes.end() ? nullptr : &it->second->class_object;
}
// objc_msgSend (objc_msgsend_x86_64.S) calls this with the receiver and selector.
IMP fake_objc_lookup(id self, SEL op) {
    FObj *o = static_cast<FObj *>(self);
    if (o->dead) {
        misuse(std::string("-[") + o->isa->name + " " + sel_name(op) + "] sent to a released object");
        return (IMP)(void *)&zombie_imp;
    }
    for (FClass *c = o->isa; c; c = c->super) {
        auto it = c->methods.find(op);
        if (it != c->methods.end()) return it->second;
    }
    fprintf(stderr, "fake Metal: unrecognized selector %s sent to a %s\n", sel_name(op), o->isa->name.c_str());
    abort();
}
void *objc_autoreleasePoolPush(void) {
    pool_marks.push_back(pool_objs.size());
    return (void *)(uintptr_t)pool_marks.size();
}
void objc_autoreleasePoolPop(void *token) {
    const size_t k = (size_t)(uintptr_t)token;
    if (k == 0 || k > pool_marks.size()) { misuse("objc_autoreleasePoolPop of a pool not on the stack"); return; }
    const size_t from = pool_marks[k - 1];
    pool_marks.resize(k - 1);
    while (pool_objs.size() > from) {
        FObj *o = pool_objs.back();
        pool_objs.pop_back();
        release_obj(o);
    }
}
id MTLCreateSystemDefaultDevice(void) {
    std::lock_guard<std::recursive_mutex> l(mu);
    register_classes();
    return make<FDevice>("MTLDevice");
}
dispatch_data_t dispatch_data_create(const void *buffer, size_t size, dispatch_queue_t, void *destructor) {
    if (destructor) misuse("dispatch_data_create: only DISPATCH_DATA_DESTRUCTOR_DEFAULT (copy) is supported");
    FData *d = new FData;
    d->bytes.assign((const char *)buffer, size);
    return (dispatch_data_t)d;
}
void dispatch_release(void *object) { delete (FData *)object; }
}

// ---- the test's handle
fake_metal_settings &fake_metal_config() { return settings; }
const fake_metal_stats &fake_metal_stat() { return stats; }
std::string fake_metal_live_report() {
    std::map<std::string, int> n;
    for (const auto &o : all_objects)
        if (!o->dead) n[o->isa->name]++;
    std::string s;
    for (const auto &kv : n) s += (s.empty() ? "" : ", ") + kv.first + " x" + std::to_string(kv.second);
    return s;
}
void fake_metal_reset() {
    std::lock_guard<std::recursive_mutex> l(mu);
    for (const auto &o : all_objects)
        if (!o->dead && o->dtor) { o->dead = true; o->dtor(o.get()); }
    all_objects.clear();
    cb_queue.clear();
    stats = fake_metal_stats();
    settings = fake_metal_settings();
}

// For tests written in C (tests/metal/test_metal_gpu.c on the fake).
extern "C" long fake_metal_c_live_objects(void) { return (long)stats.objects_live; }
extern "C" long fake_metal_c_misuse(void) {
    for (const std::string &m : stats.misuse) fprintf(stderr, "fake Metal: misuse: %s\n", m.c_str());
    return (long)stats.misuse.size();
}
