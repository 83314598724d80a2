//! Initialisation, versions and device queries, answered from the device description the
//! daemon sent at connection time.

use super::util::{out, out_str, ready, ret, set_initialized};
use crate::client::{self, Client};
use baton_ipc::control::DeviceInfo;
use cuda_abi::*;
use std::ffi::{c_char, c_int, c_uint, CStr};

/// The driver API version this shim implements (`CUDA_VERSION` of the 13.0 headers).
pub(crate) const DRIVER_API_VERSION: c_int = 13000;

pub(crate) fn device(c: &'static Client, dev: CUdevice) -> Result<&'static DeviceInfo, CUresult> {
    usize::try_from(dev)
        .ok()
        .and_then(|d| c.devices.get(d))
        .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
}

pub(crate) unsafe fn cuInit(flags: c_uint) -> CUresult {
    if flags != 0 {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    match client::get() {
        Ok(_) => {
            set_initialized();
            CUresult::CUDA_SUCCESS
        }
        Err(e) => e,
    }
}

pub(crate) unsafe fn cuDriverGetVersion(v: *mut c_int) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(unsafe { out(v, DRIVER_API_VERSION) })
}

pub(crate) unsafe fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready().and_then(|c| unsafe { out(count, c.devices.len() as c_int) }))
}

pub(crate) unsafe fn cuDeviceGet(d: *mut CUdevice, ordinal: c_int) -> CUresult {
    ret((|| {
        let c = ready()?;
        device(c, ordinal)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(d, ordinal) }
    })())
}

pub(crate) unsafe fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|c| device(c, dev))
        .and_then(|d| unsafe { out_str(name, len, &d.name) }))
}

pub(crate) unsafe fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|c| device(c, dev))
        .and_then(|d| unsafe { out(bytes, d.total_mem as usize) }))
}

pub(crate) unsafe fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attrib: CUdevice_attribute,
    dev: CUdevice,
) -> CUresult {
    ret((|| {
        let d = device(ready()?, dev)?;
        let v = d
            .attribute(attrib.0 as i32)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pi, v) }
    })())
}

pub(crate) unsafe fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    ret((|| {
        let d = device(ready()?, dev)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(
                uuid,
                CUuuid {
                    bytes: d.uuid.map(|b| b as c_char),
                },
            )
        }
    })())
}

pub(crate) unsafe fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuDeviceGetUuid_v2(uuid, dev) }
}

pub(crate) unsafe fn cuDeviceGetPCIBusId(buf: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|c| device(c, dev))
        .and_then(|d| unsafe { out_str(buf, len, &d.pci_bus_id) }))
}

pub(crate) unsafe fn cuDeviceGetByPCIBusId(dev: *mut CUdevice, bus: *const c_char) -> CUresult {
    ret((|| {
        let c = ready()?;
        if bus.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let want = unsafe { CStr::from_ptr(bus) }
            .to_string_lossy()
            .to_ascii_lowercase();
        let i = c
            .devices
            .iter()
            .position(|d| {
                d.pci_bus_id
                    .to_ascii_lowercase()
                    .ends_with(want.trim_start_matches("0000:"))
                    || d.pci_bus_id.eq_ignore_ascii_case(&want)
            })
            .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(dev, i as CUdevice) }
    })())
}

pub(crate) unsafe fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    dev: CUdevice,
) -> CUresult {
    ret((|| {
        let d = device(ready()?, dev)?;
        let get = |a: CUdevice_attribute| {
            d.attribute(a.0 as i32)
                .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
        };
        let (ma, mi) = (
            get(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            get(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        // SAFETY: forwarded caller contract.
        unsafe {
            out(major, ma)?;
            out(minor, mi)
        }
    })())
}

pub(crate) unsafe fn cuDeviceCanAccessPeer(
    can: *mut c_int,
    dev: CUdevice,
    peer: CUdevice,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        device(c, dev)?;
        device(c, peer)?;
        // Peer access between distinct GPUs is not offered through Baton yet.
        // SAFETY: forwarded caller contract.
        unsafe { out(can, 0) }
    })())
}

pub(crate) unsafe fn cuGetErrorName(error: CUresult, p: *mut *const c_char) -> CUresult {
    match error.name() {
        // SAFETY: forwarded caller contract; the string is static.
        Some(n) => ret(unsafe { out(p, n.as_ptr()) }),
        None => {
            // SAFETY: as above.
            let _ = unsafe { out(p, std::ptr::null()) };
            CUresult::CUDA_ERROR_INVALID_VALUE
        }
    }
}

pub(crate) unsafe fn cuGetErrorString(error: CUresult, p: *mut *const c_char) -> CUresult {
    match super::error_text::describe(error) {
        // SAFETY: forwarded caller contract; the string is static.
        Some(s) => ret(unsafe { out(p, s.as_ptr()) }),
        None => {
            // SAFETY: as above.
            let _ = unsafe { out(p, std::ptr::null()) };
            CUresult::CUDA_ERROR_INVALID_VALUE
        }
    }
}
