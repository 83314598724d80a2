//! Explicit memory pools (`cuMemPoolCreate` ..) and their sharing between clients
//! (`cuMemPoolExportToShareableHandle`, `cuMemPoolExportPointer` and the imports). Pools are
//! session ids; exported pools and pointers are named by the same random tokens as the other
//! shared objects, answered in `values[0..2]`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `cuMemPoolCreate`: answered with the pool's id. `location_type` and `handle_types` are the
/// client's `CUmemPoolProps` values, checked by the daemon.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemPoolCreate {
    pub alloc_type: u32,
    pub handle_types: u32,
    pub location_type: u32,
    pub location_id: i32,
    pub max_size: u64,
}

/// `cuMemAllocFromPoolAsync`: answered with the device pointer.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemPoolAlloc {
    pub pool: u64,
    pub stream: u64,
    pub bytes: u64,
}

/// `cuMemPoolSetAttribute` (`set` = 1) or `cuMemPoolGetAttribute` (`set` = 0): answered with
/// the attribute's value (after the change, for a set).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemPoolAttr {
    pub pool: u64,
    pub attr: u32,
    pub set: u32,
    pub value: u64,
}

/// `cuMemPoolTrimTo`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemPoolTrim {
    pub pool: u64,
    pub keep: u64,
}

/// `cuMemPoolImportPointer`: `pool` is the importing session's (imported) pool, `token` what
/// the exporter's `cuMemPoolExportPointer` wrote. Answered with `[pointer, size, device]`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemPoolImportPtr {
    pub pool: u64,
    pub token: [u64; 2],
}

/// Magic first bytes of an exported pool's descriptor contents and of pointer export data.
pub const IPC_POOL_MAGIC: [u8; 8] = *b"BatonPol";
pub const IPC_POOL_PTR_MAGIC: [u8; 8] = *b"BatonPpt";
