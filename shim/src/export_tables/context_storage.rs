//! CONTEXT_LOCAL_STORAGE_INTERFACE_V0301 (`c693336e…`): values the runtime keeps per context,
//! keyed by (context, key), each with a destructor to run when the context goes away. The
//! table has no size word: three functions, then a null.
//!
//! Slot 2 (get) is on the runtime's hot path (hundreds of calls per ResNet-50 inference), so
//! the store lives here in the shim: a read-locked hash map with a two-word hash, no daemon
//! round trip. Results follow the 580 driver (docs/export-tables.md): a null context means the
//! current one, and is `CUDA_ERROR_INVALID_CONTEXT` when the thread has none; a missing key,
//! or a key already present on a put, is `CUDA_ERROR_INVALID_HANDLE`; a non-null context is
//! not checked, only used as part of the key.

use super::{context_or_current, stubs, Table};
use cuda_abi::{CUcontext, CUresult};
use std::collections::HashMap;
use std::ffi::c_void;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const ID: usize = 3;

pub(super) static TABLE: Table<1> = Table::new(stubs!(ID; 0))
    .with(0, put as *const c_void)
    .with(1, delete as *const c_void)
    .with(2, get as *const c_void)
    .with(3, std::ptr::null());

/// Called with (context, key, value) when the context is destroyed.
type Destructor = unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void);

struct Entry {
    value: usize,
    destructor: Option<Destructor>,
}

/// Hashes the two addresses of a key: multiply-rotate, enough for pointers (a few entries per
/// context) and much cheaper than SipHash on the hot path.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Store = HashMap<(usize, usize), Entry, BuildHasherDefault<AddressHasher>>;

static STORE: RwLock<Option<Store>> = RwLock::new(None);

fn read() -> RwLockReadGuard<'static, Option<Store>> {
    STORE.read().unwrap_or_else(|e| e.into_inner())
}

fn write() -> RwLockWriteGuard<'static, Option<Store>> {
    STORE.write().unwrap_or_else(|e| e.into_inner())
}

/// Slot 0 `(ctx, key, value, destructor)`: stores `value` under (ctx, key).
unsafe extern "C" fn put(
    ctx: CUcontext,
    key: *mut c_void,
    value: *mut c_void,
    destructor: Option<Destructor>,
) -> CUresult {
    crate::entry::guard("CONTEXT_LOCAL_STORAGE[0]", || {
        let ctx = match context_or_current(ctx) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let mut store = write();
        let store = store.get_or_insert_with(Store::default);
        match store.entry((ctx, key as usize)) {
            std::collections::hash_map::Entry::Occupied(_) => CUresult::CUDA_ERROR_INVALID_HANDLE,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry {
                    value: value as usize,
                    destructor,
                });
                CUresult::CUDA_SUCCESS
            }
        }
    })
}

/// Slot 1 `(ctx, key)`: removes the value without running its destructor (the runtime calls
/// this while tearing its own state down).
unsafe extern "C" fn delete(ctx: CUcontext, key: *mut c_void) -> CUresult {
    crate::entry::guard("CONTEXT_LOCAL_STORAGE[1]", || {
        let ctx = match context_or_current(ctx) {
            Ok(c) => c,
            Err(e) => return e,
        };
        match write()
            .as_mut()
            .and_then(|s| s.remove(&(ctx, key as usize)))
        {
            Some(_) => CUresult::CUDA_SUCCESS,
            None => CUresult::CUDA_ERROR_INVALID_HANDLE,
        }
    })
}

/// Slot 2 `(value_out, ctx, key)`: the value under (ctx, key). The out-pointer is written only
/// on success.
unsafe extern "C" fn get(value: *mut *mut c_void, ctx: CUcontext, key: *mut c_void) -> CUresult {
    crate::entry::guard("CONTEXT_LOCAL_STORAGE[2]", || {
        let ctx = match context_or_current(ctx) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let found = read()
            .as_ref()
            .and_then(|s| s.get(&(ctx, key as usize)))
            .map(|e| e.value);
        match found {
            Some(v) if !value.is_null() => {
                // SAFETY: non-null out-pointer from the caller.
                unsafe { value.write(v as *mut c_void) };
                CUresult::CUDA_SUCCESS
            }
            Some(_) => CUresult::CUDA_ERROR_INVALID_VALUE,
            None => CUresult::CUDA_ERROR_INVALID_HANDLE,
        }
    })
}

/// Forgets every value stored for `ctx` and runs their destructors, outside the lock (a
/// destructor may call back into this table). For the context API to call when a context is
/// destroyed or a primary context reset, as the driver does.
pub(crate) fn context_destroyed(ctx: CUcontext) {
    let gone: Vec<((usize, usize), Entry)> = match write().as_mut() {
        Some(s) => {
            let keys: Vec<(usize, usize)> =
                s.keys().filter(|k| k.0 == ctx as usize).copied().collect();
            keys.into_iter()
                .filter_map(|k| s.remove(&k).map(|e| (k, e)))
                .collect()
        }
        None => return,
    };
    for ((_, key), entry) in gone {
        if let Some(d) = entry.destructor {
            // SAFETY: the runtime registered this destructor for exactly these arguments.
            unsafe { d(ctx, key as *mut c_void, entry.value as *mut c_void) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DESTROYED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn record(_ctx: CUcontext, _key: *mut c_void, value: *mut c_void) {
        DESTROYED.store(value as usize, Ordering::SeqCst);
    }

    #[test]
    fn put_get_delete_and_destroy() {
        // Explicit contexts: any non-null address works as one, as with the driver.
        let ctx = 0x1000 as CUcontext;
        let key = 0x20 as *mut c_void;
        let mut v = std::ptr::null_mut();
        // SAFETY: plain calls with locals as out-pointers.
        unsafe {
            assert_eq!(get(&mut v, ctx, key), CUresult::CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(put(ctx, key, 7 as _, None), CUresult::CUDA_SUCCESS);
            assert_eq!(
                put(ctx, key, 8 as _, None),
                CUresult::CUDA_ERROR_INVALID_HANDLE
            );
            assert_eq!(get(&mut v, ctx, key), CUresult::CUDA_SUCCESS);
            assert_eq!(v as usize, 7);
            assert_eq!(delete(ctx, key), CUresult::CUDA_SUCCESS);
            assert_eq!(delete(ctx, key), CUresult::CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(put(ctx, key, 9 as _, Some(record)), CUresult::CUDA_SUCCESS);
            assert_eq!(
                put(0x2000 as _, key, 10 as _, Some(record)),
                CUresult::CUDA_SUCCESS
            );
        }
        context_destroyed(ctx);
        assert_eq!(DESTROYED.load(Ordering::SeqCst), 9);
        // SAFETY: as above.
        unsafe {
            assert_eq!(get(&mut v, ctx, key), CUresult::CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(get(&mut v, 0x2000 as _, key), CUresult::CUDA_SUCCESS);
        }
        assert_eq!(v as usize, 10);
    }

    #[test]
    fn a_null_context_without_a_current_one_is_invalid_context() {
        let mut v = std::ptr::null_mut();
        let key = 0x30 as *mut c_void;
        // SAFETY: plain calls; this test thread has no current context.
        unsafe {
            assert_eq!(
                get(&mut v, std::ptr::null_mut(), key),
                CUresult::CUDA_ERROR_INVALID_CONTEXT
            );
            assert_eq!(
                put(std::ptr::null_mut(), key, v, None),
                CUresult::CUDA_ERROR_INVALID_CONTEXT
            );
            assert_eq!(
                delete(std::ptr::null_mut(), key),
                CUresult::CUDA_ERROR_INVALID_CONTEXT
            );
        }
    }
}
