//! TOOLS_RUNTIME_CALLBACK_HOOKS (`a094798c…`, 7 slots): two buffers the driver owns and the
//! runtime reads to learn which of its API callbacks a tool (CUPTI) has switched on. Each
//! runtime asks for both once at start-up. Nothing in a Baton client subscribes, so they stay
//! zero: no callbacks.

use super::{stubs, Table};
use std::cell::UnsafeCell;
use std::ffi::c_void;

const ID: usize = 1;

pub(super) static TABLE: Table<1> = Table::new(stubs!(ID; 0))
    .sized(7)
    .with(2, runtime_callbacks as *const c_void)
    .with(6, callback_domains as *const c_void);

/// A zeroed buffer handed to C code, which may write it.
#[repr(C, align(64))]
struct Buffer<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the shim never reads or writes the buffers; the runtime owns their contents.
unsafe impl<const N: usize> Sync for Buffer<N> {}

impl<const N: usize> Buffer<N> {
    fn ptr(&'static self) -> *mut c_void {
        self.0.get().cast()
    }
}

/// The sizes the driver reports. The buffers are larger, in case the size counts elements
/// wider than a byte.
const RUNTIME_CALLBACKS_LEN: usize = 1024;
const CALLBACK_DOMAINS_LEN: usize = 14;
static RUNTIME_CALLBACKS: Buffer<{ 8 * RUNTIME_CALLBACKS_LEN }> =
    Buffer(UnsafeCell::new([0; 8 * RUNTIME_CALLBACKS_LEN]));
static CALLBACK_DOMAINS: Buffer<{ 8 * CALLBACK_DOMAINS_LEN }> =
    Buffer(UnsafeCell::new([0; 8 * CALLBACK_DOMAINS_LEN]));

/// Writes `(buffer, size)` through the caller's pointers (each may be null) and returns the
/// buffer, as the driver leaves it in the return register.
///
/// # Safety
/// Each pointer must be null or valid for a write.
unsafe fn hand_out(
    buf: *mut c_void,
    len: usize,
    ptr: *mut *mut c_void,
    size: *mut usize,
) -> *mut c_void {
    if !ptr.is_null() {
        // SAFETY: per the contract.
        unsafe { ptr.write(buf) };
    }
    if !size.is_null() {
        // SAFETY: per the contract.
        unsafe { size.write(len) };
    }
    buf
}

/// Slot 2 `(buffer_out, size_out)`: 1024 entries.
unsafe extern "C" fn runtime_callbacks(ptr: *mut *mut c_void, size: *mut usize) -> *mut c_void {
    // SAFETY: the runtime passes two out-pointers.
    unsafe { hand_out(RUNTIME_CALLBACKS.ptr(), RUNTIME_CALLBACKS_LEN, ptr, size) }
}

/// Slot 6 `(buffer_out, size_out)`: 14 entries.
unsafe extern "C" fn callback_domains(ptr: *mut *mut c_void, size: *mut usize) -> *mut c_void {
    // SAFETY: the runtime passes two out-pointers.
    unsafe { hand_out(CALLBACK_DOMAINS.ptr(), CALLBACK_DOMAINS_LEN, ptr, size) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_handed_out_with_the_drivers_sizes() {
        let (mut p, mut n) = (std::ptr::null_mut(), 0);
        // SAFETY: out-pointers to locals.
        let r = unsafe { runtime_callbacks(&mut p, &mut n) };
        assert_eq!(
            (r, p, n),
            (RUNTIME_CALLBACKS.ptr(), RUNTIME_CALLBACKS.ptr(), 1024)
        );
        // SAFETY: as above.
        unsafe { callback_domains(&mut p, &mut n) };
        assert_eq!((p, n), (CALLBACK_DOMAINS.ptr(), 14));
    }
}
