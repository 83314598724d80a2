//! Memory pools: each device's default pool, and nothing else yet.
//!
//! Stream-ordered allocations come from the daemon's default pool, which every tenant shares,
//! so a tenant's pool attributes cannot be applied to it: one tenant's release threshold would
//! change when memory goes back to the driver for all. The shim keeps the attributes a client
//! sets and reads them back; what the pool reports as used and reserved is this client's own
//! view (what it set, else 0).

use super::util::{out, ready, ret};
use crate::client::lock;
use cuda_abi::*;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;

/// Default-pool handles: this tag plus the device ordinal.
const POOL_TAG: usize = 0x6d << 48;

static ATTRS: Mutex<BTreeMap<(usize, u32), u64>> = Mutex::new(BTreeMap::new());

fn pool_of(dev: CUdevice) -> Result<CUmemoryPool, CUresult> {
    super::init::device(ready()?, dev)?;
    Ok((POOL_TAG | dev as usize) as CUmemoryPool)
}

/// The device of a default-pool handle.
fn device_of(pool: CUmemoryPool) -> Result<CUdevice, CUresult> {
    let v = pool as usize;
    if v & !0xffff != POOL_TAG {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let dev = (v & 0xffff) as CUdevice;
    super::init::device(ready()?, dev)?;
    Ok(dev)
}

pub(crate) unsafe fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(pool_of(dev).and_then(|p| unsafe { out(pool, p) }))
}

pub(crate) unsafe fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult {
    // SAFETY: same contract; the current pool is always the default one.
    unsafe { cuDeviceGetDefaultMemPool(pool, dev) }
}

pub(crate) unsafe fn cuDeviceSetMemPool(dev: CUdevice, pool: CUmemoryPool) -> CUresult {
    ret((|| {
        if device_of(pool)? != dev {
            crate::log::once(
                "cuDeviceSetMemPool",
                "accepts only the device's default pool",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        Ok(())
    })())
}

/// `CU_MEMPOOL_ATTR_*` values 1..=3 are `int`, 4..=8 are `cuuint64_t`.
fn attr_size(attr: u32) -> Option<usize> {
    match attr {
        1..=3 => Some(4),
        4..=8 => Some(8),
        _ => None,
    }
}

pub(crate) unsafe fn cuMemPoolSetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CUresult {
    ret((|| {
        device_of(pool)?;
        let size = attr_size(attr.0).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // Current reserved/used (5, 7) are read-only.
        if value.is_null() || matches!(attr.0, 5 | 7) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: checked non-null; the attribute's type has `size` bytes.
        let v = unsafe {
            match size {
                4 => (value as *const i32).read_unaligned() as u64,
                _ => (value as *const u64).read_unaligned(),
            }
        };
        lock(&ATTRS).insert((pool as usize, attr.0), v);
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemPoolGetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CUresult {
    ret((|| {
        device_of(pool)?;
        let size = attr_size(attr.0).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // The driver's defaults: the three reuse policies on, release threshold 0.
        let default = if attr.0 <= 3 { 1 } else { 0 };
        let v = lock(&ATTRS)
            .get(&(pool as usize, attr.0))
            .copied()
            .unwrap_or(default);
        // SAFETY: forwarded caller contract; the attribute's type has `size` bytes.
        unsafe {
            match size {
                4 => out(value as *mut i32, v as i32),
                _ => out(value as *mut u64, v),
            }
        }
    })())
}

pub(crate) unsafe fn cuMemPoolTrimTo(pool: CUmemoryPool, _min_bytes: usize) -> CUresult {
    // The shared pool is trimmed by the daemon, not by one tenant.
    ret(device_of(pool).map(|_| ()))
}

pub(crate) unsafe fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> CUresult {
    if let Err(e) = device_of(pool) {
        return e;
    }
    // SAFETY: same contract; the default pool is what cuMemAllocAsync allocates from.
    unsafe { super::memory::cuMemAllocAsync(dptr, bytes, stream) }
}
