//! The daemon's log: `tracing` events to stderr that can never stop or stall the daemon.
//!
//! - Events go through a bounded queue to one writer thread (`tracing-appender`, lossy): a
//!   stderr nobody reads (a stopped pager, a full pipe) drops lines instead of blocking every
//!   thread that logs.
//! - The writer ignores write errors: a closed pipe (`batond 2>&1 | head`, a dead `tee`, a
//!   closed ssh session) or a closed descriptor drops lines. They are counted
//!   ([`dropped_lines`], the `baton_log_lines_dropped_total` metric), never fatal; the Rust
//!   runtime already ignores SIGPIPE, so the writes fail with `EPIPE` rather than killing us.
//! - Colour only on a terminal. When stderr is the journal's stream (`$JOURNAL_STREAM` names
//!   it), every line starts with its syslog priority (`<3>` error ... `<7>` debug), which
//!   journald turns into the entry's priority (`SyslogLevelPrefix=`, on by default), and carries
//!   no timestamp, which the journal adds.

use crate::LogFormat;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{Level, Metadata};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;

/// Lines stderr refused (closed pipe or descriptor).
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);
/// The queue's worker and its drop counter, once logging is set up.
static WORKER: Mutex<Option<WorkerGuard>> = Mutex::new(None);
static QUEUE_DROPS: Mutex<Option<ErrorCounter>> = Mutex::new(None);

/// Lines logged at most this far ahead of a slow stderr; beyond, new lines are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// Log lines lost since start: refused by stderr or dropped because it could not keep up.
pub fn dropped_lines() -> u64 {
    let queue = QUEUE_DROPS
        .lock()
        .map(|c| c.as_ref().map_or(0, |c| c.dropped_lines() as u64))
        .unwrap_or(0);
    queue + WRITE_FAILURES.load(Ordering::Relaxed)
}

/// Sets up logging to stderr (`BATON_LOG` filters, e.g. `BATON_LOG=debug`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journal = stderr_is_journal();
    // The writer thread must not take the signals the daemon's signal thread waits for: with
    // them unblocked there, SIGTERM or SIGHUP would end the process on the default action.
    let old = crate::handled_signals()
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .ok();
    let (queue, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("baton-log")
        .finish(Stderr);
    if let Some(old) = old {
        let _ = old.thread_set_mask();
    }
    if let Ok(mut c) = QUEUE_DROPS.lock() {
        *c = Some(queue.error_counter());
    }
    if let Ok(mut w) = WORKER.lock() {
        *w = Some(guard);
    }
    let writer = Prefixed { queue, journal };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(!journal && io::stderr().is_terminal())
        // Its report of a failed write goes to stderr with `eprintln!`, which panics when
        // stderr is closed: the failure this module exists to survive.
        .log_internal_errors(false);
    let _ = match (format, journal) {
        (LogFormat::Text, false) => b.try_init(),
        (LogFormat::Text, true) => b.without_time().try_init(),
        (LogFormat::Json, _) => b.json().try_init(),
    };
}

/// Writes out what is queued, waiting at most about a second (`tracing-appender`'s bound).
/// Lines logged afterwards are dropped.
pub fn flush() {
    let guard = WORKER.lock().ok().and_then(|mut w| w.take());
    drop(guard);
}

/// Whether fd 2 is the stream systemd connected to the journal (`$JOURNAL_STREAM` is its
/// `device:inode`; a child that inherited the variable but not the stream must not match).
fn stderr_is_journal() -> bool {
    is_journal(std::env::var_os("JOURNAL_STREAM").as_deref())
}

fn is_journal(stream: Option<&std::ffi::OsStr>) -> bool {
    let Some(v) = stream else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

/// The syslog priority of a level, as journald reads it at the start of a line.
fn priority(level: Level) -> &'static [u8] {
    match level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        _ => b"<7>",
    }
}

/// Hands each event to the queue, with its priority in front when writing to the journal.
struct Prefixed {
    queue: NonBlocking,
    journal: bool,
}

impl<'a> MakeWriter<'a> for Prefixed {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            queue: self.queue.clone(),
            prefix: None,
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            queue: self.queue.clone(),
            prefix: self.journal.then(|| priority(*meta.level())),
        }
    }
}

/// One event's writer. The formatter writes an event in one `write_all`, so the prefix goes in
/// front of the first write and the line reaches the queue as one message.
struct Line {
    queue: NonBlocking,
    prefix: Option<&'static [u8]>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.prefix.take() {
            Some(p) => self.queue.write_all(&[p, buf].concat())?,
            None => self.queue.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// stderr, on the writer thread: every failure is counted and swallowed.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if io::stderr().write_all(buf).is_err() {
            WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Prints a last message on stderr, if it is still there (`eprintln!` would panic without it).
pub fn last_words(msg: &str) {
    flush();
    let _ = writeln!(io::stderr(), "{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::ERROR), b"<3>");
        assert_eq!(priority(Level::WARN), b"<4>");
        assert_eq!(priority(Level::INFO), b"<6>");
        assert_eq!(priority(Level::DEBUG), b"<7>");
        assert_eq!(priority(Level::TRACE), b"<7>");
    }

    #[test]
    fn a_stream_that_is_not_stderr_is_not_the_journal() {
        assert!(!is_journal(None));
        assert!(!is_journal(Some("1:1".as_ref())));
        assert!(!is_journal(Some("garbage".as_ref())));
        let m = std::fs::metadata("/proc/self/fd/2").unwrap();
        let this = format!("{}:{}", m.dev(), m.ino());
        assert!(is_journal(Some(this.as_ref())));
    }
}
