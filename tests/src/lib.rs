//! Shared helpers for Baton's end-to-end tests: the driver API as the shim exports it (this
//! crate links the shim, so its `cu*` symbols are this binary's), and daemons on the simulated
//! executor, in-process or as the real `batond` binary.

// Link the shim: its exported driver entry points become this binary's.
extern crate cuda as _;

pub mod clients;
pub mod cudart;
pub mod daemon;

pub use clients::is_child;

pub use cuda_abi::*;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::path::PathBuf;
use std::sync::OnceLock;

#[allow(non_snake_case)]
extern "C" {
    pub fn cuInit(flags: c_uint) -> CUresult;
    pub fn cuDriverGetVersion(v: *mut c_int) -> CUresult;
    pub fn cuDeviceGetCount(n: *mut c_int) -> CUresult;
    pub fn cuDeviceGet(d: *mut CUdevice, ordinal: c_int) -> CUresult;
    pub fn cuDeviceGetName(name: *mut c_char, len: c_int, d: CUdevice) -> CUresult;
    pub fn cuDeviceGetAttribute(v: *mut c_int, a: CUdevice_attribute, d: CUdevice) -> CUresult;
    pub fn cuDevicePrimaryCtxRetain(ctx: *mut CUcontext, d: CUdevice) -> CUresult;
    pub fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;
    pub fn cuCtxSynchronize() -> CUresult;
    pub fn cuModuleLoadData(m: *mut CUmodule, image: *const c_void) -> CUresult;
    pub fn cuModuleGetFunction(f: *mut CUfunction, m: CUmodule, name: *const c_char) -> CUresult;
    pub fn cuModuleUnload(m: CUmodule) -> CUresult;
    pub fn cuFuncGetAttribute(v: *mut c_int, a: CUfunction_attribute, f: CUfunction) -> CUresult;
    pub fn cuMemAlloc_v2(p: *mut CUdeviceptr, n: usize) -> CUresult;
    pub fn cuMemFree_v2(p: CUdeviceptr) -> CUresult;
    pub fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult;
    pub fn cuMemGetAddressRange_v2(
        base: *mut CUdeviceptr,
        size: *mut usize,
        p: CUdeviceptr,
    ) -> CUresult;
    pub fn cuMemHostAlloc(p: *mut *mut c_void, n: usize, flags: c_uint) -> CUresult;
    pub fn cuMemFreeHost(p: *mut c_void) -> CUresult;
    pub fn cuMemHostGetDevicePointer_v2(
        d: *mut CUdeviceptr,
        p: *mut c_void,
        flags: c_uint,
    ) -> CUresult;
    pub fn cuMemcpyHtoD_v2(d: CUdeviceptr, s: *const c_void, n: usize) -> CUresult;
    pub fn cuMemcpyDtoH_v2(d: *mut c_void, s: CUdeviceptr, n: usize) -> CUresult;
    pub fn cuMemcpyDtoD_v2(d: CUdeviceptr, s: CUdeviceptr, n: usize) -> CUresult;
    pub fn cuMemcpyHtoDAsync_v2(
        d: CUdeviceptr,
        s: *const c_void,
        n: usize,
        st: CUstream,
    ) -> CUresult;
    pub fn cuMemcpyDtoHAsync_v2(d: *mut c_void, s: CUdeviceptr, n: usize, st: CUstream)
        -> CUresult;
    pub fn cuMemcpy(d: CUdeviceptr, s: CUdeviceptr, n: usize) -> CUresult;
    pub fn cuMemsetD32_v2(d: CUdeviceptr, v: c_uint, n: usize) -> CUresult;
    pub fn cuMemsetD8Async(d: CUdeviceptr, v: u8, n: usize, st: CUstream) -> CUresult;
    pub fn cuStreamCreate(s: *mut CUstream, flags: c_uint) -> CUresult;
    pub fn cuStreamDestroy_v2(s: CUstream) -> CUresult;
    pub fn cuStreamSynchronize(s: CUstream) -> CUresult;
    pub fn cuStreamQuery(s: CUstream) -> CUresult;
    pub fn cuStreamWaitEvent(s: CUstream, e: CUevent, flags: c_uint) -> CUresult;
    pub fn cuEventCreate(e: *mut CUevent, flags: c_uint) -> CUresult;
    pub fn cuEventDestroy_v2(e: CUevent) -> CUresult;
    pub fn cuEventRecord(e: CUevent, s: CUstream) -> CUresult;
    pub fn cuEventQuery(e: CUevent) -> CUresult;
    pub fn cuEventSynchronize(e: CUevent) -> CUresult;
    pub fn cuEventElapsedTime_v2(ms: *mut f32, a: CUevent, b: CUevent) -> CUresult;
    pub fn cuLaunchKernel(
        f: CUfunction,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        shared: c_uint,
        s: CUstream,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CUresult;
    pub fn cuLaunchKernelEx(
        cfg: *const CUlaunchConfig,
        f: CUfunction,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CUresult;
    pub fn cuGetErrorName(e: CUresult, s: *mut *const c_char) -> CUresult;
    pub fn cuGetErrorString(e: CUresult, s: *mut *const c_char) -> CUresult;
    pub fn cuGraphCreate(g: *mut CUgraph, flags: c_uint) -> CUresult;
    pub fn cuGraphAddKernelNode_v2(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        p: *const CUDA_KERNEL_NODE_PARAMS,
    ) -> CUresult;
    pub fn cuGraphAddMemcpyNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        p: *const CUDA_MEMCPY3D,
        ctx: CUcontext,
    ) -> CUresult;
    pub fn cuGraphAddMemsetNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        p: *const CUDA_MEMSET_NODE_PARAMS,
        ctx: CUcontext,
    ) -> CUresult;
    pub fn cuGraphClone(out: *mut CUgraph, g: CUgraph) -> CUresult;
    pub fn cuGraphDestroy(g: CUgraph) -> CUresult;
    pub fn cuGraphExecDestroy(e: CUgraphExec) -> CUresult;
    pub fn cuGraphGetNodes(g: CUgraph, nodes: *mut CUgraphNode, n: *mut usize) -> CUresult;
    pub fn cuGraphInstantiateWithFlags(e: *mut CUgraphExec, g: CUgraph, flags: u64) -> CUresult;
    pub fn cuGraphLaunch(e: CUgraphExec, s: CUstream) -> CUresult;
    pub fn cuGraphNodeGetType(n: CUgraphNode, t: *mut CUgraphNodeType) -> CUresult;
    pub fn cuStreamBeginCapture_v2(s: CUstream, mode: CUstreamCaptureMode) -> CUresult;
    pub fn cuStreamEndCapture(s: CUstream, g: *mut CUgraph) -> CUresult;
    pub fn cuLaunchHostFunc(s: CUstream, f: CUhostFn, data: *mut c_void) -> CUresult;
    pub fn cuStreamAddCallback(
        s: CUstream,
        f: CUstreamCallback,
        data: *mut c_void,
        flags: c_uint,
    ) -> CUresult;
    pub fn cuMemAllocPitch_v2(
        p: *mut CUdeviceptr,
        pitch: *mut usize,
        w: usize,
        h: usize,
        elem: c_uint,
    ) -> CUresult;
    pub fn cuMemcpy2D_v2(p: *const CUDA_MEMCPY2D) -> CUresult;
    pub fn cuMemAllocAsync(p: *mut CUdeviceptr, n: usize, s: CUstream) -> CUresult;
    pub fn cuMemFreeAsync(p: CUdeviceptr, s: CUstream) -> CUresult;
    pub fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult;
    pub fn cuMemPoolSetAttribute(
        pool: CUmemoryPool,
        attr: CUmemPool_attribute,
        v: *mut c_void,
    ) -> CUresult;
    pub fn cuMemPoolGetAttribute(
        pool: CUmemoryPool,
        attr: CUmemPool_attribute,
        v: *mut c_void,
    ) -> CUresult;
    pub fn cuMemAllocFromPoolAsync(
        p: *mut CUdeviceptr,
        n: usize,
        pool: CUmemoryPool,
        s: CUstream,
    ) -> CUresult;
    pub fn cuMemPoolTrimTo(pool: CUmemoryPool, min: usize) -> CUresult;
    pub fn cuMemHostRegister_v2(p: *mut c_void, n: usize, flags: c_uint) -> CUresult;
    pub fn cuMemHostUnregister(p: *mut c_void) -> CUresult;
    pub fn cuStreamIsCapturing(s: CUstream, st: *mut CUstreamCaptureStatus) -> CUresult;
    pub fn cuStreamGetCaptureInfo_v2(
        s: CUstream,
        st: *mut CUstreamCaptureStatus,
        id: *mut u64,
        g: *mut CUgraph,
        deps: *mut *const CUgraphNode,
        n: *mut usize,
    ) -> CUresult;
    pub fn cuCtxGetLimit(v: *mut usize, l: CUlimit) -> CUresult;
    pub fn cuCtxSetLimit(l: CUlimit, v: usize) -> CUresult;
    pub fn cuPointerGetAttribute(
        data: *mut c_void,
        a: CUpointer_attribute,
        p: CUdeviceptr,
    ) -> CUresult;
    pub fn cuCtxGetDevice_v2(d: *mut CUdevice, ctx: CUcontext) -> CUresult;
    pub fn cuIpcGetMemHandle(h: *mut CUipcMemHandle, p: CUdeviceptr) -> CUresult;
    pub fn cuIpcOpenMemHandle_v2(p: *mut CUdeviceptr, h: CUipcMemHandle, flags: c_uint)
        -> CUresult;
    pub fn cuIpcCloseMemHandle(p: CUdeviceptr) -> CUresult;
    pub fn cuIpcGetEventHandle(h: *mut CUipcEventHandle, e: CUevent) -> CUresult;
    pub fn cuIpcOpenEventHandle(e: *mut CUevent, h: CUipcEventHandle) -> CUresult;
    pub fn cuMemCreate(
        h: *mut CUmemGenericAllocationHandle,
        size: usize,
        prop: *const CUmemAllocationProp,
        flags: u64,
    ) -> CUresult;
    pub fn cuMemRelease(h: CUmemGenericAllocationHandle) -> CUresult;
    pub fn cuMemAddressReserve(
        p: *mut CUdeviceptr,
        size: usize,
        align: usize,
        addr: CUdeviceptr,
        flags: u64,
    ) -> CUresult;
    pub fn cuMemAddressFree(p: CUdeviceptr, size: usize) -> CUresult;
    pub fn cuMemMap(
        p: CUdeviceptr,
        size: usize,
        offset: usize,
        h: CUmemGenericAllocationHandle,
        flags: u64,
    ) -> CUresult;
    pub fn cuMemUnmap(p: CUdeviceptr, size: usize) -> CUresult;
    pub fn cuMemSetAccess(
        p: CUdeviceptr,
        size: usize,
        desc: *const CUmemAccessDesc,
        count: usize,
    ) -> CUresult;
    pub fn cuMemExportToShareableHandle(
        out: *mut c_void,
        h: CUmemGenericAllocationHandle,
        kind: CUmemAllocationHandleType,
        flags: u64,
    ) -> CUresult;
    pub fn cuMemImportFromShareableHandle(
        h: *mut CUmemGenericAllocationHandle,
        os: *mut c_void,
        kind: CUmemAllocationHandleType,
    ) -> CUresult;
    pub fn cuMemPoolCreate(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) -> CUresult;
    pub fn cuMemPoolDestroy(pool: CUmemoryPool) -> CUresult;
    pub fn cuDeviceSetMemPool(dev: CUdevice, pool: CUmemoryPool) -> CUresult;
    pub fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult;
    pub fn cuMemPoolGetAccess(
        flags: *mut CUmemAccess_flags,
        pool: CUmemoryPool,
        loc: *mut CUmemLocation,
    ) -> CUresult;
    pub fn cuMemPoolExportToShareableHandle(
        out: *mut c_void,
        pool: CUmemoryPool,
        kind: CUmemAllocationHandleType,
        flags: u64,
    ) -> CUresult;
    pub fn cuMemPoolImportFromShareableHandle(
        pool: *mut CUmemoryPool,
        os: *mut c_void,
        kind: CUmemAllocationHandleType,
        flags: u64,
    ) -> CUresult;
    pub fn cuMemPoolExportPointer(out: *mut CUmemPoolPtrExportData, p: CUdeviceptr) -> CUresult;
    pub fn cuMemPoolImportPointer(
        p: *mut CUdeviceptr,
        pool: CUmemoryPool,
        data: *mut CUmemPoolPtrExportData,
    ) -> CUresult;
    pub fn cuMemGetAllocationPropertiesFromHandle(
        prop: *mut CUmemAllocationProp,
        h: CUmemGenericAllocationHandle,
    ) -> CUresult;
    pub fn cuGetProcAddress_v2(
        name: *const c_char,
        pfn: *mut *mut c_void,
        version: c_int,
        flags: u64,
        status: *mut CUdriverProcAddressQueryResult,
    ) -> CUresult;
}

/// Panics with the call and its error name unless `r` is `CUDA_SUCCESS`.
#[track_caller]
pub fn check(r: CUresult, what: &str) {
    if r != CUresult::CUDA_SUCCESS {
        let name = r
            .name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        panic!("{what} failed: {} ({name})", r.0);
    }
}

/// Runs `$call` and panics with its text unless it succeeds.
#[macro_export]
macro_rules! cu {
    ($call:expr) => {{
        // SAFETY: the test passes arguments as the driver API documents them.
        #[allow(clippy::macro_metavars_in_unsafe)]
        let r = unsafe { $call };
        $crate::check(r, stringify!($call))
    }};
}

/// The simulated executor's module image with the test kernels.
pub const SIM_IMAGE: &[u8] =
    b"//baton-sim\nkernel vecAdd 8 8 8 4\nkernel fill 8 4 4\nkernel empty\nkernel fault\n\0";

/// A daemon on the simulated executor running inside this test process, started once, and
/// `BATON_SOCKET` pointing clients (this process's shim) at it.
pub fn in_process_daemon() -> PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("baton-e2e-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("baton.sock");
            let _ = std::fs::remove_file(&path);
            let arena = baton_daemon::host_memory::HostArena::reserve().expect("reserve");
            let exec = std::sync::Arc::new(baton_daemon::executor::sim::SimExecutor::new());
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            let daemon = baton_daemon::server::Daemon::new(
                exec,
                arena,
                baton_daemon::config::Config::default(),
            )
            .expect("daemon");
            std::thread::spawn(move || daemon.serve(listener));
            std::env::set_var(baton_ipc::control::SOCKET_ENV, &path);
            path
        })
        .clone()
}

/// Initialises the driver against the in-process daemon and makes device 0's primary context
/// current on the calling thread.
pub fn init_thread() {
    in_process_daemon();
    cu!(cuInit(0));
    let mut ctx = std::ptr::null_mut();
    cu!(cuDevicePrimaryCtxRetain(&mut ctx, 0));
    cu!(cuCtxSetCurrent(ctx));
}

/// A built binary of this workspace (`batond`, `baton`) next to the test executable's folder.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// Loads the simulator's test kernels: (module, vecAdd, fill, empty).
pub fn load_kernels() -> (CUmodule, CUfunction, CUfunction, CUfunction) {
    let mut m = std::ptr::null_mut();
    cu!(cuModuleLoadData(
        &mut m,
        SIM_IMAGE.as_ptr() as *const std::ffi::c_void
    ));
    let (mut add, mut fill, mut empty) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    cu!(cuModuleGetFunction(&mut add, m, c"vecAdd".as_ptr()));
    cu!(cuModuleGetFunction(&mut fill, m, c"fill".as_ptr()));
    cu!(cuModuleGetFunction(&mut empty, m, c"empty".as_ptr()));
    (m, add, fill, empty)
}

/// `n` deterministic, non-zero floats.
pub fn floats(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 10_000) as f32 / 7.0 + 1.0
        })
        .collect()
}

/// Launches `f` over `n` elements in blocks of 256 threads.
///
/// # Safety
/// `params` must match `f`'s arguments.
unsafe fn launch_over(
    f: CUfunction,
    n: i32,
    params: &mut [*mut std::ffi::c_void],
    s: CUstream,
) -> CUresult {
    let blocks = (n as u32).div_ceil(256);
    // SAFETY: the caller passes parameters that match `f`.
    unsafe {
        cuLaunchKernel(
            f,
            blocks,
            1,
            1,
            256,
            1,
            1,
            0,
            s,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
}

/// Launches vecAdd over `n` elements.
///
/// # Safety
/// `f` must be vecAdd and the buffers `n` floats long.
pub unsafe fn launch_vec_add(
    f: CUfunction,
    a: CUdeviceptr,
    b: CUdeviceptr,
    c: CUdeviceptr,
    n: i32,
    s: CUstream,
) -> CUresult {
    let (mut a, mut b, mut c, mut count) = (a, b, c, n);
    let mut params = [
        &mut a as *mut _ as *mut std::ffi::c_void,
        &mut b as *mut _ as *mut std::ffi::c_void,
        &mut c as *mut _ as *mut std::ffi::c_void,
        &mut count as *mut _ as *mut std::ffi::c_void,
    ];
    // SAFETY: the parameters match vecAdd's four arguments.
    unsafe { launch_over(f, n, &mut params, s) }
}

/// Launches fill, which stores `value` in `n` 32-bit words at `d`.
///
/// # Safety
/// `f` must be fill and `d` hold `n` words.
pub unsafe fn launch_fill(
    f: CUfunction,
    d: CUdeviceptr,
    value: u32,
    n: i32,
    s: CUstream,
) -> CUresult {
    let (mut d, mut v, mut count) = (d, value, n);
    let mut params = [
        &mut d as *mut _ as *mut std::ffi::c_void,
        &mut v as *mut _ as *mut std::ffi::c_void,
        &mut count as *mut _ as *mut std::ffi::c_void,
    ];
    // SAFETY: the parameters match fill's three arguments.
    unsafe { launch_over(f, n, &mut params, s) }
}

/// In a child process: initialise against the daemon named by `BATON_SOCKET` and make device
/// 0's primary context current.
pub fn init_client() {
    cu!(cuInit(0));
    let mut ctx = std::ptr::null_mut();
    cu!(cuDevicePrimaryCtxRetain(&mut ctx, 0));
    cu!(cuCtxSetCurrent(ctx));
}

/// The real `batond` on the simulated executor in a child process, for tests whose clients
/// need pinned memory (which a daemon in the client's own process cannot map a second time).
pub mod child {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Stdio};

    pub struct SimDaemon {
        child: Child,
        dir: PathBuf,
        pub socket: PathBuf,
    }

    impl SimDaemon {
        pub fn start(tag: &str) -> SimDaemon {
            let dir = std::env::temp_dir().join(format!("baton-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let socket = dir.join("baton.sock");
            let _ = std::fs::remove_file(&socket);
            let child = crate::daemon::spawn_serving(
                crate::daemon::batond_sim(&socket).stderr(Stdio::null()),
                &socket,
            );
            SimDaemon { child, dir, socket }
        }
    }

    impl Drop for SimDaemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub use crate::clients::is_child;

    /// Runs the `#[ignore]`d test `name` of this test binary in a child process against the
    /// daemon at `socket`; panics with its output unless it succeeds.
    pub fn run(name: &str, socket: &Path) {
        let out = crate::clients::command(name, socket).output().unwrap();
        assert!(
            out.status.success(),
            "client {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
