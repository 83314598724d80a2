//! Graphs built node by node through the shim's entry points, on the simulated executor.

use baton_tests::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

#[allow(non_snake_case)]
extern "C" {
    fn cuGraphAddDependencies(
        g: CUgraph,
        from: *const CUgraphNode,
        to: *const CUgraphNode,
        n: usize,
    ) -> CUresult;
    fn cuGraphGetRootNodes(g: CUgraph, nodes: *mut CUgraphNode, n: *mut usize) -> CUresult;
    fn cuGraphKernelNodeGetParams_v2(n: CUgraphNode, p: *mut CUDA_KERNEL_NODE_PARAMS) -> CUresult;
    fn cuGraphExecKernelNodeSetParams_v2(
        e: CUgraphExec,
        n: CUgraphNode,
        p: *const CUDA_KERNEL_NODE_PARAMS,
    ) -> CUresult;
    fn cuGraphDestroyNode(n: CUgraphNode) -> CUresult;
    fn cuTensorMapEncodeTiled(
        map: *mut CUtensorMap,
        t: CUtensorMapDataType,
        rank: u32,
        addr: *mut c_void,
        dims: *const u64,
        strides: *const u64,
        boxd: *const u32,
        es: *const u32,
        il: CUtensorMapInterleave,
        sw: CUtensorMapSwizzle,
        l2: CUtensorMapL2promotion,
        oob: CUtensorMapFloatOOBfill,
    ) -> CUresult;
}

#[test]
fn a_graph_of_memset_kernel_and_copies_runs_in_dependency_order() {
    init_thread();
    let (_m, _, fill, _) = load_kernels();
    let n = 64usize;
    let (mut a, mut b) = (0, 0);
    cu!(cuMemAlloc_v2(&mut a, n * 4));
    cu!(cuMemAlloc_v2(&mut b, n * 4));

    let mut g = null_mut();
    cu!(cuGraphCreate(&mut g, 0));
    // memset(a, 3) -> fill(a[0..16], 7) -> copy a -> b -> copy a -> b again
    // (pinned host memory cannot be mapped twice in one process, so results are read back)
    let ms = CUDA_MEMSET_NODE_PARAMS {
        dst: a,
        pitch: 0,
        value: 3,
        elementSize: 4,
        width: n,
        height: 1,
    };
    let mut memset = null_mut();
    cu!(cuGraphAddMemsetNode(
        &mut memset,
        g,
        null(),
        0,
        &ms,
        null_mut()
    ));
    let (mut ptr, mut val, mut cnt) = (a, 7u32, 16i32);
    let mut args = [
        &mut ptr as *mut u64 as *mut c_void,
        &mut val as *mut u32 as *mut c_void,
        &mut cnt as *mut i32 as *mut c_void,
    ];
    let kp = CUDA_KERNEL_NODE_PARAMS {
        func: fill,
        gridDimX: 1,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 32,
        blockDimY: 1,
        blockDimZ: 1,
        kernelParams: args.as_mut_ptr(),
        ..Default::default()
    };
    let mut kernel = null_mut();
    cu!(cuGraphAddKernelNode_v2(&mut kernel, g, &memset, 1, &kp));
    let copy = |dst: CUmemorytype, dptr: u64, src: u64| CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: src,
        srcPitch: n * 4,
        srcHeight: 1,
        dstMemoryType: dst,
        dstDevice: dptr,
        dstHost: dptr as *mut c_void,
        dstPitch: n * 4,
        dstHeight: 1,
        WidthInBytes: n * 4,
        Height: 1,
        Depth: 1,
        ..Default::default()
    };
    let mut c1 = null_mut();
    cu!(cuGraphAddMemcpyNode(
        &mut c1,
        g,
        null(),
        0,
        &copy(CUmemorytype::CU_MEMORYTYPE_DEVICE, b, a),
        null_mut()
    ));
    cu!(cuGraphAddDependencies(g, &kernel, &c1, 1));
    let mut c2 = null_mut();
    let again = copy(CUmemorytype::CU_MEMORYTYPE_DEVICE, b, a);
    cu!(cuGraphAddMemcpyNode(&mut c2, g, &c1, 1, &again, null_mut()));

    let mut count = 0;
    cu!(cuGraphGetNodes(g, null_mut(), &mut count));
    assert_eq!(count, 4);
    let mut nodes = [null_mut(); 4];
    cu!(cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut count));
    assert_eq!(nodes, [memset, kernel, c1, c2]);
    let mut roots = [null_mut(); 2];
    let mut nroots = 2;
    cu!(cuGraphGetRootNodes(g, roots.as_mut_ptr(), &mut nroots));
    assert_eq!((nroots, roots[0]), (1, memset));
    let mut ty = CUgraphNodeType(99);
    cu!(cuGraphNodeGetType(kernel, &mut ty));
    assert_eq!(ty, CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL);
    let mut got = CUDA_KERNEL_NODE_PARAMS::default();
    cu!(cuGraphKernelNodeGetParams_v2(kernel, &mut got));
    assert_eq!((got.func, got.blockDimX), (fill, 32));
    // SAFETY: the second parameter points into the node's saved block.
    assert_eq!(unsafe { *(*got.kernelParams.add(1) as *const u32) }, 7);

    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, g, 0));
    cu!(cuGraphLaunch(exec, null_mut()));
    cu!(cuStreamSynchronize(null_mut()));
    let mut out = vec![0u32; n];
    cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, b, n * 4));
    assert!(out[..16].iter().all(|&w| w == 7));
    assert!(out[16..].iter().all(|&w| w == 3));

    // The executable's kernel node, changed in place.
    // SAFETY: `args[1]` points to `val`, which the node parameters name.
    unsafe { *(args[1] as *mut u32) = 9 };
    cu!(cuGraphExecKernelNodeSetParams_v2(exec, kernel, &kp));
    cu!(cuGraphLaunch(exec, null_mut()));
    cu!(cuStreamSynchronize(null_mut()));
    cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, b, n * 4));
    assert_eq!(out[0], 9);

    // Destroyed and foreign handles are refused.
    cu!(cuGraphDestroyNode(c2));
    assert_ne!(
        // SAFETY: out-pointer to a local.
        unsafe { cuGraphNodeGetType(c2, &mut ty) },
        CUresult::CUDA_SUCCESS
    );
    assert_eq!(
        // SAFETY: out-pointer to a local.
        unsafe { cuGraphNodeGetType(0x1234 as CUgraphNode, &mut ty) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    cu!(cuGraphExecDestroy(exec));
    cu!(cuGraphDestroy(g));
    assert_ne!(
        // SAFETY: out-pointer to a local.
        unsafe { cuGraphNodeGetType(kernel, &mut ty) },
        CUresult::CUDA_SUCCESS
    );
    cu!(cuMemFree_v2(a));
    cu!(cuMemFree_v2(b));
}

#[test]
fn tensor_maps_need_session_memory() {
    init_thread();
    let mut d = 0;
    cu!(cuMemAlloc_v2(&mut d, 4096));
    let mut map = CUtensorMap { opaque: [0; 16] };
    let dims = [32u64, 32];
    let strides = [128u64];
    let boxd = [8u32, 8];
    let es = [1u32, 1];
    let encode = |addr: u64, map: &mut CUtensorMap| {
        // SAFETY: locals of the right lengths.
        unsafe {
            cuTensorMapEncodeTiled(
                map,
                CUtensorMapDataType(7),
                2,
                addr as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxd.as_ptr(),
                es.as_ptr(),
                CUtensorMapInterleave(0),
                CUtensorMapSwizzle(0),
                CUtensorMapL2promotion(0),
                CUtensorMapFloatOOBfill(0),
            )
        }
    };
    assert_eq!(encode(d, &mut map), CUresult::CUDA_SUCCESS);
    // The simulator writes the address into the first word.
    assert_eq!(map.opaque[0], d);
    assert_eq!(
        encode(d + 4096 - 64, &mut map),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    cu!(cuMemFree_v2(d));
}
