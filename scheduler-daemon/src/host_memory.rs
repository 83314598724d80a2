//! Pinned host memory shared with clients at the same virtual address in both processes.
//!
//! `cuMemHostAlloc` memory must be real pinned memory (async copies from it are DMA) and, on a
//! unified-addressing GPU, its host pointer is also its device pointer: programs pass it to
//! kernels as is. So the daemon maps each chunk at an address taken from one large reservation
//! made at start-up far from where either process maps anything, registers it with the driver,
//! and the client maps the same memfd at the same address.

use crate::executor::Executor;
use baton_ipc::shm::SharedRegion;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where the daemon asks for its reservation: far above the usual heap and below the usual
/// mmap area of x86-64 processes, so the same range is almost always free in clients.
const HINT: usize = 0x1f00_0000_0000;
/// Size of the reservation (address space only; nothing is committed).
const RESERVATION: usize = 1 << 40;
/// Chunks are whole multiples of this.
pub const GRANULE: usize = 2 << 20;

/// Reserves `len` bytes of address space (nothing committed), at `hint` if that range is free.
fn reserve_at(hint: usize, len: usize) -> Result<usize, String> {
    let size = std::num::NonZeroUsize::new(len).ok_or("empty reservation")?;
    // SAFETY: without MAP_FIXED the kernel treats `hint` as a hint and never replaces an existing
    // mapping; an anonymous PROT_NONE mapping commits no memory.
    let p = unsafe {
        nix::sys::mman::mmap_anonymous(
            std::num::NonZeroUsize::new(hint),
            size,
            nix::sys::mman::ProtFlags::PROT_NONE,
            nix::sys::mman::MapFlags::MAP_PRIVATE | nix::sys::mman::MapFlags::MAP_NORESERVE,
        )
    }
    .map_err(|e| format!("reserving {len} bytes of address space: {e}"))?;
    Ok(p.as_ptr() as usize)
}

/// Turns `[addr, addr+len)` back into reserved, inaccessible address space in one step, so no
/// other mapping of this process can slip into the hole a plain munmap would leave.
///
/// # Safety
/// The range must belong to the arena's reservation and nothing may use memory in it.
unsafe fn rereserve(addr: usize, len: usize) -> Result<(), String> {
    let size = std::num::NonZeroUsize::new(len).ok_or("empty range")?;
    // SAFETY: MAP_FIXED replaces only our own range, per the caller's contract.
    unsafe {
        nix::sys::mman::mmap_anonymous(
            std::num::NonZeroUsize::new(addr),
            size,
            nix::sys::mman::ProtFlags::PROT_NONE,
            nix::sys::mman::MapFlags::MAP_PRIVATE
                | nix::sys::mman::MapFlags::MAP_NORESERVE
                | nix::sys::mman::MapFlags::MAP_FIXED,
        )
    }
    .map(|_| ())
    .map_err(|e| format!("re-reserving {len} bytes at {addr:#x}: {e}"))
}

/// The daemon-wide address reservation, carved into chunks.
pub struct HostArena {
    base: usize,
    len: usize,
    /// start -> len of free ranges.
    free: Mutex<BTreeMap<usize, usize>>,
}

impl HostArena {
    pub fn reserve() -> Result<Arc<HostArena>, String> {
        let base = reserve_at(HINT, RESERVATION)?;
        let mut free = BTreeMap::new();
        free.insert(base, RESERVATION);
        Ok(Arc::new(HostArena {
            base,
            len: RESERVATION,
            free: Mutex::new(free),
        }))
    }

    pub fn base(&self) -> usize {
        self.base
    }

    fn take(&self, len: usize) -> Option<usize> {
        let mut free = crate::session::lock(&self.free);
        let (&start, &flen) = free.iter().find(|(_, &l)| l >= len)?;
        free.remove(&start);
        if flen > len {
            free.insert(start + len, flen - len);
        }
        Some(start)
    }

    fn give_back(&self, start: usize, len: usize) {
        let mut free = crate::session::lock(&self.free);
        let mut start = start;
        let mut len = len;
        if let Some((&prev, &plen)) = free.range(..start).next_back() {
            if prev + plen == start {
                free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = free.get(&(start + len)) {
            free.remove(&(start + len));
            len += nlen;
        }
        free.insert(start, len);
    }

    /// Creates, maps and pins a chunk of at least `len` bytes. The chunk unpins and unmaps
    /// itself when dropped.
    pub fn alloc(
        self: &Arc<Self>,
        exec: &Arc<dyn Executor>,
        len: usize,
    ) -> Result<HostChunk, String> {
        // `len` is the client's: round up without overflowing.
        let len = len
            .max(1)
            .checked_next_multiple_of(GRANULE)
            .ok_or("pinned memory request is too large")?;
        let addr = self.take(len).ok_or("host memory reservation exhausted")?;
        let region = (|| {
            let fresh = SharedRegion::create("baton-host", len).map_err(|e| e.to_string())?;
            let fd = fresh.fd().try_clone_to_owned().map_err(|e| e.to_string())?;
            // SAFETY: [addr, addr+len) is a free part of our own reservation, which nothing else
            // in this process maps into.
            let region =
                unsafe { SharedRegion::map_over(fd, len, addr) }.map_err(|e| e.to_string())?;
            drop(fresh);
            // Huge pages, where the kernel offers them for shared memory, make the GPU's DMA
            // touch fewer pages; the hint is harmless where it does not.
            if let Some(p) = std::ptr::NonNull::new(region.as_ptr() as *mut std::ffi::c_void) {
                // SAFETY: advice on our own live mapping; it changes no contents.
                let _ = unsafe {
                    nix::sys::mman::madvise(p, len, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE)
                };
            }
            exec.host_register(region.as_ptr(), len)
                .map_err(|e| format!("registering host memory: {e}"))?;
            Ok::<_, String>(region)
        })();
        match region {
            Ok(region) => Ok(HostChunk {
                region: Some(region),
                arena: self.clone(),
                exec: Some(exec.clone()),
                addr,
                len,
                charge: None,
            }),
            Err(e) => {
                // SAFETY: the range is ours; whatever was mapped there is replaced by a reservation.
                let _ = unsafe { rereserve(addr, len) };
                self.give_back(addr, len);
                Err(e)
            }
        }
    }

    /// Bytes of the reservation not handed out.
    #[cfg(any(test, fuzzing))]
    pub fn free_bytes(&self) -> usize {
        crate::session::lock(&self.free).values().sum()
    }

    /// Bytes of the whole reservation.
    #[cfg(any(test, fuzzing))]
    pub fn reserved_bytes(&self) -> usize {
        self.len
    }

    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.base + self.len
    }
}

/// One pinned chunk. Dropping it unpins it, unmaps it and gives its range back to the
/// reservation, and the charge it carries back to its tenant, in every path (a session the
/// daemon ended included).
pub struct HostChunk {
    region: Option<SharedRegion>,
    arena: Arc<HostArena>,
    /// Who pinned it; `None` once its pinning went with a context a kernel fault ended.
    exec: Option<Arc<dyn Executor>>,
    pub addr: usize,
    pub len: usize,
    /// What it is charged to, given back with it.
    charge: Option<Box<dyn std::any::Any + Send>>,
}

impl HostChunk {
    pub fn region(&self) -> &SharedRegion {
        self.region.as_ref().expect("live chunk")
    }

    /// The chunk's memory file, for the client to map; the daemon keeps only the mapping, so
    /// a client's 1,024 chunks cost the daemon no descriptors. `None` after the first call.
    pub fn take_fd(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.region.as_mut().and_then(SharedRegion::take_fd)
    }

    /// The chunk, carrying `charge` (dropped when the chunk is freed).
    pub fn charged(mut self, charge: Box<dyn std::any::Any + Send>) -> HostChunk {
        self.charge = Some(charge);
        self
    }

    /// Unpins the chunk, unmaps it (the range goes back to the reservation).
    pub fn release(self) {
        drop(self);
    }

    /// Unmaps a chunk whose pinning went with a context that a kernel fault ended: there is
    /// nothing to unpin, and the new context must not be asked to.
    pub fn release_unpinned(mut self) {
        self.exec = None;
        drop(self);
    }

    fn free(&mut self) {
        if let Some(r) = self.region.take() {
            if let Some(exec) = self.exec.take() {
                let _ = exec.host_unregister(r.as_ptr());
            }
            // Replace the shared mapping with reserved space in one step, then let the region
            // go without unmapping: a plain munmap first would leave a hole another mapping of
            // this process could take, and a later chunk mapped with MAP_FIXED would clobber it.
            // SAFETY: the range belongs to our reservation; the GPU no longer uses it.
            match unsafe { rereserve(self.addr, self.len) } {
                // SAFETY: the mapping was just replaced by the reservation.
                Ok(()) => drop(unsafe { r.forget_mapping() }),
                Err(e) => {
                    tracing::warn!(error = %e, "could not re-reserve a freed pinned chunk; its range stays out of use");
                    drop(r);
                    return;
                }
            }
            self.arena.give_back(self.addr, self.len);
        }
    }
}

impl Drop for HostChunk {
    fn drop(&mut self) {
        self.free();
    }
}

/// The chunks one session holds.
#[derive(Default)]
pub struct HostChunks {
    chunks: BTreeMap<usize, HostChunk>,
}

impl HostChunks {
    pub fn insert(&mut self, c: HostChunk) {
        self.chunks.insert(c.addr, c);
    }
    pub fn remove(&mut self, addr: usize) -> Option<HostChunk> {
        self.chunks.remove(&addr)
    }
    /// Whether `[addr, addr+len)` lies inside one of the session's chunks.
    pub fn check(&self, addr: u64, len: u64) -> bool {
        let Ok(a) = usize::try_from(addr) else {
            return false;
        };
        let Some((&start, c)) = self.chunks.range(..=a).next_back() else {
            return false;
        };
        a.checked_add(len as usize)
            .is_some_and(|end| end <= start + c.len)
    }
    pub fn bytes(&self) -> u64 {
        self.chunks.values().map(|c| c.len as u64).sum()
    }
    pub fn count(&self) -> usize {
        self.chunks.len()
    }
    pub fn release_all(&mut self) {
        self.chunks.clear();
    }
    /// [`HostChunk::release_unpinned`] for every chunk.
    pub fn release_all_unpinned(&mut self) {
        for (_, c) in std::mem::take(&mut self.chunks) {
            c.release_unpinned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::sim::SimExecutor;

    /// A chunk's memory file goes to its client once; the daemon keeps only the mapping, so
    /// chunks do not use up its descriptors.
    #[test]
    fn a_chunk_gives_its_descriptor_away_and_keeps_its_mapping() {
        let arena = HostArena::reserve().unwrap();
        let sim: Arc<dyn Executor> = Arc::new(SimExecutor::new());
        let mut a = arena.alloc(&sim, 100).unwrap();
        let fd = a.take_fd().expect("the first call hands the file out");
        assert!(a.take_fd().is_none(), "only once");
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::File::from(fd.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino();
        let holders = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .filter(|m| m.ino() == ino && m.nlink() == 0)
                .count()
        };
        assert_eq!(
            holders(),
            1,
            "the file handed out is the only descriptor of it"
        );
        drop(fd);
        assert_eq!(
            holders(),
            0,
            "the daemon still holds the chunk's memory file"
        );
        // SAFETY: the chunk is still mapped read/write for its whole length.
        unsafe { a.region().as_ptr().write_bytes(7, a.len) };
        // SAFETY: as above.
        assert_eq!(unsafe { *a.region().as_ptr().add(a.len - 1) }, 7);
        a.release();
    }

    #[test]
    fn chunks_come_from_the_reservation_and_go_back() {
        let arena = HostArena::reserve().unwrap();
        let sim: Arc<dyn Executor> = Arc::new(SimExecutor::new());
        let a = arena.alloc(&sim, 100).unwrap();
        assert_eq!(a.len, GRANULE);
        assert!(arena.contains(a.addr));
        // SAFETY: the chunk is mapped read/write for its whole length.
        unsafe { a.region().as_ptr().write_bytes(7, a.len) };
        let b = arena.alloc(&sim, GRANULE + 1).unwrap();
        assert_eq!(b.len, 2 * GRANULE);
        let mut set = HostChunks::default();
        let (aa, ba) = (a.addr, b.addr);
        set.insert(a);
        set.insert(b);
        assert!(set.check(aa as u64 + 10, 100));
        assert!(!set.check(aa as u64 + GRANULE as u64 - 1, 2));
        assert!(set.check(ba as u64, 2 * GRANULE as u64));
        set.release_all();
        let c = arena.alloc(&sim, 3 * GRANULE).unwrap();
        assert_eq!(c.addr, arena.base(), "freed ranges coalesce and are reused");
        c.release();
        // Found by the control-socket harness: sizes near usize::MAX overflowed the rounding.
        for len in [usize::MAX, usize::MAX - GRANULE, RESERVATION + 1] {
            assert!(arena.alloc(&sim, len).is_err());
        }
        let d = arena.alloc(&sim, 1).unwrap();
        assert_eq!(d.addr, arena.base(), "refused requests take nothing");
        drop(d);
        assert_eq!(
            arena.free_bytes(),
            arena.reserved_bytes(),
            "a dropped chunk goes back"
        );
    }

    /// A chunk dropped without a release (a session the daemon ended, a panic) still goes back
    /// to the reservation, gives back its charge and is unpinned.
    #[test]
    fn a_dropped_chunk_is_unpinned_and_gives_back_its_charge() {
        struct Charge(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Charge {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        let arena = HostArena::reserve().unwrap();
        let sim = Arc::new(SimExecutor::new());
        let exec: Arc<dyn Executor> = sim.clone();
        let given = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = arena
            .alloc(&exec, 3 * GRANULE)
            .unwrap()
            .charged(Box::new(Charge(given.clone())));
        assert_eq!(sim.live_objects(), 1, "pinned");
        let mut set = HostChunks::default();
        set.insert(c);
        drop(set);
        assert_eq!(sim.live_objects(), 0, "unpinned");
        assert!(
            given.load(std::sync::atomic::Ordering::Acquire),
            "charge given back"
        );
        assert_eq!(arena.free_bytes(), arena.reserved_bytes());
    }
}
