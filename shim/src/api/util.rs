//! Small helpers shared by the API modules.

use crate::client::{self, Client};
use cuda_abi::CUresult;
use std::sync::atomic::{AtomicBool, Ordering};

static INITIALIZED: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_initialized() {
    INITIALIZED.store(true, Ordering::Release);
}

/// The connection, for calls that require `cuInit` to have succeeded first.
pub(crate) fn ready() -> Result<&'static Client, CUresult> {
    if !INITIALIZED.load(Ordering::Acquire) {
        return Err(CUresult::CUDA_ERROR_NOT_INITIALIZED);
    }
    client::get()
}

/// Writes through a caller's out-pointer; a null pointer is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `p` must be null or valid for a write of `T`.
pub(crate) unsafe fn out<T>(p: *mut T, v: T) -> Result<(), CUresult> {
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid per the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Copies `s` into a caller's `char` buffer of `len` bytes, NUL-terminated and truncated.
///
/// # Safety
/// `buf` must be null or valid for `len` bytes of writes.
pub(crate) unsafe fn out_str(
    buf: *mut std::ffi::c_char,
    len: std::ffi::c_int,
    s: &str,
) -> Result<(), CUresult> {
    if buf.is_null() || len <= 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let n = s.len().min(len as usize - 1);
    // SAFETY: n + 1 <= len bytes are written into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf as *mut u8, n);
        buf.add(n).write(0);
    }
    Ok(())
}

/// Folds a `Result` into the `CUresult` the C caller sees.
pub(crate) fn ret(r: Result<(), CUresult>) -> CUresult {
    r.into()
}
