//! Graph memory nodes: allocations a graph makes when it runs (`cuGraphAddMemAllocNode`, or
//! `cuMemAllocAsync` on a capturing stream) and the frees it makes.
//!
//! The driver reserves an allocation's address when the node is made and keeps it for as long
//! as a graph or executable graph holds the node; memory behind it exists only between a
//! launch's allocation and the matching free, which may be in the same graph, another graph,
//! or `cuMemFree`/`cuMemFreeAsync`. The session therefore tracks each address apart from
//! ordinary allocations:
//!
//! * While any graph, executable graph or open capture of the session holds it, the address is
//!   an `Owner::Graph` range: nodes and copies may name it, teardown never frees it.
//! * Instantiating charges the sum of the graph's allocation sizes against the quota
//!   (OUT_OF_MEMORY past it); destroying the executable graph refunds it.
//! * A launch that leaves an allocation unfreed makes it `Owner::GraphOwned`: charged once
//!   more, freed at exit unless `cuMemFree`, `cuMemFreeAsync` or a launched graph's free node
//!   frees it first. A launch whose graph frees an address it did not allocate is refused
//!   unless the session owns that address then, so a graph can never free memory the driver
//!   has since handed to someone else.

use super::dispatch::Answer;
use super::tables::Owner;
use super::Session;
use crate::executor::{code, Executor, GpuError, GpuResult, MemNode, Raw};
use baton_ipc::protocol::{self as p, Message, Op};
use std::collections::{HashMap, HashSet};

/// What keeps a graph allocation's address reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// An open capture on this stream id (its graph does not exist yet).
    Capture(u64),
    Graph(u64),
    Exec(u64),
}

struct Addr {
    len: u64,
    device: u32,
    holders: HashSet<Holder>,
}

/// An executable graph's memory nodes.
struct ExecMem {
    charged: u64,
    /// Addresses the graph leaves allocated, with their sizes.
    leaves: Vec<(u64, u64)>,
    /// Addresses the graph frees that it did not allocate.
    frees: Vec<u64>,
}

#[derive(Default)]
pub struct GraphMem {
    addrs: HashMap<u64, Addr>,
    execs: HashMap<u64, ExecMem>,
    /// Set once any graph of the session has had a memory node: until then no graph needs
    /// scanning for them.
    ever: bool,
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

/// Per address: allocations minus frees of one graph.
fn balance(nodes: &[MemNode]) -> HashMap<u64, (i64, u64)> {
    let mut net: HashMap<u64, (i64, u64)> = HashMap::new();
    for n in nodes {
        let e = net.entry(n.ptr).or_default();
        if n.alloc {
            e.0 += 1;
            e.1 = e.1.max(n.bytes);
        } else {
            e.0 -= 1;
        }
    }
    net
}

impl GraphMem {
    pub fn ever(&self) -> bool {
        self.ever
    }
    pub fn is_graph_addr(&self, ptr: u64) -> bool {
        self.addrs.contains_key(&ptr)
    }
}

impl Session {
    /// Records that `holder` keeps the graph allocation at `ptr` reserved.
    pub(super) fn graph_addr_held(&mut self, ptr: u64, len: u64, device: u32, holder: Holder) {
        let a = self.graphs.mem.addrs.entry(ptr).or_insert_with(|| Addr {
            len,
            device,
            holders: HashSet::new(),
        });
        a.len = a.len.max(len);
        a.holders.insert(holder);
        self.graphs.mem.ever = true;
        let len = a.len;
        if self.ranges.owner_at(ptr) != Some(Owner::GraphOwned) {
            self.ranges.insert(ptr, len, device, Owner::Graph);
        }
    }

    /// `holder` lets go of every address it held; addresses nobody holds any more are
    /// forgotten unless the session owns their memory.
    pub(super) fn graph_addrs_released(&mut self, holder: Holder) {
        let mut gone = Vec::new();
        for (&ptr, a) in self.graphs.mem.addrs.iter_mut() {
            if a.holders.remove(&holder) && a.holders.is_empty() {
                gone.push(ptr);
            }
        }
        for ptr in gone {
            if self.ranges.owner_at(ptr) == Some(Owner::GraphOwned) {
                continue;
            }
            self.graphs.mem.addrs.remove(&ptr);
            self.ranges.remove_owned(ptr, Owner::Graph);
        }
    }

    /// Registers every allocation of the new graph `id` (captured or cloned) as held by it.
    pub(super) fn graph_mem_adopt(
        &mut self,
        exec: &dyn Executor,
        device: u32,
        raw: Raw,
        id: u64,
    ) -> GpuResult<()> {
        if !self.graphs.mem.ever {
            return Ok(());
        }
        for n in exec.graph_mem_nodes(device, raw)? {
            if n.alloc {
                self.graph_addr_held(n.ptr, n.bytes, device, Holder::Graph(id));
            }
        }
        Ok(())
    }

    /// `GraphMem` (the device's graph memory pool) and `GraphMemNode` (a memory node's
    /// parameters: `[is alloc, address, bytes, device]`).
    pub(super) fn graph_mem_op(
        &mut self,
        exec: &dyn Executor,
        m: &Message<'_>,
    ) -> GpuResult<Answer> {
        match m.op {
            Op::GraphMem => {
                let b: p::GraphMem = m.body().map_err(|_| invalid())?;
                // The pool is the device's, shared by every tenant: its figures are
                // device-wide, and trimming releases only memory no allocation uses.
                match b.op {
                    p::GRAPH_MEM_GET => exec.graph_mem_attr(b.device, b.attr, None),
                    p::GRAPH_MEM_SET => exec.graph_mem_attr(b.device, b.attr, Some(b.value)),
                    p::GRAPH_MEM_TRIM => exec.graph_mem_trim(b.device).map(|_| 0),
                    _ => Err(invalid()),
                }
                .map(Answer::value)
            }
            Op::GraphMemNode => {
                let b: p::ObjectId = m.body().map_err(|_| invalid())?;
                let n = self.graphs.built.nodes.get(b.id)?;
                if n.kind != p::NODE_MEM_ALLOC && n.kind != p::NODE_MEM_FREE {
                    return Err(invalid());
                }
                let (graph, raw) = (n.graph, n.raw);
                let device = self.graphs.graphs.get(graph)?.device;
                let mn = exec.graph_mem_node(device, raw)?;
                Ok(Answer {
                    values: [mn.alloc as u64, mn.ptr, mn.bytes, device as u64],
                    payload: Vec::new(),
                })
            }
            _ => Err(invalid()),
        }
    }

    /// Whether a free node (or a captured free) may name `ptr`: only this session's own graph
    /// allocations.
    pub(super) fn check_graph_free(&self, ptr: u64) -> GpuResult<()> {
        self.graphs
            .mem
            .is_graph_addr(ptr)
            .then_some(())
            .ok_or_else(invalid)
    }

    /// Charges an executable graph's allocations; `nodes` are its source graph's memory nodes.
    pub(super) fn graph_mem_instantiated(
        &mut self,
        exec_id: u64,
        device: u32,
        nodes: &[MemNode],
    ) -> GpuResult<()> {
        let charged: u64 = nodes.iter().filter(|n| n.alloc).map(|n| n.bytes).sum();
        if charged > 0 && !self.shared.charge(charged) {
            return Err(GpuError(code::OUT_OF_MEMORY));
        }
        let mut leaves = Vec::new();
        let mut frees = Vec::new();
        for (ptr, (net, len)) in balance(nodes) {
            match net {
                n if n > 0 => leaves.push((ptr, len)),
                n if n < 0 => frees.push(ptr),
                _ => {}
            }
        }
        for n in nodes.iter().filter(|n| n.alloc) {
            self.graph_addr_held(n.ptr, n.bytes, device, Holder::Exec(exec_id));
        }
        self.graphs.mem.execs.insert(
            exec_id,
            ExecMem {
                charged,
                leaves,
                frees,
            },
        );
        Ok(())
    }

    pub(super) fn graph_mem_exec_destroyed(&mut self, exec_id: u64) {
        if let Some(e) = self.graphs.mem.execs.remove(&exec_id) {
            self.shared.refund(e.charged);
        }
        self.graph_addrs_released(Holder::Exec(exec_id));
    }

    /// Launches `exec_id` through `launch`, settling what its memory nodes leave allocated
    /// and free.
    pub(super) fn graph_mem_launch(
        &mut self,
        exec_id: u64,
        launch: impl FnOnce(&mut Self) -> GpuResult<()>,
    ) -> GpuResult<()> {
        let (leaves, frees) = match self.graphs.mem.execs.get(&exec_id) {
            Some(e) => (e.leaves.clone(), e.frees.clone()),
            None => return launch(self),
        };
        for &ptr in &frees {
            if self.ranges.owner_at(ptr) != Some(Owner::GraphOwned) {
                tracing::warn!(ptr, "graph launch refused: it frees a graph allocation this session does not hold allocated");
                return Err(invalid());
            }
        }
        // Already-owned addresses are the driver's to refuse (allocated twice); not charged.
        let fresh: Vec<(u64, u64)> = leaves
            .into_iter()
            .filter(|&(p, _)| self.ranges.owner_at(p) != Some(Owner::GraphOwned))
            .collect();
        let charge: u64 = fresh.iter().map(|f| f.1).sum();
        if charge > 0 && !self.shared.charge(charge) {
            return Err(GpuError(code::OUT_OF_MEMORY));
        }
        if let Err(e) = launch(self) {
            self.shared.refund(charge);
            return Err(e);
        }
        for (ptr, len) in fresh {
            let device = self.graphs.mem.addrs.get(&ptr).map_or(0, |a| a.device);
            self.ranges.insert(ptr, len, device, Owner::GraphOwned);
        }
        for ptr in frees {
            self.graph_owned_released(ptr);
        }
        Ok(())
    }

    /// The session no longer owns the graph allocation at `ptr` (freed by the client or a
    /// graph): refunds it, and keeps the address only while a graph still holds it.
    /// Returns its size and device, or `None` if the session did not own it.
    pub(super) fn graph_owned_released(&mut self, ptr: u64) -> Option<(u64, u32)> {
        let (len, device) = self.ranges.remove_owned(ptr, Owner::GraphOwned)?;
        self.shared.refund(len);
        match self.graphs.mem.addrs.get(&ptr) {
            Some(a) if !a.holders.is_empty() => {
                self.ranges.insert(ptr, a.len, a.device, Owner::Graph);
            }
            _ => {
                self.graphs.mem.addrs.remove(&ptr);
            }
        }
        Some((len, device))
    }
}
