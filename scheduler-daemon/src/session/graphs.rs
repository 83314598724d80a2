//! Stream capture and CUDA graphs, captured and replayed in the daemon.
//!
//! A client's capture is a real capture of the daemon's stream, always in relaxed mode: the
//! driver's capture modes restrict calls by *other threads of the process*, and every tenant's
//! session thread lives in this one process. While a session has a capture open, the daemon
//! asks the driver whether a stream is capturing before it adds completion-word writes or the
//! legacy stream's implicit waits to it, so captured graphs hold only the client's own work.

use super::conditional::Held;
use super::dispatch::Answer;
use super::graph_mem::Holder;
use super::tables::Table;
use super::Session;
use crate::executor::{code, Executor, GpuError, GpuResult, Raw};
use crate::scheduler::{CostKey, WorkKind};
use baton_ipc::protocol::{self as p, Message, Op, LEGACY_STREAM_BASE};

/// Sets graph keys apart from kernel keys (function ids) in the cost estimator.
const GRAPH_KEY: u64 = 1 << 63;

pub struct Graph {
    pub device: u32,
    pub raw: Raw,
}

#[derive(Default)]
pub struct Graphs {
    pub(super) graphs: Table<Graph>,
    pub(super) execs: Table<Graph>,
    /// Node handles and what the graphs' nodes were built from.
    pub(super) built: super::graph_nodes::Built,
    /// Graph allocations and what holds their addresses.
    pub(super) mem: super::graph_mem::GraphMem,
    /// What the driver runs for host nodes (see `host_calls`).
    pub(super) host_works: super::host_calls::HostWorks,
    /// Graphs named here that the driver owns through another object (never destroyed by
    /// the session).
    pub(super) held: std::collections::HashMap<u64, super::conditional::Held>,
    /// Conditional handles this session created -> the graph they were created on.
    pub(super) handles: std::collections::HashMap<u64, u64>,
}

fn invalid() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

impl Graphs {
    pub fn teardown(&mut self, exec: &dyn Executor) {
        for (_, g) in self.execs.drain() {
            let _ = exec.graph_exec_destroy(g.device, g.raw);
        }
        let held = std::mem::take(&mut self.held);
        for (id, g) in self.graphs.drain() {
            if !held.contains_key(&id) {
                let _ = exec.graph_destroy(g.device, g.raw);
            }
        }
        self.handles.clear();
        // Allocations left allocated are `GraphOwned` ranges, freed with the session's memory.
        self.mem = Default::default();
        // The session's streams are synchronised by now (`Streams::teardown` runs first), so
        // no launch can still reach a host node.
        self.host_works.clear();
    }
}

impl Session {
    /// Whether the executor stream `raw` is part of an open capture. Only asks the driver when
    /// this session has a capture open, so sessions that never capture pay nothing.
    pub(super) fn capturing(&self, device: u32, raw: Raw) -> bool {
        self.streams.captures_open() && self.exec.is_capturing(device, raw).unwrap_or(false)
    }

    pub(super) fn graph_op(&mut self, exec: &dyn Executor, m: &Message<'_>) -> GpuResult<Answer> {
        let body_err = |_| invalid();
        match m.op {
            Op::CaptureBegin => {
                let b: p::CaptureBegin = m.body().map_err(body_err)?;
                // The legacy stream cannot be captured (it synchronises with everything).
                if b.stream >= LEGACY_STREAM_BASE {
                    return Err(GpuError(code::STREAM_CAPTURE_UNSUPPORTED));
                }
                self.streams.lane_for_capture(exec, b.stream)?;
                let (device, raw) = self.streams.lookup(exec, b.stream)?;
                exec.capture_begin(device, raw)?;
                self.streams.capturing.insert(b.stream);
                self.capture_named.remove(&b.stream);
                Ok(Answer::default())
            }
            Op::CaptureEnd => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                if b.id >= LEGACY_STREAM_BASE {
                    return Err(GpuError(code::ILLEGAL_STATE));
                }
                let (device, raw) = self.streams.lookup(exec, b.id)?;
                if !self.streams.capturing.remove(&b.id) {
                    return Err(GpuError(code::ILLEGAL_STATE));
                }
                let captured = self.capture_named.remove(&b.id).unwrap_or_default();
                // A failed end still ends the capture (the driver invalidates it): the stream
                // left the capturing set above either way.
                // The capture's graph may already have an id: the client named it during the
                // capture (`CaptureInfo`) or captured into a graph it holds (`CaptureToGraph`).
                let named = match self.graphs.held.values().any(|h| *h == Held::Capture) {
                    true => exec.capture_info(device, raw).ok().map(|(g, _)| g),
                    false => None,
                };
                let ended = exec.capture_end(device, raw);
                let scan = match ended {
                    Ok(raw) => {
                        let id = match self.graph_id_of(device, raw) {
                            Some(id) => {
                                self.graphs.held.remove(&id);
                                id
                            }
                            None => self.graphs.graphs.insert(Graph { device, raw }),
                        };
                        self.graphs.built.add_extra(id, captured);
                        self.graph_mem_adopt(exec, device, raw, id).map(|_| id)
                    }
                    Err(e) => {
                        // A failed capture's graph is gone with it (unless the client owns it).
                        let gone = named.and_then(|g| self.graph_id_of(device, g));
                        if let Some(id) = gone {
                            if self.graphs.held.get(&id) == Some(&Held::Capture) {
                                self.graph_forget(id);
                            }
                        }
                        Err(e)
                    }
                };
                self.graph_addrs_released(Holder::Capture(b.id));
                scan.map(Answer::value)
            }
            Op::GraphInstantiate => {
                let b: p::GraphInstantiate = m.body().map_err(body_err)?;
                let g = self.graphs.graphs.get(b.graph)?;
                let (device, graph) = (g.device, g.raw);
                let nodes = match self.graphs.mem.ever() {
                    true => exec.graph_mem_nodes(device, graph)?,
                    false => Vec::new(),
                };
                let raw = exec.graph_instantiate(device, graph, b.flags)?;
                let id = self.graphs.execs.insert(Graph { device, raw });
                if let Err(e) = self.graph_mem_instantiated(id, device, &nodes) {
                    let _ = self.graphs.execs.remove(id);
                    let _ = exec.graph_exec_destroy(device, raw);
                    return Err(e);
                }
                self.graphs.built.instantiated(id, b.graph);
                let more = self.body_memory(b.graph);
                self.graphs.built.exec_from(id, b.graph, more);
                Ok(Answer::value(id))
            }
            Op::GraphLaunch | Op::GraphUpload => {
                let b: p::GraphLaunch = m.body().map_err(body_err)?;
                let g = self.graphs.execs.get(b.exec)?;
                let (graph, gdev) = (g.raw, g.device);
                self.check_graph_memory(b.exec)?;
                let (device, stream) = self.prepare_work(exec, b.stream)?;
                if device != gdev {
                    return Err(invalid());
                }
                if m.op == Op::GraphLaunch {
                    self.shared
                        .launches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.shared
                        .unsynced
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    // A graph launch is one work item to the scheduler, its cost learnt per graph.
                    let key = CostKey::kernel(GRAPH_KEY | b.exec, [1, 1, 1]);
                    self.graph_mem_launch(b.exec, |s| {
                        s.gating.issue(
                            &s.shared,
                            exec,
                            device,
                            b.stream,
                            stream,
                            WorkKind::Kernel,
                            key,
                            || exec.graph_launch(device, graph, stream),
                        )
                    })?;
                } else {
                    exec.graph_upload(device, graph, stream)?;
                }
                Ok(Answer::default())
            }
            Op::GraphExecDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let g = self.graphs.execs.remove(b.id)?;
                self.graphs.built.exec_destroyed(b.id);
                self.graph_mem_exec_destroyed(b.id);
                exec.graph_exec_destroy(g.device, g.raw)
                    .map(|_| Answer::default())
            }
            Op::GraphDestroy => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                // Bodies and capture graphs belong to the driver's other objects.
                if self.graphs.held.contains_key(&b.id) {
                    return Err(invalid());
                }
                let g = self.graphs.graphs.get(b.id)?;
                let (device, raw) = (g.device, g.raw);
                self.graph_forget(b.id);
                exec.graph_destroy(device, raw).map(|_| Answer::default())
            }
            Op::GraphNodeCount => {
                let b: p::ObjectId = m.body().map_err(body_err)?;
                let g = self.graphs.graphs.get(b.id)?;
                exec.graph_node_count(g.device, g.raw).map(Answer::value)
            }
            _ => Err(invalid()),
        }
    }
}
