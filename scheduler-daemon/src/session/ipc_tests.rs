//! Session-level tests of sharing between clients (`cuIpc*`, exported allocations) on the
//! simulated GPU.

use super::hostile::{call, session};
use super::sharing::Registry;
use super::Session;
use crate::executor::sim::SimExecutor;
use crate::executor::{code, Executor};
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// Sessions `ids` of one daemon: one executor, one sharing table.
fn sessions<const N: usize>(ids: [u64; N]) -> (Arc<SimExecutor>, [Session; N]) {
    let exec = Arc::new(SimExecutor::new());
    let reg = Arc::new(Registry::default());
    let s = ids.map(|id| {
        let mut s = session(&exec, id, Some(64 * MIB));
        s.share_through(reg.clone());
        s
    });
    (exec, s)
}

fn alloc(s: &mut Session, bytes: u64) -> u64 {
    let body = p::MemAlloc {
        device: 0,
        _pad: 0,
        bytes,
    };
    let (r, v) = call(s, Op::MemAlloc, &body, &[]);
    assert_eq!(r, 0);
    v[0]
}

fn fill(s: &mut Session, dst: u64, len: u64, value: u32) -> u32 {
    let body = p::Memset {
        dst,
        stream: p::legacy_stream(0),
        width: len,
        height: 1,
        pitch: 0,
        value,
        elem_size: 1,
    };
    call(s, Op::Memset, &body, &[]).0
}

fn copy(s: &mut Session, dst: u64, src: u64, len: u64) -> u32 {
    let body = p::Copy {
        dst,
        src,
        len,
        stream: p::legacy_stream(0),
    };
    call(s, Op::CopyDtoD, &body, &[]).0
}

fn token(v: [u64; 4]) -> p::IpcToken {
    p::IpcToken {
        token: [v[0], v[1]],
    }
}

fn charged(s: &Session) -> u64 {
    s.shared.memory_bytes.load(Ordering::Relaxed)
}

#[test]
fn another_session_opens_reads_and_closes_shared_memory() {
    let (exec, [mut a, mut b, mut c]) = sessions([1, 2, 3]);
    let buf = alloc(&mut a, 4096);
    assert_eq!(fill(&mut a, buf, 4096, 0x5a), 0);
    // A pointer inside the allocation names the whole allocation.
    let (r, v) = call(
        &mut a,
        Op::IpcGetMemHandle,
        &p::MemFree { dptr: buf + 16 },
        &[],
    );
    assert_eq!(r, 0);
    let tok = token(v);
    // The exporter cannot open its own handle, as in the driver.
    assert_eq!(
        call(&mut a, Op::IpcOpenMemHandle, &tok, &[]).0,
        code::INVALID_CONTEXT
    );
    // Before opening, b may not name a's memory.
    let mine = alloc(&mut b, 4096);
    assert_eq!(copy(&mut b, mine, buf, 4096), code::INVALID_VALUE);
    let (r, v) = call(&mut b, Op::IpcOpenMemHandle, &tok, &[]);
    assert_eq!(r, 0);
    assert_eq!((v[0], v[1], v[2]), (buf, 4096, 0));
    assert_eq!(copy(&mut b, mine, buf, 4096), 0);
    assert_eq!(exec.peek(mine, 4096).unwrap(), vec![0x5a; 4096]);
    // b cannot free or re-export memory that is not its own.
    assert_eq!(
        call(&mut b, Op::MemFree, &p::MemFree { dptr: buf }, &[]).0,
        code::INVALID_VALUE
    );
    assert_eq!(
        call(&mut b, Op::IpcGetMemHandle, &p::MemFree { dptr: buf }, &[]).0,
        code::INVALID_VALUE
    );
    // A second open counts; two closes are needed, a third is an error.
    assert_eq!(call(&mut b, Op::IpcOpenMemHandle, &tok, &[]).0, 0);
    let close = p::MemFree { dptr: buf };
    assert_eq!(
        call(&mut b, Op::IpcCloseMemHandle, &close, &[]),
        (0, [0; 4])
    );
    assert_eq!(copy(&mut b, mine, buf, 4096), 0);
    assert_eq!(call(&mut b, Op::IpcCloseMemHandle, &close, &[]).0, 0);
    assert_eq!(copy(&mut b, mine, buf, 4096), code::INVALID_VALUE);
    assert_eq!(
        call(&mut b, Op::IpcCloseMemHandle, &close, &[]).0,
        code::INVALID_VALUE
    );
    // A forged token opens nothing; nor does c closing what it never opened.
    let forged = p::IpcToken {
        token: [tok.token[0] ^ 1, tok.token[1]],
    };
    assert_eq!(
        call(&mut c, Op::IpcOpenMemHandle, &forged, &[]).0,
        code::INVALID_HANDLE
    );
    assert_eq!(
        call(&mut c, Op::IpcCloseMemHandle, &close, &[]).0,
        code::INVALID_VALUE
    );
    // Nobody holds it open: the exporter's free is immediate and refunded.
    assert_eq!(call(&mut a, Op::MemFree, &close, &[]).0, 0);
    assert!(exec.peek(buf, 1).is_err());
    assert_eq!(charged(&a), 0);
    assert_eq!(
        call(&mut c, Op::IpcOpenMemHandle, &tok, &[]).0,
        code::INVALID_HANDLE
    );
}

#[test]
fn memory_freed_by_its_exporter_lives_until_the_last_importer_closes() {
    let (exec, [mut a, mut b, mut c]) = sessions([1, 2, 3]);
    let buf = alloc(&mut a, MIB);
    let (_, v) = call(&mut a, Op::IpcGetMemHandle, &p::MemFree { dptr: buf }, &[]);
    let tok = token(v);
    assert_eq!(call(&mut b, Op::IpcOpenMemHandle, &tok, &[]).0, 0);
    assert_eq!(
        call(&mut a, Op::MemFree, &p::MemFree { dptr: buf }, &[]).0,
        0
    );
    // Still allocated, still b's to use, still charged to a (and never to b).
    assert!(exec.peek(buf, 1).is_ok());
    assert_eq!(fill(&mut b, buf, MIB, 1), 0);
    assert_eq!(charged(&a), MIB);
    assert_eq!(charged(&b), 0);
    // a no longer may name it, and its handle opens nothing new.
    assert_eq!(fill(&mut a, buf, MIB, 1), code::INVALID_VALUE);
    assert_eq!(
        call(&mut c, Op::IpcOpenMemHandle, &tok, &[]).0,
        code::INVALID_HANDLE
    );
    let close = p::MemFree { dptr: buf };
    assert_eq!(call(&mut b, Op::IpcCloseMemHandle, &close, &[]).0, 0);
    assert!(exec.peek(buf, 1).is_err(), "freed by the last holder");
    assert_eq!(charged(&a), 0);
}

#[test]
fn exporter_exit_leaves_importers_memory_until_they_exit() {
    let (exec, [mut a, mut b]) = sessions([1, 2]);
    let buf = alloc(&mut a, 4096);
    let (_, v) = call(&mut a, Op::IpcGetMemHandle, &p::MemFree { dptr: buf }, &[]);
    assert_eq!(call(&mut b, Op::IpcOpenMemHandle, &token(v), &[]).0, 0);
    a.teardown();
    assert_eq!(fill(&mut b, buf, 4096, 7), 0);
    assert_eq!(exec.peek(buf, 4).unwrap(), vec![7; 4]);
    // Opening after the exporter is gone fails.
    let mut c = session(&exec, 3, None);
    c.share_through(b.sharing.clone());
    assert_eq!(
        call(&mut c, Op::IpcOpenMemHandle, &token(v), &[]).0,
        code::INVALID_HANDLE
    );
    b.teardown();
    assert!(exec.peek(buf, 1).is_err());
    assert_eq!(b.sharing.live(), 0);
}

#[test]
fn shared_events_are_destroyed_by_their_last_holder() {
    let (exec, [mut a, mut b]) = sessions([1, 2]);
    let timed = p::EventCreate {
        device: 0,
        flags: 0x4,
    };
    let (_, v) = call(&mut a, Op::EventCreate, &timed, &[]);
    assert_eq!(
        call(
            &mut a,
            Op::IpcGetEventHandle,
            &p::ObjectId { id: v[0] },
            &[]
        )
        .0,
        code::INVALID_HANDLE,
        "an IPC event must disable timing"
    );
    let ipc = p::EventCreate {
        device: 0,
        flags: 0x6,
    };
    let (_, v) = call(&mut a, Op::EventCreate, &ipc, &[]);
    let a_ev = v[0];
    let raw = a.events.get(a_ev).unwrap().raw;
    let (r, v) = call(
        &mut a,
        Op::IpcGetEventHandle,
        &p::ObjectId { id: a_ev },
        &[],
    );
    assert_eq!(r, 0);
    let tok = token(v);
    assert_eq!(
        call(&mut a, Op::IpcOpenEventHandle, &tok, &[]).0,
        code::INVALID_CONTEXT
    );
    let (r, v) = call(&mut b, Op::IpcOpenEventHandle, &tok, &[]);
    assert_eq!(r, 0);
    let b_ev = v[0];
    // b records the shared event on its own stream; both see it.
    let rec = p::EventRecord {
        event: b_ev,
        stream: p::legacy_stream(0),
        seq: 1,
        word: 0,
        _pad: 0,
    };
    assert_eq!(call(&mut b, Op::EventRecord, &rec, &[]).0, 0);
    assert_eq!(
        call(&mut a, Op::EventQuery, &p::ObjectId { id: a_ev }, &[]).0,
        0
    );
    assert_eq!(
        call(&mut a, Op::EventSynchronize, &p::ObjectId { id: a_ev }, &[]).0,
        0
    );
    // The exporter destroys its event: b's still works, and nobody new may open it.
    assert_eq!(
        call(&mut a, Op::EventDestroy, &p::ObjectId { id: a_ev }, &[]).0,
        0
    );
    assert!(exec.is_live(raw));
    assert_eq!(
        call(&mut b, Op::EventQuery, &p::ObjectId { id: b_ev }, &[]).0,
        0
    );
    assert_eq!(
        call(&mut b, Op::EventDestroy, &p::ObjectId { id: b_ev }, &[]).0,
        0
    );
    assert!(!exec.is_live(raw));
    assert_eq!(
        call(&mut b, Op::EventDestroy, &p::ObjectId { id: b_ev }, &[]).0,
        code::INVALID_HANDLE
    );
}

#[test]
fn exported_allocations_are_imported_mapped_and_freed_by_the_last_holder() {
    let (exec, [mut a, mut b]) = sessions([1, 2]);
    let free0 = exec.mem_info(0).unwrap().0;
    let mut prop = p::VmmProp {
        kind: 1,
        location_type: 1,
        location_id: 0,
        ..Default::default()
    };
    let create = |prop| p::VmmCreate {
        size: 2 * MIB,
        prop,
    };
    // Created without a shareable handle type: the driver refuses its export.
    let (_, v) = call(&mut a, Op::VmmCreate, &create(prop), &[]);
    let plain = p::VmmExport {
        handle: v[0],
        handle_type: 1,
        _pad: 0,
    };
    assert_eq!(
        call(&mut a, Op::VmmExport, &plain, &[]).0,
        code::INVALID_VALUE
    );
    assert_eq!(
        call(&mut a, Op::VmmRelease, &p::ObjectId { id: v[0] }, &[]).0,
        0
    );

    prop.handle_types = 1;
    let (_, v) = call(&mut a, Op::VmmCreate, &create(prop), &[]);
    let handle = v[0];
    let fabric = p::VmmExport {
        handle,
        handle_type: 8,
        _pad: 0,
    };
    assert_eq!(
        call(&mut a, Op::VmmExport, &fabric, &[]).0,
        code::NOT_SUPPORTED
    );
    let export = p::VmmExport {
        handle,
        handle_type: 1,
        _pad: 0,
    };
    let (r, v) = call(&mut a, Op::VmmExport, &export, &[]);
    assert_eq!(r, 0);
    let tok = token(v);
    let forged = p::IpcToken {
        token: [tok.token[0], !tok.token[1]],
    };
    assert_eq!(
        call(&mut b, Op::VmmImport, &forged, &[]).0,
        code::INVALID_HANDLE
    );
    let (r, v) = call(&mut b, Op::VmmImport, &tok, &[]);
    assert_eq!(r, 0);
    assert_eq!(v[1], 2 * MIB);
    let imported = v[0];
    // The exporter lets go first: the memory stays, charged to it.
    assert_eq!(
        call(&mut a, Op::VmmRelease, &p::ObjectId { id: handle }, &[]).0,
        0
    );
    assert_eq!(exec.mem_info(0).unwrap().0, free0 - 2 * MIB);
    assert_eq!(charged(&a), 2 * MIB);
    // The importer maps it into its own reservation and uses it.
    let reserve = p::VmmReserve {
        size: 2 * MIB,
        alignment: 0,
        addr: 0,
        flags: 0,
    };
    let (_, v) = call(&mut b, Op::VmmReserve, &reserve, &[]);
    let va = v[0];
    let map = p::VmmMap {
        ptr: va,
        size: 2 * MIB,
        offset: 0,
        handle: imported,
    };
    assert_eq!(call(&mut b, Op::VmmMap, &map, &[]).0, 0);
    assert_eq!(
        call(&mut b, Op::VmmRelease, &p::ObjectId { id: imported }, &[]).0,
        0
    );
    assert_eq!(fill(&mut b, va, 4096, 3), 0);
    assert_eq!(charged(&b), 0);
    let range = p::VmmRange {
        ptr: va,
        size: 2 * MIB,
    };
    assert_eq!(call(&mut b, Op::VmmUnmap, &range, &[]).0, 0);
    assert_eq!(
        exec.mem_info(0).unwrap().0,
        free0,
        "released by the last holder"
    );
    assert_eq!(charged(&a), 0);
    assert_eq!(
        call(&mut b, Op::VmmImport, &tok, &[]).0,
        code::INVALID_HANDLE
    );
}
