//! Device memory, pinned host memory, copies and memsets.
//!
//! The shim remembers every device allocation and pinned host allocation it made, so it can
//! tell what a pointer is (for `cuMemcpy`, address ranges and pointer attributes) without
//! asking the daemon. Pinned host memory is mapped at the same address in the daemon, so copies
//! from it are real DMA and its address is also its device address.

use super::context::current_device;
use super::stream::{resolve, submitted};
use super::util::{out, ready, ret};
use crate::client::{lock, Client, StagedCopy};
use crate::objects::Stream;
use baton_ipc::control::{Request, Response};
use baton_ipc::protocol::{Copy, DeviceOnly, MemAlloc, MemFree, Memset, Op};
use baton_ipc::shm::SharedRegion;
use cuda_abi::*;
use std::collections::BTreeMap;
use std::ffi::{c_uchar, c_uint, c_ushort, c_void};
use std::sync::Mutex;

/// Known device ranges: start -> (len, device, is an allocation of ours).
static DEVICE: Mutex<BTreeMap<u64, (u64, u32, bool)>> = Mutex::new(BTreeMap::new());

pub(crate) fn remember_global(ptr: u64, len: u64, device: u32) {
    lock(&DEVICE).insert(ptr, (len, device, false));
}

/// Addresses of graph allocations (graph memory nodes): their memory comes and goes with graph
/// launches and frees, so they stay known device ranges, and a free of one is always passed
/// on for the daemon to judge.
static GRAPH_ADDRS: Mutex<BTreeMap<u64, ()>> = Mutex::new(BTreeMap::new());

pub(crate) fn remember_graph_alloc(ptr: u64, len: u64, device: u32) {
    lock(&DEVICE).insert(ptr, (len, device, false));
    lock(&GRAPH_ADDRS).insert(ptr, ());
}

fn is_graph_alloc(ptr: u64) -> bool {
    lock(&GRAPH_ADDRS).contains_key(&ptr)
}

/// A `cuMemMap`ped range: device memory for pointer queries and copies.
/// Device memory this process frees with `cuMemFree`/`cuMemFreeAsync` (an imported pool
/// pointer: freeing it lets go of the import).
pub(crate) fn remember_freeable(ptr: u64, len: u64, device: u32) {
    lock(&DEVICE).insert(ptr, (len, device, true));
}

pub(crate) fn remember_mapping(ptr: u64, len: u64, device: u32) {
    lock(&DEVICE).insert(ptr, (len, device, false));
}

/// Forgets the mapped ranges starting in `[ptr, ptr+len)`.
pub(crate) fn forget_mappings(ptr: u64, len: u64) {
    let mut d = lock(&DEVICE);
    let starts: Vec<u64> = d
        .range(ptr..ptr.saturating_add(len))
        .filter(|(_, v)| !v.2)
        .map(|(&k, _)| k)
        .collect();
    for s in starts {
        d.remove(&s);
    }
}

/// Whether `p` lies in a device allocation or variable the shim knows.
pub(crate) fn is_device(p: u64) -> bool {
    device_range(p).is_some()
}

/// The device allocation containing `p`: (start, len, device).
fn device_range(p: u64) -> Option<(u64, u64, u32)> {
    let d = lock(&DEVICE);
    let (&s, &(len, dev, _)) = d.range(..=p).next_back()?;
    (p < s + len).then_some((s, len, dev))
}

struct Chunk {
    _map: SharedRegion,
    len: usize,
    /// Free ranges inside the chunk: offset -> len.
    free: BTreeMap<usize, usize>,
}

#[derive(Default)]
struct HostHeap {
    chunks: BTreeMap<usize, Chunk>,
    /// Allocation start -> (len, flags).
    allocs: BTreeMap<usize, (usize, c_uint)>,
}

static HOST: Mutex<HostHeap> = Mutex::new(HostHeap {
    chunks: BTreeMap::new(),
    allocs: BTreeMap::new(),
});

/// Pinned allocations are page aligned, as the driver's are.
const HOST_ALIGN: usize = 4096;

impl HostHeap {
    fn take(&mut self, len: usize) -> Option<usize> {
        for (&base, c) in self.chunks.iter_mut() {
            if let Some((&off, &flen)) = c.free.iter().find(|(_, &l)| l >= len) {
                c.free.remove(&off);
                if flen > len {
                    c.free.insert(off + len, flen - len);
                }
                return Some(base + off);
            }
        }
        None
    }

    /// Returns a range to its chunk; gives back the chunk's base if it is now empty.
    fn give(&mut self, addr: usize, len: usize) -> Option<usize> {
        let (&base, c) = self.chunks.range_mut(..=addr).next_back()?;
        let (mut off, mut len) = (addr - base, len);
        if let Some((&p, &pl)) = c.free.range(..off).next_back() {
            if p + pl == off {
                c.free.remove(&p);
                off = p;
                len += pl;
            }
        }
        if let Some(&nl) = c.free.get(&(off + len)) {
            c.free.remove(&(off + len));
            len += nl;
        }
        c.free.insert(off, len);
        (off == 0 && len == c.len).then_some(base)
    }

    /// The pinned allocation containing `[p, p+len)`, if any: (start, alloc len, flags).
    fn find(&self, p: usize, len: usize) -> Option<(usize, usize, c_uint)> {
        let (&s, &(l, f)) = self.allocs.range(..=p).next_back()?;
        (p.checked_add(len)? <= s + l).then_some((s, l, f))
    }
}

/// `HostHeap::allocs` flag of managed allocations (no `CU_MEMHOSTALLOC_*` bit is this high).
const MANAGED: c_uint = 1 << 31;

/// Whether `p` starts a managed allocation.
fn is_managed(p: usize) -> bool {
    lock(&HOST)
        .allocs
        .get(&p)
        .is_some_and(|&(_, f)| f & MANAGED != 0)
}

/// Whether `p` lies in a managed allocation.
fn in_managed(p: usize, len: usize) -> bool {
    lock(&HOST)
        .find(p, len.max(1))
        .is_some_and(|(_, _, f)| f & MANAGED != 0)
}

/// Whether `[p, p+len)` is pinned memory Baton handed out.
pub(crate) fn is_pinned(p: usize, len: usize) -> bool {
    lock(&HOST).find(p, len.max(1)).is_some()
}

pub(crate) fn host_alloc(
    c: &'static Client,
    size: usize,
    flags: c_uint,
) -> Result<*mut c_void, CUresult> {
    let len = size.max(1).div_ceil(HOST_ALIGN) * HOST_ALIGN;
    let mut heap = lock(&HOST);
    let addr = match heap.take(len) {
        Some(a) => a,
        None => {
            let (resp, mut fds) = c.control(&Request::AllocHost { len: len as u64 }, &[])?;
            let (addr, clen) = match resp {
                Response::HostChunk { addr, len } => (addr as usize, len as usize),
                Response::Error { .. } => return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
                _ => return Err(CUresult::CUDA_ERROR_UNKNOWN),
            };
            let fd = fds.pop().ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
            let map = match SharedRegion::map(fd, clen, Some(addr)) {
                Ok(m) => m,
                Err(e) => {
                    crate::log::once(
                        "cuMemHostAlloc",
                        &format!("could not map pinned memory at the daemon's address ({e})"),
                    );
                    let _ = c.control(&Request::FreeHost { addr: addr as u64 }, &[]);
                    return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
                }
            };
            let mut free = BTreeMap::new();
            free.insert(0, clen);
            heap.chunks.insert(
                addr,
                Chunk {
                    _map: map,
                    len: clen,
                    free,
                },
            );
            heap.take(len).ok_or(CUresult::CUDA_ERROR_OUT_OF_MEMORY)?
        }
    };
    heap.allocs.insert(addr, (len, flags));
    Ok(addr as *mut c_void)
}

pub(crate) fn host_free(c: &'static Client, p: *mut c_void) -> Result<(), CUresult> {
    let mut heap = lock(&HOST);
    let (len, _) = heap
        .allocs
        .remove(&(p as usize))
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    if let Some(base) = heap.give(p as usize, len) {
        // The GPU may still be reading the chunk: finish this client's work first, as
        // cuMemFreeHost does, then hand the chunk back.
        let device = current_device().unwrap_or(0);
        c.call(Op::CtxSynchronize, &DeviceOnly { device, _pad: 0 }, &[])?;
        heap.chunks.remove(&base);
        c.control(&Request::FreeHost { addr: base as u64 }, &[])?;
    }
    Ok(())
}

pub(crate) unsafe fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    ret((|| {
        let c = ready()?;
        if bytes == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let device = current_device()?;
        let r = c.call(
            Op::MemAlloc,
            &MemAlloc {
                device,
                _pad: 0,
                bytes: bytes as u64,
            },
            &[],
        )?;
        let p = r.values[0];
        lock(&DEVICE).insert(p, (bytes as u64, device, true));
        // SAFETY: forwarded caller contract.
        unsafe { out(dptr, p) }
    })())
}

pub(crate) unsafe fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    ret((|| {
        let c = ready()?;
        if dptr == 0 {
            return Ok(());
        }
        if is_graph_alloc(dptr) {
            return c.call(Op::MemFree, &MemFree { dptr }, &[]).map(|_| ());
        }
        match lock(&DEVICE).get(&dptr) {
            Some(&(_, _, true)) => {}
            _ if is_managed(dptr as usize) => return host_free(c, dptr as *mut c_void),
            _ => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        }
        c.call(Op::MemFree, &MemFree { dptr }, &[])?;
        lock(&DEVICE).remove(&dptr);
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    ret((|| {
        let c = ready()?;
        let device = current_device()?;
        let r = c.call(Op::MemGetInfo, &DeviceOnly { device, _pad: 0 }, &[])?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(free, r.values[0] as usize)?;
            out(total, r.values[1] as usize)
        }
    })())
}

pub(crate) unsafe fn cuMemGetAddressRange_v2(
    base: *mut CUdeviceptr,
    size: *mut usize,
    dptr: CUdeviceptr,
) -> CUresult {
    ret((|| {
        ready()?;
        let (s, len, _) = device_range(dptr).ok_or(CUresult::CUDA_ERROR_NOT_FOUND)?;
        // SAFETY: both out-pointers are optional.
        unsafe {
            if !base.is_null() {
                out(base, s)?;
            }
            if !size.is_null() {
                out(size, len as usize)?;
            }
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, flags: c_uint) -> CUresult {
    ret((|| {
        let c = ready()?;
        if flags
            & !(CU_MEMHOSTALLOC_PORTABLE
                | CU_MEMHOSTALLOC_DEVICEMAP
                | CU_MEMHOSTALLOC_WRITECOMBINED)
            != 0
        {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let p = host_alloc(c, bytes, flags)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pp, p) }
    })())
}

pub(crate) unsafe fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuMemHostAlloc(pp, bytes, 0) }
}

pub(crate) unsafe fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    ret(ready().and_then(|c| host_free(c, p)))
}

pub(crate) unsafe fn cuMemHostGetDevicePointer_v2(
    pdptr: *mut CUdeviceptr,
    p: *mut c_void,
    flags: c_uint,
) -> CUresult {
    ret((|| {
        ready()?;
        if flags != 0 || !is_pinned(p as usize, 1) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // Mapped at the same address in the daemon, on a unified-addressing GPU.
        // SAFETY: forwarded caller contract.
        unsafe { out(pdptr, p as u64) }
    })())
}

pub(crate) unsafe fn cuMemHostGetFlags(pflags: *mut c_uint, p: *mut c_void) -> CUresult {
    ret((|| {
        ready()?;
        let (_, _, f) = lock(&HOST)
            .find(p as usize, 1)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(
                pflags,
                (f & !MANAGED) | CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP,
            )
        }
    })())
}

/// What a pointer given to `cuMemcpy` is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Device,
    Pinned,
    Pageable,
}

fn kind(p: u64, len: usize) -> Kind {
    if device_range(p).is_some() {
        Kind::Device
    } else if is_pinned(p as usize, len) {
        Kind::Pinned
    } else {
        Kind::Pageable
    }
}

/// One copy of `len` bytes on `stream`. `sync` copies return once the data has arrived.
///
/// # Safety
/// Host pointers must be valid for `len` bytes (reads for sources, writes for destinations).
unsafe fn copy(
    c: &'static Client,
    dst: u64,
    src: u64,
    len: usize,
    stream: &'static Stream,
    sync: bool,
) -> Result<(), CUresult> {
    if len == 0 {
        return Ok(());
    }
    let sid = stream.daemon_id()?;
    let (dk, sk) = (kind(dst, len), kind(src, len));
    let capturing = stream.capture.load(std::sync::atomic::Ordering::Acquire) != 0;
    if capturing && (dk == Kind::Pageable || sk == Kind::Pageable) {
        // Becomes a graph node, run later by the daemon: through a shadow.
        return super::array_copy::capture_linear(c, stream, dst, src, len as u64);
    }
    let body = Copy {
        dst,
        src,
        len: len as u64,
        stream: sid,
    };
    let send = |op: Op| -> Result<(), CUresult> {
        submitted(stream);
        if sync {
            c.call(op, &body, &[]).map(|_| ())
        } else {
            c.post(op, &body, &[])
        }
    };
    match (dk, sk) {
        (Kind::Device, Kind::Device) => send(Op::CopyDtoD),
        (Kind::Device, Kind::Pinned) => send(Op::CopyHtoDPinned),
        (Kind::Pinned, Kind::Device) => send(Op::CopyDtoHPinned),
        (Kind::Device, Kind::Pageable) => {
            submitted(stream);
            // SAFETY: per the contract.
            let bytes = unsafe { std::slice::from_raw_parts(src as *const u8, len) };
            c.stage_htod(
                StagedCopy {
                    device_ptr: dst,
                    stream: sid,
                },
                bytes,
            )
        }
        (Kind::Pageable, Kind::Device) => {
            submitted(stream);
            // SAFETY: per the contract.
            let bytes = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) };
            c.stage_dtoh(
                StagedCopy {
                    device_ptr: src,
                    stream: sid,
                },
                bytes,
            )
        }
        _ => {
            // Host to host: the stream's earlier work must be done first, then a plain copy.
            if sync || dk == Kind::Pinned || sk == Kind::Pinned {
                c.call(
                    Op::StreamSynchronize,
                    &baton_ipc::protocol::ObjectId { id: sid },
                    &[],
                )?;
            }
            // SAFETY: per the contract; `copy` semantics allow overlap like memmove.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
            Ok(())
        }
    }
}

/// A side that the entry point names as device memory (the `D` of `cuMemcpyDtoH`) must be
/// memory the shim knows: device memory, or pinned memory, whose host address is also its
/// device address. Anything else would be taken for pageable host memory and read or written
/// in this process; the driver answers `CUDA_ERROR_INVALID_VALUE`, and so does the shim.
fn device_side(p: u64, len: usize) -> Result<u64, CUresult> {
    match kind(p, len) {
        Kind::Device | Kind::Pinned => Ok(p),
        Kind::Pageable => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    }
}

/// The legacy stream, for a synchronous call (one that captures may forbid).
fn legacy() -> Result<(&'static Client, &'static Stream), CUresult> {
    let c = ready()?;
    super::graph::legacy_call_allowed()?;
    Ok((c, Stream::legacy(c, current_device()?)?))
}

pub(crate) unsafe fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(legacy()
        .and_then(|(c, s)| unsafe { copy(c, device_side(dst, n)?, src as u64, n, s, true) }))
}

pub(crate) unsafe fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(legacy()
        .and_then(|(c, s)| unsafe { copy(c, dst as u64, device_side(src, n)?, n, s, true) }))
}

pub(crate) unsafe fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    // Device-to-device copies are asynchronous with respect to the host, even this form.
    // SAFETY: no host memory is touched.
    ret(legacy().and_then(|(c, s)| unsafe {
        copy(c, device_side(dst, n)?, device_side(src, n)?, n, s, false)
    }))
}

pub(crate) unsafe fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    ret((|| {
        let (c, s) = legacy()?;
        let sync = !(kind(dst, n) == Kind::Device && kind(src, n) == Kind::Device);
        // SAFETY: forwarded caller contract.
        unsafe { copy(c, dst, src, n, s, sync) }
    })())
}

fn on(stream: CUstream) -> Result<(&'static Client, &'static Stream), CUresult> {
    let c = ready()?;
    Ok((c, resolve(c, stream)?))
}

pub(crate) unsafe fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    stream: CUstream,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(on(stream)
        .and_then(|(c, s)| unsafe { copy(c, device_side(dst, n)?, src as u64, n, s, false) }))
}

pub(crate) unsafe fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    stream: CUstream,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(on(stream)
        .and_then(|(c, s)| unsafe { copy(c, dst as u64, device_side(src, n)?, n, s, false) }))
}

pub(crate) unsafe fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    stream: CUstream,
) -> CUresult {
    // SAFETY: no host memory is touched.
    ret(on(stream).and_then(|(c, s)| unsafe {
        copy(c, device_side(dst, n)?, device_side(src, n)?, n, s, false)
    }))
}

pub(crate) unsafe fn cuMemcpyAsync(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    stream: CUstream,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(on(stream).and_then(|(c, s)| unsafe { copy(c, dst, src, n, s, false) }))
}

fn memset(
    dst: u64,
    pitch: usize,
    value: u32,
    elem: u32,
    width: usize,
    height: usize,
    stream: Option<CUstream>,
) -> Result<(), CUresult> {
    let (c, s) = match stream {
        Some(h) => on(h)?,
        None => legacy()?,
    };
    if width == 0 || height == 0 {
        return Ok(());
    }
    let body = Memset {
        dst,
        stream: s.daemon_id()?,
        width: width as u64,
        height: height as u64,
        pitch: pitch as u64,
        value,
        elem_size: elem,
    };
    submitted(s);
    // Memsets of device memory are asynchronous with respect to the host, even the plain forms;
    // mapped pinned memory is written by the host's view only once the memset is done.
    if stream.is_none() && kind(dst, width * elem as usize) == Kind::Pinned {
        return c.call(Op::Memset, &body, &[]).map(|_| ());
    }
    c.post(Op::Memset, &body, &[])
}

pub(crate) unsafe fn cuMemsetD8_v2(dst: CUdeviceptr, v: c_uchar, n: usize) -> CUresult {
    ret(memset(dst, 0, v as u32, 1, n, 1, None))
}
pub(crate) unsafe fn cuMemsetD16_v2(dst: CUdeviceptr, v: c_ushort, n: usize) -> CUresult {
    ret(memset(dst, 0, v as u32, 2, n, 1, None))
}
pub(crate) unsafe fn cuMemsetD32_v2(dst: CUdeviceptr, v: c_uint, n: usize) -> CUresult {
    ret(memset(dst, 0, v, 4, n, 1, None))
}
pub(crate) unsafe fn cuMemsetD8Async(
    dst: CUdeviceptr,
    v: c_uchar,
    n: usize,
    s: CUstream,
) -> CUresult {
    ret(memset(dst, 0, v as u32, 1, n, 1, Some(s)))
}
pub(crate) unsafe fn cuMemsetD16Async(
    dst: CUdeviceptr,
    v: c_ushort,
    n: usize,
    s: CUstream,
) -> CUresult {
    ret(memset(dst, 0, v as u32, 2, n, 1, Some(s)))
}
pub(crate) unsafe fn cuMemsetD32Async(
    dst: CUdeviceptr,
    v: c_uint,
    n: usize,
    s: CUstream,
) -> CUresult {
    ret(memset(dst, 0, v, 4, n, 1, Some(s)))
}
pub(crate) unsafe fn cuMemsetD2D8_v2(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_uchar,
    w: usize,
    h: usize,
) -> CUresult {
    ret(memset(dst, pitch, v as u32, 1, w, h, None))
}
pub(crate) unsafe fn cuMemsetD2D16_v2(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_ushort,
    w: usize,
    h: usize,
) -> CUresult {
    ret(memset(dst, pitch, v as u32, 2, w, h, None))
}
pub(crate) unsafe fn cuMemsetD2D32_v2(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_uint,
    w: usize,
    h: usize,
) -> CUresult {
    ret(memset(dst, pitch, v, 4, w, h, None))
}
pub(crate) unsafe fn cuMemsetD2D8Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_uchar,
    w: usize,
    h: usize,
    s: CUstream,
) -> CUresult {
    ret(memset(dst, pitch, v as u32, 1, w, h, Some(s)))
}
pub(crate) unsafe fn cuMemsetD2D16Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_ushort,
    w: usize,
    h: usize,
    s: CUstream,
) -> CUresult {
    ret(memset(dst, pitch, v as u32, 2, w, h, Some(s)))
}
pub(crate) unsafe fn cuMemsetD2D32Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_uint,
    w: usize,
    h: usize,
    s: CUstream,
) -> CUresult {
    ret(memset(dst, pitch, v, 4, w, h, Some(s)))
}

/// What the shim knows about a pointer: (memory type, device, range start, range size).
fn pointer_info(p: u64) -> Option<(CUmemorytype, u32, u64, u64)> {
    if let Some((s, len, dev)) = device_range(p) {
        return Some((CUmemorytype::CU_MEMORYTYPE_DEVICE, dev, s, len));
    }
    let found = lock(&HOST).find(p as usize, 1).map(|(s, l, _)| (s, l));
    let (s, len) = found.or_else(|| registered(p as usize))?;
    Some((CUmemorytype::CU_MEMORYTYPE_HOST, 0, s as u64, len as u64))
}

/// Writes one attribute of a known pointer; `false` for an attribute Baton does not answer.
///
/// # Safety
/// `data` must be valid for a write of the attribute's type.
unsafe fn write_attr(
    data: *mut c_void,
    a: CUpointer_attribute,
    info: (CUmemorytype, u32, u64, u64),
    p: u64,
) -> Result<bool, CUresult> {
    let (ty, dev, start, len) = info;
    type A = CUpointer_attribute;
    // SAFETY: per the contract, `data` holds the attribute's type: a context handle, a
    // CUmemorytype, a device or host pointer, a 64-bit id, a 32-bit bool or int, or a size.
    unsafe {
        match a {
            A::CU_POINTER_ATTRIBUTE_CONTEXT => {
                let (ctx, _) = super::context::primary(ready()?, dev as CUdevice)?;
                out(data as *mut CUcontext, ctx.handle())?
            }
            A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => out(data as *mut CUmemorytype, ty)?,
            A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => out(data as *mut CUdeviceptr, p)?,
            A::CU_POINTER_ATTRIBUTE_HOST_POINTER => {
                if ty != CUmemorytype::CU_MEMORYTYPE_HOST {
                    return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
                }
                out(data as *mut *mut c_void, p as *mut c_void)?
            }
            A::CU_POINTER_ATTRIBUTE_BUFFER_ID => out(data as *mut u64, start)?,
            A::CU_POINTER_ATTRIBUTE_IS_MANAGED => {
                out(data as *mut u32, in_managed(p as usize, 1) as u32)?
            }
            A::CU_POINTER_ATTRIBUTE_SYNC_MEMOPS | A::CU_POINTER_ATTRIBUTE_MAPPED => {
                out(data as *mut u32, 1)?
            }
            A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => out(data as *mut i32, dev as i32)?,
            A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => out(data as *mut CUdeviceptr, start)?,
            A::CU_POINTER_ATTRIBUTE_RANGE_SIZE => out(data as *mut usize, len as usize)?,
            _ => return Ok(false),
        }
    }
    Ok(true)
}

pub(crate) unsafe fn cuPointerGetAttribute(
    data: *mut c_void,
    a: CUpointer_attribute,
    p: CUdeviceptr,
) -> CUresult {
    ret((|| {
        ready()?;
        let info = pointer_info(p).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        match unsafe { write_attr(data, a, info, p)? } {
            true => Ok(()),
            false => Err(CUresult::CUDA_ERROR_NOT_SUPPORTED),
        }
    })())
}

/// Like the driver, an unknown pointer is not an error here: its memory type reads as 0 and
/// the other attributes are left zeroed.
pub(crate) unsafe fn cuPointerGetAttributes(
    n: c_uint,
    attrs: *mut CUpointer_attribute,
    data: *mut *mut c_void,
    p: CUdeviceptr,
) -> CUresult {
    ret((|| {
        ready()?;
        if n > 0 && (attrs.is_null() || data.is_null()) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let info = pointer_info(p);
        for i in 0..n as usize {
            // SAFETY: both arrays have `n` entries.
            let (a, d) = unsafe { (*attrs.add(i), *data.add(i)) };
            if d.is_null() {
                continue;
            }
            match info {
                Some(info) => {
                    // SAFETY: `d` holds the attribute's type, per the caller's contract.
                    let answered = unsafe { write_attr(d, a, info, p)? };
                    if !answered {
                        crate::log::once(
                            "cuPointerGetAttributes",
                            &format!("does not answer attribute {}", a.0),
                        );
                    }
                }
                None if a == CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => {
                    // SAFETY: as above.
                    unsafe { out(d as *mut u32, 0)? }
                }
                None => {}
            }
        }
        Ok(())
    })())
}

/// Host memory registered with `cuMemHostRegister`: start -> (len, flags).
static REGISTERED: Mutex<BTreeMap<usize, (usize, c_uint)>> = Mutex::new(BTreeMap::new());

/// Registered client memory stays the client's own pages, which the daemon cannot reach: copies
/// from it go through the staging chunks like pageable memory (correct, not zero-copy), and it
/// cannot be mapped for kernels (`cuMemHostGetDevicePointer` refuses it).
pub(crate) unsafe fn cuMemHostRegister_v2(p: *mut c_void, bytes: usize, flags: c_uint) -> CUresult {
    ret((|| {
        ready()?;
        if p.is_null() || bytes == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut r = lock(&REGISTERED);
        let start = p as usize;
        let overlaps = r
            .range(..start.saturating_add(bytes))
            .next_back()
            .is_some_and(|(&s, &(l, _))| s + l > start);
        if overlaps {
            return Err(CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
        }
        crate::log::once("cuMemHostRegister", "keeps registered memory in the program: copies from it are staged, and it is not mapped for kernels");
        r.insert(start, (bytes, flags));
        Ok(())
    })())
}

pub(crate) unsafe fn cuMemHostUnregister(p: *mut c_void) -> CUresult {
    ret(ready().and_then(|_| {
        lock(&REGISTERED)
            .remove(&(p as usize))
            .map(|_| ())
            .ok_or(CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED)
    }))
}

fn registered(p: usize) -> Option<(usize, usize)> {
    let r = lock(&REGISTERED);
    let (&s, &(l, _)) = r.range(..=p).next_back()?;
    (p < s + l).then_some((s, l))
}

pub(crate) unsafe fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    elem: c_uint,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if width == 0 || height == 0 || !matches!(elem, 4 | 8 | 16) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let dev = super::init::device(c, current_device()? as CUdevice)?;
        let align = dev
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT.0 as i32)
            .filter(|&a| a > 0)
            .unwrap_or(512) as usize;
        let p = width.div_ceil(align) * align;
        let bytes = p
            .checked_mul(height)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        unsafe { cuMemAlloc_v2(dptr, bytes) }.result()?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pitch, p) }
    })())
}

pub(crate) unsafe fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    stream: CUstream,
) -> CUresult {
    ret((|| {
        let (c, s) = on(stream)?;
        if bytes == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        submitted(s);
        let capturing = s.capture.load(std::sync::atomic::Ordering::Acquire) != 0;
        // The pool cuDeviceSetMemPool made current, if not the default one. A capture records an
        // allocation node instead, which the driver serves from the graph memory pool.
        let r = match super::pools::current_explicit(s.device).filter(|_| !capturing) {
            Some(pool) => c.call(
                Op::MemPoolAlloc,
                &baton_ipc::protocol::MemPoolAlloc {
                    pool,
                    stream: s.daemon_id()?,
                    bytes: bytes as u64,
                },
                &[],
            )?,
            None => c.call(
                Op::MemAllocAsync,
                &baton_ipc::protocol::MemAllocAsync {
                    stream: s.daemon_id()?,
                    bytes: bytes as u64,
                },
                &[],
            )?,
        };
        if capturing {
            // An allocation node of the graph being captured.
            remember_graph_alloc(r.values[0], bytes as u64, s.device);
        } else {
            lock(&DEVICE).insert(r.values[0], (bytes as u64, s.device, true));
        }
        // SAFETY: forwarded caller contract.
        unsafe { out(dptr, r.values[0]) }
    })())
}

/// `cuMemAllocFromPoolAsync` from explicit pool `pool` (a daemon id).
pub(crate) unsafe fn alloc_from_pool(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool: u64,
    stream: CUstream,
) -> CUresult {
    ret((|| {
        let (c, s) = on(stream)?;
        if dptr.is_null() || bytes == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        submitted(s);
        let body = baton_ipc::protocol::MemPoolAlloc {
            pool,
            stream: s.daemon_id()?,
            bytes: bytes as u64,
        };
        let r = c.call(Op::MemPoolAlloc, &body, &[])?;
        lock(&DEVICE).insert(r.values[0], (bytes as u64, s.device, true));
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(dptr, r.values[0]) }
    })())
}

pub(crate) unsafe fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    ret((|| {
        let (c, s) = on(stream)?;
        // Freeing null is a no-op, as with cuMemFree.
        if dptr == 0 {
            return Ok(());
        }
        if !is_graph_alloc(dptr) && lock(&DEVICE).remove(&dptr).is_none() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        submitted(s);
        c.post(
            Op::MemFreeAsync,
            &baton_ipc::protocol::MemFreeAsync {
                dptr,
                stream: s.daemon_id()?,
            },
            &[],
        )
    })())
}

/// One side of a 2D copy: its address (at the copy's start) and what it is.
fn side(
    ty: CUmemorytype,
    host: u64,
    device: u64,
    x: usize,
    y: usize,
    pitch: usize,
) -> Result<(u64, Kind), CUresult> {
    let (base, k) = match ty {
        CUmemorytype::CU_MEMORYTYPE_HOST => (
            host,
            if is_pinned(host as usize, 1) {
                Kind::Pinned
            } else {
                Kind::Pageable
            },
        ),
        CUmemorytype::CU_MEMORYTYPE_DEVICE => (device, Kind::Device),
        CUmemorytype::CU_MEMORYTYPE_UNIFIED => (device, kind(device, 1)),
        _ => return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED),
    };
    let off = y
        .checked_mul(pitch)
        .and_then(|o| o.checked_add(x))
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    Ok((base + off as u64, k))
}

/// # Safety
/// `p` must be null or point to a `CUDA_MEMCPY2D` whose host sides are valid for the copy.
unsafe fn copy_2d(p: *const CUDA_MEMCPY2D, stream: Option<CUstream>) -> Result<(), CUresult> {
    let (c, s) = match stream {
        Some(h) => on(h)?,
        None => legacy()?,
    };
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, per the contract.
    let p = unsafe { &*p };
    // A capture makes a graph node of the copy, through a shadow if a side is pageable.
    if p.srcMemoryType == CUmemorytype::CU_MEMORYTYPE_ARRAY
        || p.dstMemoryType == CUmemorytype::CU_MEMORYTYPE_ARRAY
        || s.capture.load(std::sync::atomic::Ordering::Acquire) != 0
    {
        return super::array_copy::copy_2d(c, s, p, stream.is_none());
    }
    let (w, h) = (p.WidthInBytes, p.Height);
    if w == 0 || h == 0 {
        return Ok(());
    }
    if (h > 1 && (p.srcPitch < w || p.dstPitch < w))
        || !p.srcArray.is_null() && p.srcMemoryType == CUmemorytype::CU_MEMORYTYPE_ARRAY
    {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let (src, sk) = side(
        p.srcMemoryType,
        p.srcHost as u64,
        p.srcDevice,
        p.srcXInBytes,
        p.srcY,
        p.srcPitch,
    )?;
    let (dst, dk) = side(
        p.dstMemoryType,
        p.dstHost as u64,
        p.dstDevice,
        p.dstXInBytes,
        p.dstY,
        p.dstPitch,
    )?;
    // A side typed as device memory that the shim does not know would be taken for host
    // memory by the row-by-row path below.
    if p.srcMemoryType == CUmemorytype::CU_MEMORYTYPE_DEVICE {
        device_side(src, w)?;
    }
    if p.dstMemoryType == CUmemorytype::CU_MEMORYTYPE_DEVICE {
        device_side(dst, w)?;
    }
    let sync = stream.is_none() || sk == Kind::Pageable || dk == Kind::Pageable;
    if sk != Kind::Pageable && dk != Kind::Pageable && !(sk == Kind::Pinned && dk == Kind::Pinned) {
        let mut flags = 0;
        if sk == Kind::Pinned {
            flags |= baton_ipc::protocol::COPY2D_SRC_HOST;
        }
        if dk == Kind::Pinned {
            flags |= baton_ipc::protocol::COPY2D_DST_HOST;
        }
        let body = baton_ipc::protocol::Copy2D {
            dst,
            dst_pitch: p.dstPitch as u64,
            src,
            src_pitch: p.srcPitch as u64,
            width: w as u64,
            height: h as u64,
            stream: s.daemon_id()?,
            flags,
            _pad: 0,
        };
        submitted(s);
        // Device-to-device copies are asynchronous with respect to the host, even this form.
        let host_side = sk == Kind::Pinned || dk == Kind::Pinned;
        return if stream.is_none() && host_side {
            c.call(Op::Copy2D, &body, &[]).map(|_| ())
        } else {
            c.post(Op::Copy2D, &body, &[])
        };
    }
    // Pageable memory on a side: row by row through the staging chunks.
    for row in 0..h as u64 {
        // SAFETY: each row lies inside the caller's described regions.
        unsafe {
            copy(
                c,
                dst + row * p.dstPitch as u64,
                src + row * p.srcPitch as u64,
                w,
                s,
                sync,
            )?
        };
    }
    Ok(())
}

pub(crate) unsafe fn cuMemcpy2D_v2(p: *const CUDA_MEMCPY2D) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { copy_2d(p, None) })
}

pub(crate) unsafe fn cuMemcpy2DUnaligned_v2(p: *const CUDA_MEMCPY2D) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { copy_2d(p, None) })
}

pub(crate) unsafe fn cuMemcpy2DAsync_v2(p: *const CUDA_MEMCPY2D, stream: CUstream) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { copy_2d(p, Some(stream)) })
}

/// Managed memory is pinned host memory mapped into the daemon at the same address: the host
/// and every kernel see the same bytes with no migration. It is correct for every access
/// pattern, at host-memory bandwidth for kernels (the GPU reads it over the bus).
pub(crate) unsafe fn cuMemAllocManaged(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    flags: c_uint,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if bytes == 0 || !(flags == 1 || flags == 2) {
            // CU_MEM_ATTACH_GLOBAL or CU_MEM_ATTACH_HOST
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let p = host_alloc(c, bytes, MANAGED)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(dptr, p as u64) }
    })())
}

/// Hints about managed memory: with no migration there is nothing to move or advise, but the
/// range must still be one Baton knows.
fn known_range(p: CUdeviceptr, count: usize) -> Result<(), CUresult> {
    ready()?;
    if in_managed(p as usize, count) || device_range(p).is_some() {
        Ok(())
    } else {
        Err(CUresult::CUDA_ERROR_INVALID_VALUE)
    }
}

pub(crate) unsafe fn cuMemPrefetchAsync(
    p: CUdeviceptr,
    count: usize,
    _device: CUdevice,
    _stream: CUstream,
) -> CUresult {
    ret(known_range(p, count))
}

pub(crate) unsafe fn cuMemPrefetchAsync_v2(
    p: CUdeviceptr,
    count: usize,
    _location: CUmemLocation,
    _flags: c_uint,
    _stream: CUstream,
) -> CUresult {
    ret(known_range(p, count))
}

pub(crate) unsafe fn cuMemAdvise(
    p: CUdeviceptr,
    count: usize,
    _advice: CUmem_advise,
    _device: CUdevice,
) -> CUresult {
    ret(known_range(p, count))
}

pub(crate) unsafe fn cuMemAdvise_v2(
    p: CUdeviceptr,
    count: usize,
    _advice: CUmem_advise,
    _location: CUmemLocation,
) -> CUresult {
    ret(known_range(p, count))
}

pub(crate) unsafe fn cuStreamAttachMemAsync(
    stream: CUstream,
    p: CUdeviceptr,
    _length: usize,
    _flags: c_uint,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        resolve(c, stream)?;
        // Length 0 means the whole allocation.
        known_range(p, 1)
    })())
}
