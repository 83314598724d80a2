//! Cost estimates: an exponentially weighted moving average of measured GPU time per kernel
//! (function and grid) of each tenant, with fallbacks for work never measured.

use super::{TenantId, WorkKind};
use std::collections::HashMap;
use std::time::Duration;

/// The estimate for work nothing is known about: neither its key nor anything of its kind from
/// the same tenant has been measured.
pub const DEFAULT_COST: Duration = Duration::from_micros(100);
/// Weight of a new measurement in the average.
pub const DEFAULT_ALPHA: f64 = 0.25;
/// Keys remembered per tenant; past this, the tenant's table starts over (a client could
/// otherwise grow it without bound by launching with ever new grids).
pub const MAX_KEYS_PER_TENANT: usize = 4096;

/// What an estimate is kept under. Function ids are the session's own (the tenant is part of
/// every lookup, so ids of different sessions never mix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CostKey {
    /// A kernel: same function and same grid take about the same time.
    Kernel { func: u64, grid: [u32; 3] },
    /// A copy or memset: direction (caller-defined) and size class (`log2` of the bytes).
    Copy { dir: u8, size_class: u8 },
    /// Anything else the caller can name.
    Other(u64),
}

impl CostKey {
    pub fn kernel(func: u64, grid: [u32; 3]) -> CostKey {
        CostKey::Kernel { func, grid }
    }

    /// Copies of 2^k..2^(k+1) bytes share a size class.
    pub fn copy(dir: u8, bytes: u64) -> CostKey {
        CostKey::Copy {
            dir,
            size_class: (u64::BITS - bytes.leading_zeros()) as u8,
        }
    }
}

/// An exponentially weighted moving average; the first sample is taken as is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    mean: f64,
    samples: u64,
}

impl Ewma {
    pub fn update(&mut self, x: f64, alpha: f64) {
        self.mean = if self.samples == 0 {
            x
        } else {
            self.mean + alpha * (x - self.mean)
        };
        self.samples += 1;
    }

    /// `None` before the first sample.
    pub fn mean(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.mean)
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }
}

/// How many of the latest measurements [`RecentMin`] keeps.
pub const RECENT: usize = 16;

/// The smallest of the latest [`RECENT`] measurements. Waiting behind other tenants' work can
/// only make a job look longer than it is, so on a busy GPU this is a far steadier view of a
/// job's own size than an average, which the slowest runs pull up.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentMin {
    last: [f64; RECENT],
    len: usize,
    next: usize,
}

impl RecentMin {
    pub fn update(&mut self, x: f64) {
        self.last[self.next] = x;
        self.next = (self.next + 1) % RECENT;
        self.len = (self.len + 1).min(RECENT);
    }

    /// How many measurements it holds (at most [`RECENT`]).
    pub fn samples(&self) -> usize {
        self.len
    }

    /// `None` before the first measurement.
    pub fn min(&self) -> Option<f64> {
        self.last[..self.len].iter().copied().reduce(f64::min)
    }
}

#[derive(Default)]
struct TenantCosts {
    keys: HashMap<CostKey, Ewma>,
    /// Per [`WorkKind`]: the fallback for keys not yet measured.
    kinds: [Ewma; 3],
}

fn kind_index(k: WorkKind) -> usize {
    match k {
        WorkKind::Kernel => 0,
        WorkKind::Copy => 1,
        WorkKind::Other => 2,
    }
}

/// Per-tenant EWMAs of measured GPU time.
pub struct Estimator {
    alpha: f64,
    tenants: HashMap<TenantId, TenantCosts>,
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator::new(DEFAULT_ALPHA)
    }
}

impl Estimator {
    /// `alpha` in (0, 1]: the weight of each new measurement.
    pub fn new(alpha: f64) -> Estimator {
        Estimator {
            alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0),
            tenants: HashMap::new(),
        }
    }

    /// The measured average for exactly this key, if any.
    pub fn known(&self, tenant: TenantId, key: CostKey) -> Option<Duration> {
        let m = self.tenants.get(&tenant)?.keys.get(&key)?.mean()?;
        Some(Duration::from_secs_f64(m))
    }

    /// The best guess: the key's average, else the tenant's average for this kind of work,
    /// else [`DEFAULT_COST`].
    pub fn estimate(&self, tenant: TenantId, kind: WorkKind, key: Option<CostKey>) -> Duration {
        let Some(t) = self.tenants.get(&tenant) else {
            return DEFAULT_COST;
        };
        key.and_then(|k| t.keys.get(&k))
            .and_then(Ewma::mean)
            .or_else(|| t.kinds[kind_index(kind)].mean())
            .map_or(DEFAULT_COST, Duration::from_secs_f64)
    }

    /// Adds a measurement.
    pub fn record(
        &mut self,
        tenant: TenantId,
        kind: WorkKind,
        key: Option<CostKey>,
        measured: Duration,
    ) {
        let x = measured.as_secs_f64();
        let t = self.tenants.entry(tenant).or_default();
        t.kinds[kind_index(kind)].update(x, self.alpha);
        if let Some(k) = key {
            if t.keys.len() >= MAX_KEYS_PER_TENANT && !t.keys.contains_key(&k) {
                t.keys.clear();
            }
            t.keys.entry(k).or_default().update(x, self.alpha);
        }
    }

    pub fn forget(&mut self, tenant: TenantId) {
        self.tenants.remove(&tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn recent_min_forgets_all_but_the_latest() {
        let mut m = RecentMin::default();
        assert_eq!(m.min(), None);
        m.update(3.0);
        m.update(1.0);
        assert_eq!(m.min(), Some(1.0));
        for _ in 0..RECENT - 1 {
            m.update(5.0);
        }
        // The 1.0 is the oldest of the latest RECENT: still there.
        assert_eq!(m.min(), Some(1.0));
        m.update(4.0);
        assert_eq!(m.min(), Some(4.0));
    }

    #[test]
    fn ewma_follows_measurements() {
        let mut e = Estimator::new(0.5);
        let k = CostKey::kernel(1, [128, 1, 1]);
        assert_eq!(e.estimate(1, WorkKind::Kernel, Some(k)), DEFAULT_COST);
        e.record(1, WorkKind::Kernel, Some(k), US(100));
        assert_eq!(e.known(1, k), Some(US(100)));
        e.record(1, WorkKind::Kernel, Some(k), US(300));
        assert_eq!(e.known(1, k), Some(US(200)));
        e.record(1, WorkKind::Kernel, Some(k), US(200));
        assert_eq!(e.estimate(1, WorkKind::Kernel, Some(k)), US(200));
    }

    #[test]
    fn keys_are_per_tenant_and_grid() {
        let mut e = Estimator::default();
        let small = CostKey::kernel(1, [1, 1, 1]);
        let big = CostKey::kernel(1, [1024, 1, 1]);
        e.record(1, WorkKind::Kernel, Some(small), US(10));
        e.record(1, WorkKind::Kernel, Some(big), US(900));
        assert_eq!(e.known(1, small), Some(US(10)));
        assert_eq!(e.known(1, big), Some(US(900)));
        assert_eq!(e.known(2, small), None, "other tenants' ids are unrelated");
        assert_eq!(e.estimate(2, WorkKind::Kernel, Some(small)), DEFAULT_COST);
    }

    #[test]
    fn unknown_keys_fall_back_to_the_kind_average() {
        let mut e = Estimator::new(1.0);
        e.record(1, WorkKind::Copy, Some(CostKey::copy(0, 1 << 20)), US(50));
        assert_eq!(
            e.estimate(1, WorkKind::Copy, Some(CostKey::copy(0, 1 << 30))),
            US(50)
        );
        assert_eq!(e.estimate(1, WorkKind::Copy, None), US(50));
        assert_eq!(e.estimate(1, WorkKind::Kernel, None), DEFAULT_COST);
        e.forget(1);
        assert_eq!(e.estimate(1, WorkKind::Copy, None), DEFAULT_COST);
    }

    #[test]
    fn copy_size_classes() {
        assert_eq!(
            CostKey::copy(1, 0),
            CostKey::Copy {
                dir: 1,
                size_class: 0
            }
        );
        assert_eq!(CostKey::copy(1, 4096), CostKey::copy(1, 8191));
        assert_ne!(CostKey::copy(1, 4096), CostKey::copy(1, 8192));
        assert_ne!(CostKey::copy(1, 4096), CostKey::copy(2, 4096));
    }

    #[test]
    fn table_is_bounded() {
        let mut e = Estimator::default();
        for f in 0..(MAX_KEYS_PER_TENANT as u64 + 10) {
            e.record(
                1,
                WorkKind::Kernel,
                Some(CostKey::kernel(f, [1, 1, 1])),
                US(1),
            );
        }
        assert!(e.tenants[&1].keys.len() <= MAX_KEYS_PER_TENANT);
    }
}
