//! The real driver's graph memory nodes and the device's graph memory pool.
//!
//! The parameter struct embeds driver enums, so it is mirrored here over plain integers (a
//! value the driver writes back that cudarc's enums lack would be undefined behaviour there).

use super::check_code as check;
use super::pools::PoolProps;
use crate::executor::{code, GpuError, GpuResult, MemNode, Raw};
use std::ffi::c_void;
use std::ptr::null_mut;

type Ptr = *mut c_void;

/// `CUDA_MEM_ALLOC_NODE_PARAMS_v1` (120 bytes).
#[repr(C)]
struct AllocParams {
    pool: PoolProps,
    access_descs: *const c_void,
    access_desc_count: usize,
    bytesize: usize,
    dptr: u64,
}

const _: () = assert!(std::mem::size_of::<AllocParams>() == 120);

type AddAllocFn = unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, *mut AllocParams) -> u32;
type AddFreeFn = unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, u64) -> u32;
type AllocGetFn = unsafe extern "C" fn(Ptr, *mut AllocParams) -> u32;
type FreeGetFn = unsafe extern "C" fn(Ptr, *mut u64) -> u32;
type NodeTypeFn = unsafe extern "C" fn(Ptr, *mut u32) -> u32;
type DeviceGetFn = unsafe extern "C" fn(*mut i32, i32) -> u32;
type AttrFn = unsafe extern "C" fn(i32, u32, *mut c_void) -> u32;
type TrimFn = unsafe extern "C" fn(i32) -> u32;

fn h(r: Raw) -> Ptr {
    r as usize as Ptr
}

fn zeroed_params() -> AllocParams {
    AllocParams {
        pool: PoolProps::zeroed(),
        access_descs: std::ptr::null(),
        access_desc_count: 0,
        bytesize: 0,
        dptr: 0,
    }
}

/// Adds an allocation node of `bytes` on `device` (pinned, device-located, no extra access).
pub fn add_alloc(graph: Raw, deps: &[Ptr], device: u32, bytes: u64) -> GpuResult<Raw> {
    let f = driver_fn!("cuGraphAddMemAllocNode", AddAllocFn);
    let mut p = zeroed_params();
    p.pool = PoolProps::pinned_on(device, 0)?;
    p.bytesize = usize::try_from(bytes).map_err(|_| GpuError(code::INVALID_VALUE))?;
    let mut node = null_mut();
    let dp = if deps.is_empty() {
        std::ptr::null()
    } else {
        deps.as_ptr()
    };
    // SAFETY: the graph and dependencies are the session's own, `dp` holds `deps.len()` nodes,
    // and the parameters are a local of the C layout.
    check(unsafe { f(&mut node, h(graph), dp, deps.len(), &mut p) })?;
    Ok(node as usize as Raw)
}

/// Adds a node freeing the graph allocation at `ptr`.
pub fn add_free(graph: Raw, deps: &[Ptr], ptr: u64) -> GpuResult<Raw> {
    let f = driver_fn!("cuGraphAddMemFreeNode", AddFreeFn);
    let mut node = null_mut();
    let dp = if deps.is_empty() {
        std::ptr::null()
    } else {
        deps.as_ptr()
    };
    // SAFETY: as in `add_alloc`; the driver checks that `ptr` is a graph allocation.
    check(unsafe { f(&mut node, h(graph), dp, deps.len(), ptr) })?;
    Ok(node as usize as Raw)
}

pub fn mem_node(node: Raw) -> GpuResult<MemNode> {
    let t = driver_fn!("cuGraphNodeGetType", NodeTypeFn);
    let mut ty = 0u32;
    // SAFETY: a node of one of the session's graphs; out-pointer to a local.
    check(unsafe { t(h(node), &mut ty) })?;
    match ty {
        baton_ipc::protocol::NODE_MEM_ALLOC => {
            let f = driver_fn!("cuGraphMemAllocNodeGetParams", AllocGetFn);
            let mut p = zeroed_params();
            // SAFETY: an allocation node; the driver fills a local of the C layout.
            check(unsafe { f(h(node), &mut p) })?;
            Ok(MemNode {
                alloc: true,
                ptr: p.dptr,
                bytes: p.bytesize as u64,
            })
        }
        baton_ipc::protocol::NODE_MEM_FREE => {
            let f = driver_fn!("cuGraphMemFreeNodeGetParams", FreeGetFn);
            let mut ptr = 0u64;
            // SAFETY: a free node; out-pointer to a local.
            check(unsafe { f(h(node), &mut ptr) })?;
            Ok(MemNode {
                alloc: false,
                ptr,
                bytes: 0,
            })
        }
        _ => Err(GpuError(code::INVALID_VALUE)),
    }
}

fn cu_device(device: u32) -> GpuResult<i32> {
    let f = driver_fn!("cuDeviceGet", DeviceGetFn);
    let mut d = 0;
    let ordinal = i32::try_from(device).map_err(|_| GpuError(code::INVALID_DEVICE))?;
    // SAFETY: out-pointer to a local.
    check(unsafe { f(&mut d, ordinal) })?;
    Ok(d)
}

/// Reads `attr`, after setting it to `set` if given (the driver accepts only 0 for the two
/// high-water marks).
pub fn attr(device: u32, attr: u32, set: Option<u64>) -> GpuResult<u64> {
    let d = cu_device(device)?;
    if let Some(mut v) = set {
        let f = driver_fn!("cuDeviceSetGraphMemAttribute", AttrFn);
        // SAFETY: the value is a cuuint64_t local.
        check(unsafe { f(d, attr, &mut v as *mut u64 as *mut c_void) })?;
    }
    let f = driver_fn!("cuDeviceGetGraphMemAttribute", AttrFn);
    let mut v = 0u64;
    // SAFETY: every graph memory attribute is a cuuint64_t; out-pointer to a local.
    check(unsafe { f(d, attr, &mut v as *mut u64 as *mut c_void) })?;
    Ok(v)
}

pub fn trim(device: u32) -> GpuResult<()> {
    let d = cu_device(device)?;
    let f = driver_fn!("cuDeviceGraphMemTrim", TrimFn);
    // SAFETY: a device ordinal the executor opened.
    check(unsafe { f(d) })
}
