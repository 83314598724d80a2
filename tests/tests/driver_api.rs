//! The driver API through the shim, the ring and the daemon, on the simulated executor.

use baton_tests::*;
use std::ffi::{c_void, CStr};
use std::ptr::null_mut;

#[test]
fn device_queries_are_answered() {
    init_thread();
    let mut n = 0;
    cu!(cuDeviceGetCount(&mut n));
    assert_eq!(n, 1);
    let mut name = [0 as std::ffi::c_char; 64];
    cu!(cuDeviceGetName(name.as_mut_ptr(), 64, 0));
    // SAFETY: NUL-terminated by the shim.
    assert_eq!(
        // SAFETY: NUL-terminated by the shim.
        unsafe { CStr::from_ptr(name.as_ptr()) }.to_str().unwrap(),
        "Baton Simulated GPU"
    );
    let mut warp = 0;
    cu!(cuDeviceGetAttribute(
        &mut warp,
        CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE,
        0
    ));
    assert_eq!(warp, 32);
    let mut v = 0;
    cu!(cuDriverGetVersion(&mut v));
    assert_eq!(v, 13000);
    let mut d = 0;
    // SAFETY: plain call with an out-pointer.
    assert_eq!(
        // SAFETY: plain call with an out-pointer.
        unsafe { cuDeviceGet(&mut d, 7) },
        CUresult::CUDA_ERROR_INVALID_DEVICE
    );
    let mut s = std::ptr::null();
    cu!(cuGetErrorString(CUresult::CUDA_ERROR_OUT_OF_MEMORY, &mut s));
    // SAFETY: static string from the shim.
    assert_eq!(unsafe { CStr::from_ptr(s) }, c"out of memory");
    cu!(cuGetErrorName(CUresult::CUDA_ERROR_INVALID_VALUE, &mut s));
    // SAFETY: static string from the shim.
    assert_eq!(unsafe { CStr::from_ptr(s) }, c"CUDA_ERROR_INVALID_VALUE");
}

#[test]
fn unimplemented_entry_points_say_not_supported() {
    init_thread();
    let mut n = null_mut();
    assert_eq!(
        // SAFETY: out-pointer to a local; the other arguments are never read.
        unsafe { cuGraphAddEventRecordNode(&mut n, null_mut(), std::ptr::null(), 0, null_mut()) },
        CUresult::CUDA_ERROR_NOT_SUPPORTED
    );
}

#[allow(non_snake_case)]
extern "C" {
    fn cuGraphAddEventRecordNode(
        n: *mut CUgraphNode,
        g: CUgraph,
        deps: *const CUgraphNode,
        ndeps: usize,
        e: CUevent,
    ) -> CUresult;
}

#[test]
fn vec_add_with_pageable_copies_larger_than_the_staging_area() {
    init_thread();
    let (m, add, _, _) = load_kernels();
    // 6 Mi floats = 24 MiB per buffer: more than the 4 x 4 MiB staging chunks.
    let n = 6 << 20;
    let (x, y) = (floats(n, 1), floats(n, 2));
    let [a, b, c] = [0; 3].map(|_| {
        let mut p = 0;
        cu!(cuMemAlloc_v2(&mut p, n * 4));
        p
    });
    cu!(cuMemcpyHtoD_v2(a, x.as_ptr() as *const c_void, n * 4));
    cu!(cuMemcpyHtoD_v2(b, y.as_ptr() as *const c_void, n * 4));
    cu!(launch_vec_add(add, a, b, c, n as i32, null_mut()));
    let mut out = vec![f32::NAN; n];
    cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, c, n * 4));
    for i in 0..n {
        assert_eq!(out[i], x[i] + y[i], "element {i}");
    }
    let (mut base, mut size) = (0, 0);
    cu!(cuMemGetAddressRange_v2(&mut base, &mut size, c + 100));
    assert_eq!((base, size), (c, n * 4));
    for p in [a, b, c] {
        cu!(cuMemFree_v2(p));
    }
    // SAFETY: plain call.
    assert_eq!(
        // SAFETY: plain call.
        unsafe { cuMemFree_v2(a) },
        CUresult::CUDA_ERROR_INVALID_VALUE,
        "double free is refused"
    );
    cu!(cuModuleUnload(m));
}

#[test]
fn launch_errors_surface_at_the_next_synchronisation() {
    init_thread();
    let mut m = null_mut();
    cu!(cuModuleLoadData(
        &mut m,
        SIM_IMAGE.as_ptr() as *const c_void
    ));
    let mut fault = null_mut();
    cu!(cuModuleGetFunction(&mut fault, m, c"fault".as_ptr()));
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    cu!(cuLaunchKernel(
        fault,
        1,
        1,
        1,
        1,
        1,
        1,
        0,
        s,
        null_mut(),
        null_mut()
    ));
    // SAFETY: valid stream.
    assert_eq!(
        // SAFETY: valid stream.
        unsafe { cuStreamSynchronize(s) },
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS
    );
    // Invalid geometry is refused at once, without a round trip.
    // SAFETY: valid function, no parameters.
    assert_eq!(
        // SAFETY: valid function, no parameters.
        unsafe { cuLaunchKernel(fault, 0, 1, 1, 1, 1, 1, 0, s, null_mut(), null_mut()) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    cu!(cuStreamDestroy_v2(s));
    let mut missing = null_mut();
    // SAFETY: valid module, NUL-terminated name.
    assert_eq!(
        // SAFETY: valid module, NUL-terminated name.
        unsafe { cuModuleGetFunction(&mut missing, m, c"nope".as_ptr()) },
        CUresult::CUDA_ERROR_NOT_FOUND
    );
}

#[test]
fn eight_threads_launch_at_once() {
    init_thread();
    let (_m, add, _, _) = load_kernels();
    let add = add as usize;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                init_thread();
                let n = 1000 + t * 17;
                let mut s = null_mut();
                cu!(cuStreamCreate(&mut s, 1));
                let (x, y) = (floats(n, 10 + t as u32), floats(n, 20 + t as u32));
                let [a, b, c] = [0; 3].map(|_| {
                    let mut p = 0;
                    cu!(cuMemAlloc_v2(&mut p, n * 4));
                    p
                });
                cu!(cuMemcpyHtoD_v2(a, x.as_ptr() as *const c_void, n * 4));
                cu!(cuMemcpyHtoD_v2(b, y.as_ptr() as *const c_void, n * 4));
                for _ in 0..500 {
                    cu!(launch_vec_add(add as CUfunction, a, b, c, n as i32, s));
                }
                cu!(cuStreamSynchronize(s));
                let mut out = vec![0f32; n];
                cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, c, n * 4));
                assert!(out
                    .iter()
                    .zip(x.iter().zip(&y))
                    .all(|(o, (a, b))| *o == a + b));
                cu!(cuStreamDestroy_v2(s));
                for p in [a, b, c] {
                    cu!(cuMemFree_v2(p));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn launch_ex_and_extra_params() {
    init_thread();
    let (_m, _, fill, _) = load_kernels();
    let n = 300usize;
    let mut d = 0;
    cu!(cuMemAlloc_v2(&mut d, n * 4));
    // The `extra` form: a packed buffer laid out as the function's parameters.
    let mut buf = [0u8; 16];
    buf[0..8].copy_from_slice(&d.to_le_bytes());
    buf[8..12].copy_from_slice(&7u32.to_le_bytes());
    buf[12..16].copy_from_slice(&(n as i32).to_le_bytes());
    let mut size = buf.len();
    let mut extra = [
        std::ptr::without_provenance_mut::<c_void>(1),
        buf.as_mut_ptr() as *mut c_void,
        std::ptr::without_provenance_mut::<c_void>(2),
        &mut size as *mut usize as *mut c_void,
        null_mut(),
    ];
    let cfg = CUlaunchConfig {
        gridDimX: 2,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 256,
        blockDimY: 1,
        blockDimZ: 1,
        ..Default::default()
    };
    cu!(cuLaunchKernelEx(&cfg, fill, null_mut(), extra.as_mut_ptr()));
    let mut out = vec![0u32; n];
    cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, d, n * 4));
    assert!(out.iter().all(|&w| w == 7));
    cu!(cuMemFree_v2(d));
}

#[test]
fn queries_after_synchronisation_report_idle_at_once() {
    init_thread();
    let (_m, _, _, empty) = load_kernels();
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    let mut e = null_mut();
    cu!(cuEventCreate(&mut e, 0));
    cu!(cuLaunchKernel(
        empty,
        1,
        1,
        1,
        32,
        1,
        1,
        0,
        s,
        null_mut(),
        null_mut()
    ));
    cu!(cuStreamSynchronize(s));
    cu!(cuStreamQuery(s));
    cu!(cuLaunchKernel(
        empty,
        1,
        1,
        1,
        32,
        1,
        1,
        0,
        s,
        null_mut(),
        null_mut()
    ));
    cu!(cuEventRecord(e, s));
    cu!(cuEventSynchronize(e));
    cu!(cuEventQuery(e));
    cu!(cuLaunchKernel(
        empty,
        1,
        1,
        1,
        32,
        1,
        1,
        0,
        s,
        null_mut(),
        null_mut()
    ));
    cu!(cuCtxSynchronize());
    cu!(cuStreamQuery(s));
    cu!(cuStreamDestroy_v2(s));
    cu!(cuEventDestroy_v2(e));
}

unsafe extern "C" fn bump(data: *mut c_void) {
    // SAFETY: the test passes a pointer to a live AtomicU32.
    let n = unsafe { &*(data as *const std::sync::atomic::AtomicU32) };
    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn host_functions_run_in_stream_order() {
    init_thread();
    let (_m, _, _, empty) = load_kernels();
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    let count = Box::leak(Box::new(std::sync::atomic::AtomicU32::new(0)));
    for _ in 0..10 {
        cu!(cuLaunchKernel(
            empty,
            1,
            1,
            1,
            32,
            1,
            1,
            0,
            s,
            null_mut(),
            null_mut()
        ));
        cu!(cuLaunchHostFunc(
            s,
            Some(bump),
            count as *const _ as *mut c_void
        ));
    }
    cu!(cuStreamSynchronize(s));
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 10);
    cu!(cuStreamDestroy_v2(s));
}

#[test]
fn limits_pointer_attributes_and_proc_addresses() {
    init_thread();
    cu!(cuCtxSetLimit(CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE, 1 << 24));
    let mut v = 0;
    cu!(cuCtxGetLimit(&mut v, CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE));
    assert_eq!(v, 1 << 24);
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, 4096));
    let mut ty = CUmemorytype(0);
    cu!(cuPointerGetAttribute(
        &mut ty as *mut _ as *mut c_void,
        CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
        p + 10
    ));
    assert_eq!(ty, CUmemorytype::CU_MEMORYTYPE_DEVICE);
    let mut start = 0u64;
    cu!(cuPointerGetAttribute(
        &mut start as *mut _ as *mut c_void,
        CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
        p + 10
    ));
    assert_eq!(start, p);
    cu!(cuMemFree_v2(p));
    let mut d = -1;
    cu!(cuCtxGetDevice_v2(&mut d, null_mut()));
    assert_eq!(d, 0);
    let mut f = null_mut();
    let mut st = CUdriverProcAddressQueryResult(7);
    cu!(cuGetProcAddress_v2(
        c"cuCtxGetDevice".as_ptr(),
        &mut f,
        13000,
        0,
        &mut st
    ));
    assert_eq!(st.0, 0);
    assert_eq!(
        f as usize, cuCtxGetDevice_v2 as *const () as usize,
        "13.0 asks for the _v2 variant"
    );
}

unsafe extern "C" fn stream_cb(_s: CUstream, status: CUresult, data: *mut c_void) {
    assert_eq!(status, CUresult::CUDA_SUCCESS);
    // SAFETY: the test passes a pointer to a live AtomicU32.
    unsafe { bump(data) };
}

#[test]
fn pitched_copies_async_allocations_callbacks_and_registered_memory() {
    init_thread();
    // A pitched allocation, filled from pageable rows and read back into another layout.
    let (w, h) = (100usize, 37usize);
    let (mut d, mut pitch) = (0, 0);
    cu!(cuMemAllocPitch_v2(&mut d, &mut pitch, w, h, 4));
    assert!(pitch >= w && pitch % 4 == 0);
    let src: Vec<u8> = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
    let mut cp = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: src.as_ptr() as *const c_void,
        srcPitch: w,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: d,
        dstPitch: pitch,
        WidthInBytes: w,
        Height: h,
        ..Default::default()
    };
    cu!(cuMemcpy2D_v2(&cp));
    // Device to device, shifting by one row, then back to a wider host layout.
    let (mut d2, mut pitch2) = (0, 0);
    cu!(cuMemAllocPitch_v2(&mut d2, &mut pitch2, w, h, 4));
    cp = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: d,
        srcPitch: pitch,
        srcY: 1,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: d2,
        dstPitch: pitch2,
        WidthInBytes: w,
        Height: h - 1,
        ..Default::default()
    };
    cu!(cuMemcpy2D_v2(&cp));
    let mut back = vec![0u8; (w + 5) * h];
    cp = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: d2,
        srcPitch: pitch2,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        dstHost: back.as_mut_ptr() as *mut c_void,
        dstPitch: w + 5,
        WidthInBytes: w,
        Height: h - 1,
        ..Default::default()
    };
    cu!(cuMemcpy2D_v2(&cp));
    for r in 0..h - 1 {
        assert_eq!(
            &back[r * (w + 5)..r * (w + 5) + w],
            &src[(r + 1) * w..(r + 2) * w],
            "row {r}"
        );
    }
    cu!(cuMemFree_v2(d));
    cu!(cuMemFree_v2(d2));

    // Stream-ordered allocation.
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    let mut a = 0;
    cu!(cuMemAllocAsync(&mut a, 4096, s));
    cu!(cuMemsetD8Async(a, 9, 4096, s));
    let mut bytes = [0u8; 16];
    cu!(cuStreamSynchronize(s));
    cu!(cuMemcpyDtoH_v2(bytes.as_mut_ptr() as *mut c_void, a, 16));
    assert_eq!(bytes, [9u8; 16]);
    cu!(cuMemFreeAsync(a, s));
    // SAFETY: plain call; the pointer was already freed, which the shim must refuse.
    let twice = unsafe { cuMemFreeAsync(a, s) };
    assert_eq!(twice, CUresult::CUDA_ERROR_INVALID_VALUE);
    // Freeing null is a no-op.
    cu!(cuMemFreeAsync(0, s));

    // The default pool: attributes read back, allocations from it.
    let mut pool = null_mut();
    cu!(cuDeviceGetDefaultMemPool(&mut pool, 0));
    let mut threshold = u64::MAX;
    let attr = CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
    cu!(cuMemPoolSetAttribute(
        pool,
        attr,
        &mut threshold as *mut u64 as *mut c_void
    ));
    let mut back = 0u64;
    cu!(cuMemPoolGetAttribute(
        pool,
        attr,
        &mut back as *mut u64 as *mut c_void
    ));
    assert_eq!(back, u64::MAX);
    let mut b = 0;
    cu!(cuMemAllocFromPoolAsync(&mut b, 4096, pool, s));
    cu!(cuMemsetD8Async(b, 3, 4096, s));
    cu!(cuMemcpyDtoH_v2(bytes.as_mut_ptr() as *mut c_void, b, 16));
    assert_eq!(bytes, [3u8; 16]);
    cu!(cuMemFreeAsync(b, s));
    // SAFETY: plain call with a handle that is no pool.
    let bad = unsafe { cuMemPoolTrimTo(0x1234 as CUmemoryPool, 0) };
    assert_eq!(bad, CUresult::CUDA_ERROR_INVALID_VALUE);

    // Stream callbacks.
    let count = Box::leak(Box::new(std::sync::atomic::AtomicU32::new(0)));
    cu!(cuStreamAddCallback(
        s,
        Some(stream_cb),
        count as *const _ as *mut c_void,
        0
    ));
    cu!(cuStreamSynchronize(s));
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    cu!(cuStreamDestroy_v2(s));

    // Registered memory works for copies.
    let mut page = vec![3u8; 8192];
    cu!(cuMemHostRegister_v2(
        page.as_mut_ptr() as *mut c_void,
        page.len(),
        0
    ));
    // SAFETY: the range is live memory of this test; registering it twice must be refused.
    let again = unsafe { cuMemHostRegister_v2(page.as_mut_ptr() as *mut c_void, 10, 0) };
    assert_eq!(again, CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
    let mut dd = 0;
    cu!(cuMemAlloc_v2(&mut dd, 8192));
    cu!(cuMemcpyHtoD_v2(dd, page.as_ptr() as *const c_void, 8192));
    let mut check = vec![0u8; 8192];
    cu!(cuMemcpyDtoH_v2(check.as_mut_ptr() as *mut c_void, dd, 8192));
    assert_eq!(check, page);
    cu!(cuMemHostUnregister(page.as_mut_ptr() as *mut c_void));
    cu!(cuMemFree_v2(dd));
}

#[test]
fn no_stream_is_ever_capturing() {
    init_thread();
    let mut st = CUstreamCaptureStatus(9);
    cu!(cuStreamIsCapturing(null_mut(), &mut st));
    assert_eq!(st, CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE);
    st = CUstreamCaptureStatus(9);
    let mut id = 5u64;
    cu!(cuStreamGetCaptureInfo_v2(
        null_mut(),
        &mut st,
        &mut id,
        null_mut(),
        null_mut(),
        null_mut()
    ));
    assert_eq!(
        (st, id),
        (CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE, 0)
    );
}
