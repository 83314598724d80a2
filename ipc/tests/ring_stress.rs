//! Multi-threaded stress of the ring in a memfd mapping: 4 producers x 20k messages of random
//! lengths through a small ring, so wrap-around, multi-slot messages and full-ring waits all
//! happen. The consumer checks content, per-producer order and the total count.
#![cfg(not(loom))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_ipc::ring::{Consumer, Producer, RingLayout};
use baton_ipc::shm::SharedRegion;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Message `index` of `producer`: 1..=2000 bytes, first byte = producer id, rest derived from
/// (producer, index).
fn message(producer: u8, index: u32, max_len: usize) -> Vec<u8> {
    let h = splitmix((u64::from(producer) << 32) | u64::from(index));
    let len = 1 + (h % max_len as u64) as usize;
    let mut v = Vec::with_capacity(len);
    v.push(producer);
    for j in 1..len {
        v.push((h >> ((j % 8) * 8)) as u8 ^ (j as u8).wrapping_mul(7) ^ index as u8);
    }
    v
}

struct Setup {
    producer: Arc<Producer>,
    consumer: Consumer,
    region: SharedRegion,
}

fn setup(capacity: u32) -> Setup {
    let len = RingLayout::bytes(capacity);
    let region = SharedRegion::create("baton-ring-stress", len).unwrap();
    // SAFETY: the region is a fresh, page-aligned, `len`-byte mapping; callers keep it alive
    // until the handles are gone (and the handles never touch the memory when dropped).
    let consumer = unsafe { Consumer::init(region.as_ptr(), len, capacity) }.unwrap();
    // SAFETY: as above; the ring was just initialised.
    let producer = Arc::new(unsafe { Producer::attach(region.as_ptr(), len) }.unwrap());
    Setup {
        producer,
        consumer,
        region,
    }
}

fn run(producers: u8, per_producer: u32, max_len: usize, capacity: u32, spin: Duration) {
    let Setup {
        producer,
        mut consumer,
        region,
    } = setup(capacity);
    assert!(max_len <= producer.max_message());
    let threads: Vec<_> = (0..producers)
        .map(|id| {
            let p = Arc::clone(&producer);
            std::thread::spawn(move || {
                let mut last = None;
                for i in 0..per_producer {
                    let pos = p.push(&message(id, i, max_len), &|| true).unwrap();
                    // Positions grow within one producer (reservation order = delivery order).
                    if let Some(l) = last {
                        assert!(pos > l);
                    }
                    last = Some(pos);
                }
            })
        })
        .collect();

    let total = u64::from(producers) * u64::from(per_producer);
    let mut next = vec![0u32; producers as usize];
    let mut out = Vec::new();
    let mut received = 0u64;
    let mut idle_since = Instant::now();
    while received < total {
        if consumer.try_pop(&mut out).unwrap() {
            let id = out[0];
            assert!(id < producers, "unknown producer {id}");
            let i = next[id as usize];
            assert_eq!(out, message(id, i, max_len), "producer {id} message {i}");
            next[id as usize] += 1;
            received += 1;
            idle_since = Instant::now();
            // Now and then stall so producers fill the ring and sleep on `space`.
            if received & 4095 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            consumer.wait(spin, Duration::from_millis(100)).unwrap();
            assert!(
                idle_since.elapsed() < Duration::from_secs(30),
                "no progress for 30 s"
            );
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(!consumer.try_pop(&mut out).unwrap());
    assert!(next.iter().all(|&n| n == per_producer));
    // Every slot used exactly once per message, in order: consumer position = sum of slots.
    let slots: u64 = (0..producers)
        .flat_map(|id| (0..per_producer).map(move |i| (id, i)))
        .map(|(id, i)| RingLayout::slots_for(message(id, i, max_len).len()) as u64)
        .sum();
    assert_eq!(consumer.position(), slots);
    drop((producer, consumer));
    drop(region);
}

#[test]
fn four_producers_20k_each_small_ring() {
    // 64 slots: a 2000-byte message takes 17 of them, so the ring is full all the time.
    run(4, 20_000, 2000, 64, Duration::from_micros(20));
}

#[test]
fn sleeping_consumer_and_tiny_ring() {
    // No spinning: every empty ring puts the consumer to sleep on the doorbell futex.
    // Capacity 8 allows messages of up to 476 bytes (4 slots).
    run(4, 5_000, 476, 8, Duration::ZERO);
}
