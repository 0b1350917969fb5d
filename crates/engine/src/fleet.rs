//! The engine as one daemon among several on a shared store: the lease
//! kept alive by a heartbeat (and what happens when it turns out to have
//! expired), the rescue of live jobs whose daemon went silent, the hints
//! other daemons send, and the fleet's live daemons as users see them. On
//! a single-process store (sled) nothing is rescued and no hint comes; its
//! lease expires only if the heartbeat stalls for a whole TTL, and then
//! everything is simply followed again. The pieces other modules need sit
//! lower: the lease and its freshness in `lib.rs`, following jobs again in
//! `submit.rs`, a job found taken over in `record.rs`, passing a webhook on
//! in `poller/`.

use crate::limits::lock;
use crate::sched::Sched;
use crate::{Engine, EngineError, Gen, Shared};
use std::sync::Arc;
use std::time::Duration;
use switchyard_api::DaemonView;
use switchyard_store::{Hint, Lease, StoreError};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The shortest lease accepted: renewals every third of it must fit in.
pub(crate) const MIN_LEASE_TTL: Duration = Duration::from_millis(600);

/// The most an expired lease's tasks are waited for before the jobs the
/// store gives back are followed again (each is one provider request with
/// its timeout, or a cancelled wait).
const OLD_TASKS_GRACE: Duration = Duration::from_secs(30);

impl Shared {
    /// A renewal came back with a higher epoch: the old lease had expired
    /// and whatever it held may be another daemon's now. At once (before
    /// the lease counts as fresh again): the new lease replaces the old,
    /// every job is forgotten and the old lease's tasks are cancelled, so
    /// none of them sends anything more. Returns the old lease's tasks to
    /// await before following what the store gives back ([`Self::regain`]).
    fn lose(&self, lease: Lease) -> (Arc<Gen>, Arc<Gen>) {
        let new = Gen::new(lease, &self.cancel);
        let old = std::mem::replace(&mut *lock(&self.gen), new.clone());
        tracing::warn!(
            owner = %self.owner.0,
            old_epoch = old.lease.epoch,
            epoch = new.lease.epoch,
            "this daemon's lease had expired (stopped or cut off from the store for longer than lease_ttl): following again only the jobs it still holds"
        );
        let _ = self.sched.send(Sched::Forget);
        old.cancel.cancel();
        old.tasks.close();
        (old, new)
    }

    /// After [`Self::lose`]: waits for the old lease's tasks (their writes
    /// are refused or land before what follows reads the store), then
    /// follows the jobs the store gives the new lease.
    async fn regain(self: Arc<Self>, old: Arc<Gen>, new: Arc<Gen>) {
        if tokio::time::timeout(OLD_TASKS_GRACE, old.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "requests started under the expired lease are still running; their answers cannot be recorded"
            );
        }
        match self.store.recover(&new.lease).await {
            Ok(jobs) => self.follow(&new, jobs),
            Err(e) => self.store_failed("finding the jobs this daemon still holds", &e),
        }
        for p in self.providers.values() {
            p.wake.notify_one();
        }
    }
}

/// Renews the lease every third of its TTL and, each time, takes over the
/// live jobs of daemons whose lease expired.
pub(crate) async fn keep_lease(s: Arc<Shared>) {
    let every = s.lease_ttl / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = s.cancel.cancelled() => return,
        }
        let asked = Instant::now();
        match s.store.renew(&s.owner, s.lease_ttl).await {
            Ok(lease) => {
                if lease.epoch != s.gen().lease.epoch {
                    let (old, new) = s.lose(lease);
                    *lock(&s.renewed) = asked;
                    // Not awaited here: the heartbeat must go on meanwhile.
                    tokio::spawn(s.clone().regain(old, new));
                    continue;
                }
                *lock(&s.renewed) = asked;
            }
            Err(e) => {
                tracing::warn!(owner = %s.owner.0, "renewing this daemon's lease: {e}");
                continue;
            }
        }
        let gen = s.gen();
        match s.store.rescue(&gen.lease).await {
            Ok(jobs) if jobs.is_empty() => {}
            Ok(jobs) => {
                tracing::info!(
                    jobs = jobs.len(),
                    "took over the live jobs of daemons whose lease expired"
                );
                s.follow(&gen, jobs);
            }
            // The next renewal says what this daemon still holds.
            Err(StoreError::LeaseLost { .. }) => {}
            Err(e) => tracing::warn!("rescuing the jobs of expired daemons: {e}"),
        }
    }
}

/// What other daemons on the store say: new jobs queued, a job due.
pub(crate) async fn follow_hints(s: Arc<Shared>, mut rx: broadcast::Receiver<Hint>) {
    loop {
        let hint = tokio::select! {
            h = rx.recv() => h,
            _ = s.cancel.cancelled() => return,
        };
        match hint {
            Ok(Hint::Queued { provider }) => {
                if let Some(p) = s.providers.get(&provider) {
                    p.wake.notify_one();
                }
            }
            Ok(Hint::Due { key }) => {
                let _ = s.sched.send(Sched::DueKey { key });
            }
            // Hints are only hints: the dispatchers look anyway.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for p in s.providers.values() {
                    p.wake.notify_one();
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Engine {
    /// The daemons whose lease is live on this store, this one marked.
    pub async fn daemons(&self) -> Result<Vec<DaemonView>, EngineError> {
        let s = &self.shared;
        let mut out: Vec<DaemonView> = s
            .store
            .daemons()
            .await?
            .into_iter()
            .map(|d| DaemonView {
                this: d.owner == s.owner,
                owner: d.owner.0,
                epoch: d.epoch,
                expires_in_ms: d.expires_in.as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.owner.cmp(&b.owner));
        Ok(out)
    }
}
