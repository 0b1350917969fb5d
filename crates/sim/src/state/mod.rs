//! Shared simulator state. A job is not a running thing: it is a start time,
//! a duration and a scripted outcome, and every read computes where it is now.
//! That keeps 100,000 jobs cheap (no task or timer per job) and makes a job's
//! status a pure function of the clock, so a test can predict it.
//!
//! Lock order, everywhere: a provider's `inner` before any job shard. Status
//! reads take only one shard lock, which keeps the hot path short.

mod job;
mod provider;
mod stats;

pub use job::{raw_status, shown_status, Job, Outcome, Phase, View};
pub use provider::{release, CreateFail, Created, Inner, NewJob, ProviderRt, WebhookTarget};
pub use stats::{Counters, FaultCounts, ProviderStats, Quota, SimJob, Stats};

use crate::scenario::Scenario;
use crate::util::{self, Clock};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use switchyard_core::ProviderKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Locks a mutex, recovering from poisoning: the simulator's state stays
/// usable (a panicking handler only loses its own request).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn kind_index(kind: ProviderKind) -> usize {
    match kind {
        ProviderKind::Ugclab => 0,
        ProviderKind::Ugen => 1,
        ProviderKind::Ulazai => 2,
        ProviderKind::Viggle => 3,
    }
}

/// A webhook that may be due when an attempt ends.
#[derive(Debug, Clone)]
pub struct WebhookDue {
    pub kind: ProviderKind,
    pub job_id: Arc<str>,
    pub attempt: u32,
    pub due_ms: u64,
}

pub struct SimState {
    pub clock: Clock,
    pub seed: u64,
    pub speedup: f64,
    /// `http://host:port`, for output URLs that the simulator itself serves.
    pub public_base: String,
    pub providers: [ProviderRt; 4],
    pub seq: AtomicU64,
    pub request_ids: AtomicU64,
    pub webhooks: mpsc::UnboundedSender<WebhookDue>,
    pub shutdown: CancellationToken,
}

impl SimState {
    pub fn new(
        scenario: &Scenario,
        public_base: String,
        webhooks: mpsc::UnboundedSender<WebhookDue>,
        shutdown: CancellationToken,
    ) -> SimState {
        let p = |k| ProviderRt::new(k, scenario.provider(k));
        SimState {
            clock: Clock::new(),
            seed: scenario.seed,
            speedup: scenario.speedup,
            public_base,
            providers: [
                p(ProviderKind::Ugclab),
                p(ProviderKind::Ugen),
                p(ProviderKind::Ulazai),
                p(ProviderKind::Viggle),
            ],
            seq: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
            webhooks,
            shutdown,
        }
    }

    pub fn provider(&self, kind: ProviderKind) -> &ProviderRt {
        &self.providers[kind_index(kind)]
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Queues a webhook check at `due_ms` when the provider has somewhere to
    /// send it (U-Gen: the job's own `webhook_url` counts too). Takes the
    /// already-locked `inner`, as every caller holds it.
    pub fn schedule_webhook(&self, inner: &Inner, job: &Job) {
        let wanted = match job.kind {
            ProviderKind::Ugen => {
                inner.webhook.is_some()
                    || job.params.get("webhook_url").is_some_and(Value::is_string)
            }
            ProviderKind::Ugclab => inner.webhook.is_some(),
            _ => false,
        };
        if wanted {
            let _ = self.webhooks.send(WebhookDue {
                kind: job.kind,
                job_id: job.id.clone(),
                attempt: job.attempt,
                due_ms: job.end_ms(),
            });
        }
    }

    /// `req_` + 12 hex digits, unique per request.
    pub fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("req_{:012x}", util::mix64(self.seed ^ n) & 0xffff_ffff_ffff)
    }

    /// A URL the simulator serves itself, so downloads work offline.
    pub fn media_url(&self, kind: ProviderKind, file: &str) -> String {
        format!("{}/_sim/media/{}/{}", self.public_base, kind.as_str(), file)
    }
}
