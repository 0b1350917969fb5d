//! What changed, for pages that stay open (the dashboard's event stream):
//! every job a write touched and every provider setting a user changed,
//! gathered into one batch per [`COALESCE`] so that a busy daemon sends a
//! few events a second, not one per transition, and an idle one sends
//! nothing at all (no timer runs while nothing changes).
//!
//! Changes are seen where they are made: [`observe`] wraps the store the
//! engine writes through, so no write path has to remember to announce
//! itself; progress that is kept only in memory is announced by the poller
//! ([`Hub::touch`]). A store shared by a fleet also changes under other
//! daemons: there the stream compares the store's counts every
//! [`FLEET_LOOK`] and asks for a full look when they moved.

use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Change, Gate, Job, JobSpec, JobState, LedgerEntry, Transition};
use switchyard_store::{
    Claim, Claimed, DaemonInfo, Filter, Hint, IntakeReport, Lease, Owner, Permit, StateCount,
    Store, StoreError,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Changes arriving within this window after the first one go out together.
pub const COALESCE: Duration = Duration::from_millis(250);

/// More changed jobs than this in one batch: the page looks again at what
/// it shows instead of being told each key.
pub const MAX_KEYS: usize = 256;

/// How often a stream on a fleet's store compares counts.
const FLEET_LOOK: Duration = Duration::from_secs(2);

/// Room for this many changes between two reads of a stream; a slower
/// reader is told to look again (nothing is lost, only summarized).
const BACKLOG: usize = 8192;

#[derive(Debug, Clone)]
enum Touched {
    Job(Arc<str>),
    Providers,
}

/// Where changes are announced. Announcing costs a channel send and
/// nothing when no page listens.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Touched>,
}

impl Hub {
    fn new() -> Hub {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// A job changed in a way the store does not see (live progress).
    pub(crate) fn touch(&self, key: &str) {
        self.send(Touched::Job(Arc::from(key)));
    }

    fn send(&self, t: Touched) {
        // An error only says that no page is listening right now.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(t);
        }
    }
}

/// One batch of changes, as a page applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeBatch {
    /// These jobs changed (their state, progress or anything shown), and
    /// with them their providers' figures; no keys: only a provider's
    /// settings changed (a pause, a hold).
    Jobs { keys: Vec<String> },
    /// Too much changed to list (or another daemon changed it): look again
    /// at everything shown.
    Resync,
}

/// A page's subscription: [`Changes::next`] waits for the next batch.
pub struct Changes {
    rx: broadcast::Receiver<Touched>,
    store: Arc<dyn Store>,
    fleet: bool,
    last_counts: Option<Vec<StateCount>>,
    stop: CancellationToken,
}

impl Changes {
    pub(crate) fn new(hub: &Hub, store: Arc<dyn Store>, stop: CancellationToken) -> Changes {
        Changes {
            rx: hub.tx.subscribe(),
            fleet: store.hints().is_some(),
            store,
            last_counts: None,
            stop,
        }
    }

    /// The next batch: waits (without a timer, unless the store is a
    /// fleet's) for a first change, then [`COALESCE`] for the ones that
    /// follow it. `None` once the daemon stops.
    pub async fn next(&mut self) -> Option<ChangeBatch> {
        let first = loop {
            tokio::select! {
                r = self.rx.recv() => match r {
                    // The engine is gone: so is every change to come.
                    Err(broadcast::error::RecvError::Closed) => return None,
                    r => break r,
                },
                _ = self.stop.cancelled() => return None,
                moved = fleet_moved(self.fleet, &*self.store, &mut self.last_counts) => {
                    if moved {
                        return Some(ChangeBatch::Resync);
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(COALESCE) => {}
            _ = self.stop.cancelled() => return None,
        }
        let mut keys = BTreeSet::new();
        let mut resync = false;
        let mut add = |r: Result<Touched, broadcast::error::RecvError>| match r {
            Ok(Touched::Job(k)) => {
                if keys.len() < MAX_KEYS {
                    keys.insert(k.to_string());
                } else {
                    resync = true;
                }
            }
            Ok(Touched::Providers) => {}
            Err(_) => resync = true,
        };
        add(first);
        loop {
            match self.rx.try_recv() {
                Ok(t) => add(Ok(t)),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    add(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(broadcast::error::TryRecvError::Closed) => break,
            }
        }
        if resync {
            return Some(ChangeBatch::Resync);
        }
        Some(ChangeBatch::Jobs {
            keys: keys.into_iter().collect(),
        })
    }
}

/// On a fleet's store: waits [`FLEET_LOOK`] and says whether the counts
/// moved since the last look. Elsewhere: never returns.
async fn fleet_moved(fleet: bool, store: &dyn Store, last: &mut Option<Vec<StateCount>>) -> bool {
    if !fleet {
        return std::future::pending().await;
    }
    tokio::time::sleep(FLEET_LOOK).await;
    let Ok(now) = store.counts().await else {
        return false;
    };
    let moved = last.as_ref().is_some_and(|l| *l != now);
    *last = Some(now);
    moved
}

/// Wraps `store` so that every write it accepts is announced on the
/// returned hub.
pub(crate) fn observe(store: Arc<dyn Store>) -> (Arc<dyn Store>, Hub) {
    let hub = Hub::new();
    let observed = Observed {
        inner: store,
        hub: hub.clone(),
    };
    (Arc::new(observed), hub)
}

/// The engine's store, announcing what it wrote. Reads pass through.
struct Observed {
    inner: Arc<dyn Store>,
    hub: Hub,
}

impl Observed {
    fn job<T>(&self, key: &str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_ok() {
            self.hub.touch(key);
        }
        r
    }
}

#[async_trait]
impl Store for Observed {
    async fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
        let r = self.inner.intake(specs).await?;
        for k in &r.accepted {
            self.hub.touch(k);
        }
        Ok(r)
    }
    async fn get(&self, key: &str) -> Result<Option<Job>, StoreError> {
        self.inner.get(key).await
    }
    async fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError> {
        self.inner.history(key).await
    }
    async fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
        self.inner.list(filter).await
    }
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        self.inner.counts().await
    }
    async fn claim(&self, claim: Claim<'_>) -> Result<Claimed, StoreError> {
        let r = self.inner.claim(claim).await?;
        for j in &r.jobs {
            self.hub.touch(&j.key);
        }
        Ok(r)
    }
    async fn apply(&self, key: &str, expect: JobState, change: Change) -> Result<Job, StoreError> {
        let r = self.inner.apply(key, expect, change).await;
        self.job(key, r)
    }
    async fn apply_owned(
        &self,
        lease: &Lease,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, StoreError> {
        let r = self.inner.apply_owned(lease, key, expect, change).await;
        self.job(key, r)
    }
    async fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError> {
        self.inner.ledger(provider, period).await
    }
    async fn renew(&self, owner: &Owner, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner.renew(owner, ttl).await
    }
    async fn daemons(&self) -> Result<Vec<DaemonInfo>, StoreError> {
        self.inner.daemons().await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
    async fn recover(&self, lease: &Lease) -> Result<Vec<Job>, StoreError> {
        self.inner.recover(lease).await
    }
    async fn rescue(&self, lease: &Lease) -> Result<Vec<Job>, StoreError> {
        self.inner.rescue(lease).await
    }
    async fn permit(&self, provider: &str, gate: Gate) -> Result<Permit, StoreError> {
        self.inner.permit(provider, gate).await
    }
    async fn hold(&self, provider: &str, wait: Duration) -> Result<(), StoreError> {
        self.inner.hold(provider, wait).await?;
        self.hub.send(Touched::Providers);
        Ok(())
    }
    async fn held(&self, provider: &str) -> Result<Option<Duration>, StoreError> {
        self.inner.held(provider).await
    }
    async fn set_paused(&self, provider: &str, paused: bool) -> Result<(), StoreError> {
        self.inner.set_paused(provider, paused).await?;
        self.hub.send(Touched::Providers);
        Ok(())
    }
    async fn paused(&self) -> Result<Vec<String>, StoreError> {
        self.inner.paused().await
    }
    async fn hint(&self, hint: Hint) -> Result<(), StoreError> {
        self.inner.hint(hint).await
    }
    fn hints(&self) -> Option<broadcast::Receiver<Hint>> {
        self.inner.hints()
    }
    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }
    async fn load_stats(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.load_stats().await
    }
    async fn save_stats(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner.save_stats(key, bytes).await
    }
}

impl crate::Engine {
    /// A subscription to what changes from now on (see [`Changes`]).
    pub fn changes(&self) -> Changes {
        let s = &self.shared;
        Changes::new(&s.events, s.store.clone(), s.cancel.clone())
    }
}
