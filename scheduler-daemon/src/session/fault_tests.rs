//! A kernel fault in the shared context, through the sessions' command handling on the
//! simulated GPU: the `trap` kernel poisons the context as a wild write would.

use super::hostile::{call, session_with};
use super::Session;
use crate::config::{Class, DaemonConfig, PolicyKind, TenantPolicy};
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use crate::fault::{recover, FaultMonitor, Witness};
use crate::scheduler::device::DeviceScheduler;
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMAGE: &[u8] = b"//baton-sim\nkernel fill 8 4 4\nkernel trap\nkernel fault\n";

fn tenant(
    exec: &Arc<SimExecutor>,
    id: u64,
    class: Class,
    scheds: &Arc<[Arc<DeviceScheduler>]>,
    monitor: &Arc<FaultMonitor>,
) -> Session {
    let policy = TenantPolicy {
        class,
        ..Default::default()
    };
    let mut s = session_with(exec, id, policy);
    s.schedule(scheds.clone(), true);
    s.shared.born.store(monitor.birth(), Ordering::Release);
    s.watch(monitor.clone());
    s
}

/// Allocates 4 KiB and loads `name`: (function, device pointer).
fn kernel(s: &mut Session, name: &[u8]) -> (u64, u64) {
    let alloc = p::MemAlloc {
        device: 0,
        _pad: 0,
        bytes: 4096,
    };
    let (r, v) = call(s, Op::MemAlloc, &alloc, &[]);
    assert_eq!(r, 0);
    let ptr = v[0];
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
    let (r, v) = call(s, Op::GetFunction, &p::GetSymbol { module: v[0] }, name);
    assert_eq!(r, 0);
    (v[0], ptr)
}

/// Launches `func` (with `fill`'s parameters; `trap` ignores them) on the legacy stream.
fn launch(s: &mut Session, func: u64, ptr: u64) -> u32 {
    let mut params = Vec::new();
    params.extend_from_slice(&ptr.to_le_bytes());
    params.extend_from_slice(&7u32.to_le_bytes());
    params.extend_from_slice(&64i32.to_le_bytes());
    let l = p::Launch {
        func,
        stream: p::legacy_stream(0),
        grid: [1, 1, 1],
        block: [64, 1, 1],
        cluster: [0; 3],
        shared_mem: 0,
        flags: 0,
        params_len: params.len() as u32,
    };
    call(s, Op::Launch, &l, &params).0
}

fn sync(s: &mut Session) -> u32 {
    call(
        s,
        Op::CtxSynchronize,
        &p::DeviceOnly { device: 0, _pad: 0 },
        &[],
    )
    .0
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn schedulers(exec: &Arc<SimExecutor>) -> Arc<[Arc<DeviceScheduler>]> {
    let cfg = DaemonConfig {
        policy: PolicyKind::Priority,
        low_in_flight: 0,
        ..Default::default()
    };
    Arc::new([DeviceScheduler::start(exec.clone(), 0, &cfg).unwrap()])
}

#[test]
fn a_kernel_fault_ends_every_session_names_its_tenant_and_new_sessions_work() {
    let exec = Arc::new(SimExecutor::new());
    let monitor = Arc::new(FaultMonitor::default());
    let scheds = schedulers(&exec);
    let mut a = tenant(&exec, 1, Class::HIGH, &scheds, &monitor);
    let mut b = tenant(&exec, 2, Class::LOW, &scheds, &monitor);
    let (trap, ap) = kernel(&mut a, b"trap");
    let (fill, bp) = kernel(&mut b, b"fill");
    assert_eq!(b.shared.memory_bytes.load(Ordering::Relaxed), 4096);
    let b_shared = b.shared.clone();
    // B has run work before (so its streams exist).
    assert_eq!(launch(&mut b, fill, bp), 0);
    assert_eq!(sync(&mut b), 0);
    wait_until("B's first work to be seen complete", || {
        scheds[0]
            .figures()
            .get(&2)
            .is_some_and(|f| f.in_flight == 0)
    });

    // A's kernel faults; its work stays in flight (it will never complete), and B's launch is
    // held behind it by the priority policy.
    assert_eq!(launch(&mut a, trap, ap), 0);
    assert!(exec.is_faulted());
    let held = std::thread::spawn(move || {
        let r = launch(&mut b, fill, bp);
        (b, r)
    });
    wait_until("B's launch to be held", || {
        scheds[0].figures().get(&2).is_some_and(|f| f.queued == 1)
    });

    // A synchronises: the driver reports the sticky error, the daemon confirms and records it.
    assert_eq!(sync(&mut a), code::ILLEGAL_ADDRESS);
    let fault = monitor
        .next_fault(Duration::ZERO)
        .expect("the fault is reported");
    assert_eq!(fault.witness, Witness::Session(1));
    assert_eq!(fault.code, code::ILLEGAL_ADDRESS);
    assert_eq!(monitor.faults(), 1);

    // What the daemon's fault thread does; B's held launch gives up once B is marked dead.
    let rec = recover(
        &*exec,
        &monitor,
        &scheds,
        &[a.shared.clone(), b_shared],
        &a.sharing.clone(),
        fault,
    );
    assert_eq!(rec.ended, [1, 2]);
    assert!(rec.reset);
    assert_eq!(rec.suspects.len(), 1, "{:?}", rec.suspects);
    let s = &rec.suspects[0];
    assert_eq!((s.session, s.tenant.as_str()), (1, "t1"));
    assert_eq!(s.kernel.as_deref(), Some("trap"));
    assert_eq!(s.in_flight, 1);
    let (mut b, r) = held.join().unwrap();
    // Released either by giving up (the error) or by the abandoned work (then issued into the
    // poisoned context, which accepts launches and never runs them, as a GPU does); in
    // neither case does it hang, and the sticky error comes with B's next call.
    assert!(r == code::ILLEGAL_ADDRESS || r == 0, "{r}");
    assert!(!exec.is_faulted(), "the context was reset");

    // Both sessions answer every later call with the sticky error, without the driver, and
    // their clients are told through the region.
    for s in [&mut a, &mut b] {
        assert_eq!(sync(s), code::ILLEGAL_ADDRESS);
        let alloc = p::MemAlloc {
            device: 0,
            _pad: 0,
            bytes: 64,
        };
        assert_eq!(call(s, Op::MemAlloc, &alloc, &[]).0, code::ILLEGAL_ADDRESS);
        assert_eq!(
            s.region.fault().load(Ordering::Acquire),
            code::ILLEGAL_ADDRESS
        );
        assert_eq!(s.shared.memory_bytes.load(Ordering::Relaxed), 0);
    }
    // Their teardown hands nothing of the old context to the new one.
    let before = exec.live_objects();
    a.teardown();
    b.teardown();
    assert_eq!(exec.live_objects(), before);
    assert!(scheds[0].figures().is_empty(), "both tenants forgotten");

    // A new tenant works normally, with its work tracked through the re-registered words.
    let mut c = tenant(&exec, 3, Class::LOW, &scheds, &monitor);
    let (fill, cp) = kernel(&mut c, b"fill");
    assert_eq!(launch(&mut c, fill, cp), 0);
    assert_eq!(sync(&mut c), 0);
    let out = exec.peek(cp, 4).unwrap();
    assert_eq!(out, 7u32.to_le_bytes());
    wait_until("C's work to be seen complete", || {
        scheds[0]
            .figures()
            .get(&3)
            .is_some_and(|f| f.in_flight == 0)
    });
    assert_eq!(c.region.fault().load(Ordering::Acquire), 0);
    c.teardown();
}

#[test]
fn an_error_code_without_a_poisoned_context_ends_nothing() {
    let exec = Arc::new(SimExecutor::new());
    let monitor = Arc::new(FaultMonitor::default());
    let scheds = schedulers(&exec);
    let mut a = tenant(&exec, 1, Class::NORMAL, &scheds, &monitor);
    let (f, ptr) = kernel(&mut a, b"fault");
    // The `fault` kernel's launch fails with ILLEGAL_ADDRESS but poisons nothing.
    assert_eq!(launch(&mut a, f, ptr), code::ILLEGAL_ADDRESS);
    assert!(monitor.next_fault(Duration::ZERO).is_none());
    assert_eq!(monitor.faults(), 0);
    assert_eq!(sync(&mut a), 0);
    assert_eq!(a.region.fault().load(Ordering::Acquire), 0);
    a.teardown();
}
