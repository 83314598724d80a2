//! The real driver's virtual-memory and graph calls, for [`super::CudaExecutor`].
//!
//! The VMM structures carry values straight from clients (allocation type, location, handle
//! types, access flags). cudarc types those fields as Rust enums, and an out-of-range value in
//! a Rust enum is undefined behaviour, so these calls go through C-layout mirrors with plain
//! integers, looked up from the same loaded driver; the driver itself validates the values.

use super::check_code as check;
use super::stream;
use super::{GpuError, GpuResult, Raw};
use baton_ipc::protocol::{VmmAccess, VmmProp};
use cudarc::driver::sys;
use std::ffi::c_void;
use std::ptr::null_mut;

#[repr(C)]
#[derive(Clone, Copy)]
struct Location {
    kind: u32,
    id: i32,
}

/// `CUmemAllocationProp` (13.0 layout: 32 bytes).
#[repr(C)]
struct AllocProp {
    kind: u32,
    handle_types: u32,
    location: Location,
    win32_meta: *mut c_void,
    compression: u8,
    gpu_direct_rdma: u8,
    usage: u16,
    reserved: [u8; 4],
}

/// `CUmemAccessDesc`.
#[repr(C)]
struct AccessDesc {
    location: Location,
    flags: u32,
}

const _: () = assert!(std::mem::size_of::<AllocProp>() == 32);
const _: () = assert!(std::mem::size_of::<AccessDesc>() == 12);

fn prop(p: &VmmProp) -> GpuResult<AllocProp> {
    let narrow = |v: u32| u8::try_from(v).map_err(|_| GpuError(super::code::INVALID_VALUE));
    Ok(AllocProp {
        kind: p.kind,
        handle_types: p.handle_types,
        location: Location {
            kind: p.location_type,
            id: p.location_id,
        },
        win32_meta: null_mut(),
        compression: narrow(p.compression)?,
        gpu_direct_rdma: narrow(p.gpu_direct_rdma)?,
        usage: u16::try_from(p.usage).map_err(|_| GpuError(super::code::INVALID_VALUE))?,
        reserved: [0; 4],
    })
}

type GranularityFn = unsafe extern "C" fn(*mut usize, *const AllocProp, u32) -> u32;
type CreateFn = unsafe extern "C" fn(*mut u64, usize, *const AllocProp, u64) -> u32;
type SetAccessFn = unsafe extern "C" fn(u64, usize, *const AccessDesc, usize) -> u32;
type GetAccessFn = unsafe extern "C" fn(*mut u64, *const Location, u64) -> u32;

pub fn granularity(p: &VmmProp) -> GpuResult<u64> {
    let f = driver_fn!("cuMemGetAllocationGranularity", GranularityFn);
    let prop = prop(p)?;
    let mut g = 0usize;
    // SAFETY: out-pointer and property struct are locals of the C layout.
    let r = unsafe { f(&mut g, &prop, p.option) };
    check(r)?;
    Ok(g as u64)
}

pub fn reserve(size: u64, align: u64, addr: u64, flags: u64) -> GpuResult<u64> {
    let mut ptr = 0;
    // SAFETY: out-pointer to a local.
    let r =
        unsafe { sys::cuMemAddressReserve(&mut ptr, size as usize, align as usize, addr, flags) };
    check(r as u32)?;
    Ok(ptr)
}

pub fn address_free(ptr: u64, size: u64) -> GpuResult<()> {
    // SAFETY: the session frees only reservations it made, with their size.
    let r = unsafe { sys::cuMemAddressFree(ptr, size as usize) };
    check(r as u32)
}

pub fn create(size: u64, p: &VmmProp) -> GpuResult<Raw> {
    let f = driver_fn!("cuMemCreate", CreateFn);
    let prop = prop(p)?;
    let mut h = 0u64;
    // SAFETY: out-pointer and property struct are locals of the C layout.
    let r = unsafe { f(&mut h, size as usize, &prop, 0) };
    check(r)?;
    Ok(h)
}

pub fn release(h: Raw) -> GpuResult<()> {
    // SAFETY: the session releases only handles it created, once.
    let r = unsafe { sys::cuMemRelease(h) };
    check(r as u32)
}

pub fn map(ptr: u64, size: u64, offset: u64, h: Raw) -> GpuResult<()> {
    // SAFETY: the range lies in a reservation of the session and the handle is its own.
    let r = unsafe { sys::cuMemMap(ptr, size as usize, offset as usize, h, 0) };
    check(r as u32)
}

pub fn unmap(ptr: u64, size: u64) -> GpuResult<()> {
    // SAFETY: the range is made of the session's own mappings.
    let r = unsafe { sys::cuMemUnmap(ptr, size as usize) };
    check(r as u32)
}

pub fn set_access(ptr: u64, size: u64, access: &[VmmAccess]) -> GpuResult<()> {
    let f = driver_fn!("cuMemSetAccess", SetAccessFn);
    let descs: Vec<AccessDesc> = access
        .iter()
        .map(|a| AccessDesc {
            location: Location {
                kind: a.location_type,
                id: a.location_id,
            },
            flags: a.flags,
        })
        .collect();
    // SAFETY: `descs` holds `descs.len()` descriptors of the C layout for the call.
    let r = unsafe { f(ptr, size as usize, descs.as_ptr(), descs.len()) };
    check(r)
}

pub fn get_access(ptr: u64, location_type: u32, location_id: i32) -> GpuResult<u64> {
    let f = driver_fn!("cuMemGetAccess", GetAccessFn);
    let loc = Location {
        kind: location_type,
        id: location_id,
    };
    let mut flags = 0u64;
    // SAFETY: out-pointer and location are locals of the C layout.
    let r = unsafe { f(&mut flags, &loc, ptr) };
    check(r)?;
    Ok(flags)
}

fn graph(g: Raw) -> sys::CUgraph {
    g as usize as sys::CUgraph
}
fn graph_exec(g: Raw) -> sys::CUgraphExec {
    g as usize as sys::CUgraphExec
}

pub fn capture_begin(s: Raw) -> GpuResult<()> {
    // SAFETY: the session's own stream; a valid enum value.
    let r = unsafe {
        sys::cuStreamBeginCapture_v2(
            stream(s),
            sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
        )
    };
    check(r as u32)
}

pub fn capture_end(s: Raw) -> GpuResult<Raw> {
    let mut g = null_mut();
    // SAFETY: out-pointer to a local.
    let r = unsafe { sys::cuStreamEndCapture(stream(s), &mut g) };
    check(r as u32)?;
    Ok(g as usize as Raw)
}

pub fn is_capturing(s: Raw) -> GpuResult<bool> {
    let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // SAFETY: out-pointer to a local; the driver writes one of the enum's values.
    let r = unsafe { sys::cuStreamIsCapturing(stream(s), &mut status) };
    check(r as u32)?;
    Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}

pub fn instantiate(g: Raw, flags: u64) -> GpuResult<Raw> {
    let mut e = null_mut();
    // SAFETY: the session's own graph; out-pointer to a local.
    let r = unsafe { sys::cuGraphInstantiateWithFlags(&mut e, graph(g), flags) };
    check(r as u32)?;
    Ok(e as usize as Raw)
}

pub fn launch(e: Raw, s: Raw) -> GpuResult<()> {
    // SAFETY: the session's own executable graph and stream.
    let r = unsafe { sys::cuGraphLaunch(graph_exec(e), stream(s)) };
    check(r as u32)
}

pub fn upload(e: Raw, s: Raw) -> GpuResult<()> {
    // SAFETY: as for launch.
    let r = unsafe { sys::cuGraphUpload(graph_exec(e), stream(s)) };
    check(r as u32)
}

pub fn exec_destroy(e: Raw) -> GpuResult<()> {
    // SAFETY: destroyed once, by the session that instantiated it.
    let r = unsafe { sys::cuGraphExecDestroy(graph_exec(e)) };
    check(r as u32)
}

pub fn destroy(g: Raw) -> GpuResult<()> {
    // SAFETY: destroyed once, by the session that captured it.
    let r = unsafe { sys::cuGraphDestroy(graph(g)) };
    check(r as u32)
}

pub fn node_count(g: Raw) -> GpuResult<u64> {
    let mut n = 0usize;
    // SAFETY: a null node array asks for the count only.
    let r = unsafe { sys::cuGraphGetNodes(graph(g), null_mut(), &mut n) };
    check(r as u32)?;
    Ok(n as u64)
}
