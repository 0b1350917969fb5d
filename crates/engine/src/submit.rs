//! From `submitting` onwards: the create call with its retries, recording
//! what the provider answered, recovery after a restart, and the one way
//! out of `submitting` when the provider did not take the job.

use crate::limits::{jitter, read, ProviderRt};
use crate::record::{By, Leave};
use crate::{Gen, Shared};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Attempts, Change, HeldBy, Job, JobError, JobState, Patch};
use switchyard_provider::{Lookup, ProviderError};
use switchyard_store::StoreError;
use tokio::time::Instant;

impl Shared {
    /// At start: the live jobs this lease holds (its own from before a
    /// restart, and those of daemons whose lease expired) are followed:
    /// created ones polled again, ones caught between sending a create and
    /// recording its answer reconciled.
    pub(crate) async fn recover(self: &Arc<Self>, gen: &Arc<Gen>) -> Result<(), StoreError> {
        let jobs = self.store.recover(&gen.lease).await?;
        self.follow(gen, jobs);
        // Jobs recorded completed before their outputs were downloaded (an
        // older version downloaded after the completion; or every download
        // failed) are fetched again in the background: finding them means
        // reading every completed job, which must not delay dispatch. Not
        // on a shared store, where every daemon would fetch them.
        if self.downloads.is_some() && !self.fleet {
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

    /// Follows jobs this lease holds: created ones are polled by their
    /// stored provider id (never created again), `submitting` ones are
    /// reconciled as after a restart.
    pub(crate) fn follow(self: &Arc<Self>, gen: &Arc<Gen>, jobs: Vec<Job>) {
        for job in jobs {
            let Some(p) = self.providers.get(&job.provider) else {
                tracing::warn!(key = %job.key, provider = %job.provider, "a live job of a provider this daemon has no config for: not followed here");
                continue;
            };
            if job.state == JobState::Submitting {
                let (s, p, g) = (self.clone(), p.clone(), gen.clone());
                self.spawn_in(gen, async move { s.reconcile(p, job, g).await });
            } else if let Some(id) = job.provider_job_id.clone() {
                self.track(&job, &id);
            }
        }
    }

    /// A job found in `submitting` that this daemon holds but has no task
    /// for (after a restart, a takeover or a lost lease): the create may or
    /// may not have reached the provider.
    pub(crate) async fn reconcile(self: Arc<Self>, p: Arc<ProviderRt>, job: Job, gen: Arc<Gen>) {
        let by = By::Owner(&gen.lease);
        if p.adapter.idempotent_create() {
            tracing::info!(key = %job.key, provider = %p.name, "resending create after restart (the provider deduplicates by key)");
            self.submit(p, job, None, gen.clone()).await;
            return;
        }
        if !p.permit(&gen.cancel).await {
            return;
        }
        match p.adapter.find_by_key(&job.key, &job.params).await {
            Ok(Lookup::Found(st)) => {
                tracing::info!(key = %job.key, id = %st.provider_job_id, "found the job at the provider after restart");
                self.record(&p, &job.key, JobState::Submitting, st, by)
                    .await;
            }
            Ok(Lookup::NotFound) => {
                tracing::info!(key = %job.key, "the provider never received the create: queued again");
                let why = "not found at the provider after restart";
                let how = Leave::Requeue { why, held: None };
                self.leave(&p, &job.key, JobState::Submitting, how, by)
                    .await;
            }
            found @ (Ok(Lookup::Unsupported) | Err(_)) => {
                let why = match found {
                    Err(e) => format!("could not ask the provider after a restart: {e}"),
                    _ => "the daemon stopped after sending the create call and the provider cannot be asked whether it arrived".into(),
                };
                let err = JobError::new("uncertain", why.clone());
                let how = Leave::Uncertain { note: why, err };
                self.leave(&p, &job.key, JobState::Submitting, how, by)
                    .await;
            }
        }
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
        gen: Arc<Gen>,
    ) {
        let by = By::Owner(&gen.lease);
        let mut attempt = job.attempts.max(1);
        let mut have_permit = permit_at.is_some_and(|t| t.elapsed() <= p.slot() / 2);
        loop {
            if !have_permit && !p.permit(&gen.cancel).await {
                return; // shutdown: the job stays `submitting`; restart reconciles it
            }
            have_permit = false;
            // Last look before acting: a lease that may have expired (this
            // process was stopped) must not send a create another daemon
            // may be reconciling. If it was lost, the job is left to
            // whoever holds it now.
            if !self.wait_fresh(&gen).await {
                return;
            }
            p.counters.creates.fetch_add(1, Ordering::Relaxed);
            let res = p.adapter.create(&job.key, &job.params).await;
            let leave = match res {
                Ok(st) => {
                    p.ok_answer();
                    self.record(&p, &job.key, JobState::Submitting, st, by)
                        .await;
                    return;
                }
                Err(ProviderError::RateLimited { retry_after }) => {
                    p.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.rate_limited(&p, retry_after).await;
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
                        if !p.permit(&gen.cancel).await {
                            return;
                        }
                        match p.adapter.find_by_key(&job.key, &job.params).await {
                            Ok(Lookup::Found(st)) => {
                                self.record(&p, &job.key, JobState::Submitting, st, by)
                                    .await;
                                return;
                            }
                            Ok(Lookup::NotFound) => {}
                            _ => {
                                let err = JobError::new("uncertain", format!("create answered with a transient error ({msg}) and the provider cannot be asked whether the job exists"));
                                let how = Leave::Uncertain { note: msg, err };
                                self.leave(&p, &job.key, JobState::Submitting, how, by)
                                    .await;
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
                            _ = gen.cancel.cancelled() => return,
                        }
                        attempt += 1;
                        let patch = Patch {
                            attempts: Some(Attempts::Set(attempt)),
                            ..Patch::default()
                        };
                        let change = Change::to(JobState::Submitting, "").patch(patch);
                        match self.write(by, &job.key, JobState::Submitting, change).await {
                            Ok(_) => {}
                            Err(StoreError::LeaseLost { .. }) => {
                                return self.lost(&job.key, &p.name);
                            }
                            Err(e) => {
                                // Cancelled meanwhile, or the store failed:
                                // the retry is not sent; a restart
                                // reconciles.
                                if !e.is_state_mismatch() {
                                    self.store_failed("counting a create attempt", &e);
                                }
                                self.release(&p, &job.key);
                                return;
                            }
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
            self.leave(&p, &job.key, JobState::Submitting, leave, by)
                .await;
            return;
        }
    }
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
