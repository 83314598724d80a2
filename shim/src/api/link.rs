//! JIT linking. The shim has no linker: it gathers a link's inputs (files are read here, in
//! the client) and at `cuLinkComplete` sends them to the daemon in one blob; the daemon runs
//! the driver's linker and the linked image is read back and kept here until `cuLinkDestroy`.
//!
//! Inputs are compiled only at `cuLinkComplete`, so a bad PTX input fails there rather than at
//! `cuLinkAddData`; the error log says why either way.

use super::context::current_device;
use super::module::Jit;
use super::util::{out, ready, ret};
use crate::client::lock;
use baton_ipc::control::{Request, Response};
use baton_ipc::protocol::{
    link_option_forwarded, LinkComplete, LinkInput, LinkRead, LinkRequest, ObjectId, Op,
    LINK_MAX_INPUT_TYPE,
};
use cuda_abi::*;
use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::sync::Mutex;

/// Options the shim answers itself: the wall time and the log buffers and their sizes.
const WALL_TIME: u32 = CUjit_option::CU_JIT_WALL_TIME.0;
const CLIENT_SIDE: std::ops::RangeInclusive<u32> = WALL_TIME..=6;

/// One pending link. The caller's option arrays are kept by address, as the driver keeps
/// them: the logs, their sizes and the wall time are written there at `cuLinkComplete`.
struct Link {
    n: c_uint,
    options: usize,
    values: usize,
    forwarded: Vec<(u32, u64)>,
    inputs: Vec<LinkInput>,
    /// Linked images handed out; each stays valid until `cuLinkDestroy`.
    images: Vec<Box<[u8]>>,
}

/// Live links by handle value (the address of the boxed state, so handles are unique).
static LINKS: Mutex<Option<HashMap<usize, Box<Link>>>> = Mutex::new(None);

fn with_link<T>(
    state: CUlinkState,
    f: impl FnOnce(&mut Link) -> Result<T, CUresult>,
) -> Result<T, CUresult> {
    let mut links = lock(&LINKS);
    let link = links
        .get_or_insert_with(HashMap::new)
        .get_mut(&(state as usize))
        .ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
    f(link)
}

fn refuse(name: &'static str, what: &str) -> CUresult {
    crate::log::once(name, what);
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}

/// The scalar options of a list, to forward; `client_side` says whether the wall time and log
/// options are allowed (the link's own list) or refused (an input's list).
///
/// # Safety
/// `options`/`values` must be null or arrays of `n` entries.
unsafe fn scalar_options(
    name: &'static str,
    n: c_uint,
    options: *const CUjit_option,
    values: *const *mut c_void,
    client_side: bool,
) -> Result<Vec<(u32, u64)>, CUresult> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if options.is_null() || values.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let mut v = Vec::new();
    for i in 0..n as usize {
        // SAFETY: i < n entries of both arrays.
        let (opt, val) = unsafe { ((*options.add(i)).0, *values.add(i) as usize as u64) };
        if CLIENT_SIDE.contains(&opt) {
            if client_side {
                continue;
            }
            return Err(refuse(
                name,
                "takes log buffers and the wall time only in cuLinkCreate's options under Baton",
            ));
        }
        if !link_option_forwarded(opt) {
            return Err(refuse(
                name,
                "got a JIT option whose value points into the program (symbol or name lists); Baton does not forward those",
            ));
        }
        if val > u32::MAX as u64 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        v.push((opt, val));
    }
    Ok(v)
}

pub(crate) unsafe fn cuLinkCreate_v2(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    state_out: *mut CUlinkState,
) -> CUresult {
    ret((|| {
        ready()?;
        if state_out.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: forwarded caller contract.
        let forwarded = unsafe { scalar_options("cuLinkCreate", n, options, values, true)? };
        let link = Box::new(Link {
            n,
            options: options as usize,
            values: values as usize,
            forwarded,
            inputs: Vec::new(),
            images: Vec::new(),
        });
        let handle = &*link as *const Link as usize;
        lock(&LINKS)
            .get_or_insert_with(HashMap::new)
            .insert(handle, link);
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(state_out, handle as CUlinkState) }
    })())
}

pub(crate) unsafe fn cuLinkCreate(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    state_out: *mut CUlinkState,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLinkCreate_v2(n, options, values, state_out) }
}

/// Adds one input (already copied into the client's memory).
///
/// # Safety
/// `name` must be null or NUL-terminated; the option arrays as for [`scalar_options`].
#[allow(clippy::too_many_arguments)]
unsafe fn add(
    fname: &'static str,
    state: CUlinkState,
    kind: CUjitInputType,
    data: Vec<u8>,
    name: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    ready()?;
    let kind = kind.0;
    if kind > LINK_MAX_INPUT_TYPE {
        return Err(refuse(
            fname,
            "got an input type Baton does not link (NVVM IR, or unknown)",
        ));
    }
    // SAFETY: forwarded caller contract.
    let options = unsafe { scalar_options(fname, n, options, values, false)? };
    let name = if name.is_null() {
        Vec::new()
    } else {
        // SAFETY: per the contract.
        unsafe { CStr::from_ptr(name) }.to_bytes().to_vec()
    };
    with_link(state, |l| {
        l.inputs.push(LinkInput {
            kind,
            name,
            options,
            data,
        });
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn cuLinkAddData_v2(
    state: CUlinkState,
    kind: CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> CUresult {
    ret((|| {
        if data.is_null() || size == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller's input spans `size` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size) }.to_vec();
        // SAFETY: forwarded caller contract.
        unsafe {
            add(
                "cuLinkAddData",
                state,
                kind,
                bytes,
                name,
                n,
                options,
                values,
            )
        }
    })())
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn cuLinkAddData(
    state: CUlinkState,
    kind: CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLinkAddData_v2(state, kind, data, size, name, n, options, values) }
}

pub(crate) unsafe fn cuLinkAddFile_v2(
    state: CUlinkState,
    kind: CUjitInputType,
    path: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> CUresult {
    ret((|| {
        if path.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller passes a NUL-terminated path.
        let p = unsafe { CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&p).map_err(|_| CUresult::CUDA_ERROR_FILE_NOT_FOUND)?;
        // SAFETY: forwarded caller contract; the path names the input in the linker's logs.
        unsafe {
            add(
                "cuLinkAddFile",
                state,
                kind,
                bytes,
                path,
                n,
                options,
                values,
            )
        }
    })())
}

pub(crate) unsafe fn cuLinkAddFile(
    state: CUlinkState,
    kind: CUjitInputType,
    path: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLinkAddFile_v2(state, kind, path, n, options, values) }
}

/// Links in the daemon; returns the linked image, having written the logs and the wall time
/// into the caller's option values.
fn complete(l: &mut Link) -> Result<(*const u8, usize), CUresult> {
    let c = ready()?;
    let device = current_device()?;
    let req = LinkRequest {
        options: l.forwarded.clone(),
        inputs: l.inputs.clone(),
    }
    .encode();
    let blob = match c
        .control(
            &Request::AttachBlob {
                len: req.len() as u64,
            },
            &req,
        )?
        .0
    {
        Response::Blob { id } => id,
        Response::Error { code, .. } => return Err(CUresult(code)),
        _ => return Err(CUresult::CUDA_ERROR_UNKNOWN),
    };
    let r = c.call(
        Op::LinkComplete,
        &LinkComplete {
            device,
            _pad: 0,
            blob,
        },
        &[],
    )?;
    let (id, result, size, info_len) = (r.values[0], r.values[1] as u32, r.values[2], r.values[3]);
    let wall = r
        .payload
        .get(..4)
        .map_or(0.0, |b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
    let logs = r.payload.get(4..).unwrap_or(&[]);
    let (info, error) = logs.split_at((info_len as usize).min(logs.len()));
    let (options, values) = (l.options as *mut CUjit_option, l.values as *mut *mut c_void);
    // SAFETY: the caller's option arrays were valid at cuLinkCreate and, as the driver
    // requires, stay valid until cuLinkDestroy.
    unsafe {
        let jit = Jit::new(l.n, options, values);
        jit.deliver(info, error);
        for i in 0..l.n as usize {
            if !options.is_null() && (*options.add(i)).0 == WALL_TIME {
                // The driver stores the time as a float in the option's value slot.
                *values.add(i) = wall.to_bits() as usize as *mut c_void;
            }
        }
    }
    if result != 0 {
        return Err(CUresult(result));
    }
    let image = read_image(c, id, size);
    // Drop the daemon's copy whether or not reading it back worked.
    let dropped = c.call(Op::LinkDestroy, &ObjectId { id }, &[]);
    let image = image?.into_boxed_slice();
    dropped?;
    let p = (image.as_ptr(), image.len());
    l.images.push(image);
    Ok(p)
}

fn read_image(c: &crate::client::Client, id: u64, size: u64) -> Result<Vec<u8>, CUresult> {
    let size = usize::try_from(size).map_err(|_| CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
    let mut image = Vec::with_capacity(size);
    while image.len() < size {
        let r = c.call(
            Op::LinkRead,
            &LinkRead {
                link: id,
                offset: image.len() as u64,
            },
            &[],
        )?;
        if r.payload.is_empty() || image.len() + r.payload.len() > size {
            return Err(CUresult::CUDA_ERROR_UNKNOWN);
        }
        image.extend_from_slice(&r.payload);
    }
    Ok(image)
}

pub(crate) unsafe fn cuLinkComplete(
    state: CUlinkState,
    cubin_out: *mut *mut c_void,
    size_out: *mut usize,
) -> CUresult {
    ret((|| {
        if cubin_out.is_null() || size_out.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let (p, n) = with_link(state, complete)?;
        // SAFETY: checked non-null; the caller's out-pointers.
        unsafe {
            out(cubin_out, p as *mut c_void)?;
            out(size_out, n)
        }
    })())
}

pub(crate) unsafe fn cuLinkDestroy(state: CUlinkState) -> CUresult {
    ret(lock(&LINKS)
        .get_or_insert_with(HashMap::new)
        .remove(&(state as usize))
        .map(drop)
        .ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE))
}
