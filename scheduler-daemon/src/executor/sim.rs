//! A simulated GPU for tests on machines without one. **Test double only.**
//!
//! Device memory is host memory at fake addresses; every operation runs to completion when it
//! is issued (so every stream is always idle); kernels come from a small registry of CPU
//! implementations. To let tests see work "in flight", [`SimExecutor::pause`] holds back the
//! writes that report completion (stream value writes) until [`SimExecutor::resume`], or until
//! someone synchronises the stream. A "module image" for the simulator is text:
//! ```text
//! //baton-sim
//! kernel vecAdd 8 8 8 4
//! ```
//! naming each kernel and its parameters' sizes (packed with natural alignment).
//!
//! A kernel named `trap` stands for a kernel fault: its launch succeeds and poisons the
//! context as a wild write would on a GPU. From then on launches and completion writes are
//! accepted and never run, synchronising, creating and copying calls fail with
//! ILLEGAL_ADDRESS, and [`Executor::probe`] reports it, until [`Executor::reset_device`]. (The
//! kernel `fault` is different: its launch fails with ILLEGAL_ADDRESS and nothing is poisoned.)

mod arrays;
mod graphs;

use super::{
    code, BoxCopy, Executor, GpuError, GpuResult, JitLogs, LaunchConfig, Mem, OccupancyQuery, Raw,
    Resource, SmResource,
};
use baton_ipc::control::DeviceInfo;
use baton_ipc::protocol::{FunctionInfo, ImageKind, VmmAccess, VmmProp};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::sync::Mutex;
use std::time::Instant;

const DEVICE_BASE: u64 = 0x5000_0000_0000;
/// End of the simulated device address space (the driver's VA space is 2^49 bytes or so).
const SIM_VA_END: u64 = 1 << 49;
const TOTAL_MEM: u64 = 1 << 30;

pub const SIM_IMAGE_MAGIC: &str = "//baton-sim";

#[derive(Default)]
struct State {
    next_addr: u64,
    used: u64,
    allocs: BTreeMap<u64, Vec<u8>>,
    /// Host memory registered by the daemon: start -> len.
    host: BTreeMap<u64, usize>,
    next_id: u64,
    images: HashMap<Raw, Vec<(String, Vec<u32>)>>,
    funcs: HashMap<Raw, (String, FunctionInfo)>,
    /// Stream -> the priority it was created with.
    streams: HashMap<Raw, i32>,
    events: HashMap<Raw, Option<Instant>>,
    limits: HashMap<u32, u64>,
    /// Physical VMM allocations: handle -> their bytes.
    phys: HashMap<Raw, Vec<u8>>,
    /// Mapped ranges: start -> (physical handle, offset into it, size). Every mapping of one
    /// allocation sees the same bytes, as on a GPU (sessions sharing an allocation rely on it).
    mapped: BTreeMap<u64, (Raw, u64, u64)>,
    capturing: std::collections::HashSet<Raw>,
    /// Graphs and executable graphs alive.
    graphs: std::collections::HashSet<Raw>,
    graph_launches: u64,
    /// What graphs and executable graphs hold (every graph has an entry).
    built: graphs::SimGraphs,
    paused: bool,
    /// Value writes held back while paused: (stream, address, value), in issue order.
    deferred: Vec<(Raw, u64, u64)>,
    arrays: HashMap<Raw, arrays::SimArray>,
    textures: HashMap<u64, Resource>,
    surfaces: HashMap<u64, Resource>,
    /// Set by the `trap` kernel: the context is poisoned as by a real kernel fault, with this
    /// sticky error, until [`Executor::reset_device`].
    faulted: Option<u32>,
    /// Explicit memory pools.
    pools: HashMap<Raw, SimPool>,
    /// Allocations from explicit pools: address -> pool.
    pool_allocs: HashMap<u64, Raw>,
    /// Green contexts: (device, SM count) -> handle.
    green: HashMap<(u32, u32), Raw>,
    /// Streams made in a green context -> its SM count.
    green_streams: HashMap<Raw, u32>,
}

/// A simulated memory pool: its attributes and what it holds. Freed memory goes straight back
/// to the device, so reserved always equals used.
#[derive(Default)]
struct SimPool {
    attrs: HashMap<u32, u64>,
    used: u64,
    high: u64,
    destroyed: bool,
}

pub struct SimExecutor {
    infos: Vec<DeviceInfo>,
    state: Mutex<State>,
    /// Answer green-context requests as a driver without them does (tests of the fallback).
    no_green: std::sync::atomic::AtomicBool,
}

impl Default for SimExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl SimExecutor {
    pub fn new() -> SimExecutor {
        // Every attribute number a 13.0 driver answers (runtimes read them all at start-up),
        // 0 unless set below to an H100-like value.
        let known: &[(i32, i32)] = &[
            (1, 1024),        // MAX_THREADS_PER_BLOCK
            (2, 1024),        // MAX_BLOCK_DIM_X
            (3, 1024),        // MAX_BLOCK_DIM_Y
            (4, 64),          // MAX_BLOCK_DIM_Z
            (5, 2147483647),  // MAX_GRID_DIM_X
            (6, 65535),       // MAX_GRID_DIM_Y
            (7, 65535),       // MAX_GRID_DIM_Z
            (8, 49152),       // MAX_SHARED_MEMORY_PER_BLOCK
            (9, 65536),       // TOTAL_CONSTANT_MEMORY
            (10, 32),         // WARP_SIZE
            (11, 2147483647), // MAX_PITCH
            (12, 65536),      // MAX_REGISTERS_PER_BLOCK
            (13, 1980000),    // CLOCK_RATE
            (14, 512),        // TEXTURE_ALIGNMENT
            (15, 1),          // GPU_OVERLAP
            (16, 4),          // MULTIPROCESSOR_COUNT
            (19, 1),          // CAN_MAP_HOST_MEMORY
            (20, 0),          // COMPUTE_MODE
            (31, 1),          // CONCURRENT_KERNELS
            (36, 2619000),    // MEMORY_CLOCK_RATE
            (37, 5120),       // GLOBAL_MEMORY_BUS_WIDTH
            (38, 52428800),   // L2_CACHE_SIZE
            (39, 2048),       // MAX_THREADS_PER_MULTIPROCESSOR
            (40, 3),          // ASYNC_ENGINE_COUNT
            (41, 1),          // UNIFIED_ADDRESSING
            (75, 9),          // COMPUTE_CAPABILITY_MAJOR
            (76, 0),          // COMPUTE_CAPABILITY_MINOR
            (81, 233472),     // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
            (82, 65536),      // MAX_REGISTERS_PER_MULTIPROCESSOR
            (78, 1),          // STREAM_PRIORITIES_SUPPORTED
            (91, 1),          // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
            (97, 232448),     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            (106, 32),        // MAX_BLOCKS_PER_MULTIPROCESSOR
            (115, 1),         // MEMORY_POOLS_SUPPORTED
            (119, 1),         // MEMPOOL_SUPPORTED_HANDLE_TYPES (POSIX file descriptor)
        ];
        let attributes = (1..148)
            .map(|a| (a, known.iter().find(|k| k.0 == a).map_or(0, |k| k.1)))
            .collect();
        SimExecutor {
            infos: vec![DeviceInfo {
                ordinal: 0,
                name: "Baton Simulated GPU".into(),
                uuid: *b"baton-sim-device",
                total_mem: TOTAL_MEM,
                pci_bus_id: "0000:00:00.0".into(),
                attributes,
            }],
            state: Mutex::new(State {
                next_addr: DEVICE_BASE,
                next_id: 1,
                ..Default::default()
            }),
            no_green: Default::default(),
        }
    }

    /// From now on, stream value writes (completion reports) wait until [`SimExecutor::resume`]
    /// or a synchronisation of their stream: the work looks in flight to whoever polls.
    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Performs the held-back value writes, in order, and stops holding them back.
    pub fn resume(&self) {
        let mut st = self.lock();
        st.paused = false;
        let writes = std::mem::take(&mut st.deferred);
        for (_, addr, value) in writes {
            let _ = st.write(addr, value);
        }
    }

    /// The priority stream `raw` was created with.
    pub fn stream_priority(&self, raw: Raw) -> Option<i32> {
        self.lock().streams.get(&raw).copied()
    }

    /// The SM count of the green context stream `raw` was made in; `None` for an ordinary
    /// stream.
    pub fn stream_sm_count(&self, raw: Raw) -> Option<u32> {
        self.lock().green_streams.get(&raw).copied()
    }

    /// Green contexts made so far (they are kept until a reset).
    pub fn green_contexts(&self) -> usize {
        self.lock().green.len()
    }

    /// From now on, refuses green contexts as a driver without them does.
    pub fn refuse_green_contexts(&self) {
        self.no_green
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Graph launches issued so far (tests).
    pub fn lock_graph_launches(&self) -> u64 {
        self.lock().graph_launches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, or the sticky error once the `trap` kernel has poisoned the context.
    fn live(&self) -> GpuResult<std::sync::MutexGuard<'_, State>> {
        let st = self.lock();
        match st.faulted {
            Some(e) => Err(GpuError(e)),
            None => Ok(st),
        }
    }

    /// Whether the `trap` kernel has poisoned the context (tests).
    pub fn is_faulted(&self) -> bool {
        self.lock().faulted.is_some()
    }

    /// A copy of `len` bytes of simulated device memory (fuzz invariants compare tenants'
    /// memory before and after another tenant's command).
    #[cfg(any(test, fuzzing))]
    pub fn peek(&self, addr: u64, len: u64) -> GpuResult<Vec<u8>> {
        Ok(self.lock().mem(addr, len)?.to_vec())
    }

    /// Whether a stream, event or image handle is live.
    #[cfg(any(test, fuzzing))]
    pub fn is_live(&self, raw: Raw) -> bool {
        let st = self.lock();
        st.streams.contains_key(&raw)
            || st.events.contains_key(&raw)
            || st.images.contains_key(&raw)
    }

    /// Streams, events, images, allocations and registered host ranges still held. (Functions
    /// are not counted: they go with their image.)
    #[cfg(any(test, fuzzing))]
    pub fn live_objects(&self) -> usize {
        let st = self.lock();
        st.streams.len()
            + st.events.len()
            + st.images.len()
            + st.allocs.len()
            + st.mapped.len()
            + st.host.len()
    }

    fn check_device(&self, device: u32) -> GpuResult<()> {
        if device as usize >= self.infos.len() {
            return Err(GpuError(code::INVALID_DEVICE));
        }
        Ok(())
    }
}

impl State {
    fn id(&mut self) -> Raw {
        self.next_id += 1;
        self.next_id
    }

    fn write(&mut self, addr: u64, value: u64) -> GpuResult<()> {
        // A plain byte copy suffices: the reader polls with atomics and the sim holds its lock.
        self.mem(addr, 8)?.copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    /// Performs the held-back writes of `stream` (it is synchronised: its work is done).
    fn flush(&mut self, stream: Raw) {
        let (mine, rest) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|w| w.0 == stream);
        self.deferred = rest;
        for (_, addr, value) in mine {
            let _ = self.write(addr, value);
        }
    }

    /// A mutable view of `len` bytes at simulated device address (or registered host address)
    /// `addr`, or ILLEGAL_ADDRESS.
    fn mem(&mut self, addr: u64, len: u64) -> GpuResult<&mut [u8]> {
        if let Some((&start, buf)) = self.allocs.range_mut(..=addr).next_back() {
            let off = (addr - start) as usize;
            if off as u64 + len <= buf.len() as u64 {
                return Ok(&mut buf[off..off + len as usize]);
            }
        }
        if let Some((&start, &(h, offset, size))) = self.mapped.range(..=addr).next_back() {
            if addr - start + len <= size {
                let off = (offset + addr - start) as usize;
                if let Some(bytes) = self.phys.get_mut(&h) {
                    return bytes
                        .get_mut(off..off + len as usize)
                        .ok_or(GpuError(code::ILLEGAL_ADDRESS));
                }
            }
        }
        if let Some((&start, &hlen)) = self.host.range(..=addr).next_back() {
            if addr - start + len <= hlen as u64 {
                // SAFETY: the range lies inside host memory the daemon registered and keeps
                // mapped until it unregisters it; the simulator is the only writer while it
                // holds its lock, as a GPU would be.
                return Ok(unsafe {
                    std::slice::from_raw_parts_mut(addr as *mut u8, len as usize)
                });
            }
        }
        Err(GpuError(code::ILLEGAL_ADDRESS))
    }
}

/// Offsets of parameters of the given sizes; `None` when they do not fit in a parameter block
/// (the sizes come from a client's image).
fn natural_layout(sizes: &[u32]) -> Option<Vec<(u32, u32)>> {
    let mut off = 0u32;
    sizes
        .iter()
        .map(|&s| {
            let align = s.clamp(1, 8);
            off = off.checked_next_multiple_of(align)?;
            let p = (off, s);
            off = off.checked_add(s)?;
            Some(p)
        })
        .collect()
}

fn parse_image(image: &[u8]) -> GpuResult<Vec<(String, Vec<u32>)>> {
    let text = std::str::from_utf8(image).map_err(|_| GpuError(code::INVALID_IMAGE))?;
    let text = text.trim_end_matches('\0');
    let mut lines = text.lines();
    if lines.next() != Some(SIM_IMAGE_MAGIC) {
        return Err(GpuError(code::INVALID_IMAGE));
    }
    let mut kernels = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("kernel") => {
                let name = words
                    .next()
                    .ok_or(GpuError(code::INVALID_IMAGE))?
                    .to_string();
                let sizes = words
                    .map(|w| w.parse::<u32>().map_err(|_| GpuError(code::INVALID_IMAGE)))
                    .collect::<GpuResult<Vec<_>>>()?;
                if natural_layout(&sizes).is_none() {
                    return Err(GpuError(code::INVALID_IMAGE));
                }
                kernels.push((name, sizes));
            }
            None => {}
            Some(_) => return Err(GpuError(code::INVALID_IMAGE)),
        }
    }
    Ok(kernels)
}

fn arg<const N: usize>(params: &[u8], layout: &[(u32, u32)], i: usize) -> GpuResult<[u8; N]> {
    let &(off, size) = layout.get(i).ok_or(GpuError(code::INVALID_VALUE))?;
    if size as usize != N {
        return Err(GpuError(code::INVALID_VALUE));
    }
    params
        .get(off as usize..off as usize + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(GpuError(code::INVALID_VALUE))
}

/// Runs one registered CPU kernel.
fn run_kernel(
    st: &mut State,
    name: &str,
    info: &FunctionInfo,
    cfg: &LaunchConfig,
    params: &[u8],
) -> GpuResult<()> {
    let threads = cfg
        .grid
        .iter()
        .chain(cfg.block.iter())
        .fold(1u64, |n, &d| n.saturating_mul(d.max(1) as u64));
    let l = &info.params;
    match name {
        "empty" => Ok(()),
        "vecAdd" => {
            let a = u64::from_le_bytes(arg::<8>(params, l, 0)?);
            let b = u64::from_le_bytes(arg::<8>(params, l, 1)?);
            let c = u64::from_le_bytes(arg::<8>(params, l, 2)?);
            let n = i32::from_le_bytes(arg::<4>(params, l, 3)?).max(0) as u64;
            let n = n.min(threads);
            let av: Vec<u8> = st.mem(a, n * 4)?.to_vec();
            let bv: Vec<u8> = st.mem(b, n * 4)?.to_vec();
            let out = st.mem(c, n * 4)?;
            for i in 0..n as usize {
                let x = f32::from_le_bytes(av[i * 4..i * 4 + 4].try_into().unwrap_or_default());
                let y = f32::from_le_bytes(bv[i * 4..i * 4 + 4].try_into().unwrap_or_default());
                out[i * 4..i * 4 + 4].copy_from_slice(&(x + y).to_le_bytes());
            }
            Ok(())
        }
        "fill" => {
            let p = u64::from_le_bytes(arg::<8>(params, l, 0)?);
            let v = arg::<4>(params, l, 1)?;
            let n = (i32::from_le_bytes(arg::<4>(params, l, 2)?).max(0) as u64).min(threads);
            let out = st.mem(p, n * 4)?;
            for w in out.chunks_exact_mut(4) {
                w.copy_from_slice(&v);
            }
            Ok(())
        }
        "texRead" => {
            let tex = u64::from_le_bytes(arg::<8>(params, l, 0)?);
            let out = u64::from_le_bytes(arg::<8>(params, l, 1)?);
            let n = (i32::from_le_bytes(arg::<4>(params, l, 2)?).max(0) as u64).min(threads);
            let bytes = st.texture_bytes(tex, n * 4)?;
            st.mem(out, bytes.len() as u64)?.copy_from_slice(&bytes);
            Ok(())
        }
        "surfWrite" => {
            let surf = u64::from_le_bytes(arg::<8>(params, l, 0)?);
            let v = arg::<4>(params, l, 1)?;
            let n = (i32::from_le_bytes(arg::<4>(params, l, 2)?).max(0) as u64).min(threads);
            let a = st.surface_array(surf)?;
            for w in a.bytes.chunks_exact_mut(4).take(n as usize) {
                w.copy_from_slice(&v);
            }
            Ok(())
        }
        // The value at a pointer becomes a conditional handle's value (`condSet ptr handle`),
        // or is counted down first, the loop going on while it is not zero (`condCountDown`).
        "condSet" | "condCountDown" => {
            let p = u64::from_le_bytes(arg::<8>(params, l, 0)?);
            let handle = u64::from_le_bytes(arg::<8>(params, l, 1)?);
            let cell = st.mem(p, 4)?;
            let mut v = u32::from_le_bytes(cell[..4].try_into().unwrap_or_default());
            if name == "condCountDown" && v > 0 {
                v -= 1;
                cell[..4].copy_from_slice(&v.to_le_bytes());
            }
            st.cond_set(handle, v as u64)
        }
        "fault" => Err(GpuError(code::ILLEGAL_ADDRESS)),
        _ => Err(GpuError(code::NOT_FOUND)),
    }
}

impl Executor for SimExecutor {
    fn name(&self) -> &'static str {
        "sim"
    }
    fn driver_version(&self) -> i32 {
        13000
    }
    fn devices(&self) -> &[DeviceInfo] {
        &self.infos
    }

    fn probe(&self, device: u32) -> GpuResult<()> {
        self.check_device(device)?;
        self.live().map(|_| ())
    }
    fn reset_device(&self, device: u32) -> GpuResult<()> {
        self.check_device(device)?;
        // Tests of the daemon's restart: a driver that cannot recover in this process.
        if std::env::var_os("BATON_SIM_RESET_FAILS").is_some() {
            return Err(GpuError(code::ILLEGAL_ADDRESS));
        }
        let mut st = self.lock();
        // Everything of the old context goes, including completion writes held back while
        // paused; handles and addresses keep counting up, so a stale one never names a new
        // object here (on a real GPU it might, which is why the daemon never uses one).
        *st = State {
            next_addr: st.next_addr,
            next_id: st.next_id,
            paused: st.paused,
            ..Default::default()
        };
        Ok(())
    }
    fn mem_alloc(&self, device: u32, bytes: u64) -> GpuResult<u64> {
        self.check_device(device)?;
        let mut st = self.live()?;
        if bytes == 0 {
            return Err(GpuError(code::INVALID_VALUE));
        }
        if st.used.saturating_add(bytes) > TOTAL_MEM {
            return Err(GpuError(code::OUT_OF_MEMORY));
        }
        let addr = st.next_addr;
        st.next_addr += bytes.div_ceil(512) * 512 + 512;
        st.used += bytes;
        st.allocs.insert(addr, vec![0xAB; bytes as usize]);
        Ok(addr)
    }
    fn mem_free(&self, _device: u32, ptr: u64) -> GpuResult<()> {
        let mut st = self.lock();
        let buf = st
            .allocs
            .remove(&ptr)
            .ok_or(GpuError(code::INVALID_VALUE))?;
        st.used -= buf.len() as u64;
        if let Some(pool) = st.pool_allocs.remove(&ptr) {
            let n = buf.len() as u64;
            let gone = match st.pools.get_mut(&pool) {
                Some(p) => {
                    p.used -= n;
                    p.destroyed && p.used == 0
                }
                None => false,
            };
            // A destroyed pool goes away with its last allocation, as the driver's does.
            if gone {
                st.pools.remove(&pool);
            }
        }
        Ok(())
    }
    fn mem_info(&self, device: u32) -> GpuResult<(u64, u64)> {
        self.check_device(device)?;
        let st = self.lock();
        Ok((TOTAL_MEM - st.used, TOTAL_MEM))
    }
    fn host_register(&self, ptr: *mut u8, len: usize) -> GpuResult<u64> {
        self.live()?.host.insert(ptr as u64, len);
        Ok(ptr as u64)
    }
    fn host_unregister(&self, ptr: *mut u8) -> GpuResult<()> {
        self.lock()
            .host
            .remove(&(ptr as u64))
            .map(|_| ())
            .ok_or(GpuError(code::INVALID_VALUE))
    }

    fn image_load(
        &self,
        device: u32,
        _kind: ImageKind,
        image: &[u8],
        verbose: bool,
    ) -> (GpuResult<Raw>, JitLogs) {
        let r = self.check_device(device).and_then(|_| parse_image(image));
        match r {
            Ok(kernels) => {
                let info = if verbose {
                    format!("sim: loaded {} kernels", kernels.len()).into_bytes()
                } else {
                    Vec::new()
                };
                let mut st = self.lock();
                let id = st.id();
                st.images.insert(id, kernels);
                (
                    Ok(id),
                    JitLogs {
                        info,
                        error: Vec::new(),
                    },
                )
            }
            Err(e) => (
                Err(e),
                JitLogs {
                    info: Vec::new(),
                    error: b"sim: not a simulator image".to_vec(),
                },
            ),
        }
    }
    /// Links simulator images by concatenating their kernels into one simulator image.
    fn link(
        &self,
        device: u32,
        req: &baton_ipc::protocol::LinkRequest,
    ) -> (GpuResult<Vec<u8>>, JitLogs, f32) {
        let verbose = req.options.iter().any(|&(o, v)| o == 12 && v != 0);
        let mut logs = JitLogs::default();
        let r = self.check_device(device).and_then(|_| {
            if req.inputs.is_empty() {
                logs.error = b"sim: nothing to link".to_vec();
                return Err(GpuError(code::INVALID_IMAGE));
            }
            let mut out = format!("{SIM_IMAGE_MAGIC}\n");
            for (i, input) in req.inputs.iter().enumerate() {
                let kernels = parse_image(&input.data).inspect_err(|_| {
                    logs.error = format!("sim: input {i} is not a simulator image").into_bytes();
                })?;
                for (name, sizes) in kernels {
                    out.push_str("kernel ");
                    out.push_str(&name);
                    for s in sizes {
                        out.push_str(&format!(" {s}"));
                    }
                    out.push('\n');
                }
            }
            if verbose {
                logs.info = format!("sim: linked {} inputs", req.inputs.len()).into_bytes();
            }
            let mut bytes = out.into_bytes();
            bytes.push(0);
            Ok(bytes)
        });
        (r, logs, 0.5)
    }
    fn image_unload(&self, _kind: ImageKind, image: Raw) -> GpuResult<()> {
        self.lock()
            .images
            .remove(&image)
            .map(|_| ())
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    fn function_names(
        &self,
        _device: u32,
        _kind: ImageKind,
        image: Raw,
    ) -> GpuResult<Vec<CString>> {
        let st = self.lock();
        let kernels = st
            .images
            .get(&image)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        Ok(kernels
            .iter()
            .filter_map(|(n, _)| CString::new(n.as_str()).ok())
            .collect())
    }
    fn get_function(
        &self,
        _device: u32,
        _kind: ImageKind,
        image: Raw,
        name: &CStr,
    ) -> GpuResult<(Raw, FunctionInfo)> {
        let mut st = self.lock();
        let kernels = st
            .images
            .get(&image)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        let name = name.to_str().map_err(|_| GpuError(code::NOT_FOUND))?;
        let (_, sizes) = kernels
            .iter()
            .find(|(n, _)| n == name)
            .ok_or(GpuError(code::NOT_FOUND))?;
        let mut info = FunctionInfo {
            params: natural_layout(sizes).ok_or(GpuError(code::INVALID_IMAGE))?,
            ..Default::default()
        };
        info.attrs[0] = 1024; // MAX_THREADS_PER_BLOCK
        info.attrs[4] = 16; // NUM_REGS
        info.attrs[5] = 90; // PTX_VERSION
        info.attrs[6] = 90; // BINARY_VERSION
        info.attrs[8] = 49152; // MAX_DYNAMIC_SHARED_SIZE_BYTES
        let id = st.id();
        st.funcs.insert(id, (name.to_string(), info.clone()));
        Ok((id, info))
    }
    fn get_global(
        &self,
        _device: u32,
        _kind: ImageKind,
        _image: Raw,
        _name: &CStr,
    ) -> GpuResult<(u64, u64)> {
        Err(GpuError(code::NOT_FOUND))
    }
    fn func_set_attribute(&self, _device: u32, func: Raw, attr: i32, value: i32) -> GpuResult<()> {
        let mut st = self.lock();
        let (_, info) = st
            .funcs
            .get_mut(&func)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        let slot = info
            .attrs
            .get_mut(attr as usize)
            .ok_or(GpuError(code::INVALID_VALUE))?;
        *slot = value;
        Ok(())
    }
    fn occupancy(&self, _device: u32, func: Raw, q: OccupancyQuery) -> GpuResult<(i64, i64)> {
        if !self.lock().funcs.contains_key(&func) {
            return Err(GpuError(code::INVALID_HANDLE));
        }
        let block = q.block_size.max(1) as i64;
        Ok(match q.kind {
            0 => ((2048 / block).min(32), 0),
            1 => (49152, 0),
            _ => (1024, 4 * 2),
        })
    }

    fn stream_create(&self, device: u32, priority: i32) -> GpuResult<Raw> {
        self.check_device(device)?;
        let mut st = self.live()?;
        let id = st.id();
        st.streams.insert(id, priority);
        Ok(id)
    }
    fn stream_destroy(&self, _device: u32, stream: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        st.green_streams.remove(&stream);
        st.streams
            .remove(&stream)
            .map(|_| ())
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    fn stream_synchronize(&self, _device: u32, stream: Raw) -> GpuResult<()> {
        let mut st = self.live()?;
        if !st.streams.contains_key(&stream) {
            return Err(GpuError(code::INVALID_HANDLE));
        }
        st.flush(stream);
        Ok(())
    }
    fn sm_resource(&self, device: u32) -> GpuResult<SmResource> {
        self.check_device(device)?;
        if self.no_green.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(GpuError(code::NOT_SUPPORTED));
        }
        // A small GPU (MULTIPROCESSOR_COUNT) whose partitions come in pairs.
        let count = self.infos[device as usize].attribute(16).unwrap_or(0) as u32;
        Ok(SmResource {
            count,
            min_partition: 2,
            alignment: 2,
        })
    }
    fn green_ctx(&self, device: u32, sm_count: u32) -> GpuResult<(Raw, u32)> {
        let res = self.sm_resource(device)?;
        if sm_count == 0 || sm_count % res.alignment != 0 || sm_count > res.count {
            return Err(GpuError(code::INVALID_VALUE));
        }
        let mut st = self.live()?;
        if let Some(&g) = st.green.get(&(device, sm_count)) {
            return Ok((g, sm_count));
        }
        let g = st.id();
        st.green.insert((device, sm_count), g);
        Ok((g, sm_count))
    }
    fn green_stream_create(&self, device: u32, green: Raw, priority: i32) -> GpuResult<Raw> {
        self.check_device(device)?;
        let mut st = self.live()?;
        let sms = st
            .green
            .iter()
            .find(|(&(d, _), &g)| d == device && g == green)
            .map(|(&(_, n), _)| n)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        let id = st.id();
        st.streams.insert(id, priority);
        st.green_streams.insert(id, sms);
        Ok(id)
    }
    fn stream_priority_range(&self, _device: u32) -> GpuResult<(i32, i32)> {
        Ok((0, -5))
    }

    fn event_create(&self, device: u32, _flags: u32) -> GpuResult<Raw> {
        self.check_device(device)?;
        let mut st = self.live()?;
        let id = st.id();
        st.events.insert(id, None);
        Ok(id)
    }
    fn event_destroy(&self, _device: u32, event: Raw) -> GpuResult<()> {
        self.lock()
            .events
            .remove(&event)
            .map(|_| ())
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    fn event_record(&self, _device: u32, event: Raw, _stream: Raw) -> GpuResult<()> {
        let mut st = self.live()?;
        let e = st
            .events
            .get_mut(&event)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        *e = Some(Instant::now());
        Ok(())
    }
    fn stream_wait_event(&self, _device: u32, _stream: Raw, event: Raw) -> GpuResult<()> {
        self.lock()
            .events
            .get(&event)
            .map(|_| ())
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    fn event_synchronize(&self, _device: u32, event: Raw) -> GpuResult<()> {
        self.live()?
            .events
            .get(&event)
            .map(|_| ())
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    fn event_query(&self, _device: u32, event: Raw) -> GpuResult<bool> {
        // Simulated work is done when it is issued, so every record is reached at once.
        self.lock()
            .events
            .get(&event)
            .map(|_| true)
            .ok_or(GpuError(code::INVALID_HANDLE))
    }
    fn event_elapsed(&self, _device: u32, start: Raw, end: Raw) -> GpuResult<f32> {
        let st = self.lock();
        let a = st
            .events
            .get(&start)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        let b = st.events.get(&end).ok_or(GpuError(code::INVALID_HANDLE))?;
        match (a, b) {
            (Some(a), Some(b)) => Ok(b.saturating_duration_since(*a).as_secs_f32() * 1000.0),
            _ => Err(GpuError(code::NOT_READY)),
        }
    }

    fn write_value(&self, _device: u32, stream: Raw, addr: u64, value: u64) -> GpuResult<()> {
        let mut st = self.lock();
        if st.faulted.is_some() {
            // Queued behind the faulting kernel: it never runs.
            return Ok(());
        }
        if st.paused {
            st.mem(addr, 8)?;
            st.deferred.push((stream, addr, value));
            return Ok(());
        }
        st.write(addr, value)
    }

    // VMM: a reservation is an address range; a mapping becomes an allocation of its own
    // (several mappings of one handle do not share bytes here, which no test relies on).
    fn vmm_granularity(&self, device: u32, _prop: &VmmProp) -> GpuResult<u64> {
        self.check_device(device)?;
        Ok(2 << 20)
    }
    fn vmm_reserve(
        &self,
        _device: u32,
        size: u64,
        _align: u64,
        _addr: u64,
        _flags: u64,
    ) -> GpuResult<u64> {
        let mut st = self.lock();
        // Like the driver, refuse what the address space cannot hold (a fuzzed size may be
        // anything, and reservations add up).
        let addr = st.next_addr.next_multiple_of(2 << 20);
        let end = addr
            .checked_add(size)
            .filter(|&e| e <= SIM_VA_END)
            .ok_or(GpuError(code::OUT_OF_MEMORY))?;
        st.next_addr = end;
        Ok(addr)
    }
    fn vmm_address_free(&self, _device: u32, _ptr: u64, _size: u64) -> GpuResult<()> {
        Ok(())
    }
    fn vmm_create(&self, device: u32, size: u64, _prop: &VmmProp) -> GpuResult<Raw> {
        self.check_device(device)?;
        let mut st = self.lock();
        if st.used + size > TOTAL_MEM {
            return Err(GpuError(code::OUT_OF_MEMORY));
        }
        st.used += size;
        let id = st.next_id;
        st.next_id += 1;
        st.phys.insert(id, vec![0; size as usize]);
        Ok(id)
    }
    fn vmm_release(&self, _device: u32, handle: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        let bytes = st
            .phys
            .remove(&handle)
            .ok_or(GpuError(code::INVALID_VALUE))?;
        st.used -= bytes.len() as u64;
        Ok(())
    }
    fn vmm_map(
        &self,
        _device: u32,
        ptr: u64,
        size: u64,
        offset: u64,
        handle: Raw,
    ) -> GpuResult<()> {
        let mut st = self.lock();
        let phys_len = st
            .phys
            .get(&handle)
            .ok_or(GpuError(code::INVALID_VALUE))?
            .len() as u64;
        if offset.checked_add(size).is_none_or(|e| e > phys_len) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        st.mapped.insert(ptr, (handle, offset, size));
        Ok(())
    }
    fn vmm_unmap(&self, _device: u32, ptr: u64, size: u64) -> GpuResult<()> {
        let mut st = self.lock();
        let starts: Vec<u64> = st.mapped.range(ptr..ptr + size).map(|(&k, _)| k).collect();
        for k in starts {
            st.mapped.remove(&k);
        }
        Ok(())
    }
    fn vmm_set_access(
        &self,
        _device: u32,
        _ptr: u64,
        _size: u64,
        _access: &[VmmAccess],
    ) -> GpuResult<()> {
        Ok(())
    }
    fn vmm_get_access(&self, _device: u32, _ptr: u64, _t: u32, _id: i32) -> GpuResult<u64> {
        Ok(3)
    }
    // A capture records the stream's box copies and memsets as a chain of nodes; other work
    // runs when it is issued, as outside a capture.
    fn capture_begin(&self, _device: u32, stream: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        if !st.capturing.insert(stream) {
            return Err(GpuError(code::ILLEGAL_STATE));
        }
        st.capture_start(stream);
        Ok(())
    }
    fn capture_end(&self, _device: u32, stream: Raw) -> GpuResult<Raw> {
        let mut st = self.lock();
        if !st.capturing.remove(&stream) {
            return Err(GpuError(code::ILLEGAL_STATE));
        }
        let id = st.capture_finish(stream);
        st.graphs.insert(id);
        Ok(id)
    }
    fn is_capturing(&self, _device: u32, stream: Raw) -> GpuResult<bool> {
        Ok(self.lock().capturing.contains(&stream))
    }
    fn graph_instantiate(&self, _device: u32, graph: Raw, _flags: u64) -> GpuResult<Raw> {
        let mut st = self.lock();
        if !st.graphs.contains(&graph) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        let id = st.graph_instantiate(graph)?;
        st.graphs.insert(id);
        Ok(id)
    }
    fn graph_launch(&self, _device: u32, exec: Raw, _stream: Raw) -> GpuResult<()> {
        let mut st = self.live()?;
        if !st.graphs.contains(&exec) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        st.graph_launches += 1;
        st.graph_run(exec)
    }
    fn graph_upload(&self, device: u32, exec: Raw, stream: Raw) -> GpuResult<()> {
        let _ = (device, stream);
        self.lock()
            .graphs
            .contains(&exec)
            .then_some(())
            .ok_or(GpuError(code::INVALID_VALUE))
    }
    fn graph_exec_destroy(&self, _device: u32, exec: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        st.graph_forget(exec);
        st.graphs
            .remove(&exec)
            .then_some(())
            .ok_or(GpuError(code::INVALID_VALUE))
    }
    fn graph_destroy(&self, _device: u32, graph: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        st.graph_forget(graph);
        st.graphs
            .remove(&graph)
            .then_some(())
            .ok_or(GpuError(code::INVALID_VALUE))
    }
    fn graph_node_count(&self, _device: u32, graph: Raw) -> GpuResult<u64> {
        let st = self.lock();
        if !st.graphs.contains(&graph) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        Ok(st.graph_nodes(graph, false)?.len() as u64)
    }
    fn graph_create(&self, device: u32) -> GpuResult<Raw> {
        self.check_device(device)?;
        let mut st = self.lock();
        let id = st.graph_new(Default::default());
        st.graphs.insert(id);
        Ok(id)
    }
    fn graph_add_node(
        &self,
        _device: u32,
        graph: Raw,
        deps: &[Raw],
        spec: &super::NodeSpec<'_>,
    ) -> GpuResult<Raw> {
        self.lock().graph_add_node(graph, deps, spec)
    }
    fn graph_node_set(
        &self,
        _device: u32,
        exec: Option<Raw>,
        node: Raw,
        spec: &super::NodeSpec<'_>,
    ) -> GpuResult<()> {
        self.lock().graph_node_set(exec, node, spec)
    }
    fn graph_add_edges(&self, _device: u32, graph: Raw, from: &[Raw], to: &[Raw]) -> GpuResult<()> {
        self.lock().graph_add_edges(graph, from, to)
    }
    fn graph_nodes(&self, _device: u32, graph: Raw, roots: bool) -> GpuResult<Vec<Raw>> {
        self.lock().graph_nodes(graph, roots)
    }
    fn graph_node_type(&self, _device: u32, node: Raw) -> GpuResult<u32> {
        self.lock().graph_node_type(node)
    }
    fn graph_destroy_node(&self, _device: u32, node: Raw) -> GpuResult<()> {
        self.lock().graph_destroy_node(node)
    }
    fn graph_clone(&self, _device: u32, graph: Raw) -> GpuResult<Raw> {
        let mut st = self.lock();
        let id = st.graph_clone(graph)?;
        st.graphs.insert(id);
        Ok(id)
    }
    fn conditional_handle_create(
        &self,
        _device: u32,
        graph: Raw,
        default_value: u32,
        flags: u32,
    ) -> GpuResult<u64> {
        let mut st = self.lock();
        if !st.graphs.contains(&graph) && !st.built.graphs.contains_key(&graph) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        Ok(st.cond_create(default_value, flags))
    }
    fn graph_add_conditional(
        &self,
        _device: u32,
        graph: Raw,
        deps: &[Raw],
        handle: u64,
        kind: u32,
        size: u32,
    ) -> GpuResult<(Raw, Vec<Raw>)> {
        self.lock()
            .graph_add_conditional(graph, deps, handle, kind, size)
    }
    fn graph_exec_update(
        &self,
        _device: u32,
        exec: Raw,
        graph: Raw,
    ) -> (GpuResult<()>, super::UpdateResult) {
        self.lock().graph_exec_update(exec, graph)
    }
    fn tensor_map_encode(
        &self,
        device: u32,
        req: &baton_ipc::protocol::TensorMapEncode,
    ) -> GpuResult<[u8; baton_ipc::protocol::TENSOR_MAP_BYTES]> {
        self.check_device(device)?;
        // Not the driver's encoding: the address, rank and type where tests can read them.
        let mut map = [0u8; baton_ipc::protocol::TENSOR_MAP_BYTES];
        map[..8].copy_from_slice(&req.global_address.to_le_bytes());
        map[8..12].copy_from_slice(&req.rank.to_le_bytes());
        map[12..16].copy_from_slice(&req.data_type.to_le_bytes());
        Ok(map)
    }
    // On a capturing stream these become the capture's memory nodes, as with the driver.
    fn mem_alloc_async(&self, device: u32, bytes: u64, stream: Raw) -> GpuResult<u64> {
        {
            let mut st = self.lock();
            if st.capturing.contains(&stream) {
                let ptr = st.graph_reserve(bytes);
                st.capture_mem(stream, graphs::SimNode::MemAlloc { ptr, bytes })?;
                return Ok(ptr);
            }
        }
        self.mem_alloc(device, bytes)
    }
    fn mem_free_async(&self, device: u32, ptr: u64, stream: Raw) -> GpuResult<()> {
        {
            let mut st = self.lock();
            if st.capturing.contains(&stream) {
                return st.capture_mem(stream, graphs::SimNode::MemFree { ptr });
            }
        }
        self.mem_free(device, ptr)
    }
    fn mem_pool_create(&self, device: u32, _max_size: u64) -> GpuResult<Raw> {
        self.check_device(device)?;
        let mut st = self.live()?;
        st.next_id += 1;
        let id = st.next_id;
        st.pools.insert(id, SimPool::default());
        Ok(id)
    }
    fn mem_pool_destroy(&self, _device: u32, pool: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        let p = st
            .pools
            .get_mut(&pool)
            .filter(|p| !p.destroyed)
            .ok_or(GpuError(code::INVALID_VALUE))?;
        p.destroyed = true;
        if p.used == 0 {
            st.pools.remove(&pool);
        }
        Ok(())
    }
    fn mem_alloc_from_pool(
        &self,
        device: u32,
        pool: Raw,
        bytes: u64,
        _stream: Raw,
    ) -> GpuResult<u64> {
        if self.lock().pools.get(&pool).is_none_or(|p| p.destroyed) {
            return Err(GpuError(code::INVALID_VALUE));
        }
        let ptr = self.mem_alloc(device, bytes)?;
        let mut st = self.lock();
        st.pool_allocs.insert(ptr, pool);
        let p = st.pools.get_mut(&pool).expect("checked above");
        p.used += bytes;
        p.high = p.high.max(p.used);
        Ok(ptr)
    }
    fn mem_pool_attr(
        &self,
        _device: u32,
        pool: Raw,
        attr: u32,
        set: Option<u64>,
    ) -> GpuResult<u64> {
        let mut st = self.live()?;
        let p = st
            .pools
            .get_mut(&pool)
            .filter(|p| !p.destroyed)
            .ok_or(GpuError(code::INVALID_VALUE))?;
        match (attr, set) {
            // Current reserved and used are read-only; the high-water marks reset to 0 only.
            (5 | 7, Some(_)) => return Err(GpuError(code::INVALID_VALUE)),
            (6 | 8, Some(0)) => p.high = p.used,
            (6 | 8, Some(_)) => return Err(GpuError(code::INVALID_VALUE)),
            (1..=4, Some(v)) => {
                p.attrs.insert(attr, v);
            }
            (1..=8, None) => {}
            _ => return Err(GpuError(code::INVALID_VALUE)),
        }
        Ok(match attr {
            5 | 7 => p.used,
            6 | 8 => p.high,
            1..=3 => p.attrs.get(&attr).copied().unwrap_or(1),
            _ => p.attrs.get(&attr).copied().unwrap_or(0),
        })
    }
    fn mem_pool_trim(&self, _device: u32, pool: Raw, _keep: u64) -> GpuResult<()> {
        match self.live()?.pools.get(&pool) {
            Some(p) if !p.destroyed => Ok(()),
            _ => Err(GpuError(code::INVALID_VALUE)),
        }
    }
    fn graph_mem_node(&self, _device: u32, node: Raw) -> GpuResult<super::MemNode> {
        self.lock().graph_mem_node(node)
    }
    fn graph_mem_attr(&self, device: u32, attr: u32, set: Option<u64>) -> GpuResult<u64> {
        self.check_device(device)?;
        self.lock().graph_mem_attr(attr, set)
    }
    fn graph_mem_trim(&self, device: u32) -> GpuResult<()> {
        self.check_device(device)?;
        self.lock().graph_mem_trim();
        Ok(())
    }
    fn copy_2d(
        &self,
        _device: u32,
        dst: Mem,
        dst_pitch: u64,
        src: Mem,
        src_pitch: u64,
        width: u64,
        height: u64,
        _stream: Raw,
    ) -> GpuResult<()> {
        let addr = |m: Mem| match m {
            Mem::Device(p) => p,
            Mem::Host(p) => p as u64,
        };
        // Zero-width rows copy nothing, however many there are (the daemon checks no range
        // for them, so `height` and the pitches can be anything).
        if width == 0 {
            return Ok(());
        }
        let mut st = self.lock();
        for row in 0..height {
            let tmp = st.mem(addr(src) + row * src_pitch, width)?.to_vec();
            st.mem(addr(dst) + row * dst_pitch, width)?
                .copy_from_slice(&tmp);
        }
        Ok(())
    }

    fn max_active_clusters(&self, _device: u32, func: Raw, _cfg: &LaunchConfig) -> GpuResult<i64> {
        if !self.lock().funcs.contains_key(&func) {
            return Err(GpuError(code::INVALID_HANDLE));
        }
        Ok(4)
    }

    fn get_limit(&self, _device: u32, limit: u32) -> GpuResult<u64> {
        let set = self.lock().limits.get(&limit).copied();
        set.or(match limit {
            0 => Some(1024),
            1 | 2 => Some(8 << 20),
            3..=9 => Some(0),
            _ => None,
        })
        .ok_or(GpuError(code::NOT_SUPPORTED))
    }
    fn set_limit(&self, _device: u32, limit: u32, value: u64) -> GpuResult<()> {
        if limit > 9 {
            return Err(GpuError(code::NOT_SUPPORTED));
        }
        self.lock().limits.insert(limit, value);
        Ok(())
    }
    fn host_func(&self, _device: u32, _stream: Raw, f: Box<dyn FnOnce() + Send>) -> GpuResult<()> {
        // Streams are always idle in the simulator: the callback's turn is now, and running it
        // here holds back the session's later commands as the stream would.
        f();
        Ok(())
    }

    fn capture_host_work(
        &self,
        _device: u32,
        stream: Raw,
        work: &std::sync::Arc<super::HostWork>,
    ) -> GpuResult<()> {
        let mut st = self.lock();
        if st.capture_record(stream, &super::NodeSpec::Host(work))? {
            return Ok(());
        }
        drop(st);
        // Not capturing after all: run it now, as `host_func` would.
        work.run();
        Ok(())
    }

    fn launch(
        &self,
        _device: u32,
        func: Raw,
        _stream: Raw,
        cfg: &LaunchConfig,
        params: &[u8],
    ) -> GpuResult<()> {
        let mut st = self.lock();
        let (name, info) = st
            .funcs
            .get(&func)
            .cloned()
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        if st.faulted.is_some() {
            // Launches are asynchronous: accepted, and never run.
            return Ok(());
        }
        if name == "trap" {
            // Like a kernel writing through a wild pointer: the launch succeeds and the
            // context is poisoned for everyone.
            st.faulted = Some(code::ILLEGAL_ADDRESS);
            return Ok(());
        }
        run_kernel(&mut st, &name, &info, cfg, params)
    }
    fn memset(
        &self,
        _device: u32,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u32,
        width: u64,
        height: u64,
        stream: Raw,
    ) -> GpuResult<()> {
        // As for `copy_2d`: empty rows set nothing, however many there are.
        if width == 0 {
            return Ok(());
        }
        let mut st = self.live()?;
        let spec = super::NodeSpec::Memset {
            dst,
            pitch,
            value,
            elem_size: elem,
            width,
            height,
        };
        if st.capture_record(stream, &spec)? {
            return Ok(());
        }
        let pattern = &value.to_le_bytes()[..elem as usize];
        for row in 0..height {
            let out = st.mem(dst + row * pitch, width * elem as u64)?;
            for c in out.chunks_exact_mut(elem as usize) {
                c.copy_from_slice(pattern);
            }
        }
        Ok(())
    }
    fn array_create(&self, device: u32, desc: &baton_ipc::protocol::ArrayCreate) -> GpuResult<Raw> {
        self.check_device(device)?;
        self.lock().array_create(desc)
    }
    fn array_destroy(&self, _device: u32, array: Raw) -> GpuResult<()> {
        self.lock().array_destroy(array)
    }
    fn copy_3d(&self, _device: u32, copy: &BoxCopy, stream: Raw) -> GpuResult<()> {
        let mut st = self.lock();
        if st.capture_record(stream, &super::NodeSpec::Memcpy(*copy))? {
            return Ok(());
        }
        st.copy_3d(copy)
    }
    fn tex_object_create(
        &self,
        device: u32,
        res: &Resource,
        _tex: &baton_ipc::protocol::TextureDesc,
        _view: Option<&baton_ipc::protocol::ViewDesc>,
    ) -> GpuResult<u64> {
        self.check_device(device)?;
        self.lock().object_create(res, false)
    }
    fn tex_object_destroy(&self, _device: u32, tex: u64) -> GpuResult<()> {
        self.lock().object_destroy(tex, false)
    }
    fn surf_object_create(&self, device: u32, res: &Resource) -> GpuResult<u64> {
        self.check_device(device)?;
        self.lock().object_create(res, true)
    }
    fn surf_object_destroy(&self, _device: u32, surf: u64) -> GpuResult<()> {
        self.lock().object_destroy(surf, true)
    }

    fn copy_dtod(&self, _device: u32, dst: u64, src: u64, len: u64, _stream: Raw) -> GpuResult<()> {
        let mut st = self.live()?;
        let tmp = st.mem(src, len)?.to_vec();
        st.mem(dst, len)?.copy_from_slice(&tmp);
        Ok(())
    }
    fn copy_htod(
        &self,
        _device: u32,
        dst: u64,
        src: *const u8,
        len: u64,
        _stream: Raw,
    ) -> GpuResult<()> {
        let mut st = self.live()?;
        let tmp = st.mem(src as u64, len)?.to_vec();
        st.mem(dst, len)?.copy_from_slice(&tmp);
        Ok(())
    }
    fn copy_dtoh(
        &self,
        _device: u32,
        dst: *mut u8,
        src: u64,
        len: u64,
        _stream: Raw,
    ) -> GpuResult<()> {
        let mut st = self.live()?;
        let tmp = st.mem(src, len)?.to_vec();
        st.mem(dst as u64, len)?.copy_from_slice(&tmp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_natural_alignment() {
        assert_eq!(
            natural_layout(&[8, 4, 8, 1, 2]),
            Some(vec![(0, 8), (8, 4), (16, 8), (24, 1), (26, 2)])
        );
    }

    /// Parameter sizes come from the client's image: ones that overflow a block are refused.
    #[test]
    fn images_with_impossible_parameter_sizes_are_refused() {
        let sim = SimExecutor::new();
        for image in [
            &b"//baton-sim\nkernel k 4294967295 8\n"[..],
            b"//baton-sim\nkernel k 1 4294967295\n",
        ] {
            assert_eq!(
                sim.image_load(0, ImageKind::Module, image, false).0,
                Err(GpuError(code::INVALID_IMAGE))
            );
        }
    }

    /// Zero-width memsets and 2D copies with any height finish at once, and a launch of a
    /// huge grid does not overflow the thread count.
    #[test]
    fn empty_rows_and_huge_grids_are_harmless() {
        let sim = SimExecutor::new();
        let p = sim.mem_alloc(0, 64).unwrap();
        sim.memset(0, p, 0, 1, 1, 0, u64::MAX, 0).unwrap();
        sim.copy_2d(
            0,
            Mem::Device(p),
            u64::MAX,
            Mem::Device(p),
            u64::MAX,
            0,
            u64::MAX,
            0,
        )
        .unwrap();
        assert_eq!(
            sim.mem_alloc(0, u64::MAX),
            Err(GpuError(code::OUT_OF_MEMORY))
        );
        let m = sim
            .image_load(
                0,
                ImageKind::Module,
                b"//baton-sim\nkernel fill 8 4 4\n",
                false,
            )
            .0
            .unwrap();
        let (f, _) = sim.get_function(0, ImageKind::Module, m, c"fill").unwrap();
        let mut params = [0u8; 16];
        params[..8].copy_from_slice(&p.to_le_bytes());
        params[12..].copy_from_slice(&16i32.to_le_bytes());
        let cfg = LaunchConfig {
            grid: [u32::MAX; 3],
            block: [u32::MAX; 3],
            ..Default::default()
        };
        sim.launch(0, f, 0, &cfg, &params).unwrap();
    }

    #[test]
    fn vec_add_runs_on_the_cpu() {
        let sim = SimExecutor::new();
        let m = sim
            .image_load(
                0,
                ImageKind::Module,
                b"//baton-sim\nkernel vecAdd 8 8 8 4\n",
                false,
            )
            .0
            .unwrap();
        let (f, info) = sim
            .get_function(0, ImageKind::Module, m, c"vecAdd")
            .unwrap();
        let n = 100u64;
        let [a, b, c] = [0; 3].map(|_| sim.mem_alloc(0, n * 4).unwrap());
        let xs: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        {
            let mut st = sim.lock();
            st.mem(a, n * 4).unwrap().copy_from_slice(&xs);
            st.mem(b, n * 4).unwrap().copy_from_slice(&xs);
        }
        let mut params = vec![0u8; info.params_size()];
        params[0..8].copy_from_slice(&a.to_le_bytes());
        params[8..16].copy_from_slice(&b.to_le_bytes());
        params[16..24].copy_from_slice(&c.to_le_bytes());
        params[24..28].copy_from_slice(&(n as i32).to_le_bytes());
        let cfg = LaunchConfig {
            grid: [1, 1, 1],
            block: [128, 1, 1],
            ..Default::default()
        };
        sim.launch(0, f, 0, &cfg, &params).unwrap();
        let out = sim.lock().mem(c, n * 4).unwrap().to_vec();
        for i in 0..n as usize {
            assert_eq!(
                f32::from_le_bytes(out[i * 4..i * 4 + 4].try_into().unwrap()),
                2.0 * i as f32
            );
        }
        assert_eq!(
            sim.launch(0, f, 0, &cfg, &params[..10]),
            Err(GpuError(code::INVALID_VALUE))
        );
    }
}
