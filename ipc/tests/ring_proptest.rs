//! Property tests: hostile ring memory never makes the consumer panic or hang, and any sequence
//! of pushes and pops round-trips.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use baton_ipc::ring::{self, Consumer, Producer, RingError, RingLayout};

/// 8-byte aligned heap memory, accessed only through atomics (so a racing writer is not UB).
struct Mem(Vec<AtomicU64>);

impl Mem {
    fn new(bytes: usize) -> Mem {
        Mem((0..bytes.div_ceil(8)).map(|_| AtomicU64::new(0)).collect())
    }
    fn ptr(&self) -> *mut u8 {
        self.0.as_ptr().cast_mut().cast()
    }
    fn len(&self) -> usize {
        self.0.len() * 8
    }
    /// Overwrites bytes `[off, off + data.len())` (clipped to the buffer).
    fn write(&self, off: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = off + i;
            if at >= self.len() {
                break;
            }
            let word = &self.0[at / 8];
            let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            bytes[at % 8] = b;
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }
}

fn capacity() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![2u32, 4, 8, 16, 32])
}

/// Drives the consumer as a daemon would, a bounded number of times; must not panic.
fn drain(c: &mut Consumer) {
    let mut out = Vec::new();
    for _ in 0..(2 * c.capacity() as usize + 4) {
        match c.try_pop(&mut out) {
            Ok(true) => assert!(!out.is_empty() && out.len() <= c.max_message()),
            Ok(false) => {}
            Err(RingError::Corrupt(_)) | Err(RingError::Closed) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
        match c.wait(Duration::ZERO, Duration::ZERO) {
            Ok(_) | Err(RingError::Corrupt(_)) | Err(RingError::Closed) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Completely arbitrary memory: attach validates or refuses; whatever attaches is drained
    /// safely.
    #[test]
    fn arbitrary_memory_then_attach(cap in capacity(), bytes in prop::collection::vec(any::<u8>(), 0..6000), valid_header in any::<bool>()) {
        let len = RingLayout::bytes(cap);
        let m = Mem::new(len);
        if valid_header {
            // SAFETY: `m` is live, 8-byte aligned and `len` bytes long.
            unsafe { ring::init(m.ptr(), len, cap) }.unwrap();
            // Keep the header identity, scribble over everything else.
            m.write(64, &bytes);
        } else {
            m.write(0, &bytes);
        }
        // SAFETY: as above; `m` outlives the consumer.
        if let Ok(mut c) = unsafe { Consumer::attach(m.ptr(), m.len()) } {
            drain(&mut c);
        }
    }

    /// A consumer attached to a valid ring with some messages in it, then arbitrary patches
    /// anywhere in the memory (header included).
    #[test]
    fn patches_after_attach(
        cap in capacity(),
        lens in prop::collection::vec(1usize..600, 0..12),
        patches in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 1..32)), 1..16),
    ) {
        let len = RingLayout::bytes(cap);
        let m = Mem::new(len);
        // SAFETY: `m` is live, aligned and `len` bytes; it outlives both handles.
        let mut c = unsafe { Consumer::init(m.ptr(), len, cap) }.unwrap();
        // SAFETY: as above.
        let p = unsafe { Producer::attach(m.ptr(), len) }.unwrap();
        let mut used = 0;
        for l in lens {
            let l = l.min(p.max_message());
            let k = RingLayout::slots_for(l);
            if used + k > cap as usize { break; }
            used += k;
            p.push(&vec![l as u8; l], &|| true).unwrap();
        }
        for (off, data) in &patches {
            m.write(*off as usize % len, data);
        }
        drain(&mut c);
    }

    /// Pushes and pops in any order round-trip (single thread, model = a FIFO).
    #[test]
    fn push_pop_round_trip(
        cap in capacity(),
        ops in prop::collection::vec((any::<bool>(), 1usize..2000, any::<u8>()), 1..200),
    ) {
        let len = RingLayout::bytes(cap);
        let m = Mem::new(len);
        // SAFETY: `m` is live, aligned and `len` bytes; it outlives both handles.
        let mut c = unsafe { Consumer::init(m.ptr(), len, cap) }.unwrap();
        // SAFETY: as above.
        let p = unsafe { Producer::attach(m.ptr(), len) }.unwrap();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut used = 0usize;
        let mut out = Vec::new();
        for (push, l, seed) in ops {
            let l = 1 + (l - 1) % p.max_message();
            let k = RingLayout::slots_for(l);
            if push && used + k <= cap as usize {
                let msg: Vec<u8> = (0..l).map(|i| seed.wrapping_add(i as u8).rotate_left(i as u32 % 8)).collect();
                p.push(&msg, &|| true).unwrap();
                model.push_back(msg);
                used += k;
            } else {
                let got = c.try_pop(&mut out).unwrap();
                match model.pop_front() {
                    Some(want) => {
                        prop_assert!(got);
                        used -= RingLayout::slots_for(want.len());
                        prop_assert_eq!(&out, &want);
                    }
                    None => prop_assert!(!got),
                }
            }
        }
        while let Some(want) = model.pop_front() {
            prop_assert!(c.try_pop(&mut out).unwrap());
            prop_assert_eq!(&out, &want);
        }
        prop_assert!(!c.try_pop(&mut out).unwrap());
    }
}

/// A hostile thread rewrites the ring (header and slots) with garbage while the consumer runs.
#[test]
fn consumer_survives_concurrent_scribbling() {
    let cap = 16;
    let len = RingLayout::bytes(cap);
    let m = Arc::new(Mem::new(len));
    // SAFETY: `m` is live, aligned and `len` bytes; the Arc keeps it alive past the consumer.
    let mut c = unsafe { Consumer::init(m.ptr(), len, cap) }.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut x = 0x1234_5678_9abc_def0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let word = (x as usize >> 8) % m.0.len();
                // Mostly plausible values (small numbers near the positions) with some noise.
                let v = match x % 4 {
                    0 => x,
                    1 => (x >> 40) % 64,
                    2 => ((x >> 40) % 700) << 32 | ((x >> 20) % 700),
                    _ => 0,
                };
                m.0[word].store(v, Ordering::Relaxed);
            }
        })
    };
    let mut out = Vec::new();
    let (mut ok, mut corrupt) = (0u32, 0u32);
    for _ in 0..200_000 {
        match c.try_pop(&mut out) {
            Ok(true) => {
                ok += 1;
                assert!(!out.is_empty() && out.len() <= c.max_message());
            }
            Ok(false) => {}
            Err(RingError::Corrupt(_)) => corrupt += 1,
            Err(RingError::Closed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    scribbler.join().unwrap();
    // Not asserted (timing-dependent), just shown with --nocapture.
    println!("popped {ok} garbage messages, {corrupt} corrupt reports");
}
