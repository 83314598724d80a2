//! The shim's connection to the daemon: control socket, shared region, command ring, reply
//! slots, completion words and staging chunks.
//!
//! Set up lazily by the first driver call that needs it (never from a library constructor), and
//! never used by a forked child: CUDA itself does not survive `fork()` either.

mod staging;

pub(crate) use staging::StagedCopy;

use baton_ipc::control::{self, DeviceInfo, Request, Response};
use baton_ipc::protocol::{encode, Op, NO_REPLY};
use baton_ipc::region::{Region, REPLY_DONE, REPLY_IDLE, REPLY_PENDING, REPLY_VALUES};
use baton_ipc::ring::Producer;
use baton_ipc::shm::SharedRegion;
use cuda_abi::CUresult;
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use zerocopy::{Immutable, IntoBytes};

/// How long a client thread spins for a reply before it sleeps.
const REPLY_SPIN: Duration = Duration::from_micros(300);

/// Answer of a synchronous command.
pub(crate) struct Reply {
    pub values: [u64; REPLY_VALUES],
    pub payload: Vec<u8>,
}

pub(crate) struct Client {
    sock: Mutex<UnixStream>,
    sock_fd: i32,
    /// Keeps the region mapped for the life of the process.
    _mapping: SharedRegion,
    pub region: Region,
    producer: Producer,
    free_replies: Mutex<Vec<u32>>,
    pub words: Words,
    pub staging: Mutex<()>,
    pub devices: Vec<DeviceInfo>,
    dead: AtomicBool,
    pid: u32,
}

/// Completion words: allocated per stream and event; a word whose last write may still be in
/// flight is parked until that write lands, so a late GPU write can never confuse a new owner.
pub(crate) struct Words {
    inner: Mutex<WordsInner>,
}

struct WordsInner {
    next: u32,
    limit: u32,
    free: Vec<u32>,
    parked: Vec<(u32, u64)>,
}

impl Words {
    fn new(limit: u32) -> Words {
        Words {
            inner: Mutex::new(WordsInner {
                next: 0,
                limit,
                free: Vec::new(),
                parked: Vec::new(),
            }),
        }
    }

    pub fn alloc(&self, region: &Region) -> Option<u32> {
        let mut w = lock(&self.inner);
        if w.free.is_empty() && !w.parked.is_empty() {
            let parked = std::mem::take(&mut w.parked);
            for (i, last) in parked {
                if region
                    .word(i)
                    .is_some_and(|x| x.load(Ordering::Acquire) >= last)
                {
                    w.free.push(i);
                } else {
                    w.parked.push((i, last));
                }
            }
        }
        if let Some(i) = w.free.pop() {
            return Some(i);
        }
        if w.next < w.limit {
            w.next += 1;
            return Some(w.next - 1);
        }
        None
    }

    /// Returns word `i`, whose last expected value is `last` (0: nothing was ever written).
    pub fn release(&self, region: &Region, i: u32, last: u64) {
        let mut w = lock(&self.inner);
        let done = region
            .word(i)
            .is_some_and(|x| x.load(Ordering::Acquire) >= last);
        if done {
            w.free.push(i);
        } else {
            w.parked.push((i, last));
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static CLIENT: OnceLock<Result<Client, CUresult>> = OnceLock::new();

/// The connection, set up on first use. `Err` if the daemon cannot be reached (reported once on
/// stderr) or in a forked child of a process that had connected.
pub(crate) fn get() -> Result<&'static Client, CUresult> {
    let c = CLIENT.get_or_init(connect).as_ref().map_err(|e| *e)?;
    if c.pid != std::process::id() {
        crate::log::once(
            "fork",
            "CUDA cannot be used in a child forked after the parent used it",
        );
        return Err(CUresult::CUDA_ERROR_NOT_INITIALIZED);
    }
    if c.dead.load(Ordering::Relaxed) {
        return Err(CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE);
    }
    // A kernel fault ended the daemon's context while this process was connected: like a
    // process whose own context faulted, every later call fails with the sticky error.
    match c.region.fault().load(Ordering::Acquire) {
        0 => {}
        code => return Err(CUresult(code)),
    }
    Ok(c)
}

fn connect() -> Result<Client, CUresult> {
    let path = control::socket_path();
    let fail = |what: String| {
        eprintln!("baton: {what}; CUDA calls will fail with CUDA_ERROR_NO_DEVICE (start the daemon with `baton daemon`, or run the program with `baton run`)");
        CUresult::CUDA_ERROR_NO_DEVICE
    };
    let sock = UnixStream::connect(&path).map_err(|e| {
        fail(format!(
            "cannot reach the Baton daemon at {} ({e})",
            path.display()
        ))
    })?;
    let hello = Request::Hello {
        version: control::PROTOCOL_VERSION,
        pid: std::process::id(),
        tenant: std::env::var("BATON_TENANT").ok().filter(|s| !s.is_empty()),
        class: std::env::var("BATON_CLASS").ok().filter(|s| !s.is_empty()),
    };
    // A daemon that refuses the connection as it accepts it (connection limits, a uid the
    // policy refuses) answers before the hello and closes: its answer is still there to read
    // when the hello itself fails.
    let sent = control::send(&sock, &hello, &[]);
    let (resp, mut fds) = control::recv::<Response>(&sock).map_err(|e| {
        let e = sent.err().unwrap_or(e);
        fail(format!("talking to the Baton daemon: {e}"))
    })?;
    let (devices, region_len) = match resp {
        Response::Welcome {
            devices,
            region_len,
            ..
        } => (devices, region_len),
        Response::Error { message, .. } => {
            return Err(fail(format!(
                "the Baton daemon refused this program: {message}"
            )))
        }
        other => {
            return Err(fail(format!(
                "unexpected answer from the Baton daemon: {other:?}"
            )))
        }
    };
    let fd = fds
        .pop()
        .ok_or_else(|| fail("the daemon sent no shared region".into()))?;
    let mapping = SharedRegion::map(fd, region_len as usize, None)
        .map_err(|e| fail(format!("mapping the shared region: {e}")))?;
    // SAFETY: the mapping is `region_len` bytes and lives as long as the Client.
    let region = unsafe { Region::attach(mapping.as_ptr(), mapping.len()) }
        .map_err(|e| fail(format!("shared region: {e}")))?;
    let (ring, ring_len) = region.ring();
    // SAFETY: the ring lies inside the mapping (checked by Region::attach).
    let producer = unsafe { Producer::attach(ring, ring_len) }
        .map_err(|e| fail(format!("command ring: {e}")))?;
    let replies = region.layout().params.replies;
    let words = Words::new(region.layout().params.words);
    Ok(Client {
        sock_fd: sock.as_raw_fd(),
        sock: Mutex::new(sock),
        _mapping: mapping,
        region,
        producer,
        free_replies: Mutex::new((0..replies).rev().collect()),
        words,
        staging: Mutex::new(()),
        devices,
        dead: AtomicBool::new(false),
        pid: std::process::id(),
    })
}

thread_local! {
    static ENCODE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Encodes a message in the thread's reusable buffer (or a fresh one while the thread is
/// exiting: runtimes unload modules from exit handlers, after thread-locals are gone).
fn encoded<B: IntoBytes + Immutable, R>(
    op: Op,
    reply: u32,
    body: &B,
    tail: &[u8],
    send: impl FnOnce(&[u8]) -> R,
) -> R {
    let mut send = Some(send);
    let r = ENCODE.try_with(|b| {
        let mut b = b.borrow_mut();
        encode(op, reply, body, tail, &mut b);
        (send.take().expect("called once"))(&b)
    });
    match r {
        Ok(r) => r,
        Err(_) => {
            let mut b = Vec::new();
            encode(op, reply, body, tail, &mut b);
            (send.take().expect("not called"))(&b)
        }
    }
}

impl Client {
    /// Whether the daemon is still there: its end of the control socket is open. A thread
    /// that is itself using the socket proves it is.
    pub(crate) fn alive(&self) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(_guard) = self.sock.try_lock() else {
            return true;
        };
        let mut p = libc::pollfd {
            fd: self.sock_fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        // With no request outstanding the daemon never writes, so readability means hang-up.
        let gone = n > 0
            && p.revents & (libc::POLLIN | libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
        if gone {
            self.mark_dead();
        }
        !gone
    }

    fn mark_dead(&self) {
        if !self.dead.swap(true, Ordering::Relaxed) {
            eprintln!("baton: lost the connection to the Baton daemon; CUDA calls now fail with CUDA_ERROR_DEVICE_UNAVAILABLE");
        }
    }

    fn push(&self, msg: &[u8]) -> Result<(), CUresult> {
        self.producer
            .push(msg, &|| self.alive())
            .map(|_| ())
            .map_err(|_| {
                self.mark_dead();
                CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE
            })
    }

    /// Sends a command whose result nobody waits for (errors surface at the next sync).
    pub fn post<B: IntoBytes + Immutable>(
        &self,
        op: Op,
        body: &B,
        tail: &[u8],
    ) -> Result<(), CUresult> {
        encoded(op, NO_REPLY, body, tail, |m| self.push(m))
    }

    /// Sends a command and waits for its answer.
    pub fn call<B: IntoBytes + Immutable>(
        &self,
        op: Op,
        body: &B,
        tail: &[u8],
    ) -> Result<Reply, CUresult> {
        let idx = lock(&self.free_replies)
            .pop()
            .ok_or(CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
        let r = self.call_in(idx, op, body, tail);
        lock(&self.free_replies).push(idx);
        r
    }

    fn call_in<B: IntoBytes + Immutable>(
        &self,
        idx: u32,
        op: Op,
        body: &B,
        tail: &[u8],
    ) -> Result<Reply, CUresult> {
        let slot = self.region.reply(idx).ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
        slot.state.store(REPLY_PENDING, Ordering::Relaxed);
        encoded(op, idx, body, tail, |m| self.push(m))?;
        // Spin (most answers come within microseconds, and a synchronisation with a short
        // job's GPU work within a few hundred, where waking from a sleep would add tens of
        // microseconds; the driver spins too), then sleep on the futex, checking now and
        // then that the daemon is still there.
        let spin_until = Instant::now() + REPLY_SPIN;
        loop {
            if slot.state.load(Ordering::Acquire) == REPLY_DONE {
                break;
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            baton_ipc::futex::wait(&slot.state, REPLY_PENDING, Some(Duration::from_millis(50)));
            if slot.state.load(Ordering::Acquire) != REPLY_DONE && !self.alive() {
                return Err(CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE);
            }
        }
        let result = slot.result.load(Ordering::Relaxed);
        let values = std::array::from_fn(|i| slot.values[i].load(Ordering::Relaxed));
        let n = (slot.payload_len.load(Ordering::Relaxed) as usize).min(slot.payload.len());
        let payload = slot.payload[..n].to_vec();
        slot.state.store(REPLY_IDLE, Ordering::Relaxed);
        if result != 0 {
            return Err(CUresult(result));
        }
        Ok(Reply { values, payload })
    }

    /// A control-socket request (module images, pinned memory).
    pub fn control(
        &self,
        req: &Request,
        raw: &[u8],
    ) -> Result<(Response, Vec<std::os::fd::OwnedFd>), CUresult> {
        let sock = lock(&self.sock);
        let r = (|| {
            control::send(&sock, req, &[])?;
            if !raw.is_empty() {
                (&*sock).write_all(raw)?;
            }
            control::recv::<Response>(&sock)
        })();
        r.map_err(|_| {
            self.mark_dead();
            CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE
        })
    }
}
