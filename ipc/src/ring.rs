//! Bounded multi-producer / single-consumer ring of variable-length messages in shared memory.
//!
//! Producers are the threads of one client process (through a shared [`Producer`]); the consumer
//! is one daemon thread ([`Consumer`]). The daemon does not trust the client: nothing the client
//! writes into the ring can make the consumer panic, hang, or touch memory outside the ring.
//!
//! # Layout
//!
//! All offsets are fixed (`#[repr(C)]`, checked by `const` assertions); every field is an atomic,
//! so a peer scribbling on the memory at any time is a logic error for us, never a data race.
//! The region must be [`RING_ALIGN`]-aligned (8; 64 or more in practice, so each header line
//! below is its own cache line) and [`RingLayout::bytes`] long.
//!
//! | offset | field                                   | written by      |
//! |--------|-----------------------------------------|-----------------|
//! | 0      | `magic: u64` = [`RING_MAGIC`]           | init            |
//! | 8      | `abi_version: u32` = [`RING_ABI_VERSION`] | init          |
//! | 12     | `slot_size: u32` = [`SLOT_SIZE`] (128)  | init            |
//! | 16     | `capacity: u32` (slots, power of two)   | init            |
//! | 64     | `tail: u64`: next position to reserve   | producers       |
//! | 128    | `head: u64`: consumer position          | consumer        |
//! | 192    | `consumer_sleeping: u32`, 196 `doorbell: u32` | consumer / producers |
//! | 256    | `producers_waiting: u32`, 260 `space: u32`    | producers / consumer |
//! | 320    | `closed: u32`                           | either          |
//! | 384    | `capacity` slots of 128 bytes: `seq: u64` + 120 payload bytes | both |
//!
//! Positions are `u64`s that only grow; position `p` lives in slot `p % capacity`.
//!
//! # Slot protocol (Vyukov sequence numbers)
//!
//! Slot `i` starts with `seq = i`. For position `p` in that slot: `seq == p` means free for the
//! producer of `p`; `seq == p + 1` means published; the consumer releases it with
//! `seq = p + capacity`, which is the "free" value for the slot's next position.
//!
//! A message of `L` bytes (`1 <= L <=` [`RingLayout::max_message`]) takes
//! `k = ceil((L + 4) / 120)` consecutive positions ([`RingLayout::slots_for`]); the first
//! payload starts with `L` as a little-endian `u32`, the bytes follow, spilling into the next
//! slots (which may wrap around the array). `k <= capacity / 2`.
//!
//! A producer reserves `k` positions `[t, t + k)` with one CAS of `tail` from `t` to `t + k`,
//! after checking that only the *last* slot (position `t + k - 1`) is free. That suffices:
//! freeing position `q` (for `q >= capacity`) is the consumer releasing `q - capacity`, the
//! consumer releases positions strictly in increasing order, and for `t <= q < t + k - 1` we have
//! `q - capacity < t + k - 1 - capacity`; so once the last slot's release is visible every earlier
//! slot of the run was released before it (positions `< capacity` are free from the start).
//! Nobody else can have claimed one of them: the CAS succeeding proves `tail` was still `t`, and
//! only the owner of a position ever writes `p + 1`. `seq` values of a slot only grow, so there
//! is no ABA. A stale read can only make us retry or wait, never reserve a busy slot.
//!
//! The producer then writes the payloads (as relaxed atomic words), publishes slots
//! `t+1 .. t+k` (`Release` store of `p + 1`), and publishes the first slot *last*, so a consumer
//! that sees the first slot published sees the whole message (it checks every slot anyway).
//! Messages are delivered in reservation order.
//!
//! # Memory ordering
//!
//! * Data: producer payload writes → `Release` store of `seq` → consumer `Acquire` load of the
//!   same `seq` → consumer copies the payload. Consumer payload reads → `Release` store of
//!   `p + capacity` → producer `Acquire` load of the last slot's `seq` (which also covers the
//!   consumer's earlier, program-ordered releases of the run's other slots) → producer writes.
//! * `tail` is only an allocation counter: the CAS can be `Relaxed` because all data handoff goes
//!   through `seq`.
//!
//! # Wake-ups (eventcounts)
//!
//! Both sleeps use the same pattern. The sleeper announces itself (store a flag / increment a
//! counter), reads the futex word as a ticket, issues `fence(SeqCst)`, re-checks its condition,
//! and only then `futex_wait(word, ticket)`. The waker makes its change (publishes / releases a
//! slot), issues `fence(SeqCst)`, then reads the announcement and, if set, bumps the word
//! (`Release`) and calls `futex_wake`. The two fences forbid both sides reading the other's old
//! value (store-buffering), so either the sleeper's re-check sees the change or the waker sees
//! the announcement; a bump landing before the ticket read is seen via `Acquire` on the word,
//! after it makes `futex_wait` return at once.
//!
//! * Consumer: flag `consumer_sleeping`, word `doorbell`; the producer checks after publishing.
//! * Producers: counter `producers_waiting`, word `space`; the consumer checks after releasing.
//!   Producers also wake every [`PRODUCER_WAIT_SLICE`] to poll their `alive` callback.
//! * `close()` sets `closed`, bumps both words and wakes everyone; waiters return
//!   [`RingError::Closed`].
//!
//! # What the consumer validates
//!
//! It reads `capacity` once (at [`Consumer::attach`], validated) and keeps its own copy, along
//! with its own `head`; it never reads `tail` or the header's identity fields again. For the next
//! message it requires the first slot's `seq` to be `head` (empty) or `head + 1` (published),
//! the length to be in `1..=max_message`, and each later slot to be exactly free-for-this-lap
//! (not ready yet: `Ok(false)`) or published; anything else is [`RingError::Corrupt`]. The whole
//! message is copied out before the slots are released, so the client cannot change it while
//! the daemon decodes it. All position arithmetic wraps; slot indices are masked with the
//! consumer's own capacity. Values read from `producers_waiting`, `doorbell` and `closed` only
//! cause extra wake-ups or an early `Closed`.
//!
//! # Loom
//!
//! Under `cfg(loom)` the atomics come from `loom`, slot payloads become `loom::cell::UnsafeCell`
//! (so loom checks that producer writes and consumer reads never overlap), the futex is modelled
//! in [`crate::futex`] (blocking, no timeouts: a lost wake-up is a reported deadlock), and the
//! ring lives on the heap: see `loom_ring`. The algorithm code is the same in both builds.
//! `RUSTFLAGS="--cfg loom" cargo test -p baton-ipc --test loom_ring --release`

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::Duration;

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, AtomicU64};

use crate::futex;

/// `magic` of an initialised ring: `"BATNRING"` little-endian.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"BATNRING");
/// Layout version; bump on any change to this file's shared-memory format.
pub const RING_ABI_VERSION: u32 = 1;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 128;
/// Payload bytes per slot (the slot minus its `seq`).
pub const SLOT_PAYLOAD: usize = SLOT_SIZE - 8;
/// Bytes of the little-endian `u32` length at the start of a message's first slot.
pub const LEN_PREFIX: usize = 4;
/// Upper bound on [`RingLayout::max_message`] regardless of capacity.
pub const MESSAGE_LIMIT: usize = 64 * 1024;
/// Smallest valid capacity (one slot per message at most).
pub const MIN_CAPACITY: u32 = 2;
/// Largest valid capacity (128 MiB of slots).
pub const MAX_CAPACITY: u32 = 1 << 20;
/// Size of the header; slots start here.
pub const HEADER_SIZE: usize = 6 * 64;
/// Required alignment of the ring memory (64 or more keeps each header line on its own cache
/// line; any mapping is page-aligned).
pub const RING_ALIGN: usize = 8;
/// How long a producer waiting for space sleeps before re-checking `alive()`.
pub const PRODUCER_WAIT_SLICE: Duration = Duration::from_millis(50);

/// Re-tries of a full ring before a producer goes to sleep (none in the loom model, where
/// spinning only multiplies the schedules to explore).
fn spin_limit() -> u32 {
    if cfg!(loom) {
        0
    } else {
        128
    }
}

/// Errors from attaching to or using a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The memory pointer is null or not [`RING_ALIGN`]-aligned.
    #[error("ring memory is null or not 8-byte aligned")]
    Misaligned,
    /// The memory is shorter than the layout needs.
    #[error("ring memory is {have} bytes, layout needs {need}")]
    TooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// `magic` is not [`RING_MAGIC`].
    #[error("bad ring magic {0:#x}")]
    BadMagic(u64),
    /// `abi_version` is not [`RING_ABI_VERSION`].
    #[error("unsupported ring ABI version {0}")]
    BadVersion(u32),
    /// `slot_size` is not [`SLOT_SIZE`].
    #[error("unsupported slot size {0}")]
    BadSlotSize(u32),
    /// Capacity not a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    #[error("invalid ring capacity {0}")]
    BadCapacity(u32),
    /// Message length outside `1..=max`.
    #[error("message of {len} bytes; allowed 1..={max}")]
    MessageSize {
        /// Length given.
        len: usize,
        /// [`RingLayout::max_message`] of this ring.
        max: usize,
    },
    /// The ring was closed by either side.
    #[error("ring closed")]
    Closed,
    /// The `alive` callback reported the peer dead while waiting for space.
    #[error("peer gone")]
    PeerGone,
    /// The client broke the protocol; drop it.
    #[error("ring corrupt: {0}")]
    Corrupt(&'static str),
}

/// Size arithmetic of the ring layout.
#[derive(Debug, Clone, Copy)]
pub struct RingLayout;

impl RingLayout {
    /// Total bytes of a ring with `capacity` slots (header + slots).
    pub const fn bytes(capacity: u32) -> usize {
        HEADER_SIZE + capacity as usize * SLOT_SIZE
    }

    /// True if `capacity` is a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    pub const fn valid_capacity(capacity: u32) -> bool {
        capacity.is_power_of_two() && capacity >= MIN_CAPACITY && capacity <= MAX_CAPACITY
    }

    /// Largest message a ring of `capacity` slots carries: at most `capacity / 2` slots and at
    /// most [`MESSAGE_LIMIT`] bytes. 0 for an invalid capacity.
    pub const fn max_message(capacity: u32) -> usize {
        if !Self::valid_capacity(capacity) {
            return 0;
        }
        let by_slots = (capacity as usize / 2) * SLOT_PAYLOAD - LEN_PREFIX;
        if by_slots < MESSAGE_LIMIT {
            by_slots
        } else {
            MESSAGE_LIMIT
        }
    }

    /// Slots taken by a message of `len` bytes.
    pub const fn slots_for(len: usize) -> usize {
        len.saturating_add(LEN_PREFIX).div_ceil(SLOT_PAYLOAD)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared-memory types.

/// Padding words. Atomics in the real build because a peer may write anything anywhere in the
/// ring and we hold shared references to it; plain in the loom build (heap, never shared).
#[cfg(not(loom))]
type Pad = AtomicU32;
#[cfg(loom)]
type Pad = u32;

#[repr(C)]
struct IdLine {
    magic: AtomicU64,
    abi_version: AtomicU32,
    slot_size: AtomicU32,
    capacity: AtomicU32,
    _pad: [Pad; 11],
}

#[repr(C)]
struct PosLine {
    pos: AtomicU64,
    _pad: [Pad; 14],
}

#[repr(C)]
struct ConsumerLine {
    consumer_sleeping: AtomicU32,
    doorbell: AtomicU32,
    _pad: [Pad; 14],
}

#[repr(C)]
struct ProducerLine {
    producers_waiting: AtomicU32,
    space: AtomicU32,
    _pad: [Pad; 14],
}

#[repr(C)]
struct ClosedLine {
    closed: AtomicU32,
    _pad: [Pad; 15],
}

/// Each line is 64 bytes; with 64-byte aligned memory (any mapping) each gets its own cache line.
#[repr(C)]
struct Header {
    id: IdLine,
    tail: PosLine,
    head: PosLine,
    consumer: ConsumerLine,
    producers: ProducerLine,
    closed: ClosedLine,
}

#[repr(C)]
struct Slot {
    seq: AtomicU64,
    payload: Payload,
}

/// 120 payload bytes, stored as relaxed atomic words so that a racing peer is never UB.
#[cfg(not(loom))]
#[repr(transparent)]
struct Payload([AtomicU64; SLOT_PAYLOAD / 8]);

#[cfg(not(loom))]
impl Payload {
    fn store(&self, buf: &[u8; SLOT_PAYLOAD]) {
        for (i, w) in self.0.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            w.store(u64::from_ne_bytes(b), Relaxed);
        }
    }

    fn load(&self) -> [u8; SLOT_PAYLOAD] {
        let mut buf = [0u8; SLOT_PAYLOAD];
        for (i, w) in self.0.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&w.load(Relaxed).to_ne_bytes());
        }
        buf
    }
}

/// Under loom the payload is a checked cell: loom fails the model if a producer's write and a
/// consumer's read of the same slot are not ordered by the protocol.
#[cfg(loom)]
struct Payload(loom::cell::UnsafeCell<[u8; SLOT_PAYLOAD]>);

#[cfg(loom)]
impl Payload {
    fn store(&self, buf: &[u8; SLOT_PAYLOAD]) {
        // SAFETY: the caller owns this slot (reserved, unpublished); loom verifies exclusivity.
        self.0.with_mut(|p| unsafe { *p = *buf });
    }

    fn load(&self) -> [u8; SLOT_PAYLOAD] {
        // SAFETY: the caller owns this slot (published, unreleased); loom verifies exclusivity.
        self.0.with(|p| unsafe { *p })
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<IdLine>() == 64);
    assert!(offset_of!(IdLine, magic) == 0);
    assert!(offset_of!(IdLine, abi_version) == 8);
    assert!(offset_of!(IdLine, slot_size) == 12);
    assert!(offset_of!(IdLine, capacity) == 16);
    assert!(offset_of!(ConsumerLine, consumer_sleeping) == 0);
    assert!(offset_of!(ConsumerLine, doorbell) == 4);
    assert!(offset_of!(ProducerLine, producers_waiting) == 0);
    assert!(offset_of!(ProducerLine, space) == 4);
    assert!(offset_of!(Header, id) == 0);
    assert!(offset_of!(Header, tail) == 64);
    assert!(offset_of!(Header, head) == 128);
    assert!(offset_of!(Header, consumer) == 192);
    assert!(offset_of!(Header, producers) == 256);
    assert!(offset_of!(Header, closed) == 320);
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(align_of::<Header>() == RING_ALIGN);
    assert!(size_of::<IdLine>() == 64 && size_of::<PosLine>() == 64);
    assert!(size_of::<ConsumerLine>() == 64 && size_of::<ProducerLine>() == 64);
    assert!(size_of::<ClosedLine>() == 64);
    assert!(size_of::<Slot>() == SLOT_SIZE);
    assert!(align_of::<Slot>() == RING_ALIGN);
    assert!(offset_of!(Slot, seq) == 0);
    assert!(offset_of!(Slot, payload) == 8);
    assert!(size_of::<Payload>() == SLOT_PAYLOAD);
    assert!(HEADER_SIZE & (RING_ALIGN - 1) == 0);
    // The largest message fits in half of the smallest ring that allows it.
    assert!(RingLayout::slots_for(RingLayout::max_message(MIN_CAPACITY)) == 1);
    assert!(RingLayout::slots_for(MESSAGE_LIMIT) <= MAX_CAPACITY as usize / 2);
};

// ---------------------------------------------------------------------------------------------
// Handle to a ring's memory.

/// Pointers to a validated ring plus this side's own copy of its capacity.
struct Ring {
    header: std::ptr::NonNull<Header>,
    slots: std::ptr::NonNull<Slot>,
    /// Validated at attach; never re-read from shared memory.
    capacity: u32,
    mask: u64,
    /// Keeps heap-allocated ring memory (loom) alive; `None` for caller-provided memory.
    _owner: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Ring {
    fn header(&self) -> &Header {
        // SAFETY: `header` points at a live, aligned `Header` for as long as `self` lives: the
        // attach/init contract (or `_owner`) keeps the memory mapped, and every field is an
        // atomic, so shared references are fine even while other processes write to it.
        unsafe { self.header.as_ref() }
    }

    fn slot(&self, pos: u64) -> &Slot {
        let index = (pos & self.mask) as usize;
        // SAFETY: `index < capacity` (mask = capacity - 1 with a validated power-of-two
        // capacity), and the memory was checked to hold `capacity` slots after the header.
        // Slots contain only atomics (or loom cells), so shared references are sound.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    fn is_closed(&self) -> bool {
        self.header().closed.closed.load(Acquire) != 0
    }

    fn close(&self) {
        let h = self.header();
        h.closed.closed.store(1, SeqCst);
        h.consumer.doorbell.fetch_add(1, Release);
        h.producers.space.fetch_add(1, Release);
        futex::wake_all(&h.consumer.doorbell);
        futex::wake_all(&h.producers.space);
    }

    /// Validates the header of caller-provided memory.
    ///
    /// # Safety
    /// See [`Producer::attach`].
    #[cfg(not(loom))]
    unsafe fn attach(mem: *mut u8, len: usize) -> Result<Ring, RingError> {
        if mem.is_null() || (mem as usize) & (RING_ALIGN - 1) != 0 {
            return Err(RingError::Misaligned);
        }
        if len < HEADER_SIZE {
            return Err(RingError::TooSmall {
                need: HEADER_SIZE,
                have: len,
            });
        }
        let header = std::ptr::NonNull::new(mem.cast::<Header>()).ok_or(RingError::Misaligned)?;
        // SAFETY: non-null, aligned, at least HEADER_SIZE readable bytes (checked above), live per
        // the caller's contract; all fields are atomics, valid for any bit pattern.
        let h = unsafe { header.as_ref() };
        let magic = h.id.magic.load(Acquire);
        if magic != RING_MAGIC {
            return Err(RingError::BadMagic(magic));
        }
        let version = h.id.abi_version.load(Relaxed);
        if version != RING_ABI_VERSION {
            return Err(RingError::BadVersion(version));
        }
        let slot_size = h.id.slot_size.load(Relaxed);
        if slot_size as usize != SLOT_SIZE {
            return Err(RingError::BadSlotSize(slot_size));
        }
        let capacity = h.id.capacity.load(Relaxed);
        if !RingLayout::valid_capacity(capacity) {
            return Err(RingError::BadCapacity(capacity));
        }
        let need = RingLayout::bytes(capacity);
        if len < need {
            return Err(RingError::TooSmall { need, have: len });
        }
        // SAFETY: HEADER_SIZE <= need <= len, so the result stays inside (or one past the end
        // of) the caller's allocation.
        let slots = unsafe { mem.add(HEADER_SIZE) }.cast::<Slot>();
        Ok(Ring {
            header,
            slots: std::ptr::NonNull::new(slots).ok_or(RingError::Misaligned)?,
            capacity,
            mask: u64::from(capacity) - 1,
            _owner: None,
        })
    }
}

/// Initialises a ring with `capacity` slots in `mem` (daemon side, before sharing it).
///
/// # Safety
/// `mem` must point to `len` bytes of readable and writable memory (e.g. a fresh
/// [`crate::shm::SharedRegion`]) that nothing else is using as a ring yet.
#[cfg(not(loom))]
pub unsafe fn init(mem: *mut u8, len: usize, capacity: u32) -> Result<(), RingError> {
    if !RingLayout::valid_capacity(capacity) {
        return Err(RingError::BadCapacity(capacity));
    }
    if mem.is_null() || (mem as usize) & (RING_ALIGN - 1) != 0 {
        return Err(RingError::Misaligned);
    }
    let need = RingLayout::bytes(capacity);
    if len < need {
        return Err(RingError::TooSmall { need, have: len });
    }
    // SAFETY: aligned, non-null, `need <= len` bytes writable per the caller; every field of
    // Header and Slot is an atomic integer, valid for whatever bytes are there now.
    let h = unsafe { &*mem.cast::<Header>() };
    h.id.magic.store(0, Relaxed);
    h.id.abi_version.store(RING_ABI_VERSION, Relaxed);
    h.id.slot_size.store(SLOT_SIZE as u32, Relaxed);
    h.id.capacity.store(capacity, Relaxed);
    h.tail.pos.store(0, Relaxed);
    h.head.pos.store(0, Relaxed);
    h.consumer.consumer_sleeping.store(0, Relaxed);
    h.consumer.doorbell.store(0, Relaxed);
    h.producers.producers_waiting.store(0, Relaxed);
    h.producers.space.store(0, Relaxed);
    h.closed.closed.store(0, Relaxed);
    for i in 0..capacity as usize {
        // SAFETY: slot `i < capacity` lies within the `need` bytes checked above.
        let slot = unsafe { &*mem.add(HEADER_SIZE + i * SLOT_SIZE).cast::<Slot>() };
        slot.seq.store(i as u64, Relaxed);
        slot.payload.store(&[0; SLOT_PAYLOAD]);
    }
    // Publish: whoever attaches with an Acquire load of `magic` sees everything above.
    h.id.magic.store(RING_MAGIC, Release);
    Ok(())
}

/// Loom build: raw shared memory cannot hold loom atomics; use [`loom_ring`] instead.
///
/// # Safety
/// Never dereferences `mem`; it panics.
#[cfg(loom)]
pub unsafe fn init(_mem: *mut u8, _len: usize, _capacity: u32) -> Result<(), RingError> {
    panic!("ring::init is unavailable under cfg(loom); use ring::loom_ring")
}

/// Builds a heap-allocated ring for loom models and returns its two ends.
#[cfg(loom)]
pub fn loom_ring(capacity: u32) -> Result<(Producer, Consumer), RingError> {
    if !RingLayout::valid_capacity(capacity) {
        return Err(RingError::BadCapacity(capacity));
    }
    struct Mem {
        header: Box<Header>,
        slots: Box<[Slot]>,
    }
    let header = Box::new(Header {
        id: IdLine {
            magic: AtomicU64::new(RING_MAGIC),
            abi_version: AtomicU32::new(RING_ABI_VERSION),
            slot_size: AtomicU32::new(SLOT_SIZE as u32),
            capacity: AtomicU32::new(capacity),
            _pad: [0; 11],
        },
        tail: PosLine {
            pos: AtomicU64::new(0),
            _pad: [0; 14],
        },
        head: PosLine {
            pos: AtomicU64::new(0),
            _pad: [0; 14],
        },
        consumer: ConsumerLine {
            consumer_sleeping: AtomicU32::new(0),
            doorbell: AtomicU32::new(0),
            _pad: [0; 14],
        },
        producers: ProducerLine {
            producers_waiting: AtomicU32::new(0),
            space: AtomicU32::new(0),
            _pad: [0; 14],
        },
        closed: ClosedLine {
            closed: AtomicU32::new(0),
            _pad: [0; 15],
        },
    });
    let slots: Box<[Slot]> = (0..u64::from(capacity))
        .map(|i| Slot {
            seq: AtomicU64::new(i),
            payload: Payload(loom::cell::UnsafeCell::new([0; SLOT_PAYLOAD])),
        })
        .collect();
    let mem = Arc::new(Mem { header, slots });
    let make = |mem: &Arc<Mem>| Ring {
        header: std::ptr::NonNull::from(&*mem.header),
        // `as_ptr` of the whole boxed slice: provenance covers every slot.
        slots: std::ptr::NonNull::new(mem.slots.as_ptr().cast_mut()).expect("boxed slice"),
        capacity,
        mask: u64::from(capacity) - 1,
        _owner: Some(Arc::clone(mem) as Arc<dyn std::any::Any + Send + Sync>),
    };
    let producer = Producer {
        max_message: RingLayout::max_message(capacity),
        ring: make(&mem),
    };
    let consumer = Consumer {
        max_message: RingLayout::max_message(capacity),
        head: 0,
        ring: make(&mem),
    };
    Ok((producer, consumer))
}

// SAFETY: (loom build only) the payload cell is only touched by the slot's current owner under the
// seq protocol, which is exactly what the loom model checks.
#[cfg(loom)]
unsafe impl Sync for Slot {}

// ---------------------------------------------------------------------------------------------
// Producer.

/// Client end of a ring: any number of threads push through `&Producer`.
pub struct Producer {
    ring: Ring,
    max_message: usize,
}

// SAFETY: `Producer` only holds pointers into ring memory whose every field is an atomic (or a
// loom cell guarded by the protocol); the attach contract keeps it mapped. All methods take
// `&self` and are designed for concurrent use by many threads (CAS-based reservation).
unsafe impl Send for Producer {}
// SAFETY: see `Send` above; no method mutates non-atomic state.
unsafe impl Sync for Producer {}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.ring.capacity)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Attaches to a ring initialised by [`init`] (possibly in another process), validating its
    /// magic, version, slot size, capacity and that `len` covers it.
    ///
    /// # Safety
    /// `mem` must point to `len` bytes of readable and writable memory that stay mapped for as
    /// long as the returned value lives, and that are only accessed as a ring (through this
    /// module, here or in another process).
    #[cfg(not(loom))]
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Producer, RingError> {
        // SAFETY: forwarded from the caller's contract.
        let ring = unsafe { Ring::attach(mem, len) }?;
        Ok(Producer {
            max_message: RingLayout::max_message(ring.capacity),
            ring,
        })
    }

    /// Loom build: unavailable (panics); use [`loom_ring`].
    ///
    /// # Safety
    /// Never dereferences `mem`.
    #[cfg(loom)]
    pub unsafe fn attach(_mem: *mut u8, _len: usize) -> Result<Producer, RingError> {
        panic!("Producer::attach is unavailable under cfg(loom); use ring::loom_ring")
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.ring.capacity
    }

    /// Largest message [`Producer::push`] accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Copies `msg` into the ring and returns the position of its first slot.
    ///
    /// If the ring is full, spins briefly, then sleeps on the `space` futex in
    /// [`PRODUCER_WAIT_SLICE`] steps, calling `alive()` between them:
    /// [`RingError::PeerGone`] if it returns false, [`RingError::Closed`] if the ring is closed.
    pub fn push(&self, msg: &[u8], alive: &dyn Fn() -> bool) -> Result<u64, RingError> {
        let len = msg.len();
        if len == 0 || len > self.max_message {
            return Err(RingError::MessageSize {
                len,
                max: self.max_message,
            });
        }
        if self.ring.is_closed() {
            return Err(RingError::Closed);
        }
        let k = RingLayout::slots_for(len) as u64;
        let start = self.reserve(k, alive)?;
        self.write(start, k, msg);
        self.notify_consumer();
        Ok(start)
    }

    /// Sets `closed` and wakes everyone; later pushes and waits fail with [`RingError::Closed`].
    pub fn close(&self) {
        self.ring.close();
    }

    /// True once either side has called `close`.
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// One attempt to claim `k` positions. `None` means the ring is full for us.
    fn try_reserve(&self, k: u64) -> Option<u64> {
        let tail = &self.ring.header().tail.pos;
        let mut t = tail.load(Relaxed);
        loop {
            let last = t.wrapping_add(k - 1);
            // Acquire: pairs with the consumer's Release of `last - capacity` (and, by its
            // program order, of every earlier position), see the module docs.
            let seq = self.ring.slot(last).seq.load(Acquire);
            let diff = seq.wrapping_sub(last) as i64;
            if diff == 0 {
                match tail.compare_exchange_weak(t, t.wrapping_add(k), Relaxed, Relaxed) {
                    Ok(_) => return Some(t),
                    Err(now) => t = now,
                }
            } else if diff < 0 {
                // `last - capacity` is not released yet. Every position we could get from a
                // newer tail is later still, so the ring is full for this message.
                return None;
            } else {
                // Someone already claimed `last`: our tail is stale.
                spin_hint();
                t = tail.load(Relaxed);
            }
        }
    }

    fn reserve(&self, k: u64, alive: &dyn Fn() -> bool) -> Result<u64, RingError> {
        let h = self.ring.header();
        let mut spins = 0;
        loop {
            if let Some(p) = self.try_reserve(k) {
                return Ok(p);
            }
            if spins < spin_limit() {
                spins += 1;
                spin_hint();
                continue;
            }
            // Eventcount sleep; the consumer side is in `Consumer::release`.
            let w = &h.producers;
            w.producers_waiting.fetch_add(1, Relaxed);
            let ticket = w.space.load(Acquire);
            fence(SeqCst);
            let got = self.try_reserve(k);
            let closed = self.ring.is_closed();
            if got.is_none() && !closed {
                futex::wait(&w.space, ticket, Some(PRODUCER_WAIT_SLICE));
            }
            w.producers_waiting.fetch_sub(1, Relaxed);
            if let Some(p) = got {
                return Ok(p);
            }
            if closed || self.ring.is_closed() {
                return Err(RingError::Closed);
            }
            if !alive() {
                return Err(RingError::PeerGone);
            }
        }
    }

    /// Fills the reserved positions `[start, start + k)` and publishes them, first slot last.
    fn write(&self, start: u64, k: u64, msg: &[u8]) {
        let mut rest = msg;
        for j in 0..k {
            let mut buf = [0u8; SLOT_PAYLOAD];
            let room = if j == 0 {
                // `msg.len() <= MESSAGE_LIMIT`, so it fits in a u32.
                buf[..LEN_PREFIX].copy_from_slice(&(msg.len() as u32).to_le_bytes());
                &mut buf[LEN_PREFIX..]
            } else {
                &mut buf[..]
            };
            let n = rest.len().min(room.len());
            room[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            self.ring.slot(start.wrapping_add(j)).payload.store(&buf);
        }
        for j in 1..k {
            let p = start.wrapping_add(j);
            self.ring.slot(p).seq.store(p.wrapping_add(1), Release);
        }
        self.ring
            .slot(start)
            .seq
            .store(start.wrapping_add(1), Release);
    }

    /// Eventcount waker for the consumer's doorbell (sleeper side: `Consumer::wait`).
    fn notify_consumer(&self) {
        fence(SeqCst);
        let c = &self.ring.header().consumer;
        if c.consumer_sleeping.load(Relaxed) != 0 {
            c.doorbell.fetch_add(1, Release);
            futex::wake(&c.doorbell, 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer.

/// Daemon end of a ring: one thread pops messages. Treats ring memory as hostile.
pub struct Consumer {
    ring: Ring,
    /// Our position; the shared `head` is only a copy we publish.
    head: u64,
    max_message: usize,
}

// SAFETY: `Consumer` holds pointers into ring memory whose fields are all atomics (or loom cells
// guarded by the protocol), kept mapped by the attach contract; moving it to another thread is
// fine. It is deliberately not `Sync`: the algorithm assumes a single consumer.
unsafe impl Send for Consumer {}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.ring.capacity)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// Result of looking at the next message without consuming it.
enum Peek {
    /// Nothing (or not all of it) published yet.
    NotReady,
    /// A complete message: its length, slot count and first payload (already copied).
    Ready {
        len: usize,
        k: u64,
        first: [u8; SLOT_PAYLOAD],
    },
}

impl Consumer {
    /// Attaches to a ring initialised by [`init`], validating the header like
    /// [`Producer::attach`]. Starts at the ring's published `head` (0 for a fresh ring).
    ///
    /// There must be at most one `Consumer` per ring.
    ///
    /// # Safety
    /// As for [`Producer::attach`]; the memory may be written by an untrusted peer.
    #[cfg(not(loom))]
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Consumer, RingError> {
        // SAFETY: forwarded from the caller's contract.
        let ring = unsafe { Ring::attach(mem, len) }?;
        let head = ring.header().head.pos.load(Acquire);
        Ok(Consumer {
            max_message: RingLayout::max_message(ring.capacity),
            head,
            ring,
        })
    }

    /// [`init`] followed by [`Consumer::attach`].
    ///
    /// # Safety
    /// As for [`init`] and [`Consumer::attach`].
    #[cfg(not(loom))]
    pub unsafe fn init(mem: *mut u8, len: usize, capacity: u32) -> Result<Consumer, RingError> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { init(mem, len, capacity) }?;
        // SAFETY: forwarded from the caller's contract; the header is now valid.
        unsafe { Consumer::attach(mem, len) }
    }

    /// Loom build: unavailable (panics); use [`loom_ring`].
    ///
    /// # Safety
    /// Never dereferences `mem`.
    #[cfg(loom)]
    pub unsafe fn attach(_mem: *mut u8, _len: usize) -> Result<Consumer, RingError> {
        panic!("Consumer::attach is unavailable under cfg(loom); use ring::loom_ring")
    }

    /// Loom build: unavailable (panics); use [`loom_ring`].
    ///
    /// # Safety
    /// Never dereferences `mem`.
    #[cfg(loom)]
    pub unsafe fn init(_mem: *mut u8, _len: usize, _capacity: u32) -> Result<Consumer, RingError> {
        panic!("Consumer::init is unavailable under cfg(loom); use ring::loom_ring")
    }

    /// Number of slots (our own validated copy).
    pub fn capacity(&self) -> u32 {
        self.ring.capacity
    }

    /// Largest message this ring can carry.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Position of the next message to pop.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Pops the next message into `out` (cleared first). `Ok(false)`: nothing complete yet.
    /// `Err(Corrupt)`: the client broke the protocol.
    pub fn try_pop(&mut self, out: &mut Vec<u8>) -> Result<bool, RingError> {
        let (len, k, first) = match self.peek()? {
            Peek::NotReady => return Ok(false),
            Peek::Ready { len, k, first } => (len, k, first),
        };
        out.clear();
        out.reserve(len);
        let n = len.min(SLOT_PAYLOAD - LEN_PREFIX);
        out.extend_from_slice(&first[LEN_PREFIX..LEN_PREFIX + n]);
        for j in 1..k {
            let buf = self.ring.slot(self.head.wrapping_add(j)).payload.load();
            let n = (len - out.len()).min(SLOT_PAYLOAD);
            out.extend_from_slice(&buf[..n]);
        }
        self.release(k);
        Ok(true)
    }

    /// Waits until a complete message is ready: `Ok(true)`; `Ok(false)` on timeout;
    /// `Err(Closed)` if the ring is closed and empty; `Err(Corrupt)` as for `try_pop`.
    ///
    /// Polls for up to `spin` first, then sleeps on the doorbell futex for up to `timeout`.
    #[cfg(not(loom))]
    pub fn wait(&mut self, spin: Duration, timeout: Duration) -> Result<bool, RingError> {
        use std::time::Instant;
        if self.ready()? {
            return Ok(true);
        }
        let start = Instant::now();
        while start.elapsed() < spin {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if self.ready()? {
                return Ok(true);
            }
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.sleep_once(remaining)? {
                Some(done) => return Ok(done),
                None if remaining == Some(Duration::ZERO) => return Ok(false),
                None => {}
            }
        }
    }

    /// Loom build: one eventcount round, no clocks (the model must be deterministic).
    #[cfg(loom)]
    pub fn wait(&mut self, _spin: Duration, _timeout: Duration) -> Result<bool, RingError> {
        if self.ready()? {
            return Ok(true);
        }
        Ok(self.sleep_once(None)?.unwrap_or(false))
    }

    /// Sets `closed` and wakes everyone.
    pub fn close(&self) {
        self.ring.close();
    }

    /// True once either side has called `close`.
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// One eventcount sleep on the doorbell (waker side: `Producer::notify_consumer`).
    /// `Some(answer)` when done, `None` after a wake-up without a message.
    fn sleep_once(&mut self, timeout: Option<Duration>) -> Result<Option<bool>, RingError> {
        let c = &self.ring.header().consumer;
        c.consumer_sleeping.store(1, Relaxed);
        let ticket = c.doorbell.load(Acquire);
        fence(SeqCst);
        let ready = self.ready();
        if !matches!(ready, Ok(false)) {
            c.consumer_sleeping.store(0, Relaxed);
            return ready.map(|_| Some(true));
        }
        if self.ring.is_closed() {
            c.consumer_sleeping.store(0, Relaxed);
            return Err(RingError::Closed);
        }
        if timeout != Some(Duration::ZERO) {
            futex::wait(&c.doorbell, ticket, timeout);
        }
        c.consumer_sleeping.store(0, Relaxed);
        match self.ready()? {
            true => Ok(Some(true)),
            false if self.ring.is_closed() => Err(RingError::Closed),
            false => Ok(None),
        }
    }

    fn ready(&self) -> Result<bool, RingError> {
        Ok(matches!(self.peek()?, Peek::Ready { .. }))
    }

    /// Validates the next message in place. Reads each `seq` once and the first payload once.
    fn peek(&self) -> Result<Peek, RingError> {
        let h = self.head;
        let first_slot = self.ring.slot(h);
        let seq = first_slot.seq.load(Acquire);
        if seq == h {
            return Ok(Peek::NotReady);
        }
        if seq != h.wrapping_add(1) {
            return Err(RingError::Corrupt(
                "first slot has an impossible sequence number",
            ));
        }
        let first = first_slot.payload.load();
        let len = u32::from_le_bytes([first[0], first[1], first[2], first[3]]) as usize;
        if len == 0 || len > self.max_message {
            return Err(RingError::Corrupt("message length out of range"));
        }
        // `len <= max_message` implies `k <= capacity / 2`.
        let k = RingLayout::slots_for(len) as u64;
        for j in 1..k {
            let p = h.wrapping_add(j);
            let seq = self.ring.slot(p).seq.load(Acquire);
            if seq == p {
                // First slot published before a later one: not ready (a correct producer
                // publishes the first slot last, so only a misbehaving one gets here).
                return Ok(Peek::NotReady);
            }
            if seq != p.wrapping_add(1) {
                return Err(RingError::Corrupt(
                    "continuation slot has an impossible sequence number",
                ));
            }
        }
        Ok(Peek::Ready { len, k, first })
    }

    /// Hands `k` slots back to the producers, in order, then wakes any waiting for space.
    fn release(&mut self, k: u64) {
        let cap = u64::from(self.ring.capacity);
        for j in 0..k {
            let p = self.head.wrapping_add(j);
            self.ring.slot(p).seq.store(p.wrapping_add(cap), Release);
        }
        self.head = self.head.wrapping_add(k);
        let h = self.ring.header();
        h.head.pos.store(self.head, Release);
        // Eventcount waker (sleeper side: `Producer::reserve`).
        fence(SeqCst);
        if h.producers.producers_waiting.load(Relaxed) != 0 {
            h.producers.space.fetch_add(1, Release);
            futex::wake_all(&h.producers.space);
        }
    }
}

fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// 64-byte aligned heap memory for a ring.
    struct Mem(Vec<Slot>);

    impl Mem {
        fn new(capacity: u32) -> Mem {
            Self::with_bytes(RingLayout::bytes(capacity))
        }
        fn with_bytes(bytes: usize) -> Mem {
            let n = bytes.div_ceil(SLOT_SIZE);
            Mem((0..n)
                .map(|_| Slot {
                    seq: AtomicU64::new(0),
                    payload: Payload(Default::default()),
                })
                .collect())
        }
        fn ptr(&mut self) -> *mut u8 {
            self.0.as_mut_ptr().cast()
        }
        fn len(&self) -> usize {
            self.0.len() * SLOT_SIZE
        }
        fn u32_at(&self, off: usize) -> &AtomicU32 {
            assert!(off & 3 == 0 && off + 4 <= self.len());
            // SAFETY: in bounds and aligned (checked above); the memory is atomics only.
            unsafe { &*self.0.as_ptr().cast::<u8>().add(off).cast::<AtomicU32>() }
        }
        fn u64_at(&self, off: usize) -> &AtomicU64 {
            assert!(off & 7 == 0 && off + 8 <= self.len());
            // SAFETY: in bounds and aligned (checked above); the memory is atomics only.
            unsafe { &*self.0.as_ptr().cast::<u8>().add(off).cast::<AtomicU64>() }
        }
    }

    fn pair(capacity: u32) -> (Mem, Producer, Consumer) {
        let mut m = Mem::new(capacity);
        // SAFETY: `m` is live, aligned and big enough; it outlives the handles in every test.
        let c = unsafe { Consumer::init(m.ptr(), m.len(), capacity) }.unwrap();
        // SAFETY: as above.
        let p = unsafe { Producer::attach(m.ptr(), m.len()) }.unwrap();
        (m, p, c)
    }

    const YES: &dyn Fn() -> bool = &|| true;

    #[test]
    fn layout_numbers() {
        assert_eq!(RingLayout::bytes(4), 384 + 4 * 128);
        assert_eq!(RingLayout::max_message(1), 0);
        assert_eq!(RingLayout::max_message(3), 0);
        assert_eq!(RingLayout::max_message(2), 116);
        assert_eq!(RingLayout::max_message(4), 236);
        assert_eq!(RingLayout::max_message(1024), 512 * 120 - 4);
        assert_eq!(RingLayout::max_message(2048), MESSAGE_LIMIT);
        assert_eq!(RingLayout::max_message(MAX_CAPACITY * 2), 0);
        assert_eq!(RingLayout::slots_for(1), 1);
        assert_eq!(RingLayout::slots_for(116), 1);
        assert_eq!(RingLayout::slots_for(117), 2);
        assert_eq!(RingLayout::slots_for(236), 2);
        assert_eq!(RingLayout::slots_for(237), 3);
        assert_eq!(
            RingLayout::slots_for(usize::MAX),
            usize::MAX / SLOT_PAYLOAD + 1
        );
    }

    #[test]
    fn init_validation() {
        let mut m = Mem::new(8);
        let (p, l) = (m.ptr(), m.len());
        // SAFETY: (all calls below) `m` is live and `l` bytes long; bad arguments are rejected
        // before any access.
        unsafe {
            assert_eq!(init(p, l, 0), Err(RingError::BadCapacity(0)));
            assert_eq!(init(p, l, 1), Err(RingError::BadCapacity(1)));
            assert_eq!(init(p, l, 6), Err(RingError::BadCapacity(6)));
            assert_eq!(
                init(p, l, 16),
                Err(RingError::TooSmall {
                    need: RingLayout::bytes(16),
                    have: l
                })
            );
            assert_eq!(init(p.add(4), l - 8, 4), Err(RingError::Misaligned));
            assert_eq!(init(std::ptr::null_mut(), l, 4), Err(RingError::Misaligned));
            assert_eq!(init(p, l, 8), Ok(()));
        }
    }

    #[test]
    fn attach_rejects_bad_headers() {
        let mut m = Mem::new(8);
        let (p, l) = (m.ptr(), m.len());
        // SAFETY: `m` is live, aligned and `l` bytes long for every call in this test.
        let attach = |len: usize| unsafe { Producer::attach(p, len) }.map(|_| ());
        // SAFETY: as above.
        let attach_c = |len: usize| unsafe { Consumer::attach(p, len) }.map(|_| ());
        assert_eq!(attach(l), Err(RingError::BadMagic(0)));
        // SAFETY: as above.
        unsafe { init(p, l, 8) }.unwrap();
        assert_eq!(attach(l), Ok(()));
        assert_eq!(attach_c(l), Ok(()));
        assert_eq!(
            attach(100),
            Err(RingError::TooSmall {
                need: HEADER_SIZE,
                have: 100
            })
        );
        assert_eq!(
            attach(l - 1),
            Err(RingError::TooSmall {
                need: l,
                have: l - 1
            })
        );

        m.u32_at(8).store(2, Relaxed);
        assert_eq!(attach(l), Err(RingError::BadVersion(2)));
        m.u32_at(8).store(RING_ABI_VERSION, Relaxed);
        m.u32_at(12).store(64, Relaxed);
        assert_eq!(attach_c(l), Err(RingError::BadSlotSize(64)));
        m.u32_at(12).store(128, Relaxed);
        for bad in [0, 1, 3, 12, MAX_CAPACITY * 2, u32::MAX] {
            m.u32_at(16).store(bad, Relaxed);
            assert_eq!(attach_c(l), Err(RingError::BadCapacity(bad)));
        }
        m.u32_at(16).store(16, Relaxed);
        assert_eq!(
            attach(l),
            Err(RingError::TooSmall {
                need: RingLayout::bytes(16),
                have: l
            })
        );
        m.u32_at(16).store(8, Relaxed);
        m.u64_at(0).store(!RING_MAGIC, Relaxed);
        assert_eq!(attach(l), Err(RingError::BadMagic(!RING_MAGIC)));
    }

    #[test]
    fn message_size_limits() {
        let (_m, p, mut c) = pair(4);
        assert_eq!(
            p.push(&[], YES),
            Err(RingError::MessageSize { len: 0, max: 236 })
        );
        assert_eq!(
            p.push(&[0; 237], YES),
            Err(RingError::MessageSize { len: 237, max: 236 })
        );
        assert_eq!(p.push(&[7; 236], YES), Ok(0));
        assert_eq!(p.push(&[8; 1], YES), Ok(2));
        let mut out = vec![1, 2, 3];
        assert_eq!(c.try_pop(&mut out), Ok(true));
        assert_eq!(out, vec![7; 236]);
        assert_eq!(c.try_pop(&mut out), Ok(true));
        assert_eq!(out, vec![8]);
        assert_eq!(c.try_pop(&mut out), Ok(false));
        let (_m, p, _c) = pair(4096);
        assert_eq!(p.max_message(), MESSAGE_LIMIT);
        assert!(p.push(&vec![0; MESSAGE_LIMIT + 1], YES).is_err());
        assert!(p.push(&vec![0; MESSAGE_LIMIT], YES).is_ok());
    }

    #[test]
    fn round_trip_with_wrap_around() {
        let (m, p, mut c) = pair(8);
        let mut out = Vec::new();
        for round in 0..50u32 {
            let len = 1 + (round as usize * 37) % 476;
            let msg: Vec<u8> = (0..len).map(|i| (i as u32 ^ round) as u8).collect();
            let pos = p.push(&msg, YES).unwrap();
            assert_eq!(c.try_pop(&mut out), Ok(true));
            assert_eq!(out, msg, "round {round} at {pos}");
            assert_eq!(c.try_pop(&mut out), Ok(false));
        }
        // Shared head mirrors the consumer's position.
        assert_eq!(m.u64_at(128).load(Relaxed), c.position());
        assert_eq!(m.u64_at(64).load(Relaxed), c.position());
    }

    #[test]
    fn full_ring_reports_closed_and_peer_gone() {
        let (_m, p, c) = pair(2);
        p.push(&[1], YES).unwrap();
        p.push(&[2], YES).unwrap();
        assert_eq!(p.push(&[3], &|| false), Err(RingError::PeerGone));
        c.close();
        assert_eq!(p.push(&[3], YES), Err(RingError::Closed));
    }

    #[test]
    fn closed_ring_drains_then_errors() {
        let (_m, p, mut c) = pair(4);
        p.push(b"last words", YES).unwrap();
        p.close();
        assert!(c.is_closed());
        assert_eq!(c.wait(Duration::ZERO, Duration::from_secs(5)), Ok(true));
        let mut out = Vec::new();
        assert_eq!(c.try_pop(&mut out), Ok(true));
        assert_eq!(out, b"last words");
        assert_eq!(c.try_pop(&mut out), Ok(false));
        assert_eq!(
            c.wait(Duration::ZERO, Duration::from_secs(5)),
            Err(RingError::Closed)
        );
    }

    #[test]
    fn wait_times_out_when_empty() {
        let (_m, _p, mut c) = pair(4);
        let t = std::time::Instant::now();
        assert_eq!(
            c.wait(Duration::from_millis(1), Duration::from_millis(20)),
            Ok(false)
        );
        assert!(t.elapsed() >= Duration::from_millis(15));
        assert_eq!(c.wait(Duration::ZERO, Duration::ZERO), Ok(false));
    }

    #[test]
    fn wait_is_woken_by_push() {
        let (_m, p, mut c) = pair(4);
        let p = Arc::new(p);
        let p2 = Arc::clone(&p);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            p2.push(b"hi", YES).unwrap();
        });
        let start = std::time::Instant::now();
        assert_eq!(c.wait(Duration::ZERO, Duration::from_secs(30)), Ok(true));
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    #[test]
    fn corrupt_first_seq() {
        let (m, p, mut c) = pair(4);
        let mut out = Vec::new();
        p.push(b"x", YES).unwrap();
        m.u64_at(HEADER_SIZE).store(7, Relaxed);
        assert!(matches!(c.try_pop(&mut out), Err(RingError::Corrupt(_))));
        assert!(matches!(
            c.wait(Duration::ZERO, Duration::ZERO),
            Err(RingError::Corrupt(_))
        ));
    }

    #[test]
    fn corrupt_lengths() {
        for bad_len in [0u32, 237, 100_000, u32::MAX] {
            let (m, p, mut c) = pair(4);
            p.push(b"abc", YES).unwrap();
            m.u32_at(HEADER_SIZE + 8)
                .store(u32::from_le(bad_len), Relaxed);
            let mut out = Vec::new();
            assert!(
                matches!(c.try_pop(&mut out), Err(RingError::Corrupt(_))),
                "{bad_len}"
            );
        }
    }

    #[test]
    fn corrupt_and_unpublished_continuation() {
        let (m, p, mut c) = pair(4);
        p.push(&[5; 200], YES).unwrap(); // positions 0, 1
        let mut out = Vec::new();
        let second = m.u64_at(HEADER_SIZE + SLOT_SIZE);
        assert_eq!(second.load(Relaxed), 2);
        // Producer "mid-write": continuation still free -> not ready, no error.
        second.store(1, Relaxed);
        assert_eq!(c.try_pop(&mut out), Ok(false));
        assert_eq!(c.wait(Duration::ZERO, Duration::ZERO), Ok(false));
        second.store(99, Relaxed);
        assert!(matches!(c.try_pop(&mut out), Err(RingError::Corrupt(_))));
        second.store(2, Relaxed);
        assert_eq!(c.try_pop(&mut out), Ok(true));
        assert_eq!(out, vec![5; 200]);
    }

    #[test]
    fn consumer_keeps_its_own_capacity() {
        let (m, p, mut c) = pair(4);
        p.push(b"hello", YES).unwrap();
        // The client rewrites the header after attach: the consumer must not care.
        m.u32_at(16).store(1 << 30, Relaxed);
        m.u64_at(0).store(0, Relaxed);
        let mut out = Vec::new();
        assert_eq!(c.try_pop(&mut out), Ok(true));
        assert_eq!(out, b"hello");
        assert_eq!(c.capacity(), 4);
    }
}
