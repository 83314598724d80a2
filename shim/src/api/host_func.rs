//! `cuLaunchHostFunc`: callbacks run in this process, on a thread the shim starts the first
//! time one is launched. The daemon posts each request in the region's mailbox when the stream
//! reaches it and holds the stream until this thread has run the callback.
//!
//! Host nodes of graphs (added with `cuGraphAddHostNode`, or `cuLaunchHostFunc` on a capturing
//! stream) run at every launch: their function and argument are kept under a callback id for
//! the rest of the process, and the daemon asks for that id each time the node runs.

use super::stream::{resolve, submitted};
use super::util::{ready, ret};
use crate::client::{lock, Client};
use baton_ipc::protocol::{HostFunc, Op};
use cuda_abi::*;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

enum Callback {
    Host {
        f: unsafe extern "C" fn(*mut c_void),
        data: usize,
    },
    /// `cuStreamAddCallback`: also told the stream and a status.
    Stream {
        f: unsafe extern "C" fn(CUstream, CUresult, *mut c_void),
        stream: usize,
        data: usize,
    },
    /// The shim's own work at that point of the stream (see `graph_pageable`).
    Shim(Box<dyn FnOnce() + Send>),
}

static PENDING: Mutex<Option<HashMap<u64, Callback>>> = Mutex::new(None);
/// Host nodes' functions and arguments, by callback id; never removed (a graph's node may be
/// copied into clones and executable graphs the process can no longer name).
static NODES: Mutex<Option<HashMap<u64, HostFn>>> = Mutex::new(None);
/// A host node's function and argument.
#[derive(Clone, Copy)]
pub(crate) struct HostFn {
    pub f: unsafe extern "C" fn(*mut c_void),
    pub data: usize,
}

static NEXT: AtomicU64 = AtomicU64::new(1);
static START: Once = Once::new();

fn serve(c: &'static Client) {
    let mb = c.region.mailbox();
    // Start from what was acknowledged, not what was requested: a request posted before this
    // thread started must still be served.
    let mut seen = mb.done.load(Ordering::Acquire);
    loop {
        let now = mb.request.load(Ordering::Acquire);
        if now == seen {
            baton_ipc::futex::wait(&mb.request, seen, Some(Duration::from_millis(200)));
            continue;
        }
        seen = now;
        let id = mb.callback.load(Ordering::Relaxed);
        let cb = lock(&PENDING)
            .as_mut()
            .and_then(|p| p.remove(&id))
            .or_else(|| {
                let n = lock(&NODES).as_ref().and_then(|n| n.get(&id).copied());
                n.map(|h| Callback::Host {
                    f: h.f,
                    data: h.data,
                })
            });
        if let Some(cb) = cb {
            // SAFETY: the program registered this function and argument with cuLaunchHostFunc
            // (or the shim its own work); calling it once, when its stream gets here, is the
            // contract. A panic inside Rust code cannot come from a C callback, and is stopped
            // here if one does (the callback is consumed either way, so nothing observes it
            // half done).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                match cb {
                    Callback::Host { f, data } => f(data as *mut c_void),
                    Callback::Stream { f, stream, data } => f(
                        stream as CUstream,
                        CUresult::CUDA_SUCCESS,
                        data as *mut c_void,
                    ),
                    Callback::Shim(f) => f(),
                }
            }));
        }
        mb.done.store(now, Ordering::Release);
        baton_ipc::futex::wake_all(&mb.done);
    }
}

pub(crate) unsafe fn cuLaunchHostFunc(
    stream: CUstream,
    f: CUhostFn,
    data: *mut c_void,
) -> CUresult {
    let Some(f) = f else {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    };
    ret(enqueue(
        stream,
        Callback::Host {
            f,
            data: data as usize,
        },
    ))
}

pub(crate) unsafe fn cuStreamAddCallback(
    stream: CUstream,
    cb: CUstreamCallback,
    data: *mut c_void,
    flags: std::ffi::c_uint,
) -> CUresult {
    let Some(f) = cb else {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    };
    if flags != 0 {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    ret(enqueue(
        stream,
        Callback::Stream {
            f,
            stream: stream as usize,
            data: data as usize,
        },
    ))
}

/// Runs `f` in this process when `stream` gets to this point; later work on the stream waits
/// for it.
pub(crate) fn after(stream: CUstream, f: Box<dyn FnOnce() + Send>) -> Result<(), CUresult> {
    enqueue(stream, Callback::Shim(f))
}

/// Starts the thread that runs callbacks, once.
fn start(c: &'static Client) {
    START.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("baton-callbacks".into())
            .spawn(move || serve(c));
    });
}

/// Keeps `h` for a host node for good; answers its callback id.
pub(crate) fn node_callback(h: HostFn) -> Result<u64, CUresult> {
    start(ready()?);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    lock(&NODES).get_or_insert_with(HashMap::new).insert(id, h);
    Ok(id)
}

/// The function and argument kept under host node callback `id`.
pub(crate) fn node_fn(id: u64) -> Option<HostFn> {
    lock(&NODES).as_ref().and_then(|n| n.get(&id).copied())
}

fn enqueue(stream: CUstream, cb: Callback) -> Result<(), CUresult> {
    let c = ready()?;
    let s = resolve(c, stream)?;
    start(c);
    let capturing = s.capture.load(Ordering::Acquire) != 0;
    let id = match (capturing, cb) {
        // Captured, it is a host node of the graph: run at every launch.
        (true, Callback::Host { f, data }) => node_callback(HostFn { f, data })?,
        (true, _) => {
            crate::log::once(
                "cuStreamAddCallback",
                "cannot be captured (STREAM_CAPTURE_UNSUPPORTED, as with the driver)",
            );
            return Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        (false, cb) => {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            lock(&PENDING)
                .get_or_insert_with(HashMap::new)
                .insert(id, cb);
            id
        }
    };
    submitted(s);
    c.post(
        Op::HostFunc,
        &HostFunc {
            stream: s.daemon_id()?,
            id,
        },
        &[],
    )
    .inspect_err(|_| {
        lock(&PENDING).as_mut().map(|p| p.remove(&id));
    })
}
