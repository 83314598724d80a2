//! Ring commands: what a client writes into its command ring, and what the daemon decodes.
//!
//! Every message is `Header` followed by one fixed `#[repr(C)]` body chosen by `Header::op`,
//! followed (for some ops) by a variable tail: a kernel's packed parameter block, or a symbol name.
//! Bodies are plain integers (zerocopy `FromBytes`), so decoding untrusted bytes can fail but
//! never misbehave: every value is then checked by the daemon against the session's own tables.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

mod arrays;
mod conditional;
mod graph_nodes;
mod link;
mod pools;
pub use arrays::*;
pub use conditional::*;
pub use graph_nodes::*;
pub use link::*;
pub use pools::*;

/// `Header::reply` for commands whose result is not awaited (errors surface at the next sync).
pub const NO_REPLY: u32 = u32::MAX;

/// Longest symbol name accepted in `GetFunction`/`GetGlobal`.
pub const MAX_NAME: usize = 4096;

/// Largest kernel parameter block (the driver's own limit is 32,764 bytes).
pub const MAX_PARAMS: usize = 32764;

/// Stream ids at and above this name a device's legacy default stream (`CUstream` 0,
/// `CU_STREAM_LEGACY`): `LEGACY_STREAM_BASE + device`. Ids below are streams the client created.
pub const LEGACY_STREAM_BASE: u64 = 1 << 62;

/// The stream id of `device`'s legacy default stream.
pub fn legacy_stream(device: u32) -> u64 {
    LEGACY_STREAM_BASE + device as u64
}

macro_rules! ops {
    ($($name:ident = $val:expr => $body:ident,)*) => {
        /// Operation codes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub enum Op { $($name = $val,)* }

        impl Op {
            /// Decodes an untrusted op code.
            pub fn from_u16(v: u16) -> Option<Op> {
                match v { $($val => Some(Op::$name),)* _ => None }
            }
            /// Size of this op's fixed body.
            pub fn body_size(self) -> usize {
                match self { $(Op::$name => core::mem::size_of::<$body>(),)* }
            }
        }
    };
}

ops! {
    MemAlloc = 1 => MemAlloc,
    MemFree = 2 => MemFree,
    MemGetInfo = 3 => DeviceOnly,
    LoadModule = 4 => LoadModule,
    UnloadModule = 5 => ObjectId,
    GetFunction = 6 => GetSymbol,
    GetGlobal = 7 => GetSymbol,
    StreamCreate = 8 => StreamCreate,
    StreamDestroy = 9 => ObjectId,
    EventCreate = 10 => EventCreate,
    EventDestroy = 11 => ObjectId,
    EventRecord = 12 => EventRecord,
    StreamWaitEvent = 13 => StreamWaitEvent,
    StreamSynchronize = 14 => ObjectId,
    CtxSynchronize = 15 => DeviceOnly,
    EventSynchronize = 16 => ObjectId,
    EventElapsedTime = 17 => EventPair,
    StreamMark = 18 => StreamMark,
    Launch = 19 => Launch,
    Memset = 20 => Memset,
    CopyDtoD = 21 => Copy,
    CopyHtoDPinned = 22 => Copy,
    CopyDtoHPinned = 23 => Copy,
    CopyHtoDStaged = 24 => Staged,
    CopyDtoHStaged = 25 => Staged,
    FuncSetAttribute = 26 => FuncSetAttribute,
    Occupancy = 27 => Occupancy,
    CtxLimit = 28 => CtxLimit,
    HostFunc = 29 => HostFunc,
    MemAllocAsync = 30 => MemAllocAsync,
    MemFreeAsync = 31 => MemFreeAsync,
    Copy2D = 32 => Copy2D,
    OccupancyClusters = 33 => OccupancyClusters,
    VmmGranularity = 34 => VmmProp,
    VmmReserve = 35 => VmmReserve,
    VmmAddressFree = 36 => VmmRange,
    VmmCreate = 37 => VmmCreate,
    VmmRelease = 38 => ObjectId,
    VmmMap = 39 => VmmMap,
    VmmUnmap = 40 => VmmRange,
    VmmSetAccess = 41 => VmmSetAccess,
    VmmGetAccess = 42 => VmmGetAccess,
    VmmRetain = 43 => MemFree,
    CaptureBegin = 44 => CaptureBegin,
    CaptureEnd = 45 => ObjectId,
    GraphInstantiate = 46 => GraphInstantiate,
    GraphLaunch = 47 => GraphLaunch,
    GraphUpload = 48 => GraphLaunch,
    GraphExecDestroy = 49 => ObjectId,
    GraphDestroy = 50 => ObjectId,
    GraphNodeCount = 51 => ObjectId,
    GraphCreate = 52 => DeviceOnly,
    GraphAddNode = 53 => GraphNode,
    GraphSetNode = 54 => GraphNode,
    GraphAddEdges = 55 => GraphEdges,
    GraphGetNodes = 56 => GraphQuery,
    GraphNodeType = 57 => ObjectId,
    GraphDestroyNode = 58 => ObjectId,
    GraphClone = 59 => ObjectId,
    GraphExecUpdate = 60 => GraphExecUpdate,
    TensorMapEncode = 61 => TensorMapEncode,
    ArrayCreate = 70 => ArrayCreate,
    ArrayDestroy = 71 => ObjectId,
    Copy3D = 72 => Copy3D,
    TexObjectCreate = 73 => TexObjectCreate,
    TexObjectDestroy = 74 => ObjectId,
    SurfObjectCreate = 75 => SurfObjectCreate,
    SurfObjectDestroy = 76 => ObjectId,
    LinkComplete = 90 => LinkComplete,
    LinkRead = 91 => LinkRead,
    LinkDestroy = 92 => ObjectId,
    GraphMem = 93 => GraphMem,
    GraphMemNode = 94 => ObjectId,
    IpcGetMemHandle = 80 => MemFree,
    IpcOpenMemHandle = 81 => IpcToken,
    IpcCloseMemHandle = 82 => MemFree,
    IpcGetEventHandle = 83 => ObjectId,
    IpcOpenEventHandle = 84 => IpcToken,
    EventQuery = 85 => ObjectId,
    VmmExport = 86 => VmmExport,
    VmmImport = 87 => IpcToken,
    MemPoolCreate = 110 => MemPoolCreate,
    MemPoolDestroy = 111 => ObjectId,
    MemPoolAlloc = 112 => MemPoolAlloc,
    MemPoolAttr = 113 => MemPoolAttr,
    MemPoolTrim = 114 => MemPoolTrim,
    MemPoolExport = 115 => VmmExport,
    MemPoolImport = 116 => IpcToken,
    MemPoolExportPtr = 117 => MemFree,
    MemPoolImportPtr = 118 => MemPoolImportPtr,
    ConditionalHandleCreate = 125 => ConditionalHandle,
    CaptureToGraph = 126 => CaptureToGraph,
    CaptureInfo = 127 => ObjectId,
    CaptureDeps = 128 => CaptureDeps,
    ModuleFunctions = 129 => ObjectId,
}

/// First bytes of every message.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Header {
    pub op: u16,
    pub _pad: u16,
    /// Reply slot index the daemon answers in, or [`NO_REPLY`].
    pub reply: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DeviceOnly {
    pub device: u32,
    pub _pad: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ObjectId {
    pub id: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemAlloc {
    pub device: u32,
    pub _pad: u32,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemFree {
    pub dptr: u64,
}

/// What a loaded image becomes in the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ImageKind {
    /// `cuModuleLoadData*`/`cuModuleLoadFatBinary`: a context-bound module.
    Module = 0,
    /// `cuLibraryLoadData`: a context-independent library.
    Library = 1,
}

impl ImageKind {
    pub fn from_u32(v: u32) -> Option<ImageKind> {
        match v {
            0 => Some(ImageKind::Module),
            1 => Some(ImageKind::Library),
            _ => None,
        }
    }
}

/// `LoadModule::jit` bit: compile with `CU_JIT_LOG_VERBOSE`.
pub const JIT_VERBOSE: u32 = 1;

/// Answered with values `[module id (0 on failure), CUresult of the load, info log length,
/// error log length]` and the payload `info log ++ error log`, so a failed load still brings
/// back the compiler's error log; the reply's own result is always success.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LoadModule {
    pub device: u32,
    /// [`ImageKind`].
    pub kind: u32,
    /// Blob id returned by the control socket's `AttachBlob`.
    pub blob: u64,
    /// `JIT_*` bits.
    pub jit: u32,
    pub _pad: u32,
}

/// Bytes of each JIT log the daemon collects.
pub const JIT_LOG_BYTES: usize = 3072;

/// Followed by the symbol name (no NUL).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetSymbol {
    /// Module or library id.
    pub module: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StreamCreate {
    pub device: u32,
    pub flags: u32,
    pub priority: i32,
    pub _pad: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventCreate {
    pub device: u32,
    pub flags: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventRecord {
    pub event: u64,
    pub stream: u64,
    /// Written to completion word `word` once the stream reaches this record.
    pub seq: u64,
    pub word: u32,
    pub _pad: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StreamWaitEvent {
    pub stream: u64,
    pub event: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventPair {
    pub start: u64,
    pub end: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StreamMark {
    pub stream: u64,
    pub seq: u64,
    pub word: u32,
    pub _pad: u32,
}

/// `Launch::flags` bit: launch cooperatively.
pub const LAUNCH_COOPERATIVE: u32 = 1;

/// Followed by `params_len` bytes: the kernel's parameter block, laid out as the function's
/// parameter info says (the same bytes as the `extra` form's `CU_LAUNCH_PARAM_BUFFER_POINTER`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Launch {
    pub func: u64,
    pub stream: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub cluster: [u32; 3],
    pub shared_mem: u32,
    pub flags: u32,
    pub params_len: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Memset {
    pub dst: u64,
    pub stream: u64,
    /// Elements per row.
    pub width: u64,
    /// Rows (1 for the plain forms).
    pub height: u64,
    /// Bytes between rows (ignored when `height` is 1).
    pub pitch: u64,
    pub value: u32,
    /// 1, 2 or 4.
    pub elem_size: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Copy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub stream: u64,
}

/// A pageable copy through the session's staging chunks.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Staged {
    /// Device address (destination for HtoD, source for DtoH).
    pub device_ptr: u64,
    pub len: u64,
    pub stream: u64,
    pub chunk: u32,
    pub _pad: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FuncSetAttribute {
    pub func: u64,
    pub attr: i32,
    pub value: i32,
}

/// Which occupancy question (`Occupancy::kind`).
pub const OCC_MAX_ACTIVE_BLOCKS: u32 = 0;
pub const OCC_AVAILABLE_DYNAMIC_SMEM: u32 = 1;
pub const OCC_MAX_POTENTIAL_BLOCK_SIZE: u32 = 2;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Occupancy {
    pub func: u64,
    pub kind: u32,
    pub block_size: u32,
    pub dynamic_smem: u64,
    pub flags: u32,
    /// For `OCC_MAX_POTENTIAL_BLOCK_SIZE`.
    pub block_size_limit: u32,
}

/// `cuCtxSetLimit` (`set` = 1) or `cuCtxGetLimit` (`set` = 0); answered with the value.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CtxLimit {
    pub device: u32,
    pub set: u32,
    pub limit: u32,
    pub _pad: u32,
    pub value: u64,
}

/// `cuLaunchHostFunc`: when the stream gets here, the daemon asks the client (through the
/// region's mailbox) to run its callback `id`, and the stream waits until the client is done.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HostFunc {
    pub stream: u64,
    pub id: u64,
}

/// Stream-ordered allocation from the device's default pool; answered with the address.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemAllocAsync {
    pub stream: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemFreeAsync {
    pub dptr: u64,
    pub stream: u64,
}

/// `Copy2D::flags` bits: the source / destination is pinned host memory (else device memory).
pub const COPY2D_SRC_HOST: u32 = 1;
pub const COPY2D_DST_HOST: u32 = 2;

/// A pitched copy between device memory and/or pinned host memory.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Copy2D {
    pub dst: u64,
    pub dst_pitch: u64,
    pub src: u64,
    pub src_pitch: u64,
    pub width: u64,
    pub height: u64,
    pub stream: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// `cuOccupancyMaxActiveClusters` for a launch configuration; answered with the count.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OccupancyClusters {
    pub func: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub cluster: [u32; 3],
    pub shared_mem: u32,
}

// ---- Virtual memory management (`cuMemCreate`, `cuMemMap`, ...). Handles are session ids.

/// The fields of `CUmemAllocationProp` the daemon needs (and, for `VmmGranularity`, which
/// granularity: `CUmemAllocationGranularity_flags`); answered with the granularity.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmProp {
    pub kind: u32,
    pub location_type: u32,
    pub location_id: i32,
    pub handle_types: u32,
    pub compression: u32,
    pub gpu_direct_rdma: u32,
    pub usage: u32,
    pub option: u32,
}

/// `cuMemAddressReserve`; answered with the reserved address.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmReserve {
    pub size: u64,
    pub alignment: u64,
    pub addr: u64,
    pub flags: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmRange {
    pub ptr: u64,
    pub size: u64,
}

/// `cuMemCreate`; answered with the handle's session id.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmCreate {
    pub size: u64,
    pub prop: VmmProp,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmMap {
    pub ptr: u64,
    pub size: u64,
    pub offset: u64,
    pub handle: u64,
}

/// Most access descriptors one `cuMemSetAccess` may carry (one per device, plus slack).
pub const VMM_MAX_ACCESS: usize = 8;

#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmAccess {
    pub location_type: u32,
    pub location_id: i32,
    pub flags: u32,
    pub _pad: u32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmSetAccess {
    pub ptr: u64,
    pub size: u64,
    pub count: u32,
    pub _pad: u32,
    pub access: [VmmAccess; VMM_MAX_ACCESS],
}

/// `cuMemGetAccess`; answered with the flags.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmGetAccess {
    pub ptr: u64,
    pub location_type: u32,
    pub location_id: i32,
}

// ---- Sharing between clients (`cuIpc*`, `cuMemExportToShareableHandle`). The daemon names
// each shared object by a random token; `IpcGetMemHandle`, `IpcGetEventHandle` and `VmmExport`
// are answered with it in `values[0..2]`.

/// A token that a client read from a handle another client gave it.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IpcToken {
    pub token: [u64; 2],
}

/// Magic first bytes of a legacy memory handle, an event handle and an exported allocation's
/// descriptor contents; the 16-byte token follows.
pub const IPC_MEM_MAGIC: [u8; 8] = *b"BatonMem";
pub const IPC_EVENT_MAGIC: [u8; 8] = *b"BatonEvt";
pub const IPC_VMM_MAGIC: [u8; 8] = *b"BatonVmm";

/// Writes `magic ++ token` into the front of `out` (at least 24 bytes).
pub fn ipc_encode(magic: [u8; 8], token: [u64; 2], out: &mut [u8]) {
    out[..8].copy_from_slice(&magic);
    out[8..16].copy_from_slice(&token[0].to_le_bytes());
    out[16..24].copy_from_slice(&token[1].to_le_bytes());
}

/// The token of a handle that starts with `magic`.
pub fn ipc_decode(magic: [u8; 8], bytes: &[u8]) -> Option<[u64; 2]> {
    if bytes.len() < 24 || bytes[..8] != magic {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    Some([word(8), word(16)])
}

/// `cuMemExportToShareableHandle`: `handle` is the session's allocation id, `handle_type` a
/// `CUmemAllocationHandleType`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmmExport {
    pub handle: u64,
    pub handle_type: u32,
    pub _pad: u32,
}

// ---- Stream capture and graphs. Graphs and executable graphs are session ids.

/// `cuStreamBeginCapture`. The daemon always captures in relaxed mode: capture modes are
/// per thread of a process, and a global-mode capture in the daemon would forbid calls that
/// other tenants make.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CaptureBegin {
    pub stream: u64,
    pub mode: u32,
    pub _pad: u32,
}

/// `cuGraphInstantiateWithFlags`; answered with the executable graph's id.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphInstantiate {
    pub graph: u64,
    pub flags: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphLaunch {
    pub exec: u64,
    pub stream: u64,
}

/// Number of `CUfunction_attribute` values reported with each function (0..16).
pub const FUNC_ATTRS: usize = 16;

/// Reply payload of `GetFunction`: the function's attributes and parameter layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionInfo {
    pub attrs: [i32; FUNC_ATTRS],
    /// (offset, size) of each parameter, in order.
    pub params: Vec<(u32, u32)>,
}

impl FunctionInfo {
    /// Bytes of the packed parameter block.
    pub fn params_size(&self) -> usize {
        self.params
            .iter()
            .map(|&(o, s)| o as usize + s as usize)
            .max()
            .unwrap_or(0)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        for a in self.attrs {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for &(o, s) in &self.params {
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&s.to_le_bytes());
        }
    }

    pub fn decode(b: &[u8]) -> Option<FunctionInfo> {
        let mut r = Reader(b);
        let mut attrs = [0i32; FUNC_ATTRS];
        for a in attrs.iter_mut() {
            *a = r.u32()? as i32;
        }
        let n = r.u32()? as usize;
        if n > MAX_PARAMS / 4 {
            return None;
        }
        let mut params = Vec::with_capacity(n);
        for _ in 0..n {
            params.push((r.u32()?, r.u32()?));
        }
        Some(FunctionInfo { attrs, params })
    }
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*head))
    }
}

/// Builds one message: header, body, tail.
pub fn encode<B: IntoBytes + Immutable>(
    op: Op,
    reply: u32,
    body: &B,
    tail: &[u8],
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(op.body_size(), core::mem::size_of::<B>());
    out.clear();
    out.extend_from_slice(
        Header {
            op: op as u16,
            _pad: 0,
            reply,
        }
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(tail);
}

/// A decoded message: its op, reply slot and the bytes after the header.
#[derive(Debug)]
pub struct Message<'a> {
    pub op: Op,
    pub reply: u32,
    pub body: &'a [u8],
}

/// Why a message could not be decoded. A client that sends one has broken the protocol.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message shorter than its header")]
    Short,
    #[error("unknown op code {0}")]
    UnknownOp(u16),
    #[error("body of {op:?} is {got} bytes, needs at least {need}")]
    Body { op: Op, got: usize, need: usize },
    #[error("tail of {0} bytes is too long")]
    Tail(usize),
}

impl<'a> Message<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let (h, rest) = Header::read_from_prefix(bytes).map_err(|_| DecodeError::Short)?;
        let op = Op::from_u16(h.op).ok_or(DecodeError::UnknownOp(h.op))?;
        if rest.len() < op.body_size() {
            return Err(DecodeError::Body {
                op,
                got: rest.len(),
                need: op.body_size(),
            });
        }
        Ok(Message {
            op,
            reply: h.reply,
            body: rest,
        })
    }

    /// The fixed body and the tail after it. `B` must be the body type of `self.op`.
    pub fn split<B: FromBytes + KnownLayout + Immutable>(
        &self,
    ) -> Result<(B, &'a [u8]), DecodeError> {
        let (b, tail) = B::read_from_prefix(self.body).map_err(|_| DecodeError::Body {
            op: self.op,
            got: self.body.len(),
            need: core::mem::size_of::<B>(),
        })?;
        Ok((b, tail))
    }

    /// The fixed body of an op that has no tail.
    pub fn body<B: FromBytes + KnownLayout + Immutable>(&self) -> Result<B, DecodeError> {
        Ok(self.split::<B>()?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_round_trips_with_params() {
        let body = Launch {
            func: 7,
            stream: 3,
            grid: [4, 1, 1],
            block: [128, 1, 1],
            cluster: [0; 3],
            shared_mem: 0,
            flags: 0,
            params_len: 5,
        };
        let mut buf = Vec::new();
        encode(Op::Launch, NO_REPLY, &body, &[1, 2, 3, 4, 5], &mut buf);
        let m = Message::decode(&buf).unwrap();
        assert_eq!(m.op, Op::Launch);
        assert_eq!(m.reply, NO_REPLY);
        let (b, tail): (Launch, _) = m.split().unwrap();
        assert_eq!(b.func, 7);
        assert_eq!(b.block, [128, 1, 1]);
        assert_eq!(tail, &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn short_and_unknown_messages_are_errors() {
        assert_eq!(Message::decode(&[1, 0]).unwrap_err(), DecodeError::Short);
        assert_eq!(
            Message::decode(&[0xff, 0xff, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::UnknownOp(0xffff)
        );
        let e = Message::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::Body {
                op: Op::MemAlloc,
                ..
            }
        ));
    }

    #[test]
    fn function_info_round_trips() {
        let fi = FunctionInfo {
            attrs: [3; FUNC_ATTRS],
            params: vec![(0, 8), (8, 4), (16, 300)],
        };
        let mut b = Vec::new();
        fi.encode(&mut b);
        assert_eq!(FunctionInfo::decode(&b).unwrap(), fi);
        assert_eq!(fi.params_size(), 316);
        assert!(FunctionInfo::decode(&b[..b.len() - 1]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(m) = Message::decode(&bytes) {
                let _ = m.split::<Launch>();
                let _ = m.body::<Copy>();
            }
            let _ = FunctionInfo::decode(&bytes);
        }
    }
}
