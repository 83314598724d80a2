//! Hostile local clients against the real `batond` (simulated executor): each attack, and the
//! check that the daemon and a well-behaved tenant beside it are unaffected. Clients that need
//! the shim run in child processes (this test binary with one `#[ignore]`d function selected);
//! raw clients speak the control protocol from the test itself.

use baton_ipc::control::{self, Request, Response};
use baton_tests::clients::command as client;
use baton_tests::*;
use std::ffi::c_void;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::ptr::null_mut;
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    /// `batond --executor sim` with the policy file `config`, its log kept, and at most
    /// `nofile` open descriptors.
    fn start(tag: &str, config: &str, nofile: Option<u64>, mode: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "baton-hostile-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("baton.sock");
        let conf = dir.join("baton.toml");
        std::fs::write(&conf, config).unwrap();
        let mut cmd = daemon::batond_sim(&socket);
        cmd.args(["--socket-mode", mode, "--config"])
            .arg(&conf)
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("batond.log")).unwrap(),
            ));
        if let Some(n) = nofile {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
        }
        let child = daemon::spawn_serving(&mut cmd, &socket);
        Daemon { child, socket, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("batond.log")).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn proc_status(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = s.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn status(&self) -> Response {
        let c = UnixStream::connect(&self.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        control::send(&c, &Request::Status, &[]).unwrap();
        control::recv::<Response>(&c).unwrap().0
    }

    fn clients(&self) -> usize {
        match self.status() {
            Response::Status(r) => r.clients.len(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn wait_no_clients(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.clients() > 0 {
            assert!(Instant::now() < deadline, "sessions outlived their clients");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Mappings of pinned chunks in the daemon (a leaked chunk stays mapped).
    fn pinned_mappings(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/maps", self.child.id()))
            .unwrap()
            .lines()
            .filter(|l| l.contains("baton-host"))
            .count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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

fn hello(tenant: Option<&str>) -> Request {
    Request::Hello {
        version: control::PROTOCOL_VERSION,
        pid: std::process::id(),
        tenant: tenant.map(str::to_owned),
        class: None,
    }
}

/// A raw connection's answer to its first request.
fn first_answer(socket: &Path, req: &Request) -> Response {
    let c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A connection refused as it is accepted is answered before the request (which may then
    // meet a closed socket).
    let _ = control::send(&c, req, &[]);
    control::recv::<Response>(&c).unwrap().0
}

/// Raises this process's descriptor limit to `n` if it can; `false` if it cannot.
fn allow_descriptors(n: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain out-parameter.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur >= n {
        return true;
    }
    if lim.rlim_max < n {
        return false;
    }
    lim.rlim_cur = n;
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// Failure 1: idle connections made the daemon exit ("Too many open files"), and each got a
/// thread. Now they are refused past the limits, closed at the first-request deadline, and
/// served by one thread; a tenant in the middle of its work finishes it, and new clients work
/// once the idle connections are gone.
#[test]
fn idle_connections_neither_end_the_daemon_nor_stop_a_working_tenant() {
    if !allow_descriptors(2200) {
        eprintln!("skipped: this process cannot open 2,000 descriptors");
        return;
    }
    let mut d = Daemon::start(
        "idle",
        "[daemon]\nfirst_frame_timeout_ms = 2000\n",
        Some(1024),
        "660",
    );
    let mut steady = client("client_steady", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(steady.stdout.take().unwrap());
    clients::wait_for_line(&mut out, "READY");

    let idle: Vec<UnixStream> = (0..2000)
        .filter_map(|_| UnixStream::connect(&d.socket).ok())
        .collect();
    assert!(
        idle.len() > 1024,
        "the attack needs more connections than descriptors"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.alive(), "batond exited under idle connections");
    let threads = d.proc_status("Threads:");
    assert!(threads < 64, "{threads} threads for idle connections");

    // The working tenant goes on (pinned memory, copies, a kernel) while they are open.
    steady.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let status = steady.wait().unwrap();
    let mut err = String::new();
    steady
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "the working tenant failed: {err}");

    // Every idle connection is closed by the deadline (or was refused at once).
    let deadline = Instant::now() + Duration::from_secs(15);
    for mut c in idle {
        c.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue, // a refusal's error frame, then the end
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("an idle connection stayed open past its deadline: {e}"),
            }
        }
    }
    assert!(d.alive());
    run_client("client_smoke", &d.socket);
    let log = d.log();
    assert!(
        log.contains("connection refused"),
        "refusals are logged: {log}"
    );
    assert!(
        log.contains("sent no complete request in time"),
        "deadlines are logged: {log}"
    );
    assert!(!log.contains("Too many open files") || d.alive());
}

/// Failure 2: an announced frame length was allocated before its bytes came, so 100
/// connections announcing 16 MiB took the daemon to 1.65 GB. Now a request announcing more
/// than 64 KiB is refused, and buffers grow only with the bytes that came.
#[test]
fn oversized_frames_leave_the_daemons_memory_bounded() {
    let mut d = Daemon::start("rss", "", None, "660");
    run_client("client_smoke", &d.socket);
    let before = d.proc_status("VmRSS:");
    let mut conns = Vec::new();
    for i in 0..100u32 {
        let c = UnixStream::connect(&d.socket).unwrap();
        let len: u32 = if i % 2 == 0 { 16 << 20 } else { 60 << 10 };
        let _ = (&c).write_all(&len.to_le_bytes());
        let _ = (&c).write_all(&[b' '; 1000]);
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = d.proc_status("VmRSS:");
    assert!(d.alive());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} kB to {after} kB under oversized frames"
    );
    run_client("client_smoke", &d.socket);
    drop(conns);
}

/// Failure 3: after the daemon ended a session for breaking the ring protocol, the
/// connection still answered `AllocHost`, and those chunks were never freed. Now nothing is
/// served after the session ends, every chunk goes back, and its charge with it.
#[test]
fn a_protocol_violating_session_loses_no_pinned_memory() {
    let d = Daemon::start(
        "pinned",
        "[default]\nhost_memory_quota = \"8MiB\"\n",
        None,
        "660",
    );
    let c = UnixStream::connect(&d.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    control::send(&c, &hello(None), &[]).unwrap();
    let (welcome, mut fds) = control::recv::<Response>(&c).unwrap();
    let Response::Welcome { region_len, .. } = welcome else {
        panic!("{welcome:?}");
    };
    let map =
        baton_ipc::shm::SharedRegion::map(fds.pop().unwrap(), region_len as usize, None).unwrap();
    // SAFETY: the daemon's region, kept mapped alongside.
    let region = unsafe { baton_ipc::region::Region::attach(map.as_ptr(), map.len()) }.unwrap();
    let (ring, ring_len) = region.ring();
    // SAFETY: the ring lies inside the mapping.
    let producer = unsafe { baton_ipc::ring::Producer::attach(ring, ring_len) }.unwrap();
    control::send(&c, &Request::AllocHost { len: 4 << 20 }, &[]).unwrap();
    assert!(matches!(
        control::recv::<Response>(&c).unwrap().0,
        Response::HostChunk { .. }
    ));
    assert_eq!(d.pinned_mappings(), 1);
    // Garbage on the ring ends the session; keep asking for pinned memory meanwhile.
    producer.push(&[0xff; 64], &|| true).unwrap();
    let mut chunks = 0;
    loop {
        if control::send(&c, &Request::AllocHost { len: 2 << 20 }, &[]).is_err() {
            break;
        }
        match control::recv::<Response>(&c) {
            Ok((Response::HostChunk { .. }, _)) => chunks += 1,
            Ok((Response::Error { .. }, _)) => {}
            Ok((other, _)) => panic!("{other:?}"),
            Err(_) => break,
        }
        assert!(
            chunks < 16,
            "the connection kept serving after its session ended"
        );
    }
    d.wait_no_clients();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.pinned_mappings() > 0 {
        assert!(
            Instant::now() < deadline,
            "pinned chunks outlived their session"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    // The same tenant's whole quota is free again.
    run_client("client_pinned_quota", &d.socket);
}

/// Failure 4: a graph's memset node on memory the tenant had freed reached the executor.
#[test]
fn a_stale_graph_node_is_refused_at_launch() {
    let d = Daemon::start("graph", "", None, "660");
    run_client("client_stale_graph", &d.socket);
}

/// Failure 6: a `gid` rule matched only the primary gid.
#[test]
fn a_gid_rule_matches_supplementary_groups() {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching to another uid with a supplementary group needs root");
        return;
    }
    let d = Daemon::start(
        "gid",
        "[[tenant]]\ngid = 4242\nadmit = false\n",
        None,
        "666",
    );
    let ask = |groups: &'static [libc::gid_t]| {
        let mut cmd = client("client_raw_hello", &d.socket);
        cmd.env("BATON_TEST_SOCKET", &d.socket);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(65533) != 0
                    || libc::setuid(65533) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = ask(&[4242]);
    assert!(
        refused.contains("refused by the daemon's policy"),
        "{refused}"
    );
    let admitted = ask(&[]);
    assert!(admitted.contains("Welcome"), "{admitted}");
}

/// Failure 7: `Status` answered before any admission and listed every tenant. Now a uid the
/// policy refuses gets an error, and others see only their own uid's clients. The operator
/// (root, or the daemon's own user, whose watchdog asks this way) is answered whatever the
/// policy says of its uid.
#[test]
fn status_is_refused_to_a_uid_the_policy_refuses() {
    // SAFETY: no arguments.
    let me = unsafe { libc::getuid() };
    let d = Daemon::start(
        "status",
        &format!("[[tenant]]\nuid = {me}\nadmit = false\n[[tenant]]\nuid = 65533\nadmit = false\n"),
        None,
        "666",
    );
    // The daemon runs as this test's uid: the operator.
    assert!(
        matches!(
            first_answer(&d.socket, &Request::Status),
            Response::Status(_)
        ),
        "the operator was refused Status"
    );
    // Other requests before Hello are refused, to the operator too.
    assert!(matches!(
        first_answer(&d.socket, &Request::AllocHost { len: 4096 }),
        Response::Error { .. }
    ));
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped the refused uid's half: switching to another uid needs root");
        return;
    }
    let mut cmd = client("client_raw_hello", &d.socket);
    cmd.env("BATON_TEST_SOCKET", &d.socket)
        .env("BATON_TEST_REQUEST", "status");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65533) != 0
                || libc::setuid(65533) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let out = cmd.output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("Error: refused by the daemon's policy"),
        "status answered a refused uid: {answer}"
    );
}

/// Failure 8: a tenant name with a newline forged log lines, and a 1 MiB name was accepted.
#[test]
fn forged_tenant_names_are_refused_and_never_reach_the_log_raw() {
    let d = Daemon::start("names", "", None, "660");
    let forged = "alice\nERROR kernel fault caused by tenant bob\x1b[2J";
    match first_answer(&d.socket, &hello(Some(forged))) {
        Response::Error { code, message } => {
            assert_eq!(code, 100);
            assert!(message.contains("control character"), "{message}");
            assert!(
                !message.contains('\n') && !message.contains('\x1b'),
                "{message}"
            );
        }
        other => panic!("a forged name was admitted: {other:?}"),
    }
    let long = "x".repeat(65);
    assert!(matches!(
        first_answer(&d.socket, &hello(Some(&long))),
        Response::Error { code: 100, .. }
    ));
    // A 1 MiB name does not even fit in a request.
    let c = UnixStream::connect(&d.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = control::send(&c, &hello(Some(&"y".repeat(1 << 20))), &[]);
    assert!(control::recv::<Response>(&c).is_err());
    // A good name of the same length limit is fine, and the daemon serves on.
    assert!(matches!(
        first_answer(&d.socket, &hello(Some(&"z".repeat(64)))),
        Response::Welcome { .. }
    ));
    run_client("client_smoke", &d.socket);
    // The refusal is logged with the name escaped: no forged line, no client's escape.
    let log = d.log();
    assert!(log.contains("client refused"), "{log}");
    assert!(
        !log.contains("alice\nERROR"),
        "a forged line reached the log: {log}"
    );
    assert!(
        !log.contains("\x1b[2J"),
        "the client's escape sequence reached the log"
    );
}

/// Failure 9: the 8,192-stream cap lived only in the shim. The daemon now holds a tenant's
/// stream and event quotas across all its processes.
#[test]
fn object_caps_are_enforced_by_the_daemon_across_a_tenants_processes() {
    let d = Daemon::start(
        "caps",
        "[default]\nstream_quota = 6\nevent_quota = 4\nmemory_quota = \"8MiB\"\n",
        None,
        "660",
    );
    let mut holder = client("client_hold_objects", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    clients::wait_for_line(&mut out, "READY");
    // The same tenant's second process gets only what the first left.
    run_client("client_over_caps", &d.socket);
    holder.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(holder.wait().unwrap().success());
}

/// Failure 10: copies with a device pointer the shim did not know ended in SIGSEGV.
#[test]
fn the_shim_returns_errors_for_unknown_pointers() {
    let d = Daemon::start("pointers", "", None, "660");
    run_client("client_unknown_pointers", &d.socket);
}

fn wait_for_stdin() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

// ---- clients (child processes) ---------------------------------------------------------------

#[test]
#[ignore = "run in a child process"]
fn client_smoke() {
    if !is_child() {
        return;
    }
    clients::vec_add_smoke();
}

/// Connects and starts work, says READY, waits for a line, then does more work that needs
/// the daemon's descriptors (pinned memory) and checks the results.
#[test]
#[ignore = "run in a child process"]
fn client_steady() {
    if !is_child() {
        return;
    }
    init_client();
    let (_m, add, _, _) = load_kernels();
    let n = 1024;
    let mut a = 0;
    cu!(cuMemAlloc_v2(&mut a, n * 4));
    println!("READY");
    wait_for_stdin();
    let mut host: *mut c_void = null_mut();
    cu!(cuMemHostAlloc(&mut host, n * 4 * 2, 0));
    // SAFETY: the allocation holds 2n floats.
    let h = unsafe { std::slice::from_raw_parts_mut(host as *mut f32, 2 * n) };
    let x = floats(n, 9);
    h[..n].copy_from_slice(&x);
    cu!(cuMemcpyHtoD_v2(a, host, n * 4));
    let mut c = 0;
    cu!(cuMemAlloc_v2(&mut c, n * 4));
    cu!(launch_vec_add(add, a, a, c, n as i32, null_mut()));
    // SAFETY: the second half of the allocation.
    cu!(cuMemcpyDtoH_v2(
        (host as *mut f32).add(n) as *mut c_void,
        c,
        n * 4
    ));
    for i in 0..n {
        assert_eq!(h[n + i], 2.0 * x[i]);
    }
    cu!(cuMemFreeHost(host));
}

#[test]
#[ignore = "run in a child process"]
fn client_pinned_quota() {
    if !is_child() {
        return;
    }
    init_client();
    let mut p: *mut c_void = null_mut();
    cu!(cuMemHostAlloc(&mut p, 8 << 20, 0));
    let mut q: *mut c_void = null_mut();
    // SAFETY: out-pointer to a local.
    let over = unsafe { cuMemHostAlloc(&mut q, 2 << 20, 0) };
    assert_ne!(over, CUresult::CUDA_SUCCESS, "past host_memory_quota");
    cu!(cuMemFreeHost(p));
}

#[test]
#[ignore = "run in a child process"]
fn client_stale_graph() {
    if !is_child() {
        return;
    }
    init_client();
    let mut stream = null_mut();
    cu!(cuStreamCreate(&mut stream, 1));
    let mut d = 0;
    cu!(cuMemAlloc_v2(&mut d, 4096));
    let mut graph = null_mut();
    cu!(cuGraphCreate(&mut graph, 0));
    let params = CUDA_MEMSET_NODE_PARAMS {
        dst: d,
        pitch: 0,
        value: 7,
        elementSize: 4,
        width: 1024,
        height: 1,
    };
    let mut node = null_mut();
    // SAFETY: a context is current; `params` lives across the call.
    cu!(cuGraphAddMemsetNode(
        &mut node,
        graph,
        std::ptr::null(),
        0,
        &params,
        null_mut()
    ));
    let mut exec = null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut exec, graph, 0));
    cu!(cuGraphLaunch(exec, stream));
    cu!(cuStreamSynchronize(stream));
    cu!(cuMemFree_v2(d));
    // A plain memset of the freed memory is refused ...
    // SAFETY: no host memory involved.
    let plain = unsafe { cuMemsetD32_v2(d, 7, 1024) };
    let plain = match plain {
        // SAFETY: no arguments.
        CUresult::CUDA_SUCCESS => unsafe { cuCtxSynchronize() },
        r => r,
    };
    assert_ne!(plain, CUresult::CUDA_SUCCESS);
    // ... and so is the graph whose node names it.
    // SAFETY: handles made above.
    let launched = match unsafe { cuGraphLaunch(exec, stream) } {
        // SAFETY: a stream made above.
        CUresult::CUDA_SUCCESS => unsafe { cuStreamSynchronize(stream) },
        r => r,
    };
    assert_ne!(
        launched,
        CUresult::CUDA_SUCCESS,
        "a graph launch wrote memory the tenant had freed"
    );
    // The tenant's fresh memory and graphs still work.
    let mut e = 0;
    cu!(cuMemAlloc_v2(&mut e, 4096));
    cu!(cuMemsetD32_v2(e, 1, 1024));
    cu!(cuCtxSynchronize());
}

/// Sends a Hello (or, with `BATON_TEST_REQUEST=status`, a Status) on a raw connection and
/// prints the answer's kind.
#[test]
#[ignore = "run in a child process"]
fn client_raw_hello() {
    if !is_child() {
        return;
    }
    let socket = std::env::var_os("BATON_TEST_SOCKET").unwrap();
    let c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = match std::env::var("BATON_TEST_REQUEST").as_deref() {
        Ok("status") => Request::Status,
        _ => hello(None),
    };
    let _ = control::send(&c, &req, &[]);
    match control::recv::<Response>(&c).unwrap().0 {
        Response::Welcome { .. } => println!("Welcome"),
        Response::Status(_) => println!("Status"),
        Response::Error { message, .. } => println!("Error: {message}"),
        other => println!("{other:?}"),
    }
}

#[test]
#[ignore = "run in a child process"]
fn client_hold_objects() {
    if !is_child() {
        return;
    }
    init_client();
    // Four of the tenant's six streams, three of its four events.
    for _ in 0..4 {
        let mut s = null_mut();
        cu!(cuStreamCreate(&mut s, 1));
    }
    for _ in 0..3 {
        let mut e = null_mut();
        cu!(cuEventCreate(&mut e, 0));
    }
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, 6 << 20));
    println!("READY");
    wait_for_stdin();
}

#[test]
#[ignore = "run in a child process"]
fn client_over_caps() {
    if !is_child() {
        return;
    }
    init_client();
    let mut made = 0;
    for _ in 0..4 {
        let mut s = null_mut();
        // SAFETY: out-pointer to a local.
        if unsafe { cuStreamCreate(&mut s, 1) } == CUresult::CUDA_SUCCESS {
            made += 1;
        }
    }
    // The legacy stream the shim may set up counts too: at most two more.
    assert!(made <= 2, "{made} streams past the tenant's quota");
    let mut e = null_mut();
    cu!(cuEventCreate(&mut e, 0));
    let mut f = null_mut();
    // SAFETY: out-pointer to a local.
    let over = unsafe { cuEventCreate(&mut f, 0) };
    assert_ne!(over, CUresult::CUDA_SUCCESS, "a fifth event for the tenant");
    let mut p = 0;
    // SAFETY: out-pointer to a local.
    let over = unsafe { cuMemAlloc_v2(&mut p, 4 << 20) };
    assert_eq!(
        over,
        CUresult::CUDA_ERROR_OUT_OF_MEMORY,
        "the quota is the tenant's"
    );
    cu!(cuMemAlloc_v2(&mut p, 2 << 20));
}

#[test]
#[ignore = "run in a child process"]
fn client_unknown_pointers() {
    if !is_child() {
        return;
    }
    init_client();
    let unknown: CUdeviceptr = 0x7dea_dbee_f000;
    let mut host = vec![0u8; 4096];
    let mut d = 0;
    cu!(cuMemAlloc_v2(&mut d, 4096));
    let want = CUresult::CUDA_ERROR_INVALID_VALUE;
    // SAFETY: the host buffer is valid for 4096 bytes; the device pointers are the test.
    unsafe {
        assert_eq!(
            cuMemcpyDtoH_v2(host.as_mut_ptr() as *mut c_void, unknown, 4096),
            want
        );
        assert_eq!(
            cuMemcpyHtoD_v2(unknown, host.as_ptr() as *const c_void, 4096),
            want
        );
        assert_eq!(cuMemcpyDtoD_v2(unknown, d, 4096), want);
        assert_eq!(cuMemcpyDtoD_v2(d, unknown, 4096), want);
        assert_eq!(
            cuMemcpyDtoHAsync_v2(host.as_mut_ptr() as *mut c_void, unknown, 4096, null_mut()),
            want
        );
        assert_eq!(
            cuMemcpyHtoDAsync_v2(unknown, host.as_ptr() as *const c_void, 4096, null_mut()),
            want
        );
        let mut p: CUDA_MEMCPY2D = std::mem::zeroed();
        p.srcMemoryType = CUmemorytype::CU_MEMORYTYPE_DEVICE;
        p.srcDevice = unknown;
        p.srcPitch = 64;
        p.dstMemoryType = CUmemorytype::CU_MEMORYTYPE_HOST;
        p.dstHost = host.as_mut_ptr() as *mut c_void;
        p.dstPitch = 64;
        p.WidthInBytes = 64;
        p.Height = 4;
        assert_eq!(cuMemcpy2D_v2(&p), want);
        // A memset of unknown memory is the daemon's to refuse.
        let r = match cuMemsetD32_v2(unknown, 0, 16) {
            CUresult::CUDA_SUCCESS => cuCtxSynchronize(),
            r => r,
        };
        assert_ne!(r, CUresult::CUDA_SUCCESS);
    }
    // The process and its context are fine.
    cu!(cuMemcpyHtoD_v2(d, host.as_ptr() as *const c_void, 4096));
}
