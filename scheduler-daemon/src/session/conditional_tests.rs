//! Session-level tests of conditional graph nodes, on the simulated GPU (whose `condSet`
//! kernel sets a handle from memory, as `cudaGraphSetConditional` does on a GPU).

use super::hostile::{call, session};
use super::Session;
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerocopy::FromZeros;

const IMAGE: &[u8] = b"//baton-sim\nkernel condSet 8 8\n";

fn payload_ids(s: &Session) -> Vec<u64> {
    let slot = s.region.reply(0).unwrap();
    let n = slot.payload_len.load(Ordering::Relaxed) as usize;
    slot.payload[..n]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn alloc(s: &mut Session, bytes: u64) -> u64 {
    let body = p::MemAlloc {
        device: 0,
        _pad: 0,
        bytes,
    };
    let (r, v) = call(s, Op::MemAlloc, &body, &[]);
    assert_eq!(r, 0);
    v[0]
}

fn cond_set(s: &mut Session) -> u64 {
    let blob = s.shared.add_blob(IMAGE.to_vec());
    let load = p::LoadModule {
        device: 0,
        kind: 0,
        blob,
        jit: 0,
        _pad: 0,
    };
    let (r, v) = call(s, Op::LoadModule, &load, &[]);
    assert_eq!(r, 0);
    let (r, v) = call(
        s,
        Op::GetFunction,
        &p::GetSymbol { module: v[0] },
        b"condSet",
    );
    assert_eq!(r, 0);
    v[0]
}

fn graph(s: &mut Session) -> u64 {
    let (r, v) = call(
        s,
        Op::GraphCreate,
        &p::DeviceOnly { device: 0, _pad: 0 },
        &[],
    );
    assert_eq!(r, 0);
    v[0]
}

fn add(s: &mut Session, n: p::GraphNode, deps: &[u64], params: &[u8]) -> (u32, u64) {
    let mut n = n;
    n.ndeps = deps.len() as u32;
    n.params_len = params.len() as u32;
    let mut t: Vec<u8> = deps.iter().flat_map(|d| d.to_le_bytes()).collect();
    t.extend_from_slice(params);
    let (r, v) = call(s, Op::GraphAddNode, &n, &t);
    (r, v[0])
}

fn memset(graph: u64, dst: u64, value: u32) -> p::GraphNode {
    let mut n = p::GraphNode::new_zeroed();
    (
        n.graph,
        n.kind,
        n.dst,
        n.width,
        n.height,
        n.value,
        n.elem_size,
    ) = (graph, p::NODE_MEMSET, dst, 1, 1, value, 4);
    n
}

fn conditional(graph: u64, handle: u64, kind: u32, size: u64) -> p::GraphNode {
    let mut n = p::GraphNode::new_zeroed();
    (n.graph, n.kind, n.dst, n.value, n.width) = (graph, p::NODE_CONDITIONAL, handle, kind, size);
    n
}

fn handle(s: &mut Session, graph: u64, default_value: u32, flags: u32) -> u64 {
    let body = p::ConditionalHandle {
        graph,
        default_value,
        flags,
    };
    let (r, v) = call(s, Op::ConditionalHandleCreate, &body, &[]);
    assert_eq!(r, 0);
    v[0]
}

fn launch(s: &mut Session, graph: u64) -> u64 {
    let (r, v) = call(
        s,
        Op::GraphInstantiate,
        &p::GraphInstantiate { graph, flags: 0 },
        &[],
    );
    assert_eq!(r, 0);
    let body = p::GraphLaunch {
        exec: v[0],
        stream: p::legacy_stream(0),
    };
    assert_eq!(call(s, Op::GraphLaunch, &body, &[]).0, 0);
    v[0]
}

#[test]
fn an_if_else_node_runs_the_body_its_kernel_chose_and_bodies_live_with_their_graph() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let func = cond_set(&mut a);
    let (cell, out) = (alloc(&mut a, 4), alloc(&mut a, 4));
    let g = graph(&mut a);
    let h = handle(&mut a, g, 0, 0);

    // memset(cell, 0) -> condSet(cell, h) -> IF h [ out = 0xAA | out = 0xBB ]
    let (r, set) = add(&mut a, memset(g, cell, 0), &[], &[]);
    assert_eq!(r, 0);
    let mut k = p::GraphNode::new_zeroed();
    (k.graph, k.kind, k.func, k.grid, k.block) = (g, p::NODE_KERNEL, func, [1; 3], [1; 3]);
    let mut params = cell.to_le_bytes().to_vec();
    params.extend_from_slice(&h.to_le_bytes());
    let (r, kern) = add(&mut a, k, &[set], &params);
    assert_eq!(r, 0);
    // A handle this session did not create, and sizes the node type forbids, are refused.
    assert_eq!(
        add(&mut a, conditional(g, h ^ 0x55, p::COND_IF, 1), &[], &[]).0,
        code::INVALID_VALUE
    );
    assert_eq!(
        add(&mut a, conditional(g, h, p::COND_WHILE, 2), &[], &[]).0,
        code::INVALID_VALUE
    );
    let (r, node) = add(&mut a, conditional(g, h, p::COND_IF, 2), &[kern], &[]);
    assert_eq!(r, 0);
    let bodies = payload_ids(&a);
    assert_eq!(bodies.len(), 2);
    assert_eq!(add(&mut a, memset(bodies[0], out, 0xAA), &[], &[]).0, 0);
    assert_eq!(add(&mut a, memset(bodies[1], out, 0xBB), &[], &[]).0, 0);
    let (r, v) = call(&mut a, Op::GraphNodeType, &p::ObjectId { id: node }, &[]);
    assert_eq!((r, v[0]), (0, p::NODE_CONDITIONAL as u64));

    // The condition is 0: the else body runs.
    launch(&mut a, g);
    assert_eq!(exec.peek(out, 4).unwrap(), 0xBBu32.to_le_bytes());
    // Now 1: the then body.
    let mut ms = memset(0, cell, 1);
    (ms.node, ms.params_len) = (set, 0);
    assert_eq!(call(&mut a, Op::GraphSetNode, &ms, &[]).0, 0);
    launch(&mut a, g);
    assert_eq!(exec.peek(out, 4).unwrap(), 0xAAu32.to_le_bytes());

    // A body is the node's: the client cannot destroy it, and it goes with its graph.
    let destroy = |s: &mut Session, id| call(s, Op::GraphDestroy, &p::ObjectId { id }, &[]).0;
    assert_eq!(destroy(&mut a, bodies[0]), code::INVALID_VALUE);
    assert_eq!(destroy(&mut a, g), 0);
    assert_eq!(
        add(&mut a, memset(bodies[1], out, 1), &[], &[]).0,
        code::INVALID_HANDLE
    );
    assert_eq!(destroy(&mut a, bodies[1]), code::INVALID_HANDLE);
}

#[test]
fn while_and_switch_nodes_follow_the_handle() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let out = alloc(&mut a, 4);

    // WHILE with a default of 1 (assigned each launch): the body clears the handle by
    // running condSet on a zero cell, so it runs exactly once per launch.
    let func = cond_set(&mut a);
    let zero = alloc(&mut a, 4);
    let g = graph(&mut a);
    let h = handle(&mut a, g, 1, p::COND_ASSIGN_DEFAULT);
    let (r, _) = add(&mut a, conditional(g, h, p::COND_WHILE, 1), &[], &[]);
    assert_eq!(r, 0);
    let body = payload_ids(&a)[0];
    let (r, m) = add(&mut a, memset(body, zero, 0), &[], &[]);
    assert_eq!(r, 0);
    let mut k = p::GraphNode::new_zeroed();
    (k.graph, k.kind, k.func, k.grid, k.block) = (body, p::NODE_KERNEL, func, [1; 3], [1; 3]);
    let mut params = zero.to_le_bytes().to_vec();
    params.extend_from_slice(&h.to_le_bytes());
    assert_eq!(add(&mut a, k, &[m], &params).0, 0);
    assert_eq!(add(&mut a, memset(body, out, 7), &[], &[]).0, 0);
    launch(&mut a, g);
    assert_eq!(exec.peek(out, 4).unwrap(), 7u32.to_le_bytes());
    launch(&mut a, g);

    // SWITCH on a default of 2: the third of four bodies runs.
    let g = graph(&mut a);
    let h = handle(&mut a, g, 2, p::COND_ASSIGN_DEFAULT);
    let (r, _) = add(&mut a, conditional(g, h, p::COND_SWITCH, 4), &[], &[]);
    assert_eq!(r, 0);
    let bodies = payload_ids(&a);
    assert_eq!(bodies.len(), 4);
    for (i, &b) in bodies.iter().enumerate() {
        assert_eq!(add(&mut a, memset(b, out, 100 + i as u32), &[], &[]).0, 0);
    }
    launch(&mut a, g);
    assert_eq!(exec.peek(out, 4).unwrap(), 102u32.to_le_bytes());
}
