//! What the client's handles point to.
//!
//! A `CUstream`, `CUevent`, `CUmodule`, `CUfunction` or `CUcontext` the shim hands out is the
//! address of one of these objects. Objects are never freed (a destroyed stream or event goes
//! back to a pool and is reused, as the driver reuses handles), so a stale handle can at worst
//! name a newer object, never freed memory. Each starts with a magic number checked on every use.

use crate::client::{self, Client};
use baton_ipc::protocol::{legacy_stream, FunctionInfo, ImageKind};
use cuda_abi::CUresult;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

const STREAM_MAGIC: u32 = 0x5354_524d;
const EVENT_MAGIC: u32 = 0x4556_4e54;
const FUNC_MAGIC: u32 = 0x4655_4e43;
const MODULE_MAGIC: u32 = 0x4d4f_4455;
const CTX_MAGIC: u32 = 0x4354_5854;

/// Reads the magic of an object handle, or `None` for null.
///
/// # Safety
/// `p` must be null or point to at least 4 readable bytes (any handle the shim handed out does).
pub(crate) unsafe fn magic_of<T>(p: *const T) -> Option<u32> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per the contract; every object type starts with a `u32` magic.
    Some(unsafe { (p as *const u32).read() })
}

macro_rules! handle_conversions {
    ($t:ty, $magic:expr, $err:expr) => {
        impl $t {
            /// The object behind a handle, or the driver's error for a bad handle.
            pub fn from_handle<H>(h: *mut H) -> Result<&'static $t, CUresult> {
                let p = h as *const $t;
                // SAFETY: handles of this kind are addresses of leaked `$t`s; a foreign pointer
                // is the caller's bug, as with the real driver, and is caught by the magic check
                // when it points to readable memory.
                let magic = unsafe { $crate::objects::magic_of(p) };
                match magic {
                    // SAFETY: the magic says `p` is one of our leaked, never-freed objects.
                    Some(m) if m == $magic => Ok(unsafe { &*p }),
                    _ => Err($err),
                }
            }
            pub fn handle<H>(&'static self) -> *mut H {
                self as *const $t as *mut H
            }
        }
    };
}

pub(crate) use handle_conversions;

#[repr(C)]
pub struct Stream {
    magic: u32,
    pub device: u32,
    /// Daemon stream id (0 once destroyed).
    pub id: AtomicU64,
    /// Commands submitted so far; compared with the completion word for local queries.
    pub submitted: AtomicU64,
    /// Highest `submitted` value a completion mark was requested for.
    pub marked: AtomicU64,
    /// Submission clock (see `api::stream`) of the last command submitted to the stream.
    pub last_clock: AtomicU64,
    /// Submission clock at the start of the last successful synchronisation of the stream.
    pub synced_clock: AtomicU64,
    /// The capture this stream takes part in (0: none), see `api::graph`.
    pub capture: AtomicU64,
    pub word: u32,
    pub flags: u32,
    pub priority: i32,
}
handle_conversions!(Stream, STREAM_MAGIC, CUresult::CUDA_ERROR_INVALID_HANDLE);

#[repr(C)]
pub struct Event {
    magic: u32,
    pub device: u32,
    pub id: AtomicU64,
    /// Value the completion word takes once the last record is reached (0: never recorded).
    pub recorded: AtomicU64,
    /// The last record value a successful `cuEventSynchronize` saw complete.
    pub synced: AtomicU64,
    /// The capture the last record was part of (0: a real record).
    pub capture: AtomicU64,
    pub word: u32,
    pub flags: u32,
}
handle_conversions!(Event, EVENT_MAGIC, CUresult::CUDA_ERROR_INVALID_HANDLE);

#[repr(C)]
pub struct Function {
    magic: u32,
    pub device: u32,
    pub id: u64,
    /// Its name as the driver spells it; `cuFuncGetName` hands out its address, which stays
    /// valid as long as the (never freed) function object.
    pub name: std::ffi::CString,
    pub info: Mutex<FunctionInfo>,
    /// Bytes of the packed parameter block.
    pub params_size: usize,
    pub params: Vec<(u32, u32)>,
    pub module: &'static Module,
}
handle_conversions!(Function, FUNC_MAGIC, CUresult::CUDA_ERROR_INVALID_HANDLE);

#[repr(C)]
pub struct Module {
    magic: u32,
    pub device: u32,
    pub id: u64,
    pub kind: ImageKind,
    pub loaded: AtomicBool,
    pub functions: Mutex<HashMap<String, &'static Function>>,
    pub globals: Mutex<HashMap<String, (u64, u64)>>,
    /// The names of all its functions, in the driver's order, asked for once when a caller
    /// enumerates them (C strings, as the lookup by name takes them).
    pub names: std::sync::OnceLock<Vec<std::ffi::CString>>,
}
handle_conversions!(Module, MODULE_MAGIC, CUresult::CUDA_ERROR_INVALID_HANDLE);

#[repr(C)]
pub struct Context {
    magic: u32,
    pub device: u32,
    pub flags: std::sync::atomic::AtomicU32,
    pub primary: bool,
    pub alive: AtomicBool,
    /// `cuCtxGetId`: numbered from 1 in creation order, as the driver numbers contexts.
    pub id: u64,
}
handle_conversions!(Context, CTX_MAGIC, CUresult::CUDA_ERROR_INVALID_CONTEXT);

static STREAM_POOL: Mutex<Vec<&'static Stream>> = Mutex::new(Vec::new());
static EVENT_POOL: Mutex<Vec<&'static Event>> = Mutex::new(Vec::new());

impl Stream {
    /// The stand-in for a device's legacy default stream (one per device, never destroyed).
    pub fn legacy(c: &Client, device: u32) -> Result<&'static Stream, CUresult> {
        static LEGACY: Mutex<Vec<&'static Stream>> = Mutex::new(Vec::new());
        let mut l = client::lock(&LEGACY);
        if let Some(s) = l.iter().find(|s| s.device == device) {
            return Ok(s);
        }
        let word = c
            .words
            .alloc(&c.region)
            .ok_or(CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
        let s = Box::leak(Box::new(Stream {
            magic: STREAM_MAGIC,
            device,
            id: AtomicU64::new(legacy_stream(device)),
            submitted: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            last_clock: AtomicU64::new(0),
            synced_clock: AtomicU64::new(0),
            capture: AtomicU64::new(0),
            word,
            flags: 0,
            priority: 0,
        }));
        l.push(s);
        Ok(s)
    }

    pub fn new(
        c: &Client,
        device: u32,
        id: u64,
        flags: u32,
        priority: i32,
    ) -> Result<&'static Stream, CUresult> {
        let word = c
            .words
            .alloc(&c.region)
            .ok_or(CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
        let fresh = Stream {
            magic: STREAM_MAGIC,
            device,
            id: AtomicU64::new(id),
            submitted: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            last_clock: AtomicU64::new(0),
            synced_clock: AtomicU64::new(0),
            capture: AtomicU64::new(0),
            word,
            flags,
            priority,
        };
        Ok(match client::lock(&STREAM_POOL).pop() {
            Some(s) => {
                // SAFETY: pooled objects are only reachable through stale handles, whose use is
                // the client's bug; overwriting a leaked object we own is sound.
                unsafe { (s as *const Stream as *mut Stream).write(fresh) };
                s
            }
            None => Box::leak(Box::new(fresh)),
        })
    }

    pub fn retire(&'static self, c: &Client) {
        self.id.store(0, Ordering::Release);
        c.words
            .release(&c.region, self.word, self.marked.load(Ordering::Relaxed));
        client::lock(&STREAM_POOL).push(self);
    }

    pub fn daemon_id(&self) -> Result<u64, CUresult> {
        match self.id.load(Ordering::Acquire) {
            0 => Err(CUresult::CUDA_ERROR_INVALID_HANDLE),
            id => Ok(id),
        }
    }
}

impl Event {
    pub fn new(c: &Client, device: u32, id: u64, flags: u32) -> Result<&'static Event, CUresult> {
        let word = c
            .words
            .alloc(&c.region)
            .ok_or(CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
        let fresh = Event {
            magic: EVENT_MAGIC,
            device,
            id: AtomicU64::new(id),
            recorded: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            capture: AtomicU64::new(0),
            word,
            flags,
        };
        Ok(match client::lock(&EVENT_POOL).pop() {
            Some(e) => {
                // SAFETY: as for streams.
                unsafe { (e as *const Event as *mut Event).write(fresh) };
                e
            }
            None => Box::leak(Box::new(fresh)),
        })
    }

    pub fn retire(&'static self, c: &Client) {
        self.id.store(0, Ordering::Release);
        c.words
            .release(&c.region, self.word, self.recorded.load(Ordering::Relaxed));
        client::lock(&EVENT_POOL).push(self);
    }

    pub fn daemon_id(&self) -> Result<u64, CUresult> {
        match self.id.load(Ordering::Acquire) {
            0 => Err(CUresult::CUDA_ERROR_INVALID_HANDLE),
            id => Ok(id),
        }
    }

    /// Whether the event may be shared with other processes (`CU_EVENT_INTERPROCESS`): they
    /// record it too, so only the daemon knows its state.
    pub fn interprocess(&self) -> bool {
        self.flags & 0x4 != 0
    }

    /// Whether the last record has been reached (true if never recorded).
    pub fn complete(&self, c: &Client) -> bool {
        let want = self.recorded.load(Ordering::Acquire);
        want == 0
            || self.synced.load(Ordering::Acquire) >= want
            || c.region
                .word(self.word)
                .is_some_and(|w| w.load(Ordering::Acquire) >= want)
    }
}

impl Module {
    pub fn new(device: u32, id: u64, kind: ImageKind) -> &'static Module {
        Box::leak(Box::new(Module {
            magic: MODULE_MAGIC,
            device,
            id,
            kind,
            loaded: AtomicBool::new(true),
            functions: Mutex::new(HashMap::new()),
            globals: Mutex::new(HashMap::new()),
            names: std::sync::OnceLock::new(),
        }))
    }
}

impl Function {
    pub fn new(
        module: &'static Module,
        id: u64,
        name: std::ffi::CString,
        info: FunctionInfo,
    ) -> &'static Function {
        Box::leak(Box::new(Function {
            magic: FUNC_MAGIC,
            device: module.device,
            id,
            name,
            params_size: info.params_size(),
            params: info.params.clone(),
            info: Mutex::new(info),
            module,
        }))
    }

    pub fn attr(&self, a: usize) -> Option<i32> {
        client::lock(&self.info).attrs.get(a).copied()
    }
}

impl Context {
    pub fn new(device: u32, flags: u32, primary: bool) -> &'static Context {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Box::leak(Box::new(Context {
            magic: CTX_MAGIC,
            device,
            flags: std::sync::atomic::AtomicU32::new(flags),
            primary,
            alive: AtomicBool::new(true),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }))
    }
}
