//! Older spellings of implemented entry points whose signatures did not change, and small
//! queries answered from local state.

use super::context::{current, current_device};
use super::util::{out, ready, ret};
use crate::objects::{Context, Function};
use baton_ipc::protocol::{CtxLimit, DeviceOnly, Op};
use cuda_abi::*;
use std::ffi::c_uint;

pub(crate) unsafe fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::context::cuDevicePrimaryCtxRelease_v2(dev) }
}
pub(crate) unsafe fn cuDevicePrimaryCtxReset(dev: CUdevice) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::context::cuDevicePrimaryCtxReset_v2(dev) }
}
pub(crate) unsafe fn cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: c_uint) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::context::cuDevicePrimaryCtxSetFlags_v2(dev, flags) }
}
pub(crate) unsafe fn cuCtxDestroy(ctx: CUcontext) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::context::cuCtxDestroy_v2(ctx) }
}
pub(crate) unsafe fn cuCtxPushCurrent(ctx: CUcontext) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::context::cuCtxPushCurrent_v2(ctx) }
}
pub(crate) unsafe fn cuCtxPopCurrent(pctx: *mut CUcontext) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::context::cuCtxPopCurrent_v2(pctx) }
}
pub(crate) unsafe fn cuEventDestroy(e: CUevent) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::stream::cuEventDestroy_v2(e) }
}
pub(crate) unsafe fn cuStreamDestroy(s: CUstream) -> CUresult {
    // SAFETY: same signature and contract.
    unsafe { super::stream::cuStreamDestroy_v2(s) }
}

/// The context a 13.0-style call names: null means the current one.
fn ctx_or_current(ctx: CUcontext) -> Result<&'static Context, CUresult> {
    if ctx.is_null() {
        current()
    } else {
        Context::from_handle(ctx)
    }
}

pub(crate) unsafe fn cuCtxGetDevice_v2(device: *mut CUdevice, ctx: CUcontext) -> CUresult {
    ret((|| {
        ready()?;
        let c = ctx_or_current(ctx)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(device, c.device as CUdevice) }
    })())
}

pub(crate) unsafe fn cuCtxSynchronize_v2(ctx: CUcontext) -> CUresult {
    ret((|| {
        let c = ready()?;
        let device = ctx_or_current(ctx)?.device;
        let at = super::stream::clock();
        c.call(Op::CtxSynchronize, &DeviceOnly { device, _pad: 0 }, &[])?;
        super::stream::ctx_synced(device, at);
        Ok(())
    })())
}

pub(crate) unsafe fn cuModuleGetLoadingMode(mode: *mut CUmoduleLoadingMode) -> CUresult {
    // The daemon loads what it is sent; like the 13.0 driver, report lazy loading unless the
    // program asked for eager loading the documented way.
    let eager = std::env::var("CUDA_MODULE_LOADING").is_ok_and(|v| v.eq_ignore_ascii_case("EAGER"));
    let m = if eager {
        CUmoduleLoadingMode::CU_MODULE_EAGER_LOADING
    } else {
        CUmoduleLoadingMode::CU_MODULE_LAZY_LOADING
    };
    // SAFETY: forwarded caller contract.
    ret(unsafe { out(mode, m) })
}

/// Limits this client read: (device, limit) -> value. Libraries read the same limits around
/// every call (cuBLASLt: a dozen per transformer forward), and a round trip each would cost
/// more than the work. A set drops the entry, so the driver's rounding is read back. A limit
/// another tenant changes is not seen until this client sets it (limits belong to the one
/// shared context; see the trust model).
static LIMITS: std::sync::Mutex<std::collections::BTreeMap<(u32, u32), usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn limit(set: Option<usize>, l: CUlimit) -> Result<usize, CUresult> {
    let c = ready()?;
    let device = current_device()?;
    if set.is_none() {
        if let Some(&v) = crate::client::lock(&LIMITS).get(&(device, l.0)) {
            return Ok(v);
        }
    }
    let body = CtxLimit {
        device,
        set: set.is_some() as u32,
        limit: l.0,
        _pad: 0,
        value: set.unwrap_or(0) as u64,
    };
    let v = c.call(Op::CtxLimit, &body, &[])?.values[0] as usize;
    let mut cache = crate::client::lock(&LIMITS);
    match set {
        None => cache.insert((device, l.0), v),
        Some(_) => cache.remove(&(device, l.0)),
    };
    Ok(v)
}

pub(crate) unsafe fn cuCtxGetLimit(value: *mut usize, l: CUlimit) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(limit(None, l).and_then(|v| unsafe { out(value, v) }))
}

pub(crate) unsafe fn cuCtxSetLimit(l: CUlimit, value: usize) -> CUresult {
    ret(limit(Some(value), l).map(|_| ()))
}

/// Cache and shared-memory bank preferences are hints the driver may ignore; Baton does not
/// forward them (one tenant's preference would change the shared context for all).
pub(crate) unsafe fn cuFuncSetCacheConfig(f: CUfunction, _config: CUfunc_cache) -> CUresult {
    ret(ready().and_then(|_| Function::from_handle(f)).map(|_| ()))
}
pub(crate) unsafe fn cuCtxSetCacheConfig(_config: CUfunc_cache) -> CUresult {
    ret(ready().and_then(|_| current()).map(|_| ()))
}
pub(crate) unsafe fn cuCtxGetCacheConfig(config: *mut CUfunc_cache) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|_| current())
        .and_then(|_| unsafe { out(config, CUfunc_cache::CU_FUNC_CACHE_PREFER_NONE) }))
}

pub(crate) unsafe fn cuFuncGetParamInfo(
    f: CUfunction,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CUresult {
    ret((|| {
        ready()?;
        let f = Function::from_handle(f)?;
        let &(o, s) = f
            .params
            .get(index)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: both out-pointers are optional.
        unsafe {
            if !offset.is_null() {
                out(offset, o as usize)?;
            }
            if !size.is_null() {
                out(size, s as usize)?;
            }
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuStreamGetDevice(stream: CUstream, device: *mut CUdevice) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = super::stream::resolve(c, stream)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(device, s.device as CUdevice) }
    })())
}

pub(crate) unsafe fn cuStreamGetId(stream: CUstream, id: *mut u64) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = super::stream::resolve(c, stream)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(id, s.daemon_id()?) }
    })())
}

pub(crate) unsafe fn cuDeviceGetLuid(
    _luid: *mut std::ffi::c_char,
    _mask: *mut c_uint,
    dev: CUdevice,
) -> CUresult {
    // LUIDs exist on Windows only; the Linux driver says the same.
    ret(ready()
        .and_then(|c| super::init::device(c, dev))
        .and(Err(CUresult::CUDA_ERROR_NOT_SUPPORTED)))
}

thread_local! {
    static CAPTURE_MODE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The calling thread's capture interaction mode (global until the program changes it).
pub(crate) fn thread_capture_mode() -> CUstreamCaptureMode {
    CUstreamCaptureMode(CAPTURE_MODE.try_with(|m| m.get()).unwrap_or(0))
}

/// The thread's capture interaction mode, which decides whether it may make synchronous
/// legacy-stream calls while captures are open (see `graph::legacy_call_allowed`).
pub(crate) unsafe fn cuThreadExchangeStreamCaptureMode(mode: *mut CUstreamCaptureMode) -> CUresult {
    if mode.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: non-null in/out pointer from the caller.
    let new = unsafe { *mode };
    let old = CAPTURE_MODE.try_with(|m| m.replace(new.0)).unwrap_or(0);
    // SAFETY: as above.
    unsafe { *mode = CUstreamCaptureMode(old) };
    CUresult::CUDA_SUCCESS
}

/// Profiler control: with no profiler attached (none can attach to the daemon's context on a
/// client's behalf), starting and stopping collection does nothing, as with the driver.
pub(crate) unsafe fn cuProfilerStart() -> CUresult {
    ret(ready().map(|_| ()))
}

pub(crate) unsafe fn cuProfilerStop() -> CUresult {
    ret(ready().map(|_| ()))
}

pub(crate) unsafe fn cuKernelSetCacheConfig(
    kernel: CUkernel,
    _config: CUfunc_cache,
    dev: CUdevice,
) -> CUresult {
    // A preference, like cuFuncSetCacheConfig: checked, not forwarded (see above).
    ret(ready()
        .and_then(|c| super::init::device(c, dev))
        .and_then(|_| Function::from_handle(kernel))
        .map(|_| ()))
}

/// Persisting-L2 lines are set aside only through access-policy windows, which Baton keeps as
/// hints and does not apply (see `cuStreamSetAttribute`): there is nothing to reset.
pub(crate) unsafe fn cuCtxResetPersistingL2Cache() -> CUresult {
    ret(ready().map(|_| ()))
}
