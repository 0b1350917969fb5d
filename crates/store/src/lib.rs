//! The durable queue's boundary: what the engine asks of storage, in plain
//! data, so that sled (one daemon) and PostgreSQL (a fleet) are
//! interchangeable behind `Arc<dyn Store>`.
//!
//! **API boundary.** No backend type crosses it. Every rule about what a
//! change does (compare-and-swap, legal transitions, history, ledger
//! arithmetic) is [`switchyard_core::change`]'s; a backend stores the result
//! atomically and decides nothing. [`conformance`] is the suite every
//! backend runs in its own tests.
//!
//! Durability: a write is visible to readers of the same store at once and
//! durable after the next [`Store::sync`] returns. Callers that are about to
//! act on the outside world (send a create call, tell a user "accepted")
//! sync first; others don't wait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use switchyard_core::{Change, Gate, Job, JobSpec, JobState, LedgerEntry, Refusal, Transition};

pub mod conformance;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("corrupt record for job {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("no job with key {0:?}")]
    NotFound(String),
    /// The change broke a rule (state mismatch, illegal transition, budget).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// This owner's lease was taken over by another daemon: it must stop
    /// writing for the jobs it held.
    #[error("the lease of {owner} was lost")]
    LeaseLost { owner: String },
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    /// True when the job was not in the expected state (someone else moved
    /// it first): the caller's view is stale, nothing was written.
    pub fn is_state_mismatch(&self) -> bool {
        matches!(self, StoreError::Refused(Refusal::StateMismatch { .. }))
    }

    pub fn is_over_budget(&self) -> bool {
        matches!(self, StoreError::Refused(Refusal::OverBudget { .. }))
    }
}

/// Outcome of a batch intake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReport {
    /// Keys newly accepted, in batch order.
    pub accepted: Vec<String>,
    /// Keys the store already had (or repeated within the batch): unchanged.
    pub already_known: Vec<String>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<JobState>,
    pub provider: Option<String>,
}

/// Jobs of one provider in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    pub provider: String,
    pub state: JobState,
    pub jobs: u64,
}

/// Who is claiming: a daemon's identity in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner(pub String);

/// A daemon's hold on the jobs it claimed. `epoch` grows each time the
/// lease is taken anew, so a write fenced on it fails once another daemon
/// took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: Owner,
    pub epoch: u64,
    /// How long the lease holds without a renewal.
    pub ttl: Duration,
}

/// A request to move queued jobs of one provider to `submitting`.
pub struct Claim<'a> {
    pub lease: &'a Lease,
    pub provider: &'a str,
    /// At most this many jobs.
    pub limit: usize,
    /// The budget period reservations are made in, and its limit.
    pub period: &'a str,
    pub budget: Option<u64>,
    /// Asked for each job in queue order before it is moved: `Some(credits)`
    /// to reserve that many for it (the adapter's estimate; the caller has
    /// taken the job's rate permit), `None` to stop here (no permit now).
    pub admit: &'a (dyn Fn(&Job) -> Option<u64> + Send + Sync),
    /// History note of the move.
    pub note: &'a str,
    /// The provider's rate gate, shared by every daemon on this store: one
    /// permit per moved job, taken with the move. `None`: no gate.
    pub gate: Option<Gate>,
    /// Jobs of this provider in `submitting` (the whole fleet's) never
    /// exceed this; `None`: no cap.
    pub max_in_flight: Option<u32>,
}

/// What a claim took.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// In queue order (priority, then FIFO), each in `submitting` with its
    /// reservation made and its attempt counted.
    pub jobs: Vec<Job>,
    /// The next job in queue order did not fit the budget: the queue is
    /// held there (strict order) until credits free up.
    pub over_budget: bool,
    /// `admit` stopped the claim.
    pub not_admitted: bool,
    /// The gate (or a hold) stopped the claim: its next permit is this far
    /// away.
    pub gate_wait: Option<Duration>,
    /// The in-flight cap stopped the claim.
    pub at_cap: bool,
}

/// Answer of [`Store::permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Granted,
    /// No permit before this long (the rate, or a hold after a 429).
    Wait(Duration),
}

/// A daemon whose lease is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub owner: Owner,
    pub epoch: u64,
    /// Until the lease expires without a renewal.
    pub expires_in: Duration,
}

/// A hint from another daemon on the same store. Hints can be lost (a
/// listener that was disconnected); the engine's own polling stays the
/// truth and a hint only makes it look sooner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// New jobs were queued for this provider.
    Queued { provider: String },
    /// This job should be looked at now (a webhook reached another daemon).
    Due { key: String },
}

/// The storage interface. Shaped after what the engine needs, not after any
/// database: plain data in, plain data out.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes the whole batch or nothing; known keys are reported, unchanged.
    async fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Job>, StoreError>;
    async fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError>;
    /// Jobs matching `filter`, in enqueue order.
    async fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError>;
    /// Jobs per provider and state, every state of every provider that has
    /// jobs. Kept current as transitions happen: no scan.
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError>;
    /// Moves up to `claim.limit` queued jobs of one provider to
    /// `submitting` for `claim.lease`'s owner, highest priority first and
    /// FIFO within a priority, each with its credits reserved atomically
    /// with the move: reserved + charged never exceeds the budget, however
    /// many claims race. Stops at the first job that does not fit or that
    /// `admit` refuses.
    async fn claim(&self, claim: Claim<'_>) -> Result<Claimed, StoreError>;
    /// Compare-and-swap: applies `change` only if the job is in `expect`
    /// and the rules of [`switchyard_core::change::apply`] allow it. Not
    /// fenced: for a user's command, which any daemon may carry out.
    async fn apply(&self, key: &str, expect: JobState, change: Change) -> Result<Job, StoreError>;
    /// [`Store::apply`] by the owner of a live job: refused with
    /// [`StoreError::LeaseLost`] (nothing written) unless the job is held by
    /// `lease`'s owner at `lease`'s epoch, so a daemon that was stopped past
    /// its lease cannot overwrite what the daemon that took over did. A job
    /// that is not live (queued, ended) is not fenced. A single-process
    /// backend holds every job.
    async fn apply_owned(
        &self,
        lease: &Lease,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, StoreError>;
    async fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError>;
    /// Takes (or renews) `owner`'s lease (its heartbeat). A live lease keeps
    /// its epoch; one that had expired comes back with a higher epoch, and
    /// the jobs it held may already be another's. A single-process backend
    /// always grants it.
    async fn renew(&self, owner: &Owner, ttl: Duration) -> Result<Lease, StoreError>;
    /// The daemons whose lease is live, this one included.
    async fn daemons(&self) -> Result<Vec<DaemonInfo>, StoreError>;
    /// Gives the lease up (clean stop): its live jobs may be taken over at
    /// once.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// The live jobs (`submitting`, `pending`, `processing`) this lease's
    /// owner must follow after a start: its own, and those of owners whose
    /// lease expired, which it now holds. A single-process backend: all.
    async fn recover(&self, lease: &Lease) -> Result<Vec<Job>, StoreError>;
    /// While running: takes over the live jobs of owners whose lease
    /// expired and returns them (now held by `lease`). A single-process
    /// backend has none.
    async fn rescue(&self, lease: &Lease) -> Result<Vec<Job>, StoreError>;
    /// Takes one permit of `provider`'s rate gate (shared by every daemon
    /// on this store, on the store's clock) unless a hold is on.
    async fn permit(&self, provider: &str, gate: Gate) -> Result<Permit, StoreError>;
    /// Holds `provider`'s gate for `wait` from now (a 429's Retry-After),
    /// for every daemon and across restarts; a longer hold already set
    /// stays. Durable when it returns.
    async fn hold(&self, provider: &str, wait: Duration) -> Result<(), StoreError>;
    /// What is left of `provider`'s hold, if any.
    async fn held(&self, provider: &str) -> Result<Option<Duration>, StoreError>;
    /// A user's pause of `provider` (nothing new is dispatched), for every
    /// daemon and across restarts. Durable when it returns.
    async fn set_paused(&self, provider: &str, paused: bool) -> Result<(), StoreError>;
    /// The providers a user paused.
    async fn paused(&self) -> Result<Vec<String>, StoreError>;
    /// Tells the other daemons on this store (best effort; see [`Hint`]).
    async fn hint(&self, hint: Hint) -> Result<(), StoreError>;
    /// Hints from other daemons; `None` for a single-process backend.
    fn hints(&self) -> Option<tokio::sync::broadcast::Receiver<Hint>>;
    /// Makes every write made before the call durable. Concurrent callers
    /// share one flush.
    async fn sync(&self) -> Result<(), StoreError>;
    /// Every statistics record saved (what the scheduler learned, by its
    /// own keys), staged ones included, sorted by key.
    async fn load_stats(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Saves one statistics record, replacing the one under `key`; durable
    /// with the next `sync`, like a transition.
    async fn save_stats(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
}
