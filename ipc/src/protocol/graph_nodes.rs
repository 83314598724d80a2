//! Bodies of the commands that build graphs node by node, and of tensor-map encoding.
//!
//! Graphs, nodes and executable graphs are session ids. A node's dependencies travel as a tail
//! of ids, so one fixed body serves every node type.

use super::Copy3D;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `CUgraphNodeType` values Baton builds.
pub const NODE_KERNEL: u32 = 0;
pub const NODE_MEMCPY: u32 = 1;
pub const NODE_MEMSET: u32 = 2;
/// Host nodes: `GraphNode::func` is the client's callback id, which the daemon asks the client
/// to run (through the region's mailbox) each time the node runs.
pub const NODE_HOST: u32 = 3;
pub const NODE_GRAPH: u32 = 4;
pub const NODE_EMPTY: u32 = 5;
/// Graph memory nodes: `GraphNode::width` is the allocation's size and `value` its device
/// (alloc); `dst` the address freed (free).
pub const NODE_MEM_ALLOC: u32 = 10;
pub const NODE_MEM_FREE: u32 = 11;

/// Most dependencies one node may name (and most edges one `GraphAddEdges` may add).
pub const MAX_NODE_DEPS: usize = 1024;

/// `GraphAddNode` (answered with the node id) or `GraphSetNode`. Followed by `ndeps` node ids
/// (add only), then `params_len` bytes of a kernel's packed parameter block.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphNode {
    /// The graph a node is added to (add only).
    pub graph: u64,
    /// The node whose parameters are set (set only).
    pub node: u64,
    /// Set: the executable graph whose copy of `node` is updated; 0 updates the node itself.
    pub exec: u64,
    /// `NODE_*`.
    pub kind: u32,
    pub ndeps: u32,
    /// Kernel nodes: the function. Host nodes: the client's callback id.
    pub func: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub params_len: u32,
    // Memset nodes.
    pub dst: u64,
    pub pitch: u64,
    pub width: u64,
    pub height: u64,
    pub value: u32,
    pub elem_size: u32,
    /// Memcpy nodes (`stream` and `chunk` unused: a node never copies through a staging chunk).
    pub copy: Copy3D,
    /// Child-graph nodes: the graph whose copy the node runs.
    pub child: u64,
}

/// Followed by `count` source node ids, then `count` destination node ids.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphEdges {
    pub graph: u64,
    pub count: u32,
    pub _pad: u32,
}

/// `cuGraphGetNodes` (`roots` = 0) or `cuGraphGetRootNodes` (`roots` = 1); answered with the
/// count and the payload of node ids (little-endian `u64`s).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphQuery {
    pub graph: u64,
    pub roots: u32,
    pub _pad: u32,
}

/// Answered with values `[CUgraphExecUpdateResult, error node id or 0]`; the reply's result is
/// the driver's.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphExecUpdate {
    pub exec: u64,
    pub graph: u64,
}

/// `TensorMapEncode::kind`.
pub const TENSOR_MAP_TILED: u32 = 0;
pub const TENSOR_MAP_IM2COL: u32 = 1;

/// Highest tensor rank the driver encodes.
pub const TENSOR_MAX_RANK: usize = 5;

/// `cuTensorMapEncodeTiled` / `cuTensorMapEncodeIm2col`, the enums as plain integers; answered
/// with the 128-byte descriptor as the payload.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TensorMapEncode {
    pub device: u32,
    pub kind: u32,
    pub data_type: u32,
    pub rank: u32,
    pub interleave: u32,
    pub swizzle: u32,
    pub l2_promotion: u32,
    pub oob_fill: u32,
    pub global_address: u64,
    pub global_dim: [u64; TENSOR_MAX_RANK],
    /// Byte strides of dimensions 1.. (rank - 1 of them).
    pub global_strides: [u64; TENSOR_MAX_RANK - 1],
    /// Tiled: the box. Unused for im2col.
    pub box_dim: [u32; TENSOR_MAX_RANK],
    pub element_strides: [u32; TENSOR_MAX_RANK],
    // Im2col only.
    pub lower_corner: [i32; TENSOR_MAX_RANK - 2],
    pub upper_corner: [i32; TENSOR_MAX_RANK - 2],
    pub channels_per_pixel: u32,
    pub pixels_per_column: u32,
}

/// Bytes of an encoded tensor map (`CUtensorMap`).
pub const TENSOR_MAP_BYTES: usize = 128;

/// Bytes per element of a `CUtensorMapDataType`, rounded up to whole bytes for packed types.
pub fn tensor_elem_bytes(data_type: u32) -> Option<u64> {
    match data_type {
        0 => Some(1),                   // UINT8
        1 | 6 | 9 => Some(2),           // UINT16, FLOAT16, BFLOAT16
        2 | 3 | 7 | 10..=12 => Some(4), // UINT32, INT32, FLOAT32(_FTZ), TFLOAT32(_FTZ)
        4 | 5 | 8 => Some(8),           // UINT64, INT64, FLOAT64
        13..=15 => Some(1),             // 16U4_ALIGN8B, 16U4_ALIGN16B, 16U6_ALIGN16B
        _ => None,
    }
}

/// `GraphMem::op`.
pub const GRAPH_MEM_GET: u32 = 0;
pub const GRAPH_MEM_SET: u32 = 1;
pub const GRAPH_MEM_TRIM: u32 = 2;

/// `cuDeviceGetGraphMemAttribute` / `cuDeviceSetGraphMemAttribute` (`attr`, `value`) and
/// `cuDeviceGraphMemTrim`; a get is answered with the value.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GraphMem {
    pub device: u32,
    pub op: u32,
    pub attr: u32,
    pub _pad: u32,
    pub value: u64,
}
