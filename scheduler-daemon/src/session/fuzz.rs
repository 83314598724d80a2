//! Session-level fuzzing: two tenants' sessions on one simulated GPU, driven by command
//! sequences built from fuzz input (forged and borrowed handles, stream ids, device pointers,
//! offsets, lengths, reply and word indices, staging chunks, module images). After every
//! command it checks what isolation promises; at the end, that teardown frees everything.

use super::tables::Owner;
use super::{Identity, Session, Shared};
use crate::config::TenantPolicy;
use crate::executor::sim::SimExecutor;
use crate::executor::{Executor, Raw};
use crate::fuzz::Input;
use baton_ipc::protocol::{self as p, encode, Op, NO_REPLY};
use baton_ipc::region::{Layout, Params, Region, REPLY_DONE, REPLY_PENDING};
use baton_ipc::shm::SharedRegion;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Small regions keep each run cheap; the bounds checks are the same at any size.
const PARAMS: Params = Params {
    ring_capacity: 64,
    replies: 8,
    words: 64,
    chunks: 2,
    chunk_size: 64 << 10,
};

/// Small quotas keep simulated allocations (real host memory) cheap.
const QUOTAS: [u64; 2] = [256 << 10, 1 << 20];

const MAX_STEPS: usize = 64;

const IMAGE: &[u8] =
    b"//baton-sim\nkernel fill 8 4 4\nkernel vecAdd 8 8 8 4\nkernel empty\nkernel fault\n";
const NAMES: [&[u8]; 4] = [b"fill", b"vecAdd", b"empty", b"fault"];

fn new_session(exec: &Arc<SimExecutor>, id: u64, quota: u64) -> Session {
    let layout = Layout::new(PARAMS).expect("valid parameters");
    let mapping = SharedRegion::create("fuzz-session", layout.total).expect("memfd");
    // SAFETY: a fresh mapping of `layout.total` bytes, kept alive by the session.
    let region = unsafe { Region::init(mapping.as_ptr(), mapping.len(), PARAMS) }.expect("region");
    let dev = exec
        .host_register(mapping.as_ptr(), mapping.len())
        .expect("sim registers");
    let identity = Identity {
        session: id,
        pid: id as u32,
        uid: 1000 + id as u32,
        gid: 1000,
        tenant: format!("t{id}"),
    };
    let policy = TenantPolicy {
        memory_quota: Some(quota),
        ..Default::default()
    };
    Session::new(
        Arc::new(Shared::new(identity, policy)),
        exec.clone(),
        mapping,
        region,
        dev,
    )
    .expect("session")
}

/// Values the sessions handed out, so forged commands can name real objects (their own or the
/// other tenant's).
#[derive(Default)]
struct Seen {
    ids: Vec<u64>,
    ptrs: Vec<u64>,
    blobs: Vec<u64>,
}

fn pick(inp: &mut Input<'_>, from: &[u64]) -> Option<u64> {
    (!from.is_empty()).then(|| from[inp.u8() as usize % from.len()])
}

fn id(inp: &mut Input<'_>, seen: &Seen) -> u64 {
    match inp.u8() % 4 {
        0 | 1 => pick(inp, &seen.ids).unwrap_or(1),
        2 => p::legacy_stream(inp.u8() as u32 % 3),
        _ => inp.interesting(),
    }
}

fn ptr(inp: &mut Input<'_>, seen: &Seen) -> u64 {
    match inp.u8() % 4 {
        0 | 1 => pick(inp, &seen.ptrs).unwrap_or(0),
        2 => pick(inp, &seen.ptrs)
            .unwrap_or(0)
            .wrapping_add(inp.interesting()),
        _ => inp.interesting(),
    }
}

fn device(inp: &mut Input<'_>) -> u32 {
    match inp.u8() % 4 {
        0 | 1 => 0,
        2 => 1,
        _ => inp.u32(),
    }
}

fn word(inp: &mut Input<'_>) -> u32 {
    match inp.u8() % 3 {
        0 | 1 => inp.u8() as u32 % (PARAMS.words + 2),
        _ => inp.u32(),
    }
}

/// Builds one command for session `who` from the input; may add a blob to that session.
fn command(inp: &mut Input<'_>, s: &Session, seen: &mut Seen, out: &mut Vec<u8>) {
    let reply = match inp.u8() % 4 {
        0 => NO_REPLY,
        1 => inp.u32(),
        _ => inp.u8() as u32 % (PARAMS.replies + 1),
    };
    // Every op code in use (the highest is 128) and a few unknown ones past it.
    let op = 1 + inp.u8() as u16 % 132;
    let Some(op) = Op::from_u16(op) else {
        // Raw bytes: anything, including unknown ops and short bodies.
        out.clear();
        out.extend_from_slice(inp.bytes(160));
        return;
    };
    macro_rules! enc {
        ($body:expr) => {
            enc!($body, &[])
        };
        ($body:expr, $tail:expr) => {
            encode(op, reply, &$body, $tail, out)
        };
    }
    match op {
        Op::MemAlloc => enc!(p::MemAlloc {
            device: device(inp),
            _pad: 0,
            bytes: inp.interesting(),
        }),
        Op::MemFree => enc!(p::MemFree {
            dptr: ptr(inp, seen)
        }),
        Op::MemGetInfo | Op::CtxSynchronize => enc!(p::DeviceOnly {
            device: device(inp),
            _pad: 0
        }),
        Op::LoadModule => {
            let blob = match inp.u8() % 4 {
                0 => pick(inp, &seen.blobs).unwrap_or(1),
                1 => inp.interesting(),
                _ => {
                    let image = match inp.u8() % 4 {
                        0 | 1 => IMAGE.to_vec(),
                        2 => [b"//baton-sim\n", inp.bytes(256)].concat(),
                        _ => inp.bytes(256).to_vec(),
                    };
                    let b = s.shared.add_blob(image);
                    seen.blobs.push(b);
                    b
                }
            };
            enc!(p::LoadModule {
                device: device(inp),
                kind: inp.u8() as u32 % 3,
                blob,
                jit: inp.u8() as u32,
                _pad: 0,
            })
        }
        Op::UnloadModule
        | Op::ModuleFunctions
        | Op::StreamDestroy
        | Op::EventDestroy
        | Op::StreamSynchronize
        | Op::EventSynchronize => enc!(p::ObjectId { id: id(inp, seen) }),
        Op::GetFunction | Op::GetGlobal => {
            let long;
            let name: &[u8] = match inp.u8() % 8 {
                0 => {
                    long = vec![b'a'; p::MAX_NAME + 1];
                    &long
                }
                1 | 2 => inp.bytes(64),
                i => NAMES[i as usize % NAMES.len()],
            };
            enc!(
                p::GetSymbol {
                    module: id(inp, seen)
                },
                name
            )
        }
        Op::StreamCreate => enc!(p::StreamCreate {
            device: device(inp),
            flags: inp.u8() as u32 % 3,
            priority: inp.u32() as i32,
            _pad: 0,
        }),
        Op::EventCreate => enc!(p::EventCreate {
            device: device(inp),
            flags: inp.u8() as u32,
        }),
        Op::EventRecord => enc!(p::EventRecord {
            event: id(inp, seen),
            stream: id(inp, seen),
            seq: inp.u64(),
            word: word(inp),
            _pad: 0,
        }),
        Op::StreamWaitEvent => enc!(p::StreamWaitEvent {
            stream: id(inp, seen),
            event: id(inp, seen),
        }),
        Op::EventElapsedTime => enc!(p::EventPair {
            start: id(inp, seen),
            end: id(inp, seen),
        }),
        Op::StreamMark => enc!(p::StreamMark {
            stream: id(inp, seen),
            seq: inp.u64(),
            word: word(inp),
            _pad: 0,
        }),
        Op::Launch => {
            // fill(ptr, value, n) / vecAdd(a, b, c, n): pointers and counts from the input.
            let mut params = Vec::new();
            for _ in 0..inp.u8() % 5 {
                if inp.bool() {
                    params.extend_from_slice(&ptr(inp, seen).to_le_bytes());
                } else {
                    params.extend_from_slice(&(inp.interesting() as u32).to_le_bytes());
                }
            }
            let params_len = if inp.u8() % 8 == 0 {
                inp.u32()
            } else {
                params.len() as u32
            };
            let dim = |inp: &mut Input<'_>| -> [u32; 3] {
                std::array::from_fn(|_| match inp.u8() % 4 {
                    0 => 0,
                    1 | 2 => inp.u8() as u32,
                    _ => inp.u32(),
                })
            };
            enc!(
                p::Launch {
                    func: id(inp, seen),
                    stream: id(inp, seen),
                    grid: dim(inp),
                    block: dim(inp),
                    cluster: dim(inp),
                    shared_mem: inp.u32(),
                    flags: inp.u8() as u32 % 4,
                    params_len,
                },
                &params
            )
        }
        Op::Memset => enc!(p::Memset {
            dst: ptr(inp, seen),
            stream: id(inp, seen),
            width: inp.interesting(),
            height: inp.interesting(),
            pitch: inp.interesting(),
            value: inp.u32(),
            elem_size: inp.u8() as u32 % 6,
        }),
        Op::CopyDtoD | Op::CopyHtoDPinned | Op::CopyDtoHPinned => enc!(p::Copy {
            dst: ptr(inp, seen),
            src: ptr(inp, seen),
            len: inp.interesting(),
            stream: id(inp, seen),
        }),
        Op::CopyHtoDStaged | Op::CopyDtoHStaged => enc!(p::Staged {
            device_ptr: ptr(inp, seen),
            len: inp.interesting(),
            stream: id(inp, seen),
            chunk: match inp.u8() % 3 {
                0 | 1 => inp.u8() as u32 % (PARAMS.chunks + 1),
                _ => inp.u32(),
            },
            _pad: 0,
        }),
        Op::FuncSetAttribute => enc!(p::FuncSetAttribute {
            func: id(inp, seen),
            attr: inp.interesting() as i32,
            value: inp.u32() as i32,
        }),
        Op::Occupancy => enc!(p::Occupancy {
            func: id(inp, seen),
            kind: inp.u8() as u32 % 4,
            block_size: inp.interesting() as u32,
            dynamic_smem: inp.interesting(),
            flags: inp.u32(),
            block_size_limit: inp.u32(),
        }),
        Op::CtxLimit => enc!(p::CtxLimit {
            device: device(inp),
            set: inp.u8() as u32 % 3,
            limit: inp.u8() as u32 % 12,
            _pad: 0,
            value: inp.interesting(),
        }),
        Op::HostFunc => enc!(p::HostFunc {
            stream: id(inp, seen),
            id: inp.u64(),
        }),
        Op::MemAllocAsync => enc!(p::MemAllocAsync {
            stream: id(inp, seen),
            bytes: inp.interesting(),
        }),
        Op::MemFreeAsync => enc!(p::MemFreeAsync {
            dptr: ptr(inp, seen),
            stream: id(inp, seen),
        }),
        Op::Copy2D => enc!(p::Copy2D {
            dst: ptr(inp, seen),
            dst_pitch: inp.interesting(),
            src: ptr(inp, seen),
            src_pitch: inp.interesting(),
            width: inp.interesting(),
            height: inp.interesting(),
            stream: id(inp, seen),
            flags: inp.u8() as u32 % 4,
            _pad: 0,
        }),
        Op::OccupancyClusters => enc!(p::OccupancyClusters {
            func: id(inp, seen),
            grid: [inp.u32(), inp.u8() as u32, 1],
            block: [inp.u32(), 1, 1],
            cluster: [inp.u8() as u32, 1, 1],
            shared_mem: inp.u32(),
        }),
        // The other ops (VMM, capture and graphs, arrays and textures): a header and arbitrary
        // body bytes, so every field takes fuzzed values.
        _ => {
            let header = p::Header {
                op: op as u16,
                _pad: 0,
                reply,
            };
            out.clear();
            out.extend_from_slice(zerocopy::IntoBytes::as_bytes(&header));
            out.extend_from_slice(inp.bytes(op.body_size()));
        }
    }
    // Sometimes the client cuts the message short or adds a tail.
    match inp.u8() % 16 {
        0 => {
            let keep = inp.u8() as usize % (out.len() + 1);
            out.truncate(keep);
        }
        1 => out.extend_from_slice(inp.bytes(32)),
        _ => {}
    }
}

/// What another tenant's command must leave alone.
#[derive(PartialEq, Eq, Debug)]
struct Snapshot {
    memory_bytes: u64,
    ranges: Vec<(u64, u64, u32, Owner)>,
    objects: Vec<Raw>,
    images: usize,
    funcs: usize,
    events: usize,
    streams: usize,
    /// Hash of the contents of the tenant's allocations.
    contents: u64,
}

fn snapshot(s: &Session, exec: &SimExecutor) -> Snapshot {
    let ranges: Vec<_> = s.ranges.entries().collect();
    let mut h = DefaultHasher::new();
    for &(start, len, _, owner) in &ranges {
        if owner != Owner::Alloc && owner != Owner::AsyncAlloc {
            continue;
        }
        exec.peek(start, len)
            .expect("a tenant's allocation is live in the GPU")
            .hash(&mut h);
    }
    let mut objects: Vec<Raw> = s.images.values().map(|i| i.raw).collect();
    objects.extend(s.events.values().map(|e| e.raw));
    objects.extend(s.streams.table.values().map(|st| st.raw));
    objects.sort_unstable();
    Snapshot {
        memory_bytes: s.shared.memory_bytes.load(Ordering::Acquire),
        ranges,
        objects,
        images: s.images.len(),
        funcs: s.funcs.len(),
        events: s.events.len(),
        streams: s.streams.table.len(),
        contents: h.finish(),
    }
}

/// One tenant's own bookkeeping: its accounting matches the allocations it holds and stays
/// within its quota, and every object its handles name is live.
fn check_own(s: &Session, exec: &SimExecutor, quota: u64) {
    let used = s.shared.memory_bytes.load(Ordering::Acquire);
    assert_eq!(
        used,
        s.ranges.owned_bytes(),
        "accounting differs from held allocations"
    );
    assert!(
        used <= quota,
        "{used} bytes charged against a quota of {quota}"
    );
    let snap = snapshot(s, exec);
    for raw in snap.objects {
        assert!(exec.is_live(raw), "a handle names a destroyed object");
    }
}

/// Runs a command sequence from `data` on two tenants' sessions.
pub fn session(data: &[u8]) {
    let mut inp = Input(data);
    let exec = Arc::new(SimExecutor::new());
    let mut tenants = [
        new_session(&exec, 1, QUOTAS[0]),
        new_session(&exec, 2, QUOTAS[1]),
    ];
    let mut seen = Seen::default();
    let mut buf = Vec::new();
    for _ in 0..MAX_STEPS {
        if inp.is_empty() {
            break;
        }
        let who = inp.u8() as usize % 2;
        command(&mut inp, &tenants[who], &mut seen, &mut buf);
        let launch = buf.get(..2) == Some(&(Op::Launch as u16).to_le_bytes()[..]);
        let other_before = snapshot(&tenants[1 - who], &exec);
        let s = &mut tenants[who];
        s.acknowledge_next_host_call();
        let reply = p::Message::decode(&buf).ok().map(|m| m.reply);
        if let Some(slot) = reply.and_then(|r| s.region.reply(r)) {
            slot.state.store(REPLY_PENDING, Ordering::Relaxed);
        }
        // A protocol error ends the session in the daemon; carrying on here is a superset.
        let _ = s.handle(&buf);
        if let Some(slot) = reply.and_then(|r| s.region.reply(r)) {
            if slot.state.load(Ordering::Acquire) == REPLY_DONE {
                for v in &slot.values[..2] {
                    let v = v.load(Ordering::Relaxed);
                    if v != 0 && v < 1 << 32 {
                        seen.ids.push(v);
                    } else if v != 0 {
                        seen.ptrs.push(v);
                    }
                }
            }
        }

        check_own(&tenants[who], &exec, QUOTAS[who]);
        let mut other_after = snapshot(&tenants[1 - who], &exec);
        if launch {
            // Kernels share one address space: a kernel can write any device address, so
            // only launches may change another tenant's memory (docs/architecture.md).
            other_after.contents = other_before.contents;
        }
        assert_eq!(
            other_before, other_after,
            "tenant {who}'s command changed the other tenant's state"
        );
        // The GPU holds exactly what the two tenants are charged for.
        let (free, total) = exec.mem_info(0).expect("device 0");
        let charged: u64 = tenants
            .iter()
            .map(|t| t.shared.memory_bytes.load(Ordering::Acquire))
            .sum();
        assert_eq!(total - free, charged, "device memory nobody is charged for");
        // No range or object is in both tenants' tables.
        let (a, b) = (snapshot(&tenants[0], &exec), snapshot(&tenants[1], &exec));
        for &(s0, l0, _, _) in &a.ranges {
            for &(s1, l1, _, _) in &b.ranges {
                assert!(
                    s0.saturating_add(l0) <= s1 || s1.saturating_add(l1) <= s0,
                    "two tenants share device memory"
                );
            }
        }
        assert!(a
            .objects
            .iter()
            .all(|o| b.objects.binary_search(o).is_err()));
    }
    for mut s in tenants {
        s.teardown();
        assert_eq!(s.shared.memory_bytes.load(Ordering::Acquire), 0);
    }
    assert_eq!(exec.live_objects(), 0, "teardown left objects in the GPU");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn session_harness(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            session(&bytes);
        }
    }
}
