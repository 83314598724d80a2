//! `cuGetProcAddress`: how every CUDA runtime finds the driver's functions.
//!
//! Each runtime asks for `cuGetProcAddress` itself, then for every function by (name,
//! cudaVersion, flags); the answer picks an ABI variant (`_v2`, `_ptsz`, ...), and a wrong
//! variant breaks programs silently. So the answers are not guessed: they come from a table
//! measured on the real driver (`generated/proc_table.rs`), mapped to the shim's own export of
//! the same symbol.

use super::util::out;
use crate::generated::exports::export_address;
use crate::generated::proc_table::{Answer, TABLE};
use cuda_abi::*;
use std::ffi::{c_char, c_int, c_void, CStr};

/// `CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND`.
const SYMBOL_NOT_FOUND: u32 = 1;

/// The driver's answer for (name, version, flags): the last step at or below `version`.
pub(crate) fn lookup(name: &[u8], version: c_int, flags: u64) -> Option<&'static Answer> {
    let i = TABLE
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name))
        .ok()?;
    // Flags other than the three documented values are answered as the default.
    let steps = TABLE[i].1[if flags <= 2 { flags as usize } else { 0 }];
    let at = steps.partition_point(|a| a.version <= version);
    steps.get(at.saturating_sub(1))
}

/// # Safety
/// `symbol` must be NUL-terminated; `pfn` and `status` null or valid for writes.
unsafe fn get(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    if symbol.is_null() || pfn.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: NUL-terminated per the contract.
    let name = unsafe { CStr::from_ptr(symbol) }.to_bytes();
    let (result, st, addr) = match lookup(name, version, flags) {
        Some(a) => {
            let addr = if a.symbol.is_empty() {
                None
            } else {
                export_address(a.symbol.as_bytes())
            };
            (a.result, a.status, addr)
        }
        None => (CUresult::CUDA_ERROR_NOT_FOUND.0, SYMBOL_NOT_FOUND, None),
    };
    // SAFETY: `pfn` is non-null and writable per the contract.
    unsafe { pfn.write(addr.map_or(std::ptr::null_mut(), |p| p as *mut c_void)) };
    if !status.is_null() {
        // SAFETY: non-null out-pointer from the caller.
        let _ = unsafe { out(status, CUdriverProcAddressQueryResult(st)) };
    }
    if crate::trace::enabled() {
        let shown = addr
            .map(|_| lookup(name, version, flags).map_or("", |a| a.symbol))
            .unwrap_or("-");
        crate::trace::line(format_args!(
            "cuGetProcAddress {} v{version} flags {flags} -> {shown} ({result}/{st})",
            String::from_utf8_lossy(name)
        ));
    }
    CUresult(result)
}

pub(crate) unsafe fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: cuuint64_t,
    status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe { get(symbol, pfn, version, flags, status) }
}

pub(crate) unsafe fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: cuuint64_t,
) -> CUresult {
    // SAFETY: forwarded caller contract; no status wanted.
    unsafe { get(symbol, pfn, version, flags, std::ptr::null_mut()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_in_the_table_is_exported() {
        for (name, per_flag) in TABLE {
            for steps in per_flag {
                for a in steps.iter() {
                    assert!(
                        a.symbol.is_empty() || export_address(a.symbol.as_bytes()).is_some(),
                        "{name}: {} not exported",
                        a.symbol
                    );
                }
                assert!(
                    steps.windows(2).all(|w| w[0].version < w[1].version),
                    "{name}: steps out of order"
                );
            }
        }
    }

    #[test]
    fn variants_follow_the_driver() {
        let sym = |n: &str, v, f| lookup(n.as_bytes(), v, f).map(|a| (a.symbol, a.status));
        assert_eq!(sym("cuMemAlloc", 3020, 0), Some(("cuMemAlloc_v2", 0)));
        assert_eq!(sym("cuMemAlloc", 3010, 0), Some(("cuMemAlloc", 0)));
        assert_eq!(sym("cuMemAlloc", 1999, 0), Some(("", 2)));
        assert_eq!(sym("cuCtxGetDevice", 12000, 0), Some(("cuCtxGetDevice", 0)));
        assert_eq!(
            sym("cuCtxGetDevice", 13000, 0),
            Some(("cuCtxGetDevice_v2", 0))
        );
        assert_eq!(sym("cuMemcpyAsync", 12000, 1), Some(("cuMemcpyAsync", 0)));
        assert_eq!(
            sym("cuMemcpyAsync", 12000, 2),
            Some(("cuMemcpyAsync_ptsz", 0))
        );
        assert_eq!(
            sym("cuMemcpyAsync", 99999, 2),
            Some(("cuMemcpyAsync_ptsz", 0))
        );
        assert!(lookup(b"cuNoSuchFunction", 13000, 0).is_none());
    }

    #[test]
    fn unknown_names_are_not_found() {
        let mut p = std::ptr::dangling_mut::<c_void>();
        let mut st = CUdriverProcAddressQueryResult(9);
        // SAFETY: valid arguments.
        let r = unsafe { get(c"cuNoSuchFunction".as_ptr(), &mut p, 13000, 0, &mut st) };
        assert_eq!(r, CUresult::CUDA_ERROR_NOT_FOUND);
        assert!(p.is_null());
        assert_eq!(st.0, SYMBOL_NOT_FOUND);
        // SAFETY: valid arguments.
        let r = unsafe { get(c"cuInit".as_ptr(), &mut p, 13000, 0, &mut st) };
        assert_eq!(r, CUresult::CUDA_SUCCESS);
        assert_eq!(p as *const c_void, export_address(b"cuInit").unwrap());
    }
}
