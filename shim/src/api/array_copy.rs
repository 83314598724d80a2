//! Copies with an array on either side (and 3D copies of any memory), as box copies run by
//! the daemon. Pageable host memory is staged through the region's first staging chunk, as
//! many whole rows at a time as fit (a row wider than the chunk goes in pieces).

use super::array::Array;
use super::context::current_device;
use super::graph_pageable::{captured, Layout, Shadow};
use super::memory::{is_device, is_pinned};
use super::stream::{resolve, submitted};
use super::util::{ready, ret};
use crate::client::{lock, Client};
use crate::objects::Stream;
use baton_ipc::protocol::{self as p, ObjectId, Op};
use cuda_abi::*;
use std::ffi::c_void;
use std::sync::Arc;

/// What one side of a copy is; linear kinds carry their base address.
#[derive(Clone, Copy)]
enum Loc {
    Array(&'static Array),
    Device(u64),
    Pinned(u64),
    Pageable(u64),
}

impl Loc {
    fn host(self) -> bool {
        matches!(self, Loc::Pinned(_) | Loc::Pageable(_))
    }
    fn shifted(self, by: u64) -> Loc {
        match self {
            Loc::Device(a) => Loc::Device(a + by),
            Loc::Pinned(a) => Loc::Pinned(a + by),
            Loc::Pageable(a) => Loc::Pageable(a + by),
            a => a,
        }
    }
}

/// One side of a box copy: where the box starts, and the layout of linear memory.
#[derive(Clone, Copy)]
struct Side {
    loc: Loc,
    x: u64,
    y: u64,
    z: u64,
    pitch: u64,
    height: u64,
}

impl Side {
    fn at(self, dx: u64, dy: u64, dz: u64) -> Side {
        Side {
            x: self.x + dx,
            y: self.y + dy,
            z: self.z + dz,
            ..self
        }
    }

    /// Address of the box's row `y` in slice `z`, for linear memory.
    fn row_addr(&self, base: u64, y: u64, z: u64) -> u64 {
        base + ((self.z + z) * self.height + self.y + y) * self.pitch + self.x
    }

    fn wire(&self) -> Result<p::CopySide, CUresult> {
        let (kind, addr) = match self.loc {
            Loc::Array(a) => (p::SIDE_ARRAY, a.daemon_id()?),
            Loc::Device(a) => (p::SIDE_DEVICE, a),
            Loc::Pinned(a) => (p::SIDE_HOST, a),
            Loc::Pageable(_) => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        };
        Ok(p::CopySide {
            kind,
            _pad: 0,
            addr,
            x: self.x,
            y: self.y,
            z: self.z,
            pitch: self.pitch,
            height: self.height,
        })
    }
}

fn host_loc(p: u64) -> Loc {
    if is_pinned(p as usize, 1) {
        Loc::Pinned(p)
    } else {
        Loc::Pageable(p)
    }
}

fn device_loc(p: u64) -> Loc {
    if !is_device(p) && is_pinned(p as usize, 1) {
        Loc::Pinned(p)
    } else {
        Loc::Device(p)
    }
}

fn classify(ty: CUmemorytype, host: u64, device: u64, array: CUarray) -> Result<Loc, CUresult> {
    Ok(match ty {
        CUmemorytype::CU_MEMORYTYPE_HOST => host_loc(host),
        CUmemorytype::CU_MEMORYTYPE_DEVICE => device_loc(device),
        CUmemorytype::CU_MEMORYTYPE_ARRAY => Loc::Array(Array::get(array)?),
        CUmemorytype::CU_MEMORYTYPE_UNIFIED if is_device(device) => Loc::Device(device),
        CUmemorytype::CU_MEMORYTYPE_UNIFIED => host_loc(device),
        _ => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    })
}

fn stream_of(h: Option<CUstream>) -> Result<(&'static Client, &'static Stream), CUresult> {
    let c = ready()?;
    let s = match h {
        Some(h) => resolve(c, h)?,
        None => {
            super::graph::legacy_call_allowed()?;
            Stream::legacy(c, current_device()?)?
        }
    };
    Ok((c, s))
}

/// Copies the box `extent` (bytes, rows, slices) from `src` to `dst` on stream `s`. `sync`
/// copies touching host memory return once the data has arrived.
fn copy_box(
    c: &'static Client,
    s: &'static Stream,
    dst: Side,
    src: Side,
    extent: [u64; 3],
    sync: bool,
) -> Result<(), CUresult> {
    if extent.contains(&0) {
        return Ok(());
    }
    let [w, h, d] = extent;
    for side in [&dst, &src] {
        if !matches!(side.loc, Loc::Array(_)) && ((h > 1 || d > 1) && side.pitch < w) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
    }
    let sid = s.daemon_id()?;
    if s.capture.load(std::sync::atomic::Ordering::Acquire) != 0 {
        return capture_box(c, s, dst, src, extent);
    }
    match (dst.loc, src.loc) {
        (Loc::Pinned(db) | Loc::Pageable(db), Loc::Pinned(sb) | Loc::Pageable(sb)) => {
            // Host to host: the stream's earlier work first, then plain copies.
            c.call(Op::StreamSynchronize, &ObjectId { id: sid }, &[])?;
            for z in 0..d {
                for y in 0..h {
                    let (to, from) = (dst.row_addr(db, y, z), src.row_addr(sb, y, z));
                    // SAFETY: both rows lie in the caller's described regions.
                    unsafe { std::ptr::copy(from as *const u8, to as *mut u8, w as usize) };
                }
            }
            Ok(())
        }
        (Loc::Pageable(base), _) => stage(c, s, src, dst, base, extent, false),
        (_, Loc::Pageable(base)) => stage(c, s, dst, src, base, extent, true),
        _ => {
            let body = p::Copy3D {
                dst: dst.wire()?,
                src: src.wire()?,
                width: w,
                height: h,
                depth: d,
                stream: sid,
                chunk: u32::MAX,
                _pad: 0,
            };
            submitted(s);
            // Copies between device memory and arrays are asynchronous with respect to the
            // host, even the plain forms.
            if sync && (dst.loc.host() || src.loc.host()) {
                c.call(Op::Copy3D, &body, &[]).map(|_| ())
            } else {
                c.post(Op::Copy3D, &body, &[])
            }
        }
    }
}

/// A copy between pageable memory at `base` (described by `host`) and `other`, through the
/// first staging chunk. `upload`: from the host.
fn stage(
    c: &'static Client,
    s: &'static Stream,
    other: Side,
    host: Side,
    base: u64,
    extent: [u64; 3],
    upload: bool,
) -> Result<(), CUresult> {
    let [w, h, d] = extent;
    let sid = s.daemon_id()?;
    let _g = lock(&c.staging);
    let chunk = c.region.chunk_ptr(0).ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
    let size = c.region.chunk_size() as u64;
    submitted(s);
    // One piece: `rows` rows of `len` bytes from row `y`, slice `z`, byte `x` of the box.
    let piece = |x: u64, y: u64, z: u64, len: u64, rows: u64| -> Result<(), CUresult> {
        let host_row = |r: u64| host.row_addr(base, y + r, z) + x;
        if upload {
            for r in 0..rows {
                // SAFETY: the row lies in the caller's region; the chunk holds `rows * len`
                // bytes (at most its size) and is ours while the staging lock is held.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        host_row(r) as *const u8,
                        chunk.add((r * len) as usize),
                        len as usize,
                    )
                };
            }
        }
        let staged = p::CopySide {
            kind: p::SIDE_CHUNK,
            _pad: 0,
            addr: 0,
            x: 0,
            y: 0,
            z: 0,
            pitch: len,
            height: rows,
        };
        let theirs = other.at(x, y, z).wire()?;
        let (dst, src) = if upload {
            (theirs, staged)
        } else {
            (staged, theirs)
        };
        let body = p::Copy3D {
            dst,
            src,
            width: len,
            height: rows,
            depth: 1,
            stream: sid,
            chunk: 0,
            _pad: 0,
        };
        // The daemon answers once the copy is done, so the chunk is free again.
        c.call(Op::Copy3D, &body, &[])?;
        if !upload {
            for r in 0..rows {
                // SAFETY: as above, in the other direction.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        chunk.add((r * len) as usize),
                        host_row(r) as *mut u8,
                        len as usize,
                    )
                };
            }
        }
        Ok(())
    };
    for z in 0..d {
        let mut y = 0;
        while y < h {
            if w <= size {
                let rows = (size / w).min(h - y);
                piece(0, y, z, w, rows)?;
                y += rows;
            } else {
                let mut x = 0;
                while x < w {
                    let len = size.min(w - x);
                    piece(x, y, z, len, 1)?;
                    x += len;
                }
                y += 1;
            }
        }
    }
    Ok(())
}

/// A `CUDA_MEMCPY2D` with an array on a side (called from the 2D copy path).
pub(super) fn copy_2d(
    c: &'static Client,
    s: &'static Stream,
    p: &CUDA_MEMCPY2D,
    sync: bool,
) -> Result<(), CUresult> {
    let src = Side {
        loc: classify(p.srcMemoryType, p.srcHost as u64, p.srcDevice, p.srcArray)?,
        x: p.srcXInBytes as u64,
        y: p.srcY as u64,
        z: 0,
        pitch: p.srcPitch as u64,
        height: 0,
    };
    let dst = Side {
        loc: classify(p.dstMemoryType, p.dstHost as u64, p.dstDevice, p.dstArray)?,
        x: p.dstXInBytes as u64,
        y: p.dstY as u64,
        z: 0,
        pitch: p.dstPitch as u64,
        height: 0,
    };
    let extent = [p.WidthInBytes as u64, p.Height as u64, 1];
    copy_box(c, s, dst, src, extent, sync)
}

/// # Safety
/// `p` must be null or point to a `CUDA_MEMCPY3D` whose host sides are valid for the copy.
unsafe fn copy_3d(p: *const CUDA_MEMCPY3D, stream: Option<CUstream>) -> Result<(), CUresult> {
    let (c, s) = stream_of(stream)?;
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, per the contract.
    let p = unsafe { &*p };
    if p.srcLOD != 0 || p.dstLOD != 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let src = Side {
        loc: classify(p.srcMemoryType, p.srcHost as u64, p.srcDevice, p.srcArray)?,
        x: p.srcXInBytes as u64,
        y: p.srcY as u64,
        z: p.srcZ as u64,
        pitch: p.srcPitch as u64,
        height: p.srcHeight as u64,
    };
    let dst = Side {
        loc: classify(p.dstMemoryType, p.dstHost as u64, p.dstDevice, p.dstArray)?,
        x: p.dstXInBytes as u64,
        y: p.dstY as u64,
        z: p.dstZ as u64,
        pitch: p.dstPitch as u64,
        height: p.dstHeight as u64,
    };
    for side in [&src, &dst] {
        let linear = !matches!(side.loc, Loc::Array(_));
        if linear && p.Depth > 1 && side.height < p.Height as u64 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
    }
    let extent = [p.WidthInBytes as u64, p.Height as u64, p.Depth as u64];
    copy_box(c, s, dst, src, extent, stream.is_none())
}

/// A graph memcpy node's copy, on the wire, and the shadows it names. A node runs long after
/// it is described, so only memory the daemon can reach then will do: device memory, arrays and
/// pinned host memory; a pageable side is replaced by a pinned shadow (see `graph_pageable`).
pub(super) fn graph_copy(p: &CUDA_MEMCPY3D) -> Result<(p::Copy3D, Vec<Arc<Shadow>>), CUresult> {
    if p.srcLOD != 0 || p.dstLOD != 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let extent = [p.WidthInBytes as u64, p.Height as u64, p.Depth as u64];
    if extent.contains(&0) {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let mut shadows = Vec::new();
    let mut side = |loc: Loc, x: usize, y: usize, z: usize, pitch: usize, height: usize, upload| {
        let side = Side {
            loc,
            x: x as u64,
            y: y as u64,
            z: z as u64,
            pitch: pitch as u64,
            height: height as u64,
        };
        let side = shadowed(side, extent, upload, &mut shadows)?;
        side.wire()
    };
    let src = classify(p.srcMemoryType, p.srcHost as u64, p.srcDevice, p.srcArray)?;
    let dst = classify(p.dstMemoryType, p.dstHost as u64, p.dstDevice, p.dstArray)?;
    let copy = p::Copy3D {
        src: side(
            src,
            p.srcXInBytes,
            p.srcY,
            p.srcZ,
            p.srcPitch,
            p.srcHeight,
            true,
        )?,
        dst: side(
            dst,
            p.dstXInBytes,
            p.dstY,
            p.dstZ,
            p.dstPitch,
            p.dstHeight,
            false,
        )?,
        width: extent[0],
        height: extent[1],
        depth: extent[2],
        stream: 0,
        chunk: u32::MAX,
        _pad: 0,
    };
    Ok((copy, shadows))
}

/// `side` itself, or, for pageable memory, a pinned shadow of the box it covers (same layout,
/// starting at the shadow's first byte), added to `shadows`. `upload`: the side is read.
fn shadowed(
    side: Side,
    extent: [u64; 3],
    upload: bool,
    shadows: &mut Vec<Arc<Shadow>>,
) -> Result<Side, CUresult> {
    let Loc::Pageable(base) = side.loc else {
        return Ok(side);
    };
    let [w, h, d] = extent;
    if (h > 1 || d > 1) && side.pitch < w || d > 1 && side.height < h {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let slice = side
        .pitch
        .checked_mul(side.height)
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    let first = side
        .z
        .checked_mul(slice)
        .and_then(|o| o.checked_add(side.y.checked_mul(side.pitch)?))
        .and_then(|o| o.checked_add(side.x))
        .and_then(|o| o.checked_add(base))
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    let layout = Layout {
        width: w,
        height: h,
        depth: d,
        pitch: side.pitch,
        slice,
    };
    let s = Shadow::new(first, layout, upload)?;
    let pinned = Side {
        loc: Loc::Pinned(s.addr()),
        x: 0,
        y: 0,
        z: 0,
        ..side
    };
    shadows.push(s);
    Ok(pinned)
}

/// A linear copy of `len` bytes on capturing stream `s`, one side pageable.
pub(super) fn capture_linear(
    c: &'static Client,
    s: &'static Stream,
    dst: u64,
    src: u64,
    len: u64,
) -> Result<(), CUresult> {
    let at = |p: u64| Side {
        loc: if is_device(p) {
            Loc::Device(p)
        } else {
            host_loc(p)
        },
        x: 0,
        y: 0,
        z: 0,
        pitch: len,
        height: 1,
    };
    capture_box(c, s, at(dst), at(src), [len, 1, 1])
}

/// A copy on a capturing stream (a graph node to be): a pageable side is replaced by a shadow
/// that the capture's graph keeps.
fn capture_box(
    c: &'static Client,
    s: &'static Stream,
    dst: Side,
    src: Side,
    extent: [u64; 3],
) -> Result<(), CUresult> {
    let capture = s.capture.load(std::sync::atomic::Ordering::Acquire);
    if dst.loc.host() && src.loc.host() {
        crate::log::once(
            "cuMemcpy",
            "cannot capture host-to-host copies under Baton (NOT_SUPPORTED)",
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    let mut shadows = Vec::new();
    let src = shadowed(src, extent, true, &mut shadows)?;
    let dst = shadowed(dst, extent, false, &mut shadows)?;
    let body = p::Copy3D {
        dst: dst.wire()?,
        src: src.wire()?,
        width: extent[0],
        height: extent[1],
        depth: extent[2],
        stream: s.daemon_id()?,
        chunk: u32::MAX,
        _pad: 0,
    };
    submitted(s);
    c.post(Op::Copy3D, &body, &[])?;
    for sh in shadows {
        captured(capture, sh);
    }
    Ok(())
}

pub(crate) unsafe fn cuMemcpy3D_v2(p: *const CUDA_MEMCPY3D) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { copy_3d(p, None) })
}

pub(crate) unsafe fn cuMemcpy3DAsync_v2(p: *const CUDA_MEMCPY3D, s: CUstream) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { copy_3d(p, Some(s)) })
}

/// One end of a linear copy: a byte offset into an array (its rows read one after another), or
/// memory.
#[derive(Clone, Copy)]
enum End {
    Array(&'static Array, u64),
    Mem(Loc),
}

impl End {
    /// The side `pos` bytes in, and how many bytes (up to `left`) stay within its row, or, for
    /// an array read from a row start, within its slice as whole rows.
    fn at(self, pos: u64, left: u64) -> (Side, u64, u64) {
        match self {
            End::Array(a, off) => {
                let (height, _) = a.rows();
                let at = off + pos;
                let (row, x) = (at / a.row, at % a.row);
                let (y, z) = (row % height, row / height);
                let side = Side {
                    loc: Loc::Array(a),
                    x,
                    y,
                    z,
                    pitch: 0,
                    height: 0,
                };
                let rows = if x == 0 {
                    (left / a.row).min(height - y)
                } else {
                    0
                };
                (side, (a.row - x).min(left), rows)
            }
            End::Mem(loc) => {
                let side = Side {
                    loc: loc.shifted(pos),
                    x: 0,
                    y: 0,
                    z: 0,
                    pitch: 0,
                    height: 0,
                };
                (side, left, u64::MAX)
            }
        }
    }

    fn check(self, n: u64) -> Result<(), CUresult> {
        if let End::Array(a, off) = self {
            let (h, d) = a.rows();
            if off.checked_add(n).is_none_or(|e| e > a.row * h * d) {
                return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
            }
        }
        Ok(())
    }

    fn row(self) -> u64 {
        match self {
            End::Array(a, _) => a.row,
            End::Mem(_) => u64::MAX,
        }
    }
}

/// `n` bytes from `src` to `dst`, split into boxes at array row (and slice) boundaries.
fn copy_linear(dst: End, src: End, n: u64, stream: Option<CUstream>) -> Result<(), CUresult> {
    let (c, s) = stream_of(stream)?;
    dst.check(n)?;
    src.check(n)?;
    let mut pos = 0;
    while pos < n {
        let left = n - pos;
        let (ds, dlen, drows) = dst.at(pos, left);
        let (ss, slen, srows) = src.at(pos, left);
        let row = dst.row().min(src.row());
        let rows = drows.min(srows);
        // Whole rows move as one box when only one side is an array.
        let (ds, ss, extent) =
            if rows >= 1 && row != u64::MAX && (dst.row() == u64::MAX || src.row() == u64::MAX) {
                let pitched = |side: Side| Side { pitch: row, ..side };
                (pitched(ds), pitched(ss), [row, rows, 1])
            } else {
                (ds, ss, [dlen.min(slen), 1, 1])
            };
        copy_box(c, s, ds, ss, extent, stream.is_none())?;
        pos += extent[0] * extent[1];
    }
    Ok(())
}

fn array_end(h: CUarray, off: usize) -> Result<End, CUresult> {
    Ok(End::Array(Array::get(h)?, off as u64))
}

pub(crate) unsafe fn cuMemcpyHtoA_v2(
    dst: CUarray,
    off: usize,
    src: *const c_void,
    n: usize,
) -> CUresult {
    let src = End::Mem(host_loc(src as u64));
    ret(array_end(dst, off).and_then(|d| copy_linear(d, src, n as u64, None)))
}

pub(crate) unsafe fn cuMemcpyHtoAAsync_v2(
    dst: CUarray,
    off: usize,
    src: *const c_void,
    n: usize,
    s: CUstream,
) -> CUresult {
    let src = End::Mem(host_loc(src as u64));
    ret(array_end(dst, off).and_then(|d| copy_linear(d, src, n as u64, Some(s))))
}

pub(crate) unsafe fn cuMemcpyAtoH_v2(
    dst: *mut c_void,
    src: CUarray,
    off: usize,
    n: usize,
) -> CUresult {
    let dst = End::Mem(host_loc(dst as u64));
    ret(array_end(src, off).and_then(|s| copy_linear(dst, s, n as u64, None)))
}

pub(crate) unsafe fn cuMemcpyAtoHAsync_v2(
    dst: *mut c_void,
    src: CUarray,
    off: usize,
    n: usize,
    st: CUstream,
) -> CUresult {
    let dst = End::Mem(host_loc(dst as u64));
    ret(array_end(src, off).and_then(|s| copy_linear(dst, s, n as u64, Some(st))))
}

pub(crate) unsafe fn cuMemcpyAtoD_v2(
    dst: CUdeviceptr,
    src: CUarray,
    off: usize,
    n: usize,
) -> CUresult {
    let dst = End::Mem(device_loc(dst));
    ret(array_end(src, off).and_then(|s| copy_linear(dst, s, n as u64, None)))
}

pub(crate) unsafe fn cuMemcpyDtoA_v2(
    dst: CUarray,
    off: usize,
    src: CUdeviceptr,
    n: usize,
) -> CUresult {
    let src = End::Mem(device_loc(src));
    ret(array_end(dst, off).and_then(|d| copy_linear(d, src, n as u64, None)))
}

pub(crate) unsafe fn cuMemcpyAtoA_v2(
    dst: CUarray,
    doff: usize,
    src: CUarray,
    soff: usize,
    n: usize,
) -> CUresult {
    ret((|| {
        copy_linear(array_end(dst, doff)?, array_end(src, soff)?, n as u64, None)
    })())
}
