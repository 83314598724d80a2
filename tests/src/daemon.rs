//! Starting the real `batond` on the simulated executor and waiting until it serves.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `batond --executor sim --socket <socket>`, with the loader variables of the test's own
/// environment removed and stdout discarded.
pub fn batond_sim(socket: &Path) -> Command {
    let mut c = Command::new(crate::workspace_bin("batond"));
    c.args(["--executor", "sim", "--socket"])
        .arg(socket)
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null());
    c
}

/// Waits up to 20 s for the daemon `child` to accept connections on `socket`; panics if it
/// exits first or does not start in time.
pub fn wait_for_socket(child: &mut Child, socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("batond exited before serving: {st}");
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `cmd` (a `batond` command line) and waits until it serves on `socket`.
pub fn spawn_serving(cmd: &mut Command, socket: &Path) -> Child {
    let mut child = cmd.spawn().unwrap();
    wait_for_socket(&mut child, socket);
    child
}

/// Panics with `what` and the command's stderr unless it exited successfully.
#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback TCP port that was free a moment ago, for a daemon's metrics endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
