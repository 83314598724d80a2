/* Baton compat header: the VDPAU typedefs that cudaVDPAU.h expects its includer to
 * provide (normally from <vdpau/vdpau.h>). Used only by cuda-abi/regen.sh. */
#ifndef BATON_COMPAT_VDPAU_TYPES_H
#define BATON_COMPAT_VDPAU_TYPES_H
#include <stdint.h>
typedef uint32_t VdpDevice;
typedef uint32_t VdpVideoSurface;
typedef uint32_t VdpOutputSurface;
typedef uint32_t VdpFuncId;
typedef int VdpStatus; /* a C enum in vdpau.h; same size and passing convention */
typedef VdpStatus VdpGetProcAddress(VdpDevice device, VdpFuncId function_id, void **function_pointer);
#endif
