//! JIT linking as the daemon sees it: blobs decoded and validated, linked images read back in
//! pieces, isolation between tenants, and refusals.

use super::hostile::{call, session, IMAGE};
use crate::executor::sim::SimExecutor;
use baton_ipc::protocol::{self as p, Op};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn payload(s: &super::Session) -> Vec<u8> {
    let slot = s.region.reply(0).unwrap();
    let n = slot.payload_len.load(Ordering::Relaxed) as usize;
    slot.payload[..n].to_vec()
}

fn request(inputs: &[&[u8]], options: Vec<(u32, u64)>) -> p::LinkRequest {
    p::LinkRequest {
        options,
        inputs: inputs
            .iter()
            .map(|d| p::LinkInput {
                kind: 1,
                name: b"in.ptx".to_vec(),
                options: vec![(0, 64)],
                data: d.to_vec(),
            })
            .collect(),
    }
}

fn complete(s: &mut super::Session, req: &[u8]) -> (u32, [u64; 4]) {
    let blob = s.shared.add_blob(req.to_vec());
    call(
        s,
        Op::LinkComplete,
        &p::LinkComplete {
            device: 0,
            _pad: 0,
            blob,
        },
        &[],
    )
}

#[test]
fn linked_image_is_read_back_in_pieces_and_loads() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let second: &[u8] = b"//baton-sim\nkernel other 8\n";
    let (r, v) = complete(&mut a, &request(&[IMAGE, second], vec![(12, 1)]).encode());
    assert_eq!(r, 0);
    let (id, result, size, info_len) = (v[0], v[1], v[2], v[3]);
    assert_eq!(result, 0);
    assert_ne!(id, 0);
    let pay = payload(&a);
    assert_eq!(f32::from_le_bytes(pay[..4].try_into().unwrap()), 0.5);
    assert_eq!(&pay[4..4 + info_len as usize], b"sim: linked 2 inputs");
    let mut image = Vec::new();
    while (image.len() as u64) < size {
        let (r, v) = call(
            &mut a,
            Op::LinkRead,
            &p::LinkRead {
                link: id,
                offset: image.len() as u64,
            },
            &[],
        );
        assert_eq!(r, 0);
        assert!(v[0] > 0);
        image.extend_from_slice(&payload(&a));
    }
    assert_eq!(
        image,
        b"//baton-sim\nkernel fill 8 4 4\nkernel other 8\n\0".to_vec()
    );
    // Reading past the end is refused; another tenant cannot read or drop the image.
    let past = p::LinkRead {
        link: id,
        offset: size + 1,
    };
    assert_ne!(call(&mut a, Op::LinkRead, &past, &[]).0, 0);
    let mut b = session(&exec, 2, None);
    let read = p::LinkRead {
        link: id,
        offset: 0,
    };
    assert_ne!(call(&mut b, Op::LinkRead, &read, &[]).0, 0);
    assert_ne!(call(&mut b, Op::LinkDestroy, &p::ObjectId { id }, &[]).0, 0);
    // The linked image loads as a module.
    let blob = a.shared.add_blob(image);
    let load = p::LoadModule {
        device: 0,
        kind: 0,
        blob,
        jit: 0,
        _pad: 0,
    };
    let (r, v) = call(&mut a, Op::LoadModule, &load, &[]);
    assert_eq!((r, v[1]), (0, 0));
    assert_ne!(v[0], 0);
    assert_eq!(call(&mut a, Op::LinkDestroy, &p::ObjectId { id }, &[]).0, 0);
    assert_ne!(call(&mut a, Op::LinkRead, &read, &[]).0, 0);
}

#[test]
fn link_failures_come_back_with_the_error_log() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let (r, v) = complete(&mut a, &request(&[b"not an image"], Vec::new()).encode());
    assert_eq!(r, 0);
    assert_eq!(v[0], 0);
    assert_ne!(v[1], 0);
    let pay = payload(&a);
    assert_eq!(
        &pay[4 + v[3] as usize..],
        b"sim: input 0 is not a simulator image"
    );
}

#[test]
fn malformed_or_unsupported_requests_are_refused() {
    let exec = Arc::new(SimExecutor::new());
    let mut a = session(&exec, 1, None);
    let mut bytes = request(&[IMAGE], Vec::new()).encode();
    bytes.push(7);
    assert_eq!(
        complete(&mut a, &bytes).0,
        1,
        "trailing bytes: invalid value"
    );
    // A pointer-valued option (CU_JIT_GLOBAL_SYMBOL_ADDRESSES) never reaches the driver.
    let bytes = request(&[IMAGE], vec![(18, 0x1000)]).encode();
    assert_eq!(complete(&mut a, &bytes).0, 801, "not supported");
    // An unknown blob, or one already consumed.
    let (r, _) = call(
        &mut a,
        Op::LinkComplete,
        &p::LinkComplete {
            device: 0,
            _pad: 0,
            blob: 12345,
        },
        &[],
    );
    assert_eq!(r, 400);
    // Linked images a client never drops are bounded.
    let ok = request(&[IMAGE], Vec::new()).encode();
    for _ in 0..p::LINK_MAX_PENDING {
        let (r, v) = complete(&mut a, &ok);
        assert_eq!((r, v[1]), (0, 0));
    }
    assert_eq!(complete(&mut a, &ok).0, 2, "out of memory");
}
