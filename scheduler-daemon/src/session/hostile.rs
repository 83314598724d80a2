//! What a hostile client can do to the daemon through its ring: property tests that feed
//! arbitrary and forged commands to sessions on the simulated executor.

use super::{Identity, Session, Shared};
use crate::config::TenantPolicy;
use crate::executor::sim::SimExecutor;
use crate::executor::Executor;
use baton_ipc::protocol::{self as p, encode, Op, NO_REPLY};
use baton_ipc::region::{Layout, Params, Region, REPLY_DONE};
use baton_ipc::shm::SharedRegion;
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) fn session(exec: &Arc<SimExecutor>, id: u64, quota: Option<u64>) -> Session {
    let policy = TenantPolicy {
        memory_quota: quota,
        ..Default::default()
    };
    session_with(exec, id, policy)
}

pub(super) fn session_with(exec: &Arc<SimExecutor>, id: u64, policy: TenantPolicy) -> Session {
    let identity = Identity {
        session: id,
        pid: 1,
        uid: 1000 + id as u32,
        gid: 1000,
        tenant: format!("t{id}"),
    };
    session_of(exec, Arc::new(Shared::new(identity, policy)))
}

/// A session of `shared` with a fresh region registered with the simulator.
pub(super) fn session_of(exec: &Arc<SimExecutor>, shared: Arc<Shared>) -> Session {
    let layout = Layout::new(Params::DEFAULT).unwrap();
    let mapping = SharedRegion::create("test-session", layout.total).unwrap();
    // SAFETY: a fresh mapping of `layout.total` bytes, kept alive by the session.
    let region = unsafe { Region::init(mapping.as_ptr(), mapping.len(), Params::DEFAULT) }.unwrap();
    let dev = exec.host_register(mapping.as_ptr(), mapping.len()).unwrap();
    Session::new(shared, exec.clone(), mapping, region, dev).unwrap()
}

/// Sends one command and returns the result code its reply slot 0 holds.
pub(super) fn call<B: zerocopy::IntoBytes + zerocopy::Immutable>(
    s: &mut Session,
    op: Op,
    body: &B,
    tail: &[u8],
) -> (u32, [u64; 4]) {
    s.region.reply(0).unwrap().state.store(1, Ordering::Relaxed);
    let mut buf = Vec::new();
    encode(op, 0, body, tail, &mut buf);
    s.handle(&buf).unwrap();
    let slot = s.region.reply(0).unwrap();
    assert_eq!(slot.state.load(Ordering::Acquire), REPLY_DONE);
    (
        slot.result.load(Ordering::Relaxed),
        std::array::from_fn(|i| slot.values[i].load(Ordering::Relaxed)),
    )
}

pub(super) const IMAGE: &[u8] = b"//baton-sim\nkernel fill 8 4 4\n";

#[test]
fn a_tenant_cannot_use_another_tenants_objects_or_memory() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let mut b = session(&exec, 2, Some(1 << 20));
    let (r, v) = call(
        &mut a,
        Op::MemAlloc,
        &p::MemAlloc {
            device: 0,
            _pad: 0,
            bytes: 4096,
        },
        &[],
    );
    assert_eq!(r, 0);
    let a_ptr = v[0];
    let blob = a.shared.add_blob(IMAGE.to_vec());
    let (r, v) = call(
        &mut a,
        Op::LoadModule,
        &p::LoadModule {
            device: 0,
            kind: 0,
            blob,
            jit: 0,
            _pad: 0,
        },
        &[],
    );
    assert_eq!((r, v[1]), (0, 0));
    let (r, v) = call(
        &mut a,
        Op::GetFunction,
        &p::GetSymbol { module: v[0] },
        b"fill",
    );
    assert_eq!(r, 0);
    let a_func = v[0];
    let (r, v) = call(
        &mut a,
        Op::StreamCreate,
        &p::StreamCreate {
            device: 0,
            flags: 1,
            priority: 0,
            _pad: 0,
        },
        &[],
    );
    assert_eq!(r, 0);
    let a_stream = v[0];

    // B names A's memory, function, stream and module: every one is refused.
    let (r, _) = call(&mut b, Op::MemFree, &p::MemFree { dptr: a_ptr }, &[]);
    assert_eq!(r, 1, "freeing another tenant's memory");
    let (r, _) = call(
        &mut b,
        Op::CopyDtoD,
        &p::Copy {
            dst: a_ptr,
            src: a_ptr,
            len: 16,
            stream: p::legacy_stream(0),
        },
        &[],
    );
    assert_eq!(r, 1, "copying another tenant's memory");
    let (r, _) = call(
        &mut b,
        Op::Memset,
        &p::Memset {
            dst: a_ptr,
            stream: p::legacy_stream(0),
            width: 4,
            height: 1,
            pitch: 0,
            value: 7,
            elem_size: 4,
        },
        &[],
    );
    assert_eq!(r, 1, "writing another tenant's memory");
    let mut params = [0u8; 16];
    params[..8].copy_from_slice(&a_ptr.to_le_bytes());
    let launch = p::Launch {
        func: a_func,
        stream: p::legacy_stream(0),
        grid: [1, 1, 1],
        block: [1, 1, 1],
        cluster: [0; 3],
        shared_mem: 0,
        flags: 0,
        params_len: 16,
    };
    let (r, _) = call(&mut b, Op::Launch, &launch, &params);
    assert_eq!(r, 400, "launching another tenant's function");
    let (r, _) = call(
        &mut b,
        Op::StreamDestroy,
        &p::ObjectId { id: a_stream },
        &[],
    );
    assert_eq!(r, 400, "destroying another tenant's stream");
    let (r, _) = call(&mut b, Op::UnloadModule, &p::ObjectId { id: 1 }, &[]);
    assert_eq!(r, 400, "unloading another tenant's module");

    // B's quota is its own: A's usage does not count, B's cap holds.
    let (r, _) = call(
        &mut b,
        Op::MemAlloc,
        &p::MemAlloc {
            device: 0,
            _pad: 0,
            bytes: 1 << 20,
        },
        &[],
    );
    assert_eq!(r, 0);
    let (r, _) = call(
        &mut b,
        Op::MemAlloc,
        &p::MemAlloc {
            device: 0,
            _pad: 0,
            bytes: 1,
        },
        &[],
    );
    assert_eq!(r, 2, "past the quota");
    assert_eq!(a.shared.memory_bytes.load(Ordering::Relaxed), 4096);

    // A's objects still work.
    let (r, _) = call(
        &mut a,
        Op::Memset,
        &p::Memset {
            dst: a_ptr,
            stream: a_stream,
            width: 4,
            height: 1,
            pitch: 0,
            value: 7,
            elem_size: 4,
        },
        &[],
    );
    assert_eq!(r, 0);
    let (r, _) = call(&mut a, Op::MemFree, &p::MemFree { dptr: a_ptr }, &[]);
    assert_eq!(r, 0);
    a.teardown();
    b.teardown();
    assert_eq!(
        exec.mem_info(0).unwrap().0,
        exec.mem_info(0).unwrap().1,
        "teardown freed everything"
    );
}

/// A message with an op code from `ops` and a random body of fewer than `max_body` bytes, about
/// half of whose 8-byte words are small (below `256 >> shift`), so ids, indices and offsets
/// sometimes hit real objects; it asks for a reply in slot 3 or none.
pub(super) fn forged_command(
    ops: std::ops::RangeInclusive<u16>,
    max_body: usize,
    shift: u32,
) -> impl Strategy<Value = Vec<u8>> {
    (
        ops,
        prop::collection::vec(any::<u8>(), 0..max_body),
        any::<bool>(),
    )
        .prop_map(move |(op, mut body, reply)| {
            for chunk in body.chunks_mut(8) {
                if chunk[0] & 1 == 0 {
                    for b in chunk.iter_mut().skip(1) {
                        *b = 0;
                    }
                    chunk[0] >>= shift;
                }
            }
            let mut m = Vec::new();
            m.extend_from_slice(&op.to_le_bytes());
            m.extend_from_slice(&[0, 0]);
            m.extend_from_slice(&(if reply { 3u32 } else { NO_REPLY }).to_le_bytes());
            m.extend_from_slice(&body);
            m
        })
}

/// A command with a valid op code and a random body, or plain random bytes.
fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => forged_command(1..=33, 96, 4),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// No sequence of commands makes the daemon panic, and a session always tears down.
    #[test]
    fn arbitrary_commands_never_crash_the_daemon(cmds in prop::collection::vec(command(), 1..60)) {
        let exec = Arc::new(SimExecutor::new());
        let mut s = session(&exec, 7, Some(64 << 20));
        let blob = s.shared.add_blob(IMAGE.to_vec());
        let _ = call(&mut s, Op::LoadModule, &p::LoadModule { device: 0, kind: 0, blob, jit: 0, _pad: 0 }, &[]);
        for c in &cmds {
            // A forged `HostFunc` on a real stream runs a callback, and nobody here would
            // answer it: the session thread waited forever (the test hung now and then).
            s.acknowledge_next_host_call();
            // Protocol errors end the session in the daemon; here they are just reported.
            let _ = s.handle(c);
        }
        s.teardown();
        let (free, total) = exec.mem_info(0).unwrap();
        prop_assert_eq!(free, total);
    }
}

/// The case that made `arbitrary_commands_never_crash_the_daemon` hang now and then: a
/// `HostFunc` on a stream the commands had created runs the callback (inline, in the
/// simulator), and the session waits for the client's answer. With the answer given in
/// advance, as the property test now does before every command, it returns.
#[test]
fn a_host_callback_answered_in_advance_returns() {
    let exec = Arc::new(SimExecutor::new());
    let mut s = session(&exec, 1, None);
    let create = p::StreamCreate {
        device: 0,
        flags: 1,
        priority: 0,
        _pad: 0,
    };
    let (r, v) = call(&mut s, Op::StreamCreate, &create, &[]);
    assert_eq!(r, 0);
    s.acknowledge_next_host_call();
    let (r, _) = call(
        &mut s,
        Op::HostFunc,
        &p::HostFunc {
            stream: v[0],
            id: 5,
        },
        &[],
    );
    assert_eq!(r, 0);
    assert_eq!(s.region.mailbox().callback.load(Ordering::Relaxed), 5);
    s.teardown();
}

/// Found by the session fuzzer: a `cuMemFreeAsync` naming a bad stream used to drop the
/// allocation from the session's table before failing, so its bytes stayed charged and the
/// memory was never freed, not even at teardown.
#[test]
fn a_failed_async_free_keeps_the_allocation_and_its_charge() {
    let exec = Arc::new(SimExecutor::new());
    let mut s = session(&exec, 1, Some(1 << 20));
    let stream = p::legacy_stream(0);
    let (r, v) = call(
        &mut s,
        Op::MemAllocAsync,
        &p::MemAllocAsync {
            stream,
            bytes: 1024,
        },
        &[],
    );
    assert_eq!(r, 0);
    let ptr = v[0];
    let (r, _) = call(
        &mut s,
        Op::MemFreeAsync,
        &p::MemFreeAsync {
            dptr: ptr,
            stream: 12345,
        },
        &[],
    );
    assert_eq!(r, 400, "a bad stream is an invalid handle");
    assert_eq!(s.shared.memory_bytes.load(Ordering::Relaxed), 1024);
    assert_eq!(s.ranges.owned_bytes(), 1024);
    let (r, _) = call(
        &mut s,
        Op::MemFreeAsync,
        &p::MemFreeAsync { dptr: ptr, stream },
        &[],
    );
    assert_eq!(r, 0, "the allocation can still be freed");
    assert_eq!(s.shared.memory_bytes.load(Ordering::Relaxed), 0);
    s.teardown();
    let (free, total) = exec.mem_info(0).unwrap();
    assert_eq!(free, total);
}
