//! Recording what happened to a job: the provider's answer (and what it
//! does to the ledger), the one way out of `submitting` (or of a live state
//! on a timeout) when there is no answer to record, and what follows a
//! write (durability, the in-flight slot, tracking, downloads).

use crate::limits::ProviderRt;
use crate::sched::Sched;
use crate::Shared;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{
    Attempts, Change, FallbackOn, HeldBy, Job, JobError, JobState, LedgerOp, Patch,
};
use switchyard_provider::{RemoteState, RemoteStatus};
use switchyard_store::{Lease, StoreError};

/// Who writes a job's change: the daemon that holds the job (fenced on its
/// lease, so a daemon whose lease expired cannot overwrite what the daemon
/// that took over did), or a user's command, which any daemon carries out.
#[derive(Clone, Copy)]
pub(crate) enum By<'a> {
    Owner(&'a Lease),
    User,
}

/// How a job leaves `submitting` without a provider id.
pub(crate) enum Leave {
    /// Back to the queue: the provider did not keep the create.
    Requeue {
        why: &'static str,
        held: Option<HeldBy>,
    },
    /// The provider refused it for good (or transient errors ran out).
    Fail(JobError),
    /// The create may have arrived and nobody can tell: never re-sent alone.
    Uncertain { note: String, err: JobError },
}

impl Shared {
    /// Writes `change` as `by`: fenced for the job's owner, plain for a
    /// user's command.
    pub(crate) async fn write(
        &self,
        by: By<'_>,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, StoreError> {
        match by {
            By::Owner(lease) => self.store.apply_owned(lease, key, expect, change).await,
            By::User => self.store.apply(key, expect, change).await,
        }
    }

    /// A 429: this daemon cools the provider down at once, and the store
    /// holds it for every daemon (and across a restart) as long.
    pub(crate) async fn rate_limited(&self, p: &ProviderRt, retry_after: Option<Duration>) {
        let wait = p.cool_down(retry_after);
        if let Err(e) = self.store.hold(&p.name, wait).await {
            self.store_failed(&format!("recording the cool-down of {}", p.name), &e);
        }
    }

    /// Starts the download of a completed job's outputs, if configured.
    pub(crate) fn download(self: &Arc<Self>, job: &Job) {
        if let Some(d) = self.downloads.clone() {
            let s = self.clone();
            let job = job.clone();
            self.tracker
                .spawn(async move { d.fetch_job(&s, &job).await });
        }
    }

    pub(crate) fn track(&self, job: &Job, provider_job_id: &str) {
        // The scheduler only stops after shutdown, when nothing is tracked.
        let _ = self.sched.send(Sched::Track {
            key: job.key.clone(),
            provider: job.provider.clone(),
            provider_job_id: provider_job_id.into(),
            state: job.state,
            elapsed: since_submitted(job),
            class: switchyard_core::learn::job_class(&job.params),
        });
    }

    /// The one way out of `submitting` without a provider id (and out of a
    /// live state on a poll timeout): the change, made durable, then the
    /// in-flight slot given back and the dispatcher woken. If the store
    /// failed, the slot is given back all the same and the job stays where
    /// it was in the store, where the next start reconciles it. If the job
    /// was moved meanwhile (a cancel), whoever moved it gave the slot back.
    pub(crate) async fn leave(
        &self,
        p: &ProviderRt,
        key: &str,
        from: JobState,
        how: Leave,
        by: By<'_>,
    ) {
        let change = match how {
            Leave::Requeue { why, held } => {
                if held.is_some() {
                    p.set_hold(held);
                }
                Change::to(JobState::Queued, why)
                    .ledger(LedgerOp::Release)
                    .patch(Patch {
                        attempts: Some(Attempts::Decrement),
                        ..Patch::default()
                    })
            }
            Leave::Fail(err) => {
                tracing::warn!(%key, code = %err.code, "job failed: {}", err.message);
                let note = format!("{}: {}", err.code, err.message);
                let fallback = crate::fallback::after_failure(&*p.adapter, &err);
                let change = Change::to(JobState::Failed, note)
                    .ledger(LedgerOp::Release)
                    .patch(Patch {
                        error: Some(Some(err)),
                        ..Patch::default()
                    });
                match fallback {
                    Some(why) => change.fallback(why),
                    None => change,
                }
            }
            Leave::Uncertain { note, err } => Change::to(JobState::Uncertain, note).patch(Patch {
                error: Some(Some(err)),
                ..Patch::default()
            }),
        };
        match self.write(by, key, from, change).await {
            Ok(job) => {
                self.durable("recording the end of a submission").await;
                if job.provider != p.name {
                    self.hopped(&p.name, &job);
                }
            }
            Err(e) if e.is_state_mismatch() => return,
            Err(StoreError::LeaseLost { .. }) => return self.lost(key, &p.name),
            Err(e) => self.store_failed(&format!("moving job {key} out of {from}"), &e),
        }
        self.release(p, key);
    }

    /// A fenced write found `key` held by another daemon (this one's lease
    /// had expired and the job was taken over): it is no longer followed
    /// here, and nothing is written or retried for it.
    pub(crate) fn lost(&self, key: &str, provider: &str) {
        tracing::info!(%key, %provider, "job taken over by another daemon: no longer followed here");
        let _ = self.sched.send(Sched::Untrack { key: key.into() });
        if let Some(p) = self.providers.get(provider) {
            p.release_slot();
        }
    }

    /// A job this engine no longer works on: the dispatcher woken (a slot
    /// may be free), the poll schedule dropped.
    pub(crate) fn release(&self, p: &ProviderRt, key: &str) {
        p.release_slot();
        let _ = self.sched.send(Sched::Untrack { key: key.into() });
    }

    /// Records what the provider said about a job in state `from`. Returns
    /// the job's new state, or `None` if the store refused (e.g. the job was
    /// cancelled meanwhile, or another daemon holds it now) or failed.
    ///
    /// With `output_dir` set, the owner downloads a completed job's outputs
    /// before it records the completion, with the files in the same write:
    /// the fenced write then decides which daemon's download counts (a
    /// daemon that lost the job to another writes nothing and lists
    /// nothing in the manifest), and a daemon that dies mid-download leaves
    /// the job live, to be polled and downloaded again by whoever follows
    /// it next.
    pub(crate) async fn record(
        self: &Arc<Self>,
        p: &ProviderRt,
        key: &str,
        from: JobState,
        st: RemoteStatus,
        by: By<'_>,
    ) -> Option<JobState> {
        let to: JobState = st.state.into();
        let note = match &st.error {
            Some(e) => format!("{} ({}: {})", st.raw_status, e.code, e.message),
            None => st.raw_status.clone(),
        };
        let acknowledged = matches!(from, JobState::Submitting | JobState::Uncertain)
            .then(switchyard_core::model::now_rfc3339);
        let progress = if st.state == RemoteState::Completed {
            Some(Some(100))
        } else {
            st.progress.map(Some)
        };
        let patch = Patch {
            submitted_at: acknowledged.map(Some),
            provider_job_id: Some(Some(st.provider_job_id.clone())),
            provider_status: Some(Some(st.raw_status.clone())),
            progress,
            stage: st.stage.clone().map(Some),
            output_urls: (!st.output_urls.is_empty()).then(|| st.output_urls.clone()),
            error: st.error.clone().map(Some),
            ..Patch::default()
        };
        let ledger = match self.ledger_for(key, to, &st).await {
            Ok(l) => l,
            Err(e) => {
                self.store_failed(&format!("reading job {key}"), &e);
                return None;
            }
        };
        let downloads = match (&self.downloads, by) {
            (Some(d), By::Owner(_)) if to == JobState::Completed && !st.output_urls.is_empty() => {
                Some(d)
            }
            _ => None,
        };
        let mut patch = patch;
        if let Some(d) = downloads {
            patch.output_files = Some(d.fetch_all(key, &st.output_urls).await);
        }
        let mut change = Change::to(to, note).ledger(ledger).patch(patch);
        if to == JobState::Failed {
            // The provider says the job failed: nothing runs there any more.
            change = change.fallback(FallbackOn::Failed);
        }
        let job = match self.write(by, key, from, change).await {
            Ok(job) => job,
            Err(e) if e.is_state_mismatch() => return None,
            Err(StoreError::LeaseLost { .. }) => {
                self.lost(key, &p.name);
                return None;
            }
            Err(e) => {
                self.store_failed(&format!("recording the status of {key}"), &e);
                return None;
            }
        };
        let durable = if from == JobState::Submitting || to != from {
            // Not durable: the job stays tracked (the write is staged and a
            // later sync may succeed); health says the store is failing.
            self.durable("recording a status").await
        } else {
            true
        };
        if job.provider != p.name {
            self.release(p, key);
            self.hopped(&p.name, &job);
        } else if job.state.is_terminal() {
            p.release_slot();
            tracing::info!(%key, state = %job.state, "job finished");
            // The manifest names only files a restart will not forget.
            if let (Some(d), true) = (downloads, durable) {
                d.append_manifest(&job).await;
            }
        } else if from == JobState::Submitting || from == JobState::Uncertain {
            self.track(&job, &st.provider_job_id);
        }
        Some(job.state)
    }

    /// What a status does to the ledger. A completion without a reported
    /// charge is charged its reservation: the estimate is the best fact.
    async fn ledger_for(
        &self,
        key: &str,
        to: JobState,
        st: &RemoteStatus,
    ) -> Result<LedgerOp, StoreError> {
        if !to.is_terminal() {
            return Ok(LedgerOp::None);
        }
        let job = self.store.get(key).await?;
        let refunded = st.credits_refunded.unwrap_or(0);
        // A provider's charge covers every run of its job: after a retry
        // at the provider (the same provider job), what the earlier runs
        // were charged is in the ledger already.
        let counted = job
            .as_ref()
            .filter(|j| j.provider_job_id.as_deref() == Some(st.provider_job_id.as_str()))
            .map_or(0, |j| j.credits_charged);
        let new_charge = |c: u64| c.saturating_sub(refunded).saturating_sub(counted);
        Ok(match (to, st.credits_charged) {
            (JobState::Completed, Some(c)) => LedgerOp::Settle {
                charged: new_charge(c),
            },
            (JobState::Completed, None) => match job {
                Some(j) => LedgerOp::Settle {
                    charged: j.credits_reserved.saturating_sub(refunded),
                },
                None => LedgerOp::Release,
            },
            (_, Some(c)) if new_charge(c) > 0 => LedgerOp::Settle {
                charged: new_charge(c),
            },
            _ => LedgerOp::Release,
        })
    }
}

/// Time since the provider acknowledged the job (since intake for records
/// written before `submitted_at` existed), less the time users had it
/// paused there: the poll timeout and the learned durations count the
/// provider's working time.
pub(crate) fn since_submitted(job: &Job) -> Duration {
    humantime::parse_rfc3339(job.submitted_at.as_deref().unwrap_or(&job.created_at))
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(job.paused_ms))
}
