//! A client in a container, given Baton's GPU through CDI by a real container runtime
//! (rootful `podman`), against `batond --executor sim` on the host.
//!
//! The root filesystem is built here: a small C client (`tests/containers/vecadd_client.c`)
//! and the C libraries it and the shim need, copied from the host; it holds no `libcuda.so.1`,
//! so the client reaches a driver only through the CDI device's edits (the shim mounted and
//! preloaded, the socket directory mounted). The test checks the sum the client computed
//! through Baton, and what `baton status` shows for it: its host pid, and its uid as the kernel
//! reports it across user namespaces, on which the policy's binding of the spec's
//! `BATON_TENANT` to a uid depends (a rootful container and one with its root mapped to
//! another host uid).
//!
//! Where podman cannot run containers (not installed, not root, no namespaces), the test says
//! why on stderr and passes without checking anything.

use baton_ipc::control::{self, ClientStatus, Request, Response};
use baton_tests::daemon::{assert_success, batond_sim, spawn_serving};
use baton_tests::workspace_bin;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skip(why: &str) {
    eprintln!("containers: skipped: {why}");
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes what the test made outside its temporary directory.
struct Cleanup {
    spec: PathBuf,
    daemon: Option<std::process::Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spec);
        if let Some(d) = &mut self.daemon {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies `bin` and every library `ldd` names for it and for `extra` into `root`, at the same
/// paths (symlinks followed, so the copies are plain files).
fn populate(root: &Path, bin: &Path, extra: &[&Path]) -> Result<(), String> {
    let mut libs = Vec::new();
    for f in std::iter::once(bin).chain(extra.iter().copied()) {
        let out = Command::new("ldd")
            .arg(f)
            .output()
            .map_err(|e| format!("ldd: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        libs.extend(
            text.split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(PathBuf::from),
        );
    }
    libs.sort();
    libs.dedup();
    for l in libs {
        let to = root.join(l.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&l, &to).map_err(|e| format!("copying {}: {e}", l.display()))?;
    }
    std::fs::copy(bin, root.join("client")).unwrap();
    Ok(())
}

/// `podman run` with what every host here accepts: cgroupfs (no systemd needed), lowered
/// file and process limits (podman raises them by default, which a host without
/// CAP_SYS_RESOURCE refuses), no network, and runc where installed (crun 1.8 refuses hosts
/// with a hybrid cgroup layout).
fn podman_run(root: &Path, device: Option<&str>, extra: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.args(["--cgroup-manager", "cgroupfs"]);
    if have("runc", "--version") {
        c.args(["--runtime", "runc"]);
    }
    c.args(["run", "--rm", "-i", "--network", "none"]).args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    if let Some(d) = device {
        c.args(["--device", d]);
    }
    c.args(extra);
    c.arg("--rootfs").arg(root).arg("/client");
    c
}

#[test]
fn a_client_in_a_podman_container_uses_the_gpu_through_cdi() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return skip(&format!(
            "rootful podman needs root, and this runs as uid {euid}"
        ));
    }
    if !have("podman", "--version") {
        return skip("podman is not installed (Debian: apt-get install podman runc)");
    }
    if !have("cc", "--version") || !have("ldd", "--version") {
        return skip("no C compiler or no ldd to build the container's root filesystem");
    }
    let dir = std::env::temp_dir().join(format!("baton-containers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (root, run) = (dir.join("rootfs"), dir.join("run"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let cdi_dir = Path::new("/var/run/cdi");
    let kind = format!("t{}.baton.dev/gpu", std::process::id());
    let mut guard = Cleanup {
        spec: cdi_dir.join(format!("baton-test-{}.json", std::process::id())),
        daemon: None,
        dir: dir.clone(),
    };

    let client = dir.join("vecadd_client");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("containers/vecadd_client.c");
    let cc = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&client)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap();
    assert_success(&cc, "cc");
    let shim = workspace_bin("libcuda.so");
    populate(&root, &client, &[&shim]).unwrap();

    // Without the device the root filesystem has no driver; this also shows podman runs here.
    let out = podman_run(&root, None, &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.contains("no libcuda.so.1") {
        return skip(&format!(
            "podman cannot run a container here: {}",
            stderr.trim()
        ));
    }

    let socket = run.join("baton.sock");
    // The tenant the spec names is bound to host uid 200000: only a container whose root is
    // mapped there may use it. The socket is open to every uid, as on a Kubernetes node,
    // where the device plugin's mount is what gives a container access.
    let policy = dir.join("baton.toml");
    std::fs::write(
        &policy,
        format!("[[tenant]]\nname = \"in-a-container\"\nuid = {MAPPED_ROOT}\nclass = \"high\"\n"),
    )
    .unwrap();
    guard.daemon = Some(spawn_serving(
        batond_sim(&socket)
            .args(["--socket-mode", "666", "--config"])
            .arg(&policy)
            .stderr(Stdio::null()),
        &socket,
    ));

    std::fs::create_dir_all(cdi_dir).unwrap();
    let baton = workspace_bin("baton");
    let made = Command::new(&baton)
        .args(["cdi", "--kind", &kind, "--tenant", "in-a-container"])
        .arg("--shim")
        .arg(&shim)
        .arg("--socket-dir")
        .arg(&run)
        .arg("--output")
        .arg(&guard.spec)
        .output()
        .unwrap();
    assert_success(&made, "baton cdi");
    // It counted the daemon's GPUs itself: the simulator has one.
    let spec = std::fs::read_to_string(&guard.spec).unwrap();
    assert!(
        spec.contains("\"name\": \"0\"") && !spec.contains("\"name\": \"1\""),
        "{spec}"
    );

    let device = format!("{kind}=0");
    // Rootful, no user namespace: the container's root is the host's uid 0, which the policy
    // does not bind to the tenant, so it is accounted as uid:0 whatever the spec claims.
    let me = in_container(&root, &device, &[], &socket, &baton);
    assert_eq!(me.uid, 0);
    assert_eq!(me.tenant, "uid:0");
    assert_eq!(me.class, "normal");
    // Root mapped to host uid 200000 in a user namespace: the kernel reports that uid, the
    // binding holds, and the container gets the tenant and its class.
    let map = format!("0:{MAPPED_ROOT}:65536");
    let me = in_container(
        &root,
        &device,
        &["--uidmap", &map, "--gidmap", &map],
        &socket,
        &baton,
    );
    assert_eq!(me.uid, MAPPED_ROOT);
    assert_eq!(me.tenant, "in-a-container");
    assert_eq!(me.class, "high");
}

/// The host uid a user-namespaced container's root is mapped to.
const MAPPED_ROOT: u32 = 200_000;

/// Runs the client in a container with the CDI `device`, checks its result and that the
/// daemon's status (and `baton status`) shows it by its host pid, and returns its row.
fn in_container(
    root: &Path,
    device: &str,
    extra: &[&str],
    socket: &Path,
    baton: &Path,
) -> ClientStatus {
    let mut child = podman_run(root, Some(device), extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(result)) = lines.next() else {
        let out = child.wait_with_output().unwrap();
        panic!("client: {}", String::from_utf8_lossy(&out.stderr));
    };
    assert!(result.starts_with("vecAdd c[255] = 765.0 pid "), "{result}");
    let pid_inside: u32 = result.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let c = UnixStream::connect(socket).unwrap();
    control::send(&c, &Request::Status, &[]).unwrap();
    let Response::Status(report) = control::recv::<Response>(&c).unwrap().0 else {
        panic!("no status");
    };
    assert_eq!(report.clients.len(), 1, "{report:?}");
    let me = report.clients[0].clone();
    // The container's pid namespace numbers the client 1; the daemon sees the host's pid.
    assert_eq!(pid_inside, 1);
    assert_ne!(me.pid, pid_inside);
    assert!(Path::new(&format!("/proc/{}", me.pid)).exists());
    // And `baton status` shows the same row.
    let shown = Command::new(baton)
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&shown.stdout);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&me.pid.to_string()))
        .unwrap_or_else(|| panic!("no row for pid {} in\n{table}", me.pid));
    assert!(row.contains(&me.tenant), "{row}");

    drop(child.stdin.take());
    let done = child.wait_with_output().unwrap();
    assert_success(&done, "client");
    // Gone from the daemon before the next container connects.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = UnixStream::connect(socket).unwrap();
        control::send(&c, &Request::Status, &[]).unwrap();
        match control::recv::<Response>(&c).unwrap().0 {
            Response::Status(r) if r.clients.is_empty() => break,
            _ => assert!(Instant::now() < deadline, "client still listed after 5 s"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    me
}
