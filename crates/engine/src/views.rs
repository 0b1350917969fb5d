//! What every surface shows (the API, the CLI, `watch`, the dashboard):
//! jobs with what is known only in memory (live progress, why a queued job
//! waits), providers with their limits and budget, and the engine's health.

use crate::limits::read;
use crate::sched::Sched;
use crate::{Engine, EngineError, Shared};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use switchyard_api::{JobDetail, ProviderView};
use switchyard_core::{Job, JobState};
use switchyard_store::{Filter, StateCount};

impl Shared {
    /// `held_by` is derived: a queued job waits for what its provider's
    /// queue head waits for.
    pub(crate) fn show_hold(&self, job: &mut Job) {
        job.held_by = match job.state {
            JobState::Queued => self.providers.get(&job.provider).and_then(|p| p.hold()),
            _ => None,
        };
    }

    /// Shows on these jobs the progress reports kept with the poll schedule
    /// (see [`crate::sched::LiveReport`]); asks only for the live ones.
    pub(crate) async fn show_live(&self, jobs: &mut [Job]) {
        let keys: Vec<String> = jobs
            .iter()
            .filter(|j| j.state.is_live())
            .map(|j| j.key.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.sched.send(Sched::Peek { keys, reply }).is_err() {
            return;
        }
        let live: HashMap<_, _> = rx.await.unwrap_or_default();
        for j in jobs {
            if let Some(r) = live.get(&j.key) {
                r.apply_to(j);
            }
        }
    }
}

impl Engine {
    /// Jobs as users see them: stored, with live progress and holds.
    pub async fn jobs(&self, filter: &Filter) -> Result<Vec<Job>, EngineError> {
        let s = &self.shared;
        let mut jobs = s.store.list(filter).await?;
        s.show_live(&mut jobs).await;
        for j in &mut jobs {
            s.show_hold(j);
        }
        Ok(jobs)
    }

    /// One job with its history.
    pub async fn job(&self, key: &str) -> Result<JobDetail, EngineError> {
        let s = &self.shared;
        let mut job = s.job_or_not_found(key).await?;
        s.show_hold(&mut job);
        s.show_live(std::slice::from_mut(&mut job)).await;
        let history = s.store.history(key).await?;
        Ok(JobDetail {
            job,
            history,
            detail: None,
        })
    }

    /// Every provider's limits, in-flight jobs, budget and health.
    pub async fn providers(&self) -> Result<Vec<ProviderView>, EngineError> {
        let counts = self.shared.store.counts().await?;
        self.providers_with(&counts).await
    }

    /// [`Self::providers`] with the store's counts already read.
    pub(crate) async fn providers_with(
        &self,
        counts: &[StateCount],
    ) -> Result<Vec<ProviderView>, EngineError> {
        let s = &self.shared;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let learned = if s.sched.send(Sched::Learned { reply }).is_ok() {
            rx.await.unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for (name, p) in &s.providers {
            let (rate_limit, max_in_flight, budget) = {
                let l = read(&p.limits);
                (l.rate_limit, l.max_in_flight, l.budget.clone())
            };
            let period_id = budget
                .as_ref()
                .map(|b| b.current_period())
                .unwrap_or_else(|| "total".into());
            let entry = s.store.ledger(name, &period_id).await?;
            let cooldown = p.held().await;
            let paused_by = p.paused_by();
            let paused = paused_by.is_some();
            let of = |states: &[JobState]| -> u64 {
                counts
                    .iter()
                    .filter(|c| c.provider == *name && states.contains(&c.state))
                    .map(|c| c.jobs)
                    .sum()
            };
            let queued = of(&[JobState::Queued]);
            // The store's live jobs, every daemon's: what the cap counts.
            let in_flight = of(&[
                JobState::Submitting,
                JobState::Pending,
                JobState::Processing,
            ]);
            out.push(ProviderView {
                name: name.clone(),
                kind: p.adapter.kind().to_string(),
                rate_limit,
                max_in_flight,
                in_flight: usize::try_from(in_flight).unwrap_or(usize::MAX),
                budget_credits: budget.as_ref().map(|b| b.credits),
                budget_period: budget.as_ref().map(|_| period_id.clone()),
                budget_used: entry.charged,
                budget_reserved: entry.reserved,
                budget_left: budget.as_ref().map(|b| entry.headroom(b.credits)),
                paused,
                paused_by: paused_by.map(str::to_string),
                cooldown_ms: cooldown.map(|d| d.as_millis() as u64),
                health: if paused_by == Some("user") {
                    "paused by user".into()
                } else if paused {
                    "paused (402)".into()
                } else if let Some(cd) = cooldown {
                    format!("cooling down (429), {:.1}s left", cd.as_secs_f64())
                } else {
                    "ok".into()
                },
                queued,
                requests: p.counters.requests.load(Ordering::Relaxed),
                rate_limited: p.counters.rate_limited.load(Ordering::Relaxed),
                unexpected_answers: p.counters.unexpected.total(),
                poll_classes: learned
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .collect(),
            });
        }
        Ok(out)
    }
}
