//! Every provider speaks its own dialect; the daemon speaks only [`Provider`].
//! Each module turns one provider's documented API into this trait: request
//! building, param validation, status normalization into the contract's
//! states, error classification and webhook verification. Nothing here stores
//! anything: the daemon decides what to do with each answer.
//!
//! Assumptions about endpoints the provider documents do not show are kept in
//! one place per adapter (its module docs, and its default paths in
//! [`paths::defaults`], which the config can override).

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::detail::{Keyframe, Segment, Step};
use switchyard_core::{JobError, JobState, ProviderKind, Secret};

mod classify;
mod fields;
pub mod http;
pub mod paths;
pub mod probe;
pub mod record;
pub mod ugclab;
pub mod ugen;
pub mod ulazai;
pub mod viggle;

/// One problem with a job's params, found before anything is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    /// The offending field (`params.segment_count`), or `params` for the body.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl ParamProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ParamProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A provider's view of one job, normalized into the contract's vocabulary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteStatus {
    pub provider_job_id: String,
    /// One of pending, processing, completed, failed, cancelled.
    pub state: RemoteState,
    /// The provider's own status word (`PROCESSING`, `complete`, ...).
    pub raw_status: String,
    pub progress: Option<u8>,
    /// Stage, checkpoint or processing step, whatever the provider reports.
    pub stage: Option<String>,
    /// Output URLs to download, main video first (Viggle's mask after it).
    pub output_urls: Vec<String>,
    pub credits_charged: Option<u64>,
    pub credits_refunded: Option<u64>,
    pub error: Option<JobError>,
}

/// The states a provider can report; a subset of [`JobState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteState {
    #[default]
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl From<RemoteState> for JobState {
    fn from(s: RemoteState) -> JobState {
        match s {
            RemoteState::Pending => JobState::Pending,
            RemoteState::Processing => JobState::Processing,
            RemoteState::Completed => JobState::Completed,
            RemoteState::Failed => JobState::Failed,
            RemoteState::Cancelled => JobState::Cancelled,
        }
    }
}

/// What went wrong, classified so the daemon knows what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429: the whole provider cools down for `retry_after` (or backoff).
    #[error("rate limited by the provider (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, timeouts, dropped connections, malformed bodies: retry with
    /// backoff. The provider may have acted on the request (a create may
    /// exist), so a non-idempotent create is never simply resent.
    #[error("transient provider error: {0}")]
    Transient(String),
    /// The provider certainly did not act on the request: the connection was
    /// refused, or it answered 503 Service Unavailable. Safe to resend.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// 402: pause dispatch to this provider; the job stays queued.
    #[error("insufficient credits at the provider: {0}")]
    InsufficientCredits(String),
    #[error("not found at the provider: {0}")]
    NotFound(String),
    /// The request is valid but not now (e.g. cancel of a PROCESSING job).
    #[error("refused by the provider ({code}): {message}")]
    Conflict { code: String, message: String },
    /// Validation or auth failure: retrying will not help.
    #[error("rejected by the provider ({code}): {message}")]
    Permanent { code: String, message: String },
    #[error("not supported by this provider: {0}")]
    Unsupported(&'static str),
    /// A 2xx answer that says something no document shows (today: a status
    /// word the adapter does not know). The job is not known to have
    /// changed: poll again; on a create, the job may exist.
    #[error("unexpected answer from the provider ({kind} {detail:?}): {excerpt}")]
    Unexpected {
        /// One of [`answer_kind`]'s names.
        kind: &'static str,
        /// The word, or the missing field.
        detail: String,
        /// A short excerpt of the answer, secrets removed.
        excerpt: String,
    },
}

/// The `kind` of an unexpected answer, as `/metrics` labels it.
pub mod answer_kind {
    pub const STATUS_WORD: &str = "status_word";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const UNPARSEABLE_BODY: &str = "unparseable_body";
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Transient(_)
                | ProviderError::Unavailable(_)
                | ProviderError::Unexpected { .. }
        )
    }

    /// What was unexpected about a 2xx answer, as (kind, detail): the
    /// [`ProviderError::Unexpected`] variant, and also the `Transient`
    /// errors of a body that did not parse or lacked a required field
    /// (those stay `Transient` so that every caller keeps treating them as
    /// retryable; this names them for counting).
    pub fn unexpected_answer(&self) -> Option<(&'static str, String)> {
        match self {
            ProviderError::Unexpected { kind, detail, .. } => Some((kind, detail.clone())),
            ProviderError::Transient(m) => http::unexpected_of(m),
            _ => None,
        }
    }
}

/// Result of looking for a job created before a crash.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(RemoteStatus),
    NotFound,
    /// The provider has no list or history endpoint that could tell.
    Unsupported,
}

/// A job action only some providers offer; [`Provider::supports`] says
/// which, so the daemon can refuse the others before any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PauseJob,
    ResumeJob,
    RetryFromStage,
    Keyframes,
    Segments,
    Steps,
}

impl Action {
    /// What the action does, as a refusal names it ("cannot ...").
    pub fn describe(self) -> &'static str {
        match self {
            Action::PauseJob => "pause a job",
            Action::ResumeJob => "resume a job",
            Action::RetryFromStage => "retry a job from a stage",
            Action::Keyframes => "list a job's keyframes",
            Action::Segments => "list a job's video segments",
            Action::Steps => "list a job's processing steps",
        }
    }
}

/// What an incoming webhook is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookCheck {
    /// Signature valid (or the provider does not sign): poll this job now.
    /// `verified` is true only when a signature was checked.
    Hint {
        provider_job_id: Option<String>,
        verified: bool,
    },
    /// Missing, wrong or stale signature: 401, change nothing.
    Rejected(String),
}

/// Per-provider connection settings from the config.
#[derive(Clone, Default)]
pub struct Settings {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// Endpoint overrides (`paths = { create = "/ugc" }`); empty: defaults.
    pub paths: paths::Paths,
    /// Where every exchange is recorded (`daemon.record_dir`), if anywhere.
    pub recorder: Option<record::Recorder>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("paths", &self.paths)
            .field("recording", &self.recorder.is_some())
            .finish()
    }
}

/// The one interface the daemon drives for every provider.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    fn kind(&self) -> ProviderKind;

    /// Checks params against the provider's documented rules; every problem is
    /// listed. Unknown fields are allowed (passed through unchanged).
    fn validate(&self, params: &serde_json::Value) -> Result<(), Vec<ParamProblem>>;

    /// Credits to reserve before submitting. Deliberately an upper estimate:
    /// settlement replaces it with the provider's actual charge.
    fn estimate_credits(&self, params: &serde_json::Value) -> u64;

    /// True when a repeated create with the same job key returns the existing
    /// job instead of a new one (U-Gen's `idempotency_key`), so a resend after
    /// a crash is safe.
    fn idempotent_create(&self) -> bool {
        false
    }

    /// Sends the create call. `key` is the client's job key: sent as the
    /// idempotency key where the provider supports one, and always as an
    /// `Idempotency-Key` header.
    async fn create(
        &self,
        key: &str,
        params: &serde_json::Value,
    ) -> Result<RemoteStatus, ProviderError>;

    async fn status(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError>;

    /// Cancels at the provider (its rules apply: a refusal is `Conflict`).
    async fn cancel(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError>;

    /// Finds a job created before a crash, matched by our key (and params),
    /// through list or history endpoints where the provider has them.
    async fn find_by_key(
        &self,
        _key: &str,
        _params: &serde_json::Value,
    ) -> Result<Lookup, ProviderError> {
        Ok(Lookup::Unsupported)
    }

    /// The body of the provider's own credit estimate for a job with these
    /// params, where it offers one (U-Gen's `POST /credits/estimate`).
    /// Jobs with equal bodies cost the same, so a caller asks once per
    /// distinct body. `None`: only [`Provider::estimate_credits`] applies.
    fn remote_estimate_body(&self, _params: &serde_json::Value) -> Option<serde_json::Value> {
        None
    }

    /// The provider's own estimate, in credits, for a body made by
    /// [`Provider::remote_estimate_body`]. Costs no credits.
    async fn remote_estimate(&self, _body: &serde_json::Value) -> Result<u64, ProviderError> {
        Err(ProviderError::Unsupported("credit estimates"))
    }

    /// Points the provider's webhook at `url`, signed with the configured
    /// webhook secret, where the provider takes it through its API (U-Gen's
    /// `PUT /tenants/me/webhook`).
    async fn register_webhook(&self, _url: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("webhook registration"))
    }

    /// One cheap authenticated request that costs no credits, classified
    /// (`switchyard doctor`). Each adapter picks the call its provider
    /// documents best for it.
    async fn probe(&self) -> probe::Probe;

    /// Checks an incoming webhook. `now_unix` is the current Unix time in
    /// seconds (passed in so tests control it).
    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now_unix: i64) -> WebhookCheck;

    /// Whether this provider offers `action` (the methods below answer
    /// `Unsupported` where it does not). One request each.
    fn supports(&self, _action: Action) -> bool {
        false
    }

    /// Pauses a running job at the provider. `None`: accepted, but the
    /// answer shows no job (the next poll tells).
    async fn pause_job(
        &self,
        _provider_job_id: &str,
    ) -> Result<Option<RemoteStatus>, ProviderError> {
        Err(ProviderError::Unsupported("pause"))
    }

    /// Resumes a paused job, as [`Provider::pause_job`] answers.
    async fn resume_job(
        &self,
        _provider_job_id: &str,
    ) -> Result<Option<RemoteStatus>, ProviderError> {
        Err(ProviderError::Unsupported("resume"))
    }

    /// Re-runs a failed or completed job from a pipeline stage (the
    /// provider charges again), as [`Provider::pause_job`] answers.
    async fn retry_job(
        &self,
        _provider_job_id: &str,
        _from_stage: &str,
    ) -> Result<Option<RemoteStatus>, ProviderError> {
        Err(ProviderError::Unsupported("retry from a stage"))
    }

    async fn list_keyframes(&self, _provider_job_id: &str) -> Result<Vec<Keyframe>, ProviderError> {
        Err(ProviderError::Unsupported("keyframes"))
    }

    async fn list_segments(&self, _provider_job_id: &str) -> Result<Vec<Segment>, ProviderError> {
        Err(ProviderError::Unsupported("video segments"))
    }

    async fn list_steps(&self, _provider_job_id: &str) -> Result<Vec<Step>, ProviderError> {
        Err(ProviderError::Unsupported("processing steps"))
    }
}

/// Builds the adapter for `kind`. One `reqwest::Client` is shared so that
/// connections are pooled across providers.
pub fn build(kind: ProviderKind, settings: Settings, client: reqwest::Client) -> Arc<dyn Provider> {
    match kind {
        ProviderKind::Ugclab => Arc::new(ugclab::UgcLab::new(settings, client)),
        ProviderKind::Ugen => Arc::new(ugen::UGen::new(settings, client)),
        ProviderKind::Ulazai => Arc::new(ulazai::UlazAi::new(settings, client)),
        ProviderKind::Viggle => Arc::new(viggle::Viggle::new(settings, client)),
    }
}

/// A client with the timeouts every adapter relies on: a hung provider must
/// surface as a transient error, not a stuck task.
pub fn default_client(request_timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(Duration::from_secs(10))
        // Longer than the common 60 s poll interval, so that connections
        // survive from one round of polls to the next instead of being
        // reopened each round (hyper retries a request whose pooled
        // connection the server had closed before it was written).
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Transient(format!("building HTTP client: {e}")))
}
