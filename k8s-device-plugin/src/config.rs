//! The plugin's configuration file (TOML). Every field has a default, so an empty file is a
//! valid configuration for one daemon at `/run/baton/baton.sock`:
//!
//! ```toml
//! resource_name = "baton.dev/gpu"     # the extended resource pods ask for
//! shares_per_gpu = 4                  # how many pods (or containers) one GPU is cut into
//! # gpus = 1                          # default: as many as the daemon reports
//! memory_per_share = "10GiB"          # optional: the quota hint given per share
//! socket_dir = "/run/baton"           # host directory of the daemon's socket
//! shim = "/usr/local/lib/baton/libcuda.so.1"
//! cdi = false                         # true: answer with CDI device names, not mounts
//! kubelet_dir = "/var/lib/kubelet/device-plugins"
//! ```
//!
//! [`PluginConfig::parse`] checks everything before the plugin talks to the kubelet, and each
//! error names the field.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file the binary reads when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG: &str = "/etc/baton/device-plugin.toml";
/// The daemon's socket inside `socket_dir` (the name `batond` uses by default).
pub const SOCKET_NAME: &str = "baton.sock";
/// The shim's file name: the dynamic loader must find it as the CUDA driver.
pub const SHIM_NAME: &str = "libcuda.so.1";
/// More shares than this per GPU is a typo rather than a plan (the kubelet would hold one
/// device entry for each).
pub const MAX_SHARES_PER_GPU: u32 = 1024;
/// GPUs per node the plugin accepts.
pub const MAX_GPUS: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("malformed plugin config{}: {message}", at.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Malformed {
        at: Option<PathBuf>,
        message: String,
    },
    #[error("`{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    resource_name: Option<String>,
    shares_per_gpu: Option<i64>,
    gpus: Option<i64>,
    memory_per_share: Option<String>,
    socket_dir: Option<PathBuf>,
    container_socket_dir: Option<PathBuf>,
    shim: Option<PathBuf>,
    container_shim_dir: Option<PathBuf>,
    cdi: Option<bool>,
    cdi_kind: Option<String>,
    kubelet_dir: Option<PathBuf>,
    endpoint: Option<String>,
    health_interval_ms: Option<u64>,
    kubelet_poll_ms: Option<u64>,
}

/// The checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    /// The extended resource name (`vendor-domain/name`).
    pub resource_name: String,
    pub shares_per_gpu: u32,
    /// `None`: as many GPUs as the daemon reports when the plugin starts.
    pub gpus: Option<u32>,
    /// Device memory per share, in bytes; a container with n shares is told n times this.
    pub memory_per_share: Option<u64>,
    /// Host directory holding the daemon's socket.
    pub socket_dir: PathBuf,
    /// Where that directory appears inside a container.
    pub container_socket_dir: PathBuf,
    /// Host path of the shim.
    pub shim: PathBuf,
    /// Where the shim's directory appears inside a container.
    pub container_shim_dir: PathBuf,
    /// Answer `Allocate` with CDI device names (the runtime applies `baton cdi`'s spec) instead
    /// of mounts and `LD_PRELOAD`.
    pub cdi: bool,
    /// The CDI kind of those names (`baton cdi --kind`).
    pub cdi_kind: String,
    /// The kubelet's device-plugin directory (its `kubelet.sock`, and the plugin's socket).
    pub kubelet_dir: PathBuf,
    /// The plugin socket's file name in `kubelet_dir`.
    pub endpoint: String,
    /// How often the daemon is asked whether it is up.
    pub health_interval: Duration,
    /// How often the plugin looks for a restarted kubelet.
    pub kubelet_poll: Duration,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            resource_name: "baton.dev/gpu".into(),
            shares_per_gpu: 4,
            gpus: None,
            memory_per_share: None,
            socket_dir: "/run/baton".into(),
            container_socket_dir: "/run/baton".into(),
            shim: "/usr/local/lib/baton/libcuda.so.1".into(),
            container_shim_dir: "/usr/local/lib/baton".into(),
            cdi: false,
            cdi_kind: "baton.dev/gpu".into(),
            kubelet_dir: "/var/lib/kubelet/device-plugins".into(),
            endpoint: "baton.sock".into(),
            health_interval: Duration::from_secs(5),
            kubelet_poll: Duration::from_secs(1),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl PluginConfig {
    /// Parses and checks a configuration's text (no file system checks: see [`Self::check_host`]).
    pub fn parse(text: &str) -> Result<PluginConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Malformed {
            at: None,
            message: e.to_string(),
        })?;
        let d = PluginConfig::default();
        let shares_per_gpu = match raw.shares_per_gpu {
            None => d.shares_per_gpu,
            Some(n) if n < 1 => {
                return Err(invalid(
                    "shares_per_gpu",
                    format!("is {n}: a GPU must be offered as at least 1 share"),
                ))
            }
            Some(n) if n > i64::from(MAX_SHARES_PER_GPU) => {
                return Err(invalid(
                    "shares_per_gpu",
                    format!("is {n}: at most {MAX_SHARES_PER_GPU} shares per GPU"),
                ))
            }
            Some(n) => n as u32,
        };
        let gpus = match raw.gpus {
            None => None,
            Some(n) if !(1..=i64::from(MAX_GPUS)).contains(&n) => {
                return Err(invalid(
                    "gpus",
                    format!(
                    "is {n}: expected 1 to {MAX_GPUS}, or leave it out to count the daemon's GPUs"
                ),
                ))
            }
            Some(n) => Some(n as u32),
        };
        let memory_per_share = raw
            .memory_per_share
            .as_deref()
            .map(|s| parse_bytes(s).map_err(|r| invalid("memory_per_share", r)))
            .transpose()?;
        let resource_name = raw.resource_name.unwrap_or(d.resource_name);
        check_resource_name(&resource_name).map_err(|r| invalid("resource_name", r))?;
        let cdi_kind = raw.cdi_kind.unwrap_or(d.cdi_kind);
        check_resource_name(&cdi_kind).map_err(|r| invalid("cdi_kind", r))?;
        let endpoint = raw.endpoint.unwrap_or(d.endpoint);
        if endpoint.is_empty()
            || endpoint.contains('/')
            || endpoint == crate::api::KUBELET_SOCKET
            || endpoint.starts_with('.')
        {
            return Err(invalid(
                "endpoint",
                format!("is {endpoint:?}: a plain file name for the plugin's socket, not `kubelet.sock`"),
            ));
        }
        let abs = |field: &'static str, p: Option<PathBuf>, d: PathBuf| {
            let p = p.unwrap_or(d);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(invalid(
                    field,
                    format!("is {}: must be an absolute path", p.display()),
                ))
            }
        };
        let shim = abs("shim", raw.shim, d.shim)?;
        if shim.file_name().is_none() {
            return Err(invalid("shim", "names no file"));
        }
        let interval = |field: &'static str, ms: Option<u64>, d: Duration| match ms {
            None => Ok(d),
            Some(0) => Err(invalid(field, "is 0: give a period in milliseconds")),
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        Ok(PluginConfig {
            resource_name,
            shares_per_gpu,
            gpus,
            memory_per_share,
            socket_dir: abs("socket_dir", raw.socket_dir, d.socket_dir)?,
            container_socket_dir: abs(
                "container_socket_dir",
                raw.container_socket_dir,
                d.container_socket_dir,
            )?,
            shim,
            container_shim_dir: abs(
                "container_shim_dir",
                raw.container_shim_dir,
                d.container_shim_dir,
            )?,
            cdi: raw.cdi.unwrap_or(d.cdi),
            cdi_kind,
            kubelet_dir: abs("kubelet_dir", raw.kubelet_dir, d.kubelet_dir)?,
            endpoint,
            health_interval: interval(
                "health_interval_ms",
                raw.health_interval_ms,
                d.health_interval,
            )?,
            kubelet_poll: interval("kubelet_poll_ms", raw.kubelet_poll_ms, d.kubelet_poll)?,
        })
    }

    /// Reads and checks a file; errors name it.
    pub fn load(path: &Path) -> Result<PluginConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        PluginConfig::parse(&text).map_err(|e| match e {
            ConfigError::Malformed { message, .. } => ConfigError::Malformed {
                at: Some(path.to_owned()),
                message,
            },
            other => other,
        })
    }

    /// Checks what must exist on the host before the plugin offers anything: the daemon's
    /// socket directory (a missing one means the host path is wrong, not that the daemon is
    /// starting: the DaemonSet creates it), the kubelet's directory, and the shim when
    /// `Allocate` mounts it.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        let dir = |field: &'static str, p: &Path, hint: &str| {
            if p.is_dir() {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("{} is not a directory: {hint}", p.display()),
                ))
            }
        };
        dir(
            "socket_dir",
            &self.socket_dir,
            "mount the daemon's socket directory there (hostPath), or point `socket_dir` at it",
        )?;
        dir(
            "kubelet_dir",
            &self.kubelet_dir,
            "mount the kubelet's device-plugin directory there (hostPath /var/lib/kubelet/device-plugins)",
        )?;
        if !self.cdi && !self.shim.is_file() {
            return Err(invalid(
                "shim",
                format!(
                    "{} is not a file: install the shim there, or set `cdi = true` to let the runtime's CDI spec provide it",
                    self.shim.display()
                ),
            ));
        }
        Ok(())
    }

    /// The daemon's socket on the host.
    pub fn daemon_socket(&self) -> PathBuf {
        self.socket_dir.join(SOCKET_NAME)
    }

    /// The plugin's own socket.
    pub fn plugin_socket(&self) -> PathBuf {
        self.kubelet_dir.join(&self.endpoint)
    }

    /// The kubelet's registration socket.
    pub fn kubelet_socket(&self) -> PathBuf {
        self.kubelet_dir.join(crate::api::KUBELET_SOCKET)
    }
}

/// `vendor-domain/name`, the form the kubelet accepts for an extended resource (and CDI for a
/// device kind).
fn check_resource_name(s: &str) -> Result<(), String> {
    let bad = || format!("is {s:?}: expected `domain/name`, for example `baton.dev/gpu`");
    let (domain, name) = s.split_once('/').ok_or_else(bad)?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.split('.').all(label_ok)
        && domain.contains('.')
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `"10GiB"`, `"512MiB"`, `"1000000"` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        u => {
            return Err(format!(
                "is {s:?}: unknown unit `{u}` (use B, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("is {s:?}: expected a whole number and a unit, like \"10GiB\""))?;
    match n.checked_mul(unit_bytes) {
        Some(0) => Err(format!("is {s:?}: a share's memory must be more than 0")),
        Some(b) => Ok(b),
        None => Err(format!("is {s:?}: too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        PluginConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(PluginConfig::parse("").unwrap(), PluginConfig::default());
    }

    #[test]
    fn fields_parse() {
        let c = PluginConfig::parse(
            "shares_per_gpu = 8\ngpus = 2\nmemory_per_share = \"10GiB\"\ncdi = true\nresource_name = \"example.com/gpu-share\"\n",
        )
        .unwrap();
        assert_eq!(c.shares_per_gpu, 8);
        assert_eq!(c.gpus, Some(2));
        assert_eq!(c.memory_per_share, Some(10 << 30));
        assert!(c.cdi);
        assert_eq!(c.resource_name, "example.com/gpu-share");
    }

    #[test]
    fn bad_values_name_the_field() {
        assert_eq!(
            err("shares_per_gpu = 0"),
            "`shares_per_gpu` is 0: a GPU must be offered as at least 1 share"
        );
        assert!(err("shares_per_gpu = -3").contains("at least 1 share"));
        assert!(err("shares_per_gpu = 5000").contains("at most 1024"));
        assert!(err("gpus = 0").starts_with("`gpus` is 0"));
        assert!(err("memory_per_share = \"10 GB\"").contains("unknown unit `GB`"));
        assert!(err("memory_per_share = \"0GiB\"").contains("more than 0"));
        assert!(err("resource_name = \"gpu\"").contains("expected `domain/name`"));
        assert!(err("resource_name = \"Baton.dev/gpu\"").contains("`resource_name`"));
        assert!(err("socket_dir = \"run/baton\"").contains("absolute path"));
        assert!(err("endpoint = \"kubelet.sock\"").contains("`endpoint`"));
        assert!(err("health_interval_ms = 0").contains("`health_interval_ms` is 0"));
    }

    #[test]
    fn malformed_files_say_where() {
        let e = err("shares_per_gpu = \n");
        assert!(e.starts_with("malformed plugin config: "), "{e}");
        assert!(e.contains("line 1"), "{e}");
        let e = err("shares_per_gpus = 4\n");
        assert!(e.contains("unknown field `shares_per_gpus`"), "{e}");
        let e = err("shares_per_gpu = \"four\"\n");
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn host_checks_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = PluginConfig {
            socket_dir: dir.path().join("nope"),
            kubelet_dir: dir.path().into(),
            shim: dir.path().join("libcuda.so.1"),
            ..PluginConfig::default()
        };
        let e = c.check_host().unwrap_err().to_string();
        assert!(e.starts_with("`socket_dir` "), "{e}");
        assert!(e.contains("nope is not a directory"), "{e}");
        c.socket_dir = dir.path().into();
        let e = c.check_host().unwrap_err().to_string();
        assert!(e.starts_with("`shim` "), "{e}");
        c.cdi = true;
        c.check_host().unwrap();
    }
}
