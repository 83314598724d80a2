//! Virtual memory management (`cuMemAddressReserve`, `cuMemCreate`, `cuMemMap`, ...).
//!
//! Reservations, physical allocations and mappings are made by the daemon in its context; the
//! addresses are real device addresses, the allocation handles are the daemon's session ids.
//! The shim remembers each handle's properties (for `cuMemGetAllocationPropertiesFromHandle`)
//! and each mapped range (so pointer queries and copies know it is device memory).

use super::util::{out, ready, ret};
use crate::client::lock;
use baton_ipc::protocol::{self as p, Op, VMM_MAX_ACCESS};
use cuda_abi::*;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;

struct Handle {
    prop: CUmemAllocationProp,
    /// References the client holds (create and each retain).
    refs: u32,
}

// SAFETY: the one raw pointer in the properties (`win32HandleMetaData`) is never dereferenced
// by the shim; the properties are plain data kept for the client to read back.
unsafe impl Send for Handle {}

static HANDLES: Mutex<BTreeMap<u64, Handle>> = Mutex::new(BTreeMap::new());

fn wire_prop(prop: *const CUmemAllocationProp, option: u32) -> Result<p::VmmProp, CUresult> {
    if prop.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: checked non-null; the caller's property struct.
    let prop = unsafe { &*prop };
    Ok(p::VmmProp {
        kind: prop.type_.0,
        location_type: prop.location.type_.0,
        location_id: prop.location.id,
        handle_types: prop.requestedHandleTypes.0,
        compression: prop.allocFlags.compressionType as u32,
        gpu_direct_rdma: prop.allocFlags.gpuDirectRDMACapable as u32,
        usage: prop.allocFlags.usage as u32,
        option,
    })
}

/// An allocation handle imported from another process: its exporter's properties.
pub(super) fn remember_imported(id: u64, wire: &p::VmmProp) {
    // SAFETY: every field of the property struct is plain data for which zero is valid.
    let mut prop: CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = CUmemAllocationType(wire.kind);
    prop.requestedHandleTypes = CUmemAllocationHandleType(wire.handle_types);
    prop.location.type_ = CUmemLocationType(wire.location_type);
    prop.location.id = wire.location_id;
    prop.allocFlags.compressionType = wire.compression as u8;
    prop.allocFlags.gpuDirectRDMACapable = wire.gpu_direct_rdma as u8;
    prop.allocFlags.usage = wire.usage as u16;
    lock(&HANDLES).insert(id, Handle { prop, refs: 1 });
}

pub(crate) unsafe fn cuMemGetAllocationGranularity(
    granularity: *mut usize,
    prop: *const CUmemAllocationProp,
    option: CUmemAllocationGranularity_flags,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let r = c.call(Op::VmmGranularity, &wire_prop(prop, option.0)?, &[])?;
        // SAFETY: forwarded caller contract.
        unsafe { out(granularity, r.values[0] as usize) }
    })())
}

pub(crate) unsafe fn cuMemAddressReserve(
    ptr: *mut CUdeviceptr,
    size: usize,
    alignment: usize,
    addr: CUdeviceptr,
    flags: cuuint64_t,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if ptr.is_null() || size == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let r = c.call(
            Op::VmmReserve,
            &p::VmmReserve {
                size: size as u64,
                alignment: alignment as u64,
                addr,
                flags,
            },
            &[],
        )?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ptr, r.values[0]) }
    })())
}

pub(crate) unsafe fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> CUresult {
    ret((|| {
        let c = ready()?;
        let body = p::VmmRange {
            ptr,
            size: size as u64,
        };
        c.call(Op::VmmAddressFree, &body, &[]).map(|_| ())
    })())
}

pub(crate) unsafe fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: cuuint64_t,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if handle.is_null() || size == 0 || flags != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let wire = wire_prop(prop, 0)?;
        let r = c.call(
            Op::VmmCreate,
            &p::VmmCreate {
                size: size as u64,
                prop: wire,
            },
            &[],
        )?;
        let id = r.values[0];
        // SAFETY: checked non-null by wire_prop.
        let prop = unsafe { *prop };
        lock(&HANDLES).insert(id, Handle { prop, refs: 1 });
        // SAFETY: forwarded caller contract.
        unsafe { out(handle, id) }
    })())
}

pub(crate) unsafe fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
    ret((|| {
        let c = ready()?;
        c.call(Op::VmmRelease, &p::ObjectId { id: handle }, &[])?;
        let mut h = lock(&HANDLES);
        if let Some(e) = h.get_mut(&handle) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                h.remove(&handle);
            }
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemRetainAllocationHandle(
    handle: *mut CUmemGenericAllocationHandle,
    addr: *mut c_void,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let r = c.call(Op::VmmRetain, &p::MemFree { dptr: addr as u64 }, &[])?;
        let id = r.values[0];
        if let Some(e) = lock(&HANDLES).get_mut(&id) {
            e.refs += 1;
        }
        // SAFETY: forwarded caller contract.
        unsafe { out(handle, id) }
    })())
}

pub(crate) unsafe fn cuMemGetAllocationPropertiesFromHandle(
    prop: *mut CUmemAllocationProp,
    handle: CUmemGenericAllocationHandle,
) -> CUresult {
    ret((|| {
        ready()?;
        let p = lock(&HANDLES)
            .get(&handle)
            .map(|h| h.prop)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(prop, p) }
    })())
}

pub(crate) unsafe fn cuMemMap(
    ptr: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: cuuint64_t,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if flags != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let device = lock(&HANDLES)
            .get(&handle)
            .map(|h| h.prop.location.id as u32)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        c.call(
            Op::VmmMap,
            &p::VmmMap {
                ptr,
                size: size as u64,
                offset: offset as u64,
                handle,
            },
            &[],
        )?;
        super::memory::remember_mapping(ptr, size as u64, device);
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult {
    ret((|| {
        let c = ready()?;
        let body = p::VmmRange {
            ptr,
            size: size as u64,
        };
        c.call(Op::VmmUnmap, &body, &[])?;
        super::memory::forget_mappings(ptr, size as u64);
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemSetAccess(
    ptr: CUdeviceptr,
    size: usize,
    desc: *const CUmemAccessDesc,
    count: usize,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if desc.is_null() || count == 0 || count > VMM_MAX_ACCESS {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller passes `count` descriptors.
        let descs = unsafe { std::slice::from_raw_parts(desc, count) };
        let mut access = [p::VmmAccess::default(); VMM_MAX_ACCESS];
        for (a, d) in access.iter_mut().zip(descs) {
            *a = p::VmmAccess {
                location_type: d.location.type_.0,
                location_id: d.location.id,
                flags: d.flags.0,
                _pad: 0,
            };
        }
        let body = p::VmmSetAccess {
            ptr,
            size: size as u64,
            count: count as u32,
            _pad: 0,
            access,
        };
        c.call(Op::VmmSetAccess, &body, &[]).map(|_| ())
    })())
}

pub(crate) unsafe fn cuMemGetAccess(
    flags: *mut cuuint64_t,
    location: *const CUmemLocation,
    ptr: CUdeviceptr,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if location.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's location.
        let loc = unsafe { &*location };
        let r = c.call(
            Op::VmmGetAccess,
            &p::VmmGetAccess {
                ptr,
                location_type: loc.type_.0,
                location_id: loc.id,
            },
            &[],
        )?;
        // SAFETY: forwarded caller contract.
        unsafe { out(flags, r.values[0]) }
    })())
}
