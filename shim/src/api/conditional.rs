//! Conditional graph nodes, captures into an existing graph, and the capture's graph and
//! dependency set.
//!
//! A conditional handle is the driver's own value (kernels receive it as a parameter and set
//! it on the device), created by the daemon on its graph. The body graphs of a conditional
//! node are the driver's too: the daemon names them with graph ids like any graph, so the
//! program fills them with the usual node calls or by capture. The `phGraph_out` array the
//! driver documents as its own is kept here, per node, until the node's graph is destroyed.

use super::graph::{graph_id, opened, GRAPH_TAG};
use super::graph_build::{dep_ids, node_handle};
use super::stream::resolve;
use super::util::{out, ready, ret};
use crate::client::{lock, Client};
use crate::objects::Stream;
use baton_ipc::protocol::{self as p, Op};
use cuda_abi::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_uint;
use std::sync::Mutex;

/// Body-graph arrays handed out in `phGraph_out`, by (graph id, node id).
static BODIES: Mutex<Option<HashMap<(u64, u64), Bodies>>> = Mutex::new(None);

/// One node's `phGraph_out` array.
struct Bodies(#[allow(dead_code)] Box<[CUgraph]>); // held for its heap block, never read

// SAFETY: graph handles are tagged ids, never dereferenced; the box is only read by callers.
unsafe impl Send for Bodies {}

thread_local! {
    /// The dependency array `cuStreamGetCaptureInfo` hands out (valid until the thread's
    /// next such call, as the driver's is until the next call on the stream).
    static DEPS: RefCell<Vec<CUgraphNode>> = const { RefCell::new(Vec::new()) };
}

pub(crate) unsafe fn cuGraphConditionalHandleCreate(
    handle: *mut CUgraphConditionalHandle,
    graph: CUgraph,
    _ctx: CUcontext,
    default_value: c_uint,
    flags: c_uint,
) -> CUresult {
    // The context must be the graph's; the daemon creates the handle in its one context of
    // the graph's device, which is what every Baton context of that device stands for.
    ret((|| {
        let c = ready()?;
        if handle.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let body = p::ConditionalHandle {
            graph: graph_id(graph)?,
            default_value,
            flags,
        };
        let r = c.call(Op::ConditionalHandleCreate, &body, &[])?;
        // SAFETY: checked non-null.
        unsafe { out(handle, r.values[0]) }
    })())
}

/// Fills the node description for a conditional node.
pub(super) fn conditional_body(c: &CUDA_CONDITIONAL_NODE_PARAMS, b: &mut p::GraphNode) {
    b.kind = p::NODE_CONDITIONAL;
    b.dst = c.handle;
    b.value = c.type_.0;
    b.width = c.size as u64;
}

/// After the daemon added conditional node `node` to graph `graph`: hands the body graphs
/// (ids in the reply's payload) back through `phGraph_out`.
pub(super) fn bodies_made(
    c: &mut CUDA_CONDITIONAL_NODE_PARAMS,
    graph: u64,
    node: u64,
    payload: &[u8],
) -> Result<(), CUresult> {
    let arr: Box<[CUgraph]> = payload
        .chunks_exact(8)
        .map(|b| {
            (GRAPH_TAG | u64::from_le_bytes(b.try_into().unwrap_or_default())) as usize as CUgraph
        })
        .collect();
    if arr.len() != c.size as usize {
        return Err(CUresult::CUDA_ERROR_UNKNOWN);
    }
    let mut arr = arr;
    c.phGraph_out = arr.as_mut_ptr();
    // Moving the box keeps its heap block (and so the pointer) where it is.
    lock(&BODIES)
        .get_or_insert_with(HashMap::new)
        .insert((graph, node), Bodies(arr));
    Ok(())
}

/// The graph went, and with it its conditional nodes' bodies.
pub(super) fn graph_destroyed(graph: u64) {
    if let Some(m) = lock(&BODIES).as_mut() {
        m.retain(|&(g, _), _| g != graph);
    }
}

/// The capture's graph, its dependency set (an array valid until this thread asks again)
/// and its length.
pub(super) fn capture_info(
    c: &'static Client,
    s: &Stream,
) -> Result<(CUgraph, *const CUgraphNode, usize), CUresult> {
    let r = c.call(Op::CaptureInfo, &p::ObjectId { id: s.daemon_id()? }, &[])?;
    let n = r.values[1] as usize;
    if r.payload.len() < n * 8 {
        return Err(CUresult::CUDA_ERROR_UNKNOWN);
    }
    let list: Vec<CUgraphNode> = r.payload[..n * 8]
        .chunks_exact(8)
        .map(|b| node_handle(u64::from_le_bytes(b.try_into().unwrap_or_default())))
        .collect();
    let ptr = DEPS.with(|d| {
        let mut d = d.borrow_mut();
        *d = list;
        match d.is_empty() {
            true => std::ptr::null(),
            false => d.as_ptr(),
        }
    });
    Ok(((GRAPH_TAG | r.values[0]) as usize as CUgraph, ptr, n))
}

pub(crate) unsafe fn cuStreamBeginCaptureToGraph(
    stream: CUstream,
    graph: CUgraph,
    deps: *const CUgraphNode,
    edges: *const CUgraphEdgeData,
    n: usize,
    mode: CUstreamCaptureMode,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, stream)?;
        if mode.0 > 2 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if !edges.is_null() {
            crate::log::once(
                "cuStreamBeginCaptureToGraph",
                "supports default edges only under Baton (edge data: NOT_SUPPORTED)",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        if s.capture.load(std::sync::atomic::Ordering::Acquire) != 0 {
            return Err(CUresult::CUDA_ERROR_ILLEGAL_STATE);
        }
        // SAFETY: forwarded caller contract.
        let tail = unsafe { dep_ids(deps, n)? };
        let body = p::CaptureToGraph {
            stream: s.daemon_id()?,
            graph: graph_id(graph)?,
            mode: mode.0,
            ndeps: n as u32,
        };
        c.call(Op::CaptureToGraph, &body, &tail)?;
        opened(s, mode, true);
        Ok(())
    })())
}

pub(crate) unsafe fn cuStreamUpdateCaptureDependencies(
    stream: CUstream,
    deps: *mut CUgraphNode,
    n: usize,
    flags: c_uint,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, stream)?;
        if s.capture.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return Err(CUresult::CUDA_ERROR_ILLEGAL_STATE);
        }
        // SAFETY: forwarded caller contract.
        let tail = unsafe { dep_ids(deps, n)? };
        let body = p::CaptureDeps {
            stream: s.daemon_id()?,
            flags,
            ndeps: n as u32,
        };
        c.call(Op::CaptureDeps, &body, &tail).map(|_| ())
    })())
}

pub(crate) unsafe fn cuStreamUpdateCaptureDependencies_v2(
    stream: CUstream,
    deps: *mut CUgraphNode,
    edges: *const CUgraphEdgeData,
    n: usize,
    flags: c_uint,
) -> CUresult {
    if !edges.is_null() {
        crate::log::once(
            "cuStreamUpdateCaptureDependencies_v2",
            "supports default edges only under Baton (edge data: NOT_SUPPORTED)",
        );
        return CUresult::CUDA_ERROR_NOT_SUPPORTED;
    }
    // SAFETY: forwarded caller contract; default edges.
    unsafe { cuStreamUpdateCaptureDependencies(stream, deps, n, flags) }
}
