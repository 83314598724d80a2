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
        (other, _) => Err(format!("unexpected answer to Status: {other:?}")),
    }
}

/// [`probe`] as a [`DaemonHealth`], off the async runtime's threads.
pub async fn check(socket: &Path) -> DaemonHealth {
    let socket = socket.to_owned();
    match tokio::task::spawn_blocking(move || probe(&socket)).await {
        Ok(Ok(gpus)) => DaemonHealth::Up { gpus },
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "daemon probe failed");
            DaemonHealth::Down
        }
        Err(_) => DaemonHealth::Down,
    }
}
