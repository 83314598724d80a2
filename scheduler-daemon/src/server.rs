//! The control socket: accepts clients, sets up their sessions, serves their control requests
//! (module images, pinned host memory) and `status`.

use crate::config::PolicyKind;
use crate::executor::Executor;
use crate::fault::{FaultMonitor, Witness};
use crate::host_memory::{HostArena, HostChunk};
use crate::scheduler::device::{DeviceScheduler, TenantFigures};
use crate::session::quota::{self, Held};
use crate::session::{lock, Blob, Identity, Session, Shared};
use baton_ipc::control::{
    self, Budget, ClientStatus, FrameReader, Request, Response, StatusReport, MAX_BLOB,
    MAX_REQUEST, PROTOCOL_VERSION,
};
use baton_ipc::region::{Layout, Params, Region};
use baton_ipc::shm::SharedRegion;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

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
    /// Tenants' accounts, which their quotas are kept in.
    accounts: quota::Accounts,
    /// Open connections against `max_connections` and `max_connections_per_uid`.
    conns: Arc<Conns>,
    /// Bytes of requests partly received, all connections together.
    frame_budget: Arc<Budget>,
    /// Bytes of module images attached and not yet loaded, all clients together.
    waiting_images: Arc<Budget>,
    /// Keeps what clients can make the daemon log to a few lines a second.
    log_limit: LogLimit,
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
            arena,
            params: Params::DEFAULT,
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            schedulers: schedulers.into(),
            sharing: Default::default(),
            monitor: Arc::new(FaultMonitor::default()),
            listener: Mutex::new(None),
            accounts: Default::default(),
            conns: Conns::new(&config.daemon),
            frame_budget: Arc::new(Budget::new(
                usize::try_from(config.daemon.frame_budget).unwrap_or(usize::MAX),
            )),
            waiting_images: Arc::new(Budget::new(
                usize::try_from(config.daemon.max_waiting_images).unwrap_or(usize::MAX),
            )),
            log_limit: LogLimit::default(),
            config: RwLock::new(Arc::new(config)),
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

    /// The status as `uid` may see it: the operator (root, or the daemon's own user) sees
    /// every client, anyone else the clients of its own uid.
    pub fn status_for(&self, uid: u32) -> StatusReport {
        let mut r = self.status();
        if !is_operator(uid) {
            r.clients.retain(|c| c.uid == uid);
        }
        r
    }

    /// Accepts clients, forever: an accept error (out of descriptors, say) is logged and
    /// retried after a pause that grows while it lasts, never the end of the daemon.
    ///
    /// One thread serves every connection until its first request is complete (`poll`, no
    /// thread per connection), with a deadline for that request; only admitted clients get a
    /// thread of their own.
    pub fn serve(self: &Arc<Self>, listener: UnixListener) -> io::Result<()> {
        *lock(&self.listener) = Some(listener.try_clone()?);
        listener.set_nonblocking(true)?;
        tracing::info!(
            max_connections = self.conns.total_limit,
            max_connections_per_uid = self.conns.uid_limit,
            descriptor_limit = self.conns.descriptors,
            "connection limits"
        );
        let mut pending: Vec<Pending> = Vec::new();
        let mut paused_until: Option<Instant> = None;
        let mut pause = MIN_ACCEPT_PAUSE;
        loop {
            crate::systemd::test_stall_point();
            let now = Instant::now();
            if paused_until.is_some_and(|t| t <= now) {
                paused_until = None;
            }
            let mut wake = now + Duration::from_secs(1);
            if let Some(t) = paused_until {
                wake = wake.min(t);
            }
            for p in &pending {
                wake = wake.min(p.deadline);
            }
            let (listening, ready) = {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(pending.len() + 1);
                let listening = paused_until.is_none();
                if listening {
                    fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
                }
                for p in &pending {
                    fds.push(PollFd::new(p.conn.as_fd(), PollFlags::POLLIN));
                }
                let ms = wake
                    .saturating_duration_since(now)
                    .as_millis()
                    .clamp(1, 1000) as u16;
                let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
                let ready: Vec<bool> = fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                (listening, ready)
            };
            let (listener_ready, conn_ready) = match listening {
                true => (ready[0], &ready[1..]),
                false => (false, &ready[..]),
            };
            // Read what arrived on pending connections; those done or broken leave the set.
            let mut keep = Vec::with_capacity(pending.len());
            let now = Instant::now();
            for (mut p, r) in pending.drain(..).zip(conn_ready.iter().copied()) {
                if r {
                    match p.reader.read::<Request>(&p.conn) {
                        Ok(Some((req, _fds))) => {
                            self.first_request(p.conn, p.peer, p.slot, req, true);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(uid = p.peer.uid, error = %e, "connection closed before its first request");
                            continue;
                        }
                    }
                }
                if p.deadline <= now {
                    if let Some(n) = self.log_limit.allow() {
                        tracing::warn!(uid = p.peer.uid, pid = p.peer.pid, timeout = ?self.config().daemon.first_frame_timeout, suppressed = n, "closed a connection that sent no complete request in time");
                    }
                    continue;
                }
                keep.push(p);
            }
            pending = keep;
            if !listener_ready {
                continue;
            }
            loop {
                match listener.accept() {
                    Ok((conn, _)) => {
                        pause = MIN_ACCEPT_PAUSE;
                        if let Some(p) = self.admit_connection(conn) {
                            pending.push(p);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                        ) => {}
                    Err(e) => {
                        if let Some(n) = self.log_limit.allow() {
                            tracing::error!(error = %e, pause = ?pause, open = pending.len(), suppressed = n, "accepting clients failed; pausing before the next try");
                        }
                        paused_until = Some(Instant::now() + pause);
                        pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                        break;
                    }
                }
            }
        }
    }

    /// Whether `uid` is answered `Status` whatever the policy says of it: the daemon's own
    /// user always (its watchdog asks this way, and a policy must not get a serving daemon
    /// restarted), root unless an entry naming uid 0 refuses it (on a host whose containers
    /// run as root, the one way to keep them from reading every tenant's status).
    fn answers_status_of_operator(&self, uid: u32) -> bool {
        uid == nix::unistd::geteuid().as_raw() || (uid == 0 && !self.config().names_uid_refused(0))
    }

    /// A new connection: counted against the limits (refused past them, with a log line), and
    /// given the deadline for its first request.
    fn admit_connection(&self, conn: UnixStream) -> Option<Pending> {
        let peer = match Peer::of(&conn) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not identify a connecting client; closed");
                return None;
            }
        };
        // The operator may ask for Status (a Hello from it is still checked against the
        // policy like anyone's, later).
        if !self.answers_status_of_operator(peer.uid)
            && self
                .config()
                .refuses_every_name(peer.uid, peer.gid, &peer.groups)
        {
            if let Some(n) = self.log_limit.allow() {
                tracing::warn!(
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = peer.pid,
                    suppressed = n,
                    "client refused: the policy admits this uid under no tenant name"
                );
            }
            let message = format!(
                "refused by the daemon's policy: uid {} (gid {}) is not admitted",
                peer.uid, peer.gid
            );
            let _ = conn.set_nonblocking(true);
            let _ = control::send(&conn, &Response::Error { code: 100, message }, &[]);
            return None;
        }
        let slot = match self.conns.take(peer.uid) {
            Ok(s) => s,
            Err(why) => {
                if let Some(n) = self.log_limit.allow() {
                    tracing::warn!(
                        uid = peer.uid,
                        pid = peer.pid,
                        suppressed = n,
                        "connection refused: {why}"
                    );
                }
                let message = format!("the daemon refused the connection: {why}");
                let _ = conn.set_nonblocking(true);
                let _ = control::send(&conn, &Response::Error { code: 2, message }, &[]);
                return None;
            }
        };
        if conn.set_nonblocking(true).is_err() {
            return None;
        }
        Some(Pending {
            conn,
            peer,
            slot,
            reader: FrameReader::new(MAX_REQUEST, Some(self.frame_budget.clone())),
            deadline: Instant::now() + self.config().daemon.first_frame_timeout,
        })
    }

    /// Serves one accepted connection until the client hangs up, on the calling thread
    /// (public for the fuzzers; the daemon itself serves connections from [`Daemon::serve`]).
    pub fn connection(self: Arc<Self>, conn: UnixStream) {
        if let Some(p) = self.admit_connection(conn) {
            self.connection_rest(p);
        }
    }

    /// Reads a connection's first request on this thread, until its deadline.
    fn connection_rest(self: Arc<Self>, mut p: Pending) {
        loop {
            let left = p.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [PollFd::new(p.conn.as_fd(), PollFlags::POLLIN)];
            let ms = left.as_millis().clamp(1, u16::MAX as u128) as u16;
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
            match p.reader.read::<Request>(&p.conn) {
                Ok(Some((req, _))) => {
                    return self.first_request(p.conn, p.peer, p.slot, req, false);
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }

    /// Answers a connection's first request: `Hello` and `Status` only for a client the policy
    /// admits, the rest of the connection on a thread of its own (`spawn`) or on this one.
    fn first_request(
        self: &Arc<Self>,
        conn: UnixStream,
        peer: Peer,
        slot: Slot,
        req: Request,
        spawn: bool,
    ) {
        // Answers sent from the accepting thread must never block it.
        let refuse = |conn: &UnixStream, code: u32, message: String| {
            let _ = conn.set_nonblocking(true);
            let _ = control::send(conn, &Response::Error { code, message }, &[]);
        };
        let work: Box<dyn FnOnce() + Send> = match req {
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
                    return refuse(&conn, 999, message);
                }
                if pid != peer.pid {
                    tracing::debug!(
                        pid = peer.pid,
                        claimed_pid = pid,
                        "client's stated pid differs from SO_PEERCRED; using the kernel's"
                    );
                }
                let policy = match self.config().resolve_groups(
                    tenant.as_deref(),
                    class.as_deref(),
                    peer.uid,
                    peer.gid,
                    &peer.groups,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        if let Some(n) = self.log_limit.allow() {
                            tracing::warn!(pid = peer.pid, uid = peer.uid, gid = peer.gid, error = %e, suppressed = n, "client refused");
                        }
                        return refuse(&conn, 100, format!("refused by the daemon's policy: {e}"));
                    }
                };
                let account = self.accounts.get(&policy);
                let Some(held) = Held::take(&account, quota::Kind::Connections, 1) else {
                    let limit = account.limit(quota::Kind::Connections).unwrap_or(u64::MAX);
                    if let Some(n) = self.log_limit.allow() {
                        tracing::warn!(pid = peer.pid, uid = peer.uid, tenant = %policy.name, limit, suppressed = n, "client refused: its tenant has connection_quota connections open");
                    }
                    let message = format!(
                        "refused by the daemon's policy: tenant {} already has {limit} connections open (connection_quota)",
                        policy.name
                    );
                    return refuse(&conn, 100, message);
                };
                let d = self.clone();
                Box::new(move || {
                    let _slot = (slot, held);
                    if let Err(e) = d.client(conn, peer, policy, account) {
                        tracing::warn!(error = %e, "client connection ended with an error");
                    }
                })
            }
            Request::Status => {
                if !self.answers_status_of_operator(peer.uid) {
                    if let Err(e) =
                        self.config()
                            .resolve_groups(None, None, peer.uid, peer.gid, &peer.groups)
                    {
                        return refuse(&conn, 100, format!("refused by the daemon's policy: {e}"));
                    }
                }
                let d = self.clone();
                Box::new(move || {
                    let _slot = slot;
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_write_timeout(Some(STATUS_SEND_TIME));
                    let _ = control::send(&conn, &Response::Status(d.status_for(peer.uid)), &[]);
                })
            }
            other => {
                let what = match other {
                    Request::AttachBlob { .. } => "AttachBlob",
                    Request::AllocHost { .. } => "AllocHost",
                    Request::FreeHost { .. } => "FreeHost",
                    _ => "a request",
                };
                return refuse(
                    &conn,
                    1,
                    format!("expected Hello or Status first, got {what}"),
                );
            }
        };
        if !spawn {
            return work();
        }
        if let Err(e) = std::thread::Builder::new()
            .name("baton-conn".into())
            .spawn(work)
        {
            tracing::error!(error = %e, "could not start a connection thread; the client is dropped");
        }
    }

    fn client(
        self: &Arc<Self>,
        conn: UnixStream,
        peer: Peer,
        policy: crate::config::TenantPolicy,
        account: Arc<quota::Account>,
    ) -> io::Result<()> {
        conn.set_nonblocking(false)?;
        let (pid, uid, gid) = (peer.pid, peer.uid, peer.gid);
        let config = self.config();
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let identity = Identity {
            session: session_id,
            pid,
            uid,
            gid,
            tenant: policy.name.clone(),
        };
        let shared = Arc::new(Shared::with_account(identity.clone(), policy, account));
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
        // The session's end also ends its connection: nothing more is served on it.
        let hang_up = conn.try_clone()?;
        std::thread::Builder::new()
            .name(format!("baton-session-{session_id}"))
            .spawn(move || {
                let end = session.run();
                let _ = hang_up.shutdown(std::net::Shutdown::Both);
                // Closed before the session is seen gone: it holds nothing after that.
                drop(hang_up);
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

    /// Pins host memory for a client, charged to its tenant first, with context resets held
    /// off meanwhile.
    fn alloc_host(&self, shared: &Shared, len: u64) -> Result<HostChunk, String> {
        if lock(&shared.host).count() >= MAX_HOST_CHUNKS {
            return Err(format!(
                "a client may hold at most {MAX_HOST_CHUNKS} pinned chunks"
            ));
        }
        let rounded = usize::try_from(len)
            .ok()
            .and_then(|l| {
                l.max(1)
                    .checked_next_multiple_of(crate::host_memory::GRANULE)
            })
            .ok_or("pinned memory request is too large")?;
        let held = Held::take(&shared.account, quota::Kind::Host, rounded as u64).ok_or_else(|| {
            format!(
                "tenant {} would pass its host_memory_quota ({} bytes) with {rounded} more bytes of pinned memory",
                shared.identity.tenant,
                shared.account.limit(quota::Kind::Host).unwrap_or(u64::MAX)
            )
        })?;
        let _ctx = self.monitor.enter();
        Ok(self
            .arena
            .alloc(&self.exec, rounded)?
            .charged(Box::new(held)))
    }

    /// Takes an image announced by `AttachBlob` off the socket, charged to the daemon-wide
    /// bound and the tenant's account before any of it is held.
    fn attach_blob(&self, conn: &UnixStream, shared: &Shared, len: u64) -> Result<u64, String> {
        // Images wait here until a LoadModule takes them; without a bound on all of them
        // together a client could make the daemon hold any amount of memory.
        if shared.pending_blob_bytes().saturating_add(len) > MAX_BLOB {
            return Err(format!(
                "image of {len} bytes is too large (at most {MAX_BLOB} bytes of images may wait to be loaded)"
            ));
        }
        let n = usize::try_from(len).map_err(|_| "image too large".to_string())?;
        if !self.waiting_images.take(n) {
            return Err(format!(
                "the daemon holds its limit of module images waiting to load (max_waiting_images = {} bytes); try again",
                self.config().daemon.max_waiting_images
            ));
        }
        let daemon_held = BudgetHeld(self.waiting_images.clone(), n);
        let held = Held::take(&shared.account, quota::Kind::Host, len).ok_or_else(|| {
            format!(
                "tenant {} would pass its host_memory_quota with an image of {len} bytes",
                shared.identity.tenant
            )
        })?;
        let mut bytes = Vec::new();
        match conn.take(len).read_to_end(&mut bytes) {
            Ok(got) if got as u64 == len => Ok(shared.add_charged_blob(Blob::new(
                bytes,
                vec![Box::new(daemon_held), Box::new(held)],
            ))),
            _ => Err(String::new()),
        }
    }

    /// Serves a connected client's control requests until it hangs up or its session ends.
    fn serve_client(&self, conn: &UnixStream, shared: &Shared) {
        loop {
            let req = match control::recv_within::<Request>(conn, MAX_REQUEST, &self.frame_budget) {
                Ok((r, _)) => r,
                Err(_) => return,
            };
            if shared.ended.load(Ordering::Acquire) {
                return;
            }
            let (resp, fd) = match req {
                Request::AttachBlob { len } => match self.attach_blob(conn, shared, len) {
                    Ok(id) => (Response::Blob { id }, None),
                    Err(message) if message.is_empty() => return,
                    Err(message) => {
                        // Its bytes would follow; the stream cannot be resynchronised.
                        let _ = control::send(conn, &Response::Error { code: 1, message }, &[]);
                        return;
                    }
                },
                Request::AllocHost { .. } if shared.faulted().is_some() => (
                    Response::Error {
                        code: shared.faulted().unwrap_or(999),
                        message: "a kernel fault ended this client's GPU context".into(),
                    },
                    None,
                ),
                Request::AllocHost { len } => match self.alloc_host(shared, len) {
                    Ok(mut chunk) => {
                        let (addr, clen) = (chunk.addr, chunk.len);
                        let fd = chunk.take_fd();
                        // A session that ended meanwhile frees the chunk at once.
                        if !shared.add_host_chunk(chunk) {
                            return;
                        }
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
                            None => chunk.release(),
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
                Request::Status => (Response::Status(self.status_for(shared.identity.uid)), None),
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

/// How long an accept error pauses accepting, at first and at most.
const MIN_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// How long a status answer may take to leave (a client that reads nothing holds its own
/// thread no longer than this).
const STATUS_SEND_TIME: Duration = Duration::from_secs(5);
/// Pinned chunks one client may hold (they keep no descriptor open in the daemon: each
/// chunk's memory file goes to the client with its answer).
pub const MAX_HOST_CHUNKS: usize = 1024;
/// Descriptors kept out of the connection limit for the daemon's own use (the GPU driver,
/// logs, descriptors in flight); each connection is counted at [`FDS_PER_CONNECTION`].
const RESERVED_FDS: u64 = 64;
/// A connection's socket, its session thread's duplicate, its region's memory file, and a
/// pinned chunk's file on its way to the client.
const FDS_PER_CONNECTION: u64 = 4;

/// Who is on the other end of a connection, as the kernel says.
#[derive(Clone, Debug)]
struct Peer {
    pid: u32,
    uid: u32,
    gid: u32,
    /// Supplementary groups.
    groups: Vec<u32>,
}

impl Peer {
    fn of(conn: &UnixStream) -> io::Result<Peer> {
        let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let pid = cred.pid() as u32;
        let groups = peer_groups(conn)
            .or_else(|| proc_groups(pid))
            .unwrap_or_default();
        Ok(Peer {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
        })
    }
}

/// The peer's groups as they were when it connected (`SO_PEERGROUPS`, Linux 4.13).
fn peer_groups(conn: &UnixStream) -> Option<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes, and the kernel writes at most `len`.
        let r = unsafe {
            libc::getsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Some(groups);
        }
        // ERANGE: `len` now says how much room the list needs (at most NGROUPS_MAX).
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n > 65536 {
            return None;
        }
        groups.resize(n, 0);
    }
    None
}

/// The `Groups:` line of `/proc/PID/status`, where `SO_PEERGROUPS` is not there.
fn proc_groups(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

/// A connection waiting for its first request.
struct Pending {
    conn: UnixStream,
    peer: Peer,
    slot: Slot,
    reader: FrameReader,
    deadline: Instant,
}

/// Open connections, in total and per uid, against their limits.
struct Conns {
    total_limit: u32,
    uid_limit: u32,
    descriptors: u64,
    open: Mutex<(u32, HashMap<u32, u32>)>,
}

impl Conns {
    /// The configured limits, lowered to what the descriptor limit (raised to its hard
    /// maximum first) can serve.
    fn new(d: &crate::config::DaemonConfig) -> Arc<Conns> {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let descriptors = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) => {
                if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                    hard
                } else {
                    soft
                }
            }
            Err(_) => 1024,
        };
        let fit = descriptors.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION;
        let total_limit = (d.max_connections as u64).min(fit).max(1) as u32;
        Arc::new(Conns {
            total_limit,
            uid_limit: d.max_connections_per_uid.min(total_limit),
            descriptors,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, String> {
        let mut open = lock(&self.open);
        // The operator keeps a few connections beyond the total (out of the descriptors held
        // spare), so the watchdog's health check and `baton status` still get in while other
        // users hold every connection: a full daemon is not a hung one.
        let reserve = if is_operator(uid) {
            OPERATOR_RESERVE
        } else {
            0
        };
        if open.0 >= self.total_limit + reserve {
            return Err(format!(
                "{} connections are open, the daemon's limit (max_connections, and the descriptor limit {})",
                open.0, self.descriptors
            ));
        }
        let n = open.1.entry(uid).or_insert(0);
        if *n >= self.uid_limit {
            return Err(format!(
                "uid {uid} has {n} connections open, its limit (max_connections_per_uid)"
            ));
        }
        *n += 1;
        open.0 += 1;
        Ok(Slot {
            conns: self.clone(),
            uid,
        })
    }
}

/// Connections beyond `max_connections` that root and the daemon's own user may still open.
const OPERATOR_RESERVE: u32 = 8;

/// One open connection, counted until dropped.
struct Slot {
    conns: Arc<Conns>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.conns.open);
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.uid);
            }
        }
    }
}

/// Bytes taken from a daemon-wide budget, given back when dropped.
struct BudgetHeld(Arc<Budget>, usize);

impl Drop for BudgetHeld {
    fn drop(&mut self) {
        self.0.give(self.1);
    }
}

/// At most a few lines a second for what a client can make the daemon log at will; the
/// count of lines left out goes with the next one.
#[derive(Default)]
struct LogLimit {
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl LogLimit {
    const LINES: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(1);

    /// `Some(lines suppressed since the last one)` if a line may be written now.
    fn allow(&self) -> Option<u64> {
        let mut st = lock(&self.state);
        let now = Instant::now();
        if st.0.is_none_or(|t| now.duration_since(t) >= Self::WINDOW) {
            st.0 = Some(now);
            st.1 = 0;
        }
        if st.1 >= Self::LINES {
            st.2 += 1;
            return None;
        }
        st.1 += 1;
        Some(std::mem::take(&mut st.2))
    }
}

/// Root, or the user the daemon runs as: sees every client in `status`.
fn is_operator(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_uid_and_in_total_until_they_close() {
        let conns = Arc::new(Conns {
            total_limit: 3,
            uid_limit: 2,
            descriptors: 1024,
            open: Mutex::new((0, HashMap::new())),
        });
        let a1 = conns.take(1).unwrap();
        let _a2 = conns.take(1).unwrap();
        let e = conns.take(1).err().unwrap();
        assert!(e.contains("uid 1 has 2 connections open"), "{e}");
        let _b1 = conns.take(2).unwrap();
        let e = conns.take(3).err().unwrap();
        assert!(e.contains("3 connections are open"), "{e}");
        drop(a1);
        let c1 = conns.take(3).expect("a closed connection makes room");
        assert_eq!(lock(&conns.open).0, 3);
        drop(c1);
        assert_eq!(lock(&conns.open).0, 2);
    }

    #[test]
    fn the_descriptor_limit_lowers_the_connection_limit() {
        let d = crate::config::DaemonConfig::default();
        let c = Conns::new(&d);
        assert!(c.total_limit as u64 <= (c.descriptors - RESERVED_FDS) / FDS_PER_CONNECTION);
        assert!(c.uid_limit <= c.total_limit);
    }

    #[test]
    fn what_clients_make_the_daemon_log_is_limited() {
        let l = LogLimit::default();
        for _ in 0..LogLimit::LINES {
            assert_eq!(l.allow(), Some(0));
        }
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        lock(&l.state).0 = Some(Instant::now() - LogLimit::WINDOW);
        assert_eq!(l.allow(), Some(2), "the next line counts those left out");
    }

    /// A policy that refuses the daemon's own uid must not refuse its health check: the
    /// watchdog would withhold its pings and systemd restart a serving daemon. Only `Status`
    /// is the operator's: its programs are refused like anyone's.
    #[test]
    fn the_operator_gets_status_from_a_policy_that_refuses_its_uid() {
        use crate::executor::sim::SimExecutor;
        let config = crate::config::Config::parse("[default]\nadmit = false\n").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert!(config.refuses_every_name(me, nix::unistd::getegid().as_raw(), &[]));
        let daemon = Daemon::new(
            Arc::new(SimExecutor::new()),
            HostArena::reserve().unwrap(),
            config,
        )
        .unwrap();
        let ask = |req: &Request| {
            let (client, server) = UnixStream::pair().unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let d = daemon.clone();
            let conn = std::thread::spawn(move || d.connection(server));
            control::send(&client, req, &[]).unwrap();
            let (answer, _) = control::recv::<Response>(&client).unwrap();
            drop(client);
            conn.join().unwrap();
            answer
        };
        let answer = ask(&Request::Status);
        assert!(matches!(answer, Response::Status(_)), "{answer:?}");
        // An entry that names its uid and refuses it changes nothing for Status.
        let refusing = format!("[default]\nadmit = false\n[[tenant]]\nuid = {me}\nadmit = false\n");
        daemon.replace_config(crate::config::Config::parse(&refusing).unwrap());
        let answer = ask(&Request::Status);
        assert!(matches!(answer, Response::Status(_)), "{answer:?}");
        let answer = ask(&Request::Hello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            tenant: None,
            class: None,
        });
        assert!(
            matches!(&answer, Response::Error { code: 100, message } if message.contains("refused by the daemon's policy")),
            "{answer:?}"
        );
    }

    #[test]
    fn supplementary_groups_of_a_peer_are_read() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        let mine = proc_groups(std::process::id()).unwrap();
        let mut got = peer.groups.clone();
        got.sort_unstable();
        let mut want = mine;
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
