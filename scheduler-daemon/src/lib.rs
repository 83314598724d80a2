//! batond: the one process that owns the GPU and serves every Baton client.
//!
//! - [`server`]: the control socket; one connection thread and one [`session`] per client.
//! - [`session`]: a client's region, handle tables and accounting; drains its command ring.
//! - [`executor`]: every driver call ([`executor::cuda`]) or its test double ([`executor::sim`]).
//! - [`fault`]: a kernel fault in the shared context: who caused it, and the context reset.
//! - [`restart`]: starting over in a fresh process image when the driver cannot reset.
//! - [`host_memory`]: pinned host memory mapped at the same address in daemon and client.
//! - [`config`]: the policy file (`[daemon]`, `[default]`, `[[tenant]]`) and tenant resolution.
//! - [`logging`]: stderr logs that never stop the daemon; [`metrics`]: the Prometheus page;
//!   [`systemd`]: readiness and a watchdog fed by a health check of the control socket.
//! - [`scheduler`]: scheduling policies (`passthrough`, `priority`, `fair`, `srpt`), their
//!   queues and cost estimates, and a simulated GPU to test them on.

pub mod config;
pub mod executor;
pub mod fault;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod host_memory;
pub mod logging;
pub mod metrics;
pub mod restart;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod systemd;

use executor::Executor;
use nix::sys::signal::{SigSet, Signal};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Which GPU the daemon drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// The real CUDA driver.
    Cuda,
    /// A simulated GPU on the CPU: no GPU or driver needed. It runs Baton's own test kernels
    /// (`vecAdd`, `fill`, `empty`), not arbitrary CUDA programs; `baton demo` uses it.
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
    /// SIGHUP reloads it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which GPU to drive: the real one through the NVIDIA driver, or a simulated one.
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

/// Sets up stderr logging (`BATON_LOG` filters, e.g. `BATON_LOG=debug`); see [`logging`].
pub fn init_logging(format: LogFormat) {
    logging::init(format);
}

/// The signals batond handles on its signal thread: SIGINT and SIGTERM stop, SIGHUP reloads.
/// Every other thread must have them blocked.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// How long shutdown may take, whatever the log sink does, before the process ends anyway.
const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// Binds a Unix socket: refuses to steal one a live daemon is serving, replaces a stale one,
/// and never deletes anything that is not a socket.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!(
                "{} exists and is not a socket ({}): remove it or choose another path",
                path.display(),
                describe(m.file_type())
            ));
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!("a daemon is already serving {}", path.display()));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("removing stale socket {}: {e}", path.display()))?;
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(l)
}

fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

fn load_config(path: Option<&Path>) -> Result<config::Config, String> {
    match path {
        Some(p) => config::Config::load(p).map_err(|e| e.to_string()),
        None => Ok(config::Config::default()),
    }
}

/// Opens the GPU (or simulator) and the socket, then serves clients until SIGINT/SIGTERM.
/// Returns an error message for the user when it cannot start.
pub fn run(opts: &Options) -> Result<(), String> {
    let config = load_config(opts.config.as_deref())?;
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
    // Block the stop and reload signals in every thread; one thread waits for them.
    let signals = handled_signals();
    signals
        .thread_block()
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
    let metrics_listen = config.daemon.metrics_listen.clone();
    let config_token = config.daemon.metrics_token_file.clone();
    let daemon = server::Daemon::new(exec, arena, config)?;
    daemon.monitor.carry_over(restart::faults_before());

    let mut owned = vec![path.clone()];
    if let Some(listen) = metrics_listen {
        let token = config_token.as_deref();
        if let Some(p) = metrics::serve(daemon.clone(), &listen, token, &path, mode) {
            owned.push(p);
        }
    }
    let d = daemon.clone();
    let config_path = opts.config.clone();
    std::thread::Builder::new()
        .name("baton-signals".into())
        .spawn(move || loop {
            match signals.wait() {
                Ok(Signal::SIGHUP) => reload(&d, config_path.as_deref()),
                Ok(sig) => stop(sig, &owned),
                Err(_) => {}
            }
        })
        .map_err(|e| e.to_string())?;
    systemd::ready(&path);
    daemon
        .serve(listener)
        .map_err(|e| format!("accepting clients: {e}"))
}

/// Removes the daemon's sockets and exits, within [`STOP_DEADLINE`] whatever logging does.
fn stop(sig: Signal, sockets: &[PathBuf]) -> ! {
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    systemd::stopping();
    // Nothing below may keep the process alive: a stderr that blocks, an exit handler that
    // waits on a lock a hung thread holds.
    let _ = std::thread::Builder::new()
        .name("baton-stop".into())
        .spawn(|| {
            std::thread::sleep(STOP_DEADLINE);
            // SAFETY: _exit ends the process at once; it touches no Rust state.
            unsafe { libc::_exit(0) }
        });
    tracing::info!(signal = ?sig, "stopping");
    logging::flush();
    std::process::exit(0);
}

/// SIGHUP: reads the policy file again. Clients that connect afterwards get the new tenants,
/// quotas and classes; connected clients keep the policy they connected under. `[daemon]`
/// (policy, socket, metrics, scheduler settings) is fixed at start; a change there is reported
/// and waits for a restart. A file that does not parse leaves the running policy in place.
fn reload(d: &server::Daemon, path: Option<&Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no policy file to reload (started without --config)");
        return;
    };
    let mut new = match config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "SIGHUP: the policy file has an error; keeping the running policy");
            return;
        }
    };
    let old = d.config();
    if new.daemon != old.daemon {
        tracing::warn!(
            file = %path.display(),
            "SIGHUP: [daemon] settings changed; they take effect when batond restarts"
        );
        new.daemon = old.daemon.clone();
    }
    let tenants = new.tenants.len();
    d.replace_config(new);
    tracing::info!(file = %path.display(), tenants, "policy file reloaded; new clients get it, connected ones keep theirs");
}
