//! Pageable host memory in graphs.
//!
//! A graph runs in the daemon, long after it was described, and the daemon cannot read or
//! write the program's pageable memory. So a graph copy with a pageable host side (a memcpy
//! node, or an async copy captured from a stream) is recorded as a copy to or from a *shadow*:
//! pinned memory of the same layout, which the daemon maps at the same address. Each graph and
//! executable graph keeps the shadows its copies name. A launch of an executable graph with
//! shadows fills the upload shadows from the program's memory before it is posted, and is
//! followed on its stream by a callback in this process that copies the download shadows back
//! into the program's memory, so anything that waits for the launch (a stream, event or context
//! synchronisation) sees the data. Consequence: pageable source data is read when the graph is
//! launched rather than when its copy node runs, and pageable destinations are written when
//! the whole launch is done; programs that do not race the GPU for that memory see no difference.

use super::memory::{host_alloc, host_free};
use super::util::ready;
use crate::client::{lock, Client};
use cuda_abi::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The box one host side of a copy covers, relative to its first byte: `depth` slices of
/// `height` rows of `width` bytes, rows `pitch` bytes apart, slices `slice` bytes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub width: u64,
    pub height: u64,
    pub depth: u64,
    pub pitch: u64,
    pub slice: u64,
}

impl Layout {
    /// Bytes from the box's first byte to just past its last.
    fn span(&self) -> Option<u64> {
        let rows = self
            .depth
            .checked_sub(1)?
            .checked_mul(self.slice)?
            .checked_add(self.height.checked_sub(1)?.checked_mul(self.pitch)?)?;
        rows.checked_add(self.width)
    }

    /// Offsets of the box's rows (runs of `width` bytes), or one run when they are contiguous.
    fn runs(&self) -> Vec<(u64, u64)> {
        let contiguous = (self.height == 1 || self.pitch == self.width)
            && (self.depth == 1 || self.slice == self.height * self.width);
        if contiguous {
            return vec![(0, self.span().unwrap_or(0))];
        }
        let mut v = Vec::with_capacity((self.height * self.depth) as usize);
        for z in 0..self.depth {
            for y in 0..self.height {
                v.push((z * self.slice + y * self.pitch, self.width));
            }
        }
        v
    }
}

/// Set once the launch that last used a shadow is done with it.
#[derive(Default)]
struct Landed {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Landed {
    fn set(&self) {
        *lock(&self.done) = true;
        self.cv.notify_all();
    }

    /// Waits until set; gives up with an error if the daemon goes away meanwhile.
    fn wait(&self, c: &Client) -> Result<(), CUresult> {
        let mut done = lock(&self.done);
        while !*done {
            let (d, timeout) = self
                .cv
                .wait_timeout(done, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            done = d;
            if timeout.timed_out() && !*done && !c.alive() {
                return Err(CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE);
            }
        }
        Ok(())
    }
}

/// Pinned stand-in for one pageable side of a graph copy.
pub(crate) struct Shadow {
    /// First byte of the pinned copy (same layout as the program's box).
    pinned: usize,
    /// First byte of the program's box.
    user: u64,
    layout: Layout,
    /// Program memory to shadow before a launch (upload) or shadow to program memory after.
    upload: bool,
    /// The last launch that used this shadow.
    busy: Mutex<Option<Arc<Landed>>>,
}

impl Shadow {
    /// A shadow for the box at `user`. Its contents are filled at launch.
    pub(crate) fn new(user: u64, layout: Layout, upload: bool) -> Result<Arc<Shadow>, CUresult> {
        let c = ready()?;
        let span = layout
            .span()
            .filter(|&s| s > 0)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let len = usize::try_from(span).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let pinned = host_alloc(c, len, 0)? as usize;
        Ok(Arc::new(Shadow {
            pinned,
            user,
            layout,
            upload,
            busy: Mutex::new(None),
        }))
    }

    /// The pinned address that stands for `user`.
    pub(crate) fn addr(&self) -> u64 {
        self.pinned as u64
    }

    /// Program memory -> shadow (upload) or shadow -> program memory (download).
    fn transfer(&self) {
        for (off, len) in self.layout.runs() {
            let (user, pinned) = (
                (self.user + off) as *mut u8,
                (self.pinned as u64 + off) as *mut u8,
            );
            let (from, to) = match self.upload {
                true => (user as *const u8, pinned),
                false => (pinned as *const u8, user),
            };
            // SAFETY: the pinned side is this shadow's own allocation of the box's span; the
            // program's side is the memory its copy named, which the driver's contract says
            // stays valid while a graph copying it can run.
            unsafe { std::ptr::copy_nonoverlapping(from, to, len as usize) };
        }
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // Never dropped on the callback thread (see `RETIRED`), so freeing may wait for the
        // daemon.
        if let Ok(c) = ready() {
            if let Err(e) = host_free(c, self.pinned as *mut std::ffi::c_void) {
                crate::log::once(
                    "cuGraphDestroy",
                    &format!("could not free a pageable-copy shadow ({})", e.0),
                );
            }
        }
    }
}

/// A graph's shadows, each with the node whose copy names it (0: not known, for nodes of
/// captured or cloned graphs).
type Entries = Vec<(u64, Arc<Shadow>)>;

/// Open captures' shadows, by the shim's capture id.
static CAPTURES: Mutex<BTreeMap<u64, Entries>> = Mutex::new(BTreeMap::new());
static GRAPHS: Mutex<BTreeMap<u64, Entries>> = Mutex::new(BTreeMap::new());
static EXECS: Mutex<BTreeMap<u64, Entries>> = Mutex::new(BTreeMap::new());
/// Graph of each node added by this process, for set-params calls on memcpy nodes.
static NODE_GRAPH: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);
/// Shadows let go of by launch callbacks: dropped later on a program thread, since dropping
/// the last reference frees pinned memory, which may synchronise with the daemon, and the
/// daemon may be waiting for the callback thread.
static RETIRED: Mutex<Vec<Arc<Shadow>>> = Mutex::new(Vec::new());
/// Launches of executable graphs with shadows, one at a time: waiting for a shadow's previous
/// launch and marking it busy are one step.
static LAUNCH: Mutex<()> = Mutex::new(());

fn drop_retired() {
    let old = std::mem::take(&mut *lock(&RETIRED));
    drop(old);
}

/// A copy on a capturing stream named a shadow.
pub(crate) fn captured(capture: u64, s: Arc<Shadow>) {
    lock(&CAPTURES).entry(capture).or_default().push((0, s));
}

/// A capture ended, as graph `graph` or (`None`) in failure.
pub(crate) fn capture_ended(capture: u64, graph: Option<u64>) {
    let entries = lock(&CAPTURES).remove(&capture).unwrap_or_default();
    if let Some(g) = graph {
        if !entries.is_empty() {
            lock(&GRAPHS).entry(g).or_default().extend(entries);
        }
    }
}

/// Node `node` was added to `graph`, its copy naming `shadows`.
pub(crate) fn node_added(graph: u64, node: u64, shadows: Vec<Arc<Shadow>>) {
    lock(&NODE_GRAPH)
        .get_or_insert_with(HashMap::new)
        .insert(node, graph);
    if !shadows.is_empty() {
        lock(&GRAPHS)
            .entry(graph)
            .or_default()
            .extend(shadows.into_iter().map(|s| (node, s)));
    }
}

/// The graph `node` was added to by this process.
pub(crate) fn graph_of(node: u64) -> Option<u64> {
    lock(&NODE_GRAPH).as_ref()?.get(&node).copied()
}

/// Node `node` of `graph` (or of executable `exec`) now copies with `shadows`.
pub(crate) fn node_set(
    graph: Option<u64>,
    exec: Option<u64>,
    node: u64,
    shadows: Vec<Arc<Shadow>>,
) {
    let replace = |m: &Mutex<BTreeMap<u64, Entries>>, id: u64| {
        let mut m = lock(m);
        let e = m.entry(id).or_default();
        e.retain(|(n, _)| *n != node);
        e.extend(shadows.iter().map(|s| (node, s.clone())));
    };
    if let Some(g) = graph {
        replace(&GRAPHS, g);
    }
    if let Some(x) = exec {
        replace(&EXECS, x);
    }
}

/// A child-graph node `node` of `parent` copies `child` as it is now.
pub(crate) fn child_added(parent: u64, node: u64, child: u64) {
    let from: Vec<Arc<Shadow>> = match lock(&GRAPHS).get(&child) {
        Some(e) => e.iter().map(|(_, s)| s.clone()).collect(),
        None => Vec::new(),
    };
    node_added(parent, node, from);
}

pub(crate) fn node_destroyed(node: u64) {
    if let Some(m) = lock(&NODE_GRAPH).as_mut() {
        m.remove(&node);
    }
    for e in lock(&GRAPHS).values_mut() {
        e.retain(|(n, _)| *n != node);
    }
}

/// `to` is a clone of `from`; its nodes have new ids this process does not know yet.
pub(crate) fn cloned(from: u64, to: u64) {
    let mut g = lock(&GRAPHS);
    let Some(e) = g.get(&from) else { return };
    let copy: Entries = e.iter().map(|(_, s)| (0, s.clone())).collect();
    if !copy.is_empty() {
        g.insert(to, copy);
    }
}

/// Executable `exec` was made from (or updated from) `graph`: it copies what `graph` copies.
pub(crate) fn exec_from(exec: u64, graph: u64) {
    let e = lock(&GRAPHS).get(&graph).cloned().unwrap_or_default();
    let old = match e.is_empty() {
        true => lock(&EXECS).remove(&exec),
        false => lock(&EXECS).insert(exec, e),
    };
    drop(old);
}

pub(crate) fn graph_destroyed(graph: u64) {
    let old = lock(&GRAPHS).remove(&graph);
    if let Some(m) = lock(&NODE_GRAPH).as_mut() {
        m.retain(|_, g| *g != graph);
    }
    drop(old);
    drop_retired();
}

pub(crate) fn exec_destroyed(exec: u64) {
    let old = lock(&EXECS).remove(&exec);
    drop(old);
    drop_retired();
}

/// The launch of `exec` joins capture `capture` (as a child graph): the capture's graph copies
/// what the executable copies.
pub(crate) fn launched_in_capture(exec: u64, capture: u64) {
    let e: Entries = match lock(&EXECS).get(&exec) {
        Some(e) => e.iter().map(|(_, s)| (0, s.clone())).collect(),
        None => return,
    };
    lock(&CAPTURES).entry(capture).or_default().extend(e);
}

/// Launches `exec` with `post` (which posts the launch on `stream`), surrounded by the work
/// its shadows need.
pub(crate) fn launch(
    c: &'static Client,
    exec: u64,
    stream: CUstream,
    post: impl FnOnce() -> Result<(), CUresult>,
) -> Result<(), CUresult> {
    drop_retired();
    let shadows: Vec<Arc<Shadow>> = match lock(&EXECS).get(&exec) {
        Some(e) if !e.is_empty() => e.iter().map(|(_, s)| s.clone()).collect(),
        _ => return post(),
    };
    let _one = lock(&LAUNCH);
    // A previous launch may still be reading or writing these shadows: launches of one
    // executable graph run in order on the GPU, but the fill below happens now, on the host.
    for s in &shadows {
        let prev = lock(&s.busy).clone();
        if let Some(p) = prev {
            p.wait(c)?;
        }
    }
    for s in shadows.iter().filter(|s| s.upload) {
        s.transfer();
    }
    post()?;
    let landed = Arc::new(Landed::default());
    for s in &shadows {
        *lock(&s.busy) = Some(landed.clone());
    }
    let done = landed.clone();
    let back = Box::new(move || {
        for s in shadows.iter().filter(|s| !s.upload) {
            s.transfer();
        }
        done.set();
        lock(&RETIRED).extend(shadows);
    });
    super::host_func::after(stream, back).inspect_err(|_| landed.set())
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn boxes_span_their_rows_and_copy_only_them() {
        let flat = Layout {
            width: 64,
            height: 1,
            depth: 1,
            pitch: 0,
            slice: 0,
        };
        assert_eq!(flat.span(), Some(64));
        assert_eq!(flat.runs(), vec![(0, 64)]);
        let pitched = Layout {
            width: 10,
            height: 3,
            depth: 2,
            pitch: 16,
            slice: 64,
        };
        assert_eq!(pitched.span(), Some(64 + 32 + 10));
        let runs = pitched.runs();
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[4], (64 + 16, 10));
        let dense = Layout {
            width: 16,
            height: 4,
            depth: 2,
            pitch: 16,
            slice: 64,
        };
        assert_eq!(dense.runs(), vec![(0, 128)]);
        let empty = Layout { height: 0, ..flat };
        assert_eq!(empty.span(), None);
    }
}
