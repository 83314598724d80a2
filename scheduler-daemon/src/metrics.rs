//! The metrics endpoint: Prometheus text exposition over HTTP, off unless the policy file's
//! `metrics_listen` enables it: `"unix"` (a socket beside the control socket, with its mode:
//! the same people who may use the daemon may read its metrics) or a TCP address (readable by
//! anyone who can reach it; the daemon warns at start unless `metrics_token_file` names a
//! token that every scrape must present as `Authorization: Bearer TOKEN`).
//!
//! Each connection has its own thread and deadlines (a request head within
//! [`READ_DEADLINE`], an answer within [`WRITE_DEADLINE`]), and at most [`MAX_CONNECTIONS`] are
//! open at once; beyond that a new connection is closed at once. An idle or slow connection
//! therefore never delays another scrape, and none can hold the endpoint for longer than its
//! deadline. The request head is parsed by `httparse`.
//!
//! Series are per tenant (label `tenant`) and per GPU (label `gpu`); nothing is labelled per
//! process or session, so the number of series follows the tenants, not the clients. At most
//! [`MAX_TENANT_SERIES`] tenant names get their own series; the rest are summed under
//! `tenant="_other"`. Counters add up the tenant's clients since the daemon started: a client
//! that disconnects keeps its last scraped figures in its tenant's total, so they never go
//! down (work it did after the last scrape is not counted).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `baton_build_info` | gauge (always 1) | `version`, `protocol` |
//! | `baton_clients` | gauge | |
//! | `baton_policy_info` | gauge (always 1) | `policy` |
//! | `baton_context_faults_total` | counter | |
//! | `baton_log_lines_dropped_total` | counter | |
//! | `baton_gpu_info` | gauge (always 1) | `gpu`, `name` |
//! | `baton_tenant_clients` | gauge | `tenant` |
//! | `baton_tenant_memory_bytes` | gauge | `tenant` |
//! | `baton_tenant_memory_quota_bytes` | gauge (absent when unlimited) | `tenant` |
//! | `baton_tenant_commands_total` | counter | `tenant` |
//! | `baton_tenant_launches_total` | counter | `tenant` |
//! | `baton_tenant_queued_items` | gauge (absent under `passthrough`) | `tenant` |
//! | `baton_tenant_in_flight_items` | gauge (absent under `passthrough`) | `tenant` |
//! | `baton_tenant_gpu_seconds_total` | counter (absent under `passthrough`) | `tenant` |
//! | `baton_tenant_gpu_share` | gauge (absent under `passthrough`) | `tenant` |
//! | `baton_tenant_queue_delay_seconds` | histogram (`le` powers of 2 ns, 1 us to 4 s) | `tenant` |

use crate::config::{MetricsListen, METRICS_SOCKET_NAME};
use crate::server::Daemon;
use baton_ipc::control::StatusReport;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once; more are closed on arrival.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a connection has to send its whole request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Time the answer has to leave.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// Tenant names with a series of their own; later ones are summed under `_other`.
pub const MAX_TENANT_SERIES: usize = 256;
const OTHER: &str = "_other";

/// The queue-delay histogram's bucket edges: 2^10 to 2^32 ns by factors of 4 (about 1 us to
/// 4.3 s), where the daemon's own buckets give exact counts.
const EDGES_NS: [u64; 12] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
    1 << 32,
];

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a tenant's clients have done: counters (since the daemon started) and gauges (now).
#[derive(Clone, Debug, Default, PartialEq)]
struct Figures {
    commands: u64,
    launches: u64,
    gpu_ns: u64,
    delay_sum_ns: u64,
    delay_count: u64,
    /// Delays below each of [`EDGES_NS`].
    delay_below: [u64; EDGES_NS.len()],
    clients: u64,
    memory_bytes: u64,
    memory_quota: Option<u64>,
    queued: u64,
    in_flight: u64,
    gpu_share: f64,
}

impl Figures {
    /// Adds another client's or a retired client's counters (not its gauges).
    fn add_counters(&mut self, o: &Figures) {
        self.commands += o.commands;
        self.launches += o.launches;
        self.gpu_ns += o.gpu_ns;
        self.delay_sum_ns += o.delay_sum_ns;
        self.delay_count += o.delay_count;
        for (a, b) in self.delay_below.iter_mut().zip(&o.delay_below) {
            *a += b;
        }
    }

    fn add(&mut self, o: &Figures) {
        self.add_counters(o);
        self.clients += o.clients;
        self.memory_bytes += o.memory_bytes;
        self.memory_quota = self.memory_quota.max(o.memory_quota);
        self.queued += o.queued;
        self.in_flight += o.in_flight;
        self.gpu_share += o.gpu_share;
    }
}

/// Per-tenant totals across scrapes, so counters survive their clients.
#[derive(Default)]
struct Ledger {
    /// The clients seen at the last scrape: session -> (tenant label, figures).
    last: HashMap<u64, (String, Figures)>,
    /// Counters of clients that have gone, per tenant label.
    retired: HashMap<String, Figures>,
    /// Tenant names that have their own series (at most [`MAX_TENANT_SERIES`]).
    named: HashSet<String>,
}

impl Ledger {
    fn label_for(&mut self, tenant: &str) -> String {
        if self.named.contains(tenant) {
            return tenant.to_owned();
        }
        if self.named.len() < MAX_TENANT_SERIES && tenant != OTHER {
            self.named.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OTHER.to_owned()
    }

    /// Takes this scrape's clients (session, tenant, figures); returns the totals per tenant.
    fn observe(&mut self, now: Vec<(u64, String, Figures)>) -> BTreeMap<String, Figures> {
        let mut current = HashMap::with_capacity(now.len());
        for (session, tenant, f) in now {
            let l = self.label_for(&tenant);
            current.insert(session, (l, f));
        }
        for (session, (l, f)) in self.last.drain() {
            if !current.contains_key(&session) {
                self.retired.entry(l).or_default().add_counters(&f);
            }
        }
        let mut totals: BTreeMap<String, Figures> = self
            .retired
            .iter()
            .map(|(l, f)| (l.clone(), f.clone()))
            .collect();
        for (l, f) in current.values() {
            totals.entry(l.clone()).or_default().add(f);
        }
        self.last = current;
        totals
    }
}

/// Renders pages; one per endpoint, shared by its connection threads.
pub struct Exporter {
    daemon: Arc<Daemon>,
    ledger: Mutex<Ledger>,
    /// The token a scrape must present, if any.
    token: Option<Vec<u8>>,
}

impl Exporter {
    pub fn new(daemon: Arc<Daemon>, token: Option<Vec<u8>>) -> Exporter {
        Exporter {
            daemon,
            ledger: Mutex::new(Ledger::default()),
            token,
        }
    }

    /// Whether the request carries the token (always, without one).
    fn admits(&self, req: &httparse::Request<'_, '_>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
            .filter_map(|h| h.value.strip_prefix(b"Bearer "))
            .any(|given| same(given, token))
    }

    /// The page for one scrape.
    pub fn render(&self) -> String {
        let s = self.daemon.status();
        let mut edges = EDGES_NS.to_vec();
        edges.push(u64::MAX);
        let delays: HashMap<u64, Vec<u64>> = self.daemon.queue_delays(&edges).into_iter().collect();
        let now = s
            .clients
            .iter()
            .map(|c| {
                let mut f = Figures {
                    commands: c.commands,
                    launches: c.launches,
                    gpu_ns: c.gpu_time_ns.unwrap_or(0),
                    delay_sum_ns: c.queue_delay.sum_ns,
                    delay_count: c.queue_delay.count,
                    clients: 1,
                    memory_bytes: c.memory_bytes,
                    memory_quota: c.memory_quota,
                    queued: c.queued.unwrap_or(0),
                    in_flight: c.in_flight.unwrap_or(0),
                    gpu_share: c.gpu_share.unwrap_or(0.0),
                    ..Figures::default()
                };
                if let Some(below) = delays.get(&c.session) {
                    f.delay_below.copy_from_slice(&below[..EDGES_NS.len()]);
                    f.delay_count = below[EDGES_NS.len()];
                }
                (c.session, c.tenant.clone(), f)
            })
            .collect();
        let totals = self
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(now);
        page(&s, &totals)
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the token file: one line, not empty.
fn read_token(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading metrics_token_file {}: {e}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("metrics_token_file {} is empty", path.display()));
    }
    Ok(t.as_bytes().to_vec())
}

fn family(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

fn page(s: &StatusReport, totals: &BTreeMap<String, Figures>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "baton_build_info",
        "gauge",
        "The running batond's version and the client protocol it speaks; always 1.",
    );
    let _ = writeln!(
        out,
        "baton_build_info{{version=\"{}\",protocol=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        baton_ipc::control::PROTOCOL_VERSION
    );
    family(
        &mut out,
        "baton_clients",
        "gauge",
        "Client processes connected to the daemon.",
    );
    let _ = writeln!(out, "baton_clients {}", s.clients.len());
    family(
        &mut out,
        "baton_policy_info",
        "gauge",
        "The scheduling policy the daemon runs; always 1.",
    );
    let _ = writeln!(
        out,
        "baton_policy_info{{policy=\"{}\"}} 1",
        label(&s.policy)
    );
    family(&mut out, "baton_context_faults_total", "counter", "Kernel faults that ended the shared GPU context (and every connected client's work) since the daemon started.");
    let _ = writeln!(out, "baton_context_faults_total {}", s.context_faults);
    family(
        &mut out,
        "baton_log_lines_dropped_total",
        "counter",
        "Log lines lost because stderr was closed or could not keep up.",
    );
    let _ = writeln!(
        out,
        "baton_log_lines_dropped_total {}",
        crate::logging::dropped_lines()
    );
    family(
        &mut out,
        "baton_gpu_info",
        "gauge",
        "The GPUs the daemon drives; always 1.",
    );
    for (i, name) in s.devices.iter().enumerate() {
        let _ = writeln!(
            out,
            "baton_gpu_info{{gpu=\"{i}\",name=\"{}\"}} 1",
            label(name)
        );
    }

    let gated = s.policy != "passthrough";
    type Value = fn(&Figures) -> Option<String>;
    let families: [(&str, &str, &str, bool, Value); 9] = [
        (
            "baton_tenant_clients",
            "gauge",
            "The tenant's connected client processes.",
            true,
            |f| Some(f.clients.to_string()),
        ),
        (
            "baton_tenant_memory_bytes",
            "gauge",
            "Device and pinned host memory the tenant's clients hold.",
            true,
            |f| Some(f.memory_bytes.to_string()),
        ),
        (
            "baton_tenant_memory_quota_bytes",
            "gauge",
            "The tenant's memory quota, shared by its clients (each client's own under quota_scope = \"process\"); absent when unlimited.",
            true,
            |f| f.memory_quota.map(|q| q.to_string()),
        ),
        (
            "baton_tenant_commands_total",
            "counter",
            "Commands the tenant's clients have sent.",
            true,
            |f| Some(f.commands.to_string()),
        ),
        (
            "baton_tenant_launches_total",
            "counter",
            "Kernel launches the tenant's clients have sent.",
            true,
            |f| Some(f.launches.to_string()),
        ),
        (
            "baton_tenant_queued_items",
            "gauge",
            "Launches, copies and memsets the scheduler holds back.",
            gated,
            |f| Some(f.queued.to_string()),
        ),
        (
            "baton_tenant_in_flight_items",
            "gauge",
            "Launches, copies and memsets issued and not yet complete.",
            gated,
            |f| Some(f.in_flight.to_string()),
        ),
        (
            "baton_tenant_gpu_seconds_total",
            "counter",
            "GPU time measured for the tenant's work.",
            gated,
            |f| Some((f.gpu_ns as f64 / 1e9).to_string()),
        ),
        (
            "baton_tenant_gpu_share",
            "gauge",
            "The tenant's share of recent measured GPU time, 0 to 1.",
            gated,
            |f| Some(f.gpu_share.to_string()),
        ),
    ];
    for (name, ty, help, shown, value) in families {
        if !shown {
            continue;
        }
        family(&mut out, name, ty, help);
        for (tenant, f) in totals {
            // Gauges describe connected clients only.
            if ty == "gauge" && f.clients == 0 {
                continue;
            }
            if let Some(v) = value(f) {
                let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {v}", label(tenant));
            }
        }
    }
    let name = "baton_tenant_queue_delay_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "From reading a command off a client's ring to issuing it to the driver.",
    );
    for (tenant, f) in totals {
        let t = label(tenant);
        for (edge, n) in EDGES_NS.iter().zip(&f.delay_below) {
            let le = *edge as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{tenant=\"{t}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{tenant=\"{t}\",le=\"+Inf\"}} {}",
            f.delay_count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{tenant=\"{t}\"}} {}",
            f.delay_sum_ns as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{tenant=\"{t}\"}} {}", f.delay_count);
    }
    out
}

/// A connection on either kind of listener.
trait Conn: Read + Write + Send {
    fn set_deadlines(&self, read: Option<Duration>, write: Duration) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn set_deadlines(&self, read: Option<Duration>, write: Duration) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(Some(write))
    }
}

impl Conn for UnixStream {
    fn set_deadlines(&self, read: Option<Duration>, write: Duration) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(Some(write))
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Listener::Tcp(l) => Box::new(l.accept()?.0),
            Listener::Unix(l) => Box::new(l.accept()?.0),
        })
    }
}

/// Starts the endpoint on its own threads. Returns the Unix socket it created, for removal at
/// exit. A failure to listen is logged, not fatal: the daemon serves clients without metrics.
pub fn serve(
    daemon: Arc<Daemon>,
    listen: &MetricsListen,
    token_file: Option<&Path>,
    control_socket: &Path,
    mode: u32,
) -> Option<PathBuf> {
    // A token that cannot be read must not leave the endpoint open to everyone.
    let token = match token_file.map(read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "metrics endpoint not started");
            return None;
        }
    };
    let (listener, created, shown) = match listen {
        MetricsListen::Tcp(addr) => match TcpListener::bind(addr) {
            Ok(l) => {
                let shown = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
                if token.is_none() {
                    tracing::warn!(addr = %shown, "the metrics endpoint is on TCP without metrics_token_file: anyone who can reach it reads every tenant's name and usage");
                }
                (Listener::Tcp(l), None, shown)
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "metrics endpoint not started");
                return None;
            }
        },
        MetricsListen::Unix(path) => {
            let path = path
                .clone()
                .unwrap_or_else(|| control_socket.with_file_name(METRICS_SOCKET_NAME));
            match crate::bind(&path, mode) {
                Ok(l) => {
                    let shown = format!("unix:{}", path.display());
                    (Listener::Unix(l), Some(path), shown)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint not started");
                    return None;
                }
            }
        }
    };
    tracing::info!(listen = %shown, "metrics endpoint listening");
    let exporter = Arc::new(Exporter::new(daemon, token));
    let open = Arc::new(AtomicUsize::new(0));
    let spawned = std::thread::Builder::new()
        .name("baton-metrics".into())
        .spawn(move || accept_loop(listener, exporter, open));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics endpoint not started");
    }
    created
}

fn accept_loop(listener: Listener, exporter: Arc<Exporter>, open: Arc<AtomicUsize>) {
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors or memory: wait for connections to close, then go on.
                tracing::debug!(error = %e, "metrics endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (e, o) = (exporter.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("baton-metrics-conn".into())
            .spawn(move || {
                answer(conn, &e);
                o.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads one request head by its deadline and answers it; the connection then closes.
fn answer(mut conn: Box<dyn Conn>, exporter: &Exporter) {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (status, body) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_deadlines(Some(left), WRITE_DEADLINE).is_err() {
            return;
        }
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => break route(&req, exporter),
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                break ("431 Request Header Fields Too Large", String::new())
            }
            Err(_) => break ("400 Bad Request", String::new()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{}Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status.starts_with("401") {
            "WWW-Authenticate: Bearer\r\n"
        } else {
            ""
        },
        body.len()
    );
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|_| conn.write_all(body.as_bytes()))
        .and_then(|_| conn.flush());
}

fn route(req: &httparse::Request<'_, '_>, exporter: &Exporter) -> (&'static str, String) {
    if !exporter.admits(req) {
        return ("401 Unauthorized", String::new());
    }
    match (req.method, req.path) {
        (Some("GET"), Some("/metrics" | "/")) => ("200 OK", exporter.render()),
        (Some("GET"), _) => ("404 Not Found", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    fn client(commands: u64, memory: u64) -> Figures {
        Figures {
            commands,
            clients: 1,
            memory_bytes: memory,
            ..Figures::default()
        }
    }

    #[test]
    fn counters_keep_the_work_of_clients_that_left_and_gauges_do_not() {
        let mut l = Ledger::default();
        let t = l.observe(vec![
            (1, "a".into(), client(10, 5)),
            (2, "a".into(), client(3, 7)),
        ]);
        assert_eq!(
            (t["a"].commands, t["a"].memory_bytes, t["a"].clients),
            (13, 12, 2)
        );
        let t = l.observe(vec![(2, "a".into(), client(4, 7))]);
        assert_eq!(
            (t["a"].commands, t["a"].memory_bytes, t["a"].clients),
            (14, 7, 1)
        );
        let t = l.observe(vec![]);
        assert_eq!((t["a"].commands, t["a"].clients), (14, 0));
    }

    #[test]
    fn tenant_series_are_bounded() {
        let mut l = Ledger::default();
        let now = (0..MAX_TENANT_SERIES as u64 + 50)
            .map(|i| (i, format!("t{i}"), client(1, 1)))
            .collect();
        let t = l.observe(now);
        assert_eq!(t.len(), MAX_TENANT_SERIES + 1);
        assert_eq!(t[OTHER].clients, 50);
        // Once named, a tenant keeps its series; a new name after the bound joins `_other`.
        let t = l.observe(vec![
            (1000, "t0".into(), client(1, 1)),
            (1001, "new".into(), client(1, 1)),
        ]);
        assert_eq!(t["t0"].clients, 1);
        assert!(!t.contains_key("new"));
        assert_eq!(t[OTHER].clients, 1);
    }

    #[test]
    fn page_has_a_histogram_and_build_info() {
        let mut f = client(1, 1);
        f.delay_below = [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3];
        f.delay_count = 4;
        f.delay_sum_ns = 5_000_000_000;
        let totals = BTreeMap::from([("a".to_string(), f)]);
        let s = StatusReport {
            daemon_pid: 1,
            executor: "sim".into(),
            policy: "passthrough".into(),
            devices: vec!["G".into()],
            clients: vec![],
            context_faults: 0,
        };
        let p = page(&s, &totals);
        assert!(
            p.contains("# TYPE baton_tenant_queue_delay_seconds histogram\n"),
            "{p}"
        );
        assert!(
            p.contains(
                "baton_tenant_queue_delay_seconds_bucket{tenant=\"a\",le=\"0.000004096\"} 1\n"
            ),
            "{p}"
        );
        assert!(
            p.contains("baton_tenant_queue_delay_seconds_bucket{tenant=\"a\",le=\"+Inf\"} 4\n"),
            "{p}"
        );
        assert!(
            p.contains("baton_tenant_queue_delay_seconds_sum{tenant=\"a\"} 5\n"),
            "{p}"
        );
        assert!(
            p.contains(&format!(
                "baton_build_info{{version=\"{}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{p}"
        );
        assert!(
            p.contains("baton_gpu_info{gpu=\"0\",name=\"G\"} 1\n"),
            "{p}"
        );
        assert!(!p.contains("session="), "{p}");
        assert!(!p.contains("pid="), "{p}");
    }
}
