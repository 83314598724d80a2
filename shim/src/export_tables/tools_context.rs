//! The tools' context table (`21318c60…`, 93 slots; CU_ETID_ToolsContext in public notes).
//! cuBLASLt calls slot 4 on every matmul, with the context TOOLS_TLS gave it, for the
//! context's unique id; the other slots are unknown.

use super::{stubs, Table};
use crate::objects::Context;
use cuda_abi::{CUcontext, CUresult};
use std::ffi::{c_ulonglong, c_void};
use std::sync::atomic::Ordering;

const ID: usize = 6;

pub(super) static TABLE: Table<10> = Table::new(stubs!(ID; 0 1 2 3 4 5 6 7 8 9))
    .sized(93)
    .with(4, context_id as *const c_void)
    .with(39, succeed::<39> as *const c_void)
    .with(51, succeed::<51> as *const c_void);

/// Slots 51 and 39: the CUDA toolkit's cuBLAS (not PyTorch's) calls 51 before its first kernel
/// and then 39; their meaning is unknown. Failing them makes cuBLAS give up
/// (`CUBLAS_STATUS_INTERNAL_ERROR`), so they succeed and write nothing; their first arguments
/// are logged under `BATON_TRACE=1` so their use can be studied.
unsafe extern "C" fn succeed<const SLOT: usize>(
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
) -> CUresult {
    if crate::trace::enabled() {
        crate::trace::line(format_args!(
            "TOOLS_CONTEXT[{SLOT}]({a0:#x}, {a1:#x}, {a2:#x}, {a3:#x}) -> CUDA_SUCCESS"
        ));
    }
    CUresult::CUDA_SUCCESS
}

/// Slot 4 `(ctx, id_out)`: the id `cuCtxGetId` gives the context, and 0 for null or for a
/// handle that is no live context. Always succeeds, as the driver does (it wrote 1 and 2 for
/// the first two contexts of a process, 0 for null, stale and foreign handles).
unsafe extern "C" fn context_id(ctx: CUcontext, id: *mut c_ulonglong) -> CUresult {
    crate::entry::guard("TOOLS_CONTEXT[4]", || {
        if id.is_null() {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        let live = !ctx.is_null()
            && Context::from_handle(ctx).is_ok_and(|c| c.alive.load(Ordering::Relaxed));
        let mut value = 0;
        // SAFETY: a live context and an out-pointer to a local.
        if live && unsafe { crate::api::cuCtxGetId(ctx, &mut value) } != CUresult::CUDA_SUCCESS {
            value = 0;
        }
        // SAFETY: non-null out-pointer from the caller.
        unsafe { id.write(value) };
        CUresult::CUDA_SUCCESS
    })
}
