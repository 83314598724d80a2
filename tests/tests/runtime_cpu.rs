//! The driver's private export tables, which the CUDA runtime needs to start, on the simulated
//! executor: each table as the runtime uses it. With `BATON_CUDART` naming a
//! `libcudart.so.13`, also the real runtime end to end on top of the shim.

use baton_tests::cudart::*;
use baton_tests::*;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::ptr::{null, null_mut};

type Status = unsafe extern "C" fn() -> CUresult;

fn size_word(hex: &str) -> usize {
    let t = table(hex).unwrap();
    // SAFETY: a served sized table starts with its size word.
    unsafe { word(t, 0) as usize }
}

#[test]
fn tables_are_served_with_the_drivers_sizes() {
    assert_eq!(size_word(CUDART_INTERFACE), 13 * 8);
    assert_eq!(size_word(TOOLS_RUNTIME_CALLBACK_HOOKS), 7 * 8);
    assert_eq!(size_word(TOOLS_TLS), 3 * 8);
    assert_eq!(size_word(CONTEXT_CHECKS), 15 * 8);
    assert_eq!(size_word(INTEGRITY_CHECK), 3 * 8);
    assert_eq!(size_word(TOOLS_CONTEXT), 93 * 8);
    assert_eq!(size_word(TABLE_1734DC26), 17 * 8);
    assert_eq!(size_word(TOOLS_MODULE), 99 * 8);
    // Context-local storage has no size word: three functions, then null.
    let cls = table(CONTEXT_LOCAL_STORAGE).unwrap();
    // SAFETY: the table has at least four words.
    unsafe {
        for i in 0..3 {
            assert!(!word(cls, i).is_null());
        }
        assert!(word(cls, 3).is_null());
    }
    // The same table every time.
    assert_eq!(table(TOOLS_TLS).unwrap(), table(TOOLS_TLS).unwrap());
}

#[test]
fn refused_and_unknown_tables_are_invalid_value() {
    for hex in [
        STARTUP_PROBE,
        NVML,
        CUPY,
        "00112233445566778899aabbccddeeff",
    ] {
        assert_eq!(table(hex), Err(CUresult::CUDA_ERROR_INVALID_VALUE), "{hex}");
    }
    // SAFETY: null arguments are refused before use.
    unsafe {
        assert_eq!(
            cuGetExportTable(null_mut(), &uuid(TOOLS_TLS)),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        let mut t = null();
        assert_eq!(
            cuGetExportTable(&mut t, null()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
}

type ClsPut =
    unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void, Option<ClsDestructor>) -> CUresult;
type ClsDelete = unsafe extern "C" fn(CUcontext, *mut c_void) -> CUresult;
type ClsGet = unsafe extern "C" fn(*mut *mut c_void, CUcontext, *mut c_void) -> CUresult;
type ClsDestructor = unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void);

#[test]
fn context_local_storage_puts_gets_and_deletes() {
    init_thread();
    let t = table(CONTEXT_LOCAL_STORAGE).unwrap();
    // SAFETY: the slots' signatures, as the runtime calls them.
    let (put, delete, get): (ClsPut, ClsDelete, ClsGet) =
        unsafe { (slot(t, 0), slot(t, 1), slot(t, 2)) };
    static KEY: u8 = 0;
    let key = &KEY as *const u8 as *mut c_void;
    let mut ctx = null_mut();
    cu!(cuCtxGetCurrent(&mut ctx));
    let mut v = 0x77 as *mut c_void;
    // SAFETY: plain calls with locals as out-pointers.
    unsafe {
        assert_eq!(
            get(&mut v, null_mut(), key),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(
            v as usize, 0x77,
            "a failed get leaves the out-pointer alone"
        );
        assert_eq!(
            put(null_mut(), key, 0x1234 as _, None),
            CUresult::CUDA_SUCCESS
        );
        // A second put of the same key fails and keeps the first value, as the driver does.
        assert_eq!(
            put(null_mut(), key, 0x1235 as _, None),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(get(&mut v, null_mut(), key), CUresult::CUDA_SUCCESS);
        assert_eq!(v as usize, 0x1234);
        // The current context by name is the same slot.
        v = null_mut();
        assert_eq!(get(&mut v, ctx, key), CUresult::CUDA_SUCCESS);
        assert_eq!(v as usize, 0x1234);
        assert_eq!(delete(ctx, key), CUresult::CUDA_SUCCESS);
        assert_eq!(delete(ctx, key), CUresult::CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(
            get(&mut v, null_mut(), key),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
    }
    // Another context has its own values.
    let mut other = null_mut();
    cu!(cuCtxCreate_v2(&mut other, 0, 0));
    // SAFETY: as above.
    unsafe {
        assert_eq!(put(ctx, key, 0x1 as _, None), CUresult::CUDA_SUCCESS);
        assert_eq!(put(other, key, 0x2 as _, None), CUresult::CUDA_SUCCESS);
        assert_eq!(get(&mut v, other, key), CUresult::CUDA_SUCCESS);
        assert_eq!(v as usize, 0x2);
        // `other` is current now (cuCtxCreate pushes it).
        assert_eq!(get(&mut v, null_mut(), key), CUresult::CUDA_SUCCESS);
        assert_eq!(v as usize, 0x2);
        assert_eq!(get(&mut v, ctx, key), CUresult::CUDA_SUCCESS);
        assert_eq!(v as usize, 0x1);
        assert_eq!(delete(ctx, key), CUresult::CUDA_SUCCESS);
    }
    cu!(cuCtxDestroy_v2(other));
    // A thread with no current context: the null context is INVALID_CONTEXT.
    let key = key as usize;
    std::thread::spawn(move || {
        let key = key as *mut c_void;
        let mut v = null_mut();
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                get(&mut v, null_mut(), key),
                CUresult::CUDA_ERROR_INVALID_CONTEXT
            );
            assert_eq!(
                put(null_mut(), key, v, None),
                CUresult::CUDA_ERROR_INVALID_CONTEXT
            );
            assert_eq!(
                delete(null_mut(), key),
                CUresult::CUDA_ERROR_INVALID_CONTEXT
            );
        }
    })
    .join()
    .unwrap();
}

type ThreadContext = unsafe extern "C" fn(*mut CUcontext) -> CUresult;
type ContextId = unsafe extern "C" fn(CUcontext, *mut c_ulonglong) -> CUresult;

#[test]
fn tools_tables_name_the_current_context_and_its_id() {
    init_thread();
    // SAFETY: the slots' signatures.
    let (current, id_of): (ThreadContext, ContextId) = unsafe {
        (
            slot(table(TOOLS_TLS).unwrap(), 2),
            slot(table(TOOLS_CONTEXT).unwrap(), 4),
        )
    };
    let mut ctx = null_mut();
    cu!(cuCtxGetCurrent(&mut ctx));
    assert!(!ctx.is_null());
    let mut seen = 0x55 as CUcontext;
    let mut id = 0x55;
    let mut want = 0;
    cu!(cuCtxGetId(ctx, &mut want));
    // SAFETY: plain calls with locals as out-pointers.
    unsafe {
        assert_eq!(current(&mut seen), CUresult::CUDA_SUCCESS);
        assert_eq!(seen, ctx);
        assert_eq!(id_of(ctx, &mut id), CUresult::CUDA_SUCCESS);
        assert_eq!(id, want, "slot 4 is the context's cuCtxGetId");
        assert_ne!(id, 0);
        // Null is no context: 0, and still success.
        assert_eq!(id_of(null_mut(), &mut id), CUresult::CUDA_SUCCESS);
        assert_eq!(id, 0);
    }
    std::thread::spawn(move || {
        let mut seen = 0x55 as CUcontext;
        // SAFETY: as above.
        assert_eq!(unsafe { current(&mut seen) }, CUresult::CUDA_SUCCESS);
        assert!(seen.is_null(), "no current context on a fresh thread");
    })
    .join()
    .unwrap();
}

type IsWrapped = unsafe extern "C" fn(CUcontext, *mut c_uint, *mut CUcontext) -> CUresult;
type Flags = unsafe extern "C" fn() -> c_uint;

#[test]
fn context_checks_say_no_context_is_wrapped() {
    init_thread();
    let t = table(CONTEXT_CHECKS).unwrap();
    // SAFETY: the slots' signatures.
    let (wrapped, flags): (IsWrapped, Flags) = unsafe { (slot(t, 2), slot(t, 3)) };
    let mut ctx = null_mut();
    cu!(cuCtxGetCurrent(&mut ctx));
    let mut w = 0x55;
    let mut inner = 0x66 as CUcontext;
    // SAFETY: plain calls with locals as out-pointers.
    unsafe {
        assert_eq!(wrapped(ctx, &mut w, &mut inner), CUresult::CUDA_SUCCESS);
        assert_eq!((w, inner as usize), (0, 0x66));
        w = 0x55;
        assert_eq!(
            wrapped(null_mut(), &mut w, &mut inner),
            CUresult::CUDA_SUCCESS
        );
        assert_eq!(w, 0);
        assert_eq!(flags(), 0);
    }
    std::thread::spawn(move || {
        let mut w = 0x55;
        // SAFETY: as above.
        let r = unsafe { wrapped(null_mut(), &mut w, null_mut()) };
        assert_eq!(r, CUresult::CUDA_ERROR_INVALID_CONTEXT);
    })
    .join()
    .unwrap();
}

type PrimaryContext = unsafe extern "C" fn(*mut CUcontext, CUdevice) -> CUresult;
type ModuleFromWrapper = unsafe extern "C" fn(*mut CUmodule, *const c_void) -> CUresult;

/// `__fatBinC_Wrapper_t`: how the runtime hands over the fat binaries it registers.
#[repr(C)]
struct FatbinWrapper {
    magic: u32,
    version: u32,
    data: *const u8,
    filename: *const c_void,
}

#[test]
fn cudart_interface_gives_primary_contexts_and_loads_registered_modules() {
    init_thread();
    let t = table(CUDART_INTERFACE).unwrap();
    // SAFETY: the slots' signatures.
    let (primary, load): (PrimaryContext, ModuleFromWrapper) = unsafe { (slot(t, 2), slot(t, 1)) };
    let mut p = null_mut();
    let mut retained = null_mut();
    cu!(cuDevicePrimaryCtxRetain(&mut retained, 0));
    // SAFETY: plain calls with locals as out-pointers.
    unsafe {
        assert_eq!(primary(&mut p, 0), CUresult::CUDA_SUCCESS);
        assert_eq!(p, retained);
        assert_eq!(primary(&mut p, 7), CUresult::CUDA_ERROR_INVALID_DEVICE);
    }
    let wrapper = FatbinWrapper {
        magic: 0x4662_43b1,
        version: 1,
        data: SIM_IMAGE.as_ptr(),
        filename: null(),
    };
    let mut m = null_mut();
    // SAFETY: a wrapper around the simulator's image.
    let r = unsafe { load(&mut m, &wrapper as *const FatbinWrapper as *const c_void) };
    assert_eq!(r, CUresult::CUDA_SUCCESS);
    let mut f = null_mut();
    cu!(cuModuleGetFunction(&mut f, m, c"vecAdd".as_ptr()));
    cu!(cuModuleUnload(m));
    // A slot whose meaning is unknown fails instead of pretending.
    // SAFETY: the stubs take no arguments.
    let unknown: Status = unsafe { slot(t, 3) };
    // SAFETY: as above.
    assert_eq!(unsafe { unknown() }, CUresult::CUDA_ERROR_NOT_SUPPORTED);
}

type Buffer = unsafe extern "C" fn(*mut *mut c_void, *mut usize) -> *mut c_void;

#[test]
fn callback_hooks_hand_out_zeroed_buffers() {
    let t = table(TOOLS_RUNTIME_CALLBACK_HOOKS).unwrap();
    for (i, len) in [(2, 1024), (6, 14)] {
        // SAFETY: the slot's signature.
        let f: Buffer = unsafe { slot(t, i) };
        let (mut p, mut n) = (null_mut(), 0);
        // SAFETY: out-pointers to locals.
        unsafe { f(&mut p, &mut n) };
        assert_eq!(n, len);
        assert!(!p.is_null());
        // SAFETY: the buffer holds `n` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
        assert!(bytes.iter().all(|&b| b == 0), "no callbacks switched on");
        let mut again = null_mut();
        // SAFETY: as above.
        unsafe { f(&mut again, &mut n) };
        assert_eq!(again, p, "one buffer for the process");
    }
}

type Integrity = unsafe extern "C" fn(c_uint, u64, *mut [u64; 2]) -> CUresult;

#[test]
fn integrity_check_hashes_the_caller_and_the_time() {
    init_thread();
    // SAFETY: the slot's signature.
    let check: Integrity = unsafe { slot(table(INTEGRITY_CHECK).unwrap(), 1) };
    let run = move |version: c_uint, secs: u64| {
        let mut out = [0u64; 2];
        // SAFETY: an out-pointer to a local.
        let r = unsafe { check(version, secs, &mut out) };
        assert_eq!(r, CUresult::CUDA_SUCCESS);
        out
    };
    // Versions ending in 0 and 1 get constants.
    assert_eq!(run(10, 5), [0x3341_181c_03cb_675c, 0x8ed3_83aa_1f4c_d1e8]);
    assert_eq!(
        run(13001, 5),
        [0x1841_181c_03cb_675c, 0x8ed3_83aa_1f4c_d1e8]
    );
    // Others depend on the version, the time and the calling thread, and nothing else.
    let here = run(12, 1_800_000_000);
    assert_eq!(run(12, 1_800_000_000), here);
    assert_ne!(run(12, 1_800_000_001), here);
    assert_ne!(run(13, 1_800_000_000), here);
    let there = std::thread::spawn(move || run(12, 1_800_000_000))
        .join()
        .unwrap();
    assert_ne!(there, here);
    // SAFETY: a null out-pointer is refused before use.
    let r = unsafe { check(12, 0, null_mut()) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
}

#[test]
fn table_1734dc26_fails_its_slots() {
    let t = table(TABLE_1734DC26).unwrap();
    for i in [4, 13] {
        // SAFETY: the stubs take no arguments.
        let f: Status = unsafe { slot(t, i) };
        // SAFETY: as above.
        assert_eq!(unsafe { f() }, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
}

#[allow(non_snake_case)]
extern "C" {
    fn cuModuleGetFunctionCount(n: *mut c_uint, m: CUmodule) -> CUresult;
    fn cuFuncGetName(name: *mut *const c_char, f: CUfunction) -> CUresult;
    fn cuModuleEnumerateFunctions(f: *mut CUfunction, n: c_uint, m: CUmodule) -> CUresult;
    fn cuLibraryLoadData(
        l: *mut *mut c_void,
        code: *const c_void,
        jit_options: *mut c_void,
        jit_values: *mut *mut c_void,
        n_jit: c_uint,
        lib_options: *mut c_void,
        lib_values: *mut *mut c_void,
        n_lib: c_uint,
    ) -> CUresult;
    fn cuLibraryGetKernelCount(n: *mut c_uint, l: *mut c_void) -> CUresult;
    fn cuLibraryEnumerateKernels(k: *mut *mut c_void, n: c_uint, l: *mut c_void) -> CUresult;
    fn cuLibraryUnload(l: *mut c_void) -> CUresult;
}

type Visit = unsafe extern "C" fn(*mut c_void, CUfunction, *const c_char);
type ForEachFunction =
    unsafe extern "C" fn(CUcontext, CUmodule, Option<Visit>, *mut c_void) -> c_uint;

/// Records each visit in the `Vec` that `user` points to.
unsafe extern "C" fn record(user: *mut c_void, f: CUfunction, name: *const c_char) {
    // SAFETY: the test passes a `Vec<(CUfunction, String)>` as `user`, and names are C strings.
    unsafe {
        let seen = &mut *(user as *mut Vec<(CUfunction, String)>);
        seen.push((f, CStr::from_ptr(name).to_string_lossy().into_owned()));
    }
}

#[test]
fn tools_module_visits_every_function_of_a_module() {
    init_thread();
    let t = table(TOOLS_MODULE).unwrap();
    // SAFETY: slot 7's signature (docs/export-tables.md).
    let for_each: ForEachFunction = unsafe { slot(t, 7) };
    let mut m = null_mut();
    cu!(cuModuleLoadData(
        &mut m,
        SIM_IMAGE.as_ptr() as *const c_void
    ));
    let mut seen: Vec<(CUfunction, String)> = Vec::new();
    let user = &mut seen as *mut Vec<(CUfunction, String)> as *mut c_void;
    // SAFETY: a live module, our callback and its `Vec`; the context is ignored.
    let n = unsafe { for_each(null_mut(), m, Some(record), user) };
    assert_eq!(n, 4);
    let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["vecAdd", "fill", "empty", "fault"]);
    for (f, name) in &seen {
        let mut g = null_mut();
        let c = std::ffi::CString::new(name.as_str()).unwrap();
        cu!(cuModuleGetFunction(&mut g, m, c.as_ptr()));
        assert_eq!(*f, g, "{name}: the handle cuModuleGetFunction gives");
        // The function's own name, at an address that stays the same.
        let (mut p, mut q) = (null(), null());
        cu!(cuFuncGetName(&mut p, *f));
        cu!(cuFuncGetName(&mut q, *f));
        assert_eq!(p, q);
        // SAFETY: the shim hands out a NUL-terminated name that lives as long as the function.
        assert_eq!(unsafe { CStr::from_ptr(p) }.to_str(), Ok(name.as_str()));
    }
    // Without a callback it only counts; the public API agrees.
    // SAFETY: as above.
    assert_eq!(unsafe { for_each(null_mut(), m, None, null_mut()) }, 4);
    let mut count = 0;
    cu!(cuModuleGetFunctionCount(&mut count, m));
    assert_eq!(count, 4);
    let mut fs = [null_mut(); 4];
    cu!(cuModuleEnumerateFunctions(fs.as_mut_ptr(), 4, m));
    assert_eq!(
        fs.to_vec(),
        seen.iter().map(|(f, _)| *f).collect::<Vec<_>>()
    );
    // A library is not a module here (the driver answers 0 too); its own API lists it.
    let mut l = null_mut();
    // SAFETY: the simulator's image, no options.
    cu!(unsafe {
        cuLibraryLoadData(
            &mut l,
            SIM_IMAGE.as_ptr() as *const c_void,
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            null_mut(),
            0,
        )
    });
    assert_eq!(
        // SAFETY: a live library handle, our callback and its `Vec`.
        unsafe { for_each(null_mut(), l as CUmodule, Some(record), user) },
        0
    );
    cu!(cuLibraryGetKernelCount(&mut count, l));
    assert_eq!(count, 4);
    let mut ks = [null_mut(); 2];
    cu!(cuLibraryEnumerateKernels(ks.as_mut_ptr(), 2, l));
    assert!(ks.iter().all(|k| !k.is_null()));
    assert_eq!(
        // SAFETY: a live library handle where a module is expected, and a local out-pointer.
        unsafe { cuModuleGetFunctionCount(&mut count, l as CUmodule) },
        CUresult::CUDA_ERROR_INVALID_HANDLE
    );
    cu!(cuLibraryUnload(l));
    // Null, foreign and unloaded handles visit nothing.
    cu!(cuModuleUnload(m));
    let mut x = 0u64;
    // SAFETY: handles the shim checks before use.
    unsafe {
        assert_eq!(for_each(null_mut(), null_mut(), Some(record), user), 0);
        assert_eq!(
            for_each(
                null_mut(),
                &mut x as *mut u64 as CUmodule,
                Some(record),
                user
            ),
            0
        );
        assert_eq!(for_each(null_mut(), m, Some(record), user), 0);
    }
    assert_eq!(seen.len(), 4);
}

// ---- The real CUDA runtime on top of the shim ----------------------------------------------

/// Runs the real `libcudart.so.13` named by `BATON_CUDART` (skipped when unset) in a child
/// process whose driver is the shim (`LD_PRELOAD`ed, so the runtime's `dlopen("libcuda.so.1")`
/// finds it by SONAME), against the in-process daemon on the simulated executor.
#[test]
fn real_cudart_runs_on_baton() {
    let Some(cudart) = std::env::var_os("BATON_CUDART") else {
        eprintln!(
            "skipped: set BATON_CUDART to a libcudart.so.13 to run the CUDA runtime on Baton"
        );
        return;
    };
    let shim = workspace_lib("libcuda.so");
    let socket = in_process_daemon();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cudart_client",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BATON_CUDART", &cudart)
        .env(baton_ipc::control::SOCKET_ENV, &socket)
        .env("LD_PRELOAD", &shim)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the CUDA runtime client failed:\n{text}"
    );
    assert!(text.contains("cudart client done"), "{text}");
}

/// The shim's cdylib, built next to the test binaries' folder.
fn workspace_lib(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build -p baton-shim` first",
        p.display()
    );
    p
}

type CudaInt = unsafe extern "C" fn(*mut c_int) -> c_int;
type CudaSetDevice = unsafe extern "C" fn(c_int) -> c_int;
type CudaMalloc = unsafe extern "C" fn(*mut *mut c_void, usize) -> c_int;
type CudaFree = unsafe extern "C" fn(*mut c_void) -> c_int;
type CudaMemcpy = unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> c_int;
type CudaMemset = unsafe extern "C" fn(*mut c_void, c_int, usize) -> c_int;
type CudaStreamCreate = unsafe extern "C" fn(*mut *mut c_void) -> c_int;
type CudaStream = unsafe extern "C" fn(*mut c_void) -> c_int;
type CudaMemcpyAsync =
    unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int, *mut c_void) -> c_int;
type CudaEventRecord = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type CudaElapsed = unsafe extern "C" fn(*mut f32, *mut c_void, *mut c_void) -> c_int;
type CudaVoid = unsafe extern "C" fn() -> c_int;

const HOST_TO_DEVICE: c_int = 1;
const DEVICE_TO_HOST: c_int = 2;

/// The child of [`real_cudart_runs_on_baton`]: the runtime API, checked result by result.
#[test]
#[ignore = "run by real_cudart_runs_on_baton in a child process"]
fn cudart_client() {
    let path = std::env::var("BATON_CUDART").unwrap();
    let rt = Cudart::open(&path).unwrap();
    // SAFETY: each name with its C signature from cuda_runtime_api.h.
    unsafe {
        let mut version = 0;
        rt.check(
            rt.get::<CudaInt>("cudaRuntimeGetVersion")(&mut version),
            "cudaRuntimeGetVersion",
        );
        let mut driver = 0;
        rt.check(
            rt.get::<CudaInt>("cudaDriverGetVersion")(&mut driver),
            "cudaDriverGetVersion",
        );
        println!("runtime {version}, driver {driver}");
        let mut n = 0;
        rt.check(
            rt.get::<CudaInt>("cudaGetDeviceCount")(&mut n),
            "cudaGetDeviceCount",
        );
        assert_eq!(n, 1);
        rt.check(rt.get::<CudaSetDevice>("cudaSetDevice")(0), "cudaSetDevice");

        let malloc: CudaMalloc = rt.get("cudaMalloc");
        let free: CudaFree = rt.get("cudaFree");
        let memcpy: CudaMemcpy = rt.get("cudaMemcpy");
        let memset: CudaMemset = rt.get("cudaMemset");
        let len = 1 << 20;
        let (mut a, mut b) = (null_mut(), null_mut());
        rt.check(malloc(&mut a, len), "cudaMalloc");
        rt.check(malloc(&mut b, len), "cudaMalloc");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        rt.check(
            memcpy(a, data.as_ptr() as _, len, HOST_TO_DEVICE),
            "cudaMemcpy HtoD",
        );
        let mut back = vec![0u8; len];
        rt.check(
            memcpy(back.as_mut_ptr() as _, a, len, DEVICE_TO_HOST),
            "cudaMemcpy DtoH",
        );
        assert!(back == data, "round trip through device memory");
        rt.check(memset(b, 0x5a, len), "cudaMemset");
        rt.check(
            memcpy(back.as_mut_ptr() as _, b, len, DEVICE_TO_HOST),
            "cudaMemcpy DtoH",
        );
        assert!(back.iter().all(|&x| x == 0x5a), "memset");

        let mut stream = null_mut();
        rt.check(
            rt.get::<CudaStreamCreate>("cudaStreamCreate")(&mut stream),
            "cudaStreamCreate",
        );
        let event_create: CudaStreamCreate = rt.get("cudaEventCreate");
        let (mut start, mut stop) = (null_mut(), null_mut());
        rt.check(event_create(&mut start), "cudaEventCreate");
        rt.check(event_create(&mut stop), "cudaEventCreate");
        let record: CudaEventRecord = rt.get("cudaEventRecord");
        rt.check(record(start, stream), "cudaEventRecord");
        let copy_async: CudaMemcpyAsync = rt.get("cudaMemcpyAsync");
        rt.check(
            copy_async(b, data.as_ptr() as _, len, HOST_TO_DEVICE, stream),
            "cudaMemcpyAsync",
        );
        rt.check(record(stop, stream), "cudaEventRecord");
        rt.check(
            rt.get::<CudaStream>("cudaEventSynchronize")(stop),
            "cudaEventSynchronize",
        );
        let mut ms = -1.0f32;
        rt.check(
            rt.get::<CudaElapsed>("cudaEventElapsedTime")(&mut ms, start, stop),
            "cudaEventElapsedTime",
        );
        assert!(ms >= 0.0, "elapsed {ms}");
        rt.check(
            rt.get::<CudaStream>("cudaStreamSynchronize")(stream),
            "cudaStreamSynchronize",
        );
        rt.check(
            memcpy(back.as_mut_ptr() as _, b, len, DEVICE_TO_HOST),
            "cudaMemcpy DtoH",
        );
        assert!(back == data, "async copy");
        rt.check(
            rt.get::<CudaStream>("cudaEventDestroy")(start),
            "cudaEventDestroy",
        );
        rt.check(
            rt.get::<CudaStream>("cudaEventDestroy")(stop),
            "cudaEventDestroy",
        );
        rt.check(
            rt.get::<CudaStream>("cudaStreamDestroy")(stream),
            "cudaStreamDestroy",
        );
        rt.check(free(a), "cudaFree");
        rt.check(free(b), "cudaFree");
        rt.check(
            rt.get::<CudaVoid>("cudaDeviceSynchronize")(),
            "cudaDeviceSynchronize",
        );
        rt.check(rt.get::<CudaVoid>("cudaGetLastError")(), "cudaGetLastError");
    }
    println!("cudart client done");
}
