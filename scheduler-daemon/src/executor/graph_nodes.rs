//! What a graph node built by a client is, in the terms the executor needs: session ids are
//! already resolved to executor objects and every address range has been checked.

use super::{BoxCopy, LaunchConfig, Raw};
use std::sync::Arc;

/// What a host node does each time it runs: called on the driver's callback thread (or, in the
/// simulator, where the graph runs). Whoever makes one keeps it alive as long as any graph or
/// executable graph built with it may still run (a launch can outlive its executable graph).
pub struct HostWork(pub Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for HostWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostWork")
    }
}

impl HostWork {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Arc<HostWork> {
        Arc::new(HostWork(Box::new(f)))
    }

    pub fn run(&self) {
        (self.0)()
    }
}

/// One node's parameters.
#[derive(Clone, Copy, Debug)]
pub enum NodeSpec<'a> {
    Kernel {
        func: Raw,
        cfg: LaunchConfig,
        /// The packed parameter block, as for [`super::Executor::launch`].
        params: &'a [u8],
        /// (offset, size) of each parameter in `params`.
        layout: &'a [(u32, u32)],
    },
    Memset {
        dst: u64,
        pitch: u64,
        value: u32,
        elem_size: u32,
        width: u64,
        height: u64,
    },
    Memcpy(BoxCopy),
    /// Runs this work in the daemon (see [`HostWork`] for its lifetime).
    Host(&'a Arc<HostWork>),
    Empty,
    /// A copy of this graph becomes the node's body.
    Child(Raw),
    /// A graph allocation of `bytes` on `device` (pinned device memory of the graph pool).
    MemAlloc {
        device: u32,
        bytes: u64,
    },
    /// Frees the graph allocation at `ptr`.
    MemFree {
        ptr: u64,
    },
}

impl NodeSpec<'_> {
    /// The `CUgraphNodeType` value.
    pub fn kind(&self) -> u32 {
        use baton_ipc::protocol as p;
        match self {
            NodeSpec::Kernel { .. } => p::NODE_KERNEL,
            NodeSpec::Memset { .. } => p::NODE_MEMSET,
            NodeSpec::Memcpy(_) => p::NODE_MEMCPY,
            NodeSpec::Host(_) => p::NODE_HOST,
            NodeSpec::Empty => p::NODE_EMPTY,
            NodeSpec::Child(_) => p::NODE_GRAPH,
            NodeSpec::MemAlloc { .. } => p::NODE_MEM_ALLOC,
            NodeSpec::MemFree { .. } => p::NODE_MEM_FREE,
        }
    }
}

/// What `cuGraphExecUpdate` said: a `CUgraphExecUpdateResult` and the node it blames (an
/// executor node of the new graph, or 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateResult {
    pub result: u32,
    pub error_node: Raw,
}

/// What one memory node of a graph does: allocate `bytes` at `ptr` (`alloc`), or free `ptr`
/// (`bytes` is then 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemNode {
    pub alloc: bool,
    pub ptr: u64,
    pub bytes: u64,
}
