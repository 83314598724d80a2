//! `fair`: weighted fair shares of GPU time, by start-time fair queuing on virtual time.
//!
//! Each tenant has a virtual-time tag. The scheduler keeps at most `window` of estimated GPU
//! time in flight (at least one item); whenever there is room it issues the ready head of the
//! tenant with the smallest tag, and advances that tag by the item's estimate divided by the
//! tenant's weight. When the item completes, the tag is corrected by the difference between
//! the GPU time the item actually took and its estimate.
//!
//! "GPU time actually taken" is the busy interval the completion closes: from the later of the
//! previous completion (of anyone's work) and the item's issue, to its completion. Every moment
//! the GPU is busy is thus charged to exactly one tenant, and the charges add up to the GPU's
//! busy time, even though concurrently running kernels of several tenants each see a longer
//! elapsed time than they would alone. A tenant that was idle (nothing queued, nothing in
//! flight) restarts at the current virtual time when its next item arrives: idle time is not
//! banked. Judging that on arrival, from counts kept here, rather than from which tenants had
//! work ready at the previous decision, makes a decision cost nothing while the window is full
//! ([`Policy::has_room`]) and only one pass over the ready heads otherwise.

use super::{InFlight, ItemId, Policy, TenantId, WorkItem};
use crate::config::TenantPolicy;
use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Tenant {
    weight: f64,
    /// Virtual time (seconds of GPU time / weight) up to which this tenant has been served.
    tag: f64,
    /// Items queued (submitted, not issued) and in flight.
    queued: usize,
    flying: usize,
}

pub struct Fair {
    window: Duration,
    tenants: HashMap<TenantId, Tenant>,
    /// Start tag of the last item issued: tenants that return from idle start here.
    vtime: f64,
    last_completion: Option<Instant>,
    /// What each in-flight item was charged at issue (seconds of GPU time).
    charged: HashMap<ItemId, (TenantId, f64)>,
}

impl Fair {
    /// `window`: estimated GPU time kept in flight.
    pub fn new(window: Duration) -> Fair {
        Fair {
            window,
            tenants: HashMap::new(),
            vtime: 0.0,
            last_completion: None,
            charged: HashMap::new(),
        }
    }

    fn tenant(&mut self, t: TenantId) -> &mut Tenant {
        let v = self.vtime;
        self.tenants.entry(t).or_insert(Tenant {
            weight: 1.0,
            tag: v,
            queued: 0,
            flying: 0,
        })
    }

    /// A tenant's virtual time (for tests and status).
    pub fn tag(&self, t: TenantId) -> Option<f64> {
        self.tenants.get(&t).map(|x| x.tag)
    }
}

impl Policy for Fair {
    fn name(&self) -> &'static str {
        "fair"
    }

    fn add_tenant(&mut self, tenant: TenantId, policy: &TenantPolicy) {
        let v = self.vtime;
        let weight = if policy.weight > 0.0 && policy.weight.is_finite() {
            policy.weight
        } else {
            1.0
        };
        self.tenants.insert(
            tenant,
            Tenant {
                weight,
                tag: v,
                queued: 0,
                flying: 0,
            },
        );
    }

    fn remove_tenant(&mut self, tenant: TenantId) {
        self.tenants.remove(&tenant);
        self.charged.retain(|_, (t, _)| *t != tenant);
    }

    fn on_submit(&mut self, _: Instant, item: &WorkItem) {
        let vtime = self.vtime;
        let t = self.tenant(item.tenant);
        // Back from idle: it restarts at the current virtual time. A backlogged tenant keeps
        // its tag, refunds included.
        if t.queued == 0 && t.flying == 0 {
            t.tag = t.tag.max(vtime);
        }
        t.queued += 1;
    }

    fn on_withdraw(&mut self, _: Instant, item: &WorkItem) {
        if let Some(t) = self.tenants.get_mut(&item.tenant) {
            t.queued = t.queued.saturating_sub(1);
        }
    }

    fn has_room(&self, in_flight: &InFlight) -> bool {
        in_flight.is_empty() || in_flight.total().est < self.window
    }

    fn on_complete(&mut self, now: Instant, item: &WorkItem, _: Option<Duration>) {
        let start = match (self.last_completion, item.issued) {
            (Some(l), Some(i)) => l.max(i),
            (Some(l), None) => l,
            (None, Some(i)) => i,
            (None, None) => now,
        };
        let actual = now.saturating_duration_since(start).as_secs_f64();
        self.last_completion = Some(self.last_completion.map_or(now, |l| l.max(now)));
        let Some((_, charged)) = self.charged.remove(&item.id) else {
            return;
        };
        if let Some(t) = self.tenants.get_mut(&item.tenant) {
            t.tag += (actual - charged) / t.weight;
            t.flying = t.flying.saturating_sub(1);
        }
    }

    fn pick(&mut self, _: Instant, ready: &[WorkItem], in_flight: &InFlight, out: &mut Vec<usize>) {
        if !self.has_room(in_flight) {
            return;
        }
        let mut best: Option<(f64, Instant, ItemId, usize)> = None;
        for (i, item) in ready.iter().enumerate() {
            let tag = self.tenants.get(&item.tenant).map_or(self.vtime, |t| t.tag);
            let k = (tag, item.ready_at, item.id, i);
            let better = match &best {
                None => true,
                Some(b) => (k.0, k.1, k.2) < (b.0, b.1, b.2),
            };
            if better {
                best = Some(k);
            }
        }
        let Some((tag, _, _, i)) = best else {
            return;
        };
        let item = &ready[i];
        let est = item.est.as_secs_f64();
        self.vtime = self.vtime.max(tag);
        let t = self.tenant(item.tenant);
        t.tag += est / t.weight;
        t.queued = t.queued.saturating_sub(1);
        t.flying += 1;
        self.charged.insert(item.id, (item.tenant, est));
        out.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, Work};
    use super::*;

    fn work(tenant: TenantId) -> Work {
        crate::scheduler::test_work(tenant, 0)
    }

    #[test]
    fn issues_by_weight_within_a_window() {
        let t0 = Instant::now();
        // A window smaller than one item: one at a time.
        let mut s: Scheduler = Scheduler::new(Box::new(Fair::new(Duration::from_micros(1))));
        s.add_tenant(
            1,
            &TenantPolicy {
                weight: 1.0,
                ..Default::default()
            },
        );
        s.add_tenant(
            2,
            &TenantPolicy {
                weight: 3.0,
                ..Default::default()
            },
        );
        for _ in 0..40 {
            s.submit(t0, work(1), ());
            s.submit(t0, work(2), ());
        }
        let mut now = t0;
        let mut order = Vec::new();
        let mut out = Vec::new();
        for _ in 0..40 {
            out.clear();
            s.poll(now, &mut out);
            assert_eq!(out.len(), 1);
            order.push(out[0].0.tenant);
            now += Duration::from_micros(100);
            s.complete(now, out[0].0.id, Some(Duration::from_micros(100)));
        }
        let ones = order.iter().filter(|&&t| t == 1).count();
        assert_eq!(ones, 10, "{order:?}");
    }

    #[test]
    fn idle_time_is_not_banked() {
        let t0 = Instant::now();
        let mut s: Scheduler = Scheduler::new(Box::new(Fair::new(Duration::from_micros(1))));
        let mut now = t0;
        let mut out = Vec::new();
        // Tenant 1 runs alone for a while.
        for _ in 0..20 {
            s.submit(now, work(1), ());
            out.clear();
            s.poll(now, &mut out);
            now += Duration::from_micros(100);
            s.complete(now, out[0].0.id, None);
        }
        // Tenant 2 arrives; both are backlogged: they alternate rather than 2 catching up.
        for _ in 0..10 {
            s.submit(now, work(1), ());
            s.submit(now, work(2), ());
        }
        let mut order = Vec::new();
        for _ in 0..10 {
            out.clear();
            s.poll(now, &mut out);
            order.push(out[0].0.tenant);
            now += Duration::from_micros(100);
            s.complete(now, out[0].0.id, None);
        }
        let twos = order.iter().filter(|&&t| t == 2).count();
        assert!((4..=6).contains(&twos), "{order:?}");
    }
}
