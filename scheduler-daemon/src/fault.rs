//! Kernel faults in the one shared context, and recovering from them.
//!
//! A kernel that faults (illegal address, illegal instruction, device-side assert...) leaves
//! the CUDA context it ran in unusable: every later call in that context returns the same
//! "sticky" error. All tenants share the daemon's context, so one tenant's fault ends every
//! connected tenant's work. The daemon then:
//!
//! 1. notices the error ([`FaultMonitor::report`]), from a session's command or from the
//!    completion poller's probe, and confirms it with [`crate::executor::Executor::probe`]
//!    (a plain error code that happens to be 700 is not a poisoned context);
//! 2. bumps the context *generation*: every session born in an earlier generation is dead from
//!    then on. Its client gets the sticky error for every later call, its objects are never
//!    handed to the driver again (their handles may be reused by the new context), and its
//!    memory accounting is released;
//! 3. logs which tenants may have caused it, and counts it;
//! 4. once no thread is inside the driver for the old context ([`FaultMonitor::enter`] is a
//!    read lock every driver-using thread holds), resets every device's context and lets new
//!    clients in.
//!
//! Recovery does not wait for the dead sessions' clients to disconnect: a stuck client can
//! never hold the GPU back.

use crate::executor::Executor;
use crate::scheduler::device::DeviceScheduler;
use crate::session::Shared;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// `CUresult` codes after which the context is unusable (the driver documents each as leaving
/// "the process in an inconsistent state"): LAUNCH_TIMEOUT, ILLEGAL_ADDRESS, ASSERT,
/// HARDWARE_STACK_ERROR, ILLEGAL_INSTRUCTION, MISALIGNED_ADDRESS, INVALID_ADDRESS_SPACE,
/// INVALID_PC, LAUNCH_FAILED.
pub const STICKY: [u32; 9] = [702, 700, 710, 714, 715, 716, 717, 718, 719];

pub fn is_sticky(code: u32) -> bool {
    STICKY.contains(&code)
}

/// Who first saw a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Witness {
    /// A command of this session returned the sticky error.
    Session(u64),
    /// The completion poller's probe of the device.
    Poller,
}

/// A fault waiting for the recovery thread.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub device: u32,
    pub code: u32,
    pub witness: Witness,
    /// The generation it ended (sessions born in it or earlier are dead).
    pub ended: u64,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    pending: Option<Fault>,
}

pub struct FaultMonitor {
    /// Bumped when a fault is recognised; sessions born before the current value are dead.
    generation: AtomicU64,
    /// The sticky code of the last fault (what dead sessions answer).
    code: AtomicU32,
    faults: AtomicU64,
    state: Mutex<State>,
    /// Signalled when a fault is pending (for the recovery thread) and when it is resolved
    /// (for clients waiting to be set up).
    changed: Condvar,
    /// Held shared by every thread while it calls the driver; held exclusively to reset.
    ctx: RwLock<()>,
}

impl Default for FaultMonitor {
    fn default() -> Self {
        FaultMonitor {
            generation: AtomicU64::new(0),
            code: AtomicU32::new(0),
            faults: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            ctx: RwLock::new(()),
        }
    }
}

impl FaultMonitor {
    /// To be held while calling the driver with handles of the current context.
    pub fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.ctx.read().unwrap_or_else(|e| e.into_inner())
    }

    /// As [`FaultMonitor::enter`], but `None` instead of waiting for a reset in progress.
    pub fn try_enter(&self) -> Option<RwLockReadGuard<'_, ()>> {
        match self.ctx.try_read() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Kernel faults recognised since the daemon started.
    /// Counts faults an earlier image of this process saw (see [`crate::restart`]).
    pub fn carry_over(&self, faults: u64) {
        self.faults.fetch_add(faults, Ordering::Relaxed);
    }

    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// For a session born in generation `born`: the sticky error it must answer, if a fault
    /// has ended its context since.
    pub fn dead(&self, born: u64) -> Option<u32> {
        (born < self.generation()).then(|| self.code.load(Ordering::Acquire))
    }

    /// Records a confirmed fault seen by a thread working in generation `seen`. Returns the
    /// fault when this report is the one that ends that generation (later reports of the
    /// same fault, and reports from threads of an already ended generation, return `None`).
    pub fn report(&self, device: u32, code: u32, witness: Witness, seen: u64) -> Option<Fault> {
        let mut st = crate::session::lock(&self.state);
        if seen != self.generation() {
            return None;
        }
        let fault = Fault {
            device,
            code,
            witness,
            ended: seen,
            at: Instant::now(),
        };
        self.code.store(code, Ordering::Release);
        self.generation.store(seen + 1, Ordering::Release);
        self.faults.fetch_add(1, Ordering::Relaxed);
        st.pending = Some(fault);
        self.changed.notify_all();
        Some(fault)
    }

    /// The generation a new session is born in, once no recovery is pending (a session set
    /// up in between would register its memory in a context about to be reset).
    pub fn birth(&self) -> u64 {
        let mut st = crate::session::lock(&self.state);
        while st.pending.is_some() {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        self.generation()
    }

    /// Waits up to `timeout` for a fault to recover from (the recovery thread).
    pub fn next_fault(&self, timeout: Duration) -> Option<Fault> {
        let st = crate::session::lock(&self.state);
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |s| s.pending.is_none())
            .unwrap_or_else(|e| e.into_inner());
        st.pending
    }

    /// Waits until no thread is inside the driver, then holds everyone out. Threads of dead
    /// sessions leave quickly (their commands are answered without the driver), so a few
    /// tries suffice; a thread stuck inside the driver is reported while it is waited for.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        let start = Instant::now();
        let mut warned = Duration::ZERO;
        loop {
            match self.ctx.try_write() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            let waited = start.elapsed();
            if waited >= warned + Duration::from_secs(5) {
                warned = waited;
                tracing::warn!(
                    waited_s = waited.as_secs(),
                    "context reset is waiting for a thread still inside the driver"
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The pending fault is resolved: new sessions may be set up.
    pub fn resolved(&self) {
        crate::session::lock(&self.state).pending = None;
        self.changed.notify_all();
    }
}

/// A tenant a fault may have come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    pub session: u64,
    pub tenant: String,
    pub pid: u32,
    pub uid: u32,
    /// The kernel it launched last, where known.
    pub kernel: Option<String>,
    /// Items the scheduler had in flight for it (0 under `passthrough`).
    pub in_flight: u64,
}

/// What [`recover`] did.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Tenants that had work running when the fault was noticed: exactly one is the culprit;
    /// several are each "possibly"; none means the daemon cannot tell.
    pub suspects: Vec<Suspect>,
    /// Sessions whose work and objects the fault ended.
    pub ended: Vec<u64>,
    /// Scheduler items that will never complete and were released.
    pub abandoned: usize,
    /// Whether every device's context was reset.
    pub reset: bool,
}

/// Recovers from `fault`: marks every session of the ended generation dead, logs who may have
/// caused it, releases the scheduler's work that will never complete, and (with every thread
/// out of the driver) resets each device's context and registers the schedulers' completion
/// words with the new one. New sessions may be set up once it returns.
pub fn recover(
    exec: &dyn Executor,
    monitor: &FaultMonitor,
    schedulers: &[Arc<DeviceScheduler>],
    sessions: &[Arc<Shared>],
    sharing: &crate::session::sharing::Registry,
    fault: Fault,
) -> Recovery {
    let mut out = Recovery::default();
    let ended: Vec<&Arc<Shared>> = sessions
        .iter()
        .filter(|s| s.born.load(Ordering::Acquire) <= fault.ended)
        .collect();
    // Dead from now on: their queued work gives up and their commands are refused.
    for s in &ended {
        let _ = s
            .fault
            .compare_exchange(0, fault.code, Ordering::AcqRel, Ordering::Acquire);
        out.ended.push(s.identity.session);
    }

    // Who had work running: the scheduler knows what is in flight; without one (or when it
    // tracked nothing), sessions that launched since their last successful synchronisation.
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    for d in schedulers {
        for (t, f) in d.figures() {
            *in_flight.entry(t).or_default() += f.in_flight;
        }
    }
    let suspect = |s: &Arc<Shared>| Suspect {
        session: s.identity.session,
        tenant: s.identity.tenant.clone(),
        pid: s.identity.pid,
        uid: s.identity.uid,
        kernel: s.last_kernel_name(),
        in_flight: in_flight.get(&s.identity.session).copied().unwrap_or(0),
    };
    out.suspects = ended
        .iter()
        .filter(|s| in_flight.get(&s.identity.session).is_some_and(|&n| n > 0))
        .map(|s| suspect(s))
        .collect();
    if out.suspects.is_empty() {
        out.suspects = ended
            .iter()
            .filter(|s| s.unsynced.load(Ordering::Relaxed))
            .map(|s| suspect(s))
            .collect();
    }
    log_fault(&fault, &out, &ended);

    // Admissions waiting on work that will never complete go now; the rest of the threads
    // inside the driver see the sticky error and leave.
    out.abandoned = schedulers.iter().map(|d| d.abandon()).sum();
    let started = Instant::now();
    let guard = monitor.exclusive();
    // Work issued between the first release and now.
    out.abandoned += schedulers.iter().map(|d| d.abandon()).sum::<usize>();
    // Every shared object lived in the context that is going: a handle of one must not open
    // whatever the new context puts at the same address. Nothing can export meanwhile (the
    // old sessions are dead, new ones wait for the reset).
    sharing.forget_all();
    out.reset = true;
    for device in 0..exec.devices().len() as u32 {
        if let Err(e) = exec.reset_device(device) {
            out.reset = false;
            tracing::error!(
                device,
                error = e.0,
                "could not reset the GPU context in place after a kernel fault"
            );
        }
    }
    // Without a fresh context there is nothing to register with: batond starts over instead.
    if out.reset {
        for d in schedulers {
            if let Err(e) = d.rebind() {
                tracing::error!(error = e.0, "could not register the scheduler's completion words with the new context; scheduling continues untimed");
            }
        }
    }
    // Their memory went with the context.
    for s in &ended {
        s.release_memory();
    }
    drop(guard);
    monitor.resolved();
    if out.reset {
        tracing::info!(
            ended = out.ended.len(),
            abandoned = out.abandoned,
            waited_ms = started.elapsed().as_millis() as u64,
            "GPU context reset after the kernel fault; serving new clients"
        );
    }
    out
}

/// One error line for the fault, one per suspect, one warning per other tenant it ended.
fn log_fault(fault: &Fault, r: &Recovery, ended: &[&Arc<Shared>]) {
    let witness = match fault.witness {
        Witness::Session(s) => format!("session {s}"),
        Witness::Poller => "the daemon's probe".to_string(),
    };
    tracing::error!(
        code = fault.code,
        device = fault.device,
        first_seen_by = %witness,
        sessions_ended = r.ended.len(),
        "kernel fault (CUDA error {}) poisoned the shared GPU context: every connected client loses its work and gets this error; the context is being reset",
        fault.code
    );
    let n = r.suspects.len();
    for s in &r.suspects {
        let kernel = s.kernel.as_deref().unwrap_or("unknown");
        if n == 1 {
            tracing::error!(tenant = %s.tenant, session = s.session, pid = s.pid, uid = s.uid, kernel, in_flight = s.in_flight,
                "kernel fault caused by tenant {} (the only tenant with work running)", s.tenant);
        } else {
            tracing::error!(tenant = %s.tenant, session = s.session, pid = s.pid, uid = s.uid, kernel, in_flight = s.in_flight,
                "kernel fault possibly caused by tenant {} (one of {n} tenants with work running)", s.tenant);
        }
    }
    if n == 0 {
        tracing::error!(
            "kernel fault: no tenant had work known to be running; the culprit cannot be named"
        );
    }
    for s in ended {
        if !r.suspects.iter().any(|x| x.session == s.identity.session) {
            tracing::warn!(tenant = %s.identity.tenant, session = s.identity.session, pid = s.identity.pid, uid = s.identity.uid,
                "session ended by another tenant's kernel fault");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_ends_one_generation_once() {
        let m = FaultMonitor::default();
        let born = m.birth();
        assert_eq!(m.dead(born), None);
        let f = m
            .report(0, 700, Witness::Session(3), born)
            .expect("first report");
        assert_eq!((f.ended, f.code), (born, 700));
        assert_eq!(m.dead(born), Some(700));
        // The same fault seen by another thread of the ended generation is not a new one.
        assert!(m.report(0, 719, Witness::Poller, born).is_none());
        assert_eq!(m.faults(), 1);
        assert!(m.next_fault(Duration::ZERO).is_some());
        m.resolved();
        let next = m.birth();
        assert_eq!(next, born + 1);
        assert_eq!(m.dead(next), None);
        assert!(m.next_fault(Duration::ZERO).is_none());
    }

    #[test]
    fn sticky_codes_are_the_context_ending_ones() {
        assert!(is_sticky(700) && is_sticky(719) && is_sticky(710));
        assert!(!is_sticky(1) && !is_sticky(2) && !is_sticky(701) && !is_sticky(600));
    }
}
