/* Input of cuda-abi/regen.sh: every CUDA 13.0 driver header Baton takes types and
 * signatures from. The compat/ directory stands in for third-party SDK headers. */
#include <vdpau/vdpau.h>
#include <cuda.h>
#include <cudaGL.h>
#include <cudaEGL.h>
#include <cudaVDPAU.h>
#include <cudaProfilerTypedefs.h>
#include <cudaTypedefs.h>
#include <cudaGLTypedefs.h>
#include <cudaEGLTypedefs.h>
#include <cudaVDPAUTypedefs.h>
