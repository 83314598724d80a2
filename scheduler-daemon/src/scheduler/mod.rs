//! Scheduling: which queued GPU work the daemon issues now, and which it holds back.
//!
//! The model (`docs/scheduling.md` has the whole story):
//!
//! - Every GPU command a client sends (a launch, a copy, a memset, anything that runs on a
//!   stream) is a [`WorkItem`] of a tenant (session), on one of its streams. Items of one stream
//!   are issued in order; items of different streams are independent.
//! - A [`Scheduler`] per GPU holds the queued items per (tenant, stream) and the items in
//!   flight (issued to the driver, not known to be complete). Whenever something changes (work
//!   arrives, work completes) the caller [`Scheduler::poll`]s it: it shows the [`Policy`] the
//!   head of every stream queue and issues what the policy picks, head by head.
//! - A [`Policy`] is plain synchronous code: `passthrough` (issue everything, what the daemon
//!   did before scheduling), `priority` (strict classes), `fair` (weighted shares of GPU time),
//!   `srpt` (shortest remaining job first, with aging). [`build`] makes the one a config names.
//! - Costs come from an [`Estimator`]: an EWMA of measured durations per kernel and grid.
//! - [`gate::Gate`] wraps a scheduler for session threads that issue their own work (the small
//!   way to wire it), [`completion::Tracker`] turns GPU-written counters into completions with
//!   durations, [`device::DeviceScheduler`] puts both in the daemon's issue path (one per GPU),
//!   and [`sim`] is a simulated GPU that the tests drive policies with.

pub mod completion;
pub mod device;
pub mod estimate;
pub mod fair;
pub mod gate;
pub mod passthrough;
pub mod priority;
pub mod sim;
pub mod srpt;

pub use estimate::{CostKey, Estimator};

use crate::config::{DaemonConfig, PolicyKind, TenantPolicy};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A tenant: the daemon's session id.
pub type TenantId = u64;
/// A stream, as the tenant's session names it.
pub type StreamId = u64;
/// A queued or issued work item, numbered by [`Scheduler::submit`] in submission order.
pub type ItemId = u64;

/// What a work item does on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkKind {
    /// A kernel launch.
    Kernel,
    /// A copy or memset (uses a copy engine or the SMs briefly).
    Copy,
    /// Anything else that occupies a stream position (event record, wait, host function).
    Other,
}

/// What the caller says about work it queues.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Work {
    pub tenant: TenantId,
    pub stream: StreamId,
    /// The tenant's synchronisation epoch: the session bumps it at every synchronising call
    /// (stream/context/event synchronize, a blocking copy). Work with one `job` number is one
    /// "job" for `srpt`.
    pub job: u64,
    pub kind: WorkKind,
    /// What to look up the cost under; `None`: the tenant's average for `kind`.
    pub key: Option<CostKey>,
}

/// A work item as the scheduler and the policies see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkItem {
    pub id: ItemId,
    pub tenant: TenantId,
    pub stream: StreamId,
    pub job: u64,
    pub kind: WorkKind,
    pub key: Option<CostKey>,
    /// Estimated GPU time, from the [`Estimator`]: as of submission in
    /// [`Policy::on_submit`], refreshed whenever the item is shown to [`Policy::pick`] (the
    /// estimate an item is issued with is the one its in-flight load counts).
    pub est: Duration,
    /// When it was submitted.
    pub submitted: Instant,
    /// When it became the head of its stream's queue (ready to issue).
    pub ready_at: Instant,
    /// When it was issued; `None` while queued.
    pub issued: Option<Instant>,
}

/// Items and estimated GPU time, in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub items: usize,
    pub est: Duration,
}

impl Load {
    fn add(&mut self, est: Duration) {
        self.items += 1;
        self.est += est;
    }
    fn sub(&mut self, est: Duration) {
        self.items -= 1;
        self.est = self.est.saturating_sub(est);
    }
}

/// What is in flight on the GPU: issued and not yet reported complete.
#[derive(Debug, Default)]
pub struct InFlight {
    items: BTreeMap<ItemId, WorkItem>,
    tenants: HashMap<TenantId, Load>,
    total: Load,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// All items in flight.
    pub fn total(&self) -> Load {
        self.total
    }
    /// One tenant's items in flight.
    pub fn tenant(&self, t: TenantId) -> Load {
        self.tenants.get(&t).copied().unwrap_or_default()
    }
    /// In issue order (item ids grow with submission, and a stream issues in order).
    pub fn iter(&self) -> impl Iterator<Item = &WorkItem> {
        self.items.values()
    }
    pub fn get(&self, id: ItemId) -> Option<&WorkItem> {
        self.items.get(&id)
    }

    fn insert(&mut self, item: WorkItem) {
        self.total.add(item.est);
        self.tenants.entry(item.tenant).or_default().add(item.est);
        self.items.insert(item.id, item);
    }

    fn remove(&mut self, id: ItemId) -> Option<WorkItem> {
        let item = self.items.remove(&id)?;
        self.total.sub(item.est);
        if let Some(l) = self.tenants.get_mut(&item.tenant) {
            l.sub(item.est);
            if l.items == 0 {
                self.tenants.remove(&item.tenant);
            }
        }
        Some(item)
    }
}

/// A scheduling policy: decides which ready stream heads to issue. Plain synchronous code,
/// called with the scheduler's lock held; no threads, no clocks of its own (time is `now`).
pub trait Policy: Send {
    fn name(&self) -> &'static str;

    /// A tenant connected (before any of its work), with what the config gives it.
    fn add_tenant(&mut self, _tenant: TenantId, _policy: &TenantPolicy) {}

    /// A tenant went away; its queued and in-flight items are gone without further calls.
    fn remove_tenant(&mut self, _tenant: TenantId) {}

    /// Work was queued (behind earlier work of its stream, or at the head of an empty queue).
    fn on_submit(&mut self, _now: Instant, _item: &WorkItem) {}

    /// Queued work was withdrawn without being issued.
    fn on_withdraw(&mut self, _now: Instant, _item: &WorkItem) {}

    /// Work issued earlier is complete; `gpu_time` is its measured duration, if known.
    fn on_complete(&mut self, _now: Instant, _item: &WorkItem, _gpu_time: Option<Duration>) {}

    /// Whether [`Policy::pick`] could pick anything with `in_flight` as it is (`false` only
    /// when it certainly would not, e.g. a full window). The scheduler asks before it gathers
    /// the ready heads, so that a decision while the window is full costs nothing; saying
    /// `true` is always correct.
    fn has_room(&self, _in_flight: &InFlight) -> bool {
        true
    }

    /// Whether `tenant`'s work should go on high-priority streams now (see `srpt`'s short
    /// jobs). Asked by the daemon before each gated item; policies without lanes say no.
    fn fast_lane(&self, _tenant: TenantId) -> bool {
        false
    }

    /// A number that changes whenever the set of tenants [`Policy::fast_lane`] says yes for
    /// does, so that callers can keep a copy of it and refresh that only then.
    fn fast_version(&self) -> u64 {
        0
    }

    /// Every tenant [`Policy::fast_lane`] says yes for.
    fn fast_tenants(&self) -> Vec<TenantId> {
        Vec::new()
    }

    /// A job of a fast-lane tenant finished, taking `took` from its first issue to the end of
    /// its synchronisation (such jobs bypass the queues, so their items are never seen).
    fn on_fast_job(&mut self, _tenant: TenantId, _took: Duration) {}

    /// Pushes onto `out` the indices into `ready` to issue now, in the order to issue them.
    /// `ready` holds the head of every non-empty stream queue; the scheduler calls again after
    /// issuing (the next items become heads) until a call picks nothing.
    fn pick(
        &mut self,
        now: Instant,
        ready: &[WorkItem],
        in_flight: &InFlight,
        out: &mut Vec<usize>,
    );
}

/// The policy that `cfg` names.
pub fn build(cfg: &DaemonConfig) -> Box<dyn Policy> {
    match cfg.policy {
        PolicyKind::Passthrough => Box::new(passthrough::Passthrough),
        PolicyKind::Priority => {
            Box::new(priority::Priority::new(cfg.issue_window, cfg.low_in_flight))
        }
        PolicyKind::Fair => Box::new(fair::Fair::new(cfg.issue_window)),
        PolicyKind::Srpt => Box::new(
            srpt::Srpt::new(cfg.issue_window, cfg.srpt_fairness)
                .with_short_jobs(cfg.srpt_short_job),
        ),
    }
}

struct Queued<T> {
    item: WorkItem,
    payload: T,
}

/// The queues, the in-flight set and the estimator of one GPU, driving one [`Policy`].
///
/// `T` is whatever the caller needs back to issue an item (a decoded command, or `()` when the
/// caller issues it itself, as [`gate::Gate`] does).
pub struct Scheduler<T = ()> {
    policy: Box<dyn Policy>,
    queues: BTreeMap<(TenantId, StreamId), VecDeque<Queued<T>>>,
    in_flight: InFlight,
    estimator: Estimator,
    next_id: ItemId,
    queued: usize,
    heads: Vec<WorkItem>,
    keys: Vec<(TenantId, StreamId)>,
    picks: Vec<usize>,
    taken: Vec<bool>,
}

impl<T> Scheduler<T> {
    pub fn new(policy: Box<dyn Policy>) -> Self {
        Scheduler {
            policy,
            queues: BTreeMap::new(),
            in_flight: InFlight::default(),
            estimator: Estimator::default(),
            next_id: 1,
            queued: 0,
            heads: Vec::new(),
            keys: Vec::new(),
            picks: Vec::new(),
            taken: Vec::new(),
        }
    }

    /// A scheduler running the policy `cfg` names.
    pub fn from_config(cfg: &DaemonConfig) -> Self {
        Self::new(build(cfg))
    }

    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Whether the policy wants `tenant`'s next work on high-priority streams.
    pub fn fast_lane(&self, tenant: TenantId) -> bool {
        self.policy.fast_lane(tenant)
    }

    /// See [`Policy::fast_version`].
    pub fn fast_version(&self) -> u64 {
        self.policy.fast_version()
    }

    /// See [`Policy::fast_tenants`].
    pub fn fast_tenants(&self) -> Vec<TenantId> {
        self.policy.fast_tenants()
    }

    /// See [`Policy::on_fast_job`].
    pub fn fast_job(&mut self, tenant: TenantId, took: Duration) {
        self.policy.on_fast_job(tenant, took);
    }

    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Items queued and not issued.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// One tenant's items queued and not issued.
    pub fn queued_of(&self, tenant: TenantId) -> usize {
        self.queues
            .range((tenant, 0)..=(tenant, StreamId::MAX))
            .map(|(_, q)| q.len())
            .sum()
    }

    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    pub fn add_tenant(&mut self, tenant: TenantId, policy: &TenantPolicy) {
        self.policy.add_tenant(tenant, policy);
    }

    /// Forgets a tenant: drops its queued items (returning their payloads), its in-flight items
    /// (call this after the session has synchronised its streams) and its cost estimates.
    pub fn remove_tenant(&mut self, tenant: TenantId) -> Vec<T> {
        let keys: Vec<_> = self
            .queues
            .range((tenant, 0)..=(tenant, StreamId::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut dropped = Vec::new();
        for k in keys {
            if let Some(q) = self.queues.remove(&k) {
                self.queued -= q.len();
                dropped.extend(q.into_iter().map(|e| e.payload));
            }
        }
        let ids: Vec<ItemId> = self
            .in_flight
            .iter()
            .filter(|i| i.tenant == tenant)
            .map(|i| i.id)
            .collect();
        for id in ids {
            self.in_flight.remove(id);
        }
        self.estimator.forget(tenant);
        self.policy.remove_tenant(tenant);
        dropped
    }

    /// Queues work behind earlier work of its stream; returns its id. Nothing is issued until
    /// the next [`Scheduler::poll`].
    pub fn submit(&mut self, now: Instant, work: Work, payload: T) -> ItemId {
        let id = self.next_id;
        self.next_id += 1;
        let item = WorkItem {
            id,
            tenant: work.tenant,
            stream: work.stream,
            job: work.job,
            kind: work.kind,
            key: work.key,
            est: self.estimator.estimate(work.tenant, work.kind, work.key),
            submitted: now,
            ready_at: now,
            issued: None,
        };
        self.policy.on_submit(now, &item);
        self.queues
            .entry((work.tenant, work.stream))
            .or_default()
            .push_back(Queued { item, payload });
        self.queued += 1;
        id
    }

    /// Withdraws a queued item that was not issued (e.g. its client died while it waited).
    /// Later items of its stream stay queued.
    pub fn withdraw(&mut self, now: Instant, id: ItemId) -> Option<T> {
        let key = self
            .queues
            .iter()
            .find(|(_, q)| q.iter().any(|e| e.item.id == id))
            .map(|(k, _)| *k)?;
        let q = self.queues.get_mut(&key)?;
        let pos = q.iter().position(|e| e.item.id == id)?;
        let e = q.remove(pos)?;
        if pos == 0 {
            if let Some(next) = q.front_mut() {
                next.item.ready_at = now;
            }
        }
        if q.is_empty() {
            self.queues.remove(&key);
        }
        self.queued -= 1;
        self.policy.on_withdraw(now, &e.item);
        Some(e.payload)
    }

    /// Asks the policy what to issue now and moves it to the in-flight set; the caller must
    /// issue what is appended to `out`, in that order.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(WorkItem, T)>) {
        loop {
            if self.queued == 0 || !self.policy.has_room(&self.in_flight) {
                return;
            }
            self.heads.clear();
            self.keys.clear();
            for (k, q) in self.queues.iter_mut() {
                if let Some(e) = q.front_mut() {
                    // Refresh the estimate: the same kernel may have been measured since.
                    let i = &mut e.item;
                    i.est = self.estimator.estimate(i.tenant, i.kind, i.key);
                    self.heads.push(*i);
                    self.keys.push(*k);
                }
            }
            if self.heads.is_empty() {
                return;
            }
            self.picks.clear();
            self.policy
                .pick(now, &self.heads, &self.in_flight, &mut self.picks);
            self.taken.clear();
            self.taken.resize(self.heads.len(), false);
            let mut issued = 0;
            for &i in &self.picks {
                if i >= self.heads.len() || self.taken[i] {
                    debug_assert!(
                        false,
                        "policy {} picked {i} twice or out of range",
                        self.policy.name()
                    );
                    continue;
                }
                self.taken[i] = true;
                let key = self.keys[i];
                let Some(q) = self.queues.get_mut(&key) else {
                    continue;
                };
                let Some(Queued { mut item, payload }) = q.pop_front() else {
                    continue;
                };
                if let Some(next) = q.front_mut() {
                    next.item.ready_at = now;
                }
                if q.is_empty() {
                    self.queues.remove(&key);
                }
                self.queued -= 1;
                item.issued = Some(now);
                self.in_flight.insert(item);
                out.push((item, payload));
                issued += 1;
            }
            if issued == 0 {
                return;
            }
        }
    }

    /// Reports an issued item complete, with its measured GPU time if known (which also
    /// teaches the estimator). Returns the item, or `None` if it is not in flight.
    pub fn complete(
        &mut self,
        now: Instant,
        id: ItemId,
        gpu_time: Option<Duration>,
    ) -> Option<WorkItem> {
        let item = self.in_flight.remove(id)?;
        if let Some(t) = gpu_time {
            self.estimator.record(item.tenant, item.kind, item.key, t);
        }
        self.policy.on_complete(now, &item, gpu_time);
        Some(item)
    }
}

/// A kernel launch of job 0 with no cost key: the work item the policy tests submit.
#[cfg(test)]
pub(crate) fn test_work(tenant: TenantId, stream: StreamId) -> Work {
    Work {
        tenant,
        stream,
        job: 0,
        kind: WorkKind::Kernel,
        key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(tenant: TenantId, stream: StreamId) -> Work {
        test_work(tenant, stream)
    }

    /// Picks only the first ready head each time.
    struct OneAtATime;
    impl Policy for OneAtATime {
        fn name(&self) -> &'static str {
            "one"
        }
        fn pick(&mut self, _: Instant, ready: &[WorkItem], f: &InFlight, out: &mut Vec<usize>) {
            if f.is_empty() && !ready.is_empty() {
                out.push(0);
            }
        }
    }

    #[test]
    fn streams_issue_in_order_and_complete() {
        let t0 = Instant::now();
        let mut s: Scheduler<&str> = Scheduler::new(Box::new(OneAtATime));
        let a = s.submit(t0, work(1, 7), "a");
        let b = s.submit(t0, work(1, 7), "b");
        assert_eq!(s.queued(), 2);
        assert_eq!((s.queued_of(1), s.queued_of(2)), (2, 0));
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.id, out[0].1), (a, "a"));
        assert_eq!(out[0].0.issued, Some(t0));
        assert_eq!(s.in_flight().len(), 1);
        assert_eq!(s.in_flight().tenant(1).items, 1);
        out.clear();
        s.poll(t0, &mut out);
        assert!(out.is_empty(), "one at a time");
        let t1 = t0 + Duration::from_micros(50);
        let done = s.complete(t1, a, Some(Duration::from_micros(40))).unwrap();
        assert_eq!(done.id, a);
        assert!(s.complete(t1, a, None).is_none());
        s.poll(t1, &mut out);
        assert_eq!(out[0].1, "b");
        assert_eq!(out[0].0.id, b);
        assert_eq!(out[0].0.ready_at, t0, "b became head when a was issued");
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn remove_tenant_drops_its_work_only() {
        let t0 = Instant::now();
        let mut s: Scheduler<u32> = Scheduler::new(Box::new(passthrough::Passthrough));
        s.submit(t0, work(1, 1), 10);
        s.submit(t0, work(2, 1), 20);
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 2);
        s.submit(t0, work(1, 2), 11);
        s.submit(t0, work(1, 2), 12);
        let mut dropped = s.remove_tenant(1);
        dropped.sort();
        assert_eq!(dropped, vec![11, 12]);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.in_flight().len(), 1);
        assert_eq!(s.in_flight().tenant(2).items, 1);
    }

    #[test]
    fn withdraw_keeps_the_rest_of_the_stream() {
        let t0 = Instant::now();
        let mut s: Scheduler<u32> = Scheduler::new(Box::new(OneAtATime));
        let a = s.submit(t0, work(1, 1), 1);
        let _b = s.submit(t0, work(1, 1), 2);
        let t1 = t0 + Duration::from_micros(5);
        assert_eq!(s.withdraw(t1, a), Some(1));
        assert_eq!(s.withdraw(t1, a), None);
        let mut out = Vec::new();
        s.poll(t1, &mut out);
        assert_eq!(out[0].1, 2);
        assert_eq!(out[0].0.ready_at, t1);
    }

    #[test]
    fn estimates_come_from_measurements() {
        let t0 = Instant::now();
        let mut s: Scheduler = Scheduler::new(Box::new(passthrough::Passthrough));
        let key = CostKey::kernel(3, [64, 1, 1]);
        let w = Work {
            key: Some(key),
            ..work(1, 1)
        };
        let a = s.submit(t0, w, ());
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out[0].0.est, estimate::DEFAULT_COST);
        s.complete(t0, a, Some(Duration::from_micros(700)));
        s.submit(t0, w, ());
        out.clear();
        s.poll(t0, &mut out);
        assert_eq!(out[0].0.est, Duration::from_micros(700));
    }

    #[test]
    fn build_follows_the_config() {
        for p in PolicyKind::ALL {
            let cfg = DaemonConfig {
                policy: p,
                ..Default::default()
            };
            assert_eq!(build(&cfg).name(), p.name());
        }
    }
}
