//! Session-level tests of virtual memory and capture/graph commands on the simulated GPU.

use super::hostile::{call, session};
use crate::executor::sim::SimExecutor;
use crate::executor::{code, Executor};
use baton_ipc::protocol::{self as p, Op};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn prop() -> p::VmmProp {
    p::VmmProp {
        kind: 1,
        location_type: 1,
        location_id: 0,
        ..Default::default()
    }
}

fn range(ptr: u64, size: u64) -> p::VmmRange {
    p::VmmRange { ptr, size }
}

#[test]
fn vmm_maps_only_into_own_reservations_and_accounts_physical_memory() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, Some(8 * MIB));
    let mut b = session(&exec, 2, None);
    let reserve = p::VmmReserve {
        size: 8 * MIB,
        alignment: 0,
        addr: 0,
        flags: 0,
    };
    let (r, v) = call(&mut a, Op::VmmReserve, &reserve, &[]);
    assert_eq!(r, 0);
    let base = v[0];
    let create = p::VmmCreate {
        size: 4 * MIB,
        prop: prop(),
    };
    let (r, v) = call(&mut a, Op::VmmCreate, &create, &[]);
    assert_eq!(r, 0);
    let h = v[0];
    assert_eq!(
        a.shared
            .memory_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        4 * MIB
    );
    // Past the quota: refused for this tenant.
    let big = p::VmmCreate {
        size: 5 * MIB,
        prop: prop(),
    };
    assert_eq!(
        call(&mut a, Op::VmmCreate, &big, &[]).0,
        code::OUT_OF_MEMORY
    );

    let map = |ptr, handle| p::VmmMap {
        ptr,
        size: 4 * MIB,
        offset: 0,
        handle,
    };
    // Another tenant can neither map a's handle nor map into a's reservation.
    assert_ne!(call(&mut b, Op::VmmMap, &map(base, h), &[]).0, 0);
    // Outside the reservation, or past the handle's size.
    assert_ne!(call(&mut a, Op::VmmMap, &map(base + 6 * MIB, h), &[]).0, 0);
    let (r, _) = call(&mut a, Op::VmmMap, &map(base, h), &[]);
    assert_eq!(r, 0);
    // Overlapping an existing mapping.
    assert_ne!(call(&mut a, Op::VmmMap, &map(base + MIB, h), &[]).0, 0);

    let mut access = [p::VmmAccess::default(); p::VMM_MAX_ACCESS];
    access[0] = p::VmmAccess {
        location_type: 1,
        location_id: 0,
        flags: 3,
        _pad: 0,
    };
    let set = p::VmmSetAccess {
        ptr: base,
        size: 4 * MIB,
        count: 1,
        _pad: 0,
        access,
    };
    assert_eq!(call(&mut a, Op::VmmSetAccess, &set, &[]).0, 0);
    assert_ne!(call(&mut b, Op::VmmSetAccess, &set, &[]).0, 0);
    // The mapped range is device memory the tenant may name in a memset; b may not.
    let memset = p::Memset {
        dst: base,
        stream: p::legacy_stream(0),
        width: 4096,
        height: 1,
        pitch: 0,
        value: 7,
        elem_size: 1,
    };
    assert_eq!(call(&mut a, Op::Memset, &memset, &[]).0, 0);
    assert_ne!(call(&mut b, Op::Memset, &memset, &[]).0, 0);

    // Releasing the handle keeps the memory while mapped; unmapping frees it.
    assert_eq!(
        call(&mut a, Op::VmmRelease, &p::ObjectId { id: h }, &[]).0,
        0
    );
    assert_eq!(
        a.shared
            .memory_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        4 * MIB
    );
    assert_ne!(
        call(&mut a, Op::VmmAddressFree, &range(base, 8 * MIB), &[]).0,
        0
    );
    assert_eq!(call(&mut a, Op::VmmUnmap, &range(base, 4 * MIB), &[]).0, 0);
    assert_eq!(
        a.shared
            .memory_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_ne!(call(&mut a, Op::Memset, &memset, &[]).0, 0);
    assert_eq!(
        call(&mut a, Op::VmmAddressFree, &range(base, 8 * MIB), &[]).0,
        0
    );
    assert_eq!(exec.mem_info(0).unwrap().0, exec.mem_info(0).unwrap().1);
}

#[test]
fn teardown_unmaps_and_releases_everything() {
    let exec = Arc::new(SimExecutor::new());
    let total = exec.mem_info(0).unwrap().1;
    {
        let mut a = session(&exec, 1, None);
        let reserve = p::VmmReserve {
            size: 2 * MIB,
            alignment: 0,
            addr: 0,
            flags: 0,
        };
        let base = call(&mut a, Op::VmmReserve, &reserve, &[]).1[0];
        let create = p::VmmCreate {
            size: 2 * MIB,
            prop: prop(),
        };
        let h = call(&mut a, Op::VmmCreate, &create, &[]).1[0];
        let map = p::VmmMap {
            ptr: base,
            size: 2 * MIB,
            offset: 0,
            handle: h,
        };
        assert_eq!(call(&mut a, Op::VmmMap, &map, &[]).0, 0);
        assert!(exec.mem_info(0).unwrap().0 < total);
        a.teardown();
    }
    assert_eq!(exec.mem_info(0).unwrap().0, total);
}

#[test]
fn capture_produces_a_graph_only_its_session_can_launch() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let mut b = session(&exec, 2, None);
    let create = p::StreamCreate {
        device: 0,
        flags: 1,
        priority: 0,
        _pad: 0,
    };
    let (r, v) = call(&mut a, Op::StreamCreate, &create, &[]);
    assert_eq!(r, 0);
    let s = v[0];
    // The legacy stream cannot be captured.
    let legacy = p::CaptureBegin {
        stream: p::legacy_stream(0),
        mode: 0,
        _pad: 0,
    };
    assert_eq!(
        call(&mut a, Op::CaptureBegin, &legacy, &[]).0,
        code::STREAM_CAPTURE_UNSUPPORTED
    );
    let begin = p::CaptureBegin {
        stream: s,
        mode: 0,
        _pad: 0,
    };
    assert_eq!(call(&mut a, Op::CaptureBegin, &begin, &[]).0, 0);
    assert_eq!(a.streams.capturing.len(), 1);
    // Ending a capture that was never begun.
    assert_eq!(
        call(
            &mut a,
            Op::CaptureEnd,
            &p::ObjectId {
                id: p::legacy_stream(0)
            },
            &[]
        )
        .0,
        code::ILLEGAL_STATE
    );
    let (r, v) = call(&mut a, Op::CaptureEnd, &p::ObjectId { id: s }, &[]);
    assert_eq!(r, 0);
    assert_eq!(a.streams.capturing.len(), 0);
    let graph = v[0];
    let inst = p::GraphInstantiate { graph, flags: 0 };
    assert_ne!(call(&mut b, Op::GraphInstantiate, &inst, &[]).0, 0);
    let (r, v) = call(&mut a, Op::GraphInstantiate, &inst, &[]);
    assert_eq!(r, 0);
    let launch = p::GraphLaunch {
        exec: v[0],
        stream: s,
    };
    assert_eq!(call(&mut a, Op::GraphLaunch, &launch, &[]).0, 0);
    assert_ne!(
        call(
            &mut b,
            Op::GraphLaunch,
            &p::GraphLaunch {
                exec: v[0],
                stream: p::legacy_stream(0)
            },
            &[]
        )
        .0,
        0
    );
    assert_eq!(exec.lock_graph_launches(), 1);
    assert_eq!(
        call(&mut a, Op::GraphExecDestroy, &p::ObjectId { id: v[0] }, &[]).0,
        0
    );
    assert_eq!(
        call(&mut a, Op::GraphDestroy, &p::ObjectId { id: graph }, &[]).0,
        0
    );
    assert_ne!(
        call(&mut a, Op::GraphDestroy, &p::ObjectId { id: graph }, &[]).0,
        0
    );
}

/// Found by the `session` fuzzer: reservations of huge sizes, one after another, overflowed the
/// simulator's address counter. They must be refused, as the driver refuses them.
#[test]
fn reservations_past_the_address_space_are_refused() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let huge = p::VmmReserve {
        size: u64::MAX / 2,
        alignment: 0,
        addr: 0,
        flags: 0,
    };
    for _ in 0..3 {
        let (r, _) = call(&mut a, Op::VmmReserve, &huge, &[]);
        assert_eq!(r, code::OUT_OF_MEMORY);
    }
    let small = p::VmmReserve {
        size: 2 * MIB,
        ..huge
    };
    let (r, _) = call(&mut a, Op::VmmReserve, &small, &[]);
    assert_eq!(r, 0, "the address space is still usable");
    a.teardown();
}
