//! CUDA arrays, texture objects and surface objects.
//!
//! An array lives in the daemon's context; the client's `CUarray` is a shim object holding the
//! daemon's id and the descriptor, so descriptor queries need no round trip. Texture and surface
//! objects are the driver's own values (kernels receive them as is); the shim keeps what they
//! were created from to answer the `Get*Desc` queries.

use super::context::current_device;
use super::util::{out, ready, ret};
use crate::client::lock;
use crate::objects::handle_conversions;
use baton_ipc::protocol::{self as p, ObjectId, Op};
use cuda_abi::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use zerocopy::{FromBytes, IntoBytes};

const ARRAY_MAGIC: u32 = 0x4152_5259;

#[repr(C)]
pub(crate) struct Array {
    magic: u32,
    pub device: u32,
    /// Daemon array id (0 once destroyed).
    id: AtomicU64,
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub format: u32,
    pub channels: u32,
    pub flags: u32,
    /// Bytes per row.
    pub row: u64,
}
handle_conversions!(Array, ARRAY_MAGIC, CUresult::CUDA_ERROR_INVALID_HANDLE);

/// Destroyed arrays are reused, as streams are, so a stale handle never names freed memory.
static POOL: Mutex<Vec<&'static Array>> = Mutex::new(Vec::new());

impl Array {
    pub fn daemon_id(&self) -> Result<u64, CUresult> {
        match self.id.load(Ordering::Acquire) {
            0 => Err(CUresult::CUDA_ERROR_INVALID_HANDLE),
            id => Ok(id),
        }
    }

    /// The live array behind a handle.
    pub fn get(h: CUarray) -> Result<&'static Array, CUresult> {
        let a = Array::from_handle(h)?;
        a.daemon_id()?;
        Ok(a)
    }

    /// Rows per slice and slices, at least 1 each.
    pub fn rows(&self) -> (u64, u64) {
        (self.height.max(1) as u64, self.depth.max(1) as u64)
    }
}

/// Flags of arrays with no memory of their own until mapped, which Baton does not manage.
const SPARSE_OR_DEFERRED: u32 = 0x40 | 0x80;

fn create(d: &CUDA_ARRAY3D_DESCRIPTOR) -> Result<&'static Array, CUresult> {
    let c = ready()?;
    let device = current_device()?;
    if d.Flags & SPARSE_OR_DEFERRED != 0 {
        crate::log::once(
            "cuArray3DCreate",
            "sparse and deferred-mapping arrays are not supported",
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    let Some(elem) = p::element_bytes(d.Format.0, d.NumChannels) else {
        crate::log::once(
            "cuArray3DCreate",
            &format!(
                "array format {:#x} with {} channels is not supported",
                d.Format.0, d.NumChannels
            ),
        );
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    };
    if d.Width == 0 || (d.Depth > 0 && d.Height == 0 && d.Flags & 1 == 0) {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let r = c.call(
        Op::ArrayCreate,
        &p::ArrayCreate {
            device,
            format: d.Format.0,
            channels: d.NumChannels,
            flags: d.Flags,
            width: d.Width as u64,
            height: d.Height as u64,
            depth: d.Depth as u64,
        },
        &[],
    )?;
    let fresh = Array {
        magic: ARRAY_MAGIC,
        device,
        id: AtomicU64::new(r.values[0]),
        width: d.Width,
        height: d.Height,
        depth: d.Depth,
        format: d.Format.0,
        channels: d.NumChannels,
        flags: d.Flags,
        row: d.Width as u64 * elem,
    };
    Ok(match lock(&POOL).pop() {
        Some(a) => {
            // SAFETY: pooled arrays are only reachable through stale handles, whose use is the
            // client's bug; overwriting a leaked object we own is sound.
            unsafe { (a as *const Array as *mut Array).write(fresh) };
            a
        }
        None => Box::leak(Box::new(fresh)),
    })
}

pub(crate) unsafe fn cuArray3DCreate_v2(
    ph: *mut CUarray,
    d: *const CUDA_ARRAY3D_DESCRIPTOR,
) -> CUresult {
    ret((|| {
        if d.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, per the caller's contract.
        let a = create(unsafe { &*d })?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ph, a.handle()) }
    })())
}

pub(crate) unsafe fn cuArrayCreate_v2(
    ph: *mut CUarray,
    d: *const CUDA_ARRAY_DESCRIPTOR,
) -> CUresult {
    ret((|| {
        if d.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, per the caller's contract.
        let d = unsafe { &*d };
        let a = create(&CUDA_ARRAY3D_DESCRIPTOR {
            Width: d.Width,
            Height: d.Height,
            Depth: 0,
            Format: d.Format,
            NumChannels: d.NumChannels,
            Flags: 0,
        })?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ph, a.handle()) }
    })())
}

pub(crate) unsafe fn cuArrayDestroy(h: CUarray) -> CUresult {
    ret((|| {
        let c = ready()?;
        let a = Array::get(h)?;
        c.call(Op::ArrayDestroy, &ObjectId { id: a.daemon_id()? }, &[])?;
        a.id.store(0, Ordering::Release);
        lock(&POOL).push(a);
        Ok(())
    })())
}

pub(crate) unsafe fn cuArray3DGetDescriptor_v2(
    d: *mut CUDA_ARRAY3D_DESCRIPTOR,
    h: CUarray,
) -> CUresult {
    ret((|| {
        ready()?;
        let a = Array::get(h)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(
                d,
                CUDA_ARRAY3D_DESCRIPTOR {
                    Width: a.width,
                    Height: a.height,
                    Depth: a.depth,
                    Format: CUarray_format(a.format),
                    NumChannels: a.channels,
                    Flags: a.flags,
                },
            )
        }
    })())
}

pub(crate) unsafe fn cuArrayGetDescriptor_v2(
    d: *mut CUDA_ARRAY_DESCRIPTOR,
    h: CUarray,
) -> CUresult {
    ret((|| {
        ready()?;
        let a = Array::get(h)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(
                d,
                CUDA_ARRAY_DESCRIPTOR {
                    Width: a.width,
                    Height: a.height,
                    Format: CUarray_format(a.format),
                    NumChannels: a.channels,
                },
            )
        }
    })())
}

/// Baton's arrays are never sparse.
pub(crate) unsafe fn cuArrayGetSparseProperties(
    props: *mut CUDA_ARRAY_SPARSE_PROPERTIES,
    h: CUarray,
) -> CUresult {
    ret((|| {
        ready()?;
        Array::get(h)?;
        if props.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        Err(CUresult::CUDA_ERROR_INVALID_VALUE)
    })())
}

/// What a texture or surface object was created from, as the caller's own bytes.
struct Created {
    resource: CUDA_RESOURCE_DESC,
    texture: Option<p::TextureDesc>,
    view: Option<p::ViewDesc>,
}

// SAFETY: the raw pointer inside is an opaque array handle the shim never dereferences here.
unsafe impl Send for Created {}

static TEXTURES: Mutex<Option<HashMap<u64, Created>>> = Mutex::new(None);
static SURFACES: Mutex<Option<HashMap<u64, Created>>> = Mutex::new(None);

/// Translates a resource descriptor for the daemon: arrays to their daemon ids.
///
/// # Safety
/// `r` must point to a valid `CUDA_RESOURCE_DESC`.
unsafe fn resource(r: &CUDA_RESOURCE_DESC) -> Result<(p::ResourceDesc, u32), CUresult> {
    let mut d = p::ResourceDesc {
        kind: r.resType.0,
        flags: r.flags,
        ..Default::default()
    };
    // SAFETY: the union member read is the one `resType` names, per the caller's contract.
    let device = unsafe {
        match r.resType {
            CUresourcetype::CU_RESOURCE_TYPE_ARRAY => {
                let a = Array::get(r.res.array.hArray)?;
                d.handle = a.daemon_id()?;
                a.device
            }
            CUresourcetype::CU_RESOURCE_TYPE_LINEAR => {
                let l = r.res.linear;
                d.handle = l.devPtr;
                d.format = l.format.0;
                d.channels = l.numChannels;
                d.width = l.sizeInBytes as u64;
                current_device()?
            }
            CUresourcetype::CU_RESOURCE_TYPE_PITCH2D => {
                let l = r.res.pitch2D;
                d.handle = l.devPtr;
                d.format = l.format.0;
                d.channels = l.numChannels;
                d.width = l.width as u64;
                d.height = l.height as u64;
                d.pitch = l.pitchInBytes as u64;
                current_device()?
            }
            CUresourcetype::CU_RESOURCE_TYPE_MIPMAPPED_ARRAY => {
                crate::log::once("cuTexObjectCreate", "mipmapped arrays are not supported");
                return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
            }
            _ => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        }
    };
    Ok((d, device))
}

/// Copies a caller's C struct into its protocol twin of the same size.
///
/// # Safety
/// `src` must be valid for reads of `size_of::<T>()` bytes.
unsafe fn twin<T: FromBytes + IntoBytes>(src: *const u8) -> T {
    let mut t = T::new_zeroed();
    let dst = t.as_mut_bytes();
    // SAFETY: per the contract; `dst` is exactly `size_of::<T>()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    t
}

const _: () =
    assert!(std::mem::size_of::<p::TextureDesc>() == std::mem::size_of::<CUDA_TEXTURE_DESC>());
const _: () =
    assert!(std::mem::size_of::<p::ViewDesc>() == std::mem::size_of::<CUDA_RESOURCE_VIEW_DESC>());

pub(crate) unsafe fn cuTexObjectCreate(
    pt: *mut CUtexObject,
    r: *const CUDA_RESOURCE_DESC,
    t: *const CUDA_TEXTURE_DESC,
    v: *const CUDA_RESOURCE_VIEW_DESC,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if r.is_null() || t.is_null() || pt.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, per the caller's contract.
        let (resource, device) = unsafe { resource(&*r)? };
        // SAFETY: the descriptors are valid for their sizes, per the caller's contract.
        let texture: p::TextureDesc = unsafe { twin(t as *const u8) };
        // SAFETY: as above.
        let view = (!v.is_null()).then(|| unsafe { twin::<p::ViewDesc>(v as *const u8) });
        let body = p::TexObjectCreate {
            device,
            has_view: view.is_some() as u32,
            resource,
            texture,
            view: view.unwrap_or_default(),
        };
        let value = c.call(Op::TexObjectCreate, &body, &[])?.values[0];
        let created = Created {
            // SAFETY: non-null, per the caller's contract.
            resource: unsafe { *r },
            texture: Some(texture),
            view,
        };
        lock(&TEXTURES)
            .get_or_insert_with(HashMap::new)
            .insert(value, created);
        // SAFETY: checked non-null above.
        unsafe { out(pt, value) }
    })())
}

fn destroy(
    objects: &Mutex<Option<HashMap<u64, Created>>>,
    op: Op,
    value: u64,
) -> Result<(), CUresult> {
    let c = ready()?;
    c.call(op, &ObjectId { id: value }, &[])?;
    if let Some(m) = lock(objects).as_mut() {
        m.remove(&value);
    }
    Ok(())
}

pub(crate) unsafe fn cuTexObjectDestroy(t: CUtexObject) -> CUresult {
    ret(destroy(&TEXTURES, Op::TexObjectDestroy, t))
}

/// Answers a `Get*Desc` query from what the object was created with.
fn created<R>(
    objects: &Mutex<Option<HashMap<u64, Created>>>,
    value: u64,
    f: impl FnOnce(&Created) -> Result<R, CUresult>,
) -> Result<R, CUresult> {
    ready()?;
    let m = lock(objects);
    let c = m
        .as_ref()
        .and_then(|m| m.get(&value))
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    f(c)
}

pub(crate) unsafe fn cuTexObjectGetResourceDesc(
    d: *mut CUDA_RESOURCE_DESC,
    t: CUtexObject,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(created(&TEXTURES, t, |c| unsafe { out(d, c.resource) }))
}

pub(crate) unsafe fn cuTexObjectGetTextureDesc(
    d: *mut CUDA_TEXTURE_DESC,
    t: CUtexObject,
) -> CUresult {
    ret(created(&TEXTURES, t, |c| {
        let src = c.texture.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        if d.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `d` is valid for a CUDA_TEXTURE_DESC, the twin's size (asserted above).
        unsafe { std::ptr::copy_nonoverlapping(src.as_bytes().as_ptr(), d as *mut u8, 104) };
        Ok(())
    }))
}

pub(crate) unsafe fn cuTexObjectGetResourceViewDesc(
    d: *mut CUDA_RESOURCE_VIEW_DESC,
    t: CUtexObject,
) -> CUresult {
    ret(created(&TEXTURES, t, |c| {
        let src = c.view.unwrap_or_default();
        if d.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `d` is valid for a CUDA_RESOURCE_VIEW_DESC, the twin's size (asserted above).
        unsafe { std::ptr::copy_nonoverlapping(src.as_bytes().as_ptr(), d as *mut u8, 112) };
        Ok(())
    }))
}

pub(crate) unsafe fn cuSurfObjectCreate(
    ps: *mut CUsurfObject,
    r: *const CUDA_RESOURCE_DESC,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if r.is_null() || ps.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, per the caller's contract.
        let (resource, device) = unsafe { resource(&*r)? };
        let body = p::SurfObjectCreate {
            device,
            _pad: 0,
            resource,
        };
        let value = c.call(Op::SurfObjectCreate, &body, &[])?.values[0];
        let created = Created {
            // SAFETY: non-null, per the caller's contract.
            resource: unsafe { *r },
            texture: None,
            view: None,
        };
        lock(&SURFACES)
            .get_or_insert_with(HashMap::new)
            .insert(value, created);
        // SAFETY: checked non-null above.
        unsafe { out(ps, value) }
    })())
}

pub(crate) unsafe fn cuSurfObjectDestroy(s: CUsurfObject) -> CUresult {
    ret(destroy(&SURFACES, Op::SurfObjectDestroy, s))
}

pub(crate) unsafe fn cuSurfObjectGetResourceDesc(
    d: *mut CUDA_RESOURCE_DESC,
    s: CUsurfObject,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(created(&SURFACES, s, |c| unsafe { out(d, c.resource) }))
}
