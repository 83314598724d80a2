//! Explicit memory pools (`cuMemPoolCreate` ..) and pool sharing between clients.
//!
//! Each pool is a real driver pool that the session owns. Allocations from it are charged to
//! the session's tenant like `cuMemAllocAsync`, live in its ranges as stream-ordered
//! allocations, and are refunded when freed. Destroying a pool with allocations outstanding
//! succeeds, as in the driver, which frees the pool once they are freed; until then they stay
//! valid, charged, and freed at teardown.
//!
//! Sharing follows `sharing.rs`: an exported pool and each exported pointer are named by a
//! random token. An importer's pool is the same driver pool (one context serves every
//! session), so an imported pointer is the exporter's own address. The exporter's free of an
//! exported pointer, and its destroy of an exported pool, are deferred until importers let go;
//! the bytes stay charged to the exporter until then.

use super::dispatch::Answer;
use super::sharing::{Export, Kind, Token};
use super::tables::{Owner, Table};
use super::Session;
use crate::executor::{code, Executor, GpuError, GpuResult, Raw};
use baton_ipc::protocol::{self as p, Message, Op};
use std::collections::HashMap;
use std::sync::Arc;

use super::sharing::HANDLE_TYPE_POSIX_FD;
/// `CU_MEM_ALLOCATION_TYPE_PINNED`, `CU_MEM_LOCATION_TYPE_DEVICE`.
const ALLOC_PINNED: u32 = 1;
const LOCATION_DEVICE: u32 = 1;

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

/// One pool the session may name: its own, or one it imported.
pub struct Pool {
    device: u32,
    raw: Raw,
    /// Shareable handle types requested at creation (imported pools: what they were exported as).
    handle_types: u32,
    imported: bool,
    /// The pool's token once exported (always set for imported pools).
    ipc: Option<Token>,
}

#[derive(Default)]
pub struct Pools {
    table: Table<Pool>,
    /// The session's allocations from its explicit pools: address -> pool id.
    allocs: HashMap<u64, u64>,
    /// Pointers imported with `cuMemPoolImportPointer`: address -> token.
    imported: HashMap<u64, Token>,
}

impl Session {
    pub(super) fn pool_op(&mut self, exec: &dyn Executor, m: &Message<'_>) -> GpuResult<Answer> {
        let body_err = |_| invalid();
        let me = self.shared.identity.session;
        match m.op {
            Op::MemPoolCreate => {
                let b: p::MemPoolCreate = m.body().map_err(body_err)?;
                if b.alloc_type != ALLOC_PINNED {
                    return Err(invalid());
                }
                if b.location_type != LOCATION_DEVICE || b.handle_types & !HANDLE_TYPE_POSIX_FD != 0
                {
                    tracing::info!(
                        session = me,
                        location_type = b.location_type,
                        handle_types = b.handle_types,
                        "memory pools are served on devices, shareable as POSIX descriptors only"
                    );
                    return Err(GpuError(code::NOT_SUPPORTED));
                }
                let device = u32::try_from(b.location_id).map_err(|_| invalid())?;
                if device as usize >= exec.devices().len() {
                    return Err(invalid());
                }
                let raw = exec.mem_pool_create(device, b.max_size)?;
                let id = self.pools.table.insert(Pool {
                    device,
                    raw,
                    handle_types: b.handle_types,
                    imported: false,
                    ipc: None,
                });
                Ok(Answer::value(id))
            }
            Op::MemPoolDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let pool = self.pools.table.remove(b.id)?;
                self.pools.allocs.retain(|_, id| *id != b.id);
                self.drop_pool(exec, pool)?;
                Ok(Answer::default())
            }
            Op::MemPoolAlloc => {
                let b: p::MemPoolAlloc = m.body().map_err(body_err)?;
                let pool = self.pools.table.get(b.pool)?;
                if pool.imported {
                    // The driver's rule: imported pools hand out no new allocations.
                    return Err(invalid());
                }
                let (pool_device, raw) = (pool.device, pool.raw);
                if b.bytes == 0 {
                    return Err(invalid());
                }
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                if device != pool_device {
                    return Err(invalid());
                }
                if !self.shared.charge(b.bytes) {
                    return Err(GpuError(code::OUT_OF_MEMORY));
                }
                let ptr = exec
                    .mem_alloc_from_pool(device, raw, b.bytes, stream)
                    .inspect_err(|_| self.shared.refund(b.bytes))?;
                self.ranges.insert(ptr, b.bytes, device, Owner::AsyncAlloc);
                self.pools.allocs.insert(ptr, b.pool);
                Ok(Answer::value(ptr))
            }
            Op::MemPoolAttr => {
                let b: p::MemPoolAttr = m.body().map_err(body_err)?;
                let pool = self.pools.table.get(b.pool)?;
                let set = (b.set != 0).then_some(b.value);
                if pool.imported && set.is_some() {
                    // The attributes belong to the exporter's pool, which other tenants use.
                    tracing::info!(session = me, "attributes of an imported pool are read-only");
                    return Err(GpuError(code::NOT_SUPPORTED));
                }
                exec.mem_pool_attr(pool.device, pool.raw, b.attr, set)
                    .map(Answer::value)
            }
            Op::MemPoolTrim => {
                let b: p::MemPoolTrim = m.body().map_err(body_err)?;
                let pool = self.pools.table.get(b.pool)?;
                if pool.imported {
                    // Trimming is a hint; the exporter's pool is the exporter's to trim.
                    return Ok(Answer::default());
                }
                exec.mem_pool_trim(pool.device, pool.raw, b.keep)?;
                Ok(Answer::default())
            }
            Op::MemPoolExport => {
                let b: p::VmmExport = m.body().map_err(body_err)?;
                super::sharing::posix_fd_only(me, b.handle_type)?;
                self.export_pool(b.handle).map(token_answer)
            }
            Op::MemPoolImport => {
                let b: p::IpcToken = m.body().map_err(body_err)?;
                let e = self.sharing.open(Kind::Pool, b.token, me)?;
                let id = self.pools.table.insert(Pool {
                    device: e.device,
                    raw: e.object,
                    handle_types: HANDLE_TYPE_POSIX_FD,
                    imported: true,
                    ipc: Some(b.token),
                });
                Ok(Answer::values(id, e.device as u64))
            }
            Op::MemPoolExportPtr => {
                let b: p::MemFree = m.body().map_err(body_err)?;
                let &pool = self.pools.allocs.get(&b.dptr).ok_or_else(invalid)?;
                let pool_token = self.export_pool(pool)?;
                let (base, len, device) = self
                    .ranges
                    .owned_containing(b.dptr, Owner::AsyncAlloc)
                    .filter(|r| r.0 == b.dptr)
                    .ok_or_else(invalid)?;
                let account = Arc::downgrade(&self.shared);
                let mut e = Export::new(Kind::PoolPtr, device, base, len, me, account);
                e.parent = Some(pool_token);
                self.sharing.export(e).map(token_answer)
            }
            Op::MemPoolImportPtr => {
                let b: p::MemPoolImportPtr = m.body().map_err(body_err)?;
                let pool = self.pools.table.get(b.pool)?;
                let e = self
                    .sharing
                    .peek(b.token)
                    .filter(|e| e.kind == Kind::PoolPtr)
                    .ok_or(GpuError(code::INVALID_HANDLE))?;
                // The pointer must come from the pool it is imported through.
                if pool.ipc.is_none() || e.parent != pool.ipc {
                    return Err(invalid());
                }
                let answer = Answer {
                    values: [e.object, e.size, e.device as u64, 0],
                    payload: Vec::new(),
                };
                if self.pools.imported.contains_key(&e.object) {
                    return Ok(answer);
                }
                let e = self.sharing.open(Kind::PoolPtr, b.token, me)?;
                self.pools.imported.insert(e.object, b.token);
                self.ranges
                    .insert(e.object, e.size, e.device, Owner::PoolImported);
                Ok(answer)
            }
            _ => Err(invalid()),
        }
    }

    /// The token of one of the session's own pools, exporting it first if need be.
    fn export_pool(&mut self, id: u64) -> GpuResult<Token> {
        let me = self.shared.identity.session;
        let pool = self.pools.table.get(id)?;
        // As the driver: only a pool created with that handle type may be exported, and an
        // imported pool is not re-exported.
        if pool.imported || pool.handle_types & HANDLE_TYPE_POSIX_FD == 0 {
            return Err(invalid());
        }
        if let Some(t) = pool.ipc {
            return Ok(t);
        }
        let e = Export::new(Kind::Pool, pool.device, pool.raw, 0, me, Default::default());
        let t = self.sharing.export(e)?;
        self.pools.table.get_mut(id)?.ipc = Some(t);
        Ok(t)
    }

    /// Destroys a pool, or drops the session's share of a shared one.
    fn drop_pool(&self, exec: &dyn Executor, pool: Pool) -> GpuResult<()> {
        match pool.ipc {
            None => exec.mem_pool_destroy(pool.device, pool.raw),
            Some(tok) => match self.sharing.release(tok, self.shared.identity.session) {
                Some(last) => exec.mem_pool_destroy(last.device, last.object),
                None => Ok(()),
            },
        }
    }

    /// Frees a stream-ordered allocation of the session (from the default pool or one of its
    /// own) or an imported pool pointer: on `stream`, or at once with `None` (`cuMemFree`,
    /// after the caller synchronised the session's streams). Memory another session imported
    /// is freed when the last importer lets go, and refunded to its exporter then.
    pub(super) fn free_stream_ordered(
        &mut self,
        exec: &dyn Executor,
        dptr: u64,
        stream: Option<Raw>,
    ) -> GpuResult<()> {
        let me = self.shared.identity.session;
        let free = |device: u32| match stream {
            Some(s) => exec.mem_free_async(device, dptr, s),
            None => exec.mem_free(device, dptr),
        };
        if let Some((len, device)) = self.ranges.remove_owned(dptr, Owner::AsyncAlloc) {
            self.pools.allocs.remove(&dptr);
            if let Some(tok) = self.sharing.token_of(Kind::PoolPtr, dptr) {
                if let Some(e) = self.sharing.release(tok, me) {
                    free(device)?;
                    e.refund();
                }
                return Ok(());
            }
            self.shared.refund(len);
            return free(device);
        }
        if self
            .ranges
            .remove_owned(dptr, Owner::PoolImported)
            .is_some()
        {
            let tok = self.pools.imported.remove(&dptr).ok_or_else(invalid)?;
            if let Some(e) = self.sharing.release(tok, me) {
                free(e.device)?;
                e.refund();
            }
            return Ok(());
        }
        Err(invalid())
    }

    /// Teardown: lets go of imported pointers, then of every pool. The session's own pool
    /// allocations were freed with its other memory.
    pub(super) fn teardown_pools(&mut self, exec: &dyn Executor) {
        let me = self.shared.identity.session;
        for (ptr, tok) in std::mem::take(&mut self.pools.imported) {
            if let Some(e) = self.sharing.release(tok, me) {
                let _ = exec.mem_free(e.device, ptr);
                e.refund();
            }
        }
        self.pools.allocs.clear();
        for (_, pool) in self.pools.table.drain().collect::<Vec<_>>() {
            let _ = self.drop_pool(exec, pool);
        }
    }
}

fn token_answer(t: Token) -> Answer {
    Answer {
        values: [t[0], t[1], 0, 0],
        payload: Vec::new(),
    }
}
