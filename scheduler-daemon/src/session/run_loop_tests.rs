//! The session thread's wait for its ring: an idle client costs no spinning.

use super::hostile::session_with;
use crate::config::TenantPolicy;
use crate::executor::sim::SimExecutor;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn an_idle_session_thread_sleeps_without_spinning() {
    let exec = Arc::new(SimExecutor::new());
    let s = session_with(&exec, 1, TenantPolicy::default());
    let shared = s.shared.clone();
    let thread = std::thread::spawn(move || s.run());
    let waits = &shared.ring_waits;
    let deadline = Instant::now() + Duration::from_secs(10);
    while waits.idle_sleeps.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the session thread never slept");
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.closed.store(true, Ordering::Release);
    assert!(matches!(thread.join().unwrap(), super::End::Closed));
    // One spin before the first sleep (as after any command), none after an empty wake-up.
    assert_eq!(waits.spins.load(Ordering::Relaxed), 1);
    assert_eq!(waits.missed_spins.load(Ordering::Relaxed), 1);
    assert!(waits.idle_sleeps.load(Ordering::Relaxed) >= 3);
}
