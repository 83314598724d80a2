//! Serving the kubelet: one *generation* is a fresh plugin socket, a server on it, and a
//! registration. When the kubelet restarts it deletes the plugin sockets in its directory and
//! makes a new `kubelet.sock`; the plugin notices either (it polls both every
//! `kubelet_poll`) and starts a new generation, so the resource comes back without a restart
//! of the plugin's pod.

use crate::api::device_plugin_server::DevicePluginServer;
use crate::api::registration_client::RegistrationClient;
use crate::api::RegisterRequest;
use crate::config::PluginConfig;
use crate::health::{self, DaemonHealth};
use crate::service::{options, Plugin};
use crate::shares::Inventory;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

/// A file's identity. A recreated socket may get the freed inode number back, so its change
/// time is part of it.
type FileId = (u64, u64, i64, i64);

fn identity(p: &Path) -> Option<FileId> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Runs the plugin until `shutdown` completes. Returns an error only for what a restart of the
/// plugin cannot fix by waiting: a bad host layout, or the kubelet refusing the registration.
pub async fn run(cfg: PluginConfig, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    cfg.check_host().map_err(|e| e.to_string())?;
    let cfg = Arc::new(cfg);
    tokio::pin!(shutdown);

    let gpus = match cfg.gpus {
        Some(n) => n,
        None => tokio::select! {
            n = wait_for_daemon(&cfg) => n,
            () = &mut shutdown => return Ok(()),
        },
    };
    let inventory = Inventory {
        gpus,
        shares_per_gpu: cfg.shares_per_gpu,
    };
    tracing::info!(
        resource = %cfg.resource_name,
        gpus,
        shares_per_gpu = cfg.shares_per_gpu,
        "offering {} shares",
        inventory.total()
    );

    let (health_tx, health_rx) = watch::channel(health::check(&cfg.daemon_socket()).await);
    let watcher = tokio::spawn(watch_health(cfg.clone(), health_tx));

    let result = loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let served = match serve(&cfg, inventory, health_rx.clone(), stop_rx.clone()) {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        let plugin_socket = identity(&cfg.plugin_socket());
        let outcome = tokio::select! {
            r = register_and_watch(&cfg, plugin_socket) => r,
            () = &mut shutdown => Ok(false),
        };
        let _ = stop_tx.send(true);
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "plugin server ended with an error");
        }
        match outcome {
            Ok(true) => tracing::info!("the kubelet restarted: registering again"),
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    watcher.abort();
    let _ = std::fs::remove_file(cfg.plugin_socket());
    result
}

/// Binds the plugin socket (replacing a stale one) and serves on it until `stop` turns true.
fn serve(
    cfg: &Arc<PluginConfig>,
    inventory: Inventory,
    health: watch::Receiver<DaemonHealth>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, String> {
    let path = cfg.plugin_socket();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing the old {}: {e}", path.display())),
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    let plugin = Plugin::new(cfg.clone(), inventory, health, stop.clone());
    let mut stop = stop;
    Ok(tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            }),
    ))
}

/// Registers (retrying while the kubelet is not there), then waits for the kubelet to restart
/// or the plugin socket to go. `Ok(true)`: start a new generation.
async fn register_and_watch(
    cfg: &PluginConfig,
    plugin_socket: Option<FileId>,
) -> Result<bool, String> {
    // Watched before registering, so a kubelet that restarts right after answering is seen.
    let dir_events = DirEvents::watch(&cfg.kubelet_dir);
    let kubelet = loop {
        match register(cfg).await {
            Ok(()) => break identity(&cfg.kubelet_socket()),
            Err(Registration::Unreachable(e)) => {
                tracing::debug!(error = %e, "kubelet not reachable yet");
                tokio::time::sleep(cfg.kubelet_poll).await;
            }
            Err(Registration::Refused(e)) => return Err(e),
        }
    };
    tracing::info!(
        socket = %cfg.kubelet_socket().display(),
        resource = %cfg.resource_name,
        "registered with the kubelet"
    );
    loop {
        tokio::time::sleep(cfg.kubelet_poll).await;
        if dir_events.as_ref().is_some_and(|d| d.restarted(cfg)) {
            return Ok(true);
        }
        if identity(&cfg.plugin_socket()) != plugin_socket {
            return Ok(true);
        }
        let now = identity(&cfg.kubelet_socket());
        if now.is_some() && now != kubelet {
            return Ok(true);
        }
    }
}

/// Events in the kubelet's directory since registration. A socket deleted and made again
/// within one poll can come back with the same inode and change time, which only the events
/// show; the file identities remain the check where inotify is not available.
struct DirEvents(Inotify);

impl DirEvents {
    fn watch(dir: &Path) -> Option<DirEvents> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM;
        match ino.add_watch(dir, mask) {
            Ok(_) => Some(DirEvents(ino)),
            Err(e) => {
                tracing::debug!(error = %e, "no inotify on the kubelet's directory; polling only");
                None
            }
        }
    }

    /// Whether a new `kubelet.sock` appeared or the plugin's socket went.
    fn restarted(&self, cfg: &PluginConfig) -> bool {
        let mut seen = false;
        while let Ok(events) = self.0.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                let Some(name) = e.name.as_deref().and_then(|n| n.to_str()) else {
                    continue;
                };
                let made = e
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
                let gone = e
                    .mask
                    .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM);
                seen |=
                    (made && name == crate::api::KUBELET_SOCKET) || (gone && name == cfg.endpoint);
            }
        }
        seen
    }
}

enum Registration {
    /// No kubelet listening (yet): try again.
    Unreachable(String),
    /// The kubelet answered no (a version it does not speak, a resource name taken).
    Refused(String),
}

async fn register(cfg: &PluginConfig) -> Result<(), Registration> {
    let path = cfg.kubelet_socket();
    let channel = connect_unix(&path)
        .await
        .map_err(|e| Registration::Unreachable(format!("{}: {e}", path.display())))?;
    let request = RegisterRequest {
        version: crate::api::VERSION.to_owned(),
        endpoint: cfg.endpoint.clone(),
        resource_name: cfg.resource_name.clone(),
        options: Some(options()),
    };
    match RegistrationClient::new(channel).register(request).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::Unavailable => {
            Err(Registration::Unreachable(s.message().to_owned()))
        }
        Err(s) => Err(Registration::Refused(format!(
            "the kubelet refused the registration of {}: {}",
            cfg.resource_name,
            s.message()
        ))),
    }
}

/// A gRPC channel over a Unix socket (the URI is a placeholder the connector ignores).
pub async fn connect_unix(
    path: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_owned();
    tonic::transport::Endpoint::from_static("http://kubelet.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

/// The number of GPUs, once the daemon answers.
async fn wait_for_daemon(cfg: &PluginConfig) -> u32 {
    let socket = cfg.daemon_socket();
    let mut said = false;
    loop {
        match health::check(&socket).await {
            DaemonHealth::Up { gpus } if gpus > 0 => return gpus,
            h => {
                if !said {
                    tracing::info!(
                        socket = %socket.display(),
                        state = ?h,
                        "waiting for the daemon to count its GPUs (set `gpus` to skip this)"
                    );
                    said = true;
                }
            }
        }
        tokio::time::sleep(cfg.health_interval).await;
    }
}

async fn watch_health(cfg: Arc<PluginConfig>, tx: watch::Sender<DaemonHealth>) {
    let socket = cfg.daemon_socket();
    loop {
        tokio::time::sleep(cfg.health_interval).await;
        let h = health::check(&socket).await;
        tx.send_if_modified(|old| {
            if *old == h {
                return false;
            }
            match h {
                DaemonHealth::Down => tracing::warn!(
                    socket = %socket.display(),
                    "the daemon does not answer: its shares are unhealthy"
                ),
                DaemonHealth::Up { gpus } => {
                    tracing::info!(gpus, "the daemon answers: its shares are healthy")
                }
            }
            *old = h;
            true
        });
    }
}
