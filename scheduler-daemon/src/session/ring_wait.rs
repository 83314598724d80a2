//! How a session thread waits for its client's next command.
//!
//! Right after a command it spins a little (a launch-bound client sends bursts, and waking a
//! sleeping thread costs microseconds), then sleeps on the ring's doorbell. The spin adapts: each
//! spin that catches a message doubles the next one (up to [`SPIN`]), each that catches nothing
//! halves it (down to [`SPIN_FLOOR`]). A client whose next command comes within the spin keeps
//! the whole spin; one that takes longer (a client that waits for its results, or one that
//! is not running because the CPUs are busy) stops costing the daemon a spin per command. On
//! two cores with 32 such clients, spinning was 86% of the daemon's CPU time.
//!
//! A short-job tenant on the fast lane spins longer ([`FAST_LANE_SPIN`] at most, adapting the
//! same way on its own): its next request tends to come a little later, and a wake-up would add
//! to every one of them. Since a miss shortens the spin by less than a catch lengthens it, the
//! spin stays long while more than about three in ten of them catch the next command.
//!
//! An idle client's thread wakes only to look at `closed` and the context's health, and goes
//! back to sleep without spinning; each empty sleep doubles the next, from [`IDLE_SLEEP`] to
//! [`IDLE_SLEEP_MAX`], and a command starts it over. (64 idle clients, 100 ms sleeps and a spin
//! per wake-up: 4.5% of a core; without the spin and up to 1 s: 0.2%.)

use baton_ipc::ring::{Consumer, RingError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest spin on an empty ring after a command.
const SPIN: Duration = Duration::from_micros(50);
/// The shortest: a spin this short costs less than the wake-up it may save.
const SPIN_FLOOR: Duration = Duration::from_micros(2);
/// The longest spin of a tenant whose jobs are on the fast lane.
const FAST_LANE_SPIN: Duration = Duration::from_micros(500);
const IDLE_SLEEP: Duration = Duration::from_millis(100);
const IDLE_SLEEP_MAX: Duration = Duration::from_secs(1);

/// How a session thread has waited for its ring (relaxed counters, for tests and figures).
#[derive(Debug, Default)]
pub struct RingWaits {
    /// Spins on an empty ring (each right after the client sent something).
    pub spins: AtomicU64,
    /// Spins that ended with nothing to read (the thread then slept).
    pub missed_spins: AtomicU64,
    /// Sleeps that ended with nothing to read (the sleep's time passed).
    pub idle_sleeps: AtomicU64,
}

/// One session thread's waiting state.
pub(super) struct RingWait {
    spin: Duration,
    /// The same while the tenant's jobs are on the fast lane.
    fast_spin: Duration,
    /// The last wait ended with nothing to read: the client is idle.
    idle: bool,
    sleep: Duration,
}

impl RingWait {
    pub fn new() -> RingWait {
        RingWait {
            spin: SPIN,
            fast_spin: FAST_LANE_SPIN,
            idle: false,
            sleep: IDLE_SLEEP,
        }
    }

    /// The client sent a command.
    pub fn command(&mut self) {
        self.idle = false;
        self.sleep = IDLE_SLEEP;
    }

    /// Waits for the next message; `Ok(false)` when a sleep passed with nothing to read.
    pub fn wait(
        &mut self,
        consumer: &mut Consumer,
        fast_lane: bool,
        counters: &RingWaits,
    ) -> Result<bool, RingError> {
        if !self.idle {
            let (spin, max) = if fast_lane {
                (&mut self.fast_spin, FAST_LANE_SPIN)
            } else {
                (&mut self.spin, SPIN)
            };
            counters.spins.fetch_add(1, Ordering::Relaxed);
            // A zero timeout: spin only, no sleep.
            let caught = consumer.wait(*spin, Duration::ZERO)?;
            *spin = if caught {
                (*spin * 2).min(max)
            } else {
                (*spin * 3 / 4).max(SPIN_FLOOR)
            };
            if caught {
                return Ok(true);
            }
            counters.missed_spins.fetch_add(1, Ordering::Relaxed);
        }
        let got = consumer.wait(Duration::ZERO, self.sleep)?;
        self.idle = !got;
        if self.idle {
            counters.idle_sleeps.fetch_add(1, Ordering::Relaxed);
            self.sleep = (self.sleep * 2).min(IDLE_SLEEP_MAX);
        }
        Ok(got)
    }

    /// The spins the next wait after a command starts with: (normal, fast lane).
    #[cfg(test)]
    pub fn spins(&self) -> (Duration, Duration) {
        (self.spin, self.fast_spin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_ipc::ring::{Producer, HEADER_SIZE, SLOT_SIZE};
    use baton_ipc::shm::SharedRegion;

    fn ring() -> (SharedRegion, Producer, Consumer) {
        let len = HEADER_SIZE + 64 * SLOT_SIZE;
        let mem = SharedRegion::create("ring-wait-test", len).unwrap();
        // SAFETY: a fresh page-aligned mapping of `len` bytes, kept alive with the ring ends.
        let consumer = unsafe { Consumer::init(mem.as_ptr(), len, 64) }.unwrap();
        // SAFETY: as above; the ring was initialised just now.
        let producer = unsafe { Producer::attach(mem.as_ptr(), len) }.unwrap();
        (mem, producer, consumer)
    }

    #[test]
    fn spins_that_catch_nothing_shrink_and_spins_that_catch_a_message_grow_back() {
        let (_mem, producer, mut consumer) = ring();
        let counters = RingWaits::default();
        let mut w = RingWait::new();
        assert_eq!(w.spins().0, SPIN);
        // Nobody writes: every spin misses, and the sleep after it ends empty.
        let mut spins = vec![w.spins().0];
        for _ in 0..5 {
            w.command();
            assert!(!w.wait(&mut consumer, false, &counters).unwrap());
            spins.push(w.spins().0);
        }
        assert_eq!(
            spins,
            [50_000, 37_500, 28_125, 21_093, 15_819, 11_864].map(Duration::from_nanos)
        );
        assert_eq!(counters.missed_spins.load(Ordering::Relaxed), 5);
        // A message already there is caught by the spin, which doubles again.
        let mut buf = Vec::new();
        for want in [23_728, 47_456, 50_000, 50_000] {
            producer.push(b"x", &|| true).unwrap();
            w.command();
            assert!(w.wait(&mut consumer, false, &counters).unwrap());
            assert!(consumer.try_pop(&mut buf).unwrap());
            assert_eq!(w.spins().0, Duration::from_nanos(want));
        }
        assert_eq!(counters.missed_spins.load(Ordering::Relaxed), 5);
        assert_eq!(counters.spins.load(Ordering::Relaxed), 9);
    }

    #[test]
    fn the_fast_lane_adapts_on_its_own_and_an_idle_client_is_not_spun_for() {
        let (_mem, _producer, mut consumer) = ring();
        let counters = RingWaits::default();
        let mut w = RingWait::new();
        assert!(!w.wait(&mut consumer, true, &counters).unwrap());
        let (normal, fast) = w.spins();
        assert_eq!(
            normal, SPIN,
            "a fast-lane miss leaves the normal spin alone"
        );
        assert_eq!(fast, FAST_LANE_SPIN * 3 / 4);
        // Idle now: the next waits sleep at once, each longer than the one before.
        assert!(!w.wait(&mut consumer, true, &counters).unwrap());
        assert!(!w.wait(&mut consumer, false, &counters).unwrap());
        assert_eq!(counters.spins.load(Ordering::Relaxed), 1);
        assert_eq!(counters.idle_sleeps.load(Ordering::Relaxed), 3);
        assert_eq!(w.sleep, Duration::from_millis(800));
        w.command();
        assert_eq!(w.sleep, IDLE_SLEEP);
    }
}
