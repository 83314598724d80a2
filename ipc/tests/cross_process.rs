//! Cross-process tests: the parent creates a memfd [`SharedRegion`], hands the fd to a child (this
//! same test binary re-run with `BATON_IPC_CHILD=<role>`, the fd inherited across exec), and the
//! two talk through futexes and the ring. Proves that futex wake-ups cross process boundaries
//! (a private futex would never reach the other process: the waits below would hit their 30 s
//! timeouts and the child's wake loop would never see a woken waiter).
#![cfg(not(loom))]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use baton_ipc::futex::{self, WaitResult};
use baton_ipc::ring::{Consumer, Producer, RingLayout};
use baton_ipc::shm::SharedRegion;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

const ROLE: &str = "BATON_IPC_CHILD";
const FD: &str = "BATON_IPC_CHILD_FD";
const LEN: &str = "BATON_IPC_CHILD_LEN";
const LONG: Duration = Duration::from_secs(30);
const PROMPT: Duration = Duration::from_secs(10);
const RING_CAPACITY: u32 = 16;
const BURST: u32 = 300;

fn spawn_child(role: &str, region: &SharedRegion) -> Child {
    // A duplicate without close-on-exec, so the child inherits it under the same number.
    let fd = region.fd().try_clone_to_owned().unwrap();
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_main", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(FD, fd.as_raw_fd().to_string())
        .env(LEN, region.len().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(fd);
    child
}

fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two futex words on separate cache lines at the start of the region.
fn words(region: &SharedRegion) -> (&AtomicU32, &AtomicU32) {
    assert!(region.len() >= 128);
    // SAFETY: the mapping is live for the borrow of `region`, page-aligned, and at least 128
    // bytes; AtomicU32 is valid for any bits and both processes only touch these words atomically.
    unsafe {
        (
            &*region.as_ptr().cast::<AtomicU32>(),
            &*region.as_ptr().add(64).cast::<AtomicU32>(),
        )
    }
}

/// Entry point of the child; a no-op in a normal test run.
#[test]
fn child_main() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let fd: RawFd = std::env::var(FD).unwrap().parse().unwrap();
    let len: usize = std::env::var(LEN).unwrap().parse().unwrap();
    // SAFETY: the parent left this descriptor open across exec for us, and nothing else in this
    // process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let region = SharedRegion::map(fd, len, None).unwrap();
    match role.as_str() {
        "futex" => child_futex(&region),
        "ring" => child_ring(&region),
        other => panic!("unknown role {other}"),
    }
}

fn child_futex(region: &SharedRegion) {
    let (to_parent, to_child) = words(region);
    // Wake without changing the word until the kernel reports it woke someone: that waiter can
    // only be the parent, blocked in FUTEX_WAIT in another process.
    let start = Instant::now();
    while futex::wake(to_parent, 1) == 0 {
        assert!(
            start.elapsed() < PROMPT,
            "parent never showed up as a futex waiter"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    to_parent.store(1, Ordering::Release);
    futex::wake_all(to_parent);
    // Now the other direction.
    let start = Instant::now();
    while to_child.load(Ordering::Acquire) == 0 {
        futex::wait(to_child, 0, Some(LONG));
        assert!(start.elapsed() < LONG);
    }
    assert!(
        start.elapsed() < PROMPT,
        "parent's wake took {:?}",
        start.elapsed()
    );
}

#[test]
fn futex_wakes_across_processes() {
    let region = SharedRegion::create("baton-xproc-futex", 4096).unwrap();
    let (to_parent, to_child) = words(&region);
    let child = spawn_child("futex", &region);
    let start = Instant::now();
    let mut woken = 0;
    while to_parent.load(Ordering::Acquire) == 0 {
        if futex::wait(to_parent, 0, Some(LONG)) == WaitResult::Woken {
            woken += 1;
        }
        assert!(start.elapsed() < LONG, "child never woke us");
    }
    assert!(woken >= 1);
    assert!(start.elapsed() < PROMPT, "took {:?}", start.elapsed());
    // Let the child get to sleep, then wake it.
    std::thread::sleep(Duration::from_millis(100));
    to_child.store(1, Ordering::Release);
    futex::wake_all(to_child);
    finish(child);
}

fn burst_message(i: u32) -> Vec<u8> {
    let len = 1 + (i as usize * 97) % 400;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn child_ring(region: &SharedRegion) {
    // SAFETY: the parent initialised a ring over this whole region before spawning us, and the
    // mapping outlives `p`.
    let p = unsafe { Producer::attach(region.as_ptr(), region.len()) }.unwrap();
    let parent = nix::unistd::getppid();
    let alive = move || nix::unistd::getppid() == parent;
    // The parent is asleep on the doorbell by now.
    std::thread::sleep(Duration::from_millis(200));
    p.push(b"hello", &alive).unwrap();
    // Far more than fits: we block on the `space` futex until the parent drains.
    for i in 0..BURST {
        p.push(&burst_message(i), &alive).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    p.push(b"bye", &alive).unwrap();
}

#[test]
fn ring_across_processes() {
    let len = RingLayout::bytes(RING_CAPACITY);
    let region = SharedRegion::create("baton-xproc-ring", len).unwrap();
    // SAFETY: fresh mapping of `len` bytes that outlives the consumer.
    let mut c = unsafe { Consumer::init(region.as_ptr(), len, RING_CAPACITY) }.unwrap();
    let child = spawn_child("ring", &region);
    let mut out = Vec::new();

    // The consumer sleeps on the doorbell; the child's push must wake it.
    let start = Instant::now();
    assert_eq!(c.wait(Duration::ZERO, LONG), Ok(true));
    assert!(
        start.elapsed() < PROMPT,
        "doorbell took {:?}",
        start.elapsed()
    );
    assert!(c.try_pop(&mut out).unwrap());
    assert_eq!(out, b"hello");

    // Let the child fill the ring and block, then drain.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..BURST {
        let start = Instant::now();
        while !c.try_pop(&mut out).unwrap() {
            assert_eq!(c.wait(Duration::from_micros(50), LONG), Ok(true));
            assert!(start.elapsed() < PROMPT);
        }
        assert_eq!(out, burst_message(i), "message {i}");
    }

    let start = Instant::now();
    assert_eq!(c.wait(Duration::ZERO, LONG), Ok(true));
    assert!(
        start.elapsed() < PROMPT,
        "doorbell took {:?}",
        start.elapsed()
    );
    assert!(c.try_pop(&mut out).unwrap());
    assert_eq!(out, b"bye");
    finish(child);
}
