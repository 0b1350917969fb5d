//! What the engine is started with: the providers (adapter and limits) and
//! where results go. Built by the daemon from its config file; the engine
//! reads no file and no environment.

use std::path::PathBuf;
use std::sync::Arc;
use switchyard_core::limits::{Budget, PollConfig, RateLimit};
use switchyard_provider::Provider;

/// The limits of one provider that a reload may change while jobs run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderLimits {
    pub rate_limit: RateLimit,
    pub max_in_flight: u32,
    pub budget: Option<Budget>,
    pub poll: PollConfig,
    /// Create attempts (transient failures) before a job fails.
    pub max_attempts: u32,
}

/// One configured provider.
pub struct ProviderSetup {
    /// The provider table's name in the config (jobs name it).
    pub name: String,
    pub adapter: Arc<dyn Provider>,
    pub limits: ProviderLimits,
}

pub struct EngineConfig {
    pub providers: Vec<ProviderSetup>,
    /// Where finished videos are downloaded, if anywhere.
    pub output_dir: Option<PathBuf>,
    /// Downloads at once.
    pub parallel_downloads: usize,
    /// The name this daemon holds its lease under in the store; unique
    /// among the daemons sharing a store, and the same across its restarts
    /// (so a restart finds its own live jobs at once).
    pub owner: String,
    /// How long the lease holds without a renewal (renewed every third of
    /// it): after this, a silent daemon's live jobs are taken over by the
    /// others on the same store.
    pub lease_ttl: std::time::Duration,
}
