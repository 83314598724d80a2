//! The real driver's calls for graphs built node by node, and tensor-map encoding.
//!
//! Node types, update results and tensor-map enums are typed as Rust enums by cudarc; values
//! from clients (or a newer driver) outside them would be undefined behaviour, so these entry
//! points are looked up by name with C signatures over plain integers and C-layout mirrors.

use super::arrays::memcpy3d;
use super::check_code as check;
use crate::executor::{code, GpuError, GpuResult, HostWork, NodeSpec, Raw, UpdateResult};
use baton_ipc::protocol::{TensorMapEncode, TENSOR_MAP_BYTES, TENSOR_MAP_IM2COL, TENSOR_MAP_TILED};
use cudarc::driver::sys;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

type Ptr = *mut c_void;

/// `CUDA_KERNEL_NODE_PARAMS_v2` (72 bytes).
#[repr(C)]
struct KernelParams {
    func: Ptr,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    kernel_params: *mut Ptr,
    extra: *mut Ptr,
    kern: Ptr,
    ctx: Ptr,
}

/// `CUDA_MEMSET_NODE_PARAMS` (40 bytes).
#[repr(C)]
struct MemsetParams {
    dst: u64,
    pitch: usize,
    value: u32,
    elem_size: u32,
    width: usize,
    height: usize,
}

/// `CUDA_HOST_NODE_PARAMS` (16 bytes).
#[repr(C)]
struct HostParams {
    f: unsafe extern "C" fn(Ptr),
    data: Ptr,
}

/// `CUgraphExecUpdateResultInfo` (24 bytes).
#[repr(C)]
struct UpdateInfo {
    result: u32,
    error_node: Ptr,
    error_from_node: Ptr,
}

const _: () = assert!(std::mem::size_of::<KernelParams>() == 72);
const _: () = assert!(std::mem::size_of::<MemsetParams>() == 40);
const _: () = assert!(std::mem::size_of::<UpdateInfo>() == 24);
const _: () = assert!(std::mem::size_of::<HostParams>() == 16);

type GraphCreateFn = unsafe extern "C" fn(*mut Ptr, u32) -> u32;
type AddKernelFn =
    unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, *const KernelParams) -> u32;
type AddMemsetFn =
    unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, *const MemsetParams, Ptr) -> u32;
type AddMemcpyFn =
    unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, *const sys::CUDA_MEMCPY3D, Ptr) -> u32;
type AddHostFn = unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, *const HostParams) -> u32;
type HostSetFn = unsafe extern "C" fn(Ptr, *const HostParams) -> u32;
type ExecHostSetFn = unsafe extern "C" fn(Ptr, Ptr, *const HostParams) -> u32;
type AddEmptyFn = unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize) -> u32;
type AddChildFn = unsafe extern "C" fn(*mut Ptr, Ptr, *const Ptr, usize, Ptr) -> u32;
type AddDepsFn = unsafe extern "C" fn(Ptr, *const Ptr, *const Ptr, *const c_void, usize) -> u32;
type GetNodesFn = unsafe extern "C" fn(Ptr, *mut Ptr, *mut usize) -> u32;
type NodeTypeFn = unsafe extern "C" fn(Ptr, *mut u32) -> u32;
type NodeFn = unsafe extern "C" fn(Ptr) -> u32;
type CloneFn = unsafe extern "C" fn(*mut Ptr, Ptr) -> u32;
type KernelSetFn = unsafe extern "C" fn(Ptr, *const KernelParams) -> u32;
type ExecKernelSetFn = unsafe extern "C" fn(Ptr, Ptr, *const KernelParams) -> u32;
type MemsetSetFn = unsafe extern "C" fn(Ptr, *const MemsetParams) -> u32;
type ExecMemsetSetFn = unsafe extern "C" fn(Ptr, Ptr, *const MemsetParams, Ptr) -> u32;
type MemcpySetFn = unsafe extern "C" fn(Ptr, *const sys::CUDA_MEMCPY3D) -> u32;
type ExecMemcpySetFn = unsafe extern "C" fn(Ptr, Ptr, *const sys::CUDA_MEMCPY3D, Ptr) -> u32;
type ExecChildSetFn = unsafe extern "C" fn(Ptr, Ptr, Ptr) -> u32;
type ExecUpdateFn = unsafe extern "C" fn(Ptr, Ptr, *mut UpdateInfo) -> u32;
type EncodeTiledFn = unsafe extern "C" fn(
    *mut c_void,
    u32,
    u32,
    Ptr,
    *const u64,
    *const u64,
    *const u32,
    *const u32,
    u32,
    u32,
    u32,
    u32,
) -> u32;
type EncodeIm2colFn = unsafe extern "C" fn(
    *mut c_void,
    u32,
    u32,
    Ptr,
    *const u64,
    *const u64,
    *const i32,
    *const i32,
    u32,
    u32,
    *const u32,
    u32,
    u32,
    u32,
    u32,
) -> u32;

/// The driver host function and argument that run `work`: the argument borrows `work`, which
/// its owner keeps alive while any graph holding it may run (see [`HostWork`]).
pub fn host_params(work: &std::sync::Arc<HostWork>) -> (unsafe extern "C" fn(Ptr), Ptr) {
    unsafe extern "C" fn trampoline(data: Ptr) {
        // SAFETY: `data` is a `HostWork` its owner keeps alive (see above); only borrowed.
        let w = unsafe { &*(data as *const HostWork) };
        // A panic must not unwind into the driver.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run()));
    }
    (trampoline, std::sync::Arc::as_ptr(work) as Ptr)
}

fn host_struct(work: &std::sync::Arc<HostWork>) -> HostParams {
    let (f, data) = host_params(work);
    HostParams { f, data }
}

fn h(r: Raw) -> Ptr {
    r as usize as Ptr
}

fn raws(v: &[Raw]) -> Vec<Ptr> {
    v.iter().map(|&r| h(r)).collect()
}

/// The kernel parameters of a spec, with the `kernelParams` array pointing into `block`.
/// Node creation is given `kernelParams` rather than `extra`: the driver documents both for
/// launches, but only `kernelParams` is certain for graph nodes, and the daemon knows every
/// parameter's offset anyway. The driver copies the values during the call.
fn kernel_params(
    func: Raw,
    cfg: &crate::executor::LaunchConfig,
    layout: &[(u32, u32)],
    block: &mut [u8],
    ptrs: &mut Vec<Ptr>,
) -> GpuResult<KernelParams> {
    ptrs.clear();
    for &(off, size) in layout {
        let end = off as usize + size as usize;
        if end > block.len() {
            return Err(GpuError(code::INVALID_VALUE));
        }
        // SAFETY: `off` lies within `block` (checked above).
        ptrs.push(unsafe { block.as_mut_ptr().add(off as usize) } as Ptr);
    }
    Ok(KernelParams {
        func: h(func),
        grid: cfg.grid,
        block: cfg.block,
        shared_mem: cfg.shared_mem,
        kernel_params: if ptrs.is_empty() {
            null_mut()
        } else {
            ptrs.as_mut_ptr()
        },
        extra: null_mut(),
        kern: null_mut(),
        ctx: null_mut(),
    })
}

fn memset_params(
    dst: u64,
    pitch: u64,
    value: u32,
    elem_size: u32,
    width: u64,
    height: u64,
) -> MemsetParams {
    MemsetParams {
        dst,
        pitch: pitch as usize,
        value,
        elem_size,
        width: width as usize,
        height: height as usize,
    }
}

pub fn create() -> GpuResult<Raw> {
    let f = driver_fn!("cuGraphCreate", GraphCreateFn);
    let mut g = null_mut();
    // SAFETY: out-pointer to a local; flags must be 0.
    check(unsafe { f(&mut g, 0) })?;
    Ok(g as usize as Raw)
}

pub fn add_node(ctx: Ptr, graph: Raw, deps: &[Raw], spec: &NodeSpec<'_>) -> GpuResult<Raw> {
    let deps = raws(deps);
    let (dp, n) = (
        if deps.is_empty() {
            null()
        } else {
            deps.as_ptr()
        },
        deps.len(),
    );
    let g = h(graph);
    let mut node = null_mut();
    // Every call below: the graph and dependencies are the session's own objects,
    // `dp` holds `n` nodes, the parameter structs are locals of the C layout that outlive the
    // call, and addresses in them were checked by the session.
    let r = match *spec {
        NodeSpec::Kernel {
            func,
            cfg,
            params,
            layout,
        } => {
            let f = driver_fn!("cuGraphAddKernelNode_v2", AddKernelFn);
            let mut block = params.to_vec();
            let mut ptrs = Vec::new();
            let kp = kernel_params(func, &cfg, layout, &mut block, &mut ptrs)?;
            // SAFETY: see the comment at the top of this match.
            unsafe { f(&mut node, g, dp, n, &kp) }
        }
        NodeSpec::Memset {
            dst,
            pitch,
            value,
            elem_size,
            width,
            height,
        } => {
            let f = driver_fn!("cuGraphAddMemsetNode", AddMemsetFn);
            let mp = memset_params(dst, pitch, value, elem_size, width, height);
            // SAFETY: see the comment at the top of this match.
            unsafe { f(&mut node, g, dp, n, &mp, ctx) }
        }
        NodeSpec::Memcpy(ref c) => {
            let f = driver_fn!("cuGraphAddMemcpyNode", AddMemcpyFn);
            let copy = memcpy3d(c);
            // SAFETY: see the comment at the top of this match.
            unsafe { f(&mut node, g, dp, n, &copy, ctx) }
        }
        NodeSpec::Host(work) => {
            let f = driver_fn!("cuGraphAddHostNode", AddHostFn);
            let hp = host_struct(work);
            // SAFETY: see the comment at the top of this match.
            unsafe { f(&mut node, g, dp, n, &hp) }
        }
        NodeSpec::Empty => {
            let f = driver_fn!("cuGraphAddEmptyNode", AddEmptyFn);
            // SAFETY: see the comment at the top of this match.
            unsafe { f(&mut node, g, dp, n) }
        }
        NodeSpec::Child(child) => {
            let f = driver_fn!("cuGraphAddChildGraphNode", AddChildFn);
            // SAFETY: see the comment at the top of this match.
            unsafe { f(&mut node, g, dp, n, h(child)) }
        }
        NodeSpec::MemAlloc { device, bytes } => {
            return super::graph_mem::add_alloc(graph, &deps, device, bytes)
        }
        NodeSpec::MemFree { ptr } => return super::graph_mem::add_free(graph, &deps, ptr),
    };
    check(r)?;
    Ok(node as usize as Raw)
}

pub fn node_set(ctx: Ptr, exec: Option<Raw>, node: Raw, spec: &NodeSpec<'_>) -> GpuResult<()> {
    let nd = h(node);
    // Every call below: as in `add_node`; the node (and executable graph) are the
    // session's own.
    let r = match (*spec, exec) {
        (
            NodeSpec::Kernel {
                func,
                cfg,
                params,
                layout,
            },
            e,
        ) => {
            let mut block = params.to_vec();
            let mut ptrs = Vec::new();
            let kp = kernel_params(func, &cfg, layout, &mut block, &mut ptrs)?;
            match e {
                None => {
                    let f = driver_fn!("cuGraphKernelNodeSetParams_v2", KernelSetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(nd, &kp) }
                }
                Some(e) => {
                    let f = driver_fn!("cuGraphExecKernelNodeSetParams_v2", ExecKernelSetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(h(e), nd, &kp) }
                }
            }
        }
        (
            NodeSpec::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            },
            e,
        ) => {
            let mp = memset_params(dst, pitch, value, elem_size, width, height);
            match e {
                None => {
                    let f = driver_fn!("cuGraphMemsetNodeSetParams", MemsetSetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(nd, &mp) }
                }
                Some(e) => {
                    let f = driver_fn!("cuGraphExecMemsetNodeSetParams", ExecMemsetSetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(h(e), nd, &mp, ctx) }
                }
            }
        }
        (NodeSpec::Memcpy(ref c), e) => {
            let copy = memcpy3d(c);
            match e {
                None => {
                    let f = driver_fn!("cuGraphMemcpyNodeSetParams", MemcpySetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(nd, &copy) }
                }
                Some(e) => {
                    let f = driver_fn!("cuGraphExecMemcpyNodeSetParams", ExecMemcpySetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(h(e), nd, &copy, ctx) }
                }
            }
        }
        (NodeSpec::Host(work), e) => {
            let hp = host_struct(work);
            match e {
                None => {
                    let f = driver_fn!("cuGraphHostNodeSetParams", HostSetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(nd, &hp) }
                }
                Some(e) => {
                    let f = driver_fn!("cuGraphExecHostNodeSetParams", ExecHostSetFn);
                    // SAFETY: see the comment at the top of this match.
                    unsafe { f(h(e), nd, &hp) }
                }
            }
        }
        // An empty node has nothing to set.
        (NodeSpec::Empty, _) => 0,
        (NodeSpec::Child(child), Some(e)) => {
            let f = driver_fn!("cuGraphExecChildGraphNodeSetParams", ExecChildSetFn);
            // SAFETY: see the comment at the top of this match.
            unsafe { f(h(e), nd, h(child)) }
        }
        // The driver has no way to swap a child graph node's graph in place.
        (NodeSpec::Child(_), None) => code::NOT_SUPPORTED,
        // The driver fixes a memory node's parameters when it is made.
        (NodeSpec::MemAlloc { .. } | NodeSpec::MemFree { .. }, _) => code::NOT_SUPPORTED,
    };
    check(r)
}

pub fn add_edges(graph: Raw, from: &[Raw], to: &[Raw]) -> GpuResult<()> {
    let f = driver_fn!("cuGraphAddDependencies_v2", AddDepsFn);
    let (from, to) = (raws(from), raws(to));
    // SAFETY: both arrays hold `from.len()` of the session's nodes; null edge data means
    // default edges.
    check(unsafe { f(h(graph), from.as_ptr(), to.as_ptr(), null(), from.len()) })
}

pub fn nodes(graph: Raw, roots: bool) -> GpuResult<Vec<Raw>> {
    let f = match roots {
        false => driver_fn!("cuGraphGetNodes", GetNodesFn),
        true => driver_fn!("cuGraphGetRootNodes", GetNodesFn),
    };
    let mut n = 0usize;
    // SAFETY: a null array asks for the count.
    check(unsafe { f(h(graph), null_mut(), &mut n) })?;
    let mut v = vec![null_mut(); n];
    // SAFETY: `v` holds `n` entries; the driver writes at most `n` and updates `n`.
    check(unsafe { f(h(graph), v.as_mut_ptr(), &mut n) })?;
    v.truncate(n);
    Ok(v.into_iter().map(|p| p as usize as Raw).collect())
}

pub fn node_type(node: Raw) -> GpuResult<u32> {
    let f = driver_fn!("cuGraphNodeGetType", NodeTypeFn);
    let mut t = 0u32;
    // SAFETY: out-pointer to a local `u32` (the enum's C representation).
    check(unsafe { f(h(node), &mut t) })?;
    Ok(t)
}

pub fn destroy_node(node: Raw) -> GpuResult<()> {
    let f = driver_fn!("cuGraphDestroyNode", NodeFn);
    // SAFETY: destroyed once, by the session that owns its graph.
    check(unsafe { f(h(node)) })
}

pub fn clone(graph: Raw) -> GpuResult<Raw> {
    let f = driver_fn!("cuGraphClone", CloneFn);
    let mut g = null_mut();
    // SAFETY: out-pointer to a local; the session's own graph.
    check(unsafe { f(&mut g, h(graph)) })?;
    Ok(g as usize as Raw)
}

pub fn exec_update(exec: Raw, graph: Raw) -> (GpuResult<()>, UpdateResult) {
    let f = (|| Ok(driver_fn!("cuGraphExecUpdate_v2", ExecUpdateFn)))();
    let f: ExecUpdateFn = match f {
        Ok(f) => f,
        Err(e) => return (Err(e), UpdateResult::default()),
    };
    let mut info = UpdateInfo {
        result: 0,
        error_node: null_mut(),
        error_from_node: null_mut(),
    };
    // SAFETY: the session's own executable graph and graph; out-pointer to a local mirror.
    let r = unsafe { f(h(exec), h(graph), &mut info) };
    (
        check(r),
        UpdateResult {
            result: info.result,
            error_node: info.error_node as usize as Raw,
        },
    )
}

/// The 128-byte-aligned `CUtensorMap` the driver writes.
#[repr(C, align(128))]
struct TensorMap([u8; TENSOR_MAP_BYTES]);

pub fn tensor_map_encode(req: &TensorMapEncode) -> GpuResult<[u8; TENSOR_MAP_BYTES]> {
    let mut map = TensorMap([0; TENSOR_MAP_BYTES]);
    let out = &mut map as *mut TensorMap as *mut c_void;
    let addr = req.global_address as usize as Ptr;
    let r = match req.kind {
        TENSOR_MAP_TILED => {
            let f = driver_fn!("cuTensorMapEncodeTiled", EncodeTiledFn);
            // SAFETY: every array holds TENSOR_MAX_RANK entries, at least `rank` (checked by
            // the session); `out` is 128 aligned bytes.
            unsafe {
                f(
                    out,
                    req.data_type,
                    req.rank,
                    addr,
                    req.global_dim.as_ptr(),
                    req.global_strides.as_ptr(),
                    req.box_dim.as_ptr(),
                    req.element_strides.as_ptr(),
                    req.interleave,
                    req.swizzle,
                    req.l2_promotion,
                    req.oob_fill,
                )
            }
        }
        TENSOR_MAP_IM2COL => {
            let f = driver_fn!("cuTensorMapEncodeIm2col", EncodeIm2colFn);
            // SAFETY: as above; the corner arrays hold rank - 2 entries for rank 3..=5.
            unsafe {
                f(
                    out,
                    req.data_type,
                    req.rank,
                    addr,
                    req.global_dim.as_ptr(),
                    req.global_strides.as_ptr(),
                    req.lower_corner.as_ptr(),
                    req.upper_corner.as_ptr(),
                    req.channels_per_pixel,
                    req.pixels_per_column,
                    req.element_strides.as_ptr(),
                    req.interleave,
                    req.swizzle,
                    req.l2_promotion,
                    req.oob_fill,
                )
            }
        }
        _ => code::INVALID_VALUE,
    };
    check(r)?;
    Ok(map.0)
}
