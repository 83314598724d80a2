/* Baton compat header: the EGL typedefs that cudaEGL.h needs, so that the CUDA
 * interop headers parse without an EGL SDK. Used only by cuda-abi/regen.sh. */
#ifndef BATON_COMPAT_EGL_H
#define BATON_COMPAT_EGL_H
#include <stdint.h>
typedef int32_t EGLint;
#endif
