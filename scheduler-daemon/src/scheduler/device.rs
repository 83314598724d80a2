//! One GPU's scheduling as the daemon runs it: a [`Gate`] the session threads pass before they
//! issue, and the completions that let held work go.
//!
//! After issuing an admitted item on a daemon stream (a "lane"), the session has the GPU write
//! the lane's next sequence number into that lane's word of a host page registered once per
//! device. A poller thread reads the words of busy lanes, turns them into completions with the
//! [`Tracker`], and reports those to the gate. It sleeps while no lane is busy, so a daemon with
//! nothing in flight costs nothing.

use super::completion::Tracker;
use super::gate::Gate;
use super::{ItemId, TenantId, Work, WorkItem};
use crate::config::{DaemonConfig, TenantPolicy};
use crate::executor::{Executor, GpuResult, Raw};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How often the poller reads the busy lanes' words.
pub const POLL_INTERVAL: Duration = Duration::from_micros(20);
/// Lanes (daemon streams with tracked work) per device; beyond this, work is not tracked.
pub const MAX_LANES: usize = PAGES * WORDS_PER_PAGE;
/// GPU time older than this counts for about a third as much in [`Usage::share`] figures.
pub const SHARE_DECAY: Duration = Duration::from_secs(10);

const WORDS_PER_PAGE: usize = 512;
const PAGES: usize = 16;

/// One page of lane words. Page-aligned so that registering it pins exactly these pages.
#[repr(C, align(4096))]
struct Page([AtomicU64; WORDS_PER_PAGE]);

#[derive(Default)]
struct Lanes {
    tracker: Tracker,
    /// Lane -> its word's index.
    slots: HashMap<u64, usize>,
    free: Vec<usize>,
    next_slot: usize,
    /// The poller waits on `wake` (and must be notified).
    sleeping: bool,
    warned_full: bool,
    busy: Vec<u64>,
    done: Vec<(ItemId, Duration)>,
}

/// A tenant's measured GPU time on one device.
#[derive(Clone, Copy, Debug)]
struct Usage {
    total: Duration,
    /// Seconds, decayed by [`SHARE_DECAY`] as of `at`.
    recent: f64,
    at: Instant,
}

impl Usage {
    fn decayed(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.recent * (-dt / SHARE_DECAY.as_secs_f64()).exp()
    }

    fn add(&mut self, now: Instant, t: Duration) {
        self.recent = self.decayed(now) + t.as_secs_f64();
        self.at = now;
        self.total += t;
    }
}

/// What the status report shows of one tenant on one device.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TenantFigures {
    pub queued: u64,
    pub in_flight: u64,
    /// Measured GPU time since it connected.
    pub gpu_time: Duration,
    /// Recent measured GPU time, in seconds decayed by [`SHARE_DECAY`].
    pub recent: f64,
}

pub struct DeviceScheduler {
    device: u32,
    exec: Arc<dyn Executor>,
    gate: Gate,
    pages: Box<[Page]>,
    /// Device address of the first lane word (registered again after a context reset).
    words_dev: AtomicU64,
    lanes: Mutex<Lanes>,
    wake: Condvar,
    usage: Mutex<HashMap<TenantId, Usage>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DeviceScheduler {
    /// Registers the lane words with the GPU and starts the poller thread, which ends soon after
    /// the returned scheduler is dropped.
    pub fn start(
        exec: Arc<dyn Executor>,
        device: u32,
        cfg: &DaemonConfig,
    ) -> GpuResult<Arc<DeviceScheduler>> {
        let pages: Box<[Page]> = (0..PAGES)
            .map(|_| Page([const { AtomicU64::new(0) }; WORDS_PER_PAGE]))
            .collect();
        // The GPU writes the words behind Rust's back; they are atomics, which allows that.
        let ptr = pages.as_ptr() as *mut u8;
        let words_dev = exec.host_register(ptr, std::mem::size_of_val(&*pages))?;
        let s = Arc::new(DeviceScheduler {
            device,
            exec,
            gate: Gate::from_config(cfg),
            pages,
            words_dev: AtomicU64::new(words_dev),
            lanes: Mutex::new(Lanes::default()),
            wake: Condvar::new(),
            usage: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&s);
        let spawned = std::thread::Builder::new()
            .name(format!("baton-completions-{device}"))
            .spawn(move || poller(weak));
        if let Err(e) = spawned {
            tracing::error!(device, error = %e, "could not start the completion poller");
            return Err(crate::executor::GpuError(crate::executor::code::UNKNOWN));
        }
        Ok(s)
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    fn word(&self, slot: usize) -> &AtomicU64 {
        &self.pages[slot / WORDS_PER_PAGE].0[slot % WORDS_PER_PAGE]
    }

    pub fn add_tenant(&self, tenant: TenantId, policy: &TenantPolicy) {
        self.gate.add_tenant(tenant, policy);
        let now = Instant::now();
        lock(&self.usage).insert(
            tenant,
            Usage {
                total: Duration::ZERO,
                recent: 0.0,
                at: now,
            },
        );
    }

    /// Forgets a tenant whose lanes were retired: nothing of it holds anyone back any more.
    pub fn remove_tenant(&self, tenant: TenantId) {
        self.gate.remove_tenant(tenant);
        lock(&self.usage).remove(&tenant);
    }

    /// Whether the policy wants `tenant`'s next work on a high-priority stream.
    pub fn fast_lane(&self, tenant: TenantId) -> bool {
        self.gate.fast_lane(tenant)
    }

    /// A fast-lane tenant's job took `took` (first issue to the end of its synchronisation).
    /// It counts as the tenant's GPU time (an upper bound: it includes queueing). Never waits
    /// for the gate: `false` (nothing done) when another thread holds it
    /// (see [`Gate::try_fast_job`]).
    pub fn try_fast_job(&self, tenant: TenantId, took: Duration) -> bool {
        if !self.gate.try_fast_job(tenant, took) {
            return false;
        }
        self.charge(tenant, took);
        true
    }

    fn charge(&self, tenant: TenantId, t: Duration) {
        let now = Instant::now();
        if let Some(u) = lock(&self.usage).get_mut(&tenant) {
            u.add(now, t);
        }
    }

    /// Queues `work` and waits until the policy lets it go (see [`Gate::admit`]).
    pub fn admit(&self, work: Work, give_up: &dyn Fn() -> bool) -> Option<WorkItem> {
        self.gate.admit(work, give_up)
    }

    /// The session issued admitted item `id` on daemon stream `lane` (`ok`: the driver took
    /// it). Has the GPU report its completion, or reports it at once when it cannot be tracked.
    pub fn issued(&self, lane: Raw, id: ItemId, ok: bool) {
        if !ok {
            self.complete(id, None);
            return;
        }
        let mut l = lock(&self.lanes);
        let slot = match l.slots.get(&lane) {
            Some(&s) => Some(s),
            None => {
                let s = l.free.pop().or_else(|| {
                    (l.next_slot < MAX_LANES).then(|| {
                        l.next_slot += 1;
                        l.next_slot - 1
                    })
                });
                if let Some(s) = s {
                    self.word(s).store(0, Ordering::Relaxed);
                    l.slots.insert(lane, s);
                }
                s
            }
        };
        let Some(slot) = slot else {
            if !std::mem::replace(&mut l.warned_full, true) {
                tracing::warn!(
                    device = self.device,
                    "more than {MAX_LANES} busy streams: further work is not tracked"
                );
            }
            drop(l);
            self.complete(id, None);
            return;
        };
        let value = l.tracker.issued(lane, id, Instant::now());
        let addr = self.words_dev.load(Ordering::Acquire) + (slot * 8) as u64;
        // The lane is this session's stream and only its thread issues on it, so the word's
        // writes stay in the order the tracker numbered them.
        if self
            .exec
            .write_value(self.device, lane, addr, value)
            .is_err()
        {
            l.tracker.withdraw_last(lane, id);
            drop(l);
            self.complete(id, None);
            return;
        }
        if std::mem::replace(&mut l.sleeping, false) {
            self.wake.notify_one();
        }
    }

    /// Whether work was ever tracked on `lane` (since it was last retired).
    pub fn tracks(&self, lane: Raw) -> bool {
        lock(&self.lanes).slots.contains_key(&lane)
    }

    /// Forgets lanes whose streams were synchronised (and are about to be destroyed): what they
    /// completed is reported, with its GPU time, and their words are free for other streams.
    pub fn retire(&self, lanes: &[Raw]) {
        let now = Instant::now();
        let mut l = lock(&self.lanes);
        let mut done = std::mem::take(&mut l.done);
        let mut leftover = Vec::new();
        for &lane in lanes {
            let Some(slot) = l.slots.remove(&lane) else {
                continue;
            };
            let value = self.word(slot).load(Ordering::Acquire);
            l.tracker.observe(lane, value, now, &mut done);
            leftover.extend(l.tracker.forget(lane));
            l.free.push(slot);
        }
        drop(l);
        self.complete_batch(&done);
        done.clear();
        for id in leftover {
            self.complete(id, None);
        }
        lock(&self.lanes).done = done;
    }

    /// After a kernel fault: the tracked work will never report completion (the context that
    /// would have written the words is gone), so all of it is reported complete, untimed, and
    /// every lane is forgotten; their stream handles may be reused by the next context.
    /// Returns how many items were abandoned.
    pub fn abandon(&self) -> usize {
        let mut l = lock(&self.lanes);
        let lanes: Vec<u64> = l.slots.keys().copied().collect();
        let mut ids = Vec::new();
        for lane in lanes {
            ids.extend(l.tracker.forget(lane));
        }
        l.slots.clear();
        l.free.clear();
        l.next_slot = 0;
        l.warned_full = false;
        l.done.clear();
        drop(l);
        for id in &ids {
            self.complete(*id, None);
        }
        ids.len()
    }

    /// After the device's context was reset (with every thread held out of the driver): the
    /// lane words are registered with the new context.
    pub fn rebind(&self) -> GpuResult<()> {
        for p in self.pages.iter() {
            for w in p.0.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        let ptr = self.pages.as_ptr() as *mut u8;
        let dev = self
            .exec
            .host_register(ptr, std::mem::size_of_val(&*self.pages))?;
        self.words_dev.store(dev, Ordering::Release);
        Ok(())
    }

    fn complete(&self, id: ItemId, gpu_time: Option<Duration>) {
        let Some(item) = self.gate.complete(id, gpu_time) else {
            return;
        };
        if let Some(t) = gpu_time {
            self.charge(item.tenant, t);
        }
    }

    /// Reports what one look at the lanes found complete: one trip through the gate's lock and
    /// one through the usage table for the whole batch, rather than one each per item.
    fn complete_batch(&self, done: &[(ItemId, Duration)]) {
        if done.is_empty() {
            return;
        }
        let items: Vec<(ItemId, Option<Duration>)> =
            done.iter().map(|&(id, t)| (id, Some(t))).collect();
        let mut completed = Vec::with_capacity(items.len());
        self.gate.complete_all(&items, &mut completed);
        let now = Instant::now();
        let mut usage = lock(&self.usage);
        for (item, t) in completed {
            if let (Some(u), Some(t)) = (usage.get_mut(&item.tenant), t) {
                u.add(now, t);
            }
        }
    }

    /// One pass of the poller; returns whether any lane is busy.
    fn poll(&self) -> bool {
        let mut l = lock(&self.lanes);
        let Lanes {
            tracker,
            slots,
            busy,
            done,
            ..
        } = &mut *l;
        busy.clear();
        busy.extend(tracker.busy_lanes());
        if busy.is_empty() {
            return false;
        }
        let now = Instant::now();
        for &lane in busy.iter() {
            if let Some(&slot) = slots.get(&lane) {
                let value = self.word(slot).load(Ordering::Acquire);
                tracker.observe(lane, value, now, done);
            }
        }
        let mut done = std::mem::take(done);
        drop(l);
        self.complete_batch(&done);
        done.clear();
        lock(&self.lanes).done = done;
        true
    }

    /// Per tenant: items queued and in flight, and measured GPU time.
    pub fn figures(&self) -> HashMap<TenantId, TenantFigures> {
        let now = Instant::now();
        let mut out: HashMap<TenantId, TenantFigures> = lock(&self.usage)
            .iter()
            .map(|(&t, u)| {
                let f = TenantFigures {
                    gpu_time: u.total,
                    recent: u.decayed(now),
                    ..Default::default()
                };
                (t, f)
            })
            .collect();
        self.gate.with(|s| {
            for (t, f) in out.iter_mut() {
                f.queued = s.queued_of(*t) as u64;
                f.in_flight = s.in_flight().tenant(*t).items as u64;
            }
        });
        out
    }
}

impl Drop for DeviceScheduler {
    fn drop(&mut self) {
        let _ = self.exec.host_unregister(self.pages.as_ptr() as *mut u8);
    }
}

fn poller(me: Weak<DeviceScheduler>) {
    set_timer_slack();
    loop {
        let Some(s) = me.upgrade() else {
            return;
        };
        if s.poll() {
            drop(s);
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        let mut l = lock(&s.lanes);
        if l.tracker.busy_lanes().next().is_none() {
            l.sleeping = true;
            // Wakes up now and then to notice that the scheduler was dropped.
            let (mut l, _) = s
                .wake
                .wait_timeout(l, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner());
            l.sleeping = false;
        }
    }
}

/// The kernel rounds sleeps up by the thread's timer slack (50 us by default), which would
/// make the poller several times slower than [`POLL_INTERVAL`].
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only this thread.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the poller's timer slack");
    }
}
