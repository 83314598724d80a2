//! `BATON_TRACE=1`: one line on stderr (or in `BATON_TRACE_FILE`) for every driver call, with
//! its arguments and result, for every `cuGetProcAddress` answer and export-table request, so
//! the next thing a program needs can be diagnosed by anyone.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Whether tracing is on (reads the environment once).
#[inline]
pub(crate) fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => init(),
    }
}

#[cold]
fn init() -> bool {
    let on = std::env::var_os("BATON_TRACE").is_some_and(|v| !v.is_empty() && v != "0");
    if on {
        if let Some(path) = std::env::var_os("BATON_TRACE_FILE") {
            *crate::client::lock(&FILE) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok();
        }
    }
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    on
}

/// Writes one trace line, prefixed with the process, the thread and the seconds since the first
/// line (so the gaps between calls show where a program's time goes).
pub(crate) fn line(args: Arguments<'_>) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let tid = std::thread::current().id();
    let text = format!(
        "baton-trace[{} {:?} {:.6}] {}\n",
        std::process::id(),
        tid,
        t,
        args
    );
    let mut f = crate::client::lock(&FILE);
    match f.as_mut() {
        Some(f) => {
            let _ = f.write_all(text.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}
