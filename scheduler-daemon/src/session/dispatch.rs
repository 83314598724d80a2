//! Decoding and executing one ring command.

use super::tables::Owner;
use super::{lock, Session};
use crate::executor::{code, Executor, GpuError, GpuResult, LaunchConfig, OccupancyQuery, Raw};
use crate::scheduler::{CostKey, WorkKind};
use baton_ipc::protocol::{self as p, ImageKind, Message, Op, MAX_NAME, MAX_PARAMS, NO_REPLY};
use baton_ipc::region::{CHUNK_FAILED, CHUNK_FILLED, CHUNK_FREE, REPLY_VALUES};
use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What a command answers besides its result code.
#[derive(Default)]
pub(super) struct Answer {
    pub(super) values: [u64; REPLY_VALUES],
    pub(super) payload: Vec<u8>,
}

impl Answer {
    pub(super) fn value(v: u64) -> Answer {
        Answer {
            values: [v, 0, 0, 0],
            payload: Vec::new(),
        }
    }
    pub(super) fn values(a: u64, b: u64) -> Answer {
        Answer {
            values: [a, b, 0, 0],
            payload: Vec::new(),
        }
    }
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

fn name(tail: &[u8]) -> GpuResult<CString> {
    if tail.is_empty() || tail.len() > MAX_NAME {
        return Err(invalid());
    }
    CString::new(tail).map_err(|_| invalid())
}

/// A memset of `height` rows of `width` elements of `elem_size` bytes, `pitch` bytes apart:
/// its row length and the span of device memory it touches, checked for overflow.
pub(super) fn memset_extent(
    width: u64,
    elem_size: u32,
    height: u64,
    pitch: u64,
) -> GpuResult<(u64, u64)> {
    if !matches!(elem_size, 1 | 2 | 4) || height == 0 {
        return Err(invalid());
    }
    let row = width.checked_mul(elem_size as u64).ok_or_else(invalid)?;
    if height == 1 {
        return Ok((row, row));
    }
    if pitch < row {
        return Err(invalid());
    }
    let span = pitch
        .checked_mul(height - 1)
        .and_then(|x| x.checked_add(row))
        .ok_or_else(invalid)?;
    Ok((row, span))
}

impl Session {
    /// Executes one message. Returns `Err` only when the client broke the protocol.
    pub(super) fn handle(&mut self, buf: &[u8]) -> Result<(), String> {
        self.gating.received = Instant::now();
        self.gating.captures_open = self.streams.captures_open();
        let m = Message::decode(buf).map_err(|e| e.to_string())?;
        // No context reset while this command may use the driver (see `crate::fault`).
        let monitor = self.monitor.clone();
        let _ctx = monitor.enter();
        if let Some(code) = self.dead() {
            self.answer_dead(&m, code);
            return Ok(());
        }
        let synchronizing = matches!(
            m.op,
            Op::StreamSynchronize | Op::CtxSynchronize | Op::EventSynchronize
        ) || (m.reply != NO_REPLY
            && matches!(
                m.op,
                Op::Memset | Op::CopyDtoD | Op::CopyHtoDPinned | Op::CopyDtoHPinned | Op::Copy2D
            ));
        // A copy or memset captured into a graph names memory the graph's launches will use
        // long after this check: the capture remembers it (see `check_graph_memory`).
        let record = self.gating.captures_open
            && matches!(
                m.op,
                Op::Memset
                    | Op::Launch
                    | Op::CopyDtoD
                    | Op::CopyHtoDPinned
                    | Op::CopyDtoHPinned
                    | Op::Copy2D
                    | Op::Copy3D
            );
        let outer = record.then(|| {
            self.captured.set(false);
            self.recorder.replace(Some(Vec::new()))
        });
        let result = self.reserve_object(m.op).and_then(|_| self.execute(&m));
        if let Some(outer) = outer {
            let named = self.recorder.replace(outer).unwrap_or_default();
            if self.captured.get() && !named.is_empty() {
                for s in &self.streams.capturing {
                    self.capture_named
                        .entry(*s)
                        .or_default()
                        .extend(named.iter().copied());
                }
            }
        }
        self.settle_objects();
        let fast_job = if synchronizing {
            self.gating.next_job()
        } else {
            None
        };
        match &result {
            Err(e) if crate::fault::is_sticky(e.0) => self.sticky_error(e.0),
            Ok(_) if synchronizing && self.async_error.is_none() => {
                self.shared.unsynced.store(false, Ordering::Relaxed)
            }
            _ => {}
        }
        if m.reply == NO_REPLY {
            if let Err(e) = result {
                tracing::debug!(session = self.shared.identity.session, op = ?m.op, err = e.0, "async command failed");
                self.async_error.get_or_insert(e.0);
            }
        } else {
            match result {
                Ok(a) => {
                    let code = match (synchronizing, self.async_error) {
                        (true, Some(e)) => {
                            self.async_error = None;
                            e
                        }
                        _ => 0,
                    };
                    self.reply(m.reply, code, a.values, &a.payload);
                }
                Err(e) => self.reply(m.reply, e.0, [0; REPLY_VALUES], &[]),
            }
        }
        // After the answer: the client need not wait for the scheduler's lock.
        if let Some(job) = fast_job {
            self.gating.report_fast_job(&self.shared, job);
        }
        Ok(())
    }

    fn execute(&mut self, m: &Message<'_>) -> GpuResult<Answer> {
        let exec = self.exec.clone();
        let exec = &*exec;
        let body_err = |_| invalid();
        match m.op {
            Op::MemAlloc => {
                let b: p::MemAlloc = m.body().map_err(body_err)?;
                if b.bytes == 0 {
                    return Err(invalid());
                }
                // The quota is charged first, so concurrent allocations can never overshoot it.
                if !self.shared.charge(b.bytes) {
                    return Err(GpuError(code::OUT_OF_MEMORY));
                }
                let ptr = exec
                    .mem_alloc(b.device, b.bytes)
                    .inspect_err(|_| self.shared.refund(b.bytes))?;
                self.ranges.insert(ptr, b.bytes, b.device, Owner::Alloc);
                Ok(Answer::value(ptr))
            }
            Op::MemFree => {
                let b: p::MemFree = m.body().map_err(body_err)?;
                if self.ranges.owner_at(b.dptr) == Some(Owner::GraphOwned) {
                    let _ = self.streams.synchronize_all(exec);
                    let (_, device) = self.graph_owned_released(b.dptr).ok_or_else(invalid)?;
                    return exec.mem_free(device, b.dptr).map(|_| Answer::default());
                }
                let Some((len, device)) = self.ranges.remove_alloc(b.dptr) else {
                    // cuMemFree also frees stream-ordered and imported pool memory, after the
                    // work of this session that may use it.
                    let _ = self.streams.synchronize_all(exec);
                    return self
                        .free_stream_ordered(exec, b.dptr, None)
                        .map(|_| Answer::default());
                };
                // cuMemFree may not free memory that in-flight work of this tenant still uses;
                // waiting for this session's own streams keeps other tenants out of it.
                let _ = self.streams.synchronize_all(exec);
                if let Some(tok) = self.sharing.token_of(super::sharing::Kind::Mem, b.dptr) {
                    // Shared: freed (and refunded) when its last holder lets go.
                    if let Some(e) = self.sharing.release(tok, self.shared.identity.session) {
                        exec.mem_free(device, b.dptr)?;
                        e.refund();
                    }
                    return Ok(Answer::default());
                }
                self.shared.refund(len);
                exec.mem_free(device, b.dptr).map(|_| Answer::default())
            }
            Op::MemGetInfo => {
                let b: p::DeviceOnly = m.body().map_err(body_err)?;
                let (free, total) = exec.mem_info(b.device)?;
                // A tenant with a quota sees the quota as its device: total is the quota, free
                // what is left of it (never more than the device really has free).
                Ok(
                    match (
                        self.shared.account.limit(super::quota::Kind::Memory),
                        self.shared.memory_left(),
                    ) {
                        (Some(q), Some(left)) => Answer::values(left.min(free), q.min(total)),
                        _ => Answer::values(free, total),
                    },
                )
            }
            Op::LoadModule => {
                let b: p::LoadModule = m.body().map_err(body_err)?;
                let kind = ImageKind::from_u32(b.kind).ok_or_else(invalid)?;
                let image = lock(&self.shared.blobs)
                    .remove(&b.blob)
                    .ok_or(GpuError(code::INVALID_HANDLE))?;
                let (r, logs) =
                    exec.image_load(b.device, kind, &image, b.jit & p::JIT_VERBOSE != 0);
                let (id, result) = match r {
                    Ok(raw) => (
                        self.images.insert(super::tables::Image {
                            device: b.device,
                            kind,
                            raw,
                        }),
                        0,
                    ),
                    Err(e) => (0, e.0),
                };
                let mut payload = logs.info;
                payload.extend_from_slice(&logs.error);
                Ok(Answer {
                    values: [
                        id,
                        result as u64,
                        (payload.len() - logs.error.len()) as u64,
                        logs.error.len() as u64,
                    ],
                    payload,
                })
            }
            Op::UnloadModule => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let img = self.images.remove(b.id)?;
                self.funcs.retain(|f| f.image != b.id);
                self.ranges.remove_globals_of(b.id);
                exec.image_unload(img.kind, img.raw)
                    .map(|_| Answer::default())
            }
            Op::GetFunction => {
                let (b, tail): (p::GetSymbol, _) = m.split().map_err(body_err)?;
                let n = name(tail)?;
                let img = self.images.get(b.module)?;
                let (device, kind, raw) = (img.device, img.kind, img.raw);
                let (f, info) = exec.get_function(device, kind, raw, &n)?;
                let mut payload = Vec::new();
                info.encode(&mut payload);
                let id = self.funcs.insert(super::tables::Function {
                    device,
                    raw: f,
                    info,
                    image: b.module,
                });
                // Kept for fault reports, which log it: escaped, since the client chose it.
                let shown = n.to_string_lossy().escape_debug().collect::<String>();
                lock(&self.shared.kernel_names).insert(id, shown);
                Ok(Answer {
                    values: [id, 0, 0, 0],
                    payload,
                })
            }
            Op::ModuleFunctions => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let img = self.images.get(b.id)?;
                let names = exec.function_names(img.device, img.kind, img.raw)?;
                let mut payload = Vec::new();
                for n in &names {
                    payload.extend_from_slice(n.as_bytes_with_nul());
                }
                Ok(Answer {
                    values: [names.len() as u64, 0, 0, 0],
                    payload,
                })
            }
            Op::GetGlobal => {
                let (b, tail): (p::GetSymbol, _) = m.split().map_err(body_err)?;
                let n = name(tail)?;
                let img = self.images.get(b.module)?;
                let (device, kind, raw) = (img.device, img.kind, img.raw);
                let (ptr, size) = exec.get_global(device, kind, raw, &n)?;
                self.ranges
                    .insert(ptr, size, device, Owner::Global(b.module));
                Ok(Answer::values(ptr, size))
            }
            Op::StreamCreate => {
                let b: p::StreamCreate = m.body().map_err(body_err)?;
                Ok(Answer::value(
                    self.streams.create(exec, b.device, b.flags, b.priority)?,
                ))
            }
            Op::StreamDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                self.gating.retire_stream(exec, &self.streams, b.id);
                self.streams.destroy(exec, b.id)?;
                // Destroying a capturing stream ends its capture: nothing keeps what it
                // allocated reserved any more.
                self.graph_addrs_released(super::graph_mem::Holder::Capture(b.id));
                Ok(Answer::default())
            }
            Op::EventCreate => {
                let b: p::EventCreate = m.body().map_err(body_err)?;
                let raw = exec.event_create(b.device, b.flags)?;
                Ok(Answer::value(self.events.insert(super::tables::Event {
                    device: b.device,
                    raw,
                    flags: b.flags,
                    ipc: None,
                })))
            }
            Op::EventDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let e = self.events.remove(b.id)?;
                self.drop_event(exec, e).map(|_| Answer::default())
            }
            Op::EventRecord => {
                let b: p::EventRecord = m.body().map_err(body_err)?;
                let e = self.events.get(b.event)?;
                let (edev, eraw) = (e.device, e.raw);
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                if device != edev {
                    return Err(GpuError(code::INVALID_HANDLE));
                }
                exec.event_record(device, eraw, stream)?;
                self.write_word(device, stream, b.word, b.seq)?;
                Ok(Answer::default())
            }
            Op::StreamWaitEvent => {
                let b: p::StreamWaitEvent = m.body().map_err(body_err)?;
                let e = self.events.get(b.event)?.raw;
                if self.streams.captures_open() && b.stream < p::LEGACY_STREAM_BASE {
                    // The wait may make the stream join a capture: on the capture's lane.
                    self.streams.lane_for_capture(exec, b.stream)?;
                }
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                exec.stream_wait_event(device, stream, e)
                    .map(|_| Answer::default())
            }
            Op::StreamSynchronize => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let (device, stream) = self.streams.lookup(exec, b.id)?;
                exec.stream_synchronize(device, stream)
                    .map(|_| Answer::default())
            }
            Op::CtxSynchronize => {
                let _: p::DeviceOnly = m.body().map_err(body_err)?;
                self.streams
                    .synchronize_all(exec)
                    .map(|_| Answer::default())
            }
            Op::EventSynchronize => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let e = self.events.get(b.id)?;
                exec.event_synchronize(e.device, e.raw)
                    .map(|_| Answer::default())
            }
            Op::EventElapsedTime => {
                let b: p::EventPair = m.body().map_err(body_err)?;
                let (s, e) = (self.events.get(b.start)?, self.events.get(b.end)?);
                let ms = exec.event_elapsed(s.device, s.raw, e.raw)?;
                Ok(Answer::value(ms.to_bits() as u64))
            }
            Op::StreamMark => {
                let b: p::StreamMark = m.body().map_err(body_err)?;
                let (device, stream) = self.streams.lookup(exec, b.stream)?;
                self.write_word(device, stream, b.word, b.seq)?;
                Ok(Answer::default())
            }
            Op::Launch => {
                let (b, params): (p::Launch, _) = m.split().map_err(body_err)?;
                if params.len() != b.params_len as usize || params.len() > MAX_PARAMS {
                    return Err(invalid());
                }
                let f = self.funcs.get(b.func)?;
                let (fdev, fraw) = (f.device, f.raw);
                self.note(super::graph_nodes::Named::Function(b.func, fraw));
                let cooperative = b.flags & p::LAUNCH_COOPERATIVE != 0;
                let (device, stream) = if cooperative {
                    // Sized for every SM (occupancy times the device's SM count).
                    self.prepare_work_on_every_sm(exec, b.stream)?
                } else {
                    self.prepare_work(exec, b.stream)?
                };
                if device != fdev {
                    return Err(GpuError(code::INVALID_HANDLE));
                }
                let cfg = LaunchConfig {
                    grid: b.grid,
                    block: b.block,
                    cluster: b.cluster,
                    shared_mem: b.shared_mem,
                    cooperative,
                };
                self.shared.launches.fetch_add(1, Ordering::Relaxed);
                self.shared.last_kernel.store(b.func, Ordering::Relaxed);
                self.shared.unsynced.store(true, Ordering::Relaxed);
                let key = CostKey::kernel(b.func, b.grid);
                self.gating.issue(
                    &self.shared,
                    exec,
                    device,
                    b.stream,
                    stream,
                    WorkKind::Kernel,
                    key,
                    || exec.launch(device, fraw, stream, &cfg, params),
                )?;
                Ok(Answer::default())
            }
            Op::Memset => {
                let b: p::Memset = m.body().map_err(body_err)?;
                let (row, span) = memset_extent(b.width, b.elem_size, b.height, b.pitch)?;
                self.check_device_range(b.dst, span)?;
                let (device, stream) = self.prepare_work(exec, b.stream)?;
                let key = CostKey::copy(3, row.saturating_mul(b.height));
                self.gating.issue(
                    &self.shared,
                    exec,
                    device,
                    b.stream,
                    stream,
                    WorkKind::Copy,
                    key,
                    || {
                        exec.memset(
                            device,
                            b.dst,
                            b.pitch,
                            b.value,
                            b.elem_size,
                            b.width,
                            b.height,
                            stream,
                        )
                    },
                )?;
                self.finish_if_sync(m, device, stream)
            }
            Op::CopyDtoD => {
                let b: p::Copy = m.body().map_err(body_err)?;
                self.check_device_range(b.dst, b.len)?;
                self.check_device_range(b.src, b.len)?;
                let (device, stream) = self.prepare_work(exec, b.stream)?;
                let key = CostKey::copy(2, b.len);
                self.gating.issue(
                    &self.shared,
                    exec,
                    device,
                    b.stream,
                    stream,
                    WorkKind::Copy,
                    key,
                    || exec.copy_dtod(device, b.dst, b.src, b.len, stream),
                )?;
                self.finish_if_sync(m, device, stream)
            }
            Op::CopyHtoDPinned => {
                let b: p::Copy = m.body().map_err(body_err)?;
                self.check_device_range(b.dst, b.len)?;
                if !lock(&self.shared.host).check(b.src, b.len) {
                    return Err(invalid());
                }
                let (device, stream) = self.prepare_work(exec, b.stream)?;
                let key = CostKey::copy(0, b.len);
                self.gating.issue(
                    &self.shared,
                    exec,
                    device,
                    b.stream,
                    stream,
                    WorkKind::Copy,
                    key,
                    || exec.copy_htod(device, b.dst, b.src as usize as *const u8, b.len, stream),
                )?;
                self.finish_if_sync(m, device, stream)
            }
            Op::CopyDtoHPinned => {
                let b: p::Copy = m.body().map_err(body_err)?;
                self.check_device_range(b.src, b.len)?;
                if !lock(&self.shared.host).check(b.dst, b.len) {
                    return Err(invalid());
                }
                let (device, stream) = self.prepare_work(exec, b.stream)?;
                let key = CostKey::copy(1, b.len);
                self.gating.issue(
                    &self.shared,
                    exec,
                    device,
                    b.stream,
                    stream,
                    WorkKind::Copy,
                    key,
                    || exec.copy_dtoh(device, b.dst as usize as *mut u8, b.src, b.len, stream),
                )?;
                self.finish_if_sync(m, device, stream)
            }
            Op::CopyHtoDStaged | Op::CopyDtoHStaged => {
                let b: p::Staged = m.body().map_err(body_err)?;
                let ptr = self.region.chunk_ptr(b.chunk).ok_or_else(invalid)?;
                let r = (|| {
                    if b.len > self.region.chunk_size() as u64 {
                        return Err(invalid());
                    }
                    self.check_device_range(b.device_ptr, b.len)?;
                    let (device, stream) = self.prepare_work(exec, b.stream)?;
                    let to_device = m.op == Op::CopyHtoDStaged;
                    let key = CostKey::copy(if to_device { 0 } else { 1 }, b.len);
                    self.gating.issue(
                        &self.shared,
                        exec,
                        device,
                        b.stream,
                        stream,
                        WorkKind::Copy,
                        key,
                        || match to_device {
                            true => exec.copy_htod(device, b.device_ptr, ptr, b.len, stream),
                            false => exec.copy_dtoh(device, ptr, b.device_ptr, b.len, stream),
                        },
                    )?;
                    // The chunk is reused as soon as it is handed back, so the copy must be done.
                    exec.stream_synchronize(device, stream)
                })();
                let done = match (&r, m.op) {
                    (Err(_), _) => CHUNK_FAILED,
                    (Ok(()), Op::CopyHtoDStaged) => CHUNK_FREE,
                    (Ok(()), _) => CHUNK_FILLED,
                };
                if let Some(state) = self.region.chunk_state(b.chunk) {
                    state.store(done, Ordering::Release);
                    baton_ipc::futex::wake_all(state);
                }
                r.map(|_| Answer::default())
            }
            Op::FuncSetAttribute => {
                let b: p::FuncSetAttribute = m.body().map_err(body_err)?;
                let f = self.funcs.get_mut(b.func)?;
                exec.func_set_attribute(f.device, f.raw, b.attr, b.value)?;
                if let Some(slot) = usize::try_from(b.attr)
                    .ok()
                    .and_then(|a| f.info.attrs.get_mut(a))
                {
                    *slot = b.value;
                }
                Ok(Answer::default())
            }
            Op::MemAllocAsync => {
                let b: p::MemAllocAsync = m.body().map_err(body_err)?;
                if b.bytes == 0 {
                    return Err(invalid());
                }
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                if self.capturing(device, stream) {
                    // An allocation node of the graph being captured: charged when the graph
                    // is instantiated and launched (see `graph_mem`), not now.
                    let ptr = exec.mem_alloc_async(device, b.bytes, stream)?;
                    self.graph_addr_held(
                        ptr,
                        b.bytes,
                        device,
                        super::graph_mem::Holder::Capture(b.stream),
                    );
                    return Ok(Answer::value(ptr));
                }
                if !self.shared.charge(b.bytes) {
                    return Err(GpuError(code::OUT_OF_MEMORY));
                }
                let ptr = exec
                    .mem_alloc_async(device, b.bytes, stream)
                    .inspect_err(|_| self.shared.refund(b.bytes))?;
                self.ranges.insert(ptr, b.bytes, device, Owner::AsyncAlloc);
                Ok(Answer::value(ptr))
            }
            Op::MemFreeAsync => {
                let b: p::MemFreeAsync = m.body().map_err(body_err)?;
                // The stream first: failing after the range is forgotten would leave the
                // memory allocated, charged to the tenant, and out of teardown's reach.
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                if self.capturing(device, stream) {
                    // A free node of the graph being captured: it frees when the graph runs.
                    self.check_graph_free(b.dptr)?;
                    return exec
                        .mem_free_async(device, b.dptr, stream)
                        .map(|_| Answer::default());
                }
                if self.graph_owned_released(b.dptr).is_some() {
                    return exec
                        .mem_free_async(device, b.dptr, stream)
                        .map(|_| Answer::default());
                }
                self.free_stream_ordered(exec, b.dptr, Some(stream))
                    .map(|_| Answer::default())
            }
            Op::Copy2D => {
                let b: p::Copy2D = m.body().map_err(body_err)?;
                let span = |pitch: u64| -> GpuResult<u64> {
                    if b.height == 0 || b.width == 0 {
                        return Ok(0);
                    }
                    if pitch < b.width {
                        return Err(invalid());
                    }
                    pitch
                        .checked_mul(b.height - 1)
                        .and_then(|x| x.checked_add(b.width))
                        .ok_or_else(invalid)
                };
                let (sspan, dspan) = (span(b.src_pitch)?, span(b.dst_pitch)?);
                let side =
                    |addr: u64, len: u64, host: bool| -> GpuResult<super::super::executor::Mem> {
                        if host {
                            if !lock(&self.shared.host).check(addr, len) {
                                return Err(invalid());
                            }
                            Ok(super::super::executor::Mem::Host(addr as usize as *mut u8))
                        } else {
                            self.check_device_range(addr, len)?;
                            Ok(super::super::executor::Mem::Device(addr))
                        }
                    };
                let src = side(b.src, sspan, b.flags & p::COPY2D_SRC_HOST != 0)?;
                let dst = side(b.dst, dspan, b.flags & p::COPY2D_DST_HOST != 0)?;
                let (device, stream) = self.prepare_work(exec, b.stream)?;
                let dir = match (b.flags & p::COPY2D_SRC_HOST, b.flags & p::COPY2D_DST_HOST) {
                    (0, 0) => 2,
                    (0, _) => 1,
                    _ => 0,
                };
                let key = CostKey::copy(dir, b.width.saturating_mul(b.height));
                self.gating.issue(
                    &self.shared,
                    exec,
                    device,
                    b.stream,
                    stream,
                    WorkKind::Copy,
                    key,
                    || {
                        exec.copy_2d(
                            device,
                            dst,
                            b.dst_pitch,
                            src,
                            b.src_pitch,
                            b.width,
                            b.height,
                            stream,
                        )
                    },
                )?;
                self.finish_if_sync(m, device, stream)
            }
            Op::OccupancyClusters => {
                let b: p::OccupancyClusters = m.body().map_err(body_err)?;
                let f = self.funcs.get(b.func)?;
                let cfg = LaunchConfig {
                    grid: b.grid,
                    block: b.block,
                    cluster: b.cluster,
                    shared_mem: b.shared_mem,
                    cooperative: false,
                };
                Ok(Answer::value(
                    exec.max_active_clusters(f.device, f.raw, &cfg)? as u64,
                ))
            }
            Op::VmmGranularity
            | Op::VmmReserve
            | Op::VmmAddressFree
            | Op::VmmCreate
            | Op::VmmRelease
            | Op::VmmMap
            | Op::VmmUnmap
            | Op::VmmSetAccess
            | Op::VmmGetAccess
            | Op::VmmRetain => self.vmm_op(exec, m),
            Op::CaptureBegin
            | Op::CaptureEnd
            | Op::GraphInstantiate
            | Op::GraphLaunch
            | Op::GraphUpload
            | Op::GraphExecDestroy
            | Op::GraphDestroy
            | Op::GraphNodeCount => self.graph_op(exec, m),
            Op::GraphCreate
            | Op::GraphAddNode
            | Op::GraphSetNode
            | Op::GraphAddEdges
            | Op::GraphGetNodes
            | Op::GraphNodeType
            | Op::GraphDestroyNode
            | Op::GraphClone
            | Op::GraphExecUpdate
            | Op::TensorMapEncode => self.graph_node_op(exec, m),
            Op::GraphMem | Op::GraphMemNode => self.graph_mem_op(exec, m),
            Op::ConditionalHandleCreate
            | Op::CaptureToGraph
            | Op::CaptureInfo
            | Op::CaptureDeps => self.conditional_op(exec, m),
            Op::CtxLimit => {
                let b: p::CtxLimit = m.body().map_err(body_err)?;
                if b.set != 0 {
                    exec.set_limit(b.device, b.limit, b.value)?;
                }
                Ok(Answer::value(exec.get_limit(b.device, b.limit)?))
            }
            Op::HostFunc => {
                let b: p::HostFunc = m.body().map_err(body_err)?;
                let (device, stream) = self.streams.prepare(exec, b.stream)?;
                if b.id == 0 {
                    return Err(GpuError(code::INVALID_VALUE));
                }
                if self.capturing(device, stream) {
                    // It becomes a host node, run at every launch of the captured graph.
                    let work = self
                        .graphs
                        .host_works
                        .get(&self.shared, self.mailbox(), b.id);
                    exec.capture_host_work(device, stream, &work)?;
                } else {
                    let call =
                        super::host_calls::HostCall::new(self.shared.clone(), self.mailbox(), b.id);
                    exec.host_func(device, stream, Box::new(move || call.run()))?;
                }
                Ok(Answer::default())
            }
            Op::ArrayCreate
            | Op::ArrayDestroy
            | Op::Copy3D
            | Op::TexObjectCreate
            | Op::TexObjectDestroy
            | Op::SurfObjectCreate
            | Op::SurfObjectDestroy => self.execute_arrays(m).map(Answer::value),
            Op::LinkComplete | Op::LinkRead | Op::LinkDestroy => self.link_op(m),
            Op::IpcGetMemHandle
            | Op::IpcOpenMemHandle
            | Op::IpcCloseMemHandle
            | Op::IpcGetEventHandle
            | Op::IpcOpenEventHandle
            | Op::EventQuery
            | Op::VmmExport
            | Op::VmmImport => self.ipc_op(exec, m),
            Op::MemPoolCreate
            | Op::MemPoolDestroy
            | Op::MemPoolAlloc
            | Op::MemPoolAttr
            | Op::MemPoolTrim
            | Op::MemPoolExport
            | Op::MemPoolImport
            | Op::MemPoolExportPtr
            | Op::MemPoolImportPtr => self.pool_op(exec, m),
            Op::Occupancy => {
                let b: p::Occupancy = m.body().map_err(body_err)?;
                let f = self.funcs.get(b.func)?;
                let q = OccupancyQuery {
                    kind: b.kind,
                    block_size: b.block_size,
                    dynamic_smem: b.dynamic_smem,
                    flags: b.flags,
                    block_size_limit: b.block_size_limit,
                };
                let (a, c) = exec.occupancy(f.device, f.raw, q)?;
                Ok(Answer::values(a as u64, c as u64))
            }
        }
    }

    /// [`Streams::prepare`](super::streams::Streams::prepare) for work the scheduler gates: on
    /// the lane the policy wants for this tenant now.
    pub(super) fn prepare_work(&mut self, exec: &dyn Executor, id: u64) -> GpuResult<(u32, Raw)> {
        let fast = self
            .streams
            .device_of(id)
            .is_ok_and(|d| self.gating.fast_lane(&self.shared, d));
        let r = self.streams.prepare_lane(exec, id, fast);
        if let Ok((device, raw)) = r {
            if self.recorder.borrow().is_some() && self.capturing(device, raw) {
                self.captured.set(true);
            }
        }
        r
    }

    /// [`Session::prepare_work`] for work that needs every SM the tenant may use: where SMs are
    /// kept for the fast lanes (normal lanes have fewer), on the fast lane.
    pub(super) fn prepare_work_on_every_sm(
        &mut self,
        exec: &dyn Executor,
        id: u64,
    ) -> GpuResult<(u32, Raw)> {
        if !self.streams.reserving() {
            return self.prepare_work(exec, id);
        }
        self.streams.prepare_lane(exec, id, true)
    }

    /// A command of a session whose context a kernel fault ended: answered with the sticky
    /// error, without the driver. A staged copy's chunk is handed back failed, so that the
    /// client does not wait for it.
    fn answer_dead(&mut self, m: &Message<'_>, code: u32) {
        if matches!(m.op, Op::CopyHtoDStaged | Op::CopyDtoHStaged) {
            if let Ok(b) = m.body::<p::Staged>() {
                if let Some(state) = self.region.chunk_state(b.chunk) {
                    state.store(CHUNK_FAILED, Ordering::Release);
                    baton_ipc::futex::wake_all(state);
                }
            }
        }
        if m.reply != NO_REPLY {
            self.reply(m.reply, code, [0; REPLY_VALUES], &[]);
        }
    }

    /// A call returned an error that a kernel fault would leave behind. Each device is asked
    /// whether its context is really poisoned (some calls return these codes for their own
    /// reasons); a poisoned one is reported, naming this session as the one that saw it.
    fn sticky_error(&self, code: u32) {
        let born = self.shared.born.load(Ordering::Acquire);
        for device in 0..self.exec.devices().len() as u32 {
            if let Err(e) = self.exec.probe(device) {
                if crate::fault::is_sticky(e.0) {
                    let witness = crate::fault::Witness::Session(self.shared.identity.session);
                    self.monitor.report(device, e.0, witness, born);
                    return;
                }
            }
        }
        tracing::debug!(
            session = self.shared.identity.session,
            code,
            "error code of a kernel fault, but no context is poisoned"
        );
    }

    pub(super) fn check_device_range(&self, ptr: u64, len: u64) -> GpuResult<u32> {
        self.note(super::graph_nodes::Named::Mem(ptr, len));
        if let Some(d) = self.ranges.check(ptr, len) {
            return Ok(d);
        }
        // Mapped pinned memory: its device address is its host address.
        if lock(&self.shared.host).check(ptr, len) {
            return Ok(0);
        }
        Err(invalid())
    }

    fn write_word(&self, device: u32, stream: u64, word: u32, value: u64) -> GpuResult<()> {
        if self.region.word(word).is_none() {
            return Err(invalid());
        }
        // A write on a capturing stream would become part of the client's graph.
        if self.capturing(device, stream) {
            return Ok(());
        }
        let addr = self.region_dev + self.region.word_offset(word) as u64;
        self.exec.write_value(device, stream, addr, value)
    }

    /// For the synchronous form of a copy or memset, waits for it before replying.
    fn finish_if_sync(&self, m: &Message<'_>, device: u32, stream: u64) -> GpuResult<Answer> {
        if m.reply != NO_REPLY {
            self.exec.stream_synchronize(device, stream)?;
        }
        Ok(Answer::default())
    }
}
