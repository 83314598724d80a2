//! What the daemon itself bounds, whatever a client's shim does: a tenant's quotas across its
//! processes (memory, streams, events, modules), and graphs whose memory was freed after the
//! graph was built or captured.

use super::hostile::{call, session_of, session_with, IMAGE};
use super::quota::{Account, Kind};
use super::{Identity, Session, Shared};
use crate::config::{QuotaScope, TenantPolicy};
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::Arc;
use zerocopy::FromZeros;

/// A session of `account`'s tenant (a second process of it, when the account is shared).
fn process_of(
    exec: &Arc<SimExecutor>,
    id: u64,
    policy: &TenantPolicy,
    account: &Arc<Account>,
) -> Session {
    let identity = Identity {
        session: id,
        pid: id as u32,
        uid: 1000,
        gid: 1000,
        tenant: "t".into(),
    };
    let shared = Shared::with_account(identity, policy.clone(), account.clone());
    session_of(exec, Arc::new(shared))
}

fn stream(s: &mut Session) -> (u32, u64) {
    let create = p::StreamCreate {
        device: 0,
        flags: 1,
        priority: 0,
        _pad: 0,
    };
    let (r, v) = call(s, Op::StreamCreate, &create, &[]);
    (r, v[0])
}

fn event(s: &mut Session) -> (u32, u64) {
    let (r, v) = call(
        s,
        Op::EventCreate,
        &p::EventCreate {
            device: 0,
            flags: 2,
        },
        &[],
    );
    (r, v[0])
}

fn module(s: &mut Session) -> u32 {
    let blob = s.shared.add_blob(IMAGE.to_vec());
    let load = p::LoadModule {
        device: 0,
        kind: 0,
        blob,
        jit: 0,
        _pad: 0,
    };
    call(s, Op::LoadModule, &load, &[]).0
}

fn alloc(s: &mut Session, bytes: u64) -> (u32, u64) {
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
    (r, v[0])
}

fn free(s: &mut Session, ptr: u64) -> u32 {
    call(s, Op::MemFree, &p::MemFree { dptr: ptr }, &[]).0
}

#[test]
fn a_tenants_object_and_memory_quotas_hold_across_its_processes() {
    let exec = Arc::new(SimExecutor::new());
    let policy = TenantPolicy {
        memory_quota: Some(64 << 10),
        stream_quota: 3,
        event_quota: 2,
        module_quota: 1,
        account: "[[tenant]] #1".into(),
        ..Default::default()
    };
    let account = Arc::new(Account::new(&policy));
    let mut a = process_of(&exec, 1, &policy, &account);
    let mut b = process_of(&exec, 2, &policy, &account);
    let oom = code::OUT_OF_MEMORY;

    assert_eq!(stream(&mut a).0, 0);
    assert_eq!(stream(&mut a).0, 0);
    let (r, s3) = stream(&mut b);
    assert_eq!(r, 0);
    assert_eq!(stream(&mut a).0, oom, "a fourth stream for the tenant");
    assert_eq!(stream(&mut b).0, oom);
    assert_eq!(
        call(&mut b, Op::StreamDestroy, &p::ObjectId { id: s3 }, &[]).0,
        0
    );
    assert_eq!(stream(&mut a).0, 0, "a destroyed stream makes room");

    assert_eq!(event(&mut a).0, 0);
    assert_eq!(event(&mut b).0, 0);
    assert_eq!(event(&mut a).0, oom);

    assert_eq!(module(&mut a), 0);
    assert_eq!(module(&mut b), oom);

    let (r, m) = alloc(&mut a, 48 << 10);
    assert_eq!(r, 0);
    assert_eq!(
        alloc(&mut b, 32 << 10).0,
        oom,
        "the memory quota is the tenant's"
    );
    assert_eq!(alloc(&mut b, 16 << 10).0, 0);
    assert_eq!(free(&mut a, m), 0);
    assert_eq!(alloc(&mut b, 32 << 10).0, 0);

    // One process ending gives back what it held, and only that.
    a.teardown();
    assert_eq!(account.used(Kind::Streams), 0, "b destroyed its one stream");
    assert_eq!(account.used(Kind::Events), 1);
    assert_eq!(account.used(Kind::Modules), 0);
    assert_eq!(account.used(Kind::Memory), 48 << 10);
    assert_eq!(module(&mut b), 0);
    b.teardown();
    for k in [Kind::Memory, Kind::Streams, Kind::Events, Kind::Modules] {
        assert_eq!(account.used(k), 0, "{k:?} left charged");
    }
    assert_eq!(exec.live_objects(), 0, "teardown left objects on the GPU");
}

#[test]
fn quotas_can_be_kept_per_process() {
    let exec = Arc::new(SimExecutor::new());
    let policy = TenantPolicy {
        stream_quota: 1,
        quota_scope: QuotaScope::Process,
        ..Default::default()
    };
    let mut a = session_with(&exec, 1, policy.clone());
    let mut b = session_with(&exec, 2, policy);
    assert_eq!(stream(&mut a).0, 0);
    assert_eq!(stream(&mut b).0, 0, "each process has its own");
    assert_eq!(stream(&mut b).0, code::OUT_OF_MEMORY);
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

fn memset_node(s: &mut Session, g: u64, dst: u64) -> u32 {
    let mut n = p::GraphNode::new_zeroed();
    n.graph = g;
    n.kind = p::NODE_MEMSET;
    (n.dst, n.width, n.height, n.value, n.elem_size) = (dst, 64, 1, 0x11, 1);
    call(s, Op::GraphAddNode, &n, &[]).0
}

fn instantiate(s: &mut Session, g: u64) -> u64 {
    let (r, v) = call(
        s,
        Op::GraphInstantiate,
        &p::GraphInstantiate { graph: g, flags: 0 },
        &[],
    );
    assert_eq!(r, 0);
    v[0]
}

fn launch(s: &mut Session, x: u64) -> u32 {
    let l = p::GraphLaunch {
        exec: x,
        stream: p::legacy_stream(0),
    };
    call(s, Op::GraphLaunch, &l, &[]).0
}

#[test]
fn graph_launches_are_checked_against_the_tenants_current_memory() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session_with(&exec, 1, TenantPolicy::default());
    let (_, buf) = alloc(&mut a, 4096);
    let (_, keep) = alloc(&mut a, 4096);
    let g = graph(&mut a);
    assert_eq!(memset_node(&mut a, g, buf), 0);
    let x = instantiate(&mut a, g);
    assert_eq!(launch(&mut a, x), 0);

    // A clone, a parent holding it as a child, and a capture of a memset of the same memory.
    let (r, v) = call(&mut a, Op::GraphClone, &p::ObjectId { id: g }, &[]);
    assert_eq!(r, 0);
    let clone = instantiate(&mut a, v[0]);
    let parent = graph(&mut a);
    let mut child = p::GraphNode::new_zeroed();
    (child.graph, child.kind, child.child) = (parent, p::NODE_GRAPH, g);
    assert_eq!(call(&mut a, Op::GraphAddNode, &child, &[]).0, 0);
    let parent = instantiate(&mut a, parent);
    let (_, st) = stream(&mut a);
    let begin = p::CaptureBegin {
        stream: st,
        mode: 0,
        _pad: 0,
    };
    assert_eq!(call(&mut a, Op::CaptureBegin, &begin, &[]).0, 0);
    let ms = p::Memset {
        dst: buf,
        stream: st,
        width: 16,
        height: 1,
        pitch: 0,
        value: 1,
        elem_size: 4,
    };
    assert_eq!(call(&mut a, Op::Memset, &ms, &[]).0, 0);
    let (r, v) = call(&mut a, Op::CaptureEnd, &p::ObjectId { id: st }, &[]);
    assert_eq!(r, 0);
    let captured = instantiate(&mut a, v[0]);
    // A graph on other memory.
    let other = graph(&mut a);
    assert_eq!(memset_node(&mut a, other, keep), 0);
    let other = instantiate(&mut a, other);

    assert_eq!(free(&mut a, buf), 0);
    for (what, x) in [
        ("built", x),
        ("cloned", clone),
        ("child", parent),
        ("captured", captured),
    ] {
        assert_eq!(
            launch(&mut a, x),
            code::INVALID_VALUE,
            "a {what} graph naming freed memory was launched"
        );
    }
    assert_eq!(launch(&mut a, other), 0, "graphs on live memory still run");
    // Pointing the node at live memory makes the graph launchable again.
    let mut n = p::GraphNode::new_zeroed();
    n.graph = g;
    n.kind = p::NODE_MEMSET;
    n.node = 1;
    n.exec = x;
    (n.dst, n.width, n.height, n.value, n.elem_size) = (keep, 64, 1, 0x22, 1);
    assert_eq!(call(&mut a, Op::GraphSetNode, &n, &[]).0, 0);
    assert_eq!(launch(&mut a, x), 0);
    assert_eq!(exec.peek(keep, 1).unwrap()[0], 0x22);
}

#[test]
fn a_graph_whose_module_was_unloaded_is_refused_at_launch() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session_with(&exec, 1, TenantPolicy::default());
    let blob = a.shared.add_blob(IMAGE.to_vec());
    let load = p::LoadModule {
        device: 0,
        kind: 0,
        blob,
        jit: 0,
        _pad: 0,
    };
    let (r, v) = call(&mut a, Op::LoadModule, &load, &[]);
    assert_eq!(r, 0);
    let module = v[0];
    let (r, v) = call(&mut a, Op::GetFunction, &p::GetSymbol { module }, b"fill");
    assert_eq!(r, 0);
    let (_, buf) = alloc(&mut a, 256);
    let g = graph(&mut a);
    let mut k = p::GraphNode::new_zeroed();
    (k.graph, k.kind, k.func, k.grid, k.block) = (g, p::NODE_KERNEL, v[0], [1, 1, 1], [4, 1, 1]);
    let mut params = buf.to_le_bytes().to_vec();
    params.extend_from_slice(&7u32.to_le_bytes());
    params.extend_from_slice(&4i32.to_le_bytes());
    k.params_len = params.len() as u32;
    assert_eq!(call(&mut a, Op::GraphAddNode, &k, &params).0, 0);
    let x = instantiate(&mut a, g);
    assert_eq!(launch(&mut a, x), 0);
    assert_eq!(
        call(&mut a, Op::UnloadModule, &p::ObjectId { id: module }, &[]).0,
        0
    );
    assert_eq!(
        launch(&mut a, x),
        code::INVALID_VALUE,
        "a kernel node of an unloaded module was launched"
    );
}
