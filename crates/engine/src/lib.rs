//! The engine: everything Switchyard does with jobs, over any [`Store`].
//! One dispatcher per provider (so a provider held by its rate, budget or a
//! 402 never holds up the others), one poll scheduler with a timer queue for
//! every live job, the submit and poll tasks they start, recovery after a
//! restart, the user's commands and the views every surface shows.
//!
//! **API boundary.** [`Engine`] is a cheap handle to private shared state;
//! commands return [`EngineError`], views are [`switchyard_api`] types. The
//! engine knows no HTTP server and no particular store.
//!
//! **Architecture invariant.** Every state change goes through the store's
//! checked transitions; a transition that precedes a request to a provider
//! is durable before the request is sent, so a crash can never lose track
//! of a sent create call. A failed durable write is never dropped: it is
//! logged, the job is left where a restart reconciles it, and
//! [`Engine::health`] reports the store as failing until a sync succeeds.

mod actions;
mod anomaly;
mod bulk;
mod commands;
pub mod config;
mod dispatch;
mod error;
pub mod events;
mod fallback;
mod fleet;
mod health;
pub mod inbox;
mod limits;
mod live;
mod metrics;
mod operator;
pub mod paging;
mod poller;
mod record;
mod results;
mod sched;
mod submit;
mod views;

pub use commands::WebhookOutcome;
pub use config::{EngineConfig, ProviderLimits, ProviderSetup};
pub use error::EngineError;
pub use health::Health;
pub use live::Output;
pub use metrics::{HistogramValues, MetricsSnapshot, ProviderCounters};

use limits::{lock, ProviderRt};
use sched::Sched;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_store::{Lease, Owner, Store, StoreError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running engine. Clones share one engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) providers: BTreeMap<String, Arc<ProviderRt>>,
    /// Stops dispatch and polling (SIGTERM).
    pub(crate) cancel: CancellationToken,
    /// Submit, poll and download tasks, awaited (bounded) on shutdown.
    pub(crate) tracker: TaskTracker,
    pub(crate) sched: mpsc::UnboundedSender<Sched>,
    /// Present when results are downloaded.
    pub(crate) downloads: Option<Arc<results::Downloader>>,
    /// The lease this engine works under now, with the tasks started under
    /// it (see [`Gen`]).
    pub(crate) gen: Mutex<Arc<Gen>>,
    pub(crate) owner: Owner,
    pub(crate) lease_ttl: Duration,
    /// When the last renewal that succeeded was asked for: the lease holds
    /// at least `lease_ttl` from then.
    pub(crate) renewed: Mutex<Instant>,
    /// Other daemons may share the store (it sends hints): a webhook for a
    /// job followed elsewhere is passed on.
    pub(crate) fleet: bool,
    pub(crate) health: health::StoreHealth,
    pub(crate) metrics: metrics::Metrics,
    /// Where writes and live progress are announced to open pages.
    pub(crate) events: events::Hub,
    pub(crate) operator: operator::Operator,
}

/// One lease and what was started under it. When a renewal finds the lease
/// had expired (the process was stopped, or cut off from the store, for
/// longer than its TTL), the jobs it held may be another daemon's: every
/// task started under the old lease is cancelled and awaited before the
/// jobs the store gives back are followed again, so that no two tasks of
/// this daemon work on one job and no request goes out for a job this
/// daemon may no longer hold.
pub(crate) struct Gen {
    pub(crate) lease: Lease,
    /// Child of the engine's token: cancelled at shutdown or when the lease
    /// is found lost.
    pub(crate) cancel: CancellationToken,
    /// Submit, poll and reconcile tasks started under this lease.
    pub(crate) tasks: TaskTracker,
}

impl Gen {
    pub(crate) fn new(lease: Lease, parent: &CancellationToken) -> Arc<Gen> {
        Arc::new(Gen {
            lease,
            cancel: parent.child_token(),
            tasks: TaskTracker::new(),
        })
    }
}

impl Shared {
    /// The lease (and the tasks under it) the engine works under now.
    pub(crate) fn gen(&self) -> Arc<Gen> {
        lock(&self.gen).clone()
    }

    /// Whether the lease surely still holds: renewed within two thirds of
    /// its TTL, measured from when the renewal was asked for. A process
    /// that was stopped (SIGSTOP, a VM pause) wakes with a stale lease and
    /// must not act on the outside world until the heartbeat has told it
    /// what it still holds.
    pub(crate) fn lease_fresh(&self) -> bool {
        lock(&self.renewed).elapsed() < self.lease_ttl * 2 / 3
    }

    /// Waits until the lease is fresh; false if `gen` ended first (its
    /// lease was lost, or shutdown).
    pub(crate) async fn wait_fresh(&self, gen: &Gen) -> bool {
        loop {
            if gen.cancel.is_cancelled() {
                return false;
            }
            if self.lease_fresh() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = gen.cancel.cancelled() => return false,
            }
        }
    }

    /// Starts a job's task under `gen`: awaited at shutdown (the engine's
    /// tracker) and when `gen`'s lease is found lost.
    pub(crate) fn spawn_in<F>(&self, gen: &Gen, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(gen.tasks.track_future(fut));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("preparing output_dir: {0}")]
    Downloads(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Builds the providers, takes the lease, recovers what a stop left
    /// live and starts every task. Stops when `cancel` is cancelled.
    pub async fn start(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
    ) -> Result<Engine, StartError> {
        let providers = cfg
            .providers
            .into_iter()
            .map(|p| (p.name.clone(), Arc::new(ProviderRt::new(p, store.clone()))))
            .collect();
        let downloads = match cfg.output_dir {
            Some(dir) => Some(Arc::new(
                results::Downloader::new(dir, cfg.parallel_downloads)
                    .map_err(|e| StartError::Downloads(e.to_string()))?,
            )),
            None => None,
        };
        let (store, events) = events::observe(store);
        let owner = Owner(cfg.owner);
        let lease_ttl = cfg.lease_ttl.max(fleet::MIN_LEASE_TTL);
        let asked = Instant::now();
        let lease = store.renew(&owner, lease_ttl).await?;
        let hints = store.hints();
        let (tx, rx) = mpsc::unbounded_channel();
        let gen = Gen::new(lease, &cancel);
        let shared = Arc::new(Shared {
            store,
            providers,
            cancel,
            tracker: TaskTracker::new(),
            sched: tx,
            downloads,
            gen: Mutex::new(gen.clone()),
            owner,
            lease_ttl,
            renewed: Mutex::new(asked),
            fleet: hints.is_some(),
            health: health::StoreHealth::default(),
            metrics: metrics::Metrics::default(),
            events,
            operator: operator::Operator::default(),
        });
        // A user's pause holds from the first dispatch on.
        shared.load_pauses().await?;
        tokio::spawn(operator::watch_pauses(shared.clone()));
        tokio::spawn(poller::scheduler(shared.clone(), rx));
        tokio::spawn(fallback::fallback_loop(shared.clone()));
        shared.recover(&gen).await?;
        for p in shared.providers.values() {
            tokio::spawn(dispatch::dispatch_loop(shared.clone(), p.clone()));
        }
        tokio::spawn(fleet::keep_lease(shared.clone()));
        if let Some(rx) = hints {
            tokio::spawn(fleet::follow_hints(shared.clone(), rx));
        }
        Ok(Engine { shared })
    }

    /// Names of the configured providers.
    pub fn provider_names(&self) -> Vec<String> {
        self.shared.providers.keys().cloned().collect()
    }

    pub fn is_stopping(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// After the cancel token fired: waits (at most `grace`) for in-flight
    /// requests, then makes every accepted write durable and gives the
    /// lease up. False if requests were still running at the bound (their
    /// jobs are reconciled at the next start).
    pub async fn drain(&self, grace: Duration) -> Result<bool, StoreError> {
        let s = &self.shared;
        s.tracker.close();
        let finished = tokio::time::timeout(grace, s.tracker.wait()).await.is_ok();
        s.store.sync().await?;
        s.store.release(&s.gen().lease).await?;
        Ok(finished)
    }
}
