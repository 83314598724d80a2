//! Tenant accounts: what all of a tenant's processes hold together, against its quotas.
//!
//! A session charges its account before it takes anything (device memory, pinned memory,
//! waiting module images, streams, events, modules, a connection), so concurrent processes of
//! one tenant can never overshoot a quota together. Which processes share an account is the
//! policy's decision (`TenantPolicy::account`, `quota_scope`): all processes one `[[tenant]]`
//! entry admits, or those of one uid for `[default]`, or each process alone.

use crate::config::{QuotaScope, TenantPolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What an account counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Device memory, bytes.
    Memory = 0,
    /// Pinned host memory and module images waiting to load, bytes.
    Host,
    Streams,
    Events,
    Modules,
    Connections,
}

const KINDS: usize = 6;

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory_quota",
            Kind::Host => "host_memory_quota",
            Kind::Streams => "stream_quota",
            Kind::Events => "event_quota",
            Kind::Modules => "module_quota",
            Kind::Connections => "connection_quota",
        }
    }
}

/// One tenant's use and limits.
#[derive(Debug)]
pub struct Account {
    limits: [u64; KINDS],
    used: [AtomicU64; KINDS],
}

impl Account {
    /// An account with `policy`'s quotas and nothing used.
    pub fn new(policy: &TenantPolicy) -> Account {
        let unlimited = |q: Option<u64>| q.unwrap_or(u64::MAX);
        Account {
            limits: [
                unlimited(policy.memory_quota),
                unlimited(policy.host_memory_quota),
                policy.stream_quota,
                policy.event_quota,
                policy.module_quota,
                policy.connection_quota,
            ],
            used: Default::default(),
        }
    }

    /// Takes `n` of `kind`; `false`, with nothing taken, if that would pass the quota.
    pub fn take(&self, kind: Kind, n: u64) -> bool {
        let limit = self.limits[kind as usize];
        self.used[kind as usize]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= limit)
            })
            .is_ok()
    }

    /// Takes `n` of `kind` whatever the quota says (for objects already made).
    pub fn force(&self, kind: Kind, n: u64) {
        let _ = self.used[kind as usize].fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            Some(u.saturating_add(n))
        });
    }

    /// Gives back `n` of `kind`; saturates at zero.
    pub fn give(&self, kind: Kind, n: u64) {
        let _ = self.used[kind as usize].fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            Some(u.saturating_sub(n))
        });
    }

    pub fn used(&self, kind: Kind) -> u64 {
        self.used[kind as usize].load(Ordering::Acquire)
    }

    /// The quota for `kind`; `None`: unlimited.
    pub fn limit(&self, kind: Kind) -> Option<u64> {
        Some(self.limits[kind as usize]).filter(|&l| l != u64::MAX)
    }
}

/// The daemon's accounts, by [`TenantPolicy::account`]; an account lives while a session or
/// connection of its tenant holds it.
#[derive(Default)]
pub struct Accounts {
    map: Mutex<HashMap<String, Weak<Account>>>,
}

impl Accounts {
    /// The account for a client with `policy`: shared with the tenant's other processes, or
    /// its own under `quota_scope = "process"`.
    pub fn get(&self, policy: &TenantPolicy) -> Arc<Account> {
        if policy.quota_scope == QuotaScope::Process {
            return Arc::new(Account::new(policy));
        }
        let mut map = super::lock(&self.map);
        if let Some(a) = map.get(&policy.account).and_then(Weak::upgrade) {
            return a;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let a = Arc::new(Account::new(policy));
        map.insert(policy.account.clone(), Arc::downgrade(&a));
        a
    }
}

/// `n` of `kind` taken from an account, given back when dropped.
pub struct Held {
    account: Arc<Account>,
    kind: Kind,
    n: u64,
}

impl Held {
    /// Takes `n` of `kind` from `account`; `None` past the quota.
    pub fn take(account: &Arc<Account>, kind: Kind, n: u64) -> Option<Held> {
        account.take(kind, n).then(|| Held {
            account: account.clone(),
            kind,
            n,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.account.give(self.kind, self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_of_one_tenant_share_its_quota_unless_scoped_per_process() {
        let policy = TenantPolicy {
            memory_quota: Some(100),
            stream_quota: 2,
            account: "[[tenant]] #1".into(),
            ..Default::default()
        };
        let accounts = Accounts::default();
        let (a, b) = (accounts.get(&policy), accounts.get(&policy));
        assert!(a.take(Kind::Memory, 60));
        assert!(
            !b.take(Kind::Memory, 60),
            "the second process sees the first's use"
        );
        assert!(b.take(Kind::Memory, 40));
        let s = Held::take(&a, Kind::Streams, 2).unwrap();
        assert!(Held::take(&b, Kind::Streams, 1).is_none());
        drop(s);
        assert!(Held::take(&b, Kind::Streams, 1).is_some());
        a.give(Kind::Memory, 1000);
        assert_eq!(b.used(Kind::Memory), 0, "refunds saturate");

        let own = TenantPolicy {
            quota_scope: QuotaScope::Process,
            ..policy
        };
        let (c, d) = (accounts.get(&own), accounts.get(&own));
        assert!(c.take(Kind::Memory, 100) && d.take(Kind::Memory, 100));
        assert_eq!(c.limit(Kind::Memory), Some(100));
        assert_eq!(c.limit(Kind::Host), None);
    }
}
