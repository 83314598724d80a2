//! Conditional graph nodes, and captures that add to a graph the client already names.
//!
//! A conditional node's body graphs are made by the driver and owned by the node: they get
//! session ids like any graph, so clients build them with the usual node calls (or capture
//! into them), but the session never destroys them itself and forgets them when the node or
//! its graph goes. The graph of a capture in progress gets an id the first time the client
//! asks for it (`cuStreamGetCaptureInfo`), and keeps that id once the capture ends.
//!
//! Conditional handles are the driver's values (kernels set them on the device), so a session
//! may only use handles it created itself.

use super::dispatch::Answer;
use super::graph_mem::Holder;
use super::graphs::Graph;
use super::Session;
use crate::executor::{code, Executor, GpuError, GpuResult, Raw};
use baton_ipc::protocol::{self as p, Message, Op, LEGACY_STREAM_BASE, MAX_NODE_DEPS};

/// Why the session may not destroy a graph it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// A body of conditional node `node` of graph `parent`: the driver destroys it with the
    /// node.
    Body { parent: u64, node: u64 },
    /// The graph of a capture in progress: its end hands it over, or the driver destroys it.
    Capture,
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

fn ids(tail: &[u8], n: usize) -> GpuResult<Vec<u64>> {
    if n > MAX_NODE_DEPS || tail.len() != n * 8 {
        return Err(invalid());
    }
    Ok(tail
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

impl Session {
    /// The session id of executor graph `raw`, if the session names it.
    pub(super) fn graph_id_of(&self, device: u32, raw: Raw) -> Option<u64> {
        self.graphs
            .graphs
            .iter()
            .find(|(_, g)| g.raw == raw && g.device == device)
            .map(|(&id, _)| id)
    }

    /// Drops graph `id` (which the driver has destroyed or still owns elsewhere) from the
    /// session's tables, with the bodies of its conditional nodes.
    pub(super) fn graph_forget(&mut self, id: u64) {
        let _ = self.graphs.graphs.remove(id);
        self.graphs.held.remove(&id);
        self.graphs.handles.retain(|_, g| *g != id);
        self.graphs.built.graph_destroyed(id);
        self.graph_addrs_released(Holder::Graph(id));
        for body in self.bodies(|parent, _| parent == id) {
            self.graph_forget(body);
        }
    }

    /// Forgets the bodies of conditional node `node` (the driver destroyed them with it).
    pub(super) fn node_bodies_gone(&mut self, node: u64) {
        for body in self.bodies(|_, n| n == node) {
            self.graph_forget(body);
        }
    }

    fn bodies(&self, which: impl Fn(u64, u64) -> bool) -> Vec<u64> {
        self.graphs
            .held
            .iter()
            .filter_map(|(&id, h)| match *h {
                Held::Body { parent, node } if which(parent, node) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// `GraphAddNode` of a conditional node: answered with the node id, the number of bodies
    /// and their graph ids as the payload.
    pub(super) fn add_conditional(
        &mut self,
        exec: &dyn Executor,
        b: &p::GraphNode,
        tail: &[u8],
    ) -> GpuResult<Answer> {
        let g = self.graphs.graphs.get(b.graph)?;
        let (device, graph) = (g.device, g.raw);
        let size_ok = match b.value {
            p::COND_IF => matches!(b.width, 1 | 2),
            p::COND_WHILE => b.width == 1,
            p::COND_SWITCH => (1..=p::MAX_COND_BODIES).contains(&b.width),
            _ => false,
        };
        if !size_ok || b.params_len != 0 {
            return Err(invalid());
        }
        if !self.graphs.handles.contains_key(&b.dst) {
            return Err(invalid());
        }
        let deps = ids(tail, b.ndeps as usize)?
            .iter()
            .map(|&d| self.node_of(d, b.graph))
            .collect::<GpuResult<Vec<_>>>()?;
        let (raw, bodies) =
            exec.graph_add_conditional(device, graph, &deps, b.dst, b.value, b.width as u32)?;
        let node = self
            .graphs
            .built
            .register_node(b.graph, raw, p::NODE_CONDITIONAL);
        let mut payload = Vec::with_capacity(bodies.len() * 8);
        for body in bodies {
            let id = self.graphs.graphs.insert(Graph { device, raw: body });
            self.graphs.held.insert(
                id,
                Held::Body {
                    parent: b.graph,
                    node,
                },
            );
            payload.extend_from_slice(&id.to_le_bytes());
        }
        Ok(Answer {
            values: [node, (payload.len() / 8) as u64, 0, 0],
            payload,
        })
    }

    /// The session id of the graph a capture of `stream` adds to, giving it one if needed.
    fn capture_graph(&mut self, exec: &dyn Executor, stream: u64) -> GpuResult<(u64, Vec<Raw>)> {
        if stream >= LEGACY_STREAM_BASE {
            return Err(GpuError(code::ILLEGAL_STATE));
        }
        let (device, s) = self.streams.lookup(exec, stream)?;
        if !self.capturing(device, s) {
            return Err(GpuError(code::ILLEGAL_STATE));
        }
        let (raw, deps) = exec.capture_info(device, s)?;
        let id = match self.graph_id_of(device, raw) {
            Some(id) => id,
            None => {
                let id = self.graphs.graphs.insert(Graph { device, raw });
                self.graphs.held.insert(id, Held::Capture);
                id
            }
        };
        Ok((id, deps))
    }

    pub(super) fn conditional_op(
        &mut self,
        exec: &dyn Executor,
        m: &Message<'_>,
    ) -> GpuResult<Answer> {
        let body_err = |_| invalid();
        match m.op {
            Op::ConditionalHandleCreate => {
                let b: p::ConditionalHandle = m.body().map_err(body_err)?;
                if b.flags & !p::COND_ASSIGN_DEFAULT != 0 {
                    return Err(invalid());
                }
                let g = self.graphs.graphs.get(b.graph)?;
                let handle =
                    exec.conditional_handle_create(g.device, g.raw, b.default_value, b.flags)?;
                self.graphs.handles.insert(handle, b.graph);
                Ok(Answer::value(handle))
            }
            Op::CaptureToGraph => {
                let (b, tail): (p::CaptureToGraph, _) = m.split().map_err(body_err)?;
                if b.stream >= LEGACY_STREAM_BASE {
                    return Err(GpuError(code::STREAM_CAPTURE_UNSUPPORTED));
                }
                if b.mode > 2 || self.graphs.held.get(&b.graph) == Some(&Held::Capture) {
                    return Err(invalid());
                }
                let g = self.graphs.graphs.get(b.graph)?;
                let (gdev, graph) = (g.device, g.raw);
                let deps = ids(tail, b.ndeps as usize)?
                    .iter()
                    .map(|&d| self.node_of(d, b.graph))
                    .collect::<GpuResult<Vec<_>>>()?;
                self.streams.lane_for_capture(exec, b.stream)?;
                let (device, raw) = self.streams.lookup(exec, b.stream)?;
                if device != gdev {
                    return Err(invalid());
                }
                exec.capture_to_graph(device, raw, graph, &deps)?;
                self.streams.capturing.insert(b.stream);
                Ok(Answer::default())
            }
            Op::CaptureInfo => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let (graph, deps) = self.capture_graph(exec, b.id)?;
                let device = self.graphs.graphs.get(graph)?.device;
                let mut payload = Vec::with_capacity(deps.len() * 8);
                for raw in deps {
                    let id = self.graphs.built.id_of(exec, device, graph, raw)?;
                    payload.extend_from_slice(&id.to_le_bytes());
                }
                Ok(Answer {
                    values: [graph, (payload.len() / 8) as u64, 0, 0],
                    payload,
                })
            }
            Op::CaptureDeps => {
                let (b, tail): (p::CaptureDeps, _) = m.split().map_err(body_err)?;
                if b.flags > 1 {
                    return Err(invalid());
                }
                let (graph, _) = self.capture_graph(exec, b.stream)?;
                let deps = ids(tail, b.ndeps as usize)?
                    .iter()
                    .map(|&d| self.node_of(d, graph))
                    .collect::<GpuResult<Vec<_>>>()?;
                let (device, raw) = self.streams.lookup(exec, b.stream)?;
                exec.capture_set_deps(device, raw, &deps, b.flags)?;
                Ok(Answer::default())
            }
            _ => Err(invalid()),
        }
    }
}
