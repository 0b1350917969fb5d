//! Leases of a sled store. sled locks its directory to one process, which
//! therefore holds every job whatever it calls itself: nothing is fenced
//! and nothing is rescued. The leases are still kept as a fleet store
//! keeps them (in memory: no other process could read them), so that
//! `renew` and `daemons` mean the same on every backend: a live lease
//! keeps its epoch, an expired or released one comes back with the next.

use crate::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use switchyard_store::{DaemonInfo, Lease, Owner};

#[derive(Default)]
pub(crate) struct Leases {
    /// Per owner: its epoch and when it expires.
    by_owner: Mutex<HashMap<Owner, (u64, Instant)>>,
}

impl Leases {
    pub(crate) fn renew(&self, owner: &Owner, ttl: Duration) -> Lease {
        let now = Instant::now();
        let mut all = lock(&self.by_owner);
        let epoch = match all.get(owner) {
            Some(&(epoch, until)) if until > now => epoch,
            Some(&(epoch, _)) => epoch + 1,
            None => 1,
        };
        all.insert(owner.clone(), (epoch, now + ttl));
        Lease {
            owner: owner.clone(),
            epoch,
            ttl,
        }
    }

    pub(crate) fn live(&self) -> Vec<DaemonInfo> {
        let now = Instant::now();
        let mut out: Vec<DaemonInfo> = lock(&self.by_owner)
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(owner, &(epoch, until))| DaemonInfo {
                owner: owner.clone(),
                epoch,
                expires_in: until - now,
            })
            .collect();
        out.sort_by(|a, b| a.owner.0.cmp(&b.owner.0));
        out
    }

    pub(crate) fn release(&self, lease: &Lease) {
        let mut all = lock(&self.by_owner);
        if let Some(entry) = all.get_mut(&lease.owner) {
            if entry.0 == lease.epoch {
                entry.1 = Instant::now();
            }
        }
    }
}
