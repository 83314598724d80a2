//! Process-shared futex wait/wake on an [`AtomicU32`] that may live in shared memory.
//!
//! These are thin wrappers over `futex(2)` with `FUTEX_WAIT` / `FUTEX_WAKE` and *without*
//! `FUTEX_PRIVATE_FLAG`, so the kernel keys the wait queue on the backing page (inode + offset
//! for a `MAP_SHARED` memfd mapping) and a wake in one process reaches a waiter in another.
//!
//! A futex is only a hint: [`wait`] can return for no reason at all (spurious wake, signal,
//! a wake meant for someone else), so callers always re-check their condition in a loop. The
//! usual pattern is an *eventcount*: read the word, re-check the condition, then wait for the
//! word to change from the value read; the waker changes the word before calling [`wake`].
//!
//! Under `cfg(loom)` the syscall is replaced by a model: [`wait`] compares the word under a
//! model-wide lock and parks until a [`wake`] on the same word dequeues it. Timeouts are ignored,
//! so a lost wake-up shows up as a deadlock that loom reports.

use std::time::Duration;

#[cfg(loom)]
use loom::sync::atomic::AtomicU32;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU32;

/// Why [`wait`] returned. Every variant means "re-check your condition".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken by [`wake`] (or spuriously).
    Woken,
    /// The word did not hold `expected` when the kernel checked it, so no sleep happened.
    ValueChanged,
    /// The timeout elapsed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Sleeps while `*word == expected`, for at most `timeout` (`None`: no limit).
///
/// The comparison and the enqueue are atomic with respect to [`wake`]: if another thread or
/// process changes the word and then calls [`wake`], this call cannot miss it.
#[cfg(not(loom))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        // < 1e9, always fits.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr: *const libc::timespec = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: `word.as_ptr()` is a valid, 4-byte aligned u32 for the duration of the call (it comes
    // from a live reference). FUTEX_WAIT only reads it. `ts_ptr` is null or points at `ts`, which
    // outlives the call. The remaining arguments are ignored by FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return WaitResult::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitResult::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitResult::TimedOut,
        Some(libc::EINTR) => WaitResult::Interrupted,
        // EFAULT/EINVAL/ENOSYS cannot happen for a live, aligned reference; report a spurious
        // wake so the caller re-checks instead of trusting anything.
        _ => WaitResult::Woken,
    }
}

/// Wakes at most `n` waiters blocked in [`wait`] on `word`; returns how many were woken.
#[cfg(not(loom))]
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: `word.as_ptr()` is a valid, aligned u32 (from a live reference); FUTEX_WAKE does not
    // access memory through it, it only uses the address as a key. Other arguments are ignored.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(rc).unwrap_or(0)
}

/// Loom model of `FUTEX_WAIT`: the word is compared under a model-wide lock (as the kernel does
/// under its hash-bucket lock) and the thread parks until a [`wake`] on the same word removes it
/// from the queue. Timeouts are ignored on purpose: a lost wake-up becomes a loom deadlock.
#[cfg(loom)]
pub fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> WaitResult {
    use std::sync::atomic::Ordering;
    let key = word as *const AtomicU32 as usize;
    let me = loom::thread::current().id();
    {
        let mut queue = model::QUEUE.lock().unwrap();
        if word.load(Ordering::Relaxed) != expected {
            return WaitResult::ValueChanged;
        }
        queue.push((key, loom::thread::current()));
    }
    loop {
        loom::thread::park();
        let queue = model::QUEUE.lock().unwrap();
        if !queue.iter().any(|(k, t)| *k == key && t.id() == me) {
            return WaitResult::Woken;
        }
    }
}

/// Loom model of `FUTEX_WAKE`: dequeues and unparks up to `n` waiters on `word`.
#[cfg(loom)]
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    let key = word as *const AtomicU32 as usize;
    let mut queue = model::QUEUE.lock().unwrap();
    let mut woken = 0;
    let mut i = 0;
    while i < queue.len() && woken < n as usize {
        if queue[i].0 == key {
            queue.remove(i).1.unpark();
            woken += 1;
        } else {
            i += 1;
        }
    }
    woken
}

#[cfg(loom)]
mod model {
    loom::lazy_static! {
        /// Waiters of the current model execution: (word address, thread).
        pub(super) static ref QUEUE: loom::sync::Mutex<Vec<(usize, loom::thread::Thread)>> =
            loom::sync::Mutex::new(Vec::new());
    }
}

/// Wakes every waiter blocked in [`wait`] on `word`; returns how many were woken.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, u32::MAX)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn value_changed_returns_immediately() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 4, None), WaitResult::ValueChanged);
    }

    #[test]
    fn times_out() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        assert_eq!(
            wait(&w, 0, Some(Duration::from_millis(20))),
            WaitResult::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn huge_timeout_is_clamped_not_rejected() {
        let w = AtomicU32::new(1);
        // Value differs, so this returns at once; the point is that the conversion does not panic.
        assert_eq!(wait(&w, 0, Some(Duration::MAX)), WaitResult::ValueChanged);
    }

    #[test]
    fn wake_with_no_waiters_is_zero() {
        let w = AtomicU32::new(0);
        assert_eq!(wake(&w, 1), 0);
        assert_eq!(wake_all(&w), 0);
    }

    #[test]
    fn wakes_another_thread() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(10)));
            }
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(30));
        w.store(1, Ordering::Release);
        wake_all(&w);
        assert!(t.join().unwrap() < Duration::from_secs(5));
    }
}
