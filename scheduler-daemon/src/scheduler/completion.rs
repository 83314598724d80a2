//! Completions from GPU-written counters.
//!
//! After issuing an item on a stream, the daemon has the GPU write the item's sequence number
//! into a word of host memory (`cuStreamWriteValue64`, as it already does for the clients'
//! completion words). A poller reads the words; [`Tracker::observe`] turns "this stream reached
//! sequence N" into the items that completed and how long each took on the GPU: from the later
//! of its issue and the previous completion on its stream, to when the word was seen. Items of
//! a stream run one after the other, so this is the item's own time, give or take the polling
//! interval; items seen complete together share the interval equally.

use super::ItemId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Lane {
    next: u64,
    pending: VecDeque<(u64, ItemId, Instant)>,
    last_done: Option<Instant>,
}

/// Per stream ("lane": whatever key the caller uses, e.g. the daemon stream handle), the
/// issued items and the sequence numbers the GPU will write after each.
#[derive(Default)]
pub struct Tracker {
    lanes: HashMap<u64, Lane>,
}

impl Tracker {
    /// Records that `id` was issued on `lane`; returns the value to have the GPU write after it.
    /// Values start at 1 and grow by 1 per item on the lane.
    pub fn issued(&mut self, lane: u64, id: ItemId, now: Instant) -> u64 {
        let l = self.lanes.entry(lane).or_default();
        l.next += 1;
        l.pending.push_back((l.next, id, now));
        l.next
    }

    /// Takes back the last [`Tracker::issued`] on `lane` if it was `id`: the write that would
    /// have reported it could not be issued.
    pub fn withdraw_last(&mut self, lane: u64, id: ItemId) {
        if let Some(l) = self.lanes.get_mut(&lane) {
            if l.pending.back().is_some_and(|p| p.1 == id) {
                l.pending.pop_back();
                l.next -= 1;
            }
        }
    }

    /// The GPU wrote `value` on `lane`, seen at `now`: appends `(item, gpu_time)` for every item
    /// up to that value, in order.
    pub fn observe(
        &mut self,
        lane: u64,
        value: u64,
        now: Instant,
        out: &mut Vec<(ItemId, Duration)>,
    ) {
        let Some(l) = self.lanes.get_mut(&lane) else {
            return;
        };
        let n = l.pending.iter().take_while(|p| p.0 <= value).count();
        if n == 0 {
            return;
        }
        let first_issue = l.pending[0].2;
        let start = l.last_done.map_or(first_issue, |d| d.max(first_issue));
        let share = now.saturating_duration_since(start) / n as u32;
        out.extend(l.pending.drain(..n).map(|(_, id, _)| (id, share)));
        l.last_done = Some(now);
    }

    /// Lanes with items not yet seen complete (the ones worth polling).
    pub fn busy_lanes(&self) -> impl Iterator<Item = u64> + '_ {
        self.lanes
            .iter()
            .filter(|(_, l)| !l.pending.is_empty())
            .map(|(k, _)| *k)
    }

    /// Forgets a lane (its stream was destroyed after synchronising); returns the items it
    /// still had pending.
    pub fn forget(&mut self, lane: u64) -> Vec<ItemId> {
        self.lanes
            .remove(&lane)
            .map(|l| l.pending.into_iter().map(|p| p.1).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_in_order_with_durations() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut t = Tracker::default();
        assert_eq!(t.issued(7, 100, t0), 1);
        assert_eq!(t.issued(7, 101, t0), 2);
        assert_eq!(t.issued(7, 102, t0 + us(10)), 3);
        let mut out = Vec::new();
        t.observe(7, 0, t0 + us(5), &mut out);
        assert!(out.is_empty());
        t.observe(7, 1, t0 + us(50), &mut out);
        assert_eq!(out, [(100, us(50))]);
        out.clear();
        // Two seen together share the interval since the last completion.
        t.observe(7, 3, t0 + us(150), &mut out);
        assert_eq!(out, [(101, us(50)), (102, us(50))]);
        assert_eq!(t.busy_lanes().count(), 0);
        // Issued after the stream went idle: timed from its issue.
        t.issued(7, 103, t0 + us(1000));
        out.clear();
        t.observe(7, 4, t0 + us(1020), &mut out);
        assert_eq!(out, [(103, us(20))]);
        t.issued(8, 104, t0);
        assert_eq!(t.busy_lanes().collect::<Vec<_>>(), [8]);
        t.withdraw_last(8, 999);
        assert_eq!(t.issued(8, 105, t0), 2);
        t.withdraw_last(8, 105);
        assert_eq!(t.issued(8, 106, t0), 2, "the withdrawn value is reused");
        assert_eq!(t.forget(8), [104, 106]);
    }
}
