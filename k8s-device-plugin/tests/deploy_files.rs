//! The configuration files the Kubernetes deployment ships (`deploy/kubernetes/base/`) parse
//! with the programs' own parsers, and the policy does what `docs/kubernetes.md` says of the
//! example pods. (`deploy/kubernetes/check.py` checks the manifests themselves.)

use baton_daemon::config::{Class, Config};
use baton_device_plugin::config::PluginConfig;
use std::path::Path;

const PLUGIN: &str = include_str!("../../deploy/kubernetes/base/device-plugin.toml");
const POLICY: &str = include_str!("../../deploy/kubernetes/base/baton.toml");

#[test]
fn the_plugin_config_parses_and_names_the_daemon_socket() {
    let p = PluginConfig::parse(PLUGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.resource_name, "baton.dev/gpu");
    assert_eq!(p.shares_per_gpu, 4);
    assert_eq!(p.memory_per_share, Some(8 << 30));
    assert!(!p.cdi);
    let d = Config::parse(POLICY).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d.daemon.socket.as_deref(),
        Some(p.daemon_socket().as_path()),
        "the plugin probes the socket the daemon listens on"
    );
    assert_eq!(p.shim.parent(), Some(Path::new("/var/lib/baton/lib")));
}

#[test]
fn the_policy_binds_the_example_tenants_to_their_uids() {
    let c = Config::parse(POLICY).unwrap_or_else(|e| panic!("{e}"));
    let p = c.resolve(Some("inference"), None, 1001, 1001).unwrap();
    assert_eq!((p.name.as_str(), p.class), ("inference", Class::HIGH));
    assert_eq!(p.memory_quota, Some(8 << 30));
    let p = c.resolve(Some("training"), None, 1002, 1002).unwrap();
    assert_eq!((p.name.as_str(), p.class), ("training", Class::NORMAL));
    // A pod running as root that claims the inference tenant gets the default, as uid:0.
    let p = c.resolve(Some("inference"), None, 0, 0).unwrap();
    assert_eq!((p.name.as_str(), p.class), ("uid:0", Class::LOW));
    assert_eq!(p.memory_quota, Some(4 << 30));
}
