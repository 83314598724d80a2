//! The real driver's memory-pool calls, for [`super::CudaExecutor`]. They go through
//! `driver_fn!` with plain-integer signatures, like the VMM calls: attribute numbers come from
//! clients, and the driver validates them.

use super::check_code as check;
use super::stream;
use super::{GpuError, GpuResult, Raw};
use std::ffi::c_void;
use std::ptr::null_mut;

/// `CUmemPoolProps` (13.0 layout: 88 bytes); graph allocation nodes (`graph_mem`) embed one.
#[repr(C)]
pub(super) struct PoolProps {
    alloc_type: u32,
    handle_types: u32,
    location_type: u32,
    location_id: i32,
    win32_security: *mut c_void,
    max_size: usize,
    usage: u16,
    reserved: [u8; 54],
}

const _: () = assert!(std::mem::size_of::<PoolProps>() == 88);

/// `CU_MEM_ALLOCATION_TYPE_PINNED`, `CU_MEM_LOCATION_TYPE_DEVICE`.
const PINNED: u32 = 1;
const LOCATION_DEVICE: u32 = 1;

impl PoolProps {
    /// All zero: what the driver fills in.
    pub(super) fn zeroed() -> PoolProps {
        PoolProps {
            alloc_type: 0,
            handle_types: 0,
            location_type: 0,
            location_id: 0,
            win32_security: null_mut(),
            max_size: 0,
            usage: 0,
            reserved: [0; 54],
        }
    }

    /// Pinned memory located on `device`, without shareable handle types; `max_size` 0: no
    /// limit.
    pub(super) fn pinned_on(device: u32, max_size: u64) -> GpuResult<PoolProps> {
        Ok(PoolProps {
            alloc_type: PINNED,
            location_type: LOCATION_DEVICE,
            location_id: i32::try_from(device)
                .map_err(|_| GpuError(super::code::INVALID_DEVICE))?,
            max_size: usize::try_from(max_size)
                .map_err(|_| GpuError(super::code::INVALID_VALUE))?,
            ..PoolProps::zeroed()
        })
    }
}

type Pool = *mut c_void;
type PoolCreate = unsafe extern "C" fn(*mut Pool, *const PoolProps) -> u32;
type PoolDestroy = unsafe extern "C" fn(Pool) -> u32;
type AllocFromPool = unsafe extern "C" fn(*mut u64, usize, Pool, *mut c_void) -> u32;
type PoolAttr = unsafe extern "C" fn(Pool, u32, *mut c_void) -> u32;
type PoolTrim = unsafe extern "C" fn(Pool, usize) -> u32;

/// A pool on `device` (the caller bound its context). Sessions share pools between one
/// another without the driver's IPC (all are in this context), so the pool is created without
/// shareable handle types whatever the client asked for.
pub(super) fn create(device: u32, max_size: u64) -> GpuResult<Raw> {
    let f = driver_fn!("cuMemPoolCreate", PoolCreate);
    let props = PoolProps::pinned_on(device, max_size)?;
    let mut pool = null_mut();
    // SAFETY: out-pointer to a local; `props` is a complete, zero-padded `CUmemPoolProps`.
    check(unsafe { f(&mut pool, &props) })?;
    Ok(pool as Raw)
}

pub(super) fn destroy(pool: Raw) -> GpuResult<()> {
    let f = driver_fn!("cuMemPoolDestroy", PoolDestroy);
    // SAFETY: a pool this daemon created and has not destroyed.
    check(unsafe { f(pool as Pool) })
}

pub(super) fn alloc(pool: Raw, bytes: u64, s: Raw) -> GpuResult<u64> {
    let f = driver_fn!("cuMemAllocFromPoolAsync", AllocFromPool);
    let mut p = 0;
    // SAFETY: out-pointer to a local; a live pool and stream of this context.
    check(unsafe { f(&mut p, bytes as usize, pool as Pool, stream(s).cast()) })?;
    Ok(p)
}

/// `CU_MEMPOOL_ATTR_*` 1..=3 are `int`; the rest this daemon serves are `cuuint64_t`.
fn is_int(attr: u32) -> bool {
    matches!(attr, 1..=3)
}

pub(super) fn attr(pool: Raw, attr: u32, set: Option<u64>) -> GpuResult<u64> {
    if !(1..=8).contains(&attr) {
        return Err(GpuError(super::code::INVALID_VALUE));
    }
    if let Some(v) = set {
        let f = driver_fn!("cuMemPoolSetAttribute", PoolAttr);
        let mut int = v as i32;
        let mut wide = v;
        let p: *mut c_void = if is_int(attr) {
            (&mut int as *mut i32).cast()
        } else {
            (&mut wide as *mut u64).cast()
        };
        // SAFETY: `p` points to a local of the attribute's type.
        check(unsafe { f(pool as Pool, attr, p) })?;
    }
    let f = driver_fn!("cuMemPoolGetAttribute", PoolAttr);
    let mut int = 0i32;
    let mut wide = 0u64;
    let p: *mut c_void = if is_int(attr) {
        (&mut int as *mut i32).cast()
    } else {
        (&mut wide as *mut u64).cast()
    };
    // SAFETY: `p` points to a local of the attribute's type.
    check(unsafe { f(pool as Pool, attr, p) })?;
    Ok(if is_int(attr) { int as u64 } else { wide })
}

pub(super) fn trim(pool: Raw, keep: u64) -> GpuResult<()> {
    let f = driver_fn!("cuMemPoolTrimTo", PoolTrim);
    // SAFETY: a live pool of this context.
    check(unsafe { f(pool as Pool, keep as usize) })
}
