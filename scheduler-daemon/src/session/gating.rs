//! The session's side of scheduling: every launch, copy and memset passes its device's gate
//! before the session issues it, and its queueing delay is recorded.
//!
//! Under `passthrough` there are no gates: nothing is held, tracked or synchronised, and the
//! only cost left is the delay measurement (two clock reads and one atomic add per command).

use super::streams::Streams;
use super::Shared;
use crate::executor::{code, Executor, GpuError, GpuResult, Raw};
use crate::scheduler::device::DeviceScheduler;
use crate::scheduler::{CostKey, Work, WorkKind};
use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Gating {
    /// Indexed by device; empty under `passthrough`.
    devices: Arc<[Arc<DeviceScheduler>]>,
    /// The session's synchronisation epoch: work between two synchronising calls is one job.
    pub job: u64,
    /// When the command being executed was read off the ring.
    pub received: Instant,
    /// Whether the session has a stream capture open (then each stream is asked).
    pub captures_open: bool,
    /// Whether the current job goes on the fast lane, once asked (device, answer).
    fast: Cell<Option<(u32, bool)>>,
    /// The previous job's answer, to log changes.
    was_fast: Cell<bool>,
    /// When the current fast-lane job issued its first work (device, time).
    fast_since: Cell<Option<(u32, Instant)>>,
    /// Finished fast-lane jobs not yet reported (the gate was busy).
    unreported: RefCell<Vec<(u32, Duration)>>,
}

/// Unreported fast-lane jobs kept at most (the oldest go first).
const MAX_UNREPORTED: usize = 64;

impl Default for Gating {
    fn default() -> Self {
        Gating {
            devices: Arc::new([]),
            job: 0,
            received: Instant::now(),
            captures_open: false,
            fast: Cell::new(None),
            was_fast: Cell::new(false),
            fast_since: Cell::new(None),
            unreported: RefCell::new(Vec::new()),
        }
    }
}

impl Gating {
    pub fn new(devices: Arc<[Arc<DeviceScheduler>]>, shared: &Shared) -> Gating {
        for d in devices.iter() {
            d.add_tenant(shared.identity.session, &shared.policy);
        }
        Gating {
            devices,
            ..Default::default()
        }
    }

    /// Whether the session's latest job went on the fast lane.
    pub fn on_fast_lane(&self) -> bool {
        self.was_fast.get()
    }

    /// Waits until the policy lets this work go, then issues it with `issue` on daemon stream
    /// `raw` (the session's stream `stream`) and tracks it until the GPU completes it.
    pub fn issue(
        &self,
        shared: &Shared,
        exec: &dyn Executor,
        device: u32,
        stream: u64,
        raw: Raw,
        kind: WorkKind,
        key: CostKey,
        issue: impl FnOnce() -> GpuResult<()>,
    ) -> GpuResult<()> {
        let Some(d) = self.devices.get(device as usize) else {
            shared.queue_delay.record(self.received.elapsed());
            return issue();
        };
        // Work on a capturing stream only becomes part of a graph: nothing runs, and a
        // completion write would be captured with it. The graph's launch is what gets gated.
        if self.captures_open && exec.is_capturing(device, raw).unwrap_or(false) {
            shared.queue_delay.record(self.received.elapsed());
            return issue();
        }
        // A short tenant's job goes straight to its high-priority lane: no queue, no window, no
        // completion tracking. Its kernels are tiny and many; the scheduler's per-item costs
        // (two lock round trips and one more driver call each) would dominate its service time.
        // The job as a whole is measured instead (`next_job`).
        if self.fast.get() == Some((device, true)) {
            shared.queue_delay.record(self.received.elapsed());
            if self.fast_since.get().is_none() {
                self.fast_since.set(Some((device, Instant::now())));
            }
            return issue();
        }
        let work = Work {
            tenant: shared.identity.session,
            stream,
            job: self.job,
            kind,
            key: Some(key),
        };
        // `None`: the client went away while its work was held; nobody reads this result.
        // A kernel fault ending the context also ends the wait: the work would never run.
        let item = d
            .admit(work, &|| {
                shared.closed.load(Ordering::Acquire) || shared.faulted().is_some()
            })
            .ok_or_else(|| GpuError(shared.faulted().unwrap_or(code::UNKNOWN)))?;
        shared.queue_delay.record(self.received.elapsed());
        let r = issue();
        d.issued(raw, item.id, r.is_ok());
        r
    }

    /// Whether this session's current job goes on a fast lane (`streams.rs`): asked of the
    /// policy once per job. Always `false` under `passthrough`.
    pub fn fast_lane(&self, shared: &Shared, device: u32) -> bool {
        if let Some((d, fast)) = self.fast.get() {
            if d == device {
                return fast;
            }
        }
        let fast = self
            .devices
            .get(device as usize)
            .is_some_and(|d| d.fast_lane(shared.identity.session));
        self.fast.set(Some((device, fast)));
        if fast != self.was_fast.replace(fast) {
            tracing::info!(
                session = shared.identity.session,
                tenant = %shared.identity.tenant,
                device,
                "{}",
                if fast {
                    "tenant's jobs are short: its work moves to the fast lane"
                } else {
                    "tenant's jobs are no longer short: its work leaves the fast lane"
                }
            );
        }
        fast
    }

    /// After a synchronising command: the next command starts a new job. Returns the finished
    /// fast-lane job's device and time (first issue to now), for [`Gating::report_fast_job`]
    /// once the client has its answer.
    pub fn next_job(&mut self) -> Option<(u32, Duration)> {
        self.job += 1;
        self.fast.set(None);
        self.fast_since
            .take()
            .map(|(device, since)| (device, since.elapsed()))
    }

    /// Tells the policy how long a fast-lane job took; it judges the tenant by that. Never
    /// waits for the gate: a report the gate is too busy for now is made with a later one.
    pub fn report_fast_job(&self, shared: &Shared, job: (u32, Duration)) {
        let mut pending = self.unreported.borrow_mut();
        pending.push(job);
        pending.retain(|&(device, took)| {
            self.devices
                .get(device as usize)
                .is_some_and(|d| !d.try_fast_job(shared.identity.session, took))
        });
        if pending.len() > MAX_UNREPORTED {
            let extra = pending.len() - MAX_UNREPORTED;
            pending.drain(..extra);
        }
    }

    /// Before stream `id` is destroyed: waits for its work and stops tracking it, so that its
    /// lanes can serve other streams.
    pub fn retire_stream(&self, exec: &dyn Executor, streams: &Streams, id: u64) {
        let (Ok(s), Ok(lanes)) = (streams.table.get(id), streams.lanes_of(id)) else {
            return;
        };
        if let Some(d) = self
            .devices
            .get(s.device as usize)
            .filter(|d| lanes.iter().any(|&l| d.tracks(l)))
        {
            // The lane in use waited for the other one when the stream last moved.
            let _ = exec.stream_synchronize(s.device, s.raw);
            d.retire(&lanes);
        }
    }

    /// Teardown of a session whose context a kernel fault ended: its lanes were abandoned with
    /// the context (their handles may name new streams now), so only the tenant is forgotten.
    pub fn forget(&self, tenant: u64) {
        for d in self.devices.iter() {
            d.remove_tenant(tenant);
        }
    }

    /// At teardown, before the streams are destroyed: waits for all of the session's work,
    /// reports it complete and forgets the tenant.
    pub fn end(&self, exec: &dyn Executor, streams: &Streams, tenant: u64) {
        if self.devices.is_empty() {
            return;
        }
        let _ = streams.synchronize_all(exec);
        for (i, d) in self.devices.iter().enumerate() {
            d.retire(&streams.all_on(i as u32));
            d.remove_tenant(tenant);
        }
    }
}
