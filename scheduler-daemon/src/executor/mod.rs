//! The executor owns the GPU: one context per device, and every driver call the daemon makes.
//!
//! Sessions and the scheduler talk to the [`Executor`] trait only, never to raw driver calls, so
//! the same daemon runs on a real GPU ([`cuda::CudaExecutor`]) or, in tests without a GPU, on a
//! simulated one ([`sim::SimExecutor`], a test double that runs a few known kernels on the CPU).

pub mod cuda;
mod graph_nodes;
pub mod sim;

use baton_ipc::control::DeviceInfo;
use baton_ipc::protocol::{FunctionInfo, ImageKind, VmmAccess, VmmProp};
pub use graph_nodes::{HostWork, MemNode, NodeSpec, UpdateResult};
use std::ffi::{CStr, CString};

/// A failed driver call: the non-zero `CUresult` the client should see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CUDA error {0}")]
pub struct GpuError(pub u32);

/// `CUresult` codes the daemon produces itself.
pub mod code {
    pub const INVALID_VALUE: u32 = 1;
    pub const OUT_OF_MEMORY: u32 = 2;
    pub const NOT_INITIALIZED: u32 = 3;
    pub const NO_DEVICE: u32 = 100;
    pub const INVALID_DEVICE: u32 = 101;
    pub const INVALID_IMAGE: u32 = 200;
    pub const INVALID_CONTEXT: u32 = 201;
    pub const INVALID_HANDLE: u32 = 400;
    pub const ILLEGAL_STATE: u32 = 401;
    pub const NOT_FOUND: u32 = 500;
    pub const NOT_READY: u32 = 600;
    pub const ILLEGAL_ADDRESS: u32 = 700;
    pub const LAUNCH_FAILED: u32 = 719;
    pub const NOT_SUPPORTED: u32 = 801;
    pub const STREAM_CAPTURE_UNSUPPORTED: u32 = 900;
    pub const UNKNOWN: u32 = 999;
}

pub type GpuResult<T> = Result<T, GpuError>;

/// An executor-level object (a `CUstream`, `CUevent`, `CUmodule`... as an integer).
pub type Raw = u64;

/// Geometry and options of one launch; parameters travel separately as the packed block.
#[derive(Clone, Copy, Debug, Default)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub cluster: [u32; 3],
    pub shared_mem: u32,
    pub cooperative: bool,
}

/// One side of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    Device(u64),
    /// Host memory registered with [`Executor::host_register`].
    Host(*mut u8),
}

/// One side of a box copy: linear memory (pitched rows, `height` rows per slice) or an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Linear { mem: Mem, pitch: u64, height: u64 },
    Array(Raw),
}

/// A box copy: `extent` is (width in bytes, rows, slices); each origin is (x in bytes, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxCopy {
    pub dst: Place,
    pub dst_origin: [u64; 3],
    pub src: Place,
    pub src_origin: [u64; 3],
    pub extent: [u64; 3],
}

/// What a texture or surface object reads: an array or device memory, already checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Array(Raw),
    Linear {
        ptr: u64,
        format: u32,
        channels: u32,
        bytes: u64,
    },
    Pitch2D {
        ptr: u64,
        format: u32,
        channels: u32,
        width: u64,
        height: u64,
        pitch: u64,
    },
}

/// What the JIT compiler said while loading an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JitLogs {
    pub info: Vec<u8>,
    pub error: Vec<u8>,
}

/// Which occupancy question (`baton_ipc::protocol::OCC_*`) and its inputs.
#[derive(Clone, Copy, Debug)]
pub struct OccupancyQuery {
    pub kind: u32,
    pub block_size: u32,
    pub dynamic_smem: u64,
    pub flags: u32,
    pub block_size_limit: u32,
}

/// A device's SMs as green contexts can divide them: how many, the smallest partition, and
/// the multiple every partition's size must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmResource {
    pub count: u32,
    pub min_partition: u32,
    pub alignment: u32,
}

/// Everything the daemon asks of a GPU. Methods taking `device` make that device's context
/// current on the calling thread first.
pub trait Executor: Send + Sync + 'static {
    /// Short name for logs and status ("cuda", "sim").
    fn name(&self) -> &'static str;
    fn driver_version(&self) -> i32;
    fn devices(&self) -> &[DeviceInfo];

    /// Asks the device's context, without waiting for any work, whether a kernel fault has
    /// made it unusable: `Err` with the sticky error if so.
    fn probe(&self, device: u32) -> GpuResult<()> {
        let _ = device;
        Ok(())
    }
    /// Destroys the device's context with everything in it and makes a fresh one current for
    /// later calls. The caller guarantees that no other thread uses the device meanwhile and
    /// that no handle of the old context is ever used again.
    fn reset_device(&self, device: u32) -> GpuResult<()> {
        let _ = device;
        Err(GpuError(code::NOT_SUPPORTED))
    }

    fn mem_alloc(&self, device: u32, bytes: u64) -> GpuResult<u64>;
    fn mem_free(&self, device: u32, ptr: u64) -> GpuResult<()>;
    /// (free, total) bytes of the device.
    fn mem_info(&self, device: u32) -> GpuResult<(u64, u64)>;

    /// Pins host memory of the daemon's address space for DMA and device access; returns the
    /// device address of `ptr`.
    fn host_register(&self, ptr: *mut u8, len: usize) -> GpuResult<u64>;
    fn host_unregister(&self, ptr: *mut u8) -> GpuResult<()>;

    /// Loads an image; the JIT's info and error logs come back whether or not it loads.
    fn image_load(
        &self,
        device: u32,
        kind: ImageKind,
        image: &[u8],
        verbose: bool,
    ) -> (GpuResult<Raw>, JitLogs);
    fn image_unload(&self, kind: ImageKind, image: Raw) -> GpuResult<()>;
    /// Runs the JIT linker over `req` (validated by the session); the linked image, the logs
    /// and the linker's wall time in milliseconds come back whether or not it links.
    fn link(
        &self,
        device: u32,
        req: &baton_ipc::protocol::LinkRequest,
    ) -> (GpuResult<Vec<u8>>, JitLogs, f32) {
        let _ = (device, req);
        (Err(GpuError(code::NOT_SUPPORTED)), JitLogs::default(), 0.0)
    }
    fn get_function(
        &self,
        device: u32,
        kind: ImageKind,
        image: Raw,
        name: &CStr,
    ) -> GpuResult<(Raw, FunctionInfo)>;
    /// The names of an image's functions (a library's kernels), in the driver's order.
    fn function_names(&self, device: u32, kind: ImageKind, image: Raw) -> GpuResult<Vec<CString>> {
        let _ = (device, kind, image);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// (address, size) of a `__device__` variable.
    fn get_global(
        &self,
        device: u32,
        kind: ImageKind,
        image: Raw,
        name: &CStr,
    ) -> GpuResult<(u64, u64)>;
    fn func_set_attribute(&self, device: u32, func: Raw, attr: i32, value: i32) -> GpuResult<()>;
    /// Returns (value, second value) — the second is the min grid size of
    /// `OCC_MAX_POTENTIAL_BLOCK_SIZE`.
    fn occupancy(&self, device: u32, func: Raw, q: OccupancyQuery) -> GpuResult<(i64, i64)>;

    /// Streams are always created non-blocking: no tenant may ever synchronise with another
    /// through the legacy stream of the shared context.
    fn stream_create(&self, device: u32, priority: i32) -> GpuResult<Raw>;
    fn stream_destroy(&self, device: u32, stream: Raw) -> GpuResult<()>;
    fn stream_synchronize(&self, device: u32, stream: Raw) -> GpuResult<()>;
    fn stream_priority_range(&self, device: u32) -> GpuResult<(i32, i32)>;

    /// The device's SMs and how green contexts can partition them; `NOT_SUPPORTED` where the
    /// driver has no green contexts.
    fn sm_resource(&self, device: u32) -> GpuResult<SmResource> {
        let _ = device;
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// A green context confined to `sm_count` SMs of the device (a size [`Self::sm_resource`]
    /// allows), and the SMs it got. Every call with the same `(device, sm_count)` returns the
    /// same context: it is shared, and lives until the device is reset or the daemon exits.
    /// A failure is remembered and returned again, so a driver without green contexts is asked
    /// only once.
    fn green_ctx(&self, device: u32, sm_count: u32) -> GpuResult<(Raw, u32)> {
        let _ = (device, sm_count);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// A non-blocking stream in `green` (from [`Self::green_ctx`]); destroyed with
    /// [`Self::stream_destroy`] like any other.
    fn green_stream_create(&self, device: u32, green: Raw, priority: i32) -> GpuResult<Raw> {
        let _ = (device, green, priority);
        Err(GpuError(code::NOT_SUPPORTED))
    }

    fn event_create(&self, device: u32, flags: u32) -> GpuResult<Raw>;
    fn event_destroy(&self, device: u32, event: Raw) -> GpuResult<()>;
    fn event_record(&self, device: u32, event: Raw, stream: Raw) -> GpuResult<()>;
    fn stream_wait_event(&self, device: u32, stream: Raw, event: Raw) -> GpuResult<()>;
    fn event_synchronize(&self, device: u32, event: Raw) -> GpuResult<()>;
    /// Whether the event's last record has been reached (`cuEventQuery`).
    fn event_query(&self, device: u32, event: Raw) -> GpuResult<bool>;
    fn event_elapsed(&self, device: u32, start: Raw, end: Raw) -> GpuResult<f32>;

    /// Writes `value` to the 8-byte word at device address `addr` (host memory registered by
    /// [`Executor::host_register`]) once the stream's earlier work is done.
    fn write_value(&self, device: u32, stream: Raw, addr: u64, value: u64) -> GpuResult<()>;

    /// Stream-ordered allocation from the device's default pool.
    fn mem_alloc_async(&self, device: u32, bytes: u64, stream: Raw) -> GpuResult<u64>;
    fn mem_free_async(&self, device: u32, ptr: u64, stream: Raw) -> GpuResult<()>;
    /// A pitched copy; each side is a device address or registered host memory.
    fn copy_2d(
        &self,
        device: u32,
        dst: Mem,
        dst_pitch: u64,
        src: Mem,
        src_pitch: u64,
        width: u64,
        height: u64,
        stream: Raw,
    ) -> GpuResult<()>;

    /// `cuOccupancyMaxActiveClusters` for a launch of `func` with `cfg`.
    fn max_active_clusters(&self, device: u32, func: Raw, cfg: &LaunchConfig) -> GpuResult<i64>;

    fn get_limit(&self, device: u32, limit: u32) -> GpuResult<u64>;
    fn set_limit(&self, device: u32, limit: u32, value: u64) -> GpuResult<()>;

    /// Runs `f` on a driver thread once the stream's earlier work is done; later work on the
    /// stream waits until `f` returns.
    fn host_func(&self, device: u32, stream: Raw, f: Box<dyn FnOnce() + Send>) -> GpuResult<()>;

    /// `cuLaunchHostFunc` on a stream being captured: `work` becomes a host node of the
    /// captured graph, run at every launch of it (the caller keeps `work` alive as
    /// [`HostWork`] says).
    fn capture_host_work(
        &self,
        device: u32,
        stream: Raw,
        work: &std::sync::Arc<HostWork>,
    ) -> GpuResult<()>;

    /// `params` is the packed parameter block; `params.len()` is its size.
    fn launch(
        &self,
        device: u32,
        func: Raw,
        stream: Raw,
        cfg: &LaunchConfig,
        params: &[u8],
    ) -> GpuResult<()>;
    fn memset(
        &self,
        device: u32,
        dst: u64,
        pitch: u64,
        value: u32,
        elem_size: u32,
        width: u64,
        height: u64,
        stream: Raw,
    ) -> GpuResult<()>;
    fn copy_dtod(&self, device: u32, dst: u64, src: u64, len: u64, stream: Raw) -> GpuResult<()>;
    /// Creates an array; `desc` has been checked only for sizes that overflow.
    fn array_create(&self, device: u32, desc: &baton_ipc::protocol::ArrayCreate) -> GpuResult<Raw>;
    fn array_destroy(&self, device: u32, array: Raw) -> GpuResult<()>;
    /// A box copy between arrays, device memory and registered host memory.
    fn copy_3d(&self, device: u32, copy: &BoxCopy, stream: Raw) -> GpuResult<()>;
    /// Returns the driver's texture object value, which kernels receive as is.
    fn tex_object_create(
        &self,
        device: u32,
        res: &Resource,
        tex: &baton_ipc::protocol::TextureDesc,
        view: Option<&baton_ipc::protocol::ViewDesc>,
    ) -> GpuResult<u64>;
    fn tex_object_destroy(&self, device: u32, tex: u64) -> GpuResult<()>;
    fn surf_object_create(&self, device: u32, res: &Resource) -> GpuResult<u64>;
    fn surf_object_destroy(&self, device: u32, surf: u64) -> GpuResult<()>;

    /// `src` is host memory registered with [`Executor::host_register`].
    fn copy_htod(
        &self,
        device: u32,
        dst: u64,
        src: *const u8,
        len: u64,
        stream: Raw,
    ) -> GpuResult<()>;
    /// `dst` is host memory registered with [`Executor::host_register`].
    fn copy_dtoh(
        &self,
        device: u32,
        dst: *mut u8,
        src: u64,
        len: u64,
        stream: Raw,
    ) -> GpuResult<()>;

    // ---- Virtual memory management. Addresses and sizes were checked by the session.

    /// `cuMemGetAllocationGranularity` for `prop` (`prop.option` says which).
    fn vmm_granularity(&self, device: u32, prop: &VmmProp) -> GpuResult<u64> {
        let _ = (device, prop);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_reserve(
        &self,
        device: u32,
        size: u64,
        align: u64,
        addr: u64,
        flags: u64,
    ) -> GpuResult<u64> {
        let _ = (device, size, align, addr, flags);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_address_free(&self, device: u32, ptr: u64, size: u64) -> GpuResult<()> {
        let _ = (device, ptr, size);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_create(&self, device: u32, size: u64, prop: &VmmProp) -> GpuResult<Raw> {
        let _ = (device, size, prop);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_release(&self, device: u32, handle: Raw) -> GpuResult<()> {
        let _ = (device, handle);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_map(&self, device: u32, ptr: u64, size: u64, offset: u64, handle: Raw) -> GpuResult<()> {
        let _ = (device, ptr, size, offset, handle);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_unmap(&self, device: u32, ptr: u64, size: u64) -> GpuResult<()> {
        let _ = (device, ptr, size);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_set_access(
        &self,
        device: u32,
        ptr: u64,
        size: u64,
        access: &[VmmAccess],
    ) -> GpuResult<()> {
        let _ = (device, ptr, size, access);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn vmm_get_access(
        &self,
        device: u32,
        ptr: u64,
        location_type: u32,
        location_id: i32,
    ) -> GpuResult<u64> {
        let _ = (device, ptr, location_type, location_id);
        Err(GpuError(code::NOT_SUPPORTED))
    }

    // ---- Explicit memory pools (`cuMemPoolCreate`). Pools are the driver's handles; every
    // caller checked that the pool is one the session may use.

    /// A pool of device memory on `device` (`max_size` 0: the driver's default).
    fn mem_pool_create(&self, device: u32, max_size: u64) -> GpuResult<Raw> {
        let _ = (device, max_size);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Destroys a pool; the driver frees it once its outstanding allocations are freed.
    fn mem_pool_destroy(&self, device: u32, pool: Raw) -> GpuResult<()> {
        let _ = (device, pool);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn mem_alloc_from_pool(
        &self,
        device: u32,
        pool: Raw,
        bytes: u64,
        stream: Raw,
    ) -> GpuResult<u64> {
        let _ = (device, pool, bytes, stream);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Reads a `CU_MEMPOOL_ATTR_*` value, first setting it to `set` if given.
    fn mem_pool_attr(&self, device: u32, pool: Raw, attr: u32, set: Option<u64>) -> GpuResult<u64> {
        let _ = (device, pool, attr, set);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn mem_pool_trim(&self, device: u32, pool: Raw, keep: u64) -> GpuResult<()> {
        let _ = (device, pool, keep);
        Err(GpuError(code::NOT_SUPPORTED))
    }

    // ---- Stream capture and graphs.

    /// Begins a relaxed-mode capture of `stream`.
    fn capture_begin(&self, device: u32, stream: Raw) -> GpuResult<()> {
        let _ = (device, stream);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Ends the capture of `stream`, returning the captured graph.
    fn capture_end(&self, device: u32, stream: Raw) -> GpuResult<Raw> {
        let _ = (device, stream);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn is_capturing(&self, device: u32, stream: Raw) -> GpuResult<bool> {
        let _ = (device, stream);
        Ok(false)
    }
    fn graph_instantiate(&self, device: u32, graph: Raw, flags: u64) -> GpuResult<Raw> {
        let _ = (device, graph, flags);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_launch(&self, device: u32, exec: Raw, stream: Raw) -> GpuResult<()> {
        let _ = (device, exec, stream);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_upload(&self, device: u32, exec: Raw, stream: Raw) -> GpuResult<()> {
        let _ = (device, exec, stream);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_exec_destroy(&self, device: u32, exec: Raw) -> GpuResult<()> {
        let _ = (device, exec);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_destroy(&self, device: u32, graph: Raw) -> GpuResult<()> {
        let _ = (device, graph);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_node_count(&self, device: u32, graph: Raw) -> GpuResult<u64> {
        let _ = (device, graph);
        Err(GpuError(code::NOT_SUPPORTED))
    }

    // ---- Graphs built node by node. Node handles are executor objects (`CUgraphNode`).

    fn graph_create(&self, device: u32) -> GpuResult<Raw> {
        let _ = device;
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Adds a node depending on `deps` (nodes of `graph`).
    fn graph_add_node(
        &self,
        device: u32,
        graph: Raw,
        deps: &[Raw],
        spec: &NodeSpec<'_>,
    ) -> GpuResult<Raw> {
        let _ = (device, graph, deps, spec);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Sets a node's parameters, or with `exec` those of its copy in that executable graph.
    fn graph_node_set(
        &self,
        device: u32,
        exec: Option<Raw>,
        node: Raw,
        spec: &NodeSpec<'_>,
    ) -> GpuResult<()> {
        let _ = (device, exec, node, spec);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Adds the edges `from[i] -> to[i]`.
    fn graph_add_edges(&self, device: u32, graph: Raw, from: &[Raw], to: &[Raw]) -> GpuResult<()> {
        let _ = (device, graph, from, to);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// All nodes of a graph, or (`roots`) those without dependencies.
    fn graph_nodes(&self, device: u32, graph: Raw, roots: bool) -> GpuResult<Vec<Raw>> {
        let _ = (device, graph, roots);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// The node's `CUgraphNodeType` value.
    fn graph_node_type(&self, device: u32, node: Raw) -> GpuResult<u32> {
        let _ = (device, node);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_destroy_node(&self, device: u32, node: Raw) -> GpuResult<()> {
        let _ = (device, node);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    fn graph_clone(&self, device: u32, graph: Raw) -> GpuResult<Raw> {
        let _ = (device, graph);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// `cuGraphConditionalHandleCreate` on `graph` in the device's context: the driver's
    /// handle, which kernels receive as a parameter.
    fn conditional_handle_create(
        &self,
        device: u32,
        graph: Raw,
        default_value: u32,
        flags: u32,
    ) -> GpuResult<u64> {
        let _ = (device, graph, default_value, flags);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Adds a conditional node (`kind` a `CUgraphConditionalNodeType`, `size` body graphs)
    /// depending on `deps`; returns the node and the body graphs, which the node owns.
    fn graph_add_conditional(
        &self,
        device: u32,
        graph: Raw,
        deps: &[Raw],
        handle: u64,
        kind: u32,
        size: u32,
    ) -> GpuResult<(Raw, Vec<Raw>)> {
        let _ = (device, graph, deps, handle, kind, size);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Begins a relaxed-mode capture of `stream` that adds to `graph` after `deps`.
    fn capture_to_graph(
        &self,
        device: u32,
        stream: Raw,
        graph: Raw,
        deps: &[Raw],
    ) -> GpuResult<()> {
        let _ = (device, stream, graph, deps);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// The graph a capturing `stream` adds to, and the nodes its next work will depend on.
    fn capture_info(&self, device: u32, stream: Raw) -> GpuResult<(Raw, Vec<Raw>)> {
        let _ = (device, stream);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// `cuStreamUpdateCaptureDependencies`: `flags` 0 adds `deps`, 1 replaces the set.
    fn capture_set_deps(
        &self,
        device: u32,
        stream: Raw,
        deps: &[Raw],
        flags: u32,
    ) -> GpuResult<()> {
        let _ = (device, stream, deps, flags);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// `cuGraphExecUpdate`: `Err` carries the driver's code, with the result info alongside.
    fn graph_exec_update(
        &self,
        device: u32,
        exec: Raw,
        graph: Raw,
    ) -> (GpuResult<()>, UpdateResult) {
        let _ = (device, exec, graph);
        (Err(GpuError(code::NOT_SUPPORTED)), UpdateResult::default())
    }
    /// The allocation or free a memory node (`NODE_MEM_ALLOC` / `NODE_MEM_FREE`) makes.
    fn graph_mem_node(&self, device: u32, node: Raw) -> GpuResult<MemNode> {
        let _ = (device, node);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Every memory node of a graph (not of its child graphs: the driver keeps memory nodes
    /// out of those).
    fn graph_mem_nodes(&self, device: u32, graph: Raw) -> GpuResult<Vec<MemNode>> {
        let mut out = Vec::new();
        for n in self.graph_nodes(device, graph, false)? {
            let t = self.graph_node_type(device, n)?;
            if t == baton_ipc::protocol::NODE_MEM_ALLOC || t == baton_ipc::protocol::NODE_MEM_FREE {
                out.push(self.graph_mem_node(device, n)?);
            }
        }
        Ok(out)
    }
    /// `cuDeviceGetGraphMemAttribute`, or with `set` `cuDeviceSetGraphMemAttribute` first.
    fn graph_mem_attr(&self, device: u32, attr: u32, set: Option<u64>) -> GpuResult<u64> {
        let _ = (device, attr, set);
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// `cuDeviceGraphMemTrim`.
    fn graph_mem_trim(&self, device: u32) -> GpuResult<()> {
        let _ = device;
        Err(GpuError(code::NOT_SUPPORTED))
    }
    /// Encodes a tensor map; the global address was checked by the session.
    fn tensor_map_encode(
        &self,
        device: u32,
        req: &baton_ipc::protocol::TensorMapEncode,
    ) -> GpuResult<[u8; baton_ipc::protocol::TENSOR_MAP_BYTES]> {
        let _ = (device, req);
        Err(GpuError(code::NOT_SUPPORTED))
    }
}
