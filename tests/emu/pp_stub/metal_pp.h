// Predefined macros of the Metal compiler, visible to #if in kernels during preprocessing.
#pragma once
#ifndef __METAL_VERSION__
#define __METAL_VERSION__ 310
#endif
#define __HAVE_SIMDGROUP_MATRIX__ 1
#define __HAVE_BFLOAT__ 1
#define __METAL_MSL_EMULATOR__ 1
