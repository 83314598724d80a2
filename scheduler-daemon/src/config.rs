//! The daemon's policy file (TOML): which scheduling policy runs, and what each tenant gets.
//!
//! ```toml
//! [daemon]
//! policy = "priority"            # passthrough | priority | fair | srpt
//!
//! [default]                      # tenants that match no [[tenant]] entry
//! class = "normal"
//!
//! [[tenant]]
//! uid = 1001                     # SO_PEERCRED: verified by the kernel
//! name = "inference"             # BATON_TENANT: chosen by the client
//! class = "high"
//! memory_quota = "8GiB"
//! ```
//!
//! [`Config::parse`] checks everything up front and names the offending entry in every error;
//! [`Config::resolve`] turns a connecting client's identity into its [`TenantPolicy`]. The
//! format and the matching rules are described in `docs/scheduling.md`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The metrics socket's file name beside the control socket (`metrics_listen = "unix"`).
pub const METRICS_SOCKET_NAME: &str = "metrics.sock";
/// Default of `[daemon] srpt_fairness`.
pub const DEFAULT_SRPT_FAIRNESS: f64 = 0.5;
/// Default of `[daemon] issue_window_us`.
pub const DEFAULT_ISSUE_WINDOW_US: u64 = 1000;
/// Default of `[daemon] issue_window_us` under `srpt`. Short jobs have their own lane there, so
/// the window only orders longer jobs among themselves, where the concurrency of several
/// models' kernels matters more than sharp ordering: on the H100 benchmark (scenario b, two
/// workers per model, same request rates, load 3) a 1 ms window served the three larger models
/// 52%, 45% and 84% of their offered requests where MPS served them all, 4 ms served them all,
/// and the smallest model's p99 stayed 1.4-2.7 ms (`docs/scheduling.md`).
pub const DEFAULT_SRPT_ISSUE_WINDOW_US: u64 = 4000;
/// Default of `[daemon] srpt_short_job_us`.
pub const DEFAULT_SRPT_SHORT_JOB_US: u64 = 1000;
/// Default of `[daemon] srpt_fast_lane_sm_reserve`.
pub const DEFAULT_SRPT_FAST_LANE_SM_RESERVE: f64 = 0.1;
/// Default of `[daemon] low_in_flight`.
pub const DEFAULT_LOW_IN_FLIGHT: u32 = 0;
/// Default of `[daemon] max_connections`: open connections of all clients together.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Default of `[daemon] max_connections_per_uid`.
pub const DEFAULT_MAX_CONNECTIONS_PER_UID: u32 = 1024;
/// Default of `[daemon] first_frame_timeout_ms`: how long a new connection may take to send
/// its first request.
pub const DEFAULT_FIRST_FRAME_TIMEOUT_MS: u64 = 5000;
/// Default of `[daemon] frame_budget`: bytes of partly received requests, all clients together.
pub const DEFAULT_FRAME_BUDGET: u64 = 64 << 20;
/// Default of `[daemon] max_waiting_images`: bytes of module images attached and not yet
/// loaded, all clients together.
pub const DEFAULT_MAX_WAITING_IMAGES: u64 = 8 << 30;
/// Default `stream_quota` of a tenant.
pub const DEFAULT_STREAM_QUOTA: u64 = 131_072;
/// Default `event_quota` of a tenant.
pub const DEFAULT_EVENT_QUOTA: u64 = 131_072;
/// Default `module_quota` of a tenant.
pub const DEFAULT_MODULE_QUOTA: u64 = 16_384;
/// Default `connection_quota` of a tenant: its client processes (and status queries) at once.
pub const DEFAULT_CONNECTION_QUOTA: u64 = 1024;

/// Which scheduling policy the daemon runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Issue every command at once (what the daemon did before scheduling; MPS-like).
    #[default]
    Passthrough,
    /// Strict tenant classes; lower classes are throttled while higher ones have work.
    Priority,
    /// Weighted fair share of GPU time.
    Fair,
    /// Shortest remaining job first, with aging.
    Srpt,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Passthrough,
        PolicyKind::Priority,
        PolicyKind::Fair,
        PolicyKind::Srpt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Passthrough => "passthrough",
            PolicyKind::Priority => "priority",
            PolicyKind::Fair => "fair",
            PolicyKind::Srpt => "srpt",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PolicyKind::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown policy `{s}`: expected passthrough, priority, fair or srpt")
            })
    }
}

impl<'de> Deserialize<'de> for PolicyKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A tenant's scheduling class: level 0 is the highest. `high`, `normal` and `low` are levels
/// 0, 1 and 2; levels go down to [`Class::LOWEST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class(u8);

impl Class {
    pub const HIGH: Class = Class(0);
    pub const NORMAL: Class = Class(1);
    pub const LOW: Class = Class(2);
    pub const LOWEST: Class = Class(7);

    /// The class at `level` (0 = highest), if it is one.
    pub fn new(level: u8) -> Option<Class> {
        (level <= Self::LOWEST.0).then_some(Class(level))
    }

    pub const fn level(self) -> u8 {
        self.0
    }

    /// Whether this class is served before `other`.
    pub fn is_above(self, other: Class) -> bool {
        self.0 < other.0
    }

    /// The lower (later-served) of two classes.
    pub fn lower_of(self, other: Class) -> Class {
        Class(self.0.max(other.0))
    }
}

impl Default for Class {
    fn default() -> Self {
        Class::NORMAL
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("high"),
            1 => f.write_str("normal"),
            2 => f.write_str("low"),
            n => write!(f, "{n}"),
        }
    }
}

impl FromStr for Class {
    type Err = String;
    /// `high`, `normal`, `low` (any case) or a level `0`..=`7`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "high" => return Ok(Class::HIGH),
            "normal" => return Ok(Class::NORMAL),
            "low" => return Ok(Class::LOW),
            _ => {}
        }
        t.parse::<u8>().ok().and_then(Class::new).ok_or_else(|| {
            format!(
                "unknown class `{s}`: expected high, normal, low or a level 0..={}",
                Class::LOWEST.0
            )
        })
    }
}

impl<'de> Deserialize<'de> for Class {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Class;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "high, normal, low or a level 0..={}", Class::LOWEST.0)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Class, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Class, E> {
                u8::try_from(n)
                    .ok()
                    .and_then(Class::new)
                    .ok_or_else(|| E::custom(format!("class level {n} is not in 0..=7")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Class, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a byte count: a plain number of bytes, or a number with a unit: `B`, `KB`/`MB`/`GB`/
/// `TB` (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), in any case, with an
/// optional space and decimal fraction (`"1.5GiB"`). The result is rounded down to a byte.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if t.starts_with('-') {
        return Err(format!("`{s}` is not a size: sizes cannot be negative"));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` is not a size: unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(format!(
            "`{s}` is not a size: expected a number and a unit, e.g. \"8GiB\""
        ));
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let too_big = || format!("`{s}` is too large");
    let whole = int
        .parse::<u64>()
        .map_err(|_| too_big())?
        .checked_mul(mult)
        .ok_or_else(too_big)?;
    // The fraction, exactly: digits / 10^len * mult, rounded down.
    let mut part = 0u128;
    if !frac.is_empty() {
        let digits = frac.len().min(18) as u32;
        let f: u128 = frac[..digits as usize].parse().map_err(|_| too_big())?;
        part = f * mult as u128 / 10u128.pow(digits);
    }
    whole.checked_add(part as u64).ok_or_else(too_big)
}

/// A memory quota as written: bytes or `"unlimited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quota(Option<u64>);

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quota;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes, a size such as \"8GiB\", or \"unlimited\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Quota, E> {
                if s.trim().eq_ignore_ascii_case("unlimited") {
                    return Ok(Quota(None));
                }
                parse_bytes(s).map(|b| Quota(Some(b))).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Quota, E> {
                u64::try_from(n)
                    .map(|b| Quota(Some(b)))
                    .map_err(|_| E::custom(format!("memory_quota {n} is negative")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Quota, E> {
                Ok(Quota(Some(n)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A socket file mode: an octal string (`"660"`, `"0o660"`) or a TOML integer (`0o660`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mode(u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal mode such as \"660\" or 0o660")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Mode, E> {
                let t = s.trim();
                let digits = t.strip_prefix("0o").unwrap_or(t);
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(Mode(m)),
                    _ => Err(E::custom(format!(
                        "socket_mode `{s}` is not an octal mode between 000 and 777"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Mode, E> {
                match u32::try_from(n) {
                    Ok(m) if m <= 0o777 => Ok(Mode(m)),
                    _ => Err(E::custom(format!(
                        "socket_mode {n} is not a mode: write it in octal, as \"660\" or 0o660"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Mode, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    default: RawLimits,
    #[serde(default)]
    tenant: Vec<RawTenant>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    policy: Option<PolicyKind>,
    socket: Option<PathBuf>,
    socket_mode: Option<Mode>,
    metrics_listen: Option<String>,
    metrics_token_file: Option<PathBuf>,
    srpt_fairness: Option<f64>,
    srpt_short_job_us: Option<u64>,
    srpt_fast_lane_sm_reserve: Option<f64>,
    issue_window_us: Option<u64>,
    low_in_flight: Option<u32>,
    max_connections: Option<u32>,
    max_connections_per_uid: Option<u32>,
    first_frame_timeout_ms: Option<u64>,
    frame_budget: Option<Quota>,
    max_waiting_images: Option<Quota>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    class: Option<Class>,
    weight: Option<f64>,
    memory_quota: Option<Quota>,
    sm_share: Option<f64>,
    admit: Option<bool>,
    host_memory_quota: Option<Quota>,
    stream_quota: Option<u64>,
    event_quota: Option<u64>,
    module_quota: Option<u64>,
    connection_quota: Option<u64>,
    quota_scope: Option<QuotaScope>,
}

// serde cannot combine `flatten` with `deny_unknown_fields`, so the limits are repeated here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    class: Option<Class>,
    weight: Option<f64>,
    memory_quota: Option<Quota>,
    sm_share: Option<f64>,
    admit: Option<bool>,
    host_memory_quota: Option<Quota>,
    stream_quota: Option<u64>,
    event_quota: Option<u64>,
    module_quota: Option<u64>,
    connection_quota: Option<u64>,
    quota_scope: Option<QuotaScope>,
}

// ---- the checked configuration -------------------------------------------------------------

/// Where the metrics endpoint listens (`metrics_listen`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// A Unix socket with the control socket's mode (`"unix"`: `metrics.sock` beside the
    /// control socket; `"unix:/path"`).
    Unix(Option<PathBuf>),
    /// A TCP address (`"127.0.0.1:9464"`): readable by anyone who can reach it.
    Tcp(SocketAddr),
}

impl FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "unix" {
            return Ok(MetricsListen::Unix(None));
        }
        if let Some(p) = t.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(format!(
                    "metrics_listen `{s}`: a Unix socket path must be absolute (\"unix:/run/baton/metrics.sock\")"
                ));
            }
            return Ok(MetricsListen::Unix(Some(PathBuf::from(p))));
        }
        t.parse().map(MetricsListen::Tcp).map_err(|e| {
            format!(
                "metrics_listen `{s}` is not \"unix\", \"unix:/path\", an address such as \"127.0.0.1:9464\", or \"off\": {e}"
            )
        })
    }
}

/// `[daemon]`: how the daemon runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    pub policy: PolicyKind,
    /// Control socket path; `None`: the command line's or the built-in default.
    pub socket: Option<PathBuf>,
    /// Permissions of the socket file; `None`: the command line's or the built-in default.
    pub socket_mode: Option<u32>,
    /// Where the metrics endpoint listens; `None` (`metrics_listen = "off"`, the default): no
    /// endpoint.
    pub metrics_listen: Option<MetricsListen>,
    /// A file holding the token a scrape must present (`Authorization: Bearer TOKEN`); `None`:
    /// anyone who reaches the endpoint may read it.
    pub metrics_token_file: Option<PathBuf>,
    /// `srpt` only: how fast waiting work gains priority (0 = pure SRPT; see `docs/scheduling.md`).
    pub srpt_fairness: f64,
    /// `srpt` only: tenants whose typical job needs at most this much GPU time get their own
    /// issue window and high-priority streams; `None` (`srpt_short_job_us = 0`): no such lane.
    pub srpt_short_job: Option<Duration>,
    /// `srpt` with short jobs: the share of every GPU's SMs kept free of other work for the
    /// fast lanes (0: none; see `docs/scheduling.md`).
    pub srpt_fast_lane_sm_reserve: f64,
    /// `priority`, `fair`, `srpt`: estimated GPU time the scheduler keeps in flight (per GPU, or
    /// for `priority` per lower-class tenant) before it holds work back.
    pub issue_window: Duration,
    /// `priority`: items of lower classes allowed in flight while a higher class has work.
    pub low_in_flight: u32,
    /// Open connections of all clients together (also bounded by the descriptor limit, see
    /// `server`).
    pub max_connections: u32,
    /// Open connections of one uid.
    pub max_connections_per_uid: u32,
    /// How long a new connection may take to send its first request before it is closed.
    pub first_frame_timeout: Duration,
    /// Bytes of partly received requests, all connections together.
    pub frame_budget: u64,
    /// Bytes of module images attached and not yet loaded, all clients together.
    pub max_waiting_images: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            policy: PolicyKind::Passthrough,
            socket: None,
            socket_mode: None,
            metrics_listen: None,
            metrics_token_file: None,
            srpt_fairness: DEFAULT_SRPT_FAIRNESS,
            srpt_short_job: Some(Duration::from_micros(DEFAULT_SRPT_SHORT_JOB_US)),
            srpt_fast_lane_sm_reserve: DEFAULT_SRPT_FAST_LANE_SM_RESERVE,
            issue_window: Duration::from_micros(DEFAULT_ISSUE_WINDOW_US),
            low_in_flight: DEFAULT_LOW_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_uid: DEFAULT_MAX_CONNECTIONS_PER_UID,
            first_frame_timeout: Duration::from_millis(DEFAULT_FIRST_FRAME_TIMEOUT_MS),
            frame_budget: DEFAULT_FRAME_BUDGET,
            max_waiting_images: DEFAULT_MAX_WAITING_IMAGES,
        }
    }
}

/// What a tenant gets (`[default]`, or a `[[tenant]]` entry with `[default]` filled in).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub class: Class,
    /// Share of GPU time relative to other tenants (`fair`); positive.
    pub weight: f64,
    /// Device memory the tenant may hold, in bytes; `None`: unlimited.
    pub memory_quota: Option<u64>,
    /// Fraction of the GPU's SMs (0 < x <= 1), for green-context partitioning.
    pub sm_share: f64,
    /// `false`: clients matching this are refused.
    pub admit: bool,
    /// Pinned host memory and module images waiting to load, in bytes; `None`: unlimited.
    pub host_memory_quota: Option<u64>,
    /// Streams, events and modules the tenant may hold at once.
    pub stream_quota: u64,
    pub event_quota: u64,
    pub module_quota: u64,
    /// Client processes the tenant may have connected at once (`Status` queries are not counted).
    pub connection_quota: u64,
    /// Whether the quotas hold for all of the tenant's processes together or for each.
    pub quota_scope: QuotaScope,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            class: Class::NORMAL,
            weight: 1.0,
            memory_quota: None,
            sm_share: 1.0,
            admit: true,
            host_memory_quota: None,
            stream_quota: DEFAULT_STREAM_QUOTA,
            event_quota: DEFAULT_EVENT_QUOTA,
            module_quota: DEFAULT_MODULE_QUOTA,
            connection_quota: DEFAULT_CONNECTION_QUOTA,
            quota_scope: QuotaScope::Tenant,
        }
    }
}

/// What a tenant's quotas apply to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaScope {
    /// All processes of the tenant together: the processes that match one `[[tenant]]` entry,
    /// or for `[default]` the processes of one uid.
    #[default]
    Tenant,
    /// Each client process on its own.
    Process,
}

/// One `[[tenant]]` entry. It matches a client when every selector it names matches.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantRule {
    /// 1-based position in the file, for messages.
    pub index: usize,
    /// Matches the client's `BATON_TENANT` (chosen by the client: a claim, not a credential).
    pub name: Option<String>,
    /// Matches the client's uid (`SO_PEERCRED`).
    pub uid: Option<u32>,
    /// Matches any of the client's groups: its primary gid (`SO_PEERCRED`) and its
    /// supplementary groups (`SO_PEERGROUPS`, else `/proc/PID/status`).
    pub gid: Option<u32>,
    pub limits: Limits,
}

impl TenantRule {
    /// Whether a client with this identity matches the entry; `gids` are all its groups.
    pub fn matches(&self, name: Option<&str>, uid: u32, gids: &[u32]) -> bool {
        fn accepts<T: PartialEq>(want: Option<T>, got: T) -> bool {
            match want {
                Some(w) => w == got,
                None => true,
            }
        }
        accepts(self.uid, uid)
            && self.gid.is_none_or(|g| gids.contains(&g))
            && match (&self.name, name) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            }
    }

    /// Among matching entries the highest wins: verified identity (uid, then gid) outranks the
    /// name a client claims. Two entries with equal rank that both match are duplicates, which
    /// [`Config::parse`] refuses, so the winner is always unique.
    pub fn specificity(&self) -> u8 {
        4 * self.uid.is_some() as u8 + 2 * self.gid.is_some() as u8 + self.name.is_some() as u8
    }

    /// How messages name this entry: `[[tenant]] #2 (name = "train", uid = 1001)`.
    pub fn describe(&self) -> String {
        describe_entry(self.index, self.name.as_deref(), self.uid, self.gid)
    }
}

fn describe_entry(index: usize, name: Option<&str>, uid: Option<u32>, gid: Option<u32>) -> String {
    let mut sel = Vec::new();
    if let Some(n) = name {
        sel.push(format!("name = {n:?}"));
    }
    if let Some(u) = uid {
        sel.push(format!("uid = {u}"));
    }
    if let Some(g) = gid {
        sel.push(format!("gid = {g}"));
    }
    if sel.is_empty() {
        format!("[[tenant]] #{index}")
    } else {
        format!("[[tenant]] #{index} ({})", sel.join(", "))
    }
}

/// The whole policy file, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub daemon: DaemonConfig,
    /// `[default]`: for clients that match no entry.
    pub default: Limits,
    pub tenants: Vec<TenantRule>,
}

/// The policy a connecting client gets.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantPolicy {
    /// The tenant's name for accounting and logs: its `BATON_TENANT`, else `uid:N`.
    pub name: String,
    /// The entry that matched (as [`TenantRule::describe`] writes it), or `None` for `[default]`.
    pub matched: Option<String>,
    /// The class in force: the configured one, or a lower one the client asked for.
    pub class: Class,
    pub weight: f64,
    pub memory_quota: Option<u64>,
    pub sm_share: f64,
    pub host_memory_quota: Option<u64>,
    pub stream_quota: u64,
    pub event_quota: u64,
    pub module_quota: u64,
    pub connection_quota: u64,
    pub quota_scope: QuotaScope,
    /// Which account the quotas are kept in: the matched entry, or `[default]` and the uid.
    pub account: String,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        let l = Limits::default();
        TenantPolicy {
            name: String::new(),
            matched: None,
            class: l.class,
            weight: l.weight,
            memory_quota: l.memory_quota,
            sm_share: l.sm_share,
            host_memory_quota: l.host_memory_quota,
            stream_quota: l.stream_quota,
            event_quota: l.event_quota,
            module_quota: l.module_quota,
            connection_quota: l.connection_quota,
            quota_scope: l.quota_scope,
            account: String::new(),
        }
    }
}

/// Why a policy file was refused.
#[derive(Debug)]
pub enum ConfigError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong form; the message gives the line,
    /// column and key.
    Syntax {
        path: Option<PathBuf>,
        message: String,
    },
    /// A value out of range or an inconsistency, in the entry `at`.
    Invalid {
        path: Option<PathBuf>,
        at: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = |f: &mut fmt::Formatter<'_>, p: &Option<PathBuf>| match p {
            Some(p) => write!(f, "{}: ", p.display()),
            None => Ok(()),
        };
        match self {
            ConfigError::Io { path, error } => write!(f, "reading {}: {error}", path.display()),
            ConfigError::Syntax { path, message } => {
                prefix(f, path)?;
                f.write_str(message.trim_end())
            }
            ConfigError::Invalid { path, at, message } => {
                prefix(f, path)?;
                write!(f, "{at}: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn with_path(self, p: &Path) -> ConfigError {
        match self {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: Some(p.to_owned()),
                message,
            },
            ConfigError::Invalid { at, message, .. } => ConfigError::Invalid {
                path: Some(p.to_owned()),
                at,
                message,
            },
            e => e,
        }
    }
}

/// Why a client is not let in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmitError {
    #[error("uid {uid} (gid {gid}) is refused by {at} of the policy file")]
    Refused { uid: u32, gid: u32, at: String },
    #[error("BATON_CLASS={value:?}: {reason}")]
    BadClass { value: String, reason: String },
    #[error("{what} {shown} is refused: {reason}")]
    BadName {
        what: &'static str,
        /// The name as given, escaped (it is the client's).
        shown: String,
        reason: String,
    },
}

/// Checks a name a client gives (`BATON_TENANT`, `BATON_CLASS`): at most
/// [`baton_ipc::control::MAX_NAME_LEN`] bytes of printable characters, since names appear in
/// logs, status and metrics. The error shows the name escaped.
pub fn check_name(what: &'static str, name: &str) -> Result<(), AdmitError> {
    let max = baton_ipc::control::MAX_NAME_LEN;
    let reason = if name.len() > max {
        format!("{} bytes long, at most {max} are allowed", name.len())
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("it holds the control character {c:?}; use printable characters only")
    } else {
        return Ok(());
    };
    Err(AdmitError::BadName {
        what,
        shown: escaped(name, 80),
        reason,
    })
}

/// `s` quoted and escaped for a log line, cut after `max` characters.
pub fn escaped(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

fn invalid(at: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        at: at.to_owned(),
        message,
    }
}

fn limits(raw: RawLimits, base: &Limits, at: &str) -> Result<Limits, ConfigError> {
    let weight = raw.weight.unwrap_or(base.weight);
    if !(weight.is_finite() && weight > 0.0) {
        return Err(invalid(
            at,
            format!("weight must be a positive number, got {weight}"),
        ));
    }
    let sm_share = raw.sm_share.unwrap_or(base.sm_share);
    if !(sm_share.is_finite() && sm_share > 0.0 && sm_share <= 1.0) {
        return Err(invalid(
            at,
            format!("sm_share must be in (0, 1] (a fraction of the GPU's SMs), got {sm_share}"),
        ));
    }
    Ok(Limits {
        class: raw.class.unwrap_or(base.class),
        weight,
        memory_quota: raw.memory_quota.map_or(base.memory_quota, |q| q.0),
        sm_share,
        // Entries exist to let clients in: they admit unless they say otherwise, whatever
        // [default] says.
        admit: raw.admit.unwrap_or(true),
        host_memory_quota: raw
            .host_memory_quota
            .map_or(base.host_memory_quota, |q| q.0),
        stream_quota: raw.stream_quota.unwrap_or(base.stream_quota),
        event_quota: raw.event_quota.unwrap_or(base.event_quota),
        module_quota: raw.module_quota.unwrap_or(base.module_quota),
        connection_quota: raw.connection_quota.unwrap_or(base.connection_quota),
        quota_scope: raw.quota_scope.unwrap_or(base.quota_scope),
    })
}

impl Config {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: None,
            message: e.to_string(),
        })?;

        let d = raw.daemon;
        let mut daemon = DaemonConfig {
            policy: d.policy.unwrap_or_default(),
            socket: d.socket,
            socket_mode: d.socket_mode.map(|m| m.0),
            ..DaemonConfig::default()
        };
        if let Some(m) = d.metrics_listen {
            daemon.metrics_listen = if m.trim().eq_ignore_ascii_case("off") {
                None
            } else {
                Some(m.parse().map_err(|e| invalid("[daemon]", e))?)
            };
        }
        if let Some(f) = d.srpt_fairness {
            if !(f.is_finite() && f >= 0.0) {
                return Err(invalid(
                    "[daemon]",
                    format!("srpt_fairness must be a number >= 0, got {f}"),
                ));
            }
            daemon.srpt_fairness = f;
        }
        if let Some(us) = d.srpt_short_job_us {
            daemon.srpt_short_job = (us > 0).then(|| Duration::from_micros(us));
        }
        if let Some(r) = d.srpt_fast_lane_sm_reserve {
            if !(r.is_finite() && (0.0..=0.5).contains(&r)) {
                return Err(invalid(
                    "[daemon]",
                    format!("srpt_fast_lane_sm_reserve must be a share from 0 to 0.5, got {r}"),
                ));
            }
            daemon.srpt_fast_lane_sm_reserve = r;
        }
        match d.issue_window_us {
            Some(0) => return Err(invalid("[daemon]", "issue_window_us must be > 0".into())),
            Some(w) => daemon.issue_window = Duration::from_micros(w),
            None if daemon.policy == PolicyKind::Srpt => {
                daemon.issue_window = Duration::from_micros(DEFAULT_SRPT_ISSUE_WINDOW_US)
            }
            None => {}
        }
        if let Some(k) = d.low_in_flight {
            daemon.low_in_flight = k;
        }
        if let Some(f) = d.metrics_token_file {
            if !f.is_absolute() {
                return Err(invalid(
                    "[daemon]",
                    format!(
                        "metrics_token_file `{}` must be an absolute path",
                        f.display()
                    ),
                ));
            }
            daemon.metrics_token_file = Some(f);
        }
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(invalid("[daemon]", format!("{key} must be > 0")))
            } else {
                Ok(v)
            }
        };
        if let Some(n) = d.max_connections {
            daemon.max_connections = positive("max_connections", n.into())? as u32;
        }
        if let Some(n) = d.max_connections_per_uid {
            daemon.max_connections_per_uid = positive("max_connections_per_uid", n.into())? as u32;
        }
        if let Some(ms) = d.first_frame_timeout_ms {
            daemon.first_frame_timeout =
                Duration::from_millis(positive("first_frame_timeout_ms", ms)?);
        }
        if let Some(q) = d.frame_budget {
            let b = q.0.unwrap_or(u64::MAX);
            if b < baton_ipc::control::MAX_REQUEST as u64 {
                return Err(invalid(
                    "[daemon]",
                    format!(
                        "frame_budget must hold at least one request ({} bytes)",
                        baton_ipc::control::MAX_REQUEST
                    ),
                ));
            }
            daemon.frame_budget = b;
        }
        if let Some(q) = d.max_waiting_images {
            daemon.max_waiting_images = q.0.unwrap_or(u64::MAX);
        }

        let default = limits(raw.default, &Limits::default(), "[default]")?;

        let mut tenants: Vec<TenantRule> = Vec::with_capacity(raw.tenant.len());
        for (i, t) in raw.tenant.into_iter().enumerate() {
            let index = i + 1;
            let at = describe_entry(index, t.name.as_deref(), t.uid, t.gid);
            if t.name.is_none() && t.uid.is_none() && t.gid.is_none() {
                return Err(invalid(
                    &at,
                    "names no client: give it a `name`, a `uid` or a `gid` (use [default] for everyone else)".into(),
                ));
            }
            if t.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(invalid(&at, "`name` is empty".into()));
            }
            let raw_limits = RawLimits {
                class: t.class,
                weight: t.weight,
                memory_quota: t.memory_quota,
                sm_share: t.sm_share,
                admit: t.admit,
                host_memory_quota: t.host_memory_quota,
                stream_quota: t.stream_quota,
                event_quota: t.event_quota,
                module_quota: t.module_quota,
                connection_quota: t.connection_quota,
                quota_scope: t.quota_scope,
            };
            let rule = TenantRule {
                index,
                name: t.name,
                uid: t.uid,
                gid: t.gid,
                limits: limits(raw_limits, &default, &at)?,
            };
            if let Some(prev) = tenants
                .iter()
                .find(|p| (&p.name, p.uid, p.gid) == (&rule.name, rule.uid, rule.gid))
            {
                return Err(invalid(
                    &at,
                    format!(
                        "duplicate of {}: both match the same clients",
                        prev.describe()
                    ),
                ));
            }
            tenants.push(rule);
        }
        Ok(Config {
            daemon,
            default,
            tenants,
        })
    }

    /// Reads and checks a policy file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text).map_err(|e| e.with_path(path))
    }

    /// The entry that applies to a client, or `None` for `[default]`.
    pub fn matching(&self, name: Option<&str>, uid: u32, gids: &[u32]) -> Option<&TenantRule> {
        self.tenants
            .iter()
            .filter(|t| t.matches(name, uid, gids))
            .max_by_key(|t| (t.specificity(), std::cmp::Reverse(t.index)))
    }

    /// The policy for a connecting client: `name` is its `BATON_TENANT`, `class_env` its
    /// `BATON_CLASS`, `uid`/`gid` come from `SO_PEERCRED`.
    ///
    /// The most specific matching entry applies (uid outranks gid outranks name), else
    /// `[default]`. A client may ask for a *lower* class than its entry grants, never a higher
    /// one: a higher request is clamped to what the file grants.
    pub fn resolve(
        &self,
        name: Option<&str>,
        class_env: Option<&str>,
        uid: u32,
        gid: u32,
    ) -> Result<TenantPolicy, AdmitError> {
        self.resolve_groups(name, class_env, uid, gid, &[])
    }

    /// Whether an entry that names `uid` refuses it (`uid = N`, `admit = false`): the one way a
    /// policy refuses root its status (`server::Daemon::answers_status_of_operator`).
    pub fn names_uid_refused(&self, uid: u32) -> bool {
        self.tenants
            .iter()
            .any(|t| t.uid == Some(uid) && !t.limits.admit)
    }

    /// Whether the policy refuses a client of this uid and these groups whatever tenant name
    /// it gives: then it is refused as soon as it connects, before it sends anything.
    pub fn refuses_every_name(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        let refused = |name: Option<&str>| {
            matches!(
                self.resolve_groups(name, None, uid, gid, groups),
                Err(AdmitError::Refused { .. })
            )
        };
        // A name no entry names matches as no name does.
        refused(None)
            && self
                .tenants
                .iter()
                .filter_map(|t| t.name.as_deref())
                .all(|n| refused(Some(n)))
    }

    /// [`Config::resolve`] for a client that also has the supplementary groups `groups`: a
    /// `gid` entry matches any of its groups. Names are checked first ([`check_name`]).
    pub fn resolve_groups(
        &self,
        name: Option<&str>,
        class_env: Option<&str>,
        uid: u32,
        gid: u32,
        groups: &[u32],
    ) -> Result<TenantPolicy, AdmitError> {
        if let Some(n) = name {
            check_name("BATON_TENANT", n)?;
        }
        if let Some(c) = class_env {
            check_name("BATON_CLASS", c)?;
        }
        let mut gids = Vec::with_capacity(groups.len() + 1);
        gids.push(gid);
        gids.extend_from_slice(groups);
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let rule = self.matching(name, uid, &gids);
        let l = rule.map_or(&self.default, |r| &r.limits);
        if !l.admit {
            return Err(AdmitError::Refused {
                uid,
                gid,
                at: rule.map_or_else(|| "[default]".to_owned(), TenantRule::describe),
            });
        }
        let mut class = l.class;
        if let Some(v) = class_env.map(str::trim).filter(|v| !v.is_empty()) {
            let asked: Class = v.parse().map_err(|reason| AdmitError::BadClass {
                value: v.to_owned(),
                reason,
            })?;
            class = class.lower_of(asked);
        }
        Ok(TenantPolicy {
            name: self
                .granted_name(name, rule)
                .map_or_else(|| format!("uid:{uid}"), str::to_owned),
            matched: rule.map(TenantRule::describe),
            class,
            weight: l.weight,
            memory_quota: l.memory_quota,
            sm_share: l.sm_share,
            host_memory_quota: l.host_memory_quota,
            stream_quota: l.stream_quota,
            event_quota: l.event_quota,
            module_quota: l.module_quota,
            connection_quota: l.connection_quota,
            quota_scope: l.quota_scope,
            // Whatever name a client claims, the processes one entry admits share its quotas.
            account: rule.map_or_else(|| format!("[default] uid {uid}"), TenantRule::describe),
        })
    }

    /// The tenant name a client is accounted under, given the entry that matched it. A name
    /// that only entries with a `uid` or `gid` name is bound to those identities: a client
    /// outside them that claims it (a container setting `BATON_TENANT`, say) gets neither that
    /// entry's policy (matching already sees to that) nor the name in status, logs and
    /// metrics; it is accounted as `uid:N`. A name some entry names without a `uid` or `gid`
    /// stays open to anyone who claims it, as that entry says.
    fn granted_name<'a>(
        &self,
        name: Option<&'a str>,
        rule: Option<&TenantRule>,
    ) -> Option<&'a str> {
        let n = name?;
        if rule.is_some_and(|r| r.name.as_deref() == Some(n)) {
            return Some(n);
        }
        let mut naming = self
            .tenants
            .iter()
            .filter(|t| t.name.as_deref() == Some(n))
            .peekable();
        let bound = naming.peek().is_some() && naming.all(|t| t.uid.is_some() || t.gid.is_some());
        (!bound).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    /// Only an entry naming the uid refuses root its status; a `[default]` that admits nobody
    /// does not (`server::Daemon::answers_status_of_operator`).
    #[test]
    fn only_an_entry_naming_a_uid_refuses_it_explicitly() {
        let none = Config::parse("[default]\nadmit = false\n").unwrap();
        assert!(!none.names_uid_refused(0));
        let root = Config::parse("[[tenant]]\nuid = 0\nadmit = false\n").unwrap();
        assert!(root.names_uid_refused(0));
        assert!(!root.names_uid_refused(1000));
        let admitted = Config::parse("[[tenant]]\nuid = 0\nname = \"ops\"\n").unwrap();
        assert!(!admitted.names_uid_refused(0));
    }

    #[test]
    fn empty_file_is_passthrough_with_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.daemon.policy, PolicyKind::Passthrough);
        assert_eq!(c.daemon.metrics_listen, None);
        let p = c.resolve(None, None, 1000, 1000).unwrap();
        assert_eq!(p.name, "uid:1000");
        assert_eq!(p.class, Class::NORMAL);
        assert_eq!(p.weight, 1.0);
        assert_eq!(p.memory_quota, None);
        assert_eq!(p.matched, None);
    }

    #[test]
    fn example_quota_file_parses() {
        let c = Config::parse(include_str!("../../examples/quota.toml")).unwrap();
        let p = c.resolve(Some("alice"), None, 1000, 1000).unwrap();
        assert_eq!(p.memory_quota, Some(2 << 30));
    }

    #[test]
    fn packaged_file_parses() {
        let c = Config::parse(include_str!("../../packaging/baton.toml")).unwrap();
        assert_eq!(c.daemon.policy, PolicyKind::Passthrough);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../docs/config.example.toml");
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.daemon.policy, PolicyKind::Priority);
        assert_eq!(c.daemon.socket_mode, Some(0o660));
        assert!(c.tenants.len() >= 3);
        // The inference service: uid 1001 claiming its name.
        let p = c.resolve(Some("inference"), None, 1001, 1001).unwrap();
        assert_eq!(p.class, Class::HIGH);
        assert_eq!(p.memory_quota, Some(8 << 30));
        // Someone else claiming the same name does not get the inference entry.
        let q = c.resolve(Some("inference"), None, 2000, 2000).unwrap();
        assert_ne!(q.class, Class::HIGH);
        // The refused uid.
        assert!(matches!(
            c.resolve(None, None, 65534, 65534),
            Err(AdmitError::Refused { .. })
        ));
    }

    #[test]
    fn a_name_bound_to_a_uid_cannot_be_claimed_from_another() {
        let c = Config::parse(
            r#"
            [default]
            class = "low"
            memory_quota = "1GiB"
            [[tenant]]
            name = "inference"
            uid = 1001
            class = "high"
            memory_quota = "8GiB"
            [[tenant]]
            name = "batch"
            gid = 2000
            class = "normal"
            [[tenant]]
            uid = 3000
            class = "normal"
            [[tenant]]
            name = "shared"
            uid = 4000
            class = "high"
            [[tenant]]
            name = "shared"
            class = "normal"
            "#,
        )
        .unwrap();
        // The bound identity gets its entry and its name.
        let p = c.resolve(Some("inference"), None, 1001, 1001).unwrap();
        assert_eq!((p.class, p.memory_quota), (Class::HIGH, Some(8 << 30)));
        assert_eq!(p.name, "inference");
        // Another uid claiming it (a container setting BATON_TENANT): [default]'s policy, and
        // accounted under its own uid, not the bound name.
        let p = c.resolve(Some("inference"), None, 0, 0).unwrap();
        assert_eq!(p.matched, None);
        assert_eq!((p.class, p.memory_quota), (Class::LOW, Some(1 << 30)));
        assert_eq!(p.name, "uid:0");
        // A uid with its own entry keeps that entry, and still not the name.
        let p = c.resolve(Some("inference"), None, 3000, 3000).unwrap();
        assert_eq!(p.matched.as_deref(), Some("[[tenant]] #3 (uid = 3000)"));
        assert_eq!(p.class, Class::NORMAL);
        assert_eq!(p.name, "uid:3000");
        // Bound to a gid: members get it, others do not.
        assert_eq!(
            c.resolve(Some("batch"), None, 5, 2000).unwrap().name,
            "batch"
        );
        let p = c.resolve(Some("batch"), None, 5, 5).unwrap();
        assert_eq!((p.name.as_str(), p.class), ("uid:5", Class::LOW));
        // A name some entry leaves open is anyone's to claim, with that entry's policy; the
        // uid-bound entry of the same name still goes only to its uid.
        let p = c.resolve(Some("shared"), None, 5, 5).unwrap();
        assert_eq!((p.name.as_str(), p.class), ("shared", Class::NORMAL));
        let p = c.resolve(Some("shared"), None, 4000, 4000).unwrap();
        assert_eq!((p.name.as_str(), p.class), ("shared", Class::HIGH));
        // Names no entry mentions are claims as before.
        assert_eq!(c.resolve(Some("mine"), None, 5, 5).unwrap().name, "mine");
    }

    #[test]
    fn issue_window_default_depends_on_the_policy() {
        let window = |text: &str| Config::parse(text).unwrap().daemon.issue_window;
        let us = Duration::from_micros;
        assert_eq!(window(""), us(DEFAULT_ISSUE_WINDOW_US));
        assert_eq!(
            window("[daemon]\npolicy = \"fair\"\n"),
            us(DEFAULT_ISSUE_WINDOW_US)
        );
        assert_eq!(
            window("[daemon]\npolicy = \"srpt\"\n"),
            us(DEFAULT_SRPT_ISSUE_WINDOW_US)
        );
        assert_eq!(
            window("[daemon]\npolicy = \"srpt\"\nissue_window_us = 700\n"),
            us(700)
        );
    }

    #[test]
    fn all_keys() {
        let c = Config::parse(
            r#"
            [daemon]
            policy = "srpt"
            socket = "/tmp/b.sock"
            socket_mode = "600"
            metrics_listen = "0.0.0.0:9000"
            srpt_fairness = 2
            srpt_short_job_us = 250
            srpt_fast_lane_sm_reserve = 0.2
            issue_window_us = 500
            low_in_flight = 3

            [default]
            class = "low"
            weight = 0.5
            memory_quota = "1.5GiB"
            sm_share = 0.25
            admit = true

            [[tenant]]
            name = "a"
            uid = 7
            gid = 8
            class = 4
            weight = 3
            memory_quota = 1024
            sm_share = 1
            admit = true
            "#,
        )
        .unwrap();
        let d = &c.daemon;
        assert_eq!(d.policy, PolicyKind::Srpt);
        assert_eq!(d.socket.as_deref(), Some(Path::new("/tmp/b.sock")));
        assert_eq!(d.socket_mode, Some(0o600));
        assert_eq!(d.metrics_listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(d.srpt_fairness, 2.0);
        assert_eq!(d.srpt_short_job, Some(Duration::from_micros(250)));
        assert_eq!(d.srpt_fast_lane_sm_reserve, 0.2);
        assert_eq!(d.issue_window, Duration::from_micros(500));
        assert_eq!(d.low_in_flight, 3);
        assert_eq!(c.default.class, Class::LOW);
        assert_eq!(c.default.memory_quota, Some(3 << 29));
        let t = &c.tenants[0];
        assert_eq!(t.limits.class, Class::new(4).unwrap());
        assert_eq!(t.limits.weight, 3.0);
        assert_eq!(t.limits.memory_quota, Some(1024));
        assert_eq!(t.limits.sm_share, 1.0);
    }

    #[test]
    fn tenant_fields_inherit_default() {
        let c = Config::parse(
            r#"
            [default]
            class = "low"
            memory_quota = "2GiB"
            weight = 2
            [[tenant]]
            uid = 5
            class = "high"
            [[tenant]]
            uid = 6
            memory_quota = "unlimited"
            "#,
        )
        .unwrap();
        let a = c.resolve(None, None, 5, 5).unwrap();
        assert_eq!(
            (a.class, a.memory_quota, a.weight),
            (Class::HIGH, Some(2 << 30), 2.0)
        );
        let b = c.resolve(None, None, 6, 6).unwrap();
        assert_eq!((b.class, b.memory_quota), (Class::LOW, None));
        let other = c.resolve(None, None, 9, 9).unwrap();
        assert_eq!(other.memory_quota, Some(2 << 30));
    }

    #[test]
    fn socket_mode_forms() {
        let m = |s: &str| Config::parse(&format!("[daemon]\nsocket_mode = {s}\n"));
        assert_eq!(m("\"660\"").unwrap().daemon.socket_mode, Some(0o660));
        assert_eq!(m("\"0o600\"").unwrap().daemon.socket_mode, Some(0o600));
        assert_eq!(m("0o660").unwrap().daemon.socket_mode, Some(0o660));
        let e = m("660").unwrap_err().to_string();
        assert!(e.contains("socket_mode 660 is not a mode"), "{e}");
        assert!(m("\"999\"").is_err());
        assert!(m("\"\"").is_err());
    }

    #[test]
    fn metrics_listen_off_and_bad() {
        let c = Config::parse("[daemon]\nmetrics_listen = \"off\"\n").unwrap();
        assert_eq!(c.daemon.metrics_listen, None);
        let e = err("[daemon]\nmetrics_listen = \"localhost\"\n");
        assert!(e.contains("[daemon]: metrics_listen `localhost`"), "{e}");
        let m = |v: &str| {
            Config::parse(&format!("[daemon]\nmetrics_listen = \"{v}\"\n"))
                .map(|c| c.daemon.metrics_listen)
        };
        assert_eq!(m("unix").unwrap(), Some(MetricsListen::Unix(None)));
        assert_eq!(
            m("unix:/run/m.sock").unwrap(),
            Some(MetricsListen::Unix(Some("/run/m.sock".into())))
        );
        let e = m("unix:m.sock").unwrap_err().to_string();
        assert!(e.contains("must be absolute"), "{e}");
    }

    #[test]
    fn metrics_token_file_must_be_absolute() {
        let c = Config::parse("[daemon]\nmetrics_token_file = \"/etc/baton/t\"\n").unwrap();
        assert_eq!(c.daemon.metrics_token_file, Some("/etc/baton/t".into()));
        let e = err("[daemon]\nmetrics_token_file = \"t\"\n");
        assert!(e.contains("must be an absolute path"), "{e}");
    }

    #[test]
    fn negative_sizes_say_so() {
        let e = err("[default]\nmemory_quota = \"-5GiB\"\n");
        assert!(e.contains("cannot be negative"), "{e}");
        assert!(!e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let e = err("[daemon]\npolicy = \"fair\"\npolcy = 1\n");
        assert!(e.contains("unknown field `polcy`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[[tenant]]\nuid = 1\nwieght = 2\n");
        assert!(e.contains("unknown field `wieght`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[default]\nnmae = \"x\"\n");
        assert!(e.contains("unknown field `nmae`"), "{e}");
        let e = err("[deamon]\n");
        assert!(e.contains("unknown field `deamon`"), "{e}");
    }

    #[test]
    fn unknown_policy_is_refused() {
        let e = err("[daemon]\npolicy = \"lottery\"\n");
        assert!(e.contains("unknown policy `lottery`"), "{e}");
        assert!(e.contains("passthrough, priority, fair or srpt"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_name_their_entry() {
        let e = err("[[tenant]]\nuid = 1\n[[tenant]]\nname = \"t\"\nweight = 0\n");
        assert_eq!(
            e,
            "[[tenant]] #2 (name = \"t\"): weight must be a positive number, got 0"
        );
        let e = err("[[tenant]]\ngid = 3\nsm_share = 1.5\n");
        assert!(
            e.starts_with("[[tenant]] #1 (gid = 3): sm_share must be in (0, 1]"),
            "{e}"
        );
        let e = err("[default]\nsm_share = 0\n");
        assert!(e.starts_with("[default]: sm_share"), "{e}");
        let e = err("[default]\nweight = -1\n");
        assert!(e.starts_with("[default]: weight"), "{e}");
        let e = err("[daemon]\nsrpt_fairness = -0.1\n");
        assert!(e.starts_with("[daemon]: srpt_fairness"), "{e}");
        let e = err("[daemon]\nsrpt_fast_lane_sm_reserve = 0.75\n");
        assert!(e.starts_with("[daemon]: srpt_fast_lane_sm_reserve"), "{e}");
        let e = err("[daemon]\nissue_window_us = 0\n");
        assert!(e.starts_with("[daemon]: issue_window_us"), "{e}");
        let e = err("[[tenant]]\nuid = 1\nclass = \"urgent\"\n");
        assert!(e.contains("unknown class `urgent`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[[tenant]]\nuid = 1\nclass = 9\n");
        assert!(e.contains("class level 9"), "{e}");
        let e = err("[[tenant]]\nuid = 1\nmemory_quota = \"8 GiBs\"\n");
        assert!(e.contains("unknown unit `GiBs`"), "{e}");
        let e = err("[[tenant]]\nuid = 1\nmemory_quota = -5\n");
        assert!(e.contains("negative"), "{e}");
        let e = err("[[tenant]]\nuid = -1\n");
        assert!(e.contains("uid"), "{e}");
        let e = err("[[tenant]]\nclass = \"high\"\n");
        assert!(e.starts_with("[[tenant]] #1: names no client"), "{e}");
        let e = err("[[tenant]]\nname = \" \"\n");
        assert!(e.contains("`name` is empty"), "{e}");
    }

    #[test]
    fn duplicates_are_refused() {
        let e = err("[[tenant]]\nuid = 1\nname = \"a\"\n[[tenant]]\nuid = 2\n[[tenant]]\nname = \"a\"\nuid = 1\nclass = \"low\"\n");
        assert_eq!(
            e,
            "[[tenant]] #3 (name = \"a\", uid = 1): duplicate of [[tenant]] #1 (name = \"a\", uid = 1): both match the same clients"
        );
        // Same uid with different names is not a duplicate.
        Config::parse("[[tenant]]\nuid = 1\nname = \"a\"\n[[tenant]]\nuid = 1\nname = \"b\"\n")
            .unwrap();
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("baton-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[default]\nweight = 0\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: [default]: weight", p.display())),
            "{e}"
        );
        let e = Config::load(&dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("reading "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("8 gib"), Ok(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2KiB"), Ok(2048));
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        assert_eq!(parse_bytes("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("0.5KB"), Ok(500));
        assert_eq!(parse_bytes("100B"), Ok(100));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("1.GiB").is_err());
        assert!(parse_bytes("1..5GiB").is_err());
        assert!(parse_bytes("-1GiB").is_err());
        assert!(parse_bytes("8 GiBs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn matching_prefers_verified_identity() {
        let c = Config::parse(
            r#"
            [default]
            admit = false
            [[tenant]]
            name = "svc"
            class = "high"
            [[tenant]]
            gid = 100
            class = "low"
            [[tenant]]
            uid = 1000
            class = "normal"
            [[tenant]]
            uid = 1000
            name = "svc"
            class = 0
            weight = 5
            [[tenant]]
            uid = 666
            admit = false
            "#,
        )
        .unwrap();
        // Nothing matches: the default refuses.
        let e = c.resolve(None, None, 1, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "uid 1 (gid 1) is refused by [default] of the policy file"
        );
        // A name-only entry admits whoever claims it (documented: a claim, not a credential).
        assert_eq!(
            c.resolve(Some("svc"), None, 1, 1).unwrap().class,
            Class::HIGH
        );
        // gid outranks the claimed name.
        assert_eq!(
            c.resolve(Some("svc"), None, 2, 100).unwrap().class,
            Class::LOW
        );
        // uid outranks gid.
        let p = c.resolve(None, None, 1000, 100).unwrap();
        assert_eq!(p.class, Class::NORMAL);
        assert_eq!(p.matched.as_deref(), Some("[[tenant]] #3 (uid = 1000)"));
        // uid + name outranks uid alone.
        let p = c.resolve(Some("svc"), None, 1000, 100).unwrap();
        assert_eq!((p.class, p.weight), (Class::HIGH, 5.0));
        assert_eq!(p.name, "svc");
        // A refused uid cannot get in by claiming a name.
        let e = c.resolve(Some("svc"), None, 666, 100).unwrap_err();
        assert_eq!(
            e,
            AdmitError::Refused {
                uid: 666,
                gid: 100,
                at: "[[tenant]] #5 (uid = 666)".into()
            }
        );
    }

    #[test]
    fn class_env_may_lower_but_not_raise() {
        let c = Config::parse("[[tenant]]\nuid = 1\nclass = \"normal\"\n").unwrap();
        let class = |v: &str| c.resolve(None, Some(v), 1, 1).map(|p| p.class);
        assert_eq!(class("low"), Ok(Class::LOW));
        assert_eq!(class("LOW"), Ok(Class::LOW));
        assert_eq!(class("5"), Ok(Class::new(5).unwrap()));
        assert_eq!(class("high"), Ok(Class::NORMAL)); // clamped
        assert_eq!(class("0"), Ok(Class::NORMAL)); // clamped
        assert_eq!(class(""), Ok(Class::NORMAL)); // unset
        assert!(matches!(class("urgent"), Err(AdmitError::BadClass { .. })));
        assert!(matches!(class("8"), Err(AdmitError::BadClass { .. })));
    }

    #[test]
    fn class_order_and_names() {
        assert!(Class::HIGH.is_above(Class::NORMAL));
        assert!(Class::NORMAL.is_above(Class::LOW));
        assert!(!Class::LOW.is_above(Class::LOW));
        assert_eq!(Class::HIGH.lower_of(Class::LOW), Class::LOW);
        assert_eq!(Class::new(8), None);
        for c in ["high", "normal", "low", "3"] {
            assert_eq!(c.parse::<Class>().unwrap().to_string(), c);
        }
        for p in PolicyKind::ALL {
            assert_eq!(p.name().parse::<PolicyKind>(), Ok(p));
        }
    }

    #[test]
    fn gid_entries_match_supplementary_groups() {
        let c = Config::parse("[[tenant]]\ngid = 65534\nadmit = false\n").unwrap();
        assert!(c.resolve_groups(None, None, 1000, 1000, &[]).is_ok());
        let err = c
            .resolve_groups(None, None, 1000, 1000, &[27, 65534])
            .unwrap_err();
        assert!(matches!(err, AdmitError::Refused { .. }), "{err}");
        assert!(
            c.resolve(None, None, 1000, 65534).is_err(),
            "the primary gid still counts"
        );
    }

    #[test]
    fn a_uid_refused_under_every_name_is_known_before_it_names_one() {
        let c = Config::parse(
            "[[tenant]]\nuid = 5\nadmit = false\n[[tenant]]\nuid = 6\nadmit = false\n\
             [[tenant]]\nuid = 6\nname = \"ok\"\n[[tenant]]\ngid = 9\nadmit = false\n",
        )
        .unwrap();
        assert!(c.refuses_every_name(5, 5, &[]));
        assert!(
            !c.refuses_every_name(6, 6, &[]),
            "uid 6 may come in as \"ok\""
        );
        assert!(c.refuses_every_name(7, 7, &[9]));
        assert!(!c.refuses_every_name(7, 7, &[]));
    }

    #[test]
    fn names_must_be_printable_and_short() {
        let c = Config::default();
        let forged = "alice\nERROR kernel fault caused by tenant bob\x1b[2J";
        let e = c.resolve(Some(forged), None, 1, 1).unwrap_err().to_string();
        assert!(e.contains("control character"), "{e}");
        assert!(
            !e.contains('\n') && !e.contains('\x1b'),
            "the error shows it escaped: {e}"
        );
        let e = c
            .resolve(Some(&"x".repeat(65)), None, 1, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("65 bytes long, at most 64"), "{e}");
        assert!(e.len() < 300, "a long name is cut in the message");
        assert!(
            c.resolve(None, Some("lo\tw"), 1, 1).is_err(),
            "class names too"
        );
        let p = c.resolve(Some(&"é".repeat(32)), None, 1, 1).unwrap();
        assert_eq!(p.name.len(), 64);
    }

    #[test]
    fn quota_and_limit_keys_parse_and_name_the_account() {
        let c = Config::parse(
            "[daemon]\nmax_connections = 10\nmax_connections_per_uid = 2\nfirst_frame_timeout_ms = 250\nframe_budget = \"1MiB\"\nmax_waiting_images = \"1GiB\"\n\
             [default]\nstream_quota = 5\nquota_scope = \"process\"\n\
             [[tenant]]\nuid = 7\nhost_memory_quota = \"2GiB\"\nevent_quota = 3\nmodule_quota = 4\nconnection_quota = 9\n",
        )
        .unwrap();
        let d = &c.daemon;
        assert_eq!((d.max_connections, d.max_connections_per_uid), (10, 2));
        assert_eq!(d.first_frame_timeout, Duration::from_millis(250));
        assert_eq!((d.frame_budget, d.max_waiting_images), (1 << 20, 1 << 30));
        let t = c.resolve(Some("any"), None, 7, 7).unwrap();
        assert_eq!(t.host_memory_quota, Some(2 << 30));
        assert_eq!((t.stream_quota, t.event_quota, t.module_quota), (5, 3, 4));
        assert_eq!(t.connection_quota, 9);
        assert_eq!(
            t.quota_scope,
            QuotaScope::Process,
            "inherited from [default]"
        );
        assert_eq!(t.account, "[[tenant]] #1 (uid = 7)");
        let other = c.resolve(Some("any"), None, 8, 8).unwrap();
        assert_eq!(
            other.account, "[default] uid 8",
            "names do not split a uid's account"
        );
        assert!(Config::parse("[daemon]\nframe_budget = 10\n").is_err());
        assert!(Config::parse("[daemon]\nmax_connections = 0\n").is_err());
        assert!(Config::parse("[default]\nquota_scope = \"user\"\n").is_err());
    }
}
