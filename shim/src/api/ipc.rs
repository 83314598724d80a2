//! Sharing device memory and events with other processes: the legacy `cuIpc*` handles and
//! `cuMemExportToShareableHandle` / `cuMemImportFromShareableHandle`.
//!
//! Every client runs in the daemon's one context, so nothing is mapped or imported in the
//! driver: the daemon hands out a random token naming the shared object, and a handle carries
//! that token. A legacy handle is the 64-byte struct the application copies around; an
//! exported allocation is a small sealed memfd holding the token, so the descriptor travels
//! between processes (over a unix socket, by inheritance) exactly as the driver's would.

use super::util::{out, ready, ret};
use crate::objects::Event;
use baton_ipc::protocol::{
    self as p, ipc_decode, ipc_encode, Op, IPC_EVENT_MAGIC, IPC_MEM_MAGIC, IPC_VMM_MAGIC,
};
use cuda_abi::*;
use std::ffi::{c_uint, c_ulonglong, c_void};

/// `CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS`.
const IPC_EVENT_FLAGS: u32 = 0x2 | 0x4;

fn handle_bytes(reserved: &[std::ffi::c_char; 64]) -> [u8; 64] {
    reserved.map(|c| c as u8)
}

fn to_reserved(token: [u64; 2], magic: [u8; 8]) -> [std::ffi::c_char; 64] {
    let mut b = [0u8; 64];
    ipc_encode(magic, token, &mut b);
    b.map(|c| c as std::ffi::c_char)
}

pub(crate) unsafe fn cuIpcGetMemHandle(
    pHandle: *mut CUipcMemHandle,
    dptr: CUdeviceptr,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if pHandle.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let r = c.call(Op::IpcGetMemHandle, &p::MemFree { dptr }, &[])?;
        let reserved = to_reserved([r.values[0], r.values[1]], IPC_MEM_MAGIC);
        // SAFETY: checked non-null; the caller's handle.
        unsafe { out(pHandle, CUipcMemHandle { reserved }) }
    })())
}

pub(crate) unsafe fn cuIpcOpenMemHandle_v2(
    pdptr: *mut CUdeviceptr,
    handle: CUipcMemHandle,
    _flags: c_uint,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if pdptr.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let token = ipc_decode(IPC_MEM_MAGIC, &handle_bytes(&handle.reserved))
            .ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let r = c.call(Op::IpcOpenMemHandle, &p::IpcToken { token }, &[])?;
        let (base, len, device) = (r.values[0], r.values[1], r.values[2] as u32);
        // Device memory for copies and pointer queries, but not this process's to cuMemFree.
        super::memory::remember_mapping(base, len, device);
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(pdptr, base) }
    })())
}

pub(crate) unsafe fn cuIpcOpenMemHandle(
    pdptr: *mut CUdeviceptr,
    handle: CUipcMemHandle,
    flags: c_uint,
) -> CUresult {
    // SAFETY: same contract; the two spellings differ only in the driver's ABI history.
    unsafe { cuIpcOpenMemHandle_v2(pdptr, handle, flags) }
}

pub(crate) unsafe fn cuIpcCloseMemHandle(dptr: CUdeviceptr) -> CUresult {
    ret((|| {
        let c = ready()?;
        let r = c.call(Op::IpcCloseMemHandle, &p::MemFree { dptr }, &[])?;
        if r.values[0] == 1 {
            super::memory::forget_mappings(dptr, 1);
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuIpcGetEventHandle(
    pHandle: *mut CUipcEventHandle,
    event: CUevent,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if pHandle.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let e = Event::from_handle(event)?;
        let id = e.daemon_id()?;
        let r = c.call(Op::IpcGetEventHandle, &p::ObjectId { id }, &[])?;
        let reserved = to_reserved([r.values[0], r.values[1]], IPC_EVENT_MAGIC);
        // SAFETY: checked non-null; the caller's handle.
        unsafe { out(pHandle, CUipcEventHandle { reserved }) }
    })())
}

pub(crate) unsafe fn cuIpcOpenEventHandle(
    phEvent: *mut CUevent,
    handle: CUipcEventHandle,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if phEvent.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let token = ipc_decode(IPC_EVENT_MAGIC, &handle_bytes(&handle.reserved))
            .ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let r = c.call(Op::IpcOpenEventHandle, &p::IpcToken { token }, &[])?;
        let e = Event::new(c, r.values[1] as u32, r.values[0], IPC_EVENT_FLAGS)?;
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(phEvent, e.handle()) }
    })())
}

/// A sealed memfd holding `magic ++ token`: the descriptor a client hands to other processes.
/// `call` names the entry point in a log line if that fails.
pub(super) fn token_fd(
    magic: [u8; 8],
    token: [u64; 2],
    call: &'static str,
) -> Result<std::ffi::c_int, CUresult> {
    let mut b = [0u8; 24];
    ipc_encode(magic, token, &mut b);
    let fail = |what: &str| {
        crate::log::once(
            call,
            &format!(
                "could not make its descriptor ({what}: {})",
                std::io::Error::last_os_error()
            ),
        );
        CUresult::CUDA_ERROR_OPERATING_SYSTEM
    };
    // SAFETY: a NUL-terminated name and flags; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"baton-shareable-handle".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(fail("memfd_create"));
    }
    // SAFETY: writes the 24 local bytes to the descriptor just created.
    let n = unsafe { libc::pwrite(fd, b.as_ptr().cast(), b.len(), 0) };
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own descriptor.
    if n != b.len() as isize || unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
        let e = fail("writing the token");
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

pub(crate) unsafe fn cuMemExportToShareableHandle(
    shareableHandle: *mut c_void,
    handle: CUmemGenericAllocationHandle,
    handleType: CUmemAllocationHandleType,
    flags: c_ulonglong,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if shareableHandle.is_null() || flags != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if handleType != CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR {
            crate::log::once(
                "cuMemExportToShareableHandle",
                "exports only POSIX file descriptors under Baton",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        let body = p::VmmExport {
            handle,
            handle_type: handleType.0,
            _pad: 0,
        };
        let r = c.call(Op::VmmExport, &body, &[])?;
        let fd = token_fd(
            IPC_VMM_MAGIC,
            [r.values[0], r.values[1]],
            "cuMemExportToShareableHandle",
        )?;
        // SAFETY: for this handle type the driver writes an `int` through the pointer.
        unsafe { out(shareableHandle.cast::<std::ffi::c_int>(), fd) }
    })())
}

pub(crate) unsafe fn cuMemImportFromShareableHandle(
    handle: *mut CUmemGenericAllocationHandle,
    osHandle: *mut c_void,
    shHandleType: CUmemAllocationHandleType,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        if handle.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if shHandleType != CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR {
            crate::log::once(
                "cuMemImportFromShareableHandle",
                "imports only POSIX file descriptors under Baton",
            );
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        // For this handle type the descriptor itself is passed in the pointer's place.
        let token = fd_token(IPC_VMM_MAGIC, osHandle as usize as std::ffi::c_int)?;
        let r = c.call(Op::VmmImport, &p::IpcToken { token }, &[])?;
        let wire = <p::VmmProp as zerocopy::FromBytes>::read_from_bytes(&r.payload)
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
        let id = r.values[0];
        super::vmm::remember_imported(id, &wire);
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { out(handle, id) }
    })())
}

/// The token in a descriptor made by [`token_fd`] with `magic`.
pub(super) fn fd_token(magic: [u8; 8], fd: std::ffi::c_int) -> Result<[u64; 2], CUresult> {
    let mut b = [0u8; 24];
    // SAFETY: reads at most 24 bytes into the local buffer; a bad descriptor just fails.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    ipc_decode(magic, &b).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)
}
