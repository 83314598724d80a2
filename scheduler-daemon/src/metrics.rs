//! The metrics endpoint: Prometheus text exposition over plain HTTP, loopback by default
//! (`metrics_listen` in the policy file). Read-only; one small page per scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `baton_clients` | gauge | |
//! | `baton_tenant_memory_bytes` | gauge | `tenant`, `session`, `pid`, `uid` |
//! | `baton_tenant_memory_quota_bytes` | gauge (absent when unlimited) | same |
//! | `baton_tenant_commands_total` | counter | same |
//! | `baton_tenant_launches_total` | counter | same |

use crate::server::Daemon;
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

/// The page for one scrape.
pub fn render(d: &Daemon) -> String {
    let s = d.status();
    let quotas = d.quotas();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP baton_clients Client processes connected to the daemon.\n# TYPE baton_clients gauge\nbaton_clients {}", s.clients.len());
    let families: [(&str, &str, &str); 4] = [
        (
            "baton_tenant_memory_bytes",
            "gauge",
            "Device and pinned host memory a client holds.",
        ),
        (
            "baton_tenant_memory_quota_bytes",
            "gauge",
            "The client's memory quota (absent when unlimited).",
        ),
        (
            "baton_tenant_commands_total",
            "counter",
            "Commands the client has sent.",
        ),
        (
            "baton_tenant_launches_total",
            "counter",
            "Kernel launches the client has sent.",
        ),
    ];
    for (i, (name, ty, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for c in &s.clients {
            let value = match i {
                0 => Some(c.memory_bytes),
                1 => quotas.get(&c.session).copied().flatten(),
                2 => Some(c.commands),
                _ => Some(c.launches),
            };
            if let Some(v) = value {
                let _ = writeln!(
                    out,
                    "{name}{{tenant=\"{}\",session=\"{}\",pid=\"{}\",uid=\"{}\"}} {v}",
                    label(&c.tenant),
                    c.session,
                    c.pid,
                    c.uid
                );
            }
        }
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
