//! Sessions under a scheduling policy, end to end through their command handling, on the
//! simulated executor paused so that issued work stays in flight until the test resumes it.

use super::hostile::{call, session_with, IMAGE};
use super::Session;
use crate::config::{Class, DaemonConfig, PolicyKind, TenantPolicy};
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use crate::scheduler::device::{DeviceScheduler, TenantFigures};
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn schedulers(exec: &Arc<SimExecutor>, policy: PolicyKind) -> Arc<[Arc<DeviceScheduler>]> {
    let cfg = DaemonConfig {
        policy,
        low_in_flight: 0,
        ..Default::default()
    };
    Arc::new([DeviceScheduler::start(exec.clone(), 0, &cfg).unwrap()])
}

fn tenant(
    exec: &Arc<SimExecutor>,
    id: u64,
    class: Class,
    scheds: &Arc<[Arc<DeviceScheduler>]>,
    priority: bool,
) -> Session {
    let policy = TenantPolicy {
        class,
        ..Default::default()
    };
    let mut s = session_with(exec, id, policy);
    s.schedule(scheds.clone(), priority);
    s
}

/// Loads the `fill` kernel and allocates memory for it: (function, device pointer).
pub(super) fn fill_kernel(s: &mut Session) -> (u64, u64) {
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
    let (r, v) = call(s, Op::GetFunction, &p::GetSymbol { module: v[0] }, b"fill");
    assert_eq!(r, 0);
    (v[0], ptr)
}

/// Launches `fill` on `stream`; returns the result code.
fn launch(s: &mut Session, func: u64, ptr: u64, stream: u64) -> u32 {
    let mut params = Vec::new();
    params.extend_from_slice(&ptr.to_le_bytes());
    params.extend_from_slice(&7u32.to_le_bytes());
    params.extend_from_slice(&64i32.to_le_bytes());
    let l = p::Launch {
        func,
        stream,
        grid: [1, 1, 1],
        block: [64, 1, 1],
        cluster: [0; 3],
        shared_mem: 0,
        flags: 0,
        params_len: params.len() as u32,
    };
    call(s, Op::Launch, &l, &params).0
}

fn create_stream(s: &mut Session, priority: i32) -> u64 {
    let c = p::StreamCreate {
        device: 0,
        flags: 1,
        priority,
        _pad: 0,
    };
    let (r, v) = call(s, Op::StreamCreate, &c, &[]);
    assert_eq!(r, 0);
    v[0]
}

fn figures(scheds: &[Arc<DeviceScheduler>], tenant: u64) -> TenantFigures {
    scheds[0]
        .figures()
        .get(&tenant)
        .copied()
        .unwrap_or_default()
}

/// Waits for something another thread does; the deadline only turns a hang into a failure.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn priority_holds_a_lower_class_while_a_higher_one_has_work_in_flight() {
    let exec = Arc::new(SimExecutor::new());
    let scheds = schedulers(&exec, PolicyKind::Priority);
    let mut hi = tenant(&exec, 1, Class::HIGH, &scheds, true);
    let mut lo = tenant(&exec, 2, Class::LOW, &scheds, true);
    let (hf, hp) = fill_kernel(&mut hi);
    let (lf, lp) = fill_kernel(&mut lo);
    let legacy = p::legacy_stream(0);

    exec.pause();
    assert_eq!(launch(&mut hi, hf, hp, legacy), 0);
    assert_eq!(figures(&scheds, 1).in_flight, 1);
    let low = std::thread::spawn(move || {
        let r = launch(&mut lo, lf, lp, legacy);
        (lo, r)
    });
    wait_until("the low-class launch to be held", || {
        figures(&scheds, 2).queued == 1
    });
    assert!(!low.is_finished());
    assert_eq!(figures(&scheds, 1).in_flight, 1);

    // The high-class work completes: the low-class launch goes.
    exec.resume();
    let (lo, r) = low.join().unwrap();
    assert_eq!(r, 0);
    wait_until("all work to be seen complete", || {
        scheds[0].figures().values().all(|f| f.in_flight == 0)
    });
    let (h, l) = (figures(&scheds, 1), figures(&scheds, 2));
    assert_eq!((h.queued, l.queued), (0, 0));
    assert!(h.gpu_time > Duration::ZERO, "{h:?}");
    assert!(h.recent > 0.0);
    // Both launches had their queueing delay measured, the held one included.
    assert_eq!(hi.shared.queue_delay.summary().count, 1);
    assert_eq!(lo.shared.queue_delay.summary().count, 1);
}

#[test]
fn a_held_session_whose_client_is_gone_gives_up() {
    let exec = Arc::new(SimExecutor::new());
    let scheds = schedulers(&exec, PolicyKind::Priority);
    let mut hi = tenant(&exec, 1, Class::HIGH, &scheds, true);
    let mut lo = tenant(&exec, 2, Class::LOW, &scheds, true);
    let (hf, hp) = fill_kernel(&mut hi);
    let (lf, lp) = fill_kernel(&mut lo);
    let legacy = p::legacy_stream(0);

    exec.pause();
    assert_eq!(launch(&mut hi, hf, hp, legacy), 0);
    let lo_shared = lo.shared.clone();
    let low = std::thread::spawn(move || {
        let r = launch(&mut lo, lf, lp, legacy);
        (lo, r)
    });
    wait_until("the low-class launch to be held", || {
        figures(&scheds, 2).queued == 1
    });
    // The client hangs up while its launch is held; the high-class work is still running.
    lo_shared.closed.store(true, Ordering::Release);
    let (mut lo, r) = low.join().unwrap();
    assert_eq!(r, code::UNKNOWN);
    assert_eq!(figures(&scheds, 2).queued, 0);
    assert_eq!(lo.shared.launches.load(Ordering::Relaxed), 1);
    assert_eq!(lo.shared.queue_delay.summary().count, 0, "never issued");
    lo.teardown();
    assert!(!scheds[0].figures().contains_key(&2), "tenant forgotten");
    assert_eq!(figures(&scheds, 1).in_flight, 1);
    exec.resume();
    wait_until("the high-class work to complete", || {
        figures(&scheds, 1).in_flight == 0
    });
}

#[test]
fn destroying_a_stream_or_ending_a_session_settles_its_work() {
    let exec = Arc::new(SimExecutor::new());
    let scheds = schedulers(&exec, PolicyKind::Fair);
    let mut a = tenant(&exec, 1, Class::NORMAL, &scheds, false);
    let (f, ptr) = fill_kernel(&mut a);
    exec.pause();
    let s = create_stream(&mut a, 0);
    assert_eq!(launch(&mut a, f, ptr, s), 0);
    assert_eq!(figures(&scheds, 1).in_flight, 1);
    // Destroying the stream waits for its work, which is then complete at once.
    let (r, _) = call(&mut a, Op::StreamDestroy, &p::ObjectId { id: s }, &[]);
    assert_eq!(r, 0);
    assert_eq!(figures(&scheds, 1).in_flight, 0);

    assert_eq!(launch(&mut a, f, ptr, p::legacy_stream(0)), 0);
    assert_eq!(figures(&scheds, 1).in_flight, 1);
    a.teardown();
    assert!(scheds[0].figures().is_empty());
    scheds[0].gate().with(|s| {
        assert_eq!(s.queued(), 0);
        assert!(s.in_flight().is_empty());
    });
}

#[test]
fn stream_priorities_follow_the_class_under_priority_only() {
    let exec = Arc::new(SimExecutor::new());
    // The simulator's range is (0, -5): class low (level 2) may have -3 at best.
    for (policy, asked, got, legacy) in [
        (PolicyKind::Priority, -5, -3, -3),
        (PolicyKind::Priority, 0, 0, -3),
        (PolicyKind::Srpt, -5, -5, 0),
    ] {
        let scheds = schedulers(&exec, policy);
        let prio = policy == PolicyKind::Priority;
        let mut s = tenant(&exec, 1, Class::LOW, &scheds, prio);
        let (f, ptr) = fill_kernel(&mut s);
        let id = create_stream(&mut s, asked);
        let raw = s.streams.table.get(id).unwrap().raw;
        assert_eq!(exec.stream_priority(raw), Some(got), "{policy:?} {asked}");
        assert_eq!(launch(&mut s, f, ptr, p::legacy_stream(0)), 0);
        let standin = *s.streams.all_on(0).last().unwrap();
        assert_eq!(exec.stream_priority(standin), Some(legacy), "{policy:?}");
        s.teardown();
    }
}

#[test]
fn passthrough_holds_and_tracks_nothing_but_measures_queue_delay() {
    let exec = Arc::new(SimExecutor::new());
    // A passthrough daemon has no schedulers: its sessions are never put under one.
    let policy = TenantPolicy {
        class: Class::LOW,
        ..Default::default()
    };
    let mut lo = session_with(&exec, 2, policy);
    let (f, ptr) = fill_kernel(&mut lo);
    exec.pause();
    let s = create_stream(&mut lo, -5);
    let raw = lo.streams.table.get(s).unwrap().raw;
    assert_eq!(
        exec.stream_priority(raw),
        Some(-5),
        "the client's own priority"
    );
    for _ in 0..3 {
        assert_eq!(launch(&mut lo, f, ptr, s), 0);
    }
    let d = lo.shared.queue_delay.summary();
    assert_eq!(d.count, 3);
    assert!(d.p50_ns.is_some() && d.p99_ns >= d.p50_ns);
    exec.resume();
}

#[test]
fn srpt_moves_a_short_tenant_to_the_fast_lane() {
    let exec = Arc::new(SimExecutor::new());
    let legacy = p::legacy_stream(0);
    let sync = |s: &mut Session| {
        let (r, _) = call(s, Op::StreamSynchronize, &p::ObjectId { id: legacy }, &[]);
        assert_eq!(r, 0);
    };
    // What is short is the policy's business (`scheduler::srpt`, `scheduler::sim`); measured
    // times on a loaded test machine vary, so here every job is short, or the lane is off.
    for (short_job, fast) in [(Some(Duration::from_secs(60)), true), (None, false)] {
        let cfg = DaemonConfig {
            policy: PolicyKind::Srpt,
            srpt_short_job: short_job,
            ..Default::default()
        };
        let scheds: Arc<[Arc<DeviceScheduler>]> =
            Arc::new([DeviceScheduler::start(exec.clone(), 0, &cfg).unwrap()]);
        let mut s = tenant(&exec, 1, Class::NORMAL, &scheds, false);
        let (f, ptr) = fill_kernel(&mut s);
        assert_eq!(launch(&mut s, f, ptr, legacy), 0);
        let normal = *s.streams.all_on(0).last().unwrap();
        assert_eq!(exec.stream_priority(normal), Some(0));
        // A job closes when the next submits its first item; srpt judges a tenant once it has
        // finished four jobs, and the job after that goes on the lane.
        for _ in 0..5 {
            sync(&mut s);
            assert_eq!(launch(&mut s, f, ptr, legacy), 0);
        }
        let lanes = s.streams.all_on(0);
        let in_use = *lanes.last().unwrap();
        if fast {
            assert_eq!(lanes.len(), 2, "a fast lane was made");
            assert_eq!(exec.stream_priority(in_use), Some(-5));
            assert_ne!(in_use, normal);
            // Fast-lane work bypasses the queues: nothing is held or tracked.
            wait_until("earlier tracked work to be seen complete", || {
                figures(&scheds, 1).in_flight == 0
            });
            exec.pause();
            for _ in 0..3 {
                assert_eq!(launch(&mut s, f, ptr, legacy), 0);
            }
            assert_eq!(figures(&scheds, 1).in_flight, 0);
            exec.resume();
        } else {
            assert_eq!(lanes, vec![normal], "no second lane");
        }
        sync(&mut s);
        s.teardown();
        assert!(scheds[0].figures().is_empty());
    }
}
