//! Modules, libraries, functions and kernels. Images are copied to the daemon, which loads
//! them into its context and returns each function's attributes and parameter layout; those
//! are cached here so attribute queries and launches need no round trip.

use super::context::current_device;
use super::util::{out, ready, ret};
use crate::client::{lock, Client};
use crate::objects::{Function, Module};
use baton_ipc::control::{Request, Response};
use baton_ipc::protocol::{
    FunctionInfo, GetSymbol, ImageKind, LoadModule, ObjectId, Op, JIT_VERBOSE,
};
use cuda_abi::*;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::Ordering;

/// The JIT options of a load: where the caller wants the compiler's logs.
pub(super) struct Jit {
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    n: usize,
    verbose: bool,
}

impl Jit {
    const NONE: Jit = Jit {
        options: std::ptr::null_mut(),
        values: std::ptr::null_mut(),
        n: 0,
        verbose: false,
    };

    /// # Safety
    /// `options`/`values` must be null or arrays of `n` entries, as `cuModuleLoadDataEx` takes.
    pub(super) unsafe fn new(
        n: c_uint,
        options: *mut CUjit_option,
        values: *mut *mut c_void,
    ) -> Jit {
        if options.is_null() || values.is_null() {
            return Jit::NONE;
        }
        let mut j = Jit {
            options,
            values,
            n: n as usize,
            verbose: false,
        };
        for i in 0..j.n {
            // SAFETY: i < n entries.
            if unsafe { *options.add(i) } == CUjit_option::CU_JIT_LOG_VERBOSE {
                // SAFETY: as above.
                j.verbose = unsafe { *values.add(i) } as usize != 0;
            }
        }
        j
    }

    /// Copies the daemon's logs into the caller's buffers and sets the size options to the
    /// bytes written (NUL included), as the driver does.
    ///
    /// # Safety
    /// As for [`Jit::new`]; each log buffer holds as many bytes as its size option says.
    pub(super) unsafe fn deliver(&self, info: &[u8], error: &[u8]) {
        // SAFETY: every index is < n, inside the caller's option array.
        let opt = |i: usize| unsafe { *self.options.add(i) };
        let find = |want: CUjit_option| (0..self.n).find(|&i| opt(i) == want);
        for (buf_opt, size_opt, log) in [
            (
                CUjit_option::CU_JIT_INFO_LOG_BUFFER,
                CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                info,
            ),
            (
                CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
                CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                error,
            ),
        ] {
            let (Some(b), Some(sz)) = (find(buf_opt), find(size_opt)) else {
                continue;
            };
            // SAFETY: both indices are < n.
            let (buf, cap) = unsafe {
                (
                    *self.values.add(b) as *mut u8,
                    *self.values.add(sz) as usize,
                )
            };
            if buf.is_null() || cap == 0 {
                continue;
            }
            let n = log.len().min(cap - 1);
            // SAFETY: the caller's buffer holds `cap > n` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(log.as_ptr(), buf, n);
                buf.add(n).write(0);
                *self.values.add(sz) = (n + 1) as *mut c_void;
            }
        }
    }
}

/// Sends `image` to the daemon and loads it as `kind` on the current device.
fn load(
    c: &'static Client,
    image: &[u8],
    kind: ImageKind,
    jit: &Jit,
) -> Result<&'static Module, CUresult> {
    let device = current_device()?;
    let blob = match c
        .control(
            &Request::AttachBlob {
                len: image.len() as u64,
            },
            image,
        )?
        .0
    {
        Response::Blob { id } => id,
        Response::Error { code, .. } => return Err(CUresult(code)),
        _ => return Err(CUresult::CUDA_ERROR_UNKNOWN),
    };
    let flags = if jit.verbose { JIT_VERBOSE } else { 0 };
    let r = c.call(
        Op::LoadModule,
        &LoadModule {
            device,
            kind: kind as u32,
            blob,
            jit: flags,
            _pad: 0,
        },
        &[],
    )?;
    let info_len = (r.values[2] as usize).min(r.payload.len());
    let (info, error) = r.payload.split_at(info_len);
    // SAFETY: the caller's JIT options were validated by `Jit::new`'s contract.
    unsafe { jit.deliver(info, error) };
    match r.values[1] as u32 {
        0 => Ok(Module::new(device, r.values[0], kind)),
        e => Err(CUresult(e)),
    }
}

/// # Safety
/// `image` must point to a complete image (PTX text, cubin, fatbin or fatbin wrapper).
unsafe fn load_ptr(
    image: *const c_void,
    kind: ImageKind,
    jit: &Jit,
) -> Result<&'static Module, CUresult> {
    let c = ready()?;
    // SAFETY: per the contract.
    let p = unsafe { crate::image::unwrap(image as *const u8) };
    // SAFETY: per the contract.
    let len = unsafe { crate::image::image_len(p) }.ok_or(CUresult::CUDA_ERROR_INVALID_IMAGE)?;
    // SAFETY: the image spans `len` readable bytes.
    load(c, unsafe { std::slice::from_raw_parts(p, len) }, kind, jit)
}

pub(crate) unsafe fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { load_ptr(image, ImageKind::Module, &Jit::NONE) }
        .and_then(|m| unsafe { out(module, m.handle()) }))
}

pub(crate) unsafe fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    image: *const c_void,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    let jit = unsafe { Jit::new(n, options, values) };
    // SAFETY: forwarded caller contract.
    ret(unsafe { load_ptr(image, ImageKind::Module, &jit) }
        .and_then(|m| unsafe { out(module, m.handle()) }))
}

pub(crate) unsafe fn cuModuleLoadFatBinary(module: *mut CUmodule, fat: *const c_void) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe { cuModuleLoadData(module, fat) }
}

pub(crate) unsafe fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) -> CUresult {
    ret((|| {
        let c = ready()?;
        if fname.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller passes a NUL-terminated path.
        let path = unsafe { CStr::from_ptr(fname) }
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).map_err(|_| CUresult::CUDA_ERROR_FILE_NOT_FOUND)?;
        let m = load(c, &bytes, ImageKind::Module, &Jit::NONE)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(module, m.handle()) }
    })())
}

fn unload(c: &'static Client, m: &'static Module) -> Result<(), CUresult> {
    if !m.loaded.swap(false, Ordering::AcqRel) {
        return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    c.call(Op::UnloadModule, &ObjectId { id: m.id }, &[])
        .map(|_| ())
}

pub(crate) unsafe fn cuModuleUnload(module: CUmodule) -> CUresult {
    ret(ready().and_then(|c| unload(c, Module::from_handle(module)?)))
}

/// The function `name` of `m`, asking the daemon the first time.
///
/// # Safety
/// `name` must be null or NUL-terminated.
unsafe fn function(
    c: &'static Client,
    m: &'static Module,
    name: *const c_char,
) -> Result<&'static Function, CUresult> {
    if name.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    if !m.loaded.load(Ordering::Acquire) {
        return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    // SAFETY: per the contract.
    let name = unsafe { CStr::from_ptr(name) };
    let key = name.to_string_lossy().into_owned();
    if let Some(f) = lock(&m.functions).get(&key) {
        return Ok(f);
    }
    let r = c.call(
        Op::GetFunction,
        &GetSymbol { module: m.id },
        name.to_bytes(),
    )?;
    let info = FunctionInfo::decode(&r.payload).ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
    let f = Function::new(m, r.values[0], name.to_owned(), info);
    Ok(*lock(&m.functions).entry(key).or_insert(f))
}

/// The names of all of `m`'s functions, in the driver's order (asked of the daemon once).
pub(crate) fn function_names(
    c: &'static Client,
    m: &'static Module,
) -> Result<&'static [std::ffi::CString], CUresult> {
    if !m.loaded.load(Ordering::Acquire) {
        return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    if let Some(n) = m.names.get() {
        return Ok(n);
    }
    let r = c.call(Op::ModuleFunctions, &ObjectId { id: m.id }, &[])?;
    let names: Vec<std::ffi::CString> = r
        .payload
        .split_inclusive(|&b| b == 0)
        .filter_map(|n| CStr::from_bytes_with_nul(n).ok())
        .map(CStr::to_owned)
        .collect();
    if names.len() as u64 != r.values[0] {
        return Err(CUresult::CUDA_ERROR_UNKNOWN);
    }
    Ok(m.names.get_or_init(|| names))
}

/// Every function of `m`, in the driver's order.
fn functions(c: &'static Client, m: &'static Module) -> Result<Vec<&'static Function>, CUresult> {
    function_names(c, m)?
        .iter()
        // SAFETY: a CString is NUL-terminated.
        .map(|n| unsafe { function(c, m, n.as_ptr()) })
        .collect()
}

/// The functions of the module behind `module`, as the tools' module table lists them: none
/// for a library handle.
pub(crate) fn module_functions(module: CUmodule) -> Result<Vec<&'static Function>, CUresult> {
    let c = ready()?;
    let m = Module::from_handle(module)?;
    if m.kind != ImageKind::Module {
        return Ok(Vec::new());
    }
    functions(c, m)
}

/// `cuModuleGetFunctionCount` and `cuLibraryGetKernelCount`.
///
/// # Safety
/// `count` must be null or valid for a write.
unsafe fn count(count: *mut c_uint, m: *mut c_void, kind: ImageKind) -> CUresult {
    ret((|| {
        let c = ready()?;
        let m = Module::from_handle(m as CUmodule)?;
        if m.kind != kind {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        let n = function_names(c, m)?.len() as c_uint;
        // SAFETY: forwarded caller contract.
        unsafe { out(count, n) }
    })())
}

/// `cuModuleEnumerateFunctions` and `cuLibraryEnumerateKernels`: at most `n` handles, in the
/// driver's order. A library's kernel is the same object as its function (see
/// [`cuLibraryGetKernel`]).
///
/// # Safety
/// `handles` must be null or valid for `n` writes.
unsafe fn enumerate(
    handles: *mut *mut c_void,
    n: c_uint,
    m: *mut c_void,
    kind: ImageKind,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let m = Module::from_handle(m as CUmodule)?;
        if m.kind != kind {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        if handles.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        for (i, f) in functions(c, m)?.into_iter().take(n as usize).enumerate() {
            // SAFETY: i < n entries, per the contract.
            unsafe { handles.add(i).write(f.handle()) };
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuModuleGetFunctionCount(n: *mut c_uint, module: CUmodule) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe { count(n, module as *mut c_void, ImageKind::Module) }
}

pub(crate) unsafe fn cuLibraryGetKernelCount(n: *mut c_uint, library: CUlibrary) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe { count(n, library as *mut c_void, ImageKind::Library) }
}

pub(crate) unsafe fn cuModuleEnumerateFunctions(
    functions: *mut CUfunction,
    n: c_uint,
    module: CUmodule,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe {
        enumerate(
            functions.cast(),
            n,
            module as *mut c_void,
            ImageKind::Module,
        )
    }
}

pub(crate) unsafe fn cuLibraryEnumerateKernels(
    kernels: *mut CUkernel,
    n: c_uint,
    library: CUlibrary,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    unsafe {
        enumerate(
            kernels.cast(),
            n,
            library as *mut c_void,
            ImageKind::Library,
        )
    }
}

pub(crate) unsafe fn cuModuleGetFunction(
    hfunc: *mut CUfunction,
    module: CUmodule,
    name: *const c_char,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        // SAFETY: forwarded caller contract.
        let f = unsafe { function(c, Module::from_handle(module)?, name)? };
        // SAFETY: forwarded caller contract.
        unsafe { out(hfunc, f.handle()) }
    })())
}

/// # Safety
/// `name` must be null or NUL-terminated.
unsafe fn global(
    c: &'static Client,
    m: &'static Module,
    name: *const c_char,
) -> Result<(u64, u64), CUresult> {
    if name.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: per the contract.
    let name = unsafe { CStr::from_ptr(name) };
    let key = name.to_string_lossy().into_owned();
    if let Some(g) = lock(&m.globals).get(&key) {
        return Ok(*g);
    }
    let r = c.call(Op::GetGlobal, &GetSymbol { module: m.id }, name.to_bytes())?;
    let g = (r.values[0], r.values[1]);
    lock(&m.globals).insert(key, g);
    crate::api::memory::remember_global(g.0, g.1, m.device);
    Ok(g)
}

pub(crate) unsafe fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: CUmodule,
    name: *const c_char,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        // SAFETY: forwarded caller contract.
        let (p, n) = unsafe { global(c, Module::from_handle(module)?, name)? };
        // SAFETY: both out-pointers are optional.
        unsafe {
            if !dptr.is_null() {
                out(dptr, p)?;
            }
            if !bytes.is_null() {
                out(bytes, n as usize)?;
            }
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuLibraryLoadData(
    library: *mut CUlibrary,
    code: *const c_void,
    jit_options: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    n_jit: c_uint,
    _lib_options: *mut CUlibraryOption,
    _lib_values: *mut *mut c_void,
    _n_lib: c_uint,
) -> CUresult {
    // SAFETY: forwarded caller contract.
    let jit = unsafe { Jit::new(n_jit, jit_options, jit_values) };
    // SAFETY: forwarded caller contract.
    ret(unsafe { load_ptr(code, ImageKind::Library, &jit) }
        .and_then(|m| unsafe { out(library, m.handle()) }))
}

pub(crate) unsafe fn cuLibraryUnload(library: CUlibrary) -> CUresult {
    ret(ready().and_then(|c| unload(c, Module::from_handle(library)?)))
}

/// A library's kernel is represented by the same object as its function in the daemon's one
/// context, so a `CUkernel` may also be passed wherever a `CUfunction` is expected.
pub(crate) unsafe fn cuLibraryGetKernel(
    kernel: *mut CUkernel,
    library: CUlibrary,
    name: *const c_char,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        // SAFETY: forwarded caller contract.
        let f = unsafe { function(c, Module::from_handle(library)?, name)? };
        // SAFETY: forwarded caller contract.
        unsafe { out(kernel, f.handle()) }
    })())
}

pub(crate) unsafe fn cuKernelGetFunction(func: *mut CUfunction, kernel: CUkernel) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|_| Function::from_handle(kernel))
        .and_then(|f| unsafe { out(func, f.handle()) }))
}

pub(crate) unsafe fn cuLibraryGetGlobal(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    name: *const c_char,
) -> CUresult {
    // SAFETY: same contract; a library is a module object here.
    unsafe { cuModuleGetGlobal_v2(dptr, bytes, library as CUmodule, name) }
}

pub(crate) unsafe fn cuFuncGetAttribute(
    pi: *mut c_int,
    attrib: CUfunction_attribute,
    hfunc: CUfunction,
) -> CUresult {
    ret((|| {
        ready()?;
        let f = Function::from_handle(hfunc)?;
        let v = f
            .attr(attrib.0 as usize)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pi, v) }
    })())
}

pub(crate) unsafe fn cuFuncSetAttribute(
    hfunc: CUfunction,
    attrib: CUfunction_attribute,
    value: c_int,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let f = Function::from_handle(hfunc)?;
        // Libraries set the same attribute before every launch (cuBLASLt: the dynamic
        // shared-memory size); setting the value it already has changes nothing, so it costs no
        // round trip. Only this client's session can change its functions.
        if lock(&f.info).attrs.get(attrib.0 as usize) == Some(&value) {
            return Ok(());
        }
        let body = baton_ipc::protocol::FuncSetAttribute {
            func: f.id,
            attr: attrib.0 as i32,
            value,
        };
        c.call(Op::FuncSetAttribute, &body, &[])?;
        if let Some(slot) = lock(&f.info).attrs.get_mut(attrib.0 as usize) {
            *slot = value;
        }
        super::occupancy::forget(f.id);
        Ok(())
    })())
}

pub(crate) unsafe fn cuKernelGetAttribute(
    pi: *mut c_int,
    attrib: CUfunction_attribute,
    kernel: CUkernel,
    _dev: CUdevice,
) -> CUresult {
    // SAFETY: same contract; kernels and functions are one object.
    unsafe { cuFuncGetAttribute(pi, attrib, kernel as CUfunction) }
}

pub(crate) unsafe fn cuKernelSetAttribute(
    attrib: CUfunction_attribute,
    value: c_int,
    kernel: CUkernel,
    _dev: CUdevice,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuFuncSetAttribute(kernel as CUfunction, attrib, value) }
}

pub(crate) unsafe fn cuFuncGetName(name: *mut *const c_char, hfunc: CUfunction) -> CUresult {
    ret((|| {
        ready()?;
        let f = Function::from_handle(hfunc)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(name, f.name.as_ptr()) }
    })())
}

pub(crate) unsafe fn cuKernelGetName(name: *mut *const c_char, kernel: CUkernel) -> CUresult {
    // SAFETY: same contract; a kernel is a function object here.
    unsafe { cuFuncGetName(name, kernel as CUfunction) }
}

pub(crate) unsafe fn cuFuncGetModule(hmod: *mut CUmodule, hfunc: CUfunction) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|_| Function::from_handle(hfunc))
        .and_then(|f| unsafe { out(hmod, f.module.handle()) }))
}
