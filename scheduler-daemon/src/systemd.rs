//! systemd integration: readiness and watchdog notifications (`Type=notify`, `WatchdogSec=`).
//! The protocol is one datagram per message to `$NOTIFY_SOCKET`; no library is needed for that.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = msg.as_bytes();
    let path = std::path::PathBuf::from(path);
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

/// Tells systemd the daemon is serving, and starts the watchdog pings it asked for.
pub fn ready() {
    notify("READY=1\nSTATUS=serving clients");
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let period = Duration::from_micros(usec / 2);
    let _ = std::thread::Builder::new()
        .name("baton-watchdog".into())
        .spawn(move || loop {
            notify("WATCHDOG=1");
            std::thread::sleep(period);
        });
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
