//! Session-level tests of explicit memory pools and pool sharing on the simulated GPU.

use super::hostile::{call, session};
use super::sharing::Registry;
use super::Session;
use crate::executor::sim::SimExecutor;
use crate::executor::{code, Executor};
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const POSIX_FD: u32 = 1;

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

fn create(s: &mut Session, handle_types: u32) -> (u32, u64) {
    let body = p::MemPoolCreate {
        alloc_type: 1,
        handle_types,
        location_type: 1,
        location_id: 0,
        max_size: 0,
    };
    let (r, v) = call(s, Op::MemPoolCreate, &body, &[]);
    (r, v[0])
}

fn alloc(s: &mut Session, pool: u64, bytes: u64) -> (u32, u64) {
    let body = p::MemPoolAlloc {
        pool,
        stream: p::legacy_stream(0),
        bytes,
    };
    let (r, v) = call(s, Op::MemPoolAlloc, &body, &[]);
    (r, v[0])
}

fn attr(s: &mut Session, pool: u64, attr: u32, set: Option<u64>) -> (u32, u64) {
    let body = p::MemPoolAttr {
        pool,
        attr,
        set: set.is_some() as u32,
        value: set.unwrap_or(0),
    };
    let (r, v) = call(s, Op::MemPoolAttr, &body, &[]);
    (r, v[0])
}

fn free_async(s: &mut Session, dptr: u64) -> u32 {
    let body = p::MemFreeAsync {
        dptr,
        stream: p::legacy_stream(0),
    };
    call(s, Op::MemFreeAsync, &body, &[]).0
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

fn destroy(s: &mut Session, id: u64) -> u32 {
    call(s, Op::MemPoolDestroy, &p::ObjectId { id }, &[]).0
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
fn pool_props_are_checked_and_allocations_are_charged() {
    let (exec, [mut a]) = sessions([1]);
    let free0 = exec.mem_info(0).unwrap().0;
    // Win32 or fabric handles, host locations and foreign devices are refused.
    assert_eq!(create(&mut a, 0x2).0, code::NOT_SUPPORTED);
    let mut body = p::MemPoolCreate {
        alloc_type: 1,
        handle_types: 0,
        location_type: 2,
        location_id: 0,
        max_size: 0,
    };
    assert_eq!(
        call(&mut a, Op::MemPoolCreate, &body, &[]).0,
        code::NOT_SUPPORTED
    );
    body.location_type = 1;
    body.location_id = 7;
    assert_eq!(
        call(&mut a, Op::MemPoolCreate, &body, &[]).0,
        code::INVALID_VALUE
    );
    body.location_id = 0;
    body.alloc_type = 0;
    assert_eq!(
        call(&mut a, Op::MemPoolCreate, &body, &[]).0,
        code::INVALID_VALUE
    );

    let (r, pool) = create(&mut a, 0);
    assert_eq!(r, 0);
    let (r, ptr) = alloc(&mut a, pool, MIB);
    assert_eq!(r, 0);
    assert_eq!(charged(&a), MIB);
    assert_eq!(fill(&mut a, ptr, MIB, 7), 0);
    // The pool's own figures and attributes, not the client's.
    assert_eq!(attr(&mut a, pool, 7, None), (0, MIB));
    assert_eq!(attr(&mut a, pool, 4, Some(32 * MIB)), (0, 32 * MIB));
    assert_eq!(attr(&mut a, pool, 4, None), (0, 32 * MIB));
    assert_eq!(attr(&mut a, pool, 7, Some(0)).0, code::INVALID_VALUE);
    let trim = p::MemPoolTrim { pool, keep: 0 };
    assert_eq!(call(&mut a, Op::MemPoolTrim, &trim, &[]).0, 0);
    // The quota counts pool memory like any other.
    assert_eq!(alloc(&mut a, pool, 64 * MIB).0, code::OUT_OF_MEMORY);
    // Destroying a pool with an allocation outstanding succeeds; the allocation stays usable
    // and charged until it is freed.
    assert_eq!(destroy(&mut a, pool), 0);
    assert_eq!(alloc(&mut a, pool, MIB).0, code::INVALID_HANDLE);
    assert_eq!(fill(&mut a, ptr, MIB, 8), 0);
    assert_eq!(charged(&a), MIB);
    // cuMemFree frees pool memory too.
    assert_eq!(
        call(&mut a, Op::MemFree, &p::MemFree { dptr: ptr }, &[]).0,
        0
    );
    assert_eq!(charged(&a), 0);
    assert_eq!(exec.mem_info(0).unwrap().0, free0);
    // Teardown frees what is left.
    let (_, pool) = create(&mut a, 0);
    alloc(&mut a, pool, MIB);
    a.teardown();
    assert_eq!(exec.mem_info(0).unwrap().0, free0);
}

#[test]
fn another_session_imports_a_pool_and_a_pointer() {
    let (exec, [mut a, mut b]) = sessions([1, 2]);
    let free0 = exec.mem_info(0).unwrap().0;
    let (_, plain) = create(&mut a, 0);
    let (_, pool) = create(&mut a, POSIX_FD);
    let (_, ptr) = alloc(&mut a, pool, MIB);
    assert_eq!(fill(&mut a, ptr, MIB, 0x5a), 0);
    let export = |id| p::VmmExport {
        handle: id,
        handle_type: POSIX_FD,
        _pad: 0,
    };
    // Only a pool created with the handle type exports, and only that handle type.
    assert_eq!(
        call(&mut a, Op::MemPoolExport, &export(plain), &[]).0,
        code::INVALID_VALUE
    );
    let mut win32 = export(pool);
    win32.handle_type = 2;
    assert_eq!(
        call(&mut a, Op::MemPoolExport, &win32, &[]).0,
        code::NOT_SUPPORTED
    );
    let (r, v) = call(&mut a, Op::MemPoolExport, &export(pool), &[]);
    assert_eq!(r, 0);
    let pool_tok = token(v);
    let (_, plain_ptr) = alloc(&mut a, plain, 4096);
    let ex = |dptr| p::MemFree { dptr };
    assert_eq!(
        call(&mut a, Op::MemPoolExportPtr, &ex(plain_ptr), &[]).0,
        code::INVALID_VALUE
    );
    assert_eq!(
        call(&mut a, Op::MemPoolExportPtr, &ex(ptr + 16), &[]).0,
        code::INVALID_VALUE
    );
    let (r, v) = call(&mut a, Op::MemPoolExportPtr, &ex(ptr), &[]);
    assert_eq!(r, 0);
    let ptr_tok = [v[0], v[1]];

    // b imports the pool, then the pointer through it: the same address.
    let (r, v) = call(&mut b, Op::MemPoolImport, &pool_tok, &[]);
    assert_eq!(r, 0);
    let imported = v[0];
    let (_, own) = create(&mut b, POSIX_FD);
    let imp = |pool, token| p::MemPoolImportPtr { pool, token };
    // Through the wrong pool, with a forged token, or as the pool token: refused.
    assert_eq!(
        call(&mut b, Op::MemPoolImportPtr, &imp(own, ptr_tok), &[]).0,
        code::INVALID_VALUE
    );
    assert_eq!(
        call(&mut b, Op::MemPoolImportPtr, &imp(imported, [1, 2]), &[]).0,
        code::INVALID_HANDLE
    );
    assert_eq!(
        call(
            &mut b,
            Op::MemPoolImportPtr,
            &imp(imported, pool_tok.token),
            &[]
        )
        .0,
        code::INVALID_HANDLE
    );
    let (r, v) = call(&mut b, Op::MemPoolImportPtr, &imp(imported, ptr_tok), &[]);
    assert_eq!(r, 0);
    assert_eq!((v[0], v[1], v[2]), (ptr, MIB, 0));
    assert_eq!(exec.peek(ptr, 16).unwrap(), vec![0x5a; 16]);
    assert_eq!(fill(&mut b, ptr, 16, 1), 0, "the importer may use it");
    // An imported pool hands out no memory and its attributes are the exporter's.
    assert_eq!(alloc(&mut b, imported, 4096).0, code::INVALID_VALUE);
    assert_eq!(attr(&mut b, imported, 4, Some(1)).0, code::NOT_SUPPORTED);
    assert_eq!(attr(&mut b, imported, 7, None), (0, MIB));
    assert_eq!(charged(&b), 0);

    // The exporter frees first: the memory stays for b, charged to a; nobody new may import.
    assert_eq!(free_async(&mut a, ptr), 0);
    assert_eq!(charged(&a), MIB + 4096);
    assert_eq!(fill(&mut b, ptr, 16, 2), 0);
    // b lets go with cuMemFreeAsync: now it is freed and refunded to a.
    assert_eq!(free_async(&mut b, ptr), 0);
    assert_eq!(free_async(&mut b, ptr), code::INVALID_VALUE);
    assert_eq!(charged(&a), 4096);
    assert_eq!(fill(&mut b, ptr, 16, 2), code::INVALID_VALUE);
    assert_eq!(
        call(&mut b, Op::MemPoolImportPtr, &imp(imported, ptr_tok), &[]).0,
        code::INVALID_HANDLE
    );

    // a destroys its pool; b still holds it, then lets go.
    assert_eq!(destroy(&mut a, pool), 0);
    assert_eq!(attr(&mut b, imported, 4, None).0, 0, "alive while imported");
    assert_eq!(destroy(&mut b, imported), 0);
    assert_eq!(destroy(&mut b, imported), code::INVALID_HANDLE);
    assert_eq!(
        call(&mut b, Op::MemPoolImport, &pool_tok, &[]).0,
        code::INVALID_HANDLE
    );
    a.teardown();
    b.teardown();
    assert_eq!(exec.mem_info(0).unwrap().0, free0);
}

#[test]
fn teardown_defers_exported_pool_memory_until_importers_go() {
    let (exec, [mut a, mut b]) = sessions([1, 2]);
    let free0 = exec.mem_info(0).unwrap().0;
    let (_, pool) = create(&mut a, POSIX_FD);
    let (_, ptr) = alloc(&mut a, pool, MIB);
    let (_, v) = call(&mut a, Op::MemPoolExportPtr, &p::MemFree { dptr: ptr }, &[]);
    let ptr_tok = [v[0], v[1]];
    let (_, v) = call(
        &mut a,
        Op::MemPoolExport,
        &p::VmmExport {
            handle: pool,
            handle_type: POSIX_FD,
            _pad: 0,
        },
        &[],
    );
    let (_, w) = call(&mut b, Op::MemPoolImport, &token(v), &[]);
    let body = p::MemPoolImportPtr {
        pool: w[0],
        token: ptr_tok,
    };
    assert_eq!(call(&mut b, Op::MemPoolImportPtr, &body, &[]).0, 0);
    a.teardown();
    assert_eq!(exec.mem_info(0).unwrap().0, free0 - MIB, "still imported");
    assert_eq!(fill(&mut b, ptr, MIB, 9), 0);
    b.teardown();
    assert_eq!(exec.mem_info(0).unwrap().0, free0);
}
