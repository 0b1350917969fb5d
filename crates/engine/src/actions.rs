//! What a user does to one job at its provider, beyond cancel: pause and
//! resume it (U-Gen), retry it from a pipeline stage (U-Gen: the provider
//! runs the same job again and charges again, so the credits are reserved
//! here first, durably, and released if the provider refuses), and read
//! what the provider shows of it (U-Gen's keyframes and segments, UGC
//! Lab's processing steps). A provider without the action is refused
//! before any request, naming the provider. Every request takes its rate
//! permit.

use crate::limits::{read, ProviderRt};
use crate::record::{By, Leave};
use crate::{Engine, EngineError, Shared};
use std::sync::Arc;
use switchyard_api::JobDetail;
use switchyard_core::detail::ProviderDetail;
use switchyard_core::model::now_rfc3339;
use switchyard_core::{Change, Job, JobError, JobState, LedgerOp, Patch};
use switchyard_provider::{Action, ProviderError, RemoteState, RemoteStatus};

/// Which providers offer what, for the refusal's message.
fn who_offers(action: Action) -> &'static str {
    match action {
        Action::PauseJob | Action::ResumeJob | Action::RetryFromStage => "only U-Gen offers it",
        Action::Keyframes | Action::Segments | Action::Steps => {
            "U-Gen shows keyframes and video segments, UGC Lab processing steps"
        }
    }
}

fn unsupported(p: &ProviderRt, action: Action) -> EngineError {
    EngineError::Conflict(format!(
        "provider {:?} ({}) cannot {}: {}",
        p.name,
        p.adapter.kind(),
        action.describe(),
        who_offers(action)
    ))
}

/// What a refused or failed request to the provider means to the user.
fn provider_error(p: &ProviderRt, what: &str, e: ProviderError) -> EngineError {
    match e {
        ProviderError::Conflict { .. }
        | ProviderError::Permanent { .. }
        | ProviderError::NotFound(_)
        | ProviderError::Unsupported(_)
        | ProviderError::InsufficientCredits(_) => {
            EngineError::Conflict(format!("{} refused to {what}: {e}", p.name))
        }
        other => EngineError::Provider(format!("{} could not {what}: {other}", p.name)),
    }
}

impl Shared {
    /// The job, its provider (which must offer `action`) and its provider
    /// job id.
    async fn at_provider(
        &self,
        key: &str,
        action: Action,
    ) -> Result<(Job, Arc<ProviderRt>, String), EngineError> {
        let job = self.job_or_not_found(key).await?;
        let p = self.providers.get(&job.provider).cloned().ok_or_else(|| {
            EngineError::Conflict(format!(
                "the job's provider {:?} is not configured",
                job.provider
            ))
        })?;
        if !p.adapter.supports(action) {
            return Err(unsupported(&p, action));
        }
        let id = job.provider_job_id.clone().ok_or_else(|| {
            EngineError::Conflict(format!(
                "the job is {} and not known at {} yet: nothing to {}",
                job.state,
                p.name,
                action.describe()
            ))
        })?;
        Ok((job, p, id))
    }

    async fn permit(&self, p: &ProviderRt) -> Result<(), EngineError> {
        if p.permit(&self.cancel).await {
            Ok(())
        } else {
            Err(EngineError::Unavailable(
                "the daemon is shutting down".into(),
            ))
        }
    }

    /// Records a pause or resume the provider took: its start, or its
    /// length added up (the poll timeout does not count it), and what the
    /// answer says of the job. The state itself is left to the polls, which
    /// follow the job throughout (it may end while paused): a change here
    /// would race the poll in flight.
    async fn record_pause(
        self: &Arc<Self>,
        p: &ProviderRt,
        key: &str,
        st: Option<RemoteStatus>,
        pausing: bool,
    ) -> Result<Job, EngineError> {
        if let Some(st) = st.as_ref().filter(|s| {
            matches!(
                s.state,
                RemoteState::Completed | RemoteState::Failed | RemoteState::Cancelled
            )
        }) {
            // It ended meanwhile: that is the news, recorded as a poll would.
            let job = self.job_or_not_found(key).await?;
            self.record(p, key, job.state, st.clone(), By::User).await;
            return self.job_or_not_found(key).await;
        }
        let now = now_rfc3339();
        let note = if pausing {
            "paused by user at the provider"
        } else {
            "resumed by user at the provider"
        };
        // A poll may move the job (pending to processing) meanwhile.
        let mut tries = 0;
        loop {
            let job = self.job_or_not_found(key).await?;
            let paused_for = job
                .paused_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| t.elapsed().ok())
                .map_or(0, |d| d.as_millis() as u64);
            let patch = Patch {
                paused_at: Some(pausing.then(|| now.clone())),
                paused_ms: (!pausing).then(|| job.paused_ms.saturating_add(paused_for)),
                provider_status: st.as_ref().map(|s| Some(s.raw_status.clone())),
                ..Patch::default()
            };
            let change = Change::to(job.state, note).patch(patch).noted();
            match self.store.apply(key, job.state, change).await {
                Ok(j) => {
                    self.store.sync().await?;
                    return Ok(j);
                }
                Err(e) if e.is_state_mismatch() && tries < 3 && job.state.is_live() => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After the provider took a retry: the job runs again, tracked from
    /// now, with the earlier run's outputs and error cleared.
    async fn rerun(
        self: &Arc<Self>,
        p: &Arc<ProviderRt>,
        key: &str,
        st: Option<RemoteStatus>,
    ) -> Result<Job, EngineError> {
        // The retry made this daemon the job's holder.
        let gen = self.gen();
        let st = st.unwrap_or_else(|| RemoteStatus {
            provider_job_id: String::new(),
            state: RemoteState::Pending,
            raw_status: "retry accepted".into(),
            ..RemoteStatus::default()
        });
        if matches!(
            st.state,
            RemoteState::Completed | RemoteState::Failed | RemoteState::Cancelled
        ) {
            self.record(p, key, JobState::Submitting, st, By::Owner(&gen.lease))
                .await;
            return self.job_or_not_found(key).await;
        }
        let patch = Patch {
            submitted_at: Some(Some(now_rfc3339())),
            provider_status: Some(Some(st.raw_status.clone())),
            progress: Some(st.progress),
            stage: Some(st.stage.clone()),
            error: Some(None),
            output_urls: Some(Vec::new()),
            output_files: Some(Vec::new()),
            paused_at: Some(None),
            paused_ms: Some(0),
            ..Patch::default()
        };
        let note = format!("{} (retry accepted by the provider)", st.raw_status);
        let change = Change::to(st.state.into(), note).patch(patch);
        let job = self
            .write(By::Owner(&gen.lease), key, JobState::Submitting, change)
            .await?;
        self.durable("recording a retry at the provider").await;
        if let Some(id) = &job.provider_job_id {
            self.track(&job, id);
        }
        Ok(job)
    }
}

impl Engine {
    /// Pauses a running job at its provider (U-Gen: it stops after the
    /// current stage). The poll timeout does not run while it is paused.
    pub async fn job_pause(&self, key: &str) -> Result<Job, EngineError> {
        let s = &self.shared;
        let (job, p, id) = s.at_provider(key, Action::PauseJob).await?;
        if !job.state.is_live() {
            return Err(EngineError::Conflict(format!(
                "only a pending or processing job can be paused; this one is {}",
                job.state
            )));
        }
        if let Some(at) = &job.paused_at {
            return Err(EngineError::Conflict(format!(
                "the job has been paused since {at}"
            )));
        }
        s.permit(&p).await?;
        let st = p
            .adapter
            .pause_job(&id)
            .await
            .map_err(|e| provider_error(&p, "pause the job", e))?;
        s.record_pause(&p, key, st, true).await
    }

    /// Resumes a job paused at its provider.
    pub async fn job_resume(&self, key: &str) -> Result<Job, EngineError> {
        let s = &self.shared;
        let (job, p, id) = s.at_provider(key, Action::ResumeJob).await?;
        if !job.state.is_live() {
            return Err(EngineError::Conflict(format!(
                "only a paused job can be resumed; this one is {}",
                job.state
            )));
        }
        s.permit(&p).await?;
        let st = p
            .adapter
            .resume_job(&id)
            .await
            .map_err(|e| provider_error(&p, "resume the job", e))?;
        s.record_pause(&p, key, st, false).await
    }

    /// Re-runs a failed or completed job at its provider from `stage`.
    /// Its credits are reserved first (within the budget) and durable
    /// before the request; released if the provider refuses it.
    pub async fn retry_from_stage(&self, key: &str, stage: &str) -> Result<Job, EngineError> {
        let s = &self.shared;
        let stage = stage.trim();
        if stage.is_empty() {
            return Err(EngineError::Conflict(
                "from_stage is empty: name the pipeline stage to restart from".into(),
            ));
        }
        let (job, p, id) = s.at_provider(key, Action::RetryFromStage).await?;
        let before = job.state;
        if !matches!(before, JobState::Failed | JobState::Completed) {
            return Err(EngineError::Conflict(format!(
                "only a failed or completed job can be retried from a stage; this one is {before}"
            )));
        }
        let budget = read(&p.limits).budget.clone();
        let reserve = LedgerOp::Reserve {
            period: budget
                .as_ref()
                .map(|b| b.current_period())
                .unwrap_or_else(|| "total".into()),
            amount: p.adapter.estimate_credits(&job.params),
            limit: budget.as_ref().map(|b| b.credits),
        };
        let note = format!("retry from stage {stage:?} at the provider, asked by user");
        let change = Change::to(JobState::Submitting, note).ledger(reserve);
        // The job is not live (failed or completed): this daemon takes it
        // on under its lease.
        let gen = s.gen();
        s.write(By::Owner(&gen.lease), key, before, change).await?;
        if let Err(e) = s.store.sync().await {
            // Not known to be on disk: the request is not sent. The job
            // stays submitting, where the next start reconciles it.
            s.store_failed("reserving credits for a retry at the provider", &e);
            return Err(e.into());
        }
        // Shutting down: the next start reconciles the submitting job.
        s.permit(&p).await?;
        match p.adapter.retry_job(&id, stage).await {
            Ok(st) => s.rerun(&p, key, st).await,
            Err(e)
                if matches!(
                    e,
                    ProviderError::Transient(_) | ProviderError::Unexpected { .. }
                ) =>
            {
                // It may have been taken: the job itself says. (Shutting
                // down instead: the next start reconciles it.)
                s.permit(&p).await?;
                match p.adapter.status(&id).await {
                    Ok(st)
                        if matches!(st.state, RemoteState::Pending | RemoteState::Processing) =>
                    {
                        s.rerun(&p, key, Some(st)).await
                    }
                    Ok(st) => {
                        // Still as it was: recorded as a poll would (its
                        // charge is counted once), the reservation dropped.
                        s.record(&p, key, JobState::Submitting, st, By::Owner(&gen.lease))
                            .await;
                        Err(provider_error(&p, "retry the job", e))
                    }
                    Err(_) => {
                        let why = format!("the retry at the provider answered with an error ({e}) and the job's status could not be read: it may be running again");
                        let err = JobError::new("uncertain", why.clone());
                        let how = Leave::Uncertain { note: why, err };
                        s.leave(&p, key, JobState::Submitting, how, By::Owner(&gen.lease))
                            .await;
                        s.job_or_not_found(key).await
                    }
                }
            }
            Err(e) => {
                let note = format!("the provider refused the retry: {e}");
                let change = Change::to(before, note).ledger(LedgerOp::Release);
                let released = s
                    .write(By::Owner(&gen.lease), key, JobState::Submitting, change)
                    .await;
                s.durable("releasing the credits of a refused retry").await;
                s.release(&p, key);
                released?;
                Err(provider_error(&p, "retry the job", e))
            }
        }
    }

    /// One job with its history and what its provider shows of it.
    pub async fn job_detail(&self, key: &str) -> Result<JobDetail, EngineError> {
        let s = &self.shared;
        let job = s.job_or_not_found(key).await?;
        let p = s.providers.get(&job.provider).cloned();
        let offered = [Action::Keyframes, Action::Segments, Action::Steps];
        let Some(p) = p.filter(|p| offered.iter().any(|a| p.adapter.supports(*a))) else {
            return Err(EngineError::Conflict(format!(
                "provider {:?} shows no job detail (keyframes, video segments or processing steps): U-Gen and UGC Lab do",
                job.provider
            )));
        };
        let Some(id) = job.provider_job_id.clone() else {
            return Err(EngineError::Conflict(format!(
                "the job is {} and not known at {} yet: no detail to show",
                job.state, p.name
            )));
        };
        let mut detail = ProviderDetail {
            provider: p.name.clone(),
            provider_job_id: id.clone(),
            ..ProviderDetail::default()
        };
        let what = "show the job's detail";
        if p.adapter.supports(Action::Keyframes) {
            s.permit(&p).await?;
            detail.keyframes = p
                .adapter
                .list_keyframes(&id)
                .await
                .map_err(|e| provider_error(&p, what, e))?;
        }
        if p.adapter.supports(Action::Segments) {
            s.permit(&p).await?;
            detail.segments = p
                .adapter
                .list_segments(&id)
                .await
                .map_err(|e| provider_error(&p, what, e))?;
        }
        if p.adapter.supports(Action::Steps) {
            s.permit(&p).await?;
            detail.steps = p
                .adapter
                .list_steps(&id)
                .await
                .map_err(|e| provider_error(&p, what, e))?;
        }
        let mut out = self.job(key).await?;
        out.detail = Some(detail);
        Ok(out)
    }
}
