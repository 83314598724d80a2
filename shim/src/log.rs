//! Minimal stderr logging: the shim lives inside someone else's process and starts no logger.

use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// Prints `baton: NAME WHAT` once per name for the life of the process.
pub(crate) fn once(name: &'static str, what: &str) {
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get_or_insert_with(HashSet::new).insert(name) {
        eprintln!("baton: {name} {what}");
    }
}
