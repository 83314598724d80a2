//! `baton-device-plugin`: offers shares of Baton's GPUs to the kubelet. Runs beside `batond`
//! on each GPU node (see `deploy/kubernetes/` and `docs/kubernetes.md`).

use baton_device_plugin::config::{PluginConfig, DEFAULT_CONFIG};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Offer shares of Baton's GPUs to the kubelet (device-plugin API v1beta1)"
)]
struct Args {
    /// Plugin configuration (TOML) [default: /etc/baton/device-plugin.toml if it exists, else
    /// the built-in defaults]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration and the host paths it names, print the result, and exit.
    #[arg(long)]
    check: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("baton-device-plugin: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let cfg = match args.config {
        Some(p) => PluginConfig::load(&p),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            PluginConfig::load(DEFAULT_CONFIG.as_ref())
        }
        None => Ok(PluginConfig::default()),
    }
    .map_err(|e| e.to_string())?;
    if args.check {
        cfg.check_host().map_err(|e| e.to_string())?;
        println!("{cfg:#?}");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(baton_device_plugin::kubelet::run(cfg, shutdown_signal()))
}

/// SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
