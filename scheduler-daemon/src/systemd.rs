//! systemd integration: readiness and watchdog notifications (`Type=notify`, `WatchdogSec=`).
//! The protocol is one datagram per message to `$NOTIFY_SOCKET`; no library is needed for that.
//!
//! The watchdog proves the daemon serves: each ping follows a health check that connects to
//! the control socket and gets a `status` answer, through the accept loop and a connection
//! thread like any client. A hung serving loop stops the pings, and systemd restarts batond.

use baton_ipc::control::{self, Request, Response};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = msg.as_bytes();
    let path = PathBuf::from(path);
    // An abstract socket name starts with '@'.
    let r = if let Some(name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(bytes, &a))
    } else {
        sock.send_to(bytes, &path)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Tells systemd the daemon is serving, and starts the watchdog it asked for.
pub fn ready(socket: &Path) {
    notify("READY=1\nSTATUS=serving clients");
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&u| u > 0)
    else {
        return;
    };
    let period = Duration::from_micros(usec / 2);
    let socket = socket.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("baton-watchdog".into())
        .spawn(move || watchdog(&socket, period));
}

/// Pings systemd every `period` while the daemon answers on `socket`.
fn watchdog(socket: &Path, period: Duration) {
    let mut failing = false;
    loop {
        let started = Instant::now();
        // Half the period for the answer: a ping must still go out within the period.
        match health_check(socket, period / 2) {
            Ok(()) => {
                if failing {
                    tracing::info!("health check answered again");
                    failing = false;
                }
                notify("WATCHDOG=1");
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, socket = %socket.display(), "health check failed: the daemon is not serving its socket; withholding the watchdog ping so systemd restarts it");
                    failing = true;
                }
            }
        }
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
}

/// Asks the daemon for its status over its own socket.
pub fn health_check(socket: &Path, timeout: Duration) -> Result<(), String> {
    let conn = UnixStream::connect(socket).map_err(|e| format!("connecting: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|_| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    control::send(&conn, &Request::Status, &[]).map_err(|e| format!("asking: {e}"))?;
    match control::recv::<Response>(&conn) {
        Ok((Response::Status(_), _)) => Ok(()),
        Ok((other, _)) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(format!("no answer within {timeout:?}: {e}")),
    }
}

/// Test hook in the accept loop: with `BATON_TEST_STALL_SERVING_AFTER_MS=N` in the daemon's
/// environment, the loop stops for good at its first connection N ms after start, as a hung
/// daemon would (the watchdog's test). Unset, it costs one load of a set `OnceLock`.
pub fn test_stall_point() {
    static AT: OnceLock<Option<Instant>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("BATON_TEST_STALL_SERVING_AFTER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(|ms| Instant::now() + Duration::from_millis(ms))
    });
    if let Some(at) = at {
        if Instant::now() >= *at {
            tracing::warn!("test hook: the serving loop stalls now");
            loop {
                std::thread::park();
            }
        }
    }
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("baton-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
