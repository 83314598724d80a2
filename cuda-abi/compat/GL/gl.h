/* Baton compat header: the two OpenGL typedefs that cudaGL.h needs, so that the
 * CUDA interop headers parse without an OpenGL SDK. Used only by cuda-abi/regen.sh. */
#ifndef BATON_COMPAT_GL_H
#define BATON_COMPAT_GL_H
typedef unsigned int GLenum;
typedef unsigned int GLuint;
#endif
