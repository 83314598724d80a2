//! Streams and events. Launches, copies, records and waits are posted to the ring without
//! waiting; queries are answered from completion words the GPU writes into shared memory.

use super::context::current_device;
use super::util::{out, ready, ret};
use crate::client::Client;
use crate::objects::{Event, Stream};
use baton_ipc::protocol::{self as p, Op};
use cuda_abi::*;
use std::ffi::{c_int, c_uint};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD` as handle values.
const STREAM_LEGACY: usize = 1;
const STREAM_PER_THREAD: usize = 2;

/// The stream object a `CUstream` names. Null, `CU_STREAM_LEGACY` and (for now)
/// `CU_STREAM_PER_THREAD` name the current device's legacy stream.
pub(crate) fn resolve(c: &'static Client, h: CUstream) -> Result<&'static Stream, CUresult> {
    match h as usize {
        0 | STREAM_LEGACY | STREAM_PER_THREAD => Stream::legacy(c, current_device()?),
        _ => Stream::from_handle(h),
    }
}

/// The submission clock: ticks once per command submitted to any stream of the process, so
/// "synchronised after the last submission" is one comparison.
static CLOCK: AtomicU64 = AtomicU64::new(0);

/// Per device, the clock at the start of the last successful context synchronisation.
static CTX_SYNCED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Counts one more command submitted to `s`.
pub(crate) fn submitted(s: &Stream) -> u64 {
    s.last_clock
        .store(CLOCK.fetch_add(1, Ordering::AcqRel) + 1, Ordering::Release);
    s.submitted.fetch_add(1, Ordering::AcqRel) + 1
}

/// The clock value to record before a synchronising call.
pub(crate) fn clock() -> u64 {
    CLOCK.load(Ordering::Acquire)
}

/// Records that everything submitted on `device` before `at` is complete.
pub(crate) fn ctx_synced(device: u32, at: u64) {
    let mut v = crate::client::lock(&CTX_SYNCED);
    if v.len() <= device as usize {
        v.resize(device as usize + 1, 0);
    }
    v[device as usize] = v[device as usize].max(at);
}

/// Whether `s` has no work in flight, as far as the client can tell without asking.
fn idle(c: &Client, s: &Stream) -> bool {
    let last = s.last_clock.load(Ordering::Acquire);
    let ctx = crate::client::lock(&CTX_SYNCED)
        .get(s.device as usize)
        .copied()
        .unwrap_or(0);
    last <= s.synced_clock.load(Ordering::Acquire).max(ctx)
        || c.region
            .word(s.word)
            .map_or(0, |w| w.load(Ordering::Acquire))
            >= s.submitted.load(Ordering::Acquire)
}

pub(crate) unsafe fn cuStreamCreateWithPriority(
    ph: *mut CUstream,
    flags: c_uint,
    priority: c_int,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let device = current_device()?;
        let r = c.call(
            Op::StreamCreate,
            &p::StreamCreate {
                device,
                flags,
                priority,
                _pad: 0,
            },
            &[],
        )?;
        let s = Stream::new(c, device, r.values[0], flags, priority.clamp(-5, 0))?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ph, s.handle()) }
    })())
}

pub(crate) unsafe fn cuStreamCreate(ph: *mut CUstream, flags: c_uint) -> CUresult {
    // SAFETY: same contract, default priority.
    unsafe { cuStreamCreateWithPriority(ph, flags, 0) }
}

pub(crate) unsafe fn cuStreamDestroy_v2(h: CUstream) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = Stream::from_handle(h)?;
        let id = s.daemon_id()?;
        c.call(Op::StreamDestroy, &p::ObjectId { id }, &[])?;
        s.retire(c);
        Ok(())
    })())
}

pub(crate) unsafe fn cuStreamSynchronize(h: CUstream) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, h)?;
        super::graph::not_capturing(s)?;
        let at = clock();
        c.call(
            Op::StreamSynchronize,
            &p::ObjectId { id: s.daemon_id()? },
            &[],
        )?;
        s.synced_clock.fetch_max(at, Ordering::AcqRel);
        Ok(())
    })())
}

fn query(h: CUstream) -> Result<(), CUresult> {
    let c = ready()?;
    let s = resolve(c, h)?;
    super::graph::not_capturing(s)?;
    if idle(c, s) {
        return Ok(());
    }
    let want = s.submitted.load(Ordering::Acquire);
    // Ask the GPU to write the word once the stream gets past everything submitted so far. The
    // mark is itself a command on the stream, so the value it writes counts it too; one mark
    // covers every later query until more work is submitted.
    if s.marked.load(Ordering::Acquire) < want {
        let seq = submitted(s);
        c.post(
            Op::StreamMark,
            &p::StreamMark {
                stream: s.daemon_id()?,
                seq,
                word: s.word,
                _pad: 0,
            },
            &[],
        )?;
        s.marked.fetch_max(seq, Ordering::AcqRel);
    }
    Err(CUresult::CUDA_ERROR_NOT_READY)
}

pub(crate) unsafe fn cuStreamQuery(h: CUstream) -> CUresult {
    ret(query(h))
}

pub(crate) unsafe fn cuStreamWaitEvent(h: CUstream, e: CUevent, _flags: c_uint) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, h)?;
        let e = Event::from_handle(e)?;
        let capture = e.capture.load(Ordering::Acquire);
        if capture == 0 && e.recorded.load(Ordering::Acquire) == 0 && !e.interprocess() {
            // Waiting for an event that was never recorded completes at once.
            return Ok(());
        }
        submitted(s);
        c.post(
            Op::StreamWaitEvent,
            &p::StreamWaitEvent {
                stream: s.daemon_id()?,
                event: e.daemon_id()?,
            },
            &[],
        )?;
        // Waiting for an event recorded in a capture makes the stream part of that capture.
        super::graph::join(s, capture);
        Ok(())
    })())
}

pub(crate) unsafe fn cuStreamGetPriority(h: CUstream, priority: *mut c_int) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|c| resolve(c, h))
        .and_then(|s| unsafe { out(priority, s.priority) }))
}

pub(crate) unsafe fn cuStreamGetFlags(h: CUstream, flags: *mut c_uint) -> CUresult {
    // SAFETY: forwarded caller contract.
    ret(ready()
        .and_then(|c| resolve(c, h))
        .and_then(|s| unsafe { out(flags, s.flags) }))
}

pub(crate) unsafe fn cuStreamGetCtx(h: CUstream, pctx: *mut CUcontext) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, h)?;
        let (ctx, _) = super::context::primary(c, s.device as CUdevice)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pctx, ctx.handle()) }
    })())
}

pub(crate) unsafe fn cuEventCreate(ph: *mut CUevent, flags: c_uint) -> CUresult {
    ret((|| {
        let c = ready()?;
        let device = current_device()?;
        let r = c.call(Op::EventCreate, &p::EventCreate { device, flags }, &[])?;
        let e = Event::new(c, device, r.values[0], flags)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ph, e.handle()) }
    })())
}

pub(crate) unsafe fn cuEventDestroy_v2(h: CUevent) -> CUresult {
    ret((|| {
        let c = ready()?;
        let e = Event::from_handle(h)?;
        c.call(Op::EventDestroy, &p::ObjectId { id: e.daemon_id()? }, &[])?;
        e.retire(c);
        Ok(())
    })())
}

/// Record values come from one process-wide counter, so a word's values only ever grow.
static RECORDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) unsafe fn cuEventRecord(h: CUevent, stream: CUstream) -> CUresult {
    ret((|| {
        let c = ready()?;
        let e = Event::from_handle(h)?;
        let s = resolve(c, stream)?;
        let seq = RECORDS.fetch_add(1, Ordering::Relaxed) + 1;
        let capture = s.capture.load(Ordering::Acquire);
        submitted(s);
        c.post(
            Op::EventRecord,
            &p::EventRecord {
                event: e.daemon_id()?,
                stream: s.daemon_id()?,
                seq,
                word: e.word,
                _pad: 0,
            },
            &[],
        )?;
        // A record inside a capture is a graph node, not something the GPU reaches now: the
        // daemon writes no completion word for it, so the event keeps its last real record.
        e.capture.store(capture, Ordering::Release);
        if capture == 0 {
            e.recorded.store(seq, Ordering::Release);
        }
        Ok(())
    })())
}

pub(crate) unsafe fn cuEventRecordWithFlags(
    h: CUevent,
    stream: CUstream,
    _flags: c_uint,
) -> CUresult {
    // SAFETY: same contract; the only flag (CU_EVENT_RECORD_EXTERNAL) matters to graphs only.
    unsafe { cuEventRecord(h, stream) }
}

pub(crate) unsafe fn cuEventQuery(h: CUevent) -> CUresult {
    ret((|| {
        let c = ready()?;
        let e = Event::from_handle(h)?;
        let id = e.daemon_id()?;
        if e.interprocess() {
            // Other processes may record it: ask the daemon.
            return c.call(Op::EventQuery, &p::ObjectId { id }, &[]).map(|_| ());
        }
        if e.complete(c) {
            Ok(())
        } else {
            Err(CUresult::CUDA_ERROR_NOT_READY)
        }
    })())
}

pub(crate) unsafe fn cuEventSynchronize(h: CUevent) -> CUresult {
    ret((|| {
        let c = ready()?;
        let e = Event::from_handle(h)?;
        let id = e.daemon_id()?;
        // The record is usually reached within microseconds: watch the word first (not for an
        // event other processes may record, whose word says nothing of their records).
        let until = Instant::now() + Duration::from_micros(50);
        while !e.interprocess() && Instant::now() < until {
            if e.complete(c) {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        let want = e.recorded.load(Ordering::Acquire);
        c.call(Op::EventSynchronize, &p::ObjectId { id }, &[])?;
        e.synced.fetch_max(want, Ordering::AcqRel);
        Ok(())
    })())
}

pub(crate) unsafe fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    ret((|| {
        let c = ready()?;
        let (a, b) = (Event::from_handle(start)?, Event::from_handle(end)?);
        if a.recorded.load(Ordering::Acquire) == 0 || b.recorded.load(Ordering::Acquire) == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        if !a.complete(c) || !b.complete(c) {
            return Err(CUresult::CUDA_ERROR_NOT_READY);
        }
        let r = c.call(
            Op::EventElapsedTime,
            &p::EventPair {
                start: a.daemon_id()?,
                end: b.daemon_id()?,
            },
            &[],
        )?;
        // SAFETY: forwarded caller contract.
        unsafe { out(ms, f32::from_bits(r.values[0] as u32)) }
    })())
}

pub(crate) unsafe fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuEventElapsedTime_v2(ms, start, end) }
}

/// Stream attributes as the client set them: (stream handle, attribute) -> value bytes.
/// They are hints to the GPU's memory system and scheduler (L2 access-policy window,
/// synchronisation policy, memory-sync domain) that the daemon's shared streams do not apply;
/// they are kept so the client reads back what it set.
static ATTRS: std::sync::Mutex<std::collections::BTreeMap<(usize, u32), [u8; 64]>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// `CU_LAUNCH_ATTRIBUTE_PRIORITY`: answered from the stream itself.
const ATTR_PRIORITY: u32 = 8;

pub(crate) unsafe fn cuStreamSetAttribute(
    h: CUstream,
    attr: CUstreamAttrID,
    value: *const CUstreamAttrValue,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        resolve(c, h)?;
        if value.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if attr.0 == ATTR_PRIORITY {
            crate::log::once("cuStreamSetAttribute", "cannot change a stream's priority");
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        // SAFETY: checked non-null; the value is a 64-byte plain-data union.
        let bytes = unsafe { std::ptr::read(value as *const [u8; 64]) };
        crate::client::lock(&ATTRS).insert((h as usize, attr.0), bytes);
        Ok(())
    })())
}

pub(crate) unsafe fn cuStreamGetAttribute(
    h: CUstream,
    attr: CUstreamAttrID,
    value: *mut CUstreamAttrValue,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let s = resolve(c, h)?;
        if value.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut bytes = crate::client::lock(&ATTRS)
            .get(&(h as usize, attr.0))
            .copied()
            .unwrap_or([0; 64]);
        if attr.0 == ATTR_PRIORITY {
            bytes[..4].copy_from_slice(&s.priority.to_ne_bytes());
        }
        // SAFETY: checked non-null; the value is a 64-byte plain-data union.
        unsafe { std::ptr::write(value as *mut [u8; 64], bytes) };
        Ok(())
    })())
}
