//! memfd-backed shared mappings.
//!
//! [`SharedRegion::create`] makes an anonymous memory file (`memfd_create`, close-on-exec), sizes
//! it, seals its size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) and maps it `MAP_SHARED`
//! read/write. The fd ([`SharedRegion::fd`]) is passed to a peer over a unix socket; the peer maps
//! it with [`SharedRegion::map`], which first checks with `fstat` that the file really holds
//! `len` bytes (touching a mapped page past end-of-file raises `SIGBUS`).
//!
//! A peer can shrink a file it created after we mapped it, which would turn our later accesses
//! into `SIGBUS`. Files from [`SharedRegion::create`] are size-sealed, so that cannot happen to
//! them; before mapping an fd that an untrusted peer created, check
//! [`SharedRegion::is_size_sealed`].
//!
//! Same-address mappings (for pointers that must mean the same thing in both processes):
//! [`SharedRegion::map`] with `at = Some(addr)` uses `MAP_FIXED_NOREPLACE` and fails rather than
//! map anywhere else or over an existing mapping. Alternatively reserve a range with
//! [`reserve_address_range`] and place mappings inside it with [`SharedRegion::map_over`].

use std::ffi::{c_void, CString};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

/// Errors from creating or mapping shared memory.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// A zero-length region was requested.
    #[error("shared region length must be non-zero")]
    ZeroLength,
    /// The memfd name contains a NUL byte.
    #[error("memfd name contains a NUL byte")]
    BadName,
    /// The requested length does not fit the platform's file offsets.
    #[error("length {0} is too large")]
    TooLarge(usize),
    /// A fixed address was not page-aligned.
    #[error("address {addr:#x} is not page-aligned")]
    Misaligned {
        /// The address asked for.
        addr: usize,
    },
    /// The file is smaller than the mapping asked for.
    #[error("file holds {file_len} bytes, mapping wants {want}")]
    FileTooSmall {
        /// Size reported by `fstat`.
        file_len: u64,
        /// Requested mapping length.
        want: usize,
    },
    /// Something is already mapped at the requested fixed address.
    #[error("address range at {addr:#x} is already in use")]
    AddressInUse {
        /// The address asked for.
        addr: usize,
    },
    /// The kernel ignored the fixed-address request (pre-4.17 kernels treat
    /// `MAP_FIXED_NOREPLACE` as a hint). The stray mapping has been removed.
    #[error("kernel mapped at {got:#x} instead of {want:#x}")]
    AddressMismatch {
        /// The address asked for.
        want: usize,
        /// The address the kernel chose.
        got: usize,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// Which call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> ShmError {
    move |e| ShmError::Sys {
        op,
        source: std::io::Error::from(e),
    }
}

/// The system page size.
pub fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| v.is_power_of_two())
        .unwrap_or(4096)
}

fn nonzero(len: usize) -> Result<NonZeroUsize, ShmError> {
    NonZeroUsize::new(len).ok_or(ShmError::ZeroLength)
}

fn check_aligned(addr: usize) -> Result<NonZeroUsize, ShmError> {
    match NonZeroUsize::new(addr) {
        Some(a) if addr & (page_size() - 1) == 0 => Ok(a),
        _ => Err(ShmError::Misaligned { addr }),
    }
}

/// A `MAP_SHARED` read/write mapping of a memory file, unmapped on drop (the fd is closed too).
#[derive(Debug)]
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
    /// `None` once [`SharedRegion::take_fd`] gave it away: the mapping stays valid without it.
    fd: Option<OwnedFd>,
}

// SAFETY: the region is plain memory owned by this value (the mapping and the fd). Moving it to
// another thread changes nothing about its validity; any concurrent access to the bytes goes
// through raw pointers whose users are responsible for synchronisation.
unsafe impl Send for SharedRegion {}
// SAFETY: `&SharedRegion` only hands out the pointer, length and a borrowed fd; none of these
// allow unsynchronised mutation of `SharedRegion` itself.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Creates a new memfd named `name` (for `/proc/*/fd` only), `len` bytes, zero-filled,
    /// size-sealed, and maps it.
    pub fn create(name: &str, len: usize) -> Result<Self, ShmError> {
        let size = nonzero(len)?;
        let off = libc::off_t::try_from(len).map_err(|_| ShmError::TooLarge(len))?;
        let cname = CString::new(name).map_err(|_| ShmError::BadName)?;
        let fd = memfd_create(
            &cname,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(sys("memfd_create"))?;
        ftruncate(&fd, off).map_err(sys("ftruncate"))?;
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(sys("fcntl(F_ADD_SEALS)"))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint) replaces nothing; the
        // file was just sized to `len` bytes.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(sys("mmap"))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
            fd: Some(fd),
        })
    }

    /// Maps `len` bytes of a memory file received from a peer.
    ///
    /// `at = Some(addr)` maps at exactly `addr` (page-aligned) with `MAP_FIXED_NOREPLACE`:
    /// [`ShmError::AddressInUse`] if something is there, [`ShmError::AddressMismatch`] if the
    /// kernel put it elsewhere. Fails with [`ShmError::FileTooSmall`] if the file is shorter
    /// than `len`.
    pub fn map(fd: OwnedFd, len: usize, at: Option<usize>) -> Result<Self, ShmError> {
        let size = nonzero(len)?;
        check_file_len(&fd, len)?;
        let (hint, flags) = match at {
            None => (None, MapFlags::MAP_SHARED),
            Some(addr) => (
                Some(check_aligned(addr)?),
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED_NOREPLACE,
            ),
        };
        // SAFETY: without MAP_FIXED the kernel never replaces an existing mapping (with
        // MAP_FIXED_NOREPLACE it fails with EEXIST instead); the file holds at least `len` bytes.
        let res = unsafe {
            mmap(
                hint,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                &fd,
                0,
            )
        };
        let ptr = match res {
            Ok(p) => p,
            Err(Errno::EEXIST) => {
                return Err(ShmError::AddressInUse {
                    addr: at.unwrap_or(0),
                })
            }
            Err(e) => return Err(sys("mmap")(e)),
        };
        if let Some(want) = at {
            let got = ptr.as_ptr() as usize;
            if got != want {
                // SAFETY: `ptr`/`len` is the mapping we just created; nothing else refers to it.
                let _ = unsafe { munmap(ptr, len) };
                return Err(ShmError::AddressMismatch { want, got });
            }
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
            fd: Some(fd),
        })
    }

    /// Maps `len` bytes of `fd` at exactly `addr` with `MAP_FIXED`, replacing whatever is mapped
    /// there (normally part of a range from [`reserve_address_range`]).
    ///
    /// Dropping the region unmaps `[addr, addr + len)`, leaving a hole in the reservation.
    ///
    /// # Safety
    /// `[addr, addr + len)` (rounded up to whole pages) must be address space the caller owns and
    /// that nothing else uses, e.g. a range returned by [`reserve_address_range`]. `MAP_FIXED`
    /// silently destroys any mapping there, including ones Rust code still references.
    pub unsafe fn map_over(fd: OwnedFd, len: usize, addr: usize) -> Result<Self, ShmError> {
        let size = nonzero(len)?;
        let at = check_aligned(addr)?;
        check_file_len(&fd, len)?;
        // SAFETY: the caller guarantees the target range is theirs to replace; the file holds at
        // least `len` bytes.
        let ptr = unsafe {
            mmap(
                Some(at),
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                &fd,
                0,
            )
        }
        .map_err(sys("mmap"))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
            fd: Some(fd),
        })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes, as requested (the mapping itself is rounded up to whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: zero-length regions cannot be created.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory file, e.g. to send to a peer with `SCM_RIGHTS`.
    ///
    /// # Panics
    /// After [`SharedRegion::take_fd`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("the region's memory file was taken")
            .as_fd()
    }

    /// Takes the memory file out, leaving the mapping: for a region that is sent to a peer
    /// once and never again, so that holding many of them costs no descriptors.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// True if the file can no longer shrink (`F_SEAL_SHRINK`), so the mapping can never turn
    /// into `SIGBUS` under us. Always true for regions from [`SharedRegion::create`].
    pub fn is_size_sealed(&self) -> bool {
        let Some(fd) = &self.fd else {
            return false;
        };
        fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS)
            .map(|bits| SealFlag::from_bits_truncate(bits).contains(SealFlag::F_SEAL_SHRINK))
            .unwrap_or(false)
    }
}

impl SharedRegion {
    /// Gives up the region without unmapping it, returning its memory file (unless
    /// [`SharedRegion::take_fd`] took it already). For a caller that
    /// has already replaced the mapping itself (e.g. with a `MAP_FIXED` reservation over the
    /// same range, so that no other mapping can slip into a hole in between).
    ///
    /// # Safety
    /// The caller must have replaced or unmapped `[as_ptr(), as_ptr() + len())` already, or
    /// accept that the mapping stays for the life of the process.
    pub unsafe fn forget_mapping(self) -> Option<OwnedFd> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the fd is moved out exactly once.
        unsafe { std::ptr::read(&this.fd) }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is exactly the mapping this value created and owns; no reference
        // into it can outlive `self` (callers only get raw pointers, whose use after drop is on
        // them, per `as_ptr`).
        let _ = unsafe { munmap(self.ptr.cast::<c_void>(), self.len) };
    }
}

fn check_file_len(fd: &OwnedFd, want: usize) -> Result<(), ShmError> {
    let st = fstat(fd.as_raw_fd()).map_err(sys("fstat"))?;
    let file_len = u64::try_from(st.st_size).unwrap_or(0);
    if file_len < want as u64 {
        return Err(ShmError::FileTooSmall { file_len, want });
    }
    Ok(())
}

/// Reserves `len` bytes of address space (`PROT_NONE`, private, anonymous, `MAP_NORESERVE`: no
/// memory is committed) and returns its page-aligned start. Place mappings inside it with
/// [`SharedRegion::map_over`]; give it back with [`release_address_range`].
pub fn reserve_address_range(len: usize) -> Result<usize, ShmError> {
    let size = nonzero(len)?;
    // SAFETY: an anonymous PROT_NONE mapping at a kernel-chosen address replaces nothing.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .map_err(sys("mmap"))?;
    Ok(ptr.as_ptr() as usize)
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
/// The range must have come from [`reserve_address_range`] (or be otherwise owned by the caller)
/// and nothing may still use memory in it. Drop every [`SharedRegion`] placed inside it with
/// [`SharedRegion::map_over`] first: once released, the kernel may hand the addresses to someone
/// else, and a later drop would unmap their memory.
pub unsafe fn release_address_range(addr: usize, len: usize) -> Result<(), ShmError> {
    let ptr = NonNull::new(addr as *mut c_void).ok_or(ShmError::Misaligned { addr })?;
    // SAFETY: forwarded from the caller's contract.
    unsafe { munmap(ptr, len) }.map_err(sys("munmap"))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn create_is_zeroed_shared_and_sealed() {
        let a = SharedRegion::create("baton-test", 10_000).unwrap();
        assert_eq!(a.len(), 10_000);
        assert!(a.is_size_sealed());
        let b = SharedRegion::map(a.fd().try_clone_to_owned().unwrap(), 10_000, None).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        // SAFETY: both mappings are live, 10_000 bytes, and only this thread touches them.
        unsafe {
            assert_eq!(*a.as_ptr().add(9_999), 0);
            *a.as_ptr().add(1234) = 0xAB;
            assert_eq!(*b.as_ptr().add(1234), 0xAB);
        }
        // The seal makes shrinking fail.
        assert!(ftruncate(a.fd(), 10).is_err());
    }

    #[test]
    fn bad_arguments() {
        assert!(matches!(
            SharedRegion::create("x", 0),
            Err(ShmError::ZeroLength)
        ));
        assert!(matches!(
            SharedRegion::create("a\0b", 10),
            Err(ShmError::BadName)
        ));
        let a = SharedRegion::create("baton-test", 4096).unwrap();
        let fd = || a.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            SharedRegion::map(fd(), 8192, None),
            Err(ShmError::FileTooSmall {
                file_len: 4096,
                want: 8192
            })
        ));
        assert!(matches!(
            SharedRegion::map(fd(), 4096, Some(123)),
            Err(ShmError::Misaligned { .. })
        ));
        assert!(matches!(
            SharedRegion::map(fd(), 0, None),
            Err(ShmError::ZeroLength)
        ));
    }

    #[test]
    fn fixed_address_mapping() {
        let a = SharedRegion::create("baton-test", 8192).unwrap();
        // Find a free range, give it back, then map exactly there.
        let addr = reserve_address_range(8192).unwrap();
        // SAFETY: we reserved this range and nothing uses it.
        unsafe { release_address_range(addr, 8192).unwrap() };
        let b = SharedRegion::map(a.fd().try_clone_to_owned().unwrap(), 8192, Some(addr)).unwrap();
        assert_eq!(b.as_ptr() as usize, addr);
        // Mapping again at the same place must refuse, not clobber.
        let err = SharedRegion::map(a.fd().try_clone_to_owned().unwrap(), 4096, Some(addr));
        assert!(
            matches!(
                err,
                Err(ShmError::AddressInUse { .. }) | Err(ShmError::AddressMismatch { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn map_over_reserved_range() {
        let a = SharedRegion::create("baton-test", 4096).unwrap();
        let ps = page_size();
        let base = reserve_address_range(4 * ps).unwrap();
        // SAFETY: [base + ps, base + 2ps) lies inside our reservation and nothing uses it.
        let b = unsafe {
            SharedRegion::map_over(a.fd().try_clone_to_owned().unwrap(), 4096, base + ps).unwrap()
        };
        assert_eq!(b.as_ptr() as usize, base + ps);
        // SAFETY: both are live mappings of the same 4096-byte file; atomics are valid for any bytes.
        let (wa, wb) = unsafe {
            (
                &*(a.as_ptr() as *const AtomicU32),
                &*(b.as_ptr() as *const AtomicU32),
            )
        };
        wa.store(77, Ordering::SeqCst);
        assert_eq!(wb.load(Ordering::SeqCst), 77);
        drop(b);
        // SAFETY: the reservation is ours and `b` is gone.
        unsafe { release_address_range(base, 4 * ps).unwrap() };
    }
}
