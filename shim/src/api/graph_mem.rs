//! Graph memory nodes (`cuGraphAddMemAllocNode`, `cuGraphAddMemFreeNode`) and the device's
//! graph memory pool. The daemon makes the real node and answers with the address the driver
//! reserved for it; the shim remembers that address as device memory so copies and pointer
//! queries treat it as such.

use super::graph_build::{add_answered, node_id};
use super::init::device;
use super::memory::remember_graph_alloc;
use super::util::{out, ready, ret};
use baton_ipc::protocol::{self as p, Op};
use cuda_abi::*;
use std::ffi::c_void;
use zerocopy::FromZeros;

/// Fills an allocation node body. Baton makes pinned, device-located allocations on the
/// graph's device; other pools (IPC handle types, host locations, peer access) are refused.
pub(super) fn alloc_body(
    a: &CUDA_MEM_ALLOC_NODE_PARAMS_v2,
    b: &mut p::GraphNode,
) -> Result<(), CUresult> {
    let pool = &a.poolProps;
    if pool.allocType != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
        || pool.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE
        || pool.location.id < 0
        || a.bytesize == 0
    {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let own_device_only = (0..a.accessDescCount).all(|i| {
        // SAFETY: the caller's array of `accessDescCount` descriptors.
        let d = unsafe { &*a.accessDescs.add(i) };
        d.location.type_ == CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE
            && d.location.id == pool.location.id
    });
    if pool.handleTypes.0 != 0
        || (a.accessDescCount > 0 && a.accessDescs.is_null())
        || !own_device_only
    {
        crate::log::once(
            "cuGraphAddMemAllocNode",
            "supports device-located graph allocations without IPC handle types or peer access only under Baton (NOT_SUPPORTED)",
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    b.kind = p::NODE_MEM_ALLOC;
    b.width = a.bytesize as u64;
    b.value = pool.location.id as u32;
    Ok(())
}

/// Hands the allocation's address back in the caller's parameters and remembers it.
///
/// # Safety
/// `a` is the caller's parameter struct (writable).
pub(super) unsafe fn allocated(a: *mut CUDA_MEM_ALLOC_NODE_PARAMS_v2, ptr: u64) {
    // SAFETY: per the contract.
    let a = unsafe { &mut *a };
    a.dptr = ptr;
    remember_graph_alloc(ptr, a.bytesize as u64, a.poolProps.location.id as u32);
}

fn v2_of(a: &CUDA_MEM_ALLOC_NODE_PARAMS) -> CUDA_MEM_ALLOC_NODE_PARAMS_v2 {
    CUDA_MEM_ALLOC_NODE_PARAMS_v2 {
        poolProps: a.poolProps,
        accessDescs: a.accessDescs,
        accessDescCount: a.accessDescCount,
        bytesize: a.bytesize,
        dptr: a.dptr,
    }
}

pub(crate) unsafe fn cuGraphAddMemAllocNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    params: *mut CUDA_MEM_ALLOC_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null, the caller's parameters.
        let mut v2 = v2_of(unsafe { &*params });
        let mut b = p::GraphNode::new_zeroed();
        alloc_body(&v2, &mut b)?;
        // SAFETY: forwarded caller contract.
        let values = unsafe { add_answered(ph, graph, deps, n, b, &[])? };
        // SAFETY: a local copy; then the address goes to the caller's out field.
        unsafe {
            allocated(&mut v2, values[1]);
            (*params).dptr = values[1];
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphAddMemFreeNode(
    ph: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    n: usize,
    dptr: CUdeviceptr,
) -> CUresult {
    let mut b = p::GraphNode::new_zeroed();
    b.kind = p::NODE_MEM_FREE;
    b.dst = dptr;
    // SAFETY: forwarded caller contract.
    ret(unsafe { add_answered(ph, graph, deps, n, b, &[]) }.map(|_| ()))
}

/// `[is alloc, address, bytes, device]` of a memory node.
fn mem_node(node: CUgraphNode) -> Result<[u64; 4], CUresult> {
    let c = ready()?;
    let id = node_id(node)?;
    Ok(c.call(Op::GraphMemNode, &p::ObjectId { id }, &[])?.values)
}

pub(crate) unsafe fn cuGraphMemAllocNodeGetParams(
    node: CUgraphNode,
    params: *mut CUDA_MEM_ALLOC_NODE_PARAMS,
) -> CUresult {
    ret((|| {
        if params.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let [alloc, ptr, bytes, dev] = mem_node(node)?;
        if alloc != 1 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // Nodes of captured graphs are learnt here too: the address is device memory.
        remember_graph_alloc(ptr, bytes, dev as u32);
        // SAFETY: non-null, the caller's out-parameters; all-zero is a valid value of the
        // struct (null pointers, zero enums), then the fields Baton knows are set.
        unsafe {
            let a = &mut *params;
            std::ptr::write_bytes(a as *mut CUDA_MEM_ALLOC_NODE_PARAMS, 0, 1);
            a.poolProps.allocType = CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
            a.poolProps.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
            a.poolProps.location.id = dev as i32;
            a.bytesize = bytes as usize;
            a.dptr = ptr;
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuGraphMemFreeNodeGetParams(
    node: CUgraphNode,
    dptr: *mut CUdeviceptr,
) -> CUresult {
    ret((|| {
        let [alloc, ptr, _, _] = mem_node(node)?;
        if alloc != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: forwarded caller contract.
        unsafe { out(dptr, ptr) }
    })())
}

fn pool_call(dev: CUdevice, op: u32, attr: u32, value: u64) -> Result<u64, CUresult> {
    let c = ready()?;
    let d = device(c, dev)?;
    let body = p::GraphMem {
        device: d.ordinal,
        op,
        attr,
        _pad: 0,
        value,
    };
    Ok(c.call(Op::GraphMem, &body, &[])?.values[0])
}

pub(crate) unsafe fn cuDeviceGraphMemTrim(dev: CUdevice) -> CUresult {
    ret(pool_call(dev, p::GRAPH_MEM_TRIM, 0, 0).map(|_| ()))
}

pub(crate) unsafe fn cuDeviceGetGraphMemAttribute(
    dev: CUdevice,
    attr: CUgraphMem_attribute,
    value: *mut c_void,
) -> CUresult {
    ret((|| {
        let v = pool_call(dev, p::GRAPH_MEM_GET, attr.0, 0)?;
        // SAFETY: every graph memory attribute is a cuuint64_t (forwarded caller contract).
        unsafe { out(value as *mut u64, v) }
    })())
}

pub(crate) unsafe fn cuDeviceSetGraphMemAttribute(
    dev: CUdevice,
    attr: CUgraphMem_attribute,
    value: *mut c_void,
) -> CUresult {
    ret((|| {
        if value.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null; a cuuint64_t per the driver's contract.
        let v = unsafe { *(value as *const u64) };
        pool_call(dev, p::GRAPH_MEM_SET, attr.0, v).map(|_| ())
    })())
}
