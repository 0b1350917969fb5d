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

mod anomaly;
mod bulk;
mod commands;
pub mod config;
mod dispatch;
mod error;
pub mod events;
mod health;
pub mod inbox;
mod limits;
mod live;
mod metrics;
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

use limits::ProviderRt;
use sched::Sched;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_store::{Lease, Owner, Store, StoreError};
use tokio::sync::mpsc;
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
    pub(crate) lease: Lease,
    pub(crate) health: health::StoreHealth,
    pub(crate) metrics: metrics::Metrics,
    /// Where writes and live progress are announced to open pages.
    pub(crate) events: events::Hub,
}

/// How long a lease holds without renewal (a fleet backend takes over a
/// silent daemon's jobs after this).
const LEASE_TTL: Duration = Duration::from_secs(30);

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
            .map(|p| (p.name.clone(), Arc::new(ProviderRt::new(p))))
            .collect();
        let downloads = match cfg.output_dir {
            Some(dir) => Some(Arc::new(
                results::Downloader::new(dir, cfg.parallel_downloads)
                    .map_err(|e| StartError::Downloads(e.to_string()))?,
            )),
            None => None,
        };
        let (store, events) = events::observe(store);
        let lease = store.renew(&Owner(cfg.owner), LEASE_TTL).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            providers,
            cancel,
            tracker: TaskTracker::new(),
            sched: tx,
            downloads,
            lease,
            health: health::StoreHealth::default(),
            metrics: metrics::Metrics::default(),
            events,
        });
        tokio::spawn(poller::scheduler(shared.clone(), rx));
        shared.recover().await?;
        for p in shared.providers.values() {
            tokio::spawn(dispatch::dispatch_loop(shared.clone(), p.clone()));
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
        s.store.release(&s.lease).await?;
        Ok(finished)
    }
}
