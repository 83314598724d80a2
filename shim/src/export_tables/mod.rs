//! `cuGetExportTable`: the driver's private interfaces. Each is a table of words named by a
//! UUID, usually its own size in bytes followed by function pointers. The CUDA runtime (the
//! shared `libcudart` and the private copies inside cuBLAS, cuDNN and others) cannot start
//! without six of them; cuBLASLt and cuDNN ask for two more. What each table holds, what the
//! real driver answers and what Baton answers is in `docs/export-tables.md`.
//!
//! Every table lives in a `static`, so its address never changes: the integrity check hashes
//! the addresses of two of them. Slots whose meaning is unknown hold a stub that names the
//! table and slot on stderr (once) and fails with `CUDA_ERROR_NOT_SUPPORTED`, so a caller that
//! reaches one gets an error, never a jump through a null pointer.

mod callback_hooks;
mod context_checks;
mod context_storage;
mod cudart_interface;
mod integrity;
mod table_1734dc26;
mod tools_context;
mod tools_module;
mod tools_tls;

// Wired into context destruction by the context API (`cuCtxDestroy`, primary context reset).
#[allow(unused_imports)]
pub(crate) use context_storage::context_destroyed;

use crate::objects::Context;
use cuda_abi::{CUcontext, CUresult, CUuuid};
use std::ffi::c_void;
use std::sync::Mutex;

/// The words of a table, in rows of ten so that a macro can fill every slot with its own stub
/// (`[[T; 10]; R]` has the layout of `[T; 10 * R]`).
#[repr(transparent)]
pub(super) struct Table<const R: usize>([[*const c_void; 10]; R]);

// SAFETY: the words are integers and function addresses, fixed at compile time; nothing writes
// to a table.
unsafe impl<const R: usize> Sync for Table<R> {}

impl<const R: usize> Table<R> {
    /// A table whose slots all hold their unknown-slot stubs (see [`stubs!`]).
    pub(super) const fn new(rows: [[*const c_void; 10]; R]) -> Self {
        Table(rows)
    }

    /// Sets slot `i`.
    pub(super) const fn with(mut self, i: usize, word: *const c_void) -> Self {
        self.0[i / 10][i % 10] = word;
        self
    }

    /// Sets slot 0 to the size word of a table of `slots` slots (slot 0 included), in bytes.
    pub(super) const fn sized(self, slots: usize) -> Self {
        self.with(0, (slots * size_of::<usize>()) as *const c_void)
    }

    /// The address the caller receives.
    pub(super) fn start(&'static self) -> *const c_void {
        self.0.as_ptr().cast()
    }

    /// Slot `i`, as the caller reads it.
    pub(super) fn word(&'static self, i: usize) -> *const c_void {
        self.0[i / 10][i % 10]
    }
}

/// Names of the tables, for the messages of unknown slots (indexed by the tables' `ID`s).
const NAMES: [&str; 9] = [
    "CUDART_INTERFACE",
    "TOOLS_RUNTIME_CALLBACK_HOOKS",
    "TOOLS_TLS",
    "CONTEXT_LOCAL_STORAGE",
    "CONTEXT_CHECKS",
    "INTEGRITY_CHECK",
    "TOOLS_CONTEXT (21318c60)",
    "1734dc26",
    "TOOLS_MODULE (6e163fbe)",
];

/// The stub of slot `10 * TENS + ONES` of table `T`: says once that Baton lacks it, and fails.
/// Every (table, slot) pair is its own function, so the message names the slot that was used.
/// It takes no arguments: in the C calling convention a callee may ignore what it was passed.
pub(super) extern "C" fn unknown<const T: usize, const TENS: usize, const ONES: usize>() -> CUresult
{
    let slot = (T, 10 * TENS + ONES);
    static SEEN: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
    let mut seen = crate::client::lock(&SEEN);
    if !seen.contains(&slot) {
        seen.push(slot);
        eprintln!(
            "baton: slot {} of the driver's private table {} is not supported by Baton",
            slot.1, NAMES[T]
        );
    }
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}

/// One row of ten unknown-slot stubs of table `$t`: slots `10 * $tens ..= 10 * $tens + 9`.
macro_rules! stubs {
    ($t:expr; $($tens:literal)+) => {
        [$([
            $crate::export_tables::unknown::<{ $t }, $tens, 0> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 1> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 2> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 3> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 4> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 5> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 6> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 7> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 8> as *const c_void,
            $crate::export_tables::unknown::<{ $t }, $tens, 9> as *const c_void,
        ]),+]
    };
}
pub(super) use stubs;

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a hex digit"),
    }
}

/// The UUIDs, bytes in memory order (as `cuGetExportTable` receives them).
const fn uuid(s: &str) -> [u8; 16] {
    let s = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]);
        i += 1;
    }
    out
}

pub(super) const CUDART_INTERFACE: [u8; 16] = uuid("6bd5fb6c5bf4e74a8987d93912fd9df9");
pub(super) const TOOLS_RUNTIME_CALLBACK_HOOKS: [u8; 16] = uuid("a094798c2e742e7493f20800200c0a66");
pub(super) const TOOLS_TLS: [u8; 16] = uuid("42d85a8123f6cb478298f6e78a3aecdc");
pub(super) const CONTEXT_LOCAL_STORAGE: [u8; 16] = uuid("c693336e1121df11a8c368f355d89593");
pub(super) const CONTEXT_CHECKS: [u8; 16] = uuid("263e88607cd2614392f6bbd5006dfa7e");
pub(super) const INTEGRITY_CHECK: [u8; 16] = uuid("d4082055bde6704b8d34ba123c66e1f2");
pub(super) const TOOLS_CONTEXT: [u8; 16] = uuid("21318c60971432488ca641ff7324c8f2");
pub(super) const TABLE_1734DC26: [u8; 16] = uuid("1734dc26800d47458726c0f1e7dd8bca");
pub(super) const TOOLS_MODULE: [u8; 16] = uuid("6e163fbeb958444d835ce182aff1991e");

/// Tables the runtime and libraries ask for that Baton refuses on purpose, answering as a
/// driver that lacks them does; callers must cope with that, since older drivers lack them.
const REFUSED: [[u8; 16]; 3] = [
    // Asked for first by every runtime; answering it sends the runtime down another start-up
    // path (a chain of sub-tables whose functions are unknown).
    uuid("f8cff95121468b4eb9e2fb469e7c0dd9"),
    // NVML's (34 slots), CuPy's process's (7 slots): no public description of either.
    uuid("69a28e9f24498b47b030c5da330ea4e9"),
    uuid("da9151d33ae6cc41a5c04f26d533e328"),
];

/// The table named `id`, if Baton serves it.
fn find(id: &[u8; 16]) -> Option<*const c_void> {
    Some(match *id {
        CUDART_INTERFACE => cudart_interface::TABLE.start(),
        TOOLS_RUNTIME_CALLBACK_HOOKS => callback_hooks::TABLE.start(),
        TOOLS_TLS => tools_tls::TABLE.start(),
        CONTEXT_LOCAL_STORAGE => context_storage::TABLE.start(),
        CONTEXT_CHECKS => context_checks::TABLE.start(),
        INTEGRITY_CHECK => integrity::TABLE.start(),
        TOOLS_CONTEXT => tools_context::TABLE.start(),
        TABLE_1734DC26 => table_1734dc26::TABLE.start(),
        TOOLS_MODULE => tools_module::TABLE.start(),
        _ => return None,
    })
}

/// `cuGetExportTable`. Answers without `cuInit`, as the driver does (the runtime asks for the
/// first table before initialising). An unknown UUID is `CUDA_ERROR_INVALID_VALUE` with a null
/// table, which is what the 580 driver answers for a table it does not have.
///
/// # Safety
/// `table` must be null or valid for a pointer write; `id` null or 16 readable bytes.
#[allow(non_snake_case)]
pub(crate) unsafe fn cuGetExportTable(table: *mut *const c_void, id: *const CUuuid) -> CUresult {
    if table.is_null() || id.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: non-null; a CUuuid is 16 bytes with alignment 1.
    let id: [u8; 16] = unsafe { (*id).bytes }.map(|b| b as u8);
    let found = find(&id);
    // SAFETY: non-null, valid for a write per the contract.
    unsafe { table.write(found.unwrap_or(std::ptr::null())) };
    match found {
        Some(_) => CUresult::CUDA_SUCCESS,
        None => {
            if !REFUSED.contains(&id) {
                report_unknown_table(&id);
            }
            CUresult::CUDA_ERROR_INVALID_VALUE
        }
    }
}

/// Says once per UUID on stderr that a program asked for a table Baton does not know.
fn report_unknown_table(id: &[u8; 16]) {
    static SEEN: Mutex<Vec<[u8; 16]>> = Mutex::new(Vec::new());
    let mut seen = crate::client::lock(&SEEN);
    if !seen.contains(id) {
        seen.push(*id);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("baton: the driver's private table {hex} is not supported by Baton");
    }
}

/// The context a slot names: its own argument, or the calling thread's current context when
/// that is null (`CUDA_ERROR_INVALID_CONTEXT` when there is none). A non-null handle is not
/// dereferenced, as the driver's context-local storage does not check it either.
fn context_or_current(ctx: CUcontext) -> Result<usize, CUresult> {
    if ctx.is_null() {
        crate::api::context::current().map(|c| c as *const Context as usize)
    } else {
        Ok(ctx as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_read_in_memory_order() {
        assert_eq!(
            CUDART_INTERFACE,
            [
                0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd,
                0x9d, 0xf9
            ]
        );
    }

    #[test]
    fn tables_have_the_drivers_sizes() {
        // Size words as the 580 driver reports them (docs/export-tables.md).
        // SAFETY: every table served starts with a readable word.
        let size = |id: [u8; 16]| find(&id).map(|t| unsafe { *(t as *const usize) });
        assert_eq!(size(CUDART_INTERFACE), Some(104));
        assert_eq!(size(TOOLS_RUNTIME_CALLBACK_HOOKS), Some(56));
        assert_eq!(size(TOOLS_TLS), Some(24));
        assert_eq!(size(CONTEXT_CHECKS), Some(120));
        assert_eq!(size(INTEGRITY_CHECK), Some(24));
        assert_eq!(size(TOOLS_CONTEXT), Some(744));
        assert_eq!(size(TABLE_1734DC26), Some(136));
        assert_eq!(size(TOOLS_MODULE), Some(792));
        for id in REFUSED {
            assert_eq!(find(&id), None);
        }
    }

    #[test]
    fn unknown_slots_fail_and_name_themselves() {
        static T: Table<2> = Table::new(stubs!(7; 0 1)).sized(17);
        assert_eq!(T.word(0) as usize, 136);
        // SAFETY: slot 13 holds a stub, callable with no arguments.
        let f: extern "C" fn() -> CUresult = unsafe { std::mem::transmute(T.word(13)) };
        assert_eq!(f(), CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
}
