//! `srpt`: shortest remaining job first, with aging.
//!
//! A *job* is the work a tenant submits between two of its synchronising calls (the `job`
//! number of [`Work`](super::Work)): for an inference server that synchronises once per request,
//! one request. A job's *remaining work* is the estimated GPU time of its items not yet issued;
//! while the job is still open (the tenant has not synchronised since), it is at least the
//! tenant's typical job size (an EWMA of its past jobs) minus what the job has issued so far, so
//! a job is known to be long before all of its work has arrived.
//!
//! The scheduler keeps at most `window` of estimated GPU time in flight (at least one item);
//! whenever there is room it issues the ready head whose job has the smallest
//! `remaining - credit`. A job earns credit at `fairness` seconds per second while it has work
//! ready and not issued, and spends its items' estimates when they are issued (credit never goes
//! below zero). So:
//!
//! - `fairness = 0` is pure SRPT: the shortest job always goes first, and a long job waits for
//!   as long as shorter work keeps the window full.
//! - With `fairness = f > 0`, a job with remaining work `R` beats fresh work after waiting about
//!   `R / f`; and a job that keeps losing to an endless supply of shorter work still gets about
//!   `f / (1 + f)` of the issued GPU time (it earns `f` per unit of waiting, spends 1 per unit
//!   issued). `f = 0.5`: a third.
//! - Large `f` tends to first-come-first-served.
//!
//! **Short jobs.** A tenant's *own* job size is the smallest of its latest 16 jobs
//! ([`RecentMin`]): a job measured on a busy GPU includes waiting behind other tenants' blocks,
//! which only ever makes it look longer, and an average of such measurements swings with the
//! load (on the H100 a tiny model's average crossed the limit and back dozens of times a
//! second at the highest loads, and every crossing sent its requests through the queues). A
//! tenant whose own job needs at most `short_job` of GPU time (a small model answering
//! requests), or is below the first big gap among the tenants' own job sizes (sorted, the first
//! step where one is at least four times the one before), is *short*. A short tenant stays
//! short until its jobs pass twice the limit and half that ratio, so it does not flip at the
//! boundary; one whose jobs really grow leaves after 16 of them. Short tenants' work has its own window, beside the
//! window of everyone else's, and [`Policy::fast_lane`] says yes for them, so the daemon issues
//! it on high-priority streams. Order in the window only decides what is issued; once a long
//! kernel is on the GPU its pending blocks would still start before a newly issued short
//! kernel's. With its own window and a higher stream priority, a short job waits for neither
//! the long work already issued nor the blocks of it still pending: only for the blocks running.
//! The short tenants' window counts items, not estimated time (`SHORT_IN_FLIGHT`), so a short
//! job's kernels never wait for each other; it bounds only a tenant that floods.

use super::estimate::{Ewma, RecentMin};
use super::{InFlight, ItemId, Policy, TenantId, WorkItem};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Weight of a finished job's size in the tenant's typical job size.
const HISTORY_ALPHA: f64 = 0.25;
/// Items short tenants may have in flight together. Not an estimate of GPU time: a short
/// tenant's items must not wait for each other's completions (each wait costs a completion poll,
/// and for a tiny model that doubles its service time), and estimates measured on a busy GPU
/// are inflated by queueing anyway. This only bounds a tenant that floods with tiny jobs.
const SHORT_IN_FLIGHT: usize = 256;
/// A tenant becomes short when its typical job is at most this fraction of the others' median;
/// a short one stays short up to twice the fraction.
const SHORT_RATIO: f64 = 0.25;
/// Finished jobs a tenant needs before it is judged: a model's first calls (warm-up, small
/// set-up copies) say little about its requests.
const JUDGED_AFTER: usize = 4;

#[derive(Default)]
struct Tenant {
    /// The job the tenant is submitting to now.
    current: Option<u64>,
    /// Sizes of its finished jobs (seconds of estimated GPU time): the typical size, for the
    /// remaining work of an open job...
    history: Ewma,
    /// ...and its own size, for judging it short (module documentation).
    own: RecentMin,
}

impl Tenant {
    fn finished_job(&mut self, size: f64) {
        self.history.update(size, HISTORY_ALPHA);
        self.own.update(size);
    }
}

#[derive(Default)]
struct Job {
    /// Estimated seconds of queued (not issued) work, and how many items.
    queued: f64,
    queued_items: usize,
    /// Estimated seconds issued so far.
    issued: f64,
    flying: usize,
    /// Seconds of credit earned by waiting.
    credit: f64,
    accrued_to: Option<Instant>,
    /// The tenant has moved on to a later job: no more work will arrive for this one.
    closed: bool,
}

impl Job {
    fn finished(&self) -> bool {
        self.closed && self.flying == 0 && self.queued_items == 0
    }
}

pub struct Srpt {
    window: Duration,
    fairness: f64,
    /// Tenants whose typical job is at most this long are short (module documentation).
    short_job: Option<Duration>,
    /// Tenants judged short now (recomputed when a job finishes or a tenant leaves).
    short: HashSet<TenantId>,
    /// Bumped whenever `short` changes.
    short_version: u64,
    tenants: HashMap<TenantId, Tenant>,
    jobs: HashMap<(TenantId, u64), Job>,
    /// What each queued item added to its job's `queued` (its estimate at submission).
    queued_est: HashMap<ItemId, (TenantId, f64)>,
}

impl Srpt {
    /// `window`: estimated GPU time kept in flight; `fairness`: see the module documentation.
    pub fn new(window: Duration, fairness: f64) -> Srpt {
        Srpt {
            window,
            fairness: if fairness.is_finite() {
                fairness.max(0.0)
            } else {
                0.0
            },
            short_job: None,
            short: HashSet::new(),
            short_version: 0,
            tenants: HashMap::new(),
            jobs: HashMap::new(),
            queued_est: HashMap::new(),
        }
    }

    /// Gives tenants whose typical job needs at most `short_job` their own window and the fast
    /// lane; `None`: one window for everyone, no fast lane.
    pub fn with_short_jobs(mut self, short_job: Option<Duration>) -> Srpt {
        self.short_job = short_job;
        self
    }

    /// Whether `tenant` is short (module documentation).
    pub fn is_short(&self, tenant: TenantId) -> bool {
        self.short.contains(&tenant)
    }

    /// Judges every tenant with finished jobs again.
    fn reclassify(&mut self) {
        let Some(limit) = self.short_job.map(|d| d.as_secs_f64()) else {
            return;
        };
        let mut sizes: Vec<(TenantId, f64)> = self
            .tenants
            .iter()
            .filter(|(_, x)| x.own.samples() >= JUDGED_AFTER)
            .filter_map(|(&t, x)| Some((t, x.own.min()?)))
            .collect();
        sizes.sort_by(|a, b| a.1.total_cmp(&b.1));
        // The first typical size past the first big gap (one size at least 1 / SHORT_RATIO times
        // the one before): the tenants below the gap are the small ones.
        let cut = sizes
            .windows(2)
            .find(|w| w[0].1 <= SHORT_RATIO * w[1].1)
            .map(|w| w[1].1);
        for &(t, m) in &sizes {
            let (abs, ratio) = if self.short.contains(&t) {
                (2.0 * limit, 2.0 * SHORT_RATIO)
            } else {
                (limit, SHORT_RATIO)
            };
            let changed = if m <= abs || cut.is_some_and(|c| m <= ratio * c) {
                self.short.insert(t)
            } else {
                self.short.remove(&t)
            };
            self.short_version += changed as u64;
        }
    }

    /// The remaining estimated work of a tenant's job, as the policy sees it now.
    pub fn remaining(&self, tenant: TenantId, job: u64) -> Option<Duration> {
        let j = self.jobs.get(&(tenant, job))?;
        Some(Duration::from_secs_f64(self.remaining_of(tenant, j)))
    }

    fn remaining_of(&self, tenant: TenantId, j: &Job) -> f64 {
        let typical = if j.closed {
            None
        } else {
            self.tenants.get(&tenant).and_then(|t| t.history.mean())
        };
        match typical {
            Some(h) => j.queued.max(h - j.issued),
            None => j.queued,
        }
    }

    fn drop_if_finished(&mut self, key: (TenantId, u64)) {
        if self.jobs.get(&key).is_some_and(Job::finished) {
            self.jobs.remove(&key);
        }
    }
}

impl Policy for Srpt {
    fn name(&self) -> &'static str {
        "srpt"
    }

    fn remove_tenant(&mut self, tenant: TenantId) {
        self.tenants.remove(&tenant);
        self.short_version += self.short.remove(&tenant) as u64;
        self.reclassify();
        self.jobs.retain(|(t, _), _| *t != tenant);
        self.queued_est.retain(|_, (t, _)| *t != tenant);
    }

    fn on_submit(&mut self, _: Instant, item: &WorkItem) {
        let t = self.tenants.entry(item.tenant).or_default();
        if t.current != Some(item.job) {
            let prev = t.current.replace(item.job);
            if let Some(prev) = prev {
                let key = (item.tenant, prev);
                if let Some(j) = self.jobs.get_mut(&key) {
                    j.closed = true;
                    t.finished_job(j.queued + j.issued);
                }
                self.drop_if_finished(key);
                self.reclassify();
            }
        }
        let est = item.est.as_secs_f64();
        self.queued_est.insert(item.id, (item.tenant, est));
        let j = self.jobs.entry((item.tenant, item.job)).or_default();
        j.queued += est;
        j.queued_items += 1;
    }

    fn on_withdraw(&mut self, _: Instant, item: &WorkItem) {
        let key = (item.tenant, item.job);
        let est = self.queued_est.remove(&item.id).map_or(0.0, |e| e.1);
        if let Some(j) = self.jobs.get_mut(&key) {
            j.queued = (j.queued - est).max(0.0);
            j.queued_items = j.queued_items.saturating_sub(1);
        }
        self.drop_if_finished(key);
    }

    fn fast_lane(&self, tenant: TenantId) -> bool {
        self.is_short(tenant)
    }

    /// With no short tenant, only the one window can have room. (Waiting work's credit is
    /// accrued from when it was last seen, so a pick left out loses none.)
    fn has_room(&self, in_flight: &InFlight) -> bool {
        !self.short.is_empty() || in_flight.is_empty() || in_flight.total().est < self.window
    }

    fn fast_version(&self) -> u64 {
        self.short_version
    }

    fn fast_tenants(&self) -> Vec<TenantId> {
        self.short.iter().copied().collect()
    }

    fn on_fast_job(&mut self, tenant: TenantId, took: Duration) {
        self.tenants
            .entry(tenant)
            .or_default()
            .finished_job(took.as_secs_f64());
        self.reclassify();
    }

    fn on_complete(&mut self, _: Instant, item: &WorkItem, _: Option<Duration>) {
        let key = (item.tenant, item.job);
        if let Some(j) = self.jobs.get_mut(&key) {
            j.flying = j.flying.saturating_sub(1);
        }
        self.drop_if_finished(key);
    }

    fn pick(
        &mut self,
        now: Instant,
        ready: &[WorkItem],
        in_flight: &InFlight,
        out: &mut Vec<usize>,
    ) {
        // Short tenants' in-flight work, and everyone else's: each has a window.
        let mut short = (0usize, Duration::ZERO);
        if self.short_job.is_some() {
            for &t in self.tenants.keys().filter(|&&t| self.is_short(t)) {
                let l = in_flight.tenant(t);
                short = (short.0 + l.items, short.1 + l.est);
            }
        }
        let total = in_flight.total();
        let long = (total.items - short.0, total.est.saturating_sub(short.1));
        let room = |(items, est): (usize, Duration)| items == 0 || est < self.window;
        let (short_room, long_room) = (short.0 < SHORT_IN_FLIGHT, room(long));
        if !short_room && !long_room {
            return;
        }
        let mut best: Option<(f64, Instant, ItemId, usize)> = None;
        for (i, item) in ready.iter().enumerate() {
            let has_room = if self.is_short(item.tenant) {
                short_room
            } else {
                long_room
            };
            if !has_room {
                continue;
            }
            let key = (item.tenant, item.job);
            let mut j = self.jobs.remove(&key).unwrap_or_default();
            let from = j.accrued_to.map_or(item.ready_at, |a| a.max(item.ready_at));
            if now > from {
                j.credit += self.fairness * (now - from).as_secs_f64();
            }
            j.accrued_to = Some(now);
            let score = self.remaining_of(item.tenant, &j) - j.credit;
            self.jobs.insert(key, j);
            let k = (score, item.ready_at, item.id, i);
            let better = match &best {
                None => true,
                Some(b) => (k.0, k.1, k.2) < (b.0, b.1, b.2),
            };
            if better {
                best = Some(k);
            }
        }
        let Some((_, _, _, i)) = best else {
            return;
        };
        let item = &ready[i];
        let est = item.est.as_secs_f64();
        let queued_est = self.queued_est.remove(&item.id).map_or(0.0, |e| e.1);
        let j = self.jobs.entry((item.tenant, item.job)).or_default();
        j.queued = (j.queued - queued_est).max(0.0);
        j.queued_items = j.queued_items.saturating_sub(1);
        j.issued += est;
        j.flying += 1;
        j.credit = (j.credit - est).max(0.0);
        out.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, Work, WorkKind};
    use super::*;

    fn work(tenant: TenantId, job: u64) -> Work {
        Work {
            tenant,
            stream: 0,
            job,
            kind: WorkKind::Kernel,
            key: None,
        }
    }

    #[test]
    fn shorter_job_goes_first() {
        let t0 = Instant::now();
        let mut s: Scheduler = Scheduler::new(Box::new(Srpt::new(Duration::from_micros(1), 0.0)));
        for _ in 0..10 {
            s.submit(t0, work(1, 0), ());
        }
        s.submit(t0, work(2, 0), ());
        s.submit(t0, work(2, 0), ());
        let mut out = Vec::new();
        let mut order = Vec::new();
        let mut now = t0;
        for _ in 0..12 {
            out.clear();
            s.poll(now, &mut out);
            order.push(out[0].0.tenant);
            now += Duration::from_micros(100);
            s.complete(now, out[0].0.id, None);
        }
        assert_eq!(&order[..2], &[2, 2], "{order:?}");
    }

    fn item(id: ItemId, tenant: TenantId, job: u64, t0: Instant) -> WorkItem {
        WorkItem {
            id,
            tenant,
            stream: 0,
            job,
            kind: WorkKind::Kernel,
            key: None,
            est: Duration::from_micros(100),
            submitted: t0,
            ready_at: t0,
            issued: None,
        }
    }

    #[test]
    fn history_marks_a_tenant_with_long_jobs() {
        let t0 = Instant::now();
        let mut p = Srpt::new(Duration::from_micros(1), 0.0);
        // Tenant 1 ran a job of 50 items; its next job has 1 item so far.
        for id in 0..50 {
            p.on_submit(t0, &item(id, 1, 0, t0));
        }
        p.on_submit(t0, &item(50, 1, 1, t0));
        assert_eq!(p.remaining(1, 0), Some(Duration::from_micros(5000)));
        assert_eq!(p.remaining(1, 1), Some(Duration::from_micros(5000)));
        // A tenant without history: only what it queued.
        p.on_submit(t0, &item(51, 2, 0, t0));
        assert_eq!(p.remaining(2, 0), Some(Duration::from_micros(100)));
    }

    #[test]
    fn aging_lets_a_long_job_through() {
        let t0 = Instant::now();
        let mut s: Scheduler = Scheduler::new(Box::new(Srpt::new(Duration::from_micros(1), 1.0)));
        // A long job of 20 items (2 ms) against single-item jobs that keep coming.
        for _ in 0..20 {
            s.submit(t0, work(1, 0), ());
        }
        let mut now = t0;
        let mut out = Vec::new();
        let mut first_long = None;
        for n in 0..100u64 {
            s.submit(now, work(2, n), ());
            out.clear();
            s.poll(now, &mut out);
            if out[0].0.tenant == 1 && first_long.is_none() {
                first_long = Some(n);
            }
            now += Duration::from_micros(100);
            s.complete(now, out[0].0.id, None);
        }
        // Remaining 2 ms at fairness 1: it wins after about 2 ms of waiting, 20 items.
        let n = first_long.expect("the long job ran");
        assert!((15..=25).contains(&n), "{n}");
    }

    #[test]
    fn short_tenants_are_the_ones_below_the_first_big_gap() {
        let t0 = Instant::now();
        // Items are estimated at 100 us; `jobs[t]` items per job for tenant t.
        let judge = |limit_us: u64, jobs: &[u64]| -> Vec<bool> {
            let mut p = Srpt::new(Duration::from_millis(1), 0.5)
                .with_short_jobs(Some(Duration::from_micros(limit_us)));
            let mut id = 0;
            for (t, &n) in jobs.iter().enumerate() {
                // JUDGED_AFTER jobs, then the first item of the next closes the last.
                for job in 0..=JUDGED_AFTER as u64 {
                    for _ in 0..if job < JUDGED_AFTER as u64 { n } else { 1 } {
                        p.on_submit(t0, &item(id, t as u64, job, t0));
                        id += 1;
                    }
                }
            }
            (0..jobs.len() as u64).map(|t| p.fast_lane(t)).collect()
        };
        // Under the absolute limit (1 ms = 10 items).
        assert_eq!(judge(1000, &[2, 9, 11]), [true, true, false]);
        // Above it, but far below the rest (0.5 ms vs 3 and 24 ms): only the smallest.
        assert_eq!(judge(100, &[5, 30, 240]), [true, false, false]);
        // No big gap: nobody.
        assert_eq!(judge(100, &[5, 10, 20]), [false, false, false]);
        // Off.
        let mut p = Srpt::new(Duration::from_millis(1), 0.5);
        p.on_submit(t0, &item(0, 0, 0, t0));
        p.on_submit(t0, &item(1, 0, 1, t0));
        assert!(!p.fast_lane(0));
    }

    #[test]
    fn a_fast_lane_tenant_is_judged_by_its_reported_jobs() {
        let t0 = Instant::now();
        let mut p = Srpt::new(Duration::from_millis(1), 0.5)
            .with_short_jobs(Some(Duration::from_millis(1)));
        for _ in 0..JUDGED_AFTER - 1 {
            p.on_fast_job(1, Duration::from_micros(200));
        }
        assert!(!p.fast_lane(1), "not judged yet");
        p.on_fast_job(1, Duration::from_micros(200));
        assert!(p.fast_lane(1));
        // Slow runs among fast ones (waiting behind other tenants) do not move it.
        for _ in 0..40 {
            p.on_fast_job(1, Duration::from_millis(10));
            p.on_fast_job(1, Duration::from_millis(10));
            p.on_fast_job(1, Duration::from_micros(300));
            assert!(p.fast_lane(1));
        }
        // Jobs that all got long do: after 16 of them it leaves the lane.
        for _ in 0..15 {
            p.on_fast_job(1, Duration::from_millis(10));
        }
        assert!(p.fast_lane(1));
        p.on_fast_job(1, Duration::from_millis(10));
        assert!(!p.fast_lane(1));
        // A tenant seen only through its items is unaffected.
        p.on_submit(t0, &item(0, 2, 0, t0));
        assert!(!p.fast_lane(2));
    }
}
