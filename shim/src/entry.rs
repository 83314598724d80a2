//! The boundary between C callers and the shim's Rust code.

use cuda_abi::CUresult;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs one driver entry point; a panic becomes `CUDA_ERROR_UNKNOWN` instead of unwinding into C.
pub(crate) fn guard(name: &'static str, f: impl FnOnce() -> CUresult) -> CUresult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::log::once(name, "panicked inside the shim");
            CUresult::CUDA_ERROR_UNKNOWN
        }
    }
}

/// Runs one driver entry point as [`guard`] does and, with `BATON_TRACE` set, logs the call:
/// its arguments (formatted only when tracing) and its result.
pub(crate) fn traced(
    name: &'static str,
    args: impl FnOnce() -> String,
    f: impl FnOnce() -> CUresult,
) -> CUresult {
    if !crate::trace::enabled() {
        return guard(name, f);
    }
    let shown = args();
    let r = guard(name, f);
    let result = r
        .name()
        .map_or_else(|| r.0.to_string(), |n| n.to_string_lossy().into_owned());
    crate::trace::line(format_args!("{name}({shown}) -> {result}"));
    r
}

/// The answer of every entry point Baton does not implement yet.
pub(crate) fn not_supported(name: &'static str) -> CUresult {
    crate::log::once(name, "is not supported by Baton yet");
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}
