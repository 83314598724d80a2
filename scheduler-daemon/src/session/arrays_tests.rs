//! Arrays, texture and surface objects as the daemon sees them: translation of client ids,
//! isolation between tenants, and teardown.

use super::hostile::{call, session};
use crate::executor::sim::SimExecutor;
use crate::executor::{Executor, Resource};
use baton_ipc::protocol::{self as p, Op};
use std::sync::Arc;

fn array(s: &mut super::Session, width: u64, height: u64) -> u64 {
    let (r, v) = call(
        s,
        Op::ArrayCreate,
        &p::ArrayCreate {
            device: 0,
            format: 0x20,
            channels: 1,
            flags: 0,
            width,
            height,
            depth: 0,
        },
        &[],
    );
    assert_eq!(r, 0);
    v[0]
}

fn tex(array: u64) -> p::TexObjectCreate {
    p::TexObjectCreate {
        device: 0,
        has_view: 0,
        resource: p::ResourceDesc {
            kind: p::RESOURCE_ARRAY,
            handle: array,
            ..Default::default()
        },
        texture: Default::default(),
        view: Default::default(),
    }
}

fn copy_between(dst: p::CopySide, src: p::CopySide, w: u64, h: u64) -> p::Copy3D {
    p::Copy3D {
        dst,
        src,
        width: w,
        height: h,
        depth: 1,
        stream: p::legacy_stream(0),
        chunk: u32::MAX,
        _pad: 0,
    }
}

#[test]
fn objects_are_translated_checked_per_tenant_and_freed_at_teardown() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, Some(1 << 20));
    let mut b = session(&exec, 2, None);
    let arr = array(&mut a, 64, 16);
    assert_eq!(
        a.shared
            .memory_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        4096
    );

    // The texture's resource is the executor's array, not the client's id.
    let (r, v) = call(&mut a, Op::TexObjectCreate, &tex(arr), &[]);
    assert_eq!(r, 0);
    let t = v[0];
    let raw = a.arrays.arrays.get(arr).unwrap().raw;
    assert_ne!(raw, arr, "ids and executor handles differ in this test");
    assert_eq!(exec.texture_resource(t), Some(Resource::Array(raw)));
    let mut surf = p::SurfObjectCreate {
        device: 0,
        _pad: 0,
        resource: tex(arr).resource,
    };
    let (r, v) = call(&mut a, Op::SurfObjectCreate, &surf, &[]);
    assert_eq!(r, 0);
    let s = v[0];

    // Another tenant can neither use nor destroy A's array and objects.
    assert_eq!(
        call(&mut b, Op::ArrayDestroy, &p::ObjectId { id: arr }, &[]).0,
        400
    );
    assert_eq!(call(&mut b, Op::TexObjectCreate, &tex(arr), &[]).0, 400);
    assert_eq!(
        call(&mut b, Op::TexObjectDestroy, &p::ObjectId { id: t }, &[]).0,
        1
    );
    assert_eq!(
        call(&mut b, Op::SurfObjectDestroy, &p::ObjectId { id: s }, &[]).0,
        1
    );
    let side = p::CopySide {
        kind: p::SIDE_ARRAY,
        addr: arr,
        ..Default::default()
    };
    let b_mem = {
        let (r, v) = call(
            &mut b,
            Op::MemAlloc,
            &p::MemAlloc {
                device: 0,
                _pad: 0,
                bytes: 4096,
            },
            &[],
        );
        assert_eq!(r, 0);
        v[0]
    };
    let dev = p::CopySide {
        kind: p::SIDE_DEVICE,
        addr: b_mem,
        pitch: 256,
        ..Default::default()
    };
    assert_eq!(
        call(&mut b, Op::Copy3D, &copy_between(dev, side, 256, 16), &[]).0,
        400,
        "reading another tenant's array"
    );
    // A's own copy out of its array, past its edge, is refused; within it, done.
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
    let a_dev = p::CopySide { addr: v[0], ..dev };
    assert_eq!(
        call(&mut a, Op::Copy3D, &copy_between(a_dev, side, 256, 17), &[]).0,
        1
    );
    assert_eq!(
        call(&mut a, Op::Copy3D, &copy_between(a_dev, side, 256, 16), &[]).0,
        0
    );
    // Device memory the tenant does not own cannot back a texture or a copy.
    let foreign = p::CopySide { addr: b_mem, ..dev };
    assert_eq!(
        call(
            &mut a,
            Op::Copy3D,
            &copy_between(foreign, side, 256, 1),
            &[]
        )
        .0,
        1
    );
    surf.resource = p::ResourceDesc {
        kind: p::RESOURCE_PITCH2D,
        handle: b_mem,
        format: 0x20,
        channels: 1,
        width: 4,
        height: 4,
        pitch: 256,
        flags: 0,
    };
    let mut pitched = tex(0);
    pitched.resource = surf.resource;
    assert_eq!(call(&mut a, Op::TexObjectCreate, &pitched, &[]).0, 1);

    // A destroyed array is gone; teardown frees the rest.
    let second = array(&mut a, 8, 8);
    assert_eq!(
        call(&mut a, Op::ArrayDestroy, &p::ObjectId { id: second }, &[]).0,
        0
    );
    assert_eq!(
        call(&mut a, Op::ArrayDestroy, &p::ObjectId { id: second }, &[]).0,
        400
    );
    assert_eq!(exec.array_objects(), (1, 1, 1));
    a.teardown();
    b.teardown();
    assert_eq!(exec.array_objects(), (0, 0, 0));
    let (free, total) = exec.mem_info(0).unwrap();
    assert_eq!(free, total, "teardown freed every array");
}

/// An array command with a random body whose first words are often small (plausible ids,
/// offsets and sizes).
fn command() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    super::hostile::forged_command(70..=76, 400, 3)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// No sequence of forged array commands crashes the daemon or outlives teardown.
    #[test]
    fn forged_array_commands_never_crash_or_leak(cmds in proptest::collection::vec(command(), 1..40)) {
        let exec = Arc::new(SimExecutor::new());
        let mut s = session(&exec, 9, Some(64 << 20));
        let arr = array(&mut s, 16, 4);
        let _ = call(&mut s, Op::TexObjectCreate, &tex(arr), &[]);
        for c in &cmds {
            let _ = s.handle(c);
        }
        s.teardown();
        proptest::prop_assert_eq!(exec.array_objects(), (0, 0, 0));
        let (free, total) = exec.mem_info(0).unwrap();
        proptest::prop_assert_eq!(free, total);
    }
}
