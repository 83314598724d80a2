//! What a container that was given shares gets from `Allocate`.
//!
//! Without CDI: the shim's file and the daemon's socket directory, both bind-mounted read-only
//! (a container must not replace the socket or the shim; connecting to a socket needs no write
//! access to the mount), `LD_PRELOAD` naming the shim and `BATON_SOCKET` naming the socket.
//! With CDI (`cdi = true`): the device `baton.dev/gpu=<G>` for each GPU the shares are on, and
//! the runtime applies the same edits from the spec `baton cdi` wrote.
//!
//! Both ways the container also learns how many shares it holds and, with `memory_per_share`,
//! the memory they stand for. That figure is a hint for the program (a framework's memory
//! fraction, say): the container could set any value it likes, so the daemon does not take
//! its quota from there. `docs/kubernetes.md` ("Memory per share") says where the enforced
//! quota comes from.

use crate::api::{CdiDevice, ContainerAllocateResponse, Mount};
use crate::config::{PluginConfig, SHIM_NAME, SOCKET_NAME};
use crate::shares::ShareId;
use std::collections::{BTreeSet, HashMap};

/// Shares held by the container.
pub const SHARES_ENV: &str = "BATON_SHARES";
/// GPU indices (the daemon's numbering) its shares are on, comma-separated.
pub const GPUS_ENV: &str = "BATON_GPUS";
/// Shares times `memory_per_share`, in bytes (absent without `memory_per_share`).
pub const MEMORY_ENV: &str = "BATON_MEMORY_QUOTA";

/// The answer for one container's shares (already checked by
/// [`Inventory::parse_request`](crate::shares::Inventory::parse_request)).
pub fn container_response(cfg: &PluginConfig, shares: &[ShareId]) -> ContainerAllocateResponse {
    let gpus: BTreeSet<u32> = shares.iter().map(|s| s.gpu).collect();
    let mut envs = HashMap::new();
    envs.insert(SHARES_ENV.to_owned(), shares.len().to_string());
    envs.insert(
        GPUS_ENV.to_owned(),
        gpus.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(per) = cfg.memory_per_share {
        envs.insert(
            MEMORY_ENV.to_owned(),
            per.saturating_mul(shares.len() as u64).to_string(),
        );
    }
    let mut resp = ContainerAllocateResponse::default();
    if cfg.cdi {
        resp.cdi_devices = gpus
            .iter()
            .map(|g| CdiDevice {
                name: format!("{}={g}", cfg.cdi_kind),
            })
            .collect();
    } else {
        let shim_in_container = cfg.container_shim_dir.join(SHIM_NAME);
        envs.insert(
            "LD_PRELOAD".to_owned(),
            shim_in_container.display().to_string(),
        );
        envs.insert(
            baton_ipc::control::SOCKET_ENV.to_owned(),
            cfg.container_socket_dir
                .join(SOCKET_NAME)
                .display()
                .to_string(),
        );
        resp.mounts = vec![
            Mount {
                container_path: shim_in_container.display().to_string(),
                host_path: cfg.shim.display().to_string(),
                read_only: true,
            },
            Mount {
                container_path: cfg.container_socket_dir.display().to_string(),
                host_path: cfg.socket_dir.display().to_string(),
                read_only: true,
            },
        ];
    }
    resp.envs = envs;
    resp
}
