//! Which daemon socket to use, and why a connection to it failed, in words a user can act on.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a daemon socket could not be used.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing serves there (no file, or a socket nobody listens on).
    NoDaemon(String),
    /// A daemon is there, but this user may not connect to it.
    Denied(String),
    /// The path is not a socket at all.
    NotASocket(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoDaemon(m) | Refusal::Denied(m) | Refusal::NotASocket(m) => f.write_str(m),
        }
    }
}

/// Connects to the daemon at `path`, naming the reason when it cannot.
pub fn connect(path: &Path) -> Result<UnixStream, Refusal> {
    match std::fs::metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(Refusal::NotASocket(format!(
                "{} is not a socket (it is a {}): remove it or use another path",
                path.display(),
                if m.is_dir() { "directory" } else { "file" }
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Refusal::Denied(denied(path)));
        }
        _ => {}
    }
    UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => Refusal::Denied(denied(path)),
        _ => Refusal::NoDaemon(format!("no daemon at {} ({e})", path.display())),
    })
}

/// "you are not allowed ...", with what would let the user in.
fn denied(path: &Path) -> String {
    let what = format!(
        "you are not allowed to use the Baton daemon at {}",
        path.display()
    );
    let Ok(m) = std::fs::metadata(path) else {
        return format!("{what}: a directory on its path is closed to you; ask its administrator");
    };
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
        .ok()
        .flatten()
        .map_or_else(|| m.gid().to_string(), |g| g.name);
    if m.mode() & 0o020 != 0 {
        format!("{what}: ask for membership of group {group}")
    } else {
        format!(
            "{what}: its socket (mode {:o}) admits only its owner; ask its administrator",
            m.mode() & 0o777
        )
    }
}

/// The daemon socket a client should use: `$BATON_SOCKET`, else the system daemon's socket if
/// one is there, else this user's own socket. A system daemon that refuses this user is an
/// error, never a reason to use a private daemon its policy and quotas would not cover.
pub fn find() -> Result<PathBuf, Refusal> {
    if let Some(p) = std::env::var_os(baton_ipc::control::SOCKET_ENV).filter(|v| !v.is_empty()) {
        return Ok(p.into());
    }
    choose(Path::new(baton_ipc::control::DEFAULT_SOCKET), user_socket())
}

/// [`find`] without the environment: `system` if it serves or refuses, else `user`.
pub fn choose(system: &Path, user: PathBuf) -> Result<PathBuf, Refusal> {
    match connect(system) {
        Ok(_) => Ok(system.to_path_buf()),
        Err(Refusal::NoDaemon(_)) => Ok(user),
        Err(e) => Err(e),
    }
}

/// `$XDG_RUNTIME_DIR/baton/baton.sock`, else `/tmp/baton-UID/baton.sock`.
fn user_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Path::new(&d).join("baton").join("baton.sock"),
        None => PathBuf::from(format!("/tmp/baton-{}", nix::unistd::getuid())).join("baton.sock"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("baton-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_serving_system_socket_is_chosen_and_a_missing_one_falls_back() {
        let d = dir("choose");
        let user = d.join("user.sock");
        assert_eq!(choose(&d.join("none.sock"), user.clone()).unwrap(), user);
        let sys = d.join("sys.sock");
        let _l = UnixListener::bind(&sys).unwrap();
        assert_eq!(choose(&sys, user).unwrap(), sys);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_regular_file_is_not_a_socket() {
        let d = dir("file");
        let f = d.join("baton.sock");
        std::fs::write(&f, "x").unwrap();
        let e = choose(&f, d.join("user.sock")).unwrap_err();
        assert!(matches!(e, Refusal::NotASocket(_)), "{e}");
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert!(f.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Mode 000 refuses even its owner, except root (which the end-to-end test covers by
    /// running the client as another uid).
    #[test]
    fn a_refusing_system_socket_is_an_error_not_a_fallback() {
        if nix::unistd::geteuid().is_root() {
            eprintln!("skipped: root ignores socket permissions (tests/tests/operations.rs runs this as another uid)");
            return;
        }
        let d = dir("denied");
        let sys = d.join("sys.sock");
        let _l = UnixListener::bind(&sys).unwrap();
        std::fs::set_permissions(&sys, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = choose(&sys, d.join("user.sock")).unwrap_err();
        assert!(matches!(e, Refusal::Denied(_)), "{e}");
        assert!(
            e.to_string()
                .contains("you are not allowed to use the Baton daemon at"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
