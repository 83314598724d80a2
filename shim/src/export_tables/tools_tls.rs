//! TOOLS_TLS (`42d85a81…`, 3 slots): the calling thread's tool state. Slot 2 is the thread's
//! current context; cuBLASLt asks for it on every matmul, so it is answered from the
//! thread-local context stack with no lock.

use super::{stubs, Table};
use crate::objects::Context;
use cuda_abi::{CUcontext, CUresult};
use std::ffi::c_void;

const ID: usize = 2;

pub(super) static TABLE: Table<1> = Table::new(stubs!(ID; 0))
    .sized(3)
    .with(2, thread_context as *const c_void);

/// Slot 2 `(ctx_out)`: the current context, or null when the thread has none (still success,
/// as with the driver).
unsafe extern "C" fn thread_context(ctx: *mut CUcontext) -> CUresult {
    crate::entry::guard("TOOLS_TLS[2]", || {
        if ctx.is_null() {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        let current = crate::api::context::current()
            .map_or(std::ptr::null_mut(), |c: &'static Context| c.handle());
        // SAFETY: non-null out-pointer from the caller.
        unsafe { ctx.write(current) };
        CUresult::CUDA_SUCCESS
    })
}
