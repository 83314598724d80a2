//! One session per client process: its shared region, its objects, its accounting, and the
//! thread that drains its command ring.
//!
//! Everything read from the region is untrusted: messages are copied out of the ring before
//! decoding, every id is looked up in this session's own tables, every device range is checked
//! against this session's allocations, and every index into the region is bounds-checked by
//! [`baton_ipc::region::Region`].

mod arrays;
#[cfg(test)]
mod arrays_tests;
mod conditional;
#[cfg(test)]
mod conditional_tests;
mod dispatch;
#[cfg(test)]
mod fault_tests;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
mod gating;
mod graph_mem;
#[cfg(test)]
mod graph_mem_tests;
mod graph_nodes;
#[cfg(test)]
mod graph_nodes_tests;
mod graphs;
mod host_calls;
#[cfg(test)]
mod host_node_tests;
#[cfg(test)]
mod hostile;
mod ipc;
#[cfg(test)]
mod ipc_tests;
#[cfg(test)]
mod limits_tests;
mod link;
#[cfg(test)]
mod link_tests;
mod partition;
#[cfg(test)]
mod partition_tests;
mod pools;
#[cfg(test)]
mod pools_tests;
pub mod queue_delay;
pub mod quota;
mod ring_wait;
#[cfg(test)]
mod run_loop_tests;
#[cfg(test)]
mod scheduled;
pub mod sharing;
pub mod streams;
pub mod tables;
mod vmm;
#[cfg(test)]
mod vmm_graph_tests;

use crate::executor::Executor;
use crate::host_memory::HostChunks;
use baton_ipc::region::{Region, ReplySlot, REPLY_DONE, REPLY_PAYLOAD, REPLY_VALUES};
use baton_ipc::ring::Consumer;
use baton_ipc::shm::SharedRegion;
pub use ring_wait::RingWaits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Who a session belongs to.
#[derive(Clone, Debug)]
pub struct Identity {
    pub session: u64,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub tenant: String,
}

/// The part of a session the control-socket thread and `status` also touch.
pub struct Shared {
    pub identity: Identity,
    /// What the policy file grants this tenant (class, weight, memory quota...).
    pub policy: crate::config::TenantPolicy,
    pub closed: AtomicBool,
    /// Set once the session thread has torn the session down: the connection serves nothing
    /// more, and no pinned chunk is added to a session that will never free it.
    pub ended: AtomicBool,
    /// The tenant's account: every quota is charged here first (see [`quota`]).
    pub account: Arc<quota::Account>,
    pub blobs: Mutex<HashMap<u64, Blob>>,
    next_blob: AtomicU64,
    pub host: Mutex<HostChunks>,
    pub memory_bytes: AtomicU64,
    pub commands: AtomicU64,
    pub launches: AtomicU64,
    pub queue_delay: queue_delay::QueueDelay,
    /// Serialises host-callback requests through the session's one mailbox.
    pub mailbox_lock: host_calls::MailboxLock,
    /// The context generation ([`crate::fault::FaultMonitor`]) the session was set up in.
    pub born: AtomicU64,
    /// 0 while the session's context lives; the sticky error once a kernel fault ended it.
    pub fault: AtomicU32,
    /// The function id of the session's last kernel launch (0: none), for fault reports.
    pub last_kernel: AtomicU64,
    /// Function id -> kernel name, for fault reports.
    pub kernel_names: Mutex<HashMap<u64, String>>,
    /// Whether it launched work after its last synchronising call that succeeded (work that
    /// may still be running, as far as the daemon knows without a scheduler).
    pub unsynced: AtomicBool,
    pub ring_waits: RingWaits,
}

/// A module image attached on the control socket and not yet loaded, with what it is charged
/// to (the tenant's account, the daemon-wide bound); dropping it gives those back.
pub struct Blob {
    pub bytes: Vec<u8>,
    _charges: Vec<Box<dyn std::any::Any + Send>>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>, charges: Vec<Box<dyn std::any::Any + Send>>) -> Blob {
        Blob {
            bytes,
            _charges: charges,
        }
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Shared {
    /// A session with an account of its own (tests, fuzzing).
    pub fn new(identity: Identity, policy: crate::config::TenantPolicy) -> Shared {
        let account = Arc::new(quota::Account::new(&policy));
        Shared::with_account(identity, policy, account)
    }

    /// A session charged to `account` (shared with the tenant's other processes).
    pub fn with_account(
        identity: Identity,
        policy: crate::config::TenantPolicy,
        account: Arc<quota::Account>,
    ) -> Shared {
        Shared {
            identity,
            policy,
            closed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            account,
            blobs: Mutex::new(HashMap::new()),
            next_blob: AtomicU64::new(1),
            host: Mutex::new(HostChunks::default()),
            memory_bytes: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            launches: AtomicU64::new(0),
            queue_delay: Default::default(),
            mailbox_lock: Default::default(),
            born: AtomicU64::new(0),
            fault: AtomicU32::new(0),
            last_kernel: AtomicU64::new(0),
            kernel_names: Mutex::new(HashMap::new()),
            unsynced: AtomicBool::new(false),
            ring_waits: RingWaits::default(),
        }
    }

    /// The sticky error if a kernel fault ended the session's context.
    pub fn faulted(&self) -> Option<u32> {
        match self.fault.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    /// The name of the kernel it launched last, if known.
    pub fn last_kernel_name(&self) -> Option<String> {
        let id = self.last_kernel.load(Ordering::Relaxed);
        lock(&self.kernel_names).get(&id).cloned()
    }

    /// Reserves `bytes` against the tenant's memory quota (all its processes together, unless
    /// the policy scopes quotas per process); `false` if it would exceed it.
    pub fn charge(&self, bytes: u64) -> bool {
        if !self.account.take(quota::Kind::Memory, bytes) {
            return false;
        }
        self.memory_bytes.fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// Returns `bytes` to the tenant's quota. Saturates: memory another session freed last
    /// (see `sharing`) may be refunded after this session's teardown zeroed its charge, and
    /// the tenant's account gets back only what this session still had charged.
    pub fn refund(&self, bytes: u64) {
        if let Ok(before) =
            self.memory_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_sub(bytes))
                })
        {
            self.account.give(quota::Kind::Memory, before.min(bytes));
        }
    }

    /// Device memory the tenant may still take (its quota less what all its processes hold).
    pub fn memory_left(&self) -> Option<u64> {
        let q = self.account.limit(quota::Kind::Memory)?;
        Some(q.saturating_sub(self.account.used(quota::Kind::Memory)))
    }

    /// Forgets every byte the session has charged (its memory is gone): the tenant's account
    /// gets them back.
    pub fn release_memory(&self) {
        let left = self.memory_bytes.swap(0, Ordering::AcqRel);
        self.account.give(quota::Kind::Memory, left);
    }

    /// Adds a pinned chunk, unless the session has ended (then the chunk is freed at once).
    pub fn add_host_chunk(&self, chunk: crate::host_memory::HostChunk) -> bool {
        let mut host = lock(&self.host);
        if self.ended.load(Ordering::Acquire) {
            return false;
        }
        host.insert(chunk);
        true
    }

    /// Bytes of module images attached and not yet loaded.
    pub fn pending_blob_bytes(&self) -> u64 {
        lock(&self.blobs).values().map(|b| b.len() as u64).sum()
    }

    pub fn add_blob(&self, bytes: Vec<u8>) -> u64 {
        self.add_charged_blob(Blob::new(bytes, Vec::new()))
    }

    pub fn add_charged_blob(&self, blob: Blob) -> u64 {
        let id = self.next_blob.fetch_add(1, Ordering::Relaxed);
        lock(&self.blobs).insert(id, blob);
        id
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ring-draining side of a session. Lives on its own thread.
pub struct Session {
    pub shared: Arc<Shared>,
    exec: Arc<dyn Executor>,
    region: Region,
    /// Keeps the region mapped; dropped last.
    mapping: SharedRegion,
    /// Device address of the region's first byte (it is registered with the GPU).
    region_dev: u64,
    consumer: Consumer,
    streams: streams::Streams,
    images: tables::Table<tables::Image>,
    funcs: tables::Table<tables::Function>,
    events: tables::Table<tables::Event>,
    ranges: tables::Ranges,
    vmm: vmm::Vmm,
    pools: pools::Pools,
    graphs: graphs::Graphs,
    arrays: arrays::Arrays,
    links: link::Links,
    /// Objects shared between sessions, daemon-wide.
    sharing: Arc<sharing::Registry>,
    /// Other sessions' memory this one opened: base -> (token, times opened).
    opened: HashMap<u64, (sharing::Token, u32)>,
    /// First error of work nobody waited for; reported by the next synchronising call.
    async_error: Option<u32>,
    gating: gating::Gating,
    /// Where kernel faults are reported and context generations counted.
    monitor: Arc<crate::fault::FaultMonitor>,
    /// Streams, events and modules charged to the tenant's account (see `settle_objects`).
    objects: [u64; 3],
    /// While a graph node is checked: the memory ranges it names (see `recording`).
    recorder: std::cell::RefCell<Option<graph_nodes::Ranges>>,
    /// Whether the command being recorded went to a capturing stream.
    captured: std::cell::Cell<bool>,
    /// Memory named by copies and memsets captured since a capture began on a stream:
    /// stream id -> ranges, given to the captured graph when the capture ends.
    capture_named: HashMap<u64, graph_nodes::Ranges>,
}

/// The objects a tenant's account counts, in the order of `Session::objects`.
const OBJECT_KINDS: [quota::Kind; 3] = [
    quota::Kind::Streams,
    quota::Kind::Events,
    quota::Kind::Modules,
];

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The client closed its socket or exited.
    Closed,
    /// The client broke the protocol; it is dropped.
    Protocol(String),
}

impl Session {
    /// Sets up the region (already initialised by [`Region::init`]) for a new client.
    pub fn new(
        shared: Arc<Shared>,
        exec: Arc<dyn Executor>,
        mapping: SharedRegion,
        region: Region,
        region_dev: u64,
    ) -> Result<Session, String> {
        let (ring, ring_len) = region.ring();
        // SAFETY: the ring lies inside `mapping`, which the session keeps alive.
        let consumer = unsafe { Consumer::attach(ring, ring_len) }.map_err(|e| e.to_string())?;
        // Only a share below 1 changes how streams are made (strictly opt-in).
        let share = shared.policy.sm_share;
        let mut streams = streams::Streams::default();
        streams.sm_share = (share < 1.0).then_some(share);
        Ok(Session {
            shared,
            exec,
            region,
            mapping,
            region_dev,
            consumer,
            streams,
            images: Default::default(),
            funcs: Default::default(),
            events: Default::default(),
            ranges: Default::default(),
            vmm: Default::default(),
            pools: Default::default(),
            graphs: Default::default(),
            arrays: Default::default(),
            links: Default::default(),
            sharing: Default::default(),
            opened: HashMap::new(),
            async_error: None,
            gating: Default::default(),
            monitor: Default::default(),
            objects: [0; 3],
            recorder: Default::default(),
            captured: Default::default(),
            capture_named: HashMap::new(),
        })
    }

    /// Reports kernel faults to the daemon's `monitor`; the session belongs to the context
    /// generation it was set up in (`Shared::born`).
    pub fn watch(&mut self, monitor: Arc<crate::fault::FaultMonitor>) {
        self.monitor = monitor;
    }

    /// The sticky error, once a kernel fault has ended this session's context. The first time
    /// it is seen, the client is told through its region, so that it fails every later call
    /// (polling ones included) without asking the daemon.
    fn dead(&self) -> Option<u32> {
        let code = match self.shared.faulted() {
            Some(c) => c,
            None => {
                let c = self
                    .monitor
                    .dead(self.shared.born.load(Ordering::Acquire))?;
                self.shared.fault.store(c, Ordering::Release);
                c
            }
        };
        if self.region.fault().load(Ordering::Relaxed) == 0 {
            self.region.fault().store(code, Ordering::Release);
        }
        Some(code)
    }

    /// Puts the session's work under the daemon's scheduler: one per device, or none at all
    /// under `passthrough`. With `stream_classes` (the `priority` policy) its streams get the
    /// CUDA stream priority of its class.
    pub fn schedule(
        &mut self,
        devices: Arc<[Arc<crate::scheduler::device::DeviceScheduler>]>,
        stream_classes: bool,
    ) {
        self.gating = gating::Gating::new(devices, &self.shared);
        if stream_classes {
            self.streams.class = Some(self.shared.policy.class);
        }
    }

    /// Keeps `reserve` of every GPU's SMs for fast lanes (see [`streams`]); before any stream.
    pub fn reserve_for_fast_lanes(&mut self, reserve: f64) {
        self.streams.reserve_for_fast_lanes(reserve);
    }

    /// Makes the session share IPC handles through `registry` (the daemon's one table); a
    /// session on its own table can share only with itself.
    pub fn share_through(&mut self, registry: Arc<sharing::Registry>) {
        self.sharing = registry;
    }

    /// Takes one object from the tenant's account for a command that makes one, before it is
    /// made: the daemon holds the cap, whatever the client's shim does.
    fn reserve_object(&mut self, op: baton_ipc::protocol::Op) -> crate::executor::GpuResult<()> {
        use baton_ipc::protocol::Op;
        let i = match op {
            Op::StreamCreate => 0,
            Op::EventCreate | Op::IpcOpenEventHandle => 1,
            Op::LoadModule => 2,
            _ => return Ok(()),
        };
        if !self.shared.account.take(OBJECT_KINDS[i], 1) {
            tracing::debug!(
                session = self.shared.identity.session,
                quota = OBJECT_KINDS[i].name(),
                "object refused: the tenant holds its quota"
            );
            return Err(crate::executor::GpuError(
                crate::executor::code::OUT_OF_MEMORY,
            ));
        }
        self.objects[i] += 1;
        Ok(())
    }

    /// Brings the account in line with what the session's tables hold after a command: a
    /// reservation whose object was not made goes back, an object made some other way is
    /// counted.
    fn settle_objects(&mut self) {
        let now = [
            self.streams.table.len() as u64,
            self.events.len() as u64,
            self.images.len() as u64,
        ];
        for (i, n) in now.into_iter().enumerate() {
            let had = self.objects[i];
            if n < had {
                self.shared.account.give(OBJECT_KINDS[i], had - n);
            } else if n > had {
                self.shared.account.force(OBJECT_KINDS[i], n - had);
            }
            self.objects[i] = n;
        }
    }

    /// Drains the ring until the client goes away; then frees everything the client held.
    pub fn run(mut self) -> End {
        let mut buf = Vec::with_capacity(4096);
        let mut waiting = ring_wait::RingWait::new();
        let end = loop {
            // Cheap (two atomic loads) and keeps an idle client of a dead context informed.
            let _ = self.dead();
            match self.consumer.try_pop(&mut buf) {
                Ok(true) => {
                    self.shared.commands.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.handle(&buf) {
                        break End::Protocol(e);
                    }
                    waiting.command();
                    continue;
                }
                Ok(false) => {}
                Err(e) => break End::Protocol(format!("ring: {e}")),
            }
            if self.shared.closed.load(Ordering::Acquire) {
                break End::Closed;
            }
            // Spin briefly, then sleep on the doorbell (`ring_wait`).
            let fast = self.gating.on_fast_lane();
            match waiting.wait(&mut self.consumer, fast, &self.shared.ring_waits) {
                Ok(_) => {}
                Err(e) if self.shared.closed.load(Ordering::Acquire) => {
                    let _ = e;
                    break End::Closed;
                }
                Err(e) => break End::Protocol(format!("ring: {e}")),
            }
        };
        self.teardown();
        end
    }

    /// Frees every resource the client held, in an order the GPU accepts: finish its work, then
    /// drop streams and events, device memory, images, and last the host memory the GPU may
    /// have been reading.
    fn teardown(&mut self) {
        // From here on the connection adds no pinned chunk (see `Shared::add_host_chunk`).
        {
            let _host = lock(&self.shared.host);
            self.shared.ended.store(true, Ordering::Release);
        }
        if self.dead().is_some() {
            self.teardown_dead();
            return;
        }
        let exec = self.exec.clone();
        let exec = &*exec;
        self.gating
            .end(exec, &self.streams, self.shared.identity.session);
        self.streams.teardown(exec);
        self.graphs.teardown(exec);
        self.vmm
            .teardown(exec, &self.sharing, self.shared.identity.session);
        self.arrays.teardown(exec);
        for (_, e) in self.events.drain().collect::<Vec<_>>() {
            let _ = self.drop_event(exec, e);
        }
        self.close_all_opened(exec);
        for (ptr, device) in self.ranges.drain_owned() {
            self.free_alloc(exec, device, ptr);
        }
        self.teardown_pools(exec);
        for (_, i) in self.images.drain() {
            let _ = exec.image_unload(i.kind, i.raw);
        }
        self.funcs.drain().for_each(drop);
        lock(&self.shared.host).release_all();
        lock(&self.shared.blobs).clear();
        let _ = exec.host_unregister(self.mapping.as_ptr());
        self.shared.release_memory();
        self.release_objects();
    }

    fn release_objects(&mut self) {
        for (i, n) in std::mem::take(&mut self.objects).into_iter().enumerate() {
            self.shared.account.give(OBJECT_KINDS[i], n);
        }
    }

    /// Teardown after a kernel fault ended the session's context: none of its handles may
    /// reach the driver again (the context that owned them is gone or about to be, and a new
    /// one may hand out the same values), so its tables are dropped as they are. Host memory
    /// is unmapped without unpinning, and the scheduler forgets the tenant.
    fn teardown_dead(&mut self) {
        self.gating.forget(self.shared.identity.session);
        lock(&self.shared.host).release_all_unpinned();
        lock(&self.shared.blobs).clear();
        self.shared.release_memory();
        self.release_objects();
    }

    fn mailbox(&self) -> host_calls::MailboxPtr {
        host_calls::MailboxPtr(self.region.mailbox())
    }

    /// The client's side of one host callback, for tests and fuzzing that have no client:
    /// acknowledges the next request in advance, so the simulator (which runs callbacks inline
    /// on the session thread) does not wait for a client that is not there.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn acknowledge_next_host_call(&self) {
        let mb = self.region.mailbox();
        mb.done.store(
            mb.request.load(Ordering::Acquire).wrapping_add(1),
            Ordering::Release,
        );
    }

    fn reply_slot(&self, i: u32) -> Option<&ReplySlot> {
        self.region.reply(i)
    }

    /// Publishes a result in reply slot `i` and wakes the waiting client thread. An invalid
    /// index is ignored: only the client that sent it can be waiting on it.
    fn reply(&self, i: u32, result: u32, values: [u64; REPLY_VALUES], payload: &[u8]) {
        let Some(slot) = self.reply_slot(i) else {
            return;
        };
        let n = payload.len().min(REPLY_PAYLOAD);
        let dst = slot.payload.as_ptr() as *mut u8;
        // SAFETY: `dst` points to REPLY_PAYLOAD bytes of the mapped slot and n <= REPLY_PAYLOAD.
        // The client reads them only after seeing REPLY_DONE, published below with Release.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), dst, n) };
        slot.payload_len.store(n as u32, Ordering::Relaxed);
        for (v, x) in slot.values.iter().zip(values) {
            v.store(x, Ordering::Relaxed);
        }
        slot.result.store(result, Ordering::Relaxed);
        slot.state.store(REPLY_DONE, Ordering::Release);
        baton_ipc::futex::wake_all(&slot.state);
    }
}
