//! `passthrough`: issue everything at once, in arrival order. What the daemon did before it had
//! a scheduler, and what MPS does: the GPU's own block scheduler decides who runs.

use super::{InFlight, Policy, WorkItem};
use std::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough;

impl Policy for Passthrough {
    fn name(&self) -> &'static str {
        "passthrough"
    }

    fn pick(&mut self, _: Instant, ready: &[WorkItem], _: &InFlight, out: &mut Vec<usize>) {
        let start = out.len();
        out.extend(0..ready.len());
        out[start..].sort_by_key(|&i| ready[i].id);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, Work, WorkKind};
    use super::*;

    #[test]
    fn issues_everything_in_arrival_order() {
        let t0 = Instant::now();
        let mut s: Scheduler<u32> = Scheduler::new(Box::new(Passthrough));
        let mut n = 0;
        for round in 0..50u64 {
            for tenant in 0..4u64 {
                let w = Work {
                    tenant,
                    stream: round % 3,
                    job: 0,
                    kind: WorkKind::Kernel,
                    key: None,
                };
                s.submit(t0, w, n);
                n += 1;
            }
        }
        let mut out = Vec::new();
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 200);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.in_flight().len(), 200);
        // Within each stream, in submission order.
        for t in 0..4 {
            for st in 0..3 {
                let ids: Vec<u64> = out
                    .iter()
                    .filter(|(i, _)| i.tenant == t && i.stream == st)
                    .map(|(i, _)| i.id)
                    .collect();
                assert!(ids.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
