//! Operating batond and baton: a closed or stalled stderr, signals, the policy reload, the
//! watchdog, the metrics endpoint's limits, socket errors, the command line and `baton demo`.
//! The daemon is the real `batond` on the simulated executor; clients are this test binary
//! re-run with one `#[ignore]`d client function selected, as in `processes.rs`.

use baton_ipc::control::{self, Request, Response, StatusReport};
use baton_tests::clients::command as client;
use baton_tests::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let d =
            std::env::temp_dir().join(format!("baton-ops-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `batond --executor sim` command on `socket`.
fn batond(socket: &Path) -> Command {
    let mut c = daemon::batond_sim(socket);
    c.env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .env_remove("BATON_LOG")
        .stdin(Stdio::null());
    c
}

/// Kills the daemon when the test ends, however it ends.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command, socket: &Path) -> Running {
    Running(daemon::spawn_serving(cmd, socket))
}

fn status(socket: &Path) -> StatusReport {
    let c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    control::send(&c, &Request::Status, &[]).unwrap();
    match control::recv::<Response>(&c).unwrap().0 {
        Response::Status(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// Writes a policy file that opens the metrics endpoint on `port`, behind the token in `token`
/// where one is named.
fn write_metrics_policy(policy: &Path, port: u16, token: Option<&Path>) {
    let mut text = format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n");
    if let Some(t) = token {
        text += &format!("metrics_token_file = \"{}\"\n", t.display());
    }
    std::fs::write(policy, text).unwrap();
}

/// A daemon with the policy file `policy`, once its metrics endpoint on `port` accepts.
fn start_metrics(socket: &Path, policy: &Path, port: u16) -> Running {
    let d = start(
        batond(socket)
            .arg("--config")
            .arg(policy)
            .stderr(Stdio::null()),
        socket,
    );
    wait_for("the metrics endpoint", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    d
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits up to `limit` for the child to exit.
fn exits_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn wait_for(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `client_hold` and waits until it holds its memory; it exits when its stdin closes.
fn holding_client(socket: &Path, tenant: &str) -> Child {
    let mut c = client("client_hold", socket)
        .env("BATON_TENANT", tenant)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    clients::wait_for_line(&mut out, "READY");
    // Keep reading: the client's test harness still prints when it ends.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    c
}

#[test]
#[ignore = "run in a child process"]
fn client_hold() {
    if !is_child() {
        return;
    }
    init_client();
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, 1 << 20));
    println!("READY");
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

#[test]
#[ignore = "run in a child process"]
fn client_smoke() {
    if !is_child() {
        return;
    }
    clients::vec_add_smoke();
}

// ---- logging and signals --------------------------------------------------------------------

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE.
fn dead_pipe() -> std::os::fd::OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are ours; the read end is closed here, the write end owned.
    unsafe {
        libc::close(fds[0]);
        std::os::fd::FromRawFd::from_raw_fd(fds[1])
    }
}

#[test]
fn a_daemon_whose_stderr_closed_at_start_serves_and_stops_on_sigterm() {
    let dir = TempDir::new("deadstart");
    let socket = dir.path("baton.sock");
    let mut d = start(batond(&socket).stderr(Stdio::from(dead_pipe())), &socket);
    // Its start-up lines went nowhere; it must still serve, log more, and stop.
    signal(&d.0, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status(&socket).clients.len(), 0);
    let t = Instant::now();
    signal(&d.0, libc::SIGTERM);
    let st = exits_within(&mut d.0, Duration::from_secs(5))
        .expect("batond did not exit within 5 s of SIGTERM");
    assert!(st.success(), "{st} after {:?}", t.elapsed());
    assert!(!socket.exists(), "the socket file was left behind");
}

#[test]
fn a_daemon_whose_stderr_closes_later_stops_on_sigterm() {
    let dir = TempDir::new("deadlater");
    let socket = dir.path("baton.sock");
    let mut cmd = batond(&socket);
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut first = [0u8; 64];
    assert!(err.read(&mut first).unwrap() > 0, "batond logged nothing");
    daemon::wait_for_socket(&mut child, &socket);
    let mut d = Running(child);
    drop(err);
    // Log lines now meet a closed pipe: a client's connect and disconnect, a SIGHUP.
    let out = client("client_smoke", &socket).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(&d.0, libc::SIGHUP);
    wait_for("the session to end", Duration::from_secs(10), || {
        status(&socket).clients.is_empty()
    });
    signal(&d.0, libc::SIGTERM);
    let st = exits_within(&mut d.0, Duration::from_secs(5))
        .expect("batond did not exit within 5 s of SIGTERM");
    assert!(st.success(), "{st}");
    assert!(!socket.exists());
}

#[test]
fn a_stderr_nobody_reads_neither_wedges_the_daemon_nor_its_shutdown() {
    let dir = TempDir::new("fullpipe");
    let socket = dir.path("baton.sock");
    let mut cmd = batond(&socket);
    cmd.stderr(Stdio::piped());
    let mut d = start(&mut cmd, &socket);
    let unread = d.0.stderr.take().unwrap();
    // Fill the pipe (64 KiB): each SIGHUP without a policy file logs a line.
    let queued = || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes the number of unread bytes into `n`.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&unread),
                libc::FIONREAD,
                &mut n,
            )
        };
        n
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while queued() < 60 << 10 {
        assert!(
            Instant::now() < deadline,
            "the pipe never filled: {} bytes",
            queued()
        );
        signal(&d.0, libc::SIGHUP);
        std::thread::sleep(Duration::from_micros(200));
    }
    // More lines now meet a full pipe.
    for _ in 0..200 {
        signal(&d.0, libc::SIGHUP);
        std::thread::sleep(Duration::from_micros(200));
    }
    let t = Instant::now();
    assert_eq!(status(&socket).clients.len(), 0);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "status took {:?}",
        t.elapsed()
    );
    signal(&d.0, libc::SIGTERM);
    let st = exits_within(&mut d.0, Duration::from_secs(5))
        .expect("batond did not exit within 5 s of SIGTERM");
    assert!(st.success(), "{st}");
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_name_who_connects() {
    let dir = TempDir::new("logs");
    let socket = dir.path("baton.sock");
    let log = dir.path("batond.log");
    let mut d = start(
        batond(&socket).stderr(std::fs::File::create(&log).unwrap()),
        &socket,
    );
    let out = client("client_smoke", &socket)
        .env("BATON_TENANT", "carol")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the disconnect line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("client disconnected")
    });
    signal(&d.0, libc::SIGTERM);
    exits_within(&mut d.0, Duration::from_secs(5)).expect("no exit");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text}"
    );
    let uid = nix_uid();
    for what in ["client connected", "client disconnected"] {
        let line = text
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` line:\n{text}"));
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("pid="), "{line}");
        assert!(line.contains(&format!("uid={uid}")), "{line}");
        assert!(line.contains("tenant=carol"), "{line}");
    }
    assert!(text.contains("stopping"), "{text}");
}

fn nix_uid() -> u32 {
    // SAFETY: getuid(2) cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn on_the_journal_stream_lines_carry_syslog_priorities() {
    let dir = TempDir::new("journal");
    let socket = dir.path("baton.sock");
    let log = dir.path("batond.log");
    let file = std::fs::File::create(&log).unwrap();
    let m = file.metadata().unwrap();
    let mut d = start(
        batond(&socket)
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
            .stderr(file),
        &socket,
    );
    signal(&d.0, libc::SIGHUP); // a warning: no policy file to reload
    wait_for("the warning", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap().contains("SIGHUP")
    });
    signal(&d.0, libc::SIGTERM);
    exits_within(&mut d.0, Duration::from_secs(5)).expect("no exit");
    let text = std::fs::read_to_string(&log).unwrap();
    let ready = text
        .lines()
        .find(|l| l.contains("batond ready"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(ready.starts_with("<6>"), "{ready}");
    let warn = text.lines().find(|l| l.contains("SIGHUP")).unwrap();
    assert!(warn.starts_with("<4>"), "{warn}");
    assert!(!text.contains('\x1b'), "{text}");
}

// ---- SIGHUP -------------------------------------------------------------------------------

#[test]
fn sighup_reloads_the_policy_for_new_clients_and_keeps_it_for_connected_ones() {
    let dir = TempDir::new("reload");
    let socket = dir.path("baton.sock");
    let policy = dir.path("baton.toml");
    let log = dir.path("batond.log");
    std::fs::write(&policy, "[default]\nmemory_quota = \"64MiB\"\n").unwrap();
    let mut d = start(
        batond(&socket)
            .arg("--config")
            .arg(&policy)
            .stderr(std::fs::File::create(&log).unwrap()),
        &socket,
    );
    let reloads = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("policy file reloaded")
            .count()
    };
    let mut first = holding_client(&socket, "first");
    std::fs::write(&policy, "[default]\nmemory_quota = \"128MiB\"\n").unwrap();
    signal(&d.0, libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(5), || reloads() == 1);
    let mut second = holding_client(&socket, "second");

    // A file with an error leaves the running policy in place.
    std::fs::write(&policy, "[default]\nmemory_quota = \"12 parsecs\"\n").unwrap();
    signal(&d.0, libc::SIGHUP);
    wait_for("the refusal", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("keeping the running policy")
    });
    // [daemon] waits for a restart; the rest applies.
    std::fs::write(
        &policy,
        "[daemon]\npolicy = \"fair\"\n[default]\nadmit = false\n",
    )
    .unwrap();
    signal(&d.0, libc::SIGHUP);
    wait_for("the second reload", Duration::from_secs(5), || {
        reloads() == 2
    });

    let s = status(&socket);
    let quota = |t: &str| {
        s.clients
            .iter()
            .find(|c| c.tenant == t)
            .unwrap()
            .memory_quota
    };
    assert_eq!(quota("first"), Some(64 << 20), "{s:?}");
    assert_eq!(quota("second"), Some(128 << 20), "{s:?}");
    assert_eq!(
        s.policy, "passthrough",
        "[daemon] must not change without a restart"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[daemon] settings changed"), "{text}");
    // Now nobody is admitted: a new client is refused, the connected ones stay.
    let out = client("client_smoke", &socket).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused by the daemon's policy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&socket).clients.len(), 2);
    for c in [&mut first, &mut second] {
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
    }
    signal(&d.0, libc::SIGTERM);
    exits_within(&mut d.0, Duration::from_secs(5)).expect("no exit");
}

// ---- the watchdog ---------------------------------------------------------------------------

#[test]
fn the_watchdog_stops_pinging_when_the_serving_loop_hangs() {
    let dir = TempDir::new("watchdog");
    let socket = dir.path("baton.sock");
    let notify = dir.path("notify.sock");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let log = dir.path("batond.log");
    let mut cmd = batond(&socket);
    cmd.env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000") // a ping every 200 ms
        .env("BATON_TEST_STALL_SERVING_AFTER_MS", "1500")
        .stderr(std::fs::File::create(&log).unwrap());
    let _d = start(&mut cmd, &socket);
    let t0 = Instant::now();
    let mut pings = Vec::new();
    let mut ready = false;
    let mut buf = [0u8; 256];
    while t0.elapsed() < Duration::from_millis(4500) {
        if let Ok(n) = rx.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            ready |= msg.contains("READY=1");
            if msg == "WATCHDOG=1" {
                pings.push(t0.elapsed());
            }
        }
    }
    assert!(ready, "no READY=1");
    let before: Vec<_> = pings
        .iter()
        .filter(|t| **t < Duration::from_millis(1400))
        .collect();
    assert!(before.len() >= 3, "too few pings while serving: {pings:?}");
    // The loop stalls at about 1.5 s; a ping already under way may still land soon after.
    let late: Vec<_> = pings
        .iter()
        .filter(|t| **t > Duration::from_millis(2500))
        .collect();
    assert!(
        late.is_empty(),
        "pings went on after the serving loop hung: {pings:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("health check failed"), "{text}");
}

// ---- metrics --------------------------------------------------------------------------------

fn scrape(mut c: impl Read + Write) -> String {
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn twenty_idle_metrics_connections_do_not_delay_a_scrape() {
    let dir = TempDir::new("metrics");
    let socket = dir.path("baton.sock");
    let policy = dir.path("baton.toml");
    let port = daemon::free_port();
    write_metrics_policy(&policy, port, None);
    let _d = start_metrics(&socket, &policy, port);
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Half of them start a request and never finish it.
    for c in idle.iter_mut().step_by(2) {
        c.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    }
    let t = Instant::now();
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let page = scrape(c);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("\nbaton_build_info{version=\""), "{page}");
    assert!(
        page.contains("# TYPE baton_tenant_queue_delay_seconds histogram"),
        "{page}"
    );
    // The idle ones are closed by their deadline, not held for ever.
    let mut first = idle.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let t = Instant::now();
    let _ = first.read_to_end(&mut rest);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "an idle connection stayed open {:?}",
        t.elapsed()
    );
}

#[test]
fn metrics_are_off_by_default_and_on_a_unix_socket_take_the_daemons_mode() {
    let dir = TempDir::new("metricsunix");
    let socket = dir.path("baton.sock");
    let log = dir.path("batond.log");
    let mut d = start(
        batond(&socket).stderr(std::fs::File::create(&log).unwrap()),
        &socket,
    );
    // SIGINT stops it as SIGTERM does.
    signal(&d.0, libc::SIGINT);
    let st = exits_within(&mut d.0, Duration::from_secs(5)).expect("no exit on SIGINT");
    assert!(st.success(), "{st}");
    assert!(!socket.exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("metrics endpoint listening"), "{text}");
    assert!(!dir.path("metrics.sock").exists());

    let policy = dir.path("baton.toml");
    std::fs::write(&policy, "[daemon]\nmetrics_listen = \"unix\"\n").unwrap();
    let mut d = start(
        batond(&socket)
            .args(["--socket-mode", "640", "--config"])
            .arg(&policy)
            .stderr(Stdio::null()),
        &socket,
    );
    let metrics = dir.path("metrics.sock");
    wait_for("the metrics socket", Duration::from_secs(5), || {
        metrics.exists()
    });
    assert_eq!(std::fs::metadata(&metrics).unwrap().mode() & 0o777, 0o640);
    let page = scrape(UnixStream::connect(&metrics).unwrap());
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("\nbaton_clients 0\n"), "{page}");
    signal(&d.0, libc::SIGTERM);
    exits_within(&mut d.0, Duration::from_secs(5)).expect("no exit");
    assert!(!metrics.exists(), "the metrics socket was left behind");
}

// ---- sockets and the command line ------------------------------------------------------------

#[test]
fn a_regular_file_at_the_socket_path_is_refused_not_deleted() {
    let dir = TempDir::new("regular");
    let socket = dir.path("baton.sock");
    std::fs::write(&socket, "precious").unwrap();
    let out = batond(&socket).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
    let out = Command::new(workspace_bin("baton"))
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
}

/// `baton` as another user (uid/gid 65534) when we are root; as ourselves otherwise, against
/// a socket of mode 000, which refuses its own owner unless that is root.
fn denied_setup(dir: &TempDir) -> (PathBuf, &'static str, Option<u32>) {
    if nix_uid() == 0 {
        // The other user must be able to run the binary: copy it where it can.
        let exe = dir.path("baton");
        std::fs::copy(workspace_bin("baton"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        (exe, "600", Some(65534))
    } else {
        (workspace_bin("baton"), "000", None)
    }
}

fn as_user(cmd: &mut Command, uid: Option<u32>) -> &mut Command {
    if let Some(uid) = uid {
        // SAFETY: setgroups/setgid/setuid are async-signal-safe; they drop root in the child
        // before it runs `baton`.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

#[test]
fn a_user_the_socket_refuses_is_told_so_and_gets_no_private_daemon() {
    let dir = TempDir::new("denied");
    let socket = dir.path("baton.sock");
    let (baton, mode, uid) = denied_setup(&dir);
    if uid.is_none() {
        eprintln!("not root: testing with a socket of mode 000 that refuses its own owner");
    }
    let _d = start(
        batond(&socket)
            .args(["--socket-mode", mode])
            .stderr(Stdio::null()),
        &socket,
    );
    let home = TempDir::new("deniedhome");
    std::fs::set_permissions(&home.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_user(
        Command::new(&baton)
            .args(["status", "--socket"])
            .arg(&socket),
        uid,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "you are not allowed to use the Baton daemon at {}",
            socket.display()
        )),
        "{err}"
    );
    assert!(err.contains("ask"), "{err}");

    let out = as_user(
        Command::new(&baton)
            .args(["run", "--", "true"])
            .env(control::SOCKET_ENV, &socket)
            .env("XDG_RUNTIME_DIR", &home.0),
        uid,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("you are not allowed to use the Baton daemon"),
        "{err}"
    );
    assert!(!err.contains("started a daemon"), "{err}");
    assert!(!home.path("baton").exists(), "a private daemon was started");
}

#[test]
fn unknown_run_options_are_an_error_and_run_takes_socket_and_config() {
    let out = Command::new(workspace_bin("baton"))
        .args(["run", "--bogus", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));

    let dir = TempDir::new("runsocket");
    let socket = dir.path("baton.sock");
    let _d = start(batond(&socket).stderr(Stdio::null()), &socket);
    let out = Command::new(workspace_bin("baton"))
        .args(["run", "--tenant", "t", "--socket"])
        .arg(&socket)
        .args(["sh", "-c", "echo \"$BATON_SOCKET $BATON_TENANT\""])
        .env_remove(control::SOCKET_ENV)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), format!("{} t", socket.display()));

    // --config reaches the daemon baton starts: its error names the file.
    let policy = dir.path("bad.toml");
    std::fs::write(&policy, "[daemon]\npolcy = 1\n").unwrap();
    let out = Command::new(workspace_bin("baton"))
        .args(["run", "--socket"])
        .arg(dir.path("new.sock"))
        .arg("--config")
        .arg(&policy)
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown field `polcy`"), "{err}");
}

#[test]
fn baton_demo_runs_two_clients_on_the_simulated_gpu_and_cleans_up() {
    let out = Command::new(workspace_bin("baton"))
        .arg("demo")
        .env_remove(control::SOCKET_ENV)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("SIMULATED"), "{text}");
    for t in ["alice", "bob"] {
        assert!(
            text.contains(&format!("{t}: vecAdd on \"Baton Simulated GPU\"")),
            "{text}"
        );
    }
    assert!(
        text.contains("TENANT") && text.contains("policy fair"),
        "{text}"
    );
    let dir = text
        .split_whitespace()
        .find(|w| w.contains("baton-demo-") && w.ends_with("baton.sock"))
        .map(|w| Path::new(w).parent().unwrap().to_path_buf())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn without_a_driver_baton_run_points_at_the_demo() {
    if Path::new("/dev/nvidiactl").exists() {
        return;
    }
    let dir = TempDir::new("nodriver");
    let out = Command::new(workspace_bin("baton"))
        .args(["run", "--", "true"])
        .env(control::SOCKET_ENV, dir.path("run.sock"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no NVIDIA driver found"), "{err}");
    assert!(err.contains("baton demo"), "{err}");
}

#[test]
fn with_a_token_file_a_scrape_must_present_the_token() {
    let dir = TempDir::new("token");
    let socket = dir.path("baton.sock");
    let policy = dir.path("baton.toml");
    let token = dir.path("metrics.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let port = daemon::free_port();
    write_metrics_policy(&policy, port, Some(&token));
    let _d = start_metrics(&socket, &policy, port);
    let get = |auth: &str| {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    let page = get("");
    assert!(page.starts_with("HTTP/1.1 401"), "{page}");
    assert!(page.contains("WWW-Authenticate: Bearer"), "{page}");
    assert!(!page.contains("baton_clients"), "{page}");
    assert!(get("Authorization: Bearer wrong\r\n").starts_with("HTTP/1.1 401"));
    let page = get("Authorization: Bearer s3cret-token\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("\nbaton_clients 0\n"), "{page}");
}

#[test]
fn an_unreadable_token_file_leaves_the_endpoint_closed_not_open() {
    let dir = TempDir::new("notoken");
    let socket = dir.path("baton.sock");
    let policy = dir.path("baton.toml");
    let log = dir.path("batond.log");
    let port = daemon::free_port();
    write_metrics_policy(&policy, port, Some(&dir.path("missing.token")));
    let _d = start(
        batond(&socket)
            .arg("--config")
            .arg(&policy)
            .stderr(std::fs::File::create(&log).unwrap()),
        &socket,
    );
    wait_for("the error line", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("metrics endpoint not started")
    });
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
