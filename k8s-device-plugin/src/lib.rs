//! `baton-device-plugin`: offers shares of the GPUs that `batond` serves to the kubelet as an
//! extended resource (`baton.dev/gpu` by default), over the kubelet's device-plugin API
//! `v1beta1`.
//!
//! - [`config`]: the plugin's TOML file, checked up front.
//! - [`shares`]: the share inventory: IDs, preferred allocations, which IDs a request names.
//! - [`allocate`]: what a container that got shares is given (environment, mounts or a CDI
//!   device).
//! - [`health`]: whether the daemon answers, asked over its control socket.
//! - [`service`]: the `DevicePlugin` gRPC service the kubelet calls.
//! - [`kubelet`]: serving on the plugin socket, registering, and starting over when the
//!   kubelet restarts.

pub mod allocate;
pub mod api;
pub mod config;
pub mod health;
pub mod kubelet;
pub mod service;
pub mod shares;

pub use config::{ConfigError, PluginConfig};
