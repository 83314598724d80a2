//! Green contexts: SM partitions of a device, for tenants whose policy gives them a share of
//! the SMs (`sm_share`). Called through `driver_fn!`, so a driver without green contexts
//! (before 12.4) answers `NOT_SUPPORTED` and the daemon keeps using ordinary streams.
//!
//! A green context retains the device's primary context and shares its memory and loaded
//! modules: only kernel launches differ, being confined to the context's SMs. So sessions keep
//! every handle of the primary context and merely issue their work on streams of a green
//! context. Contexts are shared by every session asking for the same SM count on a device and
//! kept until the device is reset; the daemon leaves the rest to process exit.

use super::check_code as check;
use super::{code, GpuError, GpuResult, Raw, SmResource};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::Mutex;

/// `CUdevResource` (144 bytes; the SM member's fields as of 13.0). The fields a driver does
/// not write stay zero.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct DevResource {
    kind: u32,
    internal: [u8; 92],
    sm_count: u32,
    min_partition: u32,
    alignment: u32,
    rest: [u8; 36],
}

const _: () = assert!(std::mem::size_of::<DevResource>() == 144);

impl DevResource {
    const fn zeroed() -> DevResource {
        DevResource {
            kind: 0,
            internal: [0; 92],
            sm_count: 0,
            min_partition: 0,
            alignment: 0,
            rest: [0; 36],
        }
    }
}

/// `CU_DEV_RESOURCE_TYPE_SM`, `CU_GREEN_CTX_DEFAULT_STREAM`, `CU_STREAM_NON_BLOCKING`.
const RESOURCE_SM: u32 = 1;
const DEFAULT_STREAM: u32 = 1;
const NON_BLOCKING: u32 = 1;

type GetDevResource = unsafe extern "C" fn(i32, *mut DevResource, u32) -> u32;
type SplitByCount = unsafe extern "C" fn(
    *mut DevResource,
    *mut u32,
    *const DevResource,
    *mut DevResource,
    u32,
    u32,
) -> u32;
type GenerateDesc = unsafe extern "C" fn(*mut *mut c_void, *mut DevResource, u32) -> u32;
type GreenCtxCreate = unsafe extern "C" fn(*mut *mut c_void, *mut c_void, i32, u32) -> u32;
type GreenCtxDestroy = unsafe extern "C" fn(*mut c_void) -> u32;
type GreenStreamCreate = unsafe extern "C" fn(*mut *mut c_void, *mut c_void, u32, i32) -> u32;

fn device_resource(device: u32) -> GpuResult<DevResource> {
    let f = driver_fn!("cuDeviceGetDevResource", GetDevResource);
    let mut r = DevResource::zeroed();
    // SAFETY: out-pointer to a local `CUdevResource`-sized, zeroed buffer.
    check(unsafe { f(device as i32, &mut r, RESOURCE_SM) })?;
    Ok(r)
}

/// The device's SMs and partition rules. Drivers before 13.0 report only the count; the
/// rules then come from the driver documentation's guideline for `cc_major`.
pub(super) fn sm_resource(device: u32, cc_major: i32) -> GpuResult<SmResource> {
    let r = device_resource(device)?;
    let (min, align) = match cc_major {
        9.. => (8, 8),
        8 => (4, 2),
        7 => (2, 2),
        _ => (1, 1),
    };
    Ok(SmResource {
        count: r.sm_count,
        min_partition: if r.min_partition > 0 {
            r.min_partition
        } else {
            min
        },
        alignment: if r.alignment > 0 { r.alignment } else { align },
    })
}

/// A green context and the SMs it got, or why none could be made.
type Made = GpuResult<(Raw, u32)>;

/// Green contexts by (device, SM count).
#[derive(Default)]
pub(super) struct Cache {
    map: Mutex<HashMap<(u32, u32), Made>>,
}

impl Cache {
    /// The shared green context of `sm_count` SMs on `device`, made on first use.
    pub(super) fn get(&self, device: u32, sm_count: u32) -> GpuResult<(Raw, u32)> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((device, sm_count))
            .or_insert_with(|| create(device, sm_count))
    }

    /// Destroys the device's green contexts (before a reset of its primary context, which
    /// they retain). Their streams must be gone already.
    pub(super) fn forget(&self, device: u32) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|&(d, _), g| {
            if d != device {
                return true;
            }
            if let Ok((raw, _)) = *g {
                if let Err(e) = destroy(raw) {
                    tracing::warn!(device, error = e.0, "cuGreenCtxDestroy failed");
                }
            }
            false
        });
    }
}

/// One group of at least `sm_count` SMs, split off the whole device, as a green context.
fn create(device: u32, sm_count: u32) -> GpuResult<(Raw, u32)> {
    let split = driver_fn!("cuDevSmResourceSplitByCount", SplitByCount);
    let gen = driver_fn!("cuDevResourceGenerateDesc", GenerateDesc);
    let make = driver_fn!("cuGreenCtxCreate", GreenCtxCreate);
    let whole = device_resource(device)?;
    let mut group = DevResource::zeroed();
    let mut remainder = DevResource::zeroed();
    let mut groups = 1u32;
    // SAFETY: `group` has room for the one group asked for; the others are locals.
    check(unsafe { split(&mut group, &mut groups, &whole, &mut remainder, 0, sm_count) })?;
    if groups != 1 || group.sm_count == 0 {
        return Err(GpuError(code::INVALID_VALUE));
    }
    let mut desc = null_mut();
    // SAFETY: out-pointer to a local; one resource, produced by the split above.
    check(unsafe { gen(&mut desc, &mut group, 1) })?;
    let mut green = null_mut();
    // SAFETY: out-pointer to a local; `desc` was just generated for this device.
    check(unsafe { make(&mut green, desc, device as i32, DEFAULT_STREAM) })?;
    Ok((green as usize as Raw, group.sm_count))
}

fn destroy(green: Raw) -> GpuResult<()> {
    let f = driver_fn!("cuGreenCtxDestroy", GreenCtxDestroy);
    // SAFETY: a green context this module created and has not destroyed.
    check(unsafe { f(green as usize as *mut c_void) })
}

/// A non-blocking stream of `green` (the driver ignores the current context here).
pub(super) fn stream_create(green: Raw, priority: i32) -> GpuResult<Raw> {
    let f = driver_fn!("cuGreenCtxStreamCreate", GreenStreamCreate);
    let mut s = null_mut();
    // SAFETY: out-pointer to a local; `green` came from `Cache::get`.
    check(unsafe {
        f(
            &mut s,
            green as usize as *mut c_void,
            NON_BLOCKING,
            priority,
        )
    })?;
    Ok(s as usize as Raw)
}
