/* Stand-in for Apple's <objc/message.h> (see runtime.h). As with OBJC_OLD_DISPATCH_PROTOTYPES=0,
   objc_msgSend takes no arguments: every call must cast it to the method's exact prototype. */
#ifndef MLLM_OBJC_STUB_MESSAGE_H
#define MLLM_OBJC_STUB_MESSAGE_H
#include "runtime.h"
#ifdef __cplusplus
extern "C" {
#endif
void objc_msgSend(void);
#ifdef __cplusplus
}
#endif
#endif
