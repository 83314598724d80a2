//! Session-level tests of host nodes, on the simulated GPU: the daemon asks the client (here a
//! thread standing in for it at the mailbox) to run the node's callback at every launch.

use super::hostile::{call, session};
use super::Session;
use crate::executor::code;
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zerocopy::FromZeros;

/// Serves the session's mailbox like the shim's callback thread, recording the callback ids.
struct FakeClient {
    seen: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeClient {
    fn start(s: &Session) -> FakeClient {
        let mb = s.mailbox();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mb = mb;
            // SAFETY: the session (and its region) outlives this thread, joined on drop.
            let mb = unsafe { &*mb.0 };
            let mut last = mb.done.load(Ordering::Acquire);
            while !stop2.load(Ordering::Acquire) {
                let now = mb.request.load(Ordering::Acquire);
                if now == last {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                last = now;
                seen2
                    .lock()
                    .unwrap()
                    .push(mb.callback.load(Ordering::Relaxed));
                mb.done.store(now, Ordering::Release);
                baton_ipc::futex::wake_all(&mb.done);
            }
        });
        FakeClient {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for FakeClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn graph(s: &mut Session) -> u64 {
    let (r, v) = call(
        s,
        Op::GraphCreate,
        &p::DeviceOnly { device: 0, _pad: 0 },
        &[],
    );
    assert_eq!(r, 0);
    v[0]
}

/// Adds a host node for callback `id` after `deps`.
fn host(s: &mut Session, g: u64, id: u64, deps: &[u64]) -> (u32, u64) {
    let mut n = p::GraphNode::new_zeroed();
    (n.graph, n.kind, n.func, n.ndeps) = (g, p::NODE_HOST, id, deps.len() as u32);
    let tail: Vec<u8> = deps.iter().flat_map(|d| d.to_le_bytes()).collect();
    let (r, v) = call(s, Op::GraphAddNode, &n, &tail);
    (r, v[0])
}

fn instantiate(s: &mut Session, g: u64) -> u64 {
    let inst = p::GraphInstantiate { graph: g, flags: 0 };
    let (r, v) = call(s, Op::GraphInstantiate, &inst, &[]);
    assert_eq!(r, 0);
    v[0]
}

fn launch(s: &mut Session, x: u64) -> u32 {
    let l = p::GraphLaunch {
        exec: x,
        stream: p::legacy_stream(0),
    };
    call(s, Op::GraphLaunch, &l, &[]).0
}

#[test]
fn host_nodes_ask_the_client_at_every_launch_in_order() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let client = FakeClient::start(&a);
    let g = graph(&mut a);
    let (r, h1) = host(&mut a, g, 11, &[]);
    assert_eq!(r, 0);
    let (r, _) = host(&mut a, g, 12, &[h1]);
    assert_eq!(r, 0);
    // Callback id 0 is never the client's.
    assert_eq!(host(&mut a, g, 0, &[]).0, code::INVALID_VALUE);
    let x = instantiate(&mut a, g);
    for _ in 0..3 {
        assert_eq!(launch(&mut a, x), 0);
    }
    assert_eq!(client.take(), [11, 12, 11, 12, 11, 12]);

    // Setting the node: a new callback id for executables made after.
    let mut set = p::GraphNode::new_zeroed();
    (set.node, set.kind, set.func) = (h1, p::NODE_HOST, 13);
    assert_eq!(call(&mut a, Op::GraphSetNode, &set, &[]).0, 0);
    // A host node cannot be set as another kind.
    let mut wrong = set;
    wrong.kind = p::NODE_EMPTY;
    assert_eq!(
        call(&mut a, Op::GraphSetNode, &wrong, &[]).0,
        code::INVALID_VALUE
    );
    let y = instantiate(&mut a, g);
    assert_eq!(launch(&mut a, x), 0);
    assert_eq!(launch(&mut a, y), 0);
    assert_eq!(client.take(), [11, 12, 13, 12]);
}

#[test]
fn a_client_gone_releases_a_waiting_host_node() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let g = graph(&mut a);
    assert_eq!(host(&mut a, g, 5, &[]).0, 0);
    let x = instantiate(&mut a, g);
    // Nobody serves the mailbox: the launch waits until the client is marked gone.
    let shared = a.shared.clone();
    let marker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        shared.closed.store(true, Ordering::Release);
    });
    assert_eq!(launch(&mut a, x), 0);
    marker.join().unwrap();
    // Once gone, host nodes return at once.
    assert_eq!(launch(&mut a, x), 0);
}
