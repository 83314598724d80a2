//! The tools' module table (`6e163fbe…`, 99 slots; CU_ETID_ToolsModule in public notes).
//! cuFFT asks for it when it makes a plan: it loads each of its kernels as a module of one
//! function and finds that function through slot 7 rather than by name. The other slots are
//! unknown.

use super::{stubs, Table};
use cuda_abi::{CUcontext, CUfunction, CUmodule, CUresult};
use std::ffi::{c_char, c_uint, c_void};

const ID: usize = 8;

pub(super) static TABLE: Table<10> = Table::new(stubs!(ID; 0 1 2 3 4 5 6 7 8 9))
    .sized(99)
    .with(7, for_each_function as *const c_void);

/// What slot 7 calls once per function: `(user, function, name)`; its return value is ignored.
type Visit = unsafe extern "C" fn(user: *mut c_void, f: CUfunction, name: *const c_char);

/// Slot 7 `(ctx, module, visit, user) -> count`: calls `visit(user, function, name)` for each
/// function of `module`, in the driver's order, and returns how many there are, which is not a
/// `CUresult`. The 580 driver (*probe*, docs/export-tables.md) ignores `ctx` (null works),
/// passes `user` through even when null, hands out the handles `cuModuleGetFunction` gives,
/// counts without calling when `visit` is null, and answers 0 for a library handle. Baton
/// answers 0 for anything that is not a loaded module (the driver crashes on null).
unsafe extern "C" fn for_each_function(
    _ctx: CUcontext,
    module: CUmodule,
    visit: Option<Visit>,
    user: *mut c_void,
) -> c_uint {
    let functions = std::panic::catch_unwind(|| crate::api::module_functions(module))
        .unwrap_or(Err(CUresult::CUDA_ERROR_UNKNOWN));
    let functions = match functions {
        Ok(f) => f,
        Err(e) => {
            if crate::trace::enabled() {
                crate::trace::line(format_args!(
                    "TOOLS_MODULE[7]({module:p}) -> 0 functions ({e:?})"
                ));
            }
            return 0;
        }
    };
    if crate::trace::enabled() {
        crate::trace::line(format_args!(
            "TOOLS_MODULE[7]({module:p}) -> {} functions",
            functions.len()
        ));
    }
    if let Some(visit) = visit {
        for f in &functions {
            // SAFETY: the caller's callback, with its own `user`, a live function handle and a
            // NUL-terminated name that lives as long as the function object (never freed).
            unsafe { visit(user, f.handle(), f.name.as_ptr()) };
        }
    }
    functions.len() as c_uint
}
