//! `baton status`.

use baton_ipc::control::{self, Request, Response};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

pub fn show(socket: Option<PathBuf>, json: bool) -> Result<(), String> {
    let path = socket.unwrap_or_else(crate::launcher::find_socket);
    let conn = UnixStream::connect(&path).map_err(|e| {
        format!(
            "no daemon at {} ({e}); start one with `baton daemon`",
            path.display()
        )
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
        "daemon pid {} on {} ({}), socket {}",
        report.daemon_pid,
        report.devices.join(", "),
        report.executor,
        path.display()
    );
    println!(
        "{:>7} {:>8} {:>6} {:<16} {:<7} {:>12} {:>12} {:>10} {:>10}",
        "SESSION", "PID", "UID", "TENANT", "CLASS", "MEMORY", "QUOTA", "COMMANDS", "LAUNCHES"
    );
    for c in &report.clients {
        println!(
            "{:>7} {:>8} {:>6} {:<16} {:<7} {:>12} {:>12} {:>10} {:>10}",
            c.session,
            c.pid,
            c.uid,
            c.tenant,
            c.class,
            human_bytes(c.memory_bytes),
            c.memory_quota.map_or_else(|| "-".to_string(), human_bytes),
            c.commands,
            c.launches
        );
    }
    if report.clients.is_empty() {
        println!("(no clients)");
    }
    Ok(())
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
