//! JIT linking through the shim, as NVIDIA's `ptxjit` sample does it, on the simulated executor.

use baton_tests::*;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::ptr::null_mut;

#[allow(non_snake_case)]
extern "C" {
    fn cuLinkCreate_v2(
        n: c_uint,
        options: *mut CUjit_option,
        values: *mut *mut c_void,
        state: *mut CUlinkState,
    ) -> CUresult;
    fn cuLinkAddData_v2(
        state: CUlinkState,
        kind: CUjitInputType,
        data: *mut c_void,
        size: usize,
        name: *const c_char,
        n: c_uint,
        options: *mut CUjit_option,
        values: *mut *mut c_void,
    ) -> CUresult;
    fn cuLinkAddFile_v2(
        state: CUlinkState,
        kind: CUjitInputType,
        path: *const c_char,
        n: c_uint,
        options: *mut CUjit_option,
        values: *mut *mut c_void,
    ) -> CUresult;
    fn cuLinkComplete(state: CUlinkState, out: *mut *mut c_void, size: *mut usize) -> CUresult;
    fn cuLinkDestroy(state: CUlinkState) -> CUresult;
}

const LOG: usize = 1024;

struct Logs {
    info: Vec<u8>,
    error: Vec<u8>,
    options: [CUjit_option; 6],
    values: [*mut c_void; 6],
}

impl Logs {
    /// The options `ptxjit` passes: wall time, both logs and their sizes, verbose.
    fn new() -> Box<Logs> {
        let mut l = Box::new(Logs {
            info: vec![0xaa; LOG],
            error: vec![0xaa; LOG],
            options: [
                CUjit_option::CU_JIT_WALL_TIME,
                CUjit_option::CU_JIT_INFO_LOG_BUFFER,
                CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
                CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                CUjit_option::CU_JIT_LOG_VERBOSE,
            ],
            values: [null_mut(); 6],
        });
        l.values = [
            null_mut(),
            l.info.as_mut_ptr() as *mut c_void,
            LOG as *mut c_void,
            l.error.as_mut_ptr() as *mut c_void,
            LOG as *mut c_void,
            std::ptr::dangling_mut(), // CU_JIT_LOG_VERBOSE = 1
        ];
        l
    }
    fn create(&mut self) -> CUlinkState {
        let mut state = null_mut();
        cu!(cuLinkCreate_v2(
            6,
            self.options.as_mut_ptr(),
            self.values.as_mut_ptr(),
            &mut state
        ));
        state
    }
    fn text(buf: &[u8]) -> &str {
        CStr::from_bytes_until_nul(buf).unwrap().to_str().unwrap()
    }
}

#[test]
fn ptxjit_style_link_loads_and_fills_logs() {
    init_thread();
    let mut logs = Logs::new();
    let state = logs.create();
    let mut first = b"//baton-sim\nkernel fill 8 4 4\n\0".to_vec();
    cu!(cuLinkAddData_v2(
        state,
        CUjitInputType::CU_JIT_INPUT_PTX,
        first.as_mut_ptr() as *mut c_void,
        first.len(),
        c"first.ptx".as_ptr(),
        0,
        null_mut(),
        null_mut()
    ));
    let dir = std::env::temp_dir().join(format!("baton-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("second.ptx");
    std::fs::write(&file, b"//baton-sim\nkernel second 8\n").unwrap();
    let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // Per-input scalar options travel with the input.
    let mut opt = [CUjit_option::CU_JIT_MAX_REGISTERS];
    let mut val = [32 as *mut c_void];
    cu!(cuLinkAddFile_v2(
        state,
        CUjitInputType::CU_JIT_INPUT_PTX,
        path.as_ptr(),
        1,
        opt.as_mut_ptr(),
        val.as_mut_ptr()
    ));
    let (mut cubin, mut size) = (null_mut(), 0usize);
    cu!(cuLinkComplete(state, &mut cubin, &mut size));
    // SAFETY: the shim keeps the image alive until cuLinkDestroy.
    let image = unsafe { std::slice::from_raw_parts(cubin as *const u8, size) };
    assert_eq!(
        image,
        b"//baton-sim\nkernel fill 8 4 4\nkernel second 8\n\0"
    );
    // The driver's conventions: log sizes become the bytes written (NUL included), the wall
    // time is a float in the option's value slot.
    assert_eq!(Logs::text(&logs.info), "sim: linked 2 inputs");
    assert_eq!(logs.values[2] as usize, "sim: linked 2 inputs".len() + 1);
    assert_eq!(Logs::text(&logs.error), "");
    assert_eq!(logs.values[4] as usize, 1);
    assert_eq!(f32::from_bits(logs.values[0] as usize as u32), 0.5);
    let mut m = null_mut();
    cu!(cuModuleLoadData(&mut m, cubin));
    let mut f = null_mut();
    cu!(cuModuleGetFunction(&mut f, m, c"second".as_ptr()));
    cu!(cuLinkDestroy(state));
    assert_eq!(
        // SAFETY: a destroyed handle is refused, not dereferenced.
        unsafe { cuLinkDestroy(state) },
        CUresult::CUDA_ERROR_INVALID_HANDLE
    );
    cu!(cuModuleUnload(m));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn link_errors_fill_the_error_log_and_pointer_options_are_refused() {
    init_thread();
    let mut logs = Logs::new();
    let state = logs.create();
    let mut bad = b"not a module\0".to_vec();
    cu!(cuLinkAddData_v2(
        state,
        CUjitInputType::CU_JIT_INPUT_PTX,
        bad.as_mut_ptr() as *mut c_void,
        bad.len(),
        null_mut(),
        0,
        null_mut(),
        null_mut()
    ));
    // A per-input option whose value points into the program is refused.
    let mut opt = [CUjit_option::CU_JIT_GLOBAL_SYMBOL_NAMES];
    let mut val = [bad.as_mut_ptr() as *mut c_void];
    assert_eq!(
        // SAFETY: valid arrays of one entry; the data pointer spans its length.
        unsafe {
            cuLinkAddData_v2(
                state,
                CUjitInputType::CU_JIT_INPUT_PTX,
                bad.as_mut_ptr() as *mut c_void,
                bad.len(),
                null_mut(),
                1,
                opt.as_mut_ptr(),
                val.as_mut_ptr(),
            )
        },
        CUresult::CUDA_ERROR_NOT_SUPPORTED
    );
    let (mut cubin, mut size) = (null_mut(), 0usize);
    assert_ne!(
        // SAFETY: out-pointers to locals.
        unsafe { cuLinkComplete(state, &mut cubin, &mut size) },
        CUresult::CUDA_SUCCESS
    );
    assert_eq!(
        Logs::text(&logs.error),
        "sim: input 0 is not a simulator image"
    );
    cu!(cuLinkDestroy(state));
    // A link's own pointer-valued options are refused at creation.
    let mut opt = [CUjit_option::CU_JIT_GLOBAL_SYMBOL_ADDRESSES];
    let mut val = [null_mut()];
    let mut state = null_mut();
    assert_eq!(
        // SAFETY: arrays of one entry and an out-pointer to a local.
        unsafe { cuLinkCreate_v2(1, opt.as_mut_ptr(), val.as_mut_ptr(), &mut state) },
        CUresult::CUDA_ERROR_NOT_SUPPORTED
    );
}
