//! Loom models of the ring: every interleaving (up to the preemption bound) of 2 producers and
//! 1 consumer on a capacity-4 ring with 1- and 2-slot messages, including full-ring waits and
//! the futex wake-up protocol (the loom futex blocks until the word changes, with no timeout, so
//! a lost wake-up hangs the model and loom reports it).
//!
//! Run:
//!   RUSTFLAGS="--cfg loom" cargo test -p baton-ipc --test loom_ring --release
//! The preemption bound defaults to 2 here (about 50 s for all three models on a 2-core box);
//! override with LOOM_MAX_PREEMPTIONS=N (3 takes well over 10 minutes). LOOM_MAX_BRANCHES=N
//! raises loom's per-execution branch limit.
#![cfg(loom)]

use std::sync::Arc;
use std::time::Duration;

use baton_ipc::ring::{loom_ring, RingError};

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    if let Ok(n) = std::env::var("LOOM_MAX_BRANCHES") {
        b.max_branches = n.parse().unwrap();
    }
    b.check(f);
}

fn msg(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

const ALIVE: &dyn Fn() -> bool = &|| true;

#[test]
fn two_producers_one_consumer() {
    model(|| {
        let (p, mut c) = loom_ring(4).unwrap();
        assert_eq!(p.max_message(), 236);
        let p = Arc::new(p);
        // 1 + 2 + 2 = 5 slots through a 4-slot ring: wrap-around and, in some schedules,
        // a producer waiting for space.
        let a = msg(1, 3); // 1 slot
        let b = msg(2, 150); // 2 slots
        let d = msg(3, 200); // 2 slots
        let p1 = Arc::clone(&p);
        let (a1, b1) = (a.clone(), b.clone());
        let t1 = loom::thread::spawn(move || {
            let x = p1.push(&a1, ALIVE).unwrap();
            let y = p1.push(&b1, ALIVE).unwrap();
            assert!(y > x);
        });
        let p2 = Arc::clone(&p);
        let d2 = d.clone();
        let t2 = loom::thread::spawn(move || {
            p2.push(&d2, ALIVE).unwrap();
        });

        let mut got = Vec::new();
        let mut out = Vec::new();
        while got.len() < 3 {
            if c.try_pop(&mut out).unwrap() {
                got.push(out.clone());
            } else {
                c.wait(Duration::ZERO, Duration::ZERO).unwrap();
            }
        }
        t1.join().unwrap();
        t2.join().unwrap();
        let mut out = Vec::new();
        assert!(!c.try_pop(&mut out).unwrap());

        // Everything arrived intact, and producer 1's messages in its order.
        let ia = got.iter().position(|m| *m == a).expect("a");
        let ib = got.iter().position(|m| *m == b).expect("b");
        assert!(got.contains(&d));
        assert!(ia < ib);
    });
}

#[test]
fn one_slot_messages_from_two_producers() {
    model(|| {
        let (p, mut c) = loom_ring(2).unwrap();
        let p = Arc::new(p);
        let threads: Vec<_> = (0..2u8)
            .map(|id| {
                let p = Arc::clone(&p);
                loom::thread::spawn(move || {
                    p.push(&[id, 0], ALIVE).unwrap();
                    p.push(&[id, 1], ALIVE).unwrap();
                })
            })
            .collect();
        let mut next = [0u8; 2];
        let mut out = Vec::new();
        let mut n = 0;
        while n < 4 {
            if c.try_pop(&mut out).unwrap() {
                let id = out[0] as usize;
                assert_eq!(out[1], next[id]);
                next[id] += 1;
                n += 1;
            } else {
                c.wait(Duration::ZERO, Duration::ZERO).unwrap();
            }
        }
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn close_wakes_a_producer_waiting_for_space() {
    model(|| {
        let (p, c) = loom_ring(2).unwrap();
        let t = loom::thread::spawn(move || {
            // Capacity 2: the third push has to wait until the consumer closes the ring.
            for i in 0..3u8 {
                match p.push(&[i], ALIVE) {
                    Ok(_) => assert!(i < 2),
                    Err(RingError::Closed) => return,
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("third push succeeded without a consumer");
        });
        c.close();
        t.join().unwrap();
    });
}
