//! Session-level tests of graphs built node by node, on the simulated GPU.

use super::hostile::{call, session, IMAGE};
use super::Session;
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::Arc;
use zerocopy::FromZeros;

fn alloc(s: &mut Session, bytes: u64) -> u64 {
    let (r, v) = call(
        s,
        Op::MemAlloc,
        &p::MemAlloc {
            device: 0,
            _pad: 0,
            bytes,
        },
        &[],
    );
    assert_eq!(r, 0);
    v[0]
}

fn fill_function(s: &mut Session) -> u64 {
    let blob = s.shared.add_blob(IMAGE.to_vec());
    let load = p::LoadModule {
        device: 0,
        kind: 0,
        blob,
        jit: 0,
        _pad: 0,
    };
    let (r, v) = call(s, Op::LoadModule, &load, &[]);
    assert_eq!((r, v[1]), (0, 0));
    let (r, v) = call(s, Op::GetFunction, &p::GetSymbol { module: v[0] }, b"fill");
    assert_eq!(r, 0);
    v[0]
}

fn node(graph: u64, kind: u32) -> p::GraphNode {
    let mut n = p::GraphNode::new_zeroed();
    n.graph = graph;
    n.kind = kind;
    n
}

fn tail(deps: &[u64], params: &[u8]) -> Vec<u8> {
    let mut t: Vec<u8> = deps.iter().flat_map(|d| d.to_le_bytes()).collect();
    t.extend_from_slice(params);
    t
}

fn add(s: &mut Session, n: &p::GraphNode, deps: &[u64], params: &[u8]) -> (u32, u64) {
    let mut n = *n;
    n.ndeps = deps.len() as u32;
    n.params_len = params.len() as u32;
    let (r, v) = call(s, Op::GraphAddNode, &n, &tail(deps, params));
    (r, v[0])
}

fn fill_params(ptr: u64, value: u32, n: i32) -> Vec<u8> {
    let mut b = ptr.to_le_bytes().to_vec();
    b.extend_from_slice(&value.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b
}

fn kernel(graph: u64, func: u64, elems: u32) -> p::GraphNode {
    let mut k = node(graph, p::NODE_KERNEL);
    k.func = func;
    k.grid = [1, 1, 1];
    k.block = [elems, 1, 1];
    k
}

#[test]
fn a_built_graph_runs_its_nodes_in_dependency_order() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let func = fill_function(&mut a);
    let (buf, out) = (alloc(&mut a, 256), alloc(&mut a, 256));
    let (r, v) = call(
        &mut a,
        Op::GraphCreate,
        &p::DeviceOnly { device: 0, _pad: 0 },
        &[],
    );
    assert_eq!(r, 0);
    let g = v[0];

    // memset(buf, 0x11 bytes) -> fill(buf[0..16], 7) -> copy(buf -> out, 64 bytes)
    let mut ms = node(g, p::NODE_MEMSET);
    (ms.dst, ms.width, ms.height, ms.value, ms.elem_size) = (buf, 64, 1, 0x11, 1);
    let (r, memset) = add(&mut a, &ms, &[], &[]);
    assert_eq!(r, 0);
    let (r, fill) = add(&mut a, &kernel(g, func, 16), &[], &fill_params(buf, 7, 4));
    assert_eq!(r, 0);
    let mut cp = node(g, p::NODE_MEMCPY);
    cp.copy.dst = p::CopySide {
        kind: p::SIDE_DEVICE,
        addr: out,
        pitch: 64,
        height: 1,
        ..Default::default()
    };
    cp.copy.src = p::CopySide {
        addr: buf,
        ..cp.copy.dst
    };
    (cp.copy.width, cp.copy.height, cp.copy.depth) = (64, 1, 1);
    let (r, copy) = add(&mut a, &cp, &[fill], &[]);
    assert_eq!(r, 0);
    let (r, empty) = add(&mut a, &node(g, p::NODE_EMPTY), &[copy], &[]);
    assert_eq!(r, 0);
    // memset -> fill, added afterwards as an edge.
    let edges = p::GraphEdges {
        graph: g,
        count: 1,
        _pad: 0,
    };
    assert_eq!(
        call(
            &mut a,
            Op::GraphAddEdges,
            &edges,
            &tail(&[memset, fill], &[])
        )
        .0,
        0
    );

    let (r, v) = call(
        &mut a,
        Op::GraphGetNodes,
        &p::GraphQuery {
            graph: g,
            roots: 1,
            _pad: 0,
        },
        &[],
    );
    assert_eq!((r, v[0]), (0, 1));
    let (r, v) = call(&mut a, Op::GraphNodeType, &p::ObjectId { id: copy }, &[]);
    assert_eq!((r, v[0]), (0, p::NODE_MEMCPY as u64));
    let (r, v) = call(&mut a, Op::GraphNodeCount, &p::ObjectId { id: g }, &[]);
    assert_eq!((r, v[0]), (0, 4));

    let inst = p::GraphInstantiate { graph: g, flags: 0 };
    let (r, v) = call(&mut a, Op::GraphInstantiate, &inst, &[]);
    assert_eq!(r, 0);
    let x = v[0];
    let launch = p::GraphLaunch {
        exec: x,
        stream: p::legacy_stream(0),
    };
    assert_eq!(call(&mut a, Op::GraphLaunch, &launch, &[]).0, 0);
    let got = exec.peek(out, 64).unwrap();
    assert_eq!(&got[..16], &[7, 0, 0, 0].repeat(4)[..]);
    assert!(got[16..].iter().all(|&b| b == 0x11));

    // The executable's kernel node, updated in place: fill with 9 instead.
    let mut k = kernel(0, func, 16);
    (k.node, k.exec, k.params_len) = (fill, x, 16);
    assert_eq!(
        call(&mut a, Op::GraphSetNode, &k, &fill_params(buf, 9, 4)).0,
        0
    );
    assert_eq!(call(&mut a, Op::GraphLaunch, &launch, &[]).0, 0);
    assert_eq!(&exec.peek(out, 4).unwrap(), &[9, 0, 0, 0]);

    // A clone updates the executable only when its topology matches.
    let (r, v) = call(&mut a, Op::GraphClone, &p::ObjectId { id: g }, &[]);
    assert_eq!(r, 0);
    let clone = v[0];
    let upd = p::GraphExecUpdate {
        exec: x,
        graph: clone,
    };
    let (r, v) = call(&mut a, Op::GraphExecUpdate, &upd, &[]);
    assert_eq!((r, v[0], v[1]), (0, 0, 0));
    assert_eq!(
        call(
            &mut a,
            Op::GraphDestroyNode,
            &p::ObjectId { id: empty },
            &[]
        )
        .0,
        0
    );
    let upd = p::GraphExecUpdate { exec: x, graph: g };
    let (r, v) = call(&mut a, Op::GraphExecUpdate, &upd, &[]);
    assert_eq!((r, v[0], v[1]), (0, 910, 2));

    // A destroyed node is gone.
    assert_eq!(
        call(&mut a, Op::GraphNodeType, &p::ObjectId { id: empty }, &[]).0,
        code::INVALID_HANDLE
    );
    assert_eq!(
        add(&mut a, &node(g, p::NODE_EMPTY), &[empty], &[]).0,
        code::INVALID_HANDLE
    );
}

#[test]
fn graphs_and_nodes_are_usable_only_by_their_session_and_graph() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let mut b = session(&exec, 2, None);
    let a_buf = alloc(&mut a, 256);
    let dev = p::DeviceOnly { device: 0, _pad: 0 };
    let g1 = call(&mut a, Op::GraphCreate, &dev, &[]).1[0];
    let g2 = call(&mut a, Op::GraphCreate, &dev, &[]).1[0];
    let (r, n1) = add(&mut a, &node(g1, p::NODE_EMPTY), &[], &[]);
    assert_eq!(r, 0);
    // A node of another graph is not a dependency.
    assert_eq!(
        add(&mut a, &node(g2, p::NODE_EMPTY), &[n1], &[]).0,
        code::INVALID_VALUE
    );
    // Another tenant's graph, node and memory are refused.
    assert_eq!(
        add(&mut b, &node(g1, p::NODE_EMPTY), &[], &[]).0,
        code::INVALID_HANDLE
    );
    assert_eq!(
        call(&mut b, Op::GraphNodeType, &p::ObjectId { id: n1 }, &[]).0,
        code::INVALID_HANDLE
    );
    let bg = call(&mut b, Op::GraphCreate, &dev, &[]).1[0];
    let mut ms = node(bg, p::NODE_MEMSET);
    (ms.dst, ms.width, ms.height, ms.elem_size) = (a_buf, 16, 1, 1);
    assert_eq!(add(&mut b, &ms, &[], &[]).0, code::INVALID_VALUE);
    let mut child = node(bg, p::NODE_GRAPH);
    child.child = g1 + 10;
    assert_eq!(add(&mut b, &child, &[], &[]).0, code::INVALID_HANDLE);
    let mut t = p::TensorMapEncode {
        rank: 1,
        data_type: 7,
        global_address: a_buf,
        ..Default::default()
    };
    t.global_dim[0] = 4;
    assert_eq!(
        call(&mut b, Op::TensorMapEncode, &t, &[]).0,
        code::INVALID_VALUE
    );
    assert_eq!(call(&mut a, Op::TensorMapEncode, &t, &[]).0, 0);
    // Past the end of the allocation.
    t.global_dim[0] = 65;
    assert_eq!(
        call(&mut a, Op::TensorMapEncode, &t, &[]).0,
        code::INVALID_VALUE
    );
    // Destroying the graph retires its nodes.
    assert_eq!(
        call(&mut a, Op::GraphDestroy, &p::ObjectId { id: g1 }, &[]).0,
        0
    );
    assert_eq!(
        call(&mut a, Op::GraphNodeType, &p::ObjectId { id: n1 }, &[]).0,
        code::INVALID_HANDLE
    );
}
