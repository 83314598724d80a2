//! Host callbacks (`cuLaunchHostFunc`) and host nodes of graphs: the function lives in the
//! client, so when the stream (or graph) reaches it the daemon asks the client to run it,
//! through the region's mailbox, and holds the stream until the client says it is done. A
//! client that goes away releases the wait.
//!
//! A host node (added to a graph, or captured from `cuLaunchHostFunc`) runs at every launch, so
//! the daemon gives the driver a [`HostWork`] that asks the client for the same callback id each
//! time; the client keeps that id's function and argument for good. Host works are kept until
//! the session ends, after its streams are synchronised: the driver may still run a node of an
//! executable graph the client already destroyed, for a launch in flight.

use super::Shared;
use crate::executor::HostWork;
use baton_ipc::region::Mailbox;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pointer to the session's mailbox that may travel to a driver callback thread.
#[derive(Clone, Copy)]
pub struct MailboxPtr(pub *const Mailbox);

// SAFETY: the mailbox is made of atomics, and the session keeps the region mapped until every
// stream (and so every callback) has finished, or the client is gone and `run` returns early.
unsafe impl Send for MailboxPtr {}
// SAFETY: as for `Send`: only atomics are reached through it.
unsafe impl Sync for MailboxPtr {}

/// One request to run client callback `id`.
pub struct HostCall {
    shared: Arc<Shared>,
    mailbox: MailboxPtr,
    id: u64,
}

/// One request in the mailbox at a time, per session.
pub type MailboxLock = Arc<Mutex<()>>;

impl HostCall {
    pub fn new(shared: Arc<Shared>, mailbox: MailboxPtr, id: u64) -> HostCall {
        HostCall {
            shared,
            mailbox,
            id,
        }
    }

    /// Posts the request and waits for the client's acknowledgement (or its departure).
    pub fn run(&self) {
        let lock = self.shared.mailbox_lock.clone();
        let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: see `MailboxPtr`; the session is still open.
        let mb = unsafe { &*self.mailbox.0 };
        mb.callback.store(self.id, Ordering::Relaxed);
        let seq = mb.request.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        baton_ipc::futex::wake_all(&mb.request);
        loop {
            let done = mb.done.load(Ordering::Acquire);
            if done == seq || self.shared.closed.load(Ordering::Acquire) {
                return;
            }
            baton_ipc::futex::wait(&mb.done, done, Some(Duration::from_millis(50)));
        }
    }
}

/// The session's host works, by client callback id.
#[derive(Default)]
pub struct HostWorks(Mutex<HashMap<u64, Arc<HostWork>>>);

impl HostWorks {
    /// The work that asks the client to run callback `id` (the same one for the same id).
    pub fn get(&self, shared: &Arc<Shared>, mailbox: MailboxPtr, id: u64) -> Arc<HostWork> {
        super::lock(&self.0)
            .entry(id)
            .or_insert_with(|| {
                let call = HostCall::new(shared.clone(), mailbox, id);
                HostWork::new(move || call.run())
            })
            .clone()
    }

    /// Forgets them all; only once no graph launch can still be running.
    pub fn clear(&self) {
        super::lock(&self.0).clear();
    }
}
