//! Arrays, box copies, and texture and surface objects on the real driver.
//!
//! Descriptors with enum fields are passed as layout twins holding plain integers: the session
//! forwards formats and modes it does not interpret, a Rust enum must never hold a value outside
//! its variants, and the driver reads these fields as C integers and refuses unknown values.

use super::{check, stream};
use crate::executor::{BoxCopy, GpuResult, Mem, Place, Raw, Resource};
use baton_ipc::protocol::{ArrayCreate, TextureDesc, ViewDesc, RESOURCE_LINEAR, RESOURCE_PITCH2D};
use cudarc::driver::sys;
use std::ffi::c_void;
use std::mem::size_of;
use std::ptr::{null, null_mut};

/// `CUDA_ARRAY3D_DESCRIPTOR` with the format as an integer.
#[repr(C)]
struct Array3DDescriptor {
    width: usize,
    height: usize,
    depth: usize,
    format: u32,
    channels: u32,
    flags: u32,
}

/// `CUDA_RESOURCE_DESC`: the type, the 128-byte union as words, the flags.
#[repr(C)]
struct ResourceDescriptor {
    res_type: u32,
    res: [u64; 16],
    flags: u32,
}

const _: () = assert!(size_of::<Array3DDescriptor>() == size_of::<sys::CUDA_ARRAY3D_DESCRIPTOR>());
const _: () = assert!(size_of::<ResourceDescriptor>() == size_of::<sys::CUDA_RESOURCE_DESC>());
const _: () = assert!(size_of::<TextureDesc>() == size_of::<sys::CUDA_TEXTURE_DESC>());
const _: () = assert!(size_of::<ViewDesc>() == size_of::<sys::CUDA_RESOURCE_VIEW_DESC>());

pub(super) fn array_create(d: &ArrayCreate) -> GpuResult<Raw> {
    let desc = Array3DDescriptor {
        width: d.width as usize,
        height: d.height as usize,
        depth: d.depth as usize,
        format: d.format,
        channels: d.channels,
        flags: d.flags,
    };
    let mut a = null_mut();
    // SAFETY: out-pointer to a local; `desc` is a layout twin of CUDA_ARRAY3D_DESCRIPTOR (size
    // checked above) that only the driver reads.
    check(unsafe {
        sys::cuArray3DCreate_v2(
            &mut a,
            &desc as *const Array3DDescriptor as *const sys::CUDA_ARRAY3D_DESCRIPTOR,
        )
    })?;
    Ok(a as usize as Raw)
}

pub(super) fn array_destroy(a: Raw) -> GpuResult<()> {
    // SAFETY: the session destroys only arrays it created and still holds.
    check(unsafe { sys::cuArrayDestroy(a as usize as sys::CUarray) })
}

/// (memory type, host pointer, device pointer, array, pitch, height) of one side.
fn side(
    p: Place,
) -> (
    sys::CUmemorytype,
    *mut c_void,
    u64,
    sys::CUarray,
    usize,
    usize,
) {
    match p {
        Place::Linear {
            mem: Mem::Device(d),
            pitch,
            height,
        } => (
            sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            null_mut(),
            d,
            null_mut(),
            pitch as usize,
            height as usize,
        ),
        Place::Linear {
            mem: Mem::Host(h),
            pitch,
            height,
        } => (
            sys::CUmemorytype::CU_MEMORYTYPE_HOST,
            h as *mut c_void,
            0,
            null_mut(),
            pitch as usize,
            height as usize,
        ),
        Place::Array(a) => (
            sys::CUmemorytype::CU_MEMORYTYPE_ARRAY,
            null_mut(),
            0,
            a as usize as sys::CUarray,
            0,
            0,
        ),
    }
}

pub(super) fn copy_3d(c: &BoxCopy, s: Raw) -> GpuResult<()> {
    let copy = memcpy3d(c);
    // SAFETY: the session checked both sides against its arrays, allocations and registered
    // host memory; `copy` outlives the call.
    check(unsafe { sys::cuMemcpy3DAsync_v2(&copy, stream(s)) })
}

/// The driver's description of a checked box copy (also what a graph's memcpy node holds).
pub(super) fn memcpy3d(c: &BoxCopy) -> sys::CUDA_MEMCPY3D {
    let (st, sh, sd, sa, sp, sht) = side(c.src);
    let (dt, dh, dd, da, dp, dht) = side(c.dst);
    sys::CUDA_MEMCPY3D {
        srcXInBytes: c.src_origin[0] as usize,
        srcY: c.src_origin[1] as usize,
        srcZ: c.src_origin[2] as usize,
        srcLOD: 0,
        srcMemoryType: st,
        srcHost: sh as *const c_void,
        srcDevice: sd,
        srcArray: sa,
        reserved0: null_mut(),
        srcPitch: sp,
        srcHeight: sht,
        dstXInBytes: c.dst_origin[0] as usize,
        dstY: c.dst_origin[1] as usize,
        dstZ: c.dst_origin[2] as usize,
        dstLOD: 0,
        dstMemoryType: dt,
        dstHost: dh,
        dstDevice: dd,
        dstArray: da,
        reserved1: null_mut(),
        dstPitch: dp,
        dstHeight: dht,
        WidthInBytes: c.extent[0] as usize,
        Height: c.extent[1] as usize,
        Depth: c.extent[2] as usize,
    }
}

fn resource(r: &Resource) -> ResourceDescriptor {
    let mut d = ResourceDescriptor {
        res_type: 0,
        res: [0; 16],
        flags: 0,
    };
    // The union's fields, in the words they occupy: a format and a channel count share one.
    let fmt = |format: u32, channels: u32| format as u64 | (channels as u64) << 32;
    match *r {
        Resource::Array(a) => d.res[0] = a,
        Resource::Linear {
            ptr,
            format,
            channels,
            bytes,
        } => {
            d.res_type = RESOURCE_LINEAR;
            d.res[..3].copy_from_slice(&[ptr, fmt(format, channels), bytes]);
        }
        Resource::Pitch2D {
            ptr,
            format,
            channels,
            width,
            height,
            pitch,
        } => {
            d.res_type = RESOURCE_PITCH2D;
            d.res[..5].copy_from_slice(&[ptr, fmt(format, channels), width, height, pitch]);
        }
    }
    d
}

pub(super) fn tex_object_create(
    r: &Resource,
    tex: &TextureDesc,
    view: Option<&ViewDesc>,
) -> GpuResult<u64> {
    let res = resource(r);
    let view = view.map_or(null(), |v| {
        v as *const ViewDesc as *const sys::CUDA_RESOURCE_VIEW_DESC
    });
    let mut t = 0;
    // SAFETY: out-pointer to a local; the descriptors are layout twins (sizes checked above) of
    // the driver's structs that only the driver reads; the resource was checked by the session.
    check(unsafe {
        sys::cuTexObjectCreate(
            &mut t,
            &res as *const ResourceDescriptor as *const sys::CUDA_RESOURCE_DESC,
            tex as *const TextureDesc as *const sys::CUDA_TEXTURE_DESC,
            view,
        )
    })?;
    Ok(t)
}

pub(super) fn tex_object_destroy(t: u64) -> GpuResult<()> {
    // SAFETY: the session destroys only texture objects it created and still holds.
    check(unsafe { sys::cuTexObjectDestroy(t) })
}

pub(super) fn surf_object_create(r: &Resource) -> GpuResult<u64> {
    let res = resource(r);
    let mut s = 0;
    // SAFETY: as for textures.
    check(unsafe {
        sys::cuSurfObjectCreate(
            &mut s,
            &res as *const ResourceDescriptor as *const sys::CUDA_RESOURCE_DESC,
        )
    })?;
    Ok(s)
}

pub(super) fn surf_object_destroy(s: u64) -> GpuResult<()> {
    // SAFETY: the session destroys only surface objects it created and still holds.
    check(unsafe { sys::cuSurfObjectDestroy(s) })
}
