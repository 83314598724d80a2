//! The control socket: hello and session set-up, shared-memory file descriptors, module images,
//! status. Frames are a little-endian `u32` length and a JSON body; file descriptors travel as
//! `SCM_RIGHTS` with the frame that announces them. Rare, so clarity beats speed here; the hot
//! path is the ring.

use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Protocol version a client states in `Hello`; the daemon refuses others.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest JSON frame accepted.
pub const MAX_FRAME: usize = 16 << 20;

/// Largest request frame the daemon accepts: every request is a few hundred bytes (tenant and
/// class names are at most [`MAX_NAME_LEN`] bytes; module images follow as raw bytes).
pub const MAX_REQUEST: usize = 64 << 10;

/// Longest tenant or class name a client may give, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Largest module image accepted in one `AttachBlob`.
pub const MAX_BLOB: u64 = 4 << 30;

/// Environment variable naming the daemon's socket.
pub const SOCKET_ENV: &str = "BATON_SOCKET";
/// The socket used when `BATON_SOCKET` is unset.
pub const DEFAULT_SOCKET: &str = "/run/baton/baton.sock";

/// Where clients look for the daemon: `$BATON_SOCKET`, else the system path.
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum Request {
    /// First message of a client. `tenant` and `class` come from the client's environment.
    Hello {
        version: u32,
        pid: u32,
        tenant: Option<String>,
        class: Option<String>,
    },
    /// Followed on the socket by `len` raw bytes (a module image); answered by `Blob`.
    AttachBlob {
        len: u64,
    },
    /// Pinned host memory: answered by `HostChunk` with the memfd to map at `addr`.
    AllocHost {
        len: u64,
    },
    FreeHost {
        addr: u64,
    },
    /// The daemon's clients, as far as the policy lets the asker see them: the operator (root
    /// or the daemon's own user) sees every client, anyone else the clients of its own uid.
    /// Answered only to a uid the policy admits.
    Status,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum Response {
    /// Sent with the session region's memfd.
    Welcome {
        session: u64,
        driver_version: i32,
        devices: Vec<DeviceInfo>,
        region_len: u64,
    },
    Blob {
        id: u64,
    },
    /// Sent with the chunk's memfd; the client maps it at exactly `addr`.
    HostChunk {
        addr: u64,
        len: u64,
    },
    Ok,
    Status(StatusReport),
    /// `code` is the `CUresult` the client should return.
    Error {
        code: u32,
        message: String,
    },
}

/// What the shim needs to answer device queries locally.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: u32,
    pub name: String,
    pub uuid: [u8; 16],
    pub total_mem: u64,
    pub pci_bus_id: String,
    /// `(CUdevice_attribute, value)` for every attribute the driver answered.
    pub attributes: Vec<(i32, i32)>,
}

impl DeviceInfo {
    pub fn attribute(&self, attr: i32) -> Option<i32> {
        self.attributes
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|&(_, v)| v)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub daemon_pid: u32,
    pub executor: String,
    /// The scheduling policy ("passthrough", "priority", "fair", "srpt").
    #[serde(default)]
    pub policy: String,
    pub devices: Vec<String>,
    pub clients: Vec<ClientStatus>,
    /// Kernel faults that ended the shared GPU context (and every client's work) since the
    /// daemon started.
    #[serde(default)]
    pub context_faults: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientStatus {
    pub session: u64,
    pub pid: u32,
    pub uid: u32,
    pub tenant: String,
    pub memory_bytes: u64,
    /// The tenant's memory quota; `None`: unlimited.
    #[serde(default)]
    pub memory_quota: Option<u64>,
    /// The tenant's class from the policy file ("high", "normal", "low" or a level).
    #[serde(default)]
    pub class: String,
    pub commands: u64,
    pub launches: u64,
    /// Work items (launches, copies, memsets) the scheduler holds back. `None` under
    /// `passthrough`, which holds nothing back and does not track work.
    #[serde(default)]
    pub queued: Option<u64>,
    /// Work items issued to the GPU and not yet seen complete; `None` under `passthrough`.
    #[serde(default)]
    pub in_flight: Option<u64>,
    /// GPU time measured for the client's work since it connected, in nanoseconds; `None`
    /// under `passthrough`.
    #[serde(default)]
    pub gpu_time_ns: Option<u64>,
    /// The client's share (0 to 1) of the GPU time measured for connected clients, recent work
    /// weighing most; `None` under `passthrough`.
    #[serde(default)]
    pub gpu_share: Option<f64>,
    /// From the daemon reading a command off the client's ring to issuing it to the driver.
    #[serde(default)]
    pub queue_delay: DelaySummary,
}

/// A distribution of delays (all of a client's since it connected).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DelaySummary {
    pub count: u64,
    pub sum_ns: u64,
    /// `None` without samples. Percentiles are accurate to within a quarter (upper bounds).
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
}

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Sends one frame with optional file descriptors.
pub fn send<T: Serialize>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = (body.len() as u32).to_le_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(&body)];
    let cmsg;
    let cmsgs: &[nix::sys::socket::ControlMessage] = if fds.is_empty() {
        &[]
    } else {
        cmsg = [nix::sys::socket::ControlMessage::ScmRights(fds)];
        &cmsg
    };
    let total = len.len() + body.len();
    let sent = nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(to_io)?;
    if sent < total {
        // The descriptors went with the first part; the rest is plain bytes.
        let mut rest = Vec::with_capacity(total - sent);
        rest.extend_from_slice(&len);
        rest.extend_from_slice(&body);
        (&*sock).write_all(&rest[sent..])?;
    }
    Ok(())
}

/// Receives one frame and any file descriptors sent with it. On a socket with a read timeout
/// (or a non-blocking one) a frame that has not arrived in time is an error of kind
/// `WouldBlock`, never a wait past the timeout.
pub fn recv<T: for<'de> Deserialize<'de>>(sock: &UnixStream) -> io::Result<(T, Vec<OwnedFd>)> {
    // `read` reads on until the frame is complete; `None` means the socket said WouldBlock.
    FrameReader::new(MAX_FRAME, None)
        .read(sock)?
        .ok_or_else(|| io::ErrorKind::WouldBlock.into())
}

/// [`recv`] for frames of at most `max` bytes whose buffer is charged to `budget` while it fills.
pub fn recv_within<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
    max: usize,
    budget: &std::sync::Arc<Budget>,
) -> io::Result<(T, Vec<OwnedFd>)> {
    FrameReader::new(max, Some(budget.clone()))
        .read(sock)?
        .ok_or_else(|| io::ErrorKind::WouldBlock.into())
}

/// Bytes that partly received frames may hold, shared by every connection of a daemon: a
/// frame's buffer grows only as its bytes arrive, and only while the budget has room.
#[derive(Debug)]
pub struct Budget {
    left: std::sync::atomic::AtomicUsize,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget { left: bytes.into() }
    }

    /// Takes `n` bytes; `false` (and nothing taken) when fewer are left.
    pub fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(n))
            .is_ok()
    }

    pub fn give(&self, n: usize) {
        self.left.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// Bytes not taken.
    pub fn left(&self) -> usize {
        self.left.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A frame's body is read at most this much at a time, so its buffer grows with what arrived
/// rather than with what the length prefix announced.
const READ_STEP: usize = 64 << 10;

/// Assembles one frame from whatever the socket has, blocking or not: call [`FrameReader::read`]
/// until it returns the frame. On a non-blocking socket it returns `Ok(None)` when no more
/// bytes are there yet.
pub struct FrameReader {
    max: usize,
    budget: Option<std::sync::Arc<Budget>>,
    head: [u8; 4],
    got: usize,
    body: Vec<u8>,
    /// Bytes of `budget` this reader holds.
    held: usize,
    fds: Vec<OwnedFd>,
}

impl FrameReader {
    /// A reader for frames of at most `max` bytes, whose buffer is charged to `budget`.
    pub fn new(max: usize, budget: Option<std::sync::Arc<Budget>>) -> FrameReader {
        FrameReader {
            max,
            budget,
            head: [0; 4],
            got: 0,
            body: Vec::new(),
            held: 0,
            fds: Vec::new(),
        }
    }

    /// Whether some of a frame has arrived.
    pub fn started(&self) -> bool {
        self.got > 0
    }

    /// Reads what is there; the frame once it is complete.
    pub fn read<T: for<'de> Deserialize<'de>>(
        &mut self,
        sock: &UnixStream,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        while self.got < 4 {
            let n = match recv_with_fds(sock, &mut self.head[self.got..], &mut self.fds) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.got += n;
        }
        let len = u32::from_le_bytes(self.head) as usize;
        if len > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is too large (at most {})", self.max),
            ));
        }
        while self.body.len() < len {
            let have = self.body.len();
            let step = (len - have).min(READ_STEP);
            if let Some(b) = &self.budget {
                if !b.take(step) {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        "the daemon's budget for incoming frames is spent",
                    ));
                }
            }
            self.held += step;
            self.body.resize(have + step, 0);
            let r = recv_with_fds(sock, &mut self.body[have..], &mut self.fds);
            let n = *r.as_ref().unwrap_or(&0);
            self.body.truncate(have + n);
            self.unhold(step - n);
            match r {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let msg = serde_json::from_slice(&self.body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        let fds = std::mem::take(&mut self.fds);
        self.got = 0;
        self.body = Vec::new();
        self.unhold(self.held);
        Ok(Some((msg?, fds)))
    }

    fn unhold(&mut self, n: usize) {
        self.held -= n;
        if let Some(b) = &self.budget {
            b.give(n);
        }
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.unhold(self.held);
    }
}

/// Most descriptors one frame carries.
pub const MAX_FDS: usize = 4;

/// One `recvmsg` into `buf`; descriptors that came with it are appended to `fds`.
///
/// When a peer sends more descriptors than fit in our control buffer, the kernel installs the
/// ones that fit, closes the rest and flags `MSG_CTRUNC`. Those installed are ours to close, so
/// they are taken over before the message is refused (nix's iterator refuses to walk a
/// truncated buffer, which leaked them: a client could exhaust the daemon's descriptors).
fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    // Exactly CMSG_SPACE(MAX_FDS descriptors): a 16-byte `cmsghdr` and the descriptors, in
    // u64s so the buffer is aligned for the header.
    let mut cspace = [0u64; (16 + MAX_FDS * 4) / 8];
    let mut iov = [IoSliceMut::new(buf)];
    // SAFETY: an all-zero `msghdr` is valid (null pointers, zero lengths); it is filled below.
    let mut hdr: libc::msghdr = unsafe { core::mem::zeroed() };
    hdr.msg_iov = iov.as_mut_ptr().cast();
    hdr.msg_iovlen = 1;
    hdr.msg_control = cspace.as_mut_ptr().cast();
    hdr.msg_controllen = core::mem::size_of_val(&cspace) as _;
    // SAFETY: `hdr` points at one live iovec (`IoSliceMut` is ABI-compatible with `iovec`) and
    // at `cspace`, both outliving the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let control_end = cspace.as_ptr() as usize + hdr.msg_controllen as usize;
    // SAFETY: the kernel filled `hdr.msg_control` with `msg_controllen` bytes of well-formed
    // control messages (truncated ones included); CMSG_FIRSTHDR/CMSG_NXTHDR stay inside them.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the control buffer (see above).
        let (level, kind, clen) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: as above; the data follows the header.
            let data = unsafe { libc::CMSG_DATA(c) };
            // SAFETY: a pure size computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            // `cmsg_len` is a `size_t` on glibc but not on every libc.
            #[allow(clippy::unnecessary_cast)]
            let count = (clen as usize).saturating_sub(header) / core::mem::size_of::<RawFd>();
            let room = control_end.saturating_sub(data as usize) / core::mem::size_of::<RawFd>();
            for i in 0..count.min(room) {
                // SAFETY: inside the control data (bounded by `room`); the kernel writes ints
                // there, possibly unaligned for our purposes.
                let fd = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                // SAFETY: SCM_RIGHTS hands us fresh descriptors that nothing else owns.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(&hdr, c) };
    }
    if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_FDS} file descriptors with one frame"),
        ));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_fds_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = crate::shm::SharedRegion::create("t", 4096).unwrap();
        send(
            &a,
            &Request::AllocHost { len: 4096 },
            &[file.fd().as_raw_fd()],
        )
        .unwrap();
        let (m, fds): (Request, _) = recv(&b).unwrap();
        assert_eq!(m, Request::AllocHost { len: 4096 });
        assert_eq!(fds.len(), 1);
        send(
            &b,
            &Response::Error {
                code: 2,
                message: "no".into(),
            },
            &[],
        )
        .unwrap();
        let (r, fds): (Response, _) = recv(&a).unwrap();
        assert!(fds.is_empty());
        assert_eq!(
            r,
            Response::Error {
                code: 2,
                message: "no".into()
            }
        );
    }

    #[test]
    fn oversized_frame_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&(u32::MAX).to_le_bytes()).unwrap();
        assert!(recv::<Request>(&b).is_err());
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// Found by the control-socket fuzzer: a frame with more descriptors than the receiver
    /// has room for used to leak the ones the kernel had installed.
    /// A read timeout ends the wait with an error: the watchdog's health check and the device
    /// plugin's probe rely on it to find a daemon that accepts but never answers.
    #[test]
    fn a_frame_that_does_not_come_in_time_is_an_error() {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(recv::<Response>(&a).map(|_| ()).map_err(|e| e.kind()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("recv waited past its read timeout");
        assert_eq!(got, Err(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn too_many_descriptors_are_refused_and_closed() {
        let file = crate::shm::SharedRegion::create("t", 4096).unwrap();
        let raw = [file.fd().as_raw_fd(); 3 * MAX_FDS];
        // Other tests open descriptors too; the leak this guards against is MAX_FDS per frame.
        let before = open_fds();
        for _ in 0..8 {
            // A refused frame leaves the stream unsynchronised: one pair each.
            let (a, b) = UnixStream::pair().unwrap();
            send(&a, &Request::Status, &raw).unwrap();
            assert!(recv::<Request>(&b).is_err());
        }
        assert!(open_fds() < before + 8 * MAX_FDS, "descriptors leaked");
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &Request::Status, &raw[..MAX_FDS]).unwrap();
        assert_eq!(recv::<Request>(&b).unwrap().1.len(), MAX_FDS);
    }

    /// A length prefix alone takes no memory; the buffer grows with the bytes that came, and
    /// only within the budget, which a reader gives back when it is dropped.
    #[test]
    fn frame_buffers_grow_with_what_arrives_within_the_budget() {
        let budget = std::sync::Arc::new(Budget::new(3 * READ_STEP));
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        (&a).write_all(&(MAX_FRAME as u32).to_le_bytes()).unwrap();
        let mut r = FrameReader::new(MAX_FRAME, Some(budget.clone()));
        assert!(r.read::<Request>(&b).unwrap().is_none());
        assert_eq!(
            budget.left(),
            3 * READ_STEP,
            "nothing held for bytes not sent"
        );
        (&a).write_all(&[b' '; 1000]).unwrap();
        assert!(r.read::<Request>(&b).unwrap().is_none());
        assert_eq!(budget.left(), 3 * READ_STEP - 1000);
        // Past the budget the frame is refused.
        let big = vec![b' '; 4 * READ_STEP];
        std::thread::spawn(move || {
            let _ = (&a).write_all(&big);
        });
        let err = loop {
            match r.read::<Request>(&b) {
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Ok(Some(_)) => panic!("an oversized frame was accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        drop(r);
        assert_eq!(
            budget.left(),
            3 * READ_STEP,
            "a dropped reader gives its bytes back"
        );
        // Small frames still fit.
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &Request::Status, &[]).unwrap();
        let mut r = FrameReader::new(MAX_FRAME, Some(budget.clone()));
        assert_eq!(r.read::<Request>(&b).unwrap().unwrap().0, Request::Status);
        assert_eq!(budget.left(), 3 * READ_STEP);
    }

    #[test]
    fn peer_hang_up_is_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert_eq!(
            recv::<Request>(&b).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn status_of_an_older_daemon_still_parses() {
        let old = r#"{"type":"Status","daemon_pid":7,"executor":"sim","devices":[],
            "clients":[{"session":1,"pid":2,"uid":3,"tenant":"a","memory_bytes":4,
            "commands":5,"launches":6}]}"#;
        let Response::Status(r) = serde_json::from_str(old).unwrap() else {
            panic!("not a status");
        };
        assert_eq!(r.policy, "");
        let c = &r.clients[0];
        assert_eq!((c.launches, c.queued, c.gpu_share), (6, None, None));
        assert_eq!(c.queue_delay, DelaySummary::default());
    }
}
