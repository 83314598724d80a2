//! Host nodes of graphs (`cuGraphAddHostNode`, host nodes through `cuGraphAddNode`, and
//! `cuLaunchHostFunc` captured from a stream), in client processes against the real `batond`
//! on the simulated executor: every launch asks the client to run the node's function again.

use baton_tests::child::{is_child, run, SimDaemon};
use baton_tests::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};
use std::sync::Mutex;

#[allow(non_snake_case)]
extern "C" {
    fn cuGraphAddHostNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        p: *const CUDA_HOST_NODE_PARAMS,
    ) -> CUresult;
    fn cuGraphAddNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        p: *mut CUgraphNodeParams,
    ) -> CUresult;
    fn cuGraphHostNodeGetParams(n: CUgraphNode, p: *mut CUDA_HOST_NODE_PARAMS) -> CUresult;
    fn cuGraphHostNodeSetParams(n: CUgraphNode, p: *const CUDA_HOST_NODE_PARAMS) -> CUresult;
    fn cuGraphExecHostNodeSetParams(
        e: CUgraphExec,
        n: CUgraphNode,
        p: *const CUDA_HOST_NODE_PARAMS,
    ) -> CUresult;
    fn cuStreamAddCallback(
        s: CUstream,
        f: CUstreamCallback,
        data: *mut c_void,
        flags: u32,
    ) -> CUresult;
}

/// What the host nodes saw, in the order they ran.
static SEEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

unsafe extern "C" fn note(data: *mut c_void) {
    SEEN.lock().unwrap().push(data as usize as u32);
}

unsafe extern "C" fn note_twice(data: *mut c_void) {
    SEEN.lock().unwrap().push(2 * data as usize as u32);
}

unsafe extern "C" fn stream_cb(_s: CUstream, _r: CUresult, _d: *mut c_void) {}

fn seen() -> Vec<u32> {
    std::mem::take(&mut *SEEN.lock().unwrap())
}

fn host(f: unsafe extern "C" fn(*mut c_void), tag: usize) -> CUDA_HOST_NODE_PARAMS {
    CUDA_HOST_NODE_PARAMS {
        fn_: Some(f),
        userData: tag as *mut c_void,
    }
}

/// A kernel node that sets `n` words at `ptr` to `val`, after `deps`.
fn fill_node(
    g: CUgraph,
    deps: &[CUgraphNode],
    fill: CUfunction,
    ptr: u64,
    val: u32,
) -> CUgraphNode {
    let (mut p, mut v, mut n) = (ptr, val, 16i32);
    let mut args = [
        &mut p as *mut u64 as *mut c_void,
        &mut v as *mut u32 as *mut c_void,
        &mut n as *mut i32 as *mut c_void,
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
    let mut node = null_mut();
    cu!(cuGraphAddKernelNode_v2(
        &mut node,
        g,
        deps.as_ptr(),
        deps.len(),
        &kp
    ));
    node
}

fn read16(ptr: u64) -> Vec<u32> {
    let mut v = vec![0u32; 16];
    cu!(cuMemcpyDtoH_v2(v.as_mut_ptr() as *mut c_void, ptr, 64));
    v
}

#[test]
fn host_nodes_run_at_every_launch() {
    let d = SimDaemon::start("graph-host-nodes");
    run("client_host_nodes", &d.socket);
}

#[test]
#[ignore = "run in a child process"]
fn client_host_nodes() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, _, fill, _) = load_kernels();
    let mut stream = null_mut();
    cu!(cuStreamCreate(&mut stream, 0));
    let mut a = 0;
    cu!(cuMemAlloc_v2(&mut a, 64));

    // fill(a, 1) -> host 10 -> fill(a, 2) -> host 20 (through cuGraphAddNode)
    let mut g = null_mut();
    cu!(cuGraphCreate(&mut g, 0));
    let k1 = fill_node(g, &[], fill, a, 1);
    let mut h1 = null_mut();
    cu!(cuGraphAddHostNode(&mut h1, g, &k1, 1, &host(note, 10)));
    let k2 = fill_node(g, &[h1], fill, a, 2);
    let mut np = CUgraphNodeParams {
        type_: CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST,
        ..Default::default()
    };
    np.__bindgen_anon_1.host = CUDA_HOST_NODE_PARAMS_v2 {
        fn_: Some(note),
        userData: 20 as *mut c_void,
    };
    let mut h2 = null_mut();
    cu!(cuGraphAddNode(&mut h2, g, &k2, 1, &mut np));

    let mut ty = CUgraphNodeType(0);
    cu!(cuGraphNodeGetType(h1, &mut ty));
    assert_eq!(ty, CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST);
    let mut got = CUDA_HOST_NODE_PARAMS::default();
    cu!(cuGraphHostNodeGetParams(h2, &mut got));
    assert_eq!(
        got.fn_.map(|f| f as usize),
        Some(note as *const () as usize)
    );
    assert_eq!(got.userData as usize, 20);

    // Three launches without synchronising in between: each runs both host nodes, in order.
    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, g, 0));
    for _ in 0..3 {
        cu!(cuGraphLaunch(exec, stream));
    }
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [10, 20, 10, 20, 10, 20]);
    assert_eq!(read16(a), [2; 16]);

    // A clone runs its own copies of the host nodes.
    let mut clone = null_mut();
    cu!(cuGraphClone(&mut clone, g));
    let mut cexec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut cexec, clone, 0));
    cu!(cuGraphLaunch(cexec, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [10, 20]);

    // Setting the graph's node changes executables made after, not the one made before.
    cu!(cuGraphHostNodeSetParams(h1, &host(note_twice, 30)));
    cu!(cuGraphHostNodeGetParams(h1, &mut got));
    assert_eq!(
        got.fn_.map(|f| f as usize),
        Some(note_twice as *const () as usize)
    );
    assert_eq!(got.userData as usize, 30);
    let mut exec2 = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec2, g, 0));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuGraphLaunch(exec2, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [10, 20, 60, 20]);

    // Setting the executable's copy changes only that executable.
    cu!(cuGraphExecHostNodeSetParams(exec, h2, &host(note, 40)));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [10, 40]);

    // No function: refused, as with the driver.
    let none = CUDA_HOST_NODE_PARAMS {
        fn_: None,
        userData: null_mut(),
    };
    let mut bad = null_mut();
    assert_eq!(
        // SAFETY: valid out-pointer and graph; the parameters are a local.
        unsafe { cuGraphAddHostNode(&mut bad, g, null(), 0, &none) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );

    // A launch in flight when its executable is destroyed still runs its host nodes.
    cu!(cuGraphLaunch(exec2, stream));
    cu!(cuGraphExecDestroy(exec2));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [60, 20]);

    cu!(cuGraphExecDestroy(exec));
    cu!(cuGraphExecDestroy(cexec));
    cu!(cuGraphDestroy(clone));
    cu!(cuGraphDestroy(g));
    cu!(cuMemFree_v2(a));
    cu!(cuStreamDestroy_v2(stream));
}

#[test]
fn captured_host_functions_become_host_nodes() {
    let d = SimDaemon::start("graph-host-capture");
    run("client_captured_host_func", &d.socket);
}

#[test]
#[ignore = "run in a child process"]
fn client_captured_host_func() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, _, fill, _) = load_kernels();
    let (mut cap, mut stream) = (null_mut(), null_mut());
    cu!(cuStreamCreate(&mut cap, 1));
    cu!(cuStreamCreate(&mut stream, 1));
    let mut a = 0;
    cu!(cuMemAlloc_v2(&mut a, 64));

    cu!(cuStreamBeginCapture_v2(
        cap,
        CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED
    ));
    let (mut p, mut v, mut n) = (a, 5u32, 16i32);
    let mut args = [
        &mut p as *mut u64 as *mut c_void,
        &mut v as *mut u32 as *mut c_void,
        &mut n as *mut i32 as *mut c_void,
    ];
    cu!(cuLaunchKernel(
        fill,
        1,
        1,
        1,
        32,
        1,
        1,
        0,
        cap,
        args.as_mut_ptr(),
        null_mut()
    ));
    cu!(cuLaunchHostFunc(cap, Some(note), 7 as *mut c_void));
    cu!(cuLaunchHostFunc(cap, Some(note), 8 as *mut c_void));
    // cuStreamAddCallback cannot be captured, as with the driver.
    assert_eq!(
        // SAFETY: a live stream and a callback that touches nothing.
        unsafe { cuStreamAddCallback(cap, Some(stream_cb), null_mut(), 0) },
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    let mut g = null_mut();
    cu!(cuStreamEndCapture(cap, &mut g));
    // Nothing ran while capturing.
    assert_eq!(seen(), Vec::<u32>::new());

    let mut count = 0usize;
    cu!(cuGraphGetNodes(g, null_mut(), &mut count));
    let mut nodes = vec![null_mut(); count];
    cu!(cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut count));
    let hosts = nodes
        .iter()
        .filter(|&&nd| {
            let mut ty = CUgraphNodeType(0);
            cu!(cuGraphNodeGetType(nd, &mut ty));
            ty == CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST
        })
        .count();
    assert_eq!(hosts, 2);

    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, g, 0));
    for _ in 0..3 {
        cu!(cuGraphLaunch(exec, stream));
    }
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [7, 8, 7, 8, 7, 8]);
    assert_eq!(read16(a), [5; 16]);

    // Outside a capture the same call runs once, as before.
    cu!(cuLaunchHostFunc(stream, Some(note), 9 as *mut c_void));
    cu!(cuStreamSynchronize(stream));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(seen(), [9, 7, 8]);

    cu!(cuGraphExecDestroy(exec));
    cu!(cuGraphDestroy(g));
    cu!(cuMemFree_v2(a));
    cu!(cuStreamDestroy_v2(cap));
    cu!(cuStreamDestroy_v2(stream));
}
