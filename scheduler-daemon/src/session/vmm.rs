//! Virtual memory management: address reservations, physical allocations and their mappings.
//!
//! All three live in the daemon's context and belong to the session that made them. A client
//! names a physical allocation by a session id, never by the driver's handle; it may map only
//! into its own reservations, and only ranges it mapped become device ranges its copies and
//! memsets may name. Physical memory is charged to the tenant's quota when created and
//! refunded once it is both released and unmapped everywhere, as the driver frees it then.

use super::dispatch::Answer;
use super::sharing::{Registry, Token};
use super::tables::{Owner, Table};
use super::Session;
use crate::executor::{code, Executor, GpuError, GpuResult, Raw};
use baton_ipc::protocol::{self as p, Message, Op, VMM_MAX_ACCESS};
use std::collections::BTreeMap;

/// `CU_MEM_LOCATION_TYPE_DEVICE`.
const LOCATION_DEVICE: u32 = 1;

pub struct Handle {
    pub(super) raw: Raw,
    pub(super) size: u64,
    pub(super) device: u32,
    /// The properties it was created with (an imported handle: its exporter's).
    pub(super) prop: p::VmmProp,
    /// Set once shared with other sessions (exported or imported): the driver allocation is
    /// then released by its last holder, and refunded to its exporter (see `sharing`).
    pub(super) ipc: Option<Token>,
    /// References the client holds (`cuMemCreate` and each `cuMemRetainAllocationHandle`).
    pub(super) refs: u32,
    /// Live mappings of it.
    pub(super) maps: u32,
}

#[derive(Default)]
pub struct Vmm {
    /// Reserved address ranges: start -> (size, device the reservation call ran on).
    reserved: BTreeMap<u64, (u64, u32)>,
    pub(super) handles: Table<Handle>,
    /// Mapped ranges: start -> (size, handle id).
    mapped: BTreeMap<u64, (u64, u64)>,
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

fn end(ptr: u64, size: u64) -> GpuResult<u64> {
    if size == 0 {
        return Err(invalid());
    }
    ptr.checked_add(size).ok_or_else(invalid)
}

impl Vmm {
    /// The reservation holding `[ptr, ptr+size)`: its device.
    fn reservation(&self, ptr: u64, size: u64) -> GpuResult<u32> {
        let e = end(ptr, size)?;
        let (&s, &(len, dev)) = self
            .reserved
            .range(..=ptr)
            .next_back()
            .ok_or_else(invalid)?;
        (e <= s + len).then_some(dev).ok_or_else(invalid)
    }

    /// The mappings exactly covering `[ptr, ptr+size)` end to end, in order.
    fn covering(&self, ptr: u64, size: u64) -> GpuResult<Vec<(u64, u64, u64)>> {
        let e = end(ptr, size)?;
        let mut out = Vec::new();
        let mut at = ptr;
        for (&s, &(len, h)) in self.mapped.range(ptr..e) {
            if s != at {
                return Err(invalid());
            }
            out.push((s, len, h));
            at = s + len;
        }
        (at == e && !out.is_empty())
            .then_some(out)
            .ok_or_else(invalid)
    }

    /// Drops a reference or a mapping of `id`; frees it in the driver when neither is left.
    /// Answers the bytes to refund to this session (none for a shared allocation: its last
    /// holder refunds the exporter).
    fn settle(
        &mut self,
        exec: &dyn Executor,
        sharing: &Registry,
        me: u64,
        id: u64,
    ) -> GpuResult<u64> {
        let h = self.handles.get(id)?;
        if h.refs > 0 || h.maps > 0 {
            return Ok(0);
        }
        let h = self.handles.remove(id)?;
        release_handle(exec, sharing, me, h)
    }

    /// Unmaps and frees everything (session teardown; the tenant's whole account is reset
    /// after it).
    pub fn teardown(&mut self, exec: &dyn Executor, sharing: &Registry, me: u64) {
        for (&s, &(len, h)) in &self.mapped {
            if let Ok(handle) = self.handles.get(h) {
                let _ = exec.vmm_unmap(handle.device, s, len);
            }
        }
        self.mapped.clear();
        for (_, h) in self.handles.drain() {
            let _ = release_handle(exec, sharing, me, h);
        }
        for (&s, &(len, dev)) in &self.reserved {
            let _ = exec.vmm_address_free(dev, s, len);
        }
        self.reserved.clear();
    }
}

/// Releases the session's last use of an allocation: in the driver at once, or, when shared,
/// once no other session holds it either.
fn release_handle(exec: &dyn Executor, sharing: &Registry, me: u64, h: Handle) -> GpuResult<u64> {
    match h.ipc {
        None => {
            exec.vmm_release(h.device, h.raw)?;
            Ok(h.size)
        }
        Some(tok) => {
            if let Some(e) = sharing.release(tok, me) {
                exec.vmm_release(e.device, e.object)?;
                e.refund();
            }
            Ok(0)
        }
    }
}

impl Session {
    pub(super) fn vmm_op(&mut self, exec: &dyn Executor, m: &Message<'_>) -> GpuResult<Answer> {
        let body_err = |_| invalid();
        match m.op {
            Op::VmmGranularity => {
                let b: p::VmmProp = m.body().map_err(body_err)?;
                let device = self.prop_device(&b)?;
                exec.vmm_granularity(device, &b).map(Answer::value)
            }
            Op::VmmReserve => {
                let b: p::VmmReserve = m.body().map_err(body_err)?;
                end(0, b.size)?;
                let ptr = exec.vmm_reserve(0, b.size, b.alignment, b.addr, b.flags)?;
                self.vmm.reserved.insert(ptr, (b.size, 0));
                Ok(Answer::value(ptr))
            }
            Op::VmmAddressFree => {
                let b: p::VmmRange = m.body().map_err(body_err)?;
                match self.vmm.reserved.get(&b.ptr) {
                    Some(&(len, dev)) if len == b.size => {
                        // The driver refuses to free a reservation that still has mappings.
                        if self.vmm.mapped.range(b.ptr..b.ptr + len).next().is_some() {
                            return Err(invalid());
                        }
                        exec.vmm_address_free(dev, b.ptr, len)?;
                        self.vmm.reserved.remove(&b.ptr);
                        Ok(Answer::default())
                    }
                    _ => Err(invalid()),
                }
            }
            Op::VmmCreate => {
                let b: p::VmmCreate = m.body().map_err(body_err)?;
                let device = self.prop_device(&b.prop)?;
                end(0, b.size)?;
                if !self.shared.charge(b.size) {
                    return Err(GpuError(code::OUT_OF_MEMORY));
                }
                let raw = exec
                    .vmm_create(device, b.size, &b.prop)
                    .inspect_err(|_| self.shared.refund(b.size))?;
                let id = self.vmm.handles.insert(Handle {
                    raw,
                    size: b.size,
                    device,
                    prop: b.prop,
                    ipc: None,
                    refs: 1,
                    maps: 0,
                });
                Ok(Answer::value(id))
            }
            Op::VmmRelease => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let h = self.vmm.handles.get_mut(b.id)?;
                if h.refs == 0 {
                    return Err(GpuError(code::INVALID_HANDLE));
                }
                h.refs -= 1;
                let freed =
                    self.vmm
                        .settle(exec, &self.sharing, self.shared.identity.session, b.id)?;
                self.shared.refund(freed);
                Ok(Answer::default())
            }
            Op::VmmRetain => {
                let b: p::MemFree = m.body().map_err(body_err)?;
                let (&s, &(len, h)) = self
                    .vmm
                    .mapped
                    .range(..=b.dptr)
                    .next_back()
                    .ok_or_else(invalid)?;
                if b.dptr >= s + len {
                    return Err(invalid());
                }
                self.vmm.handles.get_mut(h)?.refs += 1;
                Ok(Answer::value(h))
            }
            Op::VmmMap => {
                let b: p::VmmMap = m.body().map_err(body_err)?;
                let e = end(b.ptr, b.size)?;
                self.vmm.reservation(b.ptr, b.size)?;
                if self
                    .vmm
                    .mapped
                    .range(..e)
                    .next_back()
                    .is_some_and(|(&s, &(l, _))| s + l > b.ptr)
                {
                    return Err(invalid());
                }
                let h = self.vmm.handles.get(b.handle)?;
                if b.offset.checked_add(b.size).is_none_or(|x| x > h.size) {
                    return Err(invalid());
                }
                let device = h.device;
                exec.vmm_map(device, b.ptr, b.size, b.offset, h.raw)?;
                self.vmm.handles.get_mut(b.handle)?.maps += 1;
                self.vmm.mapped.insert(b.ptr, (b.size, b.handle));
                self.ranges.insert(b.ptr, b.size, device, Owner::Mapped);
                Ok(Answer::default())
            }
            Op::VmmUnmap => {
                let b: p::VmmRange = m.body().map_err(body_err)?;
                let parts = self.vmm.covering(b.ptr, b.size)?;
                let device = self.vmm.handles.get(parts[0].2)?.device;
                // Work still in flight may use the range: finish this session's first.
                let _ = self.streams.synchronize_all(exec);
                exec.vmm_unmap(device, b.ptr, b.size)?;
                let mut freed = 0;
                for (s, _, h) in parts {
                    self.vmm.mapped.remove(&s);
                    self.ranges.remove_owned(s, Owner::Mapped);
                    if let Ok(handle) = self.vmm.handles.get_mut(h) {
                        handle.maps -= 1;
                    }
                    freed +=
                        self.vmm
                            .settle(exec, &self.sharing, self.shared.identity.session, h)?;
                }
                self.shared.refund(freed);
                Ok(Answer::default())
            }
            Op::VmmSetAccess => {
                let b: p::VmmSetAccess = m.body().map_err(body_err)?;
                let parts = self.vmm.covering(b.ptr, b.size)?;
                let n = b.count as usize;
                if n == 0 || n > VMM_MAX_ACCESS {
                    return Err(invalid());
                }
                let device = self.vmm.handles.get(parts[0].2)?.device;
                exec.vmm_set_access(device, b.ptr, b.size, &b.access[..n])
                    .map(|_| Answer::default())
            }
            Op::VmmGetAccess => {
                let b: p::VmmGetAccess = m.body().map_err(body_err)?;
                let (&s, &(len, h)) = self
                    .vmm
                    .mapped
                    .range(..=b.ptr)
                    .next_back()
                    .ok_or_else(invalid)?;
                if b.ptr >= s + len {
                    return Err(invalid());
                }
                let device = self.vmm.handles.get(h)?.device;
                exec.vmm_get_access(device, b.ptr, b.location_type, b.location_id)
                    .map(Answer::value)
            }
            _ => Err(invalid()),
        }
    }

    /// The device a `CUmemAllocationProp` places memory on (only device locations here).
    fn prop_device(&self, prop: &p::VmmProp) -> GpuResult<u32> {
        let dev = u32::try_from(prop.location_id).map_err(|_| GpuError(code::INVALID_DEVICE))?;
        if prop.location_type != LOCATION_DEVICE {
            return Err(GpuError(code::NOT_SUPPORTED));
        }
        if dev as usize >= self.exec.devices().len() {
            return Err(GpuError(code::INVALID_DEVICE));
        }
        Ok(dev)
    }
}
