/* Baton compat header: CUDA 13 ships cudaProfilerTypedefs.h but not cudaProfiler.h.
 * This provides the one type the typedefs need (CUoutput_mode, the profiler output
 * format of the removed cuProfilerInitialize). Used only by cuda-abi/regen.sh. */
#ifndef BATON_COMPAT_CUDAPROFILER_H
#define BATON_COMPAT_CUDAPROFILER_H
#include <cuda.h>
typedef enum CUoutput_mode_enum {
    CU_OUT_KEY_VALUE_PAIR = 0x00,
    CU_OUT_CSV = 0x01
} CUoutput_mode;
#endif
