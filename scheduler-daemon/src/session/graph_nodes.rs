//! Graphs built node by node (`cuGraphCreate`, `cuGraphAdd*Node`, ...) and tensor-map encoding.
//!
//! Nodes are session ids like graphs. Every id a client sends is looked up in this session's
//! tables, every address range checked as for the matching stream command, and a node is only
//! ever used with the graph it belongs to, so a client can neither name another tenant's graph
//! nor smuggle a foreign node into its own. Nodes the daemon did not build (those of captured
//! or cloned graphs) get ids the first time the client lists a graph's nodes.

use super::dispatch::Answer;
use super::graph_mem::Holder;
use super::graphs::Graph;
use super::tables::Table;
use super::Session;
use crate::executor::{
    code, BoxCopy, Executor, GpuError, GpuResult, HostWork, LaunchConfig, NodeSpec, Raw,
};
use baton_ipc::protocol::{self as p, Message, Op, MAX_NODE_DEPS, MAX_PARAMS, TENSOR_MAX_RANK};
use std::collections::HashMap;
use std::sync::Arc;

/// What a node was built from, kept so it can be rebuilt for set-params calls.
pub struct Node {
    pub graph: u64,
    pub raw: Raw,
    pub kind: u32,
}

#[derive(Default)]
pub struct Built {
    pub nodes: Table<Node>,
    /// (graph id, executor node) -> node id.
    by_raw: HashMap<(u64, Raw), u64>,
    /// Executable graph -> the graphs whose nodes name its nodes (the one it was instantiated
    /// from, and any it was updated from).
    sources: HashMap<u64, Vec<u64>>,
    /// Memory each node the daemon built names (memset destinations, copy sides): node id ->
    /// ranges. Checked again at every launch, since the tenant may free it meanwhile.
    named: HashMap<u64, Ranges>,
    /// Memory a graph names through what was copied into it (child graphs, its clone source).
    extra: HashMap<u64, Ranges>,
    /// What an executable graph's nodes name: node id (0 for the copied-in rest) -> ranges.
    exec_named: HashMap<u64, HashMap<u64, Ranges>>,
}

/// What a node names besides its graph: memory, arrays, functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    /// A range of device or pinned memory (start, length).
    Mem(u64, u64),
    /// An array, by session id, and the driver's handle it had.
    Array(u64, Raw),
    /// A function, by session id, and the driver's handle it had (gone with its module).
    Function(u64, Raw),
}

/// Everything some nodes name.
pub type Ranges = Vec<Named>;

impl Built {
    pub fn instantiated(&mut self, exec: u64, graph: u64) {
        self.sources.insert(exec, vec![graph]);
    }
    pub fn exec_destroyed(&mut self, exec: u64) {
        self.sources.remove(&exec);
        self.exec_named.remove(&exec);
    }
    /// The driver destroys a graph's nodes with it.
    pub fn graph_destroyed(&mut self, graph: u64) {
        let nodes = &self.nodes;
        self.named
            .retain(|id, _| nodes.get(*id).is_ok_and(|n| n.graph != graph));
        self.extra.remove(&graph);
        self.nodes.retain(|n| n.graph != graph);
        self.by_raw.retain(|&(g, _), _| g != graph);
    }
    pub fn node_destroyed(&mut self, node: u64) {
        self.named.remove(&node);
    }
    /// Memory node `node` names from now on.
    pub fn set_named(&mut self, node: u64, ranges: Ranges) {
        if ranges.is_empty() {
            self.named.remove(&node);
        } else {
            self.named.insert(node, ranges);
        }
    }
    /// Memory `graph` names from now on through something copied into it as well.
    pub fn add_extra(&mut self, graph: u64, ranges: Ranges) {
        if !ranges.is_empty() {
            self.extra.entry(graph).or_default().extend(ranges);
        }
    }
    /// Memory the nodes of `graph` itself name, by node (0: copied in).
    fn own_named(&self, graph: u64) -> HashMap<u64, Ranges> {
        let mut out: HashMap<u64, Ranges> = self
            .named
            .iter()
            .filter(|(id, _)| self.nodes.get(**id).is_ok_and(|n| n.graph == graph))
            .map(|(&id, r)| (id, r.clone()))
            .collect();
        if let Some(e) = self.extra.get(&graph) {
            out.insert(0, e.clone());
        }
        out
    }
    /// An executable graph's nodes name what `graph`'s nodes (with `more`, its conditional
    /// bodies' memory) name now: at instantiation and after an update from it.
    pub fn exec_from(&mut self, exec: u64, graph: u64, more: Ranges) {
        let mut named = self.own_named(graph);
        if !more.is_empty() {
            named.entry(0).or_default().extend(more);
        }
        self.exec_named.insert(exec, named);
    }
    /// A node of an executable graph got new parameters.
    pub fn exec_node_set(&mut self, exec: u64, node: u64, ranges: Ranges) {
        self.exec_named
            .entry(exec)
            .or_default()
            .insert(node, ranges);
    }
    /// Everything `graph` names, flattened (for copying it into another graph).
    pub fn graph_named(&self, graph: u64) -> Ranges {
        self.own_named(graph).into_values().flatten().collect()
    }
    /// Everything an executable graph's nodes name.
    pub fn exec_ranges(&self, exec: u64) -> impl Iterator<Item = &Named> {
        self.exec_named
            .get(&exec)
            .into_iter()
            .flat_map(|m| m.values().flatten())
    }
    pub(super) fn register_node(&mut self, graph: u64, raw: Raw, kind: u32) -> u64 {
        self.register(graph, raw, kind)
    }
    /// The id of executor node `raw` of graph `graph`, giving it one if it has none yet.
    pub(super) fn id_of(
        &mut self,
        exec: &dyn Executor,
        device: u32,
        graph: u64,
        raw: Raw,
    ) -> GpuResult<u64> {
        match self.by_raw.get(&(graph, raw)) {
            Some(&id) => Ok(id),
            None => {
                let kind = exec.graph_node_type(device, raw)?;
                Ok(self.register(graph, raw, kind))
            }
        }
    }
    fn register(&mut self, graph: u64, raw: Raw, kind: u32) -> u64 {
        let id = self.nodes.insert(Node { graph, raw, kind });
        self.by_raw.insert((graph, raw), id);
        id
    }
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

fn ids(tail: &[u8], n: usize) -> GpuResult<(Vec<u64>, &[u8])> {
    if n > MAX_NODE_DEPS || tail.len() < n * 8 {
        return Err(invalid());
    }
    let (head, rest) = tail.split_at(n * 8);
    let v = head
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Ok((v, rest))
}

/// A node's parameters, checked, with session ids resolved; kernel parameters are borrowed.
enum Checked<'a> {
    Kernel {
        func: Raw,
        cfg: LaunchConfig,
        params: &'a [u8],
        layout: Vec<(u32, u32)>,
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
    Host(Arc<HostWork>),
    Empty,
    Child(Raw),
    MemAlloc {
        device: u32,
        bytes: u64,
    },
    MemFree {
        ptr: u64,
    },
}

impl Checked<'_> {
    fn spec(&self) -> NodeSpec<'_> {
        match self {
            Checked::Kernel {
                func,
                cfg,
                params,
                layout,
            } => NodeSpec::Kernel {
                func: *func,
                cfg: *cfg,
                params,
                layout,
            },
            &Checked::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            } => NodeSpec::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            },
            Checked::Memcpy(c) => NodeSpec::Memcpy(*c),
            Checked::Host(w) => NodeSpec::Host(w),
            Checked::Empty => NodeSpec::Empty,
            Checked::Child(g) => NodeSpec::Child(*g),
            &Checked::MemAlloc { device, bytes } => NodeSpec::MemAlloc { device, bytes },
            &Checked::MemFree { ptr } => NodeSpec::MemFree { ptr },
        }
    }
}

impl Session {
    /// Checks a node description against this session's functions, memory and graphs, for a
    /// node of a graph on `device`.
    fn check_node<'a>(
        &self,
        b: &p::GraphNode,
        params: &'a [u8],
        device: u32,
    ) -> GpuResult<Checked<'a>> {
        match b.kind {
            p::NODE_KERNEL => {
                if params.len() != b.params_len as usize || params.len() > MAX_PARAMS {
                    return Err(invalid());
                }
                let f = self.funcs.get(b.func)?;
                if f.device != device {
                    return Err(GpuError(code::INVALID_HANDLE));
                }
                self.note(Named::Function(b.func, f.raw));
                Ok(Checked::Kernel {
                    func: f.raw,
                    cfg: LaunchConfig {
                        grid: b.grid,
                        block: b.block,
                        cluster: [0; 3],
                        shared_mem: b.shared_mem,
                        cooperative: false,
                    },
                    params,
                    layout: f.info.params.clone(),
                })
            }
            p::NODE_MEMSET => {
                if b.width == 0 {
                    return Err(invalid());
                }
                let (_, span) =
                    super::dispatch::memset_extent(b.width, b.elem_size, b.height, b.pitch)?;
                self.check_device_range(b.dst, span)?;
                Ok(Checked::Memset {
                    dst: b.dst,
                    pitch: b.pitch,
                    value: b.value,
                    elem_size: b.elem_size,
                    width: b.width,
                    height: b.height,
                })
            }
            p::NODE_MEMCPY => {
                let c = &b.copy;
                let extent = [c.width, c.height, c.depth];
                // A node runs long after this call: it can never use a staging chunk.
                if extent.contains(&0) || c.src.kind == p::SIDE_CHUNK || c.dst.kind == p::SIDE_CHUNK
                {
                    return Err(invalid());
                }
                Ok(Checked::Memcpy(BoxCopy {
                    dst: self.place(&c.dst, extent, u32::MAX, device)?,
                    dst_origin: [c.dst.x, c.dst.y, c.dst.z],
                    src: self.place(&c.src, extent, u32::MAX, device)?,
                    src_origin: [c.src.x, c.src.y, c.src.z],
                    extent,
                }))
            }
            p::NODE_EMPTY => Ok(Checked::Empty),
            // The callback id means something only to the client (0 is never one); the work
            // only ever reaches this session's own mailbox.
            p::NODE_HOST => {
                if b.func == 0 {
                    return Err(invalid());
                }
                let work = self
                    .graphs
                    .host_works
                    .get(&self.shared, self.mailbox(), b.func);
                Ok(Checked::Host(work))
            }
            p::NODE_GRAPH => {
                let g = self.graphs.graphs.get(b.child)?;
                if g.device != device {
                    return Err(invalid());
                }
                Ok(Checked::Child(g.raw))
            }
            // Only device-located allocations on the graph's own device: `value` carries the
            // location the client asked for.
            p::NODE_MEM_ALLOC => {
                if b.width == 0 || b.value != device {
                    return Err(invalid());
                }
                Ok(Checked::MemAlloc {
                    device,
                    bytes: b.width,
                })
            }
            p::NODE_MEM_FREE => {
                self.check_graph_free(b.dst)?;
                Ok(Checked::MemFree { ptr: b.dst })
            }
            _ => Err(GpuError(code::NOT_SUPPORTED)),
        }
    }

    /// The executor node of node `id`, which must belong to graph `graph`.
    pub(super) fn node_of(&self, id: u64, graph: u64) -> GpuResult<Raw> {
        let n = self.graphs.built.nodes.get(id)?;
        if n.graph != graph {
            return Err(invalid());
        }
        Ok(n.raw)
    }

    pub(super) fn graph_node_op(
        &mut self,
        exec: &dyn Executor,
        m: &Message<'_>,
    ) -> GpuResult<Answer> {
        let body_err = |_| invalid();
        match m.op {
            Op::GraphCreate => {
                let b: p::DeviceOnly = m.body().map_err(body_err)?;
                let raw = exec.graph_create(b.device)?;
                let id = self.graphs.graphs.insert(Graph {
                    device: b.device,
                    raw,
                });
                Ok(Answer::value(id))
            }
            Op::GraphAddNode => {
                let (b, tail): (p::GraphNode, _) = m.split().map_err(body_err)?;
                if b.kind == p::NODE_CONDITIONAL {
                    return self.add_conditional(exec, &b, tail);
                }
                let g = self.graphs.graphs.get(b.graph)?;
                let (device, graph) = (g.device, g.raw);
                let (deps, params) = ids(tail, b.ndeps as usize)?;
                let deps = deps
                    .iter()
                    .map(|&d| self.node_of(d, b.graph))
                    .collect::<GpuResult<Vec<_>>>()?;
                let (checked, named) = self.recording(|s| s.check_node(&b, params, device));
                let checked = checked?;
                let spec = checked.spec();
                let raw = exec.graph_add_node(device, graph, &deps, &spec)?;
                let id = self.graphs.built.register(b.graph, raw, spec.kind());
                self.graphs.built.set_named(id, named);
                if b.kind == p::NODE_GRAPH {
                    // The driver copies the child in: what it names now, the parent names.
                    let child = self.graphs.built.graph_named(b.child);
                    self.graphs.built.add_extra(b.graph, child);
                }
                if let NodeSpec::MemAlloc { bytes, .. } = spec {
                    // The driver picked the address: the client learns it, and the session
                    // lets nodes and copies name it while the graph holds it.
                    let ptr = exec.graph_mem_node(device, raw)?.ptr;
                    self.graph_addr_held(ptr, bytes, device, Holder::Graph(b.graph));
                    return Ok(Answer::values(id, ptr));
                }
                Ok(Answer::value(id))
            }
            Op::GraphSetNode => {
                let (b, tail): (p::GraphNode, _) = m.split().map_err(body_err)?;
                let n = self.graphs.built.nodes.get(b.node)?;
                let (graph, raw, kind) = (n.graph, n.raw, n.kind);
                if kind != b.kind {
                    return Err(invalid());
                }
                let device = self.graphs.graphs.get(graph)?.device;
                let target = match b.exec {
                    0 => None,
                    e => {
                        let x = self.graphs.execs.get(e)?;
                        let from_it = self
                            .graphs
                            .built
                            .sources
                            .get(&e)
                            .is_some_and(|s| s.contains(&graph));
                        if !from_it || x.device != device {
                            return Err(invalid());
                        }
                        Some(x.raw)
                    }
                };
                let (checked, named) = self.recording(|s| s.check_node(&b, tail, device));
                let checked = checked?;
                exec.graph_node_set(device, target, raw, &checked.spec())?;
                match b.exec {
                    0 => self.graphs.built.set_named(b.node, named),
                    e => self.graphs.built.exec_node_set(e, b.node, named),
                }
                Ok(Answer::default())
            }
            Op::GraphAddEdges => {
                let (b, tail): (p::GraphEdges, _) = m.split().map_err(body_err)?;
                let g = self.graphs.graphs.get(b.graph)?;
                let (device, graph) = (g.device, g.raw);
                let (from, rest) = ids(tail, b.count as usize)?;
                let (to, _) = ids(rest, b.count as usize)?;
                let resolve = |v: &[u64]| {
                    v.iter()
                        .map(|&d| self.node_of(d, b.graph))
                        .collect::<GpuResult<Vec<_>>>()
                };
                let (from, to) = (resolve(&from)?, resolve(&to)?);
                if from.is_empty() {
                    return Ok(Answer::default());
                }
                exec.graph_add_edges(device, graph, &from, &to)?;
                Ok(Answer::default())
            }
            Op::GraphGetNodes => {
                let b: p::GraphQuery = m.body().map_err(body_err)?;
                let g = self.graphs.graphs.get(b.graph)?;
                let (device, graph) = (g.device, g.raw);
                let raws = exec.graph_nodes(device, graph, b.roots != 0)?;
                let mut payload = Vec::with_capacity(raws.len() * 8);
                for raw in &raws {
                    let id = self.graphs.built.id_of(exec, device, b.graph, *raw)?;
                    payload.extend_from_slice(&id.to_le_bytes());
                }
                Ok(Answer {
                    values: [raws.len() as u64, 0, 0, 0],
                    payload,
                })
            }
            Op::GraphNodeType => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                Ok(Answer::value(
                    self.graphs.built.nodes.get(b.id)?.kind as u64,
                ))
            }
            Op::GraphDestroyNode => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let n = self.graphs.built.nodes.get(b.id)?;
                let (graph, raw) = (n.graph, n.raw);
                let device = self.graphs.graphs.get(graph)?.device;
                exec.graph_destroy_node(device, raw)?;
                self.graphs.built.node_destroyed(b.id);
                self.graphs.built.nodes.remove(b.id)?;
                self.graphs.built.by_raw.remove(&(graph, raw));
                self.node_bodies_gone(b.id);
                Ok(Answer::default())
            }
            Op::GraphClone => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let g = self.graphs.graphs.get(b.id)?;
                let device = g.device;
                let raw = exec.graph_clone(device, g.raw)?;
                let id = self.graphs.graphs.insert(Graph { device, raw });
                let named = self.graph_memory(b.id);
                self.graphs.built.add_extra(id, named);
                self.graph_mem_adopt(exec, device, raw, id)?;
                Ok(Answer::value(id))
            }
            Op::GraphExecUpdate => {
                let b: p::GraphExecUpdate = m.body().map_err(body_err)?;
                let x = self.graphs.execs.get(b.exec)?;
                let g = self.graphs.graphs.get(b.graph)?;
                if x.device != g.device {
                    return Err(invalid());
                }
                let (r, info) = exec.graph_exec_update(g.device, x.raw, g.raw);
                let node = match info.error_node {
                    0 => 0,
                    raw => self
                        .graphs
                        .built
                        .by_raw
                        .get(&(b.graph, raw))
                        .copied()
                        .unwrap_or(0),
                };
                if r.is_ok() {
                    let more = self.body_memory(b.graph);
                    self.graphs.built.exec_from(b.exec, b.graph, more);
                    let s = self.graphs.built.sources.entry(b.exec).or_default();
                    if !s.contains(&b.graph) {
                        s.push(b.graph);
                    }
                }
                // Answered as a success carrying the driver's code, so the result info comes
                // back with a failed update too.
                Ok(Answer {
                    values: [
                        r.err().map_or(0, |e| e.0 as u64),
                        info.result as u64,
                        node,
                        0,
                    ],
                    payload: Vec::new(),
                })
            }
            Op::TensorMapEncode => {
                let b: p::TensorMapEncode = m.body().map_err(body_err)?;
                self.check_tensor(&b)?;
                let map = exec.tensor_map_encode(b.device, &b)?;
                Ok(Answer {
                    values: [0; 4],
                    payload: map.to_vec(),
                })
            }
            _ => Err(invalid()),
        }
    }

    /// Runs `f` noting every memory range it checks (see `check_device_range`).
    pub(super) fn recording<T>(&self, f: impl FnOnce(&Self) -> T) -> (T, Ranges) {
        let outer = self.recorder.replace(Some(Vec::new()));
        let r = f(self);
        let named = self.recorder.replace(outer).unwrap_or_default();
        (r, named)
    }

    /// What a graph names: its nodes, what was copied into it, and its conditional bodies.
    pub(super) fn graph_memory(&self, graph: u64) -> Ranges {
        let mut r = self.graphs.built.graph_named(graph);
        r.extend(self.body_memory(graph));
        r
    }

    /// What the conditional bodies of `graph` name, at any depth.
    pub(super) fn body_memory(&self, graph: u64) -> Ranges {
        let mut out = Ranges::new();
        let mut todo = vec![graph];
        while let Some(g) = todo.pop() {
            for (&id, h) in &self.graphs.held {
                if matches!(*h, super::conditional::Held::Body { parent, .. } if parent == g) {
                    out.extend(self.graphs.built.graph_named(id));
                    todo.push(id);
                }
            }
        }
        out
    }

    /// Notes what a node (or captured work) names, while [`Session::recording`].
    pub(super) fn note(&self, n: Named) {
        if let Some(r) = self.recorder.borrow_mut().as_mut() {
            r.push(n);
        }
    }

    /// Whether everything an executable graph's nodes name is still the tenant's: memory,
    /// arrays and modules it freed since may already be another tenant's (the driver reuses
    /// addresses and handles).
    pub(super) fn check_graph_memory(&self, exec: u64) -> GpuResult<()> {
        for &n in self.graphs.built.exec_ranges(exec) {
            let live = match n {
                Named::Mem(ptr, len) => self.check_device_range(ptr, len).is_ok(),
                Named::Array(id, raw) => self.arrays.arrays.get(id).is_ok_and(|a| a.raw == raw),
                Named::Function(id, raw) => self.funcs.get(id).is_ok_and(|f| f.raw == raw),
            };
            if !live {
                tracing::debug!(session = self.shared.identity.session, exec, named = ?n, "graph launch refused: a node names what the tenant no longer holds");
                return Err(invalid());
            }
        }
        Ok(())
    }

    /// The tensor must lie in memory this session may use: the farthest byte it reaches is
    /// the sum over dimensions of stride * (size - 1), plus one element.
    fn check_tensor(&self, b: &p::TensorMapEncode) -> GpuResult<()> {
        let rank = b.rank as usize;
        let min_rank = if b.kind == p::TENSOR_MAP_IM2COL { 3 } else { 1 };
        if !(min_rank..=TENSOR_MAX_RANK).contains(&rank) {
            return Err(invalid());
        }
        let elem = p::tensor_elem_bytes(b.data_type).ok_or_else(invalid)?;
        let mut last = 0u64;
        for i in 0..rank {
            let dim = b.global_dim[i];
            if dim == 0 {
                return Err(invalid());
            }
            let stride = if i == 0 {
                elem
            } else {
                b.global_strides[i - 1]
            };
            last = stride
                .checked_mul(dim - 1)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(invalid)?;
        }
        let span = last.checked_add(elem).ok_or_else(invalid)?;
        self.check_device_range(b.global_address, span)?;
        Ok(())
    }
}
