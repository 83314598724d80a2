//! Graphs built node by node. Nodes live in the daemon; the client holds tagged session ids,
//! as for graphs. Kernel parameters are packed exactly as for a launch, and the client keeps
//! each kernel node's parameters so `cuGraphKernelNodeGetParams` needs no round trip (the
//! pointers it hands out must stay valid while the node's parameters do).

use super::array_copy::graph_copy;
use super::context::current_device;
use super::graph::{exec_id, graph_id, GRAPH_TAG, TAG_MASK};
use super::graph_pageable::{self as pageable, Shadow};
use super::host_func;
use super::launch::pack;
use super::util::{out, ready, ret};
use crate::client::lock;
use crate::objects::Function;
use baton_ipc::protocol::{self as p, Op};
use cuda_abi::*;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::{Arc, Mutex};
use zerocopy::FromZeros;

const NODE_TAG: u64 = 0x6c << 48;

pub(super) fn node_id(n: CUgraphNode) -> Result<u64, CUresult> {
    let v = n as usize as u64;
    (v & TAG_MASK == NODE_TAG && v != NODE_TAG)
        .then_some(v & !TAG_MASK)
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)
}

pub(super) fn node_handle(id: u64) -> CUgraphNode {
    (NODE_TAG | id) as usize as CUgraphNode
}

/// A kernel node's parameters as the client gave them, for `GetParams`.
struct KernelNode {
    func: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    params: Vec<u8>,
    /// `kernelParams` as handed out: pointers into `params`.
    ptrs: Vec<*mut c_void>,
}

// SAFETY: the pointers point into the record's own heap block and are only handed to callers.
unsafe impl Send for KernelNode {}

static KERNELS: Mutex<Option<HashMap<u64, Box<KernelNode>>>> = Mutex::new(None);

/// Host nodes this process added or set: node id -> callback id, for `GetParams`.
static HOSTS: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);

/// Describes a host node running `f(data)`: the function is kept under a callback id the
/// daemon asks for each time the node runs.
fn host_body(f: CUhostFn, data: *mut c_void, b: &mut p::GraphNode) -> Result<(), CUresult> {
    let f = f.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    b.kind = p::NODE_HOST;
    b.func = host_func::node_callback(host_func::HostFn {
        f,
        data: data as usize,
    })?;
    Ok(())
}

/// After a host node was added or set with `b`: what `GetParams` answers for it.
fn remember_host(id: u64, b: &p::GraphNode) {
    if b.kind == p::NODE_HOST {
        lock(&HOSTS)
            .get_or_insert_with(HashMap::new)
            .insert(id, b.func);
    }
}

/// The geometry and function of a kernel node.
struct Kernel {
    func: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
}

impl Kernel {
    fn from_v2(k: &CUDA_KERNEL_NODE_PARAMS) -> Kernel {
        // `kern` (a CUkernel) stands in for `func` when `func` is null; both are functions here.
        let func = if k.func.is_null() {
            k.kern as CUfunction
        } else {
            k.func
        };
        Kernel {
            func,
            grid: [k.gridDimX, k.gridDimY, k.gridDimZ],
            block: [k.blockDimX, k.blockDimY, k.blockDimZ],
            shared_mem: k.sharedMemBytes,
            params: k.kernelParams,
            extra: k.extra,
        }
    }
}

/// Fills a node body for a kernel; returns the packed parameters.
///
/// # Safety
/// As for `cuLaunchKernel`: `k.params` or `k.extra` describe every parameter of the function.
unsafe fn kernel_body(k: &Kernel, b: &mut p::GraphNode) -> Result<Vec<u8>, CUresult> {
    let f = Function::from_handle(k.func)?;
    let mut params = Vec::new();
    // SAFETY: per the contract.
    unsafe { pack(f, k.params, k.extra, &mut params)? };
    b.kind = p::NODE_KERNEL;
    b.func = f.id;
    b.grid = k.grid;
    b.block = k.block;
    b.shared_mem = k.shared_mem;
    b.params_len = params.len() as u32;
    Ok(params)
}

fn remember_kernel(id: u64, k: &Kernel, params: Vec<u8>) -> Result<(), CUresult> {
    let f = Function::from_handle(k.func)?;
    let mut rec = Box::new(KernelNode {
        func: k.func,
        grid: k.grid,
        block: k.block,
        shared_mem: k.shared_mem,
        params,
        ptrs: Vec::new(),
    });
    let base = rec.params.as_mut_ptr();
    rec.ptrs = f
        .params
        .iter()
        .filter(|&&(off, size)| (off + size) as usize <= rec.params.len())
        // SAFETY: within the block (filtered above).
        .map(|&(off, _)| unsafe { base.add(off as usize) } as *mut c_void)
        .collect();
    lock(&KERNELS)
        .get_or_insert_with(HashMap::new)
        .insert(id, rec);
    Ok(())
}

fn memset_body(m: &CUDA_MEMSET_NODE_PARAMS, b: &mut p::GraphNode) {
    b.kind = p::NODE_MEMSET;
    b.dst = m.dst;
    b.pitch = m.pitch as u64;
    b.width = m.width as u64;
    b.height = m.height as u64;
    b.value = m.value;
    b.elem_size = m.elementSize;
}

/// Fills a node body for a copy; returns the shadows standing for its pageable sides.
fn memcpy_body(
    c: *const CUDA_MEMCPY3D,
    b: &mut p::GraphNode,
) -> Result<Vec<Arc<Shadow>>, CUresult> {
    if c.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    b.kind = p::NODE_MEMCPY;
    // SAFETY: non-null, the caller's copy description.
    let (copy, shadows) = graph_copy(unsafe { &*c })?;
    b.copy = copy;
    Ok(shadows)
}

fn child_body(g: CUgraph, b: &mut p::GraphNode) -> Result<(), CUresult> {
    b.kind = p::NODE_GRAPH;
    b.child = graph_id(g)?;
    Ok(())
}

/// # Safety
/// `deps` holds `n` node handles (or `n` is 0).
pub(super) unsafe fn dep_ids(deps: *const CUgraphNode, n: usize) -> Result<Vec<u8>, CUresult> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if deps.is_null() || n > p::MAX_NODE_DEPS {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let mut t = Vec::with_capacity(n * 8);
    for i in 0..n {
        // SAFETY: per the contract.
        let d = unsafe { *deps.add(i) };
        t.extend_from_slice(&node_id(d)?.to_le_bytes());
    }
    Ok(t)
}

/// Adds the node described by `b` (and `params`) to `graph` after `deps`.
///
/// # Safety
/// As for [`dep_ids`]; `ph` is writable.
unsafe fn add(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    b: p::GraphNode,
    params: &[u8],
) -> Result<u64, CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { add_answered(ph, graph, deps, n, b, params) }.map(|v| v[0])
}

/// As [`add`], answering with the reply's values (the node id first).
///
/// # Safety
/// As for [`add`].
pub(super) unsafe fn add_answered(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    mut b: p::GraphNode,
    params: &[u8],
) -> Result<[u64; 4], CUresult> {
    let c = ready()?;
    if ph.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    b.graph = graph_id(graph)?;
    // SAFETY: per the contract.
    let mut tail = unsafe { dep_ids(deps, n)? };
    b.ndeps = n as u32;
    tail.extend_from_slice(params);
    let values = c.call(Op::GraphAddNode, &b, &tail)?.values;
    let id = values[0];
    // SAFETY: checked non-null.
    unsafe { out(ph, node_handle(id))? };
    pageable::node_added(b.graph, id, Vec::new());
    Ok(values)
}

/// Adds a conditional node and hands its body graphs back through `cp.phGraph_out`.
///
/// # Safety
/// As for [`add`].
unsafe fn add_conditional(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    mut b: p::GraphNode,
    cp: &mut CUDA_CONDITIONAL_NODE_PARAMS,
) -> Result<(), CUresult> {
    let c = ready()?;
    if ph.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    b.graph = graph_id(graph)?;
    b.ndeps = n as u32;
    // SAFETY: per the contract.
    let tail = unsafe { dep_ids(deps, n)? };
    let r = c.call(Op::GraphAddNode, &b, &tail)?;
    let id = r.values[0];
    super::conditional::bodies_made(cp, b.graph, id, &r.payload)?;
    // SAFETY: checked non-null.
    unsafe { out(ph, node_handle(id))? };
    pageable::node_added(b.graph, id, Vec::new());
    Ok(())
}

/// Sets node parameters, on the node (`exec` null) or on its copy in `exec`.
fn set(
    exec: Option<CUgraphExec>,
    node: CUgraphNode,
    mut b: p::GraphNode,
    params: &[u8],
) -> Result<(), CUresult> {
    let c = ready()?;
    b.node = node_id(node)?;
    b.exec = match exec {
        Some(e) => exec_id(e)?,
        None => 0,
    };
    c.call(Op::GraphSetNode, &b, params).map(|_| ())
}

pub(crate) unsafe fn cuGraphCreate(ph: *mut CUgraph, flags: c_uint) -> CUresult {
    ret((|| {
        let c = ready()?;
        if flags != 0 || ph.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let body = p::DeviceOnly {
            device: current_device()?,
            _pad: 0,
        };
        let id = c.call(Op::GraphCreate, &body, &[])?.values[0];
        // SAFETY: checked non-null.
        unsafe { out(ph, (GRAPH_TAG | id) as usize as CUgraph) }
    })())
}

pub(crate) unsafe fn cuGraphAddKernelNode_v2(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    params: *const CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, the caller's parameters.
        let k = Kernel::from_v2(unsafe { &*params });
        let mut b = p::GraphNode::new_zeroed();
        // SAFETY: forwarded caller contract.
        let block = unsafe { kernel_body(&k, &mut b)? };
        // SAFETY: forwarded caller contract.
        let id = unsafe { add(ph, graph, deps, n, b, &block)? };
        remember_kernel(id, &k, block)
    })())
}

pub(crate) unsafe fn cuGraphAddKernelNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    params: *const CUDA_KERNEL_NODE_PARAMS_v1,
) -> CUresult {
    if params.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: non-null; the v1 layout is the v2 layout's prefix.
    let v1 = unsafe { &*params };
    let v2 = CUDA_KERNEL_NODE_PARAMS {
        func: v1.func,
        gridDimX: v1.gridDimX,
        gridDimY: v1.gridDimY,
        gridDimZ: v1.gridDimZ,
        blockDimX: v1.blockDimX,
        blockDimY: v1.blockDimY,
        blockDimZ: v1.blockDimZ,
        sharedMemBytes: v1.sharedMemBytes,
        kernelParams: v1.kernelParams,
        extra: v1.extra,
        ..Default::default()
    };
    // SAFETY: forwarded caller contract.
    unsafe { cuGraphAddKernelNode_v2(ph, graph, deps, n, &v2) }
}

pub(crate) unsafe fn cuGraphAddMemsetNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    params: *const CUDA_MEMSET_NODE_PARAMS,
    _ctx: CUcontext,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut b = p::GraphNode::new_zeroed();
        // SAFETY: non-null, the caller's parameters.
        memset_body(unsafe { &*params }, &mut b);
        // SAFETY: forwarded caller contract.
        unsafe { add(ph, graph, deps, n, b, &[]).map(|_| ()) }
    })())
}

pub(crate) unsafe fn cuGraphAddMemcpyNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    copy: *const CUDA_MEMCPY3D,
    _ctx: CUcontext,
) -> CUresult {
    ret((|| {
        let mut b = p::GraphNode::new_zeroed();
        let shadows = memcpy_body(copy, &mut b)?;
        // SAFETY: forwarded caller contract.
        let id = unsafe { add(ph, graph, deps, n, b, &[])? };
        pageable::node_added(graph_id(graph)?, id, shadows);
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphAddEmptyNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
) -> CUresult {
    let mut b = p::GraphNode::new_zeroed();
    b.kind = p::NODE_EMPTY;
    // SAFETY: forwarded caller contract.
    ret(unsafe { add(ph, graph, deps, n, b, &[]).map(|_| ()) })
}

pub(crate) unsafe fn cuGraphAddChildGraphNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    child: CUgraph,
) -> CUresult {
    ret((|| {
        let mut b = p::GraphNode::new_zeroed();
        child_body(child, &mut b)?;
        // SAFETY: forwarded caller contract.
        let id = unsafe { add(ph, graph, deps, n, b, &[])? };
        pageable::child_added(graph_id(graph)?, id, b.child);
        Ok(())
    })())
}

/// What a `CUgraphNodeParams` describes: a node body, its parameter block, and kernel details
/// or copy shadows to remember.
struct Generic {
    body: p::GraphNode,
    params: Vec<u8>,
    kernel: Option<Kernel>,
    shadows: Vec<Arc<Shadow>>,
}

/// # Safety
/// `np` points to a valid `CUgraphNodeParams` whose member for its type is valid.
unsafe fn generic_body(np: *const CUgraphNodeParams) -> Result<Generic, CUresult> {
    // SAFETY: per the contract.
    let (body, params, kernel, shadows) = unsafe { generic_parts(np)? };
    Ok(Generic {
        body,
        params,
        kernel,
        shadows,
    })
}

type Parts = (p::GraphNode, Vec<u8>, Option<Kernel>, Vec<Arc<Shadow>>);

/// # Safety
/// As for [`generic_body`].
unsafe fn generic_parts(np: *const CUgraphNodeParams) -> Result<Parts, CUresult> {
    if np.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: per the contract.
    let np = unsafe { &*np };
    let mut b = p::GraphNode::new_zeroed();
    // SAFETY (the union reads): the member named by `type_`.
    match np.type_ {
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => {
            // SAFETY: the member named by the type.
            let k3 = unsafe { np.__bindgen_anon_1.kernel };
            // The v3 layout is the v2 layout.
            // SAFETY: same size and fields (checked by the bindings' layout tests).
            let k = Kernel::from_v2(unsafe {
                &*(&k3 as *const CUDA_KERNEL_NODE_PARAMS_v3 as *const CUDA_KERNEL_NODE_PARAMS)
            });
            // SAFETY: per the contract.
            let params = unsafe { kernel_body(&k, &mut b)? };
            Ok((b, params, Some(k), Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET => {
            // SAFETY: the member named by the type.
            let m = unsafe { np.__bindgen_anon_1.memset };
            let v1 = CUDA_MEMSET_NODE_PARAMS {
                dst: m.dst,
                pitch: m.pitch,
                value: m.value,
                elementSize: m.elementSize,
                width: m.width,
                height: m.height,
            };
            memset_body(&v1, &mut b);
            Ok((b, Vec::new(), None, Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY => {
            // SAFETY: the member named by the type.
            let m = unsafe { np.__bindgen_anon_1.memcpy };
            let shadows = memcpy_body(&m.copyParams, &mut b)?;
            Ok((b, Vec::new(), None, shadows))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_GRAPH => {
            // SAFETY: the member named by the type.
            let g = unsafe { np.__bindgen_anon_1.graph };
            if g.ownership.0 != 0 {
                crate::log::once(
                    "cuGraphAddNode",
                    "supports child graphs by copy only under Baton (ownership MOVE: NOT_SUPPORTED)",
                );
                return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
            }
            child_body(g.graph, &mut b)?;
            Ok((b, Vec::new(), None, Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST => {
            // SAFETY: the member named by the type.
            let hp = unsafe { np.__bindgen_anon_1.host };
            host_body(hp.fn_, hp.userData, &mut b)?;
            Ok((b, Vec::new(), None, Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_CONDITIONAL => {
            // SAFETY: the member named by the type.
            let cp = unsafe { np.__bindgen_anon_1.conditional };
            super::conditional::conditional_body(&cp, &mut b);
            Ok((b, Vec::new(), None, Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY => {
            b.kind = p::NODE_EMPTY;
            Ok((b, Vec::new(), None, Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC => {
            // SAFETY: the member named by the type.
            let a = unsafe { np.__bindgen_anon_1.alloc };
            super::graph_mem::alloc_body(&a, &mut b)?;
            Ok((b, Vec::new(), None, Vec::new()))
        }
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => {
            // SAFETY: the member named by the type.
            let f = unsafe { np.__bindgen_anon_1.free };
            b.kind = p::NODE_MEM_FREE;
            b.dst = f.dptr;
            Ok((b, Vec::new(), None, Vec::new()))
        }
        other => {
            crate::log::once(
                "cuGraphAddNode",
                &format!("supports kernel, memcpy, memset, host, child-graph, empty and memory nodes only under Baton (type {}: NOT_SUPPORTED)", other.0),
            );
            Err(CUresult::CUDA_ERROR_NOT_SUPPORTED)
        }
    }
}

pub(crate) unsafe fn cuGraphAddNode_v2(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    _edges: *const CUgraphEdgeData,
    n: usize,
    np: *mut CUgraphNodeParams,
) -> CUresult {
    ret((|| {
        // SAFETY: forwarded caller contract.
        let g = unsafe { generic_body(np)? };
        if g.body.kind == p::NODE_CONDITIONAL {
            // SAFETY: forwarded caller contract; `np` is non-null (read above) and its
            // conditional member is the one its type names.
            return unsafe {
                add_conditional(
                    ph,
                    graph,
                    deps,
                    n,
                    g.body,
                    &mut (*np).__bindgen_anon_1.conditional,
                )
            };
        }
        // SAFETY: forwarded caller contract.
        let values = unsafe { add_answered(ph, graph, deps, n, g.body, &g.params)? };
        let id = values[0];
        if g.body.kind == p::NODE_MEM_ALLOC {
            // SAFETY: non-null (read above); `alloc.dptr` is the parameters' out field.
            unsafe { super::graph_mem::allocated(&mut (*np).__bindgen_anon_1.alloc, values[1]) };
        }
        let gid = graph_id(graph)?;
        if g.body.kind == p::NODE_GRAPH {
            pageable::child_added(gid, id, g.body.child);
        }
        pageable::node_added(gid, id, g.shadows);
        remember_host(id, &g.body);
        match g.kernel {
            Some(k) => remember_kernel(id, &k, g.params),
            None => Ok(()),
        }
    })())
}

pub(crate) unsafe fn cuGraphAddNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    np: *mut CUgraphNodeParams,
) -> CUresult {
    // SAFETY: forwarded caller contract; default edges.
    unsafe { cuGraphAddNode_v2(ph, graph, deps, std::ptr::null(), n, np) }
}

pub(crate) unsafe fn cuGraphNodeSetParams(
    node: CUgraphNode,
    np: *mut CUgraphNodeParams,
) -> CUresult {
    ret((|| {
        // SAFETY: forwarded caller contract.
        let g = unsafe { generic_body(np)? };
        let id = node_id(node)?;
        let graph = pageable::graph_of(id);
        if g.body.kind == p::NODE_MEMCPY && graph.is_none() && !g.shadows.is_empty() {
            crate::log::once(
                "cuGraphNodeSetParams",
                "can give pageable host memory only to memcpy nodes this process added under Baton (nodes of captured or cloned graphs: NOT_SUPPORTED)",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        set(None, node, g.body, &g.params)?;
        if g.body.kind == p::NODE_MEMCPY {
            pageable::node_set(graph, None, id, g.shadows);
        }
        remember_host(id, &g.body);
        match g.kernel {
            Some(k) => remember_kernel(id, &k, g.params),
            None => Ok(()),
        }
    })())
}

pub(crate) unsafe fn cuGraphExecNodeSetParams(
    exec: CUgraphExec,
    node: CUgraphNode,
    np: *mut CUgraphNodeParams,
) -> CUresult {
    ret((|| {
        // SAFETY: forwarded caller contract.
        let g = unsafe { generic_body(np)? };
        set(Some(exec), node, g.body, &g.params)?;
        if g.body.kind == p::NODE_MEMCPY {
            pageable::node_set(None, Some(exec_id(exec)?), node_id(node)?, g.shadows);
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphKernelNodeSetParams_v2(
    node: CUgraphNode,
    params: *const CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, the caller's parameters.
        let k = Kernel::from_v2(unsafe { &*params });
        let mut b = p::GraphNode::new_zeroed();
        // SAFETY: forwarded caller contract.
        let block = unsafe { kernel_body(&k, &mut b)? };
        set(None, node, b, &block)?;
        remember_kernel(node_id(node)?, &k, block)
    })())
}

pub(crate) unsafe fn cuGraphExecKernelNodeSetParams_v2(
    exec: CUgraphExec,
    node: CUgraphNode,
    params: *const CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, the caller's parameters.
        let k = Kernel::from_v2(unsafe { &*params });
        let mut b = p::GraphNode::new_zeroed();
        // SAFETY: forwarded caller contract.
        let block = unsafe { kernel_body(&k, &mut b)? };
        set(Some(exec), node, b, &block)
    })())
}

pub(crate) unsafe fn cuGraphKernelNodeGetParams_v2(
    node: CUgraphNode,
    params: *mut CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        ready()?;
        let id = node_id(node)?;
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut g = lock(&KERNELS);
        let Some(k) = g.as_mut().and_then(|m| m.get_mut(&id)) else {
            crate::log::once(
                "cuGraphKernelNodeGetParams",
                "knows the parameters of kernel nodes this process added only (captured nodes: NOT_SUPPORTED)",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        };
        let v = CUDA_KERNEL_NODE_PARAMS {
            func: k.func,
            gridDimX: k.grid[0],
            gridDimY: k.grid[1],
            gridDimZ: k.grid[2],
            blockDimX: k.block[0],
            blockDimY: k.block[1],
            blockDimZ: k.block[2],
            sharedMemBytes: k.shared_mem,
            kernelParams: k.ptrs.as_mut_ptr(),
            extra: std::ptr::null_mut(),
            ..Default::default()
        };
        // SAFETY: checked non-null.
        unsafe { out(params, v) }
    })())
}

/// # Safety
/// `from` and `to` hold `n` node handles each (or `n` is 0).
unsafe fn add_edges(
    graph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    n: usize,
) -> Result<(), CUresult> {
    let c = ready()?;
    let body = p::GraphEdges {
        graph: graph_id(graph)?,
        count: n as u32,
        _pad: 0,
    };
    // SAFETY: per the contract.
    let mut tail = unsafe { dep_ids(from, n)? };
    // SAFETY: per the contract.
    tail.extend_from_slice(&unsafe { dep_ids(to, n)? });
    c.call(Op::GraphAddEdges, &body, &tail).map(|_| ())
}

pub(crate) unsafe fn cuGraphAddDependencies_v2(
    graph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    edges: *const CUgraphEdgeData,
    n: usize,
) -> CUresult {
    ret((|| {
        if !edges.is_null() {
            for i in 0..n {
                // SAFETY: `n` entries, per the contract.
                let e = unsafe { *edges.add(i) };
                if e.type_ != 0 || e.from_port != 0 || e.to_port != 0 {
                    crate::log::once(
                        "cuGraphAddDependencies",
                        "supports default edges only under Baton (NOT_SUPPORTED)",
                    );
                    return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
                }
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { add_edges(graph, from, to, n) }
    })())
}

pub(crate) unsafe fn cuGraphAddDependencies(
    graph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    n: usize,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { add_edges(graph, from, to, n) })
}

/// # Safety
/// `nodes` is null or holds `*count` entries; `count` is writable.
unsafe fn list(
    graph: CUgraph,
    roots: bool,
    nodes: *mut CUgraphNode,
    count: *mut usize,
) -> Result<(), CUresult> {
    let c = ready()?;
    if count.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let body = p::GraphQuery {
        graph: graph_id(graph)?,
        roots: roots as u32,
        _pad: 0,
    };
    let r = c.call(Op::GraphGetNodes, &body, &[])?;
    let total = r.values[0] as usize;
    if nodes.is_null() {
        // SAFETY: checked non-null.
        return unsafe { out(count, total) };
    }
    if r.payload.len() < total * 8 {
        crate::log::once(
            "cuGraphGetNodes",
            "lists at most a reply's worth of nodes under Baton (NOT_SUPPORTED past that)",
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: checked non-null.
    let room = unsafe { *count };
    for i in 0..room {
        let h = match i < total {
            true => {
                let b = &r.payload[i * 8..i * 8 + 8];
                node_handle(u64::from_le_bytes(b.try_into().unwrap_or_default()))
            }
            false => std::ptr::null_mut(),
        };
        // SAFETY: `room` entries, per the contract.
        unsafe { *nodes.add(i) = h };
    }
    // SAFETY: checked non-null.
    unsafe { out(count, room.min(total)) }
}

pub(crate) unsafe fn cuGraphGetNodes(
    graph: CUgraph,
    nodes: *mut CUgraphNode,
    count: *mut usize,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { list(graph, false, nodes, count) })
}

pub(crate) unsafe fn cuGraphGetRootNodes(
    graph: CUgraph,
    nodes: *mut CUgraphNode,
    count: *mut usize,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { list(graph, true, nodes, count) })
}

pub(crate) unsafe fn cuGraphNodeGetType(node: CUgraphNode, ty: *mut CUgraphNodeType) -> CUresult {
    ret((|| {
        let c = ready()?;
        let r = c.call(Op::GraphNodeType, &p::ObjectId { id: node_id(node)? }, &[])?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ty, CUgraphNodeType(r.values[0] as u32)) }
    })())
}

pub(crate) unsafe fn cuGraphDestroyNode(node: CUgraphNode) -> CUresult {
    ret((|| {
        let c = ready()?;
        let id = node_id(node)?;
        c.call(Op::GraphDestroyNode, &p::ObjectId { id }, &[])?;
        if let Some(m) = lock(&KERNELS).as_mut() {
            m.remove(&id);
        }
        if let Some(m) = lock(&HOSTS).as_mut() {
            m.remove(&id);
        }
        pageable::node_destroyed(id);
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphClone(ph: *mut CUgraph, graph: CUgraph) -> CUresult {
    ret((|| {
        let c = ready()?;
        if ph.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let from = graph_id(graph)?;
        let id = c
            .call(Op::GraphClone, &p::ObjectId { id: from }, &[])?
            .values[0];
        pageable::cloned(from, id);
        // SAFETY: checked non-null.
        unsafe { out(ph, (GRAPH_TAG | id) as usize as CUgraph) }
    })())
}

pub(crate) unsafe fn cuGraphExecUpdate_v2(
    exec: CUgraphExec,
    graph: CUgraph,
    info: *mut CUgraphExecUpdateResultInfo,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let body = p::GraphExecUpdate {
            exec: exec_id(exec)?,
            graph: graph_id(graph)?,
        };
        let r = c.call(Op::GraphExecUpdate, &body, &[])?;
        if !info.is_null() {
            let v = CUgraphExecUpdateResultInfo {
                result: CUgraphExecUpdateResult(r.values[1] as u32),
                errorNode: match r.values[2] {
                    0 => std::ptr::null_mut(),
                    id => node_handle(id),
                },
                errorFromNode: std::ptr::null_mut(),
            };
            // SAFETY: checked non-null.
            unsafe { out(info, v)? };
        }
        match r.values[0] {
            0 => {
                // The executable's nodes now copy as the graph's do.
                pageable::exec_from(body.exec, body.graph);
                Ok(())
            }
            e => Err(CUresult(e as u32)),
        }
    })())
}

/// # Safety
/// `n` readable entries at `src` when `src` is non-null.
unsafe fn read_into<T: Copy>(dst: &mut [T], src: *const T, n: usize) -> Result<(), CUresult> {
    if n == 0 {
        return Ok(());
    }
    if src.is_null() || n > dst.len() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    for (i, d) in dst.iter_mut().take(n).enumerate() {
        // SAFETY: per the contract.
        *d = unsafe { *src.add(i) };
    }
    Ok(())
}

fn encode(map: *mut CUtensorMap, req: p::TensorMapEncode) -> Result<(), CUresult> {
    let c = ready()?;
    if map.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let r = c.call(Op::TensorMapEncode, &req, &[])?;
    if r.payload.len() != p::TENSOR_MAP_BYTES {
        return Err(CUresult::CUDA_ERROR_UNKNOWN);
    }
    // SAFETY: a CUtensorMap is 128 writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(r.payload.as_ptr(), map as *mut u8, p::TENSOR_MAP_BYTES)
    };
    Ok(())
}

pub(crate) unsafe fn cuTensorMapEncodeTiled(
    map: *mut CUtensorMap,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    addr: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    box_dim: *const cuuint32_t,
    elem_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> CUresult {
    ret((|| {
        let n = rank as usize;
        if !(1..=p::TENSOR_MAX_RANK).contains(&n) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut req = p::TensorMapEncode {
            device: current_device()?,
            kind: p::TENSOR_MAP_TILED,
            data_type: data_type.0,
            rank,
            interleave: interleave.0,
            swizzle: swizzle.0,
            l2_promotion: l2.0,
            oob_fill: oob.0,
            global_address: addr as u64,
            ..Default::default()
        };
        // SAFETY: the arrays hold `rank` entries (`rank - 1` strides), per the driver's contract.
        unsafe {
            read_into(&mut req.global_dim, dims, n)?;
            read_into(&mut req.global_strides, strides, n - 1)?;
            read_into(&mut req.box_dim, box_dim, n)?;
            read_into(&mut req.element_strides, elem_strides, n)?;
        }
        encode(map, req)
    })())
}

pub(crate) unsafe fn cuTensorMapEncodeIm2col(
    map: *mut CUtensorMap,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    addr: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    lower: *const c_int,
    upper: *const c_int,
    channels: cuuint32_t,
    pixels: cuuint32_t,
    elem_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> CUresult {
    ret((|| {
        let n = rank as usize;
        if !(3..=p::TENSOR_MAX_RANK).contains(&n) {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut req = p::TensorMapEncode {
            device: current_device()?,
            kind: p::TENSOR_MAP_IM2COL,
            data_type: data_type.0,
            rank,
            interleave: interleave.0,
            swizzle: swizzle.0,
            l2_promotion: l2.0,
            oob_fill: oob.0,
            global_address: addr as u64,
            channels_per_pixel: channels,
            pixels_per_column: pixels,
            ..Default::default()
        };
        // SAFETY: `rank` dims and element strides, `rank - 1` strides and `rank - 2` corner
        // coordinates, per the driver's contract.
        unsafe {
            read_into(&mut req.global_dim, dims, n)?;
            read_into(&mut req.global_strides, strides, n - 1)?;
            read_into(&mut req.lower_corner, lower, n - 2)?;
            read_into(&mut req.upper_corner, upper, n - 2)?;
            read_into(&mut req.element_strides, elem_strides, n)?;
        }
        encode(map, req)
    })())
}

/// # Safety
/// `params` is null or points to valid host node parameters.
unsafe fn host_params(params: *const CUDA_HOST_NODE_PARAMS) -> Result<p::GraphNode, CUresult> {
    if params.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, per the contract.
    let hp = unsafe { &*params };
    let mut b = p::GraphNode::new_zeroed();
    host_body(hp.fn_, hp.userData, &mut b)?;
    Ok(b)
}

pub(crate) unsafe fn cuGraphAddHostNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    params: *const CUDA_HOST_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        // SAFETY: forwarded caller contract.
        let b = unsafe { host_params(params)? };
        // SAFETY: forwarded caller contract.
        let id = unsafe { add(ph, graph, deps, n, b, &[])? };
        remember_host(id, &b);
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphHostNodeSetParams(
    node: CUgraphNode,
    params: *const CUDA_HOST_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        // SAFETY: forwarded caller contract.
        let b = unsafe { host_params(params)? };
        set(None, node, b, &[])?;
        remember_host(node_id(node)?, &b);
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphExecHostNodeSetParams(
    exec: CUgraphExec,
    node: CUgraphNode,
    params: *const CUDA_HOST_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        // SAFETY: forwarded caller contract.
        let b = unsafe { host_params(params)? };
        set(Some(exec), node, b, &[])
    })())
}

pub(crate) unsafe fn cuGraphHostNodeGetParams(
    node: CUgraphNode,
    params: *mut CUDA_HOST_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        ready()?;
        let id = node_id(node)?;
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let callback = lock(&HOSTS).as_ref().and_then(|m| m.get(&id).copied());
        let Some(h) = callback.and_then(host_func::node_fn) else {
            crate::log::once(
                "cuGraphHostNodeGetParams",
                "knows the parameters of host nodes this process added only (captured or cloned nodes: NOT_SUPPORTED)",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        };
        let v = CUDA_HOST_NODE_PARAMS {
            fn_: Some(h.f),
            userData: h.data as *mut c_void,
        };
        // SAFETY: checked non-null.
        unsafe { out(params, v) }
    })())
}
