//! Graph memory nodes through the shim's entry points, on the simulated executor.

use baton_tests::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

#[allow(non_snake_case)]
extern "C" {
    fn cuGraphAddMemAllocNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        p: *mut CUDA_MEM_ALLOC_NODE_PARAMS,
    ) -> CUresult;
    fn cuGraphAddMemFreeNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        dptr: CUdeviceptr,
    ) -> CUresult;
    fn cuGraphMemAllocNodeGetParams(n: CUgraphNode, p: *mut CUDA_MEM_ALLOC_NODE_PARAMS)
        -> CUresult;
    fn cuGraphMemFreeNodeGetParams(n: CUgraphNode, p: *mut CUdeviceptr) -> CUresult;
    fn cuDeviceGetGraphMemAttribute(
        d: CUdevice,
        a: CUgraphMem_attribute,
        v: *mut c_void,
    ) -> CUresult;
    fn cuDeviceGraphMemTrim(d: CUdevice) -> CUresult;
}

fn alloc_params(bytes: usize) -> CUDA_MEM_ALLOC_NODE_PARAMS {
    // SAFETY: all-zero is a valid value of this C struct.
    let mut p: CUDA_MEM_ALLOC_NODE_PARAMS = unsafe { std::mem::zeroed() };
    p.poolProps.allocType = CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    p.poolProps.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    p.poolProps.location.id = 0;
    p.bytesize = bytes;
    p
}

fn memset_node(g: CUgraph, dep: CUgraphNode, dst: u64, value: u32, n: usize) -> CUgraphNode {
    let ms = CUDA_MEMSET_NODE_PARAMS {
        dst,
        pitch: 0,
        value,
        elementSize: 1,
        width: n,
        height: 1,
    };
    let mut node = null_mut();
    cu!(cuGraphAddMemsetNode(&mut node, g, &dep, 1, &ms, null_mut()));
    node
}

fn footprint() -> u64 {
    let mut v = 0u64;
    cu!(cuDeviceGetGraphMemAttribute(
        0,
        CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT,
        &mut v as *mut u64 as *mut c_void
    ));
    v
}

#[test]
fn a_graph_allocation_left_allocated_is_readable_and_freed_by_another_graph_or_the_client() {
    init_thread();
    let n = 256usize;
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));

    // alloc -> memset(0x5a), no free: the allocation outlives each launch.
    let mut g = null_mut();
    cu!(cuGraphCreate(&mut g, 0));
    let mut ap = alloc_params(n);
    let mut alloc = null_mut();
    cu!(cuGraphAddMemAllocNode(&mut alloc, g, null(), 0, &mut ap));
    let ptr = ap.dptr;
    assert_ne!(ptr, 0);
    memset_node(g, alloc, ptr, 0x5a, n);
    let mut ty = CUgraphNodeType(99);
    cu!(cuGraphNodeGetType(alloc, &mut ty));
    assert_eq!(ty, CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC);
    // SAFETY: all-zero is a valid value of this C struct.
    let mut got: CUDA_MEM_ALLOC_NODE_PARAMS = unsafe { std::mem::zeroed() };
    cu!(cuGraphMemAllocNodeGetParams(alloc, &mut got));
    assert_eq!((got.dptr, got.bytesize), (ptr, n));

    // A second graph frees it.
    let mut fg = null_mut();
    cu!(cuGraphCreate(&mut fg, 0));
    let mut free = null_mut();
    cu!(cuGraphAddMemFreeNode(&mut free, fg, null(), 0, ptr));
    let mut freed = 0;
    cu!(cuGraphMemFreeNodeGetParams(free, &mut freed));
    assert_eq!(freed, ptr);

    let (mut x, mut xf) = (null_mut(), null_mut());
    cu!(cuGraphInstantiateWithFlags(&mut x, g, 0));
    cu!(cuGraphInstantiateWithFlags(&mut xf, fg, 0));
    cu!(cuGraphDestroy(g));
    cu!(cuGraphDestroy(fg));

    let read = || {
        let mut out = vec![0u8; n];
        cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, ptr, n));
        out
    };
    for round in 0..3 {
        cu!(cuGraphLaunch(x, s));
        cu!(cuStreamSynchronize(s));
        assert!(read().iter().all(|&b| b == 0x5a));
        // The pool is the device's: other tests' graphs may use it at the same time.
        assert!(footprint() >= n as u64);
        match round {
            0 => cu!(cuMemFree_v2(ptr)),
            1 => cu!(cuMemFreeAsync(ptr, s)),
            _ => cu!(cuGraphLaunch(xf, s)),
        }
        cu!(cuStreamSynchronize(s));
    }
    cu!(cuDeviceGraphMemTrim(0));
    cu!(cuGraphExecDestroy(x));
    cu!(cuGraphExecDestroy(xf));
    cu!(cuStreamDestroy_v2(s));
}

#[test]
fn stream_ordered_allocations_in_a_capture_become_memory_nodes() {
    init_thread();
    let n = 128usize;
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    // Thread-local: a global-mode capture would make the synchronous copies of the other test
    // of this file, running at the same time in another thread, fail with
    // CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, as the driver's would.
    cu!(cuStreamBeginCapture_v2(
        s,
        CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    ));
    let (mut tmp, mut kept) = (0, 0);
    cu!(cuMemAllocAsync(&mut tmp, n, s));
    cu!(cuMemAllocAsync(&mut kept, n, s));
    cu!(cuMemsetD8Async(kept, 0x33, n, s));
    cu!(cuMemFreeAsync(tmp, s));
    let mut g = null_mut();
    cu!(cuStreamEndCapture(s, &mut g));
    let mut count = 0;
    cu!(cuGraphGetNodes(g, null_mut(), &mut count));
    assert_eq!(count, 4);
    let mut x = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut x, g, 0));
    cu!(cuGraphLaunch(x, s));
    cu!(cuStreamSynchronize(s));
    let mut out = vec![0u8; n];
    cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, kept, n));
    assert!(out.iter().all(|&b| b == 0x33));
    // The graph freed `tmp`; the client frees what it left allocated.
    assert_ne!(
        // SAFETY: plain call.
        unsafe { cuMemFree_v2(tmp) },
        CUresult::CUDA_SUCCESS
    );
    cu!(cuMemFreeAsync(kept, s));
    cu!(cuStreamSynchronize(s));
    cu!(cuGraphExecDestroy(x));
    cu!(cuGraphDestroy(g));
    cu!(cuStreamDestroy_v2(s));
}
