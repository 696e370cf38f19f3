/* Stand-in for Apple's <objc/runtime.h>, just enough to type-check metalllm.h's Metal backend on
   Linux (compiled with -DMLLM__FORCE_METAL_STUBS -Itests/emu/objc_stub; never linked). */
#ifndef MLLM_OBJC_STUB_RUNTIME_H
#define MLLM_OBJC_STUB_RUNTIME_H
#ifdef __cplusplus
extern "C" {
#endif
typedef struct objc_object *id;
typedef struct objc_selector *SEL;
typedef struct objc_class *Class;
SEL sel_registerName(const char *name);
id objc_getClass(const char *name);   /* (Apple declares the return type as id too) */
#ifdef __cplusplus
}
#endif
#endif
