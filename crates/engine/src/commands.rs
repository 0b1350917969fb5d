//! What users ask of the engine: intake a batch, cancel, retry, reload
//! limits, and a webhook's hint that a job is due. The CLI, HTTP and the
//! inbox only call these.

use crate::error::EngineError;
use crate::limits::ProviderRt;
use crate::sched::Sched;
use crate::{Engine, ProviderLimits, Shared};
use std::collections::BTreeMap;
use std::sync::Arc;
use switchyard_api::batch::{self, Problem, Validator};
use switchyard_api::BatchAnswer;
use switchyard_core::{Change, Job, JobSpec, JobState, LedgerOp, Patch};
use switchyard_provider::{ProviderError, RemoteState, WebhookCheck};

/// Checks jobs against the engine's providers.
struct EngineValidator<'a>(&'a Shared);

impl Validator for EngineValidator<'_> {
    fn validate(&self, provider: &str, params: &serde_json::Value) -> Option<Vec<String>> {
        let p = self.0.providers.get(provider)?;
        Some(match p.adapter.validate(params) {
            Ok(()) => vec![],
            Err(list) => list.into_iter().map(|p| p.to_string()).collect(),
        })
    }
    fn provider_names(&self) -> Vec<String> {
        self.0.providers.keys().cloned().collect()
    }
}

/// What a webhook turned out to be.
pub enum WebhookOutcome {
    /// No provider of that name.
    UnknownProvider,
    /// The signature did not verify (the reason is for the log only).
    Rejected(String),
    Accepted,
}

impl Engine {
    /// Validates every job against its provider; problems, if any, by job.
    pub fn check(&self, jobs: &[JobSpec]) -> Vec<Problem> {
        batch::check(jobs, &EngineValidator(&self.shared))
    }

    /// All-or-nothing intake: every job valid, or nothing queued. Durable
    /// when it returns.
    pub async fn intake(&self, jobs: Vec<JobSpec>) -> Result<BatchAnswer, EngineError> {
        if self.shared.cancel.is_cancelled() {
            return Err(EngineError::Unavailable(
                "the daemon is shutting down".into(),
            ));
        }
        let problems = self.check(&jobs);
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems));
        }
        let s = &self.shared;
        let report = s.store.intake(jobs).await?;
        if let Err(e) = s.store.sync().await {
            s.store_failed("accepting a batch", &e);
            return Err(e.into());
        }
        s.health.ok();
        for p in s.providers.values() {
            p.wake.notify_one();
        }
        Ok(BatchAnswer {
            accepted: report.accepted.len(),
            already_known: report.already_known.len(),
            accepted_keys: report.accepted,
            known_keys: report.already_known,
        })
    }

    /// User cancel: queued and uncertain jobs locally, live ones at the
    /// provider (whose rules apply).
    pub async fn cancel(&self, key: &str) -> Result<Job, EngineError> {
        let s = &self.shared;
        let job = s.job_or_not_found(key).await?;
        let p = s.providers.get(&job.provider).cloned();
        match job.state {
            JobState::Queued | JobState::Uncertain => {
                let change =
                    Change::to(JobState::Cancelled, "cancelled by user").ledger(LedgerOp::Release);
                let j = s.store.apply(key, job.state, change).await?;
                s.store.sync().await?;
                if job.state == JobState::Uncertain {
                    if let Some(p) = &p {
                        p.wake.notify_one();
                    }
                }
                Ok(j)
            }
            JobState::Pending | JobState::Processing => {
                let (Some(p), Some(id)) = (p, job.provider_job_id.clone()) else {
                    return Err(EngineError::Conflict(
                        "job has no provider id to cancel".into(),
                    ));
                };
                cancel_remote(s, &p, key, job.state, &id).await
            }
            JobState::Submitting => Err(EngineError::Conflict(
                "the job is being submitted; try again in a moment".into(),
            )),
            st => Err(EngineError::Conflict(format!("the job is already {st}"))),
        }
    }

    /// User retry: failed and uncertain jobs go back to the queue.
    pub async fn retry(&self, key: &str) -> Result<Job, EngineError> {
        let s = &self.shared;
        let job = s.job_or_not_found(key).await?;
        if !matches!(job.state, JobState::Failed | JobState::Uncertain) {
            return Err(EngineError::Conflict(format!(
                "only failed or uncertain jobs can be retried; this one is {}",
                job.state
            )));
        }
        let patch = Patch {
            error: Some(None),
            provider_job_id: Some(None),
            provider_status: Some(None),
            progress: Some(None),
            stage: Some(None),
            attempts: Some(switchyard_core::Attempts::Set(0)),
            paused_at: Some(None),
            paused_ms: Some(0),
            ..Patch::default()
        };
        let change = Change::to(JobState::Queued, "retried by user")
            .ledger(LedgerOp::Release)
            .patch(patch);
        let j = s.store.apply(key, job.state, change).await?;
        s.store.sync().await?;
        // An uncertain job already gave back its in-flight slot.
        if let Some(p) = s.providers.get(&job.provider) {
            p.wake.notify_one();
        }
        Ok(j)
    }

    /// A reload: new limits, budgets and polling settings for known
    /// providers; returns the names that are not known (they take effect
    /// at the next start).
    pub fn reload(&self, limits: &BTreeMap<String, ProviderLimits>) -> Vec<String> {
        let mut unknown = Vec::new();
        for (name, l) in limits {
            match self.shared.providers.get(name) {
                Some(p) => p.reload(l),
                None => unknown.push(name.clone()),
            }
        }
        unknown
    }

    /// A webhook for `provider`: verified (or a documented unsigned hint),
    /// it makes the job it names due for a poll. It never writes a state.
    pub fn webhook(
        &self,
        provider: &str,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> WebhookOutcome {
        let Some(p) = self.shared.providers.get(provider) else {
            return WebhookOutcome::UnknownProvider;
        };
        match p.adapter.verify_webhook(headers, body, now_unix) {
            WebhookCheck::Rejected(why) => WebhookOutcome::Rejected(why),
            WebhookCheck::Hint {
                provider_job_id,
                verified,
            } => {
                p.counters
                    .webhooks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(id) = provider_job_id {
                    // The scheduler outlives every webhook handler.
                    let _ = self.shared.sched.send(Sched::Due {
                        provider: provider.into(),
                        provider_job_id: id,
                        verified,
                    });
                }
                WebhookOutcome::Accepted
            }
        }
    }
}

impl Shared {
    pub(crate) async fn job_or_not_found(&self, key: &str) -> Result<Job, EngineError> {
        self.store
            .get(key)
            .await?
            .ok_or_else(|| EngineError::NotFound(key.into()))
    }
}

async fn cancel_remote(
    s: &Arc<Shared>,
    p: &Arc<ProviderRt>,
    key: &str,
    state: JobState,
    id: &str,
) -> Result<Job, EngineError> {
    if !p.permit(&s.cancel).await {
        return Err(EngineError::Unavailable("shutting down".into()));
    }
    match p.adapter.cancel(id).await {
        Ok(mut st) => {
            st.state = RemoteState::Cancelled;
            // A poll may have moved the job (pending to processing) while
            // the cancel was on the wire, and then the store refuses this
            // record: keep polling it, and the next poll sees it cancelled.
            if s.record(p, key, state, st, crate::record::By::User)
                .await
                .is_some()
            {
                let _ = s.sched.send(Sched::Untrack { key: key.into() });
            }
            s.job_or_not_found(key).await
        }
        Err(e @ (ProviderError::Conflict { .. } | ProviderError::Unsupported(_))) => Err(
            EngineError::Conflict(format!("the provider refused to cancel: {e}")),
        ),
        Err(e) => Err(EngineError::Provider(e.to_string())),
    }
}
