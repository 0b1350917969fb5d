//! Following live jobs: one scheduler task owns a timer queue with an entry
//! per live job and starts a poll when one comes due; a poll task asks the
//! provider and reports back. Webhooks only make a job due sooner.

mod ticks;
mod tracking;

use crate::limits::read;
use crate::submit::Leave;
use crate::Shared;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::poll::PollPlan;
use switchyard_core::{Job, JobError, JobState};
use switchyard_provider::ProviderError;
use ticks::{coalesced, Policies};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tracking::{elapsed_since, ms_from, Tracked, Tracking, Words};

/// Messages to the poll scheduler.
#[derive(Debug)]
pub(crate) enum Sched {
    /// `elapsed`: time since the provider acknowledged the create.
    Track {
        key: String,
        provider: String,
        provider_job_id: String,
        state: JobState,
        elapsed: Duration,
    },
    /// A webhook named this job: poll it now (`verified`) or soon.
    Due {
        provider: String,
        provider_job_id: String,
        verified: bool,
    },
    Polled {
        key: String,
        done: bool,
        progress: Option<u8>,
        /// The job's state after the poll, where the store changed it.
        state: Option<JobState>,
        /// `Some(report)`: what the provider said, not written to the store;
        /// `Some(None)`: the store has the latest; `None`: nothing learned.
        live: Option<Option<LiveReport>>,
    },
    /// The live reports of these tracked jobs.
    Peek {
        keys: Vec<String>,
        reply: tokio::sync::oneshot::Sender<HashMap<String, LiveReport>>,
    },
    Untrack {
        key: String,
    },
}

/// What a poll learned that changed nothing but progress: kept with the
/// job's poll schedule, not in the store.
///
/// Why: a job in `processing` reports new progress at nearly every poll.
/// Writing each report durably cost a store write per poll and, worse,
/// sled's log cleaning after it (measured: two thirds of the daemon's CPU
/// with 10,000 jobs polled each minute). Progress is worth nothing after a
/// restart (the next poll reports it again), so it lives here and is merged
/// into the job as the API shows it; state changes, provider ids, outputs
/// and errors still go to the store before anything acts on them.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveReport {
    pub progress: Option<u8>,
    pub stage: Option<Arc<str>>,
    pub provider_status: Arc<str>,
}

impl LiveReport {
    /// Shows the report on `job` (a no-op for a job no longer live).
    pub fn apply_to(&self, job: &mut Job) {
        if !job.state.is_live() {
            return;
        }
        if self.progress.is_some() {
            job.progress = self.progress;
        }
        if let Some(stage) = &self.stage {
            job.stage = Some(stage.to_string());
        }
        job.provider_status = Some(self.provider_status.to_string());
    }
}

impl Shared {
    /// One poll of one job in `state`, acknowledged `elapsed` ago; reports
    /// back to the scheduler.
    pub(crate) async fn poll(
        self: Arc<Self>,
        key: String,
        provider: String,
        id: String,
        state: JobState,
        elapsed: Duration,
    ) {
        let Some(p) = self.providers.get(&provider).cloned() else {
            return;
        };
        let polled =
            |progress: Option<u8>, done: bool, state: Option<JobState>, live| Sched::Polled {
                key: key.clone(),
                done,
                progress,
                state,
                live,
            };
        let timeout = read(&p.limits).poll.timeout;
        if elapsed > timeout {
            // Rare: read the store rather than trust the schedule's copy.
            let job = match self.store.get(&key).await {
                Ok(Some(j)) if j.state.is_live() => j,
                _ => {
                    let _ = self.sched.send(polled(None, true, None, None));
                    return;
                }
            };
            if p.permit(&self.cancel).await {
                let _ = p.adapter.cancel(&id).await;
            }
            let err = JobError::new(
                "timeout",
                format!(
                    "no result within the provider's poll timeout of {}",
                    humantime::format_duration(timeout)
                ),
            );
            self.leave(&p, &key, job.state, Leave::Fail(err)).await;
            let _ = self.sched.send(polled(None, true, None, None));
            return;
        }
        let turn = tokio::select! {
            turn = p.polls.acquire() => turn,
            _ = self.cancel.cancelled() => return,
        };
        if !p.permit(&self.cancel).await {
            return;
        }
        p.counters.polls.fetch_add(1, Ordering::Relaxed);
        let answer = p.adapter.status(&id).await;
        drop(turn);
        match answer {
            Ok(st) => {
                p.ok_answer();
                let progress = st.progress;
                // Nothing the store keeps changed: remember the report with
                // the schedule instead of writing it.
                let to: JobState = st.state.into();
                if to == state
                    && matches!(to, JobState::Pending | JobState::Processing)
                    && st.error.is_none()
                    && st.output_urls.is_empty()
                    && st.provider_job_id == id
                {
                    let live = LiveReport {
                        progress: st.progress,
                        stage: st.stage.map(Arc::from),
                        provider_status: Arc::from(st.raw_status),
                    };
                    let _ = self
                        .sched
                        .send(polled(progress, false, None, Some(Some(live))));
                    return;
                }
                let new = self.record(&p, &key, state, st).await;
                let finished = new.is_none_or(|s| !s.is_live());
                let _ = self.sched.send(polled(progress, finished, new, Some(None)));
            }
            Err(ProviderError::RateLimited { retry_after }) => {
                p.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                p.cool_down(retry_after);
                let _ = self.sched.send(polled(None, false, None, None));
            }
            Err(e) => {
                // A surprise is not a failure: the job stays live and is
                // polled again on its schedule, within `poll.timeout`. An
                // unreadable body still counts as an error, as it always
                // did; an unknown word was a good answer before and is not.
                if !matches!(e, ProviderError::Unexpected { .. }) {
                    p.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((kind, detail)) = e.unexpected_answer() {
                    let excerpt = match &e {
                        ProviderError::Unexpected { excerpt, .. } => excerpt.clone(),
                        other => other.to_string(),
                    };
                    p.counters
                        .unexpected
                        .note(&p.name, &key, "poll", kind, &detail, &excerpt);
                }
                tracing::debug!(%key, "poll failed: {e}");
                let _ = self.sched.send(polled(None, false, None, None));
            }
        }
    }
}

pub(crate) async fn scheduler(rt: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Sched>) {
    use futures::StreamExt;
    let mut policies = Policies::new(&rt);
    let mut dq: DelayQueue<u32> = DelayQueue::new();
    let mut jobs = Tracking::default();
    let mut words = Words::default();
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let epoch = Instant::now();
    loop {
        tokio::select! {
            _ = rt.cancel.cancelled() => return,
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                match msg {
                    Sched::Track { key, provider, provider_job_id, state, elapsed } => {
                        let Some(provider) = policies.index(&provider) else { continue };
                        if jobs.slot_of(&key).is_some() {
                            continue;
                        }
                        let Some(pol) = policies.get(&rt, provider) else { continue };
                        let first = PollPlan::first(pol, &mut rng);
                        rt.metrics.poll_delay.observe(first);
                        let since_ms = ms_from(epoch, Instant::now())
                            .saturating_sub(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
                        let slot = jobs.insert(Tracked::new(&key, provider, &provider_job_id, state, since_ms));
                        if let Some(t) = jobs.get_mut(slot) {
                            t.dq = Some(dq.insert_at(slot, coalesced(epoch, Instant::now(), first)));
                        }
                    }
                    Sched::Due { provider, provider_job_id, verified } => {
                        let Some(provider) = policies.index(&provider) else { continue };
                        let Some(slot) = jobs.slot_of_id(provider, &provider_job_id) else { continue };
                        let min_gap = policies.get(&rt, provider).and_then(|p| p.schedule.first().copied()).unwrap_or_default();
                        let Some(t) = jobs.get_mut(slot) else { continue };
                        let since_poll = ms_from(epoch, Instant::now()).saturating_sub(t.last_poll_ms);
                        let recent = u128::try_from(since_poll).is_ok_and(|ms| ms < min_gap.as_millis());
                        if let Some(k) = &t.dq {
                            if verified || !recent {
                                dq.reset(k, Duration::ZERO);
                            }
                        }
                    }
                    Sched::Peek { keys, reply } => {
                        let out = keys.into_iter().filter_map(|k| {
                            let slot = jobs.slot_of(&k)?;
                            let live = words.report(jobs.get_mut(slot)?.live?)?;
                            Some((k, live))
                        }).collect();
                        let _ = reply.send(out);
                    }
                    Sched::Polled { key, done, progress, state, live } => {
                        let Some(slot) = jobs.slot_of(&key) else { continue };
                        if done {
                            jobs.remove(slot);
                            continue;
                        }
                        let Some(t) = jobs.get_mut(slot) else { continue };
                        // A report that was written to the store supersedes
                        // the one kept here.
                        if let Some(live) = live {
                            t.live = live.and_then(|r| words.compact(&r));
                        }
                        if let Some(state) = state {
                            t.state = state;
                        }
                        let Some(pol) = policies.get(&rt, t.provider) else { continue };
                        let d = t.plan.next(pol, elapsed_since(epoch, t.since_ms), progress, &mut rng);
                        rt.metrics.poll_delay.observe(d);
                        t.dq = Some(dq.insert_at(slot, coalesced(epoch, Instant::now(), d)));
                    }
                    Sched::Untrack { key } => {
                        if let Some(t) = jobs.slot_of(&key).and_then(|slot| jobs.remove(slot)) {
                            if let Some(k) = t.dq {
                                dq.try_remove(&k);
                            }
                        }
                    }
                }
            }
            Some(expired) = dq.next(), if !dq.is_empty() => {
                let slot = expired.into_inner();
                let Some(t) = jobs.get_mut(slot) else { continue };
                t.dq = None;
                t.last_poll_ms = ms_from(epoch, Instant::now());
                let Some(provider) = policies.name(t.provider).map(str::to_string) else { continue };
                let (key, id) = (t.key().to_string(), t.id().to_string());
                let (state, elapsed) = (t.state, elapsed_since(epoch, t.since_ms));
                let rt2 = rt.clone();
                rt.tracker.spawn(async move { rt2.poll(key, provider, id, state, elapsed).await });
            }
        }
    }
}
