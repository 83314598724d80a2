//! Whole-process behaviour: the real `batond` (simulated executor) with clients in child
//! processes, which re-run this test binary with one `#[ignore]`d client function selected.

use baton_ipc::control::{self, Request, Response, StatusReport};
use baton_tests::clients::command as client;
use baton_tests::*;
use std::ffi::c_void;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::ptr::null_mut;
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "baton-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let d = PathBuf::from(d.to_string_lossy().replace(['{', '}', ' ', ':', ','], ""));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, None)
    }

    /// A daemon with the policy file `config`.
    fn start_with(tag: &str, config: Option<&str>) -> Daemon {
        Daemon::spawn(tag, config, false, &[])
    }

    /// As [`Daemon::start_with`], with the daemon's log kept in [`Daemon::log`].
    fn start_logged(tag: &str, config: Option<&str>) -> Daemon {
        Daemon::spawn(tag, config, true, &[])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("batond.log")).unwrap_or_default()
    }

    fn spawn(tag: &str, config: Option<&str>, logged: bool, env: &[(&str, &str)]) -> Daemon {
        let dir = TempDir::new(tag);
        let socket = dir.0.join("baton.sock");
        let mut cmd = daemon::batond_sim(&socket);
        if let Some(text) = config {
            let path = dir.0.join("baton.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        let child = daemon::spawn_serving(
            cmd.envs(env.iter().copied()).stderr(if logged {
                Stdio::from(std::fs::File::create(dir.0.join("batond.log")).unwrap())
            } else {
                Stdio::null()
            }),
            &socket,
        );
        Daemon {
            child,
            socket,
            _dir: dir,
        }
    }

    fn status(&self) -> StatusReport {
        let c = UnixStream::connect(&self.socket).unwrap();
        control::send(&c, &Request::Status, &[]).unwrap();
        match control::recv::<Response>(&c).unwrap().0 {
            Response::Status(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Waits until `pred` holds for the daemon's status.
    fn wait_status(&self, what: &str, pred: impl Fn(&StatusReport) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status();
            if pred(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}; status {s:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_client(name: &str, socket: &Path) {
    let out = client(name, socket).output().unwrap();
    assert!(
        out.status.success(),
        "client {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `n` `client_smoke` programs at once (each checks its own results); all must succeed.
fn smoke_clients_at_once(n: usize, socket: &Path) {
    let children: Vec<_> = (0..n)
        .map(|_| {
            client("client_smoke", socket)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Reads a child's output until it says READY.
fn wait_ready(out: &mut impl BufRead) {
    clients::wait_for_line(out, "READY");
}

/// Reads an exporter's output until it says READY, and returns what followed `key` on the
/// line that carried it (the test harness may print the test's name on that line first).
fn exported(out: &mut impl BufRead, key: &str) -> String {
    let mut value = String::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "exporter exited");
        if let Some(at) = line.find(key) {
            value = line[at + key.len()..].trim().to_string();
        }
        if line.contains("READY") {
            return value;
        }
    }
}

#[test]
fn pinned_memory_across_processes() {
    let d = Daemon::start("pinned");
    run_client("client_pinned", &d.socket);
    d.wait_status("the client's session to end", |s| s.clients.is_empty());
}

#[test]
#[ignore = "run in a child process"]
fn client_pinned() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, add, fill, _) = load_kernels();
    let n = 4096usize;
    let mut host: *mut c_void = null_mut();
    cu!(cuMemHostAlloc(&mut host, n * 4 * 3, 2 /* DEVICEMAP */));
    // SAFETY: the allocation holds 3n floats.
    let h = unsafe { std::slice::from_raw_parts_mut(host as *mut f32, 3 * n) };
    let (x, y) = (floats(n, 3), floats(n, 4));
    h[..n].copy_from_slice(&x);
    h[n..2 * n].copy_from_slice(&y);
    h[2 * n..].fill(f32::NAN);
    let [a, b, c] = [0; 3].map(|_| {
        let mut p = 0;
        cu!(cuMemAlloc_v2(&mut p, n * 4));
        p
    });
    let (mut s1, mut s2) = (null_mut(), null_mut());
    cu!(cuStreamCreate(&mut s1, 1));
    cu!(cuStreamCreate(&mut s2, 1));
    let (mut e0, mut e1) = (null_mut(), null_mut());
    cu!(cuEventCreate(&mut e0, 0));
    cu!(cuEventCreate(&mut e1, 0));
    // SAFETY: never recorded.
    assert_eq!(
        // SAFETY: never recorded.
        unsafe { cuEventQuery(e1) },
        CUresult::CUDA_SUCCESS,
        "an event never recorded is complete"
    );
    cu!(cuEventRecord(e0, s1));
    cu!(cuMemcpyHtoDAsync_v2(a, host, n * 4, s1));
    // SAFETY: pointer arithmetic inside the allocation.
    cu!(cuMemcpyHtoDAsync_v2(
        b,
        (host as *mut f32).add(n) as *const c_void,
        n * 4,
        s1
    ));
    cu!(launch_vec_add(add, a, b, c, n as i32, s1));
    cu!(cuEventRecord(e1, s1));
    cu!(cuStreamWaitEvent(s2, e1, 0));
    // SAFETY: as above.
    cu!(cuMemcpyDtoHAsync_v2(
        (host as *mut f32).add(2 * n) as *mut c_void,
        c,
        n * 4,
        s2
    ));
    cu!(cuStreamSynchronize(s2));
    for i in 0..n {
        assert_eq!(h[2 * n + i], x[i] + y[i]);
    }
    cu!(cuEventSynchronize(e1));
    cu!(cuEventQuery(e1));
    let mut ms = -1.0f32;
    cu!(cuEventElapsedTime_v2(&mut ms, e0, e1));
    assert!(ms >= 0.0);
    // A stream whose work is done reports ready after at most a few queries.
    let mut tries = 0;
    loop {
        // SAFETY: valid stream.
        match unsafe { cuStreamQuery(s1) } {
            CUresult::CUDA_SUCCESS => break,
            CUresult::CUDA_ERROR_NOT_READY if tries < 1000 => tries += 1,
            other => panic!("cuStreamQuery: {}", other.0),
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    // Kernels write mapped pinned memory through its device pointer.
    let mut dp = 0;
    cu!(cuMemHostGetDevicePointer_v2(&mut dp, host, 0));
    cu!(launch_fill(fill, dp, 0xC0FFEE, n as i32, s1));
    cu!(cuStreamSynchronize(s1));
    // SAFETY: the allocation starts with n u32s.
    assert!(unsafe { std::slice::from_raw_parts(host as *const u32, n) }
        .iter()
        .all(|&w| w == 0xC0FFEE));

    // Memsets and device-to-device copies.
    cu!(cuMemsetD32_v2(a, 0x01020304, n));
    cu!(cuMemsetD8Async(b, 0xAB, 10, s2));
    cu!(cuMemcpyDtoD_v2(c, a, n * 4));
    let mut back = vec![0u32; n];
    cu!(cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, c, n * 4));
    assert!(back.iter().all(|&w| w == 0x01020304));
    let mut bytes = [0u8; 12];
    cu!(cuStreamSynchronize(s2));
    cu!(cuMemcpyDtoH_v2(bytes.as_mut_ptr() as *mut c_void, b, 12));
    assert_eq!(&bytes[..10], &[0xAB; 10]);
    assert_ne!(&bytes[10..], &[0xAB; 2]);
    // Unified copies tell pinned, pageable and device memory apart.
    let mut page = vec![0u32; n];
    cu!(cuMemcpy(page.as_mut_ptr() as u64, c, n * 4));
    assert!(page.iter().all(|&w| w == 0x01020304));

    for s in [s1, s2] {
        cu!(cuStreamDestroy_v2(s));
    }
    for e in [e0, e1] {
        cu!(cuEventDestroy_v2(e));
    }
    for d in [a, b, c] {
        cu!(cuMemFree_v2(d));
    }
    cu!(cuMemFreeHost(host));
    // SAFETY: already freed.
    assert_eq!(
        // SAFETY: already freed.
        unsafe { cuMemFreeHost(host) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
}

#[test]
fn killed_client_has_everything_freed() {
    let d = Daemon::start("kill");
    let mut child = client("client_hold_memory", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut BufReader::new(child.stdout.take().unwrap()));
    d.wait_status("the client to hold memory", |s| {
        s.clients.len() == 1 && s.clients[0].memory_bytes >= 64 << 20
    });
    child.kill().unwrap();
    child.wait().unwrap();
    d.wait_status("the killed client's session to be freed", |s| {
        s.clients.is_empty()
    });
    // The daemon goes on serving new clients.
    run_client("client_smoke", &d.socket);
}

#[test]
fn a_hung_client_does_not_stall_other_tenants() {
    let d = Daemon::start("hang");
    let mut hung = client("client_hang", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut BufReader::new(hung.stdout.take().unwrap()));
    // Its stream waits on a callback that never returns, and it reads nothing any more; other
    // tenants' programs still run to completion (each checks its results).
    smoke_clients_at_once(4, &d.socket);
    let pid = hung.id();
    assert!(d.status().clients.iter().any(|c| c.pid == pid));
    hung.kill().unwrap();
    hung.wait().unwrap();
    d.wait_status("the hung client's session to end", |s| s.clients.is_empty());
}

#[test]
#[ignore = "run in a child process"]
fn client_hang() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, _, fill, _) = load_kernels();
    unsafe extern "C" fn forever(_: *mut c_void) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, 4096));
    // Everything from here is posted without waiting for a reply.
    cu!(cuLaunchHostFunc(s, Some(forever), null_mut()));
    // Work queued behind the callback: it can never run.
    cu!(launch_fill(fill, p, 1, 1024, s));
    println!("READY");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[test]
#[ignore = "run in a child process"]
fn client_hold_memory() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, _, fill, _) = load_kernels();
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, 64 << 20));
    let mut host = null_mut();
    cu!(cuMemHostAlloc(&mut host, 1 << 20, 0));
    println!("READY");
    // Keep the GPU busy until killed.
    loop {
        cu!(launch_fill(fill, p, 1, 1024, null_mut()));
        cu!(cuMemcpyHtoD_v2(p, host, 4096));
    }
}

#[test]
#[ignore = "run in a child process"]
fn client_smoke() {
    if !is_child() {
        return;
    }
    clients::vec_add_smoke();
}

#[test]
fn dead_daemon_gives_errors_not_hangs() {
    let mut d = Daemon::start("dead");
    let mut child = client("client_outlive_daemon", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_ready(&mut out);
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "client hung after the daemon died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "client failed: {rest}\n{err}");
    assert!(
        err.contains("lost the connection to the Baton daemon"),
        "stderr: {err}"
    );
}

#[test]
#[ignore = "run in a child process"]
fn client_outlive_daemon() {
    if !is_child() {
        return;
    }
    init_client();
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, 4096));
    println!("READY");
    // Wait for the parent to kill the daemon (it closes our stdin afterwards).
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
    let start = Instant::now();
    // SAFETY: plain calls; each must fail rather than hang.
    let r = unsafe { cuCtxSynchronize() };
    assert_ne!(r, CUresult::CUDA_SUCCESS);
    let mut q = 0;
    // SAFETY: as above.
    let r2 = unsafe { cuMemAlloc_v2(&mut q, 4096) };
    assert_eq!(r2, CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn no_daemon_fails_the_first_call_with_one_line() {
    let out = client("client_no_daemon", Path::new("/nonexistent/baton.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ours: Vec<_> = err.lines().filter(|l| l.starts_with("baton:")).collect();
    assert_eq!(ours.len(), 1, "stderr: {err}");
    assert!(
        ours[0].contains("cannot reach the Baton daemon"),
        "{}",
        ours[0]
    );
}

#[test]
#[ignore = "run in a child process"]
fn client_no_daemon() {
    if !is_child() {
        return;
    }
    // SAFETY: plain calls.
    unsafe {
        assert_eq!(cuInit(0), CUresult::CUDA_ERROR_NO_DEVICE);
        assert_eq!(cuInit(0), CUresult::CUDA_ERROR_NO_DEVICE);
        let mut n = 0;
        assert_eq!(
            cuDeviceGetCount(&mut n),
            CUresult::CUDA_ERROR_NOT_INITIALIZED
        );
    }
}

#[test]
fn many_clients_at_once() {
    let d = Daemon::start("many");
    smoke_clients_at_once(64, &d.socket);
    d.wait_status("all sessions to end", |s| s.clients.is_empty());
}

fn has_nvidia_driver() -> bool {
    Path::new("/dev/nvidiactl").exists()
}

#[test]
fn without_a_driver_batond_and_baton_run_say_so() {
    if has_nvidia_driver() {
        return;
    }
    let dir = TempDir::new("nodriver");
    let out = Command::new(workspace_bin("batond"))
        .arg("--socket")
        .arg(dir.0.join("s.sock"))
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no NVIDIA driver found"), "batond said: {err}");

    let out = Command::new(workspace_bin("baton"))
        .args(["run", "--", "true"])
        .env(control::SOCKET_ENV, dir.0.join("run.sock"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no NVIDIA driver found"),
        "baton run said: {err}"
    );
}

#[test]
fn baton_status_lists_clients() {
    let d = Daemon::start("status");
    let mut child = client("client_hold_memory", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut BufReader::new(child.stdout.take().unwrap()));
    let out = Command::new(workspace_bin("baton"))
        .args(["status", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Baton Simulated GPU"), "{text}");
    assert!(text.contains("CLASS") && text.contains("normal"), "{text}");
    assert!(text.contains("policy passthrough"), "{text}");
    assert!(
        text.contains("INFLIGHT") && text.contains("DELAY-P99"),
        "{text}"
    );
    assert!(
        text.contains(&child.id().to_string()),
        "status should list the client's pid {}: {text}",
        child.id()
    );
}

#[test]
fn tracing_logs_each_call_with_arguments_and_result() {
    let d = Daemon::start("trace");
    let out = client("client_smoke", &d.socket)
        .env("BATON_TRACE", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("baton-trace["))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cuInit(0) -> CUDA_SUCCESS")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cuMemAlloc_v2(0x") && l.ends_with("-> CUDA_SUCCESS")),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.contains("cuLaunchKernel(")), "{err}");
}

#[test]
fn memory_quotas_are_exact_and_shape_the_tenants_view() {
    let d = Daemon::start_with("quota", Some("[default]\nmemory_quota = \"64MiB\"\n"));
    run_client("client_quota", &d.socket);
}

#[test]
#[ignore = "run in a child process"]
fn client_quota() {
    if !is_child() {
        return;
    }
    init_client();
    let (mut free, mut total) = (0, 0);
    cu!(cuMemGetInfo_v2(&mut free, &mut total));
    assert_eq!((free, total), (64 << 20, 64 << 20));
    let mut a = 0;
    cu!(cuMemAlloc_v2(&mut a, 48 << 20));
    let mut b = 0;
    // SAFETY: out-pointer to a local; past the quota this must fail for this tenant only.
    let over = unsafe { cuMemAlloc_v2(&mut b, 32 << 20) };
    assert_eq!(over, CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    cu!(cuMemGetInfo_v2(&mut free, &mut total));
    assert_eq!((free, total), (16 << 20, 64 << 20));
    cu!(cuMemAlloc_v2(&mut b, 16 << 20));
    cu!(cuMemFree_v2(a));
    cu!(cuMemAlloc_v2(&mut a, 32 << 20));
}

#[test]
fn clients_the_policy_refuses_get_a_clear_error() {
    let d = Daemon::start_with("refuse", Some("[default]\nadmit = false\n"));
    let out = client("client_no_daemon", &d.socket).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("refused by the daemon's policy"),
        "stderr: {err}"
    );
}

#[test]
fn metrics_endpoint_reports_per_tenant_figures() {
    let port = daemon::free_port();
    let config = format!(
        "[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n[default]\nmemory_quota = \"1GiB\"\n"
    );
    let d = Daemon::start_with("metrics", Some(&config));
    let mut child = client("client_hold_memory", &d.socket)
        .env("BATON_TENANT", "alice")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut BufReader::new(child.stdout.take().unwrap()));
    d.wait_status("the client to hold memory", |s| {
        s.clients.len() == 1 && s.clients[0].memory_bytes >= 64 << 20
    });
    let page = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("\nbaton_clients 1\n"), "{page}");
    let mem = page
        .lines()
        .find(|l| l.starts_with("baton_tenant_memory_bytes{tenant=\"alice\""))
        .unwrap_or_else(|| panic!("{page}"));
    let bytes: u64 = mem.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes >= 64 << 20, "{mem}");
    assert!(
        page.contains("baton_tenant_memory_quota_bytes{tenant=\"alice\""),
        "{page}"
    );
    assert!(page.contains(" 1073741824\n"), "{page}");
    assert!(
        page.contains("\nbaton_policy_info{policy=\"passthrough\"} 1\n"),
        "{page}"
    );
    assert!(
        page.contains("\nbaton_tenant_queue_delay_seconds_count{tenant=\"alice\""),
        "{page}"
    );
    assert!(page.contains("\nbaton_context_faults_total 0\n"), "{page}");
    // Passthrough tracks no work: no in-flight figures.
    assert!(!page.contains("\nbaton_tenant_in_flight_items{"), "{page}");
}

#[test]
fn priority_policy_schedules_clients_and_reports_their_figures() {
    let d = Daemon::start_with(
        "priority",
        Some("[daemon]\npolicy = \"priority\"\nmetrics_listen = \"off\"\n[default]\nclass = \"high\"\n"),
    );
    // Two classes at once, each checking its results: both finish.
    let runs: Vec<_> = ["high", "low"]
        .map(|class| {
            client("client_smoke", &d.socket)
                .env("BATON_CLASS", class)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .into_iter()
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut child = client("client_hold_memory", &d.socket)
        .env("BATON_CLASS", "low")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut BufReader::new(child.stdout.take().unwrap()));
    // The two earlier clients' sessions may still be ending: look this one up by its pid.
    let pid = child.id();
    d.wait_status("the client's work to be measured", |s| {
        let Some(c) = s.clients.iter().find(|c| c.pid == pid) else {
            return false;
        };
        c.queue_delay.count > 0
            && c.queue_delay.p99_ns >= c.queue_delay.p50_ns
            && c.gpu_time_ns.is_some_and(|t| t > 0)
            && c.queued.is_some()
            && c.in_flight.is_some()
            // The only client with measured GPU time has all of it.
            && c.gpu_share == Some(1.0)
    });
    let s = d.status();
    assert_eq!(s.policy, "priority");
    let c = s.clients.iter().find(|c| c.pid == pid).expect("listed");
    assert_eq!(c.class, "low");
    let out = Command::new(workspace_bin("baton"))
        .args(["status", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("policy priority"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains(&child.id().to_string()))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(" 100 "), "GPU share of the only client: {row}");
    d.wait_status("the killed client's session to end", |s| {
        s.clients.is_empty()
    });
}

// ---- Sharing memory and events between client processes (`cuIpc*`, exported allocations).

const IPC_WORDS: usize = 1024;
const VMM_BYTES: usize = 2 << 20;

fn hex(b: &[std::ffi::c_char]) -> String {
    b.iter().map(|&c| format!("{:02x}", c as u8)).collect()
}

fn unhex(s: &str) -> [std::ffi::c_char; 64] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap() as _)
}

fn vmm_prop() -> CUmemAllocationProp {
    // SAFETY: plain data; zero is valid for every field.
    let mut prop: CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    prop.requestedHandleTypes = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop
}

/// Reserves, maps and opens `handle` for read/write on GPU 0: the importer's and the
/// exporter's way to reach an allocation.
fn map_rw(handle: CUmemGenericAllocationHandle) -> CUdeviceptr {
    let mut va = 0;
    cu!(cuMemAddressReserve(&mut va, VMM_BYTES, 0, 0, 0));
    cu!(cuMemMap(va, VMM_BYTES, 0, handle, 0));
    // SAFETY: plain data; zero is valid for every field.
    let mut access: CUmemAccessDesc = unsafe { std::mem::zeroed() };
    access.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    access.flags = CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    cu!(cuMemSetAccess(va, VMM_BYTES, &access, 1));
    va
}

#[test]
fn ipc_handles_cross_processes() {
    let d = Daemon::start("ipc");
    let mut exporter = client("client_ipc_export", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(exporter.stdout.take().unwrap());
    let handles = exported(&mut out, "HANDLES ");
    let parts: Vec<&str> = handles.split(' ').collect();
    let importer = |name: &str| {
        let out = client(name, &d.socket)
            .env("BATON_IPC_MEM", parts[0])
            .env("BATON_IPC_EVENT", parts[1])
            .env("BATON_IPC_FD", parts[2])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    importer("client_ipc_import");
    // The exporter exits without freeing; its handles then open nothing.
    drop(exporter.stdin.take());
    assert!(exporter.wait().unwrap().success());
    d.wait_status("the exporter's session to end", |s| s.clients.is_empty());
    importer("client_ipc_after_exit");
    d.wait_status("every session to end", |s| s.clients.is_empty());
}

#[test]
#[ignore = "run in a child process"]
fn client_ipc_export() {
    if !is_child() {
        return;
    }
    init_client();
    let mut buf = 0;
    cu!(cuMemAlloc_v2(&mut buf, IPC_WORDS * 4));
    cu!(cuMemsetD32_v2(buf, 0xabcd_1234, IPC_WORDS));
    // SAFETY: plain data, filled in by the call.
    let mut mh: CUipcMemHandle = unsafe { std::mem::zeroed() };
    cu!(cuIpcGetMemHandle(&mut mh, buf));
    let mut ev = null_mut();
    cu!(cuEventCreate(
        &mut ev, 0x6 /* DISABLE_TIMING | INTERPROCESS */
    ));
    cu!(cuEventRecord(ev, null_mut()));
    // SAFETY: plain data, filled in by the call.
    let mut eh: CUipcEventHandle = unsafe { std::mem::zeroed() };
    cu!(cuIpcGetEventHandle(&mut eh, ev));
    // An event that cannot be shared, and a handle type Baton does not serve.
    let mut plain = null_mut();
    cu!(cuEventCreate(&mut plain, 0));
    // SAFETY: as above.
    let mut unused: CUipcEventHandle = unsafe { std::mem::zeroed() };
    // SAFETY: valid arguments; the call must refuse them.
    let r = unsafe { cuIpcGetEventHandle(&mut unused, plain) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_HANDLE);
    let mut phys = 0;
    cu!(cuMemCreate(&mut phys, VMM_BYTES, &vmm_prop(), 0));
    let va = map_rw(phys);
    cu!(cuMemsetD32_v2(va, 0x77, VMM_BYTES / 4));
    let mut fd: std::ffi::c_int = -1;
    cu!(cuMemExportToShareableHandle(
        (&mut fd as *mut std::ffi::c_int).cast(),
        phys,
        CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
        0
    ));
    let mut fabric = [0u8; 64];
    // SAFETY: a 64-byte buffer, larger than any handle; the call must refuse the type.
    let r = unsafe {
        cuMemExportToShareableHandle(
            fabric.as_mut_ptr().cast(),
            phys,
            CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_FABRIC,
            0,
        )
    };
    assert_eq!(r, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    // Another process reaches the descriptor through /proc, as it would after SCM_RIGHTS.
    println!(
        "HANDLES {} {} /proc/{}/fd/{fd}",
        hex(&mh.reserved),
        hex(&eh.reserved),
        std::process::id()
    );
    println!("READY");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn env_handles() -> (CUipcMemHandle, CUipcEventHandle, String) {
    let var = |n| std::env::var(n).unwrap();
    (
        CUipcMemHandle {
            reserved: unhex(&var("BATON_IPC_MEM")),
        },
        CUipcEventHandle {
            reserved: unhex(&var("BATON_IPC_EVENT")),
        },
        var("BATON_IPC_FD"),
    )
}

#[test]
#[ignore = "run in a child process"]
fn client_ipc_import() {
    if !is_child() {
        return;
    }
    init_client();
    let (mh, eh, fd_path) = env_handles();
    let mut ptr = 0;
    cu!(cuIpcOpenMemHandle_v2(
        &mut ptr, mh, 1 /* LAZY_ENABLE_PEER_ACCESS */
    ));
    let (mut base, mut size) = (0, 0);
    cu!(cuMemGetAddressRange_v2(&mut base, &mut size, ptr));
    assert_eq!((base, size), (ptr, IPC_WORDS * 4));
    let mut ev = null_mut();
    cu!(cuIpcOpenEventHandle(&mut ev, eh));
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    cu!(cuStreamWaitEvent(s, ev, 0));
    cu!(cuEventQuery(ev));
    let mut words = vec![0u32; IPC_WORDS];
    cu!(cuMemcpyDtoH_v2(
        words.as_mut_ptr().cast(),
        ptr,
        IPC_WORDS * 4
    ));
    assert!(
        words.iter().all(|&w| w == 0xabcd_1234),
        "the exporter's data"
    );
    // This process writes; the shared event orders it.
    cu!(cuMemsetD8Async(ptr, 9, 16, s));
    cu!(cuEventRecord(ev, s));
    cu!(cuEventSynchronize(ev));
    // Not this process's memory to free.
    // SAFETY: plain value arguments.
    let r = unsafe { cuMemFree_v2(ptr) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
    cu!(cuIpcCloseMemHandle(ptr));
    // SAFETY: as above; a second close has nothing to close.
    let r = unsafe { cuIpcCloseMemHandle(ptr) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
    // A forged handle: right magic, wrong token.
    let mut forged = mh;
    forged.reserved[20] ^= 0x40;
    let mut p2 = 0;
    // SAFETY: valid out-pointer; the call must refuse the handle.
    let r = unsafe { cuIpcOpenMemHandle_v2(&mut p2, forged, 1) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_HANDLE);
    cu!(cuEventDestroy_v2(ev));

    // The exported allocation, through its descriptor.
    let file = std::fs::File::open(&fd_path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut phys = 0;
    cu!(cuMemImportFromShareableHandle(
        &mut phys,
        fd as usize as *mut c_void,
        CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
    ));
    // SAFETY: plain data, filled in by the call.
    let mut prop: CUmemAllocationProp = unsafe { std::mem::zeroed() };
    cu!(cuMemGetAllocationPropertiesFromHandle(&mut prop, phys));
    assert_eq!(prop.requestedHandleTypes, vmm_prop().requestedHandleTypes);
    let va = map_rw(phys);
    cu!(cuMemRelease(phys));
    let mut bytes = vec![0u8; VMM_BYTES];
    cu!(cuMemcpyDtoH_v2(bytes.as_mut_ptr().cast(), va, VMM_BYTES));
    assert!(bytes.chunks(4).all(|w| w == [0x77, 0, 0, 0]));
    cu!(cuMemUnmap(va, VMM_BYTES));
    cu!(cuMemAddressFree(va, VMM_BYTES));
    // Any other descriptor is no allocation.
    let other = std::fs::File::open("/proc/self/exe").unwrap();
    let mut none = 0;
    // SAFETY: valid out-pointer; the call must refuse the descriptor.
    let r = unsafe {
        cuMemImportFromShareableHandle(
            &mut none,
            std::os::fd::AsRawFd::as_raw_fd(&other) as usize as *mut c_void,
            CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
        )
    };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
}

#[test]
#[ignore = "run in a child process"]
fn client_ipc_after_exit() {
    if !is_child() {
        return;
    }
    init_client();
    let (mh, eh, _) = env_handles();
    let mut ptr = 0;
    // SAFETY: valid out-pointers; the exporter is gone, so both calls must fail.
    let r = unsafe { cuIpcOpenMemHandle_v2(&mut ptr, mh, 1) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_HANDLE);
    let mut ev = null_mut();
    // SAFETY: as above.
    let r = unsafe { cuIpcOpenEventHandle(&mut ev, eh) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_HANDLE);
}

const POOL_BYTES: usize = 1 << 20;

fn pool_props(handle_types: CUmemAllocationHandleType) -> CUmemPoolProps {
    // SAFETY: plain data; zero is valid for every field.
    let mut props: CUmemPoolProps = unsafe { std::mem::zeroed() };
    props.allocType = CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    props.handleTypes = handle_types;
    props.location.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    props
}

#[test]
fn memory_pools_cross_processes() {
    let d = Daemon::start("pools");
    let mut exporter = client("client_pool_export", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(exporter.stdout.take().unwrap());
    let handles = exported(&mut out, "POOL ");
    let parts: Vec<&str> = handles.split(' ').collect();
    let out = client("client_pool_import", &d.socket)
        .env("BATON_POOL_FD", parts[0])
        .env("BATON_POOL_PTR", parts[1])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "importer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The exporter frees after the importer and checks its figures.
    exporter.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(exporter.wait().unwrap().success());
    d.wait_status("every session to end", |s| s.clients.is_empty());
}

#[test]
#[ignore = "run in a child process"]
fn client_pool_export() {
    if !is_child() {
        return;
    }
    init_client();
    let posix = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    // A pool without a shareable handle type exports nothing; Win32 pools are not served.
    let mut plain = null_mut();
    cu!(cuMemPoolCreate(
        &mut plain,
        &pool_props(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE)
    ));
    let mut fd: std::ffi::c_int = -1;
    // SAFETY: valid out-pointer; the call must refuse the pool.
    let r = unsafe {
        cuMemPoolExportToShareableHandle((&mut fd as *mut std::ffi::c_int).cast(), plain, posix, 0)
    };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
    let mut win = null_mut();
    // SAFETY: valid arguments; the call must refuse the handle type.
    let r = unsafe {
        cuMemPoolCreate(
            &mut win,
            &pool_props(CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_WIN32),
        )
    };
    assert_eq!(r, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    cu!(cuMemPoolDestroy(plain));

    let mut pool = null_mut();
    cu!(cuMemPoolCreate(&mut pool, &pool_props(posix)));
    // cuMemAllocAsync allocates from the pool made current.
    cu!(cuDeviceSetMemPool(0, pool));
    let mut current = null_mut();
    cu!(cuDeviceGetMemPool(&mut current, 0));
    assert_eq!(current, pool);
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    let mut buf = 0;
    cu!(cuMemAllocAsync(&mut buf, POOL_BYTES, s));
    let mut used = 0u64;
    cu!(cuMemPoolGetAttribute(
        pool,
        CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
        (&mut used as *mut u64).cast()
    ));
    assert_eq!(used, POOL_BYTES as u64);
    cu!(cuMemsetD32_v2(buf, 0x5eed_f00d, POOL_BYTES / 4));
    cu!(cuMemPoolExportToShareableHandle(
        (&mut fd as *mut std::ffi::c_int).cast(),
        pool,
        posix,
        0
    ));
    // SAFETY: plain data, filled in by the call.
    let mut data: CUmemPoolPtrExportData = unsafe { std::mem::zeroed() };
    cu!(cuMemPoolExportPointer(&mut data, buf));
    println!(
        "POOL /proc/{}/fd/{fd} {}",
        std::process::id(),
        hex(&data.reserved.map(|c| c as std::ffi::c_char))
    );
    println!("READY");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // The importer wrote its mark; then the exporter frees and destroys.
    let mut words = vec![0u32; 4];
    cu!(cuMemcpyDtoH_v2(words.as_mut_ptr().cast(), buf, 16));
    assert_eq!(words, vec![0x0909_0909; 4], "the importer's write");
    cu!(cuMemFreeAsync(buf, s));
    cu!(cuStreamSynchronize(s));
    cu!(cuMemPoolDestroy(pool));
    // The device's default pool is current again.
    cu!(cuDeviceGetMemPool(&mut current, 0));
    assert_ne!(current, pool);
}

#[test]
#[ignore = "run in a child process"]
fn client_pool_import() {
    if !is_child() {
        return;
    }
    init_client();
    let posix = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    let var = |n| std::env::var(n).unwrap();
    let file = std::fs::File::open(var("BATON_POOL_FD")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut pool = null_mut();
    cu!(cuMemPoolImportFromShareableHandle(
        &mut pool,
        fd as usize as *mut c_void,
        posix,
        0
    ));
    // SAFETY: plain data.
    let mut loc: CUmemLocation = unsafe { std::mem::zeroed() };
    loc.type_ = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    let mut flags = CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_NONE;
    cu!(cuMemPoolGetAccess(&mut flags, pool, &mut loc));
    assert_eq!(flags, CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
    let mut data = CUmemPoolPtrExportData {
        reserved: unhex(&var("BATON_POOL_PTR")).map(|c| c as u8),
    };
    let mut s = null_mut();
    cu!(cuStreamCreate(&mut s, 1));
    // An imported pool hands out no memory.
    let mut none = 0;
    // SAFETY: valid arguments; the call must refuse the pool.
    let r = unsafe { cuMemAllocFromPoolAsync(&mut none, 4096, pool, s) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
    // A forged export: right magic, wrong token.
    let mut forged = data;
    forged.reserved[20] ^= 0x40;
    let mut ptr = 0;
    // SAFETY: valid arguments; the call must refuse the data.
    let r = unsafe { cuMemPoolImportPointer(&mut ptr, pool, &mut forged) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_HANDLE);
    cu!(cuMemPoolImportPointer(&mut ptr, pool, &mut data));
    let mut words = vec![0u32; POOL_BYTES / 4];
    cu!(cuMemcpyDtoH_v2(words.as_mut_ptr().cast(), ptr, POOL_BYTES));
    assert!(
        words.iter().all(|&w| w == 0x5eed_f00d),
        "the exporter's data"
    );
    cu!(cuMemsetD8Async(ptr, 9, 16, s));
    cu!(cuStreamSynchronize(s));
    // Freeing the import lets go of it; the exporter's memory stays.
    cu!(cuMemFreeAsync(ptr, s));
    cu!(cuStreamSynchronize(s));
    // SAFETY: plain value arguments; the import is gone.
    let r = unsafe { cuMemFreeAsync(ptr, s) };
    assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE);
    cu!(cuMemPoolDestroy(pool));
}

/// A module image for the simulator whose `trap` kernel poisons the context like a wild write.
const TRAP_IMAGE: &[u8] = b"//baton-sim\nkernel trap\n\0";

#[test]
fn a_kernel_fault_ends_every_current_client_names_its_tenant_and_new_clients_work() {
    let d = Daemon::start_logged("fault", Some("[default]\n"));
    // A well-behaved tenant keeps working until its calls fail.
    let mut bob = client("client_until_error", &d.socket)
        .env("BATON_TENANT", "bob")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bob_out = BufReader::new(bob.stdout.take().unwrap());
    wait_ready(&mut bob_out);
    // Another tenant's kernel faults; it gets the sticky error itself.
    let out = client("client_trap", &d.socket)
        .env("BATON_TENANT", "mallory")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The well-behaved tenant got the error too (it checks the code), and did not hang.
    let status = bob.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut bob_out, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut bob.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{rest}{err}");
    assert!(rest.contains("GOT 700"), "{rest}");
    // A client started afterwards works normally.
    d.wait_status("the fault to be counted", |s| s.context_faults == 1);
    run_client("client_smoke", &d.socket);
    let log = d.log();
    let named = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("caused by tenant mallory"))
        .unwrap_or_else(|| panic!("no line names the tenant:\n{log}"));
    // Under passthrough the daemon knows who launched since their last synchronisation, so
    // the line may say "one of"; either way it names the tenant and the kernel.
    assert!(named.contains("\"trap\""), "{named}");
    assert!(
        log.contains("GPU context reset after the kernel fault"),
        "{log}"
    );
    assert_eq!(d.status().context_faults, 1);
}

#[test]
fn a_fault_the_driver_cannot_reset_in_place_restarts_batond_on_the_same_socket() {
    let d = Daemon::spawn(
        "fault-restart",
        Some("[default]\n"),
        true,
        &[("BATON_SIM_RESET_FAILS", "1")],
    );
    let pid = d.status().daemon_pid;
    let out = client("client_trap", &d.socket)
        .env("BATON_TENANT", "mallory")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The same process, a fresh image, on the same socket: a new client works, and the fault
    // is still counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log().contains("batond started over after a kernel fault") {
        assert!(Instant::now() < deadline, "no restart:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    run_client("client_smoke", &d.socket);
    let s = d.status();
    assert_eq!((s.daemon_pid, s.context_faults), (pid, 1));
    let log = d.log();
    assert!(log.contains("batond starts over"), "{log}");
    assert!(
        log.contains("batond started over after a kernel fault"),
        "{log}"
    );
}

#[test]
#[ignore = "run in a child process"]
fn client_trap() {
    if !is_child() {
        return;
    }
    init_client();
    let mut m = null_mut();
    cu!(cuModuleLoadData(
        &mut m,
        TRAP_IMAGE.as_ptr() as *const c_void
    ));
    let mut trap = null_mut();
    cu!(cuModuleGetFunction(&mut trap, m, c"trap".as_ptr()));
    cu!(cuLaunchKernel(
        trap,
        1,
        1,
        1,
        1,
        1,
        1,
        0,
        null_mut(),
        null_mut(),
        null_mut()
    ));
    // SAFETY: no arguments.
    let r = unsafe { cuCtxSynchronize() };
    assert_eq!(r, CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
    let mut p = 0;
    // SAFETY: out-pointer to a local.
    let r = unsafe { cuMemAlloc_v2(&mut p, 64) };
    assert_eq!(
        r,
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
        "the error is sticky"
    );
}

#[test]
#[ignore = "run in a child process"]
fn client_until_error() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, add, _, _) = load_kernels();
    let n = 256;
    let [a, b, c] = [0; 3].map(|_| {
        let mut p = 0;
        cu!(cuMemAlloc_v2(&mut p, n * 4));
        p
    });
    println!("READY");
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        assert!(Instant::now() < deadline, "no error within 30 s");
        // SAFETY: device pointers of n floats each.
        let r = unsafe { launch_vec_add(add, a, b, c, n as i32, null_mut()) };
        if r != CUresult::CUDA_SUCCESS {
            break r;
        }
        // SAFETY: no arguments.
        let r = unsafe { cuCtxSynchronize() };
        if r != CUresult::CUDA_SUCCESS {
            break r;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(code, CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
    let mut p = 0;
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { cuMemAlloc_v2(&mut p, 64) }, code, "sticky");
    println!("GOT {}", code.0);
}
