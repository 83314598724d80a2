//! `baton run`: find or start a daemon, then exec the program with the shim preloaded.

use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A file shipped beside the `baton` executable (or in `../lib/baton/`).
pub fn beside_exe(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the baton executable: {e}"))?;
    let dir = exe.parent().ok_or("baton executable has no directory")?;
    for cand in [dir.join(name), dir.join("../lib/baton").join(name)] {
        if cand.exists() {
            return Ok(cand.canonicalize().unwrap_or(cand));
        }
    }
    Err(format!(
        "{name} not found beside {} (install Baton's files together)",
        exe.display()
    ))
}

/// The shim: `$BATON_SHIM`, else `libcuda.so.1` beside `baton` (an installed tree), else
/// `libcuda.so` (the name cargo gives the build output; its SONAME is still `libcuda.so.1`).
pub fn shim_path() -> Result<PathBuf, String> {
    match std::env::var_os("BATON_SHIM").filter(|v| !v.is_empty()) {
        Some(p) => Ok(p.into()),
        None => beside_exe("libcuda.so.1").or_else(|e| beside_exe("libcuda.so").map_err(|_| e)),
    }
}

/// Starts `batond` in the background for this user and waits until its socket answers.
fn start_daemon(socket: &Path, config: Option<&Path>) -> Result<(), String> {
    let batond = beside_exe("batond")?;
    let log_path = socket.with_extension("log");
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).ok();
    }
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let mut cmd = Command::new(&batond);
    cmd.arg("--socket")
        .arg(socket)
        .arg("--socket-mode")
        .arg("600");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // The daemon must load the real driver, never the shim.
    cmd.env_remove("LD_PRELOAD");
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from our session so it
    // outlives this command and its terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", batond.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if UnixStream::connect(socket).is_ok() {
            note(format_args!(
                "baton: started a daemon (pid {}) at {}; its log is {}",
                child.id(),
                socket.display(),
                log_path.display()
            ));
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another `baton run` may have started a daemon at the same moment: use it.
            if UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let hint = if log.contains("no NVIDIA driver found") {
                "\n(to see Baton work on a simulated GPU without one: baton demo)"
            } else {
                ""
            };
            return Err(format!(
                "the daemon exited ({status}) before it was ready:\n{}{hint}",
                log.trim_end()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "the daemon did not become ready in 30 s; see {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A line on stderr, if it is still open (`eprintln!` panics when it is not).
fn note(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// `baton run`'s options.
pub struct RunOptions {
    pub tenant: Option<String>,
    pub socket: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub command: Vec<OsString>,
}

pub fn run(o: RunOptions) -> Result<(), String> {
    let socket = match o.socket {
        Some(s) => s,
        None => crate::socket::find().map_err(|e| e.to_string())?,
    };
    match crate::socket::connect(&socket) {
        Ok(_) => {
            if let Some(c) = &o.config {
                note(format_args!(
                    "baton: a daemon is already serving {}; --config {} applies only to a daemon baton starts",
                    socket.display(),
                    c.display()
                ));
            }
        }
        Err(crate::socket::Refusal::NoDaemon(_)) => {
            let config = match &o.config {
                Some(c) => Some(
                    c.canonicalize()
                        .map_err(|e| format!("policy file {}: {e}", c.display()))?,
                ),
                None => None,
            };
            start_daemon(&socket, config.as_deref())?
        }
        Err(e) => return Err(e.to_string()),
    }
    let shim = shim_path()?;
    let mut preload = OsString::from(&shim);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let (prog, args) = o.command.split_first().ok_or("no command given")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env(baton_ipc::control::SOCKET_ENV, &socket);
    if let Some(t) = o.tenant {
        cmd.env("BATON_TENANT", t);
    }
    let err = cmd.exec();
    Err(format!("running {}: {err}", Path::new(prog).display()))
}
