//! `priority`: strict tenant classes.
//!
//! - The highest class that has work (queued or in flight) issues everything at once.
//! - Lower classes issue nothing new while it does, beyond `low_in_flight` items in flight in
//!   all (0 by default): what they already issued finishes, on lower-priority streams.
//! - While no higher class has work, a lower class runs, but each of its tenants keeps at most
//!   `window` of estimated GPU time in flight (at least one item) as long as a tenant of a
//!   higher class is connected, so that when the higher class wakes up, little stands in its way.
//! - Streams of higher classes get higher CUDA stream priorities ([`stream_priority`]), so their
//!   blocks are dispatched first when lower-class work is still running.

use super::{InFlight, Policy, TenantId, WorkItem};
use crate::config::{Class, TenantPolicy};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The CUDA stream priority for a tenant's daemon streams under `priority`. `range` is
/// `(least, greatest)` as `cuCtxGetStreamPriorityRange` returns it (e.g. `(0, -5)`: lower numbers
/// are higher priorities). Class 0 gets `greatest`, each lower class one step less, down to
/// `least`.
pub fn stream_priority(class: Class, range: (i32, i32)) -> i32 {
    let (least, greatest) = range;
    if greatest <= least {
        (greatest + class.level() as i32).min(least)
    } else {
        // A driver that numbers the other way round.
        (greatest - class.level() as i32).max(least)
    }
}

/// The priority for a stream a client creates with priority `requested`: the client may ask for
/// less than its class gets, never more (as with `BATON_CLASS`).
pub fn clamp_stream_priority(class: Class, requested: i32, range: (i32, i32)) -> i32 {
    let (least, greatest) = range;
    let ceiling = stream_priority(class, range);
    if greatest <= least {
        requested.clamp(ceiling, least)
    } else {
        requested.clamp(least, ceiling)
    }
}

pub struct Priority {
    window: Duration,
    low_in_flight: usize,
    classes: HashMap<TenantId, Class>,
    /// Items in flight per tenant and per class (kept from picks and completions).
    flying: HashMap<TenantId, usize>,
    by_class: [usize; Class::LOWEST.level() as usize + 1],
    order: Vec<usize>,
    added: HashMap<TenantId, (usize, Duration)>,
}

impl Priority {
    /// `window`: estimated GPU time a lower-class tenant keeps in flight while a higher class
    /// is connected but idle. `low_in_flight`: lower-class items allowed in flight while a
    /// higher class has work.
    pub fn new(window: Duration, low_in_flight: u32) -> Priority {
        Priority {
            window,
            low_in_flight: low_in_flight as usize,
            classes: HashMap::new(),
            flying: HashMap::new(),
            by_class: Default::default(),
            order: Vec::new(),
            added: HashMap::new(),
        }
    }

    fn class(&self, t: TenantId) -> Class {
        self.classes.get(&t).copied().unwrap_or_default()
    }
}

impl Policy for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn add_tenant(&mut self, tenant: TenantId, policy: &TenantPolicy) {
        self.classes.insert(tenant, policy.class);
    }

    fn remove_tenant(&mut self, tenant: TenantId) {
        let class = self.class(tenant);
        if let Some(n) = self.flying.remove(&tenant) {
            self.by_class[class.level() as usize] -= n;
        }
        self.classes.remove(&tenant);
    }

    fn on_complete(&mut self, _: Instant, item: &WorkItem, _: Option<Duration>) {
        let class = self.class(item.tenant);
        if let Some(n) = self.flying.get_mut(&item.tenant) {
            *n -= 1;
            self.by_class[class.level() as usize] -= 1;
            if *n == 0 {
                self.flying.remove(&item.tenant);
            }
        }
    }

    fn pick(&mut self, _: Instant, ready: &[WorkItem], in_flight: &InFlight, out: &mut Vec<usize>) {
        let flying_top = self.by_class.iter().position(|&n| n > 0);
        let ready_top = ready.iter().map(|i| self.class(i.tenant).level()).min();
        let Some(top) = [flying_top.map(|l| l as u8), ready_top]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        let top = Class::new(top).unwrap_or_default();
        let above_connected = self.classes.values().any(|c| c.is_above(top));
        let mut lower_flying: usize = self.by_class[top.level() as usize + 1..].iter().sum();

        self.order.clear();
        self.order.extend(0..ready.len());
        let classes = &self.classes;
        let class_of = |t| classes.get(&t).copied().unwrap_or_default();
        self.order
            .sort_by_key(|&i| (class_of(ready[i].tenant), ready[i].ready_at, ready[i].id));
        self.added.clear();
        for &i in &self.order {
            let item = &ready[i];
            let class = class_of(item.tenant);
            let lower = class != top;
            if lower && lower_flying >= self.low_in_flight {
                continue;
            }
            if lower || above_connected {
                let added = self.added.get(&item.tenant).copied().unwrap_or_default();
                let load = in_flight.tenant(item.tenant);
                if load.items + added.0 > 0 && load.est + added.1 >= self.window {
                    continue;
                }
            }
            if lower {
                lower_flying += 1;
            }
            let a = self.added.entry(item.tenant).or_default();
            a.0 += 1;
            a.1 += item.est;
            *self.flying.entry(item.tenant).or_default() += 1;
            self.by_class[class.level() as usize] += 1;
            out.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, Work};
    use super::*;

    fn tenant(class: Class) -> TenantPolicy {
        TenantPolicy {
            class,
            ..Default::default()
        }
    }

    fn work(tenant: TenantId) -> Work {
        crate::scheduler::test_work(tenant, 0)
    }

    #[test]
    fn stream_priorities_follow_classes() {
        let range = (0, -5);
        assert_eq!(stream_priority(Class::HIGH, range), -5);
        assert_eq!(stream_priority(Class::NORMAL, range), -4);
        assert_eq!(stream_priority(Class::LOW, range), -3);
        assert_eq!(stream_priority(Class::LOWEST, range), 0);
        assert_eq!(stream_priority(Class::HIGH, (0, 0)), 0);
        assert_eq!(clamp_stream_priority(Class::NORMAL, -5, range), -4);
        assert_eq!(clamp_stream_priority(Class::NORMAL, -1, range), -1);
        assert_eq!(clamp_stream_priority(Class::NORMAL, 3, range), 0);
    }

    #[test]
    fn lower_class_waits_while_higher_has_work() {
        let t0 = Instant::now();
        let mut s: Scheduler<&str> =
            Scheduler::new(Box::new(Priority::new(Duration::from_millis(1), 0)));
        s.add_tenant(1, &tenant(Class::HIGH));
        s.add_tenant(2, &tenant(Class::LOW));
        let hi = s.submit(t0, work(1), "hi");
        s.submit(t0, work(1), "hi2");
        s.submit(t0, work(2), "lo");
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        let names: Vec<_> = out.iter().map(|o| o.1).collect();
        assert_eq!(names, ["hi", "hi2"], "high issues everything, low nothing");
        out.clear();
        s.complete(t0, hi, None);
        s.poll(t0, &mut out);
        assert!(out.is_empty(), "hi2 is still in flight");
        s.complete(t0, hi + 1, None);
        s.poll(t0, &mut out);
        assert_eq!(out.iter().map(|o| o.1).collect::<Vec<_>>(), ["lo"]);
    }

    #[test]
    fn low_in_flight_lets_some_through() {
        let t0 = Instant::now();
        let mut s: Scheduler = Scheduler::new(Box::new(Priority::new(Duration::from_secs(1), 2)));
        s.add_tenant(1, &tenant(Class::HIGH));
        s.add_tenant(2, &tenant(Class::LOW));
        s.submit(t0, work(1), ());
        for _ in 0..5 {
            s.submit(t0, work(2), ());
        }
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out.iter().filter(|o| o.0.tenant == 2).count(), 2);
    }

    #[test]
    fn idle_higher_class_limits_lower_to_a_window() {
        let t0 = Instant::now();
        // Default estimate is 100 us: a 250 us window admits 3 items (0, 100, 200 < 250).
        let mut s: Scheduler =
            Scheduler::new(Box::new(Priority::new(Duration::from_micros(250), 0)));
        s.add_tenant(1, &tenant(Class::HIGH));
        s.add_tenant(2, &tenant(Class::LOW));
        for _ in 0..10 {
            s.submit(t0, work(2), ());
        }
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 3);
        // Without anyone above it, the top class is not limited.
        s.remove_tenant(1);
        out.clear();
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn same_class_is_passthrough() {
        let t0 = Instant::now();
        let mut s: Scheduler = Scheduler::new(Box::new(Priority::new(Duration::from_micros(1), 0)));
        s.add_tenant(1, &tenant(Class::NORMAL));
        s.add_tenant(2, &tenant(Class::NORMAL));
        for _ in 0..10 {
            s.submit(t0, work(1), ());
            s.submit(t0, work(2), ());
        }
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 20);
    }
}
