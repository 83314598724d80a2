/* Baton compat header: the EGL extension handle typedefs that cudaEGL.h needs.
 * Used only by cuda-abi/regen.sh. */
#ifndef BATON_COMPAT_EGLEXT_H
#define BATON_COMPAT_EGLEXT_H
typedef void *EGLImageKHR;
typedef void *EGLStreamKHR;
typedef void *EGLSyncKHR;
#endif
