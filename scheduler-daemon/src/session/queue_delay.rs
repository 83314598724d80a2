//! Queueing delay per session: from reading a command off the ring to issuing it to the driver.
//!
//! Recorded on the session thread for every issued launch, copy and memset, under every policy,
//! so it must cost next to nothing: a fixed array of log-scale buckets (four per power of two,
//! so a percentile is off by at most a quarter), one relaxed atomic add per sample, no
//! allocation. `status` reads it from another thread.

use baton_ipc::control::DelaySummary;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Four buckets per power of two of nanoseconds, up to about 2^41 ns (36 minutes).
const BUCKETS: usize = 164;

pub struct QueueDelay {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for QueueDelay {
    fn default() -> Self {
        QueueDelay {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros() as usize;
    let sub = ((ns >> (msb - 2)) & 3) as usize;
    ((msb - 1) * 4 + sub).min(BUCKETS - 1)
}

/// The largest value bucket `i` holds.
fn upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let (msb, sub) = (i / 4 + 1, (i % 4) as u64);
    ((5 + sub) << (msb - 2)) - 1
}

impl QueueDelay {
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// For each edge, how many delays were shorter than it: exact when every edge is a power
    /// of two of nanoseconds (a bucket never straddles one).
    pub fn counts_below(&self, edges_ns: &[u64]) -> Vec<u64> {
        let mut below = vec![0; edges_ns.len()];
        for (i, b) in self.buckets.iter().enumerate() {
            let c = b.load(Ordering::Relaxed);
            if c == 0 {
                continue;
            }
            for (n, &edge) in below.iter_mut().zip(edges_ns) {
                if upper(i) < edge {
                    *n += c;
                }
            }
        }
        below
    }

    /// Percentiles are the upper bound of the bucket they fall in.
    pub fn summary(&self) -> DelaySummary {
        let counts: [u64; BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            counts.iter().enumerate().find_map(|(i, &c)| {
                seen += c;
                (seen >= rank).then(|| upper(i))
            })
        };
        DelaySummary {
            count,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            p50_ns: (count > 0).then(|| quantile(0.5)).flatten(),
            p99_ns: (count > 0).then(|| quantile(0.99)).flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_below_powers_of_two_are_exact() {
        let q = QueueDelay::default();
        for ns in [1000u64, 1023, 1024, 1025, 4095, 4096, 70_000] {
            q.record(Duration::from_nanos(ns));
        }
        assert_eq!(
            q.counts_below(&[1024, 4096, 1 << 16, 1 << 20]),
            [2, 5, 6, 7]
        );
    }

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket(upper(i)), i, "upper bound of {i}");
            assert_eq!(bucket(upper(i) + 1), i + 1, "first value after {i}");
        }
        for ns in [0, 1, 5, 999, 1_000, 123_456, 10_000_000_000] {
            let u = upper(bucket(ns));
            assert!(u >= ns && u <= ns + ns / 4, "{ns} -> {u}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles() {
        let q = QueueDelay::default();
        assert_eq!(q.summary(), DelaySummary::default());
        for _ in 0..98 {
            q.record(Duration::from_micros(10));
        }
        q.record(Duration::from_millis(5));
        q.record(Duration::from_millis(5));
        let s = q.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.sum_ns, 98 * 10_000 + 2 * 5_000_000);
        let (p50, p99) = (s.p50_ns.unwrap(), s.p99_ns.unwrap());
        assert!((10_000..=12_500).contains(&p50), "{p50}");
        assert!((5_000_000..=6_250_000).contains(&p99), "{p99}");
    }
}
