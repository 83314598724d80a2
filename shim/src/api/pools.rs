//! Memory pools: each device's default pool, and explicit pools (`cuMemPoolCreate`) with
//! their sharing between processes.
//!
//! Stream-ordered allocations from a default pool come from the daemon's default pool, which
//! every tenant shares, so a tenant's attributes cannot be applied to it: one tenant's release
//! threshold would change when memory goes back to the driver for all. The shim keeps the
//! attributes a client sets on a default pool and reads them back; what it reports as used and
//! reserved is this client's own view (what it set, else 0).
//!
//! An explicit pool is a real pool in the daemon that this client owns (or imported), so its
//! attributes and usage figures are the driver's. Which pool `cuMemAllocAsync` uses on a
//! device (`cuDeviceSetMemPool`) is this client's choice and is kept here.

use super::util::{out, ready, ret};
use crate::client::lock;
use baton_ipc::protocol::{
    self as p, ipc_decode, ipc_encode, Op, IPC_POOL_MAGIC, IPC_POOL_PTR_MAGIC,
};
use cuda_abi::*;
use std::collections::BTreeMap;
use std::ffi::{c_ulonglong, c_void};
use std::sync::Mutex;

/// Default-pool handles: this tag plus the device ordinal.
const POOL_TAG: usize = 0x6d << 48;
/// Explicit-pool handles: this tag plus the daemon's pool id.
const EXPLICIT_TAG: usize = 0x6e << 48;

static ATTRS: Mutex<BTreeMap<(usize, u32), u64>> = Mutex::new(BTreeMap::new());

/// Explicit pools alive in this process: daemon id -> (device, imported).
static EXPLICIT: Mutex<BTreeMap<u64, (CUdevice, bool)>> = Mutex::new(BTreeMap::new());

/// Devices whose current pool is an explicit one: device -> daemon id.
static CURRENT: Mutex<BTreeMap<CUdevice, u64>> = Mutex::new(BTreeMap::new());

/// A pool handle, resolved.
#[derive(Clone, Copy)]
enum Pool {
    Default(CUdevice),
    Explicit {
        id: u64,
        device: CUdevice,
        imported: bool,
    },
}

fn resolve(pool: CUmemoryPool) -> Result<Pool, CUresult> {
    let v = pool as usize;
    ready()?;
    if v & !0xffff_ffff_ffff == EXPLICIT_TAG {
        let id = (v & 0xffff_ffff_ffff) as u64;
        let &(device, imported) = lock(&EXPLICIT)
            .get(&id)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        return Ok(Pool::Explicit {
            id,
            device,
            imported,
        });
    }
    device_of(pool).map(Pool::Default)
}

fn explicit_handle(id: u64) -> CUmemoryPool {
    (EXPLICIT_TAG | id as usize) as CUmemoryPool
}

/// The explicit pool `cuMemAllocAsync` on `device` allocates from, if one was made current.
pub(crate) fn current_explicit(device: u32) -> Option<u64> {
    lock(&CURRENT).get(&(device as CUdevice)).copied()
}

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
    ret((|| {
        let p = match lock(&CURRENT).get(&dev) {
            Some(&id) => explicit_handle(id),
            None => pool_of(dev)?,
        };
        // SAFETY: forwarded caller contract.
        unsafe { out(pool, p) }
    })())
}

pub(crate) unsafe fn cuDeviceSetMemPool(dev: CUdevice, pool: CUmemoryPool) -> CUresult {
    ret((|| {
        super::init::device(ready()?, dev)?;
        match resolve(pool)? {
            Pool::Default(d) if d == dev => {
                lock(&CURRENT).remove(&dev);
            }
            // The driver's rule: an imported pool allocates nothing, so it cannot be current.
            Pool::Explicit {
                id,
                device,
                imported: false,
            } if device == dev => {
                lock(&CURRENT).insert(dev, id);
            }
            _ => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemPoolCreate(
    pool: *mut CUmemoryPool,
    props: *const CUmemPoolProps,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if pool.is_null() || props.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's properties (every field a plain integer).
        let pr = unsafe { props.read_unaligned() };
        let body = p::MemPoolCreate {
            alloc_type: pr.allocType.0,
            handle_types: pr.handleTypes.0,
            location_type: pr.location.type_.0,
            location_id: pr.location.id,
            max_size: pr.maxSize as u64,
        };
        let r = c.call(Op::MemPoolCreate, &body, &[])?;
        let id = r.values[0];
        lock(&EXPLICIT).insert(id, (pr.location.id, false));
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(pool, explicit_handle(id)) }
    })())
}

pub(crate) unsafe fn cuMemPoolDestroy(pool: CUmemoryPool) -> CUresult {
    ret((|| {
        let c = ready()?;
        let Pool::Explicit { id, device, .. } = resolve(pool)? else {
            // A default pool cannot be destroyed.
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        };
        c.call(Op::MemPoolDestroy, &p::ObjectId { id }, &[])?;
        lock(&EXPLICIT).remove(&id);
        // A destroyed current pool leaves the device's default pool current.
        let mut cur = lock(&CURRENT);
        if cur.get(&device) == Some(&id) {
            cur.remove(&device);
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
        let target = resolve(pool)?;
        let size = attr_size(attr.0).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        if let Pool::Explicit { id, .. } = target {
            if value.is_null() {
                return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
            }
            // SAFETY: checked non-null; the attribute's type has `size` bytes.
            let v = unsafe {
                match size {
                    4 => (value as *const i32).read_unaligned() as u64,
                    _ => (value as *const u64).read_unaligned(),
                }
            };
            return pool_attr(id, attr.0, Some(v)).map(|_| ());
        }
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
        let target = resolve(pool)?;
        let size = attr_size(attr.0).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        if let Pool::Explicit { id, .. } = target {
            let v = pool_attr(id, attr.0, None)?;
            // SAFETY: forwarded caller contract; the attribute's type has `size` bytes.
            return unsafe {
                match size {
                    4 => out(value as *mut i32, v as i32),
                    _ => out(value as *mut u64, v),
                }
            };
        }
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

/// An explicit pool's attribute from the daemon, set first to `set` if given.
fn pool_attr(id: u64, attr: u32, set: Option<u64>) -> Result<u64, CUresult> {
    let body = p::MemPoolAttr {
        pool: id,
        attr,
        set: set.is_some() as u32,
        value: set.unwrap_or(0),
    };
    Ok(ready()?.call(Op::MemPoolAttr, &body, &[])?.values[0])
}

pub(crate) unsafe fn cuMemPoolTrimTo(pool: CUmemoryPool, min_bytes: usize) -> CUresult {
    ret((|| match resolve(pool)? {
        // The shared default pool is trimmed by the daemon, not by one tenant.
        Pool::Default(_) => Ok(()),
        Pool::Explicit { id, .. } => {
            let body = p::MemPoolTrim {
                pool: id,
                keep: min_bytes as u64,
            };
            ready()?.call(Op::MemPoolTrim, &body, &[]).map(|_| ())
        }
    })())
}

pub(crate) unsafe fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> CUresult {
    match resolve(pool) {
        Err(e) => e,
        // SAFETY: same contract; the default pool is what cuMemAllocAsync allocates from
        // unless another pool was made current.
        Ok(Pool::Default(_)) => unsafe { super::memory::cuMemAllocAsync(dptr, bytes, stream) },
        Ok(Pool::Explicit { imported: true, .. }) => CUresult::CUDA_ERROR_INVALID_VALUE,
        // SAFETY: same contract.
        Ok(Pool::Explicit { id, .. }) => unsafe {
            super::memory::alloc_from_pool(dptr, bytes, id, stream)
        },
    }
}

/// The device a pool's memory lives on.
fn pool_device(pool: Pool) -> CUdevice {
    match pool {
        Pool::Default(d) | Pool::Explicit { device: d, .. } => d,
    }
}

/// `CU_MEM_LOCATION_TYPE_DEVICE`, `CU_MEM_ACCESS_FLAGS_PROT_NONE` / `_READWRITE`.
const LOCATION_DEVICE: u32 = 1;
const ACCESS_NONE: u32 = 0;
const ACCESS_READWRITE: u32 = 3;

pub(crate) unsafe fn cuMemPoolSetAccess(
    pool: CUmemoryPool,
    map: *const CUmemAccessDesc,
    count: usize,
) -> CUresult {
    ret((|| {
        let home = pool_device(resolve(pool)?);
        if count > 0 && map.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        for i in 0..count {
            // SAFETY: checked non-null; the caller passes `count` descriptors.
            let d = unsafe { map.add(i).read_unaligned() };
            if d.location.type_.0 != LOCATION_DEVICE {
                return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
            }
            // The device a pool lives on always has read-write access to it.
            if d.location.id == home {
                if d.flags.0 != ACCESS_READWRITE {
                    return Err(CUresult::CUDA_ERROR_INVALID_DEVICE);
                }
                continue;
            }
            super::init::device(ready()?, d.location.id)?;
            crate::log::once(
                "cuMemPoolSetAccess",
                "grants no peer device access to a pool under Baton",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemPoolGetAccess(
    flags: *mut CUmemAccess_flags,
    pool: CUmemoryPool,
    location: *mut CUmemLocation,
) -> CUresult {
    ret((|| {
        let home = pool_device(resolve(pool)?);
        if location.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's location.
        let loc = unsafe { location.read_unaligned() };
        if loc.type_.0 != LOCATION_DEVICE {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        super::init::device(ready()?, loc.id)?;
        let f = if loc.id == home {
            ACCESS_READWRITE
        } else {
            ACCESS_NONE
        };
        // SAFETY: forwarded caller contract.
        unsafe { out(flags, CUmemAccess_flags(f)) }
    })())
}

fn posix_only(call: &'static str, ty: CUmemAllocationHandleType) -> Result<(), CUresult> {
    if ty != CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR {
        crate::log::once(
            call,
            "shares pools only as POSIX file descriptors under Baton",
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    Ok(())
}

pub(crate) unsafe fn cuMemPoolExportToShareableHandle(
    handle_out: *mut c_void,
    pool: CUmemoryPool,
    handleType: CUmemAllocationHandleType,
    flags: c_ulonglong,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if handle_out.is_null() || flags != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        posix_only("cuMemPoolExportToShareableHandle", handleType)?;
        let Pool::Explicit { id, .. } = resolve(pool)? else {
            // Default pools have no shareable handle type.
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        };
        let body = p::VmmExport {
            handle: id,
            handle_type: handleType.0,
            _pad: 0,
        };
        let r = c.call(Op::MemPoolExport, &body, &[])?;
        let fd = super::ipc::token_fd(
            IPC_POOL_MAGIC,
            [r.values[0], r.values[1]],
            "cuMemPoolExportToShareableHandle",
        )?;
        // SAFETY: for this handle type the driver writes an `int` through the pointer.
        unsafe { out(handle_out.cast::<std::ffi::c_int>(), fd) }
    })())
}

pub(crate) unsafe fn cuMemPoolImportFromShareableHandle(
    pool_out: *mut CUmemoryPool,
    handle: *mut c_void,
    handleType: CUmemAllocationHandleType,
    flags: c_ulonglong,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if pool_out.is_null() || flags != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        posix_only("cuMemPoolImportFromShareableHandle", handleType)?;
        // For this handle type the descriptor itself is passed in the pointer's place.
        let token = super::ipc::fd_token(IPC_POOL_MAGIC, handle as usize as std::ffi::c_int)?;
        let r = c.call(Op::MemPoolImport, &p::IpcToken { token }, &[])?;
        let (id, device) = (r.values[0], r.values[1] as CUdevice);
        lock(&EXPLICIT).insert(id, (device, true));
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(pool_out, explicit_handle(id)) }
    })())
}

pub(crate) unsafe fn cuMemPoolExportPointer(
    shareData_out: *mut CUmemPoolPtrExportData,
    ptr: CUdeviceptr,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if shareData_out.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let r = c.call(Op::MemPoolExportPtr, &p::MemFree { dptr: ptr }, &[])?;
        let mut reserved = [0u8; 64];
        ipc_encode(
            IPC_POOL_PTR_MAGIC,
            [r.values[0], r.values[1]],
            &mut reserved,
        );
        // SAFETY: checked non-null; the caller's 64-byte export data.
        unsafe { out(shareData_out, CUmemPoolPtrExportData { reserved }) }
    })())
}

pub(crate) unsafe fn cuMemPoolImportPointer(
    ptr_out: *mut CUdeviceptr,
    pool: CUmemoryPool,
    shareData: *mut CUmemPoolPtrExportData,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if ptr_out.is_null() || shareData.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let Pool::Explicit { id, .. } = resolve(pool)? else {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        };
        // SAFETY: checked non-null; the caller's 64-byte export data.
        let data = unsafe { shareData.read_unaligned() };
        let token = ipc_decode(IPC_POOL_PTR_MAGIC, &data.reserved)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let body = p::MemPoolImportPtr { pool: id, token };
        let r = c.call(Op::MemPoolImportPtr, &body, &[])?;
        let (ptr, len, device) = (r.values[0], r.values[1], r.values[2] as u32);
        // Freed with cuMemFree/cuMemFreeAsync, which let go of the import.
        super::memory::remember_freeable(ptr, len, device);
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(ptr_out, ptr) }
    })())
}
