//! The metrics endpoint: Prometheus text exposition over plain HTTP, loopback by default
//! (`metrics_listen` in the policy file). Read-only; one small page per scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `baton_clients` | gauge | |
//! | `baton_policy_info` | gauge (always 1) | `policy` |
//! | `baton_context_faults_total` | counter | |
//! | `baton_tenant_memory_bytes` | gauge | `tenant`, `session`, `pid`, `uid` |
//! | `baton_tenant_memory_quota_bytes` | gauge (absent when unlimited) | same |
//! | `baton_tenant_commands_total` | counter | same |
//! | `baton_tenant_launches_total` | counter | same |
//! | `baton_tenant_queued_items` | gauge (absent under `passthrough`) | same |
//! | `baton_tenant_in_flight_items` | gauge (absent under `passthrough`) | same |
//! | `baton_tenant_gpu_seconds_total` | counter (absent under `passthrough`) | same |
//! | `baton_tenant_gpu_share` | gauge (absent under `passthrough`) | same |
//! | `baton_tenant_queue_delay_seconds` | summary (`quantile` 0.5, 0.99; `_sum`, `_count`) | same |

use crate::server::Daemon;
use baton_ipc::control::ClientStatus;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Value = fn(&ClientStatus) -> Option<f64>;

/// The per-client families: name, type, help, value (`None`: no sample for this client).
const FAMILIES: [(&str, &str, &str, Value); 8] = [
    (
        "baton_tenant_memory_bytes",
        "gauge",
        "Device and pinned host memory a client holds.",
        |c| Some(c.memory_bytes as f64),
    ),
    (
        "baton_tenant_memory_quota_bytes",
        "gauge",
        "The client's memory quota (absent when unlimited).",
        |c| c.memory_quota.map(|q| q as f64),
    ),
    (
        "baton_tenant_commands_total",
        "counter",
        "Commands the client has sent.",
        |c| Some(c.commands as f64),
    ),
    (
        "baton_tenant_launches_total",
        "counter",
        "Kernel launches the client has sent.",
        |c| Some(c.launches as f64),
    ),
    (
        "baton_tenant_queued_items",
        "gauge",
        "Launches, copies and memsets the scheduler holds back (absent under passthrough).",
        |c| c.queued.map(|n| n as f64),
    ),
    (
        "baton_tenant_in_flight_items",
        "gauge",
        "Launches, copies and memsets issued and not yet complete (absent under passthrough).",
        |c| c.in_flight.map(|n| n as f64),
    ),
    (
        "baton_tenant_gpu_seconds_total",
        "counter",
        "GPU time measured for the client's work (absent under passthrough).",
        |c| c.gpu_time_ns.map(|n| n as f64 / 1e9),
    ),
    (
        "baton_tenant_gpu_share",
        "gauge",
        "The client's share of recent measured GPU time, 0 to 1 (absent under passthrough).",
        |c| c.gpu_share,
    ),
];

/// The page for one scrape.
pub fn render(d: &Daemon) -> String {
    let s = d.status();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP baton_clients Client processes connected to the daemon.\n# TYPE baton_clients gauge\nbaton_clients {}", s.clients.len());
    let _ = writeln!(out, "# HELP baton_policy_info The scheduling policy the daemon runs.\n# TYPE baton_policy_info gauge\nbaton_policy_info{{policy=\"{}\"}} 1", label(&s.policy));
    let _ = writeln!(out, "# HELP baton_context_faults_total Kernel faults that ended the shared GPU context (and every connected client's work) since the daemon started.\n# TYPE baton_context_faults_total counter\nbaton_context_faults_total {}", s.context_faults);
    let labels = |c: &ClientStatus| {
        format!(
            "tenant=\"{}\",session=\"{}\",pid=\"{}\",uid=\"{}\"",
            label(&c.tenant),
            c.session,
            c.pid,
            c.uid
        )
    };
    for (name, ty, help, value) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for c in &s.clients {
            if let Some(v) = value(c) {
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(c));
            }
        }
    }
    let name = "baton_tenant_queue_delay_seconds";
    let _ = writeln!(out, "# HELP {name} From reading a command off the client's ring to issuing it to the driver.\n# TYPE {name} summary");
    for c in &s.clients {
        let (l, q) = (labels(c), &c.queue_delay);
        for (quantile, v) in [("0.5", q.p50_ns), ("0.99", q.p99_ns)] {
            if let Some(ns) = v {
                let _ = writeln!(
                    out,
                    "{name}{{{l},quantile=\"{quantile}\"}} {}",
                    ns as f64 / 1e9
                );
            }
        }
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", q.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{l}}} {}", q.count);
    }
    out
}

/// Serves the endpoint on its own thread; a failure to bind is logged, not fatal.
pub fn serve(daemon: Arc<Daemon>, addr: SocketAddr) {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "metrics endpoint not started");
            return;
        }
    };
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics endpoint listening");
    let _ = std::thread::Builder::new().name("baton-metrics".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
            let mut conn = conn;
            // Read (and ignore) the request head: every path answers the same page.
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = render(&daemon);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(body.as_bytes()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
