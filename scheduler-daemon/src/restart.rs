//! Starting over after a kernel fault the driver cannot reset in place.
//!
//! The driver documents the context-ending errors (an illegal address, a trap, ...) as leaving
//! the *process* unusable: on the H100 with driver 580, `cuDevicePrimaryCtxReset` succeeds
//! after one, but retaining the primary context again fails with the same error. So when the
//! in-place reset fails, batond replaces itself: it `exec`s its own binary with the same
//! arguments, handing over the listening socket (its descriptor number in
//! `BATON_LISTEN_FD`) and its fault count (`BATON_FAULTS_BEFORE`). The process id stays the
//! same (systemd's main PID, the watchdog), the socket never stops accepting (clients that
//! connect meanwhile wait in its backlog), and the new image starts with a fresh driver.
//! Every other descriptor is close-on-exec, so the clients of the faulted context see their
//! connection end, which the shim answers with CUDA errors.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixListener;

/// Carries the listening socket's descriptor across the exec.
pub const LISTEN_FD_VAR: &str = "BATON_LISTEN_FD";
/// Carries the number of kernel faults seen before the exec (for status and metrics).
pub const FAULTS_VAR: &str = "BATON_FAULTS_BEFORE";

/// The listening socket a previous image of this process handed over, if any. (The variables
/// stay in the environment: batond starts no programs, and the next exec replaces them.)
pub fn inherited_listener() -> Option<UnixListener> {
    let v = std::env::var(LISTEN_FD_VAR).ok()?;
    let fd: RawFd = v.parse().ok().filter(|&fd| fd > 2)?;
    // SAFETY: the previous image of this process put the descriptor number of its listening
    // socket in the variable and kept it open across exec; nothing else owns it.
    let l = unsafe { UnixListener::from_raw_fd(fd) };
    // A descriptor that is not a listening unix socket would fail here: refuse it.
    l.local_addr().ok()?;
    set_cloexec(fd, true).ok()?;
    Some(l)
}

/// Faults counted by previous images of this process.
pub fn faults_before() -> u64 {
    std::env::var(FAULTS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns; F_GETFD/F_SETFD touch only its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Replaces this process with a fresh image of batond serving `listener`. Returns only if
/// that failed, with the reason.
pub fn exec_self(listener: &UnixListener, faults: u64) -> String {
    let fd = listener.as_raw_fd();
    if let Err(e) = set_cloexec(fd, false) {
        return format!("keeping the socket open across exec: {e}");
    }
    let cstr = |a: OsString| std::ffi::CString::new(a.into_vec()).unwrap_or_default();
    let args: Vec<std::ffi::CString> = std::env::args_os().map(cstr).collect();
    // The environment is passed explicitly: other threads still run, and changing the
    // process's own environment under them is not safe.
    let mut env: Vec<std::ffi::CString> = std::env::vars_os()
        .filter(|(k, _)| k != LISTEN_FD_VAR && k != FAULTS_VAR)
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            cstr(k)
        })
        .collect();
    env.push(cstr(format!("{LISTEN_FD_VAR}={fd}").into()));
    env.push(cstr(format!("{FAULTS_VAR}={faults}").into()));
    let exe = c"/proc/self/exe";
    let err = match nix::unistd::execve(exe, &args, &env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = set_cloexec(fd, true);
    format!("exec /proc/self/exe: {err}")
}
