//! Bodies of the commands for conditional graph nodes and for captures that add to a graph
//! the client already holds (a conditional node's body, or the graph of a capture in progress).
//!
//! A conditional node travels as a `GraphAddNode` of kind [`NODE_CONDITIONAL`]; the answer
//! carries the node id and, as its payload, the ids of the body graphs the driver made.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `CU_GRAPH_NODE_TYPE_CONDITIONAL`. In `GraphNode`: `dst` is the conditional handle,
/// `value` the `CUgraphConditionalNodeType` and `width` the number of body graphs.
pub const NODE_CONDITIONAL: u32 = 13;

/// `CUgraphConditionalNodeType` values.
pub const COND_IF: u32 = 0;
pub const COND_WHILE: u32 = 1;
pub const COND_SWITCH: u32 = 2;

/// Most body graphs one SWITCH node may have (the driver sets no small limit; this bounds the
/// answer's payload).
pub const MAX_COND_BODIES: u64 = 1024;

/// `CU_GRAPH_COND_ASSIGN_DEFAULT`: the handle takes its default value at each launch.
pub const COND_ASSIGN_DEFAULT: u32 = 1;

/// `cuGraphConditionalHandleCreate` on graph `graph`; answered with the driver's handle.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ConditionalHandle {
    pub graph: u64,
    pub default_value: u32,
    pub flags: u32,
}

/// `cuStreamBeginCaptureToGraph`: capture `stream` into graph `graph`, the first captured
/// work depending on the `ndeps` node ids that follow.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CaptureToGraph {
    pub stream: u64,
    pub graph: u64,
    pub mode: u32,
    pub ndeps: u32,
}

/// `CaptureInfo` (an `ObjectId` naming the stream) is answered with values `[graph id, count]`
/// and the count's node ids as the payload: the capture's graph and the nodes the next
/// captured work will depend on.
///
/// `cuStreamUpdateCaptureDependencies`: `flags` 0 adds the `ndeps` node ids that follow to the
/// stream's dependency set, 1 replaces it.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CaptureDeps {
    pub stream: u64,
    pub flags: u32,
    pub ndeps: u32,
}
