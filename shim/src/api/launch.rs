//! Kernel launches: the hot path. Parameters are packed here, from the layout the daemon
//! reported for the function, into the ring message; nothing waits for the daemon.

use super::stream::{resolve, submitted};
use super::util::{ready, ret};
use crate::objects::Function;
use baton_ipc::protocol::{self as p, Op, MAX_PARAMS};
use cuda_abi::*;
use std::cell::RefCell;
use std::ffi::{c_uint, c_void};

thread_local! {
    static PARAMS: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

#[derive(Clone, Copy, Default)]
struct Geometry {
    grid: [u32; 3],
    block: [u32; 3],
    cluster: [u32; 3],
    shared_mem: u32,
    cooperative: bool,
}

/// Packs the parameter block from either `kernelParams` or `extra`.
///
/// # Safety
/// As `cuLaunchKernel` requires: `params[i]` points to parameter i's value for every parameter
/// of `f`, or `extra` is a valid `CU_LAUNCH_PARAM_*` list.
pub(super) unsafe fn pack(
    f: &Function,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    out: &mut Vec<u8>,
) -> Result<(), CUresult> {
    out.clear();
    if !params.is_null() {
        out.resize(f.params_size, 0);
        for (i, &(off, size)) in f.params.iter().enumerate() {
            // SAFETY: per the contract, entry i exists and points to `size` readable bytes.
            let src = unsafe { *params.add(i) } as *const u8;
            if src.is_null() {
                return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
            }
            let (off, size) = (off as usize, size as usize);
            // SAFETY: `off + size <= params_size` by construction of params_size.
            unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr().add(off), size) };
        }
        return Ok(());
    }
    if extra.is_null() {
        return if f.params.is_empty() {
            Ok(())
        } else {
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        };
    }
    let (mut buf, mut size) = (std::ptr::null::<u8>(), None::<usize>);
    let mut i = 0;
    loop {
        // SAFETY: the list is (key, value) pairs ended by CU_LAUNCH_PARAM_END.
        let key = unsafe { *extra.add(i) } as usize;
        match key as u32 {
            CU_LAUNCH_PARAM_END_AS_INT => break,
            CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT => {
                // SAFETY: as above.
                buf = unsafe { *extra.add(i + 1) } as *const u8
            }
            CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT => {
                // SAFETY: the value points to a size_t.
                let p = unsafe { *extra.add(i + 1) } as *const usize;
                if p.is_null() {
                    return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
                }
                // SAFETY: non-null size_t pointer from the caller.
                size = Some(unsafe { p.read_unaligned() });
            }
            _ => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        }
        i += 2;
    }
    let size = size.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    if size > MAX_PARAMS || (size > 0 && buf.is_null()) {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    if size > 0 {
        // SAFETY: the caller's buffer holds `size` bytes.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(buf, size) });
    }
    Ok(())
}

/// # Safety
/// As for [`pack`].
unsafe fn launch(
    f: CUfunction,
    g: Geometry,
    stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), CUresult> {
    let c = ready()?;
    let f = Function::from_handle(f)?;
    if g.grid.contains(&0) || g.block.contains(&0) {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let threads = g.block.iter().map(|&b| b as u64).product::<u64>();
    if let Some(max) =
        f.attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK.0 as usize)
    {
        if max > 0 && threads > max as u64 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
    }
    // Dynamic shared memory past the function's opt-in limit fails at launch, as in the driver.
    if let Some(max) =
        f.attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.0 as usize)
    {
        if max >= 0 && g.shared_mem as i64 > max as i64 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
    }
    let s = resolve(c, stream)?;
    if s.device != f.device {
        return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    let send = |buf: &mut Vec<u8>| -> Result<(), CUresult> {
        // SAFETY: per the contract.
        unsafe { pack(f, params, extra, buf)? };
        let body = p::Launch {
            func: f.id,
            stream: s.daemon_id()?,
            grid: g.grid,
            block: g.block,
            cluster: g.cluster,
            shared_mem: g.shared_mem,
            flags: if g.cooperative {
                p::LAUNCH_COOPERATIVE
            } else {
                0
            },
            params_len: buf.len() as u32,
        };
        submitted(s);
        c.post(Op::Launch, &body, buf)
    };
    // The thread's reusable buffer, or a fresh one while the thread is exiting.
    match PARAMS.try_with(|b| send(&mut b.borrow_mut())) {
        Ok(r) => r,
        Err(_) => send(&mut Vec::new()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn cuLaunchKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let g = Geometry {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared_mem: shared,
        ..Default::default()
    };
    // SAFETY: forwarded caller contract.
    ret(unsafe { launch(f, g, stream, params, extra) })
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn cuLaunchCooperativeKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
) -> CUresult {
    let g = Geometry {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared_mem: shared,
        cooperative: true,
        ..Default::default()
    };
    // SAFETY: forwarded caller contract.
    ret(unsafe { launch(f, g, stream, params, std::ptr::null_mut()) })
}

pub(crate) unsafe fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    f: CUfunction,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ret((|| {
        if config.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null config from the caller.
        let cfg = unsafe { &*config };
        let mut g = Geometry {
            grid: [cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ],
            block: [cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ],
            shared_mem: cfg.sharedMemBytes,
            ..Default::default()
        };
        if cfg.numAttrs > 0 && cfg.attrs.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        for i in 0..cfg.numAttrs as usize {
            // SAFETY: `numAttrs` entries.
            let a = unsafe { &*cfg.attrs.add(i) };
            match a.id {
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE => {
                    // SAFETY: the union member named by the id.
                    g.cooperative = unsafe { a.value.cooperative } != 0
                }
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION => {
                    // SAFETY: as above.
                    let d = unsafe { a.value.clusterDim };
                    g.cluster = [d.x, d.y, d.z];
                }
                // Scheduling hints: the daemon's scheduler decides order and priority.
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY => {}
                other => crate::log::once(
                    "cuLaunchKernelEx",
                    &format!(
                        "ignores launch attribute {} (Baton does not forward it yet)",
                        other.0
                    ),
                ),
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { launch(f, g, cfg.hStream, params, extra) }
    })())
}
