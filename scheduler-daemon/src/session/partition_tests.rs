//! SM shares through the sessions' stream handling on the simulated GPU (4 SMs, partitions in
//! pairs): a tenant below a share of 1 gets its streams in a green context, others do not.

use super::hostile::{call, session_with};
use super::Session;
use crate::config::TenantPolicy;
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::Arc;

fn tenant(exec: &Arc<SimExecutor>, id: u64, sm_share: f64) -> Session {
    let policy = TenantPolicy {
        sm_share,
        ..Default::default()
    };
    session_with(exec, id, policy)
}

/// A client stream and the legacy stand-in: their executor streams.
fn streams(s: &mut Session) -> (u64, u64) {
    let c = p::StreamCreate {
        device: 0,
        flags: 1,
        priority: -1,
        _pad: 0,
    };
    let (r, v) = call(s, Op::StreamCreate, &c, &[]);
    assert_eq!(r, 0);
    let raw = s.streams.table.get(v[0]).unwrap().raw;
    // Synchronising the legacy stream makes its stand-in.
    let legacy = p::ObjectId {
        id: p::legacy_stream(0),
    };
    let (r, _) = call(s, Op::StreamSynchronize, &legacy, &[]);
    assert_eq!(r, 0);
    let standin = *s.streams.all_on(0).last().unwrap();
    assert_ne!(standin, raw);
    (raw, standin)
}

#[test]
fn a_share_below_one_puts_every_stream_in_a_shared_green_context() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = tenant(&exec, 1, 0.5);
    let mut b = tenant(&exec, 2, 0.5);
    for s in [&mut a, &mut b] {
        let (raw, standin) = streams(s);
        assert_eq!(exec.stream_sm_count(raw), Some(2), "half of 4 SMs");
        assert_eq!(exec.stream_sm_count(standin), Some(2));
        assert_eq!(
            exec.stream_priority(raw),
            Some(-1),
            "the client's priority kept"
        );
    }
    assert_eq!(exec.green_contexts(), 1, "one context for one share");
    // A share smaller than the smallest partition gets the smallest partition.
    let mut c = tenant(&exec, 3, 0.1);
    assert_eq!(exec.stream_sm_count(streams(&mut c).0), Some(2));
    for s in [&mut a, &mut b, &mut c] {
        s.teardown();
    }
}

#[test]
fn a_share_of_one_changes_nothing() {
    let exec = Arc::new(SimExecutor::new());
    for share in [1.0, 0.9 /* rounds to all 4 SMs */] {
        let mut s = tenant(&exec, 1, share);
        let (raw, standin) = streams(&mut s);
        assert_eq!(exec.stream_sm_count(raw), None);
        assert_eq!(exec.stream_sm_count(standin), None);
        s.teardown();
    }
    assert_eq!(exec.green_contexts(), 0, "no green context was made");
}

#[test]
fn without_green_contexts_a_share_falls_back_to_ordinary_streams() {
    let exec = Arc::new(SimExecutor::new());
    exec.refuse_green_contexts();
    let mut s = tenant(&exec, 1, 0.25);
    let (raw, standin) = streams(&mut s);
    assert_eq!(exec.stream_sm_count(raw), None);
    assert_eq!(exec.stream_sm_count(standin), None);
    assert_eq!(exec.stream_priority(raw), Some(-1));
    s.teardown();
    assert_eq!(exec.live_objects(), 0);
}

#[test]
fn sms_kept_for_fast_lanes_leave_normal_lanes_the_rest() {
    let exec = Arc::new(SimExecutor::new());
    let mut s = tenant(&exec, 1, 1.0);
    s.reserve_for_fast_lanes(0.5);
    let (raw, standin) = streams(&mut s);
    assert_eq!(
        exec.stream_sm_count(raw),
        Some(2),
        "normal lanes: half of 4 SMs"
    );
    assert_eq!(exec.stream_sm_count(standin), Some(2));
    // The fast lane of the client stream gets every SM, at the greatest priority.
    let id = *s.streams.table.iter().next().unwrap().0;
    let exec_dyn: Arc<dyn crate::executor::Executor> = exec.clone();
    let (_, fast) = s.streams.prepare_lane(&*exec_dyn, id, true).unwrap();
    assert_ne!(fast, raw);
    assert_eq!(exec.stream_sm_count(fast), None, "fast lane: every SM");
    // A tenant with its own smaller share keeps it on both lanes.
    let mut t = tenant(&exec, 2, 0.5);
    t.reserve_for_fast_lanes(0.25);
    let (raw, _) = streams(&mut t);
    assert_eq!(exec.stream_sm_count(raw), Some(2));
    for s in [&mut s, &mut t] {
        s.teardown();
    }
}

#[test]
fn work_that_needs_every_sm_leaves_a_reduced_normal_lane() {
    let exec = Arc::new(SimExecutor::new());
    let mut s = tenant(&exec, 1, 1.0);
    s.reserve_for_fast_lanes(0.5);
    let (raw, _) = streams(&mut s);
    assert_eq!(exec.stream_sm_count(raw), Some(2));
    let id = *s.streams.table.iter().next().unwrap().0;
    // A cooperative launch is sized for every SM: it goes on the full lane.
    let (f, ptr) = super::scheduled::fill_kernel(&mut s);
    let mut params = Vec::new();
    params.extend_from_slice(&ptr.to_le_bytes());
    params.extend_from_slice(&7u32.to_le_bytes());
    params.extend_from_slice(&64i32.to_le_bytes());
    let l = p::Launch {
        func: f,
        stream: id,
        grid: [1, 1, 1],
        block: [64, 1, 1],
        cluster: [0; 3],
        shared_mem: 0,
        flags: p::LAUNCH_COOPERATIVE,
        params_len: params.len() as u32,
    };
    assert_eq!(call(&mut s, Op::Launch, &l, &params).0, 0);
    let now = s.streams.table.get(id).unwrap().raw;
    assert_ne!(now, raw);
    assert_eq!(
        exec.stream_sm_count(now),
        None,
        "cooperative work on every SM"
    );
    // A capture begins on the full lane too, and stays there until it ends.
    let other = {
        let c = p::StreamCreate {
            device: 0,
            flags: 1,
            priority: 0,
            _pad: 0,
        };
        let (r, v) = call(&mut s, Op::StreamCreate, &c, &[]);
        assert_eq!(r, 0);
        v[0]
    };
    let before = s.streams.table.get(other).unwrap().raw;
    assert_eq!(exec.stream_sm_count(before), Some(2));
    let begin = p::CaptureBegin {
        stream: other,
        mode: 0,
        _pad: 0,
    };
    assert_eq!(call(&mut s, Op::CaptureBegin, &begin, &[]).0, 0);
    let capturing = s.streams.table.get(other).unwrap().raw;
    assert_eq!(
        exec.stream_sm_count(capturing),
        None,
        "captured on every SM"
    );
    let (r, _) = call(&mut s, Op::CaptureEnd, &p::ObjectId { id: other }, &[]);
    assert_eq!(r, 0);
    s.teardown();
}
