//! JIT linking on the real driver: one `cuLinkCreate` .. `cuLinkComplete` per request, with the
//! daemon's own log buffers and wall-time slot; the linked image is copied out before the
//! linker (which owns it) is destroyed.

use super::check_code;
use crate::executor::{GpuResult, JitLogs};
use baton_ipc::protocol::{LinkRequest, JIT_LOG_BYTES};
use std::ffi::{c_char, c_uint, c_void, CString};
use std::ptr::null_mut;

const WALL_TIME: u32 = 2;
const INFO_LOG_BUFFER: u32 = 3;
const INFO_LOG_BUFFER_SIZE_BYTES: u32 = 4;
const ERROR_LOG_BUFFER: u32 = 5;
const ERROR_LOG_BUFFER_SIZE_BYTES: u32 = 6;
const INPUT_PTX: u32 = 1;

type LinkCreate = unsafe extern "C" fn(c_uint, *mut u32, *mut *mut c_void, *mut *mut c_void) -> u32;
type LinkAddData = unsafe extern "C" fn(
    *mut c_void,
    u32,
    *mut c_void,
    usize,
    *const c_char,
    c_uint,
    *mut u32,
    *mut *mut c_void,
) -> u32;
type LinkComplete = unsafe extern "C" fn(*mut c_void, *mut *mut c_void, *mut usize) -> u32;
type LinkDestroy = unsafe extern "C" fn(*mut c_void) -> u32;

/// Destroys the linker on every path out of [`link`].
struct State(*mut c_void, LinkDestroy);

impl Drop for State {
    fn drop(&mut self) {
        // SAFETY: the state came from a successful cuLinkCreate and is destroyed once.
        let r = unsafe { (self.1)(self.0) };
        if r != 0 {
            tracing::warn!(code = r, "cuLinkDestroy failed");
        }
    }
}

/// Option arrays in the driver's form: codes, and values as pointer-sized integers.
fn option_arrays(options: &[(u32, u64)]) -> (Vec<u32>, Vec<*mut c_void>) {
    options
        .iter()
        .map(|&(o, v)| (o, v as usize as *mut c_void))
        .unzip()
}

/// Links `req` in the current context (the caller binds the device).
pub(super) fn link(req: &LinkRequest) -> (GpuResult<Vec<u8>>, JitLogs, f32) {
    let mut info = vec![0u8; JIT_LOG_BYTES];
    let mut error = vec![0u8; JIT_LOG_BYTES];
    let (mut opts, mut vals) = option_arrays(&req.options);
    let base = opts.len();
    opts.extend([
        WALL_TIME,
        INFO_LOG_BUFFER,
        INFO_LOG_BUFFER_SIZE_BYTES,
        ERROR_LOG_BUFFER,
        ERROR_LOG_BUFFER_SIZE_BYTES,
    ]);
    vals.extend([
        null_mut(),
        info.as_mut_ptr() as *mut c_void,
        JIT_LOG_BYTES as *mut c_void,
        error.as_mut_ptr() as *mut c_void,
        JIT_LOG_BYTES as *mut c_void,
    ]);
    // The driver writes the logs, their sizes and the wall time into these arrays (at
    // cuLinkComplete or at a failing cuLinkAddData), so they live as long as the linker.
    let r = run(req, &mut opts, &mut vals);
    let used = |buf: &mut Vec<u8>, v: *mut c_void| {
        let n = (v as usize).min(JIT_LOG_BYTES);
        let n = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        buf.truncate(n);
    };
    used(&mut info, vals[base + 2]);
    used(&mut error, vals[base + 4]);
    let wall = f32::from_bits(vals[base] as usize as u32);
    (r, JitLogs { info, error }, wall)
}

fn run(req: &LinkRequest, opts: &mut [u32], vals: &mut [*mut c_void]) -> GpuResult<Vec<u8>> {
    let create = driver_fn!("cuLinkCreate_v2", LinkCreate);
    let add = driver_fn!("cuLinkAddData_v2", LinkAddData);
    let complete = driver_fn!("cuLinkComplete", LinkComplete);
    let destroy = driver_fn!("cuLinkDestroy", LinkDestroy);
    let mut raw = null_mut();
    // SAFETY: the option arrays hold `opts.len()` entries and, with the log buffers they point
    // to, outlive the linker (it is destroyed by `State` before `link` returns).
    check_code(unsafe {
        create(
            opts.len() as c_uint,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
            &mut raw,
        )
    })?;
    let state = State(raw, destroy);
    for input in &req.inputs {
        // The session checked that names hold no NUL.
        let name = CString::new(input.name.clone()).unwrap_or_default();
        // PTX is read as a C string: make sure one ends inside the copy.
        let mut data = input.data.clone();
        if input.kind == INPUT_PTX && !data.ends_with(&[0]) {
            data.push(0);
        }
        let (mut o, mut v) = option_arrays(&input.options);
        // SAFETY: `data`, `name` and the option arrays outlive the call; the session checked
        // the input type and the options (plain integers only).
        check_code(unsafe {
            add(
                state.0,
                input.kind,
                data.as_mut_ptr() as *mut c_void,
                data.len(),
                name.as_ptr(),
                o.len() as c_uint,
                o.as_mut_ptr(),
                v.as_mut_ptr(),
            )
        })?;
    }
    let (mut image, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers to locals.
    check_code(unsafe { complete(state.0, &mut image, &mut size) })?;
    if image.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: the driver's image spans `size` bytes and stays valid until `state` is dropped.
    Ok(unsafe { std::slice::from_raw_parts(image as *const u8, size) }.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_arrays_keep_order_and_values() {
        let (o, v) = option_arrays(&[(12, 1), (0, 32)]);
        assert_eq!(o, vec![12, 0]);
        assert_eq!(
            v.iter().map(|p| *p as usize).collect::<Vec<_>>(),
            vec![1, 32]
        );
    }
}
