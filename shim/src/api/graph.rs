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

/// Open captures: capture id -> the streams taking part.
static CAPTURES: Mutex<BTreeMap<u64, Vec<&'static Stream>>> = Mutex::new(BTreeMap::new());
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
    if let Some(members) = lock(&CAPTURES).get_mut(&capture) {
        if s.capture.swap(capture, Ordering::AcqRel) != capture {
            members.push(s);
        }
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
        let id = NEXT_CAPTURE.fetch_add(1, Ordering::Relaxed);
        s.capture.store(id, Ordering::Release);
        lock(&CAPTURES).insert(id, vec![s]);
        Ok(())
    })())
}

pub(crate) unsafe fn cuStreamBeginCapture(stream: CUstream) -> CUresult {
    // SAFETY: same contract; the 10.0 form captures in global mode.
    unsafe { cuStreamBeginCapture_v2(stream, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) }
}

pub(crate) unsafe fn cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    ret((|| {
        let c = ready()?;
        if graph.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let s = resolve(c, stream)?;
        let capture = s.capture.load(Ordering::Acquire);
        if capture == 0 {
            return Err(CUresult::CUDA_ERROR_ILLEGAL_STATE);
        }
        let r = c.call(Op::CaptureEnd, &p::ObjectId { id: s.daemon_id()? }, &[]);
        // The capture is over whatever the daemon answered.
        for m in lock(&CAPTURES).remove(&capture).unwrap_or_default() {
            let _ = m
                .capture
                .compare_exchange(capture, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        let id = r?.values[0];
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
                if !graph.is_null() {
                    out(graph, std::ptr::null_mut())?;
                }
                if !deps.is_null() {
                    out(deps, std::ptr::null())?;
                }
                if !edges.is_null() {
                    out(edges, std::ptr::null())?;
                }
                if !ndeps.is_null() {
                    out(ndeps, 0)?;
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
    submitted(s);
    c.post(
        op,
        &p::GraphLaunch {
            exec: id,
            stream: s.daemon_id()?,
        },
        &[],
    )
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
        c.call(
            Op::GraphExecDestroy,
            &p::ObjectId { id: exec_id(exec)? },
            &[],
        )
        .map(|_| ())
    })())
}

pub(crate) unsafe fn cuGraphDestroy(graph: CUgraph) -> CUresult {
    ret((|| {
        let c = ready()?;
        c.call(
            Op::GraphDestroy,
            &p::ObjectId {
                id: graph_id(graph)?,
            },
            &[],
        )
        .map(|_| ())
    })())
}
