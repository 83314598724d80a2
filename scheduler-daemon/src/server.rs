//! The control socket: accepts clients, sets up their sessions, serves their control requests
//! (module images, pinned host memory) and `status`.

use crate::config::PolicyKind;
use crate::executor::Executor;
use crate::fault::{FaultMonitor, Witness};
use crate::host_memory::HostArena;
use crate::scheduler::device::{DeviceScheduler, TenantFigures};
use crate::session::{lock, Identity, Session, Shared};
use baton_ipc::control::{
    self, ClientStatus, Request, Response, StatusReport, MAX_BLOB, PROTOCOL_VERSION,
};
use baton_ipc::region::{Layout, Params, Region};
use baton_ipc::shm::SharedRegion;
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

/// Daemon-wide state shared by all connection and session threads.
pub struct Daemon {
    pub exec: Arc<dyn Executor>,
    /// Swapped whole on SIGHUP (`replace_config`); a client's policy is resolved once, at connect.
    config: RwLock<Arc<crate::config::Config>>,
    arena: Arc<HostArena>,
    params: Params,
    sessions: Mutex<HashMap<u64, Arc<Shared>>>,
    next_session: AtomicU64,
    /// One per device; none under `passthrough`, whose sessions issue without asking anyone.
    schedulers: Arc<[Arc<DeviceScheduler>]>,
    /// Memory, events and allocations sessions shared with each other (`cuIpc*`, exports).
    sharing: Arc<crate::session::sharing::Registry>,
    /// Kernel faults in the shared context and the generations they end.
    pub monitor: Arc<FaultMonitor>,
    /// The listening socket (a duplicate), to hand to a fresh image of batond when the driver
    /// cannot reset a faulted context in this process.
    listener: Mutex<Option<UnixListener>>,
}

/// How often the fault thread asks each device whether its context is poisoned while clients
/// are connected: a fault must be noticed even when every tenant waits on work that will never
/// complete (held by the scheduler behind it) and so makes no driver call of its own.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

impl Daemon {
    pub fn new(
        exec: Arc<dyn Executor>,
        arena: Arc<HostArena>,
        config: crate::config::Config,
    ) -> Result<Arc<Daemon>, String> {
        let policy = config.daemon.policy;
        let schedulers = match policy {
            PolicyKind::Passthrough => Vec::new(),
            _ => (0..exec.devices().len() as u32)
                .map(|d| {
                    DeviceScheduler::start(exec.clone(), d, &config.daemon).map_err(|e| {
                        format!("starting the {} scheduler on GPU {d}: {e}", policy.name())
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let d = Arc::new(Daemon {
            exec,
            config: RwLock::new(Arc::new(config)),
            arena,
            params: Params::DEFAULT,
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            schedulers: schedulers.into(),
            sharing: Default::default(),
            monitor: Arc::new(FaultMonitor::default()),
            listener: Mutex::new(None),
        });
        let weak = Arc::downgrade(&d);
        std::thread::Builder::new()
            .name("baton-faults".into())
            .spawn(move || fault_thread(weak))
            .map_err(|e| format!("starting the fault thread: {e}"))?;
        Ok(d)
    }

    /// Recovers from a reported fault, or probes the devices when clients are connected.
    fn watch_faults(&self) {
        if let Some(fault) = self.monitor.next_fault(PROBE_INTERVAL) {
            let sessions: Vec<Arc<Shared>> = lock(&self.sessions).values().cloned().collect();
            let rec = crate::fault::recover(
                &*self.exec,
                &self.monitor,
                &self.schedulers,
                &sessions,
                &self.sharing,
                fault,
            );
            if !rec.reset {
                self.restart();
            }
            return;
        }
        if lock(&self.sessions).is_empty() {
            return;
        }
        let seen = self.monitor.generation();
        // Never wait for the lock: a reset in progress makes probing pointless.
        let Some(_ctx) = self.monitor.try_enter() else {
            return;
        };
        for device in 0..self.exec.devices().len() as u32 {
            if let Err(e) = self.exec.probe(device) {
                if crate::fault::is_sticky(e.0) {
                    self.monitor.report(device, e.0, Witness::Poller, seen);
                    break;
                }
            }
        }
    }

    /// The policy file in force.
    pub fn config(&self) -> Arc<crate::config::Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a reloaded policy file in force for clients that connect from now on.
    pub fn replace_config(&self, c: crate::config::Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
    }

    /// Each connected client's session and its queueing delays below each of `edges_ns`.
    pub fn queue_delays(&self, edges_ns: &[u64]) -> Vec<(u64, Vec<u64>)> {
        lock(&self.sessions)
            .values()
            .map(|s| (s.identity.session, s.queue_delay.counts_below(edges_ns)))
            .collect()
    }

    pub fn status(&self) -> StatusReport {
        let mut figures: HashMap<u64, TenantFigures> = HashMap::new();
        for d in self.schedulers.iter() {
            for (t, f) in d.figures() {
                let a = figures.entry(t).or_default();
                a.queued += f.queued;
                a.in_flight += f.in_flight;
                a.gpu_time += f.gpu_time;
                a.recent += f.recent;
            }
        }
        let recent: f64 = figures.values().map(|f| f.recent).sum();
        let gated = !self.schedulers.is_empty();
        let mut clients: Vec<ClientStatus> = lock(&self.sessions)
            .values()
            .map(|s| (s, figures.get(&s.identity.session).copied()))
            .map(|(s, f)| (s, f.filter(|_| gated).unwrap_or_default()))
            .map(|(s, f)| ClientStatus {
                session: s.identity.session,
                pid: s.identity.pid,
                uid: s.identity.uid,
                tenant: s.identity.tenant.clone(),
                memory_bytes: s.memory_bytes.load(Ordering::Relaxed) + lock(&s.host).bytes(),
                memory_quota: s.policy.memory_quota,
                class: s.policy.class.to_string(),
                commands: s.commands.load(Ordering::Relaxed),
                launches: s.launches.load(Ordering::Relaxed),
                queued: gated.then_some(f.queued),
                in_flight: gated.then_some(f.in_flight),
                gpu_time_ns: gated.then(|| f.gpu_time.as_nanos().try_into().unwrap_or(u64::MAX)),
                gpu_share: gated.then(|| if recent > 0.0 { f.recent / recent } else { 0.0 }),
                queue_delay: s.queue_delay.summary(),
            })
            .collect();
        clients.sort_by_key(|c| c.session);
        StatusReport {
            daemon_pid: std::process::id(),
            executor: self.exec.name().to_string(),
            policy: self.config().daemon.policy.name().to_string(),
            devices: self.exec.devices().iter().map(|d| d.name.clone()).collect(),
            clients,
            context_faults: self.monitor.faults(),
        }
    }

    /// After a fault the driver could not reset in place: replaces this process with a fresh
    /// batond on the same socket (`restart.rs`). Without a socket (tests), only logs.
    fn restart(&self) {
        let guard = lock(&self.listener);
        let Some(listener) = guard.as_ref() else {
            return;
        };
        tracing::error!(
            "the driver cannot reset the faulted context inside this process: batond starts over (same pid, same socket)"
        );
        // The ended clients' threads are answering the sticky error; give them a moment (short:
        // a client that connects meanwhile is cut off by the exec).
        std::thread::sleep(Duration::from_millis(50));
        let why = crate::restart::exec_self(listener, self.monitor.faults());
        tracing::error!(%why, "could not start over; exiting for the service manager to restart batond");
        std::process::exit(1);
    }

    /// Accepts clients until the listener fails.
    pub fn serve(self: &Arc<Self>, listener: UnixListener) -> io::Result<()> {
        *lock(&self.listener) = Some(listener.try_clone()?);
        for conn in listener.incoming() {
            crate::systemd::test_stall_point();
            let conn = match conn {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let d = self.clone();
            std::thread::Builder::new()
                .name("baton-conn".into())
                .spawn(move || d.connection(conn))?;
        }
        Ok(())
    }

    /// Serves one accepted connection until the client hangs up (public for the fuzzers).
    pub fn connection(self: Arc<Self>, conn: UnixStream) {
        let first = match control::recv::<Request>(&conn) {
            Ok((r, _)) => r,
            Err(_) => return,
        };
        match first {
            Request::Status => {
                let _ = control::send(&conn, &Response::Status(self.status()), &[]);
            }
            Request::Hello {
                version,
                pid,
                tenant,
                class,
            } => {
                if version != PROTOCOL_VERSION {
                    let message = format!(
                        "client speaks protocol {version}, daemon speaks {PROTOCOL_VERSION}: use the shim and daemon of one Baton release"
                    );
                    let _ = control::send(&conn, &Response::Error { code: 999, message }, &[]);
                    return;
                }
                if let Err(e) = self.client(conn, pid, tenant, class) {
                    tracing::warn!(error = %e, "client connection ended with an error");
                }
            }
            other => {
                let message = format!("expected Hello or Status first, got {other:?}");
                let _ = control::send(&conn, &Response::Error { code: 1, message }, &[]);
            }
        }
    }

    fn client(
        self: &Arc<Self>,
        conn: UnixStream,
        claimed_pid: u32,
        tenant: Option<String>,
        class: Option<String>,
    ) -> io::Result<()> {
        let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let (pid, uid, gid) = (cred.pid() as u32, cred.uid(), cred.gid());
        if pid != claimed_pid {
            tracing::debug!(
                pid,
                claimed_pid,
                "client's stated pid differs from SO_PEERCRED; using the kernel's"
            );
        }
        let config = self.config();
        let policy = match config.resolve(tenant.as_deref(), class.as_deref(), uid, gid) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pid, uid, gid, error = %e, "client refused");
                let message = format!("refused by the daemon's policy: {e}");
                return control::send(&conn, &Response::Error { code: 100, message }, &[]);
            }
        };
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let identity = Identity {
            session: session_id,
            pid,
            uid,
            gid,
            tenant: policy.name.clone(),
        };
        let shared = Arc::new(Shared::new(identity.clone(), policy));
        // Waits while a context reset is pending; then holds resets off while the region is
        // registered with the context the session will live in.
        let born = self.monitor.birth();
        shared.born.store(born, Ordering::Release);
        let ctx = self.monitor.enter();

        let layout = Layout::new(self.params).expect("default region parameters are valid");
        let setup = (|| -> Result<(Session, OwnedFd), String> {
            let mapping =
                SharedRegion::create("baton-session", layout.total).map_err(|e| e.to_string())?;
            // SAFETY: a fresh zeroed mapping of `layout.total` bytes, kept alive by the session.
            let region = unsafe { Region::init(mapping.as_ptr(), mapping.len(), self.params) }
                .map_err(|e| e.to_string())?;
            let region_dev = self
                .exec
                .host_register(mapping.as_ptr(), mapping.len())
                .map_err(|e| format!("registering the session region: {e}"))?;
            let fd = mapping
                .fd()
                .try_clone_to_owned()
                .map_err(|e| e.to_string())?;
            let session = Session::new(
                shared.clone(),
                self.exec.clone(),
                mapping,
                region,
                region_dev,
            )?;
            let mut session = session;
            session.share_through(self.sharing.clone());
            Ok((session, fd))
        })();
        drop(ctx);
        let (mut session, region_fd) = match setup {
            Ok(s) => s,
            Err(message) => {
                tracing::error!(%message, "could not set up a session");
                return control::send(&conn, &Response::Error { code: 2, message }, &[]);
            }
        };
        session.schedule(
            self.schedulers.clone(),
            config.daemon.policy == PolicyKind::Priority,
        );
        let d = &config.daemon;
        if d.policy == PolicyKind::Srpt && d.srpt_short_job.is_some() {
            session.reserve_for_fast_lanes(d.srpt_fast_lane_sm_reserve);
        }
        session.watch(self.monitor.clone());
        lock(&self.sessions).insert(session_id, shared.clone());
        tracing::info!(session = session_id, pid, uid, tenant = %identity.tenant, "client connected");
        let d = self.clone();
        let tenant = identity.tenant.clone();
        std::thread::Builder::new()
            .name(format!("baton-session-{session_id}"))
            .spawn(move || {
                let end = session.run();
                lock(&d.sessions).remove(&session_id);
                tracing::info!(session = session_id, pid, uid, %tenant, how = ?end, "client disconnected; its resources are freed");
            })?;

        let welcome = Response::Welcome {
            session: session_id,
            driver_version: self.exec.driver_version(),
            devices: self.exec.devices().to_vec(),
            region_len: layout.total as u64,
        };
        let r = control::send(&conn, &welcome, &[region_fd.as_raw_fd()]);
        drop(region_fd);
        if r.is_ok() {
            self.serve_client(&conn, &shared);
        }
        shared.closed.store(true, Ordering::Release);
        r
    }

    /// Pins host memory for a client, with context resets held off meanwhile.
    fn alloc_host(&self, len: u64) -> Result<crate::host_memory::HostChunk, String> {
        let _ctx = self.monitor.enter();
        self.arena.alloc(&*self.exec, len as usize)
    }

    /// Serves a connected client's control requests until it hangs up.
    fn serve_client(&self, conn: &UnixStream, shared: &Shared) {
        loop {
            let req = match control::recv::<Request>(conn) {
                Ok((r, _)) => r,
                Err(_) => return,
            };
            let (resp, fd) = match req {
                Request::AttachBlob { len } => {
                    // Images wait here until a LoadModule takes them; without a bound on all of
                    // them together a client could make the daemon hold any amount of memory.
                    if shared.pending_blob_bytes().saturating_add(len) > MAX_BLOB {
                        // Its bytes would follow; the stream cannot be resynchronised.
                        let _ = control::send(
                            conn,
                            &Response::Error {
                                code: 1,
                                message: format!(
                                    "image of {len} bytes is too large (at most {MAX_BLOB} bytes of images may wait to be loaded)"
                                ),
                            },
                            &[],
                        );
                        return;
                    }
                    let mut bytes = Vec::new();
                    match conn.take(len).read_to_end(&mut bytes) {
                        Ok(n) if n as u64 == len => (
                            Response::Blob {
                                id: shared.add_blob(bytes),
                            },
                            None,
                        ),
                        _ => return,
                    }
                }
                Request::AllocHost { .. } if shared.faulted().is_some() => (
                    Response::Error {
                        code: shared.faulted().unwrap_or(999),
                        message: "a kernel fault ended this client's GPU context".into(),
                    },
                    None,
                ),
                Request::AllocHost { len } => match self.alloc_host(len) {
                    Ok(chunk) => {
                        let (addr, clen) = (chunk.addr, chunk.len);
                        let fd = chunk.region().fd().try_clone_to_owned().ok();
                        lock(&shared.host).insert(chunk);
                        (
                            Response::HostChunk {
                                addr: addr as u64,
                                len: clen as u64,
                            },
                            fd,
                        )
                    }
                    Err(message) => (Response::Error { code: 2, message }, None),
                },
                Request::FreeHost { addr } => match lock(&shared.host).remove(addr as usize) {
                    Some(chunk) => {
                        let _ctx = self.monitor.enter();
                        // Pinned in a context a kernel fault ended: nothing left to unpin.
                        match shared.faulted() {
                            Some(_) => chunk.release_unpinned(),
                            None => chunk.release(&*self.exec),
                        }
                        (Response::Ok, None)
                    }
                    None => (
                        Response::Error {
                            code: 1,
                            message: format!("no pinned chunk at {addr:#x}"),
                        },
                        None,
                    ),
                },
                Request::Status => (Response::Status(self.status()), None),
                Request::Hello { .. } => (
                    Response::Error {
                        code: 1,
                        message: "already connected".into(),
                    },
                    None,
                ),
            };
            let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
            if control::send(conn, &resp, &fds).is_err() {
                return;
            }
        }
    }
}

/// The daemon's fault thread: recovers from faults and probes for them, until the daemon goes.
fn fault_thread(daemon: Weak<Daemon>) {
    loop {
        let Some(d) = daemon.upgrade() else {
            return;
        };
        d.watch_faults();
    }
}
