//! A [`Scheduler`] shared by session threads that issue their own work.
//!
//! Each session thread, before it issues a command to the driver, calls [`Gate::admit`]: the
//! command is queued, the policy is asked, and the thread waits until the policy lets the
//! command go (at once, for `passthrough` or when nothing competes). Whoever learns that issued
//! work completed calls [`Gate::complete`], which may let waiting commands of any session go.
//! The session thread issues the admitted command itself, so its tables, handles and ordering
//! stay where they are; a held command holds back the rest of its session's ring, which is the
//! throttling the policies want.

use super::{Policy, Scheduler, TenantId, Work, WorkItem};
use crate::config::{DaemonConfig, TenantPolicy};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a waiting thread checks whether it should give up.
pub const GIVE_UP_POLL: Duration = Duration::from_millis(50);

struct State {
    sched: Scheduler<()>,
    /// Admitted and not yet collected by the waiting thread.
    granted: HashMap<u64, WorkItem>,
    out: Vec<(WorkItem, ())>,
}

impl State {
    /// Polls the policy; returns whether anything was granted.
    fn poll(&mut self, now: Instant) -> bool {
        self.out.clear();
        self.sched.poll(now, &mut self.out);
        for (item, ()) in self.out.drain(..) {
            self.granted.insert(item.id, item);
        }
        !self.granted.is_empty()
    }
}

pub struct Gate {
    state: Mutex<State>,
    cv: Condvar,
    /// A copy of the policy's fast-lane tenants (version, set), refreshed under `state`'s lock
    /// when the version moves, so that asking costs no trip through the contended lock.
    fast: Mutex<(u64, Vec<TenantId>)>,
}

impl Gate {
    pub fn new(policy: Box<dyn Policy>) -> Gate {
        Gate {
            state: Mutex::new(State {
                sched: Scheduler::new(policy),
                granted: HashMap::new(),
                out: Vec::new(),
            }),
            cv: Condvar::new(),
            fast: Mutex::new((0, Vec::new())),
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
        if g.poll(Instant::now()) {
            self.cv.notify_all();
        }
    }

    /// Queues `work` and waits until the policy lets it go; returns the item (its `id` is for
    /// [`Gate::complete`]). Every [`GIVE_UP_POLL`] while waiting it calls `give_up`; when that
    /// returns true the work is withdrawn and `None` returned.
    pub fn admit(&self, work: Work, give_up: &dyn Fn() -> bool) -> Option<WorkItem> {
        let mut g = self.lock();
        let now = Instant::now();
        let id = g.sched.submit(now, work, ());
        self.refresh_fast(&g.sched);
        if g.poll(now) && !(g.granted.len() == 1 && g.granted.contains_key(&id)) {
            self.cv.notify_all();
        }
        loop {
            if let Some(item) = g.granted.remove(&id) {
                return Some(item);
            }
            if give_up() {
                let now = Instant::now();
                g.sched.withdraw(now, id);
                if g.poll(now) {
                    self.cv.notify_all();
                }
                return None;
            }
            g = self
                .cv
                .wait_timeout(g, GIVE_UP_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Reports admitted work complete, with its measured GPU time if known. Returns the item,
    /// or `None` if it was not in flight (already reported, or its tenant is gone).
    pub fn complete(&self, id: u64, gpu_time: Option<Duration>) -> Option<WorkItem> {
        let mut g = self.lock();
        let now = Instant::now();
        let item = g.sched.complete(now, id, gpu_time);
        if g.poll(now) {
            self.cv.notify_all();
        }
        item
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
