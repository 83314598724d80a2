//! CUDART_INTERFACE (`6bd5fb6c…`, 13 slots): the runtime's hooks into the driver for primary
//! contexts and the modules of the fat binaries it registers. Implemented through the shim's
//! own entry points, so module loads take the usual path to the daemon.

use super::{stubs, Table};
use cuda_abi::{CUcontext, CUdevice, CUmodule, CUresult};
use std::ffi::{c_uint, c_void};

const ID: usize = 0;

pub(super) static TABLE: Table<2> = Table::new(stubs!(ID; 0 1))
    .sized(13)
    .with(1, module_from_fatbin_wrapper as *const c_void)
    .with(2, primary_context as *const c_void)
    .with(6, module_from_fatbin_wrapper_ex as *const c_void)
    .with(7, module_unregistered as *const c_void)
    .with(8, module_from_fatbin_ex as *const c_void)
    .with(12, load_compilers as *const c_void);

/// Slot 1 `(module_out, fatbin_wrapper)`: loads the fat binary a `__fatBinC_Wrapper_t` points
/// to, as `cuModuleLoadData` does with the same pointer.
unsafe extern "C" fn module_from_fatbin_wrapper(
    module: *mut CUmodule,
    wrapper: *const c_void,
) -> CUresult {
    crate::entry::guard("CUDART_INTERFACE[1]", || {
        if wrapper.is_null() {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        // SAFETY: the runtime passes an out-pointer and a fat binary wrapper.
        unsafe { crate::api::cuModuleLoadData(module, wrapper) }
    })
}

/// Slot 2 `(ctx_out, device)`: the device's primary context, without retaining it (a handle
/// the runtime retains later). `CUDA_ERROR_INVALID_DEVICE` for a device that does not exist.
unsafe extern "C" fn primary_context(ctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    crate::entry::guard("CUDART_INTERFACE[2]", || {
        let mut checked = 0;
        // SAFETY: out-pointer to a local; this checks initialisation and the device number.
        let r = unsafe { crate::api::cuDeviceGet(&mut checked, dev) };
        if r != CUresult::CUDA_SUCCESS {
            return r;
        }
        if ctx.is_null() {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        let primary = crate::client::get()
            .and_then(|c| crate::api::context::primary(c, dev))
            .map(|(p, _)| p.handle());
        match primary {
            Ok(h) => {
                // SAFETY: non-null out-pointer from the runtime.
                unsafe { ctx.write(h) };
                CUresult::CUDA_SUCCESS
            }
            Err(e) => e,
        }
    })
}

/// Slots 6 `(module_out, fatbin_wrapper, a, b, n)` and 8 `(fatbin, module_out, a, b, n)`:
/// loads with extra arguments (`n` entries in `a` and `b`, of unknown meaning). Only the form
/// without them, the one seen in practice, is served.
unsafe extern "C" fn module_from_fatbin_wrapper_ex(
    module: *mut CUmodule,
    wrapper: *const c_void,
    a: *mut c_void,
    b: *mut c_void,
    n: c_uint,
) -> CUresult {
    if !a.is_null() || !b.is_null() || n != 0 {
        crate::log::once(
            "CUDART_INTERFACE[6]",
            "with extra arguments is not supported",
        );
        return CUresult::CUDA_ERROR_NOT_SUPPORTED;
    }
    // SAFETY: same contract as slot 1.
    unsafe { module_from_fatbin_wrapper(module, wrapper) }
}

/// Slot 8: as slot 6, with the fat binary itself (its header) instead of its wrapper, first.
unsafe extern "C" fn module_from_fatbin_ex(
    fatbin: *const c_void,
    module: *mut CUmodule,
    a: *mut c_void,
    b: *mut c_void,
    n: c_uint,
) -> CUresult {
    if !a.is_null() || !b.is_null() || n != 0 {
        crate::log::once(
            "CUDART_INTERFACE[8]",
            "with extra arguments is not supported",
        );
        return CUresult::CUDA_ERROR_NOT_SUPPORTED;
    }
    // SAFETY: `cuModuleLoadData` takes a fat binary as well as its wrapper.
    unsafe { module_from_fatbin_wrapper(module, fatbin) }
}

/// Slot 7 `(handle)`: the runtime unregisters a module (named "unregister module" in public
/// notes). The argument is not known to be a module handle, so it is not unloaded: the
/// daemon frees the session's modules when the process ends.
extern "C" fn module_unregistered(_handle: usize) -> CUresult {
    CUresult::CUDA_SUCCESS
}

/// Slot 12 `()`: the driver loads its PTX compiler and similar libraries here; the daemon's
/// driver does that for itself.
extern "C" fn load_compilers() -> CUresult {
    CUresult::CUDA_SUCCESS
}
