//! A session's arrays, texture objects and surface objects, and the commands that use them.
//!
//! Arrays are named by session-table ids. Texture and surface objects are the driver's own
//! values (kernels receive them as is), recorded per session so that only their creator can
//! destroy them and so teardown frees them.

use super::tables::Table;
use super::{lock, Session};
use crate::executor::{code, BoxCopy, Executor, GpuError, GpuResult, Mem, Place, Raw, Resource};
use baton_ipc::protocol::{self as p, Message, Op, NO_REPLY};
use std::collections::HashMap;

pub struct Array {
    pub device: u32,
    pub raw: Raw,
    /// Bytes per row, rows per slice and slices (at least 1 each).
    pub row: u64,
    pub height: u64,
    pub depth: u64,
    /// Charged against the tenant's memory quota.
    pub bytes: u64,
}

#[derive(Default)]
pub struct Arrays {
    pub(super) arrays: Table<Array>,
    /// Driver value -> device.
    textures: HashMap<u64, u32>,
    surfaces: HashMap<u64, u32>,
}

impl Arrays {
    /// Destroys everything, objects before the arrays they read. The session's streams are
    /// already finished.
    pub fn teardown(&mut self, exec: &dyn Executor) {
        for (t, device) in self.textures.drain() {
            let _ = exec.tex_object_destroy(device, t);
        }
        for (s, device) in self.surfaces.drain() {
            let _ = exec.surf_object_destroy(device, s);
        }
        for (_, a) in self.arrays.drain() {
            let _ = exec.array_destroy(a.device, a.raw);
        }
    }
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

/// Flags of arrays with no memory of their own until mapped, which Baton does not manage.
const SPARSE_OR_DEFERRED: u32 = 0x40 | 0x80;

impl Session {
    /// Executes an array, box-copy, texture or surface command; answers at most one value.
    pub(super) fn execute_arrays(&mut self, m: &Message<'_>) -> GpuResult<u64> {
        let exec = self.exec.clone();
        let exec = &*exec;
        let body_err = |_| invalid();
        match m.op {
            Op::ArrayCreate => {
                let b: p::ArrayCreate = m.body().map_err(body_err)?;
                if b.flags & SPARSE_OR_DEFERRED != 0 {
                    return Err(GpuError(code::NOT_SUPPORTED));
                }
                let elem = p::element_bytes(b.format, b.channels).ok_or_else(invalid)?;
                let row = b
                    .width
                    .checked_mul(elem)
                    .filter(|&r| r > 0)
                    .ok_or_else(invalid)?;
                let (height, depth) = (b.height.max(1), b.depth.max(1));
                let bytes = row
                    .checked_mul(height)
                    .and_then(|n| n.checked_mul(depth))
                    .ok_or_else(invalid)?;
                if !self.shared.charge(bytes) {
                    return Err(GpuError(code::OUT_OF_MEMORY));
                }
                let raw = exec
                    .array_create(b.device, &b)
                    .inspect_err(|_| self.shared.refund(bytes))?;
                Ok(self.arrays.arrays.insert(Array {
                    device: b.device,
                    raw,
                    row,
                    height,
                    depth,
                    bytes,
                }))
            }
            Op::ArrayDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let a = self.arrays.arrays.remove(b.id)?;
                // Copies of this session still in flight may use the array.
                let _ = self.streams.synchronize_all(exec);
                self.shared.refund(a.bytes);
                exec.array_destroy(a.device, a.raw).map(|_| 0)
            }
            Op::Copy3D => {
                let b: p::Copy3D = m.body().map_err(body_err)?;
                let extent = [b.width, b.height, b.depth];
                if extent.contains(&0) {
                    return Ok(0);
                }
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                let copy = BoxCopy {
                    dst: self.place(&b.dst, extent, b.chunk, device)?,
                    dst_origin: [b.dst.x, b.dst.y, b.dst.z],
                    src: self.place(&b.src, extent, b.chunk, device)?,
                    src_origin: [b.src.x, b.src.y, b.src.z],
                    extent,
                };
                exec.copy_3d(device, &copy, stream)?;
                let staged = b.dst.kind == p::SIDE_CHUNK || b.src.kind == p::SIDE_CHUNK;
                if staged || m.reply != NO_REPLY {
                    exec.stream_synchronize(device, stream)?;
                }
                Ok(0)
            }
            Op::TexObjectCreate => {
                let b: p::TexObjectCreate = m.body().map_err(body_err)?;
                let res = self.resource(&b.resource, b.device)?;
                let view = (b.has_view != 0).then_some(&b.view);
                let t = exec.tex_object_create(b.device, &res, &b.texture, view)?;
                self.arrays.textures.insert(t, b.device);
                Ok(t)
            }
            Op::TexObjectDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let device = self.arrays.textures.remove(&b.id).ok_or_else(invalid)?;
                exec.tex_object_destroy(device, b.id).map(|_| 0)
            }
            Op::SurfObjectCreate => {
                let b: p::SurfObjectCreate = m.body().map_err(body_err)?;
                if b.resource.kind != p::RESOURCE_ARRAY {
                    return Err(invalid());
                }
                let res = self.resource(&b.resource, b.device)?;
                let s = exec.surf_object_create(b.device, &res)?;
                self.arrays.surfaces.insert(s, b.device);
                Ok(s)
            }
            Op::SurfObjectDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let device = self.arrays.surfaces.remove(&b.id).ok_or_else(invalid)?;
                exec.surf_object_destroy(device, b.id).map(|_| 0)
            }
            _ => Err(invalid()),
        }
    }

    /// Checks one side of a box copy of `extent` and says where it is.
    pub(super) fn place(
        &self,
        s: &p::CopySide,
        extent: [u64; 3],
        chunk: u32,
        device: u32,
    ) -> GpuResult<Place> {
        let [w, h, d] = extent;
        let end = |origin: u64, len: u64| origin.checked_add(len);
        if s.kind == p::SIDE_ARRAY {
            let a = self.arrays.arrays.get(s.addr)?;
            let fits = end(s.x, w).is_some_and(|e| e <= a.row)
                && end(s.y, h).is_some_and(|e| e <= a.height)
                && end(s.z, d).is_some_and(|e| e <= a.depth);
            if !fits || a.device != device {
                return Err(invalid());
            }
            self.note(super::graph_nodes::Named::Array(s.addr, a.raw));
            return Ok(Place::Array(a.raw));
        }
        // Rows and slices may not overlap: that bounds the work by the memory checked below.
        if (h > 1 || d > 1) && s.pitch < w || d > 1 && s.height < h {
            return Err(invalid());
        }
        // The farthest byte the box touches: the end of its last row.
        let span = (|| {
            let last_row = s.y.checked_add(h - 1)?;
            let rows = s.z.checked_add(d - 1)?.checked_mul(s.height)?;
            let rows = rows.checked_add(last_row)?;
            rows.checked_mul(s.pitch)?.checked_add(s.x)?.checked_add(w)
        })()
        .ok_or_else(invalid)?;
        let mem = match s.kind {
            p::SIDE_DEVICE => {
                self.check_device_range(s.addr, span)?;
                Mem::Device(s.addr)
            }
            p::SIDE_HOST => {
                if !lock(&self.shared.host).check(s.addr, span) {
                    return Err(invalid());
                }
                self.note(super::graph_nodes::Named::Mem(s.addr, span));
                Mem::Host(s.addr as usize as *mut u8)
            }
            p::SIDE_CHUNK => {
                let base = self.region.chunk_ptr(chunk).ok_or_else(invalid)?;
                if end(s.addr, span).is_none_or(|e| e > self.region.chunk_size() as u64) {
                    return Err(invalid());
                }
                // SAFETY: the offset stays inside the chunk (checked just above).
                Mem::Host(unsafe { base.add(s.addr as usize) })
            }
            _ => return Err(invalid()),
        };
        Ok(Place::Linear {
            mem,
            pitch: s.pitch,
            height: s.height,
        })
    }

    /// Translates a resource: array ids to the session's arrays, memory checked to be its own.
    fn resource(&self, r: &p::ResourceDesc, device: u32) -> GpuResult<Resource> {
        if r.flags != 0 {
            return Err(invalid());
        }
        match r.kind {
            p::RESOURCE_ARRAY => {
                let a = self.arrays.arrays.get(r.handle)?;
                if a.device != device {
                    return Err(invalid());
                }
                Ok(Resource::Array(a.raw))
            }
            p::RESOURCE_LINEAR => {
                if r.width == 0 {
                    return Err(invalid());
                }
                self.check_device_range(r.handle, r.width)?;
                Ok(Resource::Linear {
                    ptr: r.handle,
                    format: r.format,
                    channels: r.channels,
                    bytes: r.width,
                })
            }
            p::RESOURCE_PITCH2D => {
                let elem = p::element_bytes(r.format, r.channels).ok_or_else(invalid)?;
                let span = (|| {
                    let last = r.pitch.checked_mul(r.height.checked_sub(1)?)?;
                    last.checked_add(r.width.checked_mul(elem)?)
                })()
                .filter(|&s| s > 0)
                .ok_or_else(invalid)?;
                self.check_device_range(r.handle, span)?;
                Ok(Resource::Pitch2D {
                    ptr: r.handle,
                    format: r.format,
                    channels: r.channels,
                    width: r.width,
                    height: r.height,
                    pitch: r.pitch,
                })
            }
            _ => Err(GpuError(code::NOT_SUPPORTED)),
        }
    }
}
