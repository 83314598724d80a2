//! Graphs in the simulator: a graph records its nodes and edges; an executable graph is a
//! snapshot of them, and a launch runs its nodes in dependency order on the CPU.

use super::{run_kernel, State};
use crate::executor::UpdateResult;
use crate::executor::{code, BoxCopy, GpuError, GpuResult, LaunchConfig, NodeSpec, Raw};
use baton_ipc::protocol as p;
use std::collections::HashMap;

#[derive(Clone)]
pub(super) enum SimNode {
    Kernel {
        func: Raw,
        cfg: LaunchConfig,
        params: Vec<u8>,
    },
    Memset {
        dst: u64,
        pitch: u64,
        value: u32,
        elem_size: u32,
        width: u64,
        height: u64,
    },
    Memcpy(HostAddrCopy),
    /// Runs on the launching thread, in dependency order, with the simulator locked.
    Host(std::sync::Arc<crate::executor::HostWork>),
    Empty,
    Child(Box<SimGraph>),
    /// A graph allocation: its address is reserved when the node is made, its bytes exist
    /// from the node's run until a free node (or the client) frees them.
    MemAlloc {
        ptr: u64,
        bytes: u64,
    },
    MemFree {
        ptr: u64,
    },
    /// A conditional node: `bodies` are live graphs while building; an executable graph's
    /// copy holds them frozen in `frozen`.
    Conditional {
        handle: u64,
        kind: u32,
        bodies: Vec<Raw>,
        frozen: Vec<SimGraph>,
    },
}

impl SimNode {
    fn kind(&self) -> u32 {
        match self {
            SimNode::Kernel { .. } => p::NODE_KERNEL,
            SimNode::Memset { .. } => p::NODE_MEMSET,
            SimNode::Memcpy(_) => p::NODE_MEMCPY,
            SimNode::Host(_) => p::NODE_HOST,
            SimNode::Empty => p::NODE_EMPTY,
            SimNode::Child(_) => p::NODE_GRAPH,
            SimNode::MemAlloc { .. } => p::NODE_MEM_ALLOC,
            SimNode::MemFree { .. } => p::NODE_MEM_FREE,
            SimNode::Conditional { .. } => p::NODE_CONDITIONAL,
        }
    }
}

/// A memcpy node's copy. Its host sides are addresses, not references: the simulator only
/// touches them through `State::mem`, which checks them against registered memory each time.
#[derive(Clone, Copy)]
pub(super) struct HostAddrCopy(BoxCopy);

// SAFETY: the pointers inside are never dereferenced directly (see above), so moving them to
// another thread is moving integers.
unsafe impl Send for HostAddrCopy {}

#[derive(Clone, Default)]
pub(super) struct SimGraph {
    nodes: Vec<(Raw, SimNode)>,
    edges: Vec<(Raw, Raw)>,
}

#[derive(Default)]
pub(super) struct SimGraphs {
    /// Graphs and executable graphs, keyed by handle.
    pub(super) graphs: HashMap<Raw, SimGraph>,
    /// Node -> the graph it belongs to.
    owner: HashMap<Raw, Raw>,
    /// Capturing stream -> the graph its captured copies and memsets make, in issue order.
    captures: HashMap<Raw, SimGraph>,
    /// Conditional handles -> (default value, flags, current value).
    pub(super) conds: HashMap<u64, (u32, u32, u64)>,
    /// The device's graph memory pool: every address an allocation node reserved -> its size.
    vas: HashMap<u64, u64>,
    /// Pool bytes kept since the last trim, and the high-water marks of use and reservation.
    reserved: u64,
    used_high: u64,
    reserved_high: u64,
}

fn bad() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

impl State {
    fn sim_node(&mut self, spec: &NodeSpec<'_>) -> GpuResult<SimNode> {
        Ok(match *spec {
            NodeSpec::Kernel {
                func, cfg, params, ..
            } => {
                if !self.funcs.contains_key(&func) {
                    return Err(GpuError(code::INVALID_HANDLE));
                }
                SimNode::Kernel {
                    func,
                    cfg,
                    params: params.to_vec(),
                }
            }
            NodeSpec::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            } => SimNode::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            },
            NodeSpec::Memcpy(c) => SimNode::Memcpy(HostAddrCopy(c)),
            NodeSpec::Host(w) => SimNode::Host(w.clone()),
            NodeSpec::Empty => SimNode::Empty,
            NodeSpec::Child(g) => {
                SimNode::Child(Box::new(self.built.graphs.get(&g).ok_or(bad())?.clone()))
            }
            NodeSpec::MemAlloc { bytes, .. } => SimNode::MemAlloc {
                ptr: self.graph_reserve(bytes),
                bytes,
            },
            NodeSpec::MemFree { ptr } => {
                if !self.built.vas.contains_key(&ptr) {
                    return Err(bad());
                }
                SimNode::MemFree { ptr }
            }
        })
    }

    /// Reserves an address for a graph allocation (never reused, unlike the driver's).
    pub(super) fn graph_reserve(&mut self, bytes: u64) -> u64 {
        let addr = self.next_addr;
        self.next_addr += bytes.div_ceil(512) * 512 + 512;
        self.built.vas.insert(addr, bytes);
        addr
    }

    /// Records a captured stream-ordered allocation or free on a capturing `stream`.
    pub(super) fn capture_mem(&mut self, stream: Raw, node: SimNode) -> GpuResult<()> {
        let id = self.id();
        let g = self.built.captures.get_mut(&stream).ok_or(bad())?;
        if let Some(&(last, _)) = g.nodes.last() {
            g.edges.push((last, id));
        }
        g.nodes.push((id, node));
        Ok(())
    }

    /// The allocation or free a memory node makes.
    pub(super) fn graph_mem_node(&self, node: Raw) -> GpuResult<crate::executor::MemNode> {
        let graph = self.built.owner.get(&node).ok_or(bad())?;
        let g = self.built.graphs.get(graph).ok_or(bad())?;
        let (_, n) = g.nodes.iter().find(|(id, _)| *id == node).ok_or(bad())?;
        match *n {
            SimNode::MemAlloc { ptr, bytes } => Ok(crate::executor::MemNode {
                alloc: true,
                ptr,
                bytes,
            }),
            SimNode::MemFree { ptr } => Ok(crate::executor::MemNode {
                alloc: false,
                ptr,
                bytes: 0,
            }),
            _ => Err(bad()),
        }
    }

    /// Bytes of graph allocations that exist now.
    fn graph_used(&self) -> u64 {
        self.built
            .vas
            .iter()
            .filter(|(p, _)| self.allocs.contains_key(p))
            .map(|(_, &b)| b)
            .sum()
    }

    /// `CUgraphMem_attribute` 0..=3: used now, used high, reserved now, reserved high.
    pub(super) fn graph_mem_attr(&mut self, attr: u32, set: Option<u64>) -> GpuResult<u64> {
        match (attr, set) {
            (1, Some(0)) => self.built.used_high = self.graph_used(),
            (3, Some(0)) => self.built.reserved_high = self.built.reserved,
            (_, Some(_)) => return Err(bad()),
            _ => {}
        }
        Ok(match attr {
            0 => self.graph_used(),
            1 => self.built.used_high,
            2 => self.built.reserved,
            3 => self.built.reserved_high,
            _ => return Err(bad()),
        })
    }

    /// Gives back pool memory no allocation uses.
    pub(super) fn graph_mem_trim(&mut self) {
        self.built.reserved = self.graph_used();
    }

    pub(super) fn capture_start(&mut self, stream: Raw) {
        self.built.captures.insert(stream, SimGraph::default());
    }

    /// The graph captured on `stream`, its nodes one after another.
    pub(super) fn capture_finish(&mut self, stream: Raw) -> Raw {
        let g = self.built.captures.remove(&stream).unwrap_or_default();
        let nodes: Vec<Raw> = g.nodes.iter().map(|(id, _)| *id).collect();
        let id = self.graph_new(g);
        for n in nodes {
            self.built.owner.insert(n, id);
        }
        id
    }

    /// Records `spec` as the next node of the capture on `stream`; `false` if the stream is not
    /// capturing (the work is to run now).
    pub(super) fn capture_record(&mut self, stream: Raw, spec: &NodeSpec<'_>) -> GpuResult<bool> {
        if !self.built.captures.contains_key(&stream) {
            return Ok(false);
        }
        let node = self.sim_node(spec)?;
        let id = self.id();
        let g = self.built.captures.get_mut(&stream).ok_or(bad())?;
        if let Some(&(last, _)) = g.nodes.last() {
            g.edges.push((last, id));
        }
        g.nodes.push((id, node));
        Ok(true)
    }

    pub(super) fn graph_new(&mut self, g: SimGraph) -> Raw {
        let id = self.id();
        self.built.graphs.insert(id, g);
        id
    }

    pub(super) fn graph_add_node(
        &mut self,
        graph: Raw,
        deps: &[Raw],
        spec: &NodeSpec<'_>,
    ) -> GpuResult<Raw> {
        let node = self.sim_node(spec)?;
        if deps.iter().any(|d| self.built.owner.get(d) != Some(&graph)) {
            return Err(bad());
        }
        let id = self.id();
        let g = self.built.graphs.get_mut(&graph).ok_or(bad())?;
        g.nodes.push((id, node));
        g.edges.extend(deps.iter().map(|&d| (d, id)));
        self.built.owner.insert(id, graph);
        Ok(id)
    }

    pub(super) fn graph_node_set(
        &mut self,
        exec: Option<Raw>,
        node: Raw,
        spec: &NodeSpec<'_>,
    ) -> GpuResult<()> {
        let new = self.sim_node(spec)?;
        let graph = match exec {
            Some(e) => e,
            None => *self.built.owner.get(&node).ok_or(bad())?,
        };
        let g = self.built.graphs.get_mut(&graph).ok_or(bad())?;
        let slot = g
            .nodes
            .iter_mut()
            .find(|(id, _)| *id == node)
            .ok_or(bad())?;
        if slot.1.kind() != new.kind() {
            return Err(bad());
        }
        slot.1 = new;
        Ok(())
    }

    pub(super) fn graph_add_edges(
        &mut self,
        graph: Raw,
        from: &[Raw],
        to: &[Raw],
    ) -> GpuResult<()> {
        let mine = |n: &Raw| self.built.owner.get(n) == Some(&graph);
        if from.len() != to.len() || !from.iter().chain(to).all(mine) {
            return Err(bad());
        }
        let g = self.built.graphs.get_mut(&graph).ok_or(bad())?;
        g.edges.extend(from.iter().copied().zip(to.iter().copied()));
        Ok(())
    }

    pub(super) fn graph_nodes(&self, graph: Raw, roots: bool) -> GpuResult<Vec<Raw>> {
        let g = self.built.graphs.get(&graph).ok_or(bad())?;
        Ok(g.nodes
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !roots || !g.edges.iter().any(|e| e.1 == *id))
            .collect())
    }

    pub(super) fn graph_node_type(&self, node: Raw) -> GpuResult<u32> {
        let graph = self.built.owner.get(&node).ok_or(bad())?;
        let g = self.built.graphs.get(graph).ok_or(bad())?;
        let (_, n) = g.nodes.iter().find(|(id, _)| *id == node).ok_or(bad())?;
        Ok(n.kind())
    }

    pub(super) fn graph_destroy_node(&mut self, node: Raw) -> GpuResult<()> {
        let graph = self.built.owner.remove(&node).ok_or(bad())?;
        let g = self.built.graphs.get_mut(&graph).ok_or(bad())?;
        g.nodes.retain(|(id, _)| *id != node);
        g.edges.retain(|&(a, b)| a != node && b != node);
        Ok(())
    }

    /// A copy with fresh node handles (as `cuGraphClone` makes).
    pub(super) fn graph_clone(&mut self, graph: Raw) -> GpuResult<Raw> {
        let mut g = self.built.graphs.get(&graph).ok_or(bad())?.clone();
        let mut map = HashMap::new();
        for (id, _) in g.nodes.iter_mut() {
            let new = self.id();
            map.insert(*id, new);
            *id = new;
        }
        for (a, b) in g.edges.iter_mut() {
            *a = map[a];
            *b = map[b];
        }
        let nodes: Vec<Raw> = g.nodes.iter().map(|(id, _)| *id).collect();
        let c = self.graph_new(g);
        for n in nodes {
            self.built.owner.insert(n, c);
        }
        Ok(c)
    }

    /// A snapshot that keeps the graph's node handles, so they name the executable's copies.
    pub(super) fn graph_instantiate(&mut self, graph: Raw) -> GpuResult<Raw> {
        let g = self.frozen(graph)?;
        Ok(self.graph_new(g))
    }

    /// A copy of `graph` whose conditional nodes hold copies of their bodies.
    fn frozen(&self, graph: Raw) -> GpuResult<SimGraph> {
        let mut g = self.built.graphs.get(&graph).ok_or(bad())?.clone();
        for (_, n) in g.nodes.iter_mut() {
            if let SimNode::Conditional { bodies, frozen, .. } = n {
                *frozen = bodies
                    .iter()
                    .map(|&b| self.frozen(b))
                    .collect::<GpuResult<_>>()?;
            }
        }
        Ok(g)
    }

    pub(super) fn cond_create(&mut self, default_value: u32, flags: u32) -> u64 {
        let h = self.id();
        self.built
            .conds
            .insert(h, (default_value, flags, default_value as u64));
        h
    }

    /// Sets a conditional handle's value, as `cudaGraphSetConditional` does on the device.
    pub(super) fn cond_set(&mut self, handle: u64, value: u64) -> GpuResult<()> {
        let c = self.built.conds.get_mut(&handle).ok_or(bad())?;
        c.2 = value;
        Ok(())
    }

    pub(super) fn graph_add_conditional(
        &mut self,
        graph: Raw,
        deps: &[Raw],
        handle: u64,
        kind: u32,
        size: u32,
    ) -> GpuResult<(Raw, Vec<Raw>)> {
        if !self.built.conds.contains_key(&handle) || !self.built.graphs.contains_key(&graph) {
            return Err(bad());
        }
        let bodies: Vec<Raw> = (0..size)
            .map(|_| self.graph_new(SimGraph::default()))
            .collect();
        let node = SimNode::Conditional {
            handle,
            kind,
            bodies: bodies.clone(),
            frozen: Vec::new(),
        };
        if deps.iter().any(|d| self.built.owner.get(d) != Some(&graph)) {
            return Err(bad());
        }
        let id = self.id();
        let g = self.built.graphs.get_mut(&graph).ok_or(bad())?;
        g.nodes.push((id, node));
        g.edges.extend(deps.iter().map(|&d| (d, id)));
        self.built.owner.insert(id, graph);
        Ok((id, bodies))
    }

    /// Runs a conditional node per its handle's value (a WHILE body at most `LIMIT` times).
    fn run_conditional(&mut self, handle: u64, kind: u32, bodies: &[SimGraph]) -> GpuResult<()> {
        const LIMIT: u32 = 1 << 16;
        let value = |st: &Self| st.built.conds.get(&handle).map(|c| c.2).ok_or(bad());
        match kind {
            p::COND_IF => match (value(self)? != 0, bodies) {
                (true, [body, ..]) | (false, [_, body]) => self.run_graph(body),
                _ => Ok(()),
            },
            p::COND_WHILE => {
                let body = bodies.first().ok_or(bad())?;
                let mut n = 0;
                while value(self)? != 0 {
                    n += 1;
                    if n > LIMIT {
                        return Err(GpuError(code::LAUNCH_FAILED));
                    }
                    self.run_graph(body)?;
                }
                Ok(())
            }
            p::COND_SWITCH => match bodies.get(value(self)? as usize) {
                Some(body) => self.run_graph(body),
                None => Ok(()),
            },
            _ => Err(bad()),
        }
    }

    pub(super) fn graph_forget(&mut self, graph: Raw) -> bool {
        self.built.owner.retain(|_, g| *g != graph);
        let Some(g) = self.built.graphs.remove(&graph) else {
            return false;
        };
        // A conditional node's bodies go with it.
        for (_, n) in g.nodes {
            if let SimNode::Conditional { bodies, .. } = n {
                for b in bodies {
                    self.graph_forget(b);
                }
            }
        }
        true
    }

    /// Same nodes of the same kinds in the same order and the same edges: parameters are
    /// taken over; anything else is a topology change.
    pub(super) fn graph_exec_update(
        &mut self,
        exec: Raw,
        graph: Raw,
    ) -> (GpuResult<()>, UpdateResult) {
        let (Some(x), Some(g)) = (self.built.graphs.get(&exec), self.built.graphs.get(&graph))
        else {
            return (Err(bad()), UpdateResult::default());
        };
        let pos = |gr: &SimGraph, n: Raw| gr.nodes.iter().position(|(id, _)| *id == n);
        let same_edges = x.edges.len() == g.edges.len()
            && x.edges
                .iter()
                .zip(&g.edges)
                .all(|(a, b)| (pos(x, a.0), pos(x, a.1)) == (pos(g, b.0), pos(g, b.1)));
        let mismatch = (x.nodes.len() != g.nodes.len()).then_some(0).or_else(|| {
            x.nodes
                .iter()
                .zip(&g.nodes)
                .position(|(a, b)| a.1.kind() != b.1.kind())
        });
        if let Some(i) = mismatch.or((!same_edges).then_some(0)) {
            let error_node = g.nodes.get(i).map_or(0, |n| n.0);
            const TOPOLOGY_CHANGED: u32 = 2;
            const UPDATE_FAILURE: u32 = 910;
            return (
                Err(GpuError(UPDATE_FAILURE)),
                UpdateResult {
                    result: TOPOLOGY_CHANGED,
                    error_node,
                },
            );
        }
        let fresh: Vec<SimNode> = g.nodes.iter().map(|n| n.1.clone()).collect();
        if let Some(x) = self.built.graphs.get_mut(&exec) {
            for (slot, n) in x.nodes.iter_mut().zip(fresh) {
                slot.1 = n;
            }
        }
        (Ok(()), UpdateResult::default())
    }

    pub(super) fn graph_run(&mut self, exec: Raw) -> GpuResult<()> {
        let g = self.built.graphs.get(&exec).ok_or(bad())?.clone();
        // Handles made with CU_GRAPH_COND_ASSIGN_DEFAULT start each launch at their default.
        for c in self.built.conds.values_mut() {
            if c.1 & p::COND_ASSIGN_DEFAULT != 0 {
                c.2 = c.0 as u64;
            }
        }
        self.run_graph(&g)
    }

    /// Runs nodes whose dependencies have all run, until none is left.
    fn run_graph(&mut self, g: &SimGraph) -> GpuResult<()> {
        let mut done: Vec<Raw> = Vec::with_capacity(g.nodes.len());
        while done.len() < g.nodes.len() {
            let ready = g.nodes.iter().find(|(id, _)| {
                !done.contains(id)
                    && g.edges
                        .iter()
                        .filter(|e| e.1 == *id)
                        .all(|e| done.contains(&e.0))
            });
            // A cycle: the driver refuses to instantiate one.
            let (id, node) = ready.ok_or(bad())?;
            self.run_node(node)?;
            done.push(*id);
        }
        Ok(())
    }

    fn run_node(&mut self, node: &SimNode) -> GpuResult<()> {
        match node {
            SimNode::Kernel { func, cfg, params } => {
                let (name, info) = self
                    .funcs
                    .get(func)
                    .cloned()
                    .ok_or(GpuError(code::INVALID_HANDLE))?;
                run_kernel(self, &name, &info, cfg, params)
            }
            &SimNode::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            } => {
                let pattern = value.to_le_bytes();
                let pattern = &pattern[..elem_size as usize];
                for row in 0..height {
                    let out = self.mem(dst + row * pitch, width * elem_size as u64)?;
                    for c in out.chunks_exact_mut(elem_size as usize) {
                        c.copy_from_slice(pattern);
                    }
                }
                Ok(())
            }
            SimNode::Memcpy(c) => self.copy_3d(&c.0),
            SimNode::Host(w) => {
                w.run();
                Ok(())
            }
            SimNode::Empty => Ok(()),
            SimNode::Child(g) => self.run_graph(g),
            &SimNode::MemAlloc { ptr, bytes } => {
                // Allocated and not yet freed: the driver refuses to allocate it again.
                if self.allocs.contains_key(&ptr) {
                    return Err(bad());
                }
                self.allocs.insert(ptr, vec![0xCD; bytes as usize]);
                self.used += bytes;
                let used = self.graph_used();
                let b = &mut self.built;
                b.reserved = b.reserved.max(used);
                b.used_high = b.used_high.max(used);
                b.reserved_high = b.reserved_high.max(b.reserved);
                Ok(())
            }
            SimNode::Conditional {
                handle,
                kind,
                frozen,
                ..
            } => self.run_conditional(*handle, *kind, frozen),
            &SimNode::MemFree { ptr } => {
                let buf = self.allocs.remove(&ptr).ok_or(bad())?;
                self.used -= buf.len() as u64;
                Ok(())
            }
        }
    }
}
