//! What crosses the boundary to users, in one place: the control API's
//! request and answer bodies (the server, the CLI and the dashboard all use
//! these types, so their shapes cannot drift apart) and the batch file
//! format.
//!
//! **API boundary.** Every field here is part of the user-facing contract
//! (docs/CONTRACT.md): add fields, never rename or remove one.

pub mod batch;
pub mod bulk;
pub mod operator;

use serde::{Deserialize, Serialize};
use switchyard_core::detail::ProviderDetail;
use switchyard_core::limits::RateLimit;
use switchyard_core::{Job, JobSpec, Transition};

pub use batch::Problem;
pub use bulk::{
    BatchUpload, BulkAction, BulkAnswer, BulkFailure, BulkFilter, BulkPreview, BulkRequest,
};
pub use operator::{AdoptBody, PlanAnswer, PlanClass, PlanProvider};

/// A batch as sent over HTTP: the jobs of one file.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchBody {
    pub jobs: Vec<JobSpec>,
}

/// The answer to an accepted batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub accepted: usize,
    pub already_known: usize,
    pub accepted_keys: Vec<String>,
    pub known_keys: Vec<String>,
}

/// One job with its history (`GET /v1/jobs/{key}`, `switchyard show`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub history: Vec<Transition>,
    /// What the provider shows of the job beyond its status, read when
    /// asked (`?detail=true`, `show KEY --detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ProviderDetail>,
}

/// A retry at the provider (`POST /v1/jobs/{key}/retry` with a body):
/// `from_stage` re-runs the provider's job from that pipeline stage.
/// Without it (or with an empty body) the job is queued again here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    #[serde(default)]
    pub from_stage: Option<String>,
}

/// Per-provider view (`GET /v1/providers`, `switchyard providers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderView {
    pub name: String,
    pub kind: String,
    pub rate_limit: RateLimit,
    pub max_in_flight: u32,
    pub in_flight: usize,
    pub budget_credits: Option<u64>,
    pub budget_period: Option<String>,
    pub budget_used: u64,
    pub budget_reserved: u64,
    pub budget_left: Option<u64>,
    pub paused: bool,
    /// Why it is paused: `"user"` (`switchyard pause`) or `"credits"` (the
    /// provider answered 402). Both hold dispatch; only a user's pause
    /// survives a reload.
    #[serde(default)]
    pub paused_by: Option<String>,
    pub cooldown_ms: Option<u64>,
    pub health: String,
    pub queued: u64,
    pub requests: u64,
    pub rate_limited: u64,
    /// Answers in a shape no document shows (unknown status words, missing
    /// fields, unreadable bodies) since the daemon started; see `/metrics`
    /// `switchyard_unexpected_answers_total` for the kinds.
    #[serde(default)]
    pub unexpected_answers: u64,
    /// What the scheduler learned per class of job (the params that drive
    /// duration) since the daemon started.
    #[serde(default)]
    pub poll_classes: Vec<PollClassView>,
}

/// A daemon of the fleet sharing this store (`GET /v1/daemons`), as the
/// store's heartbeats show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonView {
    /// Its owner name (`daemon.name`, else host and data dir).
    pub owner: String,
    /// Grows each time its lease was taken anew (after it expired).
    pub epoch: u64,
    /// Until its lease expires without a heartbeat.
    pub expires_in_ms: u64,
    /// The daemon that answered.
    pub this: bool,
}

/// One class of job at a provider: durations seen and what polling costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollClassView {
    /// E.g. `model=kling duration=10`; "" for jobs without such params.
    pub class: String,
    /// Completed jobs learned from (the plan uses the latest 48).
    pub samples: u64,
    /// Durations seen (acknowledgement to finish, as placed between the
    /// last two polls), over the latest 48.
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    /// Polls per completed job, on average over the latest ones.
    pub polls_per_job: Option<f64>,
    /// Polls follow the learned plan (warm, and no progress reported).
    pub learned: bool,
    /// The p95 delay from finish to known the plan expects on the learned
    /// durations (a finish is only known between two polls, so this is
    /// the model's figure, not a measurement).
    pub p95_delay_s: Option<f64>,
}

/// The body of every error answer: `{"error": {"code", "message"}}`, with
/// the problems of a rejected batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
}
