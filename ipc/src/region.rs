//! The layout of one session's shared region (one memfd the daemon creates and the client maps).
//!
//! ```text
//! +--------------+---------------+-----------------+--------------------+-------------+------------+
//! | RegionHeader | command ring  | reply slots     | completion words   | chunk states| staging    |
//! |  (4 KiB)     | (ring.rs)     | REPLIES x 8 KiB | WORDS x u64        | CHUNKS x u32| CHUNKS x C |
//! +--------------+---------------+-----------------+--------------------+-------------+------------+
//! ```
//! Both sides compute the layout from the header's counts with [`Layout::new`]; the daemon
//! registers the whole region with the driver so the GPU can write completion words and DMA
//! to and from the staging chunks.

use crate::ring::RingLayout;
use core::sync::atomic::{AtomicU32, AtomicU64};

pub const REGION_MAGIC: u64 = 0x6e6f_6967_6572_4e54; // "TNregion"
pub const REGION_VERSION: u32 = 1;

/// Reply slot states (`ReplySlot::state`, a futex word).
pub const REPLY_IDLE: u32 = 0;
pub const REPLY_PENDING: u32 = 1;
pub const REPLY_DONE: u32 = 2;

/// Staging chunk states (a futex word each).
pub const CHUNK_FREE: u32 = 0;
/// Owned by the client (being filled, or being drained after a DtoH).
pub const CHUNK_CLIENT: u32 = 1;
/// Handed to the daemon by a staged-copy command.
pub const CHUNK_DAEMON: u32 = 2;
/// Filled by the daemon after a DtoH; the client drains it and frees it.
pub const CHUNK_FILLED: u32 = 3;
/// The daemon could not perform the staged copy.
pub const CHUNK_FAILED: u32 = 4;

pub const REPLY_SIZE: usize = 8192;
pub const REPLY_VALUES: usize = 4;
/// Bytes of a reply slot available for a variable payload.
pub const REPLY_PAYLOAD: usize = REPLY_SIZE - 16 - 8 * REPLY_VALUES;

/// One reply slot. The client owns the slot between allocating it and reading `REPLY_DONE`.
#[repr(C)]
pub struct ReplySlot {
    pub state: AtomicU32,
    /// A `CUresult`.
    pub result: AtomicU32,
    pub payload_len: AtomicU32,
    pub _pad: u32,
    pub values: [AtomicU64; REPLY_VALUES],
    pub payload: [u8; REPLY_PAYLOAD],
}
const _: () = assert!(core::mem::size_of::<ReplySlot>() == REPLY_SIZE);

/// Sizes chosen by the daemon; sent in the header so the client never guesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub ring_capacity: u32,
    pub replies: u32,
    pub words: u32,
    pub chunks: u32,
    pub chunk_size: u32,
}

impl Params {
    pub const DEFAULT: Params = Params {
        ring_capacity: 4096,
        replies: 64,
        words: 8192,
        chunks: 4,
        chunk_size: 4 << 20,
    };
}

#[repr(C)]
pub struct RegionHeader {
    pub magic: u64,
    pub version: u32,
    pub ring_capacity: u32,
    pub replies: u32,
    pub words: u32,
    pub chunks: u32,
    pub chunk_size: u32,
    pub total_len: u64,
}

pub const HEADER_SIZE: usize = 4096;

/// Where the host-callback mailbox lives inside the header page.
const MAILBOX_OFFSET: usize = 2048;

/// Host callbacks (`cuLaunchHostFunc`) run in the client: the daemon posts one request at a
/// time here and waits for the client's acknowledgement, which holds back the stream as CUDA
/// does. `request` and `done` are futex words counting requests posted and finished.
#[repr(C)]
pub struct Mailbox {
    pub callback: AtomicU64,
    pub request: AtomicU32,
    pub done: AtomicU32,
}
/// Where the context-fault word lives inside the header page (after the mailbox).
const FAULT_OFFSET: usize = 3072;

const _: () = assert!(MAILBOX_OFFSET >= core::mem::size_of::<RegionHeader>());
const _: () = assert!(FAULT_OFFSET >= MAILBOX_OFFSET + core::mem::size_of::<Mailbox>());
const _: () = assert!(FAULT_OFFSET + 4 <= HEADER_SIZE);
const _: () = assert!(MAILBOX_OFFSET + core::mem::size_of::<Mailbox>() <= HEADER_SIZE);
const PAGE: usize = 4096;

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Byte offsets of each part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub params: Params,
    pub ring: usize,
    pub ring_len: usize,
    pub replies: usize,
    pub words: usize,
    pub chunk_states: usize,
    pub staging: usize,
    pub total: usize,
}

/// Limits a daemon will never exceed; a header asking for more is rejected by the client.
const MAX_REPLIES: u32 = 1024;
const MAX_WORDS: u32 = 1 << 20;
const MAX_CHUNKS: u32 = 64;
const MAX_CHUNK: u32 = 64 << 20;

impl Layout {
    pub fn new(p: Params) -> Option<Layout> {
        if !p.ring_capacity.is_power_of_two()
            || p.replies == 0
            || p.replies > MAX_REPLIES
            || p.words == 0
            || p.words > MAX_WORDS
            || p.chunks == 0
            || p.chunks > MAX_CHUNKS
            || p.chunk_size == 0
            || p.chunk_size > MAX_CHUNK
            || p.chunk_size as usize % PAGE != 0
        {
            return None;
        }
        let ring = HEADER_SIZE;
        let ring_len = round_up(RingLayout::bytes(p.ring_capacity), PAGE);
        let replies = ring + ring_len;
        let words = replies + p.replies as usize * REPLY_SIZE;
        let chunk_states = round_up(words + p.words as usize * 8, PAGE);
        let staging = round_up(chunk_states + p.chunks as usize * 4, PAGE);
        let total = staging + p.chunks as usize * p.chunk_size as usize;
        Some(Layout {
            params: p,
            ring,
            ring_len,
            replies,
            words,
            chunk_states,
            staging,
            total,
        })
    }
}

/// A mapped session region. Holds raw pointers into memory shared with the peer.
pub struct Region {
    base: *mut u8,
    layout: Layout,
}

// SAFETY: every access to the region goes through atomics or through byte copies whose
// ownership is handed over by the protocol (reply slots, staging chunks); the pointer itself is
// valid for the life of the mapping the owner keeps alongside.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("region header is invalid (magic, version or sizes)")]
    BadHeader,
    #[error("region is {got} bytes, layout needs {need}")]
    TooSmall { got: usize, need: usize },
    #[error("ring: {0}")]
    Ring(#[from] crate::ring::RingError),
}

impl Region {
    /// Daemon side: writes the header and initialises the ring in fresh, zeroed memory.
    ///
    /// # Safety
    /// `base` must point to `len` writable bytes that stay mapped while the `Region` lives.
    pub unsafe fn init(base: *mut u8, len: usize, p: Params) -> Result<Region, RegionError> {
        let layout = Layout::new(p).ok_or(RegionError::BadHeader)?;
        if len < layout.total {
            return Err(RegionError::TooSmall {
                got: len,
                need: layout.total,
            });
        }
        let h = RegionHeader {
            magic: REGION_MAGIC,
            version: REGION_VERSION,
            ring_capacity: p.ring_capacity,
            replies: p.replies,
            words: p.words,
            chunks: p.chunks,
            chunk_size: p.chunk_size,
            total_len: layout.total as u64,
        };
        // SAFETY: the caller guarantees `len >= layout.total > size_of::<RegionHeader>()` writable
        // bytes at `base`, which is page aligned (a mapping).
        unsafe {
            (base as *mut RegionHeader).write(h);
            crate::ring::init(base.add(layout.ring), layout.ring_len, p.ring_capacity)?;
        }
        Ok(Region { base, layout })
    }

    /// Client side: validates the header the daemon wrote.
    ///
    /// # Safety
    /// `base` must point to `len` readable and writable bytes that stay mapped while the
    /// `Region` lives.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Region, RegionError> {
        if len < HEADER_SIZE {
            return Err(RegionError::TooSmall {
                got: len,
                need: HEADER_SIZE,
            });
        }
        // SAFETY: at least HEADER_SIZE bytes are readable at the page-aligned `base`.
        let h = unsafe { (base as *const RegionHeader).read_volatile() };
        if h.magic != REGION_MAGIC || h.version != REGION_VERSION {
            return Err(RegionError::BadHeader);
        }
        let p = Params {
            ring_capacity: h.ring_capacity,
            replies: h.replies,
            words: h.words,
            chunks: h.chunks,
            chunk_size: h.chunk_size,
        };
        let layout = Layout::new(p).ok_or(RegionError::BadHeader)?;
        if len < layout.total {
            return Err(RegionError::TooSmall {
                got: len,
                need: layout.total,
            });
        }
        Ok(Region { base, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// The host-callback mailbox.
    pub fn mailbox(&self) -> &Mailbox {
        // SAFETY: inside the header page (asserted above), 8-aligned, and a `Mailbox` of atomics
        // has no invalid bit patterns.
        unsafe { &*(self.base.add(MAILBOX_OFFSET) as *const Mailbox) }
    }

    /// 0 while the session is healthy; otherwise the sticky `CUresult` of a kernel fault that
    /// ended the GPU context this session's objects lived in. The daemon sets it once; from
    /// then on the client answers every call with it, as CUDA does after such a fault.
    pub fn fault(&self) -> &AtomicU32 {
        // SAFETY: inside the header page (asserted above), 4-aligned, and an atomic has no
        // invalid bit patterns.
        unsafe { &*(self.base.add(FAULT_OFFSET) as *const AtomicU32) }
    }

    /// Pointer and length of the command ring.
    pub fn ring(&self) -> (*mut u8, usize) {
        // SAFETY: the ring lies inside the mapping (checked by `Layout::new` and the length check).
        (
            unsafe { self.base.add(self.layout.ring) },
            self.layout.ring_len,
        )
    }

    /// Reply slot `i`, or `None` when `i` is out of range (an untrusted index).
    pub fn reply(&self, i: u32) -> Option<&ReplySlot> {
        if i >= self.layout.params.replies {
            return None;
        }
        // SAFETY: `i` is in range, slots are REPLY_SIZE bytes from an 8-aligned offset, and a
        // `ReplySlot` of atomics and bytes has no invalid bit patterns.
        Some(unsafe {
            &*(self.base.add(self.layout.replies + i as usize * REPLY_SIZE) as *const ReplySlot)
        })
    }

    /// Completion word `i`, or `None` when out of range.
    pub fn word(&self, i: u32) -> Option<&AtomicU64> {
        if i >= self.layout.params.words {
            return None;
        }
        // SAFETY: in range and 8-aligned (the words start at a multiple of REPLY_SIZE).
        Some(unsafe { &*(self.base.add(self.layout.words + i as usize * 8) as *const AtomicU64) })
    }

    /// Byte offset of completion word `i` from the region's base.
    pub fn word_offset(&self, i: u32) -> usize {
        self.layout.words + i as usize * 8
    }

    /// State word of staging chunk `i`, or `None` when out of range.
    pub fn chunk_state(&self, i: u32) -> Option<&AtomicU32> {
        if i >= self.layout.params.chunks {
            return None;
        }
        // SAFETY: in range and 4-aligned (page-aligned start).
        Some(unsafe {
            &*(self.base.add(self.layout.chunk_states + i as usize * 4) as *const AtomicU32)
        })
    }

    /// Start of staging chunk `i` (each `chunk_size` bytes), or `None` when out of range.
    pub fn chunk_ptr(&self, i: u32) -> Option<*mut u8> {
        if i >= self.layout.params.chunks {
            return None;
        }
        // SAFETY: in range: the staging area holds `chunks * chunk_size` bytes.
        Some(unsafe {
            self.base
                .add(self.layout.staging + i as usize * self.layout.params.chunk_size as usize)
        })
    }

    pub fn chunk_size(&self) -> usize {
        self.layout.params.chunk_size as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_page_aligned_and_ordered() {
        let l = Layout::new(Params::DEFAULT).unwrap();
        assert_eq!(l.ring % PAGE, 0);
        assert_eq!(l.staging % PAGE, 0);
        assert!(l.replies >= l.ring + l.ring_len);
        assert!(l.words >= l.replies + 64 * REPLY_SIZE);
        assert!(l.total < 64 << 20);
    }

    #[test]
    fn absurd_params_are_rejected() {
        let mut p = Params::DEFAULT;
        p.ring_capacity = 1000;
        assert!(Layout::new(p).is_none());
        let mut p = Params::DEFAULT;
        p.chunks = 10_000;
        assert!(Layout::new(p).is_none());
        let mut p = Params::DEFAULT;
        p.chunk_size = 4097;
        assert!(Layout::new(p).is_none());
    }

    #[test]
    fn attach_checks_the_header() {
        let l = Layout::new(Params::DEFAULT).unwrap();
        let mut mem = vec![0u64; l.total / 8];
        let base = mem.as_mut_ptr() as *mut u8;
        // SAFETY: `mem` is `l.total` bytes, lives for the test.
        unsafe {
            assert!(Region::attach(base, l.total).is_err());
            let r = Region::init(base, l.total, Params::DEFAULT).unwrap();
            assert!(r.reply(64).is_none());
            assert!(r.reply(63).is_some());
            assert!(r.word(8192).is_none());
            let c = Region::attach(base, l.total).unwrap();
            assert_eq!(c.layout(), r.layout());
            assert!(Region::attach(base, l.total - 1).is_err());
        }
    }
}
