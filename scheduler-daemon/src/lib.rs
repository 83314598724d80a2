//! batond: the one process that owns the GPU and serves every Baton client.
//!
//! - [`server`]: the control socket; one connection thread and one [`session`] per client.
//! - [`session`]: a client's region, handle tables and accounting; drains its command ring.
//! - [`executor`]: every driver call ([`executor::cuda`]) or its test double ([`executor::sim`]).
//! - [`fault`]: a kernel fault in the shared context: who caused it, and the context reset.
//! - [`restart`]: starting over in a fresh process image when the driver cannot reset.
//! - [`host_memory`]: pinned host memory mapped at the same address in daemon and client.
//! - [`config`]: the policy file (`[daemon]`, `[default]`, `[[tenant]]`) and tenant resolution.
//! - [`scheduler`]: scheduling policies (`passthrough`, `priority`, `fair`, `srpt`), their
//!   queues and cost estimates, and a simulated GPU to test them on.

pub mod config;
pub mod executor;
pub mod fault;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod host_memory;
pub mod metrics;
pub mod restart;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod systemd;

use executor::Executor;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which GPU the daemon drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// The real CUDA driver.
    Cuda,
    /// A simulated GPU (tests only: runs a few known kernels on the CPU).
    Sim,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Control socket path [default: $BATON_SOCKET, else /run/baton/baton.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Permissions of the socket file (octal): who may become a client [default: the policy
    /// file's, else 660]
    #[arg(long, value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Policy file (TOML): scheduling policy, tenants, quotas; see docs/config.example.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ExecutorKind::Cuda)]
    pub executor: ExecutorKind,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("not an octal mode: {e}"))
}

/// Sets up stderr logging (`BATON_LOG` filters, e.g. `BATON_LOG=debug`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// Binds the control socket: refuses to steal one a live daemon is serving, replaces a stale one.
fn bind(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("a daemon is already serving {}", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale socket {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// Opens the GPU (or simulator) and the socket, then serves clients until SIGINT/SIGTERM.
/// Returns an error message for the user when it cannot start.
pub fn run(opts: &Options) -> Result<(), String> {
    let config = match &opts.config {
        Some(p) => config::Config::load(p).map_err(|e| e.to_string())?,
        None => config::Config::default(),
    };
    // The command line wins over the file, the file over the defaults.
    let path = opts
        .socket
        .clone()
        .or_else(|| config.daemon.socket.clone())
        .unwrap_or_else(baton_ipc::control::socket_path);
    let mode = opts
        .socket_mode
        .or(config.daemon.socket_mode)
        .unwrap_or(0o660);
    // Block the stop signals in every thread; one thread waits for them and exits cleanly.
    let mut stop = nix::sys::signal::SigSet::empty();
    stop.add(nix::sys::signal::Signal::SIGINT);
    stop.add(nix::sys::signal::Signal::SIGTERM);
    stop.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;

    // Reserve the pinned-memory address range before the driver maps anything.
    let arena = host_memory::HostArena::reserve()
        .map_err(|e| format!("reserving host address space: {e}"))?;
    let exec: Arc<dyn Executor> = match opts.executor {
        ExecutorKind::Cuda => {
            Arc::new(executor::cuda::CudaExecutor::open().map_err(|e| e.to_string())?)
        }
        ExecutorKind::Sim => Arc::new(executor::sim::SimExecutor::new()),
    };
    let restarted = restart::inherited_listener();
    let listener = match restarted {
        Some(l) => {
            tracing::warn!(socket = %path.display(), "batond started over after a kernel fault; serving the same socket");
            l
        }
        None => bind(&path, mode)?,
    };
    let devices: Vec<_> = exec.devices().iter().map(|d| d.name.clone()).collect();
    tracing::info!(socket = %path.display(), executor = exec.name(), ?devices, pid = std::process::id(), "batond ready");
    tracing::info!(policy = ?config.daemon.policy, tenants = config.tenants.len(), "policy file loaded");
    let metrics_addr = config.daemon.metrics_listen;
    let daemon = server::Daemon::new(exec, arena, config)?;
    daemon.monitor.carry_over(restart::faults_before());

    let sock = path.clone();
    std::thread::Builder::new()
        .name("baton-signals".into())
        .spawn(move || {
            let sig = stop.wait();
            systemd::stopping();
            tracing::info!(signal = ?sig, "stopping");
            let _ = std::fs::remove_file(&sock);
            std::process::exit(0);
        })
        .map_err(|e| e.to_string())?;
    if let Some(addr) = metrics_addr {
        metrics::serve(daemon.clone(), addr);
    }
    systemd::ready();
    daemon
        .serve(listener)
        .map_err(|e| format!("accepting clients: {e}"))
}
