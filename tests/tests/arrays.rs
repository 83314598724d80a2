//! Arrays, box copies, texture and surface objects through the shim, the ring and the daemon,
//! on the simulated executor (whose `texRead` and `surfWrite` kernels go through the objects).

use baton_tests::*;
use std::ffi::{c_uint, c_void};
use std::ptr::null_mut;

extern "C" {
    fn cuArrayCreate_v2(h: *mut CUarray, d: *const CUDA_ARRAY_DESCRIPTOR) -> CUresult;
    fn cuArray3DCreate_v2(h: *mut CUarray, d: *const CUDA_ARRAY3D_DESCRIPTOR) -> CUresult;
    fn cuArrayDestroy(h: CUarray) -> CUresult;
    fn cuArray3DGetDescriptor_v2(d: *mut CUDA_ARRAY3D_DESCRIPTOR, h: CUarray) -> CUresult;
    fn cuMemcpy3D_v2(p: *const CUDA_MEMCPY3D) -> CUresult;
    fn cuMemcpy3DAsync_v2(p: *const CUDA_MEMCPY3D, s: CUstream) -> CUresult;
    fn cuMemcpyHtoA_v2(a: CUarray, off: usize, src: *const c_void, n: usize) -> CUresult;
    fn cuMemcpyAtoH_v2(dst: *mut c_void, a: CUarray, off: usize, n: usize) -> CUresult;
    fn cuMemcpyDtoA_v2(a: CUarray, off: usize, src: CUdeviceptr, n: usize) -> CUresult;
    fn cuMemcpyAtoD_v2(dst: CUdeviceptr, a: CUarray, off: usize, n: usize) -> CUresult;
    fn cuMemcpyAtoA_v2(d: CUarray, doff: usize, s: CUarray, soff: usize, n: usize) -> CUresult;
    fn cuTexObjectCreate(
        t: *mut CUtexObject,
        r: *const CUDA_RESOURCE_DESC,
        td: *const CUDA_TEXTURE_DESC,
        v: *const CUDA_RESOURCE_VIEW_DESC,
    ) -> CUresult;
    fn cuTexObjectDestroy(t: CUtexObject) -> CUresult;
    fn cuTexObjectGetResourceDesc(r: *mut CUDA_RESOURCE_DESC, t: CUtexObject) -> CUresult;
    fn cuSurfObjectCreate(s: *mut CUsurfObject, r: *const CUDA_RESOURCE_DESC) -> CUresult;
    fn cuSurfObjectDestroy(s: CUsurfObject) -> CUresult;
}

const IMAGE: &[u8] = b"//baton-sim\nkernel texRead 8 8 4\nkernel surfWrite 8 4 4\n\0";

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32 * 31 + seed as u32) as u8 ^ (i >> 8) as u8)
        .collect()
}

fn array2d(w: usize, h: usize, format: CUarray_format, channels: c_uint) -> CUarray {
    let mut a = null_mut();
    let d = CUDA_ARRAY_DESCRIPTOR {
        Width: w,
        Height: h,
        Format: format,
        NumChannels: channels,
    };
    cu!(cuArrayCreate_v2(&mut a, &d));
    a
}

#[test]
fn host_to_array_and_back_in_2d_with_pitches_and_offsets() {
    init_thread();
    let (w, h) = (37usize, 23usize);
    let a = array2d(w, h, CUarray_format::CU_AD_FORMAT_FLOAT, 1);
    let row = w * 4;
    let pitch = row + 12;
    let src = bytes(pitch * h, 1);
    let up = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: src.as_ptr() as *const c_void,
        srcPitch: pitch,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_ARRAY,
        dstArray: a,
        WidthInBytes: row,
        Height: h,
        ..Default::default()
    };
    cu!(cuMemcpy2D_v2(&up));
    // A window of the array into a host buffer of another pitch.
    let (x, y, ww, hh, opitch) = (8usize, 3usize, 100usize, 10usize, 120usize);
    let mut back = vec![0u8; opitch * hh];
    let down = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_ARRAY,
        srcArray: a,
        srcXInBytes: x,
        srcY: y,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        dstHost: back.as_mut_ptr() as *mut c_void,
        dstPitch: opitch,
        WidthInBytes: ww,
        Height: hh,
        ..Default::default()
    };
    cu!(cuMemcpy2D_v2(&down));
    for r in 0..hh {
        assert_eq!(
            &back[r * opitch..r * opitch + ww],
            &src[(y + r) * pitch + x..(y + r) * pitch + x + ww],
            "row {r}"
        );
    }
    // Past the array's edge is refused.
    let mut past = down;
    past.srcY = h - 2;
    // SAFETY: valid descriptors; the copy must be refused before touching memory.
    assert_eq!(
        // SAFETY: as above.
        unsafe { cuMemcpy2D_v2(&past) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    let mut d = CUDA_ARRAY3D_DESCRIPTOR::default();
    cu!(cuArray3DGetDescriptor_v2(&mut d, a));
    assert_eq!((d.Width, d.Height, d.Depth, d.NumChannels), (w, h, 0, 1));
    assert_eq!(d.Format, CUarray_format::CU_AD_FORMAT_FLOAT);
    cu!(cuArrayDestroy(a));
}

#[test]
fn three_d_copies_through_arrays_device_memory_and_host() {
    init_thread();
    let (w, h, d) = (16usize, 8usize, 5usize);
    let mut a = null_mut();
    let desc = CUDA_ARRAY3D_DESCRIPTOR {
        Width: w,
        Height: h,
        Depth: d,
        Format: CUarray_format::CU_AD_FORMAT_UNSIGNED_INT8,
        NumChannels: 4,
        Flags: 0,
    };
    cu!(cuArray3DCreate_v2(&mut a, &desc));
    let row = w * 4;
    let (spitch, sheight) = (row + 6, h + 1);
    let src = bytes(spitch * sheight * d, 7);
    let up = CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: src.as_ptr() as *const c_void,
        srcPitch: spitch,
        srcHeight: sheight,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_ARRAY,
        dstArray: a,
        WidthInBytes: row,
        Height: h,
        Depth: d,
        ..Default::default()
    };
    cu!(cuMemcpy3D_v2(&up));
    // Array -> pitched device memory (from slice 1 on), then device -> host, async.
    let dpitch = 128usize;
    let mut dev = 0;
    cu!(cuMemAlloc_v2(&mut dev, dpitch * h * d));
    let to_dev = CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_ARRAY,
        srcArray: a,
        srcZ: 1,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: dev,
        dstPitch: dpitch,
        dstHeight: h,
        WidthInBytes: row,
        Height: h,
        Depth: d - 1,
        ..Default::default()
    };
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    cu!(cuMemcpy3DAsync_v2(&to_dev, s));
    let mut back = vec![0u8; row * h * (d - 1)];
    let to_host = CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: dev,
        srcPitch: dpitch,
        srcHeight: h,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        dstHost: back.as_mut_ptr() as *mut c_void,
        dstPitch: row,
        dstHeight: h,
        WidthInBytes: row,
        Height: h,
        Depth: d - 1,
        ..Default::default()
    };
    cu!(cuMemcpy3DAsync_v2(&to_host, s));
    cu!(cuStreamSynchronize(s));
    for z in 0..d - 1 {
        for y in 0..h {
            let got = &back[(z * h + y) * row..][..row];
            let want = &src[((z + 1) * sheight + y) * spitch..][..row];
            assert_eq!(got, want, "slice {z} row {y}");
        }
    }
    cu!(cuStreamDestroy_v2(s));
    cu!(cuMemFree_v2(dev));
    cu!(cuArrayDestroy(a));
}

#[test]
fn linear_array_copies_split_at_rows_and_staging_chunks() {
    init_thread();
    // A 1D array wider than a staging chunk (4 MiB): rows go in pieces.
    let n = 3 << 20;
    let wide = array2d(n, 0, CUarray_format::CU_AD_FORMAT_FLOAT, 1);
    let src = bytes(n * 4, 3);
    cu!(cuMemcpyHtoA_v2(
        wide,
        0,
        src.as_ptr() as *const c_void,
        n * 4
    ));
    let mut back = vec![0u8; n * 4 - 100];
    cu!(cuMemcpyAtoH_v2(
        back.as_mut_ptr() as *mut c_void,
        wide,
        100,
        back.len()
    ));
    assert!(back == src[100..], "wide round trip");
    cu!(cuArrayDestroy(wide));

    // A 2D array: offsets in the middle of rows, through device memory and another array.
    let (w, h) = (10usize, 9usize);
    let a = array2d(w, h, CUarray_format::CU_AD_FORMAT_SIGNED_INT16, 2);
    let b = array2d(w, h, CUarray_format::CU_AD_FORMAT_SIGNED_INT16, 2);
    let total = w * h * 4;
    let src = bytes(total, 9);
    let mut dev = 0;
    cu!(cuMemAlloc_v2(&mut dev, total));
    cu!(cuMemcpyHtoD_v2(dev, src.as_ptr() as *const c_void, total));
    cu!(cuMemcpyDtoA_v2(a, 0, dev, total));
    cu!(cuMemcpyAtoA_v2(b, 6, a, 6, total - 17));
    let mut dev2 = 0;
    cu!(cuMemAlloc_v2(&mut dev2, total));
    cu!(cuMemsetD32_v2(dev2, 0, total / 4));
    cu!(cuMemcpyAtoD_v2(dev2, b, 6, total - 17));
    let mut out = vec![0u8; total];
    cu!(cuMemcpyDtoH_v2(
        out.as_mut_ptr() as *mut c_void,
        dev2,
        total
    ));
    assert!(
        out[..total - 17] == src[6..total - 11],
        "2D array round trip"
    );
    // SAFETY: valid array; the range runs past its end and must be refused.
    let r = unsafe { cuMemcpyAtoD_v2(dev2, b, 8, total) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
    for p in [dev, dev2] {
        cu!(cuMemFree_v2(p));
    }
    cu!(cuArrayDestroy(a));
    cu!(cuArrayDestroy(b));
}

fn kernels() -> (CUfunction, CUfunction) {
    let mut m = null_mut();
    cu!(cuModuleLoadData(&mut m, IMAGE.as_ptr() as *const c_void));
    let (mut t, mut s) = (null_mut(), null_mut());
    cu!(cuModuleGetFunction(&mut t, m, c"texRead".as_ptr()));
    cu!(cuModuleGetFunction(&mut s, m, c"surfWrite".as_ptr()));
    (t, s)
}

/// Runs `texRead` (or `surfWrite` with `value`) over `n` elements with object `obj`.
fn run(f: CUfunction, obj: u64, second: u64, n: i32) {
    let (mut o, mut x, mut n) = (obj, second, n);
    let mut params = [
        &mut o as *mut _ as *mut c_void,
        &mut x as *mut _ as *mut c_void,
        &mut n as *mut _ as *mut c_void,
    ];
    cu!(cuLaunchKernel(
        f,
        1,
        1,
        1,
        256,
        1,
        1,
        0,
        null_mut(),
        params.as_mut_ptr(),
        null_mut()
    ));
}

fn run_surf(f: CUfunction, obj: u64, value: u32, n: i32) {
    let (mut o, mut v, mut n) = (obj, value, n);
    let mut params = [
        &mut o as *mut _ as *mut c_void,
        &mut v as *mut _ as *mut c_void,
        &mut n as *mut _ as *mut c_void,
    ];
    cu!(cuLaunchKernel(
        f,
        1,
        1,
        1,
        256,
        1,
        1,
        0,
        null_mut(),
        params.as_mut_ptr(),
        null_mut()
    ));
}

#[test]
fn texture_and_surface_objects_reach_kernels_with_the_daemons_resources() {
    init_thread();
    let (tex_read, surf_write) = kernels();
    let (w, h) = (16usize, 4usize);
    let a = array2d(w, h, CUarray_format::CU_AD_FORMAT_FLOAT, 1);
    let src = bytes(w * h * 4, 5);
    cu!(cuMemcpyHtoA_v2(
        a,
        0,
        src.as_ptr() as *const c_void,
        src.len()
    ));

    // An array resource: the kernel reads the array the daemon holds for this handle.
    let mut res = CUDA_RESOURCE_DESC {
        resType: CUresourcetype::CU_RESOURCE_TYPE_ARRAY,
        ..Default::default()
    };
    res.res.array.hArray = a;
    let td = CUDA_TEXTURE_DESC::default();
    let mut t = 0;
    cu!(cuTexObjectCreate(&mut t, &res, &td, std::ptr::null()));
    assert_ne!(t, 0);
    let mut out = 0;
    cu!(cuMemAlloc_v2(&mut out, w * h * 4));
    run(tex_read, t, out, (w * h) as i32);
    let mut got = vec![0u8; w * h * 4];
    cu!(cuMemcpyDtoH_v2(
        got.as_mut_ptr() as *mut c_void,
        out,
        got.len()
    ));
    assert_eq!(got, src);
    let mut back = CUDA_RESOURCE_DESC::default();
    cu!(cuTexObjectGetResourceDesc(&mut back, t));
    assert_eq!(back.resType, CUresourcetype::CU_RESOURCE_TYPE_ARRAY);
    // SAFETY: the union member the type names.
    let handle = unsafe { back.res.array.hArray };
    assert_eq!(handle, a, "the client's own handle");

    // A pitch2D resource over device memory.
    let pitch = 256usize;
    let mut dev = 0;
    cu!(cuMemAlloc_v2(&mut dev, pitch * h));
    let rows = CUDA_MEMCPY2D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: src.as_ptr() as *const c_void,
        srcPitch: w * 4,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: dev,
        dstPitch: pitch,
        WidthInBytes: w * 4,
        Height: h,
        ..Default::default()
    };
    cu!(cuMemcpy2D_v2(&rows));
    let mut pres = CUDA_RESOURCE_DESC {
        resType: CUresourcetype::CU_RESOURCE_TYPE_PITCH2D,
        ..Default::default()
    };
    pres.res.pitch2D.devPtr = dev;
    pres.res.pitch2D.format = CUarray_format::CU_AD_FORMAT_FLOAT;
    pres.res.pitch2D.numChannels = 1;
    pres.res.pitch2D.width = w;
    pres.res.pitch2D.height = h;
    pres.res.pitch2D.pitchInBytes = pitch;
    let mut t2 = 0;
    cu!(cuTexObjectCreate(&mut t2, &pres, &td, std::ptr::null()));
    cu!(cuMemsetD32_v2(out, 0, w * h));
    run(tex_read, t2, out, (w * h) as i32);
    cu!(cuMemcpyDtoH_v2(
        got.as_mut_ptr() as *mut c_void,
        out,
        got.len()
    ));
    assert_eq!(got, src);
    // Memory the client does not own is refused.
    pres.res.pitch2D.devPtr = 0x1234_0000;
    let mut t3 = 0;
    // SAFETY: valid descriptors.
    let r = unsafe { cuTexObjectCreate(&mut t3, &pres, &td, std::ptr::null()) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);

    // A surface over the array: the kernel writes the array.
    let mut sobj = 0;
    cu!(cuSurfObjectCreate(&mut sobj, &res));
    run_surf(surf_write, sobj, 0x4242_4242, 5);
    let mut first = [0u32; 6];
    cu!(cuMemcpyAtoH_v2(first.as_mut_ptr() as *mut c_void, a, 0, 24));
    assert_eq!(&first[..5], &[0x4242_4242; 5]);
    assert_eq!(first[5].to_le_bytes(), src[20..24]);

    // Destroying twice, or a value never created, is refused.
    cu!(cuTexObjectDestroy(t));
    cu!(cuTexObjectDestroy(t2));
    cu!(cuSurfObjectDestroy(sobj));
    for (r, what) in [
        // SAFETY: plain calls with stale values.
        (unsafe { cuTexObjectDestroy(t) }, "texture twice"),
        // SAFETY: as above.
        (unsafe { cuSurfObjectDestroy(sobj) }, "surface twice"),
        // SAFETY: as above.
        (unsafe { cuTexObjectDestroy(12345) }, "unknown texture"),
    ] {
        assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE, "{what}");
    }
    cu!(cuMemFree_v2(dev));
    cu!(cuMemFree_v2(out));
    cu!(cuArrayDestroy(a));
}

#[test]
fn destroyed_and_foreign_array_handles_are_refused() {
    init_thread();
    let a = array2d(8, 8, CUarray_format::CU_AD_FORMAT_UNSIGNED_INT32, 1);
    cu!(cuArrayDestroy(a));
    // SAFETY: a stale handle of ours; the shim must refuse it.
    assert_eq!(
        // SAFETY: as above.
        unsafe { cuArrayDestroy(a) },
        CUresult::CUDA_ERROR_INVALID_HANDLE
    );
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    let mut d = CUDA_ARRAY3D_DESCRIPTOR::default();
    // SAFETY: a stream handle is readable memory of the shim, but not an array.
    assert_eq!(
        // SAFETY: as above.
        unsafe { cuArray3DGetDescriptor_v2(&mut d, s as CUarray) },
        CUresult::CUDA_ERROR_INVALID_HANDLE
    );
    cu!(cuStreamDestroy_v2(s));
    // Formats Baton cannot size are refused at creation.
    let mut b = null_mut();
    let bad = CUDA_ARRAY_DESCRIPTOR {
        Width: 4,
        Height: 4,
        Format: CUarray_format(0x91),
        NumChannels: 1,
    };
    // SAFETY: valid descriptor.
    let r = unsafe { cuArrayCreate_v2(&mut b, &bad) };
    assert_ne!(r, CUresult::CUDA_SUCCESS);
}
