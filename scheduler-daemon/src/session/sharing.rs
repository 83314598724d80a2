//! The daemon-wide table of objects that one session shared with others: legacy IPC memory
//! (`cuIpcGetMemHandle`), IPC events (`cuIpcGetEventHandle`) and exported physical allocations
//! (`cuMemExportToShareableHandle`).
//!
//! All sessions live in one CUDA context, so a shared object needs no driver-level IPC: another
//! session simply gets to name the same device pointer, event or allocation handle. What the
//! table adds is who may do so and when the object really goes away. A client learns a random
//! 128-bit token, which acts as a capability: any session presenting it may open the object,
//! as with the driver's own handles. Every holder (the exporter's own reference and each
//! session that opened it) counts once; the driver object is freed when the last one lets go,
//! and its bytes are refunded then to the exporter's account, which they stayed charged to.

use super::Shared;
use crate::executor::{code, GpuError, GpuResult};
use baton_ipc::protocol::VmmProp;
use std::collections::HashMap;
use std::sync::{Mutex, Weak};

pub type Token = [u64; 2];

/// What a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A `cuMemAlloc` allocation; the object is its base address.
    Mem,
    /// An event; the object is the driver's handle.
    Event,
    /// A `cuMemCreate` allocation; the object is the driver's handle.
    Phys,
    /// An explicit memory pool (`cuMemPoolExportToShareableHandle`); the object is the
    /// driver's pool.
    Pool,
    /// An allocation from an exported pool (`cuMemPoolExportPointer`); the object is its
    /// address, and `parent` the pool's token.
    PoolPtr,
}

impl Kind {
    /// Kinds whose exporter cannot open its own object, and whose object can no longer be
    /// opened once the exporter let go of it (freed memory): memory and events. Physical
    /// allocations and pools stay importable while anyone holds them, as their descriptors do.
    fn exporter_bound(self) -> bool {
        matches!(self, Kind::Mem | Kind::Event | Kind::PoolPtr)
    }
}

/// One shared object.
#[derive(Clone, Debug)]
pub struct Export {
    pub kind: Kind,
    pub device: u32,
    pub object: u64,
    pub size: u64,
    /// `Phys` only: the properties it was created with.
    pub prop: VmmProp,
    /// `PoolPtr` only: the token of the exported pool the allocation came from.
    pub parent: Option<Token>,
    /// The session that shared it.
    pub exporter: u64,
    /// The exporter's account, refunded when the object is finally freed.
    pub account: Weak<Shared>,
    holders: u32,
    /// The exporter let go of its own reference while others still hold the object.
    orphaned: bool,
}

impl Export {
    pub fn new(
        kind: Kind,
        device: u32,
        object: u64,
        size: u64,
        exporter: u64,
        account: Weak<Shared>,
    ) -> Export {
        Export {
            kind,
            device,
            object,
            size,
            prop: VmmProp::default(),
            parent: None,
            exporter,
            account,
            holders: 1,
            orphaned: false,
        }
    }

    /// Refunds the object's bytes to the exporter, if its session still exists.
    pub fn refund(&self) {
        if let Some(a) = self.account.upgrade() {
            a.refund(self.size);
        }
    }
}

/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`: the one shareable handle type Baton serves.
pub const HANDLE_TYPE_POSIX_FD: u32 = 0x1;

/// Refuses exports of any other handle type, naming the session in the log.
pub fn posix_fd_only(session: u64, handle_type: u32) -> GpuResult<()> {
    if handle_type != HANDLE_TYPE_POSIX_FD {
        tracing::info!(
            session,
            handle_type,
            "only POSIX file descriptor handles can be exported"
        );
        return Err(GpuError(code::NOT_SUPPORTED));
    }
    Ok(())
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<Token, Export>,
    by_object: HashMap<(Kind, u64), Token>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// An unguessable token from the kernel's random source.
fn fresh_token() -> GpuResult<Token> {
    let mut b = [0u8; 16];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: writes at most `b.len() - got` bytes into the rest of the local buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("getrandom failed: {}", std::io::Error::last_os_error());
            return Err(GpuError(code::UNKNOWN));
        }
        got += n as usize;
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Ok([word(0), word(8)])
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        super::lock(&self.inner)
    }

    /// Shares `e.object` (already checked to be the exporter's); a second export of the same
    /// object answers the same token and takes no further reference.
    pub fn export(&self, e: Export) -> GpuResult<Token> {
        let mut t = self.lock();
        if let Some(&tok) = t.by_object.get(&(e.kind, e.object)) {
            return Ok(tok);
        }
        let tok = fresh_token()?;
        t.by_object.insert((e.kind, e.object), tok);
        t.by_token.insert(tok, e);
        Ok(tok)
    }

    /// The token under which `object` is shared, if it is.
    pub fn token_of(&self, kind: Kind, object: u64) -> Option<Token> {
        self.lock().by_object.get(&(kind, object)).copied()
    }

    /// Takes a reference for `session`. Unknown tokens (forged, or of objects already gone),
    /// tokens of another kind and memory its exporter freed answer `INVALID_HANDLE`; the
    /// exporter opening its own memory or event answers `INVALID_CONTEXT`, as the driver does
    /// in the process that created it.
    pub fn open(&self, kind: Kind, token: Token, session: u64) -> GpuResult<Export> {
        let mut t = self.lock();
        let e = t
            .by_token
            .get_mut(&token)
            .filter(|e| e.kind == kind)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        if kind.exporter_bound() {
            if e.exporter == session {
                return Err(GpuError(code::INVALID_CONTEXT));
            }
            if e.orphaned {
                return Err(GpuError(code::INVALID_HANDLE));
            }
        }
        e.holders += 1;
        Ok(e.clone())
    }

    /// The object a token names, taking no reference.
    pub fn peek(&self, token: Token) -> Option<Export> {
        self.lock().by_token.get(&token).cloned()
    }

    /// Drops `session`'s reference. Answers the object when that was the last, so the caller
    /// frees it (and refunds its exporter); the token is then forgotten.
    pub fn release(&self, token: Token, session: u64) -> Option<Export> {
        let mut t = self.lock();
        let e = t.by_token.get_mut(&token)?;
        e.holders = e.holders.saturating_sub(1);
        if e.exporter == session {
            e.orphaned = true;
        }
        if e.holders > 0 {
            return None;
        }
        let e = t.by_token.remove(&token)?;
        t.by_object.remove(&(e.kind, e.object));
        Some(e)
    }

    /// Forgets every shared object without freeing anything: after a kernel fault, when the
    /// context that held them is reset.
    pub fn forget_all(&self) {
        let mut t = self.lock();
        t.by_token.clear();
        t.by_object.clear();
    }

    /// Shared objects still alive.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.lock().by_token.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_holder_frees_and_tokens_differ() {
        let r = Registry::default();
        let a = r
            .export(Export::new(Kind::Mem, 0, 4096, 64, 1, Weak::new()))
            .unwrap();
        let b = r
            .export(Export::new(Kind::Mem, 0, 8192, 64, 1, Weak::new()))
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            r.export(Export::new(Kind::Mem, 0, 4096, 64, 1, Weak::new()))
                .unwrap(),
            a
        );
        assert_eq!(
            r.open(Kind::Mem, a, 1).unwrap_err().0,
            code::INVALID_CONTEXT
        );
        assert_eq!(
            r.open(Kind::Event, a, 2).unwrap_err().0,
            code::INVALID_HANDLE
        );
        assert_eq!(r.open(Kind::Mem, a, 2).unwrap().object, 4096);
        assert!(r.release(a, 1).is_none(), "importer still holds it");
        assert_eq!(
            r.open(Kind::Mem, a, 3).unwrap_err().0,
            code::INVALID_HANDLE,
            "freed by its exporter"
        );
        assert_eq!(r.release(a, 2).unwrap().object, 4096);
        assert_eq!(r.token_of(Kind::Mem, 4096), None);
        assert_eq!(r.live(), 1);
    }
}
