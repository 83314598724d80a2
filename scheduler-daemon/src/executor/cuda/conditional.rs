//! The real driver's calls for conditional graph nodes and for captures into a given graph.
//!
//! Looked up by name with C signatures over plain integers and C-layout mirrors, as in
//! `graph_nodes`: client values outside cudarc's enums would otherwise be undefined behaviour.

use super::check_code as check;
use crate::executor::{code, GpuError, GpuResult, Raw};
use std::ffi::c_void;
use std::ptr::{null, null_mut};

type Ptr = *mut c_void;

/// `CUDA_CONDITIONAL_NODE_PARAMS` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct CondParams {
    handle: u64,
    kind: u32,
    size: u32,
    graphs_out: *mut Ptr,
    ctx: Ptr,
}

/// `CUgraphNodeParams` (256 bytes): the type, 12 reserved bytes, a 232-byte union of which
/// only the conditional member is used here, 8 reserved bytes.
#[repr(C)]
struct NodeParams {
    kind: u32,
    reserved0: [i32; 3],
    cond: CondParams,
    rest: [u8; 232 - 32],
    reserved2: i64,
}

const _: () = assert!(std::mem::size_of::<CondParams>() == 32);
const _: () = assert!(std::mem::size_of::<NodeParams>() == 256);
const _: () = assert!(std::mem::offset_of!(NodeParams, cond) == 16);

const NODE_TYPE_CONDITIONAL: u32 = 13;
/// `CU_STREAM_CAPTURE_MODE_RELAXED`: the daemon captures in relaxed mode (see `session::graphs`).
const CAPTURE_RELAXED: u32 = 2;

type HandleCreateFn = unsafe extern "C" fn(*mut u64, Ptr, Ptr, u32, u32) -> u32;
type AddNodeFn = unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, *mut NodeParams) -> u32;
type CaptureToGraphFn =
    unsafe extern "C" fn(Ptr, Ptr, *const Ptr, *const c_void, usize, u32) -> u32;
type CaptureInfoFn =
    unsafe extern "C" fn(Ptr, *mut u32, *mut u64, *mut Ptr, *mut *const Ptr, *mut usize) -> u32;
type UpdateDepsFn = unsafe extern "C" fn(Ptr, *const Ptr, usize, u32) -> u32;

fn h(r: Raw) -> Ptr {
    r as usize as Ptr
}

fn deps_ptr(deps: &[Ptr]) -> *const Ptr {
    if deps.is_empty() {
        null()
    } else {
        deps.as_ptr()
    }
}

pub fn handle_create(ctx: Ptr, graph: Raw, default_value: u32, flags: u32) -> GpuResult<u64> {
    let f = driver_fn!("cuGraphConditionalHandleCreate", HandleCreateFn);
    let mut handle = 0u64;
    // SAFETY: the session's own graph in the daemon's context; out-pointer to a local.
    check(unsafe { f(&mut handle, h(graph), ctx, default_value, flags) })?;
    Ok(handle)
}

/// Adds a conditional node; returns it and the `size` body graphs the driver made for it.
pub fn add(
    ctx: Ptr,
    graph: Raw,
    deps: &[Raw],
    handle: u64,
    kind: u32,
    size: u32,
) -> GpuResult<(Raw, Vec<Raw>)> {
    let f = driver_fn!("cuGraphAddNode", AddNodeFn);
    let deps: Vec<Ptr> = deps.iter().map(|&d| h(d)).collect();
    let mut p = NodeParams {
        kind: NODE_TYPE_CONDITIONAL,
        reserved0: [0; 3],
        cond: CondParams {
            handle,
            kind,
            size,
            graphs_out: null_mut(),
            ctx,
        },
        rest: [0; 232 - 32],
        reserved2: 0,
    };
    let mut node = null_mut();
    // SAFETY: the graph and dependencies are the session's own; `deps` holds its length of
    // nodes; the parameters are a local of the C layout.
    check(unsafe { f(&mut node, h(graph), deps_ptr(&deps), deps.len(), &mut p) })?;
    if p.cond.graphs_out.is_null() {
        return Err(GpuError(code::UNKNOWN));
    }
    // SAFETY: the driver filled `graphs_out` with `size` graphs, valid while the node lives.
    let bodies = unsafe { std::slice::from_raw_parts(p.cond.graphs_out, size as usize) };
    Ok((
        node as usize as Raw,
        bodies.iter().map(|&g| g as usize as Raw).collect(),
    ))
}

pub fn capture_to_graph(stream: Raw, graph: Raw, deps: &[Raw]) -> GpuResult<()> {
    let f = driver_fn!("cuStreamBeginCaptureToGraph", CaptureToGraphFn);
    let deps: Vec<Ptr> = deps.iter().map(|&d| h(d)).collect();
    // SAFETY: the session's own stream, graph and nodes; no edge data.
    check(unsafe {
        f(
            h(stream),
            h(graph),
            deps_ptr(&deps),
            null(),
            deps.len(),
            CAPTURE_RELAXED,
        )
    })
}

/// The graph a capturing stream adds to and the nodes its next work will depend on.
pub fn capture_info(stream: Raw) -> GpuResult<(Raw, Vec<Raw>)> {
    let f = driver_fn!("cuStreamGetCaptureInfo_v2", CaptureInfoFn);
    let (mut status, mut id, mut graph) = (0u32, 0u64, null_mut());
    let (mut deps, mut n): (*const Ptr, usize) = (null(), 0);
    // SAFETY: the session's own stream; out-pointers to locals.
    check(unsafe {
        f(
            h(stream),
            &mut status,
            &mut id,
            &mut graph,
            &mut deps,
            &mut n,
        )
    })?;
    // CU_STREAM_CAPTURE_STATUS_ACTIVE
    if status != 1 || graph.is_null() {
        return Err(GpuError(code::ILLEGAL_STATE));
    }
    let deps = match n {
        0 => Vec::new(),
        // SAFETY: the driver's array of `n` nodes, valid until the next capture call on the
        // stream; copied out at once.
        _ => unsafe { std::slice::from_raw_parts(deps, n) }
            .iter()
            .map(|&d| d as usize as Raw)
            .collect(),
    };
    Ok((graph as usize as Raw, deps))
}

pub fn update_deps(stream: Raw, deps: &[Raw], flags: u32) -> GpuResult<()> {
    let f = driver_fn!("cuStreamUpdateCaptureDependencies", UpdateDepsFn);
    let deps: Vec<Ptr> = deps.iter().map(|&d| h(d)).collect();
    // SAFETY: the session's own stream and nodes of its capture's graph.
    check(unsafe { f(h(stream), deps_ptr(&deps), deps.len(), flags) })
}
