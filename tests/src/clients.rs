//! Client roles run in child processes: a test binary re-runs itself with one `#[ignore]`d
//! test selected, and that test does its work only when it finds itself started this way.

use std::ffi::c_void;
use std::io::BufRead;
use std::path::Path;
use std::process::Command;
use std::ptr::null_mut;

use crate::*;

/// Whether this process is a client started by [`command`].
pub fn is_child() -> bool {
    std::env::var_os("BATON_CHILD").is_some()
}

/// This test binary as a client running only the ignored test `name`, on the daemon at
/// `socket`.
pub fn command(name: &str, socket: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(baton_ipc::control::SOCKET_ENV, socket)
    .env("BATON_CHILD", "1");
    c
}

/// vecAdd over 1000 floats through the shim, checked element by element on the host.
pub fn vec_add_smoke() {
    init_client();
    let (_m, add, _, _) = load_kernels();
    let n = 1000;
    let (x, y) = (floats(n, 5), floats(n, 6));
    let [a, b, c] = [0; 3].map(|_| {
        let mut p = 0;
        cu!(cuMemAlloc_v2(&mut p, n * 4));
        p
    });
    cu!(cuMemcpyHtoD_v2(a, x.as_ptr() as *const c_void, n * 4));
    cu!(cuMemcpyHtoD_v2(b, y.as_ptr() as *const c_void, n * 4));
    cu!(launch_vec_add(add, a, b, c, n as i32, null_mut()));
    let mut out = vec![0f32; n];
    cu!(cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, c, n * 4));
    assert!(out
        .iter()
        .zip(x.iter().zip(&y))
        .all(|(o, (a, b))| *o == a + b));
}

/// Reads a client's output until a line contains `what`; panics with what it read if the
/// client exits first.
pub fn wait_for_line(out: &mut impl BufRead, what: &str) {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before {what}: {seen}"
        );
        if line.contains(what) {
            return;
        }
        seen.push_str(&line);
    }
}
