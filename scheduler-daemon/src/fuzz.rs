//! Fuzz harnesses: everything a client can write to the daemon, fed from raw bytes.
//!
//! The bodies live here rather than in `fuzz/` so that the stable test suite runs them too
//! (over seed inputs and random bytes) and they cannot rot while nobody runs the fuzzers.
//! `fuzz/fuzz_targets/*.rs` are one-line wrappers; see "Fuzzing" in `docs/operations.md`.
//! Each harness panics only when the daemon misbehaves: a crash, or a broken invariant.

pub use crate::session::fuzz::session;

use crate::executor::sim::SimExecutor;
use crate::host_memory::HostArena;
use crate::server::Daemon;
use baton_ipc::control::{self, Request, Response};
use baton_ipc::protocol::{self as p, FunctionInfo, Message, Op};
use baton_ipc::region::Region;
use baton_ipc::ring::{Consumer, Producer, RingLayout, HEADER_SIZE, SLOT_SIZE};
use baton_ipc::shm::SharedRegion;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Reads fuzz input as a stream of values; past the end every value is zero, so any input is
/// a complete program.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }
    /// Up to `max` bytes, the count taken from the input.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (self.u16() as usize % (max + 1)).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    /// A value that is usually small or at an edge, where bugs live, and sometimes anything.
    pub fn interesting(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => 0,
            1 => u64::MAX - (self.u8() as u64),
            2 => 1u64 << (self.u8() % 64),
            3 => (1u64 << (self.u8() % 64)).wrapping_sub(1),
            4 | 5 => self.u8() as u64,
            6 => self.u16() as u64,
            _ => self.u64(),
        }
    }
}

/// Decodes `bytes` as one ring command the way the session does, and checks the decoder's
/// promises: a decoded message has at least its op's fixed body, which then always splits.
pub fn command(bytes: &[u8]) {
    if let Ok(m) = Message::decode(bytes) {
        assert_eq!(m.body.len() + 8, bytes.len());
        assert!(m.body.len() >= m.op.body_size());
        assert_eq!(Op::from_u16(m.op as u16), Some(m.op));
        let tail = split_body(&m);
        assert_eq!(tail, m.body.len() - m.op.body_size());
    }
    if let Some(fi) = FunctionInfo::decode(bytes) {
        assert!(fi.params.len() <= p::MAX_PARAMS / 4);
        let mut again = Vec::new();
        fi.encode(&mut again);
        assert_eq!(FunctionInfo::decode(&again).as_ref(), Some(&fi));
        let _ = fi.params_size();
    }
}

/// Splits `m` into its op's body type; returns the tail length.
fn split_body(m: &Message<'_>) -> usize {
    macro_rules! tail {
        ($b:ty) => {
            m.split::<$b>()
                .expect("a decoded message splits into its body")
                .1
                .len()
        };
    }
    match m.op {
        Op::MemAlloc => tail!(p::MemAlloc),
        Op::MemFree => tail!(p::MemFree),
        Op::MemGetInfo | Op::CtxSynchronize => tail!(p::DeviceOnly),
        Op::LoadModule => tail!(p::LoadModule),
        Op::UnloadModule
        | Op::StreamDestroy
        | Op::EventDestroy
        | Op::StreamSynchronize
        | Op::EventSynchronize => tail!(p::ObjectId),
        Op::GetFunction | Op::GetGlobal => tail!(p::GetSymbol),
        Op::StreamCreate => tail!(p::StreamCreate),
        Op::EventCreate => tail!(p::EventCreate),
        Op::EventRecord => tail!(p::EventRecord),
        Op::StreamWaitEvent => tail!(p::StreamWaitEvent),
        Op::EventElapsedTime => tail!(p::EventPair),
        Op::StreamMark => tail!(p::StreamMark),
        Op::Launch => tail!(p::Launch),
        Op::Memset => tail!(p::Memset),
        Op::CopyDtoD | Op::CopyHtoDPinned | Op::CopyDtoHPinned => tail!(p::Copy),
        Op::CopyHtoDStaged | Op::CopyDtoHStaged => tail!(p::Staged),
        Op::FuncSetAttribute => tail!(p::FuncSetAttribute),
        Op::Occupancy => tail!(p::Occupancy),
        Op::CtxLimit => tail!(p::CtxLimit),
        Op::HostFunc => tail!(p::HostFunc),
        Op::MemAllocAsync => tail!(p::MemAllocAsync),
        Op::MemFreeAsync => tail!(p::MemFreeAsync),
        Op::Copy2D => tail!(p::Copy2D),
        Op::OccupancyClusters => tail!(p::OccupancyClusters),
        Op::VmmGranularity => tail!(p::VmmProp),
        Op::VmmReserve => tail!(p::VmmReserve),
        Op::VmmAddressFree | Op::VmmUnmap => tail!(p::VmmRange),
        Op::VmmCreate => tail!(p::VmmCreate),
        Op::VmmRelease
        | Op::CaptureEnd
        | Op::GraphExecDestroy
        | Op::GraphDestroy
        | Op::GraphNodeCount
        | Op::GraphNodeType
        | Op::GraphDestroyNode
        | Op::GraphClone
        | Op::ArrayDestroy
        | Op::TexObjectDestroy
        | Op::SurfObjectDestroy
        | Op::LinkDestroy
        | Op::GraphMemNode => tail!(p::ObjectId),
        Op::GraphMem => tail!(p::GraphMem),
        Op::LinkComplete => tail!(p::LinkComplete),
        Op::LinkRead => tail!(p::LinkRead),
        Op::VmmMap => tail!(p::VmmMap),
        Op::VmmSetAccess => tail!(p::VmmSetAccess),
        Op::VmmGetAccess => tail!(p::VmmGetAccess),
        Op::VmmRetain | Op::IpcGetMemHandle | Op::IpcCloseMemHandle => tail!(p::MemFree),
        Op::IpcGetEventHandle | Op::EventQuery => tail!(p::ObjectId),
        Op::IpcOpenMemHandle | Op::IpcOpenEventHandle | Op::VmmImport => tail!(p::IpcToken),
        Op::VmmExport | Op::MemPoolExport => tail!(p::VmmExport),
        Op::MemPoolCreate => tail!(p::MemPoolCreate),
        Op::MemPoolDestroy => tail!(p::ObjectId),
        Op::MemPoolAlloc => tail!(p::MemPoolAlloc),
        Op::MemPoolAttr => tail!(p::MemPoolAttr),
        Op::MemPoolTrim => tail!(p::MemPoolTrim),
        Op::MemPoolImport => tail!(p::IpcToken),
        Op::MemPoolExportPtr => tail!(p::MemFree),
        Op::MemPoolImportPtr => tail!(p::MemPoolImportPtr),
        Op::CaptureBegin => tail!(p::CaptureBegin),
        Op::ConditionalHandleCreate => tail!(p::ConditionalHandle),
        Op::CaptureToGraph => tail!(p::CaptureToGraph),
        Op::CaptureInfo => tail!(p::ObjectId),
        Op::CaptureDeps => tail!(p::CaptureDeps),
        Op::ModuleFunctions => tail!(p::ObjectId),
        Op::GraphInstantiate => tail!(p::GraphInstantiate),
        Op::GraphCreate => tail!(p::DeviceOnly),
        Op::GraphAddNode | Op::GraphSetNode => tail!(p::GraphNode),
        Op::GraphAddEdges => tail!(p::GraphEdges),
        Op::GraphGetNodes => tail!(p::GraphQuery),
        Op::GraphExecUpdate => tail!(p::GraphExecUpdate),
        Op::TensorMapEncode => tail!(p::TensorMapEncode),
        Op::GraphLaunch | Op::GraphUpload => tail!(p::GraphLaunch),
        Op::ArrayCreate => tail!(p::ArrayCreate),
        Op::Copy3D => tail!(p::Copy3D),
        Op::TexObjectCreate => tail!(p::TexObjectCreate),
        Op::SurfObjectCreate => tail!(p::SurfObjectCreate),
    }
}

/// The daemon's end of a command ring whose memory a hostile client scribbles on between
/// pops, interleaved with well-formed pushes. Checks that the consumer never panics, never
/// blocks past its timeout, never returns a message longer than the ring allows, and only
/// moves forward.
pub fn ring(data: &[u8]) {
    let mut inp = Input(data);
    let capacity = 2u32 << (inp.u8() % 5);
    let len = RingLayout::bytes(capacity);
    // u64s keep the memory 8-byte aligned, as the ring requires.
    let mut mem = vec![0u64; len.div_ceil(8)];
    let base = mem.as_mut_ptr().cast::<u8>();
    // SAFETY: `mem` is `len` writable, aligned bytes and outlives both ends of the ring.
    let mut consumer = unsafe { Consumer::init(base, len, capacity) }.expect("valid ring");
    // SAFETY: as above.
    let producer = unsafe { Producer::attach(base, len) }.expect("valid ring");
    let max = consumer.max_message();
    let mut out = Vec::new();
    let mut steps = 0;
    while !inp.is_empty() && steps < 256 {
        steps += 1;
        match inp.u8() % 6 {
            0 | 1 => {
                let before = consumer.position();
                match consumer.try_pop(&mut out) {
                    Ok(true) => {
                        assert!((1..=max).contains(&out.len()), "popped {} bytes", out.len());
                        let k = RingLayout::slots_for(out.len()) as u64;
                        assert_eq!(consumer.position(), before.wrapping_add(k));
                        command(&out);
                    }
                    Ok(false) => assert_eq!(consumer.position(), before),
                    // The daemon drops a client that corrupts its ring; so does this harness.
                    Err(_) => return,
                }
            }
            2 => {
                // A legitimate push, unless the scribbling left no room (never blocks: the
                // producer gives up when `alive` says so).
                let msg = inp.bytes(max);
                if !msg.is_empty() && room_for(base, capacity, msg.len()) {
                    let _ = producer.push(msg, &|| false);
                }
            }
            3 => {
                // A forged sequence number near the consumer's position, or anywhere.
                let slot = inp.u8() as usize % capacity as usize;
                let head = consumer.position();
                let seq = match inp.u8() % 4 {
                    0 => head.wrapping_add(inp.u8() as u64),
                    1 => head.wrapping_add(1).wrapping_add(slot as u64),
                    2 => head.wrapping_sub(inp.u8() as u64),
                    _ => inp.u64(),
                };
                write_u64(base, HEADER_SIZE + slot * SLOT_SIZE, seq);
            }
            4 => {
                // Arbitrary bytes anywhere in the ring, header included.
                let at = (inp.u32() as usize % len) & !7;
                let v = inp.u64();
                write_u64(base, at, v);
            }
            _ => {
                let t = Instant::now();
                let r = consumer.wait(Duration::ZERO, Duration::from_micros(inp.u8() as u64));
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "wait overran its timeout"
                );
                if r.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether a push of `len` bytes would be taken at once. The producer is the client's code: on
/// memory its own process scribbled on it may wait or spin (it trusts its own process), which
/// is no concern of the daemon's, so the harness only pushes where the slots are free.
fn room_for(base: *mut u8, capacity: u32, len: usize) -> bool {
    let tail = read_u64(base, 64);
    let last = tail.wrapping_add(RingLayout::slots_for(len) as u64 - 1);
    let slot = (last & (u64::from(capacity) - 1)) as usize;
    read_u64(base, HEADER_SIZE + slot * SLOT_SIZE) == last
}

fn read_u64(base: *mut u8, byte_offset: usize) -> u64 {
    // SAFETY: as for `write_u64`.
    let a = unsafe { std::sync::atomic::AtomicU64::from_ptr(base.add(byte_offset).cast()) };
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes ring memory as the client would: atomically, since the ring's ends hold shared
/// references to it.
fn write_u64(base: *mut u8, byte_offset: usize, v: u64) {
    debug_assert_eq!(byte_offset % 8, 0);
    // SAFETY: callers pass an 8-aligned offset inside the ring memory `base` points to, which
    // is live for the call; every access to that memory is atomic.
    let a = unsafe { std::sync::atomic::AtomicU64::from_ptr(base.add(byte_offset).cast()) };
    a.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Attaches the daemon's consumer to ring memory whose header is arbitrary bytes: it must
/// refuse it or accept a ring it can then pop from safely.
pub fn ring_attach(data: &[u8]) {
    let len = data.len().min(RingLayout::bytes(64));
    let mut mem = vec![0u64; len.div_ceil(8).max(1)];
    for (i, b) in data[..len].iter().enumerate() {
        mem[i / 8] |= (*b as u64) << (8 * (i % 8));
    }
    // SAFETY: `mem` holds at least `len` aligned bytes and outlives the consumer.
    if let Ok(mut c) = unsafe { Consumer::attach(mem.as_mut_ptr().cast(), len) } {
        assert!(RingLayout::bytes(c.capacity()) <= len);
        let mut out = Vec::new();
        for _ in 0..c.capacity() {
            match c.try_pop(&mut out) {
                Ok(true) => assert!((1..=c.max_message()).contains(&out.len())),
                _ => break,
            }
        }
    }
}

/// The daemon with the simulated GPU that the control harness talks to. One per process: the
/// pinned-memory reservation is a terabyte of address space.
struct ControlDaemon {
    daemon: Arc<Daemon>,
    sim: Arc<SimExecutor>,
    arena: Arc<HostArena>,
}

const CONTROL_POLICY: &str = r#"
[default]
memory_quota = "1MiB"

[[tenant]]
name = "big"
memory_quota = "unlimited"

[[tenant]]
name = "banned"
admit = false
"#;

fn control_daemon() -> &'static ControlDaemon {
    static D: OnceLock<ControlDaemon> = OnceLock::new();
    D.get_or_init(|| {
        let sim = Arc::new(SimExecutor::new());
        let arena = HostArena::reserve().expect("address space for pinned memory");
        let config = crate::config::Config::parse(CONTROL_POLICY).expect("valid policy");
        let daemon = Daemon::new(sim.clone(), arena.clone(), config).expect("daemon starts");
        ControlDaemon { daemon, sim, arena }
    })
}

/// How long the daemon may take to answer one request before the harness calls it hung.
const ANSWER_TIME: Duration = Duration::from_secs(5);

fn short_string(inp: &mut Input<'_>) -> Option<String> {
    match inp.u8() % 8 {
        0 => None,
        1 => Some("big".into()),
        2 => Some("banned".into()),
        3 => Some(" ".into()),
        4 => Some(["high", "normal", "low", "0", "7", "8", "-1"][inp.u8() as usize % 7].into()),
        _ => Some(String::from_utf8_lossy(inp.bytes(48)).into_owned()),
    }
}

/// A connection to the daemon's control socket, driven by `data` as a client would (or would
/// not): well-formed requests with hostile values, raw frames with any length prefix and body,
/// truncated frames, module images shorter than announced, and file descriptors attached to
/// frames. The harness reads each answer before sending on, and checks that the daemon answers
/// a complete request in time, and that when the client is gone the daemon holds nothing of it:
/// no session, no pinned memory, no device memory or registration, no file descriptor.
pub fn control(data: &[u8]) {
    control_checked(data, true)
}

/// `check_fds`: count the process's file descriptors (only sound when nothing else in the
/// process opens any meanwhile, as in the fuzzer; not in a parallel test run).
pub fn control_checked(data: &[u8], check_fds: bool) {
    let d = control_daemon();
    let fds_before = check_fds.then(open_fds);
    let mut inp = Input(data);
    let (client, server) = UnixStream::pair().expect("socket pair");
    client
        .set_read_timeout(Some(ANSWER_TIME))
        .expect("read timeout");
    let daemon = d.daemon.clone();
    let conn = std::thread::spawn(move || daemon.connection(server));
    let mut region: Option<(SharedRegion, Producer)> = None;
    let mut addrs: Vec<u64> = Vec::new();
    for _ in 0..32 {
        if inp.is_empty() {
            break;
        }
        let mut frame = Vec::new();
        let mut fds = 0;
        // Bytes the request announces beyond its frame (an image); `complete` is false when
        // the client sends less than it announced, so the daemon waits for more.
        let mut complete = true;
        let req = match inp.u8() % 8 {
            0 => Some(Request::Hello {
                version: if inp.u8() % 8 == 0 {
                    inp.u32()
                } else {
                    control::PROTOCOL_VERSION
                },
                pid: inp.u32(),
                tenant: short_string(&mut inp),
                class: short_string(&mut inp),
            }),
            1 => {
                let len = match inp.u8() % 4 {
                    0 => inp.interesting(),
                    _ => inp.u8() as u64,
                };
                let image = inp.bytes(1024);
                let mut f = Vec::new();
                push_frame(&mut f, &Request::AttachBlob { len });
                f.extend_from_slice(&image[..image.len().min(len as usize)]);
                complete = (image.len() as u64) >= len || len > control::MAX_BLOB;
                frame = f;
                None
            }
            2 => Some(Request::AllocHost {
                len: match inp.u8() % 4 {
                    0 => inp.interesting(),
                    _ => inp.u32() as u64 % (8 << 20),
                },
            }),
            3 => Some(Request::FreeHost {
                addr: match inp.u8() % 2 {
                    0 => addrs
                        .get(inp.u8() as usize % addrs.len().max(1))
                        .copied()
                        .unwrap_or(0)
                        .wrapping_add(inp.u8() as u64 % 2 * 4096),
                    _ => inp.interesting(),
                },
            }),
            4 => Some(Request::Status),
            5 => {
                // A raw frame: any length prefix, any body.
                let body = inp.bytes(512);
                let len = match inp.u8() % 4 {
                    0 => inp.u32(),
                    _ => body.len() as u32,
                };
                frame.extend_from_slice(&len.to_le_bytes());
                frame.extend_from_slice(body);
                complete = len as usize <= body.len();
                None
            }
            6 => {
                // Well-formed JSON of the wrong shape.
                let bodies: [&[u8]; 8] = [
                    br#"{"type":"AllocHost","len":-1}"#,
                    br#"{"type":"AttachBlob","len":1e30}"#,
                    br#"{"type":"FreeHost"}"#,
                    br#"{"type":"Hello","version":1,"pid":1,"tenant":7,"class":null}"#,
                    br#"{"type":"Nope"}"#,
                    br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]"#,
                    br#"{"type":"Status","type":"Status"}"#,
                    b"",
                ];
                let body = bodies[inp.u8() as usize % bodies.len()];
                frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
                frame.extend_from_slice(body);
                None
            }
            _ => {
                fds = inp.u8() % 8;
                Some(Request::Status)
            }
        };
        if let Some(req) = req {
            push_frame(&mut frame, &req);
        }
        // Sometimes the client stops mid-frame.
        if inp.u8() % 16 == 0 {
            let keep = inp.u8() as usize % frame.len().max(1);
            frame.truncate(keep);
            complete = false;
        }
        if send_raw(&client, &frame, fds).is_err() {
            break;
        }
        if !complete {
            break;
        }
        match control::recv::<Response>(&client) {
            Ok((resp, mut got)) => match resp {
                Response::Welcome { region_len, .. } => {
                    let fd = got.pop().expect("Welcome carries the region");
                    let map = SharedRegion::map(fd, region_len as usize, None).expect("map");
                    // SAFETY: the mapping is the daemon's region, kept alive alongside.
                    let r = unsafe { Region::attach(map.as_ptr(), map.len()) }.expect("region");
                    let (ring, ring_len) = r.ring();
                    // SAFETY: the ring lies inside the mapping kept with it.
                    let producer = unsafe { Producer::attach(ring, ring_len) }.expect("ring");
                    region = Some((map, producer));
                }
                Response::HostChunk { addr, .. } => {
                    assert_eq!(got.len(), 1, "a pinned chunk comes with its memfd");
                    addrs.push(addr);
                }
                _ => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the daemon did not answer a complete request in {ANSWER_TIME:?}")
            }
            // The daemon hung up mid-answer (e.g. after refusing the client).
            Err(_) => break,
        }
    }
    drop(client);
    // A client's exit closes its ring: that wakes the session thread at once.
    if let Some((_, producer)) = &region {
        producer.close();
    }
    conn.join().expect("connection thread");
    let deadline = Instant::now() + ANSWER_TIME;
    while !d.daemon.status().clients.is_empty() {
        assert!(Instant::now() < deadline, "a session outlived its client");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(region);
    assert_eq!(
        d.sim.live_objects(),
        0,
        "the client's GPU objects outlived it"
    );
    assert_eq!(
        d.arena.free_bytes(),
        d.arena.reserved_bytes(),
        "the client's pinned memory outlived it"
    );
    if let Some(before) = fds_before {
        assert_eq!(open_fds(), before, "file descriptors leaked");
    }
}

/// Frames `req` as `control::send` would (written out here: the daemon has no JSON writer).
fn push_frame(out: &mut Vec<u8>, req: &Request) {
    fn string(s: &Option<String>) -> String {
        let Some(s) = s else {
            return "null".into();
        };
        let mut j = String::from('"');
        for c in s.chars() {
            match c {
                '"' => j.push_str("\\\""),
                '\\' => j.push_str("\\\\"),
                c if (c as u32) < 0x20 => j.push_str(&format!("\\u{:04x}", c as u32)),
                c => j.push(c),
            }
        }
        j.push('"');
        j
    }
    let body = match req {
        Request::Hello {
            version,
            pid,
            tenant,
            class,
        } => format!(
            r#"{{"type":"Hello","version":{version},"pid":{pid},"tenant":{},"class":{}}}"#,
            string(tenant),
            string(class)
        ),
        Request::AttachBlob { len } => format!(r#"{{"type":"AttachBlob","len":{len}}}"#),
        Request::AllocHost { len } => format!(r#"{{"type":"AllocHost","len":{len}}}"#),
        Request::FreeHost { addr } => format!(r#"{{"type":"FreeHost","addr":{addr}}}"#),
        Request::Status => r#"{"type":"Status"}"#.into(),
    };
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body.as_bytes());
}

/// Writes `bytes`, with `fds` copies of a descriptor attached to the first part.
fn send_raw(sock: &UnixStream, bytes: &[u8], fds: u8) -> std::io::Result<()> {
    use std::io::Write;
    if fds == 0 || bytes.is_empty() {
        return (&*sock).write_all(bytes);
    }
    let devnull = std::fs::File::open("/dev/null")?;
    let raw: Vec<i32> = (0..fds).map(|_| devnull.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let sent = nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    (&*sock).write_all(&bytes[sent..])
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Images a client attached and has not loaded count against one bound together, so a
    /// client cannot make the daemon hold unbounded memory by never loading them.
    #[test]
    fn waiting_images_are_bounded_together() {
        // Its own daemon: the harness's checks that clients leave nothing behind run alongside.
        let daemon = Daemon::new(
            Arc::new(SimExecutor::new()),
            HostArena::reserve().unwrap(),
            crate::config::Config::default(),
        )
        .unwrap();
        let (client, server) = UnixStream::pair().unwrap();
        client.set_read_timeout(Some(ANSWER_TIME)).unwrap();
        let conn = std::thread::spawn(move || daemon.connection(server));
        let mut f = Vec::new();
        push_frame(
            &mut f,
            &Request::Hello {
                version: control::PROTOCOL_VERSION,
                pid: 1,
                tenant: None,
                class: None,
            },
        );
        push_frame(&mut f, &Request::AttachBlob { len: 10 });
        f.extend_from_slice(&[7; 10]);
        send_raw(&client, &f, 0).unwrap();
        let (welcome, fds) = control::recv::<Response>(&client).unwrap();
        assert!(matches!(welcome, Response::Welcome { .. }));
        let (blob, _) = control::recv::<Response>(&client).unwrap();
        assert!(matches!(blob, Response::Blob { .. }));
        // Alone this image would be accepted; with the first one still waiting it is not.
        f.clear();
        push_frame(
            &mut f,
            &Request::AttachBlob {
                len: control::MAX_BLOB - 5,
            },
        );
        send_raw(&client, &f, 0).unwrap();
        let (refused, _) = control::recv::<Response>(&client).unwrap();
        assert!(matches!(refused, Response::Error { .. }), "{refused:?}");
        drop(client);
        drop(fds);
        conn.join().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn command_harness(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            command(&bytes);
        }

        #[test]
        fn requests_are_framed_as_the_client_frames_them(
            tenant in proptest::option::of(".{0,12}"),
            version in any::<u32>(),
        ) {
            let req = Request::Hello { version, pid: 3, tenant, class: Some("a\"\\\n".into()) };
            let mut f = Vec::new();
            push_frame(&mut f, &req);
            let (a, b) = UnixStream::pair().unwrap();
            std::io::Write::write_all(&mut &a, &f).unwrap();
            prop_assert_eq!(control::recv::<Request>(&b).unwrap().0, req);
        }

        #[test]
        fn control_harness(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            control_checked(&bytes, false);
        }

        #[test]
        fn ring_harness(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            ring(&bytes);
            ring_attach(&bytes);
        }
    }
}
