//! CUDA 13.0 driver ABI types, generated from `cuda.h` (and the GL/EGL/VDPAU interop headers) by
//! `regen.sh`; see `README.md`.
//!
//! C enums are `#[repr(transparent)]` newtypes over their integer with associated constants
//! (`CUresult::CUDA_SUCCESS`, `CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE`), so any value a
//! client passes is a valid Rust value. Handles (`CUcontext`, `CUstream`...) are raw pointers to
//! opaque structs, as in C. Only types and constants are here: the function signatures live in
//! the shim's generated export layer.

mod bindings;
mod result_names;

pub use bindings::*;

// The device pointer of the current ABI (`CUdeviceptr_v2`) is 64 bits wide.
const _: fn(CUdeviceptr) -> u64 = |p| p;

impl CUresult {
    /// `CUDA_SUCCESS`?
    #[inline]
    pub const fn is_ok(self) -> bool {
        self.0 == CUresult::CUDA_SUCCESS.0
    }

    /// Anything but `CUDA_SUCCESS`?
    #[inline]
    pub const fn is_err(self) -> bool {
        !self.is_ok()
    }

    /// `Ok(())` for `CUDA_SUCCESS`, else `Err(self)`, so that `?` works on driver results.
    #[inline]
    pub const fn result(self) -> Result<(), CUresult> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The constant's name (`"CUDA_ERROR_INVALID_VALUE"`) as `cuGetErrorName` reports it, or
    /// `None` for a value `cuda.h` does not define.
    pub fn name(self) -> Option<&'static core::ffi::CStr> {
        result_names::name(self)
    }
}

impl From<Result<(), CUresult>> for CUresult {
    fn from(r: Result<(), CUresult>) -> Self {
        match r {
            Ok(()) => CUresult::CUDA_SUCCESS,
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_helpers() {
        assert!(CUresult::CUDA_SUCCESS.is_ok());
        assert!(CUresult::CUDA_ERROR_NOT_SUPPORTED.is_err());
        assert_eq!(CUresult::CUDA_ERROR_NOT_SUPPORTED.0, 801);
        assert_eq!(
            CUresult::CUDA_ERROR_INVALID_VALUE.result(),
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(CUresult::from(Ok(())), CUresult::CUDA_SUCCESS);
        assert_eq!(
            CUresult::CUDA_ERROR_UNKNOWN.name(),
            Some(c"CUDA_ERROR_UNKNOWN")
        );
        assert_eq!(CUresult::CUDA_SUCCESS.name(), Some(c"CUDA_SUCCESS"));
        assert_eq!(CUresult(123_456).name(), None);
    }

    #[test]
    fn abi_sizes() {
        use core::mem::size_of;
        assert_eq!(size_of::<CUresult>(), 4);
        assert_eq!(size_of::<CUdeviceptr>(), 8);
        assert_eq!(size_of::<CUdevice>(), 4);
        assert_eq!(size_of::<CUcontext>(), size_of::<usize>());
        assert_eq!(size_of::<CUuuid>(), 16);
        assert_eq!(size_of::<CUlaunchAttributeValue>(), 64);
        assert_eq!(CUDA_VERSION, 13000);
    }
}
