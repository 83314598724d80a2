//! CONTEXT_CHECKS (`263e8860…`, 15 slots): the runtime asks whether a context wraps another
//! one (slot 2) and reads a global flag word (slot 3). No Baton context wraps another, and the
//! flags are zero, as the driver answers for ordinary contexts.

use super::{context_or_current, stubs, Table};
use cuda_abi::{CUcontext, CUresult};
use std::ffi::{c_uint, c_void};

const ID: usize = 4;

pub(super) static TABLE: Table<2> = Table::new(stubs!(ID; 0 1))
    .sized(15)
    .with(2, is_wrapped as *const c_void)
    .with(3, flags as *const c_void);

/// Slot 2 `(ctx, wrapped_out, inner_out)`: writes 0 to `wrapped_out` and leaves `inner_out`
/// alone (the driver writes it only for a wrapping context). A null context means the current
/// one: `CUDA_ERROR_INVALID_CONTEXT` when there is none.
unsafe extern "C" fn is_wrapped(
    ctx: CUcontext,
    wrapped: *mut c_uint,
    _inner: *mut CUcontext,
) -> CUresult {
    crate::entry::guard("CONTEXT_CHECKS[2]", || {
        if let Err(e) = context_or_current(ctx) {
            return e;
        }
        if !wrapped.is_null() {
            // SAFETY: non-null out-pointer from the caller.
            unsafe { wrapped.write(0) };
        }
        CUresult::CUDA_SUCCESS
    })
}

/// Slot 3: 0, whatever it is passed.
extern "C" fn flags() -> c_uint {
    0
}
