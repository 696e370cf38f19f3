/* Stand-in for Apple's <dispatch/dispatch.h>: the two calls metalllm.h makes to hand an embedded
   .metallib to -[MTLDevice newLibraryWithData:error:] (implemented by tests/metal/fake_metal.cpp). */
#ifndef MLLM_DISPATCH_STUB_H
#define MLLM_DISPATCH_STUB_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef struct dispatch_data_s *dispatch_data_t;
typedef struct dispatch_queue_s *dispatch_queue_t;
#define DISPATCH_DATA_DESTRUCTOR_DEFAULT NULL   /* copy the bytes */
dispatch_data_t dispatch_data_create(const void *buffer, size_t size, dispatch_queue_t queue, void *destructor);
void dispatch_release(void *object);
#ifdef __cplusplus
}
#endif
#endif
