//! Baton's shim: loaded as `libcuda.so.1` into an unmodified CUDA program, it is that program's
//! CUDA driver. Queries are answered here from cached state; work goes to the daemon through
//! the shared-memory ring (see `docs/architecture.md`).
//!
//! - `generated/`: the 707 exported entry points and their default stubs.
//! - `api/`: the implemented entry points, by API area.
//! - `client/`: the connection to the daemon.
//! - `objects`: what the handles a program holds point to.

mod api;
mod client;
mod entry;
mod export_tables;
mod generated;
mod image;
mod log;
mod objects;
mod trace;

/// Marks this library as Baton's shim, so the daemon can refuse to load it as the real driver.
#[cfg_attr(not(test), no_mangle)]
#[allow(non_upper_case_globals)] // a C symbol name, looked up by the daemon
pub static baton_shim_marker: u8 = 1;
