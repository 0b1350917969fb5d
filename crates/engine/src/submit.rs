//! From `submitting` onwards: the create call with its retries, recording
//! what the provider answered, recovery after a restart, and the one way
//! out of `submitting` when the provider did not take the job.

use crate::limits::{jitter, read, ProviderRt};
use crate::poller::Sched;
use crate::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Attempts, Change, HeldBy, Job, JobError, JobState, LedgerOp, Patch};
use switchyard_provider::{Lookup, ProviderError, RemoteState, RemoteStatus};
use switchyard_store::StoreError;
use tokio::time::Instant;

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
    /// After a restart: live jobs are polled again, jobs caught between
    /// sending a create and recording its answer are reconciled.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        for job in self.store.recover(&self.lease).await? {
            let Some(p) = self.providers.get(&job.provider) else {
                continue;
            };
            p.in_flight.fetch_add(1, Ordering::Relaxed);
            if job.state == JobState::Submitting {
                let (s, p) = (self.clone(), p.clone());
                self.tracker.spawn(async move { s.reconcile(p, job).await });
            } else if let Some(id) = job.provider_job_id.clone() {
                self.track(&job, &id);
            }
        }
        // Downloads cut by the stop resume in the background: finding them
        // means reading every completed job, which must not delay dispatch.
        if self.downloads.is_some() {
            let s = self.clone();
            tokio::spawn(async move {
                let done = s
                    .store
                    .list(&switchyard_store::Filter {
                        state: Some(JobState::Completed),
                        provider: None,
                    })
                    .await;
                match done {
                    Ok(jobs) => {
                        for job in jobs {
                            if job.output_files.is_empty() && !job.output_urls.is_empty() {
                                s.download(&job);
                            }
                        }
                    }
                    Err(e) => s.store_failed("finding downloads to resume", &e),
                }
            });
        }
        Ok(())
    }

    async fn reconcile(self: Arc<Self>, p: Arc<ProviderRt>, job: Job) {
        if p.adapter.idempotent_create() {
            tracing::info!(key = %job.key, provider = %p.name, "resending create after restart (the provider deduplicates by key)");
            self.submit(p, job, None).await;
            return;
        }
        if !p.permit(&self.cancel).await {
            return;
        }
        match p.adapter.find_by_key(&job.key, &job.params).await {
            Ok(Lookup::Found(st)) => {
                tracing::info!(key = %job.key, id = %st.provider_job_id, "found the job at the provider after restart");
                self.record(&p, &job.key, JobState::Submitting, st).await;
            }
            Ok(Lookup::NotFound) => {
                tracing::info!(key = %job.key, "the provider never received the create: queued again");
                let why = "not found at the provider after restart";
                let how = Leave::Requeue { why, held: None };
                self.leave(&p, &job.key, JobState::Submitting, how).await;
            }
            found @ (Ok(Lookup::Unsupported) | Err(_)) => {
                let why = match found {
                    Err(e) => format!("could not ask the provider after a restart: {e}"),
                    _ => "the daemon stopped after sending the create call and the provider cannot be asked whether it arrived".into(),
                };
                let err = JobError::new("uncertain", why.clone());
                let how = Leave::Uncertain { note: why, err };
                self.leave(&p, &job.key, JobState::Submitting, how).await;
            }
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
        });
    }

    /// Makes the writes so far durable. On failure: logged, the store
    /// marked failing (health), and false returned so the caller does not
    /// act on the outside world as if it were on disk.
    pub(crate) async fn durable(&self, what: &str) -> bool {
        match self.store.sync().await {
            Ok(()) => {
                self.health.ok();
                true
            }
            Err(e) => {
                self.store_failed(what, &e);
                false
            }
        }
    }

    pub(crate) fn store_failed(&self, what: &str, e: &StoreError) {
        tracing::error!("{what}: the store failed: {e}");
        self.health.failed(what, e);
    }

    /// Sends the create call for a job already moved to `submitting` (and
    /// flushed), retrying transient failures within `max_attempts`.
    /// `permit_at`: when the dispatcher took this request's rate permit (it
    /// moves a job to `submitting` only with a permit in hand, so a crash
    /// finds few jobs there whose create was never sent). A permit older than
    /// half a rate slot (a slow flush) is dropped and a fresh one taken: the
    /// provider must see the spacing the limiter made.
    pub(crate) async fn submit(
        self: Arc<Self>,
        p: Arc<ProviderRt>,
        job: Job,
        permit_at: Option<Instant>,
    ) {
        let mut attempt = job.attempts.max(1);
        let mut have_permit = permit_at.is_some_and(|t| t.elapsed() <= p.slot() / 2);
        loop {
            if !have_permit && !p.permit(&self.cancel).await {
                return; // shutdown: the job stays `submitting`; restart reconciles it
            }
            have_permit = false;
            p.counters.creates.fetch_add(1, Ordering::Relaxed);
            let res = p.adapter.create(&job.key, &job.params).await;
            let leave = match res {
                Ok(st) => {
                    p.ok_answer();
                    self.record(&p, &job.key, JobState::Submitting, st).await;
                    return;
                }
                Err(ProviderError::RateLimited { retry_after }) => {
                    p.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    p.cool_down(retry_after);
                    Leave::Requeue {
                        why: "provider rate limit (429)",
                        held: Some(HeldBy::Rate),
                    }
                }
                Err(ProviderError::InsufficientCredits(msg)) => {
                    p.paused.store(true, Ordering::Relaxed);
                    tracing::error!(provider = %p.name, "provider reports insufficient credits (402): dispatch paused until the config is reloaded: {msg}");
                    Leave::Requeue {
                        why: "provider has no credits left (402)",
                        held: Some(HeldBy::Paused),
                    }
                }
                Err(
                    e @ (ProviderError::Transient(_)
                    | ProviderError::Unavailable(_)
                    | ProviderError::Unexpected { .. }),
                ) => {
                    p.counters.errors.fetch_add(1, Ordering::Relaxed);
                    let max = read(&p.limits).max_attempts;
                    // `Unavailable`: the provider certainly did not act on it.
                    let maybe_created = !matches!(e, ProviderError::Unavailable(_));
                    // A 2xx answer we could not read: the job may well exist.
                    let unreadable = e.unexpected_answer();
                    if let Some((kind, detail)) = &unreadable {
                        p.counters.unexpected.note(
                            &p.name,
                            &job.key,
                            "create",
                            kind,
                            detail,
                            &e.to_string(),
                        );
                    }
                    let msg = e.to_string();
                    if maybe_created && !p.adapter.idempotent_create() {
                        // The create may have arrived: ask before sending again.
                        if !p.permit(&self.cancel).await {
                            return;
                        }
                        match p.adapter.find_by_key(&job.key, &job.params).await {
                            Ok(Lookup::Found(st)) => {
                                self.record(&p, &job.key, JobState::Submitting, st).await;
                                return;
                            }
                            Ok(Lookup::NotFound) => {}
                            _ => {
                                let err = JobError::new("uncertain", format!("create answered with a transient error ({msg}) and the provider cannot be asked whether the job exists"));
                                let how = Leave::Uncertain { note: msg, err };
                                self.leave(&p, &job.key, JobState::Submitting, how).await;
                                return;
                            }
                        }
                    }
                    if attempt >= max && unreadable.is_some() {
                        // Never a clean failure: releasing the reservation
                        // of a job that may be running would overspend.
                        let err = JobError::new("uncertain", format!("the create was answered in a shape no document shows ({msg}); the job may exist at the provider"));
                        Leave::Uncertain { note: msg, err }
                    } else if attempt >= max {
                        let err =
                            JobError::new("transient", format!("{msg} (after {attempt} attempts)"));
                        Leave::Fail(err)
                    } else {
                        p.counters.retries.fetch_add(1, Ordering::Relaxed);
                        let backoff = backoff(attempt);
                        tracing::info!(key = %job.key, attempt, backoff_ms = backoff.as_millis() as u64, "transient error on create, retrying: {msg}");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.cancel.cancelled() => return,
                        }
                        attempt += 1;
                        let patch = Patch {
                            attempts: Some(Attempts::Set(attempt)),
                            ..Patch::default()
                        };
                        let change = Change::to(JobState::Submitting, "").patch(patch);
                        if let Err(e) = self
                            .store
                            .apply(&job.key, JobState::Submitting, change)
                            .await
                        {
                            // Cancelled meanwhile, or the store failed: the
                            // retry is not sent; a restart reconciles.
                            if !e.is_state_mismatch() {
                                self.store_failed("counting a create attempt", &e);
                            }
                            self.release(&p, &job.key);
                            return;
                        }
                        if !self.durable("counting a create attempt").await {
                            self.release(&p, &job.key);
                            return;
                        }
                        continue;
                    }
                }
                Err(e) => {
                    p.counters.errors.fetch_add(1, Ordering::Relaxed);
                    Leave::Fail(error_of(&e))
                }
            };
            self.leave(&p, &job.key, JobState::Submitting, leave).await;
            return;
        }
    }

    /// The one way out of `submitting` without a provider id (and out of a
    /// live state on a poll timeout): the change, made durable, then the
    /// in-flight slot given back and the dispatcher woken. If the store
    /// failed, the slot is given back all the same and the job stays where
    /// it was in the store, where the next start reconciles it. If the job
    /// was moved meanwhile (a cancel), whoever moved it gave the slot back.
    pub(crate) async fn leave(&self, p: &ProviderRt, key: &str, from: JobState, how: Leave) {
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
                Change::to(JobState::Failed, note)
                    .ledger(LedgerOp::Release)
                    .patch(Patch {
                        error: Some(Some(err)),
                        ..Patch::default()
                    })
            }
            Leave::Uncertain { note, err } => Change::to(JobState::Uncertain, note).patch(Patch {
                error: Some(Some(err)),
                ..Patch::default()
            }),
        };
        match self.store.apply(key, from, change).await {
            Ok(_) => {
                self.durable("recording the end of a submission").await;
            }
            Err(e) if e.is_state_mismatch() => return,
            Err(e) => self.store_failed(&format!("moving job {key} out of {from}"), &e),
        }
        self.release(p, key);
    }

    /// A job this engine no longer works on: its slot back, the dispatcher
    /// woken, the poll schedule dropped.
    pub(crate) fn release(&self, p: &ProviderRt, key: &str) {
        p.release_slot();
        p.wake.notify_one();
        let _ = self.sched.send(Sched::Untrack { key: key.into() });
    }

    /// Records what the provider said about a job in state `from`. Returns
    /// the job's new state, or `None` if the store refused (e.g. the job was
    /// cancelled meanwhile) or failed.
    pub(crate) async fn record(
        self: &Arc<Self>,
        p: &ProviderRt,
        key: &str,
        from: JobState,
        st: RemoteStatus,
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
        let change = Change::to(to, note).ledger(ledger).patch(patch);
        let job = match self.store.apply(key, from, change).await {
            Ok(job) => job,
            Err(e) if e.is_state_mismatch() => return None,
            Err(e) => {
                self.store_failed(&format!("recording the status of {key}"), &e);
                return None;
            }
        };
        if from == JobState::Submitting || to != from {
            // Not durable: the job stays tracked (the write is staged and a
            // later sync may succeed); health says the store is failing.
            self.durable("recording a status").await;
        }
        if job.state.is_terminal() {
            p.release_slot();
            p.wake.notify_one();
            tracing::info!(%key, state = %job.state, "job finished");
            if job.state == JobState::Completed && !job.output_urls.is_empty() {
                self.download(&job);
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
        let refunded = st.credits_refunded.unwrap_or(0);
        Ok(match (to, st.credits_charged) {
            (JobState::Completed, Some(c)) => LedgerOp::Settle {
                charged: c.saturating_sub(refunded),
            },
            (JobState::Completed, None) => match self.store.get(key).await? {
                Some(j) => LedgerOp::Settle {
                    charged: j.credits_reserved.saturating_sub(refunded),
                },
                None => LedgerOp::Release,
            },
            (_, Some(c)) if c > refunded => LedgerOp::Settle {
                charged: c - refunded,
            },
            _ => LedgerOp::Release,
        })
    }
}

/// Time since the provider acknowledged the job (since intake for records
/// written before `submitted_at` existed).
pub(crate) fn since_submitted(job: &Job) -> Duration {
    humantime::parse_rfc3339(job.submitted_at.as_deref().unwrap_or(&job.created_at))
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500u64 << attempt.min(6));
    base + jitter(base / 2)
}

fn error_of(e: &ProviderError) -> JobError {
    match e {
        ProviderError::Permanent { code, message } | ProviderError::Conflict { code, message } => {
            JobError::new(code.clone(), message.clone())
        }
        ProviderError::NotFound(m) => JobError::new("not_found", m.clone()),
        other => JobError::new("provider_error", other.to_string()),
    }
}
