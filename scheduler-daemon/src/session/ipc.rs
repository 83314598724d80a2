//! Sharing between clients: legacy IPC memory and event handles, and exported physical
//! allocations. The objects stay in the daemon's one context; `sharing::Registry` decides who
//! may name them and when they are really freed.

use super::dispatch::Answer;
use super::sharing::{Export, Kind, Token};
use super::tables::{Event, Owner};
use super::vmm::Handle;
use super::Session;
use crate::executor::{code, Executor, GpuError, GpuResult};
use baton_ipc::protocol::{self as p, Message, Op};
use std::sync::Arc;
use zerocopy::IntoBytes;

/// `CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS`: what an event must have been created
/// with to be shared, as the driver requires.
const IPC_EVENT_FLAGS: u32 = 0x2 | 0x4;

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

fn token_answer(t: Token) -> Answer {
    Answer {
        values: [t[0], t[1], 0, 0],
        payload: Vec::new(),
    }
}

impl Session {
    pub(super) fn ipc_op(&mut self, exec: &dyn Executor, m: &Message<'_>) -> GpuResult<Answer> {
        let body_err = |_| invalid();
        let me = self.shared.identity.session;
        match m.op {
            Op::IpcGetMemHandle => {
                let b: p::MemFree = m.body().map_err(body_err)?;
                // Only the session's own `cuMemAlloc` memory: the handle names the allocation
                // holding the pointer, and opening it yields that allocation's base.
                let (base, len, device) = self
                    .ranges
                    .owned_containing(b.dptr, Owner::Alloc)
                    .ok_or_else(invalid)?;
                let account = Arc::downgrade(&self.shared);
                let e = Export::new(Kind::Mem, device, base, len, me, account);
                self.sharing.export(e).map(token_answer)
            }
            Op::IpcOpenMemHandle => {
                let b: p::IpcToken = m.body().map_err(body_err)?;
                if let Some((tok, n)) = self.opened.values_mut().find(|(t, _)| *t == b.token) {
                    // Opened here already: the driver counts opens and answers the same address.
                    *n += 1;
                    let e = self
                        .sharing
                        .peek(*tok)
                        .ok_or(GpuError(code::INVALID_HANDLE))?;
                    return Ok(Answer {
                        values: [e.object, e.size, e.device as u64, 0],
                        payload: Vec::new(),
                    });
                }
                let e = self.sharing.open(Kind::Mem, b.token, me)?;
                self.opened.insert(e.object, (b.token, 1));
                self.ranges
                    .insert(e.object, e.size, e.device, Owner::Imported);
                Ok(Answer {
                    values: [e.object, e.size, e.device as u64, 0],
                    payload: Vec::new(),
                })
            }
            Op::IpcCloseMemHandle => {
                let b: p::MemFree = m.body().map_err(body_err)?;
                let (tok, n) = self.opened.get_mut(&b.dptr).ok_or_else(invalid)?;
                *n -= 1;
                if *n > 0 {
                    return Ok(Answer::value(0));
                }
                let tok = *tok;
                self.opened.remove(&b.dptr);
                self.ranges.remove_owned(b.dptr, Owner::Imported);
                // Work of this session may still use the memory.
                let _ = self.streams.synchronize_all(exec);
                self.release_mem(exec, tok)?;
                // 1: the session no longer has it open (the shim forgets the range).
                Ok(Answer::value(1))
            }
            Op::IpcGetEventHandle => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let ev = self.events.get(b.id)?;
                if ev.flags & IPC_EVENT_FLAGS != IPC_EVENT_FLAGS {
                    return Err(GpuError(code::INVALID_HANDLE));
                }
                if let Some(t) = ev.ipc {
                    return Ok(token_answer(t));
                }
                let (device, raw) = (ev.device, ev.raw);
                let e = Export::new(Kind::Event, device, raw, 0, me, Default::default());
                let t = self.sharing.export(e)?;
                self.events.get_mut(b.id)?.ipc = Some(t);
                Ok(token_answer(t))
            }
            Op::IpcOpenEventHandle => {
                let b: p::IpcToken = m.body().map_err(body_err)?;
                let e = self.sharing.open(Kind::Event, b.token, me)?;
                let id = self.events.insert(Event {
                    device: e.device,
                    raw: e.object,
                    flags: IPC_EVENT_FLAGS,
                    ipc: Some(b.token),
                });
                Ok(Answer {
                    values: [id, e.device as u64, 0, 0],
                    payload: Vec::new(),
                })
            }
            Op::EventQuery => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let e = self.events.get(b.id)?;
                match exec.event_query(e.device, e.raw)? {
                    true => Ok(Answer::default()),
                    false => Err(GpuError(code::NOT_READY)),
                }
            }
            Op::VmmExport => {
                let b: p::VmmExport = m.body().map_err(body_err)?;
                super::sharing::posix_fd_only(me, b.handle_type)?;
                let h = self.vmm.handles.get(b.handle)?;
                // As the driver: only a handle type requested at cuMemCreate may be exported.
                if h.prop.handle_types & b.handle_type == 0 {
                    return Err(invalid());
                }
                if let Some(t) = h.ipc {
                    return Ok(token_answer(t));
                }
                let mut e = Export::new(
                    Kind::Phys,
                    h.device,
                    h.raw,
                    h.size,
                    me,
                    Arc::downgrade(&self.shared),
                );
                e.prop = h.prop;
                let t = self.sharing.export(e)?;
                self.vmm.handles.get_mut(b.handle)?.ipc = Some(t);
                Ok(token_answer(t))
            }
            Op::VmmImport => {
                let b: p::IpcToken = m.body().map_err(body_err)?;
                let e = self.sharing.open(Kind::Phys, b.token, me)?;
                let id = self.vmm.handles.insert(Handle {
                    raw: e.object,
                    size: e.size,
                    device: e.device,
                    prop: e.prop,
                    ipc: Some(b.token),
                    refs: 1,
                    maps: 0,
                });
                Ok(Answer {
                    values: [id, e.size, e.device as u64, 0],
                    payload: e.prop.as_bytes().to_vec(),
                })
            }
            _ => Err(invalid()),
        }
    }

    /// Drops one holder of shared memory; frees it when that was the last.
    fn release_mem(&self, exec: &dyn Executor, tok: Token) -> GpuResult<()> {
        if let Some(e) = self.sharing.release(tok, self.shared.identity.session) {
            exec.mem_free(e.device, e.object)?;
            e.refund();
        }
        Ok(())
    }

    /// Destroys a session's event, or its share of a shared one.
    pub(super) fn drop_event(&self, exec: &dyn Executor, e: Event) -> GpuResult<()> {
        match e.ipc {
            None => exec.event_destroy(e.device, e.raw),
            Some(tok) => match self.sharing.release(tok, self.shared.identity.session) {
                Some(last) => exec.event_destroy(last.device, last.object),
                None => Ok(()),
            },
        }
    }

    /// Frees one of the session's own allocations (teardown), or its share of it if shared.
    pub(super) fn free_alloc(&self, exec: &dyn Executor, device: u32, ptr: u64) {
        let shared = self
            .sharing
            .token_of(Kind::Mem, ptr)
            .or_else(|| self.sharing.token_of(Kind::PoolPtr, ptr));
        match shared {
            None => {
                let _ = exec.mem_free(device, ptr);
            }
            Some(tok) => {
                if self
                    .sharing
                    .release(tok, self.shared.identity.session)
                    .is_some()
                {
                    let _ = exec.mem_free(device, ptr);
                }
            }
        }
    }

    /// Closes everything the session opened with `cuIpcOpenMemHandle` (teardown).
    pub(super) fn close_all_opened(&mut self, exec: &dyn Executor) {
        for (base, (tok, _)) in std::mem::take(&mut self.opened) {
            self.ranges.remove_owned(base, Owner::Imported);
            let _ = self.release_mem(exec, tok);
        }
    }
}
