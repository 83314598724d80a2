//! `baton cdi`: writes a CDI (Container Device Interface) spec that gives a container Baton's
//! GPU, for runtimes that read CDI (podman, containerd, CRI-O):
//!
//! ```sh
//! baton cdi --output /etc/cdi/baton.json
//! podman run --device baton.dev/gpu=0 IMAGE CMD
//! ```
//!
//! The spec's edits, applied to any container that names one of its devices: the shim bind
//! mounted read-only at [`CONTAINER_SHIM`] and preloaded (`LD_PRELOAD`, as `baton run` does, so
//! it stands in for `libcuda.so.1` whatever the image holds), the daemon's socket directory
//! mounted read-only at [`CONTAINER_SOCKET_DIR`] with `BATON_SOCKET` naming the socket, and
//! `BATON_TENANT` when `--tenant` is given. The devices are `0`..`N-1` (one per GPU the daemon
//! serves) and `all`; the device only says which GPU the container was meant for
//! (`BATON_GPUS`): the daemon owns every GPU and no device node enters the container.
//!
//! `cdiVersion` is 0.5.0: the newest version the CDI code in podman 4.3 (Debian 12) and
//! containerd 1.7 accepts, and every field used here exists in it.
//!
//! `baton cdi --check FILE` reads a spec back and reports what is wrong with it.

use baton_ipc::control::{self, Request, Response};
use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The CDI version written.
pub const CDI_VERSION: &str = "0.5.0";
/// CDI versions [`check`] accepts.
const KNOWN_VERSIONS: [&str; 6] = ["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0"];
/// Where the shim appears in the container.
pub const CONTAINER_SHIM: &str = "/usr/local/lib/baton/libcuda.so.1";
/// Where the daemon's socket directory appears in the container.
pub const CONTAINER_SOCKET_DIR: &str = "/run/baton";
/// The daemon's socket in that directory.
const SOCKET_NAME: &str = "baton.sock";
/// More GPUs than this in one spec is a typo.
const MAX_GPUS: u32 = 64;

#[derive(clap::Args)]
pub struct Args {
    /// Number of GPUs to name (devices 0..N-1 and `all`) [default: as many as the daemon at
    /// --socket-dir reports]
    #[arg(long)]
    gpus: Option<u32>,
    /// The shim on the host.
    #[arg(long, default_value = "/usr/local/lib/baton/libcuda.so.1")]
    shim: PathBuf,
    /// The daemon's socket directory on the host (holding baton.sock).
    #[arg(long, default_value = "/run/baton")]
    socket_dir: PathBuf,
    /// CDI device kind (`vendor/class`).
    #[arg(long, default_value = "baton.dev/gpu")]
    kind: String,
    /// Set BATON_TENANT in every container using the spec (a name the daemon's policy matches;
    /// bind it to a uid there, see docs/kubernetes.md).
    #[arg(long)]
    tenant: Option<String>,
    /// Write the spec here (atomically) instead of standard output, e.g. /etc/cdi/baton.json.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Check an existing spec instead of writing one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["gpus", "tenant", "output"])]
    check: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), String> {
    if let Some(path) = &args.check {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let s = check(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "{}: CDI {} kind {}, devices {}",
            path.display(),
            s.version,
            s.kind,
            s.devices.join(", ")
        );
        return Ok(());
    }
    let spec = Spec::from_args(&args)?;
    let text = spec.render()?;
    // Never write what could not be read back.
    check(&text).map_err(|e| format!("internal error: the spec written does not check: {e}"))?;
    match &args.output {
        None => {
            println!("{text}");
            Ok(())
        }
        Some(path) => write_atomically(path, &text),
    }
}

/// What a spec is made from, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub kind: String,
    pub gpus: u32,
    pub shim: PathBuf,
    pub socket_dir: PathBuf,
    pub tenant: Option<String>,
}

impl Spec {
    fn from_args(a: &Args) -> Result<Spec, String> {
        let gpus = match a.gpus {
            Some(n) => n,
            None => count_gpus(&a.socket_dir.join(SOCKET_NAME))?,
        };
        let spec = Spec {
            kind: a.kind.clone(),
            gpus,
            shim: a.shim.clone(),
            socket_dir: a.socket_dir.clone(),
            tenant: a.tenant.clone(),
        };
        spec.check_host()?;
        Ok(spec)
    }

    /// Checks the values and that the host paths exist (a runtime would otherwise fail each
    /// container at start with a mount error).
    pub fn check_host(&self) -> Result<(), String> {
        check_kind(&self.kind)?;
        if self.gpus == 0 {
            return Err("--gpus 0: a spec names at least one GPU".into());
        }
        if self.gpus > MAX_GPUS {
            return Err(format!("--gpus {}: at most {MAX_GPUS}", self.gpus));
        }
        if let Some(t) = &self.tenant {
            if t.trim().is_empty() || t.contains(['\0', '\n']) {
                return Err(format!(
                    "--tenant {t:?}: give a name (no newlines), or leave it out"
                ));
            }
        }
        for (what, p) in [("--shim", &self.shim), ("--socket-dir", &self.socket_dir)] {
            if !p.is_absolute() {
                return Err(format!(
                    "{what} {}: must be an absolute path (the runtime resolves it)",
                    p.display()
                ));
            }
        }
        if !self.shim.is_file() {
            return Err(format!(
                "--shim {}: no such file (install the shim there, or name where it is)",
                self.shim.display()
            ));
        }
        if !self.socket_dir.is_dir() {
            return Err(format!(
                "--socket-dir {}: no such directory (start batond, which creates it, or name the directory of its --socket)",
                self.socket_dir.display()
            ));
        }
        Ok(())
    }

    /// The spec as JSON.
    pub fn render(&self) -> Result<String, String> {
        let mut env = vec![
            format!("LD_PRELOAD={CONTAINER_SHIM}"),
            format!(
                "{}={CONTAINER_SOCKET_DIR}/{SOCKET_NAME}",
                control::SOCKET_ENV
            ),
        ];
        if let Some(t) = &self.tenant {
            env.push(format!("BATON_TENANT={}", t.trim()));
        }
        let path = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: not UTF-8, which a CDI spec cannot hold", p.display()))
        };
        let device = |name: String, gpus: String| json!({ "name": name, "containerEdits": { "env": [format!("BATON_GPUS={gpus}")] } });
        let mut devices: Vec<Value> = (0..self.gpus)
            .map(|g| device(g.to_string(), g.to_string()))
            .collect();
        let all = (0..self.gpus)
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(",");
        devices.push(device("all".into(), all));
        let spec = json!({
            "cdiVersion": CDI_VERSION,
            "kind": self.kind,
            "devices": devices,
            "containerEdits": {
                "env": env,
                "mounts": [
                    {
                        "hostPath": path(&self.shim)?,
                        "containerPath": CONTAINER_SHIM,
                        "options": ["ro", "nosuid", "nodev", "bind"],
                    },
                    {
                        "hostPath": path(&self.socket_dir)?,
                        "containerPath": CONTAINER_SOCKET_DIR,
                        "options": ["ro", "nosuid", "nodev", "noexec", "bind"],
                    },
                ],
            },
        });
        serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())
    }
}

/// Asks the daemon how many GPUs it serves.
fn count_gpus(socket: &Path) -> Result<u32, String> {
    let no = |e: String| {
        format!(
            "no daemon at {} to count its GPUs ({e}); pass --gpus N",
            socket.display()
        )
    };
    let conn = UnixStream::connect(socket).map_err(|e| no(e.to_string()))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| no(e.to_string()))?;
    control::send(&conn, &Request::Status, &[]).map_err(|e| no(e.to_string()))?;
    match control::recv::<Response>(&conn)
        .map_err(|e| no(e.to_string()))?
        .0
    {
        Response::Status(r) if !r.devices.is_empty() => Ok(r.devices.len() as u32),
        Response::Status(_) => Err(no("it serves no GPU".into())),
        other => Err(no(format!("unexpected answer {other:?}"))),
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "{}: no such directory (runtimes read /etc/cdi and /var/run/cdi; create it first)",
            dir.display()
        ));
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: names no file", path.display()))?;
    // Runtimes watch the directory: they must never see half a file.
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, format!("{text}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("writing {}: {e}", path.display())
        })
}

/// `vendor/class`: vendor a domain-like name, class letters, digits, `-`, `_`, `.`.
fn check_kind(kind: &str) -> Result<(), String> {
    let bad = || format!("kind {kind:?}: expected `vendor/class`, for example `baton.dev/gpu`");
    let (vendor, class) = kind.split_once('/').ok_or_else(bad)?;
    let name_ok = |s: &str, extra: &[u8]| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    if name_ok(vendor, b"-.") && name_ok(class, b"-_.") {
        Ok(())
    } else {
        Err(bad())
    }
}

/// What [`check`] found in a spec.
#[derive(Debug, PartialEq)]
pub struct Checked {
    pub version: String,
    pub kind: String,
    pub devices: Vec<String>,
    /// The spec-wide `containerEdits` (environment and mounts).
    pub edits: Value,
}

/// Reads a CDI spec (JSON) and checks the fields runtimes require, naming the first problem.
pub fn check(text: &str) -> Result<Checked, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("malformed CDI spec (JSON): {e}"))?;
    let obj = v
        .as_object()
        .ok_or("malformed CDI spec: not a JSON object")?;
    let string =
        |o: &serde_json::Map<String, Value>, k: &str, at: &str| -> Result<String, String> {
            o.get(k)
                .ok_or_else(|| format!("{at}: `{k}` is missing"))?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{at}: `{k}` must be a string"))
        };
    let version = string(obj, "cdiVersion", "spec")?;
    if !KNOWN_VERSIONS.contains(&version.as_str()) {
        return Err(format!(
            "spec: cdiVersion {version:?} is not one of {}",
            KNOWN_VERSIONS.join(", ")
        ));
    }
    let kind = string(obj, "kind", "spec")?;
    check_kind(&kind).map_err(|e| format!("spec: {e}"))?;
    let devices = obj
        .get("devices")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("spec: `devices` must be a non-empty list")?;
    let mut names = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        let d = d
            .as_object()
            .ok_or_else(|| format!("{at}: not an object"))?;
        let name = string(d, "name", &at)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(format!(
                "{at}: device name {name:?} may hold only letters, digits, `-`, `_`, `.`, `:`"
            ));
        }
        if names.contains(&name) {
            return Err(format!("{at}: device name {name:?} appears twice"));
        }
        let edits = d
            .get("containerEdits")
            .ok_or_else(|| format!("{at} ({name}): `containerEdits` is missing"))?;
        check_edits(edits, &format!("{at} ({name})"))?;
        if !matches!(edits.as_object(), Some(e) if !e.is_empty()) {
            return Err(format!("{at} ({name}): `containerEdits` is empty"));
        }
        names.push(name);
    }
    let edits = obj.get("containerEdits").cloned().unwrap_or(Value::Null);
    if !edits.is_null() {
        check_edits(&edits, "containerEdits")?;
    }
    Ok(Checked {
        version,
        kind,
        devices: names,
        edits,
    })
}

fn check_edits(e: &Value, at: &str) -> Result<(), String> {
    let e = e
        .as_object()
        .ok_or_else(|| format!("{at}: `containerEdits` must be an object"))?;
    if let Some(env) = e.get("env") {
        let env = env
            .as_array()
            .ok_or_else(|| format!("{at}: `env` must be a list"))?;
        for v in env {
            match v.as_str() {
                Some(s) if s.split_once('=').is_some_and(|(k, _)| !k.is_empty()) => {}
                _ => return Err(format!("{at}: env entry {v} is not NAME=VALUE")),
            }
        }
    }
    if let Some(mounts) = e.get("mounts") {
        let mounts = mounts
            .as_array()
            .ok_or_else(|| format!("{at}: `mounts` must be a list"))?;
        for (i, m) in mounts.iter().enumerate() {
            for k in ["hostPath", "containerPath"] {
                match m.get(k).and_then(Value::as_str) {
                    Some(p) if p.starts_with('/') => {}
                    _ => return Err(format!("{at}: mounts[{i}].{k} must be an absolute path")),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("libcuda.so.1");
        std::fs::write(&shim, b"").unwrap();
        let socket_dir = dir.path().join("run");
        std::fs::create_dir(&socket_dir).unwrap();
        let spec = Spec {
            kind: "baton.dev/gpu".into(),
            gpus: 2,
            shim,
            socket_dir,
            tenant: Some("inference".into()),
        };
        (dir, spec)
    }

    #[test]
    fn spec_reads_back_with_the_promised_edits() {
        let (_dir, spec) = host();
        spec.check_host().unwrap();
        let c = check(&spec.render().unwrap()).unwrap();
        assert_eq!(c.version, "0.5.0");
        assert_eq!(c.kind, "baton.dev/gpu");
        assert_eq!(c.devices, ["0", "1", "all"]);
        let env: Vec<&str> = c.edits["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "LD_PRELOAD=/usr/local/lib/baton/libcuda.so.1",
                "BATON_SOCKET=/run/baton/baton.sock",
                "BATON_TENANT=inference"
            ]
        );
        let mounts = c.edits["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["hostPath"], spec.shim.to_str().unwrap());
        assert_eq!(mounts[0]["containerPath"], CONTAINER_SHIM);
        assert_eq!(mounts[1]["hostPath"], spec.socket_dir.to_str().unwrap());
        assert_eq!(mounts[1]["containerPath"], "/run/baton");
        for m in mounts {
            let opts: Vec<&str> = m["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(opts.contains(&"ro") && opts.contains(&"bind"), "{opts:?}");
        }
    }

    #[test]
    fn without_a_tenant_the_container_names_its_own() {
        let (_dir, mut spec) = host();
        spec.tenant = None;
        let text = spec.render().unwrap();
        assert!(!text.contains("BATON_TENANT"), "{text}");
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let (_dir, spec) = host();
        let e = |s: Spec| s.check_host().unwrap_err();
        assert_eq!(
            e(Spec {
                gpus: 0,
                ..spec.clone()
            }),
            "--gpus 0: a spec names at least one GPU"
        );
        let missing = spec.socket_dir.join("nope");
        let m = e(Spec {
            socket_dir: missing.clone(),
            ..spec.clone()
        });
        assert!(
            m.starts_with(&format!(
                "--socket-dir {}: no such directory",
                missing.display()
            )),
            "{m}"
        );
        assert!(e(Spec {
            shim: "/nonexistent/libcuda.so.1".into(),
            ..spec.clone()
        })
        .starts_with("--shim /nonexistent/libcuda.so.1: no such file"));
        assert!(e(Spec {
            kind: "gpu".into(),
            ..spec.clone()
        })
        .contains("expected `vendor/class`"));
        assert!(e(Spec {
            tenant: Some(" ".into()),
            ..spec.clone()
        })
        .starts_with("--tenant"));
        assert!(e(Spec {
            socket_dir: "run/baton".into(),
            ..spec
        })
        .contains("absolute path"));
    }

    #[test]
    fn malformed_specs_name_the_problem() {
        let ok = r#"{"cdiVersion":"0.5.0","kind":"baton.dev/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}"#;
        check(ok).unwrap();
        let cases = [
            ("{", "malformed CDI spec (JSON): EOF while parsing"),
            ("[]", "malformed CDI spec: not a JSON object"),
            (
                r#"{"kind":"baton.dev/gpu"}"#,
                "spec: `cdiVersion` is missing",
            ),
            (
                r#"{"cdiVersion":"9.9","kind":"baton.dev/gpu","devices":[]}"#,
                "spec: cdiVersion \"9.9\" is not one of",
            ),
            (
                r#"{"cdiVersion":"0.5.0","kind":"gpu","devices":[]}"#,
                "spec: kind \"gpu\": expected `vendor/class`",
            ),
            (
                r#"{"cdiVersion":"0.5.0","kind":"baton.dev/gpu","devices":[]}"#,
                "spec: `devices` must be a non-empty list",
            ),
            (
                r#"{"cdiVersion":"0.5.0","kind":"baton.dev/gpu","devices":[{"name":"0"}]}"#,
                "devices[0] (0): `containerEdits` is missing",
            ),
            (
                r#"{"cdiVersion":"0.5.0","kind":"baton.dev/gpu","devices":[{"name":"a b","containerEdits":{}}]}"#,
                "devices[0]: device name \"a b\" may hold only",
            ),
            (
                r#"{"cdiVersion":"0.5.0","kind":"baton.dev/gpu","devices":[{"name":"0","containerEdits":{"env":["NOEQUALS"]}}]}"#,
                "devices[0] (0): env entry \"NOEQUALS\" is not NAME=VALUE",
            ),
            (
                r#"{"cdiVersion":"0.5.0","kind":"baton.dev/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}],"containerEdits":{"mounts":[{"hostPath":"rel","containerPath":"/x"}]}}"#,
                "containerEdits: mounts[0].hostPath must be an absolute path",
            ),
        ];
        for (text, want) in cases {
            let e = check(text).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn output_is_written_whole_or_not_at_all() {
        let (dir, spec) = host();
        let out = dir.path().join("baton.json");
        write_atomically(&out, &spec.render().unwrap()).unwrap();
        check(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let e = write_atomically(&dir.path().join("no/such/dir/baton.json"), "{}").unwrap_err();
        assert!(e.contains("no such directory"), "{e}");
    }
}
