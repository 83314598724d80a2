//! SM partitioning: the streams of a tenant whose policy has `sm_share < 1` are made in a green
//! context of that share of the device's SMs, so its kernels run on those SMs only.
//!
//! The share is a cap, not a reservation: every tenant with the same share on a device uses the
//! same green context (the same SMs), and the others' kernels may run on those SMs too. Where
//! the driver or GPU has no green contexts, streams are ordinary ones (logged once): a tenant
//! is never refused for it.

use crate::executor::{Executor, GpuResult, Raw, SmResource};
use std::sync::atomic::{AtomicBool, Ordering};

/// The SM count for `share` of `res`: the nearest size the driver allows (a multiple of the
/// alignment, at least the minimum partition). `None` when that is the whole device, which
/// ordinary streams already give.
pub fn partition_size(share: f64, res: SmResource) -> Option<u32> {
    if !(share > 0.0 && share < 1.0) || res.count == 0 {
        return None;
    }
    let align = res.alignment.max(1);
    let want = share * f64::from(res.count) / f64::from(align);
    let n = (want.round() as u32 * align)
        .max(res.min_partition)
        .max(align);
    (n < res.count).then_some(n)
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The green context for `share` on `device`, or `None` for ordinary streams (the whole
/// device, or no green contexts to be had).
fn green_ctx(exec: &dyn Executor, device: u32, share: f64) -> Option<Raw> {
    let made = exec.sm_resource(device).and_then(|res| {
        Ok(match partition_size(share, res) {
            Some(n) => Some(exec.green_ctx(device, n)?.0),
            None => None,
        })
    });
    match made {
        Ok(g) => g,
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    device,
                    sm_share = share,
                    error = e.0,
                    "no green context for an SM share (driver before 12.4, or GPU without \
                     them): such tenants get ordinary streams on every SM"
                );
            }
            None
        }
    }
}

/// A stream for a tenant with `sm_share` (`None`: the whole GPU): in the share's green context
/// where there is one, else an ordinary stream.
pub fn stream_create(
    exec: &dyn Executor,
    sm_share: Option<f64>,
    device: u32,
    priority: i32,
) -> GpuResult<Raw> {
    if let Some(g) = sm_share.and_then(|share| green_ctx(exec, device, share)) {
        match exec.green_stream_create(device, g, priority) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        device,
                        error = e.0,
                        "cuGreenCtxStreamCreate failed: ordinary streams instead"
                    );
                }
            }
        }
    }
    exec.stream_create(device, priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100: SmResource = SmResource {
        count: 132,
        min_partition: 8,
        alignment: 8,
    };

    #[test]
    fn sizes_round_to_the_drivers_granularity() {
        assert_eq!(partition_size(0.25, H100), Some(32)); // 33 -> 32
        assert_eq!(partition_size(0.5, H100), Some(64)); // 66 -> 64
        assert_eq!(partition_size(0.75, H100), Some(96)); // 99 -> 96
        assert_eq!(partition_size(0.01, H100), Some(8), "at least the minimum");
        assert_eq!(
            partition_size(0.99, H100),
            Some(128),
            "short of the whole GPU"
        );
        assert_eq!(partition_size(1.0, H100), None);
        let small = SmResource {
            count: 4,
            min_partition: 2,
            alignment: 2,
        };
        assert_eq!(partition_size(0.5, small), Some(2));
        assert_eq!(partition_size(0.1, small), Some(2));
        assert_eq!(partition_size(0.8, small), None, "rounds to the whole GPU");
    }
}
