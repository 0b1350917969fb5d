//! The operator commands' bodies: `plan` (what a batch would cost and how
//! long it would take, without queueing it) and `adopt` (the provider's id
//! of an uncertain job).

use serde::{Deserialize, Serialize};

/// `POST /v1/jobs/{key}/adopt`: the id the user found at the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    pub provider_job_id: String,
}

/// The answer of `POST /v1/plan` (`switchyard plan`). Nothing was queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanAnswer {
    /// Every provider's jobs fit their budget.
    pub fits: bool,
    /// Jobs in the batch, known ones included.
    pub jobs: usize,
    /// The providers the batch names, by name.
    pub providers: Vec<PlanProvider>,
}

/// One provider's share of a planned batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanProvider {
    pub name: String,
    pub kind: String,
    /// New jobs (keys the store does not have yet).
    pub jobs: usize,
    /// Keys of the batch the store already has: submitting them is a no-op,
    /// so they are not counted in `jobs` or the credits.
    pub known_keys: Vec<String>,
    /// What the new jobs are estimated to cost: the adapter's estimate
    /// (what dispatch reserves), or the provider's own where it answered.
    pub estimated_credits: u64,
    /// The adapter's estimate of the same jobs (what dispatch reserves).
    pub reserved_credits: u64,
    /// New jobs whose estimate came from the provider (U-Gen's
    /// `POST /credits/estimate`); the rest are the adapter's.
    pub provider_estimated_jobs: usize,
    /// Why the provider was not asked, or could not answer, if it has an
    /// estimate endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_estimate_error: Option<String>,
    pub budget_credits: Option<u64>,
    pub budget_period: Option<String>,
    /// Left in the period now (limit minus reserved and charged).
    pub budget_left: Option<u64>,
    /// Jobs already queued for this provider, and what they will reserve
    /// (at equal priority they go first).
    pub queued_jobs: u64,
    pub queued_credits: u64,
    /// Every new job fits the budget left, in queue order.
    pub fits: bool,
    /// New jobs that would wait for credits (dispatch keeps strict queue
    /// order: the first job that does not fit holds those behind it), and
    /// their keys.
    pub waiting_jobs: usize,
    pub waiting_keys: Vec<String>,
    /// How long the configured rate limit takes to send the creates of the
    /// queued and new jobs (polls share the same limit).
    pub drain_by_rate_s: f64,
    /// The in-flight cap, and how long it takes to get every queued and new
    /// job through it at the median duration seen (when one is known).
    pub max_in_flight: u32,
    pub drain_by_in_flight_s: Option<f64>,
    /// Durations seen so far for the classes of job in the batch.
    pub durations: Vec<PlanClass>,
    /// Dispatch to this provider is paused (`"user"` or `"credits"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
}

/// Durations seen for one class of job, as the poll scheduler learned them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanClass {
    /// E.g. `model=kling duration=10`; "" for jobs without such params.
    pub class: String,
    /// New jobs of the batch in this class.
    pub jobs: usize,
    /// Finished jobs learned from (0: nothing known yet).
    pub samples: u64,
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
}
