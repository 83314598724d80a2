//! Per-session handle tables. A client names daemon objects only by ids from these tables, so a
//! forged or stale id is just a failed lookup, never another tenant's object.

use crate::executor::{code, GpuError, GpuResult, Raw};
use baton_ipc::protocol::{FunctionInfo, ImageKind};
use std::collections::{BTreeMap, HashMap};

/// Objects of one kind, keyed by session-local ids (never reused within a session).
pub struct Table<T> {
    next: u64,
    items: HashMap<u64, T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            next: 1,
            items: HashMap::new(),
        }
    }
}

impl<T> Table<T> {
    pub fn insert(&mut self, v: T) -> u64 {
        let id = self.next;
        self.next += 1;
        self.items.insert(id, v);
        id
    }
    pub fn get(&self, id: u64) -> GpuResult<&T> {
        self.items.get(&id).ok_or(GpuError(code::INVALID_HANDLE))
    }
    pub fn get_mut(&mut self, id: u64) -> GpuResult<&mut T> {
        self.items
            .get_mut(&id)
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    pub fn remove(&mut self, id: u64) -> GpuResult<T> {
        self.items.remove(&id).ok_or(GpuError(code::INVALID_HANDLE))
    }
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, T)> + '_ {
        self.items.drain()
    }
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.items.retain(|_, v| keep(v));
    }
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.values()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &T)> {
        self.items.iter()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

pub struct Image {
    pub device: u32,
    pub kind: ImageKind,
    pub raw: Raw,
}

pub struct Function {
    pub device: u32,
    pub raw: Raw,
    pub info: FunctionInfo,
    /// The image it came from, so unloading the image retires its functions.
    pub image: u64,
}

pub struct Event {
    pub device: u32,
    pub raw: Raw,
    /// `CUevent_flags` it was created with.
    pub flags: u32,
    /// Set once the event is shared with other sessions: the driver event is then destroyed
    /// only when its last holder lets go (see `sharing`).
    pub ipc: Option<super::sharing::Token>,
}

/// Who a known device range belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The session's own allocation: freed at exit, counted against its quota.
    Alloc,
    /// A stream-ordered allocation (`cuMemAllocAsync`), freed with `cuMemFreeAsync`.
    AsyncAlloc,
    /// A `__device__` variable of one of the session's images, valid until it is unloaded.
    Global(u64),
    /// A mapping of physical memory into a reservation (`cuMemMap`); freed by `vmm`.
    Mapped,
    /// Another session's allocation opened with `cuIpcOpenMemHandle`; released by `ipc`.
    Imported,
    /// Another session's pool allocation imported with `cuMemPoolImportPointer`; released by
    /// `pools`.
    PoolImported,
    /// An address a graph allocation node of this session reserved (see `graph_mem`): named
    /// by nodes and copies, never freed here, forgotten with the last graph holding it.
    Graph,
    /// A graph allocation a launched graph left allocated: charged, and freed at exit.
    GraphOwned,
}

/// Device memory ranges a session may name in copies and memsets.
#[derive(Default)]
pub struct Ranges {
    /// start -> (len, device, owner).
    map: BTreeMap<u64, (u64, u32, Owner)>,
}

impl Ranges {
    pub fn insert(&mut self, start: u64, len: u64, device: u32, owner: Owner) {
        self.map.insert(start, (len, device, owner));
    }
    /// Removes the allocation starting at `start`; anything else there stays.
    pub fn remove_alloc(&mut self, start: u64) -> Option<(u64, u32)> {
        self.remove_owned(start, Owner::Alloc)
    }
    /// Removes the range starting at `start` if `owner` owns it.
    pub fn remove_owned(&mut self, start: u64, owner: Owner) -> Option<(u64, u32)> {
        match self.map.get(&start) {
            Some(&(len, dev, o)) if o == owner => {
                self.map.remove(&start);
                Some((len, dev))
            }
            _ => None,
        }
    }
    /// Who owns the range starting at `start`.
    pub fn owner_at(&self, start: u64) -> Option<Owner> {
        self.map.get(&start).map(|v| v.2)
    }
    /// The range of `owner` holding `ptr`: (start, len, device).
    pub fn owned_containing(&self, ptr: u64, owner: Owner) -> Option<(u64, u64, u32)> {
        let (&start, &(len, dev, o)) = self.map.range(..=ptr).next_back()?;
        (o == owner && ptr < start.checked_add(len)?).then_some((start, len, dev))
    }
    pub fn remove_globals_of(&mut self, image: u64) {
        self.map.retain(|_, v| v.2 != Owner::Global(image));
    }
    /// The device holding `[ptr, ptr+len)` if the whole range lies in one known range.
    pub fn check(&self, ptr: u64, len: u64) -> Option<u32> {
        let (&start, &(rlen, dev, _)) = self.map.range(..=ptr).next_back()?;
        let end = ptr.checked_add(len)?;
        (end <= start.checked_add(rlen)?).then_some(dev)
    }
    /// Every known range: (start, len, device, owner).
    #[cfg(any(test, fuzzing))]
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64, u32, Owner)> + '_ {
        self.map.iter().map(|(&s, &(l, d, o))| (s, l, d, o))
    }
    pub fn owned_bytes(&self) -> u64 {
        self.map
            .values()
            .filter(|v| matches!(v.2, Owner::Alloc | Owner::AsyncAlloc | Owner::GraphOwned))
            .map(|v| v.0)
            .sum()
    }
    /// Forgets every range, returning the allocations to free.
    pub fn drain_owned(&mut self) -> Vec<(u64, u32)> {
        let owned = self
            .map
            .iter()
            .filter(|(_, v)| matches!(v.2, Owner::Alloc | Owner::AsyncAlloc | Owner::GraphOwned))
            .map(|(&k, v)| (k, v.1))
            .collect();
        self.map.clear();
        owned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_accept_only_whole_ranges() {
        let mut r = Ranges::default();
        r.insert(1000, 100, 0, Owner::Alloc);
        r.insert(2000, 10, 1, Owner::Global(5));
        assert_eq!(r.check(1000, 100), Some(0));
        assert_eq!(r.check(1050, 50), Some(0));
        assert_eq!(r.check(1050, 51), None);
        assert_eq!(r.check(999, 1), None);
        assert_eq!(r.check(2005, 5), Some(1));
        assert_eq!(r.check(u64::MAX, 2), None);
        assert_eq!(r.owned_bytes(), 100);
        assert_eq!(r.remove_alloc(2000), None);
        r.remove_globals_of(5);
        assert_eq!(r.check(2005, 5), None);
        assert_eq!(r.remove_alloc(1000), Some((100, 0)));
    }

    #[test]
    fn ids_are_not_reused() {
        let mut t = Table::default();
        let a = t.insert(1);
        t.remove(a).unwrap();
        let b = t.insert(2);
        assert_ne!(a, b);
        assert!(t.get(a).is_err());
    }
}
