//! Whether the daemon can serve: it answers a `Status` request on its control socket, and how
//! many GPUs it reports. A socket file alone proves nothing (a crashed daemon leaves it behind),
//! so the plugin asks.

use baton_ipc::control::{self, Request, Response};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one probe may take before the daemon counts as gone.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonHealth {
    /// The daemon answered and serves this many GPUs.
    Up { gpus: u32 },
    /// No answer (no socket, refused, timed out or garbled).
    Down,
}

impl DaemonHealth {
    /// Whether GPU `gpu` can serve its shares.
    pub fn gpu_healthy(self, gpu: u32) -> bool {
        matches!(self, DaemonHealth::Up { gpus } if gpu < gpus)
    }
}

/// Asks the daemon at `socket` (blocking, at most about [`PROBE_TIMEOUT`] per step).
pub fn probe(socket: &Path) -> Result<u32, String> {
    let conn = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    conn.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    control::send(&conn, &Request::Status, &[]).map_err(|e| format!("asking for status: {e}"))?;
    match control::recv::<Response>(&conn).map_err(|e| format!("reading status: {e}"))? {
        (Response::Status(r), _) => Ok(r.devices.len().min(u32::MAX as usize) as u32),
        // The daemon is alive, but without its status the plugin cannot count its GPUs. It
        // answers Status to its own user always, to root unless an entry `uid = 0` refuses
        // it, and to other uids only if the policy admits them.
        (Response::Error { message, .. }, _) => Err(format!(
            "the daemon refused Status to this uid (run the plugin as root or as the daemon's user): {message}"
        )),
        (other, _) => Err(format!("unexpected answer to Status: {other:?}")),
    }
}

/// [`probe`] as a [`DaemonHealth`], off the async runtime's threads.
pub async fn check(socket: &Path) -> DaemonHealth {
    let socket = socket.to_owned();
    match tokio::task::spawn_blocking(move || probe(&socket)).await {
        Ok(Ok(gpus)) => DaemonHealth::Up { gpus },
        Ok(Err(e)) => {
            if e.starts_with("the daemon refused") {
                tracing::warn!(error = %e, "daemon probe refused");
            } else {
                tracing::debug!(error = %e, "daemon probe failed");
            }
            DaemonHealth::Down
        }
        Err(_) => DaemonHealth::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A refusal is the daemon answering, but not with what the plugin needs: the probe fails
    /// and says which uid to run as.
    #[test]
    fn a_refused_status_names_the_uid_to_run_as() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.sock");
        let l = UnixListener::bind(&path).unwrap();
        let daemon = std::thread::spawn(move || {
            let (conn, _) = l.accept().unwrap();
            let (req, _) = control::recv::<Request>(&conn).unwrap();
            assert!(matches!(req, Request::Status));
            let refusal = Response::Error {
                code: 100,
                message: "refused by the daemon's policy: uid 5 is not admitted".into(),
            };
            control::send(&conn, &refusal, &[]).unwrap();
        });
        let e = probe(&path).unwrap_err();
        daemon.join().unwrap();
        assert!(
            e.contains("run the plugin as root or as the daemon's user"),
            "{e}"
        );
        assert!(e.contains("uid 5 is not admitted"), "{e}");
    }
}
