/* Writes the PTX that metalllm.h unpacks for the driver (mllm__cuda_ptx_unpack) to stdout, so that
   tests/cuda/static_checks.sh can check it equals gen/cudac.py's and give it to ptxas. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"

int main(void) {
#if MLLM__HAVE_CUDA
    char *ptx = mllm__cuda_ptx_unpack();
    if (!ptx) { fprintf(stderr, "ptx_dump: unpacking failed\n"); return 1; }
    fputs(ptx, stdout);
    MLLM_FREE(ptx);
    return 0;
#else
    fprintf(stderr, "ptx_dump: this build has no CUDA backend\n");
    return 1;
#endif
}
