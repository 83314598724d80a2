//! The real executor: the CUDA driver through cudarc's dynamically loaded `sys` bindings.
//!
//! Every `unsafe` block here is a driver call: arguments are either values the session layer
//! has already validated against its tables or pointers to locals.

/// Looks a driver entry point up once, with the C signature `$ty` stated by the caller; a
/// driver without it answers `CUDA_ERROR_NOT_SUPPORTED`. For calls whose arguments cudarc types
/// as Rust enums: client values outside an enum would be undefined behaviour there, so these go
/// through C signatures over plain integers.
macro_rules! driver_fn {
    ($name:literal, $ty:ty) => {{
        use cudarc::driver::sys::culib;
        static F: std::sync::OnceLock<Option<$ty>> = std::sync::OnceLock::new();
        match F.get_or_init(|| {
            let name = concat!($name, "\0").as_bytes();
            // SAFETY: the symbol has the C signature `$ty` (checked against the 13.0 headers).
            let sym = unsafe { culib().get::<$ty>(name) };
            sym.ok().map(|s| *s)
        }) {
            Some(f) => *f,
            None => {
                return Err($crate::executor::GpuError(
                    $crate::executor::code::NOT_SUPPORTED,
                ))
            }
        }
    }};
}

mod arrays;
mod conditional;
mod graph_mem;
mod graph_nodes;
mod green;
mod link;
mod pools;
mod vmm_graph;

use super::{
    code, BoxCopy, Executor, GpuError, GpuResult, JitLogs, LaunchConfig, Mem, OccupancyQuery, Raw,
    Resource, SmResource,
};
use baton_ipc::control::DeviceInfo;
use baton_ipc::protocol::{
    FunctionInfo, ImageKind, VmmAccess, VmmProp, FUNC_ATTRS, JIT_LOG_BYTES,
    OCC_AVAILABLE_DYNAMIC_SMEM, OCC_MAX_ACTIVE_BLOCKS, OCC_MAX_POTENTIAL_BLOCK_SIZE,
};
use cudarc::driver::sys;
use graph_nodes as gn;
use std::ffi::{c_void, CStr, CString};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use vmm_graph as vg;

fn check(r: sys::CUresult) -> GpuResult<()> {
    check_code(r as u32)
}

/// `check` for entry points called through `driver_fn!`, which return the plain code.
fn check_code(r: u32) -> GpuResult<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(GpuError(r))
    }
}

struct Device {
    /// The retained primary context (a `CUcontext`); replaced by [`Executor::reset_device`].
    ctx: AtomicUsize,
}

/// Bumped by every context reset, so that each thread makes the fresh context current again
/// even where the driver hands back the same handle value.
static RESETS: AtomicU64 = AtomicU64::new(0);

pub struct CudaExecutor {
    devices: Vec<Device>,
    infos: Vec<DeviceInfo>,
    driver_version: i32,
    /// Green contexts made for tenants' SM shares.
    green: green::Cache,
}

// SAFETY: CUDA contexts may be used from any thread once made current there; the executor only
// stores the handles.
unsafe impl Send for CudaExecutor {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for CudaExecutor {}

/// Why the real driver could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no NVIDIA driver found (libcuda.so could not be loaded)")]
    NoDriver,
    #[error("the libcuda.so that was loaded is Baton's own shim; the daemon must load the real driver (unset LD_PRELOAD/LD_LIBRARY_PATH pointing at the shim)")]
    LoadedShim,
    #[error("cuInit failed with CUDA error {0}")]
    Init(u32),
    #[error("no CUDA device found")]
    NoDevice,
    #[error("CUDA error {0} while opening device {1}")]
    Device(u32, u32),
}

type GetAttrFn = unsafe extern "C" fn(*mut i32, i32, i32) -> u32;

impl CudaExecutor {
    pub fn open() -> Result<CudaExecutor, OpenError> {
        // SAFETY: probing for the library only dlopens it.
        if !unsafe { sys::is_culib_present() } {
            return Err(OpenError::NoDriver);
        }
        // SAFETY: the library is present (checked above), so culib() returns it.
        let lib = unsafe { sys::culib() };
        // SAFETY: looking a data symbol up only reads the dynamic symbol table.
        if unsafe { lib.get::<*const u8>(b"baton_shim_marker\0") }.is_ok() {
            return Err(OpenError::LoadedShim);
        }
        // SAFETY: plain driver call.
        check(unsafe { sys::cuInit(0) }).map_err(|e| OpenError::Init(e.0))?;
        let mut driver_version = 0;
        // SAFETY: out-pointer to a local.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) };
        let mut count = 0;
        // SAFETY: out-pointer to a local.
        check(unsafe { sys::cuDeviceGetCount(&mut count) }).map_err(|e| OpenError::Init(e.0))?;
        if count <= 0 {
            return Err(OpenError::NoDevice);
        }
        // SAFETY: the symbol has this C signature (enums are ints in the C ABI); looked up once.
        let get_attr: GetAttrFn = *unsafe { lib.get::<GetAttrFn>(b"cuDeviceGetAttribute\0") }
            .map_err(|_| OpenError::NoDriver)?;
        let mut devices = Vec::new();
        let mut infos = Vec::new();
        for ordinal in 0..count {
            let err = |e: GpuError| OpenError::Device(e.0, ordinal as u32);
            let mut ctx = null_mut();
            // SAFETY: out-pointer to a local; ordinal < count.
            check(unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, ordinal) }).map_err(err)?;
            // SAFETY: `ctx` was just retained.
            check(unsafe { sys::cuCtxSetCurrent(ctx) }).map_err(err)?;
            infos.push(describe(ordinal, get_attr).map_err(err)?);
            devices.push(Device {
                ctx: AtomicUsize::new(ctx as usize),
            });
        }
        Ok(CudaExecutor {
            devices,
            infos,
            driver_version,
            green: Default::default(),
        })
    }

    /// The device's context, for graph nodes that name the context they run in.
    fn ctx(&self, device: u32) -> GpuResult<*mut c_void> {
        self.devices
            .get(device as usize)
            .map(|d| d.ctx.load(Ordering::Acquire) as *mut c_void)
            .ok_or(GpuError(code::INVALID_DEVICE))
    }

    fn bind(&self, device: u32) -> GpuResult<()> {
        let d = self
            .devices
            .get(device as usize)
            .ok_or(GpuError(code::INVALID_DEVICE))?;
        thread_local! {
            static CURRENT: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        let want = (
            d.ctx.load(Ordering::Acquire),
            RESETS.load(Ordering::Acquire),
        );
        if CURRENT.with(|c| c.get()) != want {
            // SAFETY: `ctx` is a retained primary context.
            check(unsafe { sys::cuCtxSetCurrent(want.0 as sys::CUcontext) })?;
            CURRENT.with(|c| c.set(want));
        }
        Ok(())
    }
}

fn describe(ordinal: i32, get_attr: GetAttrFn) -> GpuResult<DeviceInfo> {
    let mut name = [0 as std::ffi::c_char; 256];
    // SAFETY: buffer of the stated length.
    check(unsafe { sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, ordinal) })?;
    // SAFETY: the driver NUL-terminates within the buffer.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut uuid = sys::CUuuid { bytes: [0; 16] };
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::cuDeviceGetUuid_v2(&mut uuid, ordinal) })?;
    let mut total = 0usize;
    // SAFETY: out-pointer to a local.
    check(unsafe { sys::cuDeviceTotalMem_v2(&mut total, ordinal) })?;
    let mut bus = [0 as std::ffi::c_char; 64];
    // SAFETY: buffer of the stated length.
    check(unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), bus.len() as i32, ordinal) })?;
    // SAFETY: NUL-terminated by the driver.
    let pci_bus_id = unsafe { CStr::from_ptr(bus.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut attributes = Vec::new();
    // Ask for every attribute number up to well past CU_DEVICE_ATTRIBUTE_MAX of 13.0; the driver
    // answers INVALID_VALUE for numbers it does not know, and those are left out.
    for attr in 1..256 {
        let mut v = 0;
        // SAFETY: out-pointer to a local; unknown attribute numbers are an error, not UB, in C.
        if unsafe { get_attr(&mut v, attr, ordinal) } == 0 {
            attributes.push((attr, v));
        }
    }
    Ok(DeviceInfo {
        ordinal: ordinal as u32,
        name,
        uuid: uuid.bytes.map(|b| b as u8),
        total_mem: total as u64,
        pci_bus_id,
        attributes,
    })
}

/// The limits of the 13.0 ABI (`CU_LIMIT_STACK_SIZE` .. `CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED`).
fn known_limit(limit: u32) -> GpuResult<sys::CUlimit> {
    if limit > 9 {
        return Err(GpuError(code::NOT_SUPPORTED));
    }
    // SAFETY: 0..=9 are variants of the enum in the 13.0 bindings this crate pins.
    Ok(unsafe { std::mem::transmute::<u32, sys::CUlimit>(limit) })
}

fn stream(s: Raw) -> sys::CUstream {
    s as usize as sys::CUstream
}
fn event(e: Raw) -> sys::CUevent {
    e as usize as sys::CUevent
}
fn func(f: Raw) -> sys::CUfunction {
    f as usize as sys::CUfunction
}

impl Executor for CudaExecutor {
    fn name(&self) -> &'static str {
        "cuda"
    }
    fn driver_version(&self) -> i32 {
        self.driver_version
    }
    fn devices(&self) -> &[DeviceInfo] {
        &self.infos
    }

    fn probe(&self, device: u32) -> GpuResult<()> {
        self.bind(device)?;
        // Querying the context's legacy stream, where the daemon never issues anything, waits
        // for nothing; once a kernel fault has poisoned the context it returns the sticky error.
        // SAFETY: the null stream of the current context.
        match unsafe { sys::cuStreamQuery(null_mut()) } as u32 {
            0 | code::NOT_READY => Ok(()),
            e => Err(GpuError(e)),
        }
    }
    fn reset_device(&self, device: u32) -> GpuResult<()> {
        let d = self
            .devices
            .get(device as usize)
            .ok_or(GpuError(code::INVALID_DEVICE))?;
        let ordinal = device as i32;
        // Reset destroys everything of the primary context. Then, as the runtime does after
        // cudaDeviceReset, retain it again: that creates a fresh context. The reference taken
        // before is not released: after a reset the driver does not count it reliably.
        let step = |what: &'static str, r: sys::CUresult| {
            check(r).inspect_err(|e| tracing::warn!(device, error = e.0, "{what} failed"))
        };
        // Green contexts retain the primary context; they go first. Their streams went with
        // the sessions of the faulted context.
        self.green.forget(device);
        // SAFETY: plain driver call on a valid ordinal; the caller keeps every other thread out
        // of the driver.
        step("cuDevicePrimaryCtxReset", unsafe {
            sys::cuDevicePrimaryCtxReset_v2(ordinal)
        })?;
        let mut ctx = null_mut();
        // SAFETY: out-pointer to a local.
        step("cuDevicePrimaryCtxRetain", unsafe {
            sys::cuDevicePrimaryCtxRetain(&mut ctx, ordinal)
        })?;
        d.ctx.store(ctx as usize, Ordering::Release);
        RESETS.fetch_add(1, Ordering::AcqRel);
        self.bind(device)?;
        // SAFETY: plain driver call on the context just made current.
        step("cuCtxSynchronize on the new context", unsafe {
            sys::cuCtxSynchronize()
        })
    }

    fn mem_alloc(&self, device: u32, bytes: u64) -> GpuResult<u64> {
        self.bind(device)?;
        let mut p = 0;
        // SAFETY: out-pointer to a local.
        check(unsafe { sys::cuMemAlloc_v2(&mut p, bytes as usize) })?;
        Ok(p)
    }
    fn mem_free(&self, device: u32, ptr: u64) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: the session only frees addresses it allocated and still owns.
        check(unsafe { sys::cuMemFree_v2(ptr) })
    }
    fn mem_info(&self, device: u32) -> GpuResult<(u64, u64)> {
        self.bind(device)?;
        let (mut f, mut t) = (0, 0);
        // SAFETY: out-pointers to locals.
        check(unsafe { sys::cuMemGetInfo_v2(&mut f, &mut t) })?;
        Ok((f as u64, t as u64))
    }

    fn host_register(&self, ptr: *mut u8, len: usize) -> GpuResult<u64> {
        self.bind(0)?;
        let flags = sys::CU_MEMHOSTREGISTER_PORTABLE | sys::CU_MEMHOSTREGISTER_DEVICEMAP;
        // SAFETY: `ptr..ptr+len` is a live mapping owned by the caller until unregister.
        check(unsafe { sys::cuMemHostRegister_v2(ptr as *mut c_void, len, flags) })?;
        let mut d = 0;
        // SAFETY: `ptr` was just registered with DEVICEMAP.
        check(unsafe { sys::cuMemHostGetDevicePointer_v2(&mut d, ptr as *mut c_void, 0) })?;
        Ok(d)
    }
    fn host_unregister(&self, ptr: *mut u8) -> GpuResult<()> {
        self.bind(0)?;
        // SAFETY: `ptr` was registered by host_register.
        check(unsafe { sys::cuMemHostUnregister(ptr as *mut c_void) })
    }

    fn image_load(
        &self,
        device: u32,
        kind: ImageKind,
        image: &[u8],
        verbose: bool,
    ) -> (GpuResult<Raw>, JitLogs) {
        if let Err(e) = self.bind(device) {
            return (Err(e), JitLogs::default());
        }
        // The driver reads PTX as a C string: make sure one ends inside our copy.
        let owned: Vec<u8>;
        let data: &[u8] = if image.ends_with(&[0]) {
            image
        } else {
            owned = image.iter().copied().chain([0]).collect();
            &owned
        };
        let ptr = data.as_ptr() as *const c_void;
        let mut info = vec![0u8; JIT_LOG_BYTES];
        let mut error = vec![0u8; JIT_LOG_BYTES];
        let mut options = [
            sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            sys::CUjit_option::CU_JIT_LOG_VERBOSE,
        ];
        let mut values = [
            info.as_mut_ptr() as *mut c_void,
            JIT_LOG_BYTES as *mut c_void,
            error.as_mut_ptr() as *mut c_void,
            JIT_LOG_BYTES as *mut c_void,
            verbose as usize as *mut c_void,
        ];
        let n = options.len() as u32;
        let r = match kind {
            ImageKind::Module => {
                let mut m = null_mut();
                // SAFETY: `data`, the log buffers and the option arrays outlive the call; the
                // driver validates the image format.
                check(unsafe {
                    sys::cuModuleLoadDataEx(
                        &mut m,
                        ptr,
                        n,
                        options.as_mut_ptr(),
                        values.as_mut_ptr(),
                    )
                })
                .map(|_| m as usize as Raw)
            }
            ImageKind::Library => {
                let mut l = null_mut();
                // SAFETY: as above; no library options.
                check(unsafe {
                    sys::cuLibraryLoadData(
                        &mut l,
                        ptr,
                        options.as_mut_ptr(),
                        values.as_mut_ptr(),
                        n,
                        null_mut(),
                        null_mut(),
                        0,
                    )
                })
                .map(|_| l as usize as Raw)
            }
        };
        let used = |buf: &mut Vec<u8>, v: *mut c_void| {
            // The size options now hold the bytes written, NUL included.
            let n = (v as usize).min(JIT_LOG_BYTES);
            let n = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
            buf.truncate(n);
        };
        used(&mut info, values[1]);
        used(&mut error, values[3]);
        (r, JitLogs { info, error })
    }
    fn link(
        &self,
        device: u32,
        req: &baton_ipc::protocol::LinkRequest,
    ) -> (GpuResult<Vec<u8>>, JitLogs, f32) {
        if let Err(e) = self.bind(device) {
            return (Err(e), JitLogs::default(), 0.0);
        }
        link::link(req)
    }
    fn image_unload(&self, kind: ImageKind, image: Raw) -> GpuResult<()> {
        self.bind(0)?;
        // SAFETY: the session passes only images it loaded and has not unloaded.
        check(unsafe {
            match kind {
                ImageKind::Module => sys::cuModuleUnload(image as usize as sys::CUmodule),
                ImageKind::Library => sys::cuLibraryUnload(image as usize as sys::CUlibrary),
            }
        })
    }
    fn function_names(&self, device: u32, kind: ImageKind, image: Raw) -> GpuResult<Vec<CString>> {
        self.bind(device)?;
        let mut n = 0;
        let name_of = |p: *const std::ffi::c_char| {
            // SAFETY: the driver returned a NUL-terminated name owned by the live image.
            unsafe { CStr::from_ptr(p) }.to_owned()
        };
        let mut names = Vec::new();
        match kind {
            ImageKind::Module => {
                let m = image as usize as sys::CUmodule;
                // SAFETY: valid module handle (session table), out-pointer to a local.
                check(unsafe { sys::cuModuleGetFunctionCount(&mut n, m) })?;
                let mut fs = vec![null_mut(); n as usize];
                // SAFETY: `fs` holds `n` entries.
                check(unsafe { sys::cuModuleEnumerateFunctions(fs.as_mut_ptr(), n, m) })?;
                for f in fs {
                    let mut p = std::ptr::null();
                    // SAFETY: `f` was just returned by the driver for the live module.
                    check(unsafe { sys::cuFuncGetName(&mut p, f) })?;
                    names.push(name_of(p));
                }
            }
            ImageKind::Library => {
                let l = image as usize as sys::CUlibrary;
                // SAFETY: valid library handle (session table), out-pointer to a local.
                check(unsafe { sys::cuLibraryGetKernelCount(&mut n, l) })?;
                let mut ks = vec![null_mut(); n as usize];
                // SAFETY: `ks` holds `n` entries.
                check(unsafe { sys::cuLibraryEnumerateKernels(ks.as_mut_ptr(), n, l) })?;
                for k in ks {
                    let mut p = std::ptr::null();
                    // SAFETY: `k` was just returned by the driver for the live library.
                    check(unsafe { sys::cuKernelGetName(&mut p, k) })?;
                    names.push(name_of(p));
                }
            }
        }
        Ok(names)
    }
    fn get_function(
        &self,
        device: u32,
        kind: ImageKind,
        image: Raw,
        name: &CStr,
    ) -> GpuResult<(Raw, FunctionInfo)> {
        self.bind(device)?;
        let mut f = null_mut();
        match kind {
            ImageKind::Module => {
                // SAFETY: valid module handle (session table) and NUL-terminated name.
                check(unsafe {
                    sys::cuModuleGetFunction(&mut f, image as usize as sys::CUmodule, name.as_ptr())
                })?;
            }
            ImageKind::Library => {
                let mut k = null_mut();
                // SAFETY: valid library handle and NUL-terminated name.
                check(unsafe {
                    sys::cuLibraryGetKernel(&mut k, image as usize as sys::CUlibrary, name.as_ptr())
                })?;
                // SAFETY: `k` was just returned by the driver; the device's context is current.
                check(unsafe { sys::cuKernelGetFunction(&mut f, k) })?;
            }
        }
        let mut info = FunctionInfo::default();
        for (i, slot) in info.attrs.iter_mut().enumerate().take(FUNC_ATTRS) {
            let mut v = 0;
            // SAFETY: i < 16 = CU_FUNC_ATTRIBUTE_MAX, so the value is a valid enum variant.
            let attr: sys::CUfunction_attribute = unsafe { std::mem::transmute(i as u32) };
            // SAFETY: out-pointer to a local, valid function.
            if unsafe { sys::cuFuncGetAttribute(&mut v, attr, f) } == sys::CUresult::CUDA_SUCCESS {
                *slot = v;
            }
        }
        for i in 0.. {
            let (mut off, mut size) = (0usize, 0usize);
            // SAFETY: out-pointers to locals; the driver answers INVALID_VALUE past the last param.
            if unsafe { sys::cuFuncGetParamInfo(f, i, &mut off, &mut size) }
                != sys::CUresult::CUDA_SUCCESS
            {
                break;
            }
            info.params.push((off as u32, size as u32));
        }
        Ok((f as usize as Raw, info))
    }
    fn get_global(
        &self,
        device: u32,
        kind: ImageKind,
        image: Raw,
        name: &CStr,
    ) -> GpuResult<(u64, u64)> {
        self.bind(device)?;
        let (mut p, mut n) = (0, 0usize);
        // SAFETY: valid handle, NUL-terminated name, out-pointers to locals.
        check(unsafe {
            match kind {
                ImageKind::Module => sys::cuModuleGetGlobal_v2(
                    &mut p,
                    &mut n,
                    image as usize as sys::CUmodule,
                    name.as_ptr(),
                ),
                ImageKind::Library => sys::cuLibraryGetGlobal(
                    &mut p,
                    &mut n,
                    image as usize as sys::CUlibrary,
                    name.as_ptr(),
                ),
            }
        })?;
        Ok((p, n as u64))
    }
    fn func_set_attribute(&self, device: u32, f: Raw, attr: i32, value: i32) -> GpuResult<()> {
        self.bind(device)?;
        if !(0..FUNC_ATTRS as i32).contains(&attr) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        // SAFETY: attr is in 0..16, a valid enum variant.
        let a: sys::CUfunction_attribute = unsafe { std::mem::transmute(attr as u32) };
        // SAFETY: valid function handle.
        check(unsafe { sys::cuFuncSetAttribute(func(f), a, value) })
    }
    fn occupancy(&self, device: u32, f: Raw, q: OccupancyQuery) -> GpuResult<(i64, i64)> {
        self.bind(device)?;
        match q.kind {
            OCC_MAX_ACTIVE_BLOCKS => {
                let mut n = 0;
                // SAFETY: out-pointer to a local, valid function.
                check(unsafe {
                    sys::cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
                        &mut n,
                        func(f),
                        q.block_size as i32,
                        q.dynamic_smem as usize,
                        q.flags,
                    )
                })?;
                Ok((n as i64, 0))
            }
            OCC_AVAILABLE_DYNAMIC_SMEM => {
                let mut n = 0usize;
                // SAFETY: as above; `block_size_limit` carries numBlocks for this query.
                check(unsafe {
                    sys::cuOccupancyAvailableDynamicSMemPerBlock(
                        &mut n,
                        func(f),
                        q.block_size_limit as i32,
                        q.block_size as i32,
                    )
                })?;
                Ok((n as i64, 0))
            }
            OCC_MAX_POTENTIAL_BLOCK_SIZE => {
                let (mut grid, mut block) = (0, 0);
                // SAFETY: as above; no per-block-size callback (it would have to run in the client).
                check(unsafe {
                    sys::cuOccupancyMaxPotentialBlockSizeWithFlags(
                        &mut grid,
                        &mut block,
                        func(f),
                        None,
                        q.dynamic_smem as usize,
                        q.block_size_limit as i32,
                        q.flags,
                    )
                })?;
                Ok((block as i64, grid as i64))
            }
            _ => Err(GpuError(code::INVALID_VALUE)),
        }
    }

    fn stream_create(&self, device: u32, priority: i32) -> GpuResult<Raw> {
        self.bind(device)?;
        let mut s = null_mut();
        // SAFETY: out-pointer to a local. CU_STREAM_NON_BLOCKING = 1.
        check(unsafe { sys::cuStreamCreateWithPriority(&mut s, 1, priority) })?;
        Ok(s as usize as Raw)
    }
    fn stream_destroy(&self, device: u32, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: the session destroys only streams it created.
        check(unsafe { sys::cuStreamDestroy_v2(stream(s)) })
    }
    fn stream_synchronize(&self, device: u32, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: valid stream.
        check(unsafe { sys::cuStreamSynchronize(stream(s)) })
    }
    fn stream_priority_range(&self, device: u32) -> GpuResult<(i32, i32)> {
        self.bind(device)?;
        let (mut least, mut greatest) = (0, 0);
        // SAFETY: out-pointers to locals.
        check(unsafe { sys::cuCtxGetStreamPriorityRange(&mut least, &mut greatest) })?;
        Ok((least, greatest))
    }
    fn sm_resource(&self, device: u32) -> GpuResult<SmResource> {
        let info = self
            .infos
            .get(device as usize)
            .ok_or(GpuError(code::INVALID_DEVICE))?;
        // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR.
        green::sm_resource(device, info.attribute(75).unwrap_or(0))
    }
    fn green_ctx(&self, device: u32, sm_count: u32) -> GpuResult<(Raw, u32)> {
        // The primary context is current first, as the driver advises, so that making the
        // green context does not initialise it anew.
        self.bind(device)?;
        self.green.get(device, sm_count)
    }
    fn green_stream_create(&self, device: u32, green: Raw, priority: i32) -> GpuResult<Raw> {
        self.bind(device)?;
        green::stream_create(green, priority)
    }

    fn event_create(&self, device: u32, flags: u32) -> GpuResult<Raw> {
        self.bind(device)?;
        let mut e = null_mut();
        // SAFETY: out-pointer to a local; the driver validates flags.
        check(unsafe { sys::cuEventCreate(&mut e, flags) })?;
        Ok(e as usize as Raw)
    }
    fn event_destroy(&self, device: u32, e: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: valid event owned by the session.
        check(unsafe { sys::cuEventDestroy_v2(event(e)) })
    }
    fn event_record(&self, device: u32, e: Raw, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: valid event and stream.
        check(unsafe { sys::cuEventRecord(event(e), stream(s)) })
    }
    fn stream_wait_event(&self, device: u32, s: Raw, e: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: valid event and stream.
        check(unsafe { sys::cuStreamWaitEvent(stream(s), event(e), 0) })
    }
    fn event_synchronize(&self, device: u32, e: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: valid event.
        check(unsafe { sys::cuEventSynchronize(event(e)) })
    }
    fn event_query(&self, device: u32, e: Raw) -> GpuResult<bool> {
        self.bind(device)?;
        // SAFETY: valid event.
        match check(unsafe { sys::cuEventQuery(event(e)) }) {
            Ok(()) => Ok(true),
            Err(GpuError(code::NOT_READY)) => Ok(false),
            Err(e) => Err(e),
        }
    }
    fn event_elapsed(&self, device: u32, a: Raw, b: Raw) -> GpuResult<f32> {
        self.bind(device)?;
        let mut ms = 0f32;
        // SAFETY: valid events, out-pointer to a local.
        check(unsafe { sys::cuEventElapsedTime_v2(&mut ms, event(a), event(b)) })?;
        Ok(ms)
    }

    fn write_value(&self, device: u32, s: Raw, addr: u64, value: u64) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: `addr` is the device address of a registered completion word.
        check(unsafe { sys::cuStreamWriteValue64_v2(stream(s), addr, value, 0) })
    }

    fn mem_alloc_async(&self, device: u32, bytes: u64, s: Raw) -> GpuResult<u64> {
        self.bind(device)?;
        let mut p = 0;
        // SAFETY: out-pointer to a local, valid stream.
        check(unsafe { sys::cuMemAllocAsync(&mut p, bytes as usize, stream(s)) })?;
        Ok(p)
    }
    fn mem_free_async(&self, device: u32, ptr: u64, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: the session frees only stream-ordered allocations it made.
        check(unsafe { sys::cuMemFreeAsync(ptr, stream(s)) })
    }
    fn mem_pool_create(&self, device: u32, max_size: u64) -> GpuResult<Raw> {
        self.bind(device)?;
        pools::create(device, max_size)
    }
    fn mem_pool_destroy(&self, device: u32, pool: Raw) -> GpuResult<()> {
        self.bind(device)?;
        pools::destroy(pool)
    }
    fn mem_alloc_from_pool(&self, device: u32, pool: Raw, bytes: u64, s: Raw) -> GpuResult<u64> {
        self.bind(device)?;
        pools::alloc(pool, bytes, s)
    }
    fn mem_pool_attr(&self, device: u32, pool: Raw, attr: u32, set: Option<u64>) -> GpuResult<u64> {
        self.bind(device)?;
        pools::attr(pool, attr, set)
    }
    fn mem_pool_trim(&self, device: u32, pool: Raw, keep: u64) -> GpuResult<()> {
        self.bind(device)?;
        pools::trim(pool, keep)
    }
    fn copy_2d(
        &self,
        device: u32,
        dst: Mem,
        dst_pitch: u64,
        src: Mem,
        src_pitch: u64,
        width: u64,
        height: u64,
        s: Raw,
    ) -> GpuResult<()> {
        self.bind(device)?;
        // Built field by field: the memory-type fields are Rust enums with no zero value.
        let (src_type, src_host, src_device) = match src {
            Mem::Device(p) => (sys::CUmemorytype::CU_MEMORYTYPE_DEVICE, std::ptr::null(), p),
            Mem::Host(p) => (sys::CUmemorytype::CU_MEMORYTYPE_HOST, p as *const c_void, 0),
        };
        let (dst_type, dst_host, dst_device) = match dst {
            Mem::Device(p) => (sys::CUmemorytype::CU_MEMORYTYPE_DEVICE, null_mut(), p),
            Mem::Host(p) => (sys::CUmemorytype::CU_MEMORYTYPE_HOST, p as *mut c_void, 0),
        };
        let mut c = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: src_type,
            srcHost: src_host,
            srcDevice: src_device,
            srcArray: null_mut(),
            srcPitch: 0,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: dst_type,
            dstHost: dst_host,
            dstDevice: dst_device,
            dstArray: null_mut(),
            dstPitch: 0,
            WidthInBytes: 0,
            Height: 0,
        };
        c.srcPitch = src_pitch as usize;
        c.dstPitch = dst_pitch as usize;
        c.WidthInBytes = width as usize;
        c.Height = height as usize;
        // SAFETY: ranges were checked by the session; `c` outlives the call.
        check(unsafe { sys::cuMemcpy2DAsync_v2(&c, stream(s)) })
    }

    fn max_active_clusters(&self, device: u32, f: Raw, cfg: &LaunchConfig) -> GpuResult<i64> {
        self.bind(device)?;
        // SAFETY: an all-zero launch attribute is a valid C value (the union is plain data).
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        let clustered = cfg.cluster.iter().any(|&c| c != 0);
        if clustered {
            attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            attr.value.clusterDim.x = cfg.cluster[0].max(1);
            attr.value.clusterDim.y = cfg.cluster[1].max(1);
            attr.value.clusterDim.z = cfg.cluster[2].max(1);
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid[0],
            gridDimY: cfg.grid[1],
            gridDimZ: cfg.grid[2],
            blockDimX: cfg.block[0],
            blockDimY: cfg.block[1],
            blockDimZ: cfg.block[2],
            sharedMemBytes: cfg.shared_mem,
            hStream: null_mut(),
            attrs: &mut attr,
            numAttrs: clustered as u32,
        };
        let mut n = 0;
        // SAFETY: valid function; `config` and `attr` outlive the call.
        check(unsafe { sys::cuOccupancyMaxActiveClusters(&mut n, func(f), &config) })?;
        Ok(n as i64)
    }

    fn get_limit(&self, device: u32, limit: u32) -> GpuResult<u64> {
        self.bind(device)?;
        let l = known_limit(limit)?;
        let mut v = 0usize;
        // SAFETY: out-pointer to a local; `l` is a valid enum value.
        check(unsafe { sys::cuCtxGetLimit(&mut v, l) })?;
        Ok(v as u64)
    }
    fn set_limit(&self, device: u32, limit: u32, value: u64) -> GpuResult<()> {
        self.bind(device)?;
        let l = known_limit(limit)?;
        // SAFETY: plain driver call with a valid enum value.
        check(unsafe { sys::cuCtxSetLimit(l, value as usize) })
    }

    fn host_func(&self, device: u32, s: Raw, f: Box<dyn FnOnce() + Send>) -> GpuResult<()> {
        self.bind(device)?;
        unsafe extern "C" fn trampoline(data: *mut c_void) {
            // SAFETY: `data` is the box leaked below, handed to exactly one call.
            let f = unsafe { Box::from_raw(data as *mut Box<dyn FnOnce() + Send>) };
            // A panic must not unwind into the driver.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        }
        let data = Box::into_raw(Box::new(f)) as *mut c_void;
        // SAFETY: valid stream; the trampoline takes ownership of `data` when it runs.
        let r = check(unsafe { sys::cuLaunchHostFunc(stream(s), Some(trampoline), data) });
        if r.is_err() {
            // SAFETY: the driver refused it, so the trampoline will never run: reclaim the box.
            drop(unsafe { Box::from_raw(data as *mut Box<dyn FnOnce() + Send>) });
        }
        r
    }

    fn capture_host_work(
        &self,
        device: u32,
        s: Raw,
        work: &std::sync::Arc<super::HostWork>,
    ) -> GpuResult<()> {
        self.bind(device)?;
        let (f, data) = graph_nodes::host_params(work);
        // SAFETY: valid capturing stream; `data` stays valid while the graph may run (the
        // caller's contract on `work`), and the trampoline only borrows it.
        check(unsafe { sys::cuLaunchHostFunc(stream(s), Some(f), data) })
    }

    fn launch(
        &self,
        device: u32,
        f: Raw,
        s: Raw,
        cfg: &LaunchConfig,
        params: &[u8],
    ) -> GpuResult<()> {
        self.bind(device)?;
        let mut size = params.len();
        // The packed block always travels in the `extra` form: the daemon needs no per-argument
        // pointers, and the bytes are exactly what the kernel receives.
        let mut extra = [
            std::ptr::without_provenance_mut::<c_void>(1), // CU_LAUNCH_PARAM_BUFFER_POINTER
            params.as_ptr() as *mut c_void,
            std::ptr::without_provenance_mut::<c_void>(2), // CU_LAUNCH_PARAM_BUFFER_SIZE
            &mut size as *mut usize as *mut c_void,
            std::ptr::null_mut(), // CU_LAUNCH_PARAM_END
        ];
        let extra_ptr = if params.is_empty() {
            null_mut()
        } else {
            extra.as_mut_ptr()
        };
        if !cfg.cooperative && cfg.cluster.iter().all(|&c| c == 0) {
            // SAFETY: valid function and stream; `extra` and `params` outlive the call.
            return check(unsafe {
                sys::cuLaunchKernel(
                    func(f),
                    cfg.grid[0],
                    cfg.grid[1],
                    cfg.grid[2],
                    cfg.block[0],
                    cfg.block[1],
                    cfg.block[2],
                    cfg.shared_mem,
                    stream(s),
                    null_mut(),
                    extra_ptr,
                )
            });
        }
        // SAFETY: an all-zero launch attribute is a valid C value (the union is plain data).
        let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        if cfg.cooperative {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
            attrs[n].value.cooperative = 1;
            n += 1;
        }
        if cfg.cluster.iter().any(|&c| c != 0) {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            attrs[n].value.clusterDim.x = cfg.cluster[0].max(1);
            attrs[n].value.clusterDim.y = cfg.cluster[1].max(1);
            attrs[n].value.clusterDim.z = cfg.cluster[2].max(1);
            n += 1;
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid[0],
            gridDimY: cfg.grid[1],
            gridDimZ: cfg.grid[2],
            blockDimX: cfg.block[0],
            blockDimY: cfg.block[1],
            blockDimZ: cfg.block[2],
            sharedMemBytes: cfg.shared_mem,
            hStream: stream(s),
            attrs: attrs.as_mut_ptr(),
            numAttrs: n as u32,
        };
        // SAFETY: as for cuLaunchKernel; `config` and `attrs` outlive the call.
        check(unsafe { sys::cuLaunchKernelEx(&config, func(f), null_mut(), extra_ptr) })
    }
    fn memset(
        &self,
        device: u32,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u32,
        width: u64,
        height: u64,
        s: Raw,
    ) -> GpuResult<()> {
        self.bind(device)?;
        let (w, h, p, st) = (width as usize, height as usize, pitch as usize, stream(s));
        // SAFETY: the session checked the range lies in the tenant's allocations.
        check(unsafe {
            match (elem, height) {
                (1, 1) => sys::cuMemsetD8Async(dst, value as u8, w, st),
                (2, 1) => sys::cuMemsetD16Async(dst, value as u16, w, st),
                (4, 1) => sys::cuMemsetD32Async(dst, value, w, st),
                (1, _) => sys::cuMemsetD2D8Async(dst, p, value as u8, w, h, st),
                (2, _) => sys::cuMemsetD2D16Async(dst, p, value as u16, w, h, st),
                (4, _) => sys::cuMemsetD2D32Async(dst, p, value, w, h, st),
                _ => return Err(GpuError(code::INVALID_VALUE)),
            }
        })
    }
    fn array_create(&self, device: u32, desc: &baton_ipc::protocol::ArrayCreate) -> GpuResult<Raw> {
        self.bind(device)?;
        arrays::array_create(desc)
    }
    fn array_destroy(&self, device: u32, array: Raw) -> GpuResult<()> {
        self.bind(device)?;
        arrays::array_destroy(array)
    }
    fn copy_3d(&self, device: u32, copy: &BoxCopy, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        arrays::copy_3d(copy, s)
    }
    fn tex_object_create(
        &self,
        device: u32,
        res: &Resource,
        tex: &baton_ipc::protocol::TextureDesc,
        view: Option<&baton_ipc::protocol::ViewDesc>,
    ) -> GpuResult<u64> {
        self.bind(device)?;
        arrays::tex_object_create(res, tex, view)
    }
    fn tex_object_destroy(&self, device: u32, tex: u64) -> GpuResult<()> {
        self.bind(device)?;
        arrays::tex_object_destroy(tex)
    }
    fn surf_object_create(&self, device: u32, res: &Resource) -> GpuResult<u64> {
        self.bind(device)?;
        arrays::surf_object_create(res)
    }
    fn surf_object_destroy(&self, device: u32, surf: u64) -> GpuResult<()> {
        self.bind(device)?;
        arrays::surf_object_destroy(surf)
    }

    fn copy_dtod(&self, device: u32, dst: u64, src: u64, len: u64, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: ranges checked by the session.
        check(unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len as usize, stream(s)) })
    }
    fn copy_htod(&self, device: u32, dst: u64, src: *const u8, len: u64, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: `src` is registered host memory of this process; ranges checked by the session.
        check(unsafe {
            sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, len as usize, stream(s))
        })
    }
    fn copy_dtoh(&self, device: u32, dst: *mut u8, src: u64, len: u64, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        // SAFETY: as above.
        check(unsafe {
            sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, src, len as usize, stream(s))
        })
    }

    fn vmm_granularity(&self, device: u32, prop: &VmmProp) -> GpuResult<u64> {
        self.bind(device)?;
        vg::granularity(prop)
    }
    fn vmm_reserve(
        &self,
        device: u32,
        size: u64,
        align: u64,
        addr: u64,
        flags: u64,
    ) -> GpuResult<u64> {
        self.bind(device)?;
        vg::reserve(size, align, addr, flags)
    }
    fn vmm_address_free(&self, device: u32, ptr: u64, size: u64) -> GpuResult<()> {
        self.bind(device)?;
        vg::address_free(ptr, size)
    }
    fn vmm_create(&self, device: u32, size: u64, prop: &VmmProp) -> GpuResult<Raw> {
        self.bind(device)?;
        vg::create(size, prop)
    }
    fn vmm_release(&self, device: u32, handle: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::release(handle)
    }
    fn vmm_map(&self, device: u32, ptr: u64, size: u64, offset: u64, handle: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::map(ptr, size, offset, handle)
    }
    fn vmm_unmap(&self, device: u32, ptr: u64, size: u64) -> GpuResult<()> {
        self.bind(device)?;
        vg::unmap(ptr, size)
    }
    fn vmm_set_access(
        &self,
        device: u32,
        ptr: u64,
        size: u64,
        access: &[VmmAccess],
    ) -> GpuResult<()> {
        self.bind(device)?;
        vg::set_access(ptr, size, access)
    }
    fn vmm_get_access(
        &self,
        device: u32,
        ptr: u64,
        location_type: u32,
        location_id: i32,
    ) -> GpuResult<u64> {
        self.bind(device)?;
        vg::get_access(ptr, location_type, location_id)
    }
    fn capture_begin(&self, device: u32, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::capture_begin(s)
    }
    fn capture_end(&self, device: u32, s: Raw) -> GpuResult<Raw> {
        self.bind(device)?;
        vg::capture_end(s)
    }
    fn is_capturing(&self, device: u32, s: Raw) -> GpuResult<bool> {
        self.bind(device)?;
        vg::is_capturing(s)
    }
    fn graph_instantiate(&self, device: u32, graph: Raw, flags: u64) -> GpuResult<Raw> {
        self.bind(device)?;
        vg::instantiate(graph, flags)
    }
    fn graph_launch(&self, device: u32, exec: Raw, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::launch(exec, s)
    }
    fn graph_upload(&self, device: u32, exec: Raw, s: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::upload(exec, s)
    }
    fn graph_exec_destroy(&self, device: u32, exec: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::exec_destroy(exec)
    }
    fn graph_destroy(&self, device: u32, graph: Raw) -> GpuResult<()> {
        self.bind(device)?;
        vg::destroy(graph)
    }
    fn graph_node_count(&self, device: u32, graph: Raw) -> GpuResult<u64> {
        self.bind(device)?;
        vg::node_count(graph)
    }

    fn graph_create(&self, device: u32) -> GpuResult<Raw> {
        self.bind(device)?;
        gn::create()
    }
    fn graph_add_node(
        &self,
        device: u32,
        graph: Raw,
        deps: &[Raw],
        spec: &super::NodeSpec<'_>,
    ) -> GpuResult<Raw> {
        self.bind(device)?;
        gn::add_node(self.ctx(device)?, graph, deps, spec)
    }
    fn graph_node_set(
        &self,
        device: u32,
        exec: Option<Raw>,
        node: Raw,
        spec: &super::NodeSpec<'_>,
    ) -> GpuResult<()> {
        self.bind(device)?;
        gn::node_set(self.ctx(device)?, exec, node, spec)
    }
    fn graph_add_edges(&self, device: u32, graph: Raw, from: &[Raw], to: &[Raw]) -> GpuResult<()> {
        self.bind(device)?;
        gn::add_edges(graph, from, to)
    }
    fn graph_nodes(&self, device: u32, graph: Raw, roots: bool) -> GpuResult<Vec<Raw>> {
        self.bind(device)?;
        gn::nodes(graph, roots)
    }
    fn graph_node_type(&self, device: u32, node: Raw) -> GpuResult<u32> {
        self.bind(device)?;
        gn::node_type(node)
    }
    fn graph_destroy_node(&self, device: u32, node: Raw) -> GpuResult<()> {
        self.bind(device)?;
        gn::destroy_node(node)
    }
    fn graph_clone(&self, device: u32, graph: Raw) -> GpuResult<Raw> {
        self.bind(device)?;
        gn::clone(graph)
    }
    fn conditional_handle_create(
        &self,
        device: u32,
        graph: Raw,
        default_value: u32,
        flags: u32,
    ) -> GpuResult<u64> {
        self.bind(device)?;
        conditional::handle_create(self.ctx(device)?, graph, default_value, flags)
    }
    fn graph_add_conditional(
        &self,
        device: u32,
        graph: Raw,
        deps: &[Raw],
        handle: u64,
        kind: u32,
        size: u32,
    ) -> GpuResult<(Raw, Vec<Raw>)> {
        self.bind(device)?;
        conditional::add(self.ctx(device)?, graph, deps, handle, kind, size)
    }
    fn capture_to_graph(&self, device: u32, s: Raw, graph: Raw, deps: &[Raw]) -> GpuResult<()> {
        self.bind(device)?;
        conditional::capture_to_graph(s, graph, deps)
    }
    fn capture_info(&self, device: u32, s: Raw) -> GpuResult<(Raw, Vec<Raw>)> {
        self.bind(device)?;
        conditional::capture_info(s)
    }
    fn capture_set_deps(&self, device: u32, s: Raw, deps: &[Raw], flags: u32) -> GpuResult<()> {
        self.bind(device)?;
        conditional::update_deps(s, deps, flags)
    }
    fn graph_exec_update(
        &self,
        device: u32,
        exec: Raw,
        graph: Raw,
    ) -> (GpuResult<()>, super::UpdateResult) {
        if let Err(e) = self.bind(device) {
            return (Err(e), super::UpdateResult::default());
        }
        gn::exec_update(exec, graph)
    }
    fn graph_mem_node(&self, device: u32, node: Raw) -> GpuResult<super::MemNode> {
        self.bind(device)?;
        graph_mem::mem_node(node)
    }
    fn graph_mem_attr(&self, device: u32, attr: u32, set: Option<u64>) -> GpuResult<u64> {
        self.bind(device)?;
        graph_mem::attr(device, attr, set)
    }
    fn graph_mem_trim(&self, device: u32) -> GpuResult<()> {
        self.bind(device)?;
        graph_mem::trim(device)
    }
    fn tensor_map_encode(
        &self,
        device: u32,
        req: &baton_ipc::protocol::TensorMapEncode,
    ) -> GpuResult<[u8; baton_ipc::protocol::TENSOR_MAP_BYTES]> {
        self.bind(device)?;
        gn::tensor_map_encode(req)
    }
}
