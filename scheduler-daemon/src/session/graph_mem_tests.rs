//! Session-level tests of graph memory nodes, on the simulated GPU: what is charged when, and
//! which addresses the session may name and free.

use super::hostile::{call, session};
use super::tables::Owner;
use super::Session;
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerocopy::FromZeros;

fn charged(s: &Session) -> u64 {
    s.shared.memory_bytes.load(Ordering::Relaxed)
}

fn owner(s: &Session, ptr: u64) -> Option<Owner> {
    s.ranges.owner_at(ptr)
}

fn stream(s: &mut Session) -> u64 {
    let create = p::StreamCreate {
        device: 0,
        flags: 1,
        priority: 0,
        _pad: 0,
    };
    let (r, v) = call(s, Op::StreamCreate, &create, &[]);
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

/// Adds a memory node after `deps`: (result, node id, address).
fn mem_node(
    s: &mut Session,
    g: u64,
    alloc: Option<u64>,
    free: u64,
    deps: &[u64],
) -> (u32, u64, u64) {
    let mut n = p::GraphNode::new_zeroed();
    n.graph = g;
    n.ndeps = deps.len() as u32;
    match alloc {
        Some(bytes) => (n.kind, n.width) = (p::NODE_MEM_ALLOC, bytes),
        None => (n.kind, n.dst) = (p::NODE_MEM_FREE, free),
    }
    let tail: Vec<u8> = deps.iter().flat_map(|d| d.to_le_bytes()).collect();
    let (r, v) = call(s, Op::GraphAddNode, &n, &tail);
    (r, v[0], v[1])
}

fn instantiate(s: &mut Session, g: u64) -> (u32, u64) {
    let (r, v) = call(
        s,
        Op::GraphInstantiate,
        &p::GraphInstantiate { graph: g, flags: 0 },
        &[],
    );
    (r, v[0])
}

fn launch(s: &mut Session, x: u64, st: u64) -> u32 {
    call(
        s,
        Op::GraphLaunch,
        &p::GraphLaunch {
            exec: x,
            stream: st,
        },
        &[],
    )
    .0
}

fn capture(s: &mut Session, st: u64, work: impl FnOnce(&mut Session)) -> u64 {
    let begin = p::CaptureBegin {
        stream: st,
        mode: 0,
        _pad: 0,
    };
    assert_eq!(call(s, Op::CaptureBegin, &begin, &[]).0, 0);
    work(s);
    let (r, v) = call(s, Op::CaptureEnd, &p::ObjectId { id: st }, &[]);
    assert_eq!(r, 0);
    v[0]
}

#[test]
fn a_captured_allocation_is_the_graphs_and_is_never_freed_at_teardown() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let st = stream(&mut a);
    let mut ptr = 0;
    let g = capture(&mut a, st, |a| {
        let (r, v) = call(
            a,
            Op::MemAllocAsync,
            &p::MemAllocAsync {
                stream: st,
                bytes: 4096,
            },
            &[],
        );
        assert_eq!(r, 0);
        ptr = v[0];
        // Captured work may name it; it is no stream-ordered allocation of the session.
        assert_eq!(owner(a, ptr), Some(Owner::Graph));
        assert_eq!(charged(a), 0);
    });
    // The captured graph holds the address; destroying it forgets the address.
    assert_eq!(owner(&a, ptr), Some(Owner::Graph));
    assert_eq!(
        call(&mut a, Op::GraphDestroy, &p::ObjectId { id: g }, &[]).0,
        0
    );
    assert_eq!(owner(&a, ptr), None);
    // A free of it outside any graph is refused: the session never owned it.
    let free = p::MemFreeAsync {
        dptr: ptr,
        stream: st,
    };
    assert_ne!(call(&mut a, Op::MemFreeAsync, &free, &[]).0, 0);
    a.teardown();
    assert_eq!(charged(&a), 0);
}

#[test]
fn instantiation_charges_the_graphs_allocations_and_destroying_refunds() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, Some(6000));
    let st = stream(&mut a);
    let g = graph(&mut a);
    let (r, alloc, ptr) = mem_node(&mut a, g, Some(4096), 0, &[]);
    assert_eq!(r, 0);
    assert_ne!(ptr, 0);
    // A memset node may name the allocation.
    let mut ms = p::GraphNode::new_zeroed();
    (
        ms.graph,
        ms.kind,
        ms.dst,
        ms.width,
        ms.height,
        ms.value,
        ms.elem_size,
    ) = (g, p::NODE_MEMSET, ptr, 4096, 1, 7, 1);
    ms.ndeps = 1;
    let (r, v) = call(&mut a, Op::GraphAddNode, &ms, &alloc.to_le_bytes());
    assert_eq!(r, 0);
    assert_eq!(mem_node(&mut a, g, None, ptr, &[v[0]]).0, 0);
    // A free node may name only the session's own graph allocations.
    assert_eq!(
        mem_node(&mut a, g, None, 0x1234_0000, &[]).0,
        code::INVALID_VALUE
    );
    // An allocation node on another device than the graph's is refused.
    let mut other = p::GraphNode::new_zeroed();
    (other.graph, other.kind, other.width, other.value) = (g, p::NODE_MEM_ALLOC, 64, 1);
    assert_eq!(
        call(&mut a, Op::GraphAddNode, &other, &[]).0,
        code::INVALID_VALUE
    );

    let (r, x) = instantiate(&mut a, g);
    assert_eq!(r, 0);
    assert_eq!(charged(&a), 4096);
    // A second executable graph would pass the quota.
    assert_eq!(instantiate(&mut a, g).0, code::OUT_OF_MEMORY);
    assert_eq!(charged(&a), 4096);
    assert_eq!(launch(&mut a, x, st), 0);
    // Freed within the graph: nothing is left allocated or owned.
    assert_eq!(owner(&a, ptr), Some(Owner::Graph));
    assert!(exec.peek(ptr, 1).is_err());
    assert_eq!(launch(&mut a, x, st), 0);
    assert_eq!(
        call(&mut a, Op::GraphExecDestroy, &p::ObjectId { id: x }, &[]).0,
        0
    );
    assert_eq!(charged(&a), 0);
}

#[test]
fn an_unfreed_allocation_is_owned_from_its_launch_until_someone_frees_it() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let st = stream(&mut a);
    let keeps = graph(&mut a);
    let (r, _, ptr) = mem_node(&mut a, keeps, Some(1024), 0, &[]);
    assert_eq!(r, 0);
    let frees = graph(&mut a);
    assert_eq!(mem_node(&mut a, frees, None, ptr, &[]).0, 0);
    let (_, xk) = instantiate(&mut a, keeps);
    let (_, xf) = instantiate(&mut a, frees);
    assert_eq!(charged(&a), 1024);
    // The freeing graph may not run while the session does not hold the memory.
    assert_eq!(launch(&mut a, xf, st), code::INVALID_VALUE);

    assert_eq!(launch(&mut a, xk, st), 0);
    assert_eq!(owner(&a, ptr), Some(Owner::GraphOwned));
    assert_eq!(charged(&a), 2048);
    assert!(exec.peek(ptr, 1024).is_ok());
    // Freed by the other graph: refunded, and the address is the graph's again.
    assert_eq!(launch(&mut a, xf, st), 0);
    assert_eq!(owner(&a, ptr), Some(Owner::Graph));
    assert_eq!(charged(&a), 1024);
    assert!(exec.peek(ptr, 1).is_err());

    // Freed by cuMemFree after another launch.
    assert_eq!(launch(&mut a, xk, st), 0);
    assert_eq!(
        call(&mut a, Op::MemFree, &p::MemFree { dptr: ptr }, &[]).0,
        0
    );
    assert_eq!(charged(&a), 1024);
    assert_eq!(owner(&a, ptr), Some(Owner::Graph));

    // Left allocated past every graph: owned until teardown frees it.
    assert_eq!(launch(&mut a, xk, st), 0);
    for x in [xk, xf] {
        assert_eq!(
            call(&mut a, Op::GraphExecDestroy, &p::ObjectId { id: x }, &[]).0,
            0
        );
    }
    for g in [keeps, frees] {
        assert_eq!(
            call(&mut a, Op::GraphDestroy, &p::ObjectId { id: g }, &[]).0,
            0
        );
    }
    assert_eq!(owner(&a, ptr), Some(Owner::GraphOwned));
    assert_eq!(charged(&a), 1024);
    a.teardown();
    assert!(exec.peek(ptr, 1).is_err());
}

#[test]
fn a_captured_alloc_and_free_run_at_each_launch_and_the_pool_is_reported() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let st = stream(&mut a);
    let g = capture(&mut a, st, |a| {
        let (r, v) = call(
            a,
            Op::MemAllocAsync,
            &p::MemAllocAsync {
                stream: st,
                bytes: 512,
            },
            &[],
        );
        assert_eq!(r, 0);
        let free = p::MemFreeAsync {
            dptr: v[0],
            stream: st,
        };
        assert_eq!(call(a, Op::MemFreeAsync, &free, &[]).0, 0);
    });
    let (r, x) = instantiate(&mut a, g);
    assert_eq!(r, 0);
    assert_eq!(charged(&a), 512);
    for _ in 0..2 {
        assert_eq!(launch(&mut a, x, st), 0);
    }
    let get = |a: &mut Session, attr: u32| {
        let b = p::GraphMem {
            device: 0,
            op: p::GRAPH_MEM_GET,
            attr,
            _pad: 0,
            value: 0,
        };
        let (r, v) = call(a, Op::GraphMem, &b, &[]);
        assert_eq!(r, 0);
        v[0]
    };
    assert_eq!(get(&mut a, 0), 0);
    assert_eq!(get(&mut a, 1), 512);
    assert_eq!(get(&mut a, 2), 512);
    let trim = p::GraphMem {
        device: 0,
        op: p::GRAPH_MEM_TRIM,
        attr: 0,
        _pad: 0,
        value: 0,
    };
    assert_eq!(call(&mut a, Op::GraphMem, &trim, &[]).0, 0);
    assert_eq!(get(&mut a, 2), 0);
    a.teardown();
    assert_eq!(charged(&a), 0);
}
