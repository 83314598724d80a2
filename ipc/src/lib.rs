//! Baton's transport between the shim (client side) and the daemon.
//!
//! - [`control`]: the Unix control socket (hello, shared-memory descriptors, module images, status).
//! - [`region`]: the layout of a session's shared region: ring, reply slots, completion words,
//!   staging chunks.
//! - [`ring`]: the bounded multi-producer, single-consumer command ring inside that region.
//! - [`protocol`]: the commands written into the ring.
//! - [`futex`]: process-shared futex wait/wake used for every sleep in the protocol.
//! - [`shm`]: memfd-backed shared mappings.

pub mod control;
pub mod futex;
pub mod protocol;
pub mod region;
pub mod ring;
pub mod shm;
