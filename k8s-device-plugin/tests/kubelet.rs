//! The plugin against the kubelet's side of the device-plugin protocol.
//!
//! No cluster can run where these tests run, so a test double stands in for the kubelet: a
//! `Registration` server on `kubelet.sock` in a temporary directory (built from the same
//! generated `api.proto` code), which then calls the plugin on the socket it registered, as
//! the kubelet's device manager does. A stand-in daemon answers `Status` over Baton's real
//! control protocol, so health follows the same probe as against `batond`.

use baton_device_plugin::api::device_plugin_client::DevicePluginClient;
use baton_device_plugin::api::registration_server::{Registration, RegistrationServer};
use baton_device_plugin::api::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    ListAndWatchResponse, PreferredAllocationRequest, RegisterRequest,
};
use baton_device_plugin::config::PluginConfig;
use baton_device_plugin::kubelet::{connect_unix, run};
use baton_ipc::control::{self, Request, Response, StatusReport};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::Streaming;

/// Generous bound for anything the plugin does after a poll period.
const WITHIN: Duration = Duration::from_secs(5);

struct Kubelet {
    tx: mpsc::UnboundedSender<RegisterRequest>,
}

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(
        &self,
        r: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<baton_device_plugin::api::Empty>, tonic::Status> {
        let r = r.into_inner();
        if r.version != "v1beta1" {
            return Err(tonic::Status::invalid_argument("unsupported version"));
        }
        let _ = self.tx.send(r);
        Ok(tonic::Response::new(Empty {}))
    }
}

/// The kubelet's registration server; dropping the handle's sender stops it.
struct KubeletDouble {
    registrations: mpsc::UnboundedReceiver<RegisterRequest>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeletDouble {
    fn start(dir: &Path) -> KubeletDouble {
        let path = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (tx, registrations) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(Kubelet { tx }))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        KubeletDouble {
            registrations,
            stop: Some(stop),
            task,
        }
    }

    async fn next_registration(&mut self) -> RegisterRequest {
        tokio::time::timeout(WITHIN, self.registrations.recv())
            .await
            .expect("the plugin registers within 5 s")
            .expect("registration channel open")
    }

    /// What a kubelet restart does to the directory: its server goes, it deletes the plugin
    /// sockets and its own, and a new one listens.
    async fn restart(mut self, dir: &Path) -> KubeletDouble {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sock") {
                std::fs::remove_file(p).unwrap();
            }
        }
        KubeletDouble::start(dir)
    }
}

/// Answers `Status` like `batond` with `gpus` devices until stopped; stopping removes the socket
/// as a daemon that is gone leaves none listening.
struct DaemonDouble {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DaemonDouble {
    fn start(dir: &Path, gpus: usize) -> DaemonDouble {
        let path = dir.join("baton.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        if let Ok((Request::Status, _)) = control::recv::<Request>(&conn) {
                            let report = StatusReport {
                                daemon_pid: std::process::id(),
                                executor: "sim".into(),
                                devices: (0..gpus).map(|i| format!("Simulated GPU {i}")).collect(),
                                ..StatusReport::default()
                            };
                            let _ = control::send(&conn, &Response::Status(report), &[]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        DaemonDouble {
            path,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for DaemonDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Node {
    _dir: tempfile::TempDir,
    kubelet_dir: PathBuf,
    socket_dir: PathBuf,
    shim: PathBuf,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let kubelet_dir = dir.path().join("device-plugins");
    let socket_dir = dir.path().join("run-baton");
    std::fs::create_dir_all(&kubelet_dir).unwrap();
    std::fs::create_dir_all(&socket_dir).unwrap();
    let shim = dir.path().join("libcuda.so.1");
    std::fs::write(&shim, b"shim").unwrap();
    Node {
        kubelet_dir,
        socket_dir,
        shim,
        _dir: dir,
    }
}

fn config(n: &Node, extra: &str) -> PluginConfig {
    let text = format!(
        "kubelet_dir = {:?}\nsocket_dir = {:?}\nshim = {:?}\nhealth_interval_ms = 50\nkubelet_poll_ms = 50\n{extra}",
        n.kubelet_dir, n.socket_dir, n.shim
    );
    PluginConfig::parse(&text).unwrap()
}

/// Starts the plugin; send on the returned sender (or drop it) to stop it.
fn start_plugin(
    cfg: PluginConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(cfg, async {
        let _ = rx.await;
    }));
    (tx, task)
}

async fn plugin_client(n: &Node, endpoint: &str) -> DevicePluginClient<tonic::transport::Channel> {
    DevicePluginClient::new(
        connect_unix(&n.kubelet_dir.join(endpoint))
            .await
            .expect("the registered endpoint serves"),
    )
}

/// A plugin registered with a kubelet double, beside a daemon double serving some GPUs, and a
/// client on the endpoint it registered. Fields drop in order: the plugin stops before the
/// doubles and the node's directory go.
struct Registered {
    client: DevicePluginClient<tonic::transport::Channel>,
    _stop: oneshot::Sender<()>,
    _task: tokio::task::JoinHandle<Result<(), String>>,
    _kubelet: KubeletDouble,
    _daemon: DaemonDouble,
    node: Node,
}

/// Starts a daemon double with `gpus` GPUs, a kubelet double and the plugin configured by
/// `cfg`, and connects to the plugin once it has registered.
async fn registered(gpus: usize, cfg: impl FnOnce(&Node) -> PluginConfig) -> Registered {
    let n = node();
    let daemon = DaemonDouble::start(&n.socket_dir, gpus);
    let mut kubelet = KubeletDouble::start(&n.kubelet_dir);
    let (stop, task) = start_plugin(cfg(&n));
    let reg = kubelet.next_registration().await;
    let client = plugin_client(&n, &reg.endpoint).await;
    Registered {
        client,
        _stop: stop,
        _task: task,
        _kubelet: kubelet,
        _daemon: daemon,
        node: n,
    }
}

async fn next_list(s: &mut Streaming<ListAndWatchResponse>) -> Vec<(String, String)> {
    let r = tokio::time::timeout(WITHIN, s.message())
        .await
        .expect("a device list within 5 s")
        .expect("stream healthy")
        .expect("stream open");
    r.devices.into_iter().map(|d| (d.id, d.health)).collect()
}

fn all_health(list: &[(String, String)], health: &str) -> bool {
    list.iter().all(|(_, h)| h == health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_lists_shares_whose_health_follows_the_daemon() {
    let n = node();
    let mut daemon = DaemonDouble::start(&n.socket_dir, 2);
    let mut kubelet = KubeletDouble::start(&n.kubelet_dir);
    let (stop, task) = start_plugin(config(&n, "shares_per_gpu = 3\n"));

    let reg = kubelet.next_registration().await;
    assert_eq!(reg.version, "v1beta1");
    assert_eq!(reg.resource_name, "baton.dev/gpu");
    assert_eq!(reg.endpoint, "baton.sock");
    let opts = reg.options.expect("options sent");
    assert!(opts.get_preferred_allocation_available);
    assert!(!opts.pre_start_required);

    let mut client = plugin_client(&n, &reg.endpoint).await;
    let o = client.get_device_plugin_options(Empty {}).await.unwrap();
    assert_eq!(o.into_inner(), opts);

    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = next_list(&mut stream).await;
    let ids: Vec<&str> = first.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(
        ids,
        [
            "gpu0-share0",
            "gpu0-share1",
            "gpu0-share2",
            "gpu1-share0",
            "gpu1-share1",
            "gpu1-share2"
        ]
    );
    assert!(all_health(&first, "Healthy"), "{first:?}");

    // The daemon goes: every share turns unhealthy.
    daemon.stop();
    let down = next_list(&mut stream).await;
    assert_eq!(down.len(), 6);
    assert!(all_health(&down, "Unhealthy"), "{down:?}");

    // It comes back with one GPU: only GPU 0's shares are healthy.
    let _daemon = DaemonDouble::start(&n.socket_dir, 1);
    let back = next_list(&mut stream).await;
    for (id, h) in &back {
        let want = if id.starts_with("gpu0-") {
            "Healthy"
        } else {
            "Unhealthy"
        };
        assert_eq!(h, want, "{back:?}");
    }

    stop.send(()).unwrap();
    tokio::time::timeout(WITHIN, task)
        .await
        .expect("the plugin stops within 5 s")
        .unwrap()
        .unwrap();
    assert!(
        !n.kubelet_dir.join("baton.sock").exists(),
        "the plugin removes its socket when it stops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_gpus_from_the_daemon_when_not_configured() {
    let mut p = registered(3, |n| {
        let mut cfg = config(n, "shares_per_gpu = 2\n");
        cfg.gpus = None;
        cfg
    })
    .await;
    let client = &mut p.client;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    assert_eq!(next_list(&mut stream).await.len(), 6);
}

fn request(ids: &[&str]) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_gives_mounts_environment_and_quota_for_the_asked_shares() {
    let mut p = registered(1, |n| {
        config(
            n,
            "gpus = 1\nshares_per_gpu = 4\nmemory_per_share = \"10GiB\"\n",
        )
    })
    .await;
    let client = &mut p.client;

    let resp = client
        .allocate(request(&["gpu0-share1", "gpu0-share3"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses.len(), 1);
    let c = &resp.container_responses[0];
    assert_eq!(c.envs["BATON_SHARES"], "2");
    assert_eq!(c.envs["BATON_GPUS"], "0");
    assert_eq!(c.envs["BATON_MEMORY_QUOTA"], (20u64 << 30).to_string());
    assert_eq!(c.envs["LD_PRELOAD"], "/usr/local/lib/baton/libcuda.so.1");
    assert_eq!(c.envs["BATON_SOCKET"], "/run/baton/baton.sock");
    assert!(
        !c.envs.contains_key("BATON_TENANT"),
        "the pod names its tenant"
    );
    let mounts: Vec<(&str, &str, bool)> = c
        .mounts
        .iter()
        .map(|m| (m.host_path.as_str(), m.container_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                p.node.shim.to_str().unwrap(),
                "/usr/local/lib/baton/libcuda.so.1",
                true
            ),
            (p.node.socket_dir.to_str().unwrap(), "/run/baton", true),
        ]
    );
    assert!(c.cdi_devices.is_empty());
    assert!(
        c.devices.is_empty(),
        "no device nodes: the daemon owns the GPU"
    );

    // Two containers in one request get one answer each.
    let mut two = request(&["gpu0-share0"]);
    two.container_requests.push(ContainerAllocateRequest {
        devices_ids: vec!["gpu0-share2".into()],
    });
    let resp = client.allocate(two).await.unwrap().into_inner();
    assert_eq!(resp.container_responses.len(), 2);
    assert_eq!(
        resp.container_responses[1].envs["BATON_MEMORY_QUOTA"],
        (10u64 << 30).to_string()
    );

    // More shares than the node has, an unknown share, a repeated one.
    let five = request(&[
        "gpu0-share0",
        "gpu0-share1",
        "gpu0-share2",
        "gpu0-share3",
        "gpu0-share0",
    ]);
    let e = client.allocate(five).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "asked for 5 shares, but this node has 4 (1 GPU(s) with 4 shares each)"
    );
    let e = client
        .allocate(request(&["gpu1-share0"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("unknown device ID \"gpu1-share0\""),
        "{}",
        e.message()
    );
    let e = client
        .allocate(request(&["gpu0-share1", "gpu0-share1"]))
        .await
        .unwrap_err();
    assert!(e.message().contains("named twice"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_with_cdi_names_the_device() {
    let mut p = registered(2, |n| {
        config(n, "gpus = 2\nshares_per_gpu = 2\ncdi = true\n")
    })
    .await;
    let client = &mut p.client;
    let resp = client
        .allocate(request(&["gpu1-share0", "gpu1-share1"]))
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    let names: Vec<&str> = c.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["baton.dev/gpu=1"]);
    assert!(c.mounts.is_empty(), "the CDI spec carries the mounts");
    assert!(!c.envs.contains_key("LD_PRELOAD"));
    assert_eq!(c.envs["BATON_SHARES"], "2");
    assert!(
        !c.envs.contains_key("BATON_MEMORY_QUOTA"),
        "no memory_per_share"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_allocation_packs_a_container_onto_one_gpu() {
    let mut p = registered(2, |n| config(n, "gpus = 2\nshares_per_gpu = 4\n")).await;
    let client = &mut p.client;
    let ask = |avail: &[&str], size: i32| PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: avail.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: vec![],
            allocation_size: size,
        }],
    };
    let avail = [
        "gpu0-share2",
        "gpu0-share3",
        "gpu1-share0",
        "gpu1-share1",
        "gpu1-share2",
    ];
    let r = client
        .get_preferred_allocation(ask(&avail, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.container_responses[0].device_i_ds,
        ["gpu0-share2", "gpu0-share3"]
    );
    let r = client
        .get_preferred_allocation(ask(&avail, 3))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.container_responses[0]
            .device_i_ds
            .iter()
            .all(|d| d.starts_with("gpu1-")),
        "{r:?}"
    );
    let e = client
        .get_preferred_allocation(ask(&avail, 6))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "asked for 6 shares, but only 5 are available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_after_the_kubelet_restarts() {
    let n = node();
    let _daemon = DaemonDouble::start(&n.socket_dir, 1);
    let mut kubelet = KubeletDouble::start(&n.kubelet_dir);
    let (_stop, _task) = start_plugin(config(&n, "gpus = 1\n"));
    let first = kubelet.next_registration().await;

    let mut kubelet = kubelet.restart(&n.kubelet_dir).await;
    let again = kubelet.next_registration().await;
    assert_eq!(again, first);
    // The new socket serves (the restart deleted the old one).
    let mut client = plugin_client(&n, &again.endpoint).await;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let list = next_list(&mut stream).await;
    assert_eq!(list.len(), 4);
    assert!(all_health(&list, "Healthy"));

    // Only the kubelet's socket recreated (its plugin sockets kept): the same.
    std::fs::remove_file(n.kubelet_dir.join("kubelet.sock")).unwrap();
    let _k = KubeletDouble::start(&n.kubelet_dir);
    let mut k = _k;
    let third = k.next_registration().await;
    assert_eq!(third, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_kubelet_that_is_not_there_yet() {
    let n = node();
    let _daemon = DaemonDouble::start(&n.socket_dir, 1);
    let (_stop, task) = start_plugin(config(&n, "gpus = 1\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the plugin keeps trying");
    let mut kubelet = KubeletDouble::start(&n.kubelet_dir);
    kubelet.next_registration().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_directory_is_a_clear_error() {
    let n = node();
    let mut cfg = config(&n, "gpus = 1\n");
    cfg.socket_dir = n.socket_dir.join("absent");
    let (_stop, task) = start_plugin(cfg);
    let e = task.await.unwrap().unwrap_err();
    assert!(e.starts_with("`socket_dir` "), "{e}");
    assert!(e.contains("absent is not a directory"), "{e}");
}

/// The real `batond` (simulated executor), from the workspace's build; killed when dropped.
struct Batond(std::process::Child);

impl Drop for Batond {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn batond(socket: &Path) -> Batond {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("batond");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    std::process::Command::new(bin)
        .args(["--executor", "sim", "--socket"])
        .arg(socket)
        .env_remove("LD_PRELOAD")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Batond)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_real_daemon_and_a_killed_one_is_unhealthy() {
    let n = node();
    let socket = n.socket_dir.join("baton.sock");
    let mut daemon = batond(&socket);
    let mut kubelet = KubeletDouble::start(&n.kubelet_dir);
    let mut cfg = config(&n, "shares_per_gpu = 2\n");
    cfg.gpus = None;
    let (_stop, _task) = start_plugin(cfg);
    let reg = kubelet.next_registration().await;
    let mut client = plugin_client(&n, &reg.endpoint).await;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    // The simulator serves one GPU: two shares, healthy.
    let up = next_list(&mut stream).await;
    assert_eq!(up.len(), 2);
    assert!(all_health(&up, "Healthy"), "{up:?}");
    // Killed, it leaves its socket file behind; nobody answers there.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    assert!(socket.exists());
    let down = next_list(&mut stream).await;
    assert!(all_health(&down, "Unhealthy"), "{down:?}");
}
