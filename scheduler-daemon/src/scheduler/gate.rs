//! A [`Scheduler`] shared by session threads that issue their own work.
//!
//! Each session thread, before it issues a command to the driver, calls [`Gate::admit`]: the
//! command is queued, the policy is asked, and the thread waits until the policy lets the
//! command go (at once, for `passthrough` or when nothing competes). Whoever learns that issued
//! work completed calls [`Gate::complete`] (or [`Gate::complete_all`] for a batch), which may let
//! waiting commands of any session go. The session thread issues the admitted command itself, so
//! its tables, handles and ordering stay where they are; a held command holds back the rest of
//! its session's ring, which is the throttling the policies want.
//!
//! A waiting thread parks on its own: whoever grants its item unparks exactly that thread,
//! after letting go of the lock. One condvar for every waiter would wake all of them at every
//! completion, and each would take the lock only to find that its item is still held.
//! [`Gate::counters`] counts parks and wake-ups (`examples/gate_throughput.rs` prints them).

use super::{Policy, Scheduler, TenantId, Work, WorkItem};
use crate::config::{DaemonConfig, TenantPolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often a waiting thread checks whether it should give up.
pub const GIVE_UP_POLL: Duration = Duration::from_millis(50);

struct State {
    sched: Scheduler<()>,
    /// Admitted and not yet collected by the waiting thread.
    granted: HashMap<u64, WorkItem>,
    /// Threads parked until their item is granted, by item id.
    waiting: HashMap<u64, Thread>,
    out: Vec<(WorkItem, ())>,
}

impl State {
    /// Polls the policy; returns the parked threads whose items it granted (to unpark once the
    /// lock is released).
    fn poll(&mut self, now: Instant) -> Vec<Thread> {
        self.out.clear();
        self.sched.poll(now, &mut self.out);
        let mut wake = Vec::new();
        for (item, ()) in self.out.drain(..) {
            if let Some(t) = self.waiting.remove(&item.id) {
                wake.push(t);
            }
            self.granted.insert(item.id, item);
        }
        wake
    }
}

/// What the gate has done, for tests and measurements (relaxed counters, never reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateCounters {
    /// Items admitted.
    pub admitted: u64,
    /// Admissions that had to park (their item was not granted at once).
    pub parked: u64,
    /// Parked threads woken by a grant of their item.
    pub woken: u64,
    /// Times a parked thread woke and found its item still held (a timeout, or a stray unpark).
    pub idle_wakes: u64,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    parked: AtomicU64,
    woken: AtomicU64,
    idle_wakes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub struct Gate {
    state: Mutex<State>,
    /// A copy of the policy's fast-lane tenants (version, set), refreshed under `state`'s lock
    /// when the version moves, so that asking costs no trip through the contended lock.
    fast: Mutex<(u64, Vec<TenantId>)>,
    counters: Counters,
}

/// Unparks the threads a poll granted; called with the gate's lock released, so that a woken
/// thread does not run into it.
fn wake(threads: Vec<Thread>, counters: &Counters) {
    for t in threads {
        bump(&counters.woken);
        t.unpark();
    }
}

impl Gate {
    pub fn new(policy: Box<dyn Policy>) -> Gate {
        Gate {
            state: Mutex::new(State {
                sched: Scheduler::new(policy),
                granted: HashMap::new(),
                waiting: HashMap::new(),
                out: Vec::new(),
            }),
            fast: Mutex::new((0, Vec::new())),
            counters: Counters::default(),
        }
    }

    /// The gate's counters so far.
    pub fn counters(&self) -> GateCounters {
        let c = &self.counters;
        GateCounters {
            admitted: c.admitted.load(Ordering::Relaxed),
            parked: c.parked.load(Ordering::Relaxed),
            woken: c.woken.load(Ordering::Relaxed),
            idle_wakes: c.idle_wakes.load(Ordering::Relaxed),
        }
    }

    /// Whether `tenant`'s work goes on the fast lane now (see [`Policy::fast_lane`]).
    pub fn fast_lane(&self, tenant: TenantId) -> bool {
        crate::session::lock(&self.fast).1.contains(&tenant)
    }

    /// Refreshes the copy of the fast-lane tenants if the policy's set changed (called on
    /// every admission: the set is copied only when its version moved).
    fn refresh_fast(&self, sched: &Scheduler<()>) {
        let version = sched.fast_version();
        let mut f = crate::session::lock(&self.fast);
        if f.0 != version {
            *f = (version, sched.fast_tenants());
        }
    }

    pub fn from_config(cfg: &DaemonConfig) -> Gate {
        Gate::new(super::build(cfg))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the scheduler (status, metrics).
    pub fn with<R>(&self, f: impl FnOnce(&Scheduler<()>) -> R) -> R {
        f(&self.lock().sched)
    }

    /// Reports a finished job of a fast-lane tenant (see [`Policy::on_fast_job`]) if the gate
    /// is free now; `false` (nothing done) if another thread holds it. A short-job tenant's
    /// session thread must not wait for the gate between two of its requests, and its report
    /// can as well be made after the next one.
    pub fn try_fast_job(&self, tenant: TenantId, took: Duration) -> bool {
        let mut g = match self.state.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        g.sched.fast_job(tenant, took);
        self.refresh_fast(&g.sched);
        true
    }

    pub fn add_tenant(&self, tenant: TenantId, policy: &TenantPolicy) {
        self.lock().sched.add_tenant(tenant, policy);
    }

    /// Forgets a tenant (after its session synchronised its streams): its work no longer holds
    /// anyone back.
    pub fn remove_tenant(&self, tenant: TenantId) {
        let mut g = self.lock();
        g.sched.remove_tenant(tenant);
        g.granted.retain(|_, i| i.tenant != tenant);
        let woken = g.poll(Instant::now());
        drop(g);
        wake(woken, &self.counters);
    }

    /// Queues `work` and waits until the policy lets it go; returns the item (its `id` is for
    /// [`Gate::complete`]). Every [`GIVE_UP_POLL`] while waiting it calls `give_up`; when that
    /// returns true the work is withdrawn and `None` returned.
    pub fn admit(&self, work: Work, give_up: &dyn Fn() -> bool) -> Option<WorkItem> {
        let mut g = self.lock();
        let now = Instant::now();
        let id = g.sched.submit(now, work, ());
        self.refresh_fast(&g.sched);
        let woken = g.poll(now);
        if let Some(item) = g.granted.remove(&id) {
            drop(g);
            bump(&self.counters.admitted);
            wake(woken, &self.counters);
            return Some(item);
        }
        g.waiting.insert(id, std::thread::current());
        drop(g);
        bump(&self.counters.parked);
        wake(woken, &self.counters);
        loop {
            // A stray token (an unpark meant for an earlier wait) only makes this return
            // early: the item is looked up again either way.
            std::thread::park_timeout(GIVE_UP_POLL);
            let mut g = self.lock();
            if let Some(item) = g.granted.remove(&id) {
                drop(g);
                bump(&self.counters.admitted);
                return Some(item);
            }
            bump(&self.counters.idle_wakes);
            if give_up() {
                g.waiting.remove(&id);
                let now = Instant::now();
                g.sched.withdraw(now, id);
                let woken = g.poll(now);
                drop(g);
                wake(woken, &self.counters);
                return None;
            }
        }
    }

    /// Reports admitted work complete, with its measured GPU time if known. Returns the item,
    /// or `None` if it was not in flight (already reported, or its tenant is gone).
    pub fn complete(&self, id: u64, gpu_time: Option<Duration>) -> Option<WorkItem> {
        let mut g = self.lock();
        let now = Instant::now();
        let item = g.sched.complete(now, id, gpu_time);
        let woken = g.poll(now);
        drop(g);
        wake(woken, &self.counters);
        item
    }

    /// Reports a batch of completions (what one pass of the completion poller saw) under one
    /// lock and one policy poll; appends each item that was in flight to `out`, with its time.
    pub fn complete_all(
        &self,
        items: &[(u64, Option<Duration>)],
        out: &mut Vec<(WorkItem, Option<Duration>)>,
    ) {
        if items.is_empty() {
            return;
        }
        let mut g = self.lock();
        let now = Instant::now();
        for &(id, gpu_time) in items {
            if let Some(item) = g.sched.complete(now, id, gpu_time) {
                out.push((item, gpu_time));
            }
        }
        let woken = g.poll(now);
        drop(g);
        wake(woken, &self.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Class;
    use crate::scheduler::priority::Priority;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn work(tenant: TenantId) -> Work {
        crate::scheduler::test_work(tenant, 0)
    }

    #[test]
    fn low_class_waits_for_high_to_complete() {
        let gate = Arc::new(Gate::new(Box::new(Priority::new(
            Duration::from_millis(1),
            0,
        ))));
        let class = |c| TenantPolicy {
            class: c,
            ..Default::default()
        };
        gate.add_tenant(1, &class(Class::HIGH));
        gate.add_tenant(2, &class(Class::LOW));
        let hi = gate.admit(work(1), &|| false).unwrap();
        let admitted = Arc::new(AtomicBool::new(false));
        let (g, a) = (gate.clone(), admitted.clone());
        let low = std::thread::spawn(move || {
            let item = g.admit(work(2), &|| false).unwrap();
            a.store(true, Ordering::SeqCst);
            item
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !admitted.load(Ordering::SeqCst),
            "held while high is in flight"
        );
        gate.complete(hi.id, Some(Duration::from_micros(30)));
        let item = low.join().unwrap();
        assert_eq!(item.tenant, 2);
        assert!(admitted.load(Ordering::SeqCst));
    }

    /// Parks `n` threads, each admitting one item of its own tenant (1..=n) behind whatever
    /// holds the gate; returns the receiving end of their admitted items.
    fn park_waiters(gate: &Arc<Gate>, n: u64) -> std::sync::mpsc::Receiver<WorkItem> {
        let before = gate.counters().parked;
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 1..=n {
            let (g, tx) = (gate.clone(), tx.clone());
            std::thread::spawn(move || {
                let item = g.admit(work(t), &|| false).unwrap();
                tx.send(item).unwrap();
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.counters().parked < before + n {
            assert!(Instant::now() < deadline, "waiters did not park");
            std::thread::sleep(Duration::from_millis(1));
        }
        rx
    }

    #[test]
    fn a_completion_wakes_only_the_waiter_it_grants() {
        // A window smaller than one item: one item in flight at a time.
        let gate = Arc::new(Gate::new(Box::new(crate::scheduler::fair::Fair::new(
            Duration::from_nanos(1),
        ))));
        let n = 8;
        for t in 0..=n {
            gate.add_tenant(t, &TenantPolicy::default());
        }
        let mut flying = gate.admit(work(0), &|| false).unwrap();
        let rx = park_waiters(&gate, n);
        let mut seen = std::collections::HashSet::new();
        for k in 1..=n {
            gate.complete(flying.id, Some(Duration::from_micros(20)));
            // The unpark is counted before `complete` returns.
            assert_eq!(gate.counters().woken, k, "one wake-up per completion");
            flying = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(seen.insert(flying.tenant), "each waiter is granted once");
            // The others are still held: the window has room for one item only.
            assert!(rx.try_recv().is_err());
            assert_eq!(gate.with(|s| s.queued()), (n - k) as usize);
        }
        gate.complete(flying.id, None);
        let c = gate.counters();
        assert_eq!((c.admitted, c.parked, c.woken), (n + 1, n, n));
    }

    #[test]
    fn a_completion_that_lets_several_go_wakes_each_of_them() {
        let gate = Arc::new(Gate::new(Box::new(Priority::new(
            Duration::from_millis(1),
            0,
        ))));
        let class = |c| TenantPolicy {
            class: c,
            ..Default::default()
        };
        gate.add_tenant(0, &class(Class::HIGH));
        for t in 1..=4 {
            gate.add_tenant(t, &class(Class::LOW));
        }
        let hi = gate.admit(work(0), &|| false).unwrap();
        let rx = park_waiters(&gate, 4);
        assert_eq!(
            gate.counters().woken,
            0,
            "nothing goes while high is in flight"
        );
        // Four low items of 100 us (the default estimate) fit the 1 ms window at once.
        gate.complete(hi.id, None);
        assert_eq!(gate.counters().woken, 4);
        let mut got: Vec<_> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().tenant)
            .collect();
        got.sort();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_batch_of_completions_is_one_poll() {
        let gate = Gate::new(Box::new(Priority::new(Duration::from_millis(1), 0)));
        gate.add_tenant(1, &TenantPolicy::default());
        let a = gate.admit(work(1), &|| false).unwrap();
        let b = gate.admit(work(1), &|| false).unwrap();
        let mut out = Vec::new();
        let t = Some(Duration::from_micros(7));
        gate.complete_all(&[(a.id, t), (b.id, None), (a.id, t)], &mut out);
        let ids: Vec<_> = out.iter().map(|(i, t)| (i.id, *t)).collect();
        assert_eq!(
            ids,
            vec![(a.id, t), (b.id, None)],
            "a repeat is not in flight"
        );
        gate.with(|s| assert!(s.in_flight().is_empty()));
    }

    #[test]
    fn waiting_can_give_up() {
        let gate = Gate::new(Box::new(Priority::new(Duration::from_millis(1), 0)));
        gate.add_tenant(
            1,
            &TenantPolicy {
                class: Class::HIGH,
                ..Default::default()
            },
        );
        gate.add_tenant(2, &TenantPolicy::default());
        let hi = gate.admit(work(1), &|| false).unwrap();
        assert!(gate.admit(work(2), &|| true).is_none());
        gate.complete(hi.id, None);
        gate.with(|s| {
            assert_eq!(s.queued(), 0);
            assert!(s.in_flight().is_empty());
        });
    }
}
