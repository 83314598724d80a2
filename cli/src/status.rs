//! `baton status`.

use baton_ipc::control::{self, Request, Response};
use std::path::PathBuf;

pub fn show(socket: Option<PathBuf>, json: bool) -> Result<(), String> {
    let path = match socket {
        Some(s) => s,
        None => crate::socket::find().map_err(|e| e.to_string())?,
    };
    let conn = crate::socket::connect(&path).map_err(|e| match e {
        crate::socket::Refusal::NoDaemon(m) => {
            format!("{m}; start one with `baton daemon` (or try `baton demo`)")
        }
        other => other.to_string(),
    })?;
    control::send(&conn, &Request::Status, &[]).map_err(|e| e.to_string())?;
    let report = match control::recv::<Response>(&conn)
        .map_err(|e| e.to_string())?
        .0
    {
        Response::Status(r) => r,
        other => return Err(format!("unexpected answer from the daemon: {other:?}")),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "daemon pid {} on {} ({}), policy {}, socket {}",
        report.daemon_pid,
        report.devices.join(", "),
        report.executor,
        if report.policy.is_empty() {
            "?"
        } else {
            &report.policy
        },
        path.display()
    );
    if report.context_faults > 0 {
        println!(
            "kernel faults that reset the GPU context since start: {} (the daemon's log names the tenants)",
            report.context_faults
        );
    }
    println!(
        "{:>7} {:>8} {:>6} {:<16} {:<7} {:>12} {:>12} {:>10} {:>10} {:>6} {:>8} {:>5} {:>9} {:>9}",
        "SESSION",
        "PID",
        "UID",
        "TENANT",
        "CLASS",
        "MEMORY",
        "QUOTA",
        "COMMANDS",
        "LAUNCHES",
        "QUEUED",
        "INFLIGHT",
        "GPU%",
        "DELAY-P50",
        "DELAY-P99"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    for c in &report.clients {
        println!(
            "{:>7} {:>8} {:>6} {:<16} {:<7} {:>12} {:>12} {:>10} {:>10} {:>6} {:>8} {:>5} {:>9} {:>9}",
            c.session,
            c.pid,
            c.uid,
            c.tenant,
            c.class,
            human_bytes(c.memory_bytes),
            c.memory_quota.map_or_else(|| "-".to_string(), human_bytes),
            c.commands,
            c.launches,
            or_dash(c.queued.map(|n| n.to_string())),
            or_dash(c.in_flight.map(|n| n.to_string())),
            or_dash(c.gpu_share.map(|s| format!("{:.0}", s * 100.0))),
            or_dash(c.queue_delay.p50_ns.map(human_ns)),
            or_dash(c.queue_delay.p99_ns.map(human_ns)),
        );
    }
    if report.clients.is_empty() {
        println!("(no clients)");
    }
    Ok(())
}

fn human_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{}us", ns / 1_000),
        10_000_000..=9_999_999_999 => format!("{}ms", ns / 1_000_000),
        _ => format!("{}s", ns / 1_000_000_000),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
