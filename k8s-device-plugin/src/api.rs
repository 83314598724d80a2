//! The kubelet device-plugin API `v1beta1`, generated from the vendored upstream
//! `proto/api.proto` by `regen.sh` (committed, so building needs no `protoc`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!("generated/v1beta1.rs");

/// The API version a plugin states in its `RegisterRequest`.
pub const VERSION: &str = "v1beta1";
/// `Device::health` of a share that can be allocated.
pub const HEALTHY: &str = "Healthy";
/// `Device::health` of a share whose GPU cannot serve (the daemon is gone).
pub const UNHEALTHY: &str = "Unhealthy";
/// The kubelet's registration socket, in its device-plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
