//! A session's streams, and the legacy default stream's semantics rebuilt per tenant.
//!
//! In CUDA, work on the legacy stream (`CUstream` 0) waits for all earlier work on the
//! context's *blocking* streams, and work on a blocking stream waits for earlier legacy work.
//! In the daemon every tenant shares one context, so letting tenants use the real legacy stream
//! would make each wait for all the others. Instead each session gets its own non-blocking
//! stand-in per device, and the daemon adds the implied waits between that session's streams
//! only, with events: before legacy work, it joins every blocking stream that has run work since
//! the last join; before blocking-stream work, it joins the legacy stream if legacy work has run
//! since that stream last waited for it.
//!
//! **Fast lanes.** Under `srpt`, work of a tenant with short jobs goes on a second daemon
//! stream of the device's greatest priority (created the first time it is needed), so that its
//! blocks start ahead of other tenants' pending blocks. A client stream is on one lane at a
//! time: `raw` is always the lane in use, and moving to the other lane makes the new lane wait
//! (with an event) for everything issued on the old one, so the client's stream stays in order
//! and every synchronisation, event record and wait simply uses `raw`. A stream being captured
//! never changes lanes.
//!
//! **SM shares.** A tenant whose policy has `sm_share < 1` gets every daemon stream (its own,
//! the legacy stand-in, the fast lanes) in a green context of that share of the SMs
//! ([`super::partition`]); the others get ordinary streams, made exactly as before.
//!
//! **SMs kept for the fast lanes.** With `srpt_fast_lane_sm_reserve = r > 0`, every tenant's
//! normal lanes are made in a green context of at most `1 - r` of the SMs, and its fast lanes
//! with its own share (all SMs by default). All green contexts of one size use the same SMs, so
//! the other `r` run fast-lane work only: a short job's kernels find SMs free at once instead
//! of waiting for running blocks of long work to finish, which priority alone cannot avoid.

use super::partition;
use super::tables::Table;
use crate::config::Class;
use crate::executor::{code, Executor, GpuError, GpuResult, Raw};
use crate::scheduler::priority::{clamp_stream_priority, stream_priority};
use baton_ipc::protocol::LEGACY_STREAM_BASE;
use std::collections::{BTreeSet, HashMap, HashSet};

/// `CU_STREAM_NON_BLOCKING`.
pub const NON_BLOCKING: u32 = 1;

pub struct Stream {
    pub device: u32,
    /// The lane in use.
    pub raw: Raw,
    /// The other lane, once one was needed.
    lanes: Lanes,
    pub blocking: bool,
    /// Legacy epoch this stream last waited for.
    seen_epoch: u64,
    /// Recorded on this stream when legacy work must wait for it.
    join_event: Option<Raw>,
}

/// The lane a stream is not using now, and what moving between lanes needs.
#[derive(Default)]
struct Lanes {
    other: Option<Raw>,
    /// Whether `raw` is the fast (greatest priority) lane.
    fast: bool,
    /// Recorded on the old lane, waited for by the new one.
    event: Option<Raw>,
}

impl Lanes {
    /// Moves `raw` to the fast lane or back. Returns the lane now in use.
    fn switch(
        &mut self,
        exec: &dyn Executor,
        sm_share: Option<f64>,
        device: u32,
        raw: Raw,
        fast: bool,
    ) -> GpuResult<Raw> {
        if self.fast == fast {
            return Ok(raw);
        }
        let other = match self.other {
            Some(o) => o,
            None => {
                // Only the normal lane exists at first, so this creates the fast one.
                let greatest = exec.stream_priority_range(device)?.1;
                *self
                    .other
                    .insert(partition::stream_create(exec, sm_share, device, greatest)?)
            }
        };
        let event = match self.event {
            Some(e) => e,
            None => *self
                .event
                .insert(exec.event_create(device, 2 /* DISABLE_TIMING */)?),
        };
        exec.event_record(device, event, raw)?;
        exec.stream_wait_event(device, other, event)?;
        self.other = Some(raw);
        self.fast = fast;
        Ok(other)
    }

    /// Every daemon stream besides the one in use.
    fn others(&self) -> impl Iterator<Item = Raw> {
        self.other.into_iter()
    }

    /// Destroys the other lane and the event (the lane in use is the caller's).
    fn destroy(self, exec: &dyn Executor, device: u32, sync: bool) {
        if let Some(o) = self.other {
            if sync {
                let _ = exec.stream_synchronize(device, o);
            }
            let _ = exec.stream_destroy(device, o);
        }
        if let Some(e) = self.event {
            let _ = exec.event_destroy(device, e);
        }
    }
}

struct Legacy {
    raw: Raw,
    lanes: Lanes,
    /// Bumped by every legacy operation.
    epoch: u64,
    join_event: Raw,
    /// Blocking streams with work the legacy stream has not yet joined.
    dirty: BTreeSet<u64>,
}

#[derive(Default)]
pub struct Streams {
    pub table: Table<Stream>,
    legacy: HashMap<u32, Legacy>,
    /// Streams a capture was begun on: they get no implicit legacy-stream waits (a wait on an
    /// event from outside the capture would invalidate it) and are not synchronised.
    pub capturing: HashSet<u64>,
    /// Under `priority`: the tenant's class, which bounds its streams' CUDA priorities.
    pub class: Option<Class>,
    /// The tenant's SM share where it is below 1 (module documentation).
    pub sm_share: Option<f64>,
    /// Under `srpt` with SMs kept for the fast lanes: the (smaller) share of the normal lanes.
    pub normal_share: Option<f64>,
}

impl Streams {
    /// The SM share of normal lanes: smaller than the tenant's own when SMs are kept for the
    /// fast lanes, whose streams get the tenant's own share.
    fn normal_lane_share(&self) -> Option<f64> {
        self.normal_share.or(self.sm_share)
    }

    /// Keeps `reserve` of the SMs free of normal-lane work (module documentation): this
    /// tenant's normal lanes get at most `1 - reserve` of them. Call before any stream exists.
    pub fn reserve_for_fast_lanes(&mut self, reserve: f64) {
        if reserve > 0.0 && reserve < 1.0 {
            self.normal_share = Some(self.sm_share.unwrap_or(1.0).min(1.0 - reserve));
        }
    }

    pub fn create(
        &mut self,
        exec: &dyn Executor,
        device: u32,
        flags: u32,
        priority: i32,
    ) -> GpuResult<u64> {
        if flags & !NON_BLOCKING != 0 {
            return Err(GpuError(code::INVALID_VALUE));
        }
        let priority = match self.class {
            Some(c) => clamp_stream_priority(c, priority, exec.stream_priority_range(device)?),
            None => priority,
        };
        let raw = partition::stream_create(exec, self.normal_lane_share(), device, priority)?;
        let epoch = self.legacy.get(&device).map_or(0, |l| l.epoch);
        Ok(self.table.insert(Stream {
            device,
            raw,
            lanes: Lanes::default(),
            blocking: flags & NON_BLOCKING == 0,
            seen_epoch: epoch,
            join_event: None,
        }))
    }

    pub fn destroy(&mut self, exec: &dyn Executor, id: u64) -> GpuResult<()> {
        let s = self.table.remove(id)?;
        self.capturing.remove(&id);
        if let Some(l) = self.legacy.get_mut(&s.device) {
            l.dirty.remove(&id);
        }
        if let Some(e) = s.join_event {
            let _ = exec.event_destroy(s.device, e);
        }
        // Like cuStreamDestroy: pending work still completes; the driver handles that.
        s.lanes.destroy(exec, s.device, false);
        exec.stream_destroy(s.device, s.raw)
    }

    /// The device stream `id` is on (no side effects).
    pub fn device_of(&self, id: u64) -> GpuResult<u32> {
        if id >= LEGACY_STREAM_BASE {
            return u32::try_from(id - LEGACY_STREAM_BASE)
                .map_err(|_| GpuError(code::INVALID_HANDLE));
        }
        Ok(self.table.get(id)?.device)
    }

    /// Whether SMs are kept for the fast lanes (then normal lanes do not have all of the
    /// tenant's SMs).
    pub fn reserving(&self) -> bool {
        self.normal_share.is_some()
    }

    /// [`Streams::prepare`] for scheduled work: first moves `id` to the fast lane or back to
    /// its normal one (module documentation), unless it is being captured.
    pub fn prepare_lane(
        &mut self,
        exec: &dyn Executor,
        id: u64,
        fast: bool,
    ) -> GpuResult<(u32, Raw)> {
        self.move_lane(exec, id, fast)?;
        self.prepare(exec, id)
    }

    /// Where SMs are kept for the fast lanes, moves `id` to its fast lane before a capture
    /// begins on it: work captured on a normal lane would belong to that lane's green context,
    /// and the driver refuses graphs that mix it with the primary context's (conditional
    /// handles, graphs built node by node).
    pub fn lane_for_capture(&mut self, exec: &dyn Executor, id: u64) -> GpuResult<()> {
        if self.reserving() {
            self.move_lane(exec, id, true)?;
        }
        Ok(())
    }

    fn move_lane(&mut self, exec: &dyn Executor, id: u64, fast: bool) -> GpuResult<()> {
        if self.capturing.contains(&id) {
            // Its capture began on the lane in use.
        } else if id >= LEGACY_STREAM_BASE {
            let device = self.device_of(id)?;
            let share = self.sm_share;
            let l = self.legacy(exec, device)?;
            l.raw = l.lanes.switch(exec, share, device, l.raw, fast)?;
        } else {
            let open = self.captures_open();
            let s = self.table.get_mut(id)?;
            // A stream that joined another's capture (by waiting for one of its events) is
            // being captured too: an event record on it would become part of the graph.
            if open && exec.is_capturing(s.device, s.raw).unwrap_or(false) {
                return Ok(());
            }
            s.raw = s.lanes.switch(exec, self.sm_share, s.device, s.raw, fast)?;
        }
        Ok(())
    }

    /// Whether any of the session's streams has a capture open.
    pub fn captures_open(&self) -> bool {
        !self.capturing.is_empty()
    }

    fn legacy(&mut self, exec: &dyn Executor, device: u32) -> GpuResult<&mut Legacy> {
        #[allow(clippy::map_entry)] // creation is fallible and must not leave a half entry
        if !self.legacy.contains_key(&device) {
            if device as usize >= exec.devices().len() {
                return Err(GpuError(code::INVALID_DEVICE));
            }
            let priority = match self.class {
                Some(c) => stream_priority(c, exec.stream_priority_range(device)?),
                None => 0,
            };
            let raw = partition::stream_create(exec, self.normal_lane_share(), device, priority)?;
            let join_event = match exec.event_create(device, 2 /* CU_EVENT_DISABLE_TIMING */) {
                Ok(e) => e,
                Err(e) => {
                    let _ = exec.stream_destroy(device, raw);
                    return Err(e);
                }
            };
            self.legacy.insert(
                device,
                Legacy {
                    raw,
                    lanes: Lanes::default(),
                    epoch: 0,
                    join_event,
                    dirty: BTreeSet::new(),
                },
            );
        }
        Ok(self.legacy.get_mut(&device).expect("inserted above"))
    }

    /// The device and executor stream for `id`, after adding the waits that the legacy stream's
    /// semantics require before new work is issued on it.
    pub fn prepare(&mut self, exec: &dyn Executor, id: u64) -> GpuResult<(u32, Raw)> {
        if id >= LEGACY_STREAM_BASE {
            let device = u32::try_from(id - LEGACY_STREAM_BASE)
                .map_err(|_| GpuError(code::INVALID_HANDLE))?;
            let legacy = self.legacy(exec, device)?;
            let dirty = std::mem::take(&mut legacy.dirty);
            let (lraw, ldev) = (legacy.raw, device);
            legacy.epoch += 1;
            for sid in dirty {
                let s = self.table.get_mut(sid)?;
                let ev = match s.join_event {
                    Some(e) => e,
                    None => *s.join_event.insert(exec.event_create(s.device, 2)?),
                };
                exec.event_record(s.device, ev, s.raw)?;
                exec.stream_wait_event(ldev, lraw, ev)?;
            }
            return Ok((device, lraw));
        }
        let s = self.table.get(id)?;
        let (device, raw, blocking, seen) = (s.device, s.raw, s.blocking, s.seen_epoch);
        if !blocking || self.capturing.contains(&id) {
            return Ok((device, raw));
        }
        if let Some(l) = self.legacy.get_mut(&device) {
            if seen < l.epoch {
                exec.event_record(device, l.join_event, l.raw)?;
                exec.stream_wait_event(device, raw, l.join_event)?;
                let epoch = l.epoch;
                self.table.get_mut(id)?.seen_epoch = epoch;
            }
            l.dirty.insert(id);
        }
        Ok((device, raw))
    }

    /// The device and stream for a synchronising call on `id`, without ordering side effects.
    pub fn lookup(&mut self, exec: &dyn Executor, id: u64) -> GpuResult<(u32, Raw)> {
        if id >= LEGACY_STREAM_BASE {
            // Synchronising the legacy stream must also cover blocking streams it would wait for.
            return self.prepare(exec, id);
        }
        let s = self.table.get(id)?;
        Ok((s.device, s.raw))
    }

    /// Every executor stream of the session on `device`, both lanes of each.
    pub fn all_on(&self, device: u32) -> Vec<Raw> {
        let mut v: Vec<Raw> = self
            .table
            .values()
            .filter(|s| s.device == device)
            .flat_map(|s| std::iter::once(s.raw).chain(s.lanes.others()))
            .collect();
        if let Some(l) = self.legacy.get(&device) {
            v.extend(l.lanes.others());
            v.push(l.raw);
        }
        v
    }

    /// Both lanes of stream `id` (the one in use first).
    pub fn lanes_of(&self, id: u64) -> GpuResult<Vec<Raw>> {
        let s = self.table.get(id)?;
        Ok(std::iter::once(s.raw).chain(s.lanes.others()).collect())
    }

    /// Synchronises and destroys everything (session teardown). Errors are ignored: the
    /// client is gone and nobody can act on them.
    pub fn teardown(&mut self, exec: &dyn Executor) {
        for (_, s) in self.table.drain() {
            let _ = exec.stream_synchronize(s.device, s.raw);
            if let Some(e) = s.join_event {
                let _ = exec.event_destroy(s.device, e);
            }
            s.lanes.destroy(exec, s.device, true);
            let _ = exec.stream_destroy(s.device, s.raw);
        }
        for (device, l) in self.legacy.drain() {
            let _ = exec.stream_synchronize(device, l.raw);
            let _ = exec.event_destroy(device, l.join_event);
            l.lanes.destroy(exec, device, true);
            let _ = exec.stream_destroy(device, l.raw);
        }
    }

    /// Synchronises every stream of the session (all devices), returning the first error.
    pub fn synchronize_all(&self, exec: &dyn Executor) -> GpuResult<()> {
        let mut first = Ok(());
        for (_, s) in self
            .table
            .iter()
            .filter(|(id, _)| !self.capturing.contains(id))
        {
            let r = exec.stream_synchronize(s.device, s.raw);
            if first.is_ok() {
                first = r;
            }
        }
        for (&device, l) in &self.legacy {
            let r = exec.stream_synchronize(device, l.raw);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
