//! Graphs that copy to and from pageable host memory (memcpy nodes and captured async copies),
//! in client processes against the real `batond` on the simulated executor: the copies go
//! through pinned shadows, which a daemon inside the client's own process could not map.

use baton_tests::child::{is_child, run, SimDaemon};
use baton_tests::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

#[allow(non_snake_case)]
extern "C" {
    fn cuGraphNodeSetParams(n: CUgraphNode, p: *mut CUgraphNodeParams) -> CUresult;
}

const N: usize = 256;

/// A copy of `N` words from pageable `src` to device `dst`.
fn upload(dst: u64, src: &[u32]) -> CUDA_MEMCPY3D {
    CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: src.as_ptr() as *const c_void,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: dst,
        WidthInBytes: N * 4,
        Height: 1,
        Depth: 1,
        ..Default::default()
    }
}

/// A copy of `N` words from device `src` to pageable `dst`.
fn download(dst: &mut [u32], src: u64) -> CUDA_MEMCPY3D {
    CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: src,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        dstHost: dst.as_mut_ptr() as *mut c_void,
        WidthInBytes: N * 4,
        Height: 1,
        Depth: 1,
        ..Default::default()
    }
}

fn words(round: u32) -> Vec<u32> {
    (0..N as u32).map(|i| round * 1000 + i).collect()
}

#[test]
fn memcpy_nodes_with_pageable_memory() {
    let d = SimDaemon::start("graph-pageable-nodes");
    run("client_pageable_nodes", &d.socket);
}

#[test]
#[ignore = "run in a child process"]
fn client_pageable_nodes() {
    if !is_child() {
        return;
    }
    init_client();
    let mut stream = null_mut();
    cu!(cuStreamCreate(&mut stream, 0));
    let mut dev = 0;
    cu!(cuMemAlloc_v2(&mut dev, N * 4));
    let mut src = vec![0u32; N];
    let mut dst = vec![0u32; N];

    // src -> dev -> dst
    let mut g = null_mut();
    cu!(cuGraphCreate(&mut g, 0));
    let (mut up, mut down) = (null_mut(), null_mut());
    cu!(cuGraphAddMemcpyNode(
        &mut up,
        g,
        null(),
        0,
        &upload(dev, &src),
        null_mut()
    ));
    let d = download(&mut dst, dev);
    cu!(cuGraphAddMemcpyNode(&mut down, g, &up, 1, &d, null_mut()));
    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, g, 0));

    // Each launch reads the host data as it is at launch and writes back before a sync returns.
    for round in 1..4 {
        src.copy_from_slice(&words(round));
        cu!(cuGraphLaunch(exec, stream));
        cu!(cuStreamSynchronize(stream));
        assert_eq!(dst, words(round), "round {round}");
    }
    // Two launches in flight: the second waits for the first before refilling the shadow.
    src.copy_from_slice(&words(7));
    cu!(cuGraphLaunch(exec, stream));
    src.copy_from_slice(&words(8));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(dst, words(8));

    // A clone keeps copying after the original graph and executable are gone.
    let mut clone = null_mut();
    cu!(cuGraphClone(&mut clone, g));
    let mut cexec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut cexec, clone, 0));

    // Pointing the graph's download at another buffer: an executable made before still
    // writes the old one; one made after writes only the new one.
    let mut other = vec![0u32; N];
    let mut np = CUgraphNodeParams {
        type_: CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY,
        ..Default::default()
    };
    np.__bindgen_anon_1.memcpy = CUDA_MEMCPY_NODE_PARAMS {
        copyParams: download(&mut other, dev),
        ..Default::default()
    };
    cu!(cuGraphNodeSetParams(down, &mut np));
    let mut exec2 = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec2, g, 0));
    src.copy_from_slice(&words(9));
    dst.fill(0);
    cu!(cuGraphLaunch(exec2, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(other, words(9));
    assert!(
        dst.iter().all(|&w| w == 0),
        "the replaced copy still wrote back"
    );
    src.copy_from_slice(&words(10));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(dst, words(10));

    cu!(cuGraphExecDestroy(exec));
    cu!(cuGraphExecDestroy(exec2));
    cu!(cuGraphDestroy(g));
    src.copy_from_slice(&words(11));
    dst.fill(0);
    cu!(cuGraphLaunch(cexec, stream));
    cu!(cuStreamSynchronize(stream));
    assert_eq!(dst, words(11));
    cu!(cuGraphExecDestroy(cexec));
    cu!(cuGraphDestroy(clone));

    // A pitched download writes its rows only, not the bytes between them.
    let (w, h, pitch) = (16usize, 4usize, 64usize);
    let mut host = vec![0xaau8; pitch * h];
    let pattern: Vec<u8> = (0..(w * h) as u8).collect();
    cu!(cuMemcpyHtoD_v2(
        dev,
        pattern.as_ptr() as *const c_void,
        w * h
    ));
    let c = CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: dev,
        srcPitch: w,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        dstHost: host.as_mut_ptr() as *mut c_void,
        dstPitch: pitch,
        WidthInBytes: w,
        Height: h,
        Depth: 1,
        ..Default::default()
    };
    let mut g = null_mut();
    cu!(cuGraphCreate(&mut g, 0));
    let mut node = null_mut();
    cu!(cuGraphAddMemcpyNode(
        &mut node,
        g,
        null(),
        0,
        &c,
        null_mut()
    ));
    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, g, 0));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuStreamSynchronize(stream));
    for r in 0..h {
        assert_eq!(
            &host[r * pitch..r * pitch + w],
            &pattern[r * w..(r + 1) * w]
        );
        assert!(host[r * pitch + w..(r + 1) * pitch]
            .iter()
            .all(|&b| b == 0xaa));
    }
    cu!(cuGraphExecDestroy(exec));
    cu!(cuGraphDestroy(g));
    cu!(cuMemFree_v2(dev));
}

#[test]
fn captured_copies_with_pageable_memory() {
    let d = SimDaemon::start("graph-pageable-capture");
    run("client_pageable_capture", &d.socket);
}

#[test]
#[ignore = "run in a child process"]
fn client_pageable_capture() {
    if !is_child() {
        return;
    }
    init_client();
    let mut stream = null_mut();
    cu!(cuStreamCreate(&mut stream, 1 /* NON_BLOCKING */));
    let mut dev = 0;
    cu!(cuMemAlloc_v2(&mut dev, N * 4));
    let mut src = vec![0u32; N];
    let mut dst = vec![0u32; N];
    let mut first = 0u32; // a stack variable, as in a solver reading back one scalar

    cu!(cuStreamBeginCapture_v2(
        stream,
        CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED
    ));
    cu!(cuMemcpyHtoDAsync_v2(
        dev,
        src.as_ptr() as *const c_void,
        N * 4,
        stream
    ));
    cu!(cuMemcpyDtoHAsync_v2(
        dst.as_mut_ptr() as *mut c_void,
        dev,
        N * 4,
        stream
    ));
    cu!(cuMemcpyDtoHAsync_v2(
        &mut first as *mut u32 as *mut c_void,
        dev + 4,
        4,
        stream
    ));
    let mut g = null_mut();
    cu!(cuStreamEndCapture(stream, &mut g));
    // Captured, not run.
    assert!(dst.iter().all(|&w| w == 0));

    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, g, 0));
    for round in 1..4 {
        src.copy_from_slice(&words(round));
        cu!(cuGraphLaunch(exec, stream));
        cu!(cuStreamSynchronize(stream));
        assert_eq!(dst, words(round), "round {round}");
        assert_eq!(first, round * 1000 + 1);
    }
    cu!(cuGraphExecDestroy(exec));
    cu!(cuGraphDestroy(g));

    // A synchronous copy while this thread has a global-mode capture open is refused, as the
    // driver refuses it.
    let mut blocking = null_mut();
    cu!(cuStreamCreate(&mut blocking, 0));
    cu!(cuStreamBeginCapture_v2(
        blocking,
        CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL
    ));
    assert_eq!(
        // SAFETY: a live buffer of N words.
        unsafe { cuMemcpyHtoD_v2(dev, src.as_ptr() as *const c_void, N * 4) },
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    let mut g = null_mut();
    cu!(cuStreamEndCapture(blocking, &mut g));
    cu!(cuGraphDestroy(g));
    // With no capture open it works again.
    cu!(cuMemcpyHtoD_v2(dev, src.as_ptr() as *const c_void, N * 4));
    cu!(cuMemFree_v2(dev));
}
