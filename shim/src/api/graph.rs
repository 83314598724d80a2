//! Stream capture and CUDA graphs.
//!
//! The daemon captures the client's work into a real graph on its own streams and replays it
//! there; the client holds ids. Which of its streams take part in a capture the shim tracks
//! itself (a stream joins by beginning a capture or by waiting for an event recorded in one),
//! so capture queries need no round trip.

use super::stream::{resolve, submitted};
use super::util::{out, ready, ret};
use crate::client::lock;
use crate::objects::Stream;
use baton_ipc::protocol::{self as p, Op};
use cuda_abi::*;
use std::collections::BTreeMap;
use std::ffi::c_char;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Tags in the high bits of graph handles, so a graph and an executable graph (or a stray
/// pointer) are never confused.
pub(super) const GRAPH_TAG: u64 = 0x6a << 48;
pub(super) const EXEC_TAG: u64 = 0x6b << 48;
pub(super) const TAG_MASK: u64 = 0xffff << 48;

/// An open capture: the streams taking part, its mode and the thread that began it.
struct Capture {
    members: Vec<&'static Stream>,
    mode: CUstreamCaptureMode,
    thread: std::thread::ThreadId,
    /// Begun by `cuStreamBeginCaptureToGraph`: the graph exists already, so ending the
    /// capture need not hand it back.
    to_graph: bool,
}

/// Open captures by capture id.
static CAPTURES: Mutex<BTreeMap<u64, Capture>> = Mutex::new(BTreeMap::new());
static NEXT_CAPTURE: AtomicU64 = AtomicU64::new(1);

pub(super) fn graph_id(g: CUgraph) -> Result<u64, CUresult> {
    let v = g as usize as u64;
    (v & TAG_MASK == GRAPH_TAG && v != GRAPH_TAG)
        .then_some(v & !TAG_MASK)
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)
}

pub(super) fn exec_id(g: CUgraphExec) -> Result<u64, CUresult> {
    let v = g as usize as u64;
    (v & TAG_MASK == EXEC_TAG && v != EXEC_TAG)
        .then_some(v & !TAG_MASK)
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)
}

/// Synchronising a capturing stream is illegal, as with the driver.
pub(crate) fn not_capturing(s: &Stream) -> Result<(), CUresult> {
    match s.capture.load(Ordering::Acquire) {
        0 => Ok(()),
        _ => Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED),
    }
}

/// Makes `s` part of capture `capture` if that capture is still open.
pub(crate) fn join(s: &'static Stream, capture: u64) {
    if capture == 0 {
        return;
    }
    if let Some(cap) = lock(&CAPTURES).get_mut(&capture) {
        if s.capture.swap(capture, Ordering::AcqRel) != capture {
            cap.members.push(s);
        }
    }
}

/// Whether a synchronous call on the legacy stream (a plain `cuMemcpy`, `cuMemset`...) may be
/// made now, as the driver decides: the calling thread's capture interaction mode
/// (`cuThreadExchangeStreamCaptureMode`) forbids such "potentially unsafe" calls while this
/// thread has a capture open that is not relaxed, or (global mode) while any other thread has
/// a global capture open; otherwise the call would make a capturing stream that synchronises
/// with the legacy stream wait for it, which is an implicit dependency a capture refuses.
pub(crate) fn legacy_call_allowed() -> Result<(), CUresult> {
    let caps = lock(&CAPTURES);
    if caps.is_empty() {
        return Ok(());
    }
    let me = std::thread::current().id();
    let relaxed = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    let unsafe_call = match super::compat::thread_capture_mode() {
        m if m == relaxed => false,
        m if m == CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL => {
            caps.values().any(|c| c.thread == me && c.mode != relaxed)
        }
        _ => caps.values().any(|c| {
            (c.thread == me && c.mode != relaxed)
                || (c.thread != me && c.mode == CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
        }),
    };
    if unsafe_call {
        return Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    }
    let blocking = caps.values().any(|c| {
        c.members
            .iter()
            .any(|s| s.flags & CUstream_flags::CU_STREAM_NON_BLOCKING.0 == 0)
    });
    match blocking {
        true => Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT),
        false => Ok(()),
    }
}

pub(crate) unsafe fn cuStreamBeginCapture_v2(
    stream: CUstream,
    mode: CUstreamCaptureMode,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, stream)?;
        if mode.0 > 2 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if s.capture.load(Ordering::Acquire) != 0 {
            return Err(CUresult::CUDA_ERROR_ILLEGAL_STATE);
        }
        // The daemon refuses the legacy stream (it cannot be captured).
        c.call(
            Op::CaptureBegin,
            &p::CaptureBegin {
                stream: s.daemon_id()?,
                mode: mode.0,
                _pad: 0,
            },
            &[],
        )?;
        opened(s, mode, false);
        Ok(())
    })())
}

/// Records a capture the daemon has begun on `s`.
pub(super) fn opened(s: &'static Stream, mode: CUstreamCaptureMode, to_graph: bool) {
    let id = NEXT_CAPTURE.fetch_add(1, Ordering::Relaxed);
    s.capture.store(id, Ordering::Release);
    lock(&CAPTURES).insert(
        id,
        Capture {
            members: vec![s],
            mode,
            thread: std::thread::current().id(),
            to_graph,
        },
    );
}

pub(crate) unsafe fn cuStreamBeginCapture(stream: CUstream) -> CUresult {
    // SAFETY: same contract; the 10.0 form captures in global mode.
    unsafe { cuStreamBeginCapture_v2(stream, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) }
}

pub(crate) unsafe fn cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, stream)?;
        let capture = s.capture.load(Ordering::Acquire);
        if capture == 0 {
            return Err(CUresult::CUDA_ERROR_ILLEGAL_STATE);
        }
        // A capture into an existing graph may leave the graph out (the caller holds it).
        let to_graph = lock(&CAPTURES).get(&capture).is_some_and(|c| c.to_graph);
        if graph.is_null() && !to_graph {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let r = c.call(Op::CaptureEnd, &p::ObjectId { id: s.daemon_id()? }, &[]);
        // The capture is over whatever the daemon answered.
        let members = lock(&CAPTURES)
            .remove(&capture)
            .map(|c| c.members)
            .unwrap_or_default();
        for m in members {
            let _ = m
                .capture
                .compare_exchange(capture, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        let id = r.as_ref().ok().map(|r| r.values[0]);
        super::graph_pageable::capture_ended(capture, id);
        let id = r?.values[0];
        if graph.is_null() {
            return Ok(());
        }
        // SAFETY: checked non-null; forwarded caller contract.
        unsafe { out(graph, (GRAPH_TAG | id) as usize as CUgraph) }
    })())
}

pub(crate) unsafe fn cuStreamIsCapturing(
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, stream)?;
        let st = match s.capture.load(Ordering::Acquire) {
            0 => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
            _ => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE,
        };
        // SAFETY: forwarded caller contract.
        unsafe { out(status, st) }
    })())
}

/// Status and capture id. The graph being built and its dependency set live in the daemon:
/// they are reported as empty.
pub(crate) unsafe fn cuStreamGetCaptureInfo_v3(
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
    id: *mut cuuint64_t,
    graph: *mut CUgraph,
    deps: *mut *const CUgraphNode,
    edges: *mut *const CUgraphEdgeData,
    ndeps: *mut usize,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, stream)?;
        let capture = s.capture.load(Ordering::Acquire);
        let st = match capture {
            0 => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
            _ => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE,
        };
        // SAFETY: forwarded caller contract; every output but `status` is optional.
        unsafe {
            out(status, st)?;
            if !id.is_null() {
                out(id, capture)?;
            }
            if capture != 0 {
                let wanted = !graph.is_null() || !deps.is_null() || !ndeps.is_null();
                // The daemon names the capture's graph and its current dependency set; if it
                // cannot, both are reported empty.
                let (g, list, n) = match wanted {
                    true => super::conditional::capture_info(c, s).unwrap_or_default(),
                    false => Default::default(),
                };
                if !graph.is_null() {
                    out(graph, g)?;
                }
                if !deps.is_null() {
                    out(deps, list)?;
                }
                if !edges.is_null() {
                    out(edges, std::ptr::null())?;
                }
                if !ndeps.is_null() {
                    out(ndeps, n)?;
                }
            }
        }
        Ok(())
    })())
}

/// The 11.3 form (no edge data).
pub(crate) unsafe fn cuStreamGetCaptureInfo_v2(
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
    id: *mut cuuint64_t,
    graph: *mut CUgraph,
    deps: *mut *const CUgraphNode,
    ndeps: *mut usize,
) -> CUresult {
    // SAFETY: same contract; the edge-data output is not asked for.
    unsafe {
        cuStreamGetCaptureInfo_v3(stream, status, id, graph, deps, std::ptr::null_mut(), ndeps)
    }
}

/// The 10.1 form: status and capture id only.
pub(crate) unsafe fn cuStreamGetCaptureInfo(
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
    id: *mut cuuint64_t,
) -> CUresult {
    // SAFETY: same contract, fewer outputs.
    unsafe {
        cuStreamGetCaptureInfo_v3(
            stream,
            status,
            id,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

fn instantiate(graph: CUgraph, flags: u64) -> Result<CUgraphExec, CUresult> {
    let c = ready()?;
    let r = c.call(
        Op::GraphInstantiate,
        &p::GraphInstantiate {
            graph: graph_id(graph)?,
            flags,
        },
        &[],
    )?;
    super::graph_pageable::exec_from(r.values[0], graph_id(graph)?);
    Ok((EXEC_TAG | r.values[0]) as usize as CUgraphExec)
}

pub(crate) unsafe fn cuGraphInstantiateWithFlags(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    flags: cuuint64_t,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(instantiate(graph, flags).and_then(|e| unsafe { out(exec, e) }))
}

pub(crate) unsafe fn cuGraphInstantiate_v2(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    error_node: *mut CUgraphNode,
    log: *mut c_char,
    log_size: usize,
) -> CUresult {
    ret((|| {
        // SAFETY: the optional outputs are written only when given.
        unsafe {
            if !error_node.is_null() {
                out(error_node, std::ptr::null_mut())?;
            }
            if !log.is_null() && log_size > 0 {
                *log = 0;
            }
        }
        let e = instantiate(graph, 0)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(exec, e) }
    })())
}

/// `CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD`: upload on `hUploadStream` as part of instantiation.
const INSTANTIATE_UPLOAD: u64 = 2;

pub(crate) unsafe fn cuGraphInstantiateWithParams(
    exec: *mut CUgraphExec,
    graph: CUgraph,
    params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's parameter block.
        let p = unsafe { &mut *params };
        let e = instantiate(graph, p.flags & !INSTANTIATE_UPLOAD)?;
        p.hErrNode_out = std::ptr::null_mut();
        p.result_out = CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_SUCCESS;
        // SAFETY: forwarded caller contract.
        unsafe { out(exec, e)? };
        if p.flags & INSTANTIATE_UPLOAD != 0 {
            post_on_stream(Op::GraphUpload, e, p.hUploadStream)?;
        }
        Ok(())
    })())
}

fn post_on_stream(op: Op, exec: CUgraphExec, stream: CUstream) -> Result<(), CUresult> {
    let c = ready()?;
    let id = exec_id(exec)?;
    let s = resolve(c, stream)?;
    let post = || {
        submitted(s);
        c.post(
            op,
            &p::GraphLaunch {
                exec: id,
                stream: s.daemon_id()?,
            },
            &[],
        )
    };
    if op != Op::GraphLaunch {
        return post();
    }
    // Pageable host memory the graph copies goes through shadows (see `graph_pageable`).
    match s.capture.load(Ordering::Acquire) {
        0 => super::graph_pageable::launch(c, id, stream, post),
        capture => {
            post()?;
            super::graph_pageable::launched_in_capture(id, capture);
            Ok(())
        }
    }
}

pub(crate) unsafe fn cuGraphLaunch(exec: CUgraphExec, stream: CUstream) -> CUresult {
    ret(post_on_stream(Op::GraphLaunch, exec, stream))
}

pub(crate) unsafe fn cuGraphUpload(exec: CUgraphExec, stream: CUstream) -> CUresult {
    ret(post_on_stream(Op::GraphUpload, exec, stream))
}

pub(crate) unsafe fn cuGraphExecDestroy(exec: CUgraphExec) -> CUresult {
    ret((|| {
        let c = ready()?;
        let id = exec_id(exec)?;
        c.call(Op::GraphExecDestroy, &p::ObjectId { id }, &[])?;
        super::graph_pageable::exec_destroyed(id);
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphDestroy(graph: CUgraph) -> CUresult {
    ret((|| {
        let c = ready()?;
        let id = graph_id(graph)?;
        c.call(Op::GraphDestroy, &p::ObjectId { id }, &[])?;
        super::graph_pageable::graph_destroyed(id);
        super::conditional::graph_destroyed(id);
        Ok(())
    })())
}
