//! Contexts. The daemon owns one real context per device; every context a client creates or
//! retains stands for that one (so memory and streams are shared between a process's contexts
//! on a device). Which context is current is thread-local state kept here, in the client.

use super::util::{out, ready, ret};
use crate::client::{self, Client};
use crate::objects::Context;
use baton_ipc::protocol::{DeviceOnly, Op};
use cuda_abi::*;
use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

thread_local! {
    static STACK: RefCell<Vec<&'static Context>> = const { RefCell::new(Vec::new()) };
}

/// Primary contexts, one per device, with their retain counts.
static PRIMARY: Mutex<Vec<(&'static Context, &'static AtomicU32)>> = Mutex::new(Vec::new());

pub(crate) fn primary(
    c: &'static Client,
    dev: CUdevice,
) -> Result<(&'static Context, &'static AtomicU32), CUresult> {
    super::init::device(c, dev)?;
    let mut p = client::lock(&PRIMARY);
    if p.is_empty() {
        for d in 0..c.devices.len() {
            p.push((
                Context::new(d as u32, 0, true),
                Box::leak(Box::new(AtomicU32::new(0))),
            ));
        }
    }
    Ok(p[dev as usize])
}

/// The calling thread's current context.
pub(crate) fn current() -> Result<&'static Context, CUresult> {
    // While the thread exits its thread-locals are gone: it has no current context then.
    STACK
        .try_with(|s| s.borrow().last().copied())
        .ok()
        .flatten()
        .filter(|c| c.alive.load(Ordering::Relaxed))
        .ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)
}

/// The device of the current context.
pub(crate) fn current_device() -> Result<u32, CUresult> {
    current().map(|c| c.device)
}

fn set_current(ctx: Option<&'static Context>) {
    let _ = STACK.try_with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if let Some(c) = ctx {
            s.push(c);
        }
    });
}

fn handle_of(ctx: Option<&'static Context>) -> CUcontext {
    ctx.map_or(std::ptr::null_mut(), |c| c.handle())
}

pub(crate) unsafe fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    ret((|| {
        let (ctx, refs) = primary(ready()?, dev)?;
        refs.fetch_add(1, Ordering::Relaxed);
        ctx.alive.store(true, Ordering::Relaxed);
        // SAFETY: forwarded caller contract.
        unsafe { out(pctx, ctx.handle()) }
    })())
}

pub(crate) unsafe fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    ret((|| {
        let (_, refs) = primary(ready()?, dev)?;
        refs.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| CUresult::CUDA_ERROR_INVALID_CONTEXT)
    })())
}

pub(crate) unsafe fn cuDevicePrimaryCtxGetState(
    dev: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    ret((|| {
        let (ctx, refs) = primary(ready()?, dev)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(flags, ctx.flags.load(Ordering::Relaxed))?;
            out(active, (refs.load(Ordering::Relaxed) > 0) as c_int)
        }
    })())
}

pub(crate) unsafe fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult {
    ret((|| {
        let (ctx, _) = primary(ready()?, dev)?;
        ctx.flags.store(flags, Ordering::Relaxed);
        Ok(())
    })())
}

pub(crate) unsafe fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult {
    ret((|| {
        let c = ready()?;
        let (ctx, _) = primary(c, dev)?;
        // The daemon's context is shared: a reset finishes this client's work on the device,
        // and drops what the runtimes stored in the context, as a reset does.
        c.call(
            Op::CtxSynchronize,
            &DeviceOnly {
                device: dev as u32,
                _pad: 0,
            },
            &[],
        )?;
        crate::export_tables::context_destroyed(ctx.handle());
        Ok(())
    })())
}

pub(crate) unsafe fn cuCtxCreate_v4(
    pctx: *mut CUcontext,
    _params: *mut CUctxCreateParams,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        super::init::device(c, dev)?;
        let ctx = Context::new(dev as u32, flags, false);
        let _ = STACK.try_with(|s| s.borrow_mut().push(ctx));
        // SAFETY: forwarded caller contract.
        unsafe { out(pctx, ctx.handle()) }
    })())
}

pub(crate) unsafe fn cuCtxCreate_v2(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    // SAFETY: same contract, no creation parameters.
    unsafe { cuCtxCreate_v4(pctx, std::ptr::null_mut(), flags, dev) }
}

pub(crate) unsafe fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult {
    ret((|| {
        let c = ready()?;
        let ctx = Context::from_handle(ctx)?;
        // Finish this client's work, as destroying a context does.
        c.call(
            Op::CtxSynchronize,
            &DeviceOnly {
                device: ctx.device,
                _pad: 0,
            },
            &[],
        )?;
        if !ctx.primary {
            ctx.alive.store(false, Ordering::Relaxed);
        }
        let _ = STACK.try_with(|s| s.borrow_mut().retain(|x| !std::ptr::eq(*x, ctx)));
        crate::export_tables::context_destroyed(ctx.handle());
        Ok(())
    })())
}

pub(crate) unsafe fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready().and_then(|_| unsafe { out(pctx, handle_of(current().ok())) }))
}

pub(crate) unsafe fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    ret((|| {
        ready()?;
        let c = if ctx.is_null() {
            None
        } else {
            Some(Context::from_handle(ctx)?)
        };
        set_current(c);
        Ok(())
    })())
}

pub(crate) unsafe fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult {
    ret((|| {
        ready()?;
        let c = Context::from_handle(ctx)?;
        let _ = STACK.try_with(|s| s.borrow_mut().push(c));
        Ok(())
    })())
}

pub(crate) unsafe fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    ret((|| {
        ready()?;
        let c = STACK
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        if !pctx.is_null() {
            // SAFETY: non-null out-pointer from the caller.
            unsafe { out(pctx, c.handle())? };
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuCtxGetDevice(dev: *mut CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|_| current_device())
        .and_then(|d| unsafe { out(dev, d as CUdevice) }))
}

pub(crate) unsafe fn cuCtxSynchronize() -> CUresult {
    ret((|| {
        let c = ready()?;
        let device = current_device()?;
        let at = super::stream::clock();
        c.call(Op::CtxSynchronize, &DeviceOnly { device, _pad: 0 }, &[])?;
        super::stream::ctx_synced(device, at);
        Ok(())
    })())
}

pub(crate) unsafe fn cuCtxGetApiVersion(ctx: CUcontext, version: *mut c_uint) -> CUresult {
    ret((|| {
        ready()?;
        if !ctx.is_null() {
            Context::from_handle(ctx)?;
        } else {
            current()?;
        }
        // SAFETY: forwarded caller contract.
        unsafe { out(version, 3020) }
    })())
}

pub(crate) unsafe fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|_| current())
        .and_then(|c| unsafe { out(flags, c.flags.load(Ordering::Relaxed)) }))
}

pub(crate) unsafe fn cuCtxGetId(ctx: CUcontext, id: *mut c_ulonglong) -> CUresult {
    ret((|| {
        ready()?;
        let c = if ctx.is_null() {
            current()?
        } else {
            Context::from_handle(ctx)?
        };
        // SAFETY: forwarded caller contract.
        unsafe { out(id, c.id as c_ulonglong) }
    })())
}

pub(crate) unsafe fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let d = super::init::device(c, current_device()? as CUdevice)?;
        let _ = d;
        // Hopper-class devices expose priorities 0 (least) to -5 (greatest).
        if !least.is_null() {
            // SAFETY: non-null out-pointer.
            unsafe { out(least, 0)? };
        }
        if !greatest.is_null() {
            // SAFETY: non-null out-pointer.
            unsafe { out(greatest, -5)? };
        }
        Ok(())
    })())
}
