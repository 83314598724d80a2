//! The driver's private export tables as the CUDA runtime sees them (`cuGetExportTable`), and
//! the real CUDA runtime library loaded on top of Baton's shim.

use cuda_abi::{CUcontext, CUresult, CUuuid};
use std::ffi::{c_int, c_ulonglong, c_void, CStr, CString};

#[allow(non_snake_case)]
extern "C" {
    pub fn cuGetExportTable(table: *mut *const c_void, id: *const CUuuid) -> CUresult;
    pub fn cuCtxGetId(ctx: CUcontext, id: *mut c_ulonglong) -> CUresult;
    pub fn cuCtxGetCurrent(ctx: *mut CUcontext) -> CUresult;
    pub fn cuCtxCreate_v2(ctx: *mut CUcontext, flags: u32, dev: c_int) -> CUresult;
    pub fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult;
}

/// Export table UUIDs, as hex of their bytes in memory order.
pub const CUDART_INTERFACE: &str = "6bd5fb6c5bf4e74a8987d93912fd9df9";
pub const TOOLS_RUNTIME_CALLBACK_HOOKS: &str = "a094798c2e742e7493f20800200c0a66";
pub const TOOLS_TLS: &str = "42d85a8123f6cb478298f6e78a3aecdc";
pub const CONTEXT_LOCAL_STORAGE: &str = "c693336e1121df11a8c368f355d89593";
pub const CONTEXT_CHECKS: &str = "263e88607cd2614392f6bbd5006dfa7e";
pub const INTEGRITY_CHECK: &str = "d4082055bde6704b8d34ba123c66e1f2";
pub const TOOLS_CONTEXT: &str = "21318c60971432488ca641ff7324c8f2";
pub const TABLE_1734DC26: &str = "1734dc26800d47458726c0f1e7dd8bca";
pub const TOOLS_MODULE: &str = "6e163fbeb958444d835ce182aff1991e";
pub const STARTUP_PROBE: &str = "f8cff95121468b4eb9e2fb469e7c0dd9";
pub const NVML: &str = "69a28e9f24498b47b030c5da330ea4e9";
pub const CUPY: &str = "da9151d33ae6cc41a5c04f26d533e328";

/// The UUID whose bytes `hex` spells.
pub fn uuid(hex: &str) -> CUuuid {
    let mut bytes = [0; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap() as std::ffi::c_char;
    }
    CUuuid { bytes }
}

/// The table named `hex`, as `cuGetExportTable` hands it out.
pub fn table(hex: &str) -> Result<*const *const c_void, CUresult> {
    let mut t = usize::MAX as *const c_void;
    // SAFETY: an out-pointer and a UUID on the stack.
    match unsafe { cuGetExportTable(&mut t, &uuid(hex)) } {
        CUresult::CUDA_SUCCESS => Ok(t as *const *const c_void),
        e => {
            assert!(t.is_null(), "a refused table must come back null");
            Err(e)
        }
    }
}

/// Word `i` of a table.
///
/// # Safety
/// `t` must be a table with more than `i` words.
pub unsafe fn word(t: *const *const c_void, i: usize) -> *const c_void {
    // SAFETY: per the contract.
    unsafe { *t.add(i) }
}

/// Slot `i` of a table as a function of type `F` (an `unsafe extern "C" fn`).
///
/// # Safety
/// `t` must be a table with more than `i` words, and slot `i` a function of type `F`.
pub unsafe fn slot<F: Copy>(t: *const *const c_void, i: usize) -> F {
    assert_eq!(size_of::<F>(), size_of::<*const c_void>());
    // SAFETY: per the contract.
    let p = unsafe { word(t, i) };
    assert!(!p.is_null(), "slot {i} is null");
    // SAFETY: per the contract, `F` is a function pointer type of the slot's function.
    unsafe { std::mem::transmute_copy(&p) }
}

/// The real CUDA runtime (`libcudart.so.13`), opened with `dlopen`.
pub struct Cudart(*mut c_void);

impl Cudart {
    /// Opens the library at `path`.
    pub fn open(path: &str) -> Result<Cudart, String> {
        let p = CString::new(path).unwrap();
        // SAFETY: a NUL-terminated path.
        let h = unsafe { libc::dlopen(p.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a NUL-terminated message after a failure.
            let e = unsafe { CStr::from_ptr(libc::dlerror()) };
            return Err(e.to_string_lossy().into_owned());
        }
        Ok(Cudart(h))
    }

    /// The function `name` as type `F` (an `unsafe extern "C" fn`).
    ///
    /// # Safety
    /// `F` must be the function's C signature.
    pub unsafe fn get<F: Copy>(&self, name: &str) -> F {
        assert_eq!(size_of::<F>(), size_of::<*const c_void>());
        let n = CString::new(name).unwrap();
        // SAFETY: a handle from dlopen and a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.0, n.as_ptr()) };
        assert!(!p.is_null(), "{name} not found in libcudart");
        // SAFETY: per the contract.
        unsafe { std::mem::transmute_copy(&p) }
    }

    /// `cudaGetErrorName` of `e`.
    pub fn error_name(&self, e: c_int) -> String {
        // SAFETY: the runtime's signature; it returns a static string.
        unsafe {
            let f: unsafe extern "C" fn(c_int) -> *const std::ffi::c_char =
                self.get("cudaGetErrorName");
            CStr::from_ptr(f(e)).to_string_lossy().into_owned()
        }
    }

    /// Panics with the runtime's name of `e` unless it is `cudaSuccess`.
    #[track_caller]
    pub fn check(&self, e: c_int, what: &str) {
        assert!(e == 0, "{what} failed: {e} ({})", self.error_name(e));
    }
}
