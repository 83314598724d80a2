//! `cuGetErrorString`: a short description of each result code. The common codes carry the
//! wording CUDA users know; every other code defined by `cuda.h` is described by its name.

use cuda_abi::CUresult;
use std::ffi::CStr;

pub(crate) fn describe(r: CUresult) -> Option<&'static CStr> {
    Some(match r.0 {
        0 => c"no error",
        1 => c"invalid argument",
        2 => c"out of memory",
        3 => c"initialization error",
        4 => c"driver shutting down",
        34 => c"CUDA driver is a stub library",
        46 => c"CUDA-capable device(s) is/are busy or unavailable",
        100 => c"no CUDA-capable device is detected",
        101 => c"invalid device ordinal",
        200 => c"device kernel image is invalid",
        201 => c"invalid device context",
        209 => c"no kernel image is available for execution on the device",
        218 => c"a PTX JIT compilation failed",
        300 => c"invalid source",
        301 => c"file not found",
        400 => c"invalid resource handle",
        500 => c"named symbol not found",
        600 => c"device not ready",
        700 => c"an illegal memory access was encountered",
        701 => c"too many resources requested for launch",
        702 => c"the launch timed out and was terminated",
        719 => c"unspecified launch failure",
        801 => c"operation not supported",
        999 => c"unknown error",
        _ => return r.name(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_named_and_unknown_codes() {
        assert_eq!(
            describe(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
            Some(c"out of memory")
        );
        assert_eq!(
            describe(CUresult::CUDA_ERROR_ALREADY_MAPPED),
            Some(c"CUDA_ERROR_ALREADY_MAPPED")
        );
        assert_eq!(describe(CUresult(123_456)), None);
    }
}
